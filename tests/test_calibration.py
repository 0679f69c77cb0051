"""Calibration on generated history with known misbehaving IPs and URLs (real Spark).

The history (40 minutes, about 50k events) has 40 normal clients and 20 normal pages at 4%
errors, a login page that always answers many 401s (its normal), two IP floods of 4xx (one
in sample, one in the held-out last part) and a URL outage of 5xx.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from chaussettes import calibration as cal
from chaussettes import judge as J
from chaussettes import schemas, windows
from chaussettes import thresholds as th

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "jobs" / "calibrate_thresholds.py"
T0 = datetime(2026, 11, 20, 0, 0, 0, tzinfo=UTC)
MINUTES = 40
BAD_IP_IN, BAD_IP_OUT = "203.0.113.9", "203.0.113.77"
BAD_URL, LOGIN = "/api/broken", "/login"
# incidents: (key, kind, first second, last second)
INCIDENTS = [(BAD_IP_IN, "ip", 600, 780), (BAD_URL, "url", 1080, 1260), (BAD_IP_OUT, "ip", 2040, 2160)]
PARAMS = ["--min-requests", "global=50,ip=10,url=10", "--override-min-windows", "30"]


def make_history(seed: int = 42, minutes: int = MINUTES, rate_scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = minutes * 60
    ips = [f"10.1.0.{i}" for i in range(1, 41)]
    pages = [f"/page/{j}" for j in range(20)]
    parts = []

    def add(n, t_lo, t_hi, ip, url, error_p, error_status):
        if n <= 0:
            return
        t = rng.uniform(t_lo, t_hi, n)
        ipv = ip if isinstance(ip, np.ndarray) else np.full(n, ip, dtype=object)
        urlv = url if isinstance(url, np.ndarray) else np.full(n, url, dtype=object)
        err = rng.random(n) < error_p
        status = np.where(err, error_status, 200)
        parts.append(pd.DataFrame({"t": t, "ip": ipv, "url": urlv, "status": status}))

    n = int(16 * seconds * rate_scale)  # normal: 16 ev/s over 40 clients and 20 pages
    add(n, 0, seconds, rng.choice(ips, n), rng.choice(pages, n), 0.04, 404)
    n = int(1 * seconds * rate_scale)  # login: 1 ev/s, 45% 401 all the time
    add(n, 0, seconds, rng.choice(ips, n), LOGIN, 0.45, 401)
    n = int(0.3 * seconds * rate_scale)  # the API's normal life
    add(n, 0, seconds, rng.choice(ips, n), BAD_URL, 0.04, 500)
    for key, kind, lo, hi in INCIDENTS:
        if hi > seconds:
            continue
        n = int(3 * (hi - lo) * rate_scale)
        if kind == "ip":  # a flood of 4xx from one client over normal pages
            add(n, lo, hi, key, rng.choice(pages, n), 0.9, 403)
        else:  # an outage: the URL answers 5xx, asked by normal clients
            add(n, lo, hi, rng.choice(ips, n), key, 0.85, 503)
    df = pd.concat(parts, ignore_index=True).sort_values("t")
    df["event_time"] = (pd.to_datetime(T0) + pd.to_timedelta(df["t"], unit="s")).astype("datetime64[us, UTC]")
    df["status"] = df["status"].astype("int32")
    return df.drop(columns="t").reset_index(drop=True)


def to_events(spark, frame: pd.DataFrame):
    full = frame.assign(method="GET", query=None, protocol="HTTP/1.1", bytes=100, referrer=None,
                        user_agent="test")
    full["bytes"] = full["bytes"].astype("int64")
    return spark.createDataFrame(full[list(schemas.EVENT_COLUMNS)],
                                 schema=schemas.spark_schema(schemas.EVENT_FIELDS))


def write_archive(spark, frame: pd.DataFrame, path: Path) -> Path:
    """Parquet partitioned by date and hour, as the detector's archive."""
    from pyspark.sql import functions as F

    events = to_events(spark, frame)
    (events.withColumn("date", F.date_format("event_time", "yyyy-MM-dd"))
     .withColumn("hour", F.hour("event_time"))
     .repartition(2).write.partitionBy("date", "hour").parquet(str(path)))
    return path


@pytest.fixture(scope="module")
def history():
    return make_history()


@pytest.fixture(scope="module")
def archive(spark, history, tmp_path_factory):
    return write_archive(spark, history, tmp_path_factory.mktemp("archive") / "archive")


