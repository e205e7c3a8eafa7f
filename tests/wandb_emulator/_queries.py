"""The W&B API emulator's read side: GraphQL resolvers for what the client reads.

Resolvers are objects whose attributes (or methods, called with the field's arguments) are
the GraphQL fields of their type; graphql-core's default resolver finds them by name.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import graphql

from ._state import ServerArtifact, ServerLink, ServerRun, ServerState, json_text

if TYPE_CHECKING:
    from ._server import WandbEmulator

SCHEMA = graphql.build_schema((Path(__file__).parent / "schema.graphql").read_text())
# features the emulated server announces (ServerFeaturesQuery); none changes what braid reads
FEATURES = ("ARTIFACT_TAGS", "EXPAND_DEFINED_METRIC_GLOBS", "ARTIFACT_REGISTRY_SEARCH")
TAIL = 1  # the last lines of history and events a resumed run is told about


def gid(kind: str, number: int) -> str:
    """W&B's ids: base64 of `Type:N`.

    >>> gid("Run", 3)
    'UnVuOjM='
    """
    return base64.b64encode(f"{kind}:{number}".encode()).decode()


def from_gid(value: str) -> tuple[str, int]:
    kind, _, number = base64.b64decode(value).decode().partition(":")
    return kind, int(number)


def when(seconds: float | None) -> str | None:
    """A time as W&B's GraphQL answers it: UTC, whole seconds, no zone."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def connection(items: Sequence[Any], after: str | None, first: int | None) -> dict[str, Any]:
    """A Relay connection over a list; the cursor is the index."""
    start = int(after) + 1 if after else 0
    end = len(items) if first is None else min(len(items), start + first)
    edges = [{"node": items[i], "cursor": str(i)} for i in range(start, end)]
    return {"edges": edges, "totalCount": len(items),
            "pageInfo": {"endCursor": str(end - 1) if edges else after, "hasNextPage": end < len(items)}}


# -- resolvers: objects whose attributes are the GraphQL fields -------------------------------------

class Root:
    def __init__(self, emulator: WandbEmulator) -> None:
        self.emulator = emulator
        self.state = emulator.state

    def viewer(self, info: Any) -> dict[str, Any]:
        return _viewer(self.state)

    def serverInfo(self, info: Any) -> dict[str, Any]:  # noqa: N802
        return {"features": [{"name": n, "isEnabled": True} for n in FEATURES], "latestLocalVersionInfo": None}

    def project(self, info: Any, name: str | None = None, entityName: str | None = None) -> Project | None:  # noqa: N803
        if any((r.entity, r.project) == (entityName, name) for r in self.state.runs) or any(
                (ln.entity, ln.project) == (entityName, name) for ln in self.state.links):
            return Project(self.emulator, entityName or "", name or "")
        return None

    def model(self, info: Any, name: str | None = None, entityName: str | None = None) -> Project | None:  # noqa: N803
        return self.project(info, name, entityName or self.state.username)

    def entity(self, info: Any, name: str | None = None) -> Entity:
        return Entity(self.emulator, name or self.state.username)

    def artifact(self, info: Any, id: str) -> Artifact | None:  # noqa: A002
        kind, number = from_gid(id)
        arts = self.state.artifacts
        return Artifact(self.emulator, arts[number - 1]) if kind == "Artifact" and 0 < number <= len(arts) else None

    def organization(self, info: Any, name: str | None = None) -> dict[str, Any]:
        return _organization(self.emulator)


def _viewer(state: ServerState) -> dict[str, Any]:
    return {"id": gid("User", 1), "name": state.username, "username": state.username,
            "email": f"{state.username}@example.org", "entity": state.username, "flags": "{}",
            "teams": {"edges": []}, "organizations": [{"id": gid("Organization", 1), "name": state.organization,
                                                       "orgEntity": {"id": gid("Entity", 0),
                                                                     "name": state.org_entity}}]}


def _organization(emulator: WandbEmulator) -> dict[str, Any]:
    state = emulator.state
    return {"id": gid("Organization", 1), "name": state.organization,
            "orgEntity": Entity(emulator, state.org_entity)}


class Entity:
    def __init__(self, emulator: WandbEmulator, name: str) -> None:
        self.emulator, self.name = emulator, name
        self.id = gid("Entity", abs(hash(name)) % 10_000)

    def organization(self, info: Any) -> dict[str, Any]:
        return _organization(self.emulator)

    def user(self, info: Any) -> dict[str, Any]:
        return _viewer(self.emulator.state)

    def project(self, info: Any, name: str | None = None) -> Project:
        return Project(self.emulator, self.name, name or "")


