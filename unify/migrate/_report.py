"""The fidelity report: per entity kind, what was carried, transformed (how) and not carried (why),
and the check that backs it: the target read back with braid's own connector and its normalised
graph compared with the source's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from braid.connectors.mlflow._normalise import PARENT, USER

from ._plan import (DELETED, EXPERIMENT_EMPTY, FIELDS, MAX_PARAM_LENGTH, MAX_TAG_LENGTH, METRIC_MODEL_DELETED,
                    METRIC_MODEL_NOT_MIGRATED, METRIC_RUN_NOT_MIGRATED, MODEL_LINKS, MODEL_NO_RUN, MODEL_NOT_CARRIED,
                    MODEL_RUN_NOT_MIGRATED, PARAM_TOO_LONG, PARENT_NOT_MIGRATED, RAW_COLUMNS, RUN_DELETED,
                    SOURCE_ID_TAG, TAG_TOO_LONG, Plan, SourceRead, table_kind)

NEW_ID = FIELDS["run"]["id"][1]
USER_ADDED = "MLflow sets the mlflow.user tag on every new run: a run without it gets the run's user ('unknown')"
EXAMPLES = 5


@dataclass
class KindReport:
    """One entity kind: how many were carried as is, transformed (per how), not carried (per why)."""

    carried: int = 0
    transformed: Counter[str] = field(default_factory=Counter)
    not_carried: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"carried": self.carried, "transformed": dict(self.transformed),
                "not_carried": dict(self.not_carried)}


@dataclass
class Report:
    """What a migration did (or, for a dry run, would do) and whether the target reads back the same."""

    source: str
    target: str
    dry_run: bool
    kinds: dict[str, KindReport]
    created: Counter[str] = field(default_factory=Counter)
    reused: Counter[str] = field(default_factory=Counter)
    verification: dict[str, dict[str, Any]] | None = None

    @property
    def verified(self) -> bool | None:
        """True when every compared kind matched; None when nothing was compared (dry run)."""
        if self.verification is None:
            return None
        return all(v["missing"] == 0 and v["unexpected"] == 0 for v in self.verification.values())

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "dry_run": self.dry_run,
                "kinds": {k: v.as_dict() for k, v in self.kinds.items()},
                "created": dict(self.created), "reused": dict(self.reused),
                "verified": self.verified, "verification": self.verification}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=False)

    def summary(self) -> str:
        """The report as a few readable lines."""
        head = "plan (dry run, nothing written)" if self.dry_run else "migrated"
        lines = [f"{head}: {self.source} -> {self.target}"]
        for kind, rep in self.kinds.items():
            total = rep.carried + sum(rep.transformed.values()) + sum(rep.not_carried.values())
            if not total:
                continue
            lines.append(f"  {kind}: {rep.carried} carried, {sum(rep.transformed.values())} transformed, "
                         f"{sum(rep.not_carried.values())} not carried")
            lines += [f"    transformed {n}: {how}" for how, n in rep.transformed.items()]
            lines += [f"    not carried {n}: {why}" for why, n in rep.not_carried.items()]
        if not self.dry_run:
            created = ", ".join(f"{n} {k}" for k, n in self.created.items() if n) or "nothing"
            reused = ", ".join(f"{n} {k}" for k, n in self.reused.items() if n) or "nothing"
            lines.append(f"  created {created}; already in the target: {reused}")
        if self.verification is not None:
            state = "the target reads back the same" if self.verified else "the target DIFFERS from the source"
            lines.append(f"  verified by reading the target back: {state}")
            for kind, v in self.verification.items():
                if v["missing"] or v["unexpected"]:
                    lines.append(f"    {kind}: {v['missing']} missing, {v['unexpected']} unexpected, "
                                 f"e.g. {v['examples'][:2]}")
        return "\n".join(lines)


def expected_report(plan: Plan, *, dry_run: bool) -> Report:
    """The report the plan leads to, before anything is written: every row of the source's tables
    under one kind (`RAW_KINDS`), what is left behind with its reason."""
    kinds = {kind: KindReport() for kind in FIELDS}
    for count in (_experiments, _runs, _run_rows, _models, _model_rows, _registry, _artifacts):
        count(plan, kinds)
    columns = {table: (table_kind(table), named) for table, named in RAW_COLUMNS.items()}
    lost_values(kinds, FIELDS, columns, lambda table: _travelling(plan, table))
    return Report(plan.source, plan.target, dry_run, kinds)


def _add(kinds: dict[str, KindReport], kind: str, why: str, n: int, *, how: str = "not_carried") -> None:
    """Count `n` rows of `kind` as not carried (or transformed) for `why`; zero adds no line."""
    if n:
        getattr(kinds.setdefault(kind, KindReport()), how)[why] += n


LIVE = pl.col("lifecycle_stage").fill_null("active") != "deleted"


def _deleted_runs(plan: Plan) -> list[str]:
    return [r for r, why in plan.skipped_runs.items() if why == DELETED]


def _experiments(plan: Plan, kinds: dict[str, KindReport]) -> None:
    """The planned experiments get a new id; the others hold no live run, or are deleted (an
    experiment whose runs are not selected is outside the report, like the runs)."""
    raw = plan.read.raw
    kinds["experiment"].transformed[FIELDS["experiment"]["id"][1]] = len(plan.experiment_ids)
    rest = raw["experiments"].filter(~pl.col("experiment_id").is_in(plan.experiment_ids))
    with_runs = raw["runs"].filter(LIVE)["experiment_id"].implode()
    _add(kinds, "experiment", DELETED, rest.filter(~LIVE).height)
    _add(kinds, "experiment", EXPERIMENT_EMPTY, rest.filter(LIVE & ~pl.col("experiment_id").is_in(with_runs)).height)


def _runs(plan: Plan, kinds: dict[str, KindReport]) -> None:
    kinds["run"].transformed[NEW_ID] = len(plan.run_ids)
    for why in plan.skipped_runs.values():
        kinds["run"].not_carried[why] += 1
    has_user = plan.frame("tags").filter(pl.col("key") == USER)["run_uuid"].to_list()
    # the run's user column becomes the tag MLflow sets on every new run
    _add(kinds, "run_detail", f"user: {USER_ADDED}", len(set(plan.run_ids) - set(has_user)), how="transformed")


def _run_rows(plan: Plan, kinds: dict[str, KindReport]) -> None:
    """Params, metric points, tags, parent links and dataset inputs of the planned runs, and of the
    deleted ones (not carried)."""
    params = plan.frame("params")
    long_params = int((params["value"].str.len_chars() > MAX_PARAM_LENGTH).sum())
    kinds["param"].carried = params.height - long_params
    _add(kinds, "param", PARAM_TOO_LONG, long_params, how="transformed")
    kinds["metric_point"].carried = plan.frame("metrics").height
    tags = plan.frame("tags")
    links = tags.filter(pl.col("key") == PARENT)
    tags = tags.filter(pl.col("key") != PARENT)
    long_tags = int((tags["value"].str.len_chars() > MAX_TAG_LENGTH).sum())
    kinds["tag"].carried = tags.height - long_tags
    _add(kinds, "tag", TAG_TOO_LONG, long_tags, how="transformed")
    linked = int(links["value"].is_in(plan.run_ids).sum())
    _add(kinds, "parent_link", FIELDS["parent_link"]["parent"][1], linked, how="transformed")
    _add(kinds, "parent_link", PARENT_NOT_MIGRATED, links.height - linked)
    kinds["dataset_input"].carried = plan.frame("dataset_inputs").height
    deleted = pl.col("run_uuid").is_in(_deleted_runs(plan))
    raw = plan.read.raw
    for table, kind in (("params", "param"), ("metrics", "metric_point"), ("dataset_inputs", "dataset_input")):
        _add(kinds, kind, RUN_DELETED, raw[table].filter(deleted).height)
    left = raw["tags"].filter(deleted)
    _add(kinds, "parent_link", RUN_DELETED, left.filter(pl.col("key") == PARENT).height)
    _add(kinds, "tag", RUN_DELETED, left.filter(pl.col("key") != PARENT).height)


def _models(plan: Plan, kinds: dict[str, KindReport]) -> None:
    raw = plan.read.raw
    every = raw["logged_models"]
    models = every.filter(LIVE)
    carried = plan.logged_models()
    kinds["logged_model"].transformed[FIELDS["logged_model"]["id"][1]] = carried.height
    runless = int(models["source_run_id"].is_null().sum())
    for why, n in ((MODEL_RUN_NOT_MIGRATED, models.height - carried.height - runless), (MODEL_NO_RUN, runless),
                   (DELETED, every.height - models.height)):
        _add(kinds, "logged_model", why, n)


def _model_rows(plan: Plan, kinds: dict[str, KindReport]) -> None:
    """Metrics logged against logged models, and runs' links to them."""
    raw = plan.read.raw
    live = raw["logged_models"].filter(LIVE)["model_id"].implode()
    # a metric logged against a model travels when both the model and the run that logged it do
    every = raw["logged_model_metrics"]
    model_metrics = every.filter(pl.col("model_id").is_in(live))
    with_model = model_metrics.filter(pl.col("model_id").is_in(plan.logged_models()["model_id"].implode()))
    kinds["model_metric"].carried = plan.model_metrics().height
    for why, n in ((METRIC_MODEL_NOT_MIGRATED, model_metrics.height - with_model.height),
                   (METRIC_RUN_NOT_MIGRATED, with_model.height - kinds["model_metric"].carried),
                   (METRIC_MODEL_DELETED, every.height - model_metrics.height)):
        _add(kinds, "model_metric", why, n)
    # a run's link to a logged model travels when both the run and the model do; the plan names
    # the links of the planned runs and of the models that travel: a deleted run's others are added
    for kind, (table, _, _) in MODEL_LINKS.items():
        links = plan.model_links(kind)
        kinds[kind].carried = int(links["why"].is_null().sum())
        for why, n in links.drop_nulls("why").group_by("why", maintain_order=True).len().iter_rows():
            kinds[kind].not_carried[why] = n
        named = links.select("run_uuid", "model_id").unique()
        rest = raw[table].join(named, on=["run_uuid", "model_id"], how="anti", nulls_equal=True)
        _add(kinds, kind, RUN_DELETED, rest.filter(pl.col("run_uuid").is_in(_deleted_runs(plan))).height)


