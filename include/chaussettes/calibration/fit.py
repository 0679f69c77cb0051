"""The calibration's pure part: baselines, over-dispersion and the evidence threshold from
what the Spark engine hands over — no Spark, no I/O, tested on small arrays.

Inputs (numpy arrays, see ``engine``):

- ``Pool``: the in- and out-of-sample windows of the keys WITHOUT a baseline of their own,
  counted per (segment, kind, hour bucket, requests, errors) — a distribution, never a row
  per window;
- ``KeyStats``: per key that qualifies for a baseline of its own (and for global), its
  in-sample requests, errors, active hours and error-count moments per window;
- ``Histograms``: per (segment, kind), the evidence of the windows that may breach and of
  the window one slide before each, both on the grid ``GRID`` (z = k / GRID); with the
  judged windows per (segment, kind), the replay.

Steps:

1. ``kind_baselines``: a kind's baseline is its pooled in-sample error rate; by hour of
   the day or week when the history is long enough (``params.season_for``), each hour
   shrunk toward the flat rate (``season_prior`` requests) and an hour with fewer than
   ``season_min_requests`` requests left at the flat rate (reported). No error at all: the
   floor (``rate_floor``).
2. ``key_baselines``: a key with ``key_min_requests`` in-sample requests, seen in
   ``key_min_coverage`` of the in-sample hours (an incident of a few minutes is not a key's
   normal), gets (E + m p) / (N + m): its own rate shrunk toward its kind's ``p``
   (``key_prior`` requests m). One whose baseline is far above its kind's is *chronic*:
   it keeps a high baseline, never a pass, and is also judged against its usual errors per
   window (mean and variance of its in-sample windows' error counts).
3. ``fit_dispersion``: a kind's over-dispersion rho is the one at which 5% of its
   in-sample windows (those expecting at least one error) show the evidence of a 5%
   one-sided test (z = 1.645): the spread of its ordinary windows, robust to incidents
   covering fewer than a few percent of them (the alert level itself, far in the tail, is
   the budget's business: step 4). Without enough such windows: 0 (binomial), said in the
   report.
4. ``choose_z``: the evidence threshold z on the grid in [z_min, z_max]: the smallest at
   which the replayed in-sample history has at most ``budget`` incidents a day, and so for
   every z above it. z_min (4.75 by default: one window in a million by chance) keeps a
   generous budget from buying alerts on noise: on the small-site profile the budget alone
   spent itself on false incidents, while z_min missed no labelled incident
   (bench/bench_quality.py). An incident is counted where a breaching window follows one that did
   not breach (or no window): at least as many as the detector's incidents, which also
   merge breaches fewer than ``resolve_after`` judged windows apart.
5. ``validate_out_of_sample``: the held-out tail replayed at that z may show more than
   ``budget`` a day by chance, not beyond the ``oos_confidence`` quantile of a Poisson
   count at the budget; else the candidate is refused with the figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from chaussettes import judge
from chaussettes.calibration.params import CalibrationError, Params
from chaussettes.thresholds import KINDS, SEASONS

GRID = 64  # evidence thresholds are multiples of 1/64: exact in binary, so a bin edge is exact
Z_REF = 1.6448536269514722  # the one-sided 5% normal quantile: the dispersion fit's level
TAIL_REF = 0.05
DISPERSION_MIN_WINDOWS = 500  # windows expecting an error, below which rho = 0
ROUND = 8
SEGMENTS = ("in", "out")


@dataclass(frozen=True)
class Pool:
    """Windows of keys without a baseline of their own: ``windows[i]`` windows of kind
    ``kind[i]`` in segment ``segment[i]`` ("in"/"out"), hour bucket ``season[i]``, with
    ``requests[i]`` requests and ``errors[i]`` errors."""

    segment: np.ndarray
    kind: np.ndarray
    season: np.ndarray
    requests: np.ndarray
    errors: np.ndarray
    windows: np.ndarray

    def select(self, segment: str, kind: str) -> np.ndarray:
        return (self.segment == segment) & (self.kind == kind)


@dataclass(frozen=True)
class KeyStats:
    """Per key: in-sample requests and errors (events), hours seen, and its in-sample
    windows with the sum and sum of squares of their error counts."""

    kind: np.ndarray
    key: np.ndarray
    requests: np.ndarray
    errors: np.ndarray
    hours: np.ndarray
    windows: np.ndarray
    sum_errors: np.ndarray
    sum_errors2: np.ndarray


@dataclass(frozen=True)
class Histograms:
    """Windows per (segment, kind, bin of the previous window's evidence, bin of the window's
    evidence); bin b holds evidence in (b / GRID, (b + 1) / GRID], -1 none (0, or a window
    without enough requests and errors to breach)."""

    segment: np.ndarray
    kind: np.ndarray
    prev_bin: np.ndarray
    bin: np.ndarray
    windows: np.ndarray


def clamp(rate: float, floor: float) -> float:
    return round(min(1.0 - floor, max(floor, float(rate))), ROUND)


def evidence_bin(evidence: np.ndarray, z_max: float) -> np.ndarray:
    """The bin of each evidence value (``Histograms``): ceil(ev x GRID) - 1 within [-1, top];
    ``evidence > k / GRID`` exactly when its bin is >= k (multiplying by 64 is exact)."""
    top = math.ceil(z_max * GRID)
    return np.clip(np.ceil(np.asarray(evidence, dtype=np.float64) * GRID) - 1, -1, top).astype(np.int64)


# ----------------------------------------------------------------- 1. kind baselines

@dataclass
class KindBaseline:
    rate: float  # flat
    by_season: list[float] | None  # None when flat
    requests: int  # in-sample requests (events) behind it
    fallback_hours: list[int] = field(default_factory=list)


def kind_baselines(pool: Pool, season: str, steps: int, params: Params) -> dict[str, KindBaseline]:
    """Per kind, its in-sample pooled error rate, flat and by hour (module doc, step 1).
    Window sums count each event in ``steps`` windows: divided by it, they are events."""
    out: dict[str, KindBaseline] = {}
    size = SEASONS[season]
    for kind in KINDS:
        m = pool.select("in", kind)
        n = pool.requests[m].astype(np.float64) * pool.windows[m]
        e = pool.errors[m].astype(np.float64) * pool.windows[m]
        total_n, total_e = n.sum() / steps, e.sum() / steps
        if total_n > 0:
            flat = clamp(total_e / total_n, params.rate_floor)
        else:  # no window of the kind: its baseline is the site's
            flat = out["global"].rate if "global" in out else clamp(0.0, params.rate_floor)
        by_season, fallback = None, []
        if size > 1:
            hours_n = np.bincount(pool.season[m], weights=n, minlength=size)[:size] / steps
            hours_e = np.bincount(pool.season[m], weights=e, minlength=size)[:size] / steps
            by_season = []
            for h in range(size):
                if hours_n[h] < params.season_min_requests:
                    fallback.append(h)
                    by_season.append(flat)
                else:
                    by_season.append(clamp((hours_e[h] + params.season_prior * flat)
                                           / (hours_n[h] + params.season_prior), params.rate_floor))
        out[kind] = KindBaseline(rate=flat, by_season=by_season, requests=int(total_n),
                                 fallback_hours=fallback)
    return out


def baseline_of(base: KindBaseline, season_idx: np.ndarray) -> np.ndarray:
    if base.by_season is None:
        return np.full(len(season_idx), base.rate)
    return np.asarray(base.by_season, dtype=np.float64)[season_idx]


# ----------------------------------------------------------------- 2. key baselines

@dataclass
class KeyBaselines:
    baselines: dict[str, dict[str, float]]  # kind -> key -> baseline
    chronic: dict[str, dict[str, tuple[float, float]]]  # kind -> key -> (errors per window, dispersion)
    beyond_max: dict[str, int]  # qualifying keys left to their kind's baseline (max_keys)
    pinned: dict[str, list[str]]


def key_baselines(stats: KeyStats, kinds: Mapping[str, KindBaseline], params: Params) -> KeyBaselines:
    """Module doc, step 2. ``stats`` holds the qualifying keys (and pinned ones)."""
    baselines: dict[str, dict[str, float]] = {"ip": {}, "url": {}}
    chronic: dict[str, dict[str, tuple[float, float]]] = {"ip": {}, "url": {}}
    beyond: dict[str, int] = {"ip": 0, "url": 0}
    for kind in ("ip", "url"):
        pins = dict(params.pins.get(kind, {}))
        m = np.flatnonzero(stats.kind == kind)
        order = m[np.lexsort((stats.key[m].astype(str), -stats.requests[m]))]  # most requests first
        chosen = [i for i in order if stats.key[i] not in pins][:params.max_keys]
        beyond[kind] = max(0, len([i for i in order if stats.key[i] not in pins]) - params.max_keys)
        p_kind = kinds[kind].rate
        bar = max(params.chronic_ratio * p_kind, p_kind + params.chronic_delta)
        for i in chosen:
            p = clamp((stats.errors[i] + params.key_prior * p_kind) / (stats.requests[i] + params.key_prior),
                      params.rate_floor)
            baselines[kind][str(stats.key[i])] = p
        for key, rate in pins.items():
            baselines[kind][key] = round(float(rate), ROUND)
        at = {str(stats.key[i]): i for i in m}
        for key, p in baselines[kind].items():
            i = at.get(key)
            if p < bar or i is None or stats.windows[i] <= 0 or stats.sum_errors[i] <= 0:
                continue
            lam = stats.sum_errors[i] / stats.windows[i]
            var = stats.sum_errors2[i] / stats.windows[i] - lam * lam
            chronic[kind][key] = (round(float(lam), ROUND), round(max(1.0, float(var) / lam), ROUND))
    return KeyBaselines(baselines, chronic, beyond, {k: sorted(v) for k, v in params.pins.items()})


# ----------------------------------------------------------------- 3. over-dispersion

def fit_dispersion(pool: Pool, kind: str, base: KindBaseline) -> tuple[float, str]:
    """Module doc, step 3: (rho, how it was found)."""
    m = pool.select("in", kind)
    n = pool.requests[m].astype(np.float64)
    p = baseline_of(base, pool.season[m])
    useful = n * p >= 1.0
    n, e, p, w = n[useful], pool.errors[m][useful].astype(np.float64), p[useful], pool.windows[m][useful]
    total = int(w.sum())
    if total < DISPERSION_MIN_WINDOWS:
        return 0.0, f"binomial: {total} windows expect an error (fewer than {DISPERSION_MIN_WINDOWS})"

    def tail(rho: float) -> float:
        return float(w[judge.rate_evidence(n, e, p, rho) > Z_REF].sum()) / total

    if tail(0.0) <= TAIL_REF:
        return 0.0, f"binomial: {tail(0.0):.2%} of {total} windows beyond the 5% level"
    lo, hi = 0.0, 0.5
    if tail(hi) > TAIL_REF:
        return hi, f"capped: {tail(hi):.2%} of {total} windows beyond the 5% level at rho {hi}"
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) > TAIL_REF else (lo, mid)
    return round(hi, ROUND), f"5% of {total} windows beyond the 5% level"


# ----------------------------------------------------------------- 4.-5. the evidence threshold

@dataclass
class Replay:
    """Per (segment, kind), as functions of the grid index k (z = k / GRID): judged windows,
    breaching windows and incidents (breaching after a window that did not breach)."""

    evaluations: dict[tuple[str, str], int]
    alerts: dict[tuple[str, str], np.ndarray]
    incidents: dict[tuple[str, str], np.ndarray]
    top: int  # the last grid index (evidence above z_max)

    @classmethod
    def of(cls, hist: Histograms, evaluations: Mapping[tuple[str, str], int], z_max: float) -> Replay:
        top = math.ceil(z_max * GRID)
        alerts, incidents = {}, {}
        for seg in SEGMENTS:
            for kind in KINDS:
                m = (hist.segment == seg) & (hist.kind == kind)
                w = hist.windows[m].astype(np.int64)
                b, pb = np.minimum(hist.bin[m], top), np.minimum(hist.prev_bin[m], top)
                # alerts(k) = windows with bin >= k; incidents(k) = those with prev bin < k <= bin
                per_bin = np.bincount(b + 1, weights=w, minlength=top + 2).astype(np.int64)
                alerts[(seg, kind)] = np.cumsum(per_bin[::-1])[::-1][1:]  # index k -> bins >= k
                starts = np.zeros(top + 2, dtype=np.int64)
                rising = pb < b
                np.add.at(starts, pb[rising] + 1, w[rising])
                np.add.at(starts, b[rising] + 1, -w[rising])
                incidents[(seg, kind)] = np.cumsum(starts)[:top + 1]  # index k: pb < k <= b
        return cls({key: int(evaluations.get(key, 0)) for key in alerts}, alerts, incidents, top)

    def at(self, seg: str, k: int) -> dict[str, Any]:
        by_kind = {}
        for kind in KINDS:
            ev = self.evaluations[(seg, kind)]
            al = int(self.alerts[(seg, kind)][k])
            by_kind[kind] = {"alerts": al, "evaluations": ev, "incidents": int(self.incidents[(seg, kind)][k]),
                             "alert_rate": round(al / ev, 8) if ev else None}
        ev = sum(v["evaluations"] for v in by_kind.values())
        al = sum(v["alerts"] for v in by_kind.values())
        return {"alerts": al, "evaluations": ev, "alert_rate": al / ev if ev else None,
                "incidents": sum(v["incidents"] for v in by_kind.values()), "by_kind": by_kind}

    def incidents_total(self, seg: str) -> np.ndarray:
        return sum(self.incidents[(seg, kind)] for kind in KINDS)


def choose_z(replay: Replay, days_in: float, params: Params) -> tuple[int, list[tuple[float, int]]]:
    """Module doc, step 4: the grid index of z, and a short trace (z, in-sample incidents)."""
    allowed = params.budget * days_in
    incidents = replay.incidents_total("in")
    lo = math.ceil(params.z_min * GRID)
    # the smallest k from which every larger k is within the budget
    over = np.flatnonzero(incidents[lo:replay.top + 1] > allowed)
    k = lo if len(over) == 0 else lo + int(over[-1]) + 1
    trace = [(g / GRID, int(incidents[g])) for g in sorted({lo, k - 1, k, min(replay.top, 2 * k), replay.top})
             if lo <= g <= replay.top]
    if k > replay.top:
        raise CalibrationError(
            f"budget unreachable: the in-sample history has {int(incidents[replay.top])} incidents in "
            f"{days_in:.2f} days even at evidence {replay.top / GRID:g} ({int(incidents[lo])} at {lo / GRID:g}); "
            f"a budget of {params.budget:g} a day allows {allowed:.1f}: real incidents fill the history? "
            "calibrate on a quieter range, or raise --budget or --z-max")
    return k, trace


def poisson_quantile(mean: float, confidence: float) -> int:
    """The smallest q with P(Poisson(mean) <= q) >= confidence."""
    q, term = 0, math.exp(-mean)
    total = term
    while total < confidence and q < 100_000:
        q += 1
        term *= mean / q
        total += term
    return q


def validate_out_of_sample(figures: Mapping[str, Any], days_out: float, params: Params) -> int:
    """Module doc, step 5: the incidents the held-out tail may have; raises when exceeded."""
    allowed = poisson_quantile(params.budget * days_out, params.oos_confidence)
    seen = figures["incidents"]
    if seen > allowed:
        kinds = ", ".join(f"{k} {v['incidents']}" for k, v in figures["by_kind"].items() if v["incidents"])
        raise CalibrationError(
            f"out of sample: {seen} incidents in {days_out:.2f} days ({kinds}), where a budget of "
            f"{params.budget:g} a day allows at most {allowed} by chance ({params.oos_confidence:.0%}): the "
            "history's held-out tail behaves differently from the rest; check it, or give more history")
    return allowed


# ----------------------------------------------------------------- the document

def build_document(*, params: Params, version: int, created_at: datetime, min_requests: Mapping[str, int],
                   kinds: Mapping[str, KindBaseline], keys: KeyBaselines, season: str,
                   dispersion: Mapping[str, float], z: float, calibration: Mapping[str, Any],
                   validation: Mapping[str, Any]) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "z": z, "min_errors": {k: int(params.min_errors[k]) for k in KINDS}, "season": season,
        "dispersion": {k: float(dispersion[k]) for k in KINDS},
        "chronic": {kind: {key: {"errors_per_window": lam, "dispersion": psi}
                           for key, (lam, psi) in sorted(keys.chronic[kind].items())} for kind in ("ip", "url")},
    }
    if season != "flat":
        evidence["by_season"] = {k: list(kinds[k].by_season) for k in KINDS}
    return {
        "schema_version": 2,
        "version": int(version),
        "created_at": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "window": {"length_s": params.length_s, "slide_s": params.slide_s, "watermark_s": params.watermark_s},
        "error_status_min": params.error_status_min,
        "min_requests": {k: int(min_requests[k]) for k in KINDS},
        "global": {"error_rate": kinds["global"].rate},
        "ip": {"default": kinds["ip"].rate, "overrides": dict(sorted(keys.baselines["ip"].items()))},
        "url": {"default": kinds["url"].rate, "overrides": dict(sorted(keys.baselines["url"].items()))},
        "evidence": evidence,
        "incidents": {"resolve_after": params.resolve_after},
        "calibration": dict(calibration),
        "validation": dict(validation),
    }


def min_requests_of(params: Params) -> dict[str, int]:
    """Given, else the kind's minimum of errors: a window with fewer requests cannot breach."""
    return {k: int(params.min_requests.get(k) or params.min_errors[k]) for k in KINDS}
