"""The W&B target read back by braid's W&B reader (the folder, or the server through
`wandb.Api()`) and compared with the source through the declaration (`WANDB_FIELDS`): runs,
params, history, tags, parent links, dataset inputs, files, model artifacts (logged models and
MLflow 2 models) and the runs that produced them, and on a server registry links and the
artifacts runs used (run-files artifacts, and the model artifacts of the logged models they used).
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from ._cache_files import _path, output_files
from ._idmap import IdMap
from ._plan import Plan
from ._report import EXAMPLES, _compare
from ._wandb_fates import (families, history, input_producers, job_types, model_link_cases, reserved_param,
                            source_tags, tag_fates)
from ._wandb_fields import (ARTIFACT_PREFIX, ARTIFACT_TYPE, CONFIG, LATEST, MODEL_TYPE, NOTE, WANDB_STATUS, WRITTEN,
                            project_name, wandb_name, wandb_run_id)
from ._wandb_models import (LINKED_CASES, RUNS_SCHEME, link_groups, model_metadata, run_model_files, run_models,
                            version_fates)


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
        models = logged.filter(pl.col("type") == MODEL_TYPE).select("owner", "name", "run", "metadata").sort(pl.all())
        of_run = pl.col("owner").str.starts_with(f"{src}:{RUNS_SCHEME}")
        out["logged_model"] = _compare(planned_models(plan), models.filter(~of_run))
        out["run_model"] = _compare(planned_run_models(plan), models.filter(of_run))
        outputs = planned_outputs(plan)
        out["model_output"] = _compare(outputs, models.filter(~of_run).select("run", "owner").join(
            outputs.select("owner").unique(), on="owner", how="semi").sort(pl.all()))
        if project is not None:
            out["model_version"] = _compare(planned_links(plan), registry_links(target, logged))
            out["model_input"] = _compare(planned_model_uses(plan), used_models(target, to_source, logged))
    if project is not None:  # an offline folder cannot record what its runs used
        out["artifact_use"] = _compare(planned_uses(plan, tool), used_artifacts(target, to_source, logged))
    return out


FILE_SCHEMA = {"run_id": pl.String, "path": pl.String, "md5": pl.String}


def model_node(source: str, model_id: str | pl.Expr) -> str | pl.Expr:
    """The owner name a model artifact's files and link are compared under: a logged model's
    `<source>:logged_model/<id>`, an MLflow 2 model's `<source>:runs:/<run>/<path>`.

    >>> model_node("old", "m-1"), model_node("old", "runs:/r1/model")
    ('old:logged_model/m-1', 'old:runs:/r1/model')
    """
    if isinstance(model_id, pl.Expr):
        return pl.when(model_id.str.starts_with(RUNS_SCHEME)).then(pl.lit(f"{source}:") + model_id) \
            .otherwise(pl.lit(f"{source}:logged_model/") + model_id)
    return f"{source}:{model_id}" if model_id.startswith(RUNS_SCHEME) else f"{source}:logged_model/{model_id}"


def planned_models(plan: Plan) -> pl.DataFrame:
    """(model, artifact name, source run node, metadata as sorted JSON) of the planned logged models."""
    src = plan.source
    rows = [(model_node(src, m["model_id"]), wandb_name(m["name"]), f"{src}:run/{m['source_run_id']}",
             json.dumps(model_metadata(plan, m), sort_keys=True)) for m in plan.logged_models().iter_rows(named=True)]
    return pl.DataFrame(rows, schema={"owner": pl.String, "name": pl.String, "run": pl.String, "metadata": pl.String},
                        orient="row").sort(pl.all())


def planned_run_models(plan: Plan) -> pl.DataFrame:
    """(model, artifact name, run node, metadata as sorted JSON) of the planned runs' MLflow 2 models."""
    src = plan.source
    rows = [(model_node(src, m["key"]), m["name"], f"{src}:run/{m['run_uuid']}",
             json.dumps(m["metadata"], sort_keys=True)) for m in run_models(plan)]
    return pl.DataFrame(rows, schema={"owner": pl.String, "name": pl.String, "run": pl.String, "metadata": pl.String},
                        orient="row").sort(pl.all())


def planned_links(plan: Plan) -> pl.DataFrame:
    """(collection, model, aliases) of the links a server target makes: one per model of a
    registered model (`link_groups`), with the aliases and stages of all its versions."""
    links = link_groups(version_fates(plan, server=True).filter(pl.col("case").is_in(LINKED_CASES)))
    return links.select(name=pl.col("name").map_elements(wandb_name, return_dtype=pl.String),
                        model=model_node(plan.source, pl.col("key")),
                        aliases=pl.col("aliases").list.join(",")).sort(pl.all())


def planned_uses(plan: Plan, tool: str) -> pl.DataFrame:
    """(consumer run node, producer run node) of the uses a server target records (`input_producers`)."""
    prefix = pl.lit(f"{plan.source}:run/")
    return input_producers(plan, tool).select(consumer=prefix + pl.col("consumer"),
                                              producer=prefix + pl.col("producer")).unique().sort(pl.all())


