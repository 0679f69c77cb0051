"""The local broker keeps its data in memory: a restart empties it while the detector's
checkpoint remembers where it was. The detector must say so — in its exit code, its log and its
status file — and follow the documented policy, never skip or re-read silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chaussettes import procs
from chaussettes import settings as settings_mod
from chaussettes.broker import LocalBroker
from chaussettes.topics import ensure_topics

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _produce_lines(servers: str, topic: str, count: int, seed: int) -> None:
    gen = subprocess.run([sys.executable, str(REPO / "jobs" / "generate_logs.py"),
                          "--bootstrap-servers", servers, "--topic", topic, "--rate", "0",
                          "--count", str(count), "--seed", str(seed), "--quiet"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert gen.returncode == 0, gen.stderr


def _detect(servers: str, home: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(REPO / "jobs" / "stream_detector.py"), "--master", "local[2]",
            "--source", "kafka", "--bootstrap-servers", servers, "--topic", "logs",
            "--alerts-topic", "alerts", "--trigger", "available-now", "--no-archive",
            "--checkpoint", str(home / "ckpt"), "--home", str(home), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=420, check=False,
                          env={**os.environ, "PYSPARK_PYTHON": sys.executable})


def test_a_checkpoint_beyond_an_emptied_topic_is_reported_then_resumed_on_request(tmp_path):
    port = procs.free_port()
    home = tmp_path / "home"
    broker = LocalBroker(port=port, run_dir=tmp_path).start()
    servers = broker.bootstrap_servers
    conf = settings_mod.load(env={}, bootstrap_servers=servers)
    try:
        ensure_topics(conf, {"logs": 2, "alerts": 1})
        _produce_lines(servers, "logs", 4000, seed=1)
        first = _detect(servers, home)
        assert first.returncode == 0, first.stderr[-3000:]
        status = json.loads((home / "run" / "detector-status.json").read_text())
        assert sum(status["end_offsets"]["logs"].values()) == 4000

        broker.stop()
        broker = LocalBroker(port=port, run_dir=tmp_path).start()  # in memory: empty again
        ensure_topics(conf, {"logs": 2, "alerts": 1})
        _produce_lines(servers, "logs", 300, seed=2)

        stopped = _detect(servers, home)
        assert stopped.returncode == 1
        assert "beyond the partition's end" in stopped.stderr
        status = json.loads((home / "run" / "detector-status.json").read_text())
        assert status["state"] == "failed"
        assert "emptied or recreated" in status["error"]

        resumed = _detect(servers, home, "--fail-on-data-loss", "false")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        status = json.loads((home / "run" / "detector-status.json").read_text())
        assert status["state"] != "failed"
        assert sum(status["end_offsets"]["logs"].values()) == 300  # the new data, read once
    finally:
        broker.stop()
