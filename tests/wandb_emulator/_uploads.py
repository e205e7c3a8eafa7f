"""The W&B API emulator's write side: what `wandb sync` (wandb-core) and the public API upload.

Found by pointing `wandb sync <offline run folder>` (wandb 0.31) at the emulator and reading
what it sent, and from the GraphQL documents in the `wandb-core` binary:

- `UpsertBucket` makes or updates the run (config as `{"key": {"value": ...}}`, tags, notes,
  group, job type, commit, host; no start time);
- `POST /files/<entity>/<project>/<run>/file_stream` streams files line by line: each file
  (`wandb-history.jsonl`, `wandb-summary.json`, `wandb-events.jsonl`, `output.log`) as
  `{"offset": <line>, "content": [<lines>]}`, so a line sent again replaces itself; the last
  request says `"complete": true` and the `exitcode` (0 finished, 254 crashed, else failed);
- `CreateRunFiles` hands out an upload URL per run file (`wandb-metadata.json`,
  `wandb-summary.json`, `config.yaml`, `requirements.txt`...), then a `PUT` of each;
- an artifact is `CreateArtifact` (a PENDING version, or the version that already holds the
  digest) -> `CreateArtifactManifest` (an upload URL for `wandb_manifest.json`) ->
  `CreateArtifactFiles` (an upload URL per file, by its md5) -> `PUT`s -> `CommitArtifact`;
- the public API's `run.use_artifact(artifact)` is `UseArtifact`, `artifact.link(target)`
  is `LinkArtifact`.

Uploaded bytes are kept in the `ServerState`: run files on their run, artifact files by md5
in `blobs`, served back at the URLs the read side hands out (`download`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from ._queries import Artifact, Membership, Run, from_gid, gid
from ._state import ServerArtifact, ServerRun

if TYPE_CHECKING:
    from ._server import WandbEmulator

# file_stream's files: the history, the summary (each line the whole summary), and the rest kept as lines
HISTORY, SUMMARY = "wandb-history.jsonl", "wandb-summary.json"
METADATA = "wandb-metadata.json"
# the exit code -> the run's state, as W&B's server maps it
EXIT_STATES = {0: "finished", 254: "crashed"}
# UpsertBucket's input -> the ServerRun attribute it sets
RUN_FIELDS = {"displayName": "display_name", "notes": "notes", "groupName": "group", "jobType": "job_type",
              "tags": "tags", "commit": "commit", "host": "host", "state": "state"}


class Mutation:
    """The Mutation root: each method is one mutation, called with its `input`."""

    def __init__(self, emulator: WandbEmulator) -> None:
        self.emulator = emulator
        self.state = emulator.state

    def _entity(self, name: str | None) -> str:
        """An empty entity is the viewer's own (offline runs name none)."""
        return name or self.state.username

    def _run(self, entity: str | None, project: str, name: str) -> ServerRun:
        run = self.state.find_run(self._entity(entity), project, name)
        if run is None:
            raise ValueError(f"run {entity}/{project}/{name} not found")
        return run

    def _artifact(self, artifact_id: str) -> ServerArtifact:
        kind, number = from_gid(artifact_id)
        if kind != "Artifact" or not 0 < number <= len(self.state.artifacts):
            raise ValueError(f"artifact {artifact_id} not found")
        return self.state.artifacts[number - 1]

    def upsertBucket(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802, A002
        state = self.state
        if input.get("id"):
            run = state.runs[from_gid(input["id"])[1] - 1]
            entity, project, name = run.entity, run.project, run.name
        else:
            entity, project, name = self._entity(input.get("entityName")), input.get("modelName") or "uncategorized", \
                input["name"]
        fields = {attr: input[key] for key, attr in RUN_FIELDS.items() if input.get(key) is not None}
        if input.get("config") is not None:
            # W&B keeps `{"key": {"value": ...}}`, its own keys under `_wandb`; the state keeps the values
            config = {k: v["value"] for k, v in json.loads(input["config"]).items()}
            fields["wandb_config"] = config.pop("_wandb", {})
            fields["config"] = config
        if input.get("summaryMetrics") is not None:
            fields["summary"] = json.loads(input["summaryMetrics"])
        run, made = state.upsert_run(entity, project, name, fields, now=time.time())
        return {"bucket": Run(self.emulator, run), "inserted": made}

    def createRunFiles(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802, A002
        run = self._run(input["entityName"], input["projectName"], input["runName"])
        files = [{"name": name, "uploadUrl": f"{self.emulator.url}/storage/runs/{run.number}/{quote(name)}"}
                 for name in input["files"]]
        return {"runID": gid("Run", run.number), "uploadHeaders": [], "files": files}

    def markRunFilesUploaded(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802, A002
        return {"success": True}

    def createArtifact(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802, A002
        entity, project = self._entity(input["entityName"]), input["projectName"]
        run = self.state.find_run(entity, project, input["runName"]) if input.get("runName") else None
        collection = input["artifactCollectionName"]
        art = self.state.create_artifact(
            entity=entity, project=project, name=collection, type=input["artifactTypeName"],
            digest=input["digest"], aliases=[a["alias"] for a in input.get("aliases") or []
                                             if a["artifactCollectionName"] == collection],
            run=run, when=time.time(), algorithm=input.get("digestAlgorithm") or "MANIFEST_MD5",
            description=input.get("description"),
            metadata=json.loads(input["metadata"]) if input.get("metadata") else None)
        return {"artifact": Artifact(self.emulator, art)}

    def _manifest(self, art: ServerArtifact) -> dict[str, Any]:
        url = f"{self.emulator.url}/storage/manifests/{art.number}"
        return {"id": gid("ArtifactManifest", art.number),
                "file": {"id": gid("File", 10_000 + art.number), "name": "wandb_manifest.json", "uploadUrl": url,
                         "uploadHeaders": []}}

    def createArtifactManifest(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802, A002
        return {"artifactManifest": self._manifest(self._artifact(input["artifactID"]))}

    def updateArtifactManifest(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802, A002
        _, number = from_gid(input["artifactManifestID"])
        return {"artifactManifest": self._manifest(self.state.artifacts[number - 1])}

    def createArtifactFiles(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802, A002
        files = []
        for spec in input["artifactFiles"]:
            art = self._artifact(spec["artifactID"])
            md5 = _hex_md5(spec["md5"])
            # a file the server already holds is not sent again (no upload URL)
            url = None if md5 in self.state.blobs else f"{self.emulator.url}/storage/objects/{md5}"
            files.append({"storagePath": f"wandb_artifacts/{md5}", "uploadUrl": url, "uploadHeaders": [],
                          "uploadMultipartUrls": None, "artifact": Artifact(self.emulator, art)})
        return {"files": {"edges": [{"node": f, "cursor": str(i)} for i, f in enumerate(files)],
                          "pageInfo": {"endCursor": None, "hasNextPage": False}}}

    def commitArtifact(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802, A002
        art = self._artifact(input["artifactID"])
        missing = [p for p, e in art.manifest.get("contents", {}).items()
                   if not e.get("ref") and _hex_md5(e["digest"]) not in self.state.blobs]
        if missing:
            raise ValueError(f"artifact {art.name}: files not uploaded: {', '.join(sorted(missing))}")
        self.state.commit(art)
        return {"artifact": Artifact(self.emulator, art)}

    def useArtifact(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802, A002
        run = self._run(input["entityName"], input["projectName"], input["runName"])
        art = self._artifact(input["artifactID"])
        if art.number not in run.inputs:
            run.inputs.append(art.number)
        return {"artifact": Artifact(self.emulator, art)}

    def linkArtifact(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802, A002
        art = self._artifact(input["artifactID"])
        link = self.state.link_version(art, entity=self._entity(input.get("entityName")), project=input["projectName"],
                                       collection=input["artifactPortfolioName"],
                                       aliases=tuple(a["alias"] for a in input.get("aliases") or []), at=time.time())
        return {"versionIndex": link.version_index, "artifactMembership": Membership(self.emulator, art, link)}


# -- HTTP: file_stream, uploads and downloads ---------------------------------------------------------

def file_stream(emulator: WandbEmulator, entity: str, project: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """One file_stream request: lines of each file at their offsets, and maybe the end of the run."""
    run = emulator.state.find_run(entity, project, name)
    if run is None:
        raise ValueError(f"run {entity}/{project}/{name} not found")
    for file, chunk in (body.get("files") or {}).items():
        offset, lines = int(chunk.get("offset") or 0), list(chunk.get("content") or [])
        if file == HISTORY:
            run.history[offset:offset + len(lines)] = [json.loads(line) for line in lines]
        elif file == SUMMARY:
            if lines:
                run.summary = json.loads(lines[-1])
        else:
            kept = run.streams.setdefault(file, [])
            kept[offset:offset + len(lines)] = lines
    run.heartbeat_at = time.time()
    if body.get("complete"):
        run.exit_code = int(body.get("exitcode") or 0)
        run.state = EXIT_STATES.get(run.exit_code, "failed")
    return {"exitcode": None, "limits": {}}


def put(emulator: WandbEmulator, path: str, data: bytes) -> int:
    """A PUT to an upload URL the mutations handed out: the HTTP status."""
    state = emulator.state
    parts = path.strip("/").split("/", 3)
    if parts[:2] == ["storage", "runs"] and len(parts) == 4:
        run, name = state.runs[int(parts[2]) - 1], unquote(parts[3])
        if name == METADATA:
            run.metadata = json.loads(data)
        else:
            run.files[name] = data
        return 200
    if parts[:2] == ["storage", "manifests"] and len(parts) == 3:
        state.artifacts[int(parts[2]) - 1].manifest = json.loads(data)
        return 200
    if parts[:2] == ["storage", "objects"] and len(parts) == 3:
        if hashlib.md5(data).hexdigest() != parts[2]:  # as object stores check Content-MD5
            return 400
        state.blobs[parts[2]] = data
        return 200
    return 404


def download(emulator: WandbEmulator, path: str) -> bytes | None:
    """An uploaded artifact file: by the URL the SDK builds from a manifest entry
    (`/artifactsV2/<region>/<entity>/<project>/<collection>/<birth id>/<md5 hex>/<name>`) or
    the object URL; a run file by its name."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    state = emulator.state
    if parts[0] == "artifactsV2" and len(parts) >= 3:
        return state.blobs.get(parts[-2])
    if parts[:2] == ["storage", "objects"] and len(parts) == 3:
        return state.blobs.get(parts[2])
    if parts[0] == "files" and len(parts) >= 5:
        run = state.find_run(parts[1], parts[2], parts[3])
        name = "/".join(parts[4:])
        if run is not None:
            if name == METADATA and run.metadata is not None:
                return json.dumps(run.metadata).encode()
            return run.files.get(name)
    return None


def _hex_md5(b64: str) -> str:
    """A manifest's base64 md5 as hex (the key of `blobs`).

    >>> _hex_md5("1B2M2Y8AsgTpgAmY7PhCfg==")
    'd41d8cd98f00b204e9800998ecf8427e'
    """
    return base64.b64decode(b64).hex()
