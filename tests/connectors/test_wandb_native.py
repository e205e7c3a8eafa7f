"""The compiled decoder (`_logdecode.c`) against the Python reference it stands in for.

Real logs from five SDK releases (tests/data/wandb-runs), cut at many offsets and with bytes
flipped: the compiled framing must give exactly what `_txlog._scan_py` gives (records, offsets,
issues, resume offset), and the compiled history/summary decode exactly what `_bulk` gives
with protobuf, or "cannot" (None), never a different answer and never a crash.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from braid.connectors.wandb import _bulk, _native, _txlog
from braid.connectors.wandb._txlog import BLOCK_SIZE, FILE_HEADER_SIZE, parse_record

pytestmark = pytest.mark.xdist_group("wandb")

compiled = pytest.importorskip("braid.connectors.wandb._logdecode", reason="the compiled decoder is not built")

DATA = Path(__file__).parents[1] / "data" / "wandb-runs"
SDKS = ["sdk-0.15.12", "sdk-0.16.6", "sdk-0.17.5", "sdk-0.17.5-core", "sdk-0.19.11"]


def log_bytes(sdk: str) -> bytes:
    (path,) = (DATA / sdk).glob("*/run-*.wandb")
    return path.read_bytes()


def variants(data: bytes) -> list[tuple[str, bytes]]:
    """The file cut at offsets around the first block boundaries of both layouts and at a
    sample elsewhere, and with one byte flipped at a sample of offsets (chunk headers, CRCs,
    lengths, types, payloads, block trailers)."""
    rng = random.Random(len(data))
    near = {b + d for b in (BLOCK_SIZE, 2 * BLOCK_SIZE) for d in range(-24, 48)}
    cuts = sorted(c for c in near | set(rng.sample(range(8, len(data)), 60)) | {7, 8, 13, 14, len(data) - 1}
                  if c < len(data))
    out = [(f"cut at {c}", data[:c]) for c in cuts]
    flips = sorted(set(rng.sample(range(FILE_HEADER_SIZE, len(data)), 60))
                   | {p for b in (BLOCK_SIZE, 3 * BLOCK_SIZE) for p in range(b - 8, b + 16)})
    for at in flips:
        damaged = bytearray(data)
        damaged[at] ^= 1 << rng.randrange(8) if at % 2 else 0xFF
        out.append((f"byte {at} flipped", bytes(damaged)))
    return out


@pytest.fixture(autouse=True)
def _compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_txlog._scan` on the compiled scan even when BRAID_WANDB_PURE turned it off."""
    monkeypatch.setattr(_native, "decoder", compiled)


def both_scans(data: bytes, base: int, origin: int) -> tuple[tuple, tuple]:
    body = data[base:]
    return (_txlog._scan(body, base=base, origin=origin), _txlog._scan_py(body, base=base, origin=origin))


@pytest.mark.parametrize("sdk", ["sdk-0.15.12", "sdk-0.17.5-core", "sdk-0.19.11"])
def test_scan_equals_python_on_cut_and_flipped_files(sdk: str) -> None:
    data = log_bytes(sdk)
    issues_seen = 0
    for where, variant in variants(data):
        origin = _txlog._detect_origin(variant[:FILE_HEADER_SIZE + 2 * BLOCK_SIZE])
        fast, reference = both_scans(variant, FILE_HEADER_SIZE, origin)
        assert fast == reference, where
        issues_seen += bool(reference[2])
    assert issues_seen > 100  # the variants do exercise the Python continuation


