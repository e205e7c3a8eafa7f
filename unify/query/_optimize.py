"""Rewrites of a bound query that keep its rows and make polars do less, one rule per function.

- `top_one_tables`: a `QUALIFY row_number() OVER (PARTITION BY … ORDER BY …) = 1` whose rows
  come from one catalog table (others joined to it on their keys) is answered from that
  table's top-1-per-partition rows, computed once per generation, not by a window over the
  join in every query.
- `integer_keys`: comparisons, joins, PARTITION BY and count(DISTINCT …) on node-id columns
  use the columns' integer twins (see `_frames`), carried through CTEs and subqueries.
- `distinct_per_start`: a lateral graph call read only as `count(DISTINCT u.id)` per group of
  the left table's rows is counted per start by the traversal, not joined row by row.

Each rule takes the tree and what it needs to know of the frames, and changes the tree in
place; it leaves alone what it cannot prove the same, so a query it does not understand runs
as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from sqlglot import exp

from ..schema import TABLES
from ._frames import KEYS

_FROM = ("from_", "from")
_WITH = ("with_", "with")


def _arg(node: exp.Expr, names: tuple[str, ...]) -> exp.Expr | None:
    for name in names:
        value = node.args.get(name)
        if value is not None:
            return value  # type: ignore[no-any-return]
    return None


def _sources(select: exp.Select) -> list[exp.Expr]:
    """The FROM item and each JOIN's item, in order."""
    source = _arg(select, _FROM)
    return ([source.this] if source is not None else []) + [j.this for j in select.args.get("joins") or []]


def _own(node: exp.Expr) -> Iterator[exp.Expr]:
    """The nodes of a SELECT's own expressions: not inside a nested query."""
    stack = list(node.iter_expressions())
    while stack:
        item = stack.pop()
        if isinstance(item, (exp.Query, exp.Subquery)) or (isinstance(item, exp.Table) and item is not node):
            continue
        yield item
        stack.extend(item.iter_expressions())


def _stars(select: exp.Select) -> set[str] | None:
    """Aliases a `t.*` projection reads, or None for a bare `*` (every source)."""
    out: set[str] = set()
    for projection in select.expressions:
        if isinstance(projection, exp.Star):
            return None
        if isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
            out.add(projection.table)
    return out


def _starred(select: exp.Select, alias: str) -> bool:
    stars = _stars(select)
    return stars is None or alias in stars


# -- integer keys ---------------------------------------------------------------------------------
@dataclass
class Relation:
    """What a FROM item offers: its columns (None where unknown) and their integer twins."""

    columns: list[str] | None
    keys: dict[str, str] = field(default_factory=dict)


@dataclass
class Frames:
    """The registered frames, as the rules see them: each name's columns and, where it has a
    keyed variant (the same rows plus twins), that variant's name and twins."""

    columns: Mapping[str, list[str]]
    keyed: Mapping[str, tuple[str, dict[str, str]]]


def integer_keys(tree: exp.Expr, frames: Frames) -> exp.Expr:
    """Compare node ids by their integer twins wherever both sides have one.

    A FROM item reads the keyed variant of its frame unless a `*` would show the twins;
    a CTE or derived table passes a twin on for each output column that is a plain column with
    one (and no consumer reads it with `*`). Then, in each SELECT, `a = b` (and `<>`, `IS
    [NOT] DISTINCT FROM`) between two twinned columns, PARTITION BY a twinned column and
    count(DISTINCT twinned column) read the twins: equal strings have equal twins, and nulls
    stay nulls.
    """
    starred_ctes = _star_read_names(tree)
    _query(tree, {}, frames, starred_ctes, want=False)
    return tree


def _star_read_names(tree: exp.Expr) -> set[str]:
    """Names of tables read somewhere by a `*` projection (a CTE read so shows its columns)."""
    names = set()
    for select in tree.find_all(exp.Select):
        stars = _stars(select)
        if stars is not None and not stars:
            continue
        for source in _sources(select):
            if isinstance(source, exp.Table) and (stars is None or source.alias_or_name in stars):
                names.add(source.name)
    return names


