"""What goes on ``alerts``: incident events (``chaussettes.incidents`` makes them, this
module words them: the explanation, the top error URLs / IPs / statuses) and the JSON
record of each.

An incident event's ``alert_id`` comes from (incident, event, severity); the older
one-record-per-window alerts (``build_alert``, read by the operations page and the relay
as ``firing``) had ``alert_id`` = the first 20 hex characters of
sha1(``kind|key|window_start|window_end``) with the window bounds as ISO-8601 UTC strings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping

from chaussettes import schemas

# dimensions explained for each kind: a global alert lists top URLs, IPs and statuses,
# an IP alert its URLs and statuses, a URL alert its IPs and statuses.
EXPLAIN_DIMS = {"global": ("url", "ip", "status"), "ip": ("url", "status"), "url": ("ip", "status")}
TOP_N = 3
DIM_PLURAL = {"url": "URLs", "ip": "IPs", "status": "statuses"}


def iso(ts: float | dt.datetime) -> str:
    """ISO-8601 UTC with a Z, seconds precision unless there are sub-seconds."""
    if isinstance(ts, str):
        ts = dt.datetime.fromisoformat(ts.replace("Z", "+00:00").replace("z", "+00:00"))
    if not isinstance(ts, dt.datetime):
        ts = dt.datetime.fromtimestamp(float(ts), tz=dt.UTC)
    elif ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    ts = ts.astimezone(dt.UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if ts.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return ts.strftime(fmt)


def alert_id(kind: str, key: str, window_start, window_end) -> str:
    text = f"{kind}|{key}|{iso(window_start)}|{iso(window_end)}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def severity(error_rate: float, threshold: float) -> str:
    """The judge's severity (warning < 1.5x the threshold, major < 2x, critical from 2x)."""
    from chaussettes.judge import severity as judge_severity

    return judge_severity(error_rate, threshold)


def explanation(kind: str, key: str, requests: int, errors: int, error_rate: float,
                threshold: float, tops: Mapping[str, Iterable[tuple[str, int]]] | None) -> str:
    """One line: what breached, then the top error URLs / IPs / statuses seen."""
    who = "all traffic" if kind == "global" else f"{kind} {key}"
    text = (f"{who}: {errors}/{requests} requests failed ({error_rate:.1%}) "
            f"above the threshold {threshold:.1%}")
    parts = []
    for dim in EXPLAIN_DIMS.get(kind, ()):
        items = list((tops or {}).get(dim, ()))[:TOP_N]
        if items:
            parts.append(f"top error {DIM_PLURAL.get(dim, dim + 's')}: " + ", ".join(f"{v} ({n})" for v, n in items))
    if parts:
        text += "; " + "; ".join(parts)
    return text


def build_alert(*, kind: str, key: str, window_start, window_end, requests: int, errors: int,
                threshold: float, thresholds_version: int, detected_at=None,
                tops: Mapping[str, Iterable[tuple[str, int]]] | None = None) -> dict:
    """The alert dict with exactly ``schemas.ALERT_COLUMNS``."""
    requests, errors = int(requests), int(errors)
    rate = errors / requests if requests else 0.0
    alert = {
        "alert_id": alert_id(kind, key, window_start, window_end),
        "kind": kind,
        "key": key,
        "window_start": iso(window_start),
        "window_end": iso(window_end),
        "requests": requests,
        "errors": errors,
        "error_rate": rate,
        "threshold": float(threshold),
        "thresholds_version": int(thresholds_version),
        "severity": severity(rate, float(threshold)),
        "detected_at": iso(detected_at or dt.datetime.now(dt.UTC)),
        "explanation": explanation(kind, key, requests, errors, rate, float(threshold), tops),
    }
    assert tuple(alert) == schemas.ALERT_COLUMNS
    return alert


def incident_record(event: Mapping, detected_at: str, tops=None) -> dict:
    """The JSON value of an incident event on ``alerts``: ``schemas.INCIDENT_EVENT_FIELDS``
    in order (``resolved_at`` only on ``resolved``)."""
    if event["event"] == "resolved":
        who = "all traffic" if event["kind"] == "global" else f"{event['kind']} {event['key']}"
        text = (f"{who}: resolved at {event['resolved_at']} after {event['windows_breached']} breaching "
                f"window(s) from {event['first_window_start']} (peak error rate {event['peak_error_rate']:.1%})")
    else:
        text = explanation(event["kind"], event["key"], event["requests"], event["errors"], event["error_rate"],
                           event["threshold"], tops)
    out = {name: event.get(name) for name in schemas.INCIDENT_EVENT_COLUMNS}
    out.update(detected_at=detected_at, explanation=text)
    if event["event"] == "resolved":
        out["resolved_at"] = event["resolved_at"]
    return out


def top_errors(pdf, spans) -> dict[str, dict[str, list[tuple[str, int]]]]:
    """alert_id -> dimension -> the ``TOP_N`` (value, count) of the error rows ``pdf``
    (columns t in epoch µs, ip, url, status) in each alert's window and of its key; count
    descending, then value. ``spans``: (alert, window start µs, window end µs). Counted
    once per (window, kind, dimension) for all the alerts that share it: a global spike
    can raise hundreds of alerts in one batch."""
    by_window: dict[tuple[int, int], list[dict]] = {}
    for a, ws, we in spans:
        by_window.setdefault((ws, we), []).append(a)
    tops: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for (ws, we), group in by_window.items():
        rows = pdf[(pdf["t"] >= ws) & (pdf["t"] < we)]
        for kind in ("global", "ip", "url"):
            ids = {a["key"]: a["alert_id"] for a in group if a["kind"] == kind}
            if not ids:
                continue
            for dim in EXPLAIN_DIMS[kind]:
                if kind == "global":
                    sub = rows[[dim]].dropna().assign(k="*")
                else:
                    sub = rows.loc[rows[kind].isin(list(ids)), [kind, dim]].dropna().rename(columns={kind: "k"})
                if sub.empty:
                    continue
                counts = sub.groupby(["k", dim]).size().reset_index(name="n")
                counts = counts.sort_values(["k", "n", dim], ascending=[True, False, True], kind="stable")
                for key, part in counts.groupby("k", sort=False):
                    top = [(str(v), int(n)) for v, n in zip(part[dim].head(TOP_N), part["n"].head(TOP_N), strict=True)]
                    tops.setdefault(ids[key], {})[dim] = top
    return tops


def to_message(alert: Mapping) -> tuple[bytes, bytes]:
    """(key, value) for Kafka: key = alert_id, value = the JSON object."""
    return alert["alert_id"].encode(), json.dumps(alert, separators=(",", ":")).encode()
