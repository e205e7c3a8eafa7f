"""The examples in docstrings run as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import braid.connectors
import braid.unify

MODULES = sorted(
    m.name for pkg in (braid.unify, braid.connectors)
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
