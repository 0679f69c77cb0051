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


def supervisor_options(settings, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything ``build_supervisor`` needs, JSON-able (from the DAG's params)."""
    p = dict(params or {})
    return {
        "settings": portable(settings),
        "master": p.get("spark_master") or None,
        "trigger": p.get("trigger") or "10s",
        "stall_after_s": float(p.get("stall_after_s") or 180),
        "startup_grace_s": float(p.get("startup_grace_s") or 180),
        "checkpoint": p.get("checkpoint") or None,
        "argv": _argv(p.get("detector_command")),
        "extra_args": list(p.get("detector_args") or []),
    }


def _argv(value: Any) -> list[str] | None:
    if not value:
        return None
    if isinstance(value, str):
        import shlex

        return shlex.split(value)
    return [str(v) for v in value]


def build_supervisor(options: dict[str, Any]):
    from chaussettes.supervisor import Supervisor

    o = dict(options)
    return Supervisor(
        load_settings(o.get("settings")),
        checkpoint=o.get("checkpoint") or None,
        argv=o.get("argv") or None,
        master=o.get("master") or None,
        trigger=o.get("trigger") or "10s",
        extra_args=list(o.get("extra_args") or []),
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
