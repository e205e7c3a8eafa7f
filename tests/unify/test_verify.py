"""`braid verify`: the bytes behind a lineage chain against what each tool recorded.

The workspace is the demo's (git + a DVC pipeline run by the real dvc + MLflow runs logged by the
real mlflow client), built and synced once for this module; each test alters files after the
sync and puts them back. What a test expects comes from the tools' own records: the md5s in
dvc.lock, and for MLflow (which stores no hash) `md5sum` of the artifact's bytes before they
were altered. "The bytes behind the chain" are the DVC cache object (the content-addressed copy
every version of a path is restored from) and the MLflow artifact file; a workspace copy is
checked too, as a checkout of the version HEAD names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from braid.unify import open_catalog
from braid.unify.catalog import Catalog
from braid.unify.config import load_config
from braid.unify.export._verify import hash_file
from braid.unify.sync import sync
from tests.conftest import synced_demo

BRAID = Path(sys.executable).parent / "braid"
DVC2 = Path(__file__).parents[1] / "data" / "dvc-repos"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synced_demo(tmp_path_factory.mktemp("verify") / "demo")  # its files get altered


@pytest.fixture(scope="module")
def cat(demo: Path) -> Catalog:
    return open_catalog(demo / ".braid")


def verify(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([str(BRAID), "verify", "--format", "json", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": "", **(env or {})})
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def md5sum(path: Path) -> str:
    out = subprocess.run(["md5sum", str(path)], capture_output=True, text=True, check=True).stdout
    return out.split()[0]


def lock_outs(demo: Path) -> dict[str, str]:
    """path -> md5 of every dep and out dvc.lock and the .dvc files record."""
    found = {}
    for stage in yaml.safe_load((demo / "dvc.lock").read_text())["stages"].values():
        for entry in [*stage.get("deps", []), *stage.get("outs", [])]:
            found[entry["path"]] = entry["md5"]
    for dvcfile in (f for f in demo.rglob("*.dvc") if f.is_file() and ".dvc" not in f.parent.parts):
        for out in yaml.safe_load(dvcfile.read_text())["outs"]:
            found[str((dvcfile.parent / out["path"]).relative_to(demo))] = out["md5"]
    return found


@contextmanager
def altered(path: Path, data: bytes) -> Iterator[None]:
    """Replace a file's bytes (DVC keeps its cache read-only), and put them back afterwards."""
    original, mode = path.read_bytes(), path.stat().st_mode
    path.chmod(0o644)
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(original)
        path.chmod(mode)


def cache_object(demo: Path, md5: str) -> Path:
    return demo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def test_an_untouched_workspace_verifies(demo: Path, cat: Catalog) -> None:
    code, rows, _ = verify(demo)
    assert code == 0
    assert [r for r in rows if r["status"] == "mismatched"] == []
    verified = {(r["node"], r["location"]) for r in rows if r["status"] == "verified"}
    # every file DVC cached, by the md5 dvc.lock records, in the cache and in the workspace
    nodes = cat.nodes.filter(tool="dvc").with_columns(path=pl.col("attrs").str.json_path_match("$.path"),
                                                      md5=pl.col("attrs").str.json_path_match("$.md5"))
    outs = lock_outs(demo)
    for path, md5 in outs.items():
        node = nodes.filter(path=path, md5=md5)["id"]
        assert node.len() == 1, path
        assert (node[0], "workspace") in verified
        if cache_object(demo, md5).exists():
            assert (node[0], "dvc cache") in verified
    # every MLflow artifact file, and every file of every logged model
    for nid in cat.nodes.filter(tool="mlflow", kind="artifact")["id"]:
        assert (nid, "local file") in verified
    for nid in cat.nodes.filter(tool="mlflow", kind="model")["id"]:
        assert (nid, "mlflow model") in verified
    unreachable = [r for r in rows if r["status"] == "unreachable"]
    assert all(r["note"] for r in unreachable)
    assert {r["node"] for r in unreachable if r["tool"] == "mlflow"} == \
        set(cat.nodes.filter(tool="mlflow", kind="dataset")["id"])  # MLflow's digest hashes sampled rows


