"""The TUI's view of one catalog generation: the index arrays, node rows, filters and facts.

Everything a widget shows comes from here, so the widgets stay thin and this module is
testable without a terminal. Lineage is read straight from the traversal index's CSR arrays,
one level at a time: a node's neighbours are a slice of `indptr`/`nbr`, so a node with
100,000 neighbours costs a view and a mask, never a Python loop over them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from rich.text import Text

from braid.unify import open_catalog
from braid.unify.index import epoch_us

from ._search import SearchIndex

if TYPE_CHECKING:
    from braid.unify import Catalog
    from braid.unify.index import Csr, GraphIndex

Direction = Literal["upstream", "downstream"]
Branch = Literal["upstream", "downstream", "same_as"]

KIND_STYLES: dict[str, str] = {
    "run": "bold cyan", "dataset": "green", "model": "magenta", "model_version": "bold magenta",
    "artifact": "yellow", "code": "blue",
}
TOOL_STYLES: dict[str, str] = {"mlflow": "#3c9ee5", "wandb": "#f5b400", "dvc": "#a77bdf"}
LABEL_COLUMNS = ("id", "kind", "tool", "name", "version")
# a fact table bigger than this is sorted once by its node column and sliced by binary search
_SORTED_LOOKUP_ROWS = 200_000


@dataclass(frozen=True)
class Filters:
    """What the search and the lineage tree show: tools, kinds (empty = all) and a point in time.

    >>> Filters(tools=frozenset({"dvc"})).describe()
    'tool dvc'
    >>> Filters().active
    False
    """

    tools: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    as_of: datetime | None = None

    @property
    def active(self) -> bool:
        return bool(self.tools or self.kinds or self.as_of)

    def describe(self) -> str:
        parts = []
        if self.tools:
            parts.append("tool " + ",".join(sorted(self.tools)))
        if self.kinds:
            parts.append("kind " + ",".join(sorted(self.kinds)))
        if self.as_of:
            parts.append("as of " + self.as_of.strftime("%Y-%m-%d %H:%M"))
        return " · ".join(parts) or "no filters"


def parse_as_of(value: str) -> datetime | None:
    """An ISO 8601 time (UTC unless a zone is given), or None for an empty string.

    >>> parse_as_of("2026-01-31T12:00Z")
    datetime.datetime(2026, 1, 31, 12, 0, tzinfo=datetime.timezone.utc)
    """
    value = value.strip()
    if not value:
        return None
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


@dataclass
class Entries:
    """One expandable level: neighbours (dense ids), the edge rows that link them, and which
    of them are `same_as` twins; `hidden` counts neighbours the filters left out."""

    node: np.ndarray
    edge: np.ndarray
    twin: np.ndarray
    hidden: int = 0

    def __len__(self) -> int:
        return int(self.node.size)


def node_text(row: dict[str, Any], *, edge: str | None = None, evidence: str | None = None) -> Text:
    """One line for a node: `edge  kind tool name version`, styled by kind and tool.

    >>> node_text({"kind": "run", "tool": "mlflow", "name": "tune", "version": None}, edge="parent_of").plain
    'parent_of  run mlflow tune'
    """
    text = Text()
    if edge == "same_as":
        text.append("≡ same_as  ", style="bold #d75f87")
    elif edge:
        text.append(f"{edge}  ", style="dim")
    kind = row.get("kind") or "?"
    text.append(kind, style=KIND_STYLES.get(kind, ""))
    if row.get("tool"):
        text.append(" " + row["tool"], style=TOOL_STYLES.get(row["tool"], ""))
    text.append(" " + (row.get("name") or row.get("id") or "?"), style="bold")
    if row.get("version"):
        text.append(" " + str(row["version"]), style="italic")
    if evidence:
        text.append(f"  ({evidence})", style="#d75f87")
    return text


def evidence_text(attrs: str | None) -> str:
    """A `same_as` link's evidence as one short phrase.

    >>> evidence_text('{"evidence":"path","path":"data/train.csv","commit":"c33d47f0e1b616bf"}')
    'path data/train.csv @ c33d47f0e1b6'
    >>> evidence_text('{"evidence":"digest","digest":"md5:d0f819efa4160f52"}')
    'digest md5:d0f819efa4160f52'
    """
    try:
        data = json.loads(attrs or "{}")
    except ValueError:
        return attrs or ""
    if not isinstance(data, dict):
        return str(data)
    kind = str(data.pop("evidence", "?"))
    commit = data.pop("commit", None)
    rest = " ".join(str(v) if k in ("path", "digest", "uri") else f"{k}={v}" for k, v in data.items())
    out = f"{kind} {rest}".strip()
    if commit:
        out += f" @ {str(commit)[:12]}"
    return out


@dataclass
class Explorer:
    """One opened catalog generation with what the TUI needs precomputed.

    >>> explorer = Explorer.open(".braid")                          # doctest: +SKIP
    >>> explorer.entries(explorer.dense("mlflow:model_version/churn/2"), "upstream")  # doctest: +SKIP
    """

    catalog: Catalog
    index: GraphIndex
    labels: pl.DataFrame  # id, kind, tool, name, version: row i is dense id i
    search: SearchIndex
    _sorted: dict[str, pl.DataFrame] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | Path) -> Explorer:
        return cls.from_catalog(open_catalog(path))

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> Explorer:
        nodes = catalog.nodes
        index = catalog.index
        return cls(catalog, index, nodes.select(LABEL_COLUMNS), SearchIndex(nodes))

    # -- nodes ----------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self.catalog.generation

    @property
    def n_nodes(self) -> int:
        return self.index.n_nodes

    def dense(self, node_id: str) -> int:
        """Dense id of a node id, -1 when the catalog has no such node."""
        return int(self.index.lookup([node_id])[0])

    def node_id(self, dense: int) -> str:
        return str(self.index.ids[dense])

    def row(self, dense: int) -> dict[str, Any]:
        return self.labels.row(dense, named=True)

    def rows(self, dense: np.ndarray) -> list[dict[str, Any]]:
        if dense.size == 0:
            return []
        return self.labels[pl.Series(dense.astype(np.int64))].to_dicts()

    def full_row(self, dense: int) -> dict[str, Any]:
        return self.catalog.nodes.row(dense, named=True)

    def edge_kind(self, edge: int) -> str:
        return self.index.edge_kinds[int(self.index.edge_kind[edge])]

    def edge_attrs(self, edge: int) -> str | None:
        value = self.catalog.edges.get_column("attrs")[int(edge)]
        return None if value is None else str(value)

    # -- lineage, one level ---------------------------------------------------------------
    def _csr(self, branch: Branch) -> Csr:
        return {"upstream": self.index.backward, "downstream": self.index.forward,
                "same_as": self.index.same_as}[branch]

    def degree(self, dense: int, branch: Branch) -> int:
        indptr = self._csr(branch).indptr
        return int(indptr[dense + 1] - indptr[dense])

    def degrees(self, dense: np.ndarray, branch: Branch) -> np.ndarray:
        """`degree` of each node in `dense`, as an array."""
        indptr = self._csr(branch).indptr
        return indptr[dense + 1] - indptr[dense]

    def keep(self, nodes: np.ndarray, filters: Filters, edges: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of `nodes` (and the `edges` that reached them) the filters let through."""
        keep = np.ones(nodes.size, np.bool_)
        if filters.tools:
            keep &= np.isin(self.index.node_tool[nodes], self.index.tool_codes(sorted(filters.tools)))
        if filters.kinds:
            keep &= np.isin(self.index.node_kind[nodes], self.index.kind_codes(sorted(filters.kinds)))
        if filters.as_of is not None:
            moment = epoch_us(filters.as_of)
            keep &= self.index.node_created[nodes] <= moment
            if edges is not None:
                keep &= self.index.edge_created[edges] <= moment
        return keep

    def entries(self, dense: int, branch: Branch, filters: Filters = Filters(), *,
                twins: bool = False) -> Entries:
        """The neighbours one level away on `branch`, plus (with `twins`) the node's `same_as`
        twins first: the children of a lineage tree node, before paging."""
        parts = []
        if twins and branch != "same_as":
            csr = self.index.same_as
            lo, hi = int(csr.indptr[dense]), int(csr.indptr[dense + 1])
            parts.append((csr.nbr[lo:hi], csr.edge[lo:hi], True))
        csr = self._csr(branch)
        lo, hi = int(csr.indptr[dense]), int(csr.indptr[dense + 1])
        parts.append((csr.nbr[lo:hi], csr.edge[lo:hi], branch == "same_as"))
        node = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        edge = np.concatenate([p[1].astype(np.int64) for p in parts]) if len(parts) > 1 else parts[0][1]
        twin = np.concatenate([np.full(p[0].size, p[2]) for p in parts])
        if not filters.active:
            return Entries(node, edge, twin)
        keep = self.keep(node, filters, edge)
        return Entries(node[keep], edge[keep], twin[keep], hidden=int(node.size - keep.sum()))

    # -- facts ----------------------------------------------------------------------------
    def facts(self, table: str, column: str, node_id: str) -> pl.DataFrame:
        """The rows of a fact table about one node; big tables are sorted once and sliced."""
        frame = self.catalog.table(table)
        if frame.height <= _SORTED_LOOKUP_ROWS:
            return frame.filter(pl.col(column) == node_id)
        if table not in self._sorted:
            self._sorted[table] = frame.sort(column)
        ordered = self._sorted[table]
        keys = ordered.get_column(column)
        lo = int(keys.search_sorted(node_id, side="left"))
        hi = int(keys.search_sorted(node_id, side="right"))
        return ordered.slice(lo, hi - lo)

    def id_prefix(self, prefix: str, limit: int = 20) -> list[str]:
        """Node ids starting with `prefix`, in id order (a binary search on sorted ids)."""
        ids = self.index.ids
        if self.index.ids_sorted:
            lo = int(ids.search_sorted(prefix, side="left"))
            found = ids.slice(lo, limit)
            return [i for i in found.to_list() if i.startswith(prefix)]
        return ids.filter(ids.str.starts_with(prefix)).head(limit).to_list()


__all__ = ["Entries", "Explorer", "Filters", "evidence_text", "node_text", "parse_as_of"]
