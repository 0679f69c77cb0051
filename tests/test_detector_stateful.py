"""The detector's two queries on real Spark and a real broker, run after run (each run
processes what the topic holds, then stops): thresholds hot reload, incidents (firing,
escalated, resolved), late and future lines, file outputs that fail and are retried, a
driver that never sees a row per key, and the statistic shared with the calibration."""

from __future__ import annotations

import collections
import datetime as dt
import json
import random
import threading
import time

import pytest
from chaussettes import logformat, schemas, windows
from chaussettes import thresholds as thresholds_mod
from chaussettes.detector import alerts as alerts_mod
from chaussettes.detector import channel
from chaussettes.detector import keyed_windows as kw
from chaussettes.detector.pipeline import CheckpointError, Detector, DetectorConfig, run_in_thread
from chaussettes.detector.publish import read_alerts
from chaussettes.detector.status import StatusWriter

pytestmark = pytest.mark.slow
T0 = dt.datetime(2026, 1, 1, 0, 0, 5, tzinfo=dt.UTC)
BAD_IP = "203.0.113.9"


def line(t: float, ip: str, status: int, url: str = "/login") -> bytes:
    ev = logformat.Event(T0 + dt.timedelta(seconds=t), ip, "POST", url, None, "HTTP/1.1", status, 10, None, "ua")
    return logformat.format_combined(ev).encode()


def lines(n_ok_other: int, ip_requests: int, ip_errors: int, start_s: float = 0.0) -> list[bytes]:
    out = [line(start_s + i * 0.1, f"10.1.0.{i % 50}", 200, f"/page/{i % 5}") for i in range(n_ok_other)]
    out += [line(start_s + i * 0.1, BAD_IP, 401 if i < ip_errors else 200) for i in range(ip_requests)]
    return out


def doc(version: int, ip_default: float) -> dict:
    d = thresholds_mod.load_default().doc
    d.pop("description", None)
    d.update({"version": version, "ip": {"default": ip_default, "overrides": {}},
              "global": {"error_rate": 0.9}, "url": {"default": 0.95, "overrides": {}}})
    return d


def produce(settings, topic: str, values: list[bytes], partitions: int = 2) -> None:
    from confluent_kafka import Producer

    p = Producer(settings.kafka_client_config(**{"linger.ms": 5}))
    for i, v in enumerate(values):
        while True:
            try:
                p.produce(topic, value=v, partition=i % partitions)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


class Harness:
    """One detector (its checkpoint, topics, thresholds) in this process, whose queries run
    once per call over what the topic holds — as a long-running detector's next batches."""

    def __init__(self, spark, settings, new_topic, tmp_path, thresholds_path, **cfg):
        self.spark, self.settings = spark, settings
        self.topic, self.alerts_topic = new_topic(2), new_topic(1)
        self.cfg = DetectorConfig(source="kafka", topic=self.topic, alerts_topic=self.alerts_topic,
                                  thresholds=thresholds_path, trigger="available-now",
                                  checkpoint=tmp_path / "ckpt", **cfg)
        self.status_writer = StatusWriter(settings.detector_status_path, "kafka", settings=settings, topic=self.topic)
        self.detector = None

    def run(self, values: list[bytes] | None = None) -> list[dict]:
        """Produce ``values``, run the detector over them; every event on alerts so far."""
        if values:
            produce(self.settings, self.topic, values)
        if self.detector is None:
            self.detector = Detector(self.spark, self.settings, self.cfg, self.status_writer)
        self.detector.run()
        return read_alerts(self.settings, self.alerts_topic)

    def close(self) -> None:
        self.status_writer.close()

    @property
    def status(self) -> dict:
        return json.loads(self.settings.detector_status_path.read_text())


