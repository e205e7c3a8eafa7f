"""The compiled walk (unify/_walk.c) gives the numpy walk's rows exactly, and survives bad arrays.

Each comparison runs the same call twice, once with `_native.walker` (the extension) and once
with it set to None (the numpy code in traversal.py, the reference), and compares every array:
start, node, depth and via, in order. On random graphs drawn by hypothesis (lineage cycles,
parallel edges, same_as cycles, undated rows, ids out of dense order) with every option the
compiled walk takes, and on the demo workspace's real MLflow + W&B + DVC catalog.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from braid.unify import _native, open_catalog, traversal
from braid.unify.index import GraphIndex
from braid.unify.schema import TABLES, conform

pytestmark = pytest.mark.skipif(_native.walker is None, reason="the compiled walk is not built (or BRAID_WALK_PURE is set)")

KINDS = ("dataset", "run", "model", "model_version", "code")
TOOLS = ("mlflow", "wandb", "dvc", None)
FIELDS = ("start", "node", "depth", "via")


def both(monkeypatch: pytest.MonkeyPatch, call: Callable[[], Any]) -> tuple[Any, Any]:
    """call() with the compiled walk, then with the numpy walk."""
    compiled = call()
    with monkeypatch.context() as m:
        m.setattr(_native, "walker", None)
        reference = call()
    return compiled, reference


def assert_same(got: traversal.Reach, want: traversal.Reach) -> None:
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        if b is None:
            assert a is None, name
            continue
        assert a.dtype == b.dtype == np.int64, (name, a.dtype, b.dtype)
        assert a.tolist() == b.tolist(), name


def at(day: int) -> datetime:
    return datetime(2024, 1, day, tzinfo=UTC)


@st.composite
def graphs(draw: st.DrawFn) -> tuple[GraphIndex, pl.DataFrame]:
    """A small random graph: any edges (self-loops, cycles, parallel edges), same_as links among
    them, some nodes and edges undated, and sometimes ids out of dense order."""
    n = draw(st.integers(1, 24))
    day = st.one_of(st.none(), st.integers(1, 27))
    node_rows = [
        {"id": f"n{i:02d}", "kind": draw(st.sampled_from(KINDS)), "tool": draw(st.sampled_from(TOOLS)),
         "created_at": None if (d := draw(day)) is None else at(d)}
        for i in range(n)
    ]
    edge = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1),
                     st.sampled_from(("input", "output", "code", "same_as", "same_as")), day)
    edge_rows = [
        {"src": f"n{s:02d}", "dst": f"n{d:02d}", "kind": k, "created_at": None if t is None else at(t)}
        for s, d, k, t in draw(st.lists(edge, max_size=70))
    ]
    nodes = conform("nodes", pl.DataFrame(node_rows, schema=TABLES["nodes"].schema, strict=False))
    edges = conform("edges", pl.DataFrame(edge_rows, schema=TABLES["edges"].schema, strict=False))
    if draw(st.booleans()):
        nodes = nodes.sample(fraction=1.0, shuffle=True, seed=draw(st.integers(0, 1000)))
    return GraphIndex.build(nodes, edges), nodes


options = st.fixed_dictionaries({
    "depth": st.one_of(st.none(), st.integers(-1, 4)),
    "kinds": st.one_of(st.none(), st.lists(st.sampled_from(KINDS), max_size=2)),
    "tools": st.one_of(st.none(), st.lists(st.sampled_from(TOOLS[:3]), max_size=2)),
    "stop_at": st.sampled_from([None, pl.col("kind") == "run", pl.col("tool") == "wandb"]),
    "as_of": st.one_of(st.none(), st.integers(1, 27).map(at)),
    "same_as": st.booleans(),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=graphs(), opts=options, each=st.booleans(), vias=st.booleans(), direction=st.sampled_from(
    ["upstream", "downstream"]), data=st.data())
def test_random_graphs_give_the_numpy_rows(
    monkeypatch: pytest.MonkeyPatch, graph: tuple[GraphIndex, pl.DataFrame], opts: dict[str, Any], each: bool,
    vias: bool, direction: str, data: st.DataObject,
) -> None:
    index, nodes = graph
    start = np.array(data.draw(st.lists(st.integers(-2, index.n_nodes + 1), max_size=12)), np.int64)
    extra = {"each": True, "vias": vias} if each else {}
    got, want = both(monkeypatch, lambda: traversal.search(index, nodes, start, direction, **opts, **extra))
    assert_same(got, want)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=graphs(), opts=options, direction=st.sampled_from(["upstream", "downstream"]), data=st.data())
def test_counting_per_start_gives_the_number_of_numpy_rows(
    monkeypatch: pytest.MonkeyPatch, graph: tuple[GraphIndex, pl.DataFrame], opts: dict[str, Any], direction: str,
    data: st.DataObject,
) -> None:
    """The compiled walk counting rows per start (no row kept) against the numpy walk's rows,
    counted by start here."""
    index, nodes = graph
    start = np.array(data.draw(st.lists(st.integers(-2, index.n_nodes + 1), max_size=12)), np.int64)
    counted = traversal.count_each(index, nodes, start, direction, **opts)
    with monkeypatch.context() as m:
        m.setattr(_native, "walker", None)
        rows = traversal.search(index, nodes, start, direction, each=True, vias=False, **opts)
    assert counted.tolist() == np.bincount(rows.start, minlength=start.size).tolist()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("batch", [64, 4096])  # the numpy walk's batch of starts
def test_reach_and_reach_many_on_bigger_graphs(monkeypatch: pytest.MonkeyPatch, seed: int, batch: int) -> None:
    """More starts than one 64-start batch of the compiled walk and enough for its two threads
    (each walks half the starts), repeated starts, a report mask."""
    rng = np.random.default_rng(seed)
    n, m = 400, 1200
    nodes = conform("nodes", pl.DataFrame({
        "id": [f"n{i:04d}" for i in range(n)], "kind": [KINDS[i % 3] for i in range(n)],
        "tool": [TOOLS[i % 3] for i in range(n)],
    }))
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    kind = np.where(rng.random(m) < 0.1, "same_as", "input")
    edges = conform("edges", pl.DataFrame({"src": [f"n{i:04d}" for i in src], "dst": [f"n{i:04d}" for i in dst],
                                           "kind": kind.tolist()}))
    index = GraphIndex.build(nodes, edges)
    monkeypatch.setattr(traversal, "_BATCH", batch)
    starts = np.concatenate([rng.integers(-1, n + 1, 1300), [3, 3, 3]])
    stop = rng.random(n) < 0.1
    report = rng.random(n) < 0.5
    for direction in ("upstream", "downstream"):
        for kwargs in ({}, {"depth": 3, "stop": stop}, {"report": report, "vias": False}, {"report": report}):
            got, want = both(monkeypatch, lambda: traversal.reach_many(index, starts, direction=direction, **kwargs))
            assert_same(got, want)
        got, want = both(monkeypatch, lambda: traversal.reach(index, starts, direction=direction, stop=stop))
        assert_same(got, want)
        # counted per start by both threads of the compiled walk, twice (the second reuses its words)
        for _ in range(2):
            counted = traversal.count_each(index, nodes, starts, direction, kinds=["dataset", "run"])
            with monkeypatch.context() as m:
                m.setattr(_native, "walker", None)
                rows = traversal.search(index, nodes, starts, direction, each=True, vias=False, kinds=["dataset", "run"])
            assert counted.tolist() == np.bincount(rows.start, minlength=starts.size).tolist()


# -- the real multi-tool catalog -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_catalog_walks_and_examples(monkeypatch: pytest.MonkeyPatch, demo_workspace: Path) -> None:
    """Every node of the demo's MLflow + W&B + DVC catalog as a start, each option; and issue 5's
    example queries, whose frames must not depend on the walker."""
    from braid.unify.query._reference import EXAMPLES

    cat = open_catalog(demo_workspace / ".braid")
    index, nodes = cat.index, cat.nodes
    assert set(nodes["tool"].drop_nulls()) >= {"mlflow", "wandb", "dvc"} and index.has_same_as.any()
    everyone = np.arange(index.n_nodes, dtype=np.int64)
    moment = nodes["created_at"].drop_nulls().sort()[nodes.height // 2]
    for direction in ("upstream", "downstream"):
        for opts in ({}, {"kinds": ["dataset"]}, {"depth": 2, "tools": ["dvc", "wandb"]},
                     {"as_of": moment, "stop_at": pl.col("kind") == "run"}, {"same_as": False}):
            for each, vias in ((True, True), (True, False), (False, True)):
                extra = {"each": True, "vias": vias} if each else {}
                got, want = both(monkeypatch, lambda: traversal.search(index, nodes, everyone, direction, **opts,
                                                                       **extra))
                assert_same(got, want)
                assert len(got) > 0 or opts or not each  # from every node at once: all are starts

    version = cat.table("registry")["model_version_id"].drop_nulls().sort()[-1]
    dataset = traversal.upstream(index, nodes, version, kinds=["dataset"])["id"][0]
    params = {"model_version": version, "dataset": dataset, "moment": nodes["created_at"].max()}
    for number in (1, 2, 3, 6, 8):  # the examples that walk
        sql = EXAMPLES[number - 1][1]
        wanted = {k: v for k, v in params.items() if f":{k}" in sql}
        got, want = both(monkeypatch, lambda: cat.query(sql, wanted))
        assert_frame_equal(got, want)
        assert got.height > 0, number


# -- bad arrays and types ----------------------------------------------------------------------


def small_arrays() -> list[Any]:
    """walk()'s arguments for a -> b -> c (backward CSR of the upstream walk), no same_as."""
    indptr = np.array([0, 0, 1, 2], np.int64)
    nbr = np.array([0, 1], np.int32)
    edge = np.array([0, 1], np.int32)
    sa = np.zeros(4, np.int64)
    none = np.zeros(0, np.int32)
    created = np.zeros(3, np.int64)
    return [indptr, nbr, edge, sa, none, none, None, None, created, np.zeros(2, np.int64), np.zeros(3, np.bool_),
            None, np.array([2], np.int64), -1, True, True, False]


