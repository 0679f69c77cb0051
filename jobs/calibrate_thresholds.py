"""Learn ``seuils.json`` from history, prove it by replay, write it atomically.

Run with spark-submit (the venv's; ``--master`` as you like, ``local[2]`` on one machine)::

    spark-submit --master local[2] jobs/calibrate_thresholds.py \\
        --source archive --input var/data/archive \\
        --start 2026-11-22T00:00:00Z --end 2026-11-23T00:00:00Z \\
        --output var/artifacts/thresholds/candidates/seuils.json

(``python jobs/calibrate_thresholds.py ...`` works too, with ``--master``.)

Sources
    ``archive`` (default): the detector's Parquet archive (``schemas.EVENT_FIELDS``,
    partitioned by date/hour; default ``settings.archive_dir``);
    ``kafka``: the ``http-logs`` topic (``--input`` names another topic) read through
    ``chaussettes.spark_kafka`` with ``startingTimestamp``/``endingTimestamp`` from
    ``--start``/``--end``, lines parsed by ``chaussettes.sparkparse``;
    ``files``: access-log files (Combined, JSON, CSV, ``.gz`` too; a file, a folder or a
    glob) parsed by ``chaussettes.sparkparse``. Unparseable lines are counted and reported.

What it does (``chaussettes.calibration`` has the details): the detector's windowed
statistic over the history; baselines per kind (by hour of the day with 7 days of history,
of the week with 28) and per key with enough history (shrunk toward its kind's; chronic
keys listed); each kind's over-dispersion; then the evidence threshold at which the
detector's rule, replayed on the first 80 % of the history, gives at most ``--budget``
incidents a day — checked on the held-out last 20 %. The file (seuils.json schema 2, the
evidence rule) is validated against the schema and written atomically, or nothing is
written.

Exit status: 0 written (or ``--dry-run``), 1 no acceptable thresholds (empty or short
history, budget unreachable or missed out of sample, ...), 2 bad usage. Errors are one line
on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from chaussettes import calibration as cal
from chaussettes import settings as settings_mod
from chaussettes import thresholds as th

PROG = "calibrate_thresholds"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise UsageError(message)


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError("not a number: nan")
    return value


def _seconds(text: str) -> int:
    t = text.strip().lower()
    scale = 1
    for suffix, mult in (("min", 60), ("m", 60), ("s", 1), ("h", 3600)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)].strip(), mult
            break
    try:
        value = int(t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration in seconds: {text!r}") from None
    return value


def parse_time(text: str) -> datetime:
    """ISO-8601 (``Z`` or an offset; no zone = UTC), or a Unix time in seconds."""
    raw = text.strip()
    try:
        if raw.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(raw), tz=UTC)
        value = datetime.fromisoformat(raw.replace("z", "Z"))
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _per_kind(text: str, auto: bool = True) -> dict[str, int | None]:
    """``auto`` | ``N`` (every kind) | ``global=50,ip=20,url=auto`` (others auto: None)."""
    out: dict[str, int | None] = {"global": None, "ip": None, "url": None}
    t = text.strip().lower()
    if auto and t in ("auto", "derive", ""):
        return out
    try:
        if "=" not in t:
            return dict.fromkeys(out, int(t))
        for part in t.split(","):
            kind, _, value = part.partition("=")
            kind = kind.strip()
            if kind not in out:
                raise argparse.ArgumentTypeError(f"unknown kind {kind!r} (expected global, ip, url)")
            out[kind] = None if value.strip() in ("auto", "") and auto else int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'auto, ' if auto else ''}N or global=N,ip=N,url=N: {text!r}") from None
    return out


def _min_requests(text: str) -> dict[str, int | None]:
    return _per_kind(text)


def _min_errors(text: str) -> dict[str, int]:
    given = _per_kind(text, auto=False)
    default = cal.Params().min_errors
    return {k: default[k] if v is None else v for k, v in given.items()}


def _pin(text: str) -> tuple[str, str, float]:
    """``KIND:KEY=RATE`` e.g. ``url:/login=0.4`` (the key may contain ':'; the rate is after the last '=')."""
    kind, sep, rest = text.partition(":")
    key, sep2, rate = rest.rpartition("=")
    if not sep or not sep2 or kind not in ("ip", "url") or not key:
        raise argparse.ArgumentTypeError(f"expected ip:KEY=RATE or url:KEY=RATE, got {text!r}")
    return kind, key, _float(rate)


def build_parser() -> argparse.ArgumentParser:
    d = cal.Params()
    p = _Parser(prog=PROG, description="Learn seuils.json from history and prove it by replay.")
    src = p.add_argument_group("history")
    src.add_argument("--source", choices=("archive", "kafka", "files"), default="archive")
    src.add_argument("--input", help="archive: Parquet folder (default settings.archive_dir); "
                     "files: a file, folder or glob of access logs; kafka: the topic (default http-logs)")
    src.add_argument("--start", type=parse_time, help="history start, ISO-8601 (inclusive)")
    src.add_argument("--end", type=parse_time, help="history end, ISO-8601 (exclusive)")
    src.add_argument("--bootstrap-servers", help="kafka source: overrides CHAUSSETTES_BOOTSTRAP_SERVERS")
    out = p.add_argument_group("output")
    out.add_argument("--output", help="where to write seuils.json (default <run_dir>/seuils.candidate.json)")
    out.add_argument("--version", type=int, dest="doc_version",
                     help="the document's version (default: Unix time; the artifact store renumbers on publish)")
    out.add_argument("--dry-run", action="store_true", help="compute and validate, write nothing")
    out.add_argument("--summary-json", help="also write the figures as JSON here")
    fit = p.add_argument_group("the evidence rule")
    fit.add_argument("--budget", type=_float, default=d.budget,
                     help=f"incidents a day the whole site may raise on the replayed history (default {d.budget:g})")
    fit.add_argument("--holdout", type=_float, default=d.holdout,
                     help="last share of the time range kept out of sample, in [0, 1)")
    fit.add_argument("--oos-confidence", type=_float, default=d.oos_confidence,
                     help="the held-out tail may exceed the budget by chance up to this Poisson quantile")
    fit.add_argument("--min-errors", type=_min_errors, default=dict(d.min_errors),
                     help="N or global=N,ip=N,url=N: fewer errors in a window never breach (default 3)")
    fit.add_argument("--season", choices=cal.params.SEASON_CHOICES, default=d.season,
                     help="baselines by hour: auto (hour_of_week from 28 days of history, hour_of_day from 7)")
    fit.add_argument("--z-min", type=_float, default=d.z_min, help="the evidence threshold's lower bound")
    fit.add_argument("--z-max", type=_float, default=d.z_max, help="... and upper bound")
    fit.add_argument("--rate-floor", type=_float, default=d.rate_floor, help="baselines stay in [floor, 1 - floor]")
    fit.add_argument("--resolve-after", type=int, default=d.resolve_after,
                     help="written to the file: quiet judged windows that resolve an incident")
    fit.add_argument("--min-windows", type=int, default=d.min_windows,
                     help="fewest in-sample global windows (else the history is too short)")
    win = p.add_argument_group("windows (same as the detector)")
    win.add_argument("--window-length", type=_seconds, default=d.length_s)
    win.add_argument("--window-slide", type=_seconds, default=d.slide_s)
    win.add_argument("--watermark", type=_seconds, default=d.watermark_s)
    win.add_argument("--error-status-min", type=int, help="an error is status >= this (default settings, 400)")
    mr = p.add_argument_group("min_requests")
    mr.add_argument("--min-requests", type=_min_requests, default=_min_requests("auto"),
                    help="auto (the kind's min errors), N, or global=N,ip=N,url=N")
    keys = p.add_argument_group("baselines of their own")
    keys.add_argument("--key-min-requests", type=int, default=d.key_min_requests,
                      help="in-sample requests a key needs for a baseline of its own")
    keys.add_argument("--key-min-coverage", type=_float, default=d.key_min_coverage,
                      help="share of the in-sample hours it must be seen in (an incident is not a normal)")
    keys.add_argument("--key-prior", type=_float, default=d.key_prior,
                      help="requests' worth of its kind's baseline it is shrunk toward")
    keys.add_argument("--max-keys", type=int, default=d.max_keys, help="per kind, those with the most requests")
    keys.add_argument("--chronic-ratio", type=_float, default=d.chronic_ratio,
                      help="chronic: a baseline this many times its kind's ...")
    keys.add_argument("--chronic-delta", type=_float, default=d.chronic_delta, help="... and this much above it")
    keys.add_argument("--pin", type=_pin, action="append", default=[], metavar="KIND:KEY=RATE",
                      help="a fixed baseline, e.g. url:/login=0.4 (repeatable)")
    p.add_argument("--master", help="Spark master when not run by spark-submit (e.g. local[2])")
    return p


def parse_args(argv=None):
    """Arguments, settings and calibration parameters; UsageError (one line) if bad."""
    args = build_parser().parse_args(argv)
    settings = settings_mod.load(bootstrap_servers=args.bootstrap_servers)
    pins: dict[str, dict[str, float]] = {}
    for kind, key, rate in args.pin:
        pins.setdefault(kind, {})[key] = rate
    params = cal.Params(
        budget=args.budget, holdout=args.holdout, oos_confidence=args.oos_confidence,
        length_s=args.window_length, slide_s=args.window_slide, watermark_s=args.watermark,
        error_status_min=args.error_status_min if args.error_status_min is not None else settings.error_status_min,
        min_requests=args.min_requests, min_errors=args.min_errors, season=args.season,
        key_min_requests=args.key_min_requests, key_min_coverage=args.key_min_coverage, key_prior=args.key_prior,
        max_keys=args.max_keys, chronic_ratio=args.chronic_ratio, chronic_delta=args.chronic_delta,
        rate_floor=args.rate_floor, z_min=args.z_min, z_max=args.z_max, resolve_after=args.resolve_after,
        pins=pins, min_windows=args.min_windows,
    )
    try:
        cal.check_params(params)
    except cal.CalibrationError as exc:
        raise UsageError(str(exc)) from None
    if args.start and args.end and args.start >= args.end:
        raise UsageError(f"--start {cal.iso(args.start)} is not before --end {cal.iso(args.end)}")
    if args.source == "files" and not args.input:
        raise UsageError("--source files needs --input (a file, folder or glob of access logs)")
    args.output = Path(args.output) if args.output else settings.run_dir / "seuils.candidate.json"
    if args.output.exists() and args.output.is_dir():
        raise UsageError(f"--output {args.output} is a folder")
    return args, settings, params


def build_spark(args, settings):
    from chaussettes.sparkconf import build_session

    spark = build_session("chaussettes-calibrate-thresholds", settings, master=args.master)
    spark.sparkContext.setLogLevel("ERROR")
    return spark


SPLITS_PER_CORE = 4
MIN_SPLITS_CONF = "spark.sql.files.minPartitionNum"
COALESCE_CONF = "spark.sql.adaptive.coalescePartitions.enabled"


def tune_scan(spark):
    """Read the history in at least ``SPLITS_PER_CORE`` splits per core, unless the user set
    it, and keep shuffles uncoalesced; returns a function restoring the session (the bench
    and tests share theirs).

    Why: an archive of a few files of ~10 MB is otherwise read in ~1.5 splits per core,
    and the last split of the scan runs with the other core idle."""
    restore = []
    if spark.conf.get(MIN_SPLITS_CONF, None) is None:
        cores = spark.sparkContext.defaultParallelism
        spark.conf.set(MIN_SPLITS_CONF, str(SPLITS_PER_CORE * max(1, cores)))
        restore.append(lambda: spark.conf.unset(MIN_SPLITS_CONF))
    # Keep every shuffle at spark.sql.shuffle.partitions tasks. Why: AQE merged the bucket
    # counts' 4 partitions into 3 tasks, and 3 tasks on 2 cores run in 2 waves with a core
    # idle in the second (10M events: that stage 2.6 s with 3 tasks, 1.7 s with 4).
    previous = spark.conf.get(COALESCE_CONF, None)
    if previous != "false":
        spark.conf.set(COALESCE_CONF, "false")
        restore.append(lambda: spark.conf.unset(COALESCE_CONF) if previous is None
                       else spark.conf.set(COALESCE_CONF, previous))

    def restore_all():
        for step in restore:
            step()

    return restore_all


def _exists(spark, path: str) -> bool:
    """Does a path or glob match anything (any Hadoop file system)?"""
    jvm = spark._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())
    matches = fs.globStatus(hpath)
    return matches is not None and len(matches) > 0


def read_history(spark, args, settings):
    """(events_df, info): events with EVENT_FIELDS columns in [start, end), and what was read
    (source description, rows, unparseable lines by reason)."""
    from chaussettes import schemas
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    info: dict = {"source": args.source}
    if args.source == "archive":
        path = str(args.input or settings.archive_dir)
        info["input"] = path
        if not _exists(spark, path):
            raise cal.CalibrationError(f"archive {path} does not exist: no history to calibrate from")
        try:
            df = spark.read.option("basePath", path).parquet(path)
        except AnalysisException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise cal.CalibrationError(f"archive {path} has no readable Parquet history ({first})") from None
        missing = [c for c in schemas.EVENT_COLUMNS if c not in df.columns]
        if missing:
            raise cal.CalibrationError(f"archive {path} lacks the columns {', '.join(missing)}")
        if "date" in df.columns and (args.start or args.end):  # prune date partitions
            day = F.col("date").cast("string")
            if args.start:
                df = df.where(day >= F.lit(args.start.strftime("%Y-%m-%d")))
            if args.end:
                df = df.where(day <= F.lit(args.end.strftime("%Y-%m-%d")))
        events = df.select(*[F.col(c).cast(t).alias(c) for c, t in schemas.EVENT_FIELDS])
        events = cal.bound_events(events, args.start, args.end)
        return events, info
    # kafka and files: raw lines, parsed natively in Spark
    from chaussettes import sparkparse

    if args.source == "files":
        path = str(args.input)
        info["input"] = path
        if not _exists(spark, path):
            raise cal.CalibrationError(f"no log file at {path}")
        lines = spark.read.text(path)
    else:
        from chaussettes import spark_kafka

        topic = args.input or settings.topic_logs
        info["input"] = topic
        spark_kafka.register(spark)
        reader = spark.read.format("kafka").options(**settings.spark_kafka_options()).option("subscribe", topic)
        if args.start:
            reader = reader.option("startingTimestamp", str(int(args.start.timestamp() * 1000)))
        else:
            reader = reader.option("startingOffsets", "earliest")
        if args.end:
            reader = reader.option("endingTimestamp", str(int(args.end.timestamp() * 1000)))
        else:
            reader = reader.option("endingOffsets", "latest")
        lines = reader.load().select("value")
    from pyspark import StorageLevel

    # The fast path's result is cached (the line's text kept only where it failed) and the
    # full rules run on those rows only: the input is read and the regex run once, where
    # parse_column's two branches would read it twice.
    fast, good, keep = sparkparse.fast_parts(lines, "value")
    fast = fast.persist(StorageLevel.MEMORY_AND_DISK)
    parsed = good.unionByName(sparkparse.full_rules_of(fast, keep)).persist(StorageLevel.MEMORY_AND_DISK)
    counts = {r.reason: int(r.n) for r in parsed.groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()}
    good = counts.pop(None, 0)
    info["lines"] = good + sum(counts.values())
    info["unparseable"] = sum(counts.values())
    info["unparseable_by_reason"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    if info["lines"] == 0:
        raise cal.CalibrationError(f"{args.source} {info['input']}: no line to read")
    if good == 0:
        reasons = ", ".join(f"{k} {v}" for k, v in list(info["unparseable_by_reason"].items())[:4])
        raise cal.CalibrationError(
            f"{args.source} {info['input']}: no parseable line among {info['lines']} ({reasons})")
    events = cal.bound_events(sparkparse.events_of(parsed), args.start, args.end)
    info["_persisted"] = [parsed, fast]
    return events, info


def transform(events, args, params, info, rows=None):
    """The pure part: calibration.calibrate on the events (raises CalibrationError).
    ``rows`` None: calibrate counts the events in a pass it makes anyway."""
    empty = f"no event in {args.source} {info.get('input')}{cal.range_text(args.start, args.end)}"
    if rows == 0:
        raise cal.CalibrationError(empty)
    source = {k: v for k, v in info.items() if not k.startswith("_")}
    return cal.calibrate(events, params, start=args.start, end=args.end, source=source,
                         version=args.doc_version, rows=rows, empty_message=empty)


def write(result, args) -> Path | None:
    if args.dry_run:
        return None
    return th.write(result.doc, args.output)


def main(argv=None, spark=None) -> int:
    """Run the job; returns the exit status. ``spark``: an existing session to use (and not
    stop), for tests; otherwise one is built and stopped at the end."""
    started = time.monotonic()
    try:
        args, settings, params = parse_args(argv)
    except UsageError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    own_session = spark is None
    info: dict = {}
    restore_scan = None
    try:
        if own_session:
            spark = build_spark(args, settings)
        restore_scan = tune_scan(spark)
        clock = time.perf_counter()
        events, info = read_history(spark, args, settings)
        read_s = time.perf_counter() - clock
        result = transform(events, args, params, info)  # counts the rows in its own pass
        rows = result.doc["calibration"]["rows"]
        result.timings = {"history_s": read_s, **result.timings}
        path = write(result, args)
        seconds = time.monotonic() - started
        for line in cal.summary_lines(result, rows, info.get("unparseable"), seconds,
                                      str(path) if path else None):
            print(line)
        if args.summary_json:
            figures = {"output": str(path) if path else None, "seconds": round(seconds, 2), "rows": rows,
                       "unparseable": info.get("unparseable", 0), "version": result.doc["version"],
                       "validation": result.doc["validation"], "z": result.summary["z"],
                       "timings": {k: round(v, 3) for k, v in result.timings.items()}}
            Path(args.summary_json).write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    except cal.CalibrationError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1
    except th.ThresholdsError as exc:
        print(f"{PROG}: error: the candidate is not a valid seuils.json: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("CHAUSSETTES_DEBUG"):
            raise
        message = " ".join(str(exc).split())[:400] or type(exc).__name__
        print(f"{PROG}: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    finally:
        steps = [cached.unpersist for cached in info.get("_persisted") or ()]
        if restore_scan is not None and not own_session:
            steps.append(restore_scan)
        if own_session and spark is not None:
            steps.append(spark.stop)
        for step in steps:  # after a dead JVM, the error printed above is the one that matters
            with contextlib.suppress(Exception):
                step()


if __name__ == "__main__":
    sys.exit(main())
