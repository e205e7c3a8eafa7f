"""Running a checked query: graph calls by the traversal index, the rest by polars SQL.

Each graph call becomes a lazy frame (node rows gathered by dense id from the traversal index,
only the columns the query reads, see _frames.py) registered under a private name; the call in
the tree is replaced by that name, as are base tables read `FOR SYSTEM_TIME AS OF`. The rules
of _optimize.py then rewrite the tree (top-1-per-group tables, integer node keys), and what is
left is printed for polars SQL and run lazily, stopping at `max_rows`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl
from sqlglot import exp

from ..errors import NodeNotFound, QueryError
from ..traversal import count_each, search
from ._binder import Bound, GraphCall, ParamValue, bind, lateral_join, literal_strings, literal_value, timestamp_value
from ._dialect import Braid, _Generator, error_at, parse, split_explain
from ._frames import KEYS, NODE_ID_COLUMNS, frame_columns, keyed_table, reach_frame
from ._functions import AS_OF_COLUMN, AS_OF_VIA
from ._optimize import Frames, TopOne, distinct_per_start, integer_keys, top_one_tables

if TYPE_CHECKING:
    from ..catalog import Catalog

MAX_ROWS = 1_000_000
"""Results (and cross joins) bigger than this stop with a QueryError unless a limit is given."""

_POLARS_ERRORS: tuple[type[Exception], ...] = (pl.exceptions.PolarsError,)


class _PolarsGenerator(_Generator):
    """The dialect as polars SQL reads it: a few functions spelt its way."""

    TRANSFORMS = {
        **_Generator.TRANSFORMS,
        exp.RegexpLike: lambda self, e: self.func("REGEXP_LIKE", e.this, e.expression),
        exp.Placeholder: lambda self, e: self.unsupported("unbound parameter") or "NULL",
    }

    def cast_sql(self, expression: exp.Cast, safe_prefix: str | None = None) -> str:
        # Catalog times are UTC-aware: a naive TIMESTAMP literal would not compare with them
        # in polars, so it is read as UTC (as the traversal reads a naive as_of).
        if expression.to.is_type(exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPNTZ) and \
                isinstance(expression.this, exp.Literal) and expression.this.is_string:
            from ._binder import parse_timestamp

            moment = parse_timestamp(expression.this.this)
            if moment is not None:
                return f"CAST('{moment.isoformat()}' AS TIMESTAMPTZ)"
        return super().cast_sql(expression, safe_prefix)


def polars_sql(tree: exp.Expr) -> str:
    """The tree as polars SQL text."""
    return _PolarsGenerator(dialect=Braid).generate(tree)


@dataclass
class Step:
    """One evaluated graph call, for EXPLAIN: the call as resolved and the rows it gave."""

    call: str
    frame: str
    rows: int
    seconds: float


@dataclass
class Run:
    """The state of one query run: frames registered for polars and what was done."""

    catalog: Catalog
    sql: str
    frames: dict[str, pl.LazyFrame | pl.DataFrame] = field(default_factory=dict)
    heights: dict[str, int] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)
    keyed: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)  # name -> keyed variant
    steps: list[Step] = field(default_factory=list)
    _names: Any = field(default_factory=lambda: itertools.count())

    def register(self, prefix: str, frame: pl.LazyFrame | pl.DataFrame, height: int | None = None, *,
                 name: str | None = None) -> str:
        """Register `frame` for polars under `name` (or a private one); where it has integer
        twins, the plain name shows the frame without them and the keyed variant with."""
        name = name or f"__{prefix}_{next(self._names)}"
        columns = frame_columns(frame)
        keys = KEYS.of(columns)
        plain = [c for c in columns if c not in keys.values()]
        height = frame.height if isinstance(frame, pl.DataFrame) else height
        assert height is not None, "a lazy frame is registered with its height"
        self.frames[name] = frame.drop(list(keys.values())) if keys else frame
        self.heights[name] = height
        self.columns[name] = plain
        if keys:
            self.frames[f"{name}__keyed"] = frame
            self.heights[f"{name}__keyed"] = height
            self.keyed[name] = (f"{name}__keyed", keys)
        return name

    def context(self) -> pl.SQLContext[Any]:
        return pl.SQLContext(frames=self.frames, eager=False)


def prepare(catalog: Catalog, sql: str, params: Mapping[str, ParamValue] | None = None) -> tuple[Bound, Run, bool]:
    """Parse, bind, evaluate the graph calls, register the frames and rewrite the tree for them;
    nothing polars ran yet."""
    explain, text = split_explain(sql)
    bound = bind(parse(text), text, params)
    run = Run(catalog, text)
    for name in sorted(bound.tables):
        run.register(name, catalog.table(name), name=name)
    _time_travel(bound, run)
    # innermost first: a call inside another's node subquery is a frame before the outer runs
    for call in sorted(bound.calls, key=lambda c: -c.table.depth):
        _evaluate(call, run)
    _optimize(bound, run)
    return bound, run, explain


def _optimize(bound: Bound, run: Run) -> None:
    """The rules of _optimize.py, given the frames: base tables get their integer twins here,
    computed once per generation (only once the index is built; see _frames.keyed_table)."""
    catalog = run.catalog

    def top_one(spec: TopOne) -> str | None:
        source = keyed_table(catalog, spec.table)
        key = ("top one", spec, source is not None)
        if set(spec.pinned) & set(NODE_ID_COLUMNS.get(spec.table, ())) and not catalog.has_derived(key):
            return None  # a query about a few nodes: the window over their rows is cheaper than the table
        table = catalog.table(spec.table) if source is None else source
        frame = catalog.derived(key, lambda: pl.SQLContext(frames={spec.table: table}).execute(spec.sql(), eager=True))
        return run.register(f"{spec.table}_top_one", frame)

    top_one_tables(bound.tree, bound.tables, top_one, polars_sql)
    if not _compares_columns(bound.tree):
        return
    for name in bound.tables:
        keyed = keyed_table(catalog, name)
        if keyed is not None:
            run.register(name, keyed, name=name)
    integer_keys(bound.tree, Frames(run.columns, run.keyed))


def _compares_columns(tree: exp.Expr) -> bool:
    """Whether the query has anything integer keys could serve: a comparison of two columns,
    a PARTITION BY or a count(DISTINCT ...)."""
    for node in tree.walk():
        if isinstance(node, (exp.EQ, exp.NEQ, exp.NullSafeEQ, exp.NullSafeNEQ)) and \
                isinstance(node.this, exp.Column) and isinstance(node.expression, exp.Column):
            return True
        if isinstance(node, exp.Window) and node.args.get("partition_by"):
            return True
        if isinstance(node, exp.Count) and isinstance(node.this, exp.Distinct):
            return True
    return False


def execute(
    catalog: Catalog, sql: str, params: Mapping[str, ParamValue] | None = None, *, limit: int | None = None,
    max_rows: int = MAX_ROWS,
) -> pl.DataFrame:
    """The rows of `sql` (or its plan, for EXPLAIN); QueryError when it cannot run."""
    bound, run, explain = prepare(catalog, sql, params)
    _check_cross_joins(bound, run, max_rows if limit is None else max(max_rows, limit))
    text = polars_sql(bound.tree)
    try:
        lazy = run.context().execute(text)
    except _POLARS_ERRORS as exc:
        raise _engine_error(run.sql, exc) from None
    if explain:
        return _explain(bound, run, text, lazy)
    cap = limit if limit is not None else max_rows + 1
    try:
        result = lazy.head(cap).collect()
    except _POLARS_ERRORS as exc:
        raise _engine_error(run.sql, exc) from None
    if limit is None and result.height > max_rows:
        raise QueryError(f"the result has more than {max_rows:,} rows", query=run.sql,
                         hint="add a LIMIT, narrow the WHERE clause, or pass a larger max_rows / --limit")
    return result


def _engine_error(sql: str, exc: Exception) -> QueryError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return QueryError(f"the query could not run: {first}", query=sql,
                      hint="braid runs SQL on polars, which lacks some DuckDB features; see `braid query --help`")


# -- time travel on base tables -------------------------------------------------------------------
def _time_travel(bound: Bound, run: Run) -> None:
    """`t FOR SYSTEM_TIME AS OF x`: the table filtered to rows that existed at x, as a frame."""
    for table in list(bound.tree.find_all(exp.Table)):
        version = table.args.get("version")
        if version is None:
            continue
        moment = timestamp_value(version.expression)
        frame = as_of_frame(run.catalog, table.name, moment)
        name = run.register(f"{table.name}_as_of", frame)
        if not table.alias:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
        table.set("version", None)
        table.set("this", exp.to_identifier(name))


def as_of_frame(catalog: Catalog, table: str, moment: datetime) -> pl.DataFrame:
    """The rows of `table` that existed at `moment`; undated rows always existed."""
    if table in AS_OF_COLUMN:
        column = pl.col(AS_OF_COLUMN[table])
        frame = catalog.table(table).filter(column.is_null() | (column <= moment))
        if table == "edges":  # an edge exists only while both its ends do
            alive = as_of_frame(catalog, "nodes", moment).get_column("id")
            frame = frame.filter(pl.col("src").is_in(alive.implode()) & pl.col("dst").is_in(alive.implode()))
        return frame
    key, parent, parent_key = AS_OF_VIA[table]
    alive = as_of_frame(catalog, parent, moment).get_column(parent_key)
    return catalog.table(table).filter(pl.col(key).is_in(alive.implode()))


# -- graph calls ----------------------------------------------------------------------------------
def _evaluate(call: GraphCall, run: Run) -> None:
    import time

    started = time.perf_counter()
    fn, args = call.function, call.args
    options: dict[str, Any] = {}
    shown: list[str] = []
    for arg in fn.args:
        if arg.name not in args:
            continue
        node = args[arg.name]
        if arg.type == "node" and isinstance(node, exp.Column):
            shown.append(f"{arg.name} => each {node.sql()}")
            continue
        if arg.type == "node":
            value: Any = _node_ids(node, run, single=fn.name == "paths", what=arg.name)
            shown.append(f"{arg.name} => {value!r}")
            options[arg.name] = value
            continue
        if arg.type == "strings":
            value = literal_strings(node)
        elif arg.type in ("int", "bool"):
            value = literal_value(node)
        elif arg.type == "timestamp":
            value = timestamp_value(node)
        else:
            value = _stop_at(node, run)
        shown.append(f"{arg.name} => {value.isoformat() if isinstance(value, datetime) else node.sql(dialect=Braid) if arg.type == 'predicate' else repr(value)}")
        options[arg.name] = value
    lateral = args.get("node") if isinstance(args.get("node"), exp.Column) else None
    how = ""
    if lateral is not None:
        frame, height, how = _lateral(call, lateral, run, options)
    elif fn.name == "paths":
        frame = run.catalog.paths(
            options.pop("from"), options.pop("to"), depth=options.get("depth"),
            same_as=options.get("same_as", True), as_of=options.get("as_of"), limit=options.get("max_paths", 100),
        )
        height = frame.height
    else:
        starts = options.pop("node")
        index = run.catalog.index
        found = search(index, run.catalog.nodes, index.lookup(starts), fn.name, **options)
        frame = reach_frame(run.catalog, found, fn.result_columns(), start=starts[0] if len(starts) == 1 else None,
                            keys=True)
        height = len(found)
    name = run.register(fn.name, frame, height)
    call.table.set("this", exp.to_identifier(name))
    run.steps.append(Step(f"{fn.name}({', '.join(shown)}) AS {call.alias}{how}", name, height,
                          time.perf_counter() - started))


def _lateral(call: GraphCall, column: exp.Column, run: Run, options: dict[str, Any]) -> tuple[pl.LazyFrame, int, str]:
    """`FROM registry r, upstream(r.model_version_id) u`: a walk from each distinct id of the
    column on its own (all walked as one batched search, traversal.search(each=True)), each row
    tagged with its `start`, and the join rewritten to `ON u.start = r.model_version_id`. Ids
    that are not nodes reach nothing. The edge that reached each row is found only if the query
    reads via_src, via_dst or via_kind. A call the query only counts (`count(DISTINCT u.id)` per
    group, and no group holds two starts: see _optimize.distinct_per_start) becomes one row per
    start that reaches anything, with its count."""
    source = lateral_join(call, column, run.sql, known=run.frames.__contains__)
    frame = run.frames[source.name]
    lazy = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    starts = lazy.select(pl.col(column.name)).collect().to_series().drop_nulls().unique().sort().cast(pl.String)
    catalog = run.catalog
    dense = catalog.index.lookup(starts)
    counted = distinct_per_start(call.table, source)
    if counted is None or not _one_start_per_group(lazy, counted.keys, column.name):
        found = search(catalog.index, catalog.nodes, dense, call.function.name, each=True,
                       vias=_reads_vias(call.table.root()), **options)
        frame = reach_frame(catalog, found, call.function.result_columns(), starts=starts, keys=True)
        return frame, len(found), ""
    counted.rewrite(call.alias, _COUNTED)
    rows = count_each(catalog.index, catalog.nodes, dense, call.function.name, **options)
    per_start = pl.DataFrame({"start": starts, KEYS.name("start"): dense, _COUNTED: rows}).filter(pl.col(_COUNTED) > 0)
    return per_start.lazy(), per_start.height, f" (only counted: {_COUNTED} per start, one start per group)"


# the column of a lateral call's per-start frame that holds its count of rows (PerStart)
_COUNTED = "rows"


def _one_start_per_group(left: pl.LazyFrame, keys: tuple[str, ...], column: str) -> bool:
    """Whether no group of the left table's rows by `keys` holds two different starts."""
    if column in keys:
        return True
    most = left.group_by(list(keys)).agg(starts=pl.col(column).drop_nulls().n_unique()).select(pl.col("starts").max())
    return bool((most.collect().item() or 0) <= 1)


