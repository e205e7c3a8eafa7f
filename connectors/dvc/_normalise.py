"""DVC's history as braid's graph: stage executions, data versions, experiments, GTO versions.

Ids:
    <src>:run/<commit>/<stage>           a stage executed in a commit (or an experiment's commit)
    <src>:run/workspace/<stage>          executed in the workspace, not committed yet
    <src>:run/exp/<commit>               an experiment (parent of its stage runs)
    <src>:dataset/<path>@<md5>           a version of a file or directory (`@<md5>.dir`)
    <src>:model/<path>@<md5>             the same, for paths that dvc.yaml's artifacts call models
    <src>:artifact/<path>@<md5>          metrics and plots files, and git-tracked deps (code)
    <src>:dataset/<url>@<md5|etag>       a `dvc import-url` source
    <src>:dataset/<repo url>/<path>@<rev_lock>   a `dvc import` source at its exact commit
    <src>:model_version/<name>/<version> a GTO version
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from braid.unify.ids import code_id, is_commit, node_id

from ._cache import Cache
from ._files import Entry, Stage
from ._git import Commit
from ._gto import Version
from ._history import Execution, Experiment, Snapshot
from ._metrics import Lister, Point, Reader, dvclive_dirs, dvclive_history, dvclive_params, metrics_file

TOOL = "dvc"


def _time(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def _value(value: Any) -> str:
    """Params as text: strings as they are, the rest as JSON (true, 0.1, [1, 2])."""
    return value if isinstance(value, str) else json.dumps(value)


def _json(attrs: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in attrs.items() if v not in (None, {}, [], "")}, sort_keys=True, default=str)


@dataclass
class Graph:
    """Rows accumulated while walking the history; each node kept once, with its earliest time."""

    source: str
    project: str
    cache: Cache
    kinds: Kinds
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    params: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    registry: list[dict[str, Any]] = field(default_factory=list)
    locations: list[tuple[str, str, str]] = field(default_factory=list)
    dirs_without_listing: set[str] = field(default_factory=set)
    dir_files: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # dir node -> (file node, path)

    # -- nodes and edges -------------------------------------------------------------------
    def node(self, id_: str, when: datetime | None, **row: Any) -> str:
        known = self.nodes.get(id_)
        if known is None:
            self.nodes[id_] = {"id": id_, "tool": TOOL, "source": self.source, "created_at": when, **row}
        elif when is not None and (known["created_at"] is None or when < known["created_at"]):
            known["created_at"] = when
        return id_

    def edge(self, src: str, dst: str, kind: str, when: datetime | None, **attrs: Any) -> None:
        key = (src, dst, kind)
        known = self.edges.get(key)
        if known is None:
            self.edges[key] = {"src": src, "dst": dst, "kind": kind, "source": self.source, "created_at": when,
                               "attrs": _json(attrs) if attrs else None}
        elif when is not None and (known["created_at"] is None or when < known["created_at"]):
            known["created_at"] = when

    def code(self, sha: str, when: datetime | None) -> str | None:
        if not is_commit(sha):
            return None
        cid = code_id(sha)
        if cid not in self.nodes:
            self.nodes[cid] = {"id": cid, "kind": "code", "tool": None, "source": self.source,
                               "name": sha[:12], "created_at": when}
        return cid

    # -- data versions ---------------------------------------------------------------------
    def entry(self, entry: Entry, snap: Snapshot, when: datetime | None, *, out: Entry | None = None) -> str:
        """The node for a dep or out as recorded at this snapshot."""
        kind = self.kinds(entry.path) if not (entry.repo or entry.external) else "dataset"
        if entry.repo:  # `dvc import`: the source repo's file at its exact commit
            url, rev_lock = str(entry.repo.get("url", "")).rstrip("/"), str(entry.repo.get("rev_lock", ""))
            native = f"{url}/{entry.path}@{rev_lock or 'unlocked'}"
        elif entry.external:  # `dvc import-url`
            native = f"{entry.path}@{entry.md5 or entry.etag or 'unhashed'}"
        else:
            native = f"{entry.path}@{entry.md5 or 'unhashed-' + snap.rev[:12]}"
        nid = node_id(self.source, kind, native)
        known = self.nodes.get(nid)
        if known is not None:  # seen in another commit: only its earliest time may move
            earlier = when is not None and (known["created_at"] is None or when < known["created_at"])
            self.node(nid, when)
            if earlier and entry.is_dir and not (entry.repo or entry.external):
                self._expand(nid, entry, kind, when)  # and its files' (history is walked oldest first)
            return nid
        attrs: dict[str, Any] = {"path": entry.path, "md5": entry.md5, "nfiles": entry.nfiles,
                                 "etag": entry.etag, "cache": None if entry.cache else False}
        digest, size, uri = self._digest(entry), entry.size, entry.path
        if entry.repo:
            attrs |= {"repo": dict(entry.repo)}
            uri = f"{url}/{entry.path}"
            if out is not None:  # the dep holds the bytes the import copied
                digest, size = self._digest(out), out.size
        if entry.legacy:
            attrs["hash"] = "md5-d2u"
        self.node(nid, when, kind=kind, name=entry.path.rsplit("/", 1)[-1],
                  version=(entry.md5 or entry.etag or "")[:12] or None, digest=digest, size=size, uri=uri,
                  attrs=_json(attrs))
        if entry.is_dir and not (entry.repo or entry.external):
            self._expand(nid, entry, kind, when)
        return nid

    def _digest(self, entry: Entry) -> str | None:
        if entry.md5 is None:
            return f"etag:{entry.etag}" if entry.etag else None
        if entry.is_dir:
            return f"md5-dir:{entry.md5.removesuffix('.dir')}"
        if entry.legacy:  # DVC 2 normalised line endings before hashing; the cache has the bytes
            plain = self.cache.plain_md5(entry.md5)
            return f"md5:{plain}" if plain else f"md5-d2u:{entry.md5}"
        return f"md5:{entry.md5}"

    def _expand(self, dir_id: str, entry: Entry, kind: str, when: datetime | None) -> None:
        if dir_id in self.dir_files or dir_id in self.dirs_without_listing:
            for fid, _ in self.dir_files.get(dir_id, ()):  # seen before: only the earliest time may move
                self.edge(fid, dir_id, "part_of", when)
                self.node(fid, when)
            return
        listing = self.cache.listing(entry.md5 or "", legacy=entry.legacy)
        if listing is None:
            self.dirs_without_listing.add(dir_id)
            return
        for file in listing:
            path = f"{entry.path}/{file.relpath}"
            fid = self.node(node_id(self.source, kind, f"{path}@{file.md5}"), when, kind=kind,
                            name=posixpath.basename(path), version=file.md5[:12], digest=f"md5:{file.md5}",
                            size=file.size, uri=path, attrs=_json({"path": path, "md5": file.md5, "dir": entry.path}))
            self.edge(fid, dir_id, "part_of", when)
            self.dir_files.setdefault(dir_id, []).append((fid, path))

    def snapshot_files(self, snap: Snapshot, commit: Commit) -> None:
        """Every DVC-tracked file at a commit: `dvc add` outs and stage outs, with where they are."""
        when = _time(commit.committed)
        for stage in snap.stages.values():
            for out in stage.outs:
                nid = self.entry(out, snap, when)
                self.locations.append((commit.sha, out.path, nid))
                for fid, path in self.dir_files.get(nid, ()):
                    self.locations.append((commit.sha, path, fid))

    # -- runs ------------------------------------------------------------------------------
    def execution(self, run: Execution, read: Reader, listdir: Lister) -> str:
        stage, snap, commit, exp = run.stage, run.snapshot, run.commit, run.experiment
        when = _time(commit.committed) if commit and run.origin != "workspace" else None
        sha = commit.sha if commit else ""
        native = f"workspace/{stage.name}" if run.origin == "workspace" else f"{sha}/{stage.name}"
        rid = node_id(self.source, "run", native)
        definition = _definition(stage, snap)
        code_sha = exp.baseline if exp else sha  # what the workspace was at when it ran
        attrs = {"stage": stage.name, "file": stage.file, "kind": stage.kind, "cmd": stage.cmd, "origin": run.origin,
                 "commit": sha if run.origin != "workspace" else None, "experiment": exp.name if exp else None,
                 "frozen": definition.frozen if definition else None, "desc": definition.desc if definition else None,
                 "wdir": definition.wdir if definition and definition.wdir != "." else None}
        self.node(rid, when, kind="run", name=stage.name, version=sha[:12] or None,
                  status="uncommitted" if run.origin == "workspace" else "completed",
                  user=commit.author if commit and run.origin != "workspace" else None, attrs=_json(attrs))
        self.runs.append({
            "id": rid, "tool": TOOL, "source": self.source, "project": self.project, "name": stage.name,
            "status": "uncommitted" if run.origin == "workspace" else "completed",
            "started_at": _time(commit.authored) if commit and run.origin != "workspace" else None,
            "user": commit.author if commit and run.origin != "workspace" else None,
            "git_commit": code_sha or None,
            "environment": _json({"cmd": stage.cmd, "lock_file": stage.file}),
        })
        cid = self.code(code_sha, _time(commit.committed) if commit else None)
        if cid:
            self.edge(cid, rid, "code", when)
        for dep in stage.deps:
            dep_out = stage.outs[0] if dep.repo and len(stage.outs) == 1 else None
            self.edge(self.entry(dep, snap, when, out=dep_out), rid, "input", when)
        for out in stage.outs:
            self.edge(rid, self.entry(out, snap, when), "output", when)
        for key, value in stage.params.items():
            self.params.append({"run_id": rid, "key": key, "value": _value(value), "source": self.source})
        self._metrics(rid, stage.outs, snap, when, read, listdir)
        return rid

    def cached(self, stage: Stage, entry: str, mtime: float, snap: Snapshot) -> str:
        """An execution only DVC's run cache remembers: never committed, or its commit is gone."""
        when = datetime.fromtimestamp(mtime, UTC)
        rid = node_id(self.source, "run", f"run-cache/{entry}")
        self.node(rid, when, kind="run", name=stage.name, status="cached",
                  attrs=_json({"stage": stage.name, "cmd": stage.cmd, "origin": "run-cache", "entry": stage.file}))
        self.runs.append({"id": rid, "tool": TOOL, "source": self.source, "project": self.project, "name": stage.name,
                          "status": "cached", "started_at": when,
                          "environment": _json({"cmd": stage.cmd, "run_cache_entry": stage.file})})
        for dep in stage.deps:
            self.edge(self.entry(dep, snap, when), rid, "input", when)
        for out in stage.outs:
            self.edge(rid, self.entry(out, snap, when), "output", when)
        for key, value in stage.params.items():
            self.params.append({"run_id": rid, "key": key, "value": _value(value), "source": self.source})
        return rid

    def experiment(self, exp: Experiment, snap: Snapshot, commit: Commit | None, children: list[str],
                   read: Reader, listdir: Lister) -> str:
        when = _time(commit.committed) if commit else None
        rid = node_id(self.source, "run", f"exp/{exp.commit}")
        self.node(rid, when, kind="run", name=exp.name, version=exp.commit[:12], status="completed",
                  user=commit.author if commit else None,
                  attrs=_json({"kind": "experiment", "ref": exp.ref, "commit": exp.commit, "baseline": exp.baseline}))
        self.runs.append({
            "id": rid, "tool": TOOL, "source": self.source, "project": self.project, "name": exp.name,
            "status": "completed", "started_at": _time(commit.authored) if commit else None,
            "user": commit.author if commit else None, "git_commit": exp.baseline or None,
            "environment": _json({"experiment_commit": exp.commit}),
        })
        cid = self.code(exp.baseline, None)
        if cid:
            self.edge(cid, rid, "code", when)
        for child in children:
            self.edge(rid, child, "parent_of", when)
        params: dict[str, Any] = {}
        for stage in snap.stages.values():
            params.update(stage.params)
        for key, value in params.items():
            self.params.append({"run_id": rid, "key": key, "value": _value(value), "source": self.source})
        self._metrics(rid, tuple(o for s in snap.stages.values() for o in s.outs), snap, when, read, listdir)
        return rid

    def _metrics(self, rid: str, written: tuple[Entry, ...], snap: Snapshot, when: datetime | None,
                 read: Reader, listdir: Lister) -> None:
        """The run's metrics files, and the dvclive folders it wrote into (history, params)."""
        stamp = int(when.timestamp() * 1000) if when else None
        declared = snap.metrics_paths
        outs = {o.path: o for o in written}
        files = [o for o in written if o.path in declared]
        # dvclive's folder is declared by its metrics.json; the run that owns it wrote its plots
        lives = {d for d in dvclive_dirs(declared) if any(_under(o.path, [d]) for o in written)}
        files += [Entry(f"{d}/metrics.json") for d in sorted(lives) if f"{d}/metrics.json" not in outs]
        points: list[Point] = []
        for folder in sorted(lives):
            points += dvclive_history(folder, self._reader(outs, read), listdir)
            for key, value in dvclive_params(folder, self._reader(outs, read)).items():
                self.params.append({"run_id": rid, "key": key, "value": _value(value), "source": self.source})
        with_history = {p.key for p in points}
        for file in files:
            data = self._reader(outs, read)(file.path)
            if data is None:
                continue
            for key, value in metrics_file(data, file.path).items():
                # dvclive's metrics.json also holds its own step counter: not a metric
                if key not in with_history and not (key == "step" and posixpath.dirname(file.path) in lives):
                    points.append(Point(key, 0, value, stamp))
        for p in points:
            self.metrics.append({"run_id": rid, "key": p.key, "step": p.step,
                                 "timestamp": p.timestamp_ms if p.timestamp_ms is not None else stamp,
                                 "value": p.value, "source": self.source})

    def _reader(self, outs: Mapping[str, Entry], read: Reader) -> Reader:
        """Read a path from git at the revision, or from the DVC cache when DVC cached it."""
        def reader(path: str) -> bytes | None:
            out = outs.get(path)
            if out is not None and out.cache and out.md5 and not out.is_dir:
                data = self.cache.read(out.md5, legacy=out.legacy)
                if data is not None:
                    return data
            return read(path)
        return reader

    # -- the registry ----------------------------------------------------------------------
    def version(self, version: Version, snap: Snapshot | None, produced_by: Mapping[str, str]) -> None:
        when = version.registered.time
        vid = node_id(self.source, "model_version", f"{version.name}/{version.version}")
        spec = (snap.artifacts.get(version.name) if snap else None) or {}
        model = None
        if snap is not None and isinstance(spec.get("path"), str):
            for stage in snap.stages.values():
                for out in stage.outs:
                    if out.path == spec["path"]:
                        model = self.entry(out, snap, when)
        self.node(vid, when, kind="model_version", name=version.name, version=version.version,
                  status=version.status, user=version.registered.author, uri=spec.get("path"),
                  updated_at=max((e.time for e in version.events if e.time), default=when),
                  attrs=_json({"commit": version.commit, "type": spec.get("type"), "desc": spec.get("desc"),
                               "labels": spec.get("labels"), "stages": sorted(version.stages)}))
        if model is not None:
            self.edge(model, vid, "registered_as", when)
        self.registry.append({
            "model_version_id": vid, "name": version.name, "version": version.version, "aliases": [],
            "stage": ",".join(sorted(version.stages)) or None, "model_id": model,
            "run_id": produced_by.get(model or ""),
            "events": json.dumps([e.as_json() for e in version.events]), "source": self.source,
        })

    # -- frames ----------------------------------------------------------------------------
    def tables(self) -> dict[str, pl.DataFrame]:
        metrics = pl.DataFrame(self.metrics, schema_overrides={"timestamp": pl.Int64}, infer_schema_length=None)
        if metrics.height:
            metrics = metrics.with_columns(pl.from_epoch("timestamp", "ms").dt.replace_time_zone("UTC"))
        return {
            "nodes": pl.DataFrame(list(self.nodes.values()), infer_schema_length=None),
            "edges": pl.DataFrame(list(self.edges.values()), infer_schema_length=None),
            "runs": pl.DataFrame(self.runs, infer_schema_length=None),
            "params": pl.DataFrame(self.params, infer_schema_length=None),
            "metrics": metrics,
            "registry": pl.DataFrame(self.registry, infer_schema_length=None,
                                     schema_overrides={"aliases": pl.List(pl.String)}),
        }


