"""The id map of one migration: which target object each source object became.

Kept in the catalog folder, beside the catalog's `manifest.json`: a snapshot
(`<catalog>/migrations/<from>--<to>.json`, replaced atomically: new file, fsync, rename) and a
journal of the changes since (`<from>--<to>.journal`, one JSON line per change, fsynced). A save
appends only what changed, so saving after every object costs the same at the 10th run and the
100,000th; the journal is folded into a new snapshot when it outgrows the map, and on the first
save after a load. Saved after each committed batch of runs (database targets) or each finished
run (servers), so a migration that is killed or whose target fails mid-way continues where it
stopped; what the map missed (written after its last save) is found again in the target by the
`braid.source_id` tags.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1
# the journal is folded into a new snapshot once it holds more changes than this or than the map
JOURNAL_MIN = 1000
# the sections of the map: source id -> what it became
SECTIONS = ("experiments", "runs", "artifacts", "logged_models", "registered_models", "model_versions")


@dataclass
class IdMap:
    """Source id -> target id per section; a run also records whether it was written in full.

    >>> m = IdMap(Path("/nonexistent/m.json"), "a", "b")
    >>> m.set_run("r1", "t1", done=False); m.run_target("r1"), m.run_done("r1")
    ('t1', False)
    """

    path: Path
    source: str
    target: str
    data: dict[str, dict[str, Any]] = field(default_factory=lambda: {s: {} for s in SECTIONS})
    # changes not saved yet; the journal's generation (None: the next save writes a snapshot)
    # and how many changes it holds
    _pending: list[tuple[str, str, Any]] = field(default_factory=list, repr=False)
    _generation: str | None = field(default=None, repr=False)
    _journaled: int = field(default=0, repr=False)

    @classmethod
    def load(cls, catalog: Path, source: str, target: str) -> IdMap:
        path = catalog / "migrations" / f"{source}--{target}.json"
        idmap = cls(path, source, target)
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            for section in SECTIONS:
                idmap.data[section] = dict(stored.get(section, {}))
            for section, source_id, value in _journal(idmap.journal, stored.get("journal")):
                idmap.data.setdefault(section, {})[source_id] = value
        return idmap

    @property
    def journal(self) -> Path:
        return self.path.with_suffix(".journal")

    def get(self, section: str, source_id: str) -> Any:
        return self.data[section].get(source_id)

    def set(self, section: str, source_id: str, value: Any) -> None:
        self.data[section][source_id] = value
        self._pending.append((section, source_id, value))

    def run_target(self, source_id: str) -> str | None:
        entry = self.data["runs"].get(source_id)
        return None if entry is None else str(entry["target"])

    def run_done(self, source_id: str) -> bool:
        entry = self.data["runs"].get(source_id)
        return bool(entry and entry.get("done"))

    def set_run(self, source_id: str, target_id: str, *, done: bool) -> None:
        self.set("runs", source_id, {"target": target_id, "done": done})

    def save(self) -> None:
        """Make every change so far durable: appended to the journal, or a new snapshot."""
        if not self._pending and self._generation is not None:
            return
        entries = sum(len(v) for v in self.data.values())
        if self._generation is None or self._journaled + len(self._pending) > max(JOURNAL_MIN, entries):
            self._snapshot()
            return
        lines = "".join(json.dumps(change, separators=(",", ":")) + "\n" for change in self._pending)
        with self.journal.open("a", encoding="utf-8") as out:
            if self._journaled == 0:  # a new journal names the snapshot it continues
                lines = json.dumps({"journal": self._generation}) + "\n" + lines
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())
        self._journaled += len(self._pending)
        self._pending.clear()

    def _snapshot(self) -> None:
        """Write the whole map atomically (a reader sees the old map or the new one, never half of
        one) under a new generation, so the old journal is never replayed on top of it.

        One fsync (the new file's, so the rename never exposes an empty file): the directory is
        not synced, since a rename lost in a power cut leaves the previous map, and what was
        written after it is found again by its tags.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        generation = uuid.uuid4().hex
        body = json.dumps({"version": VERSION, "from": self.source, "to": self.target, "journal": generation,
                           **self.data}, sort_keys=True, separators=(",", ":"))
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".idmap-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.journal.unlink(missing_ok=True)
        self._generation, self._journaled = generation, 0
        self._pending.clear()


def _journal(path: Path, generation: str | None) -> list[list[Any]]:
    """The changes a journal holds, when it continues the snapshot of `generation`. A journal of
    another snapshot (left by a crash between a new snapshot and its removal) is ignored; a torn
    last line (a crash mid-append) ends it."""
    if generation is None or not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        if not lines or json.loads(lines[0]) != {"journal": generation}:
            return []
    except json.JSONDecodeError:
        return []
    changes = []
    for line in lines[1:]:
        try:
            changes.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return changes