def _reads_vias(tree: exp.Expr) -> bool:
    """Whether a query may read a graph call's via_* columns: by name, or through a `*`."""
    for node in tree.walk():
        if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count):
            return True
        if isinstance(node, exp.Column) and node.name in ("via_src", "via_dst", "via_kind"):
            return True
    return False


def _node_ids(node: exp.Expr, run: Run, *, single: bool, what: str) -> Any:
    """The node ids an argument names, each checked against the catalog."""
    if isinstance(node, exp.Subquery):
        try:
            found = run.context().execute(polars_sql(node.this)).collect().to_series(0)
        except _POLARS_ERRORS as exc:
            raise _engine_error(run.sql, exc) from None
        ids = [str(v) for v in found.drop_nulls().unique(maintain_order=True).to_list()]
        if single and len(ids) != 1:
            raise error_at(run.sql, node, f"the subquery for {what} must give one node id; it gave {len(ids)}",
                           hint="add a WHERE or LIMIT 1")
        items = [(i, node) for i in ids]
    else:
        items = [(s, n) for s, n in zip(literal_strings(node),
                                        node.expressions if isinstance(node, exp.Array) else [node])]
    resolved = []
    for value, where in items:
        try:
            resolved.append(run.catalog.resolve(value))
        except NodeNotFound as exc:
            raise error_at(run.sql, where, str(exc), hint=exc.hint) from None
    return resolved[0] if single else resolved


