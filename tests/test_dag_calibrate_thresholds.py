"""`airflow dags test calibrate_thresholds` end to end, with a real spark-submit (local[2]).

A small generated history (access-log file) → run 1 publishes version 1 (current, asset
event) → run 2 publishes version 2 → a run whose candidate fails validation leaves
version 2 current and keeps the candidate → `rollback_thresholds` to 1 → current is 1.
Plus the quick refusals: out-of-bounds form values, missing history.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from chaussettes import artifacts
from chaussettes import settings as settings_mod
from chaussettes import thresholds as th

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
HISTORY_END = "2026-11-23T00:00:00Z"


def dags_test(env, dag_id, conf, timeout=600):
    r = subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)], env=env,
                       capture_output=True, text=True, timeout=timeout, check=False)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture(scope="module")
def platform(airflow_env, tmp_path_factory):
    """A fresh Chaussettes home (store, run dir) on the session's Airflow, and a history file."""
    home = tmp_path_factory.mktemp("calib-home")
    conf = settings_mod.load(env={}, home=home, spark_master="local[2]")
    env = {**airflow_env, **conf.as_env(),
           "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"})}
    history = home / "history" / "access.log"
    gen = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "generate_logs.py"), "--sink", "file", "--output",
         str(history), "--start-time", "2026-11-22T23:20:00Z", "--duration", "2400", "--rate", "15",
         "--seed", "11", "--quiet"], capture_output=True, text=True, timeout=120, check=False)
    assert gen.returncode == 0, gen.stderr
    base = {"source": "files", "input": str(history), "history_end": HISTORY_END,
            "lookback_hours": 1, "min_history_rows": 1000, "min_evaluations": 10}
    return conf, env, base


def asset_events(env) -> list[dict]:
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(db) as c:
        rows = c.execute("select e.extra from asset_event e join asset a on a.id = e.asset_id "
                         "where a.name = 'chaussettes_thresholds' order by e.id").fetchall()
    return [json.loads(r[0]) for r in rows]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_calibrate_publish_v1_v2_reject_then_rollback(platform):
    conf, env, base = platform
    store = artifacts.ThresholdsStore.from_settings(conf)
    before_events = len(asset_events(env))

    rc, out = dags_test(env, "calibrate_thresholds", base)
    assert rc == 0, out[-5000:]
    assert store.current_version() == 1
    assert artifacts.current_thresholds_path(conf) == store.root / "v1" / "seuils.json"
    v1 = th.load(artifacts.current_thresholds_path(conf))
    assert v1.version == 1
    assert v1.doc["calibration"]["rows"] > 1000
    assert v1.rule == "evidence" and v1.doc["validation"]["incidents_per_day"] <= 5
    # the job got the run's range, not the wall clock
    assert "--end 2026-11-23T00:00:00Z" in out and "--start 2026-11-22T23:00:00Z" in out
    assert "--master local[2]" in out
    events = asset_events(env)[before_events:]
    assert [e["version"] for e in events] == [1]
    assert events[0]["validation"]["incidents_per_day"] == v1.doc["validation"]["incidents_per_day"]

    rc, out = dags_test(env, "calibrate_thresholds", {**base, "budget": 10.0})
    assert rc == 0, out[-5000:]
    assert store.current_version() == 2 and store.versions() == [1, 2]

    # A candidate that fails validation: kept for inspection, never current.
    candidates = set((store.root / "candidates").glob("*.json"))
    rc, out = dags_test(env, "calibrate_thresholds", {**base, "min_evaluations": 10**9})
    assert rc != 0
    assert "candidate rejected" in out and "evaluations judged" in out
    assert store.current_version() == 2 and store.versions() == [1, 2]
    kept = set((store.root / "candidates").glob("*.json")) - candidates
    assert len(kept) == 1 and th.load(kept.pop()).doc["validation"]["evaluations"] > 10

    rc, out = dags_test(env, "rollback_thresholds", {"version": 1, "reason": "v2 too noisy"})
    assert rc == 0, out[-5000:]
    assert store.current_version() == 1
    assert artifacts.current_thresholds_path(conf) == store.root / "v1" / "seuils.json"
    assert store.history()[-1]["reason"] == "v2 too noisy"
    events = asset_events(env)[before_events:]
    assert [(e["action"], e["version"]) for e in events] == [("publish", 1), ("publish", 2),
                                                             ("rollback", 1)]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_missing_history_fails_with_what_was_found(platform, tmp_path):
    conf, env, base = platform
    before = artifacts.ThresholdsStore.from_settings(conf).current_version()
    rc, out = dags_test(env, "calibrate_thresholds", {**base, "input": str(tmp_path / "none.log")})
    assert rc != 0
    assert "not enough history to calibrate: 0 rows" in out and "does not exist" in out
    assert artifacts.ThresholdsStore.from_settings(conf).current_version() == before


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_out_of_bounds_form_values_are_refused(platform):
    conf, env, base = platform
    before = artifacts.ThresholdsStore.from_settings(conf).current_version()
    rc, out = dags_test(env, "calibrate_thresholds", {**base, "budget": -1})
    assert rc != 0
    assert "budget" in out and "-1" in out
    assert artifacts.ThresholdsStore.from_settings(conf).current_version() == before
