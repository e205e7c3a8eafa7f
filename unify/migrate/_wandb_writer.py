"""Write a plan as W&B offline run folders through the wandb SDK, ready for `wandb sync`, or
uploaded by it to a W&B server.

The target is a wandb source whose `path` is the folder the run folders go into, or a W&B
server (`entity` and `project`, no `path`): then the folders are written into braid's staging
folder in the catalog and uploaded by `wandb sync` (`_wandb_upload`), every run into the
target's project. Each run is written by `wandb.init(mode="offline", ...)`,
`run.log(row, step=...)` per history step and `run.finish(exit_code=...)`, exactly as a
training script would write it. What a W&B run can
hold, and how each source field gets there, is declared once in `WANDB_FIELDS` (`_wandb_fields`);
the writer, the expected report (`_wandb_fates`) and the read-back verification (`_wandb_verify`)
all follow it. What the SDK does, found by writing folders with wandb 0.31 and reading them back:

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
  (`link_artifact` raises NotImplementedError): dataset inputs travel in config (`braid.datasets`),
  and on a server the links and the artifacts a run used are made after the upload (`_wandb_lineage`).
- Offline runs do log artifacts (`_wandb_sdk`): a run's files are one artifact per run, and each of
  its models (a logged model, or the folder an MLflow 2 version names: `_wandb_models`) one more.
- wandb-core writes the environment record, where the username is, on its own schedule: a short
  run is now and then closed without it, and is then written again.

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
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from braid.unify.errors import MigrationUsageError
from braid.unify.source import Progress, SourceSpec, no_progress

from ._artifacts import ArtifactCopy, Download, RunFiles, SourceFile, mlflow_files
from ._cache_files import tool_files
from ._idmap import IdMap
from ._models import model_files
from ._plan import Plan
from ._wandb_fates import families, history, job_types, reserved_param, tag_fates
from ._wandb_fields import (ARTIFACT_TYPE, CONFIG, EXACT_STATUS, EXIT_CODES, MAX_PROJECT_LENGTH, MODEL_TYPE,
                            PROJECT_FORBIDDEN, WANDB_STATUS, WRITTEN, artifact_name, project_name, wandb_name,
                            wandb_run_id)
from ._wandb_lineage import link_versions, use_inputs, use_models
from ._wandb_models import model_metadata, run_model_files, run_models
from ._wandb_sdk import Logged, finished_log, offline_sdk, staged, write_folder
from ._wandb_upload import (BATCH, ApiTarget, Expected, Held, Pending, Server, check_key, failure, last_values,
                            resumed_rows, server_state, upload)

# where a run is written before it is complete: a folder braid's reader and `wandb sync` skip
STAGING = Path(".braid") / "migrate-staging"
# how often a run is written before its missing environment record (its username) is left to the check
ENVIRONMENT_ATTEMPTS = 5


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


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class PreparedRun:
    """One run as the SDK is to write it: `wandb.init`'s arguments, its history rows (one per
    step: keys, values and the row's timestamp), its W&B status, and the username its
    environment record must hold."""

    init: dict[str, Any]
    rows: pl.DataFrame | None
    status: str
    user: str


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
        self._run_models_of: dict[str, list[dict[str, Any]]] | None = None
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

    def run_models_of(self, run_uuid: str) -> list[dict[str, Any]]:
        """The MLflow 2 models (folders of its files) registry versions point at in a source run
        (`_wandb_models.run_models`; MLflow sources only)."""
        if self._run_models_of is None:
            self._run_models_of = {}
            for m in run_models(self.plan) if self.tool == "mlflow" else []:
                self._run_models_of.setdefault(m["run_uuid"], []).append(m)
        return self._run_models_of.get(run_uuid, [])

    def model_count(self, run_uuid: str) -> int:
        """The model artifacts a run logs: its logged models' and its MLflow 2 models'."""
        return len(self.models_of(run_uuid)) + len(self.run_models_of(run_uuid))

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
            link_versions(self.plan, self.server, idmap, created=self.created, reused=self.reused)
            use_inputs(self.plan, self.tool, self.server, idmap, created=self.created, reused=self.reused)
            if self.tool == "mlflow":
                use_models(self.plan, self.server, idmap, created=self.created, reused=self.reused)

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
        """A run the target now holds, with its files and its model artifacts (an MLflow 2
        model's files are the run's, counted once)."""
        self.created["runs"] += 1
        copied = sum((idmap.get("artifacts", o) or {}).get("copied", 0) for o in self.owners(run_uuid))
        if copied:
            self.created["artifact files"] += copied
        if self.model_count(run_uuid):
            self.created["model artifacts"] += self.model_count(run_uuid)

    def _pending(self, wandb: Any, run: PreparedRun, run_uuid: str, wid: str, folder: Path, idmap: IdMap) -> Pending:
        """A run folder waiting for the server, with what the server holds once it has the run whole."""
        copied = (idmap.get("artifacts", run_uuid) or {}).get("copied")
        logged = ([artifact_name(wid)] if copied else []) + [wandb_name(m["name"]) for m in self.models_of(run_uuid)] \
            + [m["name"] for m in self.run_models_of(run_uuid)]
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
        models' (`_model_owners`) staged by `copy_files` (each path checked) and logged as
        artifacts: (the finished run folder, what each owner's copy did, by run or model id)."""
        stage, written = self.staging(wid), []

        def write(logged: list[Logged]) -> None:
            for _ in range(ENVIRONMENT_ATTEMPTS):
                folder = write_folder(wandb, stage, run.init, run.rows, EXIT_CODES[run.status], logged, summary)
                # wandb-core writes the environment record (which holds the username) on its own
                # schedule and can close a short run without it (about 1 run in 50): write it again;
                # after the last attempt the read-back check reports the missing user
                if finished_log(folder / f"run-{wid}.wandb").environment.get("username", "") == run.user:
                    break
            written.append(folder)

        owners: list[tuple[str, Any, Any]] = [(run_uuid, self.files_of(run_uuid),
                                               lambda folder: Logged(artifact_name(wid), ARTIFACT_TYPE, folder)),
                                              *self._model_owners(run_uuid)]
        tallies = {owner: ArtifactCopy() for owner, _, _ in owners}
        staged(owners, tallies, [], write)  # writes the run while every owner's staged files exist
        return written[-1], tallies

    def _model_owners(self, run_uuid: str) -> list[tuple[str, Any, Any]]:
        """The run's model artifacts as `staged` takes them (owner, its files, its artifact): its
        logged models (owner: the model id) and its MLflow 2 models (owner: `runs:/<run>/<path>`,
        the files under <path> at their paths in that folder)."""
        models, folders = self.models_of(run_uuid), self.run_models_of(run_uuid)
        if not models and not folders:
            return []
        from ._mlflow_writer import writer_uri

        uri = writer_uri(self.source)
        listed = self.plan.read.raw["artifacts"].filter(pl.col("owner_kind") == "model")
        owners: list[tuple[str, Any, Any]] = [
            (m["model_id"], model_files(m, listed, uri),
             lambda folder, m=m: Logged(wandb_name(m["name"]), MODEL_TYPE, folder, model_metadata(self.plan, m)))
            for m in models]
        for f in folders:
            location, files = run_model_files(self.plan, f)
            owners.append((f["key"], model_files(location, files, uri),
                           lambda folder, f=f: Logged(f["name"], MODEL_TYPE, folder, f["metadata"])))
        return owners

    def _resumed(self, wandb: Any, run: PreparedRun, run_uuid: str, wid: str, held: Held) -> Path:
        """A resumed segment that completes a run the server holds in part (`held`): the rows it
        lacks, the whole summary, the run's files and its end. Raises ValueError when the server's
        rows are not the run's first ones."""
        rest = dataclasses.replace(run, init={**run.init, "resume": "allow"}, rows=resumed_rows(run.rows, held))
        folder, _ = self._write_run(wandb, rest, run_uuid, wid, summary=last_values(run.rows))
        return folder

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
