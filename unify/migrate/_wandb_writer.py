"""Write a plan as W&B offline run folders through the wandb SDK, ready for `wandb sync`, or
uploaded by it to a W&B server.

The target is a wandb source whose `path` is the folder the run folders go into, or a W&B
server (`entity` and `project`, no `path`): then the folders are written into braid's staging
folder in the catalog and uploaded by `wandb sync` (`_wandb_upload`), every run into the
target's project. Each run is written by `wandb.init(mode="offline", ...)`,
`run.log(row, step=...)` per history step and `run.finish(exit_code=...)`, exactly as a
training script would write it. What a W&B run can
hold, and how each source field gets there, is declared once in `WANDB_FIELDS` (with `TAG_FIELDS`,
`WANDB_STATUS`, `CONFIG`); the writer, the expected report and the read-back verification all
follow it. What the SDK does, found by writing folders with wandb 0.31 and reading them back:

- The run's start is `time.time()` when `wandb.init` makes the run object (`Settings.x_start_time`
  is overwritten by `wandb.init`), its end is that start plus the writing time: the original
  times travel in config (`braid.started_at`, `braid.ended_at`), and every history row keeps its
  original `_timestamp`, which W&B takes as given.
- A history row is one step: logging a step lower than the last one, or the same step after it
  was committed, is dropped with a warning, and two values of one key at one step keep the last.
  So points are written sorted by step, one row per step; a second value of a key at a step
  cannot be carried, and a row has one `_timestamp` (the latest of its points). Negative steps
  are dropped by the SDK; `_step`, `_timestamp` and `_runtime` are W&B's own keys.
- NaN and ±inf are written as they are (the log holds JSON NaN / Infinity).
- Config keys with '.' or '/' are kept as given (the W&B UI nests '/' sections); a key
  `_wandb` is W&B's own. Config values have no length limit: a 10,000-character param is whole.
- Tags are labels of 1 to 64 characters without values (`wandb.init` refuses longer ones).
- Project names cannot hold `/ \\ # ? % :` and have at most 128 characters.
- User, host and git commit/remote are what `Settings(username=, host=, git_commit=,
  git_remote_url=, disable_git=True)` says (without `disable_git` the SDK records the git
  repository braid runs in); the environment record otherwise describes the writing process.
- Offline runs cannot record inputs (`use_artifact` raises in offline mode) nor registry links
  (`link_artifact` raises NotImplementedError): dataset inputs travel in config (`braid.datasets`).
- Offline runs do log artifacts: `run.log_artifact` writes the manifest (path, base64 md5, size)
  into the run log and `add_dir`/`add_file` copy each file into the SDK's staging folder (the
  manifest's `local_path`), where `wandb sync` uploads it from. A run's files are staged by
  `_artifacts.copy_files` first (every path checked) and logged as one artifact per run.
- `run.finish()` returns before wandb-core has written the log to its end (`finished_log` waits),
  and wandb-core writes the environment record, where the username is, on its own schedule: a
  short run is now and then closed without it, and is then written again.

A run is written into a staging folder under `<path>/.braid/` (a folder braid's W&B reader and
`wandb sync` do not look into) and renamed into `<path>` once the SDK has finished it; then the
id map marks it done (for a server: once the server holds it whole, `_wandb_upload`). A re-run
skips done runs, adopts a finished folder the map missed (a kill between the rename and the map
write; for a server, it is uploaded then), and deletes what a killed run left in staging.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from braid.connectors.mlflow._normalise import (GIT_BRANCH, GIT_COMMIT, GIT_REMOTE, PARENT, RUN_NAME, SYSTEM_TAGS,
                                                USER)
from braid.connectors.mlflow._raw import LOGGED_MODEL_STATUS
from braid.connectors.wandb._fold import Segment, read_segment
from braid.connectors.wandb._folders import open_files
from braid.unify.errors import MigrationUsageError
from braid.unify.source import Progress, SourceSpec, no_progress

from ._artifacts import ArtifactCopy, Download, RunFiles, SourceFile, copied, copy_files, mlflow_files
from ._cache_files import _path, output_files, tool_files
from ._idmap import IdMap
from ._models import model_files
from ._plan import DELETED, MODEL_RUN_NOT_MIGRATED, PARENT_NOT_MIGRATED, How, Plan
from ._report import EXAMPLES, KindReport, Report, _compare
from ._sources import INVALID_KEY, NO_STEP, NO_TIME, SOURCE_STATUS_TAG
from ._wandb_upload import (BATCH, ApiTarget, Expected, Held, Pending, Server, check_key, failure, last_values,
                            public_api, resumed_rows, server_state, upload)

NOTE = "mlflow.note.content"
# W&B's own limits (wandb.init refuses values outside them)
MAX_TAG_LENGTH = 64
MAX_PROJECT_LENGTH = 128
PROJECT_FORBIDDEN = re.compile(r"[/\\#?%:]")
DEFAULT_PROJECT = "uncategorized"  # W&B's name for runs without a project
# history keys the SDK writes itself; config keys it keeps for itself
RESERVED_METRIC_KEYS = ("_step", "_timestamp", "_runtime")
RESERVED_PARAM_KEYS = ("_wandb",)
# braid's own config namespace: what the source knew that a W&B run has no field for
CONFIG = "braid"
# where a run is written before it is complete: a folder braid's reader and `wandb sync` skip
STAGING = Path(".braid") / "migrate-staging"
# each run's files are one artifact of this type, named this prefix and the W&B run id; W&B's
# reader calls a type other than dataset/model an `artifact`
ARTIFACT_TYPE = "run-files"
ARTIFACT_PREFIX = "run-"
# each MLflow 3 LoggedModel is an artifact of this type (W&B's reader makes it a `model` node),
# named after the model; a registry version links it into the collection named after its
# registered model, in this registry of the target's organization
MODEL_TYPE = "model"
REGISTRY = "wandb-registry-model"
# what a W&B artifact or collection name cannot hold (the SDK refuses '/', ':' names a version),
# and its length
ARTIFACT_NAME_FORBIDDEN = re.compile(r"[^\w.-]")
MAX_ARTIFACT_NAME = 128
# the alias W&B gives the newest link of a collection itself (MLflow reserves it too)
LATEST = "latest"
# the caller's WANDB_* variables kept while writing: where the SDK stages artifact bytes until
# `wandb sync` (the user's choice of disk; the run records the staged path, not a setting)
KEPT_VARIABLES = ("WANDB_DATA_DIR",)
# how often a run is written before its missing environment record (its username) is left to the check
ENVIRONMENT_ATTEMPTS = 5
# how long wandb-core may take to write a finished run's log to the end
FLUSH_TIMEOUT = 120.0

# MLflow status (W&B and DVC sources are shaped as MLflow first, `_sources.STATUS`) -> the W&B
# status the exit code gives; statuses not listed become "crashed"
WANDB_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "failed", "RUNNING": "crashed",
                "SCHEDULED": "crashed"}
EXACT_STATUS = ("FINISHED", "FAILED")
# W&B status -> the exit code run.finish records (braid's W&B reader: 0 finished, 254 crashed, else failed)
EXIT_CODES = {"finished": 0, "failed": 1, "crashed": 254}
# tags that become a W&B field instead of a tag: tag -> field
TAG_FIELDS = {RUN_NAME: "name", USER: "user", GIT_COMMIT: "git_commit", GIT_REMOTE: "git_remote",
              GIT_BRANCH: "git_branch", NOTE: "notes", PARENT: "parent", SOURCE_STATUS_TAG: "status"}

# why and how, once: the declaration below, the writer and the report all use these
RUN_ID = (f"the W&B run id is a hash of the source name and run id (stable across re-runs); the source id "
          f"is config {CONFIG}.source_id")
TIMES = (f"the W&B run starts when braid writes it (wandb.init stamps its own start time; a server's run, when it "
         f"is uploaded): the original start and end are config {CONFIG}.started_at / {CONFIG}.ended_at; history "
         "rows keep their original _timestamp")
STATUS_HOW = ("as the exit code of run.finish: "
              + ", ".join(f"{s} {EXIT_CODES[w]} ({w})" for s, w in WANDB_STATUS.items())
              + f" (the SDK writes a folder only for a run it finished); the original, when not the same, is config "
                f"{CONFIG}.source_status")
TAG_AS_FIELD = (f"an MLflow system tag becomes a W&B field: {RUN_NAME} the name, {USER} the username, "
                f"{GIT_COMMIT} and {GIT_REMOTE} the git record, {NOTE} the notes; {GIT_BRANCH} is config "
                f"{CONFIG}.git_branch (W&B records no branch)")
TAG_IN_CONFIG = (f"a tag with a value, or longer than {MAX_TAG_LENGTH} characters, is config {CONFIG}.tags.<key>: "
                 f"W&B tags are labels of 1 to {MAX_TAG_LENGTH} characters")
PARENT_LINK = (f"W&B has no parent runs: config {CONFIG}.parent_id names the parent's W&B run id, and a parent "
               "and its descendants share one W&B group (the top parent's run id)")
DATASETS = (f"W&B runs record inputs as artifacts they used, and a dataset input holds no bytes braid could log as "
            f"one (offline runs cannot use artifacts at all): each dataset's name, digest, source, schema, profile "
            f"and input tags are config {CONFIG}.datasets")
ARTIFACT_BYTES = (f"each run's files are one W&B artifact of the run (type {ARTIFACT_TYPE!r}, named "
                  f"{ARTIFACT_PREFIX}<W&B run id>), at their source paths, every path checked to stay inside the "
                  "artifact folder; the SDK stages the bytes for `wandb sync`")
MODEL_ARTIFACT = (f"each MLflow 3 LoggedModel is a W&B artifact of type {MODEL_TYPE!r} logged by its run, named "
                  f"after the model (characters W&B names cannot hold become '-'); its params, tags, model_type, "
                  f"status and source model id are the artifact's metadata ({CONFIG}.source_id)")
OFFLINE_LINK = ("an offline W&B run cannot link an artifact into a registry (link_artifact raises): a folder target "
                "holds the model artifact, `wandb sync` and a link on the server are left to you")
LINKED = (f"a version links its logged model's artifact into the W&B registry collection named after the registered "
          f"model ({REGISTRY}/<name>); W&B numbers a collection's links v0, v1... in the order they are made, "
          f"and braid links in version order")
NOT_A_LOGGED_MODEL = ("the version points at a run's files (an MLflow 2 `runs:/` source), not at a logged model: W&B "
                      "links model artifacts, and braid logs a run's files as one run-files artifact")
VERSION_MODEL_NOT_MIGRATED = "the logged model the version points at is not part of this migration"
NO_LINKED_VERSION = "none of its versions is linked (see model_version)"

# entity kind -> field (or case) -> (how, why): what happens on the way into a W&B run folder.
# `history` names each metric point's case and `tag_fates` each tag's; the report counts them here.
WANDB_FIELDS: dict[str, dict[str, tuple[How, str]]] = {
    "experiment": {
        "name": ("carried", "an experiment (a DVC repository) becomes the W&B project of that name"),
        "renamed": ("transformed", f"renamed: W&B project names cannot hold / \\ # ? % : (each becomes '-') nor "
                                   f"more than {MAX_PROJECT_LENGTH} characters"),
        "project": ("transformed", f"on a W&B server, every run goes into the project the target names (`project`): "
                                   f"braid reads one project of a server; the experiment's name is config "
                                   f"{CONFIG}.experiment"),
        "tags": ("not_carried", "experiment tags: W&B projects have no tags the SDK can write"),
    },
    "run": {"id": ("transformed", RUN_ID), "lifecycle_stage": ("not_carried", DELETED)},
    "run_detail": {
        "name": ("carried", "as the display name; a run without a name shows its W&B run id"),
        "user": ("carried", "as the W&B username"),
        "git_commit": ("carried", "commit and remote URL in the W&B run's git record"),
        "times": ("transformed", TIMES),
        "status": ("transformed", STATUS_HOW),
        "group": ("transformed", "a parent run and its descendants share the W&B group of the top parent's id"),
        "job_type": ("transformed", "a DVC stage execution's job type is its stage name, an experiment's "
                                    "'experiment'; MLflow runs have none"),
        "host": ("not_carried", "host and environment: the W&B run's describe the process that wrote the folder"),
    },
    "param": {
        "value": ("carried", "as a config value, the text in full (W&B has no 6,000-character limit)"),
        "reserved": ("not_carried", f"a config key W&B or braid keeps for itself (_wandb, {CONFIG}, {CONFIG}.*)"),
    },
    "metric_point": {
        "value": ("carried", "a history row at the original step with the original _timestamp; NaN and ±inf as "
                             "they are"),
        "timestamp": ("transformed", "a W&B history row has one _timestamp: this point shares its step with a "
                                     "later one and takes that point's timestamp"),
        "same_step": ("not_carried", "another value of this metric at the same step: a W&B history row holds one "
                                     "value per key (the last logged is kept)"),
        "negative_step": ("not_carried", "a negative step: W&B history steps start at 0 (the SDK drops the row)"),
        "reserved": ("not_carried", f"a history key W&B writes itself ({', '.join(RESERVED_METRIC_KEYS)})"),
    },
    "tag": {
        "label": ("carried", "a tag without a value becomes a W&B tag"),
        "config": ("transformed", TAG_IN_CONFIG),
        "field": ("transformed", TAG_AS_FIELD),
    },
    "parent_link": {"parent": ("transformed", PARENT_LINK),
                    "outside": ("not_carried", f"{PARENT_NOT_MIGRATED} (its source id is config "
                                               f"{CONFIG}.source_parent_id)")},
    "dataset_input": {"dataset": ("transformed", DATASETS)},
    "dataset_output": {"dataset": ("transformed", f"a dataset a run wrote: its files are in the run's "
                                                  f"{ARTIFACT_TYPE!r} artifact (artifact bytes), not a W&B dataset "
                                                  f"artifact of its own")},
    "other_input": {"file": ("not_carried", "a model or file a run read: W&B runs record inputs as artifacts they "
                                            "used, and braid logs none for it (offline runs cannot use artifacts)")},
    "artifact": {"bytes": ("carried", ARTIFACT_BYTES),
                 "model_files": ("carried", f"a logged model's files are its {MODEL_TYPE!r} artifact's, at their "
                                            f"source paths, every path checked")},
    "logged_model": {"model": ("transformed", MODEL_ARTIFACT),
                     "outside": ("not_carried", MODEL_RUN_NOT_MIGRATED)},
    # registry entries, by the case `version_fates` gives each version
    "registered_model": {"link": ("transformed", f"the W&B registry collection {REGISTRY}/<name> (made by the "
                                                 f"first link)"),
                         "offline": ("not_carried", OFFLINE_LINK),
                         "unlinked": ("not_carried", NO_LINKED_VERSION),
                         "tags": ("not_carried", f"a registered model's tags: braid writes none on the {REGISTRY} "
                                                 f"collection a link makes"),
                         "description": ("not_carried", f"a registered model's description: braid writes none on "
                                                        f"the {REGISTRY} collection a link makes")},
    "model_version": {"link": ("transformed", LINKED),
                      "offline": ("not_carried", OFFLINE_LINK),
                      "run_files": ("not_carried", NOT_A_LOGGED_MODEL),
                      "outside": ("not_carried", VERSION_MODEL_NOT_MIGRATED),
                      "source_registry": ("not_carried", "a DVC model registry entry names no model artifact "
                                                         "braid logs"),
                      "tags": ("not_carried", "a model version's tags: a W&B registry link holds only aliases"),
                      "description": ("not_carried", "a model version's description: a W&B registry link holds "
                                                     "only aliases")},
    "alias": {"link": ("carried", "an alias of the link"),
              "stage": ("transformed", "an MLflow stage is an alias of the link (W&B has no stages)"),
              "offline": ("not_carried", OFFLINE_LINK),
              "unlinked": ("not_carried", "its version is not linked (see model_version)")},
}
# the metric point cases that are written
WRITTEN = ("value", "timestamp")


# -- the target ---------------------------------------------------------------------------------

def wandb_folder(spec: SourceSpec, *, catalog: Path, key: bool = False) -> Path:
    """Where the run folders go: the target's `path`; for a target that is a W&B server
    (`entity` and `project`, no `path`), braid's staging folder in the catalog, from where they
    are uploaded (`_wandb_upload`), and, with `key`, a server needs WANDB_API_KEY. A target with
    neither is refused."""
    api = ApiTarget.of(spec)
    if api is not None:
        if PROJECT_FORBIDDEN.search(api.project) or len(api.project) > MAX_PROJECT_LENGTH:
            raise MigrationUsageError(f"the W&B target {spec.name!r}: {api.project!r} is not a W&B project name "
                                      f"(no / \\ # ? % :, at most {MAX_PROJECT_LENGTH} characters)")
        if key:
            check_key(api)
        return api.folder(catalog)
    folder = spec.path("path")
    if folder is None:
        raise MigrationUsageError(
            f"the W&B target {spec.name!r} has no `path` and no `entity` and `project`: braid migrate writes W&B run "
            "folders into a `path`, or uploads them to the project `entity`/`project` of a W&B server",
            hint=f"set `path` of {spec.name!r} to a folder for the run folders, or `entity` and `project` (and "
                 "`base_url` for a server other than WANDB_BASE_URL's) with the key in WANDB_API_KEY")
    if folder.exists() and not folder.is_dir():
        raise MigrationUsageError(f"{folder}: not a folder (the `path` of the W&B target {spec.name!r})")
    return folder


def wandb_run_id(source: str, run_uuid: str) -> str:
    """The W&B run id of a source run: the same for every migration of that run.

    >>> wandb_run_id("old", "0123abcd")
    'b7d8440734da7710be05'
    """
    return hashlib.blake2b(f"{source}\x00{run_uuid}".encode(), digest_size=10).hexdigest()


def artifact_name(wid: str) -> str:
    """The W&B artifact holding the files of the run `wid`."""
    return ARTIFACT_PREFIX + wid


def wandb_name(name: str) -> str:
    """A name W&B takes for an artifact or a registry collection.

    >>> wandb_name("churn/model: v2")
    'churn-model--v2'
    """
    return ARTIFACT_NAME_FORBIDDEN.sub("-", name)[:MAX_ARTIFACT_NAME] or MODEL_TYPE


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


def version_fates(plan: Plan, *, server: bool) -> pl.DataFrame:
    """Every live registry version of an MLflow source with the logged model it points at
    (`model_id`, when it is one: by its `models:/<id>` source or its storage location, as the
    MLflow writer finds it), its `aliases` (and stage as `stage`), and its case
    (WANDB_FIELDS["model_version"]): linked on a server when its model is planned."""
    raw = plan.read.raw
    models = raw["logged_models"]
    by_location = dict(models.select("artifact_location", "model_id").drop_nulls().iter_rows())
    known, planned = set(models["model_id"].to_list()), set(plan.logged_models()["model_id"].to_list())
    aliases = raw["aliases"].group_by("name", "version").agg(pl.col("alias").sort())
    rows = []
    versions = raw["model_versions"].filter(pl.col("current_stage").fill_null("") != "Deleted_Internal") \
        .join(aliases, on=["name", "version"], how="left")
    for v in versions.iter_rows(named=True):
        source = v["source"] or ""
        model = by_location.get(v["storage_location"]) or by_location.get(source) or source.removeprefix("models:/")
        model = model if model in known else None
        case = ("offline" if not server else "run_files" if model is None
                else "outside" if model not in planned else "link")
        stage = v["current_stage"] if v["current_stage"] not in (None, "", "None") else None
        rows.append((v["name"], v["version"], int(v["version"]), model, v["alias"] or [], stage, case))
    schema = {"name": pl.String, "version": pl.String, "n": pl.Int64, "model_id": pl.String,
              "aliases": pl.List(pl.String), "stage": pl.String, "case": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row").sort("name", "n")


def project_name(experiment: str | None) -> str:
    """The W&B project an experiment becomes.

    >>> project_name("team/churn: v2")
    'team-churn- v2'
    """
    return PROJECT_FORBIDDEN.sub("-", experiment or "")[:MAX_PROJECT_LENGTH] or DEFAULT_PROJECT


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


# -- the mapping, as frames ---------------------------------------------------------------------

def history(metrics: pl.DataFrame) -> pl.DataFrame:
    """Every source point with its case in W&B history (`fate`, a field of
    WANDB_FIELDS["metric_point"]) and, for the points written, the `row_timestamp` (ms) of their
    step's row: the latest of the step's written points.

    >>> m = pl.DataFrame({"run_uuid": ["r"] * 4, "key": ["a", "a", "b", "a"], "step": [1, 1, 1, -1],
    ...                   "timestamp": [10, 30, 20, 5], "value": [1.0, 2.0, 3.0, 4.0]})
    >>> for row in history(m).select("key", "step", "value", "row_timestamp", "fate").rows():
    ...     print(row)
    ('a', -1, 4.0, None, 'negative_step')
    ('a', 1, 1.0, None, 'same_step')
    ('a', 1, 2.0, 30, 'value')
    ('b', 1, 3.0, 30, 'timestamp')
    """
    group = ("run_uuid", "key", "step")
    reserved = pl.col("key").is_in(RESERVED_METRIC_KEYS)
    negative = pl.col("step") < 0
    points = metrics.select("run_uuid", "key", "step", "timestamp", "value").with_row_index("_n") \
        .sort("run_uuid", "key", "step", "timestamp", "_n") \
        .with_columns(_last=pl.int_range(pl.len()).over(group) == pl.len().over(group) - 1)
    kept = ~reserved & ~negative & pl.col("_last")
    points = points.with_columns(row_timestamp=pl.col("timestamp").filter(kept).max().over("run_uuid", "step"))
    fate = (pl.when(reserved).then(pl.lit("reserved")).when(negative).then(pl.lit("negative_step"))
            .when(~pl.col("_last")).then(pl.lit("same_step"))
            .when(pl.col("timestamp") != pl.col("row_timestamp")).then(pl.lit("timestamp"))
            .otherwise(pl.lit("value")))
    return points.with_columns(row_timestamp=pl.when(kept).then("row_timestamp"), fate=fate).drop("_n", "_last")


def tag_fates(tags: pl.DataFrame) -> pl.DataFrame:
    """Every tag with where it goes (`to`): a W&B field (TAG_FIELDS), a W&B tag ("label"), or
    config braid.tags ("config")."""
    label = (pl.col("value").fill_null("") == "") & pl.col("key").str.len_chars().is_between(1, MAX_TAG_LENGTH)
    return tags.with_columns(to=pl.when(pl.col("key").is_in(list(TAG_FIELDS)))
                             .then(pl.col("key").replace_strict(TAG_FIELDS, default=None))
                             .when(label).then(pl.lit("label")).otherwise(pl.lit("config")))


def reserved_param(key: pl.Expr) -> pl.Expr:
    return key.is_in([*RESERVED_PARAM_KEYS, CONFIG]) | key.str.starts_with(f"{CONFIG}.")


def source_tags(plan: Plan, tool: str) -> pl.DataFrame:
    """The source's own tags: for W&B and DVC sources, not those `_sources.to_raw` made from run fields."""
    tags = plan.frame("tags")
    if tool != "mlflow":
        tags = tags.filter(~pl.col("key").is_in([*SYSTEM_TAGS, SOURCE_STATUS_TAG]))
    return tags