def _registry(plan: Plan, kinds: dict[str, KindReport]) -> None:
    raw = plan.read.raw
    kinds["registered_model"].carried = raw["registered_models"].height
    deleted = raw["model_versions"]["current_stage"].fill_null("") == "Deleted_Internal"
    kinds["model_version"].carried = int((~deleted).sum())
    _add(kinds, "model_version", DELETED, int(deleted.sum()))
    kinds["alias"].carried = raw["aliases"].height


def _artifacts(plan: Plan, kinds: dict[str, KindReport]) -> None:
    """The files braid lists (local artifact roots) of the planned runs and the models that travel;
    a remote root's files are counted as they are copied (`report_copies`)."""
    files = plan.read.raw["artifacts"]
    models = plan.logged_models()["model_id"].implode()
    travels = pl.col("owner").is_in(plan.run_ids) | pl.col("owner").is_in(models)
    kinds["artifact"].carried = files.filter(travels).height
    rest = files.filter(~travels)
    _add(kinds, "artifact", RUN_DELETED,
         rest.filter((pl.col("owner_kind") == "run") & pl.col("owner").is_in(_deleted_runs(plan))).height)
    _add(kinds, "artifact", MODEL_NOT_CARRIED, rest.filter(pl.col("owner_kind") == "model").height)


