"""The TUI's parts without a terminal: search ranking, one level of lineage, the DAG layout,
completion, and the CLI command."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from braid.tui._dag import draw, neighbourhood, render_lanes
from braid.tui._model import Explorer, Filters
from braid.tui._query import Completer
from braid.tui._search import SearchIndex

from ._helpers import write_catalog

pytestmark = pytest.mark.xdist_group("tui")


@pytest.mark.parametrize("name", ["_model", "_search", "_dag", "_query", "_details", "_compare"])
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"braid.tui.{name}")
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE).failed == 0


def _nodes(names: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"mlflow:run/{i}" for i in range(len(names))], "kind": ["run"] * len(names),
                         "tool": ["mlflow"] * len(names), "name": names, "version": [None] * len(names),
                         "created_at": [None] * len(names)})


def test_search_ranks_whole_name_then_prefix_then_inside_then_fuzzy() -> None:
    index = SearchIndex(_nodes(["training", "xtrain", "train", "t-r-a-i-n", "other"]))
    assert index.search("train").tolist() == [2, 0, 1, 3]
    assert index.search("zzz").tolist() == []
    assert index.search("", limit=2).tolist() == [4, 3]  # no text: by name ("other", "t-r-a-i-n")


def test_search_is_vectorised_over_a_million_names() -> None:
    import time

    names = pl.Series(np.arange(1_000_000)).cast(pl.String).str.zfill(7)
    index = SearchIndex(_nodes(names.to_list()))
    started = time.perf_counter()
    found = index.search("0123456")
    assert found.tolist() == [123456]
    assert time.perf_counter() - started < 2.0  # generous: a loaded 2-core machine


def test_typing_on_narrows_the_search_to_the_last_keys_rows_and_finds_the_same() -> None:
    rng = np.random.default_rng(1)
    words = ["train", "tune", "hub", "run", "data", "eval", "x"]
    names = ["-".join(rng.choice(words, 3)) + f"-{i}" for i in range(3000)]
    nodes = _nodes(names).with_columns(tool=pl.Series(rng.choice(["mlflow", "dvc"], len(names))))
    typing, fresh = SearchIndex(nodes), SearchIndex(nodes)
    dvc = Filters(tools=frozenset({"dvc"}))
    for text in ("hub-tr", "tune x", "trn hb", "run-1", "data eval-2", "ev", "hub-trz"):
        for filters in (None, dvc):
            for end in [*range(1, len(text) + 1), len(text) - 2]:  # typing, then a backspace or two
                for limit in (5, 50):
                    fresh._last.clear()
                    got = typing.search(text[:end], filters=filters, limit=limit)
                    assert got.tolist() == fresh.search(text[:end], filters=filters, limit=limit).tolist(), text[:end]
    assert typing._last  # the narrowing was used


@pytest.fixture()
def star(tmp_path: Path) -> Explorer:
    """hub -> 300 runs; run 0 is older than the rest; hub has a same_as twin."""
    runs = [f"mlflow:run/{i:04d}" for i in range(300)]
    created = [datetime(2020, 1, 1, tzinfo=timezone.utc)] + [datetime(2026, 1, 1, tzinfo=timezone.utc)] * 299
    nodes = pl.DataFrame({"id": ["dvc:dataset/hub", "mlflow:dataset/hub", *runs],
                          "kind": ["dataset", "dataset", *["run"] * 300], "tool": ["dvc", "mlflow", *["mlflow"] * 300],
                          "name": ["hub", "hub", *runs], "created_at": [None, None, *created]})
    edges = pl.DataFrame({"src": ["dvc:dataset/hub"] * 300 + ["dvc:dataset/hub"], "dst": [*runs, "mlflow:dataset/hub"],
                          "kind": ["input"] * 300 + ["same_as"], "attrs": [None] * 300 + ['{"evidence":"digest","digest":"md5:ab"}']})
    write_catalog(tmp_path / "cat", nodes, edges)
    return Explorer.open(tmp_path / "cat")


def test_one_level_of_lineage_with_twins_and_filters(star: Explorer) -> None:
    hub = star.dense("dvc:dataset/hub")
    level = star.entries(hub, "downstream", twins=True)
    assert len(level) == 301 and level.twin.sum() == 1 and star.node_id(int(level.node[0])) == "mlflow:dataset/hub"
    old = star.entries(hub, "downstream", Filters(as_of=datetime(2021, 1, 1, tzinfo=timezone.utc)))
    assert [star.node_id(int(n)) for n in old.node] == ["mlflow:run/0000"] and old.hidden == 299
    assert len(star.entries(hub, "downstream", Filters(kinds=frozenset({"dataset"})))) == 0


def test_dag_caps_the_fan_out_and_counts_the_rest(star: Explorer) -> None:
    hood = neighbourhood(star, star.dense("dvc:dataset/hub"), up=1, down=1, fan=5)
    # the twin (found walking up) and five of the 300 runs (walking down)
    assert len(hood.nodes) == 1 + 1 + 5 and hood.more[hood.centre] == 300 - 5
    lines = [t.plain for t in draw(star, hood, width=80)]
    centre = next(line for line in lines if "◉" in line)
    assert "dataset dvc hub" in centre and "(+295 more)" in centre
    assert any("≡ same_as digest" in line for line in lines)
    assert all(len(line) <= 80 for line in lines)


def test_lanes_cross_and_merge() -> None:
    lines = [(i, name, "") for i, name in enumerate("abcd")]
    drawn = [t.plain for t in render_lanes(lines, {0: [2], 1: [3], 2: [3]})]
    assert drawn == ["●  a", "│ ●  b", "● │  c", "├─┘", "●  d"]


def test_completion_knows_tables_columns_functions_and_arguments() -> None:
    done = Completer(lambda prefix: [])
    assert done.complete("SELECT * FROM down")[1] == ["downstream"]
    assert "registry" in done.complete("SELECT * FROM r")[1]
    assert done.complete("SELECT * FROM upstream('x', dep")[1] == ["depth"]
    assert done.complete("SELECT m.ste")[1] == ["step"]
    assert done.complete("SELECT coal")[1] == ["coalesce"]


def test_braid_tui_without_a_catalog_is_one_line(tmp_path: Path) -> None:
    braid = Path(sys.executable).parent / "braid"
    proc = subprocess.run([str(braid), "--catalog", str(tmp_path / "none"), "tui"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("braid: error: catalog ") and "no catalog here yet" in proc.stderr
    helped = subprocess.run([str(braid), "tui", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "Explore the catalog in the terminal" in helped.stdout