def families(plan: Plan) -> tuple[dict[str, str], dict[str, str]]:
    """(run -> its parent among the planned runs, run -> the top parent of its family), for the
    runs that have a parent or a child in the plan."""
    planned = set(plan.run_ids)
    links = plan.frame("tags").filter(pl.col("key") == PARENT)
    parent = {c: p for c, p in links.select("run_uuid", "value").iter_rows() if p in planned and c != p}
    top: dict[str, str] = {}
    for run in plan.run_ids:
        seen, node = {run}, run
        while node in parent and parent[node] not in seen:
            node = parent[node]
            seen.add(node)
        if node != run:
            top[run] = top[node] = node
    return parent, top


def job_types(plan: Plan, tool: str) -> dict[str, str]:
    """DVC: each run's stage name, or 'experiment'; other sources have no job type."""
    if tool != "dvc":
        return {}
    prefix = f"{plan.source}:run/"
    nodes = plan.read.graph["nodes"].filter(pl.col("kind") == "run").select(
        run=pl.col("id").str.strip_prefix(prefix),
        job=pl.coalesce(pl.col("attrs").str.json_path_match("$.stage"),
                        pl.col("attrs").str.json_path_match("$.kind")))
    return {r: j for r, j in nodes.iter_rows() if j}


# -- the expected report ------------------------------------------------------------------------

