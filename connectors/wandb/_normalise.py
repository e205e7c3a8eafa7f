"""Folded W&B runs as braid's graph.

Ids (entity is the run record's, else the source's `entity` option, else `offline`: an offline
run learns its entity only when `wandb sync` uploads it):

    <src>:run/<entity>/<project>/<run id>                  a run; a resumed run's segments are one run
    <src>:<kind>/<entity>/<project>/<name>:<digest>        an artifact version logged by a run
    <src>:<kind>/<entity>/<project>/<name>:<digest>/<path> one file of it (part_of the artifact)
    <src>:model_version/<org entity>/<registry project>/<collection>:v<N>
                                                           a model's link into a W&B registry
    git:<sha>                                              the commit the run's code was at

`<kind>` follows the artifact type: `dataset` and `model` keep their names, any other type is an
`artifact`. The artifact's digest (W&B's manifest digest, hex) names the version: offline runs
know no version number (`v3` is given by the server when the run is synced), and the digest is
what both a run folder and the server know. W&B gives one version to one content, so
`name:digest` names exactly one version. A run read through the public API (`_api`) is folded
into the same `RunFold` as a run folder, so both give the same ids and rows; the API knows more,
and adds it: the version (`v3`) in `version`, the server's aliases, used artifacts as `input`
edges, and registry links. A link of a `model` artifact is a `model_version` node, a `registry`
row (name = the collection, version `vN` in the collection, its aliases, `run_id` = the run that
logged the model) and a `registered_as` edge from the model; links of other artifact types
(a dataset in a registry) stay in the artifact's attrs, as braid's model registry holds models.

Digests: a file's base64 md5 becomes `md5:<hex>` (the join key with DVC and MLflow, with the
size); `alg=XXH128` entries become `xxh128:<hex>`; S3/GCS/Azure/HTTP references keep their
ETag as `etag:<etag>`; a `file://` reference added with `checksum=False` hashes its URI, not
its bytes, and becomes `wandb-path:<hex>`; a reference whose digest is its own URI has none.
The artifact node's digest is `wandb-artifact:<hex>`: a hash of the manifest, never equal to an
md5 of bytes.

Tables: `runs` (project, display name, status, start, end = start + runtime or the last logged
time, user, git commit and remote, host, and the environment record as JSON with group, job
type and notes); `params` = the folded config flattened with dots, strings as they are and
other values as JSON; `tags` = one row per W&B tag, `(node, tag, "")` (W&B tags are labels
without values), on runs and artifacts. Group, job type, notes, the final summary and each
segment of a resumed run are in the run node's attrs.

Metrics: every numeric history value (NaN and ±Infinity kept) at its step and `_timestamp`;
strings, booleans, lists and media are not metrics (the last ones stay in the summary, in the
run's attrs). A numeric summary key that no history row logged (`run.summary["best"] = 0.9`)
is one more point, at the run's last step and end time.

Those points move when a live run grows (its last step and end move), while a continued read
of a grown log (see the package docstring) only adds rows: so a run that has a summary-only
point, before or after it grew, is read whole again instead, and its points are rebuilt.
Summary-only keys are mostly set when a run ends, so a live run is continued while it logs
and read whole once when it finishes, if it sets them then.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from braid.unify.ids import code_id, is_commit, node_id
from braid.unify.schema import UTC_TIME

from ._fold import SYSTEM_KEYS, RunFold, flatten, status, utc

TOOL = "wandb"
# artifact type -> node kind; every other type is an `artifact`
ARTIFACT_KINDS = {"dataset": "dataset", "model": "model"}
# references whose digest is the md5 of the bytes, like a file's own entry
MD5_REFERENCE_SCHEMES = frozenset({"file", "wandb-artifact", "wandb-client-artifact"})


def run_node(source: str, entity: str, project: str, run_id: str) -> str:
    """A W&B run's node id.

    >>> run_node("wandb", "offline", "churn", "abc123")
    'wandb:run/offline/churn/abc123'
    """
    return node_id(source, "run", f"{entity}/{project}/{run_id}")


def artifact_kind(artifact_type: str) -> str:
    """The node kind of an artifact type.

    >>> [artifact_kind(t) for t in ("dataset", "model", "analysis")]
    ['dataset', 'model', 'artifact']
    """
    return ARTIFACT_KINDS.get(artifact_type, "artifact")


def b64_hex(digest: str) -> str | None:
    """A base64 digest as hex; None when it is not base64 of 16 bytes.

    >>> b64_hex("w8a8Kujs5L0lENyiEiXAQQ==")
    'c3c6bc2ae8ece4bd2510dca21225c041'
    """
    try:
        raw = base64.b64decode(digest, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 16 else None


def entry_digest(entry: Mapping[str, Any]) -> str | None:
    """A manifest entry's digest, normalised (see the module docstring).

    >>> entry_digest({"digest": "w8a8Kujs5L0lENyiEiXAQQ==", "ref": None, "extra": None})
    'md5:c3c6bc2ae8ece4bd2510dca21225c041'
    >>> entry_digest({"digest": "9b2cf535f27731c974343645a3985328", "ref": "s3://b/k.csv", "extra": None})
    'etag:9b2cf535f27731c974343645a3985328'
    """
    raw, ref = entry.get("digest") or "", entry.get("ref")
    if not raw or (ref and raw == ref):
        return None  # `checksum=False` on a remote reference: the "digest" is the URI itself
    alg = (entry.get("extra") or {}).get("alg")
    scheme = ref.split("://", 1)[0].lower() if ref and "://" in ref else None
    if alg == "XXH128":
        return f"xxh128:{b64_hex(raw) or raw}"
    if scheme is not None and scheme not in MD5_REFERENCE_SCHEMES:
        return f"etag:{raw}"
    hexed = b64_hex(raw)
    if hexed is None:
        return f"wandb:{raw}"
    if scheme == "file" and _is_path_hash(raw, ref or ""):
        return f"wandb-path:{hexed}"
    return f"md5:{hexed}"


def _is_path_hash(digest: str, ref: str) -> bool:
    """Whether a `file://` reference was added with `checksum=False`: its digest is then the
    md5 of the file's URI, not of its bytes."""
    return base64.b64encode(hashlib.md5(ref.encode()).digest()).decode() == digest


