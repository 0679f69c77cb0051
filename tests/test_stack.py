"""The local stack manager, for real: broker, Spark master + worker, Airflow on free ports."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import incident_samples
import pytest
from alerting_helpers import WebhookReceiver
from chaussettes import procs
from chaussettes import settings as settings_mod
from chaussettes.stack import manager
from chaussettes.stack.base import Component
from chaussettes.topics import partition_counts

CORE = ["kafka", "spark-master", "spark-worker", "airflow"]


def stack_env(home: Path) -> dict[str, str]:
    ports = {name: procs.free_port() for name in (
        "KAFKA_PORT", "KAFKA_TLS_PORT", "SPARK_MASTER_PORT", "SPARK_MASTER_WEBUI_PORT",
        "SPARK_WORKER_WEBUI_PORT", "AIRFLOW_PORT", "ALERTMANAGER_PORT", "DETECTOR_METRICS_PORT",
        "GENERATOR_METRICS_PORT", "RELAY_METRICS_PORT")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAUSSETTES_", "AIRFLOW"))}
    env.update({f"CHAUSSETTES_{k}": str(v) for k, v in ports.items()})
    env["CHAUSSETTES_HOME"] = str(home)
    env["CHAUSSETTES_SPARK_WORKER_CORES"] = "1"
    env["CHAUSSETTES_SPARK_WORKER_MEMORY"] = "512m"
    return env


def cli(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "chaussettes", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def stack_listeners(conf) -> list[tuple[int, str, int]]:
    """(pid, address, port) of the listening sockets of every process the stack runs: each
    component's process group and descendants (Airflow's workers, Spark's executors)."""
    pids: set[int] = set()
    for running in manager.load_state(conf).values():
        if running.pid:
            pids |= set(procs.group_members(running.pid)) | procs.descendants(running.pid)
    return procs.listening_sockets(pids)


@pytest.fixture
def stack(tmp_path):
    env = stack_env(tmp_path / "home")
    yield env
    cli(env, "stack", "down")


def test_up_status_down_leaves_nothing(stack):
    up = cli(stack, "stack", "up", "--only", *CORE)
    assert up.returncode == 0, up.stdout + up.stderr
    conf = settings_mod.load(env=stack)
    for name in CORE:
        assert f"{name}: up in" in up.stdout
    assert f"http://127.0.0.1:{conf.airflow_port}/" in up.stdout
    assert "simple_auth_manager_passwords.json.generated" in up.stdout

    # Topics exist with the configured partitions; Airflow has written its admin password.
    counts = partition_counts(conf)
    assert counts[conf.topic_logs] == conf.logs_partitions
    assert counts[conf.topic_alerts] == conf.alerts_partitions
    assert "admin" in json.loads(
        (conf.airflow_home / "simple_auth_manager_passwords.json.generated").read_text())

    # Every listener of every process the stack started is on the bind host (loopback by
    # default): none on a wildcard address, none on the machine's other interfaces.
    listeners = stack_listeners(conf)
    ports = {port for _, _, port in listeners}
    assert {conf.kafka_port, conf.spark_master_port, conf.spark_master_webui_port,
            conf.spark_worker_webui_port, conf.airflow_port} <= ports, listeners
    elsewhere = [f"pid {pid} ({procs.command_line(pid)[:80]}) on {addr}:{port}"
                 for pid, addr, port in listeners if addr != "127.0.0.1"]
    assert elsewhere == [], "\n".join(elsewhere)
    master = procs.group_members(manager.load_state(conf)["spark-master"].pid)
    assert {port for pid, _, port in listeners if pid in master} == {
        conf.spark_master_port, conf.spark_master_webui_port}  # no REST submission server (6066)

    status = cli(stack, "stack", "status")
    lines = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()}
    assert all(lines[name] == "healthy" for name in CORE), status.stdout

    again = cli(stack, "stack", "up", "--only", *CORE)
    assert again.returncode == 0 and "already running" in again.stdout
    state = manager.load_state(conf)
    pgids = [r.pid for r in state.values()]
    ports = [p for r in state.values() for p in r.ports]
    assert sorted(state) == sorted(CORE)

    down = cli(stack, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert all(not procs.group_members(pgid) for pgid in pgids)
    assert not any(procs.port_open(p) for p in ports)
    assert not (conf.run_dir / "stack.json").exists()

    quiet = cli(stack, "stack", "down")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_alertmanager_and_the_relay_are_components_that_deliver(stack, tmp_path):
    """`up --only kafka alertmanager relay`: Debian's Alertmanager with the shipped config (the
    webhook from CHAUSSETTES_ALERT_WEBHOOK_URL), the relay; an incident published on the stack's
    alerts topic reaches the webhook; status lists the metrics endpoint; down leaves nothing."""
    webhook = WebhookReceiver()
    env = {**stack, "CHAUSSETTES_ALERT_WEBHOOK_URL": webhook.url, "CHAUSSETTES_ALERT_SITE": "stack-test"}
    try:
        up = cli(env, "stack", "up", "--only", "kafka", "alertmanager", "relay")
        assert up.returncode == 0, up.stdout + up.stderr
        conf = settings_mod.load(env=env)
        assert "alertmanager: up in" in up.stdout and "relay: up in" in up.stdout
        assert f"metrics http://127.0.0.1:{conf.relay_metrics_port}/metrics" in up.stdout
        rendered = (conf.run_dir / "alertmanager" / "alertmanager.yml").read_text()
        assert webhook.url in rendered and "group_by" in rendered

        start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=70)
        incident_samples.publish(conf, conf.topic_alerts,
                                 incident_samples.incident("url", "/stack", start, severities=("critical",),
                                                           resolve=False))
        # The shipped route: group_wait 10 s.
        assert webhook.wait_for(lambda w: w.notifications(key="/stack"), 60), procs.tail(
            conf.run_dir / "logs" / "relay.log")
        [alert] = webhook.notifications(key="/stack")[0]["alerts"]
        assert alert["labels"]["site"] == "stack-test" and alert["labels"]["severity"] == "critical"

        status = cli(env, "stack", "status")
        rows = {line.split()[0]: line for line in status.stdout.splitlines()}
        assert rows["alertmanager"].split()[1] == "healthy" and rows["relay"].split()[1] == "healthy"
        assert f"metrics http://127.0.0.1:{conf.relay_metrics_port}/metrics" in rows["relay"]
        assert rows["detector"].split()[1] == "stopped"
        assert f"metrics http://127.0.0.1:{conf.detector_metrics_port}/metrics" not in status.stdout  # not up
        state = manager.load_state(conf)
        down = cli(env, "stack", "down")
        assert down.returncode == 0, down.stderr
        assert all(not procs.group_members(r.pid) for r in state.values())
        assert not procs.port_open(conf.alertmanager_port) and not procs.port_open(conf.relay_metrics_port)
    finally:
        cli(env, "stack", "down")
        webhook.close()


