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
- ``bucket_counts(...)`` + ``window_sums(...)``: events counted per slide-sized bucket in
  Spark, each window summed once in numpy from those counts — what the detector's
  micro-batches use (``detector.pipeline.batch_rates``).
- ``block_sums`` -> ``block_neighbours`` -> ``block_windows``: the same windows for a
  whole history, in the JVM (the calibration): events counted per block of
  ``length_s / slide_s`` slides with the block's prefix sums, each window one difference
  of a block and the next; ``block_windows(..., with_previous=True)`` also gives each
  window the one a slide before it, in the same row.

``windowed_rates*`` return the columns ``RATE_COLUMNS``: kind, key, window_start,
window_end (timestamps), requests, errors (longs), error_rate (double); the others say
what they return. Tests check every form against ``windowed_rates_all``.
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


def bucket_counts(events_df, slide_s: int, error_status_min: int, kinds: Sequence[str]):
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


# ----------------------------------------------------------------- whole histories, in the JVM

# A request and its error flag packed in one long (errors in the high 32 bits), so that one
# sum counts both; a window holds far fewer than 2**32 requests.
ERROR_BIT = 32
REQUESTS_MASK = (1 << ERROR_BIT) - 1
KIND_OF_GID = {1: "ip", 2: "url", 3: "global"}  # block_sums' gid: grouping_id over (block, ip, url)


def block_sums(events_df, slide_s: int, steps: int, error_status_min: int = 400):
    """Events counted per (kind, key, block of ``steps`` slides): columns gid (1 ip, 2 url,
    3 global: ``KIND_OF_GID``), key, block (block index: start seconds / (steps x slide)),
    total (the block's requests and errors, packed: ``ERROR_BIT``) and c1 .. c{steps-1}
    (the same for its slides before slide r) — ONE scan, grouping sets. About ``steps``
    times fewer rows than per slide: what makes the shuffles cheap."""
    from pyspark.sql import functions as F

    slide_us = int(slide_s) * 1_000_000
    # exact floor division: x - pmod(x, d) is a multiple of d (right before 1970 too)
    base = events_df.where(F.col("event_time").isNotNull()).select(
        F.expr(f"(unix_micros(event_time) - pmod(unix_micros(event_time), {slide_us})) div {slide_us}")
        .alias("slide"),
        _is_error(error_status_min).alias("is_error"),
        F.col("ip").cast("string").alias("key_ip"), F.col("url").cast("string").alias("key_url"))
    base = base.selectExpr(
        f"(slide - pmod(slide, {steps})) div {steps} AS block", f"pmod(slide, {steps}) AS at",
        f"1L + shiftleft(CAST(is_error AS BIGINT), {ERROR_BIT}) AS v", "key_ip", "key_url")
    # branch-free sums: v where the event's slide is before r, else 0
    sums = [F.expr(f"sum(v * CAST(at < {r} AS BIGINT)) AS c{r}") for r in range(1, steps)]
    grouped = base.groupingSets([["block", "key_ip"], ["block", "key_url"], ["block"]],
                                "block", "key_ip", "key_url").agg(F.expr("sum(v) AS total"), *sums,
                                                                  F.expr("grouping_id() AS gid"))
    # grouping_id over (block, key_ip, key_url): 1 = key_url rolled up (ip), 2 = key_ip (url), 3 = both
    return grouped.selectExpr(
        "gid", f"CASE gid WHEN 1 THEN key_ip WHEN 2 THEN key_url ELSE '{GLOBAL_KEY}' END AS key",
        "block", "total", *[f"c{r}" for r in range(1, steps)]).where("key IS NOT NULL")