class Project:
    def __init__(self, emulator: WandbEmulator, entity: str, name: str) -> None:
        self.emulator, self.name, self.entity_name = emulator, name, entity
        keys = sorted({(r.entity, r.project) for r in emulator.state.runs} |
                      {(ln.entity, ln.project) for ln in emulator.state.links})
        self.internalId = str(keys.index((entity, name)) + 1) if (entity, name) in keys else "0"
        self.id = gid("Project", int(self.internalId))
        self.readOnly = False

    def entity(self, info: Any) -> Entity:
        return Entity(self.emulator, self.entity_name)

    def _runs(self) -> list[ServerRun]:
        return [r for r in self.emulator.state.runs if (r.entity, r.project) == (self.entity_name, self.name)]

    def runCount(self, info: Any, filters: str | None = None) -> int:  # noqa: N802
        return len(self._runs())

    def runs(self, info: Any, filters: str | None = None, after: str | None = None, first: int | None = None,
             order: str | None = None) -> dict[str, Any]:
        runs = sorted(self._runs(), key=lambda r: r.created_at, reverse=(order or "").startswith("-"))
        return connection([Run(self.emulator, r) for r in runs], after, first)

    def run(self, info: Any, name: str) -> Run | None:
        for r in self._runs():
            if r.name == name:
                return Run(self.emulator, r)
        return None

    def bucket(self, info: Any, name: str, missingOk: bool | None = None) -> Run | None:  # noqa: N803
        return self.run(info, name)

    def artifactCollection(self, info: Any, name: str) -> Collection | None:  # noqa: N802
        state = self.emulator.state
        here = (self.entity_name, self.name, name)
        if any((ln.entity, ln.project, ln.collection) == here for ln in state.links):
            return Collection(self.emulator, "ArtifactPortfolio", *here)
        if any((a.entity, a.project, a.name) == here for a in state.artifacts):
            return Collection(self.emulator, "ArtifactSequence", *here)
        return None

    def artifactCollectionMembership(self, info: Any, name: str) -> Membership | None:  # noqa: N802
        base, _, version = name.partition(":")
        state = self.emulator.state
        for ln in state.links:
            if (ln.entity, ln.project, ln.collection) == (self.entity_name, self.name, base) and \
                    version in (f"v{ln.version_index}", *ln.aliases):
                return Membership(self.emulator, state.artifacts[ln.artifact - 1], ln)
        for art in state.artifacts:
            if (art.entity, art.project, art.name) == (self.entity_name, self.name, base) and \
                    version in (f"v{art.version_index}", *art.aliases):
                return Membership(self.emulator, art, None)
        return None


