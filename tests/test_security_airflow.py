"""Airflow with security on, as `make up` runs it: the stack's airflow component (its command,
environment and preparation) started by the stack manager with CHAUSSETTES_SECURITY_ENABLED.
The REST API answers nothing without a token, a token needs the password the stack wrote,
and no password or secret shows in the environment or command line of any of its processes,
nor in any of its logs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from chaussettes import procs, security
from chaussettes import settings as settings_mod
from chaussettes.stack import manager

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
def secured_airflow(tmp_path_factory, monkeypatch_module):
    # The secrets come from the run folder, as on a machine where nobody set them.
    monkeypatch_module.delenv("CHAUSSETTES_SPARK_AUTH_SECRET", raising=False)
    home = tmp_path_factory.mktemp("airflow-auth")
    s = settings_mod.load(env={}, home=home, airflow_port=procs.free_port(), security_enabled=True,
                          kafka_timeout_s=5.0)
    manager.up(s, only={"airflow"}, echo=lambda _: None)
    try:
        yield {"base": f"http://{s.bind_host}:{s.airflow_port}", "settings": s,
               "passwords": security.airflow_passwords(s), "pgid": manager.load_state(s)["airflow"].pid}
    finally:
        manager.down(s, echo=lambda _: None)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


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
    """Every process of the running Airflow (the launcher, API server, scheduler, DAG processor,
    triggerer...): its command line and environment as /proc shows them to `ps e`, and every log
    it wrote. (Processes that set their title with setproctitle have that memory overwritten;
    they were started with their parent's environment, which is read.)"""
    s = secured_airflow["settings"]
    base = secured_airflow["base"]
    for user, password in secured_airflow["passwords"].items():  # used: the server read them
        assert _request(f"{base}/auth/token", {"username": user, "password": password})[0] in (200, 201)
    secrets = [*secured_airflow["passwords"].values(), security.secret(s, "spark_auth_secret")]
    pgid = secured_airflow["pgid"]
    seen: dict[int, tuple[str, str]] = {}
    for pid in set(procs.group_members(pgid)) | procs.descendants(pgid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:  # a short-lived child that ended meanwhile
            continue
        seen[pid] = (procs.command_line(pid), environ)
    commands = " | ".join(command for command, _ in seen.values())
    assert all(name in commands for name in ("chaussettes.stack.airflow", "api_server", "scheduler",
                                              "dag-processor", "triggerer")), commands
    leaks = {pid: command[:60] for pid, (command, environ) in seen.items()
             if any(x in command or x in environ for x in secrets)}
    assert leaks == {}
    # The launcher's environment is what every Airflow process was started with.
    launcher = seen[pgid][1].split("\0")
    assert f"AIRFLOW_HOME={s.airflow_home}" in launcher
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False" in launcher
    stack_log = Path(manager.load_state(s)["airflow"].log)
    assert "api-server" in stack_log.read_text(errors="replace")  # standalone's own output
    logs = [stack_log, *(p for p in (s.airflow_home / "logs").rglob("*") if p.is_file())]
    for path in logs:
        text = path.read_text(errors="replace")
        assert not any(x in text for x in secrets), path