@pytest.fixture
def harness(spark, settings, new_topic, tmp_path):
    made = []

    def make(version: int = 1, ip_default: float = 0.5, **cfg) -> Harness:
        th_path = thresholds_mod.write(doc(version, ip_default), tmp_path / "seuils.json")
        made.append(Harness(spark, settings, new_topic, tmp_path, th_path, **cfg))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_thresholds_hot_reload_and_corrupt_file(harness, tmp_path):
    h = harness(1, 0.9, archive=False)
    th_path = tmp_path / "seuils.json"
    assert h.run(lines(100, 30, 18)) == []  # the IP at 60% errors: below 0.9
    assert h.status["thresholds_version"] == 1

    thresholds_mod.write(doc(2, 0.5), th_path)  # swapped while running
    events = h.run(lines(0, 2, 2, start_s=3.0))  # the same windows, a few more requests
    assert [(e["event"], e["kind"], e["key"]) for e in events] == [("firing", "ip", BAD_IP)]
    fired = events[0]
    assert tuple(fired) == schemas.INCIDENT_EVENT_COLUMNS
    assert (fired["thresholds_version"], fired["threshold"], fired["severity"]) == (2, 0.5, "warning")
    assert (fired["requests"], fired["errors"]) == (32, 20)  # the whole window so far, not this batch's
    assert "top error URLs: /login" in fired["explanation"] and "401" in fired["explanation"]
    assert h.status["thresholds_version"] == 2 and h.status["incidents_open"]["ip"] == 1

    th_path.write_text("{ this is not json")  # corrupt: rejected, version 2 stays
    assert len(h.run(lines(0, 5, 5, start_s=4.0))) == 1, "an open incident fired again"
    status = h.status
    assert status["thresholds_version"] == 2 and "not valid JSON" in status["thresholds_error"]

    th_path.write_text(json.dumps({"version": 3}))  # schema-invalid: rejected too
    h.run([b"garbage line"])
    status = h.status
    assert status["thresholds_version"] == 2 and "schema" in status["thresholds_error"]
    assert status["quarantined_total"] == 1
    for key in schemas.STATUS_KEYS:
        assert key in status


def test_incident_fires_escalates_and_resolves_once(harness):
    h = harness(archive=False)
    h.run(lines(100, 30, 18))  # 60%: warning
    h.run(lines(0, 30, 30, start_s=3.0))  # the same windows reach 80%: major
    events = h.run(lines(200, 0, 0, start_s=400.0))  # clean traffic much later: the watermark passes
    assert [(e["event"], e["severity"]) for e in events] == [("firing", "warning"), ("escalated", "major"),
                                                              ("resolved", "major")]
    assert len({e["incident_id"] for e in events}) == 1 and len({e["alert_id"] for e in events}) == 3
    resolved = events[-1]
    assert resolved["windows_breached"] >= 1 and resolved["peak_error_rate"] == 48 / 60
    assert "resolved at" in resolved["explanation"]
    status = h.status
    assert status["incidents_open"] == {"global": 0, "ip": 0, "url": 0}
    assert status["incident_events_total"] == {"firing": 1, "escalated": 1, "resolved": 1}
    assert [i["state"] for i in status["incidents"]] == ["resolved"]
    assert len(h.run()) == 3  # nothing new: nothing published


def test_late_and_future_lines_are_counted_not_lost(harness, settings):
    h = harness(archive=False)
    h.run(lines(400, 0, 0, start_s=0.0) + lines(400, 0, 0, start_s=600.0))  # both partitions at ~640 s
    assert h.status["late_total"] == 0
    far_ahead = logformat.format_combined(logformat.Event(
        dt.datetime.now(dt.UTC) + dt.timedelta(days=1), "1.2.3.4", "GET", "/", None, "HTTP/1.1", 200, 1, None, None))
    h.run([line(10.0, "9.9.9.9", 500), line(11.0, "9.9.9.9", 500), far_ahead.encode()])
    status = h.status
    assert status["late_total"] == 2  # every window of t=10 s closed long ago: counted, not judged
    assert status["quarantined_total"] == 1
    watermark = dt.datetime.fromisoformat(status["watermark"])
    assert watermark < T0 + dt.timedelta(seconds=700)  # the future line did not move it
    rows = [json.loads(x) for f in settings.quarantine_dir.rglob("*.json") for x in f.read_text().split("\n") if x]
    assert [r["reason"] for r in rows] == ["future_time"] and rows[0]["raw"].startswith("1.2.3.4 ")


