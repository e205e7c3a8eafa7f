"""The bulk decode of history and summary records (`_bulk`) against the record-by-record fold.

`read_segment` decodes history and summary records in bulk and falls back to parsing them one
by one when a check fails; both must leave the same segment. The reference here folds every
record with wandb's own `Record` parser, one at a time (`_fold_one_by_one`). The logs are
written by the installed SDK (offline: nested keys, NaN and infinities, strings, booleans, a
value longer than most, summary sets and a remove) and by five older SDK releases
(tests/data/wandb-runs); the records whose type protobuf reads differently from their first
field are built with wandb's `Record` class.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from braid.connectors.wandb import _bulk, _native
from braid.connectors.wandb._fold import Segment, _fold_one_by_one, read_segment
from braid.connectors.wandb._txlog import parse_record, read_log

pytestmark = [pytest.mark.xdist_group("wandb"), pytest.mark.usefixtures("both_decoders")]

LEGACY = Path(__file__).parents[1] / "data" / "wandb-runs"
SDKS = ["sdk-0.15.12", "sdk-0.16.6", "sdk-0.17.5", "sdk-0.17.5-core", "sdk-0.19.11"]
HEADER = b":W&B\xe1\xbe\x00"
ROWS = 400
WRITER = f"""
import math, wandb
run = wandb.init(project="bulk", name="mixed", config={{"lr": 0.1}})
for step in range({ROWS}):
    run.log({{"loss": 1 / (step + 1), "eval": {{"f1": {{"macro": step / 7}}, "acc": step % 3}},
             "odd": [math.nan, math.inf, -math.inf, step][step % 4], "note": "n" * (step % 50),
             "text": f"step {{step}}", "flag": step % 2 == 0, "big": "x" * (200 if step == 3 else 1)}})
run.summary["best"] = 0.5
run.summary["nested"] = {{"a": 1, "b": {{"c": 2}}}}
run.summary["gone"] = 3
del run.summary["gone"]
run.summary["best"] = 0.75
run.finish()
"""


@pytest.fixture(scope="module")
def sdk_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run written now by the installed wandb in offline mode."""
    work = tmp_path_factory.mktemp("wandb-bulk")
    (work / "train.py").write_text(WRITER)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(work), "WANDB_SILENT": "true",
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "train.py"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (work / "wandb").glob("offline-run-*/run-*.wandb")
    return path


def reference(path: Path) -> Segment:
    """The segment every record parsed on its own leaves."""
    log = read_log(path)
    seg = Segment(str(path), "ref")
    _fold_one_by_one(seg, list(zip(log.offsets, log.payloads, strict=True)), [])
    return seg


def folded(seg: Segment) -> dict[str, Any]:
    """What the history and summary records leave in a segment, in order, values as text."""
    h = seg.history
    return {"steps": list(h.steps), "counts": list(h.counts), "keys": list(h.keys), "values": list(h.values),
            "summary": list(seg.summary_ops.items()), "latest": seg.latest, "config": list(seg.config_ops.items()),
            "exit": (seg.has_exit, seg.exit_code)}


def payloads_of(path: Path, kind: str) -> list[bytes]:
    return [p for p in read_log(path).payloads if parse_record(p)[0] == kind]


def test_sdk_run_bulk_equals_one_by_one(sdk_run: Path) -> None:
    bulk, ref = folded(read_segment(sdk_run)), folded(reference(sdk_run))
    assert bulk == ref  # values stay the JSON text W&B wrote (NaN as the token)
    assert len(bulk["steps"]) == ROWS and bulk["steps"] == list(range(ROWS))
    # the history was decoded in bulk (the summary, with its remove, record by record)
    assert _bulk.history(payloads_of(sdk_run, "history"), _bulk._Keys()) is not None
    assert _bulk.summary(payloads_of(sdk_run, "summary"), _bulk._Keys()) is None
    # what the SDK wrote, as the per-record parse reads it
    first = dict(zip(bulk["keys"][:bulk["counts"][0]], bulk["values"][:bulk["counts"][0]], strict=True))
    assert {"eval.f1.macro", "eval.acc", "odd", "note", "text", "flag", "big", "loss"} <= set(first)
    odd = [v for k, v in zip(bulk["keys"], bulk["values"], strict=True) if k == "odd"]
    assert odd[:4] == ["NaN", "Infinity", "-Infinity", "3"]  # as logged: nan, inf, -inf, step 3
    nan, inf, minus_inf = map(float, odd[:3])
    assert math.isnan(nan) and (inf, minus_inf) == (math.inf, -math.inf)
    summary = dict(bulk["summary"])
    assert summary[("best",)] == "0.75" and summary[("gone",)] is None


