"""Fuzzy search over node names, ids, tools and kinds: a polars frame matched column-wise.

The index is one lower-cased "haystack" string per node (`name version kind tool id`) and
the lower-cased name. A query is split into words; every word must match. A word scores by
where it matches: the whole name (100), the start of the name (60), inside the name (40),
anywhere in the haystack (20), or as a subsequence of the name (10, "trn" finds "train") or
of the id (5).
The subsequence regex is the slow part on a million nodes, so it runs only when the literal
matches do not already fill the page (they would rank above it anyway).

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
        literal = self._rank(frame, words, fuzzy=False, limit=limit)
        if literal.height >= limit:
            return literal.get_column("row").to_numpy()
        return self._rank(frame, words, fuzzy=True, limit=limit).get_column("row").to_numpy()

    @staticmethod
    def _rank(frame: pl.LazyFrame, words: list[str], *, fuzzy: bool, limit: int) -> pl.DataFrame:
        scores = []
        for word in words:
            score = (
                pl.when(pl.col("name") == word).then(100)
                .when(pl.col("name").str.starts_with(word)).then(60)
                .when(pl.col("name").str.contains(word, literal=True)).then(40)
                .when(pl.col("hay").str.contains(word, literal=True)).then(20)
            )
            if fuzzy:
                pattern = ".*?".join(re.escape(ch) for ch in word)
                score = (score.when(pl.col("name").str.contains(pattern)).then(10)
                         .when(pl.col("id").str.contains(pattern)).then(5))
            scores.append(score.otherwise(0).alias(f"s{len(scores)}"))
        matched = pl.all_horizontal([pl.col(f"s{i}") > 0 for i in range(len(words))])
        return (
            frame.with_columns(scores)
            .filter(matched)
            .with_columns(pl.sum_horizontal([f"s{i}" for i in range(len(words))]).alias("score"),
                          pl.col("name").str.len_chars().alias("length"))
            .sort(["score", "length", "row"], descending=[True, False, False])
            .head(limit)
            .select("row")
            .collect()
        )


__all__ = ["LANDING_KINDS", "SearchIndex"]
