"""`braid demo`: a realistic workspace written by the real tools, synced, and one lineage answer.

The workspace is a git repository with a DVC pipeline and a training script that logs to MLflow:
- DVC tracks `data/raw.csv` (`dvc add`), and its stage `prep` splits it into `data/train.csv`
  and `data/test.csv` (`dvc repro`, committed);
- at that commit, `train.py` logs to MLflow (sqlite store) with the real mlflow client, as its
  own process so MLflow records the git commit as it would for a user: a tuning run with nested
  trials, the two DVC outs as dataset inputs (by path) and as artifacts (by bytes), metric
  history, logged models, and two registered versions of `churn` with the alias `champion`.
So the answer to "what produced churn v2?" runs from MLflow's registry back through DVC's
pipeline to the raw file, and the raw file's impact reaches MLflow's registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from .errors import UsageError

RAW_CSV = "customer_id,tenure,monthly,churned\n" + "".join(
    f"{i},{i % 48},{20 + (i * 7) % 80}.5,{int(i % 5 == 0)}\n" for i in range(260)
)

PREP_PY = '''\
"""Split the raw customers into train and test sets."""
import sys

rows = open("data/raw.csv").read().splitlines(keepends=True)
cut = int(1 + (len(rows) - 1) * float(sys.argv[1]))
open("data/train.csv", "w").write("".join(rows[:cut]))
open("data/test.csv", "w").write(rows[0] + "".join(rows[cut:]))
'''

DVC_YAML = '''\
stages:
  prep:
    cmd: python prep.py ${prep.split}
    deps:
      - data/raw.csv
      - prep.py
    params:
      - prep.split
    outs:
      - data/train.csv
      - data/test.csv
'''

TRAIN_PY = '''\
"""Train churn models: a tuning run with nested trials, logged to MLflow."""
import mlflow
import pandas as pd

mlflow.set_tracking_uri("sqlite:///mlflow.db")
mlflow.set_registry_uri("sqlite:///mlflow.db")
mlflow.set_experiment("churn")


class Threshold(mlflow.pyfunc.PythonModel):
    def __init__(self, cut):
        self.cut = cut

    def predict(self, context, model_input):
        return (model_input["tenure"] < self.cut).astype(int)


train, test = pd.read_csv("data/train.csv"), pd.read_csv("data/test.csv")
train_ds = mlflow.data.from_pandas(train, source="data/train.csv", name="train", targets="churned")
test_ds = mlflow.data.from_pandas(test, source="data/test.csv", name="test", targets="churned")
models = []
with mlflow.start_run(run_name="tune") as parent:
    mlflow.set_tags({"team": "retention", "stage": "tuning"})
    for trial, (lr, cut) in enumerate([(0.1, 6), (0.03, 12), (0.01, 18)]):
        with mlflow.start_run(run_name=f"trial-{trial}", nested=True) as run:
            mlflow.log_params({"lr": lr, "cut": cut, "epochs": 20})
            mlflow.log_input(train_ds, context="training")
            mlflow.log_input(test_ds, context="evaluation")
            for step in range(20):
                mlflow.log_metric("loss", 1.0 / (1 + lr * 10 * (step + 1)), step=step)
            acc = float(((test["tenure"] < cut).astype(int) == test["churned"]).mean())
            mlflow.log_metric("accuracy", acc)
            mlflow.log_artifact("data/train.csv", "data")  # the DVC out's bytes
            if trial > 0:
                info = mlflow.pyfunc.log_model(name="model", python_model=Threshold(cut), input_example=test.head(3))
                models.append(info.model_uri)
    mlflow.log_metric("best_accuracy", acc)
for uri in models:
    mlflow.register_model(uri, "churn")
client = mlflow.MlflowClient()
client.set_registered_model_alias("churn", "champion", "2")
client.set_model_version_tag("churn", "2", "validated", "true")
print(parent.info.run_id)
'''

BRAID_TOML = '''\
# braid.toml for the demo workspace
catalog = ".braid"

[[sources]]
name = "mlflow"
tool = "mlflow"
uri = "sqlite:///mlflow.db"

[[sources]]
name = "dvc"
tool = "dvc"
repo = "."
'''

GIT_ENV = {"GIT_AUTHOR_NAME": "braid demo", "GIT_AUTHOR_EMAIL": "demo@example.org",
           "GIT_COMMITTER_NAME": "braid demo", "GIT_COMMITTER_EMAIL": "demo@example.org"}


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "PYTHONWARNINGS": "ignore",
           "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise UsageError(f"demo step {' '.join(cmd[:2])} failed: {' | '.join(tail)}")
    return proc.stdout


def build_workspace(folder: Path) -> None:
    """Write the demo repository, run its DVC pipeline with the real dvc, commit, and run the
    training script with the real mlflow client at that commit."""
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder} is not empty", hint="give the demo a new folder: braid demo DIR")
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "raw.csv").write_text(RAW_CSV)
    (folder / "prep.py").write_text(PREP_PY)
    (folder / "train.py").write_text(TRAIN_PY)
    (folder / "dvc.yaml").write_text(DVC_YAML)
    (folder / "params.yaml").write_text("prep:\n  split: 0.75\n")
    (folder / ".gitignore").write_text("mlflow.db\nmlruns/\n.braid/\n")
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q", "-b", "main"], folder)
    _run([*dvc, "init", "-q"], folder)
    _run([*dvc, "add", "-q", "data/raw.csv"], folder)
    _run(["git", "add", "."], folder)
    _run(["git", "commit", "-q", "-m", "churn data and pipeline"], folder)
    _run([*dvc, "repro", "-q"], folder)
    _run(["git", "add", "."], folder)
    _run(["git", "commit", "-q", "-m", "prep: split 0.75"], folder)
    _run([sys.executable, "train.py"], folder)
    (folder / "braid.toml").write_text(BRAID_TOML)


def run_demo(folder: Path, *, progress: bool = True) -> None:
    """Build, sync and answer: what produced churn v2, and what did the training data feed?"""
    import polars as pl

    from .catalog import open_catalog
    from .config import load_config
    from .output import emit
    from .progress import progress_display
    from .sync import sync

    click.echo(f"building the demo workspace in {folder} (git, dvc and the real mlflow client)...")
    build_workspace(folder)
    config = load_config(folder / "braid.toml")
    with progress_display(enabled=progress) as report:
        result = sync(config, progress=report)
    click.echo(f"synced {', '.join(s.name for s in result.sources)} into {result.catalog} "
               f"(generation {result.generation}, {result.same_as} same_as links)\n")
    cat = open_catalog(config.catalog)
    version = "mlflow:model_version/churn/2"
    click.echo(f"$ braid upstream {version} --kinds run,dataset,code,model")
    emit(cat.upstream(version, kinds=["run", "dataset", "code", "model"])
         .select("depth", "kind", "name", "id", "via_kind"), "table")
    raw = cat.nodes.filter((pl.col("tool") == "dvc") & (pl.col("name") == "raw.csv"))["id"][0]
    click.echo(f"\n$ braid downstream {raw} --kinds model_version")
    emit(cat.downstream(raw, kinds=["model_version"]).select("depth", "name", "version", "id"), "table")
    click.echo(f"\nexplore: cd {folder} && braid show {version}")
