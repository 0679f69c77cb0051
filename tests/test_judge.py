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
    counts = J.replay_counts(J.judge(rates_df(spark, rows), t))
    assert counts[0]["alerts"] == breaches
    assert counts[0]["evaluations"] == sum(J.judge_one(*row, t).judged for row in rows)


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
