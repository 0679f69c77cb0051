"""Alert building: deterministic ids, severity, human explanation.

``alert_id`` is the first 20 hex characters of sha1(``kind|key|window_start|window_end``)
with the window bounds as ISO-8601 UTC strings (``2026-11-23T10:00:00Z``): the same
breach always gets the same id, so a replay or a restart never makes a second one.
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


def to_message(alert: Mapping) -> tuple[bytes, bytes]:
    """(key, value) for Kafka: key = alert_id, value = the JSON object."""
    return alert["alert_id"].encode(), json.dumps(alert, separators=(",", ":")).encode()
