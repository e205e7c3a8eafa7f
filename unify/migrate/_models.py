"""MLflow 3 LoggedModels: created in the target with their params, tags and files.

A logged model belongs to the run that logged it (`source_run_id`); it is carried when that run
is, into the experiment its run went to, with its params, tags and status, and its files copied
like a run's (`_artifacts.copy_files`: every path checked). The source's model id travels as the
tag `braid.source_id`; the id map's `logged_models` section records each one once it is finished,
so the registry can point a version at the target's model (`models:/<target model id>`) and a
re-run creates nothing twice. Once the models exist, what links them to runs follows: the metrics
logged against them (`model_metric_rows`) and the runs that used or produced them (MLflow's
inputs table: `model_link_rows`).
"""

from __future__ import annotations

import polars as pl
from mlflow import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from braid.connectors.mlflow._artifacts import local_root
from braid.connectors.mlflow._raw import LOGGED_MODEL_STATUS, RawStore

from ._artifacts import ArtifactCopy, Download, SourceFile, Step, copy_files, source_files
from ._idmap import IdMap
from ._plan import MODEL_LINKS, SOURCE_ID_TAG, Plan, SourceRead

# a LoggedModel status the target can be finalized with; others stay as created (PENDING)
FINAL = ("READY", "FAILED")
# logged_model_metrics' primary key (braid's column names): a row the target holds is not written again
MODEL_METRIC_KEY = ["model_id", "key", "timestamp", "step", "run_id"]
MODEL_METRIC_COLUMNS = [*MODEL_METRIC_KEY, "value", "dataset_name", "dataset_digest"]
# what names a run's link to a logged model, per kind (MLflow records a step for outputs only)
LINK_COLUMNS = {"model_input": ["run_uuid", "model_id"], "model_output": ["run_uuid", "model_id", "step"]}


def _by_model(frame: pl.DataFrame, model: str) -> dict[str, str]:
    return dict(frame.filter(pl.col("model_id") == model).select("key", "value").iter_rows())


def model_files(model: dict[str, object], listed: pl.DataFrame,
                tracking_uri: str) -> tuple[list[SourceFile], str | None, Download]:
    """A logged model's files as `copy_files` takes them: braid's listing of a local root (the
    `listed` artifacts of models), else its artifact repository; the root they must stay in; and
    how to download a remote one. Shared by the MLflow and the W&B writers."""
    location = str(model["artifact_location"]) if model["artifact_location"] else None
    repo = get_artifact_repository(location, tracking_uri=tracking_uri) if location else None
    files = source_files(lambda path: repo.list_artifacts(path), location,
                         listed.filter(pl.col("owner") == model["model_id"]))
    return files, local_root(location), lambda path, dst: repo.download_artifacts(path, dst)


def carry_models(plan: Plan, idmap: IdMap, source: MlflowClient, target: MlflowClient,
                 experiments: dict[str, str], step: Step) -> int:
    """Create each planned logged model not created yet; the number created by this call."""
    raw, created = plan.read.raw, 0
    listed = raw["artifacts"].filter(pl.col("owner_kind") == "model")
    models = plan.logged_models()
    for n, m in enumerate(models.iter_rows(named=True)):
        model = m["model_id"]
        if idmap.get("logged_models", model) is None:
            tally = ArtifactCopy()
            new = target.create_logged_model(
                experiments[m["experiment_id"]], name=m["name"], source_run_id=idmap.run_target(m["source_run_id"]),
                tags={**_by_model(raw["logged_model_tags"], model), SOURCE_ID_TAG: model},
                params=_by_model(raw["logged_model_params"], model) or None, model_type=m["model_type"])
            files, root, download = model_files(m, listed, source.tracking_uri)
            copy_files(files, root, download,
                       lambda staged, new_id=new.model_id: target.log_model_artifacts(new_id, staged), tally)
            status = LOGGED_MODEL_STATUS.get(m["status"] or "", m["status"])
            if status in FINAL:
                target.finalize_logged_model(new.model_id, status)
            idmap.set("artifacts", model, tally.entry())
            idmap.set("logged_models", model, new.model_id)
            idmap.save()
            created += 1
        step("logged models", n + 1, models.height)
    return created


def model_metric_rows(plan: Plan, idmap: IdMap, experiments: dict[str, str]) -> pl.DataFrame:
    """The planned model metrics as the target holds them: its model and run ids (the source's run
    stays as `source_run`) and, as `experiment_id`, the target experiment of the run that logged
    each (MLflow records the run's experiment, which may not be the model's). A row whose model or
    run is not in the target is left out: there is nothing to link it to."""
    models = {m: t for m in plan.logged_models()["model_id"].to_list() if (t := idmap.get("logged_models", m))}
    runs = {r: t for r in plan.run_ids if (t := idmap.run_target(r)) is not None}
    experiment_of = {r: int(experiments[e])
                     for r, e in plan.frame("runs").select("run_uuid", "experiment_id").iter_rows() if r in runs}
    rows = plan.model_metrics().filter(pl.col("model_id").is_in(list(models)) & pl.col("run_id").is_in(list(runs)))
    return rows.select(
        *MODEL_METRIC_COLUMNS, source_run="run_id").with_columns(
        model_id=pl.col("model_id").replace_strict(models, return_dtype=pl.String),
        run_id=pl.col("run_id").replace_strict(runs, return_dtype=pl.String),
        experiment_id=pl.col("run_id").replace_strict(experiment_of, return_dtype=pl.Int64))


