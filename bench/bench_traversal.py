"""Traversal benchmark: braid's GraphIndex against networkx and rustworkx.

Builds a synthetic layered DAG (default 1,000,000 nodes, 3,000,000 edges, 1% of them
same_as links), then times, in the same run:

- index build: `GraphIndex.build` from the string-keyed polars frames, against a networkx
  `DiGraph` and a rustworkx `PyDiGraph` built from ready-made integer pairs (the peers are
  spared the id mapping braid does);
- closures of about 100, 10,000 and 300,000 nodes (scaled to the graph's size), downstream and
  upstream: braid's `reach` on dense ids (the engine, comparable with the peers, which return
  sets of ints), braid's `downstream`/`upstream` returning the full DataFrame, against
  `rustworkx.descendants/ancestors` and `networkx.descendants/ancestors`. The comparison
  walks lineage edges only (`same_as=False`); one more row shows braid with same_as on.

Every time is the median of `--repeat` runs (networkx: of at most 3). Run it with:

    .venv/bin/python bench/bench_traversal.py                       # the full size
    .venv/bin/python bench/bench_traversal.py --nodes 100000 --edges 300000
    .venv/bin/python bench/bench_traversal.py --shuffle --no-networkx

`--shuffle` stores the frames in random row order instead of the catalog's id order (the
index then cannot skip the result sort). The machine's load shows in the numbers: run it on
a quiet machine, and compare the ratios rather than the absolute times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from braid.unify.index import GraphIndex
from braid.unify.schema import conform
from braid.unify.traversal import Reach, downstream, reach, upstream

LAYERS = 100
TOOLS = ("mlflow", "wandb", "dvc")


@dataclass(frozen=True)
class Synthetic:
    """A layered DAG: integer pairs for the peers, string-keyed frames for braid."""

    n: int
    src: np.ndarray  # lineage edges, as dense node numbers
    dst: np.ndarray
    layer: np.ndarray  # layer of each node number
    nodes: pl.DataFrame
    edges: pl.DataFrame
    number: np.ndarray  # node number of each row of `nodes`


def synthesise(n: int, m: int, *, same_as: float, shuffle: bool, seed: int) -> Synthetic:
    """Edges go from a node to a random node of the next layer (sometimes two or three on)."""
    rng = np.random.default_rng(seed)
    layer = np.arange(n) * LAYERS // n
    starts = np.searchsorted(layer, np.arange(LAYERS + 1))
    links = int(m * same_as)
    src = rng.integers(0, starts[LAYERS - 1], m - links)
    hop = rng.choice([1, 2, 3], src.size, p=[0.9, 0.07, 0.03])
    to_layer = np.minimum(layer[src] + hop, LAYERS - 1)
    lo, hi = starts[to_layer], starts[to_layer + 1]
    dst = lo + (rng.random(src.size) * (hi - lo)).astype(np.int64)
    # same_as links join two nodes of one layer (the same bytes seen by two tools)
    twin_a = rng.integers(0, n, links)
    twin_layer = layer[twin_a]
    twin_b = starts[twin_layer] + (rng.random(links) * (starts[twin_layer + 1] - starts[twin_layer])).astype(np.int64)
    nodes, edges, number = _frames(n, layer, src, dst, twin_a, twin_b, shuffle=shuffle, rng=rng)
    return Synthetic(n, src, dst, layer, nodes, edges, number)


def _frames(
    n: int, layer: np.ndarray, src: np.ndarray, dst: np.ndarray, twin_a: np.ndarray,
    twin_b: np.ndarray, *, shuffle: bool, rng: np.random.Generator,
) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray]:
    tool = pl.Series(TOOLS).gather(rng.integers(0, 3, n))
    kind = pl.Series(["dataset", "run"]).gather(layer % 2)
    node_ids = pl.DataFrame({"tool": tool, "kind": kind, "n": np.arange(n)}).select(
        pl.format("{}:{}/{}", "tool", "kind", pl.col("n").cast(pl.String).str.zfill(8)).alias("id"),
        "kind", "tool",
    )
    ids = node_ids.get_column("id")
    edges = pl.DataFrame({
        "src": ids.gather(np.concatenate([src, twin_a])),
        "dst": ids.gather(np.concatenate([dst, twin_b])),
        "kind": pl.Series(["input", "output"]).gather(layer[src] % 2).append(
            pl.Series(["same_as"] * twin_a.size)
        ),
    })
    nodes = node_ids.with_columns(pl.Series("number", np.arange(n)))
    if shuffle:
        nodes = nodes.sample(fraction=1.0, shuffle=True, seed=1)
        edges = edges.sample(fraction=1.0, shuffle=True, seed=2)
    else:  # the catalog's canonical order
        nodes = nodes.sort("id")
        edges = edges.sort("src", "dst", "kind")
    number = nodes.get_column("number").to_numpy()
    return conform("nodes", nodes.drop("number")), conform("edges", edges), number


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median seconds over `repeat` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def pick_starts(index: GraphIndex, data: Synthetic, dense_of: np.ndarray, direction: str,
                targets: list[int], rng: np.random.Generator) -> list[tuple[int, int]]:
    """(node number, closure size) nearest each target, from a few candidates per layer."""
    sizes: list[tuple[int, int]] = []
    for level in range(LAYERS):
        members = np.flatnonzero(data.layer == level)
        for number in rng.choice(members, 2, replace=False).tolist():
            found = reach(index, np.array([dense_of[number]]), direction=direction, same_as=False)  # type: ignore[arg-type]
            sizes.append((number, len(found)))
    return [min(sizes, key=lambda s: abs(np.log((s[1] + 1) / t))) for t in targets]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=3_000_000)
    parser.add_argument("--same-as", type=float, default=0.01, help="share of edges that are same_as")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shuffle", action="store_true", help="frames in random row order")
    parser.add_argument("--no-networkx", action="store_true", help="skip networkx (slow, ~4 GB)")
    args = parser.parse_args(argv)
    import rustworkx as rx

    print(f"python {sys.version.split()[0]}, polars {pl.__version__}, numpy {np.__version__}, "
          f"rustworkx {rx.__version__}, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    data = synthesise(args.nodes, args.edges, same_as=args.same_as, shuffle=args.shuffle, seed=args.seed)
    print(f"graph: {data.n:,} nodes, {data.edges.height:,} edges ({data.src.size:,} lineage), "
          f"{'shuffled' if args.shuffle else 'id-ordered'} frames, made in {time.perf_counter() - started:.1f} s")

    rows: list[tuple[str, str, float | None, float | None, float | None, float | None]] = []
    build, index = timed(lambda: GraphIndex.build(data.nodes, data.edges), max(3, args.repeat // 2))
    assert isinstance(index, GraphIndex)
    pairs = list(zip(data.src.tolist(), data.dst.tolist()))

    def rx_graph() -> rx.PyDiGraph:
        g = rx.PyDiGraph(multigraph=False)
        g.add_nodes_from(range(data.n))
        g.add_edges_from_no_data(pairs)
        return g

    rx_build, rg = timed(rx_graph, 3)
    nx_build, ng = (None, None)
    if not args.no_networkx:
        import networkx as nx

        def nx_graph() -> nx.DiGraph:
            g = nx.DiGraph()
            g.add_nodes_from(range(data.n))
            g.add_edges_from(pairs)
            return g

        nx_build, ng = timed(nx_graph, 1)
    rows.append(("index build", f"{data.n:,} / {data.edges.height:,}", build, None, rx_build, nx_build))
    if not index.ids_sorted:  # paid once, by the first big result of an index over unsorted ids
        rank, _ = timed(lambda: index.id_rank, 1)
        rows.append(("  id rank (once, unsorted ids)", f"{data.n:,}", rank, None, None, None))

    dense_of = np.empty(data.n, np.int64)
    dense_of[data.number] = np.arange(data.n)
    rng = np.random.default_rng(args.seed + 1)
    targets = [100, max(100, args.nodes // 100), 3 * args.nodes // 10]
    for direction, ours, theirs in (("downstream", downstream, "descendants"), ("upstream", upstream, "ancestors")):
        for number, size in pick_starts(index, data, dense_of, direction, targets, rng):
            start = np.array([dense_of[number]])
            start_id = index.ids[int(start[0])]
            core, found = timed(lambda: reach(index, start, direction=direction, same_as=False), args.repeat)  # type: ignore[arg-type]
            frame, table = timed(lambda: ours(index, data.nodes, start_id, same_as=False), args.repeat)
            rx_time, rx_set = timed(lambda: getattr(rx, theirs)(rg, number), args.repeat)
            assert isinstance(found, Reach) and isinstance(table, pl.DataFrame)
            assert len(found) == len(rx_set) == table.height == size, (len(found), len(rx_set), size)  # type: ignore[arg-type]
            nx_time = None
            if ng is not None:
                import networkx as nx

                nx_time, nx_set = timed(lambda: getattr(nx, theirs)(ng, number), min(3, args.repeat))
                assert len(nx_set) == size  # type: ignore[arg-type]
            rows.append((f"{direction}", f"{size:,}", core, frame, rx_time, nx_time))
            with_same_as, twin_table = timed(lambda: ours(index, data.nodes, start_id), args.repeat)
            assert isinstance(twin_table, pl.DataFrame)
            rows.append((f"  {direction} same_as=True", f"{twin_table.height:,}", None, with_same_as, None, None))
    print_table(rows)


def print_table(rows: list[tuple[str, str, float | None, float | None, float | None, float | None]]) -> None:
    """Times in ms; ratios are peer time / braid time (above 1: braid is faster)."""

    def ms(t: float | None) -> str:
        return "" if t is None else f"{t * 1000:,.2f}"

    def ratio(peer: float | None, ours: float | None) -> str:
        return "" if peer is None or not ours else f"{peer / ours:.2f}x"

    head = ("operation", "size", "braid core ms", "braid frame ms", "rustworkx ms", "networkx ms",
            "rx/core", "nx/core", "rx/frame")
    body = [
        (name, size, ms(core), ms(frame), ms(rx_t), ms(nx_t), ratio(rx_t, core), ratio(nx_t, core),
         ratio(rx_t, frame))
        for name, size, core, frame, rx_t, nx_t in rows
    ]
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in body:
        print("| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |")
    print("core = braid.unify.traversal.reach on dense ids (a set-of-ints result, like the peers); "
          "frame = downstream()/upstream() returning the node rows as a polars DataFrame; "
          "build 'braid core' = GraphIndex.build from string ids.")


if __name__ == "__main__":
    main()
