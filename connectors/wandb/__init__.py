"""The W&B connector: local run folders, read from their `.wandb` transaction logs, and runs
on a W&B server, read through the public API (`_api`).

Steps: find run folders under `path` (`run-*` and `offline-run-*`, at any depth; `latest-run`
is a symlink and is skipped) -> read each log whose size or mtime changed since the last sync
(`_txlog`) -> fold its records into a segment (`_fold`) -> group segments by (entity, project,
run id), a resumed run's folders in the order they ran -> build the graph (`_normalise`).

    [[sources]]
    tool = "wandb"
    path = "wandb"              # a folder of run folders, relative to braid.toml; and/or
    entity = "team"             # names offline runs' entity (default: `offline`), and
    project = "churn"           # reads entity/project from the server (key: WANDB_API_KEY)
    # base_url = "https://wandb.example.org"   # a self-hosted server (default: WANDB_BASE_URL)

Both at once: a run read from its folder and from the server is one run (the same ids), folded
from both. The server's view wins where it knows more: status (the server's state), history
(complete on the server, steps continued across resumed segments), artifacts (versions,
aliases now, inputs, registry links), config, summary, tags and names. The folder adds what
only it knows: the start time to the microsecond (the server gives the second), the run folder
(the node's `uri`; the run's page is in attrs as `url`), its segments, the exit code, and any
artifact it logged that the server does not hold. A run only one side has is read from there.

Incremental syncs: the state keeps each run's fold (everything but its history) and the
size and mtime of its files. A run whose files are all unchanged is not read again: its
nodes, params and tags come from the kept fold, its metrics stay in the catalog. A run with a
grown or new file (a live run, a new resumed segment) is read again whole: the catalog's
`partial` contract replaces a run's metrics, it cannot append to them. A run without an exit
record is `running` while a process on this machine holds its file open (or, where that
cannot be seen, while the file changed in the last 15 minutes), else `crashed`; that is decided
again at every sync, read or not.

Damage never stops a sync: a file that is not a transaction log, a newer store version, a
truncated tail or a corrupt block becomes a note naming the file and the offset, and every
whole record before and after it is used. A server that refuses the key, does not answer, or
answers errors to the list of runs fails the source (the previous sync's rows stay); a failed
request about one run (its history, artifacts, a manifest) is a note naming the request, and
the rest is read: a run whose history could not be read keeps its metrics from the last sync.
Runs on the server are read whole at every sync (the API has no cheap "what changed").
"""

from __future__ import annotations

import dataclasses
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from braid.unify.errors import SourceError, TransactionLogError
from braid.unify.source import PreviousSync, Progress, SourceBatch, SourceSpec

from ._api import ApiRuns, read_api
from ._folders import RunFile, find_run_files, group_segments, open_files
from ._fold import RunFold, Segment, fold_run, read_segment, run_key
from ._normalise import normalise, run_node

__all__ = ["read_source"]

# the cursor's format; a change forces a full read
CURSOR_VERSION = 1
FOLDS_SCHEMA = {"run_id": pl.String(), "fold": pl.String()}
# without /proc, a run without an exit record whose file changed this recently is running
STALE_AFTER_SECONDS = 15 * 60


