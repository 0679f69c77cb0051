"""The ingest query: each micro-batch of lines, parsed once, becomes window counts on the
channel (what the stateful query judges) and then the file outputs.

``IngestBatch`` is its ``foreachBatch`` function; its named steps, in order:

1. ``parse``: the fast path is part of the query's plan (built once); its result is cached,
   the full rules run only on the lines it refused. A line stamped more than
   ``FUTURE_TOLERANCE_S`` after its record time is refused as ``future_time``.
2. ``summarize``: one aggregation per source partition (rows, refused, offsets, event-time
   span) — the only rows the driver receives.
3. ``advance``: the watermark follows the slowest source partition that has data (as
   Flink's Kafka source does): max over the batch of (min over its partitions of their
   latest event time) - ``watermark_s``, never backwards. A hot partition that falls
   behind in event time holds it back instead of seeing its events dropped as late.
4. ``publish``: the counts per (kind, key, slide-sized bucket), summed in the JVM and
   published on the channel from the executors, exactly once per batch; the thresholds
   to every key group when they changed, first; a clock message last. Counts of buckets
   whose every window the watermark had closed are late: counted, not sent. Then the
   gate moves: the stateful query reads up to the clock (``gate``).
5. ``errors``: the batch's error lines stay cached for the explanations (``recent``).
6. ``write_files``: quarantine, Parquet archive and error events (restart-safe). A failure
   (disk full, a permission) is reported in the status and the batch's origin is kept;
   the next batches retry it by reading those lines again. Alerts never wait for files.
7. the status, and ``--console``'s per-window table.

The ingest keeps between batches only an ``IngestClock`` (the watermark, totals, the files
still to write): a small JSON per batch beside Spark's checkpoint, read back as it was
before a batch Spark replays after a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaussettes import atomicfile, sparkparse, sparkworker, windows
from chaussettes.detector import channel, gate
from chaussettes.detector import source as source_mod
from chaussettes.detector.archive import hour_partition, write_partitioned
from chaussettes.detector.recent import RecentErrors
from chaussettes.thresholds import KINDS

log = logging.getLogger("chaussettes.detector")

FUTURE_TOLERANCE_S = 300  # a line this far ahead of its record time is refused (future_time)
FUTURE_TIME = "future_time"
CLOCK_FILE = re.compile(r"^clock-(\d{12})\.json$")
KEEP_CLOCKS = 5
MAX_PENDING_FILES = 1000  # batches whose files wait for a retry; older ones are given up (logged)
SMALL_BATCH_ROWS = 200_000  # a batch below this publishes its counts from one task


@dataclass
class IngestClock:
    """What the ingest carries from one micro-batch to the next: no row per key."""

    batch_id: int = -1
    watermark: float | None = None  # epoch s
    events_total: int = 0
    quarantined_total: int = 0
    late_total: int = 0
    thresholds_sent: str | None = None  # digest of the thresholds the key groups have
    end_offsets: dict[str, dict[str, int]] = field(default_factory=dict)  # topic -> partition -> next
    pending_files: list[dict] = field(default_factory=list)  # {"batch", "origin", "error"}


class ClockStore:
    """One JSON per batch under ``<checkpoint>/ingest/``, written atomically."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _ids(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := CLOCK_FILE.match(p.name)))

    def load_before(self, batch_id: int) -> IngestClock:
        """The clock left by the newest batch < batch_id (a replayed batch sees what it saw)."""
        for bid in reversed(self._ids()):
            if bid < batch_id:
                doc = json.loads((self.folder / f"clock-{bid:012d}.json").read_text())
                return IngestClock(**doc)
        return IngestClock()

    def save(self, clock: IngestClock) -> None:
        atomicfile.write_json(self.folder / f"clock-{clock.batch_id:012d}.json", dataclasses.asdict(clock),
                              indent=None, mode=0o600, durable=True)
        for bid in self._ids():
            if bid < clock.batch_id - KEEP_CLOCKS:
                with contextlib.suppress(FileNotFoundError):
                    (self.folder / f"clock-{bid:012d}.json").unlink()


