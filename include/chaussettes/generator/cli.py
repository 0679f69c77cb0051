"""``python jobs/generate_logs.py`` / ``python -m chaussettes.generator``: synthetic HTTP
access logs (or the replay of a real log) into Kafka, the console, a TCP server or a file.

Exit codes: 0 done (also after SIGTERM/SIGINT, once flushed), 1 runtime failure (broker
unreachable, lines not delivered, I/O error), 2 bad flags or input files.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import signal
import sys
import time
from pathlib import Path

from chaussettes import atomicfile
from chaussettes import logformat as lf
from chaussettes.generator.profiles import PROFILES

PROG = "generate_logs"
DEFAULT_RATE = 100.0  # lines/s when --rate is not given
HISTORY_RATE = 200.0  # event-time density with --start-time and --rate 0
CHUNK = 20_000  # lines drawn and sent at a time at full speed
US = 1_000_000


class UsageError(Exception):
    """Bad flags or input files: one line, exit 2."""


class RuntimeFailure(Exception):
    """The run cannot go on: one line, exit 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise UsageError(message)


# ------------------------------------------------------------------ value types
def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _rate01(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number within [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def _int_at_least(minimum: int):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return convert


def _port(text: str) -> int:
    value = _int_at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (0-65535), got {value}")
    return value


def _duration(text: str) -> float:
    from chaussettes.generator.scenario import parse_seconds

    value = parse_seconds(text)
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration (90, 90s, 5m, 2h), got {text!r}")
    return value


_RELATIVE_RE = re.compile(r"-\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)")


def _start_time(text: str) -> _dt.datetime:
    now = _dt.datetime.now(_dt.UTC)
    m = _RELATIVE_RE.fullmatch(text.strip())
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return (now - _dt.timedelta(seconds=seconds)).replace(microsecond=0)
    t = lf.parse_iso_time(text.strip())
    if t is None and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        t = lf.parse_iso_time(text.strip() + "T00:00:00Z")
    if t is None:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time (2025-05-30T00:00:00Z) or a relative one (-2h, -7d), got {text!r}")
    return t


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Synthetic HTTP access logs (Apache Combined, JSON, CSV) with misbehaving clients,\n"
                    "failing endpoints and scripted incidents, or the replay of a real log; into Kafka\n"
                    "(key = client IP), stdout, a TCP server or a file. Progress goes to stderr.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  generate_logs --rate 500 --bad-ips 2 --bad-urls 1          # into Kafka http-logs\n"
               "  generate_logs --sink console --count 5 --seed 1\n"
               "  generate_logs --start-time -2h --scenario incidents.yaml --labels labels.json\n"
               "  generate_logs --profile small-site --start-time -1d --scenario small-site --labels l.json\n"
               "  generate_logs --replay access.log.gz --speed 10 --rewrite-time\n"
               "scenario format: see include/chaussettes/generator/scenario.py and example_scenario.json;\n"
               "shipped scenarios by name: " + ", ".join(SHIPPED_SCENARIOS) + "\n"
               "exit codes: 0 done (also after SIGTERM/SIGINT), 1 failure, 2 bad flags or input files",
    )
    g = p.add_argument_group("output")
    g.add_argument("--format", choices=lf.FORMATS, default=None, help="line format (default combined)")
    g.add_argument("--sink", choices=("kafka", "console", "tcp", "file"), default=None,
                   help="where lines go (default kafka; file when --output is given)")
    g.add_argument("--output", metavar="PATH", help="file sink: the file to write (.gz compresses)")
    g.add_argument("--port", type=_port, default=None, help="tcp sink: port to listen on (default 9999; 0 = any)")
    g.add_argument("--host", default="127.0.0.1", help="tcp sink: address to listen on (default 127.0.0.1)")
    g.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka brokers (default: settings, CHAUSSETTES_BOOTSTRAP_SERVERS)")
    g.add_argument("--topic", metavar="NAME", help="Kafka topic (default: settings.topic_logs, http-logs)")
    g.add_argument("--compression", choices=("none", "lz4", "zstd", "snappy", "gzip"), default=None,
                   help="Kafka compression (default lz4: measured fastest here)")
    g.add_argument("--csv-header", action=argparse.BooleanOptionalAction, default=None,
                   help="write the CSV header first (default: yes for file/console/tcp, never to Kafka)")

    g = p.add_argument_group("volume and time")
    g.add_argument("--rate", metavar="LINES_PER_S", type=_non_negative, default=None,
                   help=f"lines per second, 0 = as fast as possible (default {DEFAULT_RATE:g}); with "
                        f"--start-time: event-time density (0 means {HISTORY_RATE:g}), sent as fast as possible")
    g.add_argument("--count", metavar="N", type=_int_at_least(1), help="stop after N lines")
    g.add_argument("--duration", metavar="S", type=_duration, help="stop after S seconds (of event time with --start-time)")
    g.add_argument("--start-time", type=_start_time, metavar="TIME",
                   help="generate history from TIME (ISO-8601 or -2h/-7d) as fast as possible; "
                        "stops at now unless --count/--duration")
    g.add_argument("--seed", metavar="N", type=int, help="random seed (default: random, printed in the summary)")

    g = p.add_argument_group("traffic")
    g.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="a traffic preset: its rate, clients, URLs and error rate unless given here, and its "
                        "crawlers, chronic endpoints and day/night cycle (small-site: ~3 lines/s, 3000 clients, "
                        "8 crawlers with 8%% 404s, /login answering 40%% 401s, a day/night cycle)")
    g.add_argument("--error-rate", metavar="R", type=_rate01, default=None,
                   help=f"global share of lines with status >= 400 (default {TRAFFIC_DEFAULTS['error_rate']}: "
                        "200/404/500 ~ 90/5/5)")
    g.add_argument("--ips", metavar="N", type=_int_at_least(1), default=None,
                   help=f"normal clients (default {TRAFFIC_DEFAULTS['ips']})")
    g.add_argument("--urls", metavar="N", type=_int_at_least(1), default=None,
                   help=f"/resource/1..N besides pages, API endpoints and static files (default {TRAFFIC_DEFAULTS['urls']})")
    g.add_argument("--bad-ips", metavar="K", type=_int_at_least(0), default=0, help="misbehaving clients (default 0)")
    g.add_argument("--ip-error-rate", metavar="R", type=_rate01, default=0.6, help="their error rate (4xx; default 0.6)")
    g.add_argument("--bad-ip-share", metavar="F", type=_rate01, default=0.02,
                   help="share of all lines sent by EACH bad IP (default 0.02)")
    g.add_argument("--bad-urls", metavar="K", type=_int_at_least(0), default=0, help="failing endpoints (default 0)")
    g.add_argument("--url-error-rate", metavar="R", type=_rate01, default=0.6, help="their error rate (5xx; default 0.6)")
    g.add_argument("--bad-url-share", metavar="F", type=_rate01, default=0.02,
                   help="share of all lines going to EACH bad URL (default 0.02)")
    g.add_argument("--scenario", metavar="FILE", help="incident timeline, JSON or YAML (see docs), or the name of a "
                                                       "shipped one: " + ", ".join(SHIPPED_SCENARIOS))
    g.add_argument("--labels", metavar="PATH", help="write the scenario's ground truth (JSON) here")

    g = p.add_argument_group("replay")
    g.add_argument("--replay", metavar="PATH", help="replay this access log (Combined/JSON/CSV, .gz too)")
    g.add_argument("--speed", metavar="X", type=_non_negative, default=None,
                   help="replay speed: 1 = real time (default), 10 = ten times faster, 0 = as fast as possible")
    g.add_argument("--rewrite-time", action="store_true", help="replay: rewrite timestamps to the replay clock")

    g = p.add_argument_group("reporting")
    g.add_argument("--status-file", metavar="PATH", help="JSON heartbeat, rewritten every second")
    g.add_argument("--metrics-port", metavar="PORT", type=_port, default=None,
                   help="serve Prometheus metrics on this port (the stack passes "
                        "CHAUSSETTES_GENERATOR_METRICS_PORT; default none)")
    g.add_argument("--progress-interval", metavar="S", type=_non_negative, default=5.0,
                   help="seconds between progress lines on stderr (default 5, 0 = none)")
    g.add_argument("--quiet", action="store_true", help="no progress lines (errors and summary only)")
    return p


