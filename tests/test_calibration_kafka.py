"""Calibration from Kafka (real Tansu broker, the project's Spark data source) with a time
bound: log lines produced to a fresh topic, read back by spark-submit, parsed in Spark."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from chaussettes import thresholds as th
from test_calibration import T0, _log_lines, make_history

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))
import calibrate_thresholds as job


def test_calibrate_from_kafka_with_a_time_bound(spark, settings, new_topic, tmp_path, capsys):
    from confluent_kafka import Producer

    topic = new_topic(partitions=2)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    # whole minutes: the history lands on the same 10 s buckets in every run (deterministic
    # windows; an unaligned shift made the small out-of-sample rate vary from run to run)
    frame = make_history(seed=5, minutes=10, rate_scale=0.3)
    # live-looking history: the last 10 minutes
    frame["event_time"] = frame["event_time"] + pd.Timedelta(now - timedelta(minutes=10) - T0)
    producer = Producer(settings.kafka_client_config(**{"linger.ms": 20}))
    old_ms = int((now - timedelta(hours=1)).timestamp() * 1000)
    for _ in range(50):  # records from before --start: must not be read
        producer.produce(topic, b"an hour ago: not a log line", timestamp=old_ms)
    for line in [*_log_lines(frame), "garbage in the middle"]:
        producer.produce(topic, line.encode())
    producer.flush(30)
    out = tmp_path / "seuils.json"
    start, end = now - timedelta(minutes=11), now + timedelta(minutes=2)
    argv = ["--source", "kafka", "--input", topic, "--bootstrap-servers", settings.bootstrap_servers,
            "--start", start.isoformat(), "--end", end.isoformat(), "--output", str(out),
            "--min-requests", "global=20,ip=5,url=5", "--min-windows", "20",
            # 10 minutes of history: this test is about reading Kafka, not about the budget
            "--budget", "5000"]
    # in process on the shared session (the files test runs spark-submit itself)
    assert job.main(argv, spark=spark) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    doc = th.load(out).doc
    assert doc["calibration"]["rows"] == len(frame)
    assert doc["calibration"]["source"]["unparseable"] == 1  # the early records were not read
    assert doc["calibration"]["source"]["input"] == topic
    assert "1 unparseable lines skipped" in printed