def test_an_altered_dvc_object_and_mlflow_artifact_are_found_and_nothing_else(demo: Path, cat: Catalog) -> None:
    raw_md5 = lock_outs(demo)["data/raw.csv"]
    raw_node = f"dvc:dataset/data/raw.csv@{raw_md5}"
    trial = cat.table("runs").filter(name="trial-1")["id"][0].removeprefix("mlflow:run/")
    artifact_node = f"mlflow:artifact/{trial}/data/train.csv"
    artifact = Path(cat.node(artifact_node)["uri"])
    before = md5sum(artifact)
    obj = cache_object(demo, raw_md5)
    with altered(obj, obj.read_bytes().replace(b"customer_id", b"customer_ID")), \
            altered(artifact, artifact.read_bytes() + b"999,1,1.5,1\n"):
        raw_now, artifact_now = md5sum(obj), md5sum(artifact)
        code, rows, err = verify(demo)
        assert code == 1 and "2 file(s) differ" in err
        bad = sorted((r for r in rows if r["status"] == "mismatched"), key=lambda r: r["tool"])
        assert [(r["tool"], r["node"], r["location"], r["file"], r["expected"], r["found"]) for r in bad] == [
            ("dvc", raw_node, "dvc cache", str(obj), f"md5:{raw_md5}", f"md5:{raw_now}"),
            ("mlflow", artifact_node, "local file", str(artifact), f"md5:{before}", f"md5:{artifact_now}"),
        ]
        # the workspace copy of raw.csv is still right, and says so
        assert {(r["node"], r["location"]) for r in rows if r["status"] == "verified"} >= {(raw_node, "workspace")}

        # the chain behind churn v2 holds both (the trial's copy is the same bytes as its input)
        code, rows, _ = verify(demo, "mlflow:model_version/churn/2")
        assert code == 1 and {r["node"] for r in rows if r["status"] == "mismatched"} == {raw_node, artifact_node}
        # the chain behind test.csv holds the raw file but not the trial's artifact
        test_node = f"dvc:dataset/data/test.csv@{lock_outs(demo)['data/test.csv']}"
        code, rows, _ = verify(demo, test_node)
        assert code == 1 and {r["node"] for r in rows if r["status"] == "mismatched"} == {raw_node}
        assert artifact_node not in {r["node"] for r in rows}
    assert verify(demo)[0] == 0


def test_an_edited_workspace_file_is_a_mismatch_of_the_version_head_names(demo: Path) -> None:
    md5 = lock_outs(demo)["data/train.csv"]
    target = demo / "data" / "train.csv"
    with altered(target, target.read_bytes()[:-10]):
        now = md5sum(target)
        code, rows, _ = verify(demo, "--quiet")
        assert code == 1
        assert [(r["node"], r["location"], r["expected"], r["found"]) for r in rows if r["status"] == "mismatched"] \
            == [(f"dvc:dataset/data/train.csv@{md5}", "workspace", f"md5:{md5}", f"md5:{now}")]


def test_a_workspace_holding_another_recorded_version_is_not_a_mismatch(demo: Path, cat: Catalog) -> None:
    nodes = cat.nodes.filter(tool="dvc").with_columns(path=pl.col("attrs").str.json_path_match("$.path"),
                                                      md5=pl.col("attrs").str.json_path_match("$.md5"))
    head = lock_outs(demo)
    other = nodes.filter(pl.col("path").is_in(list(head)) & ~pl.col("md5").is_in(list(head.values())))
    other = other.filter(pl.col("md5").map_elements(lambda m: cache_object(demo, m).exists(), return_dtype=pl.Boolean))
    if other.is_empty():
        pytest.skip("the demo records one version of each path")
    row = other.row(0, named=True)  # e.g. an experiment's metrics file, as `dvc exp apply` would leave it
    target = demo / row["path"]
    with altered(target, cache_object(demo, row["md5"]).read_bytes()):
        code, rows, _ = verify(demo)
        assert code == 0
        assert (row["id"], "workspace") in {(r["node"], r["location"]) for r in rows if r["status"] == "verified"}


def test_a_wandb_file_in_the_sdks_cache_plugs_into_the_same_table(demo: Path, cat: Catalog, tmp_path: Path) -> None:
    files = cat.nodes.filter(pl.col("tool") == "wandb", pl.col("digest").str.starts_with("md5:"))
    if files.is_empty():
        pytest.skip("the demo has no W&B files")
    from wandb.sdk.artifacts.artifact_file_cache import ArtifactFileCache

    row = files.row(0, named=True)
    hexed = row["digest"].removeprefix("md5:")
    source = next(p for p in demo.rglob(row["name"]) if p.is_file() and md5sum(p) == hexed)
    cache = ArtifactFileCache(tmp_path / "artifacts")  # the SDK's own cache writes the object
    path, hit, opener = cache.check_digest_obj_path(base64.b64encode(bytes.fromhex(hexed)).decode(), row["size"])
    assert not hit
    with opener("wb") as fh:
        fh.write(source.read_bytes())
    env = {"WANDB_CACHE_DIR": str(tmp_path)}
    code, rows, _ = verify(demo, env=env)
    assert code == 0 and (row["id"], "wandb cache", path) in {
        (r["node"], r["location"], r["file"]) for r in rows if r["status"] == "verified"}
    Path(path).write_bytes(b"not the bytes")
    code, rows, _ = verify(demo, env=env)
    assert code == 1 and {(r["node"], r["found"]) for r in rows if r["status"] == "mismatched"} == \
        {(row["id"], f"md5:{hashlib.md5(b'not the bytes').hexdigest()}")}


