"""Judging windowed rates against the thresholds in force — one rule per schema, three forms.

**The rate rule** (``seuils.json`` schema 1, ``Thresholds.rule == "rate"``), for a window
(kind, key, requests, errors, error_rate):

    threshold = per-key override of the kind, else the kind's default (global: one value)
    judged    = requests >= min_requests[kind]
    breach    = judged and error_rate > threshold
    severity  = (breach only) "warning" if error_rate < 1.5 x threshold,
                "major" if error_rate < 2 x threshold, else "critical"; null otherwise

**The evidence rule** (schema 2, ``"evidence"``): a breach is evidence that a window's
errors are more than its key's baseline gives for that many requests. For a window of kind
K and key k starting at ws, with n requests and e errors:

    p    = k's own baseline (ip/url overrides), else K's baseline for the hour of ws
           (evidence.by_season), else K's default
    phi  = 1 + (n - 1) rho,  rho = evidence.dispersion[K]   over-dispersion (beta-binomial)
    mu   = n p                 the errors expected
    v    = mu (1 - p) phi      their variance
    k3   = v (1 - 2p) phi      their third cumulant (how right-skewed the count is)
    limit(z)    = mu + z sqrt(v) + c (z^2 - 1),  c = max(0, k3 / 6v)
                  the errors a window exceeds with probability about Phi(-z): the
                  Cornish-Fisher quantile to its skewness term, clamped at 0 for a left
                  skew. The plain normal quantile (c = 0) lets a few requests at a low
                  baseline breach on chance: 2 errors of 7 at 2% is one window in 130,
                  which it calls one in 3 million.
    evidence    = the z with limit(z) = e:  2d / (sqrt(v) + sqrt(v + 4cd)),  d = max(0, e - mu + c)
    chronic keys (evidence.chronic[K][k] = (lam, psi), a baseline far above their kind's) are
                  also judged against their usual errors per window, quasi-Poisson: mu' = lam,
                  v' = psi lam, k3' = psi v'; their evidence is the larger of the two, their
                  limit the smaller: more volume at the same rate alerts too.
    judged      = n >= min_requests[K]
    breach      = judged and e >= evidence.min_errors[K] and evidence > evidence.z
    threshold   = min(1, max(limit(z), min_errors - 1) / n): the error rate the window had
                  to exceed for that many requests (what alerts report)
    severity    = (breach only) the lesser of the rate's level (warning below 1.5 x threshold,
                  major below 2 x, critical) and the evidence's (warning below 1.5 z, major
                  below 2 z, critical)

Only + - * / and sqrt, correctly rounded in Java and in numpy alike, in one order: the
formula is written once (``_verdict``) over a small set of operations (``_Ops``) that numpy
arrays, Spark columns and Python floats each provide, so the three forms agree to the bit
(tests check it on many rows):

- ``judge(rates_df, thresholds)``: Spark column expressions (batch or streaming); per-key
  baselines come from a broadcast join (``keyed_frame``), not a literal map, so that
  thousands of keys plan quickly;
- ``evaluate(thresholds, kind, keys, requests, errors, window_start)``: numpy arrays, one
  kind at a time — what the detector's stateful step calls;
- ``judge_one(...)``: plain Python, one window.

``with_verdict`` is the Spark form on columns of any name (the calibration's replay
judges each window and the one before it in one row with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from chaussettes.thresholds import KINDS, Thresholds, season_index

MAJOR_RATIO = 1.5  # error_rate / threshold (and evidence / z) at and above which a breach is "major"
CRITICAL_RATIO = 2.0  # ... and "critical"
SEVERITIES = ("warning", "major", "critical")
LEVELS = (None, *SEVERITIES)  # Verdicts.level indexes this: 0 = no breach
JUDGE_COLUMNS = ("threshold", "judged", "breach", "severity")


def severity(error_rate: float, threshold: float) -> str:
    """Severity of a breach under the rate rule (call only when error_rate > threshold)."""
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
    evidence: float | None = None  # the evidence rule's score (None under the rate rule)


def error_rate(requests: int, errors: int) -> float:
    """errors / requests as the windowed statistic computes it (0.0 for no request)."""
    return float(errors) / float(requests) if requests else 0.0


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")


# ----------------------------------------------------------------- the evidence rule, once

class _Ops(NamedTuple):
    """What the formula needs beyond + - * / and comparisons, per backend."""

    sqrt: Any
    maximum: Any
    minimum: Any
    where: Any  # where(condition, if_true, if_false)


_PYTHON = _Ops(math.sqrt, max, min, lambda c, a, b: a if c else b)


def _numpy_ops() -> _Ops:
    import numpy as np

    return _Ops(np.sqrt, np.maximum, np.minimum, np.where)


class _SparkStages:
    """The Spark form computes the rule's inputs (the baseline's lookup by kind and hour,
    the kind's constants) in columns of their own first (``apply``): written in the one
    expression, every use of them would repeat their whole tree. The arithmetic stays one
    expression per output, whose common parts Spark's code generation computes once — and
    ``IF(eligible, evidence, ...)`` computes the evidence only where it can matter."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.stages: list[tuple[str, Any]] = []

    def let(self, value):
        from pyspark.sql import functions as F

        name = f"__{self.prefix}{len(self.stages)}"
        self.stages.append((name, value))
        return F.col(name)

    def ops(self) -> _Ops:
        from pyspark.sql import Column
        from pyspark.sql import functions as F

        def lit(x):
            return x if isinstance(x, Column) else F.lit(x)

        return _Ops(F.sqrt, lambda a, b: F.greatest(lit(a), lit(b)), lambda a, b: F.least(lit(a), lit(b)),
                    lambda c, a, b: F.when(c, lit(a)).otherwise(lit(b)))

    def apply(self, df, outputs: dict[str, Any]):
        """``df`` with the stages, then ``outputs`` (name -> column), temporaries dropped."""
        for name, value in self.stages:
            df = df.withColumn(name, value)
        df = df.withColumns(outputs)
        return df.drop(*[name for name, _ in self.stages])


