"""List the files under local artifact roots and hash them.

MLflow stores no hash for artifacts, so braid computes the md5 of every file it can read.
Hashes are cached across syncs by (path, size, mtime): an unchanged file is never read twice.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import polars as pl

from braid.unify.source import Progress

from ._raw import RAW_SCHEMAS

CHUNK = 1 << 20
HASH_CACHE_SCHEMA = {"path": pl.String(), "size": pl.Int64(), "mtime_ns": pl.Int64(), "md5": pl.String()}


def local_root(uri: str | None) -> str | None:
    """The local folder an artifact URI names, or None for remote stores.

    Plain string work: it runs once per run, 100,000 times on a large store.

    >>> local_root("file:///tmp/a%20b"), local_root("file:/tmp/x"), local_root("/tmp/x"), local_root("s3://b/k")
    ('/tmp/a b', '/tmp/x', '/tmp/x', None)
    """
    if not uri:
        return None
    if uri.startswith("file://"):
        path = uri[7:]
        if not path.startswith("/"):  # file://host/path names another machine
            return None
    elif uri.startswith("file:/"):
        path = uri[5:]
    elif uri.startswith("/"):
        return uri
    else:
        return None
    return unquote(path) if "%" in path else path


def md5_file(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_local(
    owners: list[tuple[str, str, str | None]], cache: pl.DataFrame | None, progress: Progress
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Files under each (owner, owner_kind, uri) local root, with md5s.

    Returns the artifact rows, the new hash cache, and the owners whose root is remote.
    """
    remote: list[str] = []
    found: list[tuple[str, str, str, str, int, int]] = []  # owner, kind, rel, abs, size, mtime
    for owner, kind, uri in owners:
        root = local_root(uri)
        if root is None:
            if uri:
                remote.append(owner)
            continue
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except OSError:
                    continue
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                found.append((owner, kind, rel, full, st.st_size, st.st_mtime_ns))
    known: dict[tuple[str, int, int], str] = {}
    if cache is not None and cache.height:
        known = {(p, s, m): h for p, s, m, h in cache.select(list(HASH_CACHE_SCHEMA)).iter_rows()}
    todo = sorted({(f[3], f[4], f[5]) for f in found if (f[3], f[4], f[5]) not in known})
    if todo:
        done = 0
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
            for key, digest in zip(todo, pool.map(lambda k: _safe_md5(k[0]), todo)):
                if digest is not None:
                    known[key] = digest
                done += 1
                if done % 64 == 0 or done == len(todo):
                    progress("hashing artifacts", done, len(todo))
    rows = [(o, k, rel, size, known.get((full, size, mt))) for o, k, rel, full, size, mt in found]
    # the cache keeps only files that still exist, so it never grows past the store
    live = sorted({(full, size, mt) for _, _, _, full, size, mt in found if (full, size, mt) in known})
    new_cache = pl.DataFrame([(*key, known[key]) for key in live], schema=HASH_CACHE_SCHEMA, orient="row")
    return pl.DataFrame(rows, schema=RAW_SCHEMAS["artifacts"], orient="row"), new_cache, remote


def _safe_md5(path: str) -> str | None:
    try:
        return md5_file(path)
    except OSError:
        return None
