"""Run folders uploaded to a W&B server by the SDK's own uploader (`wandb sync`), and checked on
the server run by run.

A W&B target with `entity` and `project` and no `path` is a server: the writer writes each run's
offline folder as for a folder target, into a staging folder in the catalog
(`<catalog>/migrations/wandb-upload/<target>/`), and `wandb sync` uploads a batch of them with
the key from WANDB_API_KEY; a run is done (the id map says so) once the server holds it whole,
and its folder is then deleted. What wandb 0.31 does, found by syncing folders to the W&B API
emulator in braid's tests and reading what it sent, and how braid answers it:

- `wandb sync` exits 0, prints "Finished syncing" and writes the `.wandb.synced` marker even
  when an artifact or a run file failed to upload (the artifact stays PENDING): so braid asks
  the server, after every sync, whether it holds each run whole (`Expected.missing`: the state
  the exit code gives, every history row, the run's artifact, its metadata file).
- Syncing a folder the server already holds sends the whole history again after the lines the
  server has (UpsertBucket answers `historyLineCount`, and the file stream continues from
  there): a second sync doubles the history. So a folder is synced only while the server holds
  nothing of its run; a run the server holds in part (an upload cut off) is completed by a
  resumed segment the writer writes with what is missing: the history rows after those the
  server holds, the whole summary (the server takes a segment's summary as the run's), the
  run's artifact (the same digest is the same version) and its end. A run the server holds
  whole is adopted: nothing is sent.
- A resumed segment's steps are shifted by the step the server says the run reached (the last
  `_step` of its history or of its summary, plus one), so each missing row is logged at its
  original step minus that shift (`resumed_rows`).
- wandb-core retries on its own, for minutes: braid bounds its retries and each request's wait,
  and checks the server (`Viewer`) before writing anything, so a dead server or a refused key is
  one line before any work. The key is handed to `wandb sync` in its environment only, never
  written anywhere braid writes, and scrubbed from every message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# the reader's: the server it reads when none is named, a request's time limit (the source's
# `timeout` option), retries per request, and the shape the client wants of a key
from braid.connectors.wandb._api import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, KEY_RE
from braid.connectors.wandb._api import GRAPHQL_RETRIES as RETRIES
from braid.unify.errors import MigrationTargetError, MigrationUsageError
from braid.unify.source import SourceSpec

KEY_VARIABLE = "WANDB_API_KEY"
# where the run folders of an API target wait for the server, under the catalog folder
UPLOAD_FOLDER = Path("migrations") / "wandb-upload"
BATCH = 16  # run folders per `wandb sync`
SYNC_TIMEOUT = 3600.0  # seconds one `wandb sync` of a batch may take
# the caller's WANDB_* variables `wandb sync` keeps (where wandb keeps its settings and cache)
KEPT_VARIABLES = ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR")
# the exit code a run folder ends with -> the state the server gives the run
SERVER_STATES = {0: "finished", 254: "crashed"}
# what braid asks the server: who the key is (a check before any work), and what it holds of a run
VIEWER = "query BraidViewer { viewer { id username } }"
RUN = """query BraidRunUpload($entity: String!, $project: String!, $run: String!) {
  project(name: $project, entityName: $entity) {
    run(name: $run) {
      state
      historyLineCount
      historyTail
      summaryMetrics
      files(names: ["wandb-metadata.json"]) { edges { node { name } } }
      outputArtifacts(first: 100) { edges { node { state artifactSequence { name } } } }
    }
  }
}"""


@dataclass(frozen=True)
class ApiTarget:
    """A W&B target that is a server: `entity/project` at `url`."""

    name: str
    entity: str
    project: str
    url: str
    timeout: float

    @classmethod
    def of(cls, spec: SourceSpec) -> ApiTarget | None:
        """The server a W&B target names, when it has `entity` and `project` and no `path`."""
        entity, project = spec.options.get("entity"), spec.options.get("project")
        if spec.options.get("path") is not None or not entity or not project:
            return None
        url = str(spec.options.get("base_url") or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        timeout = spec.options.get("timeout")
        return cls(spec.name, str(entity), str(project), url, float(timeout) if timeout else DEFAULT_TIMEOUT)

    def folder(self, catalog: Path) -> Path:
        """Where its run folders wait for the server: braid's, inside the catalog folder."""
        return catalog / UPLOAD_FOLDER / self.name

    def read_spec(self, spec: SourceSpec) -> SourceSpec:
        """The target as braid's W&B reader reads it back: the server only."""
        return SourceSpec(spec.name, "wandb", {"entity": self.entity, "project": self.project, "base_url": self.url,
                                               "timeout": self.timeout}, base_dir=spec.base_dir)


