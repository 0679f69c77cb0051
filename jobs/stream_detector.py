#!/usr/bin/env python
"""The streaming detector: windowed error rates on ``http-logs`` → alerts on ``alerts``.

    spark-submit jobs/stream_detector.py --source kafka --trigger 10s \\
        --checkpoint var/checkpoints/detector --thresholds PATH

Sources: ``kafka`` (default; ``--bootstrap-servers``, ``--topic``, ``--max-offsets-per-trigger``,
``--starting-offsets``), ``socket`` (``--socket host:port``, what ``nc -lk 9999`` fed) and
``files`` (``--input DIR`` of log files, for replays). ``--trigger 10s`` (default) or
``available-now`` (process what is there, then exit: backfills and tests). Without
``--thresholds`` the artifact store's current version is used (hot-reloaded each batch),
else the shipped defaults. ``--console`` prints the per-window table as the old
log_analyzer did. Outputs go under ``CHAUSSETTES_HOME`` (archive, quarantine, status).

Exit codes: 0 stopped or finished, 1 the stream failed (the status file says why),
2 bad flags.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    import chaussettes  # noqa: F401
except ModuleNotFoundError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parse_args(argv=None) -> argparse.Namespace:
    from chaussettes.detector.pipeline import MAX_OFFSETS_PER_TRIGGER

    p = _Parser(prog="stream_detector.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", choices=("kafka", "socket", "files"), default="kafka")
    p.add_argument("--trigger", default="10s",
                   help="micro-batch interval (10s, 500ms, 2m: chaussettes.durations) or available-now")
    p.add_argument("--checkpoint", type=Path, help="checkpoint folder (default <checkpoint_dir>/detector)")
    p.add_argument("--thresholds", type=Path, help="pin a seuils.json (default: the artifact store's current)")
    p.add_argument("--input", type=Path, help="files source: folder of log files")
    p.add_argument("--socket", help="socket source: host:port")
    p.add_argument("--bootstrap-servers", help="Kafka brokers (default: settings)")
    p.add_argument("--topic", help="input topic (default: settings.topic_logs)")
    p.add_argument("--alerts-topic", help="output topic (default: settings.topic_alerts)")
    p.add_argument("--max-offsets-per-trigger", type=int, default=MAX_OFFSETS_PER_TRIGGER,
                   help="bound on the records of one micro-batch (default %(default)s; 0 = none)")
    p.add_argument("--max-files-per-trigger", type=int, help="files source: files per micro-batch")
    p.add_argument("--starting-offsets", default="earliest", help="earliest | latest (first start only)")
    p.add_argument("--fail-on-data-loss", default="true", choices=("true", "false"),
                   help="when checkpointed offsets are gone or beyond an emptied topic's end: fail "
                        "(true, default) or continue from the data that is there (false)")
    p.add_argument("--master", help="Spark master when not run by spark-submit (e.g. local[2])")
    p.add_argument("--home", type=Path, help="CHAUSSETTES_HOME for this run")
    p.add_argument("--no-archive", action="store_true", help="do not write the Parquet / error archive")
    p.add_argument("--console", action="store_true", help="print the per-window table each batch")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def check_args(args) -> str | None:
    from chaussettes.durations import trigger_seconds

    try:
        seconds = trigger_seconds(args.trigger)
    except ValueError as exc:
        return str(exc)
    if args.source == "socket":
        host, _, port = (args.socket or "").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return "--source socket needs --socket host:port"
        if seconds is None:
            return "--trigger available-now is not possible with the socket source"
    if args.source == "files":
        if not args.input:
            return "--source files needs --input DIR"
        if not args.input.exists():
            return f"--input {args.input}: no such file or folder"
    if args.max_offsets_per_trigger is not None and args.max_offsets_per_trigger < 0:
        return "--max-offsets-per-trigger must be >= 0"
    if args.starting_offsets not in ("earliest", "latest"):
        return "--starting-offsets must be earliest or latest"
    if args.thresholds is not None:
        from chaussettes import thresholds

        try:
            thresholds.load(args.thresholds)
        except thresholds.ThresholdsError as exc:
            return f"--thresholds: {exc}"
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from chaussettes import settings as settings_mod
    from chaussettes.detector.pipeline import DetectorConfig, run

    try:
        settings = settings_mod.load(bootstrap_servers=args.bootstrap_servers, home=args.home)
    except settings_mod.SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = DetectorConfig(
        source=args.source, trigger=args.trigger, checkpoint=args.checkpoint,
        thresholds=args.thresholds, input=args.input, socket=args.socket, topic=args.topic,
        alerts_topic=args.alerts_topic, max_offsets_per_trigger=args.max_offsets_per_trigger or None,
        max_files_per_trigger=args.max_files_per_trigger, starting_offsets=args.starting_offsets,
        fail_on_data_loss=args.fail_on_data_loss == "true",
        console=args.console, archive=not args.no_archive, master=args.master,
    )
    return run(settings, cfg)


if __name__ == "__main__":
    sys.exit(main())
