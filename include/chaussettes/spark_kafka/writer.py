"""Writing to Kafka: batch and streaming sinks, and ``write_batch`` for ``foreachBatch``.

Every task produces with an idempotent producer, flushes before it reports success, and
fails when any record was not acknowledged. In exactly-once mode a task publishes its rows
inside one Kafka transaction together with a marker (the consumer-group offset
``batch_id + 1`` of partition 0 of the destination topic, in a group named after the sink
and the task's partition). A task that finds its marker already at or past its batch has
published this batch before (the driver died before committing it) and publishes nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pyspark.sql.datasource import (
    DataSourceArrowWriter,
    DataSourceStreamArrowWriter,
    WriterCommitMessage,
)

from chaussettes.spark_kafka import options as o
from chaussettes.spark_kafka.options import KafkaOptionError

log = logging.getLogger("chaussettes.spark_kafka")


class KafkaWriteError(RuntimeError):
    """A record was not acknowledged by the broker (the task, and the write, fail)."""


# The test hook that simulates a driver crash between publishing a batch and committing it:
# "<batch_id>:<path>" - at that point, create <path> and stop (the test kills the driver).
CRASH_HOOK_ENV = "CHAUSSETTES_SPARK_KAFKA_CRASH_AFTER_PUBLISH"


@dataclass(frozen=True)
class WriteConfig:
    servers: str
    client: dict
    topic: str | None
    exactly_once: bool
    transactional_id_prefix: str
    timeout_s: float

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> WriteConfig:
        opts, client = o.normalize(options, o.WRITE_OPTIONS, "sink")
        exactly_once = o.parse_bool(opts, "exactlyOnce", False)
        topic = opts.get("topic", "").strip() or None
        if exactly_once and not topic:
            raise KafkaOptionError("option 'exactlyOnce' needs the option 'topic' (every row goes "
                                   "to that topic)")
        for forbidden in ("transactional.id", "enable.idempotence"):
            if forbidden in client:
                raise KafkaOptionError(f"option 'kafka.{forbidden}' is managed by the sink (use "
                                       "exactlyOnce / transactionalIdPrefix)")
        return cls(servers=opts["kafka.bootstrap.servers"], client=client, topic=topic,
                   exactly_once=exactly_once,
                   transactional_id_prefix=opts.get("transactionalIdPrefix", "chaussettes"),
                   timeout_s=o.timeout_s(opts))

    def producer_conf(self, transactional_id: str | None = None) -> dict:
        conf = {
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
            "compression.type": "none",
            "socket.connection.setup.timeout.ms": max(1000, int(self.timeout_s * 1000)),
            "message.timeout.ms": max(5000, int(self.timeout_s * 3000)),
            "delivery.report.only.error": True,
        }
        conf.update(self.client)
        conf.update({"bootstrap.servers": self.servers, "enable.idempotence": True})
        if transactional_id:
            conf["transactional.id"] = transactional_id
            conf["transaction.timeout.ms"] = max(60000, int(self.timeout_s * 6000))
        return conf


class _Publisher:
    """One producer; rows from Arrow batches; raises KafkaWriteError on any failed delivery."""

    def __init__(self, cfg: WriteConfig, transactional_id: str | None = None):
        from confluent_kafka import Producer

        self.cfg = cfg
        self.errors: list[str] = []
        conf = cfg.producer_conf(transactional_id)
        conf["error_cb"] = self._on_client_error
        conf["on_delivery"] = self._on_delivery
        self.producer = Producer(conf)
        self.count = 0
        self._fatal: str | None = None

    def _on_delivery(self, err, msg) -> None:
        if err is not None and len(self.errors) < 5:
            self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def _on_client_error(self, err) -> None:
        if err.fatal():
            self._fatal = err.str()

    def publish(self, batches: Iterator, forced_topic: str | None) -> int:
        produce = self.producer.produce
        poll = self.producer.poll
        for batch in batches:
            names = batch.schema.names
            if "value" not in names:
                raise KafkaOptionError("a Kafka sink needs a 'value' column (binary or string); "
                                       f"got {', '.join(names)}")
            values = _bytes_column(batch, "value")
            keys = _bytes_column(batch, "key") if "key" in names else [None] * batch.num_rows
            if forced_topic:
                topics = None
            elif "topic" in names:
                topics = batch.column(names.index("topic")).to_pylist()
            else:
                raise KafkaOptionError("no topic: set the option 'topic' or give a 'topic' column")
            parts = batch.column(names.index("partition")).to_pylist() if "partition" in names else None
            headers = (batch.column(names.index("headers")).to_pylist() if "headers" in names else None)
            stamps = _timestamps_ms(batch) if "timestamp" in names else None
            if forced_topic and parts is None and headers is None and stamps is None:
                for value, key in zip(values, keys):  # the common case, kept tight
                    try:
                        produce(forced_topic, value, key)
                    except BufferError:
                        self._produce_when_room(forced_topic, value, key)
                self.count += batch.num_rows
                poll(0)
                self._check()
                continue
            for i in range(batch.num_rows):
                topic = forced_topic or topics[i]
                if not topic:
                    raise KafkaOptionError("a row has a null 'topic' and no option 'topic' is set")
                kwargs = {}
                if parts is not None and parts[i] is not None:
                    kwargs["partition"] = parts[i]
                if headers is not None and headers[i]:
                    kwargs["headers"] = [(h["key"], h["value"]) for h in headers[i]]
                if stamps is not None and stamps[i] is not None:
                    kwargs["timestamp"] = stamps[i]
                try:
                    produce(topic, values[i], keys[i], **kwargs)
                except BufferError:
                    self._produce_when_room(topic, values[i], keys[i], **kwargs)
                self.count += 1
            poll(0)
            self._check()
        return self.count

    def _produce_when_room(self, topic, value, key, **kwargs) -> None:
        while True:
            self.producer.poll(0.05)
            self._check()
            try:
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                continue

    def flush(self) -> None:
        deadline = time.monotonic() + max(self.cfg.timeout_s * 3, 30)
        remaining = self.producer.flush(self.cfg.timeout_s)
        while remaining and time.monotonic() < deadline:
            remaining = self.producer.flush(1.0)
        self._check()
        if remaining:
            raise KafkaWriteError(f"{remaining} record(s) not acknowledged by {self.cfg.servers} "
                                  "in time")

    def _check(self) -> None:
        if self._fatal:
            raise KafkaWriteError(f"Kafka producer failed ({self.cfg.servers}): {self._fatal}")
        if self.errors:
            raise KafkaWriteError(f"delivery to Kafka at {self.cfg.servers} failed: "
                                  + "; ".join(self.errors))


def _timestamps_ms(batch) -> list:
    """The ``timestamp`` column as epoch milliseconds: a timestamp, or a long already in ms."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = batch.column(batch.schema.names.index("timestamp"))
    if pa.types.is_timestamp(col.type):
        col = pc.divide(pc.cast(pc.cast(col, pa.timestamp("us", tz="UTC")), pa.int64()), 1000)
    elif not pa.types.is_integer(col.type):
        raise KafkaOptionError(f"column 'timestamp' must be a timestamp or a long (ms), not {col.type}")
    return col.to_pylist()


