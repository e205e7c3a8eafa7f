"""Which W&B model artifact each MLflow registry version points at, and what each model artifact
holds as metadata.

A version's model is an MLflow 3 LoggedModel (a `models:/<id>` source, or the model's storage
location), or, for an MLflow 2 version, a folder of its run's files: a `runs:/<run>/<path>`
source, or an artifact URI under the run's artifact root. Both become a `model` artifact logged
by their run (the logged model's, or the run's <path> folder), found again on the server by
`braid.source_id` in its metadata: the model id, or `runs:/<run>/<path>` (its `key`).

>>> run_model_key("0a1b", "model")
'runs:/0a1b/model'
"""

from __future__ import annotations

from typing import Any

import polars as pl

from braid.connectors.mlflow._raw import LOGGED_MODEL_STATUS

from ._artifacts import UnsafePath, checked_path
from ._plan import Plan
from ._wandb_fields import CONFIG, wandb_name

RUNS_SCHEME = "runs:/"
# the cases of a version whose model artifact a server links (the first of a model's versions
# in a collection makes the link, the later ones are the same link)
LINKED_CASES = ("link", "shared")
VERSION_SCHEMA = {"name": pl.String, "version": pl.String, "n": pl.Int64, "model_id": pl.String,
                  "run_uuid": pl.String, "path": pl.String, "key": pl.String, "aliases": pl.List(pl.String),
                  "stage": pl.String, "case": pl.String}


def run_model_key(run_uuid: str, path: str) -> str:
    """The id of an MLflow 2 model (a folder of a run's files): its canonical `runs:/` URI."""
    return f"{RUNS_SCHEME}{run_uuid}/{path}"


def run_path(source: str, run_id: str | None, roots: dict[str, str]) -> tuple[str, str] | None:
    """(run, path) of an MLflow 2 version's model: a `runs:/<run>/<path>` source, or a URI under
    the artifact root of the version's run; None for any other source, or a path that would
    leave the run's folder.

    >>> run_path("runs:/r1/model/", None, {})
    ('r1', 'model')
    >>> run_path("file:///art/r1/artifacts/sk/model", "r1", {"r1": "file:///art/r1/artifacts"})
    ('r1', 'sk/model')
    >>> run_path("runs:/r1/../r2", None, {}) is None, run_path("s3://bucket/model", "r1", {}) is None
    (True, True)
    """
    root = (roots.get(run_id or "") or "").rstrip("/")
    if source.startswith(RUNS_SCHEME):
        run, _, path = source.removeprefix(RUNS_SCHEME).partition("/")
    elif run_id and root and source.startswith(root + "/"):
        run, path = run_id, source[len(root) + 1:]
    else:
        return None
    try:
        return run, checked_path(path)
    except UnsafePath:
        return None


def version_fates(plan: Plan, *, server: bool) -> pl.DataFrame:
    """Every live registry version of an MLflow source with the model it points at: a logged
    model (`model_id`: by its `models:/<id>` source or its storage location, as the MLflow writer
    finds it) or a run's folder (`path` of `run_uuid`); the run that logs the model's artifact
    (`run_uuid`), the model's `key`, its `aliases` (and stage as `stage`), and its case
    (WANDB_FIELDS["model_version"]): when its model travels, linked on a server (the first of a
    registered model's versions of one model makes the link, the later ones are `shared`), and
    `offline` in a folder."""
    raw = plan.read.raw
    models = raw["logged_models"]
    by_location = dict(models.select("artifact_location", "model_id").drop_nulls().iter_rows())
    run_of = dict(models.select("model_id", "source_run_id").iter_rows())
    roots = dict(raw["runs"].select("run_uuid", "artifact_uri").drop_nulls().iter_rows())
    planned_models, planned_runs = set(plan.logged_models()["model_id"].to_list()), set(plan.run_ids)
    aliases = raw["aliases"].group_by("name", "version").agg(pl.col("alias").sort())
    versions = raw["model_versions"].filter(pl.col("current_stage").fill_null("") != "Deleted_Internal") \
        .join(aliases, on=["name", "version"], how="left").with_columns(n=pl.col("version").cast(pl.Int64)) \
        .sort("name", "n")
    rows, linked = [], set()
    for v in versions.iter_rows(named=True):
        source = v["source"] or ""
        model = by_location.get(v["storage_location"]) or by_location.get(source) or source.removeprefix("models:/")
        model = model if model in run_of else None
        folder = None if model is not None else run_path(source, v["run_id"], roots)
        run, key = (run_of[model], model) if model is not None else \
            (folder[0], run_model_key(*folder)) if folder is not None else (None, None)
        travels = model in planned_models if model is not None else run in planned_runs
        case = ("no_model" if key is None else "outside" if not travels else "offline" if not server
                else "shared" if (v["name"], key) in linked else "link")
        if case == "link":
            linked.add((v["name"], key))
        stage = v["current_stage"] if v["current_stage"] not in (None, "", "None") else None
        rows.append((v["name"], v["version"], v["n"], model, run, folder[1] if folder else None, key,
                     v["alias"] or [], stage, case))
    return pl.DataFrame(rows, schema=VERSION_SCHEMA, orient="row")


