"""One calibration: the history's range, the Spark engine's passes, the fit, the replay's
figures and the document (``jobs/calibrate_thresholds.py`` reads the history and writes
the file)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chaussettes import thresholds as th
from chaussettes.calibration import engine, fit
from chaussettes.calibration.params import CalibrationError, Params, check_params, season_for
from chaussettes.thresholds import KINDS


@dataclass
class Result:
    doc: dict[str, Any]
    figures: dict[str, Any]  # the replay at the chosen z: {"in": ..., "out": ...}
    summary: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step


def iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def range_text(start, end) -> str:
    if start is None and end is None:
        return ""
    return f" between {iso(start) or '-inf'} and {iso(end) or '+inf'}"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # Spark hands back naive datetimes in the session zone (UTC)
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def bound_events(events_df, start: datetime | None, end: datetime | None):
    """Events with start <= event_time < end (either bound optional)."""
    from pyspark.sql import functions as F

    out = events_df
    if start is not None:
        out = out.where(F.col("event_time") >= F.lit(start))
    if end is not None:
        out = out.where(F.col("event_time") < F.lit(end))
    return out


def history_range_rows(events_df, start: datetime | None, end: datetime | None):
    """(lo, hi, rows): [start, end) of the history — the given bounds, else the events' min
    and max times — and, when it has to scan for a bound, the events counted by that scan."""
    from pyspark.sql import functions as F

    if start is not None and end is not None:
        return start, end, None
    row = events_df.agg(F.min("event_time").alias("lo"), F.max("event_time").alias("hi"),
                        F.count(F.lit(1)).alias("rows")).collect()[0]
    lo, hi = _utc(row.lo), _utc(row.hi)
    if hi is not None:
        hi = hi + timedelta(microseconds=1)  # the last event is inside [start, end)
    return start or lo, end or hi, int(row.rows)


def split_time(start: datetime, end: datetime, holdout: float, slide_s: int) -> datetime:
    """Where the out-of-sample part begins (aligned down on the slide)."""
    cut = start + (end - start) * (1 - holdout)
    epoch = int(cut.timestamp())
    return datetime.fromtimestamp(epoch - epoch % slide_s, tz=UTC)


# HotSpot does not compile a method of more than 8,000 bytes of bytecode: it runs
# interpreted. A stage that explodes windows and judges each with the one before it
# generates such a method, and ran several times slower; at this limit Spark falls back
# from whole-stage code for that stage instead.
HUGE_METHOD_CONF = ("spark.sql.codegen.hugeMethodLimit", "8000")


def _session_conf(spark, name: str, value: str):
    """Set a session conf unless the user did; returns what restores it."""
    if spark.conf.get(name, None) is not None:
        return lambda: None
    spark.conf.set(name, value)
    return lambda: spark.conf.unset(name)


def release_checkpoint(df) -> None:
    """Free the blocks of a ``localCheckpoint`` now, not at some later JVM GC: the
    DataFrame API has no call for it, but its plan is a LogicalRDD over the kept RDD."""
    df._jdf.queryExecution().logical().rdd().unpersist(False)


def calibrate(events_df, params: Params, *, start: datetime | None = None, end: datetime | None = None,
              source: Mapping[str, Any] | None = None, version: int | None = None,
              now: datetime | None = None, rows: int | None = None,
              empty_message: str | None = None) -> Result:
    """The whole calibration on an events DataFrame (EVENT_FIELDS columns). Raises
    CalibrationError (one line) when no acceptable file can be produced.

    ``rows``: the number of events if already known, else counted here — by the scan that
    finds a missing bound, or else by the engine's first pass, never by a scan of its own.
    ``empty_message``: the error when the history holds no event."""
    check_params(params)
    clock = time.perf_counter()
    now = now or datetime.now(UTC)
    events = bound_events(events_df, start, end)
    lo, hi, range_rows = history_range_rows(events, start, end)
    empty = empty_message or f"no event in the history{range_text(start, end)}: nothing to calibrate from"
    if rows is None:
        rows = range_rows
    if lo is None or hi is None or rows == 0:
        raise CalibrationError(empty)
    if hi <= lo:
        raise CalibrationError(f"empty time range {iso(lo)} .. {iso(hi)}")
    split_at = split_time(lo, hi, params.holdout, params.slide_s) if params.holdout > 0 else hi
    frame = engine.Frame(params, lo, hi, split_at)
    season = season_for(params, (hi - lo).total_seconds() / 86400)
    restore = _session_conf(events_df.sparkSession, *HUGE_METHOD_CONF)
    try:
        # Kept as rows by a local checkpoint rather than cached: both passes read it, and a
        # cache encodes column batches, code a fresh JVM compiles for this one use. The
        # price: a lost executor fails the job instead of recomputing (a nightly run is
        # retried by its DAG).
        blocks = engine.history_blocks(events, params, frame).localCheckpoint(eager=True)
        timings = {"blocks_s": time.perf_counter() - clock}
        try:
            return _calibrate_blocks(blocks, params, frame, season, lo, hi, split_at, source or {}, version, now,
                                     rows, timings, empty)
        finally:
            release_checkpoint(blocks)
    finally:
        restore()


def _calibrate_blocks(blocks, params: Params, frame: engine.Frame, season: str, lo, hi, split_at, source,
                      version, now, rows, timings, empty: str) -> Result:
    clock = time.perf_counter()
    pool, keys, evaluations, events = engine.distributions(blocks, params, frame, season)
    timings["distributions_s"] = time.perf_counter() - clock
    if rows is None:
        rows = events
    if not rows:
        raise CalibrationError(empty)
    windows = {seg: {k: int(pool.windows[pool.select(seg, k)].sum()) for k in KINDS} for seg in fit.SEGMENTS}
    n_in, n_out = windows["in"]["global"], windows["out"]["global"]
    if n_in + n_out == 0:
        raise CalibrationError(
            f"no complete {params.length_s}s window in the history {iso(lo)} .. {iso(hi)}: "
            f"too short (need at least {params.min_windows} windows)")
    if n_in < params.min_windows:
        raise CalibrationError(
            f"history too short: {n_in} in-sample global windows of {params.length_s}s "
            f"sliding {params.slide_s}s between {iso(lo)} and {iso(split_at)} "
            f"(need at least {params.min_windows}; lower --min-windows or give more history)")
    if params.holdout > 0 and n_out == 0:
        raise CalibrationError(
            f"history too short for a hold-out: no complete window after {iso(split_at)} "
            f"(use --holdout 0 or give more history)")

    clock = time.perf_counter()
    kinds = fit.kind_baselines(pool, season, frame.steps, params)
    keyed = fit.key_baselines(keys, kinds, params)
    dispersion, dispersion_notes = {}, {}
    for kind in KINDS:
        dispersion[kind], dispersion_notes[kind] = fit.fit_dispersion(pool, kind, kinds[kind])
    min_requests = fit.min_requests_of(params)
    doc_version = int(version if version is not None else int(now.timestamp()))

    def document(z: float, calibration=None, validation=None) -> dict[str, Any]:
        return fit.build_document(params=params, version=doc_version, created_at=now, min_requests=min_requests,
                                  kinds=kinds, keys=keyed, season=season, dispersion=dispersion, z=z,
                                  calibration=calibration or {}, validation=validation or {})

    candidate = th.Thresholds.from_doc(document(params.z_max))  # the evidence does not depend on z
    timings["fit_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    replay = fit.Replay.of(engine.evidence_histograms(blocks, candidate, params, frame), evaluations, params.z_max)
    timings["replay_s"] = time.perf_counter() - clock
    days_in = (split_at - lo).total_seconds() / 86400
    days_out = (hi - split_at).total_seconds() / 86400
    k, trace = fit.choose_z(replay, days_in, params)
    z = k / fit.GRID
    ins, out = replay.at("in", k), replay.at("out", k)
    if ins["evaluations"] == 0:
        raise CalibrationError("no window reaches min_requests: nothing would ever be judged "
                               "(lower --min-requests or give a longer history)")
    overall = sum(pool.errors[pool.select("in", "global")] * pool.windows[pool.select("in", "global")])
    overall /= max(1, sum(pool.requests[pool.select("in", "global")] * pool.windows[pool.select("in", "global")]))
    calibration = {
        "source": dict(source),
        "start": iso(lo), "end": iso(hi), "split_at": iso(split_at),
        "rows": rows,
        "windows": windows,
        "overall_error_rate": round(float(overall), fit.ROUND),
        "season": season,
        "season_fallback_hours": {k_: kinds[k_].fallback_hours for k_ in KINDS if kinds[k_].fallback_hours},
        "keys": {k_: len(keyed.baselines[k_]) for k_ in ("ip", "url")},
        "keys_beyond_max": keyed.beyond_max,
        "chronic": {k_: [{"key": key, "baseline": keyed.baselines[k_][key], "kind_baseline": kinds[k_].rate,
                          "errors_per_window": lam}
                         for key, (lam, _) in sorted(keyed.chronic[k_].items(),
                                                     key=lambda kv: -keyed.baselines[k_][kv[0]])]
                    for k_ in ("ip", "url")},
        "dispersion_fit": dispersion_notes,
        "z_trace": [[round(zt, 6), n] for zt, n in trace],
        "parameters": params.as_dict(),
    }
    validation = {
        "method": "replay of chaussettes.judge (Spark form) on the history's windows, each with the one before it",
        "budget_incidents_per_day": params.budget,
        "incidents": ins["incidents"], "days": round(days_in, 6),
        "incidents_per_day": round(ins["incidents"] / days_in, 6) if days_in else None,
        "alert_rate": round(ins["alert_rate"], 8) if ins["alert_rate"] is not None else 0.0,
        "alerts": ins["alerts"], "evaluations": ins["evaluations"],
        "incidents_out_of_sample": out["incidents"] if days_out else None,
        "days_out_of_sample": round(days_out, 6),
        "incidents_per_day_out_of_sample": round(out["incidents"] / days_out, 6) if days_out else None,
        "alert_rate_out_of_sample": round(out["alert_rate"], 8) if out["alert_rate"] is not None else None,
        "alerts_out_of_sample": out["alerts"], "evaluations_out_of_sample": out["evaluations"],
        "by_kind": {"in": ins["by_kind"], "out": out["by_kind"]},
    }
    if params.holdout > 0 and days_out > 0:
        validation["allowed_out_of_sample"] = fit.validate_out_of_sample(out, days_out, params)
    doc = document(z, calibration, validation)
    th.validate(doc)
    summary = {"windows_in": n_in, "windows_out": n_out, "min_requests": min_requests, "rows": rows,
               "overall_rate": float(overall), "z": z}
    return Result(doc=doc, figures={"in": ins, "out": out}, summary=summary, timings=timings)


def summary_lines(result: Result, rows: int | None, unparseable: int | None, seconds: float,
                  output: str | None) -> list[str]:
    """The human summary printed at the end of a run."""
    d = result.doc
    v, c, ev = d["validation"], d["calibration"], d["evidence"]
    lines = [
        f"history    {c['start']} .. {c['end']} (out of sample from {c['split_at']})",
        f"rows       {rows if rows is not None else '?'} events read"
        + (f", {unparseable} unparseable lines skipped" if unparseable else ""),
        (f"windows    {result.summary['windows_in']} in sample + {result.summary['windows_out']} out "
         f"(global, {d['window']['length_s']}s sliding {d['window']['slide_s']}s); "
         f"overall error rate {c['overall_error_rate']:.2%}"),
        (f"baselines  global {d['global']['error_rate']:.4f}, ip {d['ip']['default']:.4f} "
         f"(+{len(d['ip']['overrides'])} keys), url {d['url']['default']:.4f} (+{len(d['url']['overrides'])} keys), "
         f"{ev['season'].replace('_', ' ')}"
         + (f" ({sum(len(h) for h in c['season_fallback_hours'].values())} hours at the flat baseline: "
            "too little history)" if c["season_fallback_hours"] else "")),
        (f"evidence   z {ev['z']:g}, min errors global {ev['min_errors']['global']} ip {ev['min_errors']['ip']} "
         f"url {ev['min_errors']['url']}; dispersion global {ev['dispersion']['global']:g} ip "
         f"{ev['dispersion']['ip']:g} url {ev['dispersion']['url']:g}"),
    ]
    for kind in ("ip", "url"):
        for item in c["chronic"][kind][:5]:
            lines.append(f"  chronic {kind} {item['key']} fails {item['baseline']:.1%} (its kind "
                         f"{item['kind_baseline']:.1%}), ~{item['errors_per_window']:.1f} errors a window")
        if len(c["chronic"][kind]) > 5:
            lines.append(f"  ... {len(c['chronic'][kind]) - 5} more chronic {kind} keys (calibration.chronic)")
    oos = v.get("incidents_out_of_sample")
    lines.append(
        f"validation {v['incidents']} incidents in {v['days']:.2f} days in sample "
        f"({v['incidents_per_day']:.2f}/day, budget {v['budget_incidents_per_day']:g}/day)"
        + (f", {oos} in {v['days_out_of_sample']:.2f} days out of sample (at most {v.get('allowed_out_of_sample')} "
           "by chance)" if oos is not None else ", no out-of-sample part")
        + f"; alert rate {v['alert_rate']:.3%} of {v['evaluations']} judged windows")
    lines.append(f"written    {output} (version {d['version']}) in {seconds:.1f} s" if output
                 else f"not written (dry run) — {seconds:.1f} s")
    return lines
