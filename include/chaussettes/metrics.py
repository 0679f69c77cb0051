"""Prometheus metrics of the platform's long-running parts (``prometheus-client``).

Each part serves ``/metrics`` on its own port from settings (``detector_metrics_port``,
``generator_metrics_port``, ``relay_metrics_port``; 0 = none) on ``metrics_address``; every
name starts with ``chaussettes_``. A busy port is one warning line, never a failure: metrics
must not stop the stream.

- The detector and the generator already describe themselves in a status document after
  every micro-batch / every second; ``DetectorMetrics`` and ``GeneratorMetrics`` map that
  document to metrics (``observe(status)``), tolerating missing keys, so the status writers
  only call one function. Cumulative figures of the document are exposed as counters.
- The relay counts as it goes (``RelayMetrics``).

The names are listed in README.md (Metrics) and used by ``alerting/rules.yml``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from chaussettes.incident_events import parse_time

log = logging.getLogger(__name__)

BATCH_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not math.isnan(value):
        return float(value)
    return None


def _timestamp(value: Any) -> float | None:
    t = parse_time(value) if isinstance(value, str) else None
    return t.timestamp() if t else None


@dataclass(frozen=True)
class FromStatus:
    """One metric read from one key of a status document.

    ``kind``: gauge | counter (a cumulative figure) | flag (1 when the value is not null) |
    time (an ISO time as epoch seconds). ``labels``: the value is a mapping
    ({label: value}, or {l1: {l2: value}} for two labels)."""

    key: str
    name: str
    help: str
    kind: str = "gauge"
    labels: tuple[str, ...] = ()

    def families(self, doc: Mapping) -> Iterator:
        if self.key not in doc:
            return
        value = doc[self.key]
        family = (CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily)(
            self.name, self.help, labels=list(self.labels) or None)
        if self.labels:
            for label_values, v in _flatten(value, len(self.labels)):
                if (n := _number(v)) is not None:
                    family.add_metric(label_values, n)
        else:
            if self.kind == "flag":
                n = 0.0 if value is None else 1.0
            elif self.kind == "time":
                n = _timestamp(value)
            else:
                n = _number(value)
            if n is None:
                return
            family.add_metric([], n)
        yield family


def _flatten(value: Any, depth: int, prefix: tuple = ()) -> Iterator[tuple[list[str], Any]]:
    if not isinstance(value, Mapping):
        return
    for k, v in value.items():
        if depth == 1:
            yield [*prefix, str(k)], v
        else:
            yield from _flatten(v, depth - 1, (*prefix, str(k)))


class StatusMetrics(Collector):
    """Metrics mapped from the latest status document of one part (see the module docstring)."""

    PREFIX = "chaussettes_"
    TABLE: tuple[FromStatus, ...] = ()
    RUNNING_STATES = ("running",)

    def __init__(self, part: str, registry: CollectorRegistry | None = None):
        self.part = part
        self.registry = registry or CollectorRegistry()
        self._doc: dict = {}
        self._lock = threading.Lock()
        self.registry.register(self)

    def observe(self, status: Mapping) -> None:
        """Take a new status document (never raises: it runs inside the part's own loop)."""
        try:
            with self._lock:
                self._doc = dict(status)
        except Exception as exc:  # noqa: BLE001 - metrics must not break what they measure
            log.debug("metrics: bad status document: %s", exc)

    def collect(self) -> Iterator:
        with self._lock:
            doc = dict(self._doc)
        running = GaugeMetricFamily(f"{self.PREFIX}{self.part}_running",
                                    f"1 while the {self.part} says it is running")
        running.add_metric([], 1.0 if doc.get("state") in self.RUNNING_STATES else 0.0)
        yield running
        for entry in self.TABLE:
            yield from entry.families(doc)


def _d(key: str, name: str, help_: str, kind: str = "gauge", labels: tuple[str, ...] = ()) -> FromStatus:
    return FromStatus(key, f"chaussettes_detector_{name}", help_, kind, labels)


class DetectorMetrics(StatusMetrics):
    """The detector's status document (``detector/status.py``, after every micro-batch)."""

    TABLE = (
        _d("batch_id", "batch_id", "id of the last completed micro-batch"),
        _d("input_rows", "last_batch_input_rows", "records read by the last micro-batch"),
        _d("input_rows_per_s", "input_rows_per_second", "input rate of the last micro-batch (rows/s)"),
        _d("processed_rows_per_s", "processed_rows_per_second", "processing rate of the last micro-batch (rows/s)"),
        _d("batch_duration_s", "last_batch_duration_seconds", "duration of the last micro-batch"),
        _d("lag", "lag_records", "records waiting in the input topic, per partition", labels=("topic", "partition")),
        _d("total_lag", "lag_records_sum", "records waiting in the input topic, all partitions"),
        _d("events_total", "events_total", "parsed events since the detector started", "counter"),
        _d("quarantined_total", "quarantined_total", "unparseable lines quarantined", "counter"),
        _d("late_total", "late_total", "events dropped as late (their windows had ended)", "counter"),
        _d("alerts_published_total", "alerts_published_total", "records published on the alerts topic", "counter"),
        _d("incidents_open", "incidents_open", "open incidents by kind", labels=("kind",)),
        _d("incident_events_total", "incident_events_total", "incident events published, by event", "counter",
           labels=("event",)),
        _d("state_rows", "state_rows", "rows in the streaming state store"),
        _d("thresholds_version", "thresholds_version", "thresholds version in force"),
        _d("thresholds_error", "thresholds_rejected", "1 while the last thresholds file was refused", "flag"),
        _d("archive_error", "archive_failing", "1 while writing the archive fails", "flag"),
        _d("updated_at", "status_updated_timestamp_seconds", "when the status was last written", "time"),
    )

    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__("detector", registry)
        self._batch_id = None
        self._last_batch_at: float | None = None
        self.batch_seconds = Histogram("chaussettes_detector_batch_duration_seconds",
                                       "duration of each micro-batch", buckets=BATCH_SECONDS_BUCKETS,
                                       registry=self.registry)

    def observe(self, status: Mapping) -> None:
        super().observe(status)
        try:
            batch = status.get("batch_id")
            if batch is not None and batch != self._batch_id:
                self._batch_id = batch
                self._last_batch_at = _timestamp(status.get("updated_at")) or time.time()
                if (seconds := _number(status.get("batch_duration_s"))) is not None:
                    self.batch_seconds.observe(seconds)
        except Exception as exc:  # noqa: BLE001
            log.debug("metrics: bad status document: %s", exc)

    def collect(self) -> Iterator:
        yield from super().collect()
        if self._last_batch_at is not None:
            last = GaugeMetricFamily("chaussettes_detector_last_batch_timestamp_seconds",
                                     "when the last micro-batch completed (epoch seconds)")
            last.add_metric([], self._last_batch_at)
            yield last


class GeneratorMetrics(StatusMetrics):
    """The generator's heartbeat document (``generator/cli.py``, every second)."""

    TABLE = (
        FromStatus("lines", "chaussettes_generator_lines_total", "lines sent", "counter"),
        FromStatus("lines_per_s", "chaussettes_generator_lines_per_second", "send rate over the last 10 s"),
        FromStatus("delivery_errors", "chaussettes_generator_delivery_errors_total",
                   "lines the sink failed to deliver", "counter"),
        FromStatus("rate", "chaussettes_generator_target_rate", "lines/s asked for (0 = as fast as possible)"),
    )

    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__("generator", registry)


class RelayMetrics:
    """The Alertmanager relay (``chaussettes.notify``)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        self.records = Counter("chaussettes_relay_records_total", "records read from the alerts topic", registry=r)
        self.invalid = Counter("chaussettes_relay_invalid_records_total",
                               "records on the alerts topic that are not alerts (logged, skipped)", registry=r)
        self.sent = Counter("chaussettes_relay_alerts_sent_total",
                            "alerts Alertmanager accepted (events and refreshes)", registry=r)
        self.rejected = Counter("chaussettes_relay_alerts_rejected_total",
                                "alerts Alertmanager refused as invalid (logged, skipped)", registry=r)
        self.failed = Counter("chaussettes_relay_post_failures_total",
                              "POSTs to Alertmanager that failed (unreachable, 5xx)", registry=r)
        self.retries = Counter("chaussettes_relay_retries_total", "POSTs retried after a failure", registry=r)
        self.alertmanager_up = Gauge("chaussettes_relay_alertmanager_up",
                                     "1 when the last POST to Alertmanager succeeded", registry=r)
        self.open_incidents = Gauge("chaussettes_relay_open_incidents",
                                    "incidents the relay keeps open in Alertmanager", registry=r)
        self.last_success = Gauge("chaussettes_relay_last_success_timestamp_seconds",
                                  "when Alertmanager last accepted a POST", registry=r)
        self.committed = Counter("chaussettes_relay_batches_committed_total",
                                 "batches whose offsets were committed after Alertmanager accepted them",
                                 registry=r)


def serve(registry: CollectorRegistry, port: int, address: str = "127.0.0.1",
          what: str = "metrics") -> Callable[[], None] | None:
    """Serve ``registry`` on http://address:port/metrics; returns a stop function, or None when
    port is 0 or busy (one warning line)."""
    if not port:
        return None
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        log.warning("%s: cannot serve metrics on %s:%s (%s); going on without", what, address, port,
                    exc.strerror or exc)
        return None
    log.info("%s: metrics on http://%s:%s/metrics", what, address, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


def _ignore(status: Mapping) -> None:
    pass


def start_detector_metrics(settings) -> Callable[[Mapping], None]:
    """The detector's endpoint on ``settings.detector_metrics_port``; returns the status
    observer to hand to ``StatusWriter`` (one that does nothing when not serving)."""
    metrics = DetectorMetrics()
    if serve(metrics.registry, settings.detector_metrics_port, settings.metrics_address, "detector") is None:
        return _ignore
    return metrics.observe


def start_generator_metrics(settings, port: int | None) -> Callable[[Mapping], None]:
    """The generator's endpoint on ``port`` (None or 0: none); returns its heartbeat observer."""
    metrics = GeneratorMetrics()
    if not port or serve(metrics.registry, port, settings.metrics_address, "generator") is None:
        return _ignore
    return metrics.observe
