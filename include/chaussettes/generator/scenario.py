"""Incident timelines (``--scenario FILE``, JSON or YAML) and their ground truth (``--labels``).

A scenario is a list of incidents, either at the top level or under ``incidents``::

    incidents:
      - kind: ip_flood          # one client floods the site with 4xx
        start: 60               # seconds after the generator's first event (or "2m", or ISO-8601)
        duration: 120           # seconds (or "2m")
        entity: 198.51.100.23   # the client IP
        rate: 30                # extra lines/s from it
        error_rate: 0.9         # share of those lines that fail
      - kind: url_outage        # one endpoint answers 5xx
        start: 240
        duration: 90
        entity: /api/v1/checkout
        rate: 20                # extra lines/s to it (its normal traffic fails too)
        error_rate: 0.8
      - kind: error_spike       # every normal line fails more often
        start: 400
        duration: 60
        error_rate: 0.4
      - kind: traffic_surge     # more traffic, same error rate: should NOT alert
        start: 500
        duration: 60
        rate: 400

``rate`` is in lines per second of event time (with ``--start-time`` the history is
generated faster than that, but the event times follow it).

``--labels PATH`` writes, when the generator starts, the ground truth as JSON:
``{"origin": ISO, "seed": N, "incidents": [{"name", "kind", "alert_kind", "entity",
"start", "end", "rate", "error_rate"}]}`` where ``alert_kind`` is the detector's alert
kind expected (``ip`` / ``url`` / ``global``, or null for a surge that must not alert)
and ``entity`` is the IP, the URL, or ``"*"``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaussettes import atomicfile
from chaussettes import logformat as lf

KINDS = ("ip_flood", "url_outage", "error_spike", "traffic_surge")
ALERT_KIND = {"ip_flood": "ip", "url_outage": "url", "error_spike": "global", "traffic_surge": None}
DEFAULTS = {
    "ip_flood": {"rate": 30.0, "error_rate": 0.9},
    "url_outage": {"rate": 20.0, "error_rate": 0.8},
    "error_spike": {"rate": 0.0, "error_rate": 0.4},
    "traffic_surge": {"rate": 200.0, "error_rate": None},
}
FIELDS = ("name", "kind", "start", "duration", "entity", "rate", "error_rate")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_S = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ScenarioError(ValueError):
    """A one-line message naming the file and the offending field."""


@dataclass
class Incident:
    name: str
    kind: str
    start_offset_s: float | None  # relative start (None when absolute)
    start_abs: _dt.datetime | None
    duration_s: float
    entity: str | None
    rate: float
    error_rate: float | None
    start_us: int = 0  # resolved by bind()
    end_us: int = 0

    def bind(self, origin_us: int) -> None:
        if self.start_abs is not None:
            self.start_us = int(self.start_abs.timestamp() * 1_000_000)
        else:
            self.start_us = origin_us + int(self.start_offset_s * 1_000_000)
        self.end_us = self.start_us + int(self.duration_s * 1_000_000)

    def label(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "alert_kind": ALERT_KIND[self.kind],
            "entity": self.entity if self.kind in ("ip_flood", "url_outage") else "*",
            "start": lf.iso_utc(_from_us(self.start_us)), "end": lf.iso_utc(_from_us(self.end_us)),
            "rate": self.rate, "error_rate": self.error_rate,
        }


def _from_us(us: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(us // 1_000_000, _dt.UTC).replace(microsecond=us % 1_000_000)


def parse_seconds(value: Any) -> float | None:
    """``90``, ``90.5``, ``"90s"``, ``"2m"``, ``"1h"`` -> seconds; None when not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.fullmatch(value.strip())
        if m:
            return float(m.group(1)) * _UNIT_S[m.group(2)]
    return None