def test_a_failing_archive_does_not_stop_incidents_and_is_retried(harness, settings):
    h = harness()
    settings.archive_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.archive_dir.write_text("a file where the archive folder should be")  # every write fails
    # a JSON line and a malformed one among them: the retry parses them with the full rules too
    json_line = logformat.format_json(logformat.Event(T0 + dt.timedelta(seconds=1), "10.9.9.9", "GET", "/json",
                                                      None, "HTTP/1.1", 200, 10, None, "ua")).encode()
    events = h.run(lines(100, 30, 25) + [json_line, b"not a log line"])
    assert [e["event"] for e in events] == ["firing"]  # the incident went out
    status = h.status
    assert status["archive_pending"] == 1 and status["archive_error"]
    settings.archive_dir.unlink()  # the disk is fixed
    h.run(lines(10, 0, 0, start_s=20.0))
    status = h.status
    assert status["archive_pending"] == 0 and status["archive_error"] is None
    import pandas as pd

    archived = sum(len(pd.read_parquet(f)) for f in settings.archive_dir.rglob("*.parquet"))
    assert archived == 141  # the failed batch's events (its JSON one too), written on retry, and the next batch's
    quarantined = [json.loads(x) for f in settings.quarantine_dir.rglob("*.json") for x in f.read_text().splitlines()]
    assert [q["raw"] for q in quarantined] == ["not a log line"]


def test_the_driver_never_sees_a_row_per_key(harness, settings):
    """200k distinct client IPs: the ingest's driver gets one summary row per source
    partition, the stateful query's one row per key group (and events): the keys live in
    the state store."""
    h = harness(archive=False)
    rows = [(i * 0.0005, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", f"/p/{i % 1000}") for i in range(200_000)]
    h.run([line(t, ip, 200, url) for t, ip, url in rows])
    ingest, sink = h.detector.ingest.history[-1], h.detector.sink.history[-1]
    assert ingest["rows"] == 200_000 and ingest["driver_rows"] <= 2  # one per Kafka partition
    groups = 1 + 2 * settings.detector_shards  # global, and the ip and url key groups
    assert sink["groups"] <= groups and sink["rows"] <= groups + sink["events"] + 60
    status = h.status
    # the state store holds a row per (key, slide) of every bucket an open window still holds
    watermark = dt.datetime.fromisoformat(status["watermark"]).timestamp()
    held = set()
    for t, ip, url in rows:
        bucket = int((T0.timestamp() + t) // 10 * 10)
        if bucket + 60 > watermark:
            held |= {("ip", ip, bucket), ("url", url, bucket), ("global", "*", bucket)}
    assert status["state_rows"] == len(held) > 150_000
    progress = [q.lastProgress for q in h.detector.queries]
    stateful = next(p for p in progress if p["name"] == "chaussettes_incidents")
    assert stateful["numInputRows"] <= 2 * groups + 1  # messages of whole key groups, not rows per key


def test_an_older_detector_checkpoint_is_refused_in_one_line(harness, tmp_path):
    (tmp_path / "ckpt" / "detector").mkdir(parents=True)
    (tmp_path / "ckpt" / "detector" / "state-000000000003.pkl").write_bytes(b"old")
    h = harness()
    with pytest.raises(CheckpointError) as info:
        h.run()
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "ckpt") in message and "new --checkpoint" in message
    assert (tmp_path / "ckpt" / "detector" / "state-000000000003.pkl").exists()  # nothing was reset


def test_channel_counts_sum_to_the_windowed_statistic(spark):
    """The detector's windows — Spark's bucket counts per (kind, key, slide), through the
    channel's messages, summed by keyed_windows — are exactly windows.windowed_rates_all's
    rows: every kind, several window shapes, times before 1970, null times and keys."""
    from pyspark.sql import functions as F

    rnd = random.Random(3)
    rows = [(None if rnd.random() < 0.02 else T0 + dt.timedelta(seconds=rnd.uniform(-90, 400)),
             None if rnd.random() < 0.03 else f"10.0.0.{rnd.randint(1, 9)}", "GET", f"/p{rnd.randint(1, 5)}",
             None, "HTTP/1.1", None if rnd.random() < 0.03 else rnd.choice([200, 200, 301, 404, 500]), 1, None, None)
            for _ in range(1500)]
    rows += [(dt.datetime(1969, 12, 31, 23, 59, 55, tzinfo=dt.UTC), "10.9.9.9", "GET", "/old", None, None, 500,
              1, None, None)]
    events = spark.createDataFrame(rows, schema=schemas.spark_schema(schemas.EVENT_FIELDS))
    for length, slide, esm in ((60, 10, 400), (30, 30, 500), (20, 5, 400)):
        want = windows.windowed_rates_all(events, length, slide, esm).select(
            "kind", "key", F.unix_seconds("window_start"), F.unix_seconds("window_end"), "requests", "errors")
        counts = windows.bucket_counts(events, slide, esm, thresholds_mod.KINDS).select(
            "kind", channel.shard_column(F.col("key"), 4).alias("shard"), "key", "bucket", "n", "e").toArrow()
        base = channel.Header(batch=0, watermark_before=None, watermark=None)
        got = set()
        for key, value, _ in channel.group_messages(counts, base, 4, 2):
            kind, _ = channel.parse_message_key(key)
            _, table = channel.decode(value)
            wins = kw.touched_windows(table.select(["bucket", "key", "n", "e"]), table.select(["key", "bucket"]),
                                      length, slide, None)
            got |= {(kind, *r) for r in wins.itertuples(index=False)}
        assert got == {tuple(r) for r in want.collect()}, (length, slide)


def test_top_errors_per_alert_window_and_key():
    """The explanation's counting: per event the top values of its dimensions among the
    error rows of its window and key, count descending then value — checked against a
    plain per-event count."""
    import collections

    import pandas as pd

    rnd = random.Random(3)
    rows = [(rnd.randrange(0, 120) * 1_000_000, rnd.choice(["1.1.1.1", "2.2.2.2", "3.3.3.3"]),
             rnd.choice(["/a", "/b", "/c", None]), rnd.choice(["500", "404", "503"])) for _ in range(3000)]
    pdf = pd.DataFrame(rows, columns=["t", "ip", "url", "status"])
    events = []
    for ws in (0, 10, 60):
        for kind, key in (("global", "*"), ("ip", "2.2.2.2"), ("url", "/b"), ("ip", "9.9.9.9")):
            events.append({"alert_id": f"{kind}{key}{ws}", "kind": kind, "key": key,
                           "span": (ws * 1_000_000, (ws + 60) * 1_000_000)})
    tops = alerts_mod.top_errors(pdf, [(e, *e["span"]) for e in events])
    for e in events:
        ws, we = e["span"]
        mine = [r for r in rows if ws <= r[0] < we and (e["kind"] == "global"
                                                         or r[1 if e["kind"] == "ip" else 2] == e["key"])]
        for dim in alerts_mod.EXPLAIN_DIMS[e["kind"]]:
            i = {"ip": 1, "url": 2, "status": 3}[dim]
            counts = collections.Counter(r[i] for r in mine if r[i] is not None)
            want = sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))[:alerts_mod.TOP_N]
            assert tops.get(e["alert_id"], {}).get(dim, []) == want, (e, dim)


