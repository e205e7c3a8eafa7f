"""The binder: checks a parsed query against the declarations before anything runs.

Only a query (SELECT, set operations, CTEs) passes; every table, column, function and graph
function argument must be declared; parameters are replaced by literals in the tree (never
pasted into SQL text). Each check is one function over the tree; the first problem found is
raised as a QueryError placed at the offending node, with the close name that was probably
meant.

>>> from braid.unify.query._dialect import parse
>>> sql = "SELECT nme FROM nodes"
>>> bind(parse(sql), sql)
Traceback (most recent call last):
braid.unify.errors.QueryError: line 1, column 8: no column 'nme' in nodes
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import cache
from typing import Any

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from ..errors import QueryError
from ._dialect import ORIGINAL_NAME, error_at, node_span, parse
from ._functions import (
    ARG_TYPES,
    FILE_FUNCTIONS,
    GRAPH_FUNCTIONS,
    SQL_FUNCTIONS,
    TABLE_COLUMNS,
    Arg,
    GraphFunction,
)

ParamValue = str | int | float | bool | None | datetime | date | list[str]

# Statements refused, and why. The root must be a query; this only chooses the words.
_REFUSED_STATEMENTS: dict[str, str] = {
    "Create": "writes", "Insert": "writes", "Update": "writes", "Delete": "writes", "Drop": "writes",
    "Merge": "writes", "Alter": "writes", "TruncateTable": "writes", "Copy": "reads or writes files",
    "Attach": "opens another database", "Detach": "changes the session", "Pragma": "changes the session",
    "Set": "changes the session", "Install": "downloads an extension", "Use": "changes the session",
    "Transaction": "changes the session", "Commit": "changes the session", "Describe": "is not a query",
}

# Syntax that sqlglot models as functions but the user did not call by name.
_SYNTAX_FUNCTIONS: tuple[type[exp.Expr], ...] = (
    exp.Cast, exp.TryCast, exp.Case, exp.Array, exp.Extract, exp.CurrentDate, exp.CurrentTimestamp,
    exp.If, exp.Interval, exp.Exists, exp.Unnest,
)
# Syntax the executor (polars SQL) cannot run, refused with the reason rather than at run time.
_UNSUPPORTED_SYNTAX: dict[type[exp.Expr], tuple[str, str]] = {
    exp.Struct: ("struct values cannot be built here: polars SQL has no struct constructor",
                 "select the fields as separate columns"),
    exp.JSONExtract: ("JSON paths are not supported: attrs and events are JSON text",
                      "match the text instead, e.g. attrs LIKE '%\"evidence\": \"digest\"%'"),
    exp.JSONExtractScalar: ("JSON paths are not supported: attrs and events are JSON text",
                            "match the text instead, e.g. attrs LIKE '%\"evidence\": \"digest\"%'"),
}
_SUGGEST_CUTOFF = 0.6


@dataclass
class GraphCall:
    """One graph function call in FROM/JOIN: the table node it replaces and its arguments."""

    function: GraphFunction
    table: exp.Table
    alias: str
    args: dict[str, exp.Expr] = field(default_factory=dict)


@dataclass
class Bound:
    """A checked query: the tree (parameters bound), its graph calls and the tables it reads."""

    tree: exp.Expr
    sql: str
    calls: list[GraphCall]
    tables: set[str]


def bind(tree: exp.Expr, sql: str, params: Mapping[str, ParamValue] | None = None) -> Bound:
    """Check `tree` (parsed from `sql`) and bind `params`; QueryError at the first problem."""
    check_statement(tree, sql)
    tree = bind_params(tree, sql, params or {})
    check_functions(tree, sql)
    calls = graph_calls(tree, sql)
    tables = check_sources(tree, sql)
    check_columns(tree, sql)
    return Bound(tree, sql, calls, tables)


# -- statements -----------------------------------------------------------------------------------
def check_statement(tree: exp.Expr, sql: str) -> None:
    """Only a query: SELECT, UNION/EXCEPT/INTERSECT, with CTEs."""
    if isinstance(tree, exp.Query) and not isinstance(tree, exp.Command):
        for node in tree.walk():
            if isinstance(node, (exp.DML, exp.DDL)) and not isinstance(node, exp.Query):
                raise _refused(sql, node)
        return
    raise _refused(sql, tree)


def _refused(sql: str, node: exp.Expr) -> QueryError:
    kind = type(node).__name__
    word = node.name.upper() if isinstance(node, exp.Command) else _first_word(sql)
    why = _REFUSED_STATEMENTS.get(kind, "is not a query")
    if isinstance(node, exp.Command) and word in {"LOAD", "INSTALL", "CALL", "EXPORT", "IMPORT", "VACUUM"}:
        why = "loads code or touches files"
    offset = len(sql) - len(sql.lstrip())
    return error_at(sql, offset, f"only SELECT queries run here: {word} {why}", length=len(word) or 1,
                    hint="braid reads the catalog; `braid sync` is what writes it")


def _first_word(sql: str) -> str:
    words = sql.split(None, 1)
    return words[0].upper() if words else ""


# -- parameters -----------------------------------------------------------------------------------
def bind_params(tree: exp.Expr, sql: str, params: Mapping[str, ParamValue]) -> exp.Expr:
    """Each `:name` replaced by its value as a literal node: values never become SQL text."""
    for node in list(tree.find_all(exp.Placeholder)):
        name = node.name
        where = _placeholder_offset(sql, name)
        if not name.isidentifier():
            raise error_at(sql, where, "positional parameters are not supported: name them, e.g. :run",
                           hint="pass values with --param run=… or params={'run': …}")
        if name not in params:
            given = sorted(params)
            close = difflib.get_close_matches(name, given, n=1)
            hint = (f"did you mean :{close[0]}?" if close else
                    f"give it with --param {name}=VALUE (or params={{'{name}': …}})")
            raise error_at(sql, where, f"no value for parameter :{name}", hint=hint, length=len(name) + 1)
        node.replace(_literal(params[name], sql, node))
    return tree


def _placeholder_offset(sql: str, name: str) -> int | None:
    """Where `:name` is written: sqlglot keeps no position for placeholders."""
    pattern = rf"(?<![:\w])[:$]{re.escape(name)}(?!\w)" if name.isidentifier() else r"\?|\$\d+"
    match = re.search(pattern, sql)
    return match.start() if match else None


def _literal(value: ParamValue, sql: str, node: exp.Expr) -> exp.Expr:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return exp.cast(exp.Literal.string(moment.isoformat()), exp.DataType.build("TIMESTAMPTZ"))
    if isinstance(value, date):
        return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.build("DATE"))
    if isinstance(value, (list, tuple)):
        return exp.Array(expressions=[_literal(v, sql, node) for v in value])
    if value is None or isinstance(value, (str, int, float, bool)):
        return exp.convert(value)
    raise error_at(sql, node, f"parameter :{node.name} has a {type(value).__name__}, which SQL cannot hold",
                   hint="give a string, number, boolean, timestamp or list of strings")


# -- functions ------------------------------------------------------------------------------------
@cache
def _allowed_classes() -> frozenset[type[exp.Expr]]:
    """The sqlglot classes the declared functions' examples parse to: the allow-list by class."""
    classes: set[type[exp.Expr]] = set(_SYNTAX_FUNCTIONS)
    for fn in SQL_FUNCTIONS.values():
        for node in parse(f"SELECT {fn.example}").find_all(exp.Func):
            if not isinstance(node, exp.Anonymous):
                classes.add(type(node))
    return frozenset(classes)


