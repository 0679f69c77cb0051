"""What the operations page reads: the detector status file, the tail of ``alerts``, the
thresholds store. Plain functions returning JSON-ready dicts; no web framework here.

Every reader answers even when its source is missing or down: the result then carries
``ok: False`` (or ``health: "unknown"``) and a one-line ``error`` the page shows as is.
Kafka is only ever asked for the *tail* of the topic (``assign()`` at high watermark − N
per partition, bounded in time), never for the whole topic.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chaussettes import alertmanager, artifacts, procs
from chaussettes.incident_events import SEVERITY_RANK, InvalidRecord, fold_incidents, parse_event, parse_time
from chaussettes.schemas import ALERT_COLUMNS, ALERT_KINDS, INCIDENT_EVENT_COLUMNS, STATUS_KEYS
from chaussettes.supervisor import DEFAULT_STALL_AFTER_S

# Detector health, with the supervisor's stall limit: no micro-batch for STALL_AFTER_S while
# input waits (lag > 0) = stalled; state failed/stopped, or a local pid that is gone = dead.
# A detector with no new input writes no batch: old status + zero lag = running (idle).
STALL_AFTER_S = DEFAULT_STALL_AFTER_S
PID_CHECK_AFTER_S = 30.0

# Kafka reads made on behalf of a web page must answer quickly, whatever kafka_timeout_s says.
MAX_KAFKA_TIMEOUT_S = 2.0
TAIL_PER_PARTITION = 5000  # alerts read per partition: the page's newest-first list + last hour
HOUR_S = 3600.0

# --------------------------------------------------------------------------- time helpers


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def kafka_timeout(settings) -> float:
    return max(0.2, min(float(settings.kafka_timeout_s), MAX_KAFKA_TIMEOUT_S))


# --------------------------------------------------------------------------- detector status


def _pid_alive(pid: Any) -> bool | None:
    """True/False for a pid on this machine; None when there is no valid pid to check."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    return procs.alive(pid)


def classify(doc: dict, now: dt.datetime) -> tuple[str, str]:
    """(health, reason) of a parsed status document: running | stalled | dead."""
    state = doc.get("state")
    updated = parse_time(doc.get("updated_at"))
    age = (now - updated).total_seconds() if updated else None
    if state == "failed":
        return "dead", f"the detector failed: {doc.get('error') or 'no error message'}"
    if state == "stopped":
        return "dead", f"the detector stopped at {doc.get('updated_at')}"
    if age is None:
        return "stalled", "the status file has no valid updated_at"
    # The pid is only meaningful on the detector's machine; a fresh heartbeat outweighs it.
    if age > PID_CHECK_AFTER_S and _pid_alive(doc.get("pid")) is False:
        return "dead", f"process {doc.get('pid')} is gone; last batch {age:.0f}s ago"
    if state not in (None, "running"):
        return "stalled", f"unexpected state {state!r}"
    if age > STALL_AFTER_S:
        lag = doc.get("total_lag")
        if isinstance(lag, (int, float)) and lag == 0:
            return "running", f"idle: no new input for {age:.0f}s, lag 0"
        return "stalled", (f"no micro-batch for {age:.0f}s (stalled after {STALL_AFTER_S:.0f}s) "
                           f"while {lag if lag is not None else 'an unknown number of'} records wait")
    return "running", f"last batch {age:.0f}s ago"


def read_status(settings, now: dt.datetime | None = None) -> dict:
    """The detector's status file, with a health verdict. Never raises."""
    now = now or utcnow()
    path = Path(settings.detector_status_path)
    out: dict[str, Any] = {
        "path": str(path), "read_at": iso(now), "exists": False, "health": "unknown",
        "reason": None, "last_batch_age_s": None, "status": None, "recent_global_windows": [],
    }
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        out["reason"] = f"no detector status file at {path}: the detector has not run here yet"
        return out
    except OSError as exc:
        out["reason"] = f"cannot read {path}: {exc.strerror or exc}"
        return out
    out["exists"] = True
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise TypeError("not a JSON object")
    except (TypeError, ValueError) as exc:
        out["reason"] = f"the status file {path} is not valid JSON ({exc})"
        return out
    updated = parse_time(doc.get("updated_at"))
    out["last_batch_age_s"] = round((now - updated).total_seconds(), 1) if updated else None
    out["health"], out["reason"] = classify(doc, now)
    out["status"] = {k: doc.get(k) for k in STATUS_KEYS}
    out["missing_keys"] = [k for k in STATUS_KEYS if k not in doc]
    windows = doc.get("recent_global_windows") or []
    out["recent_global_windows"] = [w for w in windows if isinstance(w, dict)]
    return out


