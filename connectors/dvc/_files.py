"""DVC's files as data: dvc.lock, dvc.yaml and `.dvc` files parsed into stages.

A `Stage` is what one lock entry (or one `.dvc` file) records: its command, its deps and
outs with their hashes, and its params. Paths are made relative to the repository root, so a
stage in `sub/dvc.yaml` with `wdir: ..` names the same files as the root pipeline does.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

try:  # libyaml parses lock files about ten times faster
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader  # type: ignore[assignment]

StageKind = Literal["stage", "add", "import", "import-url"]
PIPELINE_FILES = ("dvc.yaml", "dvc.lock")


class DvcFileError(ValueError):
    """A DVC file that cannot be read: names the file and, where YAML says, line and column."""

    def __init__(self, path: str, message: str, *, line: int | None = None, column: int | None = None) -> None:
        where = path if line is None else f"{path}:{line}:{column}"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.column = path, line, column


@dataclass(frozen=True)
class Entry:
    """One dep or out: a file or directory with its hash, an import, or a URL."""

    path: str  # repo-relative for workspace files; the URL (or absolute path) for import-url
    md5: str | None = None  # hex; a directory's ends with `.dir`
    size: int | None = None
    nfiles: int | None = None
    etag: str | None = None
    legacy: bool = False  # DVC 2: no `hash:` key, md5 of line-ending-normalised text
    cache: bool = True
    repo: Mapping[str, Any] | None = None  # `dvc import`: url, rev, rev_lock
    external: bool = False  # `dvc import-url`: path is a URL

    @property
    def is_dir(self) -> bool:
        return bool(self.md5 and self.md5.endswith(".dir"))


@dataclass(frozen=True)
class Stage:
    """One stage's last execution as a lock entry (or a `.dvc` file) records it."""

    name: str  # `prep`, `featurize@a`, `sub/dvc.yaml:prep`, or the `.dvc` file's path
    file: str  # the lock or .dvc file it came from
    kind: StageKind
    cmd: str | None = None
    deps: tuple[Entry, ...] = ()
    outs: tuple[Entry, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)  # flat `file:key` or `key` -> value
    signature: str = ""  # equal signatures: the same execution seen again
    base: str = ""  # the folder its recorded paths are relative to (dvc.yaml's folder + wdir)


@dataclass(frozen=True)
class Definition:
    """What dvc.yaml says about a stage: settings the lock does not record."""

    wdir: str = "."
    frozen: bool = False
    desc: str | None = None
    metrics: frozenset[str] = frozenset()  # repo-relative paths
    plots: frozenset[str] = frozenset()
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pipeline:
    """A dvc.yaml: its stages' definitions, top-level metrics and plots, and artifacts."""

    stages: Mapping[str, Definition] = field(default_factory=dict)
    metrics: frozenset[str] = frozenset()
    plots: frozenset[str] = frozenset()
    artifacts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> path, type, desc...


