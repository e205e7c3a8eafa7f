"""`braid migrate` W&B -> MLflow and DVC -> MLflow against real sources and a fresh sqlite store.

W&B: run folders written by the installed wandb SDK (tests/fixtures/write_wandb_runs.py, offline,
inside a git repository) plus the committed legacy folders (3,000-step histories with NaN and
+inf, written by five SDK versions). DVC: the repositories the real git, dvc and dvclive built
(the `dvc_repos` fixture). The target is read back with braid's MLflow connector and compared
field by field with the source's normalised tables, independently of migrate's own verification.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from braid.connectors.mlflow._normalise import GIT_COMMIT, PARENT
from braid.unify.migrate import STATUS, migrate
from braid.unify.migrate._plan import SOURCE_ID_TAG, read_mlflow
from braid.unify.migrate._sources import FLOAT_MAX, SOURCE_STATUS_TAG
from braid.unify.source import SourceSpec, no_progress
from tests.conftest import DvcRepos

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
WRITER = HERE.parent / "fixtures" / "write_wandb_runs.py"
LEGACY = HERE.parent / "data" / "wandb-runs"
LEGACY_SDKS = ("sdk-0.15.12", "sdk-0.19.11")
GIT_ENV = {"GIT_AUTHOR_NAME": "braid tests", "GIT_AUTHOR_EMAIL": "tests@example.org",
           "GIT_COMMITTER_NAME": "braid tests", "GIT_COMMITTER_EMAIL": "tests@example.org"}


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **GIT_ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def wandb_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Real run folders from the wandb SDK next to the committed legacy ones, under one folder."""
    work = tmp_path_factory.mktemp("wandb-sdk")
    shutil.copy(WRITER, work / "train.py")
    sh(["git", "init", "-q", "-b", "main"], work)
    sh(["git", "remote", "add", "origin", "https://example.org/team/churn.git"], work)
    sh(["git", "add", "train.py"], work)
    sh(["git", "commit", "-q", "-m", "training script"], work)
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(work), "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    facts = json.loads(sh([sys.executable, "train.py", "main"], work, env).strip().splitlines()[-1])
    facts["commit"] = sh(["git", "rev-parse", "HEAD"], work).strip()
    for sdk in LEGACY_SDKS:  # two of the five: enough for the 3,000-step histories, and quicker
        shutil.copytree(LEGACY / sdk, work / "wandb" / "legacy" / sdk)
    return work / "wandb", facts


def _target_files(db: Path) -> list[tuple[str, str]]:
    """(path, md5) of every artifact file of the target's runs, hashed here, braid's own files aside."""
    import hashlib
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        roots = [Path(u.removeprefix("file://")) for (u,) in con.execute("SELECT artifact_uri FROM runs")]
    return [(f.relative_to(root).as_posix(), hashlib.md5(f.read_bytes()).hexdigest())
            for root in roots for f in sorted(root.rglob("*")) if f.is_file()
            and not f.relative_to(root).as_posix().startswith("braid/")]


def mlflow_target(where: Path, name: str = "ml") -> SourceSpec:
    return SourceSpec(name, "mlflow", {"uri": f"sqlite:///{where / 'target.db'}"}, base_dir=where)


def target_by_source(spec: SourceSpec, source: str) -> dict[str, pl.DataFrame]:
    """The target's graph tables, each run named by the source run node it came from."""
    graph = read_mlflow(spec).graph
    ids = {t: f"{source}:run/{s}" for t, s in graph["tags"].filter(pl.col("key") == SOURCE_ID_TAG)
           .select("node_id", "value").iter_rows()}
    out = {"runs": graph["runs"].with_columns(id=pl.col("id").replace_strict(ids, default=None))}
    for table, column in (("params", "run_id"), ("metrics", "run_id"), ("tags", "node_id")):
        out[table] = graph[table].with_columns(pl.col(column).replace_strict(ids, default=None)) \
            .filter(pl.col(column).is_not_null())
    out["edges"] = graph["edges"].with_columns(
        pl.col("src").replace_strict(ids, default=pl.col("src")), pl.col("dst").replace_strict(ids, default=pl.col("dst")))
    out["nodes"] = graph["nodes"]
    return out


def ms(t: object) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)  # type: ignore[attr-defined]


