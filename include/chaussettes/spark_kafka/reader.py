"""Batch and streaming readers: offsets resolved on the driver, ``assign()`` reads in executors.

Offsets are JSON ``{"topic": {"0": next_offset, ...}}`` (the JVM connector's layout), kept in
Spark's checkpoint by the engine. End offsets are the high watermark raised to the end of
the last record batch a fetch returns (see ``OffsetClient.readable_ends``). An executor reads exactly ``[start, end)`` of one partition
and yields ``pyarrow.RecordBatch`` es. It stops at the end offset, once the client's position has
passed it (trailing transaction markers are never delivered as messages) or at a partition-EOF
event at or past it, and raises if no
progress is made for ``kafkaConsumer.pollTimeoutMs`` - it never waits forever and never
silently skips a record.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pyspark.sql.datasource import DataSourceReader, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import (
    ReadAllAvailable,
    ReadLimit,
    ReadMaxRows,
    SupportsTriggerAvailableNow,
)

from chaussettes import sparkworker
from chaussettes.spark_kafka import options as o
from chaussettes.spark_kafka.options import KafkaSourceError

log = logging.getLogger("chaussettes.spark_kafka")

ROWS_PER_ARROW_BATCH = 20_000
RANGE_PREFETCH_SHARE = 8  # records queued ahead: at most 1/8 of the range (range_consumer_conf)
RANGE_FETCH_BYTES = 2 * 1024 * 1024
_PARTITION_EOF = -191
_AUTO_OFFSET_RESET = -140
# Errors no retry cures: unknown topic/partition (-188, 3), authorization and authentication.
_PERMANENT = {-190, -188, 3, 29, 30, 31, 58, -169}
# Beside the JVM connector's {"topic": {"partition": offset}}, a streaming offset keeps each
# topic's id under a key no topic can have ('@' is not legal in a topic name): a topic deleted
# and created again gets a new id, even once it has grown past the checkpointed offsets.
TOPIC_IDS_KEY = "@topic_ids"
_NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # the zero id: a broker that does not give one


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ReadConfig:
    servers: str
    client: dict
    subscription: o.Subscription
    starting: o.OffsetSpec
    ending: o.OffsetSpec | None
    max_offsets_per_trigger: int | None
    min_partitions: int | None
    fail_on_data_loss: bool
    include_headers: bool
    group_id: str | None  # commit processed offsets here (streaming), from kafka.group.id
    group_id_prefix: str
    timeout_s: float
    poll_timeout_s: float
    # How long a checkpointed position may stay beyond a partition's end before the topic
    # counts as emptied or recreated (a broker may under-report its end for a moment).
    reset_grace_s: float = 30.0

    @classmethod
    def parse(cls, options: Mapping[str, str], streaming: bool) -> ReadConfig:
        opts, client = o.normalize(options, o.READ_OPTIONS, "source")
        timeout = o.timeout_s(opts)
        poll_ms = o.parse_int(opts, "kafkaConsumer.pollTimeoutMs", None, minimum=1)
        starting = o.starting_spec(opts, "latest" if streaming else "earliest", streaming)
        ending = o.ending_spec(opts, streaming)
        max_per_trigger = o.parse_int(opts, "maxOffsetsPerTrigger", None, minimum=1)
        if max_per_trigger is not None and not streaming:
            raise o.KafkaOptionError("option 'maxOffsetsPerTrigger' is only for streaming queries")
        return cls(
            servers=opts["kafka.bootstrap.servers"],
            client=client,
            subscription=o.subscription(opts),
            starting=starting,
            ending=None if streaming else ending,
            max_offsets_per_trigger=max_per_trigger,
            min_partitions=o.parse_int(opts, "minPartitions", None, minimum=1),
            fail_on_data_loss=o.parse_bool(opts, "failOnDataLoss", True),
            include_headers=o.parse_bool(opts, "includeHeaders", False),
            group_id=client.pop("group.id", None),
            group_id_prefix=opts.get("groupIdPrefix", "spark-kafka-source"),
            timeout_s=timeout,
            poll_timeout_s=poll_ms / 1000.0 if poll_ms else max(timeout, 10.0),
            reset_grace_s=o.parse_int(opts, "offsetResetGraceMs", 30_000) / 1000.0,
        )

    def range_consumer_conf(self, count: int) -> dict:
        """``consumer_conf`` for reading ``count`` records of one partition.

        librdkafka refills its queue up to ``queued.min.messages`` records (one fetch of up
        to ``max.partition.fetch.bytes`` at a time) while the records are consumed, so a
        range that ends before the partition does is followed by as much fetched and
        decompressed for nothing. The prefetch is bounded to an eighth of the range (at
        least two ``consume()`` calls' worth) and a fetch to 2 MB. Measured in the detector
        (1M-record micro-batches over 4 partitions): the reader's CPU 2.2 -> 1.5 s per
        batch, 130k -> 150k events/s."""
        conf = self.consumer_conf()
        if "queued.min.messages" not in self.client:
            ahead = max(count // RANGE_PREFETCH_SHARE, 2 * ROWS_PER_ARROW_BATCH)
            conf["queued.min.messages"] = max(1, min(conf["queued.min.messages"], count, ahead))
        if "max.partition.fetch.bytes" not in self.client:
            conf["max.partition.fetch.bytes"] = RANGE_FETCH_BYTES
        return conf

    def consumer_conf(self, group_id: str | None = None) -> dict:
        conf = {
            "group.id": group_id or f"{self.group_id_prefix}-{uuid.uuid4().hex[:12]}",
            # The JVM client's default; set kafka.isolation.level=read_committed for
            # transactional producers' output.
            "isolation.level": "read_uncommitted",
            # Wait before re-checking a full fetch queue. librdkafka's 1 s default cut throughput
            # 3x here; 0 makes its fetcher spin while Spark is slower than the reads (measured in
            # the detector: 6 CPU-s of the Python workers per 1M records, 2 with 10 ms).
            "fetch.queue.backoff.ms": 10,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
            "queued.min.messages": 1_000_000,  # prefetch while Spark consumes a batch
            "fetch.max.bytes": 52_428_800,
            "socket.connection.setup.timeout.ms": max(1000, int(self.timeout_s * 1000)),
            "log.connection.close": False,
        }
        conf.update(self.client)
        conf.update({"enable.auto.commit": False, "enable.auto.offset.store": False,
                     "auto.offset.reset": "error",  # out of range must surface, not skip
                     "enable.partition.eof": True, "bootstrap.servers": self.servers})
        return conf


# ----------------------------------------------------------------------------- driver side
class OffsetClient:
    """Topic metadata and offsets for the driver (one consumer, never subscribed)."""

    def __init__(self, cfg: ReadConfig):
        from confluent_kafka import Consumer

        self.cfg = cfg
        # Its fetches only probe partition ends (readable_ends): a short broker-side wait
        # lets the end-of-partition event come back at once instead of after 500 ms, and
        # keeps the connection free for the metadata and offset requests queued behind it.
        self.consumer = Consumer({**cfg.consumer_conf(cfg.group_id), "fetch.wait.max.ms": 5})
        self._checked = False
        self._admin = None
        self._probe = None  # a consumer for record times (timestamps_at)
        self._times: dict[tuple, int | None] = {}  # (tp, offset) -> record time, most recent last

    def close(self) -> None:
        if self._probe is not None:
            with contextlib.suppress(Exception):
                self._probe.close()
        try:
            self.consumer.close()
        except Exception as exc:  # noqa: BLE001 - closing must not hide the real outcome
            log.debug("closing the offset consumer: %s", exc)

    def topic_ids(self, topics) -> dict[str, str]:
        """Each topic's id (Kafka gives a topic created again a new one). A topic whose id the
        broker does not give (an old broker, no Describe right) is left out: never an error."""
        from confluent_kafka import TopicCollection
        from confluent_kafka.admin import AdminClient

        if not topics:
            return {}
        if self._admin is None:
            self._admin = AdminClient({**self.cfg.client, "bootstrap.servers": self.cfg.servers,
                                       "log_level": 3})
        futures = self._admin.describe_topics(TopicCollection(sorted(topics)),
                                              request_timeout=self.cfg.timeout_s)
        ids = {}
        for topic, future in futures.items():
            try:
                topic_id = str(future.result(timeout=self.cfg.timeout_s).topic_id)
            except Exception as exc:  # noqa: BLE001 - the check is best effort, reads go on
                log.debug("no id for topic %s: %s", topic, exc)
                continue
            if topic_id and topic_id != _NO_TOPIC_ID:
                ids[topic] = topic_id
        return ids

    def _unreachable(self, exc: Exception | None = None) -> KafkaSourceError:
        why = f" ({exc})" if exc else ""
        return KafkaSourceError(f"cannot reach Kafka at {self.cfg.servers} within "
                                f"{self.cfg.timeout_s:g}s{why}")

    def partitions(self) -> list[tuple[str, int]]:
        """The subscribed topic-partitions (errors for missing topics)."""
        from confluent_kafka import KafkaException

        try:
            meta = self.consumer.list_topics(timeout=self.cfg.timeout_s)
        except KafkaException as exc:
            raise self._unreachable(exc) from None
        sub = self.cfg.subscription
        topics = {name: t for name, t in meta.topics.items() if t.error is None}
        if sub.kind == "subscribe":
            missing = [t for t in sub.topics if t not in topics]
            if missing:
                raise KafkaSourceError(f"topic(s) {', '.join(missing)} do not exist on "
                                       f"{self.cfg.servers}")
            return sorted((t, p) for t in sub.topics for p in topics[t].partitions)
        if sub.kind == "subscribePattern":
            rx = re.compile(sub.pattern)
            return sorted((t, p) for t in topics if rx.fullmatch(t) for p in topics[t].partitions)
        out = []
        for t, p in sub.assigned:
            if t not in topics or p not in topics[t].partitions:
                raise KafkaSourceError(f"assigned partition {t}-{p} does not exist on "
                                       f"{self.cfg.servers}")
            out.append((t, p))
        return sorted(out)

    def watermarks(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        from confluent_kafka import KafkaException, TopicPartition

        out = {}
        for t, p in tps:
            try:
                out[(t, p)] = self.consumer.get_watermark_offsets(
                    TopicPartition(t, p), timeout=self.cfg.timeout_s, cached=False)
            except KafkaException as exc:
                raise self._unreachable(exc) from None
        return out

    def readable_ends(self, marks: dict[tuple[str, int], tuple[int, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """Watermarks with the high one raised to the end of the records actually readable.

        A broker may report as high watermark the base offset of its last record batch + 1
        (Tansu), leaving the rest of that batch unreported until more data arrives. Fetching
        from high - 1 returns that whole batch: its last offset + 1 is the true end. On
        Apache Kafka the fetch returns the one record at high - 1 and nothing changes. Bounded
        by a short deadline; a partition that does not answer keeps its reported end.
        """
        from confluent_kafka import TopicPartition

        tps = [tp for tp, (lo, hi) in marks.items() if hi > lo]
        if not tps:
            return marks
        seen: dict[tuple[str, int], int] = {}
        pending = set(tps)
        self.consumer.assign([TopicPartition(t, p, marks[(t, p)][1] - 1) for t, p in tps])
        try:
            deadline = time.monotonic() + min(self.cfg.timeout_s, 2.0)
            while pending and time.monotonic() < deadline:
                for m in self.consumer.consume(10_000, timeout=0.01):
                    tp = (m.topic(), m.partition())
                    err = m.error()
                    if err is None:
                        if m.offset() > seen.get(tp, -1):
                            seen[tp] = m.offset()
                    elif err.code() == _PARTITION_EOF:
                        pending.discard(tp)
                    else:
                        pending.discard(tp)
        finally:
            self.consumer.unassign()
        return {tp: (lo, max(hi, seen.get(tp, -1) + 1)) for tp, (lo, hi) in marks.items()}

    def ends(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(low, readable high) of every subscribed partition."""
        return self.readable_ends(self.watermarks(self.partitions()))

    def offsets_for_times(self, stamps: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """First offset with timestamp >= ts, or -1 (the broker's answer, possibly 0 on Tansu)."""
        from confluent_kafka import KafkaException, TopicPartition

        if not stamps:
            return {}
        try:
            res = self.consumer.offsets_for_times(
                [TopicPartition(t, p, ts) for (t, p), ts in stamps.items()], timeout=self.cfg.timeout_s)
        except KafkaException as exc:
            raise self._unreachable(exc) from None
        return {(r.topic, r.partition): r.offset for r in res}

    def first_offset_at(self, tp: tuple[str, int], ts: int, lo: int, hi: int) -> int:
        """The first offset in [lo, hi) whose record timestamp is >= ts, else hi.

        Starts at the broker's offsets_for_times answer, then scans forward: exact on
        Apache Kafka (first record qualifies) and on a broker that answers 0 (Tansu).
        """
        guess = self.offsets_for_times({tp: ts}).get(tp, -1)
        start = hi if guess < 0 else min(max(guess, lo), hi)
        if start >= hi:
            return hi
        for batch in read_range(self.cfg, tp[0], tp[1], start, hi, with_columns=False):
            for off, stamp in batch:
                if stamp >= ts:
                    return off
        return hi

    def timestamps_at(self, wanted: dict[tuple[str, int], int]) -> dict[tuple[str, int], int | None]:
        """The record time (epoch ms) at one offset of each partition asked, None when
        unknown: one fetch round for them all (balanced_cut asks a few per micro-batch; a
        batch's start was the previous one's end, and the end of a backlog stays put while
        it is read, so most answers come from a small cache)."""
        from confluent_kafka import Consumer, TopicPartition

        out = {tp: self._times[(tp, off)] for tp, off in wanted.items() if (tp, off) in self._times}
        todo = {tp: off for tp, off in wanted.items() if tp not in out}
        if todo:
            if self._probe is None:
                self._probe = Consumer({**self.cfg.consumer_conf(), "max.partition.fetch.bytes": 65536,
                                        "fetch.wait.max.ms": 5,
                                        "queued.min.messages": 1})
            assigned = [TopicPartition(t, p, off) for (t, p), off in todo.items()]
            self._probe.assign(assigned)
            try:
                self._probe_loop(todo, out)
            finally:
                self._probe.resume(assigned)  # a pause outlives unassign(): the next round would hang
                self._probe.unassign()
            while len(self._times) > 4096:
                self._times.pop(next(iter(self._times)))
        return {tp: out.get(tp) for tp in wanted}

    def _probe_loop(self, todo: dict[tuple[str, int], int], out: dict) -> None:
        """Read the first record at or after each offset asked, pausing each partition once
        answered: a fetch returns whole record batches (thousands of records each), and the
        records after the one asked, queued ahead of the other partitions', were each handed
        to Python and skipped — ~60% of a probe round's CPU (1M records, 4 partitions:
        158 -> 62 ms per round, 266 -> 63 ms of wall time)."""
        from confluent_kafka import TopicPartition

        deadline = time.monotonic() + self.cfg.timeout_s
        while todo and time.monotonic() < deadline:
            for msg in self._probe.consume(len(todo), 0.5):
                tp = (msg.topic(), msg.partition())
                if tp not in todo:
                    continue
                if msg.error() is None and msg.offset() >= todo[tp]:
                    kind, ts = msg.timestamp()
                    out[tp] = ts if kind != 0 and ts > 0 else None
                    self._times[(tp, todo.pop(tp))] = out[tp]
                elif msg.error() is not None and msg.error().code() == _PARTITION_EOF:
                    out[tp] = None
                    todo.pop(tp)
                else:
                    continue
                self._probe.pause([TopicPartition(*tp)])

    def commit(self, end: dict[tuple[str, int], int]) -> None:
        from confluent_kafka import TopicPartition

        if end:
            self.consumer.commit(offsets=[TopicPartition(t, p, off) for (t, p), off in end.items()],
                                 asynchronous=False)


def to_json(offsets: dict[tuple[str, int], int]) -> dict:
    out: dict[str, dict[str, int]] = {}
    for (t, p), off in sorted(offsets.items()):
        out.setdefault(t, {})[str(p)] = int(off)
    return out


def from_json(doc: dict) -> dict[tuple[str, int], int]:
    return {(t, int(p)): int(off) for t, parts in (doc or {}).items() if t != TOPIC_IDS_KEY
            for p, off in parts.items()}


def with_topic_ids(doc: dict, ids: dict[str, str]) -> dict:
    return {**doc, TOPIC_IDS_KEY: dict(sorted(ids.items()))} if ids else doc


def _resolve(client: OffsetClient, spec: o.OffsetSpec, tps, marks, *, exact_time: bool,
             what: str) -> dict[tuple[str, int], int]:
    """Concrete offsets for a starting/ending spec over the given partitions."""
    if spec.kind == "earliest":
        return {tp: marks[tp][0] for tp in tps}
    if spec.kind == "latest":
        return {tp: marks[tp][1] for tp in tps}
    if spec.kind == "offsets":
        given = {(t, p): off for t, parts in spec.offsets.items() for p, off in parts.items()}
        unknown = sorted(set(given) - set(tps))
        if unknown:
            raise o.KafkaOptionError(f"option '{what}' names partitions that are not subscribed: "
                                     + ", ".join(f"{t}-{p}" for t, p in unknown))
        missing = sorted(set(tps) - set(given))
        if missing:
            raise o.KafkaOptionError(f"option '{what}' must give every subscribed partition; "
                                     "missing " + ", ".join(f"{t}-{p}" for t, p in missing))
        out = {}
        for tp, off in given.items():
            out[tp] = marks[tp][0] if off == o.EARLIEST else marks[tp][1] if off == o.LATEST else off
        return out
    stamps = ({tp: spec.timestamp for tp in tps} if spec.kind == "timestamp" else
              {(t, p): ts for t, parts in spec.offsets.items() for p, ts in parts.items()})
    if spec.kind == "timestamps":
        missing = sorted(set(tps) - set(stamps))
        if missing:
            raise o.KafkaOptionError(f"option '{what}' must give every subscribed partition; "
                                     "missing " + ", ".join(f"{t}-{p}" for t, p in missing))
    if exact_time:
        return {tp: client.first_offset_at(tp, ts, *marks[tp]) for tp, ts in stamps.items()}
    found = client.offsets_for_times(stamps)
    return {tp: (marks[tp][1] if found.get(tp, -1) < 0 else min(max(found[tp], marks[tp][0]), marks[tp][1]))
            for tp in stamps}


# ----------------------------------------------------------------------------- partitions
class KafkaInputPartition(InputPartition):
    def __init__(self, topic: str, partition: int, start: int, end: int):
        super().__init__((topic, partition, start, end))
        self.topic, self.partition, self.start, self.end = topic, partition, start, end

    def __repr__(self) -> str:
        return f"KafkaInputPartition({self.topic}-{self.partition} [{self.start}, {self.end}))"


def plan_partitions(ranges: dict[tuple[str, int], tuple[int, int]], min_partitions: int | None):
    """One Spark partition per Kafka partition, split further to reach minPartitions."""
    ranges = {tp: r for tp, r in sorted(ranges.items()) if r[1] > r[0]}
    total = sum(e - s for s, e in ranges.values())
    out = []
    for (t, p), (s, e) in ranges.items():
        pieces = 1
        if min_partitions and len(ranges) < min_partitions and total:
            pieces = max(1, round(min_partitions * (e - s) / total))
        step = -(-(e - s) // pieces)
        for lo in range(s, e, step):
            out.append(KafkaInputPartition(t, p, lo, min(lo + step, e)))
    return out


# ----------------------------------------------------------------------------- executor side
def arrow_schema(include_headers: bool):
    import pyarrow as pa

    fields = [("key", pa.binary()), ("value", pa.binary()), ("topic", pa.string()),
              ("partition", pa.int32()), ("offset", pa.int64()),
              ("timestamp", pa.timestamp("us", tz="UTC")), ("timestampType", pa.int32())]
    if include_headers:
        fields.append(("headers", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))))
    return pa.schema(fields)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector around the read loop.

    A consume() of 20,000 messages allocates that many tracked objects at once, which sets
    off collections that walk the whole heap of the worker: measured here, they made
    consume() 2.4x and the Arrow conversion 6x slower (3.5 -> 1.0 us per message). The loop
    makes no reference cycles (reference counting frees everything), so nothing piles up.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_range(cfg: ReadConfig, topic: str, partition: int, start: int, end: int, *,
               with_columns: bool = True, ts_range: tuple[int | None, int | None] = (None, None)):
    """Yield the records of [start, end) of one partition, as Arrow batches (or (offset, ts) lists).

    Never loops forever: when no record and no end-of-partition at or past ``end`` arrives
    for ``poll_timeout_s``, raises KafkaSourceError naming the partition and offsets.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    if end <= start:
        return
    consumer = Consumer(cfg.range_consumer_conf(end - start))
    try:
        with _gc_paused():
            here = TopicPartition(topic, partition)
            consumer.assign([TopicPartition(topic, partition, start)])
            position = start
            last_progress = time.monotonic()
            schema = arrow_schema(cfg.include_headers) if with_columns else None
            while position < end:
                # No more than the range still needs, and its tail with a short timeout: consume()
                # returns once it has as many records as asked or at the timeout, and a short
                # range waited out the whole 0.2 s (a full batch asked for), or all of a range
                # that ends with transaction markers, which are never delivered (see below).
                want = min(ROWS_PER_ARROW_BATCH, end - position)
                msgs = consumer.consume(num_messages=want, timeout=0.2 if want == ROWS_PER_ARROW_BATCH else 0.02)
                good = [m for m in msgs if m.error() is None]
                for m in (msgs if len(good) != len(msgs) else ()):
                    err = m.error()
                    if err is None:
                        continue
                    code = err.code()
                    if code == _PARTITION_EOF:
                        if m.offset() >= end:
                            position = end
                    elif code in (KafkaError.OFFSET_OUT_OF_RANGE, _AUTO_OFFSET_RESET):
                        low = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                             timeout=cfg.timeout_s)[0]
                        _data_loss(cfg, f"{topic}-{partition}: offsets {position}..{low - 1} were "
                                        "deleted before they were read")
                        if low >= end:
                            return
                        position = max(position, low)
                        consumer.assign([TopicPartition(topic, partition, position)])
                        last_progress = time.monotonic()
                        break
                    elif err.fatal() or code in _PERMANENT:
                        raise KafkaSourceError(f"reading {topic}-{partition} from {cfg.servers}: {err.str()}")
                    else:  # transient (a dropped connection...): librdkafka retries; the
                        log.info("reading %s-%s: %s", topic, partition, err.str())  # timeout bounds it
                if good:
                    if good[-1].offset() >= end:
                        good = [m for m in good if m.offset() < end]
                    if good:
                        position = good[-1].offset() + 1
                        last_progress = time.monotonic()
                        yield (_to_arrow(good, topic, partition, schema, ts_range) if with_columns
                               else [(m.offset(), m.timestamp()[1]) for m in good])
                    else:
                        position = end
                elif msgs:
                    last_progress = time.monotonic()
                if position < end and consumer.position([here])[0].offset >= end:
                    # the rest of the range is transaction markers, never delivered: the
                    # client's position has passed them (waiting for the end-of-partition
                    # event took a fetch's wait, 0.5 s, on every read of a transactional topic)
                    position = end
                if position < end and time.monotonic() - last_progress > cfg.poll_timeout_s:
                    raise KafkaSourceError(
                        f"{topic}-{partition}: no record between offsets {position} and {end} "
                        f"arrived from {cfg.servers} within {cfg.poll_timeout_s:g}s "
                        "(kafkaConsumer.pollTimeoutMs)")
    finally:
        consumer.close()


def _data_loss(cfg: ReadConfig, what: str) -> None:
    if cfg.fail_on_data_loss:
        raise KafkaSourceError(f"data loss: {what}; set failOnDataLoss=false to continue past it")
    log.warning("data loss: %s (failOnDataLoss=false, continuing)", what)


def _to_arrow(msgs, topic, partition, schema, ts_range):
    """One RecordBatch from consumed messages: per-message Python work kept to key/value/timestamp."""
    import numpy as np
    import pyarrow as pa

    n = len(msgs)
    # (type, ms) pairs flattened straight into one array: no intermediate tuples of columns
    pairs = np.fromiter(itertools.chain.from_iterable(m.timestamp() for m in msgs), np.int64, 2 * n)
    kind, ms = pairs[0::2].astype(np.int32), pairs[1::2]
    first, last = msgs[0].offset(), msgs[-1].offset()
    offsets = (np.arange(first, last + 1, dtype=np.int64) if last - first + 1 == n
               else np.fromiter((m.offset() for m in msgs), np.int64, n))
    missing = kind == 0  # confluent's TIMESTAMP_NOT_AVAILABLE
    ts = pa.array(ms * 1000, pa.int64(), mask=missing if missing.any() else None).cast(
        pa.timestamp("us", tz="UTC"))
    columns = [
        pa.array([m.key() for m in msgs], pa.binary()),
        pa.array([m.value() for m in msgs], pa.binary()),
        pa.repeat(pa.scalar(topic, pa.string()), n),
        pa.array(np.full(n, partition, np.int32)),
        pa.array(offsets),
        ts,
        pa.array(kind - 1),  # Kafka's CreateTime 0, LogAppendTime 1 (-1: none), as the JVM
    ]
    if len(schema) == 8:
        headers = [m.headers() for m in msgs]  # None when a record has none, as the JVM
        columns.append(pa.array([
            [{"key": k, "value": v} for k, v in h] if h else None for h in headers
        ], schema.field("headers").type))
    batch = pa.RecordBatch.from_arrays(columns, schema=schema)
    lo, hi = ts_range
    if lo is not None or hi is not None:
        keep = np.ones(n, dtype=bool)
        if lo is not None:
            keep &= ms >= lo
        if hi is not None:
            keep &= ms < hi
        batch = batch.filter(pa.array(keep))
    return batch


# ----------------------------------------------------------------------------- batch reader
class KafkaBatchReader(DataSourceReader):
    def __init__(self, cfg: ReadConfig):
        self.cfg = cfg
        self.ts_range = (cfg.starting.timestamp if cfg.starting.kind == "timestamp" else None,
                         cfg.ending.timestamp if cfg.ending and cfg.ending.kind == "timestamp" else None)

    def partitions(self):
        client = OffsetClient(self.cfg)
        try:
            tps = client.partitions()
            marks = client.readable_ends(client.watermarks(tps))
            start = _resolve(client, self.cfg.starting, tps, marks, exact_time=False,
                             what="startingOffsets")
            end_spec = self.cfg.ending
            if end_spec.kind in ("timestamp", "timestamps"):
                # offsets_for_times may answer 0 (Tansu): read to the end, filter on timestamp.
                end = {tp: marks[tp][1] for tp in tps}
            else:
                end = _resolve(client, end_spec, tps, marks, exact_time=False, what="endingOffsets")
        finally:
            client.close()
        for tp in tps:
            if start[tp] < marks[tp][0]:
                _data_loss(self.cfg, f"{tp[0]}-{tp[1]}: starting offset {start[tp]} is before the "
                                     f"earliest available {marks[tp][0]}")
                start[tp] = marks[tp][0]
            if end[tp] < start[tp]:
                raise o.KafkaOptionError(f"{tp[0]}-{tp[1]}: ending offset {end[tp]} is before the "
                                         f"starting offset {start[tp]}")
        parts = plan_partitions({tp: (start[tp], end[tp]) for tp in tps}, self.cfg.min_partitions)
        # Spark needs at least one partition to plan a scan.
        return parts or [KafkaInputPartition(tps[0][0] if tps else "", 0, 0, 0)]

    def read(self, partition: KafkaInputPartition):
        sparkworker.settle()
        yielded = False
        for batch in read_range(self.cfg, partition.topic, partition.partition, partition.start,
                                partition.end, ts_range=self.ts_range):
            if batch.num_rows:
                yielded = True
                yield batch
        if not yielded:
            yield _empty_batch(self.cfg.include_headers)


def _empty_batch(include_headers: bool):
    import pyarrow as pa

    schema = arrow_schema(include_headers)
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


# ----------------------------------------------------------------------------- stream reader
class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Micro-batch reader: offsets in Spark's checkpoint, admission control, availableNow."""

    def __init__(self, cfg: ReadConfig):
        self.cfg = cfg
        self._client: OffsetClient | None = None
        self._target: dict[tuple[str, int], int] | None = None
        self._group_committed: dict | None = None
        self._beyond_since: dict[tuple[str, int], float] = {}
        self._prefetch: threading.Thread | None = None  # probing for the next cut (_prefetch_cut)

    @property
    def client(self) -> OffsetClient:
        """The offsets client, once no prefetch uses it (it is not shared between threads)."""
        self._settle_prefetch()
        if self._client is None:
            self._client = OffsetClient(self.cfg)
        return self._client

    def initialOffset(self) -> dict:
        tps = self.client.partitions()
        marks = self.client.readable_ends(self.client.watermarks(tps))
        start = _resolve(self.client, self.cfg.starting, tps, marks, exact_time=True,
                         what="startingOffsets")
        return with_topic_ids(to_json(start), self.client.topic_ids({t for t, _ in tps}))

    def getDefaultReadLimit(self) -> ReadLimit:
        if self.cfg.max_offsets_per_trigger:
            return ReadMaxRows(self.cfg.max_offsets_per_trigger)
        return ReadAllAvailable()

    def _marks(self) -> dict[tuple[str, int], tuple[int, int]]:
        return self.client.ends()

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = {tp: hi for tp, (lo, hi) in self._marks().items()}

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        # Spark asks for the next batch only once the one ending at `start` is committed
        # (and commit() of the last batch of an availableNow run never comes).
        self._commit_group(start)
        begin = from_json(start)
        marks = self._marks()
        ids = self.client.topic_ids({t for t, _ in marks})
        end: dict[tuple[str, int], int] = {}
        for tp, (low, high) in marks.items():
            if self._target is not None:
                # availableNow: never past the target taken when the query started;
                # a partition created since is not read by this run.
                if tp not in self._target:
                    continue
                high = min(high, self._target[tp])
            if tp not in begin:  # a partition that appeared since the last batch
                begin[tp] = low
            elif begin[tp] < low:
                _data_loss(self.cfg, f"{tp[0]}-{tp[1]}: offsets {begin[tp]}..{low - 1} were "
                                     "deleted before they were read")
            elif begin[tp] > high:
                end[tp] = self._beyond_end(tp, begin[tp], low, high)
                continue
            self._beyond_since.pop(tp, None)
            end[tp] = max(begin[tp], high)
        for tp, pos in begin.items():
            end.setdefault(tp, pos)  # a partition no longer listed keeps its position
        end.update(self._recreated(start, ids, marks))
        if isinstance(limit, ReadMaxRows):
            available = dict(end)
            end = balanced_cut(begin, available, limit.max_rows, self.client.timestamps_at)
            self._prefetch_cut(end, available, limit.max_rows)
        return with_topic_ids(to_json(end), {**start.get(TOPIC_IDS_KEY, {}), **ids})

    def _prefetch_cut(self, begin: dict, available: dict, max_rows: int) -> None:
        """While Spark runs the batch just cut, probe the record times that the next cut will
        ask for: it starts where this one ends, and the end of a backlog read with
        availableNow, or of one no longer growing, stays put. That cut then finds them in the
        client's cache instead of making the query wait for the broker between two batches (a
        probe round of 4 partitions: ~0.2 s, measured); with new records arriving, its
        starts still are. The cut itself is unchanged: only the cache is warmed. The next use
        of ``client`` waits for this thread."""
        if sum(_lags(begin, available).values()) <= max_rows:
            return  # the next batch takes everything: no cut, nothing to probe
        client = self.client

        def warm() -> None:
            try:
                balanced_cut(begin, available, max_rows, client.timestamps_at)
            except Exception as exc:  # noqa: BLE001 - a cache only: the next cut probes by itself
                log.info("probing ahead for the next batch's cut: %s", exc)

        self._prefetch = threading.Thread(target=warm, name="kafka-next-cut", daemon=True)
        self._prefetch.start()

    def _beyond_end(self, tp: tuple[str, int], position: int, low: int, high: int) -> int:
        """Our checkpointed position is past the partition's end: the topic was emptied or
        recreated (a restart of a broker that keeps its data in memory, a deleted topic).

        Policy: never skip or re-read silently. A short dip is waited out (``offsetResetGraceMs``;
        none in an availableNow run). Then with ``failOnDataLoss=true`` (the default) the query
        fails saying so; with ``false`` it logs a warning and goes on from the partition's start
        (the new records, none of which was read before). Returns the batch's end offset.
        """
        first = self._beyond_since.setdefault(tp, time.monotonic())
        if self._target is None and time.monotonic() - first < self.cfg.reset_grace_s:
            return position  # wait: the broker may catch up
        what = (f"{tp[0]}-{tp[1]}: checkpointed offset {position} is beyond the partition's end "
                f"{high}: the topic was emptied or recreated (a broker restart with in-memory "
                "storage?)")
        if self.cfg.fail_on_data_loss:
            raise KafkaSourceError(f"{what}. Nothing was skipped or re-read: start on a new "
                                   "checkpoint, or set failOnDataLoss=false to continue from the "
                                   "partition's start")
        log.warning("%s; failOnDataLoss=false: continuing from offset %d", what, low)
        self._beyond_since.pop(tp, None)
        return low

    def _recreated(self, start: dict, ids: dict[str, str],
                   marks: dict[tuple[str, int], tuple[int, int]]) -> dict[tuple[str, int], int]:
        """A topic deleted and created again since the checkpoint (its id changed): the
        checkpointed offsets are the old topic's, even where the new one has grown past them.

        The same policy as for an emptied topic (``_beyond_end``), at once since the id is
        certain: with ``failOnDataLoss=true`` the query fails saying so; with ``false`` each of
        the topic's partitions goes on from its start. Returns those partitions' end offsets."""
        before = start.get(TOPIC_IDS_KEY) or {}
        changed = sorted(t for t, old in before.items() if ids.get(t, old) != old)
        if not changed:
            return {}
        what = "; ".join(f"topic {t} was deleted and created again (its id changed from {before[t]} "
                         f"to {ids[t]})" for t in changed)
        if self.cfg.fail_on_data_loss:
            raise KafkaSourceError(f"{what}: the checkpointed offsets are the old topic's, the topic "
                                   "was emptied or recreated. Nothing was skipped or re-read: start on "
                                   "a new checkpoint, or set failOnDataLoss=false to continue from the "
                                   "partitions' start")
        log.warning("%s; failOnDataLoss=false: continuing from each partition's start", what)
        reset = {tp: low for tp, (low, _) in marks.items() if tp[0] in changed}
        for tp in reset:
            self._beyond_since.pop(tp, None)
        return reset

    def partitions(self, start: dict, end: dict):
        begin, finish = from_json(start), from_json(end)
        new = [tp for tp in finish if tp not in begin]
        if new:  # partitions that appeared in this batch start at their earliest offset
            begin.update({tp: lo for tp, (lo, hi) in self.client.watermarks(new).items()})
        ranges = {tp: (begin[tp], hi) for tp, hi in finish.items()}
        return plan_partitions(ranges, self.cfg.min_partitions)

    def read(self, partition: KafkaInputPartition):
        sparkworker.settle()
        return read_range(self.cfg, partition.topic, partition.partition, partition.start,
                          partition.end)

    def commit(self, end: dict) -> None:
        self._commit_group(end)

    def _commit_group(self, offsets: dict) -> None:
        """Processed offsets to kafka.group.id, for lag tools; never fails the query."""
        if not self.cfg.group_id or not offsets or offsets == self._group_committed:
            return
        try:
            self.client.commit(from_json(offsets))
            self._group_committed = offsets
        except Exception as exc:  # noqa: BLE001 - lag reporting never fails the query
            log.warning("could not commit offsets to group %s: %s", self.cfg.group_id, exc)

    def _settle_prefetch(self) -> None:
        if self._prefetch is not None:
            self._prefetch.join()
            self._prefetch = None

    def stop(self) -> None:
        self._settle_prefetch()
        if self._client is not None:
            self._client.close()
            self._client = None


CUT_ROUNDS = 2  # refinement probes per lagging partition and batch (balanced_cut): ~1 s of record time apart


def balanced_cut(begin, end, max_rows: int, timestamps_at) -> dict:
    """Cap a batch at ``max_rows`` records, cutting every partition at about the same
    record time, so that partitions advance together in event time: a partition that a
    burst made denser (a flood keyed by the client's IP) is not read ahead of, or behind,
    the others — its lines would then reach windows that the other partitions' lines have
    not filled yet.

    ``timestamps_at({tp: offset})``: the record time (ms) at one offset of each partition
    asked (None when unknown), in one round trip. Each lagging partition is probed at both
    ends of its lag and then at its cut, ``CUT_ROUNDS`` times; between probes its offsets
    are taken as growing linearly with time. Without usable record times (none, or all
    equal), the cap is shared in proportion to the lags."""
    lags = _lags(begin, end)
    if sum(lags.values()) <= max_rows:
        return end
    lagging = [tp for tp, n in lags.items() if n > 0]
    firsts = timestamps_at({tp: begin[tp] for tp in lagging})
    lasts = timestamps_at({tp: end[tp] - 1 for tp in lagging})
    if any(firsts.get(tp) is None or lasts.get(tp) is None for tp in lagging):
        return _rate_limit(begin, end, max_rows)
    points = {tp: {begin[tp]: firsts[tp], end[tp] - 1: lasts[tp]} for tp in lagging}
    if len({ts for pts in points.values() for ts in pts.values()}) < 2:
        return _rate_limit(begin, end, max_rows)
    cut = {}
    for round_ in range(CUT_ROUNDS + 1):
        t = _time_for(points, begin, max_rows)
        cut = {tp: _offset_at(points[tp], t, begin[tp], end[tp]) for tp in lagging}
        fresh = {tp: off - 1 for tp, off in cut.items() if begin[tp] < off < end[tp] and off - 1 not in points[tp]}
        if not fresh or round_ == CUT_ROUNDS:
            break
        for tp, ts in timestamps_at(fresh).items():
            if ts is None:
                return _rate_limit(begin, end, max_rows)
            points[tp][fresh[tp]] = ts
    out = dict(end)
    for tp in lagging:
        out[tp] = cut[tp]
    return _rate_limit(begin, out, max_rows)  # the model's estimate can be a little over


def _offset_at(points: dict[int, int], t: float, lo: int, hi: int) -> int:
    """The end offset of a partition's records at or before time ``t``: probed (offset, ms)
    points, times made non-decreasing, linear in between; within [lo, hi]."""
    offs = sorted(points)
    times = []
    for off in offs:
        times.append(max(points[off], times[-1]) if times else points[off])
    if t < times[0]:
        return lo
    if t >= times[-1]:
        return hi if offs[-1] >= hi - 1 else offs[-1] + 1
    for (o1, t1), (o2, t2) in zip(zip(offs, times), zip(offs[1:], times[1:]), strict=False):
        if t1 <= t < t2:
            return min(hi, max(lo, o1 + 1 + int((o2 - o1) * (t - t1) / (t2 - t1))))
    return hi


def _time_for(points: dict, begin: dict, max_rows: int) -> float:
    """The record time at which the partitions' records since ``begin`` add up to
    ``max_rows`` (bisection on the piecewise-linear model)."""
    lo = min(min(p.values()) for p in points.values()) - 1
    hi = max(max(p.values()) for p in points.values())
    for _ in range(64):
        mid = (lo + hi) / 2
        total = sum(_offset_at(pts, mid, begin[tp], max(pts) + 1) - begin[tp] for tp, pts in points.items())
        if total > max_rows:
            hi = mid
        else:
            lo = mid
        if hi - lo < 0.5:
            break
    return lo


def _lags(begin, end) -> dict:
    """Records from ``begin`` to ``end`` per partition. A partition reset to its start (see
    _beyond_end) moves back: no lag."""
    return {tp: max(0, end[tp] - begin.get(tp, end[tp])) for tp in end}


def _rate_limit(begin, end, max_rows: int) -> dict:
    """Cap the total offsets of a batch at max_rows, shared in proportion to each lag."""
    lags = _lags(begin, end)
    total = sum(lags.values())
    if total <= max_rows:
        return end
    share = {tp: lag * max_rows // total for tp, lag in lags.items()}
    spare = max_rows - sum(share.values())
    for tp in sorted(lags, key=lambda tp: lags[tp] - share[tp], reverse=True):
        if spare <= 0:
            break
        if share[tp] < lags[tp]:
            share[tp] += 1
            spare -= 1
    return {tp: min(end[tp], begin.get(tp, end[tp]) + share[tp]) for tp in end}
