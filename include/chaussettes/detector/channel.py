"""The window-counts channel: how the ingest query hands a micro-batch's counts to the
stateful query, through a Kafka topic of the detector's own.

Why a topic: Structured Streaming cannot aggregate a micro-batch without state, and a
stateful step cannot follow ``foreachBatch``. So the ingest query (``ingest``) parses and
counts each micro-batch in the JVM (``windows.bucket_counts``: a row per (kind, key,
slide-sized bucket)) and publishes those counts here, exactly once per batch; the
stateful query (``stateful``) reads them and keeps the windows in Spark's state store.

Keys are spread over ``shards`` key groups per kind (``shard_of``: CRC-32 of the key, the
same in the JVM and in Python). One message carries the counts of one (kind, shard) for
one ingest batch — an Arrow IPC stream whose schema metadata holds the header (the
ingest batch id, the watermarks, where the batch came from) — split in chunks under
``CHUNK_BYTES``. Per ingest batch, in this order: when the thresholds changed, one message
per key group with its slice of them; the counts; then a ``clock`` message (the header
alone). Record timestamps are the watermark the counts were cut with, and the new one
for the clock: they are the stateful query's event-time watermark, so it moves only once
a batch's counts are all out.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chaussettes.thresholds import GLOBAL_KEY, KINDS

CLOCK = "clock"  # the kind of header-only messages
STAMP_SLACK_S = 1  # the stateful query's watermark delay on record timestamps (record_timestamp_ms)
CHUNK_BYTES = 512 * 1024  # under Kafka's 1 MB default message size, with room for the header
COUNT_COLUMNS = ("key", "bucket", "n", "e")
HEADER_KEY = b"chaussettes"


def shard_of(key: str, shards: int) -> int:
    """The key group of a key: CRC-32 of its UTF-8 bytes modulo ``shards``."""
    return zlib.crc32(key.encode("utf-8")) % shards


def shard_column(key_col, shards: int):
    """``shard_of`` as a Spark column."""
    from pyspark.sql import functions as F

    return F.pmod(F.crc32(F.encode(key_col, "UTF-8")), F.lit(shards)).cast("int")


def message_key(kind: str, shard: int) -> str:
    return f"{kind}:{shard}"


def parse_message_key(text: str) -> tuple[str, int]:
    kind, _, shard = text.partition(":")
    return kind, int(shard)


def partition_of(kind: str, shard: int, shards: int, partitions: int) -> int:
    """Kafka partition of a (kind, shard): every message of a key group in one partition,
    so the stateful query reads them in the order they were published."""
    index = (KINDS.index(kind) * shards + shard) if kind in KINDS else len(KINDS) * shards
    return index % partitions


@dataclass(frozen=True)
class Header:
    """What travels with every message of one ingest batch."""

    batch: int  # the ingest micro-batch id
    watermark_before: float | None  # epoch s: the watermark the batch's counts were cut with
    watermark: float | None  # epoch s: the watermark after the batch
    chunk: int = 0
    chunks: int = 1  # 0: not a counts message (the clock, or thresholds)
    thresholds: dict | None = None  # the key group's slice of new thresholds (chunks == 0)
    source: dict | None = None  # where the batch came from: {topic: {partition: [start, end]}}

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Header:
        return cls(**json.loads(text))


def encode(header: Header, table=None) -> bytes:
    """One message: an Arrow IPC stream of ``table`` (COUNT_COLUMNS) with the header."""
    from chaussettes.detector.keyed_windows import to_ipc

    if table is None:
        table = empty_counts()
    return to_ipc(table.replace_schema_metadata({HEADER_KEY: header.to_json().encode("utf-8")}))


def decode(value: bytes):
    """``(Header, pyarrow.Table)`` of a message."""
    from chaussettes.detector.keyed_windows import from_ipc

    table = from_ipc(value)
    header = Header.from_json(table.schema.metadata[HEADER_KEY])
    return header, table.replace_schema_metadata(None)


def empty_counts():
    import pyarrow as pa

    return pa.table({"key": pa.array([], pa.string()), "bucket": pa.array([], pa.int64()),
                     "n": pa.array([], pa.int64()), "e": pa.array([], pa.int64())})


def chunks(table, limit: int = CHUNK_BYTES) -> list:
    """``table`` (sorted) cut in slices of about ``limit`` bytes each (at least one)."""
    rows = table.num_rows
    if rows == 0:
        return [table]
    per_row = max(1, table.nbytes // rows)
    step = max(1, limit // per_row)
    return [table.slice(i, step) for i in range(0, rows, step)]


def thresholds_slice(doc: Mapping[str, Any], kind: str, shard: int, shards: int) -> dict:
    """The part of a thresholds document one key group needs: a valid document whose
    per-key tables (``thresholds.KEYED_FIELDS`` of each kind, ``KEYED_EVIDENCE_FIELDS`` of
    the evidence section) hold only the group's own keys."""
    from chaussettes.thresholds import KEYED_EVIDENCE_FIELDS, KEYED_FIELDS

    def own(name: str, table: Mapping) -> dict:
        return {k: v for k, v in table.items() if name == kind and shard_of(k, shards) == shard}

    out = dict(doc)
    for name in KINDS:
        section = doc.get(name)
        if isinstance(section, Mapping):
            section = dict(section)
            for field_name in KEYED_FIELDS:
                if isinstance(section.get(field_name), Mapping):
                    section[field_name] = own(name, section[field_name])
            out[name] = section
    evidence = doc.get("evidence")
    if isinstance(evidence, Mapping):
        evidence = dict(evidence)
        for field_name in KEYED_EVIDENCE_FIELDS:
            if isinstance(evidence.get(field_name), Mapping):
                evidence[field_name] = {name: own(name, table) for name, table in evidence[field_name].items()
                                        if isinstance(table, Mapping)}
        out["evidence"] = evidence
    return out


