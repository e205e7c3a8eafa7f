"""The `braid` command line.

Exit codes: 0 success, 2 usage or query error, 1 source or catalog failure. Errors are one or
two lines on stderr (`braid: error: ...`), never a traceback unless --debug.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import polars as pl

from .errors import BraidError, UsageError
from .output import FORMATS, emit

# columns a traversal shows in a table; json/csv/parquet get every column
TRAVERSAL_COLUMNS = ("depth", "id", "kind", "tool", "name", "version", "via_kind", "via_src")
EXIT_INTERNAL = 1


class BraidGroup(click.Group):
    """Turns braid's errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BraidError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _fail(str(exc), exc.hint, exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", None, 130)
        except Exception as exc:  # a bug: say so in one line, the traceback is behind --debug
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc}", "run again with --debug for the traceback",
                  EXIT_INTERNAL)


def _fail(message: str, hint: str | None, code: int) -> None:
    click.echo(f"braid: error: {message}", err=True)
    if hint:
        click.echo(f"  hint: {hint}", err=True)
    sys.exit(code)


@click.group(cls=BraidGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="braid.toml to use (default: ./braid.toml).")
@click.option("--catalog", "catalog_path", type=click.Path(path_type=Path, file_okay=False),
              help="Catalog folder (default: the config's `catalog`, or ./.braid).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="braid")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, catalog_path: Path | None, debug: bool) -> None:
    """braid: one lineage graph across MLflow, Weights & Biases and DVC.

    \b
    Start with:   braid init && braid sync
    Then ask:     braid upstream mlflow:model_version/churn/2 --kinds dataset,code
                  braid downstream mlflow:dataset/train@1a2b3c4d
    Try it all:   braid demo
    """
    ctx.obj = {"config_path": config_path, "catalog_path": catalog_path, "debug": debug}


def _config(ctx: click.Context) -> Any:
    from .config import find_config, load_config

    return load_config(find_config(ctx.obj["config_path"]))


def _catalog(ctx: click.Context) -> Any:
    from .catalog import open_catalog

    path = ctx.obj["catalog_path"] or _config(ctx).catalog
    return open_catalog(path)


def format_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="Output format; json is an array of objects.")(f)


# -- init / sync ------------------------------------------------------------------------------
@main.command()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False), default=".")
@click.option("--force", is_flag=True, help="Overwrite an existing braid.toml.")
def init(folder: Path, force: bool) -> None:
    """Discover the sources in FOLDER and write FOLDER/braid.toml."""
    from braid.connectors import discover

    from .config import CONFIG_NAME, render_config

    target = folder / CONFIG_NAME
    if target.exists() and not force:
        raise UsageError(f"{target} exists", hint="use --force to overwrite it")
    found = discover(folder)
    target.write_text(render_config(found), encoding="utf-8")
    click.echo(f"wrote {target} with {len(found)} source(s)")
    for src in found:
        click.echo(f"  {src['name']}: {src['tool']} {src.get('uri', '')}")
    if not found:
        click.echo("  no sources found: add [[sources]] entries by hand (see braid sync --help)")


