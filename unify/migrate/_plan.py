"""What a migration creates, decided from the source's frames before anything is written.

The field mappings are data (`FIELDS`): for every entity kind, each field the source holds and
what happens to it on the way: carried as is, transformed (and how), or not carried (and why).
The plan, the expected report and the writer all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from braid.connectors.mlflow import open_store
from braid.connectors.mlflow._artifacts import list_local
from braid.connectors.mlflow._normalise import PARENT, normalise
from braid.connectors.mlflow._raw import RawStore
from braid.unify.source import SourceSpec, no_progress

# MLflow's own limits: longer values are silently truncated by the client and server
# (mlflow.utils.validation truncates params at 6,000 and tags at 8,000 characters)
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
# log_batch limits of the MLflow API
METRICS_PER_BATCH = 1000
PARAMS_TAGS_PER_BATCH = 100
# where a value too long for the target is written in full, inside the target run's artifacts
LONG_VALUE_DIR = "braid/long_values"
# tags braid sets on what it creates: the original ids travel with the objects
SOURCE_ID_TAG, SOURCE_NAME_TAG = "braid.source_id", "braid.source"
SOURCE_PARENT_TAG = "braid.source_parent_id"
TRUNCATED_TAG = "braid.truncated"

How = Literal["carried", "transformed", "not_carried"]

# entity kind -> field -> (how, why); the report counts entities, the mapping says what happens.
# A field declared not carried is counted, per value, under `<kind>_detail` (`RAW_COLUMNS` names
# the column each field is read from).
TARGET_STAMPS = "the target stamps its own when braid creates it"
FIELDS: dict[str, dict[str, tuple[How, str]]] = {
    "experiment": {
        "name": ("carried", ""),
        "tags": ("carried", ""),
        "id": ("transformed", "the target assigns its own id; the source id travels as tag braid.source_id"),
        "lifecycle_stage": ("carried", "an experiment travels with its live runs"),
        "artifact_location": ("not_carried", "the target chooses its own artifact root"),
        "creation_time": ("not_carried", "MLflow sets it when the experiment is created"),
        "last_update_time": ("not_carried", "MLflow sets it when the experiment changes"),
    },
    "run": {
        "name": ("carried", ""), "status": ("carried", ""), "start_time": ("carried", ""),
        "end_time": ("carried", ""), "user": ("carried", "through the mlflow.user tag"),
        "git_commit": ("carried", "through the mlflow.source.git.* tags"),
        "id": ("transformed", "the target assigns its own run id; the source id travels as tag braid.source_id"),
        "experiment": ("transformed", "into the target experiment its experiment became"),
        "lifecycle_stage": ("carried", "live runs travel; deleted runs are not migrated (reported per run)"),
        "artifact_uri": ("transformed", "the target gives the run its own artifact location; the files are copied "
                                        "(artifact)"),
    },
    "param": {"value": ("carried", "")},
    "metric_point": {"value": ("carried", "NaN and ±inf included, with the original step and timestamp")},
    "tag": {"value": ("carried", "")},
    "parent_link": {"parent": ("transformed", "mlflow.parentRunId names the parent's id in the target")},
    "dataset_input": {"dataset": ("carried", "name, digest, source, schema, profile and input tags")},
    "registered_model": {"name": ("carried", ""), "tags": ("carried", ""), "description": ("carried", ""),
                         "creation_time": ("not_carried", TARGET_STAMPS),
                         "last_updated_time": ("not_carried", TARGET_STAMPS)},
    "model_version": {
        "version": ("carried", "versions are created in order, so numbers match in a fresh target"),
        "tags": ("carried", ""), "description": ("carried", ""), "run_link": ("carried", ""),
        "stage": ("carried", "transitioned to the same stage"),
        "run": ("transformed", "names the target's run when its run travels, else none"),
        "source": ("transformed", "a version of a logged model that travelled names the target's model; another "
                                  "is created from its storage location, else its source"),
        "storage_location": ("transformed", "where the target keeps the version's files"),
        "creation_time": ("not_carried", TARGET_STAMPS),
        "last_updated_time": ("not_carried", TARGET_STAMPS),
        "user_id": ("not_carried", "MLflow's API creates a version without a user"),
        "status": ("not_carried", "the target sets its own (READY once created)"),
        "status_message": ("not_carried", "the target sets its own"),
    },
    "alias": {"alias": ("carried", "")},
    "artifact": {"bytes": ("carried", "each run's files are copied into the target run, every destination path "
                                      "checked to stay inside the run's artifact folder")},
    "logged_model": {
        "model": ("carried", "created in the target with name, params, tags, model type, status and files, under "
                             "the run it came from; registry versions name it (models:/<target model id>)"),
        "id": ("transformed", "the target assigns its own model id; the source id travels as tag braid.source_id"),
        "experiment": ("transformed", "into the target experiment its experiment became"),
        "run": ("transformed", "names the target's run"),
        "lifecycle_stage": ("carried", "live models travel with their runs; deleted ones are not migrated "
                                       "(reported per model)"),
        "artifact_location": ("transformed", "the target gives the model its own artifact location; the files are "
                                             "copied (artifact)"),
        "creation_time": ("not_carried", TARGET_STAMPS),
        "last_updated_time": ("not_carried", TARGET_STAMPS),
        "status_message": ("not_carried", "MLflow's API finalizes a model with a status only"),
    },
    "model_metric": {"model": ("carried", "linked to the target's model and run, with its value, step, timestamp "
                                          "and dataset name and digest (MLflow's logged_model_metrics); the point "
                                          "is also its run's metric, as MLflow keeps it")},
    "model_input": {"model": ("carried", "the run used the logged model (MLflow's inputs table, RUN_INPUT -> "
                                         "MODEL_INPUT): linked to the target's run and model")},
    "model_output": {"model": ("carried", "the run produced the logged model (MLflow's inputs table, RUN_OUTPUT -> "
                                          "MODEL_OUTPUT): linked to the target's run and model, with its step")},
}
# Where the report accounts for each table braid's MLflow connector reads (connectors/mlflow/_raw.py
# RAW_SCHEMAS), so that nothing a source holds is dropped without a line: `RAW_KINDS` names the
# report kinds whose counts (carried + transformed + not carried) hold every row of the table,
# each row once; the rows of a `RAW_PART_OF` table belong to a row of another table (by the key
# columns named) and travel, or stay, with it; a `RAW_DERIVED` table is made by the target itself.
RAW_KINDS: dict[str, tuple[str, ...]] = {
    "experiments": ("experiment",), "runs": ("run",), "params": ("param",), "metrics": ("metric_point",),
    "tags": ("tag", "parent_link"), "dataset_inputs": ("dataset_input",), "model_inputs": ("model_input",),
    "model_outputs": ("model_output",), "logged_models": ("logged_model",),
    "logged_model_metrics": ("model_metric",), "registered_models": ("registered_model",),
    "model_versions": ("model_version",), "aliases": ("alias",), "artifacts": ("artifact",),
}
RAW_PART_OF: dict[str, tuple[str, tuple[str, ...]]] = {
    "experiment_tags": ("experiments", ("experiment_id",)),
    "logged_model_params": ("logged_models", ("model_id",)),
    "logged_model_tags": ("logged_models", ("model_id",)),
    "registered_model_tags": ("registered_models", ("name",)),
    "model_version_tags": ("model_versions", ("name", "version")),
}
RAW_DERIVED: dict[str, str] = {
    "latest_metrics": "MLflow keeps each run's newest point per key as the history is logged",
}
# each raw column -> the field of its table's kind (FIELDS) that says what happens to it; None for
# a column that names the row or its owner (the row travels, or not, as a whole)
RAW_COLUMNS: dict[str, dict[str, str | None]] = {
    "experiments": {"experiment_id": "id", "name": "name", "artifact_location": "artifact_location",
                    "lifecycle_stage": "lifecycle_stage", "creation_time": "creation_time",
                    "last_update_time": "last_update_time"},
    "experiment_tags": {"experiment_id": None, "key": None, "value": "tags"},
    "runs": {"run_uuid": "id", "name": "name", "experiment_id": "experiment", "user_id": "user", "status": "status",
             "start_time": "start_time", "end_time": "end_time", "lifecycle_stage": "lifecycle_stage",
             "artifact_uri": "artifact_uri"},
    "params": {"run_uuid": None, "key": None, "value": "value"},
    "tags": {"run_uuid": None, "key": None, "value": "value"},
    "metrics": {"run_uuid": None, "key": None, "value": "value", "timestamp": "value", "step": "value"},
    "dataset_inputs": {"run_uuid": None, "name": "dataset", "digest": "dataset", "source_type": "dataset",
                       "source": "dataset", "schema": "dataset", "profile": "dataset", "tags": "dataset"},
    "model_inputs": {"run_uuid": None, "model_id": None},
    "model_outputs": {"run_uuid": None, "model_id": None, "step": "model"},
    "logged_models": {"model_id": "id", "experiment_id": "experiment", "name": "model",
                      "artifact_location": "artifact_location", "creation_time": "creation_time",
                      "last_updated_time": "last_updated_time", "status": "model",
                      "lifecycle_stage": "lifecycle_stage", "model_type": "model", "source_run_id": "run",
                      "status_message": "status_message"},
    "logged_model_params": {"model_id": None, "key": None, "value": "model"},
    "logged_model_tags": {"model_id": None, "key": None, "value": "model"},
    "logged_model_metrics": {"model_id": None, "key": None, "timestamp": None, "step": None, "run_id": None,
                             "value": "model", "dataset_name": "model", "dataset_digest": "model"},
    "registered_models": {"name": "name", "creation_time": "creation_time", "last_updated_time": "last_updated_time",
                          "description": "description"},
    "registered_model_tags": {"name": None, "key": None, "value": "tags"},
    "model_versions": {"name": None, "version": "version", "creation_time": "creation_time",
                       "last_updated_time": "last_updated_time", "description": "description",
                       "user_id": "user_id", "current_stage": "stage", "source": "source", "run_id": "run",
                       "status": "status", "status_message": "status_message", "run_link": "run_link",
                       "storage_location": "storage_location"},
    "model_version_tags": {"name": None, "version": None, "key": None, "value": "tags"},
    "aliases": {"name": None, "alias": "alias", "version": "alias"},
    "artifacts": {"owner": None, "owner_kind": None, "path": "bytes", "size": "bytes", "md5": "bytes"},
}
# a run's links to logged models, rows of MLflow's inputs table: report kind -> (the raw table
# braid's connector reads them into, source_type, destination_type)
MODEL_LINKS = {"model_input": ("model_inputs", "RUN_INPUT", "MODEL_INPUT"),
               "model_output": ("model_outputs", "RUN_OUTPUT", "MODEL_OUTPUT")}
# why a whole entity is left out
DELETED = "deleted in the source"
RUN_DELETED = "its run is deleted in the source"
EXPERIMENT_EMPTY = "it holds no live run: experiments travel with their runs"
MODEL_NOT_CARRIED = "its logged model is not carried (see logged_model)"
PARENT_NOT_MIGRATED = "the parent run is not part of this migration"
MODEL_RUN_NOT_MIGRATED = "the run that logged the model is not part of this migration"
MODEL_NO_RUN = ("the model was not logged by a run (e.g. made by set_active_model), and logged models travel with "
                "the runs that logged them")
METRIC_MODEL_NOT_MIGRATED = "the model it was logged against is not part of this migration"
METRIC_MODEL_DELETED = f"the model it was logged against is {DELETED}"
METRIC_RUN_NOT_MIGRATED = "the run that logged it against the model is not part of this migration"
METRIC_NO_RUN_POINT = ("its run holds no such metric point in the source, and MLflow's API links a point to a "
                       "model only while logging it to the run (a database target gets the link alone)")
LINK_RUN_NOT_MIGRATED = "the run is not part of this migration (its model is)"
LINK_MODEL_NOT_MIGRATED = "the model is not part of this migration: the run that logged it is not"
LINK_MODEL_GONE = "the model is deleted in the source, or not in it"
PARAM_TOO_LONG = (f"longer than MLflow's {MAX_PARAM_LENGTH:,}-character param limit: the param holds the first "
                  f"{MAX_PARAM_LENGTH:,} characters, the full value is the artifact {LONG_VALUE_DIR}/params/<key>.txt")
TAG_TOO_LONG = (f"longer than MLflow's {MAX_TAG_LENGTH:,}-character tag limit: the tag holds the first "
                f"{MAX_TAG_LENGTH:,} characters, the full value is the artifact {LONG_VALUE_DIR}/tags/<key>.txt")


def table_kind(table: str) -> str:
    """The report kind a raw table's rows (or, for a `RAW_PART_OF` table, its owners' rows) count in.

    >>> table_kind("logged_model_tags")
    'logged_model'
    """
    return RAW_KINDS[table][0] if table in RAW_KINDS else table_kind(RAW_PART_OF[table][0])


@dataclass
class SourceRead:
    """One MLflow store as braid's connector reads it: the store's frames and braid's graph."""

    raw: RawStore
    graph: dict[str, pl.DataFrame]


