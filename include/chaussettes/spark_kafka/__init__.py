"""Spark ⇄ Kafka without connector jars: a Python data source named ``kafka``.

``register(spark)`` once, then use the JVM connector's API unchanged::

    from chaussettes import spark_kafka
    spark_kafka.register(spark)
    df = (spark.readStream.format("kafka")
          .option("kafka.bootstrap.servers", "127.0.0.1:9092")
          .option("subscribe", "http-logs")
          .option("startingOffsets", "earliest")
          .option("maxOffsetsPerTrigger", 100000)
          .load())                       # key, value, topic, partition, offset, timestamp, timestampType
    df.selectExpr("CAST(value AS STRING)") ...
    out.writeStream.format("kafka").option("kafka.bootstrap.servers", ...) \\
        .option("topic", "alerts").option("exactlyOnce", "true") \\
        .option("checkpointLocation", ckpt).start()

Reading (batch ``spark.read`` and streaming ``spark.readStream``)
    Options (case-insensitive, JVM names): ``kafka.bootstrap.servers``; one of ``subscribe``
    (comma list), ``subscribePattern``, ``assign`` (``{"t":[0,1]}``); ``startingOffsets`` /
    ``endingOffsets`` (``earliest``, ``latest`` or ``{"t":{"0":23,"1":-2}}``, -2 earliest, -1
    latest; every subscribed partition must be given); ``startingTimestamp`` /
    ``endingTimestamp`` (ms) and ``startingOffsetsByTimestamp`` / ``endingOffsetsByTimestamp``;
    ``maxOffsetsPerTrigger``; ``minPartitions``; ``failOnDataLoss`` (default true);
    ``includeHeaders``; ``groupIdPrefix``; ``kafkaConsumer.pollTimeoutMs`` (how long a task waits
    without progress before failing, default max(10 s, timeout)); ``kafka.timeout.ms`` (the bound
    on every metadata call, default settings ``kafka_timeout_s``); every other ``kafka.*`` is a
    librdkafka setting (``kafka.security.protocol``, ``kafka.ssl.ca.location``,
    ``kafka.sasl.mechanism``...; ``kafka.sasl.jaas.config`` is translated to
    sasl.username/password). ``kafka.group.id`` makes the streaming reader commit the offsets
    of each finished batch to that group (lag visible with Kafka tools); partitions are
    always read with ``assign()``. Consumers read ``read_uncommitted`` like the JVM client:
    set ``kafka.isolation.level=read_committed`` to read a transactional sink's output.

    Streaming: offsets live in Spark's checkpoint (a restart resumes at the last committed
    batch); each micro-batch reads, in the executors, exactly the offsets its plan names,
    one Spark partition per Kafka partition (more with ``minPartitions``), as Arrow batches.
    ``maxOffsetsPerTrigger`` bounds every batch (shared in proportion to each partition's
    lag); ``Trigger.AvailableNow`` stops at the end offsets seen when the query started.
    Batch time bounds select records by their timestamp (``startingTimestamp`` <= ts <
    ``endingTimestamp``) - correct on brokers whose ``offsets_for_times`` answers 0 (Tansu).

    End offsets: the broker's high watermark, raised to the end of what a fetch from it
    actually returns (Tansu reports the base offset of its last record batch + 1, hiding
    the rest of that batch until more data arrives; on Apache Kafka this changes nothing),
    so an availableNow run reads every record written before it started. A task waits at
    most ``kafkaConsumer.pollTimeoutMs`` without progress, then fails naming the partition
    and offsets: it never hangs and never skips silently. Deleted offsets (retention):
    ``failOnDataLoss=true`` fails the query, false skips to the earliest available offset.
    A reported end below the checkpointed position (a broker answering less while a
    transaction is open) is waited out, not treated as loss.

Writing (batch ``df.write`` and streaming ``df.writeStream``)
    Columns ``value`` (binary/string, required), ``key``, ``topic``, ``partition``,
    ``headers``; options ``kafka.bootstrap.servers``, ``topic`` (overrides the column),
    ``kafka.*``. Every task uses an idempotent producer, flushes before it reports success,
    and fails if any record was not acknowledged: at-least-once.

    Exactly-once (streaming, ``exactlyOnce=true``, needs ``topic``): each task publishes its
    rows in one Kafka transaction whose ``transactional.id`` is ``<transactionalIdPrefix>-
    <queryId>-p<partition>``, together with a marker (consumer group of that name, offset
    ``batchId + 1`` for partition 0 of the topic). A micro-batch replayed after a driver crash
    (published, not yet committed in the checkpoint) finds its marker and publishes nothing.
    Guarantee: every row of a committed micro-batch is in Kafka once, provided the query is
    deterministic (a replayed batch puts the same rows in the same Spark partition - true of
    Kafka sources and hash shuffles) and readers use ``read_committed``. Zombie task attempts
    are fenced by the shared transactional.id. The local Tansu broker does not filter
    aborted transactions from readers, so there a crash *during* a transaction can leave its
    records visible; a crash between publish and commit (the common case) is exactly-once.

``write_batch(df, batch_id, options, sink_id=None)`` is the same guarantee for
``foreachBatch``, with the whole batch in one transaction: see its docstring.

Errors: an unknown option or malformed offsets JSON raises ``KafkaOptionError`` when the
query is defined or started; an unreachable broker, a missing topic and data loss raise
``KafkaSourceError`` (within ``kafka.timeout.ms``, naming the servers); a failed delivery
raises ``KafkaWriteError``.
"""

