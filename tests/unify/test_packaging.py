"""The card's layout installs as braid.connectors, braid.unify and braid.tui."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CARD_FOLDERS = {"braid.connectors": "connectors", "braid.unify": "unify", "braid.tui": "tui"}


def test_every_package_folder_is_listed_in_pyproject() -> None:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setup["package-dir"] == CARD_FOLDERS
    on_disk = set()
    for package, folder in CARD_FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((package, *rel)))
    assert set(setup["packages"]) == on_disk


def test_the_console_script_and_python_api() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["braid"] == "braid.unify.cli:main"
    import braid.unify

    assert callable(braid.unify.open_catalog)


@pytest.mark.skipif(os.environ.get("BRAID_REQUIRE_NATIVE") != "1",
                    reason="the compiled W&B decoder is optional; CI (.ci/run) sets BRAID_REQUIRE_NATIVE=1")
def test_compiled_decoder_is_built() -> None:
    """CI installs with a compiler: the decoder must have been built, or its tests would only skip."""
    from braid.connectors.wandb import _native

    assert _native.decoder is not None, "braid.connectors.wandb._logdecode was not built by `pip install -e .`"


@pytest.mark.skipif(os.environ.get("BRAID_REQUIRE_NATIVE") != "1",
                    reason="the compiled walk is optional; CI (.ci/run) sets BRAID_REQUIRE_NATIVE=1")
def test_compiled_walk_is_built() -> None:
    """CI installs with a compiler: the traversal walk must have been built, or the tests that
    compare it with the numpy walk would only skip."""
    from braid.unify import _native

    assert _native.walker is not None, "braid.unify._walk was not built by `pip install -e .`"
