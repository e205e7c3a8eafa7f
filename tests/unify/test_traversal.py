"""GraphIndex and traversal: hand-built graphs with known answers, and random DAGs checked
against networkx."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import networkx as nx
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from braid.unify import _native, traversal
from braid.unify.index import ALWAYS, GraphIndex
from braid.unify.schema import TABLES, conform
from braid.unify.traversal import downstream, paths, reach, upstream

UTC = timezone.utc


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def walker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on the compiled walk (unify/_walk.c) and on the numpy walk, the reference."""
    if request.param == "numpy":
        monkeypatch.setattr(_native, "walker", None)
    elif _native.walker is None:
        pytest.skip("the compiled walk is not built (or BRAID_WALK_PURE is set)")
    return str(request.param)


RESULT_EXTRA = {"depth": pl.Int64, "via_src": pl.String, "via_dst": pl.String, "via_kind": pl.String}


def graph(
    nodes: list[tuple[str, str, str | None]] | list[dict[str, object]],
    edges: list[tuple[str, str, str]] | list[dict[str, object]],
) -> tuple[GraphIndex, pl.DataFrame]:
    """Index and nodes frame from (id, kind, tool) and (src, dst, kind) rows, or dicts."""
    if nodes and isinstance(nodes[0], tuple):
        nodes = [dict(zip(("id", "kind", "tool"), row)) for row in nodes]
    if edges and isinstance(edges[0], tuple):
        edges = [dict(zip(("src", "dst", "kind"), row)) for row in edges]
    node_frame = conform("nodes", pl.DataFrame(nodes, schema_overrides=_overrides("nodes")))
    edge_frame = conform("edges", pl.DataFrame(edges, schema_overrides=_overrides("edges")))
    return GraphIndex.build(node_frame, edge_frame), node_frame


def _overrides(table: str) -> dict[str, pl.DataType]:
    return {"created_at": TABLES[table].schema["created_at"]}


def rows(frame: pl.DataFrame, *columns: str) -> list[tuple[object, ...]]:
    return frame.select(columns or ("id", "depth")).rows()


# -- a diamond: a -> b -> d, a -> c -> d ---------------------------------------------------


@pytest.fixture
def diamond() -> tuple[GraphIndex, pl.DataFrame]:
    return graph(
        [("a", "dataset", "dvc"), ("b", "run", "dvc"), ("c", "run", "dvc"), ("d", "model", "dvc")],
        [("a", "b", "input"), ("a", "c", "input"), ("b", "d", "output"), ("c", "d", "output")],
    )


