"""Read a git repository without changing it: `git log`, `for-each-ref` and one `cat-file --batch`.

Nothing here checks out, fetches or writes: every command is a plumbing read with optional
locks off, so a sync never refreshes the user's index or touches a ref.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from braid.unify.errors import SourceError

# plumbing reads only; GIT_OPTIONAL_LOCKS=0 keeps even `git status`-like refreshes off the index
GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
FIELD_SEP, RECORD_SEP = "\x1f", "\x1e"
LOG_FORMAT = FIELD_SEP.join(["%H", "%P", "%an", "%ae", "%at", "%ct", "%s"]) + RECORD_SEP


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    author: str
    email: str
    authored: int  # unix seconds
    committed: int
    subject: str


@dataclass(frozen=True)
class Ref:
    name: str  # refs/heads/main, refs/tags/x, refs/exps/...
    sha: str  # what the ref points at (the tag object for annotated tags)
    target: str  # the commit it names (peeled)
    tagger: str
    tagger_email: str
    tagged: int | None  # unix seconds of an annotated tag
    message: str


class Git:
    """A repository read through git's plumbing; one `cat-file --batch` process for blobs."""

    def __init__(self, root: Path, *, source: str) -> None:
        self.source = source
        self._env = {**os.environ, **GIT_ENV}
        top = self._run("rev-parse", "--show-toplevel", cwd=root, what=f"{root} is not a git repository")
        self.root = Path(top.strip())
        self._batch: subprocess.Popen[bytes] | None = None

    def _run(self, *args: str, cwd: Path | None = None, what: str | None = None) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=cwd or self.root, env=self._env, capture_output=True,
                                  check=False)
        except FileNotFoundError:
            raise SourceError(self.source, "git is not installed (the DVC connector reads history with it)") from None
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            raise SourceError(self.source, what or f"git {args[0]} failed: {message[-1] if message else ''}")
        return done.stdout.decode("utf-8", errors="replace")

    def is_shallow(self) -> bool:
        return self._run("rev-parse", "--is-shallow-repository").strip() == "true"

    def has_commits(self) -> bool:
        try:
            self._run("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        except SourceError:
            return False
        return True

    def head(self) -> str | None:
        return self._run("rev-parse", "HEAD").strip() if self.has_commits() else None

    def refs(self, *patterns: str) -> list[Ref]:
        fmt = FIELD_SEP.join(["%(refname)", "%(objectname)", "%(*objectname)", "%(taggername)",
                              "%(taggeremail:trim)", "%(taggerdate:unix)", "%(contents)"]) + RECORD_SEP
        out = self._run("for-each-ref", f"--format={fmt}", *patterns)
        refs = []
        for record in out.split(RECORD_SEP):
            record = record.lstrip("\n")
            if not record:
                continue
            name, sha, peeled, tagger, email, date, message = record.split(FIELD_SEP, 6)
            refs.append(Ref(name, sha, peeled or sha, tagger, email, int(date) if date else None,
                            message.strip()))
        return refs

    def log(self, revs: Iterable[str], *, paths: Iterable[str] = (), limit: int | None = None,
            no_walk: bool = False) -> list[Commit]:
        """Commits reachable from `revs` (or just `revs`, with no_walk), newest first, touching
        `paths` when given; merges count when they differ from any parent."""
        revs = list(revs)
        if not revs:
            return []
        args = ["log", f"--format={LOG_FORMAT}", "--no-walk=unsorted" if no_walk else "--topo-order"]
        if paths:
            args.append("--full-history")
        if limit is not None:
            args.append(f"--max-count={limit}")
        args += [*revs, "--"]
        args += [f":(glob){p}" for p in paths]
        commits = []
        for record in self._run(*args).split(RECORD_SEP):
            record = record.strip("\n")
            if not record:
                continue
            sha, parents, author, email, at, ct, subject = record.split(FIELD_SEP, 6)
            commits.append(Commit(sha, tuple(parents.split()), author, email, int(at), int(ct), subject))
        return commits

    def changed_paths(self, revs: Iterable[str], globs: Iterable[str]) -> set[str]:
        """Every path matching `globs` that any commit reachable from `revs` touched."""
        revs = list(revs)
        if not revs:
            return set()
        out = self._run("log", "--format=", "--name-only", "-z", "--full-history", *revs, "--",
                        *[f":(glob){g}" for g in globs])
        return {p.strip("\n") for p in out.split("\0") if p.strip("\n")}

    def parents(self, revs: Iterable[str], *, limit: int | None = None) -> dict[str, str | None]:
        """commit -> first parent, for every commit reachable from `revs`."""
        revs = list(revs)
        if not revs:
            return {}
        args = ["rev-list", "--parents", "--topo-order"]
        if limit is not None:
            args.append(f"--max-count={limit}")
        out = self._run(*args, *revs, "--")
        result: dict[str, str | None] = {}
        for line in out.splitlines():
            shas = line.split()
            if shas:
                result[shas[0]] = shas[1] if len(shas) > 1 else None
        return result

    def workspace_files(self, patterns: Iterable[str]) -> list[str]:
        """Paths in the working tree matching glob patterns, tracked or not (ignored ones left out),
        from git's index: no walk through data folders."""
        out = self._run("ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                        *[f":(glob){p}" for p in patterns])
        return sorted({p for p in out.split("\0") if p})

    def blobs(self, names: Iterable[str]) -> Iterator[tuple[str, str | None, bytes | None]]:
        """(name, blob sha, content) for `<rev>:<path>` names; (name, None, None) where absent."""
        for name, sha, kind, data in self._objects(names):
            yield (name, sha, data) if kind == "blob" else (name, None, None)

    def tree(self, name: str) -> list[tuple[str, bool]]:
        """The entries (name, is a folder) of the tree `<rev>:<dir>`; empty when there is none."""
        for _, _, kind, data in self._objects([name]):
            return parse_tree(data) if kind == "tree" and data is not None else []
        return []

    def _objects(self, names: Iterable[str]) -> Iterator[tuple[str, str | None, str | None, bytes | None]]:
        names = list(names)
        if not names:
            return
        batch = self._batch_process()
        assert batch.stdin is not None and batch.stdout is not None
        # write and read in chunks so neither pipe fills while the other waits
        for start in range(0, len(names), 256):
            chunk = names[start:start + 256]
            batch.stdin.write("".join(f"{n}\n" for n in chunk).encode())
            batch.stdin.flush()
            for name in chunk:
                header = batch.stdout.readline()
                if header.endswith((b" missing\n", b" ambiguous\n")) or not header:
                    yield name, None, None, None
                    continue
                sha, kind, size = header.decode().split()
                data = batch.stdout.read(int(size))
                batch.stdout.read(1)  # the newline after each object
                yield name, sha, kind, data

    def _batch_process(self) -> subprocess.Popen[bytes]:
        if self._batch is None:
            self._batch = subprocess.Popen(["git", "cat-file", "--batch"], cwd=self.root, env=self._env,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.DEVNULL)
        return self._batch

    def close(self) -> None:
        if self._batch is not None:
            assert self._batch.stdin is not None
            self._batch.stdin.close()
            self._batch.wait()
            self._batch = None

    def __enter__(self) -> Git:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_tree(data: bytes) -> list[tuple[str, bool]]:
    """Entries of a raw tree object: `<mode> <name>\\0<20-byte sha>` repeated; mode 40000 is a folder."""
    names, pos = [], 0
    while pos < len(data):
        space = data.index(b" ", pos)
        nul = data.index(b"\0", space)
        names.append((data[space + 1:nul].decode("utf-8", errors="replace"), data[pos:space] == b"40000"))
        pos = nul + 21
    return names
