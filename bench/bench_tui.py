"""TUI benchmark: `braid tui` on a synthetic catalog of 1,000,000 nodes.

Writes a catalog (Parquet tables and a manifest through `unify/store.py`'s Writer) holding a
layered random DAG plus one dataset read by 10,000 runs (the hub), then drives the app
headless and measures:

- first paint: from creating the app to its first frame (the catalog loads behind it);
- ready: until the catalog is open, its index built and the search index computed;
- cursor down: from the key on the line above the hub to the frame that redraws the hub's
  line (the cursor on it); "details after down" to the frame whose details show the hub;
- expand 10,000: from the key (`right`) on the hub's line to the frame showing its first
  page of 10,000 neighbours;
- next page: from the key (`enter`) on "… 9,900 more" to the frame showing the next 100
  children; "details after page" to the frame whose details show the child under the cursor;
- re-root at hub: from the key (`o`) on the hub to the frame with the tree rooted at it;
- search (1 key): from the last key typed to the frame with the results list updated
  (1,000,000 names, searched in a worker thread);
- memory: the process's RSS once ready and at the end.

Each key step is measured twice:

- "frame" is what a person at a terminal waits: the key is handed to the app the way a
  terminal driver hands it over (`Driver.send_message` from the input side), and the clock
  stops at the first frame after which the screen shows the result. Frames are caught where
  the app sends them to the terminal (`App._display`; headless, the bench also encodes them
  into escape codes as a terminal driver would) and applied to a model of the terminal
  (`Terminal`), from which the result is read: the text in the widget's region, not the
  widget's state, which reaches the screen a frame later when the widget goes idle after
  the frame has been drawn. "cpu" is the process's CPU time (all threads) to that frame,
  "last frame" the time to the frame after which the screen stays still (a key may draw the
  cursor's frame, then the details', then a scrollbar's) and "cpu all" the CPU time to it:
  all the work the key caused, which a key pressed right after waits for.
- "pilot" is Textual's test harness round trip: `pilot.press` then `pilot.pause`. It is not
  the user's latency: `press` waits twice and `pause` once for the process to look idle
  (`textual._wait.wait_for_idle`: sleeps of 20 ms until one whole sleep passes with under
  1 ms of process CPU) and for every widget to answer a `call_later`, so it adds at least
  60 ms to any key, and another 20 ms for each sleep in which a later frame or a thread runs.

Before each timed key the bench lets pending work finish and the cursor rest (a person reading
the screen between keys): a key within `DETAILS_DELAY` of the last cursor move counts as a held
key, whose details wait for the cursor to rest.

Goals: first paint under 1 s, each step under 100 ms. Run it with:

    .venv/bin/python bench/bench_tui.py                  # 1,000,000 nodes
    .venv/bin/python bench/bench_tui.py --nodes 100000 --fan 10000
    .venv/bin/python bench/bench_tui.py --keep /tmp/tui-1m     # write the catalog once, reuse it
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import psutil
from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual._compositor import ChopsUpdate, CompositorUpdate, LayoutUpdate
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import OptionList
from textual.widgets.tree import TreeNode

from braid.tui import BraidApp
from braid.tui import _app
from braid.tui._app import SearchBox
from braid.tui._lineage import LineageTree
from braid.tui._model import node_text
from braid.unify.schema import canonical
from braid.unify.store import MANIFEST, Manifest, SourceEntry, Writer

LAYERS = 50
HUB = "dvc:dataset/hub.csv@" + "0" * 32


def synthesise(n: int, m: int, fan: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A layered DAG of datasets and runs over the three tools, plus the hub: a dataset that
    `fan` runs read, written by one run (`dvc:run/hub-writer`)."""
    rng = np.random.default_rng(seed)
    layer = np.arange(n) * LAYERS // n
    starts = np.searchsorted(layer, np.arange(LAYERS + 1))
    tool = pl.Series(["mlflow", "wandb", "dvc"]).gather(rng.integers(0, 3, n))
    kind = pl.Series(["dataset", "run"]).gather(layer % 2)
    nodes = pl.DataFrame({"tool": tool, "kind": kind, "n": np.arange(n)}).select(
        pl.format("{}:{}/{}", "tool", "kind", pl.col("n").cast(pl.String).str.zfill(8)).alias("id"),
        "kind", "tool", pl.col("tool").alias("source"),
        pl.format("{}-{}", "kind", pl.col("n").cast(pl.String).str.zfill(7)).alias("name"),
        pl.lit("1").alias("version"),
        pl.datetime(2026, 1, 1, time_zone="UTC").dt.offset_by(pl.format("{}s", "n")).alias("created_at"),
    )
    src = rng.integers(0, starts[LAYERS - 1], m)
    dst = starts[layer[src] + 1] + (rng.random(m) * (starts[layer[src] + 2] - starts[layer[src] + 1])).astype(np.int64)
    ids = nodes.get_column("id")
    edges = pl.DataFrame({"src": ids.gather(src), "dst": ids.gather(dst),
                          "kind": pl.Series(["input", "output"]).gather(layer[src] % 2), "source": "synthetic"})
    run_layer = np.flatnonzero(layer % 2 == 1)  # odd layers hold runs
    readers = ids.gather(rng.choice(run_layer, fan, replace=False))
    hub_nodes = pl.DataFrame({"id": [HUB, "dvc:run/hub-writer"], "kind": ["dataset", "run"], "tool": ["dvc", "dvc"],
                              "source": ["dvc", "dvc"], "name": ["hub.csv", "hub-writer"], "version": ["1", "1"]})
    hub_edges = pl.DataFrame({"src": ["dvc:run/hub-writer", *[HUB] * fan], "dst": [HUB, *readers.to_list()],
                              "kind": ["output", *["input"] * fan], "source": "synthetic"})
    nodes = pl.concat([nodes, hub_nodes], how="diagonal_relaxed")
    edges = pl.concat([edges, hub_edges], how="diagonal_relaxed")
    return canonical("nodes", nodes), canonical("edges", edges)


