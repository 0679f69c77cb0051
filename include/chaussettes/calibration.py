"""Threshold calibration: learn seuils.json from history and prove it by replay.

Pure transforms, no I/O (``jobs/calibrate_thresholds.py`` reads the history and writes
the file). The steps, each a function tested on its own:

1. ``compute_rates(events_df, params)`` — the detector's windowed statistic
   (``chaussettes.windows``, same length, slide and error definition) for global, per-IP
   and per-URL windows, kept to the windows fully inside the history's time range (the
   detector sees whole windows; a window cut by the range edge would be under-counted).
   ``calibrate`` uses ``compressed_rates``, the same windows summed from per-block
   counts in the JVM (or, for windows of many slides, from slide-sized bucket counts by
   a numpy pass, ``windows.window_sums``) and kept as one row per distinct (segment,
   kind, key, requests, errors) with their number (``windows``): later steps only
   depend on those values, and this is far smaller than every window.
2. Split by time: windows starting before ``split_at`` (the first ``1 - holdout`` of the
   range) are *in-sample* and fit the thresholds; the others are the *out-of-sample* check.
3. ``derive_min_requests`` — per kind, unless set: the smallest window size whose error
   rate is known to +/- ``min_requests_precision`` (normal approximation, z = 2.326 i.e.
   99% one-sided, at the history's overall error rate), clamped to
   [``min_requests_floor``, the median requests of that kind's windows] so that at least
   half the windows of the kind are judged.
4. ``select_overrides`` — keys with enough judged windows (``override_min_windows`` and a
   ``override_min_coverage`` share of the history's windows) whose *median* window error
   rate is far above the kind's median (``>= override_ratio x`` and ``>= + override_min_delta``):
   their normal differs (a login URL full of 401s). They get their own threshold (their
   own percentile) and are left out of the pool that sets the kind's default, so they
   neither alert all day nor raise everyone's threshold. An incident (a flooding IP for a
   few minutes) covers too little of the history to qualify, so it stays above the default.
   ``pins`` (user-given ``kind:key=rate``) are kept as they are.
5. ``fit_thresholds(sample, percentile, ...)`` — global: the percentile of the judged
   global window error rates (or ``fraction``: overall error rate x (1 + fraction), the
   old tool's rule); ip/url default: the percentile of the judged window rates of the
   pool; overrides: the key's own percentile. Percentiles are exact with linear
   interpolation (Spark's ``percentile``, DuckDB's ``quantile_cont``, numpy's default);
   every threshold is floored at ``min_threshold``, capped at 1 and rounded to 6 decimals.
6. ``adjust_percentile`` — the in-sample alert rate (breaching / judged evaluations, all
   kinds pooled) must be within ``tolerance`` of ``target_alert_rate``; the percentile
   moves by bisection within [``percentile_min``, ``percentile_max``] until it is. If no
   percentile reaches it: ``CalibrationError`` with the figures.
7. ``replay`` — the candidate goes through ``chaussettes.judge.judge`` on the Spark rates,
   exactly as the detector judges (each distinct window weighted by its number);
   in-sample, out-of-sample and whole-history alert rates come from there (and must
   agree with step 6's fast count: a safety check).
8. ``build_document`` — seuils.json with calibration and validation metadata.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from chaussettes import judge as judge_mod
from chaussettes import thresholds as th
from chaussettes import windows

KINDS = ("global", "ip", "url")
Z_99 = 2.3263478740408408  # one-sided 99% normal quantile
ROUND = 6


class CalibrationError(Exception):
    """Calibration cannot produce a file; the message is one line with the figures.

    ``usage`` errors (bad parameters) exit with 2, the others with 1.
    """

    def __init__(self, message: str, usage: bool = False):
        super().__init__(" ".join(str(message).split()))
        self.usage = usage


@dataclass(frozen=True)
class Params:
    percentile: float = 99.0  # starting percentile (ip/url defaults, overrides, global)
    percentile_min: float = 90.0  # the adjustment stays within these bounds
    percentile_max: float = 99.9
    adjust: bool = True  # move the percentile to reach the target
    global_method: str = "percentile"  # "percentile" | "fraction"
    global_fraction: float = 0.5  # fraction method: overall error rate x (1 + fraction)
    target_alert_rate: float = 0.01
    tolerance: float = 0.005  # in-sample |alert rate - target| must be <= this
    oos_tolerance: float | None = 0.02  # out-of-sample likewise (None: report only)
    holdout: float = 0.2  # last share of the time range kept out of sample (0: none)
    length_s: int = 60
    slide_s: int = 10
    watermark_s: int = 30
    error_status_min: int = 400
    min_requests: Mapping[str, int | None] = field(
        default_factory=lambda: {"global": None, "ip": None, "url": None})  # None: derive
    min_requests_precision: float = 0.1
    min_requests_floor: int = 5
    min_threshold: float = 0.01
    override_min_windows: int = 30
    override_min_coverage: float = 0.5
    override_ratio: float = 3.0
    override_min_delta: float = 0.05
    max_overrides: int = 100
    pins: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # kind -> key -> rate
    min_windows: int = 30  # fewer in-sample global windows = history too short

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["min_requests"] = dict(self.min_requests)
        d["pins"] = {k: dict(v) for k, v in self.pins.items()}
        return d


def check_params(p: Params) -> None:
    """Raise CalibrationError(usage=True) with one line for the first bad parameter."""

    def bad(msg: str) -> None:
        raise CalibrationError(msg, usage=True)

    for name in ("percentile", "percentile_min", "percentile_max"):
        v = getattr(p, name)
        if not (isinstance(v, (int, float)) and 0 < v <= 100) or math.isnan(v):
            bad(f"{name.replace('_', '-')} must be in (0, 100], got {v}")
    if p.percentile_min > p.percentile_max:
        bad(f"percentile-min {p.percentile_min} is above percentile-max {p.percentile_max}")
    if p.adjust and not (p.percentile_min <= p.percentile <= p.percentile_max):
        bad(f"percentile {p.percentile} is outside [percentile-min {p.percentile_min}, "
            f"percentile-max {p.percentile_max}]")
    if p.global_method not in ("percentile", "fraction"):
        bad(f"global-method must be percentile or fraction, got {p.global_method!r}")
    if not (p.global_fraction >= 0) or math.isinf(p.global_fraction):
        bad(f"global-fraction must be >= 0, got {p.global_fraction}")
    if not (0 < p.target_alert_rate < 1):
        bad(f"target-alert-rate must be in (0, 1), got {p.target_alert_rate}")
    if not (p.tolerance >= 0) or math.isinf(p.tolerance):
        bad(f"tolerance must be >= 0, got {p.tolerance}")
    if p.oos_tolerance is not None and (not (p.oos_tolerance >= 0) or math.isinf(p.oos_tolerance)):
        bad(f"oos-tolerance must be >= 0, got {p.oos_tolerance}")
    if not (0 <= p.holdout < 1):
        bad(f"holdout must be in [0, 1), got {p.holdout}")
    if p.length_s < 1 or p.slide_s < 1:
        bad(f"window length and slide must be >= 1 s, got {p.length_s} and {p.slide_s}")
    if p.slide_s > p.length_s or p.length_s % p.slide_s:
        bad(f"window length {p.length_s}s must be a multiple of the slide {p.slide_s}s")
    if p.watermark_s < 0:
        bad(f"watermark must be >= 0 s, got {p.watermark_s}")
    if not (100 <= p.error_status_min <= 599):
        bad(f"error-status-min must be in 100..599, got {p.error_status_min}")
    for kind, n in p.min_requests.items():
        if kind not in KINDS:
            bad(f"min-requests: unknown kind {kind!r} (expected global, ip, url)")
        if n is not None and n < 1:
            bad(f"min-requests for {kind} must be >= 1, got {n}")
    if not (0 < p.min_requests_precision < 1):
        bad(f"min-requests-precision must be in (0, 1), got {p.min_requests_precision}")
    if p.min_requests_floor < 1:
        bad(f"min-requests-floor must be >= 1, got {p.min_requests_floor}")
    if not (0 <= p.min_threshold <= 1):
        bad(f"min-threshold must be in [0, 1], got {p.min_threshold}")
    if p.override_min_windows < 1:
        bad(f"override-min-windows must be >= 1, got {p.override_min_windows}")
    if not (0 <= p.override_min_coverage <= 1):
        bad(f"override-min-coverage must be in [0, 1], got {p.override_min_coverage}")
    if not (p.override_ratio >= 1):
        bad(f"override-ratio must be >= 1, got {p.override_ratio}")
    if not (p.override_min_delta >= 0):
        bad(f"override-min-delta must be >= 0, got {p.override_min_delta}")
    if p.max_overrides < 0:
        bad(f"max-overrides must be >= 0, got {p.max_overrides}")
    for kind, keys in p.pins.items():
        if kind not in ("ip", "url"):
            bad(f"override pin: kind must be ip or url, got {kind!r}")
        for key, rate in keys.items():
            if not key:
                bad(f"override pin: empty {kind} key")
            if not (0 <= rate <= 1):
                bad(f"override pin {kind}:{key}: rate must be in [0, 1], got {rate}")
    if p.min_windows < 1:
        bad(f"min-windows must be >= 1, got {p.min_windows}")


# ----------------------------------------------------------------- percentiles (pure)

def percentile_sorted(sorted_values: np.ndarray, pct: float) -> float:
    """Exact percentile of already sorted values, linear interpolation between closest
    ranks — the formula of Spark's ``percentile`` and DuckDB's ``quantile_cont``."""
    if len(sorted_values) == 0:
        raise ValueError("percentile of no value")
    return float(_interpolate(lambda k: sorted_values[k], len(sorted_values), pct))


def percentile(values: Sequence[float] | np.ndarray, pct: float) -> float:
    return percentile_sorted(np.sort(np.asarray(values, dtype=float)), pct)


def _interpolate(sorted_at, n, pct: float):
    """``percentile_sorted``'s formula over ``n`` values (scalars or arrays of group
    sizes), ``sorted_at(k)`` giving the k-th smallest (0-based): one source of truth
    for every percentile here, so that weighted and expanded agree to the last bit."""
    pos = (n - 1) * (pct / 100.0)
    lo, hi = np.floor(pos).astype(np.int64), np.ceil(pos).astype(np.int64)
    a, b = sorted_at(lo), sorted_at(hi)
    return np.where(hi != lo, a + (pos - lo) * (b - a), a)


@dataclass(frozen=True)
class Rates:
    """A multiset of window error rates: its sorted distinct values and the running
    count of windows up to each. Why: a compressed window row stands for many windows,
    and expanding them (3.5M rows for 10M events) cost seconds in pandas."""

    values: np.ndarray  # sorted, distinct
    cum: np.ndarray  # cum[i]: windows with a rate <= values[i]

    @classmethod
    def of(cls, rates, counts=None) -> Rates:
        rates = np.asarray(rates, dtype=float)
        values, where = np.unique(rates, return_inverse=True)
        weights = None if counts is None else np.asarray(counts, dtype=np.int64)
        per_value = np.bincount(where.ravel(), weights=weights, minlength=len(values))
        return cls(values, np.cumsum(per_value.astype(np.int64)))

    def __len__(self) -> int:
        return int(self.cum[-1]) if len(self.cum) else 0

    def percentile(self, pct: float) -> float:
        if not len(self):
            raise ValueError("percentile of no value")
        return float(_interpolate(lambda k: self.values[np.searchsorted(self.cum, k, side="right")],
                                  len(self), pct))

    def above(self, threshold: float) -> int:
        """How many rates are strictly above the threshold (the judge's rule)."""
        i = int(np.searchsorted(self.values, threshold, side="right"))
        return len(self) - (int(self.cum[i - 1]) if i else 0)


def grouped_percentile(codes: np.ndarray, rates: np.ndarray, counts: np.ndarray, groups: int,
                       pct: float) -> tuple[np.ndarray, np.ndarray]:
    """(windows, percentile) of each group 0..groups-1 (none empty) of weighted rates, in
    one sort: the group's ``Rates.of(...).percentile(pct)`` without a loop over groups."""
    order = np.lexsort((rates, codes))
    values, cum = rates[order], np.cumsum(counts[order])
    sizes = np.bincount(codes, weights=counts, minlength=groups).astype(np.int64)
    before = np.cumsum(sizes) - sizes  # windows of the groups sorted before each
    at = _interpolate(lambda k: values[np.searchsorted(cum, before + k, side="right")], sizes, pct)
    return sizes, at


def _clip(x: float, floor: float) -> float:
    return round(min(1.0, max(floor, x)), ROUND)


# ----------------------------------------------------------------- min_requests (pure)

def derived_min_requests(overall_rate: float, precision: float, floor: int, median_requests: float) -> int:
    """Window size that pins an error rate near ``overall_rate`` to +/- ``precision`` (99%),
    clamped to [floor, max(floor, median requests per window of the kind)]."""
    p0 = min(max(overall_rate, 0.0), 1.0)
    need = math.ceil(Z_99 ** 2 * p0 * (1 - p0) / precision ** 2) if p0 > 0 else floor
    cap = max(floor, math.floor(median_requests))
    return int(min(max(need, floor), cap))


def derive_min_requests(
    requests_by_kind: Mapping[str, np.ndarray], overall_rate: float, params: Params
) -> dict[str, int]:
    """min_requests per kind: the given ones, the others derived (see module doc)."""
    out = {}
    for kind in KINDS:
        given = params.min_requests.get(kind)
        if given is not None:
            out[kind] = int(given)
            continue
        req = np.asarray(requests_by_kind.get(kind, np.array([])), dtype=float)
        median = percentile(req, 50) if len(req) else params.min_requests_floor
        out[kind] = derived_min_requests(overall_rate, params.min_requests_precision,
                                         params.min_requests_floor, median)
    return out


# ----------------------------------------------------------------- the in-sample data (pure)

@dataclass(frozen=True)
class Judged:
    """One kind's judged in-sample windows, compressed: ``names[codes[i]]`` is the key of
    ``counts[i]`` windows whose error rate is ``rates[i]``."""

    names: np.ndarray
    codes: np.ndarray
    rates: np.ndarray
    counts: np.ndarray

    def rates_of(self, mask: np.ndarray) -> Rates:
        return Rates.of(self.rates[mask], self.counts[mask])

    def keys_in(self, keys) -> np.ndarray:
        """Mask of the windows whose key is one of ``keys``."""
        return np.isin(self.names, list(keys))[self.codes]

    def by_key(self, keys) -> dict[str, Rates]:
        """The rates of each of ``keys`` that has judged windows."""
        return {k: self.rates_of(mask) for k in keys if (mask := self.keys_in([k])).any()}


def judged_by_kind(frame) -> dict[str, Judged]:
    """Columns kind, key, error_rate and, for compressed windows, their number in
    ``windows`` (a pandas frame or a dict of arrays) -> ``Judged`` per kind."""
    import pandas as pd

    kinds = np.asarray(frame["kind"], dtype=object)
    keys = np.asarray(frame["key"], dtype=object)
    rates = np.asarray(frame["error_rate"], dtype=float)
    counts = (np.asarray(frame["windows"], dtype=np.int64) if "windows" in frame
              else np.ones(len(rates), dtype=np.int64))
    out = {}
    for kind in KINDS:
        mask = kinds == kind
        codes, names = pd.factorize(keys[mask])
        out[kind] = Judged(names=np.asarray(names, dtype=object), codes=codes.astype(np.int64),
                           rates=rates[mask], counts=counts[mask])
    return out


@dataclass
class Sample:
    """Judged in-sample windows, ready for fast percentile fitting and counting.

    ``pool[kind]``: the error rates of the kind's judged windows whose key has no
    override; ``keyed[kind][key]``: the rates of each override key's judged windows.
    """

    pool: dict[str, Rates]
    keyed: dict[str, dict[str, Rates]]
    overall_rate: float
    pinned: dict[str, dict[str, Rates]] = field(default_factory=dict)  # pinned keys' rates

    @property
    def evaluations(self) -> int:
        return sum(len(v) for v in self.pool.values()) + sum(
            len(a) for group in (self.keyed, self.pinned) for keys in group.values() for a in keys.values())


def select_overrides(judged: Mapping[str, Judged], n_windows: int, params: Params) -> dict[str, list[str]]:
    """Keys (per kind) whose normal error rate differs widely from their kind's: see the
    module doc, step 4. ``judged``: ``judged_by_kind`` of the in-sample judged windows;
    ``n_windows``: number of in-sample global windows (for coverage)."""
    chosen: dict[str, list[str]] = {"ip": [], "url": []}
    if params.max_overrides == 0:
        return chosen
    for kind in ("ip", "url"):
        j = judged[kind]
        if len(j.rates) == 0:
            continue
        pool_median = Rates.of(j.rates, j.counts).percentile(50)
        bar = max(pool_median * params.override_ratio, pool_median + params.override_min_delta)
        windows, medians = grouped_percentile(j.codes, j.rates, j.counts, len(j.names), 50)
        min_windows = max(params.override_min_windows, math.ceil(params.override_min_coverage * n_windows))
        pinned = set(params.pins.get(kind, {}))
        ok = [(-float(m), str(k)) for k, n, m in zip(j.names, windows, medians)
              if n >= min_windows and m >= bar and k not in pinned]
        chosen[kind] = [k for _, k in sorted(ok)[:params.max_overrides]]
    return chosen


def build_sample(judged: Mapping[str, Judged], override_keys: Mapping[str, Sequence[str]], pins,
                 overall_rate: float) -> Sample:
    """Split judged in-sample windows into pools and override keys (pins are left out of
    the pools too: their threshold is given)."""
    pool, keyed, pinned = {}, {}, {}
    for kind in KINDS:
        j = judged[kind]
        learnt, given = list(override_keys.get(kind, [])), list(pins.get(kind, {}))
        is_learnt, is_pinned = j.keys_in(learnt), j.keys_in(given)
        pool[kind] = j.rates_of(~(is_learnt | is_pinned))
        keyed[kind] = j.by_key([k for k in learnt if k not in given])
        pinned[kind] = j.by_key(given)
    return Sample(pool=pool, keyed=keyed, overall_rate=overall_rate, pinned=pinned)


@dataclass
class Fit:
    percentile: float
    global_rate: float
    defaults: dict[str, float]  # ip, url
    overrides: dict[str, dict[str, float]]  # ip, url -> key -> rate
    alerts: int
    evaluations: int

    @property
    def alert_rate(self) -> float:
        return self.alerts / self.evaluations if self.evaluations else 0.0

    def threshold_values(self) -> dict[str, Any]:
        return {"global": self.global_rate, "ip": {"default": self.defaults["ip"], "overrides": self.overrides["ip"]},
                "url": {"default": self.defaults["url"], "overrides": self.overrides["url"]}}


def fit_thresholds(sample: Sample, pct: float, params: Params) -> Fit:
    """Thresholds at one percentile, and their in-sample alerts / evaluations."""
    floor = params.min_threshold
    alerts = 0
    if params.global_method == "fraction":
        g = _clip(sample.overall_rate * (1 + params.global_fraction), floor)
    else:
        g = _clip(sample.pool["global"].percentile(pct), floor) if len(sample.pool["global"]) else 1.0
    alerts += sample.pool["global"].above(g)
    defaults, overrides = {}, {}
    for kind in ("ip", "url"):
        pool = sample.pool[kind]
        default = _clip(pool.percentile(pct), floor) if len(pool) else 1.0
        defaults[kind] = default
        alerts += pool.above(default)
        overrides[kind] = {}
        for key, rates in sorted(sample.keyed[kind].items()):
            own = _clip(rates.percentile(pct), floor)
            t = max(default, own)
            if own > default:
                overrides[kind][key] = own
            alerts += rates.above(t)
        for key, rate in sorted(params.pins.get(kind, {}).items()):
            overrides[kind][key] = round(float(rate), ROUND)
        for key, rates in sample.pinned.get(kind, {}).items():
            alerts += rates.above(overrides[kind][key])
    return Fit(percentile=pct, global_rate=g, defaults=defaults, overrides=overrides,
               alerts=alerts, evaluations=sample.evaluations)


def within(rate: float, target: float, tolerance: float) -> bool:
    return abs(rate - target) <= tolerance + 1e-12


def adjust_percentile(sample: Sample, params: Params) -> tuple[Fit, list[tuple[float, float]]]:
    """Fit at ``params.percentile``; if the in-sample alert rate misses the target by more
    than the tolerance, bisect the percentile within its bounds (the alert rate does not
    increase with the percentile). Returns the fit and the (percentile, rate) trace;
    raises CalibrationError with the figures when no percentile in bounds reaches it."""
    target, tol = params.target_alert_rate, params.tolerance
    fit = fit_thresholds(sample, params.percentile, params)
    trace = [(params.percentile, fit.alert_rate)]
    if fit.evaluations == 0:
        raise CalibrationError("no window reaches min_requests: nothing would ever be judged "
                               "(lower --min-requests or give a longer history)")
    if within(fit.alert_rate, target, tol):
        return fit, trace
    if not params.adjust:
        raise CalibrationError(
            f"target alert rate {target:.2%} +/- {tol:.2%} not reached: {fit.alert_rate:.2%} "
            f"({fit.alerts}/{fit.evaluations}) at percentile {params.percentile:g} "
            "(adjustment switched off)")
    if fit.alert_rate > target:
        lo, hi = params.percentile, params.percentile_max
    else:
        lo, hi = params.percentile_min, params.percentile
    edge = fit_thresholds(sample, hi if fit.alert_rate > target else lo, params)
    trace.append((edge.percentile, edge.alert_rate))
    if within(edge.alert_rate, target, tol):
        return edge, trace
    if (fit.alert_rate > target) == (edge.alert_rate > target):
        which = "max" if fit.alert_rate > target else "min"
        raise CalibrationError(
            f"target alert rate {target:.2%} +/- {tol:.2%} unreachable: "
            f"{fit.alert_rate:.2%} ({fit.alerts}/{fit.evaluations}) at percentile {params.percentile:g}, "
            f"{edge.alert_rate:.2%} ({edge.alerts}/{edge.evaluations}) at percentile {edge.percentile:g} "
            f"(percentile-{which}); widen the percentile bounds or the tolerance")
    # invariant: rate(lo) > target > rate(hi) (or the reverse ordering of the bounds above)
    best = min((fit, edge), key=lambda f: abs(f.alert_rate - target))
    for _ in range(50):
        mid = (lo + hi) / 2
        m = fit_thresholds(sample, mid, params)
        trace.append((mid, m.alert_rate))
        if abs(m.alert_rate - target) < abs(best.alert_rate - target):
            best = m
        if within(m.alert_rate, target, tol):
            return m, trace
        if m.alert_rate > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9:
            break
    raise CalibrationError(
        f"target alert rate {target:.2%} +/- {tol:.2%} unreachable: the alert rate jumps from "
        f"{fit_thresholds(sample, lo, params).alert_rate:.2%} to {fit_thresholds(sample, hi, params).alert_rate:.2%} "
        f"near percentile {lo:.4f}; closest {best.alert_rate:.2%} ({best.alerts}/{best.evaluations}) "
        f"at percentile {best.percentile:.4f}; widen the tolerance")


# ----------------------------------------------------------------- Spark transforms

def history_range(events_df, start: datetime | None, end: datetime | None):
    """[start, end) of the history: the given bounds, else the events' min/max times."""
    lo, hi, _ = history_range_rows(events_df, start, end)
    return lo, hi


def history_range_rows(events_df, start: datetime | None, end: datetime | None):
    """(lo, hi, rows): ``history_range`` and, when it has to scan for a bound, the number of
    events counted by the same scan (else None)."""
    from pyspark.sql import functions as F

    if start is not None and end is not None:
        return start, end, None
    row = events_df.agg(F.min("event_time").alias("lo"), F.max("event_time").alias("hi"),
                        F.count(F.lit(1)).alias("rows")).collect()[0]
    lo, hi = _utc(row.lo), _utc(row.hi)
    if hi is not None:
        hi = hi + timedelta(microseconds=1)  # the last event is inside [start, end)
    return start or lo, end or hi, int(row.rows)


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


def split_time(start: datetime, end: datetime, holdout: float, slide_s: int) -> datetime:
    """Where the out-of-sample part begins (aligned down on the slide)."""
    cut = start + (end - start) * (1 - holdout)
    epoch = int(cut.timestamp())
    return datetime.fromtimestamp(epoch - epoch % slide_s, tz=UTC)


def compute_rates(events_df, params: Params, start: datetime, end: datetime, split_at: datetime):
    """The windowed statistic of every kind, windows fully inside [start, end), with a
    ``segment`` column: "in" (window_start < split_at) or "out"."""
    from pyspark.sql import functions as F

    rates = windows.windowed_rates_batch(
        events_df, params.length_s, params.slide_s, params.error_status_min, kinds=KINDS)
    rates = rates.where((F.col("window_start") >= F.lit(start)) & (F.col("window_end") <= F.lit(end)))
    return rates.withColumn(
        "segment", F.when(F.col("window_start") < F.lit(split_at), F.lit("in")).otherwise(F.lit("out")))


def compress_rates(rates_df):
    """The windows of ``compute_rates`` with the same (segment, kind, key, requests, errors)
    as ONE row with their number in ``windows`` (and the same ``error_rate``).

    Why: every later step (summary, judged sample, replay) depends on a window only
    through those values, and they repeat a lot (a client's windows hold a handful of
    requests), so keeping and collecting this is several times smaller than every window."""
    from pyspark.sql import functions as F

    grouped = rates_df.groupBy("segment", "kind", "key", "requests", "errors").agg(
        F.count(F.lit(1)).alias("windows"))
    return grouped.withColumn(
        "error_rate", F.col("errors").cast("double") / F.col("requests").cast("double"))


COMPRESSED_SCHEMA = "segment string, kind string, key string, requests long, errors long, windows long"
WINDOW_COLUMNS = tuple(field.split()[0] for field in COMPRESSED_SCHEMA.split(", "))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)  # exact, no float