def test_the_walk_itself() -> None:
    start, node, depth, via = (np.frombuffer(b, np.int64) for b in _native.walker.walk(*small_arrays()))
    assert (start.tolist(), node.tolist(), depth.tolist(), via.tolist()) == ([0, 0], [1, 0], [1, 2], [1, 0])
    args = small_arrays()
    args[12] = np.array([2, 1, 0, -1], np.int64)
    args[15] = False  # counting walks without vias: rows per start, c -> b -> a
    assert np.frombuffer(_native.walker.walk(*args, True), np.int64).tolist() == [2, 1, 0, 0]
    args[15] = True
    with pytest.raises(ValueError, match="counting rows per start"):
        _native.walker.walk(*args, True)


@pytest.mark.parametrize(("position", "value", "message"), [
    (0, np.array([0, 0, 1, 7], np.int64), r"indptr\[3\] = 7"),  # past the entries
    (0, np.array([0, 0, 2, 1], np.int64), r"indptr\[2\] = 2"),  # offsets going back
    (0, np.array([0, 0, -5, 2], np.int64), r"indptr\[2\] = -5"),
    (1, np.array([0, 99], np.int32), r"nbr\[1\] = 99"),  # a neighbour that is not a node
    (1, np.array([0, -1], np.int32), r"nbr\[1\] = -1"),
    (2, np.array([0, 10**6], np.int32), r"edge\[1\] = 1000000"),  # read for as_of only
])
def test_bad_arrays_raise_instead_of_crashing(position: int, value: np.ndarray, message: str) -> None:
    args = small_arrays()
    args[position] = value
    args[11] = 5 if position == 2 else None  # as_of: edge rows are read to look up their dates
    with pytest.raises(ValueError, match=message):
        _native.walker.walk(*args)
    for bits in (True, False):  # both the per-start walk and the 64-start one check
        args[15] = bits
        with pytest.raises(ValueError, match=message):
            _native.walker.walk(*args)
        args[12] = np.full(1000, 2, np.int64)  # enough starts for two threads: both stop
        with pytest.raises(ValueError, match=message):
            _native.walker.walk(*args)
    with pytest.raises(ValueError, match=message):  # counting rows per start (no vias)
        _native.walker.walk(*args, True)


def test_arrays_of_the_wrong_length_are_refused() -> None:
    args = small_arrays()
    args[10] = np.zeros(2, np.bool_)  # has_same_as of 2 nodes for 3
    with pytest.raises(ValueError, match="node count"):
        _native.walker.walk(*args)


@pytest.mark.parametrize("position", [0, 1, 6, 12])
def test_other_types_are_declined(position: int) -> None:
    """An array of a type the walk does not take gives None: the numpy path runs instead."""
    args = small_arrays()
    args[position] = np.asarray(args[position] if args[position] is not None else np.zeros(3), np.float64)
    assert _native.walker.walk(*args) is None


def test_the_off_switch() -> None:
    code = "from braid.unify import _native; print(_native.walker is None)"
    for value, off in (("1", "True"), ("0", "False")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "BRAID_WALK_PURE": value})
        assert out.stdout.strip() == off
