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

import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from mlflow import MlflowClient
from mlflow.entities import FileInfo
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from braid.connectors.mlflow._artifacts import local_root, md5_file

from ._idmap import IdMap
from ._plan import LONG_VALUE_DIR, Plan, SourceRead

if TYPE_CHECKING:
    from ._report import Report

Step = Callable[[str, int, int | None], None]

# why a file from the source is not copied: reason -> the report's words
ABSOLUTE = "the path is absolute"
ESCAPES = "the path leaves the run's artifact folder"
EMPTY = "the path names no file"
NUL = "the path holds a NUL character"
LINK_OUT = "a symlink in the source leads out of the run's artifact folder"
UNREADABLE = "the source file could not be read"
_DRIVE = re.compile(r"^[A-Za-z]:")

ARTIFACT_SCHEMA = {"owner": pl.String, "path": pl.String, "size": pl.Int64, "md5": pl.String}


class Refused(ValueError):
    """A source file that is not copied, and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path!r}: {reason}")
        self.path = path
        self.reason = reason


class UnsafePath(Refused):
    """A path from a tool's metadata that would be written outside the destination folder."""


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

    def entry(self) -> dict[str, object]:
        """What the id map keeps of one owner's copy."""
        return {"copied": self.copied, "bytes": self.bytes, "refused": self.refused_paths}


@dataclass
class SourceFile:
    path: str       # as the source names it (not yet checked)
    local: str | None  # the file on disk, when the source's artifact root is local
    missing: str | None = None  # why there are no bytes to copy, when the source has none here


# where a listed file's bytes come from, and where the staged folder goes: (path, folder) -> the
# downloaded file; (staged folder) -> None
Download = Callable[[str, str], str]
Upload = Callable[[str], None]


def _walk(listing: Callable[[str | None], list[FileInfo]], path: str | None = None) -> Iterator[SourceFile]:
    for info in listing(path):
        if info.is_dir:
            yield from _walk(listing, info.path)
        else:
            yield SourceFile(info.path, None)


def source_files(listing: Callable[[str | None], list[FileInfo]], artifact_uri: str | None,
                 listed: pl.DataFrame) -> list[SourceFile]:
    """An owner's files: from braid's listing of a local root, else from the source's artifact API."""
    root = local_root(artifact_uri)
    if root is not None:
        return [SourceFile(p, os.path.join(root, *p.split("/"))) for p in listed["path"].to_list()]
    return list(_walk(listing)) if artifact_uri else []


def _stage(download: Download, root: str | None, file: SourceFile, staging: Path, scratch: Path) -> int:
    """Put one source file at its checked place under `staging`; its size."""
    dest = destination(staging, file.path)
    if file.missing is not None:
        raise Refused(file.path, file.missing)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if file.local is not None:
        real = os.path.realpath(file.local)
        if root is not None and not Path(real).is_relative_to(os.path.realpath(root)):
            raise UnsafePath(file.path, LINK_OUT)
        shutil.copyfile(real, dest)
    else:
        fetched = Path(download(checked_path(file.path), str(scratch)))
        if not fetched.resolve().is_relative_to(scratch.resolve()):
            raise UnsafePath(file.path, ESCAPES)
        shutil.move(fetched, dest)
    return dest.stat().st_size


def copy_files(files: list[SourceFile], root: str | None, download: Download, upload: Upload,
               tally: ArtifactCopy) -> None:
    """Stage the files (each path checked) and upload the staged folder; refusals are tallied."""
    if not files:
        return
    with tempfile.TemporaryDirectory(prefix="braid-artifacts-") as tmp:
        staging, scratch = Path(tmp, "staged"), Path(tmp, "scratch")
        staging.mkdir()
        staged = 0
        for file in files:
            scratch.mkdir(exist_ok=True)
            try:
                tally.bytes += _stage(download, root, file, staging, scratch)
                staged += 1
            except Refused as exc:
                tally.refused_paths.append((file.path, exc.reason))
            except OSError:
                tally.refused_paths.append((file.path, UNREADABLE))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        if staged:
            upload(str(staging))
        tally.copied += staged


# a source run's files: (files, the local root they must stay in, how to download a remote one)
RunFiles = Callable[[str], tuple[list[SourceFile], str | None, Download]]


def mlflow_files(plan: Plan, source: MlflowClient) -> RunFiles:
    """An MLflow source run's files: braid's listing of a local root, else its artifact API."""
    uris = dict(plan.read.raw["runs"].select("run_uuid", "artifact_uri").iter_rows())
    listed, empty = _listed(plan), pl.DataFrame(schema={"path": pl.String})

    def files_of(run: str) -> tuple[list[SourceFile], str | None, Download]:
        uri = uris.get(run)
        files = source_files(lambda path: source.list_artifacts(run, path), uri, listed.get(run, empty))
        return files, local_root(uri), lambda path, dst: source.download_artifacts(run, path, dst)
    return files_of


