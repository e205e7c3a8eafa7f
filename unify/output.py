"""Tabular output for the CLI: a readable table on a terminal, json, csv or parquet for pipes."""

from __future__ import annotations

import io
import json
import sys
from typing import IO, Literal

import polars as pl

from .errors import UsageError

Format = Literal["table", "json", "csv", "parquet"]
FORMATS: tuple[str, ...] = ("table", "json", "csv", "parquet")
CELL_WIDTH = 60


def _plain(frame: pl.DataFrame) -> pl.DataFrame:
    """Lists and structs as JSON text, timestamps as ISO 8601: what csv and tables can show."""
    exprs = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, (pl.List, pl.Struct, pl.Array)):
            exprs.append(pl.col(name).map_elements(json.dumps, return_dtype=pl.String)
                         if isinstance(dtype, pl.List) else pl.col(name).struct.json_encode())
        elif isinstance(dtype, pl.Datetime):
            exprs.append(pl.col(name).dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ" if dtype.time_zone else "%Y-%m-%dT%H:%M:%S%.f"))
        else:
            exprs.append(pl.col(name))
    return frame.select(exprs)


def emit(frame: pl.DataFrame, fmt: Format, *, out: IO[str] | None = None) -> None:
    """Write `frame` to `out` (stdout) in `fmt`."""
    out = out or sys.stdout
    if fmt == "json":
        buf = io.StringIO()
        _plain(frame).write_json(buf)
        out.write(buf.getvalue() + "\n")
    elif fmt == "csv":
        out.write(_plain(frame).write_csv())
    elif fmt == "parquet":
        if out.isatty():
            raise UsageError("parquet output is binary", hint="redirect it to a file: ... --format parquet > out.parquet")
        buf = io.BytesIO()
        frame.write_parquet(buf)
        binary = getattr(out, "buffer", None)
        if binary is None:
            raise ValueError("parquet output needs a binary stream")
        binary.write(buf.getvalue())
        binary.flush()
    else:
        _table(frame, out)


def _table(frame: pl.DataFrame, out: IO[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    plain = _plain(frame)
    for name in plain.columns:
        table.add_column(name, overflow="fold", max_width=CELL_WIDTH)
    for row in plain.iter_rows():
        table.add_row(*("" if v is None else _clip(str(v)) for v in row))
    # on a terminal, fit its width; in a pipe, never fold a line (ids stay greppable)
    width = Console().width if out.isatty() else 10_000
    Console(file=out, width=width, soft_wrap=False).print(table)
    if frame.is_empty():
        out.write("(no rows)\n")


def _clip(text: str) -> str:
    return text if len(text) <= CELL_WIDTH * 3 else text[: CELL_WIDTH * 3 - 1] + "…"