# the rows of each table that travel, for counting the values of their columns that do not
def _travelling(plan: Plan, table: str) -> pl.DataFrame:
    raw = plan.read.raw
    if table == "experiments":
        return raw[table].filter(pl.col("experiment_id").is_in(plan.experiment_ids))
    if table == "logged_models":
        return plan.logged_models()
    if table == "model_versions":
        return raw[table].filter(pl.col("current_stage").fill_null("") != "Deleted_Internal")
    return plan.frame(table) if table in ("runs", "registered_models") else raw[table]


def lost_values(kinds: dict[str, KindReport], fields: dict[str, dict[str, tuple[str, str]]],
                columns: dict[str, tuple[str, dict[str, str | None]]], rows_of: Callable[[str], pl.DataFrame]) -> None:
    """Per column (`columns`: table -> its kind and column -> field) a travelling row (`rows_of`)
    holds a value in and `fields` says is not carried: the count of those values, under
    `<kind>_detail`, as "<field>: <why>"."""
    for table, (kind, named) in columns.items():
        lost = {c: f for c, f in named.items() if f is not None and fields[kind][f][0] == "not_carried"}
        if not lost:
            continue
        rows = rows_of(table)
        for column, name in lost.items():
            _add(kinds, f"{kind}_detail", f"{name}: {fields[kind][name][1]}", int(rows.select(held(column).sum()).item()))


