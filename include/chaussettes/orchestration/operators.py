"""Operators of the DAGs (importable by the workers, like the sensors)."""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowFailException

JOB_ERROR_MARK = "calibrate_thresholds: error:"


class CalibrationSubmitOperator(SparkSubmitOperator):
    """``SparkSubmitOperator`` for jobs/calibrate_thresholds.py.

    - Refuses a connection that resolves to ``--master yarn`` by accident (a ``spark_default``
      written as a raw ``spark://local[2]`` URI does, silently).
    - The job's own verdict (exit 1/2 with a one-line ``calibrate_thresholds: error: ...``: short
      history, target unreachable, bad parameters) fails the task at once with that line;
      retries are kept for infrastructure failures.
    """

    def _conn_host(self) -> str:
        try:
            return str(self._hook.get_connection(self._conn_id).host or "")
        except Exception:  # noqa: BLE001 - no connection at all: the hook's yarn default
            return ""

    def execute(self, context: Any) -> None:
        if self._hook is None:
            self._hook = self._get_hook()
        master = str(self._hook._connection.get("master") or "")
        self.log.info("spark_default resolves to --master %s", master)
        if master == "yarn" and self._conn_host() != "yarn":
            raise AirflowFailException(
                "connection spark_default resolves to --master yarn: write AIRFLOW_CONN_SPARK_DEFAULT "
                'as JSON, e.g. {"conn_type": "spark", "host": "local[2]"}')
        try:
            super().execute(context)
        except AirflowFailException:
            raise
        except Exception as exc:
            lines = [line.strip() for line in str(exc).splitlines() if JOB_ERROR_MARK in line]
            if lines:
                raise AirflowFailException(f"the calibration job refused: {lines[-1]}") from None
            raise
