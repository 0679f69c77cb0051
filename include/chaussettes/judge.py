"""Judging windowed rates against the thresholds in force — one rule, two implementations.

For a row (kind, key, requests, errors, error_rate):

    threshold = per-key override of the kind, else the kind's default (global: one value)
    judged    = requests >= min_requests[kind]
    breach    = judged and error_rate > threshold
    severity  = (breach only) "warning" if error_rate < 1.5 x threshold,
                "major" if error_rate < 2 x threshold, else "critical"; null otherwise

Three forms of the one rule, which agree exactly (same IEEE double operations; tests check
it on many rows):

- ``judge(rates_df, thresholds)``: Spark column expressions (batch or streaming);
- ``evaluate(thresholds, kind, keys, requests, errors, window_start)``: numpy arrays, one
  kind at a time — what the detector's stateful step and the calibration's replay call;
- ``judge_one(...)``: plain Python, one window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chaussettes.thresholds import KINDS, Thresholds

MAJOR_RATIO = 1.5  # error_rate / threshold at and above which a breach is "major"
CRITICAL_RATIO = 2.0  # ... and "critical"
SEVERITIES = ("warning", "major", "critical")
LEVELS = (None, *SEVERITIES)  # Verdicts.level indexes this: 0 = no breach
JUDGE_COLUMNS = ("threshold", "judged", "breach", "severity")


def severity(error_rate: float, threshold: float) -> str:
    """Severity of a breach (call only when error_rate > threshold)."""
    if error_rate < MAJOR_RATIO * threshold:
        return "warning"
    if error_rate < CRITICAL_RATIO * threshold:
        return "major"
    return "critical"


@dataclass(frozen=True)
class Judgement:
    kind: str
    key: str
    requests: int
    errors: int
    error_rate: float
    threshold: float
    judged: bool
    breach: bool
    severity: str | None


def error_rate(requests: int, errors: int) -> float:
    """errors / requests as the windowed statistic computes it (0.0 for no request)."""
    return float(errors) / float(requests) if requests else 0.0


def judge_one(kind: str, key: str, requests: int, errors: int, thresholds: Thresholds) -> Judgement:
    """Judge one window in plain Python, exactly as ``judge`` does in Spark."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    rate = error_rate(requests, errors)
    threshold = thresholds.threshold(kind, key)
    judged = requests >= thresholds.min_requests[kind]
    breach = judged and rate > threshold
    return Judgement(
        kind=kind, key=key, requests=int(requests), errors=int(errors), error_rate=rate,
        threshold=threshold, judged=judged, breach=breach,
        severity=severity(rate, threshold) if breach else None,
    )


@dataclass(frozen=True)
class Verdicts:
    """``evaluate``'s answer: one entry per window, numpy arrays."""

    threshold: Any  # float64: the error rate the window had to exceed
    judged: Any  # bool
    breach: Any  # bool
    level: Any  # int8: index in LEVELS (0 when no breach)

    def severity(self, i: int) -> str | None:
        return LEVELS[int(self.level[i])]