def _count(kinds: dict[str, KindReport], kind: str, case: str, n: int, *, why: str | None = None) -> None:
    """Count `n` entities of `kind` under a declared case: carried, transformed or not carried
    as WANDB_FIELDS says, under its text (or `why`, a more precise one)."""
    if not n:
        return
    how, text = WANDB_FIELDS[kind][case]
    report = kinds.setdefault(kind, KindReport())
    if how == "carried":
        report.carried += n
    elif how == "transformed":
        report.transformed[why or text] += n
    else:
        report.not_carried[why or text] += n


def expected_wandb_report(plan: Plan, tool: str, *, dry_run: bool, project: str | None = None) -> Report:
    """The report a migration into W&B run folders (or, with `project`, into that project of a W&B
    server) leads to, counted from the plan through the declaration (`WANDB_FIELDS`) before
    anything is written."""
    raw = plan.read.raw
    kinds = {kind: KindReport() for kind in WANDB_FIELDS}
    names = raw["experiments"].filter(pl.col("experiment_id").is_in(plan.experiment_ids))["name"].to_list()
    renamed = 0 if project is not None else sum(project_name(n) != n for n in names)
    _count(kinds, "experiment", "project" if project is not None else "name", len(names) - renamed)
    _count(kinds, "experiment", "renamed", renamed)
    if tool == "mlflow":
        _count(kinds, "experiment", "tags",
               raw["experiment_tags"].filter(pl.col("experiment_id").is_in(plan.experiment_ids)).height)

    runs = raw["runs"].filter(pl.col("run_uuid").is_in(plan.run_ids))
    _count(kinds, "run", "id", runs.height)
    for why in plan.skipped_runs.values():
        _count(kinds, "run", "lifecycle_stage", 1, why=why)
    _count(kinds, "run_detail", "name", runs.height)  # with the user and the git record
    _count(kinds, "run_detail", "times", runs.height)
    original = dict(plan.frame("tags").filter(pl.col("key") == SOURCE_STATUS_TAG)
                    .select("run_uuid", "value").iter_rows())
    for run, status in runs.select("run_uuid", "status").iter_rows():
        was = original.get(run) or (None if status in EXACT_STATUS else status)
        if was is not None:
            wandb_status = WANDB_STATUS.get(status, "crashed")
            _count(kinds, "run_detail", "status", 1, why=f"status {was!r} -> {wandb_status} (exit code "
                   f"{EXIT_CODES[wandb_status]}), the original in config {CONFIG}.source_status")
    parent, top = families(plan)
    _count(kinds, "run_detail", "group", len(top))
    jobs = job_types(plan, tool)
    _count(kinds, "run_detail", "job_type", sum(r in jobs for r in plan.run_ids))

    params = plan.frame("params")
    reserved = int(params.select(reserved_param(pl.col("key")).sum()).item())
    _count(kinds, "param", "value", params.height - reserved)
    _count(kinds, "param", "reserved", reserved)
    for fate, n in history(plan.frame("metrics"))["fate"].value_counts().iter_rows():
        _count(kinds, "metric_point", fate, n)
    for to, n in tag_fates(source_tags(plan, tool)).filter(pl.col("key") != PARENT)["to"].value_counts().iter_rows():
        _count(kinds, "tag", to if to in ("label", "config") else "field", n)
    links = plan.frame("tags").filter(pl.col("key") == PARENT).height
    _count(kinds, "parent_link", "parent", len(parent))
    _count(kinds, "parent_link", "outside", links - len(parent))
    _count(kinds, "dataset_input", "dataset", plan.frame("dataset_inputs").height)
    if tool == "mlflow":
        _mlflow_only(plan, kinds, server=project is not None)
    else:
        _source_only(plan, tool, kinds)
    return Report(plan.source, plan.target, dry_run, kinds)


