"""Fold a run's transaction-log records into what the run is: one `Segment` per `.wandb` file,
then one `RunFold` per run (a resumed run's segments, in the order they ran).

Records are folded in file order, as W&B's server applies them:

- `run`: identity (entity, project, id), display name, group, job type, notes, tags, host,
  start time, git; its config is the first config update.
- `config` and `summary`: ordered updates (`key`, or a `nested_key` path) and removes; only
  the last operation on each path matters, so a segment keeps those, in order, and a resumed
  run applies its segments' operations one after the other. `_wandb` is dropped.
- `history`: one metric row per record, kept as columns (row step, item key, item JSON):
  decoding values is left to polars (`_normalise.history_frame`), which reads NaN and
  ±Infinity as W&B writes them.
- `environment` (and, for SDKs that wrote none, `files/wandb-metadata.json`), `artifact`
  (offline runs: type, name, digest, aliases, metadata, manifest entries), `use_artifact` and
  `noop_link_artifact` (online runs), `exit` (code and runtime).

Steps of resumed runs. An offline resumed segment restarts `_step` at 0; W&B's server continues
a resumed run's step instead. braid does the same: a segment whose first step is not above the
steps already seen is shifted to start right after them (`step_offset`, kept per segment in
the run's attrs); a segment that continues on its own (an online resume) is kept as logged.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict


from . import _bulk
from ._txlog import LogRead, _record_class, continue_log, parse_record, read_log

# config/summary operations: path -> value JSON, or None for a remove; last operation per path
Ops = dict[tuple[str, ...], str | None]
SYSTEM_KEYS = frozenset({"_step", "_timestamp", "_runtime"})
CRASHED_EXIT_CODE = 254
# a W&B server's run states -> braid's (`preempting`/`preempted` runs stopped without finishing)
SERVER_STATES = {"finished": "finished", "failed": "failed", "crashed": "crashed", "running": "running",
                 "killed": "failed", "preempting": "crashed", "preempted": "crashed"}
# offline runs know no entity (the server names it when the run is synced)
OFFLINE_ENTITY = "offline"
DEFAULT_PROJECT = "uncategorized"  # W&B's own name for runs logged without a project
# wandb-metadata.json keys (SDKs before wandb-core's environment record) -> environment record names
LEGACY_METADATA_KEYS = {"codePath": "code_path", "codePathLocal": "code_path_local", "startedAt": "started_at"}
LEGACY_METADATA_DROPPED = frozenset({"heartbeatAt", "state", "git"})


@dataclass
class History:
    """A segment's history as columns: one step per row, one (row, key, value JSON) per item."""

    steps: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # items per row
    keys: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    # rows of the same file read by an earlier sync (a continued read holds only the new ones)
    base_rows: int = 0
    base_first: int | None = None
    base_last: int | None = None

    @property
    def rows(self) -> int:
        return self.base_rows + len(self.steps)

    @property
    def first(self) -> int | None:
        steps = [s for s in (self.base_first, min(self.steps) if self.steps else None) if s is not None]
        return min(steps) if steps else None

    @property
    def last(self) -> int | None:
        steps = [s for s in (self.base_last, max(self.steps) if self.steps else None) if s is not None]
        return max(steps) if steps else None


@dataclass
class Segment:
    """One `.wandb` file read: a whole run, or one part of a resumed run."""

    path: str
    run_id: str
    size: int = 0
    mtime_ns: int = 0
    entity: str = ""
    project: str = ""
    has_run_record: bool = False
    run: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None  # epoch seconds
    config_ops: Ops = field(default_factory=dict)
    summary_ops: Ops = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    used_artifacts: list[dict[str, Any]] = field(default_factory=list)
    linked_artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    has_exit: bool = False
    runtime: float | None = None
    latest: dict[str, str] = field(default_factory=dict)  # last `_runtime` and `_timestamp` in the summary
    history: History = field(default_factory=History)
    issues: list[str] = field(default_factory=list)
    resume_offset: int = 0
    # how the read ended, for a later read of what the file gains (`continue_segment`)
    block_origin: int = 0
    anchor: int = 0
    window: int = 0
    clean: bool = False  # no damage: only a file read without damage is continued
    log_issues: int = 0  # how many of `issues` the framing reported (the rest: records that do not parse)
    legacy_environment: bool = False  # `environment` is wandb-metadata.json's
    bytes_read: int = 0


def _path(item: Any) -> tuple[str, ...]:
    nested = item.nested_key
    return tuple(nested) if nested else (item.key,)


