"""`BraidApp`: search on the left above the lineage tree, the details of the node under the
cursor on the right; the DAG, query console, compare, filters and help on their own screens.

The first frame paints before the catalog is read: the catalog is opened, its index built
and the search index computed in a worker thread, then the screen fills in. The manifest is
polled; when a sync commits a new generation, the app offers to reload it.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, Input, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from braid.unify import BraidError
from braid.unify.store import MANIFEST, read_manifest

from ._compare import CompareScreen
from ._dag import draw, neighbourhood
from ._details import DetailsPane
from ._filters import FiltersScreen
from ._help import HelpScreen
from ._lineage import PAGE_SIZE, LineageTree
from ._model import Explorer, Filters, node_text
from ._query import QueryScreen, SqlInput

if TYPE_CHECKING:
    from braid.unify import Catalog

SEARCH_LIMIT = 50
# below this many nodes a search runs at once; above, in a worker thread as the user types
SYNC_SEARCH_NODES = 100_000
# The details pane follows the cursor at once when it moves after a pause; moves closer together
# than this (a held cursor key) update it once the cursor rests, so a key repeating at 30 per
# second moves the cursor at full speed and rebuilds the pane for the line it stops on.
DETAILS_DELAY = 0.05


class SearchBox(Input):
    """The search line: typing searches, enter opens the best match, down goes to the list."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("down", "app.focus_results", "Results", show=False, tooltip="Move to the result list"),
        Binding("escape", "app.focus_tree", "To the tree", show=False, tooltip="Leave the search line"),
    ]