@pytest.fixture(scope="module")
def calibrated(spark, archive, tmp_path_factory):
    """One run of the job (in process, the shared session) on the archive."""
    sys.path.insert(0, str(REPO / "jobs"))
    import calibrate_thresholds as job

    out = tmp_path_factory.mktemp("calib") / "seuils.json"
    summary = out.with_name("summary.json")
    argv = ["--source", "archive", "--input", str(archive), "--start", T0.isoformat(),
            "--end", (T0 + timedelta(minutes=MINUTES)).isoformat(), "--output", str(out),
            "--summary-json", str(summary), *PARAMS]
    assert job.main(argv, spark=spark) == 0
    return th.load(out), json.loads(summary.read_text())


def _judged_history(spark, history, t):
    """The detector's path on the whole history: windows.windowed_rates_all (Spark's
    window()), whole windows inside the history, judge()."""
    from pyspark.sql import functions as F

    rates = windows.windowed_rates_all(to_events(spark, history), t.window_length_s, t.window_slide_s,
                                       t.error_status_min)
    end = T0 + timedelta(minutes=MINUTES)
    rates = rates.where((F.col("window_start") >= F.lit(T0)) & (F.col("window_end") <= F.lit(end)))
    return J.judge(rates, t)


def test_thresholds_separate_misbehaving_keys_from_normal_traffic(spark, calibrated, history):
    t, _ = calibrated
    doc = t.doc
    assert doc["min_requests"] == {"global": 50, "ip": 10, "url": 10}
    judged = {(r.kind, r.key, r.window_start): r for r in _judged_history(spark, history, t).collect()}

    def core_windows(key, kind, lo, hi):  # windows entirely inside the incident
        return [r for (k, kk, ws), r in judged.items() if k == kind and kk == key
                and T0 + timedelta(seconds=lo) <= ws.replace(tzinfo=UTC)
                and ws.replace(tzinfo=UTC) + timedelta(seconds=60) <= T0 + timedelta(seconds=hi)]

    for key, kind, lo, hi in INCIDENTS:
        core = core_windows(key, kind, lo, hi)
        assert len(core) >= 6, key
        assert all(r.breach for r in core), (key, [(r.error_rate, r.threshold) for r in core])
        assert min(r.error_rate for r in core) > t.threshold(kind, key)
        assert key not in t.overrides(kind)  # an incident is not a key's normal
    normal_ip = [r for r in judged.values() if r.kind == "ip" and r.key.startswith("10.1.") and r.judged]
    assert len(normal_ip) > 1000
    assert sum(r.breach for r in normal_ip) / len(normal_ip) <= 0.02
    normal_pages = [r for r in judged.values() if r.kind == "url" and r.key.startswith("/page/") and r.judged]
    assert sum(r.breach for r in normal_pages) / len(normal_pages) <= 0.02


def test_login_url_gets_its_own_override(spark, calibrated, history):
    t, _ = calibrated
    overrides = t.overrides("url")
    assert LOGIN in overrides and len(overrides) == 1
    assert overrides[LOGIN] > 0.45 > t.threshold("url", "/page/1")
    assert t.overrides("ip") == {}
    rows = _judged_history(spark, history, t).where("kind = 'url' and judged").collect()
    login = [r for r in rows if r.key == LOGIN]
    assert sum(r.breach for r in login) / len(login) <= 0.05  # it does not alert all day
    # the 401s did not raise everyone's threshold: the default is the pool's percentile
    # without the login windows, well below what it would be with them
    split = datetime.fromisoformat(t.doc["calibration"]["split_at"]).replace(tzinfo=None)
    pct = t.doc["calibration"]["percentile"]
    without = [r.error_rate for r in rows if r.key != LOGIN and r.window_start < split]
    with_login = without + [r.error_rate for r in login if r.window_start < split]
    assert t.threshold("url", "/page/1") == pytest.approx(cal.percentile(without, pct), abs=1e-6)
    assert cal.percentile(with_login, pct) > t.threshold("url", "/page/1") + 0.1


def test_validation_within_tolerance_and_metadata(calibrated, history):
    t, summary = calibrated
    v, c = t.doc["validation"], t.doc["calibration"]
    assert v["target"] == 0.01 and v["tolerance"] == 0.005
    assert abs(v["alert_rate"] - 0.01) <= 0.005
    assert v["evaluations"] > 5000 and v["alerts"] == round(v["alert_rate"] * v["evaluations"])
    assert v["alert_rate_out_of_sample"] is not None and v["evaluations_out_of_sample"] > 1000
    assert c["rows"] == len(history) == summary["rows"]
    assert c["source"]["source"] == "archive"
    assert c["start"] == "2026-11-20T00:00:00Z" and c["end"] == "2026-11-20T00:40:00Z"
    assert c["split_at"] == "2026-11-20T00:32:00Z"
    assert c["windows"]["in"]["global"] == 32 * 60 // 10  # windows starting before the split
    assert 90 <= c["percentile"] <= 99.9
    assert c["parameters"]["percentile"] == 99.0
    assert t.doc["window"] == {"length_s": 60, "slide_s": 10, "watermark_s": 30}
    th.validate(t.doc)


