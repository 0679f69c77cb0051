"""`airflow dags test streaming_detector`: the supervisor DAG keeps the detector running.

The detector here is the stand-in of tests/test_supervisor.py (writes the status contract,
resumes its batch numbering from its checkpoint), run through ``CHAUSSETTES_DETECTOR_COMMAND``
in Airflow's environment (a run cannot choose the command); the supervisor, lock, sensors and
triggers are the real ones. Then what a run may choose: the form (the serialized DAG's params,
what the API server validates a conf against) and the detector agree on every value.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
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
REPO = Path(__file__).resolve().parents[1]
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
    env = {**env, "CHAUSSETTES_DETECTOR_COMMAND": shlex.join(command)}
    sup = sv.Supervisor(settings_mod.load(env=env), query_kafka_lag=False)
    first = sup.start(reason="already there before the DAG")
    assert first["argv"] == command
    log_path = tmp_path / "dag.log"
    dag_conf = {"watch_minutes": 2, "poll_s": 1, "stall_after_s": 20, "startup_grace_s": 60}
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


FORM_VERDICTS = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
# The DAG as the API server holds it: what the form and POST .../dagRuns validate a conf against.
dag = DagSerialization.from_dict(json.loads(json.dumps(
    DagSerialization.to_dict(bag.dags["streaming_detector"]))))
verdicts = []
for conf in json.loads(sys.stdin.read()):
    try:
        dag.params.deep_merge(conf).validate()
        verdicts.append(None)
    except Exception as exc:
        verdicts.append(str(exc).splitlines()[0])
print(json.dumps(verdicts))
"""

TRIGGERS = ["10s", "500ms", "2m", "1ms", "9999m", "available-now", "1min", "10 seconds", "0s",
            "010s", "1.5s", "10000s", "10S", " 10s", "10s\n", "", "10", "-1s", "1h", "availablenow"]
CHOICES = {  # param -> values a run might send
    "checkpoint": ["detector", "replay-2", "x" * 64, "x" * 65, "", "../../etc", "/etc/cron.d",
                   "a/b", ".hidden", "-rf", "detector\n"],
    "trigger": ["10s", "", "1min"],
    "spark_master": ["", "local[1]", "local[2]", "local[*]", "local[10]", "spark://10.0.0.9:7077",
                     "yarn", "local[2] --conf x=y", "\n"],
    "max_offsets_per_trigger": [None, 1, 10_000_000, 1.0, 0, -5, 10_000_001, "100", 1.5, True],
}


