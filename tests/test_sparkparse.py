"""The Spark-native parser agrees with chaussettes.logformat on the shared corpus and on hostile
lines of 1-64 KB; no pattern it runs can overflow Java's regex stack (issue 26)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from chaussettes import logformat, schemas, sparkparse
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

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
    # a line over the limit keeps a bounded prefix and its length; the others are whole
    assert any(len(x) > logformat.MAX_LINE_LENGTH for x in bad)
    assert sorted((r["raw"], r["raw_length"]) for r in q) == sorted(
        (x if len(x) <= logformat.MAX_LINE_LENGTH else x[:schemas.QUARANTINE_RAW_PREFIX], len(x)) for x in bad)
    assert {r["topic"] for r in q} == {"http-logs"} and all(r["partition"] == 2 for r in q)
    assert all(r["reason"] in logformat.REASONS and r["quarantined_at"] is not None for r in q)


def test_quarantine_keeps_a_bounded_prefix_of_an_over_long_line(spark):
    """A flood of huge lines must not fill the disk: the quarantine keeps the first
    QUARANTINE_RAW_PREFIX characters of a line over the limit, its length and the reason."""
    huge = "203.0.113.9 " + "é" * 1_000_000
    lines = [huge.encode(), b"\xff" + huge.encode(), logformat.CSV_HEADER.encode()]
    df = spark.createDataFrame([(x,) for x in lines], "value binary")
    q = {r["raw_length"]: r for r in sparkparse.parse_lines(df)[1].collect()}
    assert sorted(q) == [len(logformat.CSV_HEADER), len(huge), len(huge) + 1]
    assert (q[len(huge)]["raw"], q[len(huge)]["reason"]) == (huge[:schemas.QUARANTINE_RAW_PREFIX], "too_long")
    assert (q[len(huge) + 1]["raw"], q[len(huge) + 1]["reason"]) == (
        "\ufffd" + huge[:schemas.QUARANTINE_RAW_PREFIX - 1], "not_utf8")
    assert q[len(logformat.CSV_HEADER)]["raw"] == logformat.CSV_HEADER  # within the limit: whole


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


# ----------------------------------------------------------------------------- hostile lines
# Issue 26: a Combined line whose user agent was a few KB of \" (how httpd logs a '"' the
# client sent) overflowed the stack of the Spark task that ran the full rules' quoted-field
# pattern: Java's regex engine recurses once per repetition of a backtracking group. The JVM
# died, and again on every restart (the checkpoint replays the line).

def _poison_lines() -> list[str]:
    head = '203.0.113.9 - - [30/May/2025:18:52:47 +0000] "GET /a HTTP/1.1" 200 5 "-" "'
    csv = "2025-05-30T18:52:47Z,203.0.113.9,GET,/a,HTTP/1.1,200,5,-,"
    room = logformat.MAX_LINE_LENGTH - len(head) - 1
    return [
        head + '\\"' * 1750 + '"',  # the reproduction: a 3.5 KB user agent of \"
        head + '\\"' * (room // 2) + '"',  # the same up to the longest line accepted
        head + "a\\\\" * (room // 3) + '"',  # backslashes
        head + '\\"' * (room // 2),  # no closing quote: bad_field
        '203.0.113.9 - - [30/May/2025:18:52:47 +0000] "GET /' + '\\"' * 8000 + ' HTTP/1.1" 200 5 "-" "-"',
        csv + '"' + '""' * 8000 + '"',  # a quoted CSV field of doubled quotes
        csv + '"' + "a" * 16000 + '"',
        csv[:20] + "," * 16000,  # 16,000 fields: bad_field
        head + '\\"' * 40000 + '"',  # over the limit: too_long
    ]


_CHILD = """
import json, sys
from chaussettes import settings, sparkparse
from chaussettes.sparkconf import build_session

lines = json.loads(sys.stdin.read())
spark = build_session("poison", settings.load(env={}, home=sys.argv[1]), master="local[1]",
                      extra={"spark.ui.enabled": "false"})
