"""A DVC repo's history as snapshots: the DVC files at each commit that changed them.

One `git log` finds the commits that touched a dvc.lock, dvc.yaml, `.dvc` file or
artifacts.yaml on any branch; one `git cat-file --batch` reads those files at each commit and
at its parents; each distinct blob is parsed once. A stage whose lock entry differs from every
parent's is an execution made in that commit.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from ._files import DvcFileError, Pipeline, Stage, parse_artifacts_yaml, parse_dvcfile, parse_lock, parse_pipeline
from ._git import Commit, Git

DVC_GLOBS = ("**/dvc.lock", "**/dvc.yaml", "**/*.dvc", "**/artifacts.yaml")
WORKSPACE = "workspace"
Origin = Literal["commit", "experiment", "workspace"]


@dataclass(frozen=True)
class Problem:
    """A DVC file in some past commit that could not be read; the rest of history still is."""

    commit: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"skipped {self.file} at commit {self.commit[:12]}: {self.message}"


@dataclass
class Snapshot:
    """The DVC files of one commit (or of the workspace), parsed."""

    rev: str
    stages: dict[str, Stage] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    artifacts: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    # filled once the snapshot is complete; asked for every dep and out
    @cached_property
    def metrics_paths(self) -> frozenset[str]:
        out: set[str] = set()
        for pipeline in self.pipelines.values():
            out |= pipeline.metrics
            for definition in pipeline.stages.values():
                out |= definition.metrics
        return frozenset(out)

    @cached_property
    def plots_paths(self) -> frozenset[str]:
        out: set[str] = set()
        for pipeline in self.pipelines.values():
            out |= pipeline.plots
            for definition in pipeline.stages.values():
                out |= definition.plots
        return frozenset(out)

    @cached_property
    def out_paths(self) -> frozenset[str]:
        return frozenset(o.path for s in self.stages.values() for o in s.outs)

    @cached_property
    def model_paths(self) -> frozenset[str]:
        return frozenset(a["path"] for a in self.artifacts.values()
                         if a.get("type") == "model" and isinstance(a.get("path"), str))


@dataclass(frozen=True)
class Experiment:
    ref: str
    name: str
    commit: str
    baseline: str


@dataclass(frozen=True)
class Execution:
    """A stage run: made in a commit, in an experiment's commit, or in the uncommitted workspace."""

    stage: Stage
    snapshot: Snapshot
    origin: Origin
    commit: Commit | None  # the commit (or experiment commit) that records it
    experiment: Experiment | None = None


@dataclass
class History:
    commits: list[Commit]
    snapshots: dict[str, Snapshot]
    experiments: list[Experiment]
    problems: list[Problem]
    commit_info: dict[str, Commit]


class SnapshotReader:
    """Parses DVC files at revisions, each distinct blob once."""

    def __init__(self, git: Git, paths: Iterable[str]) -> None:
        self.git = git
        self.paths = sorted(set(paths))
        self._parsed: dict[tuple[str, str, str], Any] = {}
        self._stages: dict[tuple[str, bytes, str], Stage] = {}  # lock stage blocks, parsed once
        self.problems: list[Problem] = []

    def read(self, revs: Iterable[str]) -> dict[str, Snapshot]:
        revs = list(dict.fromkeys(revs))
        files: dict[str, dict[str, tuple[str, bytes]]] = {r: {} for r in revs}
        names = [f"{rev}:{path}" for rev in revs for path in self.paths]
        for name, sha, data in self.git.blobs(names):
            if sha is not None and data is not None:
                rev, _, path = name.partition(":")
                files[rev][path] = (sha, data)
        return {rev: self._snapshot(rev, found) for rev, found in files.items()}

    def _snapshot(self, rev: str, found: Mapping[str, tuple[str, bytes]]) -> Snapshot:
        snap = Snapshot(rev)
        for path in sorted(p for p in found if posixpath.basename(p) == "dvc.yaml"):
            pipeline = self._parse(rev, path, found[path], "", lambda d, p: parse_pipeline(d, p))
            if pipeline is not None:
                snap.pipelines[path] = pipeline
                snap.artifacts.update(pipeline.artifacts)
        for path in sorted(p for p in found if posixpath.basename(p) == "artifacts.yaml"):
            described = self._parse(rev, path, found[path], "", lambda d, p: parse_artifacts_yaml(d, p))
            for name, spec in (described or {}).items():
                snap.artifacts.setdefault(name, spec)
        for path in sorted(p for p in found if posixpath.basename(p) == "dvc.lock"):
            yaml_path = posixpath.join(posixpath.dirname(path), "dvc.yaml")
            pipeline = snap.pipelines.get(yaml_path)
            yaml_sha = found[yaml_path][0] if yaml_path in found else ""
            stages = self._parse(rev, path, found[path], yaml_sha, lambda d, p: parse_lock(d, p, pipeline, self._stages))
            for stage in stages or ():
                snap.stages[stage.name] = stage
        for path in sorted(p for p in found if p.endswith(".dvc")):
            stage = self._parse(rev, path, found[path], "", parse_dvcfile)
            if stage is not None:
                snap.stages[stage.name] = stage
        return snap

    def _parse(self, rev: str, path: str, blob: tuple[str, bytes], extra: str, parse: Any) -> Any:
        key = (path, blob[0], extra)
        if key not in self._parsed:
            try:
                self._parsed[key] = parse(blob[1], path)
            except DvcFileError as exc:
                self._parsed[key] = exc
        value = self._parsed[key]
        if isinstance(value, DvcFileError):
            if rev == WORKSPACE:
                raise value
            self.problems.append(Problem(rev, path, str(value).removeprefix(f"{path}: ")))
            return None
        return value


