"""Copy each migrated run's artifact files (the bytes) from the source into the target run.

Every path comes from a tool's metadata (a listing the source server returned, a folder walked
on disk), so every one is checked before a byte is written: `checked_path` refuses absolute
paths, drive letters, `..` and empty or NUL-holding names, and `destination` refuses a path
that a symlink inside the staging folder would lead out of it. A refused file is not copied and
is reported with its reason; the rest of the run's files travel.

Files are staged per run in a temporary folder (local files copied, remote ones downloaded one
by one into a scratch folder first, so the tool's own downloader never writes outside it), then
logged to the target run with `log_artifacts`, which is what keeps the target's own layout
(a file root, a server's proxied store, or an object store) out of braid's hands. Logging a file
twice writes the same bytes to the same path, so a run whose copy was interrupted is copied
again in full on the next run and nothing is duplicated.

>>> checked_path("model/MLmodel")
'model/MLmodel'
>>> checked_path("./a//b.txt")
'a/b.txt'
>>> checked_path("../../etc/passwd")
Traceback (most recent call last):
...
braid.unify.migrate._artifacts.UnsafePath: '../../etc/passwd': the path leaves the run's artifact folder
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from mlflow import MlflowClient

from braid.connectors.mlflow._artifacts import local_root

from ._idmap import IdMap
from ._plan import LONG_VALUE_DIR, Plan, SourceRead

Step = Callable[[str, int, int | None], None]

# why a file from the source is not copied: reason -> the report's words
ABSOLUTE = "the path is absolute"
ESCAPES = "the path leaves the run's artifact folder"
EMPTY = "the path names no file"
NUL = "the path holds a NUL character"
LINK_OUT = "a symlink in the source leads out of the run's artifact folder"
UNREADABLE = "the source file could not be read"
_DRIVE = re.compile(r"^[A-Za-z]:")

ARTIFACT_SCHEMA = {"run_uuid": pl.String, "path": pl.String, "size": pl.Int64, "md5": pl.String}


class UnsafePath(ValueError):
    """A path from a tool's metadata that would be written outside the destination folder."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path!r}: {reason}")
        self.path = path
        self.reason = reason


def checked_path(path: str) -> str:
    """The path as a relative POSIX path that stays inside its folder, or UnsafePath."""
    if "\x00" in path:
        raise UnsafePath(path, NUL)
    posix = path.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise UnsafePath(path, ABSOLUTE)
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(path, ESCAPES)
    if not parts:
        raise UnsafePath(path, EMPTY)
    return "/".join(parts)


def destination(root: Path, path: str) -> Path:
    """Where `path` goes under `root`, checked to stay there once symlinks are followed."""
    dest = root.joinpath(*checked_path(path).split("/"))
    if not dest.resolve().is_relative_to(root.resolve()):
        raise UnsafePath(path, ESCAPES)
    return dest


@dataclass
class ArtifactCopy:
    """What copying the artifacts of the planned runs did."""

    copied: int = 0
    bytes: int = 0
    refused_paths: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class SourceFile:
    path: str       # as the source names it (not yet checked)
    local: str | None  # the file on disk, when the source's artifact root is local


def _walk_remote(client: MlflowClient, run_id: str, path: str | None = None) -> Iterator[SourceFile]:
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            yield from _walk_remote(client, run_id, info.path)
        else:
            yield SourceFile(info.path, None)


def source_files(client: MlflowClient, run_id: str, artifact_uri: str | None,
                 listed: pl.DataFrame) -> list[SourceFile]:
    """The run's files: from braid's listing of a local root, else from the source's artifact API."""
    root = local_root(artifact_uri)
    if root is not None:
        return [SourceFile(p, os.path.join(root, *p.split("/"))) for p in listed["path"].to_list()]
    return list(_walk_remote(client, run_id)) if artifact_uri else []


