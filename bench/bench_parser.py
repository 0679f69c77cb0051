"""Line parser benchmarks (``make bench``): time per line of long and hostile lines against
a plain one, in the Spark parser as the detector runs it (``sparkparse.fast_parts`` cached,
``full_rules_of`` on the lines the fast path refused; local[2], the output written to
Spark's ``noop`` sink) and in the pure-Python ``logformat.parse``.

The kinds of line (``KINDS``): a plain Combined line (the fast path), a short one with an
escaped quote (the full rules), then lines up to the longest accepted
(``logformat.MAX_LINE_LENGTH`` characters): user agents of ``\\"`` (the line that used to
overflow Java's regex stack), of backslashes, a CSV line with a long quoted field, and an
over-long line (quarantined as ``too_long``). Spark's figure is the cost of one more line
(see ``_spark_seconds_per_line``): ``BENCH_PARSER_SPARK_SECONDS`` (default 8) of work per
run, at most ``BENCH_PARSER_BYTES`` (default 256 MB) of lines; ``BENCH_PARSER_SECONDS``
(default 1) is the time per kind in Python. The ratios to the plain line are in the notes.
"""

from __future__ import annotations

import os
import time

from chaussettes import logformat, sparkparse

HEAD = '203.0.113.9 - - [30/May/2025:18:52:47 +0000] "GET /resource/42?id=7 HTTP/1.1" 404 153 "-" "'
PLAIN = HEAD + 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"'
MAX = logformat.MAX_LINE_LENGTH


