"""`braid query --emit ENGINE`: the query in another engine's SQL, graph functions as
`WITH RECURSIVE` over the catalog's Parquet files, transpiled by sqlglot.

The recursive form walks every (node, depth) pair up to the depth bound and keeps each node's
smallest depth, where the traversal index visits each node once: the same rows, at a cost
that grows with the number of paths. Where two edges reach a node at the same depth, `via_*`
is chosen by lineage before same_as, then the lower predecessor id, as the index does; ties
between parallel edges of one pair may pick another of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sqlglot import exp

from ..errors import QueryError
from ..schema import TABLES
from ._binder import GraphCall, ParamValue, bind, literal_strings, literal_value, timestamp_value
from ._dialect import Braid, error_at, parse, split_explain

if TYPE_CHECKING:
    from ..catalog import Catalog

Files = Literal["read_parquet", "path", "tables"]


@dataclass(frozen=True)
class Engine:
    """How an engine reads the catalog's Parquet files, and what to tell its user."""

    dialect: str
    files: Files
    note: str


ENGINES: dict[str, Engine] = {
    "duckdb": Engine("duckdb", "read_parquet", "runs as is: duckdb -c \"$(braid query --emit duckdb '...')\""),
    "spark": Engine("spark", "path", "needs Spark 4.1 or later for WITH RECURSIVE"),
    "trino": Engine("trino", "tables", "Trino reads no files by path: register each table's Parquet files "
                    "(listed below) as a table of that name, e.g. with the Hive connector"),
    "postgres": Engine("postgres", "tables", "PostgreSQL reads no Parquet: load each table's files (listed "
                       "below) into a table of that name, e.g. with duckdb's postgres extension or pg_parquet"),
}


def emit_sql(catalog: Catalog, sql: str, params: Mapping[str, ParamValue] | None = None, *,
             engine: str = "duckdb") -> str:
    """The query in `engine`'s SQL over this catalog generation's files.

    QueryError where the query uses something that has no recursive form here yet.
    """
    spec = ENGINES[engine]
    explain, text = split_explain(sql)
    if explain:
        raise QueryError("EXPLAIN has no --emit form: emit the SELECT and explain it in the engine")
    bound = bind(parse(text), text, params)
    for table in bound.tree.find_all(exp.Table):
        if table.args.get("version") is not None:
            raise error_at(text, table, "FOR SYSTEM_TIME AS OF has no --emit form yet",
                           hint="use as_of => on a graph function, or run the query with braid")
    ctes: list[str] = []
    needed = set(bound.tables) | ({"nodes", "edges"} if bound.calls else set())
    files = _files(catalog)
    if spec.files != "tables":
        ctes += [_table_cte(name, files.get(name, []), spec) for name in sorted(needed)]
    bound_nodes = catalog.nodes.height + 1  # no shortest walk is longer: the recursion's bound
    for i, call in enumerate(sorted(bound.calls, key=lambda c: -c.table.depth)):
        ctes += _graph_ctes(call, f"_g{i}", text, bound_nodes)
        call.table.set("this", exp.to_identifier(f"_g{i}"))
    tree = bound.tree
    user = tree.args.get("with_") or tree.args.get("with")
    user_ctes = [c.sql(dialect=Braid) for c in user.expressions] if user is not None else []
    tree.set("with_", None)
    tree.set("with", None)
    body = tree.sql(dialect=Braid)
    all_ctes = ctes + user_ctes
    full = (("WITH RECURSIVE " if bound.calls else "WITH ") + ",\n".join(all_ctes) + "\n" if all_ctes else "") + body
    out = parse(full)
    _rewrite_files(out, spec)
    header = [f"-- braid query --emit {engine}: catalog {catalog.path}, generation {catalog.generation}",
              f"-- {spec.note}"]
    if spec.files == "tables":
        header += [f"--   {name}: {', '.join(str(catalog.path / f) for f in files.get(name, [])) or '(no files)'}"
                   for name in sorted(needed)]
    return "\n".join(header) + "\n" + out.sql(dialect=spec.dialect, pretty=True) + ";"


def _files(catalog: Catalog) -> dict[str, list[str]]:
    """Each table's Parquet files, in the order the catalog concatenates them."""
    out: dict[str, list[str]] = {}
    for _, entry in sorted(catalog.manifest.sources.items()):
        for name, ref in entry.tables.items():
            out.setdefault(name, []).append(ref.file)
    return {k: [str(catalog.path / f) for f in v] for k, v in out.items()}


def _table_cte(name: str, paths: list[str], spec: Engine) -> str:
    columns = ", ".join(_q(c) for c in TABLES[name].schema)
    if not paths:
        nulls = ", ".join(f"CAST(NULL AS {_type(t)}) AS {_q(c)}" for c, t in TABLES[name].schema.items())
        return f"{name} AS (SELECT {nulls} WHERE FALSE)"
    parts = [f"SELECT {columns}, {i} AS _file FROM read_parquet('{p}')" for i, p in enumerate(paths)]
    union = " UNION ALL ".join(parts)
    if name == "nodes":  # a commit is one node whichever tools recorded it: the first file's row
        return (f"nodes AS (SELECT {columns} FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY _file) "
                f"AS _n FROM ({union}) AS _all) AS _ranked WHERE _n = 1)")
    return f"{name} AS (SELECT {columns} FROM ({union}) AS _all)"


def _q(name: str) -> str:
    return f'"{name}"'


