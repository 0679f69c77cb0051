"""chaussettes.calibration: the pure parts (no Spark): percentiles, min_requests,
overrides, the percentile adjustment loop, parameter checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from chaussettes import calibration as cal


def test_percentile_is_linear_interpolation_like_numpy():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 10, 101, 1000):
        values = rng.random(n)
        for p in (0.1, 1, 25, 50, 90, 99, 99.9, 100):
            assert cal.percentile(values, p) == pytest.approx(np.percentile(values, p), abs=1e-15)
    assert cal.percentile([0.0, 1.0], 50) == 0.5
    assert cal.percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        cal.percentile([], 50)


def test_summary_and_judged_sample_of_collected_windows():
    # compressed windows as collect_windows gives them: a row stands for `windows` windows
    frame = pd.DataFrame([
        ("rows", "global", "*", 1000, 0, 0),
        ("in", "global", "*", 100, 5, 3), ("in", "global", "*", 80, 8, 1), ("out", "global", "*", 90, 9, 2),
        ("in", "ip", "a", 4, 1, 10), ("in", "ip", "a", 10, 5, 2), ("in", "ip", "b", 7, 0, 5),
        ("out", "ip", "b", 9, 9, 4), ("in", "url", "/x", 30, 3, 6),
    ], columns=["segment", "kind", "key", "requests", "errors", "windows"])
    stats = cal.rate_summary(frame)
    assert stats["rows"] == 1000
    assert stats["windows"] == {"in": {"global": 4, "ip": 17, "url": 6}, "out": {"global": 2, "ip": 4}}
    assert (stats["requests"], stats["errors"]) == (380, 23) and stats["overall_rate"] == 23 / 380
    # the medians of the expanded in-sample requests: [80, 100 x3], [4 x10, 7 x5, 10 x2], [30 x6]
    assert stats["median_requests"] == {"global": 100.0, "ip": 4.0, "url": 30.0}
    assert "rows" not in cal.rate_summary(frame[frame["segment"] != "rows"])
    judged = cal.judged_sample(frame, {"global": 90, "ip": 5, "url": 30})
    assert {kind: sorted(zip(j.names[j.codes], j.rates, j.counts)) for kind, j in judged.items()} == {
        "global": [("*", 0.05, 3)], "ip": [("a", 0.5, 2), ("b", 0.0, 5)], "url": [("/x", 0.1, 6)]}


def test_weighted_rates_equal_expanded():
    rng = np.random.default_rng(4)
    for _ in range(50):
        values = rng.integers(0, 30, rng.integers(1, 15)) / 29  # equal values among them too
        counts = rng.integers(1, 9, len(values))
        expanded = np.sort(np.repeat(values, counts))
        rates = cal.Rates.of(values, counts)
        assert len(rates) == len(expanded)
        for p in (0.5, 1, 50, 97.3, 99, 100):
            assert rates.percentile(p) == cal.percentile_sorted(expanded, p)
        for t in (-1.0, 0.0, values[0], 0.5, 1.0):
            assert rates.above(t) == int((expanded > t).sum())
    with pytest.raises(ValueError):
        cal.Rates.of([]).percentile(50)


def test_grouped_percentile_equals_each_group_alone():
    rng = np.random.default_rng(6)
    codes = np.concatenate([np.arange(7), rng.integers(0, 7, 300)])
    rates, counts = rng.random(len(codes)).round(2), rng.integers(1, 5, len(codes))
    for p in (50, 99):
        sizes, at = cal.grouped_percentile(codes, rates, counts, 7, p)
        for g in range(7):
            mine = codes == g
            assert sizes[g] == counts[mine].sum()
            assert at[g] == cal.percentile(np.repeat(rates[mine], counts[mine]), p)


def test_derived_min_requests():
    # 5% errors, +/-0.1 at 99%: 2.326^2 * .05 * .95 / .01 = 25.7 -> 26
    assert cal.derived_min_requests(0.05, 0.1, 5, 1000) == 26
    assert cal.derived_min_requests(0.05, 0.1, 5, 12) == 12  # at most the median window size
    assert cal.derived_min_requests(0.05, 0.1, 5, 2) == 5  # never below the floor
    assert cal.derived_min_requests(0.0, 0.1, 5, 1000) == 5
    got = cal.derive_min_requests(
        {"global": np.array([500.0] * 9), "ip": np.array([3.0, 40.0, 40.0]), "url": np.array([])},
        0.05, cal.Params(min_requests={"global": None, "ip": None, "url": 7}))
    assert got == {"global": 26, "ip": 26, "url": 7}


def _frame(rows):
    return pd.DataFrame(rows, columns=["kind", "key", "error_rate"])


def _judged(rows):
    return cal.judged_by_kind(_frame(rows))


def test_select_overrides_keeps_persistent_outliers_not_incidents():
    rng = np.random.default_rng(3)
    rows = []
    n_windows = 100
    for w in range(n_windows):
        for u in range(10):
            rows.append(("url", f"/p{u}", rng.uniform(0, 0.1)))
        rows.append(("url", "/login", rng.uniform(0.35, 0.5)))  # always high: its normal
        if w < 10:
            rows.append(("url", "/broken", 0.9))  # an outage: 10% of the history
        rows.append(("ip", "10.0.0.1", rng.uniform(0, 0.1)))
    judged = _judged(rows)
    params = cal.Params(override_min_windows=5)
    chosen = cal.select_overrides(judged, n_windows, params)
    assert chosen == {"ip": [], "url": ["/login"]}
    # coverage: with a 5% bar the outage qualifies too (it is then "normal")
    assert "/broken" in cal.select_overrides(judged, n_windows, cal.Params(
        override_min_windows=5, override_min_coverage=0.05))["url"]
    # pinned keys are not learnt again
    assert cal.select_overrides(judged, n_windows, cal.Params(
        override_min_windows=5, pins={"url": {"/login": 0.9}}))["url"] == []
    assert cal.select_overrides(judged, n_windows, cal.Params(max_overrides=0)) == {"ip": [], "url": []}


def _sample(params, pool_sizes=(200, 2000, 1000), seed=5):
    rng = np.random.default_rng(seed)
    rows = [("global", "*", r) for r in rng.beta(2, 30, pool_sizes[0])]
    rows += [("ip", f"10.0.0.{i % 50}", r) for i, r in enumerate(rng.beta(1, 20, pool_sizes[1]))]
    rows += [("url", f"/u{i % 20}", r) for i, r in enumerate(rng.beta(1, 25, pool_sizes[2]))]
    rows += [("url", "/login", r) for r in rng.uniform(0.3, 0.5, 100)]
    frame = _frame(rows)
    judged = cal.judged_by_kind(frame)
    overrides = cal.select_overrides(judged, 100, params)
    return cal.build_sample(judged, overrides, params.pins, 0.05), frame


def test_fit_counts_like_a_brute_force_judge():
    params = cal.Params(override_min_windows=50)
    sample, frame = _sample(params)
    fit = cal.fit_thresholds(sample, 97.0, params)
    assert "/login" in fit.overrides["url"]
    alerts = 0
    for r in frame.itertuples():
        if r.kind == "global":
            t = fit.global_rate
        else:
            t = fit.overrides[r.kind].get(r.key, fit.defaults[r.kind])
        alerts += r.error_rate > t
    assert (fit.alerts, fit.evaluations) == (alerts, len(frame))
    # /login's windows did not raise the url default
    assert fit.defaults["url"] < 0.3


def test_compressed_windows_fit_like_every_window():
    params = cal.Params(override_min_windows=50)
    _, frame = _sample(params)
    frame["error_rate"] = frame["error_rate"].round(2)  # so that windows repeat
    compressed = frame.groupby(["kind", "key", "error_rate"]).size().reset_index(name="windows")
    assert len(compressed) < len(frame) / 3
    fits = []
    for rows in (frame, compressed):
        judged = cal.judged_by_kind(rows)
        overrides = cal.select_overrides(judged, 100, params)
        fit = cal.fit_thresholds(cal.build_sample(judged, overrides, params.pins, 0.05), 97.0, params)
        fits.append((overrides, fit.threshold_values(), fit.alerts, fit.evaluations))
    assert fits[0] == fits[1]
    assert fits[0][0]["url"] == ["/login"] and fits[0][3] == len(frame)


def test_adjustment_reaches_the_target_and_monotone():
    params = cal.Params(percentile=90.0, percentile_min=80, percentile_max=99.9, target_alert_rate=0.01,
                        tolerance=0.001, override_min_windows=50)
    sample, _ = _sample(params)
    fit, trace = cal.adjust_percentile(sample, params)
    assert abs(fit.alert_rate - 0.01) <= 0.001
    assert fit.percentile > 90 and len(trace) > 2
    rates = [cal.fit_thresholds(sample, p, params).alert_rate for p in (85, 90, 95, 99, 99.9)]
    assert rates == sorted(rates, reverse=True)


def test_adjustment_off_or_unreachable_fails_with_figures():
    params = cal.Params(percentile=90.0, adjust=False, override_min_windows=50)
    sample, _ = _sample(params)
    with pytest.raises(cal.CalibrationError, match=r"not reached: .*at percentile 90"):
        cal.adjust_percentile(sample, params)
    # the bounds cannot reach 1%: 90..91 gives ~9-10%
    params = cal.Params(percentile=90.0, percentile_min=89, percentile_max=91, override_min_windows=50)
    with pytest.raises(cal.CalibrationError) as err:
        cal.adjust_percentile(sample, params)
    msg = str(err.value)
    assert "unreachable" in msg and "percentile 91" in msg and "percentile-max" in msg and "\n" not in msg
    # all-zero rates: any positive threshold gives 0 alerts, target 1% +/- 0.5% is out of reach
    zero = cal.Sample(pool={kind: cal.Rates.of(np.zeros(100)) for kind in cal.KINDS},
                      keyed={"ip": {}, "url": {}}, overall_rate=0.0)
    with pytest.raises(cal.CalibrationError, match="unreachable"):
        cal.adjust_percentile(zero, cal.Params())


def test_global_fraction_method():
    params = cal.Params(global_method="fraction", global_fraction=0.5)
    sample, _ = _sample(params)
    fit = cal.fit_thresholds(sample, 99, params)
    assert fit.global_rate == pytest.approx(0.075)


@pytest.mark.parametrize("change, fragment", [
    ({"percentile": 0}, "percentile must be in (0, 100]"),
    ({"percentile": 101}, "percentile must be in (0, 100]"),
    ({"percentile": float("nan")}, "percentile"),
    ({"percentile_min": 99.5}, "outside [percentile-min 99.5"),
    ({"percentile_min": 99.95}, "above percentile-max"),
    ({"tolerance": -0.01}, "tolerance must be >= 0"),
    ({"oos_tolerance": -1}, "oos-tolerance"),
    ({"target_alert_rate": 0}, "target-alert-rate"),
    ({"holdout": 1}, "holdout"),
    ({"length_s": 60, "slide_s": 7}, "multiple"),
    ({"global_method": "magic"}, "global-method"),
    ({"min_requests": {"ip": 0}}, "min-requests for ip"),
    ({"pins": {"url": {"/x": 2}}}, "rate must be in [0, 1]"),
    ({"error_status_min": 99}, "error-status-min"),
])
def test_bad_parameters_are_usage_errors(change, fragment):
    with pytest.raises(cal.CalibrationError) as err:
        cal.check_params(cal.Params(**change))
    assert err.value.usage and fragment in str(err.value)
