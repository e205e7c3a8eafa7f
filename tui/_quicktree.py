"""`QuickTree`: Textual's `Tree` with frames that cost less, for a tree that grows by pages.

Textual's `Tree` is written for trees that change a node at a time. The lineage tree adds a
page of 100 children per key, and at that size the per-node and per-line work dominates a key
step. What changes:

- `add_children` adds a batch of nodes with one invalidation (`TreeNode.add` clears the line
  cache and asks for a layout once per node).
- `lay_out` builds the lines and sets the scrollbar before the frame; left to the frame, both
  happen while it draws, and each asks for a second frame that draws every line again.
- `get_label_width` adds the icon's width to the label's (`Tree` renders each label to measure
  it, for every line, on every change).
- A line is drawn straight into segments (`_draw_line`) with the frame's styles looked up once
  per frame; `Tree._render_line` looks them up anew and goes through two `Text` objects per
  line, about twice the work.

These lean on `Tree`'s private parts (`_add_node`, `_children`, `_line_cache`, `_render_line`),
as of Textual 8. `tests/tui/test_app.py` draws every line both ways, in every state a line can
be in, and asks for the same cells.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._segment_tools import line_pad
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import Tree
from textual.widgets._tree import TOGGLE_STYLE, TreeDataType, TreeNode, _TreeLine


@dataclass
class _FrameStyles:
    """What every line of one frame is drawn with (`Tree._render_line` looks these up per line)."""

    focused: bool
    guide: Style
    guide_hover: Style
    guide_selected: Style
    base_hidden: bool
    hover_hidden: bool
    selected_hidden: bool
    highlight_line: Style
    label: Style
    highlight: Style
    cursor: Style
    console: Console
    guides: dict[tuple[Style, bool], tuple[str, str, str, str]] = field(default_factory=dict)
    parsed: dict[str, Style] = field(default_factory=dict)

    def style(self, name: str | Style) -> Style:
        """A span's style, parsed once per frame (`Text.render` parses it for every line)."""
        if isinstance(name, Style):
            return name
        style = self.parsed.get(name)
        if style is None:
            style = self.parsed[name] = self.console.get_style(name, default=Style.null())
        return style


