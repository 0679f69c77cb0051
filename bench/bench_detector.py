"""Streaming detector benchmarks (``make bench``).

- throughput: N events preloaded in a topic (Combined lines from the generator: ~1k
  clients, misbehaving ones among them), the detector's two queries running together on
  the shared local[2] session (trigger 1 s, 1M records per batch), archive on. Steady state:
  the rows of the ingest batches after the first, over the time from the end of the first
  to the moment the stateful query has applied the last one — events in, incidents out.
  ``BENCH_DETECTOR_EVENTS`` sets N (default 15,000,000: the JIT compilers keep a quarter of
  a core busy through the first minute, so a shorter run measures the JVM's warm-up more
  than the detector; the second half of the batches is reported apart, with the JIT's
  share of each half). "CPU per event": the CPU time of every process of the run (Spark's
  JVM, its Python workers, the broker) per event.
- keys: the same 3M events (20k events/s of event time, uniform clients and URLs) with 1k
  IPs and 1k URLs, then with 1M IPs and 200k URLs, each through a fresh detector process
  (``local[2]``, available-now, 1M per batch): the whole run's time, and the peak memory
  (RSS) of the driver process — the JVM, which in local mode also holds the executors and
  the state store — and of the Python driver. Keys must cost little: the ratio of the two,
  the median of ``BENCH_DETECTOR_KEYS_ROUNDS`` alternated rounds (default 3).
- latency: live traffic from the generator at ``BENCH_DETECTOR_RATE`` lines/s (default
  20,000) with injected incidents (IP flood, URL outage, global spike), the default 10 s
  trigger: time from each incident's start to its ``firing`` event on the alerts topic;
  p50 / p95; and the events each incident made (firing, escalations, resolved).
- scale-out: the same backlog (``BENCH_DETECTOR_SCALE_EVENTS``, default 5M: a 2M one was two
  batches, the steady state one of them and ~17 s of start-up a third of the run) through a
  detector submitted to a standalone master with one worker of 1 core, then of 2 cores:
  the whole run, and the ingest's batches after the first (from the detector's log).

``BENCH_DETECTOR_PARTS`` (e.g. ``throughput,keys``) runs only some parts.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GEN = [sys.executable, str(REPO / "jobs" / "generate_logs.py")]
DETECTOR = [sys.executable, str(REPO / "jobs" / "stream_detector.py")]


def _iso(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def _steps_note(history) -> str:
    """Mean seconds per batch of each step, over the batches that had rows."""
    hist = [h for h in history if h.get("rows", 1)]
    if not hist:
        return "no batch"
    names: list[str] = []
    for h in hist:
        names += [k for k in h["steps"] if k not in names]
    mean = {k: sum(h["steps"].get(k, 0.0) for h in hist) / len(hist) for k in names}
    dur = sum(h["duration_s"] for h in hist) / len(hist)
    return f"mean of {len(hist)}: {dur:.2f}s = " + " ".join(f"{k} {v:.2f}" for k, v in mean.items())


class _Sampler:
    """Every 0.2 s: CPU seconds of this process's tree (all, its JVMs, the broker), or the peak
    RSS of a process tree split into the driver (the JVM and the Python driver) and the rest
    (Python workers)."""

    def __init__(self, root: int | None = None):
        self.samples: list[tuple[float, ...]] = []  # (time, all, jvm, broker, jit)
        self.peak_driver = self.peak_workers = 0
        self._done = threading.Event()
        root = root or os.getpid()

        def run():
            while not self._done.wait(0.2):
                if root == os.getpid():
                    self.samples.append((time.time(), *_cpu_seconds_by_part(root)))
                else:
                    driver, workers = _rss_split(root)
                    self.peak_driver, self.peak_workers = max(self.peak_driver, driver), \
                        max(self.peak_workers, workers)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def at(self, t: float, part: str = "all") -> float:
        """CPU seconds used by ``t``: by every process, or by the JVM, the broker or the JVM's
        JIT compiler threads alone."""
        column = {"all": 1, "jvm": 2, "broker": 3, "jit": 4}[part]
        return max((c[column] for c in self.samples if c[0] <= t), default=0.0)


def _janino_compiles(spark) -> int:
    """Classes Spark's code generation compiled so far (its codegen cache's misses)."""
    return int(spark._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME().getCount())


def _cpu_seconds_by_part(root: int) -> tuple[float, float, float, float]:
    """CPU seconds (user + system) of ``root`` and its descendants: all of them, the JVMs,
    the broker (the local broker is the benchmark's child: its work is not the detector's),
    the JVMs' JIT compiler threads; one walk of /proc (the sampler's own cost counts in the
    Python part)."""
    from chaussettes import procs
    from chaussettes.broker import broker_binary

    broker = os.path.realpath(broker_binary())
    parts = {"all": 0.0, "jvm": 0.0, "broker": 0.0, "jit": 0.0}
    for pid, fields in procs.tree_stats(root).items():
        used = procs.cpu_seconds(fields)
        parts["all"] += used
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe.endswith("java"):
            parts["jvm"] += used
            parts["jit"] += _jit_seconds(pid)
        elif exe == broker:
            parts["broker"] += used
    return parts["all"], parts["jvm"], parts["broker"], parts["jit"]


def _jit_seconds(pid: int) -> float:
    """CPU seconds of a JVM's compiler threads (HotSpot names them "C1/C2 CompilerThread<n>")."""
    from chaussettes import procs

    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        name, _, rest = text.partition("(")[2].rpartition(")")
        if name.startswith(("C1 CompilerThre", "C2 CompilerThre")):
            total += procs.cpu_seconds(rest.split())
    return total


