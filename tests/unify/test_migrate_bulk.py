"""`braid migrate` into MLflow databases: the bulk writer writes the rows the client writes, whole
batches or nothing, and resumes; the id map's journal; a run with 100,000 metric points."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from braid.unify.migrate import migrate
from braid.unify.migrate._plan import SOURCE_ID_TAG, read_mlflow
from braid.unify.source import SourceSpec
from tests.conftest import MlflowStore
from tests.unify._mlflow_migration import BULK_RUNS, LONG_PARAM, T0, fresh_databases, make_source, runs_in, target_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source(sqlite_store: MlflowStore, tmp_path_factory: pytest.TempPathFactory) -> SourceSpec:
    return make_source(sqlite_store, tmp_path_factory.mktemp("migrate-source"))


LONG_TAG = "".join(chr(ord("A") + i % 26) for i in range(9_000))


@pytest.fixture(scope="module")
def edge_source(source: SourceSpec, tmp_path_factory: pytest.TempPathFactory) -> SourceSpec:
    """`source` plus runs at the edges of what the client decides when it writes: ties for the
    latest value, NaN against 0 at one step and time, a tag over 8,000 characters, a dataset two
    runs share, a renamed run, an empty mlflow.runName, a status and user set outside the client."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    work = tmp_path_factory.mktemp("bulk-source")
    db = work / "source.db"
    shutil.copy(source.options["uri"].removeprefix("sqlite:///"), db)
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.create_experiment("bulk-edges", artifact_location=(work / "art").as_uri())

    def run(name: str, n: int, **tags: str) -> str:
        return client.create_run(exp, start_time=T0 + n, run_name=name, tags=tags).info.run_id

    ties = run("ties", 1, **{"mlflow.user": "bo"})
    client.log_batch(ties, params=[Param("p", "v")], tags=[RunTag("notes", "short for now")], metrics=[
        Metric("m", 1.0, T0 + 5, 3), Metric("m", 2.0, T0 + 5, 3), Metric("m", 9.0, T0 + 4, 3),
        Metric("n", math.nan, T0 + 5, 3), Metric("n", 0.0, T0 + 5, 3),
        Metric("back", 5.0, T0 + 9, 1), Metric("back", 4.0, T0 + 1, 2)])
    client.set_terminated(ties, "KILLED", end_time=T0 + 99)
    renamed, blank, waiting = run("old-name", 2), run("blank", 3), run("waiting", 4)
    child = run("child", 5, **{"mlflow.parentRunId": ties})
    client.log_metric(child, "loss", 0.5, timestamp=T0 + 7, step=0)
    client.set_terminated(child, "FAILED", end_time=T0 + 50)
    shared = Dataset(name="shared", digest="abc123", source_type="local", source="/data/shared.csv",
                     schema='{"a": "int"}', profile='{"rows": 3}')
    client.log_inputs(ties, [DatasetInput(shared, [InputTag("mlflow.data.context", "train")])])
    client.log_inputs(renamed, [DatasetInput(shared, [InputTag("mlflow.data.context", "eval")])])
    # what other tools or older servers leave in a store and the client would not write itself
    with sqlite3.connect(db) as con:
        con.execute("UPDATE tags SET value = ? WHERE run_uuid = ? AND key = 'notes'", (LONG_TAG, ties))
        con.execute("UPDATE tags SET value = 'new-name' WHERE run_uuid = ? AND key = 'mlflow.runName'", (renamed,))
        con.execute("UPDATE tags SET value = '' WHERE run_uuid = ? AND key = 'mlflow.runName'", (blank,))
        con.execute("UPDATE runs SET status = 'KILLED', end_time = NULL WHERE run_uuid = ?", (blank,))
        con.execute("UPDATE runs SET status = 'SCHEDULED', user_id = 'carol' WHERE run_uuid = ?", (waiting,))
        con.execute("DELETE FROM tags WHERE run_uuid = ? AND key = 'mlflow.user'", (waiting,))
    return SourceSpec("old", "mlflow", {"uri": f"sqlite:///{db}"}, base_dir=work)


RUN_TABLES = ("runs", "tags", "params", "metrics", "latest_metrics", "datasets", "inputs", "input_tags")


