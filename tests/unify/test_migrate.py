"""`braid migrate` MLflow -> MLflow against real stores: a sqlite store written by the real client
(tests/fixtures/write_mlflow_store.py) plus runs that stress the edges, migrated into a fresh
sqlite store and into a real `mlflow server`, then read back with braid's own connector.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import polars as pl
import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModelInput, LoggedModelOutput, Metric, Param, RunTag

from braid.unify.migrate import migrate
from braid.unify.migrate._plan import FIELDS, MAX_PARAM_LENGTH, PARAM_TOO_LONG, SOURCE_ID_TAG, read_mlflow
from braid.unify.source import SourceSpec
from tests.conftest import MlflowStore, linked_source, mlflow_server

pytestmark = pytest.mark.slow
T = TypeVar("T")

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


def test_report_lists_what_is_not_carried(source: SourceSpec, migrated: tuple) -> None:
    _, _, report = migrated
    data = json.loads(report.to_json())
    assert data["kinds"]["metric_point"]["carried"] == 5 + 1 + 1 + 300 + 1 + 4 + BULK_RUNS * BULK_POINTS
    assert data["kinds"]["artifact"]["carried"] > 0 and not data["kinds"]["artifact"]["not_carried"]
    # both logged models travel with their runs, and with them every metric logged against them
    assert data["kinds"]["logged_model"]["transformed"] == {FIELDS["logged_model"]["id"][1]: 2}
    with sqlite3.connect(f"file:{source.options['uri'].removeprefix('sqlite:///')}?mode=ro", uri=True) as con:
        linked = con.execute("SELECT count(*) FROM logged_model_metrics").fetchone()[0]
    assert linked and data["kinds"]["model_metric"] == {"carried": linked, "transformed": {}, "not_carried": {}}
    assert data["verification"]["model_metric"]["source"] == linked
    assert data["verified"] is True


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


def test_model_metrics_are_on_the_target_models(source: SourceSpec, migrated: tuple) -> None:
    target, _, _ = migrated
    expected = model_metrics(source.options["uri"])
    # the fixture's four: two the model took from its run, one NaN (kept as 0.0 by MLflow), and one
    # logged by another run (finetune) against the first run's model
    assert len(expected) == 4 and len({(m, r) for m, *_, r, _, _ in expected}) == 3
    assert model_metrics(target.options["uri"]) == expected


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


def test_model_inputs_and_outputs_are_on_the_target_runs(source: SourceSpec, migrated: tuple) -> None:
    target, _, report = migrated
    expected = model_links(source.options["uri"])
    # the fixture's: each run's pyfunc.log_model (an output at step 0), and finetune's metric about
    # train's model (fluent log_metric with model_id records the model as the run's input)
    assert sorted((kind, step) for kind, _, _, step in expected) == [("input", None), ("output", 0), ("output", 0)]
    assert model_links(target.options["uri"]) == expected
    assert (report.kinds["model_input"].carried, report.kinds["model_output"].carried) == (1, 2)
    for kind, n in (("model_input", 1), ("model_output", 2)):
        assert report.verification[kind] == {**report.verification[kind], "source": n, "target": n, "missing": 0,
                                             "unexpected": 0}


def test_second_run_creates_nothing(source: SourceSpec, migrated: tuple) -> None:
    target, work, _ = migrated
    before, linked = by_source(target), model_metrics(target.options["uri"])
    links = model_links(target.options["uri"])
    again = migrate(source, target, catalog=work / ".braid", artifact_root=work / "artifacts")
    assert not again.created, again.created
    assert again.verified
    after = by_source(target)
    for table in before:
        assert before[table].equals(after[table], null_equal=True), table
    assert model_metrics(target.options["uri"]) == linked and linked
    assert model_links(target.options["uri"]) == links and links


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
        # linked to the models through the server's own API (log_batch with the model id; log_inputs
        # and log_outputs for the runs that used and produced them)
        assert model_metrics(url) == model_metrics(source.options["uri"]) and report["kinds"]["model_metric"]["carried"]
        assert model_links(url) == model_links(source.options["uri"]) and report["kinds"]["model_output"]["carried"]
    assert _runs_in(db) == 4 + BULK_RUNS
    uninterrupted = by_source(migrated[0])
    # registry versions name the logged models the migration created in the server
    assert report["kinds"]["model_version"]["carried"] == 2 and not report["kinds"]["model_version"]["not_carried"]
    for table in ("runs", "params", "metrics", "tags"):
        assert resumed[table].equals(uninterrupted[table], null_equal=True), table


# -- artifact bytes -------------------------------------------------------------------------------
def _files(root: Path) -> dict[str, str]:
    """relative path -> md5 of every file under a folder, hashed here (not by braid)."""
    import hashlib

    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


def _run_roots(db: Path) -> dict[str, Path]:
    """source run or logged model id (for a target: the braid.source_id tag, else its own) -> its
    artifact folder."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT coalesce(t.value, r.run_uuid), r.artifact_uri FROM runs r LEFT JOIN tags t "
                           f"ON t.run_uuid = r.run_uuid AND t.key = '{SOURCE_ID_TAG}' "
                           "WHERE r.lifecycle_stage = 'active'").fetchall()
        rows += con.execute("SELECT coalesce(t.tag_value, m.model_id), m.artifact_location FROM logged_models m "
                            f"LEFT JOIN logged_model_tags t ON t.model_id = m.model_id AND t.tag_key = '{SOURCE_ID_TAG}'"
                            ).fetchall()
    return {sid: Path(uri.removeprefix("file://")) for sid, uri in rows}


