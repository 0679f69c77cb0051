"""How much calibration history is there? Cheap answers, without Spark.

- ``archive``: the detector's Parquet archive (``date=YYYY-MM-DD/hour=HH`` folders); rows from
  the Parquet footers of the hour folders that overlap ``[start, end)``.
- ``files``: access-log files (a file or a folder, ``.gz`` too); rows = lines (the time range
  is the job's business: it filters by event time).
- ``kafka``: records on the topic (high − low watermark per partition; Tansu cannot answer
  offsets for a time, so the time range is again the job's filter).
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

SOURCES = ("archive", "kafka", "files")
_HOUR_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})(?:/hour=(\d{1,2}))?")


@dataclass
class HistorySummary:
    source: str
    input: str
    start: str
    end: str
    rows: int = 0
    files: int = 0
    note: str = ""
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        what = f"{self.rows} rows" + (f" in {self.files} files" if self.files else "")
        return f"{what} from {self.source} {self.input} for [{self.start}, {self.end})" + (
            f" ({self.note})" if self.note else "")


def _visible(path: Path, root: Path) -> bool:
    return not any(p.startswith(("_", ".")) for p in path.relative_to(root).parts)


def _hour_range(rel: str) -> tuple[dt.datetime, dt.datetime] | None:
    m = _HOUR_DIR.search(rel)
    if not m:
        return None
    day = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.UTC)
    if m.group(2) is None:
        return day, day + dt.timedelta(days=1)
    start = day + dt.timedelta(hours=int(m.group(2)))
    return start, start + dt.timedelta(hours=1)


def archive_rows(root: Path, start: dt.datetime, end: dt.datetime) -> tuple[int, int, list[str]]:
    """(rows, files, errors) of the Parquet files under root whose hour overlaps [start, end)."""
    import pyarrow.parquet as pq

    rows = files = 0
    errors: list[str] = []
    if not root.exists():
        return 0, 0, [f"{root} does not exist"]
    for f in sorted(root.rglob("*")):
        if not f.is_file() or not _visible(f, root) or f.name.endswith((".crc", ".json")):
            continue
        hours = _hour_range(f.relative_to(root).as_posix())
        if hours is not None and not (hours[0] < end and hours[1] > start):
            continue
        try:
            rows += pq.ParquetFile(f).metadata.num_rows
            files += 1
        except Exception as exc:  # noqa: BLE001 - a bad file is reported, not fatal
            errors.append(f"{f.name}: {exc}")
    return rows, files, errors


def file_lines(path: Path) -> tuple[int, int, list[str]]:
    """(lines, files, errors) of an access-log file or folder (``.gz`` read transparently)."""
    if not path.exists():
        return 0, 0, [f"{path} does not exist"]
    candidates = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and _visible(p, path))
    lines = files = 0
    errors: list[str] = []
    for f in candidates:
        opener = gzip.open if f.suffix == ".gz" else open
        try:
            with opener(f, "rb") as fh:
                n = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
            lines += n
            files += 1
        except OSError as exc:
            errors.append(f"{f.name}: {exc}")
    return lines, files, errors


def kafka_records(settings, topic: str) -> tuple[int, list[str]]:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    timeout = max(1.0, float(settings.kafka_timeout_s))
    consumer = Consumer(settings.kafka_client_config(**{"group.id": "chaussettes-history-check",
                                                        "enable.auto.commit": False}))
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            return 0, [f"topic {topic} does not exist"]
        total = 0
        for p in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            total += max(0, high - low)
        return total, []
    except KafkaException as exc:
        return 0, [f"kafka: {exc}"]
    finally:
        consumer.close()


def default_input(settings, source: str) -> str:
    if source == "archive":
        return str(settings.archive_dir)
    if source == "kafka":
        return settings.topic_logs
    return ""


def summarize(settings, source: str, input_: str, start: dt.datetime, end: dt.datetime) -> HistorySummary:
    """What history the calibration would read."""
    if source not in SOURCES:
        raise ValueError(f"unknown history source {source!r}: expected one of {', '.join(SOURCES)}")
    input_ = input_ or default_input(settings, source)
    s = HistorySummary(source=source, input=input_, start=start.isoformat(), end=end.isoformat())
    if source == "archive":
        s.rows, s.files, s.errors = archive_rows(Path(input_), start, end)
    elif source == "files":
        if not input_:
            s.errors = ["the files source needs an input path"]
        else:
            s.rows, s.files, s.errors = file_lines(Path(input_))
            s.note = "all lines of the files; the job keeps those in the time range"
    else:
        s.rows, s.errors = kafka_records(settings, input_)
        s.note = "all records on the topic; the job keeps those in the time range"
    return s
