"""The `.wandb` transaction-log reader on real runs from five SDK releases and a fresh 0.31 run.

The facts checked come from the script that wrote the runs (tests/data/wandb-runs/README.md),
not from any reader. Truncation, resumption and corruption are tested by cutting, growing and
damaging copies of those real files.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import struct
import subprocess
import sys
import zlib
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from braid.connectors.wandb._txlog import BLOCK_SIZE, LogRead, _scan, parse_record, read_log
from braid.unify.errors import SourceError, TransactionLogError

pytestmark = pytest.mark.usefixtures("both_decoders")
DATA = Path(__file__).parents[1] / "data" / "wandb-runs"
SDKS = ["sdk-0.15.12", "sdk-0.16.6", "sdk-0.17.5", "sdk-0.17.5-core", "sdk-0.19.11"]
HEADER = b":W&B\xe1\xbe\x00"
COMMIT = "c7e786f7d88fbd602729b5172a97ec559f6f8ddb"
TRAIN_CSV_MD5 = "c3c6bc2ae8ece4bd2510dca21225c041"
FRESH_BLOB = 40_000  # a config value longer than a block: its record spans two blocks


FRESH_RUN = f"""
import wandb
run = wandb.init(project="fresh", config={{"blob": "b" * {FRESH_BLOB}, "lr": 0.1}})
for step in range(1500):
    run.log({{"loss": 1 / (step + 1), "note": "n" * 20}})
