"""DVC's run cache: one YAML document per stage execution DVC saw, committed or not.

`.dvc/cache/runs/<2 hex>/<stage key>/<entry>` holds cmd, deps, params and outs with their
hashes, but not the stage's name. Entries equal to an execution git already records add
nothing; the others (a `dvc repro` whose results were never committed, an experiment since
removed) are executions git alone does not have.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._files import DvcFileError, Entry, Stage, flatten, join, load_yaml


@dataclass(frozen=True)
class CachedRun:
    key: str  # the stage key folder
    entry: str  # the entry file name: unique per execution
    stage: Stage
    mtime: float


def content_key(cmd: str | None, deps: Iterable[Entry], outs: Iterable[Entry], params: Mapping[str, Any]) -> str:
    """What makes two records the same execution, whichever file they came from."""
    return json.dumps([cmd, sorted((e.path, e.md5) for e in deps), sorted((e.path, e.md5) for e in outs),
                       sorted((k, json.dumps(v, default=str)) for k, v in params.items())])


def read_run_cache(cache_root: Path | None) -> Iterator[CachedRun | DvcFileError]:
    """Every readable entry; an unreadable one is yielded as its error, for the report."""
    if cache_root is None or not (cache_root / "runs").is_dir():
        return
    for file in sorted((cache_root / "runs").glob("*/*/*")):
        if not file.is_file():
            continue
        rel = file.relative_to(cache_root).as_posix()
        try:
            doc = load_yaml(file.read_bytes(), rel)
            if not isinstance(doc, Mapping):
                raise DvcFileError(rel, "not a run-cache entry")
            params: dict[str, Any] = {}
            for pfile, values in (doc.get("params") or {}).items():
                for key, value in flatten(values or {}).items():
                    params[key if pfile == "params.yaml" else f"{pfile}:{key}"] = value
            stage = Stage(
                name=str(doc.get("cmd", "")), file=rel, kind="stage", cmd=_cmd(doc.get("cmd")),
                deps=tuple(_entry(d) for d in doc.get("deps") or ()),
                outs=tuple(_entry(o) for o in doc.get("outs") or ()), params=params,
            )
        except (DvcFileError, OSError, TypeError, ValueError) as exc:
            yield exc if isinstance(exc, DvcFileError) else DvcFileError(rel, str(exc))
            continue
        yield CachedRun(file.parent.name, file.name, stage, file.stat().st_mtime)


def resolve(run: CachedRun, stages: Mapping[str, Stage]) -> Stage | None:
    """The entry as a stage of the pipeline: named, with repo-relative paths, by its command."""
    match = stages.get(run.stage.cmd or "")
    if match is None:
        return None
    def moved(entries: tuple[Entry, ...]) -> tuple[Entry, ...]:
        return tuple(Entry(join(match.base, e.path), e.md5, e.size, e.nfiles, legacy=e.legacy) for e in entries)
    return Stage(name=match.name, file=run.stage.file, kind="stage", cmd=run.stage.cmd, deps=moved(run.stage.deps),
                 outs=moved(run.stage.outs), params=run.stage.params, base=match.base)


def _entry(raw: Any) -> Entry:
    md5 = raw.get("md5")
    return Entry(path=str(raw["path"]), md5=str(md5) if md5 is not None else None, size=raw.get("size"),
                 nfiles=raw.get("nfiles"), legacy=md5 is not None and "hash" not in raw)


def _cmd(cmd: Any) -> str | None:
    if cmd is None:
        return None
    return " && ".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)
