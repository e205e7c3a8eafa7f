"""Fuzzy search over node names, ids, tools and kinds: a polars frame matched column-wise.

The index is one lower-cased "haystack" string per node (`name version kind tool id`) and
the lower-cased name. A query is split into words; every word must match. A word scores by
where it matches: the whole name (100), the start of the name (60), inside the name (40),
anywhere in the haystack (20), or as a subsequence of the name (10, "trn" finds "train") or
of the id (5).
The subsequence regex is the slow part on a million nodes, so it runs only when the literal
matches do not already fill the page (they would rank above it anyway). Each query first keeps
the rows that can match at all (one scan a word) and scores only those; typing on searches only
the rows the last key's query could match.

>>> import polars as pl
>>> index = SearchIndex(pl.DataFrame({"id": ["dvc:dataset/a/train.csv", "mlflow:run/1"],
...     "kind": ["dataset", "run"], "tool": ["dvc", "mlflow"], "name": ["train.csv", "tune"],
...     "version": [None, None], "created_at": [None, None]}))
>>> index.search("trn").tolist(), index.search("mlflow run").tolist()
([0], [1])
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from ._model import Filters

# what an empty search lists first: the things people usually start from
LANDING_KINDS = ("model_version", "model", "run", "dataset", "artifact", "code")
# the next key's search reads only the rows the last one could match, when at most this many
NARROW_ROWS = 200_000


class SearchIndex:
    """Precomputed search columns over the nodes frame; `search` returns dense ids, best first."""

    def __init__(self, nodes: pl.DataFrame) -> None:
        name = pl.col("name").fill_null("").str.to_lowercase()
        hay = pl.concat_str(
            [pl.col(c).fill_null("") for c in ("name", "version", "kind", "tool", "id")], separator=" "
        ).str.to_lowercase()
        created = pl.col("created_at") if "created_at" in nodes.columns else pl.lit(None)
        self.frame = nodes.select(
            pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), name.alias("name"), hay.alias("hay"),
            pl.col("id").str.to_lowercase().alias("id"),
            "kind", "tool", created.alias("created_at"),
        )
        # by fuzzy or not: the rows the last query could match (filters, words, rows), if few enough
        self._last: dict[bool, tuple[Filters | None, list[str], pl.DataFrame]] = {}

    def _filtered(self, filters: Filters | None) -> pl.LazyFrame:
        frame = self.frame.lazy()
        if filters is None:
            return frame
        if filters.tools:
            frame = frame.filter(pl.col("tool").is_in(sorted(filters.tools)))
        if filters.kinds:
            frame = frame.filter(pl.col("kind").is_in(sorted(filters.kinds)))
        if filters.as_of is not None:
            frame = frame.filter(pl.col("created_at").is_null() | (pl.col("created_at") <= filters.as_of))
        return frame

    def search(self, text: str, *, filters: Filters | None = None, limit: int = 50) -> np.ndarray:
        """Dense ids of the best `limit` matches of `text`; an empty text lists landing nodes."""
        words = text.lower().split()
        frame = self._filtered(filters)
        if not words:
            # by name within a kind: an order that does not hang on the tools' random ids
            picks = [frame.filter(pl.col("kind") == k).sort("name", "hay").head(limit) for k in LANDING_KINDS]
            found = pl.concat(picks).head(limit).collect()
            return found.get_column("row").to_numpy()
        literal = self._rank(frame, words, filters, fuzzy=False, limit=limit)
        if literal.height >= limit:
            return literal.get_column("row").to_numpy()
        return self._rank(frame, words, filters, fuzzy=True, limit=limit).get_column("row").to_numpy()

    def _narrowed(self, frame: pl.LazyFrame, words: list[str], filters: Filters | None, fuzzy: bool) -> pl.LazyFrame:
        """`frame`, or the rows the last query could match when those hold every row this one can:
        typing on narrows a search to the rows the last key left.

        A row this query matches matches the last one when each of the last query's words is
        part of a word of this one (a literal match of the longer word, or a subsequence, holds
        the shorter one), with the same filters, and the last query's rows were not cut to
        literal matches while this one may match fuzzily.
        """
        for kind in (False, True) if not fuzzy else (True,):
            last = self._last.get(kind)  # one read: a search still running in another thread may replace it
            if last is None:
                continue
            last_filters, last_words, rows = last
            if last_filters == filters and all(any(old in word for word in words) for old in last_words):
                return rows.lazy()
        return frame

    def _rank(self, frame: pl.LazyFrame, words: list[str], filters: Filters | None, *, fuzzy: bool,
              limit: int) -> pl.DataFrame:
        # A when/then chain computes every branch for every row: on a million nodes that is four
        # (six, fuzzy) string scans a word. So first keep the rows that can score at all, with one
        # scan a word (three, fuzzy): the name is the start of the haystack, so a literal match
        # anywhere is a match in the haystack. Then score only those.
        scores, can_match = [], []
        for word in words:
            hit = pl.col("hay").str.contains(word, literal=True)
            score = (
                pl.when(pl.col("name") == word).then(100)
                .when(pl.col("name").str.starts_with(word)).then(60)
                .when(pl.col("name").str.contains(word, literal=True)).then(40)
                .when(pl.col("hay").str.contains(word, literal=True)).then(20)
            )
            if fuzzy:
                pattern = ".*?".join(re.escape(ch) for ch in word)
                hit = hit | pl.col("name").str.contains(pattern) | pl.col("id").str.contains(pattern)
                score = (score.when(pl.col("name").str.contains(pattern)).then(10)
                         .when(pl.col("id").str.contains(pattern)).then(5))
            can_match.append(hit)
            scores.append(score.otherwise(0).alias(f"s{len(scores)}"))
        candidates = self._narrowed(frame, words, filters, fuzzy).filter(pl.all_horizontal(can_match)).collect()
        if candidates.height <= NARROW_ROWS:
            self._last[fuzzy] = (filters, words, candidates)
        else:
            self._last.pop(fuzzy, None)
        return (
            candidates.lazy()
            .with_columns(scores)
            .with_columns(pl.sum_horizontal([f"s{i}" for i in range(len(words))]).alias("score"),
                          pl.col("name").str.len_chars().alias("length"))
            .sort(["score", "length", "row"], descending=[True, False, False])
            .head(limit)
            .select("row")
            .collect()
        )


__all__ = ["LANDING_KINDS", "SearchIndex"]