def _query(node: exp.Expr, ctes: dict[str, Relation], frames: Frames, starred: set[str], *, want: bool) -> Relation:
    """Rewrite a query (SELECT, set operation, parenthesised) and what it offers its reader."""
    if isinstance(node, exp.Subquery):
        return _query(node.this, ctes, frames, starred, want=want)
    ctes = _with(node, ctes, frames, starred)
    if isinstance(node, exp.Select):
        names, twins = _select(node, ctes, frames, starred)
        return _offer([node], [names], [twins], want=want)
    if isinstance(node, exp.SetOperation):
        leaves = list(_leaves(node))
        done = [_select(leaf, _with(leaf, ctes, frames, starred), frames, starred) if isinstance(leaf, exp.Select)
                else (None, {}) for leaf in leaves]
        if any(names is None for names, _ in done):
            return Relation(None)
        return _offer(leaves, [n for n, _ in done], [t for _, t in done], want=want)  # type: ignore[misc]
    return Relation(None)


def _with(node: exp.Expr, ctes: dict[str, Relation], frames: Frames, starred: set[str]) -> dict[str, Relation]:
    with_ = _arg(node, _WITH)
    if with_ is None:
        return ctes
    ctes = dict(ctes)
    for cte in with_.expressions:
        ctes[cte.alias_or_name] = _query(cte.this, ctes, frames, starred, want=cte.alias_or_name not in starred)
    return ctes


def _leaves(node: exp.Expr) -> Iterator[exp.Expr]:
    if isinstance(node, exp.SetOperation):
        yield from _leaves(node.this)
        yield from _leaves(node.expression)
    elif isinstance(node, exp.Subquery):
        yield from _leaves(node.this)
    else:
        yield node


def _offer(selects: list[exp.Select], names: list[list[str]], twins: list[dict[int, exp.Column]], *,
           want: bool) -> Relation:
    """Add the twins every branch has (at the same output positions) as extra outputs."""
    columns = names[0]
    if not want:
        return Relation(columns)
    shared = sorted(set.intersection(*(set(t) for t in twins))) if twins else []
    keys: dict[str, str] = {}
    for position in shared:
        name = columns[position]
        if name in keys or columns.count(name) > 1:
            continue
        keys[name] = KEYS.name(name)
    for select, twin in zip(selects, twins):
        for position in shared:
            if columns[position] in keys:
                select.append("expressions", exp.alias_(twin[position], keys[columns[position]]))
    return Relation(columns, keys)


def _select(select: exp.Select, ctes: dict[str, Relation], frames: Frames,
            starred: set[str]) -> tuple[list[str] | None, dict[int, exp.Column]]:
    """Rewrite one SELECT; its output names and, by position, the twin of each output that is
    a twinned column (offered only if the SELECT's rows are not grouped)."""
    sources: dict[str, Relation] = {}
    for item in _sources(select):
        alias = item.alias_or_name
        if isinstance(item, exp.Table) and not isinstance(item.this, exp.Func):
            sources[alias] = _table(item, select, ctes, frames)
        elif isinstance(item, exp.Subquery):
            sources[alias] = _query(item.this, ctes, frames, starred, want=not _starred(select, alias))
        else:
            sources[alias] = Relation(None)
    for nested in _nested_queries(select):
        _query(nested, ctes, frames, starred, want=False)
    # an unqualified name that is also a SELECT alias may mean the alias: left alone
    aliases = {p.alias for p in select.expressions if isinstance(p, exp.Alias) and
               not (isinstance(p.this, exp.Column) and p.this.name == p.alias)}
    resolve = _resolver(sources, aliases)
    for node in list(_own(select)):
        if isinstance(node, (exp.EQ, exp.NEQ, exp.NullSafeEQ, exp.NullSafeNEQ)):
            left, right = resolve(node.this), resolve(node.expression)
            if left is not None and right is not None:
                node.set("this", left)
                node.set("expression", right)
        elif isinstance(node, exp.Window):
            node.set("partition_by", [resolve(p) or p for p in node.args.get("partition_by") or []])
        elif isinstance(node, exp.Count) and isinstance(node.this, exp.Distinct) and len(node.this.expressions) == 1:
            twin = resolve(node.this.expressions[0])
            if twin is not None:
                named = node.this.expressions[0].alias_or_name  # the output's name, were it unaliased
                node.this.set("expressions", [twin])
                if isinstance(node.parent, exp.Select):
                    node.replace(exp.alias_(node.copy(), named))
    names = [p.alias_or_name for p in select.expressions]
    if _stars(select) != set() or select.args.get("group") or any(
            isinstance(n, exp.AggFunc) for p in select.expressions for n in p.find_all(exp.AggFunc)):
        return names, {}
    twins = {}
    for position, projection in enumerate(select.expressions):
        inner = projection.this if isinstance(projection, exp.Alias) else projection
        twin = resolve(inner)
        if twin is not None:
            twins[position] = twin
    return names, twins


