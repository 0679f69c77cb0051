"""chaussettes.durations: the one grammar of the micro-batch trigger (pure).

That the DAG form and the detector give the same verdict on the same values is checked in
tests/test_dag_streaming_detector.py (the form needs a parsed DAG)."""

from __future__ import annotations

import re

import pytest
from chaussettes import durations


@pytest.mark.parametrize("text,seconds", [
    ("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("1ms", 0.001), ("9999m", 599_940.0),
    ("available-now", None),
])
def test_accepted_triggers_and_their_seconds(text, seconds):
    assert durations.trigger_seconds(text) == seconds


@pytest.mark.parametrize("text", [
    "1min", "10 seconds", "0s", "0ms", "010s", "1.5s", "10000s", "10S", " 10s", "10s ", "10s\n",
    "", "10", "-1s", "1h", "availablenow", "once", "Available-Now",
])
def test_refused_triggers_say_what_is_expected_in_one_line(text):
    with pytest.raises(ValueError) as err:
        durations.trigger_seconds(text)
    message = str(err.value)
    assert "\n" not in message and repr(text) in message and "available-now" in message


def test_the_pattern_reads_the_same_in_python_and_in_json_schema():
    """jsonschema (the Airflow form and REST API) applies "pattern" with re.search: the
    parser does the same, so the two cannot drift apart."""
    import jsonschema

    for text in ("10s", "10s\n", "x10s", "10sx", "500ms", "5mms"):
        by_schema = jsonschema.Draft202012Validator(
            {"type": "string", "pattern": durations.TRIGGER_PATTERN}).is_valid(text)
        assert by_schema == (re.search(durations.TRIGGER_PATTERN, text) is not None)
        try:
            durations.trigger_seconds(text)
            parsed = True
        except ValueError:
            parsed = False
        assert parsed == by_schema, text
