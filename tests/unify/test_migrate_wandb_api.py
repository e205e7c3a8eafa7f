"""`braid migrate` into a W&B server: MLflow runs written as W&B run folders by the real wandb
SDK, uploaded by the real `wandb sync` to the W&B API emulator (tests/wandb_emulator) on
127.0.0.1, read back through the real `wandb.Api()` client by braid's W&B reader, and compared
field by field with what the MLflow client recorded, independently of migrate's own
verification. Then re-runs, a server failing part-way, a migration killed before it could
upload, a refused key, a dead server and a dry run.

Nothing leaves 127.0.0.1: the base URL is the emulator's, the key a fake one, and proxies point
at a closed port (127.0.0.1 excepted).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from braid.connectors.wandb import read_source as read_wandb
from braid.unify.errors import MigrationTargetError, MigrationUsageError
from braid.unify.migrate import Report, migrate
from braid.unify.migrate._idmap import IdMap
from braid.unify.migrate._wandb_fields import wandb_run_id
from braid.unify.migrate._wandb_upload import UPLOAD_FOLDER
from braid.unify.source import SourceSpec, no_progress
from tests.conftest import DvcRepos
# `source`: the MLflow store of the folder target's tests, stress runs beside the shared fixture store;
# `registry_source`: a small store of MLflow 2 versions and versions that share a model
from tests.unify.test_migrate_wandb import registry_source, source  # noqa: F401
from tests.unify.test_migrate_wandb import (as_wandb_history, assert_run_carried, model_folders, model_links,
                                            recorded, source_run_files)
from tests.wandb_emulator import ServerState, WandbEmulator

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wandb-api")]

API_KEY = "local-" + "braidtest0" * 4 + "_emulator"  # the client's shape: prefix, 40+ [A-Za-z0-9_]
ENTITY, PROJECT = "team", "migrated"
OWNER = "tester"  # the key's owner: the target's entity is a team, named explicitly


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A fake key; wandb's settings, cache and staged bytes in temporary folders; any request
    beyond 127.0.0.1 sent to a closed port."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("wandb-home")
        mp.setenv("WANDB_API_KEY", API_KEY)
        mp.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: only the target's URL is used
        mp.setenv("WANDB_CONFIG_DIR", str(home / "config"))
        mp.setenv("WANDB_CACHE_DIR", str(home / "cache"))
        mp.setenv("WANDB_DATA_DIR", str(home / "data"))
        mp.delenv("WANDB_MODE", raising=False)
        mp.delenv("WANDB_SERVICE", raising=False)
        for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            mp.setenv(proxy, "http://127.0.0.1:9")
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        yield


def cloud(url: str, base_dir: Path, name: str = "cloud") -> SourceSpec:
    return SourceSpec(name, "wandb", {"entity": ENTITY, "project": PROJECT, "base_url": url}, base_dir=base_dir)


@dataclass(frozen=True)
class Migrated:
    target: SourceSpec
    work: Path
    report: Report
    emulator: WandbEmulator


@pytest.fixture(scope="module")
def migrated(source: SourceSpec, env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrated]:
    work = tmp_path_factory.mktemp("wandb-api-target")
    with WandbEmulator(ServerState(username=OWNER)).running() as emulator:
        target = cloud(emulator.url, work)
        yield Migrated(target, work, migrate(source, target, catalog=work / ".braid"), emulator)
    assert emulator.problems == [], "\n".join(emulator.problems)


def read_target(target: SourceSpec) -> tuple[dict[str, pl.DataFrame], dict[str, str]]:
    """The server's project read by braid's W&B reader (through `wandb.Api()`), and source run
    id -> W&B run node id."""
    options = {k: target.options[k] for k in ("entity", "project", "base_url")}
    batch = read_wandb(SourceSpec(target.name, "wandb", options), previous=None, progress=no_progress)
    assert batch.notes == []
    ids = batch.tables["params"].filter(pl.col("key") == "braid.source_id").select("value", "run_id").rows()
    return batch.tables, dict(ids)


def of_run(tables: dict[str, pl.DataFrame], table: str, run: str) -> pl.DataFrame:
    return tables[table].filter(pl.col("node_id" if table == "tags" else "run_id") == run)


def served_files(tables: dict[str, pl.DataFrame], run: str) -> dict[str, str]:
    """path -> md5 of the files in the run-files artifact the run logged, as the server's manifests
    say (its logged models are artifacts of their own)."""
    edges = tables["edges"]
    logged = edges.filter((pl.col("kind") == "output") & (pl.col("src") == run)
                          & pl.col("dst").str.contains(":artifact/"))["dst"].to_list()
    files = edges.filter((pl.col("kind") == "part_of") & pl.col("dst").is_in(logged))["src"].to_list()
    nodes = tables["nodes"].filter(pl.col("id").is_in(files))
    return {json.loads(a)["path"]: d.removeprefix("md5:") for d, a in nodes.select("digest", "attrs").iter_rows()}


def history_lengths(emulator: WandbEmulator) -> dict[str, int]:
    """History lines the server holds per run: a run uploaded twice would hold its rows twice."""
    return {r.name: len(r.history) for r in emulator.state.runs}


def expected_rows(source: SourceSpec) -> dict[str, int]:
    """W&B run id -> the history rows (steps) the run's MLflow history gives it."""
    return {wandb_run_id("old", run_id): len({step for _, step, _, _ in as_wandb_history(fact["history"])})
            for run_id, fact in recorded(source).items()}


