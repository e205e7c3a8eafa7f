"""The part of a catalog an export writes: every node, or the nodes a query names.

A query chooses nodes by returning an `id` column; the subgraph is those nodes and every edge
between two of them (the induced subgraph), with the fact tables cut to the same nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from ..errors import UsageError

if TYPE_CHECKING:
    from ..catalog import Catalog

# fact table -> the column that names its node
FACT_NODE_COLUMNS: dict[str, str] = {
    "runs": "id", "params": "run_id", "metrics": "run_id", "tags": "node_id", "registry": "model_version_id",
}


@dataclass(frozen=True)
class Graph:
    """Nodes and the edges between them, with the catalog they came from (for fact tables)."""

    nodes: pl.DataFrame
    edges: pl.DataFrame
    catalog: Catalog
    whole: bool = True

    def table(self, name: str) -> pl.DataFrame:
        """A fact table cut to this graph's nodes."""
        if name == "nodes":
            return self.nodes
        if name == "edges":
            return self.edges
        frame = self.catalog.table(name)
        if self.whole:
            return frame
        return frame.filter(pl.col(FACT_NODE_COLUMNS[name]).is_in(self.nodes["id"].implode()))


def select_graph(catalog: Catalog, query: str | None = None) -> Graph:
    """The whole catalog, or the subgraph induced by the node ids `query` returns.

    >>> select_graph(cat, "SELECT id FROM upstream('mlflow:model_version/churn/2')")  # doctest: +SKIP
    """
    if query is None:
        return Graph(catalog.nodes, catalog.edges, catalog)
    result = catalog.query(query)
    if "id" not in result.columns:
        raise UsageError(f"the --query result has no `id` column (it has: {', '.join(result.columns) or 'none'})",
                         hint="return node ids, e.g. SELECT id FROM upstream('<node id>')")
    ids = result.get_column("id").cast(pl.String).drop_nulls().unique()
    nodes = catalog.nodes.filter(pl.col("id").is_in(ids.implode()))
    keep = nodes["id"].implode()
    edges = catalog.edges.filter(pl.col("src").is_in(keep) & pl.col("dst").is_in(keep))
    return Graph(nodes, edges, catalog, whole=False)


def repo_roots(catalog: Catalog) -> dict[str, str]:
    """Source name -> the folder of its repository, for sources that read one (DVC): from the
    `locations` state the source's connector kept in the catalog's manifest."""
    from ..store import load_frame

    roots: dict[str, str] = {}
    for name, entry in sorted(catalog.manifest.sources.items()):
        ref = entry.state.get("locations")
        if ref is None:
            continue
        frame = load_frame(catalog.path, ref)
        if "root" in frame.columns and frame.height:
            root = frame.get_column("root").drop_nulls()
            if root.len():
                roots[name] = str(root[0])
    return roots