def _type(dtype: object) -> str:
    text = str(dtype)
    if text.startswith("Datetime"):
        return "TIMESTAMPTZ"
    return {"String": "VARCHAR", "Int64": "BIGINT", "Float64": "DOUBLE"}.get(text, "VARCHAR")


def _rewrite_files(tree: exp.Expr, spec: Engine) -> None:
    """read_parquet('p') as the engine reads a file: Spark's parquet.`p`."""
    if spec.files != "path":
        return
    for table in list(tree.find_all(exp.Table)):
        if isinstance(table.this, exp.Anonymous) and table.this.name.lower() == "read_parquet":
            path = table.this.expressions[0].this
            table.set("this", exp.to_identifier(path, quoted=True))
            table.set("db", exp.to_identifier("parquet"))


def _graph_ctes(call: GraphCall, name: str, sql: str, max_depth: int) -> list[str]:
    fn, args = call.function, call.args
    if fn.name == "paths":
        raise error_at(sql, call.table, "paths() has no --emit form yet (it enumerates simple paths)",
                       hint="emit upstream/downstream, or run the query with braid")
    node = args["node"]
    if isinstance(node, exp.Column):
        raise error_at(sql, node, "a per-row node column has no --emit form yet",
                       hint="give ids or a subquery selecting them")
    if isinstance(node, exp.Subquery):
        starts = node.this.sql(dialect=Braid)
    else:
        starts = ", ".join(_str(s) for s in literal_strings(node))
    depth = literal_value(args["depth"]) if "depth" in args else max_depth
    same_as = literal_value(args["same_as"]) if "same_as" in args else True
    moment = timestamp_value(args["as_of"]).isoformat() if "as_of" in args else None
    alive_node = (lambda a: f" AND ({a}.created_at IS NULL OR {a}.created_at <= CAST('{moment}' AS TIMESTAMPTZ))") \
        if moment else (lambda a: "")
    alive_edge = f" AND (created_at IS NULL OR created_at <= CAST('{moment}' AS TIMESTAMPTZ))" if moment else ""
    here, there = ("dst", "src") if fn.name == "upstream" else ("src", "dst")
    links = [f"SELECT {here} AS here, {there} AS there, 1 AS cost, src AS via_src, dst AS via_dst, kind AS via_kind "
             f"FROM edges WHERE kind <> 'same_as'{alive_edge}"]
    if same_as:
        links += [f"SELECT src, dst, 0, src, dst, kind FROM edges WHERE kind = 'same_as'{alive_edge}",
                  f"SELECT dst, src, 0, src, dst, kind FROM edges WHERE kind = 'same_as' AND src <> dst{alive_edge}"]
    stop = args.get("stop_at")
    stop_sql = f" AND (w.pred IS NULL OR NOT COALESCE(({_qualified(stop, 'p')}), FALSE))" if stop is not None else ""
    kinds = f" AND n.kind IN ({', '.join(_str(k) for k in literal_strings(args['kinds']))})" if "kinds" in args else ""
    tools = f" AND n.tool IN ({', '.join(_str(t) for t in literal_strings(args['tools']))})" if "tools" in args else ""
    single = (literal_strings(node)[0] if not isinstance(node, exp.Subquery) and len(literal_strings(node)) == 1
              else None)
    start_col = f"CAST({_str(single) if single else 'NULL'} AS VARCHAR)"
    node_cols = ", ".join(f"n.{_q(c)}" for c in TABLES["nodes"].schema)
    return [
        f"{name}_start AS (SELECT n.id FROM nodes AS n WHERE n.id IN ({starts}){alive_node('n')})",
        f"{name}_link AS ({' UNION ALL '.join(links)})",
        f"{name}_walk(id, depth, cost, pred, via_src, via_dst, via_kind) AS ("
        f"SELECT id, 0, 0, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR) "
        f"FROM {name}_start UNION "
        f"SELECT l.there, w.depth + l.cost, l.cost, w.id, l.via_src, l.via_dst, l.via_kind "
        f"FROM {name}_walk AS w JOIN {name}_link AS l ON l.here = w.id JOIN nodes AS n ON n.id = l.there "
        f"JOIN nodes AS p ON p.id = w.id "
        f"WHERE w.depth + l.cost <= {int(depth)}{alive_node('n')}{stop_sql})",
        f"{name}_best AS (SELECT w.id, w.depth, w.via_src, w.via_dst, w.via_kind, row_number() OVER "
        f"(PARTITION BY w.id ORDER BY w.depth, w.cost DESC, w.pred, w.via_kind, w.via_src, w.via_dst) AS rn "
        f"FROM {name}_walk AS w WHERE w.id NOT IN (SELECT id FROM {name}_start))",
        f"{name} AS (SELECT {node_cols}, b.depth, b.via_src, b.via_dst, b.via_kind, {start_col} AS start "
        f"FROM {name}_best AS b JOIN nodes AS n ON n.id = b.id WHERE b.rn = 1{kinds}{tools})",
    ]


def _qualified(predicate: exp.Expr, alias: str) -> str:
    """The stop_at predicate over the nodes row aliased `alias`."""
    copy = predicate.copy()
    for column in copy.find_all(exp.Column):
        column.set("table", exp.to_identifier(alias))
    return copy.sql(dialect=Braid)


def _str(value: str) -> str:
    return exp.Literal.string(value).sql(dialect=Braid)


__all__ = ["ENGINES", "Engine", "emit_sql"]