spark.sparkContext.setLogLevel("ERROR")
df = spark.createDataFrame(list(enumerate(lines)), "n long, value string")
rows = sparkparse.parse_column(df, "value").select("n", "reason", "user_agent").collect()
print(json.dumps({r["n"]: [r["reason"], r["user_agent"]] for r in rows}))
spark.stop()
"""


def test_poison_lines_do_not_kill_the_jvm(tmp_path):
    """The reproduction, in a session of its own (a JVM that dies must not take the test
    session's down): every poison line parses or is quarantined, as logformat says."""
    import os
    import subprocess
    import sys

    lines = _poison_lines()
    result = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "home")], input=json.dumps(lines),
                            capture_output=True, text=True, timeout=600, check=False,
                            env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    # a dead JVM's log is mostly stack frames: show its errors, once each (not the
    # warnings of a plan too large to compile, which Spark then runs interpreted)
    errors = dict.fromkeys(x.strip() for x in result.stderr.splitlines()
                           if ("Error" in x or "Exception" in x) and not x.lstrip().startswith("at ")
                           and "generated.java" not in x and "codehaus" not in x)
    assert result.returncode == 0, "\n".join(errors)[:3000]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    for i, line in enumerate(lines):
        expected = logformat.parse(line)
        reason, user_agent = got[str(i)]
        assert reason == getattr(expected, "reason", None), (line[:100], reason, expected)
        if reason is None:
            assert user_agent == expected.user_agent
    assert [got[str(i)][0] for i in range(len(lines))] == \
        [None, None, None, "bad_field", None, None, None, "bad_field", "too_long"]


# Regex nodes of a Spark plan and the argument that holds the pattern.
_PATTERN_ARGUMENT = {"RLike": "right", "RegExpReplace": "regexp", "RegExpExtract": "regexp",
                     "RegExpExtractAll": "regexp", "StringSplit": "regex", "RegExpCount": "right",
                     "RegExpSubStr": "right", "RegExpInStr": "right"}


def plan_patterns(df) -> set[str]:
    """Every regular expression in ``df``'s analyzed plan (each must be a literal)."""
    found: set[str] = set()

    def subtree(nodes, i):  # expressions are flattened in pre-order: returns the index after
        node, j, starts = nodes[i], i + 1, []
        for _ in range(node["num-children"]):
            starts.append(j)
            j = subtree(nodes, j)
        argument = _PATTERN_ARGUMENT.get(node["class"].rsplit(".", 1)[-1])
        if argument is not None:
            pattern = nodes[starts[node[argument]]]
            assert pattern["class"].endswith(".Literal"), f"a pattern computed per row: {pattern}"
            found.add(pattern["value"])
        return j

    def walk(x):
        if isinstance(x, list):
            if x and isinstance(x[0], dict) and ".expressions." in x[0].get("class", ""):
                subtree(x, 0)
            for y in x:
                walk(y)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)

    walk(json.loads(df._jdf.queryExecution().analyzed().toJSON()))
    return found