@main.command()
@click.option("--source", "only", multiple=True, help="Sync only this source (repeatable).")
@click.option("--full", is_flag=True, help="Ignore cursors and read every source from scratch.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.pass_context
def sync(ctx: click.Context, only: tuple[str, ...], full: bool, quiet: bool) -> None:
    """Read every source in braid.toml into the catalog.

    \b
    Each source is read incrementally from its cursor; a re-sync with nothing new writes
    nothing. A source that fails keeps its previous data, and the exit code is 1.
    braid.toml:
      [[sources]]
      tool = "mlflow"
      uri = "sqlite:///mlflow.db"    # postgresql://, mysql://, or http(s)://server
    """
    from .progress import progress_display
    from .sync import sync as run_sync

    config = _config(ctx)
    if ctx.obj["catalog_path"]:
        config = type(config)(config.path, ctx.obj["catalog_path"].resolve(), config.sources)
    with progress_display(enabled=not quiet) as progress:
        report = run_sync(config, only=only, full=full, progress=progress)
    for res in report.sources:
        if res.error is None:
            counts = ", ".join(f"{res.rows.get(t, 0)} {t}" for t in ("nodes", "edges", "metrics"))
            click.echo(f"{res.name} ({res.tool}): {counts} in {res.seconds:.2f}s")
            for note in res.notes:
                click.echo(f"  note: {note}")
    state = f"generation {report.generation}" if report.changed else f"unchanged (generation {report.generation})"
    click.echo(f"catalog {report.catalog}: {state}, {report.same_as} same_as links")
    if report.failed:
        for res in report.failed:
            err = res.error
            assert err is not None
            click.echo(f"braid: error: {err}", err=True)
            if err.hint:
                click.echo(f"  hint: {err.hint}", err=True)
        sys.exit(1)


# -- reading the graph ------------------------------------------------------------------------
def _as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-01-31 or 2026-01-31T12:00Z)") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _stop_at(values: tuple[str, ...]) -> pl.Expr | None:
    """`--stop-at kind=dataset --stop-at tool=dvc`: stop at nodes matching any of them."""
    from .schema import TABLES

    exprs = []
    for item in values:
        column, sep, wanted = item.partition("=")
        if not sep or column not in TABLES["nodes"].schema:
            raise click.BadParameter(f"{item!r}: expected COLUMN=VALUE with a nodes column, e.g. kind=dataset",
                                     param_hint="--stop-at")
        exprs.append(pl.col(column).cast(pl.String) == wanted)
    return functools.reduce(lambda a, b: a | b, exprs) if exprs else None