def planned_outputs(plan: Plan) -> pl.DataFrame:
    """(run node, model node) of the model outputs a W&B target carries: each model artifact
    logged by the run that produced it (`model_link_cases`, case `logged_by`)."""
    src = plan.source
    return model_link_cases(plan, "model_output", server=False).filter(pl.col("case") == "logged_by").select(
        run=pl.lit(f"{src}:run/") + pl.col("run_uuid"), owner=model_node(src, pl.col("model_id"))).sort(pl.all())


def planned_model_uses(plan: Plan) -> pl.DataFrame:
    """(consumer run node, model node) of the model inputs a server target records as used
    artifacts (`model_link_cases`, case `used`)."""
    src = plan.source
    return model_link_cases(plan, "model_input", server=True).filter(pl.col("case") == "used").select(
        consumer=pl.lit(f"{src}:run/") + pl.col("run_uuid"), model=model_node(src, pl.col("model_id"))) \
        .unique().sort(pl.all())


def used_models(target: dict[str, pl.DataFrame], to_source: dict[str, str], logged: pl.DataFrame) -> pl.DataFrame:
    """(consumer run node, model node) of the model artifacts the migrated runs used, read back
    (their `input` edges from a node of artifact type `model`), the model named by the migrated
    model artifact it is (`logged_artifacts`), else by its own id, so a stray use reads as unexpected."""
    edges = target.get("edges", pl.DataFrame(schema={"src": pl.String, "dst": pl.String, "kind": pl.String}))
    models = target["nodes"].filter(pl.col("attrs").str.json_path_match("$.type") == MODEL_TYPE).select(artifact="id")
    used = edges.filter((pl.col("kind") == "input") & pl.col("dst").is_in(list(to_source))).select(
        consumer=pl.col("dst").replace_strict(to_source), artifact="src").join(models, on="artifact", how="semi")
    owners = logged.filter(pl.col("type") == MODEL_TYPE).select("artifact", "owner")
    return used.join(owners, on="artifact", how="left").select(
        "consumer", model=pl.coalesce("owner", "artifact")).unique().sort(pl.all())


def used_artifacts(target: dict[str, pl.DataFrame], to_source: dict[str, str], logged: pl.DataFrame) -> pl.DataFrame:
    """(consumer run node, producer run node) of the artifacts the migrated runs used, read back
    (their `input` edges), by the migrated run whose run-files artifact each is."""
    edges = target.get("edges", pl.DataFrame(schema={"src": pl.String, "dst": pl.String, "kind": pl.String}))
    producers = logged.filter(pl.col("owner") == pl.col("run")).select(artifact="artifact", producer="run")
    used = edges.filter((pl.col("kind") == "input") & pl.col("dst").is_in(list(to_source))).select(
        consumer=pl.col("dst").replace_strict(to_source), artifact="src")
    return used.join(producers, on="artifact").select("consumer", "producer").unique().sort(pl.all())


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
    """(owner node, path, md5) of the files of the planned runs and of their models as the source
    recorded them (MLflow: braid's listing of a local artifact root, so a remote root's files read
    back as unexpected; DVC: the md5 in dvc.lock / .dvc), but those the copy refused (the id map's
    tally of each owner)."""
    src = plan.source
    if tool == "mlflow":
        raw = plan.read.raw["artifacts"]
        models = plan.logged_models()["model_id"]
        files = pl.concat([
            raw.filter((pl.col("owner_kind") == "run") & pl.col("owner").is_in(plan.run_ids)
                       | (pl.col("owner_kind") == "model") & pl.col("owner").is_in(models.implode())),
            *(run_model_files(plan, m)[1] for m in run_models(plan))]).select("owner", "path", "md5")
    else:
        g = plan.read.graph
        nodes = g["nodes"].select(file="id", md5=pl.col("digest").str.extract(r"^md5:([0-9a-f]{32})$", 1), path=_path())
        files = output_files(g, [f"{src}:run/{r}" for r in plan.run_ids]).join(nodes, on="file").select(
            owner=pl.col("run").str.strip_prefix(f"{src}:run/"), path="path", md5="md5")
    refused = pl.DataFrame([(owner, path) for owner in files["owner"].unique().to_list()
                            for path, _ in (idmap.get("artifacts", owner) or {}).get("refused", [])],
                           schema={"owner": pl.String, "path": pl.String}, orient="row")
    files = files.join(refused, on=["owner", "path"], how="anti")
    owner = pl.when(pl.col("owner").is_in(plan.run_ids)).then(pl.lit(f"{src}:run/") + pl.col("owner")) \
        .otherwise(model_node(src, pl.col("owner")))
    return files.select(run_id=owner, path="path", md5="md5").unique().sort(pl.all())


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
