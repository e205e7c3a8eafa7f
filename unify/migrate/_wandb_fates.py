"""Where each source entity goes in W&B, as frames: each metric point's case in W&B history,
each tag's field, the run families and job types, the inputs another planned run wrote (uses of
its artifact), the runs' links to logged models and the metrics logged against them; and the
report a migration into W&B leads to, counted from the plan through `WANDB_FIELDS` (registry
versions by `_wandb_models.version_fates`) before anything is written (`expected_wandb_report`).
"""

from __future__ import annotations

from collections import Counter

import polars as pl

from braid.connectors.mlflow._normalise import PARENT, SYSTEM_TAGS

from ._cache_files import output_files
from ._plan import METRIC_MODEL_NOT_MIGRATED, METRIC_RUN_NOT_MIGRATED, MODEL_LINKS, Plan
from ._report import LIVE, KindReport, Report, _deleted_runs
from ._sources import FILE_KINDS, INVALID_KEY, NO_STEP, NO_TIME, SOURCE_STATUS_TAG, _used
from ._wandb_fields import (CONFIG, EXACT_STATUS, EXIT_CODES, MAX_TAG_LENGTH, RESERVED_METRIC_KEYS,
                            RESERVED_PARAM_KEYS, TAG_FIELDS, WANDB_FIELDS, WANDB_STATUS, project_name)
from ._wandb_models import LINKED_CASES, version_fates


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


USES_SCHEMA = {"consumer": pl.String, "node": pl.String, "kind": pl.String, "producer": pl.String}


def input_producers(plan: Plan, tool: str) -> pl.DataFrame:
    """The inputs of the planned runs that another planned run wrote (a DVC or W&B source's
    `input` edges from a node some planned run has an `output` edge to): the `consumer` run, the
    input `node` and its `kind`, and the `producer` run, whose run-files artifact the consumer
    uses on a server. Bytes several runs wrote (a stage run again at later commits with the same
    output) are taken from the producer of the consumer's own commit, else the earliest one.

    >>> g = {"edges": pl.DataFrame({"src": ["s:run/a", "s:run/b", "s:dataset/f"],
    ...                             "dst": ["s:dataset/f", "s:dataset/f", "s:run/c"],
    ...                             "kind": ["output", "output", "input"]}),
    ...      "nodes": pl.DataFrame({"id": ["s:dataset/f"], "kind": ["dataset"]}),
    ...      "runs": pl.DataFrame({"id": ["s:run/a", "s:run/b", "s:run/c"], "git_commit": ["x", "y", "y"],
    ...                            "started_at": [1, 2, 3]})}
    >>> plan = type("P", (), {"source": "s", "run_ids": ["a", "b", "c"], "read": type("R", (), {"graph": g})})
    >>> input_producers(plan, "dvc").rows()  # c reads what a and b wrote: b ran at c's commit
    [('c', 's:dataset/f', 'dataset', 'b')]
    """
    g = plan.read.graph if tool != "mlflow" else {}
    if "edges" not in g:
        return pl.DataFrame(schema=USES_SCHEMA)
    prefix = f"{plan.source}:run/"
    planned = [prefix + r for r in plan.run_ids]
    edges = g["edges"]
    ins = edges.filter((pl.col("kind") == "input") & pl.col("dst").is_in(planned)).select(node="src", consumer="dst")
    outs = edges.filter((pl.col("kind") == "output") & pl.col("src").is_in(planned)).select(node="dst",
                                                                                             producer="src")
    runs = g["runs"].select("id", "git_commit", "started_at")
    pairs = ins.join(outs, on="node").filter(pl.col("producer") != pl.col("consumer")) \
        .join(runs.select(consumer="id", commit="git_commit"), on="consumer", how="left") \
        .join(runs.select(producer="id", producer_commit="git_commit", started="started_at"), on="producer",
              how="left") \
        .with_columns(elsewhere=pl.col("producer_commit").ne_missing(pl.col("commit")))
    chosen = pairs.sort("consumer", "node", "elsewhere", "started", "producer", nulls_last=True) \
        .unique(["consumer", "node"], keep="first", maintain_order=True)
    kinds = g["nodes"].select(node="id", kind="kind")
    return chosen.join(kinds, on="node", how="left").select(
        consumer=pl.col("consumer").str.strip_prefix(prefix), node="node", kind="kind",
        producer=pl.col("producer").str.strip_prefix(prefix)).cast(USES_SCHEMA)


