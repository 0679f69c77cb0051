"""The streaming detector: source → parse → (quarantine, archive, windowed rates) → alerts.

One Structured Streaming query reads the lines once and hands each micro-batch to
``BatchProcessor`` (``foreachBatch``), which, in order:

1. reloads the thresholds if a new version is in force (``thresholds.ThresholdsWatcher``
   over ``artifacts.current_thresholds_path``; a bad file is rejected, the last good
   version stays, the reason goes to the log and the status);
2. parses natively (``sparkparse``): the fast path is part of the query's plan
   (``build_query``: built once, not per batch); its result is cached (without the raw
   line of the rows it parsed) and one aggregation over it gives the batch summary; the
   full rules are planned (and cached) only for the lines the fast path refused, when
   there are any;
3. counts the batch's events per (kind, key, window) — the statistic of ``windows``, as
   the calibration does: Spark's bucket counts summed into windows by ``windows.window_sums``
   (``batch_rates``) — and adds them to the window state (``state.DetectorState``,
   checkpointed per batch) so every touched window has its full count so far;
4. judges the touched windows with the rule of ``judge.judge_one`` / ``judge.judge``
   (vectorised over the collected totals): a breach is alerted as soon as it is visible,
   while its window is still open, and only once per (kind, key, window) — alert ids
   already published are in the state;
5. explains the new alerts (top error URLs / IPs / statuses, counted on the driver from
   the error rows of their windows) and publishes them exactly once (``publish``) —
   before the file outputs, so they are not delayed by them — then writes the refused
   lines to the quarantine, the events to the Parquet archive and the error events to
   JSON (``archive.write_partitioned``: restart-safe; a batch within one hour is written
   straight into its partition, without partitioning's sort), saves the state, writes
   the status file and, with ``--console``, prints the per-window table.

Event time: windows end when the watermark (max event time seen - ``watermark_s``) passes
them; events for windows already ended are dropped (counted as late).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from chaussettes import artifacts, sparkparse, windows
from chaussettes import thresholds as thresholds_mod
from chaussettes.detector import alerts as alerts_mod
from chaussettes.detector.archive import hour_partition, write_partitioned
from chaussettes.detector.publish import AlertPublisher, published_ids
from chaussettes.detector.state import DetectorState, StateStore
from chaussettes.detector.status import StatusWriter
from chaussettes.thresholds import KINDS

log = logging.getLogger("chaussettes.detector")

# The parser's full-rules branch is a long chain of wide projections: whole-stage code
# generation of it exceeds the JVM's 64 KB method limit (Spark then logs an ERROR, wastes
# seconds compiling and falls back). Operators wider than maxFields are run without it;
# the fast path and the aggregations stay well below.
# The cached batch lives a few seconds: compressing it costs more than it saves (profiled:
# the compressibility statistics alone were a tenth of the detector's CPU). Adaptive
# execution re-plans between stages: a cost with a batch's tiny shuffles (a few thousand
# bucket counts), no gain. zstd: a smaller archive, and cheaper to write here than snappy.
DETECTOR_SPARK_CONF = {
    "spark.sql.streaming.noDataMicroBatches.enabled": "false",
    "spark.sql.codegen.maxFields": "40",
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.parquet.compression.codec": "zstd",
}
FUTURE_TOLERANCE_S = 300  # event times further ahead than this do not move the watermark
# Records per micro-batch when catching up: each batch has a fixed cost (a few jobs, file
# commits), so bigger batches go faster (500k -> 1M: ~15% more events/s here) while a
# batch's cache still fits Spark's default 1 GiB driver (measured with spark-submit
# defaults: heap peak ~750 MB, JVM RSS 1.15 GiB, young GC pauses under 20 ms). Live traffic
# makes far smaller batches: this only bounds a backlog.
MAX_OFFSETS_PER_TRIGGER = 1_000_000


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


def trigger_seconds(text: str) -> float | None:
    """Seconds of a '10s' / '500ms' / '2m' trigger, None for available-now."""
    t = text.strip().lower()
    if t in ("available-now", "availablenow", "once"):
        return None
    for suffix, factor in (("ms", 0.001), ("s", 1), ("m", 60)):
        if t.endswith(suffix) and t[: -len(suffix)].replace(".", "", 1).isdigit():
            value = float(t[: -len(suffix)]) * factor
            if value <= 0:
                break
            return value
    raise ValueError(f"--trigger {text!r}: expected a duration like 10s, 500ms, 1m, or available-now")


class BatchProcessor:
    """The ``foreachBatch`` function (see the module docstring)."""

    def __init__(self, spark, settings, cfg: DetectorConfig, checkpoint: Path, status: StatusWriter):
        self.spark = spark
        self.settings = settings
        self.cfg = cfg
        self.store = StateStore(checkpoint / "detector")
        self.status = status
        path_fn = (lambda: cfg.thresholds) if cfg.thresholds else \
            (lambda: artifacts.current_thresholds_path(settings))
        self.watcher = thresholds_mod.ThresholdsWatcher(path_fn)
        self.publisher = AlertPublisher(settings, cfg.alerts_topic)
        self.alerts_topic = cfg.alerts_topic or settings.topic_alerts
        self._recovered = False
        self._last_end = time.time()
        self.console_sets: dict[tuple, set] = {}
        self.history: list[dict] = []  # per batch: rows, duration, step times (benchmarks read it)

    # ------------------------------------------------------------------ per batch
    def __call__(self, df, batch_id: int) -> None:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        t0 = time.time()
        th = self.watcher.current()
        state = self.store.load_before(batch_id)
        if not self._recovered:
            # alerts a previous run published but whose batch state it never saved
            state.published.update(published_ids(self.settings, self.alerts_topic,
                                                 newer_than_s=state.watermark))
            self._recovered = True
        length, slide, esm = th.window_length_s, th.window_slide_s, th.error_status_min
        if state.window_spec not in (None, (length, slide)):
            log.warning("window changed from %s to %s: open windows restart", state.window_spec, (length, slide))
            state.windows = state.windows.iloc[0:0]
        state.window_spec = (length, slide)

        # The source is read once: the fast path's result is cached, and one aggregation
        # over it gives the batch summary (rows, offsets, max event time) and tells whether
        # any line needs the full rules. Only then is the (long) full-rules plan built, on
        # those lines only, and cached too. Every output below reads the caches.
        # the query's DataFrame is already fast-parsed (build_query: its plan is built once,
        # not per batch); a plain DataFrame of lines (tests, replays) is parsed here
        if "__fast_ok" not in df.columns:
            df = sparkparse.fast_of(df, "value")
        fast = df.persist(StorageLevel.MEMORY_AND_DISK)
        good, keep = sparkparse.good_of(fast)
        rest = None
        steps: dict[str, float] = {"prepare": round(time.time() - t0, 2)}
        mark = time.time()

        def step(name: str) -> None:
            nonlocal mark
            now_ = time.time()
            steps[name] = round(now_ - mark, 2)
            mark = now_

        try:
            summary = self._summary(fast)
            if any(r["rest"] for r in summary):
                rest = sparkparse.full_rules_of(fast, keep).persist(StorageLevel.MEMORY_AND_DISK)
                self._add_rest_summary(summary, rest)
                parsed = good.unionByName(rest)
            else:
                parsed = good
            step("parse")
            n_rows = sum(r["rows"] for r in summary)
            n_bad = sum(r["bad"] for r in summary)
            n_good = n_rows - n_bad
            max_ts = max((r["max_ts"] for r in summary if r["max_ts"] is not None), default=None)
            min_ts = min((r["min_ts"] for r in summary if r["min_ts"] is not None), default=None)
            for r in summary:
                if r["topic"] is not None and r["partition"] is not None and r["max_offset"] is not None:
                    state.end_offsets.setdefault(r["topic"], {})[str(r["partition"])] = int(r["max_offset"]) + 1
            events = sparkparse.events_of(parsed)

            # alerts first (they are what users wait for), the file outputs after
            touched = self._merge_rates(events, state, length, slide, esm) if n_good else None
            step("rates")
            new_alerts = self._judge(touched, state, th, batch_id) if touched is not None else []
            step("judge")
            if new_alerts:
                self._explain(events, new_alerts, esm, th)
                self.publisher.publish(new_alerts)
                for a in new_alerts:
                    state.published[a["alert_id"]] = int(_epoch(a["window_end"]))
            step("alerts")

            now = dt.datetime.now(dt.UTC)
            if n_bad:
                write_partitioned(sparkparse.quarantine_of(parsed, F.lit(now.replace(tzinfo=None))),
                                  self.settings.quarantine_dir, "json", batch_id, "quarantined_at",
                                  single=hour_partition(now.timestamp(), now.timestamp()))
            if n_good and self.cfg.archive:
                hour = hour_partition(min_ts, max_ts)  # usually one hour: no partitioning sort
                write_partitioned(events, self.settings.archive_dir, "parquet", batch_id, "event_time", hour)
                write_partitioned(events.where(F.col("status") >= F.lit(esm)),
                                  self.settings.data_dir / "errors", "json", batch_id, "event_time", hour)
            step("files")
            if self.cfg.console and n_good:
                self._console(events, state, length, slide, esm, batch_id)

            if max_ts is not None:
                limit = time.time() + FUTURE_TOLERANCE_S
                state.advance_watermark(min(max_ts, limit), th.watermark_s)
            state.evict(length)
            state.batch_id = batch_id
            state.events_total += n_good
            state.quarantined_total += n_bad
            state.alerts_published_total += len(new_alerts)
            self.store.save(state)
            step("save")
        finally:
            if rest is not None:
                rest.unpersist()
            fast.unpersist()
        t1 = time.time()
        since_last = max(t1 - self._last_end, 1e-6)
        self._last_end = t1
        self.status.batch_done(
            batch_id=batch_id, input_rows=n_rows,
            input_rows_per_s=n_rows / since_last, processed_rows_per_s=n_rows / max(t1 - t0, 1e-6),
            state=state, thresholds=th, watcher=self.watcher, alerts_last_batch=len(new_alerts),
            duration_s=t1 - t0,
        )
        steps["status"] = round(time.time() - t1, 2)
        self.history.append({"batch_id": batch_id, "rows": n_rows, "duration_s": round(time.time() - t0, 3),
                             "ended_at": time.time(), "steps": steps})
        del self.history[:-1000]
        log.info("batch %d: %d rows (%d quarantined), %d alerts, %.2fs (%s), thresholds v%s",
                 batch_id, n_rows, n_bad, len(new_alerts), t1 - t0,
                 " ".join(f"{k} {v}s" for k, v in steps.items()), th.version)

    def close(self) -> None:
        """Flush and close the Kafka clients (the status file stays)."""
        try:
            self.publisher.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("closing the alert producer: %s", exc)
        self.status.close()

    # ------------------------------------------------------------------ steps
    def _summary(self, fast) -> list[dict]:
        """Per source partition: rows, rows the fast path refused (``rest``), max offset
        and the max event time of the fast-parsed rows (one job; it fills the cache)."""
        from pyspark.sql import functions as F

        topic, part = _source_partition(fast)
        offset = F.col("offset") if "offset" in fast.columns else F.lit(None).cast("long")
        ok = F.col("__fast_ok")
        rows = fast.groupBy(topic.alias("topic"), part.alias("partition")).agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum((~ok).cast("long")).alias("rest"),
            F.max(F.when(ok, F.unix_micros(F.col("event_time")))).alias("max_us"),
            F.min(F.when(ok, F.unix_micros(F.col("event_time")))).alias("min_us"),
            F.max(offset).alias("max_offset"),
        ).collect()
        out = []
        for r in rows:
            d = r.asDict()
            d["rest"] = int(d["rest"] or 0)
            d["bad"] = 0
            d["max_ts"] = d.pop("max_us") / 1e6 if d["max_us"] is not None else None
            d["min_ts"] = d.pop("min_us") / 1e6 if d["min_us"] is not None else None
            out.append(d)
        return out

    @staticmethod
    def _add_rest_summary(summary: list[dict], rest) -> None:
        """Quarantined rows and max event time of the full-rules rows, into ``summary``."""
        from pyspark.sql import functions as F

        topic, part = _source_partition(rest)
        by_key = {(r["topic"], r["partition"]): r for r in summary}
        for r in rest.groupBy(topic.alias("topic"), part.alias("partition")).agg(
                F.sum(F.col("reason").isNotNull().cast("long")).alias("bad"),
                F.max(F.when(F.col("reason").isNull(), F.unix_micros(F.col("event_time")))).alias("max_us"),
                F.min(F.when(F.col("reason").isNull(), F.unix_micros(F.col("event_time")))).alias("min_us"),
        ).collect():
            d = by_key[(r["topic"], r["partition"])]
            d["bad"] = int(r["bad"] or 0)
            if r["max_us"] is not None:
                ts = r["max_us"] / 1e6
                d["max_ts"] = ts if d["max_ts"] is None else max(d["max_ts"], ts)
            if r["min_us"] is not None:
                ts = r["min_us"] / 1e6
                d["min_ts"] = ts if d["min_ts"] is None else min(d["min_ts"], ts)

    def _merge_rates(self, events, state: DetectorState, length: int, slide: int, esm: int):
        pdf = batch_rates(events, length, slide, esm)
        if state.watermark is not None:
            # windows the watermark has closed take no more events (late data)
            pdf = pdf[pdf["window_end"] > int(state.watermark)]
        if pdf.empty:
            return None
        return state.merge(pdf)

    def _judge(self, touched, state: DetectorState, th, batch_id: int) -> list[dict]:
        """``judge.judge_one``'s rule on every touched window at once (numpy, same IEEE
        double operations: errors / requests, then ``>`` the threshold)."""
        import numpy as np

        out = []
        detected_at = dt.datetime.now(dt.UTC)
        kinds = touched["kind"].astype(object)
        keys = touched["key"].astype(object)
        requests = touched["requests"].to_numpy(dtype=np.int64)
        errors = touched["errors"].to_numpy(dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(requests > 0, errors.astype(np.float64) / np.maximum(requests, 1).astype(np.float64),
                            0.0)
        threshold = kinds.map({k: th.default(k) for k in KINDS}).to_numpy(dtype=np.float64, copy=True)
        for k in ("ip", "url"):
            overrides = th.overrides(k)
            if overrides:
                mask = (kinds == k).to_numpy()
                ov = keys[mask].map(overrides)
                threshold[mask] = np.where(ov.notna().to_numpy(), ov.to_numpy(dtype=np.float64, na_value=0.0),
                                           threshold[mask])
        min_req = kinds.map({k: int(n) for k, n in th.min_requests.items()}).to_numpy(dtype=np.int64)
        judged = requests >= min_req
        breach = judged & (rate > threshold)
        state.evaluations_total += int(judged.sum())
        starts = touched["window_start"].to_numpy(dtype=np.int64)
        ends = touched["window_end"].to_numpy(dtype=np.int64)
        for i in np.flatnonzero((kinds == "global").to_numpy()):
            state.recent_global[int(starts[i])] = {
                "window_start": alerts_mod.iso(int(starts[i])), "window_end": alerts_mod.iso(int(ends[i])),
                "requests": int(requests[i]), "errors": int(errors[i]),
                "error_rate": float(rate[i]), "threshold": float(threshold[i]),
            }
        for i in np.flatnonzero(breach):
            kind, key, ws, we = kinds.iat[i], keys.iat[i], int(starts[i]), int(ends[i])
            aid = alerts_mod.alert_id(kind, key, ws, we)
            if aid in state.published:
                continue
            out.append(alerts_mod.build_alert(
                kind=kind, key=key, window_start=ws, window_end=we,
                requests=int(requests[i]), errors=int(errors[i]), threshold=float(threshold[i]),
                thresholds_version=th.version, detected_at=detected_at,
            ))
        out.sort(key=lambda a: (a["window_start"], a["kind"], a["key"]))
        return out

    def _explain(self, events, new_alerts: list[dict], esm: int, th) -> None:
        """Top error URLs / IPs / statuses of each alert's window, from this batch's events
        (the batch that made the breach visible), then rebuild the explanation text.

        One Spark stage, no shuffle: the error events that can belong to an alert (in the
        alerts' time span; of an alerted IP or URL unless an alert is global) come back to
        the driver (Arrow) and are counted there (``_top_errors``) — cheaper than a join,
        an aggregation and a sort in Spark, each one more job."""
        from pyspark.sql import functions as F

        spans = [(a, int(_epoch(a["window_start"]) * 1e6), int(_epoch(a["window_end"]) * 1e6)) for a in new_alerts]
        t = F.unix_micros("event_time")
        cond = (F.col("status") >= F.lit(esm)) & (t >= F.lit(min(s for _, s, _ in spans))) \
            & (t < F.lit(max(e for _, _, e in spans)))
        if not any(a["kind"] == "global" for a in new_alerts):
            keys = F.lit(False)
            for kind in ("ip", "url"):
                wanted = sorted({a["key"] for a in new_alerts if a["kind"] == kind})
                if wanted:
                    keys = keys | F.col(kind).isin(wanted)
            cond = cond & keys
        errors = events.where(cond).select(t.alias("t"), "ip", "url", F.col("status").cast("string").alias("status"))
        tops = _top_errors(errors.toPandas(), spans)
        for a in new_alerts:
            a["explanation"] = alerts_mod.explanation(a["kind"], a["key"], a["requests"], a["errors"],
                                                      a["error_rate"], a["threshold"], tops.get(a["alert_id"]))

    def _console(self, events, state: DetectorState, length: int, slide: int, esm: int, batch_id: int) -> None:
        """Print the per-window table (window, status, error_count, unique_ips) of the
        windows this batch touched, counted over the whole window so far."""
        from pyspark.sql import functions as F

        win = F.window("event_time", f"{length} seconds", f"{slide} seconds")
        rows = events.where(F.col("status") >= F.lit(esm)).groupBy(win.alias("w"), "status").agg(
            F.count(F.lit(1)).alias("n"), F.collect_set("ip").alias("ips"),
        ).select(F.unix_seconds("w.start").alias("ws"), F.unix_seconds("w.end").alias("we"),
                 "status", "n", "ips").collect()
        touched = set()
        for r in rows:
            key = (int(r["ws"]), int(r["we"]), int(r["status"]))
            if state.watermark is not None and key[1] <= state.watermark:
                continue
            entry = self.console_sets.setdefault(key, [0, set()])
            entry[0] += int(r["n"])
            entry[1].update(r["ips"])
            touched.add(key)
        if state.watermark is not None:
            for key in [k for k in self.console_sets if k[1] <= state.watermark]:
                del self.console_sets[key]
        lines = [f"-------- batch {batch_id} --------",
                 f"{'window':<41} {'status':>6} {'error_count':>11} {'unique_ips':>10}"]
        for key in sorted(touched):
            n, ips = self.console_sets[key]
            window = f"{alerts_mod.iso(key[0])} .. {alerts_mod.iso(key[1])[11:]}"
            lines.append(f"{window:<41} {key[2]:>6} {n:>11} {len(ips):>10}")
        print("\n".join(lines), flush=True)


def batch_rates(events, length: int, slide: int, esm: int):
    """The batch's counts per (kind, key, window) as pandas: window_start / window_end in
    epoch seconds, requests, errors — ``windows.windowed_rates_batch``'s rows.

    Spark only counts per (kind, key, slide-sized bucket) — a few thousand rows for a
    batch of any size — and the driver sums each window once from those counts
    (``windows.window_sums``, numpy): two Spark stages fewer per batch than summing them
    in Spark. ``length`` is a multiple of ``slide`` (``thresholds.validate`` refuses other
    windows)."""
    import numpy as np
    import pandas as pd

    if length % slide:
        raise ValueError(f"window length {length}s is not a multiple of its slide {slide}s")
    columns = ["kind", "key", "window_start", "window_end", "requests", "errors"]
    counts = windows._bucket_counts(events, slide, esm, KINDS).toPandas()
    if counts.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("kind", "key") else "int64") for c in columns})
    counts = counts.sort_values(["kind", "key", "bucket"], ignore_index=True)
    group, firsts = pd.MultiIndex.from_frame(counts[["kind", "key"]]).factorize()
    g, start, n, e = windows.window_sums(group, counts["bucket"].to_numpy(np.int64) // slide,
                                         counts["n"], counts["e"], length // slide)
    start_s = start * slide
    return pd.DataFrame({"kind": firsts.get_level_values(0).to_numpy()[g],
                         "key": firsts.get_level_values(1).to_numpy()[g],
                         "window_start": start_s, "window_end": start_s + length,
                         "requests": n, "errors": e})


def _source_partition(df):
    """(topic, partition) columns of a batch; nulls for sources without them (files, socket)."""
    from pyspark.sql import functions as F

    topic = F.col("topic") if "topic" in df.columns else F.lit(None).cast("string")
    part = F.col("partition") if "partition" in df.columns else F.lit(None).cast("int")
    return topic, part


def _top_errors(pdf, spans) -> dict[str, dict[str, list[tuple[str, int]]]]:
    """alert_id -> dimension -> the ``TOP_N`` (value, count) of the error rows ``pdf``
    (columns t in epoch µs, ip, url, status) in each alert's window and of its key; count
    descending, then value. Counted once per (window, kind, dimension) for all the alerts
    that share it: a global spike can raise hundreds of alerts in one batch."""
    by_window: dict[tuple[int, int], list[dict]] = {}
    for a, ws, we in spans:
        by_window.setdefault((ws, we), []).append(a)
    tops: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for (ws, we), group in by_window.items():
        rows = pdf[(pdf["t"] >= ws) & (pdf["t"] < we)]
        for kind in ("global", "ip", "url"):
            ids = {a["key"]: a["alert_id"] for a in group if a["kind"] == kind}
            if not ids:
                continue
            for dim in alerts_mod.EXPLAIN_DIMS[kind]:
                if kind == "global":
                    sub = rows[[dim]].dropna().assign(k="*")
                else:
                    sub = rows.loc[rows[kind].isin(list(ids)), [kind, dim]].dropna().rename(columns={kind: "k"})
                if sub.empty:
                    continue
                counts = sub.groupby(["k", dim]).size().reset_index(name="n")
                counts = counts.sort_values(["k", "n", dim], ascending=[True, False, True], kind="stable")
                for key, part in counts.groupby("k", sort=False):
                    top = [(str(v), int(n)) for v, n in zip(part[dim].head(alerts_mod.TOP_N),
                                                            part["n"].head(alerts_mod.TOP_N), strict=True)]
                    tops.setdefault(ids[key], {})[dim] = top
    return tops


def _epoch(iso_text: str) -> float:
    return dt.datetime.fromisoformat(iso_text).timestamp()


# ---------------------------------------------------------------------- the query
def read_source(spark, settings, cfg: DetectorConfig):
    """The streaming DataFrame of lines: ``value`` (+ topic, partition, offset for Kafka)."""
    from pyspark.sql import functions as F

    if cfg.source == "kafka":
        from chaussettes import spark_kafka

        spark_kafka.register(spark)
        reader = spark.readStream.format("kafka")
        for k, v in settings.spark_kafka_options().items():
            reader = reader.option(k, v)
        reader = reader.option("subscribe", cfg.topic or settings.topic_logs) \
            .option("startingOffsets", cfg.starting_offsets) \
            .option("failOnDataLoss", str(cfg.fail_on_data_loss).lower()) \
            .option("kafka.timeout.ms", str(int(settings.kafka_timeout_s * 1000)))
        if cfg.max_offsets_per_trigger:
            reader = reader.option("maxOffsetsPerTrigger", str(int(cfg.max_offsets_per_trigger)))
        return reader.load().select("value", "topic", "partition", "offset")
    if cfg.source == "socket":
        host, _, port = (cfg.socket or "").rpartition(":")
        return spark.readStream.format("socket").option("host", host).option("port", int(port)).load() \
            .select("value")
    if cfg.source == "files":
        reader = spark.readStream.format("text")
        if cfg.max_files_per_trigger:
            reader = reader.option("maxFilesPerTrigger", str(cfg.max_files_per_trigger))
        df = reader.load(str(cfg.input))
        return df.select("value", F.col("_metadata.file_path").alias("topic"))
    raise ValueError(f"unknown source {cfg.source!r}")


def build_query(spark, settings, cfg: DetectorConfig, status: StatusWriter):
    checkpoint = Path(cfg.checkpoint or (settings.checkpoint_dir / "detector"))
    checkpoint.mkdir(parents=True, exist_ok=True)
    for key, value in DETECTOR_SPARK_CONF.items():  # also on a session built elsewhere
        spark.conf.set(key, value)
    lines = sparkparse.fast_of(read_source(spark, settings, cfg), "value")
    processor = BatchProcessor(spark, settings, cfg, checkpoint, status)
    writer = lines.writeStream.queryName("chaussettes_detector").foreachBatch(processor) \
        .option("checkpointLocation", str(checkpoint / "spark"))
    seconds = trigger_seconds(cfg.trigger)
    writer = writer.trigger(availableNow=True) if seconds is None else \
        writer.trigger(processingTime=f"{int(seconds * 1000)} milliseconds")
    return writer.start(), processor


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
    """Run the detector until the query ends (available-now) or a signal stops it."""
    from chaussettes.metrics import start_detector_metrics
    from chaussettes.sparkconf import build_session

    status = StatusWriter(settings.detector_status_path, source=cfg.source, settings=settings,
                          topic=(cfg.topic or settings.topic_logs) if cfg.source == "kafka" else None)
    status.observer = start_detector_metrics(settings)
    status.starting()
    spark = build_session("chaussettes-detector", settings, master=cfg.master,
                          extra=DETECTOR_SPARK_CONF)
    spark.sparkContext.setLogLevel("WARN")
    query = None
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        stop_requested.set()
        if query is not None:
            threading.Thread(target=query.stop, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        query, processor = build_query(spark, settings, cfg, status)
        status.processor = processor
        query.awaitTermination()
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
        if status.processor is not None:
            status.processor.close()
        try:
            spark.stop()
        except Exception as exc:  # noqa: BLE001
            log.debug("stopping Spark: %s", exc)


__all__ = ["BatchProcessor", "DetectorConfig", "build_query", "read_source", "run", "trigger_seconds"]