def call_name(node: exp.Func) -> str:
    """The name a function was called by, as written where sqlglot kept it."""
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    original = node.meta.get(ORIGINAL_NAME) if node._meta else None  # noqa: SLF001
    return str(original).lower() if original else node.sql_names()[0].lower()


def check_functions(tree: exp.Expr, sql: str) -> None:
    """Every call is a declared SQL function, or a graph function used as a table."""
    allowed = _allowed_classes()
    for node in tree.find_all(exp.Func):
        name = call_name(node)
        in_from = isinstance(node.parent, exp.Table) and node.arg_key == "this"
        if name in GRAPH_FUNCTIONS:
            if not in_from:
                raise error_at(sql, node, f"{name}() is a table function: use it in FROM or JOIN",
                               hint=f"e.g. SELECT * FROM {GRAPH_FUNCTIONS[name].signature()}")
            continue
        if name in FILE_FUNCTIONS:
            raise error_at(sql, node, f"{name}() reads files or the network: a braid query reads only the "
                           "catalog's tables", hint="the tables are: " + ", ".join(TABLE_COLUMNS))
        if type(node) in _UNSUPPORTED_SYNTAX:
            message, hint = _UNSUPPORTED_SYNTAX[type(node)]
            raise error_at(sql, node, message, hint=hint)
        if isinstance(node, exp.Array) and any(not isinstance(e, exp.Literal) and not _is_null(e)
                                               for e in node.expressions):
            raise error_at(sql, node, "a list literal can hold only constants here (polars SQL)",
                           hint="use array_agg(...) to build a list from rows")
        if isinstance(node, exp.Anonymous) or (node._meta and ORIGINAL_NAME in node.meta):  # noqa: SLF001
            if name in SQL_FUNCTIONS:
                continue
        elif isinstance(node, (exp.Binary, exp.Unary, exp.Connector)) or type(node) in allowed:
            continue  # an operator (AND, ||, **) or syntax that maps to a declared function
        if in_from:
            candidates: Iterable[str] = GRAPH_FUNCTIONS
            hint = _did_you_mean(name, candidates) or ("table functions: " + ", ".join(GRAPH_FUNCTIONS))
            raise error_at(sql, node, f"no table function {name}()", hint=hint)
        hint = _did_you_mean(name, SQL_FUNCTIONS) or "see `braid query --help` for the functions"
        raise error_at(sql, node, f"no function {name}() in braid's SQL", hint=hint)


