"""`braid demo`: the README's first command builds, syncs and answers across the workspace."""

from __future__ import annotations

import json
import subprocess

import polars as pl
import yaml

from braid.unify import open_catalog
from tests.conftest import Demo


def test_demo_builds_syncs_and_answers(demo_run: Demo, braid_cli) -> None:  # type: ignore[no-untyped-def]
    # the shared demo is `braid demo demo`, a relative folder as `make demo` gives it
    folder, answer = demo_run.folder, demo_run.answer
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True).stdout.strip()
    # the answer names the commit the training script ran at, and both datasets
    assert f"git:{head}" in answer
    assert "mlflow:dataset/train@" in answer and "mlflow:dataset/test@" in answer
    assert "mlflow:model_version/churn/2" in answer

    cat = open_catalog(folder / ".braid")
    reg = cat.table("registry").sort("version")
    assert reg["version"].to_list() == ["1", "2"] and reg["aliases"].to_list() == [[], ["champion"]]
    runs = cat.table("runs")
    # DVC: prep and baseline at the commit, the experiment cut-24 and the baseline it re-ran
    assert sorted(runs["name"].to_list()) == ["baseline", "baseline", "cut-24", "eval-cut-12", "eval-cut-18",
                                              "prep", "trial-0", "trial-1", "trial-2", "tune"]
    assert set(runs["git_commit"].to_list()) == {head}  # all three tools ran at the same commit
    assert set(runs["tool"].to_list()) == {"mlflow", "dvc", "wandb"}
    # DVC's lock records the split; MLflow names train.csv by path at the commit of that lock,
    # and each trial logged a copy of its bytes: both join the DVC out
    lock = yaml.safe_load((folder / "dvc.lock").read_text())["stages"]["prep"]
    outs = {o["path"]: o for o in lock["outs"]}
    train = f"dvc:dataset/data/train.csv@{outs['data/train.csv']['md5']}"
    same = cat.edges.filter(kind="same_as")
    by_path = same.filter(pl.col("attrs").str.contains('"evidence":"path"'))
    linked = {frozenset(pair) for pair in by_path.select("src", "dst").rows()}
    mlflow_ds = {n: i for i, n in cat.nodes.filter(tool="mlflow", kind="dataset").select("id", "name").rows()}
    assert linked == {frozenset((train, mlflow_ds["train"])),
                      frozenset((f"dvc:dataset/data/test.csv@{outs['data/test.csv']['md5']}", mlflow_ds["test"]))}
    assert {json.loads(a)["commit"] for a in by_path["attrs"]} == {head}
    copies = same.filter(pl.col("attrs").str.contains(f'"digest":"md5:{outs["data/train.csv"]["md5"]}"'))
    # the DVC out, three MLflow trials' copies and the W&B artifact file: one star of four links
    ends = set(copies["src"]) | set(copies["dst"])
    assert copies.height == 4 and train in ends
    assert [i for i in ends if i.startswith("wandb:")] == [
        i for i in cat.nodes.filter(tool="wandb", name="train.csv")["id"]]
    assert "wandb:dataset/" in answer  # the raw file's impact reaches W&B's artifact
    assert "dvc:dataset/data/raw.csv@" in answer and "dvc:run/" in answer

    again = braid_cli("demo", str(folder))
    assert again.returncode == 2 and "is not empty" in again.stderr
