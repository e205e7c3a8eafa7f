"""`braid migrate` MLflow -> MLflow against real stores: a sqlite store written by the real client
(tests/fixtures/write_mlflow_store.py) plus runs that stress the edges, migrated into a fresh
sqlite store and into a real `mlflow server`, then read back with braid's own connector.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from braid.unify.migrate import migrate
from braid.unify.migrate._plan import MAX_PARAM_LENGTH, PARAM_TOO_LONG, SOURCE_ID_TAG, read_mlflow
from braid.unify.source import SourceSpec
from tests.conftest import MlflowStore, mlflow_server

pytestmark = pytest.mark.slow

T0 = 1_700_000_000_000
LONG_PARAM = "".join(chr(ord("a") + i % 26) for i in range(10_000))
BULK_RUNS, BULK_POINTS = 24, 1_500


@pytest.fixture(scope="module")
def source(sqlite_store: MlflowStore, tmp_path_factory: pytest.TempPathFactory) -> SourceSpec:
    """A copy of the shared fixture store, with edge cases added by the real client."""
    work = tmp_path_factory.mktemp("migrate-source")
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


@pytest.fixture(scope="module")
def migrated(source: SourceSpec, tmp_path_factory: pytest.TempPathFactory) -> tuple[SourceSpec, Path, object]:
    work = tmp_path_factory.mktemp("migrate-target")
    spec = target_spec(f"sqlite:///{work / 'target.db'}", work)
    report = migrate(source, spec, catalog=work / ".braid", artifact_root=work / "artifacts")
    return spec, work, report


def test_target_reads_back_the_same(source: SourceSpec, migrated: tuple) -> None:
    target, _, report = migrated
    assert report.verified, report.summary()
    src, tgt = read_mlflow(source), read_mlflow(target)
    ids = {v: t for t, v in tgt.graph["tags"].filter(pl.col("key") == SOURCE_ID_TAG)
           .select("node_id", "value").iter_rows() if t.startswith("new:run/")}
    live = src.raw["runs"].filter(pl.col("lifecycle_stage") == "active")
    assert set(ids) == set(live["run_uuid"])
    # field by field, run by run
    sruns = src.graph["runs"].with_columns(uuid=pl.col("id").str.split("/").list.last())
    truns = {r["id"]: r for r in tgt.graph["runs"].iter_rows(named=True)}
    for s in sruns.iter_rows(named=True):
        t = truns[ids[s["uuid"]]]
        for col in ("project", "name", "status", "started_at", "ended_at", "user", "git_commit", "git_branch"):
            assert t[col] == s[col], (s["name"], col)

    def per_run(graph: dict, table: str, col: str, run: str) -> pl.DataFrame:
        return graph[table].filter(pl.col(col) == run).drop(col, "source").sort(pl.all())

    for uuid, tid in ids.items():
        sid = f"old:run/{uuid}"
        sm, tm = per_run(src.graph, "metrics", "run_id", sid), per_run(tgt.graph, "metrics", "run_id", tid)
        assert sm.height == tm.height
        assert sm.with_columns(pl.col("value").cast(pl.String)).equals(tm.with_columns(pl.col("value").cast(pl.String)))
        sp, tp = per_run(src.graph, "params", "run_id", sid), per_run(tgt.graph, "params", "run_id", tid)
        sp = sp.with_columns(pl.col("value").str.slice(0, MAX_PARAM_LENGTH))
        assert sp.equals(tp)
    # NaN and infinities survive with their steps
    edges = ids[live.filter(pl.col("name") == "edges")["run_uuid"][0]]
    weird = tgt.graph["metrics"].filter((pl.col("run_id") == edges) & (pl.col("key") == "weird")).sort("step")
    values = weird["value"].to_list()
    assert math.isnan(values[0]) and values[1] > 1e308 and values[2] < -1e308 and values[3] == 1.5
    # the parent link names the migrated parent
    child = src.graph["edges"].filter(pl.col("kind") == "parent_of").row(0, named=True)
    tedge = tgt.graph["edges"].filter(pl.col("kind") == "parent_of")
    assert tedge.select("src", "dst").rows() == [(ids[child["src"].split("/")[-1]], ids[child["dst"].split("/")[-1]])]
    # the dataset input, with its digest
    sd = src.graph["nodes"].filter(pl.col("kind") == "dataset").select("name", "digest", "uri").rows()
    td = tgt.graph["nodes"].filter(pl.col("kind") == "dataset").select("name", "digest", "uri").rows()
    assert sd == td and sd
    # registry versions with the alias
    reg = tgt.graph["registry"].sort("version").select("name", "version", "aliases").to_dicts()
    assert reg == [{"name": "churn", "version": "1", "aliases": []},
                   {"name": "churn", "version": "2", "aliases": ["champion"]}]


def test_long_param_is_reported_and_carried_in_full(source: SourceSpec, migrated: tuple) -> None:
    target, _, report = migrated
    assert report.kinds["param"].transformed[PARAM_TOO_LONG] == 1
    assert "6,000" in report.summary()
    tgt = read_mlflow(target)
    param = tgt.graph["params"].filter(pl.col("key") == "prompt")
    assert param["value"][0] == LONG_PARAM[:MAX_PARAM_LENGTH]
    run = param["run_id"][0].split("/")[-1]
    uri = tgt.raw["runs"].filter(pl.col("run_uuid") == run)["artifact_uri"][0]
    full = Path(uri.removeprefix("file://")) / "braid" / "long_values" / "params" / "prompt.txt"
    assert full.read_text() == LONG_PARAM
    # and the verification compared the full text
    assert report.verification["param"]["missing"] == 0


def test_report_lists_what_is_not_carried(migrated: tuple) -> None:
    _, _, report = migrated
    data = json.loads(report.to_json())
    assert data["kinds"]["metric_point"]["carried"] == 5 + 1 + 1 + 300 + 1 + 4 + BULK_RUNS * BULK_POINTS
    assert data["kinds"]["artifact"]["not_carried"]  # the artifact files are named, not dropped silently
    assert data["kinds"]["logged_model"]["not_carried"]
    assert data["verified"] is True


def test_second_run_creates_nothing(source: SourceSpec, migrated: tuple) -> None:
    target, work, _ = migrated
    before = by_source(target)
    again = migrate(source, target, catalog=work / ".braid", artifact_root=work / "artifacts")
    assert not again.created, again.created
    assert again.verified
    after = by_source(target)
    for table in before:
        assert before[table].equals(after[table], null_equal=True), table


def test_dry_run_writes_nothing(source: SourceSpec, tmp_path: Path) -> None:
    db = tmp_path / "never.db"
    report = migrate(source, target_spec(f"sqlite:///{db}", tmp_path), catalog=tmp_path / ".braid", dry_run=True)
    assert not db.exists() and not (tmp_path / ".braid").exists()
    assert report.dry_run and report.verification is None
    assert report.created["runs"] == 4 + BULK_RUNS
    assert "nothing written" in report.summary()


def _cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "braid.unify.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _config(work: Path, source: SourceSpec, target_uri: str) -> None:
    (work / "braid.toml").write_text(
        f'[[sources]]\nname = "old"\ntool = "mlflow"\nuri = "{source.options["uri"]}"\n\n'
        f'[[sources]]\nname = "new"\ntool = "mlflow"\nuri = "{target_uri}"\n')


def _runs_in(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return int(con.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_cli_dry_run_then_killed_server_then_resume(source: SourceSpec, migrated: tuple, tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    backend = f"sqlite:///{db}"
    with mlflow_server(backend, tmp_path) as url:
        _config(tmp_path, source, url)
        dry = _cli(["migrate", "--from", "old", "--to", "new", "--dry-run", "--format", "json"], tmp_path)
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["dry_run"] is True and _runs_in(db) == 0
        env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
        proc = subprocess.Popen([sys.executable, "-m", "braid.unify.cli", "migrate", "--from", "old", "--to", "new"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while _runs_in(db) < 6 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the migration finished before the server could be killed"
    # leaving the block killed the server mid-way
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "run the same migration again" in err
    partial = _runs_in(db)
    assert 0 < partial < 4 + BULK_RUNS
    with mlflow_server(backend, tmp_path) as url:  # the server comes back on another port
        _config(tmp_path, source, url)
        done = _cli(["migrate", "--from", "old", "--to", "new", "--format", "json"], tmp_path)
        assert done.returncode == 0, done.stdout[-1500:]
        report = json.loads(done.stdout)
        assert report["verified"] is True
        assert report["created"].get("runs", 0) == 4 + BULK_RUNS - partial
        resumed = by_source(target_spec(url, tmp_path))
    assert _runs_in(db) == 4 + BULK_RUNS
    uninterrupted = by_source(migrated[0])
    # the server refuses registry versions whose source is a local path (reported as not carried);
    # the sqlite target of the uninterrupted migration holds them: compare the runs' side
    is_run = pl.col("node_id").is_in(uninterrupted["runs"]["id"].implode())
    resumed["tags"], uninterrupted["tags"] = resumed["tags"].filter(is_run), uninterrupted["tags"].filter(is_run)
    assert "not carried" in done.stdout or report["kinds"]["model_version"]["not_carried"]
    for table in ("runs", "params", "metrics", "tags"):
        assert resumed[table].equals(uninterrupted[table], null_equal=True), table
