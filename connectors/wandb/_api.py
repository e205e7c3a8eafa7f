"""Runs on a W&B server, read through the public API (`wandb.Api`).

Steps: connect (`Viewer`) -> list the project's runs (`Runs`) -> for each run its metadata
file (`RunFiles` and a GET), full history (`scan_history`: `RunHistoryKeys`,
`RunParquetHistory`, `HistoryPage`), logged and used artifacts (`RunOutputArtifacts`,
`RunInputArtifacts`), each artifact's manifest (`FetchArtifactManifest` and a GET of the URL it
returns) and registry links (`FetchLinkedArtifacts`) -> one `RunFold` per run: the shape `_fold`
gives a run folder, so `_normalise` makes the same ids and rows from both.

What the server says differently from a run folder, and how it is folded:

- the run's state (`finished`, `failed`, `crashed`, `running`) is the status; there is no
  exit code;
- the start is the run's `createdAt`, which W&B gives to the second (a folder knows the
  microsecond); the end is start + runtime or the summary's `_timestamp`, as for a folder;
- config comes as `{"key": {"value": ...}}` (the client unwraps it; `_wandb` is dropped),
  summary as JSON (keys starting with `_` are W&B's own and are dropped, as from a folder);
- the environment record is the run's `wandb-metadata.json` file, in protobuf JSON names or,
  from older SDKs, the legacy keys; both become the record's field names;
- history rows come with `_step` already continued across a resumed run's segments, which is
  what braid's folder reader does too;
- artifacts carry what only the server knows: the version (`v3`), the aliases now, the time
  they were logged, and the runs that used them and the registries they are linked into.

The key is `WANDB_API_KEY` and nothing else (never braid.toml); it is handed to the client
and appears in no message, note or table. wandb-core retries a request that gets no answer;
braid bounds each request (`timeout`, default 30 s) and the retries (2), so a dead server
is a one-line error naming the base URL and the request within a minute.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from braid.unify.errors import SourceAuthError, SourceError, SourceUnreachable
from braid.unify.source import Progress

from ._fold import DEFAULT_PROJECT, History, RunFold, legacy_environment

__all__ = ["ApiRuns", "read_api"]

DEFAULT_BASE_URL = "https://api.wandb.ai"
DEFAULT_TIMEOUT = 30.0
GRAPHQL_RETRIES = 2
HISTORY_PAGE = 1000
# history values W&B's server can give as strings for what the run logged as a float
SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# the client checks a key's shape before sending anything: 40+ of these after an optional `prefix-`
KEY_RE = re.compile(r"^(?:[^-]+-)?[A-Za-z0-9_]{40,}$")

T = TypeVar("T")


class ApiRuns:
    """What a read of one project gave: the runs, and the node ids of runs whose history
    could not be read (their metrics are kept from the previous sync)."""

    def __init__(self) -> None:
        self.folds: list[RunFold] = []
        self.without_history: set[tuple[str, str, str]] = set()


def read_api(source: str, *, entity: str, project: str | None, base_url: str | None, timeout: float | None,
             notes: list[str], progress: Progress) -> ApiRuns:
    """Every run of `entity/project` on the W&B server at `base_url`, folded.

    Raises SourceError (SourceAuthError, SourceUnreachable) when the server cannot be used at
    all; a request about one run that fails becomes a note, and the other runs are read."""
    url = (base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    project = project or DEFAULT_PROJECT
    key = os.environ.get("WANDB_API_KEY", "")
    reader = _Reader(source, url, key, timeout or DEFAULT_TIMEOUT, notes)
    with _own_environment():
        return _read(reader, entity, project, progress)


def _read(reader: _Reader, entity: str, project: str, progress: Progress) -> ApiRuns:
    progress("connecting to W&B", 0, None)
    api = reader.connect()
    out = ApiRuns()
    progress("listing W&B runs", 0, None)
    runs = reader.call(f"listing the runs of {entity}/{project} (Runs)",
                       lambda: list(api.runs(f"{entity}/{project}", lazy=False, per_page=100)))
    for i, run in enumerate(runs):
        progress("reading W&B runs", i, len(runs))
        fold = reader.run(run, entity, project, out)
        if fold is not None:
            out.folds.append(fold)
    progress("reading W&B runs", len(runs), len(runs))
    return out


class _Reader:
    def __init__(self, source: str, url: str, key: str, timeout: float, notes: list[str]) -> None:
        self.source, self.url, self.key, self.timeout, self.notes = source, url, key, timeout, notes

    # -- errors ------------------------------------------------------------------------------------

    def _text(self, exc: BaseException) -> str:
        """An error's first line, without the key (whatever the client put in it)."""
        text = str(exc).strip() or type(exc).__name__
        text = " ".join(line.strip() for line in text.splitlines()[:2] if line.strip())
        if self.key:
            text = text.replace(self.key, "***")
        return text

    def _error(self, what: str, exc: BaseException) -> SourceError:
        text = self._text(exc)
        lowered = text.lower()
        where = f"{self.url}: {what} failed: {text}"
        if any(s in lowered for s in ("connection refused", "no such host", "did not respond in time",
                                      "giving up after", "timeout", "timed out", "connection reset")) \
                and "http 5" not in lowered:
            return SourceUnreachable(self.source, where, hint="is the W&B server up, and `base_url` right?")
        if any(s in lowered for s in ("not logged in", "unauthorized", "401", "permission denied",
                                      "invalid api key", "relogin")):
            return SourceAuthError(self.source, where, hint="check WANDB_API_KEY")
        return SourceError(self.source, where)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """A request the whole read depends on: a failure is a SourceError."""
        try:
            return fn()
        except Exception as exc:  # the client raises its own, pydantic's, requests' and ValueError
            raise self._error(what, exc) from None

    def attempt(self, what: str, fn: Callable[[], T], *, then: str) -> T | None:
        """A request about one run: a failure is a note, and the read goes on."""
        try:
            return fn()
        except Exception as exc:
            self.notes.append(f"{self._error(what, exc)}; {then}".removeprefix(f"source {self.source!r}: "))
            return None

    # -- connecting ----------------------------------------------------------------------------------

    def connect(self) -> Any:
        if not self.key:
            raise SourceAuthError(self.source, f"{self.url}: no W&B API key",
                                  hint="set WANDB_API_KEY (braid never reads keys from braid.toml)")
        if not KEY_RE.match(self.key):
            raise SourceAuthError(self.source, f"{self.url}: WANDB_API_KEY is not a W&B API key (40 or more "
                                  "letters, digits or _, after an optional `prefix-`)", hint="check WANDB_API_KEY")
        import wandb

        with _bounded_retries(self.timeout):
            try:
                # the client waits for wandb-core, which retries on its own: leave it time for that
                return wandb.Api(overrides={"base_url": self.url}, api_key=self.key,
                                 timeout=math.ceil(self.timeout * (GRAPHQL_RETRIES + 1) + 5))
            except Exception as exc:  # AuthenticationError also when the server does not answer
                cause = exc.__cause__ or exc
                error = self._error("connecting (Viewer)", cause)
                if type(error) is SourceError and "authentication" in type(exc).__name__.lower():
                    error = SourceAuthError(self.source, str(error).removeprefix(f"source {self.source!r}: "),
                                            hint="check WANDB_API_KEY")
                raise error from None

    # -- one run -------------------------------------------------------------------------------------

    def run(self, run: Any, entity: str, project: str, out: ApiRuns) -> RunFold | None:
        path = f"{entity}/{project}/{run.id}"
        attrs = run._attrs  # the RunFragment the client read, as the server gave it
        summary = {k: v for k, v in (run.summary_metrics or {}).items()}
        meta = self.attempt(f"reading the metadata file of run {path} (RunFiles)", lambda: run.metadata,
                            then="its environment is missing") or {}
        environment = environment_record(meta)
        git = environment.get("git") or {}
        user = attrs.get("user") or {}
        started = _epoch(attrs.get("createdAt"))
        history = self.attempt(f"reading the history of run {path} (scan_history: HistoryPage)",
                               lambda: history_of(run.scan_history(page_size=HISTORY_PAGE, use_cache=False)),
                               then="its metrics are kept from the last sync")
        if history is None:
            out.without_history.add((entity, project, run.id))
        steps = history.steps if history is not None else []
        last_step = max(steps) if steps else _int(summary.get("_step"))
        runtime = _runtime(summary)
        ends = [t for t in (_float(summary.get("_timestamp")),
                            started + runtime if started is not None and runtime else None) if t]
        run_info = {
            "display_name": attrs.get("displayName") or None, "group": attrs.get("group") or None,
            "job_type": attrs.get("jobType") or None, "notes": attrs.get("notes") or None,
            "tags": list(attrs.get("tags") or []), "host": environment.get("host"),
            "git_remote": git.get("remote_url") or git.get("remote") or None,
            "git_commit": attrs.get("commit") or git.get("commit") or None,
            "sweep_id": attrs.get("sweepName") or None, "server_state": attrs.get("state"),
            "url": f"{self.url}/{entity}/{project}/runs/{run.id}", "wandb_user": user.get("username"),
        }
        outputs = self.attempt(f"listing the artifacts run {path} logged (RunOutputArtifacts)",
                               lambda: list(run.logged_artifacts()), then="its outputs are missing") or []
        inputs = self.attempt(f"listing the artifacts run {path} used (RunInputArtifacts)",
                              lambda: list(run.used_artifacts()), then="its inputs are missing") or []
        state = attrs.get("state")
        return RunFold(
            entity=entity, project=project, run_id=run.id,
            run={k: v for k, v in run_info.items() if v not in (None, [])},
            started_at=started, ended_at=max(ends) if ends else started, runtime=runtime,
            config=dict(run.config or {}), summary={k: v for k, v in summary.items() if not k.startswith("_")},
            environment=environment, artifacts=[a for a in (self.artifact(x, links=True) for x in outputs) if a],
            used_artifacts=[], linked_artifacts=[], has_exit=state in ("finished", "failed"),
            exit_code=None, last_step=last_step, segments=[], issues=[],
            histories=[(history, 0)] if history is not None else [],
            inputs=[a for a in (self.artifact(x, links=False) for x in inputs) if a],
        )

    def artifact(self, art: Any, *, links: bool) -> dict[str, Any] | None:
        """An artifact version in `_fold`'s form, with what only the server knows."""
        name = art.source_name.rsplit(":", 1)[0]
        label = f"{art.source_entity}/{art.source_project}/{art.source_name}"
        manifest = self.attempt(f"reading the manifest of artifact {label} (FetchArtifactManifest)",
                                lambda: art.manifest, then="its files are missing")
        entries = []
        if manifest is not None:
            for path, entry in manifest.entries.items():
                entries.append({"path": str(path), "digest": entry.digest, "size": entry.size,
                                "ref": entry.ref or None, "birth_artifact_id": entry.birth_artifact_id or None,
                                "extra": dict(entry.extra) or None})
        linked: list[dict[str, Any]] = []
        if links:
            found = self.attempt(f"reading the registry links of artifact {label} (FetchLinkedArtifacts)",
                                 lambda: art.linked_artifacts, then="its registry links are missing") or []
            for link in found:
                version = link.version
                linked.append({"entity": link.entity, "project": link.project,
                               "collection": link.name.rsplit(":", 1)[0], "version": version,
                               "aliases": sorted(a for a in link.aliases if a != version),
                               "created_at": getattr(link, "linked_at", None) or link.created_at})
        algorithm = art.digest_algorithm
        return {
            "type": art.type, "name": name, "digest": art.digest, "entity": art.source_entity,
            "project": art.source_project, "aliases": sorted(a for a in art.aliases if a != art.source_version),
            "tags": list(art.tags), "description": art.description or None, "metadata": art.metadata or None,
            "digest_algorithm": getattr(algorithm, "value", algorithm) or None,
            "storage_policy": manifest.storage_policy.name() if manifest is not None else None,
            "incremental": None, "distributed_id": art.distributed_id or None, "entries": entries,
            "version": art.source_version, "created_at": art.created_at, "links": linked or None,
        }