def test_sdk_run_before_its_summary_remove_is_all_bulk(sdk_run: Path, tmp_path: Path) -> None:
    """The same log cut at the record that removes a summary key: summary in bulk too."""
    log = read_log(sdk_run)
    (remove_at,) = [offset for offset, kind, record in log.records()
                    if kind == "summary" and record.summary.remove]
    cut = tmp_path / sdk_run.name
    cut.write_bytes(sdk_run.read_bytes()[:remove_at])
    assert _bulk.summary(payloads_of(cut, "summary"), _bulk._Keys()) is not None
    bulk, ref = folded(read_segment(cut)), folded(reference(cut))
    assert bulk == ref  # values stay the JSON text W&B wrote (NaN as the token)
    summary = dict(bulk["summary"])
    assert summary[("gone",)] == "3" and json.loads(summary[("nested",)]) == {"a": 1, "b": {"c": 2}}


@pytest.mark.parametrize("sdk", SDKS)
def test_legacy_runs_bulk_equals_one_by_one(sdk: str) -> None:
    """Python writers send `key` with nested JSON, wandb-core `nested_key` paths; 0.17.5-core
    puts `control` on summary records."""
    (path,) = (LEGACY / sdk).glob("*/run-*.wandb")
    bulk, ref = folded(read_segment(path)), folded(reference(path))
    assert bulk == ref  # values stay the JSON text W&B wrote (NaN as the token)
    assert len(bulk["steps"]) == 3000
    assert _bulk.history(payloads_of(path, "history"), _bulk._Keys()) is not None
    assert _bulk.summary(payloads_of(path, "summary"), _bulk._Keys()) is not None


# -- records protobuf reads as another type than their first field says ----------------------------

def record(**fields: Any) -> Any:
    from wandb.proto.wandb_internal_pb2 import Record

    return Record(**fields)


def history_record(step: int, **items: str) -> bytes:
    r = record(num=step + 1)
    r.history.step.num = step
    for key, value in items.items():
        item = r.history.item.add()
        item.nested_key.extend(key.split("."))
        item.value_json = value
    return r.SerializeToString()


def summary_record(num: int, **items: str) -> bytes:
    r = record(num=num)
    for key, value in items.items():
        item = r.summary.update.add()
        item.nested_key.extend(key.split("."))
        item.value_json = value
    return r.SerializeToString()


def write_log(folder: Path, payloads: list[bytes]) -> Path:
    """A log of FULL chunks (all within the first block)."""
    out = bytearray(HEADER)
    for payload in payloads:
        out += struct.pack("<IHB", zlib.crc32(b"\x01" + payload), len(payload), 1) + payload
    assert len(out) < 32768
    path = folder / "run-made.wandb"
    path.write_bytes(bytes(out))
    return path


@pytest.mark.parametrize("first", ["history", "summary"])
def test_a_record_whose_last_oneof_field_is_another_type(first: str, tmp_path: Path) -> None:
    """Two records' bytes joined are one record to protobuf, whose type is the last oneof
    field set: here `exit`, after a history or summary field. Decoded in bulk, its items
    would count; the bulk decode must see it and leave it to the record-by-record fold."""
    exit_record = record(num=99)
    exit_record.exit.exit_code = 3
    head = history_record(5, loss="0.5") if first == "history" else summary_record(98, best="0.9")
    odd = head + exit_record.SerializeToString()
    assert parse_record(odd)[0] == "exit"  # protobuf's reading of the joined bytes
    payloads = [history_record(i, loss=str(i / 10), **{"eval.f1": "NaN"}) for i in range(3)]
    payloads += [summary_record(10 + i, loss=str(i / 10)) for i in range(3)] + [odd]
    path = write_log(tmp_path, payloads)
    # `read_segment` routes records by their first oneof field: the odd one goes with its kind
    routed = payloads[:3] if first == "history" else payloads[3:6]
    decode = _bulk.history if first == "history" else _bulk.summary
    assert decode(routed, _bulk._Keys()) is not None and decode(routed + [odd], _bulk._Keys()) is None
    bulk, ref = folded(read_segment(path)), folded(reference(path))
    assert bulk == ref  # values stay the JSON text W&B wrote (NaN as the token)
    assert bulk["exit"] == (True, 3) and bulk["steps"] == [0, 1, 2]
    assert dict(bulk["summary"]) == {("loss",): "0.2"}
