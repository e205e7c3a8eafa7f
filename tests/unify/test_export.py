"""`braid export`: OpenLineage events, pictures and Parquet from a real multi-tool catalog.

The catalog is the demo's (git + a DVC pipeline run by the real dvc + MLflow runs logged by the
real mlflow client), built and synced once for this module. Every OpenLineage event is read back
and checked against the spec's required fields and each facet's `_producer` / `_schemaURL`; the
installed openlineage-python ships no JSON schema files to validate against (checked below), so
the required fields are checked by hand. Events also go through a real HTTP endpoint on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from braid.unify import open_catalog
from braid.unify.catalog import Catalog
from braid.unify.export import facet_schemas, openlineage_events, select_graph, to_mermaid
from braid.unify.export._openlineage import run_id
from braid.unify.export._pictures import label

# the demo workspace is built once per worker and shared with test_query_examples: same group
pytestmark = pytest.mark.xdist_group("demo")

ROOT = Path(__file__).parents[2]
BRAID = Path(sys.executable).parent / "braid"
EVENT_TYPES = {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}
UPSTREAM_OF_V2 = "SELECT id FROM upstream('mlflow:model_version/churn/2')"
# the README's picture: churn v2 and everything it came from
README_QUERY = UPSTREAM_OF_V2 + " UNION ALL SELECT 'mlflow:model_version/churn/2' AS id"


@pytest.fixture(scope="module")
def demo(demo_workspace: Path) -> Path:
    return demo_workspace


@pytest.fixture(scope="module")
def cat(demo: Path) -> Catalog:
    return open_catalog(demo / ".braid")


def braid(demo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BRAID), *args], cwd=demo, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": ""})


# -- OpenLineage ----------------------------------------------------------------------------------
def all_facets(event: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, name, facet) for every facet of an event."""
    for name, facet in (event["run"].get("facets") or {}).items():
        yield "run", name, facet
    for name, facet in (event["job"].get("facets") or {}).items():
        yield "job", name, facet
    for side in ("inputs", "outputs"):
        for ds in event.get(side) or []:
            for group in ("facets", "inputFacets", "outputFacets"):
                for name, facet in (ds.get(group) or {}).items():
                    yield f"{side}.{group}", name, facet


def check_event(event: dict[str, Any]) -> None:
    """The fields OpenLineage.json requires of a RunEvent (2-0-2), and of its parts."""
    assert event["eventType"] in EVENT_TYPES
    when = datetime.fromisoformat(event["eventTime"])
    assert when.tzinfo is not None and "T" in event["eventTime"]
    assert uuid.UUID(event["run"]["runId"])
    assert isinstance(event["job"]["namespace"], str) and event["job"]["namespace"]
    assert isinstance(event["job"]["name"], str) and event["job"]["name"]
    assert re.match(r"^[a-z][a-z0-9+.-]*:", event["producer"])  # a URI
    assert event["schemaURL"].startswith("https://openlineage.io/spec/2-")
    assert event["schemaURL"].endswith("/OpenLineage.json#/$defs/RunEvent")
    for side in ("inputs", "outputs"):
        for ds in event.get(side, []):
            assert isinstance(ds["namespace"], str) and ds["namespace"]
            assert isinstance(ds["name"], str) and ds["name"]
    for where, name, facet in all_facets(event):
        assert facet["_producer"] == event["producer"], (where, name)
        assert re.match(r"^https://[^#]+\.json#/\$defs/[A-Za-z]+Facet$", facet["_schemaURL"]), (where, name)


def check_braid_facet(facet: dict[str, Any]) -> None:
    """A braid facet against the JSON Schema braid publishes for it."""
    name = facet["_schemaURL"].rsplit("/", 1)[1]
    schema = facet_schemas()[f"{name}.json"]["$defs"][name]["allOf"][1]
    for key in schema["required"]:
        assert key in facet, (name, key)
    pytypes = {"string": str, "integer": int, "number": (int, float), "object": dict}
    for key, value in facet.items():
        if key.startswith("_"):
            continue
        spec = schema["properties"][key]  # no field the schema does not declare
        kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        assert isinstance(value, tuple(t for k in kinds for t in (pytypes[k] if isinstance(pytypes[k], tuple)
                                                                   else (pytypes[k],)))), (name, key)
        if "additionalProperties" in spec:
            inner = spec["additionalProperties"]["type"]
            inner = inner if isinstance(inner, list) else [inner]
            for item in value.values():
                assert any(isinstance(item, pytypes[k]) for k in inner), (name, key, item)


