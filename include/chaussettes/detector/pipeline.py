"""The streaming detector: two Structured Streaming queries in one Spark application.

::

    source ──▶ ingest (foreachBatch) ──▶ channel topic ──▶ stateful (transformWithStateInPandas)
                │ parse once, count per (kind, key, slide)        │ window counts, judging,
                │ per-partition watermark                        │ incidents: Spark's state store
                └ quarantine, archive, errors (retried)          └▶ foreachBatch: explain, publish
                                                                     on `alerts` exactly once

- ``ingest.IngestBatch``: the lines of a micro-batch, parsed once, become counts per (kind,
  key, slide-sized bucket) summed in the JVM and published on the detector's own channel
  topic (``channel``), then the file outputs. The driver sees a summary per source
  partition, never a row per key.
- ``stateful.WindowStateProcessor``: keyed by (kind, shard), keeps the windows' counts
  and the open incidents in the RocksDB state store, judges the windows each batch
  changed (``judge.evaluate``) and emits incident events (``chaussettes.incidents``).
- ``sink.IncidentSink``: explains the events and publishes them exactly once.
- ``gate``: the stateful query's micro-batches end where the ingest's last published batch
  ends (a file beside the ingest's clocks), so one of them holds whole ingest batches;
  ``recent``: the ingest's last batches' error lines stay cached for the explanations.

Why two queries: Structured Streaming cannot count a micro-batch without state, and a
stateful step cannot follow ``foreachBatch``; the channel joins them, exactly once on
both sides, and the file outputs of the ingest never hold an incident back.

Checkpoint (``--checkpoint DIR``): ``ingest/`` (Spark's and the ingest's clock),
``state/`` (the stateful query, its state store included) and ``LAYOUT``. A checkpoint of
the detector before this layout is refused with a one-line error, never reset.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from chaussettes import artifacts, durations, sparkparse
from chaussettes import thresholds as thresholds_mod
from chaussettes.detector import ingest as ingest_mod
from chaussettes.detector.source import read_source
from chaussettes.detector.status import StatusWriter

log = logging.getLogger("chaussettes.detector")

# The parser's full-rules branch is a long chain of wide projections: whole-stage code
# generation of it exceeds the JVM's 64 KB method limit (Spark then logs an ERROR, wastes
# seconds compiling and falls back). Operators wider than maxFields are run without it;
# the fast path and the aggregations stay well below.
# The cached batch lives a few seconds: compressing it costs more than it saves (profiled:
# the compressibility statistics alone were a tenth of the detector's CPU). Adaptive
# execution re-plans between stages: a cost with a batch's tiny shuffles, no gain (and the
# channel's publishing tasks must be the same on a replay). zstd: a smaller archive, and
# cheaper to write here than snappy. Event times as Parquet's INT64 microseconds, not the
# legacy INT96 (Spark's default): the archive's write 8% faster (1M events, best of 6),
# and what Spark, DuckDB and pyarrow read natively (an archive with files of both reads
# alike). The state store: RocksDB (it ships in the pyspark wheel) with changelog
# checkpointing (a batch writes what changed, not a snapshot) and a bounded memory (block
# cache and write buffers share one budget per executor): 64 MB, since a budget is filled
# by many keys and not by few (the same 3M events with 1M client IPs vs 1k: the driver's
# peak +290 MB at 128 MB, +170 to +300 MB over eight runs at 64, no slower; 32 was no
# lower).
DETECTOR_SPARK_CONF = {
    # the stateful query runs a batch without new input when the watermark moved: its
    # event-time timers (incidents to resolve, buckets to free) fire then, not a batch later
    "spark.sql.streaming.noDataMicroBatches.enabled": "true",
    "spark.sql.codegen.maxFields": "40",
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.parquet.compression.codec": "zstd",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.streaming.stateStore.providerClass":
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    "spark.sql.streaming.stateStore.rocksdb.boundedMemoryUsage": "true",
    "spark.sql.streaming.stateStore.rocksdb.maxMemoryUsageMB": "64",
    "spark.sql.streaming.stateStore.rocksdb.trackTotalNumberOfRows": "false",
}
# Records per micro-batch when catching up: each batch has a fixed cost (a few jobs, file
# commits), so bigger batches go faster while a batch's cache still fits Spark's default
# 1 GiB driver. Live traffic makes far smaller batches: this only bounds a backlog.
MAX_OFFSETS_PER_TRIGGER = 1_000_000
STATEFUL_TRIGGER = "1 second"  # how soon the stateful query sees what the ingest published
LAYOUT = "2"  # the checkpoint layout this detector writes


@dataclass
class DetectorConfig:
    source: str = "kafka"  # kafka | socket | files
    trigger: str = "10s"  # "<n>s" or "available-now"
    checkpoint: Path | None = None
    thresholds: Path | None = None  # pin a file; else the artifact store's current version
    input: Path | None = None  # files source
    socket: str | None = None  # host:port
    topic: str | None = None  # default settings.topic_logs
    alerts_topic: str | None = None  # default settings.topic_alerts
    max_offsets_per_trigger: int | None = MAX_OFFSETS_PER_TRIGGER
    max_files_per_trigger: int | None = None
    starting_offsets: str = "earliest"
    # Offsets checkpointed beyond a topic's end (the topic was emptied): fail (True) or go on
    # from the start of the new data (False); see chaussettes.spark_kafka's reader.
    fail_on_data_loss: bool = True
    console: bool = False
    archive: bool = True
    master: str | None = None  # None: spark-submit's --master


class DetectorStopped(RuntimeError):
    """``stop`` came before a query could start."""


class CheckpointError(RuntimeError):
    """The checkpoint folder cannot be used by this detector (one line says why)."""


def trigger_seconds(text: str) -> float | None:
    """Seconds of a '10s' / '500ms' / '2m' trigger, None for available-now."""
    return durations.trigger_seconds(text)


def check_checkpoint(checkpoint: Path) -> None:
    """Refuse a checkpoint written by an older detector (its state cannot be read here)."""
    marker = checkpoint / "LAYOUT"
    if marker.is_file():
        found = marker.read_text().strip()
        if found != LAYOUT:
            raise CheckpointError(f"checkpoint {checkpoint} has layout {found}, this detector writes {LAYOUT}: "
                                  "start on a new --checkpoint (nothing was reset)")
        return
    old = [p for p in ("spark", "detector") if (checkpoint / p).exists()]
    if old:
        raise CheckpointError(
            f"checkpoint {checkpoint} was written by an older detector (its window state was a "
            f"pandas pickle in {checkpoint / 'detector'}): start on a new --checkpoint, or delete "
            "this folder to re-read the topic from its start (nothing was reset)")
    checkpoint.mkdir(parents=True, exist_ok=True)
    marker.write_text(LAYOUT + "\n")


def counts_topic(settings, cfg: DetectorConfig) -> str:
    """The channel topic: settings' when set, else named after the alerts topic (one
    detector per alerts topic)."""
    return settings.topic_window_counts or f"{cfg.alerts_topic or settings.topic_alerts}-window-counts"


class Detector:
    """The two queries (see the module docstring): built, started, awaited, stopped."""

    def __init__(self, spark, settings, cfg: DetectorConfig, status: StatusWriter):
        from chaussettes.topics import ensure_topics

        self.spark, self.settings, self.cfg, self.status = spark, settings, cfg, status
        self.checkpoint = Path(cfg.checkpoint or (settings.checkpoint_dir / "detector"))
        check_checkpoint(self.checkpoint)
        for key, value in DETECTOR_SPARK_CONF.items():  # also on a session built elsewhere
            spark.conf.set(key, value)
        self.counts_topic = counts_topic(settings, cfg)
        ensure_topics(settings, {self.counts_topic: settings.window_counts_partitions})
        path_fn = (lambda: cfg.thresholds) if cfg.thresholds else \
            (lambda: artifacts.resolve_thresholds(settings))
        self.watcher = thresholds_mod.ThresholdsWatcher(path_fn)
        from chaussettes.detector.recent import RecentErrors
        from chaussettes.detector.sink import IncidentSink

        self.recent = RecentErrors()  # the ingest's last batches' error lines, for the sink's explanations
        self.ingest = ingest_mod.IngestBatch(spark, settings, cfg, self.checkpoint, status, self.watcher,
                                             self.counts_topic, self.recent)
        self.sink = IncidentSink(spark, settings, status, cfg.alerts_topic or settings.topic_alerts, self.recent)
        self.queries: list = []
        self.stopped = threading.Event()
        # set before any of its queries is stopped (``stop``, or the other query ended): their
        # interrupted batches then end as stops, not failures (``stoppable``)
        self.halting = threading.Event()
        self._starting = threading.Lock()  # a stop while a query starts waits for it, then stops it

    @property
    def available_now(self) -> bool:
        return trigger_seconds(self.cfg.trigger) is None

    def start_ingest(self):
        lines = sparkparse.fast_of(read_source(self.spark, self.settings, self.cfg), "value",
                                   refuse=ingest_mod.future())
        writer = lines.writeStream.queryName("chaussettes_ingest").foreachBatch(stoppable(self.ingest, self.halting)) \
            .option("checkpointLocation", str(self.checkpoint / "ingest" / "spark"))
        seconds = trigger_seconds(self.cfg.trigger)
        writer = writer.trigger(availableNow=True) if seconds is None else \
            writer.trigger(processingTime=f"{int(seconds * 1000)} milliseconds")
        return self._start(writer)

    def start_stateful(self):
        from pyspark.sql import functions as F

        from chaussettes import spark_kafka
        from chaussettes.detector import channel, gate
        from chaussettes.detector.stateful import OUTPUT_SCHEMA, WindowStateProcessor

        spark_kafka.register(self.spark)
        self.spark.dataSource.register(gate.ChannelSource)
        reader = self.spark.readStream.format(gate.ChannelSource.name())
        for k, v in self.settings.spark_kafka_options().items():
            reader = reader.option(k, v)
        counts = reader.option(gate.GATE_OPTION, str(self.ingest.gate_path)) \
            .option("subscribe", self.counts_topic).option("startingOffsets", "earliest") \
            .option("failOnDataLoss", str(self.cfg.fail_on_data_loss).lower()).load()
        key = F.split(F.col("key").cast("string"), ":")
        groups = counts.select(key.getItem(0).alias("kind"), key.getItem(1).cast("int").alias("shard"),
                               "value", "timestamp") \
            .withWatermark("timestamp", f"{channel.STAMP_SLACK_S} seconds")
        out = groups.groupBy("kind", "shard").transformWithStateInPandas(
            WindowStateProcessor(), OUTPUT_SCHEMA, "Append", "EventTime")
        writer = out.writeStream.queryName("chaussettes_incidents").foreachBatch(stoppable(self.sink, self.halting)) \
            .option("checkpointLocation", str(self.checkpoint / "state" / "spark"))
        writer = writer.trigger(availableNow=True) if self.available_now else \
            writer.trigger(processingTime=STATEFUL_TRIGGER)
        return self._start(writer)

    def _start(self, writer):
        """Start a query unless ``stop`` came first (then it ends ``run`` at once)."""
        with self._starting:
            if self.stopped.is_set():
                raise DetectorStopped("stopped before its queries started")
            query = writer.start()
            self.queries.append(query)
            return query

    def run(self) -> None:
        """Until the input is done (available-now), a query fails, or ``stop``: a query that
        ``stop`` interrupts (in its start-up, say) ends with an error of Spark's, not a failure."""
        try:
            self._run()
        except Exception as exc:
            if not self.stopped.is_set():
                raise
            log.info("detector stopped (%s)", failure_message(exc))
        finally:
            self.recent.clear()
            self.ingest.close()

    def _run(self) -> None:
        self.ingest.hold_gate()
        if self.available_now:
            # the stateful query reads what the ingest published: it runs once that is all out
            self.start_ingest().awaitTermination()
            self.start_stateful().awaitTermination()
            return
        # awaitAnyTermination returns at once if any query of the session ended before (an
        # earlier detector on the same session): only these two count
        self.spark.streams.resetTerminated()
        self.start_ingest()
        self.start_stateful()
        self.spark.streams.awaitAnyTermination()
        self._stop_queries()  # one ended (stopped or failed): the other goes too
        for q in self.queries:
            if q.exception() is not None:
                raise q.exception()

    def stop(self) -> None:
        with self._starting:
            self.stopped.set()
        self._stop_queries()

    def _stop_queries(self) -> None:
        self.halting.set()
        for q in self.queries:
            try:
                if q.isActive:
                    q.stop()
            except Exception as exc:  # noqa: BLE001
                log.debug("stopping %s: %s", q.name, exc)


