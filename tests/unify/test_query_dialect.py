"""The dialect and the binder without a catalog: round trips, and bad queries pointed at."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest

from braid.unify.errors import BraidError, QueryError
from braid.unify.query import SQL_FUNCTIONS, Braid, parse, reference
from braid.unify.query._binder import bind

DOCS = Path(__file__).parents[2] / "docs" / "query.md"

ROUND_TRIP = [
    "SELECT id, kind, depth FROM upstream('mlflow:model_version/churn/3', depth => 5, kinds => ['dataset', 'code'])",
    "SELECT d.id FROM downstream('dvc:dataset/data/raw.csv@1', stop_at => kind = 'model' AND tool = 'dvc') AS d",
    "SELECT * FROM paths((SELECT id FROM nodes WHERE name = 'raw.csv' LIMIT 1), :dst, max_paths => 3)",
    "SELECT * FROM upstream(:v, as_of => TIMESTAMP '2024-01-31 12:00:00', same_as => FALSE)",
    "WITH v AS (SELECT model_version_id FROM registry) SELECT u.id FROM v JOIN upstream('a') AS u ON u.start = v.model_version_id",
    "SELECT n.id FROM nodes AS n FOR SYSTEM_TIME AS OF '2024-01-01' WHERE n.kind = 'run'",
    "SELECT r.name, count(DISTINCT u.id) FROM registry AS r, upstream(r.model_version_id) AS u GROUP BY ALL",
    "SELECT id, row_number() OVER (PARTITION BY kind ORDER BY id) AS rn FROM nodes QUALIFY rn = 1",
    "SELECT key FROM params WHERE run_id = :a EXCEPT SELECT key FROM params WHERE run_id = :b",
]


@pytest.mark.parametrize("sql", ROUND_TRIP)
def test_round_trip(sql: str) -> None:
    tree = parse(sql)
    printed = tree.sql(dialect=Braid)
    assert parse(printed) == tree
    assert parse(printed).sql(dialect=Braid) == printed


def test_graph_functions_print_lower_case_and_params_as_colon_names() -> None:
    printed = parse("select * from UPSTREAM(:node, depth => 2)").sql(dialect=Braid)
    assert printed == "SELECT * FROM upstream(:node, depth => 2)"


# (query, line, column, message part, hint part)
BAD = [
    ("SELECT nme FROM nodes", 1, 8, "no column 'nme' in nodes", "did you mean 'name'?"),
    ("SELECT *\n  FROM runz", 2, 8, "no table 'runz'", "did you mean 'runs'?"),
    ("SELECT n.kid FROM nodes n", 1, 10, "n has no column 'kid'", "did you mean 'n.kind'?"),
    ("SELECT x.id FROM nodes n", 1, 8, "no table or alias 'x'", "the tables here are: n"),
    ("SELECT * FROM upstream('a', depht => 3)", 1, 29, "upstream() has no argument 'depht'", "did you mean depth =>?"),
    ("SELECT * FROM upstream('a',\n   depth => 'five')", 2, 13, "depth must be a whole number", None),
    ("SELECT * FROM upstream('a', depth => 0)", 1, 38, "depth must be a whole number, at least 1", None),
    ("SELECT * FROM upstream('a', kinds => ['datset'])", 1, 39, "kinds has no 'datset'", "did you mean 'dataset'?"),
    ("SELECT * FROM upstream('a', same_as => 'no')", 1, 40, "same_as must be true or false", None),
    ("SELECT * FROM upstream('a', as_of => 'yesterday')", 1, 38, "as_of must be TIMESTAMP", None),
    ("SELECT * FROM upstream('a', stop_at => knd = 'x')", 1, 40, "no column 'knd'", "did you mean 'kind'?"),
    ("SELECT * FROM upstream('a', 3)", 1, 29, "takes 1 positional argument (node)", None),
    ("SELECT * FROM paths('a')", 1, 15, "paths() needs to", None),
    ("SELECT * FROM upstrem('a')", 1, 15, "no table function upstrem()", "did you mean upstream?"),
    ("SELECT upstream('a')", 1, 8, "upstream() is a table function", None),
    ("SELECT lowr(name) FROM nodes", 1, 8, "no function lowr()", "did you mean lower?"),
    ("SELECT md5(id) FROM nodes", 1, 8, "no function md5()", None),
    ("SELECT * FROM read_csv('/etc/passwd')", 1, 15, "read_csv() reads files or the network", None),
    ("SELECT * FROM read_parquet('s3://bucket/x.parquet')", 1, 15, "read_parquet() reads files", None),
    ("SELECT id FROM nodes WHERE id = :nod", 1, 33, "no value for parameter :nod", "did you mean :node?"),
    ("SELECT id FROM nodes WHERE id = ?", 1, 33, "positional parameters are not supported", None),
    ("SELECT 'abc FROM nodes", 1, 8, "unterminated string", "close it with '"),
    ("SELECT id FROM nodes\nWHERE", 2, 1, "WHERE needs something after it", None),
    ("SELEC id FROM nodes", 1, 10, "unexpected 'FROM'", "did you mean SELECT?"),
    ("SELECT 1; SELECT 2", 1, 11, "one statement at a time", None),
    ("DROP TABLE nodes", 1, 1, "only SELECT queries run here: DROP writes", None),
    ("  DELETE FROM nodes", 1, 3, "DELETE writes", None),
    ("INSERT INTO nodes (id) VALUES ('x')", 1, 1, "INSERT writes", None),
    ("CREATE TABLE t AS SELECT 1", 1, 1, "CREATE writes", None),
    ("UPDATE nodes SET id = 'x'", 1, 1, "UPDATE writes", None),
    ("COPY nodes TO '/tmp/x.csv'", 1, 1, "COPY reads or writes files", None),
    ("ATTACH 'other.db'", 1, 1, "ATTACH opens another database", None),
    ("PRAGMA threads=1", 1, 1, "PRAGMA changes the session", None),
    ("SET threads = 1", 1, 1, "SET changes the session", None),
    ("INSTALL httpfs", 1, 1, "INSTALL downloads an extension", None),
    ("LOAD httpfs", 1, 1, "LOAD loads code or touches files", None),
    ("SELECT {'a': id} FROM nodes", 1, 14, "struct values cannot be built here", None),
    ("SELECT main.nodes.id FROM main.nodes", 1, 27, "braid's tables have plain names", None),
]


@pytest.mark.parametrize(("sql", "line", "column", "message", "hint"), BAD)
def test_bad_queries_are_pointed_at(sql: str, line: int, column: int, message: str, hint: str | None) -> None:
    with pytest.raises(QueryError) as caught:
        bind(parse(sql), sql, {"node": "x"})
    err = caught.value
    assert message in err.problem
    assert (err.line, err.column) == (line, column), str(err)
    if hint:
        assert err.hint == hint
    caret = err.caret().splitlines()
    assert caret[0].strip() == sql.splitlines()[line - 1].strip()
    assert caret[1].index("^") - 2 == column - 1


def test_every_declared_function_is_accepted() -> None:
    for fn in SQL_FUNCTIONS.values():
        table = "registry" if "aliases" in fn.example else "nodes"
        sql = f"SELECT {fn.example} FROM {table}"
        bind(parse(sql), sql)


def _fuzz_texts(n: int) -> list[str]:
    rng = random.Random(5)
    words = ["SELECT", "FROM", "WHERE", "upstream(", "paths(", "nodes", "'", '"', "(", ")", ",", "=>", ":p",
             "[", "]", "--", "/*", ";", "JOIN", "ON", "id", "*", "depth", "kind", "=", "GROUP BY", "\n", "{", "}"]
    texts = []
    for _ in range(n):
        if rng.random() < 0.5:
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))))
        else:
            texts.append("".join(rng.choice(string.printable) for _ in range(rng.randint(0, 40))))
    return texts


def test_random_text_never_produces_a_traceback() -> None:
    for text in _fuzz_texts(1500):
        try:
            bind(parse(text), text, {"p": "x"})
        except BraidError:
            pass


def test_hypothesis_fuzz() -> None:
    import hypothesis
    from hypothesis import strategies as st

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.text(max_size=60))
    def check(text: str) -> None:
        try:
            bind(parse(text), text, {"p": "x"})
        except BraidError:
            pass

    check()


def test_docs_page_is_generated_from_the_declarations() -> None:
    assert DOCS.read_text(encoding="utf-8") == reference(), "regenerate: python -m braid.unify.query.docs"
