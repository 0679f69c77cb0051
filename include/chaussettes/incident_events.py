"""What the detector publishes on ``alerts``, read back as incident events — both shapes
(the rules that make the events are ``chaussettes.incidents``).

Since the incident work the detector publishes one record per incident *event*: ``event``
(``firing`` | ``escalated`` | ``resolved``), ``incident_id``, ``alert_id`` (unique per event),
``kind``, ``key``, the breaching window (``window_start``, ``window_end``, ``requests``,
``errors``, ``error_rate``, ``threshold``, ``severity``), the incident so far
(``first_window_start``, ``last_window_end``, ``peak_error_rate``, ``windows_breached``),
``thresholds_version``, ``detected_at``, ``explanation``, and ``resolved_at`` on a resolution.
The older records have no ``event``: one per breaching window (``schemas.ALERT_COLUMNS``),
read as a ``firing`` event with no incident (``legacy``).

``parse_event`` turns one record into an ``IncidentEvent`` or raises ``InvalidRecord`` with a
one-line reason; ``fold_incidents`` turns events into incidents (what the operations page
shows). Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chaussettes import schemas
from chaussettes.judge import SEVERITIES
from chaussettes.schemas import ALERT_KINDS

EVENTS = schemas.INCIDENT_EVENTS
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES, start=1)}


class InvalidRecord(ValueError):
    """A record on ``alerts`` that is not an alert; the message says why, in one line."""


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO-8601 string (``Z`` or an offset; naive = UTC) or epoch seconds → aware UTC
    datetime; None when absent or not a time."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        t = dt.datetime.fromisoformat(str(value).strip())  # 3.11 reads "Z"
    except (ValueError, OverflowError, OSError):
        return None
    return t.astimezone(dt.UTC) if t.tzinfo else t.replace(tzinfo=dt.UTC)


def higher(a: str | None, b: str | None) -> str | None:
    """The more severe of two severities (None counts as below warning)."""
    return a if SEVERITY_RANK.get(a or "", 0) >= SEVERITY_RANK.get(b or "", 0) else b


@dataclass(frozen=True)
class IncidentEvent:
    event: str  # firing | escalated | resolved
    kind: str
    key: str
    severity: str
    alert_id: str
    incident_id: str | None  # None: an old per-window alert
    window_start: dt.datetime
    window_end: dt.datetime
    error_rate: float
    threshold: float
    detected_at: dt.datetime
    first_window_start: dt.datetime
    last_window_end: dt.datetime
    peak_error_rate: float
    windows_breached: int
    requests: int | None = None
    errors: int | None = None
    resolved_at: dt.datetime | None = None
    thresholds_version: int | None = None
    explanation: str = ""
    extra: dict = field(default_factory=dict, compare=False)  # where it was read (partition, offset)

    @property
    def legacy(self) -> bool:
        return self.incident_id is None

    @property
    def at(self) -> dt.datetime:
        """When the event happened: its resolution time, else its detection time."""
        return self.resolved_at or self.detected_at


def _number(doc: Mapping, name: str, kind=float, required: bool = True):
    value = doc.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecord(f"{name} is not a number: {value!r}"[:200])
    if kind is int:
        return int(value)
    value = float(value)
    if math.isnan(value):
        raise InvalidRecord(f"{name} is NaN")
    return value


def _time(doc: Mapping, name: str, required: bool = True) -> dt.datetime | None:
    value = doc.get(name)
    t = parse_time(value) if isinstance(value, str) else None
    if t is None and required:
        raise InvalidRecord(f"{name} is not an ISO-8601 time: {doc.get(name)!r}"[:200])
    return t


def parse_event(record: bytes | str | Mapping) -> IncidentEvent:
    """One record of ``alerts`` (its JSON value, or the decoded object) → ``IncidentEvent``."""
    if isinstance(record, (bytes, bytearray, str)):
        try:
            doc = json.loads(record)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidRecord(f"not JSON ({exc})") from None
    else:
        doc = record
    if not isinstance(doc, Mapping):
        raise InvalidRecord(f"not a JSON object but {type(doc).__name__}")
    event = doc.get("event", "firing")
    if event not in EVENTS:
        raise InvalidRecord(f"event {event!r} is not one of {', '.join(EVENTS)}"[:200])
    kind = doc.get("kind")
    if kind not in ALERT_KINDS:
        raise InvalidRecord(f"kind {kind!r} is not one of {', '.join(ALERT_KINDS)}"[:200])
    key, alert_id = doc.get("key"), doc.get("alert_id")
    if not isinstance(key, str) or not key:
        raise InvalidRecord(f"key is missing or not a string: {key!r}"[:200])
    if not isinstance(alert_id, str) or not alert_id:
        raise InvalidRecord(f"alert_id is missing or not a string: {alert_id!r}"[:200])
    severity = doc.get("severity")
    if severity not in SEVERITY_RANK:
        raise InvalidRecord(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}"[:200])
    legacy = "event" not in doc
    incident_id = None if legacy else doc.get("incident_id")
    if not legacy and (not isinstance(incident_id, str) or not incident_id):
        raise InvalidRecord(f"a {event} event without an incident_id")
    window_start, window_end = _time(doc, "window_start"), _time(doc, "window_end")
    error_rate = _number(doc, "error_rate")
    detected_at = _time(doc, "detected_at", required=False) or window_end
    resolved_at = None
    if event == "resolved":
        resolved_at = _time(doc, "resolved_at", required=False) or detected_at
    peak = _number(doc, "peak_error_rate", required=False)
    windows = _number(doc, "windows_breached", int, required=False)
    version = doc.get("thresholds_version")
    return IncidentEvent(
        event=event, kind=kind, key=key, severity=severity, alert_id=alert_id, incident_id=incident_id,
        window_start=window_start, window_end=window_end, error_rate=error_rate,
        threshold=_number(doc, "threshold"), detected_at=detected_at,
        first_window_start=_time(doc, "first_window_start", required=False) or window_start,
        last_window_end=_time(doc, "last_window_end", required=False) or window_end,
        peak_error_rate=max(peak if peak is not None else error_rate, error_rate),
        windows_breached=windows if windows is not None else 1,
        requests=_number(doc, "requests", int, required=False),
        errors=_number(doc, "errors", int, required=False),
        resolved_at=resolved_at,
        thresholds_version=version if isinstance(version, int) and not isinstance(version, bool) else None,
        explanation=str(doc.get("explanation") or ""),
    )


# --------------------------------------------------------------------------- incidents


def fold_incidents(events: Iterable[IncidentEvent], now: dt.datetime) -> list[dict]:
    """Incidents from their events (any order), open ones first, then resolved, newest first.

    An incident is open until its ``resolved`` event. An old per-window alert is an incident
    of one window, open while its window is. Each incident: ``incident_id``, ``kind``,
    ``key``, ``state`` (open | resolved), ``severity`` (the highest reached), ``started_at``
    (its first breaching window's start), ``last_window_end``, ``resolved_at``,
    ``duration_s`` (to now while open), ``peak_error_rate``, ``threshold``,
    ``windows_breached``, ``explanation`` (the latest), ``events``, ``legacy``.
    """
    by_id: dict[str, dict] = {}
    for ev in sorted(events, key=lambda e: (e.at, EVENTS.index(e.event))):
        ident = ev.incident_id or ev.alert_id
        inc = by_id.get(ident)
        if inc is None:
            inc = by_id[ident] = {
                "incident_id": ident, "kind": ev.kind, "key": ev.key, "state": "open",
                "severity": ev.severity, "started_at": ev.first_window_start,
                "last_window_end": ev.last_window_end, "resolved_at": None,
                "peak_error_rate": ev.peak_error_rate, "threshold": ev.threshold,
                "windows_breached": ev.windows_breached, "explanation": ev.explanation,
                "detected_at": ev.detected_at, "events": 0, "legacy": ev.legacy,
                "thresholds_version": ev.thresholds_version,
            }
        inc["events"] += 1
        inc["severity"] = higher(inc["severity"], ev.severity)
        inc["started_at"] = min(inc["started_at"], ev.first_window_start)
        inc["last_window_end"] = max(inc["last_window_end"], ev.last_window_end)
        inc["peak_error_rate"] = max(inc["peak_error_rate"], ev.peak_error_rate)
        inc["windows_breached"] = max(inc["windows_breached"], ev.windows_breached)
        inc["threshold"], inc["explanation"] = ev.threshold, ev.explanation or inc["explanation"]
        inc["thresholds_version"] = ev.thresholds_version
        if ev.event == "resolved":
            inc["state"], inc["resolved_at"] = "resolved", ev.resolved_at
    for inc in by_id.values():
        if inc["legacy"] and inc["last_window_end"] <= now:
            inc["state"], inc["resolved_at"] = "resolved", inc["last_window_end"]
        end = inc["resolved_at"] if inc["state"] == "resolved" else now
        inc["duration_s"] = round(max((end - inc["started_at"]).total_seconds(), 0.0), 1)
    open_ = sorted((i for i in by_id.values() if i["state"] == "open"),
                   key=lambda i: (-SEVERITY_RANK[i["severity"]], i["started_at"]))
    closed = sorted((i for i in by_id.values() if i["state"] == "resolved"),
                    key=lambda i: i["resolved_at"], reverse=True)
    return open_ + closed
