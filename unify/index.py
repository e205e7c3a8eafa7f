"""The traversal index: dense integer ids and CSR adjacency arrays over the normalised graph.

Built once per catalog generation from the `nodes` and `edges` frames. Node `i` is row `i`
of `nodes`; edge `e` is row `e` of `edges`. Three CSR structures hold the links:

- `forward`: src -> dst over lineage edges (every kind but `same_as`), for `downstream`;
- `backward`: dst -> src over the same edges, for `upstream`;
- `same_as`: both directions of every `same_as` edge (stored once, followed both ways).

Each CSR entry records the neighbour and the edge row that links to it, so a traversal can
report the edge that reached a node. Per-node and per-edge code arrays make the traversal's
filters (`kinds`, `tools`, `as_of`) plain numpy masks.

>>> import polars as pl
>>> nodes = pl.DataFrame({"id": ["a", "b", "c"], "kind": ["dataset", "run", "model"]})
>>> edges = pl.DataFrame({"src": ["a", "b"], "dst": ["b", "c"], "kind": ["input", "output"]})
>>> index = GraphIndex.build(nodes, edges)
>>> index.lookup(["c", "a", "zzz"]).tolist()
[2, 0, -1]
>>> index.forward.neighbours(0).tolist()
[1]
>>> index.backward.neighbours(2).tolist()
[1]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from .schema import EDGE_KINDS, NODE_KINDS, TOOLS

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["ALWAYS", "Csr", "GraphIndex", "epoch_us"]

ALWAYS = np.iinfo(np.int64).min
"""created_at sentinel for "always existed": a null timestamp is never after any `as_of`."""

SAME_AS = "same_as"
# polars' string hash is fast and vectorised but only stable within one process: the index
# hashes both sides in the same build. Two node ids sharing a hash are detected and handled
# with strings; an edge end that is not a node but hashes like one would be mis-linked, with
# odds of about (such ends) x (nodes) / 2**64.
_HASH_SEED = 0x6272616964  # "braid"


def epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch, reading a naive datetime as UTC.

    >>> epoch_us(datetime(1970, 1, 1, 0, 0, 1))
    1000000
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class Csr:
    """Compressed sparse rows: `nbr[indptr[i]:indptr[i + 1]]` are node i's neighbours.

    `edge` holds, for each entry, the row of the edge that links node i to that neighbour.

    >>> csr = Csr.from_pairs(np.array([0, 0, 2]), np.array([1, 2, 0]), np.array([5, 6, 7]), 3)
    >>> csr.neighbours(0).tolist(), csr.edges_of(0).tolist()
    ([1, 2], [5, 6])
    >>> nbr, edge = csr.gather(np.array([2, 0]))
    >>> nbr.tolist(), edge.tolist()
    ([0, 1, 2], [7, 5, 6])
    """

    indptr: np.ndarray  # int64, n + 1
    nbr: np.ndarray  # int32, one per entry
    edge: np.ndarray  # int32/int64 edge rows, one per entry

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, tags: np.ndarray, n: int) -> Csr:
        """Group (row, col, tag) triples by row; unique `tags` order each row's entries.

        The tag becomes the entry's `edge`. The input order does not matter, so the result is
        the same whatever order a parallel join produced the triples in.
        """
        indptr = np.zeros(n + 1, np.int64)
        if rows.size == 0:
            return cls(indptr, np.zeros(0, np.int32), np.zeros(0, np.int32))
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        # One SIMD sort of packed (row, tag, col) keys: far faster than a stable argsort, and
        # no random gather afterwards. Graphs too big to pack fall back to (row, tag) + gather.
        row_bits, col_bits = _bits(n), _bits(n)
        tag_bits = _bits(int(tags.max()) + 1)
        if row_bits + tag_bits + col_bits <= 63:
            key = rows.astype(np.int64) << (tag_bits + col_bits)
            key |= tags.astype(np.int64) << col_bits
            key |= cols
            key.sort()
            nbr = (key & ((1 << col_bits) - 1)).astype(np.int32)
            key >>= col_bits
            key &= (1 << tag_bits) - 1
            return cls(indptr, nbr, key.astype(_edge_dtype(tag_bits)))
        key = (rows.astype(np.int64) << 32) | tags.astype(np.int64)
        key.sort()
        key &= 0xFFFFFFFF
        col_of = np.empty(int(tags.max()) + 1, np.int32)
        col_of[tags] = cols
        return cls(indptr, col_of[key], key.astype(_edge_dtype(32)))

    @property
    def degree(self) -> np.ndarray:
        """Number of entries per node."""
        return np.diff(self.indptr)

    def neighbours(self, node: int) -> np.ndarray:
        """Neighbours of one node, in edge row order."""
        return self.nbr[self.indptr[node] : self.indptr[node + 1]]

    def edges_of(self, node: int) -> np.ndarray:
        """Edge rows of one node's entries, aligned with `neighbours(node)`."""
        return self.edge[self.indptr[node] : self.indptr[node + 1]]

    def gather(self, frontier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All (neighbour, edge) entries of a set of nodes at once, in frontier order."""
        starts = self.indptr[frontier]
        counts = self.indptr[frontier + 1] - starts
        total = int(counts.sum())
        if total == 0:
            return self.nbr[:0], self.edge[:0]
        if frontier.size == 1:
            start = int(starts[0])
            return self.nbr[start : start + total], self.edge[start : start + total]
        pos, _ = self.positions(frontier)
        return self.nbr[pos], self.edge[pos]

    def positions(self, frontier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The entry positions of a set of nodes, in frontier order, and each node's count.

        The repeat/cumsum trick: one `arange` over the total count, shifted per node to the
        start of its CSR slice.

        >>> csr = Csr.from_pairs(np.array([0, 0, 2]), np.array([1, 2, 0]), np.array([5, 6, 7]), 3)
        >>> pos, counts = csr.positions(np.array([2, 0]))
        >>> pos.tolist(), counts.tolist()
        ([2, 0, 1], [1, 2])
        """
        starts = self.indptr[frontier]
        counts = self.indptr[frontier + 1] - starts
        total = int(counts.sum())
        shift = starts - (np.cumsum(counts) - counts)
        return np.arange(total, dtype=np.int64) + np.repeat(shift, counts), counts


def _bits(count: int) -> int:
    """Bits needed to hold 0 .. count - 1."""
    return max(1, (count - 1).bit_length())


def _edge_dtype(bits: int) -> type[np.signedinteger]:
    return np.int32 if bits <= 31 else np.int64


def _codes(series: pl.Series, known: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Small-integer codes of a string column over `known` then any other values; null -> -1.

    >>> codes, vocab = _codes(pl.Series(["b", None, "zz"]), ["a", "b"])
    >>> codes.tolist(), vocab
    ([1, -1, 2], ('a', 'b', 'zz'))
    """
    try:
        # The closed vocabulary first: no `unique` pass over a big column in the common case.
        return _enum_codes(series, known), tuple(known)
    except pl.exceptions.InvalidOperationError:
        pass
    present = series.drop_nulls().unique().to_list()
    vocab = (*known, *sorted(set(present) - set(known)))
    return _enum_codes(series, vocab), vocab


def _enum_codes(series: pl.Series, vocab: Sequence[str]) -> np.ndarray:
    physical = series.cast(pl.String).cast(pl.Enum(list(vocab))).to_physical()
    return physical.cast(pl.Int16).fill_null(-1).to_numpy()


def _small_codes(series: pl.Series, known: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """`_codes` for a long column of a few distinct strings (kinds, tools), by hash.

    Hashing the column and finding each hash among the few known ones is a few times faster
    than an Enum cast; a value not known falls back to `_codes`. Null -> -1.

    >>> codes, vocab = _small_codes(pl.Series(["output", None, "output"]), ["input", "output"])
    >>> codes.tolist(), vocab
    ([1, -1, 1], ('input', 'output'))
    """
    if series.dtype == pl.Null or series.len() == 0:
        return np.full(series.len(), -1, np.int16), tuple(known)
    known_hashes = pl.Series(list(known), dtype=pl.String).hash(_HASH_SEED).to_numpy()
    order = np.argsort(known_hashes)
    ordered = known_hashes[order]
    hashes = series.hash(_HASH_SEED).to_numpy()
    pos = np.searchsorted(ordered, hashes).clip(0, order.size - 1)
    match = ordered[pos] == hashes
    codes = order[pos].astype(np.int16)
    if series.null_count():
        present = series.is_not_null().to_numpy()
        codes[~present] = -1
        match |= ~present
    if not match.all():
        return _codes(series, known)
    return codes, tuple(known)


def _epochs(series: pl.Series) -> np.ndarray:
    """Epoch microseconds of a datetime column, null -> ALWAYS."""
    if series.dtype == pl.Null:
        return np.full(series.len(), ALWAYS, np.int64)
    return series.dt.epoch("us").fill_null(ALWAYS).to_numpy()


def _column(frame: pl.DataFrame, name: str) -> pl.Series:
    if name in frame.columns:
        return frame.get_column(name)
    return pl.Series(name, [None] * frame.height, dtype=pl.Null)


def _resolve_ends(keys: pl.Series, edges: pl.DataFrame, *, hashed: bool) -> np.ndarray | None:
    """Dense ids of every edge end: `src` of row e at e, `dst` at m + e; -1 where not a node.

    `keys` are the node ids, or their hashes when `hashed`. One inner join of all 2m ends
    against them (on 64-bit hashes: several times faster than on strings), then one scatter
    back to each end's position. None when an end matched two nodes (a shared key).
    """
    ends = pl.concat([pl.col("src"), pl.col("dst")])
    ids = pl.DataFrame({"k": keys, "i": np.arange(keys.len(), dtype=np.int32)}).lazy()
    found = (
        edges.lazy()
        .select((ends.hash(_HASH_SEED) if hashed else ends).alias("k"))
        .with_row_index("r")
        .join(ids, on="k", how="inner")
        .select("r", "i")
        .collect()
    )
    dense = np.full(2 * edges.height, -1, np.int32)
    dense[found.get_column("r").to_numpy()] = found.get_column("i").to_numpy()
    if found.height != np.count_nonzero(dense >= 0):
        return None
    return dense


def _symmetric(s: np.ndarray, d: np.ndarray, e: np.ndarray, n: int) -> Csr:
    """A CSR holding each same_as edge both ways (a self-link once).

    Entries are tagged 2e (src -> dst) and 2e + 1 (dst -> src), then tagged back to edge rows.
    """
    if s.size == 0:
        return Csr.from_pairs(s, d, e, n)
    loop = s == d
    e64 = e.astype(np.int64)
    rows = np.concatenate([s, d[~loop]])
    cols = np.concatenate([d, s[~loop]])
    tags = np.concatenate([2 * e64, 2 * e64[~loop] + 1])
    csr = Csr.from_pairs(rows, cols, tags, n)
    return Csr(csr.indptr, csr.nbr, (csr.edge >> 1).astype(csr.edge.dtype))


@dataclass(eq=False)
class GraphIndex:
    """Dense ids, CSR adjacency both ways and filter arrays for one catalog generation.

    Build with `GraphIndex.build(nodes, edges)`; see the module docstring for an example.
    Node arrays are indexed by dense id (row of `nodes`), edge arrays by row of `edges`.
    """

    ids: pl.Series  # the nodes' id column: dense id -> id
    ids_sorted: bool  # dense order is id order (a canonical catalog): results need no sort
    node_kind: np.ndarray  # int16 code into `kinds`
    node_tool: np.ndarray  # int16 code into `tools`, -1 for null (code nodes)
    node_created: np.ndarray  # int64 epoch µs, ALWAYS for null
    kinds: tuple[str, ...]
    tools: tuple[str, ...]
    edge_src: np.ndarray  # int32 dense src, -1 where the edge was dropped
    edge_dst: np.ndarray  # int32 dense dst, -1 where the edge was dropped
    edge_kind: np.ndarray  # int16 code into `edge_kinds`
    edge_kinds: tuple[str, ...]
    edge_created: np.ndarray  # int64 epoch µs, ALWAYS for null
    forward: Csr  # src -> dst, lineage edges
    backward: Csr  # dst -> src, lineage edges
    same_as: Csr  # both ways, same_as edges
    has_same_as: np.ndarray  # bool per node: has a same_as entry
    dropped_edges: int
    _hashes: np.ndarray = field(repr=False)
    _hash_unique: bool = field(repr=False)
    _lookup_cache: tuple[np.ndarray, np.ndarray] | dict[str, int] | None = field(
        default=None, repr=False
    )
    _id_rank: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_nodes(self) -> int:
        return self.ids.len()

    @property
    def n_edges(self) -> int:
        """Rows of the edges frame, dropped ones included (edge rows index the frame)."""
        return int(self.edge_src.size)

    @classmethod
    def build(cls, nodes: pl.DataFrame, edges: pl.DataFrame) -> GraphIndex:
        """Index `nodes` and `edges` (frames with the schema of unify/schema.py).

        Edges whose src or dst is not a node are dropped (counted in `dropped_edges`).
        """
        ids = nodes.get_column("id")
        hashes = ids.hash(_HASH_SEED)
        n, m = nodes.height, edges.height
        ends = _resolve_ends(hashes, edges, hashed=True)
        hash_unique = ends is not None
        if ends is None:  # two ids share a hash (or an id is repeated): join the strings
            if ids.is_duplicated().any():
                raise ValueError("node ids must be unique")
            ends = _resolve_ends(ids, edges, hashed=False)
            assert ends is not None
        edge_src, edge_dst = ends[:m], ends[m:]
        kept = (edge_src >= 0) & (edge_dst >= 0)
        edge_src[~kept] = -1
        edge_dst[~kept] = -1
        edge_kind, edge_kinds = _small_codes(edges.get_column("kind"), list(EDGE_KINDS))
        same = edge_kind == edge_kinds.index(SAME_AS)
        lin = np.flatnonzero(kept & ~same)  # ascending rows: the gathers below stream
        sym = np.flatnonzero(kept & same)
        lin_src, lin_dst = edge_src[lin], edge_dst[lin]
        node_kind, kinds = _small_codes(nodes.get_column("kind"), list(NODE_KINDS))
        node_tool, tools = _small_codes(_column(nodes, "tool"), list(TOOLS))
        twins = _symmetric(edge_src[sym], edge_dst[sym], sym, n)
        return cls(
            ids=ids,
            ids_sorted=bool(ids.is_sorted()),
            node_kind=node_kind,
            node_tool=node_tool,
            node_created=_epochs(_column(nodes, "created_at")),
            kinds=kinds,
            tools=tools,
            edge_src=edge_src,
            edge_dst=edge_dst,
            edge_kind=edge_kind,
            edge_kinds=edge_kinds,
            edge_created=_epochs(_column(edges, "created_at")),
            forward=Csr.from_pairs(lin_src, lin_dst, lin, n),
            backward=Csr.from_pairs(lin_dst, lin_src, lin, n),
            same_as=twins,
            has_same_as=twins.degree > 0,
            dropped_edges=m - int(np.count_nonzero(kept)),
            _hashes=hashes.to_numpy(),
            _hash_unique=hash_unique,
        )

    def lookup(self, ids: Iterable[str] | pl.Series) -> np.ndarray:
        """Dense ids of node ids, -1 for an id that is not a node.

        The first call sorts the id hashes (about 0.1 s per million nodes); later calls cost a
        binary search per id and one string comparison to rule out hash collisions.
        """
        query = ids if isinstance(ids, pl.Series) else pl.Series("id", list(ids), dtype=pl.String)
        if query.len() == 0 or self.n_nodes == 0:
            return np.full(query.len(), -1, np.int64)
        if not self._hash_unique:
            return self._lookup_dict(query)
        if self._lookup_cache is None:
            order = np.argsort(self._hashes)
            ordered = self._hashes[order]
            if (ordered[1:] == ordered[:-1]).any():  # two ids share a hash
                self._hash_unique = False
                return self._lookup_dict(query)
            self._lookup_cache = (ordered, order)
        sorted_hashes, order = self._lookup_cache  # type: ignore[misc]
        wanted = query.hash(_HASH_SEED).to_numpy()
        pos = np.minimum(np.searchsorted(sorted_hashes, wanted), sorted_hashes.size - 1)
        found = order[pos].astype(np.int64)
        same_hash = sorted_hashes[pos] == wanted
        if query.len() <= 64:  # a few ids: Python compares them faster than a polars call
            names = zip(self.ids.gather(found).to_list(), query.to_list())
            same_id = np.fromiter((a == b for a, b in names), np.bool_, query.len())
        else:
            same_id = (self.ids.gather(found) == query.cast(pl.String)).fill_null(False).to_numpy()
        return np.where(same_hash & same_id, found, -1)

    def _lookup_dict(self, query: pl.Series) -> np.ndarray:
        # Only when two ids share a 64-bit hash: a dict costs ~0.7 s per million nodes, once.
        if not isinstance(self._lookup_cache, dict):
            self._lookup_cache = dict(zip(self.ids.to_list(), range(self.n_nodes)))
        table = self._lookup_cache
        return np.fromiter((table.get(x, -1) for x in query.to_list()), np.int64, query.len())

    @property
    def ranked(self) -> bool:
        """True once `id_rank` is at hand (always, for sorted ids)."""
        return self.ids_sorted or self._id_rank is not None

    @property
    def id_rank(self) -> np.ndarray:
        """Each node's position in id order (int32): dense order when `ids_sorted`.

        Computed on first use when the ids are not sorted: a string sort, about 0.5 s per
        million nodes, paid once per index rather than by every large result.
        """
        if self._id_rank is None:
            rank = np.empty(self.n_nodes, np.int32)
            if self.ids_sorted:
                rank[:] = np.arange(self.n_nodes, dtype=np.int32)
            else:
                rank[self.ids.arg_sort().to_numpy()] = np.arange(self.n_nodes, dtype=np.int32)
            self._id_rank = rank
        return self._id_rank

    def edge_kind_names(self, rows: np.ndarray) -> pl.Series:
        """The kind of each edge row, null where the row is -1.

        >>> import polars as pl
        >>> nodes = pl.DataFrame({"id": ["a", "b"], "kind": ["dataset", "run"]})
        >>> edges = pl.DataFrame({"src": ["a"], "dst": ["b"], "kind": ["input"]})
        >>> GraphIndex.build(nodes, edges).edge_kind_names(np.array([0, -1])).to_list()
        ['input', None]
        """
        codes = np.where(rows < 0, -1, self.edge_kind[rows]).astype(np.int64)
        codes[codes < 0] = len(self.edge_kinds)  # the null at the end of the vocabulary
        vocab = pl.Series("via_kind", [*self.edge_kinds, None], dtype=pl.String)
        return vocab.gather(codes)

    def kind_codes(self, kinds: Sequence[str]) -> np.ndarray:
        """Codes of node kinds; kinds no node has are left out."""
        return np.array([self.kinds.index(k) for k in kinds if k in self.kinds], np.int16)

    def tool_codes(self, tools: Sequence[str]) -> np.ndarray:
        """Codes of tools; tools no node has are left out."""
        return np.array([self.tools.index(t) for t in tools if t in self.tools], np.int16)
