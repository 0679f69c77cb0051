"""The relay's loop: the ``alerts`` topic → Alertmanager's API v2, offsets committed after.

Reading: a consumer **group** (``chaussettes-relay``) whose offsets the relay manages itself
with ``assign()`` + ``commit()`` (the local broker delivers a subscribed group's first
message ~23 s after joining; an assignment is immediate). Start: the group's committed
offsets; a group that never committed (and ``--from-beginning``) starts at the beginning of
the topic — what is still open there is posted, what is over reaches Alertmanager already
resolved, which Alertmanager does not notify.

Start-up: the open incidents are rebuilt from the topic (up to ``REBUILD_MAX`` records per
partition before the start offsets, without posting them one by one) and re-posted at once,
so a restarted relay keeps refreshing what was open.

Each batch (at most ``batch_max`` records, or what arrived in ``POLL_S``): records →
``IncidentTracker`` → Alertmanager alerts, one per label set; every ``relay_refresh_s`` the
open incidents are added. The batch is POSTed (``AlertSender``: in chunks, retried with
backoff for as long as Alertmanager is unreachable) and only then are the offsets
committed. A relay killed between the POST and the commit posts the same alerts again when
it restarts: Alertmanager deduplicates by labels, so nobody is notified twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chaussettes import alertmanager
from chaussettes.incident_events import InvalidRecord, parse_event
from chaussettes.metrics import RelayMetrics
from chaussettes.notify.tracker import IncidentTracker, collapse

log = logging.getLogger("chaussettes.notify")

GROUP_ID = "chaussettes-relay"
POLL_S = 0.2
BATCH_MAX = 5000
POST_CHUNK = 2000  # alerts per POST: Alertmanager took ~23k alerts/s in chunks of 2,000 here
REBUILD_MAX = 100_000
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
RETRY_LOG_EVERY_S = 60.0


class RelayError(RuntimeError):
    """The relay cannot run (Kafka unreachable, topic missing); one line."""


class Interrupted(Exception):
    """A stop was requested while Alertmanager was still refusing a batch."""


@dataclass
class RelayConfig:
    alertmanager_url: str
    topic: str
    group_id: str = GROUP_ID
    from_beginning: bool = False
    once: bool = False
    batch_max: int = BATCH_MAX
    rebuild_max: int = REBUILD_MAX
    progress_every_s: float = 60.0


@dataclass
class RelayStats:
    records: int = 0
    invalid: int = 0
    sent: int = 0
    rejected: int = 0
    failed_posts: int = 0
    retries: int = 0
    rebuilt: int = 0
    batches: int = 0
    positions: dict[int, int] = field(default_factory=dict)


class AlertSender:
    """POSTs alerts to Alertmanager in chunks; retries a chunk with backoff until it is
    accepted (or a stop is requested); a chunk refused as invalid (400) is sent alert by
    alert and the refused ones are logged and skipped."""

    def __init__(self, url: str, stats: RelayStats, metrics: RelayMetrics, chunk: int = POST_CHUNK,
                 timeout_s: float = 10.0, backoff_base_s: float = BACKOFF_BASE_S,
                 backoff_max_s: float = BACKOFF_MAX_S):
        self.url = url
        self.stats = stats
        self.metrics = metrics
        self.chunk = chunk
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    def send(self, alerts: Sequence[dict], stop: threading.Event) -> None:
        for i in range(0, len(alerts), self.chunk):
            self._send(alerts[i:i + self.chunk], stop)

    def _send(self, chunk: Sequence[dict], stop: threading.Event) -> None:
        delay, failing_since, last_log = self.backoff_base_s, None, 0.0
        while True:
            try:
                alertmanager.post_alerts(self.url, chunk, timeout=self.timeout_s)
            except alertmanager.AlertsRejected as exc:
                self._accepted(0)
                if len(chunk) > 1:
                    for alert in chunk:
                        self._send([alert], stop)
                    return
                self.stats.rejected += 1
                self.metrics.rejected.inc()
                log.warning("Alertmanager refused alert %s: %s; skipped", chunk[0]["labels"], exc)
                return
            except alertmanager.AlertmanagerError as exc:
                self.stats.failed_posts += 1
                self.metrics.failed.inc()
                self.metrics.alertmanager_up.set(0)
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                if now - last_log >= RETRY_LOG_EVERY_S:
                    log.warning("%s; %d alerts wait, retrying (backoff up to %.0fs)", exc, len(chunk),
                                self.backoff_max_s)
                    last_log = now
                if stop.wait(delay):
                    raise Interrupted from None
                delay = min(delay * 2, self.backoff_max_s)
                self.stats.retries += 1
                self.metrics.retries.inc()
                continue
            if failing_since is not None:
                log.warning("Alertmanager at %s accepts alerts again (after %.0fs)", self.url,
                            time.monotonic() - failing_since)
            self._accepted(len(chunk))
            return

    def _accepted(self, n: int) -> None:
        self.stats.sent += n
        self.metrics.sent.inc(n)
        self.metrics.alertmanager_up.set(1)
        self.metrics.last_success.set(time.time())


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Relay:
    def __init__(self, settings, cfg: RelayConfig, metrics: RelayMetrics | None = None,
                 clock: Callable[[], dt.datetime] = _utcnow):
        self.settings = settings
        self.cfg = cfg
        self.metrics = metrics or RelayMetrics()
        self.clock = clock
        self.stats = RelayStats()
        self.tracker = IncidentTracker(site=settings.alert_site, horizon_s=settings.relay_horizon_s,
                                       open_max_s=settings.relay_open_max_s,
                                       ops_page_url=settings.ops_page_url)
        self.sender = AlertSender(cfg.alertmanager_url, self.stats, self.metrics)
        self.refresh_s = settings.relay_refresh_s
        self._consumer = None
        self._commit_warned = -RETRY_LOG_EVERY_S

    # ------------------------------------------------------------------ Kafka
    def _open(self):
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        s, topic, timeout = self.settings, self.cfg.topic, self.settings.kafka_timeout_s
        self._consumer = consumer = Consumer(s.kafka_client_config(**{
            "group.id": self.cfg.group_id, "enable.auto.commit": False, "enable.auto.offset.store": False,
            "enable.partition.eof": True, "auto.offset.reset": "earliest", "fetch.queue.backoff.ms": 0,
            "fetch.wait.max.ms": 100}))
        try:
            meta = consumer.list_topics(topic, timeout=timeout)
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None or not tmeta.partitions:
                raise RelayError(f"topic {topic!r} does not exist on {s.bootstrap_servers}")
            partitions = sorted(tmeta.partitions)
            marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                     for p in partitions}
            committed = {tp.partition: tp.offset for tp in
                         consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)}
        except KafkaException as exc:
            raise RelayError(f"Kafka at {s.bootstrap_servers} did not answer within {timeout:g}s "
                             f"({exc.args[0].str() if exc.args else exc})") from None
        # Not clamped to the reported end: the local broker reports it up to one producer batch early.
        start = {p: low if self.cfg.from_beginning else max(committed.get(p, -1), low)
                 for p, (low, _high) in marks.items()}
        return partitions, marks, start

    def _read(self, ranges: dict[int, tuple[int, int]], stop: threading.Event):
        """Yield (partition, offset, value) for offsets in [from, to) of each partition."""
        from confluent_kafka import KafkaError, TopicPartition

        consumer, topic = self._consumer, self.cfg.topic
        todo = {p: r for p, r in ranges.items() if r[0] < r[1]}
        if not todo:
            return
        consumer.assign([TopicPartition(topic, p, r[0]) for p, r in todo.items()])
        deadline = time.monotonic() + max(60.0, 6 * self.settings.kafka_timeout_s)
        while todo and not stop.is_set():
            if time.monotonic() > deadline:
                log.warning("start-up read of %s stopped early at partitions %s", topic, sorted(todo))
                break
            for m in consumer.consume(self.cfg.batch_max, POLL_S):
                p = m.partition()
                if p not in todo:
                    continue
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        todo.pop(p, None)
                    continue
                if m.offset() >= todo[p][1]:
                    todo.pop(p, None)
                    continue
                deadline = time.monotonic() + max(60.0, 6 * self.settings.kafka_timeout_s)
                yield p, m.offset(), m.value()
                if m.offset() + 1 >= todo[p][1]:
                    todo.pop(p, None)

    def _commit(self, positions: dict[int, int]) -> bool:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            self._consumer.commit(offsets=[TopicPartition(self.cfg.topic, p, o) for p, o in positions.items()],
                                  asynchronous=False)
        except KafkaException as exc:
            if time.monotonic() - self._commit_warned >= RETRY_LOG_EVERY_S:
                self._commit_warned = time.monotonic()
                log.warning("could not commit offsets %s (%s); retrying with the next batch", positions, exc)
            return False
        return True

    # ------------------------------------------------------------------ the loop
    def _parse(self, p: int, offset: int, value, count: bool = True):
        try:
            return parse_event(value)
        except InvalidRecord as exc:
            if count:
                self.stats.invalid += 1
                self.metrics.invalid.inc()
                log.warning("skipped %s[%d]@%d: not an alert: %s", self.cfg.topic, p, offset, exc)
            return None

    def rebuild(self, start: dict[int, int], marks: dict, stop: threading.Event) -> None:
        ranges = {p: (max(marks[p][0], start[p] - self.cfg.rebuild_max), start[p]) for p in start}
        now = self.clock()
        for p, offset, value in self._read(ranges, stop):
            ev = self._parse(p, offset, value, count=False)
            if ev is not None:
                self.tracker.apply(ev, now)
                self.stats.rebuilt += 1
        if self.stats.rebuilt:
            log.info("rebuilt from %d earlier records: %d incidents open", self.stats.rebuilt,
                     len(self.tracker.open))

    def run(self, stop: threading.Event | None = None) -> RelayStats:
        """Relay until ``stop`` is set (or, with ``once``, until every partition's end)."""
        from confluent_kafka import KafkaError, TopicPartition

        stop = stop or threading.Event()
        try:
            partitions, marks, start = self._open()
            log.info("relaying %s (partitions %s, from offsets %s) to %s", self.cfg.topic, partitions,
                     start, self.cfg.alertmanager_url)
            self.rebuild(start, marks, stop)
            consumer = self._consumer
            consumer.assign([TopicPartition(self.cfg.topic, p, start[p]) for p in partitions])
            positions, committed = dict(start), {}
            pending: list[dict] = []
            at_end: set[int] = set()
            last_refresh = time.monotonic() - self.refresh_s  # post the rebuilt incidents at once
            last_progress = time.monotonic()
            while not stop.is_set():
                for m in consumer.consume(self.cfg.batch_max, POLL_S):
                    p = m.partition()
                    if m.error() is not None:
                        if m.error().code() == KafkaError._PARTITION_EOF:
                            at_end.add(p)
                        elif m.error().fatal():
                            raise RelayError(f"Kafka error on {self.cfg.topic}: {m.error().str()}")
                        continue
                    at_end.discard(p)
                    positions[p] = m.offset() + 1
                    self.stats.records += 1
                    self.metrics.records.inc()
                    ev = self._parse(p, m.offset(), m.value())
                    if ev is not None:
                        pending += self.tracker.apply(ev, self.clock())
                if time.monotonic() - last_refresh >= self.refresh_s:
                    last_refresh = time.monotonic()
                    pending = self.tracker.refresh(self.clock()) + pending  # the events' alerts win
                    if not pending:  # idle: still say whether Alertmanager answers
                        self.metrics.alertmanager_up.set(int(alertmanager.ready(self.cfg.alertmanager_url)))
                if pending or positions != committed:
                    try:
                        self.sender.send(collapse(pending), stop)
                    except Interrupted:
                        log.warning("stopped while Alertmanager refused %d alerts: their records are not "
                                    "committed and will be relayed again", len(pending))
                        break
                    pending = []
                    if positions != committed and self._commit(positions):
                        committed = dict(positions)
                        self.stats.batches += 1
                        self.metrics.committed.inc()
                self.metrics.open_incidents.set(len(self.tracker.open))
                if time.monotonic() - last_progress >= self.cfg.progress_every_s:
                    last_progress = time.monotonic()
                    log.info("%s", self.summary())
                if self.cfg.once and at_end >= set(partitions):
                    break
            self.stats.positions = committed
            return self.stats
        finally:
            self.close()

    def summary(self) -> str:
        s = self.stats
        return (f"{s.records:,} records ({s.invalid:,} not alerts), {s.sent:,} alerts sent to "
                f"{self.cfg.alertmanager_url} ({s.rejected:,} refused, {s.failed_posts:,} failed posts, "
                f"{s.retries:,} retries), {len(self.tracker.open):,} incidents open")

    def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                consumer.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("closing the consumer: %s", exc)
