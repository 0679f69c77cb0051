"""The shipped alerting files, checked by the tools that run them: Debian's amtool 0.25
(alertmanager.yml, its commented receivers included) and promtool 2.42 (prometheus.yml,
rules.yml, and the rules' unit tests in tests/promtool/rules_test.yml)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from chaussettes.settings import PACKAGE_DIR
from chaussettes.stack import alertmanager as stack_am

ALERTING = PACKAGE_DIR / "alerting"
RULES_TEST = Path(__file__).resolve().parent / "promtool" / "rules_test.yml"
# A commented-out line of YAML ("  # - name: slack", "  #   channel: ..."), not prose.
COMMENTED_YAML = re.compile(r"^(\s*)# ((?:\s*- |\s*)[a-z_]+:.*)$")


def _tool(*argv: str) -> subprocess.CompletedProcess:
    assert shutil.which(argv[0]), f"{argv[0]} is missing: make sysdeps"
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


def test_alertmanager_yml_is_valid():
    result = _tool("amtool", "check-config", str(ALERTING / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 inhibit rules" in result.stdout and "2 receivers" in result.stdout


def test_the_documented_receivers_are_valid_once_uncommented(tmp_path):
    lines = (ALERTING / "alertmanager.yml").read_text().splitlines()
    uncommented = [COMMENTED_YAML.sub(r"\1\2", line) for line in lines]
    doc = yaml.safe_load("\n".join(uncommented))
    assert [r["name"] for r in doc["receivers"]] == ["webhook", "pipeline", "slack", "pagerduty", "email"]
    assert any(r.get("receiver") == "pagerduty" for r in doc["route"]["routes"])
    out = tmp_path / "alertmanager.yml"
    out.write_text("\n".join(uncommented))
    result = _tool("amtool", "check-config", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 receivers" in result.stdout
    # Secrets are read from files, never written in the file.
    assert {"api_url_file", "routing_key_file", "auth_password_file"} <= set(re.findall(r"\b(\w+_file):", out.read_text()))


def test_routing_grouping_and_inhibition_as_documented():
    doc = yaml.safe_load((ALERTING / "alertmanager.yml").read_text())
    route = doc["route"]
    assert route["group_by"] == ["alertname", "kind", "key"] and route["receiver"] == "webhook"
    assert route["group_wait"] == "10s"  # part of the breach -> notification latency (README)
    [inhibit] = doc["inhibit_rules"]
    assert 'kind="global"' in inhibit["source_matchers"]
    assert {'kind=~"ip|url"', 'severity="warning"'} <= set(inhibit["target_matchers"])
    hooks = {r["name"]: r["webhook_configs"][0] for r in doc["receivers"]}
    assert hooks["webhook"]["send_resolved"] is True and hooks["pipeline"]["send_resolved"] is False


def test_the_stack_sets_the_webhook_url_from_settings(tmp_path):
    out = stack_am.render_config(ALERTING / "alertmanager.yml", "https://hooks.example.org/am", tmp_path / "a.yml")
    doc = yaml.safe_load(out.read_text())
    assert {r["webhook_configs"][0]["url"] for r in doc["receivers"]} == {"https://hooks.example.org/am"}
    assert _tool("amtool", "check-config", str(out)).returncode == 0
    kept = stack_am.render_config(ALERTING / "alertmanager.yml", "", tmp_path / "b.yml")
    assert kept.read_text() == (ALERTING / "alertmanager.yml").read_text()


def test_prometheus_config_and_rules_are_valid():
    rules = _tool("promtool", "check", "rules", str(ALERTING / "rules.yml"))
    assert rules.returncode == 0 and "SUCCESS: 8 rules found" in rules.stdout, rules.stdout + rules.stderr
    config = _tool("promtool", "check", "config", str(ALERTING / "prometheus.yml"))
    assert config.returncode == 0 and "1 rule files found" in config.stdout, config.stdout + config.stderr


def test_rules_fire_on_what_they_watch_and_stay_quiet_otherwise(tmp_path):
    """promtool's unit tests of the rules (input series -> expected alerts, labels, texts)."""
    shutil.copy(ALERTING / "rules.yml", tmp_path / "rules.yml")
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    result = _tool("promtool", "test", "rules", str(tmp_path / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    names = {r["alert"] for g in yaml.safe_load((ALERTING / "rules.yml").read_text())["groups"] for r in g["rules"]}
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert names == tested  # every rule has a unit test


def test_the_check_fails_on_a_broken_rule(tmp_path):
    text = (ALERTING / "rules.yml").read_text()
    good = "chaussettes_detector_last_batch_timestamp_seconds > 180"
    assert good in text
    (tmp_path / "rules.yml").write_text(text.replace(good, good.replace(">", ">>>")))
    assert _tool("promtool", "check", "rules", str(tmp_path / "rules.yml")).returncode != 0
