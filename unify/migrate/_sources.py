"""W&B and DVC as migration sources: braid's normalised tables, shaped as an MLflow store.

A W&B or DVC source is read with its own braid connector; its normalised tables (runs, params,
metrics, tags, nodes, edges, registry) are turned into the MLflow-shaped frames the plan and the
MLflow writer already work from (`RawStore`), following the mappings declared here as data
(`SOURCE_FIELDS`, `STATUS`). Everything downstream is shared with MLflow -> MLflow: the plan, the
writer, the id map and the long-value handling. The report is counted from the normalised tables,
and the verification compares the target, read back with braid's MLflow connector, with the
source's normalised tables mapped through the same declarations.

Run ids: a run `<source>:run/<native id>` (W&B `<entity>/<project>/<id>`, DVC `<commit>/<stage>`
or `exp/<commit>`) travels as the tag `braid.source_id = <native id>`; the experiment is the W&B
project or the DVC repository (the runs table's `project`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import polars as pl
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import _validate_metric_name, _validate_param_name, _validate_tag_name

from braid.connectors.mlflow._normalise import GIT_BRANCH, GIT_COMMIT, GIT_REMOTE, PARENT, SYSTEM_TAGS, USER
from braid.connectors.mlflow._raw import RawStore
from braid.unify.source import SourceSpec, no_progress

from ._cache_files import output_files
from ._plan import MAX_PARAM_LENGTH, MAX_TAG_LENGTH, PARAM_TOO_LONG, PARENT_NOT_MIGRATED, TAG_TOO_LONG, How, Plan, SourceRead
from ._report import NEW_ID, KindReport, Report, _align, _compare, lost_values, run_map, with_full_values

# where a run's original status travels when MLflow has no status of the same meaning
SOURCE_STATUS_TAG = "braid.source_status"
# MLflow's dataset digest column holds 36 characters
MAX_DIGEST_LENGTH = 36

# tool -> the tool's run status -> MLflow's; statuses not listed become FINISHED (reported)
STATUS: dict[str, dict[str, str]] = {
    "wandb": {"finished": "FINISHED", "failed": "FAILED", "crashed": "FAILED", "killed": "KILLED",
              "running": "RUNNING"},
    "dvc": {"completed": "FINISHED", "cached": "FINISHED", "uncommitted": "FINISHED"},
}
# statuses that map one to one: the others are reported as transformed, the original kept as a tag
EXACT_STATUS = {"finished", "failed", "killed", "running", "completed"}

_COMMON: dict[str, dict[str, tuple[How, str]]] = {
    "run": {
        "name": ("carried", ""), "start_time": ("transformed", "to the millisecond (MLflow's resolution)"),
        "end_time": ("transformed", "to the millisecond; a run without an end keeps none"),
        "status": ("transformed", "mapped to MLflow's statuses (STATUS); a status without an exact "
                                  "match keeps the original in tag braid.source_status"),
        "user": ("carried", "through the mlflow.user tag"),
        "git_commit": ("carried", "through the mlflow.source.git.commit tag (branch and remote too)"),
        "id": ("transformed", "the target assigns its own run id; the source id travels as tag braid.source_id"),
        "project": ("transformed", "the run goes into the MLflow experiment its project or repository became"),
        "duration": ("carried", "as the span from its start to its end"),
        "host": ("not_carried", "MLflow runs have no host field"),
        "environment": ("not_carried", "MLflow runs have no field for the tool's environment record"),
        "updated_at": ("not_carried", "MLflow runs have no field for the time the tool last changed the run"),
        "attrs": ("not_carried", "the tool's other run fields (W&B group, job type, notes, summary, exit code, "
                                 "runtime; DVC command, stage, experiment ref...) have no MLflow run field"),
    },
    "param": {"value": ("carried", "as the source's normalised table holds it (non-strings as JSON text)")},
    "metric_point": {"value": ("transformed", "timestamps to the millisecond; original steps and values "
                                              "(NaN and ±inf included) as they are")},
    "parent_link": {"parent": ("transformed", "mlflow.parentRunId names the parent's id in the target")},
    "dataset_input": {"dataset": ("carried", "a dataset the run read becomes an MLflow dataset input: name, "
                                             "digest (the full digest, id and uri in the source JSON)")},
    "dataset_output": {"dataset": ("not_carried", "MLflow records no datasets a run wrote (outputs are not "
                                                  "written as tags either); their files travel as the run's "
                                                  "artifacts")},
    "other_input": {"file": ("not_carried", "a model or file the run read: MLflow dataset inputs hold datasets only")},
    "other_output": {"file": ("not_carried", "a model or file the run wrote: an MLflow run records no outputs but "
                                             "its files, which travel (artifact)")},
    "unlinked_file": {"file": ("not_carried", "a dataset, model or file no migrated run read or wrote (e.g. a "
                                              "DVC-tracked file no stage uses, and the files inside it): MLflow keeps "
                                              "them only as a run's inputs and files")},
    "artifact": {"bytes": ("carried", "each file the run wrote (a DVC out, a W&B artifact's files, datasets "
                                      "included) is copied into the target run from a place that holds the "
                                      "recorded bytes (checked by md5), under its DVC path or <artifact>/<path>")},
    "model_version": {"version": ("not_carried", "registry entries of this tool are not migrated by this "
                                                 "version of braid migrate")},
    # column views, not entities: a dataset, model or file node a migrated run read or wrote, and
    # the edge that says so (their values not carried are counted under `<view>_detail`)
    "file": {
        "id": ("carried", "a dataset input's source JSON names it (source_id); a file travels at its path"),
        "name": ("carried", "as a dataset input's name; a file keeps its path"),
        "version": ("carried", "within its id"),
        "digest": ("carried", "as a dataset input's digest; a file's bytes are checked against it"),
        "size": ("carried", "a file's bytes (a dataset input records no size)"),
        "uri": ("carried", "in a dataset input's source JSON; a file's bytes are read from it"),
        "created_at": ("not_carried", "MLflow records no time for a dataset input or a file"),
        "updated_at": ("not_carried", "MLflow records no time for a dataset input or a file"),
        "status": ("not_carried", "MLflow dataset inputs and files have no status"),
        "user": ("not_carried", "MLflow dataset inputs and files have no user"),
        "attrs": ("not_carried", "the tool's other fields of a dataset, model or file (W&B artifact type, aliases, "
                                 "metadata, manifest; DVC out fields) have no MLflow field (a file's path and md5 "
                                 "travel with its bytes)"),
    },
    "edge": {"attrs": ("not_carried", "the context the tool gave a run's input, output or parent: MLflow records "
                                      "none")},
}
VIEWS = ("file", "edge")
# Where the report accounts for each normalised table of a W&B or DVC source (unify/schema.py
# TABLES; `nodes` and `edges` per kind, as "edges/input"): `SOURCE_KINDS` names the report kinds
# whose counts hold every row, each row once; the rows of a `SOURCE_PART_OF` table are rows of
# another table seen again, or travel with them, as the text says.
SOURCE_KINDS: dict[str, tuple[str, ...]] = {
    "runs": ("run",), "params": ("param",), "metrics": ("metric_point",), "tags": ("tag",),
    "registry": ("model_version",), "edges/parent_of": ("parent_link",),
    "edges/input": ("dataset_input", "other_input"), "edges/output": ("dataset_output", "other_output"),
}
LINKED = ("the edges that link it to the runs (an input or an output), or to the one it is part of; one no "
          "migrated run read or wrote is counted under unlinked_file")
SOURCE_PART_OF: dict[str, str] = {
    "nodes/run": "the run's row of the runs table",
    "nodes/model_version": "the registry entry's row of the registry table",
    "nodes/code": "a commit a run names (runs.git_commit)",
    "edges/code": "a run's commit (runs.git_commit)",
    "edges/registered_as": "a registry entry's model (registry.model_id)",
    "nodes/dataset": LINKED,
    "nodes/model": LINKED,
    "nodes/artifact": LINKED,
    "edges/part_of": "a file inside a directory or a multi-file artifact: it travels as one of its run's files "
                     "(artifact) when the run wrote the container",
    "edges/same_as": "identity resolution's links between sources, made after the connectors: a source has none",
}
# each normalised column -> the field (of the kind or view named first) that says what happens to
# it; None for a column that names the row or its owner, or that another table holds
_NODE = ("id", "kind", "tool", "source")
SOURCE_COLUMNS: dict[str, tuple[str, dict[str, str | None]]] = {
    "runs": ("run", {"id": "id", "tool": None, "source": None, "project": "project", "name": "name",
                     "status": "status", "started_at": "start_time", "ended_at": "end_time", "duration": "duration",
                     "user": "user", "git_commit": "git_commit", "git_branch": "git_commit",
                     "git_remote": "git_commit", "host": "host", "environment": "environment"}),
    "params": ("param", {"run_id": None, "key": None, "value": "value", "source": None}),
    "metrics": ("metric_point", {"run_id": None, "key": None, "step": "value", "timestamp": "value",
                                 "value": "value", "source": None}),
    "tags": ("tag", {"node_id": None, "key": None, "value": "value", "source": None}),
    # a registry entry is not carried as a whole (counted per row)
    "registry": ("model_version", dict.fromkeys(("model_version_id", "name", "version", "aliases", "stage",
                                                 "model_id", "run_id", "events", "source"))),
    # a run node repeats its runs row (its version is the commit, its uri where braid read it)
    "nodes/run": ("run", {**dict.fromkeys((*_NODE, "name", "version", "digest", "size", "uri", "created_at",
                                           "status", "user")), "updated_at": "updated_at", "attrs": "attrs"}),
    "nodes/file": ("file", {**dict.fromkeys(("kind", "tool", "source")),
                            **{c: c for c in ("id", "name", "version", "digest", "size", "uri", "created_at",
                                              "updated_at", "status", "user", "attrs")}}),
    "nodes/code": ("run", dict.fromkeys((*_NODE, "name", "version", "digest", "size", "uri", "created_at",
                                         "updated_at", "status", "user", "attrs"))),
    "nodes/model_version": ("model_version", dict.fromkeys((*_NODE, "name", "version", "digest", "size", "uri",
                                                            "created_at", "updated_at", "status", "user", "attrs"))),
    # an edge is dated by the connector from its run or commit
    "edges": ("edge", {**dict.fromkeys(("src", "dst", "kind", "source", "created_at")), "attrs": "attrs"}),
}
FILE_KINDS = ("dataset", "model", "artifact")
# tool -> entity kind -> field -> (how, why): what happens to each field of the normalised tables
SOURCE_FIELDS: dict[str, dict[str, dict[str, tuple[How, str]]]] = {
    "wandb": {
        "experiment": {"project": ("transformed", "a W&B project becomes the MLflow experiment of the same name")},
        **_COMMON,
        "tag": {"value": ("carried", "a W&B tag becomes an MLflow tag of that name with an empty value")},
    },
    "dvc": {
        "experiment": {"project": ("transformed", "a DVC repository becomes the MLflow experiment of its name")},
        **_COMMON,
        "tag": {"value": ("carried", "")},
        "parent_link": {"parent": ("transformed", "an experiment is the parent run of its stage executions "
                                                  "(mlflow.parentRunId)")},
    },
}
INVALID_KEY = "not a name MLflow accepts (characters, length or a path-like name)"
NO_STEP = "no step in the source: logged at step 0"
NO_TIME = "no timestamp in the source: logged at the run's start"
# MLflow's SQL stores keep ±inf as the largest float (sqlalchemy_store.sanitize_metric_value)
FLOAT_MAX = 1.7976931348623157e308
INF_CLAMPED = f"±inf: MLflow's SQL store keeps it as ±{FLOAT_MAX!r}, the largest float (NaN is kept)"
DIGEST_SHORTENED = f"digest longer than MLflow's {MAX_DIGEST_LENGTH} characters: the hash without its prefix"


def read_tool(spec: SourceSpec) -> SourceRead:
    """Read a W&B or DVC source with braid's connector, shaped as an MLflow store."""
    if spec.tool == "wandb":
        from braid.connectors.wandb import read_source
    elif spec.tool == "dvc":
        from braid.connectors.dvc import read_source
    else:  # pragma: no cover - migrate() checks the direction first
        raise ValueError(spec.tool)
    batch = read_source(spec, previous=None, progress=no_progress)
    return SourceRead(to_raw(spec, batch.tables), batch.tables)