def _stage(client: MlflowClient, run_id: str, root: str | None, file: SourceFile, staging: Path,
           scratch: Path) -> int:
    """Put one source file at its checked place under `staging`; its size."""
    dest = destination(staging, file.path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if file.local is not None:
        real = os.path.realpath(file.local)
        if root is not None and not Path(real).is_relative_to(os.path.realpath(root)):
            raise UnsafePath(file.path, LINK_OUT)
        shutil.copyfile(real, dest)
    else:
        fetched = Path(client.download_artifacts(run_id, checked_path(file.path), str(scratch)))
        if not fetched.resolve().is_relative_to(scratch.resolve()):
            raise UnsafePath(file.path, ESCAPES)
        shutil.move(fetched, dest)
    return dest.stat().st_size


def copy_run(source: MlflowClient, target: MlflowClient, run_id: str, target_run_id: str,
             artifact_uri: str | None, listed: pl.DataFrame, tally: ArtifactCopy) -> None:
    """Copy one run's files into the target run; refused files are counted with their reason."""
    files = source_files(source, run_id, artifact_uri, listed)
    if not files:
        return
    root = local_root(artifact_uri)
    with tempfile.TemporaryDirectory(prefix="braid-artifacts-") as tmp:
        staging, scratch = Path(tmp, "run"), Path(tmp, "scratch")
        staging.mkdir()
        staged = 0
        for file in files:
            scratch.mkdir(exist_ok=True)
            try:
                tally.bytes += _stage(source, run_id, root, file, staging, scratch)
                staged += 1
            except UnsafePath as exc:
                tally.refused_paths.append((file.path, exc.reason))
            except OSError:
                tally.refused_paths.append((file.path, UNREADABLE))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        if staged:
            target.log_artifacts(target_run_id, str(staging))
        tally.copied += staged


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def remote_listing(client: MlflowClient, runs: dict[str, str]) -> pl.DataFrame:
    """(source run, path, size, md5) of the files of target runs (`runs`: target id -> source id),
    read through the target's artifact API and hashed, for checking a target braid cannot list."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="braid-readback-") as tmp:
        for target_id, source_id in runs.items():
            for file in _walk_remote(client, target_id):
                local = Path(client.download_artifacts(target_id, file.path, tmp))
                rows.append((source_id, file.path, local.stat().st_size, md5_of(local)))
                local.unlink()
    return pl.DataFrame(rows, schema=ARTIFACT_SCHEMA, orient="row")


# -- the migration's artifact phase: after the runs exist, before the registry -----------------------
def _listed(plan: Plan) -> dict[str, pl.DataFrame]:
    frame = plan.read.raw["artifacts"].filter(pl.col("owner_kind") == "run")
    return {k[0]: v for k, v in frame.partition_by("owner", as_dict=True).items()}


def copy_artifacts(plan: Plan, idmap: IdMap, source: MlflowClient, target: MlflowClient, step: Step) -> int:
    """Copy the files of every planned run not copied yet; the files copied by this call.

    The id map records each run's outcome (files copied, files refused with their reasons), so a
    re-run skips what is done."""
    now = 0
    uris = dict(plan.read.raw["runs"].select("run_uuid", "artifact_uri").iter_rows())
    listed, empty = _listed(plan), pl.DataFrame(schema={"path": pl.String})
    for n, run in enumerate(plan.run_ids):
        target_run = idmap.run_target(run)
        if idmap.get("artifacts", run) is None and target_run is not None:
            tally = ArtifactCopy()
            copy_run(source, target, run, target_run, uris.get(run), listed.get(run, empty), tally)
            idmap.set("artifacts", run, {"copied": tally.copied, "bytes": tally.bytes, "refused": tally.refused_paths})
            idmap.save()
            now += tally.copied
        step("artifacts", n + 1, len(plan.run_ids))
    return now


def copied(plan: Plan, idmap: IdMap) -> tuple[int, Counter[str], set[tuple[str, str]]]:
    """Files copied, files refused per reason, and the refused (run, path) pairs, over the planned runs."""
    done, refused, paths = 0, Counter[str](), set()
    for run in plan.run_ids:
        entry = idmap.get("artifacts", run) or {}
        done += entry.get("copied", 0)
        for path, reason in entry.get("refused", []):
            refused[reason] += 1
            paths.add((run, path))
    return done, refused, paths


def verify_artifacts(plan: Plan, idmap: IdMap, target_read: SourceRead, source: MlflowClient,
                     target: MlflowClient) -> dict[str, object]:
    """The planned runs' files in the source against the target's, by path, size and md5."""
    from ._report import _compare

    uris = dict(plan.read.raw["runs"].select("run_uuid", "artifact_uri").iter_rows())
    local = [r for r in plan.run_ids if local_root(uris.get(r)) is not None]
    remote = [r for r in plan.run_ids if r not in set(local) and uris.get(r)]
    listed = plan.read.raw["artifacts"].filter((pl.col("owner_kind") == "run") & pl.col("owner").is_in(local))
    expected = pl.concat([listed.select(run_uuid="owner", path="path", size="size", md5="md5").cast(ARTIFACT_SCHEMA),
                          remote_listing(source, {r: r for r in remote})])
    _, _, refused = copied(plan, idmap)
    if refused:
        expected = expected.filter(~pl.struct("run_uuid", "path").is_in(
            [{"run_uuid": r, "path": p} for r, p in refused]))
    back = {t: s for s in plan.run_ids if (t := idmap.run_target(s)) is not None}
    target_uris = dict(target_read.raw["runs"].select("run_uuid", "artifact_uri").iter_rows())
    on_disk = target_read.raw["artifacts"].filter(
        (pl.col("owner_kind") == "run") & pl.col("owner").is_in([t for t in back if local_root(target_uris.get(t))]))
    actual = pl.concat([
        on_disk.select(run_uuid=pl.col("owner").replace_strict(back), path="path", size="size", md5="md5")
        .cast(ARTIFACT_SCHEMA),
        remote_listing(target, {t: s for t, s in back.items() if t in target_uris and not local_root(target_uris[t])}),
    ])
    # the full text of over-long values is braid's own file, checked with the values themselves
    actual = actual.filter(~pl.col("path").str.starts_with(f"{LONG_VALUE_DIR}/")
                           | pl.struct("run_uuid", "path").is_in(expected.select(pl.struct("run_uuid", "path")).to_series().implode()))
    return _compare(expected.sort(pl.all()), actual)
