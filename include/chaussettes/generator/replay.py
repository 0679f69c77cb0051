"""Replay a real access log (Combined, JSON or CSV, plain or .gz) into a sink.

``--speed 1`` keeps the log's inter-arrival times, ``--speed 10`` plays ten times faster,
``--speed 0`` sends as fast as possible. ``--rewrite-time`` replaces each line's timestamp
with the replay's clock (first line = now, then the log's spacing divided by the speed),
keeping the line's format. Lines that do not parse are sent as they are (the detector
quarantines them) and counted; the CSV header line is skipped.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from chaussettes import logformat as lf

UTC = _dt.UTC
_CLF_BRACKET_RE = re.compile(rb"\[[^\]]*\]")


class ReplayError(RuntimeError):
    pass


def check_readable(path: str | os.PathLike) -> None:
    """Raise ReplayError (one line) when the file cannot be read."""
    p = Path(path)
    if p.is_dir():
        raise ReplayError(f"--replay {p}: is a directory")
    try:
        with open(p, "rb") as fh:
            magic = fh.read(2)
        if magic == b"\x1f\x8b":
            with gzip.open(p, "rb") as fh:
                fh.read(1)
    except OSError as exc:
        raise ReplayError(f"--replay {p}: {exc.strerror or exc}") from None
    except EOFError:
        raise ReplayError(f"--replay {p}: truncated gzip file") from None


def read_lines(path: str | os.PathLike) -> Iterator[bytes]:
    """Raw lines without their end of line, gzip detected from the content."""
    p = Path(path)
    with open(p, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(p, "rb") if gz else open(p, "rb", buffering=1 << 20)) as fh:
            for raw in fh:
                yield raw.rstrip(b"\r\n")
    except (OSError, EOFError) as exc:
        raise ReplayError(f"--replay {p}: read failed ({exc})") from None


def rewrite_time(raw: bytes, event: lf.Event, new_time: _dt.datetime) -> bytes:
    """The same line with its timestamp replaced, in its own format."""
    text = raw.decode("utf-8").strip(" \t\r\n")
    if text.startswith("{"):
        obj = json.loads(text)
        obj["timestamp"] = lf.iso_utc(new_time)
        return json.dumps(obj, ensure_ascii=False).encode("utf-8")
    if lf.CSV_START_RE.match(text):
        if text.startswith('"'):
            end = text.index('"', 1) + 1
        else:
            end = text.index(",")
        return (lf.iso_utc(new_time) + text[end:]).encode("utf-8")
    return _CLF_BRACKET_RE.sub(b"[" + lf.clf_time(new_time).encode() + b"]", raw, count=1)


class Replayer:
    """Yields batches of (values, keys) paced by the log's own times."""

    def __init__(self, path: str | os.PathLike, speed: float, rewrite: bool = False, limit: int | None = None):
        self.path = Path(path)
        self.speed = speed
        self.rewrite = rewrite
        self.limit = limit
        self.lines = 0
        self.invalid = 0
        self.skipped_headers = 0

    def batches(self, clock, sleep, should_stop, max_batch: int = 5000):
        """Yield ``(values, keys)``; ``clock()`` is seconds (monotonic), ``sleep(s)`` waits."""
        parse = lf.parse
        first_log_t = None
        wall0 = clock()
        wall_epoch0 = _dt.datetime.now(UTC)
        values: list[bytes] = []
        keys: list[str | None] = []
        for raw in read_lines(self.path):
            if self.limit is not None and self.lines + len(values) >= self.limit:
                break
            ev = parse(raw)
            if not ev:
                if ev.reason == "csv_header":
                    self.skipped_headers += 1
                    continue
                if ev.reason == "empty":
                    continue
                self.invalid += 1
                values.append(raw)
                keys.append(None)
            else:
                t = ev.event_time.timestamp()
                if first_log_t is None:
                    first_log_t = t
                offset = max(0.0, t - first_log_t)
                if self.speed > 0:
                    due = wall0 + offset / self.speed
                    wait = due - clock()
                    if wait > 0:
                        if values:
                            self.lines += len(values)
                            yield values, keys
                            values, keys = [], []
                        while wait > 0:
                            if should_stop():
                                return
                            sleep(min(wait, 0.2))
                            wait = due - clock()
                if self.rewrite:
                    if self.speed > 0:
                        new_time = wall_epoch0 + _dt.timedelta(seconds=offset / self.speed)
                    else:
                        new_time = _dt.datetime.now(UTC)
                    raw = rewrite_time(raw, ev, new_time)
                values.append(raw)
                keys.append(ev.ip)
            if len(values) >= max_batch:
                self.lines += len(values)
                yield values, keys
                values, keys = [], []
                if should_stop():
                    return
        if values:
            self.lines += len(values)
            yield values, keys