class BatchStopped(RuntimeError):
    """A micro-batch interrupted by the detector's stop (it is not committed: redone on restart)."""


def stoppable(batch_fn, stopping: threading.Event):
    """``batch_fn`` for ``foreachBatch``, failing in a few words once the detector stops.

    ``stop`` interrupts the running batch: its Spark call fails, and Spark (4.2) tells a stop
    from a failure by matching the Python error's text against a regular expression
    (``StreamExecution.PROXY_ERROR``: ``...while calling((.|\\r\\n|\\r|\\n)*)(java.lang.
    InterruptedException|...)``) that recurses once per character. That text carries the
    whole Java stack trace: the query's thread overflowed its stack and died with a
    StackOverflowError (a thousand-line trace in the log at every stop) instead of stopping.
    Here an error raised once ``stopping`` is set becomes one short line in the words that
    expression looks for; before it, every error goes out as it is."""

    def call(df, batch_id: int) -> None:
        try:
            batch_fn(df, batch_id)
        except Exception as exc:
            if not stopping.is_set():
                raise
            raise BatchStopped(f"py4j.protocol.Py4JJavaError: An error occurred while calling batch {batch_id}\n"
                               f": java.lang.InterruptedException: the detector stopped ({type(exc).__name__})") from None

    return call


def run_in_thread(detector: Detector) -> tuple[threading.Thread, list[BaseException]]:
    """``detector.run`` in a daemon thread, for a program that embeds the detector (the
    tests, the benchmarks); the list receives what it raised."""
    failed: list[BaseException] = []

    def run():
        try:
            detector.run()
        except BaseException as exc:  # noqa: BLE001 - the caller reads it
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, failed