def test_the_client_ships_no_spec_schemas_so_fields_are_checked_by_hand() -> None:
    import openlineage.client

    shipped = list(Path(openlineage.client.__file__).parent.rglob("*.json"))
    assert shipped == []  # if a release starts shipping them, validate against them here


@pytest.fixture(scope="module")
def ndjson(demo: Path, cat: Catalog) -> list[dict[str, Any]]:
    out = demo.parent / "events.ndjson"
    proc = braid(demo, "export", "--format", "openlineage", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert f"wrote {len(lines)} OpenLineage events" in proc.stderr
    return [json.loads(line) for line in lines]


def test_every_event_follows_the_spec(ndjson: list[dict[str, Any]]) -> None:
    assert ndjson
    for event in ndjson:
        check_event(event)
        for _, name, facet in all_facets(event):
            if name == "braid":
                check_braid_facet(facet)


def test_every_run_starts_and_ends_with_its_inputs_outputs_and_facets(ndjson: list[dict[str, Any]], cat: Catalog,
                                                                      demo: Path) -> None:
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in ndjson:
        by_run.setdefault(event["run"]["runId"], []).append(event)
    runs = cat.nodes.filter(kind="run")
    versions = cat.nodes.filter(kind="model_version")
    assert set(by_run) == {run_id(i) for i in [*runs["id"], *versions["id"]]}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=demo, capture_output=True, text=True).stdout.strip()
    edges = cat.edges
    for nid in runs["id"]:
        events = by_run[run_id(nid)]
        assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
        end = events[-1]
        assert end["run"]["facets"]["braid"]["nodeId"] == nid
        inputs = {d["facets"]["braid"]["nodeId"] for d in end["inputs"]}
        outputs = {d["facets"]["braid"]["nodeId"] for d in end["outputs"]}
        assert inputs == set(edges.filter(kind="input", dst=nid)["src"])
        assert outputs == set(edges.filter(kind="output", src=nid)["dst"])
        code = end["job"]["facets"]["sourceCodeLocation"]
        assert code["type"] == "git" and code["version"] == head
        params = dict(cat.table("params").filter(run_id=nid).select("key", "value").iter_rows())
        assert end["run"]["facets"]["braid"].get("params", {}) == params
    # an MLflow run is a run of its experiment, a DVC stage of <repo>/<stage>
    trial = runs.filter(name="trial-2").row(0, named=True)
    end = by_run[run_id(trial["id"])][-1]
    assert (end["job"]["namespace"], end["job"]["name"]) == ("mlflow", "churn")
    assert end["job"]["facets"]["ownership"]["owners"] == [{"name": f"user:{trial['user']}"}]
    braid_facet = end["run"]["facets"]["braid"]
    history = cat.table("metrics").filter(run_id=trial["id"], key="loss").sort("step")
    assert braid_facet["metrics"]["loss"] == history["value"][-1] and braid_facet["tool"] == "mlflow"
    tune = runs.filter(name="tune")["id"][0]
    assert end["run"]["facets"]["parent"]["run"]["runId"] == run_id(tune)
    train = next(d for d in end["inputs"] if d["facets"]["braid"]["nodeId"].startswith("mlflow:dataset/train@"))
    assert [f["name"] for f in train["facets"]["schema"]["fields"]] == ["customer_id", "tenure", "monthly", "churned"]
    assert train["facets"]["version"]["datasetVersion"] == train["facets"]["braid"]["digest"]
    # the DVC out it is linked to by path, named as a file in the repository
    assert {"namespace": "file", "name": str(demo.resolve() / "data" / "train.csv"), "type": "DATASET"} in \
        train["facets"]["symlinks"]["identifiers"]
    prep = by_run[run_id(runs.filter(tool="dvc", name="prep")["id"][0])][-1]
    assert prep["job"]["name"] == f"{demo.name}/prep"
    raw = next(d for d in prep["inputs"] if d["name"].endswith("data/raw.csv"))
    lock = (demo / "dvc.lock").read_text()
    assert raw["namespace"] == "file" and raw["facets"]["version"]["datasetVersion"].removeprefix("md5:") in lock
    # registering churn v2 is a run from the model to the version
    v2 = by_run[run_id("mlflow:model_version/churn/2")]
    assert [e["eventType"] for e in v2] == ["START", "COMPLETE"]
    assert [d["facets"]["braid"]["nodeId"] for d in v2[-1]["outputs"]] == ["mlflow:model_version/churn/2"]
    assert [d["facets"]["braid"]["nodeId"] for d in v2[-1]["inputs"]] == \
        cat.edges.filter(kind="registered_as", dst="mlflow:model_version/churn/2")["src"].to_list()


