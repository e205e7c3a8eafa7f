"""The lineage query dialect: SQL with graph functions, parsed by sqlglot, run on polars.

>>> from braid.unify import open_catalog                                   # doctest: +SKIP
>>> open_catalog(".braid").query(
...     "SELECT id, depth FROM upstream(:mv, kinds => ['dataset', 'code'])",
...     {"mv": "mlflow:model_version/churn/2"})                             # doctest: +SKIP

`Braid` is the sqlglot dialect; `GRAPH_FUNCTIONS` and `SQL_FUNCTIONS` are the declarations the
binder checks against and the reference (`reference()`, docs/query.md) is generated from.
"""

from ._dialect import Braid, parse
from ._emit import ENGINES, emit_sql
from ._execute import MAX_ROWS, execute
from ._functions import GRAPH_FUNCTIONS, SQL_FUNCTIONS
from ._reference import reference

__all__ = ["ENGINES", "GRAPH_FUNCTIONS", "MAX_ROWS", "SQL_FUNCTIONS", "Braid", "emit_sql", "execute", "parse",
           "reference"]
