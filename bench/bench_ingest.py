"""Benchmark: `braid sync` against reading the same MLflow content with MlflowClient.

Run from the project root:

    .venv/bin/python bench/bench_ingest.py [--runs N | --big]

    --runs N            runs in the generated store (default 2000)
    --big               100,000 runs; the client's metric history is measured on a random
                        sample of runs and extrapolated linearly (the output says so)
    --client-sample K   measure the client's history on K random runs (default: every run up
                        to 20,000 runs, 1,000 runs above that)
    --repeat R          full braid syncs to take the median of (default 3)
    --profile           also cProfile one full braid sync and print where the time goes

What it does:
1. Generates an MLflow sqlite store of N runs x 10 params x 5 metrics x 20 steps with MLflow's
   real schema: the real client creates the schema (its migrations) and a few runs, the rest
   is bulk-inserted with sqlite3 in exactly the row shapes the client wrote (runs, params, tags
   mlflow.runName / mlflow.user, metrics with is_nan=0, latest_metrics). The store is cached
   in bench/out/ (git-ignored), keyed by mlflow version and size, so re-runs start at once.
2. Times `braid.unify.sync.sync(load_config(toml), full=True)` into a fresh catalog folder
   (reading, normalising, Parquet writes, identity): the median of --repeat runs. Then times
   an incremental re-sync with nothing changed, reported separately.
3. Times the client path for the same content: search_runs(max_results=50000) paging over all
   runs, then get_metric_history(run_id, key) for every run and every metric key.
4. Checks that both read the same content (runs, params, metric points, and per-run metric
   value sums) and fails loudly if they do not.
5. Prints braid seconds, client seconds, the ratio client / braid and the goal (>= 30x).
Exits 1 when the content differs, 0 otherwise (a missed goal is reported, not an error).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import math
import os
import pstats
import random
import shutil
import sqlite3
import statistics
import sys
import time
import uuid
import warnings
from pathlib import Path

from _mlflow_rows import insert_runs_like  # bench/ is on sys.path when a benchmark runs

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
GEN_VERSION = 1  # bump when the generated content changes, so stale caches are not reused

N_PARAMS, N_METRICS, N_STEPS = 10, 5, 20
N_REAL = 3  # runs written by the real client; the rest copy their row shapes
BIG_RUNS = 100_000
GOAL = 30.0
SAMPLE_ABOVE, DEFAULT_SAMPLE = 20_000, 1_000
SOURCE = "mlflow"
USER = "bench-user"
T0 = 1_700_000_000_000  # epoch ms of the first run's start
INSERT_CHUNK = 2_000  # runs per executemany batch (bounded memory at 100k runs)


class ContentMismatch(AssertionError):
    """braid and the client did not read the same content."""


def _status(text: str) -> None:
    """A progress line, overwritten in place on a terminal and left out otherwise."""
    if sys.stdout.isatty():
        print(f"\r{text:<60}", end="\r" if text else "", flush=True)


# -- 1. the store ---------------------------------------------------------------------------
def store_path(runs: int) -> Path:
    import mlflow

    return OUT / (f"mlflow-{mlflow.__version__}-g{GEN_VERSION}-{runs}runs-"
                  f"{N_PARAMS}p{N_METRICS}m{N_STEPS}s.db")


def _run_content(i: int, rng: random.Random) -> tuple[str, str, int, int, list[tuple[str, str]],
                                                        list[tuple[str, float, int, int]]]:
    """Run i's id, name, start/end (ms), params [(key, value)] and metrics [(key, value, ts, step)]."""
    run_uuid = uuid.UUID(int=rng.getrandbits(128), version=4).hex
    name = f"run-{i:06d}"
    start = T0 + i * 60_000
    params = [(f"param_{p}", f"{rng.choice(['adam', 'sgd', 'rmsprop'])}-{rng.randint(0, 999)}")
              for p in range(N_PARAMS)]
    metrics = []
    for m in range(N_METRICS):
        base = rng.random()
        for s in range(N_STEPS):
            metrics.append((f"metric_{m}", base / (s + 1) + rng.random() * 1e-3, start + 1_000 * (s + 1), s))
    end = start + 1_000 * (N_STEPS + 1)
    return run_uuid, name, start, end, params, metrics


