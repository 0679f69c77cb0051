"""Incident events shaped by the detector's contract (DESIGN.md, "Alert events"), for the relay's
and the operations page's tests and the alerting benchmark: ``firing`` on the first breaching
window, ``escalated`` when the severity goes up, ``resolved`` after the last one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

SEVERITY_RATE = {"warning": 1.2, "major": 1.7, "critical": 2.5}  # error rate / threshold


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _id(*parts) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:20]


def incident(kind: str, key: str, first_window_start: dt.datetime, *,
             severities: tuple[str, ...] = ("warning",), resolve: bool = True, threshold: float = 0.5,
             length_s: int = 60, slide_s: int = 10, detected_at: dt.datetime | None = None,
             resolved_at: dt.datetime | None = None, requests: int = 200) -> list[dict]:
    """The events of one incident: one per severity reached (firing, then escalated), then resolved."""
    incident_id = _id(kind, key, _iso(first_window_start))
    events, peak = [], 0.0
    detected = detected_at or first_window_start + dt.timedelta(seconds=length_s)
    for i, severity in enumerate(severities):
        start = first_window_start + dt.timedelta(seconds=slide_s * i)
        rate = min(threshold * SEVERITY_RATE[severity], 1.0)
        peak = max(peak, rate)
        events.append(_event("firing" if i == 0 else "escalated", incident_id, kind, key, severity, start,
                             first_window_start, length_s, rate, threshold, peak, i + 1,
                             detected + dt.timedelta(seconds=slide_s * i), requests))
    if resolve:
        last = events[-1]
        resolved = resolved_at or dt.datetime.fromisoformat(last["detected_at"]) + dt.timedelta(seconds=3 * slide_s)
        ev = dict(last, event="resolved", alert_id=_id(incident_id, "resolved", last["severity"]),
                  detected_at=_iso(resolved), resolved_at=_iso(resolved))
        events.append(ev)
    return events


def _event(event, incident_id, kind, key, severity, window_start, first_window_start, length_s, rate,
           threshold, peak, windows, detected_at, requests) -> dict:
    errors = round(rate * requests)
    window_end = window_start + dt.timedelta(seconds=length_s)
    who = "all traffic" if kind == "global" else f"{kind} {key}"
    return {
        "event": event, "incident_id": incident_id, "alert_id": _id(incident_id, event, severity),
        "kind": kind, "key": key, "window_start": _iso(window_start), "window_end": _iso(window_end),
        "requests": requests, "errors": errors, "error_rate": errors / requests, "threshold": threshold,
        "severity": severity, "first_window_start": _iso(first_window_start), "last_window_end": _iso(window_end),
        "peak_error_rate": max(peak, errors / requests), "windows_breached": windows, "thresholds_version": 1,
        "detected_at": _iso(detected_at),
        "explanation": f"{who}: {errors}/{requests} requests failed ({errors / requests:.1%}) above the "
                       f"threshold {threshold:.1%}; top error statuses: 500 ({errors})",
    }


def publish(settings, topic: str, records: list, linger_ms: int = 5) -> None:
    """Produce records (dicts as JSON with key = alert_id; bytes as they are) onto topic."""
    from confluent_kafka import Producer

    producer = Producer(settings.kafka_client_config(**{"linger.ms": linger_ms}))
    for r in records:
        if isinstance(r, dict):
            producer.produce(topic, key=str(r.get("alert_id", "")).encode(), value=json.dumps(r).encode())
        else:
            producer.produce(topic, key=b"junk", value=r)
        producer.poll(0)
    assert producer.flush(30) == 0