def _evidence(ops: _Ops, e, mu, v, k3):
    """The z at which ``_limit`` reaches e errors (0 when e is not above the mean), written
    without a division by c, which may be 0."""
    c = ops.maximum(k3 / (v * 6.0), 0.0)
    d = ops.maximum(e - mu + c, 0.0)
    return d * 2.0 / (ops.sqrt(v) + ops.sqrt(v + c * d * 4.0))


def _limit(ops: _Ops, mu, v, k3, z: float):
    """The errors a window exceeds with probability about Phi(-z)."""
    return mu + ops.sqrt(v) * z + ops.maximum(k3 / (v * 6.0), 0.0) * (z * z - 1.0)


def _moments(ops: _Ops, n, p, rho):
    """n (at least 1), and the mean, variance and third cumulant of the errors of n requests
    at baseline p with over-dispersion rho."""
    n1 = ops.maximum(n, 1.0)  # a window has a request; this keeps 0 from dividing
    phi = (n1 - 1.0) * rho + 1.0
    mu = n1 * p
    v = mu * (1.0 - p) * phi
    k3 = v * (1.0 - p * 2.0) * phi
    return n1, mu, v, k3


def rate_evidence(requests, errors, baseline, dispersion):
    """The evidence against a baseline rate (numpy arrays of doubles): ``_verdict``'s first
    part, for the calibration's fit of the dispersion."""
    import numpy as np

    ops = _numpy_ops()
    with np.errstate(all="ignore"):
        _, mu, v, k3 = _moments(ops, requests, baseline, dispersion)
        return _evidence(ops, errors, mu, v, k3)


def _verdict(ops: _Ops, n, e, p, rho, z: float, min_requests, min_errors, chronic, lam, psi) -> dict[str, Any]:
    """The evidence rule (module doc) on doubles n, e, p, rho, lam, psi (arrays, columns or
    floats alike); ``chronic`` says where lam, psi apply (elsewhere they are 1.0)."""
    n1, mu, v, k3 = _moments(ops, n, p, rho)
    vc = lam * psi
    k3c = vc * psi
    by_rate_ev = _evidence(ops, e, mu, v, k3)
    evidence = ops.where(chronic, ops.maximum(by_rate_ev, _evidence(ops, e, lam, vc, k3c)), by_rate_ev)
    by_rate_limit = _limit(ops, mu, v, k3, z)
    limit = ops.where(chronic, ops.minimum(by_rate_limit, _limit(ops, lam, vc, k3c, z)), by_rate_limit)
    threshold = ops.minimum(ops.maximum(limit, min_errors - 1.0) / n1, 1.0)
    judged = n >= min_requests
    eligible = judged & (e >= min_errors)
    breach = eligible & (evidence > z)
    rate = e / n1
    by_rate = ops.where(rate < threshold * MAJOR_RATIO, 1, ops.where(rate < threshold * CRITICAL_RATIO, 2, 3))
    by_evidence = ops.where(evidence < z * MAJOR_RATIO, 1, ops.where(evidence < z * CRITICAL_RATIO, 2, 3))
    level = ops.where(breach, ops.minimum(by_rate, by_evidence), 0)
    return {"evidence": evidence, "threshold": threshold, "judged": judged, "eligible": eligible, "breach": breach,
            "level": level}


