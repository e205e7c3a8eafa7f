"""The DVC connector on a repository built by the real git, dvc, gto and dvclive.

Every expectation comes from the facts those tools recorded (each commit's dvc.lock, the
cache's `.dir` listing, `.dvc` files, refs/exps, GTO's tags, dvclive's files), read back by
the fixture builder: never from braid's own output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from braid.connectors.dvc import read_source
from braid.unify import open_catalog
from braid.unify.source import SourceBatch, SourceSpec, no_progress
from tests.conftest import DvcRepos

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dvc")]
MODEL = "churn-model"


def read(repo: Path, **options: Any) -> SourceBatch:
    return read_source(SourceSpec("pipe", "dvc", {"repo": str(repo), **options}), previous=None, progress=no_progress)


@pytest.fixture(scope="module")
def batch(dvc_repos: DvcRepos) -> SourceBatch:
    return read(dvc_repos.repo)


def edges(batch: SourceBatch) -> set[tuple[str, str, str]]:
    return set(batch.tables["edges"].select("src", "dst", "kind").rows())


def ends_with(nodes: set[str], suffix: str) -> str:
    """The one node id naming this `path@md5` (its kind is the connector's business)."""
    found = [n for n in nodes if n.endswith(suffix) and n.startswith("pipe:")]
    assert len(found) == 1, (suffix, found)
    return found[0]


def flat(params: dict[str, Any]) -> dict[str, str]:
    out = {}
    for file, values in params.items():
        for key, value in values.items():
            out[key if file == "params.yaml" else f"{file}:{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def repo_path(stage: str, path: str, facts: dict[str, Any]) -> str:
    wdir = facts["wdir_stages"].get(stage)
    return os.path.normpath(os.path.join(wdir, path)) if wdir else path


def executed(facts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """run id -> lock entry, for each stage whose entry changed from the previous lock commit
    of its branch (the facts list main's commits in order, then the feature branch's)."""
    runs, previous = {}, {}
    main = [c for c in facts["lock_commits"] if c["branch"] == "main"]
    for commit in facts["lock_commits"]:
        parent = previous if commit["branch"] == "main" else main[-1]["stages"]
        for stage, entry in commit["stages"].items():
            if parent.get(stage) != entry:
                runs[f"pipe:run/{commit['sha']}/{stage}"] = entry
        if commit["branch"] == "main":
            previous = commit["stages"]
    return runs


def test_each_lock_commit_is_the_executions_it_records(dvc_repos: DvcRepos, batch: SourceBatch) -> None:
    facts = dvc_repos.facts
    expected = executed(facts)
    runs = batch.tables["runs"].filter(pl.col("id").is_in(list(expected)))
    assert set(runs["id"]) == set(expected)
    stage_runs = {r for r in batch.tables["runs"]["id"] if r.split("/")[1] in {c["sha"] for c in facts["lock_commits"]}}
    assert stage_runs == set(expected)  # nothing for stages a commit did not change
    nodes, links = set(batch.tables["nodes"]["id"]), edges(batch)
    params = batch.tables["params"]
    for run_id, entry in expected.items():
        stage = run_id.split("/", 2)[2]
        commit = run_id.split("/")[1]
        assert (f"git:{commit}", run_id, "code") in links
        for dep in entry["deps"]:
            assert (ends_with(nodes, f"/{repo_path(stage, dep['path'], facts)}@{dep['md5']}"), run_id, "input") in links
        for out in entry["outs"]:
            assert (run_id, ends_with(nodes, f"/{repo_path(stage, out['path'], facts)}@{out['md5']}"), "output") in links
        recorded = dict(params.filter(pl.col("run_id") == run_id).select("key", "value").rows())
        for key, value in flat(entry["params"]).items():
            assert recorded[key] == value


def test_foreach_matrix_frozen_and_wdir_stages(dvc_repos: DvcRepos, batch: SourceBatch) -> None:
    facts = dvc_repos.facts
    names = set(batch.tables["runs"]["name"])
    assert set(facts["expanded_stages"]["foreach"]) | set(facts["expanded_stages"]["matrix"]) <= names
    first = facts["lock_commits"][0]["sha"]
    nodes = batch.tables["nodes"].filter(pl.col("kind") == "run")
    attrs = {i: json.loads(a) for i, a in nodes.select("id", "attrs").rows()}
    for stage in facts["frozen_stages"]:
        # a frozen stage never runs again: its one execution keeps the definition of its commit
        runs = [i for i in attrs if i.endswith(f"/{stage}")]
        assert runs == [f"pipe:run/{first}/{stage}"]
        shown = subprocess.run(["git", "show", f"{first}:dvc.yaml"], cwd=dvc_repos.repo, capture_output=True,
                               text=True, check=True).stdout
        assert attrs[runs[0]]["frozen"] is bool(yaml.safe_load(shown)["stages"][stage].get("frozen", False))
    latest = read(dvc_repos.repo)  # the workspace's dvc.yaml freezes it now
    assert yaml.safe_load((dvc_repos.repo / "dvc.yaml").read_text())["stages"][facts["frozen_stages"][0]]["frozen"]
    assert latest.tables["runs"].filter(pl.col("name") == facts["frozen_stages"][0]).height == 1
    for stage, wdir in facts["wdir_stages"].items():
        assert attrs[f"pipe:run/{first}/{stage}"]["wdir"] == wdir


def test_sizes_and_digests_are_the_lock_files(dvc_repos: DvcRepos, batch: SourceBatch) -> None:
    head = dvc_repos.facts["lock_commits"][-1]
    rows = {r["id"]: r for r in batch.tables["nodes"].iter_rows(named=True)}
    for name, entry in head["stages"].items():
        for item in entry["deps"] + entry["outs"]:
            node = rows[ends_with(set(rows), f"/{repo_path(name, item['path'], dvc_repos.facts)}@{item['md5']}")]
            assert node["size"] == item["size"]
            md5 = item["md5"]
            assert node["digest"] == (f"md5-dir:{md5.removesuffix('.dir')}" if md5.endswith(".dir") else f"md5:{md5}")


def test_a_directory_expands_to_its_files_from_the_cache(dvc_repos: DvcRepos, batch: SourceBatch) -> None:
    images = dvc_repos.facts["images"]
    directory = f"pipe:dataset/{images['workspace_path']}@{images['md5']}"
    rows = {r["id"]: r for r in batch.tables["nodes"].iter_rows(named=True)}
    assert rows[directory]["digest"] == f"md5-dir:{images['md5'].removesuffix('.dir')}"
    parts = {s for s, d, k in edges(batch) if d == directory and k == "part_of"}
    expected = {f"pipe:dataset/{images['workspace_path']}/{f['relpath']}@{f['md5']}": f for f in images["files"]}
    assert parts == set(expected)
    for node, file in expected.items():
        assert rows[node]["digest"] == f"md5:{file['md5']}" and rows[node]["size"] == file["size"]


def test_without_the_cache_a_directory_keeps_its_hash_and_the_report_says_so(
        dvc_repos: DvcRepos, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(dvc_repos.repo, copy, symlinks=True)
    shutil.rmtree(copy / ".dvc" / "cache")
    batch = read(copy)
    images = dvc_repos.facts["images"]
    directory = f"pipe:dataset/{images['workspace_path']}@{images['md5']}"
    assert directory in set(batch.tables["nodes"]["id"])
    assert not [e for e in edges(batch) if e[1] == directory and e[2] == "part_of"]
    assert any("no DVC cache" in n and "directory" in n for n in batch.notes)


def test_imports_keep_the_source_commit_and_the_url(dvc_repos: DvcRepos, batch: SourceBatch) -> None:
    imp, url = dvc_repos.facts["import"], dvc_repos.facts["import_url"]
    rows = {r["id"]: r for r in batch.tables["nodes"].iter_rows(named=True)}
    source = f"pipe:dataset/{imp['repo_url']}/{imp['source_path']}@{imp['rev_lock']}"
    assert rows[source]["digest"] == f"md5:{imp['source_md5']}"
    assert json.loads(rows[source]["attrs"])["repo"]["rev_lock"] == imp["rev_lock"]
    fetched = f"pipe:dataset/{imp['workspace_path']}@{imp['md5']}"
    importers = {d for s, d, k in edges(batch) if s == source and k == "input"}
    assert len(importers) == 1 and (importers.pop(), fetched, "output") in edges(batch)
    remote = f"pipe:dataset/{url['url']}@{url['url_md5']}"
    assert rows[remote]["uri"] == url["url"] and rows[remote]["digest"] == f"md5:{url['url_md5']}"


def test_experiments_are_runs_on_their_baseline(dvc_repos: DvcRepos, batch: SourceBatch) -> None:
    runs = {r["id"]: r for r in batch.tables["runs"].iter_rows(named=True)}
    links = edges(batch)
    for exp in dvc_repos.facts["experiments"]:
        run_id = f"pipe:run/exp/{exp['sha']}"
        assert runs[run_id]["name"] == exp["name"] and runs[run_id]["git_commit"] == exp["baseline"]
        assert (f"git:{exp['baseline']}", run_id, "code") in links
        params = dict(batch.tables["params"].filter(pl.col("run_id") == run_id).select("key", "value").rows())
        assert {k: params[k] for k in exp["params_changed"]} == {k: json.dumps(v) for k, v in exp["params_changed"].items()}
        metrics = batch.tables["metrics"].filter(pl.col("run_id") == run_id)
        latest = dict(metrics.sort("step").group_by("key", maintain_order=True).last().select("key", "value").rows())
        assert {k: latest[k] for k in exp["metrics"]} == pytest.approx(exp["metrics"])
        # the stages it re-ran are its children, with the hashes of their outputs
        train = f"pipe:run/{exp['sha']}/train"
        assert (run_id, train, "parent_of") in links
        model = next(o for o in exp["stages"]["train"]["outs"] if o["path"] == "models/model.pkl")
        assert (train, f"pipe:model/models/model.pkl@{model['md5']}", "output") in links


def test_dvclive_history_and_params_feed_the_run(dvc_repos: DvcRepos, batch: SourceBatch) -> None:
    live = dvc_repos.facts["dvclive"]
    head = dvc_repos.facts["branches"]["main"]
    train = [c for c in dvc_repos.facts["lock_commits"] if c["branch"] == "main" and f"pipe:run/{c['sha']}/train"
             in set(batch.tables["runs"]["id"])][-1]["sha"]
    run_id = f"pipe:run/{train}/train"
    metrics = batch.tables["metrics"].filter(pl.col("run_id") == run_id)
    for key, points in live["history"].items():
        got = metrics.filter(pl.col("key") == key).sort("step").select("step", "value").rows()
        assert got == [(p["step"], pytest.approx(p["value"])) for p in points]
    assert "step" not in set(metrics["key"])  # dvclive's own counter is not a metric
    params = dict(batch.tables["params"].filter(pl.col("run_id") == run_id).select("key", "value").rows())
    assert {k: params[k] for k in live["params"]} == {k: json.dumps(v) for k, v in live["params"].items()}
    assert head  # the train run read is on main


def test_gto_versions_stages_and_their_history(dvc_repos: DvcRepos, batch: SourceBatch) -> None:
    facts = dvc_repos.facts
    tags = facts["gto_tags"]
    registry = {r["version"]: r for r in batch.tables["registry"].iter_rows(named=True)}
    registered = {t["tag"].split("@")[1]: t for t in tags if "@v" in t["tag"] and not t["tag"].endswith("!")}
    assert set(registry) == set(registered)
    locks = {c["sha"]: c for c in facts["lock_commits"]}
    for version, tag in registered.items():
        row = registry[version]
        model_md5 = next(o["md5"] for o in locks[tag["target"]]["stages"]["train"]["outs"]
                         if o["path"] == facts["artifacts"][MODEL]["path"])
        assert row["model_id"] == f"pipe:model/models/model.pkl@{model_md5}"
        assert (row["model_id"], row["model_version_id"], "registered_as") in edges(batch)
        # every tag about this version, in order, with who and when
        events = json.loads(row["events"])
        about = [t for t in tags if t["target"] == tag["target"]]
        assert [e["tag"] for e in events] == [t["tag"] for t in about]
        assert [(e["author"], e["time"]) for e in events] == [(t["tagger"], t["date"]) for t in about]
    # deregistered v0.1.0 (`@v0.1.0!`); prod holds v0.2.0; staging was assigned then unassigned
    nodes = {r["id"]: r for r in batch.tables["nodes"].iter_rows(named=True)}
    assert nodes[f"pipe:model_version/{MODEL}/v0.1.0"]["status"] == "deregistered"
    assert registry["v0.1.0"]["stage"] is None and registry["v0.2.0"]["stage"] == "prod"
    assert [e["event"] for e in json.loads(registry["v0.1.0"]["events"])] == [
        "registration", "assignment", "unassignment", "deregistration"]


def test_branches_and_commit_limit(dvc_repos: DvcRepos) -> None:
    feature = dvc_repos.facts["commits"]["feature"]
    only_main = read(dvc_repos.repo, branches=["main"])
    assert not [r for r in only_main.tables["runs"]["id"] if feature in r]
    newest = read(dvc_repos.repo, max_commits=1)
    commits = {r.split("/")[1] for r in newest.tables["runs"]["id"] if not r.startswith("pipe:run/exp/")}
    main_head = dvc_repos.facts["branches"]["main"]
    exp_commits = {e["sha"] for e in dvc_repos.facts["experiments"]}
    assert commits - exp_commits in ({main_head}, {feature})


def test_a_sync_leaves_the_repository_exactly_as_it_was(dvc_repos: DvcRepos) -> None:
    repo = dvc_repos.repo

    def state() -> tuple[str, ...]:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout
        index = hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest()
        dvc = sorted(f"{p.relative_to(repo)}:{p.stat().st_mtime_ns}" for p in (repo / ".dvc").rglob("*"))
        return git("status", "--porcelain", "--ignored"), git("show-ref"), index, "\n".join(dvc)

    before = state()
    read(repo)
    assert state() == before  # .dvc/tmp included: no new file, no touched one


def test_two_repos_join_on_the_import_and_mlflow_joins_by_path_and_commit(
        dvc_repos: DvcRepos, tmp_path: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    """An MLflow run inside a copy of the repo names a DVC out by its absolute path: at the run's
    commit, that is the version dvc.lock records; the import joins the source repo's file."""
    repo = tmp_path / "repo"
    shutil.copytree(dvc_repos.repo, repo, symlinks=True)
    script = repo / "log_run.py"
    script.write_text(
        "import sys, mlflow, pandas as pd\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "path = sys.argv[2]\n"
        "ds = mlflow.data.from_pandas(pd.read_csv(path), source=path, name='train-split')\n"
        "with mlflow.start_run(run_name='notebook'):\n"
        "    mlflow.log_input(ds, context='training')\n")
    train = repo / "data" / "split" / "train.csv"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, str(script), f"sqlite:///{tmp_path / 'mlflow.db'}", str(train)],
                   cwd=repo, check=True, capture_output=True, env=env)
    (tmp_path / "braid.toml").write_text(
        f'[[sources]]\nname = "pipe"\ntool = "dvc"\nrepo = "{repo}"\n\n'
        f'[[sources]]\nname = "upstream"\ntool = "dvc"\nrepo = "{dvc_repos.source_repo}"\n\n'
        f'[[sources]]\nname = "mlflow"\ntool = "mlflow"\nuri = "sqlite:///{tmp_path / "mlflow.db"}"\n')
    proc = braid_cli("sync", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cat = open_catalog(tmp_path / ".braid")
    same = cat.edges.filter(kind="same_as")
    evidence = {frozenset((s, d)): json.loads(a) for s, d, a in same.select("src", "dst", "attrs").rows()}

    head = dvc_repos.facts["branches"]["main"]
    prep = next(c for c in reversed(dvc_repos.facts["lock_commits"]) if c["branch"] == "main")["stages"]["prep"]
    md5 = next(o["md5"] for o in prep["outs"] if o["path"] == "data/split/train.csv")
    dataset = cat.nodes.filter(tool="mlflow", kind="dataset")["id"][0]
    link = evidence[frozenset((dataset, f"pipe:dataset/data/split/train.csv@{md5}"))]
    assert link == {"evidence": "path", "path": "data/split/train.csv", "commit": head}

    imp = dvc_repos.facts["import"]
    theirs = f"upstream:dataset/{imp['source_path']}@{imp['source_md5']}"
    ours = f"pipe:dataset/{imp['repo_url']}/{imp['source_path']}@{imp['rev_lock']}"
    assert evidence[frozenset((theirs, ours))]["evidence"] == "digest"
    # impact across tools: the source repo's raw file reaches the MLflow run
    reached = set(cat.downstream(theirs, kinds=["run"])["id"])
    mlflow_run = cat.table("runs").filter(tool="mlflow")["id"][0]
    assert mlflow_run in reached and f"pipe:run/{dvc_repos.facts['commits']['initial']}/prep" in reached
