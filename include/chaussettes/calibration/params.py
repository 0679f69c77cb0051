"""The calibration's parameters and its one error type."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from chaussettes.thresholds import KINDS, SEASONS

SEASON_CHOICES = ("auto", *SEASONS)
HOUR_OF_DAY_DAYS = 7  # with season auto: hourly baselines from this much history ...
HOUR_OF_WEEK_DAYS = 28  # ... and by hour of the week from this much


class CalibrationError(Exception):
    """Calibration cannot produce a file; the message is one line with the figures.

    ``usage`` errors (bad parameters) exit with 2, the others with 1.
    """

    def __init__(self, message: str, usage: bool = False):
        super().__init__(" ".join(str(message).split()))
        self.usage = usage


@dataclass(frozen=True)
class Params:
    # the operator's budget: false incidents per day for the whole site, counted on replay
    budget: float = 5.0
    holdout: float = 0.2  # last share of the time range kept out of sample (0: none)
    oos_confidence: float = 0.99  # the held-out tail may exceed the budget by chance at this level
    length_s: int = 60
    slide_s: int = 10
    watermark_s: int = 30
    error_status_min: int = 400
    min_requests: Mapping[str, int | None] = field(
        default_factory=lambda: {"global": None, "ip": None, "url": None})  # None: min_errors
    min_errors: Mapping[str, int] = field(default_factory=lambda: {"global": 3, "ip": 3, "url": 3})
    season: str = "auto"  # auto: hour_of_week from 28 days of history, hour_of_day from 7, else flat
    season_prior: float = 1000.0  # requests: an hour's baseline is shrunk toward its kind's flat one
    season_min_requests: int = 200  # fewer in-sample requests in an hour: it gets the flat baseline
    key_min_requests: int = 500  # in-sample requests a key needs for a baseline of its own ...
    key_min_coverage: float = 0.5  # ... and the share of in-sample hours it must be seen in
    key_prior: float = 200.0  # requests: a key's baseline is shrunk toward its kind's
    max_keys: int = 5000  # per kind: beyond, the keys with the most requests
    chronic_ratio: float = 3.0  # a key is chronic when its baseline is this many times its kind's ...
    chronic_delta: float = 0.05  # ... and at least this much above it
    rate_floor: float = 0.0005  # baselines stay within [floor, 1 - floor]
    # the evidence a breach needs: at least z_min (4.75: one window in a million by chance),
    # raised as far as the budget asks, up to z_max
    z_min: float = 4.75
    z_max: float = 40.0
    resolve_after: int = 3  # written to the file: quiet judged windows that resolve an incident
    pins: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # kind -> key -> baseline
    min_windows: int = 30  # fewer in-sample global windows = history too short

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["min_requests"] = dict(self.min_requests)
        d["min_errors"] = dict(self.min_errors)
        d["pins"] = {k: dict(v) for k, v in self.pins.items()}
        return d


def check_params(p: Params) -> None:
    """Raise CalibrationError(usage=True) with one line for the first bad parameter."""

    def bad(msg: str) -> None:
        raise CalibrationError(msg, usage=True)

    def positive(name: str, value: float, strict: bool = True) -> None:
        if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value) or \
                (value <= 0 if strict else value < 0):
            bad(f"{name.replace('_', '-')} must be {'>' if strict else '>='} 0, got {value}")

    positive("budget", p.budget)
    if not (0 <= p.holdout < 1):
        bad(f"holdout must be in [0, 1), got {p.holdout}")
    if not (0.5 <= p.oos_confidence < 1):
        bad(f"oos-confidence must be in [0.5, 1), got {p.oos_confidence}")
    if p.length_s < 1 or p.slide_s < 1:
        bad(f"window length and slide must be >= 1 s, got {p.length_s} and {p.slide_s}")
    if p.slide_s > p.length_s or p.length_s % p.slide_s:
        bad(f"window length {p.length_s}s must be a multiple of the slide {p.slide_s}s")
    if p.watermark_s < 0:
        bad(f"watermark must be >= 0 s, got {p.watermark_s}")
    if not (100 <= p.error_status_min <= 599):
        bad(f"error-status-min must be in 100..599, got {p.error_status_min}")
    for name in ("min_requests", "min_errors"):
        for kind, n in getattr(p, name).items():
            if kind not in KINDS:
                bad(f"{name.replace('_', '-')}: unknown kind {kind!r} (expected global, ip, url)")
            if n is not None and n < 1:
                bad(f"{name.replace('_', '-')} for {kind} must be >= 1, got {n}")
    if set(p.min_errors) != set(KINDS):
        bad("min-errors needs global, ip and url")
    if p.season not in SEASON_CHOICES:
        bad(f"season must be one of {', '.join(SEASON_CHOICES)}, got {p.season!r}")
    positive("season_prior", p.season_prior, strict=False)
    positive("key_prior", p.key_prior, strict=False)
    if p.season_min_requests < 1 or p.key_min_requests < 1:
        bad("season-min-requests and key-min-requests must be >= 1")
    if not (0 <= p.key_min_coverage <= 1):
        bad(f"key-min-coverage must be in [0, 1], got {p.key_min_coverage}")
    if p.max_keys < 0:
        bad(f"max-keys must be >= 0, got {p.max_keys}")
    if not (p.chronic_ratio >= 1):
        bad(f"chronic-ratio must be >= 1, got {p.chronic_ratio}")
    positive("chronic_delta", p.chronic_delta, strict=False)
    if not (0 < p.rate_floor < 0.5):
        bad(f"rate-floor must be in (0, 0.5), got {p.rate_floor}")
    if not (1 <= p.z_min < p.z_max <= 1000):
        bad(f"the evidence bounds need 1 <= z-min < z-max <= 1000, got {p.z_min} and {p.z_max}")
    if not (1 <= p.resolve_after <= 1000):
        bad(f"resolve-after must be in 1..1000, got {p.resolve_after}")
    for kind, keys in p.pins.items():
        if kind not in ("ip", "url"):
            bad(f"baseline pin: kind must be ip or url, got {kind!r}")
        for key, rate in keys.items():
            if not key:
                bad(f"baseline pin: empty {kind} key")
            if not (0 < rate < 1):
                bad(f"baseline pin {kind}:{key}: a baseline must be strictly between 0 and 1, got {rate}")
    if p.min_windows < 1:
        bad(f"min-windows must be >= 1, got {p.min_windows}")


def season_for(p: Params, days: float) -> str:
    """The season of the baselines: the one asked for, else by how much history there is."""
    if p.season != "auto":
        return p.season
    if days >= HOUR_OF_WEEK_DAYS:
        return "hour_of_week"
    if days >= HOUR_OF_DAY_DAYS:
        return "hour_of_day"
    return "flat"
