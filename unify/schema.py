"""The normalised graph: node kinds, edge kinds and every table's schema, declared once.

Connectors build frames against these declarations, the catalog validates and stores them,
the traversal index reads them, and help text and docs are generated from them.

>>> sorted(TABLES)
['edges', 'metrics', 'nodes', 'params', 'registry', 'runs', 'tags']
>>> empty("params").columns
['run_id', 'key', 'value', 'source']
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

Tool = Literal["mlflow", "wandb", "dvc"]
TOOLS: tuple[Tool, ...] = ("mlflow", "wandb", "dvc")

NodeKind = Literal["run", "dataset", "model", "artifact", "model_version", "code"]
NODE_KINDS: dict[str, str] = {
    "run": "one execution: an MLflow run, a W&B run, a DVC stage execution or experiment",
    "dataset": "data a run read or wrote: an MLflow dataset input, a W&B dataset artifact, a DVC out",
    "model": "a trained model: an MLflow LoggedModel, a W&B model artifact, a DVC model artifact",
    "artifact": "any other file a run logged: metrics and plots files, other artifact types",
    "model_version": "a registry entry: an MLflow model version, a W&B registry link, a GTO version",
    "code": "a git commit, shared by every tool: git:<40-hex sha>",
}


@dataclass(frozen=True)
class EdgeKind:
    """One kind of edge; edges always point downstream, from cause to effect."""

    src: tuple[str, ...]
    dst: tuple[str, ...]
    doc: str


EDGE_KINDS: dict[str, EdgeKind] = {
    "input": EdgeKind(("dataset", "model", "artifact"), ("run",), "the run read it"),
    "output": EdgeKind(("run",), ("dataset", "model", "artifact"), "the run wrote it"),
    "code": EdgeKind(("code",), ("run",), "the run ran this commit"),
    "registered_as": EdgeKind(("model",), ("model_version",), "the model was registered"),
    "parent_of": EdgeKind(("run",), ("run",), "a nested or resumed child run"),
    "part_of": EdgeKind(("dataset", "model", "artifact"), ("dataset", "model", "artifact"),
                        "a file inside a directory or a multi-file artifact"),
    "same_as": EdgeKind(
        tuple(NODE_KINDS), tuple(NODE_KINDS),
        "the same thing seen by two tools or twice by one; evidence in attrs",
    ),
}

UTC_TIME = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class Table:
    """A table's columns (name -> dtype, doc) and the key its rows are sorted and unique by."""

    columns: dict[str, tuple[pl.DataType, str]]
    key: tuple[str, ...]
    doc: str
    # the column that ties a fact row to its run, for incremental replacement by run
    run_column: str | None = None
    schema: pl.Schema = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", pl.Schema({k: t for k, (t, _) in self.columns.items()}))


def _cols(*spec: tuple[str, pl.DataType, str]) -> dict[str, tuple[pl.DataType, str]]:
    return {name: (dtype, doc) for name, dtype, doc in spec}


