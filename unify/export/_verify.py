"""`braid verify`: recompute the digests of the bytes behind a lineage chain and compare them with
what the tools recorded.

Where bytes can be found is a table of locators (`LOCATORS`), one per place a tool keeps them;
each turns the nodes in scope into candidate files with the digest that file must have:

| locator          | files                                                 | expected digest          |
|------------------|-------------------------------------------------------|--------------------------|
| dvc cache        | `<cache>/files/md5/xx/…` (DVC 3), `<cache>/xx/…` (DVC 2) | the md5 in dvc.lock / .dvc |
| dvc workspace    | `<repo>/<path>` of each DVC-tracked file               | the md5 in dvc.lock / .dvc |
| local file       | a node whose uri is a local path or `file://` (MLflow artifacts, W&B references) | the node's `md5:` digest |
| mlflow model     | the files of an MLflow model folder on local disk      | the md5 braid took at sync |
| wandb cache      | `<WANDB_CACHE_DIR>/artifacts/obj/md5/xx/…`             | the W&B manifest's md5    |
| wandb staging    | the SDK's staged copy the manifest names (`local_path`) | the W&B manifest's md5    |

A cache object or an artifact file *is* the node's bytes: any difference is a mismatch. The
workspace is a checkout: it may hold another recorded version of the path (an older commit
checked out, or an uncommitted `dvc repro`), so a workspace file is a mismatch only when it
differs from the version the repository's HEAD (or its workspace lock) names and matches no
version braid knows. DVC 2 hashed text files with CRLF normalised to LF (`md5-d2u`): objects in
the DVC 2 layout and files of DVC 2 entries are hashed the way DVC 2 did.

Files are hashed streaming, each once, in a thread pool (hashlib releases the GIL).

>>> report = verify(open_catalog(".braid"), "mlflow:model_version/churn/2")   # doctest: +SKIP
>>> report.counts                                                            # doctest: +SKIP
{'verified': 14, 'mismatched': 0, 'unreachable': 2}
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

import polars as pl

if TYPE_CHECKING:
    from ..catalog import Catalog

Algorithm = Literal["md5", "md5-d2u"]
Status = Literal["verified", "mismatched", "unreachable"]
STATUSES: tuple[Status, ...] = ("mismatched", "unreachable", "verified")
# node kinds that stand for bytes; runs, commits and registry entries have none to check
BYTE_KINDS = ("dataset", "model", "artifact")

CANDIDATE_SCHEMA = pl.Schema({
    "node": pl.String, "location": pl.String, "file": pl.String, "expected": pl.String, "algorithm": pl.String,
    # True: the file is this node's bytes (a content-addressed object, the node's own artifact file).
    # False: a checkout that may hold another version; `head` says whether this node is the one it should hold.
    "recorded": pl.Boolean, "head": pl.Boolean,
})
REPORT_SCHEMA = pl.Schema({
    "status": pl.String, "tool": pl.String, "node": pl.String, "location": pl.String, "file": pl.String,
    "expected": pl.String, "found": pl.String, "note": pl.String,
})

CHUNK = 1 << 20  # DVC 2 normalised line endings chunk by chunk, in chunks of this size
TEXT_BLOCK = 512  # DVC 2 called a file text from its first 512 bytes
TEXT_CHARS = bytes(range(32, 127)) + b"\n\r\t\f\b"


@dataclass
class Context:
    """What locators need besides the nodes: the whole graph's nodes and edges (a catalog's, or
    one source's), and the DVC sources' repositories."""

    nodes: pl.DataFrame
    edges: pl.DataFrame
    roots: dict[str, str]  # DVC source -> repository folder
    head_nodes: frozenset[str]  # DVC nodes the repository's HEAD (or its workspace lock) names
    wandb_cache: Path | None


@dataclass(frozen=True)
class Locator:
    """One place bytes can be found: a function from nodes in scope to candidate files."""

    find: Callable[[pl.DataFrame, Context], pl.DataFrame]
    doc: str


def _md5_hex(expr: pl.Expr) -> pl.Expr:
    return expr.str.extract(r"^([0-9a-f]{32}(?:\.dir)?)$", 1)


def _candidates(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, dtype=t).alias(c)
                         for c, t in CANDIDATE_SCHEMA.items()])


def dvc_cache(nodes: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """DVC objects by the md5 DVC recorded: DVC 3's `files/md5/` (plain md5), then DVC 2's layout
    (line-ending-normalised md5, as DVC 2 computed it)."""
    from braid.connectors.dvc._cache import Cache  # one definition of where a repo's cache is

    caches = {source: Cache.of_repo(Path(root)).root for source, root in ctx.roots.items()}
    caches = {s: str(r) for s, r in caches.items() if r is not None}
    if not caches:
        return _candidates(pl.DataFrame(schema=CANDIDATE_SCHEMA))
    dvc = nodes.filter(pl.col("source").is_in(list(caches))).with_columns(
        md5=_md5_hex(pl.col("attrs").str.json_path_match("$.md5")),
        cache=pl.col("source").replace_strict(caches, default=None),
    ).filter(pl.col("md5").is_not_null())
    layouts = [(pl.col("cache") + "/files/md5/", "md5"), (pl.col("cache") + "/", "md5-d2u")]
    frames = [dvc.select(
        node="id", location=pl.lit("dvc cache"),
        file=prefix + pl.col("md5").str.slice(0, 2) + "/" + pl.col("md5").str.slice(2),
        expected=pl.col("md5").str.strip_suffix(".dir"), algorithm=pl.lit(algo), recorded=pl.lit(True),
        head=pl.lit(True)) for prefix, algo in layouts]
    return _candidates(pl.concat(frames))


def dvc_workspace(nodes: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """The file at a DVC path in the repository's folder (files only: a directory's files are
    their own nodes)."""
    if not ctx.roots:
        return _candidates(pl.DataFrame(schema=CANDIDATE_SCHEMA))
    # files inside a DVC 2 directory were hashed the DVC 2 way, as their directory was
    edges = ctx.edges.filter(pl.col("kind") == "part_of").select(id="src", parent="dst")
    parents = ctx.nodes.select(parent="id", parent_hash=pl.col("attrs").str.json_path_match("$.hash"))
    dvc = (nodes.filter(pl.col("source").is_in(list(ctx.roots)))
           .with_columns(md5=_md5_hex(pl.col("attrs").str.json_path_match("$.md5")),
                         path=pl.col("attrs").str.json_path_match("$.path"),
                         hash=pl.col("attrs").str.json_path_match("$.hash"),
                         root=pl.col("source").replace_strict(ctx.roots, default=None))
           .filter(pl.col("md5").is_not_null() & ~pl.col("md5").str.ends_with(".dir") & pl.col("path").is_not_null())
           .join(edges, on="id", how="left").join(parents, on="parent", how="left")
           .unique("id", keep="first"))
    legacy = (pl.col("hash") == "md5-d2u").fill_null(False) | (pl.col("parent_hash") == "md5-d2u").fill_null(False)
    return _candidates(dvc.select(
        node="id", location=pl.lit("workspace"), file=pl.col("root") + "/" + pl.col("path"), expected="md5",
        algorithm=pl.when(legacy).then(pl.lit("md5-d2u")).otherwise(pl.lit("md5")), recorded=pl.lit(False),
        head=pl.col("id").is_in(list(ctx.head_nodes))))


def local_path(uri: str | None) -> str | None:
    """The local path a uri names (`/…`, `file:///…`, `file:/…`), or None.

    >>> local_path("file:///tmp/a%20b.csv"), local_path("/tmp/x"), local_path("s3://b/k"), local_path("file://host/x")
    ('/tmp/a b.csv', '/tmp/x', None, None)
    """
    if not uri:
        return None
    if uri.startswith("/"):
        return uri
    if uri.startswith("file:///"):
        return unquote(uri[7:])
    if uri.startswith("file:/") and not uri.startswith("file://"):
        return unquote(uri[5:])
    return None  # another scheme, or file://host/… on another machine


def _local_path(uri: pl.Expr) -> pl.Expr:
    return uri.map_elements(local_path, return_dtype=pl.String, skip_nulls=True)


def local_file(nodes: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """A node whose uri is a local file and whose digest is a plain md5: MLflow artifacts in a local
    store, W&B `file://` references, any tool's file on this machine."""
    del ctx
    files = (nodes.with_columns(md5=pl.col("digest").str.extract(r"^md5:([0-9a-f]{32})$", 1))
             .filter(pl.col("md5").is_not_null() & pl.col("uri").str.contains("^(/|file:)"))
             .with_columns(path=_local_path(pl.col("uri")))
             .filter(pl.col("path").is_not_null()))
    return _candidates(files.select(
        node="id", location=pl.lit("local file"), file="path",
        expected="md5", algorithm=pl.lit("md5"), recorded=pl.lit(True), head=pl.lit(True)))


