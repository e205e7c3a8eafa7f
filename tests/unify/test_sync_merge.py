"""How a partial batch merges with the previous generation: replaced, kept, or appended rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from braid.unify.schema import canonical
from braid.unify.source import SourceBatch
from braid.unify.store import FileRef, SourceEntry, Writer, load_frame
from braid.unify.sync import merge

T = datetime(2026, 1, 1, tzinfo=UTC)


def points(run: str, steps: range) -> pl.DataFrame:
    return pl.DataFrame({"run_id": [run] * len(steps), "key": ["loss"] * len(steps), "step": list(steps),
                         "timestamp": [T] * len(steps), "value": [float(s) for s in steps]})


def previous(tmp_path: Path) -> tuple[SourceEntry, Writer]:
    writer = Writer(tmp_path)
    runs = canonical("runs", pl.DataFrame({"id": ["s:run/a", "s:run/b", "s:run/c"]}))
    metrics = canonical("metrics", pl.concat([points("s:run/a", range(3)), points("s:run/b", range(3)),
                                              points("s:run/c", range(2))]))
    entry = SourceEntry(tool="x", tables={"runs": writer.write_frame("s", "runs", runs),
                                          "metrics": writer.write_frame("s", "metrics", metrics)})
    return entry, writer


def test_kept_replaced_appended_and_dropped_runs(tmp_path: Path) -> None:
    entry, writer = previous(tmp_path)
    # a: unchanged (kept); b: read again whole (rewritten); c: gone; d: new; a also grew by two steps
    batch = SourceBatch(
        tables={"runs": pl.DataFrame({"id": ["s:run/a", "s:run/b", "s:run/d"]}),
                "metrics": pl.concat([points("s:run/a", range(3, 5)), points("s:run/b", range(1)),
                                      points("s:run/d", range(1))])},
        partial=frozenset({"metrics"}), rewritten_runs=frozenset({"s:run/b", "s:run/d"}),
    )
    merged = merge(batch, entry, writer.root)["metrics"]
    assert isinstance(merged, pl.DataFrame)
    steps = {run: sorted(g["step"].to_list()) for (run,), g in merged.group_by("run_id")}
    assert steps == {"s:run/a": [0, 1, 2, 3, 4], "s:run/b": [0], "s:run/d": [0]}


def test_nothing_new_reuses_the_previous_file_and_new_rows_do_not(tmp_path: Path) -> None:
    entry, writer = previous(tmp_path)
    runs = pl.DataFrame({"id": ["s:run/a", "s:run/b", "s:run/c"]})
    same = SourceBatch(tables={"runs": runs}, partial=frozenset({"metrics"}))
    assert merge(same, entry, writer.root)["metrics"] == entry.tables["metrics"]
    grown = SourceBatch(tables={"runs": runs, "metrics": points("s:run/c", range(2, 4))},
                        partial=frozenset({"metrics"}))
    merged = merge(grown, entry, writer.root)["metrics"]
    assert not isinstance(merged, FileRef)
    old = load_frame(writer.root, entry.tables["metrics"])
    assert merged.height == old.height + 2
