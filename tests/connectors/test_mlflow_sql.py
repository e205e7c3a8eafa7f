"""The MLflow connector's direct SQL path, on stores written by real mlflow releases and servers."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from braid.connectors.mlflow import read_source
from braid.unify.errors import SchemaVersionError, SourceAuthError, SourceError, SourceUnreachable
from braid.unify.source import SourceBatch, SourceSpec, no_progress
from tests.conftest import SHARED_STORES, MlflowStore, mlflow_server

# facts recorded by ../data/mlflow-stores/make_store.py (see its README)
SHARED_RUNS = {
    "2.9.2": ("e9b1579cecae431ca5fb372e288e4b79", "2852b1c7a2bb49ef904b99bd1d0836b1", "acf3f17fdcc7"),
    "2.16.2": ("1a7a51e5fa3147caaef76bde3c5b19aa", "003c1e94fc384d1db8f53a8e29c25186", "4465047574b1"),
    "2.22.1": ("dd50466c4bb2457fae35e4c2c5a5f865", "8b60e3deaf8d49f9b4b92672e88dc1f6", "0584bdc529eb"),
    "3.17.2": ("304d0953b4414212a0e72e7dedd27627", "eb93b8909da54ae5839342cb7bba2e4f", "dc11669786a5"),
}
SHARED_COMMIT = "6f9ef47785f89edf5e79889a88d9379722c3711d"


def read(uri: str, name: str = "mlflow", base: Path = Path(".")) -> SourceBatch:
    return read_source(SourceSpec(name, "mlflow", {"uri": uri}, base), previous=None, progress=no_progress)


def one(frame: pl.DataFrame, **where: object) -> dict[str, object]:
    rows = frame.filter(**where)
    assert rows.height == 1, (where, rows)
    return rows.row(0, named=True)


@pytest.mark.parametrize("release", list(SHARED_STORES))
def test_reads_every_mlflow_release_schema(release: str) -> None:
    train, child, revision = SHARED_RUNS[release]
    path = SHARED_STORES[release]
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    b = read(f"sqlite:///{path}").tables
    run = f"mlflow:run/{train}"

    assert b["params"].filter(run_id=run).sort("key").select("key", "value").rows() == [("epochs", "10"), ("lr", "0.01")]
    assert {("team", "churn"), ("regulatory", "gdpr")} <= set(b["tags"].filter(node_id=run).select("key", "value").rows())
    loss = b["metrics"].filter(run_id=run, key="loss").sort("step")
    assert loss["step"].to_list() == list(range(10))
    assert loss["value"].to_list() == pytest.approx([1 / (s + 1) for s in range(10)])
    assert [t.timestamp() * 1000 for t in loss["timestamp"]] == [1_700_000_000_000 + s * 1000 for s in range(10)]

    edges = b["edges"]
    assert one(edges, kind="parent_of")["src"] == run and one(edges, kind="parent_of")["dst"] == f"mlflow:run/{child}"
    dataset_edge = one(edges, kind="input", dst=run)
    assert dataset_edge["src"].startswith("mlflow:dataset/train@")
    assert json.loads(dataset_edge["attrs"]) == {"mlflow.data.context": "training"}
    assert one(b["nodes"], id=dataset_edge["src"])["uri"] == "train.csv"

    version = "mlflow:model_version/legacy-model/1"
    reg = one(b["registry"], model_version_id=version)
    assert reg["aliases"] == ["champion"] and reg["stage"] == "Staging" and reg["run_id"] == run
    registered = one(edges, kind="registered_as", dst=version)
    assert registered["src"] == reg["model_id"]
    assert one(edges, kind="output", dst=reg["model_id"])["src"] == run

    code = edges.filter(kind="code", dst=run)
    if release == "2.9.2":  # this release recorded no git tags
        assert code.is_empty()
    else:
        assert code["src"].to_list() == [f"git:{SHARED_COMMIT}"]
        assert one(b["runs"], id=run)["git_commit"] == SHARED_COMMIT
    # the artifact store is gone (as when it is unreachable): no artifact nodes, no failure
    assert b["nodes"].filter(kind="artifact").is_empty()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "the reader wrote into the store"


def test_mlflow3_logged_model_is_the_registered_model() -> None:
    b = read(f"sqlite:///{SHARED_STORES['3.17.2']}").tables
    model = one(b["nodes"], kind="model")
    assert model["id"] == "mlflow:model/m-b8b93b125ebb414a93db061097165475"
    assert model["status"] == "READY"
    assert json.loads(model["attrs"])["params"] == [{"key": "epochs", "value": "10"}, {"key": "lr", "value": "0.01"}]


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "future.db"
    shutil.copy(SHARED_STORES["3.17.2"], store)
    with sqlite3.connect(store) as con:
        con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    with pytest.raises(SchemaVersionError) as err:
        read(f"sqlite:///{store}", name="prod")
    assert "'ffffffffffff'" in str(err.value) and "source 'prod'" in str(err.value)
    assert "REST" in (err.value.hint or "")


def test_not_a_store_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceUnreachable, match="no sqlite file"):
        read(f"sqlite:///{tmp_path / 'nope.db'}")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(SourceError, match="not a readable sqlite database"):
        read(f"sqlite:///{junk}")
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(SourceError, match="is not an MLflow store"):
        read(f"sqlite:///{empty}")


def check_fixture_graph(tables: dict[str, pl.DataFrame], store: MlflowStore) -> None:
    """Everything the writer recorded is in the graph, whichever database held it."""
    f, t = store.facts, tables
    train, child, finetune = (f"mlflow:run/{f[k]}" for k in ("train_run", "child_run", "finetune_run"))
    m1, m2 = f"mlflow:model/{f['model_1']}", f"mlflow:model/{f['model_2']}"
    edges = set(t["edges"].select("src", "dst", "kind").rows())
    assert {(train, child, "parent_of"), (train, m1, "output"), (finetune, m2, "output"), (m1, finetune, "input"),
            (m1, "mlflow:model_version/churn/1", "registered_as"),
            (m2, "mlflow:model_version/churn/2", "registered_as"),
            (f"git:{f['git_commit']}", train, "code"), (f"git:{f['git_commit']}", finetune, "code")} <= edges

    unstable = one(t["metrics"], run_id=train, key="unstable")
    assert math.isnan(unstable["value"])
    acc = t["metrics"].filter(run_id=finetune, key="acc").sort("step")
    assert acc["step"].to_list() == list(range(300))
    assert acc["value"].to_list() == pytest.approx([s / 300 for s in range(300)])

    reg = t["registry"].sort("version")
    assert reg["aliases"].to_list() == [[], ["champion"]]
    assert reg["model_id"].to_list() == [m1, m2]
    assert ("mlflow:model_version/churn/2", "validated", "true") in t["tags"].select("node_id", "key", "value").rows()

    artifacts = t["nodes"].filter(kind="artifact").sort("id")
    assert artifacts["id"].to_list() == sorted([f"mlflow:artifact/{f['child_run']}/copy/train.csv",
                                                f"mlflow:artifact/{f['train_run']}/data/train.csv"])
    assert artifacts["digest"].to_list() == [f"md5:{f['train_md5']}"] * 2
    assert artifacts["size"].to_list() == [f["train_size"]] * 2
    files = json.loads(one(t["nodes"], id=m1)["attrs"])["files"]
    assert "MLmodel" in {x["path"] for x in files} and all(x["md5"] for x in files)


def test_sqlite_store_written_by_the_client(sqlite_store: MlflowStore) -> None:
    check_fixture_graph(read(sqlite_store.uri).tables, sqlite_store)


# one xdist worker builds the PostgreSQL and MariaDB stores, for all the tests that use them
DATABASES = pytest.mark.xdist_group("databases")


@DATABASES
def test_postgresql_store(postgres_store: MlflowStore) -> None:
    check_fixture_graph(read(postgres_store.uri).tables, postgres_store)


@DATABASES
def test_mariadb_store(mariadb_store: MlflowStore) -> None:
    check_fixture_graph(read(mariadb_store.uri).tables, mariadb_store)


@DATABASES
def test_the_three_databases_give_the_same_shape(
    sqlite_store: MlflowStore, postgres_store: MlflowStore, mariadb_store: MlflowStore
) -> None:
    """Ids differ per store (and each was written in its own git repo); with ids mapped to kind
    and name, the graphs are equal."""

    def shape(store: MlflowStore) -> list[tuple[str, str, str]]:
        b = read(store.uri).tables
        label = pl.when(pl.col("kind") == "code").then(pl.lit("code")).otherwise(
            pl.concat_str("kind", "name", separator=":"))
        names = dict(b["nodes"].select("id", label).rows())
        return sorted((names.get(s, s), names.get(d, d), k) for s, d, k in b["edges"].select("src", "dst", "kind").rows())

    assert shape(sqlite_store) == shape(postgres_store) == shape(mariadb_store)


@DATABASES
def test_wrong_mariadb_credentials_are_one_clear_error(mariadb_store: MlflowStore) -> None:
    uri = mariadb_store.uri.replace("root@", "root:wrong-password@")
    with pytest.raises(SourceAuthError) as err:
        read(uri)
    assert "wrong-password" not in str(err.value) and "***" in str(err.value)
    assert "\n" not in str(err.value)


def test_unreachable_database() -> None:
    with pytest.raises(SourceUnreachable, match="cannot connect to postgresql://postgres@127.0.0.1:1/x"):
        read("postgresql://postgres@127.0.0.1:1/x")


@DATABASES
@pytest.mark.parametrize("which", ["postgres_store", "mariadb_store"])
def test_database_store_through_rest_and_sql(which: str, request: pytest.FixtureRequest) -> None:
    """The same PostgreSQL or MariaDB store, read directly and through an `mlflow server` on it."""
    store: MlflowStore = request.getfixturevalue(which)
    with mlflow_server(store.uri, store.workdir) as url:
        through_rest = read(url, base=store.workdir).tables
    through_sql = read(store.uri, base=store.workdir).tables
    for table, frame in through_sql.items():
        assert_frame_equal(through_rest[table], frame, check_exact=True), table
    check_fixture_graph(through_rest, store)
