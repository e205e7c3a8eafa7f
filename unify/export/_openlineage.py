"""The graph as OpenLineage run events, built and serialised with the openlineage-python client.

Every run node becomes a run of a job: an MLflow run is a run of its experiment, a DVC stage
execution a run of `<repo>/<stage>`, a W&B run a run of its project. Each run gets a START
event (at its start, with its inputs) and one event for how it ended (COMPLETE, FAIL, ABORT;
RUNNING while it runs) carrying its inputs and outputs. A registry entry becomes a run of the
job `register/<model name>` whose input is the model and whose output is the version.

Facets: datasets carry `version` (the content digest), `schema` (where the tool recorded
columns), `ownership`, `symlinks` (the same thing in another tool, from `same_as`) and `braid`
(node id, kind, tool, digest, size, uri); runs carry `parent` (nested runs), `tags` and `braid`
(params, the latest value of every metric, tool, node id); jobs carry `jobType`,
`sourceCodeLocation` (git commit, remote, branch) and `ownership`.

Run ids are UUIDs derived from the node id (uuid5), so exporting twice names the same runs.

>>> events = openlineage_events(select_graph(cat))        # doctest: +SKIP
>>> write_ndjson(events, sys.stdout)                       # doctest: +SKIP
>>> post_events(events, "http://marquez:5000")             # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from typing import IO, TYPE_CHECKING, Any

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    JobFacet,
    RunFacet,
    dataset_version_dataset,
    job_type_job,
    ownership_dataset,
    ownership_job,
    parent_run,
    schema_dataset,
    source_code_location_job,
    symlinks_dataset,
    tags_run,
)
from openlineage.client.serde import Serde

from ..errors import BraidError, UsageError
from ._graph import Graph, repo_roots

if TYPE_CHECKING:
    from openlineage.client.transport.http import HttpTransport

try:
    VERSION = metadata.version("braid")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    VERSION = "0.0.0"

# a URI naming this program, as the spec asks of `producer`
PRODUCER = f"urn:braid:{VERSION}"
# where braid's own facet schemas live (`facet_schemas()` returns the documents to publish there)
SCHEMA_BASE = "https://braid.dev/spec/facets/1-0-0/"
RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://braid.dev/run")

# a run's status as the tool says it (lower case) -> the event that ends it
END_STATES: dict[str, RunState] = {
    "finished": RunState.COMPLETE, "completed": RunState.COMPLETE, "complete": RunState.COMPLETE,
    "success": RunState.COMPLETE,
    "failed": RunState.FAIL, "crashed": RunState.FAIL, "error": RunState.FAIL,
    "killed": RunState.ABORT, "aborted": RunState.ABORT, "cancelled": RunState.ABORT,
    "running": RunState.RUNNING, "scheduled": RunState.RUNNING, "pending": RunState.RUNNING,
}
# tool -> what one of its runs is, for the jobType facet
JOB_TYPES: dict[str, str] = {"mlflow": "RUN", "wandb": "RUN", "dvc": "STAGE"}


# -- braid's own facets -------------------------------------------------------------------------
@attr.define
class BraidRunFacet(RunFacet):
    """What an ML tool knows of a run that OpenLineage has no facet for."""

    nodeId: str  # noqa: N815
    """the run's braid node id, e.g. mlflow:run/3606aa26…"""
    tool: str | None = attr.field(default=None)
    """mlflow, wandb or dvc"""
    source: str | None = attr.field(default=None)
    """the braid source it was read from"""
    name: str | None = attr.field(default=None)
    """the run's name in the tool"""
    status: str | None = attr.field(default=None)
    """the run's status as the tool says it"""
    project: str | None = attr.field(default=None)
    """MLflow experiment, W&B project or DVC repository"""
    params: dict[str, str] = attr.field(factory=dict)
    """parameters as the tool stored them"""
    metrics: dict[str, float | str] = attr.field(factory=dict)
    """the latest value of every metric (NaN and infinities as strings)"""

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA_BASE}BraidRunFacet.json#/$defs/BraidRunFacet"


