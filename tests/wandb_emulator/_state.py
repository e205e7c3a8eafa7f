"""The W&B API emulator's server state: what a W&B server holds after run folders were synced
to it, plus the facts that offline runs cannot record.

`ServerState.from_run_folders` reads real run folders (written by the wandb SDK, offline)
with braid's own transaction-log fold, and keeps them the way the server would after
`wandb sync`: an entity for every run, a resumed run as one run whose steps continue, each
artifact content as one version of its collection (`v0`, `v1`, ... in the order they were
logged, `latest` on the newest), and the run's environment record as its
`wandb-metadata.json` file.

Offline runs cannot record what a run used (`run.use_artifact` raises TypeError offline) or
linked (`link_artifact` raises NotImplementedError), and online runs send both as requests
that never reach the run folder. So `use` and `link` declare them here, as the server would
hold them after those calls were made online.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict, ParseDict

from braid.connectors.wandb._fold import RunFold, fold_run, read_segment, run_key, status
from braid.connectors.wandb._folders import find_run_files, group_segments


@dataclass
class ServerArtifact:
    """One artifact version, in its sequence (the collection its runs logged it to)."""

    number: int
    entity: str
    project: str
    name: str  # the collection's name
    type: str
    version_index: int
    digest: str
    digest_algorithm: str
    aliases: list[str]
    tags: list[str]
    description: str | None
    metadata: Any
    created_at: float
    manifest: dict[str, Any]  # the manifest file as W&B stores it (`wandb_manifest.json`)
    created_by: int | None  # the run's number

    @property
    def size(self) -> int:
        return sum(e.get("size") or 0 for e in self.manifest["contents"].values())


@dataclass
class ServerLink:
    """An artifact version linked into a registry collection (an `ArtifactPortfolio`)."""

    number: int
    artifact: int
    entity: str  # the organization's entity
    project: str  # `wandb-registry-<registry>`
    collection: str
    version_index: int
    aliases: list[str]
    created_at: float


@dataclass
class ServerRun:
    number: int
    entity: str
    project: str
    name: str  # the run id
    display_name: str | None
    state: str
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    tags: list[str]
    group: str | None
    job_type: str | None
    notes: str | None
    commit: str | None
    host: str | None
    created_at: float
    heartbeat_at: float
    metadata: dict[str, Any] | None
    outputs: list[int] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)


@dataclass
class ServerState:
    """Everything the emulated server knows: one viewer (the API key's owner), their
    organization, runs, artifact versions and registry links."""

    username: str = "tester"
    organization: str = "acme"
    runs: list[ServerRun] = field(default_factory=list)
    artifacts: list[ServerArtifact] = field(default_factory=list)
    links: list[ServerLink] = field(default_factory=list)

    @property
    def org_entity(self) -> str:
        return f"{self.organization}-org"

    @classmethod
    def from_run_folders(cls, root: Path, *, entity: str, **kwargs: Any) -> ServerState:
        """The state of a server that `wandb sync` uploaded the run folders under `root` to,
        as `entity` (offline runs name no entity; the one they record, if any, wins)."""
        state = cls(**kwargs)
        placed = []
        for file in find_run_files(root):
            seg = read_segment(file.path, size=file.size, mtime_ns=file.mtime_ns)
            if seg.has_run_record:
                placed.append((run_key(seg, entity), seg.started_at or 0.0, seg))
        folds = [fold_run(key, segs) for key, segs in group_segments(placed).items()]
        for fold in sorted(folds, key=lambda f: f.started_at or 0.0):
            state.add_run(fold)
        return state

    def add_run(self, fold: RunFold) -> ServerRun:
        """A folded run as the server keeps it once synced."""
        number = len(self.runs) + 1
        rows: list[dict[str, Any]] = []
        for hist, offset in fold.histories:
            at = 0
            for step, count in zip(hist.steps, hist.counts, strict=True):
                row = {k: _value(v) for k, v in zip(hist.keys[at:at + count], hist.values[at:at + count], strict=True)}
                at += count
                row["_step"] = step + offset  # the server continues a resumed run's steps
                rows.append(row)
        started = fold.started_at or 0.0
        ended = fold.ended_at or started
        summary = dict(fold.summary)
        if rows:
            summary["_step"] = rows[-1]["_step"]
        # the server's summary ends with the run: its runtime, and the last moment it logged
        summary |= {"_runtime": fold.runtime or 0.0, "_timestamp": ended, "_wandb": {"runtime": int(fold.runtime or 0)}}
        r = fold.run
        run = ServerRun(
            number=number, entity=fold.entity, project=fold.project, name=fold.run_id,
            display_name=r.get("display_name"), state=status(fold, writing=False),  # W&B's names too
            config=fold.config, summary=summary, history=rows, tags=list(r.get("tags") or []),
            group=r.get("group"), job_type=r.get("job_type"), notes=r.get("notes"), commit=r.get("git_commit"),
            host=r.get("host"), created_at=started, heartbeat_at=ended,
            metadata=_metadata(fold.environment) if fold.environment else None,
        )
        self.runs.append(run)
        for art in fold.artifacts:
            run.outputs.append(self._log_artifact(art, run, ended).number)
        return run

    def _log_artifact(self, art: dict[str, Any], run: ServerRun, when: float) -> ServerArtifact:
        entity, project = art.get("entity") or run.entity, art.get("project") or run.project
        versions = [a for a in self.artifacts if (a.entity, a.project, a.name) == (entity, project, art["name"])]
        for known in versions:
            if known.digest == art["digest"]:  # the same content is the same version
                known.aliases = _aliases(known.aliases, art["aliases"])
                return known
        for older in versions:
            older.aliases = [a for a in older.aliases if a != "latest"]  # the server moves `latest`
        contents = {}
        for e in art["entries"]:
            entry = {"digest": e["digest"], "size": e["size"], "ref": e["ref"],
                     "birthArtifactID": e["birth_artifact_id"], "extra": e["extra"]}
            contents[e["path"]] = {k: v for k, v in entry.items() if v is not None}
        manifest = {"version": 1, "storagePolicy": art.get("storage_policy") or "wandb-storage-policy-v1",
                    "storagePolicyConfig": {"storageLayout": "V2"}, "contents": contents}
        new = ServerArtifact(
            number=len(self.artifacts) + 1, entity=entity, project=project, name=art["name"], type=art["type"],
            version_index=len(versions), digest=art["digest"],
            digest_algorithm=art.get("digest_algorithm") or "MANIFEST_MD5",
            aliases=_aliases([], [*art["aliases"], "latest"]), tags=list(art["tags"]),
            description=art["description"], metadata=art["metadata"], created_at=when, manifest=manifest,
            created_by=run.number)
        self.artifacts.append(new)
        return new

    # -- facts offline runs cannot record ---------------------------------------------------------

    def run(self, run_id: str) -> ServerRun:
        (run,) = [r for r in self.runs if r.name == run_id]
        return run

    def artifact(self, name: str) -> ServerArtifact:
        """An artifact version by `name:vN` or `name:latest` (or any alias)."""
        base, _, version = name.partition(":")
        for art in self.artifacts:
            if art.name == base and (version in (f"v{art.version_index}", *art.aliases)):
                return art
        raise KeyError(name)

    def use(self, run_id: str, artifact: str) -> None:
        """Declare that run `run_id` used artifact `name:vN`, as `run.use_artifact` online records."""
        self.run(run_id).inputs.append(self.artifact(artifact).number)

    def link(self, artifact: str, *, registry: str = "model", collection: str, aliases: tuple[str, ...] = (),
             at: float | None = None) -> ServerLink:
        """Declare that artifact `name:vN` was linked into `collection` of the registry
        `registry` (the project `wandb-registry-<registry>` of the organization's entity), as
        `run.link_artifact` / `artifact.link` online records. Versions count per collection."""
        art = self.artifact(artifact)
        project = f"wandb-registry-{registry}"
        earlier = [ln for ln in self.links if (ln.project, ln.collection) == (project, collection)]
        if "latest" not in aliases:
            for ln in earlier:
                ln.aliases = [a for a in ln.aliases if a != "latest"]
            aliases = (*aliases, "latest")
        link = ServerLink(number=len(self.links) + 1, artifact=art.number, entity=self.org_entity, project=project,
                          collection=collection, version_index=len(earlier), aliases=list(aliases),
                          created_at=at if at is not None else art.created_at + 60)
        self.links.append(link)
        return link


def _aliases(known: list[str], more: list[str]) -> list[str]:
    return sorted(set(known) | set(more))


def _value(raw: str) -> Any:
    """A history value as JSON holds it; W&B's history keeps NaN and infinities."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _metadata(environment: dict[str, Any]) -> dict[str, Any]:
    """The run's `wandb-metadata.json`, which wandb-core uploads from the environment record:
    protobuf JSON names (`codePath`, `cpu_count`...)."""
    from wandb.proto import wandb_internal_pb2 as pb

    try:
        record = ParseDict(environment, pb.EnvironmentRecord(), ignore_unknown_fields=True)
    except Exception:  # an older SDK's metadata file: kept as it was
        return dict(environment)
    return MessageToDict(record)


def json_text(value: Any) -> str:
    """JSON as W&B's server writes it into a JSONString: NaN and infinities as bare words."""
    return json.dumps(value, allow_nan=True)