def _nested_queries(select: exp.Select) -> list[exp.Expr]:
    """Queries nested in the SELECT's expressions (scalar and IN subqueries), not its sources."""
    out = []
    stack = list(select.iter_expressions())
    while stack:
        item = stack.pop()
        if isinstance(item, (exp.From, exp.Join)) or item.arg_key in _WITH:
            if isinstance(item, exp.Join):
                stack.extend(v for k, v in item.args.items() if k != "this" and isinstance(v, exp.Expr))
            continue
        if isinstance(item, (exp.Query, exp.Subquery)):
            out.append(item)
            continue
        stack.extend(item.iter_expressions())
    return out


def _table(table: exp.Table, select: exp.Select, ctes: dict[str, Relation], frames: Frames) -> Relation:
    name, alias = table.name, table.alias_or_name
    if name in ctes:
        return ctes[name]
    columns = list(frames.columns.get(name, [])) or None
    if name not in frames.keyed or _starred(select, alias):
        return Relation(columns)
    keyed, keys = frames.keyed[name]
    if not table.alias:
        table.set("alias", exp.TableAlias(this=exp.to_identifier(name)))
    table.set("this", exp.to_identifier(keyed))
    return Relation(columns, dict(keys))


def _resolver(sources: dict[str, Relation], aliases: set[str]) -> Callable[[exp.Expr], exp.Column | None]:
    """The twin (as a column of its source) of a column, when it has one for certain."""

    def resolve(node: exp.Expr) -> exp.Column | None:
        if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
            return None
        if node.table:
            alias = node.table if node.table in sources else None
        elif node.name in aliases:
            return None
        else:
            having = [a for a, r in sources.items() if r.columns is None or node.name in r.columns]
            alias = having[0] if len(having) == 1 and sources[having[0]].columns is not None else None
        if alias is None or node.name not in sources[alias].keys:
            return None
        return exp.column(sources[alias].keys[node.name], table=alias)

    return resolve


# -- top 1 per partition --------------------------------------------------------------------------
@dataclass(frozen=True)
class TopOne:
    """A table's rows, one per partition: the first by `order` (the window's ORDER BY, as SQL).

    `pinned` (not part of what the table is) names the columns the query holds to a constant:
    a query about one run reads few rows, and may be better off without the whole table.
    """

    table: str
    partition: tuple[str, ...]
    order: str
    pinned: tuple[str, ...] = field(default=(), compare=False)

    def sql(self) -> str:
        """The query that computes it, in the dialect polars runs."""
        return (f"SELECT * FROM {self.table} QUALIFY ROW_NUMBER() OVER (PARTITION BY "
                f"{', '.join(self.partition)} ORDER BY {self.order}) = 1")


def top_one_tables(tree: exp.Expr, tables: set[str], register: Callable[[TopOne], str | None],
                   order_sql: Callable[[exp.Expr], str]) -> exp.Expr:
    """`QUALIFY row_number() OVER (PARTITION BY p ORDER BY o) = 1` read from a table's top-1 rows.

    For a SELECT whose window orders by columns of one catalog table T (in `tables`: read
    directly, not a CTE), where every other FROM item is a catalog table joined to T ON
    equalities that cover its key (so each T row meets at most one row of it): the window keeps
    one T row per partition, and that row is T's first by `o` among rows with the same
    partition values... provided the partition decides everything else that drops rows. So the
    partition (through the join equalities, as T columns) must hold T's join columns and the
    T columns any WHERE condition reads; a condition `T.c = constant` adds c to it instead.
    Then T is read from `register(TopOne(...))` (unless it declines with None) and the
    condition leaves QUALIFY (any other QUALIFY condition reads no window now: it moves to WHERE).
    """
    tables = tables - {cte.alias_or_name for cte in tree.find_all(exp.CTE)}  # a CTE may shadow a table
    for select in list(tree.find_all(exp.Select)):
        _top_one(select, tables, register, order_sql)
    return tree