def test_small_and_large_micro_batches_give_the_same_incidents(spark, settings, new_topic, tmp_path):
    """A history with a client flood and a URL outage, keyed by client IP over 4 partitions:
    the flood's partition is the hot one and falls behind the others in event time within a
    batch. Cut in 1,500-record micro-batches or read in one, the same incidents come out:
    the watermark follows the slowest partition, nothing is dropped as late."""
    import subprocess
    import sys
    from pathlib import Path

    from chaussettes.topics import ensure_topics

    topic = f"replay-{random.Random().randrange(1 << 30):x}"
    ensure_topics(settings, {topic: 4})
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"incidents": [
        {"name": "flood", "kind": "ip_flood", "start": 100, "duration": 90, "entity": "198.51.100.7",
         "rate": 40, "error_rate": 0.9},
        {"name": "outage", "kind": "url_outage", "start": 220, "duration": 60, "entity": "/api/v1/checkout",
         "rate": 10, "error_rate": 0.9}]}))
    gen = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "jobs" / "generate_logs.py"),
                          "--bootstrap-servers", settings.bootstrap_servers, "--topic", topic,
                          "--start-time", "2026-01-01T00:00:00Z", "--duration", "360", "--rate", "50",
                          "--seed", "5", "--error-rate", "0.05", "--scenario", str(scenario), "--quiet"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert gen.returncode == 0, gen.stderr
    # the outage's URL fails 90%; the flood (90% errors over every URL) takes other URLs to
    # ~45%: a URL threshold of 0.5 would judge them on the edge, where a partly filled window
    # (how much of it a batch holds) decides
    d = doc(1, 0.5)
    d["url"] = {"default": 0.7, "overrides": {}}
    th_path = thresholds_mod.write(d, tmp_path / "seuils.json")
    runs = {}
    for cut in (1500, 0):
        h = Harness(spark, settings, new_topic, tmp_path / f"cut-{cut}", th_path, archive=False,
                    max_offsets_per_trigger=cut or None)
        h.topic = h.cfg.topic = topic
        try:
            events = h.run()
            runs[cut] = {"events": events, "late": h.status["late_total"],
                         "batches": len(h.detector.ingest.history)}
        finally:
            h.close()
    small, large = runs[1500], runs[0]
    assert small["batches"] > 10 and large["batches"] == 1
    assert small["late"] == large["late"] == 0
    incidents = {cut: {(e["kind"], e["key"], e["incident_id"]) for e in r["events"] if e["event"] == "firing"}
                 for cut, r in runs.items()}
    assert ("ip", "198.51.100.7") in {i[:2] for i in incidents[0]}
    assert ("url", "/api/v1/checkout") in {i[:2] for i in incidents[0]}
    assert incidents[1500] == incidents[0]


