"""
### Streaming detector supervisor

Keeps `spark-submit jobs/stream_detector.py` running, continuously: each run watches the
stream for *watch_minutes*, then the next run starts at once.

**Reading the grid at a glance** (one column per run):

| what you see | meaning |
| --- | --- |
| all green, `restart_if_needed` skipped (pink) | the stream was healthy for the whole watch |
| `restart_if_needed` green | the detector died or stalled and was restarted (the log says why, and the backoff) |
| `recovered` red | it did not come back: see `detector.log` named in the log |

1. **ensure_running** — starts the detector if none runs on its checkpoint (a lock on the
   checkpoint: never two), restarting with backoff if it was found dead.
2. **healthy** — a deferrable sensor: waits for a micro-batch of the running detector.
3. **watch_health** — a deferrable sensor reading the status file every *poll_s*: heartbeat
   age, micro-batch progress, lag. Ends early when the detector is **dead** (process gone or
   status `failed`) or **stalled** (no micro-batch for *stall_after_s* while records wait).
4. **restart_if_needed** — stops what is left and restarts it; consecutive restarts back off
   (10 s, 20 s, 40 s … 5 min, state in `<run_dir>/detector/supervisor.json`).
5. **recovered** — waits for the new process's first micro-batch.

Files: `<run_dir>/detector/` (`detector.log`, `detector.pid.json`, `events.jsonl`,
`supervisor.json`) and the status file `<run_dir>/detector-status.json`.

**Parameters** are a closed set of typed, bounded values: the trigger (`10s`, `500ms`, `2m`, the
detector's own grammar), the records per micro-batch, the checkpoint (a folder name under
`CHAUSSETTES_HOME`'s checkpoints) and `local[N]` instead of the stack's Spark master. The form and
the REST API refuse anything else with the reason; a key the DAG does not declare fails
`ensure_running`, naming it. The command is not a parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, task
from chaussettes.durations import TRIGGER_PATTERN
from chaussettes.orchestration.common import (
    CHECKPOINT_NAME_PATTERN,
    DEFAULT_ARGS,
    LOCAL_MASTER_PATTERN,
    MAX_OFFSETS_PER_TRIGGER_MAX,
)
from chaussettes.orchestration.notifier import supervisor_gave_up
from chaussettes.orchestration.sensors import DetectorHealthSensor
from chaussettes.supervisor import DEFAULT_CHECKPOINT, DEFAULT_TRIGGER

# A closed set: typed, bounded values only. The command is not a parameter (whoever may trigger
# a DAG must not run code as the platform); keys outside this dict fail the run by name.
PARAMS = {
    "watch_minutes": Param(10, type="integer", minimum=1, maximum=1440, title="Watch (minutes)",
                           description="How long one run watches the stream before the next run."),
    "poll_s": Param(5, type="integer", minimum=1, maximum=300, title="Health check every (s)"),
    "stall_after_s": Param(180, type="integer", minimum=10, maximum=86400, title="Stalled after (s)",
                           description="No micro-batch for this long while records wait: restart."),
    "startup_grace_s": Param(240, type="integer", minimum=10, maximum=3600, title="Start-up grace (s)",
                             description="Time a (re)started detector has to finish its first micro-batch."),
    "spark_master": Param("", type="string", pattern=LOCAL_MASTER_PATTERN, title="Spark master",
                          description="Empty: the stack's (CHAUSSETTES_SPARK_MASTER); or local[N], N 1-9."),
    "trigger": Param(DEFAULT_TRIGGER, type="string", pattern=TRIGGER_PATTERN, title="Micro-batch trigger",
                     description="10s, 500ms, 2m (1 to 4 digits; units ms, s, m): the detector's own "
                                 "grammar (chaussettes.durations)."),
    "max_offsets_per_trigger": Param(None, type=["null", "integer"], minimum=1,
                                     maximum=MAX_OFFSETS_PER_TRIGGER_MAX,
                                     title="Max records per micro-batch",
                                     description="Empty: the detector's default."),
    "checkpoint": Param(DEFAULT_CHECKPOINT, type="string", pattern=CHECKPOINT_NAME_PATTERN,
                        title="Checkpoint", description="A folder name under CHAUSSETTES_HOME's "
                        "checkpoints (letters, digits, _ and -), not a path."),
}


@dag(
    dag_id="streaming_detector",
    schedule="@continuous",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "on_failure_callback": supervisor_gave_up()},
    params=PARAMS,
    tags=["chaussettes", "streaming", "supervisor"],
    doc_md=__doc__,
)
def streaming_detector():
    @task(multiple_outputs=True)
    def ensure_running(**context) -> dict:
        """Start the detector unless one runs on the checkpoint (restart with backoff if it died)."""
        from airflow.sdk.exceptions import AirflowFailException
        from chaussettes.orchestration import common

        try:
            common.refuse_unknown(context["params"], PARAMS)
            opts = common.supervisor_options(common.load_settings(), context["params"])
        except ValueError as exc:  # out of the closed set: no retry can mend it
            raise AirflowFailException(str(exc)) from None
        sup = common.build_supervisor(opts)
        if sup.running():
            info, action = sup.pid_info() or {}, "already running"
        elif sup.pid_info():
            info, action = sup.restart("found not running at the start of a watch"), "restarted"
        else:
            info, action = sup.start(reason="supervisor DAG"), "started"
        print(f"detector {action}: pid {info.get('pid')}, log {sup.log_path}")
        return {"pid": info.get("pid"), "action": action, "supervisor": opts}

    @task
    def restart_if_needed(watch: dict, supervisor: dict) -> dict:
        """Restart a dead or stalled detector, after the backoff; skip when it was healthy."""
        from airflow.sdk.exceptions import AirflowSkipException
        from chaussettes.orchestration import common

        outcome = watch.get("outcome")
        if outcome == "healthy":
            raise AirflowSkipException(f"healthy for the whole watch: {watch.get('reason')}")
        sup = common.build_supervisor(supervisor)
        delay = sup.next_restart_in()
        print(f"detector {outcome}: {watch.get('reason')}; restarting"
              + (f" after a backoff of {delay:.0f}s" if delay else " now"))
        info = sup.restart(f"{outcome}: {watch.get('reason')}")
        state = sup.state()
        print(f"restarted: pid {info['pid']} (was {info['old_pid']}), restarts in the backoff window: "
              f"{len(state.get('restarts', []))}, total: {state.get('total_restarts')}, "
              f"log {sup.log_path}")
        return {"pid": info["pid"], "old_pid": info["old_pid"], "outcome": outcome,
                "waited_s": info["waited_s"], "total_restarts": state.get("total_restarts")}

    running = ensure_running()
    healthy = DetectorHealthSensor(
        task_id="healthy", check="until_healthy", supervisor=running["supervisor"],
        poll_s="{{ params.poll_s }}", timeout_s="{{ params.startup_grace_s }}",
        doc_md="Waits (deferred) for a micro-batch of the running detector.",
    )
    watch = DetectorHealthSensor(
        task_id="watch_health", check="watch", supervisor=running["supervisor"],
        poll_s="{{ params.poll_s }}", watch_s="{{ params.watch_minutes * 60 }}",
        doc_md="Watches heartbeat age, micro-batch progress and lag (deferred); ends early on dead/stalled.",
    )
    restarted = restart_if_needed(watch.output, running["supervisor"])
    recovered = DetectorHealthSensor(
        task_id="recovered", check="until_healthy", supervisor=running["supervisor"],
        poll_s="{{ params.poll_s }}", timeout_s="{{ params.startup_grace_s }}",
        doc_md="After a restart: waits (deferred) for the new process's first micro-batch.",
    )
    healthy >> watch
    restarted >> recovered


streaming_detector()