def test_artifacts_are_copied_byte_for_byte(source: SourceSpec, migrated: tuple) -> None:
    target, _, report = migrated
    src = _run_roots(Path(source.options["uri"].removeprefix("sqlite:///")))
    tgt = _run_roots(Path(target.options["uri"].removeprefix("sqlite:///")))
    assert any(k.startswith("m-") for k in src) and set(tgt) == set(src)
    total = 0
    for run, root in src.items():
        expected = _files(root)
        got = {p: m for p, m in _files(tgt[run]).items() if not p.startswith("braid/long_values/")}
        assert got == expected, run
        total += len(expected)
    assert total > 0 and report.kinds["artifact"].carried == total
    assert report.verification["artifact"]["missing"] == 0 and report.verification["artifact"]["source"] == total


@pytest.mark.parametrize(("path", "reason"), [
    ("../secret", "leaves"), ("a/../../b", "leaves"), ("/etc/passwd", "absolute"), ("C:/x", "absolute"),
    ("..\\..\\x", "leaves"), ("\\\\host\\share", "absolute"), ("a\x00b", "NUL"), ("./", "no file"),
])
def test_unsafe_artifact_paths_are_refused(path: str, reason: str, tmp_path: Path) -> None:
    from braid.unify.migrate._artifacts import UnsafePath, destination

    with pytest.raises(UnsafePath, match=reason):
        destination(tmp_path, path)


def test_destination_through_a_symlink_is_refused(tmp_path: Path) -> None:
    from braid.unify.migrate._artifacts import UnsafePath, destination

    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "out").symlink_to(tmp_path)
    assert destination(tmp_path / "stage", "in/x.txt") == tmp_path / "stage" / "in" / "x.txt"
    with pytest.raises(UnsafePath, match="leaves"):
        destination(tmp_path / "stage", "out/x.txt")


def test_symlink_out_of_the_source_run_is_not_followed(tmp_path: Path) -> None:
    from braid.unify.migrate._artifacts import LINK_OUT

    source, run, secret = linked_source(tmp_path)
    target = target_spec(f"sqlite:///{tmp_path / 'dst.db'}", tmp_path)
    report = migrate(source, target,
                     catalog=tmp_path / ".braid", artifact_root=tmp_path / "dst-art")
    assert report.kinds["artifact"].not_carried == {LINK_OUT: 1}
    assert report.kinds["artifact"].carried == 1
    copied = _run_roots(tmp_path / "dst.db")[run.info.run_id]
    assert _files(copied) == {"ok.txt": __import__("hashlib").md5(b"fine").hexdigest()}
    assert secret.read_text() not in "".join(p.read_text() for p in (tmp_path / "dst-art").rglob("*") if p.is_file())
    assert report.verified, report.summary()


