"""Prometheus metrics (chaussettes.metrics): status documents mapped to metrics, served over
HTTP and read back with prometheus_client's own parser; the generator's endpoint while it runs.
(A real Prometheus scrapes the detector's endpoint in test_alerting_e2e.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from chaussettes import procs
from chaussettes.metrics import DetectorMetrics, GeneratorMetrics, serve
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]

STATUS = {
    "state": "running", "batch_id": 41, "input_rows": 5000, "input_rows_per_s": 480.5,
    "processed_rows_per_s": 9100.0, "batch_duration_s": 1.7,
    "lag": {"http-logs": {"0": 12, "1": 0}}, "total_lag": 12, "events_total": 200000,
    "quarantined_total": 7, "late_total": 3, "thresholds_version": 4, "thresholds_error": None,
    "incidents_open": {"global": 0, "ip": 2, "url": 1},
    "incident_events_total": {"firing": 9, "escalated": 2, "resolved": 6},
    "state_rows": 1234, "archive_error": None, "updated_at": "2026-12-01T10:00:05.250000Z",
}


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_detector_status_becomes_metrics_over_http():
    metrics = DetectorMetrics()
    port = procs.free_port()
    stop = serve(metrics.registry, port, what="test")
    try:
        metrics.observe(STATUS)
        metrics.observe({**STATUS, "batch_id": 42, "batch_duration_s": 2.5, "thresholds_error": "bad schema"})
        got = scrape(port)
    finally:
        stop()
    assert got[("chaussettes_detector_running", ())] == 1
    assert got[("chaussettes_detector_batch_id", ())] == 42
    assert got[("chaussettes_detector_input_rows_per_second", ())] == 480.5
    assert got[("chaussettes_detector_processed_rows_per_second", ())] == 9100.0
    assert got[("chaussettes_detector_lag_records", (("partition", "0"), ("topic", "http-logs")))] == 12
    assert got[("chaussettes_detector_lag_records_sum", ())] == 12
    assert got[("chaussettes_detector_events_total", ())] == 200000
    assert got[("chaussettes_detector_quarantined_total", ())] == 7
    assert got[("chaussettes_detector_late_total", ())] == 3
    assert got[("chaussettes_detector_incidents_open", (("kind", "ip"),))] == 2
    assert got[("chaussettes_detector_incident_events_total", (("event", "resolved"),))] == 6
    assert got[("chaussettes_detector_state_rows", ())] == 1234
    assert got[("chaussettes_detector_thresholds_version", ())] == 4
    assert got[("chaussettes_detector_thresholds_rejected", ())] == 1
    assert got[("chaussettes_detector_archive_failing", ())] == 0
    assert got[("chaussettes_detector_last_batch_timestamp_seconds", ())] == 1796119205.25
    # One observation per micro-batch in the histogram.
    assert got[("chaussettes_detector_batch_duration_seconds_count", ())] == 2
    assert got[("chaussettes_detector_batch_duration_seconds_sum", ())] == 4.2


def test_missing_or_odd_keys_are_left_out_not_fatal():
    metrics = DetectorMetrics()
    metrics.observe({"state": "failed", "lag": "n/a", "incidents_open": None, "events_total": "many"})
    names = {s.name for family in metrics.registry.collect() for s in family.samples}
    assert "chaussettes_detector_running" in names
    assert not names & {"chaussettes_detector_events_total", "chaussettes_detector_lag_records",
                        "chaussettes_detector_batch_id", "chaussettes_detector_last_batch_timestamp_seconds"}
    running = [s.value for f in metrics.registry.collect() for s in f.samples if s.name == "chaussettes_detector_running"]
    assert running == [0]
    metrics.observe(None)  # never raises into the detector


def test_a_busy_port_is_a_warning_not_a_failure(caplog):
    metrics = GeneratorMetrics()
    port = procs.free_port()
    stop = serve(metrics.registry, port)
    try:
        assert serve(GeneratorMetrics().registry, port, what="second") is None
        assert "second: cannot serve metrics" in caplog.text
    finally:
        stop()
    assert serve(metrics.registry, 0) is None  # 0: no endpoint


def test_generator_serves_its_metrics_while_it_runs(tmp_path):
    port = procs.free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "generate_logs.py"), "--sink", "file",
                             "--output", str(tmp_path / "out.log"), "--rate", "200", "--duration", "30",
                             "--metrics-port", str(port), "--quiet"],
                            env={**os.environ}, stderr=subprocess.PIPE, text=True)
    try:
        assert procs.wait_until(lambda: procs.port_open(port), 20)
        assert procs.wait_until(lambda: scrape(port).get(("chaussettes_generator_lines_total", ()), 0) >= 400, 20)
        got = scrape(port)
        assert got[("chaussettes_generator_running", ())] == 1
        assert got[("chaussettes_generator_delivery_errors_total", ())] == 0
        assert 100 <= got[("chaussettes_generator_lines_per_second", ())] <= 300
        assert got[("chaussettes_generator_target_rate", ())] == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