class QuickTree(Tree[TreeDataType], Generic[TreeDataType]):
    """A `Tree` that adds nodes in batches and draws a frame's lines with less work."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._frame: _FrameStyles | None = None
        self._frame_base: Style | None = None

    # -- building -------------------------------------------------------------------------
    def add_children(self, parent: TreeNode[TreeDataType],
                     children: Iterable[tuple[Text, TreeDataType, bool]]) -> None:
        """Append `(label, data, allow_expand)` nodes under `parent`, collapsed, with one
        invalidation of the tree."""
        for label, data, allow_expand in children:
            node = self._add_node(parent, self.process_label(label), data)
            node._allow_expand = allow_expand
            parent._children.append(node)
        parent._updates += 1
        self._invalidate()

    def lay_out(self) -> None:
        """Build the lines and show or hide the scrollbar now, before the frame draws."""
        self._tree_lines  # noqa: B018 (the property builds them)
        self._refresh_scrollbars()

    def process_label(self, label: str | Text) -> Text:
        # Tree splits every label into lines to keep the first; a one-line Text is kept as it is
        if isinstance(label, Text) and "\n" not in label.plain:
            return label
        return super().process_label(label)

    def get_label_width(self, node: TreeNode[TreeDataType]) -> int:
        icon = (self.ICON_NODE_EXPANDED if node._expanded else self.ICON_NODE) if node._allow_expand else ""
        return cell_len(icon) + node._label.cell_len

    # -- drawing --------------------------------------------------------------------------
    def render_lines(self, crop: Region) -> list[Strip]:
        self._frame_base = self.rich_style  # a walk up the DOM: once per frame, not per line
        self._frame = None  # made on the first line that is not in the line cache
        try:
            return super().render_lines(crop)
        finally:
            self._frame = self._frame_base = None

    def render_line(self, y: int) -> Strip:
        if self._frame_base is None:  # outside a frame
            return super().render_line(y)
        scroll_x, scroll_y = self.scroll_offset
        return self._render_line(y + scroll_y, scroll_x, scroll_x + self.size.width, self._frame_base)

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        if self._frame_base is None:
            return super()._render_line(y, x1, x2, base_style)
        tree_lines = self._tree_lines
        width = self.size.width
        if y >= len(tree_lines):
            return Strip.blank(width, base_style)
        line = tree_lines[y]
        is_hover = self.hover_line >= 0 and any(node._hover for node in line.path)
        # the key Tree's own cache uses, so a line drawn by either is found by both
        cache_key = (y, is_hover, width, self._updates, self._pseudo_class_state,
                     tuple(node._updates for node in line.path))
        strip = self._line_cache.get(cache_key)
        if strip is None:
            if self._frame is None:
                self._frame = self._frame_styles()
            strip = self._line_cache[cache_key] = self._draw_line(line, y, is_hover, base_style, width)
        return strip.crop(x1, x2)

    def _frame_styles(self) -> _FrameStyles:
        guide = self.get_component_rich_style("tree--guides", partial=True)
        return _FrameStyles(
            focused=self.has_focus,
            guide=guide,
            guide_hover=guide + self.get_component_rich_style("tree--guides-hover", partial=True),
            guide_selected=guide + self.get_component_rich_style("tree--guides-selected", partial=True),
            base_hidden=self.get_component_styles("tree--guides").color.a == 0,
            hover_hidden=self.get_component_styles("tree--guides-hover").color.a == 0,
            selected_hidden=self.get_component_styles("tree--guides-selected").color.a == 0,
            highlight_line=self.get_component_rich_style("tree--highlight-line"),
            label=self.get_component_rich_style("tree--label", partial=True),
            highlight=self.get_component_rich_style("tree--highlight", partial=True),
            cursor=self.get_component_rich_style("tree--cursor", partial=False),
            console=self.app.console,
        )

    def _guides(self, frame: _FrameStyles, style: Style, hidden: bool) -> tuple[str, str, str, str]:
        """Space, vertical, terminator and cross, as `Tree._render_line`'s `get_guides`."""
        key = (style, hidden)
        guides = frame.guides.get(key)
        if guides is None:
            if self.show_guides and not hidden:
                lines = self.LINES["bold" if style.bold else "double" if style.underline2 else "default"]
            else:
                lines = ("  ", "  ", "  ", "  ")
            depth = max(0, self.guide_depth - 2)
            a, b, c, d = (f"{chars[0]}{chars[1] * depth} " for chars in lines)
            guides = frame.guides[key] = (a, b, c, d)
        return guides

    def _draw_line(self, line: _TreeLine[TreeDataType], y: int, is_hover: bool, base_style: Style,
                   width: int) -> Strip:
        """The segments `Tree._render_line` makes for `line`: its guides, then its label."""
        frame = self._frame
        assert frame is not None
        path = line.path
        node = path[-1]
        line_style = (frame.highlight_line if is_hover else base_style) + Style(meta={"line": y})
        segments: list[Segment] = []

        hover = path[0]._hover
        selected = path[0]._selected and frame.focused
        guide_style, hidden = frame.guide, True
        for step in path[1:]:
            guide_style, hidden = frame.guide, frame.base_hidden
            if hover:
                guide_style, hidden = frame.guide_hover, frame.hover_hidden
            if selected:
                guide_style, hidden = frame.guide_selected, frame.selected_hidden
            if step is not node:
                space, vertical, _, _ = self._guides(frame, guide_style, hidden)
                segments.append(Segment(space if step.is_last else vertical, line_style + guide_style))
            hover = hover or step._hover
            selected = (selected or step._selected) and frame.focused
        if len(path) > 1:
            _, _, terminator, cross = self._guides(frame, guide_style, hidden)
            segments.append(Segment(terminator if line.last else cross, line_style + guide_style))

        label_style = frame.label
        if self.hover_line == y:
            label_style += frame.highlight
        if self.cursor_line == y:
            label_style += frame.cursor
        segments += self._label_segments(frame, node, line_style, label_style)

        drawn = sum(segment.cell_length for segment in segments)
        pad_width = max(self.virtual_size.width, width)
        return Strip(line_pad(segments, 0, pad_width - drawn, line_style))

    def _label_segments(self, frame: _FrameStyles, node: TreeNode[TreeDataType], line_style: Style,
                        label_style: Style) -> list[Segment]:
        """`render_label`'s Text (the icon, the label's spans, then `label_style`) with the node's
        id as meta, split where any span starts or ends, each piece in its spans' styles in order."""
        label = node._label
        text = label.plain
        spans: list[tuple[int, int, Style]] = []
        at = 0
        if node._allow_expand:
            icon = self.ICON_NODE_EXPANDED if node._expanded else self.ICON_NODE
            spans.append((0, len(icon), line_style + TOGGLE_STYLE))
            text, at = icon + text, len(icon)
        end = len(text)
        if label.style:
            spans.append((at, end, frame.style(label.style)))
        spans += [(at + span.start, at + span.end, frame.style(span.style)) for span in label._spans]
        if label_style:
            spans.append((at, end, label_style))
        spans.append((0, end, Style(meta={"node": node._id})))

        cuts = sorted({0, end, *(s for s, _, _ in spans if s < end), *(e for _, e, _ in spans if e < end)})
        out = []
        for start, stop in zip(cuts, cuts[1:]):
            style = line_style
            for first, last, span_style in spans:
                if first <= start and stop <= last:
                    style += span_style
            out.append(Segment(text[start:stop], style))
        return out


__all__ = ["QuickTree"]
