"""Incident events → Alertmanager alerts (chaussettes.notify.tracker), on the clock given."""

from __future__ import annotations

import datetime as dt

import incident_samples
from chaussettes.incident_events import parse_event
from chaussettes.notify.tracker import IncidentTracker, collapse
from chaussettes.ops import samples

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)


def tracker(**kw) -> IncidentTracker:
    return IncidentTracker(site="paris", horizon_s=300, open_max_s=3600,
                           ops_page_url="http://ops/plugin/chaussettes", **kw)


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_firing_then_escalation_then_resolution():
    tr = tracker()
    firing, escalated, resolved = (parse_event(e) for e in incident_samples.incident(
        "ip", "10.0.0.7", T0, severities=("warning", "major")))
    now = T0 + 70 * S
    [a] = tr.apply(firing, now)
    assert a["labels"] == {"alertname": "ChaussettesErrorRate", "kind": "ip", "key": "10.0.0.7",
                           "severity": "warning", "site": "paris"}
    assert t(a["startsAt"]) == T0 and t(a["endsAt"]) == now + 300 * S
    assert a["generatorURL"] == "http://ops/plugin/chaussettes"
    notes = a["annotations"]
    assert notes["summary"].startswith("ip 10.0.0.7: error rate 60.0% above its threshold 50.0% (warning)")
    assert notes["error_rate_vs_threshold"] == "60.0% vs 50.0% (1.20x)"
    assert notes["incident_id"] == firing.incident_id and notes["description"] == firing.explanation

    # Escalation: the warning label set is resolved now, the major one fires from the same start.
    now2 = now + 10 * S
    old, new = tr.apply(escalated, now2)
    assert old["labels"]["severity"] == "warning" and t(old["endsAt"]) == now2
    assert new["labels"]["severity"] == "major" and t(new["startsAt"]) == T0 and t(new["endsAt"]) > now2
    assert list(tr.open) == [firing.incident_id]

    # Resolution: the label set held (major) ends at the resolution time.
    now3 = resolved.resolved_at + 5 * S
    [done] = tr.apply(resolved, now3)
    assert done["labels"]["severity"] == "major" and t(done["endsAt"]) == resolved.resolved_at
    assert done["annotations"]["summary"].startswith("ip 10.0.0.7: resolved after 2 breaching window(s)")
    assert not tr.open and not tr.refresh(now3)


def test_refresh_keeps_open_incidents_alive_until_they_go_stale():
    tr = tracker()
    [firing] = (parse_event(e) for e in incident_samples.incident("url", "/pay", T0, resolve=False))
    tr.apply(firing, firing.detected_at)
    later = firing.detected_at + 1800 * S  # no event for 30 min: still open, refreshed
    [a] = tr.refresh(later)
    assert t(a["endsAt"]) == later + 300 * S and t(a["startsAt"]) == T0
    stale = firing.detected_at + 3601 * S  # past relay_open_max_s: no longer refreshed
    assert tr.refresh(stale) == [] and not tr.open


def test_resolution_of_an_incident_not_held_resolves_every_severity():
    tr = tracker()
    resolved = parse_event(incident_samples.incident("global", "*", T0, severities=("critical",))[-1])
    out = tr.apply(resolved, resolved.resolved_at)
    assert sorted(a["labels"]["severity"] for a in out) == ["critical", "major", "warning"]
    assert all(t(a["endsAt"]) == resolved.resolved_at for a in out)


def test_replayed_stale_firing_is_posted_already_resolved():
    tr = tracker()
    firing = parse_event(incident_samples.incident("ip", "10.0.0.1", T0, resolve=False)[0])
    [a] = tr.apply(firing, T0 + 2 * 3600 * S)  # read two hours later (a replay)
    assert t(a["endsAt"]) == firing.detected_at + 3600 * S < T0 + 2 * 3600 * S
    assert not tr.open


def test_old_per_window_alerts_one_identity_per_kind_and_key_never_refreshed():
    tr = tracker()
    w1 = parse_event(samples.make_alert("ip", "10.0.0.9", T0, errors=120, detected_at=T0 + 20 * S))  # warning
    w2 = parse_event(samples.make_alert("ip", "10.0.0.9", T0 + 10 * S, errors=200, detected_at=T0 + 30 * S))
    w3 = parse_event(samples.make_alert("ip", "10.0.0.9", T0 + 20 * S, errors=120, detected_at=T0 + 40 * S))
    [a1] = tr.apply(w1, T0 + 21 * S)
    assert t(a1["endsAt"]) == T0 + 320 * S and t(a1["startsAt"]) == T0
    old, a2 = tr.apply(w2, T0 + 31 * S)  # critical: the warning alert is replaced
    assert old["labels"]["severity"] == "warning" and a2["labels"]["severity"] == "critical"
    [a3] = tr.apply(w3, T0 + 41 * S)  # a lower window keeps the incident's highest severity
    assert a3["labels"]["severity"] == "critical" and t(a3["endsAt"]) == T0 + 340 * S
    assert t(a3["startsAt"]) == T0
    assert tr.refresh(T0 + 60 * S) == []  # refreshed by the next window only
    assert tr.open and tr.refresh(T0 + 341 * S) == [] and not tr.open  # expired: forgotten
    # After it expired, the next window of that key starts a new alert.
    w4 = parse_event(samples.make_alert("ip", "10.0.0.9", T0 + 400 * S, errors=120, detected_at=T0 + 420 * S))
    [a4] = tr.apply(w4, T0 + 421 * S)
    assert a4["labels"]["severity"] == "warning" and t(a4["startsAt"]) == T0 + 400 * S


def test_the_open_set_is_bounded_and_collapse_keeps_the_last_alert_per_label_set():
    tr = tracker(max_open=3)
    for i in range(5):
        tr.apply(parse_event(incident_samples.incident("ip", f"10.0.0.{i}", T0, resolve=False)[0]), T0 + 70 * S)
    assert [o.labels["key"] for o in tr.open.values()] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert tr.evicted == 2
    events = [parse_event(e) for e in incident_samples.incident("url", "/x", T0)]
    alerts = [a for ev in events for a in tr.apply(ev, events[-1].resolved_at)]
    [last] = collapse(alerts)
    assert t(last["endsAt"]) == events[-1].resolved_at