def backtracking_repeats(pattern: str) -> list[str]:
    """The groups of ``pattern`` repeated without bound by a quantifier that backtracks
    (``(...)*``, ``(...)+``, ``(...){n,}``, lazy ones too): Java's regex engine recurses once
    per repetition of such a group. Possessive (``*+``) ones, and ``?``, are fine."""
    import re

    found, stack, i, in_class = [], [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            i += 1
            i += pattern.startswith("^", i)
            i += pattern.startswith("]", i)  # a ']' first in a class is one of its characters
            continue
        elif ch == "(":
            stack.append(i)
        elif ch == ")":
            start = stack.pop()
            rest = pattern[i + 1:]
            bounded = re.match(r"\{\d+(,\d+)?\}", rest)
            unbounded = re.match(r"[*+]|\{\d+,\}", rest)
            if unbounded and not bounded and not rest[unbounded.end():].startswith("+"):
                found.append(pattern[start:i + 1 + unbounded.end()])
        i += 1
    return found


def test_the_pattern_checker_finds_backtracking_repeats():
    old_quoted = r'"((?:[^"\\]|\\[\s\S])*)"'
    unrolled = r'"([^"\\]*(?:\\[\s\S][^"\\]*)*)"'
    assert backtracking_repeats(old_quoted) == [r'(?:[^"\\]|\\[\s\S])*']
    assert backtracking_repeats(unrolled) == [r'(?:\\[\s\S][^"\\]*)*']
    assert backtracking_repeats(r"^(?:,(a|b))+?$") == [r"(?:,(a|b))+"]
    assert backtracking_repeats(r"(?:ab){2,}x") == [r"(?:ab){2,}"]
    assert backtracking_repeats(logformat.QUOTED) == []
    assert backtracking_repeats(r"^[()*]+ (\d{1,18}|-)(?:\.\d++)?(?: [\s\S]*)?(?:x){1,9}[^\]()]*$") == []


def test_no_pattern_the_parsers_run_repeats_a_backtracking_group(spark):
    import re

    df = spark.createDataFrame([("x", b"x")], "value string, bytes binary")
    fast, good, keep = sparkparse.fast_parts(df.select("value"), "value")
    patterns = set()
    for plan in (sparkparse.parse_column(df.select("value"), "value"),
                 sparkparse.parse_column(df.select("bytes"), "bytes"),
                 good.unionByName(sparkparse.full_rules_of(fast, keep)),
                 sparkparse.fast_of(df.select("value"), "value", native=False)):  # without the jar
        patterns |= plan_patterns(plan)
    assert {sparkparse.COMBINED_FULL, sparkparse.FAST_COMBINED, sparkparse.CSV_WELL_FORMED} <= patterns
    python = {v.pattern for v in vars(logformat).values() if isinstance(v, re.Pattern)}
    assert logformat.COMBINED_FULL_RE.pattern in python
    offending = {p: backtracking_repeats(p) for p in patterns | python if backtracking_repeats(p)}
    assert not offending, offending


# Lines of 1 to 64 KB heavy in quotes, backslashes, separators and bytes that are not text,
# built from a short unit repeated (Hypothesis draws the unit, the length and where the
# run goes): the Spark parser must give what logformat.parse gives, an event or a reason.
_HOSTILE = '"\\\\ ,{}[]-?/\t\x00\x01\x7fé\u2028\U0001f600a0'
_COMBINED = '203.0.113.9 - - [30/May/2025:18:52:47 +0000] "GET /a HTTP/1.1" 200 5 '
_SHAPES = {  # where the run goes
    "user_agent": lambda run: _COMBINED + '"-" "' + run + '"',
    "referrer": lambda run: _COMBINED + '"' + run + '" "ua"',
    "request": lambda run: '203.0.113.9 - - [30/May/2025:18:52:47 +0000] "GET /' + run + ' HTTP/1.1" 200 5 "-" "-"',
    "after_user_agent": lambda run: _COMBINED + '"-" "ua" ' + run,
    "whole_line": lambda run: run,
    "csv_quoted": lambda run: '2025-05-30T18:52:47Z,203.0.113.9,GET,/a,HTTP/1.1,200,5,-,"' + run + '"',
    "csv_rest": lambda run: "2025-05-30T18:52:47Z" + run,
    "json_user_agent": lambda run: ('{"timestamp": "2025-05-30T18:52:47Z", "ip": "203.0.113.9", "method": "GET", '
                                    '"url": "/a", "status": 200, "user_agent": "' + run + '"}'),
    "json_rest": lambda run: "{" + run,
}


@st.composite
def hostile_lines(draw):
    size = draw(st.one_of(st.integers(1024, 65536), st.integers(logformat.MAX_LINE_LENGTH - 200,
                                                                 logformat.MAX_LINE_LENGTH + 2)))
    if draw(st.integers(0, 4)) == 0:  # bytes, as a Kafka value: often not UTF-8
        unit = draw(st.binary(min_size=1, max_size=8))
        return (unit * (size // len(unit) + 1))[:size]
    unit = draw(st.text(alphabet=_HOSTILE, min_size=1, max_size=8))
    shape = _SHAPES[draw(st.sampled_from(sorted(_SHAPES)))]
    line = shape((unit * (size // len(unit) + 1))[:size])
    return line[:size] if draw(st.booleans()) else line  # cut: the run's closing quote lost


@hsettings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(hostile_lines(), min_size=16, max_size=32))
def test_hostile_lines_parse_or_are_quarantined_like_the_python_parser(spark, lines):
    rows = spark_rows(spark, lines, binary=True)
    for i, line in enumerate(lines):
        got = spark_view(rows[i])
        assert got[0] == "event" or got[1] in logformat.REASONS, got
        assert got == python_view(line), (line[:200], got, python_view(line))
        if isinstance(line, bytes) and got != ("invalid", "not_utf8"):
            line = line.decode("utf-8")
        if got[0] == "invalid" and isinstance(line, str):  # the quarantine's record of it
            assert rows[i]["raw_length"] == len(line)
            assert rows[i]["raw"] == (line if len(line) <= logformat.MAX_LINE_LENGTH
                                      else line[:schemas.QUARANTINE_RAW_PREFIX])


def _typical_lines(count: int, seed: int) -> list[str]:
    import random

    rnd = random.Random(seed)
    lines = []
    for i in range(count):
        ev = logformat.Event(
            dt.datetime(2025, 5, 30, 18, 52, 47, tzinfo=dt.UTC) + dt.timedelta(seconds=i * 97),
            rnd.choice([f"10.0.{i % 7}.{i % 250}", "2001:db8::1"]), rnd.choice(["GET", "POST", "M-SEARCH"]),
            rnd.choice(["/", f"/resource/{i}", "/a-b_c.d/%20"]), rnd.choice([None, "a=1&b=2", "", "x=?/"]),
            rnd.choice(["HTTP/1.1", "HTTP/2", "HTTP/1.0"]), rnd.choice([200, 404, 500, 503, 101]),
            rnd.choice([None, 0, 1234, 10**17]), rnd.choice([None, "https://ex.com/?q=x"]),
            rnd.choice([None, "Mozilla/5.0 (X11; Linux)", "curl/8"]))
        lines.append(logformat.format_combined(ev))
    return lines


def _mutations(lines: list[str], count: int, seed: int) -> list[str]:
    """Lines one to three characters away from ``lines`` (deleted, inserted or replaced),
    with the characters the fast path's grammar turns on."""
    import random

    rnd = random.Random(seed)
    alphabet = ' "\\?[]-/:.+_0159AZaz\n\u0001\u00e9\u2028'
    out = []
    for _ in range(count):
        line = rnd.choice(lines)
        for _ in range(rnd.randint(1, 3)):
            at, ch = rnd.randrange(len(line) + 1), rnd.choice(alphabet)
            line = [line[:at] + ch + line[at:], line[:at] + line[at + 1:], line[:at] + ch + line[at + 1:]][rnd.randrange(3)]
        out.append(line)
    return out


def _whole_parse(df, native: bool, refuse=None) -> dict:
    """Row number -> (the fast path took it, the parse as the detector's steps see it:
    event columns and reason, and the line only for a refused one)."""
    fast = sparkparse.fast_of(df, native=native, refuse=refuse)
    good, keep = sparkparse.good_of(fast)
    rows = good.unionByName(sparkparse.full_rules_of(fast, keep)).collect()
    taken = {r["n"] for r in fast.where("__fast_ok").select("n").collect()}
    return {r["n"]: (r["n"] in taken, {**{c: r[c] for c in schemas.EVENT_COLUMNS}, "reason": r["reason"],
                                       "raw": r["raw"] if r["reason"] else None}) for r in rows}


def test_the_java_scanner_parses_like_the_fast_paths_regular_expression(spark):
    """``chaussettes.jvm``'s FastCombined (the jar ``make`` builds) reads lines as the
    regular expression's fast path does: the same events and refusals, row for row and
    column for column, on the corpus, on typical lines, on thousands of lines a few
    characters away from them and on bytes that are not UTF-8. It takes every line the
    expression takes but those with a blank at either end (the full rules trim them) and
    those of more bytes than the limit has characters (the full rules count them)."""
    from chaussettes import jvm

    assert jvm.available(spark, jvm.FAST_COMBINED), "the jar is not built, or not on the driver's class path"
    assert spark._jvm.chaussettes.jvm.FastCombined.maxLineBytes() == logformat.MAX_LINE_LENGTH
    auto = sparkparse.fast_of(spark.createDataFrame([("x",)], "value string"))._jdf.queryExecution().toString()
    assert jvm.FAST_COMBINED in auto and "regexp_replace" not in auto  # what the detector runs
    typical = _typical_lines(400, seed=3)
    lines = corpus_lines() + typical + _mutations(typical + corpus_lines(), 6000, seed=5)
    lines += [line + tail for line in typical[:50] for tail in (" extra", " \"x\"", " 1", *logformat.TRIM)]
    lines += [blank + line for line in typical[50:60] for blank in logformat.TRIM]
    lines += [typical[0][:-1] + "é" * (logformat.MAX_LINE_LENGTH - len(typical[0])) + '"']  # 16K chars, more bytes
    encoded = [x.encode() for x in lines]
    # not UTF-8 (a lone continuation byte, overlong forms, surrogates, past U+10FFFF, cut
    # sequences) and the first well-formed sequences of each kind, in the user agent
    agent = typical[1].encode().rindex(b'"')
    for seq in (b"\x80", b"\xc0\xaf", b"\xc1\xbf", b"\xc2\x80", b"\xdf\xbf", b"\xe0\x9f\xbf", b"\xe0\xa0\x80",
                b"\xed\x9f\xbf", b"\xed\xa0\x80", b"\xee\x80\x80", b"\xf0\x8f\xbf\xbf", b"\xf0\x90\x80\x80",
                b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"\xe2\x82", b"\xf0\x9f\x98"):
        encoded.append(typical[1].encode()[:agent] + seq + typical[1].encode()[agent:])
        encoded.append(typical[1].encode() + b" " + seq)  # at the very end
    df = spark.createDataFrame(list(enumerate(encoded)), "n long, value binary")
    java, regex = _whole_parse(df, native=True), _whole_parse(df, native=False)
    assert sorted(java) == sorted(regex) == list(range(len(encoded)))
    differ = [f"{encoded[n][:160]!r}: java {java[n][1]} regex {regex[n][1]}" for n in regex if java[n][1] != regex[n][1]]
    assert not differ, "\n".join(differ[:10])
    only_regex = [n for n in regex if regex[n][0] and not java[n][0]]
    blank = [c.encode() for c in logformat.TRIM]
    assert [n for n in only_regex if encoded[n][:1] not in blank and encoded[n][-1:] not in blank
            and len(encoded[n]) <= logformat.MAX_LINE_LENGTH] == []
    assert len(only_regex) >= 60 * len(logformat.TRIM) + 1
    assert not [n for n in java if java[n][0] and not regex[n][0]]
    taken = sum(t for t, _ in regex.values())
    assert 1000 < taken < len(encoded) - 1000  # both outcomes, many times
    assert sum(1 for _, r in java.values() if r["reason"] == "not_utf8") >= 13
    # lines the fast path parses but is told to leave (the detector's future_time): the
    # full rules get them whole
    from pyspark.sql import functions as F

    status = F.col("status") == 503
    java, regex = _whole_parse(df, native=True, refuse=status), _whole_parse(df, native=False, refuse=status)
    assert {n: r for n, (_, r) in java.items()} == {n: r for n, (_, r) in regex.items()}
    assert sum(r["status"] == 503 for t, r in java.values() if not t) > 100
