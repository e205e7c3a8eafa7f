"""The catalog on disk: atomic generations, one writer, checksums, crashes and incremental sync."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import braid.connectors.mlflow as mlflow_connector
from braid.unify import CatalogCorrupt, CatalogLocked, CatalogMissing, CatalogMoved, open_catalog
from braid.unify.config import load_config
from braid.unify.errors import SourceUnreachable
from braid.unify.schema import TABLES
from braid.unify.store import MANIFEST, Writer
from braid.unify.sync import sync
from tests.conftest import SHARED_STORES, MlflowStore, run, write_store


def workspace(tmp_path: Path, *stores: tuple[str, str]) -> Path:
    lines = ['catalog = ".braid"']
    for name, uri in stores:
        lines += ["[[sources]]", f'name = "{name}"', 'tool = "mlflow"', f'uri = "{uri}"']
    (tmp_path / "braid.toml").write_text("\n".join(lines) + "\n")
    return tmp_path / "braid.toml"


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "lock"}


@pytest.fixture
def two_stores(tmp_path: Path) -> Path:
    for v in ("2.22.1", "3.17.2"):
        shutil.copy(SHARED_STORES[v], tmp_path / f"{v}.db")
    return workspace(tmp_path, ("old", "sqlite:///2.22.1.db"), ("new", "sqlite:///3.17.2.db"))


def test_unchanged_resync_changes_nothing(two_stores: Path) -> None:
    config = load_config(two_stores)
    first = sync(config)
    assert first.changed and first.generation == 1
    before = snapshot(config.catalog)
    second = sync(config)
    assert not second.changed and second.generation == 1
    assert snapshot(config.catalog) == before


def test_catalog_holds_both_sources_and_shares_the_commit(two_stores: Path) -> None:
    config = load_config(two_stores)
    sync(config)
    cat = open_catalog(config.catalog)
    assert cat.sources == {"old": "mlflow", "new": "mlflow"}
    commit = "git:6f9ef47785f89edf5e79889a88d9379722c3711d"
    # one code node, reached from both stores' runs
    assert cat.nodes.filter(id=commit).height == 1
    runs = cat.edges.filter(src=commit, kind="code")["dst"].to_list()
    assert {r.split(":")[0] for r in runs} == {"old", "new"}
    # both stores recorded the dataset with the same MLflow digest: identity links them
    link = cat.edges.filter(kind="same_as")
    assert link.height == 1 and json.loads(link["attrs"][0])["evidence"] == "digest"


def test_a_failing_source_keeps_its_previous_data(two_stores: Path, tmp_path: Path) -> None:
    config = load_config(two_stores)
    sync(config)
    old_nodes = open_catalog(config.catalog).nodes
    (tmp_path / "2.22.1.db").unlink()
    report = sync(config)
    assert [r.name for r in report.failed] == ["old"]
    assert isinstance(report.failed[0].error, SourceUnreachable)
    assert_frame_equal(open_catalog(config.catalog).nodes, old_nodes)


def test_a_sync_that_fails_before_commit_leaves_the_previous_generation(
    two_stores: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(two_stores)
    sync(config)
    before = snapshot(config.catalog)
    shutil.copy(SHARED_STORES["2.9.2"], two_stores.parent / "3.17.2.db")  # new content to write

    def boom(self: Writer, manifest: object) -> bool:
        raise RuntimeError("disk full")

    monkeypatch.setattr(Writer, "commit", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        sync(config)
    cat = open_catalog(config.catalog)
    assert cat.generation == 1
    for name in TABLES:
        cat.table(name)  # every file of the generation is whole and matches its checksum
    assert json.loads(before[MANIFEST]) == json.loads((config.catalog / MANIFEST).read_bytes())
    monkeypatch.undo()
    assert sync(config).generation == 2


KILLER = """
import os, signal, sys
from braid.unify import store
from braid.unify.config import load_config
from braid.unify.sync import sync
when = sys.argv[2]
if when == "commit":
    store.Writer.commit = lambda self, m: os.kill(os.getpid(), signal.SIGKILL)
else:
    real, calls = store.Writer.write_frame, []
    def write_then_die(self, *a):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *a)
    store.Writer.write_frame = write_then_die
