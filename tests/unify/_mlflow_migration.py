"""What the MLflow -> MLflow migration tests share: the source store (the client-written fixture
store plus runs that stress the edges) and ways to read a store back with the real client."""

from __future__ import annotations

import contextlib
import math
import tempfile
import uuid
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import polars as pl
from mlflow import MlflowClient
from mlflow.entities import Metric

from braid.unify.migrate._plan import SOURCE_ID_TAG, read_mlflow
from braid.unify.source import SourceSpec
from tests.conftest import MlflowStore

T0 = 1_700_000_000_000
LONG_PARAM = "".join(chr(ord("a") + i % 26) for i in range(10_000))
BULK_RUNS, BULK_POINTS = 24, 1_500


def make_source(sqlite_store: MlflowStore, work: Path) -> SourceSpec:
    """A copy of the shared fixture store in `work`, with edge cases added by the real client."""
    db = work / "source.db"
    shutil.copy(sqlite_store.uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    exp = client.create_experiment("edges", artifact_location=(work / "art").as_uri())
    run = client.create_run(exp, start_time=T0, run_name="edges", tags={"mlflow.user": "ada"})
    rid = run.info.run_id
    client.log_batch(rid, metrics=[Metric("weird", v, T0 + i, i)
                                   for i, v in enumerate([math.nan, math.inf, -math.inf, 1.5])])
    client.log_param(rid, "prompt", "short for now")
    client.set_terminated(rid, "FAILED", end_time=T0 + 60_000)
    for i in range(BULK_RUNS):
        bulk = client.create_run(exp, start_time=T0 + 1000 * (i + 1), run_name=f"bulk-{i}")
        client.log_batch(bulk.info.run_id, metrics=[Metric("loss", 1 / (s + 1), T0 + s, s) for s in range(BULK_POINTS)])
        client.set_terminated(bulk.info.run_id, "FINISHED", end_time=T0 + 10_000 * (i + 1))
    # the mlflow client truncates params at 6,000 characters; another tool (or an older server)
    # may hold longer ones: put one in the store as such a source would have it
    with sqlite3.connect(db) as con:
        con.execute("UPDATE params SET value = ? WHERE run_uuid = ? AND key = 'prompt'", (LONG_PARAM, rid))
    return SourceSpec("old", "mlflow", {"uri": uri}, base_dir=work)



def target_spec(uri: str, base: Path, name: str = "new") -> SourceSpec:
    return SourceSpec(name, "mlflow", {"uri": uri}, base_dir=base)


def by_source(spec: SourceSpec) -> dict[str, pl.DataFrame]:
    """The target's graph tables with each run named by the source run it came from."""
    read = read_mlflow(spec)
    tags = read.graph["tags"]
    mapping = dict(tags.filter(pl.col("key") == SOURCE_ID_TAG).select("node_id", "value").iter_rows())
    mapped = {
        "runs": read.graph["runs"].with_columns(id=pl.col("id").replace_strict(mapping, default=None)),
        "params": read.graph["params"].with_columns(run_id=pl.col("run_id").replace_strict(mapping, default=None)),
        "metrics": read.graph["metrics"].with_columns(run_id=pl.col("run_id").replace_strict(mapping, default=None)),
        "tags": tags.with_columns(node_id=pl.col("node_id").replace_strict(mapping, default=None))
        .filter(pl.col("node_id").is_not_null() & ~pl.col("key").is_in([SOURCE_ID_TAG, "mlflow.parentRunId"])),
    }
    return {k: v.drop("source").sort(v.drop("source").columns) for k, v in mapped.items()}



def model_metrics(uri: str) -> list[tuple]:
    """Every metric on every logged model, read back with MlflowClient: (model, key, value, step,
    timestamp, run, dataset name, dataset digest), the model and the run named by the braid.source_id
    tag braid put on them (a source's own: their ids)."""
    client = MlflowClient(uri)
    models = client.search_logged_models(experiment_ids=[e.experiment_id for e in client.search_experiments()])
    runs: dict[str, str] = {}
    out = []
    for model in models:
        for m in model.metrics or []:
            if m.run_id not in runs:
                runs[m.run_id] = client.get_run(m.run_id).data.tags.get(SOURCE_ID_TAG, m.run_id)
            out.append((model.tags.get(SOURCE_ID_TAG, model.model_id), m.key, m.value, m.step, m.timestamp,
                        runs[m.run_id], m.dataset_name, m.dataset_digest))
    return sorted(out, key=repr)



def model_links(uri: str) -> list[tuple]:
    """Every live run's links to logged models, read back with MlflowClient.get_run (run search
    leaves model inputs out): (kind, run, model, step of an output), the run and the model named
    by the braid.source_id tag braid put on them (a source's own: their ids)."""
    client = MlflowClient(uri)
    names: dict[str, str] = {}

    def name(model: str) -> str:
        if model not in names:
            names[model] = client.get_logged_model(model).tags.get(SOURCE_ID_TAG, model)
        return names[model]

    out = []
    for found in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        run = client.get_run(found.info.run_id)
        rid = run.data.tags.get(SOURCE_ID_TAG, run.info.run_id)
        out += [("input", rid, name(m.model_id), None) for m in run.inputs.model_inputs or []]
        out += [("output", rid, name(m.model_id), m.step) for m in run.outputs.model_outputs or []]
    return sorted(out, key=repr)



def runs_in(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return int(con.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.Error:
        return 0


@contextlib.contextmanager
def fresh_databases(backend: str, n: int) -> Iterator[list[str]]:
    """`n` empty databases on one of this machine's database servers (sqlite: files)."""
    from tests.conftest import SERVERS, service_unavailable

    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield [f"sqlite:///{tmp}/target-{i}.db" for i in range(n)]
        return
    server = SERVERS[backend]
    try:
        admin = server.connect()
    except Exception as exc:  # each driver has its own OperationalError
        service_unavailable(server.name, exc)
    names = [f"braid_bulk_{uuid.uuid4().hex[:10]}" for _ in range(n)]
    try:
        with admin.cursor() as cur:
            for name in names:
                cur.execute(f"CREATE DATABASE {name}")
        yield [server.uri.format(db=name) for name in names]
    finally:
        with admin.cursor() as cur:
            for name in names:
                cur.execute(server.drop.format(db=name))
        admin.close()
