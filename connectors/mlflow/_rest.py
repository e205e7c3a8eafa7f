"""Read an MLflow tracking server over its REST API into the same raw frames as the SQL reader.

The REST path is for stores braid cannot open directly: a server in front of a database braid has
no credentials for, or a schema newer than braid knows. It is 50-100x slower than SQL (see
reference/mlflow.md), so it asks for the largest pages the server allows, reads metric history
through the exact bulk endpoint (100 runs a call) and runs independent calls on a few threads.

    >>> store = RestStore("prod", "http://127.0.0.1:5000")  # doctest: +SKIP
    >>> store.read_core(no_progress)["runs"].columns  # doctest: +SKIP
    ['run_uuid', 'name', 'experiment_id', 'user_id', 'status', 'start_time', 'end_time', ...]

Credentials come from MLflow's own variables: MLFLOW_TRACKING_TOKEN (bearer) or
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (basic); MLFLOW_TRACKING_INSECURE_TLS and
MLFLOW_TRACKING_SERVER_CERT_PATH steer TLS verification.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import polars as pl
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from braid.unify.errors import SourceAuthError, SourceError, SourceUnreachable
from braid.unify.source import Progress

from ._raw import RAW_SCHEMAS, RawStore

T = TypeVar("T")
R = TypeVar("R")
Json = dict[str, Any]

API, AJAX = "/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/"

# every endpoint braid calls, by name: (HTTP method, path). Error messages name the path.
ENDPOINTS: dict[str, tuple[Literal["GET", "POST"], str]] = {
    "experiments": ("GET", API + "experiments/search"),
    "runs": ("POST", API + "runs/search"),
    "run": ("GET", API + "runs/get"),
    "logged_models": ("POST", API + "logged-models/search"),
    "registered_models": ("GET", API + "registered-models/search"),
    "model_versions": ("GET", API + "model-versions/search"),
    "download_uri": ("GET", API + "model-versions/get-download-uri"),
    # the exact history of up to 100 runs for one key; never get-history-bulk-interval, which
    # downsamples
    "history_bulk": ("GET", AJAX + "metrics/get-history-bulk"),
    "history": ("GET", API + "metrics/get-history"),
    "run_artifacts": ("GET", API + "artifacts/list"),
    "model_artifacts": ("GET", API + "logged-models/{model_id}/artifacts/directories"),
}

# the largest page each paginated endpoint accepts (MLflow 3.17's server-side limits; the
# LoggedModel search has none, 1,000 keeps answers small)
PAGE_SIZE: dict[str, int] = {
    "experiments": 50_000, "runs": 50_000, "logged_models": 1_000,
    "registered_models": 1_000, "model_versions": 200_000, "history": 25_000,
}
BULK_RUNS = 100  # run ids the bulk history endpoint takes a call
BULK_POINTS = 25_000  # the bulk endpoint cuts its answer to this many points, over all its runs
EXPERIMENTS_PER_SEARCH = 1_000  # experiment ids a run or LoggedModel search names at once
TIMEOUT = (10.0, 300.0)  # seconds to connect, seconds to wait for a (large) page
WORKERS = 4  # concurrent calls for per-run and per-key work
RETRY = Retry(total=3, connect=0, read=0, status=3, backoff_factor=0.5,
              status_forcelist=(429, 502, 503, 504), allowed_methods=None, raise_on_status=False)

# raw column -> field of the REST answer, per entity (the REST names differ from the tables')
FIELDS: dict[str, dict[str, str]] = {
    "experiments": {c: c for c in RAW_SCHEMAS["experiments"]},
    "runs": {
        "run_uuid": "run_uuid", "name": "run_name", "experiment_id": "experiment_id",
        "user_id": "user_id", "status": "status", "start_time": "start_time", "end_time": "end_time",
        "lifecycle_stage": "lifecycle_stage", "artifact_uri": "artifact_uri",
    },
    "metrics": {"key": "key", "value": "value", "timestamp": "timestamp", "step": "step"},
    "logged_models": {
        "model_id": "model_id", "experiment_id": "experiment_id", "name": "name",
        "artifact_location": "artifact_uri", "creation_time": "creation_timestamp_ms",
        "last_updated_time": "last_updated_timestamp_ms", "status": "status",
        "model_type": "model_type", "source_run_id": "source_run_id", "status_message": "status_message",
    },
    "logged_model_metrics": {
        "key": "key", "value": "value", "timestamp": "timestamp", "step": "step", "run_id": "run_id",
        "dataset_name": "dataset_name", "dataset_digest": "dataset_digest",
    },
    "registered_models": {
        "name": "name", "creation_time": "creation_timestamp", "last_updated_time": "last_updated_timestamp",
        "description": "description",
    },
    "model_versions": {
        "name": "name", "version": "version", "creation_time": "creation_timestamp",
        "last_updated_time": "last_updated_timestamp", "description": "description", "user_id": "user_id",
        "current_stage": "current_stage", "source": "source", "run_id": "run_id", "status": "status",
        "status_message": "status_message", "run_link": "run_link",
    },
    "dataset": {
        "name": "name", "digest": "digest", "source_type": "source_type", "source": "source",
        "schema": "schema", "profile": "profile",
    },
}
# oldest first: a run created while we page lands on the last page instead of shifting every
# page by one (the server pages by offset)
RUN_SEARCH: Json = {"run_view_type": "ALL", "order_by": ["attributes.start_time ASC"]}
MODEL_URI_RE = re.compile(r"^models:/(m-[0-9a-f]+)/?$")
VERSION_URI_RE = re.compile(r"^models:/([^/]+)/([0-9]+)/?$")


class RestStore:
    """A reader for one `http(s)://` MLflow tracking server."""

    schema_version = "rest"

    def __init__(self, source: str, uri: str) -> None:
        self.source = source
        self.base = uri.rstrip("/")
        self.where = _redact(self.base)
        self.session = _session()
        # (run, metric key) pairs with a history, found by read_core
        self._history_keys: pl.DataFrame | None = None

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RestStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP -----------------------------------------------------------------------------
    def _call(self, endpoint: str, args: Json | None = None, *, model_id: str = "",
              missing_ok: bool = False) -> Json | None:
        """One request; a readable BraidError for every failure.

        `missing_ok` turns MLflow's RESOURCE_DOES_NOT_EXIST (a run deleted while we read) into
        None instead of an error.
        """
        method, path = ENDPOINTS[endpoint]
        path = path.format(model_id=model_id)
        url = self.base + path
        try:
            if method == "GET":
                response = self.session.get(url, params=args, timeout=TIMEOUT)
            else:
                response = self.session.post(url, json=args or {}, timeout=TIMEOUT)
        except requests.exceptions.SSLError as exc:
            raise SourceError(self.source, f"TLS to {self.where} failed: {_reason(exc)}",
                              hint="set MLFLOW_TRACKING_SERVER_CERT_PATH to the server's CA bundle, "
                              "or MLFLOW_TRACKING_INSECURE_TLS=true") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise SourceUnreachable(self.source, f"cannot reach {self.where}: {_reason(exc)}") from exc
        except requests.exceptions.RequestException as exc:
            raise SourceError(self.source, f"{path} on {self.where} failed: {_reason(exc)}") from exc
        return self._answer(response, path, missing_ok=missing_ok)

    def _answer(self, response: requests.Response, path: str, *, missing_ok: bool) -> Json | None:
        status = response.status_code
        if status in (401, 403):
            raise SourceAuthError(
                self.source, f"{self.where} refused the credentials (HTTP {status} on {path})",
                hint="set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        try:
            body = response.json()  # MLflow writes NaN bare in the ajax answers: json accepts it
        except ValueError:
            body = None
        if status >= 400:
            code = body.get("error_code") if isinstance(body, dict) else None
            if missing_ok and code == "RESOURCE_DOES_NOT_EXIST":
                return None
            detail = f" {code}: {_one_line(str(body.get('message', '')))[:200]}" if code else ""
            raise SourceError(self.source, f"{path} on {self.where} answered HTTP {status}{detail}")
        if not isinstance(body, dict):
            raise SourceError(self.source, f"{path} on {self.where} did not answer JSON: "
                                           "is it an MLflow tracking server?")
        return body

    def _pages(self, endpoint: str, items: str, args: Json) -> Iterator[Json]:
        """Every item of a paginated search, page after page."""
        args = {**args, "max_results": PAGE_SIZE[endpoint]}
        while True:
            page = self._call(endpoint, args) or {}
            yield from page.get(items, [])
            token = page.get("next_page_token")
            if not token:
                return
            args = {**args, "page_token": token}

    # -- core tables ----------------------------------------------------------------------
    def read_core(self, progress: Progress) -> RawStore:
        """Every table but the metric history and the artifact listing."""
        steps = 5
        raw = RawStore(self.schema_version)
        progress("reading experiments", 0, steps)
        experiments = list(self._pages("experiments", "experiments", {"view_type": "ALL"}))
        raw["experiments"] = _frame("experiments", [_pick(e, FIELDS["experiments"]) for e in experiments])
        raw["experiment_tags"] = _frame("experiment_tags", _kv(experiments, "experiment_id", "tags"))
        ids = [e["experiment_id"] for e in experiments]

        progress("reading runs", 1, steps)
        runs = list(self._search_in_experiments("runs", "runs", ids, RUN_SEARCH))
        for table, frame in _run_tables(runs).items():
            raw[table] = frame
        self._history_keys = raw["latest_metrics"].select("run_uuid", "key")

        progress("reading logged models", 2, steps)
        models = list(self._search_in_experiments("logged_models", "models", ids, {}))
        for table, frame in _logged_model_tables(models).items():
            raw[table] = frame

        progress("reading model inputs", 3, steps)
        raw["model_inputs"] = self._model_inputs(_model_input_candidates(raw), progress)

        progress("reading the registry", 4, steps)
        for table, frame in self._registry(raw["logged_models"]).items():
            raw[table] = frame
        progress("read", steps, steps)
        return raw

    def _search_in_experiments(self, endpoint: str, items: str, ids: Sequence[str], args: Json) -> Iterator[Json]:
        """A search over every experiment, in slices of experiment ids small enough for one query."""
        for i in range(0, len(ids), EXPERIMENTS_PER_SEARCH):
            yield from self._pages(endpoint, items, {**args, "experiment_ids": list(ids[i:i + EXPERIMENTS_PER_SEARCH])})

    def _model_inputs(self, candidates: list[str], progress: Progress) -> pl.DataFrame:
        """Model inputs, which runs/search leaves out: one runs/get per candidate run."""
        def inputs(run_uuid: str) -> list[Json]:
            answer = self._call("run", {"run_id": run_uuid}, missing_ok=True)
            found = ((answer or {}).get("run", {}).get("inputs") or {}).get("model_inputs", [])
            return [{"run_uuid": run_uuid, "model_id": m.get("model_id")} for m in found]

        rows = [r for found in _parallel(inputs, candidates, progress, "reading model inputs") for r in found]
        return _frame("model_inputs", rows)

    def _registry(self, logged_models: pl.DataFrame) -> dict[str, pl.DataFrame]:
        registered = list(self._pages("registered_models", "registered_models", {}))
        versions = list(self._pages("model_versions", "model_versions", {}))
        locations = dict(logged_models.select("model_id", "artifact_location").iter_rows())
        tables = _registry_tables(registered, versions)
        tables["model_versions"] = tables["model_versions"].with_columns(
            storage_location=pl.Series(self._storage_locations(tables["model_versions"], locations), dtype=pl.String))
        return tables

    def _storage_locations(self, versions: pl.DataFrame, model_locations: dict[str, str]) -> list[str | None]:
        """Where each version's files are, as MLflow's SQL registry records it at creation.

        REST does not return `storage_location`; MLflow sets it to the LoggedModel's artifact
        location for a `models:/m-...` source, the referenced version's location for
        `models:/<name>/<version>`, and the source itself otherwise. A LoggedModel no search
        returns (deleted) or a chain we cannot resolve locally is asked of the server.
        """
        own = {(n, v): s for n, v, s in versions.select("name", "version", "source").iter_rows()}

        def resolve(name: str, version: str, depth: int = 0) -> str | None:
            source = own.get((name, version))
            if source is None or depth > 8:
                return self._download_uri(name, version)
            if m := MODEL_URI_RE.match(source):
                return model_locations.get(m.group(1)) or self._download_uri(name, version)
            if m := VERSION_URI_RE.match(source):
                return resolve(m.group(1), m.group(2), depth + 1)
            return source

        return [resolve(n, v) for n, v in versions.select("name", "version").iter_rows()]

    def _download_uri(self, name: str, version: str) -> str | None:
        answer = self._call("download_uri", {"name": name, "version": version}, missing_ok=True)
        return (answer or {}).get("artifact_uri")

    # -- metric history -------------------------------------------------------------------
    def read_metric_history(self, run_uuids: Iterable[str] | None, progress: Progress) -> pl.DataFrame:
        """The full history of the given runs (all runs when None), key by key, 100 runs a call."""
        if self._history_keys is None:
            self.read_core(progress)
        keys = self._history_keys if self._history_keys is not None else pl.DataFrame(
            schema={"run_uuid": pl.String, "key": pl.String})
        if run_uuids is not None:
            keys = keys.filter(pl.col("run_uuid").is_in(list(run_uuids)))
        tasks = [
            (key, runs[i:i + BULK_RUNS])
            for key, runs in keys.sort("key", "run_uuid").group_by("key", maintain_order=True)
            .agg(pl.col("run_uuid")).iter_rows()
            for i in range(0, len(runs), BULK_RUNS)
        ]
        parts = _parallel(lambda t: self._history(*t), tasks, progress, "reading metric history")
        return pl.concat([_frame("metrics", []), *parts])

    def _history(self, key: str, run_uuids: list[str]) -> pl.DataFrame:
        """The history of one key for some runs, complete even where the bulk answer is cut.

        The bulk answer is sorted by run id and cut after BULK_POINTS points in all: every run
        before the last one it names is complete; the rest are asked again. A run that fills a
        whole answer alone is read page by page from get-history instead.
        """
        parts: list[pl.DataFrame] = []
        pending = sorted(run_uuids)
        while pending:
            batch = pending[:BULK_RUNS]
            answer = self._call("history_bulk", {"run_id": batch, "metric_key": key, "max_results": BULK_POINTS})
            points = _bulk_frame((answer or {}).get("metrics", []))
            if points.height < BULK_POINTS:
                parts.append(points)
                pending = pending[len(batch):]
                continue
            last = points["run_uuid"][-1]
            if last == batch[0]:
                parts.append(self._paged_history(last, key))
                pending = pending[1:]
                continue
            parts.append(points.filter(pl.col("run_uuid") < last))
            pending = [r for r in pending if r >= last]
        return pl.concat([_frame("metrics", []), *parts])

    def _paged_history(self, run_uuid: str, key: str) -> pl.DataFrame:
        rows = [
            {"run_uuid": run_uuid, **_metric(m)}
            for m in self._pages("history", "metrics", {"run_id": run_uuid, "metric_key": key})
        ]
        return _frame("metrics", rows)

    # -- artifacts ------------------------------------------------------------------------
    def list_artifacts(self, owners: list[str], progress: Progress) -> pl.DataFrame:
        """Files under runs' (run uuid) or LoggedModels' (`m-...`) artifact roots, listed through
        the server; md5 stays null because no bytes are read."""
        parts = _parallel(self._list_owner, owners, progress, "listing artifacts")
        return pl.concat([_frame("artifacts", []), *parts])

    def _list_owner(self, owner: str) -> pl.DataFrame:
        kind = "model" if owner.startswith("m-") else "run"
        rows: list[Json] = []
        folders: list[str | None] = [None]
        while folders:
            folder = folders.pop()
            for entry in self._list_folder(owner, kind, folder):
                path = str(entry.get("path", ""))
                # the server answers paths relative to the root; be lenient with bare names
                if folder and not path.startswith(folder + "/"):
                    path = f"{folder}/{path.rsplit('/', 1)[-1]}"
                if entry.get("is_dir"):
                    folders.append(path)
                else:
                    rows.append({"owner": owner, "owner_kind": kind, "path": path,
                                 "size": entry.get("file_size"), "md5": None})
        return _frame("artifacts", sorted(rows, key=lambda r: r["path"]))

    def _list_folder(self, owner: str, kind: str, folder: str | None) -> Iterator[Json]:
        if kind == "model":
            args = {"artifact_directory_path": folder} if folder else {}
            answer = self._call("model_artifacts", args, model_id=owner, missing_ok=True)
            yield from (answer or {}).get("files", [])
            return
        args = {"run_id": owner, **({"path": folder} if folder else {})}
        while True:
            answer = self._call("run_artifacts", args, missing_ok=True) or {}
            yield from answer.get("files", [])
            if not answer.get("next_page_token"):
                return
            args = {**args, "page_token": answer["next_page_token"]}


# -- turning answers into raw frames -------------------------------------------------------
def _frame(table: str, rows: list[Json]) -> pl.DataFrame:
    schema = RAW_SCHEMAS[table]
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def _pick(obj: Json, fields: dict[str, str]) -> Json:
    return {raw: obj.get(rest) for raw, rest in fields.items()}


def _kv(entities: Iterable[Json], id_field: str, list_field: str) -> list[Json]:
    """(owner, key, value) rows from each entity's list of {key, value}."""
    return [
        {id_field: e.get(id_field), "key": kv.get("key"), "value": kv.get("value")}
        for e in entities for kv in e.get(list_field) or []
    ]


