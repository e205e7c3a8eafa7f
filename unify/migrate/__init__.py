"""Migration between tracking tools, with a fidelity report.

This version moves MLflow to MLflow (one tracking store or server to another): experiments,
runs with params, the full metric history, tags, times, status, user, git commit, parent links,
dataset inputs and registry entries. W&B and DVC move to MLflow too (`_sources`): a W&B run, a
DVC stage execution or a DVC experiment becomes an MLflow run, read from braid's normalised tables
and written by the same writer, id map and report; the mapping is declared in `SOURCE_FIELDS` and
`STATUS`, and the read-back is compared with the source's normalised tables. MLflow and DVC also
move to W&B (`_wandb_writer`): each run becomes a W&B offline run folder written by the wandb
SDK, ready for `wandb sync`, as declared in `WANDB_FIELDS`, and the folder is read back with
braid's W&B reader; for a target that is a W&B server, the folders are uploaded by `wandb sync`
and checked run by run on the server (`_wandb_upload`), which is read back through the W&B API.
Re-running creates nothing new; an interrupted migration continues where it stopped (the id map
lives in the catalog folder). The report says, per entity kind, what was carried, transformed
(how) and not carried (why), and is checked by reading the target back with braid's own
connector.

>>> from braid.unify.migrate import migrate                                  # doctest: +SKIP
>>> report = migrate(config.source("old"), config.source("new"), catalog=config.catalog)  # doctest: +SKIP
>>> print(report.summary())                                                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from braid.unify.errors import BraidError, MigrationTargetError, MigrationUsageError
from braid.unify.source import Progress, SourceSpec, no_progress

from ._artifacts import copy_artifacts, mlflow_files, report_copies, verify_artifacts
from ._cache_files import tool_files, verify_tool_artifacts
from ._idmap import IdMap
from ._models import carry_models, verify_model_links, verify_model_metrics, verify_models
from ._plan import FIELDS, MODEL_LINKS, MODEL_NOT_CARRIED, RUN_DELETED, Plan, SourceRead, make_plan, read_mlflow
from ._report import KindReport, Report, expected_report, verify
from ._sources import SOURCE_FIELDS, STATUS, expected_source_report, read_tool, verify_source
from ._wandb_fields import WANDB_FIELDS
from ._wandb_writer import wandb_folder

__all__ = ["FIELDS", "SOURCE_FIELDS", "STATUS", "WANDB_FIELDS", "IdMap", "KindReport", "Plan", "Report", "SourceRead",
           "migrate"]

# the directions this version migrates: (source tool, target tool)
PROGRESS_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
DIRECTIONS = {("mlflow", "mlflow"), ("wandb", "mlflow"), ("dvc", "mlflow"), ("mlflow", "wandb"), ("dvc", "wandb")}


def migrate(
    source: SourceSpec, target: SourceSpec, *, catalog: Path, select: Sequence[str] | None = None,
    dry_run: bool = False, artifact_root: Path | None = None, progress: Progress = no_progress,
) -> Report:
    """Copy the source's runs (all live runs, or the run ids in `select`) into the target.

    The source is MLflow, W&B or DVC; the target is MLflow, or (from MLflow and DVC) a folder of
    W&B run folders or a W&B server's project (`_migrate_to_wandb`). `select` holds run node ids
    (`<source>:run/<id>`) or native ids.

    `artifact_root` is where experiments created in a database target keep their artifacts
    (braid writes the full text of over-long values there); a server target chooses its own.
    """
    if (source.tool, target.tool) not in DIRECTIONS:
        raise MigrationUsageError(f"braid does not migrate {source.tool} to {target.tool} yet",
                                  hint="this version migrates mlflow, wandb and dvc to mlflow, and mlflow and dvc "
                                       "to wandb (run folders, or a W&B server)")
    if source.name == target.name:
        raise MigrationUsageError("the source and the target are the same source")
    if target.tool == "wandb":
        # a W&B target with no place to write, or a server without a key, is refused before any read
        wandb_folder(target, catalog=catalog, key=not dry_run)
    from_mlflow = source.tool == "mlflow"
    read = read_mlflow(source) if from_mlflow else read_tool(source)
    # run node ids (`<source>:run/<native id>`) or native ids; a W&B or DVC native id holds slashes
    prefix = f"{source.name}:run/"
    wanted = None if select is None else [
        s.removeprefix(prefix) if s.startswith(prefix) or not from_mlflow else s.rsplit("/", 1)[-1] for s in select]
    plan = make_plan(source.name, target.name, read, select=wanted)
    if target.tool == "wandb":
        return _migrate_to_wandb(source, target, plan, catalog=catalog, dry_run=dry_run, progress=progress)
    report = (expected_report(plan, dry_run=dry_run) if from_mlflow
              else expected_source_report(plan, source.tool, dry_run=dry_run))
    idmap = IdMap.load(catalog, source.name, target.name)
    if dry_run:
        return _planned(report, plan, idmap)
    from ._mlflow_writer import MlflowWriter, long_value_path

    problems: dict[str, Counter[str]] = {"model_version": Counter(), "alias": Counter(), "model_metric": Counter()}
    files_copied = models_created = 0
    quiet = _quiet_mlflow()
    try:
        quiet.__enter__()
        writer = MlflowWriter(target, artifact_root=artifact_root)
        # one client per end for every phase: the writer's for the target
        source_client, target_client = (_client(source) if from_mlflow else None), writer.client
        experiments = {e: writer.experiment(plan, idmap, e) for e in plan.experiment_ids}
        writer.runs(plan, idmap, experiments, progress)
        files_copied = copy_artifacts(plan, idmap, mlflow_files(plan, source_client) if source_client is not None
                                      else tool_files(source, plan), target_client, progress)
        if source_client is not None:
            models_created = carry_models(plan, idmap, source_client, target_client, experiments, progress)
            # after the models: a metric, and a run's use or output of a model, is linked to the
            # target's model, which must exist
            writer.model_metrics(plan, idmap, experiments, problems)
            writer.model_links(plan, idmap)
        writer.registry(plan, idmap, problems)
    except BraidError:
        raise
    except (MlflowException, requests.RequestException, OSError) as exc:
        done = sum(idmap.run_done(r) for r in plan.run_ids)
        raise MigrationTargetError(
            source.name, target.name, f"the target failed after {done} of {len(plan.run_ids)} runs: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
            hint="what was written is kept; run the same migration again to continue") from None
    finally:
        quiet.__exit__(None, None, None)
    for kind, why in problems.items():
        for reason, n in why.items():
            report.kinds[kind].carried -= n
            report.kinds[kind].not_carried[reason] += n
    report.created, report.reused = writer.created, writer.reused
    target_read = read_mlflow(target)
    long_values = _long_values(plan, idmap, target_read, long_value_path)
    report.verification = (verify(plan, target_read, long_values) if from_mlflow
                           else verify_source(plan, source.tool, target_read, long_values))
    # files of deleted runs and of models left behind were counted by the plan; the copy knows the rest
    report_copies(report, plan, idmap, keep=(RUN_DELETED, MODEL_NOT_CARRIED))
    for what, n in (("artifact files", files_copied), ("logged_models", models_created)):
        if n:
            report.created[what] += n
    with _quiet_mlflow():
        report.verification["artifact"] = (
            verify_artifacts(plan, idmap, target_read, source_client, target_client) if source_client is not None
            else verify_tool_artifacts(source, plan, idmap, target_read, target_client))
    if from_mlflow:
        report.verification["logged_model"] = verify_models(plan, idmap, target_read)
        report.verification["model_metric"] = verify_model_metrics(plan, idmap, target_read)
        for kind in MODEL_LINKS:
            report.verification[kind] = verify_model_links(plan, idmap, target_read, kind)
    # versions the target refused (and model metrics a server could not link) are reported as not
    # carried: the read-back expects them missing
    for kind in ("model_version", "model_metric"):
        refused = sum(problems[kind].values())
        check = report.verification.get(kind)
        if check is not None and refused:
            check["reported_not_carried"] = min(refused, check["missing"])
            check["missing"] -= check["reported_not_carried"]
    return report


def _planned(report: Report, plan: Plan, idmap: IdMap) -> Report:
    """A dry run's report: the runs the id map knows as done are reused, the rest would be created."""
    done = sum(idmap.run_done(r) for r in plan.run_ids)
    report.reused["runs"] = done
    report.created["runs"] = len(plan.run_ids) - done
    return report


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow prints a "View run ... at" line per run for server targets, and a progress bar per
    artifact download: stdout stays the report's, stderr braid's progress."""
    saved = os.environ.get(PROGRESS_BARS)
    os.environ[PROGRESS_BARS] = "false"
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is None:
            os.environ.pop(PROGRESS_BARS, None)
        else:
            os.environ[PROGRESS_BARS] = saved


def _client(spec: SourceSpec) -> MlflowClient:
    from ._mlflow_writer import writer_uri

    uri = writer_uri(spec)
    return MlflowClient(uri, uri)


def _long_values(plan: Plan, idmap: IdMap, target: SourceRead, path_of: object) -> dict[tuple[str, str, str], str]:
    """The full text of every value written as an artifact, read back from the target."""
    import mlflow.artifacts
    import polars as pl

    from ._plan import MAX_PARAM_LENGTH, MAX_TAG_LENGTH

    out: dict[tuple[str, str, str], str] = {}
    uris = dict(target.raw["runs"].select("run_uuid", "artifact_uri").iter_rows())
    for kind, limit in (("params", MAX_PARAM_LENGTH), ("tags", MAX_TAG_LENGTH)):
        long = plan.frame(kind).filter(pl.col("value").str.len_chars() > limit)
        for run_uuid, key in long.select("run_uuid", "key").iter_rows():
            target_id = idmap.run_target(run_uuid)
            if target_id is None or target_id not in uris:
                continue
            uri = f"{uris[target_id].rstrip('/')}/{path_of(kind, key)}"  # type: ignore[operator]
            try:
                out[(kind, run_uuid, key)] = mlflow.artifacts.load_text(uri)
            except (MlflowException, OSError):
                continue
    return out


def _migrate_to_wandb(source: SourceSpec, target: SourceSpec, plan: Plan, *, catalog: Path, dry_run: bool,
                      progress: Progress) -> Report:
    """MLflow or DVC into W&B: run folders written by the wandb SDK (`_wandb_writer`), uploaded to
    the server of an API target (`_wandb_upload`), read back with braid's W&B reader (the folder,
    or the server through `wandb.Api()`) and compared with the source through `WANDB_FIELDS`."""
    from wandb.errors import Error as WandbError

    from ._wandb_upload import ApiTarget
    from ._wandb_fates import expected_wandb_report
    from ._wandb_verify import verify_wandb
    from ._wandb_writer import WandbWriter

    api = ApiTarget.of(target)
    project = api.project if api is not None else None  # a server target's runs all go into its project
    report = expected_wandb_report(plan, source.tool, dry_run=dry_run, project=project)
    idmap = IdMap.load(catalog, source.name, target.name)
    if dry_run:
        return _planned(report, plan, idmap)
    writer = WandbWriter(target, plan, source, catalog=catalog)
    try:
        writer.runs(idmap, progress)
    except BraidError:
        raise
    except (WandbError, OSError) as exc:
        done = sum(idmap.run_done(r) for r in plan.run_ids)
        raise MigrationTargetError(
            source.name, target.name, f"writing W&B run folders failed after {done} of {len(plan.run_ids)} runs: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
            hint="finished run folders are kept; run the same migration again to continue") from None
    report.created, report.reused = writer.created, writer.reused
    report.verification = verify_wandb(plan, source.tool, writer.read_back(), idmap, project=project)
    report_copies(report, plan, idmap, keep=(RUN_DELETED, MODEL_NOT_CARRIED))  # the plan's, as for MLflow
    return report
