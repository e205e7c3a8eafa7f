"""Benchmark: `braid migrate` MLflow -> MLflow against copying the same runs with plain MlflowClient calls.

Run from the project root:

    .venv/bin/python bench/bench_migrate.py [--runs N] [--metrics M] [--steps S]

    --runs N            runs in the generated source store (default 1000)
    --metrics M         metric keys per run (default 20)
    --steps S           steps per metric key (default 100): N x M x S metric points in all
    --baseline-sample K copy K runs (a seeded random sample) with the client and extrapolate
                        linearly; default: every run when the client's projected time is under
                        10 minutes (measured on its first 50 runs), else a 200-run sample
    --server            also migrate into a real `mlflow server` on 127.0.0.1 (sqlite backend)
    --profile           also cProfile one full braid migrate (into another fresh store) and print
                        the top 15 functions by cumulative and by own time
    --seed N            generator and sample seed (default 0)

What it does:
1. Generates an MLflow sqlite source store of N runs x 5 params x 3 tags x M metrics x S steps
   the way bench_ingest.py does: the real client creates the schema (its migrations) and the
   first runs, the rest is bulk-inserted with sqlite3 in exactly the row shapes the client
   wrote. Cached in bench/out/ (git-ignored), keyed by mlflow version and size.
2. braid: `braid.unify.migrate.migrate(source, target, catalog=...)` into a fresh sqlite store,
   timed as one call (source read, plan, writes, read-back verification). The phases are
   timed too, by wrapping (not changing) the functions migrate() calls: the two
   read_mlflow() calls (source read, target read-back), MlflowWriter.runs and verify().
   For a database target MlflowWriter.runs writes with set-based inserts, a batch of runs per
   transaction (unify/migrate/_mlflow_bulk.py); a server target goes through the client.
3. Baseline: a plain MlflowClient copy into another fresh sqlite store: search_runs to list
   the runs, then per run get_run, get_metric_history per key, create_run (start time, name,
   tags), log_batch (params and tags <= 100 a call, metrics <= 1,000 a call) and
   set_terminated with the end time.
4. Checks with sqlite3 that both targets hold the same runs, params, tags and metric points
   as the source (counts, then full per-run comparisons on a sample of runs), and that braid's
   report says verified.
5. Prints the table (seconds, ratio baseline / braid, points/s, the goal >= 5x) and writes the
   numbers to bench/out/migrate-<N>x<M>x<S>.json (git-ignored).
Exits 1 when a target's content differs from the source, 0 otherwise (a missed goal is
reported, not an error).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from _mlflow_rows import insert_runs_like  # bench/ is on sys.path when a benchmark runs
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
GEN_VERSION = 1  # bump when the generated content changes, so stale caches are not reused

N_PARAMS = 5
N_REAL = 3  # runs written by the real client; the rest copy their row shapes
GOAL = 5.0
PILOT, AUTO_SAMPLE, BUDGET_S = 50, 200, 600.0
CHECK_SAMPLE = 25  # runs compared point by point in each target
USER = "bench-user"
T0 = 1_700_000_000_000
INSERT_CHUNK = 200  # runs per executemany batch
METRICS_PER_BATCH, PARAMS_TAGS_PER_BATCH = 1000, 100
SOURCE_ID_TAG = "braid.source_id"  # braid's own tag; the baseline writes the same one (same work)


class ContentMismatch(AssertionError):
    """A target does not hold what the source holds."""


def _status(text: str) -> None:
    """A progress line, overwritten in place on a terminal and left out otherwise."""
    if sys.stdout.isatty():
        print(f"\r{text:<70}", end="\r" if text else "", flush=True)


# -- 1. the source store --------------------------------------------------------------------
def store_path(runs: int, metrics: int, steps: int) -> Path:
    import mlflow

    return OUT / f"migrate-src-mlflow-{mlflow.__version__}-g{GEN_VERSION}-{runs}r{metrics}m{steps}s.db"


def _run_content(i: int, rng: random.Random, n_metrics: int, n_steps: int) -> tuple[Any, ...]:
    run_uuid = uuid.UUID(int=rng.getrandbits(128), version=4).hex
    name = f"run-{i:06d}"
    start = T0 + i * 600_000
    params = [(f"param_{p}", f"{rng.choice(['adam', 'sgd', 'rmsprop'])}-{rng.randint(0, 999)}")
              for p in range(N_PARAMS)]
    tags = [("team", rng.choice(["vision", "nlp", "tabular"]))]
    metrics = []
    for m in range(n_metrics):
        base = rng.random()
        for s in range(n_steps):
            metrics.append((f"metric_{m:02d}", base / (s + 1) + rng.random() * 1e-3, start + 100 * (s + 1), s))
    end = start + 100 * (n_steps + 1)
    return run_uuid, name, start, end, params, tags, metrics


def generate(path: Path, runs: int, n_metrics: int, n_steps: int, seed: int) -> None:
    """Write the store at `path` (atomically: a half-written store is never cached)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    for p in (tmp, Path(str(tmp) + "-journal")):
        p.unlink(missing_ok=True)
    rng = random.Random(seed)
    started = time.perf_counter()
    client = MlflowClient(f"sqlite:///{tmp}")
    exp_id = client.create_experiment("bench-migrate", artifact_location=(OUT / "migrate-artifacts").as_uri())
    contents = [_run_content(i, rng, n_metrics, n_steps) for i in range(min(N_REAL, runs))]
    real_ids = []
    for _, name, start, end, params, tags, metrics in contents:
        run = client.create_run(exp_id, start_time=start, run_name=name, tags={"mlflow.user": USER})
        rid = run.info.run_id
        client.log_batch(rid, params=[Param(k, v) for k, v in params], tags=[RunTag(k, v) for k, v in tags])
        points = [Metric(k, v, ts, s) for k, v, ts, s in metrics]
        for lo in range(0, len(points), METRICS_PER_BATCH):
            client.log_batch(rid, metrics=points[lo:lo + METRICS_PER_BATCH])
        client.set_terminated(rid, "FINISHED", end_time=end)
        real_ids.append(rid)
    del client

    con = sqlite3.connect(tmp)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    template_id, template_name = real_ids[0], contents[0][1]
    tag_rows = con.execute("SELECT key, value FROM tags WHERE run_uuid = ? AND key LIKE 'mlflow.%'",
                           (template_id,)).fetchall()
    if {k for k, _ in tag_rows} != {"mlflow.runName", "mlflow.user"}:
        raise RuntimeError(f"the client wrote unexpected tags {sorted(k for k, _ in tag_rows)}")
    if {r[0] for r in con.execute("SELECT DISTINCT is_nan FROM metrics")} != {0}:
        raise RuntimeError("the client wrote is_nan values other than 0")

    rest = (_run_content(i, rng, n_metrics, n_steps) for i in range(len(real_ids), runs))
    insert_runs_like(con, template_id, template_name, rest, tag_rows=tag_rows, chunk=INSERT_CHUNK,
                     on_chunk=lambda n: _status(f"  generated {len(real_ids) + n:,} / {runs:,} runs"))
    con.close()
    _status("")
    counts = content_counts(tmp)
    want = {"runs": runs, "params": runs * N_PARAMS, "metric_points": runs * n_metrics * n_steps}
    if {k: counts[k] for k in want} != want:
        raise RuntimeError(f"generated store holds {counts}, expected {want}")
    os.replace(tmp, path)
    print(f"  generated {path.name} in {time.perf_counter() - started:.1f} s")


