"""`airflow dags test rollback_thresholds`: re-point CURRENT, refuse missing/corrupt versions.

The store is filled through ``chaussettes.artifacts`` (what calibrate_thresholds publishes
with; the full calibrate → publish → rollback path is in test_dag_calibrate_thresholds.py).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chaussettes import artifacts
from chaussettes import settings as settings_mod
from chaussettes import thresholds as th

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture
def store_env(airflow_env, tmp_path):
    conf = settings_mod.load(env={}, home=tmp_path / "home")
    store = artifacts.ThresholdsStore.from_settings(conf)
    for rate in (0.3, 0.4, 0.5):
        doc = copy.deepcopy(th.load_default().doc)
        doc["global"]["error_rate"] = rate
        doc["validation"] = {"alert_rate": 0.01, "evaluations": 1000}
        store.publish(th.write(doc, tmp_path / f"cand-{rate}.json"))
    return conf, store, {**airflow_env, **conf.as_env()}


def rollback(env, conf_):
    r = subprocess.run([AIRFLOW, "dags", "test", "rollback_thresholds", "-c", json.dumps(conf_)],
                       env=env, capture_output=True, text=True, timeout=420, check=False)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rollback_repoints_current_and_refuses_corrupt_or_missing(store_env):
    conf, store, env = store_env
    assert store.current_version() == 3

    rc, out = rollback(env, {"version": 2, "reason": "v3 pages all night"})
    assert rc == 0, out[-4000:]
    assert store.current_version() == 2
    assert th.load(artifacts.current_thresholds_path(conf)).threshold("global") == 0.4
    assert "current thresholds version: 2 (was 3)" in out

    f = store.root / "v1" / "seuils.json"
    os.chmod(f, 0o644)
    f.write_text(f.read_text().replace('"error_rate": 0.3', '"error_rate": 0.9'))
    rc, out = rollback(env, {"version": 1})
    assert rc != 0
    assert "rollback refused: version 1: checksum mismatch" in out
    assert store.current_version() == 2



@pytest.mark.slow
@pytest.mark.timeout(600)
def test_version_out_of_bounds_is_refused_by_the_form(store_env):
    _, store, env = store_env
    rc, out = rollback(env, {"version": 0})
    assert rc != 0 and "version" in out
    assert store.current_version() == 3