def test_detector_replay_alert_rate_equals_validation_rate(spark, calibrated, history):
    """Replay the history through the detector's code path (window() + judge) and count."""
    from pyspark.sql import functions as F

    t, _ = calibrated
    v = t.doc["validation"]
    judged = _judged_history(spark, history, t)
    split = datetime.fromisoformat(t.doc["calibration"]["split_at"])
    rows = judged.groupBy((F.col("window_start") < F.lit(split)).alias("ins")).agg(
        F.sum(F.col("judged").cast("long")).alias("ev"), F.sum(F.col("breach").cast("long")).alias("al")
    ).collect()
    by = {r.ins: (r.al, r.ev) for r in rows}
    assert by[True] == (v["alerts"], v["evaluations"])
    assert by[False] == (v["alerts_out_of_sample"], v["evaluations_out_of_sample"])
    assert by[True][0] / by[True][1] == pytest.approx(v["alert_rate"], abs=1e-8)
    total = (by[True][0] + by[False][0]) / (by[True][1] + by[False][1])
    assert total == pytest.approx(v["alert_rate_history"], abs=1e-8)
    # and the pure-Python judge agrees row by row
    for r in judged.where("kind != 'ip' or key like '203.%'").collect():
        one = J.judge_one(r.kind, r.key, r.requests, r.errors, t)
        assert (one.breach, one.threshold, one.judged) == (r.breach, r.threshold, r.judged)


def test_derived_min_requests_fraction_method_and_pins(spark, history):
    events = to_events(spark, history)
    params = cal.Params(global_method="fraction", global_fraction=1.0, override_min_windows=30,
                        pins={"url": {LOGIN: 0.95}})
    result = cal.calibrate(events, params, start=T0, end=T0 + timedelta(minutes=MINUTES), version=7)
    doc = result.doc
    assert doc["version"] == 7
    overall = doc["calibration"]["overall_error_rate"]
    assert doc["global"]["error_rate"] == pytest.approx(round(overall * 2, 6))
    # derived: z^2 p(1-p)/0.1^2 at the overall rate, capped by the median window size
    expected = cal.derived_min_requests(overall, 0.1, 5, 1e9)
    assert doc["min_requests"]["global"] == expected
    assert 5 <= doc["min_requests"]["ip"] <= expected
    assert doc["calibration"]["min_requests_derived"] == {"global": True, "ip": True, "url": True}
    assert abs(doc["validation"]["alert_rate"] - 0.01) <= 0.005
    # the pinned override is kept as given, and not learnt again
    assert doc["url"]["overrides"] == {LOGIN: 0.95}
    assert doc["calibration"]["overrides_learnt"]["url"] == []


def test_compressed_rates_equal_every_window_counted(spark, history):
    # the calibration's fast paths (block sums in the JVM up to BLOCK_STEPS_MAX slides per
    # window, bucket counts + numpy windows beyond), counted per distinct window, give the
    # same rows as compute_rates' windows grouped the same way; a range cut off the slide
    # grid and null keys included
    frame = history.copy()
    frame.loc[frame.index % 97 == 0, "ip"] = None
    frame.loc[frame.index % 89 == 0, "url"] = None
    events = to_events(spark, frame)
    start, end = T0 + timedelta(seconds=3.5), T0 + timedelta(minutes=MINUTES - 3, seconds=7)
    long_window = cal.Params(length_s=10 * (cal.BLOCK_STEPS_MAX + 1), slide_s=10)
    for params in (cal.Params(), cal.Params(length_s=30, slide_s=30), cal.Params(length_s=120, slide_s=20),
                   long_window):
        split_at = cal.split_time(start, end, 0.25, params.slide_s)
        cols = ["segment", "kind", "key", "requests", "errors", "windows", "error_rate"]
        fast = cal.compressed_rates(events, params, start, end, split_at).select(*cols).collect()
        slow = cal.compress_rates(cal.compute_rates(events, params, start, end, split_at)).select(*cols).collect()
        assert sorted(map(tuple, fast)) == sorted(map(tuple, slow))
        assert {r.segment for r in fast} == {"in", "out"}