TABLES: dict[str, Table] = {
    "nodes": Table(
        _cols(
            ("id", pl.String(), "stable id: <source>:<kind>/<native id>, or git:<sha> for code"),
            ("kind", pl.String(), "run, dataset, model, artifact, model_version or code"),
            ("tool", pl.String(), "mlflow, wandb or dvc; null for code"),
            ("source", pl.String(), "the configured source name"),
            ("name", pl.String(), "human name as the tool shows it"),
            ("version", pl.String(), "version as the tool shows it"),
            ("digest", pl.String(), "md5:<hex> of the bytes, or another prefixed hash"),
            ("size", pl.Int64(), "bytes, where known"),
            ("uri", pl.String(), "where the bytes or the record live"),
            ("created_at", UTC_TIME, "when the tool created it (UTC)"),
            ("updated_at", UTC_TIME, "when the tool last changed it (UTC)"),
            ("status", pl.String(), "as the tool says"),
            ("user", pl.String(), "as the tool says"),
            ("attrs", pl.String(), "every other field the tool gave, as JSON"),
        ),
        key=("id",),
        doc="one row per thing: runs, datasets, models, artifacts, registry versions, commits",
    ),
    "edges": Table(
        _cols(
            ("src", pl.String(), "the cause (upstream end)"),
            ("dst", pl.String(), "the effect (downstream end)"),
            ("kind", pl.String(), "input, output, code, registered_as, parent_of, part_of or same_as"),
            ("source", pl.String(), "the configured source name, or _identity for same_as"),
            ("created_at", UTC_TIME, "when the link came to be (UTC)"),
            ("attrs", pl.String(), "context, step, or a same_as link's evidence, as JSON"),
        ),
        key=("src", "dst", "kind"),
        doc="directed links from cause to effect; same_as is followed both ways",
    ),
    "runs": Table(
        _cols(
            ("id", pl.String(), "the run's node id"),
            ("tool", pl.String(), "mlflow, wandb or dvc"),
            ("source", pl.String(), "the configured source name"),
            ("project", pl.String(), "MLflow experiment, W&B project, DVC repo"),
            ("name", pl.String(), "run name"),
            ("status", pl.String(), "as the tool says"),
            ("started_at", UTC_TIME, "start (UTC)"),
            ("ended_at", UTC_TIME, "end (UTC)"),
            ("duration", pl.Float64(), "seconds from start to end"),
            ("user", pl.String(), "who ran it"),
            ("git_commit", pl.String(), "40-hex commit the code was at"),
            ("git_branch", pl.String(), "branch"),
            ("git_remote", pl.String(), "remote URL, credentials removed"),
            ("host", pl.String(), "machine name"),
            ("environment", pl.String(), "python, os, program, entry point... as JSON"),
        ),
        key=("id",),
        doc="one row per run node",
        run_column="id",
    ),
    "params": Table(
        _cols(
            ("run_id", pl.String(), "the run's node id"),
            ("key", pl.String(), "parameter name"),
            ("value", pl.String(), "value as the tool stored it"),
            ("source", pl.String(), "the configured source name"),
        ),
        key=("run_id", "key"),
        doc="run parameters",
        run_column="run_id",
    ),
    "metrics": Table(
        _cols(
            ("run_id", pl.String(), "the run's node id"),
            ("key", pl.String(), "metric name"),
            ("step", pl.Int64(), "step as logged"),
            ("timestamp", UTC_TIME, "when it was logged (UTC)"),
            ("value", pl.Float64(), "value; NaN and infinities kept"),
            ("source", pl.String(), "the configured source name"),
        ),
        key=("run_id", "key", "step", "timestamp", "value"),
        doc="the full metric history of every run",
        run_column="run_id",
    ),
    "tags": Table(
        _cols(
            ("node_id", pl.String(), "the node the tag is on"),
            ("key", pl.String(), "tag name"),
            ("value", pl.String(), "tag value"),
            ("source", pl.String(), "the configured source name"),
        ),
        key=("node_id", "key"),
        doc="tags of runs, models and registry versions",
    ),
    "registry": Table(
        _cols(
            ("model_version_id", pl.String(), "the model_version node id"),
            ("name", pl.String(), "registered model name"),
            ("version", pl.String(), "version as the registry shows it"),
            ("aliases", pl.List(pl.String()), "aliases pointing at this version now"),
            ("stage", pl.String(), "current stage, where the registry has stages"),
            ("model_id", pl.String(), "the model node it registers"),
            ("run_id", pl.String(), "the run node that produced it"),
            ("events", pl.String(), "registration, stage and alias history, as a JSON list"),
            ("source", pl.String(), "the configured source name"),
        ),
        key=("model_version_id",),
        doc="model registry entries",
    ),
}

def empty(table: str) -> pl.DataFrame:
    """An empty frame with the table's schema."""
    return pl.DataFrame(schema=TABLES[table].schema)


def conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Cast and order `frame` to the table's schema, adding missing columns as nulls.

    Unknown columns are an error: a connector that produces one has a bug.
    """
    spec = TABLES[table]
    extra = set(frame.columns) - set(spec.schema)
    if extra:
        raise ValueError(f"{table}: unknown columns {sorted(extra)}")
    if frame.width == 0:
        return empty(table)
    exprs = []
    for name, dtype in spec.schema.items():
        if name in frame.columns:
            exprs.append(pl.col(name).cast(dtype))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return frame.select(exprs)


def canonical(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Conform, sort, and keep one row per key: equal content gives equal bytes.

    Rows are sorted by key and then by every other column before duplicates are dropped, so
    which duplicate survives never depends on the order a tool returned them in.
    """
    spec = TABLES[table]
    out = conform(table, frame)
    rest = [c for c, t in out.schema.items() if c not in spec.key and not isinstance(t, (pl.List, pl.Struct))]
    out = out.sort([*spec.key, *rest], nulls_last=True)
    if out.height < 2:
        return out
    # sorted, so duplicates are neighbours: comparing each row with the one before is linear,
    # where a hash-based unique over 10M metric points costs seconds
    repeat = functools.reduce(operator.and_, [pl.col(k).eq_missing(pl.col(k).shift(1)) for k in spec.key])
    return out.filter(~repeat.fill_null(False))


def check_graph(nodes: pl.DataFrame, edges: pl.DataFrame) -> None:
    """Raise ValueError when a node or edge kind is unknown, or an edge joins kinds its
    declaration does not allow (between nodes both present): a connector bug, caught early."""
    bad = nodes.filter(~pl.col("kind").is_in(list(NODE_KINDS)))
    if bad.height:
        raise ValueError(f"unknown node kind {bad['kind'][0]!r} ({bad['id'][0]})")
    allowed = pl.DataFrame(
        [(name, s, d) for name, k in EDGE_KINDS.items() for s in k.src for d in k.dst],
        schema={"kind": pl.String, "src_kind": pl.String, "dst_kind": pl.String}, orient="row",
    )
    kinds = nodes.select("id", "kind")
    ends = (
        edges.select("src", "dst", "kind")
        .join(kinds.rename({"id": "src", "kind": "src_kind"}), on="src")
        .join(kinds.rename({"id": "dst", "kind": "dst_kind"}), on="dst")
    )
    wrong = ends.join(allowed, on=["kind", "src_kind", "dst_kind"], how="anti")
    if wrong.height:
        e = wrong.row(0, named=True)
        raise ValueError(f"edge {e['src']} -[{e['kind']}]-> {e['dst']} joins a {e['src_kind']} to a "
                         f"{e['dst_kind']}, which {e['kind']!r} does not allow")
