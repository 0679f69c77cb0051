"""Incidents: consecutive breaching windows of one (kind, key) are one incident.

The life of an incident, as events (what the detector publishes on ``alerts``):

- ``firing``, once, as soon as a window of the key breaches (while it is still open) and
  the key has no open incident. The incident's id comes from (kind, key, that window's
  start), so a replay finds the same one.
- ``escalated`` when a breaching window's severity is above every severity the incident
  has published so far: at most once per level.
- ``resolved``, once, when the watermark has closed ``resolve_after`` windows in a row
  after the last breaching one with no breach among them (a rate that hovers at the
  threshold keeps one incident open instead of flapping), or when the key has had no
  traffic for a window length, whichever comes first. Both are facts of event time, so
  the moment — ``resolved_at``, the event time at which it became true — does not depend
  on when or how the input was cut into micro-batches.

``IncidentBook`` holds the open incidents of one key group and is pure: the detector's
stateful step (``detector.stateful``) keeps it in Spark's state store and the quality
benchmark replays windows through it. An event's ``alert_id`` comes from (incident,
event, severity): one incident never publishes the same event twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from chaussettes.judge import LEVELS


def _iso(seconds: int) -> str:
    from chaussettes.detector.alerts import iso

    return iso(seconds)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def incident_id(kind: str, key: str, first_window_start: int) -> str:
    return _digest(f"{kind}|{key}|{_iso(first_window_start)}")


def event_id(incident: str, event: str, severity: str) -> str:
    return _digest(f"{incident}|{event}|{severity}")


@dataclass
class Incident:
    """An open incident (epoch seconds; ``window``: its last breaching window)."""

    kind: str
    key: str
    incident_id: str
    first_window_start: int
    last_window_start: int
    last_window_end: int
    peak_error_rate: float
    breached: list[int]  # starts of the windows that breached (distinct, sorted)
    level: int  # the highest severity published (index in judge.LEVELS)
    last_traffic_end: int  # end of the last slide with a request of this key
    window: dict[str, Any] = field(default_factory=dict)

    def deadline(self, slide_s: int, length_s: int, resolve_after: int) -> int:
        """The event time at which it resolves if nothing breaches before."""
        clear = self.last_window_start + resolve_after * slide_s + length_s
        return min(clear, self.last_traffic_end + length_s)

    def event(self, name: str, window: dict[str, Any], level: int, **extra) -> dict[str, Any]:
        severity = LEVELS[level]
        return {
            "event": name, "incident_id": self.incident_id,
            "alert_id": event_id(self.incident_id, name, severity),
            "kind": self.kind, "key": self.key,
            "window_start": _iso(window["window_start"]), "window_end": _iso(window["window_end"]),
            "requests": int(window["requests"]), "errors": int(window["errors"]),
            "error_rate": float(window["error_rate"]), "threshold": float(window["threshold"]),
            "severity": severity,
            "first_window_start": _iso(self.first_window_start), "last_window_end": _iso(self.last_window_end),
            "peak_error_rate": float(self.peak_error_rate), "windows_breached": len(self.breached),
            **extra,
        }


class IncidentBook:
    """The open incidents of one kind's keys (a key group), and the rules that change them."""

    def __init__(self, kind: str, length_s: int, slide_s: int, resolve_after: int,
                 open_incidents: dict[str, Incident] | None = None):
        self.kind = kind
        self.length_s, self.slide_s, self.resolve_after = int(length_s), int(slide_s), int(resolve_after)
        self.open: dict[str, Incident] = dict(open_incidents or {})

    # ---- persistence (the state store keeps the open incidents as rows of JSON)
    def to_records(self) -> list[dict[str, Any]]:
        return [asdict(i) for i in self.open.values()]

    @classmethod
    def from_records(cls, kind: str, length_s: int, slide_s: int, resolve_after: int,
                     records: list[dict[str, Any]]) -> IncidentBook:
        return cls(kind, length_s, slide_s, resolve_after, {r["key"]: Incident(**r) for r in records})

    # ---- rules
    def next_deadline(self) -> int | None:
        return min((i.deadline(self.slide_s, self.length_s, self.resolve_after) for i in self.open.values()),
                   default=None)

    def resolve_due(self, watermark: float | None) -> list[dict[str, Any]]:
        """``resolved`` for every open incident whose deadline the watermark has passed."""
        if watermark is None:
            return []
        out = []
        for key in sorted(self.open):
            inc = self.open[key]
            due = inc.deadline(self.slide_s, self.length_s, self.resolve_after)
            if due <= watermark:
                out.append(inc.event("resolved", inc.window, inc.level, resolved_at=_iso(due)))
                del self.open[key]
        return out

    def saw_traffic(self, last_bucket_start: dict[str, int]) -> None:
        """Keys of open incidents had requests in slides starting at these times."""
        for key, start in last_bucket_start.items():
            inc = self.open.get(key)
            if inc is not None:
                inc.last_traffic_end = max(inc.last_traffic_end, int(start) + self.slide_s)

    def apply(self, windows) -> list[dict[str, Any]]:
        """Events of this batch's judged windows: a pandas DataFrame with key, window_start,
        window_end, requests, errors, error_rate, threshold, breach and level (one row per
        (key, window) the batch changed). Only breaching rows matter here."""
        hits = windows[windows["breach"]]
        if hits.empty:
            return []
        hits = hits.sort_values(["key", "window_start"], kind="stable")
        out = []
        for key, rows in hits.groupby("key", sort=True):
            records = rows.to_dict("records")
            inc = self.open.get(key)
            if inc is None:
                first = records[0]
                start = int(first["window_start"])
                inc = Incident(kind=self.kind, key=key, incident_id=incident_id(self.kind, key, start),
                               first_window_start=start, last_window_start=start,
                               last_window_end=int(first["window_end"]), peak_error_rate=0.0, breached=[],
                               level=int(first["level"]),
                               # at least the window's first slide had requests; saw_traffic
                               # (called with every batch's slides) says which was the last
                               last_traffic_end=start + self.slide_s)
                self._extend(inc, records)
                out.append(inc.event("firing", _window(first), inc.level))
                self.open[key] = inc
            else:
                self._extend(inc, records)
            top = max(records, key=lambda r: (int(r["level"]), -int(r["window_start"])))
            if int(top["level"]) > inc.level:
                inc.level = int(top["level"])
                out.append(inc.event("escalated", _window(top), inc.level))
        return out

    @staticmethod
    def _extend(inc: Incident, records: list[dict[str, Any]]) -> None:
        starts = set(inc.breached)
        for r in records:
            start = int(r["window_start"])
            starts.add(start)
            inc.peak_error_rate = max(inc.peak_error_rate, float(r["error_rate"]))
            if start >= inc.last_window_start:
                inc.last_window_start = start
                inc.last_window_end = int(r["window_end"])
                inc.window = _window(r)
        inc.breached = sorted(starts)


def _window(row: dict[str, Any]) -> dict[str, Any]:
    return {"window_start": int(row["window_start"]), "window_end": int(row["window_end"]),
            "requests": int(row["requests"]), "errors": int(row["errors"]),
            "error_rate": float(row["error_rate"]), "threshold": float(row["threshold"]),
            "level": int(row["level"])}
