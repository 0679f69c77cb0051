"""The shared Spark configuration, checked on a real session."""

from __future__ import annotations

import os
from pathlib import Path

from pyspark.sql import functions as F


def _compiles(spark) -> int:
    """Classes Spark's code generation has compiled so far (its codegen cache's misses)."""
    return int(spark._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME().getCount())


def test_generated_classes_outlive_a_stream_of_one_off_queries(spark):
    # what the detector's stateful query does: one filter on a new watermark literal per
    # micro-batch, each a class of its own, while the same batch plans run again and again
    repeated = spark.range(1000).select((F.col("id") * 7 % 13).alias("k")).groupBy("k").count()
    assert len(repeated.collect()) == 13
    warm = _compiles(spark)
    repeated.collect()
    assert _compiles(spark) == warm  # run again: found in the cache

    for i in range(150):
        assert spark.range(10).where(F.col("id") <= F.lit(1_000_000 + i)).count() == 10
    assert _compiles(spark) >= warm + 150  # each literal compiled a class

    before = _compiles(spark)
    assert len(repeated.collect()) == 13
    assert _compiles(spark) == before  # still cached: not compiled again


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_the_session_and_its_python_workers_run_with_bounded_malloc_arenas(spark):
    expected = os.environ.get("MALLOC_ARENA_MAX")
    assert expected  # build_session set it for the JVM it launched (or the environment had it)
    jvm_pid = int(spark._jvm.java.lang.ProcessHandle.current().pid())
    assert _environ(jvm_pid).get("MALLOC_ARENA_MAX") == expected  # set before the JVM was launched

    def arenas(batches):
        import pyarrow as pa

        for _ in batches:
            yield pa.RecordBatch.from_pydict({"arenas": [os.environ.get("MALLOC_ARENA_MAX", "")]})

    seen = {r["arenas"] for r in spark.range(4, numPartitions=2).mapInArrow(arenas, "arenas string").collect()}
    assert seen == {expected}  # the Python workers the JVM starts
    # what a cluster's executors (and their Python workers) are started with
    assert spark.sparkContext.getConf().get("spark.executorEnv.MALLOC_ARENA_MAX") == expected
