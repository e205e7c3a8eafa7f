"""The DVC connector on a real DVC 2 repository (later touched by DVC 3), and on bad input.

The repository is a git bundle with its DVC cache, copied from the workplace's shared data:
its README records the facts asserted here (commits, params, DVC 2's line-ending-normalised md5).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import polars as pl
import pytest

from braid.connectors.dvc import read_source
from braid.unify.errors import SourceError
from braid.unify.source import SourceSpec, no_progress

DATA = Path(__file__).parents[1] / "data" / "dvc-repos"
DVC2_COMMIT = "2d2239500af462ecf7f0ca8a3be724faa04dd51d"
DVC3_COMMIT = "c9a3cf0eed2f969f17eeb72e5ddbaee6be2b976a"
RAW_DVC2_MD5 = "2b2889bf22971a126d3ae2366e134287"  # what DVC 2 recorded (CRLF normalised)
CLEAN_MD5 = "c6f2c9aa8f1f6a745142b46379d44e20"
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True).stdout


def clone_dvc2(where: Path, *, cache: bool = True) -> Path:
    repo = where / "pipeline"
    subprocess.run(["git", "clone", "-q", str(DATA / "dvc2-pipeline.bundle"), str(repo)], check=True)
    if cache:
        (repo / ".dvc").mkdir(exist_ok=True)
        with tarfile.open(DATA / "dvc2-pipeline-cache.tar.gz") as tar:
            tar.extractall(repo / ".dvc", filter="data")
    return repo


def read(repo: Path, name: str = "pipe", **options: object):  # type: ignore[no-untyped-def]
    return read_source(SourceSpec(name, "dvc", {"repo": str(repo), **options}), previous=None, progress=no_progress)


def repo_state(repo: Path) -> tuple[str, str, str, list[str]]:
    """What a reader must not change: status, refs, index bytes, and every path under .dvc."""
    index = hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest()
    files = sorted(str(p.relative_to(repo)) for p in (repo / ".dvc").rglob("*"))
    return git(repo, "status", "--porcelain", "--ignored"), git(repo, "show-ref"), index, files


def test_dvc2_history_executions_params_and_hashes(tmp_path: Path) -> None:
    repo = clone_dvc2(tmp_path)
    before = repo_state(repo)
    batch = read(repo)
    assert repo_state(repo) == before  # nothing written: no .dvc/tmp, no index refresh

    runs = batch.tables["runs"].sort("started_at")
    # each commit re-ran prep (the params changed): one execution per commit, at that commit
    assert runs["id"].to_list() == [f"pipe:run/{DVC2_COMMIT}/prep", f"pipe:run/{DVC3_COMMIT}/prep"]
    assert runs["git_commit"].to_list() == [DVC2_COMMIT, DVC3_COMMIT]
    params = dict(batch.tables["params"].select("run_id", "value").rows())
    assert params == {f"pipe:run/{DVC2_COMMIT}/prep": "true", f"pipe:run/{DVC3_COMMIT}/prep": "false"}

    nodes = batch.tables["nodes"]
    raw = nodes.filter(pl.col("id") == f"pipe:dataset/data/raw.csv@{RAW_DVC2_MD5}").row(0, named=True)
    # DVC 2 hashed the CRLF file after normalising line endings; the cache has the bytes, so the
    # node carries the plain md5 that W&B and MLflow would compute
    plain = hashlib.md5((repo / ".dvc/cache/2b/2889bf22971a126d3ae2366e134287").read_bytes()).hexdigest()
    assert plain == "f33f0a71eb05823d2779f0840af5da26"
    assert raw["digest"] == f"md5:{plain}" and raw["size"] == 27
    assert json.loads(raw["attrs"])["hash"] == "md5-d2u"
    clean = nodes.filter(pl.col("id") == f"pipe:dataset/data/clean.csv@{CLEAN_MD5}").row(0, named=True)
    assert clean["digest"] == f"md5:{CLEAN_MD5}" and clean["size"] == 24

    edges = set(batch.tables["edges"].select("src", "dst", "kind").rows())
    for sha in (DVC2_COMMIT, DVC3_COMMIT):
        run = f"pipe:run/{sha}/prep"
        assert (f"git:{sha}", run, "code") in edges
        assert (f"pipe:dataset/data/raw.csv@{RAW_DVC2_MD5}", run, "input") in edges
        assert (run, f"pipe:dataset/data/clean.csv@{CLEAN_MD5}", "output") in edges
    # the DVC-tracked files at each commit, for joins with trackers that name them by path
    where = batch.state["locations"].select("commit", "path", "node_id").rows()
    assert (DVC3_COMMIT, "data/raw.csv", f"pipe:dataset/data/raw.csv@{RAW_DVC2_MD5}") in where


def test_without_the_cache_dvc2_hashes_stay_normalised_and_the_report_says_so(tmp_path: Path) -> None:
    repo = clone_dvc2(tmp_path, cache=False)
    batch = read(repo)
    raw = batch.tables["nodes"].filter(pl.col("id") == f"pipe:dataset/data/raw.csv@{RAW_DVC2_MD5}")
    assert raw["digest"].to_list() == [f"md5-d2u:{RAW_DVC2_MD5}"]  # never equal to another tool's md5
    assert any("no DVC cache" in note for note in batch.notes)


def test_a_malformed_lock_in_a_past_commit_is_skipped_and_reported(tmp_path: Path) -> None:
    repo = clone_dvc2(tmp_path)
    good = (repo / "dvc.lock").read_text()
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages:\n  prep: [unclosed\n")
    git(repo, "commit", "-qam", "broken lock")
    broken = git(repo, "rev-parse", "HEAD").strip()
    (repo / "dvc.lock").write_text(good.replace("prep.upper: false", "prep.upper: true"))
    git(repo, "commit", "-qam", "fixed lock")
    fixed = git(repo, "rev-parse", "HEAD").strip()
    batch = read(repo)
    notes = [n for n in batch.notes if broken[:12] in n]
    assert len(notes) == 1 and "dvc.lock" in notes[0] and "line 4" not in notes[0]
    assert "not valid YAML" in notes[0]
    # the rest of history still syncs, including the commit after the broken one
    ids = set(batch.tables["runs"]["id"])
    assert {f"pipe:run/{DVC2_COMMIT}/prep", f"pipe:run/{DVC3_COMMIT}/prep", f"pipe:run/{fixed}/prep"} <= ids


def test_a_malformed_lock_in_the_workspace_is_an_error_naming_file_line_and_column(tmp_path: Path) -> None:
    repo = clone_dvc2(tmp_path)
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages:\n  prep:\n    cmd: [a\n")
    with pytest.raises(SourceError) as err:
        read(repo)
    message = str(err.value)
    assert f"{repo / 'dvc.lock'}:" in message and "not valid YAML" in message
    line, column = message.split(f"{repo / 'dvc.lock'}:")[1].split(":")[:2]
    assert int(line) >= 4 and int(column) >= 1


def test_workspace_changes_not_yet_committed_are_a_run_of_their_own(tmp_path: Path) -> None:
    repo = clone_dvc2(tmp_path)
    lock = (repo / "dvc.lock").read_text().replace(CLEAN_MD5, "f" * 32)
    (repo / "dvc.lock").write_text(lock)
    batch = read(repo)
    run = batch.tables["runs"].filter(pl.col("id") == "pipe:run/workspace/prep").row(0, named=True)
    assert run["status"] == "uncommitted" and run["git_commit"] == DVC3_COMMIT
    edges = set(batch.tables["edges"].select("src", "dst", "kind").rows())
    assert ("pipe:run/workspace/prep", f"pipe:dataset/data/clean.csv@{'f' * 32}", "output") in edges


@pytest.mark.parametrize("case", ["missing", "not-git", "git-without-dvc"])
def test_paths_that_are_not_dvc_repositories_get_a_clear_error(tmp_path: Path, case: str) -> None:
    target = tmp_path / "target"
    if case != "missing":
        target.mkdir()
    if case == "git-without-dvc":
        git(target, "init", "-q")
    with pytest.raises(SourceError) as err:
        read(target)
    expected = {"missing": "no such folder", "not-git": "is not a git repository",
                "git-without-dvc": "not a DVC one"}[case]
    assert expected in str(err.value) and "'pipe'" in str(err.value)


def test_a_shallow_clone_reads_what_it_has_and_says_history_is_missing(tmp_path: Path) -> None:
    full = clone_dvc2(tmp_path)
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{full}", str(shallow)], check=True)
    shutil.copytree(full / ".dvc" / "cache", shallow / ".dvc" / "cache")
    batch = read(shallow)
    assert any("shallow clone" in n for n in batch.notes)
    runs = batch.tables["runs"]
    assert runs.filter(pl.col("status") == "completed")["id"].to_list() == [f"pipe:run/{DVC3_COMMIT}/prep"]
    # the commit the clone lacks ran prep with prep.upper=true: DVC's run cache still has it
    cached = runs.filter(pl.col("status") == "cached")
    assert cached["name"].to_list() == ["prep"]
    params = batch.tables["params"].filter(pl.col("run_id") == cached["id"][0])
    assert params.select("key", "value").rows() == [("prep.upper", "true")]


def test_init_discovers_the_repo_and_sync_reads_it(tmp_path: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    clone_dvc2(tmp_path)
    init = braid_cli("init", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert 'tool = "dvc"' in (tmp_path / "braid.toml").read_text()
    assert 'repo = "pipeline"' in (tmp_path / "braid.toml").read_text()
    synced = braid_cli("sync", cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    shown = braid_cli("show", f"dvc:run/{DVC2_COMMIT}/prep", "--format", "json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "prep.upper" in shown.stdout


def test_gto_versions_described_by_artifacts_yaml(tmp_path: Path) -> None:
    """GTO's own artifacts.yaml names the model; the real `gto` writes the registry tags."""
    repo = clone_dvc2(tmp_path)
    (repo / "artifacts.yaml").write_text("cleaner:\n  type: model\n  path: data/clean.csv\n  description: the cleaned table\n")
    git(repo, "add", "artifacts.yaml")
    git(repo, "commit", "-qm", "describe the artifact")
    gto = Path(sys.executable).parent / "gto"
    subprocess.run([str(gto), "register", "cleaner", "--version", "v1.0.0"], cwd=repo, env=GIT_ENV, check=True,
                   capture_output=True)
    subprocess.run([str(gto), "assign", "cleaner", "--version", "v1.0.0", "--stage", "prod"], cwd=repo, env=GIT_ENV,
                   check=True, capture_output=True)
    tags = git(repo, "tag", "--list").split()
    assert sorted(tags) == ["cleaner#prod#1", "cleaner@v1.0.0"]
    batch = read(repo)
    row = batch.tables["registry"].row(0, named=True)
    assert (row["name"], row["version"], row["stage"]) == ("cleaner", "v1.0.0", "prod")
    assert row["model_id"] == f"pipe:model/data/clean.csv@{CLEAN_MD5}"
    assert row["run_id"] == f"pipe:run/{DVC2_COMMIT}/prep"  # the execution that first wrote those bytes
    assert [e["tag"] for e in json.loads(row["events"])] == ["cleaner@v1.0.0", "cleaner#prod#1"]
    status = batch.tables["nodes"].filter(pl.col("kind") == "model_version")["status"].to_list()
    assert status == ["registered"]

    # deprecating the artifact: GTO writes `cleaner@deprecated#N`; the version keeps its history
    subprocess.run([str(gto), "deprecate", "cleaner"], cwd=repo, env=GIT_ENV, check=True, capture_output=True)
    deprecation = [t for t in git(repo, "tag", "--list").split() if "deprecated" in t]
    assert len(deprecation) == 1
    batch = read(repo)
    row = batch.tables["registry"].row(0, named=True)
    assert [e["event"] for e in json.loads(row["events"])] == ["registration", "assignment", "deprecation"]
    assert json.loads(row["events"])[-1]["tag"] == deprecation[0]
    assert batch.tables["nodes"].filter(pl.col("kind") == "model_version")["status"].to_list() == ["deprecated"]


@pytest.mark.parametrize(("option", "value"), [("branches", "main"), ("max_commits", "ten"), ("max_commits", 0)])
def test_bad_options_are_named(tmp_path: Path, option: str, value: object) -> None:
    repo = clone_dvc2(tmp_path)
    with pytest.raises(SourceError) as err:
        read(repo, **{option: value})
    assert option in str(err.value)


def test_gto_tags_within_one_second_fold_in_the_only_possible_order() -> None:
    """Real `gto register`, `assign` and `deprecate` often land in one second, and GTO writes
    `name@deprecated` with no counter: the fold must not depend on how the tie sorts."""
    from datetime import UTC, datetime

    from braid.connectors.dvc._gto import Event, fold

    t = datetime(2026, 1, 1, tzinfo=UTC)
    events = [Event("deprecation", "cleaner", "c", "cleaner@deprecated", "a", "", t, ""),
              Event("assignment", "cleaner", "c", "cleaner#prod#1", "a", "", t, "", stage="prod", number=1),
              Event("registration", "cleaner", "c", "cleaner@v1.0.0", "a", "", t, "", version="v1.0.0")]
    (version,) = fold(events)
    assert [e.event for e in version.events] == ["registration", "assignment", "deprecation"]
    assert version.status == "deprecated"
