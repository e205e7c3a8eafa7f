"""The details pane: every fact braid holds about one node.

Attributes (the node row and each `attrs` field), links (with `same_as` evidence), tags,
the run's record and params, metrics with a sparkline of each history, and for a registry
version its aliases, stage and event history. Sections with nothing in them are left out.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from braid.unify import BraidError

from ._model import Explorer, evidence_text, node_text

MAX_SPARKLINES = 8
MAX_POINTS = 2000  # a longer history is thinned evenly before it reaches the sparkline
MAX_LINKS_LISTED = 5


def _grid(rows: list[tuple[str, Any]]) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True, max_width=22, overflow="ellipsis")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else Text("—" if value is None else str(value)))
    return table


def _heading(title: str) -> Static:
    return Static(Text(title, style="bold underline"), classes="heading")


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


class DetailsPane(VerticalScroll):
    """Shows one node's facts; `show` replaces what is there."""

    DEFAULT_CSS = """
    DetailsPane { padding: 0 1; }
    DetailsPane .heading { margin-top: 1; }
    DetailsPane Sparkline { height: 2; margin: 0 0 0 2; width: 1fr; }
    DetailsPane .metric { height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.dense: int | None = None
        self.can_focus = True

    def show(self, explorer: Explorer, dense: int) -> None:
        self.dense = dense
        try:
            widgets = self._sections(explorer, dense)
        except BraidError as exc:  # e.g. the catalog was re-synced twice and this generation collected
            widgets = [Static(Text(f"cannot read this node's facts: {exc}", style="red"))]
        with self.app.batch_update():
            self.remove_children()
            self.mount_all(widgets)
        self.scroll_home(animate=False)

    def clear(self, message: str) -> None:
        self.dense = None
        self.remove_children()
        self.mount(Static(Text(message, style="dim")))

    def _sections(self, explorer: Explorer, dense: int) -> list[Widget]:
        row = explorer.full_row(dense)
        node_id = row["id"]
        out: list[Widget] = [Static(node_text(row)), Static(_grid(attribute_rows(row)))]
        out += self._links(explorer, dense)
        tags = explorer.facts("tags", "node_id", node_id)
        if tags.height:
            out += [_heading(f"tags ({tags.height})"), Static(_grid(tags.select("key", "value").rows()))]
        if row["kind"] == "run":
            out += self._run(explorer, node_id)
        if row["kind"] == "model_version":
            out += self._registry(explorer, node_id)
        return out

    def _links(self, explorer: Explorer, dense: int) -> list[Widget]:
        up, down, twins = (explorer.degree(dense, b) for b in ("upstream", "downstream", "same_as"))
        out: list[Widget] = [_heading("links"), Static(Text(f"{up:,} upstream · {down:,} downstream · "
                                                              f"{twins:,} same_as", style=""))]
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
            out.append(Static(lines))
        return out

    def _run(self, explorer: Explorer, node_id: str) -> list[Widget]:
        out: list[Widget] = []
        run = explorer.facts("runs", "id", node_id)
        if run.height:
            record = run.drop("id", "tool", "source").row(0, named=True)
            rows = [(k, _value(v)) for k, v in record.items() if v is not None]
            out += [_heading("run"), Static(_grid(rows))]
        params = explorer.facts("params", "run_id", node_id).sort("key")
        if params.height:
            out += [_heading(f"params ({params.height})"), Static(_grid(params.select("key", "value").rows()))]
        metrics = explorer.facts("metrics", "run_id", node_id)
        if metrics.height:
            out += self._metrics(metrics)
        return out

    def _metrics(self, metrics: pl.DataFrame) -> list[Widget]:
        history = metrics.sort("key", "step", "timestamp").group_by("key", maintain_order=True).agg(
            pl.col("value").alias("values"), pl.len().alias("points"), pl.col("value").last().alias("last"),
            pl.col("value").min().alias("min"), pl.col("value").max().alias("max"),
        )
        out: list[Widget] = [_heading(f"metrics ({history.height})")]
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

    def _registry(self, explorer: Explorer, node_id: str) -> list[Widget]:
        reg = explorer.facts("registry", "model_version_id", node_id)
        if not reg.height:
            return []
        entry = reg.row(0, named=True)
        rows: list[tuple[str, Any]] = [
            ("name", entry["name"]), ("version", entry["version"]),
            ("aliases", ", ".join(entry["aliases"] or []) or None), ("stage", entry["stage"]),
            ("model", entry["model_id"]), ("run", entry["run_id"]),
        ]
        out: list[Widget] = [_heading("registry"), Static(_grid(rows))]
        events = _events(entry["events"])
        if events is not None:
            out += [_heading("stage and alias history"), Static(events)]
        return out


__all__ = ["DetailsPane", "attribute_rows"]
