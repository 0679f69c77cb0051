"""The detector status file: written atomically after every micro-batch.

Keys: ``schemas.STATUS_KEYS`` plus ``recent_global_windows`` (the last ~60 global windows,
for the operations page's chart) and a few extras (``source``, ``watermark``,
``events_total``, ``batch_duration_s``). Readers (the Airflow supervisor, the operations
page, ``make status``) never see half a file: temp file + rename.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

from chaussettes import atomicfile, schemas

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class StatusWriter:
    def __init__(self, path: Path, source: str, settings=None, topic: str | None = None):
        self.path = Path(path)
        self.source = source
        self.settings = settings
        self.topic = topic
        self.processor = None
        self._consumer = None
        self.observer = lambda doc: None  # sees the document after each write (chaussettes.metrics)
        self.doc: dict = {k: None for k in schemas.STATUS_KEYS}
        self.doc.update({
            "pid": os.getpid(), "started_at": _now(), "source": source, "end_offsets": {},
            "lag": {}, "total_lag": None, "quarantined_total": 0, "alerts_published_total": 0,
            "alerts_last_batch": 0, "recent_global_windows": [],
        })

    def _write(self) -> None:
        self.doc["updated_at"] = _now()
        try:
            atomicfile.write_json(self.path, self.doc, indent=1, mode=0o600)
        except OSError as exc:  # the status must never stop the stream
            log.warning("cannot write status %s: %s", self.path, exc)
        self.observer(self.doc)

    def starting(self) -> None:
        self.doc["state"] = "running"
        self._write()

    def finished(self, state: str, error: str | None = None) -> None:
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

    def batch_done(self, *, batch_id, input_rows, input_rows_per_s, processed_rows_per_s, state,
                   thresholds, watcher, alerts_last_batch, duration_s) -> None:
        lag, total = self._lag(state.end_offsets)
        self.doc.update({
            "state": "running", "batch_id": batch_id, "input_rows": int(input_rows),
            "input_rows_per_s": round(float(input_rows_per_s), 1),
            "processed_rows_per_s": round(float(processed_rows_per_s), 1),
            "end_offsets": state.end_offsets, "lag": lag, "total_lag": total,
            "thresholds_version": thresholds.version, "thresholds_source": thresholds.source,
            "thresholds_error": watcher.error,
            "quarantined_total": int(state.quarantined_total),
            "alerts_published_total": int(state.alerts_published_total),
            "alerts_last_batch": int(alerts_last_batch), "error": None,
            "watermark": (dt.datetime.fromtimestamp(state.watermark, dt.UTC).isoformat().replace("+00:00", "Z")
                          if state.watermark is not None else None),
            "events_total": int(state.events_total),
            "evaluations_total": int(getattr(state, "evaluations_total", 0)),
            "batch_duration_s": round(float(duration_s), 3),
            "recent_global_windows": [state.recent_global[k] for k in sorted(state.recent_global)][-60:],
        })
        self._write()


def read_status(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
