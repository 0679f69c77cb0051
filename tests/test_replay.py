"""Replay of real access logs (plain and .gz) into Kafka and files."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from chaussettes import logformat as lf
from chaussettes.generator.replay import Replayer, rewrite_time

REPO = Path(__file__).resolve().parents[1]
JOB = str(REPO / "jobs" / "generate_logs.py")
CORPUS = REPO / "tests" / "corpus" / "tricky_lines.jsonl"


def run_cli(*args: str, timeout: float = 120):
    env = {**os.environ, "CHAUSSETTES_KAFKA_TIMEOUT_S": "5"}
    return subprocess.run([sys.executable, JOB, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list:
    """Every message of ``topic`` (assign from offset 0), waiting for ``expected`` then 1.5 s more."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "fetch.queue.backoff.ms": 0})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list = []
        deadline, settle_until = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            out += [m for m in c.consume(10_000, 0.3) if m.error() is None]
            if len(out) >= expected:
                settle_until = settle_until or time.monotonic() + 1.5
                if time.monotonic() >= settle_until:
                    break
        return out
    finally:
        c.close()


def access_log(n: int = 3000) -> list[str]:
    """A real-looking mixed log: Combined with one line in 10 JSON or CSV, and some garbage."""
    t0 = dt.datetime(2025, 5, 30, 18, 0, 0, tzinfo=dt.UTC)
    lines = []
    for i in range(n):
        ev = lf.Event(t0 + dt.timedelta(milliseconds=250 * i), f"10.0.{i % 7}.{i % 250}", "GET",
                      f"/resource/{i % 40}", "page=2" if i % 5 == 0 else None, "HTTP/1.1",
                      (200, 404, 500, 200)[i % 4], 100 + i, None, "curl/8.5.0")
        fmt = "json" if i % 10 == 3 else "csv" if i % 10 == 7 else "combined"
        lines.append(lf.format_event(ev, fmt))
        if i % 500 == 250:
            lines.append("this is not a log line")
    return lines


def test_replay_plain_and_gz_sends_every_line(broker, new_topic, tmp_path):
    lines = access_log()
    garbage = sum(1 for x in lines if not lf.parse(x))
    assert garbage == 6
    plain = tmp_path / "access.log"
    plain.write_text("\n".join(lines) + "\n")
    gz = tmp_path / "access.log.1.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(lf.CSV_HEADER + "\n" + "\n".join(lines) + "\n")  # a header line is skipped, not sent
    for path in (plain, gz):
        topic = new_topic(4)
        r = run_cli("--replay", str(path), "--speed", "0", "--bootstrap-servers", broker.bootstrap_servers,
                    "--topic", topic)
        assert r.returncode == 0, r.stderr
        assert f"{len(lines):,} lines" in r.stderr and "unparseable 6" in r.stderr
        msgs = consume(broker.bootstrap_servers, topic, len(lines))
        assert sorted(m.value().decode() for m in msgs) == sorted(lines)
        for m in msgs:
            ev = lf.parse(m.value())
            assert (m.key().decode() == ev.ip) if ev else m.key() is None


def test_replay_keeps_inter_arrival_times(tmp_path):
    src = tmp_path / "slow.log"
    src.write_text("\n".join(access_log(9)) + "\n")  # 9 lines, 250 ms apart: 2 s of log
    out = tmp_path / "out.log"
    t0 = time.monotonic()
    r = run_cli("--replay", str(src), "--speed", "4", "--output", str(out), "--quiet")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert out.read_text().splitlines() == src.read_text().splitlines()
    assert elapsed >= 0.5  # 2 s of log at speed 4 cannot be sent sooner


def test_replay_rewrites_timestamps_in_each_format(tmp_path):
    lines = access_log(40)
    src = tmp_path / "a.log"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "b.log"
    before = dt.datetime.now(dt.UTC)
    r = run_cli("--replay", str(src), "--speed", "0", "--rewrite-time", "--output", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    got = out.read_text().splitlines()
    assert len(got) == len(lines)
    for old, new in zip(lines, got):
        a, b = lf.parse(old), lf.parse(new)
        if not a:
            assert new == old
            continue
        assert lf.detect_format(new) == lf.detect_format(old)
        assert abs((b.event_time - before).total_seconds()) < 120
        assert [getattr(a, c) for c in lf.EVENT_COLUMNS[1:]] == [getattr(b, c) for c in lf.EVENT_COLUMNS[1:]]


def test_replay_of_the_corpus_counts_unparseable_lines(tmp_path):
    rows = [json.loads(x) for x in CORPUS.read_text().splitlines()]
    src = tmp_path / "corpus.log"
    raw = [r["line"].encode("utf-8") for r in rows if "\n" not in r["line"].strip() and r["line"].strip()
           and r["reason"] != "csv_header"]
    src.write_bytes(b"\n".join(raw) + b"\n")
    replayer = Replayer(src, speed=0)
    sent = [v for values, _ in replayer.batches(time.monotonic, time.sleep, lambda: False) for v in values]
    assert len(sent) == replayer.lines == len(raw)
    assert replayer.invalid == sum(1 for x in raw if not lf.parse(x))


def test_rewrite_time_function():
    new = dt.datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=dt.UTC)
    for line in ('1.2.3.4 - - [30/May/2025:18:52:47 +0200] "GET / HTTP/1.1" 200 1 "-" "-"',
                 '{"timestamp": "2025-05-30T18:52:47Z", "ip": "1.2.3.4", "method": "GET", "url": "/", "status": 200}',
                 '"2025-05-30T18:52:47Z",1.2.3.4,GET,/,HTTP/1.1,200,1,,'):
        ev = lf.parse(line)
        out = rewrite_time(line.encode(), ev, new)
        got = lf.parse(out)
        assert got.event_time == (new.replace(microsecond=0) if line[0].isdigit() and "[" in line else new)
        assert got.ip == "1.2.3.4" and got.status == 200