def _json(attrs: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in attrs.items() if v not in (None, {}, [], "")},
                      sort_keys=True, default=str)


def _param(value: Any) -> str:
    """Params as text: strings as they are, the rest as JSON (true, 0.1, [8, 4])."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def normalise(folds: Iterable[RunFold], source: str, *, writing: Callable[[RunFold], bool],
              history_of: frozenset[str] | None = None) -> dict[str, pl.DataFrame]:
    """The graph tables of some folded runs. Metrics are built for the runs in `history_of`
    (their node ids; None: every run), whose history was read in this sync."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: dict[tuple[str, str, str], dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []
    params: list[tuple[str, str, str]] = []
    tags: list[tuple[str, str, str]] = []
    registry: dict[str, dict[str, Any]] = {}
    inputs: list[tuple[dict[str, Any], RunFold, str, Any]] = []
    metric_frames: list[pl.DataFrame] = []

    def node(row: dict[str, Any]) -> None:
        known = nodes.get(row["id"])
        if known is None or (row.get("created_at") and known.get("created_at") and row["created_at"] < known["created_at"]):
            nodes[row["id"]] = {"tool": TOOL, "source": source, **row}

    def edge(src: str, dst: str, kind: str, when: Any, **attrs: Any) -> None:
        known = edges.get((src, dst, kind))
        if known is None or (when is not None and (known["created_at"] is None or when < known["created_at"])):
            edges[(src, dst, kind)] = {"src": src, "dst": dst, "kind": kind, "source": source, "created_at": when,
                                       "attrs": _json(attrs) if attrs else None}

    for fold in folds:
        rid = run_node(source, fold.entity, fold.project, fold.run_id)
        r = fold.run
        started, ended = utc(fold.started_at), utc(fold.ended_at)
        state = status(fold, writing=writing(fold))
        env = fold.environment
        user = env.get("username") or env.get("email")
        summary = {k: v for k, v in flatten(fold.summary).items() if not k.startswith("_")}
        commit = (r.get("git_commit") or "").strip().lower() or None
        attrs = {
            "entity": fold.entity, "project": fold.project, "run_id": fold.run_id, "group": r.get("group"),
            "job_type": r.get("job_type"), "notes": r.get("notes"), "tags": r.get("tags"),
            "sweep_id": r.get("sweep_id"), "storage_id": r.get("storage_id"), "resumed": len(fold.segments) > 1 or None,
            "forked": r.get("forked"), "branch_point": r.get("branch_point"), "preempted": r.get("preempted"),
            "synced": r.get("synced"), "url": r.get("url"), "wandb_user": r.get("wandb_user"),
            "exit_code": fold.exit_code if fold.has_exit else None, "runtime": fold.runtime,
            "last_step": fold.last_step, "summary": summary,
            "used_artifacts": fold.used_artifacts, "linked_artifacts": fold.linked_artifacts,
            "segments": [{"path": s.path, "started_at": str(utc(s.started_at)) if s.started_at else None,
                          "rows": s.rows, "step_offset": s.step_offset or None,
                          "exit_code": s.exit_code if s.has_exit else None} for s in fold.segments],
        }
        # a run folder where there is one (the bytes are here), else the run's page on the server
        folder = posixpath.dirname(fold.segments[0].path) if fold.segments else r.get("url")
        node({"id": rid, "kind": "run", "name": r.get("display_name") or fold.run_id, "uri": folder,
              "created_at": started, "updated_at": ended, "status": state, "user": user, "attrs": _json(attrs)})
        environment = {k: v for k, v in env.items() if k not in ("git",)}
        environment |= {"group": r.get("group"), "job_type": r.get("job_type"), "notes": r.get("notes")}
        runs.append({
            "id": rid, "tool": TOOL, "source": source, "project": fold.project,
            "name": r.get("display_name") or fold.run_id, "status": state, "started_at": started, "ended_at": ended,
            "duration": (fold.ended_at - fold.started_at) if fold.ended_at is not None and fold.started_at is not None
            else None,
            "user": user, "git_commit": commit if is_commit(commit) else None, "git_branch": None,
            "git_remote": r.get("git_remote"), "host": r.get("host") or env.get("host"),
            "environment": _json(environment),
        })
        if is_commit(commit):
            cid = code_id(commit)  # type: ignore[arg-type]
            node({"id": cid, "kind": "code", "tool": None, "name": commit[:12],  # type: ignore[index]
                  "uri": r.get("git_remote"), "created_at": None})
            edge(cid, rid, "code", started)
        params += [(rid, key, _param(value)) for key, value in flatten(fold.config).items()]
        tags += [(rid, tag, "") for tag in r.get("tags") or []]
        when = ended or started
        for art in fold.artifacts:
            aid = _artifact(art, fold, source, when, node, edge, tags)
            edge(rid, aid, "output", when)
            _links(art, aid, rid, source, node, edge, registry)
        inputs += [(art, fold, rid, started) for art in fold.inputs]
        if history_of is None or rid in history_of:
            metric_frames.append(_metrics(fold, rid, summary, ended))

    # after every run's outputs: an artifact a run of this batch logged is described by that run
    for art, fold, rid, started in inputs:
        aid = artifact_id(source, art, fold)
        if aid not in nodes:  # logged elsewhere (another project, or a run not read)
            _artifact(art, fold, source, _time(art.get("created_at")) or started, node, edge, tags)
        edge(aid, rid, "input", started)

    metrics = pl.concat(metric_frames) if metric_frames else None
    out: dict[str, pl.DataFrame] = {
        "nodes": pl.DataFrame(list(nodes.values()), infer_schema_length=None),
        "edges": pl.DataFrame(list(edges.values()), infer_schema_length=None),
        "runs": pl.DataFrame(runs, infer_schema_length=None),
        "params": pl.DataFrame(params, schema={"run_id": pl.String, "key": pl.String, "value": pl.String},
                               orient="row").with_columns(source=pl.lit(source)),
        "tags": pl.DataFrame(tags, schema={"node_id": pl.String, "key": pl.String, "value": pl.String},
                             orient="row").with_columns(source=pl.lit(source)),
    }
    if registry:
        out["registry"] = pl.DataFrame(list(registry.values()), infer_schema_length=None).with_columns(
            source=pl.lit(source))
    if metrics is not None:
        out["metrics"] = metrics.with_columns(source=pl.lit(source))
    return {name: frame for name, frame in out.items() if frame.width}


