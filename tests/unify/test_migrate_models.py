"""`braid migrate` MLflow -> MLflow of what runs record about logged models: metrics logged against
a model, and the runs that used or produced each, into a sqlite store and a real `mlflow server`."""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModelInput, LoggedModelOutput, Metric

from braid.unify.migrate import migrate
from braid.unify.migrate._plan import SOURCE_ID_TAG
from braid.unify.source import SourceSpec
from tests.conftest import mlflow_server
from tests.unify._mlflow_migration import T0, model_links, model_metrics, target_spec

pytestmark = pytest.mark.slow
T = TypeVar("T")


@pytest.fixture(scope="module")
def model_metric_source(tmp_path_factory: pytest.TempPathFactory) -> SourceSpec:
    """A store where runs log metrics against a logged model through the real client: with dataset
    fields, NaN and +inf, from the model's own run and from another run; plus one row another tool
    left in logged_model_metrics without the run's metric point. The model is train's output (at
    step 2) and evaluate's input, as is a model no run logged (`served`), which cannot travel."""
    work = tmp_path_factory.mktemp("model-metrics")
    uri = f"sqlite:///{work / 'source.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("models", artifact_location=(work / "art").as_uri())
    train = client.create_run(exp, start_time=T0, run_name="train").info.run_id
    model = client.create_logged_model(exp, name="clf", source_run_id=train).model_id
    client.finalize_logged_model(model, "READY")
    client.log_batch(train, metrics=[
        Metric("loss", 0.5, T0 + 1, 0),
        Metric("val_loss", 0.3, T0 + 2, 2, model_id=model, dataset_name="val", dataset_digest="d41d8cd9"),
        Metric("val_nan", math.nan, T0 + 3, 2, model_id=model),
        Metric("val_inf", math.inf, T0 + 4, 2, model_id=model, dataset_name="val", dataset_digest="d41d8cd9")])
    client.set_terminated(train, "FINISHED", end_time=T0 + 100)
    evaluate = client.create_run(exp, start_time=T0 + 200, run_name="evaluate").info.run_id
    client.log_batch(evaluate, metrics=[Metric("score", 0.9, T0 + 201, 0, model_id=model, dataset_name="test",
                                               dataset_digest="0cc175b9")])
    served = client.create_logged_model(exp, name="served").model_id
    client.log_outputs(train, [LoggedModelOutput(model, 2)])
    client.log_inputs(evaluate, models=[LoggedModelInput(model), LoggedModelInput(served)])
    client.set_terminated(evaluate, "FINISHED", end_time=T0 + 300)
    with sqlite3.connect(work / "source.db") as con:
        con.execute("INSERT INTO logged_model_metrics (model_id, metric_name, metric_timestamp_ms, metric_step, "
                    "metric_value, experiment_id, run_id) VALUES (?, 'external', ?, 0, 0.7, ?, ?)",
                    (model, T0 + 5, int(exp), train))
    return SourceSpec("old", "mlflow", {"uri": uri}, base_dir=work)


def _history(uri: str, run_source_id: str, key: str) -> list[tuple]:
    """A metric's history on the target run that came from `run_source_id`, read with the client."""
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.`{SOURCE_ID_TAG}` = '{run_source_id}'")
    return [(m.value, m.step, m.timestamp) for m in client.get_metric_history(runs[0].info.run_id, key)]


def _link_rows(uri: str, *, skip: set[str] = frozenset()) -> list[tuple]:
    """The inputs table's run-to-model rows of a sqlite store, but the ids: (source type,
    destination type, step, input_uuid length), sorted; rows naming a model in `skip` left out."""
    with sqlite3.connect(f"file:{uri.removeprefix('sqlite:///')}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT source_type, destination_type, step, length(input_uuid), destination_id FROM inputs "
                           "WHERE source_type IN ('RUN_INPUT', 'RUN_OUTPUT')").fetchall()
    return sorted(r[:4] for r in rows if r[4] not in skip)