@attr.define
class BraidDatasetFacet(DatasetFacet):
    """Which braid node a dataset is, and the content hash the tool recorded for it."""

    nodeId: str  # noqa: N815
    """the braid node id, e.g. dvc:dataset/data/raw.csv@36b3…"""
    kind: str = attr.field(default="dataset")
    """dataset, model, artifact or model_version"""
    tool: str | None = attr.field(default=None)
    """mlflow, wandb or dvc"""
    source: str | None = attr.field(default=None)
    """the braid source it was read from"""
    digest: str | None = attr.field(default=None)
    """md5:<hex> of the bytes, or another prefixed hash"""
    size: int | None = attr.field(default=None)
    """bytes"""
    uri: str | None = attr.field(default=None)
    """where the bytes or the record live"""

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA_BASE}BraidDatasetFacet.json#/$defs/BraidDatasetFacet"


BRAID_FACETS: tuple[type, ...] = (BraidRunFacet, BraidDatasetFacet)
# attrs annotation -> JSON Schema, for the facet schemas derived from the classes above
JSON_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "str | None": {"type": "string"},
    "int | None": {"type": "integer"},
    "dict[str, str]": {"type": "object", "additionalProperties": {"type": "string"}},
    "dict[str, float | str]": {"type": "object", "additionalProperties": {"type": ["number", "string"]}},
}
BASE_FACET = {"RunFacet": "RunFacet", "DatasetFacet": "DatasetFacet"}