def _number(value: Any) -> float | None:
    """A metric value: proto JSON writes NaN and infinities as the strings "NaN", "Infinity"."""
    if value is None or isinstance(value, float):
        return value
    return float(value)


def _metric(m: Json) -> Json:
    row = _pick(m, FIELDS["metrics"])
    row["value"] = _number(row["value"])
    return row


def _bulk_frame(points: list[Json]) -> pl.DataFrame:
    """The bulk endpoint's points (plain JSON, NaN written bare), whole columns at once."""
    if not points:
        return _frame("metrics", [])
    frame = pl.DataFrame(points, schema_overrides={"value": pl.Float64})
    return frame.select(
        pl.col("run_id").alias("run_uuid"), "key", "value", "timestamp", "step",
    ).cast(RAW_SCHEMAS["metrics"])


def _run_tables(runs: list[Json]) -> dict[str, pl.DataFrame]:
    """runs, params, tags, latest metrics, dataset inputs and model outputs of searched runs."""
    rows: dict[str, list[Json]] = {t: [] for t in ("runs", "params", "tags", "latest_metrics",
                                                   "dataset_inputs", "model_outputs")}
    seen: set[str] = set()
    for run in runs:
        info, data = run.get("info", {}), run.get("data", {})
        uuid = info.get("run_uuid") or info.get("run_id")
        if uuid in seen:  # offset paging can repeat a run when another is deleted meanwhile
            continue
        seen.add(uuid)
        rows["runs"].append({**_pick(info, FIELDS["runs"]), "run_uuid": uuid})
        for table in ("params", "tags"):
            rows[table] += [{"run_uuid": uuid, "key": p.get("key"), "value": p.get("value")}
                            for p in data.get(table) or []]
        rows["latest_metrics"] += [{"run_uuid": uuid, **_metric(m)} for m in data.get("metrics") or []]
        rows["dataset_inputs"] += [_dataset_input(uuid, i) for i in (run.get("inputs") or {}).get("dataset_inputs") or []]
        rows["model_outputs"] += [{"run_uuid": uuid, "model_id": o.get("model_id"), "step": o.get("step")}
                                  for o in (run.get("outputs") or {}).get("model_outputs") or []]
    return {table: _frame(table, r) for table, r in rows.items()}