# -- DVC 2's line-ending-normalised md5 ------------------------------------------------------------
def test_dvc2_hashes_are_recomputed_the_way_dvc2_computed_them(tmp_path: Path) -> None:
    """A real DVC 2 repository whose data/raw.csv has CRLF endings (see tests/data/dvc-repos)."""
    repo = tmp_path / "pipeline"
    subprocess.run(["git", "clone", "-q", str(DVC2 / "dvc2-pipeline.bundle"), str(repo)], check=True)
    with tarfile.open(DVC2 / "dvc2-pipeline-cache.tar.gz") as tar:
        tar.extractall(repo / ".dvc", filter="data")
    subprocess.run([sys.executable, "-m", "dvc", "checkout", "-q"], cwd=repo, check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    (repo / "braid.toml").write_text('[[sources]]\nname = "pipe"\ntool = "dvc"\nrepo = "."\n')
    assert not sync(load_config(repo / "braid.toml")).failed
    code, rows, _ = verify(repo)
    assert code == 0
    raw = [r for r in rows if r["node"] == "pipe:dataset/data/raw.csv@2b2889bf22971a126d3ae2366e134287"]
    assert {(r["status"], r["location"], r["expected"], r["found"]) for r in raw} == {
        ("verified", "dvc cache", "md5-d2u:2b2889bf22971a126d3ae2366e134287", "md5-d2u:2b2889bf22971a126d3ae2366e134287"),
        ("verified", "workspace", "md5-d2u:2b2889bf22971a126d3ae2366e134287", "md5-d2u:2b2889bf22971a126d3ae2366e134287"),
    }
    assert md5sum(repo / "data" / "raw.csv") == "f33f0a71eb05823d2779f0840af5da26"  # the plain md5 differs
    obj = repo / ".dvc" / "cache" / "2b" / "2889bf22971a126d3ae2366e134287"
    data = obj.read_bytes()
    with altered(obj, data.replace(b"\r\n", b"\n")):
        assert verify(repo)[0] == 0  # DVC 2 counted CRLF as LF: to it these are the same bytes
    with altered(obj, data[:-3] + b"!\r\n"):
        code, rows, _ = verify(repo)
        found = _dvc_dos2unix_md5(obj)
    assert code == 1
    assert [(r["location"], r["found"]) for r in rows if r["status"] == "mismatched"] == [("dvc cache", f"md5-d2u:{found}")]


def _dvc_dos2unix_md5(path: Path) -> str:
    """DVC's own line-ending-normalised md5 (dvc_data, as DVC 3 computes it for DVC 2 entries)."""
    from dvc_data.hashfile.hash import fobj_md5

    with path.open("rb") as fh:
        return fobj_md5(fh, name="md5-dos2unix")


def test_streaming_dos2unix_matches_dvc_across_chunk_boundaries(tmp_path: Path) -> None:
    line = b"12345,some text,3.5\r\n"
    data = line * (3 * (1 << 20) // len(line) + 7)  # CRLFs straddle the 1 MiB chunk boundaries
    text = tmp_path / "big.csv"
    text.write_bytes(data)
    binary = tmp_path / "big.bin"
    binary.write_bytes(b"\x00\r\n" + data)
    assert hash_file(str(text), "md5-d2u") == _dvc_dos2unix_md5(text) == \
        hashlib.md5(data.replace(b"\r\n", b"\n")).hexdigest()
    # DVC 2 judged a file text or binary once, from its first 512 bytes, and hashed a binary file
    # as it is; DVC 3's dvc_data judges each 1 MiB chunk, so it would normalise this file's later
    # chunks. The md5s being checked were written by DVC 2: braid hashes as DVC 2 did.
    assert hash_file(str(binary), "md5-d2u") == hashlib.md5(binary.read_bytes()).hexdigest()
    for path in (text, binary):
        assert hash_file(str(path), "md5") == hashlib.md5(path.read_bytes()).hexdigest()
    assert hash_file(str(tmp_path / "missing"), "md5") is None


def test_an_unknown_node_is_a_usage_error(demo: Path) -> None:
    proc = subprocess.run([str(BRAID), "verify", "mlflow:run/nope"], cwd=demo, capture_output=True, text=True)
    assert proc.returncode == 2 and "no node 'mlflow:run/nope'" in proc.stderr

