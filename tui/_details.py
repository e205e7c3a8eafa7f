"""The details pane: every fact braid holds about one node.

Attributes (the node row and each `attrs` field), links (with `same_as` evidence), tags,
the run's record and params, metrics with a sparkline of each history, and for a registry
version its aliases, stage and event history. Sections with nothing in them are left out.
"""

from __future__ import annotations

import json
from typing import Any, Union

import numpy as np
import polars as pl
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, NewLine, RenderableType, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from braid.unify import BraidError

from ._model import Explorer, evidence_text, node_text

MAX_SPARKLINES = 8
MAX_POINTS = 2000  # a longer history is thinned evenly before it reaches the sparkline
MAX_LINKS_LISTED = 5


class Grid:
    """Keys and values in two columns: what `Table.grid(padding=(0, 1))` draws with a dim key
    column (at most 22 cells, cut with an ellipsis) and a value column folded to the width
    left, line for line and style for style, without the table's measuring passes over every
    cell (the pane is redrawn each time the cursor rests on another node).

    >>> from rich.console import Console
    >>> console = Console(width=20, color_system=None)
    >>> with console.capture() as out:
    ...     console.print(Grid([("id", "a"), ("digest", "abcdefghijklmnopqrstuvwxyz")]))
    >>> print(out.get().rstrip())
    id     a
    digest abcdefghijklm
           nopqrstuvwxyz
    """

    MAX_KEY = 22

    def __init__(self, rows: list[tuple[str, Any]]) -> None:
        self.rows = [(Text(str(key)), value if isinstance(value, Text) else Text("—" if value is None else str(value)))
                     for key, value in rows]

    def _widths(self, max_width: int) -> tuple[int, int]:
        key = min(self.MAX_KEY, max((k.cell_len for k, _ in self.rows), default=0))
        value = max((max(cell_len(line) for line in v.plain.split("\n")) for _, v in self.rows), default=0)
        return key, max(1, min(value, max_width - key - 1))  # a column is at least one cell wide

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        key, value = self._widths(options.max_width)
        return Measurement(key + 1 + value, key + 1 + value)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.rows:
            return
        key_width, value_width = self._widths(options.max_width)
        if key_width + 1 + value_width > options.max_width:  # too narrow: let the table squeeze the keys
            yield self._table()
            return
        dim = console.get_style("dim")
        key_options = options.update(width=key_width, no_wrap=True, overflow="ellipsis", height=None,
                                     justify="left", highlight=False)
        value_options = options.update(width=value_width, no_wrap=False, overflow="fold", height=None,
                                       justify="left", highlight=False)
        gap = Segment(" ", dim)
        new_line = Segment.line()
        for key, value in self.rows:
            # the segments the table yields: a key line then its padding, a blank key cell as one
            keys = [[*line, gap] for line in console.render_lines(key, key_options, style=dim)]
            values = console.render_lines(value, value_options)
            height = max(len(keys), len(values))
            keys = Segment.set_shape(keys, key_width + 1, height, style=dim)
            values = Segment.set_shape(values, value_width, height)
            for key_line, value_line in zip(keys, values):
                yield from key_line
                yield from value_line
                yield new_line


    def _table(self) -> Table:
        table = Table.grid(padding=(0, 1))
        table.add_column(style="dim", no_wrap=True, max_width=self.MAX_KEY, overflow="ellipsis")
        table.add_column(overflow="fold")
        for key, value in self.rows:
            table.add_row(key, value)
        return table


def _grid(rows: list[tuple[str, Any]]) -> Grid:
    return Grid(rows)


def _heading(title: str) -> list[RenderableType]:
    # a blank line, as the margin above a heading
    return [NewLine(), Text(title, style="bold underline")]


