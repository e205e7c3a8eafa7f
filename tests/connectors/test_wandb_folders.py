"""The W&B connector on run folders: real runs from five SDK releases and runs written now by
the installed wandb SDK (offline) in a session fixture: several runs, nested config and
history keys, NaN and infinities, artifacts with files and a `file://` reference, a resumed
run split over two folders, a run killed with SIGKILL; damaged copies of real files; and an
end-to-end `braid sync` where a W&B artifact file meets a DVC out with the same bytes.

The facts checked come from the scripts that wrote the runs, never from a reader.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from braid.connectors.wandb import read_source
from braid.connectors.wandb._folders import find_run_files, open_files
from braid.connectors.wandb._txlog import read_log
from braid.unify.errors import SourceError
from braid.unify.source import PreviousSync, SourceBatch, SourceSpec, no_progress

# the fresh runs are written once per worker: keep these tests on one
pytestmark = pytest.mark.xdist_group("wandb")

HERE = Path(__file__).parent
LEGACY = HERE.parent / "data" / "wandb-runs"
WRITER = HERE.parent / "fixtures" / "write_wandb_runs.py"
SDKS = ["sdk-0.15.12", "sdk-0.16.6", "sdk-0.17.5", "sdk-0.17.5-core", "sdk-0.19.11"]
LEGACY_COMMIT = "c7e786f7d88fbd602729b5172a97ec559f6f8ddb"
TRAIN_CSV_MD5 = "c3c6bc2ae8ece4bd2510dca21225c041"
GIT_ENV = {"GIT_AUTHOR_NAME": "braid tests", "GIT_AUTHOR_EMAIL": "tests@example.org",
           "GIT_COMMITTER_NAME": "braid tests", "GIT_COMMITTER_EMAIL": "tests@example.org"}
RESUMED_ID = "resumed0run1"
KILLED_STEPS = 3000


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **GIT_ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def read(path: Path, *, name: str = "wandb", previous: PreviousSync | None = None, **options: Any) -> SourceBatch:
    spec = SourceSpec(name, "wandb", {"path": str(path), **options}, path.parent)
    return read_source(spec, previous=previous, progress=no_progress)


def again(batch: SourceBatch) -> PreviousSync:
    return PreviousSync(batch.cursor, batch.state)


@dataclass(frozen=True)
class Runs:
    """Run folders written by the installed SDK, and the facts the writer recorded."""

    workdir: Path
    root: Path  # the `wandb` folder
    facts: dict[str, Any]
    commit: str


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    work = tmp_path_factory.mktemp("wandb-runs")
    shutil.copy(WRITER, work / "train.py")
    sh(["git", "init", "-q", "-b", "main"], work)
    sh(["git", "remote", "add", "origin", "https://example.org/team/churn.git"], work)
    sh(["git", "add", "train.py"], work)
    sh(["git", "commit", "-q", "-m", "training script"], work)
    commit = sh(["git", "rev-parse", "HEAD"], work).strip()
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(work), "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    facts = json.loads(sh([sys.executable, "train.py", "main"], work, env).strip().splitlines()[-1])
    for segment in (0, 1):
        sh([sys.executable, "train.py", "resume", RESUMED_ID, str(segment)], work, env)
        time.sleep(1.1)  # folder names carry the start second: two segments, two folders
    facts["killed"] = _killed_run(work, env)
    return Runs(work, work / "wandb", facts, commit)


def _killed_run(work: Path, env: dict[str, str]) -> str:
    """A run whose Python process gets SIGKILL mid-way: no exit record, a cut tail."""
    proc = subprocess.Popen([sys.executable, "train.py", "killed", str(KILLED_STEPS)], cwd=work,
                            env={**os.environ, **GIT_ENV, **env}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == "ready":
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    run_id = json.loads(lines[0])["id"]
    (path,) = (work / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    for _ in range(100):  # wandb-core notices its parent died and lets go of the file
        if not open_files([str(path)])[0]:
            break
        time.sleep(0.1)
    return str(run_id)


def run_file(runs: Runs, run_id: str) -> Path:
    (path,) = runs.root.glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    return path


def one_run(tmp: Path, source: Path, name: str = "copy") -> Path:
    """A root holding one copy of a run file, in a run folder of its own."""
    folder = tmp / name / "wandb" / f"offline-run-20250101_000000-{source.stem.removeprefix('run-')}"
    folder.mkdir(parents=True)
    shutil.copy(source, folder / source.name)
    return tmp / name


def points(batch: SourceBatch, run: str, key: str) -> pl.DataFrame:
    return batch.tables["metrics"].filter(pl.col("run_id") == run, pl.col("key") == key).sort("step")


def node(batch: SourceBatch, node_id: str) -> dict[str, Any]:
    rows = batch.tables["nodes"].filter(pl.col("id") == node_id)
    assert rows.height == 1, f"no node {node_id}: {batch.tables['nodes']['id'].to_list()}"
    return rows.row(0, named=True)


def edges(batch: SourceBatch, kind: str) -> set[tuple[str, str]]:
    return set(batch.tables["edges"].filter(pl.col("kind") == kind).select("src", "dst").iter_rows())


# -- real runs from five SDK releases -----------------------------------------------------------------

@pytest.mark.parametrize("sdk", SDKS)
def test_legacy_run_facts_are_in_the_tables(sdk: str) -> None:
    batch = read(LEGACY / sdk)
    assert batch.notes == []
    (run_id,) = [f.run_id for f in find_run_files(LEGACY / sdk)]
    rid = f"wandb:run/offline/legacy/{run_id}"
    run = batch.tables["runs"].row(0, named=True)
    assert (run["id"], run["project"], run["status"]) == (rid, "legacy", "finished")
    assert (run["git_commit"], run["git_remote"]) == (LEGACY_COMMIT, "https://example.org/team/churn.git")
    assert run["started_at"] <= run["ended_at"]
    env = json.loads(run["environment"])
    assert (env["group"], env["job_type"], env["notes"]) == ("sweep-1", "train", "legacy format sample")
    assert env["program"].endswith("train.py")
    attrs = json.loads(node(batch, rid)["attrs"])
    assert (attrs["group"], attrs["job_type"], attrs["summary"]["best_acc"]) == ("sweep-1", "train", 0.95)

    params = dict(batch.tables["params"].select("key", "value").iter_rows())
    assert params == {"lr": "0.01", "layers": "[64, 32]", "opt.name": "adam", "opt.beta1": "0.9"}
    assert batch.tables["tags"].select("node_id", "key", "value").rows() == [(rid, "legacy", "")]

    for key in ("loss", "eval.acc", "lr", "odd"):
        series = points(batch, rid, key)
        assert series["step"].to_list() == list(range(3000)), key
        assert series["timestamp"].null_count() == 0
    loss = points(batch, rid, "loss")["value"].to_list()
    assert loss == pytest.approx([1 / (s + 1) for s in range(3000)])
    odd = points(batch, rid, "odd")["value"].to_list()
    for step, value in enumerate(odd):
        if step % 500 == 3:
            assert math.isnan(value)
        else:
            assert value == (math.inf if step == 7 else step)
    best = points(batch, rid, "best_acc").rows(named=True)
    assert [(p["step"], p["value"]) for p in best] == [(2999, 0.95)]  # summary-only: at the last step

    (artifact,) = [n for n in batch.tables["nodes"].iter_rows(named=True) if n["name"] == "train-data"]
    assert artifact["kind"] == "dataset" and artifact["id"].startswith("wandb:dataset/offline/legacy/train-data:")
    assert sorted(json.loads(artifact["attrs"])["aliases"]) == ["latest", "v-legacy"]
    assert json.loads(artifact["attrs"])["metadata"] == {"rows": 2}
    file = node(batch, artifact["id"] + "/train.csv")
    assert (file["kind"], file["digest"], file["size"]) == ("dataset", f"md5:{TRAIN_CSV_MD5}", 12)
    assert edges(batch, "part_of") == {(file["id"], artifact["id"])}
    assert edges(batch, "output") == {(rid, artifact["id"])}
    code = node(batch, f"git:{LEGACY_COMMIT}")
    assert (code["kind"], code["tool"]) == ("code", None)
    assert edges(batch, "code") == {(f"git:{LEGACY_COMMIT}", rid)}


def test_five_releases_share_one_artifact_version() -> None:
    """The same bytes under the same name are one W&B artifact version, logged by five runs."""
    batch = read(LEGACY)
    assert batch.tables["runs"].height == 5
    (artifact,) = batch.tables["nodes"].filter(pl.col("name") == "train-data")["id"]
    assert {dst for _, dst in edges(batch, "output")} == {artifact}


# -- runs written now by the installed SDK -------------------------------------------------------------

@pytest.fixture(scope="module")
def fresh(runs: Runs) -> SourceBatch:
    return read(runs.root)


def test_fresh_runs_config_history_and_summary(runs: Runs, fresh: SourceBatch) -> None:
    alpha = f"wandb:run/offline/fixture/{runs.facts['alpha']}"
    row = fresh.tables["runs"].filter(pl.col("id") == alpha).row(0, named=True)
    assert (row["name"], row["status"], row["git_commit"], row["project"]) == ("alpha", "finished", runs.commit, "fixture")
    assert row["git_remote"] == "https://example.org/team/churn.git"
    params = dict(fresh.tables["params"].filter(pl.col("run_id") == alpha).select("key", "value").iter_rows())
    assert params == {"lr": "0.1", "epochs": "3", "model.name": "mlp", "model.layers": "[8, 4]",
                      "model.act.kind": "relu", "model.dropout": "0.5", "use_bias": "true", "note": "plain text",
                      "batch": "32"}
    tags = fresh.tables["tags"].filter(pl.col("node_id") == alpha)["key"].sort().to_list()
    assert tags == ["baseline", "nested"]

    assert points(fresh, alpha, "eval.f1.macro")["value"].to_list() == pytest.approx([s / 200 for s in range(100)])
    assert points(fresh, alpha, "eval.acc")["step"].to_list() == list(range(100))
    odd = points(fresh, alpha, "odd")["value"].to_list()
    assert math.isnan(odd[5]) and odd[6] == math.inf and odd[7] == -math.inf and odd[8] == 8
    summary_only = points(fresh, alpha, "best_acc").vstack(points(fresh, alpha, "final.score"))
    assert summary_only.select("step", "value").rows() == [(99, 0.99), (99, 7.0)]
    assert points(fresh, alpha, "text_only").height == 0  # a string is not a metric
    summary = json.loads(node(fresh, alpha)["attrs"])["summary"]
    assert summary["text_only"] == "done" and summary["final.score"] == 7

    beta = f"wandb:run/offline/fixture/{runs.facts['beta']}"
    assert node(fresh, beta)["status"] == "failed"  # finish(exit_code=1)
    assert points(fresh, beta, "loss")["step"].to_list() == list(range(0, 100, 10))


def test_fresh_artifacts_files_and_references(runs: Runs, fresh: SourceBatch) -> None:
    facts = runs.facts
    alpha = f"wandb:run/offline/fixture/{facts['alpha']}"
    (data,) = [dst for src, dst in edges(fresh, "output") if src == alpha]
    assert data.startswith("wandb:dataset/offline/fixture/train-data:")
    files = {n["name"]: n for n in fresh.tables["nodes"].iter_rows(named=True) if n["id"].startswith(data + "/")}
    assert set(files) == {"train.csv", "labels.txt", "outside.bin"}
    assert {src for src, dst in edges(fresh, "part_of") if dst == data} == {f["id"] for f in files.values()}
    train = files["train.csv"]
    assert (train["digest"], train["size"], train["kind"]) == (f"md5:{facts['train_md5']}", facts["train_size"], "dataset")
    assert files["labels.txt"]["id"] == f"{data}/meta/labels.txt"
    ref = files["outside.bin"]
    assert (ref["uri"], ref["digest"]) == (facts["ref_uri"], f"md5:{facts['ref_md5']}")
    artifact = node(fresh, data)
    assert artifact["digest"].startswith("wandb-artifact:") and artifact["size"] == sum(f["size"] for f in files.values())
    assert "best" in json.loads(artifact["attrs"])["aliases"]

    beta = f"wandb:run/offline/fixture/{facts['beta']}"
    kinds = {n["name"]: n["kind"] for n in fresh.tables["nodes"].iter_rows(named=True)
             if (beta, n["id"]) in edges(fresh, "output")}
    assert kinds == {"churn-model": "model", "report": "artifact"}
    model_files = fresh.tables["nodes"].filter(pl.col("name") == "model.pt")
    assert model_files["digest"].to_list() == [f"md5:{facts['model_md5']}"]


def test_resumed_run_is_one_run_whose_steps_continue(runs: Runs, fresh: SourceBatch) -> None:
    rid = f"wandb:run/offline/fixture/{RESUMED_ID}"
    assert len(list(runs.root.glob(f"offline-run-*-{RESUMED_ID}"))) == 2
    assert fresh.tables["runs"].filter(pl.col("id").str.contains(RESUMED_ID)).height == 1
    loss = points(fresh, rid, "loss")
    # each segment logged steps 0..19; the second continues where the first stopped, as on the server
    assert loss["step"].to_list() == list(range(40))
    assert loss["value"].to_list() == [float(i) for i in range(20)] + [100.0 + i for i in range(20)]
    params = dict(fresh.tables["params"].filter(pl.col("run_id") == rid).select("key", "value").iter_rows())
    assert params == {"segment": "1"}  # config folded in order, across segments
    attrs = json.loads(node(fresh, rid)["attrs"])
    assert [s["step_offset"] for s in attrs["segments"]] == [None, 20] and attrs["resumed"] is True
    assert node(fresh, rid)["status"] == "finished"


def test_killed_run_is_crashed_with_its_history_up_to_the_kill(runs: Runs, fresh: SourceBatch) -> None:
    rid = f"wandb:run/offline/fixture/{runs.facts['killed']}"
    assert node(fresh, rid)["status"] == "crashed"
    loss = points(fresh, rid, "loss")
    n = loss.height
    assert 0 < n <= KILLED_STEPS
    assert loss["step"].to_list() == list(range(n)) and loss["value"].to_list() == [float(s) for s in range(n)]
    params = dict(fresh.tables["params"].filter(pl.col("run_id") == rid).select("key", "value").iter_rows())
    assert params == {"lr": "0.3"}
    path = run_file(runs, runs.facts["killed"])
    # wandb-core's buffered writer may have been cut mid-record: if so, that is said, with the offset
    assert all(note.startswith(f"{path.name}: truncated at offset") for note in fresh.notes if path.name in note)


def test_running_while_a_process_holds_the_file(runs: Runs, tmp_path: Path) -> None:
    root = one_run(tmp_path, run_file(runs, runs.facts["killed"]))
    (path,) = root.rglob("run-*.wandb")
    with open(path, "ab"):
        assert read(root).tables["runs"]["status"].to_list() == ["running"]
    assert read(root).tables["runs"]["status"].to_list() == ["crashed"]


# -- damage and bad input ---------------------------------------------------------------------------------

def test_truncated_copies_keep_a_prefix_and_say_where(runs: Runs, tmp_path: Path) -> None:
    source = run_file(runs, runs.facts["alpha"])
    data = source.read_bytes()
    whole = read(one_run(tmp_path, source, "whole"))
    rid = f"wandb:run/offline/fixture/{runs.facts['alpha']}"
    full_loss = points(whole, rid, "loss")["value"].to_list()
    offsets = read_log(source).offsets
    for record in (offsets[len(offsets) // 3], offsets[len(offsets) // 2], offsets[-1]):
        cut = record + 10  # inside the record that starts there
        folder = one_run(tmp_path, source, f"cut-{cut}")
        (path,) = folder.rglob("run-*.wandb")
        path.write_bytes(data[:cut])
        batch = read(folder)
        assert f"{path.name}: truncated at offset {record} (partial record kept out)" in batch.notes
        loss = points(batch, rid, "loss")["value"].to_list()
        assert 0 < len(loss) <= len(full_loss) and loss == full_loss[:len(loss)]
        assert batch.tables["runs"]["status"].to_list() == ["crashed"]  # no exit record: nobody writes it


def test_cut_anywhere_or_flipped_anywhere_never_raises(runs: Runs, tmp_path: Path) -> None:
    """A small run cut at every 61st byte, and with a byte flipped at every 61st: the sync never
    fails, and the history it keeps is always a prefix (cut) or a subset (flipped) of the whole."""
    source = run_file(runs, runs.facts["beta"])
    data = source.read_bytes()
    folder = one_run(tmp_path, source, "damaged")
    (path,) = folder.rglob("run-*.wandb")
    rid = f"wandb:run/offline/fixture/{runs.facts['beta']}"
    whole = points(read(folder), rid, "loss").select("step", "value").rows()
    for at in range(0, len(data), 61):
        path.write_bytes(data[:at])
        cut = points(read(folder), rid, "loss").select("step", "value").rows()
        assert cut == whole[:len(cut)], at
        flipped = bytearray(data)
        flipped[at] ^= 0x10
        path.write_bytes(bytes(flipped))
        batch = read(folder)
        assert set(points(batch, rid, "loss").select("step", "value").rows()) <= set(whole), at
        assert batch.notes or at >= len(data) - 1, at


def test_bit_flipped_copy_loses_one_block_and_says_so(runs: Runs, tmp_path: Path) -> None:
    source = run_file(runs, runs.facts["killed"])  # a long file: many blocks
    data = bytearray(source.read_bytes())
    folder = one_run(tmp_path, source, "flipped")
    (path,) = folder.rglob("run-*.wandb")
    flip_at = 32768 * 3 + 1000
    data[flip_at] ^= 0x40
    path.write_bytes(bytes(data))
    batch = read(folder)
    corrupt = [n for n in batch.notes if "corrupt" in n]
    assert corrupt and corrupt[0].startswith(f"{path.name}: corrupt at offset ")
    rid = f"wandb:run/offline/fixture/{runs.facts['killed']}"
    whole = read(one_run(tmp_path, source, "unflipped"))
    steps, whole_steps = (set(points(b, rid, "loss")["step"].to_list()) for b in (batch, whole))
    assert steps < whole_steps  # the damaged block's rows are gone, the rest are all there
    assert len(whole_steps) - len(steps) < 200


def test_not_a_log_and_a_newer_store_version_are_notes(runs: Runs, tmp_path: Path) -> None:
    root = one_run(tmp_path, run_file(runs, runs.facts["beta"]), "mixed")
    garbage = root / "wandb" / "offline-run-20250101_000001-junk1" / "run-junk1.wandb"
    garbage.parent.mkdir()
    garbage.write_bytes(b"PK\x03\x04 definitely a zip file")
    newer = root / "wandb" / "offline-run-20250101_000002-newer1" / "run-newer1.wandb"
    newer.parent.mkdir()
    newer.write_bytes(b":W&B\xe1\xbe\x01" + bytes(100))
    empty = root / "wandb" / "offline-run-20250101_000003-empty1" / "run-empty1.wandb"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    batch = read(root)
    assert batch.tables["runs"].height == 1  # the good run is read all the same
    notes = "\n".join(batch.notes)
    assert f"{garbage}: not a W&B transaction log" in notes and "(at offset 0)" in notes
    assert f"{newer}: W&B transaction log store version 1 is not supported" in notes and "(at offset 6)" in notes
    assert f"{empty}: not a W&B transaction log: an empty file" in notes


def test_empty_folder_and_missing_path(tmp_path: Path) -> None:
    batch = read(tmp_path)
    assert batch.tables["runs"].height == 0
    assert batch.notes == [f"{tmp_path}: no runs (no run-*/offline-run-* folder holding a run-<id>.wandb file)"]
    with pytest.raises(SourceError, match=str(tmp_path / "nowhere")):
        read(tmp_path / "nowhere")


def test_latest_run_symlink_is_not_a_second_run(runs: Runs) -> None:
    assert (runs.root / "latest-run").is_symlink()
    ids = [f.run_id for f in find_run_files(runs.root)]
    assert len(ids) == len(set(ids)) + 1  # only the resumed run has two files


def test_entity_option_names_offline_runs(runs: Runs, tmp_path: Path) -> None:
    batch = read(one_run(tmp_path, run_file(runs, runs.facts["beta"])), entity="team")
    assert batch.tables["runs"]["id"].to_list() == [f"wandb:run/team/fixture/{runs.facts['beta']}"]


# -- incremental syncs ---------------------------------------------------------------------------------------

def test_unchanged_runs_are_not_read_again(runs: Runs, fresh: SourceBatch) -> None:
    second = read(runs.root, previous=again(fresh))
    assert second.partial == {"metrics"} and second.rewritten_runs == frozenset()
    assert second.tables["metrics"].height == 0  # the catalog keeps the previous rows
    for table in ("nodes", "edges", "runs", "params", "tags"):
        assert second.tables[table].equals(fresh.tables[table]), table
    assert second.state["folds"].equals(fresh.state["folds"])


def test_a_grown_file_with_summary_only_keys_and_a_new_segment_reread_only_their_run(runs: Runs, tmp_path: Path) -> None:
    root = tmp_path / "live" / "wandb"
    alpha, beta = run_file(runs, runs.facts["alpha"]), run_file(runs, runs.facts["beta"])
    for source in (alpha, beta):
        shutil.copytree(source.parent, root / source.parent.name, ignore=shutil.ignore_patterns("tmp", "logs"))
    live = root / alpha.parent.name / alpha.name
    data = alpha.read_bytes()
    live.write_bytes(data[:len(data) // 2])  # a live run, half written
    first = read(root.parent)
    rid = f"wandb:run/offline/fixture/{runs.facts['alpha']}"
    half = points(first, rid, "loss").height
    assert 0 < half < 100

    live.write_bytes(data)  # it went on and finished
    grown = read(root.parent, previous=again(first))
    # it set summary-only keys when it finished (their point sits at the last step): read whole
    assert grown.rewritten_runs == {rid} and grown.cursor["continued"] == 0
    assert points(grown, rid, "loss").height == 100 and grown.tables["metrics"]["run_id"].unique().to_list() == [rid]
    assert grown.tables["runs"].filter(pl.col("id") == rid)["status"].to_list() == ["finished"]
    assert grown.tables["runs"].height == 2

    # a resumed segment of beta appears in another folder
    segments = sorted(runs.root.glob(f"offline-run-*-{RESUMED_ID}"))
    for seg in segments:
        shutil.copytree(seg, root / seg.name, ignore=shutil.ignore_patterns("tmp", "logs"))
    resumed = f"wandb:run/offline/fixture/{RESUMED_ID}"
    after = read(root.parent, previous=again(grown))
    assert after.rewritten_runs == {resumed} and after.tables["runs"].height == 3
    assert points(after, resumed, "loss").height == 40


def merged(previous: SourceBatch, batch: SourceBatch) -> dict[str, pl.DataFrame]:
    """The catalog's tables after `batch` (as `unify.sync.merge` builds them)."""
    tables = dict(batch.tables)
    alive = batch.tables["runs"]["id"].implode()
    for name in batch.partial:
        old = previous.tables[name].filter(pl.col("run_id").is_in(alive)
                                           & ~pl.col("run_id").is_in(list(batch.rewritten_runs)))
        tables[name] = pl.concat([old, batch.tables[name]]) if name in batch.tables else old
    return tables


