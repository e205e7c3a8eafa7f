"""The bytes of what W&B and DVC runs wrote, found where the tools keep them, for copying into
the target run.

A run's outputs (`output` edges) are files, or containers of files (`part_of`: a DVC directory,
a W&B artifact). Each file is looked for with `braid verify`'s locators (the DVC cache in both
layouts, the W&B artifact cache, the copy the W&B SDK staged for an offline run, a local file a
W&B reference names, and the file at its DVC path
in the repository) and copied only from a place whose bytes hash to the digest the tool
recorded: a workspace that holds another version is passed over. A file found nowhere is reported
as not carried, with the reason.

Its path in the target run is the one the tool recorded: the DVC path (`data/prepared/train.csv`),
or `<artifact name>/<path in the artifact>` for W&B; `_artifacts.destination` checks it like any
other path from a tool's metadata.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from mlflow import MlflowClient

from braid.unify.export._verify import (Context, dvc_cache, dvc_workspace, hash_file, local_file, wandb_cache,
                                        wandb_cache_dir, wandb_staging)
from braid.unify.source import SourceSpec

from ._artifacts import ARTIFACT_SCHEMA, Download, RunFiles, SourceFile, _listing, copied
from ._idmap import IdMap
from ._plan import LONG_VALUE_DIR, Plan, SourceRead

NO_COPY = ("no copy of the recorded bytes on this machine (not in the DVC or W&B cache, the workspace or a "
           "local file)")
# where bytes may be, in the order they are tried: content-addressed copies first, the workspace
# last (it may hold another version: every candidate is hashed before it is taken)
LOCATORS = (dvc_cache, wandb_cache, wandb_staging, local_file, dvc_workspace)


def output_files(g: dict[str, pl.DataFrame], runs: list[str]) -> pl.DataFrame:
    """(run node, file node) for every file the runs wrote, members of containers included."""
    outs = g["edges"].filter((pl.col("kind") == "output") & pl.col("src").is_in(runs)).select(run="src", out="dst")
    members = g["edges"].filter(pl.col("kind") == "part_of").select(file="src", out="dst")
    inside = outs.join(members, on="out", how="inner").select("run", "file")
    containers = members["out"].unique().implode()
    alone = outs.filter(~pl.col("out").is_in(containers)).select("run", file="out")
    return pl.concat([inside, alone]).unique(maintain_order=True)


def _path() -> pl.Expr:
    """A file's path in the target run: its DVC path, or `<artifact name>/<path>` for W&B."""
    attrs = pl.col("attrs")
    return (pl.col("attrs").str.json_path_match("$.artifact").fill_null("") + "/"
            + attrs.str.json_path_match("$.path").fill_null(pl.col("name"))).str.strip_prefix("/")


def _candidates(nodes: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    frames = [locate(nodes, ctx).with_columns(rank=pl.lit(i)) for i, locate in enumerate(LOCATORS)]
    return pl.concat(frames).sort("node", "rank", maintain_order=True)


def tool_files(spec: SourceSpec, plan: Plan) -> RunFiles:
    """A W&B or DVC source run's output files, each from a place that holds the recorded bytes."""
    g = plan.read.graph
    prefix = f"{spec.name}:run/"
    files = output_files(g, [prefix + r for r in plan.run_ids])
    nodes = g["nodes"].filter(pl.col("id").is_in(files["file"].implode()))
    root = spec.path("repo") if spec.tool == "dvc" else None
    roots = {spec.name: str(root or Path(".").resolve())} if spec.tool == "dvc" else {}
    ctx = Context(g["nodes"], g["edges"], roots, head_nodes=frozenset(), wandb_cache=wandb_cache_dir())
    found: dict[str, str] = {}
    for node, file, expected, algorithm in _candidates(nodes, ctx).select(
            "node", "file", "expected", "algorithm").iter_rows():
        if node not in found and Path(file).is_file() and hash_file(file, algorithm) == expected:
            found[node] = file
    path_of = dict(nodes.select("id", path=_path()).iter_rows())
    by_run: dict[str, list[SourceFile]] = {}
    for run, file in files.iter_rows():
        local = found.get(file)
        by_run.setdefault(run.removeprefix(prefix), []).append(
            SourceFile(path_of.get(file) or file, local, None if local else NO_COPY))

    def files_of(run: str) -> tuple[list[SourceFile], str | None, Download]:
        return by_run.get(run, []), None, _no_download
    return files_of


def _no_download(path: str, folder: str) -> str:  # every file here is local or missing
    raise FileNotFoundError(path)


def verify_tool_artifacts(spec: SourceSpec, plan: Plan, idmap: IdMap, target_read: SourceRead,
                          target: MlflowClient) -> dict[str, object]:
    """The files the runs wrote, by path and md5 as the tool recorded them, against the target's."""
    from ._report import _compare

    g, prefix = plan.read.graph, f"{spec.name}:run/"
    files = output_files(g, [prefix + r for r in plan.run_ids])
    nodes = g["nodes"].select(file="id", md5=pl.col("digest").str.extract(r"^md5:([0-9a-f]{32})$", 1), path=_path())
    expected = files.join(nodes, on="file").select(owner=pl.col("run").str.strip_prefix(prefix), path="path", md5="md5")
    _, _, refused = copied(plan, idmap)
    if refused:
        expected = expected.filter(~pl.struct("owner", "path").is_in([{"owner": r, "path": p} for r, p in refused]))
    back = {t: s for s in plan.run_ids if (t := idmap.run_target(s)) is not None}
    actual = _listing(target_read, target, back).filter(~pl.col("path").str.starts_with(f"{LONG_VALUE_DIR}/"))
    return _compare(expected.unique().sort(pl.all()), actual.select("owner", "path", "md5").unique())
