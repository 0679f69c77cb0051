"""`airflow dags test streaming_detector`: the supervisor DAG keeps the detector running.

The detector here is the stand-in of tests/test_supervisor.py (writes the status contract,
resumes its batch numbering from its checkpoint), run through the DAG's
``detector_command`` param; the supervisor, lock, sensors and triggers are the real ones.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chaussettes import settings as settings_mod
from chaussettes import supervisor as sv

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
STANDIN_SOURCE = Path(__file__).with_name("test_supervisor.py")


def _standin_text() -> str:
    """The stand-in detector's source, from tests/test_supervisor.py (one copy of it)."""
    spec = importlib.util.spec_from_file_location("_supervisor_tests", STANDIN_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STANDIN


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def home_env(airflow_env, tmp_path):
    conf = settings_mod.load(env={}, home=tmp_path / "home")
    env = {**airflow_env, **conf.as_env()}
    return conf, env


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_supervisor_dag_keeps_the_running_one_then_restarts_it_after_kill_9(home_env, tmp_path):
    conf, env = home_env
    standin = tmp_path / "standin_detector.py"
    standin.write_text(_standin_text())
    checkpoint = Path(conf.checkpoint_dir) / "detector"
    command = [sys.executable, str(standin), "--checkpoint", str(checkpoint), "--interval", "0.5"]
    sup = sv.Supervisor(conf, argv=command, query_kafka_lag=False)
    first = sup.start(reason="already there before the DAG")
    log_path = tmp_path / "dag.log"
    dag_conf = {"detector_command": " ".join(command), "watch_minutes": 2, "poll_s": 1,
                "stall_after_s": 20, "startup_grace_s": 60}
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen([AIRFLOW, "dags", "test", "streaming_detector", "-c",
                                     json.dumps(dag_conf)], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait(lambda: "deferring: watch check" in log_path.read_text(), 400, "the watch sensor")
            before = sup.check()
            assert before.state == sv.HEALTHY and before.pid == first["pid"]
            os.killpg(first["pgid"], signal.SIGKILL)  # the crash
            rc = proc.wait(timeout=400)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        out = log_path.read_text()
        assert rc == 0, out[-4000:]
        assert "detector already running" in out  # ensure_running did not start a second one
        assert "detector dead: the detector process is not running" in out
        assert f"(was {first['pid']})" in out
        after = _wait(lambda: (h := sup.check()).state == sv.HEALTHY and h.batch_id > before.batch_id
                      and h, 120, "progress after the restart")
        assert after.pid != first["pid"]
        assert [e["action"] for e in sup.events()][-2:] == ["start", "restart"]
        assert sup.state()["total_restarts"] == 1
    finally:
        sup.stop(timeout_s=3)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_form_values_out_of_bounds_are_refused(home_env):
    _, env = home_env
    r = subprocess.run([AIRFLOW, "dags", "test", "streaming_detector", "-c",
                        json.dumps({"poll_s": 0})], env=env, capture_output=True, text=True,
                       timeout=420, check=False)
    assert r.returncode != 0
    assert "poll_s" in (r.stdout + r.stderr)