@contextmanager
def _own_environment() -> Iterator[None]:
    """Leave the process environment as it was: starting wandb-core sets WANDB_SERVICE, which
    makes every later child process that runs wandb (a training script, a test fixture) attach
    to this process's wandb-core instead of its own, so its run files outlive it."""
    saved = os.environ.get("WANDB_SERVICE")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("WANDB_SERVICE", None)
        else:
            os.environ["WANDB_SERVICE"] = saved


@contextmanager
def _bounded_retries(timeout: float) -> Iterator[None]:
    """wandb-core's GraphQL retries and per-request timeout, for the `Api` made inside (which
    copies the process's settings when it is made); the process's own are put back after."""
    from wandb.sdk import wandb_setup

    settings = wandb_setup.singleton().settings
    wanted = {"x_graphql_retry_max": GRAPHQL_RETRIES, "x_graphql_retry_wait_min_seconds": 0.2,
              "x_graphql_retry_wait_max_seconds": 2.0, "x_graphql_timeout_seconds": timeout}
    saved = {k: getattr(settings, k) for k in wanted}
    try:
        for k, v in wanted.items():
            setattr(settings, k, v)
        yield
    finally:
        for k, v in saved.items():
            setattr(settings, k, v)


def history_of(rows: Any) -> History:
    """scan_history's rows (dicts with `_step`) as `_fold`'s history columns.

    >>> h = history_of([{"_step": 0, "loss": 0.5, "eval.acc": "NaN"}, {"_step": 1, "loss": None}])
    >>> h.steps, h.counts, h.keys, h.values
    ([0, 1], [2, 0], ['loss', 'eval.acc'], ['0.5', 'NaN'])
    """
    hist = History()
    for row in rows:
        step = row.get("_step")
        if not isinstance(step, int):
            continue
        items = [(k, v) for k, v in row.items() if k != "_step" and v is not None]
        hist.steps.append(step)
        hist.counts.append(len(items))
        for k, v in items:
            hist.keys.append(k)
            hist.values.append(json.dumps(SPECIAL_FLOATS.get(v, v) if isinstance(v, str) else v, allow_nan=True))
    return hist


