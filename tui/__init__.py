"""The lineage TUI (`braid tui`): search any node, walk its upstream and downstream across
MLflow, W&B and DVC, read every fact braid holds about it, draw its neighbourhood, run queries
and compare runs, all from the keyboard.

>>> from braid.tui import BraidApp                       # doctest: +SKIP
>>> BraidApp(".braid", node="mlflow:model_version/churn/2").run()   # doctest: +SKIP

Only the CLI imports this package (`braid tui`); it builds on `braid.unify` alone.
"""

from ._app import BraidApp, run

__all__ = ["BraidApp", "run"]
