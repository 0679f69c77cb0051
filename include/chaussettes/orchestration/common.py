"""Helpers shared by the DAGs, their sensors and triggers (no Airflow import at module level)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

# Fields of Settings a trigger may carry in its (database-stored) kwargs: paths and addresses,
# never credentials (those come from the triggerer's own environment).
PORTABLE_FIELDS = ("home", "run_dir", "data_dir", "archive_dir", "checkpoint_dir", "artifacts_dir",
                   "bootstrap_servers", "topic_logs", "kafka_timeout_s", "spark_master")

DEFAULT_ARGS = {
    "owner": "chaussettes",
    "retries": 1,
    "retry_delay": dt.timedelta(seconds=30),
}


def load_settings(overrides: dict[str, Any] | None = None):
    from chaussettes import settings

    return settings.load(**{k: v for k, v in (overrides or {}).items() if v not in (None, "")})


def portable(settings) -> dict[str, Any]:
    """The settings a trigger needs, as JSON-able kwargs (no secrets)."""
    return {f: (str(getattr(settings, f)) if getattr(settings, f) is not None else None)
            for f in PORTABLE_FIELDS}


# What a run of the streaming_detector DAG may choose, each checked here and by its Param in
# the DAG (the form and the REST API refuse anything else with the reason): the command is
# never a parameter (settings.detector_command, from the environment only), the checkpoint is a
# folder name under <checkpoint_dir>, the trigger follows chaussettes.durations.
# (?![\s\S]) ends the string for Python's re and JSON schema's ECMAScript alike ($ would also
# match before a final newline in Python).
CHECKPOINT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}(?![\s\S])"
LOCAL_MASTER_PATTERN = r"^(?:local\[[1-9]\])?(?![\s\S])"  # empty: the stack's master (settings)
MAX_OFFSETS_PER_TRIGGER_MAX = 10_000_000


def refuse_unknown(params: dict[str, Any], known) -> None:
    """A run conf may carry keys the DAG does not declare (Airflow keeps them as free params):
    refuse them by name rather than ignore them silently."""
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}: this DAG takes only "
                         f"{', '.join(sorted(known))}")


def checkpoint_path(settings, name: str):
    """``<checkpoint_dir>/<name>``; a name only, never a path (no way out of CHAUSSETTES_HOME)."""
    import re

    if not isinstance(name, str) or not re.search(CHECKPOINT_NAME_PATTERN, name):
        raise ValueError(f"checkpoint {name!r}: expected a folder name (letters, digits, _ and -, "
                         f"at most 64) under {settings.checkpoint_dir}")
    return settings.checkpoint_dir / name


def supervisor_options(settings, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything ``build_supervisor`` needs, JSON-able (from the DAG's params, checked)."""
    from chaussettes.supervisor import DEFAULT_CHECKPOINT, DEFAULT_TRIGGER

    p = dict(params or {})
    options = {
        "settings": portable(settings),
        "master": p.get("spark_master") or None,
        "trigger": p.get("trigger", DEFAULT_TRIGGER),
        "stall_after_s": float(p.get("stall_after_s") or 180),
        "startup_grace_s": float(p.get("startup_grace_s") or 180),
        "checkpoint": p.get("checkpoint", DEFAULT_CHECKPOINT),
        "max_offsets_per_trigger": p.get("max_offsets_per_trigger"),
    }
    build_supervisor(options)  # the same checks as every later task: fail the first one
    return options


def build_supervisor(options: dict[str, Any]):
    """The Supervisor of these options; ValueError (one line) for anything outside the closed set."""
    import re

    from chaussettes.durations import trigger_seconds
    from chaussettes.supervisor import DEFAULT_CHECKPOINT, DEFAULT_TRIGGER, Supervisor

    o = dict(options)
    settings = load_settings(o.get("settings"))
    master = o.get("master") or ""
    if not isinstance(master, str) or not re.search(LOCAL_MASTER_PATTERN, master):
        raise ValueError(f"spark_master {master!r}: expected empty (the stack's master) or local[N]")
    trigger = o.get("trigger", DEFAULT_TRIGGER)
    trigger_seconds(trigger)
    extra_args: list[str] = []
    limit = o.get("max_offsets_per_trigger")
    if isinstance(limit, float) and limit.is_integer():  # JSON's 1.0, an integer to jsonschema
        limit = int(limit)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_OFFSETS_PER_TRIGGER_MAX:
            raise ValueError(f"max_offsets_per_trigger {limit!r}: expected a whole number from 1 "
                             f"to {MAX_OFFSETS_PER_TRIGGER_MAX:,}")
        extra_args = ["--max-offsets-per-trigger", str(limit)]
    return Supervisor(
        settings,
        checkpoint=checkpoint_path(settings, o.get("checkpoint", DEFAULT_CHECKPOINT)),
        master=master or None,
        trigger=trigger,
        extra_args=extra_args,
        stall_after_s=float(o.get("stall_after_s") or 180),
        startup_grace_s=float(o.get("startup_grace_s") or 180),
    )


def run_info(context) -> dict[str, Any]:
    """Who did it, for the store's history and meta.json."""
    dag_run = context.get("dag_run")
    return {
        "dag_id": getattr(dag_run, "dag_id", None),
        "run_id": getattr(dag_run, "run_id", None),
        "run_type": str(getattr(dag_run, "run_type", "") or ""),
        "logical_date": _iso(context.get("logical_date")),
        "data_interval_end": _iso(context.get("data_interval_end")),
        "conf": json.loads(json.dumps(getattr(dag_run, "conf", None) or {}, default=str)),
    }


def run_end(context) -> dt.datetime:
    """The end of the history a run covers: its data interval's end (its run_after when a manual
    run has no logical date). Never the wall clock."""
    for key in ("data_interval_end", "logical_date"):
        value = context.get(key)
        if value is not None:
            return _utc(value)
    dag_run = context.get("dag_run")
    value = getattr(dag_run, "run_after", None) or getattr(dag_run, "queued_at", None)
    if value is None:
        raise ValueError("the run has neither a data interval nor a run_after time")
    return _utc(value)


def parse_when(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(str(text).strip())
    return _utc(t)


def _utc(value) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).replace(microsecond=0)


def _iso(value) -> str | None:
    return _utc(value).isoformat().replace("+00:00", "Z") if value is not None else None


def safe_name(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:120]
