"""chaussettes.calibration's pure part (no Spark): baselines by kind, hour and key,
over-dispersion, the replay's counts from evidence bins, the budget, parameter checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from chaussettes import judge
from chaussettes.calibration import fit
from chaussettes.calibration.params import CalibrationError, Params, check_params, season_for


def _pool(rows):
    """rows: (segment, kind, season, requests, errors, windows)."""
    cols = list(zip(*rows))
    return fit.Pool(segment=np.array(cols[0], dtype=object), kind=np.array(cols[1], dtype=object),
                    season=np.array(cols[2], dtype=np.int64), requests=np.array(cols[3], dtype=np.int64),
                    errors=np.array(cols[4], dtype=np.int64), windows=np.array(cols[5], dtype=np.int64))


def test_kind_baselines_flat_by_hour_with_fallback_and_floor():
    params = Params(season_prior=0.0, season_min_requests=100)
    rows = [("in", "global", 0, 600, 60, 10), ("in", "global", 1, 600, 6, 10), ("out", "global", 0, 600, 600, 50),
            ("in", "ip", 0, 6, 0, 100), ("in", "ip", 5, 6, 3, 2),  # hour 5: 2 requests, falls back
            ("in", "url", 0, 60, 0, 1000), ("in", "url", 1, 60, 0, 1000)]
    base = fit.kind_baselines(_pool(rows), "hour_of_day", 6, params)
    g = base["global"]
    assert g.rate == pytest.approx(66 / 1200) and g.requests == 2000  # window sums / 6 steps = events
    assert g.by_season[0] == pytest.approx(0.1) and g.by_season[1] == pytest.approx(0.01)
    assert g.fallback_hours == list(range(2, 24))  # no request: the flat baseline, said in the report
    assert base["ip"].by_season[5] == base["ip"].rate and 5 in base["ip"].fallback_hours
    # no error at all: the floor, not 0 (the rule's variance must not vanish)
    assert base["url"].rate == params.rate_floor and set(base["url"].by_season) == {params.rate_floor}
    flat = fit.kind_baselines(_pool(rows), "flat", 6, params)
    assert flat["global"].by_season is None and flat["global"].rate == g.rate
    # a prior pulls a thin hour toward the flat rate
    shrunk = fit.kind_baselines(_pool(rows), "hour_of_day", 6, Params(season_prior=1000.0, season_min_requests=1))
    assert g.by_season[1] < shrunk["global"].by_season[1] < g.rate


def test_season_follows_the_history_length():
    assert season_for(Params(), 6.9) == "flat"
    assert season_for(Params(), 7) == "hour_of_day"
    assert season_for(Params(), 28) == "hour_of_week"
    assert season_for(Params(season="flat"), 60) == "flat"


def _stats(rows):
    """rows: (kind, key, requests, errors, windows, sum_errors, sum_errors2)."""
    cols = list(zip(*rows))
    return fit.KeyStats(kind=np.array(cols[0], dtype=object), key=np.array(cols[1], dtype=object),
                        requests=np.array(cols[2]), errors=np.array(cols[3]), hours=np.full(len(rows), 24),
                        windows=np.array(cols[4]), sum_errors=np.array(cols[5], dtype=float),
                        sum_errors2=np.array(cols[6], dtype=float))


def test_key_baselines_shrink_list_chronic_keys_and_respect_pins_and_the_cap():
    kinds = {k: fit.KindBaseline(rate=0.02, by_season=None, requests=10**6) for k in ("global", "ip", "url")}
    stats = _stats([
        ("url", "/login", 10_000, 4_000, 1000, 3000.0, 3000.0 * 3 + 4000.0),  # 40% failing: chronic
        ("url", "/", 50_000, 500, 1000, 50.0, 60.0),  # 1%: its own, lower baseline
        ("ip", "66.249.1.1", 3000, 180, 800, 150.0, 300.0),  # a crawler: 6%, below 2% + 5%: not chronic
        ("ip", "10.9.9.9", 600, 600, 300, 600.0, 1500.0),  # always failing: chronic, never exempt
    ])
    params = Params(key_prior=200.0)
    keys = fit.key_baselines(stats, kinds, params)
    assert keys.baselines["url"]["/login"] == pytest.approx((4000 + 200 * 0.02) / 10_200)
    assert keys.baselines["url"]["/"] == pytest.approx((500 + 4) / 50_200)
    assert keys.baselines["ip"]["66.249.1.1"] == pytest.approx(184 / 3200)
    assert keys.baselines["ip"]["10.9.9.9"] < 1 - params.rate_floor + 1e-12  # never a pass
    assert set(keys.chronic["url"]) == {"/login"} and set(keys.chronic["ip"]) == {"10.9.9.9"}
    lam, psi = keys.chronic["url"]["/login"]
    assert lam == 3.0 and psi == pytest.approx(max(1.0, (13_000 / 1000 - 9) / 3))
    assert keys.chronic["ip"]["10.9.9.9"] == (2.0, 1.0)  # under-dispersed counts: psi floored at 1
    # pins are kept as given; the cap keeps the keys with the most requests
    pinned = fit.key_baselines(stats, kinds, Params(pins={"url": {"/login": 0.5}}, max_keys=1))
    assert pinned.baselines["url"] == {"/login": 0.5, "/": pytest.approx(504 / 50_200)}
    assert pinned.baselines["ip"] == {"66.249.1.1": pytest.approx(184 / 3200)} and pinned.beyond_max["ip"] == 1


def test_dispersion_fit_finds_binomial_and_over_dispersed_traffic():
    rng = np.random.default_rng(7)
    n = rng.integers(50, 400, 20_000)
    base = fit.KindBaseline(rate=0.05, by_season=None, requests=int(n.sum()))

    def pool_of(errors):
        return _pool([("in", "url", 0, int(a), int(b), 1) for a, b in zip(n, errors)])

    rho, note = fit.fit_dispersion(pool_of(rng.binomial(n, 0.05)), "url", base)
    assert rho < 0.002, note
    # beta-binomial with intra-window correlation 0.02: found within a factor of 2
    a = 0.05 * (1 / 0.02 - 1)
    p = rng.beta(a, a * 19, len(n))
    rho, note = fit.fit_dispersion(pool_of(rng.binomial(n, p)), "url", base)
    assert 0.01 < rho < 0.04, note
    # the rule then sees about 5% of the windows beyond the 5% level
    ev = judge.rate_evidence(n.astype(float), rng.binomial(n, p).astype(float), np.full(len(n), 0.05), rho)
    assert 0.03 < (ev > fit.Z_REF).mean() < 0.07
    # too few windows expecting an error: binomial, and the report says why
    rho, note = fit.fit_dispersion(_pool([("in", "ip", 0, 3, 1, 50)]), "ip", base)
    assert rho == 0.0 and "fewer than" in note


def _histograms(rows):
    """rows: (segment, kind, prev_bin, bin, windows)."""
    cols = list(zip(*rows))
    return fit.Histograms(segment=np.array(cols[0], dtype=object), kind=np.array(cols[1], dtype=object),
                          prev_bin=np.array(cols[2]), bin=np.array(cols[3]), windows=np.array(cols[4]))


def test_evidence_bins_are_exact_at_the_grid():
    z = np.array([0.0, 1 / 64, 1 / 64 + 1e-12, 3.0, 3.0 - 1e-12, 100.0])
    assert fit.evidence_bin(z, 40).tolist() == [-1, 0, 1, 191, 191, 2560]
    # evidence > k / 64 exactly when the bin is >= k
    rng = np.random.default_rng(2)
    ev = np.concatenate([rng.uniform(0, 10, 2000), np.arange(0, 640) / 64])
    bins = fit.evidence_bin(ev, 40)
    for k in (0, 1, 64, 191, 192, 500):
        assert ((ev > k / 64) == (bins >= k)).all()


def test_replay_counts_equal_a_brute_force_replay():
    # random windows in time order per key: the replay's alerts and incidents at any z are
    # what judging every window and counting the breaching ones after a quiet one gives
    rng = np.random.default_rng(9)
    windows = []
    for key in range(60):
        ev = np.where(rng.random(40) < 0.3, rng.uniform(0, 12, 40), 0.0)
        judged = rng.random(40) < 0.9
        ev = np.where(judged, ev, 0.0)
        kind = ("global", "ip", "url")[key % 3]
        seg = "in" if key < 45 else "out"
        prev = np.concatenate([[0.0], ev[:-1]])
        for j in range(40):
            windows.append((seg, kind, judged[j], prev[j], ev[j]))
    cols = list(zip(*windows))
    hist = _histograms([(s, k, int(pb), int(b), 1) for s, k, pb, b in zip(
        cols[0], cols[1], fit.evidence_bin(cols[3], 40), fit.evidence_bin(cols[4], 40))])
    judged = {(s, k): sum(1 for w in windows if w[0] == s and w[1] == k and w[2]) for s in ("in", "out")
              for k in ("global", "ip", "url")}
    replay = fit.Replay.of(hist, judged, 40)
    for k in (0, 64, 200, 320, 700, 2560):
        z = k / 64
        for seg in ("in", "out"):
            mine = [w for w in windows if w[0] == seg]
            want_alerts = sum(w[4] > z for w in mine)
            want_incidents = sum(w[4] > z and not w[3] > z for w in mine)
            got = replay.at(seg, k)
            assert (got["alerts"], got["incidents"]) == (want_alerts, want_incidents), (seg, z)
            assert got["evaluations"] == sum(bool(w[2]) for w in mine)


def test_the_budget_picks_the_smallest_z_for_good():
    # in-sample incidents by z: 30 up to 4, then 3 until 5, then 1 (a bump near 6), then 0
    def hist_at(z_lo, z_hi, count):
        return [("in", "ip", fit.evidence_bin(z_lo, 40), fit.evidence_bin(z_hi, 40), count)]

    rows = hist_at(0.0, 4.0, 27) + hist_at(0.0, 5.0, 2) + hist_at(0.0, 7.0, 1) + hist_at(5.9, 6.1, 1)
    replay = fit.Replay.of(_histograms(rows), {}, 40)
    k, trace = fit.choose_z(replay, 1.0, Params(budget=3, z_min=3))
    assert k / 64 == 4.0 and (4.0, 3) in trace
    k, _ = fit.choose_z(replay, 1.0, Params(budget=1, z_min=3))  # 1 at 5.x, 2 near 6: from 6.1 on
    assert k == math.ceil(6.1 * 64) and replay.incidents_total("in")[k] <= 1
    k, _ = fit.choose_z(replay, 10.0, Params(budget=3, z_min=3))  # 30 allowed over 10 days: z_min
    assert k == 3 * 64
    # the default least evidence, 4.75, whatever the budget allows
    assert fit.choose_z(replay, 10.0, Params(budget=3))[0] / 64 == 4.75
    with pytest.raises(CalibrationError, match="budget unreachable: .* 2 incidents in 1.00 days even at evidence 6"):
        fit.choose_z(fit.Replay.of(_histograms(rows), {}, 6), 1.0, Params(budget=0.5, z_min=3, z_max=6))


def test_out_of_sample_budget_allows_chance_not_more():
    assert fit.poisson_quantile(0.0, 0.99) == 0
    assert fit.poisson_quantile(3.0, 0.99) == 8  # P(Poisson(3) <= 8) = 0.996 > 0.99 > P(<= 7)
    figures = {"incidents": 9, "by_kind": {"ip": {"incidents": 7}, "url": {"incidents": 2}, "global": {"incidents": 0}}}
    with pytest.raises(CalibrationError) as err:
        fit.validate_out_of_sample(figures, 0.6, Params(budget=5))
    assert "out of sample: 9 incidents in 0.60 days (ip 7, url 2)" in str(err.value)
    assert "at most 8 by chance" in str(err.value)
    assert fit.validate_out_of_sample({**figures, "incidents": 8}, 0.6, Params(budget=5)) == 8


@pytest.mark.parametrize("change, fragment", [
    ({"budget": 0}, "budget must be > 0"),
    ({"budget": float("nan")}, "budget must be > 0"),
    ({"holdout": 1}, "holdout"),
    ({"oos_confidence": 1.0}, "oos-confidence"),
    ({"length_s": 60, "slide_s": 7}, "multiple"),
    ({"min_requests": {"ip": 0}}, "min-requests for ip"),
    ({"min_errors": {"global": 3, "ip": 0, "url": 3}}, "min-errors for ip"),
    ({"season": "monthly"}, "season must be one of"),
    ({"z_min": 5, "z_max": 4}, "z-min < z-max"),
    ({"pins": {"url": {"/x": 1.0}}}, "strictly between 0 and 1"),
    ({"key_min_coverage": 2}, "key-min-coverage"),
    ({"error_status_min": 99}, "error-status-min"),
])
def test_bad_parameters_are_usage_errors(change, fragment):
    with pytest.raises(CalibrationError) as err:
        check_params(Params(**change))
    assert err.value.usage and fragment in str(err.value)
