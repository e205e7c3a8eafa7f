"""The catalog on disk: content-addressed Parquet files and an atomically replaced manifest.

    .braid/
      manifest.json                     the current generation: every file with its sha256,
                                        each source's cursor
      lock                              held (flock) by the one writer
      tables/<source>/<table>-<sha>.parquet

A generation becomes visible only when `manifest.json` is renamed into place, after every file
it names has been written and fsynced, so a sync that fails or is killed leaves the previous
generation whole. Files are named by their content's hash: an unchanged table is the same file,
and a re-sync that changes nothing writes nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .errors import CatalogCorrupt, CatalogLocked, CatalogMissing

FORMAT = "braid-catalog"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PREVIOUS = "manifest.previous.json"
LOCK = "lock"
TABLES_DIR = "tables"
FILE_RE = re.compile(r"^tables/[A-Za-z_][A-Za-z0-9_.-]*/[a-z_]+-[0-9a-f]{16}\.parquet$")


@dataclass(frozen=True)
class FileRef:
    file: str
    sha256: str
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "rows": self.rows}


@dataclass
class SourceEntry:
    """One source's part of a generation."""

    tool: str
    tables: dict[str, FileRef] = field(default_factory=dict)
    state: dict[str, FileRef] = field(default_factory=dict)
    cursor: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "cursor": self.cursor,
            "tables": {k: v.to_json() for k, v in sorted(self.tables.items())},
            "state": {k: v.to_json() for k, v in sorted(self.state.items())},
        }


@dataclass
class Manifest:
    generation: int = 0
    sources: dict[str, SourceEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "generation": self.generation,
            "sources": {k: v.to_json() for k, v in sorted(self.sources.items())},
        }

    def files(self) -> set[str]:
        return {ref.file for e in self.sources.values() for ref in (*e.tables.values(), *e.state.values())}

    def same_content(self, other: Manifest) -> bool:
        a, b = self.to_json(), other.to_json()
        a.pop("generation"), b.pop("generation")
        return a == b


def read_manifest(root: Path, name: str = MANIFEST) -> Manifest:
    """The generation `root` holds now; CatalogMissing or CatalogCorrupt when it cannot."""
    path = root / name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CatalogMissing(str(root), "no catalog here yet", hint="run `braid sync` first") from None
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError("not a braid catalog manifest")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('format_version')!r}, this braid reads {FORMAT_VERSION}")
        sources = {name: _entry(e) for name, e in data["sources"].items()}
        return Manifest(int(data["generation"]), sources)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise CatalogCorrupt(str(root), f"{path.name} is damaged{where}: {msg}",
                             hint="re-create it with `braid sync --full` into an empty catalog folder") from None


def _ref(d: dict[str, Any]) -> FileRef:
    ref = FileRef(str(d["file"]), str(d["sha256"]), int(d["rows"]))
    if not FILE_RE.match(ref.file):
        raise ValueError(f"bad file name {ref.file!r}")
    return ref


def _entry(d: dict[str, Any]) -> SourceEntry:
    return SourceEntry(
        tool=str(d["tool"]),
        tables={k: _ref(v) for k, v in d["tables"].items()},
        state={k: _ref(v) for k, v in d.get("state", {}).items()},
        cursor=dict(d.get("cursor", {})),
    )


def load_frame(root: Path, ref: FileRef) -> pl.DataFrame:
    """A table file, checked against the manifest's checksum."""
    path = root / ref.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CatalogCorrupt(str(root), f"{ref.file} is missing") from None
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise CatalogCorrupt(str(root), f"{ref.file} does not match its checksum in {MANIFEST}")
    return pl.read_parquet(io.BytesIO(data))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Writer:
    """The one writer of a catalog: holds the lock, writes files, commits a manifest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock_fd: int | None = None
        self.previous: Manifest | None = None

    def __enter__(self) -> Writer:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CatalogLocked(str(self.root), f"another sync is writing it (pid {holder})",
                                hint="wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        try:
            self.previous = read_manifest(self.root)
        except CatalogMissing:
            self.previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def write_frame(self, source: str, table: str, frame: pl.DataFrame) -> FileRef:
        """Write a table file (or find it already there) and return its reference."""
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd", statistics=True)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        rel = f"{TABLES_DIR}/{source}/{table}-{sha[:16]}.parquet"
        path = self.root / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp.name, path)
            _fsync_dir(path.parent)
        return FileRef(rel, sha, frame.height)

    def commit(self, manifest: Manifest) -> bool:
        """Make `manifest` the current generation; False (and nothing written) when unchanged."""
        if self.previous is not None and manifest.same_content(self.previous):
            return False
        manifest.generation = (self.previous.generation if self.previous else 0) + 1
        if self.previous is not None:
            # remember the generation readers may still hold, so its files survive one more sync
            self._write_json(PREVIOUS, self.previous)
        self._write_json(MANIFEST, manifest)
        self._collect(manifest)
        self.previous = manifest
        return True

    def _write_json(self, name: str, manifest: Manifest) -> None:
        data = json.dumps(manifest.to_json(), indent=1, sort_keys=True).encode()
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".manifest-", delete=False) as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, self.root / name)
        _fsync_dir(self.root)

    def _collect(self, current: Manifest) -> None:
        """Remove files neither the current nor the previous generation names, and stray temps."""
        keep = current.files()
        try:
            keep |= read_manifest(self.root, PREVIOUS).files()
        except (CatalogMissing, CatalogCorrupt):
            pass
        tables = self.root / TABLES_DIR
        for path in tables.rglob("*") if tables.exists() else []:
            if path.is_file() and path.relative_to(self.root).as_posix() not in keep:
                path.unlink(missing_ok=True)
        for path in self.root.glob(".manifest-*"):
            path.unlink(missing_ok=True)
