"""Benchmark: parse throughput of a W&B transaction log, and an incremental re-sync of a grown one.

Run from the project root:

    .venv/bin/python bench/bench_wandb_log.py [--rows N] [--dir PATH] [--repeat R]

    --rows N     history rows of the run (default 100000: ~38 MB, ~45 s to write)
    --dir PATH   reuse the run written there earlier by this script (written there if missing);
                 default: a temporary folder, deleted afterwards
    --repeat R   reads to take the best of (default 3)
    --cut F      where the grown file's first part ends, as a fraction of it (default 0.5)

What it does:
1. Writes one offline run with N history rows with the installed wandb SDK
   (`tests/fixtures/write_wandb_runs.py big N`, its own process, WANDB_MODE=offline).
2. In this process, best of --repeat: the raw read of the file (`read_bytes`), the framing
   (`_txlog.read_log`: chunks checked and joined into records), and a full sync of the run
   (`braid.connectors.wandb.read_source`: every record folded, the whole history decoded into
   metric points); each as MB/s of the file, the full sync's also by its CPU time (the
   process's, all threads), which other work on the machine disturbs less than wall time.
3. Incremental: a copy of the file cut at --cut (mid-record: a live run's file, truncated) is
   synced, then the whole file is put in its place and synced again with the first sync as
   `previous`: the time and the bytes read (the cursor's `bytes_read`) of that re-sync, against
   a full sync of the whole file. Checks that the re-sync continued the run (not re-read it),
   that it read no more than the new bytes plus the 8 KiB of checked windows, and that the
   catalog's tables after it (the kept metric points plus the new ones) equal the full sync's.
   `BRAID_WANDB_PURE=1` measures the Python decoder instead of the compiled one.
4. Prints the numbers and the goals (>= 50 MB/s for the full sync; a re-sync reading only the
   new bytes); writes them to bench/out/wandb-log-<N>.json (git-ignored).
Exits 1 when the incremental result differs from the full one, 0 otherwise (a missed goal
is reported, not an error).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from polars.testing import assert_frame_equal

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
WRITER = HERE.parent / "tests" / "fixtures" / "write_wandb_runs.py"
GOAL_MB_S = 50.0
CHECK_BYTES = 2 * 4096  # the windows a continued read checks (`_txlog.CHECK_WINDOW`, twice)

from braid.connectors.wandb import _native, read_source  # noqa: E402
from braid.connectors.wandb._txlog import read_log  # noqa: E402
from braid.unify.source import PreviousSync, SourceBatch, SourceSpec, no_progress  # noqa: E402

# the decoder measured: the compiled one (`_logdecode.c`) unless it is not built or
# BRAID_WANDB_PURE=1 turns it off
DECODER = "python" if _native.decoder is None else "compiled"


def write_run(work: Path, rows: int) -> Path:
    """The run's `.wandb` file, written by the real SDK unless `work` already holds it."""
    found = sorted(work.glob("wandb/offline-run-*/run-*.wandb"))
    marker = work / "rows.txt"
    if found and marker.exists() and marker.read_text().strip() == str(rows):
        return found[0]
    shutil.rmtree(work / "wandb", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(work), "WANDB_SILENT": "true",
           "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(WRITER), "big", str(rows)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"the SDK failed to write the run:\n{proc.stderr[-3000:]}")
    print(f"wrote {rows:,} rows with wandb in {time.perf_counter() - started:.1f} s")
    marker.write_text(str(rows))
    (path,) = sorted(work.glob("wandb/offline-run-*/run-*.wandb"))
    return path


def best(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    wall, _, out = best_with_cpu(repeat, fn)
    return wall, out


def best_with_cpu(repeat: int, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """The best wall time, the best CPU time of this process (every thread, so polars' too;
    steadier than wall time on a machine shared with other work) and the last result."""
    times, cpu, out = [], [], None
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return min(times), min(cpu), out


def sync(root: Path, previous: SourceBatch | None = None) -> SourceBatch:
    spec = SourceSpec("wandb", "wandb", {"path": str(root)}, root.parent)
    prior = PreviousSync(previous.cursor, previous.state) if previous is not None else None
    return read_source(spec, previous=prior, progress=no_progress)


def merged(previous: SourceBatch, batch: SourceBatch) -> dict[str, pl.DataFrame]:
    """The catalog's tables after `batch`, as `unify.sync.merge` builds them."""
    tables = dict(batch.tables)
    alive = batch.tables["runs"]["id"].implode()
    for name in batch.partial:
        old = previous.tables[name].filter(pl.col("run_id").is_in(alive)
                                           & ~pl.col("run_id").is_in(list(batch.rewritten_runs)))
        tables[name] = pl.concat([old, batch.tables[name]]) if name in batch.tables else old
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cut", type=float, default=0.5)
    args = parser.parse_args(argv)
    temp = None if args.dir else tempfile.mkdtemp(prefix="braid-bench-wandb-")
    work = args.dir or Path(temp)  # type: ignore[arg-type]
    try:
        return run(args, work)
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    path = write_run(work, args.rows)
    size = path.stat().st_size
    mb = size / 1e6
    sync(path.parent.parent)  # warm-up: imports (wandb's protobuf modules) are not parse time
    raw_s, _ = best(args.repeat, path.read_bytes)
    framing_s, log = best(args.repeat, lambda: read_log(path))
    root = path.parent.parent
    full_s, full_cpu_s, full = best_with_cpu(args.repeat, lambda: sync(root))
    points = full.tables["metrics"].height

    # incremental: a live run's file, cut mid-record, then grown to the whole file
    live_root = work / "grown" / "wandb"
    shutil.rmtree(live_root.parent, ignore_errors=True)
    live = live_root / path.parent.name / path.name
    live.parent.mkdir(parents=True)
    data = path.read_bytes()
    live.write_bytes(data[:int(size * args.cut)])
    first = sync(live_root)
    old_end = json.loads(first.state["folds"]["fold"][0])["segments"][-1]["resume_offset"]
    live.write_bytes(data)
    started = time.perf_counter()
    grown = sync(live_root, first)
    resync_s = time.perf_counter() - started
    whole_s, whole = best(args.repeat, lambda: sync(live_root))

    problems = []
    if grown.cursor["continued"] != 1 or grown.rewritten_runs:
        problems.append(f"the re-sync read the run whole: {grown.cursor}")
    new_bytes = size - old_end
    if grown.cursor["bytes_read"] > new_bytes + CHECK_BYTES:
        problems.append(f"the re-sync read {grown.cursor['bytes_read']:,} bytes, more than the {new_bytes:,} new")
    after = merged(first, grown)
    for name in ("nodes", "edges", "runs", "params", "tags", "metrics"):
        a, b = after[name], whole.tables[name]
        try:
            assert_frame_equal(a.sort(a.columns), b.sort(b.columns))
        except AssertionError as exc:
            problems.append(f"{name} after the re-sync differs from a full sync: {str(exc)[:300]}")

    full_mb_s = mb / full_s

    def row(label: str, value: str) -> None:
        print(f"  {label:<36} {value}")

    print(f"W&B transaction log: {args.rows:,} history rows, {mb:.1f} MB, {len(log.payloads):,} records, "
          f"{points:,} metric points (best of {args.repeat}), decoder: {DECODER}")
    row("raw read", f"{raw_s:.3f} s  {mb / raw_s:,.0f} MB/s")
    row("framing (read_log)", f"{framing_s:.3f} s  {mb / framing_s:,.1f} MB/s")
    row("full sync (read_source)", f"{full_s:.3f} s  {full_mb_s:,.1f} MB/s")
    row("  by its CPU time (all threads)", f"{full_cpu_s:.3f} s  {mb / full_cpu_s:,.1f} MB/s")
    row("goal", f">= {GOAL_MB_S:.0f} MB/s: {'MET' if full_mb_s >= GOAL_MB_S else 'NOT MET'}")
    print(f"incremental: the file cut at {args.cut:.0%} ({old_end:,} bytes in whole records), then grown to "
          f"{size:,} bytes")
    row("re-sync of the grown file", f"{resync_s:.3f} s, read {grown.cursor['bytes_read']:,} bytes "
        f"({new_bytes:,} new), {grown.tables['metrics'].height:,} new points")
    row("full sync of the same file", f"{whole_s:.3f} s, read {whole.cursor['bytes_read']:,} bytes")
    row("goal", f"reads only the new bytes: {'MET' if not problems else 'NOT MET'}")
    result = {
        "rows": args.rows, "bytes": size, "records": len(log.payloads), "metric_points": points,
        "raw_s": raw_s, "raw_mb_s": mb / raw_s, "framing_s": framing_s, "framing_mb_s": mb / framing_s,
        "full_sync_s": full_s, "full_sync_mb_s": full_mb_s, "full_sync_cpu_s": full_cpu_s,
        "full_sync_cpu_mb_s": mb / full_cpu_s, "goal_mb_s": GOAL_MB_S, "met": full_mb_s >= GOAL_MB_S,
        "cut": args.cut, "resync_s": resync_s, "resync_bytes_read": grown.cursor["bytes_read"],
        "new_bytes": new_bytes, "resync_points": grown.tables["metrics"].height, "full_resync_s": whole_s,
        "full_resync_bytes_read": whole.cursor["bytes_read"], "problems": problems,
        "decoder": DECODER,
        "python": platform.python_version(), "cores": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"wandb-log-{args.rows}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out.relative_to(HERE.parent)}")
    if problems:
        print("\nINCREMENTAL MISMATCH:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("incremental: OK (continued, only the new bytes read, tables equal to a full sync)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
