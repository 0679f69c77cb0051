"""Durable local broker: Tansu's ``s3://`` storage on a local SeaweedFS (``weed mini``).

A message and a committed offset survive a restart of the broker (and of the S3 server);
the memory storage, for contrast, forgets both.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from chaussettes import procs
from chaussettes import settings as settings_mod
from chaussettes.broker import broker_argv
from chaussettes.stack import s3
from chaussettes.topics import ensure_topics
from confluent_kafka import Consumer, Producer, TopicPartition

QUIET = {"log_level": 0}


class Durable:
    """weed mini + Tansu on s3://, each restartable, both stopped at the end."""

    def __init__(self, home: Path):
        self.settings = settings_mod.load(env={}, home=home, kafka_timeout_s=10.0)
        self.base = s3.free_base_port()
        self.kafka_port = procs.free_port()
        self.weed = self.broker = None
        self.logs = home / "logs"
        self.restarts = 0

    @property
    def conf(self) -> dict:
        return {"bootstrap.servers": f"127.0.0.1:{self.kafka_port}", **QUIET}

    def start_s3(self) -> None:
        self.weed = s3.start_server(self.settings, self.base, self.logs / f"weed-{self.restarts}.log")

    def start_broker(self) -> None:
        env = {**os.environ, **s3.broker_env(self.settings, self.base)}
        self.broker = procs.start(broker_argv(self.kafka_port, storage=s3.broker_storage()),
                                  self.logs / f"broker-{self.restarts}.log", env=env)
        assert procs.wait_until(lambda: procs.port_open(self.kafka_port), 20)

    def stop(self) -> None:
        for proc in (self.broker, self.weed):
            if proc is not None:
                procs.stop_group(proc.pid, 5)
        self.broker = self.weed = None
        self.restarts += 1


@pytest.fixture
def durable(tmp_path):
    d = Durable(tmp_path / "home")
    d.start_s3()
    d.start_broker()
    yield d
    d.stop()


def _poll_values(consumer: Consumer, want: int, timeout: float = 20.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
    return got


def test_message_and_committed_offset_survive_a_restart(durable):
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    settings = durable.settings.replace(bootstrap_servers=durable.conf["bootstrap.servers"])
    ensure_topics(settings, {topic: 1})
    p = Producer({**durable.conf, "linger.ms": 0})
    values = [f"event {i}".encode() for i in range(5)]
    for v in values:
        p.produce(topic, v)
    assert p.flush(20) == 0

    group = f"g-{uuid.uuid4().hex[:6]}"
    c = Consumer({**durable.conf, "group.id": group, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    assert _poll_values(c, 2)[:2] == values[:2]
    c.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    c.close()

    # Stop both the broker and the S3 server, then start them again on the same data.
    durable.stop()
    durable.start_s3()
    durable.start_broker()

    c = Consumer({**durable.conf, "group.id": group, "enable.auto.commit": False})
    try:
        committed = c.committed([TopicPartition(topic, 0)], timeout=15)
        assert committed[0].offset == 2
        c.assign([TopicPartition(topic, 0, committed[0].offset)])
        assert _poll_values(c, 3) == values[2:]
    finally:
        c.close()


def test_the_s3_server_refuses_anonymous_requests(durable):
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"http://127.0.0.1:{durable.base}/{s3.BUCKET}", timeout=5)
    assert exc.value.code == 403


def test_memory_storage_forgets_on_restart(tmp_path):
    """The default (contrast): the same restart loses the topic."""
    from chaussettes.broker import LocalBroker
    from chaussettes.topics import partition_counts

    broker = LocalBroker(run_dir=tmp_path)
    broker.start()
    try:
        s = settings_mod.load(env={}, home=tmp_path, bootstrap_servers=broker.bootstrap_servers,
                              kafka_timeout_s=10.0)
        topic = f"mem-{uuid.uuid4().hex[:8]}"
        ensure_topics(s, {topic: 1})
        broker.stop()
        broker.start()
        assert topic not in partition_counts(s)
    finally:
        broker.stop()


def test_s3_component_is_opt_in_and_uses_settings_ports(tmp_path):
    s = settings_mod.load(env={}, home=tmp_path)
    assert s3.component(s) is None
    on = {"CHAUSSETTES_DURABLE_STORAGE": "true", "CHAUSSETTES_S3_PORT": "18333"}
    s = settings_mod.load(env=on, home=tmp_path)
    comp = s3.component(s)
    assert comp.name == "s3"
    assert [p for p, _ in comp.ports] == [18333, 18334, 18335, 18336, 18337]
    assert "-s3.port=18333" in comp.argv and f"-dir={tmp_path / 's3'}" in comp.argv
    assert comp.env["AWS_SECRET_ACCESS_KEY"] == s3.broker_env(s)["AWS_SECRET_ACCESS_KEY"]
    assert not any(comp.env["AWS_SECRET_ACCESS_KEY"] in a for a in comp.argv)
    assert s3.broker_env(s)["AWS_ENDPOINT"] == "http://127.0.0.1:18333"