def _seconds(ts: Any) -> float | None:
    return ts.seconds + ts.nanos / 1e9 if ts.seconds or ts.nanos else None


def read_segment(path: str | os.PathLike[str], *, size: int = 0, mtime_ns: int = 0) -> Segment:
    """Fold one transaction log. Raises TransactionLogError when the file is not a readable
    W&B log (its header); damage inside it becomes `issues`, and every whole record counts."""
    log = read_log(path)
    name = os.fspath(path)
    run_id = Path(name).name.removeprefix("run-").removesuffix(".wandb")
    return _finish(Segment(name, run_id, size=size, mtime_ns=mtime_ns), log)


def _finish(seg: Segment, log: LogRead) -> Segment:
    seg.resume_offset, seg.block_origin, seg.anchor, seg.window = (log.resume_offset, log.block_origin,
                                                                   log.anchor, log.window)
    seg.clean = not any(issue.kind == "corrupt" for issue in log.issues) and bool(log.anchor or log.window)
    seg.bytes_read = log.bytes_read
    report = log.report()
    seg.issues[:0] = report
    seg.log_issues = len(report)
    _fold_records(seg, log)
    seg.legacy_environment = not seg.environment
    if not seg.environment:
        seg.environment = _legacy_metadata(Path(seg.path).parent / "files" / "wandb-metadata.json")
    return seg


def segment_state(seg: Segment) -> dict[str, Any]:
    """What a segment is, but its history rows, as JSON: kept so that a file that grows is
    read on from where it ended (`continue_segment`) and folded onto this."""
    return {
        "run_id": seg.run_id, "entity": seg.entity, "project": seg.project, "has_run_record": seg.has_run_record,
        "run": seg.run, "started_at": seg.started_at,
        "config_ops": [[list(p), raw] for p, raw in seg.config_ops.items()],
        "summary_ops": [[list(p), raw] for p, raw in seg.summary_ops.items()],
        "environment": {} if seg.legacy_environment else seg.environment,
        "artifacts": seg.artifacts, "used_artifacts": seg.used_artifacts, "linked_artifacts": seg.linked_artifacts,
        "exit_code": seg.exit_code, "has_exit": seg.has_exit, "runtime": seg.runtime, "latest": seg.latest,
        "log_issues": seg.issues[:seg.log_issues], "record_issues": seg.issues[seg.log_issues:],
        "block_origin": seg.block_origin, "anchor": seg.anchor, "window": seg.window, "clean": seg.clean,
    }


def segment_from_state(info: SegmentInfo) -> Segment:
    """A segment as an earlier sync left it (its history rows not included: `History.base_*`)."""
    st = info.state
    assert st is not None
    seg = Segment(
        info.path, st["run_id"], size=info.size, mtime_ns=info.mtime_ns, entity=st["entity"],
        project=st["project"], has_run_record=st["has_run_record"], run=dict(st["run"]),
        started_at=st["started_at"], config_ops={tuple(p): raw for p, raw in st["config_ops"]},
        summary_ops={tuple(p): raw for p, raw in st["summary_ops"]}, environment=dict(st["environment"]),
        artifacts=list(st["artifacts"]), used_artifacts=list(st["used_artifacts"]),
        linked_artifacts=list(st["linked_artifacts"]), exit_code=st["exit_code"], has_exit=st["has_exit"],
        runtime=st["runtime"], latest=dict(st["latest"]),
        history=History(base_rows=info.rows, base_first=info.first_step, base_last=info.last_step),
        issues=st["log_issues"] + st["record_issues"], resume_offset=info.resume_offset,
        block_origin=st["block_origin"], anchor=st["anchor"], window=st["window"], clean=st["clean"],
        log_issues=len(st["log_issues"]), legacy_environment=not st["environment"])
    if seg.legacy_environment:
        seg.environment = _legacy_metadata(Path(seg.path).parent / "files" / "wandb-metadata.json")
    return seg


def continue_segment(info: SegmentInfo, *, size: int, mtime_ns: int) -> Segment | None:
    """A segment read on from where an earlier sync ended (`info`), reading only the bytes the
    file gained: the same segment a whole read gives, but its history holds only the new rows.
    None when that cannot be done (no kept state, damage, a file that did not only grow)."""
    st = info.state
    if st is None or not st["clean"]:
        return None
    log = continue_log(info.path, start=info.resume_offset, origin=st["block_origin"], anchor=st["anchor"],
                       window=st["window"])
    if log is None:
        return None
    seg = segment_from_state(info)
    seg.size, seg.mtime_ns = size, mtime_ns
    seg.issues = list(st["record_issues"])  # the framing's old notes (a truncated tail) are news again
    seg.environment = dict(st["environment"])
    return _finish(seg, log)


