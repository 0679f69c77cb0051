"""The operations page's readers: status file, alerts tail (real broker), thresholds versions."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from chaussettes import artifacts, procs
from chaussettes.broker import LocalBroker
from chaussettes.ops import readers, samples
from chaussettes.schemas import ALERT_COLUMNS, STATUS_KEYS
from chaussettes.topics import ensure_topics

UTC = dt.UTC


# --------------------------------------------------------------------------- status file


def test_missing_status_file_says_so(settings):
    out = readers.read_status(settings)
    assert out["exists"] is False and out["health"] == "unknown"
    assert str(settings.detector_status_path) in out["reason"]
    assert "has not run" in out["reason"]


def test_running_status_is_running_with_its_facts(settings):
    now = dt.datetime.now(UTC)
    samples.write_status(settings, samples.status_doc(updated_at=now - dt.timedelta(seconds=5)))
    out = readers.read_status(settings, now=now)
    assert out["health"] == "running", out["reason"]
    assert set(out["status"]) == set(STATUS_KEYS) and out["missing_keys"] == []
    assert out["last_batch_age_s"] == pytest.approx(5, abs=1)
    assert out["status"]["lag"] == {"http-logs": {"0": 12, "1": 0}}
    assert len(out["recent_global_windows"]) == 60


@pytest.mark.parametrize(
    ("changes", "age_s", "health", "words"),
    [
        ({}, readers.STALL_AFTER_S + 60, "stalled", "no micro-batch"),
        ({"total_lag": 0}, readers.STALL_AFTER_S + 60, "running", "idle"),
        ({"state": "failed", "error": "OutOfMemoryError in batch 12"}, 3, "dead", "OutOfMemoryError"),
        ({"state": "stopped"}, 3, "dead", "stopped"),
        ({"pid": 2**22 + 12345}, 60, "dead", "is gone"),  # beyond pid_max: never a live pid
        ({"pid": 2**22 + 12345}, 5, "running", "ago"),  # a fresh heartbeat outweighs the pid
        ({"updated_at": "yesterday-ish"}, 3, "stalled", "no valid updated_at"),
    ],
)
def test_health_verdicts(settings, changes, age_s, health, words):
    now = dt.datetime.now(UTC)
    doc = samples.status_doc(updated_at=now - dt.timedelta(seconds=age_s))
    doc.update(changes)
    samples.write_status(settings, doc)
    out = readers.read_status(settings, now=now)
    assert (out["health"], words in out["reason"]) == (health, True), out["reason"]


def test_unparseable_status_file_is_reported(settings):
    path = settings.detector_status_path
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    out = readers.read_status(settings)
    assert out["exists"] and out["health"] == "unknown" and "not valid JSON" in out["reason"]


# --------------------------------------------------------------------------- thresholds versions


def _candidate(settings, rate: float, source: str) -> dict:
    doc = json.loads(settings.default_thresholds_path.read_text())
    doc["global"]["error_rate"] = rate
    doc["ip"]["overrides"] = {"10.0.0.7": 0.9}
    doc["created_at"] = "2026-11-22T03:00:00Z"
    doc["calibration"] = {"source": source, "percentile": 99.5, "rows": 120000}
    doc["validation"] = {"alert_rate": 0.004, "target": 0.005, "alerts": 12, "evaluations": 3000}
    return doc


def test_versions_list_current_and_defaults(settings):
    out = readers.read_versions(settings)
    assert [v["version"] for v in out["versions"]] == [0]
    assert out["versions"][0]["current"] and out["versions"][0]["source"] == "defaults"
    assert "no calibrated version" in out["note"]

    store = artifacts.ThresholdsStore.from_settings(settings)
    store.publish(_candidate(settings, 0.25, "archive"))
    store.publish(_candidate(settings, 0.3, "kafka"))
    store.pin(1)
    out = readers.read_versions(settings, in_force=2)
    assert [v["version"] for v in out["versions"]] == [2, 1, 0]
    by_v = {v["version"]: v for v in out["versions"]}
    assert [v for v, row in by_v.items() if row["current"]] == [1]
    assert by_v[2]["source"] == "kafka" and by_v[2]["global_error_rate"] == 0.3
    assert by_v[1]["validation"]["alert_rate"] == 0.004 and by_v[1]["ok"]
    assert by_v[2]["published_at"] and by_v[2]["created_at"] == "2026-11-22T03:00:00Z"
    assert out["current_version"] == 1 and out["in_force"] == 2


def test_versions_say_when_current_is_refused(settings):
    store = artifacts.ThresholdsStore.from_settings(settings)
    store.publish(_candidate(settings, 0.25, "archive"))
    store.publish(_candidate(settings, 0.3, "kafka"))
    assert readers.read_versions(settings)["refused"] is None
    broken = store.root / "v2" / "seuils.json"
    broken.chmod(0o644)
    broken.write_bytes(b"")
    out = readers.read_versions(settings)
    assert out["current_version"] == 2 and out["current_path"].endswith("v1/seuils.json")
    assert out["refused"].startswith("CURRENT refused: version 2: checksum mismatch")
    assert "version 1, the newest good one, is used" in out["refused"]


def test_diff_between_versions(settings):
    store = artifacts.ThresholdsStore.from_settings(settings)
    store.publish(_candidate(settings, 0.25, "archive"))
    doc1, err = readers.thresholds_doc(settings, 1)
    doc0, _ = readers.thresholds_doc(settings, 0)
    assert err is None
    changes = {c["path"]: c for c in readers.diff_docs(doc0, doc1)}
    assert changes["global.error_rate"] == {"path": "global.error_rate", "change": "changed",
                                            "a": 0.2, "b": 0.25}
    assert changes["ip.overrides.10.0.0.7"]["change"] == "added"
    assert changes["version"]["b"] == 1
    assert readers.diff_docs(doc1, doc1) == []
    missing, err = readers.thresholds_doc(settings, 9)
    assert missing is None and "does not exist" in err


# --------------------------------------------------------------------------- alerts tail


def test_tail_reads_newest_first_per_partition_bound(settings, new_topic):
    topic = new_topic(partitions=2)
    s = settings.replace(topic_alerts=topic)
    alerts = samples.mixed_alerts(60)
    # One record per batch, so that every broker reports exact high watermarks (Tansu reports
    # the base offset of the last batch + 1, see ENVIRONMENT.md).
    samples.publish(s, alerts, linger_ms=0)
    samples.publish(s, alerts[-5:], linger_ms=0)  # a replay publishes the same ids again

    tail = readers.read_alerts_tail(s, per_partition=1000)
    assert tail["ok"], tail["error"]
    got = tail["alerts"]
    assert [a["alert_id"] for a in got] == [a["alert_id"] for a in reversed(alerts)]  # deduped, newest first
    assert {k: got[0][k] for k in ALERT_COLUMNS} == alerts[-1]
    assert tail["complete_since"] is None  # read from the low watermarks: the whole topic

    small = readers.read_alerts_tail(s, per_partition=10)
    assert small["ok"]
    assert sum(p["kept"] for p in small["partitions"].values()) == 2 * 10
    assert all(p["from"] > p["low"] for p in small["partitions"].values())
    assert small["complete_since"] is not None


def test_alerts_view_filters_and_counts_last_hour(settings, new_topic):
    s = settings.replace(topic_alerts=new_topic(partitions=1))
    now = dt.datetime.now(UTC)
    recent = samples.mixed_alerts(9, now=now)
    old = [samples.make_alert("ip", "10.9.9.9", now - dt.timedelta(hours=3), errors=150)]
    samples.publish(s, old + recent)
    tail = readers.read_alerts_tail(s)
    view = readers.alerts_view(tail, now=now)
    assert view["counts_last_hour"] == {"global": 3, "ip": 3, "url": 3}
    assert view["counts_exact"] is True and view["alerts_in_tail"] == 10
    ip_view = readers.alerts_view(tail, kind="ip", limit=2, now=now)
    assert [a["kind"] for a in ip_view["alerts"]] == ["ip", "ip"] and ip_view["matching"] == 4
    assert ip_view["alerts"][0]["alert_id"] == [a for a in recent if a["kind"] == "ip"][-1]["alert_id"]

    rates = readers.rates_view(readers.read_status(s), tail)
    assert rates["series"] == [] and "no detector status file" in rates["series_error"]
    assert {r["key"] for r in rates["top_ips"]} == {a["key"] for a in old + recent if a["kind"] == "ip"}
    top = rates["top_urls"][0]
    assert top["windows"] == 1 and top["worst_severity"] in ("warning", "major", "critical")


def test_garbage_on_the_topic_is_counted_not_fatal(settings, new_topic):
    from confluent_kafka import Producer

    s = settings.replace(topic_alerts=new_topic(partitions=1))
    p = Producer(s.kafka_client_config())
    p.produce(s.topic_alerts, value=b"not json")
    p.produce(s.topic_alerts, value=b"[1, 2]")
    p.flush(10)
    samples.publish(s, samples.mixed_alerts(2))
    tail = readers.read_alerts_tail(s)
    assert tail["ok"] and tail["invalid"] == 2 and len(tail["alerts"]) == 2


def test_empty_and_missing_topic(settings, new_topic):
    empty = readers.read_alerts_tail(settings.replace(topic_alerts=new_topic(partitions=1)))
    assert empty["ok"] and empty["alerts"] == [] and empty["error"] is None
    missing = readers.read_alerts_tail(settings.replace(topic_alerts="no-such-topic-ops"))
    assert not missing["ok"] and "does not exist" in missing["error"]


def test_broker_down_answers_within_the_bound(settings):
    down = settings.replace(bootstrap_servers=f"127.0.0.1:{procs.free_port()}")
    started = time.monotonic()
    tail = readers.read_alerts_tail(down)
    elapsed = time.monotonic() - started
    assert not tail["ok"] and tail["unreachable"]
    assert "did not answer within 2s" in tail["error"] and down.bootstrap_servers in tail["error"]
    # Not a performance goal: the reader must not hang on kafka_timeout_s (5 s here) or forever.
    assert elapsed < readers.MAX_KAFKA_TIMEOUT_S + 3



def test_tailer_reads_only_what_is_new(settings, new_topic):
    s = settings.replace(topic_alerts=new_topic(partitions=2))
    first = samples.mixed_alerts(40)
    samples.publish(s, first)
    tailer = readers.AlertsTailer(s, per_partition=15)
    try:
        one = tailer.read()
        assert one["ok"] and one["fetched"] >= 30  # the whole topic: its end is within 15 + a batch
        kept = [p["kept"] for p in one["partitions"].values()]
        assert len(one["alerts"]) == sum(kept) and max(kept) == 15
        assert one["alerts"][0]["alert_id"] == first[-1]["alert_id"]
        again = tailer.read()
        assert again["fetched"] == 0 and [a["alert_id"] for a in again["alerts"]] == \
            [a["alert_id"] for a in one["alerts"]]
        later = samples.mixed_alerts(6, now=dt.datetime.now(UTC) + dt.timedelta(minutes=5))
        samples.publish(s, later)
        three = tailer.read()
        assert three["ok"] and three["fetched"] == 6
        assert [a["alert_id"] for a in three["alerts"][:6]] == [a["alert_id"] for a in reversed(later)]
        assert all(p["kept"] <= 15 for p in three["partitions"].values())
    finally:
        tailer.close()


def test_broker_going_away_keeps_what_was_read(tmp_path, settings):
    own = LocalBroker(run_dir=tmp_path).start()
    try:
        s = settings.replace(bootstrap_servers=own.bootstrap_servers, topic_alerts="alerts")
        ensure_topics(s, {"alerts": 1})
        alerts = samples.mixed_alerts(5)
        samples.publish(s, alerts)
        tailer = readers.AlertsTailer(s)
        assert len(tailer.read()["alerts"]) == 5
    finally:
        own.stop()
    try:
        after = tailer.read()
        assert after["unreachable"] and after["stale"] and not after["ok"]
        assert own.bootstrap_servers in after["error"]
        assert [a["alert_id"] for a in after["alerts"]] == [a["alert_id"] for a in reversed(alerts)]
    finally:
        tailer.close()