# -- content, read with sqlite3 ---------------------------------------------------------------
def content_counts(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        one = lambda sql: int(con.execute(sql).fetchone()[0])  # noqa: E731
        return {"runs": one("SELECT count(*) FROM runs"), "params": one("SELECT count(*) FROM params"),
                "tags": one("SELECT count(*) FROM tags WHERE key NOT LIKE 'braid.%'"),
                "metric_points": one("SELECT count(*) FROM metrics")}


def source_ids(db: Path) -> dict[str, str]:
    """Target run id -> source run id, from the braid.source_id tags."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        return dict(con.execute("SELECT run_uuid, value FROM tags WHERE key = ?", (SOURCE_ID_TAG,)).fetchall())


def run_content(db: Path, run_uuid: str) -> dict[str, Any]:
    """One run as a comparable value: info, params, tags (not braid's) and every metric point."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        info = con.execute("SELECT name, status, start_time, end_time, user_id FROM runs WHERE run_uuid = ?",
                           (run_uuid,)).fetchone()
        params = sorted(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_uuid,)).fetchall())
        tags = sorted(con.execute("SELECT key, value FROM tags WHERE run_uuid = ? AND key NOT LIKE 'braid.%'",
                                  (run_uuid,)).fetchall())
        points = sorted(con.execute("SELECT key, step, timestamp, value, is_nan FROM metrics WHERE run_uuid = ?",
                                    (run_uuid,)).fetchall())
        latest = sorted(con.execute("SELECT key, step, timestamp, value FROM latest_metrics WHERE run_uuid = ?",
                                    (run_uuid,)).fetchall())
    return {"info": info, "params": params, "tags": tags, "points": points, "latest": latest}


