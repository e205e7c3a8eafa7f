"""The `braid` command line, run as a user runs it: the installed console script in a subprocess."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import SHARED_STORES, MlflowStore

TRAIN_V3 = "mlflow:run/304d0953b4414212a0e72e7dedd27627"
VERSION_V3 = "mlflow:model_version/legacy-model/1"


def one_line_error(proc, code: int) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("braid: error: "), proc.stderr
    return proc.stderr


@pytest.fixture
def synced(tmp_path: Path, braid_cli) -> Path:  # type: ignore[no-untyped-def]
    shutil.copy(SHARED_STORES["3.17.2"], tmp_path / "mlflow.db")
    init = braid_cli("init")
    assert init.returncode == 0, init.stderr
    assert 'uri = "sqlite:///mlflow.db"' in (tmp_path / "braid.toml").read_text()
    proc = braid_cli("sync")
    assert proc.returncode == 0, proc.stderr
    assert "generation 1" in proc.stdout
    return tmp_path


def test_upstream_of_a_registry_version(synced: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    proc = braid_cli("upstream", VERSION_V3, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    by_id = {r["id"]: r for r in rows}
    assert by_id["mlflow:model/m-b8b93b125ebb414a93db061097165475"]["depth"] == 1
    assert by_id[TRAIN_V3]["depth"] == 2 and by_id[TRAIN_V3]["via_kind"] == "output"
    assert by_id["git:6f9ef47785f89edf5e79889a88d9379722c3711d"]["depth"] == 3
    assert by_id["mlflow:dataset/train@c167484d"]["kind"] == "dataset"

    only = json.loads(braid_cli("upstream", VERSION_V3, "--kinds", "dataset,code", "--format", "json").stdout)
    assert {r["kind"] for r in only} == {"dataset", "code"}
    shallow = json.loads(braid_cli("upstream", VERSION_V3, "--depth", "1", "--format", "json").stdout)
    assert [r["id"] for r in shallow] == ["mlflow:model/m-b8b93b125ebb414a93db061097165475"]
    before = json.loads(braid_cli("upstream", VERSION_V3, "--as-of", "2020-01-01", "--format", "json").stdout)
    assert before == []


def test_downstream_csv_and_table(synced: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    proc = braid_cli("downstream", "mlflow:dataset/train@c167484d", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.strip().splitlines()
    assert header.startswith("id,kind,tool,source,")
    assert any(r.startswith(VERSION_V3 + ",model_version,") for r in rows)
    table = braid_cli("downstream", "mlflow:dataset/train@c167484d", "--kinds", "model_version")
    assert VERSION_V3 in table.stdout and "depth" in table.stdout


def test_show_a_run(synced: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    proc = braid_cli("show", TRAIN_V3, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    fields = {r["field"]: r["value"] for r in shown["node"]}
    assert fields["name"] == "train" and fields["status"] == "FINISHED"
    assert {"key": "lr", "value": "0.01"} in shown["params"]
    loss = next(m for m in shown["metrics"] if m["key"] == "loss")
    assert loss["points"] == 10 and loss["last"] == pytest.approx(0.1)
    assert any(link["kind"] == "parent_of" and link["direction"] == "downstream" for link in shown["links"])


def test_unknown_node_suggests_close_ids(synced: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    err = one_line_error(braid_cli("upstream", "mlflow:model_version/legacy-modle/1"), 2)
    assert "no node 'mlflow:model_version/legacy-modle/1'" in err
    assert "did you mean: mlflow:model_version/legacy-model/1" in err
    err = one_line_error(braid_cli("upstream", "mlfow:model_version/legacy-model/1"), 2)
    assert "no source named 'mlfow' (the catalog has: mlflow)" in err
    assert "not a node id" in one_line_error(braid_cli("show", "legacy-model"), 2)
    # a commit may be named in any case
    upper = braid_cli("downstream", "git:6F9EF47785F89EDF5E79889A88D9379722C3711D", "--format", "json")
    assert upper.returncode == 0 and TRAIN_V3 in upper.stdout


def test_bad_flags_are_usage_errors(synced: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    assert braid_cli("upstream", VERSION_V3, "--as-of", "yesterday").returncode == 2
    assert braid_cli("upstream", VERSION_V3, "--stop-at", "colour=red").returncode == 2
    assert braid_cli("upstream", VERSION_V3, "--format", "xml").returncode == 2


def test_corrupt_manifest_is_one_line(synced: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    (synced / ".braid" / "manifest.json").write_text('{"format": "braid-catalog", "format_ver')
    err = one_line_error(braid_cli("show", TRAIN_V3), 1)
    assert "manifest.json is damaged" in err


def test_sync_errors_are_one_line_and_keep_the_catalog(synced: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    manifest = (synced / ".braid" / "manifest.json").read_bytes()
    with sqlite3.connect(synced / "mlflow.db") as con:
        con.execute("UPDATE alembic_version SET version_num = '0123456789ab'")
    err = one_line_error(braid_cli("sync"), 1)
    assert "unknown MLflow schema version '0123456789ab'" in err
    assert (synced / ".braid" / "manifest.json").read_bytes() == manifest

    (synced / "braid.toml").write_text('[[sources]]\ntool = "mlflow"\nuri = "http://127.0.0.1:9/"\n')
    err = one_line_error(braid_cli("sync"), 1)
    assert "127.0.0.1:9" in err
    assert (synced / ".braid" / "manifest.json").read_bytes() == manifest


def test_config_errors(tmp_path: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    toml = tmp_path / "braid.toml"
    toml.write_text('[[sources]]\ntool = "mlflow"\nurl = "sqlite:///x.db"\n')
    err = one_line_error(braid_cli("sync"), 2)
    assert "unknown option 'url'" in err and "did you mean 'uri'" in err
    toml.write_text('[[sources]]\ntool = "mlflow"\nuri = "postgresql://me:hunter2@db/mlflow"\n')
    err = one_line_error(braid_cli("sync"), 2)
    assert "hunter2" not in err and "password" in err
    toml.write_text('[[sources]\ntool = "mlflow"\n')
    assert "line 1" in one_line_error(braid_cli("sync"), 2)
    assert "no such file" in one_line_error(braid_cli("--config", "missing.toml", "sync"), 2)


def test_init_refuses_to_overwrite(tmp_path: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "braid.toml").write_text("# mine\n")
    assert "--force" in one_line_error(braid_cli("init"), 2)
    assert (tmp_path / "braid.toml").read_text() == "# mine\n"


def test_help_explains(braid_cli) -> None:  # type: ignore[no-untyped-def]
    top = braid_cli("--help")
    for command in ("init", "sync", "show", "upstream", "downstream", "paths", "demo"):
        assert command in top.stdout
    up = braid_cli("upstream", "--help").stdout
    for flag in ("--depth", "--kinds", "--tools", "--stop-at", "--as-of", "--no-same-as", "--format"):
        assert flag in up


def test_sync_a_store_written_by_the_client(sqlite_store: MlflowStore, tmp_path: Path, braid_cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "braid.toml").write_text(f'[[sources]]\ntool = "mlflow"\nuri = "{sqlite_store.uri}"\n')
    assert braid_cli("sync").returncode == 0
    f = sqlite_store.facts
    # the two logged copies of train.csv are the same bytes: a same_as link with its evidence
    down = json.loads(braid_cli("downstream", f"mlflow:artifact/{f['train_run']}/data/train.csv",
                                "--format", "json").stdout)
    copy = next(r for r in down if r["id"] == f"mlflow:artifact/{f['child_run']}/copy/train.csv")
    assert copy["via_kind"] == "same_as" and copy["depth"] == 0
    paths = json.loads(braid_cli("paths", f"git:{f['git_commit']}", "mlflow:model_version/churn/2",
                                 "--format", "json").stdout)
    assert paths, "no path from the commit to churn v2"
    first = [r for r in paths if r["path"] == 0]
    assert first[0]["id"] == f"git:{f['git_commit']}" and first[-1]["id"] == "mlflow:model_version/churn/2"


def test_parquet_output_pipes(synced: Path) -> None:
    import io
    import subprocess
    import sys

    import polars as pl

    exe = Path(sys.executable).parent / "braid"
    proc = subprocess.run([str(exe), "upstream", VERSION_V3, "--format", "parquet"], cwd=synced, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    frame = pl.read_parquet(io.BytesIO(proc.stdout))
    assert "mlflow:dataset/train@c167484d" in frame["id"].to_list()
    assert {"depth", "via_src", "via_kind", "attrs"} <= set(frame.columns)


def test_init_keeps_a_tracking_uri_with_a_password_in_the_environment(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "braid"
    env = {**os.environ, "MLFLOW_TRACKING_URI": "postgresql://ml:s3cret@127.0.0.1:1/mlflow"}
    proc = subprocess.run([str(exe), "init"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    toml = (tmp_path / "braid.toml").read_text()
    assert "s3cret" not in toml + proc.stdout and 'tool = "mlflow"' in toml
    # the sync takes the URI from the environment again, and never prints the password
    sync = subprocess.run([str(exe), "sync"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert sync.returncode == 1 and "s3cret" not in sync.stderr and "127.0.0.1:1" in sync.stderr