def _mlflow_only(plan: Plan, kinds: dict[str, KindReport], *, server: bool) -> None:
    """What an MLflow store holds beyond runs: the files of the runs and of their logged models
    (those braid lists on a local root; a remote root's are counted as they are copied,
    `report_copies`), the logged models, and the registry: linked on a `server`, by the case
    `version_fates` gives each version."""
    raw = plan.read.raw
    planned = plan.logged_models()["model_id"]
    models = raw["logged_models"].filter(pl.col("lifecycle_stage").fill_null("active") != "deleted")
    files = raw["artifacts"].filter(pl.col("owner").is_in(plan.run_ids) | pl.col("owner").is_in(planned.implode()))
    versions = version_fates(plan, server=server)
    linked = versions.filter(pl.col("case") == "link")
    names = raw["registered_models"]["name"]
    registered = names.is_in(linked["name"].implode()).sum()
    aliases = versions.select("case", n=pl.col("aliases").list.len())

    def described(table: str) -> int:
        return int((raw[table]["description"].fill_null("") != "").sum())

    for kind, case, n in (
            ("artifact", "bytes", files.filter(pl.col("owner_kind") == "run").height),
            ("artifact", "model_files", files.filter(pl.col("owner_kind") != "run").height),
            ("logged_model", "model", planned.len()), ("logged_model", "outside", models.height - planned.len()),
            ("registered_model", "link", registered),
            ("registered_model", "offline" if not server else "unlinked", names.len() - registered),
            ("alias", "link", aliases.filter(pl.col("case") == "link")["n"].sum()),
            ("alias", "stage", linked["stage"].is_not_null().sum()),
            ("alias", "offline" if not server else "unlinked", aliases.filter(pl.col("case") != "link")["n"].sum()),
            ("registered_model", "tags", raw["registered_model_tags"].height),
            ("registered_model", "description", described("registered_models")),
            ("model_version", "tags", raw["model_version_tags"].height),
            ("model_version", "description", described("model_versions"))):
        _count(kinds, kind, case, int(n))
    for case, n in versions["case"].value_counts().iter_rows():
        _count(kinds, "model_version", case, n)


def _source_only(plan: Plan, tool: str, kinds: dict[str, KindReport]) -> None:
    """What a W&B or DVC source's tables hold that its MLflow shape (`_sources.to_raw`) or an
    offline W&B folder cannot: keys MLflow refuses, outputs, other inputs, registry, host."""
    g = plan.read.graph
    planned = [f"{plan.source}:run/{r}" for r in plan.run_ids]
    shaped = {"params": plan.frame("params"), "metrics": plan.frame("metrics"), "tags": source_tags(plan, tool)}
    for kind, table, column in (("param", "params", "run_id"), ("metric_point", "metrics", "run_id"),
                                ("tag", "tags", "node_id")):
        if table not in g:
            continue
        mine = g[table].filter(pl.col(column).is_in(planned) & ~(
            pl.col("key").is_in(SYSTEM_TAGS) if table == "tags" else pl.lit(False)))
        dropped = mine.height - shaped[table].height
        if dropped > 0:
            report = kinds[kind]
            report.not_carried[f"{INVALID_KEY}: braid shapes the source as MLflow runs first"] += dropped
        if table == "metrics":
            for why, n in ((NO_STEP, int(mine["step"].is_null().sum())),
                           (NO_TIME, int(mine["timestamp"].is_null().sum()))):
                if n:
                    kinds["metric_point"].transformed[why] = n
    runs = g["runs"].filter(pl.col("id").is_in(planned))
    _count(kinds, "run_detail", "host", int(runs["host"].is_not_null().sum()) if "host" in runs.columns else 0)
    edges = g.get("edges", pl.DataFrame(schema={"src": pl.String, "dst": pl.String, "kind": pl.String}))
    kind_of = dict(g["nodes"].select("id", "kind").iter_rows())
    ins = edges.filter((pl.col("kind") == "input") & pl.col("dst").is_in(planned))["src"].to_list()
    outs = Counter(kind_of.get(d) for d in edges.filter((pl.col("kind") == "output")
                                                        & pl.col("src").is_in(planned))["dst"].to_list())
    for kind, case, n in (("other_input", "file", sum(kind_of.get(s) != "dataset" for s in ins)),
                          ("dataset_output", "dataset", outs["dataset"]),
                          ("artifact", "bytes", output_files(g, planned).height),
                          ("model_version", "source_registry", g["registry"].height if "registry" in g else 0)):
        _count(kinds, kind, case, n)


# -- the writer ---------------------------------------------------------------------------------

