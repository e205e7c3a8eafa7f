"""Write a plan into an MLflow tracking store or server with `MlflowClient`.

Experiments and registry entries always go through the client (few objects). Runs do for a
server target; a database target (sqlite, PostgreSQL, MySQL) gets them as set-based inserts of
the same rows (`_mlflow_bulk`), unless `bulk=False`.

Every object carries its original id as the tag `braid.source_id`, and the id map is saved after
each one (each finished run; each batch of runs for a database target), so a re-run finds what
exists (in the map, or by that tag when the map missed the last writes before a crash) and
creates nothing twice. Logging a param, tag or metric point that is
already there is harmless in MLflow (same value; metric points are deduplicated by the store),
which is what lets a half-written run be finished on the next run.
"""

from __future__ import annotations

import json
import urllib.parse
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from mlflow import MlflowClient
from mlflow.entities import (Dataset, DatasetInput, InputTag, LoggedModelInput, LoggedModelOutput, Metric, Param,
                             RunTag)
from mlflow.exceptions import MlflowException

from braid.connectors.mlflow import tracking_uri
from braid.connectors.mlflow._normalise import PARENT, USER
from braid.unify.source import SourceSpec

from ._idmap import IdMap
from ._plan import (LONG_VALUE_DIR, MAX_PARAM_LENGTH, MAX_TAG_LENGTH, METRIC_NO_RUN_POINT, METRICS_PER_BATCH,
                    PARAMS_TAGS_PER_BATCH, SOURCE_ID_TAG, SOURCE_NAME_TAG, SOURCE_PARENT_TAG, TRUNCATED_TAG, Plan)

TERMINAL = ("FINISHED", "FAILED", "KILLED")
# (section, source id) -> done; called after each object so the caller can report progress
Step = Callable[[str, int, int | None], None]


def writer_uri(spec: SourceSpec) -> str:
    """The target's tracking URI, a relative sqlite path resolved against braid.toml's folder."""
    uri = tracking_uri(spec)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(spec.base_dir / uri[len('sqlite:///'):]).resolve()}"
    return uri


def long_value_path(kind: str, key: str) -> str:
    """Where a value too long for the target is written in full, inside the run's artifacts."""
    return f"{LONG_VALUE_DIR}/{kind}/{urllib.parse.quote(key, safe='')}.txt"


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _run_points(rows: pl.DataFrame, points: pl.DataFrame) -> pl.DataFrame:
    """Model metric rows with `point`: the value of the source run's metric point (same key, step
    and timestamp) that MLflow stores as the row's value, the very value first; null where the run
    holds none. log_batch writes both from one value, and the store keeps a NaN point as 0.0 in
    logged_model_metrics, so logging the point's own value (NaN) adds no second point to the run."""
    from ._mlflow_bulk import stored_value

    on = ["source_run", "key", "step", "timestamp", "value"]
    candidates = points.select(source_run="run_uuid", key="key", step="step", timestamp="timestamp",
                               value=stored_value(pl.col("value")), point="value")
    return (rows.join(candidates, on=on, how="left")
            .sort(pl.col("point") == pl.col("value"), descending=True, nulls_last=True, maintain_order=True)
            .unique([*on, "model_id"], keep="first", maintain_order=True))