def generate(path: Path, runs: int, seed: int = 0) -> None:
    """Write the store at `path` (atomically: a half-written store is never cached)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    for p in (tmp, Path(str(tmp) + "-journal")):
        p.unlink(missing_ok=True)
    rng = random.Random(seed)
    started = time.perf_counter()
    client = MlflowClient(f"sqlite:///{tmp}")  # runs MLflow's migrations: the real schema
    exp_id = client.create_experiment("bench", artifact_location=(OUT / "artifacts").as_uri())
    contents = [_run_content(i, rng) for i in range(min(N_REAL, runs))]
    real_ids = []
    for run_uuid, name, start, end, params, metrics in contents:
        run = client.create_run(exp_id, start_time=start, run_name=name, tags={"mlflow.user": USER})
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params],
                         metrics=[Metric(k, v, ts, s) for k, v, ts, s in metrics])
        client.set_terminated(run.info.run_id, "FINISHED", end_time=end)
        real_ids.append(run.info.run_id)
    del client

    con = sqlite3.connect(tmp)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    # the exact row shapes the client wrote, read back from the first real run
    template_id, template_name = real_ids[0], contents[0][1]
    tag_rows = con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (template_id,)).fetchall()
    tag_keys = {k for k, _ in tag_rows}
    if not {"mlflow.runName", "mlflow.user"} <= tag_keys:
        raise RuntimeError(f"the client wrote unexpected tags {sorted(tag_keys)}")
    nan_flags = {r[0] for r in con.execute("SELECT DISTINCT is_nan FROM metrics")}
    if nan_flags != {0}:
        raise RuntimeError(f"the client wrote is_nan values {nan_flags}, expected 0")
    rest = ((*content[:5], [], content[5]) for content in (_run_content(i, rng) for i in range(len(real_ids), runs)))
    insert_runs_like(con, template_id, template_name, rest, tag_rows=tag_rows, chunk=INSERT_CHUNK,
                     on_chunk=lambda n: _status(f"  generated {len(real_ids) + n:,} / {runs:,} runs"))
    con.close()
    _status("")

    _check_shapes(tmp, real_ids[0], runs)
    os.replace(tmp, path)
    print(f"  generated {path.name} in {time.perf_counter() - started:.1f} s")


def _check_shapes(db: Path, real_id: str, runs: int) -> None:
    """A bulk-inserted run must look to the client exactly like one the client wrote."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    con = sqlite3.connect(db)
    bulk_id = con.execute("SELECT run_uuid FROM runs WHERE run_uuid != ? ORDER BY start_time DESC LIMIT 1",
                          (real_id,)).fetchone()
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("runs", "params", "metrics", "latest_metrics")}
    con.close()
    want = {"runs": runs, "params": runs * N_PARAMS, "metrics": runs * N_METRICS * N_STEPS,
            "latest_metrics": runs * N_METRICS}
    if counts != want:
        raise RuntimeError(f"generated store holds {counts}, expected {want}")
    if bulk_id is None:
        return

    def shape(run_id: str) -> tuple[object, ...]:
        r = client.get_run(run_id)
        hist = client.get_metric_history(run_id, "metric_0")
        return (r.info.status, r.info.user_id, r.info.lifecycle_stage, r.info.experiment_id,
                sorted(r.data.params), sorted(r.data.metrics), sorted(r.data.tags),
                r.data.tags["mlflow.user"], len(hist), r.info.artifact_uri.endswith(f"{run_id}/artifacts"),
                r.data.metrics["metric_0"] == hist[-1].value)

    a, b = shape(real_id), shape(bulk_id[0])
    if a != b:
        raise RuntimeError(f"bulk-inserted run differs from a client-written one:\n  client {a}\n  bulk   {b}")


