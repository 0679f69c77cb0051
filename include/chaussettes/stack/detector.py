"""The streaming detector in the local stack, supervised by Airflow.

`make up` does not run the detector itself: once Airflow is up it unpauses the
`streaming_detector` DAG, whose supervisor starts the job (`spark-submit
jobs/stream_detector.py` on the stack's Spark master, one lock per checkpoint) and
restarts it when it dies or stalls; `up` then waits for its first micro-batch.
`down` holds the supervisor (so that a supervisor task still running cannot start
it again) and stops the job by process group. Without Airflow in the stack
(`--only ...`), `python -m chaussettes.supervisor start|stop|check` does the same by hand.
"""

from __future__ import annotations

import os
import subprocess

from chaussettes.settings import Settings
from chaussettes.stack.airflow import airflow_env, venv_bin
from chaussettes.stack.base import Component, metrics_urls
from chaussettes.supervisor import Supervisor

PLATFORM_DAGS = ("streaming_detector", "calibrate_thresholds", "rollback_thresholds", "housekeeping")


def _airflow(settings: Settings, *args: str) -> None:
    result = subprocess.run([str(venv_bin() / "airflow"), *args],
                            check=False, env={**os.environ, **airflow_env(settings)},
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"airflow {' '.join(args)} failed: {tail[0]}")


def _processing(supervisor: Supervisor) -> bool:
    """Healthy, and has completed a micro-batch (not only started)."""
    health = supervisor.check()
    return health.state == "healthy" and health.batch_id is not None


def component(settings: Settings) -> Component:
    supervisor = Supervisor(settings)

    def hand_over_to_airflow() -> None:
        supervisor.release()
        # A new DAG file can take minutes to reach a running scheduler; reserialize now.
        _airflow(settings, "dags", "reserialize")
        _airflow(settings, "dags", "unpause", "--yes", "--treat-dag-id-as-regex",
                 "^(" + "|".join(PLATFORM_DAGS) + ")$")

    def stop() -> None:
        supervisor.hold("stopped by `chaussettes stack down`")
        supervisor.stop(reason="stack down")

    return Component(
        name="detector",
        argv=None,
        healthy=lambda: _processing(supervisor),
        start_timeout_s=300.0,
        prepare=hand_over_to_airflow,
        stop=stop,
        urls=[f"supervised by the streaming_detector DAG; status {settings.detector_status_path}",
              *metrics_urls(settings.detector_metrics_port)],
        notes=[f"alerts on topic {settings.topic_alerts}; detector log {supervisor.log_path}"],
    )
