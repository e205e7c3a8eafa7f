"""Metrics and params files a stage wrote: DVC metrics files and dvclive's folder.

dvclive writes `<dir>/metrics.json` (latest values), `<dir>/params.yaml` and one
`<dir>/plots/metrics/<name>.tsv` per metric (`step`, `<name>`, optional `timestamp`): the
history. Files are read from the commit that records the execution (or from the DVC cache by
their md5, or from disk for the workspace), never by checking anything out.
"""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ._files import DvcFileError, flatten, load_yaml

# reads the bytes of a repo path at the execution's revision, or None
Reader = Callable[[str], bytes | None]
# lists a folder at the execution's revision: (name, is folder) entries
Lister = Callable[[str], list[tuple[str, bool]]]


@dataclass(frozen=True)
class Point:
    key: str
    step: int
    value: float
    timestamp_ms: int | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def metrics_file(data: bytes, path: str) -> dict[str, float]:
    """A metrics file's numeric values, nested keys dotted (JSON, YAML or TOML-free)."""
    try:
        doc = json.loads(data) if path.endswith(".json") else load_yaml(data, path)
    except (ValueError, DvcFileError):
        return {}
    return {k: v for k, v in ((k, _number(v)) for k, v in flatten(doc).items()) if v is not None}


def history_tsv(data: bytes, key: str) -> list[Point]:
    """One dvclive history file: a row per step."""
    points = []
    reader = csv.DictReader(io.StringIO(data.decode("utf-8", errors="replace")), delimiter="\t")
    for row in reader:
        raw = row.get(posixpath.basename(key))
        if raw is None:  # the value column is named after the metric's last path part
            values = [v for k, v in row.items() if k not in ("step", "timestamp")]
            raw = values[0] if values else None
        try:
            value = float(raw) if raw is not None else math.nan
            step = int(float(row.get("step") or 0))
        except ValueError:
            continue
        stamp = row.get("timestamp")
        points.append(Point(key, step, value, int(float(stamp)) if stamp else None))
    return points


def dvclive_dirs(paths: Iterable[str]) -> set[str]:
    """dvclive folders among metrics paths: those whose file is `<dir>/metrics.json`."""
    return {posixpath.dirname(p) for p in paths if posixpath.basename(p) == "metrics.json" and posixpath.dirname(p)}


def dvclive_history(folder: str, read: Reader, listdir: Lister) -> list[Point]:
    """Every `<folder>/plots/metrics/**.tsv` as history points, keys relative to that folder."""
    base = f"{folder}/plots/metrics"
    points: list[Point] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        for name, is_dir in listdir(f"{base}/{rel}".rstrip("/")):
            child = f"{rel}/{name}" if rel else name
            if is_dir:
                stack.append(child)
            elif name.endswith(".tsv"):
                data = read(f"{base}/{child}")
                if data is not None:
                    points.extend(history_tsv(data, child.removesuffix(".tsv")))
    return points


def dvclive_params(folder: str, read: Reader) -> dict[str, Any]:
    data = read(f"{folder}/params.yaml")
    if data is None:
        return {}
    try:
        return flatten(load_yaml(data, f"{folder}/params.yaml"))
    except DvcFileError:
        return {}