class Run:
    def __init__(self, emulator: WandbEmulator, run: ServerRun) -> None:
        self.emulator, self.run = emulator, run
        r = run
        self.id = gid("Run", r.number)
        self.name = r.name
        self.displayName = r.display_name or r.name
        self.tags = r.tags
        self.sweepName = None
        self.state = r.state
        self.group, self.jobType, self.notes, self.commit, self.host = r.group, r.job_type, r.notes, r.commit, r.host
        self.readOnly = False
        self.description = r.notes
        self.createdAt = when(r.created_at)
        self.heartbeatAt = when(r.heartbeat_at)
        self.historyLineCount = len(r.history)
        self.logLineCount = len(r.streams.get("output.log", []))
        events = r.streams.get("wandb-events.jsonl", [])
        self.eventsLineCount = len(events)
        self.historyTail = json.dumps([json_text(row) for row in r.history[-TAIL:]])
        self.eventsTail = json.dumps(events[-TAIL:])
        self.fileCount = (r.metadata is not None) + len(r.files)

    def _project(self) -> Project:
        return Project(self.emulator, self.run.entity, self.run.project)

    def projectId(self, info: Any) -> int:  # noqa: N802
        return int(self._project().internalId)

    def project(self, info: Any) -> Project:
        return self._project()

    def config(self, info: Any) -> str:
        # W&B keeps each top-level key as {"value": ..., "desc": ...}, beside its own `_wandb`
        raw = {k: {"value": v, "desc": None} for k, v in self.run.config.items()}
        raw["_wandb"] = {"value": self.run.wandb_config, "desc": None}
        return json_text(raw)

    def wandbConfig(self, info: Any, keys: list[str] | None = None) -> str:  # noqa: N802
        own = self.run.wandb_config
        return json_text({k: v for k, v in own.items() if keys is None or k in keys})

    def summaryMetrics(self, info: Any) -> str:  # noqa: N802
        return json_text(self.run.summary)

    def systemMetrics(self, info: Any) -> str:  # noqa: N802
        return "{}"

    def user(self, info: Any) -> dict[str, Any]:
        return _viewer(self.emulator.state)

    def historyKeys(self, info: Any, format: str | None = None) -> dict[str, Any]:  # noqa: N802, A002
        keys: dict[str, int] = {}
        for row in self.run.history:
            for k in row:
                keys[k] = keys.get(k, 0) + 1
        last = max((row["_step"] for row in self.run.history), default=-1)
        return {"lastStep": last, "keys": {k: {"typeCounts": [{"type": "number", "count": n}]}
                                           for k, n in keys.items()}}

    def history(self, info: Any, minStep: int | None = None, maxStep: int | None = None,  # noqa: N803
                samples: int | None = None) -> list[str]:
        rows = [row for row in self.run.history
                if (minStep is None or row["_step"] >= minStep) and (maxStep is None or row["_step"] < maxStep)]
        return [json_text(row) for row in rows[:samples]]

    def parquetHistory(self, info: Any, liveKeys: list[str]) -> dict[str, Any]:  # noqa: N802, N803
        # no exported parquet files: the client pages through `history` (HistoryPage)
        return {"parquetUrls": [], "liveData": []}

    def files(self, info: Any, names: list[str] | None = None, after: str | None = None, first: int | None = None,
              pattern: str | None = None) -> dict[str, Any]:
        r = self.run
        held = {**({"wandb-metadata.json": json.dumps(r.metadata).encode()} if r.metadata is not None else {}),
                **r.files}
        files = []
        for i, (name, body) in enumerate(sorted(held.items())):
            if names and name not in names:
                continue
            url = f"{self.emulator.url}/files/{r.entity}/{r.project}/{r.name}/{name}"
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            files.append({"id": gid("File", r.number * 1000 + i), "name": name, "url": url, "directUrl": url,
                          "sizeBytes": len(body), "mimetype": "application/json" if name.endswith(".json") else None,
                          "updatedAt": when(r.heartbeat_at), "md5": md5})
        return connection(files, after, first)

    def outputArtifacts(self, info: Any, after: str | None = None, first: int | None = None) -> dict[str, Any]:  # noqa: N802
        # a version whose upload was not committed is not shown
        arts = [self.emulator.state.artifacts[n - 1] for n in self.run.outputs]
        return connection([Artifact(self.emulator, a) for a in arts if a.state == "COMMITTED"], after, first)

    def inputArtifacts(self, info: Any, after: str | None = None, first: int | None = None) -> dict[str, Any]:  # noqa: N802
        arts = self.emulator.state.artifacts
        return connection([Artifact(self.emulator, arts[n - 1]) for n in self.run.inputs], after, first)


class Collection:
    """An ArtifactSequence (`kind` "ArtifactSequence") or a registry's ArtifactPortfolio."""

    def __init__(self, emulator: WandbEmulator, kind: str, entity: str, project: str, name: str) -> None:
        self.emulator, self.kind, self.entity, self.project_name, self.name = emulator, kind, entity, project, name
        self.id = gid(kind, abs(hash((entity, project, name))) % 100_000)

    def project(self, info: Any) -> Project:
        return Project(self.emulator, self.entity, self.project_name)

    def artifactMembership(self, info: Any, aliasName: str) -> Membership | None:  # noqa: N802, N803
        return self.project(info).artifactCollectionMembership(info, f"{self.name}:{aliasName}")

    def latestArtifact(self, info: Any) -> Artifact | None:  # noqa: N802
        versions = [a for a in self.emulator.state.artifacts if a.state == "COMMITTED" and
                    (a.entity, a.project, a.name) == (self.entity, self.project_name, self.name)]
        return Artifact(self.emulator, versions[-1]) if versions else None


def _alias(emulator: WandbEmulator, alias: str, collection: Collection, number: int) -> dict[str, Any]:
    return {"id": gid("ArtifactAlias", number), "alias": alias, "artifactCollection": collection}


