"""The TUI driven by real key presses on a catalog synced from a real workspace (git, DVC,
MLflow); assertions read what the screen and its widgets show."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from textual.widgets import OptionList, Sparkline, Tree

from braid.tui import BraidApp
from braid.tui._details import DetailsPane
from braid.tui._lineage import LineageTree
from braid.tui._query import PAGE_ROWS, ResultTable, SqlInput

from ._helpers import drive, normalise_svg, screen_text, settle, tree_lines, type_text, widget_text, write_catalog

pytestmark = pytest.mark.xdist_group("tui")

ROOT = Path(__file__).parents[2]
SNAPSHOTS = Path(__file__).parent / "snapshots"
VERSION = "mlflow:model_version/churn/2"


def details_text(app: BraidApp) -> str:
    """The details pane's text, runs of spaces squashed to one."""
    pane = app.query_one(DetailsPane)
    text = "\n".join(widget_text(w) for w in pane.children if hasattr(w, "content"))
    return re.sub(r"[ \t]+", " ", text)


def test_first_screen_shows_the_node_its_lineage_and_details(workspace) -> None:  # type: ignore[no-untyped-def]
    app = BraidApp(workspace.stable, node=VERSION)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        lines = tree_lines(app.query_one(LineageTree))
        assert lines[0] == "◆ model_version mlflow churn 2"
        assert "▲ upstream (1)" in lines[1] and "registered_as  model mlflow model" in lines[2]
        assert "▼ downstream (0)" in lines[3]
        text = screen_text(app)
        assert "stable · generation 1 · " in text
        details = details_text(app)
        assert "aliases champion" in details and "validated true" in details
        assert "registered" in details  # the stage and alias history from registry.events
        assert "attrs.storage_location" in details and "/work/churn-demo/mlruns/1/models/m-" in details

    drive(app, scenario)


def test_walking_the_tree_with_keys_opens_one_level_at_a_time_and_shows_same_as(workspace) -> None:  # type: ignore[no-untyped-def]
    app = BraidApp(workspace.stable, node=VERSION)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        tree = app.query_one(LineageTree)
        await pilot.press("down", "down", "right")  # the model: open its upstream
        await settle(pilot)
        lines = tree_lines(tree)
        assert any("output  run mlflow trial-2" in line for line in lines)
        assert not any("input  dataset" in line for line in lines)  # one level only
        await pilot.press("down", "right")  # trial-2
        await settle(pilot)
        lines = tree_lines(tree)
        for want in ("code  code ", "input  dataset mlflow test", "input  dataset mlflow train",
                     "parent_of  run mlflow tune"):
            assert any(want in line for line in lines), (want, lines)
        assert "run mlflow trial-2" in details_text(app)  # details follow the cursor
        await pilot.press("down", "down", "down", "right")  # the train dataset: its same_as twin
        await settle(pilot)
        twin = [line for line in tree_lines(tree) if "≡ same_as" in line]
        assert twin and "dataset dvc train.csv" in twin[0] and "(path data/train.csv @ " in twin[0]
        await pilot.press("down", "o")  # re-root at the DVC twin
        await settle(pilot)
        assert tree_lines(tree)[0].startswith("◆ dataset dvc train.csv")
        twins = re.search(r"≡ same as \((\d+)\)", "\n".join(tree_lines(tree)))
        assert twins and int(twins.group(1)) >= 4  # MLflow's dataset and the trials' three copies

    drive(app, scenario)