def test_explanation_prefilter_keeps_every_line_of_its_keys(spark):
    """The explanation reads again only the lines that can mention its keys
    (``sink.mentioning``): in every format, the events of those keys parsed from the
    kept lines are the events parsed from all of them; lines of other keys are dropped,
    and a key that could be written escaped (a quote) keeps every line."""
    from chaussettes import sparkparse
    from chaussettes.detector.sink import mentioning
    from pyspark.sql import functions as F

    rnd = random.Random(5)
    ips, urls = ["10.0.0.1", "10.0.0.10", "192.168.1.7"], ["/a", "/a/b", "/x y", '/q"uote', "/api/v1/items"]
    events = [logformat.Event(T0 + dt.timedelta(seconds=i), rnd.choice(ips), "GET", rnd.choice(urls), None,
                              "HTTP/1.1", rnd.choice([200, 404, 500]), 10, None, "ua") for i in range(300)]
    texts = [logformat.format_event(e, rnd.choice(["combined", "json", "csv"])) for e in events]
    # JSON may escape a slash (and a line may start with blanks): such a line is kept whatever its key
    texts = [" " + t.replace("/", "\\/") if t.startswith("{") and i % 2 else t for i, t in enumerate(texts)]
    lines = [(t.encode(),) for t in texts]
    df = spark.createDataFrame(lines, "value binary")

    cols = ["event_time", "ip", "url", "status"]
    every = [tuple(r) for r in sparkparse.parse_lines(df)[0].select(*cols).collect()]
    for kind, key in [("ip", "10.0.0.1"), ("url", "/a"), ("url", "/api/v1/items"), ("url", '/q"uote')]:
        kept = mentioning(df, [key]).cache()
        want = sorted(r for r in every if r[cols.index(kind)] == key)
        got = sorted(tuple(r) for r in sparkparse.parse_lines(kept)[0].where(F.col(kind) == key)
                     .select(*cols).collect())
        assert want and got == want, key
        assert kept.count() == df.count() if '"' in key else kept.count() < df.count(), key
        kept.unpersist()
    assert mentioning(df, None).count() == df.count()


