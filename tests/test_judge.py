"""chaussettes.judge: the Spark judge and the pure-Python judge_one agree exactly."""

from __future__ import annotations

import copy
import random

import pytest
from chaussettes import judge as J
from chaussettes import thresholds as th


def make_thresholds(**changes):
    doc = copy.deepcopy(th.load_default().doc)
    doc.update(
        version=5,
        min_requests={"global": 10, "ip": 4, "url": 3},
        ip={"default": 0.25, "overrides": {"10.0.0.7": 0.75, "10.0.0.8": 0.0}},
        url={"default": 0.1, "overrides": {"/login": 0.5}},
    )
    doc["global"] = {"error_rate": 0.2}
    doc.update(changes)
    return th.Thresholds.from_doc(doc)


def rates_df(spark, rows):
    return spark.createDataFrame(
        [(k, key, n, e, e / n) for k, key, n, e in rows],
        "kind string, key string, requests long, errors long, error_rate double",
    )


def test_judge_one_rules():
    t = make_thresholds()
    j = J.judge_one("ip", "10.0.0.1", 4, 2, t)  # 0.5 > 0.25, 2x -> critical
    assert (j.threshold, j.judged, j.breach, j.severity) == (0.25, True, True, "critical")
    assert J.judge_one("ip", "10.0.0.1", 3, 3, t).judged is False  # below min_requests
    assert J.judge_one("ip", "10.0.0.1", 3, 3, t).breach is False
    assert J.judge_one("ip", "10.0.0.7", 4, 2, t).breach is False  # override 0.75
    # exactly representable figures (0.25 default): equal is no breach, 1.5x is major, 2x critical
    assert J.judge_one("ip", "10.0.0.1", 8, 2, t).breach is False
    assert J.judge_one("ip", "10.0.0.1", 100, 26, t).severity == "warning"
    assert J.judge_one("ip", "10.0.0.1", 8, 3, t).severity == "major"
    assert J.judge_one("ip", "10.0.0.1", 100, 49, t).severity == "major"
    assert J.judge_one("ip", "10.0.0.1", 8, 4, t).severity == "critical"
    assert J.judge_one("ip", "10.0.0.8", 4, 1, t).severity == "critical"  # threshold 0
    assert J.judge_one("ip", "10.0.0.8", 4, 0, t).breach is False
    assert J.judge_one("global", "*", 10, 3, t).threshold == 0.2
    with pytest.raises(ValueError):
        J.judge_one("status", "500", 1, 1, t)


def test_spark_and_python_agree_on_many_rows(spark):
    t = make_thresholds()
    rng = random.Random(11)
    keys = {"global": ["*"], "ip": ["10.0.0.1", "10.0.0.7", "10.0.0.8", "10.9.9.9"],
            "url": ["/", "/login", "/api"]}
    rows = []
    for _ in range(3000):
        kind = rng.choice(list(keys))
        n = rng.randint(1, 40)
        rows.append((kind, rng.choice(keys[kind]), n, rng.randint(0, n)))
    # exact boundaries: rate == threshold, rate == 1.5x, 2x, requests == min_requests
    rows += [("url", "/", 10, 1), ("url", "/", 20, 3), ("url", "/", 10, 2), ("ip", "x", 4, 1),
             ("global", "*", 10, 2), ("global", "*", 10, 3), ("global", "*", 10, 4),
             ("url", "/login", 3, 2), ("ip", "10.0.0.7", 4, 3)]
    got = J.judge(rates_df(spark, rows), t).collect()
    assert len(got) == len(rows)
    breaches = 0
    for r in got:
        expect = J.judge_one(r.kind, r.key, r.requests, r.errors, t)
        assert (r.threshold, r.judged, r.breach, r.severity) == \
            (expect.threshold, expect.judged, expect.breach, expect.severity), r
        breaches += r.breach
    assert 0 < breaches < len(rows)


def test_judge_without_overrides_and_on_a_stream(spark, tmp_path):
    t = make_thresholds(ip={"default": 0.3, "overrides": {}}, url={"default": 0.3, "overrides": {}})
    rows = [("ip", "a", 10, 4), ("url", "/a", 10, 3), ("global", "*", 5, 5)]
    got = {(r.kind, r.key): (r.breach, r.severity) for r in J.judge(rates_df(spark, rows), t).collect()}
    assert got == {("ip", "a"): (True, "warning"), ("url", "/a"): (False, None),
                   ("global", "*"): (False, None)}
    src = tmp_path / "rates"
    rates_df(spark, rows).write.parquet(str(src))
    stream = spark.readStream.schema(rates_df(spark, rows).schema).parquet(str(src))
    q = (J.judge(stream, t).writeStream.format("memory").queryName("judgetest")
         .option("checkpointLocation", str(tmp_path / "ck")).trigger(availableNow=True).start())
    q.awaitTermination(120)
    assert spark.sql("select count(*) c from judgetest where breach").collect()[0].c == 1


