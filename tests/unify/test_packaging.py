"""The card's layout installs as braid.connectors, braid.unify and braid.tui."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