def _is_java(pid: int) -> bool:
    """Whether ``pid`` runs a JVM (False once it is gone)."""
    try:
        return os.readlink(f"/proc/{pid}/exe").endswith("java")
    except OSError:
        return False


def _rss_split(root: int) -> tuple[int, int]:
    """(RSS of the driver: the root Python process and the JVM; RSS of the other
    processes of the tree: Spark's Python workers and data source runners), bytes."""
    from chaussettes import procs

    page = os.sysconf("SC_PAGE_SIZE")
    seen = {}
    for pid in {root} | procs.descendants(root):
        try:
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            java = _is_java(pid)
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        seen[pid] = (rss, java, parent)
    driver = workers = 0
    for pid, (rss, java, parent) in seen.items():
        if java and seen.get(parent, (0, False))[1]:
            # the JVM starting a process (a Python worker): until its exec the child is a copy
            # of the JVM whose RSS counts the JVM's pages again (seen: a 1 GB "peak" for 0.2 s)
            continue
        if pid == root or java:
            driver += rss
        else:
            workers += rss
    return driver, workers


def _detector(spark, settings, cfg):
    from chaussettes.detector.pipeline import Detector
    from chaussettes.detector.status import StatusWriter

    status = StatusWriter(settings.detector_status_path, "kafka", settings=settings, topic=cfg.topic)
    status.starting()
    return Detector(spark, settings, cfg, status), status


def _stop(detector, thread) -> None:
    """The ingest first, then the stateful query once it is idle (stopping it in the middle
    of a batch makes Spark log a failure of its own)."""
    ingest, stateful = detector.queries[0], detector.queries[-1]
    ingest.stop()
    deadline = time.time() + 60
    while time.time() < deadline and stateful.isActive and stateful.status.get("isDataAvailable"):
        time.sleep(0.5)
    detector.stop()
    thread.join(60)