def group_messages(table, base: Header, shards: int, partitions: int) -> list[tuple[str, bytes, int]]:
    """The messages ``(key, value, partition)`` of the counts in ``table`` (columns kind,
    shard, key, bucket, n, e): per (kind, shard), its rows sorted by key and bucket (so a
    re-run makes the same chunks), in chunks."""
    import dataclasses

    import pyarrow.compute as pc

    out = []
    if table.num_rows == 0:
        return out
    groups = table.group_by(["kind", "shard"]).aggregate([]).sort_by([("kind", "ascending"),
                                                                      ("shard", "ascending")])
    for kind, shard in zip(groups.column("kind").to_pylist(), groups.column("shard").to_pylist(), strict=True):
        mask = pc.and_(pc.equal(table.column("kind"), kind), pc.equal(table.column("shard"), shard))
        counts = table.filter(mask).select(list(COUNT_COLUMNS)).sort_by([("key", "ascending"),
                                                                          ("bucket", "ascending")])
        parts = chunks(counts)
        for i, part in enumerate(parts):
            header = dataclasses.replace(base, chunk=i, chunks=len(parts))
            out.append((message_key(kind, shard), encode(header, part), partition_of(kind, shard, shards, partitions)))
    return out


def record_timestamp_ms(watermark: float | None, after: bool = False) -> int:
    """A message's record timestamp from a watermark (epoch ms, at least 1: librdkafka
    reads 0 as "now", which would move the watermark to today). ``after``: 1 ms past it.

    The stateful query's watermark is the latest record timestamp minus ``STAMP_SLACK_S``,
    and its operator drops rows stamped at or before it. So counts and thresholds cut with
    watermark W are stamped W + 1 ms and the clock W' that follows them W': a batch's
    counts read in two of its micro-batches are never behind, and the clock moves the
    watermark to W' - slack."""
    return max(1, int((watermark or 0) * 1000)) + (1 if after else 0)


def thresholds_messages(doc: Mapping[str, Any], base: Header, shards: int,
                        partitions: int) -> list[tuple[str, bytes, int]]:
    """One message per key group with its slice of new thresholds (and no counts)."""
    import dataclasses

    return [(message_key(kind, shard),
             encode(dataclasses.replace(base, chunk=0, chunks=0,
                                        thresholds=thresholds_slice(doc, kind, shard, shards))),
             partition_of(kind, shard, shards, partitions))
            for kind in KINDS for shard in (range(shards) if kind != "global" else [shard_of(GLOBAL_KEY, shards)])]


def clock_message(base: Header, partitions: int) -> tuple[str, bytes, int]:
    """The header alone, after a batch's counts: the stateful query's watermark moves."""
    import dataclasses

    return (message_key(CLOCK, 0), encode(dataclasses.replace(base, chunk=0, chunks=0)),
            partition_of(CLOCK, 0, 1, partitions))
