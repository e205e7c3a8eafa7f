"""Identity rules: which nodes are the same thing, and the evidence each link carries."""

from __future__ import annotations

import json

import polars as pl

from braid.unify.identity import same_as_edges
from braid.unify.schema import conform

MD5 = "md5:c3c6bc2ae8ece4bd2510dca21225c041"


def nodes(*rows: tuple[str, str, str | None, int | None, str | None]) -> pl.DataFrame:
    return conform("nodes", pl.DataFrame(rows, schema=["id", "kind", "digest", "size", "uri"], orient="row"))


def links(frame: pl.DataFrame) -> set[tuple[str, str, str]]:
    return {(s, d, json.loads(a)["evidence"]) for s, d, a in same_as_edges(frame).select("src", "dst", "attrs").rows()}


def test_same_bytes_link_as_a_star() -> None:
    n = nodes(("c:artifact/3", "artifact", MD5, 12, None), ("a:dataset/1", "dataset", MD5, 12, None),
              ("b:model/2", "model", MD5, 12, None), ("d:artifact/4", "artifact", MD5, 13, None))
    assert links(n) == {("a:dataset/1", "b:model/2", "digest"), ("a:dataset/1", "c:artifact/3", "digest")}


def test_runs_and_other_hashes() -> None:
    n = nodes(("a:run/1", "run", MD5, 12, None), ("b:run/2", "run", MD5, 12, None),
              ("a:dataset/x", "dataset", "mlflow:abcd", None, None), ("b:dataset/y", "dataset", "mlflow:abcd", None, None),
              ("c:dataset/z", "dataset", "md5:abcd", None, None))
    assert links(n) == {("a:dataset/x", "b:dataset/y", "digest")}


def test_uris_normalised_and_relative_paths_ignored() -> None:
    n = nodes(("a:dataset/1", "dataset", None, None, "S3://Bucket/data/train.csv"),
              ("b:dataset/2", "dataset", None, None, "s3://bucket/data/train.csv/"),
              ("c:dataset/3", "dataset", None, None, "file:///srv/data.csv"),
              ("d:dataset/4", "dataset", None, None, "/srv/data.csv"),
              ("e:dataset/5", "dataset", None, None, "train.csv"), ("f:dataset/6", "dataset", None, None, "train.csv"))
    assert links(n) == {("a:dataset/1", "b:dataset/2", "uri"), ("c:dataset/3", "d:dataset/4", "uri")}
    attrs = json.loads(same_as_edges(n).filter(pl.col("src") == "a:dataset/1")["attrs"][0])
    assert attrs == {"evidence": "uri", "uri": "s3://bucket/data/train.csv"}


def test_credentials_in_urls_never_reach_the_catalog() -> None:
    from braid.unify.source import SourceBatch

    batch = SourceBatch(tables={
        "nodes": pl.DataFrame({"id": ["git:" + "a" * 40], "kind": ["code"], "uri": ["https://bot:ghp_s3cret@github.com/t/r.git"]}),
        "runs": pl.DataFrame({"id": ["m:run/1"], "git_remote": ["https://bot:ghp_s3cret@github.com/t/r.git"]}),
    })
    assert batch.tables["nodes"]["uri"].to_list() == ["https://github.com/t/r.git"]
    assert batch.tables["runs"]["git_remote"].to_list() == ["https://github.com/t/r.git"]


def test_a_batch_with_an_impossible_edge_is_a_connector_bug() -> None:
    import pytest

    from braid.unify.source import SourceBatch

    nodes = pl.DataFrame({"id": ["m:run/1", "m:dataset/d"], "kind": ["run", "dataset"]})
    SourceBatch(tables={"nodes": nodes, "edges": pl.DataFrame({"src": ["m:dataset/d"], "dst": ["m:run/1"], "kind": ["input"]})})
    with pytest.raises(ValueError, match="joins a run to a dataset, which 'input' does not allow"):
        SourceBatch(tables={"nodes": nodes, "edges": pl.DataFrame({"src": ["m:run/1"], "dst": ["m:dataset/d"], "kind": ["input"]})})
    with pytest.raises(ValueError, match="unknown node kind 'table'"):
        SourceBatch(tables={"nodes": pl.DataFrame({"id": ["m:table/x"], "kind": ["table"]})})


def test_a_path_named_at_a_commit_is_the_repo_version_tracked_there() -> None:
    from braid.unify.identity import Located, path_edges

    c1, c2, c3 = "1" * 40, "2" * 40, "3" * 40  # c3 changed only code: the repo's files are c2's
    v1, v2 = "dvc:dataset/data/train.csv@aa", "dvc:dataset/data/train.csv@bb"
    n = conform("nodes", pl.DataFrame({
        "id": [v1, v2, "m:dataset/rel", "m:dataset/abs", "w:artifact/a", "w:artifact/a/train.csv", "m:dataset/other"],
        "kind": ["dataset"] * 4 + ["artifact"] * 2 + ["dataset"],
        "source": ["dvc", "dvc", "m", "m", "w", "w", "m"],
        "uri": ["data/train.csv", "data/train.csv", "./data/train.csv", "/repo/data/train.csv", None,
                "file:///repo/data/train.csv", "data/test.csv"],
    }))
    located = Located(
        locations=pl.DataFrame({"source": ["dvc", "dvc"], "commit": [c1, c2], "path": ["data/train.csv"] * 2,
                                "node_id": [v1, v2], "root": ["/repo", "/repo"]}),
        commit_states=pl.DataFrame({"source": ["dvc"] * 3, "commit": [c1, c2, c3], "state": [c1, c2, c2]}),
        edges=pl.DataFrame({"src": ["m:dataset/rel", "m:dataset/abs", "w:run/1", "w:artifact/a/train.csv",
                                    "m:dataset/other", v1],
                            "dst": ["m:run/1", "m:run/2", "w:artifact/a", "w:artifact/a", "m:run/1", "dvc:run/x"],
                            "kind": ["input", "input", "output", "part_of", "input", "input"]}),
        runs=pl.DataFrame({"id": ["m:run/1", "m:run/2", "w:run/1", "dvc:run/x"], "git_commit": [c1, c3, c2.upper(), c2]}),
    )
    found = {(s, d): json.loads(a) for s, d, a in path_edges(n, located).select("src", "dst", "attrs").rows()}
    assert found == {
        ("dvc:dataset/data/train.csv@aa", "m:dataset/rel"): {"evidence": "path", "path": "data/train.csv", "commit": c1},
        ("dvc:dataset/data/train.csv@bb", "m:dataset/abs"): {"evidence": "path", "path": "data/train.csv", "commit": c3},
        ("dvc:dataset/data/train.csv@bb", "w:artifact/a/train.csv"): {"evidence": "path", "path": "data/train.csv",
                                                                    "commit": c2},
    }
