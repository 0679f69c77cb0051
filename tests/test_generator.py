"""The generator: traffic statistics, exact round trips, determinism, scenarios, sinks, CLI errors.

Every CLI run is a real subprocess (``python jobs/generate_logs.py`` or ``-m chaussettes.generator``);
Kafka runs go to fresh topics on the shared test broker.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from chaussettes import logformat as lf
from chaussettes.generator.traffic import TrafficConfig, TrafficModel

REPO = Path(__file__).resolve().parents[1]
JOB = str(REPO / "jobs" / "generate_logs.py")
START = "2025-05-30T00:00:00Z"


def run_cli(*args: str, env: dict | None = None, timeout: float = 120, module: bool = False):
    argv = [sys.executable, "-m", "chaussettes.generator"] if module else [sys.executable, JOB]
    full_env = {**os.environ, "CHAUSSETTES_KAFKA_TIMEOUT_S": "5", **(env or {})}
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout, env=full_env, check=False)


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0, settle_s: float = 1.5):
    """All messages of ``topic`` (assign from offset 0; waits for ``expected`` then ``settle_s`` more)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "fetch.queue.backoff.ms": 0})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out = []
        deadline = time.monotonic() + timeout_s
        settle_until = None
        while time.monotonic() < deadline:
            batch = c.consume(10_000, 0.3)
            out += [m for m in batch if m.error() is None]
            if len(out) >= expected:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return out
    finally:
        c.close()


# ----------------------------------------------------------------------------- traffic model
def test_statistics_of_200k_lines(tmp_path):
    """Global error rate within ±0.5 pp, each bad IP / bad URL within ±3 pp of the request."""
    out = tmp_path / "logs.log"
    status = tmp_path / "status.json"
    r = run_cli("--output", str(out), "--count", "200000", "--seed", "7", "--start-time", START,
                "--rate", "0", "--error-rate", "0.12", "--bad-ips", "3", "--ip-error-rate", "0.7",
                "--bad-urls", "2", "--url-error-rate", "0.55", "--status-file", str(status), "--quiet")
    assert r.returncode == 0, r.stderr
    doc = json.loads(status.read_text())
    assert doc["state"] == "stopped" and doc["lines"] == 200_000
    bad_ips, bad_urls = doc["bad_ips"], doc["bad_urls"]
    assert len(bad_ips) == 3 and len(bad_urls) == 2

    events = [lf.parse(line) for line in read_lines(out)]
    assert len(events) == 200_000 and all(events)
    errors = sum(e.status >= 400 for e in events)
    assert abs(errors / len(events) - 0.12) <= 0.005
    by_ip, by_url = collections.defaultdict(list), collections.defaultdict(list)
    for e in events:
        by_ip[e.ip].append(e.status >= 400)
        by_url[e.url].append(e.status >= 400)
    for ip in bad_ips:
        assert len(by_ip[ip]) > 2000
        assert abs(np.mean(by_ip[ip]) - 0.7) <= 0.03, ip
        assert all(e.status < 500 for e in events[:20000] if e.ip == ip and e.status >= 400)  # 4xx flood
    for url in bad_urls:
        assert len(by_url[url]) > 2000
        assert abs(np.mean(by_url[url]) - 0.55) <= 0.03, url
    # realistic mix: many clients, resources and pages, several methods and statuses
    assert len(by_ip) > 500 and len(by_url) > 80
    assert {e.method for e in events} >= {"GET", "POST", "HEAD"}
    assert {e.status for e in events} >= {200, 304, 404, 500}
    assert any(":" in e.ip for e in events)  # some IPv6 clients
    assert sum(e.query is not None for e in events) > 1000


@pytest.mark.parametrize("fmt", ["combined", "json", "csv"])
def test_generated_lines_parse_back_to_the_same_event(fmt):
    incidents = _scenario_incidents()
    model = TrafficModel(TrafficConfig(seed=11, bad_ips=2, bad_urls=2, incidents=incidents), fmt)
    origin = 1_748_563_200_000_000
    for inc in incidents:
        inc.bind(origin)
    times = origin + np.arange(30_000, dtype=np.int64) * 13_337  # 400 s, crosses every incident
    chunk = model.chunk(times, (int(times[0]), int(times[-1]) + 1))
    lines, events = chunk.render(), chunk.events()
    assert len(lines) == len(events) > 30_000  # incident lines were added
    for line, event, key in zip(lines, events, chunk.keys()):
        assert lf.parse(line) == event
        assert lf.format_event(event, fmt) == line  # the fast path writes exactly the reference format
        assert key == event.ip