def _valid(check: Any, keys: list[str]) -> set[str]:
    ok = set()
    for key in keys:
        try:
            check(key)
            ok.add(key)
        except MlflowException:
            pass
    return ok


def mlflow_digest(digest: str | None) -> str:
    """The digest as MLflow's 36-character column can hold it."""
    digest = digest or ""
    return digest if len(digest) <= MAX_DIGEST_LENGTH else digest.split(":", 1)[-1][:MAX_DIGEST_LENGTH]


def _ms(column: str) -> pl.Expr:
    return pl.col(column).dt.epoch("ms")


def to_raw(spec: SourceSpec, g: dict[str, pl.DataFrame]) -> RawStore:
    """The normalised tables as MLflow store frames (run ids: the native id after `<source>:run/`)."""
    prefix, statuses = f"{spec.name}:run/", STATUS[spec.tool]
    native = pl.col("id").str.strip_prefix(prefix)
    runs = g["runs"].with_columns(project=pl.col("project").fill_null(spec.name))
    run_ids = runs["id"].to_list()
    raw = RawStore("braid-normalised")
    raw["experiments"] = runs.select(experiment_id="project", name="project").unique(maintain_order=True) \
        .with_columns(lifecycle_stage=pl.lit("active"))
    raw["runs"] = runs.select(
        run_uuid=native, name="name", experiment_id="project", user_id="user",
        status=pl.col("status").replace_strict(statuses, default="FINISHED"),
        start_time=_ms("started_at"), end_time=_ms("ended_at"), lifecycle_stage=pl.lit("active"))
    params = g["params"].filter(pl.col("run_id").is_in(run_ids))
    raw["params"] = params.filter(pl.col("key").is_in(_valid(_validate_param_name, params["key"].unique().to_list()))) \
        .select(run_uuid=pl.col("run_id").str.strip_prefix(prefix), key="key", value="value")
    tags = g["tags"].filter(pl.col("node_id").is_in(run_ids) & ~pl.col("key").is_in(SYSTEM_TAGS))
    tags = tags.filter(pl.col("key").is_in(_valid(_validate_tag_name, tags["key"].unique().to_list())))
    parents = g["edges"].filter((pl.col("kind") == "parent_of") & pl.col("src").is_in(run_ids)
                                & pl.col("dst").is_in(run_ids))
    system = [
        runs.select(run_uuid=native, key=pl.lit(tag), value=pl.col(column))
        for tag, column in ((GIT_COMMIT, "git_commit"), (GIT_BRANCH, "git_branch"), (GIT_REMOTE, "git_remote"),
                            (USER, "user"))
    ] + [
        runs.filter(~pl.col("status").is_in(EXACT_STATUS)).select(
            run_uuid=native, key=pl.lit(SOURCE_STATUS_TAG), value="status"),
        parents.select(run_uuid=pl.col("dst").str.strip_prefix(prefix), key=pl.lit(PARENT),
                       value=pl.col("src").str.strip_prefix(prefix)).unique("run_uuid", keep="first"),
        tags.select(run_uuid=pl.col("node_id").str.strip_prefix(prefix), key="key", value=pl.col("value").fill_null("")),
    ]
    raw["tags"] = pl.concat(system, how="vertical_relaxed").filter(pl.col("value").is_not_null())
    metrics = g["metrics"].filter(pl.col("run_id").is_in(run_ids))
    metrics = metrics.filter(pl.col("key").is_in(_valid(_validate_metric_name, metrics["key"].unique().to_list())))
    starts = runs.select(run_id="id", _start=_ms("started_at"))
    raw["metrics"] = metrics.join(starts, on="run_id", how="left").select(
        run_uuid=pl.col("run_id").str.strip_prefix(prefix), key="key", value="value",
        timestamp=pl.coalesce(_ms("timestamp"), "_start", pl.lit(0)), step=pl.col("step").fill_null(0))
    inputs = _inputs(g, run_ids)
    raw["dataset_inputs"] = inputs.select(
        run_uuid=pl.col("dst").str.strip_prefix(prefix), name="name",
        digest=pl.col("digest").map_elements(mlflow_digest, return_dtype=pl.String),
        source_type=pl.lit(spec.tool),
        source=pl.struct(uri="uri", digest="digest", source_id="src").struct.json_encode(),
        tags=pl.lit("{}")).unique(["run_uuid", "name", "digest"], keep="first", maintain_order=True)
    return raw