# ----------------------------------------------------------------- plain Python

def judge_one(kind: str, key: str, requests: int, errors: int, thresholds: Thresholds,
              window_start: float | None = None) -> Judgement:
    """Judge one window in plain Python, exactly as ``judge`` does in Spark.
    ``window_start`` (epoch seconds) is needed by seasonal evidence rules."""
    _check_kind(kind)
    rate = error_rate(requests, errors)
    if thresholds.rule == "rate":
        threshold = thresholds.threshold(kind, key)
        judged = requests >= thresholds.min_requests[kind]
        breach = judged and rate > threshold
        return Judgement(
            kind=kind, key=key, requests=int(requests), errors=int(errors), error_rate=rate,
            threshold=threshold, judged=judged, breach=breach,
            severity=severity(rate, threshold) if breach else None,
        )
    p = thresholds.baseline(kind, key, window_start)
    lam, psi = thresholds.chronic(kind).get(key, (1.0, 1.0)) if kind != "global" else (1.0, 1.0)
    chronic = kind != "global" and key in thresholds.chronic(kind)
    out = _verdict(_PYTHON, float(requests), float(errors), p, thresholds.dispersion(kind), thresholds.z,
                   thresholds.min_requests[kind], thresholds.min_errors[kind], chronic, lam, psi)
    return Judgement(
        kind=kind, key=key, requests=int(requests), errors=int(errors), error_rate=rate,
        threshold=out["threshold"], judged=bool(out["judged"]), breach=bool(out["breach"]),
        severity=LEVELS[out["level"]], evidence=out["evidence"],
    )


# ----------------------------------------------------------------- numpy

@dataclass(frozen=True)
class Verdicts:
    """``evaluate``'s answer: one entry per window, numpy arrays."""

    threshold: Any  # float64: the error rate the window had to exceed
    judged: Any  # bool
    breach: Any  # bool
    level: Any  # int8: index in LEVELS (0 when no breach)
    evidence: Any = None  # float64 under the evidence rule (None under the rate rule)

    def severity(self, i: int) -> str | None:
        return LEVELS[int(self.level[i])]