@pytest.mark.parametrize("fmt", ["json", "csv", "combined"])
def test_an_incident_is_explained_whatever_the_log_format(spark, tmp_path, fmt):
    """The explanation counts the error lines of the incident's key in its window from the
    lines read again — JSON and CSV lines too, which the parser's fast path leaves to the
    full rules (they were left out before)."""
    from chaussettes import settings as settings_mod
    from chaussettes.detector.sink import IncidentSink

    events = [logformat.Event(T0 + dt.timedelta(seconds=i), BAD_IP if i % 2 else "10.0.0.2", "GET",
                              "/boom" if i % 3 else "/ok", None, "HTTP/1.1", 503 if i % 2 else 200, 10, None, "ua")
              for i in range(60)]
    path = tmp_path / f"lines.{fmt}"
    path.write_text("".join(logformat.format_event(e, fmt) + "\n" for e in events))
    settings = settings_mod.load(env={}, home=tmp_path / "home")
    sink = IncidentSink(spark, settings, status=None, alerts_topic="unused")
    fired = {"alert_id": "a1", "event": "firing", "kind": "ip", "key": BAD_IP, "source": {"files": [str(path)]},
             "window_start": alerts_mod.iso(T0), "window_end": alerts_mod.iso(T0 + dt.timedelta(seconds=60))}
    want_urls = collections.Counter(e.url for e in events if e.ip == BAD_IP)
    tops = sink.explain([fired])["a1"]
    assert tops["url"] == sorted(want_urls.items(), key=lambda kv: (-kv[1], kv[0]))
    assert tops["status"] == [("503", 30)]


def test_the_stateful_querys_source_ends_its_batches_at_the_gate(settings, new_topic, tmp_path, monkeypatch):
    """The channel's source (``gate``) on the real broker: without a gate file it reads
    everything; with one, each partition ends at the gate; a gate that stops moving while
    the channel grows is read past after its patience."""
    from chaussettes.detector import gate
    from chaussettes.spark_kafka.reader import ReadAllAvailable, ReadConfig, from_json

    topic = new_topic(2)
    produce(settings, topic, [b"a%d" % i for i in range(40)], partitions=2)
    path = tmp_path / gate.GATE_FILE
    reader = gate.GatedStreamReader(ReadConfig.parse({**settings.spark_kafka_options(), "subscribe": topic,
                                                      "startingOffsets": "earliest"}, streaming=True), str(path))
    try:
        start = reader.initialOffset()
        everything = from_json(reader.latestOffset(start, ReadAllAvailable()))
        assert sum(everything.values()) == 40 and set(from_json(start).values()) == {0}
        gate.write(path, 3, {0: 2, 1: 5})
        assert from_json(reader.latestOffset(start, ReadAllAvailable())) == {(topic, 0): 2, (topic, 1): 5}
        monkeypatch.setattr(gate, "PATIENCE_S", 0.0)
        time.sleep(0.05)
        assert from_json(reader.latestOffset(start, ReadAllAvailable())) == everything
    finally:
        reader.stop()


def test_the_gate_is_held_where_the_channel_ends_when_the_detector_starts(settings, new_topic, tmp_path):
    """Before its first batch the ingest sets the gate where the channel ends (when there is
    none): what lands after that, the first batch's messages, waits for that batch's own
    gate; a gate already there (a restart) is left as it is; each batch moves it."""
    from chaussettes.detector import gate
    from chaussettes.detector.ingest import IngestBatch
    from chaussettes.spark_kafka.reader import ReadAllAvailable, ReadConfig, from_json

    topic = new_topic(2)
    produce(settings, topic, [b"old%d" % i for i in range(6)], partitions=2)
    ingest = IngestBatch(None, settings, DetectorConfig(), tmp_path / "ckpt", None, None, topic)
    reader = gate.GatedStreamReader(ReadConfig.parse({**settings.spark_kafka_options(), "subscribe": topic,
                                                      "startingOffsets": "earliest"}, streaming=True),
                                    str(ingest.gate_path))
    try:
        ingest.hold_gate()
        held = json.loads(ingest.gate_path.read_text())
        assert held == {"batch": -1, "ends": {"0": 3, "1": 3}}
        produce(settings, topic, [b"new%d" % i for i in range(4)], partitions=2)  # a batch being published
        ingest.hold_gate()
        assert json.loads(ingest.gate_path.read_text()) == held
        start = reader.initialOffset()
        assert from_json(reader.latestOffset(start, ReadAllAvailable())) == {(topic, 0): 3, (topic, 1): 3}
        ingest.open_gate(0)
        assert from_json(reader.latestOffset(start, ReadAllAvailable())) == {(topic, 0): 5, (topic, 1): 5}
    finally:
        reader.stop()
        ingest.close()


