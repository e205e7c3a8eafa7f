"""Fill an MLflow sqlite store fast for the benchmarks: rows shaped like a run the real client wrote.

The benchmarks write a few runs with MlflowClient (so the schema and row shapes are MLflow's),
then insert the rest in bulk with those shapes: run ids and names substituted, params, tags,
the metric history and MLflow's `latest_metrics` as the client would have left them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

# (run_uuid, name, start ms, end ms, params [(k, v)], tags [(k, v)], metrics [(k, value, ts, step)])
RunContent = tuple[str, str, int, int, list[tuple[str, str]], list[tuple[str, str]],
                   list[tuple[str, float, int, int]]]


def insert_runs_like(con: sqlite3.Connection, template_id: str, template_name: str, contents: Iterable[RunContent],
                     *, tag_rows: list[tuple[str, Any]], chunk: int, on_chunk: Callable[[int], None]) -> None:
    """Insert every run of `contents` in the row shapes of the template run, `chunk` runs per
    transaction; `tag_rows` are the template's own tags, copied with its id and name replaced."""
    run_cols = [r[1] for r in con.execute("PRAGMA table_info(runs)")]
    run_row = dict(zip(run_cols, con.execute("SELECT * FROM runs WHERE run_uuid = ?", (template_id,)).fetchone()))

    def sub(value: object, run_uuid: str, name: str) -> object:
        return value.replace(template_id, run_uuid).replace(template_name, name) if isinstance(value, str) else value

    run_sql = f"INSERT INTO runs ({', '.join(run_cols)}) VALUES ({', '.join('?' * len(run_cols))})"
    pending = iter(contents)
    done = 0
    while True:
        batch = [c for _, c in zip(range(chunk), pending)]
        if not batch:
            return
        run_rows, param_rows, tag_out, metric_rows, latest_rows = [], [], [], [], []
        for run_uuid, name, start, end, params, tags, metrics in batch:
            row = {k: sub(v, run_uuid, name) for k, v in run_row.items()}
            row.update(run_uuid=run_uuid, name=name, start_time=start, end_time=end)
            run_rows.append(tuple(row[c] for c in run_cols))
            param_rows += [(k, v, run_uuid) for k, v in params]
            tag_out += [(k, sub(v, run_uuid, name), run_uuid) for k, v in tag_rows]
            tag_out += [(k, v, run_uuid) for k, v in tags]
            metric_rows += [(k, v, ts, run_uuid, s, 0) for k, v, ts, s in metrics]
            last: dict[str, tuple[str, float, int, int]] = {}
            for k, v, ts, s in metrics:  # MLflow's latest: the highest step, then timestamp, then value
                if k not in last or (s, ts, v) > (last[k][3], last[k][2], last[k][1]):  # a tie keeps the first
                    last[k] = (k, v, ts, s)
            latest_rows += [(k, v, ts, s, 0, run_uuid) for k, v, ts, s in last.values()]
        with con:
            con.executemany(run_sql, run_rows)
            con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", param_rows)
            con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tag_out)
            con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                            "VALUES (?, ?, ?, ?, ?, ?)", metric_rows)
            con.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                            "VALUES (?, ?, ?, ?, ?, ?)", latest_rows)
        done += len(batch)
        on_chunk(done)