def test_diamond_downstream_full_frame(diamond: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = diamond
    got = downstream(index, nodes, ["a"])
    expected = nodes.filter(pl.col("id") != "a").with_columns(
        pl.Series("depth", [1, 1, 2]),
        pl.Series("via_src", ["a", "a", "b"]),  # d is reached first from b: id order wins
        pl.Series("via_dst", ["b", "c", "d"]),
        pl.Series("via_kind", ["input", "input", "output"]),
    )
    assert_frame_equal(got, expected)
    assert got.columns == [*TABLES["nodes"].schema, *RESULT_EXTRA]


def test_diamond_upstream(diamond: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = diamond
    got = upstream(index, nodes, "d")
    assert rows(got, "id", "depth", "via_src", "via_dst", "via_kind") == [
        ("b", 1, "b", "d", "output"),
        ("c", 1, "c", "d", "output"),
        ("a", 2, "a", "b", "input"),
    ]


def test_start_nodes_not_returned_and_several_starts(diamond: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = diamond
    assert rows(downstream(index, nodes, ["b", "c"])) == [("d", 1)]
    assert rows(downstream(index, nodes, ["a", "b"])) == [("c", 1), ("d", 1)]


def test_depth_limits(diamond: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = diamond
    assert rows(downstream(index, nodes, "a", depth=1)) == [("b", 1), ("c", 1)]
    assert downstream(index, nodes, "a", depth=0).is_empty()
    assert rows(downstream(index, nodes, "a", depth=5)) == rows(downstream(index, nodes, "a"))


def test_empty_and_unknown_starts(diamond: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = diamond
    for start in ([], ["nope"]):
        got = upstream(index, nodes, start)
        assert got.is_empty()
        assert got.schema == pl.Schema({**TABLES["nodes"].schema, **RESULT_EXTRA})


def test_index_arrays(diamond: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, _ = diamond
    assert index.ids_sorted
    assert index.forward.indptr.tolist() == [0, 2, 3, 4, 4]
    assert index.forward.nbr.tolist() == [1, 2, 3, 3]
    assert index.forward.edge.tolist() == [0, 1, 2, 3]
    assert index.backward.indptr.tolist() == [0, 0, 1, 2, 4]
    assert index.backward.nbr.tolist() == [0, 0, 1, 2]
    assert index.same_as.nbr.size == 0
    assert index.lookup(["d", "x", "a"]).tolist() == [3, -1, 0]
    assert index.lookup(pl.Series(["c"])).tolist() == [2]


def test_edges_to_unknown_nodes_are_dropped() -> None:
    index, nodes = graph(
        [("a", "dataset", "dvc"), ("b", "run", "dvc")],
        [("a", "b", "input"), ("ghost", "b", "input"), ("b", "ghost", "output")],
    )
    assert index.dropped_edges == 2
    assert index.edge_src.tolist() == [0, -1, -1]
    assert rows(upstream(index, nodes, "b")) == [("a", 1)]
    assert downstream(index, nodes, "b").is_empty()


# -- two tools joined by same_as ----------------------------------------------------------

SHA = "git:" + "ab" * 20


@pytest.fixture
def federated() -> tuple[GraphIndex, pl.DataFrame]:
    """DVC prepares clean.csv; MLflow trains on the same bytes and registers the model."""
    return graph(
        [
            ("dvc:dataset/raw", "dataset", "dvc"),
            ("dvc:run/prep", "run", "dvc"),
            ("dvc:dataset/clean", "dataset", "dvc"),
            ("mlflow:dataset/clean", "dataset", "mlflow"),
            ("mlflow:run/train", "run", "mlflow"),
            ("mlflow:model/m", "model", "mlflow"),
            ("mlflow:model_version/m/1", "model_version", "mlflow"),
            (SHA, "code", None),
        ],
        [
            ("dvc:dataset/raw", "dvc:run/prep", "input"),
            ("dvc:run/prep", "dvc:dataset/clean", "output"),
            # stored once, pointing "against" the direction the tests walk it
            ("mlflow:dataset/clean", "dvc:dataset/clean", "same_as"),
            ("mlflow:dataset/clean", "mlflow:run/train", "input"),
            (SHA, "mlflow:run/train", "code"),
            ("mlflow:run/train", "mlflow:model/m", "output"),
            ("mlflow:model/m", "mlflow:model_version/m/1", "registered_as"),
        ],
    )


MV = "mlflow:model_version/m/1"


def test_upstream_crosses_tools(federated: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = federated
    got = upstream(index, nodes, MV)
    assert rows(got, "id", "depth", "via_kind") == [
        ("mlflow:model/m", 1, "registered_as"),
        ("mlflow:run/train", 2, "output"),
        ("dvc:dataset/clean", 3, "same_as"),  # same_as costs no depth
        (SHA, 3, "code"),
        ("mlflow:dataset/clean", 3, "input"),
        ("dvc:run/prep", 4, "output"),
        ("dvc:dataset/raw", 5, "input"),
    ]
    same = got.filter(pl.col("via_kind") == "same_as")
    assert rows(same, "via_src", "via_dst") == [("mlflow:dataset/clean", "dvc:dataset/clean")]


def test_kinds_and_tools_filter_rows_not_the_walk(federated: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = federated
    datasets = upstream(index, nodes, MV, kinds=["dataset"])
    assert rows(datasets) == [("dvc:dataset/clean", 3), ("mlflow:dataset/clean", 3), ("dvc:dataset/raw", 5)]
    assert rows(upstream(index, nodes, MV, tools=["dvc"])) == [
        ("dvc:dataset/clean", 3), ("dvc:run/prep", 4), ("dvc:dataset/raw", 5),
    ]
    assert rows(upstream(index, nodes, MV, kinds=["dataset", "code"], tools=["dvc"])) == [
        ("dvc:dataset/clean", 3), ("dvc:dataset/raw", 5),
    ]
    assert upstream(index, nodes, MV, kinds=["no such kind"]).is_empty()


def test_same_as_off(federated: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = federated
    got = upstream(index, nodes, MV, same_as=False)
    assert set(got["id"]) == {"mlflow:model/m", "mlflow:run/train", "mlflow:dataset/clean", SHA}
    assert downstream(index, nodes, "dvc:dataset/raw", same_as=False)["id"].to_list() == [
        "dvc:run/prep", "dvc:dataset/clean",
    ]


def test_downstream_crosses_tools(federated: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = federated
    assert rows(downstream(index, nodes, "dvc:dataset/raw")) == [
        ("dvc:run/prep", 1),
        ("dvc:dataset/clean", 2),
        ("mlflow:dataset/clean", 2),
        ("mlflow:run/train", 3),
        ("mlflow:model/m", 4),
        (MV, 5),
    ]


def test_same_as_twins_of_the_start_are_depth_zero(federated: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = federated
    got = upstream(index, nodes, "mlflow:dataset/clean")
    assert rows(got) == [("dvc:dataset/clean", 0), ("dvc:run/prep", 1), ("dvc:dataset/raw", 2)]
    assert rows(upstream(index, nodes, "mlflow:dataset/clean", depth=0)) == [("dvc:dataset/clean", 0)]


def test_depth_counts_lineage_hops_only(federated: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = federated
    assert set(upstream(index, nodes, MV, depth=2)["id"]) == {"mlflow:model/m", "mlflow:run/train"}
    assert set(upstream(index, nodes, MV, depth=3)["id"]) == {
        "mlflow:model/m", "mlflow:run/train", "mlflow:dataset/clean", SHA, "dvc:dataset/clean",
    }


def test_stop_at_expression_and_callable(federated: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = federated
    runs = upstream(index, nodes, MV, stop_at=pl.col("kind") == "run")
    assert rows(runs) == [("mlflow:model/m", 1), ("mlflow:run/train", 2)]
    same = upstream(index, nodes, MV, stop_at=lambda frame: frame["kind"] == "run")
    assert_frame_equal(runs, same)
    # a stopped node is not expanded at all: not even through its same_as twins
    datasets = upstream(index, nodes, MV, stop_at=pl.col("kind") == "dataset")
    assert set(datasets["id"]) == {"mlflow:model/m", "mlflow:run/train", "mlflow:dataset/clean", SHA}
    # the start node itself is always expanded
    assert rows(upstream(index, nodes, "mlflow:run/train", stop_at=pl.col("id") == "mlflow:run/train"))[0] == (
        "dvc:dataset/clean", 1,
    )
    with pytest.raises(ValueError, match="stop_at"):
        upstream(index, nodes, MV, stop_at=lambda frame: pl.Series([True]))


def test_stop_at_null_means_go_on(federated: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = federated
    got = upstream(index, nodes, MV, stop_at=pl.col("tool") == "mlflow")  # null for code
    assert rows(got) == [("mlflow:model/m", 1)]


# -- cycles --------------------------------------------------------------------------------


def test_cycle_through_same_as() -> None:
    index, nodes = graph(
        [
            ("mlflow:dataset/x", "dataset", "mlflow"),
            ("wandb:artifact/x", "dataset", "wandb"),
            ("dvc:dataset/x", "dataset", "dvc"),
            ("mlflow:run/r", "run", "mlflow"),
            ("dvc:run/p", "run", "dvc"),
        ],
        [
            ("mlflow:dataset/x", "wandb:artifact/x", "same_as"),
            ("wandb:artifact/x", "dvc:dataset/x", "same_as"),
            ("dvc:dataset/x", "mlflow:dataset/x", "same_as"),
            ("mlflow:dataset/x", "mlflow:run/r", "input"),
            ("dvc:run/p", "dvc:dataset/x", "output"),
            ("wandb:artifact/x", "wandb:artifact/x", "same_as"),  # a self-link changes nothing
        ],
    )
    assert rows(downstream(index, nodes, "wandb:artifact/x")) == [
        ("dvc:dataset/x", 0), ("mlflow:dataset/x", 0), ("mlflow:run/r", 1),
    ]
    assert rows(upstream(index, nodes, "mlflow:run/r")) == [
        ("dvc:dataset/x", 1), ("mlflow:dataset/x", 1), ("wandb:artifact/x", 1), ("dvc:run/p", 2),
    ]
    assert rows(upstream(index, nodes, "mlflow:run/r", same_as=False)) == [("mlflow:dataset/x", 1)]


def test_lineage_cycle_terminates() -> None:
    index, nodes = graph(
        [("x", "run", "mlflow"), ("y", "run", "mlflow"), ("z", "run", "mlflow")],
        [("x", "y", "parent_of"), ("y", "z", "parent_of"), ("z", "x", "parent_of")],
    )
    assert rows(downstream(index, nodes, "x")) == [("y", 1), ("z", 2)]
    assert rows(upstream(index, nodes, "x")) == [("z", 1), ("y", 2)]


# -- as_of -----------------------------------------------------------------------------------


def at(day: int) -> datetime:
    return datetime(2024, 1, day, tzinfo=UTC)


def test_as_of_nodes_and_edges() -> None:
    index, nodes = graph(
        [
            {"id": "d", "kind": "dataset", "tool": "dvc", "created_at": at(1)},
            {"id": "r", "kind": "run", "tool": "dvc", "created_at": at(2)},
            {"id": "m", "kind": "model", "tool": "dvc", "created_at": at(4)},
            {"id": "old", "kind": "run", "tool": "dvc", "created_at": None},  # always existed
            {"id": "late", "kind": "run", "tool": "dvc", "created_at": at(1)},
        ],
        [
            {"src": "d", "dst": "r", "kind": "input", "created_at": at(2)},
            {"src": "r", "dst": "m", "kind": "output", "created_at": at(4)},
            {"src": "d", "dst": "old", "kind": "input", "created_at": None},
            {"src": "d", "dst": "late", "kind": "input", "created_at": at(5)},  # linked later
        ],
    )
    assert set(downstream(index, nodes, "d")["id"]) == {"r", "m", "old", "late"}
    assert rows(downstream(index, nodes, "d", as_of=at(3))) == [("old", 1), ("r", 1)]
    assert rows(downstream(index, nodes, "d", as_of=at(2))) == [("old", 1), ("r", 1)]
    assert rows(downstream(index, nodes, "d", as_of=at(1))) == [("old", 1)]
    # a naive datetime is read as UTC
    assert rows(downstream(index, nodes, "d", as_of=datetime(2024, 1, 3))) == [("old", 1), ("r", 1)]
    # a start that did not exist yet reaches nothing
    assert upstream(index, nodes, "m", as_of=at(3)).is_empty()
    assert index.node_created[3] == ALWAYS


# -- paths -----------------------------------------------------------------------------------


def test_paths_two_routes_and_a_shortcut() -> None:
    index, nodes = graph(
        [("a", "dataset", "dvc"), ("b", "run", "dvc"), ("c", "run", "dvc"), ("d", "model", "dvc"),
         ("e", "model", "dvc")],
        [("a", "b", "input"), ("a", "c", "input"), ("b", "d", "output"), ("c", "d", "output"),
         ("a", "d", "input"), ("d", "e", "registered_as")],
    )
    got = paths(index, nodes, "a", "d")
    assert got.columns == ["path", "step", *TABLES["nodes"].schema, "via_kind"]
    assert rows(got, "path", "step", "id", "via_kind") == [
        (0, 0, "a", None), (0, 1, "d", "input"),
        (1, 0, "a", None), (1, 1, "b", "input"), (1, 2, "d", "output"),
        (2, 0, "a", None), (2, 1, "c", "input"), (2, 2, "d", "output"),
    ]
    assert got.schema["path"] == pl.Int64 and got.schema["step"] == pl.Int64
    assert got["path"].max() == 2
    assert paths(index, nodes, "a", "d", limit=2)["path"].max() == 1
    assert paths(index, nodes, "a", "e", depth=2)["path"].unique().to_list() == [0]
    assert paths(index, nodes, "a", "e", depth=1).is_empty()
    assert paths(index, nodes, "d", "a").is_empty()  # against the arrows: no path
    assert paths(index, nodes, "a", "nope").is_empty()
    assert rows(paths(index, nodes, "b", "b"), "path", "step", "id") == [(0, 0, "b")]


def test_paths_through_same_as(federated: tuple[GraphIndex, pl.DataFrame]) -> None:
    index, nodes = federated
    got = paths(index, nodes, "dvc:dataset/raw", MV)
    assert rows(got, "step", "id", "via_kind") == [
        (0, "dvc:dataset/raw", None),
        (1, "dvc:run/prep", "input"),
        (2, "dvc:dataset/clean", "output"),
        (3, "mlflow:dataset/clean", "same_as"),
        (4, "mlflow:run/train", "input"),
        (5, "mlflow:model/m", "output"),
        (6, MV, "registered_as"),
    ]
    assert paths(index, nodes, "dvc:dataset/raw", MV, same_as=False).is_empty()
    assert not paths(index, nodes, "dvc:dataset/raw", MV, depth=5).is_empty()  # same_as is free
    assert paths(index, nodes, "dvc:dataset/raw", MV, depth=4).is_empty()


def test_paths_shortest_first_and_simple() -> None:
    # a ladder: every rung doubles the routes; one long detour via a same_as pair
    names = ["s", "x1", "y1", "x2", "y2", "t", "u", "v"]
    edges = [("s", "x1", "input"), ("s", "y1", "input"), ("x1", "x2", "output"), ("x1", "y2", "output"),
             ("y1", "x2", "output"), ("y1", "y2", "output"), ("x2", "t", "input"), ("y2", "t", "input"),
             ("s", "u", "input"), ("u", "v", "same_as"), ("v", "u", "parent_of"), ("v", "x1", "parent_of")]
    index, nodes = graph([(n, "run", "mlflow") for n in names], edges)
    got = paths(index, nodes, "s", "t")
    lengths = got.group_by("path", maintain_order=True).agg(pl.len(), pl.col("id"))
    assert lengths["len"].to_list() == [4, 4, 4, 4, 6, 6]
    assert lengths["id"].to_list()[4:] == [["s", "u", "v", "x1", "x2", "t"], ["s", "u", "v", "x1", "y2", "t"]]
    for route in lengths["id"].to_list():
        assert len(route) == len(set(route))
    g = nx.DiGraph([(a, b) for a, b, kind in edges if kind != "same_as"] + [("u", "v"), ("v", "u")])
    assert len(got["path"].unique()) == len(list(nx.all_simple_paths(g, "s", "t")))


# -- both dedup strategies and both id orders agree ----------------------------------------


def random_graph(seed: int, n: int, m: int, same_as: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """A random DAG over ids n0000.. (edges from lower to higher index), plus same_as links."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, m)
    b = rng.integers(0, n, m)
    keep = a != b
    src, dst = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    kinds = ["input"] * int(keep.sum())
    s2, d2 = rng.integers(0, n, same_as), rng.integers(0, n, same_as)
    return ([f"n{i:04d}" for i in range(n)], np.concatenate([src, s2]), np.concatenate([dst, d2]),
            kinds + ["same_as"] * same_as)


def frames(ids: list[str], src: np.ndarray, dst: np.ndarray, kinds: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    tools = ["mlflow", "wandb", "dvc"]
    nodes = conform("nodes", pl.DataFrame({
        "id": ids,
        "kind": ["dataset" if i % 2 else "run" for i in range(len(ids))],
        "tool": [tools[i % 3] for i in range(len(ids))],
    }))
    edges = conform("edges", pl.DataFrame({
        "src": [ids[i] for i in src], "dst": [ids[i] for i in dst], "kind": kinds,
    }))
    return nodes, edges


@pytest.mark.parametrize("mask_share", [32, 10**9])
def test_large_level_paths_match_small(monkeypatch: pytest.MonkeyPatch, mask_share: int) -> None:
    nodes, edges = frames(*random_graph(1, 400, 1600, same_as=40))
    index = GraphIndex.build(nodes, edges)
    starts = ["n0000", "n0003", "n0010"]
    small = downstream(index, nodes, starts)
    assert len(small) > 100
    monkeypatch.setattr(traversal, "_SMALL_LEVEL", 0)
    monkeypatch.setattr(traversal, "_MASK_SHARE", mask_share)  # scan a mask / sort the level
    assert_frame_equal(downstream(index, nodes, starts), small)


def test_unsorted_ids_give_the_same_closure(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes, edges = frames(*random_graph(2, 300, 900, same_as=20))
    index = GraphIndex.build(nodes, edges)
    shuffled = nodes.sample(fraction=1.0, shuffle=True, seed=3)
    other = GraphIndex.build(shuffled, edges.reverse())
    assert index.ids_sorted and not other.ids_sorted
    for fn in (upstream, downstream):
        want = fn(index, nodes, ["n0150", "n0007"])
        got = fn(other, shuffled, ["n0150", "n0007"])
        assert_frame_equal(got.select("id", "depth"), want.select("id", "depth"))
    assert not other.ranked  # small results sort their own ids
    monkeypatch.setattr(traversal, "_RANK_ROWS", 0)
    for fn in (upstream, downstream):
        want = fn(index, nodes, ["n0150", "n0007"])
        got = fn(other, shuffled, ["n0150", "n0007"])
        assert_frame_equal(got.select("id", "depth"), want.select("id", "depth"))
    assert other.id_rank.tolist() == [int(i[1:]) for i in shuffled["id"]]


def test_unknown_kinds_and_tools_get_codes() -> None:
    index, nodes = graph(
        [("a", "dataset", "dvc"), ("b", "notebook", "jupyter"), ("c", "run", None)],
        [("a", "b", "input"), ("b", "c", "feeds")],
    )
    assert index.kinds[-1] == "notebook" and index.tools[-1] == "jupyter"
    assert rows(downstream(index, nodes, "a", kinds=["notebook"])) == [("b", 1)]
    assert rows(downstream(index, nodes, "a", tools=["jupyter", "dvc"])) == [("b", 1)]
    assert rows(downstream(index, nodes, "a"), "id", "via_kind") == [("b", "input"), ("c", "feeds")]


# -- property: random DAGs against networkx -------------------------------------------------


def weighted(ids: list[str], src: np.ndarray, dst: np.ndarray, kinds: list[str]) -> nx.DiGraph:
    """Lineage edges weigh 1; same_as both ways weighs 0 (the cheaper of parallel edges)."""
    g = nx.DiGraph()
    g.add_nodes_from(range(len(ids)))
    for s, d, kind in zip(src.tolist(), dst.tolist(), kinds):
        pairs = [(s, d, 0), (d, s, 0)] if kind == "same_as" else [(s, d, 1)]
        for a, b, w in pairs:
            if a != b and (not g.has_edge(a, b) or g[a][b]["weight"] > w):
                g.add_edge(a, b, weight=w)
    return g


@pytest.mark.parametrize("seed", range(6))
def test_random_dag_closures_match_networkx(seed: int) -> None:
    ids, src, dst, kinds = random_graph(seed, 300, 600 + 150 * seed)
    nodes, edges = frames(ids, src, dst, kinds)
    index = GraphIndex.build(nodes, edges)
    g = nx.DiGraph()
    g.add_nodes_from(range(len(ids)))
    g.add_edges_from(zip(src.tolist(), dst.tolist()))
    rng = np.random.default_rng(100 + seed)
    for start in rng.choice(len(ids), 8, replace=False).tolist():
        for fn, closure, graph_ in ((downstream, nx.descendants, g), (upstream, nx.ancestors, g)):
            got = fn(index, nodes, ids[start])
            assert set(got["id"]) == {ids[i] for i in closure(g, start)}
            view = graph_ if fn is downstream else graph_.reverse(copy=False)
            hops = nx.single_source_shortest_path_length(view, start)
            assert dict(zip(got["id"], got["depth"])) == {ids[i]: d for i, d in hops.items() if i != start}
            assert got["depth"].is_sorted()
            limited = fn(index, nodes, ids[start], depth=2)
            assert set(limited["id"]) == {ids[i] for i, d in hops.items() if 0 < d <= 2}


@pytest.mark.parametrize("seed", range(4))
def test_random_graph_with_same_as_matches_zero_one_distances(seed: int) -> None:
    ids, src, dst, kinds = random_graph(seed, 250, 500, same_as=40)
    nodes, edges = frames(ids, src, dst, kinds)
    index = GraphIndex.build(nodes, edges)
    g = weighted(ids, src, dst, kinds)
    rng = np.random.default_rng(200 + seed)
    for start in rng.choice(len(ids), 6, replace=False).tolist():
        for fn, view in ((downstream, g), (upstream, g.reverse(copy=False))):
            got = fn(index, nodes, ids[start])
            dist = nx.single_source_dijkstra_path_length(view, start)
            assert dict(zip(got["id"], got["depth"])) == {ids[i]: d for i, d in dist.items() if i != start}
            check_via_edges(got, fn is downstream, ids[start])


def check_via_edges(got: pl.DataFrame, down: bool, start: str) -> None:
    """Each row's edge links it to a node one hop closer (same depth for same_as)."""
    depth = dict(zip(got["id"], got["depth"])) | {start: 0}
    for row in got.iter_rows(named=True):
        other = row["via_src"] if row["via_dst"] == row["id"] else row["via_dst"]
        assert row["id"] in (row["via_src"], row["via_dst"])
        if row["via_kind"] == "same_as":
            assert depth[other] == row["depth"]
        else:
            assert depth[other] == row["depth"] - 1
            assert (row["via_dst"] if down else row["via_src"]) == row["id"]


def test_reach_on_dense_ids() -> None:
    nodes, edges = frames(*random_graph(9, 200, 500))
    index = GraphIndex.build(nodes, edges)
    found = reach(index, np.array([0, 0, -1, 10_000]), direction="downstream")
    assert (np.diff(found.depth) >= 0).all()
    assert len(np.unique(found.node)) == len(found)
    assert 0 not in found.node.tolist()


@pytest.mark.parametrize("seed", range(3))
def test_random_dag_paths_match_networkx(seed: int) -> None:
    ids, src, dst, kinds = random_graph(seed, 40, 110)
    nodes, edges = frames(ids, src, dst, kinds)
    index = GraphIndex.build(nodes, edges)
    g = nx.DiGraph()
    g.add_edges_from(zip(src.tolist(), dst.tolist()))
    rng = np.random.default_rng(300 + seed)
    checked = 0
    for a, b in rng.integers(0, 40, (40, 2)).tolist():
        if a == b or a not in g or b not in g:
            continue
        want = {tuple(ids[i] for i in p) for p in nx.all_simple_paths(g, a, b)}
        if len(want) > 100:
            continue
        got = paths(index, nodes, ids[a], ids[b], limit=100)
        routes = got.group_by("path", maintain_order=True).agg("id")["id"].to_list()
        assert {tuple(r) for r in routes} == want
        assert [len(r) for r in routes] == sorted(len(r) for r in routes)
        checked += bool(want)
    assert checked >= 3


def test_hash_collisions_fall_back_to_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    from braid.unify import index as index_module

    nodes, edges = frames(*random_graph(4, 120, 300, same_as=10))
    want = downstream(GraphIndex.build(nodes, edges), nodes, "n0001")
    resolve = index_module._resolve_ends
    monkeypatch.setattr(
        index_module, "_resolve_ends",
        lambda keys, edges, *, hashed: None if hashed else resolve(keys, edges, hashed=False),
    )
    index = GraphIndex.build(nodes, edges)
    assert not index._hash_unique
    assert index.lookup(["n0005", "zz"]).tolist() == [5, -1]
    assert_frame_equal(downstream(index, nodes, "n0001"), want)


def test_repeated_node_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        graph([("a", "run", "dvc"), ("a", "run", "dvc")], [("a", "a", "parent_of")])


def test_empty_graphs() -> None:
    from braid.unify.schema import empty

    index, nodes = graph([("a", "run", "dvc"), ("b", "run", "dvc")], [])
    assert index.forward.indptr.tolist() == [0, 0, 0]
    assert downstream(index, nodes, "a").is_empty()
    assert paths(index, nodes, "a", "b").columns == ["path", "step", *TABLES["nodes"].schema, "via_kind"]
    index = GraphIndex.build(empty("nodes"), conform("edges", pl.DataFrame({"src": ["x"], "dst": ["y"]})))
    assert index.dropped_edges == 1
    assert index.lookup(["x"]).tolist() == [-1]
    assert upstream(index, empty("nodes"), "x").is_empty()


@pytest.mark.parametrize("n", [50, 1 << 22])  # packed (row, tag, col) keys / too big to pack
def test_csr_from_pairs(n: int) -> None:
    from braid.unify.index import Csr

    rng = np.random.default_rng(5)
    rows, cols = rng.integers(0, 50, 300), rng.integers(0, 50, 300)
    tags = rng.permutation(5000)[:300]
    csr = Csr.from_pairs(rows, cols, tags, n)
    order = np.lexsort((tags, rows))
    assert csr.indptr.size == n + 1 and csr.indptr[-1] == 300
    assert csr.nbr.tolist() == cols[order].tolist()
    assert csr.edge.tolist() == tags[order].tolist()
    assert csr.degree[:50].tolist() == np.bincount(rows, minlength=50).tolist()
    frontier = np.array([7, 3, 7])
    nbr, edge = csr.gather(frontier)
    assert nbr.tolist() == [*csr.neighbours(7), *csr.neighbours(3), *csr.neighbours(7)]
    assert edge.tolist() == [*csr.edges_of(7), *csr.edges_of(3), *csr.edges_of(7)]


# -- reach_many: a batch of searches is each start's own search ------------------------------


def dated_graph(seed: int, n: int, m: int, same_as: int) -> tuple[GraphIndex, pl.DataFrame]:
    """Random lineage with cycles and parallel edges, same_as links, and some undated rows."""
    rng = np.random.default_rng(seed)
    ids, src, dst, kinds = random_graph(seed, n, m, same_as=same_as)
    flip = rng.random(src.size) < 0.2  # back edges: cycles
    src, dst = np.where(flip, dst, src), np.where(flip, src, dst)
    dup = rng.integers(0, src.size, src.size // 10)  # parallel edges: the winner rule matters
    src, dst, kinds = np.concatenate([src, src[dup]]), np.concatenate([dst, dst[dup]]), kinds + [kinds[i] for i in dup]
    nodes, edges = frames(ids, src, dst, kinds)

    def days(count: int) -> pl.Series:
        day = rng.integers(1, 28, count)
        return pl.Series([None if d > 24 else at(int(d)) for d in day], dtype=pl.Datetime("us", "UTC"))

    nodes = nodes.with_columns(created_at=days(nodes.height))
    edges = edges.with_columns(created_at=days(edges.height))
    if seed % 2:
        nodes = nodes.sample(fraction=1.0, shuffle=True, seed=seed)  # ids out of dense order
    return GraphIndex.build(nodes, edges), nodes


REACH_OPTIONS = [
    {},
    {"depth": 2},
    {"same_as": False},
    {"as_of": at(14)},
    {"stop": "tool"},
    {"depth": 3, "as_of": at(20), "stop": "tool", "same_as": True},
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("options", REACH_OPTIONS)
@pytest.mark.parametrize("batch", [1, 4, 64])
def test_reach_many_matches_reach_per_start(
    monkeypatch: pytest.MonkeyPatch, seed: int, options: dict[str, object], batch: int
) -> None:
    index, nodes = dated_graph(seed, 120, 260, same_as=30)
    monkeypatch.setattr(traversal, "_BATCH", batch)  # several batches: visited is cleared between
    if batch == 4:  # reach dedups levels by scatter, reach_many by sort: the same winners
        monkeypatch.setattr(traversal, "_SMALL_LEVEL", 0)
    rng = np.random.default_rng(seed)
    starts = np.concatenate([rng.integers(0, index.n_nodes, 23), [-1, 5, 5, index.n_nodes]])
    kwargs = dict(options)
    if kwargs.pop("stop", None):
        kwargs["stop"] = index.node_tool == index.tool_codes(["wandb"])[0]
    if "as_of" in kwargs:
        kwargs["as_of"] = traversal.epoch_us(kwargs["as_of"])  # type: ignore[arg-type]
    for direction in ("upstream", "downstream"):
        got = traversal.reach_many(index, starts, direction=direction, **kwargs)  # type: ignore[arg-type]
        assert got.start is not None and (np.diff(got.start) >= 0).all()
        for at_, start in enumerate(starts.tolist()):
            want = reach(index, np.array([start]), direction=direction, **kwargs)  # type: ignore[arg-type]
            mine = got.start == at_
            assert got.node[mine].tolist() == want.node.tolist(), (direction, start)
            assert got.depth[mine].tolist() == want.depth.tolist()
            assert got.via[mine].tolist() == want.via.tolist()


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("options", [
    {},
    {"kinds": ["dataset"]},
    {"tools": ["dvc", "wandb"], "depth": 2},
    {"as_of": at(14), "stop_at": pl.col("tool") == "wandb", "kinds": ["run"]},
    {"same_as": False, "stop_at": lambda frame: frame["kind"] == "dataset"},
])
def test_each_matches_one_call_per_start(seed: int, options: dict[str, object]) -> None:
    index, nodes = dated_graph(seed + 10, 150, 300, same_as=40)
    starts = pl.Series(sorted({*nodes["id"].sample(30, seed=seed).to_list(), "missing", "n0001"}))
    for fn in (upstream, downstream):
        got = traversal.each(index, nodes, starts, fn.__name__, **options)  # type: ignore[arg-type]
        parts = [fn(index, nodes, s, **options).with_columns(start=pl.lit(s, pl.String))  # type: ignore[arg-type]
                 for s in starts.to_list() if s in set(nodes["id"])]
        assert_frame_equal(got, pl.concat(parts))
    assert traversal.each(index, nodes, pl.Series(["missing"], dtype=pl.String), "upstream").is_empty()


def test_reach_many_of_no_starts() -> None:
    index, _ = dated_graph(0, 20, 30, same_as=2)
    found = traversal.reach_many(index, np.zeros(0, np.int64), direction="upstream")
    assert len(found) == 0 and found.start is not None and found.start.size == 0


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("options", REACH_OPTIONS)
@pytest.mark.parametrize(("batch", "budget"), [(4096, 1 << 27), (130, 1 << 27), (4096, 1)])
def test_reach_many_in_words_reports_and_skips_vias(
    monkeypatch: pytest.MonkeyPatch, seed: int, options: dict[str, object], batch: int, budget: int
) -> None:
    """Several words of starts per batch (and a last word part full), one word per batch (the
    seen-bits budget), a `report` mask and `vias=False`: each start's rows are still its own
    search's, filtered to the reported nodes."""
    index, _ = dated_graph(seed + 20, 150, 330, same_as=40)
    monkeypatch.setattr(traversal, "_BATCH", batch)
    monkeypatch.setattr(traversal, "_BATCH_BYTES", budget)
    rng = np.random.default_rng(seed)
    starts = np.concatenate([rng.integers(0, index.n_nodes, 300), [-1, 7, 7]])  # > 4 words, repeats
    kwargs = dict(options)
    if kwargs.pop("stop", None):
        kwargs["stop"] = index.node_tool == index.tool_codes(["wandb"])[0]
    if "as_of" in kwargs:
        kwargs["as_of"] = traversal.epoch_us(kwargs["as_of"])  # type: ignore[arg-type]
    report = index.node_kind != index.kinds.index("run")
    for direction in ("upstream", "downstream"):
        full = traversal.reach_many(index, starts, direction=direction, **kwargs)  # type: ignore[arg-type]
        bare = traversal.reach_many(index, starts, direction=direction, report=report, vias=False,
                                    **kwargs)  # type: ignore[arg-type]
        assert (bare.via == -1).all()
        for at_, start in enumerate(starts.tolist()):
            want = reach(index, np.array([start]), direction=direction, **kwargs)  # type: ignore[arg-type]
            mine = full.start == at_
            assert full.node[mine].tolist() == want.node.tolist(), (direction, start)
            assert full.depth[mine].tolist() == want.depth.tolist()
            assert full.via[mine].tolist() == want.via.tolist()
            kept = report[want.node]
            mine = bare.start == at_
            assert bare.node[mine].tolist() == want.node[kept].tolist(), (direction, start)
            assert bare.depth[mine].tolist() == want.depth[kept].tolist()


def test_search_gives_the_rows_of_upstream_and_each() -> None:
    """`search` is what upstream and each return, as dense arrays: the frames gather from it."""
    index, nodes = dated_graph(3, 150, 300, same_as=40)
    starts = pl.Series(sorted(nodes["id"].sample(20, seed=1).to_list()))
    options: dict[str, Any] = {"kinds": ["dataset", "model"], "as_of": at(20)}
    found = traversal.search(index, nodes, index.lookup(starts), "upstream", each=True, **options)
    frame = traversal.each(index, nodes, starts, "upstream", **options)
    assert frame["id"].to_list() == index.ids.gather(found.node).to_list()
    assert frame["start"].to_list() == starts.gather(found.start).to_list()
    assert frame["depth"].to_list() == found.depth.tolist()
    one = traversal.search(index, nodes, index.lookup(starts[:1]), "upstream", **options)
    assert upstream(index, nodes, starts[0], **options)["id"].to_list() == index.ids.gather(one.node).to_list()
