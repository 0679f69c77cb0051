"""Incident events → Alertmanager alerts, and the set of incidents the relay keeps open.

One Alertmanager alert per incident, identified (as Alertmanager does) by its labels:
``alertname=ChaussettesErrorRate``, ``kind``, ``key``, ``severity``, ``site``.

- **firing / escalated**: ``startsAt`` is the incident's first breaching window's start and
  ``endsAt`` a short horizon ahead (``relay_horizon_s``). The detector only publishes on a
  change, so the relay re-posts every open incident each ``relay_refresh_s`` (``refresh``):
  Alertmanager resolves an incident on its own only when nothing refreshes it any more.
- **severity only goes up**: the label is the highest severity the incident reached. A higher
  one changes the label set, so the relay *resolves the previous label set* (``endsAt`` now)
  in the same post as it fires the new one; both are in the same Alertmanager group (grouped
  by ``kind`` and ``key``), whose next notification shows the new severity firing and the
  old one resolved.
- **resolved**: ``endsAt`` = the resolution time (never later than now), for the label set
  the relay holds; an incident it does not hold is resolved at every severity (Alertmanager
  does not notify a resolution of an alert it never notified).
- **an old per-window alert** (no ``event``) has no incident: its identity is kind + key. It
  fires with ``endsAt`` = its detection + the horizon and is refreshed only by the next
  window's alert, so it resolves on its own a horizon after the last breaching window. It
  is never re-posted by ``refresh``.
- **bounds**: an incident with no event for ``relay_open_max_s`` is no longer refreshed (so
  a detector whose state was lost cannot leave it open for ever); at most ``max_open``
  incidents are kept (the least recently updated go first, and resolve in Alertmanager a
  horizon later).

Pure: the caller passes ``now``.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from chaussettes.alertmanager import ERROR_RATE_ALERT, rfc3339
from chaussettes.incident_events import SEVERITY_RANK, IncidentEvent, higher

MAX_OPEN = 50_000


@dataclass
class Tracked:
    labels: dict[str, str]
    starts_at: dt.datetime
    annotations: dict[str, str]
    last_event_at: dt.datetime
    legacy: bool
    expires_at: dt.datetime | None = None  # legacy only: its endsAt


def fingerprint(alert: dict) -> tuple:
    """Alertmanager's identity of an alert: its label set."""
    return tuple(sorted(alert["labels"].items()))


def collapse(alerts: Iterable[dict]) -> list[dict]:
    """One alert per label set, the last one winning (what Alertmanager would keep)."""
    out: dict[tuple, dict] = {}
    for a in alerts:
        out[fingerprint(a)] = a
    return list(out.values())