def history(frame: pl.DataFrame, run: str) -> list[tuple]:
    """(key, step, ms, value) per point, ±inf as MLflow's SQL store keeps it, NaN as a string."""
    out = []
    for key, step, ts, value in frame.filter(pl.col("run_id") == run).select("key", "step", "timestamp", "value").iter_rows():
        value = "nan" if math.isnan(value) else FLOAT_MAX if value == math.inf else -FLOAT_MAX if value == -math.inf else value
        out.append((key, step, ms(ts), value))
    return sorted(out, key=str)


def compare_runs(source: dict[str, pl.DataFrame], target: dict[str, pl.DataFrame], tool: str) -> int:
    """Every source run against its target run, field by field; returns how many were compared."""
    got = {r["id"]: r for r in target["runs"].iter_rows(named=True)}
    for run in source["runs"].iter_rows(named=True):
        rid = run["id"]
        assert rid in got, rid
        t = got[rid]
        assert t["name"] == run["name"]
        assert t["status"] == STATUS[tool][run["status"]]
        assert ms(t["started_at"]) == ms(run["started_at"]) and ms(t["ended_at"]) == ms(run["ended_at"])
        assert t["git_commit"] == run["git_commit"]
        assert t["project"] == run["project"]
        if run["user"]:
            assert t["user"] == run["user"]
        params = lambda g: dict(g["params"].filter(pl.col("run_id") == rid).select("key", "value").iter_rows())  # noqa: E731
        assert params(target) == params(source), rid
        assert history(target["metrics"], rid) == history(source["metrics"], rid), rid
        tags = dict(target["tags"].filter(pl.col("node_id") == rid).select("key", "value").iter_rows())
        assert tags[GIT_COMMIT] == run["git_commit"] if run["git_commit"] else GIT_COMMIT not in tags
        for key, value in source["tags"].filter(pl.col("node_id") == rid).select("key", "value").iter_rows():
            assert tags[key] == (value or ""), (rid, key)
        if run["status"] not in ("finished", "failed", "completed"):
            assert tags[SOURCE_STATUS_TAG] == run["status"]
    return source["runs"].height


def test_wandb_to_mlflow(wandb_folders: tuple[Path, dict], tmp_path: Path) -> None:
    from braid.connectors.wandb import read_source

    root, facts = wandb_folders
    spec = SourceSpec("wb", "wandb", {"path": str(root)}, base_dir=root.parent)
    source = read_source(spec, previous=None, progress=no_progress).tables
    target = mlflow_target(tmp_path)
    catalog = tmp_path / "catalog"

    plan = migrate(spec, target, catalog=catalog, dry_run=True)
    assert not (tmp_path / "target.db").exists()  # a dry run writes nothing
    report = migrate(spec, target, catalog=catalog, artifact_root=tmp_path / "artifacts")
    assert report.verified, report.summary()
    assert report.created["runs"] == source["runs"].height == plan.created["runs"] == 2 + len(LEGACY_SDKS)
    kinds = report.as_dict()["kinds"]
    assert kinds["param"]["carried"] == source["params"].height
    assert sum(kinds["metric_point"]["transformed"].values()) == source["metrics"].height
    assert any("±inf" in why for why in kinds["metric_point"]["transformed"])
    assert kinds["tag"]["carried"] == source["tags"].height
    # outputs are reported, not dropped silently; host and environment too
    assert kinds["dataset_output"]["not_carried"]
    assert kinds["run_detail"]["not_carried"]
    # the files of the artifacts the SDK wrote travel from its staged copies, checked against the
    # manifest's md5; only the legacy folders' files (staged on another machine) are not found
    files = _target_files(tmp_path / "target.db")
    manifest = set(source["nodes"].select(
        pl.concat_str(pl.col("attrs").str.json_path_match("$.artifact"), pl.lit("/"),
                      pl.col("attrs").str.json_path_match("$.path")),
        pl.col("digest").str.strip_prefix("md5:")).iter_rows())
    assert {("train-data/train.csv"), ("train-data/meta/labels.txt")} <= {p for p, _ in files}
    assert set(files) <= manifest and kinds["artifact"]["carried"] == len(files)
    assert report.verification["artifact"]["missing"] == 0

    got = target_by_source(target, "wb")
    assert compare_runs(source, got, "wandb") == source["runs"].height
    alpha = f"wb:run/offline/fixture/{facts['alpha']}"
    assert got["runs"].filter(pl.col("id") == alpha)["git_commit"].item() == facts["commit"]
    assert dict(got["tags"].filter(pl.col("node_id") == alpha).select("key", "value").iter_rows())["baseline"] == ""
    beta = got["runs"].filter(pl.col("id") == f"wb:run/offline/fixture/{facts['beta']}").row(0, named=True)
    assert beta["status"] == "FAILED"
    # the legacy histories: 3,000 steps with NaN and +inf, original steps kept
    legacy = got["metrics"].filter(pl.col("run_id").str.contains("/legacy/") & (pl.col("key") == "loss"))
    assert legacy["run_id"].n_unique() == len(LEGACY_SDKS)
    assert legacy.group_by("run_id").len()["len"].min() == 3000
    experiments = set(got["runs"]["project"].to_list())
    assert experiments == set(source["runs"]["project"].to_list())

    # the same migration again creates nothing
    before = read_mlflow(target).raw["runs"].height
    again = migrate(spec, target, catalog=catalog, artifact_root=tmp_path / "artifacts")
    assert again.verified
    assert not again.created.get("runs") and not again.created.get("experiments")
    assert again.reused["runs"] == source["runs"].height
    assert read_mlflow(target).raw["runs"].height == before
    # without the id map (a lost catalog), the braid.source_id tags still find every run
    shutil.rmtree(catalog)
    third = migrate(spec, target, catalog=catalog, artifact_root=tmp_path / "artifacts")
    assert not third.created.get("experiments")
    assert read_mlflow(target).raw["runs"].height == before, third.created