def throughput(ctx) -> list[dict]:
    from chaussettes.detector.pipeline import MAX_OFFSETS_PER_TRIGGER, DetectorConfig, run_in_thread

    n = int(os.environ.get("BENCH_DETECTOR_EVENTS", "15000000"))
    batch = int(os.environ.get("BENCH_DETECTOR_BATCH", str(MAX_OFFSETS_PER_TRIGGER)))
    topic, alerts = ctx.new_topic(4), ctx.new_topic(1)
    settings = ctx.settings.replace(home=ctx.tmp / "detector-throughput")
    gen = subprocess.run(GEN + ["--bootstrap-servers", settings.bootstrap_servers, "--topic", topic,
                                "--start-time", "2026-01-01T00:00:00Z", "--rate", "20000", "--count", str(n),
                                "--bad-ips", "2", "--bad-urls", "1", "--seed", "11", "--quiet"],
                         capture_output=True, text=True, timeout=900, check=False)
    if gen.returncode != 0:
        raise RuntimeError(f"generator failed: {gen.stderr[-300:]}")
    cfg = DetectorConfig(source="kafka", trigger="1s", checkpoint=ctx.tmp / "ckpt-throughput",
                         topic=topic, alerts_topic=alerts, max_offsets_per_trigger=batch)
    spark = ctx.spark()
    detector, status = _detector(spark, settings, cfg)
    cpu = _Sampler()
    t0 = time.time()
    thread, errors = run_in_thread(detector)
    done_at = None
    compiles: dict[int, int] = {}  # ingest batch id -> Janino compiles when its end was seen
    compiles_end = 0
    try:
        while time.time() - t0 < 1800 and not errors:
            hist = detector.ingest.history
            if hist and hist[-1]["batch_id"] not in compiles:
                compiles[hist[-1]["batch_id"]] = _janino_compiles(spark)
            if hist and sum(h["rows"] for h in hist) >= n and status.applied_batch() >= hist[-1]["batch_id"]:
                done_at = time.time()
                compiles_end = _janino_compiles(spark)
                break
            time.sleep(0.2)
    finally:
        _stop(detector, thread)
        cpu.stop()
        status.close()
    if errors or done_at is None:
        raise RuntimeError(f"the detector did not finish: {errors[:1]}")
    hist = [h for h in detector.ingest.history if h["rows"]]
    if len(hist) < 2:
        raise RuntimeError(f"{len(hist)} ingest batch: no steady state (more events than the batch size needed)")
    rows = sum(h["rows"] for h in hist)
    steady_rows = sum(h["rows"] for h in hist[1:])
    steady = steady_rows / max(done_at - hist[0]["ended_at"], 1e-6)
    ingest_only = steady_rows / max(hist[-1]["ended_at"] - hist[0]["ended_at"], 1e-6)
    used, jvm, broker = (cpu.at(done_at, part) - cpu.at(hist[0]["ended_at"], part) for part in ("all", "jvm", "broker"))
    # the second half of the batches, and the JIT compilers' CPU per event in each half
    mid = hist[len(hist) // 2]
    late_rows = sum(h["rows"] for h in hist if h["batch_id"] > mid["batch_id"])
    late = late_rows / max(done_at - mid["ended_at"], 1e-6)
    jit_early = (cpu.at(mid["ended_at"], "jit") - cpu.at(hist[0]["ended_at"], "jit")) / max(steady_rows - late_rows, 1)
    jit_late = (cpu.at(done_at, "jit") - cpu.at(mid["ended_at"], "jit")) / max(late_rows, 1)
    used_late = (cpu.at(done_at) - cpu.at(mid["ended_at"])) / max(late_rows, 1)
    steady_compiles = compiles_end - compiles.get(hist[0]["batch_id"], 0)
    # the ingest query between two of its batches: the next batch's offsets and cut, its planning
    gaps = [(h2["ended_at"] - h2["duration_s"]) - h1["ended_at"] for h1, h2 in itertools.pairwise(hist)]
    doc = json.loads(settings.detector_status_path.read_text())
    raw = ctx.raw.get("consume_msgs_per_s")
    note = (f"{rows:,} events preloaded (Combined, 4 partitions, ~1k clients), {batch:,} per batch, both queries "
            f"together (trigger 1s); steady state from the end of ingest batch 1 to the last batch applied by "
            f"the stateful query; ingest alone {ingest_only:,.0f} events/s; whole run {done_at - t0:.1f}s incl. "
            f"start = {rows / (done_at - t0):,.0f} events/s; archive on; "
            f"{sum(doc['incident_events_total'].values())} incident events, {doc['state_rows']:,} state rows; "
            f"ingest batches {_steps_note(hist)}, {sum(gaps) / len(gaps):.2f}s between two; "
            f"stateful batches {_steps_note(detector.sink.history)}")
    out = [{"name": "detector throughput", "value": round(steady), "unit": "events/s", "goal": ">= 150000",
            "note": note},
           {"name": "detector CPU per event", "value": round(used / steady_rows * 1e6, 2),
            "unit": "us/event", "goal": None,
            "note": f"steady state, every process of the run ({used:.1f} CPU-s over {done_at - hist[0]['ended_at']:.1f} s); "
                    f"of which the JVM {jvm / steady_rows * 1e6:.2f} us/event, the local broker "
                    f"{broker / steady_rows * 1e6:.2f}, Spark's Python workers and the driver's Python "
                    f"{(used - jvm - broker) / steady_rows * 1e6:.2f}"},
           {"name": "detector throughput, second half of the batches", "value": round(late), "unit": "events/s",
            "goal": None,
            "note": f"{late_rows:,} events after ingest batch {mid['batch_id']}, {used_late * 1e6:.2f} us CPU per event; "
                    f"the JIT compilers' CPU per event {jit_early * 1e6:.2f} us in the first half of the steady "
                    f"state, {jit_late * 1e6:.2f} us in the second (the JVM's warm-up); Spark compiled "
                    f"{steady_compiles} classes (Janino) in the steady state, {compiles_end} in all"}]
    if raw:
        out.append({"name": "detector throughput / raw consume", "value": round(steady / raw, 3), "unit": "ratio",
                    "goal": None, "note": f"raw consume {raw:,.0f} msgs/s in the same run"})
    return out


def _uniform_lines(settings, topic: str, n: int, ips: int, urls: int, seed: int) -> None:
    """``n`` Combined lines at 20k lines/s of event time from uniform clients and URLs (5% errors),
    keyed by client, each record stamped with its line's time."""
    import numpy as np
    from confluent_kafka import Producer

    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    producer = Producer(settings.kafka_client_config(**{"linger.ms": 20, "batch.num.messages": 10000,
                                                        "queue.buffering.max.messages": 1_000_000}))
    step = 200_000
    stamps: dict[int, str] = {}
    for lo in range(0, n, step):
        m = min(step, n - lo)
        ip = rng.integers(0, ips, m)
        url = rng.integers(0, urls, m)
        status = np.where(rng.random(m) < 0.05, 500, 200)
        for i in range(m):
            t = t0 + (lo + i) / 20000
            second = int(t)
            stamp = stamps.get(second) or stamps.setdefault(
                second, time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)))
            a = int(ip[i])
            addr = f"10.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}"
            line = f'{addr} - - [{stamp}] "GET /u/{int(url[i])} HTTP/1.1" {int(status[i])} 512 "-" "bench"'
            while True:
                try:
                    producer.produce(topic, line.encode(), addr.encode(), timestamp=int(t * 1000))
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("lines not delivered")