def test_busy_port_is_named_and_nothing_is_started(stack):
    conf = settings_mod.load(env=stack)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", conf.spark_master_port))
        busy.listen()
        result = cli(stack, "stack", "up", "--only", "kafka", "spark-master")
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message == (f"chaussettes: port {conf.spark_master_port} for spark-master is already "
                       f"in use; set CHAUSSETTES_SPARK_MASTER_PORT to another port")
    assert "Traceback" not in result.stderr
    assert manager.load_state(conf) == {}
    assert not procs.port_open(conf.kafka_port)


def test_unhealthy_component_is_stopped_and_its_log_shown(tmp_path):
    conf = settings_mod.load(env={}, home=tmp_path)
    port = procs.free_port()
    # A real process that prints and never opens the port it promised.
    never = Component(
        name="never-ready",
        argv=[sys.executable, "-c", "import time; print('listening soon...', flush=True); time.sleep(60)"],
        ports=[(port, "CHAUSSETTES_NOTHING")], start_timeout_s=2.0,
    )
    with pytest.raises(manager.StackError) as err:
        manager.up(conf, wanted=[never], echo=lambda _: None)
    assert "never-ready did not become healthy within 2s" in str(err.value)
    assert "listening soon..." in str(err.value)
    assert manager.load_state(conf) == {}
    assert not procs.wait_until(lambda: bool(_python_sleepers(tmp_path)), 0.5)


def test_down_never_signals_a_group_that_is_not_the_stacks_any_more(tmp_path):
    """stack.json from before a reboot names pids that may now be other programs': `down`
    leaves them alone (and does not wait for their ports)."""
    conf = settings_mod.load(env={}, home=tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             start_new_session=True)
    try:
        record = manager.Running("kafka", other.pid, [conf.kafka_port], str(tmp_path / "k.log"), 0.0,
                                 procs.start_ticks(other.pid), "an-earlier-boot")
        manager._save_state(conf, {"kafka": record})
        assert not manager.load_state(conf)["kafka"].alive
        manager.down(conf, echo=lambda _: None)
        assert other.poll() is None, "down killed another program"
        assert manager.load_state(conf) == {}
    finally:
        other.kill()
        other.wait(5)


def _python_sleepers(tmp_path):
    out = subprocess.run(["pgrep", "-f", "listening soon"], capture_output=True, text=True, check=False).stdout
    return out.split()


def test_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "CHAUSSETTES_HOME": str(tmp_path), "CHAUSSETTES_KAFKA_PORT": "nope"}
    result = cli(env, "stack", "status")
    assert result.returncode == 1
    assert result.stderr.strip() == "chaussettes: CHAUSSETTES_KAFKA_PORT='nope' is not a valid int"
    bad = cli(env, "stack", "sideways")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr


def test_dist_zip_holds_the_package(tmp_path):
    import zipfile

    from chaussettes.dist import build_zip

    path = build_zip(tmp_path)
    names = zipfile.ZipFile(path).namelist()
    assert "chaussettes/settings.py" in names and "chaussettes/__init__.py" in names
    assert not any("__pycache__" in n for n in names)
    # The zip is importable on its own, as executors use it.
    out = subprocess.run([sys.executable, "-S", "-c",
                          ("import sys; sys.path.insert(0, sys.argv[1]); import chaussettes.settings as s;"
                           " print(s.__file__)"), str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and str(path) in out.stdout
