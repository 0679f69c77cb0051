"""detector.stateful's key-group processor, called as Spark calls it, on its state held in
memory (``_Value`` and ``_Map`` answer as Spark's ValueState and MapState): what it
publishes. The real state store runs in tests/test_detector_stateful.py."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pyarrow as pa
from chaussettes import thresholds as thresholds_mod
from chaussettes.detector import channel
from chaussettes.detector.stateful import WindowStateProcessor

BAD_IP = "203.0.113.9"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()


class _Value:
    def __init__(self, value=None):
        self.value = value

    def get(self):
        return self.value

    def update(self, value):
        self.value = value


class _Map:
    """Spark's MapState as the processor calls it, in memory."""

    def __init__(self, items):
        self.items = dict(items)

    def getValue(self, key):
        return (self.items[key[0]],) if key[0] in self.items else None

    def updateValue(self, key, value):
        self.items[key[0]] = value[0]

    def removeKey(self, key):
        self.items.pop(key[0], None)


class _Handle:
    def __init__(self):
        self.timers: set[int] = set()

    def registerTimer(self, ms):
        self.timers.add(ms)

    def deleteTimer(self, ms):
        self.timers.discard(ms)


def _processor() -> WindowStateProcessor:
    proc = WindowStateProcessor()
    proc.handle, proc.meta, proc.incidents, proc.buckets = _Handle(), _Value(), _Value(), _Map({})
    return proc


def _events(proc, shard, values) -> list[tuple]:
    out = pd.concat(proc.handleInputRows(("ip", shard), iter([pd.DataFrame({"value": values})]), None))
    return [(e["event"], e["kind"], e["key"]) for e in map(json.loads, out[out["type"] == "event"]["payload"])]


def test_a_batchs_counts_read_after_its_thresholds_are_applied():
    """Without a gate (a fresh start), a stateful micro-batch can end between a batch's
    thresholds (published first, in their own transaction) and its counts: the counts,
    read in the next micro-batch, are applied and the incident fires, as when both come in
    one (the counts used to be dropped: the batch counted as applied with its thresholds)."""
    doc = thresholds_mod.load_default().doc
    doc.update({"version": 1, "ip": {"default": 0.5, "overrides": {}}})
    shards, partitions = 16, 4
    shard = channel.shard_of(BAD_IP, shards)
    base = channel.Header(batch=1, watermark_before=None, watermark=T0 - 30, source={"socket": 1})
    (thresholds,) = [v for k, v, _ in channel.thresholds_messages(doc, base, shards, partitions)
                     if k == channel.message_key("ip", shard)]
    counts = pa.table({"kind": ["ip"], "shard": [shard], "key": [BAD_IP], "bucket": pa.array([int(T0)], pa.int64()),
                       "n": pa.array([30], pa.int64()), "e": pa.array([18], pa.int64())})
    (count,) = [v for _, v, _ in channel.group_messages(counts, base, shards, partitions)]

    together = _processor()
    assert _events(together, shard, [thresholds, count]) == [("firing", "ip", BAD_IP)]
    apart = _processor()
    assert _events(apart, shard, [thresholds]) == []
    assert _events(apart, shard, [count]) == [("firing", "ip", BAD_IP)]
    assert _events(apart, shard, [count]) == []  # a batch is applied once
