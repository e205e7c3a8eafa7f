"""The catalog as a reader sees it: one generation's tables and the lineage operations on them.

>>> cat = open_catalog(".braid")                                    # doctest: +SKIP
>>> cat.upstream("mlflow:model_version/churn/2", kinds=["dataset", "code"])  # doctest: +SKIP
shape: (3, 18)
┌──────────────────────────────┬─────────┬ ... ┬───────┬──────────────┬──────────┐
│ id                           ┆ kind    ┆ ... ┆ depth ┆ via_src      ┆ via_kind │
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from .errors import CatalogCorrupt, CatalogMoved, NodeNotFound
from .ids import code_id, is_commit, parse_id
from .schema import TABLES, empty
from .store import FileRef, Manifest, load_frame, read_manifest

if TYPE_CHECKING:
    from .index import GraphIndex
    from .traversal import StopAt

MAX_SUGGESTIONS = 3
MAX_DERIVED = 64
"""Values derived from a generation that a catalog keeps (oldest dropped first)."""

T = TypeVar("T")


def open_catalog(path: str | Path) -> Catalog:
    """Open the current generation of the catalog at `path` (a folder such as `.braid`)."""
    return Catalog(Path(path))


class Catalog:
    """One generation of a catalog: tables as polars frames, lineage by the traversal index.

    The generation is fixed when the catalog is opened: a sync running meanwhile commits a new
    generation that this object does not see (open the catalog again to read it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.manifest: Manifest = read_manifest(self.path)
        self._tables: dict[str, pl.DataFrame] = {}
        self._derived: dict[Hashable, Any] = {}

    @property
    def generation(self) -> int:
        return self.manifest.generation

    @property
    def sources(self) -> dict[str, str]:
        """Source name -> tool, for the sources in this generation."""
        return {k: v.tool for k, v in self.manifest.sources.items() if not k.startswith("_")}

    def table(self, name: str) -> pl.DataFrame:
        """A table across all sources: `nodes`, `edges`, `runs`, `params`, `metrics`, `tags`, `registry`."""
        if name not in TABLES:
            close = difflib.get_close_matches(name, list(TABLES), n=1)
            raise KeyError(f"no table {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        if name not in self._tables:
            frames = [self._load(e.tables[name]) for _, e in sorted(self.manifest.sources.items())
                      if name in e.tables]
            frame = pl.concat(frames) if frames else empty(name)
            if name == "nodes":
                # a commit is one node whichever tools recorded it
                frame = frame.unique("id", keep="first", maintain_order=True).sort("id")
            self._tables[name] = frame
        return self._tables[name]

    def _load(self, ref: FileRef) -> pl.DataFrame:
        try:
            return load_frame(self.path, ref)
        except CatalogCorrupt:
            # tables load on first use; two syncs later this generation's files are gone
            current = read_manifest(self.path).generation
            if current != self.generation and not (self.path / ref.file).exists():
                raise CatalogMoved(str(self.path), f"generation {self.generation} was replaced by "
                                   f"generation {current} while open", hint="open the catalog again") from None
            raise

    @property
    def nodes(self) -> pl.DataFrame:
        return self.table("nodes")

    @property
    def edges(self) -> pl.DataFrame:
        return self.table("edges")

    @cached_property
    def index(self) -> GraphIndex:
        """The adjacency index of this generation, built on first use."""
        from .index import GraphIndex

        return GraphIndex.build(self.nodes, self.edges)

    @property
    def has_index(self) -> bool:
        """Whether the index is built already (building it takes about a second per million edges)."""
        return "index" in self.__dict__

    def has_derived(self, key: Hashable) -> bool:
        """Whether `derived(key, ...)` would return a kept value."""
        return key in self._derived

    def derived(self, key: Hashable, make: Callable[[], T]) -> T:
        """`make()`, computed once per `key` and kept: a generation never changes, so neither does
        anything computed from its tables (the query executor keeps integer join keys and
        top-1-per-group tables here). At most MAX_DERIVED values are kept, the oldest dropped.
        """
        if key in self._derived:
            return self._derived[key]  # type: ignore[no-any-return]
        value = make()
        while len(self._derived) >= MAX_DERIVED:
            del self._derived[next(iter(self._derived))]
        self._derived[key] = value
        return value

    # -- nodes ----------------------------------------------------------------------------
    def resolve(self, node: str) -> str:
        """The id of `node` (a commit's sha in any case); NodeNotFound with close ids otherwise."""
        try:
            parsed = parse_id(node)
        except ValueError:
            raise NodeNotFound(node, self.suggest(node), why="not a node id: expected <source>:<kind>/<id> "
                               "or git:<40-hex sha>") from None
        if parsed.kind == "code" and is_commit(parsed.native):
            node = code_id(parsed.native)
        if not self._has_node(node):
            if parsed.source not in (*self.manifest.sources, "git"):
                why = f"no source named {parsed.source!r} (the catalog has: {', '.join(self.sources)})"
                raise NodeNotFound(node, self.suggest(node), why=why)
            raise NodeNotFound(node, self.suggest(node))
        return node

    def _has_node(self, node: str) -> bool:
        # once the index is built, its hashed lookup: a scan of a million ids costs milliseconds
        # a call, which a query resolving thousands of starts pays thousands of times
        if "index" in self.__dict__:
            return int(self.index.lookup([node])[0]) >= 0
        ids = self.nodes["id"]
        return not ids.is_empty() and bool(ids.is_in([node]).any())

    def suggest(self, node: str, n: int = MAX_SUGGESTIONS) -> list[str]:
        """Ids close to `node`: same prefix or containing its tail first, then by similarity."""
        ids = self.nodes["id"]
        tail = node.rsplit("/", 1)[-1]
        prefix = node.split("/", 1)[0]
        pool = ids.filter(ids.str.contains(tail, literal=True) | ids.str.starts_with(prefix)).head(5000).to_list()
        if len(pool) < n:
            pool += ids.head(5000).to_list()
        return difflib.get_close_matches(node, pool, n=n, cutoff=0.5)

    def node(self, node: str) -> dict[str, Any]:
        """One node's row as a dict."""
        node = self.resolve(node)
        return self.nodes.filter(pl.col("id") == node).row(0, named=True)

    def neighbours(self, node: str) -> pl.DataFrame:
        """Every edge touching `node`, with the other end's kind and name."""
        node = self.resolve(node)
        e = self.edges.filter((pl.col("src") == node) | (pl.col("dst") == node))
        other = pl.when(pl.col("src") == node).then("dst").otherwise("src")
        return (
            e.with_columns(direction=pl.when(pl.col("src") == node).then(pl.lit("downstream"))
                           .otherwise(pl.lit("upstream")), other=other)
            .join(self.nodes.select(other="id", other_kind="kind", other_name="name"), on="other", how="left")
            .select("direction", "kind", "other", "other_kind", "other_name", "attrs")
            .sort("direction", "kind", "other")
        )

    # -- lineage --------------------------------------------------------------------------
    def upstream(
        self, node: str | Sequence[str], *, depth: int | None = None, kinds: Sequence[str] | None = None,
        tools: Sequence[str] | None = None, stop_at: StopAt | None = None, as_of: datetime | None = None,
        same_as: bool = True,
    ) -> pl.DataFrame:
        """Everything `node` came from (against the arrows), nearest first."""
        from .traversal import upstream

        return upstream(self.index, self.nodes, self._starts(node), depth=depth, kinds=kinds, tools=tools,
                        stop_at=stop_at, as_of=as_of, same_as=same_as)

    def downstream(
        self, node: str | Sequence[str], *, depth: int | None = None, kinds: Sequence[str] | None = None,
        tools: Sequence[str] | None = None, stop_at: StopAt | None = None, as_of: datetime | None = None,
        same_as: bool = True,
    ) -> pl.DataFrame:
        """Everything that came from `node` (with the arrows), nearest first."""
        from .traversal import downstream

        return downstream(self.index, self.nodes, self._starts(node), depth=depth, kinds=kinds, tools=tools,
                          stop_at=stop_at, as_of=as_of, same_as=same_as)

    def paths(
        self, src: str, dst: str, *, depth: int | None = None, same_as: bool = True,
        as_of: datetime | None = None, limit: int = 100,
    ) -> pl.DataFrame:
        """The lineage paths from `src` down to `dst`, shortest first."""
        from .traversal import paths

        return paths(self.index, self.nodes, self.resolve(src), self.resolve(dst), depth=depth,
                     same_as=same_as, as_of=as_of, limit=limit)

    # -- query ----------------------------------------------------------------------------
    def query(
        self, sql: str, params: Mapping[str, Any] | None = None, *, limit: int | None = None,
        max_rows: int | None = None,
    ) -> pl.DataFrame:
        """Run one SELECT in braid's SQL dialect over this generation (see docs/query.md).

        Graph functions (`upstream`, `downstream`, `paths`) run on the traversal index, the
        rest on polars; `:name` parameters come from `params`. A bad query raises QueryError
        with its line and column; a result over `max_rows` (default 1,000,000) rows raises
        unless `limit` caps it. `EXPLAIN SELECT …` returns the plan, one line per row.

        >>> cat.query("SELECT key, value FROM params WHERE run_id = :run ORDER BY key",
        ...           {"run": "mlflow:run/304d0953b4414212a0e72e7dedd27627"})  # doctest: +SKIP
        shape: (2, 2)
        ┌────────┬───────┐
        │ key    ┆ value │
        │ ---    ┆ ---   │
        │ str    ┆ str   │
        ╞════════╪═══════╡
        │ epochs ┆ 10    │
        │ lr     ┆ 0.01  │
        └────────┴───────┘
        """
        from .query import execute

        kwargs = {} if max_rows is None else {"max_rows": max_rows}
        return execute(self, sql, params, limit=limit, **kwargs)

    def _starts(self, node: str | Sequence[str]) -> list[str]:
        return [self.resolve(n) for n in ([node] if isinstance(node, str) else node)]


__all__ = ["Catalog", "open_catalog"]
