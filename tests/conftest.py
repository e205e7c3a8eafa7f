"""Fixtures that build real tool data once per session.

MLflow stores are written by the real mlflow client (tests/fixtures/write_mlflow_store.py, run
in its own process inside a real git repository) into sqlite, PostgreSQL and MariaDB.
PostgreSQL and MariaDB are this machine's servers; with BRAID_REQUIRE_SERVICES=1 (CI) a missing
server fails the tests that need it instead of skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from braid.unify.source import SourceSpec

HERE = Path(__file__).parent
DATA = HERE / "data"
WRITER = HERE / "fixtures" / "write_mlflow_store.py"
SHARED_STORES = {v: DATA / "mlflow-stores" / f"mlflow-{v}.db" for v in ("2.9.2", "2.16.2", "2.22.1", "3.17.2")}
GIT_ENV = {"GIT_AUTHOR_NAME": "braid tests", "GIT_AUTHOR_EMAIL": "tests@example.org",
           "GIT_COMMITTER_NAME": "braid tests", "GIT_COMMITTER_EMAIL": "tests@example.org"}
PG_ADMIN = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")
MYSQL_ADMIN = dict(host="127.0.0.1", port=3306, user="root", password="", database="test")


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    """Under `--dist loadgroup`, the tests of a module that use one of its module-scoped fixtures
    (servers, stores, workspaces) and have no xdist_group of their own are grouped by their file,
    so those fixtures are built on one worker only; the module's other tests go wherever a worker
    is free.

    Each test of a group must then carry it in its node id (pytest-xdist appends `@group`): a
    pytest that ignores the rename splits every group and silently doubles the suite's time, so
    it is refused here."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _uses_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    yield
    if getattr(config.option, "loadgroup", False):
        split = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if split:
            raise pytest.UsageError(f"--dist loadgroup did not group {split[0]} (and {len(split) - 1} more): this "
                                    f"pytest and pytest-xdist disagree on node ids; install the pytest pyproject.toml "
                                    f"pins")


def _uses_a_module_fixture(item: pytest.Item) -> bool:
    """A module-scoped fixture, or a session-scoped one the test's own module defines."""
    info = getattr(item, "_fixtureinfo", None)  # pytest's own record of the test's fixture closure
    if info is None:  # a doctest
        return False
    module = getattr(getattr(item, "module", None), "__name__", None)
    return any(defs and (defs[-1].scope == "module" or
                         (defs[-1].scope == "session" and getattr(defs[-1].func, "__module__", None) == module))
               for defs in info.name2fixturedefs.values())


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **GIT_ENV, **(env or {})},
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


@dataclass
class MlflowStore:
    """A store written by the real client, with the facts the writer recorded."""

    uri: str
    workdir: Path
    facts: dict[str, Any]


