"""The detector status file: written atomically after every micro-batch of either query.

Keys: ``schemas.STATUS_KEYS`` (what the supervisor and the operations page rely on: the
ingest's progress, lag, totals, thresholds) plus ``recent_global_windows`` (the last ~60
judged global windows, for the page's chart), ``incidents`` (open ones first, then the
latest resolved, bounded), ``incidents_open`` and ``incident_events_total`` (from the
state store's key groups), ``state_rows``, ``incidents_applied_batch`` (the last ingest batch the stateful query has
read: how far behind it is), ``watermark``, ``late_total``,
``archive_error`` / ``archive_pending`` (file outputs waiting for a retry) and a few more.
Readers never see half a file: temp file + rename. An observer (the metrics endpoint) is
told every document written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from chaussettes import atomicfile, schemas

log = logging.getLogger(__name__)

RECENT_GLOBAL = 60
RECENT_RESOLVED = 20
MAX_OPEN_LISTED = 100


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


class StatusWriter:
    def __init__(self, path: Path, source: str, settings=None, topic: str | None = None,
                 observer: Callable[[dict], None] | None = None):
        self.path = Path(path)
        self.source = source
        self.settings = settings
        self.topic = topic
        self.observer = observer
        self._consumer = None
        self._lock = threading.Lock()
        self._groups: dict[tuple[str, str], dict] = {}  # the state store's key groups' last stats
        self._open: dict[str, dict] = {}  # incident_id -> its latest event (display only)
        self._resolved: list[dict] = []
        self._windows: dict[int, dict] = {}
        self.doc: dict = {k: None for k in schemas.STATUS_KEYS}
        self.doc.update({
            "pid": os.getpid(), "started_at": _now(), "source": source, "end_offsets": {},
            "lag": {}, "total_lag": None, "quarantined_total": 0, "alerts_published_total": 0,
            "alerts_last_batch": 0, "recent_global_windows": [], "incidents": [],
            "incidents_open": {"global": 0, "ip": 0, "url": 0},
            "incident_events_total": {"firing": 0, "escalated": 0, "resolved": 0},
            "state_rows": 0, "evaluations_total": 0, "late_total": 0, "events_total": 0,
            "archive_error": None, "archive_pending": 0, "incidents_batch_id": None,
            "incidents_applied_batch": None,
        })

    def _write(self) -> None:
        self.doc["updated_at"] = _now()
        try:
            atomicfile.write_json(self.path, self.doc, indent=1, mode=0o600)
        except OSError as exc:  # the status must never stop the stream
            log.warning("cannot write status %s: %s", self.path, exc)
        if self.observer is not None:
            try:
                self.observer(dict(self.doc))
            except Exception as exc:  # noqa: BLE001 - metrics never stop the stream
                log.warning("status observer: %s", exc)

    def starting(self) -> None:
        with self._lock:
            self.doc["state"] = "running"
            self._write()

    def finished(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self.doc["state"] = state
            self.doc["error"] = error
            self._write()
        self.close()

    def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                consumer.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("closing the lag consumer: %s", exc)

    def _lag(self, end_offsets: dict) -> tuple[dict, int | None]:
        if self.settings is None or self.source != "kafka":
            return {}, None
        try:
            from confluent_kafka import Consumer, TopicPartition

            if self._consumer is None:
                self._consumer = Consumer(self.settings.kafka_client_config(**{
                    "group.id": "chaussettes-detector-status", "enable.auto.commit": False}))
            lag: dict[str, dict[str, int]] = {}
            total = 0
            topics = set(end_offsets) | ({self.topic} if self.topic else set())
            for topic in topics:
                md = self._consumer.list_topics(topic, timeout=2).topics.get(topic)
                if md is None or md.error is not None:
                    continue
                for p in md.partitions:
                    low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=2)
                    done = end_offsets.get(topic, {}).get(str(p), low)
                    n = max(high - done, 0)
                    lag.setdefault(topic, {})[str(p)] = n
                    total += n
            return lag, total
        except Exception as exc:  # noqa: BLE001 - a broker hiccup must not fail the batch
            log.warning("lag unknown: %s", exc)
            return {}, None

    def ingest_done(self, *, batch_id, input_rows, input_rows_per_s, processed_rows_per_s, duration_s,
                    clock, thresholds, watcher) -> None:
        """After an ingest micro-batch: progress, lag, totals, thresholds, file outputs."""
        lag, total = self._lag(clock.end_offsets)
        pending = clock.pending_files
        with self._lock:
            self.doc.update({
                "state": "running", "batch_id": batch_id, "input_rows": int(input_rows),
                "input_rows_per_s": round(float(input_rows_per_s), 1),
                "processed_rows_per_s": round(float(processed_rows_per_s), 1),
                "end_offsets": clock.end_offsets, "lag": lag, "total_lag": total,
                "thresholds_version": thresholds.version, "thresholds_source": thresholds.source,
                "thresholds_error": watcher.error, "thresholds_refused": watcher.refused,
                "quarantined_total": int(clock.quarantined_total),
                "error": None, "watermark": _iso(clock.watermark), "events_total": int(clock.events_total),
                "late_total": int(clock.late_total), "batch_duration_s": round(float(duration_s), 3),
                "archive_error": pending[-1]["error"] if pending else None, "archive_pending": len(pending),
            })
            self._write()

    def applied_batch(self) -> int:
        """The last ingest batch the stateful query has read, -1 before any."""
        with self._lock:
            applied = self.doc.get("incidents_applied_batch")
        return -1 if applied is None else int(applied)

    def incidents_done(self, *, batch_id: int, events: list[dict], stats: list[dict],
                       windows: list[dict], published: int) -> None:
        """After a stateful micro-batch: the incident events it published, its key groups'
        stats (state rows, open incidents, counters) and the global windows it judged."""
        with self._lock:
            for s in stats:
                if s["kind"] == "clock":  # the last ingest batch the stateful query has read
                    self.doc["incidents_applied_batch"] = s["applied"]
                else:
                    self._groups[(s["kind"], s["shard"])] = s
            for e in events:
                if e["event"] == "resolved":
                    self._open.pop(e["incident_id"], None)
                    self._resolved = ([e] + [r for r in self._resolved
                                             if r["incident_id"] != e["incident_id"]])[:RECENT_RESOLVED]
                else:
                    self._open[e["incident_id"]] = e
            for w in windows:
                self._windows[int(w["window_start"])] = {
                    **w, "window_start": _iso(w["window_start"]), "window_end": _iso(w["window_end"])}
            for start in sorted(self._windows)[:-RECENT_GLOBAL]:
                del self._windows[start]
            groups = list(self._groups.values())
            opened = sorted(self._open.values(), key=lambda e: e["first_window_start"])[-MAX_OPEN_LISTED:]
            self.doc.update({
                "incidents_batch_id": batch_id,
                "alerts_published_total": int(self.doc["alerts_published_total"] or 0) + published,
                "alerts_last_batch": published,
                "incidents_open": {k: sum(g["open"] for g in groups if g["kind"] == k) for k in
                                   ("global", "ip", "url")},
                "incident_events_total": {t: sum(g[t] for g in groups) for t in ("firing", "escalated", "resolved")},
                "state_rows": sum(g["state_rows"] for g in groups),
                "evaluations_total": sum(g["evaluations"] for g in groups),
                "incidents": [_listed(e, "open") for e in opened] + [_listed(e, "resolved") for e in self._resolved],
                "recent_global_windows": [self._windows[k] for k in sorted(self._windows)],
            })
            self._write()


def _listed(event: dict, state: str) -> dict:
    keys = ("incident_id", "kind", "key", "severity", "first_window_start", "last_window_end",
            "peak_error_rate", "windows_breached", "resolved_at")
    return {"state": state, **{k: event.get(k) for k in keys}}


def read_status(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
