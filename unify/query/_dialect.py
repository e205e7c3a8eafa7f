"""braid's SQL dialect: DuckDB's, with graph table functions, `:name` parameters and time travel.

DuckDB's parser already reads what braid needs (`name => value` arguments, list literals,
`FOR TIMESTAMP AS OF`); the dialect adds `FOR SYSTEM_TIME AS OF` after an alias, prints
parameters as `:name` and graph functions in lower case, and remembers the name each known
function was called by, which the binder checks against the allow-list.

>>> tree = parse("select id from upstream('mlflow:run/1', depth => 2) u where kind = :k")
>>> print(tree.sql(dialect=Braid))
SELECT id FROM upstream('mlflow:run/1', depth => 2) AS u WHERE kind = :k
>>> parse(tree.sql(dialect=Braid)) == tree
True
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ParseError, TokenError
from sqlglot.generators.duckdb import DuckDBGenerator
from sqlglot.parsers.duckdb import DuckDBParser

from ..errors import QueryError
from ._functions import GRAPH_FUNCTIONS

if TYPE_CHECKING:
    from sqlglot.tokens import Token

ORIGINAL_NAME = "braid_name"
_EXPLAIN = re.compile(r"^\s*explain\b", re.IGNORECASE)


class _Parser(DuckDBParser):
    def _parse_table(self, *args: Any, **kwargs: Any) -> exp.Expr | None:
        # `nodes AS n FOR SYSTEM_TIME AS OF …`: DuckDB reads the clause only before the alias
        # (`nodes FOR TIMESTAMP AS OF … AS n`); braid accepts both, as BigQuery users write it.
        table = super()._parse_table(*args, **kwargs)
        if isinstance(table, exp.Table) and not table.args.get("version"):
            version = self._parse_version()
            if version is not None:
                table.set("version", version)
        return table


class _Generator(DuckDBGenerator):
    NAMED_PLACEHOLDER_TOKEN = ":"

    def anonymous_sql(self, expression: exp.Anonymous) -> str:
        name = expression.name
        if name.lower() in GRAPH_FUNCTIONS:
            return self.func(name.lower(), *expression.expressions, normalize=False)
        return super().anonymous_sql(expression)

    def version_sql(self, expression: exp.Version) -> str:
        if expression.name == "TIMESTAMP" and expression.text("kind") == "AS OF":
            return f"FOR SYSTEM_TIME AS OF {self.sql(expression, 'expression')}"
        return super().version_sql(expression)


class Braid(DuckDB):
    """The dialect: `sqlglot.parse_one(sql, dialect=Braid)` or `tree.sql(dialect=Braid)`."""

    ORIGINAL_NAME_META_KEY = ORIGINAL_NAME
    Parser = _Parser
    Generator = _Generator


def parse(sql: str) -> exp.Expr:
    """One statement as a sqlglot tree; QueryError (with line and column) when it is not one.

    >>> parse("SELECT 1; SELECT 2")
    Traceback (most recent call last):
    braid.unify.errors.QueryError: line 1, column 11: one statement at a time: this is a second one
    """
    if not sql.strip():
        raise QueryError("the query is empty", hint="e.g. SELECT id, kind FROM nodes LIMIT 10")
    try:
        trees = [t for t in Braid().parse(sql) if t is not None]
    except TokenError:
        raise _token_error(sql) from None
    except ParseError as exc:
        raise _parse_error(sql, exc) from None
    if not trees:
        raise QueryError("the query is empty", query=sql)
    if len(trees) > 1:
        line, col = position(sql, _second_statement(sql))
        raise QueryError("one statement at a time: this is a second one", line=line, column=col, query=sql,
                         hint="run the statements one by one")
    return trees[0]


def split_explain(sql: str) -> tuple[bool, str]:
    """Whether the query starts with EXPLAIN, and the query with EXPLAIN blanked out.

    The word is replaced by spaces, not removed, so positions in errors stay those of the text
    the user wrote.

    >>> split_explain("EXPLAIN SELECT 1")
    (True, '        SELECT 1')
    """
    match = _EXPLAIN.match(sql)
    if not match:
        return False, sql
    return True, " " * match.end() + sql[match.end():]


def position(sql: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    offset = max(0, min(offset, len(sql)))
    line = sql.count("\n", 0, offset) + 1
    return line, offset - (sql.rfind("\n", 0, offset) + 1) + 1


def node_span(node: exp.Expr) -> tuple[int, int] | None:
    """(start offset, length) of a node in the query text: its own, or the span of the
    positioned nodes inside it (sqlglot positions names, literals and calls, not operators)."""
    meta = node.meta if node._meta else {}  # noqa: SLF001 - reading must not create empty metas
    if "start" in meta:
        return int(meta["start"]), int(meta["end"]) - int(meta["start"]) + 1
    spans = [(int(n.meta["start"]), int(n.meta["end"])) for n in node.walk()
             if n._meta and "start" in n.meta]  # noqa: SLF001
    if not spans:
        return None
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    return start, end - start + 1


def error_at(sql: str, node: exp.Expr | int | None, message: str, *, hint: str | None = None,
             length: int | None = None) -> QueryError:
    """A QueryError placed at a node (or a character offset) of the query."""
    span = (node, length or 1) if isinstance(node, int) else (node_span(node) if node is not None else None)
    if span is None:
        return QueryError(message, query=sql, hint=hint)
    line, col = position(sql, span[0])
    return QueryError(message, line=line, column=col, query=sql, hint=hint, length=length or span[1])


def _tokens(sql: str) -> list[Token]:
    return Braid().tokenize(sql)


def _second_statement(sql: str) -> int:
    from sqlglot.tokens import TokenType

    tokens = _tokens(sql)
    for i, tok in enumerate(tokens):
        if tok.token_type == TokenType.SEMICOLON and i + 1 < len(tokens):
            return tokens[i + 1].start
    return 0


def _parse_error(sql: str, exc: ParseError) -> QueryError:
    err = exc.errors[0] if exc.errors else {}
    line, col = int(err.get("line") or 0), int(err.get("col") or 0)
    highlight = str(err.get("highlight") or "")
    description = str(err.get("description") or exc).split("\n")[0]
    # sqlglot's column is that of the token's last character: point at its first instead
    if highlight and "\n" not in highlight:
        col = max(1, col - len(highlight) + 1)
    first = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    hint = None
    if first not in {"SELECT", "WITH", "(", "FROM", "VALUES"}:
        import difflib

        close = difflib.get_close_matches(first, ["SELECT", "WITH"], n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "a query starts with SELECT or WITH"
    if description.startswith("Required keyword: 'this' missing"):
        description = f"{highlight or 'the clause'} needs something after it"
    elif description.startswith("Invalid expression / Unexpected token"):
        description = f"unexpected {highlight!r}" if highlight else "unexpected end of the query"
    return QueryError(description, line=line, column=col, query=sql, hint=hint, length=len(highlight) or 1)


def _token_error(sql: str) -> QueryError:
    """Where tokenizing stopped: sqlglot says only that it failed, so find the open quote."""
    offset = _unterminated(sql)
    if offset is None:
        return QueryError("the query has a character sequence that is not SQL", query=sql)
    quote = sql[offset]
    what = {"'": "string", '"': "quoted name"}.get(quote, "comment")
    line, col = position(sql, offset)
    return QueryError(f"unterminated {what}: the {quote} here is never closed", line=line, column=col,
                      query=sql, hint=f"close it with {quote}" if what != "comment" else "close it with */")


def _unterminated(sql: str) -> int | None:
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = i + 1
            while True:
                j = sql.find(c, j)
                if j < 0:
                    return i
                if j + 1 < n and sql[j + 1] == c:  # a doubled quote is an escaped one
                    j += 2
                    continue
                break
            i = j + 1
        elif sql.startswith("--", i):
            k = sql.find("\n", i)
            i = n if k < 0 else k + 1
        elif sql.startswith("/*", i):
            k = sql.find("*/", i + 2)
            if k < 0:
                return i
            i = k + 2
        else:
            i += 1
    return None


__all__ = ["Braid", "error_at", "node_span", "parse", "position", "split_explain"]