def test_exporting_twice_gives_the_same_events(cat: Catalog, ndjson: list[dict[str, Any]]) -> None:
    from braid.unify.export._openlineage import event_json

    again = [json.loads(event_json(e)) for e in openlineage_events(select_graph(cat))]
    assert again == ndjson


class Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, self.headers.get("Authorization", ""), body))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("Recording", (Recorder,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_events_posted_to_an_endpoint_are_exactly_the_ndjson(demo: Path, ndjson: list[dict[str, Any]],
                                                             endpoint: tuple[str, type[Recorder]]) -> None:
    url, recorder = endpoint
    proc = subprocess.run([str(BRAID), "export", "--format", "openlineage", "--url", url], cwd=demo,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": "", "OPENLINEAGE_API_KEY": "s3cret"})
    assert proc.returncode == 0, proc.stderr
    assert f"posted {len(ndjson)} OpenLineage events" in proc.stderr
    assert [path for path, _, _ in recorder.received] == ["/api/v1/lineage"] * len(ndjson)
    assert {auth for _, auth, _ in recorder.received} == {"Bearer s3cret"}
    assert [json.loads(body) for _, _, body in recorder.received] == ndjson


def test_a_subgraph_query_and_a_full_endpoint_url(demo: Path, cat: Catalog, endpoint: tuple[str, type[Recorder]]) -> None:
    url, recorder = endpoint
    proc = braid(demo, "export", "--format", "openlineage", "--query", UPSTREAM_OF_V2, "--url", f"{url}/custom/lineage")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(body) for _, _, body in recorder.received]
    assert {path for path, _, _ in recorder.received} == {"/custom/lineage"}
    upstream = set(cat.upstream("mlflow:model_version/churn/2")["id"])
    runs = {e["run"]["facets"]["braid"]["nodeId"] for e in events}
    assert runs == {i for i in upstream if i.split(":", 1)[1].startswith("run/")}
    for event in events:
        for side in ("inputs", "outputs"):
            assert {d["facets"]["braid"]["nodeId"] for d in event[side]} <= upstream


def test_an_endpoint_that_is_down_is_one_clear_error(demo: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = braid(demo, "export", "--format", "openlineage", "--url", f"http://127.0.0.1:{port}")
    assert proc.returncode == 1
    assert "posting event 1 of" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--format", "dot", "--url", "http://127.0.0.1:1"], "--url posts OpenLineage events"),
    (["--format", "parquet"], "parquet export writes a folder"),
    (["--format", "dot", "--query", "SELECT name FROM runs"], "no `id` column"),
    (["--format", "mermaid", "--max-nodes", "3"], "more than its limit of 3"),
])
def test_usage_errors(demo: Path, args: list[str], message: str) -> None:
    proc = braid(demo, "export", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


# -- pictures -------------------------------------------------------------------------------------
MERMAID_NODE = re.compile(r'^\s+(n\d+)(\[\(|\(\[|\{\{|\(|\[|>)"(.*)"(\)\]|\]\)|\}\}|\)|\])$')
MERMAID_EDGE = re.compile(r"^\s+(n\d+) (-->|-\.-)\|([a-z_]+)\| (n\d+)$")


def parse_mermaid(text: str) -> tuple[Counter[str], Counter[tuple[str, str, str]]]:
    """Node labels and (label, kind, label) edges of a flowchart this exporter wrote."""
    lines = text.strip().splitlines()
    assert lines[0] == "flowchart LR"
    labels, edges = {}, []
    for line in lines[1:]:
        if m := MERMAID_NODE.match(line):
            labels[m[1]] = m[3]
        elif m := MERMAID_EDGE.match(line):
            edges.append((m[1], m[3], m[4]))
        else:
            assert line.strip().startswith(("classDef ", "class ")), line
    return Counter(labels.values()), Counter((labels[s], k, labels[d]) for s, k, d in edges)


def catalog_structure(nodes: pl.DataFrame, edges: pl.DataFrame) -> tuple[Counter[str], Counter[tuple[str, str, str]]]:
    labels = {r["id"]: "<br/>".join(label(r)) for r in nodes.iter_rows(named=True)}
    return (Counter(labels.values()),
            Counter((labels[s], k, labels[d]) for s, d, k in edges.select("src", "dst", "kind").iter_rows()))


def test_mermaid_has_every_node_and_edge(cat: Catalog) -> None:
    text = to_mermaid(cat.nodes, cat.edges)
    assert parse_mermaid(text) == catalog_structure(cat.nodes, cat.edges)
    nodes, _ = parse_mermaid(text)
    assert {"raw.csv<br/>dvc dataset", "prep<br/>dvc run", "churn v2<br/>mlflow model_version",
            "trial-0<br/>mlflow run"} <= set(nodes)


def test_dot_round_trips_ids_and_edges(demo: Path, cat: Catalog) -> None:
    proc = braid(demo, "export", "--format", "dot")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("digraph braid {") and text.rstrip().endswith("}")
    nodes = set(re.findall(r'^  "([^"]+)" \[label=', text, re.M))
    edges = set(re.findall(r'^  "([^"]+)" -> "([^"]+)" \[label="([a-z_]+)"', text, re.M))
    assert nodes == set(cat.nodes["id"])
    assert edges == set(cat.edges.select("src", "dst", "kind").iter_rows())


def test_graphml_reads_back_with_networkx(demo: Path, cat: Catalog) -> None:
    nx = pytest.importorskip("networkx")
    out = demo.parent / "lineage.graphml"
    proc = braid(demo, "export", "--format", "graphml", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    graph = nx.read_graphml(out, force_multigraph=True)
    assert set(graph.nodes) == set(cat.nodes["id"])
    assert {(u, v, d["kind"]) for u, v, d in graph.edges(data=True)} == \
        set(cat.edges.select("src", "dst", "kind").iter_rows())
    for row in cat.nodes.iter_rows(named=True):
        data = graph.nodes[row["id"]]
        assert data["kind"] == row["kind"] and data.get("digest") == row["digest"] and data.get("size") == row["size"]


def test_parquet_of_a_subgraph(demo: Path, cat: Catalog) -> None:
    out = demo.parent / "parquet"
    proc = braid(demo, "export", "--format", "parquet", "--query", UPSTREAM_OF_V2, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    ids = cat.upstream("mlflow:model_version/churn/2")["id"]
    nodes = pl.read_parquet(out / "nodes.parquet")
    assert_frame_equal(nodes, cat.nodes.filter(pl.col("id").is_in(ids.implode())))
    edges = pl.read_parquet(out / "edges.parquet")
    assert_frame_equal(edges, cat.edges.filter(pl.col("src").is_in(ids.implode()) & pl.col("dst").is_in(ids.implode())))
    params = pl.read_parquet(out / "params.parquet")
    assert set(params["run_id"]) == set(cat.table("params")["run_id"]) & set(ids)
    assert_frame_equal(pl.read_parquet(out / "registry.parquet"), cat.table("registry").clear())


# -- the README's picture -------------------------------------------------------------------------
def readme_picture() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- lineage picture: .*? -->\n```mermaid\n(.*?)```", text, re.S)
    assert match, "README.md has no generated lineage picture"
    return match[1]


def normalise(structure: tuple[Counter[str], Counter[tuple[str, str, str]]]) -> tuple[Counter[str], Counter[Any]]:
    """Commit shas change with every build of the demo: compare them as <sha>."""
    sha = re.compile(r"\b[0-9a-f]{12}\b")
    nodes, edges = structure
    return (Counter({sha.sub("<sha>", k): v for k, v in nodes.items()}),
            Counter({tuple(sha.sub("<sha>", p) for p in k): v for k, v in edges.items()}))


def test_the_readme_picture_is_what_the_exporter_draws_for_the_demo(cat: Catalog) -> None:
    graph = select_graph(cat, README_QUERY)
    assert "mlflow:model_version/churn/2" in graph.nodes["id"]
    drawn = parse_mermaid(to_mermaid(graph.nodes, graph.edges))
    assert normalise(parse_mermaid(readme_picture())) == normalise(drawn)