def table_rows(uri: str) -> dict[str, list[tuple]]:
    """Every row of the run tables, with the ids the target generated (run, dataset, input and
    logged model ids, experiment ids) replaced by what they stand for, and without artifact URIs."""
    import sqlalchemy as sa

    engine = sa.create_engine(uri)
    try:
        with engine.connect() as con:
            raw = {t: [dict(r._mapping) for r in con.execute(sa.text(f"SELECT * FROM {t}"))]
                   for t in (*RUN_TABLES, "experiments", "logged_model_tags")}
    finally:
        engine.dispose()
    runs = {t["run_uuid"]: t["value"] for t in raw["tags"] if t["key"] == SOURCE_ID_TAG}
    models = {t["model_id"]: t["tag_value"] for t in raw["logged_model_tags"] if t["tag_key"] == SOURCE_ID_TAG}
    exps = {e["experiment_id"]: e["name"] for e in raw["experiments"]}
    datasets = {d["dataset_uuid"]: (exps[d["experiment_id"]], d["name"], d["digest"]) for d in raw["datasets"]}
    # a dataset's input of a run, or a run's input or output of a logged model
    ends = {"DATASET": datasets, "RUN": runs, "RUN_INPUT": runs, "RUN_OUTPUT": runs, "MODEL_INPUT": models,
            "MODEL_OUTPUT": models}
    inputs = {i["input_uuid"]: (ends[i["source_type"]][i["source_id"]],
                                ends[i["destination_type"]][i["destination_id"]]) for i in raw["inputs"]}

    def norm(table: str, row: dict) -> tuple:
        if "run_uuid" in row:
            row["run_uuid"] = runs[row["run_uuid"]]
        if "experiment_id" in row:
            row["experiment_id"] = exps[row["experiment_id"]]
        if table == "runs":
            row.pop("artifact_uri")
        if table == "tags" and row["key"] == "mlflow.parentRunId":
            row["value"] = runs[row["value"]]
        if table == "datasets":
            row.pop("dataset_uuid")
        if table == "inputs":
            row["source_id"], row["destination_id"] = inputs[row.pop("input_uuid")]
        if table == "input_tags":
            row["input_uuid"] = inputs[row["input_uuid"]]
        return tuple(sorted(row.items()))

    return {t: sorted((norm(t, r) for r in raw[t]), key=repr) for t in RUN_TABLES}


def write_runs_with(source: SourceSpec, target: SourceSpec, work: Path, *, bulk: bool) -> None:
    """What migrate() does up to the runs, with the client writer or the bulk writer."""
    from braid.unify.migrate._idmap import IdMap
    from braid.unify.migrate._mlflow_writer import MlflowWriter
    from braid.unify.migrate._plan import make_plan
    from braid.unify.source import no_progress

    plan = make_plan(source.name, target.name, read_mlflow(source))
    idmap = IdMap.load(work / ".braid", source.name, target.name)
    writer = MlflowWriter(target, artifact_root=work / "artifacts", bulk=bulk)
    experiments = {e: writer.experiment(plan, idmap, e) for e in plan.experiment_ids}
    writer.runs(plan, idmap, experiments, no_progress)
    assert all(idmap.run_done(r) for r in plan.run_ids)


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mariadb"])
def test_bulk_writer_writes_the_rows_the_client_writes(edge_source: SourceSpec, backend: str, tmp_path: Path) -> None:
    with fresh_databases(backend, 2) as (client_uri, bulk_uri):
        write_runs_with(edge_source, target_spec(client_uri, tmp_path, "by-client"), tmp_path / "c", bulk=False)
        write_runs_with(edge_source, target_spec(bulk_uri, tmp_path, "by-bulk"), tmp_path / "b", bulk=True)
        by_client, by_bulk = table_rows(client_uri), table_rows(bulk_uri)
    for table in RUN_TABLES:
        assert len(by_bulk[table]) == len(by_client[table]), table
        for a, b in zip(by_client[table], by_bulk[table]):
            assert a == b, (table, a, b)
    # the edges are in what was compared
    assert len(by_bulk["runs"]) == 4 + BULK_RUNS + 5
    tags = {(dict(r)["run_uuid"], dict(r)["key"]): dict(r)["value"] for r in by_bulk["tags"]}
    assert any(k == "notes" and v == LONG_TAG[:8000] for (_, k), v in tags.items())
    assert any(k == "braid.truncated" and "notes" in v for (_, k), v in tags.items())
    names = {dict(r)["name"] for r in by_bulk["runs"]}
    assert {"new-name", "blank", "waiting", "ties", "child"} <= names and "old-name" not in names
    statuses = {dict(r)["name"]: (dict(r)["status"], dict(r)["end_time"], dict(r)["user_id"]) for r in by_bulk["runs"]}
    assert statuses["waiting"] == ("SCHEDULED", None, "carol") and statuses["blank"] == ("KILLED", None, "unknown")
    # MLflow's latest value: the highest step, then time, then value
    latest = {dict(r)["key"]: dict(r)["value"] for r in by_bulk["latest_metrics"] if dict(r)["key"] in ("m", "back")}
    assert latest == {"m": 2.0, "back": 4.0}
    shared = [r for r in by_bulk["datasets"] if dict(r)["name"] == "shared"]
    assert len(shared) == 1 and sum(dict(r)["source_id"][1] == "shared" for r in by_bulk["inputs"]) == 2
    # the full texts, written as artifacts by both
    for root in (tmp_path / "c" / "artifacts", tmp_path / "b" / "artifacts"):
        texts = {p.name: p.read_text() for p in root.rglob("braid/long_values/*/*.txt")}
        assert texts == {"notes.txt": LONG_TAG, "prompt.txt": LONG_PARAM}


