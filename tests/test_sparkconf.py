"""The shared Spark configuration, checked on a real session."""

from __future__ import annotations

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
