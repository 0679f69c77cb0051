"""The ``kafka`` Python data source against a real Tansu broker and a real local[2] Spark."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from chaussettes import spark_kafka
from chaussettes.spark_kafka import options as opts_mod
from chaussettes.spark_kafka.reader import _rate_limit
from confluent_kafka import Consumer, Producer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
BASE_TS = 1_700_000_000_000


@pytest.fixture(scope="module")
def kspark(spark):
    spark_kafka.register(spark)
    return spark


def produce(servers: str, topic: str, n: int, *, start: int = 0, partitions: int = 4) -> None:
    """Keyed records k<i> -> partition i % partitions, timestamp BASE_TS + i*1000.

    One record per producer batch, so the local broker's high watermark is exact.
    """
    p = Producer({"bootstrap.servers": servers, "linger.ms": 0, "batch.num.messages": 1})
    for i in range(start, start + n):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % partitions,
                  timestamp=BASE_TS + i * 1000)
        p.poll(0)
    assert p.flush(30) == 0


def consume_all(servers: str, topic: str, partitions: int, expected: int, settle_s: float = 2.0) -> list:
    """Every record of the topic (read_committed), waiting until `expected` arrived then settling."""
    c = Consumer({"bootstrap.servers": servers, "group.id": "verify", "enable.auto.commit": False,
                  "isolation.level": "read_committed", "fetch.queue.backoff.ms": 0})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, deadline, quiet_until = [], time.monotonic() + 60, None
    try:
        while time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.3):
                if m.error() is None:
                    out.append((m.key(), m.value()))
            if len(out) >= expected:
                quiet_until = quiet_until or time.monotonic() + settle_s
                if time.monotonic() > quiet_until:
                    break
    finally:
        c.close()
    return out


def read_opts(servers: str, topic: str, **extra) -> dict:
    return {"kafka.bootstrap.servers": servers, "subscribe": topic, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- options (pure)
def test_options_map_lower_cased_names_and_pass_kafka_settings():
    opts, client = opts_mod.normalize(
        {"kafka.bootstrap.servers": "h:1", "maxoffsetspertrigger": "10", "subscribe": "t",
         "kafka.security.protocol": "SSL",
         "kafka.sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule '
                                   'required username="u" password="p";'},
        opts_mod.READ_OPTIONS, "source")
    assert opts["maxOffsetsPerTrigger"] == "10"
    assert client == {"bootstrap.servers": "h:1", "security.protocol": "SSL",
                      "sasl.username": "u", "sasl.password": "p"}


@pytest.mark.parametrize("bad, message", [
    ({"subscribe": "t", "startingoffset": "earliest"}, "unknown kafka source option 'startingoffset'"),
    ({"subscribe": "t", "startingoffsets": '{"t": {"0": 1'}, "not valid JSON"),
    ({"subscribe": "t", "startingoffsets": '{"t": {"x": 1}}'}, "is not a number"),
    ({"subscribe": "t", "startingoffsets": '{"t": {"0": -5}}'}, "not allowed"),
    ({"subscribe": "t", "endingoffsets": "earliest"}, "not allowed"),
    ({"subscribe": "t", "maxoffsetspertrigger": "many"}, "must be an integer"),
    ({"subscribe": "t", "kafka.auto.offset.reset": "earliest"}, "not supported"),
    ({"subscribe": "t", "assign": '{"t":[0]}'}, "exactly one of"),
])
def test_bad_read_options_are_clear_errors(bad, message):
    from chaussettes.spark_kafka.reader import ReadConfig

    with pytest.raises(opts_mod.KafkaOptionError, match=message):
        ReadConfig.parse({"kafka.bootstrap.servers": "h:1", **bad}, streaming=False)


def test_rate_limit_shares_max_offsets_by_lag():
    begin = {("t", 0): 0, ("t", 1): 10, ("t", 2): 5}
    end = {("t", 0): 100, ("t", 1): 20, ("t", 2): 5}
    limited = _rate_limit(begin, end, 55)
    assert sum(limited[tp] - begin[tp] for tp in begin) == 55
    assert all(begin[tp] <= limited[tp] <= end[tp] for tp in begin)
    assert _rate_limit(begin, end, 1000) == end


def test_range_consumer_prefetches_a_share_of_its_range_unless_told():
    from chaussettes.spark_kafka.reader import ReadConfig

    cfg = ReadConfig.parse({"kafka.bootstrap.servers": "h:1", "subscribe": "t"}, streaming=True)
    assert cfg.range_consumer_conf(800_000)["queued.min.messages"] == 100_000  # an eighth
    assert cfg.range_consumer_conf(100_000)["queued.min.messages"] == 40_000  # two consume() calls
    assert cfg.range_consumer_conf(5_000)["queued.min.messages"] == 5_000  # never past the range
    assert cfg.range_consumer_conf(800_000)["max.partition.fetch.bytes"] == 2 * 1024 * 1024
    told = ReadConfig.parse({"kafka.bootstrap.servers": "h:1", "subscribe": "t",
                             "kafka.queued.min.messages": "7", "kafka.max.partition.fetch.bytes": "9"},
                            streaming=True)
    assert str(told.range_consumer_conf(800_000)["queued.min.messages"]) == "7"
    assert str(told.range_consumer_conf(800_000)["max.partition.fetch.bytes"]) == "9"


# ----------------------------------------------------------------------------- streaming reads
def _stream_into_memory(spark, servers, topic, checkpoint, name, **extra):
    """Run an availableNow query from `checkpoint`; its rows become the temp view `name`."""
    df = (spark.readStream.format("kafka")
          .options(**read_opts(servers, topic, startingOffsets="earliest", **extra)).load())
    batches = []
    q = (df.writeStream.foreachBatch(lambda bdf, bid: batches.append(bdf.collect()))
         .option("checkpointLocation", str(checkpoint)).trigger(availableNow=True).start())
    assert q.awaitTermination(120)
    assert q.exception() is None
    rows = [r for b in batches for r in b]
    spark.createDataFrame(rows, df.schema).createOrReplaceTempView(name)
    return q


def test_stream_available_now_then_restart_reads_exactly_the_new_records(kspark, broker, new_topic, tmp_path):
    servers, topic = broker.bootstrap_servers, new_topic(4)
    produce(servers, topic, 200)
    ckpt = tmp_path / "ckpt"
    _stream_into_memory(kspark, servers, topic, ckpt, "first")
    rows = kspark.sql("SELECT CAST(key AS STRING) k, partition, offset, topic, timestampType, "
                      "timestamp FROM first").collect()
    assert len(rows) == 200
    assert sorted(r.k for r in rows) == sorted(f"k{i}" for i in range(200))
    for p in range(4):
        offsets = sorted(r.offset for r in rows if r.partition == p)
        assert offsets == list(range(50)), f"partition {p} offsets not contiguous"
    assert {r.topic for r in rows} == {topic}
    assert {r.timestampType for r in rows} == {0}
    first = min(rows, key=lambda r: int(r.k[1:]))
    assert int(first.timestamp.timestamp() * 1000) == BASE_TS

    produce(servers, topic, 60, start=200)
    _stream_into_memory(kspark, servers, topic, ckpt, "second")
    again = kspark.sql("SELECT CAST(key AS STRING) k FROM second").collect()
    assert sorted(r.k for r in again) == sorted(f"k{i}" for i in range(200, 260))


def test_records_in_a_producer_batch_past_the_reported_end_are_read(kspark, broker, new_topic, tmp_path):
    # A batching producer: the local broker reports its high watermark at the start of the
    # last record batch; the reader must neither miss that batch nor wait for it.
    servers, topic = broker.bootstrap_servers, new_topic(4)
    p = Producer({"bootstrap.servers": servers, "linger.ms": 100, "batch.num.messages": 10000})
    for i in range(400):
        p.produce(topic, key=f"k{i}".encode(), value=b"v", partition=i % 4)
    assert p.flush(30) == 0
    assert kspark.read.format("kafka").options(**read_opts(servers, topic)).load().count() == 400
    _stream_into_memory(kspark, servers, topic, tmp_path / "ckpt", "batched")
    assert kspark.sql("SELECT count(DISTINCT key) FROM batched").first()[0] == 400


def test_a_range_that_ends_with_a_transaction_marker_is_read_without_waiting_for_the_partitions_end(
        broker, new_topic):
    # A transactional producer's commit marker takes an offset but is never delivered: the
    # read ends when the client's position passes the range, not at the end-of-partition
    # event, which a broker sends only once a fetch's wait is out (20 s here: past the poll
    # timeout, so waiting for it fails the read).
    from chaussettes.spark_kafka.reader import ReadConfig, read_range

    servers, topic = broker.bootstrap_servers, new_topic(1)
    p = Producer({"bootstrap.servers": servers, "transactional.id": f"tx-{topic}"})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=0)
    p.commit_transaction(30)
    cfg = ReadConfig.parse(read_opts(servers, topic, **{"kafka.fetch.wait.max.ms": "20000",
                                                        "kafkaConsumer.pollTimeoutMs": "3000"}), streaming=False)
    batches = list(read_range(cfg, topic, 0, 0, 6))  # 5 records, then the marker
    assert [v.as_py() for b in batches for v in b.column("value")] == [f"v{i}".encode() for i in range(5)]


class _CountingConsumer:
    """A consumer that notes the thread of each assignment (one per round of record-time probes)."""

    def __init__(self, consumer):
        self.consumer, self.assigned_by = consumer, []

    def assign(self, partitions):
        import threading

        self.assigned_by.append(threading.current_thread().name)
        return self.consumer.assign(partitions)

    def __getattr__(self, name):
        return getattr(self.consumer, name)


def test_the_next_cut_of_a_backlog_is_probed_while_its_batch_runs(broker, new_topic):
    # A capped batch of a backlog: the reader probes, in the background, the record times the
    # next cut will ask for; that cut then asks the broker nothing, and is what a fresh reader
    # cuts (the prefetch only warms a cache).
    from chaussettes.spark_kafka.reader import KafkaStreamReader, ReadConfig
    from pyspark.sql.streaming.datasource import ReadMaxRows

    servers, topic = broker.bootstrap_servers, new_topic(2)
    produce(servers, topic, 400, partitions=2)
    cfg = ReadConfig.parse(read_opts(servers, topic, startingOffsets="earliest"), streaming=True)
    reader = KafkaStreamReader(cfg)
    try:
        first = reader.latestOffset(reader.initialOffset(), ReadMaxRows(100))
        client = reader.client  # once the prefetch is done
        client._probe = probe = _CountingConsumer(client._probe)
        second = reader.latestOffset(first, ReadMaxRows(100))
        assert "MainThread" not in probe.assigned_by  # (the batch after next is being probed)
        fresh = KafkaStreamReader(cfg)
        try:
            assert fresh.latestOffset(first, ReadMaxRows(100)) == second
        finally:
            fresh.stop()
        assert 100 < sum(second[topic].values()) <= 200  # two batches of at most 100
    finally:
        reader.stop()


def test_max_offsets_per_trigger_bounds_every_batch(kspark, broker, new_topic, tmp_path):
    servers, topic = broker.bootstrap_servers, new_topic(4)
    produce(servers, topic, 230)
    q = _stream_into_memory(kspark, servers, topic, tmp_path / "ckpt", "bounded",
                            maxOffsetsPerTrigger=50)
    sizes = [p["numInputRows"] for p in q.recentProgress if p["numInputRows"]]
    assert sizes and max(sizes) <= 50
    assert sum(sizes) == 230
    assert kspark.sql("SELECT count(DISTINCT key) FROM bounded").first()[0] == 230


def test_stream_commits_offsets_to_consumer_group_when_asked(kspark, broker, new_topic, tmp_path):
    servers, topic = broker.bootstrap_servers, new_topic(2)
    produce(servers, topic, 40, partitions=2)
    group = f"lag-{topic}"
    _stream_into_memory(kspark, servers, topic, tmp_path / "ckpt", "grouped",
                        **{"kafka.group.id": group})
    c = Consumer({"bootstrap.servers": servers, "group.id": group})
    try:
        committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    finally:
        c.close()
    assert [tp.offset for tp in committed] == [20, 20]


# ----------------------------------------------------------------------------- batch reads
def test_time_bounded_batch_read_returns_exactly_the_records_in_range(kspark, broker, new_topic):
    servers, topic = broker.bootstrap_servers, new_topic(4)
    produce(servers, topic, 100)
    lo, hi = BASE_TS + 20 * 1000, BASE_TS + 57 * 1000  # records 20..56
    df = (kspark.read.format("kafka")
          .options(**read_opts(servers, topic, startingTimestamp=lo, endingTimestamp=hi)).load())
    keys = sorted(int(r.k[1:]) for r in df.selectExpr("CAST(key AS STRING) k").collect())
    assert keys == list(range(20, 57))


def test_batch_read_with_offsets_json(kspark, broker, new_topic):
    servers, topic = broker.bootstrap_servers, new_topic(2)
    produce(servers, topic, 20, partitions=2)
    df = (kspark.read.format("kafka").options(**read_opts(
        servers, topic, startingOffsets=json.dumps({topic: {"0": 3, "1": -2}}),
        endingOffsets=json.dumps({topic: {"0": 5, "1": -1}}))).load())
    got = sorted((r.partition, r.offset) for r in df.select("partition", "offset").collect())
    assert got == [(0, 3), (0, 4)] + [(1, o) for o in range(10)]


def test_missing_topic_is_a_clear_error(kspark, broker):
    with pytest.raises(Exception, match="topic.*no-such-topic-xyz.*do not exist"):
        kspark.read.format("kafka").options(**read_opts(broker.bootstrap_servers,
                                                        "no-such-topic-xyz")).load().count()


def test_unknown_option_fails_before_the_query_starts(kspark, broker):
    with pytest.raises(Exception, match="unknown kafka source option 'subscrib'"):
        kspark.readStream.format("kafka").option("kafka.bootstrap.servers", broker.bootstrap_servers) \
            .option("subscrib", "x").load()
    with pytest.raises(Exception, match="startingOffsets.*not valid JSON"):
        kspark.read.format("kafka").options(**read_opts(broker.bootstrap_servers, "x",
                                                        startingOffsets="{bad")).load()


def test_unreachable_broker_fails_fast_naming_the_servers(kspark, tmp_path):
    servers = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(Exception, match=f"cannot reach Kafka at {servers}"):
        kspark.read.format("kafka").options(**read_opts(servers, "t", **{"kafka.timeout.ms": 2000})) \
            .load().count()
    df = kspark.readStream.format("kafka").options(**read_opts(servers, "t", **{"kafka.timeout.ms": 2000})).load()
    q = df.writeStream.format("noop").option("checkpointLocation", str(tmp_path / "c")).start()
    with pytest.raises(Exception, match=f"cannot reach Kafka at {servers}"):
        q.awaitTermination(60)
        raise AssertionError("the query did not fail")
    assert time.monotonic() - t0 < 60  # bounded, never a hang


# ----------------------------------------------------------------------------- writes
def test_batch_write_round_trip(kspark, broker, new_topic):
    servers, out = broker.bootstrap_servers, new_topic(2)
    rows = [(f"key{i}", f"value-{i}") for i in range(300)]
    df = kspark.createDataFrame(rows, "key string, value string").repartition(3)
    df.write.format("kafka").option("kafka.bootstrap.servers", servers).option("topic", out).save()
    got = consume_all(servers, out, 2, 300)
    assert sorted(got) == sorted((k.encode(), v.encode()) for k, v in rows)


def test_streaming_write_with_headers_round_trip(kspark, broker, new_topic, tmp_path):
    servers, src, out = broker.bootstrap_servers, new_topic(2), new_topic(1)
    produce(servers, src, 30, partitions=2)
    q = (kspark.readStream.format("kafka").options(**read_opts(servers, src, startingOffsets="earliest"))
         .load().selectExpr("key", "value", "array(named_struct('key', 'src', 'value', "
                            "CAST(CAST(offset AS STRING) AS BINARY))) AS headers")
         .writeStream.format("kafka").option("kafka.bootstrap.servers", servers)
         .option("topic", out).option("checkpointLocation", str(tmp_path / "ckpt"))
         .trigger(availableNow=True).start())
    assert q.awaitTermination(120) and q.exception() is None
    back = (kspark.read.format("kafka").options(**read_opts(servers, out, includeHeaders="true"))
            .load().selectExpr("CAST(key AS STRING) k", "headers").collect())
    assert sorted(r.k for r in back) == sorted(f"k{i}" for i in range(30))
    assert all(len(r.headers) == 1 and r.headers[0].key == "src" for r in back)


def test_write_batch_publishes_a_batch_id_once(kspark, broker, new_topic):
    servers, out = broker.bootstrap_servers, new_topic(1)
    df = kspark.createDataFrame([(f"a{i}", f"x{i}") for i in range(50)], "key string, value string")
    options = {"kafka.bootstrap.servers": servers, "topic": out}
    assert spark_kafka.write_batch(df, 0, options, sink_id="t-once") == 50
    assert spark_kafka.write_batch(df, 0, options, sink_id="t-once") == 0  # replay
    more = kspark.createDataFrame([(f"b{i}", f"y{i}") for i in range(10)], "key string, value string")
    assert spark_kafka.write_batch(more, 1, options, sink_id="t-once") == 10
    assert spark_kafka.write_batch(df, 0, options, sink_id="t-once") == 0  # an older batch
    got = consume_all(servers, out, 1, 60)
    assert len(got) == 60 and len(set(got)) == 60


def test_write_batch_keeps_its_producer_and_survives_a_broker_restart(kspark, tmp_path, caplog):
    """The driver keeps one transactional producer per sink across batches; when the broker
    restarted in between (memory storage: everything gone), the stale producer is replaced
    and the batch is still published once."""
    from chaussettes.broker import LocalBroker
    from chaussettes.settings import load
    from chaussettes.spark_kafka import writer
    from chaussettes.topics import ensure_topics

    port = free_port()
    broker = LocalBroker(port=port, run_dir=tmp_path).start()
    servers, out = broker.bootstrap_servers, "restarted-out"
    options = {"kafka.bootstrap.servers": servers, "topic": out, "kafka.timeout.ms": 5000}

    def rows(tag):
        return kspark.createDataFrame([(f"{tag}{i}", "v") for i in range(5)], "key string, value string")

    try:
        ensure_topics(load(env={}, bootstrap_servers=servers), {out: 1})
        assert spark_kafka.write_batch(rows("a"), 0, options, sink_id="t-keep") == 5
        kept = [p for key, p in writer._DRIVER_PUBLISHERS.items() if key[0].endswith("t-keep-p0")]
        assert len(kept) == 1
        assert spark_kafka.write_batch(rows("b"), 1, options, sink_id="t-keep") == 5
        assert [p for key, p in writer._DRIVER_PUBLISHERS.items() if key[0].endswith("t-keep-p0")] == kept

        broker.stop()
        broker = LocalBroker(port=port, run_dir=tmp_path).start()
        ensure_topics(load(env={}, bootstrap_servers=servers), {out: 1})
        assert spark_kafka.write_batch(rows("c"), 2, options, sink_id="t-keep") == 5
        assert "publishing batch 2 again with a new producer" in caplog.text
        got = consume_all(servers, out, 1, 5)
        assert sorted(k for k, _ in got) == sorted(f"c{i}".encode() for i in range(5))
    finally:
        broker.stop()


def test_write_delivery_failure_fails_the_write(kspark, broker):
    df = kspark.createDataFrame([("k", "v")], "key string, value string")
    servers = f"127.0.0.1:{free_port()}"
    with pytest.raises(Exception, match="not acknowledged|failed|Timed out|timed out"):
        df.write.format("kafka").option("kafka.bootstrap.servers", servers).option("topic", "t") \
            .option("kafka.timeout.ms", 1000).save()


# ----------------------------------------------------------------------------- exactly once
CRASH_SCRIPT = textwrap.dedent("""
    import sys
    from pyspark.sql import SparkSession
    from chaussettes import spark_kafka
    servers, src, out, ckpt, mode = sys.argv[1:6]
    fast_jvm = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"  # start-up, not throughput
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.driver.extraJavaOptions", fast_jvm).getOrCreate())
    spark_kafka.register(spark)
    df = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", servers)
          .option("subscribe", src).option("startingOffsets", "earliest")
          .option("maxOffsetsPerTrigger", 90).load().select("key", "value"))
    w = df.writeStream.option("checkpointLocation", ckpt).trigger(availableNow=True)
    if mode == "sink":
        w = (w.format("kafka").option("kafka.bootstrap.servers", servers).option("topic", out)
             .option("exactlyOnce", "true"))
    else:
        opts = {"kafka.bootstrap.servers": servers, "topic": out}
        w = w.foreachBatch(lambda bdf, bid: spark_kafka.write_batch(bdf, bid, opts))
    w.start().awaitTermination()
    print("DONE", flush=True)