def test_judge_needs_thresholds(spark):
    with pytest.raises(TypeError):
        J.judge(rates_df(spark, [("ip", "a", 1, 1)]), {"version": 0})


def test_numpy_form_agrees_with_judge_one():
    """``evaluate`` (numpy, one kind at a time) gives judge_one's verdicts bit for bit."""
    t = make_thresholds()
    rng = random.Random(5)
    keys = {"global": ["*"], "ip": ["10.0.0.1", "10.0.0.7", "10.0.0.8"], "url": ["/", "/login"]}
    for kind, names in keys.items():
        rows = [(rng.choice(names), n, rng.randint(0, n)) for n in (rng.randint(0, 60) for _ in range(2000))]
        rows += [(names[0], 10, 2), (names[0], 20, 5), (names[-1], 4, 1), (names[0], 0, 0)]
        v = J.evaluate(t, kind, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        for i, (key, n, e) in enumerate(rows):
            want = J.judge_one(kind, key, n, e, t)
            assert (float(v.threshold[i]), bool(v.judged[i]), bool(v.breach[i]), v.severity(i)) == \
                (want.threshold, want.judged, want.breach, want.severity), (kind, key, n, e)
        assert 0 < int(v.breach.sum()) < len(rows)
    with pytest.raises(ValueError):
        J.evaluate(t, "status", [], [], [])


# ----------------------------------------------------------------- the evidence rule (schema 2)

MONDAY = 1_795_392_000  # 2026-11-23T00:00:00Z, a Monday: hour_of_week 0


def evidence_thresholds(season="hour_of_day", **evidence):
    """A schema-2 document: kind baselines by hour, keyed baselines, a chronic key."""
    doc = copy.deepcopy(th.load_default().doc)
    hours = {"flat": 1, "hour_of_day": 24, "hour_of_week": 168}[season]
    ev = {"z": 4.75, "min_errors": {"global": 3, "ip": 3, "url": 6}, "season": season,
          "dispersion": {"global": 0.002, "ip": 0.0, "url": 0.05},
          "chronic": {"ip": {"10.0.0.66": {"errors_per_window": 50.0, "dispersion": 1.5}},
                      "url": {"/login": {"errors_per_window": 18.0, "dispersion": 2.0}}}}
    if hours > 1:
        ev["by_season"] = {k: [round(base * (1.5 if h % 24 < 6 else 1.0), 6) for h in range(hours)]
                           for k, base in (("global", 0.05), ("ip", 0.02), ("url", 0.03))}
    ev.update(evidence)
    doc.update(schema_version=2, version=9, min_requests={"global": 20, "ip": 1, "url": 2}, evidence=ev,
               ip={"default": 0.02, "overrides": {"10.0.0.66": 0.98, "10.0.0.7": 0.2}},
               url={"default": 0.03, "overrides": {"/login": 0.45, "/health": 0.001}})
    doc["global"] = {"error_rate": 0.05}
    return th.Thresholds.from_doc(doc)


def test_evidence_rule_small_windows_and_strong_evidence():
    t = evidence_thresholds("flat")
    # 1 error in 7 requests at a 2% baseline is chance (one such window in 8): no breach;
    # 30 in 40 is not
    one = J.judge_one("ip", "10.1.1.1", 7, 1, t)
    assert (one.judged, one.breach, one.severity) == (True, False, None) and one.evidence < 2
    many = J.judge_one("ip", "10.1.1.1", 40, 30, t)
    assert many.breach and many.severity == "critical" and many.evidence > 2 * t.z
    # the threshold is the error rate the window had to exceed: just above it breaches
    assert many.error_rate > many.threshold
    limit = int(many.threshold * 40)
    assert not J.judge_one("ip", "10.1.1.1", 40, limit, t).breach
    assert J.judge_one("ip", "10.1.1.1", 40, limit + 1, t).breach
    # the minimum number of errors: 5 of 5 at a 0.1% baseline is evidence enough, but too few
    health = J.judge_one("url", "/health", 5, 5, t)
    assert health.evidence > t.z and not health.breach  # min_errors url = 6
    assert J.judge_one("url", "/health", 6, 6, t).breach
    # at a tiny expected count the skewness term alone asks for about (z^2 - 1) / 6 errors
    assert J.judge_one("url", "/health", 3, 3, t).evidence < t.z
    # a key with its own baseline (20%) is judged against it, not its kind's 2%
    assert J.judge_one("ip", "10.1.1.1", 20, 8, t).breach
    assert not J.judge_one("ip", "10.0.0.7", 20, 8, t).breach
    # over-dispersion: the url kind's 5% widens a big window's spread
    flat_url = evidence_thresholds("flat", dispersion={"global": 0.0, "ip": 0.0, "url": 0.0})
    assert J.judge_one("url", "/a", 400, 34, flat_url).breach
    assert not J.judge_one("url", "/a", 400, 34, t).breach


def test_a_chronic_key_is_never_exempt():
    t = evidence_thresholds("flat")
    # 10.0.0.66 fails 98% of the time, ~50 errors a window: its normal does not alert ...
    assert not J.judge_one("ip", "10.0.0.66", 50, 50, t).breach
    assert not J.judge_one("ip", "10.0.0.66", 55, 55, t).breach
    # ... the same 100% with twice the volume does, and so does a flood from it
    doubled = J.judge_one("ip", "10.0.0.66", 100, 100, t)
    assert doubled.breach and doubled.threshold < 1.0
    assert J.judge_one("ip", "10.0.0.66", 1000, 1000, t).severity == "critical"
    # /login answers 45% 401s: a higher rate at its usual volume alerts too (binomial here)
    binomial = evidence_thresholds("flat", dispersion={"global": 0.0, "ip": 0.0, "url": 0.0})
    assert not J.judge_one("url", "/login", 40, 18, binomial).breach
    assert J.judge_one("url", "/login", 40, 36, binomial).breach


def test_seasonal_baselines_follow_the_hour_of_the_window():
    day = evidence_thresholds("hour_of_day")
    night, noon = MONDAY + 3 * 3600, MONDAY + 12 * 3600
    assert day.baseline("ip", "x", night) == 0.03 and day.baseline("ip", "x", noon) == 0.02
    assert day.baseline("ip", "10.0.0.7", night) == 0.2  # keyed baselines are flat
    a = J.judge_one("global", "*", 1000, 130, day, window_start=night)
    b = J.judge_one("global", "*", 1000, 130, day, window_start=noon)
    assert not a.breach and b.breach  # 13%: plausible at night (7.5%), not at noon (5%)
    week = evidence_thresholds("hour_of_week")
    assert th.season_index("hour_of_week", MONDAY) == 0
    assert th.season_index("hour_of_week", MONDAY - 1) == 167  # Sunday 23:xx
    assert th.season_index("hour_of_day", MONDAY - 1) == 23
    assert week.baseline("url", "/x", MONDAY + 2 * 3600) == 0.045
    with pytest.raises(ValueError, match="window_start"):
        J.evaluate(day, "ip", ["x"], [3], [1])


def _evidence_rows(rng, keys, n_rows):
    rows = []
    for _ in range(n_rows):
        kind = rng.choice(list(keys))
        n = rng.choice([1, 2, 3, 7, 20, 60, 400, 5000, rng.randint(1, 200)])
        p = rng.choice([0.0, 0.02, 0.1, 0.5, 0.9, 1.0, rng.random()])
        ws = MONDAY + rng.randint(-30, 200) * 3600 + rng.choice([0, 10, 3590])
        rows.append((kind, rng.choice(keys[kind]), n, min(n, round(n * p + rng.randint(-2, 2)) if n > 3 else
                                                         rng.randint(0, n)), ws))
    return [(k, key, n, max(0, e), ws) for k, key, n, e, ws in rows]


@pytest.mark.parametrize("season", ["flat", "hour_of_day", "hour_of_week"])
def test_evidence_rule_spark_numpy_python_agree_to_the_bit(spark, season):
    from datetime import UTC, datetime

    t = evidence_thresholds(season)
    rng = random.Random(23)
    keys = {"global": ["*"], "ip": ["10.0.0.66", "10.0.0.7", "10.9.9.9"], "url": ["/login", "/health", "/", "/b"]}
    rows = _evidence_rows(rng, keys, 4000)
    rows += [("ip", "10.0.0.66", 100, 100, MONDAY), ("url", "/health", 2, 2, MONDAY), ("ip", "x", 7, 1, MONDAY)]
    df = spark.createDataFrame(
        [(k, key, n, e, e / n, datetime.fromtimestamp(ws, UTC)) for k, key, n, e, ws in rows],
        "kind string, key string, requests long, errors long, error_rate double, window_start timestamp")
    got = {(r.kind, r.key, r.requests, r.errors, int(r.window_start.replace(tzinfo=UTC).timestamp())): r
           for r in J.judge(df, t).collect()}
    assert len(got) == len(set(rows))
    bits = float.hex
    breaches = 0
    for kind in keys:
        mine = [r for r in rows if r[0] == kind]
        v = J.evaluate(t, kind, [r[1] for r in mine], [r[2] for r in mine], [r[3] for r in mine],
                       window_start=[r[4] for r in mine])
        for i, row in enumerate(mine):
            one = J.judge_one(*row[:4], t, window_start=row[4])
            s = got[row]
            assert (bits(s.threshold), bits(s.evidence), s.judged, s.breach, s.severity) == \
                (bits(one.threshold), bits(one.evidence), one.judged, one.breach, one.severity), row
            assert (bits(float(v.threshold[i])), bits(float(v.evidence[i])), bool(v.judged[i]), bool(v.breach[i]),
                    v.severity(i)) == (bits(one.threshold), bits(one.evidence), one.judged, one.breach,
                                       one.severity), row
            breaches += one.breach
    assert 0.05 * len(rows) < breaches < 0.8 * len(rows)
    assert {r.severity for r in got.values()} == {None, "warning", "major", "critical"}


def test_old_and_new_documents_load(tmp_path):
    # a file of the first schema (no schema_version) keeps its meaning: rates to exceed
    old = th.load_default()
    assert old.schema_version == 1 and old.rule == "rate"
    assert J.judge_one("ip", "a", 20, 11, old).breach and not J.judge_one("ip", "a", 20, 10, old).breach
    with pytest.raises(th.ThresholdsError, match="rate rule"):
        _ = old.z
    new = evidence_thresholds("hour_of_week")
    path = th.write(new.doc, tmp_path / "seuils.json")
    again = th.load(path)
    assert again.rule == "evidence" and again.season == "hour_of_week" and len(again.by_season("ip")) == 168
    assert again.chronic("url") == {"/login": (18.0, 2.0)}
    # the detector's accessors still answer (baselines under the evidence rule)
    assert again.default("ip") == 0.02 and again.overrides("url")["/login"] == 0.45
    assert again.threshold("url", "/login") == 0.45 and again.resolve_after == 3


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d.pop("evidence"), "evidence"),
    (lambda d: d.update(schema_version=1), "evidence"),
    (lambda d: d.update(schema_version=3), "schema_version"),
    (lambda d: d["ip"].update(default=0.0), "strictly between 0 and 1"),
    (lambda d: d["url"]["overrides"].update({"/x": 1.0}), "url/overrides//x"),
    (lambda d: d["evidence"]["by_season"]["ip"].pop(), "evidence/by_season/ip"),
    (lambda d: d["evidence"]["by_season"]["ip"].extend([0.1] * 76), "needs 24 baselines, got 100"),
    (lambda d: d["evidence"].update(season="flat"), "season is flat"),
    (lambda d: d["evidence"]["chronic"]["ip"].update({"10.5.5.5": {"errors_per_window": 3, "dispersion": 1}}),
     "10.5.5.5"),
    (lambda d: d["evidence"].update(z=0.5), "evidence/z"),
    (lambda d: d["evidence"]["dispersion"].update(ip=1.0), "evidence/dispersion/ip"),
    (lambda d: d["evidence"]["min_errors"].update(url=0), "evidence/min_errors/url"),
])
def test_bad_evidence_documents_are_refused_in_one_line(mutate, fragment):
    doc = copy.deepcopy(evidence_thresholds().doc)
    mutate(doc)
    with pytest.raises(th.ThresholdsError) as err:
        th.validate(doc)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_detector_key_group_judges_with_its_slice_as_with_the_whole_file():
    # the detector sends each (kind, shard) group only its own keys' baselines and chronic
    # entries: every slice is a valid document, and it judges the group's keys identically
    import numpy as np
    from chaussettes.detector import channel

    whole = evidence_thresholds("hour_of_day")
    rng = np.random.default_rng(4)
    shards, breaches, judged = 4, 0, 0
    for kind, keys in (("ip", ["10.0.0.66", "10.0.0.7", "10.0.0.9", "10.0.1.1"]),
                       ("url", ["/login", "/health", "/", "/api/items"])):
        for shard in range(shards):
            part = th.Thresholds.from_doc(channel.thresholds_slice(whole.doc, kind, shard, shards))
            mine = [k for k in keys if channel.shard_of(k, shards) == shard]
            assert set(part.overrides(kind)) == {k for k in whole.overrides(kind) if k in mine}
            if not mine:
                continue
            n = rng.integers(1, 400, 400)
            e = rng.binomial(n, rng.choice([0.01, 0.3, 0.99], 400))
            key = np.array([mine[i % len(mine)] for i in range(400)], dtype=object)
            start = MONDAY + 10 * rng.integers(0, 8640, 400)
            a = J.evaluate(whole, kind, key, n, e, window_start=start)
            b = J.evaluate(part, kind, key, n, e, window_start=start)
            assert (a.breach == b.breach).all() and (a.level == b.level).all()
            assert np.array_equal(a.threshold, b.threshold)
            breaches, judged = breaches + int(a.breach.sum()), judged + int(a.judged.sum())
    assert 0 < breaches < judged
