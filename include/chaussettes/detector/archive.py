"""Restart-safe file outputs of a micro-batch: archive (Parquet), error events and
quarantine (JSON lines), partitioned by ``date=YYYY-MM-DD/hour=HH``.

Each batch is written by Spark into ``<root>/_staging/batch-<id>/`` (overwrite: a re-run
of the same batch replaces a half-written attempt), then every file is moved to its
partition folder under the name ``b<id>-<part>``; files of an earlier attempt of the
same batch are removed first. Readers ignore ``_``-prefixed folders, so they never see
a staged file, and a re-run never leaves a row twice.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path


def batch_prefix(batch_id: int) -> str:
    return f"b{batch_id:012d}-"


def hour_partition(first_s: float | None, last_s: float | None) -> tuple[str, str] | None:
    """``(date, hour)`` when the times ``first_s``..``last_s`` (epoch s) fall in one UTC
    hour — the usual micro-batch — else None."""
    if first_s is None or last_s is None:
        return None
    first, last = (dt.datetime.fromtimestamp(x, dt.UTC) for x in (first_s, last_s))
    if first.strftime("%Y-%m-%d %H") != last.strftime("%Y-%m-%d %H"):
        return None
    return first.strftime("%Y-%m-%d"), first.strftime("%H")


def write_partitioned(df, root: Path, fmt: str, batch_id: int, time_col: str,
                      single: tuple[str, str] | None = None) -> int:
    """Write ``df`` under root/date=/hour= (from ``time_col``, UTC) for one batch; returns files.

    ``single=(date, hour)``: the caller knows every row falls in that partition; the rows
    are then written straight into it, without ``partitionBy`` — which sorts every task's
    rows by the partition columns first (a full sort of the batch for nothing)."""
    from pyspark.sql import functions as F

    root = Path(root)
    staging = root / "_staging" / f"batch-{batch_id:012d}"
    if single is not None:
        date, hour = single
        writer = df.write.mode("overwrite").format(fmt)
        target = staging / f"date={date}" / f"hour={hour}"
    else:
        out = df.withColumn("date", F.date_format(F.col(time_col), "yyyy-MM-dd")) \
                .withColumn("hour", F.date_format(F.col(time_col), "HH"))
        writer = out.write.mode("overwrite").partitionBy("date", "hour").format(fmt)
        target = staging
    if fmt == "parquet":
        # Dictionary encoding hashes every value: it was ~40% of the archive's write time
        # (1M events: 1.6 -> 1.0 s on 2 cores) for files only ~20% smaller once zstd has
        # compressed them, and reading them back is as fast (measured).
        writer = writer.option("parquet.enable.dictionary", "false")
    if fmt == "json":
        writer = writer.option("timestampFormat", "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX") \
                       .option("ignoreNullFields", "false")
    if single is not None:
        shutil.rmtree(staging, ignore_errors=True)  # an earlier attempt's other partitions
    writer.save(str(target))
    prefix = batch_prefix(batch_id)
    # an earlier attempt of this batch may have left files: remove them before moving
    for part_dir in _partition_dirs(staging):
        dest = root / part_dir.relative_to(staging)
        if dest.is_dir():
            for old in dest.iterdir():
                if old.name.startswith(prefix):
                    old.unlink()
    moved = 0
    for part_dir in _partition_dirs(staging):
        dest = root / part_dir.relative_to(staging)
        dest.mkdir(parents=True, exist_ok=True)
        for f in part_dir.iterdir():
            if f.is_file() and not f.name.startswith((".", "_")):
                os.replace(f, dest / (prefix + f.name))
                moved += 1
    shutil.rmtree(staging, ignore_errors=True)
    return moved


def _partition_dirs(staging: Path):
    if not staging.is_dir():
        return
    for date_dir in sorted(staging.glob("date=*")):
        yield from sorted(date_dir.glob("hour=*"))
