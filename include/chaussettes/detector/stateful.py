"""The detector's state: window counts, judging and incidents in Spark's state store.

The stateful query reads the window-counts channel (``channel``) and runs
``WindowStateProcessor`` with ``transformWithStateInPandas``, keyed by (kind, shard): a
key group. Spark partitions the groups across executors, keeps their state in the
RocksDB state store (changelog checkpointing) and checkpoints it with the query.

Why key groups and not one state key per client: every call of Python's state API is a
round trip to the JVM. Keyed by (kind, key), 630k touched keys a micro-batch took 85-105 s
(measured here, one ValueState get + update per key) — so a group's keys are handled
together, vectorised (numpy / pandas), with a few state calls per group and batch:

- ``buckets`` (MapState: bucket start -> Arrow table of key, n, e): the counts of one
  slide-sized bucket. A batch rewrites the buckets it touched and reads the ones its
  windows span; a bucket no open window holds is removed (``keyed_windows.evictable``).
- ``incidents`` (ValueState, JSON): the group's open incidents (``chaussettes.incidents``).
- ``meta`` (ValueState): the last ingest batch applied, the thresholds in force (the
  group's slice), the bucket starts held and counters.

Per ingest batch, in order: resolve incidents the cut watermark has closed, merge the
counts, sum the windows the batch changed (``keyed_windows.touched_windows``), judge them
(``judge.evaluate``) and turn breaches into incident events. An ingest batch's counts
are applied once, in ingest order, all chunks together (its thresholds, published before
them, as soon as they are read): however the stateful query's own micro-batches group
them, the same events come out. An event-time timer at the group's
next deadline resolves incidents and frees buckets when no more counts come.

Output rows: (type, kind, key, payload JSON) with type ``event`` (an incident event),
``window`` (a judged global window, for the status chart) or ``stats`` (the group's state
rows, open incidents and counters).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from functools import lru_cache

from pyspark.sql.streaming import StatefulProcessor

from chaussettes import sparkworker
from chaussettes.detector import channel
from chaussettes.detector import keyed_windows as kw

OUTPUT_SCHEMA = "type string, kind string, key string, payload string"
META_SCHEMA = ("applied long, thresholds string, buckets string, state_rows long, evaluations long, "
               "firing long, escalated long, resolved long, pending binary, timer long")
EVENT_TYPES = ("firing", "escalated", "resolved")


@lru_cache(maxsize=16)
def _thresholds(text: str | None):
    from chaussettes import thresholds

    if not text:
        return thresholds.load_default()
    return thresholds.Thresholds.from_doc(json.loads(text), source="detector")


class GroupState:
    """One key group's state for the length of a call: read lazily, written back once."""

    def __init__(self, proc: WindowStateProcessor, kind: str):
        self.proc, self.kind = proc, kind
        row = proc.meta.get()
        self.applied = -1 if row is None else int(row[0])
        self.thresholds_text = None if row is None else row[1]
        self.bucket_starts: set[int] = set(json.loads(row[2])) if row is not None else set()
        self.state_rows = 0 if row is None else int(row[3])
        self.evaluations = 0 if row is None else int(row[4])
        self.counts = dict(zip(EVENT_TYPES, (0, 0, 0) if row is None else (int(row[5]), int(row[6]), int(row[7])),
                               strict=True))
        self.pending: dict[int, list[bytes]] = pickle.loads(row[8]) if row is not None and row[8] else {}
        self.timer: int | None = None if row is None else row[9]  # the event-time timer set, ms
        self.tables: dict[int, object] = {}
        self.dirty: set[int] = set()
        self.removed: set[int] = set()
        stored = proc.incidents.get()
        self._book_records = json.loads(stored[0]) if stored is not None else []
        self._book = None

    @property
    def thresholds(self):
        return _thresholds(self.thresholds_text)

    @property
    def book(self):
        from chaussettes.incidents import IncidentBook

        th = self.thresholds
        if self._book is None:
            self._book = IncidentBook.from_records(self.kind, th.window_length_s, th.window_slide_s,
                                                   th.resolve_after, self._book_records)
        else:
            self._book.length_s, self._book.slide_s = th.window_length_s, th.window_slide_s
            self._book.resolve_after = th.resolve_after
        return self._book

    def tables_of(self, starts) -> dict:
        """The held bucket tables among ``starts`` (read from the state store once)."""
        out = {}
        for start in starts:
            if start not in self.bucket_starts:
                continue
            if start not in self.tables:
                data = self.proc.buckets.getValue((start,))
                self.tables[start] = kw.from_ipc(data[0]) if data is not None else kw.HELD_SCHEMA.empty_table()
            out[start] = self.tables[start]
        return out

    def put(self, start: int, table) -> None:
        self.state_rows += table.num_rows - self.tables_of([start]).get(start, table.slice(0, 0)).num_rows
        self.tables[start] = table
        self.bucket_starts.add(start)
        self.dirty.add(start)

    def drop_buckets(self, starts) -> None:
        for start in starts:
            self.state_rows -= self.tables_of([start]).get(start, kw.HELD_SCHEMA.empty_table()).num_rows
            self.bucket_starts.discard(start)
            self.tables.pop(start, None)
            self.dirty.discard(start)
            self.removed.add(start)

    def reset_buckets(self) -> None:
        self.drop_buckets(sorted(self.bucket_starts))

    def save(self) -> None:
        for start in self.dirty:
            self.proc.buckets.updateValue((start,), (kw.to_ipc(self.tables[start]),))
        for start in self.removed:
            self.proc.buckets.removeKey((start,))
        self.proc.meta.update((self.applied, self.thresholds_text, json.dumps(sorted(self.bucket_starts)),
                               self.state_rows, self.evaluations, *(self.counts[t] for t in EVENT_TYPES),
                               pickle.dumps(self.pending) if self.pending else None, self.timer))
        if self._book is not None:
            self.proc.incidents.update((json.dumps(self._book.to_records()),))

    def next_timer_s(self) -> int | None:
        """When the watermark must wake this group: an incident's deadline, or the time the
        oldest bucket can go."""
        th = self.thresholds
        times = [b + th.window_length_s for b in self.bucket_starts]
        deadline = self.book.next_deadline()
        if deadline is not None:
            times.append(deadline)
        return min(times, default=None)


