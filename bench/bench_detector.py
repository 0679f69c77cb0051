"""Streaming detector benchmarks (``make bench``).

- throughput: N events preloaded in a topic (Combined lines from the generator), the
  detector run with ``availableNow`` and a bounded batch size (``maxOffsetsPerTrigger``)
  on the shared local[2] session, archive on; events/s and its ratio to the raw consume
  rate measured in the same run (``BENCH_DETECTOR_BATCH``, default the detector's
  own, ``pipeline.MAX_OFFSETS_PER_TRIGGER``). ``BENCH_DETECTOR_EVENTS`` sets N (default
  5,000,000). The figure is the steady state: rows of the batches after the first over the time from the end of the
  first batch to the end of the last (the first carries the query start-up); the rate
  of the whole run including start-up is in the note.
  "CPU per event" is the CPU time every process of the run used over the same stretch
  (Spark's JVM, its Python workers, the broker) per event: the load-independent view.
- latency: live traffic from the generator at ``BENCH_DETECTOR_RATE`` lines/s (default
  20,000) with injected incidents (IP flood, URL outage, global spike), detector on the
  default 10 s trigger; time from each incident's start to its first alert read on the
  alerts topic; p50 / p95 / max.
- detection quality on the same run: incidents alerted / incidents, and alerts whose
  window overlaps no incident per 1,000 judged window evaluations.

Each part's note gives the mean per-batch step times (prepare, parse, rates, judge,
alerts, files, save, status) from the detector's batch history; the batch log lines go
to stderr. ``BENCH_DETECTOR_PARTS`` (e.g. ``throughput``) runs only some parts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GEN = [sys.executable, str(REPO / "jobs" / "generate_logs.py")]


def _iso(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def _steps_note(processor) -> str:
    """Mean seconds per batch of each step, over the batches that had rows."""
    hist = [h for h in getattr(processor, "history", []) if h["rows"]]
    if not hist:
        return "no batch"
    names: list[str] = []
    for h in hist:
        names += [k for k in h["steps"] if k not in names]
    mean = {k: sum(h["steps"].get(k, 0.0) for h in hist) / len(hist) for k in names}
    dur = sum(h["duration_s"] for h in hist) / len(hist)
    rows = sum(h["rows"] for h in hist) / len(hist)
    return (f"per batch (mean of {len(hist)}, {rows:,.0f} rows): {dur:.2f}s = "
            + " ".join(f"{k} {v:.2f}" for k, v in mean.items()))


def _log_batches() -> None:
    import logging

    logger = logging.getLogger("chaussettes.detector")
    if not any(getattr(h, "_bench", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        handler._bench = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _run_detector(spark, settings, cfg):
    from chaussettes.detector.pipeline import build_query
    from chaussettes.detector.status import StatusWriter

    status = StatusWriter(settings.detector_status_path, "kafka", settings=settings, topic=cfg.topic)
    status.starting()
    _log_batches()
    query, processor = build_query(spark, settings, cfg, status)
    return query, processor


class _CpuSampler:
    """CPU seconds used by this process and its children (the Spark JVM and its Python
    workers, the broker), sampled every 0.2 s; ``at(t)``: the last sample before t."""

    def __init__(self):
        from chaussettes import procs

        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()

        def run():
            while not self._done.wait(0.2):
                self.samples.append((time.time(), procs.tree_cpu_seconds(os.getpid())))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def at(self, t: float) -> float:
        return max((c for when, c in self.samples if when <= t), default=0.0)


def throughput(ctx) -> list[dict]:
    from chaussettes.detector.pipeline import MAX_OFFSETS_PER_TRIGGER, DetectorConfig

    n = int(os.environ.get("BENCH_DETECTOR_EVENTS", "5000000"))
    batch = int(os.environ.get("BENCH_DETECTOR_BATCH", str(MAX_OFFSETS_PER_TRIGGER)))
    topic, alerts = ctx.new_topic(4), ctx.new_topic(1)
    settings = ctx.settings.replace(home=ctx.tmp / "detector-throughput")
    gen = subprocess.run(GEN + ["--bootstrap-servers", settings.bootstrap_servers, "--topic", topic,
                                "--start-time", "2026-01-01T00:00:00Z", "--rate", "20000", "--count", str(n),
                                "--bad-ips", "2", "--bad-urls", "1", "--seed", "11", "--quiet"],
                         capture_output=True, text=True, timeout=600, check=False)
    if gen.returncode != 0:
        raise RuntimeError(f"generator failed: {gen.stderr[-300:]}")
    spark = ctx.spark()
    cfg = DetectorConfig(source="kafka", trigger="available-now", checkpoint=ctx.tmp / "ckpt-throughput",
                         topic=topic, alerts_topic=alerts, max_offsets_per_trigger=batch)
    cpu = _CpuSampler()
    t0 = time.time()
    query, processor = _run_detector(spark, settings, cfg)
    query.awaitTermination()
    elapsed = time.time() - t0
    cpu.stop()
    processor.close()
    status = json.loads(settings.detector_status_path.read_text())
    rows = status["events_total"] + status["quarantined_total"]
    # steady state: the rows of every batch after the first, over the wall time from the
    # end of the first batch to the end of the last (inter-batch gaps included); the
    # first batch carries the query start, code generation and Python worker start-up
    hist = [h for h in processor.history if h["rows"]]
    if len(hist) >= 2 and all("ended_at" in h for h in hist):
        rate = sum(h["rows"] for h in hist[1:]) / max(hist[-1]["ended_at"] - hist[0]["ended_at"], 1e-6)
    else:
        rate = rows / elapsed
    raw = ctx.raw.get("consume_msgs_per_s")
    note = (f"{rows:,} events preloaded (Combined, 4 partitions), maxOffsetsPerTrigger={batch:,}; steady state "
            f"over batches 2..{len(hist)} (end of batch 1 to end of the last); whole run "
            f"{status['batch_id'] + 1} batches in {elapsed:.1f}s incl. query start = {rows / elapsed:,.0f} events/s; "
            f"archive (Parquet + error JSON) on; "
            f"{status['alerts_published_total']} alerts; {_steps_note(processor)}")
    out = [{"name": "detector throughput", "value": round(rate), "unit": "events/s", "goal": ">= 150000",
            "note": note}]
    if len(hist) >= 2:
        used = cpu.at(hist[-1]["ended_at"]) - cpu.at(hist[0]["ended_at"])
        out.append({"name": "detector CPU per event", "value": round(used / sum(h["rows"] for h in hist[1:]) * 1e6, 2),
                    "unit": "us/event", "goal": None,
                    "note": "steady state (batches 2..), every process of the run: Spark's JVM, its Python "
                            "workers (Kafka reader), the broker; the load-independent view of the rate "
                            f"({used:.1f} CPU-s over {hist[-1]['ended_at'] - hist[0]['ended_at']:.1f} s)"})
    if raw:
        out.append({"name": "detector throughput / raw consume", "value": round(rate / raw, 3), "unit": "ratio",
                    "goal": None, "note": f"raw consume {raw:,.0f} msgs/s in the same run"})
    return out


def latency(ctx) -> list[dict]:
    from chaussettes.detector.pipeline import DetectorConfig
    from confluent_kafka import Consumer, TopicPartition

    rate = int(os.environ.get("BENCH_DETECTOR_RATE", "20000"))
    duration = int(os.environ.get("BENCH_DETECTOR_DURATION", "110"))
    topic, alerts_topic = ctx.new_topic(4), ctx.new_topic(1)
    settings = ctx.settings.replace(home=ctx.tmp / "detector-latency")
    base = ctx.tmp / "detector-latency"
    base.mkdir(parents=True, exist_ok=True)
    scenario = {"incidents": [
        {"name": "flood", "kind": "ip_flood", "start": 20, "duration": 30, "entity": "198.51.100.7",
         "rate": max(rate * 0.01, 30), "error_rate": 0.9},
        {"name": "outage", "kind": "url_outage", "start": 45, "duration": 30, "entity": "/api/v1/checkout",
         "rate": max(rate * 0.01, 30), "error_rate": 0.9},
        {"name": "spike", "kind": "error_spike", "start": 75, "duration": 25, "error_rate": 0.5},
    ]}
    (base / "scenario.json").write_text(json.dumps(scenario))
    spark = ctx.spark()
    cfg = DetectorConfig(source="kafka", trigger="10s", checkpoint=base / "ckpt", topic=topic,
                         alerts_topic=alerts_topic, max_offsets_per_trigger=None)
    query, processor = _run_detector(spark, settings, cfg)

    arrivals: list[tuple[float, dict]] = []
    stop = threading.Event()

    def collect():
        c = Consumer(settings.kafka_client_config(**{"group.id": "bench-latency", "enable.auto.commit": False,
                                                     "fetch.queue.backoff.ms": 0}))
        c.assign([TopicPartition(alerts_topic, 0, 0)])
        while not stop.is_set():
            for m in c.consume(100, 0.2):
                if not m.error():
                    arrivals.append((time.time(), json.loads(m.value())))
        c.close()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        gen = subprocess.run(GEN + ["--bootstrap-servers", settings.bootstrap_servers, "--topic", topic,
                                    "--rate", str(rate), "--duration", str(duration), "--seed", "5",
                                    "--error-rate", "0.05", "--scenario", str(base / "scenario.json"),
                                    "--labels", str(base / "labels.json"), "--quiet"],
                             capture_output=True, text=True, timeout=duration + 120, check=False)
        if gen.returncode != 0:
            raise RuntimeError(f"generator failed: {gen.stderr[-300:]}")
        time.sleep(25)  # let the last windows be judged
    finally:
        query.stop()
        processor.close()
        stop.set()
        reader.join(5)
    status = json.loads(settings.detector_status_path.read_text())
    labels = json.loads((base / "labels.json").read_text())["incidents"]
    latencies, alerted = [], 0
    for inc in labels:
        start, end = _iso(inc["start"]), _iso(inc["end"])
        hits = [t for t, a in arrivals if a["kind"] == inc["alert_kind"] and a["key"] == inc["entity"]
                and _iso(a["window_start"]) < end and _iso(a["window_end"]) > start]
        if hits:
            alerted += 1
            latencies.append(min(hits) - start)
    false = [a for _, a in arrivals if not any(
        _iso(a["window_start"]) < _iso(i["end"]) and _iso(a["window_end"]) > _iso(i["start"]) for i in labels)]
    evaluations = max(status.get("evaluations_total") or 0, 1)
    lat = sorted(latencies)

    def pct(p):
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, round(p * (len(lat) - 1)))]

    note = (f"{rate:,} lines/s for {duration}s, {len(labels)} incidents, trigger 10s; "
            f"latencies {', '.join(f'{x:.1f}' for x in latencies)} s; {_steps_note(processor)}")
    return [
        {"name": "detector alert latency p95", "value": round(pct(0.95), 2), "unit": "s", "goal": "<= 20",
         "note": note},
        {"name": "detector alert latency p50", "value": round(pct(0.5), 2), "unit": "s", "goal": None, "note": None},
        {"name": "detector incidents alerted", "value": round(alerted / max(len(labels), 1), 3), "unit": "ratio",
         "goal": ">= 1", "note": f"{alerted}/{len(labels)} incidents"},
        {"name": "detector false alerts per 1000 evaluations", "value": round(1000 * len(false) / evaluations, 3),
         "unit": "per 1000", "goal": None,
         "note": f"{len(false)} alerts outside incidents, {evaluations} judged window evaluations, "
                 f"{len(arrivals)} alerts in all"},
    ]


def run(ctx) -> list[dict]:
    results = []
    wanted = os.environ.get("BENCH_DETECTOR_PARTS", "throughput,latency").replace(",", " ").split()
    for part in (p for p in (throughput, latency) if p.__name__ in wanted):
        try:
            results += part(ctx)
        except Exception as exc:  # noqa: BLE001 - one failing part must not hide the other
            results.append({"name": f"detector {part.__name__}", "value": float("nan"), "unit": "",
                            "goal": None, "note": f"failed: {type(exc).__name__}: {exc}"[:300]})
    return results
