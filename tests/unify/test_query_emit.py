"""`--emit`: the query as another engine's SQL; the DuckDB form, run by duckdb over the catalog's
Parquet files, gives the rows Catalog.query gives."""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl
import pytest

from braid.unify import Catalog
from braid.unify.errors import QueryError
from braid.unify.query import emit_sql
from braid.unify.query._reference import EXAMPLES
from tests.unify.test_query import NEW_TRAIN, NEW_VERSION, OLD_DATASET, OLD_TRAIN, cat, facts, workspace  # noqa: F401


def cases(f: dict[str, Any], c: Catalog) -> list[tuple[str, dict[str, Any]]]:
    dataset = c.edges.filter(dst=f["train"], kind="input")["src"].item()
    return [
        (EXAMPLES[0][1], {"model_version": f["v2"]}),
        (EXAMPLES[1][1], {"dataset": dataset}),
        (EXAMPLES[3][1], {"metric": "loss"}),
        (EXAMPLES[4][1], {"run_a": f["train"], "run_b": OLD_TRAIN}),
        (EXAMPLES[5][1], {"model_version": f["v2"], "moment": c.node(f["v2"])["created_at"]}),
        (EXAMPLES[2][1], {"dataset": OLD_DATASET, "model_version": NEW_VERSION}),
        (EXAMPLES[7][1], {}),
        ("SELECT id, kind FROM nodes FOR SYSTEM_TIME AS OF :t ORDER BY id", {"t": c.node(f["v2"])["created_at"]}),
        ("SELECT e.src, e.dst FROM edges FOR SYSTEM_TIME AS OF :t e", {"t": c.node(f["v2"])["created_at"]}),
        ("SELECT p.run_id, p.key FROM params p FOR SYSTEM_TIME AS OF :t", {"t": c.node(f["v2"])["created_at"]}),
        ("SELECT id, depth, via_kind FROM upstream(:v) WHERE kind <> 'code'", {"v": NEW_VERSION}),
        ("SELECT id, depth FROM downstream(:d, same_as => false)", {"d": OLD_DATASET}),
        ("SELECT id, depth FROM upstream(:v, stop_at => kind = 'run')", {"v": f["v2"]}),
        ("SELECT u.id, r.name FROM upstream((SELECT model_version_id FROM registry WHERE source = 'mlflow'), "
         "kinds => ['run']) u JOIN runs r ON r.id = u.id", {}),
        # what the executor rewrites (integer node keys, a top-1 table, a walk without edges)
        (EXAMPLES[6][1].replace("x.tool <> y.tool", "x.source <> y.source"), {}),
        ("SELECT r.name, m.key, m.step FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.source <> 'new' "
         "QUALIFY row_number() OVER (PARTITION BY m.run_id, m.key ORDER BY m.step DESC, m.timestamp DESC) = 1", {}),
        ("SELECT r.name, u.id, u.depth, u.start FROM registry r, upstream(r.model_version_id, kinds => ['run']) u", {}),
    ]


def rows(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return sorted(frame.rows(), key=repr)


def test_duckdb_form_gives_the_same_rows(cat: Catalog, facts: dict[str, Any]) -> None:  # noqa: F811
    for sql, params in cases(facts, cat):
        ours = cat.query(sql, params)
        text = emit_sql(cat, sql, params, engine="duckdb")
        assert "read_parquet" in text.lower()
        theirs = duckdb.sql(text).pl()
        assert theirs.columns == ours.columns, sql
        assert rows(theirs) == rows(ours), sql
        assert ours.height or "as_of" in sql or "differ" in sql, sql


@pytest.mark.parametrize("engine", ["spark", "trino", "postgres"])
def test_other_engines_get_recursive_sql_or_a_note(cat: Catalog, engine: str) -> None:  # noqa: F811
    text = emit_sql(cat, "SELECT id FROM upstream(:v, depth => 2)", {"v": NEW_VERSION}, engine=engine)
    assert "WITH RECURSIVE" in text
    if engine == "spark":
        assert "parquet.`" in text and "Spark 4.1" in text
    else:
        assert "read_parquet" not in text.lower() and "--   nodes: " in text


def test_what_has_no_emitted_form_says_so(cat: Catalog) -> None:  # noqa: F811
    with pytest.raises(QueryError, match=r"one node id at each end") as err:
        emit_sql(cat, "SELECT * FROM paths((SELECT id FROM nodes), :b)", {"b": NEW_VERSION})
    assert 21 <= err.value.column <= 43  # inside the subquery
    with pytest.raises(QueryError, match="EXPLAIN has no --emit form"):
        emit_sql(cat, "EXPLAIN SELECT id FROM nodes")
    assert NEW_TRAIN  # the fixtures' ids are shared with test_query