def test_an_explanation_reads_the_ingests_cached_error_lines(spark, tmp_path):
    """The error lines the ingest keeps cached for its last batches (``recent``) explain an
    incident as reading its batch again does, without reading it again (its file is gone
    by then); a batch no longer kept is released."""
    from chaussettes import settings as settings_mod
    from chaussettes.detector import source as source_mod
    from chaussettes.detector.ingest import Parsed
    from chaussettes.detector.recent import RecentErrors, origin_key
    from chaussettes.detector.sink import IncidentSink

    events = [logformat.Event(T0 + dt.timedelta(seconds=i), BAD_IP if i % 2 else "10.0.0.2", "GET",
                              f"/p{i % 5}", None, "HTTP/1.1", 500 + i % 4 if i % 2 else 200, 10, None, "ua")
              for i in range(80)]
    path = tmp_path / "batch.log"
    path.write_text("".join(logformat.format_event(e, "combined") + "\n" for e in events))
    settings = settings_mod.load(env={}, home=tmp_path / "home")
    where = {"files": [str(path)]}
    fired = {"alert_id": "a1", "event": "firing", "kind": "ip", "key": BAD_IP, "source": where,
             "window_start": alerts_mod.iso(T0), "window_end": alerts_mod.iso(T0 + dt.timedelta(seconds=60))}
    read_again = IncidentSink(spark, settings, status=None, alerts_topic="unused").explain([fired])["a1"]

    recent = RecentErrors(keep=1)
    parsed = Parsed(source_mod.reread(spark, settings, where))
    assert recent.add(where, parsed.events, settings.error_status_min) == 40
    parsed.release()
    path.unlink()
    cached = IncidentSink(spark, settings, status=None, alerts_topic="unused", recent=recent).explain([fired])
    assert cached["a1"] == read_again
    assert read_again["status"] == [("501", 15), ("503", 15)]

    # a batch announced before its error lines are cached (the ingest publishes its counts
    # first): an explanation waits for them; the older batch is released (keep=1)
    (tmp_path / "next.log").write_text(logformat.format_event(events[1], "combined") + "\n")
    later = {"files": [str(tmp_path / "next.log")]}
    parsed = Parsed(source_mod.reread(spark, settings, later))
    recent.expect(later)
    adding = threading.Timer(1.0, recent.add, (later, parsed.events, settings.error_status_min))
    adding.start()
    with recent.holding([origin_key(where), origin_key(later)]) as held:
        assert list(held) == [origin_key(later)] and held[origin_key(later)].count() == 1
    adding.join()
    parsed.release()
    recent.clear()


def test_the_error_lines_kept_for_explanations_are_bounded_by_lines_too(spark, tmp_path):
    """A flood makes every line an error line: the cache keeps fewer batches when they hold
    more than ``keep_rows`` lines, oldest released first, the newest always."""
    from chaussettes import settings as settings_mod
    from chaussettes.detector import source as source_mod
    from chaussettes.detector.ingest import Parsed
    from chaussettes.detector.recent import RecentErrors, origin_key

    def batch(name: str, errors: int) -> dict:
        path = tmp_path / f"{name}.log"
        path.write_text("".join(logformat.format_event(logformat.Event(
            T0 + dt.timedelta(seconds=i), BAD_IP, "GET", "/p", None, "HTTP/1.1", 500, 10, None, "ua"), "combined")
            + "\n" for i in range(errors)))
        return {"files": [str(path)]}

    def add(recent, where) -> int:
        parsed = Parsed(source_mod.reread(spark, settings, where))
        try:
            return recent.add(where, parsed.events, 500)
        finally:
            parsed.release()

    settings = settings_mod.load(env={}, home=tmp_path / "home")
    a, b, c, d = batch("a", 30), batch("b", 20), batch("c", 50), batch("d", 60)
    recent = RecentErrors(keep=4, keep_rows=50)
    assert [add(recent, w) for w in (a, b)] == [30, 20]
    with recent.holding([origin_key(a), origin_key(b)]) as held:
        assert sorted(held) == sorted([origin_key(a), origin_key(b)])  # 50 lines: both kept
    assert add(recent, c) == 50
    with recent.holding([origin_key(w) for w in (a, b, c)]) as held:
        assert list(held) == [origin_key(c)]  # 100 lines: the older two released
    assert add(recent, d) == 60  # the newest is kept whatever its size
    with recent.holding([origin_key(c), origin_key(d)]) as held:
        assert list(held) == [origin_key(d)]
    recent.clear()