def in_fresh_thread(fn: Callable[[], T]) -> T:
    """fn() on a new thread. MLflow reads the active model from the environment once per thread
    (mlflow.tracking.fluent's ActiveModelContext) and this one has asked already; a new thread
    sees the environment as a new `braid migrate` process does."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


@pytest.mark.parametrize("kind", ["database", "server"])
def test_model_metrics_and_links_travel_to_the_target_model(model_metric_source: SourceSpec, kind: str,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bulk writer (a sqlite store) writes the rows; the client writer (a server) logs them with
    the model id, and the runs' model inputs and outputs with log_inputs and log_outputs. An
    active model in the user's environment links nothing. A re-run adds nothing."""
    import mlflow

    from braid.unify.migrate._plan import METRIC_NO_RUN_POINT, MODEL_NO_RUN

    source_uri = model_metric_source.options["uri"]
    expected = model_metrics(source_uri)
    assert len(expected) == 5
    external = [m for m in expected if m[1] == "external"]
    train = external[0][5]
    source_links = model_links(source_uri)
    assert len(source_links) == 3
    with contextlib.ExitStack() as stack:
        uri = (f"sqlite:///{tmp_path / 'target.db'}" if kind == "database"
               else stack.enter_context(mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path)))
        target = target_spec(uri, tmp_path)
        # the user's own model in the target, active in their environment: MlflowClient.log_batch
        # would link every metric point logged without a model to it
        client = MlflowClient(uri)
        mine = client.create_logged_model(client.create_experiment("mine"), name="mine").model_id
        monkeypatch.setenv("MLFLOW_ACTIVE_MODEL_ID", mine)

        def run() -> object:
            assert mlflow.get_active_model_id() == mine  # in force, as in a new process
            return migrate(model_metric_source, target, catalog=tmp_path / ".braid", artifact_root=tmp_path / "art")

        report = in_fresh_thread(run)
        assert report.verified, report.summary()
        assert not client.get_logged_model(mine).metrics
        linked = model_metrics(uri)
        if kind == "database":
            assert linked == expected and report.kinds["model_metric"].carried == 5
        else:
            # MLflow's API links a point to a model only while logging it to the run: the row
            # without a run point is reported, not invented as a new run point
            assert linked == [m for m in expected if m[1] != "external"]
            assert report.kinds["model_metric"].carried == 4
            assert report.kinds["model_metric"].not_carried == {METRIC_NO_RUN_POINT: 1}
            assert report.verification["model_metric"]["reported_not_carried"] == 1
        # the run keeps its one NaN point (MLflow holds the model's copy as 0.0), and no "external" point
        nan_points = _history(uri, train, "val_nan")
        assert len(nan_points) == 1 and math.isnan(nan_points[0][0])
        assert _history(uri, train, "external") == []
        # the runs' links to the model travel; the one to the model no run logged is reported
        served = {m for _, _, m, _ in source_links} - {m for m, *_ in expected}
        assert len(served) == 1 and model_links(uri) == [link for link in source_links if link[2] not in served]
        if kind == "database":  # the rows SqlAlchemyStore.log_inputs / log_outputs write: uuid4 hex, types, step
            assert _link_rows(uri) == _link_rows(source_uri, skip=served)
        assert (report.kinds["model_input"].carried, report.kinds["model_output"].carried) == (1, 1)
        assert report.kinds["model_input"].not_carried == {MODEL_NO_RUN: 1}
        again = in_fresh_thread(lambda: migrate(model_metric_source, target, catalog=tmp_path / ".braid",
                                                artifact_root=tmp_path / "art"))
        assert again.verified and not again.created, again.created
        assert model_metrics(uri) == linked
        assert model_links(uri) == [link for link in source_links if link[2] not in served]


def test_model_metrics_not_carried_say_why(model_metric_source: SourceSpec, tmp_path: Path) -> None:
    """Metrics of a model whose run stays behind, or logged by a run that stays behind."""
    from braid.unify.migrate._plan import METRIC_MODEL_NOT_MIGRATED, METRIC_RUN_NOT_MIGRATED

    client = MlflowClient(model_metric_source.options["uri"])
    runs = {r.info.run_name: r.info.run_id for r in client.search_runs([client.get_experiment_by_name("models")
                                                                       .experiment_id])}
    target = target_spec(f"sqlite:///{tmp_path / 'never.db'}", tmp_path)
    plan = {name: migrate(model_metric_source, target, catalog=tmp_path / ".braid", select=[runs[name]],
                          dry_run=True).kinds["model_metric"] for name in runs}
    assert (plan["train"].carried, dict(plan["train"].not_carried)) == (4, {METRIC_RUN_NOT_MIGRATED: 1})
    assert (plan["evaluate"].carried, dict(plan["evaluate"].not_carried)) == (0, {METRIC_MODEL_NOT_MIGRATED: 5})


def test_model_links_not_carried_say_why(model_metric_source: SourceSpec, tmp_path: Path) -> None:
    """A run's use of a model that stays behind (its run does, or no run logged it), and a model's
    use by a run that stays behind."""
    from braid.unify.migrate._plan import (LINK_MODEL_NOT_MIGRATED, LINK_RUN_NOT_MIGRATED, MODEL_NO_RUN,
                                           MODEL_RUN_NOT_MIGRATED)

    client = MlflowClient(model_metric_source.options["uri"])
    runs = {r.info.run_name: r.info.run_id for r in client.search_runs([client.get_experiment_by_name("models")
                                                                       .experiment_id])}
    target = target_spec(f"sqlite:///{tmp_path / 'never.db'}", tmp_path)
    kinds = {name: migrate(model_metric_source, target, catalog=tmp_path / ".braid", select=[runs[name]],
                           dry_run=True).kinds for name in runs}
    summary = {name: {kind: (k[kind].carried, dict(k[kind].not_carried)) for kind in ("model_input", "model_output")}
               for name, k in kinds.items()}
    assert summary["train"] == {"model_input": (0, {LINK_RUN_NOT_MIGRATED: 1}), "model_output": (1, {})}
    assert summary["evaluate"] == {"model_input": (0, {LINK_MODEL_NOT_MIGRATED: 1, MODEL_NO_RUN: 1}),
                                   "model_output": (0, {})}
    assert dict(kinds["evaluate"]["logged_model"].not_carried) == {MODEL_RUN_NOT_MIGRATED: 1, MODEL_NO_RUN: 1}

