"""`braid migrate` into W&B: MLflow and DVC runs written as W&B offline run folders by the real
wandb SDK, read back with braid's W&B reader and compared field by field with what the source
tools recorded (the MLflow client's own answers, braid's DVC tables), independently of migrate's
own verification. Then the round trip MLflow -> W&B -> MLflow, interruptions (the SDK failing
mid-run, a killed process) and re-runs. Each run's files are one artifact of the W&B run: hashed
here from the source's disk, and read back from the manifests and the SDK's staged copies.

Nothing reaches the network: WANDB_MODE=offline, no API key, and proxies pointing at a closed
port, so that any request wandb-core tried would fail and be logged in the run folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from braid.connectors.wandb import read_source as read_wandb
from braid.unify.errors import MigrationTargetError, MigrationUsageError
from braid.unify.migrate import migrate
from braid.unify.migrate._idmap import IdMap
from braid.unify.migrate._sources import FLOAT_MAX
from braid.unify.migrate._wandb_writer import STAGING
from braid.unify.source import SourceSpec, no_progress
from tests.conftest import DvcRepos, MlflowStore, linked_source

pytestmark = pytest.mark.slow

T0 = 1_700_000_000_000
LONG_PARAM = "".join(chr(ord("a") + i % 26) for i in range(10_000))
LONG_TAG = "t" * 80  # longer than a W&B tag can be
BULK_RUNS, BULK_STEPS = 4, 1_500
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# W&B's own history keys, and the exit status each MLflow status is written with
RESERVED = ("_step", "_timestamp", "_runtime")
WANDB_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "failed", "RUNNING": "crashed"}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    # where the SDK stages artifact bytes until `wandb sync`: one folder for the session, not ~/.local
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path_factory.getbasetemp() / "wandb-data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")


@pytest.fixture(scope="module")
def source(sqlite_store: MlflowStore, tmp_path_factory: pytest.TempPathFactory) -> SourceSpec:
    """A copy of the shared fixture store, with runs that stress what W&B history can hold,
    written by the real client (and two values the client refuses put in by SQL, as another
    tool or an older server would have them)."""
    work = tmp_path_factory.mktemp("wandb-source")
    db = work / "source.db"
    shutil.copy(sqlite_store.uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    exp = client.create_experiment("edges/w&b: v1", artifact_location=(work / "art").as_uri())
    run = client.create_run(exp, start_time=T0, run_name="edges", tags={
        "mlflow.user": "ada", "team": "churn", "baseline": "", "mlflow.note.content": "why this run",
        LONG_TAG: "", "mlflow.source.git.branch": "main"})
    rid = run.info.run_id
    points = [Metric("weird", v, T0 + i, i) for i, v in enumerate([math.nan, 0.0, 0.0, 1.5])]  # ±inf below
    points += [Metric("loss", 0.9, T0 + 100, 5), Metric("loss", 0.7, T0 + 50, 2),  # logged out of step order
               Metric("loss", 0.5, T0 + 200, 9), Metric("loss", 0.4, T0 + 300, 9),  # the same step twice
               Metric("loss", 0.8, T0 + 10, -1),  # a negative step
               Metric("_step", 3.0, T0, 0), Metric("eval/acc.top1", 0.25, T0 + 60, 2)]
    client.log_batch(rid, metrics=points)
    client.log_param(rid, "prompt", "short for now")
    client.log_text(rid, "a,b\n1,2\n", "data/train.csv")  # the run's files
    client.log_dict(rid, {"deep": [1, 2]}, "nested/a/b/config.json")
    client.log_param(rid, "braid.note", "a key in braid's own config namespace")
    client.set_terminated(rid, "KILLED", end_time=T0 + 60_000)
    running = client.create_run(exp, start_time=T0 + 500, run_name="still running", tags={"mlflow.user": "bob"})
    client.log_metric(running.info.run_id, "loss", 1.0, timestamp=T0 + 600, step=0)
    for i in range(BULK_RUNS):
        bulk = client.create_run(exp, start_time=T0 + 1000 * (i + 1), run_name=f"bulk-{i}")
        client.log_batch(bulk.info.run_id, metrics=[Metric(k, s / (j + 1), T0 + s, s) for s in range(BULK_STEPS)
                                                    for j, k in enumerate(("loss", "acc"))])
        client.set_terminated(bulk.info.run_id, "FINISHED", end_time=T0 + 10_000 * (i + 1))
    with sqlite3.connect(db) as con:  # the client cuts params at 6,000 characters and clamps infinities
        con.execute("UPDATE params SET value = ? WHERE run_uuid = ? AND key = 'prompt'", (LONG_PARAM, rid))
        con.execute("UPDATE metrics SET value = 9e999 WHERE run_uuid = ? AND key = 'weird' AND step = 1", (rid,))
        con.execute("UPDATE metrics SET value = -9e999 WHERE run_uuid = ? AND key = 'weird' AND step = 2", (rid,))
        con.execute("UPDATE latest_metrics SET value = 9e999 WHERE run_uuid = ? AND key = 'weird'", (rid,))
    return SourceSpec("old", "mlflow", {"uri": uri}, base_dir=work)


@pytest.fixture(scope="module")
def registry_source(tmp_path_factory: pytest.TempPathFactory) -> SourceSpec:
    """A small MLflow store whose registry W&B holds in its own way, written by the real client:
    MLflow 2 versions (a `runs:/<run>/model` source, and an artifact URI under the same run's root
    naming the same folder, and a second run's folder), an MLflow 3 logged model registered twice,
    and a version whose source is no model braid could log."""
    work = tmp_path_factory.mktemp("wandb-registry-source")
    uri = f"sqlite:///{work / 'registry.db'}"
    client = MlflowClient(uri, uri)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)  # the registry resolves a `models:/` source with the default client
        exp = client.create_experiment("registry", artifact_location=(work / "art").as_uri())
        runs = {}
        for name in ("legacy", "retrained"):
            run = client.create_run(exp, start_time=T0, run_name=name, tags={"mlflow.user": "ada"})
            client.log_text(run.info.run_id, f"flavors: {{}}\nrun: {name}\n", "model/MLmodel")
            client.log_text(run.info.run_id, f"weights of {name}", "model/data/weights.bin")
            client.log_text(run.info.run_id, "x\n1\n", "data/x.csv")
            client.set_terminated(run.info.run_id, "FINISHED", end_time=T0 + 1000)
            runs[name] = run.info
        legacy, retrained = runs["legacy"], runs["retrained"]
        client.create_registered_model("legacy")
        for source, run_id in ((f"runs:/{legacy.run_id}/model", legacy.run_id),
                               (f"{legacy.artifact_uri}/model", legacy.run_id),  # the same folder, as a URI
                               (f"runs:/{retrained.run_id}/model", retrained.run_id),
                               ("s3://bucket/elsewhere/model", None)):
            client.create_model_version("legacy", source=source, run_id=run_id)
        client.set_registered_model_alias("legacy", "prod", "2")
        client.set_registered_model_alias("legacy", "champion", "3")
        model = client.create_logged_model(exp, name="scorer", source_run_id=legacy.run_id)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "MLmodel").write_text("flavors: {}\nscorer: true\n")
            client.log_model_artifacts(model.model_id, tmp)
        client.finalize_logged_model(model.model_id, "READY")
        client.create_registered_model("scorer")
        for _ in range(2):  # one logged model, two versions
            client.create_model_version("scorer", source=f"models:/{model.model_id}", run_id=legacy.run_id,
                                        model_id=model.model_id)
        client.set_registered_model_alias("scorer", "staging", "1")
        client.set_registered_model_alias("scorer", "live", "2")
    return SourceSpec("old", "mlflow", {"uri": uri}, base_dir=work)


def model_folders(source: SourceSpec) -> dict[str, dict]:
    """Each MLflow 2 version's model folder as the MLflow client records it (a `runs:/<run>/<path>`
    source, or a URI under its run's artifact root): `runs:/<run>/<path>` -> the run, the
    versions naming it, and its files hashed here from the source's disk."""
    client = MlflowClient(source.options["uri"])
    out: dict[str, dict] = {}
    for v in sorted(client.search_model_versions(), key=lambda v: (v.name, int(v.version))):
        if not v.run_id:
            continue
        root = client.get_run(v.run_id).info.artifact_uri
        path = v.source.removeprefix(f"runs:/{v.run_id}/") if v.source.startswith("runs:/") \
            else v.source.removeprefix(f"{root}/") if v.source.startswith(f"{root}/") else None
        if path is None:
            continue
        folder = Path(root.removeprefix("file://")) / path
        entry = out.setdefault(f"runs:/{v.run_id}/{path}", {"run": v.run_id, "versions": [], "files": {
            p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}})
        entry["versions"].append({"name": v.name, "version": str(v.version)})  # the registry names it in text
    return out


def wandb_target(folder: Path, name: str = "wb") -> SourceSpec:
    return SourceSpec(name, "wandb", {"path": "wandb"}, base_dir=folder)


@pytest.fixture(scope="module")
def migrated(source: SourceSpec, tmp_path_factory: pytest.TempPathFactory) -> tuple[SourceSpec, Path, object]:
    work = tmp_path_factory.mktemp("wandb-target")
    target = wandb_target(work)
    return target, work, migrate(source, target, catalog=work / ".braid")


# -- what the tools recorded, read without braid -----------------------------------------------

def recorded(source: SourceSpec) -> dict[str, dict]:
    """Every live run of the source as the MLflow client answers: info, params, tags, history."""
    client = MlflowClient(source.options["uri"])
    out = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            history = [(m.key, m.step, m.timestamp, m.value) for key in run.data.metrics
                       for m in client.get_metric_history(run.info.run_id, key)]
            out[run.info.run_id] = {"info": run.info, "experiment": exp.name, "params": dict(run.data.params),
                                    "tags": dict(run.data.tags), "history": history}
    return out


def as_wandb_history(history: list[tuple]) -> list[tuple]:
    """What W&B history can hold of an MLflow history: steps from 0, one value per key and step
    (the last logged), one timestamp per step (its latest), W&B's own keys left out."""
    kept: dict[tuple[str, int], tuple[int, float]] = {}
    for key, step, ts, value in sorted(history, key=lambda p: (p[0], p[1], p[2])):
        if step >= 0 and key not in RESERVED:
            kept[(key, step)] = (ts, value)
    row_time: dict[int, int] = defaultdict(int)
    for (_, step), (ts, _) in kept.items():
        row_time[step] = max(row_time[step], ts)
    return sorted((key, step, row_time[step], value) for (key, step), (_, value) in kept.items())


def read_target(target: SourceSpec) -> tuple[dict[str, pl.DataFrame], dict[str, str]]:
    """The target folder read by braid's W&B reader, and source run id -> W&B run node id."""
    tables = read_wandb(target, previous=None, progress=no_progress).tables
    ids = tables["params"].filter(pl.col("key") == "braid.source_id").select("value", "run_id").rows()
    return tables, dict(ids)


def of_run(tables: dict[str, pl.DataFrame], table: str, run: str) -> pl.DataFrame:
    column = "node_id" if table == "tags" else "run_id"
    return tables[table].filter(pl.col(column) == run)


def run_attrs(tables: dict[str, pl.DataFrame]) -> dict[str, dict]:
    runs = tables["nodes"].filter(pl.col("kind") == "run")
    return {n["id"]: json.loads(n["attrs"]) for n in runs.iter_rows(named=True)}


def source_run_files(source: SourceSpec) -> dict[str, dict[str, str]]:
    """Each live run's files on the source's disk, hashed here: run id -> path -> md5."""
    out = {}
    for run_id, fact in recorded(source).items():
        root = Path(fact["info"].artifact_uri.removeprefix("file://"))
        out[run_id] = {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
                       for p in root.rglob("*") if p.is_file()} if root.is_dir() else {}
    return out


def target_run_files(tables: dict[str, pl.DataFrame], run: str) -> dict[str, tuple[str, str]]:
    """path -> (md5, the SDK's staged copy) of the files in the run-files artifact a W&B run
    logged, as braid's reader reads the manifests (`output` edge to the artifact, `part_of` from
    each file); its logged models are artifacts of their own."""
    edges = tables["edges"]
    logged = edges.filter((pl.col("kind") == "output") & (pl.col("src") == run)
                          & pl.col("dst").str.contains(":artifact/"))["dst"].to_list()
    files = edges.filter((pl.col("kind") == "part_of") & pl.col("dst").is_in(logged))["src"].to_list()
    out = {}
    for node in tables["nodes"].filter(pl.col("id").is_in(files)).iter_rows(named=True):
        attrs = json.loads(node["attrs"])
        assert node["id"] == f"{logged[0]}/{attrs['path']}"
        out[attrs["path"]] = (node["digest"].removeprefix("md5:"), attrs["staged"])
    return out


def md5_file(path: str | Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def comparable(values: list[tuple]) -> list[tuple]:
    return [(*v[:-1], "nan" if isinstance(v[-1], float) and math.isnan(v[-1]) else v[-1]) for v in values]


def ms(when: datetime) -> int:
    return (when - EPOCH) // timedelta(milliseconds=1)


def iso_ms(text: str) -> int:
    return ms(datetime.fromisoformat(text))


def assert_run_carried(run: dict, params: dict[str, str], tables: dict[str, pl.DataFrame], attrs: dict,
                       fact: dict) -> None:
    """One W&B run read back against what MLflow recorded of its source run (`recorded`): name,
    state, user, commit, original times, params in full, the history W&B can hold, tags (labels
    when they have no value, config braid.tags.<key> otherwise) and notes."""
    info, tags, wid = fact["info"], fact["tags"], run["id"]
    assert run["name"] == info.run_name
    assert run["status"] == WANDB_STATUS[info.status]  # from the exit code
    assert run["user"] == tags.get("mlflow.user", info.user_id)
    assert run["git_commit"] == tags.get("mlflow.source.git.commit")
    assert iso_ms(params["braid.started_at"]) == info.start_time
    assert (iso_ms(params["braid.ended_at"]) if info.end_time else None) == (info.end_time or None)
    # params in full, but those in braid's own namespace
    own = {k: v for k, v in params.items() if not k.startswith("braid.")}
    assert own == {k: v for k, v in fact["params"].items() if not k.startswith("braid.")}
    # the history W&B can hold, at the original steps, timestamps and values
    got = [(k, s, ms(t), v) for k, s, t, v in of_run(tables, "metrics", wid)
           .select("key", "step", "timestamp", "value").iter_rows()]
    assert comparable(sorted(got)) == comparable(as_wandb_history(fact["history"])), info.run_name
    labels = set(of_run(tables, "tags", wid)["key"].to_list())
    for key, value in tags.items():
        if key.startswith("mlflow.") and key != "mlflow.source.git.branch" or key == "mlflow.parentRunId":
            continue
        if key == "mlflow.source.git.branch":
            assert params["braid.git_branch"] == value
        elif value == "" and len(key) <= 64:
            assert key in labels
        else:
            assert params[f"braid.tags.{key}"] == value
    if "mlflow.note.content" in tags:
        assert attrs["notes"] == tags["mlflow.note.content"]
    if info.status not in ("FINISHED", "FAILED"):
        assert params["braid.source_status"] == info.status


# -- MLflow -> W&B -------------------------------------------------------------------------------

def test_mlflow_runs_read_back_field_by_field(source: SourceSpec, migrated: tuple) -> None:
    target, work, report = migrated
    assert report.verified, report.summary()
    facts = recorded(source)
    tables, ids = read_target(target)
    assert set(ids) == set(facts)  # every live run, once
    runs = {r["id"]: r for r in tables["runs"].iter_rows(named=True)}
    nodes = run_attrs(tables)
    for run_id, fact in facts.items():
        wid = ids[run_id]
        run = runs[wid]
        params = dict(of_run(tables, "params", wid).select("key", "value").iter_rows())
        assert run["project"] == fact["experiment"].replace("/", "-").replace(":", "-")
        assert not nodes[wid].get("resumed")  # one folder per run
        assert_run_carried(run, params, tables, nodes[wid], fact)
    # a nested run names its parent, and both are one W&B group
    child = next(r for r, f in facts.items() if "mlflow.parentRunId" in f["tags"])
    parent = facts[child]["tags"]["mlflow.parentRunId"]
    child_params = dict(of_run(tables, "params", ids[child]).select("key", "value").iter_rows())
    assert child_params["braid.parent_id"] == ids[parent].rsplit("/", 1)[-1]
    assert nodes[ids[child]]["group"] == nodes[ids[parent]]["group"] == ids[parent].rsplit("/", 1)[-1]
    # the dataset the run read: offline runs cannot record inputs, the config keeps name and digest
    with sqlite3.connect(f"file:{source.options['uri'].removeprefix('sqlite:///')}?mode=ro", uri=True) as con:
        name, digest, run_uuid = con.execute(
            "SELECT d.name, d.digest, i.destination_id FROM datasets d JOIN inputs i "
            "ON i.source_id = d.dataset_uuid WHERE i.destination_type = 'RUN'").fetchone()
    params = dict(of_run(tables, "params", ids[run_uuid]).select("key", "value").iter_rows())
    datasets = json.loads(params["braid.datasets"])
    assert [(d["name"], d["digest"]) for d in datasets] == [(name, digest)]


def to_sync(work: Path) -> list[str]:
    """The run logs `wandb sync` would upload from `<work>/wandb` (its dry run, offline)."""
    wandb_cli = Path(sys.executable).parent / "wandb"
    out = subprocess.run([str(wandb_cli), "sync", "--dry-run"], cwd=work, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "WANDB_SILENT": "false"})  # silent, it lists nothing
    assert out.returncode == 0, out.stderr[-2000:]
    lines = (out.stdout + out.stderr).splitlines()
    return sorted(line.split()[-1] for line in lines if line.strip().endswith(".wandb"))


def test_folders_are_what_wandb_sync_uploads(source: SourceSpec, migrated: tuple) -> None:
    target, work, _ = migrated
    folder = work / "wandb"
    runs = sorted(p for p in folder.iterdir() if p.name.startswith("offline-run-"))
    assert len(runs) == len(set(p.name.rsplit("-", 1)[-1] for p in runs)) == len(recorded(source))
    # the wandb CLI finds exactly these runs to upload
    assert to_sync(work) == sorted(f"wandb/{p.name}/run-{p.name.rsplit('-', 1)[-1]}.wandb" for p in runs)
    for run in runs:
        wid = run.name.rsplit("-", 1)[-1]
        assert (run / f"run-{wid}.wandb").read_bytes()[:4] == b":W&B"
        # nothing tried the network: wandb-core would log the request it could not send
        logs = " ".join(p.read_text(errors="replace") for p in (run / "logs").glob("debug*.log") if p.is_file())
        assert "api.wandb.ai" not in logs
    assert not (folder / STAGING).exists()


def test_nan_and_infinity_keep_their_steps(source: SourceSpec, migrated: tuple) -> None:
    target, _, _ = migrated
    tables, ids = read_target(target)
    edges = next(r for r, f in recorded(source).items() if f["info"].run_name == "edges")
    weird = of_run(tables, "metrics", ids[edges]).filter(pl.col("key") == "weird").sort("step")
    values = weird["value"].to_list()
    assert weird["step"].to_list() == [0, 1, 2, 3]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf and values[3] == 1.5


def test_long_param_is_whole(source: SourceSpec, migrated: tuple) -> None:
    target, _, report = migrated
    tables, _ = read_target(target)
    prompt = tables["params"].filter(pl.col("key") == "prompt")["value"].to_list()
    assert prompt == [LONG_PARAM]
    assert report.kinds["param"].not_carried  # the param named braid.note, and why
    assert report.verification["param"]["missing"] == 0


def test_report_says_what_history_could_not_hold(migrated: tuple) -> None:
    _, _, report = migrated
    points = report.as_dict()["kinds"]["metric_point"]
    why = " | ".join(points["not_carried"])
    # the negative step, the second value at step 9, the `_step` metric
    assert sum(points["not_carried"].values()) == 3
    assert "negative step" in why and "same step" in why and "_step" in why
    # step 2 holds weird (T0+2), loss (T0+50) and eval/acc.top1 (T0+60): one row, one time
    assert sum(points["transformed"].values()) == 2
    kinds = report.as_dict()["kinds"]
    # an offline run cannot link into a registry: versions, aliases and registered models say so
    for kind in ("model_version", "alias", "registered_model"):
        assert kinds[kind]["carried"] == 0 and not kinds[kind]["transformed"], kind
        whys = [why for why in kinds[kind]["not_carried"] if not why.startswith(("a model version's",
                                                                                  "a registered model's"))]
        assert [why.startswith("an offline W&B run cannot link") for why in whys] == [True], kind
    assert report.verification["metric_point"]["source"] == points["carried"] + 2


def test_run_files_arrive_in_the_runs_artifact(source: SourceSpec, migrated: tuple) -> None:
    target, _, report = migrated
    tables, ids = read_target(target)
    on_disk = source_run_files(source)
    total = sum(map(len, on_disk.values()))
    assert total >= 3  # the fixture store's files and the two of the run "edges"
    for run_id, files in on_disk.items():
        got = target_run_files(tables, ids[run_id])
        # every file at its path with the source's bytes, in the run's one artifact
        assert {path: md5 for path, (md5, _) in got.items()} == files, run_id
        # and the copy the SDK staged, which `wandb sync` uploads, holds those bytes
        assert {path: md5_file(staged) for path, (_, staged) in got.items()} == files, run_id
        if files:
            wid = ids[run_id].rsplit("/", 1)[-1]
            artifact = tables["nodes"].filter(pl.col("id") == next(iter(
                tables["edges"].filter((pl.col("kind") == "output") & (pl.col("src") == ids[run_id]))["dst"])))
            assert artifact["name"].to_list() == [f"run-{wid}"] and artifact["kind"].to_list() == ["artifact"]
    # with the files of the logged models (their own test)
    model_files = sum(1 for m in logged_models(source)
                      for p in Path(m.artifact_location.removeprefix("file://")).rglob("*") if p.is_file())
    assert report.kinds["artifact"].carried == report.created["artifact files"] == total + model_files
    assert report.verification["artifact"]["source"] == total + model_files
    assert report.verification["artifact"]["missing"] == report.verification["artifact"]["unexpected"] == 0


def logged_models(source: SourceSpec) -> list:
    """The source's live MLflow 3 LoggedModels, as the MLflow client answers."""
    client = MlflowClient(source.options["uri"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_logged_models(experiments))


def test_logged_models_are_model_artifacts_of_their_runs(source: SourceSpec, migrated: tuple) -> None:
    target, _, report = migrated
    tables, ids = read_target(target)
    models = logged_models(source)
    assert len(models) == 2  # the fixture store's two pyfunc models
    # the artifact versions (their files are `model` nodes too)
    artifacts = tables["nodes"].filter(pl.col("attrs").str.json_path_match("$.type") == "model")
    by_source = {json.loads(a)["metadata"]["braid"]["source_id"]: (i, n, json.loads(a))
                 for i, n, a in artifacts.select("id", "name", "attrs").iter_rows()}
    assert set(by_source) == {m.model_id for m in models}
    edges = tables["edges"]
    for model in models:
        node, name, attrs = by_source[model.model_id]
        assert name == model.name and attrs["type"] == "model"
        # logged by the W&B run of the model's source run
        assert edges.filter((pl.col("kind") == "output") & (pl.col("dst") == node))["src"].to_list() == \
            [ids[model.source_run_id]]
        # metadata: what MLflow recorded of the model
        meta = attrs["metadata"]
        assert meta.get("params", {}) == (model.params or {}) and meta["tags"] == model.tags and model.tags
        assert meta.get("model_type") == (model.model_type or None)  # a field MLflow left empty is absent
        assert meta["status"] == str(model.status) == "READY"
        # its files byte for byte: the source's disk, the manifest's md5 and the SDK's staged copy
        root = Path(model.artifact_location.removeprefix("file://"))
        on_disk = {p.relative_to(root).as_posix(): md5_file(p) for p in root.rglob("*") if p.is_file()}
        assert on_disk and "MLmodel" in on_disk
        files = edges.filter((pl.col("kind") == "part_of") & (pl.col("dst") == node))["src"].to_list()
        got = {}
        for f in tables["nodes"].filter(pl.col("id").is_in(files)).iter_rows(named=True):
            fattrs = json.loads(f["attrs"])
            assert md5_file(fattrs["staged"]) == f["digest"].removeprefix("md5:")
            got[fattrs["path"]] = f["digest"].removeprefix("md5:")
        assert got == on_disk, model.model_id
    kinds = report.as_dict()["kinds"]
    assert sum(kinds["logged_model"]["transformed"].values()) == len(models) and not kinds["logged_model"]["not_carried"]
    assert report.created["model artifacts"] == len(models)
    assert report.verification["logged_model"] == {"source": 2, "target": 2, "missing": 0, "unexpected": 0,
                                                   "examples": []}


def model_links(source: SourceSpec) -> tuple[list[tuple], list[tuple], list]:
    """The source's model inputs (run, model), model outputs (run, model, step) and the metrics
    logged against its logged models, as the MLflow client answers."""
    client = MlflowClient(source.options["uri"])
    runs = [client.get_run(run_id) for run_id in recorded(source)]
    inputs = [(r.info.run_id, i.model_id) for r in runs for i in r.inputs.model_inputs]
    outputs = [(r.info.run_id, o.model_id, o.step)
               for r in runs for o in (r.outputs.model_outputs if r.outputs else [])]
    metrics = [m for model in logged_models(source) for m in client.get_logged_model(model.model_id).metrics]
    return inputs, outputs, metrics


def test_model_inputs_outputs_and_metrics_are_reported(source: SourceSpec, migrated: tuple) -> None:
    """A run's use and production of logged models, and the metrics logged against them, each
    counted once, as many as the MLflow client says the source holds: an output is the model
    artifact logged by its run (its step is not carried), a use cannot be recorded by an offline
    run, and a history row names no model (its value is the run's history point)."""
    target, _, report = migrated
    inputs, outputs, metrics = model_links(source)
    assert len(inputs) == 1 and len(outputs) == 2 and metrics  # the fixture store's
    kinds = report.as_dict()["kinds"]

    def counted(kind: str) -> tuple[int, dict[str, int], dict[str, int]]:
        return kinds[kind]["carried"], kinds[kind]["transformed"], kinds[kind]["not_carried"]

    carried, transformed, lost = counted("model_output")
    assert carried == 0 and not lost and list(transformed.values()) == [len(outputs)]
    assert "the step MLflow records with the output is not carried" in next(iter(transformed))
    carried, transformed, lost = counted("model_input")
    assert carried == 0 and not transformed and list(lost.values()) == [len(inputs)]
    assert next(iter(lost)).startswith("an offline W&B run cannot use an artifact")
    carried, transformed, lost = counted("model_metric")
    assert carried == 0 and not transformed and list(lost.values()) == [len(metrics)]
    assert next(iter(lost)).startswith("a W&B history row names no model")
    # read back: each output's model artifact is logged by the W&B run of the output's run
    tables, ids = read_target(target)
    artifacts = tables["nodes"].filter(pl.col("attrs").str.json_path_match("$.type") == "model")
    node_of = {json.loads(a)["metadata"]["braid"]["source_id"]: i
               for i, a in artifacts.select("id", "attrs").iter_rows()}
    logged = tables["edges"].filter(pl.col("kind") == "output").select("src", "dst")
    for run_id, model_id, _ in outputs:
        assert logged.filter(pl.col("dst") == node_of[model_id])["src"].to_list() == [ids[run_id]]
    assert report.verification["model_output"] == {"source": len(outputs), "target": len(outputs), "missing": 0,
                                                   "unexpected": 0, "examples": []}
    # and no folder records a used artifact (an offline run cannot)
    assert tables["edges"].filter(pl.col("kind") == "input").is_empty()
    # each model metric's value is its run's history value at its step (MLflow's logged_model_metrics
    # table has no is_nan column: the sqlite store holds the run's NaN point there as 0.0)
    for m in metrics:
        (value,) = of_run(tables, "metrics", ids[m.run_id]).filter(
            (pl.col("key") == m.key) & (pl.col("step") == m.step))["value"].to_list()
        assert value == m.value or math.isnan(value) and m.value == 0.0, m


def test_model_links_left_behind_say_why(source: SourceSpec, tmp_path: Path) -> None:
    """Only the run "finetune" migrated (a dry run): its use of the model "train" logged, and the
    metrics logged against that model, stay behind with the reason; its own output travels."""
    inputs, outputs, metrics = model_links(source)
    finetune = next(r for r, f in recorded(source).items() if f["info"].run_name == "finetune")
    report = migrate(source, wandb_target(tmp_path), catalog=tmp_path / ".braid", select=[finetune], dry_run=True)
    kinds = report.as_dict()["kinds"]
    own = {m for r, m, _ in outputs if r == finetune}
    used = [m for r, m in inputs if r == finetune]
    assert used and not own & set(used)  # it used a model another run logged
    assert kinds["model_input"]["not_carried"] == {
        "the model is not part of this migration: the run that logged it is not": len(used)}
    assert sum(kinds["model_output"]["transformed"].values()) == len(own) and not kinds["model_output"]["not_carried"]
    travel = [m for m in metrics if m.model_id in own and m.run_id == finetune]
    assert travel and len(travel) < len(metrics)
    assert kinds["model_metric"]["not_carried"] == {
        next(why for why in kinds["model_metric"]["not_carried"] if why.startswith("a W&B history row")): len(travel),
        "the model it was logged against is not part of this migration": len(metrics) - len(travel)}
    assert list(tmp_path.iterdir()) == []


def test_registry_tags_and_descriptions_are_reported_not_carried(source: SourceSpec, migrated: tuple) -> None:
    """A W&B registry link holds aliases only: every tag and description the MLflow registry
    holds is counted as not carried (lossless or loud), read from the MLflow client."""
    client = MlflowClient(source.options["uri"])
    versions = client.search_model_versions()
    registered = client.search_registered_models()
    version_tags = sum(len(v.tags) for v in versions)
    assert version_tags  # the fixture's `validated=true`
    kinds = migrated[2].as_dict()["kinds"]

    def lost(kind: str, what: str) -> int:
        return sum(n for why, n in kinds[kind]["not_carried"].items() if why.startswith(f"a {what}"))

    assert lost("model_version", "model version's tags") == version_tags
    assert lost("model_version", "model version's description") == sum(bool(v.description) for v in versions)
    assert lost("registered_model", "registered model's tags") == sum(len(m.tags) for m in registered)
    assert lost("registered_model", "registered model's description") == sum(bool(m.description) for m in registered)


def test_mlflow2_versions_are_model_artifacts_of_their_runs(registry_source: SourceSpec, tmp_path: Path) -> None:
    """An MLflow 2 version names a folder of its run's files: that folder is a `model` artifact
    of the run in the W&B folder, with the source's bytes and the versions naming it; the link
    needs a server (an offline run cannot link), and a source that is no model is reported."""
    target = wandb_target(tmp_path)
    report = migrate(registry_source, target, catalog=tmp_path / ".braid")
    assert report.verified, report.summary()
    tables, ids = read_target(target)
    folders = model_folders(registry_source)
    assert len(folders) == 2 and [len(f["versions"]) for f in folders.values()] == [2, 1]
    edges, nodes = tables["edges"], tables["nodes"]
    for key, folder in folders.items():
        logged = edges.filter((pl.col("kind") == "output") & (pl.col("src") == ids[folder["run"]]))["dst"]
        (node,) = nodes.filter(pl.col("id").is_in(logged.implode()) & pl.col("attrs").str.contains(key, literal=True)
                               ).iter_rows(named=True)
        attrs = json.loads(node["attrs"])
        assert (node["name"], attrs["type"]) == ("legacy", "model")
        assert attrs["metadata"]["source"] == key and attrs["metadata"]["braid"]["source_id"] == key
        assert attrs["metadata"]["registered_versions"] == folder["versions"]
        # the folder's files at their paths in it, the source's bytes in the manifest and the SDK's staged copy
        files = edges.filter((pl.col("kind") == "part_of") & (pl.col("dst") == node["id"]))["src"]
        got = {}
        for f in nodes.filter(pl.col("id").is_in(files.implode())).iter_rows(named=True):
            fattrs = json.loads(f["attrs"])
            assert md5_file(fattrs["staged"]) == f["digest"].removeprefix("md5:")
            got[fattrs["path"]] = f["digest"].removeprefix("md5:")
        assert got == folder["files"] and "MLmodel" in got, key
    assert report.created["model artifacts"] == 3  # the two folders and the logged model
    assert report.verification["run_model"]["source"] == 2 and report.verification["run_model"]["missing"] == 0
    versions = MlflowClient(registry_source.options["uri"]).search_model_versions()
    lost = report.as_dict()["kinds"]["model_version"]["not_carried"]
    offline = sum(n for why, n in lost.items() if why.startswith("an offline W&B run cannot link"))
    no_model = sum(n for why, n in lost.items() if why.startswith("the version's source is neither"))
    assert (offline, no_model) == (len(versions) - 1, 1)


def test_symlink_out_of_the_source_run_is_not_followed(tmp_path: Path) -> None:
    from braid.unify.migrate._artifacts import LINK_OUT

    source, run, secret = linked_source(tmp_path)
    target = wandb_target(tmp_path)
    report = migrate(source, target,
                     catalog=tmp_path / ".braid")
    assert report.kinds["artifact"].not_carried == {LINK_OUT: 1}
    assert report.kinds["artifact"].carried == 1
    assert report.verified, report.summary()
    tables, ids = read_target(target)
    got = target_run_files(tables, ids[run.info.run_id])
    assert {path: md5 for path, (md5, _) in got.items()} == {"ok.txt": hashlib.md5(b"fine").hexdigest()}
    assert IdMap.load(tmp_path / ".braid", "old", "wb").get("artifacts", run.info.run_id)["refused"] == \
        [["leak.txt", LINK_OUT]]
    written = [*(tmp_path / "wandb").rglob("*"), *(Path(staged) for _, staged in got.values())]
    assert secret.read_text() not in "".join(p.read_text(errors="replace") for p in written if p.is_file())


def test_second_run_creates_nothing(source: SourceSpec, migrated: tuple) -> None:
    target, work, first = migrated
    before = {p.name: p.stat().st_mtime_ns for p in (work / "wandb").glob("offline-run-*/run-*.wandb")}
    again = migrate(source, target, catalog=work / ".braid")
    assert not again.created, again.created
    assert again.reused["runs"] == first.created["runs"] == len(before)
    assert again.verified
    # the files are counted from the id map's record of the first copy
    assert again.kinds["artifact"].as_dict() == first.kinds["artifact"].as_dict()
    after = {p.name: p.stat().st_mtime_ns for p in (work / "wandb").glob("offline-run-*/run-*.wandb")}
    assert after == before


def test_dry_run_writes_nothing(source: SourceSpec, tmp_path: Path) -> None:
    report = migrate(source, wandb_target(tmp_path), catalog=tmp_path / ".braid", dry_run=True)
    assert report.dry_run and report.verification is None
    assert report.created["runs"] == len(recorded(source))
    assert list(tmp_path.iterdir()) == []
    assert "nothing written" in report.summary()


def test_targets_braid_cannot_write_are_refused_before_any_read(source: SourceSpec, tmp_path: Path) -> None:
    """A server target without WANDB_API_KEY (unset here), a target with neither `path` nor
    `entity`/`project`, and a `path` that is a file: each one readable error, nothing written."""
    cloud = SourceSpec("cloud", "wandb", {"entity": "team", "project": "churn"}, base_dir=tmp_path)
    with pytest.raises(MigrationUsageError) as caught:
        migrate(source, cloud, catalog=tmp_path / ".braid")
    assert "WANDB_API_KEY" in str(caught.value) and "cloud" in str(caught.value)
    assert "path" in (caught.value.hint or "")
    nowhere = SourceSpec("nowhere", "wandb", {"entity": "team"}, base_dir=tmp_path)
    with pytest.raises(MigrationUsageError) as caught:
        migrate(source, nowhere, catalog=tmp_path / ".braid")
    assert "no `path` and no `entity` and `project`" in str(caught.value)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "wandb").write_text("not a folder")
    with pytest.raises(MigrationUsageError, match="not a folder"):
        migrate(source, wandb_target(tmp_path), catalog=tmp_path / ".braid")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wandb"]


def test_the_sdk_failing_mid_run_then_continue(source: SourceSpec, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb
    from wandb.sdk.wandb_run import Run

    original, seen = Run.log, []

    def failing(self: Run, *args: object, **kwargs: object) -> None:
        seen.append(self.id)
        if len(set(seen)) == 3 and seen.count(self.id) == 2:  # mid-way through the third run with history
            raise wandb.errors.CommError("injected: the disk went away")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Run, "log", failing)
    target, catalog = wandb_target(tmp_path), tmp_path / ".braid"
    with pytest.raises(MigrationTargetError) as caught:
        migrate(source, target, catalog=catalog)
    assert "run the same migration again" in (caught.value.hint or "")
    done = [r for r in IdMap.load(catalog, "old", "wb").data["runs"].values() if r["done"]]
    folders = list((tmp_path / "wandb").glob("offline-run-*"))
    assert 2 <= len(done) == len(folders) < len(recorded(source))
    assert not list((tmp_path / "wandb" / STAGING).glob("*/wandb"))  # the broken run left nothing

    monkeypatch.setattr(Run, "log", original)
    report = migrate(source, target, catalog=catalog)
    assert report.verified, report.summary()
    assert report.created["runs"] == len(recorded(source)) - len(done)
    assert report.reused["runs"] == len(done)
    _, ids = read_target(target)
    assert len(ids) == len(recorded(source))


def _config(work: Path, source: SourceSpec) -> None:
    (work / "braid.toml").write_text(
        f'[[sources]]\nname = "old"\ntool = "mlflow"\nuri = "{source.options["uri"]}"\n\n'
        '[[sources]]\nname = "wb"\ntool = "wandb"\npath = "wandb"\n')


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "braid.unify.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_cli_killed_mid_run_then_resume(source: SourceSpec, migrated: tuple, tmp_path: Path) -> None:
    _config(tmp_path, source)
    dry = _cli(["migrate", "--from", "old", "--to", "wb", "--dry-run", "--format", "json"], tmp_path)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert json.loads(dry.stdout)["dry_run"] is True and not (tmp_path / "wandb").exists()
    proc = subprocess.Popen([sys.executable, "-m", "braid.unify.cli", "migrate", "--from", "old", "--to", "wb"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    staging = tmp_path / "wandb" / STAGING
    deadline, writing = time.monotonic() + 180, None
    try:
        # kill it while a run is half-written (the same run in staging for 0.2 s: a bulk run,
        # seconds long), after at least one run was finished
        while proc.poll() is None and time.monotonic() < deadline:
            now = sorted(staging.glob("*/wandb/offline-run-*"))
            if now and now == writing and list((tmp_path / "wandb").glob("offline-run-*")):
                break
            writing = now
            time.sleep(0.2)
        assert proc.poll() is None, "the migration finished before it could be killed"
    finally:
        with contextlib.suppress(ProcessLookupError):  # a process that ended early fails the assert above
            os.killpg(proc.pid, signal.SIGKILL)  # the process group: braid and its wandb-core
        proc.wait(timeout=30)
    half = list(staging.glob("*/wandb/offline-run-*"))
    assert half  # what the kill left
    finished = len(list((tmp_path / "wandb").glob("offline-run-*")))
    assert len(to_sync(tmp_path)) == finished  # `wandb sync` never sees the half-written run
    done = _cli(["migrate", "--from", "old", "--to", "wb", "--format", "json"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["verified"] is True
    total = len(recorded(source))
    # the finished folders are kept (a folder renamed in just before the kill, but not yet in
    # the id map, is adopted); the half-written run is written again
    assert report["created"]["runs"] == total - finished
    assert not staging.exists()
    resumed, ids = read_target(wandb_target(tmp_path))
    assert len(ids) == total
    # the same rows as the uninterrupted migration, run by run
    first, first_ids = read_target(migrated[0])
    for run_id, wid in ids.items():
        for table in ("params", "metrics"):
            drop = ["run_id", "source"]
            a = of_run(resumed, table, wid).drop(drop).sort(pl.all())
            b = of_run(first, table, first_ids[run_id]).drop(drop).sort(pl.all())
            assert a.with_columns(pl.all().cast(pl.String)).equals(b.with_columns(pl.all().cast(pl.String))), table
        files = target_run_files(resumed, wid)
        assert {p: m for p, (m, _) in files.items()} == \
            {p: m for p, (m, _) in target_run_files(first, first_ids[run_id]).items()}
        assert all(md5_file(staged) == md5 for md5, staged in files.values())
    assert report["kinds"]["artifact"]["carried"] == migrated[2].kinds["artifact"].carried


# -- MLflow -> W&B -> MLflow ---------------------------------------------------------------------

def test_round_trip_mlflow_wandb_mlflow(source: SourceSpec, migrated: tuple, tmp_path: Path) -> None:
    target, work, _ = migrated
    back = SourceSpec("back", "mlflow", {"uri": f"sqlite:///{tmp_path / 'back.db'}"}, base_dir=tmp_path)
    report = migrate(target, back, catalog=tmp_path / ".braid", artifact_root=tmp_path / "artifacts")
    assert report.verified, report.summary()
    before, after = recorded(source), recorded(back)
    # the second migration names the W&B run; the W&B run names the first source's run
    client = MlflowClient(back.options["uri"])
    origin = {}
    for run_id, fact in after.items():
        params = client.get_run(run_id).data.params
        origin[params["braid.source_id"]] = fact
    assert set(origin) == set(before)
    round_status = {"finished": "FINISHED", "failed": "FAILED", "crashed": "FAILED"}
    for run_id, fact in before.items():
        got, info = origin[run_id], fact["info"]
        assert got["info"].run_name == info.run_name
        assert got["info"].status == round_status[WANDB_STATUS[info.status]]
        assert got["tags"].get("mlflow.user") == fact["tags"].get("mlflow.user", info.user_id)
        assert got["tags"].get("mlflow.source.git.commit") == fact["tags"].get("mlflow.source.git.commit")
        assert got["experiment"] == fact["experiment"].replace("/", "-").replace(":", "-")
        # params survive whole (MLflow keeps the full text of the long one as an artifact)
        params = {k: v for k, v in got["params"].items() if not k.startswith("braid.")}
        expected = {k: v[:6000] for k, v in fact["params"].items() if not k.startswith("braid.")}
        assert params == expected
        # tags without a value survive as tags; the others are W&B config, so params here
        for key, value in fact["tags"].items():
            if value == "" and len(key) <= 64:
                assert got["tags"][key] == ""
            elif not key.startswith("mlflow."):
                assert got["params"][f"braid.tags.{key}"] == value[:6000]
        # the history W&B held, with steps, timestamps and values (±inf as MLflow's SQL store keeps it)
        clamp = [(k, s, t, FLOAT_MAX if v == math.inf else -FLOAT_MAX if v == -math.inf else v)
                 for k, s, t, v in as_wandb_history(fact["history"])]
        assert comparable(sorted(got["history"])) == comparable(clamp), info.run_name


# -- DVC -> W&B ----------------------------------------------------------------------------------

@pytest.mark.xdist_group("dvc")
def test_dvc_to_wandb(dvc_repos: DvcRepos, tmp_path: Path) -> None:
    from braid.connectors.dvc import read_source as read_dvc

    spec = SourceSpec("pipe", "dvc", {"repo": str(dvc_repos.repo)}, base_dir=dvc_repos.root)
    src = read_dvc(spec, previous=None, progress=no_progress).tables
    target = wandb_target(tmp_path)
    report = migrate(spec, target, catalog=tmp_path / ".braid")
    assert report.verified, report.summary()
    assert report.created["runs"] == src["runs"].height
    tables, ids = read_target(target)
    ids = {f"pipe:run/{k}": v for k, v in ids.items()}
    assert set(ids) == set(src["runs"]["id"].to_list())
    runs = {r["id"]: r for r in tables["runs"].iter_rows(named=True)}
    attrs, wattrs = run_attrs(src), run_attrs(tables)
    commits = {c["sha"] for c in dvc_repos.facts["lock_commits"]}
    for run in src["runs"].iter_rows(named=True):
        wid = ids[run["id"]]
        got = runs[wid]
        assert got["name"] == run["name"] and got["project"] == run["project"]
        assert got["status"] == "finished" and got["user"] == run["user"]
        assert got["git_commit"] == run["git_commit"]
        params = dict(of_run(tables, "params", wid).select("key", "value").iter_rows())
        assert {k: v for k, v in params.items() if not k.startswith("braid.")} == \
            dict(of_run(src, "params", run["id"]).select("key", "value").iter_rows())
        assert iso_ms(params["braid.started_at"]) == ms(run["started_at"])
        want = sorted((k, s, ms(t), v) for k, s, t, v in of_run(src, "metrics", run["id"])
                      .select("key", "step", "timestamp", "value").iter_rows())
        have = sorted((k, s, ms(t), v) for k, s, t, v in of_run(tables, "metrics", wid)
                      .select("key", "step", "timestamp", "value").iter_rows())
        assert have == want, run["id"]
        stage = attrs[run["id"]].get("stage") or attrs[run["id"]].get("kind")
        assert wattrs[wid].get("job_type") == stage
    assert {r["git_commit"] for r in runs.values()} & commits
    # an experiment is the parent of its stage executions: config braid.parent_id, one group
    links = src["edges"].filter(pl.col("kind") == "parent_of").select("src", "dst").rows()
    assert links
    for parent, child in links:
        params = dict(of_run(tables, "params", ids[child]).select("key", "value").iter_rows())
        assert params["braid.parent_id"] == ids[parent].rsplit("/", 1)[-1]
        assert wattrs[ids[child]]["group"] == wattrs[ids[parent]]["group"]
    # the files each run wrote (its outs, the members of a directory out), at their DVC paths with
    # the md5 DVC recorded, in the run's artifact and in the SDK's staged copy
    outs = src["edges"].filter(pl.col("kind") == "output").select(run="src", out="dst")
    members = src["edges"].filter(pl.col("kind") == "part_of").select(file="src", out="dst")
    files = pl.concat([outs.join(members, on="out").select("run", "file"),
                       outs.filter(~pl.col("out").is_in(members["out"].implode())).select("run", file="out")])
    nodes = src["nodes"].select(file="id", md5=pl.col("digest").str.strip_prefix("md5:"),
                                path=pl.col("attrs").str.json_path_match("$.path"))
    recorded_files = files.join(nodes, on="file")
    refused = IdMap.load(tmp_path / ".braid", "pipe", "wb").data["artifacts"]
    carried = 0
    for run_id, wid in ids.items():
        want = dict(recorded_files.filter(pl.col("run") == run_id).select("path", "md5").iter_rows())
        got = target_run_files(tables, wid)
        not_here = {path for path, _ in refused[run_id.removeprefix("pipe:run/")]["refused"]}
        assert {p: m for p, (m, _) in got.items()} == {p: m for p, m in want.items() if p not in not_here}, run_id
        assert all(md5_file(staged) == md5 for md5, staged in got.values())
        carried += len(got)
    assert carried > 0 and report.kinds["artifact"].carried == carried
    assert carried + sum(report.kinds["artifact"].not_carried.values()) == recorded_files.height
    # what an offline W&B run cannot hold is reported, not dropped silently
    kinds = report.as_dict()["kinds"]
    assert kinds["dataset_input"]["transformed"] and kinds["dataset_output"]["transformed"]
    # a stage input another run wrote would be a use of that run's artifact, which needs a server
    produced = src["edges"].filter(pl.col("kind") == "input").join(
        src["edges"].filter(pl.col("kind") == "output").select(producer="src", src="dst"), on="src") \
        .filter(pl.col("producer") != pl.col("dst")).select("src", "dst").unique()
    kind_of = dict(src["nodes"].select("id", "kind").iter_rows())
    offline = {kind: sum(n for why, n in {**kinds[kind]["transformed"], **kinds[kind]["not_carried"]}.items()
                         if "an offline W&B run cannot use an artifact" in why)
               for kind in ("dataset_input", "other_input")}
    assert produced.height and offline == {
        "dataset_input": sum(kind_of[s] == "dataset" for s in produced["src"]),
        "other_input": sum(kind_of[s] != "dataset" for s in produced["src"])}
    assert "artifact_use" not in report.verification
    again = migrate(spec, target, catalog=tmp_path / ".braid")
    assert again.verified and not again.created.get("runs")