def load(path: str | os.PathLike) -> list[Incident]:
    """Read and validate a scenario file; raise ScenarioError with a one-line reason."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"scenario {p}: cannot read ({exc.__class__.__name__}: {exc})") from None
    try:
        if p.suffix.lower() == ".json":
            doc = json.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - json.JSONDecodeError, yaml.YAMLError: reported in one line
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ScenarioError(f"scenario {p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'} "
                            f"({first})") from None
    return from_doc(doc, str(p))


def from_doc(doc: Any, source: str = "scenario") -> list[Incident]:
    if isinstance(doc, dict):
        unknown = set(doc) - {"incidents", "name", "description"}
        if unknown:
            raise ScenarioError(f"scenario {source}: unknown top-level field {min(unknown)!r}")
        doc = doc.get("incidents")
    if not isinstance(doc, list) or not doc:
        raise ScenarioError(f"scenario {source}: incidents: expected a non-empty list of incidents")
    out = []
    for i, item in enumerate(doc):
        where = f"scenario {source}: incidents[{i}]"
        if not isinstance(item, dict):
            raise ScenarioError(f"{where}: expected a mapping with kind, start, duration, ...")
        for key in item:
            if key not in FIELDS:
                raise ScenarioError(f"{where}.{key}: unknown field (expected one of {', '.join(FIELDS)})")
        kind = item.get("kind")
        if kind not in KINDS:
            raise ScenarioError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        if "start" not in item:
            raise ScenarioError(f"{where}.start: missing (seconds after the start, or an ISO-8601 time)")
        start_offset, start_abs = None, None
        raw_start = item["start"]
        start_offset = parse_seconds(raw_start)
        if start_offset is None and isinstance(raw_start, (str, _dt.datetime)):
            start_abs = raw_start if isinstance(raw_start, _dt.datetime) else lf.parse_iso_time(raw_start)
            if isinstance(start_abs, _dt.datetime) and start_abs.tzinfo is None:
                start_abs = start_abs.replace(tzinfo=_dt.UTC)
        if start_offset is None and start_abs is None:
            raise ScenarioError(f"{where}.start: expected seconds (60, \"2m\") or an ISO-8601 time, got {raw_start!r}")
        if start_offset is not None and start_offset < 0:
            raise ScenarioError(f"{where}.start: must be >= 0, got {raw_start!r}")
        if "duration" not in item:
            raise ScenarioError(f"{where}.duration: missing (seconds, or \"2m\")")
        duration = parse_seconds(item["duration"])
        if duration is None or duration <= 0:
            raise ScenarioError(f"{where}.duration: expected a positive number of seconds, got {item['duration']!r}")
        entity = item.get("entity")
        if kind == "ip_flood":
            entity = entity if entity is not None else f"198.51.100.{10 + i}"
            if not isinstance(entity, str) or not entity or " " in entity:
                raise ScenarioError(f"{where}.entity: expected a client IP, got {entity!r}")
        elif kind == "url_outage":
            entity = entity if entity is not None else "/api/v1/checkout"
            if not isinstance(entity, str) or not entity.startswith("/") or " " in entity or "?" in entity:
                raise ScenarioError(f"{where}.entity: expected a URL path like /api/v1/checkout, got {entity!r}")
        elif entity not in (None, "*"):
            raise ScenarioError(f"{where}.entity: {kind} applies to all traffic; leave entity out")
        rate = item.get("rate", DEFAULTS[kind]["rate"])
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0:
            raise ScenarioError(f"{where}.rate: expected extra lines per second >= 0, got {rate!r}")
        error_rate = item.get("error_rate", DEFAULTS[kind]["error_rate"])
        if kind == "traffic_surge":
            if "error_rate" in item:
                raise ScenarioError(f"{where}.error_rate: a traffic_surge keeps the normal error rate; leave it out")
        elif isinstance(error_rate, bool) or not isinstance(error_rate, (int, float)) or not 0 <= error_rate <= 1:
            raise ScenarioError(f"{where}.error_rate: expected a number within [0, 1], got {error_rate!r}")
        name = item.get("name", f"{kind}-{i}")
        if not isinstance(name, str):
            raise ScenarioError(f"{where}.name: expected a string, got {name!r}")
        out.append(Incident(name, kind, start_offset, start_abs, duration, entity, float(rate),
                            None if error_rate is None else float(error_rate)))
    return out


def write_labels(path: str | os.PathLike, incidents: list[Incident], origin_us: int, seed: int | None) -> None:
    """The ground truth, written atomically."""
    doc = {"origin": lf.iso_utc(_from_us(origin_us)), "seed": seed,
           "incidents": [inc.label() for inc in incidents]}
    atomicfile.write_json(path, doc)