def _dataset_input(run_uuid: str, entry: Json) -> Json:
    """One dataset input; its tags folded into a sorted JSON object, as the SQL reader does."""
    tags = {t.get("key"): t.get("value") for t in entry.get("tags") or []}
    return {
        "run_uuid": run_uuid, **_pick(entry.get("dataset") or {}, FIELDS["dataset"]),
        "tags": json.dumps(tags, sort_keys=True) if tags else None,
    }


def _logged_model_tables(models: list[Json]) -> dict[str, pl.DataFrame]:
    infos = [m.get("info", {}) for m in models]
    rows = [
        # the search returns live models only, so every one it returns is active
        {**_pick(i, FIELDS["logged_models"]), "lifecycle_stage": "active"} for i in infos
    ]
    params = _kv(({"model_id": i.get("model_id"), **m.get("data", {})} for i, m in zip(infos, models)),
                 "model_id", "params")
    metrics = [
        {"model_id": i.get("model_id"), **_pick(x, FIELDS["logged_model_metrics"]), "value": _number(x.get("value"))}
        for i, m in zip(infos, models) for x in (m.get("data") or {}).get("metrics") or []
    ]
    return {
        "logged_models": _frame("logged_models", rows),
        "logged_model_params": _frame("logged_model_params", params),
        "logged_model_tags": _frame("logged_model_tags", _kv(infos, "model_id", "tags")),
        "logged_model_metrics": _frame("logged_model_metrics", metrics),
    }