def test_a_detector_runs_until_stopped_on_a_session_whose_queries_ended_before(spark, settings, new_topic, tmp_path):
    """Two detectors on a trigger, one after the other in one session: the second one runs
    (Spark's awaitAnyTermination returns at once once any query of the session ended); each
    stop ends ``run`` without an error, wherever it finds the queries."""
    for i in range(2):
        topic, alerts = new_topic(1), new_topic(1)
        produce(settings, topic, lines(10, 0, 0), partitions=1)
        cfg = DetectorConfig(source="kafka", topic=topic, alerts_topic=alerts, trigger="1s", archive=False,
                             checkpoint=tmp_path / f"ckpt-{i}")
        status = StatusWriter(settings.detector_status_path, "kafka", settings=settings, topic=topic)
        detector = Detector(spark, settings, cfg, status)
        thread, failed = run_in_thread(detector)
        deadline = time.time() + 90
        while time.time() < deadline and not detector.ingest.history:
            time.sleep(0.2)
        running = thread.is_alive()
        detector.stop()
        thread.join(60)
        status.close()
        assert running and [h["rows"] for h in detector.ingest.history][:1] == [10], i
        assert not thread.is_alive() and not failed, (i, failed)


def test_a_detector_stopped_before_it_runs_starts_no_query(spark, settings, new_topic, tmp_path):
    """A stop that comes before the queries start (a SIGTERM while the detector starts) ends
    ``run`` at once, without an error, instead of starting queries nothing would stop."""
    cfg = DetectorConfig(source="kafka", topic=new_topic(1), alerts_topic=new_topic(1), trigger="1s",
                         archive=False, checkpoint=tmp_path / "ckpt")
    status = StatusWriter(settings.detector_status_path, "kafka", settings=settings, topic=cfg.topic)
    detector = Detector(spark, settings, cfg, status)
    detector.stop()
    thread, failed = run_in_thread(detector)
    thread.join(60)
    running = thread.is_alive()
    for q in detector.queries:
        q.stop()
    status.close()
    assert not running and not failed and detector.queries == []


def test_a_socket_sources_incident_is_explained_from_the_ingests_cache(spark, settings, new_topic, tmp_path):
    """Spark's socket source (a TCP server the detector connects to, as ``nc -lk``): its
    lines cannot be read again, so the explanation's top URLs and statuses come from the
    error lines the ingest kept cached for the batch."""
    import socket

    alerts_topic = new_topic(1)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"".join(v + b"\n" for v in lines(100, 30, 18)))
            stop.wait(180)

    stop = threading.Event()
    feeder = threading.Thread(target=serve, daemon=True)
    feeder.start()
    th_path = thresholds_mod.write(doc(1, 0.5), tmp_path / "seuils.json")
    cfg = DetectorConfig(source="socket", socket=f"127.0.0.1:{port}", alerts_topic=alerts_topic, thresholds=th_path,
                         trigger="1s", archive=False, checkpoint=tmp_path / "ckpt")
    status = StatusWriter(settings.detector_status_path, "socket", settings=settings)
    detector = Detector(spark, settings, cfg, status)
    thread, failed = run_in_thread(detector)
    events: list[dict] = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and thread.is_alive() and not events:
            time.sleep(1)
            events = read_alerts(settings, alerts_topic)
        seen = json.loads(settings.detector_status_path.read_text())
    finally:
        detector.stop()
        stop.set()
        thread.join(60)
        server.close()
        status.close()
    assert not failed, failed
    assert [(e["event"], e["kind"], e["key"]) for e in events] == [("firing", "ip", BAD_IP)], \
        (seen.get("events_total"), seen.get("incidents_applied_batch"), [h["rows"] for h in detector.ingest.history])
    # counted over the batch that made the breach visible (all 130 lines, unless a trigger cut them)
    assert "top error URLs: /login (" in events[0]["explanation"]
    assert "top error statuses: 401 (" in events[0]["explanation"]