# --------------------------------------------------------------------------- alerts tail


def _consumer(settings):
    from confluent_kafka import Consumer

    t_ms = int(kafka_timeout(settings) * 1000)
    return Consumer(settings.kafka_client_config(**{
        "group.id": "chaussettes-ops-page",  # never joined (assign only) nor committed
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",  # an offset past the end means the topic was recreated
        "fetch.wait.max.ms": 20,
        "fetch.queue.backoff.ms": 0,
        "socket.timeout.ms": max(t_ms, 1000),
        "socket.connection.setup.timeout.ms": max(t_ms, 1000),
        "log_level": 0,
        "logger": _silent_logger(),
    }))


def _silent_logger():
    import logging

    log = logging.getLogger("chaussettes.ops.kafka")
    log.propagate = False
    log.addHandler(logging.NullHandler())
    return log


def _alert_time(alert: dict) -> dt.datetime | None:
    return parse_time(alert.get("detected_at")) or parse_time(alert.get("_record_time"))


_EPOCH = dt.datetime.min.replace(tzinfo=dt.UTC)


class AlertsTailer:
    """Keeps the newest ``per_partition`` alerts of each partition of one topic.

    The first ``read()`` assigns each partition at high watermark − N and reads to its end;
    later reads fetch only what arrived since (from the next offset), so a page refresh costs
    one metadata round trip plus the new alerts. Thread-safe; bounded by
    ``kafka_timeout(settings)`` per read; never raises. A broker that goes away leaves the
    alerts already read in place, flagged ``stale`` with the error.
    """

    def __init__(self, settings, topic: str | None = None, per_partition: int = TAIL_PER_PARTITION):
        self.settings = settings
        self.topic = topic or settings.topic_alerts
        self.per_partition = per_partition
        self._lock = threading.Lock()
        self._consumer = None
        self._records: dict[int, collections.deque] = {}
        self._next: dict[int, int] = {}
        self._partitions: dict[int, dict] = {}
        self._derived: tuple | None = None  # (records signature, oldest per partition, alerts)

    def close(self) -> None:
        with self._lock:
            self._drop_consumer()

    def _drop_consumer(self) -> None:
        if self._consumer is not None:
            from confluent_kafka import KafkaException

            with contextlib.suppress(KafkaException, RuntimeError):
                self._consumer.close()  # a close on a dead connection must not hide the answer
            self._consumer = None

    def read(self, now: dt.datetime | None = None) -> dict:
        with self._lock:
            return self._read(now or utcnow())

    def _read(self, now: dt.datetime) -> dict:
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        s, topic, timeout = self.settings, self.topic, kafka_timeout(self.settings)
        started = time.monotonic()
        out: dict[str, Any] = {
            "ok": False, "error": None, "unreachable": False, "stale": False, "topic": topic,
            "bootstrap_servers": s.bootstrap_servers, "read_at": iso(now), "partitions": {},
            "alerts": [], "invalid": 0, "truncated": False, "complete_since": None,
            "elapsed_ms": None, "fetched": 0,
        }

        def left() -> float:
            return max(0.05, timeout - (time.monotonic() - started))

        try:
            if self._consumer is None:
                self._consumer = _consumer(s)
            consumer = self._consumer
            try:
                meta = consumer.list_topics(topic, timeout=left())
            except KafkaException:
                raise _Unreachable(f"Kafka at {s.bootstrap_servers} did not answer within {timeout:g}s: "
                                   f"the broker is down or unreachable") from None
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None or not tmeta.partitions:
                self._records.clear()
                self._next.clear()
                self._partitions.clear()
                out["error"] = f"topic {topic!r} does not exist on {s.bootstrap_servers}"
                return self._finish(out, now, started)
            assignment, pending = [], set()
            for p in sorted(tmeta.partitions):
                try:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=left())
                except KafkaException:
                    raise _Unreachable(f"Kafka at {s.bootstrap_servers} did not give the offsets of "
                                       f"{topic}[{p}] within {timeout:g}s") from None
                nxt = self._next.get(p)
                # Start over when this partition is new or was trimmed past what we hold. A
                # recreated topic shows up below as an out-of-range fetch. The reported end
                # is not trusted to skip a partition: Tansu reports it up to one producer
                # batch early, so every partition is read to its end-of-partition event.
                if nxt is None or nxt < low:
                    nxt = max(low, high - self.per_partition)
                    self._records[p] = collections.deque(maxlen=self.per_partition)
                    self._partitions[p] = {"from": nxt}
                    self._next[p] = nxt
                info = self._partitions[p]
                info.update(low=low, high=high)
                assignment.append(TopicPartition(topic, p, nxt))
                pending.add(p)
            if assignment:
                consumer.assign(assignment)
                while pending and time.monotonic() - started < timeout:
                    for msg in consumer.consume(num_messages=10000, timeout=min(0.01, left())):
                        err = msg.error()
                        p = msg.partition()
                        if err is not None:
                            if err.code() == KafkaError._PARTITION_EOF:
                                pending.discard(p)
                            elif err.code() in (KafkaError._AUTO_OFFSET_RESET,
                                                KafkaError.OFFSET_OUT_OF_RANGE) and p in pending:
                                pending.discard(p)  # recreated or truncated: start over next read
                                self._next.pop(p, None)
                            continue
                        if p not in pending or msg.offset() < self._next[p]:
                            continue  # a leftover of an earlier assignment
                        self._next[p] = msg.offset() + 1
                        out["fetched"] += 1
                        alert = self._parse(msg)
                        if alert is None:
                            self._partitions[p]["invalid"] = self._partitions[p].get("invalid", 0) + 1
                            continue
                        records = self._records[p]
                        if len(records) == records.maxlen:
                            self._partitions[p]["dropped"] = True
                        records.append(alert)
                consumer.unassign()
                if pending:
                    out["truncated"] = True
                    out["error"] = (f"read of {topic} stopped after {timeout:g}s before the end of "
                                    f"partition(s) {sorted(pending)}: the list may miss the newest alerts")
        except _Unreachable as exc:
            self._drop_consumer()
            out.update(unreachable=True, error=str(exc), stale=any(self._records.values()))
        except KafkaException as exc:
            self._drop_consumer()
            out["error"] = f"Kafka error on {topic}: {exc}"
        return self._finish(out, now, started)

    @staticmethod
    def _parse(msg) -> dict | None:
        try:
            alert = json.loads(msg.value())
            if not isinstance(alert, dict):
                return None
        except (TypeError, ValueError):
            return None
        _, ts_ms = msg.timestamp()
        if ts_ms is not None and ts_ms > 0:
            alert["_record_time"] = ts_ms / 1000.0
        alert["_partition"], alert["_offset"] = msg.partition(), msg.offset()
        alert["_time"] = _alert_time(alert)
        return alert

    def _finish(self, out: dict, now: dt.datetime, started: float) -> dict:
        # Coverage: a partition whose kept alerts start at its low watermark covers all its
        # history; otherwise it covers from its oldest alert kept.
        # The derived lists are recomputed only when the records changed since the last read.
        signature = tuple((p, len(r), r[-1]["_offset"] if r else None) for p, r in sorted(self._records.items()))
        if self._derived is None or self._derived[0] != signature:
            oldest_by_p = {p: min((a["_time"] for a in r if a["_time"] is not None), default=None)
                           for p, r in self._records.items()}
            newest: dict[str, dict] = {}
            for records in self._records.values():
                for alert in records:  # in offset order: a later copy of an id replaces an earlier one
                    newest[str(alert.get("alert_id") or f"{alert['_partition']}:{alert['_offset']}")] = alert
            alerts = sorted(newest.values(), reverse=True,
                            key=lambda a: (a["_time"] or _EPOCH, str(a.get("window_end") or ""), a["_offset"]))
            self._derived = (signature, oldest_by_p, alerts)
        _, oldest_by_p, alerts = self._derived

        covered = []
        for p, info in sorted(self._partitions.items()):
            records = self._records.get(p) or ()
            first = records[0]["_offset"] if records else self._next.get(p, info["from"])
            oldest = oldest_by_p.get(p)
            if info["from"] > info.get("low", 0) or info.get("dropped"):  # not the whole history
                covered.append(oldest or now)
            out["partitions"][p] = {"low": info.get("low"), "high": info.get("high"), "from": first,
                                    "next": self._next.get(p), "kept": len(records),
                                    "invalid": info.get("invalid", 0), "oldest": iso(oldest)}
            out["invalid"] += info.get("invalid", 0)
        out["complete_since"] = iso(max(covered)) if covered else None
        out["alerts"] = list(alerts)
        out["ok"] = out["error"] is None
        out["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
        return out


class _Unreachable(Exception):
    pass


def read_alerts_tail(settings, topic: str | None = None, per_partition: int = TAIL_PER_PARTITION,
                     now: dt.datetime | None = None) -> dict:
    """One read of the newest alerts (at most ``per_partition`` per partition), newest first,
    one per alert_id; see :class:`AlertsTailer` (which the page keeps to read incrementally).

    ``complete_since`` is the time from which every alert was read (None: the whole topic
    was read), so callers can tell whether a count over the last hour is exact.
    """
    tailer = AlertsTailer(settings, topic=topic, per_partition=per_partition)
    try:
        return tailer.read(now)
    finally:
        tailer.close()


def public_alert(alert: dict) -> dict:
    """A record of ``alerts`` as the API shows it: an incident event's fields
    (schemas.INCIDENT_EVENT_COLUMNS, ``resolved_at`` on a resolution) or an older per-window
    alert's (ALERT_COLUMNS), then where it was read."""
    names = (INCIDENT_EVENT_COLUMNS + (("resolved_at",) if alert.get("event") == "resolved" else ())
             if "event" in alert else ALERT_COLUMNS)
    shown = {k: alert.get(k) for k in names}
    shown["partition"], shown["offset"] = alert.get("_partition"), alert.get("_offset")
    return shown


def alerts_view(tail: dict, kind: str | None = None, limit: int = 100,
                now: dt.datetime | None = None) -> dict:
    """The alerts section: newest first (optionally one kind) + counts per kind, last hour."""
    now = now or utcnow()
    hour_ago = now - dt.timedelta(seconds=HOUR_S)
    counts = {k: 0 for k in ALERT_KINDS}
    for alert in tail["alerts"]:
        t = alert.get("_time")
        if t is not None and t >= hour_ago:
            k = alert.get("kind")
            counts[k] = counts.get(k, 0) + 1
    since = parse_time(tail.get("complete_since"))
    selected = [a for a in tail["alerts"] if kind in (None, "", "all") or a.get("kind") == kind]
    return {
        "ok": tail["ok"], "error": tail["error"], "unreachable": tail["unreachable"],
        "stale": tail["stale"],
        "topic": tail["topic"], "bootstrap_servers": tail["bootstrap_servers"], "read_at": tail["read_at"],
        "kind": kind or "all", "kinds": list(ALERT_KINDS),
        "counts_last_hour": counts,
        # Exact when everything since an hour ago was read; else a lower bound.
        "counts_exact": since is None or since <= hour_ago,
        "alerts_in_tail": len(tail["alerts"]), "matching": len(selected),
        "alerts": [public_alert(a) for a in selected[: max(0, limit)]],
        "partitions": tail["partitions"], "invalid": tail["invalid"], "elapsed_ms": tail["elapsed_ms"],
    }


def top_breaching(alerts: Iterable[dict], kind: str, n: int = 10) -> list[dict]:
    """Keys of one kind ranked by breaching windows in the tail, then worst error rate."""
    by_key: dict[str, dict] = {}
    for a in alerts:
        if a.get("kind") != kind:
            continue
        key = str(a.get("key"))
        entry = by_key.setdefault(key, {"key": key, "windows": 0, "max_error_rate": None,
                                        "threshold": a.get("threshold"), "worst_severity": None,
                                        "last_window_end": None})
        entry["windows"] += 1
        rate = a.get("error_rate")
        if isinstance(rate, (int, float)) and (entry["max_error_rate"] is None or rate > entry["max_error_rate"]):
            entry["max_error_rate"], entry["threshold"] = rate, a.get("threshold")
        sev = a.get("severity")
        if SEVERITY_RANK.get(sev, 0) > SEVERITY_RANK.get(entry["worst_severity"], 0):
            entry["worst_severity"] = sev
        end = a.get("window_end")
        if end and (entry["last_window_end"] is None or str(end) > entry["last_window_end"]):
            entry["last_window_end"] = str(end)
    ranked = sorted(by_key.values(), key=lambda e: (-e["windows"], -(e["max_error_rate"] or 0), e["key"]))
    return ranked[:n]


def rates_view(status: dict, tail: dict) -> dict:
    """The chart's series (global windows from the status file) and the top IPs and URLs."""
    series = []
    for w in status.get("recent_global_windows") or []:
        series.append({k: w.get(k) for k in ("window_start", "window_end", "requests", "errors",
                                              "error_rate", "threshold")})
    series.sort(key=lambda w: str(w.get("window_start") or ""))
    return {
        "series": series,
        "series_source": status["path"],
        "series_error": None if series else (
            status["reason"] if not status["exists"] else "the status file has no recent_global_windows yet"),
        "top_ips": top_breaching(tail["alerts"], "ip"),
        "top_urls": top_breaching(tail["alerts"], "url"),
        "alerts_ok": tail["ok"], "alerts_error": tail["error"],
        "read_at": tail["read_at"],
    }


# --------------------------------------------------------------------------- incidents

RECENT_RESOLVED_S = 24 * 3600.0  # resolved incidents shown: those resolved within this


def read_silences(settings) -> dict:
    """The active silences of Alertmanager (``settings.alertmanager_url``). Never raises: an
    Alertmanager that is down gives ``ok: False`` and a one-line ``error``."""
    out: dict[str, Any] = {"ok": False, "error": None, "url": settings.alertmanager_url,
                           "ui_url": settings.alertmanager_ui_url, "silences": []}
    try:
        silences = alertmanager.get_silences(settings.alertmanager_url, timeout=MAX_KAFKA_TIMEOUT_S)
    except alertmanager.AlertmanagerError as exc:
        out["error"] = f"{exc}: the incidents are shown without their silences"
        return out
    out["ok"] = True
    out["silences"] = [s for s in silences if isinstance(s, dict) and (s.get("status") or {}).get("state") == "active"]
    return out


def incident_labels(settings, incident: dict) -> dict[str, str]:
    """The labels of an incident's alert in Alertmanager (what the relay posts)."""
    return {"alertname": alertmanager.ERROR_RATE_ALERT, "kind": incident["kind"], "key": incident["key"],
            "severity": incident["severity"], "site": settings.alert_site}


def incidents_view(settings, tail: dict, silences: dict, now: dt.datetime | None = None,
                   limit: int = 100) -> dict:
    """Incidents from the events in the alerts tail: open ones first (most severe, then oldest),
    then those resolved in the last day (newest first); each marked silenced or not."""
    now = now or utcnow()
    events, invalid = [], 0
    for record in tail["alerts"]:
        event = record.get("_event")  # the tailer keeps its records: each is parsed once
        if event is None:
            try:
                event = parse_event(record)
            except InvalidRecord:
                event = False
            record["_event"] = event
        if event:
            events.append(event)
        else:
            invalid += 1
    recent = now - dt.timedelta(seconds=RECENT_RESOLVED_S)
    incidents = [i for i in fold_incidents(events, now) if i["state"] == "open" or i["resolved_at"] >= recent]
    shown = []
    for inc in incidents[: max(0, limit)]:
        labels = incident_labels(settings, inc)
        by = [{"id": s.get("id"), "comment": s.get("comment"), "created_by": s.get("createdBy"),
               "ends_at": s.get("endsAt")} for s in silences["silences"] if alertmanager.silence_matches(s, labels)]
        shown.append({**inc, "started_at": iso(inc["started_at"]), "last_window_end": iso(inc["last_window_end"]),
                      "resolved_at": iso(inc["resolved_at"]), "detected_at": iso(inc["detected_at"]),
                      "labels": labels, "silenced": bool(by), "silenced_by": by,
                      "silence_url": alertmanager.silence_url(settings.alertmanager_ui_url,
                                                              {k: labels[k] for k in ("alertname", "kind", "key")})})
    return {
        "ok": tail["ok"], "error": tail["error"], "unreachable": tail["unreachable"], "stale": tail["stale"],
        "topic": tail["topic"], "read_at": iso(now),
        "open": sum(1 for i in incidents if i["state"] == "open"),
        "resolved_recently": sum(1 for i in incidents if i["state"] == "resolved"),
        "complete_since": tail.get("complete_since"), "invalid": invalid + tail.get("invalid", 0),
        "alertmanager": {k: silences[k] for k in ("ok", "error", "url", "ui_url")},
        "silences_active": len(silences["silences"]),
        "incidents": shown,
    }


# --------------------------------------------------------------------------- thresholds versions


def _load_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path}: no such file"
    except (OSError, ValueError) as exc:
        return None, f"{path}: unreadable ({exc})"
    if not isinstance(doc, dict):
        return None, f"{path}: not a JSON object"
    return doc, None