def environment_record(meta: dict[str, Any]) -> dict[str, Any]:
    """A run's `wandb-metadata.json` as the environment record's fields (what a folder gives).

    >>> environment_record({"python": "CPython 3.11.7", "codePath": "train.py", "cpu_count": 2})
    {'python': 'CPython 3.11.7', 'code_path': 'train.py', 'cpu_count': 2}
    >>> environment_record({"host": "vm", "codePath": "t.py", "heartbeatAt": "2024-01-01", "gpu_devices": 1})
    {'code_path': 't.py', 'host': 'vm', 'gpu_devices': 1}
    """
    if not meta:
        return {}
    from google.protobuf.json_format import MessageToDict, ParseDict, ParseError

    from ._txlog import _record_class

    record = _record_class()().environment
    try:
        ParseDict(meta, record, ignore_unknown_fields=True)
    except (ParseError, ValueError, TypeError):
        return legacy_environment(meta)  # an older SDK's file: the keys it used
    env = MessageToDict(record, preserving_proto_field_name=True)
    env.pop("writer_id", None)
    known = {name for f in record.DESCRIPTOR.fields for name in (f.name, f.json_name)}
    # keys the record does not have (a newer or an older SDK's) are kept, as a folder keeps them
    return env | legacy_environment({k: v for k, v in meta.items() if k not in known})


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    from datetime import UTC

    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _runtime(summary: dict[str, Any]) -> float | None:
    """The run's runtime: the last `_runtime` it logged, else W&B's own count."""
    runtime = _float(summary.get("_runtime"))
    if runtime is None and isinstance(summary.get("_wandb"), dict):
        runtime = _float(summary["_wandb"].get("runtime"))
    return runtime or None