def assert_same_tables(got: dict[str, pl.DataFrame], want: dict[str, pl.DataFrame]) -> None:
    from polars.testing import assert_frame_equal

    for name in ("nodes", "edges", "runs", "params", "tags", "metrics"):
        a, b = got[name], want[name]
        try:
            assert_frame_equal(a.sort(a.columns), b.sort(b.columns))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


@pytest.mark.parametrize("cut", [0.3, 0.77])
def test_a_grown_resumed_segment_is_continued_reading_only_the_new_bytes(runs: Runs, tmp_path: Path,
                                                                         cut: float) -> None:
    root = tmp_path / "live" / "wandb"
    segments = sorted(runs.root.glob(f"offline-run-*-{RESUMED_ID}"))
    for seg in segments:
        shutil.copytree(seg, root / seg.name, ignore=shutil.ignore_patterns("tmp", "logs"))
    live = root / segments[-1].name / f"run-{RESUMED_ID}.wandb"
    data = live.read_bytes()
    live.write_bytes(data[:int(len(data) * cut)])  # the second segment, live: cut mid-record
    first = read(root.parent)
    rid = f"wandb:run/offline/fixture/{RESUMED_ID}"
    end = json.loads(first.state["folds"]["fold"][0])["segments"][-1]["resume_offset"]
    assert 20 < points(first, rid, "loss").height < 40

    live.write_bytes(data)
    grown = read(root.parent, previous=again(first))
    assert grown.rewritten_runs == frozenset() and grown.partial == {"metrics"}
    assert grown.cursor["continued"] == 1 and grown.cursor["read"] == 0
    # only the bytes after the old end, and the 4 KiB on each side of the old ones it checks
    assert len(data) - end <= grown.cursor["bytes_read"] <= len(data) - end + 2 * 4096
    assert 0 < grown.tables["metrics"].height < points(first, rid, "loss").height + 20
    whole = read(root.parent)
    assert_same_tables(merged(first, grown), whole.tables)
    assert grown.state["folds"]["fold"].to_list() == whole.state["folds"]["fold"].to_list()

    unchanged = read(root.parent, previous=again(grown))  # nothing new: nothing read
    assert unchanged.cursor["bytes_read"] == 0 and unchanged.rewritten_runs == frozenset()