@dataclass(frozen=True)
class Held:
    """What the server holds of one run."""

    state: str
    rows: int
    last_step: int | None  # the step the server says the run reached (a resumed segment continues after it)
    artifacts: frozenset[str]  # the committed artifacts it logged, by collection name
    metadata: bool  # its wandb-metadata.json (the environment record: user, host)


@dataclass(frozen=True)
class Expected:
    """What the server holds of a run uploaded whole."""

    state: str
    rows: int
    artifacts: tuple[str, ...]  # the collections of the artifacts it logged: its files, its models

    def missing(self, held: Held | None) -> list[str]:
        """What of the run the server lacks; empty when it holds the run whole.

        >>> Expected("finished", 3, ("run-x", "churn")).missing(Held("running", 1, 0, frozenset({"churn"}), True))
        ['history rows (1 of 3)', 'artifact run-x', "the end (state 'running', not 'finished')"]
        """
        if held is None:
            return ["the run"]
        out = []
        if held.rows != self.rows:
            out.append(f"history rows ({held.rows} of {self.rows})")
        out += [f"artifact {name}" for name in self.artifacts if name not in held.artifacts]
        if not held.metadata:
            out.append("wandb-metadata.json")
        if held.state != self.state:
            out.append(f"the end (state {held.state!r}, not {self.state!r})")
        return out


def check_key(target: ApiTarget) -> None:
    """A target that is a server needs a W&B API key in WANDB_API_KEY (and nowhere else): checked
    before the source is read, as the client checks its shape before sending anything."""
    key = os.environ.get(KEY_VARIABLE, "")
    if not key or not KEY_RE.match(key):
        what = "is not set" if not key else ("is not a W&B API key (40 or more letters, digits or _, after an "
                                             "optional `prefix-`)")
        raise MigrationUsageError(
            f"the W&B target {target.name!r} is a W&B server (`entity`/`project`, no `path`): braid uploads its runs "
            f"with `wandb sync` and the key in {KEY_VARIABLE}, which {what}",
            hint=f"set {KEY_VARIABLE} (never in braid.toml), or set `path` of {target.name!r} to a folder to write "
                 "run folders for a later `wandb sync`")


def server_state(exit_code: int) -> str:
    return SERVER_STATES.get(exit_code, "failed")


def resumed_rows(rows: pl.DataFrame | None, held: Held) -> pl.DataFrame | None:
    """The history rows (`step` sorted) a resumed segment logs to complete a run the server
    holds `held.rows` of, at the steps that land on their own once wandb-core shifts them.
    Raises ValueError when the server's rows are not the first of them (a segment would then
    duplicate or misplace history).

    >>> rows = pl.DataFrame({"step": [0, 5, 9]})
    >>> resumed_rows(rows, Held("running", 1, 0, frozenset(), True))["step"].to_list()
    [4, 8]
    >>> resumed_rows(rows, Held("running", 2, 9, frozenset(), True))
    Traceback (most recent call last):
    ValueError: the server holds 2 history rows up to step 9, which are not the first 2 of the run's 3
    """
    if rows is None or rows.is_empty():
        return rows
    shift = 0 if held.last_step is None else held.last_step + 1
    later = rows.slice(held.rows)
    ours = rows["step"][held.rows - 1] if held.rows else None
    if held.rows > rows.height or ours != held.last_step or (not later.is_empty() and later["step"][0] < shift):
        raise ValueError(f"the server holds {held.rows} history rows up to step {held.last_step}, which are not "
                         f"the first {held.rows} of the run's {rows.height}")
    return later.with_columns(pl.col("step") - shift)


