"""Decode a log's history and summary records in bulk: a few protobuf parses over joined
payloads instead of one parse and a Python walk per record and per item.

A run logs one history record and two summary records per `log` call, each a handful of
items, so decoding them one by one costs Python work per item (a 100k-row run is 600k
history items and as many summary items). Here the C parser does the walking:

- every history payload, joined, is one `Rows` message: `Record` with `history` (field 2)
  declared repeated, so the concatenation of records keeps one `Row` per record (protobuf
  appends repeated fields when messages are concatenated); a `Row`'s items stay raw bytes.
- every summary payload, joined, is one `Summaries` message whose `summary` (field 3) is
  declared singular: protobuf merges the occurrences of a message field into one, appending
  its repeated fields, so every update of every record is in one list, in order, with no
  Python object per record (only the last value of each key matters, not which record set it).
- the items' values: all items joined, parsed as one `Flat` message whose `value_json` is
  repeated: one value per item, in order.
- the items' keys: the bytes before an item's `value_json` tag (`82 01`) are its key fields;
  rows repeat the same few keys, so each distinct prefix is decoded once (`_Keys`).

Everything is checked (one row per record, one value per item, every key prefix decodes to
key fields only); when a check fails, or a payload does not parse, the caller decodes those
records one by one, as before. Results are identical either way.

The compiled decoder (`_logdecode.c`, through `_native`), when built, walks the payloads of
the shape the SDKs write straight into these lists, and gives up (None) on anything else:
then the protobuf parses here run, as without it.
"""

from __future__ import annotations

from functools import cache
from itertools import chain
from operator import attrgetter, itemgetter, methodcaller
from typing import Any

from . import _native

VALUE_TAG = b"\x82\x01"  # HistoryItem/SummaryItem field 16 (value_json), length-delimited
_BAD = ("\x00bad",)  # a key prefix that is not key fields only


@cache
def _types() -> dict[str, Any]:
    """Lean message types for the bulk parses, built from a descriptor at first use."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    file = descriptor_pb2.FileDescriptorProto(name="braid_wandb_bulk.proto", package="braid_wandb_bulk",
                                              syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        msg = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            msg.field.add(name=field_name, number=number, type=kind, label=label, type_name=type_name or None)

    i64, string, raw, sub = f.TYPE_INT64, f.TYPE_STRING, f.TYPE_BYTES, f.TYPE_MESSAGE
    message("Step", ("num", 1, i64, opt, ""))
    message("Row", ("item", 1, raw, rep, ""), ("step", 2, sub, opt, ".braid_wandb_bulk.Step"),
            ("info", 200, raw, rep, ""))
    message("Sums", ("update", 1, raw, rep, ""), ("remove", 2, raw, rep, ""), ("info", 200, raw, rep, ""))
    # a Record's other fields, declared so that concatenated records keep them apart
    rest = [("num", 1, i64, rep, ""), ("control", 16, raw, rep, ""), ("uuid", 19, raw, rep, ""),
            ("info", 200, raw, rep, "")]
    message("Rows", *rest, ("row", 2, sub, rep, ".braid_wandb_bulk.Row"))
    message("Summaries", *rest, ("summary", 3, sub, opt, ".braid_wandb_bulk.Sums"))
    message("Flat", ("key", 1, string, rep, ""), ("nested_key", 2, string, rep, ""),
            ("value_json", 16, string, rep, ""))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"braid_wandb_bulk.{name}"))
            for name in ("Rows", "Summaries", "Flat")}


class _Keys(dict[bytes, tuple[str, ...]]):
    """An item's key prefix (the bytes before its value) -> its path; decoded once per prefix."""

    def __missing__(self, prefix: bytes) -> tuple[str, ...]:
        from google.protobuf.message import DecodeError

        flat = _types()["Flat"]()
        try:
            flat.ParseFromString(prefix)
        except DecodeError:
            path: tuple[str, ...] = _BAD
        else:
            # key fields only: a `nested_key` path, or a `key` (what `_path` reads), nothing else
            if flat.value_json or flat.ByteSize() != len(prefix) or (not flat.nested_key and len(flat.key) != 1):
                path = _BAD
            else:
                path = tuple(flat.nested_key) if flat.nested_key else (flat.key[0],)
        self[prefix] = path
        return path


def _items(raw_items: list[bytes], keys: _Keys) -> tuple[list[tuple[str, ...]], list[str]] | None:
    """Paths and value JSON of raw items, or None when one is not (key fields, value_json)."""
    from google.protobuf.message import DecodeError

    flat = _types()["Flat"]()
    try:
        flat.ParseFromString(b"".join(raw_items))
    except DecodeError:
        return None
    values = list(flat.value_json)
    if len(values) != len(raw_items) or len(flat.key) + len(flat.nested_key) < len(raw_items):
        return None
    paths = list(map(keys.__getitem__, map(itemgetter(0), map(methodcaller("partition", VALUE_TAG), raw_items))))
    if _BAD in paths:
        return None
    return paths, values


def history(payloads: list[bytes], keys: _Keys) -> tuple[list[int], list[int], list[str], list[str]] | None:
    """History records' (steps, item counts, keys, values) as `History` keeps them, or None."""
    if _native.decoder is not None and (got := _native.decoder.history(payloads)) is not None:
        return got
    from google.protobuf.message import DecodeError
    from google.protobuf.unknown_fields import UnknownFieldSet

    rows = _types()["Rows"]()
    try:
        rows.ParseFromString(b"".join(payloads))
    except DecodeError:
        return None
    # one row per record; an unknown field can be another member of the record's oneof,
    # which a record parse would take as the record's type instead of history
    if len(rows.row) != len(payloads) or len(UnknownFieldSet(rows)):
        return None
    items_of = list(map(attrgetter("item"), rows.row))
    raw_items = list(chain.from_iterable(items_of))
    decoded = _items(raw_items, keys)
    if decoded is None:
        return None
    paths, values = decoded
    names = {p: p[0] if len(p) == 1 else ".".join(p) for p in set(paths)}
    return (list(map(attrgetter("step.num"), rows.row)), list(map(len, items_of)),
            list(map(names.__getitem__, paths)), values)


def summary(payloads: list[bytes], keys: _Keys) -> tuple[list[tuple[str, ...]], list[str]] | None:
    """Summary records' updates as (paths, value JSON) in order, or None (also when one of
    them removes keys: those are applied record by record)."""
    if _native.decoder is not None and (got := _native.decoder.summary(payloads)) is not None:
        return got
    from google.protobuf.message import DecodeError
    from google.protobuf.unknown_fields import UnknownFieldSet

    sums = _types()["Summaries"]()
    try:
        sums.ParseFromString(b"".join(payloads))
    except DecodeError:
        return None
    merged = sums.summary
    # an unknown field here can be another member of the record's oneof, which a record parse
    # would take as the record's type instead of summary
    if merged.remove or len(UnknownFieldSet(sums)):
        return None
    return _items(list(merged.update), keys)
