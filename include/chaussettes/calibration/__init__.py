"""Threshold calibration: learn seuils.json (the evidence rule, schema 2) from history and
prove it by replay.

- ``params``: ``Params``, ``check_params``, ``CalibrationError``;
- ``fit``: the pure part — baselines by kind, key and hour, over-dispersion, the evidence
  threshold that meets the operator's budget of incidents a day (no Spark);
- ``engine``: the Spark part — the windowed statistic over the history reduced in the JVM
  to distributions and per-key sums, and the replay of the candidate through the
  detector's rule (``judge``), counted per evidence bin;
- ``run``: ``calibrate(events_df, params, ...)`` -> ``Result`` and the printed summary.

``jobs/calibrate_thresholds.py`` reads the history and writes the file.
"""

from chaussettes.calibration.params import CalibrationError, Params, check_params
from chaussettes.calibration.run import (
    Result,
    bound_events,
    calibrate,
    iso,
    range_text,
    split_time,
    summary_lines,
)
from chaussettes.thresholds import KINDS

__all__ = ["KINDS", "CalibrationError", "Params", "Result", "bound_events", "calibrate", "check_params", "iso",
           "range_text", "split_time", "summary_lines"]
