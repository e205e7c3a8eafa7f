"""Node ids: `<source>:<kind>/<native id>`, and `git:<40-hex sha>` for commits.

>>> node_id("mlflow", "run", "3606aa26")
'mlflow:run/3606aa26'
>>> code_id("6F9EF47785F89EDF5E79889A88D9379722C3711D")
'git:6f9ef47785f89edf5e79889a88d9379722c3711d'
>>> parse_id("mlflow:model_version/churn/3")
ParsedId(source='mlflow', kind='model_version', native='churn/3')
"""

from __future__ import annotations

import re
from typing import NamedTuple

import polars as pl

from .schema import NODE_KINDS

SHA_RE = re.compile(r"^[0-9a-fA-F]{40}$")
SOURCE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
CODE_PREFIX = "git:"


class ParsedId(NamedTuple):
    source: str
    kind: str
    native: str


def node_id(source: str, kind: str, native: str) -> str:
    """The id of a node a source owns."""
    if kind not in NODE_KINDS or kind == "code":
        raise ValueError(f"not a source-owned node kind: {kind!r}")
    return f"{source}:{kind}/{native}"


def node_ids(source: str, kind: str, native: str | pl.Expr) -> pl.Expr:
    """The ids of a column of native ids: the vectorised `node_id`.

    >>> pl.select(node_ids("mlflow", "run", pl.lit("3606aa26"))).item()
    'mlflow:run/3606aa26'
    """
    node_id(source, kind, "")  # checks the kind
    return pl.lit(f"{source}:{kind}/") + (pl.col(native) if isinstance(native, str) else native)


def code_ids(sha: str | pl.Expr) -> pl.Expr:
    """`git:<sha>` for full 40-hex shas (lower-cased), null for anything else.

    >>> pl.select(code_ids(pl.lit("6F9EF47785F89EDF5E79889A88D9379722C3711D"))).item()
    'git:6f9ef47785f89edf5e79889a88d9379722c3711d'
    """
    col = pl.col(sha) if isinstance(sha, str) else sha
    return pl.when(col.str.contains(SHA_RE.pattern)).then(CODE_PREFIX + col.str.to_lowercase())


def is_commit(sha: str | None) -> bool:
    """True for a full 40-hex git commit sha (short shas never become code nodes)."""
    return bool(sha) and SHA_RE.match(sha.strip()) is not None  # type: ignore[union-attr]


def code_id(sha: str) -> str:
    """The tool-free id of a commit, shared by every tool that records it."""
    if not is_commit(sha):
        raise ValueError(f"not a 40-hex commit sha: {sha!r}")
    return CODE_PREFIX + sha.strip().lower()


def parse_id(node: str) -> ParsedId:
    """Split an id into source, kind and native id."""
    if node.startswith(CODE_PREFIX):
        return ParsedId("git", "code", node[len(CODE_PREFIX):])
    source, sep, rest = node.partition(":")
    kind, sep2, native = rest.partition("/")
    if not sep or not sep2 or kind not in NODE_KINDS:
        raise ValueError(f"not a braid node id: {node!r}")
    return ParsedId(source, kind, native)