@contextlib.contextmanager
def offline_sdk(*, data_dir: Path | None = None) -> Iterator[Any]:
    """The wandb SDK, offline and silent, with no WANDB_* variable of the caller's shell in play
    (WANDB_RUN_ID, WANDB_TAGS, WANDB_ENTITY... would change what is written) but those saying
    where bytes go on disk (`KEPT_VARIABLES`; `data_dir`, when given, is where the SDK stages
    artifact bytes); stdout kept for the report. Restored afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    for key in saved:
        if key not in KEPT_VARIABLES:
            del os.environ[key]
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DISABLE_CODE="true")
    if data_dir is not None:
        os.environ["WANDB_DATA_DIR"] = str(data_dir)
    import wandb

    fresh = wandb.run is None
    try:
        if fresh:
            wandb.teardown()  # a service started before reads the old environment
        with contextlib.redirect_stdout(sys.stderr):
            yield wandb
    finally:
        if fresh and wandb.run is None:
            wandb.teardown()
        for key in [k for k in os.environ if k.startswith("WANDB_") and k not in KEPT_VARIABLES]:
            del os.environ[key]
        os.environ.update(saved)


def finished_log(log: Path, *, timeout: float = FLUSH_TIMEOUT) -> Segment:
    """A run's transaction log once wandb-core has written all of it. `run.finish()` returns
    before wandb-core has flushed and closed the file (a 7-byte log right after it was seen), so
    wait until no process holds it open and it ends with the exit record."""
    deadline, delay = time.monotonic() + timeout, 0.005
    while True:
        held, _ = open_files([str(log)])
        if not held:
            seg = read_segment(log)
            if seg.has_exit:
                return seg
        if time.monotonic() > deadline:
            raise OSError(f"{log}: wandb-core did not finish writing the run in {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


@dataclass(frozen=True)
class PreparedRun:
    """One run as the SDK is to write it: `wandb.init`'s arguments, its history rows (one per
    step: keys, values and the row's timestamp), its W&B status, and the username its
    environment record must hold."""

    init: dict[str, Any]
    rows: pl.DataFrame | None
    status: str
    user: str


@dataclass(frozen=True)
class Logged:
    """An artifact a run logs: its name, type, staged folder (None: no file to hold) and metadata."""

    name: str
    type: str
    folder: str | None
    metadata: dict[str, Any] | None = None


class WandbWriter:
    """Writes the planned runs of `source` as W&B offline run folders into one folder; for an API
    target, into its staging folder in the catalog, from where `_wandb_upload` sends them to the
    server a batch at a time."""

    def __init__(self, spec: SourceSpec, plan: Plan, source: SourceSpec, *, catalog: Path) -> None:
        self.spec, self.plan, self.source, self.tool = spec, plan, source, source.tool
        self.api = ApiTarget.of(spec)
        self.server = Server(self.api, source.name) if self.api is not None else None
        self.folder = wandb_folder(spec, catalog=catalog)
        self._files_of: RunFiles | None = None
        self._models_of: dict[str, list[dict[str, Any]]] | None = None
        self.entity = spec.options.get("entity")
        self.created: Counter[str] = Counter()
        self.reused: Counter[str] = Counter()

    def staging(self, wid: str) -> Path:
        return self.folder / STAGING / wid

    def finished_folder(self, wid: str) -> Path | None:
        """A complete run folder of `wid` in the target (only complete ones are renamed in)."""
        for folder in sorted(self.folder.glob(f"offline-run-*-{wid}")):
            if (folder / f"run-{wid}.wandb").is_file():
                return folder
        return None

    def files_of(self, run_uuid: str) -> tuple[list[SourceFile], str | None, Download]:
        """A source run's files: the MLflow source's artifact listing, or what a DVC run wrote
        (found in the DVC cache, checked by md5). Looked up once, when the first run is written."""
        if self._files_of is None:
            if self.tool == "mlflow":
                from mlflow import MlflowClient

                from ._mlflow_writer import writer_uri

                uri = writer_uri(self.source)
                self._files_of = mlflow_files(self.plan, MlflowClient(uri, uri))
            else:
                self._files_of = tool_files(self.source, self.plan)
        return self._files_of(run_uuid)

    def models_of(self, run_uuid: str) -> list[dict[str, Any]]:
        """The planned logged models a source run logged (MLflow 3 sources only)."""
        if self._models_of is None:
            self._models_of = {}
            for m in self.plan.logged_models().sort("model_id").iter_rows(named=True):
                self._models_of.setdefault(m["source_run_id"], []).append(m)
        return self._models_of.get(run_uuid, [])

    def owners(self, run_uuid: str) -> list[str]:
        """The id map's artifact owners of a run: the run and its logged models."""
        return [run_uuid, *(m["model_id"] for m in self.models_of(run_uuid))]

    def native_id(self, project: str, wid: str) -> str:
        return f"{self.entity or 'offline'}/{project}/{wid}"

    def project(self, experiment: str | None) -> str:
        """The W&B project an experiment's runs go into: the target's on a server, else its own."""
        return self.api.project if self.api is not None else project_name(experiment)

    def runs(self, idmap: IdMap, progress: Progress = no_progress) -> None:
        plan, raw = self.plan, self.plan.read.raw
        if self.server is not None:
            self.server.connect()  # a dead server or a refused key: one line, before anything is written
        self.folder.mkdir(parents=True, exist_ok=True)
        experiments = dict(raw["experiments"].select("experiment_id", "name").iter_rows())
        for experiment in plan.experiment_ids:
            if idmap.get("experiments", experiment) is None:
                idmap.set("experiments", experiment, self.project(experiments.get(experiment)))
                self.created["projects"] += 1
            else:
                self.reused["projects"] += 1
        idmap.save()
        by_run = {name: {k[0]: v for k, v in frame.partition_by("run_uuid", as_dict=True).items()}
                  for name, frame in (("params", plan.frame("params")), ("tags", plan.frame("tags")),
                                      ("metrics", history(plan.frame("metrics"))),
                                      ("dataset_inputs", plan.frame("dataset_inputs")))}
        info = {r["run_uuid"]: r for r in raw["runs"].filter(pl.col("run_uuid").is_in(plan.run_ids))
                .iter_rows(named=True)}
        parent, top = families(plan)
        jobs = job_types(plan, self.tool)
        waiting: list[Pending] = []
        with offline_sdk(data_dir=self.data_dir) as wandb:
            for n, run_uuid in enumerate(plan.run_ids):
                wid = wandb_run_id(plan.source, run_uuid)
                experiment = info[run_uuid]["experiment_id"]
                project = str(idmap.get("experiments", experiment))
                if idmap.run_done(run_uuid):
                    self.reused["runs"] += 1
                    progress("runs", n + 1, len(plan.run_ids))
                    continue
                parts = {name: frames.get(run_uuid) for name, frames in by_run.items()}
                run = self._prepare(wandb, info[run_uuid], project, experiments.get(experiment), wid, parts,
                                    parent, top, jobs)
                folder = self._folder(wandb, run, run_uuid, wid, idmap)
                if self.server is None:
                    idmap.set_run(run_uuid, self.native_id(project, wid), done=True)
                    idmap.save()
                else:
                    waiting.append(self._pending(wandb, run, run_uuid, wid, folder, idmap))
                    if len(waiting) >= BATCH:
                        self._upload(waiting, idmap)
                        waiting = []
                progress("runs", n + 1, len(plan.run_ids))
            if waiting:
                self._upload(waiting, idmap)
        self._clean()
        if self.server is not None:
            self._link_versions(idmap)

    def _link_versions(self, idmap: IdMap) -> None:
        """Link each registry version whose logged model travelled (`version_fates`) into the
        registry collection named after its registered model, with its aliases and stage, through
        the public API (`wandb sync` sends no links), in version order, once: the id map's
        `model_versions` section records each link as it is made. A link the map missed (a kill
        right after it) is made again, which W&B takes as the same link (its aliases added)."""
        assert self.server is not None and self.api is not None
        versions = version_fates(self.plan, server=True).filter(pl.col("case") == "link")
        todo = [v for v in versions.iter_rows(named=True) if idmap.get("model_versions", f"{v['name']}/{v['version']}")
                is None]
        self.reused["registry links"] += versions.height - len(todo)
        if not todo:
            return
        models = {m["model_id"]: m for m in self.plan.logged_models().iter_rows(named=True)}
        t, found = self.api, {}
        with public_api(t) as api:
            for v in todo:
                model = models[v["model_id"]]
                where = f"{REGISTRY}/{wandb_name(v['name'])}"
                try:
                    if model["model_id"] not in found:
                        found |= self._model_artifacts(api, wandb_run_id(self.plan.source, model["source_run_id"]))
                    artifact = found.get(model["model_id"])
                    if artifact is None:
                        raise ValueError(f"the run {t.entity}/{t.project}/"
                                         f"{wandb_run_id(self.plan.source, model['source_run_id'])} logged no model "
                                         f"artifact of logged model {model['model_id']}")
                    link = artifact.link(where, aliases=[*v["aliases"], *([v["stage"]] if v["stage"] else [])])
                except Exception as exc:  # the client's errors have no common base: one line, whatever it raised
                    raise self.server.error(
                        f"{t.url}: linking version {v['version']} of registered model {v['name']!r} into {where} "
                        f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                        hint="the runs are on the server; run the same migration again to link the rest") from None
                idmap.set("model_versions", f"{v['name']}/{v['version']}", f"{where}:{link.version}")
                idmap.save()
                self.created["registry links"] += 1

    def _model_artifacts(self, api: Any, wid: str) -> dict[str, Any]:
        """The model artifacts run `wid` logged on the server, by the source model id in their metadata."""
        t = self.api
        assert t is not None
        out = {}
        for artifact in api.run(f"{t.entity}/{t.project}/{wid}").logged_artifacts():
            source = (artifact.metadata or {}).get(CONFIG) or {}
            if artifact.type == MODEL_TYPE and source.get("source") == self.plan.source:
                out[source.get("source_id")] = artifact
        return out

    def _folder(self, wandb: Any, run: PreparedRun, run_uuid: str, wid: str, idmap: IdMap) -> Path:
        """The run's finished folder in the target folder: the one a killed migration left there
        (renamed in, its files' outcome already in the id map), or written now."""
        folder = self.finished_folder(wid)
        if folder is not None:
            if self.server is None:
                self.reused["runs (found finished in the target folder)"] += 1
            return folder
        staged, tallies = self._write_run(wandb, run, run_uuid, wid)
        # the files' outcome first: a kill after the rename adopts the folder with it
        for owner, tally in tallies.items():
            idmap.set("artifacts", owner, tally.entry())
        idmap.save()
        folder = self.folder / staged.name
        os.replace(staged, folder)  # complete: only now does the target folder hold it
        shutil.rmtree(self.staging(wid), ignore_errors=True)
        if self.server is None:  # a server's runs count once it holds them (`_upload`)
            self._count_created(run_uuid, idmap)
        return folder

    def _count_created(self, run_uuid: str, idmap: IdMap) -> None:
        """A run the target now holds, with its files and its logged models' artifacts."""
        self.created["runs"] += 1
        copied = sum((idmap.get("artifacts", o) or {}).get("copied", 0) for o in self.owners(run_uuid))
        if copied:
            self.created["artifact files"] += copied
        if self.models_of(run_uuid):
            self.created["model artifacts"] += len(self.models_of(run_uuid))

    def _pending(self, wandb: Any, run: PreparedRun, run_uuid: str, wid: str, folder: Path, idmap: IdMap) -> Pending:
        """A run folder waiting for the server, with what the server holds once it has the run whole."""
        copied = (idmap.get("artifacts", run_uuid) or {}).get("copied")
        logged = ([artifact_name(wid)] if copied else []) + [wandb_name(m["name"]) for m in self.models_of(run_uuid)]
        expected = Expected(server_state(EXIT_CODES[run.status]), 0 if run.rows is None else run.rows.height,
                            tuple(dict.fromkeys(logged)))
        return Pending(run_uuid, wid, folder, expected, functools.partial(self._resumed, wandb, run, run_uuid, wid))

    @property
    def data_dir(self) -> Path | None:
        """Where the SDK stages artifact bytes: for an API target, braid's staging folder (removed
        once every run is on the server); else the caller's WANDB_DATA_DIR, which `wandb sync`
        reads later."""
        return self.folder / STAGING.parent / "data" if self.api is not None else None

    def _upload(self, waiting: list[Pending], idmap: IdMap) -> None:
        """A batch of run folders onto the server (`_wandb_upload.upload`); each run the server
        then holds whole is done in the id map and its folder deleted."""
        assert self.server is not None and self.api is not None
        flushed = upload(self.server, waiting, self.folder / STAGING.parent)
        for pending, sent in flushed.done:
            idmap.set_run(pending.run_uuid, self.native_id(self.api.project, pending.wid), done=True)
            idmap.save()
            shutil.rmtree(pending.folder, ignore_errors=True)
            if sent:
                self._count_created(pending.run_uuid, idmap)
            else:
                self.reused["runs (found whole on the W&B server)"] += 1
        for pending in waiting:
            shutil.rmtree(self.staging(pending.wid), ignore_errors=True)  # resumed segments
        if flushed.failed:
            raise failure(self.server, flushed, len(waiting))

    def _clean(self) -> None:
        """Empty staging folders: nothing was left half-written. An API target's whole staging
        folder goes once no run folder waits for the server."""
        if self.api is not None:
            if not any(self.folder.glob("offline-run-*")):
                shutil.rmtree(self.folder, ignore_errors=True)
                with contextlib.suppress(OSError):
                    self.folder.parent.rmdir()
            return
        with contextlib.suppress(OSError):
            (self.folder / STAGING).rmdir()
            (self.folder / STAGING.parent).rmdir()

    def _prepare(self, wandb: Any, info: dict[str, Any], project: str, experiment: str | None, wid: str,
                 parts: dict[str, pl.DataFrame | None], parent: dict[str, str], top: dict[str, str],
                 jobs: dict[str, str]) -> PreparedRun:
        """The run as the SDK is to write it, through the declaration (`WANDB_FIELDS`)."""
        run_uuid, source = info["run_uuid"], self.plan.source
        tags = tag_fates(parts["tags"] if parts["tags"] is not None
                         else pl.DataFrame(schema={"key": pl.String, "value": pl.String}))
        fields = {to: value for to, value in tags.filter(~pl.col("to").is_in(["label", "config"]))
                  .select("to", "value").iter_rows()}
        status = WANDB_STATUS.get(info["status"], "crashed")
        original = fields.get("status") or (None if info["status"] in EXACT_STATUS else info["status"])
        mine: dict[str, Any] = {
            "source": source, "source_id": run_uuid, "started_at": _iso(info["start_time"]),
            "ended_at": _iso(info["end_time"]), "source_status": original, "git_branch": fields.get("git_branch"),
            "experiment": experiment if self.api is not None else None,
            "parent_id": wandb_run_id(source, parent[run_uuid]) if run_uuid in parent else None,
            "source_parent_id": fields.get("parent") if fields.get("parent") and run_uuid not in parent else None,
            "tags": dict(tags.filter(pl.col("to") == "config").select("key", "value").iter_rows()) or None,
            "datasets": [{k: v for k, v in d.items() if k != "run_uuid" and v is not None}
                         for d in parts["dataset_inputs"].iter_rows(named=True)]
            if parts["dataset_inputs"] is not None else None,
        }
        config: dict[str, Any] = {}
        if parts["params"] is not None:
            config = dict(parts["params"].filter(~reserved_param(pl.col("key"))).select("key", "value").iter_rows())
        config[CONFIG] = {k: v for k, v in mine.items() if v is not None}
        user = fields.get("user") or info["user_id"] or ""
        init = dict(
            mode="offline", project=project, entity=self.entity, id=wid,
            name=info["name"] or fields.get("name") or None, notes=fields.get("notes") or None,
            tags=tags.filter(pl.col("to") == "label")["key"].to_list(), config=config,
            group=wandb_run_id(source, top[run_uuid]) if run_uuid in top else None,
            job_type=jobs.get(run_uuid), reinit="create_new",
            settings=wandb.Settings(
                username=user, email="", host="", git_commit=fields.get("git_commit"),
                git_remote_url=fields.get("git_remote"), disable_git=True, console="off", save_code=False,
                disable_code=True, disable_job_creation=True, x_disable_stats=True, x_save_requirements=False,
                silent=True))
        rows = None
        if parts["metrics"] is not None:
            rows = parts["metrics"].filter(pl.col("fate").is_in(WRITTEN)).sort("step", "key") \
                .group_by("step", maintain_order=True).agg("key", "value", pl.col("row_timestamp").first())
        return PreparedRun(init, rows, status, user)

    def _write_run(self, wandb: Any, run: PreparedRun, run_uuid: str, wid: str,
                   summary: dict[str, Any] | None = None) -> tuple[Path, dict[str, ArtifactCopy]]:
        """The run written by the SDK into its staging folder, with its files and each of its
        logged models' staged by `copy_files` (each path checked) and logged as artifacts: (the
        finished run folder, what each owner's copy did, by run or model id)."""
        stage, written = self.staging(wid), []

        def write(logged: list[Logged]) -> None:
            for _ in range(ENVIRONMENT_ATTEMPTS):
                folder = self._write(wandb, stage, run.init, run.rows, EXIT_CODES[run.status], logged, summary)
                # wandb-core writes the environment record (which holds the username) on its own
                # schedule and can close a short run without it (about 1 run in 50): write it again;
                # after the last attempt the read-back check reports the missing user
                if finished_log(folder / f"run-{wid}.wandb").environment.get("username", "") == run.user:
                    break
            written.append(folder)

        owners: list[tuple[str, Any, Any]] = [(run_uuid, self.files_of(run_uuid),
                                               lambda folder: Logged(artifact_name(wid), ARTIFACT_TYPE, folder))]
        if self.models_of(run_uuid):
            from ._mlflow_writer import writer_uri

            listed = self.plan.read.raw["artifacts"].filter(pl.col("owner_kind") == "model")
            for m in self.models_of(run_uuid):
                owners.append((m["model_id"], model_files(m, listed, writer_uri(self.source)),
                               lambda folder, m=m: Logged(wandb_name(m["name"]), MODEL_TYPE, folder,
                                                          model_metadata(self.plan, m))))
        tallies = {owner: ArtifactCopy() for owner, _, _ in owners}
        _staged(owners, tallies, [], write)  # writes the run while every owner's staged files exist
        return written[-1], tallies

    def _resumed(self, wandb: Any, run: PreparedRun, run_uuid: str, wid: str, held: Held) -> Path:
        """A resumed segment that completes a run the server holds in part (`held`): the rows it
        lacks, the whole summary, the run's files and its end. Raises ValueError when the server's
        rows are not the run's first ones."""
        rest = dataclasses.replace(run, init={**run.init, "resume": "allow"}, rows=resumed_rows(run.rows, held))
        folder, _ = self._write_run(wandb, rest, run_uuid, wid, summary=last_values(run.rows))
        return folder

    @staticmethod
    def _write(wandb: Any, stage: Path, init: dict[str, Any], rows: pl.DataFrame | None, exit_code: int,
               logged: list[Logged], summary: dict[str, Any] | None) -> Path:
        """One run written by the SDK into an empty staging folder, with its artifacts (the run's
        files only when some were staged; a model always, as it has metadata) and, for a resumed
        segment, the run's whole `summary`; returns its run folder."""
        shutil.rmtree(stage, ignore_errors=True)  # what a killed or earlier attempt left of this run
        stage.mkdir(parents=True)
        run = None
        try:
            run = wandb.init(dir=str(stage), **init)
            for step, keys, values, when in rows.iter_rows() if rows is not None else ():
                row = dict(zip(keys, values, strict=True))
                row["_timestamp"] = when / 1000
                run.log(row, step=step)
            if summary:
                run.summary.update(summary)
            for art in logged:
                if art.folder is None and art.type == ARTIFACT_TYPE:
                    continue
                artifact = wandb.Artifact(art.name, type=art.type, metadata=art.metadata)
                if art.folder is not None:
                    artifact.add_dir(art.folder)
                run.log_artifact(artifact)
            run.finish(exit_code=exit_code)
        except BaseException:
            if run is not None:
                with contextlib.suppress(Exception):
                    run.finish(exit_code=EXIT_CODES["failed"])
            shutil.rmtree(stage, ignore_errors=True)
            raise
        written = sorted((stage / "wandb").glob(f"offline-run-*-{init['id']}"))
        if not written:
            raise OSError(f"{stage}: the wandb SDK wrote no offline-run-*-{init['id']} folder")
        return written[-1]

    def read_back(self) -> dict[str, pl.DataFrame]:
        """The target as braid's W&B reader sees it: the folder only, or, for an API target, the
        server only (through `wandb.Api()`)."""
        from braid.connectors.wandb import read_source

        if self.api is not None:
            spec = self.api.read_spec(self.spec)
        else:
            options = {"path": str(self.folder), **({"entity": self.entity} if self.entity else {})}
            spec = SourceSpec(self.spec.name, "wandb", options, base_dir=self.spec.base_dir)
        return read_source(spec, previous=None, progress=no_progress).tables