@dataclass
class Plan:
    """The runs to migrate (parents before children) and everything they carry."""

    source: str
    target: str
    read: SourceRead
    run_ids: list[str]
    experiment_ids: list[str]
    skipped_runs: dict[str, str] = field(default_factory=dict)

    def frame(self, table: str) -> pl.DataFrame:
        """A raw table restricted to the planned runs."""
        frame = self.read.raw[table]
        return frame.filter(pl.col("run_uuid").is_in(self.run_ids)) if "run_uuid" in frame.columns else frame

    def logged_models(self) -> pl.DataFrame:
        """The live MLflow 3 logged models of the planned runs: they travel with their runs."""
        return self.read.raw["logged_models"].filter(
            (pl.col("lifecycle_stage").fill_null("active") != "deleted") & pl.col("source_run_id").is_in(self.run_ids))

    def model_metrics(self) -> pl.DataFrame:
        """The metrics logged against those models by planned runs: they travel with both (a run may
        log a metric against another run's model)."""
        return self.read.raw["logged_model_metrics"].filter(
            pl.col("model_id").is_in(self.logged_models()["model_id"].implode()) & pl.col("run_id").is_in(self.run_ids))

    def model_links(self, kind: str) -> pl.DataFrame:
        """A run's links to logged models of one kind (`MODEL_LINKS`): those of the planned runs, and
        those of other runs to a model that travels, each with `why` it stays behind (null: it
        travels, as both its run and its model do)."""
        raw = self.read.raw
        live = raw["logged_models"].filter(pl.col("lifecycle_stage").fill_null("active") != "deleted")
        planned = pl.col("run_uuid").is_in(self.run_ids)
        travels = pl.col("model_id").is_in(self.logged_models()["model_id"].implode())
        why = (pl.when(planned & travels).then(None)
               .when(~planned).then(pl.lit(LINK_RUN_NOT_MIGRATED))
               .when(~pl.col("model_id").is_in(live["model_id"].implode())).then(pl.lit(LINK_MODEL_GONE))
               .when(pl.col("model_id").is_in(live.filter(pl.col("source_run_id").is_null())["model_id"].implode()))
               .then(pl.lit(MODEL_NO_RUN))
               .otherwise(pl.lit(LINK_MODEL_NOT_MIGRATED)))
        return raw[MODEL_LINKS[kind][0]].filter(planned | travels).with_columns(why=why)