sync(load_config(__import__("pathlib").Path(sys.argv[1])))
"""


@pytest.mark.parametrize("when", ["commit", "mid-write"])
def test_sigkill_during_sync(two_stores: Path, when: str) -> None:
    config = load_config(two_stores)
    sync(config)
    nodes = open_catalog(config.catalog).nodes
    shutil.copy(SHARED_STORES["2.16.2"], two_stores.parent / "2.22.1.db")
    proc = subprocess.run([sys.executable, "-c", KILLER, str(two_stores), when], capture_output=True)
    assert proc.returncode == -9
    cat = open_catalog(config.catalog)
    assert cat.generation == 1
    assert_frame_equal(cat.nodes, nodes)
    # the dead writer's lock died with it; the next sync completes and sees the new store
    report = sync(config)
    assert report.generation == 2 and not report.failed
    assert open_catalog(config.catalog).nodes.filter(id="old:run/1a7a51e5fa3147caaef76bde3c5b19aa").height == 1


def test_one_writer_at_a_time(two_stores: Path) -> None:
    config = load_config(two_stores)
    with Writer(config.catalog):
        with pytest.raises(CatalogLocked, match=f"pid {os.getpid()}"):
            sync(config)


def test_corrupt_manifest_and_tampered_file(two_stores: Path) -> None:
    config = load_config(two_stores)
    sync(config)
    manifest = config.catalog / MANIFEST
    good = manifest.read_bytes()
    manifest.write_bytes(good[: len(good) // 2])
    with pytest.raises(CatalogCorrupt, match=r"manifest.json is damaged \(line \d+, column \d+\)"):
        open_catalog(config.catalog)
    manifest.write_bytes(good)
    ref = json.loads(good)["sources"]["new"]["tables"]["nodes"]["file"]
    path = config.catalog / ref
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CatalogCorrupt, match="does not match its checksum"):
        open_catalog(config.catalog).nodes
    with pytest.raises(CatalogMissing):
        open_catalog(config.catalog.parent / "nowhere")


def test_incremental_sync_reads_only_changed_runs(
    sqlite_store: MlflowStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "live"
    shutil.copytree(sqlite_store.workdir, work)
    db = work / "mlflow.db"
    config = load_config(workspace(tmp_path, ("mlflow", f"sqlite:///{db}")))
    sync(config)

    # the real client adds a run and extends an existing run's history
    extra = textwrap.dedent(f"""
        import mlflow
        mlflow.set_tracking_uri("sqlite:///{db}")
        c = mlflow.MlflowClient()
        c.log_metric("{sqlite_store.facts['train_run']}", "loss", 0.1, step=5)
        with mlflow.start_run(experiment_id="{sqlite_store.facts['experiment_id']}", run_name="late"):
            mlflow.log_metric("loss", 0.2, step=0)
    """)
    run([sys.executable, "-c", extra], work)

    asked: list[object] = []
    real = mlflow_connector.open_store

    def spying(spec):  # type: ignore[no-untyped-def]
        store = real(spec)
        read = store.read_metric_history
        store.read_metric_history = lambda ids, progress: asked.append(ids) or read(ids, progress)  # type: ignore[method-assign]
        return store

    monkeypatch.setattr(mlflow_connector, "open_store", spying)
    assert sync(config).generation == 2
    assert len(asked) == 1 and len(asked[0]) == 2  # type: ignore[arg-type]
    assert sqlite_store.facts["train_run"] in asked[0]  # type: ignore[operator]
    incremental = open_catalog(config.catalog)

    (tmp_path / "full").mkdir()
    full_config = load_config(workspace(tmp_path / "full", ("mlflow", f"sqlite:///{db}")))
    sync(full_config, full=True)
    full = open_catalog(full_config.catalog)
    for name in TABLES:
        assert_frame_equal(incremental.table(name), full.table(name))
    loss = incremental.table("metrics").filter(run_id=f"mlflow:run/{sqlite_store.facts['train_run']}", key="loss")
    assert loss.sort("step")["value"].to_list()[-1] == pytest.approx(0.1)


def test_a_reader_outlived_by_two_syncs_is_told_to_reopen(two_stores: Path, tmp_path: Path) -> None:
    config = load_config(two_stores)
    sync(config)
    reader = open_catalog(config.catalog)  # tables load on first use
    for release in ("2.9.2", "2.16.2"):
        shutil.copy(SHARED_STORES[release], tmp_path / "2.22.1.db")
        sync(config)
    with pytest.raises(CatalogMoved, match="generation 1 was replaced by generation 3"):
        reader.nodes
    assert open_catalog(config.catalog).nodes.height > 0


def test_sync_one_source_keeps_the_others(two_stores: Path, tmp_path: Path) -> None:
    config = load_config(two_stores)
    sync(config)
    before = json.loads((config.catalog / MANIFEST).read_text())["sources"]["new"]
    shutil.copy(SHARED_STORES["2.9.2"], tmp_path / "2.22.1.db")
    (tmp_path / "3.17.2.db").unlink()  # would fail if it were read
    report = sync(config, only=["old"])
    assert [r.name for r in report.sources] == ["old"] and not report.failed
    after = json.loads((config.catalog / MANIFEST).read_text())["sources"]
    assert after["new"] == before
    assert open_catalog(config.catalog).nodes.filter(id="old:run/e9b1579cecae431ca5fb372e288e4b79").height == 1