def _staged(owners: list[tuple[str, Any, Any]], tallies: dict[str, ArtifactCopy], logged: list[Logged],
            then: Any) -> None:
    """Stage each owner's files in turn (`copy_files`: each path checked, into a temporary folder
    that lives while its callback runs), and call `then` with every owner's artifact once all are
    staged; an owner with no file staged gets no folder."""
    if not owners:
        then(logged)
        return
    (owner, (files, root, download), artifact), rest = owners[0], owners[1:]
    done: list[bool] = []

    def next_owner(folder: str | None) -> None:
        done.append(True)
        _staged(rest, tallies, [*logged, artifact(folder)], then)

    copy_files(files, root, download, next_owner, tallies[owner])
    if not done:  # no file to stage
        next_owner(None)


# -- verification -------------------------------------------------------------------------------

def verify_wandb(plan: Plan, tool: str, target: dict[str, pl.DataFrame], idmap: IdMap, *,
                 project: str | None = None) -> dict[str, dict[str, Any]]:
    """Compare the source (the planned runs, mapped through the declaration) with the target
    read back by braid's W&B reader (the folder, or the server's `project`); target runs are
    matched by config braid.source_id, and the files refused on the way (the id map's tally) are
    not expected."""
    src, g = plan.source, plan.read.graph
    params_t = target.get("params", pl.DataFrame(schema={"run_id": pl.String, "key": pl.String, "value": pl.String}))
    ours = params_t.filter((pl.col("key") == f"{CONFIG}.source") & (pl.col("value") == src))["run_id"]
    ids = params_t.filter((pl.col("key") == f"{CONFIG}.source_id") & pl.col("run_id").is_in(ours.implode()))
    to_source = {t: f"{src}:run/{s}" for t, s in ids.select("run_id", "value").iter_rows()}
    wids = {r: wandb_run_id(src, r) for r in plan.run_ids}
    planned = [f"{src}:run/{r}" for r in plan.run_ids]

    def theirs(frame: pl.DataFrame, column: str) -> pl.DataFrame:
        return frame.filter(pl.col(column).is_in(list(to_source))).with_columns(
            pl.col(column).replace_strict(to_source))

    def node(column: str = "run_uuid") -> pl.Expr:
        return pl.lit(f"{src}:run/") + pl.col(column)

    params = theirs(params_t, "run_id")
    own = params.filter(reserved_param(pl.col("key")))

    def own_value(name: str) -> pl.DataFrame:
        return own.filter(pl.col("key") == f"{CONFIG}.{name}").select(id="run_id", value="value")

    out: dict[str, dict[str, Any]] = {}
    # runs: the source's normalised runs, with the W&B fields the declaration gives them
    experiments = {e: project or project_name(n)
                   for e, n in plan.read.raw["experiments"].select("experiment_id", "name").iter_rows()}
    parent, top = families(plan)
    mapped = plan.read.raw["runs"].filter(pl.col("run_uuid").is_in(plan.run_ids)).select(
        id=node(), status=pl.col("status").replace_strict(WANDB_STATUS, default="crashed"),
        project=pl.col("experiment_id").replace_strict(experiments, default=None),
        group=pl.col("run_uuid").replace_strict({r: wids[t] for r, t in top.items()}, default=None),
        job_type=pl.col("run_uuid").replace_strict(job_types(plan, tool), default=None),
        wid=pl.col("run_uuid").replace_strict(wids))
    columns = ("id", "project", "name", "status", "started_at", "ended_at", "user", "git_commit", "git_remote",
               "group", "job_type")
    expected_runs = g["runs"].filter(pl.col("id").is_in(planned)).drop("project", "status").join(
        mapped, on="id", how="left").with_columns(
        name=pl.coalesce(pl.col("name").replace("", None), "wid"), user=pl.col("user").replace("", None),
        started_at=pl.col("started_at").dt.truncate("1ms"), ended_at=pl.col("ended_at").dt.truncate("1ms"),
        git_commit=pl.col("git_commit").str.to_lowercase())
    env = pl.col("environment").fill_null("{}")
    actual_runs = theirs(target["runs"], "id").drop("started_at", "ended_at").join(
        own_value("started_at").rename({"value": "started_at"}), on="id", how="left").join(
        own_value("ended_at").rename({"value": "ended_at"}), on="id", how="left").with_columns(
        pl.col("started_at", "ended_at").str.to_datetime(time_zone="UTC", time_unit="us"),
        group=env.str.json_path_match("$.group"), job_type=env.str.json_path_match("$.job_type"))
    out["run"] = _compare(expected_runs.select(columns), actual_runs.select(columns))
    # a folder written twice reads back as one run resumed: its segments say so
    runs_n = theirs(target["nodes"].filter(pl.col("kind") == "run"), "id")
    twice = runs_n.filter(pl.col("attrs").str.json_path_match("$.resumed") == "true")["id"].to_list()
    out["run"]["unexpected"] += len(twice)
    out["run"]["examples"] += [{"unexpected": {"run folder written twice": r}} for r in twice[:EXAMPLES]]

    out["param"] = _compare(
        plan.frame("params").filter(~reserved_param(pl.col("key"))).select(run_id=node(), key="key", value="value"),
        params.filter(~reserved_param(pl.col("key"))).select("run_id", "key", "value"))

    points = history(plan.frame("metrics")).filter(pl.col("fate").is_in(WRITTEN))
    metrics_t = target.get("metrics", pl.DataFrame(schema={"run_id": pl.String, "key": pl.String, "step": pl.Int64,
                                                           "timestamp": pl.Datetime("us", "UTC"), "value": pl.Float64}))
    out["metric_point"] = _compare(
        points.select(run_id=node(), key="key", step="step",
                      timestamp=pl.from_epoch("row_timestamp", time_unit="ms").dt.replace_time_zone("UTC")
                      .cast(pl.Datetime("us", "UTC")), value="value"),
        theirs(metrics_t, "run_id").select("run_id", "key", "step", "timestamp", "value"))

    # tags: W&B tags, config braid.tags.<key> and the notes, against the source's own tags
    tags = tag_fates(source_tags(plan, tool)).filter(pl.col("to").is_in(["label", "config", "notes"]))
    tags_t = target.get("tags", pl.DataFrame(schema={"node_id": pl.String, "key": pl.String, "value": pl.String}))
    prefix = f"{CONFIG}.tags."
    out["tag"] = _compare(
        tags.select(node_id=node(), key="key",
                    value=pl.when(pl.col("to") == "label").then(pl.lit("")).otherwise("value")),
        pl.concat([
            theirs(tags_t, "node_id").select("node_id", "key", "value"),
            own.filter(pl.col("key").str.starts_with(prefix)).select(
                node_id="run_id", key=pl.col("key").str.strip_prefix(prefix), value="value"),
            theirs(target["runs"], "id").select(node_id="id", key=pl.lit(NOTE),
                                                value=env.str.json_path_match("$.notes")).drop_nulls()]))

    by_wid = {w: f"{src}:run/{r}" for r, w in wids.items()}
    out["parent_link"] = _compare(
        pl.DataFrame([(f"{src}:run/{p}", f"{src}:run/{c}") for c, p in parent.items()],
                     schema={"src": pl.String, "dst": pl.String}, orient="row"),
        own_value("parent_id").select(src=pl.col("value").replace_strict(by_wid, default=pl.col("value")), dst="id"))

    def dataset(d: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in d.items() if k != "run_uuid" and v is not None}, sort_keys=True)

    schema = {"run": pl.String, "dataset": pl.String}
    expected_inputs = [(f"{src}:run/{d['run_uuid']}", dataset(d))
                       for d in plan.frame("dataset_inputs").iter_rows(named=True)]
    actual_inputs = [(r, dataset(d)) for r, text in own_value("datasets").iter_rows() for d in json.loads(text)]
    out["dataset_input"] = _compare(pl.DataFrame(expected_inputs, schema=schema, orient="row"),
                                    pl.DataFrame(actual_inputs, schema=schema, orient="row"))
    logged = logged_artifacts(target, to_source, src)
    out["artifact"] = _compare(planned_files(plan, tool, idmap), logged_files(target, logged))
    if tool == "mlflow":
        out["logged_model"] = _compare(planned_models(plan), logged.filter(pl.col("type") == MODEL_TYPE).select(
            "owner", "name", "run", "metadata").sort(pl.all()))
        if project is not None:
            out["model_version"] = _compare(planned_links(plan), registry_links(target, logged))
    return out


