"""`braid sync`: read every configured source and commit one new catalog generation.

source -> connector -> merge with the previous generation -> identity resolution -> commit.
A source that fails keeps its previous tables; the others go on, and the report says which
failed and why. Nothing becomes visible before the manifest is committed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from .config import Config
from .errors import BraidError, UsageError
from .identity import COMMIT_STATE_SCHEMA, IDENTITY_SOURCE, LOCATION_SCHEMA, Located, same_as_edges
from .schema import TABLES, canonical
from .source import PreviousSync, Progress, SourceBatch, SourceSpec, no_progress
from .store import FileRef, Manifest, SourceEntry, Writer, load_frame


@dataclass
class SourceResult:
    name: str
    tool: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: BraidError | None = None


@dataclass
class SyncReport:
    catalog: Path
    generation: int
    changed: bool
    sources: list[SourceResult]
    same_as: int = 0

    @property
    def failed(self) -> list[SourceResult]:
        return [s for s in self.sources if s.error is not None]


def merge(batch: SourceBatch, previous: SourceEntry | None, root: Path) -> dict[str, pl.DataFrame | FileRef]:
    """The source's full tables: the batch, plus kept rows of partially read tables.

    A partial table keeps the previous rows of every run still alive and not rewritten, and
    adds the batch's rows: a connector that read only the new part of a run (a grown log)
    sends just those rows. One whose runs are exactly the previous generation's, none of them
    rewritten and no row added, is the previous file itself: neither read nor written again.
    """
    tables: dict[str, pl.DataFrame | FileRef] = dict(batch.tables)
    alive = batch.tables["runs"]["id"]
    for name in batch.partial:
        if previous is None or name not in previous.tables:
            raise ValueError(f"partial table {name} without a previous generation")
        if not batch.rewritten_runs and batch.tables[name].is_empty() \
                and alive.equals(load_frame(root, previous.tables["runs"])["id"]):
            tables[name] = previous.tables[name]
            continue
        run_col = TABLES[name].run_column
        old = load_frame(root, previous.tables[name])
        kept = old.filter(pl.col(run_col).is_in(alive.implode()) & ~pl.col(run_col).is_in(list(batch.rewritten_runs)))
        tables[name] = canonical(name, pl.concat([kept, batch.tables[name]]))
    return tables


def sync(
    config: Config, *, only: Sequence[str] = (), full: bool = False, progress: Progress = no_progress
) -> SyncReport:
    """Sync the configured sources (or those named in `only`) into the catalog."""
    specs = list(config.sources)
    unknown = sorted(set(only) - {s.name for s in specs})
    if unknown:
        raise UsageError(f"no source named {unknown[0]!r} in {config.path}",
                         hint="configured: " + ", ".join(s.name for s in specs))
    if not specs:
        raise UsageError("no sources configured", hint="run `braid init` to discover them")
    chosen = [s for s in specs if not only or s.name in only]
    with Writer(config.catalog) as writer:
        old = writer.previous or Manifest()
        new = Manifest(sources={k: v for k, v in old.sources.items()
                                if k in {s.name for s in specs}})
        results = []
        for spec in chosen:
            result = SourceResult(spec.name, spec.tool)
            results.append(result)
            started = time.perf_counter()
            try:
                entry = _sync_source(spec, old.sources.get(spec.name), writer, full=full, progress=progress)
            except BraidError as exc:
                result.error = exc
                continue
            finally:
                result.seconds = time.perf_counter() - started
            new.sources[spec.name] = entry
            result.rows = {k: v.rows for k, v in entry.tables.items()}
            result.notes = list(entry.cursor.get("notes", []))
        progress("linking identities", 0, None)
        identity = same_as_edges(_all_nodes(new, writer.root), _located(new, writer.root))
        progress("linking identities", identity.height, identity.height)
        new.sources[IDENTITY_SOURCE] = SourceEntry(
            tool="braid", tables={"edges": writer.write_frame(IDENTITY_SOURCE, "edges", identity)})
        changed = writer.commit(new)
        generation = writer.previous.generation if writer.previous else 0
    return SyncReport(config.catalog, generation, changed, results, same_as=identity.height)


def _sync_source(
    spec: SourceSpec, previous: SourceEntry | None, writer: Writer, *, full: bool, progress: Progress
) -> SourceEntry:
    from braid.connectors import connector

    prior = None
    if previous is not None and not full and previous.tool == spec.tool:
        state = {k: load_frame(writer.root, ref) for k, ref in previous.state.items()}
        prior = PreviousSync(previous.cursor, state)
    batch = connector(spec.tool)(spec, previous=prior, progress=_prefixed(progress, spec.name))
    tables = merge(batch, previous if prior else None, writer.root)
    return SourceEntry(
        tool=spec.tool,
        tables={name: frame if isinstance(frame, FileRef) else writer.write_frame(spec.name, name, frame)
                for name, frame in tables.items()},
        state={name: writer.write_frame(spec.name, f"state_{name}", frame) for name, frame in batch.state.items()},
        cursor={**batch.cursor, "notes": batch.notes},
    )


def _all_nodes(manifest: Manifest, root: Path) -> pl.DataFrame:
    frames = [load_frame(root, e.tables["nodes"]) for name, e in sorted(manifest.sources.items())
              if "nodes" in e.tables]
    return pl.concat(frames) if frames else canonical("nodes", pl.DataFrame())


def _located(manifest: Manifest, root: Path) -> Located | None:
    """What the path rule needs, when some source (a DVC repo) said where its files are."""
    entries = [e for name, e in sorted(manifest.sources.items()) if name != IDENTITY_SOURCE]
    with_paths = [e for e in entries if "locations" in e.state and "commit_states" in e.state]
    if not with_paths:
        return None
    def gather(frames: list[pl.DataFrame], schema: pl.Schema) -> pl.DataFrame:
        return pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    return Located(
        locations=gather([load_frame(root, e.state["locations"]) for e in with_paths], LOCATION_SCHEMA),
        commit_states=gather([load_frame(root, e.state["commit_states"]) for e in with_paths], COMMIT_STATE_SCHEMA),
        edges=pl.concat([load_frame(root, e.tables["edges"]).select("src", "dst", "kind") for e in entries
                         if "edges" in e.tables]),
        runs=pl.concat([load_frame(root, e.tables["runs"]).select("id", "git_commit") for e in entries
                        if "runs" in e.tables]),
    )


def _prefixed(progress: Progress, source: str) -> Progress:
    def report(step: str, done: int, total: int | None) -> None:
        progress(f"{source}: {step}", done, total)
    return report