def remote_listing(client: MlflowClient, owners: dict[str, str], uris: dict[str, str | None]) -> pl.DataFrame:
    """(owner, path, size, md5) of the files of `owners` (owner -> the name to report it under),
    read through their artifact repositories and hashed, for a store braid cannot list on disk."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="braid-readback-") as tmp:
        for owner, name in owners.items():
            repo = get_artifact_repository(str(uris[owner]), tracking_uri=client.tracking_uri)
            for file in _walk(repo.list_artifacts):
                local = Path(repo.download_artifacts(checked_path(file.path), tmp))
                rows.append((name, file.path, local.stat().st_size, md5_file(str(local))))
                local.unlink()
    return pl.DataFrame(rows, schema=ARTIFACT_SCHEMA, orient="row")


# -- the migration's artifact phase: after the runs exist, before the registry -----------------------
def _listed(plan: Plan) -> dict[str, pl.DataFrame]:
    frame = plan.read.raw["artifacts"].filter(pl.col("owner_kind") == "run")
    return {k[0]: v for k, v in frame.partition_by("owner", as_dict=True).items()}


def copy_artifacts(plan: Plan, idmap: IdMap, files_of: RunFiles, target: MlflowClient, step: Step) -> int:
    """Copy the files of every planned run not copied yet; the files copied by this call.

    The id map records each run's outcome (files copied, files refused with their reasons), so a
    re-run skips what is done."""
    now = 0
    for n, run in enumerate(plan.run_ids):
        target_run = idmap.run_target(run)
        if idmap.get("artifacts", run) is None and target_run is not None:
            tally = ArtifactCopy()
            files, root, download = files_of(run)
            copy_files(files, root, download, lambda staged, t=target_run: target.log_artifacts(t, staged), tally)
            idmap.set("artifacts", run, tally.entry())
            idmap.save()
            now += tally.copied
        step("artifacts", n + 1, len(plan.run_ids))
    return now


def report_copies(report: Report, plan: Plan, idmap: IdMap, *, keep: tuple[str, ...] = ()) -> None:
    """The artifact files as copied: the plan counted the source's listing, the copy knows better
    (a file refused is not carried, under its reason); reasons in `keep` were decided by the plan."""
    done, refused, _ = copied(plan, idmap)
    kind = report.kinds["artifact"]
    kind.carried = done
    kind.not_carried = Counter({k: n for k, n in kind.not_carried.items() if k in keep}) + refused


def copied(plan: Plan, idmap: IdMap) -> tuple[int, Counter[str], set[tuple[str, str]]]:
    """Files copied, files refused per reason, and the refused (owner, path) pairs, over the planned
    runs and their logged models."""
    done, refused, paths = 0, Counter[str](), set()
    for run in [*plan.run_ids, *plan.logged_models()["model_id"].to_list()]:
        entry = idmap.get("artifacts", run) or {}
        done += entry.get("copied", 0)
        for path, reason in entry.get("refused", []):
            refused[reason] += 1
            paths.add((run, path))
    return done, refused, paths


def _owners(read: SourceRead) -> dict[str, str | None]:
    """Artifact owner (run or logged model id) -> its artifact URI."""
    return {**dict(read.raw["runs"].select("run_uuid", "artifact_uri").iter_rows()),
            **dict(read.raw["logged_models"].select("model_id", "artifact_location").iter_rows())}


def _listing(read: SourceRead, client: MlflowClient, owners: dict[str, str]) -> pl.DataFrame:
    """(owner as the source names it, path, size, md5) of the files of `owners` (owner -> its name in
    the source): braid's listing for local roots, the artifact API (downloaded and hashed) for the rest."""
    uris = _owners(read)
    local = {o: s for o, s in owners.items() if local_root(uris.get(o)) is not None}
    listed = read.raw["artifacts"].filter(pl.col("owner").is_in(list(local)))
    rows = listed.select(owner=pl.col("owner").replace_strict(local), path="path", size="size", md5="md5")
    remote = {o: s for o, s in owners.items() if o not in local and uris.get(o)}
    return pl.concat([rows.cast(ARTIFACT_SCHEMA), remote_listing(client, remote, uris)])


def verify_artifacts(plan: Plan, idmap: IdMap, target_read: SourceRead, source: MlflowClient,
                     target: MlflowClient) -> dict[str, object]:
    """The files of the planned runs and their logged models, in the source against the target's,
    by path, size and md5."""
    from ._report import _compare

    models = [m for m in plan.logged_models()["model_id"].to_list() if idmap.get("logged_models", m)]
    expected = _listing(plan.read, source, {o: o for o in [*plan.run_ids, *models]})
    _, _, refused = copied(plan, idmap)
    if refused:
        expected = expected.filter(~pl.struct("owner", "path").is_in(
            [{"owner": r, "path": p} for r, p in refused]))
    back = {t: s for s in plan.run_ids if (t := idmap.run_target(s)) is not None}
    back |= {idmap.get("logged_models", m): m for m in models}
    actual = _listing(target_read, target, back)
    # the full text of over-long values is braid's own file, checked with the values themselves
    actual = actual.filter(~pl.col("path").str.starts_with(f"{LONG_VALUE_DIR}/")
                           | pl.struct("owner", "path").is_in(expected.select(pl.struct("owner", "path")).to_series().implode()))
    return _compare(expected.sort(pl.all()), actual)
