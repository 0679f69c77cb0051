"""The relay (`python -m chaussettes.notify`) end to end: a real broker, Debian's real
Alertmanager with the shipped alertmanager.yml (route timings shortened), and a webhook
receiver in the test. Incident events follow the detector's contract (incident_samples).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import incident_samples
import pytest
from alerting_helpers import Alertmanager, WebhookReceiver, am_config
from chaussettes import alertmanager as am
from chaussettes import procs
from chaussettes.ops import samples

pytestmark = pytest.mark.slow

HORIZON_S, REFRESH_S = 15, 3
ROUTE = {"group_wait": "1s", "group_interval": "2s", "repeat_interval": "1h"}


class RelayProcess:
    """``python -m chaussettes.notify`` in its own process group, logging to a file."""

    def __init__(self, settings, am_url: str, log: Path, *extra: str):
        self.settings, self.am_url, self.log, self.extra = settings, am_url, log, extra
        self.metrics_port = procs.free_port()
        self.proc = None

    def argv(self, *more: str) -> list[str]:
        return [sys.executable, "-m", "chaussettes.notify", "--alertmanager", self.am_url,
                "--metrics-port", str(self.metrics_port), *self.extra, *more]

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings.as_env()}

    def start(self) -> RelayProcess:
        self.proc = procs.start(self.argv(), self.log, env=self.env())
        assert procs.wait_until(lambda: procs.port_open(self.metrics_port), 30), procs.tail(self.log)
        return self

    def kill(self, sig=signal.SIGKILL) -> int:
        os.killpg(self.proc.pid, sig)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop_group(self.proc.pid, timeout_s=15)
            self.proc.wait(timeout=10)
            self.proc = None

    def metric(self, name: str) -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def alertmanager_(tmp_path, webhook):
    manager = Alertmanager(tmp_path / "am", am_config(webhook.url, tmp_path / "am.yml", **ROUTE)).start()
    yield manager
    manager.stop()


@pytest.fixture
def relay_settings(settings, new_topic):
    return settings.replace(topic_alerts=new_topic(partitions=1, prefix="alerts"), alert_site="test-site",
                            relay_horizon_s=HORIZON_S, relay_refresh_s=REFRESH_S)


@pytest.fixture
def relays(tmp_path):
    started: list[RelayProcess] = []

    def make(settings, am_url, *extra) -> RelayProcess:
        relay = RelayProcess(settings, am_url, tmp_path / f"relay-{len(started)}.log", *extra)
        started.append(relay)
        return relay

    yield make
    for relay in started:
        relay.stop()


def _run(argv: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _states(payloads: list[dict]) -> list[list[tuple[str, str]]]:
    return [sorted((a["labels"]["severity"], a["status"]) for a in p["alerts"]) for p in payloads]


def test_incident_lifecycle_reaches_the_webhook_once_per_change(relay_settings, alertmanager_, webhook, relays):
    s = relay_settings
    relay = relays(s, alertmanager_.url).start()
    firing, escalated, resolved = incident_samples.incident(
        "ip", "10.0.0.7", _now() - dt.timedelta(seconds=70), severities=("warning", "critical"))
    incident_samples.publish(s, s.topic_alerts, [firing, b"not json", {"kind": "ip"}])
    group = {"kind": "ip", "key": "10.0.0.7"}

    assert webhook.wait_for(lambda w: w.notifications(**group), 30), procs.tail(relay.log)
    [first] = webhook.notifications(**group)
    assert first["status"] == "firing" and _states([first]) == [[("warning", "firing")]]
    alert = first["alerts"][0]
    assert alert["labels"] == {"alertname": "ChaussettesErrorRate", "kind": "ip", "key": "10.0.0.7",
                               "severity": "warning", "site": "test-site"}
    assert alert["annotations"]["description"] == firing["explanation"]
    assert alert["startsAt"].startswith(firing["first_window_start"][:19])

    # Open past its horizon: the relay's refreshes keep it firing (no new notification).
    time.sleep(HORIZON_S + 2 * REFRESH_S)
    [held] = alertmanager_.alerts(**group)
    assert held["status"]["state"] == "active" and len(webhook.notifications(**group)) == 1
    assert relay.metric("chaussettes_relay_invalid_records_total") == 2
    assert relay.metric("chaussettes_relay_records_total") == 3

    # Escalation: one update of the same group, critical firing and warning resolved.
    incident_samples.publish(s, s.topic_alerts, [escalated])
    assert webhook.wait_for(lambda w: len(w.notifications(**group)) == 2, 30)
    assert _states(webhook.notifications(**group))[1] == [("critical", "firing"), ("warning", "resolved")]

    # Resolution flows through.
    incident_samples.publish(s, s.topic_alerts, [resolved])
    assert webhook.wait_for(lambda w: len(w.notifications(**group)) == 3, 30)
    last = webhook.notifications(**group)[2]
    assert last["status"] == "resolved" and ("critical", "resolved") in _states([last])[0]
    time.sleep(5)
    assert len(webhook.notifications(**group)) == 3
    assert relay.metric("chaussettes_relay_post_failures_total") == 0
    relay.stop()
    assert "skipped" in procs.tail(relay.log, 50) and "@1: not an alert: not JSON" in procs.tail(relay.log, 50)


def test_a_silence_made_through_the_api_suppresses_the_notification(relay_settings, alertmanager_, webhook,
                                                                    relays):
    s = relay_settings
    relays(s, alertmanager_.url).start()
    silence = am.create_silence(alertmanager_.url, {"alertname": "ChaussettesErrorRate", "key": "/maintenance"},
                                duration_s=600, created_by="test", comment="planned maintenance")
    start = _now() - dt.timedelta(seconds=70)
    incident_samples.publish(s, s.topic_alerts,
                             incident_samples.incident("url", "/maintenance", start, resolve=False)
                             + incident_samples.incident("url", "/checkout", start, resolve=False))
    assert webhook.wait_for(lambda w: w.notifications(key="/checkout"), 30)
    time.sleep(4)  # a few group_waits more
    assert webhook.notifications(key="/maintenance") == []
    [held] = alertmanager_.alerts(key="/maintenance")
    assert held["status"]["state"] == "suppressed" and held["status"]["silencedBy"] == [silence]


def test_a_global_incident_inhibits_the_ip_and_url_warnings_under_it(relay_settings, alertmanager_, webhook,
                                                                     relays):
    s = relay_settings
    relays(s, alertmanager_.url).start()
    start = _now() - dt.timedelta(seconds=70)
    incident_samples.publish(s, s.topic_alerts, incident_samples.incident("global", "*", start, resolve=False,
                                                                          severities=("major",)))
    assert procs.wait_until(lambda: alertmanager_.alerts(kind="global"), 30)
    incident_samples.publish(s, s.topic_alerts,
                             incident_samples.incident("ip", "10.2.0.1", start, resolve=False)  # warning
                             + incident_samples.incident("url", "/down", start, resolve=False,
                                                         severities=("critical",)))
    assert webhook.wait_for(lambda w: w.notifications(key="/down") and w.notifications(kind="global"), 30)
    time.sleep(4)
    assert webhook.notifications(key="10.2.0.1") == []
    [muted] = alertmanager_.alerts(key="10.2.0.1")
    assert muted["status"]["state"] == "suppressed" and muted["status"]["inhibitedBy"]
    assert muted["status"]["silencedBy"] == []


def test_relay_killed_mid_stream_and_restarted_loses_nothing_and_notifies_once(
        relay_settings, alertmanager_, webhook, relays):
    s = relay_settings
    relay = relays(s, alertmanager_.url).start()
    keys = [f"10.1.0.{i}" for i in range(60)]
    start = _now() - dt.timedelta(seconds=70)
    incidents = {k: incident_samples.incident("ip", k, start, resolve=False) for k in keys}
    killed = False
    for i, key in enumerate(keys):
        incident_samples.publish(s, s.topic_alerts, incidents[key])
        time.sleep(0.05)
        if i == 20:
            assert webhook.wait_for(lambda w: len(w.received) >= 5, 30)
            assert relay.kill() == -signal.SIGKILL  # no clean shutdown, no last commit
            killed = True
        if i == 40:
            relay = relays(s, alertmanager_.url).start()
    assert killed
    assert webhook.wait_for(lambda w: all(w.notifications(key=k) for k in keys), 60), \
        [k for k in keys if not webhook.notifications(key=k)]
    time.sleep(5)  # any duplicate would have arrived by now
    counts = {k: len(webhook.notifications(key=k)) for k in keys}
    assert set(counts.values()) == {1}, {k: n for k, n in counts.items() if n != 1}
    assert {a["labels"]["key"] for a in alertmanager_.alerts(alertname="ChaussettesErrorRate")} == set(keys)
    relay.stop()
    log = relay.log.read_text()
    assert "rebuilt from" in log and "from offsets {0: 0}" not in log  # resumed from its commit


def test_alertmanager_down_for_a_minute_then_everything_is_delivered(relay_settings, alertmanager_, webhook,
                                                                      relays):
    # The default horizon (5 min): old per-window alerts are still open when Alertmanager is back.
    s = relay_settings.replace(relay_horizon_s=300)
    relay = relays(s, alertmanager_.url).start()
    alertmanager_.stop()
    start = _now() - dt.timedelta(seconds=70)
    keys = [f"/api/v{i}" for i in range(10)]
    for key in keys:  # critical: not inhibited by the global alert below
        incident_samples.publish(s, s.topic_alerts, incident_samples.incident("url", key, start, resolve=False,
                                                                              severities=("critical",)))
    incident_samples.publish(s, s.topic_alerts, samples.mixed_alerts(3))  # the old shape too
    time.sleep(60)
    assert relay.metric("chaussettes_relay_post_failures_total") >= 3
    assert relay.metric("chaussettes_relay_alertmanager_up") == 0
    assert relay.metric("chaussettes_relay_alerts_sent_total") == 0
    alertmanager_.start()
    assert webhook.wait_for(lambda w: all(w.notifications(key=k) for k in keys), 60), procs.tail(relay.log)
    assert webhook.wait_for(lambda w: w.notifications(kind="global"), 10)
    time.sleep(4)
    assert all(len(webhook.notifications(key=k)) == 1 for k in keys)
    assert relay.metric("chaussettes_relay_alertmanager_up") == 1
    assert relay.metric("chaussettes_relay_retries_total") >= 3
    assert "accepts alerts again" in relay.log.read_text()


def test_once_drains_the_topic_and_says_so(relay_settings, alertmanager_, relays, tmp_path):
    s = relay_settings
    start = _now() - dt.timedelta(seconds=70)
    incident_samples.publish(s, s.topic_alerts, incident_samples.incident("global", "*", start, resolve=False)
                             + incident_samples.incident("ip", "10.3.3.3", start) + [b"{}"])
    relay = relays(s, alertmanager_.url)
    run = _run(relay.argv("--once"), env=relay.env(), timeout=120)
    assert run.returncode == 0, run.stderr
    assert "notify: end of the topic: 4 records (1 not alerts)" in run.stderr
    assert [a["labels"]["kind"] for a in alertmanager_.alerts(alertname="ChaussettesErrorRate")] == ["global"]
    again = _run(relay.argv("--once"), env=relay.env(), timeout=120)
    assert "end of the topic: 0 records" in again.stderr  # committed: nothing re-read
    replay = _run(relay.argv("--once", "--from-beginning"), env=relay.env(), timeout=120)
    assert "end of the topic: 4 records" in replay.stderr


def test_command_line_errors_are_one_line(settings, tmp_path):
    env = {**os.environ, **settings.as_env()}
    base = [sys.executable, "-m", "chaussettes.notify", "--once"]
    bad_url = _run(base + ["--alertmanager", "127.0.0.1:9095"], env=env, timeout=60)
    assert bad_url.returncode == 2 and "expected an http:// or https:// URL" in bad_url.stderr
    missing = _run(base + ["--topic", f"missing-{uuid.uuid4().hex[:6]}"], env=env, timeout=60)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    down = {**env, "CHAUSSETTES_BOOTSTRAP_SERVERS": f"127.0.0.1:{procs.free_port()}",
            "CHAUSSETTES_KAFKA_TIMEOUT_S": "2"}
    no_kafka = _run(base, env=down, timeout=60)
    assert no_kafka.returncode == 1 and "did not answer within 2s" in no_kafka.stderr
    assert "Traceback" not in bad_url.stderr + missing.stderr + no_kafka.stderr