def evaluate(thresholds: Thresholds, kind: str, keys, requests, errors, window_start=None) -> Verdicts:
    """The rule on arrays of windows of one kind (``keys``: their keys; ``requests``,
    ``errors``: int arrays; ``window_start``: epoch seconds, for rules that depend on the
    time of day). The same verdicts as ``judge_one`` on each window, bit for bit."""
    import numpy as np
    import pandas as pd

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    requests = np.asarray(requests, dtype=np.int64)
    errors = np.asarray(errors, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(requests > 0, errors.astype(np.float64) / np.maximum(requests, 1).astype(np.float64), 0.0)
    threshold = np.full(len(requests), thresholds.default(kind), dtype=np.float64)
    overrides = thresholds.overrides(kind)
    if overrides and len(requests):
        own = pd.Series(np.asarray(keys, dtype=object)).map(overrides)
        has = own.notna().to_numpy()
        threshold[has] = own[has].to_numpy(dtype=np.float64)
    judged = requests >= thresholds.min_requests[kind]
    breach = judged & (rate > threshold)
    level = np.where(rate < MAJOR_RATIO * threshold, 1, np.where(rate < CRITICAL_RATIO * threshold, 2, 3))
    return Verdicts(threshold=threshold, judged=judged, breach=breach,
                    level=np.where(breach, level, 0).astype(np.int8))


def threshold_column(thresholds: Thresholds, kind_col: str = "kind", key_col: str = "key"):
    """A Spark column: the threshold of each row's (kind, key)."""
    from pyspark.sql import functions as F

    kind, key = F.col(kind_col), F.col(key_col)
    expr = F.when(kind == F.lit("global"), F.lit(thresholds.default("global")))
    for k in ("ip", "url"):
        default = F.lit(thresholds.default(k))
        overrides = thresholds.overrides(k)
        if overrides:
            mapping = F.create_map(*[x for item in sorted(overrides.items()) for x in (F.lit(item[0]), F.lit(item[1]))])
            value = F.coalesce(F.try_element_at(mapping, key), default)
        else:
            value = default
        expr = expr.when(kind == F.lit(k), value)
    return expr.cast("double")


def min_requests_column(thresholds: Thresholds, kind_col: str = "kind"):
    from pyspark.sql import functions as F

    expr = None
    for k, n in thresholds.min_requests.items():
        expr = (F.when if expr is None else expr.when)(F.col(kind_col) == F.lit(k), F.lit(int(n)))
    return expr.cast("long")


def judge(rates_df, thresholds: Thresholds):
    """``rates_df`` (columns kind, key, requests, error_rate at least) plus
    threshold (double), judged (bool), breach (bool), severity (string or null)."""
    from pyspark.sql import functions as F

    if not isinstance(thresholds, Thresholds):
        raise TypeError(f"judge() needs a Thresholds, got {type(thresholds).__name__}")
    t = F.col("threshold")
    rate = F.col("error_rate")
    judged = F.coalesce(F.col("requests") >= min_requests_column(thresholds), F.lit(False))
    out = rates_df.withColumn("threshold", threshold_column(thresholds))
    out = out.withColumn("judged", judged)
    out = out.withColumn("breach", F.coalesce(F.col("judged") & (rate > t), F.lit(False)))
    sev = (
        F.when(rate < F.lit(MAJOR_RATIO) * t, F.lit("warning"))
        .when(rate < F.lit(CRITICAL_RATIO) * t, F.lit("major"))
        .otherwise(F.lit("critical"))
    )
    return out.withColumn("severity", F.when(F.col("breach"), sev).otherwise(F.lit(None).cast("string")))


def replay_counts(judged_df, by: list[str] | None = None, weight: str | None = None) -> list[dict[str, Any]]:
    """Judged and breaching evaluations (optionally grouped) of a judged batch DataFrame:
    ``[{...by, "evaluations": n, "alerts": m, "alert_rate": m / n or None}]``. With
    ``weight``, a row counts as that column's number of evaluations (the calibration keeps
    identical windows as one row with their number)."""
    from pyspark.sql import functions as F

    by = list(by or [])
    w = F.col(weight).cast("long") if weight else F.lit(1).cast("long")
    agg = judged_df.groupBy(*by).agg(
        F.sum(F.when(F.col("judged"), w).otherwise(F.lit(0))).alias("evaluations"),
        F.sum(F.when(F.col("breach"), w).otherwise(F.lit(0))).alias("alerts"),
    )
    rows = []
    for row in agg.collect():
        d = row.asDict()
        d["evaluations"] = int(d["evaluations"] or 0)
        d["alerts"] = int(d["alerts"] or 0)
        d["alert_rate"] = d["alerts"] / d["evaluations"] if d["evaluations"] else None
        rows.append(d)
    return rows
