"""The MLflow connector's REST path against a real `mlflow server`: the same graph as direct SQL.

One server per session (`--workers 1`, job execution off: it answers in ~5 s), on a sqlite
store in a temporary folder with local artifact roots (`--no-serve-artifacts`). `write_fixture`
fills it through the server with the real mlflow client, in its own process. Every test reads that store through the server and, where it compares, through its
database file directly, as `braid` would with either URI.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import requests
from polars.testing import assert_frame_equal

from braid.connectors.mlflow import _rest, read_source
from braid.connectors.mlflow._artifacts import list_local
from braid.connectors.mlflow._raw import LOGGED_MODEL_STATUS, RAW_SCHEMAS
from braid.connectors.mlflow._rest import BULK_POINTS, RestStore
from braid.connectors.mlflow._sql import SqlStore
from braid.unify.errors import SourceAuthError, SourceError, SourceUnreachable
from braid.unify.source import SourceBatch, SourceSpec, no_progress
from tests.conftest import free_port, mlflow_server

pytestmark = pytest.mark.slow

GRAPH_TABLES = ("nodes", "edges", "runs", "params", "metrics", "tags", "registry")
T0 = 1_700_000_000_000
ROOT = Path(__file__).resolve().parents[2]
COMMIT = "6f9ef47785f89edf5e79889a88d9379722c3711d"
# run name -> (metric key, points): one run past the server's 25,000-point bulk cut, and two that
# overflow a bulk answer together once the test lowers the cut
LONG = {"long": ("big", 30_000), "pair-a": ("pair", 600), "pair-b": ("pair", 600)}


@dataclass
class Server:
    """A running `mlflow server` and the store behind it."""

    url: str
    db_uri: str
    workdir: Path
    facts: dict[str, Any]


def write_fixture(url: str, workdir: Path) -> dict[str, Any]:
    """Write the store through the server with the real client; returns the ids it made.

    Runs in its own process (`python -m tests.connectors.test_mlflow_rest URL DIR`): mlflow's
    fluent API keeps its tracking URI and active run in globals. log_model is told its
    requirements, so it does not spend seconds inferring them.
    """
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelInput, Metric

    class Echo(mlflow.pyfunc.PythonModel):
        # no type hints: mlflow would try (and warn about) a signature from them
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return model_input

    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    client = MlflowClient(url, url)
    facts: dict[str, Any] = {"git_commit": COMMIT}
    exp = client.create_experiment("lineage", tags={"team": "churn"})
    mlflow.set_experiment(experiment_id=exp)
    data = workdir / "data" / "train.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(50)))
    train_set = mlflow.data.from_pandas(pd.read_csv(data), source=str(data), name="train", targets="label")
    with mlflow.start_run(run_name="train") as train:
        mlflow.set_tags({"mlflow.source.git.commit": COMMIT, "mlflow.source.git.branch": "main",
                         "mlflow.source.git.repoURL": "https://bot:tok@example.org/churn.git", "team": "churn"})
        mlflow.log_params({"lr": 0.01, "epochs": 3})
        for step, value in enumerate([1.0, 0.5, math.nan, 0.25, math.inf]):
            mlflow.log_metric("loss", value, step=step, timestamp=T0 + step * 1000)
        mlflow.log_input(train_set, context="training", tags={"split": "a"})
        mlflow.log_artifact(str(data), "data")
        model = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=["mlflow"],
                                        params={"alpha": "1"}, step=4)
        mlflow.log_metric("val_acc", 0.8, step=4, timestamp=T0, model_id=model.model_id, dataset=train_set)
        with mlflow.start_run(run_name="cv-0", nested=True) as child:
            mlflow.log_metric("loss", 0.5, step=0, timestamp=T0)
    with mlflow.start_run(run_name="evaluate") as evaluate:
        # a metric about another run's model records that model as this run's input
        mlflow.log_metric("score", 0.9, step=0, timestamp=T0, model_id=model.model_id)
    with mlflow.start_run(run_name="finetune") as finetune:
        model2 = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=["mlflow"])
    client.create_registered_model("churn", tags={"owner": "ml"}, description="churn models")
    v1 = mlflow.register_model(model.model_uri, "churn", tags={"checked": "no"})
    v2 = client.create_model_version("churn", f"runs:/{finetune.info.run_id}/model", run_id=finetune.info.run_id)
    client.set_registered_model_alias("churn", "champion", v2.version)
    client.set_model_version_tag("churn", v2.version, "validated", "true")
    client.create_registered_model("unused")
    # a run in an experiment without LoggedModels that uses another experiment's model, with
    # no metric against it: only its run record holds the input
    scoring = client.create_experiment("scoring")
    score = client.create_run(scoring, run_name="batch-score")
    client.log_inputs(score.info.run_id, models=[LoggedModelInput(model.model_id)])
    client.set_terminated(score.info.run_id)
    facts.update(train_run=train.info.run_id, child_run=child.info.run_id, evaluate_run=evaluate.info.run_id,
                 finetune_run=finetune.info.run_id, model_1=model.model_id, model_2=model2.model_id,
                 versions=[v1.version, v2.version], score_run=score.info.run_id)

    # histories longer than one bulk answer
    long_exp = client.create_experiment("long-history")
    for name, (key, points) in LONG.items():
        run = client.create_run(long_exp, run_name=name, start_time=T0)
        for start in range(0, points, 1000):
            client.log_batch(run.info.run_id, metrics=[
                Metric(key, s / points, T0 + s, s) for s in range(start, min(start + 1000, points))])
        client.set_terminated(run.info.run_id, end_time=T0 + points)
        facts[name] = run.info.run_id
    # deleted things, which a full read includes
    dropped = client.create_run(long_exp, run_name="dropped")
    client.delete_run(dropped.info.run_id)
    gone = client.create_experiment("gone")
    run = client.create_run(gone, run_name="in-a-deleted-experiment")
    client.log_batch(run.info.run_id, metrics=[
        Metric("edge", math.inf, T0, 0), Metric("edge", -math.inf, T0 + 1, 1), Metric("edge", math.nan, T0 + 2, 2)])
    client.set_terminated(run.info.run_id)
    client.delete_experiment(gone)
    facts.update(dropped_run=dropped.info.run_id, edge_run=run.info.run_id)
    return facts


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("mlflow-server")
    db = work / "mlflow.db"
    with mlflow_server(f"sqlite:///{db}", work) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        writer = subprocess.run(
            [sys.executable, "-m", "tests.connectors.test_mlflow_rest", url, str(work / "writer")],
            cwd=ROOT, env={**env, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True, timeout=300)
        assert writer.returncode == 0, writer.stderr[-3000:]
        yield Server(url, f"sqlite:///{db}", work, json.loads(writer.stdout.strip().splitlines()[-1]))


def read(uri: str, base: Path) -> SourceBatch:
    return read_source(SourceSpec("ml", "mlflow", {"uri": uri}, base), previous=None, progress=no_progress)


def sorted_frame(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def assert_same(table: str, left: pl.DataFrame, right: pl.DataFrame) -> None:
    try:
        assert_frame_equal(left, right)
    except AssertionError as exc:
        raise AssertionError(f"{table}: {exc}") from None


def test_rest_and_sql_give_the_same_graph(server: Server) -> None:
    through_rest = read(server.url, server.workdir).tables
    through_sql = read(server.db_uri, server.workdir).tables
    for table in GRAPH_TABLES:
        assert_same(table, through_rest[table], through_sql[table])

    # and it is the fixture's lineage, not two equally empty graphs
    f, edges = server.facts, set(through_rest["edges"].select("src", "dst", "kind").rows())
    train, child, evaluate, score = (f"ml:run/{f[k]}" for k in ("train_run", "child_run", "evaluate_run", "score_run"))
    m1 = f"ml:model/{f['model_1']}"
    assert {(train, child, "parent_of"), (train, m1, "output"), (m1, evaluate, "input"), (m1, score, "input"),
            (m1, "ml:model_version/churn/1", "registered_as"), (f"git:{COMMIT}", train, "code")} <= edges
    dataset = through_rest["edges"].filter(kind="input", dst=train)
    assert dataset["src"].str.starts_with("ml:dataset/train@").all()
    assert dataset["attrs"].to_list() == ['{"mlflow.data.context": "training", "split": "a"}']
    assert through_rest["registry"].sort("version")["aliases"].to_list() == [[], ["champion"]]
    loss = through_rest["metrics"].filter(run_id=train, key="loss").sort("step")["value"].to_list()
    assert loss[:2] == [1.0, 0.5] and math.isnan(loss[2]) and loss[4] == 1.7976931348623157e308
    assert through_rest["metrics"].filter(run_id=f"ml:run/{f['long']}").height == 30_000
    assert through_rest["nodes"].filter(kind="artifact")["name"].to_list() == ["data/train.csv"]


def test_raw_tables_are_identical(server: Server) -> None:
    """Table by table, before normalising: the sharpest view of any difference."""
    f = server.facts
    rest, sql = RestStore("ml", server.url), SqlStore("ml", server.db_uri, base_dir=server.workdir)
    with rest, sql:
        a, b = rest.read_core(no_progress), sql.read_core(no_progress)
        # the 30,000-point run has its own test; reading it again here only costs time
        runs = [r for r in a["runs"]["run_uuid"] if r != f["long"]]
        a["metrics"], b["metrics"] = rest.read_metric_history(runs, no_progress), sql.read_metric_history(runs, no_progress)
    # a LoggedModel's status: its proto name over REST, an integer in SQL; the normaliser maps both
    a["logged_models"] = a["logged_models"].with_columns(pl.col("status").replace(LOGGED_MODEL_STATUS))
    b["logged_models"] = b["logged_models"].with_columns(pl.col("status").replace(LOGGED_MODEL_STATUS))
    for table in RAW_SCHEMAS:
        assert_same(table, sorted_frame(a[table]), sorted_frame(b[table]))

    assert set(a["model_inputs"].rows()) == {(f["evaluate_run"], f["model_1"]), (f["score_run"], f["model_1"])}
    assert a["dataset_inputs"].select("run_uuid", "tags").rows() == [
        (f["train_run"], '{"mlflow.data.context": "training", "split": "a"}')]
    assert set(a["runs"].filter(lifecycle_stage="deleted")["run_uuid"]) == {f["dropped_run"], f["edge_run"]}
    assert a["experiments"].filter(lifecycle_stage="deleted")["name"].to_list() == ["gone"]
    assert sorted(a["model_versions"]["storage_location"].to_list()) == sorted([
        one(a["logged_models"], model_id=f["model_1"])["artifact_location"], f"runs:/{f['finetune_run']}/model"])
    # MLflow's SQL store keeps infinities as the largest floats and NaN as a flag: the same
    # values arrive through the server, NaN written bare in the bulk answer and as "NaN" in the
    # run search
    edge = a["metrics"].filter(run_uuid=f["edge_run"]).sort("step")["value"].to_list()
    assert edge[:2] == [1.7976931348623157e308, -1.7976931348623157e308] and math.isnan(edge[2])
    assert math.isnan(one(a["latest_metrics"], run_uuid=f["edge_run"])["value"])



def test_model_input_from_another_experiment(server: Server) -> None:
    """A run whose experiment holds no LoggedModel, using another experiment's model without a
    metric against it: its input is read over REST as MLflow recorded it, and as SQL reads it."""
    from mlflow import MlflowClient

    f, client = server.facts, MlflowClient(server.url)
    score = client.get_run(f["score_run"])
    # the case itself: nothing but the run record ties this run to the model
    assert client.search_logged_models([score.info.experiment_id]) == []
    assert [m.model_id for m in score.inputs.model_inputs] == [f["model_1"]]
    with RestStore("ml", server.url) as rest, SqlStore("ml", server.db_uri, base_dir=server.workdir) as sql:
        a, b = rest.read_core(no_progress), sql.read_core(no_progress)
    assert f["score_run"] not in a["logged_model_metrics"]["run_id"].to_list()
    assert (f["score_run"], f["model_1"]) in a["model_inputs"].rows()
    assert_same("model_inputs", sorted_frame(a["model_inputs"]), sorted_frame(b["model_inputs"]))
    recorded = {(r, m.model_id) for r in a["runs"]["run_uuid"] for m in client.get_run(r).inputs.model_inputs}
    assert set(a["model_inputs"].rows()) == recorded

def one(frame: pl.DataFrame, **where: object) -> dict[str, Any]:
    rows = frame.filter(**where)
    assert rows.height == 1, (where, rows)
    return rows.row(0, named=True)


class CallLog:
    """Records which endpoints a RestStore called, with which arguments."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        original = RestStore._call

        def spy(store: RestStore, endpoint: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
            self.calls.append((endpoint, dict(args or {})))
            return original(store, endpoint, args, **kw)

        monkeypatch.setattr(RestStore, "_call", spy)

    def of(self, endpoint: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == endpoint]


def test_history_past_the_bulk_cut_comes_back_whole(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """30,000 points of one key: the bulk answer stops at 25,000, get-history pages the rest."""
    long = server.facts["long"]
    calls = CallLog(monkeypatch)
    with RestStore("ml", server.url) as rest, SqlStore("ml", server.db_uri, base_dir=server.workdir) as sql:
        through_rest = rest.read_metric_history([long], no_progress)
        through_sql = sql.read_metric_history([long], no_progress)
    assert through_rest.height == 30_000 > BULK_POINTS
    assert through_rest["step"].n_unique() == 30_000
    assert_frame_equal(sorted_frame(through_rest), sorted_frame(through_sql))
    assert len(calls.of("history_bulk")) == 1 and len(calls.of("history")) == 2  # two pages of 25,000


def test_runs_that_overflow_a_bulk_answer_together(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of 600 points in one bulk call cut at 1,000 (the server honours a lower
    max_results): the first run is kept, the second asked again on its own."""
    pair = sorted(server.facts[name] for name in ("pair-a", "pair-b"))
    monkeypatch.setattr(_rest, "BULK_POINTS", 1_000)
    calls = CallLog(monkeypatch)
    with RestStore("ml", server.url) as rest, SqlStore("ml", server.db_uri, base_dir=server.workdir) as sql:
        through_rest = rest.read_metric_history(pair, no_progress)
        through_sql = sql.read_metric_history(pair, no_progress)
    assert dict(through_rest.group_by("run_uuid").len().iter_rows()) == {pair[0]: 600, pair[1]: 600}
    assert_frame_equal(sorted_frame(through_rest), sorted_frame(through_sql))
    assert [c["run_id"] for c in calls.of("history_bulk")] == [pair, [pair[1]]]
    assert calls.of("history") == []


def test_artifacts_listed_through_the_server(server: Server) -> None:
    """The REST listing names the same files and sizes as a walk of the local roots."""
    f = server.facts
    with SqlStore("ml", server.db_uri, base_dir=server.workdir) as sql:
        raw = sql.read_core(no_progress)
    runs = raw["runs"].filter(pl.col("run_uuid").is_in([f["train_run"], f["child_run"]]))
    models = raw["logged_models"].filter(model_id=f["model_1"])
    owners = [(r, "run", u) for r, u in runs.select("run_uuid", "artifact_uri").iter_rows()]
    owners += [(m, "model", u) for m, u in models.select("model_id", "artifact_location").iter_rows()]
    local, _, remote = list_local(owners, None, no_progress)
    assert not remote and local.height > 3
    with RestStore("ml", server.url) as rest:
        listed = rest.list_artifacts([o for o, _, _ in owners], no_progress)
    assert listed["md5"].null_count() == listed.height
    assert_frame_equal(sorted_frame(listed), sorted_frame(local.with_columns(md5=pl.lit(None, pl.String))))
    assert listed.filter(owner=f["train_run"])["path"].to_list() == ["data/train.csv"]
    assert "MLmodel" in listed.filter(owner=f["model_1"])["path"].to_list()


def test_unreachable_server_is_one_clear_line() -> None:
    port = free_port()  # closed again: nothing listens there
    started = time.monotonic()
    with pytest.raises(SourceUnreachable) as err, RestStore("prod", f"http://127.0.0.1:{port}") as rest:
        rest.read_core(no_progress)
    message = str(err.value)
    assert message == f"source 'prod': cannot reach http://127.0.0.1:{port}: connection refused"
    assert time.monotonic() - started < 5, "a refused connection must not be retried for long"


def test_unknown_endpoint_names_the_path_and_status(server: Server) -> None:
    with pytest.raises(SourceError) as err, RestStore("prod", f"{server.url}/not-here") as rest:
        rest.read_core(no_progress)
    assert not isinstance(err.value, (SourceUnreachable, SourceAuthError))
    assert str(err.value) == (
        f"source 'prod': /api/2.0/mlflow/experiments/search on {server.url}/not-here answered HTTP 404")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` running MLflow's basic-auth app."""
    work = tmp_path_factory.mktemp("mlflow-auth")
    with mlflow_server(f"sqlite:///{work / 'mlflow.db'}", work, admin_password="braid-admin-pw") as url:
        yield url


@pytest.mark.parametrize("env", [
    {"MLFLOW_TRACKING_TOKEN": "s3cret-token"},
    {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "s3cret-wrong"},
    {},
])
def test_refused_credentials(guarded: str, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SourceAuthError) as err, RestStore("prod", guarded) as rest:
        rest.read_core(no_progress)
    message = str(err.value)
    assert "refused the credentials (HTTP 401" in message and "\n" not in message
    assert "s3cret" not in message and "s3cret" not in (err.value.hint or "")


def test_right_credentials_read_the_store(guarded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "braid-admin-pw")
    with RestStore("prod", guarded) as rest:
        raw = rest.read_core(no_progress)
    assert raw["experiments"]["name"].to_list() == ["Default"]


if __name__ == "__main__":
    print(json.dumps(write_fixture(sys.argv[1], Path(sys.argv[2]))))


def test_incremental_sync_through_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second sync over REST reads the history of the changed and new runs only."""
    from mlflow import MlflowClient

    from braid.unify import open_catalog
    from braid.unify.config import load_config
    from braid.unify.sync import sync

    with mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path) as url:
        client = MlflowClient(url)
        exp = client.create_experiment("incremental")
        runs = []
        for _ in range(3):
            run = client.create_run(exp)
            for step in range(5):
                client.log_metric(run.info.run_id, "loss", 1 / (step + 1), step=step, timestamp=T0 + step)
            client.set_terminated(run.info.run_id)
            runs.append(run.info.run_id)
        for folder in ("inc", "full"):
            (tmp_path / folder).mkdir()
            (tmp_path / folder / "braid.toml").write_text(f'[[sources]]\ntool = "mlflow"\nuri = "{url}"\n')
        config = load_config(tmp_path / "inc" / "braid.toml")
        assert sync(config).generation == 1
        assert not sync(config).changed

        client.log_metric(runs[0], "loss", 0.01, step=5, timestamp=T0 + 5)  # a finished run grows
        late = client.create_run(exp).info.run_id
        client.log_metric(late, "loss", 0.5, step=0, timestamp=T0)
        asked: list[list[str] | None] = []
        real = RestStore.read_metric_history

        def spy(self: RestStore, run_uuids: list[str] | None, progress: Any) -> pl.DataFrame:
            asked.append(run_uuids)
            return real(self, run_uuids, progress)

        monkeypatch.setattr(RestStore, "read_metric_history", spy)
        assert sync(config).generation == 2
        assert len(asked) == 1 and sorted(asked[0] or []) == sorted([runs[0], late])
        full_config = load_config(tmp_path / "full" / "braid.toml")
        sync(full_config, full=True)
    incremental, full = open_catalog(config.catalog), open_catalog(full_config.catalog)
    for table in GRAPH_TABLES:
        assert_same(table, incremental.table(table), full.table(table))
    grown = incremental.table("metrics").filter(run_id=f"mlflow:run/{runs[0]}").sort("step")
    assert grown["value"].to_list() == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 0.01])