def _row_number_is_one(node: exp.Expr) -> exp.Window | None:
    if not isinstance(node, (exp.EQ, exp.LTE, exp.LT)):
        return None
    window, bound = node.this, node.expression
    if isinstance(bound, exp.Window) and isinstance(node, exp.EQ):
        window, bound = bound, window
    if not isinstance(window, exp.Window) or not isinstance(window.this, exp.RowNumber):
        return None
    if not isinstance(bound, exp.Literal) or bound.is_string:
        return None
    limit = {exp.EQ: "1", exp.LTE: "1", exp.LT: "2"}[type(node)]
    return window if bound.this == limit else None


def _conjuncts(node: exp.Expr | None) -> list[exp.Expr]:
    if node is None:
        return []
    return list(node.flatten()) if isinstance(node, exp.And) else [node]


def _top_one(select: exp.Select, tables: set[str], register: Callable[[TopOne], str | None],
             order_sql: Callable[[exp.Expr], str]) -> None:
    qualify = select.args.get("qualify")
    if qualify is None or select.args.get("group") or select.args.get("having"):
        return
    conditions = _conjuncts(qualify.this)
    found = [(c, w) for c in conditions if (w := _row_number_is_one(c)) is not None]
    windows = [n for n in _own(select) if isinstance(n, exp.Window)]
    aggregates = [n for n in _own(select) if isinstance(n, exp.AggFunc) and not isinstance(n.parent, exp.Window)]
    if len(found) != 1 or len(windows) != 1 or aggregates:
        return
    condition, window = found[0]
    aliases = {p.alias for p in select.expressions if isinstance(p, exp.Alias)}
    if any(c.name in aliases and not c.table for q in conditions for c in q.find_all(exp.Column)):
        return  # QUALIFY reads a SELECT alias, which WHERE could not
    items = _sources(select)
    if not items or any(not isinstance(i, exp.Table) or isinstance(i.this, exp.Func) or i.args.get("version")
                        or i.name not in tables for i in items):
        return
    by_alias = {i.alias_or_name: i for i in items}
    if len(by_alias) != len(items):
        return
    order = window.args.get("order")
    if order is None or not order.expressions:
        return

    def owner(column: exp.Expr) -> tuple[str, str] | None:
        if not isinstance(column, exp.Column) or isinstance(column.this, exp.Star):
            return None
        if column.table:
            return (column.table, column.name) if column.table in by_alias else None
        having = [a for a, t in by_alias.items() if column.name in TABLES[t.name].schema]
        return (having[0], column.name) if len(having) == 1 else None

    owners = [owner(o.this) for o in order.expressions]
    if None in owners or len({a for a, _ in owners}) != 1:  # type: ignore[misc]
        return
    target = owners[0][0]  # type: ignore[index]
    # the other tables: inner-joined ON equalities with the target that cover their keys
    same: dict[tuple[str, str], str] = {}  # (other alias, column) -> the target column it equals
    for join in select.args.get("joins") or []:
        if join.args.get("using") or join.args.get("side") or join.args.get("on") is None or \
                (join.args.get("kind") or "").upper() not in ("", "INNER"):
            return
        for equal in _conjuncts(join.args["on"]):
            ends = [owner(equal.this), owner(equal.expression)] if isinstance(equal, exp.EQ) else [None]
            if None in ends or len({a for a, _ in ends}) != 2 or target not in {a for a, _ in ends}:  # type: ignore[misc]
                return
            (alias, mine), = [e for e in ends if e[0] != target]  # type: ignore[index, misc]
            (_, theirs), = [e for e in ends if e[0] == target]  # type: ignore[index, misc]
            same[(alias, mine)] = theirs
    for alias, item in by_alias.items():
        if alias != target and not set(TABLES[item.name].key) <= {c for a, c in same if a == alias}:
            return
    target_joined = set(same.values())
    partition: set[str] = set()
    for item in window.args.get("partition_by") or []:
        where = owner(item)
        if where is None:
            return
        column = where[1] if where[0] == target else same.get(where)
        if column is None:
            return
        partition.add(column)
    # WHERE: each condition must keep or drop whole partitions
    fixed, pinned = set(), set()  # target columns equal to a constant (pinned: here or through a join)
    where = select.args.get("where")
    for cond in _conjuncts(where.this if where is not None else None):
        if isinstance(cond, exp.EQ) and any(isinstance(s, exp.Literal) for s in (cond.this, cond.expression)):
            column = cond.this if isinstance(cond.expression, exp.Literal) else cond.expression
            at = owner(column)
            if at is not None and at[0] == target:
                fixed.add(at[1])
                continue
            if at is not None and at in same:
                pinned.add(same[at])
        for column in cond.find_all(exp.Column):
            at = owner(column)
            if at is None or cond.find(exp.Query) is not None:
                return
            if at[0] == target and at[1] not in partition:
                return
    if not target_joined <= partition | fixed:
        return
    table = by_alias[target]
    spec = TopOne(table.name, tuple(sorted(partition | fixed)),
                  ", ".join(order_sql(_unqualified(o)) for o in order.expressions), tuple(sorted(fixed | pinned)))
    if not spec.partition:
        return
    name = register(spec)
    if name is None:
        return
    if not table.alias:
        table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
    table.set("this", exp.to_identifier(name))
    select.set("qualify", None)
    rest = [c for c in conditions if c is not condition]  # no window left to wait for: plain filters
    if rest:
        select.where(*rest, copy=False)


