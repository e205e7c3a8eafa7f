"""The executor's rewrite rules (unify/query/_optimize.py), run by polars on frames made here:
a rewritten query gives the rows the query as written gives, and a rule leaves alone what it
cannot prove the same."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
from sqlglot import exp

from braid.unify.query._dialect import parse
from braid.unify.query._execute import polars_sql
from braid.unify.query._optimize import Frames, TopOne, integer_keys, top_one_tables


def rows(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return sorted(frame.rows(), key=repr)


@pytest.fixture(scope="module")
def tables() -> dict[str, pl.DataFrame]:
    """Runs with metric histories full of ties: several rows of a run and key share a step."""
    rng = np.random.default_rng(7)
    runs = pl.DataFrame({
        "id": [f"t:run/{i:03d}" for i in range(60)],
        "name": [f"run-{i % 17}" for i in range(60)],  # names repeat: not a key
        "tool": rng.choice(["mlflow", "wandb", "dvc"], 60).tolist(),
    })
    n = 900
    metrics = pl.DataFrame({
        "run_id": rng.choice(runs["id"].to_list() + ["t:run/gone"], n).tolist(),  # one run not in runs
        "key": rng.choice(["acc", "loss"], n).tolist(),
        "step": rng.integers(0, 4, n),  # few steps: ties
        "value": rng.random(n).round(3),
    }).with_columns(step=pl.when(pl.int_range(n) % 50 == 0).then(None).otherwise("step"))  # some nulls
    return {"runs": runs, "metrics": metrics}


def run_sql(frames: dict[str, pl.DataFrame], tree: exp.Expr) -> pl.DataFrame:
    return pl.SQLContext(frames=frames).execute(polars_sql(tree), eager=True)


def with_top_one(tables: dict[str, pl.DataFrame], sql: str) -> tuple[exp.Expr, dict[str, pl.DataFrame], list[TopOne]]:
    frames = dict(tables)
    made: list[TopOne] = []

    def register(spec: TopOne) -> str:
        made.append(spec)
        name = f"__top_{len(made)}"
        frames[name] = pl.SQLContext(frames={spec.table: tables[spec.table]}).execute(spec.sql(), eager=True)
        return name

    return top_one_tables(parse(sql), set(tables), register, polars_sql), frames, made


# Each query's first columns are decided by the rows (ties only choose among equal ones).
TOP_ONE_APPLIES = [
    # issue 5's example 4: the partition is runs' key, which the join equates with metrics.run_id
    "SELECT r.name, m.step FROM runs r JOIN metrics m ON m.run_id = r.id WHERE m.key = 'acc' "
    "QUALIFY row_number() OVER (PARTITION BY r.id ORDER BY m.step DESC) = 1",
    # the join written the other way round, the condition on the other table, `<= 1`
    "SELECT r.id, m.step FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.tool = 'wandb' AND 'loss' = m.key "
    "QUALIFY row_number() OVER (PARTITION BY m.run_id ORDER BY m.step) <= 1",
    # one table, the partition spelt out, ascending with nulls
    "SELECT run_id, key, step FROM metrics QUALIFY row_number() OVER (PARTITION BY run_id, key ORDER BY step) = 1",
    # a condition on a partition column, more QUALIFY conditions kept
    "SELECT run_id, key, step FROM metrics WHERE run_id <> 't:run/001' "
    "QUALIFY row_number() OVER (PARTITION BY run_id, key ORDER BY step DESC NULLS LAST) = 1 AND key = 'acc'",
]


@pytest.mark.parametrize("sql", TOP_ONE_APPLIES)
def test_top_one_tables_give_the_rows_of_the_window(tables: dict[str, pl.DataFrame], sql: str) -> None:
    want = run_sql(tables, parse(sql))
    tree, frames, made = with_top_one(tables, sql)
    assert made and "ROW_NUMBER" not in polars_sql(tree).split("QUALIFY")[0].split("FROM", 1)[1]
    got = run_sql(frames, tree)
    assert got.height == want.height > 0
    assert rows(got) == rows(want)


def test_a_tied_top_one_is_one_of_the_tied_rows(tables: dict[str, pl.DataFrame]) -> None:
    sql = ("SELECT r.id, m.step, m.value FROM runs r JOIN metrics m ON m.run_id = r.id WHERE m.key = 'acc' "
           "QUALIFY row_number() OVER (PARTITION BY r.id ORDER BY m.step DESC) = 1")
    tree, frames, _ = with_top_one(tables, sql)
    got = run_sql(frames, tree)
    history = tables["metrics"].filter(key="acc").join(tables["runs"], left_on="run_id", right_on="id")
    top = history.sort("step", descending=True, nulls_last=False).group_by("run_id").first()
    assert sorted(got["id"].to_list()) == sorted(top["run_id"].to_list())  # one row per run that has the key
    for run, step, value in got.iter_rows():
        tied = history.filter(pl.col("run_id") == run, pl.col("step").eq_missing(step))["value"].to_list()
        assert value in tied
        assert step == top.filter(run_id=run)["step"].item()


TOP_ONE_REFUSED = [
    # a condition on a metrics column outside the partition drops rows inside partitions
    "SELECT r.id, m.value FROM runs r JOIN metrics m ON m.run_id = r.id WHERE m.value > 0.5 "
    "QUALIFY row_number() OVER (PARTITION BY r.id ORDER BY m.step DESC) = 1",
    # an outer join keeps metrics rows of runs that are not there
    "SELECT r.id, m.value FROM metrics m LEFT JOIN runs r ON r.id = m.run_id "
    "QUALIFY row_number() OVER (PARTITION BY m.run_id ORDER BY m.step DESC) = 1",
    # runs joined on a column that is not its key: a metrics row meets several runs
    "SELECT r.id, m.value FROM runs r JOIN metrics m ON m.run_id = r.name "
    "QUALIFY row_number() OVER (PARTITION BY m.run_id ORDER BY m.step DESC) = 1",
    # partitioned by a runs column the join does not tie to metrics
    "SELECT r.tool, m.value FROM runs r JOIN metrics m ON m.run_id = r.id "
    "QUALIFY row_number() OVER (PARTITION BY r.tool ORDER BY m.step DESC) = 1",
    # the partition misses the join column: rows of one partition meet different runs
    "SELECT m.key, m.value FROM runs r JOIN metrics m ON m.run_id = r.id WHERE r.tool = 'dvc' "
    "QUALIFY row_number() OVER (PARTITION BY m.key ORDER BY m.step DESC) = 1",
    # another window reads the rows the filter would drop
    "SELECT run_id, count(*) OVER (PARTITION BY run_id) AS n FROM metrics "
    "QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY step) = 1",
    # rank 2, and ordered by columns of two tables
    "SELECT run_id FROM metrics QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY step) = 2",
    "SELECT r.id FROM runs r JOIN metrics m ON m.run_id = r.id "
    "QUALIFY row_number() OVER (PARTITION BY r.id ORDER BY m.step, r.name) = 1",
]


@pytest.mark.parametrize("sql", TOP_ONE_REFUSED)
def test_top_one_tables_leave_other_windows_alone(tables: dict[str, pl.DataFrame], sql: str) -> None:
    before = parse(sql).sql()

    def register(spec: TopOne) -> str:
        raise AssertionError(f"rewritten: {spec}")

    assert top_one_tables(parse(sql), set(tables), register, polars_sql).sql() == before


# -- integer keys ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, pl.DataFrame], Frames]:
    """nodes and edges, each with keyed variants whose twins number the ids (null stays null)."""
    rng = np.random.default_rng(3)
    ids = [f"g:node/{i:02d}" for i in range(40)]
    code = {v: i * 7 + 3 for i, v in enumerate(ids)}  # any one-to-one numbering will do
    nodes = pl.DataFrame({"id": ids, "kind": rng.choice(["dataset", "run"], 40).tolist(),
                          "tool": rng.choice(["mlflow", "dvc", None], 40).tolist()})
    m = 120
    edges = pl.DataFrame({"src": rng.choice(ids, m).tolist(), "dst": rng.choice([*ids, None], m).tolist(),
                          "kind": rng.choice(["input", "output", "same_as"], m).tolist()})

    def twins(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
        return frame.with_columns(pl.col(c).replace_strict(code, default=None, return_dtype=pl.Int64)
                                  .alias(f"__key_{c}") for c in columns)

    frames = {"nodes": nodes, "edges": edges, "nodes__keyed": twins(nodes, ["id"]),
              "edges__keyed": twins(edges, ["src", "dst"])}
    return frames, Frames(
        {"nodes": nodes.columns, "edges": edges.columns},
        {"nodes": ("nodes__keyed", {"id": "__key_id"}),
         "edges": ("edges__keyed", {"src": "__key_src", "dst": "__key_dst"})},
    )


KEYED_QUERIES = [
    # issue 5's example 7: twins through UNION ALL, UNION, a self-join and DISTINCT
    "WITH link AS (SELECT src AS a, dst AS b FROM edges WHERE kind = 'same_as' "
    "UNION ALL SELECT dst AS a, src AS b FROM edges WHERE kind = 'same_as'), "
    "twin AS (SELECT a, b FROM link UNION SELECT l1.a, l2.b FROM link l1 JOIN link l2 ON l2.a = l1.b WHERE l2.b <> l1.a), "
    "shared AS (SELECT DISTINCT t.a AS id FROM twin t JOIN nodes x ON x.id = t.a JOIN nodes y ON y.id = t.b "
    "WHERE x.kind = 'dataset' AND x.tool <> y.tool) "
    "SELECT DISTINCT e.src, e.dst FROM edges e JOIN shared s ON s.id = e.src WHERE e.kind = 'input'",
    # a derived table, IS DISTINCT FROM with nulls, count(DISTINCT), PARTITION BY
    "SELECT d.src, count(DISTINCT d.dst) AS n FROM (SELECT src, dst FROM edges WHERE kind <> 'same_as') d "
    "JOIN nodes x ON x.id = d.src WHERE d.dst IS DISTINCT FROM d.src GROUP BY d.src",
    "SELECT e.src, e.dst, row_number() OVER (PARTITION BY e.dst ORDER BY e.src, e.kind) AS k FROM edges e",
    # a LEFT JOIN keeps unmatched rows with null twins; an IN subquery runs on strings
    "SELECT n.id, e.dst FROM nodes n LEFT JOIN edges e ON e.src = n.id AND e.kind = 'output' "
    "WHERE n.id IN (SELECT dst FROM edges WHERE kind = 'input')",
    # unqualified columns of a single source, a grouped CTE (offers no twins), a scalar subquery
    "WITH g AS (SELECT src, count(*) AS c FROM edges GROUP BY src) "
    "SELECT g.src, g.c, (SELECT count(*) FROM nodes WHERE id = g.src) AS here, e.kind "
    "FROM g JOIN nodes n ON n.id = g.src JOIN edges e ON e.dst = n.id",
]


@pytest.mark.parametrize("sql", KEYED_QUERIES)
def test_integer_keys_give_the_rows_of_the_strings(graph: tuple[dict[str, pl.DataFrame], Frames], sql: str) -> None:
    frames, known = graph
    want = run_sql(frames, parse(sql))
    tree = integer_keys(parse(sql), known)
    text = polars_sql(tree)
    assert "__key_" in text  # the rule did something to check
    got = run_sql(frames, tree)
    assert got.columns == want.columns
    assert rows(got) == rows(want) and want.height


@pytest.mark.parametrize("sql", [
    "WITH l AS (SELECT src AS a, dst AS b FROM edges) SELECT * FROM l JOIN nodes n ON n.id = l.a",
    "WITH l AS (SELECT src AS a FROM edges) SELECT l.*, n.kind FROM l JOIN nodes n ON n.id = l.a",
    "SELECT * FROM (SELECT src FROM edges) s JOIN nodes n ON n.id = s.src",
    "SELECT e.*, n.id FROM edges e JOIN nodes n ON n.id = e.dst",
])
def test_twins_never_show_through_a_star(graph: tuple[dict[str, pl.DataFrame], Frames], sql: str) -> None:
    frames, known = graph
    want = run_sql(frames, parse(sql))
    got = run_sql(frames, integer_keys(parse(sql), known))
    assert not [c for c in got.columns if c.startswith("__key_")]
    assert got.columns == want.columns and rows(got) == rows(want)
