"""One real workspace for the TUI tests: git + DVC pipeline + MLflow runs, synced, then copied
into a catalog whose random ids are replaced by stable ones (so screenshots can be compared).

The copy keeps every row, column and link of the real catalog; only the tokens the tools make
up at random (MLflow run and model ids, the workspace's temporary path) are renamed, and git
commits are made at a fixed date so their shas repeat.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from braid.unify.store import Manifest, SourceEntry, Writer, load_frame, read_manifest
from braid.unify.schema import canonical
from tests.conftest import Demo, built_once

STABLE_ROOT = "/work/churn-demo"


@dataclass(frozen=True)
class Workspace:
    folder: Path
    catalog: Path  # the synced catalog, as braid wrote it
    stable: Path  # the same catalog with stable ids


def _stable_tokens(catalog: Path, folder: Path) -> dict[str, str]:
    """Random token -> a stable one of the same length."""
    from braid.unify import open_catalog

    cat = open_catalog(catalog)
    # MLflow and W&B make run ids up at random; DVC's come from commits (fixed-date here)
    runs = cat.table("runs").filter(pl.col("tool").is_in(["mlflow", "wandb"])).select("id", "name").sort("name")
    tokens: dict[str, str] = {}
    for i, (run_id, name) in enumerate(runs.rows()):
        native = run_id.rsplit("/", 1)[1]
        alphabet = "0123456789abcdef" if re.fullmatch(r"[0-9a-f]+", native) else "0123456789abcdefghijklmnopqrstuvwxyz"
        digest = int(hashlib.md5(f"run {name} {i}".encode()).hexdigest(), 16)
        tokens[native] = "".join(alphabet[(digest >> (5 * k)) % len(alphabet)] for k in range(len(native)))
    models = cat.edges.filter(pl.col("kind") == "output", pl.col("dst").str.starts_with("mlflow:model/"))
    names = dict(runs.rows())
    for run_id, model_id in models.select("src", "dst").rows():
        native = model_id.rsplit("/", 1)[1].removeprefix("m-")
        tokens[native] = hashlib.md5(f"model {names[run_id]}".encode()).hexdigest()[: len(native)]
    tokens[str(folder.resolve())] = STABLE_ROOT
    return tokens


def stable_copy(catalog: Path, folder: Path, target: Path) -> None:
    """Write `catalog` to `target` with its random tokens renamed (one new generation)."""
    tokens = _stable_tokens(catalog, folder)
    pattern = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
    manifest = read_manifest(catalog)
    with Writer(target) as writer:
        out = Manifest()
        for name, entry in manifest.sources.items():
            tables = {}
            for table, ref in entry.tables.items():
                frame = load_frame(catalog, ref)
                frame = frame.with_columns(
                    pl.col(c).str.replace_many(list(tokens), list(tokens.values()))
                    for c, t in frame.schema.items() if t == pl.String
                ) if pattern else frame
                tables[table] = writer.write_frame(name, table, canonical(table, frame))
            out.sources[name] = SourceEntry(entry.tool, tables, {}, dict(entry.cursor))
        writer.commit(out)


@pytest.fixture(scope="session")
def workspace(demo_run: Demo, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The shared demo (its commits made at a fixed date) and its catalog's stable copy."""
    from braid.unify.config import load_config

    config = load_config(demo_run.folder / "braid.toml")
    stable = built_once(tmp_path_factory, demo_run.folder.parent / "stable",
                        lambda target: stable_copy(config.catalog, demo_run.folder, target))
    return Workspace(demo_run.folder, config.catalog, stable)