def evaluate(thresholds: Thresholds, kind: str, keys, requests, errors, window_start=None) -> Verdicts:
    """The rule on arrays of windows of one kind (``keys``: their keys; ``requests``,
    ``errors``: int arrays; ``window_start``: epoch seconds, needed by seasonal evidence
    rules). The same verdicts as ``judge_one`` on each window, bit for bit."""
    import numpy as np
    import pandas as pd

    _check_kind(kind)
    requests = np.asarray(requests, dtype=np.int64)
    errors = np.asarray(errors, dtype=np.int64)
    keys = np.asarray(keys, dtype=object)
    if thresholds.rule == "rate":
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(requests > 0, errors.astype(np.float64) / np.maximum(requests, 1).astype(np.float64), 0.0)
        threshold = np.full(len(requests), thresholds.default(kind), dtype=np.float64)
        overrides = thresholds.overrides(kind)
        if overrides and len(requests):
            own = pd.Series(keys).map(overrides)
            has = own.notna().to_numpy()
            threshold[has] = own[has].to_numpy(dtype=np.float64)
        judged = requests >= thresholds.min_requests[kind]
        breach = judged & (rate > threshold)
        level = np.where(rate < MAJOR_RATIO * threshold, 1, np.where(rate < CRITICAL_RATIO * threshold, 2, 3))
        return Verdicts(threshold=threshold, judged=judged, breach=breach,
                        level=np.where(breach, level, 0).astype(np.int8))
    p = np.asarray(thresholds.by_season(kind), dtype=np.float64)
    if thresholds.season == "flat":
        p = np.full(len(requests), p[0])
    else:
        if window_start is None:
            raise ValueError(f"the {thresholds.season} baselines need window_start (epoch seconds)")
        p = p[season_index(thresholds.season, np.asarray(window_start, dtype=np.int64))]
    lam = np.ones(len(requests))
    psi = np.ones(len(requests))
    chronic = np.zeros(len(requests), dtype=bool)
    if kind != "global" and len(requests):
        own = pd.Series(keys).map(thresholds.overrides(kind))
        has = own.notna().to_numpy()
        p[has] = own[has].to_numpy(dtype=np.float64)
        usual = thresholds.chronic(kind)
        if usual:
            found = pd.Series(keys).map(usual)
            chronic = found.notna().to_numpy()
            lam[chronic] = [lam_psi[0] for lam_psi in found[chronic]]
            psi[chronic] = [lam_psi[1] for lam_psi in found[chronic]]
    with np.errstate(all="ignore"):  # the chronic branch is computed on every row, kept where chronic
        out = _verdict(_numpy_ops(), requests.astype(np.float64), errors.astype(np.float64), p,
                       thresholds.dispersion(kind), thresholds.z, thresholds.min_requests[kind],
                       thresholds.min_errors[kind], chronic, lam, psi)
    return Verdicts(threshold=np.asarray(out["threshold"], dtype=np.float64), judged=out["judged"],
                    breach=out["breach"], level=np.asarray(out["level"]).astype(np.int8),
                    evidence=np.asarray(out["evidence"], dtype=np.float64))


# ----------------------------------------------------------------- Spark

def threshold_column(thresholds: Thresholds, kind_col: str = "kind", key_col: str = "key"):
    """A Spark column: the rate rule's threshold of each row's (kind, key)."""
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


def _per_kind(kind, values: dict, cast: str):
    """CASE kind WHEN ... : one value per kind as a Spark column."""
    from pyspark.sql import functions as F

    expr = None
    for k, value in values.items():
        expr = (F.when if expr is None else expr.when)(kind == F.lit(k), value if not isinstance(value, (int, float))
                                                       else F.lit(value))
    return expr.cast(cast)


def min_requests_column(thresholds: Thresholds, kind_col: str = "kind"):
    from pyspark.sql import functions as F

    return _per_kind(F.col(kind_col), {k: int(n) for k, n in thresholds.min_requests.items()}, "long")


def min_errors_column(thresholds: Thresholds, kind_col: str = "kind"):
    """The evidence rule's minimum of errors of each row's kind."""
    from pyspark.sql import functions as F

    return _per_kind(F.col(kind_col), thresholds.min_errors, "long")


def season_index_column(season: str, window_start_s):
    """``thresholds.season_index`` on a Spark column of epoch seconds (exact integer arithmetic)."""
    from pyspark.sql import functions as F

    if season == "flat":
        return F.lit(0)
    hours = ((window_start_s - F.pmod(window_start_s, F.lit(3600))) / F.lit(3600)).cast("long")
    if season == "hour_of_day":
        return F.pmod(hours, F.lit(24))
    from chaussettes.thresholds import WEEK_OFFSET_H

    return F.pmod(hours + F.lit(WEEK_OFFSET_H), F.lit(168))


def kind_baseline_column(thresholds: Thresholds, kind, window_start_s=None):
    """The baseline of a key without its own, by kind (and hour): a Spark column."""
    from pyspark.sql import functions as F

    values = {}
    for k in KINDS:
        seasonal = thresholds.by_season(k)
        if thresholds.season == "flat":
            values[k] = F.lit(seasonal[0])
        else:
            values[k] = F.element_at(F.array(*[F.lit(x) for x in seasonal]),
                                     (season_index_column(thresholds.season, window_start_s) + F.lit(1)).cast("int"))
    return _per_kind(kind, values, "double")


KEYED_SCHEMA = "kind string, key string, key_baseline double, chronic_errors double, chronic_dispersion double"


