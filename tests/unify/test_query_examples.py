"""Issue 5's example questions on a real multi-tool catalog: the demo workspace.

`build_workspace` has git, dvc, mlflow and wandb write a repository: DVC splits `raw.csv` and
scores a baseline (plus one experiment), MLflow trains three trials on the split and registers
two versions of `churn`, W&B logs two evaluations and the train split as an artifact. Every
expectation is read back from what those tools recorded (dvc.lock, the MLflow store through
MlflowClient, the data the scripts scored), not from braid's answers.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from braid.unify import Catalog, open_catalog
from braid.unify.query._reference import EXAMPLES

# the demo workspace is built once per worker and shared with test_export: same group
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo")]


@pytest.fixture(scope="module")
def demo(demo_workspace: Path) -> Path:
    return demo_workspace


@pytest.fixture(scope="module")
def cat(demo: Path) -> Catalog:
    return open_catalog(demo / ".braid")


@pytest.fixture(scope="module")
def facts(demo: Path) -> dict[str, Any]:
    """What the tools recorded, read with their own files and clients."""
    from mlflow import MlflowClient

    lock = yaml.safe_load((demo / "dvc.lock").read_text())["stages"]
    raw = yaml.safe_load((demo / "data" / "raw.csv.dvc").read_text())["outs"][0]
    client = MlflowClient(f"sqlite:///{demo / 'mlflow.db'}")
    versions = {str(v.version): v for v in client.search_model_versions("name = 'churn'")}
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("churn").experiment_id])}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=demo, capture_output=True, text=True).stdout.strip()
    outs = {o["path"]: o["md5"] for o in lock["prep"]["outs"]}
    return {
        "head": head, "lock": lock, "versions": versions, "runs": runs,
        "dvc_train": f"dvc:dataset/data/train.csv@{outs['data/train.csv']}",
        "dvc_test": f"dvc:dataset/data/test.csv@{outs['data/test.csv']}",
        "dvc_raw": f"dvc:dataset/data/raw.csv@{raw['md5']}",
        "test_csv": pd.read_csv(demo / "data" / "test.csv"),
    }


def example(n: int) -> str:
    return EXAMPLES[n - 1][1]


def mlflow_datasets(facts: dict[str, Any], run: str) -> set[str]:
    inputs = facts["runs"][run].inputs.dataset_inputs
    return {f"mlflow:dataset/{d.dataset.name}@{d.dataset.digest}" for d in inputs}


def wandb_train_file(cat: Catalog) -> str:
    # the W&B artifact file the evaluation runs logged: named by the script, kind from its type
    files = cat.nodes.filter(tool="wandb", name="train.csv")["id"].to_list()
    assert len(files) == 1
    return files[0]


def lineage_datasets(cat: Catalog, facts: dict[str, Any]) -> set[str]:
    """Upstream of a churn version: MLflow's inputs, the DVC versions they name, the raw file,
    and the W&B copy of the train split's bytes."""
    return (mlflow_datasets(facts, "trial-2") | {facts["dvc_train"], facts["dvc_test"], facts["dvc_raw"]}
            | {wandb_train_file(cat)})