from __future__ import annotations

from chaussettes.spark_kafka.options import KafkaOptionError, KafkaSourceError
from chaussettes.spark_kafka.writer import CRASH_HOOK_ENV, KafkaWriteError, write_batch

__all__ = [
    "CRASH_HOOK_ENV",
    "KafkaDataSource",
    "KafkaOptionError",
    "KafkaSourceError",
    "KafkaWriteError",
    "register",
    "write_batch",
]


FORMAT = "chaussettes_kafka"  # the name Spark knows this source by; "kafka" is aliased to it


def register(spark) -> None:
    """Register the source (batch and streaming, read and write) and alias ``format("kafka")``.

    Spark's JVM reserves the short name ``kafka`` for its connector (absent from the pyspark
    wheel: "Failed to find data source: kafka"), both when registering and when resolving a
    format, so the class is registered as ``chaussettes_kafka`` and PySpark's
    ``format()`` (DataFrameReader/Writer, DataStreamReader/Writer, and ``load``/``save``/
    ``start`` with ``format=``) is wrapped once per process to send ``"kafka"`` there (a batch
    write is put in append mode, the only one Kafka has, as the JVM sink does). SQL
    ``USING kafka`` is not aliased: use ``USING chaussettes_kafka``.
    """
    from chaussettes.spark_kafka.source import KafkaDataSource

    spark.dataSource.register(KafkaDataSource)
    _alias_kafka_format()


def _alias_kafka_format() -> None:
    from pyspark.sql.readwriter import DataFrameReader, DataFrameWriter
    from pyspark.sql.streaming.readwriter import DataStreamReader, DataStreamWriter

    for cls in (DataFrameReader, DataFrameWriter, DataStreamReader, DataStreamWriter):
        original = cls.format
        if getattr(original, "_chaussettes_alias", False):
            continue

        def format(self, source, _original=original, _cls=cls):
            if isinstance(source, str) and source.strip().lower() == "kafka":
                source = FORMAT
                if _cls is DataFrameWriter:
                    # Python sources refuse Spark's default ErrorIfExists; Kafka only appends.
                    self.mode("append")
            return _original(self, source)

        format.__doc__ = original.__doc__
        format._chaussettes_alias = True
        cls.format = format


def __getattr__(name: str):
    if name == "KafkaDataSource":
        from chaussettes.spark_kafka.source import KafkaDataSource

        return KafkaDataSource
    raise AttributeError(name)