def read_mlflow(spec: SourceSpec) -> SourceRead:
    """Read a whole MLflow store, metric history included, with braid's own connector."""
    store = open_store(spec)
    try:
        raw = store.read_core(no_progress)
        raw["metrics"] = store.read_metric_history(None, no_progress)
        owners = [(r, "run", u) for r, u in raw["runs"].select("run_uuid", "artifact_uri").iter_rows()]
        owners += [(m, "model", u) for m, u in raw["logged_models"].select("model_id", "artifact_location").iter_rows()]
        raw["artifacts"] = list_local(owners, None, no_progress)[0]
    finally:
        store.close()
    return SourceRead(raw, normalise(raw, spec.name))


def parent_first(runs: pl.DataFrame, tags: pl.DataFrame) -> list[str]:
    """Run ids ordered so that every parent comes before its children (then by start time)."""
    parents = dict(tags.filter(pl.col("key") == PARENT).select("run_uuid", "value").iter_rows())
    ids = runs.sort("start_time", "run_uuid", nulls_last=True)["run_uuid"].to_list()
    present, depth = set(ids), {}

    def level(run: str, seen: frozenset[str] = frozenset()) -> int:
        if run not in depth:
            parent = parents.get(run)
            depth[run] = 0 if parent not in present or parent in seen else 1 + level(parent, seen | {run})
        return depth[run]

    return sorted(ids, key=level)  # sorted() is stable: start-time order within a level


def make_plan(source: str, target: str, read: SourceRead, *, select: list[str] | None = None) -> Plan:
    """The runs to carry: every live run of the source, or those `select` names (run uuids)."""
    runs = read.raw["runs"]
    skipped: dict[str, str] = {}
    deleted = runs.filter(pl.col("lifecycle_stage").fill_null("active") == "deleted")["run_uuid"].to_list()
    skipped.update(dict.fromkeys(deleted, DELETED))
    live = runs.filter(~pl.col("run_uuid").is_in(deleted))
    if select is not None:
        live = live.filter(pl.col("run_uuid").is_in(select))
    run_ids = parent_first(live, read.raw["tags"])
    experiments = live["experiment_id"].unique(maintain_order=True).to_list()
    return Plan(source, target, read, run_ids, experiments, skipped)
