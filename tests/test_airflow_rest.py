"""A calibration triggered the way the UI form does it: through the REST API of a running
`airflow standalone` (started by the stack manager), with a conf; the run publishes a version.

Also checks what the form refuses: a value out of bounds gets HTTP 400 with the reason and no run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from chaussettes import artifacts, procs
from chaussettes import settings as settings_mod
from chaussettes import thresholds as th
from chaussettes.stack import manager

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PASSWORD = "rest-test-password"
HISTORY_END = "2026-11-23T00:00:00Z"


def _call(method: str, url: str, token: str | None = None, payload: dict | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"detail": body}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, broker):
    home = tmp_path_factory.mktemp("rest-home")
    conf = settings_mod.load(env={}, home=home, bootstrap_servers=broker.bootstrap_servers,
                             airflow_port=procs.free_port(), spark_master="local[2]",
                             kafka_timeout_s=5.0)
    # The simple auth manager keeps a passwords file written beforehand.
    conf.airflow_home.mkdir(parents=True)
    (conf.airflow_home / "simple_auth_manager_passwords.json.generated").write_text(
        json.dumps({"admin": PASSWORD}))
    manager.up(conf, only={"airflow"}, echo=lambda _: None)
    base = f"http://127.0.0.1:{conf.airflow_port}"
    try:
        status, body = _call("POST", f"{base}/auth/token",
                             payload={"username": "admin", "password": PASSWORD})
        assert status == 201 or status == 200, body
        yield conf, base, body["access_token"]
    finally:
        state = manager.load_state(conf)
        manager.down(conf, echo=lambda _: None)
        assert all(not procs.group_members(r.pid) for r in state.values() if r.pid)


def _wait_for_dag(base: str, token: str, dag_id: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, _ = _call("GET", f"{base}/api/v2/dags/{dag_id}", token)
        if status == 200:
            return
        time.sleep(2)
    pytest.fail(f"{dag_id} did not appear in the API within {timeout_s}s")


def test_rest_api_requires_a_token(airflow):
    _, base, _ = airflow
    status, _ = _call("GET", f"{base}/api/v2/dags")
    assert status in (401, 403)


@pytest.mark.timeout(1200)
def test_calibration_triggered_through_the_rest_api_publishes_a_version(airflow):
    conf, base, token = airflow
    history = conf.home / "history" / "access.log"
    gen = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "generate_logs.py"), "--sink", "file", "--output",
         str(history), "--start-time", "2026-11-22T23:20:00Z", "--duration", "2400", "--rate", "15",
         "--seed", "5", "--quiet"], capture_output=True, text=True, timeout=120, check=False)
    assert gen.returncode == 0, gen.stderr

    dag = "calibrate_thresholds"
    _wait_for_dag(base, token, dag)
    status, body = _call("PATCH", f"{base}/api/v2/dags/{dag}", token, {"is_paused": False})
    assert status == 200, body

    # Out of bounds: refused with the reason, no run created.
    status, body = _call("POST", f"{base}/api/v2/dags/{dag}/dagRuns", token,
                         {"logical_date": None, "conf": {"budget": -1}})
    assert status == 400, body
    assert "budget" in json.dumps(body)

    run_conf = {"source": "files", "input": str(history), "history_end": HISTORY_END,
                "lookback_hours": 1, "min_history_rows": 1000, "min_evaluations": 10}
    status, body = _call("POST", f"{base}/api/v2/dags/{dag}/dagRuns", token,
                         {"logical_date": None, "conf": run_conf})
    assert status == 200, body
    run_id = body["dag_run_id"]

    deadline = time.monotonic() + 900
    state = None
    while time.monotonic() < deadline:
        status, run = _call("GET", f"{base}/api/v2/dags/{dag}/dagRuns/{run_id}", token)
        state = run.get("state")
        if state in ("success", "failed"):
            break
        time.sleep(5)
    assert state == "success", f"run {run_id} ended {state}"

    store = artifacts.ThresholdsStore.from_settings(conf)
    assert store.current_version() == 1
    published = th.load(artifacts.current_thresholds_path(conf))
    assert published.version == 1
    assert published.doc["calibration"]["rows"] > 1000
    source = published.doc["calibration"]["source"]
    assert (source["source"], source["input"]) == ("files", str(history))
    # One manual run only: the refused request made none.
    status, runs = _call("GET", f"{base}/api/v2/dags/{dag}/dagRuns", token)
    assert status == 200
    assert [r["dag_run_id"] for r in runs["dag_runs"] if r["run_type"] == "manual"] == [run_id]


def test_the_detector_dag_refuses_through_the_rest_api_what_is_outside_its_closed_set(airflow):
    """What the form posts: 400 naming the param, and no run, for each value outside the set."""
    _, base, token = airflow
    dag = "streaming_detector"
    _wait_for_dag(base, token, dag)
    for run_conf, param in (({"trigger": "1min"}, "trigger"), ({"trigger": "0s"}, "trigger"),
                            ({"checkpoint": "/etc/cron.d"}, "checkpoint"),
                            ({"spark_master": "spark://10.0.0.9:7077"}, "spark_master"),
                            ({"max_offsets_per_trigger": 0}, "max_offsets_per_trigger")):
        status, body = _call("POST", f"{base}/api/v2/dags/{dag}/dagRuns", token,
                             {"logical_date": None, "conf": run_conf})
        assert status == 400, (run_conf, body)
        assert f"Invalid input for param {param}" in json.dumps(body), body
    status, runs = _call("GET", f"{base}/api/v2/dags/{dag}/dagRuns", token)
    assert status == 200 and runs["dag_runs"] == []