def model_link_rows(plan: Plan, idmap: IdMap) -> pl.DataFrame:
    """The run-to-model links that travel, as the target holds them: `kind` (a `MODEL_LINKS` key),
    the target's `run_id` and `model_id`, and `step` (0 for an input: the inputs table's default).
    A link whose run or model is not in the target is left out: there is nothing to link."""
    parts = [plan.model_links(kind).filter(pl.col("why").is_null()).select(
        "run_uuid", "model_id", kind=pl.lit(kind),
        step=pl.col("step") if "step" in LINK_COLUMNS[kind] else pl.lit(0, pl.Int64)) for kind in MODEL_LINKS]
    rows = pl.concat(parts)
    models = {m: t for m in rows["model_id"].unique().to_list() if (t := idmap.get("logged_models", m))}
    runs = {r: t for r in rows["run_uuid"].unique().to_list() if (t := idmap.run_target(r)) is not None}
    return rows.filter(pl.col("model_id").is_in(list(models)) & pl.col("run_uuid").is_in(list(runs))).select(
        "kind", "step", run_id=pl.col("run_uuid").replace_strict(runs, return_dtype=pl.String),
        model_id=pl.col("model_id").replace_strict(models, return_dtype=pl.String))


def _described(raw: RawStore, models: pl.DataFrame, run_ids: dict[str, str]) -> pl.DataFrame:
    """One row per model: its fields, its run (named as in the source), params and tags as sorted text."""
    def pairs(table: str) -> pl.DataFrame:
        return (raw[table].filter(~pl.col("key").str.starts_with("braid."))
                .group_by("model_id").agg((pl.col("key") + "=" + pl.col("value").fill_null("")).sort().str.join("\n")
                                          .alias(table)))
    # a REST store answers "" where a SQL store holds NULL
    out = models.select("model_id", "name", model_type=pl.col("model_type").fill_null(""),
                        status=pl.col("status").replace(LOGGED_MODEL_STATUS),
                        run=pl.col("source_run_id").replace_strict(run_ids, default=None))
    for table in ("logged_model_params", "logged_model_tags"):
        out = out.join(pairs(table), on="model_id", how="left")
    return out


def verify_models(plan: Plan, idmap: IdMap, target: SourceRead) -> dict[str, object]:
    """The planned logged models against the target's, read back: fields, run, params and tags."""
    from ._report import _compare

    planned = plan.logged_models()
    expected = _described(plan.read.raw, planned, {r: r for r in plan.run_ids})
    back = {idmap.get("logged_models", m): m for m in planned["model_id"].to_list()}
    runs = {t: s for s in plan.run_ids if (t := idmap.run_target(s)) is not None}
    mine = target.raw["logged_models"].filter(pl.col("model_id").is_in(list(back)))
    actual = _described(target.raw, mine, runs).with_columns(pl.col("model_id").replace_strict(back))
    return _compare(expected.sort("model_id"), actual)


def verify_model_metrics(plan: Plan, idmap: IdMap, target: SourceRead) -> dict[str, object]:
    """The planned model metrics against those the target's models hold and those the target's runs
    braid wrote logged, read back: every field, the model and the run named as in the source (a
    row of a model or run braid did not write keeps its target id, so it counts as unexpected)."""
    from ._report import _compare

    back = {t: m for m in plan.logged_models()["model_id"].to_list() if (t := idmap.get("logged_models", m))}
    runs = {t: s for s in plan.run_ids if (t := idmap.run_target(s)) is not None}
    actual = target.raw["logged_model_metrics"].filter(
        pl.col("model_id").is_in(list(back)) | pl.col("run_id").is_in(list(runs))).with_columns(
        model_id=pl.col("model_id").replace_strict(back, default=pl.col("model_id"), return_dtype=pl.String),
        run_id=pl.col("run_id").replace_strict(runs, default=pl.col("run_id"), return_dtype=pl.String))
    return _compare(plan.model_metrics().select(MODEL_METRIC_COLUMNS), actual.select(MODEL_METRIC_COLUMNS))


def verify_model_links(plan: Plan, idmap: IdMap, target: SourceRead, kind: str) -> dict[str, object]:
    """The run-to-model links of one kind that travel against those the target's runs braid wrote
    hold, read back: run, model and (outputs) step, named as in the source (a model braid did not
    write keeps its target id, so it counts as unexpected)."""
    from ._report import _compare

    columns = LINK_COLUMNS[kind]
    back = {t: m for m in plan.logged_models()["model_id"].to_list() if (t := idmap.get("logged_models", m))}
    runs = {t: s for s in plan.run_ids if (t := idmap.run_target(s)) is not None}
    actual = target.raw[MODEL_LINKS[kind][0]].filter(pl.col("run_uuid").is_in(list(runs))).with_columns(
        run_uuid=pl.col("run_uuid").replace_strict(runs, return_dtype=pl.String),
        model_id=pl.col("model_id").replace_strict(back, default=pl.col("model_id"), return_dtype=pl.String))
    expected = plan.model_links(kind).filter(pl.col("why").is_null())
    return _compare(expected.select(columns), actual.select(columns))
