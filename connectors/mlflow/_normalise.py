"""Turn a `RawStore` into braid's graph: one small step per entity, columns not rows.

Ids: `<source>:run/<run_uuid>`, `<source>:dataset/<name>@<digest>`, `<source>:model/<m-id>`
(MLflow 3 LoggedModels) or `<source>:model/<run_uuid>/<artifact path>` (models logged into a
run's artifacts, as MLflow 2 does), `<source>:model_version/<name>/<version>`,
`<source>:artifact/<run_uuid>/<path>`, and `git:<sha>` for commits.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

import polars as pl

from braid.unify.ids import SHA_RE, code_ids, node_id, node_ids

from ._raw import LOGGED_MODEL_STATUS, RawStore

TOOL = "mlflow"
GIT_COMMIT, GIT_BRANCH, GIT_REMOTE = "mlflow.source.git.commit", "mlflow.source.git.branch", "mlflow.source.git.repoURL"
PARENT, USER, RUN_NAME, MODEL_HISTORY = "mlflow.parentRunId", "mlflow.user", "mlflow.runName", "mlflow.log-model.history"
SOURCE_NAME, SOURCE_TYPE, ENTRY_POINT = "mlflow.source.name", "mlflow.source.type", "mlflow.project.entryPoint"
SYSTEM_TAGS = (GIT_COMMIT, GIT_BRANCH, GIT_REMOTE, PARENT, USER, RUN_NAME, MODEL_HISTORY, SOURCE_NAME,
               SOURCE_TYPE, ENTRY_POINT)
# keys in a dataset source's JSON that name where its data lives, in order of preference
DATASET_URI_KEYS = ("uri", "url", "path", "table_name", "dataset_name")


def ms(column: str) -> pl.Expr:
    """MLflow epoch milliseconds as a UTC timestamp."""
    return pl.from_epoch(pl.col(column), time_unit="ms").dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC"))


def normalise(raw: RawStore, source: str) -> dict[str, pl.DataFrame]:
    """The graph tables of one MLflow store."""
    src = source
    run_tags = _run_tag_columns(raw)
    runs = _runs(raw, run_tags, src)
    model_paths = _history_models(raw, run_tags, src)
    models = _logged_models(raw, src)
    frames: dict[str, list[pl.DataFrame]] = {"nodes": [], "edges": []}

    def add(nodes: pl.DataFrame | None = None, edges: pl.DataFrame | None = None) -> None:
        if nodes is not None:
            frames["nodes"].append(nodes.with_columns(source=pl.lit(source)))
        if edges is not None:
            frames["edges"].append(edges.with_columns(source=pl.lit(source)))

    add(runs["nodes"], runs["edges"])
    add(*_code(runs["runs"]))
    add(*_datasets(raw, runs["times"], src))
    add(*_models(raw, models, model_paths, runs["times"], src))
    versions = _model_versions(raw, runs["times"], src)
    add(versions["nodes"], versions["edges"])
    add(*_artifacts(raw, model_paths, runs["times"], src))

    # a version or output edge may name a model no listing produced (an artifact folder that was
    # registered directly): give it a node so no edge dangles
    nodes = pl.concat(frames["nodes"], how="diagonal_relaxed")
    edges = pl.concat(frames["edges"], how="diagonal_relaxed")
    missing = (
        pl.concat([edges.select(id="src"), edges.select(id="dst")]).unique()
        .join(nodes.select("id"), on="id", how="anti")
        .filter(pl.col("id").str.starts_with(f"{src}:model/"))
    )
    if missing.height:
        nodes = pl.concat([nodes, missing.with_columns(
            kind=pl.lit("model"), tool=pl.lit(TOOL), source=pl.lit(source),
            name=pl.col("id").str.split("/").list.last(),
            attrs=pl.lit('{"implicit":true}'),
        )], how="diagonal_relaxed")

    tags = pl.concat([
        raw["tags"].select(node_id=node_ids(src, "run", "run_uuid"), key="key", value="value"),
        raw["logged_model_tags"].select(node_id=node_ids(src, "model", "model_id"), key="key", value="value"),
        raw["model_version_tags"].select(
            node_id=node_ids(src, "model_version", pl.concat_str("name", "version", separator="/")), key="key", value="value"),
    ]).with_columns(source=pl.lit(source))
    return {
        "nodes": nodes,
        "edges": edges,
        "runs": runs["runs"].with_columns(source=pl.lit(source)),
        "params": raw["params"].select(
            run_id=node_ids(src, "run", "run_uuid"), key="key", value="value", source=pl.lit(source)),
        "metrics": metrics_table(raw["metrics"], source),
        "tags": tags,
        "registry": versions["registry"].with_columns(source=pl.lit(source)),
    }


def metrics_table(metrics: pl.DataFrame, source: str) -> pl.DataFrame:
    """The full history, one row per logged point."""
    return metrics.select(
        run_id=f"{source}:run/" + pl.col("run_uuid"), key="key", step="step",
        timestamp=ms("timestamp"), value="value", source=pl.lit(source),
    )


def _run_tag_columns(raw: RawStore) -> pl.DataFrame:
    """The system tags braid reads, one column each, one row per run."""
    wanted = raw["tags"].filter(pl.col("key").is_in(SYSTEM_TAGS))
    wide = raw["runs"].select("run_uuid")
    if wanted.height:
        wide = wide.join(
            wanted.pivot(on="key", index="run_uuid", values="value", aggregate_function="first"),
            on="run_uuid", how="left",
        )
    return wide.with_columns([pl.lit(None, pl.String).alias(t) for t in SYSTEM_TAGS if t not in wide.columns])


def _runs(raw: RawStore, tags: pl.DataFrame, src: str) -> dict[str, pl.DataFrame]:
    exps = raw["experiments"].select("experiment_id", experiment="name")
    r = (
        raw["runs"].join(tags, on="run_uuid", how="left").join(exps, on="experiment_id", how="left")
        .with_columns(
            id=node_ids(src, "run", "run_uuid"),
            started_at=ms("start_time"), ended_at=ms("end_time"),
            run_name=pl.coalesce("name", RUN_NAME),
            run_user=pl.coalesce(USER, "user_id"),
            commit=pl.when(pl.col(GIT_COMMIT).str.contains(SHA_RE.pattern))
            .then(pl.col(GIT_COMMIT).str.to_lowercase()),
        )
    )
    nodes = r.select(
        "id", kind=pl.lit("run"), tool=pl.lit(TOOL), name="run_name", uri="artifact_uri",
        created_at="started_at", updated_at="ended_at", status="status", user="run_user",
        attrs=pl.struct("experiment_id", "experiment", "lifecycle_stage").struct.json_encode(),
    )
    runs = r.select(
        "id", tool=pl.lit(TOOL), project="experiment", name="run_name", status="status",
        started_at="started_at", ended_at="ended_at",
        duration=(pl.col("end_time") - pl.col("start_time")) / 1000.0,
        user="run_user", git_commit="commit", git_branch=GIT_BRANCH,
        git_remote=GIT_REMOTE, host=pl.lit(None, pl.String),
        environment=pl.struct(
            source_name=pl.col(SOURCE_NAME), source_type=pl.col(SOURCE_TYPE), entry_point=pl.col(ENTRY_POINT),
        ).struct.json_encode(),
    )
    parents = r.filter(pl.col(PARENT).is_not_null()).select(
        src=node_ids(src, "run", PARENT), dst="id", kind=pl.lit("parent_of"), created_at="started_at",
    )
    times = r.select("run_uuid", "started_at", "ended_at", "artifact_uri", run_node="id")
    return {"nodes": nodes, "runs": runs, "edges": parents, "times": times}


def _code(runs: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One `git:<sha>` node per commit and a code edge to every run at it."""
    at = runs.filter(pl.col("git_commit").is_not_null())
    nodes = at.group_by("git_commit").agg(pl.col("git_remote").drop_nulls().first()).select(
        id=code_ids("git_commit"), kind=pl.lit("code"), tool=pl.lit(None, pl.String),
        name=pl.col("git_commit").str.slice(0, 12), uri="git_remote",
    )
    edges = at.select(src=code_ids("git_commit"), dst="id", kind=pl.lit("code"), created_at="started_at")
    return nodes, edges