def _bytes_column(batch, name: str) -> list:
    import pyarrow as pa

    col = batch.column(batch.schema.names.index(name))
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return [None if v is None else v.encode("utf-8") for v in col.to_pylist()]
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) or pa.types.is_null(col.type):
        return col.to_pylist()
    raise KafkaOptionError(f"column '{name}' must be binary or string, not {col.type}")


# ----------------------------------------------------------------------------- exactly once
def marker_group(prefix: str, sink_id: str, part: int) -> str:
    return f"{prefix}-{sink_id}-p{part}"


# The driver's transactional producers, by transactional.id (publish_table): write_batch
# publishes every micro-batch of a stream from the same process, and init_transactions()
# for a new producer (fencing the previous one) cost 0.05-0.5 s per batch on the local broker.
_DRIVER_PUBLISHERS: dict[tuple, _Publisher] = {}


def _publisher_key(cfg: WriteConfig, name: str) -> tuple:
    return (name, cfg.servers, tuple(sorted(cfg.client.items())))


def publish_once(cfg: WriteConfig, sink_id: str, part: int, batch_id: int, batches, *,
                 reuse_producer: bool = False) -> tuple[int, bool]:
    """Publish ``batches`` in one transaction unless this (sink, part) already published batch_id.

    Returns (records published, skipped). The transactional.id is the marker group's name,
    so a zombie attempt of the same task is fenced by init_transactions(). With
    ``reuse_producer`` (the driver), the producer is kept for the next batch after a
    success and dropped after any failure (the next batch starts a fresh one).
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    name = marker_group(cfg.transactional_id_prefix, sink_id, part)
    key = _publisher_key(cfg, name)
    # taken out while in use: put back only after a success
    pub = _DRIVER_PUBLISHERS.pop(key, None) if reuse_producer else None
    consumer = Consumer({**cfg.client, "bootstrap.servers": cfg.servers, "group.id": name,
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    marker = TopicPartition(cfg.topic, 0)
    try:
        try:
            if pub is None:
                pub = _Publisher(cfg, transactional_id=name)
                pub.producer.init_transactions(cfg.timeout_s)
            pub.count, pub.errors = 0, []
            done = consumer.committed([marker], timeout=cfg.timeout_s)[0].offset
        except KafkaException as exc:
            raise KafkaWriteError(f"Kafka at {cfg.servers}: cannot start a transaction for "
                                  f"{name} within {cfg.timeout_s:g}s ({exc})") from None
        if done > batch_id:
            for _ in batches:  # drain the input; this batch is already in Kafka
                pass
            result = (0, True)
        else:
            result = (_publish_in_transaction(pub, cfg, consumer, name, batch_id, batches), False)
        if reuse_producer:
            _DRIVER_PUBLISHERS[key] = pub
        return result
    finally:
        consumer.close()


def _publish_in_transaction(pub: _Publisher, cfg: WriteConfig, consumer, name: str, batch_id: int,
                            batches) -> int:
    """``batches`` and the "batch_id published" marker in one transaction (aborted on any error)."""
    from confluent_kafka import TopicPartition

    pub.producer.begin_transaction()
    try:
        count = pub.publish(batches, cfg.topic)
        pub.flush()
        pub.producer.send_offsets_to_transaction(
            [TopicPartition(cfg.topic, 0, batch_id + 1)], consumer.consumer_group_metadata(),
            cfg.timeout_s)
        pub.producer.commit_transaction(cfg.timeout_s)
    except Exception:
        try:
            pub.producer.abort_transaction(cfg.timeout_s)
        except Exception as exc:  # noqa: BLE001 - the original error is the one to raise
            log.debug("aborting transaction %s: %s", name, exc)
        raise
    return count


def publish_table(cfg: WriteConfig, sink_id: str, part: int, batch_id: int, table) -> int:
    """``publish_once`` of an Arrow table with a producer kept for the next batch of the same
    (sink, part) in this process (the driver: init_transactions() for a new producer cost
    0.05-0.5 s per batch on the local broker). The kept producer may be stale (the broker
    restarted): then one more try with a fresh one, which reads the marker again."""
    from confluent_kafka import KafkaException

    reused = _publisher_key(cfg, marker_group(cfg.transactional_id_prefix, sink_id, part)) in _DRIVER_PUBLISHERS
    try:
        count, _ = publish_once(cfg, sink_id, part, batch_id, iter(table.to_batches()), reuse_producer=True)
    except (KafkaWriteError, KafkaException) as exc:
        if not reused:
            raise
        log.warning("publishing batch %s again with a new producer: %s", batch_id, exc)
        count, _ = publish_once(cfg, sink_id, part, batch_id, iter(table.to_batches()), reuse_producer=True)
    return count


def _crash_hook(batch_id: int) -> None:
    spec = os.environ.get(CRASH_HOOK_ENV)
    if not spec:
        return
    wanted, _, path = spec.partition(":")
    if str(batch_id) == wanted.strip():
        with open(path, "w") as fh:
            fh.write(str(batch_id))
        time.sleep(3600)  # the test kills the driver now


# ----------------------------------------------------------------------------- Spark sinks
@dataclass
class KafkaCommitMessage(WriterCommitMessage):
    partition: int
    records: int
    skipped: bool = False


class KafkaBatchWriter(DataSourceArrowWriter):
    """At-least-once batch write: every task flushes; any delivery failure fails the task."""

    def __init__(self, cfg: WriteConfig):
        self.cfg = cfg

    def write(self, iterator):
        from pyspark import TaskContext

        pub = _Publisher(self.cfg)
        count = pub.publish(iterator, self.cfg.topic)
        pub.flush()
        ctx = TaskContext.get()
        return KafkaCommitMessage(ctx.partitionId() if ctx else 0, count)

    def commit(self, messages) -> None:
        pass

    def abort(self, messages) -> None:
        pass


class KafkaStreamWriter(DataSourceStreamArrowWriter):
    """Streaming sink: at-least-once, or exactly-once per task with ``exactlyOnce=true``."""

    def __init__(self, cfg: WriteConfig, sink_id: str | None):
        self.cfg = cfg
        self.sink_id = sink_id

    def write(self, iterator):
        from pyspark import TaskContext

        ctx = TaskContext.get()
        part = ctx.partitionId()
        if not self.cfg.exactly_once:
            pub = _Publisher(self.cfg)
            count = pub.publish(iterator, self.cfg.topic)
            pub.flush()
            return KafkaCommitMessage(part, count)
        batch_id = int(ctx.getLocalProperty("streaming.sql.batchId"))
        sink_id = self.sink_id or ctx.getLocalProperty("sql.streaming.queryId")
        count, skipped = publish_once(self.cfg, sink_id, part, batch_id, iterator)
        return KafkaCommitMessage(part, count, skipped)

    def commit(self, messages, batchId) -> None:
        _crash_hook(batchId)

    def abort(self, messages, batchId) -> None:
        pass  # open transactions are aborted by the next init_transactions of the same id


# ----------------------------------------------------------------------------- foreachBatch
def write_batch(df, batch_id: int, options: Mapping[str, str], sink_id: str | None = None) -> int:
    """Publish a micro-batch DataFrame to Kafka exactly once per ``batch_id``; for ``foreachBatch``.

    Contract:

    - ``df`` has a ``value`` column (binary or string) and optionally ``key`` (binary, string
      or null), ``partition``, ``timestamp`` (the record's, a timestamp or epoch ms) and
      ``headers``; a ``topic`` column is ignored: every row goes to ``options["topic"]``.
    - ``options`` are the sink options of ``format("kafka")``: ``kafka.bootstrap.servers``
      (e.g. ``settings.spark_kafka_options()``), ``topic`` (required), any ``kafka.*``
      producer setting, ``transactionalIdPrefix`` (default ``chaussettes``),
      ``kafka.timeout.ms`` (default: settings ``kafka_timeout_s``).
    - ``sink_id`` names this output stream and must stay the same across restarts. Default:
      the id of the streaming query calling ``foreachBatch`` (stable while its checkpoint
      is kept); outside a streaming query it is required.
    - All rows of the batch are published in ONE Kafka transaction, from the driver (the
      rows are collected as Arrow, so keep batches of alerts-like size) together with a
      marker "batch ``batch_id`` published" (the offset ``batch_id + 1`` committed for
      partition 0 of the topic in consumer group ``<prefix>-<sink_id>-p0``). Before
      publishing, the marker is read: if this ``batch_id`` (or a later one) was already
      published - the driver died after publishing and before Spark committed the batch,
      and Spark now replays it - nothing is published and 0 is returned. So a replayed
      batch never publishes twice, and batch ids must only grow (Spark's do).
    - Returns the number of records published (0 for a replay or an empty batch).
    - Raises ``KafkaWriteError`` if any record is not acknowledged (the transaction is
      aborted, the foreachBatch call fails, the query stops and the batch is retried on
      restart) and ``KafkaOptionError`` for bad options.
    - Readers see each record once with ``isolation.level=read_committed`` (librdkafka's
      default; the Spark source needs ``kafka.isolation.level=read_committed``). The local
      Tansu broker does not hide aborted transactions, so there only the replay case above
      is exactly-once; a crash in the middle of a transaction can leave its records visible.
    """
    from pyspark.sql import functions as F

    cfg = WriteConfig.parse({**dict(options), "exactlyOnce": "true"})
    if sink_id is None:
        sink_id = df.sparkSession.sparkContext.getLocalProperty("sql.streaming.queryId")
        if not sink_id:
            raise KafkaOptionError("write_batch: give sink_id (no streaming query is running)")
    wanted = [c for c in ("key", "value", "partition", "timestamp", "headers") if c in df.columns]
    if "value" not in wanted:
        raise KafkaOptionError(f"write_batch: the DataFrame needs a 'value' column; got "
                               f"{', '.join(df.columns)}")
    # Collected and published by the driver: for alerts-sized batches this saves the shuffle
    # and the task of a one-partition Spark job (0.4 s per micro-batch measured here).
    table = df.select(*[F.col(c) for c in wanted]).toArrow()
    count = publish_table(cfg, sink_id, 0, int(batch_id), table)
    _crash_hook(int(batch_id))
    return count
