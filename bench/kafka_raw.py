"""The reference every figure is compared with: raw confluent-kafka produce and
consume rates against the local broker, ~200-byte messages."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition

MESSAGE_BYTES = 200


def produce_rate(settings, topic: str, count: int) -> float:
    producer = Producer(settings.kafka_client_config(**{
        "linger.ms": 20, "batch.size": 1_000_000, "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
        "compression.type": "none", "acks": "all",
    }))
    payloads = [(b"%06d" % i) + b"x" * (MESSAGE_BYTES - 6) for i in range(1000)]
    keys = [b"10.0.%d.%d" % (i // 256 % 256, i % 256) for i in range(1000)]
    produce = producer.produce
    t0 = time.perf_counter()
    for i in range(count):
        j = i % 1000
        while True:
            try:
                produce(topic, payloads[j], keys[j])
                break
            except BufferError:
                producer.poll(0.01)
        if i % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    elapsed = time.perf_counter() - t0
    if remaining:
        raise RuntimeError(f"{remaining} messages not delivered")
    return count / elapsed


def consume_rate(settings, topic: str, partitions: int, count: int) -> float:
    consumer = Consumer(settings.kafka_client_config(**{
        "group.id": f"bench-{time.time_ns()}", "enable.auto.commit": False,
        "fetch.queue.backoff.ms": 0, "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760, "queued.min.messages": 1_000_000,
    }))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = 0
    t0 = time.perf_counter()
    deadline = t0 + 120
    while seen < count and time.perf_counter() < deadline:
        for msg in consumer.consume(10_000, 1.0):
            if msg.error() is None:
                seen += 1
    elapsed = time.perf_counter() - t0
    consumer.close()
    if seen < count:
        raise RuntimeError(f"consumed {seen} of {count} messages")
    return seen / elapsed