def facet_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema document of each of braid's facets, keyed by file name (publish them at
    SCHEMA_BASE): derived from the facet classes, so they cannot drift apart."""
    docs = {}
    for cls in BRAID_FACETS:
        name = cls.__name__
        own = [f for f in attr.fields(cls) if not f.name.startswith("_")]
        base = next(b.__name__ for b in cls.__mro__[1:] if b.__name__ in BASE_FACET)
        docs[f"{name}.json"] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{SCHEMA_BASE}{name}.json",
            "$defs": {name: {"allOf": [
                {"$ref": f"https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/{base}"},
                {"type": "object",
                 "properties": {f.name: JSON_TYPES[str(f.type)] for f in own},
                 "required": [f.name for f in own if f.default is attr.NOTHING]},
            ], "type": "object"}},
            "type": "object",
            "properties": {"braid": {"$ref": f"#/$defs/{name}"}},
        }
    return docs


# -- naming ---------------------------------------------------------------------------------------
def run_id(node_id: str) -> str:
    """The OpenLineage runId of a braid node: a UUID derived from its id, the same every export.

    >>> run_id("mlflow:run/3606aa26")
    '...-...-5...-...-...'
    """
    return str(uuid.uuid5(RUN_ID_NAMESPACE, node_id))


def dataset_name(node: dict[str, Any], roots: dict[str, str]) -> tuple[str, str]:
    """(namespace, name) of a node as an OpenLineage dataset, after the spec's naming rules:
    object stores by bucket (`s3://bucket`, `key`), local files as (`file`, absolute path), a
    DVC path inside its repository's folder; anything else by its braid source and native id.

    >>> dataset_name({"id": "w:dataset/x", "uri": "s3://bucket/data/x.csv", "source": "w"}, {})
    ('s3://bucket', 'data/x.csv')
    >>> dataset_name({"id": "dvc:dataset/data/a.csv@ab", "uri": "data/a.csv", "source": "dvc", "tool": "dvc"},
    ...              {"dvc": "/repo"})
    ('file', '/repo/data/a.csv')
    >>> dataset_name({"id": "mlflow:dataset/train@fa0c", "uri": "data/train.csv", "source": "mlflow"}, {})
    ('braid://mlflow', 'dataset/train')
    """
    uri = node.get("uri") or ""
    source = node.get("source") or str(node["id"]).split(":", 1)[0]
    if uri.startswith("file://") and uri[7:].startswith("/"):
        return "file", uri[7:]
    if uri.startswith("file:/"):
        return "file", uri[5:]
    if uri.startswith("/"):
        return "file", uri
    scheme, sep, rest = uri.partition("://")
    if sep and scheme.isidentifier() and rest:
        authority, _, path = rest.partition("/")
        return f"{scheme}://{authority}", path or "/"
    if uri and node.get("tool") == "dvc" and source in roots and ":" not in uri:
        return "file", f"{roots[source].rstrip('/')}/{uri}"
    # the version is the `version` facet's: a dataset is the same one across its versions
    return f"braid://{source}", str(node["id"]).split(":", 1)[1].rsplit("@", 1)[0]


def _job_name(node: dict[str, Any], run: dict[str, Any] | None) -> str:
    project = (run or {}).get("project")
    if node.get("tool") == "dvc":
        stage = _attrs(node).get("stage") or node.get("name")
        return f"{project}/{stage}" if project else str(stage)
    return str(project or node.get("name") or node["id"])


def _attrs(node: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(node.get("attrs") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _time(*candidates: Any) -> str:
    for value in candidates:
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return datetime(1970, 1, 1, tzinfo=timezone.utc).isoformat()  # the spec requires a time


def _number(value: float) -> float | str:
    # JSON has no NaN or infinity: the client's serde would write invalid JSON
    return value if math.isfinite(value) else ("NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity"))


# -- building -------------------------------------------------------------------------------------
class _Builder:
    """Indexes the graph's tables once, then builds each run's events."""

    def __init__(self, graph: Graph) -> None:
        self.nodes = {r["id"]: r for r in graph.nodes.iter_rows(named=True)}
        self.runs = {r["id"]: r for r in graph.table("runs").iter_rows(named=True)}
        self.roots = repo_roots(graph.catalog)
        self.params: dict[str, dict[str, str]] = defaultdict(dict)
        for rid, key, value in graph.table("params").select("run_id", "key", "value").iter_rows():
            self.params[rid][key] = value
        self.metrics: dict[str, dict[str, float | str]] = defaultdict(dict)
        latest = (graph.table("metrics").sort("run_id", "key", "timestamp", "step", nulls_last=False)
                  .group_by("run_id", "key", maintain_order=True).last())
        for rid, key, value in latest.select("run_id", "key", "value").iter_rows():
            self.metrics[rid][key] = _number(value)
        self.tags: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for nid, key, value in graph.table("tags").select("node_id", "key", "value").iter_rows():
            self.tags[nid].append((key, value))
        self.links: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for src, dst, kind in graph.edges.select("src", "dst", "kind").iter_rows():
            self.links[kind][dst].append(src)  # kind -> effect -> causes
            if kind == "same_as":
                self.links[kind][src].append(dst)
        self.outputs: dict[str, list[str]] = defaultdict(list)  # run -> what it wrote
        for dst, srcs in self.links["output"].items():
            for src in srcs:
                self.outputs[src].append(dst)

    def events(self) -> list[RunEvent]:
        out: list[RunEvent] = []
        for nid, node in sorted(self.nodes.items()):
            if node["kind"] == "run":
                out += self.run_events(node)
        for version, models in sorted(self.links["registered_as"].items()):
            if version in self.nodes:
                out += self.registration_events(self.nodes[version], [m for m in models if m in self.nodes])
        return out

    # runs
    def job(self, node: dict[str, Any]) -> Job:
        run = self.runs.get(node["id"])
        facets: dict[str, JobFacet] = {
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration=str(node.get("tool") or "braid").upper(),
                                                    jobType=JOB_TYPES.get(node.get("tool") or "", "RUN"), producer=PRODUCER),
        }
        code = self.source_code(node, run)
        if code is not None:
            facets["sourceCodeLocation"] = code
        user = (run or {}).get("user") or node.get("user")
        if user:
            facets["ownership"] = ownership_job.OwnershipJobFacet(
                owners=[ownership_job.Owner(name=f"user:{user}")], producer=PRODUCER)
        return Job(namespace=node["source"], name=_job_name(node, run), facets=facets)

    def source_code(self, node: dict[str, Any], run: dict[str, Any] | None) -> JobFacet | None:
        commits = [c.removeprefix("git:") for c in self.links["code"].get(node["id"], [])]
        commit = (run or {}).get("git_commit") or (commits[0] if commits else None)
        if not commit:
            return None
        remote = (run or {}).get("git_remote")
        root = self.roots.get(node["source"])
        url = remote or (f"file://{root}" if root else f"git:{commit}")
        env = _json_dict((run or {}).get("environment"))
        path = env.get("source_name") or env.get("program") or env.get("lock_file")
        return source_code_location_job.SourceCodeLocationJobFacet(
            type="git", url=url, repoUrl=remote, version=commit, branch=(run or {}).get("git_branch"),
            path=str(path) if path else None, producer=PRODUCER)

    def run_facets(self, node: dict[str, Any]) -> dict[str, RunFacet]:
        nid = node["id"]
        run = self.runs.get(nid) or {}
        facets: dict[str, RunFacet] = {"braid": BraidRunFacet(
            nodeId=nid, tool=node.get("tool"), source=node.get("source"), name=node.get("name"),
            status=node.get("status"), project=run.get("project"), params=dict(sorted(self.params[nid].items())),
            metrics=dict(sorted(self.metrics[nid].items())), producer=PRODUCER)}
        parents = [p for p in self.links["parent_of"].get(nid, []) if p in self.nodes]
        if parents:
            parent = self.nodes[parents[0]]
            facets["parent"] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=run_id(parent["id"])),
                job=parent_run.Job(namespace=parent["source"], name=_job_name(parent, self.runs.get(parent["id"]))),
                producer=PRODUCER)
        if self.tags.get(nid):
            facets["tags"] = tags_run.TagsRunFacet(
                tags=[tags_run.TagsRunFacetFields(key=k, value=v, source=node.get("tool")) for k, v in sorted(self.tags[nid])],
                producer=PRODUCER)
        return facets

    def run_events(self, node: dict[str, Any]) -> list[RunEvent]:
        nid = node["id"]
        run = self.runs.get(nid) or {}
        job = self.job(node)
        inputs = [self.input(self.nodes[s]) for s in sorted(set(self.links["input"].get(nid, []))) if s in self.nodes]
        outputs = [self.output(self.nodes[d]) for d in sorted(set(self.outputs.get(nid, []))) if d in self.nodes]
        started = _time(run.get("started_at"), node.get("created_at"), run.get("ended_at"), node.get("updated_at"))
        ended = _time(run.get("ended_at"), node.get("updated_at"), run.get("started_at"), node.get("created_at"))
        state = END_STATES.get(str(node.get("status") or run.get("status") or "").lower(), RunState.OTHER)
        facets = self.run_facets(node)
        start = RunEvent(eventType=RunState.START, eventTime=started, run=Run(runId=run_id(nid), facets=facets),
                         job=job, inputs=inputs, outputs=[], producer=PRODUCER)
        end = RunEvent(eventType=state, eventTime=ended if state != RunState.RUNNING else started,
                       run=Run(runId=run_id(nid), facets=facets), job=job, inputs=inputs, outputs=outputs,
                       producer=PRODUCER)
        return [start, end]

    def registration_events(self, version: dict[str, Any], models: Sequence[str]) -> list[RunEvent]:
        nid = version["id"]
        when = _time(version.get("created_at"), version.get("updated_at"))
        job = Job(namespace=version["source"], name=f"register/{version.get('name')}", facets={
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration=str(version.get("tool") or "braid").upper(),
                                                    jobType="MODEL_REGISTRATION", producer=PRODUCER)})
        facets: dict[str, RunFacet] = {"braid": BraidRunFacet(
            nodeId=nid, tool=version.get("tool"), source=version.get("source"),
            name=f"{version.get('name')} v{version.get('version')}", status=version.get("status"), producer=PRODUCER)}
        inputs = [self.input(self.nodes[m]) for m in sorted(models)]
        outputs = [self.output(version)]
        return [RunEvent(eventType=state, eventTime=when, run=Run(runId=run_id(nid), facets=facets), job=job,
                         inputs=inputs, outputs=outputs if state == RunState.COMPLETE else [], producer=PRODUCER)
                for state in (RunState.START, RunState.COMPLETE)]

    # datasets
    def dataset_facets(self, node: dict[str, Any]) -> dict[str, DatasetFacet]:
        facets: dict[str, DatasetFacet] = {"braid": BraidDatasetFacet(
            nodeId=node["id"], kind=node["kind"], tool=node.get("tool"), source=node.get("source"),
            digest=node.get("digest"), size=node.get("size"), uri=node.get("uri"), producer=PRODUCER)}
        version = node.get("digest") or node.get("version")
        if version:
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(version),
                                                                                  producer=PRODUCER)
        fields = schema_fields(_attrs(node))
        if fields:
            facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER)
        if node.get("user"):
            facets["ownership"] = ownership_dataset.OwnershipDatasetFacet(
                owners=[ownership_dataset.Owner(name=f"user:{node['user']}")], producer=PRODUCER)
        same = sorted({o for o in self.links["same_as"].get(node["id"], []) if o in self.nodes})
        if same:
            idents = []
            for other in same:
                namespace, name = dataset_name(self.nodes[other], self.roots)
                idents.append(symlinks_dataset.Identifier(namespace=namespace, name=name,
                                                          type=str(self.nodes[other].get("kind")).upper()))
            facets["symlinks"] = symlinks_dataset.SymlinksDatasetFacet(identifiers=idents, producer=PRODUCER)
        return facets

    def input(self, node: dict[str, Any]) -> InputDataset:
        namespace, name = dataset_name(node, self.roots)
        return InputDataset(namespace=namespace, name=name, facets=self.dataset_facets(node))

    def output(self, node: dict[str, Any]) -> OutputDataset:
        namespace, name = dataset_name(node, self.roots)
        return OutputDataset(namespace=namespace, name=name, facets=self.dataset_facets(node))


def _json_dict(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def schema_fields(attrs: dict[str, Any]) -> list[schema_dataset.SchemaDatasetFacetFields]:
    """Columns a tool recorded for a dataset: MLflow's `mlflow_colspec` (a JSON string in attrs).

    >>> [f.name for f in schema_fields({"schema": '{"mlflow_colspec": [{"type": "long", "name": "id"}]}'})]
    ['id']
    """
    schema = attrs.get("schema")
    if isinstance(schema, str):
        schema = _json_dict(schema)
    if not isinstance(schema, dict):
        return []
    cols = schema.get("mlflow_colspec") or schema.get("columns") or []
    return [schema_dataset.SchemaDatasetFacetFields(name=str(c["name"]), type=str(c.get("type")) if c.get("type") else None,
                                                    ordinal_position=i + 1)
            for i, c in enumerate(cols) if isinstance(c, dict) and c.get("name") is not None]


def openlineage_events(graph: Graph) -> list[RunEvent]:
    """Every run of `graph` (and every registry entry) as OpenLineage RunEvents, in node id order."""
    return _Builder(graph).events()


# -- writing --------------------------------------------------------------------------------------
def event_json(event: RunEvent) -> str:
    """One event as one line of JSON, by the client's serde (nulls dropped, keys sorted)."""
    return Serde.to_json(event, allow_nan=False)


