"""Lineage traversal over a GraphIndex: `upstream`, `downstream` and `paths`.

Traversal is a level-synchronous breadth-first search, vectorised per level with numpy: the
whole frontier's neighbours are gathered at once from the CSR arrays, a visited mask drops
what was seen, and the first edge to reach a node is kept as the one that reached it.
`same_as` links are identity, not lineage: they are followed both ways at no cost in depth.
When the compiled walk is built (`_walk.c`, loaded by `_native`), `reach` and `reach_many` hand
it the index's arrays and get the same rows without a Python round per level; the numpy code
here is the reference, and runs when the extension is missing, turned off or declines a call.

>>> import polars as pl
>>> from braid.unify.index import GraphIndex
>>> nodes = pl.DataFrame({
...     "id": ["dvc:dataset/raw", "mlflow:dataset/raw", "mlflow:model/m", "mlflow:run/r"],
...     "kind": ["dataset", "dataset", "model", "run"],
...     "tool": ["dvc", "mlflow", "mlflow", "mlflow"],
... })
>>> edges = pl.DataFrame({
...     "src": ["mlflow:dataset/raw", "mlflow:run/r", "dvc:dataset/raw"],
...     "dst": ["mlflow:run/r", "mlflow:model/m", "mlflow:dataset/raw"],
...     "kind": ["input", "output", "same_as"],
... })
>>> index = GraphIndex.build(nodes, edges)
>>> upstream(index, nodes, ["mlflow:model/m"], kinds=["dataset"]).select("id", "depth", "via_kind")
shape: (2, 3)
┌────────────────────┬───────┬──────────┐
│ id                 ┆ depth ┆ via_kind │
│ ---                ┆ ---   ┆ ---      │
│ str                ┆ i64   ┆ str      │
╞════════════════════╪═══════╪══════════╡
│ dvc:dataset/raw    ┆ 2     ┆ same_as  │
│ mlflow:dataset/raw ┆ 2     ┆ input    │
└────────────────────┴───────┴──────────┘
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from . import _native
from .index import epoch_us

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .index import Csr, GraphIndex

__all__ = ["Reach", "downstream", "each", "paths", "reach", "reach_many", "search", "upstream"]

Direction = Literal["upstream", "downstream"]
StopAt = Callable[[pl.DataFrame], pl.Series] | pl.Expr

# Below this many candidates a level is deduplicated with np.unique (a tiny sort); above it,
# with a scatter into a per-traversal scratch array, which is linear. A level with more than
# 1/_MASK_SHARE as many candidates as there are nodes is put in id order by scanning a mask
# rather than by sorting.
_SMALL_LEVEL = 2048
_MASK_SHARE = 32
# Results of more rows than this, from an index whose ids are not in order, are ordered with
# the index's id ranks (computed once) rather than by a string sort of their own.
_RANK_ROWS = 20_000
# reach_many walks up to _BATCH starts as one search: one bit per start, in 64-bit words, so a
# node reached by many starts of a batch is gathered and deduplicated once per level, not once
# per start. A batch's seen-bits array (nodes x words) takes at most _BATCH_BYTES of address
# space; only the pages of reached nodes are ever touched.
_BATCH = 4096
_BATCH_BYTES = 1 << 25


@dataclass(frozen=True)
class Reach:
    """Nodes reached by a traversal: dense ids, hop depth and the edge row that reached each.

    Rows are in depth order; within a depth, in id order when the index's ids are sorted.
    From `reach_many`, `start` holds each row's start (a position in its `starts`), and rows
    are by start, then as above.
    """

    node: np.ndarray
    depth: np.ndarray
    via: np.ndarray
    start: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.node.size)

    def take(self, rows: np.ndarray) -> Reach:
        """The rows at `rows` (positions or a boolean mask)."""
        start = None if self.start is None else self.start[rows]
        return Reach(self.node[rows], self.depth[rows], self.via[rows], start)


@dataclass
class _Search:
    """The state of one breadth-first search: what is visited, what exists, what stops."""

    index: GraphIndex
    stop: np.ndarray | None
    as_of: int | None
    visited: np.ndarray
    scratch: np.ndarray | None = None  # first entry per node, for big levels
    mark: np.ndarray | None = None  # a level's nodes, for the biggest levels

    def gather(self, csr: Csr, frontier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frontier's (neighbour, edge) entries."""
        return csr.gather(frontier)

    def admit(self, nbr: np.ndarray, edge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The unvisited, existing neighbours once each, in id order, now visited.

        Where several entries reach a node, the first wins: the frontier is in id order and
        each node's entries in edge row order, so the winner does not depend on timing.
        """
        keep = ~self.visited[nbr]
        if self.as_of is not None:
            keep &= self.index.node_created[nbr] <= self.as_of
            keep &= self.index.edge_created[edge] <= self.as_of
        nbr, edge = nbr[keep], edge[keep]
        if nbr.size > _SMALL_LEVEL:
            nbr, edge = self._unique_large(nbr, edge)
        elif nbr.size > 1:
            nbr, first = np.unique(nbr, return_index=True)
            edge = edge[first]
        self.visited[nbr] = True
        return nbr, edge

    def _unique_large(self, nbr: np.ndarray, edge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Linear, where np.unique would sort every candidate: scatter positions back to
        # front so each node's slot holds its first entry (numpy writes repeated indices in
        # order; were it not to, some entry of the node would still win, just another one).
        n = self.visited.size
        if self.scratch is None:
            self.scratch = np.empty(n, np.int64)  # pages are touched only where written
        positions = np.arange(nbr.size, dtype=np.int64)
        self.scratch[nbr[::-1]] = positions[::-1]
        if nbr.size * _MASK_SHARE >= n:
            if self.mark is None:
                self.mark = np.zeros(n, np.bool_)
            self.mark[nbr] = True
            found = np.flatnonzero(self.mark)
            self.mark[found] = False
            return found, edge[self.scratch[found]]
        first = np.flatnonzero(self.scratch[nbr] == positions)
        nbr, edge = nbr[first], edge[first]
        order = np.argsort(nbr)
        return nbr[order], edge[order]

    def expandable(self, found: np.ndarray) -> np.ndarray:
        """The found nodes the search goes on from: all but `stop_at` matches."""
        return found if self.stop is None else found[~self.stop[found]]

    def with_same_as(self, found: np.ndarray) -> np.ndarray:
        """The found nodes that have a same_as link (most nodes have no twin)."""
        return found[self.index.has_same_as[found]]

    def identities(self, seeds: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Everything linked to `seeds` by chains of same_as edges (not the seeds themselves)."""
        found: list[np.ndarray] = []
        vias: list[np.ndarray] = []
        frontier = self.with_same_as(self.expandable(seeds))
        while frontier.size:
            nbr, edge = self.gather(self.index.same_as, frontier)
            if nbr.size == 0:
                break
            nodes, via = self.admit(nbr, edge)
            found.append(nodes)
            vias.append(via)
            frontier = self.with_same_as(self.expandable(nodes))
        return found, vias

    def walk(
        self, csr: Csr, start: np.ndarray, *, depth: int | None, same_as: bool
    ) -> list[tuple[int, list[np.ndarray], list[np.ndarray]]]:
        """The levels reached from the id-ordered `start` keys: (depth, found, vias) each."""
        self.visited[start] = True
        found, vias = self.identities(start) if same_as else ([], [])
        levels = [(0, found, vias)]
        frontier = _frontier([start, *(self.expandable(f) for f in found)])
        level = 0
        while frontier.size and (depth is None or level < depth):
            level += 1
            nodes, via = self.admit(*self.gather(csr, frontier))
            found, vias = self.identities(nodes) if same_as else ([], [])
            levels.append((level, [nodes, *found], [via, *vias]))
            frontier = _frontier([self.expandable(f) for f in (nodes, *found)])
        return levels


def reach(
    index: GraphIndex,
    start: np.ndarray,
    *,
    direction: Direction,
    depth: int | None = None,
    stop: np.ndarray | None = None,
    as_of: int | None = None,
    same_as: bool = True,
) -> Reach:
    """Breadth-first closure from dense `start` ids: the engine behind upstream/downstream.

    `stop` is a boolean mask over nodes (found, not expanded); `as_of` is epoch µs.

    >>> import polars as pl
    >>> from braid.unify.index import GraphIndex
    >>> nodes = pl.DataFrame({"id": ["a", "b", "c"], "kind": ["dataset", "run", "model"]})
    >>> edges = pl.DataFrame({"src": ["a", "b"], "dst": ["b", "c"], "kind": ["input", "output"]})
    >>> found = reach(GraphIndex.build(nodes, edges), np.array([0]), direction="downstream")
    >>> found.node.tolist(), found.depth.tolist(), found.via.tolist()
    ([1, 2], [1, 2], [0, 1])
    """
    csr = index.forward if direction == "downstream" else index.backward
    compiled = _compiled(index, csr, start, depth=depth, stop=stop, as_of=as_of, same_as=same_as, union=True)
    if compiled is not None:
        return compiled
    search = _Search(index, stop, as_of, np.zeros(index.n_nodes, np.bool_))
    start = np.unique(np.asarray(start, np.int64))
    start = _alive(index, start, as_of)
    return _ordered(search.walk(csr, start, depth=depth, same_as=same_as))


def reach_many(
    index: GraphIndex,
    starts: np.ndarray,
    *,
    direction: Direction,
    depth: int | None = None,
    stop: np.ndarray | None = None,
    as_of: int | None = None,
    same_as: bool = True,
    report: np.ndarray | None = None,
    vias: bool = True,
) -> Reach:
    """`reach` from each of the dense `starts` on its own, in batches: one search for many.

    Row for row what `reach(index, [s], ...)` gives for each start `s`, tagged in `start`
    with the start's position in `starts`, by start. Starts that are not nodes (-1) or did
    not exist `as_of` reach nothing. A batch of starts is walked as one search whose keys are
    nodes carrying a bit per start (see `_BitSearch`): starts whose lineage overlaps share
    the work of every level. `report` (a mask over nodes) keeps only the rows of those nodes,
    the walk going through all; `vias=False` skips finding the edge that reached each row
    (`via` is then -1): no sort per level.

    >>> import polars as pl
    >>> from braid.unify.index import GraphIndex
    >>> nodes = pl.DataFrame({"id": ["a", "b", "c"], "kind": ["dataset", "run", "model"]})
    >>> edges = pl.DataFrame({"src": ["a", "b"], "dst": ["b", "c"], "kind": ["input", "output"]})
    >>> found = reach_many(GraphIndex.build(nodes, edges), np.array([2, -1, 1]), direction="upstream")
    >>> found.start.tolist(), found.node.tolist(), found.depth.tolist(), found.via.tolist()
    ([0, 0, 2], [1, 0, 0], [1, 2, 1], [1, 0, 0])
    """
    csr = index.forward if direction == "downstream" else index.backward
    starts = np.asarray(starts, np.int64)
    compiled = _compiled(index, csr, starts, depth=depth, stop=stop, as_of=as_of, same_as=same_as,
                         report=report, vias=vias)
    if compiled is not None:
        return compiled
    n = max(index.n_nodes, 1)
    words = max(1, min(-(-min(_BATCH, max(starts.size, 1)) // 64), _BATCH_BYTES // (8 * n)))
    batch = max(1, min(_BATCH, 64 * words))
    parts: list[Reach] = []
    for lo in range(0, starts.size, batch):
        slot = np.arange(min(batch, starts.size - lo), dtype=np.int64)
        node = starts[lo : lo + slot.size]
        known = (node >= 0) & (node < index.n_nodes)
        slot, node = slot[known], node[known]
        if as_of is not None:
            alive = index.node_created[node] <= as_of
            slot, node = slot[alive], node[alive]
        if slot.size == 0:
            continue
        search = _BitSearch(index, csr, -(-(int(slot.max()) + 1) // 64), stop, as_of, vias)
        part = search.walk(slot, node, depth=depth, same_as=same_as).rows(report)
        parts.append(Reach(part.node, part.depth, part.via, part.start + lo))  # type: ignore[operator]
    if not parts:
        empty = np.zeros(0, np.int64)
        return Reach(empty, empty.copy(), empty.copy(), empty.copy())
    return Reach(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("node", "depth", "via", "start")))


def _compiled(
    index: GraphIndex,
    csr: Csr,
    start: np.ndarray,
    *,
    depth: int | None,
    stop: np.ndarray | None,
    as_of: int | None,
    same_as: bool,
    report: np.ndarray | None = None,
    vias: bool = True,
    union: bool = False,
) -> Reach | None:
    """The walk by the compiled `_walk` (a walk per start, or one from all with `union`): the
    same rows as the numpy code below. None when it is not built or declines the arrays."""
    out = _walk(index, csr, start, depth=depth, stop=stop, as_of=as_of, same_as=same_as, report=report, vias=vias,
                union=union)
    if out is None:
        return None
    slot, node, level, via = (np.frombuffer(b, np.int64) for b in out)
    return Reach(node, level, via, None if union else slot)


def _walk(
    index: GraphIndex, csr: Csr, start: np.ndarray, *, depth: int | None, stop: np.ndarray | None,
    as_of: int | None, same_as: bool, report: np.ndarray | None, vias: bool, union: bool, counting: bool = False,
) -> Any:
    """`_walk.walk` over the index's arrays: its rows (or, `counting`, rows per start) as bytes;
    None when it is not built or declines the arrays."""
    walker = _native.walker
    if walker is None:
        return None
    same = index.same_as
    return walker.walk(
        csr.indptr, csr.nbr, csr.edge, same.indptr, same.nbr, same.edge, stop, report,
        index.node_created, index.edge_created, index.has_same_as, as_of, np.ascontiguousarray(start, np.int64),
        -1 if depth is None else min(max(depth, 0), 1 << 62), same_as, vias, union, counting,
    )


@dataclass
class _BitSearch:
    """Breadth-first searches from a batch of starts at once, one bit per start.

    A key is `node * words + w`: word w of the node's bits, where bit b of word w stands for
    the batch's start 64w + b. `seen` holds the bits of every key reached so far. A level
    gathers each frontier key's neighbours once, carrying the bits newly set at the key; a
    neighbour gains the bits it has not seen. With `vias`, for each bit the first entry that
    carries it (frontier in node order, each node's entries in edge row order: the order a
    one-start search meets them in) is the edge that reached it. So every start gets exactly
    the rows, depths and edges its own search would give.
    """

    index: GraphIndex
    csr: Csr
    words: int
    stop: np.ndarray | None
    as_of: int | None
    vias: bool = True
    seen: np.ndarray = field(init=False)
    # (depth, key, bits new at the key, edge that brought them or None), per step
    found: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]] = field(init=False, default_factory=list)
    _first: np.ndarray | None = field(init=False, default=None)  # first entry per key, without vias

    def __post_init__(self) -> None:
        self.seen = np.zeros(self.index.n_nodes * self.words, np.uint64)  # zero pages: touched where reached

    def walk(self, slot: np.ndarray, node: np.ndarray, *, depth: int | None, same_as: bool) -> _BitSearch:
        """Walk from each start (`slot` in the batch, at `node`); the rows are `rows()`."""
        key, bits = _merged([node * self.words + slot // 64], [np.left_shift(np.uint64(1), (slot % 64).astype(np.uint64))])
        self.seen[key] |= bits
        level = 0
        fronts = [(key, bits)]  # a start is walked from even when stop_at matches it
        if same_as:
            fronts += [self.expandable(k, b) for k, b in self.identities(key, bits, level)]
        key, bits = self.frontier(fronts)
        while key.size and (depth is None or level < depth):
            level += 1
            new = self.step(self.csr, key, bits, level)
            fronts = [new, *self.identities(*new, level)] if same_as else [new]
            key, bits = self.frontier([self.expandable(k, b) for k, b in fronts])
        return self

    def frontier(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """The next level's keys: in key order with vias (the order decides which edge wins);
        without, a key may come twice with different bits, which costs a gather, not a sort."""
        parts = [p for p in parts if p[0].size]
        if len(parts) < 2:  # a part has each key once (in key order, with vias)
            return parts[0] if parts else _no_keys()
        if self.vias:
            return _merged(*zip(*parts))
        return np.concatenate([k for k, _ in parts]), np.concatenate([b for _, b in parts])

    def step(self, csr: Csr, key: np.ndarray, bits: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        """One hop from the frontier `key`s carrying `bits`: the keys reached and the bits new
        at each, recorded for `rows()`."""
        node, word = (key, None) if self.words == 1 else np.divmod(key, self.words)
        pos, counts = csr.positions(node)
        if pos.size == 0:
            return _no_keys()
        nbr = csr.nbr[pos]
        edge = csr.edge[pos] if self.vias or self.as_of is not None else pos  # pos: a stand-in, never read
        to = nbr.astype(np.int64)
        if word is not None:
            to = to * self.words + np.repeat(word, counts)
        carry = np.repeat(bits, counts)
        if self.as_of is not None:
            keep = (self.index.node_created[nbr] <= self.as_of) & (self.index.edge_created[edge] <= self.as_of)
            to, carry, edge = to[keep], carry[keep], edge[keep]
        carry &= ~self.seen[to]
        live = np.flatnonzero(carry)
        to, carry = to[live], carry[live]
        if not self.vias:
            new_key, new_bits = self._or_scattered(to, carry)
            self.found.append((level, new_key, new_bits, None))
            return new_key, new_bits
        edge = edge[live]
        if to.size > 1:  # group by key, each group in meeting order
            order = _stable_order(to)
            to, carry, edge = to[order], carry[order], edge[order]
        first = _first_bits(to, carry)
        live = np.flatnonzero(first)
        to, first, edge = to[live], first[live], edge[live]
        self.found.append((level, to, first, edge))
        new_key, new_bits = _or_by_key(to, first)
        self.seen[new_key] |= new_bits
        return new_key, new_bits

    def _or_scattered(self, to: np.ndarray, carry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each key of `to` once (in first-met order) with its new bits, now seen: scatters,
        linear where a sort would not be."""
        if to.size < 2:
            self.seen[to] |= carry
            return to, carry
        if self._first is None:
            self._first = np.empty(self.seen.size, np.int64)  # pages touched only where written
        at = np.arange(to.size, dtype=np.int64)
        self._first[to[::-1]] = at[::-1]  # repeated keys: the first entry's position is written last
        head = self._first[to] == at
        key = to[head]
        before = self.seen[key]
        self.seen[key] = before | carry[head]
        if key.size == to.size:
            return key, carry
        later = ~head  # more entries of a key met already: OR them in (ufunc.at is slow: only these)
        np.bitwise_or.at(self.seen, to[later], carry[later])
        return key, self.seen[key] & ~before

    def identities(self, key: np.ndarray, bits: np.ndarray, level: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Keys linked to the found `key`s by chains of same_as edges, at the same depth."""
        out = []
        key, bits = self.with_same_as(*self.expandable(key, bits))
        while key.size:
            key, bits = self.step(self.index.same_as, key, bits, level)
            out.append((key, bits))
            key, bits = self.with_same_as(*self.expandable(key, bits))
        return out

    def expandable(self, key: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The keys the search goes on from: all but those of `stop_at` nodes."""
        if self.stop is None:
            return key, bits
        go = ~self.stop[key // self.words]
        return key[go], bits[go]

    def with_same_as(self, key: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The keys of nodes that have a same_as link (most nodes have no twin)."""
        twin = self.index.has_same_as[key // self.words]
        return key[twin], bits[twin]

    def rows(self, report: np.ndarray | None = None) -> Reach:
        """One row per (start, node) reached (of a `report` node), by start, then depth, then node."""
        found = [f for f in self.found if f[1].size]
        if report is not None:
            found = [(level, key[keep], bits[keep], None if edge is None else edge[keep])
                     for level, key, bits, edge in found for keep in [report[key // self.words]]]
        found = [f for f in found if f[1].size]
        if not found:
            empty = np.zeros(0, np.int64)
            return Reach(empty, empty.copy(), empty.copy(), empty.copy())
        key = np.concatenate([f[1] for f in found])
        entry, bit = _set_bits(np.concatenate([f[2] for f in found]))
        node, word = np.divmod(key[entry], self.words)
        slot = word * 64 + bit
        depth = np.concatenate([np.full(f[1].size, f[0], np.int64) for f in found])[entry]
        n, deepest = self.index.n_nodes, int(depth.max())
        packable = (int(slot.max()) + 1) * (deepest + 1) * n < 1 << 62
        if not self.vias:
            if packable:  # sort the packed rows themselves: no gather after
                packed = np.sort((slot * (deepest + 1) + depth) * n + node)
                rest, node = np.divmod(packed, n)
                slot, depth = np.divmod(rest, deepest + 1)
            else:
                order = np.lexsort((node, depth, slot))
                slot, depth, node = slot[order], depth[order], node[order]
            return Reach(node, depth, np.full(node.size, -1, np.int64), slot)
        edge = np.concatenate([f[3] for f in found])[entry]  # type: ignore[misc]
        order = np.argsort((slot * (deepest + 1) + depth) * n + node) if packable else np.lexsort((node, depth, slot))
        return Reach(node[order], depth[order], edge[order].astype(np.int64), slot[order])


def _no_keys() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.uint64)


def _merged(keys: Sequence[np.ndarray], bits: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Key-ordered keys with their bits OR-ed, from parts that may share keys."""
    present = [i for i, k in enumerate(keys) if k.size]
    if not present:
        return _no_keys()
    key = np.concatenate([keys[i] for i in present])
    bit = np.concatenate([bits[i] for i in present])
    if len(present) == 1 and key.size < 2:
        return key, bit
    order = np.argsort(key, kind="stable")
    return _or_by_key(key[order], bit[order])


def _or_by_key(key: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct key of the key-ordered `key` once, with the OR of its bits."""
    if key.size < 2:
        return key, bits
    head = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    if head.size == key.size:
        return key, bits
    return key[head], np.bitwise_or.reduceat(bits, head)


def _stable_order(key: np.ndarray) -> np.ndarray:
    """The positions of `key` sorted by key, ties in their order: one sort of packed (key,
    position) values where they fit in 63 bits."""
    shift = max(1, (key.size - 1).bit_length())
    if int(key.max()) < 1 << (62 - shift):
        packed = (key << shift) | np.arange(key.size, dtype=np.int64)
        packed.sort()
        return packed & ((1 << shift) - 1)
    return np.argsort(key, kind="stable")


def _first_bits(key: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Each entry's bits that no earlier entry of the same key carries (`key` grouped).

    An inclusive OR scan within each run of equal keys by doubling: log2(longest run) passes.

    >>> _first_bits(np.array([1, 1, 1, 2]), np.array([3, 6, 5, 1], np.uint64)).tolist()
    [3, 4, 0, 1]
    """
    if key.size < 2:
        return bits
    same = key[1:] == key[:-1]
    if not same.any():
        return bits
    heads = np.flatnonzero(np.concatenate([[True], ~same, [True]]))
    longest = int(np.diff(heads).max())
    seen = bits.copy()
    shift = 1
    while shift < longest:
        carried = np.where(key[shift:] == key[:-shift], seen[:-shift], np.uint64(0))
        seen[shift:] |= carried
        shift *= 2
    before = np.zeros_like(bits)
    before[1:] = np.where(same, seen[:-1], np.uint64(0))
    return bits & ~before


def _set_bits(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(entry, bit) for every set bit of `words`, a round per bit lowest first.

    >>> entry, bit = _set_bits(np.array([5, 0, 2], np.uint64))
    >>> sorted(zip(entry.tolist(), bit.tolist()))
    [(0, 0), (0, 2), (2, 1)]
    """
    entries, bits = [], []
    entry = np.flatnonzero(words)
    word = words[entry]
    while entry.size:
        low = word & (~word + np.uint64(1))  # the lowest set bit
        entries.append(entry)
        bits.append(np.frexp(low.astype(np.float64))[1].astype(np.int64) - 1)  # powers of 2 are exact
        word = word ^ low
        more = word != 0
        entry, word = entry[more], word[more]
    if not entries:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(entries), np.concatenate(bits)


def _alive(index: GraphIndex, start: np.ndarray, as_of: int | None) -> np.ndarray:
    """The starts that are nodes and existed `as_of`."""
    start = start[(start >= 0) & (start < index.n_nodes)]
    return start if as_of is None else start[index.node_created[start] <= as_of]


def _frontier(chunks: list[np.ndarray]) -> np.ndarray:
    """One id-ordered frontier from id-ordered chunks (usually just one)."""
    present = [c for c in chunks if c.size]
    if len(present) <= 1:
        return present[0] if present else np.zeros(0, np.int64)
    return np.sort(np.concatenate(present))


def _ordered(levels: list[tuple[int, list[np.ndarray], list[np.ndarray]]]) -> Reach:
    """Concatenate the levels, each in dense id order (id order for a canonical catalog)."""
    nodes, depths, vias = [], [], []
    for level, found, via in levels:
        chunks = [i for i, f in enumerate(found) if f.size]
        if not chunks:
            continue
        chunk = np.concatenate([found[i] for i in chunks])
        edge = np.concatenate([via[i] for i in chunks])
        if len(chunks) > 1:  # each chunk is sorted; the level as a whole is not
            order = np.argsort(chunk, kind="stable")
            chunk, edge = chunk[order], edge[order]
        nodes.append(chunk)
        vias.append(edge)
        depths.append(np.full(chunk.size, level, np.int64))
    if not nodes:
        empty = np.zeros(0, np.int64)
        return Reach(empty, empty.copy(), empty.copy())
    return Reach(
        np.concatenate(nodes).astype(np.int64, copy=False),
        np.concatenate(depths),
        np.concatenate(vias).astype(np.int64, copy=False),
    )


def upstream(
    index: GraphIndex,
    nodes: pl.DataFrame,
    start_ids: str | Sequence[str],
    *,
    depth: int | None = None,
    kinds: Sequence[str] | None = None,
    tools: Sequence[str] | None = None,
    stop_at: StopAt | None = None,
    as_of: datetime | None = None,
    same_as: bool = True,
) -> pl.DataFrame:
    """Everything `start_ids` came from: against the arrows, through same_as both ways.

    Returns the node columns plus `depth` (lineage hops; same_as hops are free), and the edge
    that first reached each node (`via_src`, `via_dst`, `via_kind`), sorted by depth then id.
    `kinds` and `tools` filter the rows returned, not the walk; `stop_at` nodes are returned
    but not walked through; `as_of` keeps only nodes and edges created by then (or undated).
    `nodes` is the frame the index was built from: rows are gathered by dense id. Unknown
    start ids are skipped (the Catalog reports them first). See the module docstring.
    """
    return _traverse(
        index, nodes, start_ids, "upstream", depth=depth, kinds=kinds, tools=tools,
        stop_at=stop_at, as_of=as_of, same_as=same_as,
    )


def downstream(
    index: GraphIndex,
    nodes: pl.DataFrame,
    start_ids: str | Sequence[str],
    *,
    depth: int | None = None,
    kinds: Sequence[str] | None = None,
    tools: Sequence[str] | None = None,
    stop_at: StopAt | None = None,
    as_of: datetime | None = None,
    same_as: bool = True,
) -> pl.DataFrame:
    """Everything that came from `start_ids`: with the arrows, through same_as both ways.

    The mirror of `upstream`, with the same options and result columns.

    >>> import polars as pl
    >>> from braid.unify.index import GraphIndex
    >>> nodes = pl.DataFrame({"id": ["a", "b", "c"], "kind": ["dataset", "run", "model"]})
    >>> edges = pl.DataFrame({"src": ["a", "b"], "dst": ["b", "c"], "kind": ["input", "output"]})
    >>> index = GraphIndex.build(nodes, edges)
    >>> downstream(index, nodes, "a", depth=1).select("id", "depth", "via_src", "via_kind").rows()
    [('b', 1, 'a', 'input')]
    """
    return _traverse(
        index, nodes, start_ids, "downstream", depth=depth, kinds=kinds, tools=tools,
        stop_at=stop_at, as_of=as_of, same_as=same_as,
    )


def _traverse(
    index: GraphIndex,
    nodes: pl.DataFrame,
    start_ids: str | Sequence[str],
    direction: Direction,
    *,
    depth: int | None,
    kinds: Sequence[str] | None,
    tools: Sequence[str] | None,
    stop_at: StopAt | None,
    as_of: datetime | None,
    same_as: bool,
) -> pl.DataFrame:
    start = index.lookup([start_ids] if isinstance(start_ids, str) else list(start_ids))
    found = search(index, nodes, start, direction, depth=depth, kinds=kinds, tools=tools, stop_at=stop_at,
                   as_of=as_of, same_as=same_as)
    return _reach_frame(index, nodes, found)


def search(
    index: GraphIndex,
    nodes: pl.DataFrame,
    start: np.ndarray,
    direction: Direction,
    *,
    each: bool = False,
    depth: int | None = None,
    kinds: Sequence[str] | None = None,
    tools: Sequence[str] | None = None,
    stop_at: StopAt | None = None,
    as_of: datetime | None = None,
    same_as: bool = True,
    vias: bool = True,
) -> Reach:
    """The rows `upstream`/`downstream` return (or, with `each`, what `each` returns), as dense
    arrays in the same order: for callers that gather only the columns they need.

    `start` holds dense ids (-1 for an unknown id); with `each`, `start` of the result holds
    each row's position in it. `vias=False` (only with `each`) leaves `via` at -1.

    >>> import polars as pl
    >>> from braid.unify.index import GraphIndex
    >>> nodes = pl.DataFrame({"id": ["a", "b", "c"], "kind": ["dataset", "run", "model"]})
    >>> edges = pl.DataFrame({"src": ["a", "b"], "dst": ["b", "c"], "kind": ["input", "output"]})
    >>> found = search(GraphIndex.build(nodes, edges), nodes, np.array([2]), "upstream", kinds=["dataset"])
    >>> found.node.tolist(), found.depth.tolist()
    ([0], [2])
    """
    stop = _stop_mask(nodes, stop_at)
    moment = None if as_of is None else epoch_us(as_of)
    if not each:
        found = reach(index, start, direction=direction, depth=depth, stop=stop, as_of=moment, same_as=same_as)
        return _id_ordered(index, _filtered(index, found, kinds=kinds, tools=tools))
    report = _report_mask(index, kinds=kinds, tools=tools)
    found = reach_many(index, start, direction=direction, depth=depth, stop=stop, as_of=moment, same_as=same_as,
                       report=report, vias=vias)
    return _id_ordered(index, found)


def count_each(
    index: GraphIndex,
    nodes: pl.DataFrame,
    start: np.ndarray,
    direction: Direction,
    *,
    depth: int | None = None,
    kinds: Sequence[str] | None = None,
    tools: Sequence[str] | None = None,
    stop_at: StopAt | None = None,
    as_of: datetime | None = None,
    same_as: bool = True,
) -> np.ndarray:
    """How many rows `search(..., each=True)` gives each of the dense `start` ids: counted in
    the walk, no row kept (the compiled walk), else counted from the rows.

    >>> import polars as pl
    >>> from braid.unify.index import GraphIndex
    >>> nodes = pl.DataFrame({"id": ["a", "b", "c"], "kind": ["dataset", "run", "model"]})
    >>> edges = pl.DataFrame({"src": ["a", "b"], "dst": ["b", "c"], "kind": ["input", "output"]})
    >>> count_each(GraphIndex.build(nodes, edges), nodes, np.array([2, -1, 1]), "upstream").tolist()
    [2, 0, 1]
    """
    starts = np.asarray(start, np.int64)
    csr = index.forward if direction == "downstream" else index.backward
    out = _walk(index, csr, starts, depth=depth, stop=_stop_mask(nodes, stop_at),
                as_of=None if as_of is None else epoch_us(as_of), same_as=same_as,
                report=_report_mask(index, kinds=kinds, tools=tools), vias=False, union=False, counting=True)
    if out is not None:
        return np.frombuffer(out, np.int64)
    found = search(index, nodes, starts, direction, each=True, depth=depth, kinds=kinds, tools=tools,
                   stop_at=stop_at, as_of=as_of, same_as=same_as, vias=False)
    assert found.start is not None
    return np.bincount(found.start, minlength=starts.size)


def each(
    index: GraphIndex,
    nodes: pl.DataFrame,
    start_ids: pl.Series,
    direction: Direction,
    *,
    depth: int | None = None,
    kinds: Sequence[str] | None = None,
    tools: Sequence[str] | None = None,
    stop_at: StopAt | None = None,
    as_of: datetime | None = None,
    same_as: bool = True,
) -> pl.DataFrame:
    """`upstream` or `downstream` of each start id on its own, with a `start` column.

    The rows are those of the one-start call for each start in turn, in `start_ids` order,
    tagged with the start; unknown start ids give no rows. One `reach_many` serves them all.

    >>> import polars as pl
    >>> from braid.unify.index import GraphIndex
    >>> nodes = pl.DataFrame({"id": ["a", "b", "c"], "kind": ["dataset", "run", "model"]})
    >>> edges = pl.DataFrame({"src": ["a", "b"], "dst": ["b", "c"], "kind": ["input", "output"]})
    >>> starts = pl.Series(["b", "zzz", "c"])
    >>> each(GraphIndex.build(nodes, edges), nodes, starts, "upstream").select("start", "id", "depth").rows()
    [('b', 'a', 1), ('c', 'b', 1), ('c', 'a', 2)]
    """
    found = search(index, nodes, index.lookup(start_ids), direction, each=True, depth=depth, kinds=kinds,
                   tools=tools, stop_at=stop_at, as_of=as_of, same_as=same_as)
    return _reach_frame(index, nodes, found, start_ids.cast(pl.String))


def _stop_mask(nodes: pl.DataFrame, stop_at: StopAt | None) -> np.ndarray | None:
    """`stop_at` evaluated once over all nodes, as a boolean mask (null -> False)."""
    if stop_at is None:
        return None
    mask = nodes.select(stop_at).to_series() if isinstance(stop_at, pl.Expr) else stop_at(nodes)
    if mask.len() != nodes.height:
        raise ValueError(f"stop_at gave {mask.len()} values for {nodes.height} nodes")
    return mask.cast(pl.Boolean).fill_null(False).to_numpy()


def _report_mask(index: GraphIndex, *, kinds: Sequence[str] | None, tools: Sequence[str] | None) -> np.ndarray | None:
    """The nodes whose rows are wanted, by kind and tool; None for all."""
    if kinds is None and tools is None:
        return None
    keep = np.ones(index.n_nodes, np.bool_)
    if kinds is not None:
        keep &= np.isin(index.node_kind, index.kind_codes(kinds))
    if tools is not None:
        keep &= np.isin(index.node_tool, index.tool_codes(tools))
    return keep


def _filtered(
    index: GraphIndex, found: Reach, *, kinds: Sequence[str] | None, tools: Sequence[str] | None
) -> Reach:
    """Only the reached rows whose node kind and tool are wanted."""
    keep = np.ones(len(found), np.bool_)
    if kinds is not None:
        keep &= np.isin(index.node_kind[found.node], index.kind_codes(kinds))
    if tools is not None:
        keep &= np.isin(index.node_tool[found.node], index.tool_codes(tools))
    if keep.all():
        return found
    return found.take(keep)


def _reach_frame(
    index: GraphIndex, nodes: pl.DataFrame, found: Reach, starts: pl.Series | None = None
) -> pl.DataFrame:
    """Node rows gathered by dense id, plus depth and the reaching edge, in `found`'s order.

    With `starts` (for a `reach_many` result), also each row's start id.
    """
    tagged = [] if starts is None else [pl.lit(starts.gather(found.start).alias("start"))]
    # One select, so polars runs the gathers side by side and Python calls it once.
    return nodes.select(
        pl.all().gather(found.node),
        pl.lit(pl.Series("depth", found.depth, dtype=pl.Int64)),
        pl.col("id").gather(index.edge_src[found.via]).alias("via_src"),
        pl.col("id").gather(index.edge_dst[found.via]).alias("via_dst"),
        pl.lit(index.edge_kind_names(found.via)),
        *tagged,
    )


def _id_ordered(index: GraphIndex, found: Reach) -> Reach:
    """Rows by (start,) depth then id. Dense order is id order in a canonical catalog: nothing
    to do."""
    if index.ids_sorted or len(found) < 2:
        return found
    if len(found) > _RANK_ROWS or index.ranked:
        rank = index.id_rank[found.node]
        if found.start is None:
            order = np.argsort((found.depth << 32) | rank)
        else:
            order = np.lexsort((rank, found.depth, found.start))
    else:
        keys = pl.DataFrame({"depth": found.depth, "id": index.ids.gather(found.node)})
        by = ["depth", "id"]
        if found.start is not None:
            keys, by = keys.with_columns(start=found.start), ["start", *by]
        order = keys.with_row_index("row").sort(by).get_column("row").to_numpy()
    return found.take(order)


def paths(
    index: GraphIndex,
    nodes: pl.DataFrame,
    src_id: str,
    dst_id: str,
    *,
    depth: int | None = None,
    same_as: bool = True,
    as_of: datetime | None = None,
    limit: int = 100,
) -> pl.DataFrame:
    """The simple paths from `src_id` down to `dst_id`, at most `limit`, shortest first.

    Edges are followed downstream and same_as links both ways. "Shortest" counts lineage hops
    (same_as hops are free, as in `depth`), then steps. Paths are enumerated only inside the
    nodes that are both downstream of src and upstream of dst, found by two searches first.
    Rows: `path` (0-based), `step` (0 = src), the node columns and `via_kind` (the kind of the
    edge that led to this step, null at step 0).

    >>> import polars as pl
    >>> from braid.unify.index import GraphIndex
    >>> nodes = pl.DataFrame({"id": ["a", "b", "c"], "kind": ["dataset", "run", "model"]})
    >>> edges = pl.DataFrame({"src": ["a", "b", "a"], "dst": ["b", "c", "c"], "kind": ["input", "output", "input"]})
    >>> index = GraphIndex.build(nodes, edges)
    >>> paths(index, nodes, "a", "c").select("path", "step", "id", "via_kind").rows()
    [(0, 0, 'a', None), (0, 1, 'c', 'input'), (1, 0, 'a', None), (1, 1, 'b', 'input'), (1, 2, 'c', 'output')]
    """
    src, dst = (int(i) for i in index.lookup([src_id, dst_id]))
    found: list[list[tuple[int, int]]] = []
    if src >= 0 and dst >= 0 and limit > 0:
        moment = None if as_of is None else epoch_us(as_of)
        graph = _Between.build(index, src, dst, depth=depth, same_as=same_as, as_of=moment)
        if graph is not None:
            found = graph.shortest_paths(limit=limit, depth=depth)
    return _paths_frame(index, nodes, found)


@dataclass
class _Between:
    """The subgraph between src and dst: distances to dst, and moves built as the search goes."""

    index: GraphIndex
    src: int
    dst: int
    to_dst: dict[int, int]  # lineage hops left to dst: a lower bound that prunes the search
    same_as: bool
    as_of: int | None
    _moves: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, index: GraphIndex, src: int, dst: int, *, depth: int | None, same_as: bool,
        as_of: int | None,
    ) -> _Between | None:
        """None when no path can exist (dst is not downstream of src within `depth`)."""
        options = {"depth": depth, "as_of": as_of, "same_as": same_as}
        down = reach(index, np.array([src]), direction="downstream", **options)
        up = reach(index, np.array([dst]), direction="upstream", **options)
        down_node, down_depth = np.append(src, down.node), np.append(0, down.depth)
        up_node, up_depth = np.append(dst, up.node), np.append(0, up.depth)
        inside, at_down, at_up = np.intersect1d(down_node, up_node, assume_unique=True, return_indices=True)
        hops_left = up_depth[at_up]
        if depth is not None:
            short = down_depth[at_down] + hops_left <= depth
            inside, hops_left = inside[short], hops_left[short]
        to_dst = dict(zip(inside.tolist(), hops_left.tolist()))
        if src not in to_dst or dst not in to_dst:
            return None
        return cls(index, src, dst, to_dst, same_as, as_of)

    def moves(self, node: int) -> list[tuple[int, int, int]]:
        """(next node, edge row, cost) out of `node` inside the subgraph, built once."""
        if node not in self._moves:
            self._moves[node] = _steps(
                self.index, node, self.to_dst, same_as=self.same_as, as_of=self.as_of
            )
        return self._moves[node]

    def order_key(self, path: list[tuple[int, int]]) -> tuple[int, list[str]]:
        """Paths of one hop count: fewer steps first, then by their ids."""
        return len(path), [self.index.ids[node] for node, _ in path]

    def shortest_paths(self, *, limit: int, depth: int | None) -> list[list[tuple[int, int]]]:
        """Up to `limit` simple paths by lineage hops then steps: deepening on the hop bound."""
        if self.src == self.dst:
            return [[(self.src, -1)]]
        found: list[list[tuple[int, int]]] = []
        bound = self.to_dst[self.src]
        while len(found) < limit and (depth is None or bound <= depth):
            batch, cut = self._paths_of_cost(bound, limit - len(found))
            batch.sort(key=self.order_key)
            found += batch
            if not cut:  # nothing was cut by the bound: every simple path has been seen
                break
            bound += 1
        return found

    def _paths_of_cost(self, bound: int, room: int) -> tuple[list[list[tuple[int, int]]], bool]:
        """Simple paths of exactly `bound` lineage hops (at most `room`), and whether the
        bound cut any branch (so longer paths may exist)."""
        batch: list[list[tuple[int, int]]] = []
        cut = False
        path: list[tuple[int, int]] = [(self.src, -1)]
        on_path = {self.src}
        costs = [0]
        stack: list[Iterator[tuple[int, int, int]]] = [iter(self.moves(self.src))]
        while stack and len(batch) < room:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                on_path.discard(path.pop()[0])
                costs.pop()
                continue
            node, edge, cost = step
            if node in on_path:
                continue
            spent = costs[-1] + cost
            if spent + self.to_dst[node] > bound:
                cut = True
                continue
            if node == self.dst:
                if spent == bound:
                    batch.append([*path, (node, edge)])
                continue
            path.append((node, edge))
            on_path.add(node)
            costs.append(spent)
            stack.append(iter(self.moves(node)))
        return batch, cut


def _steps(
    index: GraphIndex, node: int, inside: dict[int, int], *, same_as: bool, as_of: int | None
) -> list[tuple[int, int, int]]:
    """The moves out of `node` inside the subgraph: same_as (cost 0) first, then lineage
    (cost 1); one move per neighbour, the cheapest and then lowest edge row."""
    moves: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    sources: list[tuple[Csr, int]] = [(index.forward, 1)]
    if same_as:
        sources.insert(0, (index.same_as, 0))
    for csr, cost in sources:
        for nbr, edge in zip(csr.neighbours(node).tolist(), csr.edges_of(node).tolist()):
            if nbr in seen or nbr not in inside:
                continue
            if as_of is not None and index.edge_created[edge] > as_of:
                continue
            seen.add(nbr)
            moves.append((nbr, edge, cost))
    return moves


def _paths_frame(
    index: GraphIndex, nodes: pl.DataFrame, found: list[list[tuple[int, int]]]
) -> pl.DataFrame:
    """One row per step of each path: path, step, the node columns and via_kind."""
    steps = [(p, s, node, edge) for p, path in enumerate(found) for s, (node, edge) in enumerate(path)]
    path_no, step_no, node, edge = (list(col) for col in zip(*steps)) if steps else ([], [], [], [])
    return nodes[np.array(node, np.int64)].select(
        pl.Series("path", path_no, dtype=pl.Int64),
        pl.Series("step", step_no, dtype=pl.Int64),
        pl.all(),
        index.edge_kind_names(np.array(edge, np.int64)),
    )