def test_rows_counted_by_the_statistic_pass(spark, history):
    # calibrate counts the events in the bucket-count pass (no scan of its own): the count
    # row of compressed_rates(with_rows=True) is the number of events with an event time,
    # the other rows are unchanged, and calibrate's rows and thresholds are those it gets
    # when told the count; none of these runs leaves its windows kept
    frame = history.copy()
    frame.loc[frame.index % 89 == 0, "url"] = None
    events = to_events(spark, frame)
    start, end = T0, T0 + timedelta(minutes=MINUTES)
    cols = ["segment", "kind", "key", "requests", "errors", "windows"]
    for params in (cal.Params(length_s=10 * (cal.BLOCK_STEPS_MAX + 1), slide_s=10), cal.Params()):
        split_at = cal.split_time(start, end, params.holdout, params.slide_s)
        plain = cal.compressed_rates(events, params, start, end, split_at).select(*cols).collect()
        counted = cal.compressed_rates(events, params, start, end, split_at, with_rows=True).select(*cols).collect()
        marks = [r for r in counted if r.segment == cal.ROWS_SEGMENT]
        assert [(r.kind, r.key, r.requests, r.errors, r.windows) for r in marks] == [("global", "*", len(frame), 0, 0)]
        assert sorted(map(tuple, plain)) == sorted(tuple(r) for r in counted if r.segment != cal.ROWS_SEGMENT)
    kept = spark.sparkContext._jsc.getPersistentRDDs  # the checkpointed windows, while a run holds them
    before = kept().size()
    told = cal.calibrate(events, params, start=start, end=end, version=1, rows=len(frame))
    found = cal.calibrate(events, params, start=start, end=end, version=1)
    assert found.doc["calibration"]["rows"] == len(frame) == found.summary["rows"]
    for doc in (told.doc, found.doc):
        doc.pop("created_at")
    assert found.doc == told.doc
    # one bound missing: the scan that finds it counts the rows too
    half = cal.calibrate(events, params, end=end, version=1)
    assert half.doc["calibration"]["rows"] == len(frame)
    # no event between the bounds: the given message, no file
    with pytest.raises(cal.CalibrationError, match="^nothing here$"):
        cal.calibrate(events, params, start=T0 - timedelta(days=2), end=T0 - timedelta(days=1),
                      empty_message="nothing here")
    assert kept().size() == before  # released after every run, the failed one too


def _log_lines(frame: pd.DataFrame) -> list[str]:
    lines = []
    for i, r in enumerate(frame.itertuples()):
        ts = r.event_time.to_pydatetime()
        if i % 3 == 0:
            lines.append(f'{r.ip} - - [{ts.strftime("%d/%b/%Y:%H:%M:%S")} +0000] "GET {r.url} HTTP/1.1" '
                         f'{r.status} 100 "-" "test"')
        elif i % 3 == 1:
            lines.append(json.dumps({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "ip": r.ip,
                                     "method": "GET", "url": r.url, "status": int(r.status)}))
        else:
            lines.append(f'{ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},{r.ip},GET,{r.url},HTTP/1.1,{r.status},100,,test')
    return lines


def test_spark_submit_files_source_with_gz_and_garbage(tmp_path):
    """The real thing: spark-submit --master local[2] on access-log files (.gz too)."""
    frame = make_history(seed=3, minutes=12, rate_scale=0.5)
    lines = _log_lines(frame)
    logs = tmp_path / "logs"
    logs.mkdir()
    half = len(lines) // 2
    (logs / "a.log").write_text("\n".join(lines[:half] + ["garbage line", "{\"ip\": 3}", ""]) + "\n")
    with gzip.open(logs / "b.log.gz", "wt") as fh:
        fh.write("\n".join(lines[half:] + ["\x00\x01 binary?"]) + "\n")
    out = tmp_path / "seuils.json"
    spark_submit = Path(sys.executable).parent / "spark-submit"
    cmd = [str(spark_submit), "--master", "local[2]", str(JOB), "--source", "files", "--input", str(logs),
           "--output", str(out), "--min-requests", "global=20,ip=5,url=5", "--min-windows", "20",
           "--tolerance", "0.01", "--override-min-windows", "10"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    t = th.load(out)
    assert t.doc["calibration"]["rows"] == len(frame)
    assert t.doc["calibration"]["source"]["unparseable"] == 4  # garbage, bad JSON, empty, binary
    assert t.doc["calibration"]["source"]["unparseable_by_reason"]["empty"] == 1
    assert abs(t.doc["validation"]["alert_rate"] - 0.01) <= 0.01
    assert "4 unparseable lines skipped" in proc.stdout
    assert "validation alert rate" in proc.stdout and str(out) in proc.stdout