# Record fields are serialised in field-number order: an optional `num` (field 1, varint),
# then the oneof. The first byte of the oneof's tag says the record's type without parsing it.
HISTORY_TAG, SUMMARY_TAG = 0x12, 0x1A
# types braid does not read: output (4), files (6), stats (7), tbrecord (9), alert (10),
# telemetry (11), metric (12), output_raw (13)
SKIPPED_TAGS = frozenset({0x22, 0x32, 0x3A, 0x4A, 0x52, 0x5A, 0x62, 0x6A})


def _tag(payload: bytes) -> int:
    """The first byte of a record's oneof tag, read past `num` and the fields wandb-core's Go
    writer puts before the oneof (`control`, `uuid`, `_info`); else by parsing the record (-1:
    it does not parse, or has no type)."""
    i, n = 0, len(payload)
    while i < n:
        start, key, shift = i, 0, 0
        while i < n and payload[i] & 0x80:
            key |= (payload[i] & 0x7F) << shift
            i, shift = i + 1, shift + 7
        if i >= n:
            break
        key |= payload[i] << shift
        i += 1
        if key == 0x08:  # num
            while i < n and payload[i] & 0x80:
                i += 1
            i += 1
        elif key in _LEADING_FIELDS:
            length, shift = 0, 0
            while i < n and payload[i] & 0x80:
                length |= (payload[i] & 0x7F) << shift
                i, shift = i + 1, shift + 7
            if i >= n:
                break
            length |= payload[i] << shift
            i += 1 + length
        else:
            return payload[start]
    try:
        kind, _ = parse_record(payload)
    except ValueError:
        return -1
    return {"history": HISTORY_TAG, "summary": SUMMARY_TAG}.get(kind or "", -1)


# length-delimited Record fields outside the oneof: control (16), uuid (19), _info (200)
_LEADING_FIELDS = frozenset({16 << 3 | 2, 19 << 3 | 2, 200 << 3 | 2})


def _fold_records(seg: Segment, log: LogRead) -> None:
    """Fold a read's records into `seg` (which may hold an earlier read of the same file).

    History and summary records, nearly all of a log, are decoded in bulk (`_bulk`); records
    of types braid does not read are not parsed; the rest are parsed one by one."""
    hist_payloads: list[bytes] = []
    summary_payloads: list[bytes] = []
    others: list[tuple[int, bytes]] = []
    add_hist, add_summary, add_other = hist_payloads.append, summary_payloads.append, others.append
    skipped = SKIPPED_TAGS
    for offset, payload in zip(log.offsets, log.payloads, strict=True):
        # `_tag`, inlined: this loop runs once per record
        if len(payload) > 5 and payload[0] == 8:
            tag = payload[2] if payload[1] < 128 else payload[3] if payload[2] < 128 else \
                payload[4] if payload[3] < 128 else payload[5] if payload[4] < 128 else -1
            if tag < 0 or tag & 0x80:  # a longer num, or a field before the oneof
                tag = _tag(payload)
        else:
            tag = _tag(payload)
        if tag == HISTORY_TAG:
            add_hist(payload)
        elif tag == SUMMARY_TAG:
            add_summary(payload)
        elif tag not in skipped:
            add_other((offset, payload))
    notes: list[tuple[int, str]] = []
    _fold_one_by_one(seg, others, notes)
    keys = _bulk._Keys()
    hist = seg.history
    got = _bulk.history(hist_payloads, keys) if hist_payloads else None
    if got is not None:
        steps, counts, names, values = got
        hist.steps += steps
        hist.counts += counts
        hist.keys += names
        hist.values += values
    elif hist_payloads:
        _fold_one_by_one(seg, [(o, p) for o, p in zip(log.offsets, log.payloads, strict=True)
                               if _tag(p) == HISTORY_TAG], notes)
    updates = _bulk.summary(summary_payloads, keys) if summary_payloads else None
    if updates is not None:
        _apply_updates(seg, *updates)
    elif summary_payloads:
        _fold_one_by_one(seg, [(o, p) for o, p in zip(log.offsets, log.payloads, strict=True)
                               if _tag(p) == SUMMARY_TAG], notes)
    seg.issues += [note for _, note in sorted(notes)]


