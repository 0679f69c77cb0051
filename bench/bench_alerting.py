"""Alerts reach people (``make bench``): the relay and Alertmanager.

- relay throughput: ``BENCH_ALERTING_EVENTS`` (default 20,000) incident ``firing`` events, each
  its own incident, preloaded on a topic; ``Relay`` with ``once`` drains them into a real
  Alertmanager (Debian's, the shipped alertmanager.yml, its webhook a receiver in this
  process); alerts accepted per second from the relay's start to its last commit (start-up
  read and every POST included). Twice: breaches that started a moment ago (Alertmanager holds
  new groups for ``group_wait``), and a minute ago (it notifies every new group at once, while
  it ingests).
- breach → webhook latency: live traffic from the generator (``BENCH_ALERTING_RATE`` lines/s,
  default 2,000) with injected incidents (IP floods, URL outages, one global spike), the
  detector on its default 10 s trigger, the relay, Alertmanager with the shipped route
  (``group_wait`` 10 s, included) and a webhook receiver; time from each incident's start to
  the first notification of its group; p50 / p95 / max. The note splits it: the alert's
  arrival on ``alerts`` → the notification (relay + Alertmanager).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the webhook receiver, Alertmanager runner, event builder

GEN = [sys.executable, str(REPO / "jobs" / "generate_logs.py")]


def _alertmanager(ctx, name: str):
    import yaml
    from alerting_helpers import Alertmanager, WebhookReceiver, am_config

    webhook = WebhookReceiver()
    config = am_config(webhook.url, ctx.tmp / f"{name}.yml")
    group_wait = yaml.safe_load(config.read_text())["route"]["group_wait"]
    return Alertmanager(ctx.tmp / name, config).start(), webhook, group_wait


def _relay_run(ctx, n: int, started_ago_s: float) -> tuple[float, str]:
    """Relay n incident events (each its own incident, its breach started ``started_ago_s``
    ago) into a fresh Alertmanager; (alerts accepted per second, note)."""
    import incident_samples
    from chaussettes.notify.relay import Relay, RelayConfig

    manager, webhook, _ = _alertmanager(ctx, f"am-throughput-{started_ago_s:g}")
    try:
        topic = ctx.new_topic(1, "alerts")
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        start = now - dt.timedelta(seconds=started_ago_s)
        events = [incident_samples.incident("ip", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", start,
                                            detected_at=now, resolve=False)[0] for i in range(n)]
        incident_samples.publish(ctx.settings, topic, events, linger_ms=20)
        settings = ctx.settings.replace(topic_alerts=topic)
        relay = Relay(settings, RelayConfig(alertmanager_url=manager.url, topic=topic, once=True,
                                            progress_every_s=3600))
        t0 = time.perf_counter()
        stats = relay.run()
        elapsed = time.perf_counter() - t0
        held = len(manager.alerts(alertname="ChaussettesErrorRate"))
    finally:
        manager.stop()
        webhook.close()
    return stats.sent / elapsed, (f"{n:,} incident events -> {stats.sent:,} alerts accepted in {elapsed:.2f}s "
                                  f"({stats.batches} committed batches, Alertmanager holds {held:,}, "
                                  f"{stats.failed_posts} failed posts)")


def throughput(ctx) -> list[dict]:
    n = int(os.environ.get("BENCH_ALERTING_EVENTS", "20000"))
    # Live incidents: their breach started a moment ago, so Alertmanager holds each new group for
    # group_wait before notifying and ingests meanwhile.
    fresh, fresh_note = _relay_run(ctx, n, started_ago_s=1)
    # The same events a minute old: Alertmanager notifies each of the n new groups at once
    # (a group whose alert started more than group_wait ago is not held) while it ingests.
    old, old_note = _relay_run(ctx, n, started_ago_s=70)
    return [{"name": "relay throughput into Alertmanager", "value": round(fresh), "unit": "alerts/s",
             "goal": ">= 5000", "note": fresh_note + "; breaches started 1 s before"},
            {"name": "relay throughput, every incident notified at once", "value": round(old),
             "unit": "alerts/s", "goal": None,
             "note": old_note + "; breaches started 70 s before: Alertmanager sends one webhook per "
                                "group while it ingests"}]


def latency(ctx) -> list[dict]:
    from bench_detector import _detector, _stop
    from chaussettes.detector.pipeline import DetectorConfig, run_in_thread
    from chaussettes.notify.relay import Relay, RelayConfig
    from confluent_kafka import Consumer, TopicPartition

    rate = int(os.environ.get("BENCH_ALERTING_RATE", "2000"))
    extra = max(rate * 0.01, 15)
    incidents = [
        {"name": "flood-1", "kind": "ip_flood", "start": 20, "duration": 30, "entity": "198.51.100.7",
         "rate": extra, "error_rate": 0.9},
        {"name": "outage-1", "kind": "url_outage", "start": 55, "duration": 30, "entity": "/api/v1/checkout",
         "rate": extra, "error_rate": 0.9},
        {"name": "flood-2", "kind": "ip_flood", "start": 90, "duration": 30, "entity": "203.0.113.9",
         "rate": extra, "error_rate": 0.9},
        {"name": "outage-2", "kind": "url_outage", "start": 125, "duration": 30, "entity": "/api/v1/payments",
         "rate": extra, "error_rate": 0.9},
        # A site-wide spike, apart from the others (it inhibits the ip/url warnings while it fires).
        {"name": "spike", "kind": "error_spike", "start": 170, "duration": 25, "error_rate": 0.5},
    ]
    duration = 210
    base = ctx.tmp / "alerting-latency"
    base.mkdir(parents=True, exist_ok=True)
    (base / "scenario.json").write_text(json.dumps({"incidents": incidents}))
    topic, alerts_topic = ctx.new_topic(4), ctx.new_topic(1)
    settings = ctx.settings.replace(home=base / "home", topic_logs=topic, topic_alerts=alerts_topic)
    manager, webhook, group_wait = _alertmanager(ctx, "am-latency")
    arrivals: dict[tuple[str, str], float] = {}
    stop = threading.Event()

    def watch_alerts():
        c = Consumer(settings.kafka_client_config(**{"group.id": "bench-alerting", "enable.auto.commit": False,
                                                     "fetch.queue.backoff.ms": 0}))
        c.assign([TopicPartition(alerts_topic, 0, 0)])
        while not stop.is_set():
            for m in c.consume(100, 0.2):
                if not m.error():
                    a = json.loads(m.value())
                    arrivals.setdefault((a["kind"], a["key"]), m.timestamp()[1] / 1000)
        c.close()

    relay = Relay(settings, RelayConfig(alertmanager_url=manager.url, topic=alerts_topic, progress_every_s=3600))
    threads = [threading.Thread(target=relay.run, args=(stop,), daemon=True),
               threading.Thread(target=watch_alerts, daemon=True)]
    detector, status = _detector(ctx.spark(), settings, DetectorConfig(
        source="kafka", trigger="10s", checkpoint=base / "ckpt", topic=topic, alerts_topic=alerts_topic,
        max_offsets_per_trigger=None))
    thread, errors = run_in_thread(detector)
    try:
        for t in threads:
            t.start()
        gen = subprocess.run(GEN + ["--bootstrap-servers", settings.bootstrap_servers, "--topic", topic,
                                    "--rate", str(rate), "--duration", str(duration), "--seed", "8",
                                    "--error-rate", "0.05", "--scenario", str(base / "scenario.json"),
                                    "--labels", str(base / "labels.json"), "--quiet"],
                             capture_output=True, text=True, timeout=duration + 120, check=False)
        if gen.returncode != 0:
            raise RuntimeError(f"generator failed: {gen.stderr[-300:]}")
        time.sleep(30)  # the last incident's notification
    finally:
        _stop(detector, thread)
        status.close()
        stop.set()
        for t in threads:
            t.join(30)
        manager.stop()
        webhook.close()
    if errors:
        raise RuntimeError(f"the detector failed: {errors[0]}")
    labels = json.loads((base / "labels.json").read_text())["incidents"]
    end_to_end, relay_am, missed = [], [], []
    for inc in labels:
        key = (inc["alert_kind"], inc["entity"])
        start = dt.datetime.fromisoformat(inc["start"]).timestamp()
        got = [t for t, p in webhook.received if (p["groupLabels"].get("kind"), p["groupLabels"].get("key")) == key
               and p["status"] == "firing"]
        if not got:
            missed.append(inc["name"])
            continue
        end_to_end.append(min(got) - start)
        if key in arrivals:
            relay_am.append(min(got) - arrivals[key])

    def pct(values, p):
        values = sorted(values)
        return values[min(len(values) - 1, round(p * (len(values) - 1)))] if values else float("nan")

    note = (f"{rate:,} lines/s for {duration}s, {len(labels)} incidents, detector trigger 10s, Alertmanager "
            f"group_wait {group_wait} (included); per incident {', '.join(f'{x:.1f}' for x in end_to_end)} s; "
            f"of which alert on the topic -> notification {', '.join(f'{x:.1f}' for x in relay_am)} s"
            + (f"; not notified: {', '.join(missed)}" if missed else ""))
    return [
        {"name": "breach -> webhook latency p95", "value": round(pct(end_to_end, 0.95), 2), "unit": "s",
         "goal": "<= 30", "note": note},
        {"name": "breach -> webhook latency p50", "value": round(pct(end_to_end, 0.5), 2), "unit": "s",
         "goal": None, "note": None},
        {"name": "alert on topic -> webhook p95", "value": round(pct(relay_am, 0.95), 2), "unit": "s",
         "goal": None, "note": f"relay + Alertmanager, group_wait {group_wait} included"},
        {"name": "incidents notified", "value": round(len(end_to_end) / max(len(labels), 1), 3), "unit": "ratio",
         "goal": ">= 1", "note": f"{len(end_to_end)}/{len(labels)}"},
    ]


def run(ctx) -> list[dict]:
    results = []
    wanted = os.environ.get("BENCH_ALERTING_PARTS", "throughput,latency").replace(",", " ").split()
    for part in (p for p in (throughput, latency) if p.__name__ in wanted):
        try:
            results += part(ctx)
        except Exception as exc:  # noqa: BLE001 - one failing part must not hide the other
            results.append({"name": f"alerting {part.__name__}", "value": float("nan"), "unit": "",
                            "goal": None, "note": f"failed: {type(exc).__name__}: {exc}"[:300]})
    return results
