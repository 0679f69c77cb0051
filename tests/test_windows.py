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
    fast = as_dicts(windows.windowed_rates_batch(df, 60, 10, 400))
    assert combined == sorted(single)
    assert fast == combined
    # other window shapes, including tumbling windows
    for length, slide in ((30, 30), (20, 5)):
        assert as_dicts(windows.windowed_rates_batch(df, length, slide, 500)) == \
            as_dicts(windows.windowed_rates_all(df, length, slide, 500))
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


def test_batch_fast_path_any_subset_of_kinds_and_times_before_1970(spark):
    # the fast path counts every kind in one grouping-sets aggregation: check each subset
    rng = random.Random(11)
    rows = [(rng.uniform(0, 200), rng.choice([f"10.0.0.{rng.randint(1, 4)}", None]),
             rng.choice(["/a", "/b", None]), rng.choice([200, 404, 500, None])) for _ in range(300)]
    df = events_df(spark, rows)
    for kinds in (("url",), ("global",), ("ip", "url"), ("global", "url"), ("url", "global", "ip")):
        assert as_dicts(windows.windowed_rates_batch(df, 60, 10, 400, kinds=kinds)) == \
            as_dicts(windows.windowed_rates_all(df, 60, 10, 400, kinds=kinds)), kinds
    # buckets are floored, also for negative Unix times
    old = spark.createDataFrame(
        [(datetime(1969, 12, 31, 23, 59, 55, 500000, tzinfo=UTC), "1.1.1.1", "GET", "/x", None, "HTTP/1.1",
          500, 1, None, None)], schema=schemas.spark_schema(schemas.EVENT_FIELDS))
    assert as_dicts(windows.windowed_rates_batch(old, 20, 10, 400)) == \
        as_dicts(windows.windowed_rates_all(old, 20, 10, 400))


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
