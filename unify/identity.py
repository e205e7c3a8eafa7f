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


# what a repo-reading connector (DVC) leaves for the path rule, per commit it changed files in
LOCATION_SCHEMA = pl.Schema({"source": pl.String, "commit": pl.String, "path": pl.String, "node_id": pl.String,
                             "root": pl.String})
# every commit of that repo -> the latest commit at or before it that changed its tracked files
COMMIT_STATE_SCHEMA = pl.Schema({"source": pl.String, "commit": pl.String, "state": pl.String})


@dataclass(frozen=True)
class Located:
    """Where a repo-reading source's files are: the tables the path rule joins against."""

    locations: pl.DataFrame  # LOCATION_SCHEMA
    commit_states: pl.DataFrame  # COMMIT_STATE_SCHEMA
    edges: pl.DataFrame  # input/output edges of every source: src, dst, kind
    runs: pl.DataFrame  # id, git_commit of every run


def path_edges(nodes: pl.DataFrame, located: Located) -> pl.DataFrame:
    """A file a tracker names by a path inside a repo is, at its run's commit, the version the
    repo tracked at that path then: `same_as` with the path and commit as evidence.

    The path may be relative to the repo (`data/train.csv`), or absolute under its root.
    """
    if located.locations.height == 0 or located.commit_states.height == 0:
        return empty("edges")
    repos = located.locations.select("source", "root").unique()
    sources = repos["source"].implode()
    named = nodes.filter(pl.col("kind").is_in(DATA_KINDS) & pl.col("uri").is_not_null()
                         & ~pl.col("source").is_in(sources)).select("id", "uri", "created_at")
    used = located.edges.filter(pl.col("kind").is_in(["input", "output"])).select(
        node=pl.when(pl.col("kind") == "input").then("src").otherwise("dst"),
        run=pl.when(pl.col("kind") == "input").then("dst").otherwise("src"))
    # a file inside an artifact (a W&B manifest entry) is used by the runs that use the artifact
    inside = located.edges.filter(pl.col("kind") == "part_of").select(node="src", whole="dst").join(
        used.rename({"node": "whole"}), on="whole").select("node", "run")
    used = pl.concat([used, inside])
    refs = (named.join(used, left_on="id", right_on="node")
            .join(located.runs.select(run="id", commit=pl.col("git_commit").str.to_lowercase()).drop_nulls(), on="run")
            .select("id", "created_at", "commit", path=pl.col("uri").str.replace(r"^file://", ""))
            .unique(["id", "commit", "path"]))
    relative = pl.col("path").str.replace(r"^(\./)+", "")
    refs = refs.join(repos, how="cross").with_columns(
        path=pl.when(pl.col("path").str.starts_with(pl.col("root") + "/"))
        .then(pl.col("path").str.slice(pl.col("root").str.len_chars() + 1))
        .when(~pl.col("path").str.starts_with("/") & ~pl.col("path").str.contains("://"))
        .then(relative))
    found = (refs.drop_nulls("path")
             .join(located.commit_states, on=["source", "commit"])
             .join(located.locations.rename({"commit": "state"}), on=["source", "state", "path"])
             .join(nodes.select(node_id="id", node_time="created_at"), on="node_id")
             .filter(pl.col("id") != pl.col("node_id")))
    if found.height == 0:
        return empty("edges")
    return canonical("edges", found.select(
        src=pl.min_horizontal("id", "node_id"), dst=pl.max_horizontal("id", "node_id"), kind=pl.lit("same_as"),
        source=pl.lit(IDENTITY_SOURCE), created_at=pl.max_horizontal("created_at", "node_time"),
        attrs=pl.struct(pl.lit("path").alias("evidence"), "path", "commit").struct.json_encode(),
    ))


def same_as_edges(nodes: pl.DataFrame, located: Located | None = None) -> pl.DataFrame:
    """`same_as` edges between the given nodes, each with its evidence in attrs."""
    found = [] if located is None else [path_edges(nodes, located)]
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
    # a pair two rules link stays one edge; canonical order picks whose evidence it keeps
    return canonical("edges", pl.concat(found, how="diagonal_relaxed"))