def failure_message(exc: BaseException) -> str:
    """One line for the status and the log: the Python error at the root of a Spark
    failure (a data source's own message) rather than the head of Spark's wrapper text."""
    text = str(exc)
    causes = re.findall(r"(?m)^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$", text)
    if causes:
        name, message = causes[-1]
        return f"{name}: {message.strip()}"[:500]
    return " ".join(text.split())[:500]


def run(settings, cfg: DetectorConfig) -> int:
    """Run the detector until the input is done (available-now) or a signal stops it."""
    from chaussettes.metrics import start_detector_metrics
    from chaussettes.sparkconf import build_session

    status = StatusWriter(settings.detector_status_path, source=cfg.source, settings=settings,
                          topic=(cfg.topic or settings.topic_logs) if cfg.source == "kafka" else None)
    status.observer = start_detector_metrics(settings)
    status.starting()
    spark = build_session("chaussettes-detector", settings, master=cfg.master, extra=DETECTOR_SPARK_CONF)
    spark.sparkContext.setLogLevel("WARN")
    detector = None
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        stop_requested.set()
        if detector is not None:
            threading.Thread(target=detector.stop, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        detector = Detector(spark, settings, cfg, status)
        if stop_requested.is_set():  # a signal while Spark started: the handler saw no detector
            detector.stop()
        detector.run()
        status.finished("stopped")
        return 0
    except Exception as exc:  # noqa: BLE001 - reported in the status and as one line
        if stop_requested.is_set():
            status.finished("stopped")
            return 0
        message = failure_message(exc)
        status.finished("failed", error=message)
        print(f"error: detector failed: {message}", file=sys.stderr)
        return 1
    finally:
        status.close()
        try:
            spark.stop()
        except Exception as exc:  # noqa: BLE001
            log.debug("stopping Spark: %s", exc)


__all__ = ["Detector", "DetectorConfig", "read_source", "run", "run_in_thread", "trigger_seconds"]