def test_fuzzy_search_as_you_type_and_enter_opens_the_best_match(workspace) -> None:  # type: ignore[no-untyped-def]
    app = BraidApp(workspace.stable, node=VERSION)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("slash")
        await type_text(pilot, "trn")
        await settle(pilot)
        results = app.query_one("#results", OptionList)
        shown = [str(results.get_option_at_index(i).prompt) for i in range(results.option_count)]
        assert shown[0].startswith("dataset") and "train" in shown[0]
        assert all("train" in s for s in shown[:2])
        await type_text(pilot, " dvc")
        await settle(pilot)
        assert str(results.get_option_at_index(0).prompt) == "dataset dvc train.csv d0f819efa416"
        await pilot.press("enter")
        await settle(pilot)
        assert tree_lines(app.query_one(LineageTree))[0] == "◆ dataset dvc train.csv d0f819efa416"
        assert app.focused is app.query_one(LineageTree)
        # by tool and kind words, and by a piece of an id
        await pilot.press("slash", "ctrl+u")
        await type_text(pilot, "mlflow run")
        await settle(pilot)
        shown = [str(results.get_option_at_index(i).prompt) for i in range(results.option_count)]
        assert len(shown) >= 4 and all(s.startswith("run mlflow") for s in shown[:4])

    drive(app, scenario)


def test_details_show_params_metrics_with_a_sparkline_and_the_run_record(workspace) -> None:  # type: ignore[no-untyped-def]
    app = BraidApp(workspace.stable)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("slash")
        await type_text(pilot, "trial-1")
        await pilot.press("enter")
        await settle(pilot)
        details = details_text(app)
        for want in ("lr 0.03", "cut 12", "epochs 20", "git_commit", "attrs.experiment churn"):
            assert want in details, want
        assert "loss last 0.142857 min 0.142857 max 0.769231 20 points" in details
        assert "accuracy last 0.63" in details
        sparks = app.query_one(DetailsPane).query(Sparkline)
        assert len(sparks) == 1 and len(sparks.first().data or []) == 20  # loss; accuracy has one point

    drive(app, scenario)


def test_dag_view_draws_the_neighbourhood_within_80_columns(workspace) -> None:  # type: ignore[no-untyped-def]
    app = BraidApp(workspace.stable)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("slash")
        await type_text(pilot, "trial-2")
        await pilot.press("enter", "g")
        await settle(pilot)
        text = screen_text(app)
        assert "DAG around mlflow:run/" in text
        drawing = [line.rstrip() for line in text.splitlines()]
        assert max(len(line) for line in drawing) <= 80
        centre = next(line for line in drawing if "◉" in line)
        assert "run mlflow trial-2" in centre and "← code, input, parent_of" in centre
        assert any("●  code " in line for line in drawing)  # causes above,
        assert any("model mlflow model  ← output" in line for line in drawing)  # effects below
        assert any(ch in text for ch in "├┘┐")
        await pilot.press("minus")
        await settle(pilot)
        assert "2 levels up and down" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert "DAG around" not in screen_text(app)

    drive(app, scenario, size=(80, 40))