def _dataset_uri(source: str | None) -> str | None:
    try:
        parsed = json.loads(source) if source else None
    except json.JSONDecodeError:
        return source
    if isinstance(parsed, dict):
        for key in DATASET_URI_KEYS:
            if parsed.get(key):
                return str(parsed[key])
    return None


def _datasets(raw: RawStore, times: pl.DataFrame, src: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    d = raw["dataset_inputs"].with_columns(
        id=node_ids(src, "dataset", pl.concat_str("name", "digest", separator="@")),
        uri=pl.col("source").map_elements(_dataset_uri, return_dtype=pl.String),
    )
    nodes = d.unique("id", keep="first", maintain_order=True).select(
        "id", kind=pl.lit("dataset"), tool=pl.lit(TOOL), name="name", version="digest",
        # MLflow's digest hashes a sample of rows, not bytes: its own prefix, never md5:
        digest="mlflow:" + pl.col("digest"), uri="uri",
        attrs=pl.struct("source_type", "source", "schema", "profile").struct.json_encode(),
    )
    edges = d.join(times, on="run_uuid", how="inner").select(
        src="id", dst="run_node", kind=pl.lit("input"), created_at="started_at",
        attrs=pl.col("tags").fill_null("{}"),
    )
    return nodes, edges


def _history_models(raw: RawStore, tags: pl.DataFrame, src: str) -> pl.DataFrame:
    """Models logged into a run's artifacts, from the `mlflow.log-model.history` tag (MLflow 2)."""
    rows: list[dict[str, Any]] = []
    for run_uuid, history in tags.filter(pl.col(MODEL_HISTORY).is_not_null()).select("run_uuid", MODEL_HISTORY).iter_rows():
        try:
            entries = json.loads(history)
        except json.JSONDecodeError:
            continue
        for entry in entries if isinstance(entries, list) else []:
            path = str(entry.get("artifact_path") or "").strip("/")
            if not path:
                continue
            rows.append({
                "run_uuid": run_uuid, "path": path, "id": node_id(src, "model", f"{run_uuid}/{path}"),
                "created": entry.get("utc_time_created"),
                "attrs": json.dumps({"flavors": entry.get("flavors"), "model_uuid": entry.get("model_uuid"),
                                     "model_id": entry.get("model_id")}, sort_keys=True),
            })
    schema = {"run_uuid": pl.String, "path": pl.String, "id": pl.String, "created": pl.String, "attrs": pl.String}
    return pl.DataFrame(rows, schema=schema).unique("id", keep="last", maintain_order=True)


# MLflow keeps soft-deleted registry versions in SQL (stage Deleted_Internal, run id and source
# redacted); its API never shows them, and neither does braid
DELETED_VERSION_STAGE = "Deleted_Internal"
# fields MLflow's server leaves out of REST answers when empty, while SQL holds "" or NULL
EMPTY_MEANS_NULL = ("description", "model_type", "source_run_id", "status_message", "registered_model_description")


def _empty_as_null(frame: pl.DataFrame) -> pl.DataFrame:
    cols = [c for c in EMPTY_MEANS_NULL if c in frame.columns]
    return frame.with_columns([pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in cols])


def _logged_models(raw: RawStore, src: str) -> pl.DataFrame:
    params = raw["logged_model_params"].group_by("model_id").agg(
        params=pl.struct("key", "value").sort_by("key"))
    metrics = raw["logged_model_metrics"].group_by("model_id").agg(
        metrics=pl.struct("key", "value", "step", "timestamp", "run_id", "dataset_name", "dataset_digest")
        .sort_by("key", "timestamp", "step"))
    # deleted LoggedModels: the API hides them, so braid does too (an output edge that still
    # names one gets an implicit node either way)
    live = _empty_as_null(raw["logged_models"].filter(pl.col("lifecycle_stage").fill_null("active") != "deleted"))
    return (
        live.join(params, on="model_id", how="left").join(metrics, on="model_id", how="left")
        .with_columns(id=node_ids(src, "model", "model_id"),
                      status=pl.col("status").replace_strict(LOGGED_MODEL_STATUS, default=pl.col("status")))
    )


def _models(
    raw: RawStore, logged: pl.DataFrame, history: pl.DataFrame, times: pl.DataFrame, src: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    files = _model_files(raw, history, src)
    logged_nodes = logged.join(files, on="id", how="left").select(
        "id", kind=pl.lit("model"), tool=pl.lit(TOOL), name="name", uri="artifact_location",
        created_at=ms("creation_time"), updated_at=ms("last_updated_time"), status="status",
        attrs=pl.struct("model_id", "experiment_id", "model_type", "source_run_id", "lifecycle_stage",
                        "status_message", "params", "metrics", "files").struct.json_encode(),
    )
    history_nodes = history.join(times, on="run_uuid", how="left").join(files, on="id", how="left").select(
        "id", kind=pl.lit("model"), tool=pl.lit(TOOL), name="path",
        uri=pl.col("artifact_uri") + "/" + pl.col("path"),
        created_at=pl.col("created").str.to_datetime(time_zone="UTC", strict=False).cast(pl.Datetime("us", "UTC")),
        attrs=pl.struct("attrs", "files").map_elements(
            lambda r: json.dumps({**json.loads(r["attrs"]), "files": r["files"]}, sort_keys=True),
            return_dtype=pl.String),
    )
    outputs = pl.concat([
        logged.filter(pl.col("source_run_id").is_not_null()).select(run_uuid="source_run_id", dst="id",
                                                                    step=pl.lit(None, pl.Int64)),
        raw["model_outputs"].select("run_uuid", dst=node_ids(src, "model", "model_id"), step="step"),
        history.select("run_uuid", dst="id", step=pl.lit(None, pl.Int64)),
    ]).unique(["run_uuid", "dst"], keep="last", maintain_order=True).join(times, on="run_uuid", how="inner")
    out_edges = outputs.select(
        src=node_ids(src, "run", "run_uuid"), dst="dst", kind=pl.lit("output"),
        created_at=pl.coalesce("ended_at", "started_at"),
        attrs=pl.struct("step").struct.json_encode(),
    )
    in_edges = raw["model_inputs"].join(times, on="run_uuid", how="inner").select(
        src=node_ids(src, "model", "model_id"), dst=node_ids(src, "run", "run_uuid"), kind=pl.lit("input"),
        created_at="started_at",
    )
    return pl.concat([logged_nodes, history_nodes], how="diagonal_relaxed"), pl.concat(
        [out_edges, in_edges], how="diagonal_relaxed")


def _model_files(raw: RawStore, history: pl.DataFrame, src: str) -> pl.DataFrame:
    """The files of each model: a LoggedModel's own root, or a run's model sub-folder."""
    art = raw["artifacts"]
    own = art.filter(pl.col("owner_kind") == "model").select(
        id=node_ids(src, "model", "owner"), path="path", size="size", md5="md5")
    in_runs = art.filter(pl.col("owner_kind") == "run").join(
        history.select("run_uuid", "id", prefix=pl.col("path") + "/"), left_on="owner", right_on="run_uuid",
    ).filter(pl.col("path").str.starts_with(pl.col("prefix"))).select(
        "id", path=pl.col("path").str.slice(pl.col("prefix").str.len_chars()), size="size", md5="md5")
    return pl.concat([own, in_runs]).sort("id", "path").group_by("id", maintain_order=True).agg(
        files=pl.struct("path", "size", "md5"))


def _version_model(source: str | None, run_uuid: str | None, artifact_uri: str | None, src: str) -> str | None:
    """The model node a registry version's `source` names."""
    if not source:
        return None
    if m := re.match(r"^models:/(m-[0-9a-f]+)/?$", source):
        return node_id(src, "model", m.group(1))
    if m := re.match(r"^runs:/([0-9a-f]+)/(.+?)/?$", source):
        return node_id(src, "model", f"{m.group(1)}/{m.group(2)}")
    if run_uuid and artifact_uri and source.startswith(artifact_uri.rstrip("/") + "/"):
        return node_id(src, "model", f"{run_uuid}/{source[len(artifact_uri.rstrip('/')) + 1:].strip('/')}")
    return None


def _model_versions(raw: RawStore, times: pl.DataFrame, src: str) -> dict[str, pl.DataFrame]:
    mv = _empty_as_null(raw["model_versions"].filter(
        pl.col("current_stage").fill_null("") != DELETED_VERSION_STAGE)).join(
        times.select("run_uuid", "artifact_uri"), left_on="run_id", right_on="run_uuid", how="left")
    model_ids = [_version_model(s, r, a, src) for s, r, a in mv.select("source", "run_id", "artifact_uri").iter_rows()]
    aliases = raw["aliases"].sort("alias").group_by("name", "version").agg(aliases=pl.col("alias"))
    reg_tags = raw["registered_model_tags"].sort("key").group_by("name").agg(
        registered_model_tags=pl.struct("key", "value"))
    rm = _empty_as_null(raw["registered_models"].select(
        "name", registered_model_description="description")).join(reg_tags, on="name", how="left")
    mv = (
        mv.with_columns(model=pl.Series(model_ids, dtype=pl.String), id=node_ids(src, "model_version", pl.concat_str("name", "version", separator="/")),
                        stage=pl.when(pl.col("current_stage").is_in(["None", ""]).not_()).then("current_stage"))
        .join(aliases, on=["name", "version"], how="left").join(rm, on="name", how="left")
    )
    nodes = mv.select(
        "id", kind=pl.lit("model_version"), tool=pl.lit(TOOL), name="name", version="version",
        uri="source", created_at=ms("creation_time"), updated_at=ms("last_updated_time"),
        status="status", user="user_id",
        attrs=pl.struct("stage", "description", "status_message", "run_link", "storage_location",
                        "registered_model_description", "registered_model_tags").struct.json_encode(),
    )
    edges = mv.filter(pl.col("model").is_not_null()).select(
        src="model", dst="id", kind=pl.lit("registered_as"), created_at=ms("creation_time"))
    registry = mv.select(
        model_version_id="id", name="name", version="version",
        aliases=pl.col("aliases").fill_null(pl.lit([], pl.List(pl.String))),
        stage="stage", model_id="model",
        run_id=pl.when(pl.col("run_id").is_not_null()).then(node_ids(src, "run", "run_id")),
        events=pl.struct("creation_time", "user_id", "stage", "aliases").map_elements(
            _events, return_dtype=pl.String),
    )
    return {"nodes": nodes, "edges": edges, "registry": registry}


def _events(row: dict[str, Any]) -> str:
    """What MLflow's registry remembers of a version's history: its registration and its state
    now (MLflow keeps no stage or alias history, so those events carry no time)."""
    at = row["creation_time"]
    events: list[dict[str, Any]] = [{
        "event": "registered", "user": row["user_id"],
        "at": None if at is None else datetime.fromtimestamp(at / 1000, timezone.utc).isoformat(),
    }]
    if row["stage"]:
        events.append({"event": "stage", "stage": row["stage"], "at": None})
    events += [{"event": "alias", "alias": a, "at": None} for a in row["aliases"] or []]
    return json.dumps(events)


def _artifacts(
    raw: RawStore, history: pl.DataFrame, times: pl.DataFrame, src: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each file a run logged, except those inside a model folder (they belong to the model)."""
    files = raw["artifacts"].filter(pl.col("owner_kind") == "run").rename({"owner": "run_uuid"})
    if history.height:
        inside = files.join(history.select("run_uuid", prefix=pl.col("path") + "/"), on="run_uuid").filter(
            pl.col("path").str.starts_with(pl.col("prefix"))).select("run_uuid", "path")
        files = files.join(inside, on=["run_uuid", "path"], how="anti")
    f = files.join(times, on="run_uuid", how="inner").with_columns(
        id=node_ids(src, "artifact", pl.concat_str("run_uuid", "path", separator="/")))
    nodes = f.select(
        "id", kind=pl.lit("artifact"), tool=pl.lit(TOOL), name="path",
        digest=pl.when(pl.col("md5").is_not_null()).then("md5:" + pl.col("md5")), size="size",
        uri=pl.col("artifact_uri").str.strip_suffix("/") + "/" + pl.col("path"),
        attrs=pl.struct(run_id="run_uuid", path="path").struct.json_encode(),
    )
    edges = f.select(src="run_node", dst="id", kind=pl.lit("output"),
                     created_at=pl.coalesce("ended_at", "started_at"))
    return nodes, edges
