"""Find W&B run folders under a path, and group the segments of resumed runs.

The SDK writes `<dir>/wandb/run-<YYYYMMDD_HHMMSS>-<id>/run-<id>.wandb` (online) or
`offline-run-...` (offline); `latest-run` is a symlink to one of them and is skipped, so a run is
never read twice. Folder names can carry suffixes: the run id comes from the file name.

>>> import pathlib, tempfile
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> folder = root / "wandb" / "offline-run-20250101_120000-abc123"
>>> folder.mkdir(parents=True)
>>> _ = (folder / "run-abc123.wandb").write_bytes(b":W&B\\xe1\\xbe\\x00")
>>> (root / "wandb" / "latest-run").symlink_to(folder)
>>> [(f.run_id, f.size, f.path.parent.name) for f in find_run_files(root)]
[('abc123', 7, 'offline-run-20250101_120000-abc123')]
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

RUN_FOLDER_RE = re.compile(r"^(?:offline-)?run-")
RUN_FILE_RE = re.compile(r"^run-(?P<id>[^/]+)\.wandb$")
# folders that never hold run folders but can be huge
SKIPPED_FOLDERS = frozenset({".git", "node_modules", "__pycache__", ".venv", ".braid"})


@dataclass(frozen=True, slots=True)
class RunFile:
    """One `.wandb` transaction log: one segment of a run (a resumed run has several)."""

    path: Path
    run_id: str
    size: int
    mtime_ns: int
    synced: bool  # a `run-<id>.wandb.synced` sibling: `wandb sync` uploaded it

    @property
    def signature(self) -> tuple[str, int, int]:
        """What says the file has not changed since it was last read."""
        return str(self.path), self.size, self.mtime_ns


def find_run_files(root: Path) -> list[RunFile]:
    """Every run's transaction log under `root` (one log, a run folder, a `wandb` folder, or any
    folder above them), sorted by path; symlinked folders are not followed."""
    found: list[RunFile] = []
    if root.is_file() and RUN_FILE_RE.match(root.name):  # `path` names one log
        stat = root.stat()
        return [RunFile(root, RUN_FILE_RE.match(root.name)["id"], stat.st_size, stat.st_mtime_ns,  # type: ignore[index]
                        root.with_name(root.name + ".synced").exists())]
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if RUN_FOLDER_RE.match(here.name) or here == root:
            logs = [name for name in files if RUN_FILE_RE.match(name)]
            for name in logs:
                path = here / name
                try:
                    stat = path.lstat()
                except OSError:
                    continue
                if not path.is_symlink() and path.is_file():
                    found.append(RunFile(path, RUN_FILE_RE.match(name)["id"], stat.st_size,  # type: ignore[index]
                                         stat.st_mtime_ns, f"{name}.synced" in files))
            if logs:
                dirs[:] = []  # a run folder's files/ and tmp/ hold no other runs
                continue
        # os.walk lists symlinks to folders (latest-run) among dirs but does not enter them
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS)
    return sorted(found, key=lambda f: str(f.path))


K = TypeVar("K")
T = TypeVar("T")


def group_segments(segments: Iterable[tuple[K, float, T]]) -> dict[K, list[T]]:
    """Segments grouped by run key, each group ordered by start time: the folders a resumed
    run was split into, in the order they ran.

    >>> group_segments([(("e", "p", "r1"), 20.0, "second"), (("e", "p", "r1"), 10.0, "first"),
    ...                 (("e", "p", "r2"), 5.0, "other")])
    {('e', 'p', 'r1'): ['first', 'second'], ('e', 'p', 'r2'): ['other']}
    """
    groups: dict[K, list[tuple[float, int, T]]] = {}
    for i, (key, started, item) in enumerate(segments):
        groups.setdefault(key, []).append((started, i, item))
    return {key: [item for _, _, item in sorted(items, key=lambda x: (x[0], x[1]))]
            for key, items in sorted(groups.items(), key=lambda kv: str(kv[0]))}


def open_files(paths: Iterable[str]) -> tuple[set[str], bool]:
    """Those of `paths` that some process on this machine has open (Linux /proc), and whether
    the answer is complete: False without /proc or when some process could not be looked into
    (another user's), where a file not found may still be open."""
    wanted = {os.path.realpath(p): p for p in paths}
    proc = Path("/proc")
    if not wanted:
        return set(), True
    if not (proc / "self" / "fd").is_dir():
        return set(), False
    found: set[str] = set()
    complete = True
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        fds = proc / pid / "fd"
        try:
            names = os.listdir(fds)
        except FileNotFoundError:  # exited meanwhile
            continue
        except OSError:
            complete = False
            continue
        for fd in names:
            try:
                target = os.readlink(fds / fd)
            except OSError:
                continue
            if target in wanted:
                found.add(wanted[target])
    return found, complete
