"""A small client of Prometheus Alertmanager's API v2 (the relay, the Airflow notifier and the
operations page use it), and the silence-matching rule. Standard library only.

Alertmanager identifies an alert by its label set: posting the same labels again updates
that alert (its ``endsAt``, its annotations) and never makes a second notification. An alert
whose ``endsAt`` has passed is resolved; one that is not refreshed before its ``endsAt``
resolves on its own.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

ERROR_RATE_ALERT = "ChaussettesErrorRate"  # alertname of an error-rate incident (the relay)
PIPELINE_ALERT = "ChaussettesPipeline"  # alertname of an Airflow failure (the notifier)


class AlertmanagerError(RuntimeError):
    """Alertmanager did not accept a request; one line naming the URL and why."""


class AlertsRejected(AlertmanagerError):
    """Alertmanager answered 400: the alerts themselves are bad (retrying will not help)."""


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _request(base_url: str, path: str, *, payload: Any = None, method: str = "GET",
             timeout: float = 5.0) -> Any:
    url = base_url.rstrip("/") + path
    data = None if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace").strip()
        cls = AlertsRejected if exc.code == 400 else AlertmanagerError
        raise cls(f"Alertmanager at {base_url} answered {exc.code} to {method} {path}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise AlertmanagerError(f"Alertmanager at {base_url} is unreachable ({reason})") from None
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise AlertmanagerError(f"Alertmanager at {base_url} sent no JSON for {method} {path}") from None


def post_alerts(base_url: str, alerts: Sequence[Mapping], timeout: float = 10.0) -> None:
    """POST /api/v2/alerts; raises ``AlertmanagerError`` (``AlertsRejected`` for a 400)."""
    if alerts:
        _request(base_url, "/api/v2/alerts", payload=list(alerts), method="POST", timeout=timeout)


def get_alerts(base_url: str, matchers: Sequence[str] = (), timeout: float = 5.0,
               active: bool = True, silenced: bool = True, inhibited: bool = True) -> list[dict]:
    """GET /api/v2/alerts, with ``filter`` matchers such as ``kind="ip"``."""
    query = [("filter", m) for m in matchers] + [
        ("active", str(active).lower()), ("silenced", str(silenced).lower()),
        ("inhibited", str(inhibited).lower())]
    return _request(base_url, "/api/v2/alerts?" + urllib.parse.urlencode(query), timeout=timeout) or []


def get_silences(base_url: str, timeout: float = 5.0) -> list[dict]:
    """GET /api/v2/silences (every state: active, pending, expired)."""
    return _request(base_url, "/api/v2/silences", timeout=timeout) or []


def create_silence(base_url: str, matchers: Mapping[str, str], *, duration_s: float, created_by: str,
                   comment: str, timeout: float = 5.0) -> str:
    """POST /api/v2/silences with equality matchers; returns the silence id."""
    now = dt.datetime.now(dt.UTC)
    body = {"matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()],
            "startsAt": rfc3339(now), "endsAt": rfc3339(now + dt.timedelta(seconds=duration_s)),
            "createdBy": created_by, "comment": comment}
    return _request(base_url, "/api/v2/silences", payload=body, method="POST", timeout=timeout)["silenceID"]


def ready(base_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/-/ready", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def silence_matches(silence: Mapping, labels: Mapping[str, str]) -> bool:
    """Alertmanager's rule: every matcher holds; a regex is anchored; a missing label is ""."""
    for m in silence.get("matchers") or ():
        value = labels.get(m.get("name"), "")
        if m.get("isRegex"):
            try:
                hit = re.fullmatch(m.get("value", ""), value) is not None
            except re.error:
                return False
        else:
            hit = value == m.get("value")
        if hit != m.get("isEqual", True):
            return False
    return bool(silence.get("matchers"))


def silence_url(ui_url: str, labels: Mapping[str, str]) -> str:
    """Alertmanager UI's "new silence" form, prefilled with these labels."""
    matchers = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{ui_url.rstrip('/')}/#/silences/new?filter=" + urllib.parse.quote("{" + matchers + "}")