def _inputs(g: dict[str, pl.DataFrame], run_ids: list[str]) -> pl.DataFrame:
    """The dataset inputs of the runs: (src dataset node, dst run, name, digest, uri)."""
    nodes = g["nodes"].filter(pl.col("kind") == "dataset").select(
        src="id", name=pl.coalesce("name", "id"), digest=pl.coalesce("digest", "version", pl.lit("")), uri="uri")
    edges = g["edges"].filter((pl.col("kind") == "input") & pl.col("dst").is_in(run_ids)).select("src", "dst")
    return edges.join(nodes, on="src", how="inner")


# -- the report -------------------------------------------------------------------------------

def expected_source_report(plan: Plan, tool: str, *, dry_run: bool) -> Report:
    """The report of a W&B or DVC migration, counted from the source's normalised tables."""
    fields, g, src = SOURCE_FIELDS[tool], plan.read.graph, plan.source
    planned = [f"{src}:run/{r}" for r in plan.run_ids]
    kinds = {kind: KindReport() for kind in fields if kind not in VIEWS}
    kinds["experiment"].transformed[fields["experiment"]["project"][1]] = len(plan.experiment_ids)
    runs = g["runs"].filter(pl.col("id").is_in(planned))
    kinds["run"].transformed[NEW_ID] = runs.height
    for status, n in Counter(runs["status"].to_list()).items():
        if status not in EXACT_STATUS:
            kinds["run"].transformed[f"status {status!r} -> {STATUS[tool].get(status, 'FINISHED')}, the original "
                                     f"in tag {SOURCE_STATUS_TAG}"] += n

    def split(kind: str, frame: pl.DataFrame, written: pl.DataFrame, limit: int | None, long_why: str) -> None:
        report = kinds[kind]
        if frame.height - written.height:
            report.not_carried[INVALID_KEY] += frame.height - written.height
        long = 0 if limit is None else int((written["value"].str.len_chars() > limit).sum())
        if long:
            report.transformed[long_why] += long
        how, why = fields[kind]["value"]
        if how == "transformed":
            report.transformed[why] += written.height - long
        else:
            report.carried += written.height - long

    split("param", g["params"].filter(pl.col("run_id").is_in(planned)), plan.frame("params"), MAX_PARAM_LENGTH,
          PARAM_TOO_LONG)
    metrics = g["metrics"].filter(pl.col("run_id").is_in(planned))
    split("metric_point", metrics, plan.frame("metrics"), None, "")
    infinite = int(plan.frame("metrics")["value"].is_infinite().sum())
    if infinite:  # counted once, under the transformation that changes them most
        kinds["metric_point"].transformed[fields["metric_point"]["value"][1]] -= infinite
    for why, n in ((NO_STEP, int(metrics["step"].is_null().sum())), (NO_TIME, int(metrics["timestamp"].is_null().sum())),
                   (INF_CLAMPED, infinite)):
        if n:
            kinds["metric_point"].transformed[why] = n
    source_tags = g["tags"].filter(pl.col("node_id").is_in(planned) & ~pl.col("key").is_in(SYSTEM_TAGS))
    own = plan.frame("tags").filter(~pl.col("key").is_in([*SYSTEM_TAGS, SOURCE_STATUS_TAG]))
    split("tag", source_tags, own, MAX_TAG_LENGTH, TAG_TOO_LONG)
    edges = g["edges"]
    links = edges.filter((pl.col("kind") == "parent_of") & pl.col("dst").is_in(planned)
                         & pl.col("src").str.starts_with(f"{src}:run/"))
    linked = int(links["src"].is_in(planned).sum())
    if linked:
        kinds["parent_link"].transformed[fields["parent_link"]["parent"][1]] = linked
    if links.height - linked:
        kinds["parent_link"].not_carried[PARENT_NOT_MIGRATED] = links.height - linked
    kinds["dataset_input"].carried = plan.frame("dataset_inputs").height
    shortened = _inputs(g, planned).filter(pl.col("digest").str.len_chars() > MAX_DIGEST_LENGTH).height
    if shortened:
        kinds["dataset_input"].carried -= shortened
        kinds["dataset_input"].transformed[DIGEST_SHORTENED] = shortened
    kind_of = dict(g["nodes"].select("id", "kind").iter_rows())
    ins = edges.filter((pl.col("kind") == "input") & pl.col("dst").is_in(planned))
    outs = edges.filter((pl.col("kind") == "output") & pl.col("src").is_in(planned))
    other_in = sum(kind_of.get(s) != "dataset" for s in ins["src"].to_list())
    if other_in:
        kinds["other_input"].not_carried[fields["other_input"]["file"][1]] = other_in
    out_kinds = Counter(kind_of.get(d) for d in outs["dst"].to_list())
    if out_kinds["dataset"]:
        kinds["dataset_output"].not_carried[fields["dataset_output"]["dataset"][1]] = out_kinds["dataset"]
    if outs.height - out_kinds["dataset"]:
        kinds["other_output"].not_carried[fields["other_output"]["file"][1]] = outs.height - out_kinds["dataset"]
    # the files are counted as found at plan time; the copy's outcome replaces this count
    kinds["artifact"].carried = output_files(g, planned).height
    if g["registry"].height:
        kinds["model_version"].not_carried[fields["model_version"]["version"][1]] = g["registry"].height
    # a dataset, model or file no planned run read or wrote, nor one inside those
    unlinked = g["nodes"].filter(pl.col("kind").is_in(FILE_KINDS) & ~pl.col("id").is_in(_used(plan).implode())).height
    if unlinked:
        kinds["unlinked_file"].not_carried[fields["unlinked_file"]["file"][1]] = unlinked
    lost_values(kinds, SOURCE_FIELDS[tool], SOURCE_COLUMNS, lambda table: _travelling(plan, table))
    return Report(plan.source, plan.target, dry_run, kinds)


