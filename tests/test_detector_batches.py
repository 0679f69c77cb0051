"""The detector's micro-batch function on real Spark and a real broker, batch by batch:
thresholds hot reload (a new version takes effect in the next batch, a corrupt file is
rejected and the previous version stays), once-per-window alerts, restart-safe state."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from chaussettes import logformat, schemas
from chaussettes import thresholds as thresholds_mod
from chaussettes.detector import alerts as alerts_mod
from chaussettes.detector.pipeline import BatchProcessor, DetectorConfig
from chaussettes.detector.publish import read_alerts
from chaussettes.detector.status import StatusWriter

T0 = dt.datetime(2026, 1, 1, 0, 0, 5, tzinfo=dt.UTC)
BAD_IP = "203.0.113.9"


def lines(n_ok_other: int, ip_requests: int, ip_errors: int, start_s: float = 0.0) -> list[bytes]:
    out = []
    for i in range(n_ok_other):
        ev = logformat.Event(T0 + dt.timedelta(seconds=start_s + i * 0.1), f"10.1.0.{i % 50}", "GET",
                             f"/page/{i % 5}", None, "HTTP/1.1", 200, 100, None, "ua")
        out.append(logformat.format_combined(ev).encode())
    for i in range(ip_requests):
        ev = logformat.Event(T0 + dt.timedelta(seconds=start_s + i * 0.1), BAD_IP, "POST", "/login", None,
                             "HTTP/1.1", 401 if i < ip_errors else 200, 10, None, "bot")
        out.append(logformat.format_combined(ev).encode())
    return out


def doc(version: int, ip_default: float) -> dict:
    d = thresholds_mod.load_default().doc
    d.pop("description", None)
    d.update({"version": version, "ip": {"default": ip_default, "overrides": {}},
              "global": {"error_rate": 0.9}, "url": {"default": 0.95, "overrides": {}}})
    return d


def make_processor(spark, settings, new_topic, tmp_path, th_path):
    alerts_topic = new_topic(1)
    cfg = DetectorConfig(thresholds=th_path, alerts_topic=alerts_topic, archive=False)
    status = StatusWriter(settings.detector_status_path, "kafka", settings=settings)
    return BatchProcessor(spark, settings, cfg, tmp_path / "ckpt", status), alerts_topic


_open: list = []


def request_cleanup(proc) -> None:
    _open.append(proc)


@pytest.fixture(autouse=True)
def _close_processors():
    yield
    while _open:
        _open.pop().close()


def batch(spark, values: list[bytes]):
    return spark.createDataFrame([(v,) for v in values], "value binary")


def test_thresholds_hot_reload_and_corrupt_file(spark, settings, new_topic, tmp_path):
    th_path = thresholds_mod.write(doc(1, 0.9), tmp_path / "seuils.json")
    proc, alerts_topic = make_processor(spark, settings, new_topic, tmp_path, th_path)

    proc(batch(spark, lines(100, 30, 18)), 0)  # IP at 60% errors: below 0.9
    request_cleanup(proc)
    assert read_alerts(settings, alerts_topic) == []
    status = json.loads(settings.detector_status_path.read_text())
    assert status["thresholds_version"] == 1 and status["batch_id"] == 0

    thresholds_mod.write(doc(2, 0.5), th_path)  # swapped while running
    proc(batch(spark, lines(0, 2, 2, start_s=3.0)), 1)  # same windows, a few more requests
    alerts = read_alerts(settings, alerts_topic)
    ip_alerts = [a for a in alerts if a["kind"] == "ip"]
    assert ip_alerts and {a["key"] for a in ip_alerts} == {BAD_IP}
    assert all(a["thresholds_version"] == 2 and a["threshold"] == 0.5 for a in ip_alerts)
    assert all(a["requests"] == 32 and a["errors"] == 20 for a in ip_alerts)  # whole window so far
    for a in ip_alerts:
        assert a["alert_id"] == alerts_mod.alert_id("ip", BAD_IP, a["window_start"], a["window_end"])
        assert "top error URLs: /login" in a["explanation"] and "401" in a["explanation"]
    status = json.loads(settings.detector_status_path.read_text())
    assert status["thresholds_version"] == 2 and status["alerts_last_batch"] == len(alerts)

    th_path.write_text("{ this is not json")  # corrupt: rejected, version 2 stays
    proc(batch(spark, lines(0, 5, 5, start_s=4.0)), 2)  # still breaching: no new alert
    status = json.loads(settings.detector_status_path.read_text())
    assert status["thresholds_version"] == 2
    assert status["thresholds_error"] and "not valid JSON" in status["thresholds_error"]
    assert proc.watcher.error == status["thresholds_error"]
    assert len(read_alerts(settings, alerts_topic)) == len(alerts), "a window was alerted twice"

    th_path.write_text(json.dumps({"version": 3}))  # schema-invalid: rejected too
    proc(batch(spark, [b"garbage line"]), 3)
    status = json.loads(settings.detector_status_path.read_text())
    assert status["thresholds_version"] == 2 and status["thresholds_error"].count("schema")
    assert status["quarantined_total"] == 1
    for key in schemas.STATUS_KEYS:
        assert key in status


def test_replayed_batch_after_crash_publishes_nothing_twice(spark, settings, new_topic, tmp_path):
    th_path = thresholds_mod.write(doc(1, 0.5), tmp_path / "seuils.json")
    proc, alerts_topic = make_processor(spark, settings, new_topic, tmp_path, th_path)
    request_cleanup(proc)
    data = lines(100, 30, 25)
    proc(batch(spark, data), 0)
    first = read_alerts(settings, alerts_topic)
    assert first
    # the driver died after publishing batch 0 but before Spark committed it: a new
    # process (new processor, same checkpoint) replays batch 0 with the same rows
    (tmp_path / "ckpt" / "detector" / "state-000000000000.pkl").unlink()
    proc2, _ = make_processor(spark, settings, new_topic, tmp_path, th_path)
    request_cleanup(proc2)
    proc2.alerts_topic = proc2.publisher.topic = alerts_topic
    proc2(batch(spark, data), 0)
    again = read_alerts(settings, alerts_topic)
    assert sorted(a["alert_id"] for a in again) == sorted(a["alert_id"] for a in first)
