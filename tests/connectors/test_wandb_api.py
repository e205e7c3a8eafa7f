"""The W&B connector through the public API: the real `wandb.Api()` client (and its
`wandb-core` sidecar) against the W&B API emulator in `tests/wandb_emulator/` on 127.0.0.1.

The emulator's server state is built from real run folders written by the installed SDK
(offline) in a session fixture, so the same runs can be read from their folders and through
the API and compared; used artifacts and registry links, which offline runs cannot record, are
declared in the emulator's state. Nothing leaves 127.0.0.1: the base URL is the emulator's,
and the key is a fake one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import requests
from polars.testing import assert_frame_equal

from braid.connectors.wandb import read_source
from braid.unify.errors import SourceAuthError, SourceError, SourceUnreachable
from braid.unify.source import SourceBatch, SourceSpec, no_progress
from tests.wandb_emulator import ServerState, WandbEmulator

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wandb")]

HERE = Path(__file__).parent
WRITER = HERE.parent / "fixtures" / "write_wandb_runs.py"
ENTITY, PROJECT = "team", "fixture"
RESUMED_ID = "resumed0api1"
API_KEY = "local-" + "braidtest0" * 4 + "_emulator"  # the client's shape: prefix, 40+ [A-Za-z0-9_]
# the requests the real 0.31 client sends for what braid reads
OPERATIONS = {"Viewer", "Runs", "RunFiles", "RunHistoryKeys", "RunParquetHistory", "HistoryPage",
              "RunOutputArtifacts", "RunInputArtifacts", "FetchArtifactManifest", "FetchLinkedArtifacts"}
GIT_ENV = {"GIT_AUTHOR_NAME": "braid tests", "GIT_AUTHOR_EMAIL": "tests@example.org",
           "GIT_COMMITTER_NAME": "braid tests", "GIT_COMMITTER_EMAIL": "tests@example.org"}


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    import subprocess

    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **GIT_ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@dataclass(frozen=True)
class Runs:
    workdir: Path
    root: Path
    facts: dict[str, Any]


@pytest.fixture(scope="session")
def api_runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Run folders written by the installed SDK (offline): two finished runs with artifacts, a
    failed one, and a run resumed over two folders."""
    work = tmp_path_factory.mktemp("wandb-api-runs")
    shutil.copy(WRITER, work / "train.py")
    sh(["git", "init", "-q", "-b", "main"], work)
    sh(["git", "remote", "add", "origin", "https://example.org/team/churn.git"], work)
    sh(["git", "add", "train.py"], work)
    sh(["git", "commit", "-q", "-m", "training script"], work)
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(work), "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    facts = json.loads(sh([sys.executable, "train.py", "main"], work, env).strip().splitlines()[-1])
    for segment in (0, 1):
        sh([sys.executable, "train.py", "resume", RESUMED_ID, str(segment)], work, env)
        time.sleep(1.1)  # folder names carry the start second: two segments, two folders
    return Runs(work, work / "wandb", facts)