def keyed_frame(spark, thresholds: Thresholds):
    """The keys with their own baseline (and chronic ones with their usual errors) as a small
    DataFrame (``KEYED_SCHEMA``), for a broadcast join; None when there are none."""
    rows = []
    for kind in ("ip", "url"):
        usual = thresholds.chronic(kind)
        for key, p in sorted(thresholds.overrides(kind).items()):
            lam, psi = usual.get(key, (None, None))
            rows.append((kind, key, p, lam, psi))
    return spark.createDataFrame(rows, KEYED_SCHEMA) if rows else None


def with_verdict(df, thresholds: Thresholds, *, kind, requests, errors, window_start_s=None, key_baseline=None,
                 chronic_errors=None, chronic_dispersion=None, prefix: str = ""):
    """``df`` plus the evidence rule's verdict as columns ``{prefix}evidence``, ``threshold``,
    ``judged``, ``eligible`` (judged with enough errors: it breaches when its evidence is
    above z), ``breach`` and ``level``. ``kind``, ``requests``, ``errors``,
    ``window_start_s`` (epoch seconds; needed unless the season is flat): columns of ``df``;
    ``key_baseline``, ``chronic_errors``, ``chronic_dispersion``: the columns of
    ``keyed_frame`` joined to the row (None: no key has its own baseline)."""
    from pyspark.sql import functions as F

    if thresholds.season != "flat" and window_start_s is None:
        raise ValueError(f"the {thresholds.season} baselines need the window start")
    staged = _SparkStages(prefix or "v")
    let = staged.let
    p = kind_baseline_column(thresholds, kind, window_start_s)
    p = let(F.coalesce(key_baseline, p) if key_baseline is not None else p)
    if chronic_errors is not None:
        chronic = let(chronic_errors.isNotNull())
        lam = let(F.coalesce(chronic_errors, F.lit(1.0)))
        psi = let(F.coalesce(chronic_dispersion, F.lit(1.0)))
    else:
        chronic, lam, psi = F.lit(False), F.lit(1.0), F.lit(1.0)
    out = _verdict(staged.ops(), let(requests.cast("double")), let(errors.cast("double")), p,
                   let(_per_kind(kind, {k: thresholds.dispersion(k) for k in KINDS}, "double")), thresholds.z,
                   let(_per_kind(kind, thresholds.min_requests, "double")),
                   let(_per_kind(kind, thresholds.min_errors, "double")), chronic, lam, psi)
    return staged.apply(df, {f"{prefix}{name}": value for name, value in out.items()})


def judge(rates_df, thresholds: Thresholds):
    """``rates_df`` (columns kind, key, requests, error_rate at least; errors and, for a
    seasonal evidence rule, window_start too) plus threshold (double), judged (bool), breach
    (bool), severity (string or null) — and evidence (double) under the evidence rule."""
    from pyspark.sql import functions as F

    if not isinstance(thresholds, Thresholds):
        raise TypeError(f"judge() needs a Thresholds, got {type(thresholds).__name__}")
    if thresholds.rule == "evidence":
        return _judge_evidence(rates_df, thresholds)
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


def _judge_evidence(rates_df, thresholds: Thresholds):
    from pyspark.sql import functions as F

    columns = [c for c in rates_df.columns if c not in (*JUDGE_COLUMNS, "evidence")]
    keyed = keyed_frame(rates_df.sparkSession, thresholds)
    df = rates_df.select(*columns)
    extra = {}
    if keyed is not None:
        df = df.join(F.broadcast(keyed), on=["kind", "key"], how="left")
        extra = {name: F.col(name) for name in ("key_baseline", "chronic_errors", "chronic_dispersion")}
    start = F.unix_seconds(F.col("window_start")) if thresholds.season != "flat" else None
    df = with_verdict(df, thresholds, kind=F.col("kind"), requests=F.col("requests"), errors=F.col("errors"),
                      window_start_s=start, prefix="__j_", **extra)
    sev = F.element_at(F.array(*[F.lit(s) for s in SEVERITIES]), F.col("__j_level").cast("int"))
    return df.select(
        *columns,
        F.col("__j_threshold").alias("threshold"),
        F.col("__j_judged").alias("judged"),
        F.col("__j_breach").alias("breach"),
        F.when(F.col("__j_breach"), sev).otherwise(F.lit(None).cast("string")).alias("severity"),
        F.col("__j_evidence").alias("evidence"),
    )
