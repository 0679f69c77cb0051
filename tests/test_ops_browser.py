"""The operations page in a real `airflow standalone`, checked with real tokens and a real browser.

One `airflow standalone` (temp AIRFLOW_HOME, free port, plugins = the repo's plugins/, an empty
DAGs folder, a known admin password) serves the plugin for this module; it is stopped by
process group at the end and the test checks that none of its processes is left. Headless
Chromium is Debian's (`apt-get install chromium`), driven by Playwright (no browser download).
Alerts are built by the detector's alert builder and published onto a fresh real topic.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from alerting_helpers import Alertmanager, WebhookReceiver, am_config
from chaussettes import alertmanager as am
from chaussettes import artifacts, procs
from chaussettes import settings as settings_mod
from chaussettes.ops import samples
from chaussettes.stack.airflow import airflow_env
from chaussettes.topics import ensure_topics

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
PASSWORD = "ops-" + uuid.uuid4().hex[:12]
START_TIMEOUT_S = 240


@dataclass
class AirflowUI:
    base: str
    settings: settings_mod.Settings
    alerts: list[dict]
    status: dict
    token: str
    silenced: list[str]  # incident ids (here: old per-window alerts) under an Alertmanager silence


def _post_json(url: str, payload: dict, timeout: float = 5.0) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture(scope="module")
def alertmanager_ui(tmp_path_factory):
    """A real Alertmanager with a silence on every URL incident."""
    base = tmp_path_factory.mktemp("ops-ui-am")
    webhook = WebhookReceiver()
    manager = Alertmanager(base, am_config(webhook.url, base / "am.yml")).start()
    am.create_silence(manager.url, {"alertname": "ChaussettesErrorRate", "kind": "url"}, duration_s=3600,
                      created_by="ops", comment="URL checks under maintenance")
    yield manager
    manager.stop()
    webhook.close()


@pytest.fixture(scope="module")
def airflow_ui(broker, tmp_path_factory, alertmanager_ui):
    home = tmp_path_factory.mktemp("ops-ui")
    s = settings_mod.load(env={}, home=home, bootstrap_servers=broker.bootstrap_servers,
                          topic_alerts=f"alerts-ui-{uuid.uuid4().hex[:8]}",
                          airflow_port=procs.free_port(), kafka_timeout_s=5.0,
                          alertmanager_url=alertmanager_ui.url)
    ensure_topics(s, {s.topic_alerts: 1})
    alerts = samples.mixed_alerts(24)
    samples.publish(s, alerts)
    status = samples.status_doc(thresholds_version=2)
    samples.write_status(s, status)
    store = artifacts.ThresholdsStore.from_settings(s)
    for rate, source in ((0.25, "archive"), (0.3, "kafka")):
        doc = json.loads(s.default_thresholds_path.read_text())
        doc["global"]["error_rate"] = rate
        doc["calibration"] = {"source": source, "percentile": 99.5}
        doc["validation"] = {"alert_rate": 0.004, "target": 0.005}
        store.publish(doc)

    dags = home / "dags"
    dags.mkdir()
    s.airflow_home.mkdir(parents=True)
    (s.airflow_home / "simple_auth_manager_passwords.json.generated").write_text(
        json.dumps({"admin": PASSWORD, "norole": PASSWORD}))
    # A user who can log in but whose role may not read DAGs (the simple auth manager's empty role).
    env = {**os.environ, **airflow_env(s), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,norole:"}
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(REPO / "plugins")
    log = home / "standalone.log"
    proc = procs.start([str(Path(sys.executable).parent / "airflow"), "standalone"], log, env=env)
    base = f"http://127.0.0.1:{s.airflow_port}"
    tokens: list[str] = []

    def ready() -> bool:
        assert proc.poll() is None, f"airflow standalone exited: {procs.tail(log, 30)}"
        try:
            tokens.append(_post_json(f"{base}/auth/token", {"username": "admin", "password": PASSWORD})["access_token"])
        except (OSError, ValueError, KeyError):
            return False
        return True

    try:
        assert procs.wait_until(ready, START_TIMEOUT_S, 1.0), f"no login after {START_TIMEOUT_S}s: {procs.tail(log, 30)}"
        yield AirflowUI(base=base, settings=s, alerts=alerts, status=status, token=tokens[-1],
                        silenced=[a["alert_id"] for a in alerts if a["kind"] == "url"])
    finally:
        family = procs.descendants(proc.pid) | {proc.pid}
        stopped = procs.stop_group(proc.pid, timeout_s=20)
        proc.wait(timeout=10)
        left = [pid for pid in family | set(procs.group_members(proc.pid)) if procs.alive(pid)]
        assert stopped and not left, f"airflow standalone left processes behind: {left}"


def test_plugin_api_requires_airflow_login(airflow_ui):
    url = f"{airflow_ui.base}/chaussettes/api/alerts"
    assert _get(url)[0] == 401
    assert _get(url, token="not-a-jwt")[0] in (401, 403)
    status, body = _get(url, token=airflow_ui.token)
    assert status == 200, body
    assert [a["alert_id"] for a in body["alerts"]] == [a["alert_id"] for a in reversed(airflow_ui.alerts)]
    status, health = _get(f"{airflow_ui.base}/chaussettes/api/health", token=airflow_ui.token)
    assert (status, health["health"]) == (200, "running")
    # Logged in is not enough: the page shows client IPs to a role that can read DAGs only.
    norole = _post_json(f"{airflow_ui.base}/auth/token", {"username": "norole", "password": PASSWORD})
    assert _get(url, token=norole["access_token"])[0] == 403
    # No interactive docs or schema, with or without a token.
    for route in ("docs", "redoc", "openapi.json"):
        assert _get(f"{airflow_ui.base}/chaussettes/{route}")[0] in (401, 404), route
        assert _get(f"{airflow_ui.base}/chaussettes/{route}", token=airflow_ui.token)[0] == 404, route
    # The nav entry Airflow's UI builds from the plugin.
    status, plugins = _get(f"{airflow_ui.base}/api/v2/plugins", token=airflow_ui.token)
    ours = [p for p in plugins["plugins"] if p["name"] == "chaussettes_ops"]
    assert ours and ours[0]["external_views"][0]["href"] == "chaussettes/"
    assert ours[0]["fastapi_apps"][0]["url_prefix"] == "/chaussettes"


def test_page_in_a_real_browser(airflow_ui):
    from playwright.sync_api import expect, sync_playwright

    artifacts_dir = REPO / "test-artifacts"
    artifacts_dir.mkdir(exist_ok=True)
    expected_ids = [a["alert_id"] for a in reversed(airflow_ui.alerts)]
    windows = airflow_ui.status["recent_global_windows"]
    breaches = sum(1 for w in windows if w["error_rate"] > w["threshold"])

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 2100})
            page.goto(f"{airflow_ui.base}/plugin/chaussettes")
            page.wait_for_url("**/auth/login**")  # Airflow's login first
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/plugin/chaussettes**", timeout=60_000)

            frame = page.frame_locator("iframe")
            expect(frame.locator("body[data-loaded='1']")).to_have_count(1, timeout=30_000)
            expect(frame.locator("#health-badge")).to_have_text("running")

            rows = frame.locator("#alerts-table tbody tr[data-alert-id]")
            expect(rows).to_have_count(len(expected_ids))
            assert rows.evaluate_all("rs => rs.map(r => r.dataset.alertId)") == expected_ids
            shown_counts = frame.locator("#alert-counts [data-kind-count]").all_inner_texts()
            assert shown_counts == ["global 8", "ip 8", "url 8"]

            chart = frame.locator("#rate-chart")
            assert chart.get_attribute("data-points") == str(len(windows))
            points = chart.locator("polyline.rate-line").get_attribute("points").split()
            assert len(points) == len(windows)
            assert chart.locator("circle.breach").count() == breaches > 0
            box = chart.bounding_box()
            assert box["width"] > 300 and box["height"] > 100

            # Incidents: each old alert is a one-window incident (all over by now), newest first;
            # those under the Alertmanager silence are marked, with a link to Alertmanager.
            incidents = frame.locator("#incidents-table tbody tr[data-incident-id]")
            expect(incidents).to_have_count(len(expected_ids))
            assert incidents.evaluate_all("rs => rs.map(r => r.dataset.incidentId)") == expected_ids
            silenced = frame.locator("#incidents-table tbody tr[data-silenced='1']")
            assert sorted(silenced.evaluate_all("rs => rs.map(r => r.dataset.incidentId)")) == sorted(
                airflow_ui.silenced)
            expect(silenced.first).to_contain_text("silenced until")
            expect(frame.locator("#incident-counts")).to_contain_text("0 open, 24 resolved in the last 24 h, "
                                                                     "1 active silence(s)")
            assert frame.locator("#alertmanager-link").get_attribute("href") == airflow_ui.settings.alertmanager_url

            ips = frame.locator("#top-ips tbody tr")
            expect(ips).to_have_count(len({a["key"] for a in airflow_ui.alerts if a["kind"] == "ip"}))
            expect(frame.locator("#versions-table tbody tr")).to_have_count(3)
            expect(frame.locator("#versions-table tbody tr[data-version='2']")).to_contain_text("current")
            page.screenshot(path=str(artifacts_dir / "ops-page.png"))
            (REPO / "docs").mkdir(exist_ok=True)
            shutil.copyfile(artifacts_dir / "ops-page.png", REPO / "docs" / "ops-page.png")

            # Filter by kind: only the IP alerts, newest first.
            frame.locator("#kind-filter button[data-kind='ip']").click()
            ip_ids = [a["alert_id"] for a in reversed(airflow_ui.alerts) if a["kind"] == "ip"]
            expect(rows).to_have_count(len(ip_ids))
            assert rows.evaluate_all("rs => rs.map(r => r.dataset.alertId)") == ip_ids

            # Diff of two versions.
            frame.locator("#diff-a").select_option("1")
            frame.locator("#diff-b").select_option("2")
            frame.locator("#diff-btn").click()
            expect(frame.locator("#diff-table tbody tr", has_text="global.error_rate")).to_contain_text("0.3")
        finally:
            browser.close()


def test_page_says_plainly_when_sources_are_missing(settings):
    """No status file, no calibrated version, broker down: every section says so, page renders.

    Served by uvicorn straight from the app (auth overridden: the login is covered above)."""
    import threading

    import uvicorn
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from chaussettes.ops.app import create_app
    from playwright.sync_api import expect, sync_playwright

    down = settings.replace(bootstrap_servers=f"127.0.0.1:{procs.free_port()}")
    app = create_app(down)
    create_auth_manager()
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="test-ops", role="viewer")
    port = procs.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert procs.wait_until(lambda: procs.port_open(port), 20)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1400})
                page.goto(f"http://127.0.0.1:{port}/")
                expect(page.locator("body[data-loaded='1']")).to_have_count(1, timeout=30_000)
                expect(page.locator("#health-badge")).to_have_text("unknown")
                expect(page.locator("#health-reason")).to_contain_text("no detector status file")
                expect(page.locator("#alerts-message")).to_contain_text(
                    f"Kafka at {down.bootstrap_servers} did not answer")
                expect(page.locator("#rates-message")).to_contain_text("no detector status file")
                expect(page.locator("#incidents-message")).to_contain_text(
                    f"Kafka at {down.bootstrap_servers} did not answer")
                assert page.locator("#rate-chart").get_attribute("data-points") == "0"
                expect(page.locator("#versions-table tbody tr")).to_have_count(1)
                expect(page.locator("#versions-message")).to_contain_text("no calibrated version")
                page.screenshot(path=str(REPO / "test-artifacts" / "ops-page-nothing-there.png"))
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
