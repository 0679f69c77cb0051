"""Deferrable sensors: a waiting check holds no worker slot (it defers to a trigger)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from chaussettes.orchestration import common
from chaussettes.orchestration.triggers import DetectorHealthTrigger, HistoryTrigger


def _f(value: Any, default: float) -> float:
    return float(value) if value not in (None, "") else default


class DetectorHealthSensor(BaseSensorOperator):
    """Reads the streaming detector's health (heartbeat age, micro-batch progress, lag).

    ``check="until_healthy"`` succeeds once the detector completes a micro-batch (newer than
    ``after_batch_id``), fails when it is dead or not healthy within ``timeout_s``.
    ``check="watch"`` watches it for ``watch_s`` and returns the outcome (``healthy``,
    ``dead`` or ``stalled``) as its XCom for the next task; it never fails on a bad outcome.
    """

    template_fields = ("supervisor", "watch_s", "poll_s", "timeout_s", "after_batch_id")
    ui_color = "#e0f2e9"

    def __init__(self, *, check: str = "until_healthy", supervisor: dict | str | None = None,
                 watch_s: Any = 600, poll_s: Any = 5, timeout_s: Any = 300,
                 after_batch_id: Any = None, confirmations: int = 2, **kwargs):
        kwargs.setdefault("timeout", 24 * 3600)
        super().__init__(**kwargs)
        self.check = check
        self.supervisor = supervisor or {}
        self.watch_s, self.poll_s, self.timeout_s = watch_s, poll_s, timeout_s
        self.after_batch_id = after_batch_id
        self.confirmations = confirmations

    def _trigger(self) -> DetectorHealthTrigger:
        after = self.after_batch_id
        if isinstance(after, dict):  # an upstream task's XCom: {"batch_id": ...}
            after = after.get("batch_id")
        after = int(after) if after not in (None, "", "None") else None
        return DetectorHealthTrigger(
            check=self.check, supervisor=dict(self.supervisor), poll_s=_f(self.poll_s, 5),
            watch_s=_f(self.watch_s, 600), timeout_s=_f(self.timeout_s, 300),
            after_batch_id=after, confirmations=self.confirmations)

    def execute(self, context) -> Any:
        trigger = self._trigger()
        self.log.info("deferring: %s check of the detector (poll every %ss)", self.check, trigger.poll_s)
        limit = (trigger.watch_s if self.check == "watch" else trigger.timeout_s) + 120
        self.defer(trigger=trigger, method_name="execute_complete",
                   timeout=dt.timedelta(seconds=limit))

    def execute_complete(self, context, event: dict | None = None) -> dict:
        event = event or {}
        health = event.get("health") or {}
        outcome = event.get("outcome")
        line = (f"detector {outcome}: {health.get('reason')} | pid {health.get('pid')}, batch "
                f"{health.get('batch_id')}, heartbeat {health.get('heartbeat_age_s')}s ago, lag "
                f"{health.get('lag')}, {health.get('input_rows_per_s')} rows/s, thresholds "
                f"v{health.get('thresholds_version')}")
        self.log.info(line)
        if self.check == "until_healthy" and outcome != "healthy":
            raise AirflowFailException(
                f"the detector did not become healthy ({outcome} after {event.get('elapsed_s')}s): "
                f"{health.get('reason')}")
        return {"outcome": outcome, **health}


class HistorySensor(BaseSensorOperator):
    """Waits until the calibration's history holds at least ``min_rows`` rows.

    Succeeds at once when it does; else defers (polling every ``poll_s``) up to ``wait_s``, then
    fails — or skips the rest of the run when ``on_missing="skip"`` — naming what it found.
    """

    template_fields = ("source", "input", "start", "end", "min_rows", "wait_s", "on_missing")
    ui_color = "#fdf3d8"

    def __init__(self, *, source: str, input: str, start: str, end: str, min_rows: Any,
                 wait_s: Any = 0, poll_s: float = 30.0, on_missing: str = "fail", **kwargs):
        kwargs.setdefault("timeout", 24 * 3600)
        super().__init__(**kwargs)
        self.source, self.input, self.start, self.end = source, input, start, end
        self.min_rows, self.wait_s, self.poll_s = min_rows, wait_s, poll_s
        self.on_missing = on_missing

    def execute(self, context) -> Any:
        from chaussettes.orchestration import history

        conf = common.load_settings()
        start, end = common.parse_when(self.start), common.parse_when(self.end)
        try:
            summary = history.summarize(conf, self.source, self.input or "", start, end)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        need = int(self.min_rows)
        if summary.rows >= need:
            self.log.info("enough history: %s (need %d)", summary.describe(), need)
            return summary.as_dict()
        wait_s = _f(self.wait_s, 0)
        if wait_s <= 0:
            return self._missing(summary.as_dict())
        self.log.info("not enough history yet: %s (need %d); waiting up to %.0fs",
                      summary.describe(), need, wait_s)
        self.defer(
            trigger=HistoryTrigger(source=self.source, input=self.input or "", start=start.isoformat(),
                                   end=end.isoformat(), min_rows=need, settings=common.portable(conf),
                                   poll_s=self.poll_s, timeout_s=wait_s),
            method_name="execute_complete", timeout=dt.timedelta(seconds=wait_s + 120))

    def execute_complete(self, context, event: dict | None = None) -> dict:
        event = event or {}
        if event.get("status") == "ok":
            self.log.info("enough history: %s", event["summary"])
            return event["summary"]
        return self._missing(event.get("summary") or {})

    def _missing(self, summary: dict) -> dict:
        errors = "; ".join(summary.get("errors") or [])
        message = (f"not enough history to calibrate: {summary.get('rows', 0)} rows from "
                   f"{summary.get('source')} {summary.get('input')} for [{summary.get('start')}, "
                   f"{summary.get('end')}), need {self.min_rows}" + (f" ({errors})" if errors else ""))
        if str(self.on_missing) == "skip":
            raise AirflowSkipException(message)
        raise AirflowFailException(message)