def _is_null(node: exp.Expr) -> bool:
    return isinstance(node, exp.Null) or (isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal))


def _did_you_mean(name: str, candidates: Iterable[str], *, prefix: str = "", suffix: str = "") -> str | None:
    close = difflib.get_close_matches(name.lower(), list(candidates), n=1, cutoff=_SUGGEST_CUTOFF)
    return f"did you mean {prefix}{close[0]}{suffix}?" if close else None


# -- graph function calls -------------------------------------------------------------------------
def lateral_join(call: GraphCall, column: exp.Column, sql: str, *, known: Callable[[str], bool]) -> exp.Table:
    """`FROM registry r, upstream(r.model_version_id) u`: the table the column belongs to, with
    the join rewritten to `ON u.start = r.model_version_id` (one walk per start, each row tagged
    with its `start`). The executor and the --emit form both rewrite it so."""
    join = call.table.parent
    select = call.table.find_ancestor(exp.Select)
    sources: list[exp.Expr] = []
    if isinstance(join, exp.Join) and select is not None:
        from_ = select.args.get("from_") or select.args.get("from")
        joins = select.args.get("joins") or []
        sources = [from_.this, *(j.this for j in joins[: joins.index(join)])] if from_ else []
    source = next((s for s in sources if isinstance(s, exp.Table) and s.alias_or_name == column.table), None)
    if source is None or not isinstance(join, exp.Join) or not known(source.name):
        raise error_at(sql, column, f"{column.sql()} must be a column of a catalog table before "
                       f"{call.function.name}() in the same FROM", hint="e.g. FROM registry r, upstream(r.model_id) u")
    on = exp.column("start", table=call.alias).eq(column.copy())
    condition = join.args.get("on")
    join.set("on", on if condition is None else exp.and_(on, condition))
    if not join.args.get("kind") and not join.args.get("side"):
        join.set("kind", "INNER" if condition is None else join.args.get("kind"))
    return source


def graph_calls(tree: exp.Expr, sql: str) -> list[GraphCall]:
    """The graph function calls, arguments checked against their declarations, in tree order.

    Unaliased calls are given their function's name as alias, so `upstream.depth` works.
    """
    calls = []
    for table in tree.find_all(exp.Table):
        fn_node = table.this
        if not isinstance(fn_node, exp.Anonymous) or fn_node.name.lower() not in GRAPH_FUNCTIONS:
            continue
        fn = GRAPH_FUNCTIONS[fn_node.name.lower()]
        if not table.alias:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(fn.name)))
        call = GraphCall(fn, table, table.alias, _call_args(fn, fn_node, sql))
        calls.append(call)
    return calls