def artifact_id(source: str, art: dict[str, Any], fold: RunFold) -> str:
    """An artifact version's node id: its entity, project, name and manifest digest."""
    entity = art.get("entity") or fold.entity
    project = art.get("project") or fold.project
    return node_id(source, artifact_kind(art["type"]), f"{entity}/{project}/{art['name']}:{art['digest']}")


def _artifact(art: dict[str, Any], fold: RunFold, source: str, when: Any,
              node: Callable[[dict[str, Any]], None], edge: Callable[..., None],
              tags: list[tuple[str, str, str]]) -> str:
    kind = artifact_kind(art["type"])
    entity = art.get("entity") or fold.entity
    project = art.get("project") or fold.project
    version = f"{entity}/{project}/{art['name']}:{art['digest']}"
    aid = artifact_id(source, art, fold)
    entries = art["entries"]
    sizes = [e["size"] for e in entries]
    node({"id": aid, "kind": kind, "name": art["name"], "version": art.get("version"),
          "digest": f"wandb-artifact:{art['digest']}" if art["digest"] else None,
          "size": sum(sizes) if sizes and None not in sizes else None, "created_at": when,
          "attrs": _json({"type": art["type"], "entity": entity, "project": project, "aliases": art["aliases"],
                          "tags": art["tags"], "description": art["description"], "metadata": art["metadata"],
                          "digest_algorithm": art["digest_algorithm"], "storage_policy": art["storage_policy"],
                          "files": len(entries), "incremental": art["incremental"],
                          "distributed_id": art["distributed_id"], "logged_at": art.get("created_at"),
                          "links": art.get("links")})})
    tags += [(aid, tag, "") for tag in art["tags"]]
    for entry in entries:
        fid = node_id(source, kind, f"{version}/{entry['path']}")
        node({"id": fid, "kind": kind, "name": posixpath.basename(entry["path"]), "version": None,
              "digest": entry_digest(entry), "size": entry["size"], "uri": entry["ref"], "created_at": when,
              "attrs": _json({"path": entry["path"], "artifact": art["name"], "wandb_digest": entry["digest"],
                              "ref": entry["ref"], "extra": entry["extra"],
                              "birth_artifact_id": entry["birth_artifact_id"],
                              # the SDK's staged copy of the file, until `wandb sync` uploads it
                              "staged": entry.get("local_path")})})
        edge(fid, aid, "part_of", when)
    return aid


