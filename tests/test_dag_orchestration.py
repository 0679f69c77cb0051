"""The DAGs' building blocks (chaussettes.orchestration) on small real inputs, without Airflow runs:
history summaries, the run's range, candidate checks, trigger serialization and runs."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import gzip
import importlib
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chaussettes import settings as settings_mod
from chaussettes import sparkconf
from chaussettes import thresholds as th
from chaussettes.orchestration import calibration, common, history
from chaussettes.orchestration.triggers import DetectorHealthTrigger, HistoryTrigger

UTC = dt.UTC
END = dt.datetime(2026, 11, 23, tzinfo=UTC)


@pytest.fixture
def conf(tmp_path):
    return settings_mod.load(env={}, home=tmp_path / "home")


def _parquet(path, n):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"event_time": pa.array([END] * n, pa.timestamp("us", tz="UTC")),
                             "status": pa.array([200] * n, pa.int32())}), path)


def test_archive_rows_count_only_the_hours_in_range(conf):
    root = conf.archive_dir
    _parquet(root / "date=2026-11-22" / "hour=22" / "b1-part-0.parquet", 30)
    _parquet(root / "date=2026-11-22" / "hour=23" / "b2-part-0.parquet", 20)
    _parquet(root / "date=2026-11-20" / "hour=01" / "b3-part-0.parquet", 1000)
    _parquet(root / "_staging" / "batch-9" / "date=2026-11-22" / "hour=23" / "x.parquet", 500)
    s = history.summarize(conf, "archive", "", END - dt.timedelta(hours=2), END)
    assert (s.rows, s.files) == (50, 2)
    assert s.input == str(root)
    s = history.summarize(conf, "archive", "", END - dt.timedelta(hours=1), END)
    assert s.rows == 20


def test_file_lines_plain_gz_and_missing(tmp_path, conf):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("x\n" * 7)
    with gzip.open(tmp_path / "logs" / "b.log.gz", "wt") as fh:
        fh.write("y\n" * 5)
    s = history.summarize(conf, "files", str(tmp_path / "logs"), END, END)
    assert (s.rows, s.files) == (12, 2)
    s = history.summarize(conf, "files", str(tmp_path / "nope"), END, END)
    assert s.rows == 0 and "does not exist" in s.errors[0]
    with pytest.raises(ValueError, match="unknown history source"):
        history.summarize(conf, "ftp", "", END, END)


def test_the_range_comes_from_the_run_never_the_clock(conf):
    ctx = {"data_interval_end": END, "dag_run": SimpleNamespace(run_id="scheduled__x")}
    start, end = calibration.history_range({"lookback_hours": 6}, ctx)
    assert (start, end) == (END - dt.timedelta(hours=6), END)
    start, end = calibration.history_range({"lookback_hours": 1, "history_end": "2026-01-02T03:00:00Z"}, ctx)
    assert end == dt.datetime(2026, 1, 2, 3, tzinfo=UTC)
    run_after = dt.datetime(2026, 5, 5, 5, 5, tzinfo=UTC)
    assert common.run_end({"dag_run": SimpleNamespace(run_after=run_after)}) == run_after


def test_plan_builds_the_job_arguments(conf):
    ctx = {"data_interval_end": END, "dag_run": SimpleNamespace(run_id="manual__2026-11-23T00:00:00+00:00")}
    params = {"source": "archive", "input": "", "lookback_hours": 24, "window_length_s": 60,
              "window_slide_s": 10, "budget": 2.5,
              "min_requests_global": 50, "min_requests_ip": None, "min_requests_url": None}
    p = calibration.plan(params, ctx, conf)
    args = p["application_args"]
    assert args[args.index("--start") + 1] == "2026-11-22T00:00:00Z"
    assert args[args.index("--end") + 1] == "2026-11-23T00:00:00Z"
    assert args[args.index("--input") + 1] == str(conf.archive_dir)
    assert args[args.index("--min-requests") + 1] == "global=50,ip=auto,url=auto"
    assert args[args.index("--window-length") + 1] == "60"
    assert args[args.index("--budget") + 1] == "2.5"
    assert p["spark_conf"]["spark.cores.max"] == "1"  # of the 2 worker cores; the detector has 1
    assert p["spark_conf"]["spark.driver.extraJavaOptions"] == sparkconf.JVM_OPTIONS
    assert p["candidate"].startswith(str(conf.artifacts_dir / "thresholds" / "candidates"))
    with pytest.raises(ValueError, match="files source needs an input"):
        calibration.plan({**params, "source": "files"}, ctx, conf)


def _candidate(tmp_path, **validation):
    from test_judge import evidence_thresholds

    doc = copy.deepcopy(evidence_thresholds("flat").doc)
    doc["validation"] = {"incidents_per_day": 3.2, "incidents": 8, "alert_rate": 0.0004, "evaluations": 500,
                         "incidents_out_of_sample": 2, "allowed_out_of_sample": 5,
                         "alert_rate_out_of_sample": 0.0003, **validation}
    return th.write(doc, tmp_path / "c.json")


def test_check_candidate_accepts_and_rejects_with_figures(tmp_path):
    figures = calibration.check_candidate(_candidate(tmp_path), budget=5, min_evaluations=100, max_out_of_sample=0.05)
    assert figures["incidents_per_day"] == 3.2 and figures["evaluations"] == 500
    assert figures["chronic"] == ["/login", "10.0.0.66"] and figures["z"] == 4.75
    with pytest.raises(calibration.CandidateRejected, match="3.20 incidents a day in sample, over the budget of 3"):
        calibration.check_candidate(_candidate(tmp_path), budget=3)
    with pytest.raises(calibration.CandidateRejected, match="fewer than the 1000 required"):
        calibration.check_candidate(_candidate(tmp_path), budget=5, min_evaluations=1000)
    with pytest.raises(calibration.CandidateRejected, match="6 incidents out of sample where the budget allows 5"):
        calibration.check_candidate(_candidate(tmp_path, incidents_out_of_sample=6), budget=5)
    with pytest.raises(calibration.CandidateRejected, match="out-of-sample alert_rate"):
        calibration.check_candidate(_candidate(tmp_path), budget=5, max_out_of_sample=0.0001)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(calibration.CandidateRejected, match="not a valid seuils.json"):
        calibration.check_candidate(bad, budget=5)
    old = th.write(th.load_default().doc, tmp_path / "old.json")
    with pytest.raises(calibration.CandidateRejected, match="rate rule"):
        calibration.check_candidate(old, budget=5)


def test_package_for_spark_ships_only_a_zip_that_works(conf):
    path, note = calibration.package_for_spark(conf)
    assert (conf.run_dir / "dist" / "chaussettes.zip").is_file()
    assert (path and note.startswith("shipping")) or (path == "" and note.startswith("NOT shipping"))


def _roundtrip(trigger):
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


def _first_event(trigger):
    async def first():
        async for event in trigger.run():
            return event.payload
    return asyncio.run(asyncio.wait_for(first(), 30))


def test_history_trigger_serializes_and_fires(tmp_path, conf):
    (tmp_path / "a.log").write_text("x\n" * 10)
    t = HistoryTrigger(source="files", input=str(tmp_path / "a.log"), start=END.isoformat(),
                       end=END.isoformat(), min_rows=10, settings=common.portable(conf), poll_s=0.1,
                       timeout_s=0.5)
    t2 = _roundtrip(t)
    assert t2.serialize() == t.serialize()
    assert _first_event(t2)["status"] == "ok"
    t3 = HistoryTrigger(**{**t.serialize()[1], "min_rows": 11})
    event = _first_event(t3)
    assert event["status"] == "missing" and event["summary"]["rows"] == 10


def test_detector_health_trigger_reports_dead(conf):
    opts = common.supervisor_options(conf, {"poll_s": 1, "stall_after_s": 30})
    t = _roundtrip(DetectorHealthTrigger(check="watch", supervisor=opts, poll_s=0.1, watch_s=30,
                                         confirmations=2))
    event = _first_event(t)
    assert event["outcome"] == "dead" and event["readings"] == 2
    assert event["health"]["reason"] == "the detector process is not running"
    with pytest.raises(ValueError, match="check must be"):
        DetectorHealthTrigger(check="sometimes", supervisor=opts)
