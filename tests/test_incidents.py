"""chaussettes.incidents: breaching windows become incidents (firing once, escalated once
per level, resolved once), with hysteresis, and the same events however the windows are
cut into batches."""

from __future__ import annotations

import pandas as pd
from chaussettes import incidents as I

L, S, R = 60, 10, 3


def windows(rows):
    """rows: (key, window_start, requests, errors, level); breach when level > 0."""
    df = pd.DataFrame(rows, columns=["key", "window_start", "requests", "errors", "level"])
    df["window_end"] = df["window_start"] + L
    df["error_rate"] = df["errors"] / df["requests"]
    df["threshold"] = 0.5
    df["breach"] = df["level"] > 0
    return df


def run(batches, watermarks, book=None):
    """Feed batches of window rows, each followed by a watermark; return every event."""
    book = book or I.IncidentBook("ip", L, S, R)
    events = []
    for rows, wm in zip(batches, watermarks, strict=True):
        events += book.resolve_due(wm[0])
        df = windows(rows)
        events += book.apply(df)
        book.saw_traffic({k: int(g["window_start"].max()) + L - S for k, g in df.groupby("key")})
        events += book.resolve_due(wm[1])
    return events, book


FLOOD = [("1.2.3.4", 100, 40, 22, 1), ("1.2.3.4", 110, 40, 31, 2), ("1.2.3.4", 120, 40, 30, 2),
         ("1.2.3.4", 130, 40, 5, 0), ("1.2.3.4", 140, 40, 4, 0), ("1.2.3.4", 150, 40, 3, 0),
         ("1.2.3.4", 160, 40, 1, 0)]


def test_flood_fires_once_escalates_once_resolves_once():
    events, book = run([FLOOD], [(None, 10_000)])
    assert [e["event"] for e in events] == ["firing", "escalated", "resolved"]
    firing, escalated, resolved = events
    assert firing["severity"] == "warning" and escalated["severity"] == "major"
    assert firing["incident_id"] == escalated["incident_id"] == resolved["incident_id"] == \
        I.incident_id("ip", "1.2.3.4", 100)
    assert len({e["alert_id"] for e in events}) == 3
    assert resolved["windows_breached"] == 3 and resolved["window_start"] == "1970-01-01T00:02:00Z"
    assert resolved["peak_error_rate"] == 31 / 40
    # resolved when three windows after the last breaching one (start 120) are closed
    assert resolved["resolved_at"] == I._iso(120 + R * S + L)
    assert not book.open


def test_same_events_however_the_windows_are_cut():
    whole, _ = run([FLOOD], [(None, 10_000)])
    cut, _ = run([FLOOD[:1], FLOOD[1:3], FLOOD[3:]], [(None, 100), (100, 150), (150, 10_000)])
    assert [(e["alert_id"], e["event"]) for e in cut] == [(e["alert_id"], e["event"]) for e in whole]


def test_a_rate_hovering_at_the_threshold_keeps_one_incident():
    rows = [("k", 100 + 10 * i, 40, 21 if i % 3 == 0 else 19, 1 if i % 3 == 0 else 0) for i in range(30)]
    batches = [rows[i:i + 2] for i in range(0, 30, 2)]
    marks = [(None if i == 0 else 100 + 10 * i, 100 + 10 * i) for i in range(0, 30, 2)]
    events, book = run(batches, marks)
    assert [e["event"] for e in events] == ["firing"]
    assert len(book.open["k"].breached) == 10


def test_no_traffic_resolves_after_a_window_length_and_a_new_breach_is_a_new_incident():
    book = I.IncidentBook("url", L, S, R)
    events = book.apply(windows([("/a", 100, 20, 20, 3)]))
    book.saw_traffic({"/a": 100})  # the only slide with requests: [100, 110)
    assert [e["event"] for e in events] == ["firing"] and events[0]["severity"] == "critical"
    assert book.next_deadline() == 110 + L  # silence comes before the clear-run rule (100 + 30 + 60)
    assert book.resolve_due(110 + L - 1) == []
    resolved = book.resolve_due(110 + L)
    assert [e["event"] for e in resolved] == ["resolved"] and resolved[0]["resolved_at"] == I._iso(170)
    again = book.apply(windows([("/a", 400, 20, 20, 3)]))
    assert again[0]["event"] == "firing" and again[0]["incident_id"] != events[0]["incident_id"]


def test_records_round_trip():
    book = I.IncidentBook("ip", L, S, R)
    book.apply(windows(FLOOD[:2]))
    copy = I.IncidentBook.from_records("ip", L, S, R, book.to_records())
    assert copy.to_records() == book.to_records()
    assert copy.apply(windows(FLOOD[2:3])) == book.apply(windows(FLOOD[2:3])) == []
