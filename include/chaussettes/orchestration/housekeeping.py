"""The housekeeping DAG's steps: which partitions of the detector's output folders are past
retention, delete them without disturbing a writer, and measure what each folder holds.

The folders (settings): the Parquet archive (``archive_dir``), the error events
(``data_dir/errors``, JSON) and the quarantine (``quarantine_dir``, JSON), each partitioned
``date=YYYY-MM-DD/hour=HH`` in UTC (the archive and the errors by event time, the quarantine by
the time a line was quarantined).

- A partition is past retention when its whole hour ended at or before ``reference − kept``;
  the reference is the run's data interval end, never the clock (:func:`past_retention`, pure).
- The archive always keeps what the calibration reads: its default lookback
  (``calibration.LOOKBACK_HOURS``) plus a day for a nightly run that is late or retried,
  whatever the form says (:func:`kept_for`).
- Only whole partitions are deleted, each first renamed to ``_deleting-…`` at its folder's root
  (atomic: readers skip ``_`` folders, so none sees half an hour), then removed. A partition
  changed in the last hour (a late row just written into it) is left for the next run; the
  detector's ``_staging`` folders are never touched.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaussettes.orchestration import common

FOLDERS = ("archive", "errors", "quarantine")
HOUR = dt.timedelta(hours=1)
# The calibration's lookback is kept plus this: a nightly run that waits for history or is
# retried still finds what it reads.
CALIBRATION_SLACK = dt.timedelta(days=1)
# A partition whose folder changed more recently than this (by the clock) is being written.
BUSY_S = 3600.0
TRASH_PREFIX = "_deleting-"
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})$")


@dataclass(frozen=True)
class Partition:
    """One ``date=/hour=`` folder and the UTC hour it holds."""

    start: dt.datetime
    path: Path

    @property
    def end(self) -> dt.datetime:
        return self.start + HOUR


# --------------------------------------------------------------------------- pure rules


def partition_start(relative: str) -> dt.datetime | None:
    """The hour ``date=YYYY-MM-DD/hour=HH`` holds (UTC), None for any other name."""
    m = _PARTITION.match(relative)
    if not m or int(m.group(2)) > 23:
        return None
    try:
        day = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return day + dt.timedelta(hours=int(m.group(2)))


def kept_for(folder: str, days: int, lookback_hours: int) -> tuple[dt.timedelta, str | None]:
    """How much of ``folder`` to keep for a retention of ``days``, and why it is more when it is.

    The archive keeps at least the calibration's lookback plus :data:`CALIBRATION_SLACK`."""
    if folder not in FOLDERS:
        raise ValueError(f"unknown folder {folder!r}: expected one of {', '.join(FOLDERS)}")
    if days < 1:
        raise ValueError(f"{folder} retention must be at least 1 day, got {days}")
    kept = dt.timedelta(days=days)
    if folder == "archive":
        floor = dt.timedelta(hours=lookback_hours) + CALIBRATION_SLACK
        if kept < floor:
            hours = int(floor.total_seconds() // 3600)
            return floor, (f"archive: {days} day(s) is less than the calibration reads (its "
                           f"{lookback_hours} h lookback + {int(CALIBRATION_SLACK.total_seconds() // 3600)} h "
                           f"for a late or retried run): keeping {hours} h")
    return kept, None


def past_retention(partitions: Iterable[Partition], reference: dt.datetime,
                   kept: dt.timedelta) -> list[Partition]:
    """The partitions whose whole hour ended at or before ``reference − kept``, oldest first."""
    if kept < HOUR:
        raise ValueError(f"at least the last hour is kept, got {kept}")
    cutoff = reference - kept
    return sorted((p for p in partitions if p.end <= cutoff), key=lambda p: p.start)


# --------------------------------------------------------------------------- the folders


def folder_roots(settings) -> dict[str, Path]:
    """Each folder's root (the errors are ``data_dir/errors``: where the detector writes them)."""
    return {"archive": Path(settings.archive_dir), "errors": Path(settings.data_dir) / "errors",
            "quarantine": Path(settings.quarantine_dir)}


def retention_days(settings, folder: str) -> int:
    return int(getattr(settings, f"{folder}_retention_days"))


def list_partitions(root: Path) -> list[Partition]:
    """The ``date=/hour=`` folders under root (staging and trash folders are not partitions)."""
    out = []
    for path in Path(root).glob("date=*/hour=*"):
        start = partition_start(path.relative_to(root).as_posix())
        if start is not None and path.is_dir():
            out.append(Partition(start, path))
    return sorted(out, key=lambda p: p.start)


def usage(root: Path) -> dict[str, int]:
    """Bytes and files under root (everything, staging included: what the disk holds), and
    partitions."""
    size = files = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
            except FileNotFoundError:  # removed by a writer meanwhile
                pass
    return {"bytes": size, "files": files, "partitions": len(list_partitions(root))}


def delete_partition(root: Path, partition: Partition) -> int:
    """Remove one partition (rename aside, then delete); its size in bytes."""
    size = usage(partition.path)["bytes"]
    trash = Path(root) / f"{TRASH_PREFIX}{partition.start:%Y-%m-%dT%H}-{uuid.uuid4().hex[:8]}"
    os.rename(partition.path, trash)
    shutil.rmtree(trash)
    try:
        partition.path.parent.rmdir()  # the day's folder, once its last hour is gone
    except OSError:
        pass  # other hours remain (or a writer just made one)
    return size


def _busy(partition: Partition, now_s: float) -> bool:
    try:
        return now_s - partition.path.stat().st_mtime < BUSY_S
    except FileNotFoundError:
        return True


def human(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def _iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- the DAG's steps


def plan(params: dict[str, Any], context, settings) -> list[dict]:
    """One entry per folder: its root, retention (the form's, else the setting's), what is kept
    and the cutoff, from the run's data interval end."""
    from chaussettes.orchestration import calibration

    reference = common.run_end(context)
    entries = []
    for folder, root in folder_roots(settings).items():
        form = params.get(f"{folder}_days")
        days = int(form) if form not in (None, "") else retention_days(settings, folder)
        if days < 1:
            source = "form" if form not in (None, "") else f"CHAUSSETTES_{folder.upper()}_RETENTION_DAYS"
            raise ValueError(f"{folder} retention ({source}) must be at least 1 day, got {days}")
        kept, note = kept_for(folder, days, calibration.LOOKBACK_HOURS)
        entries.append({"folder": folder, "root": str(root), "retention_days": days,
                        "kept_hours": int(kept.total_seconds() // 3600), "note": note,
                        "reference": _iso(reference), "cutoff": _iso(reference - kept),
                        "dry_run": bool(params.get("dry_run"))})
    return entries


def sweep(entry: dict, log=print) -> dict:
    """Delete one folder's partitions past retention (or list them, dry run); sizes before/after."""
    root = Path(entry["root"])
    if entry.get("note"):
        log(entry["note"])
    result = {k: entry[k] for k in ("folder", "root", "retention_days", "kept_hours", "cutoff", "dry_run")}
    result.update({"deleted": 0, "freed_bytes": 0, "left_busy": 0, "oldest_deleted": None,
                   "newest_deleted": None})
    if not root.is_dir():
        log(f"{entry['folder']}: {root} does not exist: nothing to do")
        empty = {"bytes": 0, "files": 0, "partitions": 0}
        return {**result, "before": empty, "after": empty}
    for leftover in root.glob(TRASH_PREFIX + "*"):  # an earlier run stopped mid-way
        shutil.rmtree(leftover, ignore_errors=True)
    result["before"] = usage(root)
    reference = common.parse_when(entry["reference"])
    expired = past_retention(list_partitions(root), reference, dt.timedelta(hours=entry["kept_hours"]))
    now_s = time.time()
    for partition in expired:
        name = partition.path.relative_to(root).as_posix()
        if _busy(partition, now_s):
            result["left_busy"] += 1
            log(f"{entry['folder']}: {name} changed in the last hour (a writer is at it): left for the next run")
            continue
        if entry.get("dry_run"):
            result["freed_bytes"] += usage(partition.path)["bytes"]
        else:
            result["freed_bytes"] += delete_partition(root, partition)
        result["deleted"] += 1
        result["oldest_deleted"] = result["oldest_deleted"] or name
        result["newest_deleted"] = name
    result["after"] = usage(root)
    result["free_bytes_on_disk"] = shutil.disk_usage(root).free
    verb = "would delete" if entry.get("dry_run") else "deleted"
    log(f"{entry['folder']}: {verb} {result['deleted']} partition(s) ending at or before {entry['cutoff']} "
        f"({human(result['freed_bytes'])}); kept {entry['kept_hours']} h")
    return result


def describe(result: dict) -> str:
    """One line per folder for the report."""
    b, a = result["before"], result["after"]
    what = "would free" if result.get("dry_run") else "freed"
    return (f"{result['folder']:<10} {human(b['bytes'])} in {b['partitions']} partition(s) -> "
            f"{human(a['bytes'])} in {a['partitions']}; {what} {human(result['freed_bytes'])} "
            f"({result['deleted']} partition(s), kept {result['kept_hours']} h) [{result['root']}]")