def mlflow_model(nodes: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """The files of an MLflow model in a local artifact store, with the md5s braid took at sync."""
    del ctx
    models = nodes.filter((pl.col("tool") == "mlflow") & (pl.col("kind") == "model")).with_columns(
        folder=_local_path(pl.col("uri")),
        files=pl.col("attrs").str.json_decode(pl.Struct({"files": pl.List(pl.Struct(
            {"path": pl.String, "md5": pl.String}))})).struct.field("files"),
    ).filter(pl.col("folder").is_not_null() & pl.col("files").list.len().gt(0))
    if models.is_empty():
        return _candidates(pl.DataFrame(schema=CANDIDATE_SCHEMA))
    files = models.select("id", "folder", "files").explode("files").unnest("files").filter(pl.col("md5").is_not_null())
    return _candidates(files.select(
        node="id", location=pl.lit("mlflow model"), file=pl.col("folder").str.strip_suffix("/") + "/" + pl.col("path"),
        expected="md5", algorithm=pl.lit("md5"), recorded=pl.lit(True), head=pl.lit(True)))


def wandb_cache(nodes: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """W&B's artifact file cache, which names each file by the md5 of its bytes."""
    if ctx.wandb_cache is None:
        return _candidates(pl.DataFrame(schema=CANDIDATE_SCHEMA))
    obj = str(ctx.wandb_cache / "artifacts" / "obj" / "md5") + "/"
    files = nodes.filter(pl.col("tool") == "wandb").with_columns(
        md5=pl.col("digest").str.extract(r"^md5:([0-9a-f]{32})$", 1)).filter(pl.col("md5").is_not_null())
    return _candidates(files.select(
        node="id", location=pl.lit("wandb cache"),
        file=pl.lit(obj) + pl.col("md5").str.slice(0, 2) + "/" + pl.col("md5").str.slice(2),
        expected="md5", algorithm=pl.lit("md5"), recorded=pl.lit(True), head=pl.lit(True)))


def wandb_staging(nodes: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """The copy of an artifact file the W&B SDK staged when the run logged it (offline runs keep
    it until `wandb sync` uploads it); the manifest names it."""
    del ctx
    files = nodes.filter(pl.col("tool") == "wandb").with_columns(
        md5=pl.col("digest").str.extract(r"^md5:([0-9a-f]{32})$", 1),
        staged=pl.col("attrs").str.json_path_match("$.staged")).filter(
        pl.col("md5").is_not_null() & pl.col("staged").is_not_null())
    return _candidates(files.select(
        node="id", location=pl.lit("wandb staging"), file="staged",
        expected="md5", algorithm=pl.lit("md5"), recorded=pl.lit(True), head=pl.lit(True)))


LOCATORS: dict[str, Locator] = {
    "dvc cache": Locator(dvc_cache, "DVC's content-addressed cache, by the md5 in dvc.lock or .dvc"),
    "dvc workspace": Locator(dvc_workspace, "the file at a DVC-tracked path in the repository"),
    "local file": Locator(local_file, "a node whose uri is a local file (MLflow artifacts, W&B references)"),
    "mlflow model": Locator(mlflow_model, "the files of an MLflow model folder on local disk"),
    "wandb cache": Locator(wandb_cache, "W&B's artifact file cache (WANDB_CACHE_DIR), by md5"),
    "wandb staging": Locator(wandb_staging, "the copy the W&B SDK staged when an offline run logged the file"),
}


# -- hashing --------------------------------------------------------------------------------------
def is_text(block: bytes) -> bool:
    """DVC 2's guess that a file is text, from its first 512 bytes (binary files kept CRLF).

    >>> is_text(b"a,b\\r\\n1,2\\r\\n"), is_text(b"\\x00\\x01"), is_text(b"")
    (True, False, True)
    """
    if not block:
        return True
    if b"\x00" in block:
        return False
    return len(block.translate(None, TEXT_CHARS)) / len(block) <= 0.30


def hash_file(path: str, algorithm: Algorithm, *, on_bytes: Callable[[int], None] | None = None) -> str | None:
    """The md5 (hex) of a file, streaming; for `md5-d2u`, of its bytes with CRLF made LF as DVC 2
    did (text files only, chunk by chunk). None when the file cannot be read."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb", buffering=0) as fh:
            if algorithm == "md5-d2u":
                first = fh.read(CHUNK)
                text = is_text(first[:TEXT_BLOCK])
                chunk = first
                while chunk:
                    digest.update(chunk.replace(b"\r\n", b"\n") if text else chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                    chunk = fh.read(CHUNK)
            else:
                buf = bytearray(4 * CHUNK)
                view = memoryview(buf)
                while n := fh.readinto(buf):
                    digest.update(view[:n])
                    if on_bytes is not None:
                        on_bytes(n)
    except OSError:
        return None
    return digest.hexdigest()


def _sizes(files: Iterable[str]) -> dict[str, int | None]:
    sizes: dict[str, int | None] = {}
    for file in files:
        try:
            st = os.stat(file)
            sizes[file] = st.st_size if os.path.isfile(file) else None
        except OSError:
            sizes[file] = None
    return sizes


def hash_files(jobs: list[tuple[str, Algorithm]], *, workers: int | None = None, progress: bool = False
               ) -> dict[tuple[str, str], str | None]:
    """Hash each (file, algorithm) once, in parallel, with a progress bar on a terminal."""
    sizes = _sizes({f for f, _ in jobs})
    todo = [(f, a) for f, a in jobs if sizes.get(f) is not None]
    results: dict[tuple[str, str], str | None] = {(f, a): None for f, a in jobs}
    if not todo:
        return results
    # big files first, so the last worker does not start a 2 GB file when the rest are done
    todo.sort(key=lambda job: -(sizes[job[0]] or 0))
    total = sum(sizes[f] or 0 for f, _ in todo)
    workers = workers or min(32, (os.cpu_count() or 2) + 2)
    with _BytesProgress(total, enabled=progress) as advance:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for job, digest in zip(todo, pool.map(lambda j: hash_file(j[0], j[1], on_bytes=advance), todo)):
                results[job] = digest
    return results


class _BytesProgress:
    """A rich bar of bytes hashed on stderr when it is a terminal; otherwise nothing."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        import sys

        self.enabled = enabled and sys.stderr.isatty() and total > 0
        self.total = total
        self.bars = None
        self.lock = threading.Lock()
        self.pending = 0

    def __enter__(self) -> Callable[[int], None] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.bars = Progress(TextColumn("verifying"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                             TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.bars.start()
        self.task = self.bars.add_task("verify", total=self.total)
        return self.advance

    def advance(self, n: int) -> None:
        # batch updates: a 1 MiB chunk is hashed in about a millisecond
        with self.lock:
            self.pending += n
            if self.pending < 16 * CHUNK:
                return
            n, self.pending = self.pending, 0
        self.bars.advance(self.task, n)  # type: ignore[union-attr]

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()


# -- the report -----------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    """One row per file checked (verified or mismatched) and per node braid could not reach."""

    rows: pl.DataFrame  # REPORT_SCHEMA
    scope: int  # nodes in scope
    without_bytes: int  # of which runs, commits and registry entries: nothing to hash
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.counts.get("mismatched", 0) == 0

    def summary(self) -> str:
        c = self.counts
        nodes = self.rows.group_by("status").agg(pl.col("node").n_unique())
        per = dict(nodes.iter_rows())
        return (f"{c.get('verified', 0)} files verified ({per.get('verified', 0)} nodes), "
                f"{c.get('mismatched', 0)} mismatched ({per.get('mismatched', 0)} nodes), "
                f"{c.get('unreachable', 0)} nodes unreachable; {self.scope} nodes in scope, "
                f"{self.without_bytes} of them without bytes (runs, commits, registry entries)")


def _context(catalog: Catalog) -> Context:
    from ..store import load_frame
    from ._graph import repo_roots

    roots = repo_roots(catalog)
    heads: set[str] = set()
    for name in roots:
        entry = catalog.manifest.sources[name]
        head = entry.cursor.get("head")
        if "locations" not in entry.state:
            continue
        locations = load_frame(catalog.path, entry.state["locations"])
        at = {"workspace"}
        if head and "commit_states" in entry.state:
            states = load_frame(catalog.path, entry.state["commit_states"]).filter(pl.col("commit") == head)
            at |= set(states["state"].to_list())
        heads |= set(locations.filter(pl.col("commit").is_in(list(at)))["node_id"].to_list())
    return Context(catalog.nodes, catalog.edges, roots, frozenset(heads), wandb_cache_dir())


def wandb_cache_dir() -> Path | None:
    """W&B's cache folder as the SDK finds it: WANDB_CACHE_DIR, else the platform's user cache."""
    configured = os.environ.get("WANDB_CACHE_DIR")
    if configured:
        return Path(configured)
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - wandb depends on it
        return Path.home() / ".cache" / "wandb"
    return Path(platformdirs.user_cache_dir("wandb"))


def _scope(catalog: Catalog, node: str | None) -> pl.DataFrame:
    if node is None:
        return catalog.nodes
    start = catalog.resolve(node)
    ids = [start, *catalog.upstream(start)["id"].to_list()]
    return catalog.nodes.filter(pl.col("id").is_in(ids))


def _unreachable_note() -> pl.Expr:
    digest, uri = pl.col("digest"), pl.col("uri").fill_null("")
    scheme = digest.str.extract(r"^([A-Za-z0-9_-]+):", 1)
    remote = uri.str.contains(r"^[A-Za-z][A-Za-z0-9+.-]*://") & ~uri.str.starts_with("file://")
    return (pl.when(remote).then(pl.lit("the bytes are remote: ") + uri)
            .when(digest.is_null()).then(pl.lit("no content hash recorded"))
            .when(scheme == "wandb-artifact").then(pl.lit("a W&B artifact: its files are checked one by one"))
            .when(~scheme.is_in(["md5", "md5-d2u", "md5-dir"])).then(
                pl.lit("the recorded ") + scheme + pl.lit(": digest is not a hash of the bytes braid can recompute"))
            .otherwise(pl.lit("no local copy: not in the DVC or W&B cache, the workspace or a local artifact store")))


def verify(catalog: Catalog, node: str | None = None, *, workers: int | None = None, progress: bool = False,
           locators: Iterable[str] | None = None) -> VerifyReport:
    """Recompute the digest of every file braid can reach behind `node` (itself and everything
    upstream of it) or the whole catalog, and compare each with what its tool recorded."""
    scope = _scope(catalog, node)
    byte_nodes = scope.filter(pl.col("kind").is_in(BYTE_KINDS))
    ctx = _context(catalog)
    chosen = list(LOCATORS) if locators is None else list(locators)
    candidates = pl.concat([LOCATORS[name].find(byte_nodes, ctx) for name in chosen]).unique(
        ["node", "file", "algorithm"], keep="first", maintain_order=True)
    jobs = sorted(set(candidates.select("file", "algorithm").iter_rows()))
    digests = hash_files(jobs, workers=workers, progress=progress)  # type: ignore[arg-type]
    found = pl.DataFrame([(f, a, d) for (f, a), d in digests.items()],
                         schema={"file": pl.String, "algorithm": pl.String, "found": pl.String}, orient="row")
    checked = candidates.join(found, on=["file", "algorithm"], how="left").filter(pl.col("found").is_not_null())
    checked = checked.with_columns(match=pl.col("found") == pl.col("expected"))
    # a checkout holding another version braid knows is no mismatch: the file matched some node
    matched_files = checked.filter("match")["file"].unique()
    checked = checked.filter(pl.col("match") | pl.col("recorded")
                             | (pl.col("head") & ~pl.col("file").is_in(matched_files.implode())))
    prefix = pl.col("algorithm") + ":"
    tools = byte_nodes.select(node="id", tool=pl.col("tool").fill_null("git"), kind="kind")
    rows = checked.join(tools, on="node", how="left").select(
        status=pl.when("match").then(pl.lit("verified")).otherwise(pl.lit("mismatched")), tool="tool", node="node",
        location="location", file="file", expected=prefix + pl.col("expected"), found=prefix + pl.col("found"),
        note=pl.when(pl.col("algorithm") == "md5-d2u").then(pl.lit("DVC 2 md5: CRLF counted as LF"))
        .otherwise(pl.lit(None, dtype=pl.String)))
    unreachable = byte_nodes.filter(~pl.col("id").is_in(rows["node"].unique().implode())).select(
        status=pl.lit("unreachable"), tool=pl.col("tool").fill_null("git"), node="id", location=pl.lit(None, pl.String),
        file="uri", expected="digest", found=pl.lit(None, pl.String), note=_unreachable_note())
    order = pl.col("status").replace_strict({s: i for i, s in enumerate(STATUSES)}, return_dtype=pl.Int8)
    report = pl.concat([rows.cast(REPORT_SCHEMA), unreachable.cast(REPORT_SCHEMA)]).sort(
        order, "tool", "node", "location", "file", nulls_last=True)
    counts = {s: int(report.filter(pl.col("status") == s).height) for s in STATUSES}
    counts["unreachable"] = int(report.filter(pl.col("status") == "unreachable")["node"].n_unique())
    return VerifyReport(report, scope.height, scope.height - byte_nodes.height, counts)
