"""The frames a query runs on: node ids as integers, node attributes gathered by row.

A node's dense id (its row of `nodes`, the traversal index's id) stands in for its string id
wherever the executor can: every column that holds node ids gets an integer twin named
`__key_<column>` (see `NODE_ID_COLUMNS`), which `_optimize.integer_keys` joins and compares on
in place of the strings. A twin is exact: the index's lookup compares strings, and a column
with a value that is not a node gets no twin. Twins of base tables are computed once per
generation and kept on the catalog; a graph call's rows come out of the traversal as dense ids
already, so their frames are lazy gathers from `nodes`, and polars computes only the columns
the query reads.

>>> KEYS.name("run_id")
'__key_run_id'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..index import GraphIndex
    from ..traversal import Reach

# The columns whose values are node ids, per table: these get integer twins.
NODE_ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "nodes": ("id",),
    "edges": ("src", "dst"),
    "runs": ("id",),
    "params": ("run_id",),
    "metrics": ("run_id",),
    "tags": ("node_id",),
    "registry": ("model_version_id", "model_id", "run_id"),
}
# ... and of a graph call's rows (upstream, downstream).
REACH_ID_COLUMNS = ("id", "via_src", "via_dst", "start")


@dataclass(frozen=True)
class _Keys:
    """How twins are named: a prefix no declared column has."""

    prefix: str = "__key_"

    def name(self, column: str) -> str:
        return f"{self.prefix}{column}"

    def of(self, columns: list[str]) -> dict[str, str]:
        """Column -> twin, for the twins among `columns`."""
        return {c[len(self.prefix):]: c for c in columns if c.startswith(self.prefix)}


KEYS = _Keys()


# -- base tables ----------------------------------------------------------------------------------
def keyed_table(catalog: Catalog, table: str) -> pl.DataFrame | None:
    """`table` with the integer twin of each node-id column that has one; None without any
    (or before the index is built: building it for one join would cost more than it saves)."""
    if not catalog.has_index or table not in NODE_ID_COLUMNS:
        return None
    return catalog.derived(("keyed table", table), lambda: _keyed(catalog, table))


def _keyed(catalog: Catalog, table: str) -> pl.DataFrame | None:
    frame = catalog.table(table)
    twins = [t for t in (_twin(catalog, table, c) for c in NODE_ID_COLUMNS[table]) if t is not None]
    return frame.with_columns(_chunked_like(t, frame) for t in twins) if twins else None


def _chunked_like(series: pl.Series, frame: pl.DataFrame) -> pl.Series:
    """`series` in the chunks of the frame's columns (a table is one chunk per source): columns
    chunked alike are selected and filtered without first being copied into one chunk each."""
    lengths = frame.get_column(frame.columns[0]).chunk_lengths() if frame.width else []
    if len(lengths) < 2:
        return series
    cuts = np.cumsum([0, *lengths])
    return pl.concat([series.slice(int(a), int(b - a)) for a, b in zip(cuts[:-1], cuts[1:])], rechunk=False)


def _twin(catalog: Catalog, table: str, column: str) -> pl.Series | None:
    index = catalog.index
    values = catalog.table(table).get_column(column)
    if table == "nodes":  # the index was built from this frame: row = dense id
        dense = np.arange(values.len(), dtype=np.int64)
    elif table == "edges" and index.dropped_edges == 0:  # the index resolved every end already
        dense = (index.edge_src if column == "src" else index.edge_dst).astype(np.int64)
    else:
        dense = index.lookup(values)
    present = values.is_not_null().to_numpy()
    if (dense[present] < 0).any():  # a value that is not a node: no exact integer for it
        return None
    twin = pl.Series(KEYS.name(column), dense, dtype=pl.Int64)
    return twin if present.all() else twin.scatter(np.flatnonzero(~present), None)


# -- graph calls ----------------------------------------------------------------------------------
def reach_frame(
    catalog: Catalog, found: Reach, columns: list[str], *, starts: pl.Series | None = None,
    start: str | None = None, keys: bool = False,
) -> pl.LazyFrame:
    """The rows of an upstream/downstream call (`columns`, as declared), gathered lazily.

    `found` holds dense rows (with `start` positions into `starts` for a lateral call; else
    every row's start is `start`). With `keys`, the node-id columns' twins come too.
    """
    index, nodes = catalog.index, catalog.nodes
    base: dict[str, object] = {"__node": found.node, "depth": found.depth, "__via": found.via}
    if starts is not None:
        assert found.start is not None
        # the start's text is gathered only if the query reads it (joins use the twin `__start`)
        base["__startpos"] = found.start
        base["__start"] = pl.Series(index.lookup(starts)).gather(found.start)
    else:  # one start, or null: several walked as one
        dense = int(index.lookup([start])[0]) if start is not None else -1
        base["start"] = pl.repeat(start, len(found), dtype=pl.String, eager=True)
        base["__start"] = pl.repeat(dense if dense >= 0 else None, len(found), dtype=pl.Int64, eager=True)
    node, via = pl.col("__node"), pl.col("__via")
    has_via = via >= 0
    ends = _edge_ends(catalog, index)

    def end_key(which: str) -> pl.Expr:
        return pl.when(has_via).then(pl.lit(ends[which]).gather(via.clip(0)))

    lazy: dict[str, pl.Expr] = {c: pl.lit(nodes.get_column(c)).gather(node) for c in nodes.columns}
    lazy["via_src"] = pl.lit(nodes.get_column("id")).gather(end_key("src"))
    lazy["via_dst"] = pl.lit(nodes.get_column("id")).gather(end_key("dst"))
    lazy["via_kind"] = pl.lit(ends["kinds"]).gather(pl.when(has_via).then(pl.lit(ends["kind"]).gather(via.clip(0))))
    if starts is not None:
        lazy["start"] = pl.lit(starts).gather(pl.col("__startpos"))
    out = [lazy[c].alias(c) if c in lazy else pl.col(c) for c in columns]
    if keys:
        twins = {"id": node, "via_src": end_key("src"), "via_dst": end_key("dst"), "start": pl.col("__start")}
        out += [twins[c].alias(KEYS.name(c)) for c in REACH_ID_COLUMNS if c in columns]
    return pl.DataFrame(base).lazy().select(out)


def _edge_ends(catalog: Catalog, index: GraphIndex) -> dict[str, pl.Series]:
    """The index's edge arrays as polars Series, converted once per generation."""

    def make() -> dict[str, pl.Series]:
        kinds = pl.Series("via_kind", list(index.edge_kinds), dtype=pl.String)
        return {
            "src": pl.Series(index.edge_src.astype(np.int64)).replace(-1, None),
            "dst": pl.Series(index.edge_dst.astype(np.int64)).replace(-1, None),
            "kind": pl.Series(index.edge_kind.astype(np.int64)).replace(-1, None),
            "kinds": kinds,
        }

    return catalog.derived("edge ends", make)


def frame_columns(frame: pl.DataFrame | pl.LazyFrame) -> list[str]:
    return frame.columns if isinstance(frame, pl.DataFrame) else frame.collect_schema().names()


__all__ = ["KEYS", "NODE_ID_COLUMNS", "REACH_ID_COLUMNS", "frame_columns", "keyed_table", "reach_frame"]