TRAFFIC_DEFAULTS = {"error_rate": 0.10, "ips": 1000, "urls": 100}
SHIPPED_SCENARIOS = {"example": "example_scenario.json", "small-site": "small_site_scenario.json"}


def _apply_profile(args) -> dict:
    """Fill the traffic flags not given from the profile (else their defaults); returns the
    profile's settings of the model's optional parts."""
    from chaussettes.generator.profiles import PROFILE_MODEL_FIELDS

    profile = PROFILES.get(args.profile or "", {})
    for name, default in TRAFFIC_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, profile.get(name, default))
    if args.rate is None and "rate" in profile and not args.replay:
        args.rate = profile["rate"]
    if args.scenario in SHIPPED_SCENARIOS:
        args.scenario = str(Path(__file__).resolve().parent / SHIPPED_SCENARIOS[args.scenario])
    return {k: profile[k] for k in PROFILE_MODEL_FIELDS if k in profile}


def _check_combinations(args) -> None:
    if args.sink is None:
        args.sink = "file" if args.output else ("tcp" if args.port is not None else "kafka")
    if args.sink == "file" and not args.output:
        raise UsageError("--sink file needs --output PATH")
    if args.output and args.sink != "file":
        raise UsageError(f"--output is for --sink file, not --sink {args.sink}")
    if args.port is not None and args.sink != "tcp":
        raise UsageError(f"--port is for --sink tcp, not --sink {args.sink}")
    if args.replay:
        for flag, value in (("--format", args.format), ("--scenario", args.scenario),
                            ("--start-time", args.start_time), ("--rate", args.rate), ("--profile", args.profile)):
            if value is not None:
                raise UsageError(f"{flag} does not apply to --replay (lines are sent as they are, "
                                 f"paced by --speed)")
    else:
        if args.speed is not None:
            raise UsageError("--speed is for --replay")
        if args.rewrite_time:
            raise UsageError("--rewrite-time is for --replay")
    if args.labels and not args.scenario:
        raise UsageError("--labels needs --scenario (the labels are the scenario's incidents)")
    if (args.start_time is not None and args.count is None and args.duration is None
            and args.start_time >= _dt.datetime.now(_dt.UTC)):
        raise UsageError("--start-time is not in the past: give --count or --duration")
    args.format = args.format or "combined"
    if args.speed is None:
        args.speed = 1.0