def _unqualified(ordered: exp.Expr) -> exp.Expr:
    copy = ordered.copy()
    for column in copy.find_all(exp.Column):
        column.set("table", None)
    return copy


# -- distinct counts per start --------------------------------------------------------------------
@dataclass(frozen=True)
class PerStart:
    """A lateral call whose rows are only counted: `count(DISTINCT u.id)` in `counts`, grouped
    by the left table's columns `keys`."""

    keys: tuple[str, ...]
    counts: tuple[exp.Count, ...]

    def rewrite(self, alias: str, column: str) -> None:
        """Read each count from the call's per-start frame instead: `max(u.<column>)`, which is
        the start's count when each group holds one start (the caller has checked that)."""
        for count in self.counts:
            counted = exp.Max(this=exp.column(column, table=alias))
            bare = isinstance(count.parent, exp.Select)  # unaliased: keep the name polars gives it
            count.replace(exp.alias_(counted, count.this.expressions[0].name) if bare else counted)


def distinct_per_start(call: exp.Table, left: exp.Table) -> PerStart | None:
    """`SELECT <r columns>, count(DISTINCT u.id) FROM r, upstream(r.x) u [WHERE <r only>]
    GROUP BY <r columns>`: the call's alias read nowhere else, no other aggregate or window.

    Each row of a call is a distinct node of its start, so a group that holds one start (with
    any number of r rows) counts exactly that start's rows; a start that reaches nothing has
    no rows, and its r rows drop out of the inner join either way. Whether every group holds
    one start depends on the data: the caller checks it before rewriting (`PerStart.rewrite`).
    """
    join, select = call.parent, call.parent.parent if call.parent is not None else None
    if not isinstance(join, exp.Join) or not isinstance(select, exp.Select) or _sources(select) != [left, call]:
        return None
    on, group = join.args.get("on"), select.args.get("group")
    if join.args.get("side") or join.args.get("using") or (join.args.get("kind") or "").upper() not in ("", "INNER"):
        return None
    if not isinstance(on, exp.EQ) or group is None or select.args.get("qualify") or _nested_queries(select):
        return None
    u, r = call.alias_or_name, left.alias_or_name
    keys = [g.name for g in group.expressions if isinstance(g, exp.Column) and g.table == r]
    if len(keys) != len(group.expressions):
        return None
    own = list(_own(select))
    counts = [n for n in own if isinstance(n, exp.AggFunc) and _counts_ids(n, u)]
    if not counts or any(isinstance(n, (exp.Window, exp.Star)) or
                         (isinstance(n, exp.AggFunc) and n not in counts) for n in own):
        return None
    aliases = {p.alias for p in select.expressions if isinstance(p, exp.Alias)}
    order = select.args.get("order")
    for column in (n for n in own if isinstance(n, exp.Column)):
        if column.table == r or column is on.this and column.table == u and column.name == "start":
            continue
        if column.table == u and column.parent.parent in counts:
            continue
        if not column.table and column.name in aliases and order is not None and column.find_ancestor(exp.Order):
            continue
        return None
    return PerStart(tuple(keys), tuple(counts))


def _counts_ids(node: exp.Expr, alias: str) -> bool:
    """Whether `node` is count(DISTINCT <alias>.id)."""
    if not isinstance(node, exp.Count) or not isinstance(node.this, exp.Distinct):
        return False
    args = node.this.expressions
    return len(args) == 1 and isinstance(args[0], exp.Column) and (args[0].table, args[0].name) == (alias, "id")


__all__ = ["Frames", "PerStart", "Relation", "TopOne", "distinct_per_start", "integer_keys", "top_one_tables"]
