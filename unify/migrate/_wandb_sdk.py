"""The wandb SDK, run by run: offline and silent, writing one run folder into a staging folder
with its artifacts, and waiting until wandb-core has written the run's log to its end.

What wandb 0.31 does, found by writing folders and reading them back:

- Offline runs do log artifacts: `run.log_artifact` writes the manifest (path, base64 md5, size)
  into the run log and `add_dir`/`add_file` copy each file into the SDK's staging folder (the
  manifest's `local_path`), where `wandb sync` uploads it from. Each owner's files (a run's, a
  logged model's) are staged by `_artifacts.copy_files` first, every path checked (`staged`).
- `run.finish()` returns before wandb-core has written the log to its end (`finished_log` waits).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from braid.connectors.wandb._fold import Segment, read_segment
from braid.connectors.wandb._folders import open_files

from ._artifacts import ArtifactCopy, copy_files
from ._wandb_fields import ARTIFACT_TYPE, EXIT_CODES

# the caller's WANDB_* variables kept while writing: where the SDK stages artifact bytes until
# `wandb sync` (the user's choice of disk; the run records the staged path, not a setting)
KEPT_VARIABLES = ("WANDB_DATA_DIR",)
# how long wandb-core may take to write a finished run's log to the end
FLUSH_TIMEOUT = 120.0


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
class Logged:
    """An artifact a run logs: its name, type, staged folder (None: no file to hold) and metadata."""

    name: str
    type: str
    folder: str | None
    metadata: dict[str, Any] | None = None


def write_folder(wandb: Any, stage: Path, init: dict[str, Any], rows: pl.DataFrame | None, exit_code: int,
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


def staged(owners: list[tuple[str, Any, Any]], tallies: dict[str, ArtifactCopy], logged: list[Logged],
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
        staged(rest, tallies, [*logged, artifact(folder)], then)

    copy_files(files, root, download, next_owner, tallies[owner])
    if not done:  # no file to stage
        next_owner(None)