def held(column: str) -> pl.Expr:
    """Whether a row holds a value in `column`: not null, nor empty text or an empty JSON object or list."""
    value = pl.col(column)
    return value.is_not_null() & ~value.cast(pl.String).is_in(["", "{}", "[]", "null"])


# -- verification: the two normalised graphs, compared --------------------------------------------

def run_map(target: SourceRead, source: str, target_name: str) -> dict[str, str]:
    """Target run node id -> source run node id, from the braid.source_id tags braid wrote."""
    tags = target.graph["tags"].filter(
        (pl.col("key") == SOURCE_ID_TAG) & pl.col("node_id").str.starts_with(f"{target_name}:run/"))
    return {t: f"{source}:run/{s}" for t, s in tags.select("node_id", "value").iter_rows()}


def _align(frame: pl.DataFrame, columns: tuple[str, ...], runs: dict[str, str], source: str, target: str) -> pl.DataFrame:
    """Target ids rewritten into the source's: run ids through the map, other ids by source name."""
    return frame.with_columns([
        pl.col(c).replace_strict(runs, default=pl.col(c).str.replace(f"^{target}:", f"{source}:"))
        for c in columns])


def _as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column as text, so NaN equals NaN and lists compare by value."""
    return frame.select([
        (pl.col(c).list.join("\x1f") if isinstance(t, pl.List)
         else pl.col(c).cast(pl.String)).alias(c) for c, t in frame.schema.items()]).fill_null("\0null")


def _row_digests(frame: pl.DataFrame) -> pl.DataFrame:
    """Two 64-bit hashes of every row, sorted. Hashing takes -0.0 for 0.0, which their text
    tells apart: a float column brings a flag for -0.0 along."""
    parts: list[pl.Expr] = []
    for c, t in frame.schema.items():
        parts.append(pl.col(c))
        if t in (pl.Float32, pl.Float64):
            parts.append(((pl.col(c) == 0) & (1.0 / pl.col(c) < 0)).alias(f"{c}\x00negative zero"))
    row = pl.struct(parts)
    return frame.select(a=row.hash(0x5EED), b=row.hash(0xB1A5)).sort("a", "b")


def _compare(expected: pl.DataFrame, actual: pl.DataFrame) -> dict[str, Any]:
    actual = actual.select(expected.columns)
    if (expected.schema == actual.schema and expected.height == actual.height
            and _row_digests(expected).equals(_row_digests(actual))):
        # the same multiset of typed rows (128 bits of hash per row): what the exact comparison
        # below finds for a full match, in a fraction of its time (it casts every value to text)
        return {"source": expected.height, "target": actual.height, "missing": 0, "unexpected": 0, "examples": []}
    exp, act = _as_text(expected), _as_text(actual)
    keyed = [c for c in exp.columns]
    exp = exp.with_columns(n=pl.int_range(pl.len()).over(keyed))
    act = act.with_columns(n=pl.int_range(pl.len()).over(keyed))
    missing = exp.join(act, on=[*keyed, "n"], how="anti")
    unexpected = act.join(exp, on=[*keyed, "n"], how="anti")
    examples = [{"missing": r} for r in missing.drop("n").head(EXAMPLES).to_dicts()]
    examples += [{"unexpected": r} for r in unexpected.drop("n").head(EXAMPLES).to_dicts()]
    return {"source": expected.height, "target": actual.height, "missing": missing.height,
            "unexpected": unexpected.height, "examples": examples}


def _added_user_tags(g: dict[str, pl.DataFrame], planned: list[str]) -> pl.DataFrame:
    """MLflow's create_run always sets mlflow.user: for runs without it, the run's user (or 'unknown')."""
    has = g["tags"].filter(pl.col("key") == USER)["node_id"].to_list()
    return g["runs"].filter(pl.col("id").is_in(planned) & ~pl.col("id").is_in(has)).select(
        node_id="id", key=pl.lit(USER), value=pl.col("user").fill_null("unknown"))


RUN_COLUMNS = ("id", "project", "name", "status", "started_at", "ended_at", "user", "git_commit", "git_branch",
               "git_remote")


def with_full_values(frame: pl.DataFrame, long_values: dict[tuple[str, str, str], str], kind: str, id_col: str,
                     source: str) -> pl.DataFrame:
    """Target values with the full text of those written as artifacts (`long_values`: (kind,
    source run uuid, key) -> the text read back), for comparing with the source in full."""
    if not long_values:
        return frame
    fix = pl.DataFrame([{"_id": f"{source}:run/{r}", "key": k, "_full": v}
                        for (kd, r, k), v in long_values.items() if kd == kind],
                       schema={"_id": pl.String, "key": pl.String, "_full": pl.String})
    return frame.join(fix, left_on=[id_col, "key"], right_on=["_id", "key"], how="left").with_columns(
        value=pl.coalesce("_full", "value")).drop("_full")


def verify(plan: Plan, target: SourceRead, long_values: dict[tuple[str, str, str], str]) -> dict[str, dict[str, Any]]:
    """Compare the source's graph (the planned runs) with the target's, read back by braid's connector.

    Values written in full as artifacts (`long_values`: (kind, run uuid, key) -> the text read back
    from the target) are compared in full; everything braid itself added (braid.* tags) is left out.
    """
    src, tgt = plan.source, plan.target
    g, t = plan.read.graph, target.graph
    runs = run_map(target, src, tgt)
    planned = [f"{src}:run/{r}" for r in plan.run_ids]
    mine = list(runs.values())
    out: dict[str, dict[str, Any]] = {}

    def pick(frame: pl.DataFrame, column: str, ids: list[str]) -> pl.DataFrame:
        return frame.filter(pl.col(column).is_in(ids))

    out["run"] = _compare(pick(g["runs"], "id", planned).select(RUN_COLUMNS),
                          pick(_align(t["runs"], ("id",), runs, src, tgt), "id", mine).select(RUN_COLUMNS))

    def full(kind: str, frame: pl.DataFrame, id_col: str) -> pl.DataFrame:
        return with_full_values(frame, long_values, kind, id_col, src)

    params = pick(_align(t["params"], ("run_id",), runs, src, tgt), "run_id", mine)
    out["param"] = _compare(pick(g["params"], "run_id", planned).select("run_id", "key", "value"),
                            full("params", params, "run_id"))
    out["metric_point"] = _compare(
        pick(g["metrics"], "run_id", planned).select("run_id", "key", "step", "timestamp", "value"),
        pick(_align(t["metrics"], ("run_id",), runs, src, tgt), "run_id", mine))
    own = pl.col("key").str.starts_with("braid.") | (pl.col("key") == PARENT)
    tags = pick(_align(t["tags"], ("node_id",), runs, src, tgt), "node_id", mine).filter(~own)
    expected_tags = pick(g["tags"], "node_id", planned).filter(~own).select("node_id", "key", "value")
    expected_tags = pl.concat([expected_tags, _added_user_tags(g, planned)])
    out["tag"] = _compare(expected_tags,
                          full("tags", tags, "node_id"))
    edges_t = _align(t["edges"], ("src", "dst"), runs, src, tgt)
    for kind, edge_kind in (("parent_link", "parent_of"), ("dataset_input", "input")):
        cols = ("src", "dst", "attrs") if kind == "dataset_input" else ("src", "dst")
        exp = g["edges"].filter((pl.col("kind") == edge_kind) & pl.col("dst").is_in(planned)
                                & pl.col("src").str.starts_with(f"{src}:run/" if kind == "parent_link" else f"{src}:dataset/"))
        if kind == "parent_link":
            exp = exp.filter(pl.col("src").is_in(planned))
        act = edges_t.filter((pl.col("kind") == edge_kind) & pl.col("dst").is_in(mine)
                             & pl.col("src").str.starts_with(f"{src}:run/" if kind == "parent_link" else f"{src}:dataset/"))
        out[kind] = _compare(exp.select(cols), act)
    datasets_t = _align(t["nodes"].filter(pl.col("kind") == "dataset"), ("id",), runs, src, tgt)
    used = g["edges"].filter((pl.col("kind") == "input") & pl.col("dst").is_in(planned)
                             & pl.col("src").str.starts_with(f"{src}:dataset/"))["src"].to_list()
    dcols = ("id", "name", "version", "digest", "uri", "attrs")
    out["dataset"] = _compare(g["nodes"].filter(pl.col("id").is_in(used)).select(dcols),
                              datasets_t.filter(pl.col("id").is_in(used)))
    rcols = ("name", "version", "aliases", "stage")
    out["model_version"] = _compare(g["registry"].select(rcols), t["registry"])
    return out
