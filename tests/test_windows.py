"""chaussettes.windows: the windowed statistic on small hand-made events (real Spark)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from chaussettes import schemas, windows

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
# Spark hands timestamps back as naive local datetimes (the machine runs in UTC)
T0N = T0.replace(tzinfo=None)


def events_df(spark, rows):
    """rows: (seconds after T0, ip, url, status)."""
    full = [
        (T0 + timedelta(seconds=s) if s is not None else None, ip, "GET", url, None, "HTTP/1.1",
         status, 10, None, None)
        for s, ip, url, status in rows
    ]
    return spark.createDataFrame(full, schema=schemas.spark_schema(schemas.EVENT_FIELDS))


def as_dicts(df):
    return sorted(
        (r.kind, r.key, r.window_start, r.window_end, r.requests, r.errors, r.error_rate)
        for r in df.collect()
    )


def _row(kind, key, start_s, length, n, e):
    start = datetime.fromtimestamp(start_s, UTC).replace(tzinfo=None)
    return (kind, key, start, start + timedelta(seconds=length), n, e, e / n)


def bucket_rows(df, length, slide, esm, kinds=windows.KINDS):
    """The detector's form: Spark bucket counts, windows summed in numpy (window_sums)."""
    import pandas as pd

    counts = windows.bucket_counts(df, slide, esm, kinds).toPandas().sort_values(["kind", "key", "bucket"])
    if counts.empty:
        return []
    group, names = pd.MultiIndex.from_frame(counts[["kind", "key"]]).factorize()
    g, start, n, e = windows.window_sums(group, counts["bucket"].to_numpy() // slide, counts["n"], counts["e"],
                                         length // slide)
    return sorted(_row(*names[a], s * slide, length, int(x), int(y)) for a, s, x, y in zip(g, start, n, e))


def block_rows(df, length, slide, esm, kinds=windows.KINDS):
    """The calibration's form: block sums and neighbours in the JVM, one row per window."""
    steps = length // slide
    blocks = windows.block_neighbours(windows.block_sums(df, slide, steps, esm), steps)
    rows = windows.block_windows(blocks, steps).collect()
    out = [_row(windows.KIND_OF_GID[r.gid], r.key, r.s * slide, length, r.v & windows.REQUESTS_MASK,
                r.v >> windows.ERROR_BIT) for r in rows]
    return sorted(r for r in out if r[0] in kinds)


def test_global_counts_in_sliding_windows(spark):
    # t=5s ok, t=12s 500, t=65s 404, a null time (ignored)
    df = events_df(spark, [(5, "1.1.1.1", "/a", 200), (12, "1.1.1.1", "/a", 500),
                           (65, "2.2.2.2", "/b", 404), (None, "3.3.3.3", "/c", 500)])
    out = windows.windowed_rates(df, "global", 60, 10, 400)
    assert tuple(out.columns) == windows.RATE_COLUMNS
    dtypes = dict(out.dtypes)
    assert dtypes == {"kind": "string", "key": "string", "window_start": "timestamp",
                      "window_end": "timestamp", "requests": "bigint", "errors": "bigint",
                      "error_rate": "double"}
    rows = {(r.window_start - T0N).total_seconds(): (r.requests, r.errors, r.error_rate, r.key)
            for r in out.collect()}
    # windows are aligned on multiples of 10 s; t=5 is in starts -50..0
    assert rows[-50.0] == (1, 0, 0.0, "*")
    assert rows[0.0] == (2, 1, 0.5, "*")      # 5 and 12
    assert rows[10.0] == (2, 2, 1.0, "*")     # 12 and 65
    assert rows[20.0] == (1, 1, 1.0, "*")     # 65 only
    assert rows[60.0] == (1, 1, 1.0, "*")
    assert set(rows) == {float(s) for s in range(-50, 70, 10)}
    for r in out.collect():
        assert (r.window_end - r.window_start).total_seconds() == 60


def test_per_ip_and_url_and_error_threshold(spark):
    df = events_df(spark, [(1, "1.1.1.1", "/a", 200), (2, "1.1.1.1", "/b", 401),
                           (3, "2.2.2.2", "/a", 399), (4, None, "/a", 503)])
    ip = {(r.key, (r.window_start - T0N).total_seconds()): (r.requests, r.errors)
          for r in windows.windowed_rates(df, "ip", 10, 10, 400).collect()}
    assert ip == {("1.1.1.1", 0.0): (2, 1), ("2.2.2.2", 0.0): (1, 0)}  # null ip not counted
    url = {r.key: (r.requests, r.errors)
           for r in windows.windowed_rates(df, "url", 10, 10, 400).collect()}
    assert url == {"/a": (3, 1), "/b": (1, 1)}
    url500 = {r.key: r.errors for r in windows.windowed_rates(df, "url", 10, 10, 500).collect()}
    assert url500 == {"/a": 1, "/b": 0}


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown kind"):
        windows.windowed_rates(None, "status", 60, 10)
    with pytest.raises(ValueError, match="longer than"):
        windows.windowed_rates(None, "ip", 10, 60)


def test_all_kinds_one_aggregation_equals_single_kinds_and_batch_fast_path(spark):
    rng = random.Random(7)
    rows = [(rng.uniform(-30, 400), f"10.0.0.{rng.randint(1, 6)}", f"/p{rng.randint(1, 4)}",
             rng.choice([200, 200, 200, 301, 404, 500])) for _ in range(600)]
    df = events_df(spark, rows)
    single = []
    for kind in windows.KINDS:
        single += as_dicts(windows.windowed_rates(df, kind, 60, 10, 400))
    combined = as_dicts(windows.windowed_rates_all(df, 60, 10, 400))
    fast = block_rows(df, 60, 10, 400)
    assert combined == sorted(single)
    assert fast == combined == bucket_rows(df, 60, 10, 400)
    # other window shapes, including tumbling windows and windows of many slides
    for length, slide in ((30, 30), (20, 5), (140, 10)):
        want = as_dicts(windows.windowed_rates_all(df, length, slide, 500))
        assert block_rows(df, length, slide, 500) == want == bucket_rows(df, length, slide, 500)
    # check one window by hand against the raw rows
    start = T0N + timedelta(seconds=100)
    inside = [r for r in rows if 100 <= r[0] < 160 and r[1] == "10.0.0.3"]
    got = [r for r in fast if r[0] == "ip" and r[1] == "10.0.0.3" and r[2] == start]
    assert got and got[0][4] == len(inside) and got[0][5] == sum(r[3] >= 400 for r in inside)


def test_streaming_dataframe_is_accepted(spark, tmp_path):
    # the detector calls the same functions on a stream: check it runs end to end
    src = tmp_path / "in"
    events_df(spark, [(1, "1.1.1.1", "/a", 500), (2, "1.1.1.1", "/a", 200)]).write.parquet(str(src))
    stream = spark.readStream.schema(schemas.spark_schema(schemas.EVENT_FIELDS)).parquet(str(src))
    stream = stream.withWatermark("event_time", "30 seconds")
    rates = windows.windowed_rates_all(stream, 60, 10, 400)
    q = (rates.writeStream.outputMode("update").format("memory").queryName("wintest")
         .option("checkpointLocation", str(tmp_path / "ck")).trigger(availableNow=True).start())
    q.awaitTermination(120)
    got = spark.sql("select * from wintest where kind = 'ip' and window_start = timestamp'2026-11-23 12:00:00'").collect()
    assert [(r.key, r.requests, r.errors) for r in got] == [("1.1.1.1", 2, 1)]


def test_status_breakdown(spark):
    df = events_df(spark, [(1, "1.1.1.1", "/a", 500), (2, "2.2.2.2", "/b", 500),
                           (3, "1.1.1.1", "/a", 404), (4, "1.1.1.1", "/a", 200)])
    out = {r.status: (r.error_count, r.unique_ips, sorted(r.urls))
           for r in windows.status_breakdown(df, 10, 10, 400).collect()}
    assert out == {500: (2, 2, ["/a", "/b"]), 404: (1, 1, ["/a"])}


def test_fast_paths_any_subset_of_kinds_null_keys_and_times_before_1970(spark):
    # both fast paths count every kind in one grouping-sets aggregation: check each subset
    rng = random.Random(11)
    rows = [(rng.uniform(0, 200), rng.choice([f"10.0.0.{rng.randint(1, 4)}", None]),
             rng.choice(["/a", "/b", None]), rng.choice([200, 404, 500, None])) for _ in range(300)]
    df = events_df(spark, rows)
    everything = block_rows(df, 60, 10, 400)
    for kinds in (("url",), ("global",), ("ip", "url"), ("global", "url"), ("url", "global", "ip")):
        want = as_dicts(windows.windowed_rates_all(df, 60, 10, 400, kinds=kinds))
        assert bucket_rows(df, 60, 10, 400, kinds) == want, kinds
        assert sorted(r for r in everything if r[0] in kinds) == want, kinds
    # buckets and blocks are floored, also for negative Unix times
    old = spark.createDataFrame(
        [(datetime(1969, 12, 31, 23, 59, 55, 500000, tzinfo=UTC), "1.1.1.1", "GET", "/x", None, "HTTP/1.1",
          500, 1, None, None)], schema=schemas.spark_schema(schemas.EVENT_FIELDS))
    want = as_dicts(windows.windowed_rates_all(old, 20, 10, 400))
    assert block_rows(old, 20, 10, 400) == want == bucket_rows(old, 20, 10, 400)


def test_block_windows_carry_the_window_before_and_stay_in_range(spark):
    # sparse and dense keys, gaps longer than a window, a range cut on both sides
    rng = random.Random(3)
    rows = [(rng.choice([rng.uniform(0, 900), rng.uniform(300, 330)]), rng.choice(["a", "b", "c"]), "/p",
             rng.choice([200, 200, 500])) for _ in range(400)]
    df = events_df(spark, rows)
    base = int(T0.timestamp()) // 10
    for length, slide in ((60, 10), (30, 10), (20, 20)):
        steps = length // slide
        blocks = windows.block_neighbours(windows.block_sums(df, slide, steps, 400), steps)
        every = {(r.gid, r.key, r.s): r.v for r in windows.block_windows(blocks, steps).collect()}
        first, last = base + 7, base + 70
        got = windows.block_windows(blocks, steps, first, last, with_previous=True).collect()
        assert {(r.gid, r.key, r.s) for r in got} == {k for k in every if first <= k[2] <= last}
        for r in got:
            assert r.v == every[(r.gid, r.key, r.s)]
            assert r.v_prev == (every.get((r.gid, r.key, r.s - 1), 0) if r.s > first else 0), r


def test_window_sums_equals_expanding_every_bucket():
    # the calibration's numpy kernel: each window once, from prefix sums; check it against
    # the definition (every bucket added to the `steps` windows holding it)
    import numpy as np

    rng = random.Random(5)
    for _ in range(200):
        steps = rng.randint(1, 6)
        cells = {(rng.randint(0, 3), rng.randint(-15, 15)): (rng.randint(1, 9), rng.randint(0, 3))
                 for _ in range(rng.randint(1, 30))}
        keys = sorted(cells)
        expected: dict = {}
        for (g, b), (n, e) in cells.items():
            for d in range(steps):
                acc = expected.setdefault((g, b - d), [0, 0])
                acc[0] += n
                acc[1] += e
        g, start, req, err = windows.window_sums(
            [k[0] for k in keys], [k[1] for k in keys], [cells[k][0] for k in keys],
            [cells[k][1] for k in keys], steps)
        got = {(int(a), int(s)): [int(r), int(x)] for a, s, r, x in zip(g, start, req, err)}
        assert len(got) == len(g) == len(expected)
        assert got == expected
    empty = windows.window_sums(np.array([]), np.array([]), np.array([]), np.array([]), 6)
    assert all(len(a) == 0 for a in empty)