ROWS_SEGMENT = "rows"  # compressed_rates(with_rows=True): the one row counting the events


# Windows of up to this many slides are summed by ``_block_windows`` (JVM only); longer
# ones by ``_bucket_windows`` (numpy). Why a bound: the block plan spells out ``steps``
# sums per group and ``2 * steps - 1`` values per block, and wider blocks carry more
# empty sums for the keys seen rarely.
BLOCK_STEPS_MAX = 12


def compressed_rates(events_df, params: Params, start: datetime, end: datetime, split_at: datetime,
                     with_rows: bool = False):
    """``compress_rates(compute_rates(...))`` — same rows — without materialising every
    window in one aggregation: ``_block_windows`` for windows of up to ``BLOCK_STEPS_MAX``
    slides (the default 60 s / 10 s is 6), ``_bucket_windows`` beyond.

    ``with_rows``: one more row, segment ``ROWS_SEGMENT``, kind global, whose ``requests``
    is the number of events with an event time (the sum of the global buckets) — the row
    count without a scan of its own."""
    from pyspark.sql import functions as F

    windows_of = _block_windows if params.length_s // params.slide_s <= BLOCK_STEPS_MAX else _bucket_windows
    out = windows_of(events_df, params, start, end, split_at, with_rows)
    return out.withColumn(
        "error_rate", F.col("errors").cast("double") / F.col("requests").cast("double"))


