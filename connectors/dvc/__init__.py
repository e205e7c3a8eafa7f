"""The DVC connector: pipelines, their whole git history, imports, experiments and GTO.

Steps: open the repo (git plumbing only, never a checkout) -> find every commit on every
branch that changed DVC's files, plus experiments and the workspace -> parse those files,
each distinct blob once -> decide which stages executed in which commit -> build the graph,
expanding directories from the local cache -> fold GTO's tags into registry versions.

    [[sources]]
    name = "pipeline"
    tool = "dvc"
    repo = "."                  # a git repository with DVC, relative to braid.toml
    # branches = ["main"]       # default: every local branch
    # max_commits = 1000        # default: the whole history

A sync writes nothing into the repo: no `.dvc/tmp`, no index refresh, no ref.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from braid.unify.errors import SourceError
from braid.unify.identity import COMMIT_STATE_SCHEMA, LOCATION_SCHEMA
from braid.unify.source import PreviousSync, Progress, SourceBatch, SourceSpec

from ._cache import Cache
from ._files import DvcFileError
from ._git import Git
from ._gto import fold, parse_tag
from ._files import Stage
from ._history import WORKSPACE, Execution, History, Snapshot, executions, read_history, read_workspace
from ._metrics import Lister, Reader
from ._normalise import Graph, Kinds
from ._runcache import content_key, read_run_cache, resolve

__all__ = ["read_source"]


def read_source(spec: SourceSpec, *, previous: PreviousSync | None, progress: Progress) -> SourceBatch:
    """Read a DVC repository's whole lineage into a batch."""
    del previous  # reading history through git is fast enough to do whole each time
    root = spec.path("repo") or Path(".").resolve()
    if not root.is_dir():
        raise SourceError(spec.name, f"{root}: no such folder", hint="set `repo` to a git repository with DVC")
    _check_options(spec)
    with Git(root, source=spec.name) as git:
        if not (git.root / ".dvc").is_dir():
            raise SourceError(spec.name, f"{git.root} is a git repository but not a DVC one (no .dvc folder)",
                              hint="run `dvc init` there, or point `repo` at the DVC repository")
        return _read(spec, git, progress)


def _check_options(spec: SourceSpec) -> None:
    branches, limit = spec.options.get("branches"), spec.options.get("max_commits")
    if branches is not None and (not isinstance(branches, list) or not all(isinstance(b, str) for b in branches)):
        raise SourceError(spec.name, f"`branches` must be a list of branch names, not {branches!r}",
                          hint='branches = ["main"]')
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise SourceError(spec.name, f"`max_commits` must be a positive whole number, not {limit!r}")


def _read(spec: SourceSpec, git: Git, progress: Progress) -> SourceBatch:
    notes: list[str] = []
    if git.is_shallow():
        notes.append(f"{git.root} is a shallow clone: executions before its oldest commit are missing "
                     "(`git fetch --unshallow` reads them)")
    head = git.head()
    tags = [t for t in git.refs("refs/tags")]
    events = [e for e in map(parse_tag, tags) if e is not None]
    branches = spec.options.get("branches")
    progress("reading history", 0, None)
    history = read_history(git, branches=branches, limit=spec.options.get("max_commits"),
                           also=[head or "", *{e.commit for e in events}])
    try:
        workspace = read_workspace(git)
    except DvcFileError as exc:
        raise SourceError(spec.name, f"{git.root / exc.path}{'' if exc.line is None else f':{exc.line}:{exc.column}'}: "
                          f"{str(exc).split(': ', 1)[-1]}") from None
    runs = executions(history, workspace, head)
    progress("reading history", len(history.commits), len(history.commits))

    cache = Cache.of_repo(git.root)
    graph = Graph(spec.name, project=git.root.name, cache=cache,
                  kinds=Kinds.of([*history.snapshots.values(), workspace]))
    for i, commit in enumerate(reversed(history.commits)):  # oldest first: earliest times win cheaply
        snap = history.snapshots.get(commit.sha)
        if snap is not None:
            graph.snapshot_files(snap, commit)
    children: dict[str, list[str]] = {}
    # every metrics file the runs may read, in one batch rather than a round trip each
    wanted = sorted({f"{r.snapshot.rev}:{p}" for r in runs if r.origin != "workspace" for p in r.snapshot.metrics_paths}
                    | {f"{e.commit}:{p}" for e in history.experiments if e.commit in history.snapshots
                       for p in history.snapshots[e.commit].metrics_paths})
    known = {name: data for name, _, data in git.blobs(wanted)}
    for i, run in enumerate(runs):
        read, listdir = _files_at(git, run.snapshot.rev, run.origin == "workspace", known)
        rid = graph.execution(run, read, listdir)
        if run.experiment is not None:
            children.setdefault(run.experiment.commit, []).append(rid)
        if i % 500 == 0:
            progress("stage executions", i, len(runs))
    for exp in history.experiments:
        snap = history.snapshots.get(exp.commit)
        if snap is not None:
            read, listdir = _files_at(git, exp.commit, False, known)
            graph.experiment(exp, snap, history.commit_info.get(exp.commit), children.get(exp.commit, []),
                             read, listdir)
    if branches is None and spec.options.get("max_commits") is None:
        _run_cache(graph, history, workspace, runs, cache, notes)
    else:  # its entries would repeat executions of the history left out
        notes.append("the run cache is read only with the whole history (no `branches`, no `max_commits`)")
    produced_by: dict[str, str] = {}
    for (src, dst, kind), edge in sorted(graph.edges.items(), key=lambda kv: str(kv[1]["created_at"])):
        if kind == "output":
            produced_by.setdefault(dst, src)
    for version in fold(events):
        graph.version(version, history.snapshots.get(version.commit), produced_by)

    notes += [str(p) for p in history.problems]
    if cache.root is None:
        notes.append(f"no DVC cache at {git.root / '.dvc' / 'cache'}: directory outs keep only their directory "
                     "hash, and DVC 2 hashes stay line-ending-normalised (md5-d2u)")
    elif graph.dirs_without_listing:
        notes.append(f"{len(graph.dirs_without_listing)} directory outs are not in the DVC cache: they keep only "
                     "their directory hash")
    state = {
        "locations": pl.DataFrame(
            [(spec.name, c, p, n, str(git.root)) for c, p, n in graph.locations], schema=LOCATION_SCHEMA,
            orient="row"
        ).unique().sort("commit", "path", "node_id"),
        "commit_states": _commit_states(git, history, branches, spec.name),
    }
    cursor = {"version": 1, "head": head, "commits": len(history.commits)}
    return SourceBatch(tables=graph.tables(), cursor=cursor, state=state, notes=notes)


