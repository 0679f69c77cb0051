"""Restart-safe file outputs of a micro-batch: archive (Parquet), error events and
quarantine (JSON lines), partitioned by ``date=YYYY-MM-DD/hour=HH``.

Each batch is written by Spark into ``<root>/_staging/batch-<id>/`` (overwrite: a re-run
of the same batch replaces a half-written attempt), then every file is moved to its
partition folder under the name ``b<id>-<part>``; files of an earlier attempt of the
same batch are removed first. Readers ignore ``_``-prefixed folders, so they never see
a staged file, and a re-run never leaves a row twice.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def batch_prefix(batch_id: int) -> str:
    return f"b{batch_id:012d}-"


def write_partitioned(df, root: Path, fmt: str, batch_id: int, time_col: str) -> int:
    """Write ``df`` under root/date=/hour= (from ``time_col``, UTC) for one batch; returns files."""
    from pyspark.sql import functions as F

    root = Path(root)
    staging = root / "_staging" / f"batch-{batch_id:012d}"
    out = df.withColumn("date", F.date_format(F.col(time_col), "yyyy-MM-dd")) \
            .withColumn("hour", F.date_format(F.col(time_col), "HH"))
    writer = out.write.mode("overwrite").partitionBy("date", "hour").format(fmt)
    if fmt == "json":
        writer = writer.option("timestampFormat", "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX") \
                       .option("ignoreNullFields", "false")
    writer.save(str(staging))
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