def mutations(emulator: WandbEmulator) -> list[str]:
    writes = {"UpsertBucket", "CreateArtifact", "CreateRunFiles", "CommitArtifact", "file_stream", "upload",
              "LinkArtifact", "UseArtifact"}
    return [r.operation for r in emulator.requests if r.operation in writes]


# -- MLflow -> a W&B server, read back -------------------------------------------------------------------

def test_mlflow_runs_read_back_from_the_server_field_by_field(source: SourceSpec, migrated: Migrated) -> None:
    report = migrated.report
    assert report.verified, report.summary()
    facts = recorded(source)
    tables, ids = read_target(migrated.target)
    assert set(ids) == set(facts)  # every live run, once
    runs = {r["id"]: r for r in tables["runs"].iter_rows(named=True)}
    nodes = {n["id"]: json.loads(n["attrs"])
             for n in tables["nodes"].filter(pl.col("kind") == "run").iter_rows(named=True)}
    for run_id, fact in facts.items():
        wid = ids[run_id]
        run = runs[wid]
        params = dict(of_run(tables, "params", wid).select("key", "value").iter_rows())
        # every run in the project the target names; its experiment in config
        assert wid == f"cloud:run/{ENTITY}/{PROJECT}/{wandb_run_id('old', run_id)}"
        assert run["project"] == PROJECT and params["braid.experiment"] == fact["experiment"]
        assert_run_carried(run, params, tables, nodes[wid], fact)
    child = next(r for r, f in facts.items() if "mlflow.parentRunId" in f["tags"])
    parent = facts[child]["tags"]["mlflow.parentRunId"]
    assert nodes[ids[child]]["group"] == nodes[ids[parent]]["group"] == wandb_run_id("old", parent)
    # each run's history was uploaded once: the server holds as many lines as the run has steps
    assert history_lengths(migrated.emulator) == expected_rows(source)