def _detect_subprocess(settings, topic: str, home: Path, *extra: str) -> dict:
    """One detector process over a topic's backlog (available-now): time and peak memory."""
    argv = DETECTOR + ["--source", "kafka", "--bootstrap-servers", settings.bootstrap_servers, "--topic", topic,
                       "--alerts-topic", topic + "-alerts", "--trigger", "available-now", "--no-archive",
                       "--checkpoint", str(home / "ckpt"), "--home", str(home), *extra]
    home.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(home / "detector.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYSPARK_PYTHON": sys.executable})
        sampler = _Sampler(proc.pid)
        code = proc.wait(3600)
        sampler.stop()
    elapsed = time.time() - t0
    batches = [(int(m.group(1)), float(m.group(2))) for m in
               re.finditer(r"ingest batch \d+: (\d+) rows .*?, ([\d.]+)s \(", (home / "detector.log").read_text())]
    if code != 0:
        raise RuntimeError(f"detector failed: {(home / 'detector.log').read_text(errors='replace')[-500:]}")
    status = json.loads((home / "run" / "detector-status.json").read_text())
    return {"s": elapsed, "driver_mb": sampler.peak_driver / 2**20, "workers_mb": sampler.peak_workers / 2**20,
            "state_rows": status["state_rows"], "events": status["events_total"], "ingest_batches": batches}