def _registry_tables(registered: list[Json], versions: list[Json]) -> dict[str, pl.DataFrame]:
    """Registered models with their tags and aliases, and versions with their tags.

    The version search answers empty aliases: they come from the registered models. A
    registered model's empty description is left out of its answer (MLflow's to_proto tests
    truthiness), while the server stores the proto default "": read absent as "".
    """
    models = [{**_pick(r, FIELDS["registered_models"]), "description": r.get("description", "")}
              for r in registered]
    aliases = [{"name": r.get("name"), "alias": a.get("alias"), "version": a.get("version")}
               for r in registered for a in r.get("aliases") or []]
    version_tags = [{"name": v.get("name"), "version": v.get("version"), "key": t.get("key"), "value": t.get("value")}
                    for v in versions for t in v.get("tags") or []]
    return {
        "registered_models": _frame("registered_models", models),
        "registered_model_tags": _frame("registered_model_tags", _kv(registered, "name", "tags")),
        "model_versions": _frame("model_versions", [_pick(v, FIELDS["model_versions"]) for v in versions]),
        "model_version_tags": _frame("model_version_tags", version_tags),
        "aliases": _frame("aliases", aliases),
    }


def _model_input_candidates(raw: RawStore) -> list[str]:
    """Runs whose model inputs to read: every run, once the server holds a LoggedModel.

    Only runs/get returns a run's model inputs (MLflow 3.17's run search leaves them out; ~33 ms a
    run on a local server), and nothing else narrows the runs: log_inputs, evaluate or a metric
    can name any experiment's model from any run, and a run's times say nothing either (a store
    migrated or imported holds old runs and models made today). A server without live
    LoggedModels is not asked; inputs naming only deleted ones are then missed, as that server's
    deleted LoggedModels are.
    """
    if raw["logged_models"].height == 0:
        return []
    return sorted(raw["runs"]["run_uuid"].to_list())


