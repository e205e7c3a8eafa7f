"""Query benchmark: issue 5's 8 example queries on braid against DuckDB running the emitted SQL.

Builds (or reuses) a synthetic multi-tool catalog of `--nodes` nodes and about `--edges` edges
(default 1,000,000 / 3,000,000), written with the real `Writer` as a generation that
`open_catalog` opens, then times, in the same run:

- braid: `Catalog.query(sql, params)` for each example of `unify/query/_reference.py`, the
  catalog opened once and its traversal index built once (both reported separately, with each
  example's first run); the median of `--repeat` runs after that first (warm-up) run;
- DuckDB: the same query as braid emits it (`emit_sql(..., engine="duckdb")`: graph functions
  become WITH RECURSIVE over the catalog's Parquet files), run by `duckdb` in a subprocess per
  example so a run past `--timeout` seconds is killed and reported instead of hanging. "cold"
  is the first run in a fresh process (OS page cache already warm), "warm" the median of the
  runs after it in the same connection (Parquet metadata cached). Ratios compare braid's
  median with DuckDB's warm median: the kinder number for DuckDB.

Rows from both engines are compared (the same multiset of rows), and each example is judged
against the issue's goals: under 200 ms, and, for the lineage queries (those calling
upstream / downstream / paths), at least 10x faster than DuckDB. A DuckDB run that timed out
gives a lower bound for the ratio (timeout / braid time).

The synthetic lineage: four sources (mlflow, mlflow-lab, wandb, dvc), about 100 runs per
project. Runs read datasets, models and artifacts written earlier in their project (mostly
recent ones, so chains are a few dozen hops deep), the project's raw datasets and a few popular
shared ones; each run runs a git commit of its project's repository (repos are shared by
projects of several tools: one `git:<sha>` node); models are registered as model versions (the
registry table, with events); some raw datasets are copies of another project's output, whose
bytes (md5 and size) braid's identity rules turn into `same_as` stars across tools, which is
how lineage crosses from one project (and tool) to another. Runs have params and an `accuracy`
and a `loss` history.

    .venv/bin/python bench/bench_query.py                            # full size
    .venv/bin/python bench/bench_query.py --nodes 100000 --edges 300000 --timeout 20
    .venv/bin/python bench/bench_query.py --profile 2                # cProfile the 2 slowest

The catalog is cached under bench/out/ (reused when the same size and seed are asked for;
`--rebuild` makes it again); results go to bench/out/query-<nodes>-<edges>[-only-<n>...].json. The traversal walk that ran is printed: the compiled
`unify/_walk.c` when built, else numpy (`BRAID_WALK_PURE=1` times the numpy one). The machine's
load shows in the numbers: compare ratios rather than absolute times on a busy machine.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import queue
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
GOAL_MS = 200.0
GOAL_RATIO = 10.0
SOURCES = (("mlflow", "mlflow", 0.35), ("mlflow-lab", "mlflow", 0.10), ("wandb", "wandb", 0.35), ("dvc", "dvc", 0.20))
EPOCH = datetime(2023, 1, 1, tzinfo=UTC)
HOUR = 3_600_000_000  # µs
USERS = [f"user{i:03d}" for i in range(200)]
PARAMS = {
    "lr": ["0.1", "0.03", "0.01", "0.003", "0.001"], "batch_size": ["16", "32", "64", "128", "256"],
    "epochs": ["5", "10", "20", "50"], "optimizer": ["adam", "sgd", "adamw"], "seed": [str(i) for i in range(10)],
    "dropout": ["0.0", "0.1", "0.2", "0.5"], "max_depth": ["4", "6", "8", "12"],
}


# -- the synthetic catalog ------------------------------------------------------------------------
def _hex(rng: np.random.Generator, n: int, chars: int) -> list[str]:
    h = rng.bytes(n * chars // 2 + 1).hex()
    return [h[i : i + chars] for i in range(0, n * chars, chars)]


def _latest_before(rng: np.random.Generator, producer: np.ndarray, first: np.ndarray, cutoff: np.ndarray) -> np.ndarray:
    """For each (first, cutoff) run range, an item produced by a run in [first, cutoff], one of
    the last few such (geometric look-back); -1 where there is none."""
    lo = np.searchsorted(producer, first, "left")
    hi = np.searchsorted(producer, cutoff, "right")
    back = np.minimum(rng.geometric(0.4, first.size) - 1, np.maximum(hi - lo - 1, 0))
    return np.where(hi > lo, hi - 1 - back, -1)


def synthesise(n_nodes: int, n_edges: int, seed: int) -> tuple[dict[str, dict[str, pl.DataFrame]], dict[str, Any]]:
    """Every source's tables (not yet canonical), and counts for the report."""
    from braid.unify.schema import conform

    rng = np.random.default_rng(seed)
    R = n_nodes // 5  # runs
    V = max(10, n_nodes // 200)  # model versions
    C = max(10, n_nodes // 50)  # commits
    MO = n_nodes // 10  # models
    D = int(n_nodes * 0.3)  # datasets
    A = n_nodes - R - V - C - MO - D  # artifacts (some are files inside a dataset)
    D_raw = D * 3 // 20
    G = max(10, D_raw // 80)  # popular shared datasets, each held by every source (4G nodes)
    D_local, D_prod = D_raw - len(SOURCES) * G, D - D_raw
    A_file = A * 2 // 5
    A_out = A - A_file
    P = max(10, R // 100)  # projects

    # projects, their sources and repositories; runs in (project, position) order = time order
    proj_source = rng.choice(len(SOURCES), P, p=[s[2] for s in SOURCES])
    proj_start = np.sort(rng.integers(0, int(1.5 * 365 * 24), P)).astype(np.int64) * HOUR
    run_proj = np.sort(rng.integers(0, P, R))
    proj_first = np.searchsorted(run_proj, np.arange(P))
    proj_runs = np.bincount(run_proj, minlength=P)
    run_pos = np.arange(R) - proj_first[run_proj]
    proj_step = rng.integers(1, 8, P) * HOUR
    run_start = proj_start[run_proj] + run_pos * proj_step[run_proj] + rng.integers(0, HOUR, R)
    run_end = run_start + (rng.lognormal(7.5, 1.0, R) * 1e6).astype(np.int64)
    run_source = proj_source[run_proj]

    # what runs wrote: datasets, models, artifacts, each by a producer run (sorted: time order)
    ds_producer = np.sort(rng.integers(0, R, D_prod))
    model_producer = np.sort(rng.integers(0, R, MO))
    art_producer = np.sort(rng.integers(0, R, A_out))

    # raw datasets: each project's own, and popular shared ones any project may read (Zipf),
    # each in every source (a run reads its own tool's record of it)
    local_proj = np.sort(rng.integers(0, P, D_local))
    local_first = np.searchsorted(local_proj, np.arange(P))
    local_count = np.bincount(local_proj, minlength=P)
    global_source = np.tile(np.arange(len(SOURCES)), G)

    # edges other than inputs, to size the inputs to the edge target
    parent = np.flatnonzero((run_pos > 0) & (rng.random(R) < 0.1))
    same_as_guess = n_nodes // 300
    fixed = D_prod + MO + A_out + A_file + R + V + parent.size + same_as_guess
    E_in = max(R, n_edges - fixed)
    # drawn 10% over, then one edge per (input, run) pair kept, down to E_in at random
    per_run = np.maximum(1, rng.poisson(1.1 * E_in / R, R))
    e_run = np.repeat(np.arange(R), per_run)
    k = run_pos[e_run]
    first = proj_first[run_proj[e_run]]
    # a cutoff among the earlier runs of the project, biased towards recent ones
    cutoff = first + np.floor(k * np.sqrt(rng.random(e_run.size))).astype(np.int64) - 1
    cutoff = np.where(k > 0, np.maximum(cutoff, first), first - 1)
    kind_draw = rng.random(e_run.size)
    prod_ds = np.where(k > 0, _latest_before(rng, ds_producer, first, cutoff), -1)
    prod_model = np.where(k > 0, _latest_before(rng, model_producer, first, cutoff), -1)
    prod_art = np.where(k > 0, _latest_before(rng, art_producer, first, cutoff), -1)
    p_of = run_proj[e_run]
    has_local = local_count[p_of] > 0
    local_pick = local_first[p_of] + (rng.random(e_run.size) * np.maximum(local_count[p_of], 1)).astype(np.int64)
    global_pick = np.minimum(rng.zipf(1.6, e_run.size) - 1, G - 1) * len(SOURCES) + run_source[e_run]
    # node numbering: runs | produced datasets | local raws | shared raws | models | artifacts out |
    #                 artifact files | model versions | commits
    o_ds, o_local = R, R + D_prod
    o_global = o_local + D_local
    o_model = o_global + len(SOURCES) * G
    o_art = o_model + MO
    o_file = o_art + A_out
    o_mv = o_file + A_file
    o_code = o_mv + V
    raw = np.where(has_local & (kind_draw < 0.85), o_local + local_pick, o_global + global_pick)
    src = np.where((kind_draw < 0.45) & (prod_ds >= 0), o_ds + prod_ds,
          np.where((kind_draw >= 0.67) & (kind_draw < 0.82) & (prod_model >= 0), o_model + prod_model,
          np.where((kind_draw >= 0.82) & (prod_art >= 0), o_art + prod_art, raw)))
    _, once = np.unique(src * R + e_run, return_index=True)
    once = np.sort(rng.choice(once, min(E_in, once.size), replace=False))
    src, e_run = src[once], e_run[once]
    edge_parts = [
        (src, e_run, "input", run_start[e_run]),
        (ds_producer, o_ds + np.arange(D_prod), "output", run_end[ds_producer]),
        (model_producer, o_model + np.arange(MO), "output", run_end[model_producer]),
        (art_producer, o_art + np.arange(A_out), "output", run_end[art_producer]),
        (parent - 1, parent, "parent_of", run_start[parent]),
    ]
    # artifact files inside produced datasets
    file_ds = rng.integers(0, D_prod, A_file)
    edge_parts.append((o_file + np.arange(A_file), o_ds + file_ds, "part_of", run_end[ds_producer[file_ds]]))
    # model versions: some models registered, numbered per project in time order
    registered = np.sort(rng.choice(MO, V, replace=False))
    mv_proj = run_proj[model_producer[registered]]
    mv_created = run_end[model_producer[registered]] + rng.integers(1, 48, V) * HOUR
    mv_version = np.zeros(V, np.int64)
    order = np.lexsort((mv_created, mv_proj))
    grp_start = np.searchsorted(mv_proj[order], mv_proj[order])
    mv_version[order] = np.arange(V) - grp_start + 1
    edge_parts.append((o_model + registered, o_mv + np.arange(V), "registered_as", mv_created))
    # code: a repository per one or two projects (across tools), commits in order over its runs
    repos = max(1, P // 2)
    proj_repo = rng.integers(0, repos, P)
    commit_repo = np.sort(rng.integers(0, repos, C))
    repo_first = np.searchsorted(commit_repo, np.arange(repos))
    repo_count = np.bincount(commit_repo, minlength=repos)
    r_repo = proj_repo[run_proj]
    with_code = repo_count[r_repo] > 0
    run_commit = repo_first[r_repo] + (run_pos * repo_count[r_repo] // np.maximum(proj_runs[run_proj], 1))
    coded = np.flatnonzero(with_code)
    edge_parts.append((o_code + run_commit[coded], coded, "code", run_start[coded]))

    # node attributes
    n_total = o_code + C
    kinds = pl.Series(["run", "dataset", "model", "artifact", "model_version", "code"])
    kind_code = np.concatenate([np.full(R, 0), np.full(D, 1), np.full(MO, 2), np.full(A, 3), np.full(V, 4), np.full(C, 5)])
    file_proj = run_proj[ds_producer[file_ds]]
    node_proj = np.concatenate([
        run_proj, run_proj[ds_producer], local_proj, np.full(len(SOURCES) * G, -1), run_proj[model_producer],
        run_proj[art_producer], file_proj, mv_proj, np.full(C, -1)])
    node_source = np.concatenate([
        run_source, run_source[ds_producer], proj_source[local_proj], global_source,
        run_source[model_producer], run_source[art_producer], proj_source[file_proj], proj_source[mv_proj],
        np.full(C, -1)])
    # created: producers' end; raws before their project began; shared raws at the start
    local_created = np.maximum(proj_start[local_proj] - rng.integers(1, 24 * 30, D_local) * HOUR, 0)
    node_created = np.concatenate([
        run_start, run_end[ds_producer], local_created, np.zeros(len(SOURCES) * G, np.int64), run_end[model_producer],
        run_end[art_producer], run_end[ds_producer[file_ds]], mv_created, np.full(C, -1)])
    data = np.zeros(n_total, bool)
    data[R:o_mv] = True
    sizes = np.where(data, rng.lognormal(14, 2.5, n_total).astype(np.int64) + 1, -1)
    digests = np.array(_hex(rng, n_total, 32), dtype=object)
    # same bytes elsewhere: some project raws are copies of an earlier project's output (the
    # cross-project, mostly cross-tool, lineage); some shared datasets are held by two tools
    linked = np.flatnonzero((rng.random(P) < 0.6) & (np.arange(P) > 0) & (local_count > 0))
    links = np.repeat(linked, rng.choice([1, 2], linked.size, p=[0.7, 0.3]))
    upstream_proj = (rng.random(links.size) * links).astype(np.int64)
    copy = o_local + local_first[links] + (rng.random(links.size) * local_count[links]).astype(np.int64)
    # an output written late in the upstream project
    up_lo = np.searchsorted(ds_producer, proj_first[upstream_proj])
    up_hi = np.searchsorted(ds_producer, proj_first[upstream_proj] + proj_runs[upstream_proj])
    ok = up_hi > up_lo
    copy, up_lo, up_hi = copy[ok], up_lo[ok], up_hi[ok]
    original = o_ds + up_lo + ((0.5 + 0.5 * rng.random(copy.size)) * (up_hi - up_lo)).astype(np.int64).clip(0, None)
    original = np.minimum(original, o_ds + up_hi - 1)
    digests[copy] = digests[original]
    sizes[copy] = sizes[original]
    node_created[copy] = np.maximum(node_created[copy], node_created[original] + HOUR)
    # half the shared datasets are the same bytes in every tool (a same_as star of 4)
    shared = np.flatnonzero(rng.random(G) < 0.5)
    for s in range(1, len(SOURCES)):
        digests[o_global + shared * len(SOURCES) + s] = digests[o_global + shared * len(SOURCES)]
        sizes[o_global + shared * len(SOURCES) + s] = sizes[o_global + shared * len(SOURCES)]

    # ids
    source_names = pl.Series([s[0] for s in SOURCES] + [None], dtype=pl.String)
    tool_names = pl.Series([s[1] for s in SOURCES] + [None], dtype=pl.String)
    sha = _hex(rng, C, 40)
    native = np.array(_hex(rng, n_total, 12), dtype=object)
    proj_name = pl.Series([f"proj-{p:05d}" for p in range(P)] + ["shared"], dtype=pl.String)
    nodes = pl.DataFrame({
        "n": np.arange(n_total), "kind": kinds.gather(kind_code),
        "source": source_names.gather(np.where(node_source < 0, len(SOURCES), node_source)),
        "tool": tool_names.gather(np.where(node_source < 0, len(SOURCES), node_source)),
        "project": proj_name.gather(np.where(node_proj < 0, P, node_proj)),
        "native": pl.Series(native.tolist(), dtype=pl.String),
        "digest": pl.Series(digests.tolist(), dtype=pl.String),
        "size": sizes, "created_us": node_created,
    })
    version = np.zeros(n_total, np.int64)
    version[o_mv:o_code] = mv_version
    pos = np.zeros(n_total, np.int64)
    pos[:R] = run_pos
    nodes = nodes.with_columns(version=pl.Series(version), pos=pl.Series(pos))
    kind = pl.col("kind")
    code_sha = pl.Series("sha", [""] * (n_total - C) + sha, dtype=pl.String)
    nodes = nodes.with_columns(code_sha=code_sha)
    rel = pl.col("n")
    name = (pl.when(kind == "run").then(pl.format("{}-{}", "project", "pos"))
            .when(kind == "dataset").then(pl.format("data/{}/d{}.parquet", "project", rel))
            .when(kind == "model").then(pl.format("m{}", rel))
            .when(kind == "artifact").then(pl.format("files/a{}.json", rel))
            .when(kind == "model_version").then(pl.format("{}-model", "project"))
            .otherwise(pl.col("code_sha").str.slice(0, 7)))
    node_id = (pl.when(kind == "code").then(pl.format("git:{}", "code_sha"))
               .when(kind == "run").then(pl.format("{}:run/{}{}", "source", "native", rel))
               .when(kind == "model_version").then(pl.format("{}:model_version/{}-model/{}", "source", "project", "version"))
               .otherwise(pl.format("{}:{}/{}/{}@{}", "source", "kind", "project", rel, "native")))
    created = (pl.lit(EPOCH).dt.timestamp("us") + pl.col("created_us")).cast(pl.Datetime("us", "UTC"))
    created = pl.when(pl.col("created_us") >= 0).then(created)
    nodes = nodes.with_columns(
        id=node_id, name=name, created_at=created,
        digest=pl.when(pl.col("size") >= 0).then(pl.format("md5:{}", "digest")),
        size=pl.when(pl.col("size") >= 0).then("size"),
        version=pl.when(kind == "model_version").then(pl.col("version").cast(pl.String)),
        uri=pl.when(kind.is_in(["dataset", "model", "artifact"]))
        .then(pl.format("s3://{}-store/{}/{}", "source", "project", "native")),
        status=pl.when(kind == "run").then(pl.lit("FINISHED")).when(kind == "model_version").then(pl.lit("READY")),
        user=pl.when(kind == "run").then(pl.Series(USERS).gather(rng.integers(0, len(USERS), n_total))),
    ).with_columns(updated_at=pl.col("created_at"))
    ids = nodes.get_column("id")

    # edges
    srcs, dsts, ekinds, etimes = [], [], [], []
    for s, d, kname, t in edge_parts:
        srcs.append(np.asarray(s, np.int64))
        dsts.append(np.asarray(d, np.int64))
        ekinds.append(np.full(len(s), kname, object))
        etimes.append(np.asarray(t, np.int64))
    e_src = np.concatenate(srcs)
    e_dst = np.concatenate(dsts)
    e_source = node_source[np.where(kind_code[e_dst] == 0, e_dst, e_src)]  # the run's (or data's) source
    e_source = np.where(e_source < 0, node_source[e_dst], e_source)
    edges = pl.DataFrame({
        "src": ids.gather(e_src), "dst": ids.gather(e_dst), "kind": pl.Series(np.concatenate(ekinds).tolist()),
        "source": source_names.gather(e_source),
        "created_at": (pl.Series(np.concatenate(etimes)) + int(EPOCH.timestamp() * 1e6)).cast(pl.Datetime("us", "UTC")),
    }).with_columns(attrs=pl.when(pl.col("kind") == "input").then(pl.lit('{"context": "training"}')))

    # runs, params, metrics, tags, registry
    runs = nodes.head(R).select(
        "id", "tool", "source", "project", "name", "status",
        started_at="created_at",
        ended_at=(pl.lit(EPOCH).dt.timestamp("us") + pl.Series(run_end)).cast(pl.Datetime("us", "UTC")),
        duration=pl.Series((run_end - run_start) / 1e6), user="user",
        git_commit=pl.Series([sha[c] if w else None for c, w in zip(run_commit.tolist(), with_code.tolist())],
                             dtype=pl.String),
        git_branch=pl.lit("main"), git_remote=pl.format("https://git.example.org/team/{}.git", "project"),
        host=pl.format("gpu-{}", (pl.col("n") % 64)), environment=pl.lit('{"python": "3.11.9", "os": "Linux"}'),
    )
    run_ids = runs.get_column("id")
    run_sources = runs.get_column("source")
    param_frames = []
    for key, choices in PARAMS.items():
        have = np.flatnonzero(rng.random(R) < 0.75)
        param_frames.append(pl.DataFrame({
            "run_id": run_ids.gather(have), "key": pl.Series([key] * have.size, dtype=pl.String),
            "value": pl.Series(choices).gather(rng.integers(0, len(choices), have.size)),
            "source": run_sources.gather(have)}))
    params = pl.concat(param_frames)
    quality = rng.beta(5, 2, R)
    metric_frames = []
    for key, mean_steps in (("accuracy", 2.0), ("loss", 1.0)):
        steps = 1 + np.minimum(rng.poisson(mean_steps, R), 6)
        row_run = np.repeat(np.arange(R), steps)
        step = np.arange(row_run.size) - np.repeat(np.cumsum(steps) - steps, steps)
        grow = 1 - 0.5 * np.exp(-step)
        value = quality[row_run] * grow + rng.normal(0, 0.01, row_run.size)
        if key == "loss":
            value = 1 / (value + 0.1)
        metric_frames.append(pl.DataFrame({
            "run_id": run_ids.gather(row_run), "key": pl.Series([key] * row_run.size, dtype=pl.String),
            "step": step.astype(np.int64),
            "timestamp": (pl.Series(run_start[row_run] + step * 60_000_000) + int(EPOCH.timestamp() * 1e6))
            .cast(pl.Datetime("us", "UTC")),
            "value": value, "source": run_sources.gather(row_run)}))
    metrics = pl.concat(metric_frames)
    tagged = np.flatnonzero(rng.random(R) < 0.5)
    tags = pl.DataFrame({"node_id": run_ids.gather(tagged), "key": pl.Series(["team"] * tagged.size, dtype=pl.String),
                         "value": pl.Series(["vision", "nlp", "tabular", "ranking"]).gather(tagged % 4),
                         "source": run_sources.gather(tagged)})
    mv_nodes = nodes.slice(o_mv, V)
    latest = mv_nodes.select(pl.col("version").cast(pl.Int64).max().over("name").cast(pl.String) == pl.col("version"))
    stage_of = pl.Series([None, "Staging", "Production", "Archived"], dtype=pl.String).gather(rng.integers(0, 4, V))
    registry = mv_nodes.select(
        model_version_id="id", name="name", version="version",
        aliases=pl.when(latest.to_series()).then(pl.lit(["champion"], pl.List(pl.String)))
        .otherwise(pl.lit([], pl.List(pl.String))),
        stage=stage_of, model_id=ids.gather(o_model + registered),
        run_id=ids.gather(model_producer[registered]),
        events=pl.concat_str([pl.lit('[{"event": "registered", "at": "'),
                              pl.col("created_at").dt.to_string("%Y-%m-%dT%H:%M:%SZ"), pl.lit('"}]')]),
        source="source",
    )

    node_cols = ["id", "kind", "tool", "source", "name", "version", "digest", "size", "uri", "created_at",
                 "updated_at", "status", "user"]
    per_source: dict[str, dict[str, pl.DataFrame]] = {}
    code_nodes = nodes.filter(kind == "code").select(node_cols)
    for s, (sname, _tool, _) in enumerate(SOURCES):
        own = nodes.filter(pl.col("source") == sname).select(node_cols)
        shas = runs.filter(pl.col("source") == sname).get_column("git_commit").drop_nulls().unique()
        code = code_nodes.filter(pl.col("id").is_in(("git:" + shas).implode())).with_columns(source=pl.lit(sname))
        per_source[sname] = {
            "nodes": conform("nodes", pl.concat([own, code])),
            "edges": conform("edges", edges.filter(pl.col("source") == sname)),
            "runs": conform("runs", runs.filter(pl.col("source") == sname)),
            "params": conform("params", params.filter(pl.col("source") == sname)),
            "metrics": conform("metrics", metrics.filter(pl.col("source") == sname)),
            "tags": conform("tags", tags.filter(pl.col("source") == sname)),
            "registry": conform("registry", registry.filter(pl.col("source") == sname)),
        }
    counts = {"runs": R, "datasets": D, "models": MO, "artifacts": A, "model_versions": V, "commits": C,
              "projects": P, "input_edges": int(e_run.size), "cross_project_copies": int(copy.size)}
    return per_source, counts


def build_catalog(root: Path, n_nodes: int, n_edges: int, seed: int) -> dict[str, Any]:
    """Write the synthetic catalog at `root` (a .braid folder) as one committed generation."""
    from braid.unify.identity import IDENTITY_SOURCE, same_as_edges
    from braid.unify.schema import canonical, check_graph
    from braid.unify.store import Manifest, SourceEntry, Writer

    started = time.perf_counter()
    tables, counts = synthesise(n_nodes, n_edges, seed)
    made = time.perf_counter() - started
    if root.exists():
        shutil.rmtree(root)
    manifest = Manifest()
    all_nodes = []
    with Writer(root) as writer:
        for sname, tool, _ in SOURCES:
            frames = {name: canonical(name, frame) for name, frame in tables[sname].items()}
            all_nodes.append(frames["nodes"])
            manifest.sources[sname] = SourceEntry(
                tool=tool, tables={name: writer.write_frame(sname, name, f) for name, f in frames.items()},
                cursor={"synthetic": True, "seed": seed})
        nodes = pl.concat(all_nodes).unique("id", keep="first")
        identity = same_as_edges(nodes)
        manifest.sources[IDENTITY_SOURCE] = SourceEntry(
            tool="braid", tables={"edges": writer.write_frame(IDENTITY_SOURCE, "edges", identity)})
        check_graph(nodes, pl.concat([tables[s[0]]["edges"].select("src", "dst", "kind") for s in SOURCES]))
        writer.commit(manifest)
    counts["same_as_edges"] = identity.height
    counts["synthesis_s"] = round(made, 2)
    counts["build_s"] = round(time.perf_counter() - started, 2)
    return counts


def ensure_catalog(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The catalog for these options: reused when already built, else built in a child process
    (so this process's memory holds only what the catalog loads)."""
    folder = OUT / f"query-catalog-{args.nodes}-{args.edges}-seed{args.seed}"
    root = folder / ".braid"
    info = folder / "built.json"
    if args.rebuild or not info.exists() or not (root / "manifest.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        info.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--build-only", str(root), "--nodes", str(args.nodes),
               "--edges", str(args.edges), "--seed", str(args.seed)]
        subprocess.run(cmd, check=True)
    return root, json.loads(info.read_text())


# -- choosing the examples' parameters ------------------------------------------------------------
def choose_params(cat: Any, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Deterministic parameters for the 8 examples, picked with braid's traversal engine."""
    from braid.unify.traversal import reach

    rng = np.random.default_rng(seed + 1)
    index = cat.index
    registry = cat.table("registry").sort("model_version_id")
    sample = registry.get_column("model_version_id").gather(
        np.sort(rng.choice(registry.height, min(200, registry.height), replace=False)))
    best: tuple[int, int, str] | None = None
    for mv in sample.to_list():
        found = reach(index, index.lookup([mv]), direction="upstream")
        key = (int(found.depth.max()) if len(found) else 0, len(found), mv)
        best = key if best is None or key[:2] > best[:2] else best
    assert best is not None
    mv_depth, mv_size, mv = best
    mv_dense = int(index.lookup([mv])[0])
    mv_tool = index.tools[index.node_tool[mv_dense]]

    # the dataset read by the most runs, among those with a model version within 5 hops
    dataset_code = index.kinds.index("dataset")
    degree = index.forward.degree.copy()
    degree[index.node_kind != dataset_code] = -1
    version_code = index.kinds.index("model_version")
    wide = None
    for cand in np.argsort(-degree, kind="stable")[:20].tolist():
        found = reach(index, np.array([cand]), direction="downstream", depth=5)
        if (index.node_kind[found.node] == version_code).any():
            if wide is None or len(found) > wide[1]:
                wide = (cand, len(found))
    assert wide is not None, "no dataset has a model version within 5 hops"
    wide_id = index.ids[wide[0]]

    # a dataset of another tool upstream of that version: the path crosses tools
    up = reach(index, np.array([mv_dense]), direction="upstream")
    is_ds = index.node_kind[up.node] == dataset_code
    other = is_ds & (index.node_tool[up.node] != index.node_tool[mv_dense])
    pool = np.flatnonzero(other if other.any() else is_ds)
    by_depth = pool[np.lexsort((up.node[pool], up.depth[pool]))]
    path_from = int(up.node[by_depth[by_depth.size // 2]])
    path_id = index.ids[path_from]

    runs = cat.table("runs").sort("id")
    mlflow_runs = runs.filter(tool="mlflow").get_column("id")
    wandb_runs = runs.filter(tool="wandb").get_column("id")
    run_a = mlflow_runs[int(rng.integers(0, mlflow_runs.len()))]
    run_b = wandb_runs[int(rng.integers(0, wandb_runs.len()))]

    created = cat.node(mv)["created_at"]
    moment = created + timedelta(days=1)
    params = [
        {"model_version": mv},
        {"dataset": wide_id},
        {"dataset": path_id, "model_version": mv},
        {"metric": "accuracy"},
        {"run_a": run_a, "run_b": run_b},
        {"model_version": mv, "moment": moment},
        {},
        {},
    ]
    notes = {
        "model_version": mv, "model_version_tool": mv_tool, "upstream_nodes": mv_size, "upstream_depth": mv_depth,
        "wide_dataset": wide_id, "wide_downstream_5_hops": wide[1], "wide_dataset_readers": int(degree[wide[0]]),
        "path_from": path_id, "path_from_depth": int(up.depth[by_depth[by_depth.size // 2]]),
        "run_a": run_a, "run_b": run_b, "moment": moment.isoformat(),
    }
    return params, notes


# -- DuckDB in a child process --------------------------------------------------------------------
def duckdb_worker(sql_file: str, out_file: str, repeat: int, memory_limit: str, threads: int) -> None:
    """Run the SQL `repeat` times; one JSON line per run on stdout (flushed), rows of the first
    run written to `out_file`."""
    import duckdb

    text = Path(sql_file).read_text()
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET threads = {threads}")
    try:
        con.execute("SET parquet_metadata_cache = true")
    except duckdb.Error:
        pass
    for i in range(repeat):
        started = time.perf_counter()
        try:
            frame = con.sql(text).pl()
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            print(json.dumps({"run": i, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}), flush=True)
            return
        seconds = time.perf_counter() - started
        if i == 0:
            frame.write_parquet(out_file)
        print(json.dumps({"run": i, "seconds": seconds, "rows": frame.height}), flush=True)


def run_duckdb(text: str, name: str, *, repeat: int, timeout: float, memory_limit: str,
               threads: int) -> dict[str, Any]:
    """Cold (first) and warm (median of the rest) seconds, or how it failed."""
    tmp = OUT / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    sql_file, out_file = tmp / f"{name}.sql", tmp / f"{name}.parquet"
    sql_file.write_text(text)
    out_file.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--duckdb-worker", str(sql_file), str(out_file), "--repeat", str(repeat),
           "--memory-limit", memory_limit, "--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    times: list[float] = []
    result: dict[str, Any] = {"cold_s": None, "warm_s": None, "rows": None, "error": None}
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            proc.wait()
            if not times:
                result["error"] = f"timed out after {timeout:g} s"
            break
        if line is None:
            proc.wait()
            if proc.returncode and not times and result["error"] is None:
                assert proc.stderr is not None
                result["error"] = f"exit {proc.returncode}: {proc.stderr.read()[-300:]}"
            break
        row = json.loads(line)
        if "error" in row:
            result["error"] = row["error"]
            continue
        times.append(row["seconds"])
        result["rows"] = row["rows"]
        # a slow query gets fewer warm runs: each must fit the timeout too
        deadline = time.monotonic() + timeout
        if row["seconds"] > timeout / 4 and len(times) >= 2:
            proc.kill()
            proc.wait()
            break
    if times:
        result["cold_s"] = times[0]
        result["warm_s"] = statistics.median(times[1:]) if len(times) > 1 else None
        result["runs"] = len(times)
    result["frame"] = pl.read_parquet(out_file) if times and out_file.exists() else None
    return result


# -- comparison, timing, report -------------------------------------------------------------------
def compare(ours: pl.DataFrame, theirs: pl.DataFrame | None) -> str:
    """'same' or how the rows differ."""
    if theirs is None:
        return "n/a"
    if ours.columns != theirs.columns:
        return f"columns differ: {ours.columns} vs {theirs.columns}"
    a = sorted(map(repr, ours.rows()))
    b = sorted(map(repr, theirs.rows()))
    if a == b:
        return "same"
    only_a = len(set(a) - set(b))
    only_b = len(set(b) - set(a))
    example = next(iter(sorted(set(a) - set(b)) or sorted(set(b) - set(a))), "")
    return f"DIFFER: {only_a} rows only in braid, {only_b} only in duckdb (e.g. {example[:160]})"


def rss_mb() -> tuple[float, float]:
    """Resident and peak resident MB of this process."""
    status = Path("/proc/self/status").read_text()
    rss = float(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    hwm = float(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    return rss, hwm


def timed(fn: Any, repeat: int) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def is_lineage(sql: str) -> bool:
    return bool(re.search(r"\b(upstream|downstream|paths)\s*\(", sql))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=3_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="braid runs per example after the warm-up")
    parser.add_argument("--duckdb-repeat", type=int, default=3, help="DuckDB runs per example, the first cold")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a DuckDB run may take")
    parser.add_argument("--memory-limit", default="8GB", help="DuckDB's memory_limit")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="DuckDB's threads")
    parser.add_argument("--only", type=int, nargs="*", help="example numbers to run (1-8)")
    parser.add_argument("--no-duckdb", action="store_true")
    parser.add_argument("--profile", type=int, default=0, help="cProfile the N slowest braid examples")
    parser.add_argument("--rebuild", action="store_true", help="build the catalog even if cached")
    parser.add_argument("--build-only", metavar="ROOT", help=argparse.SUPPRESS)
    parser.add_argument("--duckdb-worker", nargs=2, metavar=("SQL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duckdb_worker:
        duckdb_worker(*args.duckdb_worker, args.repeat, args.memory_limit, args.threads)
        return 0
    if args.build_only:
        counts = build_catalog(Path(args.build_only), args.nodes, args.edges, args.seed)
        (Path(args.build_only).parent / "built.json").write_text(json.dumps(counts, indent=1))
        return 0

    import duckdb
    import sqlglot

    from braid.unify import _native, open_catalog
    from braid.unify.query import emit_sql
    from braid.unify.query._reference import EXAMPLES

    OUT.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, polars {pl.__version__}, duckdb {duckdb.__version__}, "
          f"sqlglot {sqlglot.__version__}, numpy {np.__version__}, cpus {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}")
    # the walk behind upstream/downstream: unify/_walk.c when built (BRAID_WALK_PURE=1 turns it off)
    walker = "compiled (braid.unify._walk)" if _native.walker is not None else "numpy (traversal.py)"
    print(f"traversal walk: {walker}")
    started = time.perf_counter()
    root, built = ensure_catalog(args)
    print(f"catalog {root}: {json.dumps(built)} (ready in {time.perf_counter() - started:.1f} s)")

    setup: dict[str, float] = {}
    t0 = time.perf_counter()
    cat = open_catalog(root)
    for name in ("nodes", "edges", "runs", "params", "metrics", "tags", "registry"):
        cat.table(name)
    setup["open_and_load_tables_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cat.index  # noqa: B018 - built once, timed
    setup["index_build_s"] = time.perf_counter() - t0
    rss, hwm = rss_mb()
    sizes = {name: cat.table(name).height for name in ("nodes", "edges", "runs", "params", "metrics", "tags", "registry")}
    print(f"tables: {json.dumps(sizes)}")
    print(f"open + load tables {setup['open_and_load_tables_s']:.2f} s, index build {setup['index_build_s']:.2f} s, "
          f"RSS after loading {rss:,.0f} MB (peak {hwm:,.0f} MB)")
    params, notes = choose_params(cat, args.seed)
    print("parameters: " + json.dumps(notes, indent=1, default=str))

    wanted = args.only or list(range(1, len(EXAMPLES) + 1))
    rows: list[dict[str, Any]] = []
    braid_frames: dict[int, pl.DataFrame] = {}
    for number in wanted:
        title, sql = EXAMPLES[number - 1]
        values = params[number - 1]
        first, _, result = timed(lambda: cat.query(sql, values), 1)
        median, times, result = timed(lambda: cat.query(sql, values), args.repeat)
        braid_frames[number] = result
        row = {"example": number, "title": title.splitlines()[0], "lineage": is_lineage(sql),
               "braid_first_s": first, "braid_median_s": median, "braid_min_s": min(times),
               "braid_rows": result.height}
        print(f"[{number}] braid: first {first * 1000:,.1f} ms, median {median * 1000:,.1f} ms, "
              f"{result.height:,} rows", flush=True)
        if not args.no_duckdb:
            t0 = time.perf_counter()
            text = emit_sql(cat, sql, values, engine="duckdb")
            row["emit_s"] = time.perf_counter() - t0
            duck = run_duckdb(text, f"example{number}", repeat=args.duckdb_repeat, timeout=args.timeout,
                              memory_limit=args.memory_limit, threads=args.threads)
            frame = duck.pop("frame")
            row.update({f"duckdb_{k}": v for k, v in duck.items()})
            row["agree"] = compare(result, frame)
            shown = (duck["error"] if duck["cold_s"] is None else
                     f"cold {duck['cold_s'] * 1000:,.1f} ms, warm "
                     + (f"{duck['warm_s'] * 1000:,.1f} ms" if duck["warm_s"] is not None else "-")
                     + f", {duck['rows']:,} rows")
            print(f"[{number}] duckdb: {shown}; rows {row['agree']}", flush=True)
        rows.append(judge(row, args.timeout))
    rss_end, hwm_end = rss_mb()

    profiles: dict[int, str] = {}
    for row in sorted(rows, key=lambda r: -r["braid_median_s"])[: args.profile]:
        number = row["example"]
        profiler = cProfile.Profile()
        profiler.enable()
        cat.query(EXAMPLES[number - 1][1], params[number - 1])
        profiler.disable()
        buf = io.StringIO()
        stats = pstats.Stats(profiler, stream=buf)
        stats.sort_stats("cumulative").print_stats(25)
        stats.sort_stats("tottime").print_stats(12)
        profiles[number] = buf.getvalue()
        (OUT / f"query-profile-example{number}.txt").write_text(buf.getvalue())

    print_table(rows, args.timeout)
    print(f"RSS after loading {rss:,.0f} MB (peak {hwm:,.0f}); at the end {rss_end:,.0f} MB (peak {hwm_end:,.0f}). "
          f"braid setup: open + load tables {setup['open_and_load_tables_s'] * 1000:,.0f} ms, "
          f"index build {setup['index_build_s'] * 1000:,.0f} ms (each example's first run is in 'braid first').")
    for number, text in profiles.items():
        print(f"\n== cProfile of example {number} (bench/out/query-profile-example{number}.txt) ==")
        print("\n".join(text.splitlines()[:45]))
    only = "-only-" + "-".join(map(str, args.only)) if args.only else ""
    out = OUT / f"query-{args.nodes}-{args.edges}{only}.json"
    out.write_text(json.dumps({
        "args": {k: v for k, v in vars(args).items() if k not in ("build_only", "duckdb_worker")},
        "catalog": str(root), "built": built, "tables": sizes, "setup": setup,
        "rss_mb_after_load": rss, "peak_rss_mb_after_load": hwm, "rss_mb_end": rss_end,
        "parameters": notes, "results": rows, "load": os.getloadavg()[0], "walker": walker,
    }, indent=1, default=str))
    print(f"results: {out}")
    # like the other benchmarks, a missed goal is reported, not an error; rows that differ are
    return 1 if any(str(r.get("agree", "")).startswith(("DIFFER", "columns")) for r in rows) else 0


def judge(row: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The issue's goals: under 200 ms; lineage queries >= 10x faster than DuckDB (warm)."""
    ours = row["braid_median_s"]
    duck = row.get("duckdb_warm_s") or row.get("duckdb_cold_s")
    bound = False
    if duck is None and str(row.get("duckdb_error", "")).startswith("timed out"):
        duck, bound = timeout, True
    row["ratio"] = None if duck is None else duck / ours
    row["ratio_is_lower_bound"] = bound
    fast = ours * 1000 < GOAL_MS
    if row["lineage"] and "duckdb_cold_s" in row:
        faster = row["ratio"] is not None and row["ratio"] >= GOAL_RATIO
    else:
        faster = True
    row["pass"] = fast and faster and not str(row.get("agree", "same")).startswith(("DIFFER", "columns"))
    return row


def print_table(rows: list[dict[str, Any]], timeout: float) -> None:
    def ms(t: float | None) -> str:
        return "" if t is None else f"{t * 1000:,.1f}"

    head = ("#", "example", "braid first ms", "braid median ms", "duckdb cold ms", "duckdb warm ms", "duck/braid",
            "rows braid", "rows duckdb", "rows agree", "goal")
    body = []
    for r in rows:
        ratio = "" if r["ratio"] is None else (">" if r["ratio_is_lower_bound"] else "") + f"{r['ratio']:,.1f}x"
        cold = r.get("duckdb_error") if r.get("duckdb_cold_s") is None else ms(r.get("duckdb_cold_s"))
        goal = ("PASS" if r["pass"] else "FAIL") + ("" if r["lineage"] else " (200 ms only)")
        body.append((str(r["example"]), r["title"][:48], ms(r["braid_first_s"]), ms(r["braid_median_s"]),
                     cold or "", ms(r.get("duckdb_warm_s")), ratio, f"{r['braid_rows']:,}",
                     "" if r.get("duckdb_rows") is None else f"{r['duckdb_rows']:,}",
                     str(r.get("agree", ""))[:40], goal))
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for b in body:
        print("| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(b, widths))) + " |")
    print(f"goals: braid median < {GOAL_MS:.0f} ms; lineage examples (graph functions) >= {GOAL_RATIO:.0f}x faster "
          f"than DuckDB warm (a DuckDB timeout counts as {timeout:g} s, a lower bound on the ratio); '(200 ms only)' "
          "examples have no graph function and are judged on latency alone.")


if __name__ == "__main__":
    sys.exit(main())