@pytest.fixture(autouse=True)
def wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A fake key, and nothing that could send the client beyond 127.0.0.1."""
    monkeypatch.setenv("WANDB_API_KEY", API_KEY)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: only explicit URLs are used
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.delenv("WANDB_MODE", raising=False)


def server_state(runs: Runs) -> ServerState:
    return ServerState.from_run_folders(runs.root, entity=ENTITY)


@pytest.fixture
def emulator(api_runs: Runs) -> Iterator[WandbEmulator]:
    with WandbEmulator(server_state(api_runs)).running() as em:
        yield em
    assert em.problems == [], "\n".join(em.problems)  # a request the emulator could not validate


def read_api(url: str, **options: Any) -> SourceBatch:
    spec = SourceSpec("wandb", "wandb", {"entity": ENTITY, "project": PROJECT, "base_url": url, **options})
    return read_source(spec, previous=None, progress=no_progress)


def read_folders(runs: Runs) -> SourceBatch:
    spec = SourceSpec("wandb", "wandb", {"entity": ENTITY, "path": str(runs.root)})
    return read_source(spec, previous=None, progress=no_progress)


def run_id(name: str) -> str:
    return f"wandb:run/{ENTITY}/{PROJECT}/{name}"


def edges(batch: SourceBatch, kind: str) -> set[tuple[str, str]]:
    return set(batch.tables["edges"].filter(pl.col("kind") == kind).select("src", "dst").iter_rows())


def node(batch: SourceBatch, node_id: str) -> dict[str, Any]:
    rows = batch.tables["nodes"].filter(pl.col("id") == node_id)
    assert rows.height == 1, f"no node {node_id}: {batch.tables['nodes']['id'].to_list()}"
    return rows.row(0, named=True)


# W&B's GraphQL gives times to the second (a folder has microseconds); the folder path is the
# run's uri where the folder is read, its page on the server where only the API is; the version
# number (`v0`) only the server knows. Everything else is the same.
SECONDS = pl.col("created_at").dt.truncate("1s")


def comparable(batch: SourceBatch, table: str) -> pl.DataFrame:
    frame = batch.tables[table]
    if table == "nodes":
        frame = frame.drop("uri", "version", "attrs").with_columns(SECONDS).sort("id")
    elif table == "edges":
        frame = frame.with_columns(SECONDS).sort("src", "dst", "kind")
    elif table == "runs":
        frame = frame.drop("started_at", "duration").sort("id")
    else:
        frame = frame.sort(pl.all())
    return frame


# -- the same runs, from their folders and through the API ---------------------------------------------

def test_folder_and_api_give_the_same_nodes_and_edges(api_runs: Runs, emulator: WandbEmulator) -> None:
    api = read_api(emulator.url)
    folder = read_folders(api_runs)
    assert api.notes == []
    for table in ("nodes", "edges", "runs", "params", "metrics", "tags"):
        assert_frame_equal(comparable(api, table), comparable(folder, table), check_exact=True)
    assert api.tables["metrics"].height > 200
    # the environment record, read back from the run's wandb-metadata.json, is the folder's
    assert api.tables["runs"]["environment"].to_list() == folder.tables["runs"].sort("id")["environment"].to_list()
    # what differs: start to the second, and what only one side knows
    for a, f in zip(api.tables["runs"].sort("id").iter_rows(named=True),
                    folder.tables["runs"].sort("id").iter_rows(named=True), strict=True):
        assert a["started_at"] == f["started_at"].replace(microsecond=0)
    alpha = run_id(api_runs.facts["alpha"])
    assert node(api, alpha)["uri"] == f"{emulator.url}/{ENTITY}/{PROJECT}/runs/{api_runs.facts['alpha']}"
    data = [dst for src, dst in edges(api, "output") if src == alpha]
    assert [node(api, d)["version"] for d in data] == ["v0"] and [node(folder, d)["version"] for d in data] == [None]
    for d in data:
        assert json.loads(node(api, d)["attrs"])["aliases"] == json.loads(node(folder, d)["attrs"])["aliases"]
    assert OPERATIONS <= set(emulator.operations())


def test_resumed_run_history_continues_as_on_the_server(api_runs: Runs, emulator: WandbEmulator) -> None:
    api = read_api(emulator.url)
    loss = api.tables["metrics"].filter(pl.col("run_id") == run_id(RESUMED_ID), pl.col("key") == "loss").sort("step")
    assert loss["step"].to_list() == list(range(40))
    assert loss["value"].to_list() == [float(i) for i in range(20)] + [100.0 + i for i in range(20)]


def test_nan_and_infinities_survive_the_wire(api_runs: Runs, emulator: WandbEmulator) -> None:
    api = read_api(emulator.url)
    odd = api.tables["metrics"].filter(pl.col("run_id") == run_id(api_runs.facts["alpha"]),
                                       pl.col("key") == "odd").sort("step")["value"].to_list()
    assert odd[5] != odd[5] and odd[6] == float("inf") and odd[7] == float("-inf") and odd[8] == 8


# -- what only the server knows: inputs, versions, aliases, registry links ---------------------------------

def test_used_artifacts_aliases_and_registry_links(api_runs: Runs) -> None:
    state = server_state(api_runs)
    alpha, beta = api_runs.facts["alpha"], api_runs.facts["beta"]
    state.use(RESUMED_ID, "train-data:v0")  # as run.use_artifact online would record
    state.use(RESUMED_ID, "churn-model:latest")
    state.link("churn-model:v0", collection="churn", aliases=("production",))
    state.link("train-data:v0", registry="datasets", collection="clean")  # not a model: attrs only
    with WandbEmulator(state).running() as emulator:
        api = read_api(emulator.url)
    assert emulator.problems == []
    assert {"RunInputArtifacts", "FetchLinkedArtifacts"} <= set(emulator.operations())
    resumed = run_id(RESUMED_ID)
    inputs = {src for src, dst in edges(api, "input") if dst == resumed}
    data = next(dst for src, dst in edges(api, "output") if src == run_id(alpha))
    model = next(dst for src, dst in edges(api, "output") if src == run_id(beta) and "/churn-model:" in dst)
    assert inputs == {data, model}  # the same nodes the producing runs logged: lineage joins
    assert node(api, data)["version"] == "v0" and json.loads(node(api, data)["attrs"])["aliases"] == ["best", "latest"]

    mv = f"wandb:model_version/{state.org_entity}/wandb-registry-model/churn:v0"
    assert edges(api, "registered_as") == {(model, mv)}
    version = node(api, mv)
    assert (version["kind"], version["name"], version["version"]) == ("model_version", "churn", "v0")
    (row,) = api.tables["registry"].rows(named=True)
    assert (row["model_version_id"], row["name"], row["version"], row["model_id"], row["run_id"]) == (
        mv, "churn", "v0", model, run_id(beta))
    assert sorted(row["aliases"]) == ["latest", "production"]
    assert json.loads(row["events"])[0]["event"] == "linked"
    links = json.loads(node(api, data)["attrs"])["links"]
    assert [(ln["project"], ln["collection"], ln["version"]) for ln in links] == [
        ("wandb-registry-datasets", "clean", "v0")]
    # the lineage goes from the dataset through the run that used it to the registry version
    assert (model, resumed) in edges(api, "input")


def test_folder_and_api_together_duplicate_nothing(api_runs: Runs) -> None:
    state = server_state(api_runs)
    state.use(RESUMED_ID, "train-data:v0")
    state.link("churn-model:v0", collection="churn")
    with WandbEmulator(state).running() as emulator:
        spec = SourceSpec("wandb", "wandb", {"entity": ENTITY, "project": PROJECT, "base_url": emulator.url,
                                             "path": str(api_runs.root)})
        both = read_source(spec, previous=None, progress=no_progress)
        api = read_api(emulator.url)
    folder = read_folders(api_runs)
    nodes = both.tables["nodes"]
    assert nodes["id"].is_unique().all() and both.tables["runs"].height == 3
    assert set(nodes["id"]) == set(api.tables["nodes"]["id"]) | set(folder.tables["nodes"]["id"])
    assert set(nodes["id"]) == set(api.tables["nodes"]["id"])  # the folder holds nothing the server lacks
    for table in ("edges", "params", "tags"):
        assert_frame_equal(comparable(both, table).drop("created_at", strict=False),
                           comparable(api, table).drop("created_at", strict=False))
    assert_frame_equal(comparable(both, "metrics"), comparable(api, "metrics"))
    alpha = api_runs.facts["alpha"]
    run = node(both, run_id(alpha))
    # the folder adds its path and the start to the microsecond; the server its state and page
    assert run["uri"].startswith(str(api_runs.root)) and json.loads(run["attrs"])["url"].endswith(f"/runs/{alpha}")
    assert run["created_at"] == node(folder, run_id(alpha))["created_at"]
    data = next(dst for src, dst in edges(both, "output") if src == run_id(alpha))
    assert node(both, data)["version"] == "v0"
    assert both.tables["registry"].height == 1 and both.cursor["api"]["runs"] == 3


# -- errors ---------------------------------------------------------------------------------------------------

def test_graphql_errors_listing_runs_fail_the_source_by_name(emulator: WandbEmulator) -> None:
    emulator.fail("Runs")
    with pytest.raises(SourceError) as info:
        read_api(emulator.url)
    message = str(info.value)
    assert message.startswith(f"source 'wandb': {emulator.url}: listing the runs of {ENTITY}/{PROJECT} (Runs) failed")
    assert "emulated failure of Runs" in message and "\n" not in message


def test_a_failed_request_about_one_run_is_a_note(api_runs: Runs, emulator: WandbEmulator) -> None:
    emulator.fail("RunOutputArtifacts", "http500")
    emulator.fail("HistoryPage")
    batch = read_api(emulator.url)
    assert batch.tables["runs"].height == 3  # every run is still read
    outputs = [n for n in batch.notes if "(RunOutputArtifacts) failed" in n]
    assert len(outputs) == 3 and all("HTTP 500" in n and n.endswith("its outputs are missing") for n in outputs)
    history = [n for n in batch.notes if "(scan_history: HistoryPage) failed" in n]
    assert len(history) == 3 and all(n.endswith("its metrics are kept from the last sync") for n in history)
    # the catalog keeps the last sync's metrics of runs whose history could not be read
    assert batch.partial == {"metrics"} and batch.rewritten_runs == frozenset()
    assert edges(batch, "output") == set()


def test_a_refused_key_is_an_auth_error(emulator: WandbEmulator) -> None:
    emulator.api_keys = {"other-" + "k" * 40}
    with pytest.raises(SourceAuthError) as info:
        read_api(emulator.url)
    assert f"{emulator.url}: connecting (Viewer) failed" in str(info.value)
    assert info.value.hint == "check WANDB_API_KEY"
    assert emulator.operations() == ["Viewer"]


def test_a_server_that_does_not_answer_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(SourceUnreachable) as info:
        read_api(url, timeout=2)
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert f"{url}: connecting (Viewer) failed" in message and f"POST {url}/graphql" in message
    assert "connection refused" in message


def test_a_missing_or_malformed_key_sends_nothing(emulator: WandbEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY")
    with pytest.raises(SourceAuthError, match="no W&B API key"):
        read_api(emulator.url)
    monkeypatch.setenv("WANDB_API_KEY", "short")
    with pytest.raises(SourceAuthError, match="WANDB_API_KEY is not a W&B API key") as info:
        read_api(emulator.url)
    assert "short" not in str(info.value)
    assert emulator.operations() == []


def test_project_without_entity_is_a_config_error() -> None:
    spec = SourceSpec("wandb", "wandb", {"project": PROJECT})
    with pytest.raises(SourceError, match="needs `entity`"):
        read_source(spec, previous=None, progress=no_progress)


def test_the_api_key_never_reaches_the_catalog_or_messages(api_runs: Runs, tmp_path: Path,
                                                           braid_cli) -> None:  # type: ignore[no-untyped-def]
    state = server_state(api_runs)
    state.link("churn-model:v0", collection="churn")
    (tmp_path / "braid.toml").write_text(f'[[sources]]\ntool = "wandb"\npath = "{api_runs.root}"\n'
                                         f'entity = "{ENTITY}"\nproject = "{PROJECT}"\nbase_url = "{{url}}"\n')
    with WandbEmulator(state).running() as emulator:
        config = tmp_path / "braid.toml"
        config.write_text(config.read_text().replace("{url}", emulator.url))
        synced = braid_cli("sync")
        assert synced.returncode == 0, synced.stderr
        query = braid_cli("query", "SELECT model_version_id, version FROM registry", "--format", "json")
        assert query.returncode == 0, query.stderr
        assert [r["version"] for r in json.loads(query.stdout)] == ["v0"]
        emulator.api_keys = {"other-" + "k" * 40}  # now refused: the sync fails, with a message
        refused = braid_cli("sync")
    assert refused.returncode == 1 and "connecting (Viewer) failed" in refused.stderr
    assert emulator.problems == []
    secret = API_KEY.encode()
    for path in (tmp_path / ".braid").rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    for proc in (synced, query, refused):
        assert API_KEY not in proc.stdout + proc.stderr


# -- the emulator itself ------------------------------------------------------------------------------------

def test_emulator_names_a_field_it_lacks(emulator: WandbEmulator) -> None:
    body = {"query": "query Newer { viewer { id teleportKey } }", "operationName": "Newer"}
    answer = requests.post(f"{emulator.url}/graphql", json=body, auth=("api", API_KEY), timeout=10).json()
    assert answer["data"] is None and "teleportKey" in answer["errors"][0]["message"]
    assert len(emulator.problems) == 1 and "teleportKey" in emulator.problems[0]
    assert '"operationName": "Newer"' in emulator.problems[0]  # the request body, for the debug output
    emulator.problems.clear()
