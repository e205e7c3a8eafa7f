"""Accounting: nothing a source holds is dropped without a line in the migration report.

For each direction, a dry run's report (nothing is written) is set against the source's own
tables. Every table braid's connector reads (MLflow: the raw tables of `RAW_SCHEMAS`; W&B and DVC:
the normalised tables, `nodes` and `edges` per kind) is declared once, next to the field mappings:
its rows are counted by report kinds (`RAW_KINDS`, `SOURCE_KINDS`: carried + transformed + not
carried add up to the rows the source holds), or belong to rows of another table (`RAW_PART_OF`,
`SOURCE_PART_OF`, each claim checked here on the source), or are made by the target itself
(`RAW_DERIVED`). A table, a node or edge kind, or a column without a declaration fails; every
value of a column declared not carried must be counted in the report (`<kind>_detail`).

Rows are counted with the MLflow client where it sees them (`CLIENT_TABLES`; its count is also
checked against braid's reader), and with braid's readers for the rest: the logged models' tables
(the client hides deleted models), braid's artifact listing, and the W&B and DVC sources (braid's
W&B folder reader and DVC repository reader). The W&B target's report is declared by its own
module (`_wandb_fates`) and checked the same way.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, LoggedModelInput, Metric, ViewType

from braid.connectors.mlflow._raw import RAW_SCHEMAS
from braid.unify.migrate import migrate
from braid.unify.migrate._plan import (FIELDS, RAW_COLUMNS, RAW_DERIVED, RAW_KINDS, RAW_PART_OF, SourceRead,
                                       read_mlflow, table_kind)
from braid.unify.migrate._report import Report
from braid.unify.migrate._sources import (FILE_KINDS, SOURCE_COLUMNS, SOURCE_FIELDS, SOURCE_KINDS, SOURCE_PART_OF,
                                          VIEWS, read_tool)
from braid.unify.schema import EDGE_KINDS, NODE_KINDS, TABLES
from braid.unify.source import SourceSpec
from tests.conftest import DvcRepos, MlflowStore
from tests.unify.test_migrate_sources import wandb_folders  # noqa: F401  (the module fixture, reused)

pytestmark = pytest.mark.slow

T0 = 1_700_000_000_000
Tables = dict[str, pl.DataFrame]

# -- the MLflow target: raw MLflow tables, and W&B / DVC normalised tables ------------------------

# raw tables the MLflow client shows in full, and how to count their rows with it
CLIENT_TABLES = ("experiments", "experiment_tags", "runs", "params", "tags", "metrics", "dataset_inputs",
                 "model_inputs", "model_outputs", "registered_models", "registered_model_tags", "model_versions",
                 "model_version_tags", "aliases")


def client_counts(uri: str) -> dict[str, int]:
    """Rows per raw table, as the MLflow client answers (deleted experiments and runs included)."""
    client = MlflowClient(uri, uri)
    n: dict[str, int] = defaultdict(int)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    n["experiments"] = len(experiments)
    n["experiment_tags"] = sum(len(e.tags) for e in experiments)
    for run in client.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL):
        n["runs"] += 1
        n["params"] += len(run.data.params)
        n["tags"] += len(run.data.tags)
        n["metrics"] += sum(len(client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics)
        full = client.get_run(run.info.run_id)  # search_runs leaves a run's model inputs out
        n["dataset_inputs"] += len(full.inputs.dataset_inputs)
        n["model_inputs"] += len(full.inputs.model_inputs or [])
        n["model_outputs"] += len(full.outputs.model_outputs or []) if full.outputs else 0
    for model in client.search_registered_models():
        n["registered_models"] += 1
        n["registered_model_tags"] += len(model.tags)
        n["aliases"] += len(model.aliases)
    for version in client.search_model_versions():
        n["model_versions"] += 1
        n["model_version_tags"] += len(version.tags)
    return dict(n)


@pytest.fixture(scope="module")
def mlflow_source(sqlite_store: MlflowStore, tmp_path_factory: pytest.TempPathFactory) -> SourceSpec:
    """A copy of the shared client-written store, with what a migration leaves behind, written by the
    real client: a deleted run (a child, with a param, a tag, a metric, a dataset input, a file and a
    model it used), a deleted logged model with a metric logged against it, a logged model no run
    logged (with a file), a deleted experiment with its run, an experiment tag, and registry tags and
    descriptions. The store's Default experiment holds no run."""
    work = tmp_path_factory.mktemp("accounting-mlflow")
    db = work / "source.db"
    shutil.copy(sqlite_store.uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri, uri)
    exp = client.create_experiment("accounting", artifact_location=(work / "art").as_uri(), tags={"team": "churn"})
    kept = client.create_run(exp, start_time=T0, run_name="kept", tags={"mlflow.user": "ada"}).info.run_id
    client.log_param(kept, "lr", "0.1")
    gone = client.create_run(exp, start_time=T0, run_name="gone", tags={"mlflow.parentRunId": kept}).info.run_id
    client.log_batch(gone, metrics=[Metric("loss", 0.5, T0, 0)], params=[], tags=[])
    client.log_param(gone, "lr", "0.2")
    client.set_tag(gone, "team", "churn")
    client.log_inputs(gone, datasets=[DatasetInput(Dataset(name="rows", digest="d1", source_type="local",
                                                           source='{"uri": "data/rows.csv"}'))])
    client.log_text(gone, "a,b\n", "data/rows.csv")
    model = client.create_logged_model(exp, name="scratch", source_run_id=gone, params={"k": "v"}, tags={"t": "1"})
    client.log_inputs(gone, models=[LoggedModelInput(model.model_id)])
    client.log_batch(kept, metrics=[Metric("acc", 0.9, T0, 0, model_id=model.model_id)])
    client.delete_logged_model(model.model_id)
    client.delete_run(gone)
    client.set_terminated(kept, "FINISHED", end_time=T0 + 1000)
    runless = client.create_logged_model(exp, name="runless")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "MLmodel").write_text("flavors: {}\n")
        client.log_model_artifacts(runless.model_id, tmp)
    abandoned = client.create_experiment("abandoned", artifact_location=(work / "gone").as_uri())
    client.create_run(abandoned, start_time=T0, run_name="in a deleted experiment")
    client.delete_experiment(abandoned)
    client.set_registered_model_tag("churn", "owner", "ml-team")
    client.update_registered_model("churn", description="who leaves")
    client.update_model_version("churn", "1", description="the first")
    return SourceSpec("old", "mlflow", {"uri": uri}, base_dir=work)


