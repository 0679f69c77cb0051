"""
### Housekeeping: retention of the archive, the error events and the quarantine

Daily at 03:30 UTC (after the nightly calibration), and on demand with **Trigger ▸ form**.
The detector writes its outputs by the hour (`date=YYYY-MM-DD/hour=HH`) and never deletes
anything: without this DAG a full disk ends up failing every micro-batch.

1. **plan** — the retention of each folder: the form's *days*, else the settings
   (`CHAUSSETTES_ARCHIVE_RETENTION_DAYS`, `_ERRORS_`, `_QUARANTINE_`); an hour is past retention
   when it ended at or before the run's data interval end minus the retention (never the
   wall clock). **The archive always keeps what the calibration reads** — its default lookback
   plus a day for a late or retried run — whatever the form says; the log says when it does.
2. **sweep** (one per folder) — deletes the whole hours past retention (each renamed aside
   first, so no reader sees half of one; an hour written in the last hour is left for the
   next run; the detector's `_staging` is never touched) and measures the folder before and
   after. With *dry_run* it only says what it would delete.
3. **report** — one line per folder: size and partitions before → after, bytes freed, free
   space on the disk; the same figures are the task's return value (XCom).
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, task
from chaussettes.orchestration.common import DEFAULT_ARGS
from chaussettes.settings import Settings


def _days(folder: str, title: str) -> Param:
    default = getattr(Settings, f"{folder}_retention_days")
    return Param(None, type=["null", "integer"], minimum=1, maximum=3650, title=title,
                 description=f"Days kept. Empty: CHAUSSETTES_{folder.upper()}_RETENTION_DAYS "
                             f"({default} unless set).")


PARAMS = {
    "archive_days": _days("archive", "Archive retention (days)"),
    "errors_days": _days("errors", "Error events retention (days)"),
    "quarantine_days": _days("quarantine", "Quarantine retention (days)"),
    "dry_run": Param(False, type="boolean", title="Dry run",
                     description="Say what would be deleted and how much it holds; delete nothing."),
}


@dag(
    dag_id="housekeeping",
    schedule="30 3 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["chaussettes", "housekeeping"],
    doc_md=__doc__,
)
def housekeeping():
    @task
    def plan(**context) -> list[dict]:
        """Retention and cutoff per folder, from the form or the settings and the data interval."""
        from airflow.sdk.exceptions import AirflowFailException
        from chaussettes.orchestration import common
        from chaussettes.orchestration import housekeeping as hk

        try:
            entries = hk.plan(context["params"], context, common.load_settings())
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        for e in entries:
            print(f"{e['folder']}: {e['retention_days']} day(s), keeping {e['kept_hours']} h: "
                  f"hours ending at or before {e['cutoff']} go [{e['root']}]")
        return entries

    @task(map_index_template="{{ folder }}")
    def sweep(entry: dict) -> dict:
        """Delete (or, dry run, list) one folder's hours past retention; sizes before and after."""
        from airflow.sdk import get_current_context
        from chaussettes.orchestration import housekeeping as hk

        get_current_context()["folder"] = entry["folder"]  # names the mapped task in the UI
        return hk.sweep(entry)

    @task
    def report(results: list[dict]) -> dict:
        """Sizes per folder before and after, bytes freed (log and return value)."""
        from chaussettes.orchestration import housekeeping as hk

        out = {r["folder"]: r for r in results[:]}  # one read (iterating probes past the end)
        for r in out.values():
            print(hk.describe(r))
        free = min((r.get("free_bytes_on_disk") for r in out.values() if r.get("free_bytes_on_disk")),
                   default=None)
        if free is not None:
            print(f"free on disk: {hk.human(free)}")
        return out

    report(sweep.expand(entry=plan()))


housekeeping()