class MlflowWriter:
    """Creates experiments, runs and registry entries in one MLflow target."""

    def __init__(self, spec: SourceSpec, *, artifact_root: Path | None = None, bulk: bool = True) -> None:
        uri = writer_uri(spec)
        self.client = MlflowClient(uri, uri)
        self.artifact_root = artifact_root
        self.bulk = bulk
        self.created: Counter[str] = Counter()
        self.reused: Counter[str] = Counter()

    # -- experiments --------------------------------------------------------------------------
    def experiment(self, plan: Plan, idmap: IdMap, experiment_id: str) -> str:
        known = idmap.get("experiments", experiment_id)
        if known is not None:
            self.reused["experiments"] += 1
            return str(known)
        row = plan.read.raw["experiments"].filter(pl.col("experiment_id") == experiment_id).row(0, named=True)
        existing = self.client.get_experiment_by_name(row["name"])
        if existing is not None:
            target_id = existing.experiment_id
            self.reused["experiments"] += 1
        else:
            location = None
            if self.artifact_root is not None:
                location = (self.artifact_root / f"{plan.source}-{experiment_id}").resolve().as_uri()
            target_id = self.client.create_experiment(row["name"], artifact_location=location)
            self.created["experiments"] += 1
        tags = plan.read.raw["experiment_tags"].filter(pl.col("experiment_id") == experiment_id)
        for key, value in tags.select("key", "value").iter_rows():
            self.client.set_experiment_tag(target_id, key, value)
        self.client.set_experiment_tag(target_id, SOURCE_ID_TAG, experiment_id)
        idmap.set("experiments", experiment_id, target_id)
        idmap.save()
        return str(target_id)

    # -- runs ---------------------------------------------------------------------------------
    def adopt_orphans(self, plan: Plan, idmap: IdMap, experiments: list[str]) -> None:
        """Runs a killed migration created but never recorded in the map: found by their tags."""
        page = None
        while True:
            found = self.client.search_runs(experiments, f"tags.`{SOURCE_NAME_TAG}` = '{plan.source}'",
                                            max_results=1000, page_token=page)
            for run in found:
                source_id = run.data.tags.get(SOURCE_ID_TAG)
                if source_id and idmap.run_target(source_id) is None:
                    idmap.set_run(source_id, run.info.run_id, done=False)
            page = found.token
            if not page:
                break

    def runs(self, plan: Plan, idmap: IdMap, experiments: dict[str, str], step: Step) -> None:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = self.client._tracking_client.store  # the store MLflow opened (and migrated) for the URI
        if self.bulk and isinstance(store, SqlAlchemyStore):  # a database: set-based inserts, a batch a transaction
            from ._mlflow_bulk import write_runs

            write_runs(self, store, plan, idmap, experiments, step)
            return
        raw = plan.read.raw
        by_run = {name: {k[0]: v for k, v in plan.frame(name).partition_by("run_uuid", as_dict=True).items()}
                  for name in ("params", "tags", "metrics", "dataset_inputs")}
        info = {r["run_uuid"]: r for r in raw["runs"].filter(pl.col("run_uuid").is_in(plan.run_ids)).iter_rows(named=True)}
        self.adopt_orphans(plan, idmap, list(experiments.values()))
        for n, run_uuid in enumerate(plan.run_ids):
            if idmap.run_done(run_uuid):
                self.reused["runs"] += 1
            else:
                parts = {name: frames.get(run_uuid) for name, frames in by_run.items()}
                self._run(plan, idmap, info[run_uuid], experiments[info[run_uuid]["experiment_id"]], parts)
            step("runs", n + 1, len(plan.run_ids))

    def _run(self, plan: Plan, idmap: IdMap, info: dict[str, Any], experiment: str,
             parts: dict[str, pl.DataFrame | None]) -> None:
        run_uuid = info["run_uuid"]
        tags = dict(parts["tags"].select("key", "value").iter_rows()) if parts["tags"] is not None else {}
        parent = tags.pop(PARENT, None)
        own = {SOURCE_ID_TAG: run_uuid, SOURCE_NAME_TAG: plan.source}
        if parent is not None:
            mapped = idmap.run_target(parent)
            if mapped is not None:
                own[PARENT] = mapped
            else:
                own[SOURCE_PARENT_TAG] = parent
        target_id = idmap.run_target(run_uuid)
        if target_id is None:
            user = tags.get(USER) or info["user_id"]
            run = self.client.create_run(experiment, start_time=info["start_time"], run_name=info["name"],
                                         tags={**own, **({USER: user} if user else {})})
            target_id = run.info.run_id
            # not saved yet: a run killed before it is done is adopted by its braid.source_id tag
            idmap.set_run(run_uuid, target_id, done=False)
            self.created["runs"] += 1
        else:
            self.reused["runs (finished after an interruption)"] += 1

        truncated: list[dict[str, str]] = []
        params: list[Param] = []
        if parts["params"] is not None:
            for key, value in parts["params"].select("key", "value").iter_rows():
                if value is not None and len(value) > MAX_PARAM_LENGTH:
                    # MLflow would silently cut it at 6,000 characters: keep the head, write it all
                    path = long_value_path("params", key)
                    self.client.log_text(target_id, value, path)
                    truncated.append({"kind": "param", "key": key, "artifact": path})
                    value = value[:MAX_PARAM_LENGTH]
                params.append(Param(key, value))
        run_tags: list[RunTag] = []
        for key, value in tags.items():
            if value is not None and len(value) > MAX_TAG_LENGTH:
                path = long_value_path("tags", key)
                self.client.log_text(target_id, value, path)
                truncated.append({"kind": "tag", "key": key, "artifact": path})
                value = value[:MAX_TAG_LENGTH]
            run_tags.append(RunTag(key, value))
        if truncated:
            run_tags.append(RunTag(TRUNCATED_TAG, json.dumps(truncated, sort_keys=True)))
        for chunk in _chunks(params, PARAMS_TAGS_PER_BATCH):
            self._log_batch(target_id, params=chunk)
        for chunk in _chunks(run_tags, PARAMS_TAGS_PER_BATCH):
            self._log_batch(target_id, tags=chunk)
        if parts["metrics"] is not None:
            points = [Metric(k, v, ts, st) for k, v, ts, st in
                      parts["metrics"].select("key", "value", "timestamp", "step").iter_rows()]
            for chunk in _chunks(points, METRICS_PER_BATCH):
                self._log_batch(target_id, metrics=chunk)
        if parts["dataset_inputs"] is not None:
            inputs = [
                DatasetInput(Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                                     source=d["source"], schema=d["schema"], profile=d["profile"]),
                             tags=[InputTag(k, v) for k, v in json.loads(d["tags"] or "{}").items()])
                for d in parts["dataset_inputs"].iter_rows(named=True)]
            self.client.log_inputs(target_id, datasets=inputs)
        if info["status"] in TERMINAL and info["end_time"] is not None:
            self.client.set_terminated(target_id, info["status"], end_time=info["end_time"])
        elif info["status"] in TERMINAL:
            # set_terminated would stamp the time of the migration as the end: keep it unknown
            self.client.update_run(target_id, status=info["status"])
        elif info["status"] and info["status"] != "RUNNING":
            self.client.update_run(target_id, status=info["status"])
        idmap.set_run(run_uuid, target_id, done=True)
        idmap.save()

    def _log_batch(self, run_id: str, *, metrics: list[Metric] | None = None, params: list[Param] | None = None,
                   tags: list[RunTag] | None = None) -> None:
        """One log_batch (within MLflow's per-batch limits), straight to the client's store.

        MlflowClient.log_batch reads the user's session: it gives every metric without a model
        the active model (mlflow.get_active_model_id: set_active_model, or MLFLOW_ACTIVE_MODEL_ID /
        _MLFLOW_ACTIVE_MODEL_ID in the environment, read once per thread), and logs asynchronously
        under MLFLOW_ENABLE_ASYNC_LOGGING. The store writes the points as given, now: a migration
        links a point to the model the source linked it to, or to none."""
        self.client._tracking_client.store.log_batch(run_id=run_id, metrics=metrics or [], params=params or [],
                                                     tags=tags or [])

    # -- metrics logged against logged models --------------------------------------------------
    def model_metrics(self, plan: Plan, idmap: IdMap, experiments: dict[str, str],
                      problems: dict[str, Counter[str]]) -> None:
        """Link the planned model metrics to the target's logged models, once those exist: rows of
        logged_model_metrics for a database target (`_mlflow_bulk`), log_batch with the model id
        and dataset fields for a server. Only what the target's models lack is written."""
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        from ._models import model_metric_rows

        rows = model_metric_rows(plan, idmap, experiments)
        if rows.is_empty():
            return
        store = self.client._tracking_client.store
        if self.bulk and isinstance(store, SqlAlchemyStore):
            from ._mlflow_bulk import write_model_metrics

            written, lone = write_model_metrics(store, rows), 0
        else:
            written, lone = self._log_model_metrics(rows, plan.frame("metrics"))
        if lone:
            problems["model_metric"][METRIC_NO_RUN_POINT] += lone
        if written:
            self.created["logged model metrics"] += written
        if held := rows.height - written - lone:
            self.reused["logged model metrics"] += held

    def _log_model_metrics(self, rows: pl.DataFrame, points: pl.DataFrame) -> tuple[int, int]:
        """log_batch of each row the target's models lack, with its model id: MLflow writes the
        model's row and dedups the run's point, which braid logged already. The numbers logged and
        left out (no run point to log them with)."""
        from ._models import MODEL_METRIC_KEY

        held = pl.DataFrame([(m.model_id, m.key, m.timestamp, m.step, m.run_id)
                             for model in rows["model_id"].unique().to_list()
                             for m in self.client.get_logged_model(model).metrics or []],
                            schema=rows.select(MODEL_METRIC_KEY).schema, orient="row")
        missing = _run_points(rows.join(held, on=MODEL_METRIC_KEY, how="anti"), points)
        logged = missing.filter(pl.col("point").is_not_null())
        fields = ("key", "point", "timestamp", "step", "model_id", "dataset_name", "dataset_digest")
        for (run_id,), part in logged.group_by("run_id", maintain_order=True):
            metrics = [Metric(key, point, timestamp, step, model_id=model, dataset_name=name, dataset_digest=digest)
                       for key, point, timestamp, step, model, name, digest in part.select(fields).iter_rows()]
            for chunk in _chunks(metrics, METRICS_PER_BATCH):
                self._log_batch(str(run_id), metrics=chunk)
        return logged.height, missing.height - logged.height

    # -- runs' links to logged models ---------------------------------------------------------
    def model_links(self, plan: Plan, idmap: IdMap) -> None:
        """Link the target's runs to the logged models they used and produced, once those exist:
        rows of the inputs table for a database target (`_mlflow_bulk`), log_inputs and log_outputs
        for a server. Only the links the target's runs lack are written."""
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        from ._models import model_link_rows

        rows = model_link_rows(plan, idmap)
        if rows.is_empty():
            return
        store = self.client._tracking_client.store
        if self.bulk and isinstance(store, SqlAlchemyStore):
            from ._mlflow_bulk import write_model_links

            written = write_model_links(store, rows)
        else:
            written = self._log_model_links(rows)
        for kind, n in rows.group_by("kind", maintain_order=True).len().iter_rows():
            label = f"{kind.replace('_', ' ')}s"
            if new := written.get(kind, 0):
                self.created[label] += new
            if n - new:
                self.reused[label] += n - new

    def _log_model_links(self, rows: pl.DataFrame) -> Counter[str]:
        """log_inputs and log_outputs of the links each run lacks (get_run says what it holds:
        log_outputs refuses a pair the run holds already). The number logged per kind."""
        logged: Counter[str] = Counter()
        for (run_id,), part in rows.group_by("run_id", maintain_order=True):
            run = self.client.get_run(str(run_id))
            held = {("model_input", m.model_id) for m in (run.inputs.model_inputs if run.inputs else None) or []}
            held |= {("model_output", m.model_id) for m in (run.outputs.model_outputs if run.outputs else None) or []}
            fresh = [(k, m, s) for k, m, s in part.select("kind", "model_id", "step").iter_rows() if (k, m) not in held]
            inputs = [LoggedModelInput(m) for k, m, _ in fresh if k == "model_input"]
            outputs = [LoggedModelOutput(m, s) for k, m, s in fresh if k == "model_output"]
            if inputs:
                self.client.log_inputs(str(run_id), models=inputs)
            if outputs:
                self.client.log_outputs(str(run_id), outputs)
            logged.update({"model_input": len(inputs), "model_output": len(outputs)})
        return logged

    # -- registry -----------------------------------------------------------------------------
    def registry(self, plan: Plan, idmap: IdMap, problems: dict[str, Counter[str]]) -> None:
        raw = plan.read.raw
        descriptions = dict(raw["registered_models"].select("name", "description").iter_rows())
        for name in raw["registered_models"]["name"].to_list():
            if idmap.get("registered_models", name) is not None:
                self.reused["registered_models"] += 1
                continue
            try:
                self.client.get_registered_model(name)
                self.reused["registered_models"] += 1
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                tags = dict(raw["registered_model_tags"].filter(pl.col("name") == name)
                            .select("key", "value").iter_rows())
                self.client.create_registered_model(name, tags=tags, description=descriptions.get(name) or None)
                self.created["registered_models"] += 1
            idmap.set("registered_models", name, name)
            idmap.save()
        versions = raw["model_versions"].filter(pl.col("current_stage").fill_null("") != "Deleted_Internal") \
            .with_columns(n=pl.col("version").cast(pl.Int64)).sort("name", "n")
        existing: dict[str, str] = {}
        by_location = dict(raw["logged_models"].select("artifact_location", "model_id").iter_rows())
        for name in versions["name"].unique().to_list():
            for mv in self.client.search_model_versions(f"name = '{name}'"):
                if SOURCE_ID_TAG in mv.tags:
                    existing[mv.tags[SOURCE_ID_TAG]] = mv.version
        for v in versions.iter_rows(named=True):
            key = f"{v['name']}/{v['version']}"
            target_version = idmap.get("model_versions", key) or existing.get(key)
            if target_version is not None:
                self.reused["model_versions"] += 1
            else:
                tags = dict(raw["model_version_tags"].filter(
                    (pl.col("name") == v["name"]) & (pl.col("version") == v["version"])).select("key", "value").iter_rows())
                run_id = idmap.run_target(v["run_id"]) if v["run_id"] else None
                # a version of a logged model that travelled names the target's model (the source
                # names it by id, or by its storage location as a file store records it)
                logged = by_location.get(v["storage_location"]) or by_location.get(v["source"]) \
                    or (v["source"] or "").removeprefix("models:/")
                model = idmap.get("logged_models", logged)
                # (by its storage location: a `models:/` source is resolved through the global tracking URI)
                source = self.client.get_logged_model(model).artifact_location if model \
                    else v["storage_location"] or v["source"]
                try:
                    mv = self.client.create_model_version(
                        v["name"], source, run_id=run_id, model_id=model,
                        tags={**tags, SOURCE_ID_TAG: key}, run_link=v["run_link"] or None,
                        description=v["description"] or None)
                except MlflowException as exc:
                    problems["model_version"][f"the target refused the version: {exc.message[:200]}"] += 1
                    continue
                target_version = mv.version
                stage = v["current_stage"]
                if stage and stage != "None":
                    self.client.transition_model_version_stage(v["name"], target_version, stage)
                self.created["model_versions"] += 1
            idmap.set("model_versions", key, str(target_version))
            idmap.save()
        for name, alias, version in raw["aliases"].select("name", "alias", "version").iter_rows():
            mapped = idmap.get("model_versions", f"{name}/{version}")
            if mapped is None:
                problems["alias"]["alias of a version that was not carried"] += 1
                continue
            self.client.set_registered_model_alias(name, alias, mapped)
