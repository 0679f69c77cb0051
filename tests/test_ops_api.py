"""The operations API (FastAPI TestClient on the app) against a real broker.

Alerts are built by the detector's own builder (``chaussettes.detector.alerts.build_alert``)
and published onto a fresh real topic; the status file is written where the detector
writes it. Here Airflow's login (``get_user``) is overridden by a fixed user of the simple auth
manager, whose real authorization decides (a role that can read DAGs), except in the tests that
check a request without credentials is refused; test_ops_browser.py checks the real tokens
against a running Airflow.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import statistics
import time

import incident_samples
import pytest
from airflow.api_fastapi.app import create_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from alerting_helpers import Alertmanager, WebhookReceiver, am_config
from chaussettes import alertmanager as am
from chaussettes import artifacts, procs
from chaussettes.ops import samples
from chaussettes.ops.app import create_app
from fastapi.testclient import TestClient

ROUTES = ["/", "/api/health", "/api/alerts", "/api/incidents", "/api/rates", "/api/versions",
          "/api/versions/diff?a=0&b=0"]
FASTAPI_DOCS = ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"]


@pytest.fixture(scope="module", autouse=True)
def auth_manager():
    return create_auth_manager()  # Airflow's configured one: the simple auth manager


def client_for(settings, authenticated: bool = True, role: str | None = "viewer", **kwargs) -> TestClient:
    app = create_app(settings, **kwargs)
    if authenticated:
        app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="test-ops", role=role)
    return TestClient(app)


@pytest.mark.parametrize("route", ROUTES)
def test_no_credentials_is_refused(settings, route):
    response = client_for(settings, authenticated=False).get(route)
    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated"}


@pytest.mark.parametrize("route", ROUTES)
def test_a_login_without_a_role_that_reads_dags_is_refused(settings, route):
    """The page shows client IPs: a logged-in user whose role cannot read DAGs gets 403."""
    response = client_for(settings, role=None).get(route)
    assert response.status_code == 403
    assert response.json() == {"detail": "the operations page needs a role that can read DAGs"}
    assert client_for(settings, role="viewer").get("/api/versions").status_code == 200


@pytest.mark.parametrize("route", FASTAPI_DOCS)
def test_no_interactive_docs_or_schema_with_or_without_login(settings, route):
    """FastAPI serves these outside the app's dependencies, with scripts from a CDN."""
    assert client_for(settings, authenticated=False).get(route).status_code == 404
    assert client_for(settings).get(route).status_code == 404


def test_api_sections_with_data(settings, new_topic):
    s = settings.replace(topic_alerts=new_topic(partitions=2))
    alerts = samples.mixed_alerts(30)
    samples.publish(s, alerts)
    status = samples.status_doc(thresholds_version=1)
    samples.write_status(s, status)
    doc = json.loads(s.default_thresholds_path.read_text())
    doc["global"]["error_rate"] = 0.3
    doc["calibration"] = {"source": "archive"}
    artifacts.ThresholdsStore.from_settings(s).publish(doc)
    client = client_for(s)

    health = client.get("/api/health").json()
    assert health["health"] == "running" and health["status"]["quarantined_total"] == 37
    assert "recent_global_windows" not in health

    body = client.get("/api/alerts").json()
    assert body["ok"] and [a["alert_id"] for a in body["alerts"]] == [a["alert_id"] for a in reversed(alerts)]
    assert body["counts_last_hour"] == {"global": 10, "ip": 10, "url": 10} and body["counts_exact"]
    urls = client.get("/api/alerts", params={"kind": "url", "limit": 3}).json()
    assert [a["kind"] for a in urls["alerts"]] == ["url"] * 3 and urls["matching"] == 10
    assert client.get("/api/alerts", params={"kind": "bogus"}).status_code == 400

    rates = client.get("/api/rates").json()
    assert [w["window_start"] for w in rates["series"]] == [w["window_start"] for w in status["recent_global_windows"]]
    assert rates["series_error"] is None and rates["top_ips"] and rates["top_urls"]

    versions = client.get("/api/versions").json()
    assert [(v["version"], v["current"]) for v in versions["versions"]] == [(1, True), (0, False)]
    assert versions["in_force"] == 1
    diff = client.get("/api/versions/diff", params={"a": 0, "b": 1}).json()
    assert {"path": "global.error_rate", "change": "changed", "a": 0.2, "b": 0.3} in diff["changes"]
    missing = client.get("/api/versions/diff", params={"a": 0, "b": 7})
    assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]

    page = client.get("/")
    assert page.status_code == 200 and "Chaussettes — operations" in page.text
    # Self-contained: no CDN, no external script, style or font (the SVG namespace is a name).
    assert set(re.findall(r"https?://[^\s\"')]+", page.text)) == {"http://www.w3.org/2000/svg"}
    assert "<script src" not in page.text and "<link" not in page.text


