"""Pictures and interchange of the graph: Graphviz dot, Mermaid and GraphML.

Each writer is a pure function from a nodes frame and an edges frame to text. A node shows its
name and what it is (`raw.csv` / `dvc dataset`), never its raw id, so a picture of the same
lineage reads the same whichever run ids and commits it holds; GraphML keeps every column.

>>> import polars as pl
>>> nodes = pl.DataFrame({"id": ["dvc:dataset/raw.csv@ab", "dvc:run/c/prep"], "kind": ["dataset", "run"],
...                       "tool": ["dvc", "dvc"], "name": ["raw.csv", "prep"], "version": [None, None]})
>>> edges = pl.DataFrame({"src": ["dvc:dataset/raw.csv@ab"], "dst": ["dvc:run/c/prep"], "kind": ["input"]})
>>> print(to_mermaid(nodes, edges))
flowchart LR
  n0[("raw.csv<br/>dvc dataset")]
  n1("prep<br/>dvc run")
  n0 -->|input| n1
  classDef dvc fill:#efe7fb,stroke:#945dd6,color:#222
  class n0,n1 dvc
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal
from xml.etree import ElementTree as ET

import polars as pl

from ..errors import UsageError

PictureFormat = Literal["dot", "mermaid", "graphml"]

# how many nodes a format is useful for: a bigger graph is refused with a hint, not drawn
NODE_LIMITS: dict[str, int | None] = {"mermaid": 300, "dot": 5000, "graphml": None}

# kind -> (mermaid opening, closing; graphviz shape, style)
SHAPES: dict[str, tuple[str, str, str, str]] = {
    "dataset": ('[("', '")]', "cylinder", "filled"),
    "run": ('("', '")', "box", "rounded,filled"),
    "model": ('{{"', '"}}', "hexagon", "filled"),
    "artifact": ('["', '"]', "note", "filled"),
    "model_version": ('(["', '"])', "ellipse", "filled"),
    "code": ('>"', '"]', "cds", "filled"),
}
# tool -> (fill, stroke): each tool's own colour, lightened for the fill
COLOURS: dict[str, tuple[str, str]] = {
    "mlflow": ("#e3f3fd", "#0194e2"),
    "dvc": ("#efe7fb", "#945dd6"),
    "wandb": ("#fff5d6", "#ffbe00"),
    "git": ("#eeeeee", "#666666"),
}
# edges that are not cause -> effect are drawn without an arrow head
UNDIRECTED = frozenset({"same_as"})


def _check_size(fmt: str, nodes: pl.DataFrame, max_nodes: int | None) -> None:
    limit = NODE_LIMITS[fmt] if max_nodes is None else max_nodes
    if limit is not None and nodes.height > limit:
        raise UsageError(
            f"the {fmt} picture would have {nodes.height:,} nodes, more than its limit of {limit:,}",
            hint="pick a subgraph, e.g. --query \"SELECT id FROM upstream('<node id>')\", or raise --max-nodes")


def _rows(nodes: pl.DataFrame) -> list[dict[str, Any]]:
    """Nodes in a stable reading order: by tool, kind, name, then id."""
    cols = [c for c in ("id", "kind", "tool", "name", "version") if c in nodes.columns]
    return nodes.select(cols).sort(["tool", "kind", "name", "id"], nulls_last=True).to_dicts()


def label(node: dict[str, Any]) -> tuple[str, str]:
    """A node's two label lines: its name, and what it is.

    >>> label({"id": "git:" + "a" * 40, "kind": "code", "tool": None, "name": "aaaaaaaaaaaa"})
    ('commit aaaaaaaaaaaa', 'git')
    >>> label({"id": "mlflow:model_version/churn/2", "kind": "model_version", "tool": "mlflow", "name": "churn",
    ...        "version": "2"})
    ('churn v2', 'mlflow model_version')
    """
    kind, tool = node["kind"], node.get("tool")
    name = node.get("name") or str(node["id"]).rsplit("/", 1)[-1]
    if kind == "code":
        return f"commit {name}", "git"
    if kind == "model_version" and node.get("version"):
        name = f"{name} v{node['version']}"
    return name, f"{tool or node['id'].split(':', 1)[0]} {kind}"


def _edges(edges: pl.DataFrame, index: dict[str, int]) -> list[tuple[int, int, str]]:
    out = [(index[s], index[d], k) for s, d, k in edges.select("src", "dst", "kind").iter_rows()
           if s in index and d in index]
    return sorted(set(out))


# -- mermaid ------------------------------------------------------------------------------------
def _mermaid_text(text: str) -> str:
    # Mermaid's entity codes: a quote would end the label, < and > would open HTML
    return text.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(nodes: pl.DataFrame, edges: pl.DataFrame, *, max_nodes: int | None = None) -> str:
    """A Mermaid flowchart (GitHub renders it in Markdown), left to right, coloured by tool."""
    _check_size("mermaid", nodes, max_nodes)
    rows = _rows(nodes)
    index = {r["id"]: i for i, r in enumerate(rows)}
    lines = ["flowchart LR"]
    groups: dict[str, list[str]] = {}
    for i, row in enumerate(rows):
        first, second = label(row)
        opening, closing, _, _ = SHAPES.get(row["kind"], ('["', '"]', "", ""))
        lines.append(f"  n{i}{opening}{_mermaid_text(first)}<br/>{_mermaid_text(second)}{closing}")
        groups.setdefault(row.get("tool") or "git", []).append(f"n{i}")
    for src, dst, kind in _edges(edges, index):
        arrow = "-.-" if kind in UNDIRECTED else "-->"
        lines.append(f"  n{src} {arrow}|{_mermaid_text(kind)}| n{dst}")
    for tool, members in sorted(groups.items()):
        fill, stroke = COLOURS.get(tool, COLOURS["git"])
        lines.append(f"  classDef {tool} fill:{fill},stroke:{stroke},color:#222")
        lines.append(f"  class {','.join(members)} {tool}")
    return "\n".join(lines)


# -- graphviz dot -------------------------------------------------------------------------------
def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(nodes: pl.DataFrame, edges: pl.DataFrame, *, max_nodes: int | None = None) -> str:
    """A Graphviz digraph (`dot -Tsvg`), node ids as the tools' ids, labels as names and kinds."""
    _check_size("dot", nodes, max_nodes)
    rows = _rows(nodes)
    index = {r["id"]: i for i, r in enumerate(rows)}
    lines = ["digraph braid {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']
    for row in rows:
        first, second = label(row)
        _, _, shape, style = SHAPES.get(row["kind"], ("", "", "box", "filled"))
        fill, stroke = COLOURS.get(row.get("tool") or "git", COLOURS["git"])
        lines.append(f"  {_dot_string(row['id'])} [label={_dot_string(first + chr(10) + second)}, shape={shape}, "
                     f'style="{style}", fillcolor="{fill}", color="{stroke}", kind={_dot_string(row["kind"])}];')
    for src, dst, kind in _edges(edges, index):
        extra = ", style=dashed, dir=none" if kind in UNDIRECTED else ""
        lines.append(f"  {_dot_string(rows[src]['id'])} -> {_dot_string(rows[dst]['id'])} "
                     f"[label={_dot_string(kind)}{extra}];")
    lines.append("}")
    return "\n".join(lines)


# -- graphml ------------------------------------------------------------------------------------
GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"
# column -> GraphML attr.type; every other column is written as a string
GRAPHML_TYPES: dict[type[pl.DataType], str] = {pl.Int64: "long", pl.Int32: "int", pl.Float64: "double",
                                                pl.Boolean: "boolean"}


def _graphml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def to_graphml(nodes: pl.DataFrame, edges: pl.DataFrame, *, max_nodes: int | None = None) -> str:
    """GraphML (networkx, Gephi, yEd, Cytoscape read it), with every node and edge column as data."""
    _check_size("graphml", nodes, max_nodes)
    ET.register_namespace("", GRAPHML_NS)
    root = ET.Element(f"{{{GRAPHML_NS}}}graphml")
    keys: dict[tuple[str, str], str] = {}
    for domain, frame, skip in (("node", nodes, {"id"}), ("edge", edges, {"src", "dst"})):
        for name, dtype in frame.schema.items():
            if name in skip:
                continue
            key = f"{domain[0]}_{name}"
            keys[(domain, name)] = key
            ET.SubElement(root, f"{{{GRAPHML_NS}}}key", {
                "id": key, "for": domain, "attr.name": name,
                "attr.type": GRAPHML_TYPES.get(type(dtype), "string")})
    graph = ET.SubElement(root, f"{{{GRAPHML_NS}}}graph", {"id": "braid", "edgedefault": "directed"})
    for row in nodes.sort("id").iter_rows(named=True):
        element = ET.SubElement(graph, f"{{{GRAPHML_NS}}}node", {"id": row["id"]})
        _graphml_data(element, row, "node", keys)
    present = set(nodes["id"].to_list())
    for i, row in enumerate(edges.sort("src", "dst", "kind").iter_rows(named=True)):
        if row["src"] not in present or row["dst"] not in present:
            continue
        element = ET.SubElement(graph, f"{{{GRAPHML_NS}}}edge",
                                {"id": f"e{i}", "source": row["src"], "target": row["dst"]})
        _graphml_data(element, row, "edge", keys)
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def _graphml_data(element: ET.Element, row: dict[str, Any], domain: str, keys: dict[tuple[str, str], str]) -> None:
    for name, value in row.items():
        key = keys.get((domain, name))
        if key is not None and value is not None:
            ET.SubElement(element, f"{{{GRAPHML_NS}}}data", {"key": key}).text = _graphml_value(value)


PICTURES: dict[str, Callable[..., str]] = {"dot": to_dot, "mermaid": to_mermaid, "graphml": to_graphml}