class Artifact:
    def __init__(self, emulator: WandbEmulator, art: ServerArtifact) -> None:
        self.emulator, self.art = emulator, art
        a = art
        self.id = gid("Artifact", a.number)
        self.versionIndex = a.version_index
        self.artifactType = {"name": a.type}
        self.description = a.description
        self.metadata = json_text(a.metadata) if a.metadata is not None else None
        self.ttlDurationSeconds = -1  # no TTL: inherited from the project, which has none
        self.ttlIsInherited = True
        self.tags = [{"id": gid("Tag", i), "name": t} for i, t in enumerate(a.tags)]
        self.historyStep = None
        self.state = a.state
        self.size = a.size
        self.digest = a.digest
        self.digestAlgorithm = a.digest_algorithm
        self.commitHash = None
        self.fileCount = len(a.manifest["contents"])
        self.createdAt = when(a.created_at)
        self.updatedAt = when(a.created_at)

    def artifactSequence(self, info: Any) -> Collection:  # noqa: N802
        a = self.art
        return Collection(self.emulator, "ArtifactSequence", a.entity, a.project, a.name)

    def aliases(self, info: Any) -> list[dict[str, Any]]:
        seq = self.artifactSequence(info)
        return [_alias(self.emulator, alias, seq, self.art.number * 100 + i)
                for i, alias in enumerate(self.art.aliases)]

    def currentManifest(self, info: Any) -> dict[str, Any]:  # noqa: N802
        url = f"{self.emulator.url}/manifests/{self.art.number}.json"
        return {"file": {"id": gid("File", 10_000 + self.art.number), "name": "wandb_manifest.json",
                         "url": url, "directUrl": url, "sizeBytes": 0}}

    def artifactMemberships(self, info: Any, first: int | None = None) -> dict[str, Any]:  # noqa: N802
        own = [Membership(self.emulator, self.art, None)]
        links = [Membership(self.emulator, self.art, ln) for ln in self.emulator.state.links
                 if ln.artifact == self.art.number]
        return {"edges": [{"node": m} for m in own + links], "pageInfo": {"endCursor": None, "hasNextPage": False}}

    def createdBy(self, info: Any) -> Run | None:  # noqa: N802
        number = self.art.created_by
        return None if number is None else Run(self.emulator, self.emulator.state.runs[number - 1])

    def usedBy(self, info: Any, first: int | None = None) -> dict[str, Any]:  # noqa: N802
        runs = [Run(self.emulator, r) for r in self.emulator.state.runs if self.art.number in r.inputs]
        return connection(runs, None, first)


class Membership:
    """An artifact version as a member of a collection: its own sequence, or a registry link."""

    def __init__(self, emulator: WandbEmulator, art: ServerArtifact, link: ServerLink | None) -> None:
        self.emulator, self.art, self.link = emulator, art, link
        if link is None:
            self.id = gid("ArtifactCollectionMembership", art.number)
            self.versionIndex = art.version_index
            self.createdAt = when(art.created_at)
            self.collection = Collection(emulator, "ArtifactSequence", art.entity, art.project, art.name)
            self._aliases = art.aliases
        else:
            self.id = gid("ArtifactCollectionMembership", 10_000 + link.number)
            self.versionIndex = link.version_index
            self.createdAt = when(link.created_at)
            self.collection = Collection(emulator, "ArtifactPortfolio", link.entity, link.project, link.collection)
            self._aliases = link.aliases

    def aliases(self, info: Any) -> list[dict[str, Any]]:
        return [_alias(self.emulator, a, self.collection, i) for i, a in enumerate(self._aliases)]

    def artifactCollection(self, info: Any) -> Collection:  # noqa: N802
        return self.collection

    def artifact(self, info: Any) -> Artifact:
        return Artifact(self.emulator, self.art)

    def files(self, info: Any, after: str | None = None, first: int | None = None) -> dict[str, Any]:
        """The version's own files (not references), each at the URL of its uploaded bytes."""
        files = []
        for i, (path, entry) in enumerate(sorted(self.art.manifest.get("contents", {}).items())):
            if entry.get("ref"):
                continue
            url = f"{self.emulator.url}/storage/objects/{base64.b64decode(entry['digest']).hex()}"
            files.append({"id": gid("File", self.art.number * 10_000 + i), "name": path, "directUrl": url, "url": url,
                          "sizeBytes": entry.get("size") or 0, "md5": entry["digest"]})
        return connection(files, after, first)


def _resolve_type(value: Any, info: Any, abstract: Any) -> str | None:
    if isinstance(value, Collection):
        return value.kind
    if isinstance(value, Run):
        return "Run"
    return "User"


for _name in ("ArtifactCollection", "ArtifactCreator"):
    SCHEMA.get_type(_name).resolve_type = _resolve_type  # type: ignore[union-attr]