def _value(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def attribute_rows(row: dict[str, Any]) -> list[tuple[str, Any]]:
    """The node's columns, then each field of its `attrs` JSON as `attrs.<key>`.

    >>> attribute_rows({"id": "a", "size": 3, "attrs": '{"md5": "x"}'})
    [('id', 'a'), ('size', '3'), ('attrs.md5', 'x')]
    """
    row = dict(row)
    raw = row.pop("attrs", None)
    rows = [(k, _value(v)) for k, v in row.items()]
    try:
        attrs = json.loads(raw) if raw else {}
    except ValueError:
        attrs = {"(raw)": raw}
    if isinstance(attrs, dict):
        rows += [(f"attrs.{k}", _value(v)) for k, v in attrs.items()]
    return rows


def _events(raw: str | None) -> Table | None:
    try:
        events = json.loads(raw or "[]")
    except ValueError:
        return None
    if not events:
        return None
    table = Table("at", "event", "details", box=None, padding=(0, 1), header_style="dim")
    for event in events:
        event = dict(event)
        at = str(event.pop("at", "") or "")[:19].replace("T", " ")
        what = str(event.pop("event", "?"))
        rest = " ".join(f"{k}={v}" for k, v in event.items() if v is not None)
        table.add_row(at, what, rest)
    return table


def _thin(values: np.ndarray) -> list[float]:
    if values.size > MAX_POINTS:
        values = values[np.linspace(0, values.size - 1, MAX_POINTS).astype(np.int64)]
    return [float(v) for v in values if np.isfinite(v)]


# the pane's content: renderables drawn as one block, then widgets (the metrics' sparklines)
Part = Union[RenderableType, Widget]


class _Body(Static):
    """The pane's text. When a new node's text has another height, the layout resizes it, and
    `Widget._size_updated` then sets `virtual_size` as a reactive that asks for a second layout
    and a repaint of the same text. A Static does not scroll, so its virtual size is recorded
    without that (as Textual does for a scroll-only layout); the pane's scrollbars still follow."""

    def _size_updated(self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True) -> bool:
        return super()._size_updated(size, virtual_size, container_size, layout=False)


class DetailsPane(VerticalScroll):
    """Shows one node's facts; `show` replaces what is there.

    The text of every section is one renderable in one `Static`, updated in place: a node
    without metrics mounts no widget, which keeps a cursor move from paying for new widgets'
    styles and layout. Only the metrics' lines and sparklines are widgets of their own.
    """

    DEFAULT_CSS = """
    DetailsPane { padding: 0 1; }
    DetailsPane Sparkline { height: 2; margin: 0 0 0 2; width: 1fr; }
    DetailsPane .metric { height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.dense: int | None = None
        self.explorer: Explorer | None = None  # the generation `dense` was read from
        self.can_focus = True
        self._body = _Body(classes="body")
        self._widgets: list[Widget] = []

    def compose(self) -> ComposeResult:
        yield self._body

    def show(self, explorer: Explorer, dense: int) -> None:
        self.dense, self.explorer = dense, explorer
        try:
            parts = self._sections(explorer, dense)
        except BraidError as exc:  # e.g. the catalog was re-synced twice and this generation collected
            parts = [Text(f"cannot read this node's facts: {exc}", style="red")]
        self._replace([p for p in parts if not isinstance(p, Widget)], [p for p in parts if isinstance(p, Widget)])
        self.scroll_home(animate=False)

    def clear(self, message: str) -> None:
        self.dense = self.explorer = None
        self._replace([Text(message, style="dim")], [])

    def _replace(self, body: list[RenderableType], widgets: list[Widget]) -> None:
        with self.app.batch_update():
            self._body.update(Group(*body) if len(body) != 1 else body[0])
            if self._widgets:
                self.remove_children(self._widgets)
            self._widgets = widgets
            if widgets:
                self.mount_all(widgets)

    def _sections(self, explorer: Explorer, dense: int) -> list[Part]:
        row = explorer.full_row(dense)
        node_id = row["id"]
        out: list[Part] = [node_text(row), _grid(attribute_rows(row))]
        out += self._links(explorer, dense)
        tags = explorer.facts("tags", "node_id", node_id)
        if tags.height:
            out += [*_heading(f"tags ({tags.height})"), _grid(tags.select("key", "value").rows())]
        if row["kind"] == "run":
            out += self._run(explorer, node_id)  # metrics last: their widgets follow the text
        if row["kind"] == "model_version":
            out += self._registry(explorer, node_id)
        return out

    def _links(self, explorer: Explorer, dense: int) -> list[Part]:
        up, down, twins = (explorer.degree(dense, b) for b in ("upstream", "downstream", "same_as"))
        out: list[Part] = [*_heading("links"), Text(f"{up:,} upstream · {down:,} downstream · "
                                                     f"{twins:,} same_as", style="")]
        if twins:
            entries = explorer.entries(dense, "same_as")
            lines = Text()
            for i, (other, edge) in enumerate(zip(entries.node[:MAX_LINKS_LISTED].tolist(),
                                                  entries.edge[:MAX_LINKS_LISTED].tolist())):
                if i:
                    lines.append("\n")
                lines.append("≡ ", style="bold #d75f87")
                lines.append(explorer.node_id(other))
                lines.append(f"\n    evidence: {evidence_text(explorer.edge_attrs(edge))}", style="#d75f87")
            if twins > MAX_LINKS_LISTED:
                lines.append(f"\n… {twins - MAX_LINKS_LISTED:,} more", style="dim")
            out.append(lines)
        return out

    def _run(self, explorer: Explorer, node_id: str) -> list[Part]:
        out: list[Part] = []
        run = explorer.facts("runs", "id", node_id)
        if run.height:
            record = run.drop("id", "tool", "source").row(0, named=True)
            rows = [(k, _value(v)) for k, v in record.items() if v is not None]
            out += [*_heading("run"), _grid(rows)]
        params = explorer.facts("params", "run_id", node_id).sort("key")
        if params.height:
            out += [*_heading(f"params ({params.height})"), _grid(params.select("key", "value").rows())]
        metrics = explorer.facts("metrics", "run_id", node_id)
        if metrics.height:
            out += self._metrics(metrics)
        return out

    def _metrics(self, metrics: pl.DataFrame) -> list[Part]:
        history = metrics.sort("key", "step", "timestamp").group_by("key", maintain_order=True).agg(
            pl.col("value").alias("values"), pl.len().alias("points"), pl.col("value").last().alias("last"),
            pl.col("value").min().alias("min"), pl.col("value").max().alias("max"),
        )
        out: list[Part] = [*_heading(f"metrics ({history.height})")]
        charts = 0
        for key, values, points, last, low, high in history.iter_rows():
            line = Text()
            line.append(key, style="bold")
            line.append(f"  last {last:.6g}", style="")
            if points > 1:
                line.append(f"  min {low:.6g}  max {high:.6g}  {points:,} points", style="dim")
            out.append(Static(line, classes="metric"))
            if points > 1 and charts < MAX_SPARKLINES:
                charts += 1
                out.append(Sparkline(_thin(np.asarray(values, dtype=np.float64)), summary_function=max,
                                     classes=f"metric-{charts}"))
        return out

    def _registry(self, explorer: Explorer, node_id: str) -> list[Part]:
        reg = explorer.facts("registry", "model_version_id", node_id)
        if not reg.height:
            return []
        entry = reg.row(0, named=True)
        rows: list[tuple[str, Any]] = [
            ("name", entry["name"]), ("version", entry["version"]),
            ("aliases", ", ".join(entry["aliases"] or []) or None), ("stage", entry["stage"]),
            ("model", entry["model_id"]), ("run", entry["run_id"]),
        ]
        out: list[Part] = [*_heading("registry"), _grid(rows)]
        events = _events(entry["events"])
        if events is not None:
            out += [*_heading("stage and alias history"), events]
        return out


__all__ = ["DetailsPane", "attribute_rows"]
