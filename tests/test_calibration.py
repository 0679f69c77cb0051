"""Calibration on generated histories (real Spark).

- A week of ``--profile small-site`` (1 line/s on average, a day/night cycle, crawlers, a
  /login answering 40% 401s) then a day of the shipped ``small-site`` incidents: the
  calibration learns hourly baselines, keeps the crawlers and /login to baselines of their
  own (/login chronic), meets its budget out of sample, and on the later day alerts every
  labelled incident and little else; its validation figures are what the detector's rule
  (``windows.windowed_rates_all`` + ``judge.judge``) gives on the history, to the window.
- ``make_history``: 40 minutes (about 50k events) with 40 normal clients and 20 normal pages
  at 4% errors, a login page answering many 401s, two IP floods of 4xx (one in sample, one
  in the held-out last part) and a URL outage of 5xx — short, for the job's plumbing and
  its refusals (``test_calibration_cli``, ``test_calibration_kafka``).
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
GENERATOR = REPO / "jobs" / "generate_logs.py"
WEEK0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
DAY = 86400
BUDGET = 5.0


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
def week(tmp_path_factory):
    """Eight days of one small-site generator run (the same clients and crawlers all along):
    seven to calibrate on, then a day with the shipped scenario's incidents."""
    import chaussettes.generator as gen_pkg

    tmp = tmp_path_factory.mktemp("week")
    scenario = json.loads((Path(gen_pkg.__file__).parent / "small_site_scenario.json").read_text())
    for incident in scenario["incidents"]:
        incident["start"] = float(incident["start"]) + 7 * DAY
    (tmp / "scenario.json").write_text(json.dumps(scenario))
    log = tmp / "all.jsonl"
    r = subprocess.run([sys.executable, str(GENERATOR), "--profile", "small-site", "--rate", "1", "--format", "json",
                        "--start-time", WEEK0.isoformat(), "--duration", str(8 * DAY), "--seed", "21", "--output",
                        str(log), "--scenario", str(tmp / "scenario.json"), "--labels", str(tmp / "labels.json"),
                        "--quiet"], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    cut = '{"timestamp": "' + (WEEK0 + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%S")
    (tmp / "history").mkdir()
    (tmp / "test").mkdir()
    with log.open() as lines, (tmp / "history" / "h.jsonl").open("w") as a, (tmp / "test" / "t.jsonl").open("w") as b:
        for line in lines:  # in time order
            (a if line < cut else b).write(line)
    return tmp


@pytest.fixture(scope="module")
def week_calibrated(spark, week):
    sys.path.insert(0, str(REPO / "jobs"))
    import calibrate_thresholds as job

    out = week / "seuils.json"
    argv = ["--source", "files", "--input", str(week / "history"), "--start", WEEK0.isoformat(),
            "--end", (WEEK0 + timedelta(days=7)).isoformat(), "--output", str(out), "--budget", str(BUDGET),
            "--summary-json", str(week / "summary.json")]
    assert job.main(argv, spark=spark) == 0
    return th.load(out)


def _events(spark, folder: Path):
    from chaussettes import sparkparse

    fast, good, keep = sparkparse.fast_parts(spark.read.text(str(folder)), "value")
    return sparkparse.events_of(good.unionByName(sparkparse.full_rules_of(fast, keep)))


def test_a_week_of_small_site_hourly_baselines_keys_of_their_own_chronic_login(week_calibrated):
    t = week_calibrated
    doc = t.doc
    assert doc["schema_version"] == 2 and t.season == "hour_of_day"
    c = doc["calibration"]
    assert "global" not in c["season_fallback_hours"]  # a week holds every hour of the day
    # the night's traffic is mostly crawlers with their 404s: the night's baseline is higher
    hours = t.by_season("global")
    assert sum(hours[1:5]) / 4 > 1.2 * sum(hours[12:17]) / 5
    # crawlers have baselines of their own (their 404s are their normal), and so has /login,
    # listed as chronic: 40% 401s, far above its kind
    from chaussettes.generator.traffic import CRAWLER_PREFIXES

    crawlers = [k for k in t.overrides("ip") if k.startswith(CRAWLER_PREFIXES)]
    assert len(crawlers) >= 6
    assert 0.35 < t.overrides("url")["/login"] < 0.45 and "/login" in t.chronic("url")
    assert [item["key"] for item in c["chronic"]["url"]][:1] == ["/login"]
    assert c["chronic"]["ip"] == []  # no client always fails
    assert c["keys"]["ip"] == len(t.overrides("ip")) and c["keys"]["url"] == len(t.overrides("url"))
    # the budget, met in sample and out of sample
    v = doc["validation"]
    assert v["budget_incidents_per_day"] == BUDGET and v["incidents_per_day"] <= BUDGET
    assert v["incidents_out_of_sample"] <= v["allowed_out_of_sample"]
    assert t.z >= 4.75 and v["evaluations"] > 100_000 and v["alert_rate"] < 0.001


def _replay_day(spark, folder: Path, t, start: datetime, end: datetime):
    """The detector's form on a period: windows by Spark's window(), judged by judge()."""
    from pyspark.sql import functions as F

    rates = windows.windowed_rates_all(_events(spark, folder), t.window_length_s, t.window_slide_s, t.error_status_min)
    rates = rates.where((F.col("window_start") >= F.lit(start)) & (F.col("window_end") <= F.lit(end)))
    return J.judge(rates, t)


def test_the_day_after_every_labelled_incident_alerts_and_little_else(spark, week, week_calibrated):
    t = week_calibrated
    start, end = WEEK0 + timedelta(days=7), WEEK0 + timedelta(days=8)
    breaches = [(r.kind, r.key, int(r.window_start.replace(tzinfo=UTC).timestamp()))
                for r in _replay_day(spark, week / "test", t, start, end).where("breach").collect()]
    labels = json.loads((week / "labels.json").read_text())["incidents"]
    length, slide = t.window_length_s, t.window_slide_s
    during = []
    for inc in labels:
        a, b = datetime.fromisoformat(inc["start"]).timestamp(), datetime.fromisoformat(inc["end"]).timestamp()
        if not inc["alert_kind"]:
            continue
        during.append((a - length, b + length))
        hits = [ws for kind, key, ws in breaches if kind == inc["alert_kind"]
                and (kind == "global" or key == inc["entity"]) and a < ws + length <= a + 2 * length]
        assert hits, f"{inc['name']} not alerted within two windows"
    # incidents outside the labelled ones: breaching windows not following a breach of their key
    seen = {(kind, key, ws) for kind, key, ws in breaches}
    starts = [(kind, key, ws) for kind, key, ws in breaches if (kind, key, ws - slide) not in seen]
    false = [s for s in starts if not any(lo < s[2] + length and s[2] < hi for lo, hi in during)]
    assert len(false) <= BUDGET, false


def test_validation_figures_are_the_detectors_replay_of_the_history(spark, week, week_calibrated):
    """Every window of the week judged by the detector's Spark form: alerts, judged windows
    and incidents (a breach after a window of its key that did not breach) per segment are
    the calibration's, which came from block sums and evidence bins; evaluate() agrees."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    t = week_calibrated
    v = t.doc["validation"]
    split = datetime.fromisoformat(t.doc["calibration"]["split_at"])
    judged = _replay_day(spark, week / "history", t, WEEK0, WEEK0 + timedelta(days=7))
    prev = Window.partitionBy("kind", "key").orderBy("window_start")
    slide = F.expr(f"INTERVAL {t.window_slide_s} SECONDS")
    rows = judged.withColumn("prev_breach", F.lag("breach").over(prev)) \
        .withColumn("prev_start", F.lag("window_start").over(prev)) \
        .withColumn("follows", F.col("prev_start") == F.col("window_start") - slide) \
        .withColumn("incident", F.col("breach") & ~F.coalesce(F.col("follows") & F.col("prev_breach"), F.lit(False))) \
        .groupBy((F.col("window_start") < F.lit(split)).alias("ins")).agg(
            F.sum(F.col("judged").cast("long")).alias("evaluations"), F.sum(F.col("breach").cast("long")).alias("alerts"),
            F.sum(F.col("incident").cast("long")).alias("incidents")).collect()
    by = {r.ins: (r.evaluations, r.alerts, r.incidents) for r in rows}
    assert by[True] == (v["evaluations"], v["alerts"], v["incidents"])
    assert by[False] == (v["evaluations_out_of_sample"], v["alerts_out_of_sample"], v["incidents_out_of_sample"])
    # the numpy form, on the keys with baselines of their own and a sample of the others
    sample = judged.where(F.col("key").isin(*t.overrides("url"), *list(t.overrides("ip"))[:50]) | (F.rand(3) < 0.01)) \
        .collect()
    assert len(sample) > 10_000
    for kind in ("global", "ip", "url"):
        mine = [r for r in sample if r.kind == kind]
        got = J.evaluate(t, kind, [r.key for r in mine], [r.requests for r in mine], [r.errors for r in mine],
                         [int(r.window_start.replace(tzinfo=UTC).timestamp()) for r in mine])
        assert [float.hex(x) for x in got.evidence] == [float.hex(r.evidence) for r in mine]
        assert got.breach.tolist() == [r.breach for r in mine] and got.judged.tolist() == [r.judged for r in mine]


def test_a_history_without_errors_gives_the_floor(spark, tmp_path):
    frame = make_history(seed=8, minutes=20)
    frame["status"] = 200
    result = cal.calibrate(to_events(spark, frame), cal.Params(holdout=0.2, budget=5), start=T0,
                           end=T0 + timedelta(minutes=20), version=3)
    doc = result.doc
    floor = cal.Params().rate_floor
    assert doc["global"]["error_rate"] == doc["ip"]["default"] == doc["url"]["default"] == floor
    assert doc["validation"]["incidents"] == 0 and doc["validation"]["alerts"] == 0
    assert doc["evidence"]["z"] == cal.Params().z_min and doc["evidence"]["dispersion"]["global"] == 0.0
    th.validate(doc)


def test_pins_rows_and_checkpoints(spark, history):
    # a pinned baseline is kept as given; the rows come from the statistic's own pass (or
    # the scan that finds a missing bound); no run leaves its blocks kept
    frame = history.copy()
    frame.loc[frame.index % 89 == 0, "url"] = None
    events = to_events(spark, frame)
    start, end = T0, T0 + timedelta(minutes=MINUTES)
    params = cal.Params(budget=2000, pins={"url": {LOGIN: 0.6}}, key_min_requests=200)
    kept = spark.sparkContext._jsc.getPersistentRDDs  # the checkpointed blocks, while a run holds them
    before = kept().size()
    told = cal.calibrate(events, params, start=start, end=end, version=1, rows=len(frame))
    found = cal.calibrate(events, params, start=start, end=end, version=1)
    assert found.doc["calibration"]["rows"] == len(frame) == found.summary["rows"]
    assert found.doc["url"]["overrides"][LOGIN] == 0.6 and LOGIN in found.doc["evidence"]["chronic"]["url"]
    for doc in (told.doc, found.doc):
        doc.pop("created_at")
    assert found.doc == told.doc
    half = cal.calibrate(events, params, end=end, version=1)
    assert half.doc["calibration"]["rows"] == len(frame)
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
           "--output", str(out), "--min-windows", "20", "--budget", "2000"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    t = th.load(out)
    assert t.rule == "evidence" and t.doc["calibration"]["rows"] == len(frame)
    assert t.doc["calibration"]["source"]["unparseable"] == 4  # garbage, bad JSON, empty, binary
    assert t.doc["calibration"]["source"]["unparseable_by_reason"]["empty"] == 1
    assert "4 unparseable lines skipped" in proc.stdout
    for word in ("baselines", "evidence   z", "validation", "incidents", str(out)):
        assert word in proc.stdout
