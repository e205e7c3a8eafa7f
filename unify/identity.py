"""Identity resolution: `same_as` links between nodes that are the same thing.

Each rule is data: which nodes it looks at, the key that makes two of them the same, and the
evidence it records. A group of n equal nodes becomes n-1 links to its smallest id (a star),
never n^2 pairs. Runs at the same commit need no rule: every tool's run links to the one shared
`git:<sha>` node.

>>> from braid.unify.schema import conform
>>> nodes = conform("nodes", pl.DataFrame({"id": ["a:artifact/1", "b:artifact/2"],
...     "kind": ["artifact"] * 2, "digest": ["md5:c3c6bc2ae8ece4bd2510dca21225c041"] * 2, "size": [12, 12]}))
>>> same_as_edges(nodes).select("src", "dst", "kind").rows()
[('a:artifact/1', 'b:artifact/2', 'same_as')]
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from .schema import canonical, empty

IDENTITY_SOURCE = "_identity"
DATA_KINDS = ("dataset", "model", "artifact")


@dataclass(frozen=True)
class Rule:
    evidence: str
    kinds: tuple[str, ...]
    key: dict[str, pl.Expr]  # columns that must all be equal (and non-null)
    where: pl.Expr


def normalised_uri() -> pl.Expr:
    """Lower-case scheme and host, `file://` dropped, no trailing slash, no credentials."""
    uri = pl.col("uri").str.strip_chars_end("/").str.replace(r"^file://", "").str.replace(r"://[^/@]+@", "://")
    scheme_host = uri.str.extract(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/]*)", 1)
    return pl.when(scheme_host.is_not_null()).then(
        scheme_host.str.to_lowercase() + uri.str.slice(scheme_host.str.len_chars())
    ).otherwise(uri)


# URIs that name one place whatever the machine: object stores, web, absolute file paths.
# A relative path names a file only together with a repo and commit (the DVC connector's rule).
ABSOLUTE_URI = normalised_uri().str.contains(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://[^/]|/)")

RULES: tuple[Rule, ...] = (
    # the same bytes: md5 of the content and the size agree
    Rule("digest", DATA_KINDS, {"digest": pl.col("digest"), "size": pl.col("size")},
         pl.col("digest").str.starts_with("md5:")),
    # another tool's own hash (e.g. MLflow's dataset digest) only ever matches itself
    Rule("digest", DATA_KINDS, {"digest": pl.col("digest")},
         pl.col("digest").is_not_null() & ~pl.col("digest").str.starts_with("md5:")),
    Rule("uri", DATA_KINDS, {"uri": normalised_uri()}, ABSOLUTE_URI),
)


def same_as_edges(nodes: pl.DataFrame) -> pl.DataFrame:
    """`same_as` edges between the given nodes, each with its evidence in attrs."""
    found = []
    base = nodes.select("id", "kind", "digest", "size", "uri", "created_at")
    for rule in RULES:
        cand = base.filter(pl.col("kind").is_in(rule.kinds) & rule.where).with_columns(**rule.key)
        keys = list(rule.key)
        cand = cand.drop_nulls(keys)
        if cand.height < 2:
            continue
        grouped = cand.with_columns(
            anchor=pl.col("id").min().over(keys),
            anchor_time=pl.col("created_at").sort_by("id").first().over(keys),
            n=pl.len().over(keys),
        ).filter((pl.col("n") > 1) & (pl.col("id") != pl.col("anchor")))
        found.append(grouped.select(
            src="anchor", dst="id", kind=pl.lit("same_as"), source=pl.lit(IDENTITY_SOURCE),
            # a link exists once both ends do
            created_at=pl.max_horizontal("created_at", "anchor_time"),
            attrs=pl.struct(pl.lit(rule.evidence).alias("evidence"), *keys).struct.json_encode(),
        ))
    if not found:
        return empty("edges")
    # the first rule that links a pair gives its evidence
    return canonical("edges", pl.concat(found, how="diagonal_relaxed"))