def _apply_updates(seg: Segment, paths: list[tuple[str, ...]], values: list[str]) -> None:
    """Summary updates in order, as `_fold_one_by_one` applies them one at a time: the last
    value of each path, in the order of their last update."""
    last = dict(zip(paths, values, strict=True))
    summary, latest = seg.summary_ops, seg.latest
    for p in reversed(list(dict.fromkeys(reversed(paths)))):
        if p[0][:1] != "_":
            summary.pop(p, None)
            summary[p] = last[p]
    # `_runtime`/`_timestamp`: their last value other than 0 (see `_fold_one_by_one`)
    wanted = {p[0] for p in last} & {"_runtime", "_timestamp"}
    for p, raw in zip(reversed(paths), reversed(values), strict=True):
        if not wanted:
            break
        if p[0] in wanted and raw != "0":
            latest[p[0]] = raw
            wanted.discard(p[0])


def _fold_one_by_one(seg: Segment, records: list[tuple[int, bytes]], notes: list[tuple[int, str]]) -> None:
    from google.protobuf.message import DecodeError

    record = _record_class()()
    parse, which = record.ParseFromString, record.WhichOneof
    hist = seg.history
    add_step, add_count, add_key, add_value = (hist.steps.append, hist.counts.append, hist.keys.append,
                                               hist.values.append)
    summary, config, latest = seg.summary_ops, seg.config_ops, seg.latest
    for offset, payload in records:
        try:
            parse(payload)
        except DecodeError as exc:
            notes.append((offset, f"{Path(seg.path).name}: record at offset {offset} does not parse ({exc}); skipped"))
            continue
        kind = which("record_type")
        if kind == "history":
            h = record.history
            items = h.item
            add_step(h.step.num)
            add_count(len(items))
            for item in items:
                nested = item.nested_key
                add_key(nested[0] if len(nested) == 1 else ".".join(nested) if nested else item.key)
                add_value(item.value_json)
        elif kind == "summary":
            s = record.summary
            for update in s.update:
                nested = update.nested_key
                p = (nested[0],) if len(nested) == 1 else tuple(nested) if nested else (update.key,)
                if p[0][:1] == "_":
                    # `_wandb`, `_step`, and `_runtime`/`_timestamp`, which only grow but which
                    # wandb-core also resets to 0 now and then: their last other value is the latest
                    if p[0] == "_runtime" or p[0] == "_timestamp":
                        raw = update.value_json
                        if raw != "0":
                            latest[p[0]] = raw
                    continue
                summary.pop(p, None)
                summary[p] = update.value_json
            for remove in s.remove:
                p = _path(remove)
                summary.pop(p, None)
                summary[p] = None
        elif kind == "config":
            _config(config, record.config)
        elif kind == "run":
            _run(seg, record.run)
        elif kind == "environment":
            env = MessageToDict(record.environment, preserving_proto_field_name=True)
            env.pop("writer_id", None)
            seg.environment.update(env)
        elif kind == "artifact":
            seg.artifacts.append(_artifact(record.artifact))
        elif kind == "use_artifact":
            seg.used_artifacts.append(MessageToDict(record.use_artifact, preserving_proto_field_name=True))
        elif kind == "noop_link_artifact":
            seg.linked_artifacts.append(MessageToDict(record.noop_link_artifact, preserving_proto_field_name=True))
        elif kind == "preempting":
            seg.run["preempted"] = True
        elif kind == "exit":
            seg.has_exit = True
            seg.exit_code = record.exit.exit_code
            seg.runtime = float(record.exit.runtime) or None


def _config(ops: Ops, config: Any) -> None:
    for update in config.update:
        p = _path(update)
        if p[0] != "_wandb":
            ops.pop(p, None)
            ops[p] = update.value_json
    for remove in config.remove:
        p = _path(remove)
        ops.pop(p, None)
        ops[p] = None


def _run(seg: Segment, run: Any) -> None:
    seg.has_run_record = True
    seg.run_id = run.run_id or seg.run_id
    seg.entity, seg.project = run.entity, run.project
    seg.started_at = _seconds(run.start_time)
    _config(seg.config_ops, run.config)
    seg.run |= {
        "display_name": run.display_name or None, "group": run.run_group or None, "job_type": run.job_type or None,
        "notes": run.notes or None, "tags": list(run.tags), "host": run.host or None,
        "git_remote": run.git.remote_url or None, "git_commit": run.git.commit or None,
        "resumed": run.resumed or None, "resume": run.resume or None,
        "sweep_id": run.sweep_id or None, "storage_id": run.storage_id or None, "forked": run.forked or None,
        "starting_step": run.starting_step or None,
    }
    if run.HasField("branch_point"):
        bp = run.branch_point
        seg.run["branch_point"] = {"run": bp.run, "value": bp.value, "metric": bp.metric}