""")


@pytest.mark.parametrize("mode", ["sink", "foreachBatch"])
def test_driver_killed_between_write_and_commit_leaves_no_duplicate(broker, new_topic, tmp_path, mode):
    servers, src, out = broker.bootstrap_servers, new_topic(2), new_topic(1)
    produce(servers, src, 150, partitions=2)  # 2 micro-batches: 90, 60
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    ckpt, flag = tmp_path / "ckpt", tmp_path / "published-batch-0"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           spark_kafka.CRASH_HOOK_ENV: f"0:{flag}"}
    args = [sys.executable, str(script), servers, src, out, str(ckpt), mode]
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "batch 0 was never published"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies after publishing, before commit
        proc.wait()
    assert not (ckpt / "commits" / "0").exists()  # Spark will replay batch 0
    assert len(consume_all(servers, out, 1, 90, settle_s=0.2)) == 90  # ... which is in Kafka

    env.pop(spark_kafka.CRASH_HOOK_ENV)
    done = subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=180)
    assert "DONE" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    got = consume_all(servers, out, 1, 150)
    assert len(got) == 150, f"{len(got)} records: {len(got) - len(set(got))} duplicates"
    assert sorted(got) == sorted((f"k{i}".encode(), f"v{i}".encode()) for i in range(150))


def test_checkpoint_beyond_an_emptied_topic_fails_clearly_or_restarts_from_its_start(kspark, tmp_path):
    """A broker that keeps its data in memory comes back empty: the checkpointed offsets are
    past the topic's end. Default policy: the query fails saying so (nothing skipped or
    re-read); failOnDataLoss=false goes on from the start of the new data."""
    from chaussettes.broker import LocalBroker
    from chaussettes.settings import load
    from chaussettes.topics import ensure_topics

    port = free_port()
    broker = LocalBroker(port=port, run_dir=tmp_path).start()
    servers, topic, ckpt = broker.bootstrap_servers, "emptied", tmp_path / "ckpt"
    try:
        ensure_topics(load(env={}, bootstrap_servers=servers), {topic: 4})
        produce(servers, topic, 40)
        _stream_into_memory(kspark, servers, topic, ckpt, "before_reset")
        assert kspark.table("before_reset").count() == 40

        broker.stop()
        broker = LocalBroker(port=port, run_dir=tmp_path).start()  # memory storage: empty
        ensure_topics(load(env={}, bootstrap_servers=servers), {topic: 4})
        produce(servers, topic, 8, start=100)

        message = _resumed_stream_failure(kspark, servers, topic, ckpt)
        assert "checkpointed offset 10 is beyond the partition's end 2" in message
        assert "emptied or recreated" in message and "failOnDataLoss=false" in message

        _stream_into_memory(kspark, servers, topic, ckpt, "after_reset", failOnDataLoss="false")
        keys = sorted(r.k for r in kspark.sql("SELECT CAST(key AS STRING) k FROM after_reset").collect())
        assert keys == sorted(f"k{i}" for i in range(100, 108))
    finally:
        broker.stop()


def _resumed_stream_failure(kspark, servers: str, topic: str, ckpt) -> str:
    """The message of the failure of a stream resumed from ``ckpt`` on ``topic`` (it must fail)."""
    df = (kspark.readStream.format("kafka")
          .options(**read_opts(servers, topic, startingOffsets="earliest")).load())
    q = (df.writeStream.format("noop").option("checkpointLocation", str(ckpt))
         .trigger(availableNow=True).start())
    with pytest.raises(Exception) as failure:
        q.awaitTermination(120)
    return str(failure.value)


def _create_topic(servers: str, topic: str, partitions: int, timeout_s: float = 30.0) -> None:
    """Create the topic, retrying while the broker still finishes deleting one of that name."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": servers})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_topic_created_again_past_the_checkpoint_fails_clearly_or_restarts_from_its_start(
        kspark, broker, tmp_path):
    """A topic deleted and created again that has already grown past the checkpointed offsets
    (20 per partition; the new one holds 50): no offset is out of range, only the topic's id
    tells. Default: the query fails saying so; failOnDataLoss=false reads all the new data once."""
    from chaussettes.spark_kafka.reader import TOPIC_IDS_KEY, from_json, with_topic_ids
    from confluent_kafka.admin import AdminClient

    servers, topic, ckpt = broker.bootstrap_servers, f"recreated-{time.monotonic_ns()}", tmp_path / "ckpt"
    _create_topic(servers, topic, 2)
    produce(servers, topic, 40, partitions=2)
    _stream_into_memory(kspark, servers, topic, ckpt, "before_recreate")
    assert kspark.table("before_recreate").count() == 40

    admin = AdminClient({"bootstrap.servers": servers})
    admin.delete_topics([topic])[topic].result(10)
    _create_topic(servers, topic, 2)
    produce(servers, topic, 100, start=1000, partitions=2)

    message = _resumed_stream_failure(kspark, servers, topic, ckpt)
    assert f"topic {topic} was deleted and created again" in message
    assert "emptied or recreated" in message and "failOnDataLoss=false" in message

    _stream_into_memory(kspark, servers, topic, ckpt, "after_recreate", failOnDataLoss="false")
    keys = sorted(r.k for r in kspark.sql("SELECT CAST(key AS STRING) k FROM after_recreate").collect())
    assert keys == sorted(f"k{i}" for i in range(1000, 1100))  # every new record, once
    # The offsets keep the JVM connector's layout beside the ids.
    doc = with_topic_ids({topic: {"0": 5}}, {topic: "id"})
    assert doc[TOPIC_IDS_KEY] == {topic: "id"} and from_json(doc) == {(topic, 0): 5}
