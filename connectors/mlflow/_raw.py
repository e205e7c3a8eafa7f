"""The store-shaped frames both MLflow readers produce: SQL tables and REST answers meet here.

The direct SQL reader and the REST reader each fill a `RawStore` with these exact schemas, and
one normaliser turns it into braid's graph, so both paths give the same graph by construction.
Times are MLflow's epoch milliseconds; ids are MLflow's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

S, I, F = pl.String(), pl.Int64(), pl.Float64()

RAW_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "experiments": {
        "experiment_id": S, "name": S, "artifact_location": S, "lifecycle_stage": S,
        "creation_time": I, "last_update_time": I,
    },
    "experiment_tags": {"experiment_id": S, "key": S, "value": S},
    "runs": {
        "run_uuid": S, "name": S, "experiment_id": S, "user_id": S, "status": S,
        "start_time": I, "end_time": I, "lifecycle_stage": S, "artifact_uri": S,
    },
    "params": {"run_uuid": S, "key": S, "value": S},
    "tags": {"run_uuid": S, "key": S, "value": S},
    # the newest value of each (run, key): what decides whether a run's history changed
    "latest_metrics": {"run_uuid": S, "key": S, "value": F, "timestamp": I, "step": I},
    "metrics": {"run_uuid": S, "key": S, "value": F, "timestamp": I, "step": I},
    # one row per (run, dataset) input; `tags` is the input's tags as a sorted JSON object
    "dataset_inputs": {
        "run_uuid": S, "name": S, "digest": S, "source_type": S, "source": S,
        "schema": S, "profile": S, "tags": S,
    },
    "model_inputs": {"run_uuid": S, "model_id": S},
    "model_outputs": {"run_uuid": S, "model_id": S, "step": I},
    "logged_models": {
        "model_id": S, "experiment_id": S, "name": S, "artifact_location": S,
        "creation_time": I, "last_updated_time": I, "status": S, "lifecycle_stage": S,
        "model_type": S, "source_run_id": S, "status_message": S,
    },
    "logged_model_params": {"model_id": S, "key": S, "value": S},
    "logged_model_tags": {"model_id": S, "key": S, "value": S},
    "logged_model_metrics": {
        "model_id": S, "key": S, "value": F, "timestamp": I, "step": I, "run_id": S,
        "dataset_name": S, "dataset_digest": S,
    },
    "registered_models": {
        "name": S, "creation_time": I, "last_updated_time": I, "description": S,
    },
    "registered_model_tags": {"name": S, "key": S, "value": S},
    "model_versions": {
        "name": S, "version": S, "creation_time": I, "last_updated_time": I, "description": S,
        "user_id": S, "current_stage": S, "source": S, "run_id": S, "status": S,
        "status_message": S, "run_link": S, "storage_location": S,
    },
    "model_version_tags": {"name": S, "version": S, "key": S, "value": S},
    "aliases": {"name": S, "alias": S, "version": S},
    # files under a run's or a LoggedModel's artifact root; md5 null where bytes are unreadable
    "artifacts": {"owner": S, "owner_kind": S, "path": S, "size": I, "md5": S},
}

# LoggedModel status: an integer enum in SQL, its proto name over REST; braid shows the short name
LOGGED_MODEL_STATUS: dict[str, str] = {
    "0": "UNSPECIFIED", "1": "PENDING", "2": "READY", "3": "FAILED",
    "LOGGED_MODEL_STATUS_UNSPECIFIED": "UNSPECIFIED", "LOGGED_MODEL_PENDING": "PENDING",
    "LOGGED_MODEL_READY": "READY", "LOGGED_MODEL_UPLOAD_FAILED": "FAILED",
}


def raw_frame(table: str, data: object = None) -> pl.DataFrame:
    """A frame of one raw table from rows (tuples in schema order) or columns (a dict)."""
    schema = RAW_SCHEMAS[table]
    if data is None:
        return pl.DataFrame(schema=schema)
    if isinstance(data, dict):
        return pl.DataFrame({k: data.get(k) for k in schema} if data else None, schema=schema)
    return pl.DataFrame(data, schema=schema, orient="row")


@dataclass
class RawStore:
    """Everything read from one MLflow store, table by table."""

    schema_version: str
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)

    def __getitem__(self, table: str) -> pl.DataFrame:
        frame = self.frames.get(table)
        return raw_frame(table) if frame is None else frame

    def __setitem__(self, table: str, frame: pl.DataFrame) -> None:
        expected = RAW_SCHEMAS[table]
        self.frames[table] = frame.select(
            [pl.col(k).cast(t) if k in frame.columns else pl.lit(None, t).alias(k)
             for k, t in expected.items()]
        )
