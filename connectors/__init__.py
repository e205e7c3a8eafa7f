"""Connectors: one package per tool, each turning a source into braid's normalised frames.

>>> sorted(CONNECTORS)
['dvc', 'mlflow', 'wandb']
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ._discover import discover

if TYPE_CHECKING:
    from braid.unify.source import Connector

# tool -> "module:function"; imported on first use so `braid --help` stays fast
CONNECTORS: dict[str, str] = {
    "dvc": "braid.connectors.dvc:read_source",
    "mlflow": "braid.connectors.mlflow:read_source",
    "wandb": "braid.connectors.wandb:read_source",
}


def connector(tool: str) -> Connector:
    """The read function of a tool's connector."""
    module, _, func = CONNECTORS[tool].partition(":")
    return getattr(import_module(module), func)  # type: ignore[no-any-return]


__all__ = ["CONNECTORS", "connector", "discover"]
