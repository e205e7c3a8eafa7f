"""The query console: braid's SQL dialect with completion, located errors, paged results and
a history of queries.

Completion candidates come from the declarations the binder checks against (`TABLES`,
`GRAPH_FUNCTIONS`, `SQL_FUNCTIONS`) and, inside a string literal, from the catalog's node
ids. A `QueryError` is shown with its span underlined in the query. Results stay a polars
frame; the table widget receives `PAGE_ROWS` rows at a time as the cursor or the scroll
nears the end of what it holds.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.suggester import Suggester
from textual.widgets import DataTable, Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from braid.unify import BraidError
from braid.unify.errors import QueryError
from braid.unify.query import GRAPH_FUNCTIONS, SQL_FUNCTIONS
from braid.unify.schema import TABLES

if TYPE_CHECKING:
    from ._model import Explorer

PAGE_ROWS = 200
MAX_CANDIDATES = 8
MAX_CELL = 80
KEYWORDS = (
    "SELECT", "FROM", "WHERE", "JOIN", "LEFT", "INNER", "ON", "GROUP", "BY", "ORDER", "HAVING", "LIMIT",
    "AS", "AND", "OR", "NOT", "IN", "IS", "NULL", "DISTINCT", "WITH", "EXPLAIN", "DESC", "ASC", "CASE",
    "WHEN", "THEN", "ELSE", "END", "OVER", "PARTITION", "UNION", "ALL", "LIKE", "BETWEEN", "TIMESTAMP",
)
_TABLE_CONTEXT = {"from", "join"}


def _all_columns() -> list[str]:
    names = {c for t in TABLES.values() for c in t.schema}
    names |= {c for f in GRAPH_FUNCTIONS.values() for c in f.result_columns()}
    return sorted(names)


class Completer:
    """Candidates for the word being typed at the end of a query.

    >>> done = Completer(lambda prefix: ["mlflow:run/1"] if "mlflow:run/".startswith(prefix[:11]) else [])
    >>> done.complete("SELECT * FROM run")
    (14, ['runs'])
    >>> done.complete("SELECT r.na")[1][:2]
    ['name']
    >>> done.complete("SELECT * FROM nodes WHERE id = 'mlflow:r")
    (32, ['mlflow:run/1'])
    """

    def __init__(self, node_ids: Callable[[str], list[str]]) -> None:
        self.node_ids = node_ids
        self.columns = _all_columns()
        self.functions = sorted({*SQL_FUNCTIONS, *GRAPH_FUNCTIONS})
        self.arguments = sorted({a.name for f in GRAPH_FUNCTIONS.values() for a in f.args})

    def complete(self, text: str) -> tuple[int, list[str]]:
        """(where the word starts, candidates for it)."""
        literal = re.search(r"'([^']*)$", text)
        if literal and text.count("'") % 2 == 1:
            prefix = literal.group(1)
            return literal.start(1), [i for i in self.node_ids(prefix) if i != prefix][:MAX_CANDIDATES]
        dotted = re.search(r"\b(\w+)\.(\w*)$", text)
        if dotted:
            prefix = dotted.group(2).lower()
            columns = self._columns_of(text, dotted.group(1))
            return dotted.start(2), [c for c in columns if c.startswith(prefix) and c != prefix][:MAX_CANDIDATES]
        word = re.search(r"(\w*)$", text)
        assert word is not None
        prefix = word.group(1)
        if not prefix:
            return len(text), []
        before = re.findall(r"\b(\w+)\b", text[: word.start(1)])
        low = prefix.lower()
        if before and before[-1].lower() in _TABLE_CONTEXT:
            pool = [*sorted(TABLES), *sorted(GRAPH_FUNCTIONS)]
        else:
            pool = [*self.columns, *self.functions, *sorted(TABLES), *self.arguments]
            pool += [k for k in KEYWORDS]
        seen: set[str] = set()
        found = []
        for name in pool:
            if name.lower().startswith(low) and name.lower() != low and name not in seen:
                seen.add(name)
                found.append(name if not prefix[0].isupper() or name not in KEYWORDS else name.upper())
        return word.start(1), found[:MAX_CANDIDATES]

    def _columns_of(self, text: str, alias: str) -> list[str]:
        for table, name in re.findall(r"\b(\w+)(?:\s*\([^)]*\))?\s+(?:as\s+)?(\w+)\b", text, flags=re.I):
            if name == alias:
                if table in TABLES:
                    return list(TABLES[table].schema)
                if table in GRAPH_FUNCTIONS:
                    return GRAPH_FUNCTIONS[table].result_columns()
        if alias in TABLES:
            return list(TABLES[alias].schema)
        return self.columns


class SqlSuggester(Suggester):
    """Inline (ghost) completion: the first candidate for the word at the end."""

    def __init__(self, completer: Completer) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.completer = completer

    async def get_suggestion(self, value: str) -> str | None:
        start, found = self.completer.complete(value)
        return value[:start] + found[0] if found else None


class SqlInput(Input):
    """The query line: tab completes, up and down walk the history."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete", "Complete", tooltip="Insert the first completion"),
        Binding("up", "history(-1)", "Previous query", tooltip="The query before this one in the history"),
        Binding("down", "history(1)", "Next query", tooltip="The query after this one in the history"),
    ]

    def __init__(self, completer: Completer, history: list[str], **kwargs: Any) -> None:
        super().__init__(suggester=SqlSuggester(completer), **kwargs)
        self.completer = completer
        self.history = history
        self.position = len(history)

    def action_complete(self) -> None:
        before = self.value[: self.cursor_position]
        start, found = self.completer.complete(before)
        if found:
            self.value = before[:start] + found[0] + self.value[self.cursor_position:]
            self.cursor_position = start + len(found[0])

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        self.position = max(0, min(len(self.history), self.position + step))
        self.value = self.history[self.position] if self.position < len(self.history) else ""
        self.cursor_position = len(self.value)


