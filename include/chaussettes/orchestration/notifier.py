"""Airflow failures → the same Alertmanager as the incidents (Airflow's notifier interface).

``AlertmanagerNotifier`` is an ``airflow.sdk.BaseNotifier``: set it as a task's
``on_failure_callback`` (the DAGs do it through ``default_args``). When a task fails for good
(after its retries) it posts one alert: ``alertname=ChaussettesPipeline``, ``dag``, ``task``,
``severity``, ``site``; annotations: summary, the error, the run, the log URL.

A failure is an event, not a state: the alert stays firing for ``HOLD`` and then resolves on
its own; the shipped alertmanager.yml routes it to a receiver without resolved messages. The
same task failing again within the hold updates that alert (no second notification).
Alertmanager unreachable: a few tries within seconds, then one error line in the task log;
a callback never fails the task a second time.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from airflow.sdk import BaseNotifier

from chaussettes import alertmanager

log = logging.getLogger(__name__)

HOLD = dt.timedelta(hours=1)
ATTEMPTS = 3


def pipeline_alert(*, dag_id: str, task_id: str, severity: str, summary: str, site: str,
                   now: dt.datetime, run_id: str | None = None, try_number: Any = None,
                   error: str | None = None, log_url: str | None = None) -> dict:
    """The Alertmanager alert of one failed task (pure)."""
    annotations = {"summary": summary, "description": error or "the task failed (no error message)",
                   "dag_id": dag_id, "task_id": task_id}
    if run_id:
        annotations["run_id"] = str(run_id)
    if try_number is not None:
        annotations["try_number"] = str(try_number)
    if log_url:
        annotations["log_url"] = log_url
    alert = {"labels": {"alertname": alertmanager.PIPELINE_ALERT, "dag": dag_id, "task": task_id,
                        "severity": severity, "site": site},
             "annotations": annotations, "startsAt": alertmanager.rfc3339(now),
             "endsAt": alertmanager.rfc3339(now + HOLD)}
    if log_url:
        alert["generatorURL"] = log_url
    return alert


class AlertmanagerNotifier(BaseNotifier):
    """Posts a ``ChaussettesPipeline`` alert for the failed task to Alertmanager.

    :param summary: one line, templated (``{{ dag.dag_id }}``, ``{{ ti.task_id }}``...).
    :param severity: the alert's severity label.
    :param alertmanager_url: default ``CHAUSSETTES_ALERTMANAGER_URL`` of the task's process.
    """

    template_fields = ("summary", "severity", "alertmanager_url")

    def __init__(self, summary: str, severity: str = "critical", alertmanager_url: str | None = None):
        super().__init__()
        self.summary = summary
        self.severity = severity
        self.alertmanager_url = alertmanager_url

    def notify(self, context) -> None:
        from chaussettes.orchestration.common import load_settings

        settings = load_settings()
        ti = context.get("ti") or context.get("task_instance")
        dag = context.get("dag")
        dag_id = getattr(ti, "dag_id", None) or getattr(dag, "dag_id", "?")
        task_id = getattr(ti, "task_id", None) or "?"
        error = context.get("exception")
        alert = pipeline_alert(
            dag_id=dag_id, task_id=task_id, severity=self.severity, summary=self.summary,
            site=settings.alert_site, now=dt.datetime.now(dt.UTC), run_id=context.get("run_id"),
            try_number=getattr(ti, "try_number", None),
            error=(f"{type(error).__name__}: {error}" if error else None),
            log_url=getattr(ti, "log_url", None))
        url = self.alertmanager_url or settings.alertmanager_url
        for attempt in range(1, ATTEMPTS + 1):
            try:
                alertmanager.post_alerts(url, [alert], timeout=5.0)
            except alertmanager.AlertmanagerError as exc:
                if attempt == ATTEMPTS:
                    log.error("could not notify Alertmanager of %s.%s failing: %s", dag_id, task_id, exc)
                    return
                time.sleep(attempt)
            else:
                log.info("notified Alertmanager at %s: %s %s.%s", url, alertmanager.PIPELINE_ALERT, dag_id,
                         task_id)
                return


def supervisor_gave_up() -> AlertmanagerNotifier:
    """streaming_detector's tasks: one failing for good means the detector was not kept running."""
    return AlertmanagerNotifier(
        summary="the streaming detector's supervisor gave up: {{ ti.task_id }} failed in run {{ run_id }}; "
                "the detector may be down",
        severity="critical")


def calibration_failed() -> AlertmanagerNotifier:
    """calibrate_thresholds' tasks: no new thresholds version; the current one stays in force."""
    return AlertmanagerNotifier(
        summary="calibration failed: {{ ti.task_id }} in run {{ run_id }}; the current thresholds stay in force",
        severity="warning")