class WindowStateProcessor(StatefulProcessor):
    """``transformWithStateInPandas`` processor, keyed by (kind, shard)."""

    def init(self, handle) -> None:
        sparkworker.settle()
        self.handle = handle
        self.meta = handle.getValueState("meta", META_SCHEMA)
        self.buckets = handle.getMapState("buckets", "bucket long", "table binary")
        self.incidents = handle.getValueState("incidents", "records string")

    def handleInputRows(self, key, rows, timerValues) -> Iterator:
        import pandas as pd

        kind, shard = str(key[0]), int(key[1])
        values = [v for pdf in rows for v in pdf["value"]]
        if kind == channel.CLOCK:  # it moves the watermark; it says how far the ingest's batches are in
            done = max(channel.decode(v)[0].batch for v in values)
            yield pd.DataFrame([{"type": "stats", "kind": kind, "key": "0", "payload": json.dumps({"applied": done})}])
            return
        state = GroupState(self, kind)
        out: list[dict] = []
        batches = self._batches(state, values)
        state.pending = {}
        for batch in sorted(batches):
            if batch <= state.applied:
                continue
            messages = batches[batch]
            if state.pending or not self._complete(messages):
                # a publish cut by a crash can show part of a batch before its retry shows
                # all of it: keep this batch and the later ones, in order, for later
                state.pending[batch] = [v for _, _, v in messages]
                continue
            out += self._apply(state, batch, messages)
        out += self._stats(state, shard)
        self._finish(state)
        yield pd.DataFrame(out, columns=["type", "kind", "key", "payload"])

    def handleExpiredTimer(self, key, timerValues, expiredTimerInfo) -> Iterator:
        import pandas as pd

        kind, shard = str(key[0]), int(key[1])
        if kind == channel.CLOCK:
            return
        state = GroupState(self, kind)
        state.timer = None  # it fired: Spark has removed it
        watermark = timerValues.getCurrentWatermarkInMs() / 1000.0
        out = self._events(state, state.book.resolve_due(watermark), None)
        state.drop_buckets(kw.evictable(state.bucket_starts, state.thresholds.window_length_s, watermark))
        out += self._stats(state, shard)
        self._finish(state)
        yield pd.DataFrame(out, columns=["type", "kind", "key", "payload"])

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _batches(state: GroupState, values) -> dict[int, list[tuple]]:
        """Decoded messages by ingest batch, the ones kept from earlier calls first; a
        chunk seen twice (a retried publish) once."""
        out: dict[int, dict[tuple, tuple]] = {}
        for value in [v for vs in state.pending.values() for v in vs] + list(values):
            header, table = channel.decode(value)
            out.setdefault(header.batch, {}).setdefault((header.chunk, header.chunks, header.thresholds is None),
                                                        (header, table, value))
        return {batch: list(msgs.values()) for batch, msgs in out.items()}

    @staticmethod
    def _complete(messages) -> bool:
        """Every count chunk of the batch is here (or it has none)."""
        sizes = {h.chunks for h, _, _ in messages if h.chunks}
        if not sizes:
            return True
        return len(sizes) == 1 and {h.chunk for h, _, _ in messages if h.chunks} == set(range(sizes.pop()))

    def _apply(self, state: GroupState, batch: int, messages) -> list[dict]:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from chaussettes import judge

        header = messages[0][0]
        for h, _, _ in messages:
            if h.thresholds is not None:
                old = state.thresholds
                state.thresholds_text = json.dumps(h.thresholds, sort_keys=True)
                new = state.thresholds
                if (old.window_length_s, old.window_slide_s) != (new.window_length_s, new.window_slide_s):
                    state.reset_buckets()  # counts of another slide cannot be summed into these windows
        if not any(h.chunks for h, _, _ in messages):
            # thresholds alone: this group's counts of the batch, if it has any, may come in the
            # next micro-batch (one without a gate can end between the thresholds' transaction
            # and the counts'): the batch is applied with them. A group with no counts in it
            # is left to its timers, as when a batch sends it nothing.
            return []
        th = state.thresholds
        length, slide = th.window_length_s, th.window_slide_s
        out = self._events(state, state.book.resolve_due(header.watermark_before), header)
        tables = [t for h, t, _ in messages if h.chunks]
        counts = pa.concat_tables(tables) if tables else None
        if counts is not None and counts.num_rows:
            buckets = counts.column("bucket").to_numpy()
            first, last = int(buckets.min()), int(buckets.max())
            old = kw.held(state.tables_of(sorted(set(buckets.tolist()))))
            for start, table in kw.merge(old, counts).items():
                state.put(start, table)
            spanned = [b for b in state.bucket_starts if first - length < b < last + length]
            wins = kw.touched_windows(kw.held(state.tables_of(spanned)), counts.select(["key", "bucket"]),
                                      length, slide, header.watermark_before)
            v = judge.evaluate(th, state.kind, wins["key"].to_numpy(object), wins["requests"], wins["errors"],
                               wins["window_start"])
            with np.errstate(divide="ignore", invalid="ignore"):
                wins["error_rate"] = wins["errors"] / wins["requests"]
            wins["threshold"], wins["judged"], wins["breach"], wins["level"] = v.threshold, v.judged, v.breach, v.level
            state.evaluations += int(v.judged.sum())
            out += self._events(state, state.book.apply(wins), header)
            if state.book.open:
                mine = counts.filter(pc.is_in(counts.column("key"), value_set=pa.array(list(state.book.open))))
                last_seen = mine.group_by("key").aggregate([("bucket", "max")])
                state.book.saw_traffic(dict(zip(last_seen.column("key").to_pylist(),
                                                last_seen.column("bucket_max").to_pylist(), strict=True)))
            if state.kind == "global":
                out += [{"type": "window", "kind": "global", "key": "*", "payload": json.dumps({
                    "window_start": int(r.window_start), "window_end": int(r.window_end),
                    "requests": int(r.requests), "errors": int(r.errors), "error_rate": float(r.error_rate),
                    "threshold": float(r.threshold)})} for r in wins.itertuples()]
        state.drop_buckets(kw.evictable(state.bucket_starts, length, header.watermark))
        state.applied = batch
        return out

    @staticmethod
    def _events(state: GroupState, events: list[dict], header) -> list[dict]:
        out = []
        for e in events:
            state.counts[e["event"]] += 1
            e["thresholds_version"] = state.thresholds.version
            e["source"] = header.source if header is not None else None
            out.append({"type": "event", "kind": e["kind"], "key": e["key"], "payload": json.dumps(e)})
        return out

    @staticmethod
    def _stats(state: GroupState, shard: int) -> list[dict]:
        return [{"type": "stats", "kind": state.kind, "key": str(shard), "payload": json.dumps({
            "state_rows": state.state_rows, "open": len(state.book.open), "evaluations": state.evaluations,
            **state.counts, "applied": state.applied})}]

    def _finish(self, state: GroupState) -> None:
        wake = state.next_timer_s()
        wake_ms = None if wake is None else int(wake * 1000)
        if wake_ms != state.timer:
            if state.timer is not None:
                self.handle.deleteTimer(state.timer)
            if wake_ms is not None:
                self.handle.registerTimer(wake_ms)
            state.timer = wake_ms
        state.save()
