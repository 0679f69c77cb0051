"""End to end on a real broker and real Spark: generator scenario → detector (a subprocess,
available-now) → incident events on ``alerts``; bad lines quarantined; kill -9 of the driver
and restart.

One scenario topic is shared by the module: an uninterrupted run (``run_a``) is checked
for detection, quarantine, archive and status; a second run on the same input is killed
with SIGKILL mid-way and restarted, and must publish exactly the same set of events.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from chaussettes import logformat, schemas
from chaussettes import settings as settings_mod
from chaussettes import thresholds as thresholds_mod
from chaussettes.detector.publish import read_alerts
from chaussettes.topics import ensure_topics

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus" / "tricky_lines.jsonl"
MAX_OFFSETS = 15000
pytestmark = pytest.mark.slow

SCENARIO = {"incidents": [
    {"name": "flood", "kind": "ip_flood", "start": 120, "duration": 60, "entity": "198.51.100.7",
     "rate": 15, "error_rate": 0.9},
    {"name": "outage", "kind": "url_outage", "start": 300, "duration": 60, "entity": "/api/v1/checkout",
     "rate": 15, "error_rate": 0.9},
    {"name": "spike", "kind": "error_spike", "start": 450, "duration": 60, "error_rate": 0.5},
]}


def calibrated_thresholds(path: Path) -> Path:
    doc = thresholds_mod.load_default().doc
    doc.update({"version": 1, "created_at": "2026-01-02T00:00:00Z",
                "global": {"error_rate": 0.2},
                "ip": {"default": 0.5, "overrides": {"10.0.0.7": 0.9}},
                "url": {"default": 0.5, "overrides": {"/login": 0.85}}})
    doc.pop("description", None)
    return thresholds_mod.write(doc, path)


def bad_lines() -> list[bytes]:
    """The corpus lines the Python parser refuses, plus garbage of every kind."""
    out = []
    for raw in CORPUS.read_text(encoding="utf-8").splitlines():
        line = json.loads(raw)["line"]
        if isinstance(logformat.parse(line), logformat.Invalid):
            out.append(line.encode("utf-8"))
    out += [b"", b"   ", b"\xff\xfe\x00garbage", b"x" * 20000, b"GET / HTTP/1.1",
            b'{"timestamp": "2026-02-30T00:00:00Z", "ip": "1.2.3.4", "method": "GET", "url": "/", "status": 200}',
            b'{"timestamp": "2026-01-01T00:00:00Z", "ip": "1.2.3.4", "method": "GET", "url": "/", "status": 999}',
            b'{"timestamp": "2026-01-01T00:00:00Z", "ip": 5, "method": "GET", "url": "/", "status": 200}',
            b'1.2.3.4 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 700 5 "-" "-"',
            b'1.2.3.4 - - [31/Feb/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "-"',
            b'1.2.3.4 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "-',
            b'6.6.6.6 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "' + b'\\"' * 1800,  # issue 26: killed the JVM
            b"2026-01-01T00:00:00Z,1.2.3.4,GET", "\u00e9t\u00e9 \U0001F600".encode()]
    for b in out:
        assert isinstance(logformat.parse(b), logformat.Invalid), b
    return out


def produce(conf, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    p = Producer(conf.kafka_client_config(**{"linger.ms": 5}))
    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=i % 4)
    assert p.flush(30) == 0


def detector_argv(conf, topic, alerts_topic, home: Path, thresholds: Path) -> list[str]:
    return [sys.executable, str(REPO / "jobs" / "stream_detector.py"), "--master", "local[2]",
            "--source", "kafka", "--bootstrap-servers", conf.bootstrap_servers, "--topic", topic,
            "--alerts-topic", alerts_topic, "--trigger", "available-now",
            "--checkpoint", str(home / "ckpt"), "--home", str(home), "--thresholds", str(thresholds),
            "--max-offsets-per-trigger", str(MAX_OFFSETS)]


def run_detector(argv, home: Path, timeout=420) -> subprocess.CompletedProcess:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "detector.log", "ab") as log:
        result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False,
                                env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    assert result.returncode == 0, (home / "detector.log").read_text(errors="replace")[-4000:]
    return result


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def scenario(broker, tmp_path_factory):
    base = tmp_path_factory.mktemp("detector-e2e")
    conf = settings_mod.load(env={}, home=base / "home", bootstrap_servers=broker.bootstrap_servers,
                             kafka_timeout_s=5.0)
    topic = f"logs-{uuid.uuid4().hex[:8]}"
    ensure_topics(conf, {topic: 4})
    (base / "scenario.json").write_text(json.dumps(SCENARIO))
    gen = subprocess.run([sys.executable, str(REPO / "jobs" / "generate_logs.py"),
                          "--bootstrap-servers", broker.bootstrap_servers, "--topic", topic,
                          "--start-time", "2026-01-01T00:00:00Z", "--duration", "600", "--rate", "100",
                          "--seed", "3", "--error-rate", "0.05", "--scenario", str(base / "scenario.json"),
                          "--labels", str(base / "labels.json"), "--quiet"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert gen.returncode == 0, gen.stderr
    bad = bad_lines()
    produce(conf, topic, bad)
    th = calibrated_thresholds(base / "seuils.json")
    labels = json.loads((base / "labels.json").read_text())
    return {"base": base, "conf": conf, "topic": topic, "bad": bad, "thresholds": th, "labels": labels}


@pytest.fixture(scope="module")
def run_a(scenario):
    conf, base = scenario["conf"], scenario["base"]
    alerts_topic = f"alerts-{uuid.uuid4().hex[:8]}"
    ensure_topics(conf, {alerts_topic: 1})
    home = base / "run-a"
    run_detector(detector_argv(conf, scenario["topic"], alerts_topic, home, scenario["thresholds"]), home)
    events = read_alerts(conf, alerts_topic)
    return {"home": home, "events": events, "settings": conf.replace(home=home)}


def test_each_incident_alerted_once_and_clean_stretch_silent(scenario, run_a):
    events = run_a["events"]
    assert events, "no event at all"
    for e in events:
        expected = schemas.INCIDENT_EVENT_COLUMNS + (("resolved_at",) if e["event"] == "resolved" else ())
        assert tuple(e) == expected
        assert e["thresholds_version"] == 1 and e["severity"] in ("warning", "major", "critical")
        assert e["error_rate"] > e["threshold"]
    by_incident: dict[str, list[dict]] = {}
    for e in events:
        by_incident.setdefault(e["incident_id"], []).append(e)
    for history in by_incident.values():
        names = [e["event"] for e in history]
        assert names.count("firing") == 1 and names[0] == "firing", names
        assert names.count("resolved") <= 1 and "resolved" not in names[:-1], names
        levels = [e["severity"] for e in history if e["event"] == "escalated"]
        assert len(levels) == len(set(levels)), names
    labelled = [(i["alert_kind"], i["entity"], parse_iso(i["start"]), parse_iso(i["end"]))
                for i in scenario["labels"]["incidents"]]
    for kind, entity, start, end in labelled:
        hits = [e for e in events if e["event"] == "firing" and e["kind"] == kind and e["key"] == entity
                and parse_iso(e["window_start"]) < end and parse_iso(e["window_end"]) > start]
        assert len(hits) == 1, f"incident {kind} {entity} {start}..{end}: {len(hits)} firing events"
        assert "top error" in hits[0]["explanation"]
        assert len(by_incident[hits[0]["incident_id"]]) <= 3  # firing, one escalation, resolved
    # an incident whose first window overlaps no labelled incident is a false alarm
    false_alarms = [e for e in events if e["event"] == "firing" and not any(
        parse_iso(e["window_start"]) < end and parse_iso(e["window_end"]) > start for _, _, start, end in labelled)]
    assert not false_alarms, false_alarms[:3]
    ids = [e["alert_id"] for e in events]
    assert len(ids) == len(set(ids))


def test_bad_lines_quarantined_with_exact_count(scenario, run_a):
    import pandas as pd

    home_settings = run_a["settings"]
    status = json.loads(home_settings.detector_status_path.read_text())
    for key in schemas.STATUS_KEYS:
        assert key in status, key
    assert status["state"] == "stopped"
    assert status["quarantined_total"] == len(scenario["bad"])
    assert status["thresholds_version"] == 1 and status["thresholds_error"] is None
    assert status["total_lag"] == 0
    assert status["recent_global_windows"]
    rows = []
    for f in sorted(Path(home_settings.quarantine_dir).rglob("*.json")):
        rows += [json.loads(x) for x in f.read_text().split("\n") if x.strip()]  # not at U+2028
    assert len(rows) == len(scenario["bad"])
    assert {r["reason"] for r in rows} <= set(logformat.REASONS + schemas.DETECTOR_REASONS)
    assert all(r["topic"] == scenario["topic"] and r["offset"] is not None for r in rows)
    # the archive holds every good event once, by date and hour
    files = list(Path(home_settings.archive_dir).rglob("*.parquet"))
    assert files and all("date=2026-01-01" in str(f) and "hour=00" in str(f) for f in files)
    archived = sum(len(pd.read_parquet(f)) for f in files)
    assert archived == status["events_total"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    # event times as Parquet's INT64 microseconds in UTC (not the legacy INT96)
    assert {pq.read_schema(f).field("event_time").type for f in files} == {pa.timestamp("us", tz="UTC")}


def test_kill_9_then_restart_publishes_the_same_events_once(scenario, run_a):
    conf, base = scenario["conf"], scenario["base"]
    alerts_topic = f"alerts-{uuid.uuid4().hex[:8]}"
    ensure_topics(conf, {alerts_topic: 1})
    home = base / "run-b"
    home.mkdir()
    argv = detector_argv(conf, scenario["topic"], alerts_topic, home, scenario["thresholds"])
    status_path = conf.replace(home=home).detector_status_path
    with open(home / "detector.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    killed_at = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                batch = json.loads(status_path.read_text()).get("batch_id")
            except (OSError, ValueError):
                batch = None
            if batch is not None and batch >= 1:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and its JVM, no goodbye
                killed_at = batch
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None and killed_at is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert killed_at is not None, "the detector ended before it could be killed"
    run_detector(argv, home)
    ids_b = [a["alert_id"] for a in read_alerts(conf, alerts_topic)]
    ids_a = [a["alert_id"] for a in run_a["events"]]
    assert len(ids_b) == len(set(ids_b)), "an alert was published twice"
    assert set(ids_b) == set(ids_a)
    status = json.loads(status_path.read_text())
    assert status["state"] == "stopped"
    import pandas as pd

    archived = sum(len(pd.read_parquet(f)) for f in conf.replace(home=home).archive_dir.rglob("*.parquet"))
    assert archived == json.loads(run_a["settings"].detector_status_path.read_text())["events_total"]