def _call_args(fn: GraphFunction, node: exp.Anonymous, sql: str) -> dict[str, exp.Expr]:
    args: dict[str, exp.Expr] = {}
    positional = fn.positional
    seen_named = False
    for i, arg in enumerate(node.expressions):
        if isinstance(arg, exp.Kwarg):
            seen_named = True
            name = arg.this.name.lower()
            spec = fn.arg_index.get(name)
            where = _kwarg_offset(sql, node, arg.this.name)
            if spec is None:
                hint = _did_you_mean(name, fn.arg_index, suffix=" =>") or ("arguments: " + ", ".join(fn.arg_index))
                raise error_at(sql, where if where is not None else arg, f"{fn.name}() has no argument {name!r}",
                               hint=hint, length=len(name))
            if name in args:
                raise error_at(sql, where if where is not None else arg, f"argument {name!r} is given twice",
                               length=len(name))
            args[name] = _check_arg(fn, spec, arg.expression, sql)
            continue
        if seen_named:
            raise error_at(sql, arg, "a positional argument after named ones",
                           hint=f"write it as {fn.signature()}")
        if i >= len(positional):
            names = ", ".join(a.name for a in positional)
            raise error_at(sql, arg, f"{fn.name}() takes {len(positional)} positional argument"
                           f"{'s' if len(positional) > 1 else ''} ({names}); name the others",
                           hint=f"e.g. {fn.signature()}")
        spec = positional[i]
        args[spec.name] = _check_arg(fn, spec, arg, sql)
    missing = [a.name for a in fn.args if a.required and a.name not in args]
    if missing:
        raise error_at(sql, node, f"{fn.name}() needs {' and '.join(missing)}", hint=f"write {fn.signature()}")
    return args


def _kwarg_offset(sql: str, call: exp.Anonymous, name: str) -> int | None:
    """Where `name =>` is written inside the call: sqlglot keeps no position for the name."""
    span = node_span(call)
    start = span[0] if span else 0
    match = re.compile(rf"(?<![\w]){re.escape(name)}\s*=>", re.IGNORECASE).search(sql, start)
    return match.start() if match else None


def _check_arg(fn: GraphFunction, spec: Arg, value: exp.Expr, sql: str) -> exp.Expr:
    wrong = f"{fn.name}(): {spec.name} must be {ARG_TYPES[spec.type]}"
    if spec.type == "node":
        if isinstance(value, exp.Subquery):
            query = value.this
            if not isinstance(query, exp.Query) or len(query.selects) != 1 or query.is_star:
                raise error_at(sql, value, f"{fn.name}(): the subquery for {spec.name} must select one column of ids")
            return value
        if _string(value) is not None:
            return value
        if isinstance(value, exp.Column) and value.table and fn.name != "paths":
            return value  # lateral: a column of a table before the call in FROM, one walk per id
        if isinstance(value, exp.Array) and fn.name != "paths" and all(_string(v) is not None for v in value.expressions):
            return value
        raise error_at(sql, value, wrong)
    if spec.type == "int":
        if isinstance(value, exp.Literal) and value.is_int and int(value.this) >= 1:
            return value
        raise error_at(sql, value, f"{wrong}, got {value.sql()}")
    if spec.type == "bool":
        if isinstance(value, exp.Boolean):
            return value
        raise error_at(sql, value, f"{wrong}, got {value.sql()}")
    if spec.type == "strings":
        items = value.expressions if isinstance(value, exp.Array) else [value]
        for item in items:
            text = _string(item)
            if text is None:
                raise error_at(sql, item, f"{wrong}, got {item.sql()}")
            if spec.choices and text not in spec.choices:
                hint = _did_you_mean(text, spec.choices, prefix="'", suffix="'") or \
                    ("one of: " + ", ".join(spec.choices))
                raise error_at(sql, item, f"{fn.name}(): {spec.name} has no {text!r}", hint=hint)
        return value
    if spec.type == "timestamp":
        text = _timestamp_text(value)
        if text is None or parse_timestamp(text) is None:
            raise error_at(sql, value, f"{wrong}, got {value.sql()}")
        return value
    # predicate: a condition over the nodes columns, evaluated once per node
    if value.find(exp.Subquery, exp.Select) is not None:
        raise error_at(sql, value, f"{fn.name}(): {spec.name} is evaluated per node: no subqueries in it")
    columns = TABLE_COLUMNS["nodes"]
    for column in value.find_all(exp.Column):
        if column.name not in columns:
            hint = _did_you_mean(column.name, columns, prefix="'", suffix="'")
            raise error_at(sql, column, f"{fn.name}(): {spec.name} can use only the nodes columns; "
                           f"no column {column.name!r}", hint=hint)
    return value