def read_source(spec: SourceSpec, *, previous: PreviousSync | None, progress: Progress) -> SourceBatch:
    """Read the W&B run folders under the source's `path`, and/or the runs of `entity/project`
    on a W&B server, into braid's frames."""
    root = spec.path("path")
    project = spec.options.get("project")
    default_entity = spec.options.get("entity")
    if root is None and project is None:
        raise SourceError(spec.name, "no `path` and no `project`: set `path` to a folder of W&B run folders "
                          "(e.g. \"wandb\"), or `entity` and `project` to read runs from a W&B server")
    if project is not None and not default_entity:
        raise SourceError(spec.name, f"`project = {project!r}` needs `entity` (the W&B team or user that owns it)")
    if root is not None and not root.exists():
        raise SourceError(spec.name, f"{root}: no such folder", hint="set `path` to a folder of W&B run folders")
    notes: list[str] = []
    api = None
    if project is not None:  # first: a server that cannot be read fails the source before any work
        timeout = spec.options.get("timeout")
        api = read_api(spec.name, entity=str(default_entity), project=str(project),
                       base_url=spec.options.get("base_url"), timeout=float(timeout) if timeout else None,
                       notes=notes, progress=progress)
    folds: list[RunFold] = []
    rewritten: list[str] = []
    kept = None
    files: list[RunFile] = []
    if root is not None:
        progress("finding runs", 0, None)
        files = find_run_files(root)
        if not files:
            notes.append(f"{root}: no runs (no run-*/offline-run-* folder holding a run-<id>.wandb file)")
        kept = _previous_folds(previous, default_entity)
        folds, rewritten = _fold_all(files, kept, spec.name, default_entity, notes, progress)
        for fold in folds:
            notes += fold.issues
    state = {"folds": pl.DataFrame(
        [(run_node(spec.name, f.entity, f.project, f.run_id), f.to_json()) for f in folds],
        schema=FOLDS_SCHEMA, orient="row").sort("run_id")}
    fresh = set(rewritten)
    if api is not None:
        folds, fresh = _with_server(folds, fresh, api, spec.name)
    partial = kept is not None or bool(api and api.without_history)
    writing = _liveness([f for f in folds if not f.has_exit and f.segments])
    tables = normalise(folds, spec.name, writing=writing, history_of=frozenset(fresh) if partial else None)
    cursor: dict[str, Any] = {"version": CURSOR_VERSION, "entity": default_entity, "runs": len(folds),
                              "files": len(files), "read": len(fresh)}
    if api is not None:
        cursor["api"] = {"project": project, "base_url": _without_userinfo(spec.options.get("base_url")),
                         "runs": len(api.folds)}
    return SourceBatch(
        tables=tables,
        cursor=cursor,
        state=state,
        partial=frozenset({"metrics"}) if partial else frozenset(),
        rewritten_runs=frozenset(fresh),
        notes=notes,
    )


def _with_server(folds: list[RunFold], fresh: set[str], api: ApiRuns, source: str) -> tuple[list[RunFold], set[str]]:
    """The folder's runs and the server's as one list: a run both hold is folded from both
    (`_merged`). Returns the runs and the node ids of those whose history was read now."""
    by_key = {(f.entity, f.project, f.run_id): f for f in folds}
    fresh = set(fresh)
    for served in api.folds:
        key = (served.entity, served.project, served.run_id)
        rid = run_node(source, *key)
        local = by_key.get(key)
        if key not in api.without_history:
            fresh.add(rid)
        by_key[key] = served if local is None else _merged(local, served)
    return [by_key[k] for k in sorted(by_key)], fresh


def _merged(local: RunFold, served: RunFold) -> RunFold:
    """One run from its folder and from the server: the server wins where it knows more (see
    the module docstring), the folder fills in what the server does not give."""
    known = {(a["type"], a["name"], a["digest"]) for a in served.artifacts}
    starts = [t for t in (local.started_at, served.started_at) if t is not None]
    ends = [t for t in (local.ended_at, served.ended_at) if t is not None]
    return dataclasses.replace(
        served,
        run=local.run | served.run,
        # the server gives the start to the second; the folder's is the same moment, to the microsecond
        started_at=local.started_at if local.started_at is not None else (min(starts) if starts else None),
        ended_at=max(ends) if ends else None,
        environment=local.environment | served.environment,
        artifacts=served.artifacts + [a for a in local.artifacts if (a["type"], a["name"], a["digest"]) not in known],
        used_artifacts=local.used_artifacts, linked_artifacts=local.linked_artifacts,
        has_exit=local.has_exit or served.has_exit, exit_code=local.exit_code,
        segments=local.segments, issues=local.issues,
        histories=served.histories if served.histories else local.histories,
        last_step=served.last_step if served.histories else local.last_step,
    )


def _without_userinfo(url: str | None) -> str | None:
    return None if url is None else re.sub(r"://[^/@\s]+@", "://", str(url))


def _previous_folds(previous: PreviousSync | None, entity: str | None) -> dict[str, RunFold] | None:
    """The folds the last sync kept, by run node id; None when there is nothing to build on."""
    if previous is None or previous.cursor.get("version") != CURSOR_VERSION or "folds" not in previous.state \
            or previous.cursor.get("entity") != entity:
        return None  # a new `entity` renames offline runs: read them all again
    return {rid: RunFold.from_json(text) for rid, text in previous.state["folds"].iter_rows()}


