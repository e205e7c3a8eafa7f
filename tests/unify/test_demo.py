"""`braid demo`: the README's first command builds, syncs and answers across the workspace."""

from __future__ import annotations

import subprocess
from pathlib import Path

from braid.unify import open_catalog


def test_demo_builds_syncs_and_answers(tmp_path: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "demo"
    proc = braid_cli("demo", str(folder))
    assert proc.returncode == 0, proc.stderr
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True).stdout.strip()
    # the answer names the commit the training script ran at, and both datasets
    assert f"git:{head}" in proc.stdout
    assert "mlflow:dataset/train@" in proc.stdout and "mlflow:dataset/test@" in proc.stdout
    assert "mlflow:model_version/churn/2" in proc.stdout

    cat = open_catalog(folder / ".braid")
    reg = cat.table("registry").sort("version")
    assert reg["version"].to_list() == ["1", "2"] and reg["aliases"].to_list() == [[], ["champion"]]
    runs = cat.table("runs")
    assert sorted(runs["name"].to_list()) == ["trial-0", "trial-1", "trial-2", "tune"]
    assert set(runs["git_commit"].to_list()) == {head}
    # each trial logged the same train.csv: its copies are linked by their bytes
    same = cat.edges.filter(kind="same_as")
    assert same.height == 2
    assert (folder / "data" / "train.csv").stat().st_size in cat.nodes.filter(kind="artifact")["size"].to_list()

    again = braid_cli("demo", str(folder))
    assert again.returncode == 2 and "is not empty" in again.stderr
