"""The lineage tree: a node at the root, its upstream and downstream expanded one level at a
time, `same_as` twins shown as such with their evidence, and big levels paged.

Expanding a node reads one slice of the index's CSR arrays (`Explorer.entries`) and adds the
first `page_size` children; a "… N more" line loads the next page when selected. Nothing
walks further than the level asked for, so a node with 100,000 neighbours opens as fast as a
node with ten.

A key step draws one frame: a page is added in one batch and laid out before the frame
(`QuickTree`), and the scrollbar's gutter is kept, so the scrollbar a page brings in does not
change the tree's width and make the next frame draw every line again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from ._model import Branch, Entries, Explorer, Filters, evidence_text, node_text
from ._quicktree import QuickTree

if TYPE_CHECKING:
    from textual.widgets._tree import TreeDataType  # noqa: F401

PAGE_SIZE = 100
ARROWS: dict[str, str] = {"upstream": "▲ upstream", "downstream": "▼ downstream", "same_as": "≡ same as"}


@dataclass
class Level:
    """A tree line whose children are one level of lineage: a node (reached by `edge` on
    `branch`) or a group under the root. `entries` are read on first expansion."""

    dense: int
    branch: Branch | None  # None: the root, whose children are the groups
    edge: int = -1
    group: bool = False
    entries: Entries | None = None
    loaded: int = 0


@dataclass
class More:
    """The "… N more" line: selecting it loads the next page of its parent's entries."""

    parent: Level


Data = Level | More