run.finish()
print(run.id)
"""


def log_path(sdk: str) -> Path:
    (path,) = (DATA / sdk).glob("*/run-*.wandb")
    return path


@cache
def full_read(path: Path) -> LogRead:
    return read_log(path)


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run written now by the installed wandb (0.31) in offline mode."""
    work = tmp_path_factory.mktemp("wandb-fresh")
    script = work / "train.py"
    script.write_text(FRESH_RUN)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(work), "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = proc.stdout.split()[-1]
    (path,) = (work / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    return path


# -- test oracles: LevelDB framing written and walked independently of the reader ---------------

def chunk(kind: int, payload: bytes) -> bytes:
    return struct.pack("<IHB", zlib.crc32(bytes([kind]) + payload), len(payload), kind) + payload


def frame(payloads: list[bytes], *, origin: int = 0) -> bytes:
    """A transaction log the way a LevelDB log writer frames it, blocks starting at `origin`."""
    out = bytearray(HEADER)
    for payload in payloads:
        first, rest = True, payload
        while True:
            left = BLOCK_SIZE - (len(out) - origin) % BLOCK_SIZE
            if left < 7:
                out += bytes(left)
                continue
            piece, rest = rest[:left - 7], rest[left - 7:]
            kind = (1 if first else 4) if not rest else (2 if first else 3)
            out += chunk(kind, piece)
            first = False
            if not rest:
                break
    return bytes(out)


def chunk_spans(data: bytes, origin: int) -> list[tuple[int, int, int]]:
    """(start, end, type) of every chunk of an undamaged log."""
    spans, pos = [], 7
    while pos + 7 <= len(data):
        left = BLOCK_SIZE - (pos - origin) % BLOCK_SIZE
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack_from("<IHB", data, pos)
        spans.append((pos, pos + 7 + length, kind))
        pos += 7 + length
    return spans


def record_ends(data: bytes, origin: int) -> list[int]:
    return [end for _, end, kind in chunk_spans(data, origin) if kind in (1, 4)]


# -- helpers over parsed records ------------------------------------------------------------------

def by_type(log: LogRead) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for _, record_type, record in log.records():
        assert record_type is not None
        out.setdefault(record_type, []).append(getattr(record, record_type))
    return out


def flat(items: Any) -> dict[str, Any]:
    """History items by dotted key: the Python writers send `key` with nested JSON, wandb-core
    sends a `nested_key` path."""
    row: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                put(f"{key}.{k}", v)
        else:
            row[key] = value

    for item in items:
        put(".".join(item.nested_key) if item.nested_key else item.key, json.loads(item.value_json))
    return row


# -- real runs from five SDK releases -------------------------------------------------------------

@pytest.mark.parametrize("sdk", SDKS)
def test_legacy_run_reads_whole(sdk: str) -> None:
    path = log_path(sdk)
    log = full_read(path)
    assert log.issues == [] and not log.truncated
    assert log.resume_offset == path.stat().st_size
    assert log.block_origin == (7 if sdk.endswith("-core") else 0)
    assert log.offsets == sorted(log.offsets) and len(log.offsets) == len(log.payloads)


@pytest.mark.parametrize("sdk", SDKS)
def test_legacy_run_records_what_the_script_did(sdk: str) -> None:
    path = log_path(sdk)
    records = by_type(full_read(path))

    (run,) = records["run"]
    assert path.name == f"run-{run.run_id}.wandb"
    assert (run.project, run.job_type, run.run_group, run.notes) == ("legacy", "train", "sweep-1", "legacy format sample")
    assert list(run.tags) == ["legacy"]
    assert (run.git.remote_url, run.git.commit) == ("https://example.org/team/churn.git", COMMIT)
    config = {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"}
    assert config == {"lr": 0.01, "layers": [64, 32], "opt": {"name": "adam", "beta1": 0.9}}

    history = records["history"]
    assert len(history) == 3000
    for step, row in enumerate(history):
        values = flat(row.item)
        assert row.step.num == step == values["_step"]
        assert values["loss"] == pytest.approx(1 / (step + 1))
        assert values["eval.acc"] == pytest.approx(step / 3000)
        assert values["lr"] == pytest.approx(0.01 * 0.999**step)
        odd = values["odd"]
        if step % 500 == 3:
            assert math.isnan(odd)
        else:
            assert odd == (math.inf if step == 7 else step)

    summary = {u.key: json.loads(u.value_json) for s in records["summary"] for u in s.update if u.key}
    assert summary["best_acc"] == 0.95

    (artifact,) = records["artifact"]
    assert (artifact.type, artifact.name) == ("dataset", "train-data")
    assert sorted(artifact.aliases) == ["latest", "v-legacy"]
    assert json.loads(artifact.metadata) == {"rows": 2}
    (entry,) = artifact.manifest.contents
    assert (entry.path, entry.size) == ("train.csv", 12)
    assert base64.b64decode(entry.digest).hex() == TRAIN_CSV_MD5

    (exit_record,) = records["exit"]
    assert exit_record.exit_code == 0


def test_offset7_layout_is_detected_not_guessed() -> None:
    """wandb-core before 0.17.6 starts blocks after the header; read with blocks at 0, every
    block after the first fails, and the other way round for every other writer."""
    core = log_path("sdk-0.17.5-core").read_bytes()
    right = _scan(core[7:], base=7, origin=7)
    wrong = _scan(core[7:], base=7, origin=0)
    assert right[0] == full_read(log_path("sdk-0.17.5-core")).payloads and right[2] == []
    # the first block is framed alike: it reads; the first boundary already disagrees
    first_issue = wrong[2][0]
    assert first_issue.kind == "corrupt" and BLOCK_SIZE - 1000 < first_issue.offset <= BLOCK_SIZE
    same = sum(offset < first_issue.offset for offset in right[1])
    assert wrong[0][:same] == right[0][:same]
    assert len(wrong[2]) >= len(core) // BLOCK_SIZE - 1 and len(wrong[0]) < len(right[0]) // 10

    python_writer = log_path("sdk-0.17.5").read_bytes()
    assert _scan(python_writer[7:], base=7, origin=0)[2] == []
    assert _scan(python_writer[7:], base=7, origin=7)[2][0].offset == BLOCK_SIZE


@pytest.mark.parametrize("origin", [0, 7])
@pytest.mark.parametrize("gap", range(10))
def test_layout_detected_whatever_ends_the_first_block(origin: int, gap: int, tmp_path: Path) -> None:
    """The first block's last chunk ends `gap` bytes before its boundary: a zero trailer, an
    exact fit, or (7 bytes left under origin 7) an empty FIRST chunk that also looks like a
    valid block start under origin 0."""
    first = b"f" * (BLOCK_SIZE + origin - gap - 7 - 7)
    payloads = [first] + [bytes([i % 251]) * (50 + i % 300) for i in range(500)]
    data = frame(payloads, origin=origin)
    assert len(data) > 2 * BLOCK_SIZE + origin
    log = read_log(write(tmp_path, data))
    assert (log.block_origin, log.issues, log.resume_offset) == (origin, [], len(data))
    assert log.payloads == payloads


# -- a fresh run by the installed SDK -------------------------------------------------------------

def test_fresh_run_spans_blocks(fresh_run: Path) -> None:
    log = read_log(fresh_run)
    size = fresh_run.stat().st_size
    assert (log.issues, log.resume_offset, log.block_origin) == ([], size, 0)
    assert size > 4 * BLOCK_SIZE
    spanning = [i for i in range(len(log.offsets) - 1)
                if log.offsets[i] // BLOCK_SIZE != (log.offsets[i + 1] - 1) // BLOCK_SIZE]
    largest = max(range(len(log.payloads)), key=lambda i: len(log.payloads[i]))
    assert len(log.payloads[largest]) > BLOCK_SIZE and largest in spanning
    assert len(spanning) >= 3

    records = by_type(log)
    (run,) = records["run"]
    assert run.project == "fresh"
    config = {u.key: json.loads(u.value_json) for r in [run.config, *records.get("config", [])] for u in r.update}
    assert config["blob"] == "b" * FRESH_BLOB and config["lr"] == 0.1
    history = [flat(h.item) for h in records["history"]]
    assert [h["_step"] for h in history] == list(range(1500))
    assert all(h["loss"] == pytest.approx(1 / (h["_step"] + 1)) and h["note"] == "n" * 20 for h in history)
    (exit_record,) = records["exit"]
    assert exit_record.exit_code == 0


# -- truncation and resumption --------------------------------------------------------------------

def write(folder: Path, data: bytes) -> Path:
    path = folder / "run-abc.wandb"
    path.write_bytes(data)
    return path


def cuts_for(data: bytes, origin: int) -> list[int]:
    """Every offset around the first two block boundaries of both layouts, and a sample elsewhere."""
    near = {cut for b in (BLOCK_SIZE, 2 * BLOCK_SIZE) for cut in range(b - 24, b + 7 + 40)}
    sample = random.Random(len(data)).sample(range(8, len(data)), 40)
    return sorted(cut for cut in near | set(sample) | {7, 8, 13, 14, len(data) - 1} if cut < len(data))


TRUNCATION_FILES = ["sdk-0.19.11", "sdk-0.17.5-core", "fresh"]


def source(name: str, fresh_run: Path) -> Path:
    return fresh_run if name == "fresh" else log_path(name)


@pytest.mark.parametrize("name", TRUNCATION_FILES)
def test_truncated_file_keeps_whole_records_and_resumes(name: str, fresh_run: Path, tmp_path: Path) -> None:
    full = full_read(source(name, fresh_run))
    data = Path(full.path).read_bytes()
    ends = record_ends(data, full.block_origin)
    assert len(ends) == len(full.payloads)
    path = tmp_path / "run-abc.wandb"
    for cut in cuts_for(data, full.block_origin):
        path.write_bytes(data[:cut])
        log = read_log(path)
        whole = sum(end <= cut for end in ends)
        where = f"cut at {cut}"
        assert log.payloads == full.payloads[:whole], where
        assert log.offsets == full.offsets[:whole], where
        if whole < len(ends) and cut > full.offsets[whole]:
            assert [str(issue) for issue in log.issues] == [
                f"truncated at offset {full.offsets[whole]} (partial record kept out)"], where
            assert log.resume_offset == full.offsets[whole], where
        else:  # cut on a record boundary or in a block's zero trailer: nothing is partial
            assert (log.issues, log.resume_offset) == ([], cut), where
        with path.open("ab") as grow:
            grow.write(data[cut:])
        rest = read_log(path, start=log.resume_offset)
        assert rest.issues == [], where
        assert (log.payloads + rest.payloads, log.offsets + rest.offsets) == (full.payloads, full.offsets), where
        assert rest.resume_offset == len(data)


@pytest.mark.parametrize("name", TRUNCATION_FILES)
def test_live_run_read_as_it_grows(name: str, fresh_run: Path, tmp_path: Path) -> None:
    """A run read again and again while it grows, each read continuing where the last stopped,
    yields every record exactly once, whichever layout and wherever the writes stop."""
    full = full_read(source(name, fresh_run))
    data = Path(full.path).read_bytes()
    rng = random.Random(7)
    path = tmp_path / "run-live.wandb"
    path.write_bytes(data[:7])
    size, start, payloads = 7, 0, []
    while size < len(data):
        grown = min(len(data), size + rng.randrange(1, 3 * BLOCK_SIZE // 2))
        with path.open("ab") as writer:
            writer.write(data[size:grown])
        size = grown
        log = read_log(path, start=start)
        assert all(issue.kind == "truncated" for issue in log.issues)
        assert all(offset >= start for offset in log.offsets)
        payloads += log.payloads
        start = log.resume_offset
    assert payloads == full.payloads and start == len(data)
    again = read_log(path, start=start)
    assert (again.payloads, again.issues, again.resume_offset) == ([], [], len(data))


def test_report_names_the_file(tmp_path: Path) -> None:
    data = log_path("sdk-0.19.11").read_bytes()
    full = full_read(log_path("sdk-0.19.11"))
    cut = full.offsets[1000] + 20
    path = tmp_path / "run-abc.wandb"
    path.write_bytes(data[:cut])
    log = read_log(path)
    assert log.truncated
    assert log.report() == [f"run-abc.wandb: truncated at offset {full.offsets[1000]} (partial record kept out)"]


# -- corruption -----------------------------------------------------------------------------------

def damage(data: bytearray, start: int, how: str) -> None:
    if how == "payload byte":
        data[start + 9] ^= 0xFF
    elif how == "type byte":
        data[start + 6] = 9
    elif how == "length":
        data[start + 4:start + 6] = b"\xff\xff"
    elif how == "zeroed header":
        data[start:start + 7] = bytes(7)


DAMAGE_REASONS = {"payload byte": "checksum mismatch", "type byte": "bad chunk type 9",
                  "length": "overruns its block", "zeroed header": "zeroed chunk header"}


@pytest.mark.parametrize("how", DAMAGE_REASONS)
@pytest.mark.parametrize("sdk", ["sdk-0.19.11", "sdk-0.17.5-core"])
def test_damaged_chunk_loses_the_rest_of_its_block(sdk: str, how: str, tmp_path: Path) -> None:
    full = full_read(log_path(sdk))
    origin = full.block_origin
    data = bytearray(Path(full.path).read_bytes())
    spans = chunk_spans(bytes(data), origin)
    # a chunk in the middle of block 3, damaged
    middle = origin + 3 * BLOCK_SIZE + BLOCK_SIZE // 2
    bad, _, _ = next(span for span in spans if span[0] <= middle < span[1])
    block_end = origin + 4 * BLOCK_SIZE
    damage(data, bad, how)

    log = read_log(write(tmp_path, bytes(data)))
    ends = record_ends(bytes(Path(full.path).read_bytes()), origin)
    # lost: every record with a chunk between the damaged one and the end of its block
    kept = [i for i, (start, end) in enumerate(zip(full.offsets, ends, strict=True))
            if end <= bad or start >= block_end]
    assert len(full.payloads) - len(kept) >= 2
    assert log.payloads == [full.payloads[i] for i in kept]
    assert log.offsets == [full.offsets[i] for i in kept]
    (issue,) = log.issues
    assert (issue.kind, issue.offset) == ("corrupt", bad)
    assert DAMAGE_REASONS[how] in issue.reason and f"skipped to offset {block_end}" in issue.reason
    assert log.resume_offset == len(data) and log.block_origin == origin
    assert sum(1 for i in kept if full.offsets[i] >= block_end) > 100  # later blocks read


@pytest.mark.parametrize("sdk", ["sdk-0.19.11", "sdk-0.17.5-core"])
def test_damage_in_the_last_block_of_a_live_run(sdk: str, tmp_path: Path) -> None:
    """Damage in the block still being written: the read stops at the damaged chunk, and the
    next read, once the block is complete, skips it again and goes on in the next block, so
    the two reads together equal one read of the finished file."""
    full = full_read(log_path(sdk))
    origin = full.block_origin
    data = bytearray(Path(full.path).read_bytes())
    cut = origin + 5 * BLOCK_SIZE + BLOCK_SIZE // 2
    bad, _, _ = next(span for span in chunk_spans(bytes(data), origin) if span[0] <= cut - 5000 < span[1])
    damage(data, bad, "payload byte")
    path = write(tmp_path, bytes(data[:cut]))
    first = read_log(path)
    assert [(issue.kind, issue.offset) for issue in first.issues] == [("corrupt", bad)]
    assert "skipped to the end of the file" in first.issues[0].reason
    assert first.resume_offset == bad
    with path.open("ab") as grow:
        grow.write(data[cut:])
    rest = read_log(path, start=first.resume_offset)
    whole = read_log(path)
    assert [(issue.kind, issue.offset) for issue in rest.issues] == [("corrupt", bad)]
    assert first.payloads + rest.payloads == whole.payloads
    assert len(whole.payloads) > len(full.payloads) - 300 and rest.resume_offset == len(data)


def test_damage_in_the_first_block_keeps_the_layout(tmp_path: Path) -> None:
    """The layout is settled by the chunk after the first boundary, not by walking block 0."""
    full = full_read(log_path("sdk-0.17.5-core"))
    data = bytearray(Path(full.path).read_bytes())
    data[BLOCK_SIZE // 2] ^= 0xFF
    log = read_log(write(tmp_path, bytes(data)))
    assert log.block_origin == 7
    assert [issue.kind for issue in log.issues] == ["corrupt"]
    assert log.payloads[-1] == full.payloads[-1] and len(log.payloads) > len(full.payloads) - 200


def test_broken_record_sequences_are_reported(tmp_path: Path) -> None:
    """A FIRST never finished and a LAST never started are left out and reported; the whole
    record between them is kept."""
    data = HEADER + chunk(2, b"first half") + chunk(1, b"whole") + chunk(4, b"stray end") + chunk(1, b"next")
    log = read_log(write(tmp_path, data))
    assert log.payloads == [b"whole", b"next"]
    assert [(issue.kind, issue.offset) for issue in log.issues] == [("corrupt", 7), ("corrupt", 7 + 17 + 12)]
    assert "without its LAST" in log.issues[0].reason and "without the FIRST" in log.issues[1].reason


# -- files that are not transaction logs ----------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    (b"", "an empty file"),
    (b":W&", "only 3 bytes"),
    (b"PK\x03\x04 not a run at all", "not a W&B transaction log"),
    (b":W&B\xe1\xbe\x01" + chunk(1, b"x"), "store version 1 is not supported"),
])
def test_not_a_transaction_log(content: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "run-bad.wandb"
    path.write_bytes(content)
    with pytest.raises(TransactionLogError) as caught:
        read_log(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert isinstance(caught.value, SourceError) and caught.value.path == str(path)


def test_missing_file_and_shrunk_file(tmp_path: Path) -> None:
    with pytest.raises(TransactionLogError, match="cannot read"):
        read_log(tmp_path / "run-gone.wandb")
    path = write(tmp_path, HEADER + chunk(1, b"x"))
    with pytest.raises(TransactionLogError, match="fewer than the resume offset 100") as caught:
        read_log(path, start=100)
    assert caught.value.offset == 100


def test_payload_that_is_not_a_record(tmp_path: Path) -> None:
    log = read_log(write(tmp_path, HEADER + chunk(1, b"\x92\x01\x00") + chunk(1, b"\xff\xff\xff")))
    assert parse_record(log.payloads[0])[0] == "exit"
    with pytest.raises(TransactionLogError, match="record does not parse") as caught:
        list(log.records())
    assert caught.value.offset == 7 + 10


def test_record_types_of_a_real_run() -> None:
    counts = Counter(parse_record(p)[0] for p in full_read(log_path("sdk-0.17.5")).payloads)
    assert counts == {"history": 3000, "telemetry": 3, "header": 1, "run": 1, "files": 1, "artifact": 1,
                      "exit": 1, "stats": 1, "summary": 1, "final": 1, "footer": 1}
