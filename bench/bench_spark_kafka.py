"""Spark ⇄ Kafka through the ``kafka`` Python data source (chaussettes.spark_kafka).

Figures: a streaming read (Trigger.AvailableNow) of 2 M ~200-byte messages into a count on
local[2], steady state (warm session: a small query ran first, so session and first-query
start-up are excluded), its ratio to the raw confluent-kafka consume rate of the same run,
and the write rate of a batch write (at-least-once) and of ``write_batch`` (one Kafka
transaction, exactly once per batch id).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kafka_raw

MESSAGES = 2_000_000
WRITE_ROWS = 500_000
TXN_ROWS = 200_000


def _seal(settings, topic: str, partitions: int) -> None:
    """One single-record batch per partition, so Tansu's high watermark covers the preload."""
    p = Producer(settings.kafka_client_config(**{"linger.ms": 0, "batch.num.messages": 1}))
    for part in range(partitions):
        p.produce(topic, b"x" * kafka_raw.MESSAGE_BYTES, b"seal", partition=part)
    p.flush(30)


def _count_stream(spark, settings, topic: str, checkpoint: Path) -> tuple[int, float, float]:
    df = (spark.readStream.format("kafka").options(**settings.spark_kafka_options())
          .option("subscribe", topic).option("startingOffsets", "earliest").load())
    t0 = time.perf_counter()
    q = (df.writeStream.format("noop").option("checkpointLocation", str(checkpoint))
         .trigger(availableNow=True).start())
    q.awaitTermination()
    wall = time.perf_counter() - t0
    rows = sum(p["numInputRows"] for p in q.recentProgress)
    busy = sum(p["durationMs"].get("triggerExecution", 0) for p in q.recentProgress
               if p["numInputRows"]) / 1000.0
    return rows, wall, busy


def _worker_cpu_per_message(settings, topic: str, partition: int) -> tuple[float, int]:
    """CPU seconds per message of what one Spark task runs in its Python worker (consume +
    Arrow batches), in this process: the load-independent view of the reader's cost."""
    from chaussettes.spark_kafka import reader

    cfg = reader.ReadConfig.parse({**settings.spark_kafka_options(), "subscribe": topic},
                                  streaming=False)
    client = reader.OffsetClient(cfg)
    try:
        end = client.readable_ends(client.watermarks([(topic, partition)]))[(topic, partition)][1]
    finally:
        client.close()
    cpu0 = time.process_time()
    rows = sum(b.num_rows for b in reader.read_range(cfg, topic, partition, 0, end))
    return (time.process_time() - cpu0) / rows, rows


def run(ctx) -> list[dict]:
    from chaussettes import spark_kafka

    spark = ctx.spark()
    spark_kafka.register(spark)
    settings = ctx.settings

    warm = ctx.new_topic(4, "skwarm")
    kafka_raw.produce_rate(settings, warm, 20_000)
    _seal(settings, warm, 4)
    _count_stream(spark, settings, warm, ctx.tmp / "ck-warm")

    topic = ctx.new_topic(4, "skread")
    kafka_raw.produce_rate(settings, topic, MESSAGES)
    _seal(settings, topic, 4)
    rows, wall, busy = _count_stream(spark, settings, topic, ctx.tmp / "ck-read")
    if rows != MESSAGES + 4:
        raise RuntimeError(f"streaming read counted {rows} rows, expected {MESSAGES + 4}")
    rate = rows / wall
    raw = ctx.raw.get("consume_msgs_per_s")
    results = [
        {"name": "streaming read (availableNow) into a count", "value": round(rate),
         "unit": "msgs/s", "goal": ">= 250000",
         "note": f"{rows:,} x {kafka_raw.MESSAGE_BYTES} B, 4 partitions, local[2], warm session, "
                 f"wall {wall:.1f}s from start() (batch time {busy:.1f}s)"},
    ]
    if raw:
        results.append({"name": "streaming read / raw consume", "value": round(rate / raw, 3),
                        "unit": "ratio", "goal": None,
                        "note": f"raw confluent-kafka consume {raw:,.0f} msgs/s in this run"})

    per_msg, n = _worker_cpu_per_message(settings, topic, 0)
    results.append({"name": "reader CPU per message (Python worker)", "value": round(per_msg * 1e6, 2),
                    "unit": "us/msg", "goal": None,
                    "note": f"consume + Arrow batch of {n:,} messages of one partition, process time "
                            f"(load-independent; {1 / per_msg:,.0f} msgs/s per busy core)"})

    out = ctx.new_topic(4, "skwrite")
    df = spark.range(WRITE_ROWS, numPartitions=2).selectExpr(
        "CAST(id AS STRING) AS key",
        f"concat(CAST(id AS STRING), repeat('x', {kafka_raw.MESSAGE_BYTES - 8})) AS value").cache()
    df.count()
    t0 = time.perf_counter()
    (df.write.format("kafka").options(**settings.spark_kafka_options()).option("topic", out).save())
    write_s = time.perf_counter() - t0
    results.append({"name": "batch write (idempotent, at-least-once)",
                    "value": round(WRITE_ROWS / write_s), "unit": "msgs/s", "goal": None,
                    "note": f"{WRITE_ROWS:,} rows, 2 tasks, flushed, {write_s:.1f}s"})

    txn = ctx.new_topic(1, "sktxn")
    small = df.limit(TXN_ROWS)
    t0 = time.perf_counter()
    n = spark_kafka.write_batch(small, 0, {**settings.spark_kafka_options(), "topic": txn},
                                sink_id="bench")
    txn_s = time.perf_counter() - t0
    results.append({"name": "write_batch (one transaction, exactly once)",
                    "value": round(n / txn_s), "unit": "msgs/s", "goal": None,
                    "note": f"{n:,} rows in one task and one Kafka transaction, {txn_s:.1f}s"})
    df.unpersist()
    return results