@pytest.fixture(scope="module")
def mlflow_read(mlflow_source: SourceSpec) -> SourceRead:
    return read_mlflow(mlflow_source)


def dvc_spec(dvc_repos: DvcRepos) -> SourceSpec:
    return SourceSpec("pipe", "dvc", {"repo": str(dvc_repos.repo)}, base_dir=dvc_repos.root)


def wandb_spec(folders: tuple[Path, dict]) -> SourceSpec:
    root, _ = folders
    return SourceSpec("wb", "wandb", {"path": str(root)}, base_dir=root.parent)


def mlflow_target(where: Path) -> SourceSpec:
    return SourceSpec("new", "mlflow", {"uri": f"sqlite:///{where / 'never.db'}"}, base_dir=where)


def wandb_target(where: Path) -> SourceSpec:
    return SourceSpec("wbt", "wandb", {"path": "wandb"}, base_dir=where)


def dry_run(source: SourceSpec, target: SourceSpec, where: Path) -> Report:
    report = migrate(source, target, catalog=where / ".braid", dry_run=True)
    assert not list(where.glob("*.db")) and not (where / "wandb").exists()  # a dry run writes nothing
    return report


# -- counting ------------------------------------------------------------------------------------

def total(report: Report, kind: str, *, leave_out: tuple[str, ...] = ()) -> int:
    """carried + transformed + not carried of one kind (0 when the report has no such kind), but the
    lines whose text is in `leave_out` (per-column lines a target counts inside an entity kind)."""
    k = report.kinds.get(kind)
    if k is None:
        return 0
    lines = {**k.transformed, **k.not_carried}
    return k.carried + sum(n for why, n in lines.items() if why not in leave_out)


def rows_of(tables: Tables, name: str) -> pl.DataFrame:
    """A table, or the rows of one kind of `nodes` or `edges` ("edges/input")."""
    table, _, kind = name.partition("/")
    frame = tables[table]
    return frame.filter(pl.col("kind") == kind) if kind else frame