@pytest.mark.xdist_group("dvc")
def test_dvc_to_mlflow(dvc_repos: DvcRepos, tmp_path: Path) -> None:
    from braid.connectors.dvc import read_source

    spec = SourceSpec("pipe", "dvc", {"repo": str(dvc_repos.repo)}, base_dir=dvc_repos.root)
    source = read_source(spec, previous=None, progress=no_progress).tables
    target = mlflow_target(tmp_path)
    report = migrate(spec, target, catalog=tmp_path / "catalog", artifact_root=tmp_path / "artifacts")
    assert report.verified, report.summary()
    assert report.created["runs"] == source["runs"].height

    got = target_by_source(target, "pipe")
    compare_runs(source, got, "dvc")
    ids = source["runs"]["id"].to_list()
    experiments = [i for i in ids if i.startswith("pipe:run/exp/")]
    stages = [i for i in ids if not i.startswith("pipe:run/exp/")]
    assert experiments and stages
    # every run carries its commit; experiments and stage executions both have params and metrics
    assert got["runs"]["git_commit"].null_count() == 0
    with_params = set(got["params"]["run_id"].to_list())
    assert set(experiments) <= with_params and set(stages) & with_params
    assert set(got["metrics"]["run_id"].to_list()) & set(experiments)
    # an experiment is the parent of its stage executions
    links = source["edges"].filter(pl.col("kind") == "parent_of").select("src", "dst")
    assert links.height
    parents = dict(got["tags"].filter(pl.col("key") == PARENT).select("node_id", "value").iter_rows())
    assert len(parents) == links.height
    got_links = got["edges"].filter(pl.col("kind") == "parent_of").select("src", "dst")
    assert sorted(got_links.iter_rows()) == sorted(links.iter_rows())
    # the datasets a run read became dataset inputs with their digests
    assert report.verification is not None and report.verification["dataset_input"]["source"] > 0
    assert report.as_dict()["kinds"]["dataset_output"]["not_carried"]
    # every file the runs wrote came from the DVC cache with the md5 dvc.lock recorded, at its DVC path
    files = _target_files(tmp_path / "target.db")
    recorded = set(source["nodes"].select(pl.col("attrs").str.json_path_match("$.path"),
                                          pl.col("digest").str.strip_prefix("md5:")).iter_rows())
    assert files and set(files) <= recorded
    assert report.kinds["artifact"].carried == len(files) and not report.kinds["artifact"].not_carried

    again = migrate(spec, target, catalog=tmp_path / "catalog", artifact_root=tmp_path / "artifacts")
    assert again.verified and not again.created.get("runs")
