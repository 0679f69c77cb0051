"""A Spark standalone master and one worker, started from the pyspark wheel."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from chaussettes import security, sparkconf
from chaussettes.settings import Settings
from chaussettes.stack.base import Component


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _spark_env(settings: Settings) -> dict[str, str]:
    run = settings.run_dir / "spark"
    return {
        **sparkconf.process_env(settings),
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOG_DIR": str(run / "logs"),
        "SPARK_LOCAL_DIRS": str(run / "tmp"),
        "SPARK_WORKER_DIR": str(run / "work"),
        "SPARK_NO_DAEMONIZE": "1",
        **security.spark_env(settings),  # spark.authenticate + its secret, when security is on
    }


def _master_json(settings: Settings) -> dict | None:
    url = f"http://{settings.bind_host}:{settings.spark_master_webui_port}/json/"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return None


def alive_workers(settings: Settings) -> int:
    state = _master_json(settings) or {}
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")


def master(settings: Settings) -> Component:
    spark_class = str(spark_home() / "bin" / "spark-class")
    return Component(
        name="spark-master",
        argv=[spark_class, "org.apache.spark.deploy.master.Master", "--host", settings.bind_host,
              "--port", str(settings.spark_master_port),
              "--webui-port", str(settings.spark_master_webui_port)],
        # Spark 4 also opens its REST submission server (port 6066, no authentication: any
        # local user could run code as the platform); nothing here submits through it.
        env={**_spark_env(settings), "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"},
        ports=[(settings.spark_master_port, "CHAUSSETTES_SPARK_MASTER_PORT"),
               (settings.spark_master_webui_port, "CHAUSSETTES_SPARK_MASTER_WEBUI_PORT")],
        healthy=lambda: (_master_json(settings) or {}).get("status") == "ALIVE",
        start_timeout_s=60.0,
        prepare=lambda: (settings.run_dir / "spark" / "work").mkdir(parents=True, exist_ok=True),
        urls=[f"{settings.spark_master}  (UI http://{settings.bind_host}:{settings.spark_master_webui_port}/)"],
    )


def worker(settings: Settings) -> Component:
    spark_class = str(spark_home() / "bin" / "spark-class")
    return Component(
        name="spark-worker",
        argv=[spark_class, "org.apache.spark.deploy.worker.Worker",
              f"spark://{settings.bind_host}:{settings.spark_master_port}", "--host", settings.bind_host,
              "--cores", str(settings.spark_worker_cores), "--memory", settings.spark_worker_memory,
              "--webui-port", str(settings.spark_worker_webui_port),
              "--work-dir", str(settings.run_dir / "spark" / "work")],
        env=_spark_env(settings),
        ports=[(settings.spark_worker_webui_port, "CHAUSSETTES_SPARK_WORKER_WEBUI_PORT")],
        healthy=lambda: alive_workers(settings) >= 1,
        start_timeout_s=60.0,
        urls=[(f"worker UI http://{settings.bind_host}:{settings.spark_worker_webui_port}/  "
              f"({settings.spark_worker_cores} cores, {settings.spark_worker_memory})")],
    )


def component(settings: Settings) -> list[Component]:
    return [master(settings), worker(settings)]