def advance(watermark: float | None, partitions: list[dict], delay_s: int) -> float | None:
    """The watermark after a batch: the slowest partition with events sets it."""
    latest = [p["max_ts"] for p in partitions if p.get("max_ts") is not None]
    if not latest:
        return watermark
    candidate = min(latest) - delay_s
    return candidate if watermark is None else max(watermark, candidate)


def thresholds_digest(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()[:16]


class Parsed:
    """A micro-batch parsed once: the cached fast path, and the full rules' rows if any."""

    def __init__(self, df):
        from pyspark import StorageLevel

        if "__fast_ok" not in df.columns:  # a plain DataFrame of lines (tests, replays)
            df = sparkparse.fast_of(df, "value", refuse=future())
        self.fast = df.persist(StorageLevel.MEMORY_AND_DISK)
        self.good, self.keep = sparkparse.good_of(self.fast)
        self.rest = None
        self.settled = False  # whether the full rules' rows are known to be needed or not

    def settle(self, left: bool | None = None) -> None:
        """Run the full rules when the fast path left lines (JSON, CSV, refused ones): ``left``
        when the caller counted them, else one job looks. Planning the full rules costs ~2 s:
        only then."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        if self.settled:
            return
        if left is None:
            left = bool(self.fast.where(~F.col("__fast_ok")).limit(1).count())
        if left:
            self.rest = sparkparse.full_rules_of(self.fast, self.keep).persist(StorageLevel.MEMORY_AND_DISK)
        self.settled = True

    @property
    def rows(self):
        """parse_column's layout, with ``future_time`` refusals: every line, whichever
        rules parsed it."""
        from pyspark.sql import functions as F

        self.settle()
        both = self.good if self.rest is None else self.good.unionByName(self.rest)
        late_stamp = F.col("reason").isNull() & future()
        return both.withColumn("reason", F.when(late_stamp, F.lit(FUTURE_TIME)).otherwise(F.col("reason")))

    @property
    def events(self):
        return sparkparse.events_of(self.rows)

    def release(self) -> None:
        if self.rest is not None:
            self.rest.unpersist()
        self.fast.unpersist()


def future():
    """A line stamped more than FUTURE_TOLERANCE_S after its record time."""
    from pyspark.sql import functions as F

    # in microseconds: timestamp + INTERVAL goes through the session's time zone per row
    # (3% of the ingest's JVM time, profiled)
    return F.unix_micros("event_time") > F.unix_micros("record_time") + F.lit(FUTURE_TOLERANCE_S * 1_000_000)


class IngestBatch:
    """The ingest query's ``foreachBatch`` function (see the module docstring)."""

    def __init__(self, spark, settings, cfg, checkpoint: Path, status, watcher, counts_topic: str,
                 recent: RecentErrors | None = None):
        self.spark, self.settings, self.cfg, self.status, self.watcher = spark, settings, cfg, status, watcher
        self.recent = recent
        self.clocks = ClockStore(checkpoint / "ingest")
        self.gate_path = checkpoint / "ingest" / gate.GATE_FILE
        self._channel_offsets = None  # an OffsetClient on the channel, for the gate
        self.counts_topic = counts_topic
        self.shards = settings.detector_shards
        self.partitions = settings.window_counts_partitions
        self.console_sets: dict[tuple, list] = {}
        self._last_end = time.time()
        self.history: list[dict] = []  # per batch: rows, duration, step times (benchmarks read it)

    def __call__(self, df, batch_id: int) -> None:
        t0 = time.time()
        steps: dict[str, float] = {}
        mark = t0

        def step(name: str) -> None:
            nonlocal mark
            now_ = time.time()
            steps[name] = round(now_ - mark, 2)
            mark = now_

        th = self.watcher.current()
        clock = self.clocks.load_before(batch_id)
        clock.batch_id = batch_id
        parsed = Parsed(df)
        try:
            partitions = self.summarize(parsed)
            step("parse")
            rows = sum(p["rows"] for p in partitions)
            bad = sum(p["bad"] for p in partitions)
            for topic, ends in _end_offsets(partitions).items():
                clock.end_offsets.setdefault(topic, {}).update(ends)
            cut = clock.watermark
            clock.watermark = advance(cut, partitions, th.watermark_s)
            where = source_mod.origin(self.cfg.source, partitions, batch_id)
            late = self.publish(parsed, th, clock, batch_id, cut, where, rows) if rows else 0
            keep_errors = self.recent is not None and rows > bad
            if keep_errors:  # announced before the stateful query can read the counts
                self.recent.expect(where)
            if rows:
                self.open_gate(batch_id)
            step("publish")
            if keep_errors:
                try:
                    self.recent.add(where, parsed.events, self.settings.error_status_min)
                except Exception as exc:  # noqa: BLE001 - its explanations read the batch again
                    log.warning("batch %d: its error lines are not kept for explanations: %s", batch_id,
                                _one_line(exc))
                step("errors")
            self.retry_files(clock)
            self.write_files(parsed, clock, batch_id, partitions, where, bad, rows - bad)
            step("files")
            if self.cfg.console and rows > bad:
                self.console(parsed.events, th, cut, batch_id)
            clock.events_total += rows - bad - late
            clock.late_total += late
            clock.quarantined_total += bad
            self.clocks.save(clock)
        finally:
            parsed.release()
        t1 = time.time()
        since_last = max(t1 - self._last_end, 1e-6)
        self._last_end = t1
        self.status.ingest_done(
            batch_id=batch_id, input_rows=rows, input_rows_per_s=rows / since_last,
            processed_rows_per_s=rows / max(t1 - t0, 1e-6), duration_s=t1 - t0, clock=clock,
            thresholds=th, watcher=self.watcher,
        )
        steps["status"] = round(time.time() - t1, 2)
        self.history.append({"batch_id": batch_id, "rows": rows, "duration_s": round(time.time() - t0, 3),
                             "ended_at": time.time(), "steps": steps, "driver_rows": len(partitions)})
        del self.history[:-1000]
        log.info("ingest batch %d: %d rows (%d quarantined, %d late), %.2fs (%s), watermark %s",
                 batch_id, rows, bad, late, t1 - t0, " ".join(f"{k} {v}s" for k, v in steps.items()),
                 _iso_or_none(clock.watermark))

    # ------------------------------------------------------------------ steps
    def summarize(self, parsed: Parsed) -> list[dict]:
        """Per source partition: rows, refused rows (``bad``), offsets and the event-time
        span of its events. One job over the fast path's cache (it fills it); one more
        over the full rules' rows when the fast path left any (lines stamped in the future
        among them: ``fast_of(refuse=future())``)."""
        from pyspark.sql import functions as F

        ok = F.col("__fast_ok")
        out = {}
        for r in parsed.fast.groupBy("topic", "partition").agg(
                F.count(F.lit(1)).alias("rows"), F.sum((~ok).cast("long")).alias("rest"),
                *_span(ok, with_rows=False), F.min("offset").alias("min_offset"),
                F.max("offset").alias("max_offset")).collect():
            out[(r["topic"], r["partition"])] = {**r.asDict(), "bad": 0}
        parsed.settle(any(p["rest"] for p in out.values()))
        if parsed.rest is not None:
            good = F.col("reason").isNull() & ~future()
            for r in parsed.rest.groupBy("topic", "partition").agg(
                    F.sum((~good).cast("long")).alias("bad"), *_span(good, with_rows=False)).collect():
                p = out[(r["topic"], r["partition"])]
                p["bad"] = int(r["bad"] or 0)
                p["max_ts"] = max((x for x in (p["max_ts"], r["max_ts"]) if x is not None), default=None)
                p["min_ts"] = min((x for x in (p["min_ts"], r["min_ts"]) if x is not None), default=None)
        return list(out.values())

    def _publishing_tasks(self, rows: int) -> int:
        """Tasks that publish a batch's counts: each opens a transactional producer (0.05-0.5 s
        on the local broker), worth it only for a backlog's batches. The same rows give the
        same tasks: a replayed batch is published by the same tasks, whose markers it finds."""
        return 1 if rows < SMALL_BATCH_ROWS else int(self.settings.spark_shuffle_partitions)

    def publish(self, parsed: Parsed, th, clock: IngestClock, batch_id: int, cut: float | None,
                where: dict | None, rows: int) -> int:
        """Counts to the channel (see the module docstring); returns the late events."""
        from pyspark.sql import functions as F

        options = {**self.settings.spark_kafka_options(), "topic": self.counts_topic}
        sink = f"{self.counts_topic}-ingest"
        base = channel.Header(batch=batch_id, watermark_before=cut, watermark=clock.watermark, source=where)
        digest = thresholds_digest(th.doc)
        if digest != clock.thresholds_sent:
            msgs = channel.thresholds_messages(th.doc, base, self.shards, self.partitions)
            self._publish_driver(msgs, channel.record_timestamp_ms(cut, after=True), batch_id, options,
                                 sink + "-thresholds")
            clock.thresholds_sent = digest
        counts = windows.bucket_counts(parsed.events, th.window_slide_s, th.error_status_min, KINDS)
        counts = counts.select("kind", channel.shard_column(F.col("key"), self.shards).alias("shard"),
                               "key", "bucket", "n", "e") \
            .repartition(self._publishing_tasks(rows), "kind", "shard")
        publish = _task_publisher(options, sink + "-counts", batch_id, base, th.window_length_s,
                                  self.shards, self.partitions)
        late = sum(int(r["late"]) for r in counts.mapInArrow(publish, "records long, late long").collect())
        self._publish_driver([channel.clock_message(base, self.partitions)],
                             channel.record_timestamp_ms(clock.watermark), batch_id, options, sink + "-clock")
        return late

    def open_gate(self, batch_id: int) -> None:
        """The batch is out, its clock last: the stateful query may read up to here (``gate``)."""
        try:
            self._write_gate(batch_id)
        except Exception as exc:  # noqa: BLE001 - without a gate the stateful query reads everything
            log.warning("batch %d: cannot move the channel gate (%s): the stateful query reads past it",
                        batch_id, _one_line(exc))
            with contextlib.suppress(OSError):
                self.gate_path.unlink()

    def hold_gate(self) -> None:
        """At start, when there is no gate: one where the channel ends now, so that the
        stateful query does not read the first batch's messages as they land (an empty
        first batch, or a slow one, would otherwise let it split that batch in two)."""
        if self.gate_path.exists():
            return
        try:
            self._write_gate(-1)
        except Exception as exc:  # noqa: BLE001 - it only groups: the first batch opens it
            log.warning("cannot set the channel gate at start (%s)", _one_line(exc))

    def _write_gate(self, batch_id: int) -> None:
        from chaussettes.spark_kafka.reader import OffsetClient, ReadConfig

        if self._channel_offsets is None:
            self._channel_offsets = OffsetClient(ReadConfig.parse({
                **self.settings.spark_kafka_options(), "subscribe": self.counts_topic}, streaming=True))
        ends = self._channel_offsets.ends()
        gate.write(self.gate_path, batch_id, {p: hi for (_, p), (_, hi) in ends.items()})

    def close(self) -> None:
        if self._channel_offsets is not None:
            self._channel_offsets.close()
            self._channel_offsets = None

    @staticmethod
    def _publish_driver(messages, stamp: int, batch_id, options, sink_id) -> None:
        """A message or two (the clock, the thresholds) from the driver itself, exactly once
        per batch as ``write_batch`` does, without its Spark job (on the alerts' path)."""
        import pyarrow as pa

        from chaussettes.spark_kafka.writer import WriteConfig, publish_table

        cfg = WriteConfig.parse({**options, "exactlyOnce": "true"})
        publish_table(cfg, sink_id, 0, batch_id, pa.Table.from_batches([_records(messages, stamp)]))

    def write_files(self, parsed: Parsed, clock: IngestClock, batch_id: int, partitions: list[dict],
                    where: dict | None, bad: int, good: int) -> None:
        try:
            write_outputs(self.settings, parsed.rows, batch_id, partitions, bad, good,
                          archive=self.cfg.archive)
        except Exception as exc:  # noqa: BLE001 - files never stop the alerts: kept for a retry
            reason = _one_line(exc)
            log.error("batch %d: file outputs failed, kept for a retry: %s", batch_id, reason)
            clock.pending_files.append({"batch": batch_id, "origin": where, "error": reason})
            if len(clock.pending_files) > MAX_PENDING_FILES:
                lost = clock.pending_files.pop(0)
                log.error("batch %d: its file outputs are given up (more than %d batches wait)",
                          lost["batch"], MAX_PENDING_FILES)

    def retry_files(self, clock: IngestClock) -> None:
        """Batches whose files failed, oldest first, read again from their origin."""
        from pyspark.sql import functions as F

        while clock.pending_files:
            item = clock.pending_files[0]
            lines = source_mod.reread(self.spark, self.settings, item["origin"])
            if lines is None:
                log.error("batch %d: its lines cannot be read again (%s): its file outputs are lost",
                          item["batch"], self.cfg.source)
                clock.pending_files.pop(0)
                continue
            again = Parsed(lines)
            try:
                rows = again.rows.cache()
                parts = [r.asDict() for r in rows.groupBy("topic", "partition").agg(
                    *_span(F.col("reason").isNull())).collect()]
                bad = sum(int(p["bad"]) for p in parts)
                write_outputs(self.settings, rows, item["batch"], parts, bad, sum(p["rows"] for p in parts) - bad,
                              archive=self.cfg.archive)
                rows.unpersist()
            except Exception as exc:  # noqa: BLE001 - still failing: try again next batch
                item["error"] = _one_line(exc)
                log.warning("batch %d: file outputs still failing: %s", item["batch"], item["error"])
                return
            finally:
                again.release()
            log.info("batch %d: file outputs written on retry", item["batch"])
            clock.pending_files.pop(0)

    def console(self, events, th, watermark: float | None, batch_id: int) -> None:
        """Print the per-window table (window, status, error_count, unique_ips) of the
        windows this batch touched, counted over the whole window so far."""
        from pyspark.sql import functions as F

        from chaussettes.detector.alerts import iso

        length, slide, esm = th.window_length_s, th.window_slide_s, th.error_status_min
        win = F.window("event_time", f"{length} seconds", f"{slide} seconds")
        rows = events.where(F.col("status") >= F.lit(esm)).groupBy(win.alias("w"), "status").agg(
            F.count(F.lit(1)).alias("n"), F.collect_set("ip").alias("ips"),
        ).select(F.unix_seconds("w.start").alias("ws"), F.unix_seconds("w.end").alias("we"),
                 "status", "n", "ips").collect()
        touched = set()
        for r in rows:
            key = (int(r["ws"]), int(r["we"]), int(r["status"]))
            if watermark is not None and key[1] <= watermark:
                continue
            entry = self.console_sets.setdefault(key, [0, set()])
            entry[0] += int(r["n"])
            entry[1].update(r["ips"])
            touched.add(key)
        if watermark is not None:
            for key in [k for k in self.console_sets if k[1] <= watermark]:
                del self.console_sets[key]
        lines = [f"-------- batch {batch_id} --------",
                 f"{'window':<41} {'status':>6} {'error_count':>11} {'unique_ips':>10}"]
        for key in sorted(touched):
            n, ips = self.console_sets[key]
            window = f"{iso(key[0])} .. {iso(key[1])[11:]}"
            lines.append(f"{window:<41} {key[2]:>6} {n:>11} {len(ips):>10}")
        print("\n".join(lines), flush=True)


def write_outputs(settings, rows, batch_id: int, partitions: list[dict], bad: int, good: int,
                  archive: bool) -> None:
    """Quarantine, archive and error events of a parsed batch (``Parsed.rows``)."""
    from pyspark.sql import functions as F

    now = dt.datetime.now(dt.UTC)
    if bad:
        write_partitioned(sparkparse.quarantine_of(rows, F.lit(now.replace(tzinfo=None))), settings.quarantine_dir,
                          "json", batch_id, "quarantined_at", single=hour_partition(now.timestamp(), now.timestamp()))
    if good and archive:
        first = min((p["min_ts"] for p in partitions if p.get("min_ts") is not None), default=None)
        last = max((p["max_ts"] for p in partitions if p.get("max_ts") is not None), default=None)
        hour = hour_partition(first, last)  # usually one hour: no partitioning sort
        events = sparkparse.events_of(rows)
        write_partitioned(events, settings.archive_dir, "parquet", batch_id, "event_time", hour)
        esm = settings.error_status_min
        write_partitioned(events.where(F.col("status") >= F.lit(esm)), settings.data_dir / "errors", "json",
                          batch_id, "event_time", hour)


def _span(good, with_rows: bool = True) -> list:
    """Aggregates of a batch's rows: rows and refused (``bad``) when asked, and the
    event-time span (epoch s) of the ``good`` ones."""
    from pyspark.sql import functions as F

    t = F.unix_micros("event_time")
    span = [(F.max(F.when(good, t)) / F.lit(1e6)).alias("max_ts"),
            (F.min(F.when(good, t)) / F.lit(1e6)).alias("min_ts")]
    if not with_rows:
        return span
    return [F.count(F.lit(1)).alias("rows"), F.sum((~good).cast("long")).alias("bad"), *span]


def _task_publisher(options: dict, sink_id: str, batch_id: int, base, length_s: int, shards: int,
                    partitions: int):
    """The ``mapInArrow`` function that publishes one Spark partition's counts in one
    transaction (``spark_kafka.writer.publish_once``: a replayed batch publishes nothing)."""

    def publish(batches):
        import pyarrow as pa
        import pyarrow.compute as pc
        from pyspark import TaskContext

        from chaussettes.spark_kafka.writer import WriteConfig, publish_once

        sparkworker.settle()
        got = [b for b in batches if b.num_rows]
        table = pa.Table.from_batches(got) if got else None
        late = 0
        messages = []
        if table is not None and table.num_rows:
            if base.watermark_before is not None:
                live = pc.greater(pc.add(table.column("bucket"), length_s), base.watermark_before)
                dead = table.filter(pc.invert(live))
                late = int(pc.sum(dead.filter(pc.equal(dead.column("kind"), "global")).column("n")).as_py() or 0)
                table = table.filter(live)
            messages = channel.group_messages(table, base, shards, partitions)
        out = _records(messages, channel.record_timestamp_ms(base.watermark_before, after=True))
        cfg = WriteConfig.parse({**options, "exactlyOnce": "true"})
        # a fresh producer per task: Spark may run this partition in another Python worker
        # next batch, and a producer kept here would then be fenced by that one's
        records, _ = publish_once(cfg, sink_id, TaskContext.get().partitionId(), batch_id, iter([out]))
        yield pa.RecordBatch.from_pydict({"records": [records], "late": [late]})

    return publish


def _records(messages, stamp: int):
    """Channel messages (key, value, partition) as the Arrow batch the Kafka writer publishes."""
    import pyarrow as pa

    return pa.RecordBatch.from_pydict({
        "key": pa.array([m[0] for m in messages], pa.string()),
        "value": pa.array([m[1] for m in messages], pa.binary()),
        "partition": pa.array([m[2] for m in messages], pa.int32()),
        "timestamp": pa.array([stamp] * len(messages), pa.int64())})


def _end_offsets(partitions: list[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for p in partitions:
        if p.get("topic") is not None and p.get("partition") is not None and p.get("max_offset") is not None:
            out.setdefault(p["topic"], {})[str(p["partition"])] = int(p["max_offset"]) + 1
    return out


def _iso_or_none(ts: float | None) -> str | None:
    from chaussettes.detector.alerts import iso

    return iso(ts) if ts is not None else None


def _one_line(exc: BaseException) -> str:
    from chaussettes.detector.pipeline import failure_message

    return failure_message(exc)
