"""The contract between a connector and the rest of braid.

A connector turns one configured source into a `SourceBatch`: frames in `unify.schema`'s
shapes, a cursor for the next incremental read, and notes for the sync report. It knows
nothing of the catalog; the sync merges its batch with the previous generation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from .schema import TABLES, canonical, check_graph, empty

# columns that may hold a URL; `user:secret@` is removed before anything reaches the catalog
URL_COLUMNS: dict[str, tuple[str, ...]] = {"nodes": ("uri",), "runs": ("git_remote",)}
CREDENTIALS_RE = r"://[^/@\s]+@"

# (step, done, total): a connector reports progress; total is None when unknown
Progress = Callable[[str, int, int | None], None]


def no_progress(step: str, done: int, total: int | None) -> None:
    """A progress callback that shows nothing."""


@dataclass(frozen=True)
class SourceSpec:
    """One `[[sources]]` entry of braid.toml, validated."""

    name: str
    tool: str
    options: Mapping[str, Any]
    base_dir: Path = Path(".")

    def path(self, key: str) -> Path | None:
        """An option that names a path, resolved against the config file's folder."""
        value = self.options.get(key)
        return None if value is None else (self.base_dir / str(value)).resolve()


@dataclass(frozen=True)
class PreviousSync:
    """What the last successful sync of this source left: its cursor and state table."""

    cursor: Mapping[str, Any]
    state: Mapping[str, pl.DataFrame]


@dataclass
class SourceBatch:
    """Everything one source holds, or, for `partial` tables, the rows of `rewritten_runs`.

    A table named in `partial` holds rows only for the runs in `rewritten_runs`; the sync
    keeps the previous generation's rows for every other run still present in `runs`.
    """

    tables: dict[str, pl.DataFrame]
    cursor: dict[str, Any] = field(default_factory=dict)
    state: dict[str, pl.DataFrame] = field(default_factory=dict)
    partial: frozenset[str] = frozenset()
    rewritten_runs: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = set(self.tables) - set(TABLES)
        if unknown:
            raise ValueError(f"unknown tables {sorted(unknown)}")
        for name in TABLES:
            frame = self.tables.get(name)
            frame = empty(name) if frame is None else canonical(name, frame)
            self.tables[name] = frame.with_columns(
                [pl.col(c).str.replace(CREDENTIALS_RE, "://") for c in URL_COLUMNS.get(name, ())])
        check_graph(self.tables["nodes"], self.tables["edges"])


class Connector(Protocol):
    """Reads one tool's source into a batch."""

    def __call__(
        self, spec: SourceSpec, *, previous: PreviousSync | None, progress: Progress
    ) -> SourceBatch: ...
