"""Read a W&B run's `.wandb` transaction log into whole record payloads.

The log is the only complete record of an offline run (wandb 0.31 writes no config.yaml or
summary file for them) and wandb 0.31 ships no Python reader for it, so braid reads the format
itself: a 7-byte header, then LevelDB log framing in 32 KiB blocks.

    header := ":W&B" | magic 0xBEE1 (uint16 LE) | store version 0 (uint8)
    chunk  := crc (uint32 LE) | length (uint16 LE) | type (uint8) | payload[length]
    record := FULL | FIRST MIDDLE* LAST          (chunks never cross a block)

Every whole record is kept; a partial record at the end of the file is reported as truncated
and reading can continue from `resume_offset` once a live run has written more; a damaged
chunk loses the rest of its block, as wandb-core's own reader does, and is reported.
Payloads are `wandb_internal.Record` protobufs: `parse_record` decodes one.

>>> import pathlib, struct, tempfile, zlib
>>> exit_record = bytes.fromhex("920100")  # a Record with `exit` set: exit code 0
>>> chunk = struct.pack("<IHB", zlib.crc32(b"\\x01" + exit_record), len(exit_record), 1) + exit_record
>>> path = pathlib.Path(tempfile.mkdtemp()) / "run-abc.wandb"
>>> _ = path.write_bytes(b":W&B\\xe1\\xbe\\x00" + chunk + chunk[:5])  # the second record half written
>>> log = read_log(path)
>>> [(offset, record_type) for offset, record_type, _ in log.records()]
[(7, 'exit')]
>>> log.report(), log.resume_offset
(['run-abc.wandb: truncated at offset 17 (partial record kept out)'], 17)
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Literal

from braid.unify.errors import TransactionLogError

from . import _native

if TYPE_CHECKING:
    from wandb.proto.wandb_internal_pb2 import Record

IDENT = b":W&B"
MAGIC = 0xBEE1
STORE_VERSION = 0
FILE_HEADER_SIZE = 7
BLOCK_SIZE = 32768
CHUNK_HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
CHUNK_TYPES = {FULL: "FULL", FIRST: "FIRST", MIDDLE: "MIDDLE", LAST: "LAST"}
# where blocks start: 0 normally (the header sits inside block 0); 7 (right after the header)
# in files written by wandb-core before 0.17.6
BLOCK_ORIGINS: tuple[Literal[0, 7], ...] = (0, 7)

_FILE_HEADER = struct.Struct("<4sHB")
_CHUNK_HEADER = struct.Struct("<IHB")
# the crc covers the type byte then the payload: seeding crc32 with the type's crc avoids
# concatenating bytes([type]) + payload for every chunk
_TYPE_CRC = [zlib.crc32(bytes([kind])) for kind in range(256)]

IssueKind = Literal["truncated", "corrupt"]


@dataclass(frozen=True, slots=True)
class LogIssue:
    """Something the reader had to leave out, with the byte offset where it starts.

    >>> str(LogIssue("truncated", 40123, "partial record kept out"))
    'truncated at offset 40123 (partial record kept out)'
    """

    kind: IssueKind
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} at offset {self.offset} ({self.reason})"


@dataclass(frozen=True, slots=True)
class LogRead:
    """The whole records of one read, what was left out, and where the next read continues.

    `payloads[i]` is a serialised `wandb_internal.Record` whose first chunk starts at byte
    `offsets[i]`. `resume_offset` is a record boundary: `read_log(path, start=resume_offset)`
    returns only what was appended (or completed) since.
    """

    path: str
    payloads: list[bytes]
    offsets: list[int]
    issues: list[LogIssue]
    resume_offset: int
    block_origin: Literal[0, 7]
    # checksums of the bytes before `resume_offset` (its first and last `CHECK_WINDOW` bytes):
    # what `continue_log` checks to tell a file that only grew from one that was replaced
    anchor: int = 0
    window: int = 0
    bytes_read: int = 0  # bytes this read took from the file

    @property
    def truncated(self) -> bool:
        """Whether the file ends inside a record (a killed or still-running writer)."""
        return any(issue.kind == "truncated" for issue in self.issues)

    def report(self) -> list[str]:
        """One line per issue for a sync report, naming the file.

        >>> LogRead("/runs/run-abc.wandb", [], [], [LogIssue("truncated", 40123,
        ...         "partial record kept out")], 40123, 0).report()
        ['run-abc.wandb: truncated at offset 40123 (partial record kept out)']
        """
        name = os.path.basename(self.path)
        return [f"{name}: {issue}" for issue in self.issues]

    def records(self) -> Iterator[tuple[int, str | None, Record]]:
        """Each record parsed, as (offset, record type, record); a payload that is not a
        Record raises TransactionLogError naming the file and offset."""
        for offset, payload in zip(self.offsets, self.payloads, strict=True):
            try:
                record_type, record = parse_record(payload)
            except ValueError as exc:
                raise TransactionLogError(self.path, f"record does not parse: {exc}", offset=offset) from exc
            yield offset, record_type, record


@cache
def _record_class() -> type[Record]:
    # imported on first use: the wandb protobuf modules take a while to load
    from wandb.proto.wandb_internal_pb2 import Record

    return Record


def parse_record(payload: bytes) -> tuple[str | None, Record]:
    """A payload as a `wandb_internal.Record` with its type (`run`, `history`, `exit`, ...).

    The type is None for a record with none set. Raises ValueError when the bytes are not a
    Record.

    >>> parse_record(bytes.fromhex("920100"))[0]  # field 18 (exit), empty: exit code 0
    'exit'
    """
    from google.protobuf.message import DecodeError

    record = _record_class()()
    try:
        record.ParseFromString(payload)
    except DecodeError as exc:
        raise ValueError(str(exc)) from exc
    return record.WhichOneof("record_type"), record


def read_log(path: str | os.PathLike[str], *, start: int = 0) -> LogRead:
    """Whole records of the transaction log at `path`, from `start` (0, or an earlier
    read's `resume_offset`) to the end of the file.

    Never raises for a truncated or damaged body (those become `issues`); raises
    TransactionLogError when the file cannot be opened, is not a W&B log, has a store version
    other than 0, or is shorter than `start` (it was replaced).
    """
    name = os.fspath(path)
    if 0 < start < FILE_HEADER_SIZE:
        raise ValueError(f"start={start} is inside the file header: pass 0 or a resume_offset")
    try:
        with open(name, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            # enough to see the first block boundary under both origins, and the chunk after it
            head = file.read(FILE_HEADER_SIZE + 2 * BLOCK_SIZE)
            _check_header(name, head)
            if start > size:
                raise TransactionLogError(
                    name, f"the file has {size} bytes, fewer than the resume offset {start}",
                    offset=start, hint="a transaction log only grows: was the run's file replaced?")
            start = max(start, FILE_HEADER_SIZE)
            file.seek(start)
            data = file.read()
    except OSError as exc:
        raise TransactionLogError(name, f"cannot read: {exc.strerror or exc}", offset=0) from exc
    origin = _detect_origin(head)
    payloads, offsets, issues, resume = _scan(data, base=start, origin=origin)
    anchor, window = _checks(head, data, start, resume)
    return LogRead(name, payloads, offsets, issues, resume, origin, anchor, window, len(head) + len(data))


CHECK_WINDOW = 4096


def _checks(head: bytes, data: bytes, start: int, resume: int) -> tuple[int, int]:
    """crc32 of the file's first and last `CHECK_WINDOW` bytes before `resume`, from `head`
    (the file from 0) and `data` (the file from `start`); (0, 0) when they cannot be seen."""
    def piece(lo: int, hi: int) -> bytes | None:
        if hi <= len(head):
            return head[lo:hi]
        if lo >= start:
            return data[lo - start:hi - start]
        return None

    first, last = piece(0, min(resume, CHECK_WINDOW)), piece(max(0, resume - CHECK_WINDOW), resume)
    if first is None or last is None:
        return 0, 0
    return zlib.crc32(first), zlib.crc32(last)


def continue_log(path: str | os.PathLike[str], *, start: int, origin: Literal[0, 7], anchor: int,
                 window: int) -> LogRead | None:
    """What was appended to a log since an earlier read that ended at `start` (its
    `resume_offset`, `block_origin`, `anchor` and `window`), reading only the new bytes and
    the `CHECK_WINDOW` bytes on each side of the old ones that say the file only grew.

    None when the file is shorter than `start` or those bytes changed (it was replaced or
    rewritten: read it whole). Raises TransactionLogError when it cannot be read."""
    name = os.fspath(path)
    lo = max(0, start - CHECK_WINDOW)
    try:
        with open(name, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < start or start < FILE_HEADER_SIZE:
                return None
            first = file.read(min(start, CHECK_WINDOW))
            file.seek(lo)
            rest = file.read()  # the old bytes' last window, then the new bytes
    except OSError as exc:
        raise TransactionLogError(name, f"cannot read: {exc.strerror or exc}", offset=0) from exc
    if len(rest) < start - lo or zlib.crc32(first) != anchor or zlib.crc32(rest[:start - lo]) != window:
        return None
    payloads, offsets, issues, resume = _scan(rest[start - lo:], base=start, origin=origin)
    new_anchor = zlib.crc32(rest[:min(resume, CHECK_WINDOW)]) if lo == 0 else anchor
    new_window = zlib.crc32(rest[max(0, resume - CHECK_WINDOW) - lo:resume - lo])
    return LogRead(name, payloads, offsets, issues, resume, origin, new_anchor, new_window, len(first) + len(rest))


def _check_header(name: str, head: bytes) -> None:
    if len(head) < FILE_HEADER_SIZE:
        what = "an empty file" if not head else f"only {len(head)} bytes"
        raise TransactionLogError(
            name, f"not a W&B transaction log: {what}, shorter than the {FILE_HEADER_SIZE}-byte header",
            offset=0, hint="a run that is just starting may not have written its header yet")
    ident, magic, version = _FILE_HEADER.unpack_from(head)
    if ident != IDENT or magic != MAGIC:
        raise TransactionLogError(
            name, f"not a W&B transaction log: it starts with {head[:FILE_HEADER_SIZE].hex(' ')}, "
            f"not {IDENT.hex(' ')} {MAGIC.to_bytes(2, 'little').hex(' ')}", offset=0)
    if version != STORE_VERSION:
        raise TransactionLogError(
            name, f"W&B transaction log store version {version} is not supported "
            f"(braid reads version {STORE_VERSION})", offset=6)


def _block_end(pos: int, origin: int) -> int:
    return pos + BLOCK_SIZE - (pos - origin) % BLOCK_SIZE


def _valid_chunk_at(head: bytes, pos: int, block_end: int) -> bool:
    if pos + CHUNK_HEADER_SIZE > len(head):
        return False
    crc, length, kind = _CHUNK_HEADER.unpack_from(head, pos)
    end = pos + CHUNK_HEADER_SIZE + length
    return (kind in CHUNK_TYPES and end <= min(block_end, len(head))
            and zlib.crc32(head[pos + CHUNK_HEADER_SIZE:end], _TYPE_CRC[kind]) == crc)


def _walk(head: bytes, origin: int) -> tuple[int, bool]:
    """How far valid chunks run from the header under `origin`, and whether they stop at
    bytes that contradict it (rather than at the end of what was read)."""
    pos, limit = FILE_HEADER_SIZE, len(head)
    while True:
        block_end = _block_end(pos, origin)
        if block_end - pos < CHUNK_HEADER_SIZE:
            pos = block_end
            continue
        if pos + CHUNK_HEADER_SIZE > limit:
            return min(pos, limit), False
        crc, length, kind = _CHUNK_HEADER.unpack_from(head, pos)
        end = pos + CHUNK_HEADER_SIZE + length
        if kind not in CHUNK_TYPES or end > block_end:
            return pos, True
        if end > limit:
            return pos, False
        if zlib.crc32(head[pos + CHUNK_HEADER_SIZE:end], _TYPE_CRC[kind]) != crc:
            return pos, True
        pos = end


def _detect_origin(head: bytes) -> Literal[0, 7]:
    """Where blocks start in this file, from its first `FILE_HEADER_SIZE + 2 * BLOCK_SIZE` bytes.

    The two layouts frame block 0 identically up to its end, so block 0 alone cannot tell
    them apart: the first boundary decides. A valid chunk at exactly one of 32768 and 32775
    settles it. Otherwise (the file ends near the boundary, or a chunk there is damaged) the
    layout whose chunks run further without contradiction wins, and 0 (every writer but
    early wandb-core) breaks ties: a file that never reaches the boundary reads the same
    either way.
    """
    at_boundary = [origin for origin in BLOCK_ORIGINS
                   if _valid_chunk_at(head, origin + BLOCK_SIZE, origin + 2 * BLOCK_SIZE)]
    if len(at_boundary) == 1:
        return at_boundary[0]
    walks = {origin: _walk(head, origin) for origin in BLOCK_ORIGINS}
    return max(BLOCK_ORIGINS, key=lambda origin: (walks[origin][0], not walks[origin][1], -origin))


def _scan(data: bytes, *, base: int, origin: int) -> tuple[list[bytes], list[int], list[LogIssue], int]:
    """Chunks of `data` (the file from absolute offset `base`, a record boundary) assembled
    into whole records: (payloads, their offsets, issues, resume offset).

    The compiled scan, when built, takes the records up to the first issue and stops at the
    record boundary before it; `_scan_py` (the reference) goes on from there, so the result
    is the same as its own from the start."""
    decoder = _native.decoder
    if decoder is None:
        return _scan_py(data, base=base, origin=origin)
    payloads, offsets, resume = decoder.scan(data, base, origin)
    if resume == base + len(data):
        return payloads, offsets, [], resume
    rest = _scan_py(data[resume - base:], base=resume, origin=origin)
    return payloads + rest[0], offsets + rest[1], rest[2], rest[3]


def _scan_py(data: bytes, *, base: int, origin: int) -> tuple[list[bytes], list[int], list[LogIssue], int]:
    """`_scan` in Python: every chunk checked and joined, every issue reported."""
    unpack = _CHUNK_HEADER.unpack_from
    crc32, type_crc = zlib.crc32, _TYPE_CRC
    payloads: list[bytes] = []
    offsets: list[int] = []
    issues: list[LogIssue] = []
    parts: list[bytes] = []
    record_start = -1  # offset of the FIRST chunk of the record being assembled; -1: none
    # after a skip, the next block can open with the rest of the record that was lost: its
    # MIDDLE and LAST chunks are expected, not news
    recovering = False
    end = base + len(data)
    pos = resume = base
    while pos < end:
        block_end = pos + BLOCK_SIZE - (pos - origin) % BLOCK_SIZE
        if block_end - pos < CHUNK_HEADER_SIZE:
            pos = block_end  # the block's zero trailer
            if record_start < 0:
                resume = min(pos, end)
            continue
        if pos + CHUNK_HEADER_SIZE > end:
            break
        crc, length, kind = unpack(data, pos - base)
        chunk_end = pos + CHUNK_HEADER_SIZE + length
        if kind not in CHUNK_TYPES:
            reason = "zeroed chunk header" if crc == length == kind == 0 else f"bad chunk type {kind}"
        elif chunk_end > block_end:
            reason = f"{length}-byte {CHUNK_TYPES[kind]} chunk overruns its block"
        elif chunk_end > end:
            break
        else:
            payload = data[pos + CHUNK_HEADER_SIZE - base:chunk_end - base]
            if crc32(payload, type_crc[kind]) == crc:
                if kind == FULL or kind == FIRST:
                    if record_start >= 0:
                        issues.append(LogIssue("corrupt", record_start, (
                            f"record without its LAST chunk, followed by a {CHUNK_TYPES[kind]} "
                            f"chunk at offset {pos}; record dropped")))
                    recovering = False
                    if kind == FULL:
                        payloads.append(payload)
                        offsets.append(pos)
                        record_start, parts, resume = -1, [], chunk_end
                    else:
                        record_start, parts = pos, [payload]
                elif record_start >= 0:
                    parts.append(payload)
                    if kind == LAST:
                        payloads.append(b"".join(parts))
                        offsets.append(record_start)
                        record_start, parts, resume = -1, [], chunk_end
                else:
                    if not recovering:
                        issues.append(LogIssue("corrupt", pos, (
                            f"{CHUNK_TYPES[kind]} chunk without the FIRST chunk of its record; dropped")))
                    resume = chunk_end
                pos = chunk_end
                continue
            reason = "checksum mismatch"
        # a damaged chunk: like wandb-core, drop the record it belongs to and the rest of the block
        lost = f"; the record from offset {record_start} is lost" if 0 <= record_start < pos else ""
        skip_to = f"skipped to offset {block_end}" if block_end < end else "skipped to the end of the file"
        issues.append(LogIssue("corrupt", pos, f"{reason}; {skip_to}{lost}"))
        record_start, parts, recovering = -1, [], True
        # past the end of the file, resume at the damaged chunk: a later read skips it again
        resume = block_end if block_end <= end else pos
        pos = block_end
    if pos < end or record_start >= 0:
        # the file ends inside a chunk (pos < end) or between the chunks of a record
        truncated_at = record_start if record_start >= 0 else pos
        issues.append(LogIssue("truncated", truncated_at, "partial record kept out"))
        resume = truncated_at
    return payloads, offsets, issues, resume