def cell(value: Any) -> str:
    """A result value as a short string.

    >>> cell(None), cell(0.1 + 0.2), cell(["a", "b"]), cell("x" * 100)[-3:]
    ('∅', '0.3', '["a", "b"]', 'xx…')
    """
    if value is None:
        return "∅"
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, (list, dict)):
        value = json.dumps(value)
    elif hasattr(value, "strftime"):
        value = str(value)[:26]
    text = str(value).replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


class ResultTable(DataTable[str]):
    """A DataTable over a polars frame that holds only the rows looked at so far."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, zebra_stripes=True, cursor_type="row")
        self.frame = pl.DataFrame()
        self.loaded = 0
        self._adding = False

    def show(self, frame: pl.DataFrame) -> None:
        self.clear(columns=True)
        self.frame, self.loaded = frame, 0
        self.add_columns(*frame.columns)
        self.load_more()

    def load_more(self) -> None:
        if self._adding or self.loaded >= self.frame.height:
            return
        chunk = self.frame.slice(self.loaded, PAGE_ROWS)
        self._adding = True  # adding rows moves the cursor, which would ask for more
        try:
            self.add_rows([[cell(v) for v in row] for row in chunk.iter_rows()])
        finally:
            self._adding = False
        self.loaded += chunk.height

    def watch_cursor_coordinate(self, old: Any, new: Any) -> None:
        super().watch_cursor_coordinate(old, new)
        if new.row >= self.loaded - PAGE_ROWS // 10:
            self.load_more()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new >= self.max_scroll_y - 2:
            self.load_more()


def error_text(err: QueryError) -> Text:
    """The query with the error's span underlined, then the message and hint."""
    text = Text()
    lines = err.query.splitlines() or [""]
    for number, line in enumerate(lines, 1):
        shown = Text(line)
        if number == err.line and err.column:
            start = err.column - 1
            stop = min(len(line), start + err.length) if start < len(line) else start
            if stop == start:  # at the end of the line: mark the gap after it
                shown.append(" ")
                stop = start + 1
            shown.stylize("bold red underline", start, stop)
        text.append(shown)
        text.append("\n")
    text.append(f"{err}", style="red")
    if err.hint:
        text.append(f"\nhint: {err.hint}", style="yellow")
    return text


