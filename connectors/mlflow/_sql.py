"""Direct, read-only SQL on MLflow's database stores (sqlite, PostgreSQL, MySQL/MariaDB).

Reading MLflow's tables directly is 50-100x faster than its client (see reference/mlflow.md).
Every connection is read-only: sqlite opens with mode=ro, PostgreSQL sessions default to
read-only transactions, MySQL sessions are set READ ONLY. braid never writes, not even ANALYZE.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from braid.unify.errors import (
    SchemaVersionError,
    SourceAuthError,
    SourceError,
    SourceUnreachable,
)
from braid.unify.source import Progress

from ._raw import RAW_SCHEMAS, RawStore
from ._schema_versions import KNOWN_REVISIONS, NEWEST_KNOWN_RELEASE

# raw table -> (SQL table, {raw column: SQL expression}); a column whose SQL column is missing
# in an older schema reads as NULL. Declared once; the reader builds every SELECT from this.
TABLE_MAP: dict[str, tuple[str, dict[str, str]]] = {
    "experiments": ("experiments", {
        "experiment_id": "experiment_id", "name": "name", "artifact_location": "artifact_location",
        "lifecycle_stage": "lifecycle_stage", "creation_time": "creation_time",
        "last_update_time": "last_update_time",
    }),
    "experiment_tags": ("experiment_tags", {"experiment_id": "experiment_id", "key": "key", "value": "value"}),
    "runs": ("runs", {
        "run_uuid": "run_uuid", "name": "name", "experiment_id": "experiment_id",
        "user_id": "user_id", "status": "status", "start_time": "start_time",
        "end_time": "end_time", "lifecycle_stage": "lifecycle_stage", "artifact_uri": "artifact_uri",
    }),
    "params": ("params", {"run_uuid": "run_uuid", "key": "key", "value": "value"}),
    "tags": ("tags", {"run_uuid": "run_uuid", "key": "key", "value": "value"}),
    "latest_metrics": ("latest_metrics", {
        "run_uuid": "run_uuid", "key": "key", "value": "value", "timestamp": "timestamp",
        "step": "step", "is_nan": "is_nan",
    }),
    "metrics": ("metrics", {
        "run_uuid": "run_uuid", "key": "key", "value": "value", "timestamp": "timestamp",
        "step": "step", "is_nan": "is_nan",
    }),
    "logged_models": ("logged_models", {
        "model_id": "model_id", "experiment_id": "experiment_id", "name": "name",
        "artifact_location": "artifact_location", "creation_time": "creation_timestamp_ms",
        "last_updated_time": "last_updated_timestamp_ms", "status": "status",
        "lifecycle_stage": "lifecycle_stage", "model_type": "model_type",
        "source_run_id": "source_run_id", "status_message": "status_message",
    }),
    "logged_model_params": ("logged_model_params", {"model_id": "model_id", "key": "param_key", "value": "param_value"}),
    "logged_model_tags": ("logged_model_tags", {"model_id": "model_id", "key": "tag_key", "value": "tag_value"}),
    "logged_model_metrics": ("logged_model_metrics", {
        "model_id": "model_id", "key": "metric_name", "value": "metric_value",
        "timestamp": "metric_timestamp_ms", "step": "metric_step", "run_id": "run_id",
        "dataset_name": "dataset_name", "dataset_digest": "dataset_digest",
    }),
    "registered_models": ("registered_models", {
        "name": "name", "creation_time": "creation_time", "last_updated_time": "last_updated_time",
        "description": "description",
    }),
    "registered_model_tags": ("registered_model_tags", {"name": "name", "key": "key", "value": "value"}),
    "model_versions": ("model_versions", {
        "name": "name", "version": "version", "creation_time": "creation_time",
        "last_updated_time": "last_updated_time", "description": "description",
        "user_id": "user_id", "current_stage": "current_stage", "source": "source",
        "run_id": "run_id", "status": "status", "status_message": "status_message",
        "run_link": "run_link", "storage_location": "storage_location",
    }),
    "model_version_tags": ("model_version_tags", {"name": "name", "version": "version", "key": "key", "value": "value"}),
    "aliases": ("registered_model_aliases", {"name": "name", "alias": "alias", "version": "version"}),
}

# tables whose absence means the store is not MLflow's at all
REQUIRED_TABLES = ("alembic_version", "experiments", "runs", "params", "tags", "metrics")
FETCH_BATCH = 100_000  # rows fetched and turned into a frame at a time
METRIC_CHUNK = 500  # run ids per IN (...) when reading the history of some runs


class SqlStore:
    """A read-only connection to one MLflow database, with the schema checked."""

    def __init__(self, source: str, uri: str, *, base_dir: Path) -> None:
        self.source = source
        self.uri = uri
        self.dialect, self.con = _connect(source, uri, base_dir)
        self.columns = self._introspect()
        missing = [t for t in REQUIRED_TABLES if t not in self.columns]
        if missing:
            raise SourceError(source, f"{_redact(uri)} is not an MLflow store (no table {missing[0]!r})")
        self.schema_version = self._check_version()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------
    def _introspect(self) -> dict[str, set[str]]:
        if self.dialect == "sqlite":
            tables = [r[0] for r in self._rows("SELECT name FROM sqlite_master WHERE type='table'")]
            return {t: {r[1] for r in self._rows(f'PRAGMA table_info("{t}")')} for t in tables}
        schema_filter = "table_schema = current_schema()" if self.dialect == "postgresql" else "table_schema = DATABASE()"
        cols: dict[str, set[str]] = {}
        for table, column in self._rows(
            f"SELECT table_name, column_name FROM information_schema.columns WHERE {schema_filter}"
        ):
            cols.setdefault(str(table).lower(), set()).add(str(column).lower())
        return cols

    def _check_version(self) -> str:
        rows = self._rows("SELECT version_num FROM alembic_version")
        version = rows[0][0] if rows else None
        if version not in KNOWN_REVISIONS:
            raise SchemaVersionError(
                self.source,
                f"unknown MLflow schema version {version!r} in {_redact(self.uri)} "
                f"(braid knows MLflow's schemas up to {NEWEST_KNOWN_RELEASE})",
                hint="point the source at the store's `mlflow server` (uri = \"http://...\") "
                "to read it through the REST API",
            )
        return str(version)

    # -- reading --------------------------------------------------------------------------
    def _batches(self, sql: str, params: Sequence[Any] = ()) -> Iterator[list[tuple[Any, ...]]]:
        """A query's rows, FETCH_BATCH at a time; driver errors become one readable SourceError."""
        cur = self.con.cursor()
        try:
            cur.execute(sql, params) if params else cur.execute(sql)
            while rows := cur.fetchmany(FETCH_BATCH):
                yield list(rows)
        except Exception as exc:  # every driver has its own error tree
            raise SourceError(self.source, f"reading {_redact(self.uri)} failed: {_one_line(exc)}") from exc
        finally:
            cur.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [row for batch in self._batches(sql, params) for row in batch]

    def _frame(self, sql: str, params: Sequence[Any], schema: dict[str, pl.DataType]) -> pl.DataFrame:
        """A query's rows as a typed frame (no inference pass), built a batch at a time so that
        millions of metric points never sit in memory as Python tuples all at once."""
        parts = [pl.DataFrame(rows, schema=schema, orient="row", strict=False)
                 for rows in self._batches(sql, params)]
        return pl.concat(parts, rechunk=True) if parts else pl.DataFrame(schema=schema)

    def _select(self, raw: str, where: str = "", params: Sequence[Any] = ()) -> pl.DataFrame:
        table, mapping = TABLE_MAP[raw]
        have = self.columns.get(table)
        schema = dict(RAW_SCHEMAS[raw])
        if "is_nan" in mapping:
            schema["is_nan"] = pl.Boolean()
        if have is None:
            return pl.DataFrame(schema=schema)
        # MySQL sessions run with ANSI_QUOTES, so double quotes work on every backend
        exprs = [f'"{col}"' if col in have else "NULL" for col in mapping.values()]
        frame = self._frame(f"SELECT {', '.join(exprs)} FROM {table} {where}", params, schema)
        if "is_nan" in frame.columns:
            # MLflow stores NaN as value 0 with is_nan set
            frame = frame.with_columns(
                pl.when(pl.col("is_nan")).then(float("nan")).otherwise(pl.col("value")).alias("value")
            ).drop("is_nan")
        return frame

    def read_core(self, progress: Progress) -> RawStore:
        """Every table but the metric history and the artifact listing."""
        raw = RawStore(self.schema_version)
        plain = [t for t in TABLE_MAP if t != "metrics"]
        for i, table in enumerate(plain):
            progress("reading tables", i, len(plain) + 3)
            raw[table] = self._select(table)
        raw["dataset_inputs"] = self._dataset_inputs()
        raw["model_inputs"], raw["model_outputs"] = self._model_io()
        return raw

    def _dataset_inputs(self) -> pl.DataFrame:
        if "inputs" not in self.columns or "datasets" not in self.columns:
            return pl.DataFrame(schema=RAW_SCHEMAS["dataset_inputs"])
        rows = self._rows(
            "SELECT i.destination_id, d.name, d.digest, d.dataset_source_type, d.dataset_source, "
            "d.dataset_schema, d.dataset_profile, i.input_uuid "
            "FROM inputs i JOIN datasets d ON d.dataset_uuid = i.source_id "
            "WHERE i.source_type = 'DATASET' AND i.destination_type = 'RUN'"
        )
        frame = pl.DataFrame(
            rows, orient="row",
            schema={"run_uuid": pl.String, "name": pl.String, "digest": pl.String,
                    "source_type": pl.String, "source": pl.String, "schema": pl.String,
                    "profile": pl.String, "input_uuid": pl.String},
        )
        tags = pl.DataFrame(
            self._rows("SELECT input_uuid, name, value FROM input_tags") if "input_tags" in self.columns else [],
            schema={"input_uuid": pl.String, "key": pl.String, "value": pl.String}, orient="row",
        )
        return frame.join(_json_objects(tags, "input_uuid"), on="input_uuid", how="left").drop("input_uuid")

    def _model_io(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        if "inputs" not in self.columns:
            return pl.DataFrame(schema=RAW_SCHEMAS["model_inputs"]), pl.DataFrame(schema=RAW_SCHEMAS["model_outputs"])
        step = "step" if "step" in self.columns["inputs"] else "0"
        rows = self._rows(
            f"SELECT source_type, source_id, destination_id, {step} FROM inputs "
            "WHERE (source_type = 'RUN_INPUT' AND destination_type = 'MODEL_INPUT') "
            "OR (source_type = 'RUN_OUTPUT' AND destination_type = 'MODEL_OUTPUT')"
        )
        inputs = [(run, model) for kind, run, model, _ in rows if kind == "RUN_INPUT"]
        outputs = [(run, model, s) for kind, run, model, s in rows if kind == "RUN_OUTPUT"]
        return (
            pl.DataFrame(inputs, schema=RAW_SCHEMAS["model_inputs"], orient="row"),
            pl.DataFrame(outputs, schema=RAW_SCHEMAS["model_outputs"], orient="row"),
        )

    def read_metric_history(self, run_uuids: Iterable[str] | None, progress: Progress) -> pl.DataFrame:
        """The full history of the given runs (all runs when None)."""
        if run_uuids is None:
            progress("reading metric history", 0, None)
            frame = self._select("metrics")
            progress("reading metric history", frame.height, frame.height)
            return frame
        ids = sorted(run_uuids)
        mark = "?" if self.dialect == "sqlite" else "%s"
        parts = []
        for i in range(0, len(ids), METRIC_CHUNK):
            chunk = ids[i:i + METRIC_CHUNK]
            progress("reading metric history", i, len(ids))
            parts.append(self._select("metrics", f"WHERE run_uuid IN ({', '.join([mark] * len(chunk))})", chunk))
        return pl.concat(parts) if parts else pl.DataFrame(schema=RAW_SCHEMAS["metrics"])


def _json_objects(kv: pl.DataFrame, key: str) -> pl.DataFrame:
    """Fold (key, k, v) rows into one sorted JSON object per key."""
    import json

    out: dict[str, dict[str, str]] = {}
    for owner, k, v in kv.sort([key, "key"]).iter_rows():
        out.setdefault(owner, {})[k] = v
    return pl.DataFrame(
        {key: list(out), "tags": [json.dumps(v, sort_keys=True) for v in out.values()]},
        schema={key: pl.String, "tags": pl.String},
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _redact(uri: str) -> str:
    """A database URL with its password removed, fit for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return uri.split("@")[-1]


def _connect(source: str, uri: str, base_dir: Path) -> tuple[str, Any]:
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception as exc:
        raise SourceError(source, f"not a database URL: {_redact(uri)}") from exc
    backend = url.get_backend_name()
    where = _redact(uri)
    if backend == "sqlite":
        path = Path(url.database or "")
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise SourceUnreachable(source, f"no sqlite file at {path}")
        try:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
            con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise SourceError(source, f"{path} is not a readable sqlite database: {_one_line(exc)}") from exc
        return "sqlite", con
    if backend == "postgresql":
        import psycopg2

        try:
            con = psycopg2.connect(
                host=url.host or "127.0.0.1", port=url.port or 5432, user=url.username,
                password=url.password, dbname=url.database, connect_timeout=10,
                options="-c default_transaction_read_only=on",
            )
        except psycopg2.OperationalError as exc:
            msg = _one_line(exc)
            kind = SourceAuthError if "authentication" in msg or "password" in msg else SourceUnreachable
            raise kind(source, f"cannot connect to {where}: {msg}") from exc
        con.autocommit = True  # each SELECT its own read-only transaction; nothing left open
        return "postgresql", con
    if backend in ("mysql", "mariadb"):
        import pymysql

        try:
            con = pymysql.connect(
                host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
                password=url.password or "", database=url.database, connect_timeout=10,
            )
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args else None
            kind = SourceAuthError if code in (1044, 1045, 1698) else SourceUnreachable
            raise kind(source, f"cannot connect to {where}: {_one_line(exc)}") from exc
        with con.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION READ ONLY")
            cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")
        return "mysql", con
    raise SourceError(source, f"unsupported database {backend!r} in {where}",
                      hint="braid reads sqlite, postgresql and mysql stores, or http(s) tracking servers")