def test_run_files_are_on_the_server_with_their_bytes(source: SourceSpec, migrated: Migrated, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    tables, ids = read_target(migrated.target)
    on_disk = source_run_files(source)
    assert sum(map(len, on_disk.values())) >= 3
    for run_id, files in on_disk.items():
        assert served_files(tables, ids[run_id]) == files, run_id
    # downloaded through the public API: the source's bytes
    run_id, files = next((r, f) for r, f in on_disk.items() if f)
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    api = wandb.Api(overrides={"base_url": migrated.emulator.url})
    name = f"{ENTITY}/{PROJECT}/run-{wandb_run_id('old', run_id)}:latest"
    folder = Path(api.artifact(name).download(root=str(tmp_path)))
    assert {p: hashlib.md5((folder / p).read_bytes()).hexdigest() for p in files} == files
    report = migrated.report
    from mlflow import MlflowClient

    client = MlflowClient(source.options["uri"])
    models = client.search_logged_models([e.experiment_id for e in client.search_experiments()])
    model_files = sum(1 for m in models for p in Path(m.artifact_location.removeprefix("file://")).rglob("*")
                      if p.is_file())
    assert report.kinds["artifact"].carried == report.created["artifact files"] == \
        sum(map(len, on_disk.values())) + model_files


def test_models_are_linked_into_the_registry_with_their_aliases(source: SourceSpec, migrated: Migrated,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb
    from mlflow import MlflowClient

    tables, ids = read_target(migrated.target)
    client = MlflowClient(source.options["uri"])
    versions = sorted((client.get_model_version("churn", v.version)  # search leaves the aliases out
                       for v in client.search_model_versions("name = 'churn'")), key=lambda v: int(v.version))
    # MLflow 3 versions of logged models: their source is `models:/<model id>`
    model_of = {v.version: v.source.removeprefix("models:/") for v in versions}
    assert len(versions) == 2 and all(v.source.startswith("models:/m-") for v in versions)
    # the model artifacts on the server: logged by the W&B run of each model's run, the source's bytes
    models = {m.model_id: m for m in client.search_logged_models([e.experiment_id for e in client.search_experiments()])}
    nodes = tables["nodes"].filter(pl.col("attrs").str.json_path_match("$.type") == "model")
    node_of = {json.loads(a)["metadata"]["braid"]["source_id"]: i for i, a in nodes.select("id", "attrs").iter_rows()}
    assert set(node_of) == set(models)
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    api = wandb.Api(overrides={"base_url": migrated.emulator.url})
    for model_id, model in models.items():
        wid = wandb_run_id("old", model.source_run_id)
        (artifact,) = [a for a in api.run(f"{ENTITY}/{PROJECT}/{wid}").logged_artifacts() if a.type == "model"]
        assert artifact.metadata["braid"]["source_id"] == model_id and artifact.name.startswith(f"{model.name}:")
        folder = Path(artifact.download(root=str(tmp_path / model_id)))
        root = Path(model.artifact_location.removeprefix("file://"))
        want = {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
                for p in root.rglob("*") if p.is_file()}
        assert {p: hashlib.md5((folder / p).read_bytes()).hexdigest() for p in want} == want
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(want)
    # the registry, read back: one link per MLflow version, in version order, with MLflow's aliases
    registry = tables["registry"].sort("version")
    assert registry["name"].to_list() == ["churn", "churn"] and registry["version"].to_list() == ["v0", "v1"]
    for row, version in zip(registry.iter_rows(named=True), versions, strict=True):
        assert row["model_id"] == node_of[model_of[version.version]]
        assert sorted(set(row["aliases"]) - {"latest"}) == sorted(version.aliases)
    assert registry["aliases"].to_list()[1] == ["champion", "latest"]
    links = migrated.emulator.state.links
    assert [(ln.project, ln.collection) for ln in links] == [("wandb-registry-model", "churn")] * 2
    report = migrated.report
    assert report.created["registry links"] == 2 and report.created["model artifacts"] == len(models)
    kinds = report.as_dict()["kinds"]
    assert sum(kinds["model_version"]["transformed"].values()) == 2
    # a link holds aliases only: the version's tags (the fixture's `validated`) are reported lost
    assert kinds["model_version"]["not_carried"] == {"a model version's tags: a W&B registry link holds only "
                                                     "aliases": sum(len(v.tags) for v in versions)}
    assert kinds["alias"]["carried"] == 1 and sum(kinds["registered_model"]["transformed"].values()) == 1
    for kind in ("logged_model", "model_version"):
        assert report.verification[kind]["source"] == 2 and report.verification[kind]["missing"] == 0, kind
    # the id map holds each link, and the dry run expects what the migration reported
    mapped = IdMap.load(migrated.work / ".braid", "old", "cloud").data["model_versions"]
    assert mapped == {"churn/1": "wandb-registry-model/churn:v0", "churn/2": "wandb-registry-model/churn:v1"}
    dry = migrate(source, migrated.target, catalog=migrated.work / ".braid", dry_run=True)
    assert dry.as_dict()["kinds"] == {k: v for k, v in kinds.items()}


def test_model_inputs_are_used_model_artifacts(source: SourceSpec, migrated: Migrated,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Each logged model a source run used (MLflow's model inputs) is a used artifact of the run on
    the server, read back through the public API: the model artifact of that model, logged by the
    W&B run of the run that logged the model; no other run uses a model."""
    import wandb
    from mlflow import MlflowClient

    client = MlflowClient(source.options["uri"])
    inputs, outputs, _ = model_links(source)
    assert len(inputs) == 1  # the fixture store's fluent log_metric(model_id=...) of another run's model
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    api = wandb.Api(overrides={"base_url": migrated.emulator.url})
    for run_id in recorded(source):
        used = [a for a in api.run(f"{ENTITY}/{PROJECT}/{wandb_run_id('old', run_id)}").used_artifacts()
                if a.type == "model"]
        wanted = sorted(m for r, m in inputs if r == run_id)
        assert sorted(a.metadata["braid"]["source_id"] for a in used) == wanted, run_id
        for artifact in used:
            model = client.get_logged_model(artifact.metadata["braid"]["source_id"])
            assert artifact.logged_by().id == wandb_run_id("old", model.source_run_id)
            assert artifact.name.startswith(f"{model.name}:")
    assert [r.operation for r in migrated.emulator.requests].count("UseArtifact") == len(inputs)
    report = migrated.report
    kinds = report.as_dict()["kinds"]
    assert kinds["model_input"]["carried"] == len(inputs) == report.created["model uses"]
    assert not kinds["model_input"]["transformed"] and not kinds["model_input"]["not_carried"]
    assert sum(kinds["model_output"]["transformed"].values()) == len(outputs)
    assert report.verification["model_input"] == {"source": len(inputs), "target": len(inputs), "missing": 0,
                                                  "unexpected": 0, "examples": []}
    # the id map holds each use in the consumer's run entry: a re-run makes none again (`test_a_rerun_creates_nothing`)
    mapped = IdMap.load(migrated.work / ".braid", "old", "cloud").data["runs"]
    assert {(r, m) for r, entry in mapped.items() for m in entry.get("used_models", {})} == set(inputs)


def test_mlflow2_versions_and_versions_of_one_model_are_linked_once_per_model(
        registry_source: SourceSpec, env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """An MLflow 2 version's folder is a model artifact of its run, linked like a logged model's;
    a registry collection holds an artifact version once, so the versions of a registered model
    that name one model are one link with all their aliases (and are reported so)."""
    import wandb
    from mlflow import MlflowClient

    client = MlflowClient(registry_source.options["uri"])
    folders = model_folders(registry_source)
    by_version = {(v["name"], v["version"]): key for key, f in folders.items() for v in f["versions"]}
    # what the server should hold, from the MLflow client: one link per model of a registered model,
    # in version order, with the aliases of all its versions
    expected: dict[tuple[str, str], list[str]] = {}
    for v in sorted(client.search_model_versions(), key=lambda v: (v.name, int(v.version))):
        logged = v.source.removeprefix("models:/") if v.source.startswith("models:/") else None  # an MLflow 3 model
        model = by_version.get((v.name, str(v.version))) or logged
        if model is not None:
            expected.setdefault((v.name, model), []).extend(client.get_model_version(v.name, v.version).aliases)
    assert len(expected) == 3 and len(client.search_model_versions()) == 6
    with WandbEmulator(ServerState(username=OWNER)).running() as emulator:
        target = cloud(emulator.url, tmp_path, name="registry")
        report = migrate(registry_source, target, catalog=tmp_path / ".braid")
        assert report.verified, report.summary()
        state = emulator.state
        links = [(ln.collection, ln.version_index, sorted(set(ln.aliases) - {"latest"}),
                  state.artifacts[ln.artifact - 1].metadata["braid"]["source_id"]) for ln in state.links]
        assert links == [(name, [m for n, m in expected if n == name].index(model), sorted(aliases), model)
                         for (name, model), aliases in expected.items()]
        # each MLflow 2 folder, downloaded through the public API from its run: the source's bytes
        monkeypatch.delenv("WANDB_SERVICE", raising=False)
        api = wandb.Api(overrides={"base_url": emulator.url})
        for key, folder in folders.items():
            wid = wandb_run_id("old", folder["run"])
            (artifact,) = [a for a in api.run(f"{ENTITY}/{PROJECT}/{wid}").logged_artifacts()
                           if a.type == "model" and a.metadata["braid"]["source_id"] == key]
            got = Path(artifact.download(root=str(tmp_path / "download" / wid)))
            assert {p.relative_to(got).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
                    for p in got.rglob("*") if p.is_file()} == folder["files"]
            assert artifact.metadata["registered_versions"] == folder["versions"]
        kinds = report.as_dict()["kinds"]["model_version"]
        assert sorted(kinds["transformed"].values()) == [2, 3]  # 3 links, 2 versions sharing one
        assert [n for why, n in kinds["transformed"].items() if why.startswith("another version")] == [2]
        assert [n for why, n in kinds["not_carried"].items() if why.startswith("the version's source")] == [1]
        assert report.created["registry links"] == 3
        mapped = IdMap.load(tmp_path / ".braid", "old", "registry").data["model_versions"]
        assert mapped == {"legacy/1": "wandb-registry-model/legacy:v0", "legacy/2": "wandb-registry-model/legacy:v0",
                          "legacy/3": "wandb-registry-model/legacy:v1", "scorer/1": "wandb-registry-model/scorer:v0",
                          "scorer/2": "wandb-registry-model/scorer:v0"}
        before = len(mutations(emulator))
        again = migrate(registry_source, target, catalog=tmp_path / ".braid")
        assert again.verified and not again.created and again.reused["registry links"] == 3
        assert len(mutations(emulator)) == before
    assert emulator.problems == [], "\n".join(emulator.problems)


@pytest.mark.xdist_group("dvc")
def test_dvc_stage_inputs_use_the_artifacts_of_the_runs_that_wrote_them(
        dvc_repos: DvcRepos, env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One DVC pipeline execution into a W&B server: each stage input another migrated stage
    wrote is a used artifact of the consumer run, the producer run's run-files artifact, which
    holds the file with the md5 DVC recorded; inputs from runs not migrated are reported."""
    import wandb

    from braid.connectors.dvc import read_source as read_dvc

    spec = SourceSpec("pipe", "dvc", {"repo": str(dvc_repos.repo)}, base_dir=dvc_repos.root)
    src = read_dvc(spec, previous=None, progress=no_progress).tables
    runs = src["runs"]["id"].to_list()
    commit = sorted(r.split("/")[1] for r in runs if r.endswith("/prep"))[0]
    chosen = [r for r in runs if r.split("/")[1] == commit]
    edges = src["edges"]
    inputs = edges.filter((pl.col("kind") == "input") & pl.col("dst").is_in(chosen)).select(node="src", consumer="dst")
    wrote = edges.filter((pl.col("kind") == "output") & pl.col("src").is_in(chosen)).select(node="dst", producer="src")
    produced = inputs.join(wrote, on="node").filter(pl.col("producer") != pl.col("consumer"))
    assert produced.height and produced.height < inputs.height  # some inputs come from runs not migrated
    members = edges.filter(pl.col("kind") == "part_of").select(file="src", node="dst")
    md5s = dict(src["nodes"].select("id", pl.col("digest").str.strip_prefix("md5:")).iter_rows())
    paths = dict(src["nodes"].select("id", pl.col("attrs").str.json_path_match("$.path")).iter_rows())

    def wid(node: str) -> str:
        return wandb_run_id("pipe", node.removeprefix("pipe:run/"))

    with WandbEmulator(ServerState(username=OWNER)).running() as emulator:
        target = cloud(emulator.url, tmp_path, name="pipeline")
        report = migrate(spec, target, catalog=tmp_path / ".braid", select=chosen)
        assert report.verified, report.summary()
        monkeypatch.delenv("WANDB_SERVICE", raising=False)
        api = wandb.Api(overrides={"base_url": emulator.url})
        for consumer, uses in produced.group_by("consumer"):
            used = {a.name.split(":")[0]: a for a in api.run(f"{ENTITY}/{PROJECT}/{wid(consumer[0])}").used_artifacts()}
            assert set(used) == {f"run-{wid(p)}" for p in uses["producer"]}, consumer
            for node, producer in uses.select("node", "producer").iter_rows():
                artifact = used[f"run-{wid(producer)}"]
                assert artifact.logged_by().id == wid(producer)
                # the input's bytes are in it, with the md5 DVC recorded
                files = members.filter(pl.col("node") == node)["file"].to_list() or [node]
                entries = artifact.manifest.entries
                for file in files:
                    assert base64.b64decode(entries[paths[file]].digest).hex() == md5s[file], (consumer, file)
        kinds = report.as_dict()["kinds"]
        used_n = sum(n for kind in ("dataset_input", "other_input")
                     for why, n in kinds[kind]["transformed"].items() if "uses that producer run's" in why)
        assert used_n == produced.height
        assert report.created["artifact uses"] == produced.select("consumer", "producer").unique().height
        mapped = IdMap.load(tmp_path / ".braid", "pipe", "pipeline").data["runs"]
        assert {(c, p) for c, entry in mapped.items() for p in entry.get("used", {})} == {
            (c.removeprefix("pipe:run/"), p.removeprefix("pipe:run/"))
            for c, p in produced.select("consumer", "producer").unique().iter_rows()}
        before = len(mutations(emulator))
        again = migrate(spec, target, catalog=tmp_path / ".braid", select=chosen)
        assert again.verified and not again.created
        assert len(mutations(emulator)) == before  # no use recorded twice
    assert emulator.problems == [], "\n".join(emulator.problems)


def test_the_staging_folder_is_gone_and_the_key_is_nowhere(migrated: Migrated) -> None:
    catalog = migrated.work / ".braid"
    assert not (catalog / UPLOAD_FOLDER / "cloud").exists()  # every run folder uploaded, then deleted
    secret = API_KEY.encode()
    for path in catalog.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    assert API_KEY not in migrated.report.to_json() + migrated.report.summary()


def test_a_rerun_creates_nothing(source: SourceSpec, migrated: Migrated) -> None:
    before, lines = len(mutations(migrated.emulator)), history_lengths(migrated.emulator)
    again = migrate(source, migrated.target, catalog=migrated.work / ".braid")
    assert not again.created, again.created
    assert again.reused["runs"] == migrated.report.created["runs"] == len(recorded(source))
    assert again.verified, again.summary()
    assert len(mutations(migrated.emulator)) == before  # nothing sent but reads, no link made again
    assert history_lengths(migrated.emulator) == lines
    assert again.reused["registry links"] == migrated.report.created["registry links"] == 2
    assert again.reused["model uses"] == migrated.report.created["model uses"] == 1
    assert "UseArtifact" not in mutations(migrated.emulator)[before:]


def test_dry_run_writes_nothing(source: SourceSpec, env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY")  # nor needs the key
    with WandbEmulator(ServerState(username=OWNER)).running() as emulator:
        report = migrate(source, cloud(emulator.url, tmp_path), catalog=tmp_path / ".braid", dry_run=True)
    assert report.dry_run and report.verification is None
    assert report.created["runs"] == len(recorded(source))
    assert emulator.requests == [] and list(tmp_path.iterdir()) == []
    assert report.kinds["experiment"].transformed  # the experiments' runs go into the target's project


# -- interruptions: the server failing part-way, a kill before the upload --------------------------------

@pytest.mark.parametrize(("operation", "mode", "after"), [
    ("CreateArtifactFiles", "graphql", 2),  # runs whose artifact was never committed
    ("file_stream", "http500", 3),  # runs created, with no history and no end
])
def test_a_server_failing_part_way_then_a_rerun_completes(source: SourceSpec, env: None, tmp_path: Path,
                                                          operation: str, mode: Any, after: int) -> None:
    catalog, total = tmp_path / ".braid", len(recorded(source))
    with WandbEmulator(ServerState(username=OWNER)).running() as emulator:
        target = cloud(emulator.url, tmp_path)
        emulator.fail(operation, mode, after=after)
        with pytest.raises(MigrationTargetError) as caught:
            migrate(source, target, catalog=catalog)
        message = str(caught.value)
        assert "\n" not in message and "does not hold" in message and "lacks" in message, message
        assert "run the same migration again" in (caught.value.hint or "")
        done = [r for r in IdMap.load(catalog, "old", "cloud").data["runs"].values() if r["done"]]
        held = {r.name for r in emulator.state.runs}
        waiting = list((catalog / UPLOAD_FOLDER / "cloud").rglob("*"))
        assert any(p.name.endswith(".log") for p in waiting)  # wandb sync's own logs, kept with the folders...
        assert not [p for p in waiting if p.is_file() and API_KEY.encode() in p.read_bytes()]  # ...without the key
        assert len(done) < total and len(held) > len(done)  # runs the server holds in part
        emulator.failures.clear()
        emulator.problems.clear()  # the failures the test asked for
        report = migrate(source, target, catalog=catalog)
        assert report.verified, report.summary()
        assert report.created["runs"] == total - len(done) and report.reused["runs"] == len(done)
        # completed by resumed segments: no history line twice, every run ended
        assert history_lengths(emulator) == expected_rows(source)
        assert {r.state for r in emulator.state.runs} <= {"finished", "failed", "crashed"}
        assert all(a.state == "COMMITTED" for a in emulator.state.artifacts)
        assert "RunResumeStatus" in emulator.operations()
    assert emulator.problems == [], "\n".join(emulator.problems)
    assert not (catalog / UPLOAD_FOLDER / "cloud").exists()


def _config(work: Path, source: SourceSpec, url: str) -> None:
    (work / "braid.toml").write_text(
        f'[[sources]]\nname = "old"\ntool = "mlflow"\nuri = "{source.options["uri"]}"\n\n'
        f'[[sources]]\nname = "cloud"\ntool = "wandb"\nentity = "{ENTITY}"\nproject = "{PROJECT}"\n'
        f'base_url = "{url}"\n')


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "braid.unify.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def test_cli_killed_before_the_upload_then_rerun(source: SourceSpec, env: None, tmp_path: Path) -> None:
    staging = tmp_path / ".braid" / UPLOAD_FOLDER / "cloud"
    with WandbEmulator(ServerState(username=OWNER)).running() as emulator:
        _config(tmp_path, source, emulator.url)
        proc = subprocess.Popen([sys.executable, "-m", "braid.unify.cli", "migrate", "--from", "old", "--to", "cloud"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 300
        try:
            # kill it once a run folder is written and waits for the server (a batch is synced
            # only once all its runs are written: seconds later)
            while proc.poll() is None and time.monotonic() < deadline and not list(staging.glob("offline-run-*")):
                time.sleep(0.05)
            assert proc.poll() is None, "the migration finished before it could be killed"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # braid, its wandb-core and any `wandb sync`
            proc.wait(timeout=30)
        waiting = list(staging.glob("offline-run-*"))
        assert waiting and mutations(emulator) == []  # written, not uploaded
        done = _cli(["migrate", "--from", "old", "--to", "cloud", "--format", "json"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout)
        assert report["verified"] is True
        total = len(recorded(source))
        assert report["created"]["runs"] == total
        assert history_lengths(emulator) == expected_rows(source)
    assert emulator.problems == [], "\n".join(emulator.problems)
    assert not staging.exists()
    assert API_KEY not in done.stdout + done.stderr


# -- errors ------------------------------------------------------------------------------------------------

def test_cli_refused_key_is_one_line_and_the_key_is_nowhere(source: SourceSpec, env: None, tmp_path: Path) -> None:
    with WandbEmulator(ServerState(username=OWNER), api_keys={"other-" + "k" * 40}).running() as emulator:
        _config(tmp_path, source, emulator.url)
        refused = _cli(["migrate", "--from", "old", "--to", "cloud"], tmp_path)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[1] == "  hint: check WANDB_API_KEY", refused.stderr
    assert lines[0] == (f"braid: error: migrating 'old' to 'cloud': {emulator.url}: connecting (Viewer) failed: "
                        "the W&B server refused WANDB_API_KEY (HTTP 401)")
    assert API_KEY not in refused.stdout + refused.stderr
    assert emulator.state.runs == [] and emulator.operations() == ["BraidViewer"]
    secret = API_KEY.encode()
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "braid.toml":
            assert secret not in path.read_bytes(), path
    assert not list((tmp_path / ".braid").rglob("offline-run-*"))  # refused before anything was written


def test_a_dead_server_is_one_line_soon(source: SourceSpec, env: None, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(MigrationTargetError) as caught:
        migrate(source, cloud(url, tmp_path), catalog=tmp_path / ".braid")
    assert time.monotonic() - started < 60
    message = str(caught.value)
    assert f"{url}: connecting (Viewer) failed: the W&B server did not answer" in message and "\n" not in message
    assert not list((tmp_path / ".braid").rglob("offline-run-*"))


def test_a_server_target_needs_the_key_before_anything_is_read(source: SourceSpec, env: None, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY")
    target = cloud("http://127.0.0.1:9", tmp_path)
    with pytest.raises(MigrationUsageError, match="WANDB_API_KEY, which is not set"):
        migrate(source, target, catalog=tmp_path / ".braid")
    monkeypatch.setenv("WANDB_API_KEY", "short")
    with pytest.raises(MigrationUsageError, match="is not a W&B API key") as caught:
        migrate(source, target, catalog=tmp_path / ".braid")
    assert "short" not in str(caught.value)
    bad = SourceSpec("cloud", "wandb", {"entity": ENTITY, "project": "a/b"}, base_dir=tmp_path)
    with pytest.raises(MigrationUsageError, match="not a W&B project name"):
        migrate(source, bad, catalog=tmp_path / ".braid")
    assert list(tmp_path.iterdir()) == []