def _string(node: exp.Expr) -> str | None:
    return node.this if isinstance(node, exp.Literal) and node.is_string else None


def _timestamp_text(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Cast) and node.to.is_type(*exp.DataType.TEMPORAL_TYPES):
        return _string(node.this)
    return _string(node)


def parse_timestamp(text: str) -> datetime | None:
    """An ISO 8601 time as UTC (naive means UTC), or None.

    >>> parse_timestamp("2024-01-31 12:00")
    datetime.datetime(2024, 1, 31, 12, 0, tzinfo=datetime.timezone.utc)
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def timestamp_value(node: exp.Expr) -> datetime:
    """The datetime a checked timestamp argument holds."""
    text = _timestamp_text(node)
    moment = parse_timestamp(text) if text is not None else None
    assert moment is not None, "checked by the binder"
    return moment


# -- tables and columns ---------------------------------------------------------------------------
def _cte_names(tree: exp.Expr) -> set[str]:
    return {cte.alias_or_name for cte in tree.find_all(exp.CTE)}


def check_sources(tree: exp.Expr, sql: str) -> set[str]:
    """Every table in FROM/JOIN is a catalog table, a CTE or a graph function; the tables read."""
    ctes = _cte_names(tree)
    read: set[str] = set()
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Func):
            if table.this.name.lower() not in GRAPH_FUNCTIONS and not isinstance(table.this, exp.Explode):
                raise error_at(sql, table.this, f"no table function {call_name(table.this)}()")
            continue
        if table.args.get("db") or table.args.get("catalog"):
            raise error_at(sql, table, f"no table {table.sql()!r}: braid's tables have plain names",
                           hint="the tables are: " + ", ".join(TABLE_COLUMNS))
        name = table.name
        if name in ctes and not table.args.get("version"):
            continue
        if name not in TABLE_COLUMNS:
            if name.lower() in TABLE_COLUMNS:
                name = name.lower()
                table.set("this", exp.to_identifier(name))
            else:
                hint = _did_you_mean(name, [*TABLE_COLUMNS, *ctes], prefix="'", suffix="'") or \
                    ("the tables are: " + ", ".join(TABLE_COLUMNS))
                raise error_at(sql, table, f"no table {name!r}", hint=hint)
        read.add(name)
        version = table.args.get("version")
        if version is not None:
            if version.name != "TIMESTAMP" or version.text("kind") != "AS OF":
                raise error_at(sql, table, "only FOR SYSTEM_TIME AS OF <timestamp> is supported")
            text = _timestamp_text(version.expression)
            if text is None or parse_timestamp(text) is None:
                raise error_at(sql, version.expression, f"FOR SYSTEM_TIME AS OF needs {ARG_TYPES['timestamp']}")
    return read


def _source_columns(source: exp.Expr | Scope) -> list[str] | None:
    """The columns a FROM source offers, or None where they cannot be known (lenient)."""
    if isinstance(source, Scope):
        return _output_columns(source)
    if isinstance(source, exp.Table):
        if isinstance(source.this, exp.Anonymous):
            fn = GRAPH_FUNCTIONS.get(source.this.name.lower())
            return fn.result_columns() if fn else None
        columns = TABLE_COLUMNS.get(source.name)
        return list(columns) if columns is not None else None
    return None


def _output_columns(scope: Scope) -> list[str] | None:
    expression = scope.expression
    alias = expression.parent if isinstance(expression.parent, (exp.Subquery, exp.CTE)) else None
    named = alias.args.get("alias") if alias is not None else None
    if isinstance(named, exp.TableAlias) and named.columns:
        return [c.name for c in named.columns]
    if isinstance(expression, exp.SetOperation):
        left = expression.left
        while isinstance(left, exp.SetOperation):
            left = left.left
        expression = left
    if isinstance(expression, exp.Subquery):
        expression = expression.unnest()
    if not isinstance(expression, exp.Select):
        if scope.is_udtf:
            table_alias = expression.args.get("alias")
            return [c.name for c in table_alias.columns] if table_alias and table_alias.columns else None
        return None
    out: list[str] = []
    for projection in expression.selects:
        if isinstance(projection, exp.Star):
            for name in scope.selected_sources:
                cols = _source_columns(scope.selected_sources[name][1])
                if cols is None:
                    return None
                out += cols
        elif isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
            src = scope.selected_sources.get(projection.table)
            cols = _source_columns(src[1]) if src else None
            if cols is None:
                return None
            out += cols
        else:
            out.append(projection.alias_or_name)
    return out


def check_columns(tree: exp.Expr, sql: str) -> None:
    """Every column names a column of a source in its scope (or an enclosing one).

    A graph call's arguments are not part of the query's scopes (sqlglot would see a node
    subquery as reading from the call itself): the subqueries are checked as queries of their
    own, on a copy of the tree whose calls have no arguments (the copy keeps positions).
    """
    bare = tree.copy()
    for table in bare.find_all(exp.Table):
        if isinstance(table.this, exp.Anonymous) and table.this.name.lower() in GRAPH_FUNCTIONS:
            for arg in table.this.expressions:
                value = arg.expression if isinstance(arg, exp.Kwarg) else arg
                if isinstance(value, exp.Subquery):
                    check_columns(value.this.copy(), sql)
            table.this.set("expressions", [])
    for scope in traverse_scope(bare):
        for column in scope.columns:
            _check_column(scope, column, sql)


def _visible(scope: Scope) -> list[dict[str, list[str] | None]]:
    """Sources' columns by alias, this scope first, then each enclosing scope."""
    chain = []
    current: Scope | None = scope
    while current is not None:
        chain.append({alias: _source_columns(src[1] if isinstance(src, tuple) else src)
                      for alias, src in current.selected_sources.items()})
        current = current.parent
    return chain


