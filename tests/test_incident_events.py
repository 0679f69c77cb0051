"""Reading the alerts topic as incident events (both shapes) and folding them into incidents."""

from __future__ import annotations

import datetime as dt
import json

import incident_samples
import pytest
from chaussettes.incident_events import InvalidRecord, fold_incidents, parse_event
from chaussettes.ops import samples

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def test_incident_events_are_read_with_their_incident():
    events = incident_samples.incident("ip", "10.0.0.7", T0, severities=("warning", "critical"))
    parsed = [parse_event(json.dumps(e).encode()) for e in events]
    assert [p.event for p in parsed] == ["firing", "escalated", "resolved"]
    assert {p.incident_id for p in parsed} == {events[0]["incident_id"]}
    assert [p.severity for p in parsed] == ["warning", "critical", "critical"]
    assert parsed[0].first_window_start == T0 and not parsed[0].legacy
    assert parsed[2].resolved_at == dt.datetime.fromisoformat(events[2]["resolved_at"])
    assert parsed[1].peak_error_rate == pytest.approx(events[1]["error_rate"])


def test_an_old_per_window_alert_is_a_firing_event_without_incident():
    alert = samples.make_alert("url", "/api/x", T0, requests=100, errors=90, threshold=0.5)
    ev = parse_event(alert)
    assert ev.event == "firing" and ev.legacy and ev.incident_id is None
    assert (ev.first_window_start, ev.last_window_end) == (T0, T0 + dt.timedelta(seconds=60))
    assert ev.windows_breached == 1 and ev.peak_error_rate == pytest.approx(0.9)
    assert ev.severity == "major" and ev.detected_at == dt.datetime.fromisoformat(alert["detected_at"])


@pytest.mark.parametrize("record, reason", [
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object but list"),
    ({"kind": "ip"}, "key is missing"),
    ({"kind": "host", "key": "x"}, "kind 'host' is not one of global, ip, url"),
    ("EVENT", "not JSON"),
    ("MISSING_INCIDENT", "a firing event without an incident_id"),
    ("BAD_EVENT", "event 'reopened' is not one of firing, escalated, resolved"),
    ("BAD_RATE", "error_rate is not a number: 'high'"),
    ("BAD_TIME", "window_start is not an ISO-8601 time: 'yesterday'"),
    ("BAD_SEVERITY", "severity 'urgent' is not one of warning, major, critical"),
])
def test_what_is_not_an_alert_says_why(record, reason):
    good = incident_samples.incident("ip", "10.0.0.7", T0)[0]
    broken = {
        "MISSING_INCIDENT": {**good, "incident_id": None},
        "BAD_EVENT": {**good, "event": "reopened"},
        "BAD_RATE": {**good, "error_rate": "high"},
        "BAD_TIME": {**good, "window_start": "yesterday"},
        "BAD_SEVERITY": {**good, "severity": "urgent"},
    }
    with pytest.raises(InvalidRecord, match=reason.replace("(", r"\(").replace("[", r"\[")):
        parse_event(broken.get(record, record) if isinstance(record, str) else record)


def test_incidents_open_first_then_resolved_newest_first():
    now = T0 + dt.timedelta(minutes=30)
    events = (incident_samples.incident("ip", "10.0.0.1", T0, severities=("warning", "major", "critical"),
                                        resolve=False)
              + incident_samples.incident("url", "/a", T0 + dt.timedelta(minutes=5), resolve=False)
              + incident_samples.incident("global", "*", T0 + dt.timedelta(minutes=1), severities=("major",))
              + incident_samples.incident("url", "/b", T0 + dt.timedelta(minutes=9)))
    legacy_open = samples.make_alert("ip", "10.9.9.9", now - dt.timedelta(seconds=30), errors=120)
    legacy_done = samples.make_alert("ip", "10.8.8.8", T0, errors=120)
    parsed = [parse_event(e) for e in reversed(events + [legacy_open, legacy_done])]  # any order
    incidents = fold_incidents(parsed, now)
    assert [(i["kind"], i["key"], i["state"]) for i in incidents] == [
        ("ip", "10.0.0.1", "open"),  # critical first
        ("url", "/a", "open"),  # then warnings, oldest first
        ("ip", "10.9.9.9", "open"),  # an old alert whose window is still open
        ("url", "/b", "resolved"),  # newest resolution first
        ("global", "*", "resolved"),
        ("ip", "10.8.8.8", "resolved"),
    ]
    first = incidents[0]
    assert first["severity"] == "critical" and first["windows_breached"] == 3 and first["events"] == 3
    assert first["started_at"] == T0 and first["duration_s"] == 1800.0
    assert first["peak_error_rate"] == pytest.approx(max(e["error_rate"] for e in events[:3]))
    done = incidents[4]
    assert done["resolved_at"] == dt.datetime.fromisoformat(events[5]["resolved_at"])
    assert done["duration_s"] == (done["resolved_at"] - done["started_at"]).total_seconds()
    assert incidents[5]["legacy"] and incidents[5]["windows_breached"] == 1
