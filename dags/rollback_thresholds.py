"""
### Roll back the thresholds to an earlier version

Manual only: **Trigger ▸ form**, pick the *version* to make current (the
`calibrate_thresholds` runs and the operations page list them; `python -m chaussettes.artifacts list`
too) and say why.

1. **check_version** — lists the stored versions in its log and refuses a version that does
   not exist or is corrupt (checksum of `seuils.json` against its `meta.json`, schema).
2. **pin_version** — re-points `CURRENT` at it (atomic rename) and emits an event on the
   `chaussettes_thresholds` asset with the version and its validation figures.

The streaming detector picks the change up at its next micro-batch (hot reload); the alerts
it publishes then carry the new `thresholds_version`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, task
from chaussettes.orchestration.assets import THRESHOLDS
from chaussettes.orchestration.common import DEFAULT_ARGS

PARAMS = {
    "version": Param(1, type="integer", minimum=1, title="Version",
                     description="The stored thresholds version to make current."),
    "reason": Param("manual rollback", type="string", minLength=1, maxLength=500, title="Reason",
                    description="Kept in the store's history with the switch."),
}


@dag(
    dag_id="rollback_thresholds",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["chaussettes", "thresholds"],
    doc_md=__doc__,
)
def rollback_thresholds():
    @task
    def check_version(**context) -> int:
        """Refuse a missing or corrupt version (checksum, schema) before touching CURRENT."""
        from airflow.sdk.exceptions import AirflowFailException
        from chaussettes import artifacts
        from chaussettes.orchestration import common

        store = artifacts.ThresholdsStore.from_settings(common.load_settings())
        for item in store.list():
            mark = "*" if item.current else " "
            state = "ok" if item.ok else f"CORRUPT: {item.error}"
            rate = (item.meta.get("validation") or {}).get("alert_rate")
            print(f"{mark} v{item.version}  published {item.meta.get('published_at')}  "
                  f"alert_rate {rate}  {state}")
        version = int(context["params"]["version"])
        try:
            store.verify(version)
        except artifacts.ArtifactError as exc:
            raise AirflowFailException(f"rollback refused: {exc}") from None
        return version

    @task(outlets=[THRESHOLDS])
    def pin_version(version: int, **context) -> dict:
        """Make the version current (atomic switch) and emit the asset event."""
        from airflow.sdk.exceptions import AirflowFailException
        from chaussettes import artifacts
        from chaussettes.orchestration import common

        store = artifacts.ThresholdsStore.from_settings(common.load_settings())
        previous = store.current_version()
        try:
            pinned = store.pin(version, run=common.run_info(context),
                               reason=str(context["params"].get("reason") or ""))
        except artifacts.ArtifactError as exc:
            raise AirflowFailException(f"rollback refused: {exc}") from None
        extra = {"action": "rollback", "version": pinned.version, "previous": previous,
                 "path": str(pinned.thresholds_path), "sha256": pinned.meta.get("sha256"),
                 "validation": pinned.meta.get("validation"),
                 "reason": context["params"].get("reason")}
        context["outlet_events"][THRESHOLDS].extra = extra
        print(f"current thresholds version: {pinned.version} (was {previous})")
        return extra

    pin_version(check_version())


rollback_thresholds()
