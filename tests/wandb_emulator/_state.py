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

What clients upload (`wandb sync`, the public API: `_uploads`) lands here too, through
`upsert_run`, `create_artifact`, `commit`, `use` and `link`, so the read side serves uploaded
runs like the ones built from folders.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    # an uploaded version is PENDING from createArtifact until commitArtifact
    state: str = "COMMITTED"
    pending_aliases: list[str] = field(default_factory=list)  # what commitArtifact assigns

    @property
    def size(self) -> int:
        return sum(e.get("size") or 0 for e in self.manifest.get("contents", {}).values())


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
    files: dict[str, bytes] = field(default_factory=dict)  # uploaded run files but the metadata file
    # file_stream's other files, line by line (`wandb-events.jsonl`, `output.log`)
    streams: dict[str, list[str]] = field(default_factory=dict)
    exit_code: int | None = None
    wandb_config: dict[str, Any] = field(default_factory=lambda: {"cli_version": "0.31.0"})  # config's `_wandb`


@dataclass
class ServerState:
    """Everything the emulated server knows: one viewer (the API key's owner), their
    organization, runs, artifact versions and registry links."""

    username: str = "tester"
    organization: str = "acme"
    runs: list[ServerRun] = field(default_factory=list)
    artifacts: list[ServerArtifact] = field(default_factory=list)
    links: list[ServerLink] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)  # uploaded artifact files, by md5 (hex)

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
        """An artifact the run logged, as `wandb sync` uploads it: created, its manifest, committed."""
        contents = {}
        for e in art["entries"]:
            entry = {"digest": e["digest"], "size": e["size"], "ref": e["ref"],
                     "birthArtifactID": e["birth_artifact_id"], "extra": e["extra"]}
            contents[e["path"]] = {k: v for k, v in entry.items() if v is not None}
        version = self.create_artifact(
            entity=art.get("entity") or run.entity, project=art.get("project") or run.project, name=art["name"],
            type=art["type"], digest=art["digest"], aliases=[*art["aliases"], "latest"], run=run, when=when,
            algorithm=art.get("digest_algorithm") or "MANIFEST_MD5", tags=art["tags"],
            description=art["description"], metadata=art["metadata"])
        if version.state == "PENDING":
            version.manifest = {"version": 1, "storagePolicy": art.get("storage_policy") or "wandb-storage-policy-v1",
                                "storagePolicyConfig": {"storageLayout": "V2"}, "contents": contents}
            self.commit(version)
        return version

    # -- what clients upload ------------------------------------------------------------------------

    def find_run(self, entity: str, project: str, name: str) -> ServerRun | None:
        return next((r for r in self.runs if (r.entity, r.project, r.name) == (entity, project, name)), None)

    def upsert_run(self, entity: str, project: str, name: str, fields: dict[str, Any], *,
                   now: float) -> tuple[ServerRun, bool]:
        """UpsertBucket: the run `entity/project/name`, made when it is new, with `fields` (the
        ServerRun's attributes) set; (the run, whether it was made). A new run is created now:
        the request carries no start time (the original one is in the history rows' `_timestamp`
        and the metadata file's `startedAt`)."""
        run = self.find_run(entity, project, name)
        made = run is None
        if run is None:
            run = ServerRun(number=len(self.runs) + 1, entity=entity, project=project, name=name, display_name=None,
                            state="running", config={}, summary={}, history=[], tags=[], group=None, job_type=None,
                            notes=None, commit=None, host=None, created_at=now, heartbeat_at=now, metadata=None)
            self.runs.append(run)
        for key, value in fields.items():
            setattr(run, key, value)
        run.heartbeat_at = now
        return run, made

    def create_artifact(self, *, entity: str, project: str, name: str, type: str, digest: str,  # noqa: A002
                        aliases: Sequence[str], run: ServerRun | None, when: float, algorithm: str = "MANIFEST_MD5",
                        tags: Sequence[str] = (), description: str | None = None,
                        metadata: Any = None) -> ServerArtifact:
        """createArtifact: the version of collection `name` that holds this content (the same
        digest is the same version: W&B dedupes, and a version whose upload was cut off is
        taken up again), else a new PENDING one. `aliases` are claimed at commit."""
        versions = [a for a in self.artifacts if (a.entity, a.project, a.name) == (entity, project, name)]
        version = next((a for a in versions if a.digest == digest), None)
        if version is None:
            version = ServerArtifact(
                number=len(self.artifacts) + 1, entity=entity, project=project, name=name, type=type,
                version_index=len(versions), digest=digest, digest_algorithm=algorithm, aliases=[], tags=list(tags),
                description=description, metadata=metadata, created_at=when, manifest={"contents": {}},
                created_by=run.number if run is not None else None, state="PENDING")
            self.artifacts.append(version)
        version.pending_aliases = sorted(set(aliases))
        if version.state == "COMMITTED":
            self._claim(version, aliases)
        if run is not None and version.number not in run.outputs:
            run.outputs.append(version.number)
        return version

    def commit(self, art: ServerArtifact) -> None:
        """commitArtifact: the version is complete; it takes its aliases from older versions."""
        art.state = "COMMITTED"
        self._claim(art, art.pending_aliases)

    def _claim(self, art: ServerArtifact, aliases: Sequence[str]) -> None:
        """An alias names one version of a collection: the others lose it."""
        for other in self.artifacts:
            if (other.entity, other.project, other.name) == (art.entity, art.project, art.name) and other is not art:
                other.aliases = [a for a in other.aliases if a not in aliases]
        art.aliases = _aliases(art.aliases, list(aliases))

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
        return self.link_version(art, entity=self.org_entity, project=f"wandb-registry-{registry}",
                                 collection=collection, aliases=aliases,
                                 at=at if at is not None else art.created_at + 60)

    def link_version(self, art: ServerArtifact, *, entity: str, project: str, collection: str,
                     aliases: tuple[str, ...], at: float) -> ServerLink:
        """linkArtifact: `art` as the next version of the portfolio `collection` (linking it
        again changes nothing but its aliases), which takes `latest` and the given aliases."""
        members = [ln for ln in self.links if (ln.entity, ln.project, ln.collection) == (entity, project, collection)]
        link = next((ln for ln in members if ln.artifact == art.number), None)
        claimed = set(aliases)
        if link is None:
            link = ServerLink(number=len(self.links) + 1, artifact=art.number, entity=entity, project=project,
                              collection=collection, version_index=len(members), aliases=[], created_at=at)
            self.links.append(link)
            claimed.add("latest")
        for other in members:
            if other is not link:
                other.aliases = [a for a in other.aliases if a not in claimed]
        link.aliases = _aliases(link.aliases, sorted(claimed))
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