def write_ndjson(events: Iterable[RunEvent], out: IO[str]) -> int:
    """Write one event per line; returns how many."""
    n = 0
    for event in events:
        out.write(event_json(event) + "\n")
        n += 1
    return n


class ExportError(BraidError):
    """Posting events to an OpenLineage endpoint failed."""


def _transport(url: str, *, api_key: str | None, timeout: float) -> HttpTransport:
    from urllib.parse import urlsplit

    from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport, TokenProvider

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{url!r} is not an http(s) URL", hint="e.g. --url http://localhost:5000 (Marquez)")
    # a bare server URL posts to the spec's /api/v1/lineage; a URL with a path posts there
    base = f"{parts.scheme}://{parts.netloc}/"
    endpoint = parts.path.lstrip("/") or "api/v1/lineage"
    if parts.query:
        endpoint += f"?{parts.query}"
    auth = ApiKeyTokenProvider({"api_key": api_key}) if api_key else TokenProvider({})
    retry = {"total": 3, "read": 3, "connect": 3, "backoff_factor": 0.2, "status_forcelist": [500, 502, 503, 504],
             "allowed_methods": ["HEAD", "POST"]}
    return HttpTransport(HttpConfig(url=base, endpoint=endpoint, timeout=timeout, auth=auth, retry=retry))


def post_events(events: Sequence[RunEvent], url: str, *, api_key: str | None = None, timeout: float = 10.0,
                progress: Any = None) -> int:
    """POST each event to an OpenLineage endpoint with the client's HTTP transport.

    The API key (a bearer token) comes from `api_key` or the client's own `OPENLINEAGE_API_KEY`.
    Returns how many were accepted; the first refusal raises ExportError naming the event.
    """
    import requests

    transport = _transport(url, api_key=api_key or os.environ.get("OPENLINEAGE_API_KEY"), timeout=timeout)
    try:
        for i, event in enumerate(events):
            try:
                transport.emit(event)
            except requests.RequestException as exc:
                raise ExportError(f"posting event {i + 1} of {len(events)} to {url} failed: {_short(exc)}",
                                  hint="is the OpenLineage endpoint up? (a token goes in OPENLINEAGE_API_KEY)") from None
            if progress is not None:
                progress("posting events", i + 1, len(events))
    finally:
        transport.close()
    return len(events)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:197] + "..."


__all__ = ["BraidDatasetFacet", "BraidRunFacet", "facet_schemas", "openlineage_events", "post_events",
           "write_ndjson", "event_json", "dataset_name", "run_id"]