def check_target(label: str, source: Path, target: Path, copied: list[str] | None, seed: int) -> dict[str, Any]:
    """Problems (empty when fine) and counts: `target` holds the source's runs (all, or `copied`)."""
    problems: list[str] = []
    mapping = source_ids(target)  # target id -> source id
    back = {s: t for t, s in mapping.items()}
    src_counts, tgt_counts = content_counts(source), content_counts(target)
    with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as con:
        all_src = [r[0] for r in con.execute("SELECT run_uuid FROM runs ORDER BY run_uuid")]
    wanted = all_src if copied is None else sorted(copied)
    if copied is None:
        if tgt_counts != src_counts:
            problems.append(f"{label}: counts {tgt_counts} != source {src_counts}")
    else:  # a sampled copy: the source's per-run shape times the runs copied
        scale = len(copied) / len(all_src)
        expect = {k: round(v * scale) for k, v in src_counts.items()}
        if tgt_counts != expect:
            problems.append(f"{label}: counts {tgt_counts} != {expect} expected for {len(copied)} copied runs")
    if sorted(back) != wanted:
        problems.append(f"{label}: runs carried {len(back)}, expected {len(wanted)} "
                        f"({len(set(back) ^ set(wanted))} not in both)")
    sample = random.Random(seed).sample(wanted, min(CHECK_SAMPLE, len(wanted)))
    compared = 0
    for run in sample:
        if run not in back:
            continue
        a, b = run_content(source, run), run_content(target, back[run])
        for part in a:
            if a[part] != b[part]:
                problems.append(f"{label}: run {run} differs in {part}")
                break
        compared += len(a["points"])
    return {"problems": problems, "counts": tgt_counts, "sampled_runs": len(sample), "sampled_points": compared}


