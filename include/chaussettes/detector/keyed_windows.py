"""The window counts of one key group, as the detector's stateful step keeps them: one
Arrow table per slide-sized bucket (key, n requests, e errors), from which the windows a
micro-batch changed are summed with ``windows.window_sums`` — the statistic's one home.

Every operation works on all the buckets a batch touches at once (Arrow's C++ kernels,
numpy): a backlog batch spans dozens of buckets, and a pandas call per bucket cost ~8 ms
each (measured) — more than the counting itself.

Pure; ``detector.stateful`` stores the tables in Spark's state store.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from chaussettes import windows

WINDOW_COLUMNS = ["key", "window_start", "window_end", "requests", "errors"]
HELD_SCHEMA = pa.schema([("bucket", pa.int64()), ("key", pa.string()), ("n", pa.int64()), ("e", pa.int64())])


def held(tables: dict[int, pa.Table]) -> pa.Table:
    """Bucket tables (start -> key, n, e) as one table with a bucket column."""
    parts = [t.select(["key", "n", "e"]).add_column(0, "bucket", pa.array(np.full(t.num_rows, start, np.int64)))
             for start, t in sorted(tables.items()) if t.num_rows]
    return pa.concat_tables(parts).cast(HELD_SCHEMA) if parts else HELD_SCHEMA.empty_table()


def merge(old: pa.Table, add: pa.Table) -> dict[int, pa.Table]:
    """Counts of the same buckets summed per (bucket, key): bucket start -> (key, n, e),
    sorted by key."""
    both = pa.concat_tables([old.cast(HELD_SCHEMA), add.select(HELD_SCHEMA.names).cast(HELD_SCHEMA)])
    summed = both.group_by(["bucket", "key"]).aggregate([("n", "sum"), ("e", "sum")]) \
        .rename_columns(["bucket", "key", "n", "e"]).sort_by([("bucket", "ascending"), ("key", "ascending")])
    buckets = summed.column("bucket").to_numpy()
    cuts = np.flatnonzero(np.diff(buckets)) + 1
    out = {}
    for lo, hi in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(buckets)])), strict=True):
        if hi > lo:
            out[int(buckets[lo])] = summed.slice(int(lo), int(hi - lo)).select(["key", "n", "e"])
    return out


def touched_windows(counts: pa.Table, touched: pa.Table, length_s: int, slide_s: int,
                    open_after: float | None) -> pd.DataFrame:
    """Every window (key, start, end, requests, errors) that holds a touched (key, bucket)
    of ``touched`` and ends after ``open_after`` (the watermark: earlier windows are
    closed), summed over ``counts`` (bucket, key, n, e: the buckets those windows span)."""
    empty = pd.DataFrame({c: pd.Series(dtype=object if c == "key" else "int64") for c in WINDOW_COLUMNS})
    if touched.num_rows == 0:
        return empty
    steps = int(length_s) // int(slide_s)
    names = pc.unique(touched.column("key"))
    mine = counts.filter(pc.is_in(counts.column("key"), value_set=names))
    if mine.num_rows == 0:
        return empty
    code = pc.index_in(mine.column("key"), value_set=names).to_numpy().astype(np.int64)
    bucket = mine.column("bucket").to_numpy() // slide_s
    order = np.lexsort((bucket, code))
    g, start, req, err = windows.window_sums(code[order], bucket[order], mine.column("n").to_numpy()[order],
                                             mine.column("e").to_numpy()[order], steps)
    # keep the windows that hold one of the key's touched buckets: the batch changed them
    t_idx = touched.column("bucket").to_numpy() // slide_s
    lo = int(min(t_idx.min(), start.min() if len(start) else t_idx.min()))
    span = int(max(t_idx.max(), bucket.max()) - lo) + 2 * steps
    t_code = pc.index_in(touched.column("key"), value_set=names).to_numpy().astype(np.int64)
    touched_pos = np.unique(t_code * span + (t_idx - lo))
    first = g * span + (start - lo)
    at = np.searchsorted(touched_pos, first, side="left")
    holds = (at < len(touched_pos)) & (touched_pos[np.minimum(at, len(touched_pos) - 1)] <= first + steps - 1)
    start_s = start * slide_s
    keep = holds if open_after is None else holds & (start_s + length_s > open_after)
    return pd.DataFrame({"key": np.asarray(names.to_pylist(), dtype=object)[g[keep]], "window_start": start_s[keep],
                         "window_end": start_s[keep] + length_s, "requests": req[keep], "errors": err[keep]})


def evictable(bucket_starts, length_s: int, watermark: float | None) -> list[int]:
    """Buckets no open window holds any more: every window holding bucket b ends by
    b + length, so once the watermark is there the bucket is never read again."""
    if watermark is None:
        return []
    return sorted(int(b) for b in bucket_starts if int(b) + int(length_s) <= watermark)


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()
