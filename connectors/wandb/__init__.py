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

Incremental syncs: the state keeps each run's fold (everything but its history), and for
each of its files the size and mtime, what its records folded to (`_fold.segment_state`), where
the read ended (a record boundary) and checksums of the 4 KiB at each end of the bytes read. A
run whose files are all unchanged is not read again: its nodes, params and tags come from the
kept fold, its metrics stay in the catalog. A run whose last file only grew (a live run: the
same path, and the checksummed bytes unchanged) is continued: only the bytes after the old end
are read, their records are folded onto the kept state (config and summary operations, the
exit, history steps, a resumed segment's step shift) so that the run equals a whole read, and
only the new history points are sent (`metrics` is partial: the catalog keeps the run's earlier
points and adds these). Anything else is read whole again, and the run's metrics replaced: a
file that shrank or whose checked bytes changed, a new or removed segment, damage in the file
(a damaged block is skipped from where the read started), a step shift that changed, and a run
with summary-only metric points (they sit at the run's last step: see `_normalise`). Runs also
read from a server are never continued. The cursor says how many runs were continued and how
many bytes were read. A run without an exit
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
from ._fold import RunFold, Segment, continue_segment, flatten, fold_run, read_segment, run_key, segment_from_state
from ._normalise import _number, history_frame, normalise, run_node

__all__ = ["read_source"]

# the cursor's format; a change forces a full read
CURSOR_VERSION = 2
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
    read = _Read()
    kept = None
    files: list[RunFile] = []
    if root is not None:
        progress("finding runs", 0, None)
        files = find_run_files(root)
        if not files:
            notes.append(f"{root}: no runs (no run-*/offline-run-* folder holding a run-<id>.wandb file)")
        kept = _previous_folds(previous, default_entity)
        folds = _fold_all(files, kept, spec.name, default_entity, notes, progress, read, continued=api is None)
        for fold in folds:
            notes += fold.issues
    local = list(folds)
    fresh = set(read.rewritten)
    if api is not None:
        folds, fresh = _with_server(folds, fresh, api, spec.name)
    partial = kept is not None or bool(api and api.without_history)
    writing = _liveness([f for f in folds if not f.has_exit and f.segments])
    tables = normalise(folds, spec.name, writing=writing,
                       history_of=frozenset(fresh | set(read.continued)) if partial else None)
    # after `normalise`: it notes which keys each run logged (what a later continuation needs)
    state = {"folds": pl.DataFrame(
        [(run_node(spec.name, f.entity, f.project, f.run_id), f.to_json()) for f in local],
        schema=FOLDS_SCHEMA, orient="row").sort("run_id")}
    cursor: dict[str, Any] = {"version": CURSOR_VERSION, "entity": default_entity, "runs": len(folds),
                              "files": len(files), "read": len(fresh), "continued": len(read.continued),
                              "bytes_read": read.bytes}
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


@dataclasses.dataclass
class _Read:
    """What a sync read: runs read whole, runs continued, and the bytes read from logs."""

    rewritten: list[str] = dataclasses.field(default_factory=list)
    continued: list[str] = dataclasses.field(default_factory=list)
    bytes: int = 0


def _fold_all(files: list[RunFile], kept: dict[str, RunFold] | None, source: str, default_entity: str | None,
              notes: list[str], progress: Progress, counts: _Read, *, continued: bool = True) -> list[RunFold]:
    """Every run's fold: kept ones for runs whose files are unchanged, continued ones for runs
    whose last file only grew, fresh ones for the rest (`counts` says which)."""
    source_of: dict[tuple[str, int, int], str] = {}  # unchanged file -> the kept run it belongs to
    started_of: dict[str, float | None] = {}
    tail_of: dict[str, str] = {}  # the last file of a kept run that can be continued -> that run
    for rid, fold in (kept or {}).items():
        for seg in fold.segments:
            source_of[(seg.path, seg.size, seg.mtime_ns)] = rid
            started_of[seg.path] = seg.started_at
        if continued and fold.segments and fold.summary_points == 0 and fold.logged is not None \
                and all(seg.state is not None for seg in fold.segments):
            tail_of[fold.segments[-1].path] = rid
    read: dict[str, Segment] = {}
    grown: dict[str, Segment] = {}  # continued reads of grown files: only their new rows
    placed: list[tuple[tuple[str, str, str], float, RunFile]] = []
    for i, file in enumerate(files):
        if i % 50 == 0:
            progress("reading runs", i, len(files))
        rid = source_of.get(file.signature)
        if rid is not None:
            fold = kept[rid]  # type: ignore[index]
            placed.append(((fold.entity, fold.project, fold.run_id), started_of[str(file.path)] or 0.0, file))
            continue
        rid = tail_of.get(str(file.path))
        if rid is not None:
            fold = kept[rid]  # type: ignore[index]
            seg = _continue(fold.segments[-1], file, counts)
            if seg is not None:
                grown[str(file.path)] = seg
                placed.append(((fold.entity, fold.project, fold.run_id), started_of[str(file.path)] or 0.0, file))
                continue
        seg = _read(file, notes, counts)
        if seg is None:
            continue
        read[str(file.path)] = seg
        placed.append((run_key(seg, default_entity), seg.started_at or 0.0, file))
    progress("reading runs", len(files), len(files))

    folds: list[RunFold] = []
    for key, group in group_segments(placed).items():
        group = _drop_copies(group, read, started_of, notes)
        rid = run_node(source, *key)
        known = (kept or {}).get(rid)
        if known is not None and sorted(f.signature for f in group) == sorted(map(tuple, known.files)):
            folds.append(known)
            continue
        if known is not None and any(str(f.path) in grown for f in group):
            fold = _continued(key, group, known, grown)
            if fold is not None:
                folds.append(fold)
                counts.continued.append(rid)
                continue
        segments = [read.get(str(f.path)) or _read(f, notes, counts) for f in group]
        present = [s for s in segments if s is not None]
        if not present:
            continue
        fold = fold_run(key, present)
        folds.append(fold)
        counts.rewritten.append(rid)
    return folds


def _continue(info: Any, file: RunFile, counts: _Read) -> Segment | None:
    """The last segment of a kept run read on from where the last sync ended, or None."""
    if file.size < info.resume_offset:
        return None
    try:
        seg = continue_segment(info, size=file.size, mtime_ns=file.mtime_ns)
    except TransactionLogError:
        return None  # read whole, which says what is wrong
    if seg is None:
        return None
    counts.bytes += seg.bytes_read
    seg.run.pop("synced", None)
    if file.synced:
        seg.run["synced"] = True
    return seg


def _continued(key: tuple[str, str, str], group: list[RunFile], known: RunFold,
               grown: dict[str, Segment]) -> RunFold | None:
    """A kept run whose last file grew, folded from its kept segments and the continued read
    of that file; None when the result could differ from a whole read (see the module
    docstring): the run is then read whole."""
    paths = [str(f.path) for f in group]
    old = known.segments
    if paths != [s.path for s in old] or paths[-1] not in grown \
            or any(f.signature != (s.path, s.size, s.mtime_ns) for f, s in zip(group[:-1], old[:-1], strict=True)):
        return None
    fold = fold_run(key, [segment_from_state(s) for s in old[:-1]] + [grown[paths[-1]]])
    if fold.segments[-1].step_offset != old[-1].step_offset:
        return None  # the rows read before would move
    logged = set(known.logged or ())
    unlogged = {k for k, v in flatten(fold.summary).items()
                if not k.startswith("_") and k not in logged and _number(v) is not None}
    if unlogged:  # summary-only points, unless the new rows log those keys
        hist, offset = fold.histories[-1]
        new = history_frame(hist.steps, hist.counts, hist.keys, hist.values, step_offset=offset)
        if unlogged - set(new["key"].unique().to_list()):
            return None
    fold.logged = sorted(logged)
    return fold


def _read(file: RunFile, notes: list[str], counts: _Read | None = None) -> Segment | None:
    try:
        seg = read_segment(file.path, size=file.size, mtime_ns=file.mtime_ns)
    except TransactionLogError as exc:
        notes.append(f"{file.path}: {str(exc).split(': ', 1)[-1]}; skipped")
        return None
    if counts is not None:
        counts.bytes += seg.bytes_read
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
