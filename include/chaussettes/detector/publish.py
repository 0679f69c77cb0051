"""Publishing alerts on Kafka exactly once.

Three things together make a restart publish no alert twice and lose none:
- the alert_id is deterministic (alerts.alert_id), and is the message key;
- the ids already published are part of the checkpointed state (state.DetectorState);
- an alert produced (and acknowledged) by a batch whose state was never saved — the
  driver died in between — is found again at start-up by reading back the ``alerts``
  topic (``published_ids``), so the re-run of that batch skips it.
Producing is idempotent (enable.idempotence, acks=all) and every batch waits for all its
deliveries before its state is saved: an unacknowledged alert fails the batch, Spark does
not commit it, and the restart re-runs it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping

from chaussettes.detector.alerts import to_message

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    pass


class AlertPublisher:
    def __init__(self, settings, topic: str | None = None):
        from confluent_kafka import Producer

        self.settings = settings
        self.topic = topic or settings.topic_alerts
        self._producer = Producer(settings.kafka_client_config(**{
            "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "message.timeout.ms": int(max(settings.kafka_timeout_s, 5) * 1000 * 3),
        }))

    def publish(self, alerts: Iterable[Mapping]) -> int:
        errors: list[str] = []

        def on_delivery(err, _msg):
            if err is not None:
                errors.append(str(err))

        n = 0
        for alert in alerts:
            key, value = to_message(alert)
            while True:
                try:
                    self._producer.produce(self.topic, key=key, value=value, on_delivery=on_delivery)
                    break
                except BufferError:
                    self._producer.poll(0.1)
            n += 1
        if n:
            remaining = self._producer.flush(max(self.settings.kafka_timeout_s, 5) * 3)
            if remaining:
                raise PublishError(f"{remaining} alert(s) not acknowledged by {self.settings.bootstrap_servers}")
            if errors:
                raise PublishError(f"alert delivery failed: {errors[0]}")
        return n

    def close(self) -> None:
        self._producer.flush(5)


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
            raise PublishError(f"cannot read topic {topic}: {exc}") from None
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


def published_ids(settings, topic: str | None = None, newer_than_s: float | None = None) -> dict[str, int]:
    """alert_id -> window_end (epoch s) of the alerts already on the topic."""
    import datetime as dt

    out = {}
    for alert in read_alerts(settings, topic):
        try:
            end = dt.datetime.fromisoformat(alert["window_end"]).timestamp()
        except (KeyError, ValueError, AttributeError):
            continue
        if newer_than_s is None or end > newer_than_s:
            out[alert["alert_id"]] = int(end)
    return out
