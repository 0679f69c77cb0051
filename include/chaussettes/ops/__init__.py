"""The operations page: stream health, alerts, error-rate chart, threshold versions.

``chaussettes.ops.readers`` reads (status file, the tail of ``alerts``, the thresholds
store); ``chaussettes.ops.app.create_app`` serves them as a JSON API and one HTML page,
mounted inside Airflow's API server by ``plugins/chaussettes_ops.py`` under ``/chaussettes``.
Read-only: a rollback goes through the ``rollback_thresholds`` DAG.
"""
