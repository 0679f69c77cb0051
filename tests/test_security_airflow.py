"""Airflow with security on: a real ``airflow api-server`` with the environment that
``chaussettes.security.airflow_env`` adds. The REST API answers nothing without a token,
a token needs the password written by ``write_airflow_passwords``, and no password shows in
the environment or in the server's log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from chaussettes import procs, security
from chaussettes import settings as settings_mod

pytestmark = pytest.mark.slow


def _request(url: str, data: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError):  # not listening yet
        return 0, {}


@pytest.fixture(scope="module")
def secured_airflow(tmp_path_factory):
    from chaussettes.stack.airflow import airflow_env

    home = tmp_path_factory.mktemp("airflow-auth")
    on = {"CHAUSSETTES_SECURITY_ENABLED": "true"}
    port = procs.free_port()
    s = settings_mod.load(env=on, home=home, airflow_port=port)
    sec_env = security.airflow_env(s)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CHAUSSETTES_"))}
    env.update({**airflow_env(s), **sec_env, "AIRFLOW__API__PORT": str(port)})
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    passwords = security.write_airflow_passwords(s, Path(env["AIRFLOW_HOME"]))
    airflow = str(Path(sys.executable).parent / "airflow")
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, check=False, capture_output=True,
                             text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    log = home / "api-server.log"
    proc = procs.start([airflow, "api-server", "--port", str(port), "--workers", "1"], log, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        up = procs.wait_until(lambda: _request(f"{base}/api/v2/monitor/health")[0] == 200, 240, 1.0)
        assert up, procs.tail(log, 30)
        yield {"base": base, "passwords": json.loads(passwords.read_text()), "env": env, "log": log}
    finally:
        procs.stop_group(proc.pid, 10)


def test_rest_api_requires_a_token(secured_airflow):
    status, _ = _request(f"{secured_airflow['base']}/api/v2/dags")
    assert status in (401, 403)


def test_a_token_needs_the_right_password(secured_airflow):
    base = secured_airflow["base"]
    status, _ = _request(f"{base}/auth/token", {"username": "admin", "password": "not-the-password"})
    assert status in (401, 403)
    status, body = _request(f"{base}/auth/token",
                            {"username": "admin", "password": secured_airflow["passwords"]["admin"]})
    assert status in (200, 201) and body.get("access_token")
    status, dags = _request(f"{base}/api/v2/dags", token=body["access_token"])
    assert status == 200 and "dags" in dags


def test_the_ops_user_logs_in_with_its_own_password(secured_airflow):
    base = secured_airflow["base"]
    status, body = _request(f"{base}/auth/token",
                            {"username": "ops", "password": secured_airflow["passwords"]["ops"]})
    assert status in (200, 201) and body.get("access_token")


def test_no_password_in_the_environment_or_the_log(secured_airflow):
    secrets = list(secured_airflow["passwords"].values())
    assert not any(p in v for p in secrets for v in secured_airflow["env"].values())
    log = secured_airflow["log"].read_text(errors="replace")
    assert not any(p in log for p in secrets)
    assert secured_airflow["env"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