class IncidentTracker:
    def __init__(self, *, site: str, horizon_s: float, open_max_s: float, ops_page_url: str = "",
                 max_open: int = MAX_OPEN):
        self.site = site
        self.horizon = dt.timedelta(seconds=horizon_s)
        self.open_max = dt.timedelta(seconds=open_max_s)
        self.ops_page_url = ops_page_url
        self.max_open = max_open
        self.open: OrderedDict[str, Tracked] = OrderedDict()
        self.evicted = 0

    # ------------------------------------------------------------------ mapping
    def labels(self, kind: str, key: str, severity: str) -> dict[str, str]:
        return {"alertname": ERROR_RATE_ALERT, "kind": kind, "key": key, "severity": severity,
                "site": self.site}

    def annotations(self, ev: IncidentEvent, severity: str) -> dict[str, str]:
        who = "all traffic" if ev.kind == "global" else f"{ev.kind} {ev.key}"
        ratio = ev.error_rate / ev.threshold if ev.threshold else float("inf")
        if ev.event == "resolved":
            summary = (f"{who}: resolved after {ev.windows_breached} breaching window(s); "
                       f"peak error rate {ev.peak_error_rate:.1%} (threshold {ev.threshold:.1%})")
        else:
            summary = (f"{who}: error rate {ev.error_rate:.1%} above its threshold {ev.threshold:.1%} "
                       f"({severity})")
        out = {
            "summary": summary,
            "description": ev.explanation or summary,
            "error_rate": f"{ev.error_rate:.4f}",
            "threshold": f"{ev.threshold:.4f}",
            "error_rate_vs_threshold": f"{ev.error_rate:.1%} vs {ev.threshold:.1%} ({ratio:.2f}x)",
            "peak_error_rate": f"{ev.peak_error_rate:.4f}",
            "windows_breached": str(ev.windows_breached),
            "window": f"{rfc3339(ev.window_start)} .. {rfc3339(ev.window_end)}",
            "event": ev.event,
            "incident_id": ev.incident_id or "",
            "alert_id": ev.alert_id,
        }
        if ev.thresholds_version is not None:
            out["thresholds_version"] = str(ev.thresholds_version)
        if self.ops_page_url:
            out["ops_page"] = self.ops_page_url
        return out

    def _alert(self, labels: dict, starts: dt.datetime, ends: dt.datetime, annotations: dict) -> dict:
        alert = {"labels": labels, "annotations": annotations, "startsAt": rfc3339(starts),
                 "endsAt": rfc3339(max(ends, starts))}
        if self.ops_page_url:
            alert["generatorURL"] = self.ops_page_url
        return alert

    # ------------------------------------------------------------------ events
    def apply(self, ev: IncidentEvent, now: dt.datetime) -> list[dict]:
        """The alerts to post for one event (and the open set updated)."""
        ident = ev.incident_id or f"{ev.kind}|{ev.key}"
        cur = self.open.get(ident)
        if cur is not None and cur.expires_at is not None and cur.expires_at <= now:
            cur = None  # a legacy alert that already resolved in Alertmanager
        if ev.event == "resolved":
            self.open.pop(ident, None)
            ends = min(ev.resolved_at or now, now)
            if cur is not None:
                starts, held = cur.starts_at, [cur.labels]
            else:
                starts = ev.first_window_start
                held = [self.labels(ev.kind, ev.key, s) for s in SEVERITY_RANK]
            notes = self.annotations(ev, cur.labels["severity"] if cur else ev.severity)
            return [self._alert(labels, starts, ends, notes) for labels in held]

        out = []
        severity = higher(ev.severity, cur.labels["severity"] if cur else None)
        starts = min(cur.starts_at, ev.first_window_start) if cur else ev.first_window_start
        labels = self.labels(ev.kind, ev.key, severity)
        notes = self.annotations(ev, severity)
        if cur is not None and cur.labels["severity"] != severity:
            out.append(self._alert(cur.labels, cur.starts_at, now, cur.annotations))  # replaced
        last = max(ev.detected_at, cur.last_event_at) if cur else ev.detected_at
        if ev.legacy:
            ends = ev.detected_at + self.horizon
        elif now - last <= self.open_max:
            ends = now + self.horizon
        else:  # stale (a replay of an incident never resolved): resolved where refresh would stop
            ends = last + self.open_max
        if ends > now:
            self.open[ident] = Tracked(labels, starts, notes, last, ev.legacy, ends if ev.legacy else None)
            self.open.move_to_end(ident)
            while len(self.open) > self.max_open:
                self.open.popitem(last=False)
                self.evicted += 1
        else:
            self.open.pop(ident, None)
        out.append(self._alert(labels, starts, ends, notes))
        return out

    def refresh(self, now: dt.datetime) -> list[dict]:
        """Re-post every open incident with a new horizon; drop what expired or went stale."""
        out = []
        for ident, t in list(self.open.items()):
            if t.legacy:
                if t.expires_at <= now:
                    del self.open[ident]
            elif now - t.last_event_at > self.open_max:
                del self.open[ident]
            else:
                out.append(self._alert(t.labels, t.starts_at, now + self.horizon, t.annotations))
        return out
