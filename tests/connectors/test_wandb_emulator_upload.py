"""Uploads to the W&B API emulator: run folders written by the installed SDK (offline) are
uploaded by the real `wandb sync` CLI (wandb-core) to the emulator on 127.0.0.1, then read back
through the real `wandb.Api()` client by braid's W&B reader, and compared with what braid's
folder reader makes of the same folders. The public API's writes (`run.use_artifact`,
`artifact.link`) and what `wandb sync` does when the server fails part-way are checked too:
the migration's uploader (`unify/migrate/_wandb_upload.py`) is built on them.

Nothing leaves 127.0.0.1: the base URL is the emulator's, and the key is a fake one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from braid.connectors.wandb import read_source
from braid.unify.source import SourceBatch, SourceSpec, no_progress
from tests.connectors.test_wandb_api import API_KEY, ENTITY, PROJECT, RESUMED_ID, Runs, api_runs, sh  # noqa: F401
from tests.wandb_emulator import ServerState, WandbEmulator

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wandb")]

WANDB = Path(sys.executable).parent / "wandb"
# what only one side knows of a node (in attrs): a folder its segments, exit code, that `wandb sync`
# marked it synced and the SDK's staged copies; the server the version, when it was logged, a
# file's birth artifact, the run's page and owner; the runtime each measures its own way (the
# exit record's, the summary's `_runtime`)
FOLDER_ONLY = {"segments", "exit_code", "resumed", "synced", "staged", "runtime"}
SERVER_ONLY = {"version", "logged_at", "birth_artifact_id", "url", "wandb_user", "runtime"}


@dataclass(frozen=True)
class Upload:
    emulator: WandbEmulator
    root: Path  # the run folders `wandb sync` uploaded (a copy of the fixture's)
    started: float
    ended: float
    sync: subprocess.CompletedProcess[str]


def copy_folders(runs: Runs, to: Path) -> Path:
    """The fixture's run folders, copied: `wandb sync` marks what it uploaded in each folder."""
    shutil.copytree(runs.root, to, symlinks=True, ignore=shutil.ignore_patterns("latest-run", "debug*.log"))
    return to