def test_artifacts_through_servers_that_serve_them(tmp_path: Path) -> None:
    """A server source whose artifacts are proxied (mlflow-artifacts:/), into a server target that
    proxies them too: listed, downloaded and uploaded through the servers' artifact APIs."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with mlflow_server(f"sqlite:///{tmp_path / 'a' / 's.db'}", tmp_path / "a", serve_artifacts=True) as src_url, \
            mlflow_server(f"sqlite:///{tmp_path / 'b' / 't.db'}", tmp_path / "b", serve_artifacts=True) as dst_url:
        client = MlflowClient(src_url)
        run = client.create_run(client.create_experiment("served"), run_name="served")
        client.log_text(run.info.run_id, "x,y\n1,2\n", "data/train.csv")
        client.log_dict(run.info.run_id, {"deep": [1, 2]}, "nested/a/b/config.json")
        client.set_terminated(run.info.run_id, "FINISHED")
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        report = migrate(SourceSpec("old", "mlflow", {"uri": src_url}, base_dir=tmp_path),
                         target_spec(dst_url, tmp_path), catalog=tmp_path / ".braid")
        assert report.kinds["artifact"].carried == 2
        assert report.verification["artifact"] == {**report.verification["artifact"], "missing": 0, "unexpected": 0,
                                                   "source": 2, "target": 2}
        assert report.verified, report.summary()
    src_files, dst_files = _files(tmp_path / "a" / "served"), _files(tmp_path / "b" / "served")
    assert sorted(m for m in src_files.values()) == sorted(m for m in dst_files.values()) and len(dst_files) == 2
    assert {p.rsplit("/artifacts/", 1)[-1] for p in dst_files} == {"data/train.csv", "nested/a/b/config.json"}


# -- the bulk writer (database targets): the same rows as the client, whole batches or nothing --

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
    assert _runs_in(db) == 8 and _done_in_map(tmp_path / ".braid") == 8
    monkeypatch.undo()
    report = migrate(source, target, catalog=tmp_path / ".braid", artifact_root=tmp_path / "artifacts")
    total = 4 + BULK_RUNS
    assert report.verified, report.summary()
    assert report.created["runs"] == total - 8 and report.reused["runs"] == 8
    assert _runs_in(db) == total


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
    assert _runs_in(db) == 8 and _done_in_map(tmp_path / ".braid") == 4
    monkeypatch.undo()
    report = migrate(source, target, catalog=tmp_path / ".braid", artifact_root=tmp_path / "artifacts")
    total = 4 + BULK_RUNS
    assert report.verified, report.summary()
    assert report.reused["runs (finished after an interruption)"] == 4 and report.created["runs"] == total - 8
    assert _runs_in(db) == total
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


# -- metrics logged against logged models -----------------------------------------------------------
@pytest.fixture(scope="module")
def model_metric_source(tmp_path_factory: pytest.TempPathFactory) -> SourceSpec:
    """A store where runs log metrics against a logged model through the real client: with dataset
    fields, NaN and +inf, from the model's own run and from another run; plus one row another tool
    left in logged_model_metrics without the run's metric point. The model is train's output (at
    step 2) and evaluate's input, as is a model no run logged (`served`), which cannot travel."""
    work = tmp_path_factory.mktemp("model-metrics")
    uri = f"sqlite:///{work / 'source.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("models", artifact_location=(work / "art").as_uri())
    train = client.create_run(exp, start_time=T0, run_name="train").info.run_id
    model = client.create_logged_model(exp, name="clf", source_run_id=train).model_id
    client.finalize_logged_model(model, "READY")
    client.log_batch(train, metrics=[
        Metric("loss", 0.5, T0 + 1, 0),
        Metric("val_loss", 0.3, T0 + 2, 2, model_id=model, dataset_name="val", dataset_digest="d41d8cd9"),
        Metric("val_nan", math.nan, T0 + 3, 2, model_id=model),
        Metric("val_inf", math.inf, T0 + 4, 2, model_id=model, dataset_name="val", dataset_digest="d41d8cd9")])
    client.set_terminated(train, "FINISHED", end_time=T0 + 100)
    evaluate = client.create_run(exp, start_time=T0 + 200, run_name="evaluate").info.run_id
    client.log_batch(evaluate, metrics=[Metric("score", 0.9, T0 + 201, 0, model_id=model, dataset_name="test",
                                               dataset_digest="0cc175b9")])
    served = client.create_logged_model(exp, name="served").model_id
    client.log_outputs(train, [LoggedModelOutput(model, 2)])
    client.log_inputs(evaluate, models=[LoggedModelInput(model), LoggedModelInput(served)])
    client.set_terminated(evaluate, "FINISHED", end_time=T0 + 300)
    with sqlite3.connect(work / "source.db") as con:
        con.execute("INSERT INTO logged_model_metrics (model_id, metric_name, metric_timestamp_ms, metric_step, "
                    "metric_value, experiment_id, run_id) VALUES (?, 'external', ?, 0, 0.7, ?, ?)",
                    (model, T0 + 5, int(exp), train))
    return SourceSpec("old", "mlflow", {"uri": uri}, base_dir=work)