def last_values(rows: pl.DataFrame | None) -> dict[str, Any]:
    """Each history key's value at its last step: the summary the SDK keeps for a run.

    >>> last_values(pl.DataFrame({"step": [0, 1], "key": [["a", "b"], ["a"]], "value": [[1.0, 2.0], [3.0]]}))
    {'a': 3.0, 'b': 2.0}
    """
    if rows is None:
        return {}
    points = rows.select("step", "key", "value").explode("key", "value")
    return dict(points.sort("step").unique("key", keep="last").sort("key").select("key", "value").iter_rows())


class Server:
    """The W&B server of an API target: braid's checks (GraphQL over HTTP, with the key from
    WANDB_API_KEY) and `wandb sync` of run folders."""

    def __init__(self, target: ApiTarget, source: str) -> None:
        self.target, self.source = target, source
        self.key = os.environ.get(KEY_VARIABLE, "")
        self.session = requests.Session()
        retry = Retry(total=RETRIES, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504), allowed_methods=None,
                      raise_on_status=False)
        self.session.mount(target.url, HTTPAdapter(max_retries=retry))

    def error(self, message: str, *, hint: str | None = None) -> MigrationTargetError:
        return MigrationTargetError(self.source, self.target.name, self.scrub(message), hint=hint)

    def scrub(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key else text

    def connect(self) -> None:
        """Check that the server answers and takes the key, before anything is written."""
        self._graphql(VIEWER, {}, what="connecting (Viewer)")

    def _graphql(self, query: str, variables: dict[str, Any], *, what: str) -> dict[str, Any]:
        url = self.target.url
        try:
            answer = self.session.post(f"{url}/graphql", json={"query": query, "variables": variables},
                                       auth=("api", self.key), timeout=self.target.timeout)
        except requests.RequestException as exc:
            reason = str(exc.__context__ or exc).splitlines()[0][:200]
            raise self.error(f"{url}: {what} failed: the W&B server did not answer ({type(exc).__name__}: {reason})",
                             hint="is the W&B server up, and `base_url` right? What was uploaded is kept") from None
        if answer.status_code in (401, 403):
            raise self.error(f"{url}: {what} failed: the W&B server refused {KEY_VARIABLE} "
                             f"(HTTP {answer.status_code})", hint=f"check {KEY_VARIABLE}")
        try:
            body = answer.json()
        except ValueError:
            body = {}
        errors = body.get("errors") or ([] if answer.ok else [{"message": f"HTTP {answer.status_code}"}])
        if errors:
            raise self.error(f"{url}: {what} failed: {str(errors[0].get('message'))[:300]}",
                             hint="what was uploaded is kept; run the same migration again to continue")
        return dict(body.get("data") or {})

    def held(self, wid: str) -> Held | None:
        """What the server holds of run `wid` of the target's project, or None."""
        t = self.target
        data = self._graphql(RUN, {"entity": t.entity, "project": t.project, "run": wid},
                             what=f"reading run {t.entity}/{t.project}/{wid} (BraidRunUpload)")
        run = (data.get("project") or {}).get("run")
        if run is None:
            return None
        tail = json.loads(run.get("historyTail") or "[]")
        steps = [json.loads(tail[-1]).get("_step")] if tail else []
        steps.append(json.loads(run.get("summaryMetrics") or "{}").get("_step"))
        steps = [s for s in steps if isinstance(s, int)]
        arts = [e["node"] for e in (run.get("outputArtifacts") or {}).get("edges", []) if e.get("node")]
        return Held(state=run.get("state") or "", rows=int(run.get("historyLineCount") or 0),
                    last_step=max(steps) if steps else None,
                    artifacts=frozenset(a["artifactSequence"]["name"] for a in arts if a.get("state") == "COMMITTED"),
                    metadata=bool((run.get("files") or {}).get("edges")))

    def sync(self, folders: list[Path], workdir: Path) -> list[str]:
        """`wandb sync` of the run folders (the SDK's uploader, in its own process); returns the
        errors it printed (it exits 0 whatever failed)."""
        t = self.target
        env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") or k in KEPT_VARIABLES}
        env.update({
            "WANDB_BASE_URL": t.url, KEY_VARIABLE: self.key, "WANDB_DIR": str(workdir),
            "WANDB__GRAPHQL_RETRY_MAX": str(RETRIES), "WANDB__FILE_STREAM_RETRY_MAX": str(RETRIES),
            "WANDB__FILE_TRANSFER_RETRY_MAX": str(RETRIES), "WANDB__GRAPHQL_TIMEOUT_SECONDS": str(t.timeout),
            "WANDB__FILE_STREAM_TIMEOUT_SECONDS": str(t.timeout),
            **{f"WANDB__{what}_RETRY_WAIT_MAX_SECONDS": "2" for what in ("GRAPHQL", "FILE_STREAM", "FILE_TRANSFER")},
        })
        command = [sys.executable, "-m", "wandb", "sync", "--include-synced", "--entity", t.entity,
                   "--project", t.project, *map(str, folders)]
        try:
            done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                                  timeout=SYNC_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return [f"wandb sync did not end in {SYNC_TIMEOUT:.0f} s"]
        said = [line.removeprefix("wandb: ").strip() for line in (done.stdout + done.stderr).splitlines()]
        errors = [self.scrub(line) for line in said if "ERROR" in line or "Error" in line]
        if done.returncode:
            errors.append(f"wandb sync exited with {done.returncode}")
        return errors


@dataclass
class Pending:
    """A run folder waiting for the server, with what the server should then hold, and how to
    write the resumed segment that completes the run when the server holds it in part."""

    run_uuid: str
    wid: str
    folder: Path
    expected: Expected
    resume: Callable[[Held], Path]


@dataclass
class Flushed:
    """What one batch's upload did: the runs the server now holds whole (and whether they were
    sent now or found there), and those it does not, with why."""

    done: list[tuple[Pending, bool]] = field(default_factory=list)
    failed: list[tuple[Pending, str]] = field(default_factory=list)
    said: list[str] = field(default_factory=list)


def upload(server: Server, batch: list[Pending], workdir: Path) -> Flushed:
    """Upload a batch of run folders: a run the server holds nothing of is synced, one it holds
    in part is completed by a resumed segment, one it holds whole is adopted; then every run is
    checked on the server."""
    out, sent = Flushed(), []
    to_sync: list[Path] = []
    for pending in batch:
        held = server.held(pending.wid)
        if not pending.expected.missing(held):
            out.done.append((pending, False))
            continue
        if held is None:
            to_sync.append(pending.folder)
        else:
            try:
                to_sync.append(pending.resume(held))
            except ValueError as exc:
                out.failed.append((pending, f"cannot be completed without sending history twice: {exc}"))
                continue
        sent.append(pending)
    if to_sync:
        out.said = server.sync(to_sync, workdir)
    for pending in sent:
        missing = pending.expected.missing(server.held(pending.wid))
        if missing:
            out.failed.append((pending, "lacks " + ", ".join(missing)))
        else:
            out.done.append((pending, True))
    return out


@contextmanager
def public_api(target: ApiTarget) -> Iterator[Any]:
    """`wandb.Api()` on the target's server, with the key from WANDB_API_KEY, for what `wandb
    sync` cannot send (registry links, used artifacts). `Artifact.link` resolves the registry's
    organization through a client of its own, built from the environment: WANDB_BASE_URL is the
    target's meanwhile, and the environment is left as it was (starting wandb-core sets
    WANDB_SERVICE)."""
    import wandb

    saved = {k: os.environ.get(k) for k in ("WANDB_BASE_URL", "WANDB_SERVICE", "WANDB_MODE")}
    os.environ["WANDB_BASE_URL"] = target.url
    os.environ.pop("WANDB_MODE", None)
    try:
        yield wandb.Api(overrides={"base_url": target.url}, api_key=os.environ.get(KEY_VARIABLE),
                        timeout=int(target.timeout))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def failure(server: Server, flushed: Flushed, total: int) -> MigrationTargetError:
    """One line for the runs a batch left incomplete: which, what they lack, what wandb sync said."""
    pending, why = flushed.failed[0]
    t = server.target
    said = f"; wandb sync said: {flushed.said[0][:300]}" if flushed.said else ""
    return server.error(
        f"{t.url}: the W&B server does not hold {len(flushed.failed)} of the {total} runs just uploaded whole "
        f"(run {t.entity}/{t.project}/{pending.wid} {why}){said}",
        hint="what the server holds is kept; run the same migration again to upload the rest")