# -- 2. braid ---------------------------------------------------------------------------------
class Phases:
    """Wall time of migrate()'s phases, by wrapping (never changing) the functions it calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._reads = 0

    def _timed(self, name: Callable[[], str], fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            label = name()
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started
        return wrapper

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import braid.unify.migrate as mig
        from braid.unify.migrate import _mlflow_writer

        def read_label() -> str:
            self._reads += 1
            return "source read (read_mlflow)" if self._reads == 1 else "target read-back (read_mlflow)"

        writer = _mlflow_writer.MlflowWriter
        saved = (mig.read_mlflow, mig.verify, writer.runs, writer.__init__)
        mig.read_mlflow = self._timed(read_label, saved[0])
        mig.verify = self._timed(lambda: "verify (compare graphs)", saved[1])
        writer.runs = self._timed(lambda: "write runs (MlflowWriter.runs)", saved[2])
        writer.__init__ = self._timed(lambda: "open target (MlflowWriter(), creates its schema)", saved[3])
        try:
            yield
        finally:
            mig.read_mlflow, mig.verify, writer.runs, writer.__init__ = saved


def braid_migrate(source_db: Path, target_uri: str, work: Path, name: str) -> tuple[float, Any, dict[str, float]]:
    from braid.unify.migrate import migrate
    from braid.unify.source import SourceSpec

    src = SourceSpec("old", "mlflow", {"uri": f"sqlite:///{source_db}"}, base_dir=work)
    tgt = SourceSpec(name, "mlflow", {"uri": target_uri}, base_dir=work)

    def progress(section: str, n: int, total: int | None) -> None:
        if n % 50 == 0 or n == total:
            _status(f"  braid {section}: {n:,} / {total or 0:,}")

    phases = Phases()
    with phases.installed():
        started = time.perf_counter()
        report = migrate(src, tgt, catalog=work / f"catalog-{name}", artifact_root=work / f"artifacts-{name}",
                         progress=progress)
        seconds = time.perf_counter() - started
    _status("")
    return seconds, report, phases.seconds


# -- 3. the baseline --------------------------------------------------------------------------
def client_copy(source_uri: str, target_uri: str, sample: int | None, seed: int) -> dict[str, Any]:
    """Copy runs with plain MlflowClient calls; all of them, or a fixed seeded sample."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag, ViewType

    src, tgt = MlflowClient(source_uri), MlflowClient(target_uri)
    # untimed warm-up, in the client's favour: builds the engines and creates the target's schema
    # (braid's timed call includes that: see "open target" in its phases)
    src.search_experiments(view_type=ViewType.ALL, max_results=1)
    tgt.search_experiments(view_type=ViewType.ALL, max_results=1)

    started = time.perf_counter()
    experiments = {e.experiment_id: e for e in src.search_experiments(view_type=ViewType.ALL)}
    listed, token = [], None
    while True:
        page = src.search_runs(list(experiments), run_view_type=ViewType.ACTIVE_ONLY, max_results=50_000,
                               page_token=token)
        listed += [(r.info.run_id, r.info.experiment_id) for r in page]
        token = page.token
        if not token:
            break
    list_s = time.perf_counter() - started
    order = sorted(listed)
    random.Random(seed).shuffle(order)
    if sample is not None:
        order = order[:sample]

    started = time.perf_counter()
    target_exp: dict[str, str] = {}
    copied: list[str] = []
    points = 0
    for n, (run_id, exp_id) in enumerate(order):
        if exp_id not in target_exp:
            target_exp[exp_id] = tgt.create_experiment(experiments[exp_id].name)
        run = src.get_run(run_id)
        history = [m for key in run.data.metrics for m in src.get_metric_history(run_id, key)]
        tags = dict(run.data.tags)
        name = tags.pop("mlflow.runName", run.info.run_name)
        new = tgt.create_run(target_exp[exp_id], start_time=run.info.start_time, run_name=name,
                             tags={SOURCE_ID_TAG: run_id, "mlflow.user": tags.pop("mlflow.user", run.info.user_id)})
        new_id = new.info.run_id
        params = [Param(k, v) for k, v in run.data.params.items()]
        run_tags = [RunTag(k, v) for k, v in tags.items()]
        for lo in range(0, len(params), PARAMS_TAGS_PER_BATCH):
            tgt.log_batch(new_id, params=params[lo:lo + PARAMS_TAGS_PER_BATCH])
        for lo in range(0, len(run_tags), PARAMS_TAGS_PER_BATCH):
            tgt.log_batch(new_id, tags=run_tags[lo:lo + PARAMS_TAGS_PER_BATCH])
        metrics = [Metric(m.key, m.value, m.timestamp, m.step) for m in history]
        for lo in range(0, len(metrics), METRICS_PER_BATCH):
            tgt.log_batch(new_id, metrics=metrics[lo:lo + METRICS_PER_BATCH])
        tgt.set_terminated(new_id, run.info.status, end_time=run.info.end_time)
        copied.append(run_id)
        points += len(history)
        elapsed = time.perf_counter() - started
        if sample is None and n + 1 == PILOT and elapsed / PILOT * len(order) > BUDGET_S:
            # too slow to copy everything in the budget: stop at a fixed sample (the first
            # AUTO_SAMPLE runs of the seeded order) and extrapolate
            order = order[:AUTO_SAMPLE]
        if n + 1 >= len(order):
            break
        if n % 20 == 19:
            _status(f"  client copy: {n + 1:,} / {len(order):,} runs ({elapsed:.0f} s)")
    copy_s = time.perf_counter() - started
    _status("")
    scale = len(listed) / len(copied) if copied else 1.0
    return {"list_s": list_s, "copy_s": copy_s, "copy_est_s": copy_s * scale, "total_est_s": list_s + copy_s * scale,
            "sampled": len(copied) < len(listed), "copied_runs": len(copied), "runs": len(listed),
            "copied": copied, "points": points}