def _version_row(number: int, doc: dict | None, meta: dict | None, *, current: bool, path: Path,
                 ok: bool = True, error: str | None = None) -> dict:
    doc, meta = doc or {}, meta or {}
    calibration = doc.get("calibration") or meta.get("calibration") or {}
    validation = doc.get("validation") or meta.get("validation") or {}
    return {
        "version": number, "current": current, "ok": ok, "error": error, "path": str(path),
        "created_at": doc.get("created_at") or meta.get("created_at"),
        "published_at": meta.get("published_at"),
        "source": calibration.get("source") if isinstance(calibration, dict) else None,
        "calibration": calibration, "validation": validation,
        "global_error_rate": (doc.get("global") or {}).get("error_rate"),
        "ip_default": (doc.get("ip") or {}).get("default"),
        "url_default": (doc.get("url") or {}).get("default"),
    }


def read_versions(settings, in_force: Any = None) -> dict:
    """Every stored thresholds version (newest first), which is current, what is in force."""
    store = artifacts.ThresholdsStore.from_settings(settings)
    out: dict[str, Any] = {"store": str(store.root), "current_version": None, "pinned_path": None,
                           "current_path": None, "in_force": in_force, "versions": [], "error": None,
                           "refused": None}
    try:
        out["current_version"] = store.current_version()
        resolved = artifacts.resolve_thresholds(settings)
        out["current_path"] = str(resolved.path)
        out["refused"] = resolved.refused  # CURRENT's version is corrupt: what is used instead
        if getattr(settings, "thresholds_path", None):
            out["pinned_path"] = str(settings.thresholds_path)
        for item in reversed(store.list()):
            doc, err = _load_json(item.thresholds_path)
            out["versions"].append(_version_row(item.version, doc, item.meta, current=item.current,
                                                path=item.thresholds_path, ok=item.ok and doc is not None,
                                                error=item.error or err))
    except (OSError, artifacts.ArtifactError) as exc:
        out["error"] = f"cannot read the thresholds store {store.root}: {exc}"
    default_doc, err = _load_json(settings.default_thresholds_path)
    row = _version_row(0, default_doc, None, current=out["current_version"] is None,
                       path=settings.default_thresholds_path, ok=default_doc is not None, error=err)
    row["source"] = row["source"] or "package defaults"
    out["versions"].append(row)
    if not out["versions"][:-1] and out["error"] is None:
        out["note"] = (f"no calibrated version in {store.root} yet: the detector uses the "
                       f"package defaults (version 0)")
    return out


def thresholds_doc(settings, version: int) -> tuple[dict | None, str | None]:
    """A version's seuils.json (0 = the package defaults)."""
    if version == 0:
        return _load_json(settings.default_thresholds_path)
    path = artifacts.store_root(settings) / f"v{version}" / artifacts.THRESHOLDS_FILE
    doc, err = _load_json(path)
    if doc is None and not path.exists():
        return None, f"version {version} does not exist in {artifacts.store_root(settings)}"
    return doc, err


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return flat
    return {prefix: value}


def diff_docs(a: dict, b: dict) -> list[dict]:
    """Leaf-by-leaf differences between two JSON documents (dotted paths), sorted by path."""
    fa, fb = _flatten(a), _flatten(b)
    changes = []
    for path in sorted(set(fa) | set(fb)):
        if path not in fb:
            changes.append({"path": path, "change": "removed", "a": fa[path], "b": None})
        elif path not in fa:
            changes.append({"path": path, "change": "added", "a": None, "b": fb[path]})
        elif fa[path] != fb[path]:
            changes.append({"path": path, "change": "changed", "a": fa[path], "b": fb[path]})
    return changes
