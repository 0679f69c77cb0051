"""The whole flow over mutual TLS: generator → ``http-logs`` → detector (Spark, local[2]) →
``alerts``, every client with its own certificate, the broker reachable only through the
TLS proxy (it advertises the proxy's port; its plaintext port is loopback-only).

Each process gets its Kafka settings the way the stack gives them:
``security.client_env(settings, component)`` in its environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from chaussettes import procs, security
from chaussettes import settings as settings_mod
from chaussettes.broker import broker_argv
from chaussettes.topics import ensure_topics
from confluent_kafka import Consumer, TopicPartition

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tls_platform(tmp_path):
    s = settings_mod.load(env={}, home=tmp_path / "home", kafka_port=procs.free_port(),
                          kafka_tls_port=procs.free_port(), kafka_timeout_s=10.0,
                          topic_logs=f"logs-{uuid.uuid4().hex[:8]}",
                          topic_alerts=f"alerts-{uuid.uuid4().hex[:8]}", security_enabled=True)
    pki = security.ensure_pki(security.tls_dir(s))
    logs = tmp_path / "logs"
    broker = procs.start(broker_argv(s.kafka_port, advertised_port=s.kafka_tls_port), logs / "broker.log")
    proxy = procs.start(security.tls_proxy_argv(s.kafka_tls_port, s.kafka_port, pki), logs / "tls.log")
    try:
        assert procs.wait_until(lambda: procs.port_open(s.kafka_port) and procs.port_open(s.kafka_tls_port), 20)
        ensure_topics(security.secured_settings(s, "ops"), {s.topic_logs: 4, s.topic_alerts: 1})
        yield s
    finally:
        procs.stop_group(proxy.pid, 5)
        procs.stop_group(broker.pid, 5)


def _env(settings, component: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAUSSETTES_")}
    env.update(settings.as_env())
    env.update(security.client_env(settings, component))
    env["PYSPARK_PYTHON"] = sys.executable
    return env


def test_generator_detector_alerts_over_mutual_tls(tls_platform):
    s = tls_platform
    gen = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "generate_logs.py"), "--count", "12000", "--rate", "100",
         "--start-time=-10m", "--seed", "11", "--bad-ips", "2", "--ip-error-rate", "0.9",
         "--quiet"],
        env=_env(s, "generator"), check=False, capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert "0 delivery errors" in gen.stderr + gen.stdout

    t0 = time.monotonic()
    det = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "stream_detector.py"), "--master", "local[2]",
         "--trigger", "available-now", "--no-archive", "--log-level", "WARN"],
        env=_env(s, "detector"), check=False, capture_output=True, text=True, timeout=600, cwd=s.home.parent)
    assert det.returncode == 0, det.stderr[-3000:]

    consumer = Consumer(security.secured_settings(s, "ops").kafka_client_config(**{
        "group.id": f"g-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False, "log_level": 0}))
    try:
        consumer.assign([TopicPartition(s.topic_alerts, 0, 0)])
        alerts = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(1000, 1.0) if m.error() is None]
            alerts += [json.loads(m.value()) for m in batch]
            if alerts and not batch:
                break
    finally:
        consumer.close()
    assert alerts, f"no alert after {time.monotonic() - t0:.0f}s of detector"
    assert {"ip"} <= {a["kind"] for a in alerts}
    assert all(a["error_rate"] > a["threshold"] for a in alerts)
