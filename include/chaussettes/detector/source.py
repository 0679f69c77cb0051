"""Where the detector's lines come from: the streaming source, and the way back to the
lines of one micro-batch (to explain an incident, or to write files that failed).

Every source gives the same columns: ``value`` (the line), ``topic`` (the Kafka topic, or
the file's path), ``partition`` and ``offset`` (Kafka; null otherwise) and ``record_time``
(the Kafka record's timestamp, else the micro-batch's time): a line stamped far ahead of
its record time is quarantined as ``future_time`` instead of moving the watermark.

A micro-batch's origin (``origin``) is a small JSON-able dict: ``{"kafka": {topic:
{partition: [first, end)}}}``, ``{"files": [paths]}``, or ``{"socket": batch id}`` — a
socket's lines cannot be read again: only the ingest's cache of them (``recent``) has them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def read_source(spark, settings, cfg):
    """The streaming DataFrame of lines (``cfg``: a ``pipeline.DetectorConfig``)."""
    from pyspark.sql import functions as F

    now = F.current_timestamp().alias("record_time")
    if cfg.source == "kafka":
        from chaussettes import spark_kafka

        spark_kafka.register(spark)
        reader = spark.readStream.format("kafka")
        for k, v in settings.spark_kafka_options().items():
            reader = reader.option(k, v)
        reader = reader.option("subscribe", cfg.topic or settings.topic_logs) \
            .option("startingOffsets", cfg.starting_offsets) \
            .option("failOnDataLoss", str(cfg.fail_on_data_loss).lower())
        if cfg.max_offsets_per_trigger:
            reader = reader.option("maxOffsetsPerTrigger", str(int(cfg.max_offsets_per_trigger)))
        return reader.load().select("value", "topic", "partition", "offset",
                                    F.col("timestamp").alias("record_time"))
    if cfg.source == "socket":
        host, _, port = (cfg.socket or "").rpartition(":")
        return spark.readStream.format("socket").option("host", host).option("port", int(port)).load() \
            .select("value", F.lit(None).cast("string").alias("topic"), F.lit(None).cast("int").alias("partition"),
                    F.lit(None).cast("long").alias("offset"), now)
    if cfg.source == "files":
        reader = spark.readStream.format("text")
        if cfg.max_files_per_trigger:
            reader = reader.option("maxFilesPerTrigger", str(cfg.max_files_per_trigger))
        df = reader.load(str(cfg.input))
        return df.select("value", F.col("_metadata.file_path").alias("topic"),
                         F.lit(None).cast("int").alias("partition"), F.lit(None).cast("long").alias("offset"), now)
    raise ValueError(f"unknown source {cfg.source!r}")


def origin(source: str, partitions: Iterable[Mapping[str, Any]], batch_id: int) -> dict | None:
    """A micro-batch's origin from its per-partition summary rows (topic, partition,
    min_offset, max_offset, rows); None when it has no lines."""
    if source == "kafka":
        out: dict[str, dict[str, list[int]]] = {}
        for r in partitions:
            if r.get("topic") is not None and r.get("min_offset") is not None:
                out.setdefault(r["topic"], {})[str(r["partition"])] = [int(r["min_offset"]), int(r["max_offset"]) + 1]
        return {"kafka": out} if out else None
    if source == "files":
        paths = sorted({r["topic"] for r in partitions if r.get("topic")})
        return {"files": paths} if paths else None
    if source == "socket":
        return {"socket": int(batch_id)} if any(r.get("rows") for r in partitions) else None
    return None


def reread(spark, settings, where: Mapping[str, Any] | None):
    """The lines of a micro-batch again, from its ``origin`` (None when they cannot be:
    no origin, or a socket's)."""
    from pyspark.sql import functions as F

    if not where:
        return None
    if "kafka" in where:
        from chaussettes import spark_kafka

        spark_kafka.register(spark)
        ranges = where["kafka"]
        reader = spark.read.format("kafka")
        for k, v in settings.spark_kafka_options().items():
            reader = reader.option(k, v)
        assign = {t: sorted(int(p) for p in parts) for t, parts in ranges.items()}
        return reader.option("assign", json.dumps(assign)) \
            .option("startingOffsets", json.dumps({t: {p: r[0] for p, r in parts.items()} for t, parts in ranges.items()})) \
            .option("endingOffsets", json.dumps({t: {p: r[1] for p, r in parts.items()} for t, parts in ranges.items()})) \
            .load().select("value", "topic", "partition", "offset", F.col("timestamp").alias("record_time"))
    if "files" in where:
        return spark.read.text(list(where["files"])).select(
            "value", F.col("_metadata.file_path").alias("topic"), F.lit(None).cast("int").alias("partition"),
            F.lit(None).cast("long").alias("offset"), F.current_timestamp().alias("record_time"))
    return None