def wandb_sync(url: str, *paths: Path, key: str = API_KEY,
               flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """The real `wandb sync` CLI against the emulator (its own process, as a user runs it, in the
    folder above the run folders: it writes its logs into `./wandb`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_SERVICE")}
    env |= {"WANDB_BASE_URL": url, "WANDB_API_KEY": key, "WANDB_SILENT": "false"}  # what it says is checked
    return subprocess.run([str(WANDB), "sync", *flags, *map(str, paths)], cwd=paths[0].parent, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A fake key, wandb's settings and cache in a temporary folder, nothing beyond 127.0.0.1."""
    with pytest.MonkeyPatch.context() as mp:
        work = tmp_path_factory.mktemp("wandb-home")
        mp.setenv("WANDB_API_KEY", API_KEY)
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: only explicit URLs are used
        mp.setenv("WANDB_CONFIG_DIR", str(work / "config"))
        mp.setenv("WANDB_CACHE_DIR", str(work / "cache"))
        mp.delenv("WANDB_MODE", raising=False)
        yield


@pytest.fixture(scope="module")
def uploaded(api_runs: Runs, env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upload]:  # noqa: F811
    """The fixture's folders uploaded by `wandb sync` to an empty server whose key belongs to
    `team`: offline runs name no entity, so they go to the key owner's."""
    root = copy_folders(api_runs, tmp_path_factory.mktemp("synced") / "wandb")
    with WandbEmulator(ServerState(username=ENTITY)).running() as emulator:
        started = time.time()
        sync = wandb_sync(emulator.url, root)
        yield Upload(emulator, root, started, time.time(), sync)
    assert emulator.problems == [], "\n".join(emulator.problems)


def read_api(url: str) -> SourceBatch:
    spec = SourceSpec("wandb", "wandb", {"entity": ENTITY, "project": PROJECT, "base_url": url})
    return read_source(spec, previous=None, progress=no_progress)


def read_folders(root: Path) -> SourceBatch:
    return read_source(SourceSpec("wandb", "wandb", {"entity": ENTITY, "path": str(root)}), previous=None,
                       progress=no_progress)


def run_id(name: str) -> str:
    return f"wandb:run/{ENTITY}/{PROJECT}/{name}"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def epoch(when: datetime) -> float:
    return when.replace(tzinfo=when.tzinfo or UTC).timestamp()


def logged_keys(state: ServerState) -> pl.DataFrame:
    """(run id, top-level key) of every key in a history row the server holds: what `wandb sync` streamed."""
    rows = {(run_id(run.name), key) for run in state.runs for row in run.history for key in row}
    return pl.DataFrame(sorted(rows), schema={"run_id": pl.String, "top": pl.String}, orient="row")


def split(batch: SourceBatch, logged: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A batch's metric points: those of logged keys (`eval.acc` of `eval`), and the summary-only ones."""
    metrics = batch.tables["metrics"].with_columns(top=pl.col("key").str.split(".").list.first())
    return (metrics.join(logged, on=["run_id", "top"], how="semi").drop("top"),
            metrics.join(logged, on=["run_id", "top"], how="anti").drop("top"))


def run_ends(batch: SourceBatch, run_ids: Iterable[str]) -> list[datetime]:
    """Each run's `ended_at` in the batch's runs table, in the order of `run_ids`."""
    ends = dict(batch.tables["runs"].select("id", "ended_at").iter_rows())
    return [ends[rid] for rid in run_ids]


# -- what the upload holds, read back -----------------------------------------------------------------------

def test_uploaded_runs_read_back_as_their_folders(uploaded: Upload) -> None:
    assert uploaded.sync.returncode == 0, uploaded.sync.stderr[-2000:]
    api, folder = read_api(uploaded.emulator.url), read_folders(uploaded.root)
    assert api.notes == [] and folder.notes == []
    assert api.tables["runs"].height == 3 and api.tables["metrics"].height > 200
    # every param and tag
    for table in ("params", "tags"):
        assert_frame_equal(api.tables[table].sort(pl.all()), folder.tables[table].sort(pl.all()), check_exact=True)
    # every metric point a history row logged: its step, `_timestamp` and value (NaN and infinities too)
    logged = logged_keys(uploaded.emulator.state)
    (api_rows, api_only), (folder_rows, folder_only) = split(api, logged), split(folder, logged)
    assert_frame_equal(api_rows.sort(pl.all()), folder_rows.sort(pl.all()), check_exact=True)
    # the summary-only points (alpha's `best_acc` and `final.score`): the same keys, steps and values,
    # each dated at the run's end as its side knows it. On the server that is the run's start (the
    # upload) + the summary's last `_runtime`, which wandb-core writes in whole seconds as the run
    # ends: the folder's end while alpha lasted under a second (`_runtime` 0 counts as none), a later
    # moment once it lasted one, as on a loaded machine (see the test below)
    assert sorted(api_only["key"]) == ["best_acc", "final.score"]
    assert_frame_equal(api_only.drop("timestamp").sort(pl.all()), folder_only.drop("timestamp").sort(pl.all()),
                       check_exact=True)
    for batch, only in ((api, api_only), (folder, folder_only)):
        assert only["timestamp"].to_list() == run_ends(batch, only["run_id"])
    # runs: all but when they started (a run is created on the server when it is uploaded:
    # UpsertBucket carries no start time) and so when they ended
    times = ("started_at", "ended_at", "duration")
    assert_frame_equal(api.tables["runs"].drop(times).sort("id"), folder.tables["runs"].drop(times).sort("id"))
    for started in api.tables["runs"]["started_at"]:
        assert int(uploaded.started) <= epoch(started) <= uploaded.ended
    # nodes and edges: the same ids, kinds, names, digests and sizes; created when uploaded
    moments = ("created_at", "updated_at")
    assert_frame_equal(api.tables["nodes"].drop("uri", "version", "attrs", *moments).sort("id"),
                       folder.tables["nodes"].drop("uri", "version", "attrs", *moments).sort("id"))
    assert_frame_equal(api.tables["edges"].drop("created_at").sort("src", "dst", "kind"),
                       folder.tables["edges"].drop("created_at").sort("src", "dst", "kind"))
    # each node's attrs: what both sides know is the same; the server adds only what it alone knows
    folder_attrs = dict(folder.tables["nodes"].select("id", "attrs").iter_rows())
    for node, text in api.tables["nodes"].select("id", "attrs").iter_rows():
        a, f = json.loads(text or "{}"), json.loads(folder_attrs[node] or "{}")
        assert {k: v for k, v in a.items() if k not in SERVER_ONLY} == \
            {k: v for k, v in f.items() if k not in FOLDER_ONLY}, node


def test_uploaded_runs_hold_what_the_sdk_recorded(api_runs: Runs, uploaded: Upload) -> None:  # noqa: F811
    facts = api_runs.facts
    state = uploaded.emulator.state
    runs = {r.name: r for r in state.runs}
    assert {r.state for r in state.runs} == {"finished", "failed"}
    assert runs[facts["beta"]].state == "failed" and runs[facts["beta"]].exit_code == 1
    # the resumed run's second folder continues its steps on the server
    assert [row["_step"] for row in runs[RESUMED_ID].history] == list(range(40))
    alpha = runs[facts["alpha"]]
    assert (alpha.display_name, alpha.group, alpha.job_type, alpha.notes) == ("alpha", "g1", "train", "first run")
    assert alpha.config["batch"] == 32 and alpha.config["model"]["dropout"] == 0.5
    assert alpha.metadata is not None and alpha.metadata["git"]["remote"] == "https://example.org/team/churn.git"
    # the artifact files' bytes, each uploaded once under its md5
    assert {facts["train_md5"], facts["labels_md5"], facts["model_md5"]} <= set(state.blobs)
    assert all(hashlib.md5(data).hexdigest() == name for name, data in state.blobs.items())
    assert [(a.name, a.state, a.version_index) for a in state.artifacts if a.name == "train-data"] == [
        ("train-data", "COMMITTED", 0)]


def test_uploaded_artifact_files_download_with_their_bytes(
        api_runs: Runs, uploaded: Upload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import wandb

    monkeypatch.delenv("WANDB_SERVICE", raising=False)  # the client's sidecar is this test's only
    api = wandb.Api(overrides={"base_url": uploaded.emulator.url})
    data = Path(api.artifact(f"{ENTITY}/{PROJECT}/train-data:v0").download(root=str(tmp_path / "data")))
    assert md5(data / "train.csv") == api_runs.facts["train_md5"]
    assert md5(data / "meta" / "labels.txt") == api_runs.facts["labels_md5"]
    model = Path(api.artifact(f"{ENTITY}/{PROJECT}/churn-model:latest").download(root=str(tmp_path / "model")))
    assert md5(model / "model.pt") == api_runs.facts["model_md5"]


# a run that logs one row, sets a summary-only metric and lasts over a second: the summary's last
# `_runtime`, which wandb-core writes in whole seconds as the run ends, is then at least 1
SLOW_RUN = """
import time, wandb
run = wandb.init(project="fixture", name="slow")
run.log({"loss": 0.5})
run.summary["best"] = 0.25
time.sleep(1.5)
run.finish()
print(run.id)
"""


def test_a_summary_only_point_of_an_uploaded_run_is_dated_at_its_end_on_the_server(
        env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    offline = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    name = sh([sys.executable, "-c", SLOW_RUN], tmp_path, offline).strip().splitlines()[-1]
    monkeypatch.delenv("WANDB_SERVICE", raising=False)  # the client's sidecar is this test's only
    with WandbEmulator(ServerState(username=ENTITY)).running() as emulator:
        assert wandb_sync(emulator.url, tmp_path / "wandb").returncode == 0
        api, folder = read_api(emulator.url), read_folders(tmp_path / "wandb")
        run = wandb.Api(overrides={"base_url": emulator.url}).run(f"{ENTITY}/{PROJECT}/{name}")
        (row,) = run.scan_history()  # the history row `wandb sync` streamed
        created, summary = datetime.fromisoformat(run.created_at).replace(tzinfo=UTC), run.summary_metrics
    assert emulator.problems == []
    logged_at = datetime.fromtimestamp(row["_timestamp"], UTC)
    assert summary["_runtime"] >= 1 and created > logged_at  # created at the upload
    points = {side: dict(batch.tables["metrics"].select("key", "timestamp").iter_rows())
              for side, batch in (("api", api), ("folder", folder))}
    # the logged point: its `_timestamp` (to the microsecond) on both sides
    assert points["api"]["loss"] == points["folder"]["loss"]
    assert abs(points["api"]["loss"] - logged_at) <= timedelta(microseconds=1)
    # the summary-only point: at the run's end, which on the server is its start (the upload) + runtime,
    # and in the folder the end the SDK recorded, before the upload
    (api_end,), (folder_end,) = run_ends(api, [run_id(name)]), run_ends(folder, [run_id(name)])
    assert points["api"]["best"] == api_end == created + timedelta(seconds=summary["_runtime"])
    assert points["folder"]["best"] == folder_end < created


# -- the public API's writes: what a run used, registry links -------------------------------------------------

def test_use_artifact_and_link_through_the_public_api(api_runs: Runs, env: None,  # noqa: F811
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    state = ServerState.from_run_folders(api_runs.root, entity=ENTITY, username=ENTITY)
    with WandbEmulator(state).running() as emulator:
        monkeypatch.setenv("WANDB_BASE_URL", emulator.url)  # `link` makes an Api of its own
        api = wandb.Api(overrides={"base_url": emulator.url})
        api.run(f"{ENTITY}/{PROJECT}/{RESUMED_ID}").use_artifact(api.artifact(f"{ENTITY}/{PROJECT}/train-data:v0"))
        model = api.artifact(f"{ENTITY}/{PROJECT}/churn-model:v0")
        first = model.link("wandb-registry-model/churn", aliases=["production"])
        # a collection holds an artifact version once: linking it again is the same link, its aliases added
        again = model.link("wandb-registry-model/churn", aliases=["staging"])
        batch = read_api(emulator.url)
    assert emulator.problems == [], "\n".join(emulator.problems)
    assert {"UseArtifact", "LinkArtifact"} <= set(emulator.operations())
    edges = batch.tables["edges"]
    inputs = edges.filter((pl.col("kind") == "input") & (pl.col("dst") == run_id(RESUMED_ID)))["src"].to_list()
    assert inputs == [next(i for i in edges["dst"] if "/train-data:" in i)]
    assert (first.version, again.version) == ("v0", "v0") and len(emulator.state.links) == 1
    (row,) = batch.tables["registry"].rows(named=True)
    assert (row["name"], row["version"], sorted(row["aliases"])) == ("churn", "v0", ["latest", "production", "staging"])
    assert row["run_id"] == run_id(api_runs.facts["beta"])


# -- what `wandb sync` does when things go wrong: why braid's uploader checks the server --------------------

def test_a_second_sync_of_a_folder_sends_its_history_again(
        api_runs: Runs, env: None, tmp_path: Path) -> None:  # noqa: F811
    root = copy_folders(api_runs, tmp_path / "wandb")
    (alpha,) = root.glob(f"offline-run-*-{api_runs.facts['alpha']}")
    with WandbEmulator(ServerState(username=ENTITY)).running() as emulator:
        for _ in range(2):
            assert wandb_sync(emulator.url, alpha, flags=("--include-synced",)).returncode == 0
        batch = read_api(emulator.url)
    assert emulator.problems == []
    # the second sync streamed the history from the line count UpsertBucket answered: twice the rows
    (run,) = emulator.state.runs
    assert [row["_step"] for row in run.history] == list(range(100)) * 2
    # braid's reader keeps one point per key and step, so only the line count tells
    loss = batch.tables["metrics"].filter(pl.col("key") == "loss")
    assert loss.height == loss["step"].n_unique() == 100
    assert len(emulator.state.artifacts) == 1  # the artifact, by its digest, is not made again


def test_a_sync_whose_artifact_upload_fails_still_finishes(
        api_runs: Runs, env: None, tmp_path: Path) -> None:  # noqa: F811
    root = copy_folders(api_runs, tmp_path / "wandb")
    (alpha,) = root.glob(f"offline-run-*-{api_runs.facts['alpha']}")
    with WandbEmulator(ServerState(username=ENTITY)).running() as emulator:
        emulator.fail("CreateArtifactFiles")
        sync = wandb_sync(emulator.url, alpha)
        batch = read_api(emulator.url)
    assert sync.returncode == 0 and "Finished syncing" in sync.stderr
    assert (alpha / f"run-{api_runs.facts['alpha']}.wandb.synced").exists()  # marked as uploaded...
    # ...but the artifact was never committed: the run has no output on the server
    assert [(a.name, a.state) for a in emulator.state.artifacts] == [("train-data", "PENDING")]
    assert batch.tables["edges"].filter(pl.col("kind") == "output").is_empty()
    assert batch.tables["runs"]["status"].to_list() == ["finished"]
    emulator.problems.clear()  # the failure the test asked for


def test_a_sync_with_a_refused_key_creates_nothing(
        api_runs: Runs, env: None, tmp_path: Path) -> None:  # noqa: F811
    root = copy_folders(api_runs, tmp_path / "wandb")
    with WandbEmulator(ServerState(username=ENTITY), api_keys={"other-" + "k" * 40}).running() as emulator:
        sync = wandb_sync(emulator.url, root)
    assert emulator.state.runs == [] and emulator.state.blobs == {}
    assert "ERROR" in sync.stderr and API_KEY not in sync.stdout + sync.stderr
    assert emulator.problems == []

