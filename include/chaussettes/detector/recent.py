"""The error lines of the ingest's last batches, kept in Spark's cache for the explanations.

An incident's explanation (top error URLs / IPs / statuses) is counted over the lines of
the ingest batch that made its breach visible. Reading that batch again from its origin
and parsing it again cost more than the rest of a stateful batch (a 1M-line batch: 2.6 s
alone, 9-15 s beside the ingest, measured). The ingest already has the batch parsed: it
keeps its error lines — a few columns, the ~5% of lines at or over ``error_status_min`` —
cached in the executors for its last ``KEEP_BATCHES`` batches and at most ``KEEP_ROWS``
lines (a flood of errors makes every line an error line: the newest batch is kept whatever
its size, older ones go first), keyed by the batch's origin, which every incident event
carries (``source``). The explanation reads from there and reads the origin again only for
a batch no longer (or not) kept: after a restart, far behind, or after a flood.

Both queries' ``foreachBatch`` run in the driver's Python process: this object is shared
by them, under a lock, so that a batch is never released while an explanation reads it.
The ingest caches a batch's error lines after it has published its counts (alerts do not
wait for them), so an explanation may come first: it waits for a batch announced
(``expect``) but not cached yet.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

KEEP_BATCHES = 4  # the stateful query explains a batch seconds after the ingest published it
KEEP_ROWS = 1_000_000  # ~50 MB of Spark's cache: four short columns a line
WAIT_S = 30.0  # how long an explanation waits for an announced batch's error lines


def origin_key(where: Mapping[str, Any] | None) -> str | None:
    """The key of a batch's origin (``source.origin``): the same text for the same lines."""
    return None if not where else json.dumps(where, sort_keys=True)


def error_lines(events, error_status_min: int):
    """What an explanation counts, from parsed events: ``t`` (event time, µs), ``ip``,
    ``url``, ``status`` (text) of the lines at or over ``error_status_min``."""
    from pyspark.sql import functions as F

    return events.where(F.col("status") >= F.lit(error_status_min)).select(
        F.unix_micros("event_time").alias("t"), "ip", "url", F.col("status").cast("string").alias("status"))


class RecentErrors:
    """Cached error lines by origin: the newest ``keep`` batches, fewer when they hold more
    than ``keep_rows`` lines (the newest batch always)."""

    def __init__(self, keep: int = KEEP_BATCHES, keep_rows: int = KEEP_ROWS):
        self.keep = keep
        self.keep_rows = keep_rows
        self._cond = threading.Condition()
        self._frames: OrderedDict[str, tuple[Any, int]] = OrderedDict()  # origin -> (frame, lines)
        self._coming: set[str] = set()  # origins announced (``expect``), not cached yet

    def expect(self, where: Mapping[str, Any] | None) -> None:
        """Announce a batch whose error lines ``add`` is about to cache: an explanation of it
        waits for them rather than reading the batch again. The ingest announces a batch
        before the stateful query may read its counts, and caches its error lines after: the
        counts do not wait for them."""
        key = origin_key(where)
        if key is not None:
            with self._cond:
                self._coming.add(key)

    def add(self, where: Mapping[str, Any] | None, events, error_status_min: int) -> int:
        """Cache (and compute now) the error lines of a batch's ``events``; returns how many.
        A batch without an origin (no lines) is not kept."""
        from pyspark import StorageLevel

        key = origin_key(where)
        if key is None:
            return 0
        frame = None
        try:
            frame = error_lines(events, error_status_min).persist(StorageLevel.MEMORY_AND_DISK)
            count = frame.count()
        except BaseException:
            if frame is not None:
                frame.unpersist()
            raise
        finally:
            with self._cond:
                self._coming.discard(key)
                self._cond.notify_all()
        with self._cond:
            old = self._frames.pop(key, None)
            self._frames[key] = (frame, count)
            if old is not None:
                old[0].unpersist()
            while len(self._frames) > self.keep or (
                    len(self._frames) > 1 and sum(n for _, n in self._frames.values()) > self.keep_rows):
                self._frames.popitem(last=False)[1][0].unpersist()
        return count

    @contextlib.contextmanager
    def holding(self, keys, wait_s: float = WAIT_S) -> Iterator[dict[str, Any]]:
        """The cached frames among ``keys`` (origin keys), none released while held; an
        announced one is waited for (at most ``wait_s``)."""
        keys = set(keys)
        with self._cond:
            self._cond.wait_for(lambda: not keys & self._coming, timeout=wait_s)
            yield {k: self._frames[k][0] for k in keys if k in self._frames}

    def clear(self) -> None:
        with self._cond:
            frames, self._frames = [f for f, _ in self._frames.values()], OrderedDict()
            self._coming.clear()
            self._cond.notify_all()
        for frame in frames:
            frame.unpersist()