def _history(uri: str, run_source_id: str, key: str) -> list[tuple]:
    """A metric's history on the target run that came from `run_source_id`, read with the client."""
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.`{SOURCE_ID_TAG}` = '{run_source_id}'")
    return [(m.value, m.step, m.timestamp) for m in client.get_metric_history(runs[0].info.run_id, key)]


def _link_rows(uri: str, *, skip: set[str] = frozenset()) -> list[tuple]:
    """The inputs table's run-to-model rows of a sqlite store, but the ids: (source type,
    destination type, step, input_uuid length), sorted; rows naming a model in `skip` left out."""
    with sqlite3.connect(f"file:{uri.removeprefix('sqlite:///')}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT source_type, destination_type, step, length(input_uuid), destination_id FROM inputs "
                           "WHERE source_type IN ('RUN_INPUT', 'RUN_OUTPUT')").fetchall()
    return sorted(r[:4] for r in rows if r[4] not in skip)


def in_fresh_thread(fn: Callable[[], T]) -> T:
    """fn() on a new thread. MLflow reads the active model from the environment once per thread
    (mlflow.tracking.fluent's ActiveModelContext) and this one has asked already; a new thread
    sees the environment as a new `braid migrate` process does."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


@pytest.mark.parametrize("kind", ["database", "server"])
def test_model_metrics_and_links_travel_to_the_target_model(model_metric_source: SourceSpec, kind: str,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bulk writer (a sqlite store) writes the rows; the client writer (a server) logs them with
    the model id, and the runs' model inputs and outputs with log_inputs and log_outputs. An
    active model in the user's environment links nothing. A re-run adds nothing."""
    import mlflow

    from braid.unify.migrate._plan import METRIC_NO_RUN_POINT, MODEL_NO_RUN

    source_uri = model_metric_source.options["uri"]
    expected = model_metrics(source_uri)
    assert len(expected) == 5
    external = [m for m in expected if m[1] == "external"]
    train = external[0][5]
    source_links = model_links(source_uri)
    assert len(source_links) == 3
    with contextlib.ExitStack() as stack:
        uri = (f"sqlite:///{tmp_path / 'target.db'}" if kind == "database"
               else stack.enter_context(mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path)))
        target = target_spec(uri, tmp_path)
        # the user's own model in the target, active in their environment: MlflowClient.log_batch
        # would link every metric point logged without a model to it
        client = MlflowClient(uri)
        mine = client.create_logged_model(client.create_experiment("mine"), name="mine").model_id
        monkeypatch.setenv("MLFLOW_ACTIVE_MODEL_ID", mine)

        def run() -> object:
            assert mlflow.get_active_model_id() == mine  # in force, as in a new process
            return migrate(model_metric_source, target, catalog=tmp_path / ".braid", artifact_root=tmp_path / "art")

        report = in_fresh_thread(run)
        assert report.verified, report.summary()
        assert not client.get_logged_model(mine).metrics
        linked = model_metrics(uri)
        if kind == "database":
            assert linked == expected and report.kinds["model_metric"].carried == 5
        else:
            # MLflow's API links a point to a model only while logging it to the run: the row
            # without a run point is reported, not invented as a new run point
            assert linked == [m for m in expected if m[1] != "external"]
            assert report.kinds["model_metric"].carried == 4
            assert report.kinds["model_metric"].not_carried == {METRIC_NO_RUN_POINT: 1}
            assert report.verification["model_metric"]["reported_not_carried"] == 1
        # the run keeps its one NaN point (MLflow holds the model's copy as 0.0), and no "external" point
        nan_points = _history(uri, train, "val_nan")
        assert len(nan_points) == 1 and math.isnan(nan_points[0][0])
        assert _history(uri, train, "external") == []
        # the runs' links to the model travel; the one to the model no run logged is reported
        served = {m for _, _, m, _ in source_links} - {m for m, *_ in expected}
        assert len(served) == 1 and model_links(uri) == [link for link in source_links if link[2] not in served]
        if kind == "database":  # the rows SqlAlchemyStore.log_inputs / log_outputs write: uuid4 hex, types, step
            assert _link_rows(uri) == _link_rows(source_uri, skip=served)
        assert (report.kinds["model_input"].carried, report.kinds["model_output"].carried) == (1, 1)
        assert report.kinds["model_input"].not_carried == {MODEL_NO_RUN: 1}
        again = in_fresh_thread(lambda: migrate(model_metric_source, target, catalog=tmp_path / ".braid",
                                                artifact_root=tmp_path / "art"))
        assert again.verified and not again.created, again.created
        assert model_metrics(uri) == linked
        assert model_links(uri) == [link for link in source_links if link[2] not in served]


