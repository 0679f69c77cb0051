"""Reading back what the detector published on ``alerts`` (tests, benchmarks, tools).

Publishing itself is ``sink.IncidentSink``: exactly once per micro-batch through
``spark_kafka.write_batch``'s transactions and markers, with Spark's checkpoint.
"""

from __future__ import annotations

import json
import time


class ReadError(RuntimeError):
    pass


def read_alerts(settings, topic: str | None = None, timeout_s: float = 10.0) -> list[dict]:
    """Every alert on the topic (from the beginning up to its current end), in offset order."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    topic = topic or settings.topic_alerts
    consumer = Consumer(settings.kafka_client_config(**{
        "group.id": "chaussettes-detector-readback", "enable.auto.commit": False,
        "isolation.level": "read_committed", "fetch.queue.backoff.ms": 0,
    }))
    try:
        try:
            md = consumer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            raise ReadError(f"cannot read topic {topic}: {exc}") from None
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None:
            return []
        ends: dict[int, int] = {}
        for p in tmd.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        if not ends:
            return []
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[tuple[int, int, dict]] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                p, off = msg.partition(), msg.offset()
                try:
                    out.append((p, off, json.loads(msg.value())))
                except (ValueError, TypeError):
                    pass
                # the reported end may be the base offset of the last batch + 1 (Tansu):
                # reaching end-1 means the whole last batch has arrived
                if off >= ends[p] - 1:
                    done.add(p)
        return [a for _, _, a in sorted(out, key=lambda t: (t[0], t[1]))]
    finally:
        consumer.close()