def write_store(uri: str, workdir: Path) -> MlflowStore:
    """Run the writer inside a fresh git repository, so mlflow records a real commit."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(WRITER, workdir / "train.py")
    run(["git", "init", "-q", "-b", "main"], workdir)
    run(["git", "add", "train.py"], workdir)
    run(["git", "commit", "-q", "-m", "training script"], workdir)
    out = run([sys.executable, "train.py", uri, str(workdir / "artifacts")], workdir,
              env={"MLFLOW_TRACKING_URI": "", "PYTHONWARNINGS": "ignore"})
    return MlflowStore(uri, workdir, json.loads(out.strip().splitlines()[-1]))


def service_unavailable(name: str, exc: Exception) -> None:
    if os.environ.get("BRAID_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{name} is required in CI but unreachable: {exc}")
    pytest.skip(f"{name} not reachable: {exc}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    import requests

    try:
        # the auth app answers /health without credentials too
        return requests.get(f"{url}/health", timeout=1).ok
    except requests.ConnectionError:
        return False


@contextmanager
def mlflow_server(
    backend_uri: str, workdir: Path, *, admin_password: str | None = None, timeout: float = 90.0,
    serve_artifacts: bool = False,
) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 over `backend_uri`; yields its URL once /health answers.

    One worker and no job execution make it start in seconds; artifacts are not proxied, so
    artifact URIs stay the local paths the client wrote, unless `serve_artifacts`: then the server
    proxies them (`mlflow-artifacts:/` URIs, bytes under `<workdir>/served`). With `admin_password`, it runs
    MLflow's own basic-auth app (user `admin`), which refuses requests without credentials.
    """
    port = free_port()
    url, log = f"http://127.0.0.1:{port}", workdir / f"server-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    auth: list[str] = []
    if admin_password is not None:
        config = workdir / f"basic_auth-{port}.ini"
        config.write_text("[mlflow]\ndefault_permission = READ\n"
                          f"database_uri = sqlite:///{workdir / f'auth-{port}.db'}\n"
                          f"admin_username = admin\nadmin_password = {admin_password}\n"
                          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_FLASK_SERVER_SECRET_KEY=uuid.uuid4().hex)
        auth = ["--app-name", "basic-auth"]
    with log.open("wb") as out:
        # its own process group: `mlflow server` runs uvicorn as a child, stopped with it
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", backend_uri, *auth,
             *(["--artifacts-destination", str(workdir / "served")] if serve_artifacts else
               ["--default-artifact-root", str(workdir / "artifacts"), "--no-serve-artifacts"])],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not answer in {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> MlflowStore:
    """Written once per test run and shared by the workers: tests copy it before changing it."""
    work = shared_root(tmp_path_factory) / "mlflow-sqlite"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    built_once(tmp_path_factory, work,
               lambda folder: (folder / "facts.json").write_text(json.dumps(write_store(uri, folder).facts)))
    return MlflowStore(uri, work, json.loads((work / "facts.json").read_text()))


@dataclass(frozen=True)
class Server:
    """One of this machine's database servers: how to reach it as admin and as mlflow."""

    name: str
    connect: Callable[[], Any]  # an autocommit admin connection
    uri: str  # SQLAlchemy URL for a database called {db}
    drop: str  # DROP DATABASE statement for {db}


def _postgres() -> Any:
    import psycopg2

    con = psycopg2.connect(**PG_ADMIN, connect_timeout=5)
    con.autocommit = True
    return con


def _mariadb() -> Any:
    import pymysql

    return pymysql.connect(**MYSQL_ADMIN, connect_timeout=5, autocommit=True)


SERVERS = {
    "postgres": Server("PostgreSQL", _postgres, "postgresql+psycopg2://postgres@127.0.0.1:5432/{db}",
                       "DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    "mariadb": Server("MariaDB", _mariadb, "mysql+pymysql://root@127.0.0.1:3306/{db}", "DROP DATABASE IF EXISTS {db}"),
}


def database_store(server: Server, workdir: Path) -> Iterator[MlflowStore]:
    """A fresh database on `server`, filled by the real client, dropped afterwards."""
    db = f"braid_{uuid.uuid4().hex[:12]}"
    try:
        admin = server.connect()
    except Exception as exc:  # each driver has its own OperationalError
        service_unavailable(server.name, exc)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
    try:
        yield write_store(server.uri.format(db=db), workdir)
    finally:
        with admin.cursor() as cur:
            cur.execute(server.drop.format(db=db))
        admin.close()


@pytest.fixture(scope="session")
def postgres_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowStore]:
    yield from database_store(SERVERS["postgres"], tmp_path_factory.mktemp("mlflow-pg"))


@pytest.fixture(scope="session")
def mariadb_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowStore]:
    yield from database_store(SERVERS["mariadb"], tmp_path_factory.mktemp("mlflow-maria"))


@dataclass(frozen=True)
class DvcRepos:
    """DVC repositories built by the real git, dvc, gto and dvclive, and the facts they recorded."""

    root: Path
    repo: Path
    source_repo: Path
    facts: dict[str, Any]


@pytest.fixture(scope="session")
def dvc_repos(tmp_path_factory: pytest.TempPathFactory) -> DvcRepos:
    """Built once per test run (~30 s) and shared by the workers; tests copy a repo before changing it."""
    from tests.fixtures.make_dvc_repo import make_dvc_repos

    root = built_once(tmp_path_factory, shared_root(tmp_path_factory) / "dvc", make_dvc_repos)
    return DvcRepos(root, root / "repo", root / "source-repo", json.loads((root / "facts.json").read_text()))


