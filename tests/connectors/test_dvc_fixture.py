"""The DVC fixture builds what it claims: checked against the repository itself, not only its facts.

`make_dvc_repos` (tests/fixtures/make_dvc_repo.py) runs git, dvc, gto and dvclive once per
session (~25 s). These tests read the built repository through git and plain files and compare
with the facts the builder recorded; none of them writes to the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DvcRepos
from tests.fixtures.make_dvc_repo import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dvc")]


def git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", *args], cwd=repo, env={**env, "GIT_CONFIG_NOSYSTEM": "1"},
                          capture_output=True, text=True, check=True).stdout


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_worktree_clean_and_cache_present(dvc_repos: DvcRepos) -> None:
    assert git(dvc_repos.repo, "status", "--porcelain") == ""
    assert git(dvc_repos.repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert (dvc_repos.repo / ".dvc" / "cache" / "files" / "md5").is_dir()
    assert dvc_repos.facts["run_cache_entries"] > 0
    assert json.loads((dvc_repos.root / "facts.json").read_text()) == dvc_repos.facts


def test_lock_history(dvc_repos: DvcRepos) -> None:
    facts = dvc_repos.facts
    main = git(dvc_repos.repo, "rev-list", "--reverse", "main", "--", "dvc.lock").split()
    feature = git(dvc_repos.repo, "rev-list", "main..feature", "--", "dvc.lock").split()
    assert len(main) >= 4 and len(feature) == 1
    assert [c["sha"] for c in facts["lock_commits"]] == main + feature
    assert [c["branch"] for c in facts["lock_commits"]] == ["main"] * len(main) + ["feature"]
    # each commit is a distinct execution: params or data differ from the previous one
    trains = [c["stages"]["train"] for c in facts["lock_commits"]]
    assert [t["params"]["params.yaml"]["train.lr"] for t in trains[:2]] == [0.1, 0.05]
    raw = [next(d["md5"] for d in c["stages"]["prep"]["deps"] if d["path"] == "data/raw.csv")
           for c in facts["lock_commits"]]
    assert raw[1] != raw[2] and raw[2] == raw[3]
    assert len({c["date"] for c in facts["lock_commits"]}) == len(facts["lock_commits"])


def test_head_lock_matches_workspace(dvc_repos: DvcRepos) -> None:
    """The facts' hashes at main's HEAD are the bytes on disk (cached outs are checked out)."""
    head = dvc_repos.facts["lock_commits"][len(git(dvc_repos.repo, "rev-list", "main", "--", "dvc.lock").split()) - 1]
    assert head["sha"] == dvc_repos.facts["branches"]["main"]
    wdirs = dvc_repos.facts["wdir_stages"]
    checked = 0
    for name, stage in head["stages"].items():
        base = dvc_repos.repo / wdirs.get(name, ".")
        for entry in stage["deps"] + stage["outs"]:
            if not entry["md5"].endswith(".dir"):
                assert md5(base / entry["path"]) == entry["md5"], (name, entry["path"])
                checked += 1
    assert checked > 20
    assert head["stages"]["report"]["deps"][0]["path"] == "../metrics.json"


def test_expanded_and_frozen_stages(dvc_repos: DvcRepos) -> None:
    facts = dvc_repos.facts
    assert facts["expanded_stages"] == {"foreach": ["featurize@train", "featurize@test"],
                                        "matrix": ["evaluate@train-acc", "evaluate@test-acc"]}
    assert facts["frozen_stages"] == ["vocab"]
    # the frozen stage keeps its (unchanged) entry in every later dvc.lock
    assert len({json.dumps(c["stages"]["vocab"], sort_keys=True) for c in facts["lock_commits"]}) == 1


def test_directory_hash_is_the_listing(dvc_repos: DvcRepos) -> None:
    images = dvc_repos.facts["images"]
    listing = dvc_repos.repo / ".dvc" / "cache" / "files" / "md5" / images["md5"][:2] / images["md5"][2:]
    assert f"{md5(listing)}.dir" == images["md5"]
    assert images["nfiles"] == len(images["files"]) == 3
    for f in images["files"]:
        path = dvc_repos.repo / images["workspace_path"] / f["relpath"]
        assert (md5(path), path.stat().st_size) == (f["md5"], f["size"])


def test_imports(dvc_repos: DvcRepos) -> None:
    imp, url = dvc_repos.facts["import"], dvc_repos.facts["import_url"]
    assert imp["repo_url"] == str(dvc_repos.source_repo)
    assert imp["rev_lock"] == git(dvc_repos.source_repo, "rev-parse", "HEAD").strip()
    assert imp["md5"] == imp["source_md5"] == md5(dvc_repos.source_repo / "data" / "raw.csv")
    assert url["url"] == str(dvc_repos.root / "external" / "lookup.csv")
    assert url["url_md5"] == url["md5"] == md5(Path(url["url"]))


def test_experiments_are_refs_not_applied(dvc_repos: DvcRepos) -> None:
    facts, main = dvc_repos.facts, dvc_repos.facts["branches"]["main"]
    exps = {e["name"]: e for e in facts["experiments"]}
    assert set(exps) == {"exp-lr-02", "exp-lr-03"}
    refs = git(dvc_repos.repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    assert sorted(refs) == sorted(f"refs/exps/{main[:2]}/{main[2:]}/{n}" for n in exps)
    assert all(e["baseline"] == e["parent"] == main for e in exps.values())
    assert exps["exp-lr-02"]["params_changed"] == {"train.lr": 0.2}
    assert exps["exp-lr-03"]["params_changed"] == {"train.lr": 0.3, "train.epochs": 4}
    assert exps["exp-lr-03"]["stages"]["train"]["params"]["params.yaml"]["train.epochs"] == 4
    workspace = yaml.safe_load((dvc_repos.repo / "params.yaml").read_text())
    assert workspace["train"]["lr"] == 0.05


def test_gto_tags(dvc_repos: DvcRepos) -> None:
    facts = dvc_repos.facts
    tags = {t["tag"]: t for t in facts["gto_tags"]}
    assert list(tags) == [f"{MODEL}@v0.1.0", f"{MODEL}@v0.2.0", f"{MODEL}#staging#1", f"{MODEL}#prod#2",
                          f"{MODEL}#staging!#3", f"{MODEL}@v0.1.0!"]
    assert all(t["annotated"] and t["tagger"] == "braid fixture" for t in tags.values())
    assert tags[f"{MODEL}@v0.1.0"]["target"] == facts["commits"]["lr"]
    assert tags[f"{MODEL}@v0.2.0"]["target"] == tags[f"{MODEL}#prod#2"]["target"] == facts["branches"]["main"]
    assert facts["gto_index"] == "dvc.yaml" and not (dvc_repos.repo / "artifacts.yaml").exists()
    assert facts["artifacts"][MODEL] == {"type": "model", "path": "models/model.pkl",
                                         "desc": "Churn classifier", "labels": ["churn"]}


def test_gto_reads_the_registry(dvc_repos: DvcRepos) -> None:
    from gto.api import show

    # GTO finds the artifact from its tags alone (no artifacts.yaml); staging was unassigned
    assert show(str(dvc_repos.repo), table=False) == {
        MODEL: {"version": "v0.2.0", "stage": {"prod": "v0.2.0"}, "registered": True, "active": True}}
    assert git(dvc_repos.repo, "status", "--porcelain") == ""


def test_dvclive_history(dvc_repos: DvcRepos) -> None:
    live = dvc_repos.facts["dvclive"]
    epochs = live["params"]["epochs"]
    assert {m: [p["step"] for p in h] for m, h in live["history"].items()} == {
        "acc": list(range(epochs)), "loss": list(range(epochs))}
    assert live["metrics"]["loss"] == live["history"]["loss"][-1]["value"]
    assert live["metrics"]["step"] == epochs - 1
    # dvclive added its files to dvc.yaml's top level while `dvc repro` ran it
    assert dvc_repos.facts["dvc_yaml_top_level"]["metrics"] == ["dvclive/metrics.json"]
    train_outs = {o["path"]: o for o in dvc_repos.facts["lock_commits"][-1]["stages"]["train"]["outs"]}
    assert train_outs["dvclive/plots/metrics"]["nfiles"] == 2
