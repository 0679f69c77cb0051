"""Housekeeping (chaussettes.orchestration.housekeeping): which hours are past retention (pure),
and the sweep on real folder trees — also while the detector's own writer adds files."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chaussettes import settings as settings_mod
from chaussettes.orchestration import calibration
from chaussettes.orchestration import housekeeping as hk

UTC = dt.UTC
H = dt.timedelta(hours=1)


def hour_now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def rel(t: dt.datetime) -> str:
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


def make_tree(settings, reference: dt.datetime, hours: int) -> dict[str, Path]:
    """The detector's three folders with one partition per hour for the ``hours`` hours before
    ``reference`` (and the current one): Parquet in the archive, JSON lines in the errors and
    the quarantine; a staged batch and a trash folder left by an interrupted run in each. Folder
    times are set to the end of their hour, as the detector's writes leave them."""
    roots = hk.folder_roots(settings)
    for folder, root in roots.items():
        for k in range(hours + 1):
            start = reference - k * H
            part = root / rel(start)
            part.mkdir(parents=True, exist_ok=True)
            name = f"b{k:012d}-part-00000"
            if folder == "archive":
                pq.write_table(pa.table({"event_time": pa.array([start] * 50, pa.timestamp("us", tz="UTC")),
                                         "status": pa.array([200] * 50, pa.int32())}), part / f"{name}.parquet")
            else:
                (part / f"{name}.json").write_text(
                    "".join(json.dumps({"event_time": start.isoformat(), "status": 500}) + "\n" for _ in range(20)))
            stamp = min((start + H).timestamp(), time.time())
            os.utime(part, (stamp, stamp))
        staged = root / "_staging" / "batch-000000000999" / rel(reference - 40 * 24 * H)
        staged.mkdir(parents=True, exist_ok=True)
        (staged / "part-00000.json").write_text("{}\n")
        (root / f"{hk.TRASH_PREFIX}2020-01-01T00-deadbeef" / "x").mkdir(parents=True, exist_ok=True)
    return roots


def hours_in(root: Path) -> set[str]:
    return {p.path.relative_to(root).as_posix() for p in hk.list_partitions(root)}


@pytest.fixture
def conf(tmp_path):
    return settings_mod.load(env={}, home=tmp_path / "home")


# --------------------------------------------------------------------------- pure rules


def test_an_hour_goes_once_it_ended_at_or_before_the_cutoff():
    ref = dt.datetime(2026, 11, 23, 3, 30, tzinfo=UTC)
    parts = [hk.Partition(ref.replace(minute=0) - k * H, Path(f"p{k}")) for k in range(30)]
    gone = hk.past_retention(parts, ref, dt.timedelta(days=1))
    # cutoff 2026-11-22T03:30: the hour 02:00-03:00 ended before it, 03:00-04:00 did not
    assert gone[-1].start == dt.datetime(2026, 11, 22, 2, tzinfo=UTC)
    assert [p.start for p in gone] == sorted(p.start for p in parts if p.end <= ref - dt.timedelta(days=1))
    assert len(gone) == 30 - 25
    on_the_hour = hk.past_retention(parts, ref.replace(minute=0), dt.timedelta(days=1))
    assert on_the_hour[-1].end == ref.replace(minute=0) - dt.timedelta(days=1)
    with pytest.raises(ValueError, match="last hour is kept"):
        hk.past_retention(parts, ref, dt.timedelta(minutes=30))


def test_the_archive_keeps_what_the_calibration_reads_whatever_the_form_says():
    kept, note = hk.kept_for("archive", 1, lookback_hours=24)
    assert kept == dt.timedelta(hours=48)
    assert note == ("archive: 1 day(s) is less than the calibration reads (its 24 h lookback + 24 h "
                    "for a late or retried run): keeping 48 h")
    assert hk.kept_for("archive", 5, lookback_hours=72) == (dt.timedelta(days=5), None)
    assert hk.kept_for("archive", 3, lookback_hours=72)[0] == dt.timedelta(hours=96)
    assert hk.kept_for("errors", 1, lookback_hours=24) == (dt.timedelta(days=1), None)
    assert hk.kept_for("quarantine", 1, lookback_hours=24) == (dt.timedelta(days=1), None)
    with pytest.raises(ValueError, match="at least 1 day"):
        hk.kept_for("errors", 0, lookback_hours=24)


def test_partition_names():
    assert hk.partition_start("date=2026-11-23/hour=07") == dt.datetime(2026, 11, 23, 7, tzinfo=UTC)
    for bad in ("date=2026-11-23/hour=24", "date=2026-13-01/hour=01", "date=2026-11-23",
                "_staging/date=2026-11-23/hour=01", "date=2026-11-23/hour=7"):
        assert hk.partition_start(bad) is None, bad


def test_plan_takes_the_form_then_the_settings(tmp_path):
    ctx = {"data_interval_end": dt.datetime(2026, 11, 23, 3, 30, tzinfo=UTC)}
    conf = settings_mod.load(env={"CHAUSSETTES_ERRORS_RETENTION_DAYS": "2"}, home=tmp_path)
    by = {e["folder"]: e for e in hk.plan({"quarantine_days": 3}, ctx, conf)}
    assert by["archive"]["retention_days"] == settings_mod.Settings.archive_retention_days == 14
    assert (by["errors"]["retention_days"], by["errors"]["cutoff"]) == (2, "2026-11-21T03:30:00Z")
    assert by["quarantine"]["kept_hours"] == 72
    assert by["errors"]["root"] == str(conf.data_dir / "errors")
    assert calibration.LOOKBACK_HOURS == 24  # the calibration DAG's default, which the archive keeps
    by = {e["folder"]: e for e in hk.plan({"archive_days": 1}, ctx, conf)}
    assert by["archive"]["kept_hours"] == 48 and "keeping 48 h" in by["archive"]["note"]
    bad = settings_mod.load(env={"CHAUSSETTES_QUARANTINE_RETENTION_DAYS": "0"}, home=tmp_path)
    with pytest.raises(ValueError, match=r"quarantine retention \(CHAUSSETTES_QUARANTINE_RETENTION_DAYS\) "
                                         r"must be at least 1 day, got 0"):
        hk.plan({}, ctx, bad)