def test_query_console_completes_runs_pages_and_remembers(workspace, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    history = tmp_path / "history"
    app = BraidApp(workspace.stable, node=VERSION, history_path=history)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("colon")
        await settle(pilot)
        sql = app.screen.query_one(SqlInput)
        await type_text(pilot, "SELECT kind, count(*) AS n FROM nod")
        await pilot.press("tab")
        assert sql.value == "SELECT kind, count(*) AS n FROM nodes"
        await type_text(pilot, " GROUP BY kind ORDER BY n DESC, kind")
        await pilot.press("enter")
        await settle(pilot)
        table = app.screen.query_one(ResultTable)
        assert [str(c.label) for c in table.columns.values()] == ["kind", "n"]
        counts = app.screen.query_one(ResultTable).frame
        assert table.row_count == counts.height >= 6 and {"run", "dataset", "model_version"} <= set(counts["kind"])
        assert table.get_row_at(0) == [counts["kind"][0], str(counts["n"].max())]
        assert f"{counts.height} rows × 2 columns" in screen_text(app)
        # node ids complete inside a string literal
        await pilot.press("ctrl+l")
        await type_text(pilot, "SELECT * FROM upstream('mlflow:model_v")
        await pilot.press("tab")
        assert sql.value.endswith("'mlflow:model_version/churn/1")
        # an error is underlined where it is
        await pilot.press("ctrl+l")
        await type_text(pilot, "SELECT nme FROM nodes")
        await pilot.press("enter")
        await settle(pilot)
        message = app.screen.query_one("#message").content
        assert "line 1, column 8: no column 'nme'" in message.plain
        underlined = [message.plain[s.start:s.end] for s in message.spans if "underline" in str(s.style)]
        assert underlined == ["nme"]
        # history: up brings back the last query, the file keeps them
        await pilot.press("ctrl+l", "up")
        assert sql.value == "SELECT nme FROM nodes"
        await pilot.press("up")
        assert sql.value.startswith("SELECT kind, count(*)")
        assert history.read_text().splitlines()[-1] == "SELECT nme FROM nodes"
        await pilot.press("escape")
        await settle(pilot)
        assert "◆ model_version mlflow churn 2" in screen_text(app)

    drive(app, scenario)


def _hub_catalog(root: Path, fan: int) -> None:
    """A dataset read by `fan` runs: a node with `fan` downstream neighbours."""
    runs = [f"mlflow:run/{i:06d}" for i in range(fan)]
    nodes = pl.DataFrame({
        "id": ["mlflow:dataset/hub", *runs], "kind": ["dataset"] + ["run"] * fan,
        "tool": ["mlflow"] * (fan + 1), "source": ["synthetic"] * (fan + 1),
        "name": ["hub", *[f"run-{i}" for i in range(fan)]],
    })
    edges = pl.DataFrame({"src": ["mlflow:dataset/hub"] * fan, "dst": runs, "kind": ["input"] * fan,
                          "source": ["synthetic"] * fan})
    write_catalog(root, nodes, edges)


def test_a_big_level_is_paged_and_big_results_are_paged(tmp_path: Path) -> None:
    _hub_catalog(tmp_path / "cat", 1250)
    app = BraidApp(tmp_path / "cat", node="mlflow:dataset/hub", page_size=100)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        tree = app.query_one(LineageTree)
        lines = tree_lines(tree)
        assert "▼ downstream (1,250)" in lines[2]
        assert sum("input  run mlflow" in line for line in lines) == 100
        assert lines[-1].strip().startswith("… 1,150 more")
        tree.move_cursor(tree.get_node_at_line(len(lines) - 1))
        await pilot.press("enter")
        await settle(pilot)
        lines = tree_lines(tree)
        assert sum("input  run mlflow" in line for line in lines) == 200 and lines[-1].strip().startswith("… 1,050 more")
        # the cursor stays on its line, which now holds the page's first child: the details follow it
        first = tree.root.children[1].children[100]
        assert tree.cursor_node is first and app.details.dense == first.data.dense
        assert f"run mlflow {app.explorer.row(first.data.dense)['name']}" in details_text(app)
        # results of a query reach the table a page at a time
        await pilot.press("colon")
        await type_text(pilot, "SELECT id FROM nodes")
        await pilot.press("enter")
        await settle(pilot)
        table = app.screen.query_one(ResultTable)
        assert table.frame.height == 1251 and table.row_count == PAGE_ROWS
        table.focus()
        await pilot.press("ctrl+end")
        await settle(pilot)
        assert PAGE_ROWS < table.row_count < 1251

    drive(app, scenario)


def _cells(strip) -> list[tuple[str, object]]:  # type: ignore[no-untyped-def]
    return [(char, segment.style) for segment in strip for char in segment.text]


def test_the_lineage_tree_draws_each_line_as_textual_tree_does(workspace) -> None:  # type: ignore[no-untyped-def]
    """The lineage tree draws its lines itself (`QuickTree`, for speed): every cell, its text and
    its style (colours, the cursor, hover, guides, the line and node ids a click reads), must be
    what Textual's `Tree._render_line` draws, in every state a line can be in."""
    app = BraidApp(workspace.stable, node=VERSION, page_size=2)  # pages of 2: "… more" lines too

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        tree = app.query_one(LineageTree)
        # the model, its run trial-2 (two children and "… 2 more"), the run's test dataset
        await pilot.press("down", "down", "right", "down", "right", "down", "down", "right")
        await settle(pilot)
        lines = len(tree._tree_lines)
        drawn = "\n".join(tree_lines(tree))
        assert lines > 8 and "… 2 more" in drawn and "≡ same_as" in drawn, drawn
        checked = 0

        async def compare(state: str) -> None:
            nonlocal checked
            await settle(pilot)
            base = tree.rich_style
            for y in range(lines):
                tree._line_cache.clear()
                textual = _cells(Tree._render_line(tree, y, 0, 1000, base))
                tree._line_cache.clear()
                tree._frame_base = base  # as within a frame
                try:
                    ours = _cells(tree._render_line(y, 0, 1000, base))
                finally:
                    tree._frame = tree._frame_base = None
                assert ours == textual, (state, y, tree_lines(tree)[y])
                checked += 1

        await compare("focused, cursor on the test dataset")
        tree.hover_line = 3
        await compare("hovering over a line with children")
        tree.cursor_line = 0
        await compare("cursor on the root")
        app.set_focus(None)
        await compare("not focused")
        assert checked == 4 * lines

    drive(app, scenario)


def test_compare_two_marked_runs(workspace) -> None:  # type: ignore[no-untyped-def]
    app = BraidApp(workspace.stable)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        for name in ("trial-1", "trial-2"):
            await pilot.press("slash")
            await type_text(pilot, name)
            await pilot.press("enter", "m")
            await settle(pilot)
        assert "marked: trial-1, trial-2  (c compares)" in screen_text(app)
        await pilot.press("c")
        await settle(pilot)
        text = screen_text(app)
        assert "params (2 of 3 differ)" in text
        assert any(line.split() == ["≠", "cut", "12", "18"] for line in text.splitlines())
        assert any(line.split() == ["≠", "lr", "0.03", "0.01"] for line in text.splitlines())
        assert any(line.split()[:3] == ["loss", "0.142857", "0.333333"] for line in text.splitlines())
        assert "same upstream lineage" in text
        await pilot.press("escape", "slash", "ctrl+u")
        await type_text(pilot, "prep")
        await pilot.press("enter", "m", "c")
        await settle(pilot)
        text = screen_text(app)
        assert "b  run dvc prep" in text and "only upstream of" in text

    drive(app, scenario)


def test_filters_by_tool_kind_and_as_of(workspace) -> None:  # type: ignore[no-untyped-def]
    app = BraidApp(workspace.stable, node=VERSION)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("f")
        await settle(pilot)
        await pilot.press("down", "down", "space", "ctrl+s")  # tools: mlflow, wandb, [dvc]
        await settle(pilot)
        assert "filters: tool dvc" in screen_text(app)
        results = app.query_one("#results", OptionList)
        shown = [str(results.get_option_at_index(i).prompt) for i in range(results.option_count)]
        assert shown and all(" dvc " in s for s in shown)
        # the tree hides what the filters leave out, and says so
        assert "1 hidden by filters" in "\n".join(tree_lines(app.query_one(LineageTree)))
        await pilot.press("f", "ctrl+x")
        await pilot.press("f", "tab", "tab")
        await type_text(pilot, "2000-01-01")
        await pilot.press("enter")
        await settle(pilot)
        assert "filters: as of 2000-01-01 00:00" in screen_text(app)
        results = app.query_one("#results", OptionList)
        assert app.explorer is not None and results.option_count
        nodes = app.explorer.catalog.nodes
        for i in range(results.option_count):  # only nodes with no time (dvc files, commits) remain
            assert nodes.row(int(results.get_option_at_index(i).id), named=True)["created_at"] is None

    drive(app, scenario)


def test_help_lists_every_binding_and_q_quits(workspace) -> None:  # type: ignore[no-untyped-def]
    from braid.tui._app import HELP_SECTIONS
    from braid.tui._help import binding_rows

    app = BraidApp(workspace.stable, node=VERSION)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("question_mark")
        await settle(pilot)
        help_text = "\n".join(widget_text(w, 160) for w in app.screen.query("Static"))
        for _title, owner, inherit in HELP_SECTIONS:
            for binding in binding_rows(owner, inherit=inherit):
                assert binding.description in help_text, (owner, binding)
        assert "Lineage tree" in help_text and "Query console" in help_text
        await pilot.press("escape", "q")
        await pilot.pause()
        assert not app.is_running

    drive(app, scenario)
    assert app.return_code == 0


def test_a_resync_offers_to_reload(tmp_path: Path, workspace) -> None:  # type: ignore[no-untyped-def]
    import shutil

    catalog = tmp_path / "cat"
    shutil.copytree(workspace.stable, catalog)
    app = BraidApp(catalog, node=VERSION, poll_seconds=0.05)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        from braid.unify import open_catalog

        cat = open_catalog(catalog)
        extra = pl.DataFrame({"id": ["mlflow:dataset/late"], "kind": ["dataset"], "tool": ["mlflow"],
                              "source": ["synthetic"], "name": ["late-arrival"]})
        write_catalog(catalog, pl.concat([cat.nodes, extra], how="diagonal_relaxed"), cat.edges,
                      registry=cat.table("registry"))
        for _ in range(40):
            await pilot.pause(0.05)
            if "re-synced" in screen_text(app):
                break
        assert "generation 2 is ready" in screen_text(app)
        await pilot.press("y")
        await settle(pilot)
        assert " · generation 2 · " in app.sub_title  # the header may cut a long path short
        assert tree_lines(app.query_one(LineageTree))[0] == "◆ model_version mlflow churn 2"  # kept
        await pilot.press("slash")
        await type_text(pilot, "late")
        await settle(pilot)
        assert "late-arrival" in screen_text(app)

    drive(app, scenario)


# -- snapshots ---------------------------------------------------------------------------------
async def _main(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.press("down", "down", "right", "down", "right")
    await settle(pilot)


async def _dag(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.press("g")
    await settle(pilot)


async def _query(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.press("colon")
    await type_text(pilot, "SELECT r.name, p.value AS lr, m.value AS accuracy FROM runs r JOIN params p "
                           "ON p.run_id = r.id JOIN metrics m ON m.run_id = r.id WHERE p.key = 'lr' "
                           "AND m.key = 'accuracy' ORDER BY accuracy DESC, r.name")
    await pilot.press("enter")
    await settle(pilot)


async def _compare(pilot) -> None:  # type: ignore[no-untyped-def]
    for name in ("trial-0", "trial-2"):
        await pilot.press("slash", "ctrl+u")
        await type_text(pilot, name)
        await pilot.press("enter", "m")
    await pilot.press("c")
    await settle(pilot)


async def _help(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.press("question_mark")
    await settle(pilot)


SCREENS = {"main": _main, "dag": _dag, "query": _query, "compare": _compare, "help": _help}


@pytest.mark.parametrize("name", list(SCREENS))
def test_snapshot(workspace, name: str) -> None:  # type: ignore[no-untyped-def]
    """Each main screen against its SVG in tests/tui/snapshots (digits and hex masked).

    BRAID_UPDATE_SNAPSHOTS=1 rewrites them; the main screen is also the README's docs/tui.svg.
    """
    app = BraidApp(workspace.stable, node="mlflow:run/" if name == "query" else VERSION)
    svgs: list[str] = []

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await SCREENS[name](pilot)
        svgs.append(app.export_screenshot(title="braid tui"))

    drive(app, scenario)
    targets = [SNAPSHOTS / f"{name}.svg"] + ([ROOT / "docs" / "tui.svg"] if name == "main" else [])
    for target in targets:
        if os.environ.get("BRAID_UPDATE_SNAPSHOTS") == "1" or not target.exists():
            if not target.exists() or normalise_svg(target.read_text()) != normalise_svg(svgs[0]):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(svgs[0])
        if normalise_svg(target.read_text()) != normalise_svg(svgs[0]):
            actual = Path(tempfile.gettempdir()) / f"braid-tui-{name}.actual.svg"
            actual.write_text(svgs[0])
            pytest.fail(f"{target} differs from the screen ({actual}); look at both, then "
                        "BRAID_UPDATE_SNAPSHOTS=1 to accept")