FILE_SCHEMA = {"run_id": pl.String, "path": pl.String, "md5": pl.String}


def model_node(source: str, model_id: str | pl.Expr) -> str | pl.Expr:
    """The owner name a logged model's files and link are compared under."""
    return pl.lit(f"{source}:logged_model/") + model_id if isinstance(model_id, pl.Expr) \
        else f"{source}:logged_model/{model_id}"


def planned_models(plan: Plan) -> pl.DataFrame:
    """(model, artifact name, source run node, metadata as sorted JSON) of the planned logged models."""
    src = plan.source
    rows = [(model_node(src, m["model_id"]), wandb_name(m["name"]), f"{src}:run/{m['source_run_id']}",
             json.dumps(model_metadata(plan, m), sort_keys=True)) for m in plan.logged_models().iter_rows(named=True)]
    return pl.DataFrame(rows, schema={"owner": pl.String, "name": pl.String, "run": pl.String, "metadata": pl.String},
                        orient="row").sort(pl.all())


def planned_links(plan: Plan) -> pl.DataFrame:
    """(collection, model, aliases) of the versions a server target links."""
    versions = version_fates(plan, server=True).filter(pl.col("case") == "link")
    rows = [(wandb_name(v["name"]), model_node(plan.source, v["model_id"]),
             ",".join(sorted([*v["aliases"], *([v["stage"]] if v["stage"] else [])])))
            for v in versions.iter_rows(named=True)]
    return pl.DataFrame(rows, schema={"name": pl.String, "model": pl.String, "aliases": pl.String},
                        orient="row").sort(pl.all())