@dataclass(frozen=True)
class Kinds:
    """Which node kind a repo path is, decided once over every snapshot read, so one version of
    a file is one node whatever commit names it: a model if dvc.yaml's artifacts (or
    artifacts.yaml) ever call it one, an artifact if it is a metrics or plots file, a dataset
    if a stage or `dvc add` tracks it, else an artifact (a dep git tracks: code, config)."""

    models: frozenset[str] = frozenset()
    reports: frozenset[str] = frozenset()  # metrics and plots
    tracked: frozenset[str] = frozenset()

    @classmethod
    def of(cls, snapshots: Iterable[Snapshot]) -> Kinds:
        models: set[str] = set()
        reports: set[str] = set()
        tracked: set[str] = set()
        for snap in snapshots:
            models |= snap.model_paths
            reports |= snap.metrics_paths | snap.plots_paths
            tracked |= snap.out_paths
        return cls(frozenset(models), frozenset(reports), frozenset(tracked))

    def __call__(self, path: str) -> str:
        if path in self.models:
            return "model"
        if _under(path, self.reports):
            return "artifact"
        return "dataset" if _under(path, self.tracked) else "artifact"


def _under(path: str, folders: Iterable[str]) -> bool:
    """`path` is one of `folders` or inside one (checked by its parents, not by scanning)."""
    if path in folders:
        return True
    parent = path
    while "/" in parent:
        parent = parent.rsplit("/", 1)[0]
        if parent in folders:
            return True
    return False


def _definition(stage: Stage, snap: Snapshot) -> Any:
    if stage.kind != "stage":
        return None
    folder = posixpath.dirname(stage.file)
    pipeline = snap.pipelines.get(posixpath.join(folder, "dvc.yaml"))
    if pipeline is None:
        return None
    name = stage.name.rsplit(":", 1)[-1]
    return pipeline.stages.get(name) or pipeline.stages.get(name.split("@")[0])
