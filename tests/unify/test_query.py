"""The query dialect on a real catalog: the example questions of issue 5, parameters, time
travel, limits and the CLI, asserted against what the MLflow fixture writer recorded.

The catalog holds three MLflow sources: `mlflow` (written by tests/fixtures/write_mlflow_store.py
in this session, facts in `store.facts`), and `old` / `new`, the 2.22.1 and 3.17.2 stores of
tests/data/mlflow-stores (facts in its README). `old` and `new` logged the same dataset, which
identity links with a same_as edge, so lineage crosses sources.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from braid.unify import Catalog, open_catalog
from braid.unify.config import load_config
from braid.unify.errors import QueryError
from braid.unify.query._reference import EXAMPLES
from braid.unify.sync import sync
from tests.conftest import SHARED_STORES, MlflowStore

OLD_TRAIN = "old:run/dd50466c4bb2457fae35e4c2c5a5f865"
NEW_TRAIN = "new:run/304d0953b4414212a0e72e7dedd27627"
OLD_DATASET = "old:dataset/train@c167484d"
NEW_VERSION = "new:model_version/legacy-model/1"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, sqlite_store: MlflowStore) -> Path:
    root = tmp_path_factory.mktemp("query")
    shutil.copy(SHARED_STORES["2.22.1"], root / "old.db")
    shutil.copy(SHARED_STORES["3.17.2"], root / "new.db")
    (root / "braid.toml").write_text(
        'catalog = ".braid"\n'
        f'[[sources]]\nname = "mlflow"\ntool = "mlflow"\nuri = "{sqlite_store.uri}"\n'
        '[[sources]]\nname = "old"\ntool = "mlflow"\nuri = "sqlite:///old.db"\n'
        '[[sources]]\nname = "new"\ntool = "mlflow"\nuri = "sqlite:///new.db"\n'
    )
    report = sync(load_config(root / "braid.toml"))
    assert not report.failed
    return root


@pytest.fixture(scope="module")
def cat(workspace: Path) -> Catalog:
    return open_catalog(workspace / ".braid")


@pytest.fixture(scope="module")
def facts(sqlite_store: MlflowStore) -> dict[str, Any]:
    f = dict(sqlite_store.facts)
    f["train"] = f"mlflow:run/{f['train_run']}"
    f["finetune"] = f"mlflow:run/{f['finetune_run']}"
    f["v1"], f["v2"] = (f"mlflow:model_version/churn/{v}" for v in f["versions"])
    return f


def example(n: int) -> str:
    return EXAMPLES[n - 1][1]


def train_dataset(cat: Catalog, run: str) -> str:
    """The dataset the run read, as the catalog recorded the input edge."""
    return cat.edges.filter(dst=run, kind="input")["src"].to_list()[0]


# -- the example questions ------------------------------------------------------------------------
def test_1_datasets_and_commit_upstream_of_a_model_version(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query(example(1), {"model_version": facts["v2"]})
    # churn v2 <- model_2 <- finetune <- model_1 (input) <- train <- dataset, commit
    assert set(got["kind"]) == {"dataset", "code"}
    assert f"git:{facts['git_commit']}" in got["id"].to_list()
    assert train_dataset(cat, facts["train"]) in got["id"].to_list()
    api = cat.upstream(facts["v2"], kinds=["dataset", "code"]).select("id", "kind", "tool", "depth")
    assert_frame_equal(got, api)


def test_2_models_downstream_of_a_dataset(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query(example(2), {"dataset": train_dataset(cat, facts["train"])})
    assert set(got["id"]) == {f"mlflow:model/{facts['model_1']}", f"mlflow:model/{facts['model_2']}",
                              facts["v1"], facts["v2"]}
    depth = dict(zip(got["id"], got["depth"]))
    assert depth[f"mlflow:model/{facts['model_1']}"] == 2 and depth[facts["v2"]] == 5
    shallow = cat.query(example(2).replace("depth => 5", "depth => 4"), {"dataset": train_dataset(cat, facts["train"])})
    assert facts["v2"] not in shallow["id"].to_list()


def test_3_path_from_a_dataset_to_a_model_version_across_sources(cat: Catalog) -> None:
    got = cat.query(example(3), {"dataset": OLD_DATASET, "model_version": NEW_VERSION})
    first = got.filter(path=0)
    assert first["id"].to_list() == ["old:dataset/train@c167484d", "new:dataset/train@c167484d", NEW_TRAIN,
                                     "new:model/m-b8b93b125ebb414a93db061097165475", NEW_VERSION]
    assert first["via_kind"].to_list() == [None, "same_as", "input", "output", "registered_as"]


def test_4_best_runs_by_a_metric(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query(example(4), {"metric": "loss"})
    last = {(s, n): v for s, n, v in got.select("source", "name", "value").iter_rows()}
    # the writer logs loss = 1/(step+1) for steps 0..4; the shared stores for steps 0..9
    assert last[("mlflow", "train")] == pytest.approx(1 / 5)
    assert last[("old", "train")] == pytest.approx(1 / 10) and last[("new", "train")] == pytest.approx(1 / 10)
    assert last[("mlflow", "cv-0")] == pytest.approx(0.5)
    assert got["value"].to_list() == sorted(got["value"].to_list())
    assert got.height == cat.table("metrics").filter(key="loss")["run_id"].n_unique()


def test_5_params_that_differ_between_two_runs(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query(example(5), {"run_a": facts["train"], "run_b": OLD_TRAIN})
    assert got.rows() == [("epochs", "3", "10")]  # lr is 0.01 in both
    other = cat.query(example(5), {"run_a": facts["finetune"], "run_b": facts["train"]})
    assert ("base", "model_1", None) in other.rows()


def test_6_upstream_as_of_a_past_date(cat: Catalog, facts: dict[str, Any]) -> None:
    created = cat.node(facts["v2"])["created_at"]
    now = cat.query(example(6), {"model_version": facts["v2"], "moment": created})
    assert now.height and set(now["id"]) == set(cat.upstream(facts["v2"], as_of=created)["id"])
    before = cat.query(example(6), {"model_version": facts["v2"], "moment": created - timedelta(days=365)})
    assert before.is_empty()  # the version did not exist yet


def test_8_distinct_datasets_per_registered_version(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query(example(8))
    counts = {(n, v): c for n, v, c in got.iter_rows()}
    # old and new legacy-model/1 each reach their own train.csv and, by same_as, the other's
    assert counts == {("churn", "1"): 1, ("churn", "2"): 1, ("legacy-model", "1"): 2}


@pytest.mark.parametrize(("call", "options"), [
    ("upstream(r.model_version_id, kinds => ['dataset'])", {"kinds": ["dataset"]}),
    ("upstream(r.model_version_id)", {}),
    ("upstream(r.model_version_id, depth => 2, stop_at => kind = 'run', same_as => false)",
     {"depth": 2, "stop_at": pl.col("kind") == "run", "same_as": False}),
    ("downstream(r.run_id, tools => ['mlflow'], kinds => ['model', 'model_version'], as_of => :moment)",
     {"tools": ["mlflow"], "kinds": ["model", "model_version"], "as_of": "moment"}),
])
def test_lateral_call_is_one_walk_per_start(cat: Catalog, call: str, options: dict[str, Any]) -> None:
    from braid.unify.query._execute import prepare

    moment = cat.nodes["created_at"].drop_nulls().sort()[cat.nodes.height // 2]
    if options.get("as_of"):
        options = {**options, "as_of": moment}
    column = call.split("(r.")[1].split(")")[0].split(",")[0]
    fn = getattr(cat, call.split("(")[0])
    sql = f"SELECT r.name, r.version, u.id, u.depth, u.via_src, u.via_kind, u.start FROM registry r, {call} u"
    _, run, _ = prepare(cat, sql, {"moment": moment})
    (step,) = run.steps
    frame = run.frames[step.frame]
    frame = frame.collect() if isinstance(frame, pl.LazyFrame) else frame  # graph frames gather lazily
    registry = cat.table("registry")
    starts = registry[column].drop_nulls().unique().sort().to_list()
    known = [s for s in starts if s in set(cat.nodes["id"])]
    assert known  # the registry's versions and runs are nodes
    want = pl.concat([fn(s, **options).with_columns(start=pl.lit(s, pl.String)) for s in known])
    assert_frame_equal(frame, want)  # rows, order and dtypes
    got = cat.query(sql, {"moment": moment}).sort(pl.all())
    joined = registry.select("name", "version", column).join(want.drop("name", "version"), left_on=column,
                                                             right_on="start")
    joined = joined.with_columns(start=pl.col(column)).select(got.columns).sort(pl.all())
    assert_frame_equal(got, joined)
    # a query that reads no via_* column: the walk skips finding the edges, the rest is the same
    _, run, _ = prepare(cat, f"SELECT r.name, u.id, u.depth, u.start FROM registry r, {call} u", {"moment": moment})
    (step,) = run.steps
    bare = run.frames[step.frame]
    assert isinstance(bare, pl.LazyFrame)
    assert_frame_equal(bare.select("id", "depth", "start").collect(), want.select("id", "depth", "start"))
    assert bare.select("via_kind").collect()["via_kind"].is_null().all()


# -- the executor's rewrites (unify/query/_optimize.py) on this catalog -----------------------------
def rewrite_cases(cat: Catalog, facts: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (example(4), {"metric": "acc"}),
        (example(5), {"run_a": facts["train"], "run_b": OLD_TRAIN}),
        (example(7).replace("x.tool <> y.tool", "x.source <> y.source"), {}),  # one tool here: two sources
        (example(8), {}),
        ("SELECT r.name, m.key, m.step, m.value FROM runs r JOIN metrics m ON m.run_id = r.id WHERE r.source = 'old' "
         "QUALIFY row_number() OVER (PARTITION BY m.run_id, m.key ORDER BY m.step DESC, m.timestamp DESC) = 1", {}),
        ("SELECT p.run_id, count(DISTINCT p.key) AS n FROM params p JOIN runs r ON r.id = p.run_id GROUP BY p.run_id",
         {}),
        ("SELECT r.name, u.id, u.depth, u.start FROM registry r, upstream(r.model_version_id) u", {}),
        ("SELECT e.src, n.kind FROM edges e JOIN nodes n ON n.id = e.dst WHERE e.kind = 'same_as'", {}),
        ("WITH up AS (SELECT id FROM upstream(:v)) SELECT up.id, e.kind FROM up JOIN edges e ON e.dst = up.id",
         {"v": NEW_VERSION}),
        ("SELECT t.node_id, t.key FROM tags t JOIN nodes n ON n.id = t.node_id WHERE n.kind = 'run'", {}),
    ]


def test_rewrites_keep_the_rows(cat: Catalog, facts: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from braid.unify.query import _execute

    assert cat.index.n_nodes  # integer keys wait for the index
    texts = []
    for sql, params in rewrite_cases(cat, facts):
        bound, _, _ = _execute.prepare(cat, sql, params)
        texts.append(_execute.polars_sql(bound.tree))
        got = cat.query(sql, params)
        with monkeypatch.context() as written:
            written.setattr(_execute, "_optimize", lambda bound, run: None)
            want = cat.query(sql, params)
        assert got.columns == want.columns, sql
        assert sorted(got.rows(), key=repr) == sorted(want.rows(), key=repr), sql
        assert want.height, sql
    assert sum("__key_" in t for t in texts) >= 8 and sum("_top_one_" in t for t in texts) == 2


def test_a_query_about_one_run_waits_for_a_kept_top_one_table(cat: Catalog, facts: dict[str, Any]) -> None:
    """The latest metrics of one run: a window over its rows, until the whole top-1 table is at
    hand (another query made it); either way the same rows."""
    from braid.unify.query._execute import polars_sql, prepare

    fresh = open_catalog(cat.path)
    order = "ORDER BY m.step DESC, m.timestamp DESC"
    one = (f"SELECT m.key, m.step FROM metrics m WHERE m.run_id = :run "
           f"QUALIFY row_number() OVER (PARTITION BY m.key {order}) = 1")
    params = {"run": facts["train"]}
    want = fresh.query(one, params)
    assert "QUALIFY" in polars_sql(prepare(fresh, one, params)[0].tree)
    fresh.query(f"SELECT r.name, m.value FROM runs r JOIN metrics m ON m.run_id = r.id WHERE m.key = 'acc' "
                f"QUALIFY row_number() OVER (PARTITION BY r.id {order}) = 1")  # keeps the (run_id, key) table
    assert "QUALIFY" not in polars_sql(prepare(fresh, one, params)[0].tree)
    got = fresh.query(one, params)
    assert sorted(got.rows()) == sorted(want.rows()) and want.height


def test_integer_keys_are_node_rows_or_absent(cat: Catalog) -> None:
    from braid.unify.query._frames import KEYS, NODE_ID_COLUMNS, keyed_table

    assert cat.index.n_nodes
    for table, columns in NODE_ID_COLUMNS.items():
        keyed = keyed_table(cat, table)
        assert keyed is not None, table
        for column in columns:
            twin = keyed[KEYS.name(column)]
            assert cat.nodes["id"].gather(twin).to_list() == keyed[column].to_list(), (table, column)
    fresh = open_catalog(cat.path)
    tags = fresh.table("tags")
    fresh._tables["tags"] = tags.with_columns(node_id=pl.when(pl.int_range(tags.height) == 0)
                                              .then(pl.lit("mlflow:run/not-a-node")).otherwise("node_id"))
    assert fresh.index.n_nodes and keyed_table(fresh, "tags") is None  # no exact integer for that value
    sql = "SELECT t.node_id FROM tags t JOIN nodes n ON n.id = t.node_id"
    assert fresh.query(sql).height == cat.query(sql).height - 1


# -- parameters, time travel, graph options -------------------------------------------------------
def test_parameters_are_values_not_sql(cat: Catalog) -> None:
    sneaky = "x' OR '1'='1"
    assert cat.query("SELECT id FROM nodes WHERE id = :id", {"id": sneaky}).is_empty()
    assert cat.query("SELECT count(*) AS n FROM nodes WHERE id = :id", {"id": OLD_TRAIN})["n"].item() == 1


def test_node_argument_from_a_subquery_and_a_list(cat: Catalog, facts: dict[str, Any]) -> None:
    sub = cat.query("SELECT id FROM upstream((SELECT model_version_id FROM registry WHERE name = 'churn' "
                    "AND version = '1'), kinds => ['run'])")
    assert sub["id"].to_list() == [facts["train"]]
    listed = cat.query(f"SELECT DISTINCT id FROM upstream(['{facts['v1']}', '{NEW_VERSION}'], kinds => ['run'])")
    assert set(listed["id"]) == {facts["train"], NEW_TRAIN}
    with pytest.raises(QueryError, match="must give one node id; it gave 0") as err:
        cat.query("SELECT * FROM paths((SELECT id FROM nodes WHERE id = 'nothing'), :v)", {"v": NEW_VERSION})
    assert (err.value.line, err.value.column) == (1, 29)  # the subquery's first column


def test_stop_at_and_tools(cat: Catalog, facts: dict[str, Any]) -> None:
    got = cat.query("SELECT id FROM upstream(:v, stop_at => kind = 'run')", {"v": facts["v2"]})
    assert got["id"].to_list() == [f"mlflow:model/{facts['model_2']}", facts["finetune"]]
    none = cat.query("SELECT id FROM upstream(:v, tools => ['wandb'])", {"v": facts["v2"]})
    assert none.is_empty()


def test_for_system_time_as_of_on_base_tables(cat: Catalog, facts: dict[str, Any]) -> None:
    created = cat.node(facts["finetune"])["created_at"]
    sql = "SELECT n.id FROM nodes AS n FOR SYSTEM_TIME AS OF :t WHERE n.kind = 'run' ORDER BY 1"
    ids = cat.query(sql, {"t": created})["id"].to_list()
    expected = cat.nodes.filter((pl.col("kind") == "run") & (pl.col("created_at") <= created)).sort("id")["id"]
    assert ids == expected.to_list() and facts["finetune"] in ids
    params = cat.query("SELECT DISTINCT run_id FROM params FOR SYSTEM_TIME AS OF TIMESTAMP '2000-01-01'")
    assert params.is_empty()


def test_unknown_node_id_points_at_it(cat: Catalog) -> None:
    sql = "SELECT *\nFROM upstream('old:model_version/legacy-modle/1')"
    with pytest.raises(QueryError) as err:
        cat.query(sql)
    assert (err.value.line, err.value.column) == (2, 15)
    assert "old:model_version/legacy-model/1" in (err.value.hint or "")


def test_a_huge_cross_join_is_stopped(cat: Catalog) -> None:
    with pytest.raises(QueryError, match="no condition and would make about") as err:
        cat.query("SELECT count(*) FROM metrics a, metrics b, metrics c, metrics d, metrics e")
    assert err.value.column > 0
    with pytest.raises(QueryError, match="no condition and would make about 484 rows"):
        cat.query("SELECT a.id FROM nodes a, nodes b", max_rows=100)  # 22 nodes
    with pytest.raises(QueryError, match="the result has more than 100 rows"):
        cat.query("SELECT * FROM metrics", max_rows=100)  # the writer logged 300 acc points
    assert cat.query("SELECT * FROM metrics", max_rows=100, limit=5).height == 5


def test_explain_shows_graph_calls_then_the_polars_plan(cat: Catalog, facts: dict[str, Any]) -> None:
    plan = cat.query("EXPLAIN SELECT u.id, r.name FROM upstream(:v, depth => 2) u JOIN runs r ON r.id = u.id",
                     {"v": facts["v2"]})["plan"].to_list()
    text = "\n".join(plan)
    assert f"upstream(node => ['{facts['v2']}'], depth => 2) AS u: 2 rows" in text
    assert text.index("graph calls") < text.index("polars SQL") < text.index("polars plan")
    assert "JOIN" in text


def test_engine_errors_are_query_errors(cat: Catalog) -> None:
    with pytest.raises(QueryError, match="could not run"):
        cat.query("SELECT id FROM nodes a JOIN nodes b ON a.id = b.id")  # ambiguous in polars


# -- the command line -----------------------------------------------------------------------------
def braid(workspace: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "braid"
    return subprocess.run([str(exe), *args], cwd=workspace, input=stdin, capture_output=True, text=True, timeout=120)


def test_cli_query_json_params_and_stdin(workspace: Path, facts: dict[str, Any]) -> None:
    proc = braid(workspace, "query", "SELECT key, value FROM params WHERE run_id = :run ORDER BY key",
                 "--param", f"run={facts['train']}", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"key": "epochs", "value": "3"}, {"key": "lr", "value": "0.01"}]
    piped = braid(workspace, "query", "-", "--format", "csv", "--limit", "1",
                  stdin="SELECT name FROM runs WHERE source = 'mlflow' ORDER BY name")
    assert piped.stdout.splitlines() == ["name", "cv-0"]
    explain = braid(workspace, "query", "EXPLAIN SELECT count(*) FROM nodes")
    assert explain.returncode == 0 and "polars plan:" in explain.stdout


def test_cli_bad_query_exits_2_with_a_caret(workspace: Path) -> None:
    proc = braid(workspace, "query", "SELECT id, nme\nFROM nodes")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "braid: error: line 1, column 12: no column 'nme' in nodes",
        "  SELECT id, nme",
        "             ^^^",
        "  hint: did you mean 'name'?",
    ]
    drop = braid(workspace, "query", "DROP TABLE nodes")
    assert drop.returncode == 2 and "only SELECT queries run here" in drop.stderr


def test_cli_help_is_the_generated_reference(workspace: Path) -> None:
    proc = braid(workspace, "query", "--help")
    assert proc.returncode == 0
    assert "upstream(node, depth => int, kinds => strings" in proc.stdout
    assert "`run_id` String: the run's node id" in proc.stdout
    assert "row_number() OVER (PARTITION BY kind ORDER BY id)" in proc.stdout


def test_every_declared_function_runs_on_the_executor(cat: Catalog) -> None:
    from braid.unify.query import SQL_FUNCTIONS

    for fn in SQL_FUNCTIONS.values():
        table = "registry" if "aliases" in fn.example else "nodes"
        group = " GROUP BY kind" if fn.kind == "aggregate" and table == "nodes" else ""
        got = cat.query(f"SELECT {fn.example} AS x FROM {table}{group}")
        assert got.columns == ["x"], fn.name
