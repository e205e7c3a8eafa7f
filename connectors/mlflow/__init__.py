"""The MLflow connector: database stores through read-only SQL, tracking servers through REST.

Steps: open the store (checking its schema) -> read everything but metric history -> decide
which runs changed since the cursor -> read their full history -> list and hash local
artifacts -> normalise into braid's graph.

    [[sources]]
    tool = "mlflow"
    uri = "sqlite:///mlflow.db"   # or postgresql://, mysql://, http(s)://

The uri may be left out: MLFLOW_TRACKING_URI is used then. Credentials never belong in
braid.toml: a tracking server's token comes from MLFLOW_TRACKING_TOKEN (or
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), a database password from the URL in
MLFLOW_TRACKING_URI or the driver's own environment (PGPASSWORD, ...).
"""

from __future__ import annotations

import os
from typing import Protocol

import polars as pl

from braid.unify.errors import SourceError
from braid.unify.source import PreviousSync, Progress, SourceBatch, SourceSpec

from ._artifacts import list_local
from ._normalise import normalise
from ._raw import RawStore

# the cursor's format; a change forces a full read
CURSOR_VERSION = 1
SIGNATURE_SCHEMA = {"run_uuid": pl.String(), "signature": pl.UInt64()}


class Store(Protocol):
    schema_version: str

    def read_core(self, progress: Progress) -> RawStore: ...
    def read_metric_history(self, run_uuids: list[str] | None, progress: Progress) -> pl.DataFrame: ...
    def close(self) -> None: ...


def tracking_uri(spec: SourceSpec) -> str:
    uri = spec.options.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise SourceError(spec.name, "no uri: set `uri` in braid.toml or MLFLOW_TRACKING_URI")
    return str(uri)


def open_store(spec: SourceSpec) -> Store:
    """The reader for the source's URI: REST for http(s), direct SQL for databases."""
    uri = tracking_uri(spec)
    if uri.startswith(("http://", "https://")):
        from ._rest import RestStore

        return RestStore(spec.name, uri)
    from ._sql import SqlStore

    return SqlStore(spec.name, uri, base_dir=spec.base_dir)


def run_signatures(raw: RawStore) -> pl.DataFrame:
    """A hash per run of everything that changes when its metric history grows."""
    latest = raw["latest_metrics"].sort("run_uuid", "key").group_by("run_uuid", maintain_order=True).agg(
        latest=pl.concat_str("key", "value", "timestamp", "step", separator="|", ignore_nulls=True).str.join(";"))
    return raw["runs"].join(latest, on="run_uuid", how="left").select(
        "run_uuid",
        signature=pl.concat_str("status", "end_time", "lifecycle_stage", "latest", separator="|",
                                ignore_nulls=True).hash(seed=0),
    )


def changed_runs(signatures: pl.DataFrame, previous: PreviousSync | None, schema_version: str) -> list[str] | None:
    """Runs whose history must be read again; None means all of them."""
    if previous is None or previous.cursor.get("version") != CURSOR_VERSION \
            or previous.cursor.get("schema_version") != schema_version or "signatures" not in previous.state:
        return None
    old = previous.state["signatures"]
    changed = signatures.join(old, on=["run_uuid", "signature"], how="anti")["run_uuid"].to_list()
    return None if len(changed) > signatures.height // 2 else changed


def read_source(spec: SourceSpec, *, previous: PreviousSync | None, progress: Progress) -> SourceBatch:
    """Read one MLflow store into braid's frames."""
    store = open_store(spec)
    try:
        raw = store.read_core(progress)
        signatures = run_signatures(raw)
        changed = changed_runs(signatures, previous, store.schema_version)
        raw["metrics"] = store.read_metric_history(changed, progress)
        owners = [(r, "run", u) for r, u in raw["runs"].select("run_uuid", "artifact_uri").iter_rows()]
        owners += [(m, "model", u) for m, u in raw["logged_models"].select("model_id", "artifact_location").iter_rows()]
        cache = previous.state.get("artifact_hashes") if previous else None
        artifacts, hashes, remote = list_local(owners, cache, progress)
        if remote and hasattr(store, "list_artifacts"):
            artifacts = pl.concat([artifacts, store.list_artifacts(remote, progress)])
            remote = []
        raw["artifacts"] = artifacts
    finally:
        store.close()
    notes = []
    if remote:
        notes.append(f"{len(remote)} runs or models keep artifacts in a remote store: not listed, not hashed")
    tables = normalise(raw, spec.name)
    partial = frozenset() if changed is None else frozenset({"metrics"})
    rewritten = frozenset(f"{spec.name}:run/{r}" for r in (changed or []))
    return SourceBatch(
        tables=tables,
        cursor={"version": CURSOR_VERSION, "schema_version": store.schema_version, "runs": raw["runs"].height},
        state={"signatures": signatures.sort("run_uuid"), "artifact_hashes": hashes},
        partial=partial, rewritten_runs=rewritten, notes=notes,
    )