def _check_column(scope: Scope, column: exp.Column, sql: str) -> None:
    if isinstance(column.this, exp.Star):
        qualifier = column.table
        if qualifier and not any(qualifier in level for level in _visible(scope)):
            raise _no_alias(scope, column, sql)
        return
    name = column.name
    levels = _visible(scope)
    if column.table:
        for level in levels:
            if column.table in level:
                cols = level[column.table]
                if cols is None or name in cols:
                    return
                hint = _did_you_mean(name, cols, prefix=f"'{column.table}.", suffix="'")
                raise error_at(sql, column.this, f"{column.table} has no column {name!r}", hint=hint)
        raise _no_alias(scope, column, sql)
    aliases = _select_aliases(scope)
    if name in aliases:
        return
    for level in levels:
        if any(cols is None for cols in level.values()):
            return  # a source whose columns are unknown (UNNEST without names): do not guess
        if any(name in cols for cols in level.values() if cols is not None):
            return
    known = sorted({c for cols in levels[0].values() if cols for c in cols} | set(aliases))
    where = ", ".join(levels[0]) or "this query"
    hint = _did_you_mean(name, known, prefix="'", suffix="'")
    if hint is None and not levels[0]:
        hint = "add a FROM clause naming a table: " + ", ".join(TABLE_COLUMNS)
    raise error_at(sql, column.this, f"no column {name!r} in {where}", hint=hint)


def _select_aliases(scope: Scope) -> set[str]:
    expression = scope.expression
    return {s.alias for s in expression.selects if isinstance(s, exp.Alias)} if isinstance(expression, exp.Select) else set()


def _no_alias(scope: Scope, column: exp.Column, sql: str) -> QueryError:
    names = sorted({alias for level in _visible(scope) for alias in level})
    hint = _did_you_mean(column.table, names, prefix="'", suffix="'") or \
        (f"the tables here are: {', '.join(names)}" if names else None)
    target = column.args.get("table") or column
    return error_at(sql, target, f"no table or alias {column.table!r} in this query", hint=hint)


def literal_strings(node: exp.Expr) -> list[str]:
    """The strings of a checked `strings` or list-of-ids argument."""
    items = node.expressions if isinstance(node, exp.Array) else [node]
    return [str(i.this) for i in items]


def literal_value(node: exp.Expr) -> Any:
    """The Python value of a checked int or bool argument."""
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    return int(node.this)


__all__ = ["Bound", "GraphCall", "bind", "literal_strings", "literal_value", "parse_timestamp", "timestamp_value"]
