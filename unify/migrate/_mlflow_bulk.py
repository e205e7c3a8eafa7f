"""Write a plan's runs into a database-backed MLflow target with set-based inserts.

MlflowClient writes a run in a dozen round trips (create_run, log_batch per 1,000 points, the
latest_metrics update per key, set_terminated), each its own transaction: copying 1,000 runs with
2,000 points each takes minutes. Here a batch of runs is one transaction of a few executemany
inserts into MLflow's own tables (`mlflow.store.tracking.dbmodels.models`, after MLflow created
or upgraded the schema), and the rows are exactly those the client would have left: the same
columns, the same NaN and ±inf encoding, the same `latest_metrics` choice, the same tags
(`mlflow.runName`, `mlflow.user`) and the same dataset rows. `tests/unify/test_migrate_bulk.py`
migrates one source both ways and compares every table row by row.

A batch commits together with its id map entries (saved right after the commit): a killed
migration leaves whole batches or nothing, and a batch committed but not yet in the map is
found again by its `braid.source_id` tags (`adopt_orphans`) and finished through the client.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import sqlalchemy as sa
from mlflow.entities import Dataset, DatasetInput, InputTag, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.store.tracking.dbmodels.models import (SqlDataset, SqlInput, SqlInputTag, SqlLatestMetric,
                                                   SqlLoggedModelMetric, SqlMetric, SqlParam, SqlRun, SqlTag)
from mlflow.utils.file_utils import get_local_path_or_none
from mlflow.utils.name_utils import _generate_random_name
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import (MAX_ENTITY_KEY_LENGTH, _validate_dataset_inputs, _validate_length_limit,
                                     _validate_metric_name, _validate_param_name, _validate_tag_name)

from braid.connectors.mlflow._normalise import PARENT, RUN_NAME, USER

from ._idmap import IdMap
from ._mlflow_writer import TERMINAL, long_value_path
from ._plan import (MAX_PARAM_LENGTH, MAX_TAG_LENGTH, MODEL_LINKS, SOURCE_ID_TAG, SOURCE_NAME_TAG,
                    SOURCE_PARENT_TAG, TRUNCATED_TAG, Plan)

if TYPE_CHECKING:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from ._mlflow_writer import MlflowWriter, Step

# a batch (one transaction) closes at whichever comes first
RUNS_PER_BATCH = 200
POINTS_PER_BATCH = 250_000
# what SqlAlchemyStore.create_run writes into every new run besides its own values
NEW_RUN = {"source_type": "UNKNOWN", "source_name": "", "entry_point_name": "", "source_version": "",
           "deleted_time": None, "lifecycle_stage": "active"}
DATASET_COLUMNS = {"dataset_uuid": pl.String, "experiment_id": pl.Int64, "name": pl.String, "digest": pl.String,
                   "dataset_source_type": pl.String, "dataset_source": pl.String, "dataset_schema": pl.String,
                   "dataset_profile": pl.String}
# the key checks log_batch runs (mlflow.utils.validation), and the name its length error gives
KEY_CHECKS = {"param": (_validate_param_name, "Param key"), "tag": (_validate_tag_name, "key"),
              "metric": (_validate_metric_name, "Metric name")}
# SQL cannot hold ±inf: MLflow stores the largest finite doubles (sanitize_metric_value)
FLOAT_MAX = 1.7976931348623157e308


def now_ms() -> int:
    return int(time.time() * 1000)


def write_runs(writer: MlflowWriter, store: SqlAlchemyStore, plan: Plan, idmap: IdMap,
               experiments: dict[str, str], step: Step) -> None:
    """Every planned run not yet done: unfinished ones (in the map, or adopted by tag) through the
    client, which completes what exists; fresh ones in batches of set-based inserts."""
    adopt_orphans(store.engine, plan, idmap, list(experiments.values()))
    info = {r["run_uuid"]: r for r in plan.frame("runs").iter_rows(named=True)}
    done = [r for r in plan.run_ids if idmap.run_done(r)]
    unfinished = [r for r in plan.run_ids if not idmap.run_done(r) and idmap.run_target(r) is not None]
    fresh = [r for r in plan.run_ids if idmap.run_target(r) is None]
    writer.reused["runs"] += len(done)
    n, total = len(done), len(plan.run_ids)
    step("runs", n, total)
    parts = _parts(plan, unfinished)
    for run_uuid in unfinished:
        writer._run(plan, idmap, info[run_uuid], experiments[info[run_uuid]["experiment_id"]],
                    {name: by_run.get(run_uuid) for name, by_run in parts.items()})
        n += 1
        step("runs", n, total)
    if not fresh:
        return
    locations = _artifact_locations(writer, {info[r]["experiment_id"] for r in fresh}, experiments)
    datasets = _datasets(store.engine, [int(e) for e in set(experiments.values())])
    for batch, ids in _batches(plan, fresh):
        rows = batch_rows(plan, idmap, batch, ids, info, experiments, locations, datasets)
        # MLflow's own write session: its sqlite pragmas (foreign keys on, busy timeout), one
        # commit for the batch, a rollback and an MlflowException on any database error
        with store.ManagedSessionMaker(read_only=False) as session:
            conn = session.connection()
            for table, frame in rows.items():
                _insert(conn, table, frame)
        created = rows.get(SqlDataset.__table__)
        if created is not None:
            datasets.update({(exp, name, digest): u for u, exp, name, digest in
                             created.select("dataset_uuid", "experiment_id", "name", "digest").iter_rows()})
        for source_id, target_id in ids.items():
            idmap.set_run(source_id, target_id, done=True)
        idmap.save()
        writer.created["runs"] += len(ids)
        n += len(ids)
        step("runs", n, total)


def _parts(plan: Plan, runs: list[str]) -> dict[str, dict[str, pl.DataFrame]]:
    """Table -> source run -> its rows, for the runs the client finishes (usually none)."""
    if not runs:
        return {}
    return {name: {k[0]: v for k, v in plan.frame(name).filter(pl.col("run_uuid").is_in(runs))
                   .partition_by("run_uuid", as_dict=True).items()}
            for name in ("params", "tags", "metrics", "dataset_inputs")}


def _artifact_locations(writer: MlflowWriter, sources: set[str], experiments: dict[str, str]) -> dict[str, str]:
    """Source experiment -> the target experiment's artifact location, which create_run reads
    (and refuses an experiment that is not active)."""
    locations = {}
    for source_id in sources:
        target = writer.client.get_experiment(experiments[source_id])
        if target.lifecycle_stage != "active":
            raise MlflowException(f"The experiment {target.experiment_id} must be in the 'active' state. "
                                  f"Current state is {target.lifecycle_stage}.", INVALID_PARAMETER_VALUE)
        locations[source_id] = target.artifact_location
    return locations


# -- planning the batches --------------------------------------------------------------------
def _batches(plan: Plan, fresh: list[str]) -> Iterator[tuple[list[str], dict[str, str]]]:
    """Consecutive fresh runs (plan order: parents first) cut at RUNS_PER_BATCH runs or
    POINTS_PER_BATCH metric points, each with new run ids (uuid4 hex, as MLflow makes them)."""
    points = dict(plan.frame("metrics").group_by("run_uuid").len().iter_rows())
    batch: list[str] = []
    size = 0
    for run_uuid in fresh:
        batch.append(run_uuid)
        size += points.get(run_uuid, 0)
        if len(batch) >= RUNS_PER_BATCH or size >= POINTS_PER_BATCH:
            yield batch, {r: uuid.uuid4().hex for r in batch}
            batch, size = [], 0
    if batch:
        yield batch, {r: uuid.uuid4().hex for r in batch}


# -- the rows of one batch -------------------------------------------------------------------
def batch_rows(plan: Plan, idmap: IdMap, batch: list[str], ids: dict[str, str], info: dict[str, dict[str, Any]],
               experiments: dict[str, str], locations: dict[str, str],
               datasets: dict[tuple[int, str, str], str]) -> dict[sa.Table, pl.DataFrame]:
    """Table -> the rows to insert for these runs (new ids in `ids`), in MLflow's column names.
    `datasets` ((experiment, name, digest) -> dataset uuid) holds those in the target; the ones
    this batch creates are the rows of the datasets table it returns."""
    def of(table: str) -> pl.DataFrame:
        return plan.read.raw[table].filter(pl.col("run_uuid").is_in(batch))

    new_id = pl.col("run_uuid").replace_strict(ids, return_dtype=pl.String)
    # source tags as the client's dict held them: one value per key (the last), PARENT set apart
    tags = of("tags").group_by("run_uuid", "key", maintain_order=True).agg(pl.col("value").last())
    special = {(r, k): v for r, k, v in tags.filter(pl.col("key").is_in([PARENT, USER, RUN_NAME])).iter_rows()}
    tags = tags.filter(pl.col("key") != PARENT)
    params = _unique_params(of("params"))
    _check_keys("param", params["key"])
    _check_keys("tag", tags["key"])
    artifacts = {r: append_to_uri_path(locations[info[r]["experiment_id"]], ids[r], "artifacts") for r in batch}
    truncated = _long_values(params, tags, artifacts)
    params = params.with_columns(pl.col("value").str.slice(0, MAX_PARAM_LENGTH))
    tags = tags.with_columns(pl.col("value").str.slice(0, MAX_TAG_LENGTH))

    runs, created = [], []
    position = {r: i for i, r in enumerate(batch)}
    for run_uuid in batch:
        row, own = _run_row(plan.source, run_uuid, info[run_uuid], special, ids, position, idmap)
        row.update(artifact_uri=artifacts[run_uuid], experiment_id=int(experiments[info[run_uuid]["experiment_id"]]))
        runs.append(row)
        created += [(run_uuid, k, v) for k, v in own.items()]
    # create_run's tags first, then log_batch's (braid.truncated last): a later value of the same
    # key wins, except an empty mlflow.runName, which the store ignores (update_run_info skips it)
    logged = tags.filter((pl.col("key") != RUN_NAME) | (pl.col("value").fill_null("") != ""))
    listed = [(r, TRUNCATED_TAG, v) for r, v in truncated.items()]
    all_tags = pl.concat([pl.DataFrame(created, schema=tags.schema, orient="row"), logged,
                          pl.DataFrame(listed, schema=tags.schema, orient="row")]) \
        .unique(["run_uuid", "key"], keep="last", maintain_order=True)
    metrics, latest = _metrics(of("metrics"))
    out = {
        SqlRun.__table__: pl.DataFrame(runs),
        SqlParam.__table__: params.with_columns(run_uuid=new_id),
        SqlTag.__table__: all_tags.with_columns(run_uuid=new_id),
        SqlMetric.__table__: metrics.with_columns(run_uuid=new_id),
        SqlLatestMetric.__table__: latest.with_columns(run_uuid=new_id),
    }
    out.update(_dataset_rows(of("dataset_inputs"), ids, {r: int(experiments[info[r]["experiment_id"]]) for r in batch},
                             datasets))
    return out


def _run_row(source: str, run_uuid: str, info: dict[str, Any], special: dict[tuple[str, str], str | None],
             ids: dict[str, str], position: dict[str, int], idmap: IdMap) -> tuple[dict[str, Any], dict[str, str]]:
    """The runs row and the tags create_run would write, decided as MlflowWriter._run and the
    store decide them (create_run, then log_batch's tags, then set_terminated / update_run)."""
    own = {SOURCE_ID_TAG: run_uuid, SOURCE_NAME_TAG: source}
    parent = special.get((run_uuid, PARENT))
    if parent is not None:
        # the client maps a parent written before this run (plan order); another stays a source id
        mapped = idmap.run_target(parent)
        if mapped is None and parent in ids and position[parent] < position[run_uuid]:
            mapped = ids[parent]
        own[PARENT if mapped is not None else SOURCE_PARENT_TAG] = mapped if mapped is not None else parent
    user = special.get((run_uuid, USER)) or info["user_id"]
    if user:
        own[USER] = user
    # create_run: the given name, else a random one; a non-empty mlflow.runName tag logged later renames
    name = (special.get((run_uuid, RUN_NAME)) or "")[:MAX_TAG_LENGTH] or info["name"] or _generate_random_name()
    own[RUN_NAME] = name
    status = info["status"]
    if status and status not in TERMINAL and status != "RUNNING":
        RunStatus.from_string(status)  # raises on a status MLflow does not know, as update_run does
    end = None
    if status in TERMINAL and info["end_time"] is not None:
        end = info["end_time"] or now_ms()  # set_terminated stamps "now" for a zero end time
    row = {"run_uuid": ids[run_uuid], "name": name, "user_id": user or "unknown",
           "status": status if status else "RUNNING", "start_time": info["start_time"] or now_ms(),
           "end_time": end, **NEW_RUN}
    return row, own


def _unique_params(params: pl.DataFrame) -> pl.DataFrame:
    """One value per (run, key); two different values of one key are refused, as MLflow does."""
    params = params.unique(["run_uuid", "key", "value"], keep="first", maintain_order=True)
    twice = params.filter(pl.col("key").is_duplicated().over("run_uuid"))
    if twice.height:
        run, key = twice.row(0)[:2]
        raise MlflowException(f"Changing param values is not allowed. Param with key='{key}' was already logged "
                              f"with another value for run ID='{run}'.", INVALID_PARAMETER_VALUE)
    return params


def _check_keys(kind: str, keys: pl.Series) -> None:
    """MLflow's own key checks (characters, paths, length), once per distinct key."""
    check, label = KEY_CHECKS[kind]
    for key in keys.unique().to_list():
        check(key)
        _validate_length_limit(label, MAX_ENTITY_KEY_LENGTH, key)


def _long_values(params: pl.DataFrame, tags: pl.DataFrame, artifacts: dict[str, str]) -> dict[str, str]:
    """Write every over-long value in full into its run's artifacts; run -> the braid.truncated
    tag, listing them as MlflowWriter._run does (params in order, then tags)."""
    long = pl.concat([
        params.filter(pl.col("value").str.len_chars() > MAX_PARAM_LENGTH).select("run_uuid", "key", "value",
                                                                                 kind=pl.lit("param")),
        tags.filter(pl.col("value").str.len_chars() > MAX_TAG_LENGTH).select("run_uuid", "key", "value",
                                                                             kind=pl.lit("tag")),
    ])
    listed: dict[str, list[dict[str, str]]] = {}
    for run_uuid, key, value, kind in long.iter_rows():
        path = long_value_path(f"{kind}s", key)
        write_text(artifacts[run_uuid], path, value)
        listed.setdefault(run_uuid, []).append({"kind": kind, "key": key, "artifact": path})
    return {r: json.dumps(entries, sort_keys=True) for r, entries in listed.items()}


def write_text(artifact_uri: str, path: str, text: str) -> None:
    """`text` as the artifact `path` of a run (that may not be committed yet): a local artifact
    root gets the file directly, any other through MLflow's artifact repository for the URI."""
    local = get_local_path_or_none(artifact_uri)
    if local is not None:
        target = Path(local) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", encoding="utf-8") as out:  # as MlflowClient.log_text writes it
            out.write(text)
        return
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    folder, _, name = path.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / name
        file.write_text(text, encoding="utf-8")
        get_artifact_repository(artifact_uri).log_artifact(str(file), folder or None)


def stored_value(value: pl.Expr) -> pl.Expr:
    """A metric value as MLflow's SQL store keeps it (sanitize_metric_value): NaN as 0.0 (the
    metrics table flags it in is_nan, logged_model_metrics keeps only the 0.0), ±inf as ±FLOAT_MAX."""
    return (pl.when(value.is_nan()).then(0.0).when(value == float("inf")).then(FLOAT_MAX)
            .when(value == float("-inf")).then(-FLOAT_MAX).otherwise(value))


def _metrics(points: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The metric rows and the latest_metrics rows, as SqlAlchemyStore._log_metrics leaves them."""
    bad = points.filter(pl.col("value").is_null() | pl.col("timestamp").is_null() | (pl.col("timestamp") < 0)
                        | pl.col("step").is_null() | pl.col("key").is_null())
    if bad.height:
        r = bad.row(0, named=True)
        raise MlflowException(f"Invalid metric point in run {r['run_uuid']}: key={r['key']!r} value={r['value']} "
                              f"timestamp={r['timestamp']} step={r['step']} (MLflow needs a numeric value, a "
                              "non-negative timestamp and a step)", INVALID_PARAMETER_VALUE)
    _check_keys("metric", points["key"])
    points = points.with_columns(is_nan=pl.col("value").is_nan(), value=stored_value(pl.col("value")))
    # the metrics primary key: a point logged twice is stored once (checked on a row hash first,
    # since a store's history rarely repeats a point and the exact pass costs more)
    pk = ["run_uuid", "key", "timestamp", "step", "value", "is_nan"]
    if points.select(pl.struct(pk).hash().is_duplicated().any()).item():
        points = points.unique(pk, keep="first", maintain_order=True)
    # latest: the highest (step, timestamp, value); on a tie the point logged first stays (stable sort)
    latest = points.sort(["step", "timestamp", "value"], descending=True, maintain_order=True) \
        .unique(["run_uuid", "key"], keep="first")
    return points, latest


def _dataset_rows(inputs: pl.DataFrame, ids: dict[str, str], experiment_of: dict[str, int],
                  existing: dict[tuple[int, str, str], str]) -> dict[sa.Table, pl.DataFrame]:
    """datasets (one per experiment, name and digest: existing ones reused), inputs and input_tags,
    as SqlAlchemyStore.log_inputs writes them; few rows, so built per row."""
    if inputs.is_empty():
        return {}
    known = dict(existing)
    datasets, edges, input_tags = [], [], []
    for run_uuid, rows in inputs.group_by("run_uuid", maintain_order=True):
        run_uuid = run_uuid[0]
        entities = [DatasetInput(Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                                         source=d["source"], schema=d["schema"], profile=d["profile"]),
                                 tags=[InputTag(k, v) for k, v in json.loads(d["tags"] or "{}").items()])
                    for d in rows.iter_rows(named=True)]
        _validate_dataset_inputs(entities)
        seen: set[tuple[str, str]] = set()
        for entity in entities:
            d = entity.dataset
            if (d.name, d.digest) in seen:  # log_inputs keeps the first of a name and digest
                continue
            seen.add((d.name, d.digest))
            key = (experiment_of[run_uuid], d.name, d.digest)
            if key not in known:
                known[key] = uuid.uuid4().hex
                datasets.append({"dataset_uuid": known[key], "experiment_id": key[0], "name": d.name,
                                 "digest": d.digest, "dataset_source_type": d.source_type, "dataset_source": d.source,
                                 "dataset_schema": d.schema, "dataset_profile": d.profile})
            input_uuid = uuid.uuid4().hex
            edges.append({"input_uuid": input_uuid, "source_type": "DATASET", "source_id": known[key],
                          "destination_type": "RUN", "destination_id": ids[run_uuid]})
            input_tags += [{"input_uuid": input_uuid, "name": t.key, "value": t.value} for t in entity.tags]
    return {SqlDataset.__table__: pl.DataFrame(datasets, schema=DATASET_COLUMNS),
            SqlInput.__table__: pl.DataFrame(edges, schema=dict.fromkeys(edges[0], pl.String)),
            SqlInputTag.__table__: pl.DataFrame(input_tags, schema=dict.fromkeys(("input_uuid", "name", "value"),
                                                                                 pl.String))}


# -- metrics logged against logged models -----------------------------------------------------
def write_model_metrics(store: SqlAlchemyStore, rows: pl.DataFrame) -> int:
    """The model metric rows (`_models.model_metric_rows`) the target lacks, inserted in one
    transaction once the logged models exist; the number inserted. The rows are those
    SqlAlchemyStore._log_model_metrics writes for a log_batch of the same points: the value as
    stored, the logging run's experiment, no dataset uuid (log_batch passes none). The table's
    primary key decides what is there already, so a re-run or a resumed run adds nothing twice."""
    table = SqlLoggedModelMetric.__table__
    _check_keys("metric", rows["key"])
    out = rows.select("model_id", "experiment_id", "run_id", "dataset_name", "dataset_digest",
                      metric_name="key", metric_timestamp_ms="timestamp", metric_step="step",
                      metric_value=stored_value(pl.col("value")))
    key = ["model_id", "metric_name", "metric_timestamp_ms", "metric_step", "run_id"]
    query = sa.select(*(table.c[c] for c in key)).where(table.c.model_id.in_(out["model_id"].unique().to_list()))
    with store.ManagedSessionMaker(read_only=False) as session:
        conn = session.connection()
        held = pl.DataFrame([tuple(r) for r in conn.execute(query)], schema=out.select(key).schema, orient="row")
        fresh = out.join(held, on=key, how="anti")
        _insert(conn, table, fresh)
    return fresh.height


# -- runs' links to logged models ---------------------------------------------------------------
def write_model_links(store: SqlAlchemyStore, rows: pl.DataFrame) -> dict[str, int]:
    """The run-to-model links (`_models.model_link_rows`) the target lacks, inserted in one
    transaction once the logged models exist; the number inserted per kind. The rows are those
    SqlAlchemyStore.log_inputs (models) and log_outputs write: a uuid4 hex input_uuid, the run as
    source, the model as destination, the output's step (an input's is the column's default, 0).
    The table's primary key (types, run, model) decides what is there already."""
    table = SqlInput.__table__
    kinds = pl.DataFrame([(k, s, d) for k, (_, s, d) in MODEL_LINKS.items()], orient="row",
                         schema={"kind": pl.String, "source_type": pl.String, "destination_type": pl.String})
    out = rows.join(kinds, on="kind").select(
        "kind", "source_type", "destination_type", "step", source_id="run_id", destination_id="model_id")
    key = ["source_type", "source_id", "destination_type", "destination_id"]
    query = sa.select(*(table.c[c] for c in key)).where(table.c.source_type.in_(kinds["source_type"].to_list()),
                                                        table.c.source_id.in_(out["source_id"].unique().to_list()))
    with store.ManagedSessionMaker(read_only=False) as session:
        conn = session.connection()
        held = pl.DataFrame([tuple(r) for r in conn.execute(query)], schema=out.select(key).schema, orient="row")
        fresh = out.join(held, on=key, how="anti")
        fresh = fresh.with_columns(input_uuid=pl.Series([uuid.uuid4().hex for _ in range(fresh.height)],
                                                        dtype=pl.String))
        _insert(conn, table, fresh.drop("kind"))
    return dict(fresh.group_by("kind").len().iter_rows())


# -- writing ---------------------------------------------------------------------------------
def _insert(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    """One executemany of `frame` into `table`: plain tuples for sqlite (the driver's own fast
    path), SQLAlchemy Core's batched executemany (VALUES lists) for the other databases."""
    if frame.is_empty():
        return
    columns = [c.name for c in table.columns if c.name in frame.columns]
    if conn.dialect.paramstyle == "qmark":
        compiled = table.insert().compile(dialect=conn.dialect, column_keys=columns)
        order = list(compiled.positiontup or columns)
        conn.exec_driver_sql(str(compiled), frame.select(order).rows())
    else:
        conn.execute(table.insert(), frame.select(columns).to_dicts())


def _datasets(engine: sa.Engine, experiments: list[int]) -> dict[tuple[int, str, str], str]:
    """The target's datasets of these experiments: log_inputs reuses one of the same name and digest."""
    table = SqlDataset.__table__
    query = sa.select(table.c.experiment_id, table.c.name, table.c.digest, table.c.dataset_uuid) \
        .where(table.c.experiment_id.in_(experiments))
    with engine.connect() as conn:
        return {(int(e), n, d): u for e, n, d, u in conn.execute(query)}


def adopt_orphans(engine: sa.Engine, plan: Plan, idmap: IdMap, experiments: list[str]) -> None:
    """Runs a killed migration committed but never recorded in the map, found by their tags
    (what MlflowWriter.adopt_orphans finds with search_runs: live runs of these experiments)."""
    tags, runs = SqlTag.__table__, SqlRun.__table__
    ids, source = tags.alias("ids"), tags.alias("source")
    query = (sa.select(ids.c.value, runs.c.run_uuid)
             .join(runs, runs.c.run_uuid == ids.c.run_uuid)
             .join(source, (source.c.run_uuid == ids.c.run_uuid) & (source.c.key == SOURCE_NAME_TAG))
             .where(ids.c.key == SOURCE_ID_TAG, source.c.value == plan.source, runs.c.lifecycle_stage == "active",
                    runs.c.experiment_id.in_([int(e) for e in experiments]))
             .order_by(runs.c.start_time.desc(), runs.c.run_uuid))
    with engine.connect() as conn:
        for source_id, run_id in conn.execute(query):
            if source_id and idmap.run_target(source_id) is None:
                idmap.set_run(source_id, run_id, done=False)