def model_link_cases(plan: Plan, kind: str, *, server: bool) -> pl.DataFrame:
    """A run's links to logged models of one kind (`Plan.model_links`: "model_input" or
    "model_output") with their `case` in WANDB_FIELDS[kind]: a link whose run or model stays
    behind is `outside` (the plan's `why`); a use of a model is `used` on a `server` and
    `offline` in a folder; an output is the model artifact `logged_by` its run, when the run is
    the one that logged the model, else `other_run`."""
    links = plan.model_links(kind)
    if kind == "model_input":
        travels = pl.lit("used" if server else "offline")
    else:
        logger = plan.read.raw["logged_models"].select("model_id", logger="source_run_id")
        links = links.join(logger, on="model_id", how="left", maintain_order="left")
        travels = pl.when(pl.col("logger") == pl.col("run_uuid")).then(pl.lit("logged_by")).otherwise(
            pl.lit("other_run"))
    return links.with_columns(case=pl.when(pl.col("why").is_not_null()).then(pl.lit("outside")).otherwise(travels))


def model_metric_cases(plan: Plan) -> pl.DataFrame:
    """The metrics logged against the source's live logged models, with their `case` in
    WANDB_FIELDS["model_metric"]: those that travel with their model and run (`Plan.model_metrics`)
    are `history` points, the rest `outside`, with `why` (as the MLflow target's report says)."""
    raw = plan.read.raw
    live = raw["logged_models"].filter(pl.col("lifecycle_stage").fill_null("active") != "deleted")["model_id"]
    models = plan.logged_models()["model_id"].implode()
    why = (pl.when(~pl.col("model_id").is_in(models)).then(pl.lit(METRIC_MODEL_NOT_MIGRATED))
           .when(~pl.col("run_id").is_in(plan.run_ids)).then(pl.lit(METRIC_RUN_NOT_MIGRATED)))
    return raw["logged_model_metrics"].filter(pl.col("model_id").is_in(live.implode())).with_columns(why=why) \
        .with_columns(case=pl.when(pl.col("why").is_null()).then(pl.lit("history")).otherwise(pl.lit("outside")))


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
    # an input another planned run wrote is a use of that run's artifact: made on a server only
    uses = input_producers(plan, tool)
    use_case = "used" if project is not None else "offline"
    used_datasets = uses.filter(pl.col("kind") == "dataset").height
    _count(kinds, "dataset_input", "dataset", plan.frame("dataset_inputs").height - used_datasets)
    _count(kinds, "dataset_input", use_case, used_datasets)
    if tool == "mlflow":
        _mlflow_only(plan, kinds, server=project is not None)
    else:
        _source_only(plan, tool, kinds, produced=uses.height - used_datasets)
        _count(kinds, "other_input", use_case, uses.height - used_datasets)
    return Report(plan.source, plan.target, dry_run, kinds)


def _mlflow_only(plan: Plan, kinds: dict[str, KindReport], *, server: bool) -> None:
    """What an MLflow store holds beyond runs: the files of the runs and of their logged models
    (those braid lists on a local root; a remote root's are counted as they are copied,
    `report_copies`), the logged models, the registry, by the case `version_fates` gives each
    version (linked on a `server`, in a folder only its model artifact), and the runs' links to
    logged models and the metrics logged against them (`model_link_cases`, `model_metric_cases`);
    and what stays behind: deleted models, models no run logged, their files and metrics, and the
    deleted runs' files, links and rows (`_left_behind`)."""
    raw = plan.read.raw
    planned = plan.logged_models()["model_id"]
    every = raw["logged_models"]
    models = every.filter(LIVE)
    runless = int(models["source_run_id"].is_null().sum())
    artifacts = raw["artifacts"]
    travelling = pl.col("owner").is_in(plan.run_ids) | pl.col("owner").is_in(planned.implode())
    files, rest = artifacts.filter(travelling), artifacts.filter(~travelling)
    model_metrics = raw["logged_model_metrics"]
    versions = version_fates(plan, server=server)
    travels = pl.col("case").is_in([*LINKED_CASES, "offline"])  # linked on a server, in a folder not
    linked = versions.filter(travels)
    names = raw["registered_models"]["name"]
    registered = names.is_in(linked["name"].implode()).sum()
    aliases = versions.select(travels=travels, n=pl.col("aliases").list.len())
    link = "link" if server else "offline"

    def described(table: str) -> int:
        return int((raw[table]["description"].fill_null("") != "").sum())

    for kind, case, n in (
            ("artifact", "bytes", files.filter(pl.col("owner_kind") == "run").height),
            ("artifact", "model_files", files.filter(pl.col("owner_kind") != "run").height),
            # files of deleted runs, and of models that stay behind, as the MLflow target's report says
            ("artifact", "deleted_run", rest.filter((pl.col("owner_kind") == "run")
                                                    & pl.col("owner").is_in(_deleted_runs(plan))).height),
            ("artifact", "model_left", rest.filter(pl.col("owner_kind") != "run").height),
            ("logged_model", "model", planned.len()),
            ("logged_model", "outside", models.height - planned.len() - runless),
            ("logged_model", "no_run", runless), ("logged_model", "deleted", every.height - models.height),
            ("model_metric", "deleted_model", model_metrics.filter(
                ~pl.col("model_id").is_in(models["model_id"].implode())).height),
            ("registered_model", link, registered), ("registered_model", "unlinked", names.len() - registered),
            ("alias", link, aliases.filter("travels")["n"].sum()),
            ("alias", "stage" if server else "offline", linked["stage"].is_not_null().sum()),
            ("alias", "unlinked", aliases.filter(~pl.col("travels"))["n"].sum()),
            ("registered_model", "tags", raw["registered_model_tags"].height),
            ("registered_model", "description", described("registered_models")),
            ("model_version", "tags", raw["model_version_tags"].height),
            ("model_version", "description", described("model_versions"))):
        _count(kinds, kind, case, int(n))
    for case, n in versions["case"].value_counts().iter_rows():
        _count(kinds, "model_version", case, n)
    for kind in ("model_output", "model_input"):
        cases = model_link_cases(plan, kind, server=server)
        _count_cases(kinds, kind, cases)
        # the plan names the links of the planned runs and of the models that travel: a deleted
        # run's others stay behind with it
        rest = raw[MODEL_LINKS[kind][0]].join(cases.select("run_uuid", "model_id").unique(),
                                             on=["run_uuid", "model_id"], how="anti", nulls_equal=True)
        _count(kinds, kind, "deleted_run", rest.filter(pl.col("run_uuid").is_in(_deleted_runs(plan))).height)
    _count_cases(kinds, "model_metric", model_metric_cases(plan))
    _left_behind(plan, kinds)


