"""Airflow failures reach the same Alertmanager (chaussettes.orchestration.notifier): real
`airflow dags test` runs that fail, a real Alertmanager that receives the notifier's alert."""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from alerting_helpers import Alertmanager, WebhookReceiver, am_config
from chaussettes import procs
from chaussettes import settings as settings_mod
from chaussettes.orchestration.notifier import AlertmanagerNotifier, pipeline_alert

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture
def receiving(tmp_path):
    webhook = WebhookReceiver()
    manager = Alertmanager(tmp_path / "am", am_config(webhook.url, tmp_path / "am.yml", group_wait="1s")).start()
    yield manager, webhook
    manager.stop()
    webhook.close()


def _dags_test(env, dag_id: str, conf: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_pipeline_alert_labels_and_hold():
    now = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)
    alert = pipeline_alert(dag_id="calibrate_thresholds", task_id="calibrate", severity="warning",
                           summary="calibration failed", site="paris", now=now, run_id="scheduled__x",
                           try_number=2, error="RuntimeError: spark-submit exited 1", log_url="http://af/log")
    assert alert["labels"] == {"alertname": "ChaussettesPipeline", "dag": "calibrate_thresholds",
                               "task": "calibrate", "severity": "warning", "site": "paris"}
    assert alert["annotations"]["description"] == "RuntimeError: spark-submit exited 1"
    assert alert["annotations"]["try_number"] == "2" and alert["generatorURL"] == "http://af/log"
    assert (alert["startsAt"], alert["endsAt"]) == ("2026-12-01T02:00:00.000Z", "2026-12-01T03:00:00.000Z")


def test_alertmanager_down_is_one_error_line_not_a_second_failure(caplog, monkeypatch):
    monkeypatch.setenv("CHAUSSETTES_ALERTMANAGER_URL", f"http://127.0.0.1:{procs.free_port()}")
    notifier = AlertmanagerNotifier(summary="x failed")
    ti = SimpleNamespace(dag_id="streaming_detector", task_id="recovered", try_number=1, log_url=None)
    with caplog.at_level(logging.ERROR):
        notifier.notify({"ti": ti, "run_id": "r1", "exception": RuntimeError("did not come back")})
    assert "could not notify Alertmanager of streaming_detector.recovered failing" in caplog.text
    assert "is unreachable" in caplog.text


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_failed_calibration_notifies_alertmanager(airflow_env, receiving, tmp_path):
    manager, webhook = receiving
    conf = settings_mod.load(env={}, home=tmp_path / "home", alertmanager_url=manager.url, alert_site="af")
    env = {**airflow_env, **conf.as_env()}
    run = _dags_test(env, "calibrate_thresholds", {"source": "files", "input": str(tmp_path / "none.log"),
                                                  "lookback_hours": 1, "min_history_rows": 1000})
    assert run.returncode != 0
    [alert] = manager.alerts(alertname="ChaussettesPipeline")
    assert alert["labels"] == {"alertname": "ChaussettesPipeline", "dag": "calibrate_thresholds",
                               "task": "wait_for_history", "severity": "warning", "site": "af"}
    assert alert["annotations"]["summary"].startswith("calibration failed: wait_for_history in run ")
    assert "not enough history to calibrate" in alert["annotations"]["description"]
    assert webhook.wait_for(lambda w: w.notifications(alertname="ChaussettesPipeline"), 30)
    [note] = webhook.notifications(alertname="ChaussettesPipeline")
    assert note["receiver"] == "pipeline" and note["groupLabels"] == {
        "alertname": "ChaussettesPipeline", "dag": "calibrate_thresholds", "task": "wait_for_history"}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_supervisor_giving_up_on_the_detector_notifies_alertmanager(airflow_env, receiving, tmp_path):
    manager, _ = receiving
    conf = settings_mod.load(env={}, home=tmp_path / "home", alertmanager_url=manager.url)
    dead_on_arrival = f"{sys.executable} -c 'import sys; sys.exit(3)'"
    # The command comes from Airflow's environment, never from a run's conf.
    env = {**airflow_env, **conf.as_env(), "CHAUSSETTES_DETECTOR_COMMAND": dead_on_arrival}
    run = _dags_test(env, "streaming_detector", {"poll_s": 1, "startup_grace_s": 10, "watch_minutes": 1})
    assert run.returncode != 0
    alerts = manager.alerts(alertname="ChaussettesPipeline", dag="streaming_detector")
    assert alerts, run.stdout[-3000:] + run.stderr[-3000:]
    [alert] = alerts
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["task"] == "healthy"
    assert "the streaming detector's supervisor gave up: healthy failed" in alert["annotations"]["summary"]
