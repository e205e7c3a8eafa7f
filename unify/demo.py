"""`braid demo`: a realistic workspace written by the real tools, synced, and one lineage answer.

The workspace is a git repository with a DVC pipeline and a training script that logs to MLflow:
- DVC tracks `data/raw.csv` (`dvc add`), its stage `prep` splits it into `data/train.csv`
  and `data/test.csv`, and `baseline` scores a tenure threshold on the test split into
  `baseline.json` (`dvc repro`, committed); `dvc exp run` tries another threshold;
- at that commit, `train.py` logs to MLflow (sqlite store) with the real mlflow client, as its
  own process so MLflow records the git commit as it would for a user: a tuning run with nested
  trials, the two DVC outs as dataset inputs (by path) and as artifacts (by bytes), metric
  history, logged models, and two registered versions of `churn` with the alias `champion`.
- at the same commit, `evaluate.py` logs two offline W&B runs with the real wandb SDK: each
  evaluates a threshold on the test split and logs the DVC train split as a `dataset` artifact.
So the answer to "what produced churn v2?" runs from MLflow's registry back through DVC's
pipeline to the raw file, and the raw file's impact reaches MLflow's registry and the W&B
artifacts holding the same bytes.
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

BASELINE_PY = '''\
"""Score the baseline rule (churn when tenure < cut) on the test split."""
import json

import pandas as pd
import yaml

cut = yaml.safe_load(open("params.yaml"))["baseline"]["cut"]
test = pd.read_csv("data/test.csv")
json.dump({"accuracy": float(((test["tenure"] < cut).astype(int) == test["churned"]).mean())},
          open("baseline.json", "w"))
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
  baseline:
    cmd: python baseline.py
    deps:
      - data/test.csv
      - baseline.py
    params:
      - baseline.cut
    metrics:
      - baseline.json:
          cache: false
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

EVALUATE_PY = '''\
"""Evaluate thresholds on the test split, logged to W&B offline (no account needed)."""
import pandas as pd
import wandb

test = pd.read_csv("data/test.csv")
for cut, lr in [(12, 0.03), (18, 0.01)]:
    run = wandb.init(project="churn", name=f"eval-cut-{cut}", job_type="evaluate", config={"cut": cut, "lr": lr})
    for step, frac in enumerate([0.25, 0.5, 1.0]):
        part = test.head(int(len(test) * frac))
        run.log({"accuracy": float(((part["tenure"] < cut).astype(int) == part["churned"]).mean())}, step=step)
    split = wandb.Artifact("churn-train", type="dataset", metadata={"source": "dvc: data/train.csv"})
    split.add_file("data/train.csv", name="train.csv")  # the DVC out's bytes
    run.log_artifact(split)
    run.finish()
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

[[sources]]
name = "wandb"
tool = "wandb"
path = "wandb"
'''

GIT_ENV = {"GIT_AUTHOR_NAME": "braid demo", "GIT_AUTHOR_EMAIL": "demo@example.org",
           "GIT_COMMITTER_NAME": "braid demo", "GIT_COMMITTER_EMAIL": "demo@example.org"}


# quiet, offline, no telemetry: the demo reaches nothing beyond this machine
TOOL_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "PYTHONWARNINGS": "ignore", "DVC_NO_ANALYTICS": "1",
            "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_CODE": "true"}


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV, **TOOL_ENV, "WANDB_DIR": str(cwd.resolve()),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for variable in ("MLFLOW_TRACKING_URI", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT"):
        env.pop(variable, None)
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
    (folder / "evaluate.py").write_text(EVALUATE_PY)
    (folder / "dvc.yaml").write_text(DVC_YAML)
    (folder / "baseline.py").write_text(BASELINE_PY)
    (folder / "params.yaml").write_text("prep:\n  split: 0.75\nbaseline:\n  cut: 6\n")
    (folder / ".gitignore").write_text("mlflow.db\nmlruns/\n.braid/\nwandb/\n")
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q", "-b", "main"], folder)
    _run([*dvc, "init", "-q"], folder)
    _run([*dvc, "add", "-q", "data/raw.csv"], folder)
    _run(["git", "add", "."], folder)
    _run(["git", "commit", "-q", "-m", "churn data and pipeline"], folder)
    _run([*dvc, "repro", "-q"], folder)
    _run(["git", "add", "."], folder)
    _run(["git", "commit", "-q", "-m", "prep: split 0.75, baseline cut 6"], folder)
    _run([*dvc, "exp", "run", "-q", "--temp", "--name", "cut-24", "--set-param", "baseline.cut=24"], folder)
    _run([sys.executable, "train.py"], folder)
    _run([sys.executable, "evaluate.py"], folder)
    (folder / "braid.toml").write_text(BRAID_TOML)


def run_demo(folder: Path, *, progress: bool = True) -> None:
    """Build, sync and answer: what produced churn v2, and what did the training data feed?"""
    import polars as pl

    from .catalog import open_catalog
    from .config import load_config
    from .output import emit
    from .progress import progress_display
    from .sync import sync

    click.echo(f"building the demo workspace in {folder} (git, dvc, mlflow and wandb)...")
    build_workspace(folder)
    config = load_config(folder / "braid.toml")
    with progress_display(enabled=progress) as report:
        result = sync(config, progress=report)
    for failed in result.failed:  # the demo's answer needs every tool: a source that failed fails it
        assert failed.error is not None
        raise failed.error
    click.echo(f"synced {', '.join(s.name for s in result.sources)} into {result.catalog} "
               f"(generation {result.generation}, {result.same_as} same_as links)\n")
    cat = open_catalog(config.catalog)
    version = "mlflow:model_version/churn/2"
    click.echo(f"$ braid upstream {version} --kinds run,dataset,code,model")
    emit(cat.upstream(version, kinds=["run", "dataset", "code", "model"])
         .select("depth", "kind", "name", "id", "via_kind"), "table")
    raw = cat.nodes.filter((pl.col("tool") == "dvc") & (pl.col("name") == "raw.csv"))["id"][0]
    click.echo(f"\n$ braid downstream {raw} --kinds dataset,model_version")
    emit(cat.downstream(raw, kinds=["dataset", "model_version"]).select("depth", "tool", "name", "id", "via_kind"),
         "table")
    click.echo(f"\nexplore: cd {folder} && braid show {version}")