def synced_demo(folder: Path) -> Path:
    """`braid demo`'s workspace, written by the real git, dvc, mlflow and wandb, and synced."""
    from braid.unify.config import load_config
    from braid.unify.demo import build_workspace
    from braid.unify.sync import sync

    build_workspace(folder)
    report = sync(load_config(folder / "braid.toml"))
    assert not report.failed, [str(r.error) for r in report.failed]
    return folder


def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder all xdist workers of this test run share: the run's base temporary folder."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory: pytest.TempPathFactory, folder: Path, build: Callable[[Path], object]) -> Path:
    """`build(folder)` once per test run, by whichever worker asks first; the others wait for it.
    For data the tests only read, which xdist groups on different workers both need."""
    from filelock import FileLock

    root = shared_root(tmp_path_factory)
    done = root / f"{folder.name}.built"
    with FileLock(root / f"{folder.name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            done.touch()
    return folder


# git commits of the shared demo are made at a fixed date, so their shas repeat (TUI screenshots)
DEMO_DATE = "2026-01-15T09:30:00+00:00"


@dataclass(frozen=True)
class Demo:
    """The workspace the real `braid demo` command built and synced, and what it printed."""

    folder: Path
    answer: str


def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Outside the temporary tree, at a path of one length on every machine (TUI screenshots show
    it, digits masked), named after this test run; removed when the run ends."""
    run = zlib.crc32(str(shared_root(tmp_path_factory)).encode()) % 10**8
    return Path("/tmp") / f"braid-tui-{run:08d}"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """`braid demo demo`, run once per test run (~35 s) for every test that only reads the demo;
    a test that changes its files builds its own with `synced_demo`."""
    root = demo_root(tmp_path_factory)

    def build(folder: Path) -> None:
        folder.mkdir(parents=True)
        proc = subprocess.run([str(Path(sys.executable).parent / "braid"), "demo", "demo"], cwd=folder,
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "MLFLOW_TRACKING_URI": "", "GIT_AUTHOR_DATE": DEMO_DATE,
                                   "GIT_COMMITTER_DATE": DEMO_DATE})
        assert proc.returncode == 0, proc.stderr[-3000:]
        (folder / "answer.txt").write_text(proc.stdout)

    built_once(tmp_path_factory, root, build)
    return Demo(root / "demo", (root / "answer.txt").read_text())


@pytest.fixture(scope="session")
def demo_workspace(demo_run: Demo) -> Path:
    """The shared demo's folder, for tests that only read it."""
    return demo_run.folder


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller, once every worker has finished
        factory = session.config._tmp_path_factory  # type: ignore[attr-defined]
        shutil.rmtree(demo_root(factory), ignore_errors=True)


@pytest.fixture
def braid_cli(tmp_path: Path):
    """Run the installed `braid` console script; returns the CompletedProcess."""
    exe = Path(sys.executable).parent / "braid"

    def call(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args], cwd=cwd or tmp_path, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": ""})

    return call


def linked_source(tmp_path: Path) -> tuple[SourceSpec, Any, Path]:
    """An MLflow sqlite source whose one run holds `ok.txt` and `leak.txt`, a symlink to a secret
    file outside the run's artifact folder: (the source, the run, the secret)."""
    from mlflow import MlflowClient

    from braid.unify.source import SourceSpec

    secret = tmp_path / "secret.txt"
    secret.write_text("not for the target")
    uri = f"sqlite:///{tmp_path / 'src.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("links", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp, run_name="linked")
    client.log_text(run.info.run_id, "fine", "ok.txt")
    root = Path(run.info.artifact_uri.removeprefix("file://"))
    (root / "leak.txt").symlink_to(secret)
    client.set_terminated(run.info.run_id, "FINISHED")
    return SourceSpec("old", "mlflow", {"uri": uri}, base_dir=tmp_path), run, secret