def keys(ctx) -> list[dict]:
    """The two cases alternated ``BENCH_DETECTOR_KEYS_ROUNDS`` times (default 3), the median of
    the rounds' ratios and differences: one run's driver peak moved by ~130 MB between runs of
    the same code (the JVM grows its heap when its collector decides), more than the effect
    measured."""
    import statistics

    n = int(os.environ.get("BENCH_DETECTOR_KEYS_EVENTS", "3000000"))
    rounds = int(os.environ.get("BENCH_DETECTOR_KEYS_ROUNDS", "3"))
    cases = {"1k": (1000, 1000), "1M": (1_000_000, 200_000)}
    topics = {}
    for label, (ips, urls) in cases.items():
        topics[label] = ctx.new_topic(4)
        _uniform_lines(ctx.settings, topics[label], n, ips, urls, seed=7)
    runs = []
    for i in range(rounds):
        runs.append({label: _detect_subprocess(ctx.settings, topics[label], ctx.tmp / f"keys-{label}-{i}",
                                               "--master", "local[2]") for label in cases})
    ratios = [r["1M"]["s"] / r["1k"]["s"] for r in runs]
    extra = [r["1M"]["driver_mb"] - r["1k"]["driver_mb"] for r in runs]
    mid = sorted(range(rounds), key=lambda i: extra[i])[rounds // 2]  # the round whose difference is the median
    small, big = runs[mid]["1k"], runs[mid]["1M"]
    note = (f"{n:,} events, 1M per batch, fresh local[2] process each, archive off, the two cases alternated "
            f"{rounds} times; median round: 1k IPs/1k URLs: {small['s']:.1f}s, driver {small['driver_mb']:.0f} MB, "
            f"workers {small['workers_mb']:.0f} MB; 1M IPs/200k URLs: {big['s']:.1f}s, driver "
            f"{big['driver_mb']:.0f} MB, workers {big['workers_mb']:.0f} MB, {big['state_rows']:,} state rows at "
            f"the end; every round: time " + ", ".join(f"{x:.2f}" for x in ratios) + " x, driver "
            + ", ".join(f"{x:+.0f}" for x in extra) + " MB")
    return [{"name": "detector keys cost: time 1M IPs / 1k IPs", "value": round(statistics.median(ratios), 2),
             "unit": "ratio", "goal": "<= 2", "note": note},
            {"name": "detector keys cost: driver memory 1M IPs - 1k IPs", "value": round(statistics.median(extra)),
             "unit": "MB", "goal": "<= 256", "note": None}]


def scaleout(ctx) -> list[dict]:
    """One worker of 1 core, then of 2: the same backlog, submitted to the master. The master and
    the worker (so its executor, and the executor's Python workers) run on as many CPUs as the
    worker has cores, as on a machine or container of that size: unconfined, a "1-core"
    executor's Python workers, GC and I/O threads used the machine's second CPU too."""
    from chaussettes import procs

    n = int(os.environ.get("BENCH_DETECTOR_SCALE_EVENTS", "5000000"))
    topic = ctx.new_topic(4)
    gen = subprocess.run(GEN + ["--bootstrap-servers", ctx.settings.bootstrap_servers, "--topic", topic,
                                "--start-time", "2026-01-01T00:00:00Z", "--rate", "20000", "--count", str(n),
                                "--bad-ips", "2", "--bad-urls", "1", "--seed", "13", "--quiet"],
                         capture_output=True, text=True, timeout=600, check=False)
    if gen.returncode != 0:
        raise RuntimeError(f"generator failed: {gen.stderr[-300:]}")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise RuntimeError(f"the scale-out needs 2 CPUs, this process may use {len(cpus)}")
    times, ingest = {}, {}
    for cores in (1, 2):
        home = ctx.tmp / f"scale-{cores}"
        env = {**os.environ, "CHAUSSETTES_HOME": str(home), "CHAUSSETTES_SPARK_WORKER_CORES": str(cores),
               "CHAUSSETTES_SPARK_MASTER_PORT": str(procs.free_port()),
               "CHAUSSETTES_SPARK_MASTER_WEBUI_PORT": str(procs.free_port()),
               "CHAUSSETTES_SPARK_WORKER_WEBUI_PORT": str(procs.free_port())}
        stack = [sys.executable, "-m", "chaussettes", "stack"]
        up = subprocess.run(stack + ["up", "--only", "spark-master", "spark-worker"], env=env,
                            capture_output=True, text=True, timeout=300, check=False,
                            preexec_fn=lambda k=cores: os.sched_setaffinity(0, cpus[:k]))
        try:
            if up.returncode != 0:
                raise RuntimeError(f"spark did not start: {up.stdout[-300:]}{up.stderr[-300:]}")
            master = f"spark://127.0.0.1:{env['CHAUSSETTES_SPARK_MASTER_PORT']}"
            run = _detect_subprocess(ctx.settings, topic, home / "detector", "--master", master)
            times[cores] = run["s"]
            steady = [b for b in run["ingest_batches"] if b[0]][1:]  # the first one starts Spark's workers
            ingest[cores] = sum(r for r, _ in steady) / max(sum(d for _, d in steady), 1e-6)
        finally:
            subprocess.run(stack + ["down"], env=env, capture_output=True, text=True, timeout=300, check=False)
    return [{"name": "detector scale-out: 2 cores / 1 core", "value": round(times[1] / times[2], 2), "unit": "speed-up",
             "goal": ">= 1.6", "note": f"{n:,} events, one standalone worker: 1 core {times[1]:.1f}s, "
                                      f"2 cores {times[2]:.1f}s (the worker and its executor on as many CPUs as cores; the "
                                      f"driver and the broker on the same 2-CPU machine, unconfined)"},
            {"name": "detector scale-out, ingest batches: 2 cores / 1 core", "value": round(ingest[2] / ingest[1], 2),
             "unit": "speed-up", "goal": None,
             "note": f"the ingest's batches after the first: 1 core {ingest[1]:,.0f} events/s, 2 cores "
                     f"{ingest[2]:,.0f} events/s (Spark's start-up and the stateful pass left out)"}]


def latency(ctx) -> list[dict]:
    from chaussettes.detector.pipeline import DetectorConfig, run_in_thread
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
    cfg = DetectorConfig(source="kafka", trigger="10s", checkpoint=base / "ckpt", topic=topic,
                         alerts_topic=alerts_topic, max_offsets_per_trigger=None)
    detector, status = _detector(ctx.spark(), settings, cfg)
    thread, errors = run_in_thread(detector)
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
        time.sleep(110)  # let the windows close: resolutions come after the watermark passes them
    finally:
        _stop(detector, thread)
        stop.set()
        reader.join(5)
        status.close()
    if errors:
        raise RuntimeError(f"the detector failed: {errors[0]}")
    labels = json.loads((base / "labels.json").read_text())["incidents"]
    latencies, per_incident = [], []
    for inc in labels:
        start, end = _iso(inc["start"]), _iso(inc["end"])
        hits = [(t, a) for t, a in arrivals if a.get("event") == "firing" and a["kind"] == inc["alert_kind"]
                and a["key"] == inc["entity"] and _iso(a["window_start"]) < end and _iso(a["window_end"]) > start]
        if hits:
            t, first = min(hits, key=lambda h: h[0])
            latencies.append(t - start)
            per_incident.append(sum(1 for _, a in arrivals if a.get("incident_id") == first["incident_id"]))
    lat = sorted(latencies)

    def pct(p):
        return lat[min(len(lat) - 1, round(p * (len(lat) - 1)))] if lat else float("nan")

    incidents = {a.get("incident_id") for _, a in arrivals}
    note = (f"{rate:,} lines/s for {duration}s, {len(labels)} incidents, trigger 10s; incident start -> firing "
            f"{', '.join(f'{x:.1f}' for x in latencies)} s; {len(arrivals)} events, {len(incidents)} incidents in all "
            f"(per-key incidents under the global spike among them); ingest {_steps_note(detector.ingest.history)}; "
            f"stateful {_steps_note(detector.sink.history)}")
    return [
        {"name": "detector alert latency p95", "value": round(pct(0.95), 2), "unit": "s", "goal": "<= 20",
         "note": note},
        {"name": "detector alert latency p50", "value": round(pct(0.5), 2), "unit": "s", "goal": None, "note": None},
        {"name": "detector incidents alerted", "value": round(len(latencies) / max(len(labels), 1), 3),
         "unit": "ratio", "goal": ">= 1", "note": f"{len(latencies)}/{len(labels)} incidents"},
        {"name": "detector events per labelled incident (max)", "value": max(per_incident, default=0),
         "unit": "events", "goal": "<= 3",
         "note": f"firing, escalations, resolved per labelled incident: {per_incident}"},
    ]


def run(ctx) -> list[dict]:
    results = []
    wanted = os.environ.get("BENCH_DETECTOR_PARTS", "throughput,keys,latency,scaleout").replace(",", " ").split()
    for part in (p for p in (throughput, keys, latency, scaleout) if p.__name__ in wanted):
        try:
            results += part(ctx)
        except Exception as exc:  # noqa: BLE001 - one failing part must not hide the others
            results.append({"name": f"detector {part.__name__}", "value": float("nan"), "unit": "",
                            "goal": None, "note": f"failed: {type(exc).__name__}: {exc}"[:300]})
    return results