def _links(art: dict[str, Any], aid: str, rid: str, source: str, node: Callable[[dict[str, Any]], None],
           edge: Callable[..., None], registry: dict[str, dict[str, Any]]) -> None:
    """A model's registry links: model_version nodes, registry rows, `registered_as` edges."""
    if artifact_kind(art["type"]) != "model":
        return
    for link in art.get("links") or []:
        mvid = node_id(source, "model_version",
                       f"{link['entity']}/{link['project']}/{link['collection']}:{link['version']}")
        at = _time(link.get("created_at"))
        registry_name = link["project"].removeprefix("wandb-registry-")
        node({"id": mvid, "kind": "model_version", "name": link["collection"], "version": link["version"],
              "created_at": at, "attrs": _json({"registry": registry_name, "entity": link["entity"],
                                                "project": link["project"], "aliases": link["aliases"]})})
        edge(aid, mvid, "registered_as", at)
        registry[mvid] = {"model_version_id": mvid, "name": link["collection"], "version": link["version"],
                          "aliases": list(link["aliases"]), "stage": None, "model_id": aid, "run_id": rid,
                          "events": json.dumps([{"event": "linked", "at": link.get("created_at"),
                                                 "registry": registry_name}])}


def _time(text: str | None) -> datetime | None:
    """A W&B server time (`2024-01-17T20:01:30`, UTC without a zone) as a UTC timestamp."""
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


METRIC_SCHEMA = {"run_id": pl.String, "key": pl.String, "step": pl.Int64, "timestamp": UTC_TIME,
                 "value": pl.Float64}


