"""Exports of the graph and proofs of its bytes.

- `openlineage_events(graph)` -> OpenLineage RunEvents; `write_ndjson`, `post_events`
- `to_dot`, `to_mermaid`, `to_graphml`: pictures and interchange, pure functions of frames
- `write_parquet(graph, folder)`: every table as Parquet
- `verify(catalog, node)`: recompute the digests of the bytes behind a lineage chain

`select_graph(catalog, query)` chooses what to export: the whole catalog or a query's nodes.
Names load on first use, so `braid verify` never imports the OpenLineage client.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._graph import Graph, select_graph
    from ._openlineage import (BraidDatasetFacet, BraidRunFacet, facet_schemas, openlineage_events, post_events,
                               write_ndjson)
    from ._parquet import write_parquet
    from ._pictures import PICTURES, to_dot, to_graphml, to_mermaid
    from ._verify import LOCATORS, VerifyReport, verify

# public name -> the private module that defines it
EXPORTS: dict[str, str] = {
    "Graph": "_graph", "select_graph": "_graph",
    "BraidDatasetFacet": "_openlineage", "BraidRunFacet": "_openlineage", "facet_schemas": "_openlineage",
    "openlineage_events": "_openlineage", "post_events": "_openlineage", "write_ndjson": "_openlineage",
    "write_parquet": "_parquet",
    "PICTURES": "_pictures", "to_dot": "_pictures", "to_graphml": "_pictures", "to_mermaid": "_pictures",
    "LOCATORS": "_verify", "VerifyReport": "_verify", "verify": "_verify",
}


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{EXPORTS[name]}", __name__), name)


__all__ = sorted(EXPORTS)