def _form_verdicts(env: dict, confs: list[dict]) -> list[str | None]:
    out = subprocess.run([sys.executable, "-c", FORM_VERDICTS, str(REPO / "dags")], env=env,
                         input=json.dumps(confs), capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _detector_job():
    spec = importlib.util.spec_from_file_location("_stream_detector_job", REPO / "jobs" / "stream_detector.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_form_and_the_detector_accept_the_same_triggers(home_env):
    _, env = home_env
    form = [v is None for v in _form_verdicts(env, [{"trigger": t} for t in TRIGGERS])]
    job = _detector_job()
    detector = [job.check_args(job.parse_args([f"--trigger={t}"])) is None for t in TRIGGERS]
    assert dict(zip(TRIGGERS, form)) == dict(zip(TRIGGERS, detector))
    assert {t for t, ok in zip(TRIGGERS, detector) if ok} == {
        "10s", "500ms", "2m", "1ms", "9999m", "available-now"}


def test_the_form_and_the_supervisor_accept_the_same_closed_set(home_env):
    """Each value the form refuses is refused by the supervisor's own check too (a run that
    reached it some other way), and what the form accepts builds the supervisor."""
    from chaussettes.orchestration import common

    conf, env = home_env
    confs = [{name: value} for name, values in CHOICES.items() for value in values]
    form = _form_verdicts(env, confs)
    for run_conf, verdict in zip(confs, form):
        try:
            sup = common.build_supervisor(common.supervisor_options(conf, run_conf))
            checked = None
        except ValueError as exc:
            checked = str(exc)
        assert (verdict is None) == (checked is None), (run_conf, verdict, checked)
        if verdict is not None:
            assert next(iter(run_conf)) in verdict, verdict  # the reason names the field
        elif "checkpoint" in run_conf:  # accepted: a folder under <checkpoint_dir>
            assert sup.checkpoint.parent == conf.checkpoint_dir
    accepted = [c for c, v in zip(confs, form) if v is None]
    assert len(accepted) == 11, accepted  # the right ones, and no vacuous pass
    argv = common.build_supervisor(common.supervisor_options(
        conf, {"trigger": "5s", "max_offsets_per_trigger": 5000})).detector_argv()
    assert argv[argv.index("--trigger") + 1] == "5s"
    assert argv[argv.index("--max-offsets-per-trigger") + 1] == "5000"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("run_conf,named", [
    ({"poll_s": 0}, "poll_s"),
    ({"trigger": "1min"}, "trigger"),
    ({"checkpoint": "../../../tmp"}, "checkpoint"),
])
def test_form_values_out_of_the_closed_set_are_refused(home_env, run_conf, named):
    _, env = home_env
    r = subprocess.run([AIRFLOW, "dags", "test", "streaming_detector", "-c",
                        json.dumps(run_conf)], env=env, capture_output=True, text=True,
                       timeout=420, check=False)
    assert r.returncode != 0
    assert f"Invalid input for param {named}" in (r.stdout + r.stderr)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_run_cannot_choose_the_command(home_env, tmp_path):
    """The params a trigger used to pass to Popen are refused by name, and nothing runs."""
    conf, env = home_env
    planted = tmp_path / "planted"
    run_conf = {"detector_command": f"touch {planted}", "detector_args": ["--checkpoint", "/tmp"],
                "poll_s": 1, "startup_grace_s": 10, "watch_minutes": 1}
    r = subprocess.run([AIRFLOW, "dags", "test", "streaming_detector", "-c", json.dumps(run_conf)],
                       env=env, capture_output=True, text=True, timeout=420, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "unknown parameter(s) detector_args, detector_command" in out, out[-3000:]
    assert not planted.exists()
    assert sv.Supervisor(conf).pid_info() is None  # no detector was started either


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_supervisor_dag_restarts_the_real_detector_after_kill_9_without_duplicate_alerts(
        airflow_env, broker, new_topic, tmp_path):
    """The real `spark-submit jobs/stream_detector.py` under `airflow dags test streaming_detector`:
    killed with -9, restarted by the DAG, the stream makes progress again and no alert is doubled."""
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
              "startup_grace_s": 600, "max_offsets_per_trigger": 20_000}
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
        assert first["argv"][first["argv"].index("--max-offsets-per-trigger") + 1] == "20000"
        # The detector's driver (its UI, RPC, block manager, Python workers) listens on the
        # bind host only: SPARK_LOCAL_IP from the supervisor.
        listeners = procs.listening_sockets(procs.group_members(int(first["pgid"])))
        assert len(listeners) >= 2 and {addr for _, addr, _ in listeners} == {"127.0.0.1"}, listeners
        os.killpg(int(first["pgid"]), signal.SIGKILL)

        def restarted():
            h = sup.check()
            return h if (h.pid != first["pid"] and h.state == sv.HEALTHY and h.batch_id is not None
                         and h.batch_id > before.batch_id) else None

        after = _wait(restarted, 600, "a new micro-batch from the restarted detector")
        assert after.pid != first["pid"]
        events = [e["action"] for e in sup.events()]
        assert events.count("start") >= 1 and ("restart" in events or events.count("start") >= 2)
        # the incidents come from the stateful query, a few seconds behind the ingest's batch
        _wait(lambda: _alert_ids(broker, alerts, wait_s=1), 300, "an alert from the misbehaving clients")
    finally:
        if dag is not None:
            procs.stop_group(dag.pid, 30)
        sup.stop(timeout_s=30)
        procs.stop_group(gen.pid, 30)
    assert not sup.running()

    ids = _alert_ids(broker, alerts, wait_s=5)
    assert ids, "the detector published no alert for the misbehaving clients"
    assert len(ids) == len(set(ids)), "an alert was published twice across the kill and restart"


def _alert_ids(broker, topic: str, wait_s: float) -> list[str]:
    """Every key on ``topic``, read until nothing came for ``wait_s``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "t",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    ids = []
    idle = time.monotonic()
    while time.monotonic() - idle < wait_s:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            ids.append(msg.key().decode())
            idle = time.monotonic()
    consumer.close()
    return ids