def unaccounted(report: Report, rows: dict[str, int], kinds_of: dict[str, tuple[str, ...]],
                extra: dict[str, int] | None = None, leave_out: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """One line per group of tables whose rows the report's kinds do not add up to. Tables that
    map to the same kinds are one group; `extra` adds rows a kind also counts (per-column cases)."""
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for table, kinds in kinds_of.items():
        groups[kinds].append(table)
    seen = [k for kinds in groups for k in kinds]
    assert len(seen) == len(set(seen)), f"a report kind counts two groups of tables: {groups}"
    out = []
    for kinds, tables in groups.items():
        held = sum(rows[t] for t in tables) + sum((extra or {}).get(k, 0) for k in kinds)
        counted = sum(total(report, k, leave_out=(leave_out or {}).get(k, ())) for k in kinds)
        if held != counted:
            out.append(f"{' + '.join(tables)}: the source holds {held} rows, the report's {' + '.join(kinds)} "
                       f"count {counted}")
    return out


def held(frame: pl.DataFrame, column: str) -> int:
    """Values in a column: not null, nor empty text or JSON."""
    value = pl.col(column)
    empty = value.cast(pl.String).is_in(["", "{}", "[]", "null"])
    return int(frame.select((value.is_not_null() & ~empty).sum()).item())


def unreported_columns(report: Report, fields: dict[str, dict[str, tuple[str, str]]],
                       columns: dict[str, tuple[str, dict[str, str | None]]],
                       travelling: Callable[[str], pl.DataFrame]) -> list[str]:
    """One line per column declared not carried whose values the report does not count as such
    (under `<kind>_detail`, "<field>: <why>")."""
    out = []
    for table, (kind, mapping) in columns.items():
        for column, field in mapping.items():
            if field is None or fields[kind][field][0] != "not_carried":
                continue
            n = held(travelling(table), column)
            why = f"{field}: {fields[kind][field][1]}"
            detail = report.kinds.get(f"{kind}_detail")
            got = detail.not_carried.get(why, 0) if detail is not None else 0
            if got != n:
                out.append(f"{table}.{column}: {n} values are not carried, the report counts {got}")
    return out


# -- the declarations, checked without a source --------------------------------------------------

def test_every_raw_table_and_column_is_declared() -> None:
    declared = [*RAW_KINDS, *RAW_PART_OF, *RAW_DERIVED]
    assert len(declared) == len(set(declared)), "a raw table is declared twice"
    assert set(RAW_SCHEMAS) - set(declared) == set(), "raw tables the report does not account for"
    assert set(declared) - set(RAW_SCHEMAS) == set()
    assert {k for kinds in RAW_KINDS.values() for k in kinds} <= set(FIELDS)
    for table, (owner, keys) in RAW_PART_OF.items():
        assert owner in RAW_KINDS and set(keys) <= set(RAW_SCHEMAS[table]) & set(RAW_SCHEMAS[owner]), table
    for table in set(RAW_SCHEMAS) - set(RAW_DERIVED):
        assert set(RAW_COLUMNS[table]) == set(RAW_SCHEMAS[table]), f"columns of {table} without a declaration"
        kind = table_kind(table)
        for column, field in RAW_COLUMNS[table].items():
            assert field is None or field in FIELDS[kind], (table, column, field)


SOURCE_GROUPS = {"nodes/run": ("run",), "nodes/file": FILE_KINDS, "nodes/code": ("code",),
                 "nodes/model_version": ("model_version",)}


def test_every_normalised_table_kind_and_column_is_declared() -> None:
    declared = [*SOURCE_KINDS, *SOURCE_PART_OF]
    assert len(declared) == len(set(declared))
    wanted = {t for t in TABLES if t not in ("nodes", "edges")} | {f"nodes/{k}" for k in NODE_KINDS} \
        | {f"edges/{k}" for k in EDGE_KINDS}
    assert wanted - set(declared) == set(), "tables or node and edge kinds the report does not account for"
    assert set(declared) - wanted == set()
    assert {k for kinds in SOURCE_GROUPS.values() for k in kinds} == set(NODE_KINDS)
    assert set(SOURCE_COLUMNS) == ({t for t in TABLES if t != "nodes"} | set(SOURCE_GROUPS))
    for table, (kind, columns) in SOURCE_COLUMNS.items():
        assert set(columns) == set(TABLES[table.split("/")[0]].columns), f"columns of {table} without a declaration"
        for tool, fields in SOURCE_FIELDS.items():
            assert {k for kinds in SOURCE_KINDS.values() for k in kinds} <= set(fields) - set(VIEWS), tool
            for column, field in columns.items():
                assert field is None or field in fields[kind], (tool, table, column, field)


# -- MLflow -> MLflow ----------------------------------------------------------------------------

def part_of_orphans(raw: SourceRead, table: str) -> int:
    owner, keys = RAW_PART_OF[table]
    return raw.raw[table].join(raw.raw[owner], on=list(keys), how="anti", nulls_equal=True).height


# a derived table's claim, checked on the source
DERIVED_CHECKS: dict[str, Callable[[SourceRead], bool]] = {
    "latest_metrics": lambda read: read.raw["latest_metrics"].height
    == read.raw["metrics"].select("run_uuid", "key").unique().height,
}


def mlflow_travelling(read: SourceRead) -> Callable[[str], pl.DataFrame]:
    """The rows that travel in a migration of every run, as the source says: live runs, the live
    experiments holding them, live logged models of live runs, every registry entry but a deleted
    version."""
    raw = read.raw
    live = pl.col("lifecycle_stage").fill_null("active") != "deleted"
    runs = raw["runs"].filter(live)

    def rows(table: str) -> pl.DataFrame:
        frame = raw[table]
        if table == "experiments":
            return frame.filter(pl.col("experiment_id").is_in(runs["experiment_id"].implode()))
        if table == "logged_models":
            return frame.filter(live & pl.col("source_run_id").is_in(runs["run_uuid"].implode()))
        if table == "model_versions":
            return frame.filter(pl.col("current_stage").fill_null("") != "Deleted_Internal")
        if table == "runs":
            return runs
        return frame
    return rows


def raw_columns() -> dict[str, tuple[str, dict[str, str | None]]]:
    return {table: (table_kind(table), columns) for table, columns in RAW_COLUMNS.items()}


def test_mlflow_to_mlflow_accounts_for_every_row(mlflow_source: SourceSpec, mlflow_read: SourceRead,
                                                  tmp_path: Path) -> None:
    client = client_counts(mlflow_source.options["uri"])
    raw = {t: f.height for t, f in mlflow_read.raw.frames.items()}
    # braid's reader sees what the client sees; the rest is counted by the reader
    assert {t: raw.get(t, 0) for t in CLIENT_TABLES} == {t: client.get(t, 0) for t in CLIENT_TABLES}
    rows = {t: raw.get(t, 0) for t in RAW_SCHEMAS} | client
    # the source holds what the accounting needs to mean something: rows left behind too
    assert all(rows[t] for t in RAW_SCHEMAS), {t: n for t, n in rows.items() if not n}
    report = dry_run(mlflow_source, mlflow_target(tmp_path), tmp_path)
    problems = unaccounted(report, rows, RAW_KINDS)
    problems += [f"{t}: {n} rows belong to no row of {RAW_PART_OF[t][0]}"
                 for t in RAW_PART_OF if (n := part_of_orphans(mlflow_read, t))]
    problems += [f"{t}: not what {RAW_DERIVED[t]!r} makes" for t in RAW_DERIVED
                 if t not in DERIVED_CHECKS or not DERIVED_CHECKS[t](mlflow_read)]
    problems += unreported_columns(report, FIELDS, raw_columns(), mlflow_travelling(mlflow_read))
    assert not problems, "\n".join(problems) + "\n" + report.summary()
    # what is left behind says why
    not_carried = {k: dict(v.not_carried) for k, v in report.kinds.items() if v.not_carried}
    assert {"experiment", "run", "param", "tag", "parent_link", "metric_point", "dataset_input", "model_input",
            "logged_model", "model_metric", "artifact"} <= set(not_carried), not_carried


# -- W&B and DVC -> MLflow -----------------------------------------------------------------------

def source_rows(g: Tables) -> dict[str, int]:
    return {name: rows_of(g, name).height for name in [*SOURCE_KINDS, *SOURCE_PART_OF]}


def linked_files(g: Tables) -> pl.Series:
    """The dataset, model and file nodes a run read or wrote, and those inside them."""
    runs = g["runs"]["id"].implode()
    edges = g["edges"]
    linked = pl.concat([edges.filter((pl.col("kind") == "input") & pl.col("dst").is_in(runs))["src"],
                        edges.filter((pl.col("kind") == "output") & pl.col("src").is_in(runs))["dst"]])
    members = edges.filter(pl.col("kind") == "part_of").select("src", "dst")
    while True:  # a file inside a directory inside an output...
        more = members.filter(pl.col("dst").is_in(linked.implode()) & ~pl.col("src").is_in(linked.implode()))["src"]
        if more.is_empty():
            return linked
        linked = pl.concat([linked, more])


def _file_nodes_linked(g: Tables, report: Report) -> bool:
    """Every dataset, model and file node is a run's input or output, or inside one that is, or is
    counted under unlinked_file."""
    files = g["nodes"].filter(pl.col("kind").is_in(FILE_KINDS))
    return files.filter(~pl.col("id").is_in(linked_files(g).implode())).height == total(report, "unlinked_file")


def _commits(g: Tables) -> pl.DataFrame:
    return g["runs"].drop_nulls("git_commit").select(src="git:" + pl.col("git_commit"), dst="id")


def _same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    return sorted(a.unique().rows()) == sorted(b.unique().rows())


# each SOURCE_PART_OF claim, checked on the source's tables (and the report, for what it counts)
PART_OF_CHECKS: dict[str, Callable[[Tables, Report], bool]] = {
    "nodes/run": lambda g, _: _same(rows_of(g, "nodes/run").select("id"), g["runs"].select("id")),
    "nodes/model_version": lambda g, _: _same(rows_of(g, "nodes/model_version").select("id"),
                                           g["registry"].select(id="model_version_id")),
    "nodes/code": lambda g, _: _same(rows_of(g, "nodes/code").select("id"), _commits(g).select(id="src")),
    "edges/code": lambda g, _: _same(rows_of(g, "edges/code").select("src", "dst"), _commits(g)),
    "edges/registered_as": lambda g, _: _same(rows_of(g, "edges/registered_as").select("src", "dst"),
                                           g["registry"].drop_nulls("model_id").select(src="model_id",
                                                                                        dst="model_version_id")),
    "nodes/dataset": _file_nodes_linked, "nodes/model": _file_nodes_linked, "nodes/artifact": _file_nodes_linked,
    "edges/part_of": lambda g, _: rows_of(g, "edges/part_of").filter(
        ~pl.col("src").is_in(g["nodes"].filter(pl.col("kind").is_in(FILE_KINDS))["id"].implode())).is_empty(),
    "edges/same_as": lambda g, _: rows_of(g, "edges/same_as").is_empty(),
}


def tool_travelling(g: Tables) -> Callable[[str], pl.DataFrame]:
    """The rows that travel in a migration of every run, as the source's tables say: every run,
    the nodes a run read or wrote and those inside them, the runs' inputs, outputs and parents."""
    runs = g["runs"]["id"].implode()
    edges = g["edges"].filter((pl.col("kind").is_in(["input", "parent_of"]) & pl.col("dst").is_in(runs))
                              | ((pl.col("kind") == "output") & pl.col("src").is_in(runs)))
    nodes = g["nodes"]
    frames = {"runs": g["runs"], "edges": edges, "nodes/run": nodes.filter(pl.col("kind") == "run"),
              "nodes/file": nodes.filter(pl.col("kind").is_in(FILE_KINDS)
                                         & pl.col("id").is_in(linked_files(g).implode()))}
    return lambda table: frames[table]


def tool_accounting(spec: SourceSpec, target: SourceSpec, where: Path) -> tuple[Report, list[str]]:
    g = read_tool(spec).graph  # braid's W&B or DVC reader: the tools have no reader of their own here
    rows = source_rows(g)
    report = dry_run(spec, target, where)
    problems = unaccounted(report, rows, SOURCE_KINDS)
    problems += [f"{t}: not {SOURCE_PART_OF[t]!r}" for t in SOURCE_PART_OF
                 if t not in PART_OF_CHECKS or not PART_OF_CHECKS[t](g, report)]
    problems += unreported_columns(report, SOURCE_FIELDS[spec.tool], SOURCE_COLUMNS, tool_travelling(g))
    return report, problems


def test_wandb_to_mlflow_accounts_for_every_row(wandb_folders: tuple[Path, dict], tmp_path: Path) -> None:  # noqa: F811
    report, problems = tool_accounting(wandb_spec(wandb_folders), mlflow_target(tmp_path), tmp_path)
    assert not problems, "\n".join(problems) + "\n" + report.summary()
    assert report.kinds["run_detail"].not_carried and report.kinds["file_detail"].not_carried


@pytest.mark.xdist_group("dvc")
def test_dvc_to_mlflow_accounts_for_every_row(dvc_repos: DvcRepos, tmp_path: Path) -> None:
    report, problems = tool_accounting(dvc_spec(dvc_repos), mlflow_target(tmp_path), tmp_path)
    assert not problems, "\n".join(problems) + "\n" + report.summary()
    for kind in ("other_output", "model_version", "unlinked_file", "run_detail", "file_detail"):
        assert report.kinds[kind].not_carried, kind


# -- into W&B: the W&B target's report (`_wandb_fates`), against the same tables ------------------

# raw MLflow table -> the W&B report kinds counting its rows (W&B counts the tags of an experiment,
# a registered model and a version inside their kind); the logged models' params and tags are the
# model artifact's metadata, and latest_metrics is the history's
WANDB_RAW_KINDS: dict[str, tuple[str, ...]] = {
    "experiments": ("experiment",), "experiment_tags": ("experiment",), "runs": ("run",), "params": ("param",),
    "tags": ("tag", "parent_link"), "metrics": ("metric_point",), "dataset_inputs": ("dataset_input",),
    "model_inputs": ("model_input",), "model_outputs": ("model_output",), "logged_models": ("logged_model",),
    "logged_model_metrics": ("model_metric",), "registered_models": ("registered_model",),
    "registered_model_tags": ("registered_model",), "model_versions": ("model_version",),
    "model_version_tags": ("model_version",), "aliases": ("alias",), "artifacts": ("artifact",),
}
WANDB_RAW_CARRIED_WITH = ("logged_model_params", "logged_model_tags", "latest_metrics")
# per-column cases the W&B report counts inside an entity kind, left out of its rows: kind -> case
WANDB_COLUMN_CASES = {"registered_model": "description", "model_version": "description"}
WANDB_SOURCE_KINDS = SOURCE_KINDS


def wandb_column_cases(raw: Tables) -> tuple[dict[str, int], dict[str, tuple[str, ...]]]:
    """Rows the W&B report counts with a kind's rows (a version's stage is an alias of its link, or,
    offline, not carried with the aliases' reason), and the per-column lines it also counts there."""
    from braid.unify.migrate._wandb_fields import WANDB_FIELDS

    stages = raw["model_versions"].filter(pl.col("current_stage").fill_null("None") != "None")
    return {"alias": held(stages, "current_stage")}, \
        {kind: (WANDB_FIELDS[kind][case][1],) for kind, case in WANDB_COLUMN_CASES.items()}


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.mark.xdist_group("wandb-target")
def test_mlflow_to_wandb_accounts_for_every_row(mlflow_source: SourceSpec, mlflow_read: SourceRead,
                                                 tmp_path: Path, offline_wandb: None) -> None:
    raw = mlflow_read.raw.frames
    rows = {t: raw[t].height if t in raw else 0 for t in RAW_SCHEMAS}
    assert set(WANDB_RAW_KINDS) | set(WANDB_RAW_CARRIED_WITH) == set(RAW_SCHEMAS)
    extra, leave_out = wandb_column_cases(raw)
    report = dry_run(mlflow_source, wandb_target(tmp_path), tmp_path)
    problems = unaccounted(report, rows, WANDB_RAW_KINDS, extra, leave_out)
    assert not problems, "\n".join(problems) + "\n" + report.summary()


@pytest.mark.xdist_group("dvc")
def test_dvc_to_wandb_accounts_for_every_row(dvc_repos: DvcRepos, tmp_path: Path, offline_wandb: None) -> None:
    spec = dvc_spec(dvc_repos)
    g = read_tool(spec).graph
    report = dry_run(spec, wandb_target(tmp_path), tmp_path)
    problems = unaccounted(report, source_rows(g), WANDB_SOURCE_KINDS)
    problems += [f"{t}: not {SOURCE_PART_OF[t]!r}" for t in SOURCE_PART_OF if not PART_OF_CHECKS[t](g, report)]
    assert not problems, "\n".join(problems) + "\n" + report.summary()