def _artifact(art: Any) -> dict[str, Any]:
    try:
        metadata: Any = json.loads(art.metadata) if art.metadata else None
    except json.JSONDecodeError:
        metadata = art.metadata
    entries = []
    for entry in art.manifest.contents:
        extra = {}
        for kv in entry.extra:
            try:
                extra[kv.key] = json.loads(kv.value_json)
            except json.JSONDecodeError:
                extra[kv.key] = kv.value_json
        entries.append({"path": entry.path, "digest": entry.digest, "size": entry.size if entry.size else None,
                        "ref": entry.ref or None, "birth_artifact_id": entry.birth_artifact_id or None,
                        "extra": extra or None, "local_path": entry.local_path or None})
    return {
        "type": art.type, "name": art.name, "digest": art.digest, "entity": art.entity or None,
        "project": art.project or None, "aliases": list(art.aliases), "tags": list(art.tags),
        "description": art.description or None, "metadata": metadata,
        "digest_algorithm": _enum_name(art, "digest_algorithm"),
        "storage_policy": art.manifest.storage_policy or None, "incremental": art.incremental_beta1 or None,
        "distributed_id": art.distributed_id or None, "entries": entries,
    }


def _enum_name(message: Any, name: str) -> str | None:
    if not hasattr(message, name):
        return None
    value = getattr(message, name)
    field_desc = message.DESCRIPTOR.fields_by_name[name]
    if field_desc.enum_type is None:
        return str(value) or None
    return field_desc.enum_type.values_by_number[value].name if value in field_desc.enum_type.values_by_number else None