def write(root: Path, nodes: pl.DataFrame, edges: pl.DataFrame) -> None:
    with Writer(root) as writer:
        refs = {"nodes": writer.write_frame("synthetic", "nodes", nodes),
                "edges": writer.write_frame("synthetic", "edges", edges)}
        writer.commit(Manifest(sources={"synthetic": SourceEntry("dvc", refs)}))


@dataclass
class Frame:
    """One frame the app wrote: when, the process's CPU time then, and the update itself."""

    at: float
    cpu: float
    update: CompositorUpdate


class Terminal:
    """What a terminal shows once it has applied the frames: a character and a style per cell.

    The bench reads results off this, not off the widgets: a widget's change reaches the
    screen in the frame after the widget next goes idle, which may be the frame after the one
    drawn while its state had already changed.
    """

    def __init__(self, width: int, height: int) -> None:
        self.cells: list[list[tuple[str, Style | None]]] = [[(" ", None)] * width for _ in range(height)]

    def apply(self, update: CompositorUpdate) -> None:
        if isinstance(update, LayoutUpdate):
            for y, line in enumerate(update.strips, update.region.y):
                x = update.region.x
                for strip in line:
                    x = self._put(x, y, strip)
        elif isinstance(update, ChopsUpdate):  # each changed line's fragments, by their x
            for y, _, _ in update.spans:
                for x, strip in update.chops[y].items():
                    if strip is not None:
                        self._put(x, y, strip)

    def _put(self, x: int, y: int, strip: Iterable[Segment]) -> int:
        row = self.cells[y]
        for segment in strip:
            if segment.control:
                continue
            for char in segment.text:
                if 0 <= x < len(row):
                    row[x] = (char, segment.style)
                x += cell_len(char)
        return x

    def rows(self, region: Region) -> list[str]:
        """The text of each line of `region` (a widget's `content_region`)."""
        return ["".join(char for char, _ in row[region.x:region.right]) for row in self.cells[region.y:region.bottom]]

    def look(self, region: Region, line: int) -> tuple[Style | None, ...]:
        """The styles of line `line` of `region`."""
        return tuple(style for _, style in self.cells[region.y + line][region.x:region.right])


