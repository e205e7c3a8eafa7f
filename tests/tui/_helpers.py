"""Driving the app with Pilot and reading what the screen shows."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import polars as pl
from rich.console import Console
from textual.pilot import Pilot
from textual.widget import Widget

from braid.unify.schema import conform
from braid.unify.store import Manifest, SourceEntry, Writer

SIZE = (120, 40)


def screen_text(app) -> str:  # type: ignore[no-untyped-def]
    """The screen as plain text, as a terminal would show it."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True,
                      force_terminal=True, color_system=None, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def widget_text(widget: Widget, width: int = 200) -> str:
    """The whole content of a Static (all of it, not only the part scrolled into view)."""
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(widget.content)  # type: ignore[attr-defined]
    return console.export_text()


def tree_lines(tree) -> list[str]:  # type: ignore[no-untyped-def]
    """Each visible line of a Tree, its label's plain text indented by depth."""
    out = []
    for line in tree._tree_lines:
        node = line.path[-1]
        out.append("  " * (len(line.path) - 1) + str(node.label))
    return out


async def settle(pilot: Pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def drive(app, scenario: Callable[[Pilot], Awaitable[None]], size: tuple[int, int] = SIZE) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await scenario(pilot)

    asyncio.run(main())


async def type_text(pilot: Pilot, text: str) -> None:
    names = {" ": "space", "-": "minus", "(": "left_parenthesis", ")": "right_parenthesis", "*": "asterisk",
             ",": "comma", "'": "apostrophe", ":": "colon", "/": "slash", ".": "full_stop", "=": "equals_sign",
             ">": "greater_than_sign", "_": "underscore"}
    await pilot.press(*[names.get(ch, ch) for ch in text])


def write_catalog(root: Path, nodes: pl.DataFrame, edges: pl.DataFrame, **tables: pl.DataFrame) -> None:
    """A one-source catalog (`synthetic`) with these frames, committed as a new generation."""
    with Writer(root) as writer:
        refs = {"nodes": writer.write_frame("synthetic", "nodes", conform("nodes", nodes)),
                "edges": writer.write_frame("synthetic", "edges", conform("edges", edges))}
        for name, frame in tables.items():
            refs[name] = writer.write_frame("synthetic", name, conform(name, frame))
        writer.commit(Manifest(sources={"synthetic": SourceEntry("mlflow", refs)}))


_HEX = re.compile(r"[0-9a-f]{7,}")


def normalise_svg(svg: str) -> str:
    """An SVG screenshot with what legitimately changes between runs masked: digits (times,
    durations, and the id Rich derives from the content) and long hex runs."""
    svg = re.sub(r"terminal-\d+", "terminal", svg)
    svg = re.sub(r"in(&#160;)+\d+(&#160;)ms", "in N ms", svg)  # the query's run time
    return re.sub(r"\d", "0", _HEX.sub(lambda m: "x" * len(m.group()), svg))
