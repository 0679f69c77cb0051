"""The calibration's Spark engine: the windowed statistic over a history, reduced in the
JVM to what the fit needs, so that the driver never receives a row per window (nor per
key, for the millions of clients that send a handful of requests).

1. ``history_blocks``: the events counted per (kind, key, block of length/slide slides)
   with their prefix sums and neighbours (``windows.block_sums`` / ``block_neighbours``),
   and per key, in the same pass, its in-sample requests, errors and active hours —
   whether it may get a baseline of its own. The caller keeps this (a local checkpoint):
   both passes below read it.
2. ``distributions`` (pass 1): every window (``windows.block_windows``), counted per
   (segment, kind, hour bucket, requests, errors) for the keys without a baseline of
   their own — the ``fit.Pool`` — and summed per key for those that qualify (and for
   global): ``fit.KeyStats``. One aggregation (grouping sets), one collect.
3. ``evidence_histograms`` (pass 2): every window that may breach judged with the candidate
   thresholds by ``judge.with_verdict`` — the detector's rule, Spark form — together with
   the window one slide before it, and counted per (segment, kind, evidence bin of both):
   ``fit.Histograms``, from which the replay's alerts and incidents follow at any z.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np

from chaussettes import judge, windows
from chaussettes.calibration import fit
from chaussettes.calibration.params import Params
from chaussettes.thresholds import Thresholds

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MASK = windows.REQUESTS_MASK
BITS = windows.ERROR_BIT
KIND_SQL = "CASE gid WHEN 1 THEN 'ip' WHEN 2 THEN 'url' ELSE 'global' END"
KINDS_OF_GID = np.array(["", *(windows.KIND_OF_GID[g] for g in (1, 2, 3))], dtype=object)


def _micros(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)  # exact, no float


class Frame:
    """Where the history sits on the slide grid: whole windows start in [first, last]
    (slides), in sample before ``split`` (slides)."""

    def __init__(self, params: Params, lo: datetime, hi: datetime, split_at: datetime):
        self.steps = params.length_s // params.slide_s
        self.slide_s = params.slide_s
        slide_us = params.slide_s * 1_000_000
        self.first = -(-_micros(lo) // slide_us)
        self.last = (_micros(hi) - params.length_s * 1_000_000) // slide_us
        self.split = -(-_micros(split_at) // slide_us)
        self.split_s = self.split * params.slide_s
        self.in_hours = max(1, math.ceil((split_at - lo).total_seconds() / 3600))


def history_blocks(events_df, params: Params, frame: Frame):
    """Step 1 of the module doc."""
    block_s = frame.steps * frame.slide_s
    starts = f"block * {block_s}"
    in_sample = f"{starts} < {frame.split_s}"
    key_totals = [
        f"sum(IF({in_sample}, total & {MASK}, 0L)) {{over}} AS key_requests",
        f"sum(IF({in_sample}, shiftright(total, {BITS}), 0L)) {{over}} AS key_errors",
        f"size(collect_set(IF({in_sample}, ({starts} - pmod({starts}, 3600)) div 3600, NULL)) {{over}}) AS key_hours",
        f"sum(total & {MASK}) {{over}} AS key_events",
    ]
    blocks = windows.block_sums(events_df, params.slide_s, frame.steps, params.error_status_min)
    return windows.block_neighbours(blocks, frame.steps, key_totals)


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _qualifies(params: Params, frame: Frame) -> str:
    """SQL: may this key get a baseline of its own (module doc of ``fit``, step 2)?"""
    hours = math.ceil(params.key_min_coverage * frame.in_hours)
    cond = f"(gid IN (1, 2) AND key_requests >= {params.key_min_requests} AND key_hours >= {hours})"
    for gid, kind in ((1, "ip"), (2, "url")):
        pins = sorted(params.pins.get(kind, {}))
        if pins:
            cond += f" OR (gid = {gid} AND key IN ({', '.join(map(_sql_string, pins))}))"
    return f"({cond})"


def _season_sql(season: str, start_s: str) -> str:
    if season == "flat":
        return "0"
    hours = f"(({start_s}) - pmod({start_s}, 3600)) div 3600"
    if season == "hour_of_day":
        return f"pmod({hours}, 24)"
    from chaussettes.thresholds import WEEK_OFFSET_H

    return f"pmod({hours} + {WEEK_OFFSET_H}, 168)"


def distributions(blocks, params: Params, frame: Frame, season: str) -> tuple[fit.Pool, fit.KeyStats, dict, int]:
    """Step 2 of the module doc; also the judged windows per (segment, kind) — the replay's
    evaluations — and the number of events with an event time (the global blocks' sum: no
    scan of its own)."""
    from pyspark.sql import functions as F

    wins = windows.block_windows(blocks, frame.steps, frame.first, frame.last,
                                 keep=["key_requests", "key_errors", "key_hours", "key_events"])
    own = _qualifies(params, frame)
    mins = fit.min_requests_of(params)
    min_req = f"CASE gid WHEN 1 THEN {mins['ip']} WHEN 2 THEN {mins['url']} ELSE {mins['global']} END"
    wins = wins.selectExpr(
        "gid", "key", "key_requests", "key_errors", "key_hours", "key_events",
        f"CAST(s >= {frame.split} AS INT) AS seg", f"{_season_sql(season, f's * {frame.slide_s}')} AS season",
        "v", f"shiftright(v, {BITS}) AS e", f"{own} AS own", f"CAST((v & {MASK}) >= {min_req} AS BIGINT) AS judged")
    # the pool: windows of keys without a baseline of their own; per key: the others (and
    # global, for its events count); per segment and kind: the judged windows — a column is
    # null where its grouping does not apply
    masked = wins.selectExpr(
        "gid", "seg", "IF(own, NULL, seg) AS pool_seg", "IF(own, NULL, season) AS pool_season",
        "IF(own, NULL, v) AS pool_v", "IF(own OR gid = 3, key, NULL) AS own_key", "judged",
        "IF(seg = 0, 1L, 0L) AS w_in", "IF(seg = 0, e, 0L) AS e_in", "IF(seg = 0, e * e, 0L) AS e2_in",
        "key_requests", "key_errors", "key_hours", "key_events")
    grouped = masked.groupingSets(
        [["pool_seg", "gid", "pool_season", "pool_v"], ["gid", "own_key"], ["seg", "gid"]],
        "pool_seg", "gid", "pool_season", "pool_v", "own_key", "seg",
    ).agg(F.count(F.lit(1)).alias("windows"), F.sum("judged").alias("judged"), F.sum("w_in").alias("w_in"),
          F.sum("e_in").alias("e_in"), F.sum("e2_in").alias("e2_in"), F.max("key_requests").alias("key_requests"),
          F.max("key_errors").alias("key_errors"), F.max("key_hours").alias("key_hours"),
          F.max("key_events").alias("key_events"), F.expr("grouping(own_key) AS no_key"),
          F.expr("grouping(seg) AS no_seg"))
    table = grouped.toArrow()
    import pyarrow.compute as pc

    per_key = pc.equal(table["no_key"], 0)  # own_key is grouped: a key's sums
    per_seg = pc.equal(table["no_seg"], 0)  # seg is grouped: judged windows
    pools = table.filter(pc.and_(pc.and_(pc.invert(per_key), pc.invert(per_seg)), pc.is_valid(table["pool_seg"])))
    keys = table.filter(pc.and_(per_key, pc.is_valid(table["own_key"])))
    segs = table.filter(per_seg)

    def arr(t, name, dtype=np.int64):
        return t[name].to_numpy().astype(dtype)

    v = arr(pools, "pool_v")
    pool = fit.Pool(segment=np.where(arr(pools, "pool_seg") == 0, "in", "out").astype(object),
                    kind=KINDS_OF_GID[arr(pools, "gid")], season=arr(pools, "pool_season"),
                    requests=v & MASK, errors=v >> BITS, windows=arr(pools, "windows"))
    kinds = KINDS_OF_GID[arr(keys, "gid")]
    stats = fit.KeyStats(kind=kinds, key=np.asarray(keys["own_key"].to_pylist(), dtype=object),
                         requests=arr(keys, "key_requests"), errors=arr(keys, "key_errors"),
                         hours=arr(keys, "key_hours"), windows=arr(keys, "w_in"),
                         sum_errors=arr(keys, "e_in", np.float64), sum_errors2=arr(keys, "e2_in", np.float64))
    evaluations = {(seg, kind): 0 for seg in fit.SEGMENTS for kind in fit.KINDS}
    for seg, kind, n in zip(arr(segs, "seg"), KINDS_OF_GID[arr(segs, "gid")], arr(segs, "judged")):
        evaluations[(fit.SEGMENTS[seg], kind)] = int(n)
    events = arr(keys, "key_events")[kinds == "global"]
    return pool, stats, evaluations, int(events.sum()) if len(events) else 0


def evidence_histograms(blocks, thresholds: Thresholds, params: Params, frame: Frame) -> fit.Histograms:
    """Step 3 of the module doc. Only a window with enough requests and errors to breach
    (or after one) is judged: the others — most of a small site's clients' windows — can
    neither alert nor start an incident (their judged count comes from ``distributions``)."""
    from pyspark.sql import functions as F

    wins = windows.block_windows(blocks, frame.steps, frame.first, frame.last, with_previous=True)
    min_req = judge.min_requests_column(thresholds, "kind")
    min_err = judge.min_errors_column(thresholds, "kind")
    wins = wins.selectExpr(
        f"{KIND_SQL} AS kind", "key", "gid", f"CAST(s >= {frame.split} AS INT) AS seg",
        f"v & {MASK} AS n", f"shiftright(v, {BITS}) AS e", f"v_prev & {MASK} AS n_prev",
        f"shiftright(v_prev, {BITS}) AS e_prev", f"s * {frame.slide_s} AS ws", f"(s - 1) * {frame.slide_s} AS ws_prev")
    wins = wins.where(((F.col("n") >= min_req) & (F.col("e") >= min_err))
                      | ((F.col("n_prev") >= min_req) & (F.col("e_prev") >= min_err)))
    keyed = judge.keyed_frame(wins.sparkSession, thresholds)
    extra = {}
    if keyed is not None:
        wins = wins.join(F.broadcast(keyed), on=["kind", "key"], how="left")
        extra = {name: F.col(name) for name in ("key_baseline", "chronic_errors", "chronic_dispersion")}
    for prefix, n, e, ws in (("c_", "n", "e", "ws"), ("p_", "n_prev", "e_prev", "ws_prev")):
        wins = judge.with_verdict(wins, thresholds, kind=F.col("kind"), requests=F.col(n), errors=F.col(e),
                                  window_start_s=F.col(ws), prefix=prefix, **extra)
    top = math.ceil(params.z_max * fit.GRID)

    def bin_of(prefix: str) -> str:
        # fit.evidence_bin of the evidence where the window may breach (else -1), written
        # without IF: Spark shares a subexpression's value only outside conditional branches
        ceil = f"CAST(ceil({prefix}evidence * {fit.GRID}.0D) AS BIGINT)"
        return f"least(greatest({ceil} * CAST({prefix}eligible AS BIGINT) - 1L, -1L), {top}L)"

    table = wins.selectExpr("seg", "gid", f"{bin_of('p_')} AS prev_bin", f"{bin_of('c_')} AS bin") \
        .groupBy("seg", "gid", "prev_bin", "bin").count().toArrow()

    def col(name):
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False))

    return fit.Histograms(segment=np.where(col("seg") == 0, "in", "out").astype(object),
                          kind=KINDS_OF_GID[col("gid")], prev_bin=col("prev_bin").astype(np.int64),
                          bin=col("bin").astype(np.int64), windows=col("count").astype(np.int64))