def _stop_at(node: exp.Expr, run: Run) -> Callable[[pl.DataFrame], pl.Series]:
    """The predicate as a function of the nodes frame, evaluated once per traversal by polars."""
    text = f"SELECT ({polars_sql(node)}) AS stop FROM nodes"

    def mask(nodes: pl.DataFrame) -> pl.Series:
        try:
            return pl.SQLContext(frames={"nodes": nodes}).execute(text, eager=True).to_series(0)
        except _POLARS_ERRORS as exc:
            raise _engine_error(run.sql, exc) from None

    return mask


# -- guards and plans -----------------------------------------------------------------------------
def _check_cross_joins(bound: Bound, run: Run, max_rows: int) -> None:
    """A join without a condition over sources whose sizes multiply past `max_rows` is refused
    before it runs: stopping the result at max_rows would not stop an aggregate over it."""
    for select in bound.tree.find_all(exp.Select):
        source = select.args.get("from_") or select.args.get("from")
        if source is None:
            continue
        rows = _height(source.this, run)
        for join in select.args.get("joins") or []:
            size = _height(join.this, run)
            if join.args.get("on") is not None or join.args.get("using"):
                rows = max(rows, size)  # a keyed join: bounded by neither side in general, but not multiplied
                continue
            rows *= size
            if rows > max_rows:
                raise error_at(run.sql, join.this, f"this join has no condition and would make about "
                               f"{rows:,} rows (the limit is {max_rows:,})",
                               hint="join ON a condition, or filter the tables first")


def _height(node: exp.Expr, run: Run) -> int:
    if isinstance(node, exp.Table) and node.name in run.heights:
        return run.heights[node.name]
    return 1


def _explain(bound: Bound, run: Run, text: str, lazy: pl.LazyFrame) -> pl.DataFrame:
    lines = ["graph calls (traversal index):"]
    lines += [f"  {s.frame} = {s.call}: {s.rows} rows in {s.seconds * 1000:.1f} ms" for s in run.steps] or ["  (none)"]
    lines.append("tables: " + (", ".join(f"{n} ({run.heights[n]} rows)" for n in sorted(bound.tables)) or "(none)"))
    lines.append("polars SQL:")
    lines.append(f"  {text}")
    lines.append("polars plan:")
    try:
        plan = lazy.explain()
    except _POLARS_ERRORS as exc:
        raise _engine_error(run.sql, exc) from None
    lines += [f"  {line}" for line in plan.splitlines()]
    return pl.DataFrame({"plan": lines})


__all__ = ["MAX_ROWS", "as_of_frame", "execute", "polars_sql", "prepare"]