# ------------------------------------------------------------------ reporting
class Reporter:
    """Progress lines on stderr and the JSON heartbeat file."""

    def __init__(self, args, what: str, sink_desc: str, seed: int | None):
        self.args = args
        self.what = what
        self.status_path = Path(args.status_file) if args.status_file else None
        self.progress_every = 0 if args.quiet else args.progress_interval
        self.started = time.monotonic()
        self.started_at = _now_iso()
        self.last_progress = self.started
        self.last_progress_lines = 0
        self.last_status = 0.0
        self.rate_window: list[tuple[float, int]] = [(self.started, 0)]
        self.info = {"mode": what, "sink": sink_desc, "format": getattr(args, "format", None),
                     "rate": args.rate, "seed": seed, "replay": args.replay}
        self.observe = None  # the metrics endpoint's observer (chaussettes.metrics), if any

    def log(self, msg: str) -> None:
        print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    def tick(self, lines: int, errors: int, extra: dict | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress_every and now - self.last_progress >= self.progress_every:
            rate = (lines - self.last_progress_lines) / (now - self.last_progress)
            self.log(f"{lines:,} lines, {rate:,.0f} lines/s, {errors:,} delivery errors"
                     + ("".join(f", {k} {v:,}" for k, v in (extra or {}).items())))
            self.last_progress, self.last_progress_lines = now, lines
        if (self.status_path or self.observe) and (force or now - self.last_status >= 1.0):
            self.write_status("running", lines, errors, extra)

    def lines_per_s(self, lines: int) -> float:
        now = time.monotonic()
        self.rate_window.append((now, lines))
        while len(self.rate_window) > 2 and now - self.rate_window[0][0] > 10:
            self.rate_window.pop(0)
        t0, n0 = self.rate_window[0]
        return (lines - n0) / (now - t0) if now > t0 else 0.0

    def write_status(self, state: str, lines: int, errors: int, extra: dict | None = None,
                     error: str | None = None) -> None:
        if not (self.status_path or self.observe):
            return
        self.last_status = time.monotonic()
        doc = {"state": state, "pid": os.getpid(), "started_at": self.started_at, "updated_at": _now_iso(),
               "lines": lines, "lines_per_s": round(self.lines_per_s(lines), 1),
               "delivery_errors": errors, **self.info, **(extra or {}), "error": error}
        if self.observe:
            self.observe(doc)
        if not self.status_path:
            return
        try:
            atomicfile.write_json(self.status_path, doc, indent=None)
        except OSError as exc:
            self.log(f"warning: cannot write status file {self.status_path}: {exc.strerror or exc}")
            self.status_path = None


def _now_iso() -> str:
    return lf.iso_utc(_dt.datetime.now(_dt.UTC))


# ------------------------------------------------------------------ main
class _Stop:
    def __init__(self):
        self.requested = False
        self.signal_name = None

    def __call__(self, signum, frame):
        if self.requested:  # a second signal: give up flushing
            raise SystemExit(130)
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __bool__(self):
        return self.requested


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeFailure as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    _check_combinations(args)
    model_parts = _apply_profile(args)

    from chaussettes import settings as settings_mod
    from chaussettes.generator import scenario as scenario_mod
    from chaussettes.generator.replay import ReplayError, check_readable
    from chaussettes.generator.traffic import TrafficConfig
    try:
        settings = settings_mod.load(bootstrap_servers=args.bootstrap_servers)
    except settings_mod.SettingsError as exc:
        raise UsageError(str(exc)) from None
    topic = args.topic or settings.topic_logs

    incidents = []
    if args.scenario:
        try:
            incidents = scenario_mod.load(args.scenario)
        except scenario_mod.ScenarioError as exc:
            raise UsageError(str(exc)) from None
    if args.replay:
        try:
            check_readable(args.replay)
        except ReplayError as exc:
            raise UsageError(str(exc)) from None
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    config = TrafficConfig(
        ips=args.ips, urls=args.urls, error_rate=args.error_rate, bad_ips=args.bad_ips,
        ip_error_rate=args.ip_error_rate, bad_ip_share=args.bad_ip_share, bad_urls=args.bad_urls,
        url_error_rate=args.url_error_rate, bad_url_share=args.bad_url_share, seed=seed,
        incidents=incidents, **model_parts)
    model = None
    if not args.replay:
        from chaussettes.generator.traffic import TrafficModel

        try:
            model = TrafficModel(config, args.format)  # validates the config
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sink = _make_sink(args, settings, topic, stop)
    what = "replay" if args.replay else "generate"
    reporter = Reporter(args, what, sink.describe(), None if args.replay else seed)
    if args.metrics_port:
        from chaussettes.metrics import start_generator_metrics

        reporter.observe = start_generator_metrics(settings, args.metrics_port)
    if isinstance(sink, _sinks().TcpSink):
        sink.log = reporter.log
    try:
        sink.open()
    except _sinks().SinkError as exc:
        reporter.write_status("failed", 0, 0, error=str(exc))
        raise RuntimeFailure(str(exc)) from None
    if sink.name == "tcp":
        reporter.info["sink"] = sink.describe()
    if model is not None:
        reporter.info.update(bad_ips=model.bad_ip_list, bad_urls=model.bad_url_list)
    reporter.write_status("running", 0, 0)
    if not args.quiet:
        reporter.log(f"{what}: {sink.describe()}" + ("" if args.replay else
                     f", format {args.format}, rate {_rate_text(args)}, seed {seed}"))
        if model is not None and (model.bad_ip_list or model.bad_url_list):
            reporter.log(f"misbehaving IPs: {', '.join(model.bad_ip_list) or '-'}; "
                         f"failing URLs: {', '.join(model.bad_url_list) or '-'}")

    result = {"lines": 0, "extra": {}}
    error: str | None = None
    t0 = time.monotonic()
    try:
        if args.replay:
            _run_replay(args, sink, reporter, stop, result)
        else:
            _run_generator(args, model, sink, reporter, stop, result, scenario_mod)
    except _sinks().SinkClosed:
        pass
    except (_sinks().SinkError, ReplayError, OSError) as exc:
        error = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    # after a sink failure the broker is known to be gone: do not wait long for it
    flush_timeout = max(30.0, 3 * settings.kafka_timeout_s) if error is None else 2.0
    try:
        undelivered = sink.close(flush_timeout)
    except _sinks().SinkClosed:
        undelivered = 0
    elapsed = time.monotonic() - t0
    lines = result["lines"]
    errors = sink.delivery_errors
    rate = lines / elapsed if elapsed > 0 else 0.0
    parts = [f"{lines:,} lines in {elapsed:.2f}s ({rate:,.0f} lines/s) to {sink.describe()}",
             f"{errors:,} delivery errors"]
    if undelivered:
        parts.append(f"{undelivered:,} not delivered after {flush_timeout:g}s")
    parts += [f"{k} {v:,}" for k, v in result["extra"].items()]
    if not args.replay:
        parts.append(f"seed {seed}")
    if stop:
        parts.append(f"stopped by {stop.signal_name}")
    failed = error is not None or errors > 0 or undelivered > 0
    state = "failed" if failed else "stopped"
    if error is None and failed:
        error = f"{errors + undelivered:,} lines not delivered"
        if getattr(sink, "last_error", None):
            error += f" ({sink.last_error})"
    reporter.write_status(state, lines, errors, result["extra"], error=error)
    _restore_stdout_if_broken()
    reporter.log(("done: " if not failed else "finished with errors: ") + "; ".join(parts))
    if error is not None:
        print(f"{PROG}: error: {error}", file=sys.stderr)
    return 1 if failed else 0


def _sinks():
    from chaussettes.generator import sinks

    return sinks


def _rate_text(args) -> str:
    if args.start_time is not None:
        return f"{args.rate or HISTORY_RATE:g} lines per event-second from {lf.iso_utc(args.start_time)} " \
               f"(sent as fast as possible)"
    rate = DEFAULT_RATE if args.rate is None else args.rate
    return "unlimited" if rate == 0 else f"{rate:g} lines/s"


def _make_sink(args, settings, topic, stop):
    sinks = _sinks()
    if args.sink == "kafka":
        return sinks.KafkaSink(settings, topic, compression=args.compression)
    if args.sink == "console":
        return sinks.ConsoleSink()
    if args.sink == "file":
        return sinks.FileSink(args.output)
    return sinks.TcpSink(args.host, 9999 if args.port is None else args.port, should_stop=lambda: bool(stop))


def _restore_stdout_if_broken() -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass


def _header(args, sink) -> None:
    want = args.csv_header if args.csv_header is not None else sink.name != "kafka"
    if args.format == "csv" and want:
        sink.send([lf.CSV_HEADER], [None])


def _run_generator(args, model, sink, reporter, stop, result, scenario_mod) -> None:
    import numpy as np

    config = model.config
    history = args.start_time is not None
    rate = args.rate if args.rate is not None else (HISTORY_RATE if history else DEFAULT_RATE)
    if history and rate == 0:
        rate = HISTORY_RATE
    rate *= config.slot_factor  # a day/night cycle draws slots at its peak rate, keeps fewer
    now_us = time.time_ns() // 1000
    origin_us = int(args.start_time.timestamp() * US) if history else now_us
    for inc in model.incidents:
        inc.bind(origin_us)
    if args.labels:
        try:
            scenario_mod.write_labels(args.labels, model.incidents, origin_us, config.seed)
        except OSError as exc:
            raise RuntimeFailure(f"cannot write --labels {args.labels}: {exc.strerror or exc}") from None
    _header(args, sink)

    count = args.count
    lines = 0
    base = 0  # base lines drawn (incident lines come on top)
    t_start = time.monotonic()
    if history:
        end_us = origin_us + int(args.duration * US) if args.duration else None
        if end_us is None and count is None:
            end_us = now_us
    last_us = now_us
    while not stop:
        if count is not None and lines >= count:
            break
        if history:
            n = CHUNK
            lo = origin_us + int(base * US / rate)
            idx = base + np.arange(n + 1, dtype=np.float64)
            edges = origin_us + (idx * (US / rate)).astype(np.int64)
            times, hi = edges[:-1], int(edges[-1])
            if end_us is not None:
                if lo >= end_us:
                    break
                times = times[times < end_us]
                hi = min(hi, end_us)
            n = len(times)
            span = (lo, hi)
        else:
            elapsed = time.monotonic() - t_start
            if args.duration is not None and elapsed >= args.duration:
                break
            if rate > 0:
                due = int(elapsed * rate) - base
                # lines go out in small batches (about 20 ms of traffic, at least one line)
                batch = max(1, min(CHUNK, int(rate * 0.02)))
                if due < batch:
                    wait = (base + batch) / rate - elapsed
                    time.sleep(max(0.0005, min(0.05, wait)))
                    sink.poll()
                    reporter.tick(lines, sink.delivery_errors)
                    continue
                if due > max(rate, batch):  # more than a second behind (no TCP client, a slow sink):
                    base += due - batch  # do not burst to catch up, go on at the rate from now
                    due = batch
                n = min(due, CHUNK)
            else:
                n = CHUNK
            t_us = time.time_ns() // 1000
            times = np.linspace(last_us, t_us, n, endpoint=False).astype(np.int64) if n else np.zeros(0, np.int64)
            span = (last_us, max(t_us, last_us + 1))
            last_us = t_us
        chunk = model.chunk(times, span)
        base += n
        if count is not None and lines + len(chunk) > count:
            chunk = chunk.head(count - lines)
        if len(chunk):
            sink.send(chunk.render(), chunk.keys(), (chunk.times_us // 1000).tolist())
            lines += len(chunk)
            result["lines"] = lines
        reporter.tick(lines, sink.delivery_errors)
    result["lines"] = lines


def _run_replay(args, sink, reporter, stop, result) -> None:
    from chaussettes.generator.replay import Replayer

    replayer = Replayer(args.replay, args.speed, rewrite=args.rewrite_time, limit=args.count)
    started = time.monotonic()

    def sleep(s):
        sink.poll()
        reporter.tick(replayer.lines, sink.delivery_errors, {"unparseable": replayer.invalid})
        time.sleep(s)

    for values, keys in replayer.batches(time.monotonic, sleep, lambda: bool(stop)):
        sink.send(values, keys)
        result["lines"] = replayer.lines
        reporter.tick(result["lines"], sink.delivery_errors, {"unparseable": replayer.invalid})
        if stop or (args.duration is not None and time.monotonic() - started >= args.duration):
            break
    result["lines"] = replayer.lines
    result["extra"] = {"unparseable": replayer.invalid}