class DagScreen(Screen[None]):
    """The neighbourhood of a node, drawn like `git log --graph`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,g", "app.pop_screen", "Back", tooltip="Back to the lineage"),
        Binding("plus,equals_sign", "depth(1)", "Deeper", tooltip="One more level up and down"),
        Binding("minus", "depth(-1)", "Shallower", tooltip="One level less up and down"),
    ]
    DEFAULT_CSS = """
    DagScreen #dag-title { margin: 0 1; color: $text-muted; }
    DagScreen #dag { padding: 0 1; }
    """

    def __init__(self, explorer: Explorer, dense: int, filters: Filters, *, depth: int = 3) -> None:
        super().__init__()
        self.explorer, self.dense, self.filters, self.depth = explorer, dense, filters, depth

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="dag-title")
        with VerticalScroll(id="dag"):
            yield Static(id="drawing")
        yield Footer()

    def on_mount(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        time_only = Filters(as_of=self.filters.as_of)  # a drawing cut by kind would lose its joints
        hood = neighbourhood(self.explorer, self.dense, up=self.depth, down=self.depth, filters=time_only)
        lines = draw(self.explorer, hood, width=max(40, self.app.size.width - 4))
        title = Text(f"DAG around {self.explorer.node_id(self.dense)} · {self.depth} levels up and down · "
                     f"{len(hood.nodes)} nodes")
        if hood.capped or hood.more:
            title.append(" (capped: + and - change the depth)", style="italic")
        self.query_one("#dag-title", Static).update(title)
        self.query_one("#drawing", Static).update(Text("\n").join(lines))

    def action_depth(self, step: int) -> None:
        self.depth = max(1, min(6, self.depth + step))
        self.redraw()


class ReloadScreen(ModalScreen[bool]):
    """A sync committed a new generation: reload it now?"""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "answer(True)", "Reload", tooltip="Open the new generation"),
        Binding("n,escape", "answer(False)", "Not now", tooltip="Keep the generation on screen"),
    ]
    DEFAULT_CSS = """
    ReloadScreen { align: center middle; }
    ReloadScreen > Vertical { width: 60; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    """

    def __init__(self, old: int, new: int) -> None:
        super().__init__()
        self.old, self.new = old, new

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"The catalog was re-synced: generation {self.new} is ready "
                        f"(this screen shows generation {self.old}).")
            yield Label("Reload now?  [b]y[/] reload · [b]n[/] not now (ctrl+r reloads later)")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class BraidApp(App[None]):
    """Explore a braid catalog: `BraidApp(".braid").run()`."""

    TITLE = "braid"
    CSS = """
    #left { width: 1fr; min-width: 40; }
    #search { margin: 0 0; }
    #results { height: 9; border: round $primary 40%; }
    #results:focus-within { border: round $primary; }
    #lineage { height: 1fr; border: round $primary 40%; }
    #lineage:focus { border: round $primary; }
    #details { width: 1fr; border: round $primary 40%; }
    #details:focus-within { border: round $primary; }
    #status { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_search", "Search", tooltip="Type to search names, ids, tools and kinds"),
        Binding("t", "focus_tree", "Tree", show=False, tooltip="Move to the lineage tree"),
        Binding("g", "dag", "DAG", tooltip="Draw the neighbourhood of the node under the cursor"),
        Binding("colon", "query", "Query", tooltip="The SQL console"),
        Binding("m", "mark", "Mark", tooltip="Mark the run under the cursor for compare (two at most)"),
        Binding("c", "compare", "Compare", tooltip="Compare the two marked runs"),
        Binding("f", "filters", "Filters", tooltip="Filter by tool, kind and as_of time"),
        Binding("question_mark", "help", "Help", tooltip="This list of keys"),
        Binding("ctrl+r", "reload", "Reload", show=False, tooltip="Open the catalog's newest generation"),
        Binding("q", "quit", "Quit", tooltip="Leave braid"),
    ]

    def __init__(self, catalog: str | Path | Catalog, *, node: str | None = None, history_path: Path | None = None,
                 poll_seconds: float = 1.0, page_size: int = PAGE_SIZE) -> None:
        super().__init__()
        self._source = catalog
        self.catalog_path = Path(catalog).resolve() if isinstance(catalog, (str, Path)) else catalog.path
        self.initial_node = node
        self.history_path = history_path
        self.poll_seconds = poll_seconds
        self.page_size = page_size
        self.explorer: Explorer | None = None
        self.filters = Filters()
        self.current: int | None = None
        self.cursor: int | None = None  # the node under the tree's cursor (the details may lag behind)
        self._moved_at = 0.0  # when the tree's cursor last moved (time.monotonic)
        self._details_worker: Worker[None] | None = None
        self.marks: list[str] = []
        self.results: list[int] = []
        self._manifest_mtime: int | None = None
        self._offered: int | None = None
        self._query_screen: QueryScreen | None = None

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="left"):
                yield SearchBox(placeholder="/ search: name, id, tool, kind (fuzzy)", id="search")
                yield OptionList(id="results")
                yield LineageTree(page_size=self.page_size, id="lineage")
            yield DetailsPane(id="details")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#results").border_title = "results"
        self.query_one("#lineage").border_title = "lineage"
        self.query_one("#details").border_title = "details"
        self.query_one(DetailsPane).clear(f"opening {self.catalog_path} …")
        self.sub_title = str(self.catalog_path)
        self._status()
        self.load()
        self.set_interval(self.poll_seconds, self._check_generation)

    @property
    def tree(self) -> LineageTree:
        return self.query_one(LineageTree)

    @property
    def details(self) -> DetailsPane:
        return self.query_one(DetailsPane)

    # -- loading --------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="load")
    def load(self, keep: str | None = None) -> None:
        try:
            if self.explorer is None and not isinstance(self._source, (str, Path)):
                explorer = Explorer.from_catalog(self._source)
            else:
                explorer = Explorer.open(self.catalog_path)
            explorer.search.search("", limit=SEARCH_LIMIT)  # warm the landing list
        except BraidError as exc:
            self.call_from_thread(self.notify, str(exc), title="cannot open the catalog", severity="error",
                                  timeout=30)
            return
        self.call_from_thread(self._loaded, explorer, keep)

    def _loaded(self, explorer: Explorer, keep: str | None) -> None:
        self.explorer = explorer
        # The objects alive now (modules, widgets, the catalog's frames) live as long as the app:
        # keep the cyclic GC from walking them again on every full collection, which otherwise
        # costs a key press 100-300 ms every few dozen presses. `on_unmount` hands them back.
        gc.freeze()
        self._offered = None
        self._manifest_mtime = self._mtime()
        self.sub_title = f"{self.catalog_path} · generation {explorer.generation} · {explorer.n_nodes:,} nodes"
        self.run_search(self.query_one(SearchBox).value)
        start = keep or self.initial_node
        dense = explorer.dense(start) if start else -1
        if start and dense < 0 and keep is None:
            self.notify(f"no node {start!r} in the catalog", severity="warning")
        if dense < 0 and self.results:
            dense = self.results[0]
        if dense >= 0:
            self.centre(dense)
            self.tree.focus()
        else:
            self.details.clear("the catalog is empty: run `braid sync`")
        self.marks = [m for m in self.marks if explorer.dense(m) >= 0]
        self._status()

    def on_unmount(self) -> None:
        gc.unfreeze()

    def _mtime(self) -> int | None:
        try:
            return (self.catalog_path / MANIFEST).stat().st_mtime_ns
        except OSError:
            return None

    def _check_generation(self) -> None:
        if self.explorer is None:
            return
        mtime = self._mtime()
        if mtime is None or mtime == self._manifest_mtime:
            return
        self._manifest_mtime = mtime
        try:
            generation = read_manifest(self.catalog_path).generation
        except BraidError:
            return  # mid-write or damaged: look again on the next tick
        if generation != self.explorer.generation and generation != self._offered:
            self._offered = generation
            self.push_screen(ReloadScreen(self.explorer.generation, generation),
                             lambda yes: self.action_reload() if yes else None)

    # -- the centre node ------------------------------------------------------------------
    def centre(self, dense: int) -> None:
        """Make `dense` the root of the lineage tree and show its details."""
        assert self.explorer is not None
        self.current = self.cursor = dense
        self.tree.show(self.explorer, dense, self.filters)
        self._show_details(dense)
        self._status()

    def _show_details(self, dense: int) -> None:
        """Show `dense` in the details pane unless it is already there (for this generation)."""
        if self.explorer is not None and (dense != self.details.dense or self.details.explorer is not self.explorer):
            self.details.show(self.explorer, dense)

    def on_lineage_tree_focused(self, message: LineageTree.Focused) -> None:
        self.cursor = message.dense
        if self.explorer is None:
            return
        now, last = time.monotonic(), self._moved_at
        self._moved_at = now
        if self._details_worker is not None and not self._details_worker.is_finished:
            return  # it shows the node under the cursor once the cursor rests
        if now - last >= DETAILS_DELAY:
            self._show_details(message.dense)
        else:
            self._details_worker = self._details_after_rest()

    @work(group="details")
    async def _details_after_rest(self) -> None:
        while (wait := self._moved_at + DETAILS_DELAY - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if self.cursor is not None:
            self._show_details(self.cursor)

    def on_lineage_tree_recentre(self, message: LineageTree.Recentre) -> None:
        self.centre(message.dense)

    def _cursor_dense(self) -> int | None:
        return self.cursor if self.cursor is not None else self.current

    def _status(self) -> None:
        parts = [f"filters: {self.filters.describe()}"]
        if self.explorer is not None and self.marks:
            names = [self.explorer.row(self.explorer.dense(m))["name"] or m for m in self.marks]
            parts.append("marked: " + ", ".join(names) + ("  (c compares)" if len(names) == 2 else ""))
        self.query_one("#status", Static).update(" · ".join(parts))

    # -- search ---------------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "search" and self.explorer is not None:
            self.run_search(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "search" and self.results:
            self.centre(self.results[0])
            self.tree.focus()

    def run_search(self, text: str) -> None:
        if self.explorer is None:
            return
        if self.explorer.n_nodes <= SYNC_SEARCH_NODES:
            self._show_results(text, self.explorer.search.search(text, filters=self.filters, limit=SEARCH_LIMIT))
        else:
            self._search_worker(text)

    @work(thread=True, exclusive=True, group="search")
    def _search_worker(self, text: str) -> None:
        assert self.explorer is not None
        found = self.explorer.search.search(text, filters=self.filters, limit=SEARCH_LIMIT)
        self.call_from_thread(self._show_results, text, found)

    def _show_results(self, text: str, found: np.ndarray) -> None:
        assert self.explorer is not None
        self.results = found.tolist()
        options = self.query_one("#results", OptionList)
        options.clear_options()
        rows = self.explorer.rows(found)
        options.add_options([Option(node_text(row), id=str(dense)) for dense, row in zip(self.results, rows)])
        shown = f"{len(self.results)}" + ("+" if len(self.results) >= SEARCH_LIMIT else "")
        options.border_title = f"results ({shown})" if text.strip() else "start here"

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id == "results" and event.option.id is not None:
            self.centre(int(event.option.id))
            self.tree.focus()

    # -- actions --------------------------------------------------------------------------
    def action_focus_search(self) -> None:
        self.query_one(SearchBox).focus()

    def action_focus_tree(self) -> None:
        self.tree.focus()

    def action_focus_results(self) -> None:
        results = self.query_one("#results", OptionList)
        results.focus()
        if results.highlighted is None and results.option_count:
            results.highlighted = 0

    def action_dag(self) -> None:
        dense = self._cursor_dense()
        if self.explorer is not None and dense is not None:
            self.push_screen(DagScreen(self.explorer, dense, self.filters))

    def action_query(self) -> None:
        if self.explorer is None:
            return
        if self._query_screen is None or self._query_screen.explorer is not self.explorer:
            history = self._query_screen.history if self._query_screen else None
            self._query_screen = QueryScreen(self.explorer, history_path=self.history_path)
            if history:
                self._query_screen.history[:] = history
        self.push_screen(self._query_screen)

    def action_mark(self) -> None:
        dense = self._cursor_dense()
        if self.explorer is None or dense is None:
            return
        row = self.explorer.row(dense)
        if row["kind"] != "run":
            self.notify(f"only runs can be compared; this is a {row['kind']}", severity="warning")
            return
        if row["id"] in self.marks:
            self.marks.remove(row["id"])
            self.notify(f"unmarked {row['name']}")
        else:
            self.marks = [*self.marks, row["id"]][-2:]
            self.notify(f"marked {row['name']} ({len(self.marks)} of 2)")
        self._status()

    def action_compare(self) -> None:
        if self.explorer is None:
            return
        if len(self.marks) < 2:
            self.notify("mark two runs with m first", severity="warning")
            return
        self.push_screen(CompareScreen(self.explorer, *self.marks))

    def action_filters(self) -> None:
        self.push_screen(FiltersScreen(self.filters), self._apply_filters)

    def _apply_filters(self, filters: Filters | None) -> None:
        if filters is None or filters == self.filters:
            return
        self.filters = filters
        self.run_search(self.query_one(SearchBox).value)
        if self.current is not None:
            self.centre(self.current)
        self._status()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(HELP_SECTIONS))

    def action_reload(self) -> None:
        keep = self.explorer.node_id(self.current) if self.explorer and self.current is not None else None
        self.notify("reloading the catalog …")
        self.load(keep)


# (title, class, whether its inherited Textual bindings are listed too): the tree's cursor keys
# are worth listing, an Input's editing keys are not
HELP_SECTIONS: list[tuple[str, type, bool]] = [
    ("Everywhere", BraidApp, True),
    ("Search line", SearchBox, False),
    ("Lineage tree", LineageTree, True),
    ("DAG view", DagScreen, False),
    ("Query console", QueryScreen, False),
    ("Query line", SqlInput, False),
    ("Compare", CompareScreen, False),
    ("Filters", FiltersScreen, False),
    ("Reload offer", ReloadScreen, False),
]


def run(catalog: str | Path, *, node: str | None = None, history_path: Path | None = None) -> None:
    """Run the TUI on the catalog folder `catalog` until the user quits."""
    BraidApp(catalog, node=node, history_path=history_path).run()


__all__ = ["BraidApp", "HELP_SECTIONS", "run"]