def traversal_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The traversal flags, shared by upstream and downstream."""
    options = [
        click.option("--depth", type=click.IntRange(min=1), help="At most this many hops."),
        click.option("--kinds", help="Only show these node kinds (comma-separated): run, dataset, model, "
                                     "artifact, model_version, code."),
        click.option("--tools", help="Only show nodes of these tools (comma-separated): mlflow, wandb, dvc."),
        click.option("--stop-at", multiple=True, metavar="COLUMN=VALUE",
                     help="Show but do not go past nodes matching this (repeatable), e.g. kind=dataset."),
        click.option("--as-of", help="Only what existed at this time (ISO 8601, UTC if no zone)."),
        click.option("--no-same-as", is_flag=True, help="Do not follow same_as identity links."),
    ]
    for option in reversed(options):
        f = option(f)
    return format_option(f)


def _traverse(ctx: click.Context, direction: str, node: str, fmt: str, **opts: Any) -> None:
    cat = _catalog(ctx)
    result = getattr(cat, direction)(
        node, depth=opts["depth"], kinds=_csv(opts["kinds"]), tools=_csv(opts["tools"]),
        stop_at=_stop_at(opts["stop_at"]), as_of=_as_of(opts["as_of"]), same_as=not opts["no_same_as"],
    )
    if fmt == "table":
        result = result.select([c for c in TRAVERSAL_COLUMNS if c in result.columns])
    emit(result, fmt)  # type: ignore[arg-type]


@main.command()
@click.argument("node")
@traversal_options
@click.pass_context
def upstream(ctx: click.Context, node: str, fmt: str, **opts: Any) -> None:
    """What NODE came from: datasets, code, runs and models behind it (root cause)."""
    _traverse(ctx, "upstream", node, fmt, **opts)


@main.command()
@click.argument("node")
@traversal_options
@click.pass_context
def downstream(ctx: click.Context, node: str, fmt: str, **opts: Any) -> None:
    """What came from NODE: runs, models and registry versions it fed (impact)."""
    _traverse(ctx, "downstream", node, fmt, **opts)


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("--depth", type=click.IntRange(min=1), help="At most this many hops.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many paths.")
@click.option("--no-same-as", is_flag=True, help="Do not follow same_as identity links.")
@format_option
@click.pass_context
def paths(ctx: click.Context, src: str, dst: str, depth: int | None, limit: int, no_same_as: bool, fmt: str) -> None:
    """The lineage paths from SRC down to DST, shortest first."""
    result = _catalog(ctx).paths(src, dst, depth=depth, same_as=not no_same_as, limit=limit)
    if fmt == "table":
        result = result.select([c for c in ("path", "step", "via_kind", "id", "kind", "name") if c in result.columns])
    emit(result, fmt)  # type: ignore[arg-type]


@main.command()
@click.argument("node")
@format_option
@click.pass_context
def show(ctx: click.Context, node: str, fmt: str) -> None:
    """Everything braid holds about NODE: attributes, links, tags, params, metrics, registry."""
    from .show import node_report

    report = node_report(_catalog(ctx), node)
    if fmt == "table":
        for title, frame in report.items():
            if frame.height:
                click.echo(click.style(title, bold=True))
                emit(frame, "table")
                click.echo()
    elif fmt == "json":
        import json

        click.echo(json.dumps({k: json.loads(_json(v)) for k, v in report.items()}, indent=1))
    else:
        emit(report["node"], fmt)  # type: ignore[arg-type]


def _json(frame: pl.DataFrame) -> str:
    import io

    buf = io.StringIO()
    emit(frame, "json", out=buf)
    return buf.getvalue()


# -- query --------------------------------------------------------------------------------------
def _query_help() -> str:
    from .query import reference

    # click rewraps paragraphs; the reference is laid out already, so each paragraph is kept (\b)
    body = reference(markdown=False).split("\n", 2)[2]
    kept = "\n\n".join("\b\n" + para for para in body.split("\n\n") if para.strip())
    return "Run SQL over the catalog: SQL is one SELECT (or EXPLAIN SELECT); '-' reads it from stdin.\n\n" + kept


def _param(values: tuple[str, ...]) -> dict[str, Any]:
    """`--param run=mlflow:run/1 --param n=5`: numbers become numbers, the rest strings."""
    params: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--param")
        try:
            params[name] = int(value)
        except ValueError:
            try:
                params[name] = float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
            except ValueError:
                params[name] = value
    return params


@main.command(help=_query_help(), short_help="Run SQL with graph functions over the catalog.")
@click.argument("sql")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A value for :NAME (repeatable).")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many rows.")
@click.option("--emit", "engine", type=click.Choice(["duckdb", "spark", "trino", "postgres"]),
              help="Print the query in this engine's SQL (graph functions as WITH RECURSIVE) instead of running it.")
@format_option
@click.pass_context
def query(ctx: click.Context, sql: str, params: tuple[str, ...], limit: int | None, engine: str | None,
          fmt: str) -> None:
    from .errors import QueryError

    text = sys.stdin.read() if sql == "-" else sql
    try:
        if engine:
            from .query import emit_sql

            click.echo(emit_sql(_catalog(ctx), text, _param(params), engine=engine))  # type: ignore[arg-type]
            return
        result = _catalog(ctx).query(text, _param(params), limit=limit)
    except QueryError as exc:
        if ctx.obj.get("debug"):
            raise
        click.echo(f"braid: error: {exc}", err=True)
        caret = exc.caret()
        if caret:
            click.echo(caret, err=True)
        if exc.hint:
            click.echo(f"  hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    if list(result.columns) == ["plan"] and fmt == "table":
        click.echo("\n".join(result["plan"].to_list()))
        return
    emit(result, fmt)  # type: ignore[arg-type]


# -- export / verify ----------------------------------------------------------------------------
EXPORT_FORMATS = ("openlineage", "dot", "mermaid", "graphml", "parquet")


@main.command()
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), required=True,
              help="openlineage: run events as NDJSON (or POSTed with --url); dot, mermaid: pictures; "
                   "graphml: interchange for networkx, Gephi, yEd; parquet: every table, one file each.")
@click.option("--query", "sql", metavar="SQL",
              help="Export only the nodes this query returns (an `id` column) and the edges between them.")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="File to write (a folder for parquet); default: stdout.")
@click.option("--url", help="openlineage only: POST each event to this OpenLineage endpoint (e.g. "
                            "http://localhost:5000, which posts to /api/v1/lineage, or a full endpoint URL).")
@click.option("--max-nodes", type=click.IntRange(min=1),
              help="Largest picture to draw (default: 300 for mermaid, 5000 for dot).")
@click.pass_context
def export(ctx: click.Context, fmt: str, sql: str | None, output: Path | None, url: str | None,
           max_nodes: int | None) -> None:
    """Write the graph, or the part a query chooses, for other tools to read.

    \b
    braid export --format openlineage -o lineage.ndjson
    braid export --format openlineage --url http://localhost:5000      # Marquez, or any OpenLineage endpoint
    braid export --format mermaid --query "SELECT id FROM upstream('mlflow:model_version/churn/2')"
    braid export --format dot | dot -Tsvg > lineage.svg
    braid export --format parquet -o lineage/

    \b
    OpenLineage: one job per MLflow experiment, W&B project or DVC stage; each run a START and
    an end event with its input and output datasets and facets (version = content digest,
    schema, ownership, symlinks for the same bytes in another tool, source code location, and a
    `braid` facet with params, latest metrics, tool and node id). A token for the endpoint
    comes from OPENLINEAGE_API_KEY.
    """
    from .export import PICTURES, openlineage_events, post_events, select_graph, write_ndjson, write_parquet
    from .progress import progress_display

    if url and fmt != "openlineage":
        raise UsageError("--url posts OpenLineage events", hint="use it with --format openlineage")
    if url and output:
        raise UsageError("--url and --output both name where to write", hint="choose one")
    graph = select_graph(_catalog(ctx), sql)
    if fmt == "parquet":
        if output is None:
            raise UsageError("parquet export writes a folder", hint="name it: --output DIR")
        files = write_parquet(graph, output)
        click.echo(f"wrote {len(files)} tables ({graph.nodes.height} nodes, {graph.edges.height} edges) to {output}",
                   err=True)
        return
    if fmt == "openlineage":
        events = openlineage_events(graph)
        if url:
            with progress_display() as progress:
                sent = post_events(events, url, progress=progress)
            click.echo(f"posted {sent} OpenLineage events to {url}", err=True)
            return
        if output is None:
            write_ndjson(events, sys.stdout)
            return
        with output.open("w", encoding="utf-8") as fh:
            n = write_ndjson(events, fh)
        click.echo(f"wrote {n} OpenLineage events to {output}", err=True)
        return
    text = PICTURES[fmt](graph.nodes, graph.edges, max_nodes=max_nodes) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote a {fmt} picture of {graph.nodes.height} nodes to {output}", err=True)


@main.command()
@click.argument("node", required=False)
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Files hashed at once (default: CPUs + 2).")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@format_option
@click.pass_context
def verify(ctx: click.Context, node: str | None, jobs: int | None, quiet: bool, fmt: str) -> None:
    """Prove the bytes behind NODE's lineage (or the whole catalog) are the bytes the tools recorded.

    \b
    For NODE and everything upstream of it, every file braid can reach is hashed again (md5,
    streaming, in parallel) and compared with what its tool recorded:
      dvc cache      objects by the md5 in dvc.lock / .dvc (DVC 2: CRLF counted as LF, as DVC 2 did)
      workspace      the file at a DVC-tracked path (a mismatch only for the version HEAD names)
      local file     MLflow artifacts in a local store, W&B file:// references (md5 braid or W&B took)
      mlflow model   the files of an MLflow model on local disk
      wandb cache    W&B's artifact cache (WANDB_CACHE_DIR), by md5
    Reports each file verified or mismatched (tool, node, expected, found, file) and each node
    whose bytes braid cannot reach. Exit 1 when anything mismatched.
    """
    from .export import verify as run_verify

    report = run_verify(_catalog(ctx), node, workers=jobs, progress=not quiet)
    rows = report.rows
    if fmt == "table":
        rows = rows.with_columns(pl.col("file").fill_null(""))
    emit(rows, fmt)  # type: ignore[arg-type]
    if fmt == "table":
        click.echo(report.summary())
    if not report.ok:
        bad = report.counts["mismatched"]
        click.echo(f"braid: error: {bad} file(s) differ from what their tools recorded", err=True)
        sys.exit(1)


@main.command()
@click.argument("node", required=False)
@click.option("--history", "history_path", type=click.Path(path_type=Path, dir_okay=False),
              help="File of past queries for the query console (default: ~/.local/state/braid/tui-history).")
@click.pass_context
def tui(ctx: click.Context, node: str | None, history_path: Path | None) -> None:
    """Explore the catalog in the terminal, starting at NODE (default: a registry version).

    \b
    Search any node, walk its upstream and downstream across the tools, read every fact braid
    holds about it, draw its neighbourhood, run queries and compare runs. ? lists the keys.
    """
    import os

    from .store import read_manifest

    path = Path(ctx.obj["catalog_path"] or _config(ctx).catalog).resolve()
    read_manifest(path)  # no catalog yet: one line and exit 1, not an empty screen
    if history_path is None:
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        history_path = state / "braid" / "tui-history"
    from braid.tui import run  # only the CLI imports the TUI, and only for this command

    run(path, node=node, history_path=history_path)


@main.command()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False), default="braid-demo")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
def demo(folder: Path, quiet: bool) -> None:
    """Build a realistic workspace in FOLDER with the real tools, sync it, and answer a lineage question."""
    from .demo import run_demo

    run_demo(folder, progress=not quiet)


@main.command()
@click.option("--from", "source", required=True, help="The source to copy from (a name in braid.toml).")
@click.option("--to", "target", required=True, help="The target to copy into (a name in braid.toml).")
@click.option("--select", "select", help="A query whose `id` column names the source runs to migrate "
              "(over the synced catalog), e.g. \"SELECT id FROM runs WHERE project = 'churn'\".")
@click.option("--dry-run", is_flag=True, help="Print the plan and the expected report; write nothing.")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True,
              help="Report format.")
@click.pass_context
def migrate(ctx: click.Context, source: str, target: str, select: str | None, dry_run: bool, fmt: str) -> None:
    """Copy runs from one source in braid.toml to another, with a fidelity report.

    \b
    Directions:
      mlflow -> mlflow   runs, full metric history, artifact files (every path checked),
                         logged models, registry versions with aliases and stages
      wandb  -> mlflow   W&B runs become MLflow runs, a project an experiment
      dvc    -> mlflow   stage executions and experiments become runs, a repository an experiment
      mlflow -> wandb    real W&B run folders written by the wandb SDK into the target's
      dvc    -> wandb    `path`, ready for `wandb sync`; or, for a target with `entity` and
                         `project` (a W&B server, key in WANDB_API_KEY), uploaded by
                         `wandb sync` into that project and read back through the W&B API
    What the target cannot hold is listed in the report as transformed (how) or not carried (why).

    \b
    Re-running creates nothing new; an interrupted migration continues where it stopped (the
    id map is kept in the catalog folder). Exit 1 when the target fails or does not read back
    the same as the source.
    """
    from .migrate import migrate as run_migrate

    config = _config(ctx)
    specs = {s.name: s for s in config.sources}
    for name in (source, target):
        if name not in specs:
            from .errors import MigrationUsageError

            raise MigrationUsageError(f"no source named {name!r} in braid.toml",
                                      hint="sources: " + (", ".join(specs) or "none"))
    catalog = Path(ctx.obj["catalog_path"] or config.catalog).resolve()
    selected = None
    if select is not None:
        ids = _catalog(ctx).query(select)
        if "id" not in ids.columns:
            raise UsageError("--select: the query must return an `id` column of run ids")
        selected = [i for i in ids["id"].to_list() if i and i.startswith(f"{source}:run/")]
    report = run_migrate(specs[source], specs[target], catalog=catalog, select=selected, dry_run=dry_run)
    click.echo(report.to_json() if fmt == "json" else report.summary())
    if report.verified is False:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
