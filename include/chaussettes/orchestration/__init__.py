"""What the Airflow DAGs of ``dags/`` share: sensors, their triggers, assets, task helpers.

Triggers live here (an installed package), not in ``dags/``: the triggerer imports them by
class path (``chaussettes.orchestration.triggers.DetectorHealthTrigger``). Importing this
package does not import Airflow; ``sensors`` and ``triggers`` do.
"""
