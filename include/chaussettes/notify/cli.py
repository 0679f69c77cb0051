"""`python -m chaussettes.notify`: relay the incidents on ``alerts`` to Alertmanager.

    python -m chaussettes.notify [--alertmanager URL] [--from-beginning] [--once]

Runs until SIGTERM/SIGINT (or, with ``--once``, until the topic's end), then prints one
summary line. Exit codes: 0 done or stopped, 1 Kafka unreachable or the topic missing, 2 bad
flags or settings.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

PROG = "notify"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m chaussettes.notify",
        description="Relay the incidents published on the alerts topic to Prometheus Alertmanager "
                    "(API v2): one alert per incident, refreshed while it is open, resolved with it; "
                    "offsets committed once Alertmanager accepted them.")
    p.add_argument("--alertmanager", metavar="URL",
                   help="Alertmanager's base URL (default: settings, CHAUSSETTES_ALERTMANAGER_URL)")
    p.add_argument("--from-beginning", action="store_true",
                   help="read the topic from its start instead of the group's committed offsets")
    p.add_argument("--once", action="store_true", help="relay what is on the topic, then exit")
    p.add_argument("--topic", help="topic to read (default: settings.topic_alerts, alerts)")
    p.add_argument("--group", default=None, help="consumer group (default chaussettes-relay)")
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka (default: settings)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="Prometheus metrics port (default: CHAUSSETTES_RELAY_METRICS_PORT; "
                        "none with --once; 0 = none)")
    p.add_argument("--quiet", action="store_true", help="warnings and the summary only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format=f"{PROG}: %(message)s", stream=sys.stderr)
    from chaussettes import settings as settings_mod
    from chaussettes.metrics import RelayMetrics, serve
    from chaussettes.notify.relay import GROUP_ID, Relay, RelayConfig, RelayError

    try:
        settings = settings_mod.load(bootstrap_servers=args.bootstrap_servers)
    except settings_mod.SettingsError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    url = (args.alertmanager or settings.alertmanager_url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        print(f"{PROG}: error: --alertmanager {url!r}: expected an http:// or https:// URL", file=sys.stderr)
        return 2
    cfg = RelayConfig(alertmanager_url=url, topic=args.topic or settings.topic_alerts,
                      group_id=args.group or GROUP_ID, from_beginning=args.from_beginning, once=args.once)
    metrics = RelayMetrics()
    port = args.metrics_port if args.metrics_port is not None else (0 if args.once else settings.relay_metrics_port)
    stop_metrics = serve(metrics.registry, port, settings.metrics_address, "relay")
    relay = Relay(settings, cfg, metrics)
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        relay.run(stop)
    except RelayError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if stop_metrics:
            stop_metrics()
    how = "stopped by a signal" if stop.is_set() else "end of the topic" if args.once else "done"
    print(f"{PROG}: {how}: {relay.summary()}", file=sys.stderr)
    return 0