# Block plan: a request and its error flag packed in one long (errors in the high 32
# bits), so that one sum counts both; a window holds far fewer than 2**32 requests.
_ERROR_BIT = 32
_REQUESTS_MASK = (1 << _ERROR_BIT) - 1


def _block_windows(events_df, params: Params, start: datetime, end: datetime, split_at: datetime,
                   with_rows: bool):
    """The compressed windows in three Spark stages and no Python worker.

    1. Events are counted per (kind, key, block of ``steps`` slides) as the block's total
       and its prefix sums (c{r}: its slides before r) — ONE scan, grouping sets, and
       about ``steps`` times fewer rows than per slide (what makes it cheap: the shuffles
       carry blocks, not slides).
    2. Each (kind, key)'s blocks in time order (a window function): a window starting at
       slide r of block j holds j's slides r.. (total - c{r}) and j+1's slides ..r-1 (its
       c{r}, by ``lead``); a block with no predecessor also ends the windows starting in
       the empty block before it (its own c{r}).
    3. Those windows, one row each (``posexplode`` of one array of values per block),
       counted per (segment, kind, key, requests, errors) — in the same stage: stage 2
       already gathered each (kind, key) in one partition.

    Until that count, segment and kind are small integers and requests and errors stay
    packed in one long: a narrower grouping key to hash and compare for the millions of
    windows (~1.5 s less of ~18 s on a fresh JVM); names come back on the counted rows.
    Prefix sums and one array of longs keep the generated code small (each window's
    value is one difference): where each window summed its slides into a struct of its
    own, the JIT compiler spent ~1.4 s on that one method in a fresh JVM, now ~0.1 s.

    The plan is written as SQL text (``selectExpr``): built from Column objects it took
    ~4,400 Py4J calls and 2 s on a fresh JVM, this way ~400 and 1.3 s.

    Measured on 10M events, local[2] (bench/bench_calibration.py): ~30% less time than
    ``_bucket_windows`` in a warm JVM; ~5% in a fresh one, where the JIT compiler's work
    dominates either way."""
    from pyspark.sql import functions as F

    steps = params.length_s // params.slide_s
    slide_us = params.slide_s * 1_000_000
    # window starts, in slides, of the windows inside [start, end), and the hold-out's first
    first, last = -(-_micros(start) // slide_us), (_micros(end) - params.length_s * 1_000_000) // slide_us
    split = -(-_micros(split_at) // slide_us)
    rows_seg = f"'{ROWS_SEGMENT}'"  # as a SQL literal
    # exact floor division: x - pmod(x, d) is a multiple of d (right before 1970 too)
    base = events_df.where(F.col("event_time").isNotNull()).select(
        F.expr(f"(unix_micros(event_time) - pmod(unix_micros(event_time), {slide_us})) div {slide_us}")
        .alias("slide"),
        windows._is_error(params.error_status_min).alias("is_error"),
        F.col("ip").alias("key_ip"), F.col("url").alias("key_url"))
    base = base.selectExpr(
        f"(slide - pmod(slide, {steps})) div {steps} AS block", f"pmod(slide, {steps}) AS at",
        f"1L + shiftleft(CAST(is_error AS BIGINT), {_ERROR_BIT}) AS v", "key_ip", "key_url")
    # branch-free sums: v where the event's slide is before r, else 0
    c = [f"c{r}" for r in range(1, steps)]
    sums = [F.expr(f"sum(v * CAST(at < {r} AS BIGINT)) AS c{r}") for r in range(1, steps)]
    grouped = base.groupingSets([["block", "key_ip"], ["block", "key_url"], ["block"]],
                                "block", "key_ip", "key_url").agg(F.expr("sum(v) AS total"), *sums,
                                                                  F.expr("grouping_id() AS gid"))
    # grouping_id over (block, key_ip, key_url): 1 = key_url rolled up (ip),
    # 2 = key_ip (url), 3 = both (global); it stands for the kind until the end
    blocks = grouped.selectExpr(
        "gid",
        f"CASE gid WHEN 1 THEN key_ip WHEN 2 THEN key_url ELSE '{windows.GLOBAL_KEY}' END AS key",
        "block", "total", *c).where("key IS NOT NULL")
    in_time = "OVER (PARTITION BY gid, key ORDER BY block)"
    blocks = blocks.selectExpr(
        "gid", "key", "block", "total", *c, *[f"lead({name}) {in_time} AS next_{name}" for name in c],
        f"coalesce(lead(block) {in_time} = block + 1, false) AS has_next",
        f"coalesce(lag(block) {in_time} = block - 1, false) AS has_prev")
    # positions 0..steps-1: the windows starting at that slide of the block; steps..2*steps-2:
    # those starting at slide pos - steps + 1 of the block before, when it is empty
    values = ["total", *[f"total - c{r} + IF(has_next, next_c{r}, 0L)" for r in range(1, steps)],
              *[f"IF(has_prev, 0L, c{r})" for r in range(1, steps)]]
    if with_rows:  # the global blocks' events, at position 2 * steps - 1
        values.append(f"IF(gid = 3, total & {_REQUESTS_MASK}, 0L)")
    wins = blocks.selectExpr("gid", "key", "block", f"posexplode(array({', '.join(values)})) AS (pos, v)").selectExpr(
        "gid", "key", "v", f"CASE WHEN pos < {steps} THEN block * {steps} + pos "
                           f"WHEN pos < {2 * steps - 1} THEN block * {steps} + pos - {2 * steps - 1} END AS s",
    ).where(f"v > 0 AND (s IS NULL OR s BETWEEN {first} AND {last})")
    # seg: 0 in sample, 1 out of sample, 2 the count row (its events summed in w)
    out = wins.selectExpr(
        f"CASE WHEN s IS NULL THEN 2 WHEN s < {split} THEN 0 ELSE 1 END AS seg",
        "gid", "key", "IF(s IS NULL, 0L, v) AS v", "IF(s IS NULL, v, 1L) AS w",
    ).groupBy("seg", "gid", "key", "v").agg(F.expr("sum(w) AS windows"))
    # the count row carries its events in requests, as _bucket_windows gives it
    return out.selectExpr(
        f"CASE seg WHEN 0 THEN 'in' WHEN 1 THEN 'out' ELSE {rows_seg} END AS segment",
        "CASE gid WHEN 1 THEN 'ip' WHEN 2 THEN 'url' ELSE 'global' END AS kind", "key",
        f"IF(seg = 2, windows, v & {_REQUESTS_MASK}) AS requests", f"shiftright(v, {_ERROR_BIT}) AS errors",
        "IF(seg = 2, 0L, windows) AS windows")


def _bucket_windows(events_df, params: Params, start: datetime, end: datetime, split_at: datetime,
                    with_rows: bool):
    """The compressed windows from slide-sized bucket counts and a numpy pass.

    Spark counts events per (kind, key, slide-sized bucket) (``windows._bucket_counts``,
    one scan), gathers each (kind, key) in one partition, and a vectorised numpy pass per
    partition (``windows.window_sums``) sums each window once from prefix sums and counts
    the windows per (segment, kind, key, requests, errors). Why: the SQL way expands the
    bucket counts ``length / slide`` times and groups them back into millions of windows,
    then groups those again; here the JVM only sees the bucket counts and the result."""
    steps = params.length_s // params.slide_s
    counted = windows._bucket_counts(events_df, params.slide_s, params.error_status_min, KINDS)
    parts = int(events_df.sparkSession.conf.get("spark.sql.shuffle.partitions", "4") or 4)
    counted = counted.repartition(parts, "kind", "key")
    bounds = (_micros(start), _micros(end), _micros(split_at))
    slide_s, length_s = params.slide_s, params.length_s

    def compress(batches):
        yield from _compress_partition(batches, steps, slide_s, length_s, *bounds, with_rows=with_rows)

    return counted.mapInArrow(compress, COMPRESSED_SCHEMA)


def _codes(column):
    """(codes, names) of a non-null string column: names[codes] == column. Arrow's own
    hashing, several times faster than making a Python string of every value to factorize."""
    import pyarrow.compute as pc

    names = column.unique()
    return pc.index_in(column, value_set=names).to_numpy(), names.to_numpy(zero_copy_only=False)


def _compress_partition(batches, steps, slide_s, length_s, lo_us, hi_us, split_us, with_rows=False):
    """mapInArrow body: bucket counts of whole (kind, key)s -> compressed windows (and,
    ``with_rows``, the ``ROWS_SEGMENT`` row in the partition holding the global buckets)."""
    import pandas as pd
    import pyarrow as pa

    batches = list(batches)  # the whole partition: each (kind, key) is in one partition
    if not batches or sum(b.num_rows for b in batches) == 0:
        return
    table = pa.Table.from_batches(batches)
    kind_codes, kind_names = _codes(table.column("kind"))
    key_codes, key_names = _codes(table.column("key"))
    bucket = table.column("bucket").to_numpy() // slide_s
    combined = kind_codes.astype(np.int64) * max(len(key_names), 1) + key_codes
    order = np.lexsort((bucket, combined))  # by (kind, key), then bucket
    g, start, requests, errors = windows.window_sums(
        combined[order], bucket[order], table.column("n").to_numpy()[order], table.column("e").to_numpy()[order], steps)
    start_us = start * (slide_s * 1_000_000)
    keep = (start_us >= lo_us) & (start_us + length_s * 1_000_000 <= hi_us)
    frame = pd.DataFrame({"g": g[keep], "ins": start_us[keep] < split_us,
                          "requests": requests[keep], "errors": errors[keep]})
    counts = frame.groupby(["g", "ins", "requests", "errors"], sort=False).size().reset_index(name="windows")
    n_keys = max(len(key_names), 1)
    if with_rows and "global" in list(kind_names):
        is_global = kind_codes == list(kind_names).index("global")
        yield pa.RecordBatch.from_arrays(
            [pa.array([ROWS_SEGMENT]), pa.array(["global"]), pa.array([windows.GLOBAL_KEY]),
             pa.array([int(table.column("n").to_numpy()[is_global].sum())], pa.int64()),
             pa.array([0], pa.int64()), pa.array([0], pa.int64())],
            names=list(WINDOW_COLUMNS))
    if counts.empty:
        return
    gid = counts["g"].to_numpy()
    yield pa.RecordBatch.from_arrays([
        pa.array(np.where(counts["ins"].to_numpy(), "in", "out")),
        pa.array(np.asarray(kind_names, dtype=object)[gid // n_keys]),
        pa.array(np.asarray(key_names, dtype=object)[gid % n_keys]),
        pa.array(counts["requests"].to_numpy(dtype=np.int64)),
        pa.array(counts["errors"].to_numpy(dtype=np.int64)),
        pa.array(counts["windows"].to_numpy(dtype=np.int64)),
    ], names=list(WINDOW_COLUMNS))


def collect_windows(rates_df) -> dict[str, np.ndarray]:
    """The compressed windows (``compressed_rates``) as numpy columns, in one job: the
    summary and the judged sample both come from it (each a Spark job of its own cost
    ~0.6 s more on a fresh JVM, 10M events). Strings through ``_codes``: each distinct
    one becomes a Python string once, not once per row."""
    table = rates_df.select(*WINDOW_COLUMNS).toArrow()
    out = {}
    for name in WINDOW_COLUMNS:
        column = table.column(name)
        if name in ("segment", "kind", "key"):
            codes, names = _codes(column)
            out[name] = names[codes]
        else:
            out[name] = column.to_numpy().astype(np.int64, copy=False)
    return out


def _columns(windows_cols, *names):
    return [np.asarray(windows_cols[n]) for n in names]


def rate_summary(windows_cols) -> dict[str, Any]:
    """Counts of windows per segment and kind, the in-sample overall error rate, the
    median requests per window of each kind (for min_requests) and, when the
    ``ROWS_SEGMENT`` row is there, the events counted. ``windows_cols``: columns as
    ``collect_windows`` gives them (or a pandas frame), each row standing for ``windows``
    windows."""
    segment, kind, requests, errors, n = _columns(windows_cols, "segment", "kind", "requests", "errors", "windows")
    out: dict[str, Any] = {"windows": {}, "median_requests": {}}
    counted = segment == ROWS_SEGMENT
    if counted.any():
        out["rows"] = int(requests[counted].sum())
    is_kind = {k: kind == k for k in KINDS}
    for seg in ("in", "out"):
        in_seg = segment == seg
        for k in KINDS:
            mask = in_seg & is_kind[k]
            if not mask.any():
                continue
            out["windows"].setdefault(seg, {})[k] = int(n[mask].sum())
            if seg == "in":
                out["median_requests"][k] = Rates.of(requests[mask], n[mask]).percentile(50)
    in_global = (segment == "in") & is_kind["global"]
    out["requests"] = int((requests[in_global] * n[in_global]).sum())
    out["errors"] = int((errors[in_global] * n[in_global]).sum())
    out["overall_rate"] = out["errors"] / out["requests"] if out["requests"] else 0.0
    return out


def judged_sample(windows_cols, min_requests: Mapping[str, int]) -> dict[str, Judged]:
    """The in-sample windows that the detector would judge (``requests >= min_requests``
    of their kind), per kind (``judged_by_kind``). ``windows_cols``: as for ``rate_summary``."""
    segment, kind, key, requests, errors, n = _columns(windows_cols, *WINDOW_COLUMNS)
    need = np.full(len(kind), np.iinfo(np.int64).max)
    for k, at_least in min_requests.items():
        need[kind == k] = int(at_least)
    mask = (segment == "in") & (requests >= need)
    return judged_by_kind({"kind": kind[mask], "key": key[mask], "windows": n[mask],
                           "error_rate": errors[mask] / requests[mask]})


def replay(rates_df, thresholds: th.Thresholds) -> dict[str, Any]:
    """Judge the windows exactly as the detector does (``judge.judge``) and count, per
    segment and kind — each row weighted by the windows it stands for."""
    judged = judge_mod.judge(rates_df, thresholds)
    rows = judge_mod.replay_counts(judged, by=["segment", "kind"], weight="windows")
    figures: dict[str, Any] = {}
    for seg in ("in", "out", "all"):
        sel = [r for r in rows if seg == "all" or r["segment"] == seg]
        ev = sum(r["evaluations"] for r in sel)
        al = sum(r["alerts"] for r in sel)
        by_kind = {}
        for kind in KINDS:
            k_ev = sum(r["evaluations"] for r in sel if r["kind"] == kind)
            k_al = sum(r["alerts"] for r in sel if r["kind"] == kind)
            by_kind[kind] = {"alerts": k_al, "evaluations": k_ev,
                             "alert_rate": round(k_al / k_ev, 6) if k_ev else None}
        figures[seg] = {"alerts": al, "evaluations": ev, "alert_rate": al / ev if ev else None,
                        "by_kind": by_kind}
    return figures


# ----------------------------------------------------------------- the document

def build_document(fit: Fit, params: Params, min_requests: Mapping[str, int], *, version: int,
                   created_at: datetime, calibration: Mapping[str, Any],
                   validation: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "version": int(version),
        "created_at": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "window": {"length_s": params.length_s, "slide_s": params.slide_s, "watermark_s": params.watermark_s},
        "error_status_min": params.error_status_min,
        "min_requests": {k: int(min_requests[k]) for k in KINDS},
        "global": {"error_rate": fit.global_rate},
        "ip": {"default": fit.defaults["ip"], "overrides": dict(fit.overrides["ip"])},
        "url": {"default": fit.defaults["url"], "overrides": dict(fit.overrides["url"])},
        "calibration": dict(calibration),
        "validation": dict(validation),
    }


@dataclass
class Result:
    doc: dict[str, Any]
    fit: Fit
    trace: list[tuple[float, float]]
    figures: dict[str, Any]
    summary: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step


def iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def calibrate(events_df, params: Params, *, start: datetime | None = None, end: datetime | None = None,
              source: Mapping[str, Any] | None = None, version: int | None = None,
              now: datetime | None = None, rows: int | None = None,
              empty_message: str | None = None) -> Result:
    """The whole calibration on an events DataFrame (EVENT_FIELDS columns). Raises
    CalibrationError (one line) when no acceptable file can be produced.

    ``rows``: the number of events if already known, else counted here — by the scan that
    finds a missing bound, or else by the windowed statistic's own pass (the global bucket
    counts: with both bounds given every counted event has an event time), never by a scan
    of its own. ``empty_message``: the error when the history holds no event."""
    check_params(params)
    clock = time.perf_counter()
    now = now or datetime.now(UTC)
    events = bound_events(events_df, start, end)
    lo, hi, range_rows = history_range_rows(events, start, end)
    empty = empty_message or f"no event in the history{_range_text(start, end)}: nothing to calibrate from"
    if rows is None:
        rows = range_rows
    if lo is None or hi is None or rows == 0:
        raise CalibrationError(empty)
    if hi <= lo:
        raise CalibrationError(f"empty time range {iso(lo)} .. {iso(hi)}")
    split_at = split_time(lo, hi, params.holdout, params.slide_s) if params.holdout > 0 else hi
    compressed = compressed_rates(events, params, lo, hi, split_at, with_rows=rows is None)
    timings = {"read_s": time.perf_counter() - clock}
    clock = time.perf_counter()
    # Kept as rows by a local checkpoint rather than cached: a cache encodes compressed
    # column batches, code a fresh JVM compiles for this one use (~1.7 s of ~18 s on
    # 10M events, local[2]). The price: a lost executor fails the job instead of
    # recomputing (a nightly run is retried by its DAG).
    compressed = compressed.localCheckpoint(eager=True)
    timings["windows_s"] = time.perf_counter() - clock
    try:
        return _calibrate_rates(compressed, params, lo, hi, split_at, source or {}, version, now, rows, timings,
                                empty=empty)
    finally:
        release_checkpoint(compressed)


def release_checkpoint(df) -> None:
    """Free the blocks of a ``localCheckpoint`` now, not at some later JVM GC: the
    DataFrame API has no call for it, but its plan is a LogicalRDD over the kept RDD."""
    df._jdf.queryExecution().logical().rdd().unpersist(False)


def _range_text(start, end) -> str:
    if start is None and end is None:
        return ""
    return f" between {iso(start) or '-inf'} and {iso(end) or '+inf'}"


def _calibrate_rates(compressed, params, lo, hi, split_at, source, version, now, rows, timings,
                     empty: str = "no event in the history") -> Result:
    """The rest of ``calibrate`` on its compressed windows (with the count row when
    ``rows`` is None)."""
    from pyspark.sql import functions as F

    clock = time.perf_counter()
    collected = collect_windows(compressed)
    timings["collect_s"] = time.perf_counter() - clock
    stats = rate_summary(collected)
    rates = compressed.where(F.col("segment") != F.lit(ROWS_SEGMENT))
    if rows is None:  # counted by the statistic's pass (compressed_rates with_rows)
        rows = stats.get("rows", 0)
        if rows == 0:
            raise CalibrationError(empty)
    n_in = stats["windows"].get("in", {}).get("global", 0)
    n_out = stats["windows"].get("out", {}).get("global", 0)
    if stats["requests"] == 0 and n_out == 0:
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
    # min_requests from the in-sample requests per window
    medians = stats["median_requests"]
    min_requests = {}
    for kind in KINDS:
        given = params.min_requests.get(kind)
        if given is not None:
            min_requests[kind] = int(given)
        else:
            min_requests[kind] = derived_min_requests(
                stats["overall_rate"], params.min_requests_precision, params.min_requests_floor,
                medians.get(kind, params.min_requests_floor))
    clock = time.perf_counter()
    judged = judged_sample(collected, min_requests)
    overrides = select_overrides(judged, n_in, params)
    sample = build_sample(judged, overrides, params.pins, stats["overall_rate"])
    fit, trace = adjust_percentile(sample, params)
    timings["fit_s"] = time.perf_counter() - clock

    calibration = {
        "source": dict(source),
        "start": iso(lo), "end": iso(hi), "split_at": iso(split_at),
        "rows": rows,
        "windows": {seg: dict(v) for seg, v in stats["windows"].items()},
        "overall_error_rate": round(stats["overall_rate"], ROUND),
        "percentile": round(fit.percentile, 4),
        "percentile_trace": [[round(p, 4), round(r, 6)] for p, r in trace],
        "global_method": params.global_method,
        "min_requests_derived": {k: params.min_requests.get(k) is None for k in KINDS},
        "overrides_learnt": {k: list(v) for k, v in overrides.items()},
        "parameters": params.as_dict(),
    }
    doc_version = int(version if version is not None else int(now.timestamp()))
    validation = {"target": params.target_alert_rate, "tolerance": params.tolerance,
                  "oos_tolerance": params.oos_tolerance}
    doc = build_document(fit, params, min_requests, version=doc_version, created_at=now,
                         calibration=calibration, validation=validation)
    validation = doc["validation"]  # filled in below, after the replay
    candidate = th.Thresholds.from_doc(doc)
    clock = time.perf_counter()
    figures = replay(rates, candidate)
    timings["replay_s"] = time.perf_counter() - clock
    ins, out, whole = figures["in"], figures["out"], figures["all"]
    if (ins["alerts"], ins["evaluations"]) != (fit.alerts, fit.evaluations):
        raise CalibrationError(
            f"internal check failed: replay through judge() gives {ins['alerts']}/{ins['evaluations']} "
            f"in-sample, the fit counted {fit.alerts}/{fit.evaluations}")
    validation.update({
        "alert_rate": round(ins["alert_rate"], 8) if ins["alert_rate"] is not None else 0.0,
        "alerts": ins["alerts"], "evaluations": ins["evaluations"],
        "alert_rate_out_of_sample": round(out["alert_rate"], 8) if out["alert_rate"] is not None else None,
        "alerts_out_of_sample": out["alerts"], "evaluations_out_of_sample": out["evaluations"],
        "alert_rate_history": round(whole["alert_rate"], 8) if whole["alert_rate"] is not None else None,
        "alerts_history": whole["alerts"], "evaluations_history": whole["evaluations"],
        "by_kind": {"in": ins["by_kind"], "out": out["by_kind"]},
        "method": "replay of chaussettes.judge.judge on chaussettes.windows rates",
    })
    if (params.holdout > 0 and params.oos_tolerance is not None and out["alert_rate"] is not None
            and not within(out["alert_rate"], params.target_alert_rate, params.oos_tolerance)):
        raise CalibrationError(
            f"out-of-sample alert rate {out['alert_rate']:.2%} ({out['alerts']}/{out['evaluations']}) "
            f"is outside {params.target_alert_rate:.2%} +/- {params.oos_tolerance:.2%} "
            f"(in-sample {ins['alert_rate']:.2%} at percentile {fit.percentile:.2f}); the history's last "
            f"{params.holdout:.0%} behaves differently: check it, or widen --oos-tolerance")
    th.validate(doc)
    summary = {"windows_in": n_in, "windows_out": n_out, "min_requests": min_requests,
               "overall_rate": stats["overall_rate"], "rows": rows}
    return Result(doc=doc, fit=fit, trace=trace, figures=figures, summary=summary, timings=timings)


def summary_lines(result: Result, rows: int | None, unparseable: int | None, seconds: float,
                  output: str | None) -> list[str]:
    """The human summary printed at the end of a run."""
    d = result.doc
    v = d["validation"]
    c = d["calibration"]
    lines = [
        f"history    {c['start']} .. {c['end']} (out of sample from {c['split_at']})",
        f"rows       {rows if rows is not None else '?'} events read"
        + (f", {unparseable} unparseable lines skipped" if unparseable else ""),
        (f"windows    {result.summary['windows_in']} in sample + {result.summary['windows_out']} out "
         f"(global, {d['window']['length_s']}s sliding {d['window']['slide_s']}s); "
         f"overall error rate {c['overall_error_rate']:.2%}"),
        f"min_req    global {d['min_requests']['global']}, ip {d['min_requests']['ip']}, url {d['min_requests']['url']}",
        (f"thresholds global {d['global']['error_rate']:.4f}, ip {d['ip']['default']:.4f} "
         f"(+{len(d['ip']['overrides'])} overrides), url {d['url']['default']:.4f} "
         f"(+{len(d['url']['overrides'])} overrides) at percentile {c['percentile']:g}"),
    ]
    for kind in ("ip", "url"):
        for key, rate in list(d[kind]["overrides"].items())[:5]:
            lines.append(f"  override {kind} {key} = {rate:.4f}")
    oos = v.get("alert_rate_out_of_sample")
    lines.append(
        f"validation alert rate {v['alert_rate']:.2%} in sample ({v['alerts']}/{v['evaluations']}), "
        + (f"{oos:.2%} out of sample ({v['alerts_out_of_sample']}/{v['evaluations_out_of_sample']})"
           if oos is not None else "no out-of-sample part")
        + f"; target {v['target']:.2%} +/- {v['tolerance']:.2%}")
    lines.append(f"written    {output} (version {d['version']}) in {seconds:.1f} s" if output
                 else f"not written (dry run) — {seconds:.1f} s")
    return lines