def read_history(git: Git, *, branches: Iterable[str] | None = None, limit: int | None = None,
                 also: Iterable[str] = ()) -> History:
    """Every commit that touched DVC files on the chosen branches (all by default), with
    snapshots of it and its parents, and the experiments under refs/exps."""
    heads = [r.name for r in git.refs("refs/heads")] if branches is None else [f"refs/heads/{b}" for b in branches]
    if not heads and git.head():
        heads = ["HEAD"]  # a detached HEAD with no branch
    experiments = [
        Experiment(ref.name, ref.name.rsplit("/", 1)[-1], ref.target, "")
        for ref in git.refs("refs/exps")
        if not ref.name.startswith(("refs/exps/exec/", "refs/exps/stash")) and ref.name.count("/") >= 4
    ]
    revs = heads + [e.commit for e in experiments]
    paths = git.changed_paths(revs, DVC_GLOBS)
    commits = git.log(heads, paths=DVC_GLOBS, limit=limit)
    also = [rev for rev in also if rev]
    exp_commits = {c.sha: c for c in git.log([e.commit for e in experiments] + also, no_walk=True)}
    experiments = [Experiment(e.ref, e.name, e.commit,
                              exp_commits[e.commit].parents[0] if exp_commits[e.commit].parents else "")
                   for e in experiments if e.commit in exp_commits]
    info = {c.sha: c for c in commits} | exp_commits
    wanted = [c.sha for c in commits] + [p for c in commits for p in c.parents]
    wanted += [e.commit for e in experiments] + [e.baseline for e in experiments if e.baseline] + also
    reader = SnapshotReader(git, paths)
    snapshots = reader.read(wanted)
    return History(commits, snapshots, experiments, reader.problems, info)


def read_workspace(git: Git) -> Snapshot:
    """The DVC files as they are on disk now: a malformed one is an error, not a skip."""
    found: dict[str, tuple[str, bytes]] = {}
    for rel in git.workspace_files(DVC_GLOBS):
        file = git.root / rel
        if file.is_file():  # listed by the index but deleted from the disk: gone
            data = file.read_bytes()
            found[rel] = (_blob_key(data), data)
    return SnapshotReader(git, ())._snapshot(WORKSPACE, found)


def _blob_key(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(data).hexdigest()  # noqa: S324 - a parse-cache key


def executions(history: History, workspace: Snapshot | None, head: str | None) -> list[Execution]:
    """Stage executions: in each commit, each experiment, and the uncommitted workspace."""
    found = []
    for commit in history.commits:
        snap = history.snapshots.get(commit.sha)
        if snap is None:
            continue
        parents = [history.snapshots.get(p) for p in commit.parents]
        for stage in snap.stages.values():
            if stage.kind == "add":
                continue
            if not any(p is not None and _same(p, stage) for p in parents):
                found.append(Execution(stage, snap, "commit", commit))
    for exp in history.experiments:
        snap = history.snapshots.get(exp.commit)
        base = history.snapshots.get(exp.baseline)
        if snap is None:
            continue
        for stage in snap.stages.values():
            if stage.kind != "add" and not (base is not None and _same(base, stage)):
                found.append(Execution(stage, snap, "experiment", history.commit_info.get(exp.commit), exp))
    if workspace is not None:
        base = history.snapshots.get(head) if head else None
        for stage in workspace.stages.values():
            if stage.kind != "add" and not (base is not None and _same(base, stage)):
                found.append(Execution(stage, workspace, "workspace", history.commit_info.get(head or "")))
    return found


def _same(snapshot: Snapshot, stage: Stage) -> bool:
    other = snapshot.stages.get(stage.name)
    return other is not None and other.signature == stage.signature
