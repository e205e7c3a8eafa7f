"""The graph as a folder of Parquet files, one per table, for pandas, DuckDB, Spark or polars.

    out/nodes.parquet  edges.parquet  runs.parquet  params.parquet  metrics.parquet
        tags.parquet  registry.parquet

A subgraph keeps the fact rows of its own nodes only. The files carry braid's table schemas
(`unify/schema.py`), so `pl.read_parquet("out/nodes.parquet")` is a `nodes` frame again.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from ..schema import TABLES
from ._graph import Graph


def write_parquet(graph: Graph, folder: Path) -> list[Path]:
    """Write every table of `graph` to `folder` (created if needed); returns the files written."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file", hint="parquet export writes a folder: --output DIR")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in TABLES:
        target = folder / f"{name}.parquet"
        partial = target.with_name(f".{target.name}.tmp")
        graph.table(name).write_parquet(partial)
        os.replace(partial, target)  # a reader never sees half a file
        written.append(target)
    return written