@pytest.mark.parametrize("sdk", ["sdk-0.17.5-core", "sdk-0.19.11"])
def test_scan_from_a_resume_offset_equals_python(sdk: str) -> None:
    """A continued read starts at a record boundary anywhere in the file, under either layout."""
    data = log_bytes(sdk)
    origin = _txlog._detect_origin(data[:FILE_HEADER_SIZE + 2 * BLOCK_SIZE])
    offsets = _txlog._scan_py(data[FILE_HEADER_SIZE:], base=FILE_HEADER_SIZE, origin=origin)[1]
    for start in random.Random(1).sample(offsets, 40):
        fast, reference = both_scans(data, start, origin)
        assert fast == reference and not reference[2], start
    # the compiled scan alone reads a whole undamaged file: no Python continuation
    payloads, got_offsets, resume = compiled.scan(data[FILE_HEADER_SIZE:], FILE_HEADER_SIZE, origin)
    assert (got_offsets, resume) == (offsets, len(data)) and len(payloads) == len(offsets)


def payloads_of(data: bytes, kind: str) -> list[bytes]:
    origin = _txlog._detect_origin(data[:FILE_HEADER_SIZE + 2 * BLOCK_SIZE])
    payloads = _txlog._scan_py(data[FILE_HEADER_SIZE:], base=FILE_HEADER_SIZE, origin=origin)[0]
    return [p for p in payloads if parse_record(p)[0] == kind]


def python_bulk(kind: str, payloads: list[bytes], monkeypatch: pytest.MonkeyPatch) -> object:
    with monkeypatch.context() as m:
        m.setattr(_native, "decoder", None)
        return getattr(_bulk, kind)(payloads, _bulk._Keys())


@pytest.mark.parametrize("kind", ["history", "summary"])
@pytest.mark.parametrize("sdk", SDKS)
def test_bulk_decode_equals_python(sdk: str, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = payloads_of(log_bytes(sdk), kind)
    reference = python_bulk(kind, payloads, monkeypatch)
    assert reference is not None  # these SDKs' records are all decoded in bulk by protobuf
    assert getattr(compiled, kind)(payloads) == reference


@pytest.mark.parametrize("kind", ["history", "summary"])
@pytest.mark.parametrize("sdk", ["sdk-0.15.12", "sdk-0.17.5-core", "sdk-0.19.11"])
def test_bulk_decode_of_damaged_payloads_is_python_or_cannot(sdk: str, kind: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """One payload of a few dozen with a byte flipped, cut short or grown: the compiled decode
    returns what protobuf's bulk decode returns, or None (then that one runs)."""
    payloads = payloads_of(log_bytes(sdk), kind)[:40]
    rng = random.Random(sdk + kind)
    answered = 0
    for trial in range(300):
        damaged = list(payloads)
        i = rng.randrange(len(damaged))
        p = bytearray(damaged[i])
        how = trial % 3
        if how == 0:
            p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
        elif how == 1:
            del p[rng.randrange(len(p)):]
        else:
            p[rng.randrange(len(p)):rng.randrange(len(p)) + 1] = rng.randbytes(rng.randrange(1, 12))
        damaged[i] = bytes(p)
        got = getattr(compiled, kind)(damaged)
        if got is not None:
            answered += 1
            assert got == python_bulk(kind, damaged, monkeypatch), (trial, i)
    assert answered > 0


@pytest.mark.parametrize("payload", [
    b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # a row whose length is 2**64 - 1
    b"\x12\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # an 11-byte varint
    b"\x12\x05\x0a\x03\x0a\x01",  # an item longer than its row
    b"\x12\x04\x0a\x02\x0a\x05",  # a key longer than its item
    b"\x12\x09\x0a\x07\x0a\x01a\x82\x01\x05x",  # a value longer than its item
    b"\x12\x08\x0a\x06\x0a\x01\xff\x82\x01\x00",  # a key that is not UTF-8
    b"\x12\x07\x12\x05\x08\xff\xff\xff\xff",  # a step cut inside its varint
    b"\x12\x00\x12\x00",  # two rows in one record
    b"\x08",  # a num without its value
])
def test_malformed_history_is_cannot(payload: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert compiled.history([payload]) is None
    assert compiled.summary([payload.replace(b"\x12", b"\x1a", 1)]) is None
