"""The query reference, generated from the declarations: `braid query --help` and docs/query.md.

>>> "upstream(node, depth => int" in reference()
True
"""

from __future__ import annotations

from ..schema import TABLES
from ._functions import ARG_TYPES, GRAPH_FUNCTIONS, SQL_FUNCTIONS

# The example questions of issue 5; tests/unify/test_query_examples.py runs each of them on the
# demo's MLflow + DVC + W&B catalog, tests/unify/test_query.py on several MLflow sources.
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Every dataset version and commit upstream of a registered model version",
     "SELECT id, kind, tool, depth FROM upstream(:model_version, kinds => ['dataset', 'code'])"),
    ("Every model and registry version downstream of a dataset, within 5 hops",
     "SELECT id, kind, depth FROM downstream(:dataset, depth => 5)\n"
     "WHERE kind IN ('model', 'model_version')"),
    ("The path from a data file to a model version",
     "SELECT path, step, id, via_kind FROM paths(:dataset, :model_version) ORDER BY path, step"),
    ("The 10 best runs by a metric, across tools (last value of each run)",
     "SELECT r.tool, r.source, r.name, m.value FROM runs r JOIN metrics m ON m.run_id = r.id\n"
     "WHERE m.key = :metric\n"
     "QUALIFY row_number() OVER (PARTITION BY r.id ORDER BY m.step DESC, m.timestamp DESC) = 1\n"
     "ORDER BY m.value LIMIT 10"),
    ("The params that differ between two runs",
     "WITH a AS (SELECT key, value FROM params WHERE run_id = :run_a),\n"
     "     b AS (SELECT key, value FROM params WHERE run_id = :run_b)\n"
     "SELECT coalesce(a.key, b.key) AS key, a.value AS a, b.value AS b\n"
     "FROM a FULL JOIN b ON a.key = b.key\n"
     "WHERE a.value IS DISTINCT FROM b.value ORDER BY key"),
    ("What was upstream of a model version as of a past date",
     "SELECT id, kind, depth FROM upstream(:model_version, as_of => :moment)"),
    ("Runs that used a dataset whose bytes another tool holds too (a same_as link, or two: identity\n"
     " links each group of equal things to one of them)",
     "WITH link AS (SELECT src AS a, dst AS b FROM edges WHERE kind = 'same_as'\n"
     "              UNION ALL SELECT dst AS a, src AS b FROM edges WHERE kind = 'same_as'),\n"
     "     twin AS (SELECT a, b FROM link\n"
     "              UNION SELECT l1.a, l2.b FROM link l1 JOIN link l2 ON l2.a = l1.b WHERE l2.b <> l1.a),\n"
     "     shared AS (SELECT DISTINCT t.a AS id FROM twin t JOIN nodes x ON x.id = t.a JOIN nodes y ON y.id = t.b\n"
     "                WHERE x.kind = 'dataset' AND x.tool <> y.tool)\n"
     "SELECT DISTINCT r.tool, r.name AS run, e.src AS dataset\n"
     "FROM edges e JOIN shared s ON s.id = e.src JOIN runs r ON r.id = e.dst\n"
     "WHERE e.kind = 'input' ORDER BY 1, 2, 3"),
    ("For each registered model version, the number of distinct datasets in its lineage",
     "SELECT r.name, r.version, count(DISTINCT u.id) AS datasets\n"
     "FROM registry r, upstream(r.model_version_id, kinds => ['dataset']) u\n"
     "GROUP BY r.name, r.version ORDER BY r.name, r.version"),
)


def reference(*, markdown: bool = True) -> str:
    """The reference: tables and columns, graph functions and arguments, SQL functions, examples."""
    h1, h2 = ("# ", "## ") if markdown else ("", "")
    out = [f"{h1}braid query: SQL over the lineage catalog", ""]
    out += [
        "A DuckDB-flavoured SELECT (CTEs, joins, aggregates, window functions, QUALIFY, lists) over",
        "the catalog's tables, plus graph table functions evaluated by the traversal index. Parameters",
        "are written `:name` and given with `--param name=value` (CLI) or `params={...}` (Python).",
        "`EXPLAIN SELECT ...` shows the plan; `FROM t FOR SYSTEM_TIME AS OF TIMESTAMP '...'` reads a",
        "table as it was then. Only SELECT runs: nothing writes, reads files or reaches the network.",
        "",
        f"{h2}Graph functions",
        "",
    ]
    for fn in GRAPH_FUNCTIONS.values():
        out += [f"`{fn.signature()}`" if markdown else fn.signature(), "", f"  {fn.doc}.", ""]
        out += [f"- `{a.name}` ({a.type}{', required' if a.required else ''}): {a.doc}" for a in fn.args]
        extra = [*fn.before, *fn.after]
        out += ["", "  Returns the nodes columns plus: " + ", ".join(f"`{n}` ({d})" for n, _, d in extra) + ".",
                "", f"  Example: `{fn.example}`", ""]
    out += [f"{h2}Argument types", ""]
    out += [f"- {name}: {doc}" for name, doc in ARG_TYPES.items()]
    out += ["", f"{h2}Tables", ""]
    for name, table in TABLES.items():
        out += [f"{'### ' if markdown else ''}{name}: {table.doc}", ""]
        out += [f"- `{col}` {dtype}: {doc}" for col, (dtype, doc) in table.columns.items()]
        out.append("")
    out += [f"{h2}Functions", ""]
    for kind in ("scalar", "aggregate", "window"):
        names = [f for f in SQL_FUNCTIONS.values() if f.kind == kind]
        out += [f"{'### ' if markdown else ''}{kind}", ""]
        out += [f"- `{f.example}`: {f.doc}" for f in names]
        out.append("")
    out += [f"{h2}Examples", ""]
    for title, sql in EXAMPLES:
        out += [f"{title}:", "", "```sql" if markdown else "", sql + ";", "```" if markdown else "", ""]
    return "\n".join(line for line in out).rstrip() + "\n"


__all__ = ["EXAMPLES", "reference"]