def _metrics(fold: RunFold, rid: str, summary: dict[str, Any], ended: Any) -> pl.DataFrame:
    frames = [history_frame(h.steps, h.counts, h.keys, h.values, step_offset=offset)
              for h, offset in fold.histories if h.steps]
    history = pl.concat(frames) if frames else pl.DataFrame(schema={k: v for k, v in METRIC_SCHEMA.items()
                                                                   if k != "run_id"})
    logged = set(history["key"].unique().to_list()) if history.height else set()
    logged |= set(fold.logged or ())  # a continued read: the keys the rows read before logged
    extra = [(key, float(v)) for key, value in summary.items()
             if key not in logged and (v := _number(value)) is not None]
    fold.logged, fold.summary_points = sorted(logged), len(extra)
    if extra:
        step = fold.last_step if fold.last_step is not None else 0
        history = pl.concat([history, pl.DataFrame(
            {"key": [k for k, _ in extra], "step": [step] * len(extra), "timestamp": [ended] * len(extra),
             "value": [v for _, v in extra]},
            schema={k: v for k, v in METRIC_SCHEMA.items() if k != "run_id"})])
    return history.select(run_id=pl.lit(rid), *[c for c in METRIC_SCHEMA if c != "run_id"])


def history_frame(steps: list[int], counts: list[int], keys: list[str], values: list[str], *,
                  step_offset: int = 0) -> pl.DataFrame:
    """History columns as metric points: (key, step, timestamp, value), numbers only.

    >>> history_frame([0, 1], [3, 3], ["_timestamp", "loss", "eval.acc"] * 2,
    ...               ["1700000000.5", "NaN", "0.5", "1700000001.5", "Infinity", '"text"'])
    shape: (3, 4)
    ┌──────────┬──────┬─────────────────────────────┬───────┐
    │ key      ┆ step ┆ timestamp                   ┆ value │
    │ ---      ┆ ---  ┆ ---                         ┆ ---   │
    │ str      ┆ i64  ┆ datetime[μs, UTC]           ┆ f64   │
    ╞══════════╪══════╪═════════════════════════════╪═══════╡
    │ loss     ┆ 0    ┆ 2023-11-14 22:13:20.500 UTC ┆ NaN   │
    │ eval.acc ┆ 0    ┆ 2023-11-14 22:13:20.500 UTC ┆ 0.5   │
    │ loss     ┆ 1    ┆ 2023-11-14 22:13:21.500 UTC ┆ inf   │
    └──────────┴──────┴─────────────────────────────┴───────┘
    """
    n = len(steps)
    items = pl.DataFrame({
        "row": np.repeat(np.arange(n, dtype=np.int64), np.asarray(counts, dtype=np.int64)),
        "key": pl.Series(keys, dtype=pl.String), "raw": pl.Series(values, dtype=pl.String),
    })
    # Python SDKs logged a nested dict under one key (`eval` = {"acc": ...}); wandb-core sends a
    # nested_key path per leaf. Flatten the former the same way (few rows, so per row is fine).
    nested = items.filter(pl.col("raw").str.starts_with("{"))
    if nested.height:
        flat = [(row, f"{key}.{k}", json.dumps(v) if not isinstance(v, str) else json.dumps(v))
                for row, key, raw in nested.iter_rows()
                for k, v in flatten(_loads_dict(raw)).items()]
        items = pl.concat([
            items.filter(~pl.col("raw").str.starts_with("{")),
            pl.DataFrame(flat, schema=items.schema, orient="row"),
        ])
    values_f = pl.col("raw").cast(pl.Float64, strict=False)
    times = items.filter(pl.col("key") == "_timestamp").select(
        "row", timestamp=(values_f * 1e6).round().cast(pl.Int64, strict=False).cast(UTC_TIME))
    row_steps = pl.DataFrame({"row": np.arange(n, dtype=np.int64),
                              "step": np.asarray(steps, dtype=np.int64) + step_offset})
    return (
        items.filter(~pl.col("key").is_in(list(SYSTEM_KEYS)))
        .with_columns(value=values_f)
        .filter(pl.col("value").is_not_null())
        .join(row_steps, on="row", how="left", maintain_order="left")
        .join(times.unique("row", keep="last"), on="row", how="left", maintain_order="left")
        .select("key", "step", "timestamp", "value")
    )


def _loads_dict(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) and "_type" not in value else {}
