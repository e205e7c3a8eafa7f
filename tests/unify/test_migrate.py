"""`braid migrate` MLflow -> MLflow against real stores: a sqlite store written by the real client
(tests/fixtures/write_mlflow_store.py) plus runs that stress the edges, migrated into a fresh
sqlite store and into a real `mlflow server`, then read back with braid's own connector.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient

from braid.unify.migrate import migrate
from braid.unify.migrate._plan import FIELDS, MAX_PARAM_LENGTH, PARAM_TOO_LONG, SOURCE_ID_TAG, read_mlflow
from braid.unify.source import SourceSpec
from tests.conftest import MlflowStore, linked_source, mlflow_server
from tests.unify._mlflow_migration import (BULK_POINTS, BULK_RUNS, LONG_PARAM, by_source, make_source, model_links,
                                             model_metrics, runs_in, target_spec)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source(sqlite_store: MlflowStore, tmp_path_factory: pytest.TempPathFactory) -> SourceSpec:
    return make_source(sqlite_store, tmp_path_factory.mktemp("migrate-source"))


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



def test_model_metrics_are_on_the_target_models(source: SourceSpec, migrated: tuple) -> None:
    target, _, _ = migrated
    expected = model_metrics(source.options["uri"])
    # the fixture's four: two the model took from its run, one NaN (kept as 0.0 by MLflow), and one
    # logged by another run (finetune) against the first run's model
    assert len(expected) == 4 and len({(m, r) for m, *_, r, _, _ in expected}) == 3
    assert model_metrics(target.options["uri"]) == expected




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




def test_cli_dry_run_then_killed_server_then_resume(source: SourceSpec, migrated: tuple, tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    backend = f"sqlite:///{db}"
    with mlflow_server(backend, tmp_path) as url:
        _config(tmp_path, source, url)
        dry = _cli(["migrate", "--from", "old", "--to", "new", "--dry-run", "--format", "json"], tmp_path)
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["dry_run"] is True and runs_in(db) == 0
        env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
        proc = subprocess.Popen([sys.executable, "-m", "braid.unify.cli", "migrate", "--from", "old", "--to", "new"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while runs_in(db) < 6 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the migration finished before the server could be killed"
    # leaving the block killed the server mid-way
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "run the same migration again" in err
    partial = runs_in(db)
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
    assert runs_in(db) == 4 + BULK_RUNS
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




# -- server to server over PostgreSQL ---------------------------------------------------------------
def _runs_by_source(client: MlflowClient, *, own: bool) -> dict[str, object]:
    """Every run a server holds, by its source id: the braid.source_id tag braid put on it, or (a
    source's runs: `own`) its own id."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id if own else r.data.tags[SOURCE_ID_TAG]: r for r in client.search_runs(experiments)}


def test_server_to_server_over_postgresql(tmp_path: Path) -> None:
    """A store the real client wrote into PostgreSQL, served by `mlflow server`, migrated into
    another server over a fresh PostgreSQL database; both read back with MlflowClient."""
    from tests.conftest import write_store
    from tests.unify._mlflow_migration import fresh_databases

    with fresh_databases("postgres", 2) as (source_db, target_db):
        store = write_store(source_db, tmp_path / "source")
        (tmp_path / "target").mkdir()
        with mlflow_server(source_db, tmp_path / "source") as src_url, \
                mlflow_server(target_db, tmp_path / "target") as dst_url:
            report = migrate(SourceSpec("old", "mlflow", {"uri": src_url}, base_dir=tmp_path),
                             target_spec(dst_url, tmp_path), catalog=tmp_path / ".braid")
            assert report.verified, report.summary()
            source_client, target_client = MlflowClient(src_url), MlflowClient(dst_url)
            ours, theirs = _runs_by_source(source_client, own=True), _runs_by_source(target_client, own=False)
            assert set(theirs) == set(ours) and store.facts["train_run"] in ours
            for rid, run in ours.items():
                copy = theirs[rid]
                assert (copy.info.run_name, copy.info.status, copy.info.start_time, copy.info.end_time,
                        copy.info.user_id) == (run.info.run_name, run.info.status, run.info.start_time,
                                               run.info.end_time, run.info.user_id)
                assert copy.data.params == run.data.params
                kept = {k: v for k, v in run.data.tags.items() if k != "mlflow.parentRunId"}
                assert {k: copy.data.tags[k] for k in kept} == kept
                for key in run.data.metrics:  # the full history: steps, timestamps and values (NaN as repr)
                    history = [(m.step, m.timestamp, repr(m.value)) for m in source_client.get_metric_history(rid, key)]
                    assert sorted((m.step, m.timestamp, repr(m.value))
                                  for m in target_client.get_metric_history(copy.info.run_id, key)) == sorted(history)
            # registry versions point at the target's own logged models, with their aliases
            versions = {int(v.version): v for v in target_client.search_model_versions("name = 'churn'")}
            assert sorted(versions) == sorted(store.facts["versions"])
            champion = target_client.get_model_version_by_alias("churn", "champion")
            assert int(champion.version) == store.facts["versions"][1]
            for number in versions:  # each names its logged model in its source (REST gives no model_id)
                ours_v, theirs_v = (c.get_model_version("churn", str(number)) for c in (source_client, target_client))
                ours_m, theirs_m = (re.search(r"m-[0-9a-f]{32}", v.source) for v in (ours_v, theirs_v))
                assert ours_m and theirs_m and ours_m[0] != theirs_m[0]
                assert target_client.get_logged_model(theirs_m[0]).tags[SOURCE_ID_TAG] == ours_m[0]
