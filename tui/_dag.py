"""An ASCII drawing of a node's neighbourhood, in the style of `git log --graph`.

Causes are drawn above effects: one node per line, in a topological order of the lineage
edges, with a lane (a column of `│`) for every edge still on its way down to its effect.
Lanes that meet at a node merge (`├─┘`), a node with several effects branches (`├─┐`),
and a lane passing a merge or branch crosses it (`┼`). `same_as` links are drawn as edges
too and named at their lower end. The neighbourhood is capped (depth, nodes, fan-out per
node) so the drawing stays readable in 80 columns; what was left out is counted.

>>> print("\\n".join(t.plain for t in render_lanes([(0, "a", ""), (1, "b", ""), (2, "c", "")], {0: [1, 2], 1: [2]})))
●  a
├─┐
● │  b
├─┘
●  c
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np
from rich.text import Text

from ._model import Explorer, Filters, evidence_text, node_text

MAX_NODES = 40
MAX_FAN = 6
MAX_LANES = 16


@dataclass
class Hood:
    """The nodes around a centre: dense ids with their signed depth (upstream < 0), the edges
    among them, and how many neighbours each node had beyond what was drawn."""

    centre: int
    nodes: list[int] = field(default_factory=list)
    depth: dict[int, int] = field(default_factory=dict)
    edges: list[tuple[int, int, int, bool]] = field(default_factory=list)  # src, dst, edge row, same_as
    more: dict[int, int] = field(default_factory=dict)
    capped: bool = False


def neighbourhood(explorer: Explorer, centre: int, *, up: int = 2, down: int = 2, cap: int = MAX_NODES,
                  fan: int = MAX_FAN, filters: Filters = Filters()) -> Hood:
    """Walk `up` levels against the arrows and `down` with them, `fan` neighbours per node at
    most, `cap` nodes in all; `same_as` twins join at their twin's level."""
    hood = Hood(centre, [centre], {centre: 0})
    for branch, levels, sign in (("upstream", up, -1), ("downstream", down, 1)):
        frontier = [centre]
        for level in range(1, levels + 1):
            nxt: list[int] = []
            for node in frontier:
                entries = explorer.entries(node, branch, filters, twins=True)  # type: ignore[arg-type]
                fresh = [(n, t) for n, t in zip(entries.node.tolist(), entries.twin.tolist())
                         if n not in hood.depth]
                room = min(fan, cap - len(hood.nodes))
                if len(fresh) > room:
                    hood.more[node] = hood.more.get(node, 0) + len(fresh) - max(room, 0)
                    hood.capped = hood.capped or room < fan
                for n, twin in fresh[: max(room, 0)]:
                    hood.nodes.append(n)
                    hood.depth[n] = hood.depth[node] if twin else sign * level
                    nxt.append(n)
            frontier = nxt
            if not frontier:
                break
    inside = set(hood.nodes)
    for node in hood.nodes:
        for branch in ("downstream", "same_as"):
            entries = explorer.entries(node, branch, filters)  # type: ignore[arg-type]
            for other, edge in zip(entries.node.tolist(), entries.edge.tolist()):
                if other in inside and (branch == "downstream" or node < other):
                    hood.edges.append((node, other, edge, branch == "same_as"))
    return hood


def order(hood: Hood) -> list[int]:
    """Causes before effects (Kahn's algorithm), nearest the top first; a cycle is broken at
    its highest node. `same_as` links do not constrain the order."""
    rank = {n: i for i, n in enumerate(hood.nodes)}
    key = {n: (hood.depth[n], rank[n]) for n in hood.nodes}
    preds: dict[int, set[int]] = {n: set() for n in hood.nodes}
    succs: dict[int, list[int]] = {n: [] for n in hood.nodes}
    for src, dst, _edge, twin in hood.edges:
        if src != dst and not twin:
            preds[dst].add(src)
            succs[src].append(dst)
    ready = [(key[n], n) for n in hood.nodes if not preds[n]]
    heapq.heapify(ready)
    done: list[int] = []
    left = set(hood.nodes)
    while left:
        if not ready:  # a cycle: release its highest node
            n = min(left, key=key.__getitem__)
            preds[n].clear()
            heapq.heappush(ready, (key[n], n))
        _, n = heapq.heappop(ready)
        if n not in left:
            continue
        left.discard(n)
        done.append(n)
        for m in succs[n]:
            preds[m].discard(n)
            if not preds[m] and m in left:
                heapq.heappush(ready, (key[m], m))
    return done


