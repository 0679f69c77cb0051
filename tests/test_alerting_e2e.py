"""Alerts reach people, end to end with every part real: the generator's flood scenario (live,
into Kafka) -> the streaming detector (a subprocess, local[2], 2 s trigger) -> ``alerts`` ->
the relay (``python -m chaussettes.notify``) -> Debian's Alertmanager with the shipped
alertmanager.yml (route timings shortened) -> a webhook receiver in the test; and Debian's
Prometheus scraping the detector's, the generator's and the relay's endpoints with the
shipped rules.

Scenario: IP A floods (every request fails) from 20 s for 40 s, IP B from 80 s for 40 s; a
silence on B is made through Alertmanager's API before anything starts.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from alerting_helpers import Alertmanager, WebhookReceiver, am_config
from chaussettes import alertmanager as am
from chaussettes import procs
from chaussettes import settings as settings_mod
from chaussettes.settings import PACKAGE_DIR
from chaussettes.topics import ensure_topics

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
IP_A, IP_B = "198.51.100.7", "203.0.113.9"
FLOOD = {"kind": "ip_flood", "duration": 40, "rate": 15, "error_rate": 1.0}  # always critical (2x 0.5)
SCENARIO = {"incidents": [{"name": "flood-a", "start": 20, "entity": IP_A, **FLOOD},
                          {"name": "flood-b", "start": 80, "entity": IP_B, **FLOOD}]}
HORIZON_S = 20
DETECTOR_METRICS = ("running", "batch_id", "input_rows_per_second", "processed_rows_per_second",
                    "lag_records", "lag_records_sum", "events_total", "quarantined_total",
                    "thresholds_version", "thresholds_rejected", "last_batch_timestamp_seconds",
                    "batch_duration_seconds_count", "last_batch_duration_seconds")
# Status keys of the incident detector; their metrics exist once the detector writes them.
INCIDENT_METRICS = {"incidents_open": "incidents_open", "incident_events_total": "incident_events_total",
                    "state_rows": "state_rows", "late_total": "late_total"}


@dataclass
class Platform:
    settings: settings_mod.Settings
    base: Path
    webhook: WebhookReceiver
    alertmanager: Alertmanager
    prometheus_url: str
    silence_b: str
    generator_started: float
    procs: dict


def _prometheus_config(path: Path, s: settings_mod.Settings, am_port: int) -> Path:
    """The shipped prometheus.yml, pointed at this test's endpoints, scraping every second."""
    doc = yaml.safe_load((PACKAGE_DIR / "alerting" / "prometheus.yml").read_text())
    doc["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    doc["rule_files"] = [str(PACKAGE_DIR / "alerting" / "rules.yml")]
    doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{am_port}"]
    ports = {"chaussettes-detector": s.detector_metrics_port, "chaussettes-generator": s.generator_metrics_port,
             "chaussettes-relay": s.relay_metrics_port, "alertmanager": am_port}
    doc["scrape_configs"] = [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                             for job, port in ports.items()]
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def platform(broker, tmp_path_factory):
    base = tmp_path_factory.mktemp("alerting-e2e")
    webhook = WebhookReceiver()
    manager = Alertmanager(base / "am", am_config(webhook.url, base / "am.yml", group_wait="2s",
                                                  group_interval="5s", repeat_interval="1h")).start()
    s = settings_mod.load(
        env={}, home=base / "home", bootstrap_servers=broker.bootstrap_servers, kafka_timeout_s=5.0,
        topic_logs=f"logs-{uuid.uuid4().hex[:8]}", topic_alerts=f"alerts-{uuid.uuid4().hex[:8]}",
        alertmanager_url=manager.url, alert_site="e2e", relay_horizon_s=HORIZON_S, relay_refresh_s=5,
        detector_metrics_port=procs.free_port(), generator_metrics_port=procs.free_port(),
        relay_metrics_port=procs.free_port())
    ensure_topics(s, {s.topic_logs: 4, s.topic_alerts: 1})
    env = {**os.environ, **s.as_env(), "PYSPARK_PYTHON": sys.executable}
    (base / "scenario.json").write_text(json.dumps(SCENARIO))
    silence_b = am.create_silence(manager.url, {"alertname": "ChaussettesErrorRate", "key": IP_B},
                                  duration_s=3600, created_by="e2e", comment="B is a known scanner")
    started: dict[str, object] = {}
    prom_port = procs.free_port()
    try:
        started["prometheus"] = procs.start(
            ["prometheus", f"--config.file={_prometheus_config(base / 'prometheus.yml', s, manager.port)}",
             f"--storage.tsdb.path={base / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            base / "prometheus.log")
        started["detector"] = procs.start(
            [sys.executable, str(REPO / "jobs" / "stream_detector.py"), "--master", "local[2]", "--source", "kafka",
             "--trigger", "2s", "--checkpoint", str(base / "ckpt"), "--no-archive"], base / "detector.log", env=env)
        started["relay"] = procs.start([sys.executable, "-m", "chaussettes.notify"], base / "relay.log", env=env)
        assert procs.wait_until(lambda: procs.port_open(s.detector_metrics_port), 120), procs.tail(base / "detector.log")
        assert procs.wait_until(lambda: procs.port_open(s.relay_metrics_port), 60), procs.tail(base / "relay.log")
        started["generator"] = procs.start(
            # long enough for the watermark to pass flood A's resolution (its last traffic + a
            # window) and for every endpoint to be up when Prometheus is checked, last
            [sys.executable, str(REPO / "jobs" / "generate_logs.py"), "--rate", "300", "--duration", "360",
             "--error-rate", "0.05", "--seed", "11", "--scenario", str(base / "scenario.json"),
             "--metrics-port", str(s.generator_metrics_port), "--quiet"], base / "generator.log", env=env)
        yield Platform(s, base, webhook, manager, f"http://127.0.0.1:{prom_port}", silence_b, time.time(), started)
    finally:
        for name in ("generator", "relay", "detector", "prometheus"):
            if name in started:
                procs.stop_group(started[name].pid, timeout_s=30)
                started[name].wait(timeout=10)
        manager.stop()
        webhook.close()


def _logs(p: Platform) -> str:
    return "\n".join(f"--- {n}\n{procs.tail(p.base / f'{n}.log', 15)}" for n in ("detector", "relay", "generator"))


def test_a_flood_reaches_the_webhook_as_one_grouped_notification(platform):
    w = platform.webhook
    assert w.wait_for(lambda w: w.notifications(kind="ip", key=IP_A), 240), _logs(platform)
    first = w.notifications(kind="ip", key=IP_A)[0]
    assert first["status"] == "firing" and first["receiver"] == "webhook"
    [alert] = first["alerts"]
    assert alert["labels"] == {"alertname": "ChaussettesErrorRate", "kind": "ip", "key": IP_A,
                               "severity": "critical", "site": "e2e"}
    assert "ip 198.51.100.7" in alert["annotations"]["summary"]
    # While the flood goes on, the detector keeps publishing and the relay keeps posting:
    # nobody is notified a second time.
    time.sleep(max(0.0, platform.generator_started + 60 - time.time()))
    assert [n["status"] for n in w.notifications(kind="ip", key=IP_A)] == ["firing"]
    assert not [n for n in w.received if n[1]["groupLabels"].get("key") not in (IP_A, IP_B)]


def test_the_resolution_flows_through(platform):
    w = platform.webhook
    assert w.wait_for(lambda w: any(n["status"] == "resolved" for n in w.notifications(key=IP_A)), 180), \
        _logs(platform)
    assert [n["status"] for n in w.notifications(key=IP_A)] == ["firing", "resolved"]


def test_a_silence_made_through_the_api_suppresses_the_next_incident(platform):
    manager = platform.alertmanager
    assert procs.wait_until(lambda: manager.alerts(key=IP_B), 180), _logs(platform)
    [held] = manager.alerts(key=IP_B)
    assert held["status"]["state"] == "suppressed" and held["status"]["silencedBy"] == [platform.silence_b]
    time.sleep(10)  # group_wait (2 s) several times over
    assert platform.webhook.notifications(key=IP_B) == []


def _query(p: Platform, promql: str) -> list[dict]:
    url = f"{p.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["data"]["result"]


def test_prometheus_scrapes_the_named_metrics_and_loads_the_rules(platform):
    p = platform
    assert procs.wait_until(lambda: _query(p, "chaussettes_detector_batch_id > 0"), 120), _logs(p)
    assert [float(r["value"][1]) for r in _query(p, 'up{job=~"chaussettes-.*"}')] == [1.0, 1.0, 1.0]
    for name in DETECTOR_METRICS:
        assert _query(p, f"chaussettes_detector_{name}"), f"chaussettes_detector_{name} not scraped"
    status = json.loads(p.settings.detector_status_path.read_text())
    for key, name in INCIDENT_METRICS.items():
        assert bool(_query(p, f"chaussettes_detector_{name}")) == (key in status), name
    assert float(_query(p, "chaussettes_detector_events_total")[0]["value"][1]) > 1000
    partitions = {r["metric"]["partition"] for r in _query(p, "chaussettes_detector_lag_records")}
    assert partitions == {"0", "1", "2", "3"}
    assert float(_query(p, "chaussettes_generator_lines_total")[0]["value"][1]) > 1000
    assert float(_query(p, "chaussettes_relay_alerts_sent_total")[0]["value"][1]) > 0
    assert float(_query(p, "chaussettes_relay_alertmanager_up")[0]["value"][1]) == 1
    with urllib.request.urlopen(f"{p.prometheus_url}/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    rules = [r for g in groups if g["name"] == "chaussettes-platform" for r in g["rules"]]
    assert len(rules) == 8 and all(r["health"] == "ok" for r in rules), rules
    firing = {r["name"] for r in rules if r["state"] == "firing"}
    assert not firing & {"ChaussettesDetectorDown", "ChaussettesRelayDown", "ChaussettesRelayFailing"}
