"""The Spark-native parser agrees with chaussettes.logformat on the shared corpus."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from chaussettes import logformat, schemas, sparkparse

CORPUS = Path(__file__).resolve().parent / "corpus" / "tricky_lines.jsonl"


def corpus_lines() -> list[str]:
    return [json.loads(x)["line"] for x in CORPUS.read_text(encoding="utf-8").splitlines() if x.strip()]


def python_view(line):
    result = logformat.parse(line)
    if isinstance(result, logformat.Invalid):
        return ("invalid", result.reason)
    return ("event", result.to_dict())


def spark_rows(spark, lines, binary=False):
    from pyspark.sql.types import BinaryType, LongType, StringType, StructField, StructType

    vtype = BinaryType() if binary else StringType()
    schema = StructType([StructField("n", LongType()), StructField("value", vtype)])
    data = [(i, line.encode("utf-8", "surrogateescape") if binary and isinstance(line, str) else line)
            for i, line in enumerate(lines)]
    df = spark.createDataFrame(data, schema)
    parsed = sparkparse.parse_column(df, "value")
    return {r["n"]: r for r in parsed.collect()}


def spark_view(row):
    if row["reason"] is not None:
        return ("invalid", row["reason"])
    d = {c: row[c] for c in schemas.EVENT_COLUMNS}
    d["event_time"] = logformat.iso_utc(d["event_time"])
    return ("event", d)


def test_corpus_agrees_with_python_parser(spark):
    lines = corpus_lines()
    assert len(lines) >= 20
    rows = spark_rows(spark, lines)
    mismatches = []
    for i, line in enumerate(lines):
        expected, got = python_view(line), spark_view(rows[i])
        if expected != got:
            mismatches.append(f"{line[:120]!r}: python {expected} spark {got}")
    assert not mismatches, "\n".join(mismatches[:20])


def test_corpus_as_kafka_bytes_and_not_utf8(spark):
    lines = [x.encode("utf-8") for x in corpus_lines()[:50]] + [b"\xff\xfe bad bytes", b"1.2.3.4 \xc3"]
    rows = spark_rows(spark, lines, binary=True)
    for i, line in enumerate(lines):
        assert spark_view(rows[i]) == python_view(line), line


def test_parse_lines_splits_events_and_quarantine(spark):
    from pyspark.sql import functions as F

    lines = corpus_lines()
    df = spark.createDataFrame([(x,) for x in lines], "value string").select(
        F.col("value"), F.lit("http-logs").alias("topic"), F.lit(2).alias("partition"),
        F.monotonically_increasing_id().alias("offset"))
    events, quarantine = sparkparse.parse_lines(df)
    assert tuple(events.columns) == schemas.EVENT_COLUMNS
    assert [(f.name, f.dataType) for f in events.schema.fields] == \
        [(f.name, f.dataType) for f in schemas.spark_schema(schemas.EVENT_FIELDS).fields]
    assert tuple(quarantine.columns) == tuple(n for n, _ in schemas.QUARANTINE_FIELDS)
    bad = [x for x in lines if isinstance(logformat.parse(x), logformat.Invalid)]
    q = quarantine.collect()
    assert events.count() == len(lines) - len(bad)
    assert sorted(r["raw"] for r in q) == sorted(bad)
    assert {r["topic"] for r in q} == {"http-logs"} and all(r["partition"] == 2 for r in q)
    assert all(r["reason"] in logformat.REASONS and r["quarantined_at"] is not None for r in q)


def test_generated_lines_of_every_format(spark):
    import datetime as dt
    import random

    rnd = random.Random(7)
    lines = []
    for fmt in logformat.FORMATS:
        for i in range(150):
            ev = logformat.Event(
                dt.datetime(2025, 5, 30, 18, 52, 47, rnd.randrange(10**6), tzinfo=dt.UTC) + dt.timedelta(seconds=i),
                rnd.choice([f"10.0.{i % 7}.{i % 250}", "2001:db8::1"]), rnd.choice(["GET", "POST", "PUT"]),
                f"/resource/{i}", rnd.choice([None, "a=1&b=2", ""]), rnd.choice(["HTTP/1.1", "HTTP/2.0"]),
                rnd.choice([200, 404, 500, 503]), rnd.choice([None, 1234]),
                rnd.choice([None, "https://ex.com/?q=\"x\""]), rnd.choice([None, 'Mozilla/5.0 "quoted", ok']),
            )
            lines.append(logformat.format_event(ev, fmt))
    rows = spark_rows(spark, lines)
    for i, line in enumerate(lines):
        assert spark_view(rows[i]) == python_view(line), line


def test_fast_parts_and_full_rules_give_parse_column(spark):
    """The detector's split parse (fast path cached first, full rules on the rest only)
    gives the same rows as ``parse_column``; ``raw`` is kept for the refused lines."""
    from pyspark.sql import functions as F

    lines = corpus_lines() + [logformat.format_combined(logformat.Event(
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "10.0.0.1", "GET", "/a", "x=1", "HTTP/1.1", 503, 12, None, "ua"))]
    df = spark.createDataFrame([(i, x) for i, x in enumerate(lines)], "n long, value string")
    fast, good, keep = sparkparse.fast_parts(df, "value")
    fast = fast.cache()
    try:
        assert fast.where(F.col("__fast_ok")).count() >= 1
        split = {r["n"]: r for r in good.unionByName(sparkparse.full_rules_of(fast, keep)).collect()}
    finally:
        fast.unpersist()
    whole = {r["n"]: r for r in sparkparse.parse_column(df, "value").collect()}
    assert sorted(split) == sorted(whole) == list(range(len(lines)))
    for n, row in whole.items():
        assert spark_view(split[n]) == spark_view(row), lines[n]
        if row["reason"] is not None:
            assert split[n]["raw"] == row["raw"]


def test_fast_path_dates_agree_with_python_parser(spark):
    """The fast path converts the Combined time with integer arithmetic (days from the
    civil date): month lengths, leap years, offsets crossing midnight or the year, and
    out-of-range fields all give what logformat.parse gives (an event or a reason)."""
    from pyspark.sql import functions as F

    times = []
    for day, mon, year in [("01", "Jan", "2026"), ("31", "Dec", "2025"), ("29", "Feb", "2024"),
                           ("29", "Feb", "2025"), ("29", "Feb", "1900"), ("29", "Feb", "2000"),
                           ("28", "Feb", "2100"), ("31", "Apr", "2026"), ("30", "Apr", "2026"),
                           ("31", "Jun", "2026"), ("31", "Jul", "2026"), ("00", "Mar", "2026"),
                           ("32", "Jan", "2026"), ("15", "Foo", "2026"), ("01", "Mar", "1000"),
                           ("31", "Dec", "9998"), ("01", "Jan", "9999"), ("31", "Dec", "0999"),
                           ("01", "Jan", "1970"), ("31", "Dec", "1969"), ("01", "Mar", "2400")]:
        for clock in ("00:00:00", "23:59:59", "12:34:56", "24:00:00", "00:60:00", "00:00:60"):
            for zone in ("+0000", "-0000", "+0530", "-2359", "+2359", "+2400", "-0060", "-0800"):
                times.append(f"{day}/{mon}/{year}:{clock} {zone}")
    lines = [f'10.0.0.{i % 9} - - [{t}] "GET /a/{i}?x=1 HTTP/1.1" {200 + i % 400} {i} "-" "ua {i}"'
             for i, t in enumerate(times)]
    rows = spark_rows(spark, lines)
    for i, line in enumerate(lines):
        assert spark_view(rows[i]) == python_view(line), line
    df = spark.createDataFrame([(x,) for x in lines], "value string")
    fast, _good, _keep = sparkparse.fast_parts(df, "value")
    taken = fast.where(F.col("__fast_ok")).count()
    # every valid one of these plain lines takes the fast path, but for years its range leaves out
    valid = sum(1 for x, t in zip(lines, times, strict=True)
                if not isinstance(logformat.parse(x), logformat.Invalid) and 1000 <= int(t[7:11]) <= 9998)
    assert 0 < taken == valid