class QueryScreen(Screen[None]):
    """SQL over the catalog; enter runs, escape goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", tooltip="Back to the lineage"),
        Binding("f2", "show_history", "History", tooltip="List earlier queries; enter puts one back"),
        Binding("ctrl+l", "clear", "Clear", tooltip="Empty the query line"),
    ]
    DEFAULT_CSS = """
    QueryScreen #sql { margin: 0 1; }
    QueryScreen #completions { height: auto; max-height: 8; margin: 0 2; display: none; }
    QueryScreen #completions.visible { display: block; }
    QueryScreen #message { margin: 0 2; height: auto; max-height: 8; }
    QueryScreen #results { height: 1fr; margin: 0 1; }
    QueryScreen #title { margin: 0 1; color: $text-muted; }
    """

    def __init__(self, explorer: Explorer, *, history_path: Path | None = None) -> None:
        super().__init__()
        self.explorer = explorer
        self.history_path = history_path
        self.history: list[str] = self._read_history()
        self.completer = Completer(lambda prefix: self.explorer.id_prefix(prefix, MAX_CANDIDATES + 1))
        self.listing: str = "completions"

    def compose(self) -> ComposeResult:
        yield Static("SQL over the catalog: tables nodes, edges, runs, params, metrics, tags, registry; "
                     "upstream(), downstream(), paths(). enter runs · tab completes · ↑↓ history",
                     id="title")
        yield SqlInput(self.completer, self.history, placeholder="SELECT kind, count(*) FROM nodes GROUP BY kind",
                       id="sql")
        yield OptionList(id="completions")
        yield Static("", id="message")
        yield ResultTable(id="results")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(SqlInput).focus()

    # -- history --------------------------------------------------------------------------
    def _read_history(self) -> list[str]:
        if self.history_path is None or not self.history_path.exists():
            return []
        return [line for line in self.history_path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _remember(self, sql: str) -> None:
        if self.history and self.history[-1] == sql:
            return
        self.history.append(sql)
        if self.history_path is not None:
            try:
                self.history_path.parent.mkdir(parents=True, exist_ok=True)
                with self.history_path.open("a", encoding="utf-8") as out:
                    out.write(sql.replace("\n", " ") + "\n")
            except OSError:
                pass  # a read-only home is no reason to lose the query

    # -- completion list ------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        sql = self.query_one(SqlInput)
        _, found = self.completer.complete(event.value[: sql.cursor_position])
        self._list("completions", found)

    def _list(self, what: str, items: list[str]) -> None:
        self.listing = what
        options = self.query_one("#completions", OptionList)
        options.clear_options()
        options.add_options([Option(Text(item), id=str(i)) for i, item in enumerate(items)])
        options.set_class(bool(items), "visible")
        self._items = items

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        item = self._items[int(event.option.id or 0)]
        sql = self.query_one(SqlInput)
        if self.listing == "history":
            sql.value = item
        else:
            before = sql.value[: sql.cursor_position]
            start, _ = self.completer.complete(before)
            sql.value = before[:start] + item + sql.value[sql.cursor_position:]
        sql.cursor_position = len(sql.value)
        sql.focus()
        self._list("completions", [])

    def action_show_history(self) -> None:
        self._list("history", list(reversed(self.history[-50:])))
        self.query_one("#completions", OptionList).focus()

    def action_clear(self) -> None:
        self.query_one(SqlInput).value = ""

    # -- running --------------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        sql = event.value.strip()
        if not sql:
            return
        self._remember(sql)
        event.input.position = len(self.history)  # type: ignore[attr-defined]
        self._list("completions", [])
        self.query_one("#message", Static).update(Text("running…", style="dim"))
        self.run_query(sql)

    @work(thread=True, exclusive=True, group="query")
    def run_query(self, sql: str) -> None:
        started = time.perf_counter()
        try:
            result = self.explorer.catalog.query(sql)
        except QueryError as exc:
            self.app.call_from_thread(self._show_error, exc)
            return
        except BraidError as exc:
            self.app.call_from_thread(self._show_message, Text(str(exc), style="red"))
            return
        self.app.call_from_thread(self._show_result, result, time.perf_counter() - started)

    def _show_message(self, text: Text) -> None:
        self.query_one("#message", Static).update(text)

    def _show_error(self, err: QueryError) -> None:
        self._show_message(error_text(err))

    def _show_result(self, frame: pl.DataFrame, seconds: float) -> None:
        table = self.query_one(ResultTable)
        table.show(frame)
        self._show_message(Text(f"{frame.height:,} rows × {frame.width} columns in {seconds * 1000:5.0f} ms",
                                style="green"))


__all__ = ["Completer", "QueryScreen", "ResultTable", "SqlInput", "cell", "error_text"]
