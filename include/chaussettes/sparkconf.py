"""The Spark configuration every job and test shares.

Measured here (ENVIRONMENT.md): the default 200 shuffle partitions cut a windowed
query's throughput by half on 2 cores, and Python workers must be the venv's so
they have pyarrow and this package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from chaussettes import jvm
from chaussettes.settings import Settings

# The throughput collector: Spark's jobs here are batch-shaped (a micro-batch every 10 s
# at most), and on 2 cores G1's concurrent work took ~10% of the detector's throughput
# (measured: 1M-event micro-batches 100k -> 112k events/s). A spark-submit launch passes
# it on its command line (``submit_conf``, or the operator's conf): a session's own
# config comes too late for the JVM it runs in.
JVM_OPTIONS = "-XX:+UseParallelGC"
# and the platform's Java functions (``chaussettes.jvm``), when their jar is built
JVM_CONF = {"spark.driver.extraJavaOptions": JVM_OPTIONS, "spark.executor.extraJavaOptions": JVM_OPTIONS,
            **jvm.launch_conf()}

# glibc's malloc gives a multi-threaded process up to 8 arenas per CPU, and memory freed in
# one arena stays with it. In local mode the state store (RocksDB, through JNI) lives in the
# driver's JVM beside Spark's ~100 threads. Two arenas (Hadoop's scripts set 4: no lower here).
# The keys benchmark: the driver's peak with 1M client IPs 1,462, 1,507 and 1,537 MB vs 1,562
# and 1,561 with glibc's default (runs of three rounds each, the same session): ~60 MB lower,
# about the spread between runs; the throughput the same (10M events, six runs alternated:
# means 122.4k vs 120.0k events/s). Every process this platform launches gets it
# through ``process_env``, executors through ``spark.executorEnv`` (``spark_conf``); a value
# already in the environment is kept.
MALLOC_ARENA_MAX = "2"

# Spark keeps the classes its code generation compiled in a cache of 100 by default (a Guava
# cache: four segments of 25, least recently used out first). The detector's two queries'
# plans compile ~90, and the stateful query adds one each batch (its watermark filter embeds
# the watermark as a literal): past 100, the batches' own classes were evicted and compiled
# again, batch after batch, and the JIT compiled them again too. Measured on 15M events (14
# batches of 1M after the first), two pairs of runs: 357 and 315 compiles -> 15; the JIT's
# CPU in the first half 4.4 and 2.7 -> 2.2 and 2.0 us per event; all CPU per event 20.7 and
# 14.5 -> 15.3 and 13.8 us. A static setting: it must be set before the session exists.
COMMON_CONF = {
    **JVM_CONF,
    "spark.sql.session.timeZone": "UTC",
    "spark.python.worker.reuse": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.streaming.stopGracefullyOnShutdown": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.codegen.cache.maxEntries": "1000",
}


def spark_conf(settings: Settings) -> dict[str, str]:
    conf = dict(COMMON_CONF)
    conf["spark.executorEnv.MALLOC_ARENA_MAX"] = process_env(settings)["MALLOC_ARENA_MAX"]
    conf["spark.sql.shuffle.partitions"] = str(settings.spark_shuffle_partitions)
    return conf


def submit_conf() -> list[str]:
    """``--conf`` arguments of a spark-submit line for what must be set at JVM launch."""
    return [arg for key, value in JVM_CONF.items() for arg in ("--conf", f"{key}={value}")]


def process_env(settings: Settings) -> dict[str, str]:
    """The environment of every Spark process this platform starts: the stack's daemons, every
    spark-submit (the supervisor's, Airflow's) and a session started from Python
    (``build_session``). Where it binds: without SPARK_LOCAL_IP the web UIs (master, worker and
    each driver's: kill links, no login, query plans with client IPs) listen on every interface
    and a driver's RPC on the machine's address. And glibc's malloc arenas (``MALLOC_ARENA_MAX``)."""
    return {"SPARK_LOCAL_IP": settings.bind_host,
            "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX)}


def ensure_python_env() -> None:
    """Point Spark's Python workers at this interpreter unless told otherwise."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def build_session(app_name: str, settings: Settings, master: str | None = None,
                  extra: Mapping[str, str] | None = None):
    """A SparkSession with the shared configuration (master None: spark-submit's)."""
    ensure_python_env()
    for key, value in process_env(settings).items():  # the JVM started below reads it
        os.environ.setdefault(key, value)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in {**spark_conf(settings), **(extra or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