def test_1_datasets_and_commit_upstream_of_a_model_version(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query(example(1), {"model_version": "mlflow:model_version/churn/2"})
    assert set(got["id"]) == lineage_datasets(cat, facts) | {f"git:{facts['head']}"}
    assert set(got["tool"].drop_nulls()) == {"mlflow", "dvc", "wandb"}


def test_2_models_and_versions_downstream_of_a_dataset(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query(example(2), {"dataset": facts["dvc_raw"]})
    versions = facts["versions"]
    # each version was registered from its LoggedModel's URI, models:/<model id>
    expected = {f"mlflow:model_version/churn/{v}" for v in versions} | {
        f"mlflow:model/{v.source.removeprefix('models:/')}" for v in versions.values()}
    assert set(got["id"]) == expected
    assert got.filter(kind="model_version")["depth"].to_list() == [5, 5]


def test_3_the_path_from_a_dvc_file_to_an_mlflow_version(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query(example(3), {"dataset": facts["dvc_raw"], "model_version": "mlflow:model_version/churn/2"})
    first = got.filter(path=0).sort("step")
    producer = facts["runs"]["trial-2"].info.run_id
    assert first["id"][0] == facts["dvc_raw"] and first["id"][-1] == "mlflow:model_version/churn/2"
    assert f"mlflow:run/{producer}" in first["id"].to_list()
    assert "same_as" in first["via_kind"].to_list()  # the crossing from DVC to MLflow
    assert {i.split(":")[0] for i in first["id"]} == {"dvc", "mlflow"}


def test_4_best_runs_by_a_metric_across_the_three_tools(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query(example(4).replace("ORDER BY m.value", "ORDER BY m.value DESC"), {"metric": "accuracy"})
    test = facts["test_csv"]

    def accuracy(cut: int) -> float:
        return float(((test["tenure"] < cut).astype(int) == test["churned"]).mean())

    # the cuts each script scored: MLflow trials, W&B evaluations (last step: the whole split),
    # DVC's committed baseline, its experiment and the experiment's re-run stage
    cuts = {("mlflow", "trial-0"): 6, ("mlflow", "trial-1"): 12, ("mlflow", "trial-2"): 18,
            ("wandb", "eval-cut-12"): 12, ("wandb", "eval-cut-18"): 18}
    cuts[("dvc", "cut-24")] = 24
    expected = sorted([(accuracy(c), t, n) for (t, n), c in cuts.items()]
                      + [(accuracy(6), "dvc", "baseline"), (accuracy(24), "dvc", "baseline")], reverse=True)
    rows = sorted(((round(v, 9), t, n) for t, _, n, v in got.iter_rows()), reverse=True)
    assert rows == sorted(((round(v, 9), t, n) for v, t, n in expected), reverse=True)
    assert set(got["tool"]) == {"mlflow", "wandb", "dvc"}


def test_5_params_that_differ_between_an_mlflow_and_a_wandb_run(cat: Catalog, facts: dict[str, Any]) -> None:
    mlflow_run = f"mlflow:run/{facts['runs']['trial-1'].info.run_id}"
    wandb_run = cat.table("runs").filter(tool="wandb", name="eval-cut-12")["id"].item()
    got = cat.query(example(5), {"run_a": mlflow_run, "run_b": wandb_run})
    # trial-1 logged lr 0.03, cut 12, epochs 20; eval-cut-12's config has cut 12, lr 0.03
    assert facts["runs"]["trial-1"].data.params == {"lr": "0.03", "cut": "12", "epochs": "20"}
    assert got.rows() == [("epochs", "20", None)]


def test_6_upstream_as_of_a_past_moment(cat: Catalog, facts: dict[str, Any], demo: Path) -> None:
    registered = datetime.fromtimestamp(facts["versions"]["2"].creation_timestamp / 1000, UTC)
    wandb_started = min(cat.table("runs").filter(tool="wandb")["started_at"])
    assert wandb_started > registered  # the W&B evaluations ran after churn v2 was registered
    now = set(cat.query(example(6), {"model_version": "mlflow:model_version/churn/2",
                                     "moment": datetime.now(UTC)})["id"])
    then = set(cat.query(example(6), {"model_version": "mlflow:model_version/churn/2", "moment": registered})["id"])
    assert now - then == {wandb_train_file(cat)}
    before = cat.query(example(6), {"model_version": "mlflow:model_version/churn/2",
                                    "moment": registered - timedelta(milliseconds=1)})
    assert before.is_empty()  # the version did not exist yet


def test_7_runs_that_used_data_another_tool_holds(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query(example(7))
    # MLflow's trials read datasets that name DVC's split by path; DVC's baseline stage read the
    # test split, which MLflow holds as a dataset too
    assert "data/test.csv" in [d["path"] for d in facts["lock"]["baseline"]["deps"]]
    expected = sorted([("mlflow", name, ds) for name in ("trial-0", "trial-1", "trial-2")
                       for ds in mlflow_datasets(facts, name)] + [("dvc", "baseline", facts["dvc_test"])])
    assert got.rows() == expected


def test_8_distinct_datasets_per_registered_version(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query(example(8))
    n = len(lineage_datasets(cat, facts))
    assert got.rows() == [("churn", v, n) for v in sorted(facts["versions"])]
    assert json.loads(cat.table("registry").filter(version="2")["events"].item()) is not None


LINEAGE = "FROM registry r, upstream(r.model_version_id, kinds => ['dataset']) u"


@pytest.mark.parametrize(("sql", "counted"), [
    (example(8), True),
    # unaliased, in HAVING too, grouped by more than a key, a condition on the registry only
    (f"SELECT r.version, count(DISTINCT u.id) {LINEAGE} WHERE r.name = 'churn' "
     "GROUP BY r.version, r.model_version_id HAVING count(DISTINCT u.id) > 1 ORDER BY 1", True),
    # both versions in one group: the union of their lineages, not one start's count
    (f"SELECT r.name, count(DISTINCT u.id) AS n {LINEAGE} GROUP BY r.name", False),
    (f"SELECT r.name, r.version, count(DISTINCT u.id) AS n, count(*) AS rows {LINEAGE} GROUP BY r.name, r.version",
     False),
    (f"SELECT r.name, r.version, count(DISTINCT u.id) AS n {LINEAGE} WHERE u.tool = 'dvc' GROUP BY r.name, r.version",
     False),
    (f"SELECT r.name, r.version, count(DISTINCT u.tool) AS n {LINEAGE} GROUP BY r.name, r.version", False),
])
def test_a_lineage_only_counted_gives_the_rows_of_the_join(cat: Catalog, sql: str, counted: bool) -> None:
    """`count(DISTINCT u.id)` per group holding one start is counted by the walk (EXPLAIN says
    so); whether counted or joined, DuckDB running the WITH RECURSIVE form agrees."""
    import duckdb

    from braid.unify.query import emit_sql

    plan = "\n".join(cat.query("EXPLAIN " + sql)["plan"])
    assert ("only counted" in plan) == counted, plan
    ours = cat.query(sql)
    theirs = duckdb.sql(emit_sql(cat, sql, {}, engine="duckdb")).pl()
    assert ours.height > 0
    assert sorted(theirs.rows(), key=repr) == sorted(ours.rows(), key=repr)


def test_an_unaliased_count_keeps_its_name(cat: Catalog) -> None:
    """Counted per start, joined, or over integer keys, an unaliased count(DISTINCT x.id) is
    named as polars names it over the strings: `id`."""
    joined = f"SELECT r.version, u.id {LINEAGE}"
    for sql in (f"SELECT r.version, count(DISTINCT u.id) {LINEAGE} GROUP BY r.version",
                f"SELECT version, count(DISTINCT id) FROM ({joined}) AS j GROUP BY version",
                "SELECT e.kind, count(DISTINCT n.id) FROM nodes n JOIN edges e ON e.src = n.id GROUP BY e.kind"):
        assert cat.query(sql).columns[1] == "id", sql


def test_every_example_runs_the_same_on_duckdb(cat: Catalog, facts: dict[str, Any]) -> None:
    """`--emit duckdb`: the graph functions as WITH RECURSIVE over the catalog's Parquet files."""
    import duckdb

    from braid.unify.query import emit_sql

    params = [{"model_version": "mlflow:model_version/churn/2"}, {"dataset": facts["dvc_raw"]},
              {"dataset": facts["dvc_raw"], "model_version": "mlflow:model_version/churn/2"}, {"metric": "accuracy"},
              {"run_a": f"mlflow:run/{facts['runs']['trial-1'].info.run_id}",
               "run_b": cat.table("runs").filter(tool="wandb", name="eval-cut-12")["id"].item()},
              {"model_version": "mlflow:model_version/churn/2",
               "moment": datetime.fromtimestamp(facts["versions"]["2"].creation_timestamp / 1000, UTC)},
              {}, {}]
    for (title, sql), values in zip(EXAMPLES, params, strict=True):
        ours = cat.query(sql, values)
        theirs = duckdb.sql(emit_sql(cat, sql, values, engine="duckdb")).pl()
        assert ours.height > 0, title
        assert theirs.columns == ours.columns, title
        assert sorted(theirs.rows(), key=repr) == sorted(ours.rows(), key=repr), title