class TimedApp(BraidApp):
    """Records when the first frame was drawn, and every frame after."""

    painted: float | None = None

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.frames: list[Frame] = []  # written, not yet applied to `terminal`
        self.new_frame = asyncio.Event()
        self.terminal: Terminal | None = None

    def on_mount(self) -> None:
        self.call_after_refresh(self._painted)

    def _painted(self) -> None:
        if self.painted is None:
            self.painted = time.perf_counter()

    def _display(self, screen, renderable) -> None:  # type: ignore[no-untyped-def]
        written = renderable is not None and not self._batch_count  # as `App._display` decides
        super()._display(screen, renderable)
        if not written or not isinstance(renderable, CompositorUpdate):
            return
        if self.is_headless:
            renderable.render_segments(self.console)  # what a terminal's frame costs to encode
        self.frames.append(Frame(time.perf_counter(), time.process_time(), renderable))
        self.new_frame.set()

    def catch_up(self) -> list[Frame]:
        """Apply the frames written since the last call to `terminal`; return them. (Kept any
        longer, a long run's frames hold millions of segments for the cyclic GC to walk.)"""
        if self.terminal is None:
            self.terminal = Terminal(*self.size)
        new, self.frames = self.frames, []
        for frame in new:
            self.terminal.apply(frame.update)
        return new


async def settle(app: BraidApp, pilot) -> None:  # type: ignore[no-untyped-def]
    """Let pending work (the details pane, workers) finish and the cursor rest, as a person
    reading the screen between keys would: a key within `DETAILS_DELAY` of the last cursor
    move counts as a held key, whose details wait for the cursor to rest."""
    await app.workers.wait_for_complete()
    await pilot.pause()
    await asyncio.sleep(getattr(_app, "DETAILS_DELAY", 0.0))


QUIET = 0.3  # no frame for this long (more than DETAILS_DELAY and a frame): the screen is at rest


Shown = Callable[[Terminal], bool]


async def keystroke(app: TimedApp, key: str, awaited: dict[str, Shown]) -> dict[str, tuple[float, float]]:
    """Send `key` as a terminal driver does; return, for each awaited result, the seconds to the
    first frame after which the terminal shows it and the process's CPU seconds until then, and
    the same for the last frame before the screen rests (`last frame`)."""
    app.catch_up()
    started, cpu = time.perf_counter(), time.process_time()
    app._driver.send_message(events.Key(key, key if len(key) == 1 else None))
    deadline = started + 10
    firsts: dict[str, Frame] = {}
    frames: list[Frame] = []
    while len(firsts) < len(awaited):
        app.new_frame.clear()
        for frame in app.catch_up():
            frames.append(frame)
            assert app.terminal is not None
            firsts.update({name: frame for name, shown in awaited.items() if name not in firsts and shown(app.terminal)})
        if len(firsts) < len(awaited):
            await asyncio.wait_for(app.new_frame.wait(), max(0.01, deadline - time.perf_counter()))
    while True:
        await app.workers.wait_for_complete()
        await asyncio.sleep(QUIET)
        new = app.catch_up()
        if not new:
            break
        frames += new
    return {name: (f.at - started, f.cpu - cpu) for name, f in {**firsts, "last frame": frames[-1]}.items()}


