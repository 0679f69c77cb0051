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
from chaussettes import procs
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


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_supervisor_dag_restarts_the_real_detector_after_kill_9_without_duplicate_alerts(
        airflow_env, broker, new_topic, tmp_path):
    """The real `spark-submit jobs/stream_detector.py` under `airflow dags test streaming_detector`:
    killed with -9, restarted by the DAG, the stream makes progress again and no alert is doubled."""
    from confluent_kafka import Consumer, TopicPartition

    logs, alerts = new_topic(4), new_topic(1)
    conf = settings_mod.load(env={}, home=tmp_path / "home", bootstrap_servers=broker.bootstrap_servers,
                             topic_logs=logs, topic_alerts=alerts, kafka_timeout_s=5.0)
    env = {**airflow_env, **conf.as_env()}
    gen = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "jobs" / "generate_logs.py"),
         "--bootstrap-servers", broker.bootstrap_servers, "--topic", logs, "--rate", "200",
         "--bad-ips", "2", "--ip-error-rate", "0.8", "--bad-ip-share", "0.05", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    params = {"poll_s": 5, "watch_minutes": 60, "trigger": "5s", "spark_master": "local[2]",
              "startup_grace_s": 600, "detector_args": ["--no-archive", "--log-level", "WARN"]}
    log_path = tmp_path / "dag.log"
    sup = sv.Supervisor(conf, query_kafka_lag=False)
    dag = None
    try:
        with open(log_path, "w") as log:
            dag = subprocess.Popen([AIRFLOW, "dags", "test", "streaming_detector", "-c", json.dumps(params)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: "deferring: watch check" in log_path.read_text() or dag.poll() is not None,
              600, "the DAG's watch")
        assert dag.poll() is None, log_path.read_text()[-3000:]
        first = sup.pid_info()
        before = sup.check()
        assert before.state == sv.HEALTHY and before.batch_id is not None, before.reason
        os.killpg(int(first["pgid"]), signal.SIGKILL)

        def restarted():
            h = sup.check()
            return h if (h.pid != first["pid"] and h.state == sv.HEALTHY and h.batch_id is not None
                         and h.batch_id > before.batch_id) else None

        after = _wait(restarted, 600, "a new micro-batch from the restarted detector")
        assert after.pid != first["pid"]
        events = [e["action"] for e in sup.events()]
        assert events.count("start") >= 1 and ("restart" in events or events.count("start") >= 2)
    finally:
        if dag is not None:
            procs.stop_group(dag.pid, 30)
        sup.stop(timeout_s=30)
        procs.stop_group(gen.pid, 30)
    assert not sup.running()

    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "t",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(alerts, 0, 0)])
    ids = []
    idle = time.monotonic()
    while time.monotonic() - idle < 5:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            ids.append(msg.key().decode())
            idle = time.monotonic()
    consumer.close()
    assert ids, "the detector published no alert for the misbehaving clients"
    assert len(ids) == len(set(ids)), "an alert was published twice across the kill and restart"