def _done_in_map(catalog: Path) -> int:
    from braid.unify.migrate._idmap import IdMap

    stored = IdMap.load(catalog, "old", "new")  # what a new process finds in the catalog
    return sum(stored.run_done(r) for r in stored.data["runs"])


def test_bulk_failure_keeps_whole_batches_then_resumes(source: SourceSpec, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    from braid.unify.errors import MigrationTargetError
    from braid.unify.migrate import _mlflow_bulk

    monkeypatch.setattr(_mlflow_bulk, "RUNS_PER_BATCH", 4)
    insert, calls = _mlflow_bulk._insert, []

    def failing(conn: object, table: sa.Table, frame: pl.DataFrame) -> None:
        if table.name == "metrics":
            calls.append(frame.height)
            if len(calls) == 3:  # the database fails in the third batch, after its runs rows went in
                raise sa.exc.OperationalError("INSERT INTO metrics", {}, Exception("disk I/O error"))
        insert(conn, table, frame)

    monkeypatch.setattr(_mlflow_bulk, "_insert", failing)
    db = tmp_path / "target.db"
    target = target_spec(f"sqlite:///{db}", tmp_path)
    with pytest.raises(MigrationTargetError, match="failed after 8 of"):
        migrate(source, target, catalog=tmp_path / ".braid", artifact_root=tmp_path / "artifacts")
    assert runs_in(db) == 8 and _done_in_map(tmp_path / ".braid") == 8
    monkeypatch.undo()
    report = migrate(source, target, catalog=tmp_path / ".braid", artifact_root=tmp_path / "artifacts")
    total = 4 + BULK_RUNS
    assert report.verified, report.summary()
    assert report.created["runs"] == total - 8 and report.reused["runs"] == 8
    assert runs_in(db) == total


def test_bulk_batch_committed_but_not_in_the_map_is_adopted(source: SourceSpec, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from braid.unify.errors import MigrationTargetError
    from braid.unify.migrate import _mlflow_bulk
    from braid.unify.migrate._idmap import IdMap

    monkeypatch.setattr(_mlflow_bulk, "RUNS_PER_BATCH", 4)
    save, failed = IdMap.save, []

    def dying_save(self: IdMap) -> None:
        if not failed and sum(bool(e.get("done")) for e in self.data["runs"].values()) >= 8:
            failed.append(True)  # the process dies after the second batch committed, before its map
            raise OSError("no space left on device")
        save(self)

    monkeypatch.setattr(IdMap, "save", dying_save)
    db = tmp_path / "target.db"
    target = target_spec(f"sqlite:///{db}", tmp_path)
    with pytest.raises(MigrationTargetError):
        migrate(source, target, catalog=tmp_path / ".braid", artifact_root=tmp_path / "artifacts")
    assert runs_in(db) == 8 and _done_in_map(tmp_path / ".braid") == 4
    monkeypatch.undo()
    report = migrate(source, target, catalog=tmp_path / ".braid", artifact_root=tmp_path / "artifacts")
    total = 4 + BULK_RUNS
    assert report.verified, report.summary()
    assert report.reused["runs (finished after an interruption)"] == 4 and report.created["runs"] == total - 8
    assert runs_in(db) == total
    # the same rows as a migration that was never interrupted
    clean = tmp_path / "clean.db"
    migrate(source, target_spec(f"sqlite:///{clean}", tmp_path), catalog=tmp_path / ".clean",
            artifact_root=tmp_path / "clean-artifacts")
    assert table_rows(f"sqlite:///{db}") == table_rows(f"sqlite:///{clean}")


def test_compare_is_exact_where_rows_differ() -> None:
    """The fast path (row hashes) and the exact text comparison agree: -0.0 is not 0.0, NaN is NaN,
    nulls match nulls, a repeated row counts twice."""
    from braid.unify.migrate._report import _compare

    a = pl.DataFrame({"k": ["x", "y", "y", None], "v": [0.0, math.nan, math.nan, 1.0]})
    assert _compare(a, a.sample(fraction=1.0, shuffle=True, seed=3))["missing"] == 0
    b = a.with_columns(v=pl.Series([-0.0, math.nan, math.nan, 1.0]))
    got = _compare(a, b)
    assert (got["missing"], got["unexpected"]) == (1, 1)
    c = a.head(3)
    got = _compare(a, c)
    assert (got["missing"], got["unexpected"]) == (1, 0)


def test_id_map_journal_survives_a_torn_line_and_a_stale_journal(tmp_path: Path) -> None:
    from braid.unify.migrate._idmap import IdMap

    m = IdMap.load(tmp_path, "a", "b")
    m.set_run("r0", "t0", done=True)
    m.save()  # the first save after a load: a snapshot
    for i in range(1, 6):
        m.set_run(f"r{i}", f"t{i}", done=i % 2 == 0)
        m.set("artifacts", f"r{i}", {"files": i})
        m.save()  # appended to the journal
    assert m.journal.is_file()
    again = IdMap.load(tmp_path, "a", "b")
    assert again.data == m.data
    # a crash in the middle of an append: the torn line and what follows it are not replayed
    with m.journal.open("a") as out:
        out.write('["runs","r9",{"target":"t9","do')
    torn = IdMap.load(tmp_path, "a", "b")
    assert torn.data == m.data and torn.run_target("r9") is None
    torn.set_run("r6", "t6", done=True)
    torn.save()  # a new snapshot, the old journal gone
    assert not torn.journal.exists() and IdMap.load(tmp_path, "a", "b").data == torn.data
    # a journal left by a crash between a snapshot and the journal's removal belongs to an older
    # snapshot: it is not replayed over the newer map
    m.journal.write_text(json.dumps({"journal": "older"}) + '\n["runs","r6",{"target":"t6","done":false}]\n')
    assert IdMap.load(tmp_path, "a", "b").run_done("r6")


def test_a_run_with_100000_metric_points(tmp_path: Path) -> None:
    """Every point of a long history travels, with its step,
    timestamp and value (NaN once every 1,000 steps, as a diverging trainer logs it)."""
    uri = f"sqlite:///{tmp_path / 'long.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("long"), run_name="long", start_time=T0)
    values = [math.nan if s % 1000 == 500 else math.sin(s / 100) for s in range(100_000)]
    for start in range(0, 100_000, 1000):
        client.log_batch(run.info.run_id, metrics=[Metric("loss", values[s], T0 + s, s) for s in range(start, start + 1000)])
    client.set_terminated(run.info.run_id, "FINISHED", end_time=T0 + 100_000)
    target = target_spec(f"sqlite:///{tmp_path / 'copy.db'}", tmp_path)
    report = migrate(SourceSpec("old", "mlflow", {"uri": uri}, base_dir=tmp_path), target,
                     catalog=tmp_path / ".braid", artifact_root=tmp_path / "art")
    assert report.verified and report.kinds["metric_point"].carried == 100_000
    with sqlite3.connect(tmp_path / "copy.db") as con:
        rows = con.execute("SELECT step, timestamp, value, is_nan FROM metrics WHERE key = 'loss' ORDER BY step").fetchall()
    assert len(rows) == 100_000
    for step, timestamp, value, is_nan in rows:
        assert timestamp == T0 + step
        assert bool(is_nan) == math.isnan(values[step])
        assert is_nan or value == values[step]
    # and the target's latest value is the last step's, as MLflow itself would have recorded it
    assert client.get_run(run.info.run_id).data.metrics["loss"] == MlflowClient(target.options["uri"]).search_runs(
        [MlflowClient(target.options["uri"]).get_experiment_by_name("long").experiment_id])[0].data.metrics["loss"]