def _travelling(plan: Plan, table: str) -> pl.DataFrame:
    """The rows of a normalised table (a `SOURCE_COLUMNS` key) that travel with the planned runs:
    the runs, their nodes, the dataset, model and file nodes they read or wrote (and the files
    inside those), and their inputs, outputs and parent links."""
    g = plan.read.graph
    planned = [f"{plan.source}:run/{r}" for r in plan.run_ids]
    nodes, edges = g["nodes"], g["edges"]
    to_run = pl.col("kind").is_in(["input", "parent_of"]) & pl.col("dst").is_in(planned)
    from_run = (pl.col("kind") == "output") & pl.col("src").is_in(planned)
    if table == "runs":
        return g["runs"].filter(pl.col("id").is_in(planned))
    if table == "nodes/run":
        return nodes.filter((pl.col("kind") == "run") & pl.col("id").is_in(planned))
    if table == "edges":
        return edges.filter(to_run | from_run)
    if table == "nodes/file":
        return nodes.filter(pl.col("kind").is_in(FILE_KINDS) & pl.col("id").is_in(_used(plan).implode()))
    raise KeyError(f"no rule says which rows of {table} travel")


def _used(plan: Plan) -> pl.Series:
    """The dataset, model and file nodes the planned runs read or wrote, and those inside them."""
    planned = [f"{plan.source}:run/{r}" for r in plan.run_ids]
    edges = plan.read.graph["edges"]
    used = pl.concat([edges.filter((pl.col("kind") == "input") & pl.col("dst").is_in(planned))["src"],
                      edges.filter((pl.col("kind") == "output") & pl.col("src").is_in(planned))["dst"]]).unique()
    members = edges.filter(pl.col("kind") == "part_of")
    while True:  # a file inside a directory inside an output...
        inside = members.filter(pl.col("dst").is_in(used.implode()) & ~pl.col("src").is_in(used.implode()))["src"]
        if inside.is_empty():
            return used
        used = pl.concat([used, inside.unique()])


