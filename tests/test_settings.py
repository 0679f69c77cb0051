import subprocess
import sys
from pathlib import Path

import pytest
from chaussettes import settings as s


def test_defaults_point_at_the_local_stack(tmp_path):
    conf = s.load(env={}, home=tmp_path)
    assert conf.bootstrap_servers == "127.0.0.1:9092"
    assert conf.spark_master == "spark://127.0.0.1:7077"
    assert (conf.topic_logs, conf.topic_alerts) == ("http-logs", "alerts")
    assert conf.archive_dir == tmp_path / "data" / "archive"
    assert conf.checkpoint_dir == tmp_path / "checkpoints"
    assert conf.spark_master_webui_port != 8080 and conf.spark_worker_webui_port != 8080


def test_environment_fills_typed_fields(tmp_path):
    conf = s.load(env={
        "CHAUSSETTES_HOME": str(tmp_path),
        "CHAUSSETTES_KAFKA_PORT": "19092",
        "CHAUSSETTES_LOGS_PARTITIONS": "8",
        "CHAUSSETTES_KAFKA_TIMEOUT_S": "2.5",
        "CHAUSSETTES_ARCHIVE_DIR": "/data/archive",
    })
    assert conf.home == tmp_path
    assert conf.kafka_port == 19092 and conf.bootstrap_servers == "127.0.0.1:19092"
    assert conf.logs_partitions == 8 and conf.kafka_timeout_s == 2.5
    assert conf.archive_dir == Path("/data/archive")
    assert conf.run_dir == tmp_path / "run"


def test_overrides_beat_environment_and_none_is_ignored():
    conf = s.load(env={"CHAUSSETTES_BOOTSTRAP_SERVERS": "env:9092"},
                  bootstrap_servers="cli:9092", topic_logs=None)
    assert conf.bootstrap_servers == "cli:9092"
    assert conf.topic_logs == "http-logs"


def test_replace_moves_derived_folders_with_home(tmp_path):
    conf = s.load(env={}, home=tmp_path / "a").replace(home=tmp_path / "b")
    assert conf.checkpoint_dir == tmp_path / "b" / "checkpoints"


@pytest.mark.parametrize("env, fragment", [
    ({"CHAUSSETTES_KAFKA_PORT": "abc"}, "CHAUSSETTES_KAFKA_PORT='abc' is not a valid int"),
    ({"CHAUSSETTES_LOGS_PARTITIONS": "0"}, "CHAUSSETTES_LOGS_PARTITIONS must be at least 1"),
    ({"CHAUSSETTES_KAFKA_SECURITY_PROTOCOL": "TLS"}, "expected one of"),
    ({"CHAUSSETTES_KAFKA_PROTOCOL": "SASL_SSL"}, "needs CHAUSSETTES_KAFKA_SASL_MECHANISM"),
])
def test_bad_values_name_the_variable(env, fragment):
    with pytest.raises(s.SettingsError, match=fragment.replace("(", r"\(").replace("'", ".")):
        s.load(env=env)


def test_unknown_override_is_refused():
    with pytest.raises(s.SettingsError, match="unknown setting"):
        s.load(env={}, bootstrap="x")


def test_kafka_security_builds_client_and_spark_options():
    conf = s.load(env={
        "CHAUSSETTES_BOOTSTRAP_SERVERS": "k:9093",
        "CHAUSSETTES_KAFKA_PROTOCOL": "ssl",
        "CHAUSSETTES_KAFKA_CA_LOCATION": "/certs/ca.pem",
        "CHAUSSETTES_KAFKA_CERTIFICATE_LOCATION": "/certs/client.pem",
        "CHAUSSETTES_KAFKA_KEY_LOCATION": "/certs/client.key",
    })
    assert conf.kafka_client_config(**{"linger.ms": 5}) == {
        "bootstrap.servers": "k:9093", "security.protocol": "ssl",
        "ssl.ca.location": "/certs/ca.pem", "ssl.certificate.location": "/certs/client.pem",
        "ssl.key.location": "/certs/client.key", "linger.ms": 5,
    }
    assert conf.spark_kafka_options()["kafka.ssl.ca.location"] == "/certs/ca.pem"
    # the connector's bound on broker waits follows these settings, not the process's environment
    assert s.load(env={}, kafka_timeout_s=2.5).spark_kafka_options()["kafka.timeout.ms"] == "2500"
    sasl = s.load(env={}, kafka_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                  kafka_sasl_username="detector", kafka_sasl_password="pw")
    assert sasl.kafka_client_config()["sasl.mechanism"] == "SCRAM-SHA-512"
    assert "pw" not in repr(sasl)


def test_as_env_round_trips(tmp_path):
    conf = s.load(env={}, home=tmp_path, kafka_port=19999, kafka_protocol="SSL",
                  kafka_ca_location="/ca.pem")
    again = s.load(env=conf.as_env())
    assert again == conf


def test_alerting_settings_default_to_the_local_stack_and_are_printed(tmp_path):
    conf = s.load(env={}, home=tmp_path)
    assert conf.alertmanager_port != conf.kafka_tls_port  # 9093 is the TLS proxy's
    assert conf.alertmanager_url == f"http://127.0.0.1:{conf.alertmanager_port}" == conf.alertmanager_ui_url
    assert conf.ops_page_url == f"http://127.0.0.1:{conf.airflow_port}/plugin/chaussettes"
    assert conf.alertmanager_config == s.PACKAGE_DIR / "alerting" / "alertmanager.yml"
    assert conf.alertmanager_config.exists()
    ports = {conf.detector_metrics_port, conf.generator_metrics_port, conf.relay_metrics_port,
             conf.alertmanager_port, conf.kafka_port, conf.kafka_tls_port, conf.airflow_port}
    assert len(ports) == 7
    moved = s.load(env={"CHAUSSETTES_ALERTMANAGER_PORT": "19095", "CHAUSSETTES_RELAY_REFRESH_S": "5",
                        "CHAUSSETTES_ALERTMANAGER_URL": "http://am.internal:9093/"})
    assert moved.alertmanager_url == "http://am.internal:9093" and moved.relay_refresh_s == 5.0
    out = subprocess.run([sys.executable, "-m", "chaussettes", "settings"], capture_output=True, text=True,
                         env={"CHAUSSETTES_HOME": str(tmp_path), "CHAUSSETTES_ALERTMANAGER_PORT": "19095",
                              "PATH": "/usr/bin:/bin", "PYTHONPATH": str(s.PACKAGE_DIR.parent)},
                         timeout=60, check=False).stdout.splitlines()
    assert "CHAUSSETTES_ALERTMANAGER_URL=http://127.0.0.1:19095" in out
    assert "CHAUSSETTES_ALERTMANAGER_PORT=19095" in out and "CHAUSSETTES_RELAY_METRICS_PORT=9110" in out


def test_a_refresh_slower_than_the_horizon_is_refused():
    with pytest.raises(s.SettingsError, match="CHAUSSETTES_RELAY_REFRESH_S must be above 0 and below "
                                              "CHAUSSETTES_RELAY_HORIZON_S"):
        s.load(env={"CHAUSSETTES_RELAY_REFRESH_S": "300", "CHAUSSETTES_RELAY_HORIZON_S": "300"})