def test_model_metrics_not_carried_say_why(model_metric_source: SourceSpec, tmp_path: Path) -> None:
    """Metrics of a model whose run stays behind, or logged by a run that stays behind."""
    from braid.unify.migrate._plan import METRIC_MODEL_NOT_MIGRATED, METRIC_RUN_NOT_MIGRATED

    client = MlflowClient(model_metric_source.options["uri"])
    runs = {r.info.run_name: r.info.run_id for r in client.search_runs([client.get_experiment_by_name("models")
                                                                       .experiment_id])}
    target = target_spec(f"sqlite:///{tmp_path / 'never.db'}", tmp_path)
    plan = {name: migrate(model_metric_source, target, catalog=tmp_path / ".braid", select=[runs[name]],
                          dry_run=True).kinds["model_metric"] for name in runs}
    assert (plan["train"].carried, dict(plan["train"].not_carried)) == (4, {METRIC_RUN_NOT_MIGRATED: 1})
    assert (plan["evaluate"].carried, dict(plan["evaluate"].not_carried)) == (0, {METRIC_MODEL_NOT_MIGRATED: 5})


def test_model_links_not_carried_say_why(model_metric_source: SourceSpec, tmp_path: Path) -> None:
    """A run's use of a model that stays behind (its run does, or no run logged it), and a model's
    use by a run that stays behind."""
    from braid.unify.migrate._plan import (LINK_MODEL_NOT_MIGRATED, LINK_RUN_NOT_MIGRATED, MODEL_NO_RUN,
                                           MODEL_RUN_NOT_MIGRATED)

    client = MlflowClient(model_metric_source.options["uri"])
    runs = {r.info.run_name: r.info.run_id for r in client.search_runs([client.get_experiment_by_name("models")
                                                                       .experiment_id])}
    target = target_spec(f"sqlite:///{tmp_path / 'never.db'}", tmp_path)
    kinds = {name: migrate(model_metric_source, target, catalog=tmp_path / ".braid", select=[runs[name]],
                           dry_run=True).kinds for name in runs}
    summary = {name: {kind: (k[kind].carried, dict(k[kind].not_carried)) for kind in ("model_input", "model_output")}
               for name, k in kinds.items()}
    assert summary["train"] == {"model_input": (0, {LINK_RUN_NOT_MIGRATED: 1}), "model_output": (1, {})}
    assert summary["evaluate"] == {"model_input": (0, {LINK_MODEL_NOT_MIGRATED: 1, MODEL_NO_RUN: 1}),
                                   "model_output": (0, {})}
    assert dict(kinds["evaluate"]["logged_model"].not_carried) == {MODEL_RUN_NOT_MIGRATED: 1, MODEL_NO_RUN: 1}