def _left_behind(plan: Plan, kinds: dict[str, KindReport]) -> None:
    """What an MLflow store holds that no planned run carries, as the MLflow target's report
    counts it: the experiments holding no planned run, deleted or without a live run, with their
    tags (an experiment whose runs are not selected is outside the report, like the runs), and
    the params, metric points, tags, parent links and dataset inputs of the deleted runs."""
    raw = plan.read.raw
    with_runs = raw["runs"].filter(LIVE)["experiment_id"].implode()
    rest = raw["experiments"].filter(~pl.col("experiment_id").is_in(plan.experiment_ids)).select(
        "experiment_id", case=pl.when(~LIVE).then(pl.lit("deleted"))
        .when(~pl.col("experiment_id").is_in(with_runs)).then(pl.lit("empty")))
    tags = raw["experiment_tags"].join(rest, on="experiment_id")
    for case, n in pl.concat([rest["case"], tags["case"]]).drop_nulls().value_counts().iter_rows():
        _count(kinds, "experiment", case, n)
    deleted = pl.col("run_uuid").is_in(_deleted_runs(plan))
    left = raw["tags"].filter(deleted)
    for kind, rows in (("param", raw["params"].filter(deleted)), ("metric_point", raw["metrics"].filter(deleted)),
                       ("tag", left.filter(pl.col("key") != PARENT)),
                       ("parent_link", left.filter(pl.col("key") == PARENT)),
                       ("dataset_input", raw["dataset_inputs"].filter(deleted))):
        _count(kinds, kind, "deleted_run", rows.height)


def _count_cases(kinds: dict[str, KindReport], kind: str, cases: pl.DataFrame) -> None:
    """Count the rows of a frame with `case` and `why` (null: the case's own text) under `kind`."""
    for case, why, n in cases.group_by("case", "why", maintain_order=True).len().iter_rows():
        _count(kinds, kind, case, n, why=why)


def _source_only(plan: Plan, tool: str, kinds: dict[str, KindReport], *, produced: int) -> None:
    """What a W&B or DVC source's tables hold that its MLflow shape (`_sources.to_raw`) or an
    offline W&B folder cannot: keys MLflow refuses, outputs, registry, host, the files no planned
    run read or wrote (nor one inside those), and the inputs other than datasets, but the
    `produced` ones another planned run wrote (uses of its artifact, counted by the caller)."""
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
    # a dataset, model or file no planned run read or wrote, nor one inside those
    unlinked = g["nodes"].filter(pl.col("kind").is_in(FILE_KINDS) & ~pl.col("id").is_in(_used(plan).implode()))
    for kind, case, n in (("other_input", "file", sum(kind_of.get(s) != "dataset" for s in ins) - produced),
                          ("dataset_output", "dataset", outs["dataset"]),
                          ("other_output", "file", outs.total() - outs["dataset"]),
                          ("unlinked_file", "file", unlinked.height),
                          ("artifact", "bytes", output_files(g, planned).height),
                          ("model_version", "source_registry", g["registry"].height if "registry" in g else 0)):
        _count(kinds, kind, case, n)

