"""The windowed statistic: one definition shared by the detector and the calibration.

For a kind (``global``, ``ip``, ``url``) and each key of that kind (``"*"`` for global),
each event-time window of ``length_s`` seconds sliding every ``slide_s`` seconds (aligned
on the Unix epoch, as Spark's ``window()`` does) gets

    requests   = number of events in [window_start, window_end)
    errors     = number of those with status >= error_status_min
    error_rate = errors / requests (a double)

Events with a null event_time, or a null key for ``ip``/``url``, are not counted; an
event with a null status counts as a request that is not an error.

- ``windowed_rates(events_df, kind, ...)`` uses Spark's ``window()``: batch and streaming.
- ``windowed_rates_all(events_df, ...)`` computes several kinds in ONE aggregation (each
  event is expanded to one row per kind first), which a streaming query needs (it cannot
  union several streaming aggregations).
- ``windowed_rates_batch(events_df, ...)`` is the fast path for batch data in Spark:
  counts per slide-sized bucket first, then sums the ``length_s / slide_s`` buckets of
  each window. Same rows, same values as ``windowed_rates_all`` (a test checks it).
- ``window_sums(...)``: the same sums in numpy from the bucket counts, each window produced
  once — what the detector's micro-batches (``detector.pipeline.batch_rates``) use, and
  the calibration for windows of many slides (``calibration.compressed_rates``).

All return the columns ``RATE_COLUMNS``: kind, key, window_start, window_end (timestamps),
requests, errors (longs), error_rate (double).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

KINDS = ("global", "ip", "url")
GLOBAL_KEY = "*"
RATE_COLUMNS = ("kind", "key", "window_start", "window_end", "requests", "errors", "error_rate")


def _check(kind_or_kinds: Iterable[str], length_s: int, slide_s: int) -> list[str]:
    kinds = [kind_or_kinds] if isinstance(kind_or_kinds, str) else list(kind_or_kinds)
    if not kinds:
        raise ValueError("no kind given")
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    if int(length_s) < 1 or int(slide_s) < 1:
        raise ValueError(f"window length {length_s}s and slide {slide_s}s must be at least 1 s")
    if slide_s > length_s:
        raise ValueError(f"window slide {slide_s}s is longer than its length {length_s}s")
    return kinds


def key_column(kind: str):
    """The grouping key of a kind as a Spark column (string)."""
    from pyspark.sql import functions as F

    if kind == "global":
        return F.lit(GLOBAL_KEY)
    return F.col(kind).cast("string")


def _is_error(error_status_min: int):
    from pyspark.sql import functions as F

    return F.when(F.col("status") >= F.lit(int(error_status_min)), F.lit(1)).otherwise(F.lit(0))


def _finish(grouped_df):
    """Common tail: typed counts and the error rate, in RATE_COLUMNS order."""
    from pyspark.sql import functions as F

    return grouped_df.select(
        F.col("kind"),
        F.col("key"),
        F.col("window_start"),
        F.col("window_end"),
        F.col("requests").cast("long").alias("requests"),
        F.col("errors").cast("long").alias("errors"),
        (F.col("errors").cast("double") / F.col("requests").cast("double")).alias("error_rate"),
    )


def windowed_rates(events_df, kind: str, length_s: int, slide_s: int, error_status_min: int = 400):
    """Windowed requests / errors / error_rate of one kind (batch or streaming DataFrame).

    ``events_df`` needs ``event_time`` (timestamp), ``status`` and the kind's key column.
    For streaming, set the watermark on ``event_time`` before calling.
    """
    return windowed_rates_all(events_df, length_s, slide_s, error_status_min, kinds=(kind,))


def windowed_rates_all(
    events_df,
    length_s: int,
    slide_s: int,
    error_status_min: int = 400,
    kinds: Sequence[str] = KINDS,
):
    """Windowed rates of several kinds in one aggregation (batch or streaming)."""
    from pyspark.sql import functions as F

    kinds = _check(kinds, length_s, slide_s)
    base = events_df.where(F.col("event_time").isNotNull())
    if len(kinds) == 1:
        keyed = base.select(
            "event_time",
            F.lit(kinds[0]).alias("kind"),
            key_column(kinds[0]).alias("key"),
            _is_error(error_status_min).alias("is_error"),
        )
    else:
        pairs = F.array(*[
            F.struct(F.lit(k).alias("kind"), key_column(k).alias("key")) for k in kinds
        ])
        keyed = base.select(
            "event_time", _is_error(error_status_min).alias("is_error"), F.explode(pairs).alias("kk")
        ).select("event_time", "kk.kind", "kk.key", "is_error")
    keyed = keyed.where(F.col("key").isNotNull())
    win = F.window("event_time", f"{int(length_s)} seconds", f"{int(slide_s)} seconds")
    grouped = keyed.groupBy(F.col("kind"), F.col("key"), win.alias("w")).agg(
        F.count(F.lit(1)).alias("requests"), F.sum("is_error").alias("errors")
    )
    grouped = grouped.select(
        "kind", "key", F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"),
        "requests", "errors",
    )
    return _finish(grouped)


def _bucket_counts(events_df, slide_s: int, error_status_min: int, kinds: Sequence[str]):
    """Events counted per (kind, key, slide-sized bucket): columns kind, key, bucket
    (the bucket's start, Unix seconds, long), n (requests), e (errors) — ONE scan and ONE
    aggregation for every kind (grouping sets), null keys dropped."""
    from pyspark.sql import functions as F

    slide_us = int(slide_s) * 1_000_000
    micros = F.unix_micros(F.col("event_time"))
    # floor to the bucket (also right before 1970), exact integer arithmetic
    bucket = ((micros - F.pmod(micros, F.lit(slide_us))) / F.lit(1_000_000)).cast("long")
    keyed = [k for k in kinds if k != "global"]
    base = events_df.where(F.col("event_time").isNotNull()).select(
        bucket.alias("bucket"), _is_error(error_status_min).alias("is_error"),
        *[key_column(k).alias(f"key_{k}") for k in keyed],
    )
    counts = (F.count(F.lit(1)).alias("n"), F.sum("is_error").cast("long").alias("e"))
    if len(kinds) == 1:
        kind = kinds[0]
        key = F.lit(GLOBAL_KEY) if kind == "global" else F.col(f"key_{kind}")
        grouped = base.groupBy(key.alias("key"), "bucket").agg(*counts)
        out = grouped.select(F.lit(kind).alias("kind"), "key", "bucket", "n", "e")
    else:
        cols = ["bucket", *[f"key_{k}" for k in keyed]]
        sets = [["bucket", f"key_{k}"] if k != "global" else ["bucket"] for k in kinds]
        grouped = base.groupingSets(sets, *cols).agg(*counts, F.grouping_id().alias("gid"))
        # grouping_id: one bit per column of ``cols`` (1 = rolled up), the last column lowest
        width = len(keyed)
        kind_expr = key_expr = None
        for k in kinds:
            if k == "global":
                gid, key = (1 << width) - 1, F.lit(GLOBAL_KEY)
            else:
                gid = ((1 << width) - 1) ^ (1 << (width - 1 - keyed.index(k)))
                key = F.col(f"key_{k}")
            cond = F.col("gid") == F.lit(gid)
            kind_expr = (F.when if kind_expr is None else kind_expr.when)(cond, F.lit(k))
            key_expr = (F.when if key_expr is None else key_expr.when)(cond, key)
        out = grouped.select(kind_expr.alias("kind"), key_expr.alias("key"), "bucket", "n", "e")
    return out.where(F.col("key").isNotNull())


def windowed_rates_batch(
    events_df,
    length_s: int,
    slide_s: int,
    error_status_min: int = 400,
    kinds: Sequence[str] = KINDS,
):
    """Batch-only fast path with the same result as ``windowed_rates_all``.

    1. events are counted per (kind, key, slide-sized bucket) — one scan, one aggregation
       for every kind (grouping sets); this shrinks the events to far fewer rows;
    2. those counts are repartitioned by (kind, key) — a small shuffle — so that
    3. each bucket's contribution to the ``length_s // slide_s`` windows containing it is
       summed per (kind, key, window) with no second shuffle of the expanded rows.

    Requires ``length_s`` to be a multiple of ``slide_s`` (the thresholds schema enforces
    it); otherwise falls back to ``windowed_rates_all``.
    """
    from pyspark.sql import functions as F

    kinds = _check(kinds, length_s, slide_s)
    length_s, slide_s = int(length_s), int(slide_s)
    if length_s % slide_s:
        return windowed_rates_all(events_df, length_s, slide_s, error_status_min, kinds)
    steps = length_s // slide_s
    counted = _bucket_counts(events_df, slide_s, error_status_min, kinds)
    spark = events_df.sparkSession
    parts = int(spark.conf.get("spark.sql.shuffle.partitions", "4") or 4)
    counted = counted.repartition(parts, "kind", "key")
    if steps == 1:
        spread = counted.select("kind", "key", "n", "e", F.col("bucket").alias("start_s"))
    else:
        offsets = F.explode(F.sequence(F.lit(0), F.lit(steps - 1))).alias("k")
        spread = counted.select("kind", "key", "n", "e", "bucket", offsets).select(
            "kind", "key", "n", "e", (F.col("bucket") - F.col("k") * F.lit(slide_s)).alias("start_s"))
    grouped = spread.groupBy("kind", "key", "start_s").agg(
        F.sum("n").alias("requests"), F.sum("e").alias("errors"))
    grouped = grouped.select(
        "kind", "key",
        F.timestamp_seconds(F.col("start_s")).alias("window_start"),
        F.timestamp_seconds(F.col("start_s") + F.lit(length_s)).alias("window_end"),
        "requests", "errors",
    )
    return _finish(grouped)


def status_breakdown(events_df, length_s: int, slide_s: int, error_status_min: int = 400):
    """Per window and status code (errors only): error_count, approximate distinct IPs and
    the distinct error URLs — the table the old log_analyzer printed. Batch or streaming.

    Columns: window_start, window_end, status, error_count, unique_ips, urls (array).
    """
    from pyspark.sql import functions as F

    _check("global", length_s, slide_s)
    errors = events_df.where(
        F.col("event_time").isNotNull() & (F.col("status") >= F.lit(int(error_status_min)))
    )
    win = F.window("event_time", f"{int(length_s)} seconds", f"{int(slide_s)} seconds")
    grouped = errors.groupBy(win.alias("w"), F.col("status")).agg(
        F.count(F.lit(1)).alias("error_count"),
        F.approx_count_distinct("ip").alias("unique_ips"),
        F.collect_set("url").alias("urls"),
    )
    return grouped.select(
        F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"),
        "status", F.col("error_count").cast("long").alias("error_count"),
        F.col("unique_ips").cast("long").alias("unique_ips"), "urls",
    )


def window_sums(group, bucket, n, e, steps: int):
    """Every window of ``steps`` consecutive buckets that holds at least one event, per
    group, from bucket counts — numpy, no expansion and no aggregation.

    ``group``, ``bucket`` (bucket index: start seconds / slide), ``n`` (requests), ``e``
    (errors): int arrays, one entry per (group, bucket) with events, sorted by (group,
    bucket). Returns (group, start, requests, errors) arrays, one entry per window, its
    start as a bucket index (the window covers buckets start .. start + steps - 1).

    Why it is cheap: each window is produced ONCE, by the first bucket it holds (the
    starts after the previous bucket of the group up to this bucket), and its sums come
    from prefix sums — where the SQL way expands every bucket ``steps`` times and then
    groups the copies again.
    """
    import numpy as np

    group = np.asarray(group, dtype=np.int64)
    bucket = np.asarray(bucket, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    e = np.asarray(e, dtype=np.int64)
    if len(bucket) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    # one axis for all groups: a gap of ``steps`` buckets between groups keeps windows apart
    base = bucket.min()
    span = int(bucket.max() - base) + 2 * steps
    pos = group * span + (bucket - base)
    prev = np.empty_like(pos)
    prev[0] = pos[0] - steps
    prev[1:] = pos[:-1]
    first = np.ones(len(pos), dtype=bool)
    first[1:] = group[1:] != group[:-1]
    # windows first holding bucket i start at pos[i] - d, d < min(steps, pos[i] - prev[i])
    m = np.where(first, steps, np.minimum(steps, pos - prev))
    owner = np.repeat(np.arange(len(pos)), m)
    d = np.arange(len(owner)) - np.repeat(np.cumsum(m) - m, m)
    start = pos[owner] - d
    # requests of [start, start + steps) = those of buckets owner .. (first bucket >= start + steps) - 1
    end_idx = np.searchsorted(pos, start + steps, side="left")
    cn = np.concatenate(([0], np.cumsum(n)))
    ce = np.concatenate(([0], np.cumsum(e)))
    g = group[owner]
    return g, start - g * span + base, cn[end_idx] - cn[owner], ce[end_idx] - ce[owner]