def _legacy_metadata(path: Path) -> dict[str, Any]:
    """The environment Python SDKs wrote beside the log, before wandb-core's environment record."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return legacy_environment(meta) if isinstance(meta, dict) else {}


def legacy_environment(meta: dict[str, Any]) -> dict[str, Any]:
    """A `wandb-metadata.json` in the older SDKs' form as an environment record's fields."""
    return {LEGACY_METADATA_KEYS.get(k, k): v for k, v in meta.items()
            if k not in LEGACY_METADATA_DROPPED and v not in (None, [], {})}


# -- a run: its segments folded in order ------------------------------------------------------------

@dataclass
class SegmentInfo:
    """What the run remembers of each of its files."""

    path: str
    size: int
    mtime_ns: int
    started_at: float | None
    rows: int
    first_step: int | None
    last_step: int | None
    step_offset: int
    has_exit: bool
    exit_code: int | None
    runtime: float | None
    resume_offset: int
    state: dict[str, Any] | None = None  # `segment_state`


@dataclass
class RunFold:
    """A run as its records leave it: everything but the history is JSON-able (kept between
    syncs so an unchanged run is never read again)."""

    entity: str
    project: str
    run_id: str
    run: dict[str, Any]
    started_at: float | None
    ended_at: float | None
    runtime: float | None
    config: dict[str, Any]
    summary: dict[str, Any]
    environment: dict[str, Any]
    artifacts: list[dict[str, Any]]
    used_artifacts: list[dict[str, Any]]
    linked_artifacts: list[dict[str, Any]]
    has_exit: bool
    exit_code: int | None
    last_step: int | None
    segments: list[SegmentInfo]
    issues: list[str]
    # not kept between syncs: one (history, step offset) per segment
    histories: list[tuple[History, int]] = field(default_factory=list, repr=False)
    # artifacts the run used, in the form of `artifacts`: only the public API knows them
    # (offline runs cannot record inputs; online runs send them to the server, not the folder)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    # set when its metrics are built (`_normalise`): the keys with history points, and how many
    # summary-only points it has; what a continued read of a grown file needs to know
    logged: list[str] | None = None
    summary_points: int | None = None

    @property
    def files(self) -> list[tuple[str, int, int]]:
        return [(s.path, s.size, s.mtime_ns) for s in self.segments]

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "histories"}
        data["segments"] = [asdict(s) for s in self.segments]
        return json.dumps(data, sort_keys=True, allow_nan=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> RunFold:
        data = json.loads(text)
        data["segments"] = [SegmentInfo(**s) for s in data["segments"]]
        return cls(**data)


def run_key(seg: Segment, default_entity: str | None) -> tuple[str, str, str]:
    """(entity, project, run id): the run a segment belongs to."""
    return (seg.entity or default_entity or OFFLINE_ENTITY, seg.project or DEFAULT_PROJECT, seg.run_id)


def fold_run(key: tuple[str, str, str], segments: list[Segment]) -> RunFold:
    """One run from its segments, ordered by start time."""
    entity, project, run_id = key
    run: dict[str, Any] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    environment: dict[str, Any] = {}
    artifacts: dict[tuple[str, str, str], dict[str, Any]] = {}
    used: list[dict[str, Any]] = []
    linked: list[dict[str, Any]] = []
    infos: list[SegmentInfo] = []
    histories: list[tuple[History, int]] = []
    issues: list[str] = []
    last_step: int | None = None
    runtime_total = 0.0
    ended: float | None = None
    for seg in segments:
        for k, v in seg.run.items():
            if v not in (None, [], ""):
                run[k] = v  # a resumed segment that sets a name or tags replaces them
        _apply(config, seg.config_ops)
        _apply(summary, seg.summary_ops)
        environment.update(seg.environment)
        for art in seg.artifacts:
            # the SDK can write the same artifact twice: one node, the aliases of both
            known = artifacts.setdefault((art["type"], art["name"], art["digest"]), art)
            known["aliases"] = sorted(set(known["aliases"]) | set(art["aliases"]))
        used += seg.used_artifacts
        linked += seg.linked_artifacts
        issues += seg.issues
        hist = seg.history
        first, top = hist.first, hist.last
        offset = 0
        if first is not None and last_step is not None and first <= last_step:
            offset = last_step + 1 - first
        if top is not None:
            top += offset
            last_step = top if last_step is None else max(last_step, top)
        histories.append((hist, offset))
        seg_runtime = seg.runtime if seg.runtime is not None else _float(seg.latest.get("_runtime"))
        seg_end = _segment_end(seg, seg_runtime)
        if seg_end is not None:
            ended = seg_end if ended is None else max(ended, seg_end)
        runtime_total += seg_runtime or 0.0
        infos.append(SegmentInfo(seg.path, seg.size, seg.mtime_ns, seg.started_at, hist.rows, first,
                                 hist.last, offset, seg.has_exit, seg.exit_code, seg.runtime, seg.resume_offset,
                                 segment_state(seg) if seg.has_run_record else None))
    last = segments[-1]
    starts = [s.started_at for s in segments if s.started_at is not None]
    return RunFold(
        entity=entity, project=project, run_id=run_id, run=run,
        started_at=min(starts) if starts else None, ended_at=ended, runtime=runtime_total or None,
        config=config, summary=summary, environment=environment, artifacts=list(artifacts.values()),
        used_artifacts=used, linked_artifacts=linked, has_exit=last.has_exit, exit_code=last.exit_code,
        last_step=last_step, segments=infos, issues=issues, histories=histories,
    )


def _float(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _segment_end(seg: Segment, runtime: float | None) -> float | None:
    """When a segment ended: start + runtime, or its last logged time if later."""
    candidates = [t for t in (_float(seg.latest.get("_timestamp")),) if t]
    if seg.started_at is not None and runtime:
        candidates.append(seg.started_at + runtime)
    return max(candidates) if candidates else seg.started_at


def _apply(tree: dict[str, Any], ops: Ops) -> None:
    """Apply config or summary operations in order: set a (nested) path, or remove it."""
    for path, raw in ops.items():
        if raw is None:
            node: Any = tree
            for part in path[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(path[-1], None)
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = tree
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys, as W&B shows config and summary; empty dicts stay values.

    >>> flatten({"lr": 0.1, "model": {"name": "mlp", "act": {"kind": "relu"}}, "extra": {}})
    {'lr': 0.1, 'model.name': 'mlp', 'model.act.kind': 'relu', 'extra': {}}
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and "_type" not in value:
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def status(fold: RunFold, *, writing: bool) -> str:
    """From the last segment's exit record: code 0 finished, 254 crashed (wandb-core's code for a
    process that died), any other failed. Without one: `running` while some process still
    writes the file, else `crashed`. A run read from a W&B server has the server's state."""
    server_state = fold.run.get("server_state")
    if server_state in SERVER_STATES:
        return SERVER_STATES[server_state]
    if fold.has_exit:
        code = fold.exit_code or 0
        return "finished" if code == 0 else "crashed" if code == CRASHED_EXIT_CODE else "failed"
    return "running" if writing else "crashed"


def utc(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)
