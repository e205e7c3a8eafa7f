"""braid's graph: schema, catalog, identity resolution and lineage traversal.

>>> from braid.unify import open_catalog                          # doctest: +SKIP
>>> cat = open_catalog(".braid")                                   # doctest: +SKIP
>>> cat.upstream("mlflow:model_version/churn/2", kinds=["dataset"])  # doctest: +SKIP
"""

from .catalog import Catalog, open_catalog
from .errors import (
    BraidError,
    CatalogCorrupt,
    CatalogError,
    CatalogLocked,
    CatalogMissing,
    CatalogMoved,
    ConfigError,
    NodeNotFound,
    SchemaVersionError,
    SourceAuthError,
    SourceError,
    SourceUnreachable,
    UsageError,
)
from .schema import EDGE_KINDS, NODE_KINDS, TABLES

__all__ = [
    "EDGE_KINDS", "NODE_KINDS", "TABLES", "BraidError", "Catalog", "CatalogCorrupt", "CatalogError",
    "CatalogLocked", "CatalogMissing", "CatalogMoved", "ConfigError", "NodeNotFound", "SchemaVersionError",
    "SourceAuthError", "SourceError", "SourceUnreachable", "UsageError", "open_catalog",
]
