"""The Airflow assets the DAGs produce (declared once, imported by every DAG that names them)."""

from __future__ import annotations

from airflow.sdk import Asset

#: Every publish (calibrate_thresholds) and rollback (rollback_thresholds) emits an event on
#: this asset; its ``extra`` carries the version now current and its validation figures.
THRESHOLDS = Asset(
    name="chaussettes_thresholds",
    uri="file:///chaussettes/artifacts/thresholds/CURRENT",
    group="chaussettes",
    extra={"description": "the thresholds version in force (seuils.json), versioned store"},
)
