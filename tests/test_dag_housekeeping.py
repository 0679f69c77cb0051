"""`airflow dags test housekeeping` on a real folder tree: a dry run deletes nothing, a run
deletes the hours past each folder's retention (the archive keeping the calibration's lookback
whatever the form says), reports sizes in its log and as its return value; bad forms refused."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from chaussettes import settings as settings_mod
from chaussettes.orchestration import housekeeping as hk
from test_housekeeping import H, hour_now, hours_in, make_tree, rel

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def dags_test(env, conf, logical_date):
    r = subprocess.run([AIRFLOW, "dags", "test", "housekeeping", logical_date, "-c", json.dumps(conf)],
                       env=env, capture_output=True, text=True, timeout=600, check=False)
    return r.returncode, r.stdout + r.stderr


def returned(env, run_logical_date: str) -> dict:
    """The report task's return value (XCom) of the run at that logical date."""
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as c:
        rows = c.execute("select x.value from xcom x join dag_run r on r.id = x.dag_run_id "
                         "where x.dag_id = 'housekeeping' and x.task_id = 'report' "
                         "and x.key = 'return_value' and r.logical_date like ?",
                         (run_logical_date[:19].replace("T", " ") + "%",)).fetchall()
    assert len(rows) == 1, rows
    value = json.loads(rows[0][0])
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture
def tree(airflow_env, tmp_path):
    conf = settings_mod.load(env={}, home=tmp_path / "home")
    ref = hour_now()
    roots = make_tree(conf, ref, hours=4 * 24)
    return {**airflow_env, **conf.as_env()}, ref, roots


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_housekeeping_deletes_past_retention_and_reports_sizes(tree):
    env, ref, roots = tree
    before = {f: hours_in(r) for f, r in roots.items()}
    form = {"archive_days": 1, "errors_days": 2, "quarantine_days": 3}

    dry_date = (ref - 2 * H).isoformat()  # another logical date: dags test needs a new run
    rc, out = dags_test(env, {**form, "dry_run": True}, dry_date)
    assert rc == 0, out[-4000:]
    assert {f: hours_in(r) for f, r in roots.items()} == before
    assert "errors: would delete" in out

    rc, out = dags_test(env, form, ref.isoformat())
    assert rc == 0, out[-4000:]
    for folder, kept_hours in (("archive", 48), ("errors", 48), ("quarantine", 72)):
        assert hours_in(roots[folder]) == {rel(ref - k * H) for k in range(kept_hours + 1)}, folder
        assert (roots[folder] / "_staging").is_dir()
    # the form said 1 day; the calibration reads 24 h and may run late: the archive kept 48 h
    assert ("archive: 1 day(s) is less than the calibration reads (its 24 h lookback + 24 h for a "
            "late or retried run): keeping 48 h") in out
    assert "free on disk:" in out and "XCom not found" not in out
    report = returned(env, ref.isoformat())
    assert set(report) == set(hk.FOLDERS)
    for folder, r in report.items():
        assert r["before"]["partitions"] == len(before[folder])
        assert r["after"]["partitions"] == len(hours_in(roots[folder]))
        assert r["before"]["bytes"] - r["after"]["bytes"] == r["freed_bytes"] > 0
        assert hk.describe(r) in out  # the log line of each folder, with its sizes


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_out_of_bounds_retention_is_refused_by_the_form(tree):
    env, ref, roots = tree
    before = hours_in(roots["quarantine"])
    rc, out = dags_test(env, {"quarantine_days": 0}, (ref - 5 * H).isoformat())
    assert rc != 0 and "quarantine_days" in out
    assert hours_in(roots["quarantine"]) == before
