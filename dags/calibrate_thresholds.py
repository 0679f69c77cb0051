"""
### Calibrate thresholds (`seuils.json`) from history

Nightly at 02:00 UTC, and on demand with **Trigger ▸ form** when traffic changed.

1. **plan** — the history range is the run's data interval end minus *lookback_hours* (or the
   form's *history_end*); never the wall clock.
2. **wait_for_history** — a deferrable sensor: at least *min_history_rows* rows in the source,
   else the run fails (or skips, *on_missing_history*) saying what it found.
3. **build_package** — the `chaussettes` package as a zip (`chaussettes.dist.build_zip`), shipped
   with `--py-files` once a probe shows the package works from a zip (else the log says why
   and the installed package is used).
4. **calibrate** — `spark-submit jobs/calibrate_thresholds.py` through the `spark_default`
   connection (`AIRFLOW_CONN_SPARK_DEFAULT`); writes a *candidate* into the store's
   `candidates/` folder. A Spark failure fails the run with the job's own error in this log.
5. **validate** — schema, then figures: in-sample incidents a day within the *budget*,
   enough judged evaluations, the held-out tail within what chance allows at that budget
   and its alert rate under its limit. A rejected candidate stays in `candidates/` for
   inspection; the current version is untouched.
6. **publish** — stored as the next immutable version `v<N>` and made current (atomic switch);
   emits an event on the `chaussettes_thresholds` asset with the version and its figures.
   With *dry_run* nothing is published.

The detector picks a new version up at its next micro-batch (hot reload). Roll back with
the `rollback_thresholds` DAG.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import Param, dag, task
from chaussettes.orchestration.assets import THRESHOLDS
from chaussettes.orchestration.calibration import LOOKBACK_HOURS
from chaussettes.orchestration.common import DEFAULT_ARGS
from chaussettes.orchestration.notifier import calibration_failed
from chaussettes.orchestration.operators import CalibrationSubmitOperator
from chaussettes.orchestration.sensors import HistorySensor

JOB = Path(__file__).resolve().parents[1] / "jobs" / "calibrate_thresholds.py"
_SPARK_SUBMIT = Path(sys.executable).with_name("spark-submit")

PARAMS = {
    "source": Param("archive", type="string", enum=["archive", "kafka", "files"], title="History source",
                    description="archive: the detector's Parquet archive; kafka: the http-logs topic; "
                                "files: access-log files (Combined, JSON, CSV, .gz)."),
    "input": Param("", type="string", title="Input",
                   description="Archive folder, topic, or log file/folder. Empty: the source's default "
                               "(CHAUSSETTES_ARCHIVE_DIR, topic http-logs)."),
    "lookback_hours": Param(LOOKBACK_HOURS, type="integer", minimum=1, maximum=2160, title="Lookback (hours)",
                            description="History length, ending at the run's data interval end."),
    "history_end": Param(None, type=["null", "string"], format="date-time", title="History end (optional)",
                         description="Calibrate on history ending here instead of the data interval end."),
    "window_length_s": Param(60, type="integer", minimum=10, maximum=3600, title="Window length (s)"),
    "window_slide_s": Param(10, type="integer", minimum=1, maximum=3600, title="Window slide (s)",
                            description="Must divide the window length."),
    "budget": Param(5.0, type="number", exclusiveMinimum=0, maximum=10000, title="Budget (incidents a day)",
                    description="False incidents a day the whole site may raise: the replayed history may not "
                                "have more; the evidence a breach needs rises until it does not."),
    "min_requests_global": Param(None, type=["null", "integer"], minimum=1, title="Min requests: global window",
                                 description="Below it a window is not judged. Empty: derived from the history."),
    "min_requests_ip": Param(None, type=["null", "integer"], minimum=1, title="Min requests: per IP window",
                                 description="Below it a window is not judged. Empty: derived from the history."),
    "min_requests_url": Param(None, type=["null", "integer"], minimum=1, title="Min requests: per URL window",
                                 description="Below it a window is not judged. Empty: derived from the history."),
    "min_history_rows": Param(1000, type="integer", minimum=1, title="Min history rows",
                              description="Fewer rows than this in the history: no calibration."),
    "history_wait_minutes": Param(0, type="integer", minimum=0, maximum=720, title="Wait for history (min)",
                                  description="How long the sensor waits for enough history (0: check once)."),
    "on_missing_history": Param("fail", type="string", enum=["fail", "skip"],
                                title="When history is missing"),
    "min_evaluations": Param(100, type="integer", minimum=1, title="Min judged evaluations",
                             description="Refuse a candidate validated on fewer judged windows."),
    "max_alert_rate_out_of_sample": Param(0.05, type="number", minimum=0, maximum=1,
                                          title="Max out-of-sample alert rate"),
    "dry_run": Param(False, type="boolean", title="Dry run",
                     description="Calibrate and validate, keep the candidate, publish nothing."),
}


@dag(
    dag_id="calibrate_thresholds",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "on_failure_callback": calibration_failed()},
    params=PARAMS,
    tags=["chaussettes", "thresholds", "spark"],
    doc_md=__doc__,
)
def calibrate_thresholds():
    @task(multiple_outputs=True)
    def plan(**context) -> dict:
        """Resolve the history range (from the data interval), input, candidate path and job args."""
        from chaussettes.orchestration import calibration, common

        planned = calibration.plan(context["params"], context, common.load_settings())
        print(f"history {planned['source']} {planned['input']} [{planned['start']}, {planned['end']})")
        return planned

    @task
    def build_package() -> str:
        """Zip the chaussettes package for spark-submit --py-files (chaussettes.dist.build_zip)."""
        from chaussettes.orchestration import calibration, common

        path, note = calibration.package_for_spark(common.load_settings())
        print(note)
        return path

    @task
    def validate(candidate: str, **context) -> dict:
        """Schema and validation figures of the candidate; a rejected one is kept, never current."""
        from airflow.sdk.exceptions import AirflowFailException
        from chaussettes.orchestration import calibration

        p = context["params"]
        try:
            figures = calibration.check_candidate(
                candidate, budget=float(p["budget"]), min_evaluations=int(p["min_evaluations"]),
                max_out_of_sample=float(p["max_alert_rate_out_of_sample"]))
        except calibration.CandidateRejected as exc:
            print(f"candidate kept for inspection: {candidate}")
            raise AirflowFailException(str(exc)) from None
        print(f"candidate accepted: {figures}")
        return figures

    @task(outlets=[THRESHOLDS])
    def publish(candidate: str, figures: dict, **context) -> dict:
        """Store the candidate as the next version, switch CURRENT, emit the asset event."""
        from airflow.sdk.exceptions import AirflowSkipException
        from chaussettes.orchestration import calibration, common

        if context["params"].get("dry_run"):
            raise AirflowSkipException(f"dry run: nothing published; candidate kept at {candidate}")
        extra = calibration.publish(candidate, common.load_settings(), context, figures)
        context["outlet_events"][THRESHOLDS].extra = extra
        print(f"published thresholds version {extra['version']} (now current): {extra['path']}")
        return extra

    planned = plan()
    history = HistorySensor(
        task_id="wait_for_history",
        source=planned["source"], input=planned["input"], start=planned["start"], end=planned["end"],
        min_rows="{{ params.min_history_rows }}", wait_s="{{ params.history_wait_minutes * 60 }}",
        on_missing="{{ params.on_missing_history }}", poll_s=30,
        doc_md="Enough history in the source for the range? Deferrable: waits without a worker slot.",
    )
    package = build_package()
    calibrate = CalibrationSubmitOperator(
        task_id="calibrate",
        conn_id="spark_default",
        application=str(JOB),
        py_files=package,
        application_args=planned["application_args"],
        conf=planned["spark_conf"],
        name="chaussettes-calibration",
        env_vars={"PYSPARK_PYTHON": sys.executable},
        spark_binary=str(_SPARK_SUBMIT) if _SPARK_SUBMIT.exists() else "spark-submit",
        retry_delay=timedelta(minutes=2),
        doc_md="`spark-submit jobs/calibrate_thresholds.py` (connection `spark_default`): writes the candidate.",
    )
    figures = validate(planned["candidate"])
    history >> package >> calibrate >> figures
    publish(planned["candidate"], figures)


calibrate_thresholds()