# --------------------------------------------------------------------------- real folder trees


def test_sweep_deletes_whole_hours_past_retention_and_measures(conf):
    ref = hour_now()
    roots = make_tree(conf, ref, hours=5 * 24)
    ctx = {"data_interval_end": ref}
    entries = hk.plan({"archive_days": 1, "errors_days": 3, "quarantine_days": 2, "dry_run": True}, ctx, conf)
    before = {f: hours_in(r) for f, r in roots.items()}
    dry = {e["folder"]: hk.sweep(e, log=lambda _: None) for e in entries}
    assert {f: hours_in(r) for f, r in roots.items()} == before  # a dry run deletes nothing
    assert dry["errors"]["deleted"] == (5 * 24 + 1) - (3 * 24 + 1) and dry["errors"]["freed_bytes"] > 0

    lines: list[str] = []
    results = {e["folder"]: hk.sweep({**e, "dry_run": False}, log=lines.append) for e in entries}
    for folder, kept_hours in (("archive", 48), ("errors", 72), ("quarantine", 48)):
        root, r = roots[folder], results[folder]
        want = {rel(ref - k * H) for k in range(kept_hours + 1)}  # hours ending after ref - kept
        assert hours_in(root) == want, folder
        assert r["deleted"] == dry[folder]["deleted"] == len(before[folder]) - len(want)
        assert r["before"]["bytes"] - r["after"]["bytes"] == r["freed_bytes"] == dry[folder]["freed_bytes"]
        assert (r["before"]["partitions"], r["after"]["partitions"]) == (len(before[folder]), len(want))
        assert r["oldest_deleted"] == rel(ref - 5 * 24 * H)
        assert r["newest_deleted"] == rel(ref - (kept_hours + 1) * H)
        assert (root / "_staging" / "batch-000000000999").is_dir()  # the writer's, never touched
        assert not list(root.glob(hk.TRASH_PREFIX + "*"))  # an interrupted run's leftovers go
        days = {p.name for p in root.glob("date=*")}
        assert days == {p.split("/")[0] for p in want}  # no empty day folder left behind
    assert any("keeping 48 h" in line for line in lines)
    assert "errors: deleted 48 partition(s)" in "\n".join(lines)
    assert "freed" in hk.describe(results["archive"]) and "would free" in hk.describe(dry["archive"])


def test_an_hour_written_in_the_last_hour_is_left_for_the_next_run(conf):
    ref = hour_now()
    roots = make_tree(conf, ref, hours=30)
    late = roots["errors"] / rel(ref - 28 * H)
    (late / "b000000009999-part-00000.json").write_text('{"status": 503}\n')  # a late row, just now
    entry = next(e for e in hk.plan({"errors_days": 1}, {"data_interval_end": ref}, conf)
                 if e["folder"] == "errors")
    lines: list[str] = []
    r = hk.sweep(entry, log=lines.append)
    assert late.is_dir() and r["left_busy"] == 1 and r["deleted"] == (30 - 24) - 1
    assert any("changed in the last hour" in line for line in lines)


def test_a_missing_folder_is_nothing_to_do(conf):
    entries = hk.plan({}, {"data_interval_end": hour_now()}, conf)
    r = hk.sweep(entries[0], log=lambda _: None)
    assert r["deleted"] == 0 and r["after"] == {"bytes": 0, "files": 0, "partitions": 0}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweeping_while_the_detector_writes_loses_none_of_its_rows(conf, spark):
    """The detector's own writer (archive.write_partitioned: staging, then renames) adds batches
    to the current hour and to a retained late hour while sweeps delete old hours."""
    from chaussettes.detector.archive import write_partitioned

    ref = hour_now()
    root = conf.archive_dir
    late = ref - 30 * H
    errors: list[BaseException] = []
    batches = 6

    def writer():
        try:
            for b in range(batches):
                for t in (ref, late):
                    df = spark.createDataFrame([(t + dt.timedelta(seconds=b), 200)] * 10,
                                               "event_time timestamp, status int")
                    write_partitioned(df, root, "parquet", b * 2 + (t == late), "event_time",
                                      (f"{t:%Y-%m-%d}", f"{t:%H}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    sweeps = 0
    while thread.is_alive() or sweeps == 0:
        make_tree(conf, ref - 3 * 24 * H, hours=48)  # old hours to delete, again and again
        for e in hk.plan({"archive_days": 2}, {"data_interval_end": ref}, conf):
            if e["folder"] == "archive":
                hk.sweep(e, log=lambda _: None)
        sweeps += 1
    thread.join()
    assert not errors, errors
    assert sweeps > 1
    assert {p.start for p in hk.list_partitions(root)} == {ref, late}
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in root.glob("date=*/hour=*/*.parquet"))
    assert rows == batches * 2 * 10


def test_settings_have_retention_defaults():
    s = settings_mod.load(env={"CHAUSSETTES_ARCHIVE_RETENTION_DAYS": "7"})
    assert (s.archive_retention_days, s.errors_retention_days, s.quarantine_retention_days) == (7, 30, 30)
    assert s.as_env()["CHAUSSETTES_QUARANTINE_RETENTION_DAYS"] == "30"
