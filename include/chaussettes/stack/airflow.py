"""Airflow 3 for the local stack: `airflow standalone` on SQLite under the run folder."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

from chaussettes import security
from chaussettes.settings import PACKAGE_DIR, Settings
from chaussettes.stack.base import Component

REPO = PACKAGE_DIR.parents[1]


def venv_bin() -> Path:
    return Path(sys.executable).parent


def airflow_env(settings: Settings, airflow_home: Path | None = None) -> dict[str, str]:
    """Environment for every Airflow process of this project (standalone, dags test, CLI)."""
    home = airflow_home or settings.airflow_home
    spark_conn = {"conn_type": "spark", "host": settings.spark_master}
    if settings.spark_master.startswith("spark://"):
        # The hook wants host=spark://h and port separately.
        hostport = settings.spark_master[len("spark://"):]
        host, _, port = hostport.partition(":")
        spark_conn = {"conn_type": "spark", "host": f"spark://{host}", "port": int(port or 7077)}
    kafka_conn = {"conn_type": "kafka", "extra": settings.kafka_client_config()}
    env = {
        **settings.as_env(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        # Task processes reach the API server here; its default assumes port 8080.
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{settings.airflow_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{settings.airflow_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(spark_conn),
        "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(kafka_conn),
        # spark-submit and airflow come from the venv, whatever the caller's PATH.
        "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
    }
    # Security on: login required for every user, Kafka over mutual TLS, the Spark secret.
    env.update(security.airflow_env(settings))
    return env


def passwords_file(settings: Settings) -> Path:
    return settings.airflow_home / "simple_auth_manager_passwords.json.generated"


def _healthy(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{settings.airflow_port}/api/v2/monitor/health", timeout=2
        ) as resp:
            health = json.load(resp)
    except (OSError, ValueError):
        return False
    return all(
        health.get(part, {}).get("status") == "healthy"
        for part in ("metadatabase", "scheduler")
    )


def component(settings: Settings) -> Component:
    airflow = shutil.which("airflow", path=str(venv_bin())) or "airflow"

    def prepare() -> None:
        settings.airflow_home.mkdir(parents=True, exist_ok=True)
        if security.enabled(settings):
            security.write_airflow_passwords(settings)

    return Component(
        name="airflow",
        argv=[airflow, "standalone"],
        env=airflow_env(settings),
        ports=[(settings.airflow_port, "CHAUSSETTES_AIRFLOW_PORT")],
        healthy=lambda: _healthy(settings),
        start_timeout_s=180.0,
        prepare=prepare,
        urls=[f"http://127.0.0.1:{settings.airflow_port}/  (Airflow UI; user admin)"],
        notes=[f"Airflow users and passwords: {passwords_file(settings)}"],
    )