def block_neighbours(blocks_df, steps: int, key_aggregates: Sequence[str] = ()):
    """``block_sums`` plus, from each (gid, key)'s blocks in time order (one window function,
    one sort), the next block's prefix sums (next_c{r}, has_next) and the previous block's
    total and prefix sums (prev_total, prev_c{r}, has_prev) when those blocks are adjacent.
    ``key_aggregates``: more ``"aggregate {over} AS name"`` SQL over all of the key's blocks, in the
    same pass (the calibration's per-key totals), with ``{over}`` after each aggregate."""
    c = [f"c{r}" for r in range(1, steps)]
    in_time = "OVER (PARTITION BY gid, key ORDER BY block)"
    aggregates = [text.format(over="OVER (PARTITION BY gid, key)") for text in key_aggregates]
    return blocks_df.selectExpr(
        "gid", "key", "block", "total", *c,
        *[f"lead({name}) {in_time} AS next_{name}" for name in c],
        f"coalesce(lead(block) {in_time} = block + 1, false) AS has_next",
        f"lag(total) {in_time} AS prev_total", *[f"lag({name}) {in_time} AS prev_{name}" for name in c],
        f"coalesce(lag(block) {in_time} = block - 1, false) AS has_prev",
        *aggregates)


def _sequence(steps: int) -> list[str]:
    """SQL for the windows starting at the 2 x steps slides of the block before and this
    block (S[0..steps-1] and S[steps..2 steps-1]), as packed sums. A window starting at
    slide r of block j holds j's slides r.. (total - c{r}) and j+1's slides ..r-1 (next_c{r});
    one starting at slide r of block j-1 holds j-1's (prev_total - prev_c{r}) and j's c{r}."""
    def c(prefix: str, r: int) -> str:
        return "0L" if r == 0 else f"{prefix}c{r}"

    before = [f"IF(has_prev, prev_total - {c('prev_', r)}, 0L) + {c('', r)}" for r in range(steps)]
    own = [f"total - {c('', r)} + IF(has_next, {c('next_', r)}, 0L)" for r in range(steps)]
    return before + own


def block_windows(neighbours_df, steps: int, first: int | None = None, last: int | None = None,
                  with_previous: bool = False, keep: Sequence[str] = ()):
    """Every window with at least one event, ONE row each, from ``block_neighbours``:
    columns gid, key, s (its start, in slides), v (its requests and errors, packed) and,
    ``with_previous``, v_prev (the window one slide before it, 0 when it has no event or
    starts before ``first``), plus the columns ``keep``. ``first``/``last``: the first and
    last start to keep, in slides (whole windows inside a range).

    A block row yields the windows starting in it and, when the block before it is empty,
    those starting in that empty block (they hold this block's first slides only)."""
    from pyspark.sql import functions as F

    seq = _sequence(steps)
    # the windows a row owns: positions steps..2 steps-1 always, 1..steps-1 when the block
    # before is empty (else that block's row owns them); v = 0 drops a window
    own = list(range(steps, 2 * steps)) + list(range(1, steps))
    cur = [seq[i] if i >= steps else f"IF(has_prev, 0L, {seq[i]})" for i in own]
    offsets = [i - steps for i in own]  # start - block x steps
    cols = ["gid", "key", *keep, f"posexplode(array({', '.join(cur)})) AS (pos, v)",
            f"block * {steps} AS base"]
    if with_previous:
        cols.append(f"array({', '.join(seq[i - 1] for i in own)}) AS prevs")
    wins = neighbours_df.selectExpr(*cols).selectExpr(
        "gid", "key", *keep, "v", f"base + element_at(array({', '.join(map(str, offsets))}), pos + 1) AS s",
        *(["element_at(prevs, pos + 1) AS v_prev"] if with_previous else []))
    cond = ["v > 0"]
    if first is not None:
        cond.append(f"s >= {int(first)}")
    if last is not None:
        cond.append(f"s <= {int(last)}")
    wins = wins.where(" AND ".join(cond))
    if with_previous and first is not None:
        wins = wins.withColumn("v_prev", F.expr(f"IF(s - 1 >= {int(first)}, v_prev, 0L)"))
    return wins
