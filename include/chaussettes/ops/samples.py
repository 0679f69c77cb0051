"""Alerts and detector status documents shaped by the contracts (``schemas.ALERT_FIELDS``,
``schemas.STATUS_KEYS`` + ``recent_global_windows``), for the operations page's tests,
benchmark and demo when no detector is running. Publishing goes to a real topic.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from pathlib import Path

from chaussettes import atomicfile
from chaussettes.schemas import ALERT_COLUMNS


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_alert(kind: str, key: str, window_start: dt.datetime, *, length_s: int = 60,
               requests: int = 200, errors: int = 120, threshold: float = 0.5,
               thresholds_version: int = 1, detected_at: dt.datetime | None = None) -> dict:
    """An alert built by the detector's own builder (``chaussettes.detector.alerts``)."""
    from chaussettes.detector.alerts import build_alert

    tops = {"url": [("/login", errors // 2), ("/api/cart", errors // 4)],
            "ip": [("10.0.0.7", errors // 3)], "status": [("500", errors * 2 // 3), ("404", errors // 3)]}
    alert = build_alert(kind=kind, key=key, window_start=window_start,
                        window_end=window_start + dt.timedelta(seconds=length_s),
                        requests=requests, errors=errors, threshold=threshold,
                        thresholds_version=thresholds_version,
                        detected_at=detected_at or window_start + dt.timedelta(seconds=length_s + 30),
                        tops=tops)
    assert tuple(alert) == ALERT_COLUMNS
    return alert


def mixed_alerts(n: int, now: dt.datetime | None = None, slide_s: int = 10) -> list[dict]:
    """n alerts, oldest first, one window slide apart, ending now; kinds global/ip/url in turn."""
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    out = []
    for i in range(n):
        start = now - dt.timedelta(seconds=90 + slide_s * (n - 1 - i))
        kind = ("global", "ip", "url")[i % 3]
        key = {"global": "*", "ip": f"10.0.{i % 7}.{i % 11}", "url": f"/api/item/{i % 5}"}[kind]
        errors = 60 + (i * 37) % 140
        out.append(make_alert(kind, key, start, requests=200, errors=errors,
                              threshold={"global": 0.2, "ip": 0.5, "url": 0.5}[kind],
                              detected_at=start + dt.timedelta(seconds=90)))
    return out


def publish(settings, alerts: Iterable[dict], topic: str | None = None, linger_ms: int = 20) -> int:
    """Produce alerts (key = alert_id) onto the alerts topic; returns how many.

    ``linger_ms=0`` sends one record per batch (exact high watermarks, even on Tansu)."""
    from confluent_kafka import Producer

    producer = Producer(settings.kafka_client_config(**{"linger.ms": linger_ms,
                                                        "batch.num.messages": 10000 if linger_ms else 1,
                                                        "queue.buffering.max.messages": 200000}))
    count = 0
    for alert in alerts:
        producer.produce(topic or settings.topic_alerts, key=alert["alert_id"],
                         value=json.dumps(alert).encode())
        count += 1
        if count % 20000 == 0:
            producer.poll(0)
    left = producer.flush(30)
    if left:
        raise RuntimeError(f"{left} alerts not delivered to {settings.bootstrap_servers}")
    return count


def global_windows(n: int, now: dt.datetime | None = None, slide_s: int = 10,
                   threshold: float = 0.2) -> list[dict]:
    """n global windows, oldest first, with a breach around two thirds of the way."""
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    out = []
    for i in range(n):
        start = now - dt.timedelta(seconds=60 + slide_s * (n - 1 - i))
        requests = 1000 + 10 * i
        errors = int(requests * (0.05 + 0.03 * ((i * 7) % 5) + (0.25 if n * 2 // 3 <= i < n * 2 // 3 + 4 else 0)))
        out.append({"window_start": _iso(start), "window_end": _iso(start + dt.timedelta(seconds=60)),
                    "requests": requests, "errors": errors, "error_rate": errors / requests,
                    "threshold": threshold})
    return out


def status_doc(*, state: str = "running", updated_at: dt.datetime | None = None, pid: int | None = None,
               windows: list[dict] | None = None, thresholds_version: int = 1,
               topic: str = "http-logs") -> dict:
    now = updated_at or dt.datetime.now(dt.UTC)
    return {
        "state": state, "pid": os.getpid() if pid is None else pid,
        "started_at": _iso(now - dt.timedelta(minutes=30)), "updated_at": _iso(now),
        "batch_id": 181, "input_rows": 42000, "input_rows_per_s": 4200.0, "processed_rows_per_s": 15100.5,
        "end_offsets": {topic: {"0": 250000, "1": 251200}}, "lag": {topic: {"0": 12, "1": 0}},
        "total_lag": 12, "thresholds_version": thresholds_version,
        "thresholds_source": f"artifacts/thresholds/v{thresholds_version}/seuils.json",
        "thresholds_error": None, "quarantined_total": 37, "alerts_published_total": 96,
        "alerts_last_batch": 2, "error": None,
        "recent_global_windows": windows if windows is not None else global_windows(60, now),
    }


def write_status(settings, doc: dict) -> Path:
    """Write a status document where the detector would (atomically, as it does)."""
    return atomicfile.write_json(settings.detector_status_path, doc)