def _ua_line(unit: str, length: int) -> str:
    """A Combined line of exactly ``length`` characters whose user agent repeats ``unit``."""
    room = length - len(HEAD) - 1
    body = (unit * (room // len(unit) + 1))[:room]
    if body.endswith("\\") and not body.endswith("\\\\"):
        body = body[:-1] + "x"  # a lone final backslash would escape the closing quote
    return HEAD + body + '"'


def _csv_line(length: int) -> str:
    head = '2025-05-30T18:52:47Z,203.0.113.9,GET,/resource/42,HTTP/1.1,404,153,-,"'
    room = length - len(head) - 1
    body = ('say ""hi"", ' * (room // 12 + 1))[:room].rstrip('"')  # no half of a '""' at the end
    return head + body.ljust(room, "x") + '"'


KINDS = {
    "plain Combined (fast path)": PLAIN,
    "Combined with one \\\" (full rules)": HEAD + 'say \\"hi\\""',
    'UA of \\" 3.5 KB': _ua_line('\\"', 3500),
    f'UA of \\" {MAX // 1024} KiB (max)': _ua_line('\\"', MAX),
    f"UA of backslashes {MAX // 1024} KiB": _ua_line("a\\\\", MAX),
    f"CSV quoted field {MAX // 1024} KiB": _csv_line(MAX),
    "over-long 64 KiB (too_long)": _ua_line('\\"', 65536),
}


def _spark_seconds(spark, line: str, n: int) -> tuple[float, str]:
    """Seconds to parse ``n`` copies of ``line`` as the detector does (the fast path cached,
    the full rules on the lines it refused; output to the ``noop`` sink), and the result."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    # cached first: the parse reads a column, not a literal the optimizer could fold
    df = spark.range(n).select(F.col("id").alias("n"), F.lit(line).alias("value")).cache()
    df.count()
    t0 = time.perf_counter()
    fast, good, keep = sparkparse.fast_parts(df, "value")
    fast = fast.persist(StorageLevel.MEMORY_AND_DISK)
    parsed = good.unionByName(sparkparse.full_rules_of(fast, keep))
    parsed.write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - t0
    reason = parsed.select("reason").first()[0]
    fast.unpersist()
    df.unpersist()
    return seconds, reason or "event"


def _spark_seconds_per_line(spark, line: str, budget_bytes: int, seconds: float) -> tuple[float, str]:
    """The cost of one more line. A query's fixed cost (planning, and a whole-stage code
    generation that fails on the full rules' plan and falls back) is seconds, as much as
    parsing 10^5 plain lines: the fastest of 3 runs of n lines minus the fastest of 3 runs
    of one, n chosen (from a probe, within ``budget_bytes``) for about ``seconds`` of work."""
    _spark_seconds(spark, line, 1)  # warm-up
    one = min(_spark_seconds(spark, line, 1)[0] for _ in range(3))
    probe = max(100, (4 << 20) // len(line.encode()))
    per = max(_spark_seconds(spark, line, probe)[0] - one, 1e-3) / probe
    n = int(max(100, min(seconds / per, budget_bytes / len(line.encode()))))
    runs = [_spark_seconds(spark, line, n) for _ in range(3)]
    return max(min(t for t, _ in runs) - one, 0.0) / n, runs[0][1]


def _python_seconds_per_line(line: str, seconds: float) -> tuple[float, str]:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(50):
            result = logformat.parse(line)
        n += 50
    per = (time.perf_counter() - t0) / n
    return per, getattr(result, "reason", "event")


def _fast_path_seconds(spark, df, native: bool) -> float:
    t0 = time.perf_counter()
    sparkparse.fast_of(df, "value", native=native).write.format("noop").mode("overwrite").save()
    return time.perf_counter() - t0


def fast_path_engines(spark, n: int) -> list[dict]:
    """The fast path alone over ``n`` varied Combined lines (bytes, cached; ~1k clients, 100
    paths, queries, referrers), its groups from the regular expression vs from the Java scanner
    (``chaussettes.jvm``): the best of 3 runs each, alternated, in one session."""
    from chaussettes import jvm
    from pyspark.sql import functions as F

    if not jvm.available(spark, jvm.FAST_COMBINED):
        return [{"name": "spark: fast path, regular expression / Java scanner", "value": float("nan"),
                 "unit": "x", "goal": None, "note": "the jar is not built (python -m chaussettes jvm)"}]
    i = F.col("id")
    line = F.format_string('10.1.%d.%d - - [07/Dec/2026:10:%02d:%02d +0000] "GET /p/%d?q=%d HTTP/1.1" %d %d '
                           '"https://example.com/%d" "Mozilla/5.0 (X11; Linux x86_64) bench/%d"',
                           F.expr("(id % 997) div 250"), i % 250, F.expr("(id div 60) % 60"), i % 60, i % 100, i % 13,
                           F.when(i % 20 == 0, F.lit(500)).otherwise(F.lit(200)), i % 5000, i % 7, i % 3)
    df = spark.range(n).select(line.cast("binary").alias("value")).cache()  # as Kafka gives them
    df.count()
    runs = {True: [], False: []}
    for _ in range(3):
        for native in (False, True):
            runs[native].append(_fast_path_seconds(spark, df, native))
    df.unpersist()
    regex, java = min(runs[False]), min(runs[True])
    note = f"{n:,} lines, local[2], output to the noop sink; best of 3"
    return [{"name": "spark: fast path by regular expression", "value": round(regex / n * 1e6, 3),
             "unit": "µs/line", "goal": None, "note": note},
            {"name": "spark: fast path by the Java scanner", "value": round(java / n * 1e6, 3),
             "unit": "µs/line", "goal": None, "note": note},
            {"name": "spark: fast path, regular expression / Java scanner", "value": round(regex / java, 2),
             "unit": "x", "goal": None, "note": f"{note}; the same rows (tests/test_sparkparse.py)"}]


def run(ctx) -> list[dict]:
    spark = ctx.spark()
    budget = int(os.environ.get("BENCH_PARSER_BYTES", str(256 << 20)))
    spark_seconds = float(os.environ.get("BENCH_PARSER_SPARK_SECONDS", "8"))
    py_seconds = float(os.environ.get("BENCH_PARSER_SECONDS", "1.0"))
    out = []
    base_spark = base_py = None
    for name, line in KINDS.items():
        s_per, s_reason = _spark_seconds_per_line(spark, line, budget, spark_seconds)
        p_per, p_reason = _python_seconds_per_line(line, py_seconds)
        assert s_reason == p_reason, (name, s_reason, p_reason)
        base_spark = base_spark or s_per
        base_py = base_py or p_per
        note = f"{len(line):,} chars, {s_reason}"
        out.append({"name": f"spark: {name}", "value": round(s_per * 1e6, 2), "unit": "µs/line", "goal": None,
                    "note": f"{note}, {s_per / base_spark:.1f}x plain" if base_spark else note})
        out.append({"name": f"python: {name}", "value": round(p_per * 1e6, 2), "unit": "µs/line", "goal": None,
                    "note": f"{note}, {p_per / base_py:.1f}x plain"})
    return out + fast_path_engines(spark, int(os.environ.get("BENCH_PARSER_FAST_LINES", "2000000")))
