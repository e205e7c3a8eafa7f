"""The local DVC cache, read only: directory listings and the bytes behind DVC 2's hashes.

DVC 3 keeps objects under `files/md5/<2 hex>/<30 hex>`; DVC 2 (and DVC 3 for entries it kept
from DVC 2) under `<2 hex>/<30 hex>`. A directory's object `<md5>.dir` is a JSON list of
`{md5, relpath}`.
"""

from __future__ import annotations

import configparser
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1 << 20


@dataclass(frozen=True)
class DirFile:
    relpath: str
    md5: str
    size: int | None


@dataclass
class Cache:
    """A DVC cache folder, or none (`root` is None) when the repo has no local cache."""

    root: Path | None
    _plain: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def of_repo(cls, repo: Path) -> Cache:
        root = repo / ".dvc" / "cache"
        for name in ("config.local", "config"):  # config.local wins, as in DVC
            configured = _cache_dir(repo / ".dvc" / name)
            if configured:
                root = (repo / ".dvc" / configured).resolve()
                break
        return cls(root if root.is_dir() else None)

    def object_path(self, md5: str, *, legacy: bool) -> Path | None:
        if self.root is None or len(md5) < 3:
            return None
        for base in ((self.root,) if legacy else (self.root / "files" / "md5", self.root)):
            path = base / md5[:2] / md5[2:]
            if path.is_file():
                return path
        return None

    def listing(self, md5: str, *, legacy: bool) -> list[DirFile] | None:
        """A directory's files, or None when its `.dir` object is not in the cache."""
        path = self.object_path(md5, legacy=legacy)
        if path is None:
            return None
        try:
            entries = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        files = []
        for entry in entries:
            md5_ = str(entry.get("md5", ""))
            obj = self.object_path(md5_, legacy=legacy)
            size = entry.get("size")
            if size is None and obj is not None:
                size = obj.stat().st_size
            files.append(DirFile(str(entry.get("relpath", "")), md5_, size))
        return files

    def plain_md5(self, md5: str) -> str | None:
        """The md5 of the bytes DVC 2 hashed as `md5` (line endings normalised), from the cache."""
        if md5 not in self._plain:
            path = self.object_path(md5, legacy=True)
            self._plain[md5] = _file_md5(path) if path is not None else None
        return self._plain[md5]

    def read(self, md5: str, *, legacy: bool) -> bytes | None:
        path = self.object_path(md5, legacy=legacy)
        try:
            return path.read_bytes() if path is not None else None
        except OSError:
            return None


def _cache_dir(config: Path) -> str | None:
    if not config.is_file():
        return None
    parser = configparser.ConfigParser()
    try:
        parser.read(config, encoding="utf-8")
    except configparser.Error:
        return None
    return parser.get("cache", "dir", fallback=None)


def _file_md5(path: Path) -> str | None:
    digest = hashlib.md5()  # noqa: S324 - a content hash, as DVC's
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()
