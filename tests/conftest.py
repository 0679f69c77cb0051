"""Shared fixtures: a real Tansu broker, a local[2] SparkSession, a migrated Airflow home.

Everything a fixture starts, it stops. Tests share one broker, so each test
creates fresh topics with ``new_topic``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from chaussettes import settings as settings_mod
from chaussettes.broker import LocalBroker
from chaussettes.topics import ensure_topics

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    b = LocalBroker(run_dir=tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def settings(broker, tmp_path):
    return settings_mod.load(
        env={}, home=tmp_path / "home", bootstrap_servers=broker.bootstrap_servers,
        kafka_timeout_s=5.0,
    )


@pytest.fixture
def new_topic(broker):
    """A factory of fresh, uniquely named topics on the shared broker."""
    conf = settings_mod.load(env={}, bootstrap_servers=broker.bootstrap_servers)

    def make(partitions: int = 4, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        ensure_topics(conf, {name: partitions})
        return name

    return make


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from chaussettes.sparkconf import build_session

    conf = settings_mod.load(env={}, home=tmp_path_factory.mktemp("spark-home"))
    session = build_session(
        "chaussettes-tests", conf, master="local[2]",
        extra={"spark.ui.enabled": "false",
               "spark.sql.warehouse.dir": str(tmp_path_factory.mktemp("warehouse"))},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory, broker):
    """A migrated Airflow home and the environment for `airflow ...` subprocesses."""
    from chaussettes.stack.airflow import airflow_env as make_env

    home = tmp_path_factory.mktemp("chaussettes-home")
    conf = settings_mod.load(env={}, home=home, bootstrap_servers=broker.bootstrap_servers,
                             spark_master="local[2]", kafka_timeout_s=5.0)
    env = {**os.environ, **make_env(conf)}
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).parent / "airflow")
    result = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return env
