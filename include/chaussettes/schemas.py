"""The data contracts between the parts, in one place.

A *parsed event* is what the line parser (Python: ``chaussettes.logformat.parse``;
Spark: the detector's native parser) makes of one access-log line; the archive
stores exactly these columns. An *alert* is the JSON value published on the
``alerts`` topic. The detector *status* is the JSON file the supervisor DAG and
the operations page read.
"""

from __future__ import annotations

# (name, Spark SQL type) in archive column order. event_time is UTC.
EVENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("event_time", "timestamp"),
    ("ip", "string"),
    ("method", "string"),
    ("url", "string"),  # the path only
    ("query", "string"),  # what followed '?', or null
    ("protocol", "string"),
    ("status", "int"),
    ("bytes", "long"),  # null for '-'
    ("referrer", "string"),  # null for '-'
    ("user_agent", "string"),  # null for '-'
)
EVENT_COLUMNS: tuple[str, ...] = tuple(name for name, _ in EVENT_FIELDS)
EVENT_DDL = ", ".join(f"{name} {typ}" for name, typ in EVENT_FIELDS)

# Quarantine records: the raw line and why it was refused, and where it came from.
# A line over logformat.MAX_LINE_LENGTH (refused for its length alone) keeps only its first
# QUARANTINE_RAW_PREFIX characters, so that a flood of huge lines cannot fill the disk;
# raw_length is the whole line's length in characters.
QUARANTINE_RAW_PREFIX = 1024
QUARANTINE_FIELDS: tuple[tuple[str, str], ...] = (
    ("raw", "string"),
    ("raw_length", "int"),
    ("reason", "string"),
    ("topic", "string"),
    ("partition", "int"),
    ("offset", "long"),
    ("quarantined_at", "timestamp"),
)
QUARANTINE_DDL = ", ".join(f"{name} {typ}" for name, typ in QUARANTINE_FIELDS)

ALERT_KINDS = ("global", "ip", "url")
# Alert JSON value on `alerts` (key = alert_id). Times are ISO-8601 UTC strings.
ALERT_FIELDS: tuple[tuple[str, str], ...] = (
    ("alert_id", "string"),  # deterministic from (kind, key, window_start, window_end)
    ("kind", "string"),  # one of ALERT_KINDS
    ("key", "string"),  # the IP, the URL, or "*" for global
    ("window_start", "string"),
    ("window_end", "string"),
    ("requests", "long"),
    ("errors", "long"),
    ("error_rate", "double"),
    ("threshold", "double"),
    ("thresholds_version", "long"),
    ("severity", "string"),  # "warning" | "major" | "critical"
    ("detected_at", "string"),
    ("explanation", "string"),  # human summary: top URLs / IPs / statuses in the window
)
ALERT_COLUMNS: tuple[str, ...] = tuple(name for name, _ in ALERT_FIELDS)

# Incident events on `alerts` (key = alert_id), what the detector publishes now: one record
# per firing / escalated / resolved of an incident (consecutive breaching windows of one
# kind and key; chaussettes.incidents). Readers take a record without "event" as an old
# per-window alert (ALERT_FIELDS), i.e. a firing.
INCIDENT_EVENTS = ("firing", "escalated", "resolved")
INCIDENT_EVENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("event", "string"),  # one of INCIDENT_EVENTS
    ("incident_id", "string"),  # deterministic from (kind, key, first breaching window start)
    ("alert_id", "string"),  # deterministic from (incident_id, event, severity)
    ("kind", "string"),
    ("key", "string"),
    ("window_start", "string"),  # the breaching window (for resolved: the last one)
    ("window_end", "string"),
    ("requests", "long"),
    ("errors", "long"),
    ("error_rate", "double"),
    ("threshold", "double"),  # the error rate the window had to exceed
    ("severity", "string"),
    ("first_window_start", "string"),  # the incident so far
    ("last_window_end", "string"),
    ("peak_error_rate", "double"),
    ("windows_breached", "long"),
    ("thresholds_version", "long"),
    ("detected_at", "string"),
    ("explanation", "string"),
    # "resolved_at" (string) follows on a resolved event: the event time it resolved at
)
INCIDENT_EVENT_COLUMNS: tuple[str, ...] = tuple(name for name, _ in INCIDENT_EVENT_FIELDS)
# Quarantine reasons the detector adds to the line parser's (logformat.REASONS)
DETECTOR_REASONS = ("future_time",)

# Detector status file (written atomically after every micro-batch). Keys:
#   state ("running" | "failed" | "stopped"), pid, started_at, updated_at (ISO UTC),
#   batch_id, input_rows, input_rows_per_s, processed_rows_per_s,
#   end_offsets {topic: {partition: offset}}, lag {topic: {partition: n}}, total_lag,
#   thresholds_version, thresholds_source, thresholds_error (null when the last load was good),
#   quarantined_total, alerts_published_total (incident events), alerts_last_batch, error (null or message)
STATUS_KEYS = (
    "state", "pid", "started_at", "updated_at", "batch_id", "input_rows",
    "input_rows_per_s", "processed_rows_per_s", "end_offsets", "lag", "total_lag",
    "thresholds_version", "thresholds_source", "thresholds_error",
    "quarantined_total", "alerts_published_total", "alerts_last_batch", "error",
)


def spark_schema(fields: tuple[tuple[str, str], ...]):
    """A pyspark StructType for one of the field lists above (imports pyspark lazily)."""
    from pyspark.sql.types import StructType

    return StructType.fromDDL(", ".join(f"{n} {t}" for n, t in fields))
