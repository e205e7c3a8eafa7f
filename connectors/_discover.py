"""Find the sources in a folder, for `braid init`.

Each rule is data: a tool, what to look for, and the source entry it yields. Discovery only
reads: sqlite files are opened read-only.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".braid", ".dvc", "mlartifacts"}
MAX_DEPTH = 3
SQLITE_MAGIC = b"SQLite format 3\x00"


def _is_mlflow_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            if fh.read(16) != SQLITE_MAGIC:
                return False
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except (OSError, sqlite3.Error):
        return False
    return {"alembic_version", "experiments", "runs", "metrics"} <= names


def _walk(root: Path) -> Iterator[Path]:
    """Files and folders under `root`, shallow first, skipping tools' own folders."""
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        yield Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and depth < MAX_DEPTH)
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _is_dvc_repo(path: Path) -> bool:
    return (path / ".dvc" / "config").is_file()


def discover(folder: Path) -> list[dict[str, Any]]:
    """Source entries for braid.toml, with paths relative to `folder`.

    >>> discover(Path("/nonexistent"))
    []
    """
    folder = folder.resolve()
    if not folder.is_dir():
        return []
    found: list[dict[str, Any]] = []
    for path in _walk(folder):
        if path.is_dir():
            if _is_dvc_repo(path):
                found.append({"tool": "dvc", "repo": path.relative_to(folder).as_posix() or "."})
        elif path.suffix in {".db", ".sqlite", ".sqlite3"} and _is_mlflow_sqlite(path):
            rel = path.relative_to(folder).as_posix()
            found.append({"tool": "mlflow", "uri": f"sqlite:///{rel}"})
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        # a URL that may carry a password stays in the environment: the entry names no uri,
        # and the sync reads MLFLOW_TRACKING_URI again
        plain = uri.startswith(("http://", "https://")) and "@" not in uri
        found.append({"tool": "mlflow", "uri": uri} if plain else {"tool": "mlflow"})
    names: dict[str, int] = {}
    for entry in found:
        n = names[entry["tool"]] = names.get(entry["tool"], 0) + 1
        entry["name"] = entry["tool"] if n == 1 else f"{entry['tool']}-{n}"
    return found