class Laps:
    """Per step name: the key-to-frame seconds ("frame"), to the last frame, the CPU seconds to
    the frame, and Pilot's press-and-pause round trip ("pilot")."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, list[float]]] = {}
        self._started = 0.0

    def add(self, step: str, column: str, seconds: float) -> None:
        self.steps.setdefault(step, {}).setdefault(column, []).append(seconds)

    def keystroke(self, timed: dict[str, tuple[float, float]], steps: dict[str, str]) -> None:
        """Record `keystroke`'s result `name` as the step `steps[name]`; the last frame goes to
        the first of them."""
        for name, step in steps.items():
            self.add(step, "frame", timed[name][0])
            self.add(step, "cpu", timed[name][1])
        self.add(next(iter(steps.values())), "last frame", timed["last frame"][0])
        self.add(next(iter(steps.values())), "cpu all", timed["last frame"][1])

    def start(self) -> None:
        self._started = time.perf_counter()

    def lap(self, step: str) -> None:
        self.add(step, "pilot", time.perf_counter() - self._started)


async def measure(path: Path, repeat: int) -> tuple[dict[str, float], dict[str, dict[str, list[float]]]]:
    out: dict[str, float] = {}
    started = time.perf_counter()
    app = TimedApp(path, node="dvc:run/hub-writer")
    async with app.run_test(size=(120, 40)) as pilot:
        while app.painted is None:
            await pilot.pause(0.001)
        out["first paint"] = app.painted - started
        while app.explorer is None:
            await asyncio.sleep(0.005)
        await pilot.pause()
        out["ready"] = time.perf_counter() - started
        out["rss ready"] = psutil.Process().memory_info().rss / 2**20
        tree = app.query_one(LineageTree)
        results = app.query_one("#results", OptionList)
        explorer = app.explorer
        laps = Laps()
        hub = explorer.dense(HUB)

        def shows(widget: Widget, text: Callable[[], str | None]) -> Shown:
            """The terminal shows `text()` on a line of `widget`."""
            def shown(terminal: Terminal) -> bool:
                want = text()
                return want is not None and any(want in row for row in terminal.rows(widget.content_region))
            return shown

        def header(node: TreeNode | None) -> str | None:  # type: ignore[type-arg]
            """The first line of `node`'s details."""
            return None if node is None else node_text(explorer.row(node.data.dense)).plain

        for _ in range(repeat):
            for timing in ("frame", "pilot"):
                app.centre(explorer.dense("dvc:run/hub-writer"))
                await settle(app, pilot)
                hub_line = next(i for i, line in enumerate(tree._tree_lines) if "hub.csv" in str(line.path[-1].label))
                tree.cursor_line = hub_line - 1
                await settle(app, pilot)

                def hub_child(index: int) -> TreeNode | None:  # type: ignore[type-arg]
                    hub_node = tree.get_node_at_line(hub_line)
                    assert hub_node is not None
                    return hub_node.children[index] if len(hub_node.children) > index else None

                if timing == "frame":
                    app.catch_up()
                    assert app.terminal is not None
                    row = hub_line - tree.scroll_offset.y
                    before = app.terminal.look(tree.content_region, row)
                    timed = await keystroke(app, "down", {
                        "cursor": lambda terminal: terminal.look(tree.content_region, row) != before,
                        "details": shows(app.details, lambda: "dataset dvc hub.csv"),
                    })
                    laps.keystroke(timed, {"cursor": "cursor down", "details": "details after down"})
                else:
                    laps.start()
                    await pilot.press("down")
                    await pilot.pause()
                    laps.lap("cursor down")
                    await app.workers.wait_for_complete()
                    await pilot.pause()
                    laps.lap("details after down")
                assert app.details.dense == hub
                await settle(app, pilot)
                if timing == "frame":
                    timed = await keystroke(app, "right", {
                        "expanded": shows(tree, lambda: str(child.label) if (child := hub_child(0)) else None)})
                    laps.keystroke(timed, {"expanded": "expand 10,000"})
                else:
                    laps.start()
                    await pilot.press("right")
                    await pilot.pause()
                    laps.lap("expand 10,000")
                more = hub_child(100)
                assert more is not None and hub_child(101) is None  # 100 + "… 9,900 more"
                tree.move_cursor(more)
                await settle(app, pilot)
                if timing == "frame":
                    timed = await keystroke(app, "enter", {
                        "page": shows(tree, lambda: str(child.label) if (child := hub_child(100)) else None),
                        "details": shows(app.details, lambda: header(hub_child(100)) if hub_child(101) else None),
                    })
                    laps.keystroke(timed, {"page": "next page", "details": "details after page"})
                else:
                    laps.start()
                    await pilot.press("enter")
                    await pilot.pause()
                    laps.lap("next page")
                assert hub_child(200) is not None and hub_child(201) is None
                tree.cursor_line = hub_line
                await settle(app, pilot)
                if timing == "frame":
                    timed = await keystroke(app, "o", {"rooted": shows(tree, lambda: "◆ dataset dvc hub.csv")})
                    laps.keystroke(timed, {"rooted": "re-root at hub"})
                else:
                    laps.start()
                    await pilot.press("o")
                    await pilot.pause()
                    laps.lap("re-root at hub")
                assert "hub.csv" in str(tree.root.label)
        await pilot.press("slash")
        app.query_one(SearchBox).cursor_blink = False  # a blinking cursor draws a frame every 0.5 s
        for _ in range(repeat):
            for word in ("run-00123", "dataset-0042", "hub"):
                for timing in ("frame", "pilot"):
                    await pilot.press("ctrl+u", *word[:-1])
                    await app.workers.wait_for_complete()
                    await settle(app, pilot)
                    found = explorer.search.search(word, filters=app.filters, limit=_app.SEARCH_LIMIT).tolist()
                    if timing == "frame":
                        labels = [node_text(explorer.row(d)).plain for d in found[:results.content_region.height]]

                        def listed(terminal: Terminal, labels: list[str] = labels) -> bool:
                            rows = terminal.rows(results.content_region)
                            return all(label in row for label, row in zip(labels, rows))

                        timed = await keystroke(app, word[-1], {"found": listed})
                        laps.keystroke(timed, {"found": "search (1 key)"})
                    else:
                        laps.start()
                        await pilot.press(word[-1])
                        await app.workers.wait_for_complete()
                        await pilot.pause()
                        laps.lap("search (1 key)")
                    assert app.results == found
        out["rss end"] = psutil.Process().memory_info().rss / 2**20
    return out, laps.steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=2_000_000)
    parser.add_argument("--fan", type=int, default=10_000, help="neighbours of the hub node")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the catalog to this folder once and reuse it")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, polars {pl.__version__}, cpus {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="braid-bench-tui-") as tmp:
        root = Path(tmp)
        if args.keep is not None:
            root = args.keep / f"n{args.nodes}-m{args.edges}-f{args.fan}-s{args.seed}"
        if args.keep is None or not (root / MANIFEST).exists():
            started = time.perf_counter()
            nodes, edges = synthesise(args.nodes, args.edges, args.fan, args.seed)
            root.mkdir(parents=True, exist_ok=True)
            write(root, nodes, edges)
            print(f"catalog: {nodes.height:,} nodes, {edges.height:,} edges, hub with {args.fan:,} neighbours, "
                  f"written in {time.perf_counter() - started:.1f} s")
            del nodes, edges
        else:
            print(f"catalog: reusing {root}")
        result = asyncio.run(measure(root, args.repeat))
    once, steps = result
    ms = lambda values: f"{statistics.median(values) * 1000:>7.1f} {max(values) * 1000:>7.1f}"  # noqa: E731
    print(f"first paint {once['first paint'] * 1000:.0f} ms "
          f"({'ok' if once['first paint'] < 1.0 else 'MISSED'}: < 1000 ms), ready {once['ready'] * 1000:.0f} ms, "
          f"rss ready {once['rss ready']:.0f} MB, rss end {once['rss end']:.0f} MB")
    columns_shown = ("frame", "cpu", "last frame", "cpu all", "pilot")
    print(f"{'ms: median max':<19} " + " ".join(f"{c:>15}" for c in columns_shown) + "  goal (frame < 100 ms)")
    for name, columns in steps.items():
        cells = [ms(columns[c]) if c in columns else " " * 15 for c in columns_shown]
        verdict = ("ok" if max(columns["frame"]) < 0.1 else "MISSED") if "frame" in columns else ""
        print(f"{name:<19} " + " ".join(cells) + f"  {verdict}")
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