# -- verification: the source's normalised tables against the target read back ----------------

RUN_COLUMNS = ("id", "project", "name", "status", "started_at", "ended_at", "user", "git_commit", "git_branch",
               "git_remote")


def _clamp(frame: pl.DataFrame) -> pl.DataFrame:
    """±inf as MLflow's SQL stores keep it, on both sides of the comparison."""
    value = pl.col("value")
    return frame.with_columns(value=pl.when(value == float("inf")).then(FLOAT_MAX)
                              .when(value == float("-inf")).then(-FLOAT_MAX).otherwise(value))


def _to_ms(column: str) -> pl.Expr:
    return pl.col(column).dt.truncate("1ms")


def verify_source(plan: Plan, tool: str, target: SourceRead,
                  long_values: dict[tuple[str, str, str], str]) -> dict[str, dict[str, Any]]:
    """Compare the source's normalised tables (planned runs, mapped as declared) with the target's graph."""
    src, tgt, g, t = plan.source, plan.target, plan.read.graph, target.graph
    runs = run_map(target, src, tgt)
    planned = [f"{src}:run/{r}" for r in plan.run_ids]
    mine = list(runs.values())
    out: dict[str, dict[str, Any]] = {}

    def theirs(frame: pl.DataFrame, column: str) -> pl.DataFrame:
        return _align(frame, (column,), runs, src, tgt).filter(pl.col(column).is_in(mine))

    expected_runs = g["runs"].filter(pl.col("id").is_in(planned)).with_columns(
        project=pl.col("project").fill_null(src),
        status=pl.col("status").replace_strict(STATUS[tool], default="FINISHED"),
        started_at=_to_ms("started_at"), ended_at=_to_ms("ended_at"),
        user=pl.col("user").fill_null("unknown"), git_commit=pl.col("git_commit").str.to_lowercase())
    out["run"] = _compare(expected_runs.select(RUN_COLUMNS), theirs(t["runs"], "id").select(RUN_COLUMNS))

    def full(kind: str, frame: pl.DataFrame, id_col: str) -> pl.DataFrame:
        return with_full_values(frame, long_values, kind, id_col, src)

    carried_params = plan.frame("params")["key"].unique().to_list()
    out["param"] = _compare(
        g["params"].filter(pl.col("run_id").is_in(planned) & pl.col("key").is_in(carried_params))
        .select("run_id", "key", "value"),
        full("params", theirs(t["params"], "run_id"), "run_id"))
    carried_metrics = plan.frame("metrics")["key"].unique().to_list()
    starts = g["runs"].select(run_id="id", _start=_to_ms("started_at"))
    expected_metrics = g["metrics"].filter(pl.col("run_id").is_in(planned) & pl.col("key").is_in(carried_metrics)) \
        .join(starts, on="run_id", how="left").with_columns(
            timestamp=pl.coalesce(_to_ms("timestamp"), "_start"), step=pl.col("step").fill_null(0))
    out["metric_point"] = _compare(_clamp(expected_metrics.select("run_id", "key", "step", "timestamp", "value")),
                                   _clamp(theirs(t["metrics"], "run_id")))
    carried_tags = plan.frame("tags")["key"].unique().to_list()
    system = pl.col("key").str.starts_with("braid.") | pl.col("key").is_in(SYSTEM_TAGS)
    out["tag"] = _compare(
        g["tags"].filter(pl.col("node_id").is_in(planned) & pl.col("key").is_in(carried_tags) & ~system)
        .with_columns(value=pl.col("value").fill_null("")).select("node_id", "key", "value"),
        full("tags", theirs(t["tags"], "node_id").filter(~system), "node_id"))
    parent_t = _align(t["edges"], ("src", "dst"), runs, src, tgt).filter(
        (pl.col("kind") == "parent_of") & pl.col("dst").is_in(mine))
    out["parent_link"] = _compare(
        g["edges"].filter((pl.col("kind") == "parent_of") & pl.col("dst").is_in(planned) & pl.col("src").is_in(planned))
        .select("src", "dst"), parent_t)
    expected_inputs = _inputs(g, planned).select(
        run="dst", name="name", digest=pl.col("digest").map_elements(mlflow_digest, return_dtype=pl.String)
    ).unique(maintain_order=True)
    datasets_t = t["nodes"].filter(pl.col("kind") == "dataset").select(src="id", name="name", digest="version")
    inputs_t = theirs(t["edges"].filter(pl.col("kind") == "input"), "dst").join(datasets_t, on="src", how="inner") \
        .select(run="dst", name="name", digest="digest")
    out["dataset_input"] = _compare(expected_inputs, inputs_t)
    return out