def load_yaml(data: bytes, path: str) -> Any:
    try:
        return yaml.load(data, Loader=SafeLoader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise DvcFileError(path, f"not valid YAML: {exc.problem}",
                           line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise DvcFileError(path, f"not valid YAML: {exc}") from None


def _mapping(value: Any, path: str, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DvcFileError(path, f"{what} must be a mapping, not {type(value).__name__}")
    return value


def join(base: str, rel: str) -> str:
    """`rel` under the folder `base`, normalised; stays a relative path."""
    return posixpath.normpath(posixpath.join(base, rel)) if base not in ("", ".") else posixpath.normpath(rel)


def _is_external(path: str) -> bool:
    return "://" in path or path.startswith("/") or (len(path) > 2 and path[1] == ":")


def _entry(raw: Any, base: str, path: str, *, out: bool) -> Entry:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("path"), str):
        raise DvcFileError(path, f"a {'out' if out else 'dep'} without a path: {raw!r}")
    target = raw["path"]
    external = _is_external(target)
    imported = isinstance(raw.get("repo"), Mapping)  # a path inside the source repo
    md5 = raw.get("md5")
    size = raw.get("size")
    return Entry(
        path=target if external or imported else join(base, target),
        md5=str(md5) if md5 is not None else None,
        size=int(size) if isinstance(size, int) else None,
        nfiles=raw.get("nfiles"),
        etag=str(raw["etag"]) if raw.get("etag") is not None else None,
        legacy=md5 is not None and "hash" not in raw,
        cache=bool(raw.get("cache", True)),
        repo=dict(raw["repo"]) if imported else None,
        external=external and not imported,
    )


def _signature(raw: Any) -> str:
    return hashlib.md5(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()  # noqa: S324


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested params as dotted keys: {"train": {"lr": 0.1}} -> {"train.lr": 0.1}."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value} if prefix else {}


def parse_lock(data: bytes, path: str, pipeline: Pipeline | None = None,
               memo: dict[tuple[str, bytes, str], Stage] | None = None) -> list[Stage]:
    """The stages a dvc.lock records, paths resolved against each stage's wdir.

    With `memo`, each stage's block of text is parsed once across all the lock files read:
    in a long history most commits change one stage and repeat the others byte for byte.
    """
    blocks = _stage_blocks(data) if memo is not None else None
    if blocks is None:
        return _parse_lock_doc(data, path, pipeline)
    defs = pipeline.stages if pipeline else {}
    result = []
    for name, block in blocks:
        definition = defs.get(name) or defs.get(name.split("@")[0]) or Definition()
        key = (path, block, definition.wdir)
        if key not in memo:  # type: ignore[operator]
            try:
                parsed = _parse_lock_doc(b"stages:\n" + block, path, pipeline)
            except DvcFileError:  # reparse whole, for the error's true line and column
                return _parse_lock_doc(data, path, pipeline)
            if len(parsed) != 1:
                return _parse_lock_doc(data, path, pipeline)
            memo[key] = parsed[0]  # type: ignore[index]
        result.append(memo[key])  # type: ignore[index]
    return result


LOCK_HEADER = b"schema: '2.0'\nstages:\n"
STAGE_START = re.compile(rb"^  ([A-Za-z0-9_@.\-/:]+):\n", re.M)


def _stage_blocks(data: bytes) -> list[tuple[str, bytes]] | None:
    """The lock's stages as (name, text) as DVC writes them, or None for any other layout."""
    if not data.startswith(LOCK_HEADER):
        return None
    body = data[len(LOCK_HEADER):]
    starts = list(STAGE_START.finditer(body))
    if not starts or starts[0].start() != 0:
        return None
    ends = [m.start() for m in starts[1:]] + [len(body)]
    return [(m.group(1).decode(), body[m.start():end]) for m, end in zip(starts, ends, strict=True)]


def _parse_lock_doc(data: bytes, path: str, pipeline: Pipeline | None) -> list[Stage]:
    doc = _mapping(load_yaml(data, path), path, "dvc.lock")
    folder = posixpath.dirname(path)
    prefix = "" if folder == "" else f"{folder}/dvc.yaml:"
    # DVC 1 lock files are the stages mapping itself, without `schema` and `stages`
    stages = _mapping(doc.get("stages"), path, "stages") if "schema" in doc or "stages" in doc else doc
    defs = pipeline.stages if pipeline else {}
    result = []
    for name, raw in stages.items():
        raw = _mapping(raw, path, f"stage {name}")
        definition = defs.get(name) or defs.get(str(name).split("@")[0]) or Definition()
        base = join(folder, definition.wdir)
        params: dict[str, Any] = {}
        for file, values in _mapping(raw.get("params"), path, "params").items():
            for key, value in flatten(_mapping(values, path, f"params of {file}")).items():
                params[key if posixpath.basename(file) == "params.yaml" else f"{file}:{key}"] = value
        result.append(Stage(
            name=f"{prefix}{name}",
            file=path,
            kind="stage",
            cmd=_command(raw.get("cmd")),
            deps=tuple(_entry(d, base, path, out=False) for d in raw.get("deps") or ()),
            outs=tuple(_entry(o, base, path, out=True) for o in raw.get("outs") or ()),
            params=params,
            signature=_signature(raw),
            base=base,
        ))
    return result


def parse_dvcfile(data: bytes, path: str) -> Stage:
    """A `.dvc` file: data added with `dvc add`, or an import."""
    doc = _mapping(load_yaml(data, path), path, ".dvc file")
    base = posixpath.dirname(path)
    deps = tuple(_entry(d, base, path, out=False) for d in doc.get("deps") or ())
    outs = tuple(_entry(o, base, path, out=True) for o in doc.get("outs") or ())
    if not outs:
        raise DvcFileError(path, "no outs")
    kind: StageKind = "add"
    if any(d.repo for d in deps):
        kind = "import"
    elif deps:
        kind = "import-url"
    return Stage(name=path, file=path, kind=kind, cmd=_command(doc.get("cmd")), deps=deps, outs=outs,
                 signature=_signature(doc))


def parse_pipeline(data: bytes, path: str) -> Pipeline:
    """A dvc.yaml's stage definitions, metrics, plots and artifacts (paths repo-relative)."""
    doc = _mapping(load_yaml(data, path), path, "dvc.yaml")
    folder = posixpath.dirname(path)
    stages: dict[str, Definition] = {}
    for name, raw in _mapping(doc.get("stages"), path, "stages").items():
        raw = _mapping(raw, path, f"stage {name}")
        body = _mapping(raw.get("do"), path, "do") if ("foreach" in raw or "matrix" in raw) and "do" in raw else raw
        wdir = body.get("wdir", ".")
        wdir = "." if not isinstance(wdir, str) or "${" in wdir else wdir
        base = join(folder, wdir)
        stages[str(name)] = Definition(
            wdir=wdir,
            frozen=bool(body.get("frozen", False)),
            desc=body.get("desc") if isinstance(body.get("desc"), str) else None,
            metrics=_paths(body.get("metrics"), base),
            plots=_paths(body.get("plots"), base),
            meta=body.get("meta") if isinstance(body.get("meta"), Mapping) else {},
        )
    artifacts = {}
    for name, raw in _mapping(doc.get("artifacts"), path, "artifacts").items():
        raw = dict(_mapping(raw, path, f"artifact {name}"))
        if isinstance(raw.get("path"), str) and not _is_external(raw["path"]):
            raw["path"] = join(folder, raw["path"])
        artifacts[str(name)] = raw
    return Pipeline(stages, _paths(doc.get("metrics"), folder), _paths(doc.get("plots"), folder), artifacts)


def parse_artifacts_yaml(data: bytes, path: str) -> dict[str, Mapping[str, Any]]:
    """GTO's artifacts.yaml: name -> path, type, description."""
    doc = _mapping(load_yaml(data, path), path, "artifacts.yaml")
    folder = posixpath.dirname(path)
    out = {}
    for name, raw in doc.items():
        raw = dict(_mapping(raw, path, f"artifact {name}"))
        if isinstance(raw.get("path"), str) and not _is_external(raw["path"]):
            raw["path"] = join(folder, raw["path"])
        out[str(name)] = raw
    return out


def _paths(value: Any, base: str) -> frozenset[str]:
    """Paths from a metrics/plots list: strings, or one-key mappings with options."""
    out = set()
    for item in value or ():
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, Mapping):
            out.update(str(k) for k in item)
    return frozenset(p if _is_external(p) else join(base, p) for p in out)


def _command(cmd: Any) -> str | None:
    if cmd is None:
        return None
    return " && ".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)