@pytest.mark.parametrize("fmt", ["combined", "json", "csv"])
def test_cli_output_parses_in_every_format(tmp_path, fmt):
    out = tmp_path / f"x.{fmt}"
    r = run_cli("--format", fmt, "--output", str(out), "--count", "3000", "--rate", "0", "--seed", "3",
                "--bad-ips", "1", "--bad-urls", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    lines = read_lines(out)
    if fmt == "csv":
        assert lines[0] == lf.CSV_HEADER
        lines = lines[1:]
    assert len(lines) == 3000
    parsed = [lf.parse(line) for line in lines]
    assert all(parsed), [p for p in parsed if not p][:3]
    now = time.time()
    assert all(abs(p.event_time.timestamp() - now) < 300 for p in parsed)  # real-time mode: now


def test_same_seed_same_output(tmp_path):
    def gen(name, seed):
        path = tmp_path / name
        r = run_cli("--output", str(path), "--count", "20000", "--seed", str(seed), "--start-time", START,
                    "--bad-ips", "2", "--bad-urls", "1", "--format", "json", "--quiet", module=True)
        assert r.returncode == 0, r.stderr
        return path.read_bytes()

    a, b, c = gen("a", 5), gen("b", 5), gen("c", 6)
    assert a == b
    assert a != c
    first = lf.parse(a.splitlines()[0])
    assert lf.iso_utc(first.event_time) == "2025-05-30T00:00:00.000000Z"


@pytest.mark.parametrize("args, sha256", [
    (["--count", "30000", "--seed", "7"], "9aa25b8003c95fda7f663901141183aebadce7bf848856da4a4ba5db35ecc3f8"),
    (["--count", "30000", "--seed", "3", "--bad-ips", "2", "--bad-urls", "1", "--format", "json"],
     "92c3cb2a35e2db9a5c289680ef5b290c6ba7d78e89ab8c9f29b0014841386057"),
])
def test_existing_seeds_give_the_same_bytes_as_before_the_profiles(tmp_path, args, sha256):
    # the digests of these runs before the small-site profile existed: its optional parts
    # draw no random number unless switched on
    import hashlib

    out = tmp_path / "out.log"
    r = run_cli("--output", str(out), "--start-time", START, "--quiet", *args)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha256


def test_small_site_profile(tmp_path):
    """A day of --profile small-site: a few lines/s with a day/night cycle, thousands of
    clients, crawlers with a few 404s, /login answering 401s; the shipped scenario by name."""
    out, labels = tmp_path / "day.jsonl", tmp_path / "labels.json"
    args = ("--profile", "small-site", "--start-time", "2026-11-23T00:00:00Z", "--duration", "1d",
            "--format", "json", "--seed", "4", "--quiet")
    r = run_cli(*args, "--output", str(out))
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in read_lines(out)]
    assert 200_000 < len(events) < 330_000  # ~3 lines/s over 86,400 s
    by_hour = collections.Counter(int(e["timestamp"][11:13]) for e in events)
    assert by_hour[14] > 3 * by_hour[2]  # day and night
    assert len({e["ip"] for e in events}) > 2500
    bots = [e for e in events if "Googlebot" in (e.get("user_agent") or "") or "bingbot" in (e.get("user_agent") or "")]
    crawlers = collections.Counter(e["ip"] for e in bots).most_common(8)
    crawled = [e for e in bots if e["ip"] in dict(crawlers)]
    assert 0.12 < len(crawled) / len(events) < 0.25
    assert 0.04 < sum(e["status"] == 404 for e in crawled) / len(crawled) < 0.12
    assert len({e["url"] for e in crawled}) > 250  # they walk the site
    login = [e for e in events if e["url"] == "/login"]
    assert len(login) > 2000 and 0.35 < sum(e["status"] == 401 for e in login) / len(login) < 0.45
    assert 0.03 < sum(e["status"] >= 400 for e in events) / len(events) < 0.07
    # same seed, same bytes; a flag given wins over the profile
    again = tmp_path / "again.jsonl"
    assert run_cli(*args, "--output", str(again)).returncode == 0
    assert again.read_bytes() == out.read_bytes()
    r = run_cli("--profile", "small-site", "--sink", "console", "--count", "5", "--seed", "1", "--rate", "0",
                "--scenario", "small-site", "--labels", str(labels), "--ips", "40")
    assert r.returncode == 0, r.stderr
    assert len({lf.parse(line).ip for line in r.stdout.splitlines()}) <= 48  # 40 clients + 8 crawlers
    names = [i["name"] for i in json.loads(labels.read_text())["incidents"]]
    assert names[:2] == ["night-scanner", "orders-outage"] and "login-down" in names
    r = run_cli("--profile", "tiny", "--sink", "console", "--count", "1")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_history_mode_spacing_and_end(tmp_path):
    out = tmp_path / "h.log"
    r = run_cli("--output", str(out), "--start-time", START, "--duration", "60", "--rate", "50",
                "--seed", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    events = [lf.parse(line) for line in read_lines(out)]
    assert len(events) == 3000  # 60 s x 50 lines/s of event time
    assert events[0].event_time.isoformat() == "2025-05-30T00:00:00+00:00"
    assert events[-1].event_time.isoformat() == "2025-05-30T00:00:59+00:00"


# ----------------------------------------------------------------------------- scenarios
SCENARIO_YAML = """
incidents:
  - kind: ip_flood
    name: scanner
    start: 60
    duration: 60
    entity: 198.51.100.23
    rate: 40
    error_rate: 0.9
  - kind: url_outage
    start: 2m
    duration: 60
    entity: /api/v1/checkout
    rate: 30
    error_rate: 0.8
  - kind: error_spike
    start: 200
    duration: 50
    error_rate: 0.5
  - kind: traffic_surge
    start: 300
    duration: 60
    rate: 100
"""


def _scenario_incidents():
    import yaml
    from chaussettes.generator.scenario import from_doc

    return from_doc(yaml.safe_load(SCENARIO_YAML))


def test_scenario_labels_and_incidents(tmp_path):
    scen = tmp_path / "incidents.yaml"
    scen.write_text(SCENARIO_YAML)
    labels = tmp_path / "labels.json"
    out = tmp_path / "s.log"
    r = run_cli("--output", str(out), "--start-time", START, "--duration", "420", "--rate", "50",
                "--seed", "2", "--scenario", str(scen), "--labels", str(labels), "--quiet")
    assert r.returncode == 0, r.stderr
    doc = json.loads(labels.read_text())
    assert doc["origin"] == "2025-05-30T00:00:00.000000Z" and doc["seed"] == 2
    got = [(i["name"], i["kind"], i["alert_kind"], i["entity"], i["start"], i["end"]) for i in doc["incidents"]]
    assert got == [
        ("scanner", "ip_flood", "ip", "198.51.100.23", "2025-05-30T00:01:00.000000Z", "2025-05-30T00:02:00.000000Z"),
        ("url_outage-1", "url_outage", "url", "/api/v1/checkout", "2025-05-30T00:02:00.000000Z",
         "2025-05-30T00:03:00.000000Z"),
        ("error_spike-2", "error_spike", "global", "*", "2025-05-30T00:03:20.000000Z", "2025-05-30T00:04:10.000000Z"),
        ("traffic_surge-3", "traffic_surge", None, "*", "2025-05-30T00:05:00.000000Z", "2025-05-30T00:06:00.000000Z"),
    ]
    events = [lf.parse(line) for line in read_lines(out)]
    assert all(events)

    def window(a, b, pred=lambda e: True):
        sel = [e for e in events if a <= e.event_time.timestamp() - events[0].event_time.timestamp() < b and pred(e)]
        return len(sel), (sum(e.status >= 400 for e in sel) / len(sel) if sel else 0.0)

    flood_n, flood_rate = window(60, 120, lambda e: e.ip == "198.51.100.23")
    assert abs(flood_n - 2400) < 60 and abs(flood_rate - 0.9) < 0.05
    assert window(0, 60, lambda e: e.ip == "198.51.100.23")[0] == 0
    outage_n, outage_rate = window(120, 180, lambda e: e.url == "/api/v1/checkout")
    assert outage_n >= 1800 and abs(outage_rate - 0.8) < 0.05
    assert window(200, 250)[1] > 0.4  # global spike
    assert window(0, 60)[1] < 0.15
    surge_n, surge_rate = window(300, 360)
    calm_n, _ = window(360, 420)
    assert abs(surge_n - 9000) < 200 and abs(calm_n - 3000) < 100
    assert surge_rate < 0.15  # a surge without errors


@pytest.mark.parametrize("text, field", [
    ("incidents: [{kind: ip_flood, start: 10}]", "incidents[0].duration"),
    ("incidents: [{kind: meteor, start: 1, duration: 2}]", "incidents[0].kind"),
    ("incidents: [{kind: error_spike, start: 1, duration: 2, error_rate: 3}]", "incidents[0].error_rate"),
    ("incidents: [{kind: url_outage, start: 1, duration: 2}, {kind: ip_flood, start: x, duration: 1}]",
     "incidents[1].start"),
    ("incidents: [{kind: ip_flood, start: 1, duration: 2, rate: -5}]", "incidents[0].rate"),
    ("incidents: [{kind: url_outage, start: 1, duration: 2, entity: 'no slash'}]", "incidents[0].entity"),
    ("incidents: [{kind: ip_flood, start: 1, duration: 2, colour: red}]", "incidents[0].colour"),
    ("incidents: [{kind: ip_flood", "not valid YAML"),
    ("incidents: []", "incidents"),
])
def test_malformed_scenario_names_the_field(tmp_path, text, field):
    scen = tmp_path / "bad.yaml"
    scen.write_text(text)
    r = run_cli("--sink", "console", "--count", "1", "--scenario", str(scen))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert field in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_json_scenario(tmp_path):
    scen = tmp_path / "s.json"
    scen.write_text(json.dumps([{"kind": "ip_flood", "start": 0, "duration": 10, "entity": "203.0.113.5",
                                 "rate": 100, "error_rate": 1.0}]))
    out = tmp_path / "o.log"
    r = run_cli("--output", str(out), "--start-time", START, "--duration", "10", "--rate", "10",
                "--scenario", str(scen), "--seed", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    flood = [e for e in map(lf.parse, read_lines(out)) if e.ip == "203.0.113.5"]
    assert len(flood) == 1000 and all(e.status >= 400 for e in flood)


# ----------------------------------------------------------------------------- CLI errors
@pytest.mark.parametrize("args, needle", [
    (["--rate", "-5"], "--rate"),
    (["--rate", "abc"], "--rate"),
    (["--error-rate", "1.5"], "--error-rate"),
    (["--ip-error-rate", "-0.1"], "--ip-error-rate"),
    (["--url-error-rate", "2"], "--url-error-rate"),
    (["--format", "xml"], "--format"),
    (["--sink", "pigeon"], "--sink"),
    (["--replay", "/nonexistent/access.log"], "/nonexistent/access.log"),
    (["--count", "0"], "--count"),
    (["--duration", "soon"], "--duration"),
    (["--port", "70000"], "--port"),
    (["--sink", "file"], "--output"),
    (["--start-time", "yesterday"], "--start-time"),
    (["--labels", "x.json"], "--scenario"),
    (["--speed", "2"], "--replay"),
    (["--ips", "0"], "--ips"),
    (["--bad-ips", "60", "--bad-ip-share", "0.02"], "share"),
    (["--error-rate", "0.01", "--bad-ips", "2", "--ip-error-rate", "0.9"], "--error-rate"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_bad_flags_exit_2_with_one_line(args, needle):
    r = run_cli(*args, "--sink", "console", "--count", "1") if "--sink" not in args else run_cli(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("generate_logs: error: ") and needle in lines[0]
    assert r.stdout == ""


def test_unreadable_replay_file_is_a_usage_error(tmp_path):
    secret = tmp_path / "secret.log"
    secret.write_text("x\n")
    secret.chmod(0)
    if os.access(secret, os.R_OK):  # running as root: permissions do not apply
        secret = tmp_path  # a directory is unreadable as a log for everyone
    r = run_cli("--replay", str(secret), "--sink", "console")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_help_lists_the_flags():
    r = run_cli("--help")
    assert r.returncode == 0
    for flag in ("--format", "--sink", "--rate", "--count", "--duration", "--seed", "--error-rate", "--bad-ips", "--profile",
                 "--ip-error-rate", "--bad-urls", "--url-error-rate", "--ips", "--urls", "--output", "--port",
                 "--bootstrap-servers", "--topic", "--start-time", "--scenario", "--labels", "--replay",
                 "--speed", "--status-file"):
        assert flag in r.stdout


def test_unreachable_broker_fails_fast_with_one_line():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    r = run_cli("--bootstrap-servers", f"127.0.0.1:{port}", "--count", "10",
                env={"CHAUSSETTES_KAFKA_TIMEOUT_S": "2"})
    elapsed = time.monotonic() - t0
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "2s" in lines[0], r.stderr
    assert elapsed < 30  # bounded by CHAUSSETTES_KAFKA_TIMEOUT_S, not librdkafka's defaults


# ----------------------------------------------------------------------------- sinks
def test_kafka_sink_delivers_exactly_n_keyed_by_ip(broker, new_topic):
    topic = new_topic(4)
    r = run_cli("--bootstrap-servers", broker.bootstrap_servers, "--topic", topic, "--count", "25000",
                "--rate", "0", "--seed", "9", "--bad-ips", "2")
    assert r.returncode == 0, r.stderr
    assert "25,000 lines" in r.stderr and "0 delivery errors" in r.stderr
    msgs = consume(broker.bootstrap_servers, topic, 25_000)
    assert len(msgs) == 25_000
    by_key_partition = {}
    for m in msgs:
        ev = lf.parse(m.value())
        assert ev and m.key().decode() == ev.ip
        assert by_key_partition.setdefault(ev.ip, m.partition()) == m.partition()  # one client, one partition
    assert len({m.partition() for m in msgs}) == 4


def test_sigterm_flushes_and_exits_0(broker, new_topic, tmp_path):
    topic = new_topic(2)
    status = tmp_path / "status.json"
    env = {**os.environ, "CHAUSSETTES_KAFKA_TIMEOUT_S": "5"}
    proc = subprocess.Popen([sys.executable, JOB, "--bootstrap-servers", broker.bootstrap_servers, "--topic",
                             topic, "--rate", "3000", "--status-file", str(status), "--progress-interval", "0.5"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        doc = {}
        while time.monotonic() < deadline:
            if status.exists():
                doc = json.loads(status.read_text())
                if doc.get("lines", 0) >= 2000:
                    break
            time.sleep(0.1)
        assert doc.get("state") == "running" and doc["pid"] == proc.pid
        assert doc["sink"].startswith("kafka") and doc["format"] == "combined"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in err and "lines/s" in err
    final = json.loads(status.read_text())
    assert final["state"] == "stopped" and final["error"] is None and final["delivery_errors"] == 0
    msgs = consume(broker.bootstrap_servers, topic, final["lines"])
    assert len(msgs) == final["lines"] > 2000  # every acknowledged line is on the topic


def test_tcp_sink_serves_lines_to_a_client(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, JOB, "--sink", "tcp", "--port", str(port), "--rate", "2000",
                             "--format", "json", "--progress-interval", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        sock = None
        deadline = time.monotonic() + 20
        while sock is None and time.monotonic() < deadline:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                time.sleep(0.1)
        assert sock is not None
        data = b""
        with sock:
            while data.count(b"\n") < 500:
                chunk = sock.recv(65536)
                assert chunk
                data += chunk
        lines = data.split(b"\n")[:500]
        assert all(lf.parse(line) for line in lines)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped by SIGINT" in err


def test_console_sink_and_closed_pipe():
    r = run_cli("--sink", "console", "--count", "7", "--seed", "1", "--rate", "0")
    assert r.returncode == 0
    assert len(r.stdout.splitlines()) == 7 and all(lf.parse(x) for x in r.stdout.splitlines())
    assert "done: 7 lines" in r.stderr
    # `generate_logs --sink console | head -3`: the closed pipe ends the run quietly
    gen = subprocess.Popen([sys.executable, JOB, "--sink", "console", "--rate", "0", "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = [gen.stdout.readline() for _ in range(3)]
    gen.stdout.close()
    _, err = gen.communicate(timeout=30)
    assert all(lf.parse(x) for x in head)
    assert gen.returncode == 0 and b"Traceback" not in err


# ----------------------------------------------------------------------------- stack component
def test_stack_component_runs_and_reports_health(settings, new_topic):
    from chaussettes import procs
    from chaussettes.stack import generator as gen_component

    settings = settings.replace(topic_logs=new_topic(4))
    comp = gen_component.component(settings)
    assert comp is not None and comp.name == "generator"
    assert "--status-file" in comp.argv and str(settings.generator_status_path) in comp.argv
    comp.prepare()
    assert not comp.healthy()
    env = {**os.environ, **settings.as_env(), **comp.env}
    log = settings.run_dir / "logs" / "generator.log"
    proc = procs.start(comp.argv, log, env=env)
    try:
        # healthy = a fresh heartbeat, which the first one is before any line is sent:
        # wait for lines too, or a stop right away would leave nothing to check below
        assert procs.wait_until(
            lambda: comp.healthy() and (gen_component.heartbeat(settings) or {}).get("lines", 0) > 0, 30), procs.tail(log)
        doc = gen_component.heartbeat(settings)
        assert doc["sink"] == f"kafka {settings.bootstrap_servers} topic {settings.topic_logs}"
        assert len(doc["bad_ips"]) == 2 and len(doc["bad_urls"]) == 1
    finally:
        procs.stop_group(proc.pid, timeout_s=20)
    proc.wait(10)
    final = json.loads(settings.generator_status_path.read_text())
    assert final["state"] == "stopped" and final["error"] is None, final  # flushed on SIGTERM
    assert not comp.healthy()
    assert "stopped by SIGTERM" in log.read_text()
    lines = final["lines"]
    assert len(consume(settings.bootstrap_servers, settings.topic_logs, lines)) == lines > 0


def test_stack_component_switched_off(settings):
    from chaussettes.stack import generator as gen_component

    assert gen_component.component(settings.replace(generator_rate=0)) is None
    assert gen_component.component(settings) is not None


def test_healthcheck_module(tmp_path):
    status = tmp_path / "st.json"
    cmd = [sys.executable, "-m", "chaussettes.generator.health", "--status-file", str(status)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "no heartbeat" in r.stderr
    status.write_text(json.dumps({"state": "running"}))
    assert subprocess.run(cmd, capture_output=True, text=True, check=False).returncode == 0
    status.write_text(json.dumps({"state": "failed", "error": "Kafka at x did not answer"}))
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "did not answer" in r.stderr


def test_broker_lost_mid_run_fails_with_one_line(tmp_path):
    """A broker that disappears: delivery errors counted, then a clear error and exit 1."""
    from chaussettes.broker import LocalBroker

    own = LocalBroker(run_dir=tmp_path).start()  # its own broker: the shared one must live on
    status = tmp_path / "status.json"
    env = {**os.environ, "CHAUSSETTES_KAFKA_TIMEOUT_S": "2"}  # gives up after max(10, 3 x 2) s
    proc = subprocess.Popen([sys.executable, JOB, "--bootstrap-servers", own.bootstrap_servers, "--rate", "1000",
                             "--status-file", str(status), "--progress-interval", "0"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                status.exists() and json.loads(status.read_text()).get("lines", 0) > 500):
            time.sleep(0.1)
        own.stop()
        _, err = proc.communicate(timeout=90)
    finally:
        own.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"generate_logs: error: Kafka at {own.bootstrap_servers}")
    final = json.loads(status.read_text())
    assert final["state"] == "failed" and final["delivery_errors"] > 0 and final["error"]


def test_example_scenario_ships_with_the_package(tmp_path):
    import chaussettes.generator as gen_pkg

    example = Path(gen_pkg.__file__).parent / "example_scenario.json"
    labels = tmp_path / "labels.json"
    r = run_cli("--sink", "console", "--count", "5", "--scenario", str(example), "--labels", str(labels))
    assert r.returncode == 0, r.stderr
    doc = json.loads(labels.read_text())
    assert [i["alert_kind"] for i in doc["incidents"]] == ["ip", "url", "global", None]
