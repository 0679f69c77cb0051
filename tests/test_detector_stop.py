"""Stopping the detector while a micro-batch runs: the query stops cleanly (Spark reads the
batch's error as the stop's interruption) instead of its thread dying of a StackOverflowError
in Spark's own check of that error's text (``pipeline.stoppable``)."""

from __future__ import annotations

import re
import threading
import time

import pytest
from chaussettes.detector.pipeline import BatchStopped, stoppable

# StreamExecution.PROXY_ERROR of Spark 4.2 (sql/core, spark-sql_2.13-4.2.0.jar): how Spark
# tells a stop's interruption in a Python foreachBatch error from a failure
SPARK_PROXY_ERROR = re.compile(
    r"py4j.protocol.Py4JJavaError: An error occurred while calling((.|\r\n|\r|\n)*)"
    r"(java.lang.InterruptedException|java.io.InterruptedIOException|java.nio.channels.ClosedByInterruptException)")


def failing(batch_df, batch_id):
    raise ValueError("a real failure " + "x" * 10_000)


def test_a_batch_error_goes_out_as_it_is_until_the_detector_stops_then_in_one_short_line():
    stopping = threading.Event()
    with pytest.raises(ValueError, match="a real failure"):
        stoppable(failing, stopping)(None, 7)
    stopping.set()
    with pytest.raises(BatchStopped) as info:
        stoppable(failing, stopping)(None, 7)
    text = str(info.value)
    assert SPARK_PROXY_ERROR.search(text) and len(text) < 200 and "ValueError" in text and "batch 7" in text
    assert info.value.__suppress_context__  # the long original is not chained into the traceback
    calls = []
    stoppable(lambda df, bid: calls.append(bid), stopping)(None, 8)  # a batch that ends well is untouched
    assert calls == [8]


@pytest.mark.slow
def test_a_stop_during_a_batchs_spark_job_stops_the_query_cleanly(spark):
    running = threading.Event()

    def batch(batch_df, batch_id):
        running.set()
        spark.range(0, 10**11, numPartitions=2).where("id % 7 = 3").count()  # minutes: the stop comes first

    stopping = threading.Event()
    query = spark.readStream.format("rate").option("rowsPerSecond", 1).load() \
        .writeStream.foreachBatch(stoppable(batch, stopping)).start()
    try:
        assert running.wait(120), "no batch started"
        time.sleep(1)  # the job is running
    finally:
        stopping.set()
        query.stop()
    # without stoppable: the thread dies in Spark's check, the status stays "Processing new data"
    assert query.status["message"] == "Stopped"
    assert query.exception() is None
