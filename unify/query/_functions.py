"""What a query may call, declared once: graph table functions and the SQL functions allowed.

The binder checks calls against these tables, the executor reads the graph functions'
arguments from them, and `braid query --help` and docs/query.md are generated from them.

>>> [a.name for a in GRAPH_FUNCTIONS["upstream"].args]
['node', 'depth', 'kinds', 'tools', 'stop_at', 'as_of', 'same_as']
>>> GRAPH_FUNCTIONS["paths"].result_columns()[:3]
['path', 'step', 'id']
>>> SQL_FUNCTIONS["lower"].kind
'scalar'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from ..schema import NODE_KINDS, TABLES, TOOLS

Column = tuple[str, pl.DataType, str]  # name, dtype, doc
ArgType = Literal["node", "int", "strings", "predicate", "timestamp", "bool"]

ARG_TYPES: dict[str, str] = {
    "node": "a node id ('mlflow:run/…'), a :param, a list of ids, a subquery selecting ids, or a column "
            "of a table earlier in FROM (one walk per id, joined on `start`)",
    "int": "a whole number, at least 1",
    "strings": "a list of strings: ['a', 'b'] (or one string)",
    "predicate": "a condition over the nodes columns, e.g. kind = 'dataset'",
    "timestamp": "TIMESTAMP '2024-01-31 12:00' (UTC unless a zone is given) or an ISO string",
    "bool": "true or false",
}


@dataclass(frozen=True)
class Arg:
    """One argument of a graph function: positional when `positional`, else by name (`name => v`)."""

    name: str
    type: ArgType
    doc: str
    required: bool = False
    positional: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class GraphFunction:
    """A table function evaluated by the traversal index; its rows are node rows plus `extra`."""

    name: str
    doc: str
    args: tuple[Arg, ...]
    after: tuple[Column, ...]
    example: str
    before: tuple[Column, ...] = ()
    arg_index: dict[str, Arg] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "arg_index", {a.name: a for a in self.args})

    def result_schema(self) -> dict[str, pl.DataType]:
        """Column name -> dtype of the rows the function returns, in order."""
        return {
            **{name: dtype for name, dtype, _ in self.before},
            **TABLES["nodes"].schema,
            **{name: dtype for name, dtype, _ in self.after},
        }

    def result_columns(self) -> list[str]:
        return list(self.result_schema())

    def column_docs(self) -> dict[str, str]:
        docs = {name: doc for name, (_, doc) in TABLES["nodes"].columns.items()}
        return {**docs, **{name: doc for name, _, doc in (*self.before, *self.after)}}

    @property
    def positional(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.positional)

    def signature(self) -> str:
        """`upstream(node, depth => int, ...)`: the call as the reference shows it."""
        parts = [a.name for a in self.positional]
        parts += [f"{a.name} => {a.type}" for a in self.args if not a.positional]
        return f"{self.name}({', '.join(parts)})"


_TRAVERSAL_ARGS = (
    Arg("depth", "int", "at most this many lineage hops (same_as hops are free)"),
    Arg("kinds", "strings", "only return nodes of these kinds (the walk goes through all kinds)",
        choices=tuple(NODE_KINDS)),
    Arg("tools", "strings", "only return nodes of these tools", choices=TOOLS),
    Arg("stop_at", "predicate", "return matching nodes but do not walk past them"),
    Arg("as_of", "timestamp", "only nodes and edges that existed then (undated ones always did)"),
    Arg("same_as", "bool", "follow same_as identity links both ways (default true)"),
)
_REACH_EXTRA: tuple[Column, ...] = (
    ("depth", pl.Int64(), "lineage hops from the start (same_as hops are free)"),
    ("via_src", pl.String(), "the upstream end of the edge that first reached this node"),
    ("via_dst", pl.String(), "the downstream end of that edge"),
    ("via_kind", pl.String(), "that edge's kind"),
    ("start", pl.String(), "the start node the row was reached from (null when several starts were "
                           "walked together; set when node is a column: `FROM registry r, upstream(r.model_id) u`)"),
)

GRAPH_FUNCTIONS: dict[str, GraphFunction] = {
    "upstream": GraphFunction(
        "upstream",
        "everything the node (or nodes) came from, against the arrows, nearest first; "
        "the start nodes themselves are not returned",
        (Arg("node", "node", "where to start", required=True, positional=True), *_TRAVERSAL_ARGS),
        _REACH_EXTRA,
        "SELECT id, kind, depth FROM upstream(:model_version, kinds => ['dataset', 'code'])",
    ),
    "downstream": GraphFunction(
        "downstream",
        "everything that came from the node (or nodes), with the arrows, nearest first",
        (Arg("node", "node", "where to start", required=True, positional=True), *_TRAVERSAL_ARGS),
        _REACH_EXTRA,
        "SELECT id, depth FROM downstream(:dataset, depth => 5) WHERE kind = 'model_version'",
    ),
    "paths": GraphFunction(
        "paths",
        "the simple lineage paths from one node down to another, shortest first: one row per step",
        (
            Arg("from", "node", "the upstream end", required=True, positional=True),
            Arg("to", "node", "the downstream end", required=True, positional=True),
            Arg("depth", "int", "at most this many lineage hops"),
            Arg("as_of", "timestamp", "only edges that existed then"),
            Arg("same_as", "bool", "follow same_as identity links both ways (default true)"),
            Arg("max_paths", "int", "at most this many paths (default 100)"),
        ),
        (("via_kind", pl.String(), "the kind of the edge that led to this step (null at step 0)"),),
        "SELECT path, step, id, via_kind FROM paths(:dataset, :model_version) ORDER BY path, step",
        before=(
            ("path", pl.Int64(), "the path's number, 0 for the shortest"),
            ("step", pl.Int64(), "the step along the path, 0 at the upstream end"),
        ),
    ),
}

FunctionKind = Literal["scalar", "aggregate", "window"]


@dataclass(frozen=True)
class SqlFunction:
    """An allowed SQL function: everything else is refused (polars SQL would run read_csv)."""

    name: str
    kind: FunctionKind
    example: str
    doc: str


def _fns(kind: FunctionKind, *spec: tuple[str, str, str]) -> dict[str, SqlFunction]:
    return {name: SqlFunction(name, kind, example, doc) for name, example, doc in spec}


# Each example runs on a real catalog in tests/unify/test_query.py, so this list
# stays what polars SQL (the executor) really supports, as printed by the dialect.
SQL_FUNCTIONS: dict[str, SqlFunction] = {
    **_fns(
        "scalar",
        ("lower", "lower(name)", "lower case"),
        ("upper", "upper(name)", "upper case"),
        ("length", "length(id)", "characters in a string"),
        ("trim", "trim(name)", "without surrounding spaces"),
        ("ltrim", "ltrim(name)", "without leading spaces"),
        ("rtrim", "rtrim(name)", "without trailing spaces"),
        ("replace", "replace(id, 'mlflow:', '')", "every occurrence replaced"),
        ("substr", "substr(id, 1, 6)", "part of a string (1-based start, length)"),
        ("substring", "substring(id, 1, 6)", "same as substr"),
        ("left", "left(id, 6)", "the first n characters"),
        ("right", "right(id, 6)", "the last n characters"),
        ("concat", "concat(kind, '/', name)", "strings joined (nulls skipped)"),
        ("concat_ws", "concat_ws('/', kind, name)", "strings joined by a separator"),
        ("split_part", "split_part(id, ':', 1)", "the n-th part of a split string"),
        ("starts_with", "starts_with(id, 'mlflow:')", "whether a string starts with a prefix"),
        ("ends_with", "ends_with(id, '.csv')", "whether a string ends with a suffix"),
        ("strpos", "strpos(id, ':')", "1-based position of a substring, 0 if absent"),
        ("regexp_like", "regexp_like(id, '^mlflow:')", "whether a regular expression matches"),
        ("regexp_replace", "regexp_replace(id, '^[a-z]+:', '')", "regular expression replacement"),
        ("reverse", "reverse(name)", "a string backwards"),
        ("lpad", "lpad(kind, 14, ' ')", "left-padded to a width"),
        ("rpad", "rpad(kind, 14, ' ')", "right-padded to a width"),
        ("abs", "abs(size)", "absolute value"),
        ("round", "round(size / 1024.0, 1)", "rounded to n decimals"),
        ("ceil", "ceil(size / 1024.0)", "rounded up"),
        ("floor", "floor(size / 1024.0)", "rounded down"),
        ("sqrt", "sqrt(size)", "square root"),
        ("ln", "ln(size + 1)", "natural logarithm"),
        ("log10", "log10(size + 1)", "base-10 logarithm"),
        ("exp", "exp(0.5)", "e to the power"),
        ("power", "power(size, 2)", "x to the power y"),
        ("sign", "sign(size)", "-1, 0 or 1"),
        ("mod", "mod(size, 7)", "remainder"),
        ("greatest", "greatest(size, 0)", "the largest argument"),
        ("least", "least(size, 0)", "the smallest argument"),
        ("coalesce", "coalesce(tool, 'git')", "the first non-null argument"),
        ("nullif", "nullif(tool, 'mlflow')", "null when both are equal"),
        ("ifnull", "ifnull(tool, 'git')", "the second argument where the first is null"),
        ("date_trunc", "date_trunc('day', created_at)", "a timestamp truncated to a unit"),
        ("date_part", "date_part('year', created_at)", "a part of a timestamp"),
        ("strftime", "strftime(created_at, '%Y-%m')", "a timestamp formatted"),
        ("now", "now()", "the current time"),
        ("array_length", "array_length(aliases)", "elements in a list"),
        ("array_contains", "array_contains(aliases, 'champion')", "whether a list holds a value"),
        ("list_contains", "list_contains(aliases, 'champion')", "same as array_contains"),
        ("array_to_string", "array_to_string(aliases, ',')", "a list joined into a string"),
        ("array_get", "array_get(aliases, 1)", "the n-th element (1-based)"),
        ("array_unique", "array_unique(aliases)", "the distinct elements"),
        ("array_reverse", "array_reverse(aliases)", "a list backwards"),
        ("unnest", "unnest(aliases)", "one row per list element"),
        ("strptime", "strptime('2024-01-31', '%Y-%m-%d')", "a timestamp parsed with a format"),
    ),
    **_fns(
        "aggregate",
        ("count", "count(*)", "rows, or non-null values; count(DISTINCT x) for distinct ones"),
        ("sum", "sum(size)", "total"),
        ("avg", "avg(size)", "mean"),
        ("min", "min(created_at)", "smallest"),
        ("max", "max(created_at)", "largest"),
        ("median", "median(size)", "median"),
        ("stddev", "stddev(size)", "sample standard deviation"),
        ("variance", "variance(size)", "sample variance"),
        ("first", "first(id)", "the first value in the group"),
        ("last", "last(id)", "the last value in the group"),
        ("array_agg", "array_agg(id)", "the group's values as a list"),
        ("string_agg", "string_agg(id, ',')", "the group's values joined into a string"),
        ("quantile_cont", "quantile_cont(size, 0.9)", "interpolated quantile"),
        ("quantile_disc", "quantile_disc(size, 0.9)", "quantile from the values"),
        ("corr", "corr(size, size)", "correlation"),
    ),
    **_fns(
        "window",
        ("row_number", "row_number() OVER (PARTITION BY kind ORDER BY id)", "1, 2, 3… in the window"),
        ("rank", "rank() OVER (ORDER BY size DESC)", "rank with gaps"),
        ("dense_rank", "dense_rank() OVER (ORDER BY size DESC)", "rank without gaps"),
        ("lag", "lag(id) OVER (ORDER BY id)", "the value a row before"),
        ("lead", "lead(id) OVER (ORDER BY id)", "the value a row after"),
        ("first_value", "first_value(id) OVER (PARTITION BY kind ORDER BY id)", "the window's first value"),
        ("last_value", "last_value(id) OVER (PARTITION BY kind ORDER BY id)", "the window's last value"),
        ("ntile", "ntile(4) OVER (ORDER BY size)", "bucket number"),
        ("percent_rank", "percent_rank() OVER (ORDER BY size)", "relative rank from 0 to 1"),
        ("cume_dist", "cume_dist() OVER (ORDER BY size)", "cumulative distribution"),
    ),
}

# Names refused with a specific reason rather than "unknown function": they would read or
# write files, reach the network, or change the session. Only the message comes from here;
# refusal comes from the allow-list above.
FILE_FUNCTIONS = frozenset({
    "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "read_json", "read_json_auto",
    "read_ndjson", "read_text", "read_blob", "read_ipc", "read_delta", "scan_csv", "scan_parquet",
    "scan_ndjson", "scan_ipc", "delta_scan", "iceberg_scan", "glob", "sqlite_scan", "postgres_scan",
    "mysql_scan", "http_get", "httpfs", "read_xlsx", "st_read",
})

# the catalog's tables with their columns, as the binder sees them
TABLE_COLUMNS: dict[str, dict[str, pl.DataType]] = {name: dict(t.schema) for name, t in TABLES.items()}

# Base tables that `FOR SYSTEM_TIME AS OF t` can rewind: rows dated after t are dropped (null
# dates always existed, as in traversal). Tables without a date of their own follow the
# table that dates them: (column, table it refers to, that table's key).
AS_OF_COLUMN: dict[str, str] = {"nodes": "created_at", "edges": "created_at", "runs": "started_at",
                                "metrics": "timestamp"}
AS_OF_VIA: dict[str, tuple[str, str, str]] = {
    "params": ("run_id", "runs", "id"),
    "tags": ("node_id", "nodes", "id"),
    "registry": ("model_version_id", "nodes", "id"),
}


__all__ = [
    "ARG_TYPES", "AS_OF_COLUMN", "AS_OF_VIA", "FILE_FUNCTIONS", "GRAPH_FUNCTIONS", "SQL_FUNCTIONS",
    "TABLE_COLUMNS", "Arg", "GraphFunction", "SqlFunction",
]