def logged_artifacts(target: dict[str, pl.DataFrame], to_source: dict[str, str], source: str) -> pl.DataFrame:
    """The artifacts each migrated run logged, read back (the run's `output` edges), named by the
    owner they hold the files of: the run (its own artifact, `artifact_name`), or a logged model
    of `source` (a model artifact, by the source model id in its metadata); others are dropped."""
    edges = target.get("edges", pl.DataFrame(schema={"src": pl.String, "dst": pl.String, "kind": pl.String}))
    meta = pl.col("attrs").str.json_path_match("$.metadata")
    nodes = target["nodes"].select(
        artifact="id", name="name", type=pl.col("attrs").str.json_path_match("$.type"),
        metadata=meta, from_source=meta.str.json_path_match(f"$.{CONFIG}.source"),
        model_id=meta.str.json_path_match(f"$.{CONFIG}.source_id"))
    logged = edges.filter((pl.col("kind") == "output") & pl.col("src").is_in(list(to_source))).select(
        run=pl.col("src").replace_strict(to_source), artifact="dst",
        own=pl.lit(ARTIFACT_PREFIX) + pl.col("src").str.split("/").list.last()).join(nodes, on="artifact")
    owner = (pl.when((pl.col("type") == ARTIFACT_TYPE) & (pl.col("name") == pl.col("own"))).then("run")
             .when((pl.col("type") == MODEL_TYPE) & (pl.col("from_source") == source))
             .then(model_node(source, pl.col("model_id"))))
    return logged.with_columns(owner=owner, metadata=pl.col("metadata").map_elements(
        lambda text: json.dumps(json.loads(text), sort_keys=True), return_dtype=pl.String)).drop_nulls("owner")


def planned_files(plan: Plan, tool: str, idmap: IdMap) -> pl.DataFrame:
    """(run node, path, md5) of the planned runs' files as the source recorded them (MLflow:
    braid's listing of a local artifact root, so a remote root's files read back as unexpected;
    DVC: the md5 in dvc.lock / .dvc), but those the copy refused (the id map's tally)."""
    src = plan.source
    if tool == "mlflow":
        files = plan.read.raw["artifacts"].filter((pl.col("owner_kind") == "run") & pl.col("owner").is_in(plan.run_ids))
        files = files.select(owner="owner", path="path", md5="md5")
    else:
        g = plan.read.graph
        nodes = g["nodes"].select(file="id", md5=pl.col("digest").str.extract(r"^md5:([0-9a-f]{32})$", 1), path=_path())
        files = output_files(g, [f"{src}:run/{r}" for r in plan.run_ids]).join(nodes, on="file").select(
            owner=pl.col("run").str.strip_prefix(f"{src}:run/"), path="path", md5="md5")
    _, _, refused = copied(plan, idmap)
    refused_files = pl.DataFrame(list(refused), schema={"owner": pl.String, "path": pl.String}, orient="row")
    files = files.join(refused_files, on=["owner", "path"], how="anti")
    if tool == "mlflow":  # and the files of the logged models that travel with their runs
        models = plan.logged_models()["model_id"]
        model_files = plan.read.raw["artifacts"].filter(
            (pl.col("owner_kind") == "model") & pl.col("owner").is_in(models.implode()))
        model_files = model_files.join(refused_files, on=["owner", "path"], how="anti")
    else:
        model_files = files.clear()
    return pl.concat([
        files.select(run_id=pl.lit(f"{src}:run/") + pl.col("owner"), path="path", md5="md5"),
        model_files.select(run_id=model_node(src, pl.col("owner")), path="path", md5="md5")]).unique().sort(pl.all())


def logged_files(target: dict[str, pl.DataFrame], logged: pl.DataFrame) -> pl.DataFrame:
    """(owner, path, md5) of the files in the artifacts the migrated runs logged (`logged_artifacts`),
    as braid's W&B reader reads the manifests: each artifact's files (`part_of`)."""
    edges = target.get("edges", pl.DataFrame(schema={"src": pl.String, "dst": pl.String, "kind": pl.String}))
    members = edges.filter(pl.col("kind") == "part_of").select(file="src", artifact="dst")
    nodes = target["nodes"].select(
        file="id", md5=pl.col("digest").str.extract(r"^md5:([0-9a-f]{32})$", 1),
        path=pl.col("attrs").str.json_path_match("$.path"))
    files = logged.select("owner", "artifact").join(members, on="artifact").join(nodes, on="file")
    return files.select(run_id="owner", path="path", md5="md5").cast(FILE_SCHEMA)


def registry_links(target: dict[str, pl.DataFrame], logged: pl.DataFrame) -> pl.DataFrame:
    """(collection, model, aliases) of the registry links of the migrated models, read back: the
    reader's registry rows, by the model artifact they link; `latest` is W&B's own alias."""
    schema = {"name": pl.String, "model": pl.String, "aliases": pl.String}
    if "registry" not in target:
        return pl.DataFrame(schema=schema)
    owners = logged.select(model_id="artifact", model="owner")
    return target["registry"].join(owners, on="model_id").select(
        "name", "model", aliases=pl.col("aliases").list.eval(pl.element().filter(pl.element() != LATEST))
        .list.sort().list.join(",")).sort(pl.all())
