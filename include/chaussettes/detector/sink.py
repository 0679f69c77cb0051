"""The stateful query's ``foreachBatch``: incident events out, exactly once.

The driver receives only what the key groups emitted — incident events, the judged global
windows, one stats row per group — never a row per key. Per micro-batch:

1. ``explain``: the top error URLs / IPs / statuses of each firing or escalated event's
   window, counted over the error lines of the ingest batch that made the breach visible:
   the ingest keeps its last batches' cached (``recent``); an older batch is read again
   from its origin (``source.reread``; for client and URL incidents only the lines that
   mention their keys are parsed: ``mentioning``);
2. ``publish``: every event on ``alerts`` (key = alert_id) in one Kafka transaction with
   the batch's marker (``spark_kafka.write_batch``): a batch Spark replays after a crash
   publishes nothing twice;
3. the status (incidents, state rows, the chart's global windows).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import time

from chaussettes.detector import alerts as alerts_mod
from chaussettes.detector import source as source_mod
from chaussettes.detector.ingest import Parsed
from chaussettes.detector.recent import RecentErrors, error_lines, origin_key

log = logging.getLogger("chaussettes.detector")

PLAIN_KEY = re.compile(r"[!#-\[\]-~]+")  # printable ASCII but space, '"' and '\\'
EVENT_ORDER = {"firing": 0, "escalated": 1, "resolved": 2}


class IncidentSink:
    def __init__(self, spark, settings, status, alerts_topic: str, recent: RecentErrors | None = None):
        self.spark, self.settings, self.status = spark, settings, status
        self.alerts_topic = alerts_topic
        self.recent = recent or RecentErrors(keep=0)
        self.history: list[dict] = []

    def __call__(self, df, batch_id: int) -> None:
        t0 = time.time()
        rows = df.collect()  # runs the stateful step once; a few rows per key group
        t1 = time.time()
        events = [json.loads(r["payload"]) for r in rows if r["type"] == "event"]
        stats = [{"kind": r["kind"], "shard": r["key"], **json.loads(r["payload"])}
                 for r in rows if r["type"] == "stats"]
        windows = [json.loads(r["payload"]) for r in rows if r["type"] == "window"]
        events.sort(key=lambda e: (e["first_window_start"], e["kind"], e["key"], EVENT_ORDER[e["event"]]))
        tops = self.explain(events)
        t2 = time.time()
        detected_at = alerts_mod.iso(dt.datetime.now(dt.UTC))
        records = [alerts_mod.incident_record(e, detected_at, tops.get(e["alert_id"])) for e in events]
        published = self.publish(records, batch_id)
        self.status.incidents_done(batch_id=batch_id, events=records, stats=stats, windows=windows,
                                   published=published)
        t3 = time.time()
        steps = {"state": round(t1 - t0, 2), "explain": round(t2 - t1, 2), "publish": round(t3 - t2, 2)}
        self.history.append({"batch_id": batch_id, "events": len(records), "duration_s": round(t3 - t0, 3),
                             "ended_at": t3, "steps": steps, "groups": len(stats), "rows": len(rows)})
        del self.history[:-1000]
        log.info("incidents batch %d: %d key groups, %d events, %.2fs (%s)%s", batch_id, len(stats), len(records),
                 t3 - t0, " ".join(f"{k} {v}s" for k, v in steps.items()), "".join(
                     f"; {r['event']} {r['kind']} {r['key']} ({r['severity']})" for r in records[:5]))

    def explain(self, events: list[dict]) -> dict[str, dict]:
        """alert_id -> tops, for the firing and escalated events (see the module docstring):
        one Spark job over the cached error lines of the ingest batches they came from, one
        over those batches read again when not cached. A socket's batch no longer cached
        (after a restart) cannot be read again: its explanation has no tops."""
        import pandas as pd
        from pyspark.sql import functions as F

        wanted = [e for e in events if e["event"] != "resolved" and e.get("source")]
        origins = {origin_key(e["source"]) for e in wanted}
        if not origins:
            return {}
        esm = self.settings.error_status_min
        spans = [(e, _micros(e["window_start"]), _micros(e["window_end"])) for e in wanted]
        t = F.col("t")  # recent.error_lines' columns
        cond = (t >= F.lit(min(s for _, s, _ in spans))) & (t < F.lit(max(x for _, _, x in spans)))
        if not any(e["kind"] == "global" for e in wanted):
            keys = F.lit(False)
            for kind in ("ip", "url"):
                names = sorted({e["key"] for e in wanted if e["kind"] == kind})
                if names:
                    keys = keys | F.col(kind).isin(names)
            cond = cond & keys
        parsed = None
        try:
            # the ingest's cached batches (held only for this short job: the ingest waits to
            # release one, or to announce the next); the others read again from their origin
            pdfs = []
            with self.recent.holding(origins) as cached:
                if cached:
                    found = functools.reduce(lambda a, b: a.unionByName(b), [cached[o] for o in sorted(cached)])
                    pdfs.append(found.where(cond).toPandas())
                missing = [json.loads(o) for o in sorted(origins - cached.keys())]
            lines = [source_mod.reread(self.spark, self.settings, where) for where in missing]
            lines = [df for df in lines if df is not None]
            if lines:
                lines = functools.reduce(lambda a, b: a.unionByName(b), lines)
                keys = None if any(e["kind"] == "global" for e in wanted) else [e["key"] for e in wanted]
                # cached: the filter below would otherwise run the parse once per condition
                parsed = Parsed(mentioning(lines, keys))
                pdfs.append(error_lines(parsed.events, esm).where(cond).toPandas())
            if not pdfs:
                return {}
            return alerts_mod.top_errors(pd.concat(pdfs, ignore_index=True), spans)
        except Exception as exc:  # noqa: BLE001 - an explanation never holds an alert back
            log.warning("cannot explain %d event(s): %s", len(wanted), exc)
            return {}
        finally:
            if parsed is not None:
                parsed.release()

    def publish(self, records: list[dict], batch_id: int) -> int:
        from chaussettes.spark_kafka.writer import write_batch

        if not records:
            return 0
        df = self.spark.createDataFrame([(r["alert_id"], json.dumps(r, separators=(",", ":"))) for r in records],
                                        "key string, value string")
        options = {**self.settings.spark_kafka_options(), "topic": self.alerts_topic}
        return write_batch(df, batch_id, options)  # 0 when a replayed batch had published


def mentioning(lines, keys: list[str] | None):
    """The lines that can be about one of ``keys`` (None: all): a key written as it is
    parsed (printable ASCII without quote or backslash) appears verbatim in its Combined or
    CSV line, so the others are not parsed at all (an IP's incident reads ~1% of a batch);
    a JSON line may escape it (``\\/``): lines with a ``{`` are always kept."""
    from pyspark.sql import functions as F

    if not keys or not all(PLAIN_KEY.fullmatch(k) for k in keys):
        return lines
    text = F.col("value").cast("string")
    about = text.contains("{")
    for key in sorted(set(keys)):
        about = about | text.contains(key)
    return lines.where(about)


def _micros(iso_text: str) -> int:
    return int(dt.datetime.fromisoformat(iso_text).timestamp() * 1_000_000)
