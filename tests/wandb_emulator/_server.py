"""The W&B API emulator's HTTP server.

Each GraphQL request's document is parsed and validated against `schema.graphql` with
graphql-core, then executed by the read side's resolvers (`_queries`) or, for a mutation, the
write side's (`_uploads`): nothing matches on query text, so the sidecar's rewrites and the
client's fragments are handled like a server would. A document that does not validate (a field
a newer client asks for that the emulator lacks) is answered with GraphQL errors, and the
request body is printed to stderr (pytest shows it with the failing test) and kept in
`problems`. Beside `/graphql`: wandb-core's `file_stream` and telemetry, the PUTs of uploads,
and GETs of manifests, run files and artifact files.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import graphql

from ._queries import SCHEMA, Root
from ._state import ServerState
from ._uploads import Mutation, download, file_stream, put

FailMode = Literal["graphql", "http500"]
# the requests that are not GraphQL operations, by the name `fail` knows them by
FILE_STREAM, UPLOAD = "file_stream", "upload"


# -- the HTTP server -------------------------------------------------------------------------------------

@dataclass
class Request:
    path: str
    operation: str | None
    body: str


@dataclass
class WandbEmulator:
    """A W&B API emulator on 127.0.0.1: the real `wandb.Api()` client talks to it over HTTP.

    >>> with WandbEmulator(ServerState()).running() as emulator:  # doctest: +SKIP
    ...     api = wandb.Api(overrides={"base_url": emulator.url})

    Error modes, for tests: `fail(operation, "graphql")` answers that operation with a
    GraphQL `errors` array (HTTP 200, as W&B does), `fail(operation, "http500")` with HTTP
    500, both from its `after`+1-th request on (`file_stream` and `upload`, the PUTs, fail
    with HTTP 500 whatever the mode); `api_keys` (when set) are the only keys accepted, any
    other is refused (HTTP 401) at the first GraphQL or file_stream request.
    """

    state: ServerState
    api_keys: set[str] | None = None
    requests: list[Request] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    failures: dict[str, tuple[FailMode, int]] = field(default_factory=dict)
    url: str = ""
    # one request at a time changes or reads the state (wandb-core sends several at once)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail(self, operation: str, mode: FailMode = "graphql", *, after: int = 0) -> None:
        self.failures[operation] = (mode, after)

    def failing(self, operation: str | None) -> FailMode | None:
        """How this request of `operation` fails, if it does (it is already in `requests`)."""
        mode, after = self.failures.get(operation or "", (None, 0))
        if mode is None:
            return None
        seen = sum(r.operation == operation for r in self.requests)
        return mode if seen > after else None

    def operations(self) -> list[str]:
        return [r.operation or "" for r in self.requests if r.path == "/graphql"]

    @contextmanager
    def running(self) -> Iterator[WandbEmulator]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, name="wandb-emulator", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    # one GraphQL request: (status, body)
    def answer(self, body: bytes, key: str | None) -> tuple[int, dict[str, Any]]:
        try:
            payload = json.loads(body)
            document = graphql.parse(payload["query"])
        except (ValueError, KeyError, graphql.GraphQLError) as exc:
            self._problem(f"unreadable request ({exc})", body)
            return 400, {"errors": [{"message": f"bad request: {exc}"}]}
        ops = [d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode)]
        operation = payload.get("operationName") or (ops[0].name.value if len(ops) == 1 and ops[0].name else None)
        self.requests.append(Request("/graphql", operation, body.decode("utf-8", "replace")))
        if not self.accepts(key):
            # W&B refuses an unknown key with 401 before looking at the query
            return 401, {"errors": [{"message": "user is not logged in"}]}
        mode = self.failing(operation)
        if mode == "http500":
            return 500, {"errors": [{"message": "Internal Server Error"}]}
        if mode == "graphql":
            return 200, {"errors": [{"message": f"emulated failure of {operation}", "path": [operation]}],
                         "data": None}
        errors = graphql.validate(SCHEMA, document)
        if errors:
            self._problem("; ".join(e.message for e in errors), body)
            return 200, {"errors": [e.formatted for e in errors], "data": None}
        chosen = next(op for op in ops if operation is None or (op.name and op.name.value == operation))
        root = Mutation(self) if chosen.operation is graphql.OperationType.MUTATION else Root(self)
        result = graphql.execute(SCHEMA, document, root_value=root, operation_name=operation,
                                 variable_values=payload.get("variables") or {})
        if result.errors:  # type: ignore[union-attr]
            self._problem("; ".join(str(e) for e in result.errors), body)  # type: ignore[union-attr]
            return 200, {"errors": [e.formatted for e in result.errors], "data": result.data}  # type: ignore[union-attr]
        return 200, {"data": result.data}  # type: ignore[union-attr]

    def _problem(self, what: str, body: bytes) -> None:
        message = f"W&B API emulator: {what}\n  request body: {body.decode('utf-8', 'replace')}"
        self.problems.append(message)
        print(message, file=sys.stderr, flush=True)

    def accepts(self, key: str | None) -> bool:
        return self.api_keys is None or key in self.api_keys

    def stream(self, path: str, body: bytes, key: str | None) -> tuple[int, dict[str, Any]]:
        """A file_stream request: `/files/<entity>/<project>/<run>/file_stream`."""
        self.requests.append(Request(path, FILE_STREAM, body.decode("utf-8", "replace")))
        if not self.accepts(key):
            return 401, {"error": "user is not logged in"}
        if self.failing(FILE_STREAM):
            return 500, {"error": "Internal Server Error"}
        _, entity, project, run, _ = path.strip("/").split("/")
        try:
            return 200, file_stream(self, entity, project, run, json.loads(body))
        except ValueError as exc:
            self._problem(f"file_stream: {exc}", body)
            return 404, {"error": str(exc)}

    def upload(self, path: str, body: bytes) -> int:
        """A PUT to an upload URL (signed, as object stores' are: no API key)."""
        self.requests.append(Request(path, UPLOAD, ""))
        if self.failing(UPLOAD):
            return 500
        status = put(self, path, body)
        if status != 200:
            self._problem(f"PUT {path}: {status}", b"")
        return status

    def get(self, path: str) -> bytes | None:
        """Files the GraphQL answers point at: manifests, run files and artifact files."""
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "manifests":
            number = int(parts[1].removesuffix(".json"))
            return json.dumps(self.state.artifacts[number - 1].manifest).encode()
        return download(self, path)


def _handler(emulator: WandbEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?", 1)[0]
            key = _api_key(self.headers.get("Authorization"))
            with emulator.lock:
                if path.startswith("/sdk/otel/"):  # wandb-core's telemetry
                    emulator.requests.append(Request(path, None, ""))
                    self._send(200, b"", "application/x-protobuf")
                    return
                if path == "/graphql":
                    status, answer = emulator.answer(body, key)
                elif path.startswith("/files/") and path.endswith("/file_stream") and path.count("/") == 5:
                    status, answer = emulator.stream(path, body, key)
                else:
                    emulator._problem(f"POST {path}: not an endpoint the emulator knows", body)
                    status, answer = 404, {"error": "not found"}
            self._send(status, json.dumps(answer).encode(), "application/json")

        def do_PUT(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with emulator.lock:
                status = emulator.upload(self.path.split("?", 1)[0], body)
            self._send(status, b"", "text/plain")

        def do_GET(self) -> None:  # noqa: N802
            with emulator.lock:
                emulator.requests.append(Request(self.path, None, ""))
                data = emulator.get(self.path.split("?", 1)[0])
            if data is None:
                self._send(404, b"not found", "text/plain")
            else:
                self._send(200, data, "application/octet-stream")

        def _send(self, status: int, data: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


def _api_key(header: str | None) -> str | None:
    """The key from `Basic base64(api:<key>)`."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, _, key = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return key if user == "api" else None
