"""The operations API on what the real detector produced: generator → http-logs → detector
(spark-submit-able job, local[2], available-now) → alerts + status file → the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from airflow.api_fastapi.app import create_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from chaussettes.ops.app import create_app
from confluent_kafka import Consumer, KafkaError, TopicPartition
from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAUSSETTES_")}
    env.update(settings.as_env())
    env["PYSPARK_PYTHON"] = sys.executable
    return env


def _all_alerts(settings) -> list[dict]:
    """Every alert on the topic, read independently of the page's reader."""
    consumer = Consumer(settings.kafka_client_config(**{
        "group.id": "test-ops-detector", "enable.auto.commit": False, "enable.partition.eof": True,
        "log_level": 0}))
    try:
        consumer.assign([TopicPartition(settings.topic_alerts, 0, 0)])
        alerts, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline:
            msgs = consumer.consume(1000, 0.5)
            if any(m.error() is not None and m.error().code() == KafkaError._PARTITION_EOF for m in msgs):
                alerts += [json.loads(m.value()) for m in msgs if m.error() is None]
                break
            alerts += [json.loads(m.value()) for m in msgs if m.error() is None]
        return alerts
    finally:
        consumer.close()


def test_api_shows_what_the_detector_published(settings, new_topic):
    s = settings.replace(topic_logs=new_topic(partitions=2), topic_alerts=new_topic(partitions=1))
    gen = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "generate_logs.py"), "--count", "6000", "--rate", "0",
         "--start-time=-5m", "--seed", "11", "--bad-ips", "2", "--ip-error-rate", "0.9", "--quiet",
         "--bootstrap-servers", s.bootstrap_servers, "--topic", s.topic_logs],
        check=False, env=_env(s), capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr[-2000:]
    det = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "stream_detector.py"), "--master", "local[2]",
         "--trigger", "available-now", "--no-archive", "--log-level", "WARN",
         "--bootstrap-servers", s.bootstrap_servers, "--topic", s.topic_logs,
         "--alerts-topic", s.topic_alerts, "--home", str(s.home)],
        check=False, env=_env(s), capture_output=True, text=True, timeout=600, cwd=s.home.parent)
    assert det.returncode == 0, det.stderr[-3000:]

    status_file = json.loads(s.detector_status_path.read_text())
    published = _all_alerts(s)
    assert published, f"no alert on {s.topic_alerts}; status: {status_file}; {det.stderr[-1500:]}"
    assert {"ip"} <= {a["kind"] for a in published}

    create_auth_manager()  # Airflow's configured one (the simple auth manager) checks the role
    app = create_app(s)
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="test-ops", role="viewer")
    client = TestClient(app)

    body = client.get("/api/alerts", params={"limit": 5000}).json()
    assert body["ok"], body["error"]
    newest_copy = {a["alert_id"]: a for a in published}
    shown = {a["alert_id"]: {k: v for k, v in a.items() if k not in ("partition", "offset")}
             for a in body["alerts"]}
    assert shown == newest_copy
    assert body["matching"] == len(newest_copy)
    times = [a["detected_at"] for a in body["alerts"]]
    assert times == sorted(times, reverse=True)

    health = client.get("/api/health").json()
    assert health["exists"] and health["missing_keys"] == []
    assert health["status"]["batch_id"] == status_file["batch_id"]
    assert health["status"]["alerts_published_total"] == status_file["alerts_published_total"]
    assert health["health"] in ("running", "dead")  # available-now ends with state "stopped" = dead

    rates = client.get("/api/rates").json()
    assert len(rates["series"]) == len(status_file["recent_global_windows"]) > 0
    ips = {a["key"] for a in published if a["kind"] == "ip"}
    assert {r["key"] for r in rates["top_ips"]} <= ips and rates["top_ips"]