# -- 2. braid -------------------------------------------------------------------------------
def write_toml(folder: Path, db: Path, catalog: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    toml = folder / f"braid-{catalog}.toml"
    toml.write_text(f'catalog = "{catalog}"\n\n[[sources]]\ntool = "mlflow"\nuri = "sqlite:///{db}"\n')
    return toml


def braid_sync(toml: Path, *, full: bool) -> tuple[float, object]:
    from braid.unify.config import load_config
    from braid.unify.sync import sync

    started = time.perf_counter()
    report = sync(load_config(toml), full=full)
    seconds = time.perf_counter() - started
    if report.failed:
        raise RuntimeError(f"braid sync failed: {[(s.name, s.error) for s in report.failed]}")
    return seconds, report


def braid_content(catalog: Path, only_runs: set[str] | None) -> dict[str, object]:
    """Counts and per-(run, key) metric sums from braid's catalog, keyed by MLflow run id."""
    import polars as pl

    from braid.unify.catalog import open_catalog

    cat = open_catalog(catalog)
    prefix = f"{SOURCE}:run/"
    runs = cat.table("runs").filter(pl.col("source") == SOURCE)
    params = cat.table("params").filter(pl.col("source") == SOURCE)
    metrics = cat.table("metrics").filter(pl.col("source") == SOURCE).with_columns(
        run_uuid=pl.col("run_id").str.strip_prefix(prefix))
    if only_runs is not None:
        metrics = metrics.filter(pl.col("run_uuid").is_in(list(only_runs)))
    sums = metrics.group_by("run_uuid", "key").agg(n=pl.len(), total=pl.col("value").sum())
    return {
        "runs": runs.height,
        "run_ids": set(runs["id"].str.strip_prefix(prefix).to_list()),
        "params": params.height,
        "param_rows": set(params.select(pl.col("run_id").str.strip_prefix(prefix), "key", "value").iter_rows()),
        "metric_points": metrics.height,
        "metric_sums": {(r, k): (n, t) for r, k, n, t in sums.iter_rows()},
    }


# -- 3. the client --------------------------------------------------------------------------
def client_read(uri: str, sample: int | None, seed: int) -> dict[str, object]:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    # warm-up, untimed: builds and caches the SQLAlchemy engine (in the client's favour)
    MlflowClient(uri).search_experiments(view_type=ViewType.ALL, max_results=1)

    started = time.perf_counter()
    client = MlflowClient(uri)
    exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs, token = [], None
    while True:
        page = client.search_runs(exp_ids, run_view_type=ViewType.ALL, max_results=50_000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    search_s = time.perf_counter() - started

    chosen = runs if sample is None or sample >= len(runs) else random.Random(seed).sample(runs, sample)
    started = time.perf_counter()
    sums: dict[tuple[str, str], tuple[int, float]] = {}
    for i, run in enumerate(chosen):
        for key in run.data.metrics:
            hist = client.get_metric_history(run.info.run_id, key)
            sums[(run.info.run_id, key)] = (len(hist), math.fsum(m.value for m in hist))
        if i % 200 == 199:
            _status(f"  client history: {i + 1:,} / {len(chosen):,} runs")
    history_s = time.perf_counter() - started
    _status("")
    scale = len(runs) / len(chosen) if chosen else 1.0
    return {
        "search_s": search_s,
        "history_s": history_s,
        "history_est_s": history_s * scale,
        "sampled": len(chosen) < len(runs),
        "history_runs": len(chosen),
        "history_ids": {r.info.run_id for r in chosen},
        "runs": len(runs),
        "run_ids": {r.info.run_id for r in runs},
        "params": sum(len(r.data.params) for r in runs),
        "param_rows": {(r.info.run_id, k, v) for r in runs for k, v in r.data.params.items()},
        "metric_points": sum(n for n, _ in sums.values()),
        "metric_sums": sums,
    }


# -- 4. same content ------------------------------------------------------------------------
def verify(braid: dict[str, object], client: dict[str, object], expected_points: int) -> list[str]:
    """Problems found; empty when braid and the client read the same content."""
    problems = []
    for what in ("runs", "params"):
        if braid[what] != client[what]:
            problems.append(f"{what}: braid {braid[what]:,} != client {client[what]:,}")
    if braid["run_ids"] != client["run_ids"]:
        problems.append(f"run ids differ: {len(braid['run_ids'] ^ client['run_ids'])} not in both")
    if braid["param_rows"] != client["param_rows"]:
        problems.append(f"param (run, key, value) rows differ: {len(braid['param_rows'] ^ client['param_rows'])}")
    if braid["metric_points"] != client["metric_points"]:
        problems.append(f"metric points (over the runs the client read): braid {braid['metric_points']:,} "
                        f"!= client {client['metric_points']:,}")
    b_sums, c_sums = braid["metric_sums"], client["metric_sums"]
    if set(b_sums) != set(c_sums):
        problems.append(f"(run, metric key) pairs differ: {len(set(b_sums) ^ set(c_sums))}")
    bad = [k for k in set(b_sums) & set(c_sums)
           if b_sums[k][0] != c_sums[k][0] or not math.isclose(b_sums[k][1], c_sums[k][1], rel_tol=1e-9)]
    if bad:
        problems.append(f"{len(bad)} (run, key) histories differ in count or values, e.g. {sorted(bad)[0]}")
    if braid.get("all_points") != expected_points:
        problems.append(f"braid holds {braid.get('all_points'):,} metric points, the store {expected_points:,}")
    return problems


# -- profile --------------------------------------------------------------------------------
def profile_sync(db: Path, work: Path, top: int = 35) -> None:
    toml = write_toml(work, db, "profiled")
    shutil.rmtree(work / "profiled", ignore_errors=True)
    prof = cProfile.Profile()
    prof.enable()
    seconds, _ = braid_sync(toml, full=True)
    prof.disable()
    print(f"\ncProfile of one full braid sync ({seconds:.2f} s under the profiler)")
    for order, n in (("cumulative", top), ("tottime", 20)):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(order).print_stats(n)
        text = buf.getvalue()
        print(f"--- by {order} ---")
        print(text[text.find("   ncalls"):].rstrip())


# -- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--runs", type=int, default=2000, help="runs in the generated store (default 2000)")
    size.add_argument("--big", action="store_true", help=f"{BIG_RUNS:,} runs, client history sampled")
    ap.add_argument("--client-sample", type=int, default=None,
                    help=f"runs to read history for with the client (default: all up to {SAMPLE_ABOVE:,} "
                         f"runs, else {DEFAULT_SAMPLE:,})")
    ap.add_argument("--repeat", type=int, default=3, help="full braid syncs to take the median of")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="cProfile one full braid sync")
    args = ap.parse_args(argv)
    runs = BIG_RUNS if args.big else args.runs
    if runs < 1:
        ap.error("--runs must be at least 1")
    sample = args.client_sample if args.client_sample is not None else (
        DEFAULT_SAMPLE if runs > SAMPLE_ABOVE else None)

    import mlflow  # noqa: F401  (mlflow sets up its loggers on import; quieten them after)

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    expected_points = runs * N_METRICS * N_STEPS
    print(f"store: {runs:,} runs x {N_PARAMS} params x {N_METRICS} metrics x {N_STEPS} steps "
          f"= {expected_points:,} metric points")
    db = store_path(runs)
    if db.is_file():
        print(f"  cached: {db.relative_to(HERE.parent)}")
    else:
        generate(db, runs, args.seed)
    uri = f"sqlite:///{db}"
    work = OUT / f"work-{runs}"
    shutil.rmtree(work, ignore_errors=True)

    # 2. braid: full syncs into fresh catalogs, then incremental re-syncs with nothing changed
    full_times = []
    for i in range(args.repeat):
        toml = write_toml(work, db, f"full{i}")
        seconds, report = braid_sync(toml, full=True)
        full_times.append(seconds)
        print(f"  braid full sync {i + 1}/{args.repeat}: {seconds:.3f} s")
    rows = report.sources[0].rows
    incr_times, changed = [], []
    for i in range(args.repeat):
        seconds, rep = braid_sync(toml, full=False)
        incr_times.append(seconds)
        changed.append(rep.changed)
        print(f"  braid incremental sync {i + 1}/{args.repeat}: {seconds:.3f} s (changed={rep.changed})")
    braid_s, incr_s = statistics.median(full_times), statistics.median(incr_times)
    catalog = work / f"full{args.repeat - 1}"

    # 3. the client
    print(f"  client: search_runs over {runs:,} runs, then get_metric_history for "
          f"{'every run' if sample is None or sample >= runs else f'{sample:,} random runs'} x {N_METRICS} keys")
    client = client_read(uri, sample, args.seed)
    client_s = client["search_s"] + client["history_est_s"]

    # 4. same content
    braid_seen = braid_content(catalog, client["history_ids"] if client["sampled"] else None)
    braid_seen["all_points"] = braid_content(catalog, None)["metric_points"] if client["sampled"] \
        else braid_seen["metric_points"]
    problems = verify(braid_seen, client, expected_points)
    if any(changed):
        problems.append("an incremental sync with nothing changed committed a new generation")

    # 5. the table
    ratio = client_s / braid_s
    est = " (extrapolated)" if client["sampled"] else ""
    w = 58

    def row(label: str, value: str) -> None:
        print(f"{label:<{w}} {value:>10}")

    print()
    print(f"braid vs MlflowClient: {runs:,} runs x {N_PARAMS} params x {N_METRICS} metrics x {N_STEPS} steps, "
          f"sqlite, {os.cpu_count()} cores")
    row("path", "seconds")
    print("-" * (w + 11))
    row(f"braid sync --full (median of {args.repeat})", f"{braid_s:.3f}")
    row("braid sync, incremental, nothing changed (median)", f"{incr_s:.3f}")
    row("client: search_runs (50,000 a page)", f"{client['search_s']:.3f}")
    if client["sampled"]:
        row(f"client: get_metric_history, {client['history_runs']:,} sampled runs", f"{client['history_s']:.3f}")
    row(f"client: get_metric_history, all {runs:,} runs{est}", f"{client['history_est_s']:.3f}")
    row("client total" + est, f"{client_s:.3f}")
    print("-" * (w + 11))
    row("ratio client / braid (full sync)", f"{ratio:.1f}x")
    row("goal", f">= {GOAL:.0f}x")
    row("verdict", "MET" if ratio >= GOAL else "NOT MET")
    if client["sampled"]:
        print(f"note: the client's history was read for {client['history_runs']:,} random runs of {runs:,} "
              f"and scaled linearly by {runs / client['history_runs']:.1f}; content checks cover those runs "
              "plus every run and param from search_runs.")
    print(f"braid full-sync rows: {rows}")
    print(f"braid full syncs: {', '.join(f'{t:.3f}' for t in full_times)} s; "
          f"incremental: {', '.join(f'{t:.3f}' for t in incr_times)} s")
    if problems:
        print("\nCONTENT MISMATCH between braid and MlflowClient:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"content check: OK (runs {client['runs']:,}, params {client['params']:,}, "
          f"metric points {client['metric_points']:,} read by both"
          + (f"; braid total {braid_seen['all_points']:,})" if client["sampled"] else ")"))

    if args.profile:
        profile_sync(db, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
