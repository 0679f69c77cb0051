"""Airflow 3 for the local stack: `airflow standalone` on SQLite under the run folder.

Every listener on ``bind_host`` (127.0.0.1): the API server's host is set, and the scheduler
and triggerer run without their task-log servers, which Airflow binds to every interface
whatever its configuration (see :func:`standalone`).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

from chaussettes import security, sparkconf
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
        "AIRFLOW__API__HOST": settings.bind_host,  # Airflow's default: 0.0.0.0
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": settings.bind_host,
        # Task processes reach the API server here; its default assumes port 8080.
        "AIRFLOW__API__BASE_URL": f"http://{settings.bind_host}:{settings.airflow_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{settings.bind_host}:{settings.airflow_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(spark_conn),
        "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(kafka_conn),
        # spark-submit and airflow come from the venv, whatever the caller's PATH.
        "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
        **sparkconf.process_env(settings),  # what the calibration's spark-submit gets too
    }
    # Security on: login required for every user, Kafka over mutual TLS, the Spark secret.
    env.update(security.airflow_env(settings))
    return env


def passwords_file(settings: Settings) -> Path:
    return settings.airflow_home / "simple_auth_manager_passwords.json.generated"


def _healthy(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://{settings.bind_host}:{settings.airflow_port}/api/v2/monitor/health", timeout=2
        ) as resp:
            health = json.load(resp)
    except (OSError, ValueError):
        return False
    return all(
        health.get(part, {}).get("status") == "healthy"
        for part in ("metadatabase", "scheduler")
    )


def standalone() -> None:
    """``airflow standalone`` whose scheduler and triggerer serve no task logs over HTTP.

    Their log servers (ports 8793 and 8794) bind to every interface whatever the configuration
    (``airflow.utils.serve_logs``: ``host=""``) and hand out task logs to anyone holding a token
    signed with the API secret. On one machine the API server reads the same log files from
    disk, so the UI shows every log without them."""
    from airflow.cli.commands.standalone_command import StandaloneCommand
    from airflow.configuration import write_default_airflow_configuration_if_needed

    # What the `airflow` command does first: one airflow.cfg, so one JWT secret, before the
    # processes start (else each writes its own, and tasks' tokens fail the API server's check).
    write_default_airflow_configuration_if_needed()

    class Subcommands(dict):
        def __setitem__(self, name, sub) -> None:
            if name in ("scheduler", "triggerer"):
                sub.command = [*sub.command, "--skip-serve-logs"]
            super().__setitem__(name, sub)

    command = StandaloneCommand()
    command.subcommands = Subcommands()
    command.run()


def component(settings: Settings) -> Component:
    def prepare() -> None:
        settings.airflow_home.mkdir(parents=True, exist_ok=True)
        if security.enabled(settings):
            security.write_airflow_passwords(settings)

    return Component(
        name="airflow",
        argv=[sys.executable, "-m", "chaussettes.stack.airflow"],  # standalone(), below
        env=airflow_env(settings),
        ports=[(settings.airflow_port, "CHAUSSETTES_AIRFLOW_PORT")],
        healthy=lambda: _healthy(settings),
        start_timeout_s=180.0,
        prepare=prepare,
        urls=[f"http://{settings.bind_host}:{settings.airflow_port}/  (Airflow UI; user admin)"],
        notes=[f"Airflow users and passwords: {passwords_file(settings)}"],
    )


if __name__ == "__main__":
    standalone()