def link_groups(versions: pl.DataFrame) -> pl.DataFrame:
    """The links of linked versions (`version_fates`), in version order: one per registered model
    `name` and model `key`, with the model's `run_uuid`, its `version`s, and all their aliases and
    stages as `aliases`."""
    every = pl.col("aliases").list.explode(keep_nulls=False, empty_as_null=False).append(pl.col("stage").drop_nulls())
    return versions.group_by("name", "key", maintain_order=True).agg(
        "run_uuid", "version", aliases=every.unique().sort())


def model_metadata(plan: Plan, model: dict[str, Any]) -> dict[str, Any]:
    """A logged model's fields as its W&B artifact's metadata: params, tags, model_type, status,
    and where it came from."""
    raw, model_id = plan.read.raw, model["model_id"]

    def pairs(table: str) -> dict[str, str]:
        return dict(raw[table].filter(pl.col("model_id") == model_id).select("key", "value").iter_rows())

    status = LOGGED_MODEL_STATUS.get(model["status"] or "", model["status"])
    fields = {"params": pairs("logged_model_params"), "tags": pairs("logged_model_tags"),
              "model_type": model["model_type"] or None, "status": status or None}
    return {**{k: v for k, v in fields.items() if v}, CONFIG: {"source": plan.source, "source_id": model_id}}


def run_models(plan: Plan) -> list[dict[str, Any]]:
    """The MLflow 2 models of the planned runs that registry versions point at, one per folder:
    its `key`, `run_uuid` and `path`, the W&B artifact `name` (after the first registered model
    naming it, by name and version), and its `metadata`: the source and every registry version
    naming it (whatever the target, so a folder target's artifact is the one a later link finds)."""
    versions = version_fates(plan, server=True).filter(
        pl.col("path").is_not_null() & pl.col("run_uuid").is_in(plan.run_ids))
    named = versions.group_by("key", maintain_order=True).agg(
        pl.col("run_uuid", "path", "name").first(), registered=pl.struct("name", "version"))
    return [{"key": m["key"], "run_uuid": m["run_uuid"], "path": m["path"], "name": wandb_name(m["name"]),
             "metadata": {"source": m["key"], "registered_versions": m["registered"],
                          CONFIG: {"source": plan.source, "source_id": m["key"]}}}
            for m in named.iter_rows(named=True)]


def run_model_files(plan: Plan, model: dict[str, Any]) -> tuple[dict[str, Any], pl.DataFrame]:
    """An MLflow 2 model as `_models.model_files` takes a logged model: its location (the run's
    artifact root and the path) and braid's listing of its files, by their path in the folder."""
    raw = plan.read.raw
    root = raw["runs"].filter(pl.col("run_uuid") == model["run_uuid"])["artifact_uri"].to_list()
    prefix = model["path"] + "/"
    listed = raw["artifacts"].filter((pl.col("owner_kind") == "run") & (pl.col("owner") == model["run_uuid"])
                                     & pl.col("path").str.starts_with(prefix))
    listed = listed.with_columns(owner=pl.lit(model["key"]), path=pl.col("path").str.strip_prefix(prefix))
    location = f"{root[0].rstrip('/')}/{model['path']}" if root and root[0] else None
    return {"model_id": model["key"], "artifact_location": location}, listed
