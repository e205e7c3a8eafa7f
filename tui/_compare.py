"""Compare two runs: their params and metrics side by side, and where their upstream differs.

>>> from braid.tui._model import Explorer                               # doctest: +SKIP
>>> diff = compare(Explorer.open(".braid"), "mlflow:run/a", "mlflow:run/b")  # doctest: +SKIP
>>> diff.params.filter(~pl.col("same"))                                 # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import polars as pl
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from ._model import node_text

if TYPE_CHECKING:
    from ._model import Explorer

LINEAGE_COLUMNS = ("id", "kind", "tool", "name", "version", "depth", "via_kind")
MAX_LISTED = 50


@dataclass(frozen=True)
class Comparison:
    """Two runs' differences. `params`: key, a, b, same; `metrics`: key, a, b, delta (last
    values); `only_a`/`only_b`: upstream nodes of one run and not the other; `shared`: how
    many upstream nodes both have."""

    a: str
    b: str
    params: pl.DataFrame
    metrics: pl.DataFrame
    only_a: pl.DataFrame
    only_b: pl.DataFrame
    shared: int


def _last_metrics(explorer: Explorer, run: str) -> pl.DataFrame:
    return (explorer.facts("metrics", "run_id", run).sort("key", "step", "timestamp")
            .group_by("key", maintain_order=True).agg(pl.col("value").last()))


def compare(explorer: Explorer, a: str, b: str) -> Comparison:
    """Params and last metric values joined on key (differences first), and the upstream
    nodes only one of the runs has, nearest first."""
    pa = explorer.facts("params", "run_id", a).select("key", a="value")
    pb = explorer.facts("params", "run_id", b).select("key", b="value")
    params = (pa.join(pb, on="key", how="full", coalesce=True)
              .with_columns(same=pl.col("a").eq_missing(pl.col("b")))
              .sort("same", "key"))
    ma = _last_metrics(explorer, a).rename({"value": "a"})
    mb = _last_metrics(explorer, b).rename({"value": "b"})
    metrics = (ma.join(mb, on="key", how="full", coalesce=True)
               .with_columns(delta=pl.col("b") - pl.col("a")).sort("key"))
    up_a = explorer.catalog.upstream(a).select(LINEAGE_COLUMNS)
    up_b = explorer.catalog.upstream(b).select(LINEAGE_COLUMNS)
    only_a = up_a.join(up_b.select("id"), on="id", how="anti").filter(pl.col("id") != b).sort("depth", "id")
    only_b = up_b.join(up_a.select("id"), on="id", how="anti").filter(pl.col("id") != a).sort("depth", "id")
    shared = up_a.join(up_b.select("id"), on="id", how="semi").height
    return Comparison(a, b, params, metrics, only_a, only_b, shared)


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def params_table(diff: Comparison, a_name: str, b_name: str) -> Table:
    table = Table("", "param", a_name, b_name, box=None, padding=(0, 1), header_style="bold")
    for key, a, b, same in diff.params.iter_rows():
        style = "" if same else "bold yellow"
        table.add_row("" if same else "≠", key, _fmt(a), _fmt(b), style=style)
    return table


def metrics_table(diff: Comparison, a_name: str, b_name: str) -> Table:
    table = Table("metric", a_name, b_name, "Δ (b − a)", box=None, padding=(0, 1), header_style="bold")
    for key, a, b, delta in diff.metrics.iter_rows():
        sign = "" if delta is None or delta == 0 else ("green" if delta > 0 else "red")
        table.add_row(key, _fmt(a), _fmt(b), Text(_fmt(delta) if delta is not None else "—", style=sign))
    return table


def lineage_text(diff: Comparison, a_name: str, b_name: str) -> Text:
    text = Text()
    if not diff.only_a.height and not diff.only_b.height:
        text.append(f"same upstream lineage: {diff.shared:,} nodes in common", style="green")
        return text
    text.append(f"{diff.shared:,} upstream nodes in common\n", style="dim")
    for name, only in ((a_name, diff.only_a), (b_name, diff.only_b)):
        text.append(f"only upstream of {name} ({only.height:,}):\n", style="bold")
        for row in only.head(MAX_LISTED).iter_rows(named=True):
            text.append(f"  {row['depth']:>2} ")
            text.append(node_text(row, edge=row["via_kind"]))
            text.append("\n")
        if only.height > MAX_LISTED:
            text.append(f"  … {only.height - MAX_LISTED:,} more\n", style="dim")
    return text


class CompareScreen(Screen[None]):
    """Two marked runs side by side."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", tooltip="Back to the lineage"),
        Binding("x", "swap", "Swap", tooltip="Swap the two runs"),
    ]
    DEFAULT_CSS = """
    CompareScreen VerticalScroll { padding: 0 1; }
    CompareScreen .heading { margin-top: 1; text-style: bold underline; }
    """

    def __init__(self, explorer: Explorer, a: str, b: str) -> None:
        super().__init__()
        self.explorer = explorer
        self.runs = (a, b)

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="compare")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_comparison()

    def refresh_comparison(self) -> None:
        a, b = self.runs
        diff = compare(self.explorer, a, b)
        rows = [self.explorer.full_row(self.explorer.dense(n)) for n in (a, b)]
        names = [f"a: {r['name']}" for r in rows[:1]] + [f"b: {r['name']}" for r in rows[1:]]
        if names[0][3:] == names[1][3:]:
            names = ["a", "b"]
        header = Text()
        for label, row in zip(("a", "b"), rows):
            header.append(f"{label}  ", style="bold")
            header.append(node_text(row))
            header.append(f"  {row['id']}\n", style="dim")
        changed = diff.params.filter(~pl.col("same")).height
        box = self.query_one("#compare", VerticalScroll)
        box.remove_children()
        box.mount_all([
            Static(header),
            Static(f"params ({changed} of {diff.params.height} differ)", classes="heading"),
            Static(params_table(diff, *names) if diff.params.height else Text("no params", style="dim")),
            Static(f"metrics ({diff.metrics.height}, last values)", classes="heading"),
            Static(metrics_table(diff, *names) if diff.metrics.height else Text("no metrics", style="dim")),
            Static("upstream lineage", classes="heading"),
            Static(lineage_text(diff, *names)),
        ])

    def action_swap(self) -> None:
        self.runs = (self.runs[1], self.runs[0])
        self.refresh_comparison()


__all__ = ["CompareScreen", "Comparison", "compare"]
