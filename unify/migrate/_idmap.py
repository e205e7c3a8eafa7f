"""The id map of one migration: which target object each source object became.

Kept in the catalog folder (`<catalog>/migrations/<from>--<to>.json`, beside the catalog's
`manifest.json`) and rewritten atomically (new file, fsync, rename) after every object, so a
migration that is killed or whose target fails mid-way continues where it stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1
# the sections of the map: source id -> what it became
SECTIONS = ("experiments", "runs", "artifacts", "registered_models", "model_versions")


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

    @classmethod
    def load(cls, catalog: Path, source: str, target: str) -> IdMap:
        path = catalog / "migrations" / f"{source}--{target}.json"
        idmap = cls(path, source, target)
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            for section in SECTIONS:
                idmap.data[section] = dict(stored.get(section, {}))
        return idmap

    def get(self, section: str, source_id: str) -> Any:
        return self.data[section].get(source_id)

    def set(self, section: str, source_id: str, value: Any) -> None:
        self.data[section][source_id] = value

    def run_target(self, source_id: str) -> str | None:
        entry = self.data["runs"].get(source_id)
        return None if entry is None else str(entry["target"])

    def run_done(self, source_id: str) -> bool:
        entry = self.data["runs"].get(source_id)
        return bool(entry and entry.get("done"))

    def set_run(self, source_id: str, target_id: str, *, done: bool) -> None:
        self.data["runs"][source_id] = {"target": target_id, "done": done}

    def save(self) -> None:
        """Write the map atomically: a reader sees the old map or the new one, never half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": VERSION, "from": self.source, "to": self.target, **self.data},
                          sort_keys=True, indent=1)
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
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
