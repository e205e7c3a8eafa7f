"""Benchmark: `braid verify` throughput against `md5sum` on the same files, in the same run.

Run from the project root:

    .venv/bin/python bench/bench_verify.py [--files N] [--mb M] [--repeat R] [--dir PATH]

    --files N    files in the generated DVC cache (default 200)
    --mb M       megabytes per file (default 10: 200 x 10 MB = 2 GB)
    --repeat R   timed rounds; each round runs md5sum and braid once, alternating (default 3)
    --jobs J     braid's hashing threads (default: braid's own, CPUs + 2)
    --dir PATH   build the repository under PATH (default: a temporary folder, deleted afterwards)
    --keep       keep the repository afterwards

What it does:
1. Builds a git repository with the real `git init` and `dvc init`, writes N files of random
   bytes into `data/`, and runs the real `dvc add data` (DVC hashes them and copies them into
   `.dvc/cache/files/md5/`) and commits. Then removes the workspace copy of `data/`, so that
   the bytes braid can reach are exactly the N cache objects (as after a fresh clone with a
   shared cache).
2. `braid sync` reads the repository into a catalog (one node per file, from the cache's
   directory listing).
3. One warm-up round reads every object once, so both sides then hash from the page cache:
   the comparison is of hashing, not of the disk.
4. Each round times `md5sum <every object>` (one process, one core: coreutils) and
   `braid verify --format json --quiet` (a whole CLI run: Python start, catalog open, the
   locators, hashing in a thread pool, the report), alternating which goes first.
5. Checks both agree: every object verified by braid, and braid's `found` md5 equals
   md5sum's line for that file; exits 1 otherwise.
6. Prints MB/s for both, braid's wall time / md5sum's (goal: <= 1.5), and writes the numbers
   to bench/out/verify-<N>x<M>MB.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GOAL = 1.5
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.org",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.org", "MLFLOW_TRACKING_URI": ""}


def run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def build(repo: Path, files: int, mb: int) -> None:
    repo.mkdir(parents=True)
    run(["git", "init", "-q", "-b", "main"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    data = repo / "data"
    data.mkdir()
    rng = random.Random(8)
    t0 = time.perf_counter()
    for i in range(files):
        (data / f"part-{i:04d}.bin").write_bytes(rng.randbytes(mb << 20))
    print(f"wrote {files} x {mb} MB in {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    run([sys.executable, "-m", "dvc", "add", "-q", "data"], repo)
    print(f"dvc add: {time.perf_counter() - t0:.1f}s", flush=True)
    run(["git", "add", "."], repo)
    run(["git", "commit", "-q", "-m", "data"], repo)
    shutil.rmtree(data)  # only the cache holds the bytes now
    (repo / "braid.toml").write_text('[[sources]]\nname = "dvc"\ntool = "dvc"\nrepo = "."\n')
    t0 = time.perf_counter()
    run([str(BIN / "braid"), "sync", "--quiet"], repo)
    print(f"braid sync: {time.perf_counter() - t0:.1f}s", flush=True)


def objects(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / ".dvc" / "cache" / "files" / "md5").rglob("*")
                  if p.is_file() and not p.name.endswith(".dir"))


def time_md5sum(files: list[Path], repo: Path) -> tuple[float, dict[str, str]]:
    t0 = time.perf_counter()
    out = run(["md5sum", *map(str, files)], repo)
    seconds = time.perf_counter() - t0
    return seconds, {line[34:]: line[:32] for line in out.splitlines()}


def time_braid(repo: Path, jobs: int | None) -> tuple[float, list[dict[str, str]]]:
    cmd = [str(BIN / "braid"), "verify", "--format", "json", "--quiet"] + (["--jobs", str(jobs)] if jobs else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"braid verify exited {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds, json.loads(proc.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--mb", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="braid-bench-verify-"))
    repo = base / "repo"
    try:
        if not (repo / "braid.toml").exists():
            build(repo, args.files, args.mb)
        files = objects(repo)
        total = sum(f.stat().st_size for f in files)
        mb = total / 1e6
        time_md5sum(files, repo)  # warm-up: both sides then read from the page cache
        md5_times, braid_times = [], []
        for i in range(args.repeat):
            order = ("md5sum", "braid") if i % 2 == 0 else ("braid", "md5sum")
            for side in order:
                if side == "md5sum":
                    seconds, sums = time_md5sum(files, repo)
                    md5_times.append(seconds)
                else:
                    seconds, rows = time_braid(repo, args.jobs)
                    braid_times.append(seconds)
        # both sides agree on every object
        verified = {r["file"]: r["found"].removeprefix("md5:") for r in rows
                    if r["status"] == "verified" and not r["file"].endswith(".dir")}  # and the listing
        mismatched = [r for r in rows if r["status"] == "mismatched"]
        if mismatched or set(verified) != {str(f) for f in files} or any(verified[k] != v for k, v in sums.items()):
            print(f"DISAGREE: {len(verified)} verified of {len(files)}, {len(mismatched)} mismatched", file=sys.stderr)
            return 1
        best_md5, best_braid = min(md5_times), min(braid_times)
        med_md5, med_braid = statistics.median(md5_times), statistics.median(braid_times)
        ratio = med_braid / med_md5
        print(f"\n{len(files)} files, {mb:,.0f} MB, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        print(f"{'':10} {'best s':>8} {'median s':>9} {'MB/s (median)':>14}")
        print(f"{'md5sum':10} {best_md5:8.2f} {med_md5:9.2f} {mb / med_md5:14.0f}")
        print(f"{'braid':10} {best_braid:8.2f} {med_braid:9.2f} {mb / med_braid:14.0f}")
        print(f"braid / md5sum wall time (median): {ratio:.2f}x (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'MISSED'})")
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"verify-{args.files}x{args.mb}MB.json").write_text(json.dumps({
            "files": len(files), "bytes": total, "repeat": args.repeat, "jobs": args.jobs,
            "md5sum_seconds": md5_times, "braid_seconds": braid_times, "ratio_median": ratio,
            "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
        }, indent=1))
        return 0
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