def render_lanes(lines: list[tuple[int, str | Text, str | Text]], children: dict[int, list[int]],
                 *, centre: int | None = None) -> list[Text]:
    """Lay out nodes `(position, label, suffix)` with edges `children[position] -> [positions]`
    (each later than its parent) as lanes; one Text per output line."""
    lanes: list[int | None] = []
    out: list[Text] = []

    def row(cells: list[str], label: Text | str | None = None) -> Text:
        text = Text("".join(cells).rstrip() if label is None else "".join(cells))
        if label is not None:
            text.append(" ")
            text.append(label)
        return text

    for pos, label, suffix in lines:
        cols = [i for i, lane in enumerate(lanes) if lane == pos]
        if cols:
            c = cols[0]
        else:
            c = lanes.index(None) if None in lanes else len(lanes)
            if c == len(lanes):
                lanes.append(None)
        if len(cols) > 1:  # lanes merging into this node's lane
            out.append(row(_branch_cells(lanes, c, cols, "┘", "┴")))
            for j in cols[1:]:
                lanes[j] = None
        lanes[c] = pos
        while lanes and lanes[-1] is None:
            lanes.pop()
        cells = [("◉" if pos == centre else "●") if j == c else ("│" if lane is not None else " ")
                 for j, lane in enumerate(lanes)]
        text = row([cell + " " for cell in cells], label)
        if suffix:
            text.append("  ")
            text.append(suffix)
        out.append(text)
        kids = sorted(children.get(pos, []))
        if not kids:
            lanes[c] = None
        else:
            lanes[c] = kids[0]
            new: list[int] = []
            for kid in kids[1:]:
                j = next((k for k in range(c + 1, len(lanes)) if lanes[k] is None), len(lanes))
                if j == len(lanes):
                    lanes.append(None)
                lanes[j] = kid
                new.append(j)
            if new:  # lanes forking off for the other children
                out.append(row(_branch_cells(lanes, c, new, "┐", "┬")))
        while lanes and lanes[-1] is None:
            lanes.pop()
    return out


def draw(explorer: Explorer, hood: Hood, *, width: int = 80) -> list[Text]:
    """The drawing of `hood`, each line cropped to `width` cells."""
    ordered = order(hood)
    position = {n: i for i, n in enumerate(ordered)}
    children: dict[int, list[int]] = {}
    incoming: dict[int, list[str]] = {}
    dropped = 0
    for src, dst, edge, twin in hood.edges:
        a, b = position[src], position[dst]
        kind = explorer.edge_kind(edge)
        if twin:
            a, b = min(a, b), max(a, b)
            label = f"≡ same_as {evidence_text(explorer.edge_attrs(edge)).split(' ')[0]}"
        elif a >= b:  # an edge against the drawn order: only inside a cycle
            dropped += 1
            continue
        else:
            label = kind
        children.setdefault(a, []).append(b)
        incoming.setdefault(b, [])
        if label not in incoming[b]:
            incoming[b].append(label)
    rows = explorer.rows(np.array(ordered, np.int64))
    lines: list[tuple[int, str | Text, str | Text]] = []
    for i, (node, row) in enumerate(zip(ordered, rows)):
        suffix = Text()
        if incoming.get(i):
            suffix.append("← " + ", ".join(incoming[i]), style="dim")
        if hood.more.get(node):
            suffix.append(f"  (+{hood.more[node]:,} more)", style="italic #d7875f")
        lines.append((i, node_text(row), suffix))
    drawn = render_lanes(lines, children, centre=position[hood.centre])
    if dropped:
        drawn.append(Text(f"({dropped} edge(s) in a cycle not drawn)", style="dim"))
    for text in drawn:
        text.truncate(width, overflow="ellipsis")
    return drawn


__all__ = ["Hood", "draw", "neighbourhood", "order", "render_lanes"]


def _branch_cells(lanes: list[int | None], c: int, ends: list[int], last: str, middle: str) -> list[str]:
    """A row joining lane `c` with the lanes `ends` (to its right): `last` closes the far end,
    `middle` marks the others, lanes crossed on the way show `┼`."""
    far = max(ends)
    cells = []
    for j, lane in enumerate(lanes):
        if j == c:
            glyph = "├"
        elif j in ends:
            glyph = last if j == far else middle
        elif c < j < far:
            glyph = "┼" if lane is not None else "─"
        else:
            glyph = "│" if lane is not None else " "
        cells.append(glyph + ("─" if c <= j < far else " "))
    return cells