def test_page_and_api_with_nothing_there(settings, new_topic):
    client = client_for(settings.replace(topic_alerts=new_topic(partitions=1)))
    assert client.get("/").status_code == 200
    health = client.get("/api/health").json()
    assert health["health"] == "unknown" and "no detector status file" in health["reason"]
    body = client.get("/api/alerts").json()
    assert body["ok"] and body["alerts"] == [] and body["counts_last_hour"] == {"global": 0, "ip": 0, "url": 0}
    assert client.get("/api/rates").json()["series"] == []
    assert [v["version"] for v in client.get("/api/versions").json()["versions"]] == [0]


@pytest.fixture
def alertmanager_(tmp_path):
    webhook = WebhookReceiver()
    manager = Alertmanager(tmp_path / "am", am_config(webhook.url, tmp_path / "am.yml")).start()
    yield manager
    manager.stop()
    webhook.close()


def test_incidents_open_first_then_resolved_each_marked_silenced_or_not(settings, new_topic, alertmanager_):
    s = settings.replace(topic_alerts=new_topic(partitions=2), alertmanager_url=alertmanager_.url,
                         alertmanager_ui_url="http://am.example.org:9093", alert_site="paris")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    records = (incident_samples.incident("ip", "10.0.0.7", now - dt.timedelta(minutes=12),
                                         severities=("warning", "critical"), resolve=False)
               + incident_samples.incident("url", "/pay", now - dt.timedelta(minutes=5), resolve=False)
               + incident_samples.incident("global", "*", now - dt.timedelta(minutes=40), severities=("major",))
               + incident_samples.incident("ip", "10.0.0.8", now - dt.timedelta(days=3)))  # resolved long ago
    old_alert = samples.make_alert("url", "/old", now - dt.timedelta(minutes=20))
    incident_samples.publish(s, s.topic_alerts, [*records, old_alert, b"not an alert"])
    silence = am.create_silence(alertmanager_.url, {"alertname": "ChaussettesErrorRate", "key": "/pay"},
                                duration_s=3600, created_by="ops", comment="deploy in progress")
    am.create_silence(alertmanager_.url, {"site": "lyon"}, duration_s=3600, created_by="ops", comment="other site")

    body = client_for(s).get("/api/incidents").json()
    assert body["ok"] and body["alertmanager"]["ok"] and body["silences_active"] == 2
    shown = [(i["kind"], i["key"], i["state"], i["severity"]) for i in body["incidents"]]
    assert shown == [("ip", "10.0.0.7", "open", "critical"), ("url", "/pay", "open", "warning"),
                     ("url", "/old", "resolved", "warning"), ("global", "*", "resolved", "major")]
    assert (body["open"], body["resolved_recently"], body["invalid"]) == (2, 2, 1)
    ip, pay, old, glob = body["incidents"]
    assert ip["silenced"] is False and pay["silenced"] is True
    assert pay["silenced_by"] == [{"id": silence, "comment": "deploy in progress", "created_by": "ops",
                                   "ends_at": pay["silenced_by"][0]["ends_at"]}]
    assert pay["labels"] == {"alertname": "ChaussettesErrorRate", "kind": "url", "key": "/pay",
                             "severity": "warning", "site": "paris"}
    assert ip["silence_url"].startswith("http://am.example.org:9093/#/silences/new?filter=")
    assert ip["started_at"] == records[0]["first_window_start"] and 719 <= ip["duration_s"] <= 780
    assert ip["peak_error_rate"] == records[1]["peak_error_rate"] and ip["windows_breached"] == 2
    assert old["legacy"] and old["windows_breached"] == 1
    assert glob["resolved_at"] == records[-3]["resolved_at"]
    assert body["alertmanager"]["ui_url"] == "http://am.example.org:9093"
    limited = client_for(s).get("/api/incidents", params={"limit": 1}).json()
    assert len(limited["incidents"]) == 1 and limited["open"] == 2