# -- plumbing -------------------------------------------------------------------------------
def _parallel(fn: Callable[[T], R], items: Sequence[T], progress: Progress, step: str) -> list[R]:
    """fn over items on a few threads, results in the items' order, progress as they finish."""
    if not items:
        return []
    results: list[R] = []
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for done, result in enumerate(pool.map(fn, items), start=1):
            results.append(result)
            if done % 16 == 0 or done == len(items):
                progress(step, done, len(items))
    return results


def _session() -> requests.Session:
    """A session with MLflow's own credential and TLS variables, and retries on busy answers."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=RETRY, pool_maxsize=WORKERS * 2)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif user and password:
        session.auth = (user, password)
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        session.verify = False
    elif cert := os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        session.verify = cert
    return session


def _redact(uri: str) -> str:
    """The server URL without `user:password@`, fit for messages.

    >>> _redact("https://me:secret@mlflow.example.com/prefix")
    'https://mlflow.example.com/prefix'
    """
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reason(exc: BaseException) -> str:
    """The short cause of a requests failure, without its URL (which may carry a query).

    >>> _reason(OSError("... [Errno 111] Connection refused'))"))
    'connection refused'
    """
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    text = _one_line(str(exc))
    if m := re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text):
        return m.group(1).strip().lower()
    if m := re.search(r"\[SSL: [A-Z_]+\] ([^'\")(]+)", text):
        return m.group(1).strip()
    return type(exc).__name__