class LineageTree(QuickTree[Data]):
    """Lineage of one node, expanded lazily; posts `Focused` when the cursor rests on a node."""

    # A page of children brings the vertical scrollbar in: with its gutter kept, the tree keeps
    # its width, so the frame after it repaints the scrollbar and not every line of the tree.
    DEFAULT_CSS = """
    LineageTree { scrollbar-gutter: stable; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right,l", "expand", "Expand", tooltip="Open the next level of lineage"),
        Binding("left,h", "collapse", "Collapse", show=False, tooltip="Close this level, or go to its parent"),
        Binding("o", "recentre", "Re-root", tooltip="Make the node under the cursor the root"),
        Binding("n", "next_page", "Next page", show=False, tooltip="Load the next page of this level"),
    ]

    class Focused(Message):
        """The cursor is on a node (dense id `dense`)."""

        def __init__(self, dense: int) -> None:
            super().__init__()
            self.dense = dense

    class Recentre(Message):
        """The user asked to make `dense` the root."""

        def __init__(self, dense: int) -> None:
            super().__init__()
            self.dense = dense

    def __init__(self, *, page_size: int = PAGE_SIZE, id: str | None = None) -> None:
        super().__init__(Text("no node selected: search with /"), id=id)
        self.page_size = page_size
        self.explorer: Explorer | None = None
        self.filters = Filters()
        self.guide_depth = 3
        self.auto_expand = False

    # -- building -------------------------------------------------------------------------
    def show(self, explorer: Explorer, dense: int, filters: Filters) -> None:
        """Root the tree at `dense` and open its first level: upstream, downstream, same as."""
        self.explorer, self.filters = explorer, filters
        self.clear()
        root = self.root
        root.set_label(Text("◆ ") + node_text(explorer.row(dense)))
        root.data = Level(dense, None)
        for branch in ("upstream", "downstream", "same_as"):
            level = Level(dense, branch, group=True)  # type: ignore[arg-type]
            level.entries = explorer.entries(dense, branch, filters)  # type: ignore[arg-type]
            if branch == "same_as" and not len(level.entries) and not level.entries.hidden:
                continue
            group = root.add(self._group_label(branch, level.entries), data=level,
                             allow_expand=len(level.entries) > 0)
            if len(level.entries):
                self._load_page(group, level)
                group.expand()
        root.expand()
        self.lay_out()
        self.move_cursor(root)

    @staticmethod
    def _group_label(branch: str, entries: Entries) -> Text:
        text = Text(f"{ARROWS[branch]} ({len(entries):,})", style="bold")
        if entries.hidden:
            text.append(f"  {entries.hidden:,} hidden by filters", style="dim italic")
        return text

    def _child_label(self, dense: int, edge: int, twin: bool, row: dict) -> Text:
        assert self.explorer is not None
        if twin:
            return node_text(row, edge="same_as", evidence=evidence_text(self.explorer.edge_attrs(edge)))
        return node_text(row, edge=self.explorer.edge_kind(edge))

    def _load_page(self, parent: TreeNode[Data], level: Level) -> None:
        """Add the next page of `level`'s entries under `parent`, and a "more" line if any remain."""
        explorer = self.explorer
        assert explorer is not None and level.entries is not None
        entries = level.entries
        start, stop = level.loaded, min(level.loaded + self.page_size, len(entries))
        nodes, edges, twins = entries.node[start:stop], entries.edge[start:stop], entries.twin[start:stop]
        # a same_as twin under a group of its own keeps walking upstream; under a node, the
        # direction its parent was walking
        branch: Branch = level.branch if level.branch in ("upstream", "downstream") else "upstream"
        expandable = (explorer.degrees(nodes, branch) > 0) | (explorer.degrees(nodes, "same_as") > 0)
        children: list[tuple[Text, Data, bool]] = [
            (self._child_label(dense, edge, twin, row), Level(dense, branch, edge=edge), can_expand)
            for dense, edge, twin, row, can_expand in zip(nodes.tolist(), edges.tolist(), twins.tolist(),
                                                           explorer.rows(nodes), expandable.tolist())
        ]
        level.loaded = stop
        left = len(entries) - stop
        if left > 0:
            label = Text(f"… {left:,} more", style="bold italic")
            label.append(f"  (enter loads {min(left, self.page_size):,})", style="dim")
            children.append((label, More(level), False))
        self.add_children(parent, children)

    # -- events ---------------------------------------------------------------------------
    def _on_tree_node_expanded(self, event: Tree.NodeExpanded[Data]) -> None:
        node, data = event.node, event.node.data
        if not isinstance(data, Level) or data.entries is not None or data.branch is None or self.explorer is None:
            return
        data.entries = self.explorer.entries(data.dense, data.branch, self.filters, twins=True)
        self._load_page(node, data)
        self.lay_out()

    def _on_tree_node_selected(self, event: Tree.NodeSelected[Data]) -> None:
        node = event.node
        if isinstance(node.data, More):
            event.stop()
            self._next_page(node)
        elif isinstance(node.data, Level) and node.allow_expand:
            node.toggle()

    def _on_tree_node_highlighted(self, event: Tree.NodeHighlighted[Data]) -> None:
        data = event.node.data
        if isinstance(data, Level):
            self.post_message(self.Focused(data.dense))

    def _next_page(self, more: TreeNode[Data]) -> None:
        assert isinstance(more.data, More)
        parent = more.parent
        assert parent is not None
        line = more.line
        more.remove()
        self._load_page(parent, more.data.parent)
        self.lay_out()
        self.cursor_line = line
        # The cursor's line now holds the first new child: the line number did not change, so
        # Tree posts no NodeHighlighted, and the details would stay on the node shown before.
        # Posted to the app itself: bubbled up through the four containers around the tree, it
        # would reach the app after the page's frame, and the details would need a frame more.
        node = self.cursor_node
        if node is not None and isinstance(node.data, Level):
            self.app.post_message(self.Focused(node.data.dense))

    # -- actions --------------------------------------------------------------------------
    def action_expand(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if isinstance(node.data, More):
            self._next_page(node)
        elif node.allow_expand and not node.is_expanded:
            node.expand()
        elif node.children:
            self.cursor_line = node.children[0].line

    def action_collapse(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.is_expanded and node.children:
            node.collapse()
        elif node.parent is not None:
            self.move_cursor(node.parent)

    def action_next_page(self) -> None:
        node = self.cursor_node
        while node is not None and not isinstance(node.data, More):
            siblings = node.parent.children if node.parent is not None else []
            more = [s for s in siblings if isinstance(s.data, More)]
            node = more[0] if more else None
            break
        if node is not None and isinstance(node.data, More):
            self._next_page(node)

    def action_recentre(self) -> None:
        node = self.cursor_node
        if node is not None and isinstance(node.data, Level) and not node.data.group:
            self.post_message(self.Recentre(node.data.dense))


__all__ = ["PAGE_SIZE", "LineageTree", "Level", "More"]