# -- mlflow server --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(backend_uri: str, workdir: Path, timeout: float = 90.0) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (as tests/conftest.py::mlflow_server starts it)."""
    port = _free_port()
    url, log = f"http://127.0.0.1:{port}", workdir / f"server-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", backend_uri,
             "--default-artifact-root", str(workdir / "server-artifacts"), "--no-serve-artifacts"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer in {timeout} s")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- profile --------------------------------------------------------------------------------
def profile_migrate(source_db: Path, work: Path, top: int = 15) -> str:
    prof = cProfile.Profile()
    prof.enable()
    seconds, _, _ = braid_migrate(source_db, f"sqlite:///{work / 'profiled.db'}", work, "profiled")
    prof.disable()
    text = [f"cProfile of one braid migrate into a fresh sqlite store ({seconds:.2f} s under the profiler)"]
    for order in ("cumulative", "tottime"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(order).print_stats(top)
        body = buf.getvalue()
        text += [f"--- top {top} by {order} ---", body[body.find("   ncalls"):].rstrip()]
    return "\n".join(text)


# -- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000, help="runs in the source store (default 1000)")
    ap.add_argument("--metrics", type=int, default=20, help="metric keys per run (default 20)")
    ap.add_argument("--steps", type=int, default=100, help="steps per metric key (default 100)")
    ap.add_argument("--baseline-sample", type=int, default=None,
                    help=f"runs the client copies (default: all if projected under {BUDGET_S / 60:.0f} min, "
                         f"else {AUTO_SAMPLE})")
    ap.add_argument("--server", action="store_true", help="also migrate into a real mlflow server")
    ap.add_argument("--profile", action="store_true", help="cProfile one full braid migrate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if min(args.runs, args.metrics, args.steps) < 1:
        ap.error("--runs, --metrics and --steps must be at least 1")

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    points = args.runs * args.metrics * args.steps
    print(f"source: {args.runs:,} runs x {N_PARAMS} params x {args.metrics} metrics x {args.steps} steps "
          f"= {points:,} metric points")
    db = store_path(args.runs, args.metrics, args.steps)
    if db.is_file():
        print(f"  cached: {db.relative_to(HERE.parent)}")
    else:
        generate(db, args.runs, args.metrics, args.steps, args.seed)
    work = OUT / f"migrate-work-{args.runs}x{args.metrics}x{args.steps}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    # 2. braid
    braid_db = work / "braid-target.db"
    braid_s, report, phases = braid_migrate(db, f"sqlite:///{braid_db}", work, "new")
    print(f"  braid migrate: {braid_s:.2f} s (verified={report.verified})")
    for label, s in phases.items():
        print(f"    {label}: {s:.2f} s")

    server: dict[str, Any] | None = None
    if args.server:
        with mlflow_server(f"sqlite:///{work / 'server-backend.db'}", work) as url:
            server_s, server_report, server_phases = braid_migrate(db, url, work, "server")
        server = {"seconds": server_s, "verified": server_report.verified, "phases": server_phases}
        print(f"  braid migrate to mlflow server: {server_s:.2f} s (verified={server_report.verified})")

    # 3. the baseline
    base_db = work / "client-target.db"
    print("  client: search_runs, then per run get_run + get_metric_history per key + create_run + log_batch "
          "+ set_terminated ...")
    client = client_copy(f"sqlite:///{db}", f"sqlite:///{base_db}", args.baseline_sample, args.seed)
    print(f"  client copy: {client['list_s'] + client['copy_s']:.2f} s for {client['copied_runs']:,} runs")

    # 4. content
    braid_check = check_target("braid", db, braid_db, None, args.seed)
    client_check = check_target("client", db, base_db, client["copied"] if client["sampled"] else None, args.seed)
    problems = braid_check["problems"] + client_check["problems"]
    if not report.verified:
        problems.append(f"braid's report is not verified:\n{report.summary()}")
    if server is not None and not server["verified"]:
        problems.append("braid's migrate to the mlflow server is not verified")

    # 5. the table
    client_s = client["total_est_s"]
    ratio = client_s / braid_s
    est = " (extrapolated)" if client["sampled"] else ""
    w = 62

    def row(label: str, value: str) -> None:
        print(f"{label:<{w}} {value:>12}")

    print()
    print(f"braid migrate vs MlflowClient copy: {args.runs:,} runs x {args.metrics} metrics x {args.steps} steps "
          f"({points:,} points), sqlite -> sqlite, mlflow {mlflow.__version__}, {os.cpu_count()} cores")
    row("path", "seconds")
    print("-" * (w + 13))
    row("braid migrate (one call: read, plan, write, read back, verify)", f"{braid_s:.2f}")
    for label, s in phases.items():
        row(f"  {label}", f"{s:.2f}")
    row("  other (plan, report, experiments, registry, id map)", f"{braid_s - sum(phases.values()):.2f}")
    if server is not None:
        row("braid migrate to mlflow server (sqlite backend)", f"{server['seconds']:.2f}")
    row("client: search_runs (list the runs)", f"{client['list_s']:.2f}")
    if client["sampled"]:
        row(f"client: copy {client['copied_runs']:,} sampled runs", f"{client['copy_s']:.2f}")
    row(f"client: copy all {client['runs']:,} runs{est}", f"{client['copy_est_s']:.2f}")
    row("client total" + est, f"{client_s:.2f}")
    print("-" * (w + 13))
    row("braid points/s (whole call)", f"{points / braid_s:,.0f}")
    if "write runs (MlflowWriter.runs)" in phases:
        row("braid points/s (writing runs only)", f"{points / phases['write runs (MlflowWriter.runs)']:,.0f}")
    row("client points/s" + est, f"{points / client_s:,.0f}")
    row("ratio client / braid", f"{ratio:.2f}x")
    row("goal", f">= {GOAL:.0f}x")
    row("verdict", "MET" if ratio >= GOAL else "NOT MET")
    if client["sampled"]:
        print(f"note: the client copied {client['copied_runs']:,} runs of {client['runs']:,} (a seeded random "
              f"sample) and its copy time was scaled linearly by {client['runs'] / client['copied_runs']:.1f}")

    result = {
        "runs": args.runs, "metrics": args.metrics, "steps": args.steps, "params": N_PARAMS, "points": points,
        "braid_s": braid_s, "braid_phases_s": phases, "server": server,
        "client_list_s": client["list_s"], "client_copy_s": client["copy_s"], "client_copied_runs": client["copied_runs"],
        "client_sampled": client["sampled"], "client_total_s": client_s, "ratio": ratio, "goal": GOAL,
        "met": ratio >= GOAL, "braid_points_per_s": points / braid_s, "client_points_per_s": points / client_s,
        "verified": report.verified, "checks": {"braid": {k: v for k, v in braid_check.items()},
                                                 "client": {k: v for k, v in client_check.items()}},
        "mlflow": mlflow.__version__, "python": platform.python_version(), "cores": os.cpu_count(),
    }
    out = OUT / f"migrate-{args.runs}x{args.metrics}x{args.steps}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out.relative_to(HERE.parent)}")
    if problems:
        print("\nCONTENT MISMATCH:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"content check: OK (braid: {braid_check['counts']}; client: {client_check['counts']}; "
          f"{braid_check['sampled_runs']} runs compared point by point in each, "
          f"{braid_check['sampled_points']:,} points)")
    if args.profile:  # last: the numbers above are already printed and saved
        text = profile_migrate(db, work)
        print()
        print(text)
        (OUT / f"migrate-profile-{args.runs}x{args.metrics}x{args.steps}.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
