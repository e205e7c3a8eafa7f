"""What `braid show NODE` prints: every fact the catalog holds about one node."""

from __future__ import annotations

import json

import polars as pl

from .catalog import Catalog


def node_report(cat: Catalog, node: str) -> dict[str, pl.DataFrame]:
    """Sections of facts about `node`, each a frame; empty sections are left out of tables."""
    node = cat.resolve(node)
    row = cat.node(node)
    attrs = json.loads(row.pop("attrs") or "{}")
    fields = [(k, None if v is None else str(v)) for k, v in row.items()]
    fields += [(f"attrs.{k}", v if isinstance(v, str) or v is None else json.dumps(v)) for k, v in attrs.items()]
    report = {
        "node": pl.DataFrame(fields, schema={"field": pl.String, "value": pl.String}, orient="row"),
        "links": cat.neighbours(node),
        "tags": cat.table("tags").filter(pl.col("node_id") == node).select("key", "value"),
    }
    if row["kind"] == "run":
        report["params"] = cat.table("params").filter(pl.col("run_id") == node).select("key", "value")
        report["metrics"] = (
            cat.table("metrics").filter(pl.col("run_id") == node)
            .group_by("key").agg(points=pl.len(), last_step=pl.col("step").max(),
                                 last=pl.col("value").sort_by("step", "timestamp").last(),
                                 min=pl.col("value").min(), max=pl.col("value").max())
            .sort("key")
        )
    if row["kind"] == "model_version":
        report["registry"] = cat.table("registry").filter(pl.col("model_version_id") == node).drop("source")
    return report