def test_a_replaced_or_shrunk_file_is_read_whole(runs: Runs, tmp_path: Path) -> None:
    source = run_file(runs, runs.facts["killed"])
    root = one_run(tmp_path, source) / "wandb"
    live = next(root.glob("*/*.wandb"))
    data = live.read_bytes()
    live.write_bytes(data[:len(data) // 2])
    first = read(root.parent)
    rid = f"wandb:run/offline/fixture/{runs.facts['killed']}"
    end = json.loads(first.state["folds"]["fold"][0])["segments"][-1]["resume_offset"]
    # as long or longer, but other bytes just before the old end (checked: the last 4 KiB)
    changed = bytearray(data)
    changed[end - 100] ^= 0xFF
    live.write_bytes(bytes(changed))
    replaced = read(root.parent, previous=again(first))
    assert replaced.rewritten_runs == {rid} and replaced.cursor["continued"] == 0
    live.write_bytes(data[:len(data) // 3])  # shrunk
    shrunk = read(root.parent, previous=again(first))
    assert shrunk.rewritten_runs == {rid} and shrunk.cursor["continued"] == 0
    live.write_bytes(data)  # and a plain growth of the killed run (no exit record) is continued
    grown = read(root.parent, previous=again(first))
    assert grown.cursor["continued"] == 1
    assert_same_tables(merged(first, grown), read(root.parent).tables)


# -- end to end: braid sync with a W&B source and a DVC repo holding the same bytes --------------------------

def test_sync_links_a_wandb_file_to_the_dvc_out_with_the_same_bytes(runs: Runs, tmp_path: Path,
                                                                     braid_cli) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "pipeline"
    (repo / "data").mkdir(parents=True)
    shutil.copy(runs.workdir / "data" / "train.csv", repo / "data" / "train.csv")
    sh(["git", "init", "-q", "-b", "main"], repo)
    dvc = str(Path(sys.executable).parent / "dvc")
    sh([dvc, "init", "-q"], repo)
    sh([dvc, "add", "-q", "data/train.csv"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-q", "-m", "data"], repo)
    (tmp_path / "braid.toml").write_text(
        f'[[sources]]\ntool = "wandb"\npath = "{runs.root}"\n\n'
        '[[sources]]\nname = "pipeline"\ntool = "dvc"\nrepo = "pipeline"\n')
    proc = braid_cli("sync")
    assert proc.returncode == 0, proc.stderr
    md5 = runs.facts["train_md5"]
    out = braid_cli("query", "SELECT src, dst, attrs FROM edges WHERE kind = 'same_as'", "--format", "json")
    assert out.returncode == 0, out.stderr
    links = json.loads(out.stdout)
    dvc_node = f"pipeline:dataset/data/train.csv@{md5}"
    (link,) = [e for e in links if dvc_node in (e["src"], e["dst"])]
    other = link["dst"] if link["src"] == dvc_node else link["src"]
    assert other.startswith("wandb:dataset/offline/fixture/train-data:") and other.endswith("/train.csv")
    assert json.loads(link["attrs"]) == {"evidence": "digest", "digest": f"md5:{md5}",
                                         "size": runs.facts["train_size"]}
    # and the run that logged it is reached from the DVC out
    down = braid_cli("downstream", dvc_node, "--format", "json")
    assert down.returncode == 0, down.stderr
    reached = {n["id"] for n in json.loads(down.stdout)}
    assert other in reached
    again_proc = braid_cli("sync")
    assert again_proc.returncode == 0, again_proc.stderr