def _run_cache(graph: Graph, history: History, workspace: Snapshot, runs: list[Execution], cache: Cache,
               notes: list[str]) -> None:
    """Executions DVC's run cache remembers that no commit, experiment or the workspace records."""
    stages: dict[str, Stage] = {}
    for commit in reversed(history.commits):  # oldest first: the newest definition of a command wins
        snap = history.snapshots.get(commit.sha)
        stages.update({s.cmd: s for s in snap.stages.values() if s.cmd} if snap else {})
    stages.update({s.cmd: s for s in workspace.stages.values() if s.cmd})
    known = {content_key(s.cmd, s.deps, s.outs, s.params)
             for snap in [*history.snapshots.values(), workspace] for s in snap.stages.values()}
    known |= {content_key(r.stage.cmd, r.stage.deps, r.stage.outs, r.stage.params) for r in runs}
    unmatched = 0
    for cached in read_run_cache(cache.root):
        if isinstance(cached, DvcFileError):
            notes.append(f"skipped run-cache entry {cached}")
            continue
        stage = resolve(cached, stages)
        if stage is None:
            unmatched += 1
        elif content_key(stage.cmd, stage.deps, stage.outs, stage.params) not in known:
            graph.cached(stage, cached.entry, cached.mtime, workspace)
    if unmatched:
        notes.append(f"{unmatched} run-cache entries name a command no stage in the history has: left out")


def _files_at(git: Git, rev: str, workspace: bool, known: dict[str, bytes | None]) -> tuple[Reader, Lister]:
    """Read files and list folders at a revision through git, or on disk for the workspace."""
    if workspace or rev == WORKSPACE:
        root = git.root

        def read_disk(path: str) -> bytes | None:
            file = root / path
            return file.read_bytes() if file.is_file() else None

        def list_disk(path: str) -> list[tuple[str, bool]]:
            folder = root / path
            return [(e.name, e.is_dir()) for e in os.scandir(folder)] if folder.is_dir() else []

        return read_disk, list_disk

    def read_git(path: str) -> bytes | None:
        name = f"{rev}:{path}"
        if name not in known:
            known[name] = next(iter(git.blobs([name])))[2]
        return known[name]

    def list_git(path: str) -> list[tuple[str, bool]]:
        return git.tree(f"{rev}:{path}")

    return read_git, list_git


def _commit_states(git: Git, history: History, branches: list[str] | None, source: str) -> pl.DataFrame:
    """Each commit -> the latest commit at or before it (first parents) that changed DVC files:
    the DVC state a tool running at that commit saw."""
    heads = [r.name for r in git.refs("refs/heads")] if branches is None else [f"refs/heads/{b}" for b in branches]
    parents = git.parents(heads or ["HEAD"] if git.head() else [])
    changed = {c.sha for c in history.commits}
    state: dict[str, str | None] = {}
    for sha in reversed(list(parents)):  # rev-list lists children first
        parent = parents[sha]
        state[sha] = sha if sha in changed else state.get(parent) if parent else None
    rows = [(source, c, s) for c, s in state.items() if s is not None]
    return pl.DataFrame(rows, schema=COMMIT_STATE_SCHEMA, orient="row").sort("commit")