def test_incidents_without_alertmanager_say_so_and_still_show(settings, new_topic):
    s = settings.replace(topic_alerts=new_topic(partitions=1),
                         alertmanager_url=f"http://127.0.0.1:{procs.free_port()}")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    incident_samples.publish(s, s.topic_alerts, incident_samples.incident("ip", "10.0.0.7", now, resolve=False))
    response = client_for(s).get("/api/incidents")
    assert response.status_code == 200
    body = response.json()
    assert [i["key"] for i in body["incidents"]] == ["10.0.0.7"] and not body["incidents"][0]["silenced"]
    assert body["alertmanager"]["ok"] is False
    assert body["alertmanager"]["error"].startswith(f"Alertmanager at {s.alertmanager_url} is unreachable")
    assert body["alertmanager"]["error"].endswith("the incidents are shown without their silences")


def test_broker_down_page_still_renders(settings):
    down = settings.replace(bootstrap_servers=f"127.0.0.1:{procs.free_port()}")
    client = client_for(down)
    assert client.get("/").status_code == 200
    alerts = client.get("/api/alerts")
    assert alerts.status_code == 503
    assert alerts.json()["error"].startswith(f"Kafka at {down.bootstrap_servers} did not answer")
    incidents = client.get("/api/incidents")
    assert incidents.status_code == 503 and "did not answer" in incidents.json()["error"]
    rates = client.get("/api/rates")  # served from the same (failed) read, not a second wait
    assert rates.status_code == 200 and "did not answer" in rates.json()["alerts_error"]
    assert client.get("/api/health").json()["health"] == "unknown"


def test_latency_with_100k_alerts(settings, new_topic, capsys):
    """100k alerts on the topic: the API reads the tail only. Figures printed, not asserted."""
    s = settings.replace(topic_alerts=new_topic(partitions=1))
    alerts = samples.mixed_alerts(100_000)
    samples.publish(s, alerts)
    samples.write_status(s, samples.status_doc())
    client = client_for(s, tail_cache_s=0)  # every call reads Kafka
    timings = {}
    for route in ("/api/alerts", "/api/incidents", "/api/rates", "/api/health", "/api/versions", "/"):
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            response = client.get(route)
            runs.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        timings[route] = runs
    body = client.get("/api/alerts", params={"limit": 5}).json()
    assert [a["alert_id"] for a in body["alerts"]] == [a["alert_id"] for a in alerts[-1:-6:-1]]
    # The tail, not the topic (on Tansu the high watermark may lag by one producer batch).
    assert 5000 <= body["alerts_in_tail"] < 20_000
    with capsys.disabled():
        for route, runs in timings.items():
            print(f"\n[ops latency, 100k alerts] {route}: first {runs[0]:.0f} ms, then median "
                  f"{statistics.median(runs[1:]):.0f} ms, max {max(runs[1:]):.0f} ms", end="")
        print()
