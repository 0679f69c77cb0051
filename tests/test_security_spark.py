"""Spark standalone with ``spark.authenticate``: a real master and worker from the pyspark wheel,
configured through the private SPARK_CONF_DIR that :mod:`chaussettes.security` writes.

A submit with the secret runs; a submit without it is refused by the master (it never gets
registered as an application). The secret appears in no log and on no command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from chaussettes import procs, security, sparkconf
from chaussettes import settings as settings_mod

pytestmark = pytest.mark.slow

APP = """\
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("{name}").getOrCreate()
print("SUM", spark.range(100).groupBy().sum().collect()[0][0], flush=True)
spark.stop()
"""


def _master_state(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/", timeout=2) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def secured_spark(tmp_path_factory):
    from chaussettes.stack.spark import spark_home

    home = tmp_path_factory.mktemp("spark-auth")
    s = settings_mod.load(env={}, home=home)
    conf_dir = security.write_spark_conf_dir(s)
    master_port, master_ui, worker_ui = procs.free_port(), procs.free_port(), procs.free_port()
    spark_class = str(spark_home() / "bin" / "spark-class")
    base_env = {k: v for k, v in os.environ.items() if k != "SPARK_CONF_DIR"}
    base_env.update({
        "SPARK_HOME": str(spark_home()), "SPARK_LOG_DIR": str(home / "logs"),
        "SPARK_LOCAL_DIRS": str(home / "tmp"), "SPARK_NO_DAEMONIZE": "1",
        "PYSPARK_PYTHON": sys.executable, "SPARK_DAEMON_MEMORY": "512m",
        **sparkconf.process_env(s),  # what the stack gives its Spark processes, not a test's own
    })
    env = {**base_env, "SPARK_CONF_DIR": str(conf_dir)}
    master = procs.start([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                          "--port", str(master_port), "--webui-port", str(master_ui)],
                         home / "master.log", env=env)
    worker = procs.start([spark_class, "org.apache.spark.deploy.worker.Worker",
                          f"spark://127.0.0.1:{master_port}", "--host", "127.0.0.1", "--cores", "1",
                          "--memory", "1g", "--webui-port", str(worker_ui),
                          "--work-dir", str(home / "work")], home / "worker.log", env=env)
    try:
        def worker_alive() -> bool:
            return any(w.get("state") == "ALIVE" for w in _master_state(master_ui).get("workers", []))

        assert procs.wait_until(worker_alive, 120, 1.0), procs.tail(home / "worker.log")
        yield {"home": home, "settings": s, "env": env, "base_env": base_env,
               "master": f"spark://127.0.0.1:{master_port}", "ui": master_ui}
    finally:
        procs.stop_group(worker.pid, 10)
        procs.stop_group(master.pid, 10)


def _submit_argv(ctx: dict, app: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "spark-submit"), "--master", ctx["master"],
            "--conf", "spark.ui.enabled=false", "--driver-memory", "512m",
            "--executor-memory", "512m", str(app)]


def test_submit_with_the_secret_runs(secured_spark):
    app = secured_spark["home"] / "with_secret.py"
    app.write_text(APP.format(name="with-secret"))
    result = subprocess.run(_submit_argv(secured_spark, app), env=secured_spark["env"],
                            check=False, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SUM 4950" in result.stdout
    secret = security.secret(secured_spark["settings"], "spark_auth_secret")
    assert secret not in result.stdout + result.stderr
    assert "with-secret" in {a["name"] for a in _master_state(secured_spark["ui"]).get("completedapps", [])}


def test_submit_without_the_secret_is_refused(secured_spark):
    app = secured_spark["home"] / "without_secret.py"
    app.write_text(APP.format(name="without-secret"))
    master_log = secured_spark["home"] / "master.log"
    before = len(master_log.read_text(errors="replace"))
    log = secured_spark["home"] / "without-secret.log"
    # Spark retries registration for 3 x 20 s before giving up: stop waiting once the master
    # has logged the refusal, then stop the driver.
    proc = procs.start(_submit_argv(secured_spark, app), log, env=secured_spark["base_env"])
    try:
        refused = procs.wait_until(
            lambda: "does not have SASL enabled" in master_log.read_text(errors="replace")[before:]
            or proc.poll() is not None, 150, 1.0)
        assert refused, procs.tail(log)
    finally:
        procs.stop_group(proc.pid, 5)
    assert "SUM 4950" not in log.read_text(errors="replace")
    state = _master_state(secured_spark["ui"])
    names = {a["name"] for a in state.get("activeapps", []) + state.get("completedapps", [])}
    assert "without-secret" not in names


def test_secret_is_in_no_log(secured_spark):
    secret = security.secret(secured_spark["settings"], "spark_auth_secret")
    for path in secured_spark["home"].rglob("*.log"):
        assert secret not in path.read_text(errors="replace"), path
    for path in (secured_spark["home"] / "work").rglob("std*"):
        assert secret not in path.read_text(errors="replace"), path