def _fold_all(files: list[RunFile], kept: dict[str, RunFold] | None, source: str, default_entity: str | None,
              notes: list[str], progress: Progress) -> tuple[list[RunFold], list[str]]:
    """Every run's fold: kept ones for runs whose files are unchanged, fresh ones for the rest.
    Returns the folds and the node ids of the runs read in this sync."""
    source_of: dict[tuple[str, int, int], str] = {}  # unchanged file -> the kept run it belongs to
    started_of: dict[str, float | None] = {}
    for rid, fold in (kept or {}).items():
        for seg in fold.segments:
            source_of[(seg.path, seg.size, seg.mtime_ns)] = rid
            started_of[seg.path] = seg.started_at
    read: dict[str, Segment] = {}
    placed: list[tuple[tuple[str, str, str], float, RunFile]] = []
    for i, file in enumerate(files):
        if i % 50 == 0:
            progress("reading runs", i, len(files))
        rid = source_of.get(file.signature)
        if rid is not None:
            fold = kept[rid]  # type: ignore[index]
            placed.append(((fold.entity, fold.project, fold.run_id), started_of[str(file.path)] or 0.0, file))
            continue
        seg = _read(file, notes)
        if seg is None:
            continue
        read[str(file.path)] = seg
        placed.append((run_key(seg, default_entity), seg.started_at or 0.0, file))
    progress("reading runs", len(files), len(files))

    folds: list[RunFold] = []
    rewritten: list[str] = []
    for key, group in group_segments(placed).items():
        group = _drop_copies(group, read, started_of, notes)
        rid = run_node(source, *key)
        known = (kept or {}).get(rid)
        if known is not None and sorted(f.signature for f in group) == sorted(map(tuple, known.files)):
            folds.append(known)
            continue
        segments = [read.get(str(f.path)) or _read(f, notes) for f in group]
        present = [s for s in segments if s is not None]
        if not present:
            continue
        fold = fold_run(key, present)
        folds.append(fold)
        rewritten.append(rid)
    return folds, rewritten


def _read(file: RunFile, notes: list[str]) -> Segment | None:
    try:
        seg = read_segment(file.path, size=file.size, mtime_ns=file.mtime_ns)
    except TransactionLogError as exc:
        notes.append(f"{file.path}: {str(exc).split(': ', 1)[-1]}; skipped")
        return None
    if file.synced:
        seg.run["synced"] = True
    if not seg.has_run_record:
        notes.append(f"{file.path}: no run record in {file.size} bytes (the run had only started, or the "
                     "file was cut short); skipped")
        return None
    return seg


def _drop_copies(group: list[RunFile], read: dict[str, Segment], started_of: dict[str, float | None],
                 notes: list[str]) -> list[RunFile]:
    """Two files of one run that started at the same moment are copies of one segment (a
    backed-up folder), not a resume: keep the longer."""
    by_start: dict[float | None, RunFile] = {}
    for file in group:
        seg = read.get(str(file.path))
        start = seg.started_at if seg is not None else started_of.get(str(file.path))
        other = by_start.get(start)
        if other is None:
            by_start[start] = file
            continue
        keep, drop = (file, other) if file.size > other.size else (other, file)
        by_start[start] = keep
        notes.append(f"{drop.path}: a copy of {keep.path} (same run, same start); skipped")
    kept = set(id(f) for f in by_start.values())
    return [f for f in group if id(f) in kept]


def _liveness(unfinished: list[RunFold]) -> Callable[[RunFold], bool]:
    """Whether a run without an exit record is still being written (see the module docstring)."""
    last = {id(f): f.segments[-1].path for f in unfinished if f.segments}
    open_now, complete = open_files(last.values())
    here = socket.gethostname()
    now = time.time()

    def writing(fold: RunFold) -> bool:
        path = last.get(id(fold))
        if path is None:
            return False
        if path in open_now:
            return True
        if complete and fold.run.get("host") in (None, here):
            return False
        try:
            return now - Path(path).stat().st_mtime < STALE_AFTER_SECONDS
        except OSError:
            return False

    return writing
