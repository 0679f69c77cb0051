"""The one grammar of the detector's micro-batch trigger: ``10s``, ``500ms``, ``2m`` or ``available-now``.

``TRIGGER_PATTERN`` is a regular expression that both Python's ``re`` and the JSON-schema
validators of the Airflow form and REST API (ECMAScript) read the same way, so the DAG's
``trigger`` param refuses exactly what ``trigger_seconds`` (the detector's ``--trigger``)
refuses: a value the form accepts never makes the supervised detector crash-loop.

Bounded in the pattern itself: a whole number of 1 to 4 digits without a leading zero, so
1 ms to 9999 minutes; no zero, no fraction, no space, no other unit or spelling.
"""

from __future__ import annotations

import re

AVAILABLE_NOW = "available-now"
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0}
# ms before m, so that "500ms" is not read as 500 minutes followed by garbage. (?![\s\S]) ends
# the string in both engines, where Python's $ would also match before a final newline.
TRIGGER_PATTERN = r"^(?:available-now|([1-9][0-9]{0,3})(ms|s|m))(?![\s\S])"
_TRIGGER = re.compile(TRIGGER_PATTERN)


def trigger_seconds(text: str) -> float | None:
    """Seconds of a processing-time trigger, None for ``available-now``; ValueError otherwise."""
    # re.search, as jsonschema applies "pattern": the same verdict on every string.
    match = _TRIGGER.search(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"--trigger {text!r}: expected a duration like 10s, 500ms, 2m "
                         f"(1 to 4 digits, units ms, s, m) or {AVAILABLE_NOW}")
    if match.group(1) is None:
        return None
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]
