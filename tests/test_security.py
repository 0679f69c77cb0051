"""Security: certificates, client settings, and mutual TLS against a real Tansu broker.

The broker listens on a loopback plaintext port and advertises the TLS port of a real
``socat`` proxy started by the ``kafka-tls`` stack component; clients are refused unless they
present a certificate signed by the platform's CA.
"""

from __future__ import annotations

import stat
import time
import uuid
from pathlib import Path

import pytest
from chaussettes import procs, security
from chaussettes import settings as settings_mod
from chaussettes.broker import broker_argv
from chaussettes.topics import ensure_topics
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

QUIET = {"log_level": 0}  # librdkafka's own retry chatter is not what the tests check


# ---------------------------------------------------------------- certificates (no broker)
def test_pki_has_a_ca_a_server_and_one_client_cert_per_component(tmp_path):
    from cryptography import x509

    pki = security.ensure_pki(tmp_path / "tls")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    for name in security.COMPONENTS:
        cc = pki.client(name)
        cert = x509.load_pem_x509_certificate(cc.cert.read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == name
    keys = [pki.ca_key, pki.server_key] + [pki.client(n).key for n in security.COMPONENTS]
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(pki.directory.stat().st_mode) == 0o700


def test_pki_is_idempotent_and_renews_what_is_missing(tmp_path):
    pki = security.ensure_pki(tmp_path / "tls")
    before = {p.name: p.read_bytes() for p in pki.directory.iterdir()}
    security.ensure_pki(pki.directory)
    assert {p.name: p.read_bytes() for p in pki.directory.iterdir()} == before
    pki.client("detector").cert.unlink()
    security.ensure_pki(pki.directory)
    after = {p.name: p.read_bytes() for p in pki.directory.iterdir()}
    assert after["detector.pem"] != before["detector.pem"]
    assert after["ca.pem"] == before["ca.pem"] and after["generator.pem"] == before["generator.pem"]


def test_server_cert_is_remade_for_new_hosts(tmp_path):
    from cryptography import x509

    pki = security.ensure_pki(tmp_path / "tls")
    security.ensure_pki(pki.directory, server_hosts=("kafka", "localhost", "127.0.0.1"))
    san = x509.load_pem_x509_certificate(pki.server_cert.read_bytes()).extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"kafka", "localhost"}


def test_pkcs12_keystore_opens_with_its_password_only(tmp_path):
    from cryptography.hazmat.primitives.serialization import pkcs12

    pki = security.ensure_pki(tmp_path / "tls", components=())
    path = security.write_pkcs12_keystore(pki, tmp_path / "k.p12", "s3cret-pw")
    key, cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), b"s3cret-pw")
    assert key is not None and cert is not None and len(extra) == 1
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(path.read_bytes(), b"wrong")


# ---------------------------------------------------------------- settings built in one place
def test_secured_settings_select_mutual_tls_through_the_proxy(tmp_path):
    base = settings_mod.load(env={}, home=tmp_path, kafka_port=19092, kafka_tls_port=19093)
    s = security.secured_settings(base, "detector")
    conf = s.kafka_client_config()
    tls = tmp_path / "run" / "tls"
    assert conf == {
        "bootstrap.servers": "127.0.0.1:19093",
        "security.protocol": "ssl",
        "ssl.ca.location": str(tls / "ca.pem"),
        "ssl.certificate.location": str(tls / "detector.pem"),
        "ssl.key.location": str(tls / "detector.key"),
    }
    opts = s.spark_kafka_options()
    assert opts["kafka.security.protocol"] == "ssl"
    assert opts["kafka.ssl.certificate.location"] == str(tls / "detector.pem")
    with pytest.raises(security.SecurityError, match="unknown component"):
        security.secured_settings(base, "intruder")


def test_client_env_is_empty_when_security_is_off_and_round_trips_when_on(tmp_path):
    base = settings_mod.load(env={}, home=tmp_path, kafka_tls_port=19093)
    assert security.client_env(base, "generator") == {}
    env = security.client_env(base.replace(security_enabled=True), "generator")
    child = settings_mod.load(env=env)
    assert child.bootstrap_servers == "127.0.0.1:19093"
    assert child.kafka.protocol == "SSL"
    assert child.kafka.certificate_location.endswith("generator.pem")
    assert not any("PASSWORD" in k and v for k, v in env.items())


def test_compose_sasl_ssl_settings_give_the_scram_client_config(tmp_path):
    env = {
        "CHAUSSETTES_BOOTSTRAP_SERVERS": "kafka:19092",
        "CHAUSSETTES_KAFKA_PROTOCOL": "SASL_SSL",
        "CHAUSSETTES_KAFKA_CA_LOCATION": "/certs/ca.pem",
        "CHAUSSETTES_KAFKA_SASL_MECHANISM": security.SCRAM_MECHANISM,
        "CHAUSSETTES_KAFKA_SASL_USERNAME": "generator",
        "CHAUSSETTES_KAFKA_SASL_PASSWORD": "pw-from-env",
    }
    s = settings_mod.load(env=env, home=tmp_path)
    assert s.kafka_client_config() == {
        "bootstrap.servers": "kafka:19092", "security.protocol": "sasl_ssl",
        "ssl.ca.location": "/certs/ca.pem", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "generator", "sasl.password": "pw-from-env",
    }
    assert "pw-from-env" not in repr(s)


def test_secrets_are_generated_once_private_and_overridable(tmp_path, monkeypatch):
    monkeypatch.delenv("CHAUSSETTES_SPARK_AUTH_SECRET", raising=False)
    s = settings_mod.load(env={}, home=tmp_path)
    first = security.secret(s, "spark_auth_secret")
    assert len(first) >= 32 and security.secret(s, "spark_auth_secret") == first
    path = security.secrets_dir(s) / "spark_auth_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    monkeypatch.setenv("CHAUSSETTES_SPARK_AUTH_SECRET", "from-the-environment")
    assert security.secret(s, "spark_auth_secret") == "from-the-environment"


def test_spark_conf_dir_carries_the_secret_in_a_private_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CHAUSSETTES_SPARK_AUTH_SECRET", raising=False)
    s = settings_mod.load(env={}, home=tmp_path)
    conf_dir = security.write_spark_conf_dir(s)
    text = (conf_dir / "spark-defaults.conf").read_text()
    secret = security.secret(s, "spark_auth_secret")
    assert f"spark.authenticate.secret {secret}\n" in text
    assert "spark.authenticate true\n" in text and "spark.network.crypto.enabled true\n" in text
    assert stat.S_IMODE((conf_dir / "spark-defaults.conf").stat().st_mode) == 0o600


def test_airflow_env_turns_authentication_on(tmp_path):
    s = settings_mod.load(env={"CHAUSSETTES_SECURITY_ENABLED": "1"}, home=tmp_path)
    env = security.airflow_env(s)
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert "admin:admin" in env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    import json

    kafka = json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])["extra"]
    assert kafka["security.protocol"] == "ssl" and kafka["ssl.key.location"].endswith("airflow.key")
    passwords = json.loads(security.write_airflow_passwords(s).read_text())
    assert set(passwords) == set(security.AIRFLOW_USERS) and all(len(p) >= 12 for p in passwords.values())
    # No password travels in the environment: the simple auth manager reads the 0600 file.
    assert not any(p in v for p in passwords.values() for v in env.values())


def test_cli_env_prints_exports_and_bad_usage_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHAUSSETTES_HOME", str(tmp_path))
    # A shell that also holds SASL settings (compose's): mutual TLS needs none, none is printed.
    monkeypatch.setenv("CHAUSSETTES_KAFKA_SASL_USERNAME", "ops")
    monkeypatch.setenv("CHAUSSETTES_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CHAUSSETTES_KAFKA_SASL_PASSWORD", "pw-" + "in-the-shell")
    assert security.main(["env", "--component", "ops"]) == 0
    out = capsys.readouterr().out
    assert "pw-in-the-shell" not in out and "SASL" not in out
    assert "export CHAUSSETTES_KAFKA_PROTOCOL=SSL" in out
    assert f"export CHAUSSETTES_KAFKA_KEY_LOCATION={tmp_path}/run/tls/ops.key" in out
    with pytest.raises(SystemExit) as exc:
        security.main(["env", "--component", "nobody"])
    assert exc.value.code == 2


# ---------------------------------------------------------------- mutual TLS, real broker
@pytest.fixture(scope="module")
def tls_run(tmp_path_factory):
    """Tansu on a loopback plaintext port advertising the TLS port of the kafka-tls component:
    (settings, the proxy's process)."""
    from chaussettes.stack import tls as tls_stack_mod

    home = tmp_path_factory.mktemp("tls-home")
    s = settings_mod.load(env={}, home=home, kafka_port=procs.free_port(),
                          kafka_tls_port=procs.free_port(), kafka_timeout_s=10.0,
                          topic_logs=f"logs-{uuid.uuid4().hex[:8]}",
                          topic_alerts=f"alerts-{uuid.uuid4().hex[:8]}", security_enabled=True)
    comp = tls_stack_mod.component(s)
    assert comp is not None and comp.name == "kafka-tls"
    logs = home / "logs"
    broker = procs.start(broker_argv(s.kafka_port, advertised_port=s.kafka_tls_port),
                         logs / "broker.log")
    proxy = None
    try:
        assert procs.wait_until(lambda: procs.port_open(s.kafka_port), 20)
        comp.prepare()
        proxy = procs.start(comp.argv, logs / "kafka-tls.log")
        assert procs.wait_until(lambda: procs.port_open(s.kafka_tls_port), 10), procs.tail(
            logs / "kafka-tls.log")
        comp.after_start()  # creates the topics through the proxy, as the ops client
        yield s, proxy
    finally:
        if proxy is not None:
            procs.stop_group(proxy.pid, 5)
        procs.stop_group(broker.pid, 5)


@pytest.fixture(scope="module")
def tls_stack(tls_run):
    return tls_run[0]


def _delivered(conf: dict, topic: str, values: list[bytes], timeout: float = 10.0) -> list[str]:
    """Produce values; returns the delivery errors (empty when all were acknowledged)."""
    errors: list[str] = []
    p = Producer({**conf, **QUIET, "message.timeout.ms": int(timeout * 1000), "linger.ms": 0})
    for v in values:
        p.produce(topic, v, on_delivery=lambda err, msg: errors.append(str(err)) if err else None)
    left = p.flush(timeout + 5)
    return errors + ["not flushed"] * left


def _read_all(conf: dict, topic: str, partitions: int, timeout: float = 10.0) -> list[bytes]:
    c = Consumer({**conf, **QUIET, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "fetch.queue.backoff.ms": 0})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        idle = 0
        while time.monotonic() < deadline and idle < 3:
            msg = c.poll(0.5)
            if msg is None:
                idle += 1 if got else 0
                continue
            if msg.error() is None:
                got.append(msg.value())
                idle = 0
        return got
    finally:
        c.close()


def test_produce_and_consume_over_mutual_tls(tls_stack):
    gen = security.secured_settings(tls_stack, "generator").kafka_client_config()
    det = security.secured_settings(tls_stack, "detector").kafka_client_config()
    values = [f"line {i}".encode() for i in range(200)]
    assert _delivered(gen, tls_stack.topic_logs, values) == []
    got = _read_all(det, tls_stack.topic_logs, tls_stack.logs_partitions)
    assert sorted(got) == sorted(values)


def test_topics_were_created_through_the_proxy_with_the_settings_partitions(tls_stack):
    from chaussettes.topics import partition_counts

    counts = partition_counts(security.secured_settings(tls_stack, "ops"))
    assert counts[tls_stack.topic_logs] == tls_stack.logs_partitions
    assert counts[tls_stack.topic_alerts] == tls_stack.alerts_partitions


def _refused(conf: dict, topic: str, value: bytes = b"should never land") -> None:
    admin = AdminClient({**conf, **QUIET})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    assert _delivered(conf, topic, [value], timeout=3) != []


def _plaintext_client(s) -> dict:
    return {"bootstrap.servers": f"{s.bind_host}:{s.kafka_tls_port}", "security.protocol": "plaintext"}


def _client_without_certificate(s) -> dict:
    conf = security.secured_settings(s, "ops").kafka_client_config()
    del conf["ssl.certificate.location"], conf["ssl.key.location"]
    return conf


def _client_of_another_ca(s, rogue_dir: Path) -> dict:
    other = security.ensure_pki(rogue_dir, components=("generator",), ca_name="Rogue CA")
    conf = security.secured_settings(s, "generator").kafka_client_config()
    # It trusts the real server (so the handshake gets as far as the client certificate)...
    conf["ssl.certificate.location"] = str(other.client("generator").cert)
    conf["ssl.key.location"] = str(other.client("generator").key)
    return conf


def test_plaintext_client_is_refused_on_the_advertised_port(tls_stack):
    _refused(_plaintext_client(tls_stack), tls_stack.topic_alerts)


def test_client_without_certificate_is_refused(tls_stack):
    _refused(_client_without_certificate(tls_stack), tls_stack.topic_alerts)


def test_client_with_a_certificate_from_another_ca_is_refused(tls_stack, tmp_path):
    _refused(_client_of_another_ca(tls_stack, tmp_path / "rogue"), tls_stack.topic_alerts)


def test_refused_clients_wrote_nothing(tls_stack, tmp_path):
    """Each refused client tries to write a record of its own; then a good client writes one.
    The topic holds the good one (so the read sees what was written) and none of the others."""
    topic = f"refused-{uuid.uuid4().hex[:8]}"
    ops_settings = security.secured_settings(tls_stack, "ops")
    ensure_topics(ops_settings, {topic: 1})
    refused = {b"plaintext": _plaintext_client(tls_stack),
               b"no certificate": _client_without_certificate(tls_stack),
               b"another CA": _client_of_another_ca(tls_stack, tmp_path / "rogue")}
    for value, conf in refused.items():
        _refused(conf, topic, value)
    assert _delivered(security.secured_settings(tls_stack, "detector").kafka_client_config(), topic,
                      [b"the good one"]) == []
    got = _read_all(ops_settings.kafka_client_config(), topic, 1, timeout=5)
    assert got == [b"the good one"]


def test_plaintext_broker_port_is_loopback_only(tls_stack):
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    port_hex = f"{tls_stack.kafka_port:04X}"
    local = [line.split()[1] for line in listening if line.split()[3] == "0A"]  # LISTEN
    mine = [addr for addr in local if addr.endswith(":" + port_hex)]
    assert mine == ["0100007F:" + port_hex]  # 127.0.0.1 only


def test_tls_component_is_absent_when_security_is_off(tmp_path):
    from chaussettes.stack import tls as tls_stack_mod

    assert tls_stack_mod.component(settings_mod.load(env={}, home=tmp_path)) is None


def test_ensure_topics_over_tls_is_idempotent(tls_stack):
    ops = security.secured_settings(tls_stack, "ops")
    assert ensure_topics(ops, {tls_stack.topic_logs: tls_stack.logs_partitions}) == []


def _key_material(pki: security.Pki) -> list[str]:
    """The base64 lines of every private key of the PKI (what a key on a command line shows)."""
    keys = [pki.ca_key, pki.server_key] + [pki.client(n).key for n in security.COMPONENTS]
    return [line for key in keys for line in key.read_text().splitlines()
            if line and not line.startswith("-----")]


def test_no_secret_on_the_proxy_command_line(tls_run):
    """What `ps` shows of the running proxy (and its environment): paths, never key material."""
    s, proxy = tls_run
    pki = security.Pki(security.tls_dir(s))
    material = _key_material(pki)
    assert len(material) >= 2 * (2 + len(security.COMPONENTS))
    cmdline = procs.command_line(proxy.pid)
    environ = Path(f"/proc/{proxy.pid}/environ").read_bytes().decode(errors="replace")
    assert "OPENSSL-LISTEN" in cmdline and f"key={pki.server_key}" in cmdline  # the proxy, running
    assert not [line for line in material if line in cmdline or line in environ]


def _tls_handshake(port: int, pki: security.Pki, timeout: float):
    """A TLS client connection as the ops client; raises when the handshake does not finish."""
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.client("ops").cert), str(pki.client("ops").key))
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def test_the_proxy_serves_a_bounded_number_of_connections(tls_run, tmp_path):
    """socat forks one process per connection: at most max_connections at once; the next
    client waits (its handshake does not start) until one of them ends."""
    s, _ = tls_run
    pki = security.Pki(security.tls_dir(s))
    port = procs.free_port()
    proxy = procs.start(security.tls_proxy_argv(port, s.kafka_port, pki, max_connections=2),
                        tmp_path / "capped.log")
    held = []
    try:
        assert procs.wait_until(lambda: procs.port_open(port), 10), procs.tail(tmp_path / "capped.log")
        held = [_tls_handshake(port, pki, 10) for _ in range(2)]
        assert procs.wait_until(lambda: len(procs.descendants(proxy.pid)) == 2, 5)
        with pytest.raises(TimeoutError):
            held.append(_tls_handshake(port, pki, 2))  # accepted by the kernel, never served
        assert len(procs.descendants(proxy.pid)) == 2
        held.pop(0).close()
        held.append(_tls_handshake(port, pki, 10))  # served once a slot is free
    finally:
        for conn in held:
            conn.close()
        procs.stop_group(proxy.pid, 5)


def test_compose_certs_make_the_broker_keystore_from_the_env_password(tmp_path, monkeypatch, capsys):
    from cryptography.hazmat.primitives.serialization import pkcs12

    out = tmp_path / "certs"
    monkeypatch.delenv("KAFKA_KEYSTORE_PASSWORD", raising=False)
    assert security.main(["compose-certs", "--out", str(out)]) == 1
    assert "KAFKA_KEYSTORE_PASSWORD is empty" in capsys.readouterr().err
    monkeypatch.setenv("KAFKA_KEYSTORE_PASSWORD", "pw-" + "keystore")
    assert security.main(["compose-certs", "--out", str(out), "--hosts", "kafka,localhost"]) == 0
    key, _cert, chain = pkcs12.load_key_and_certificates((out / "kafka.keystore.p12").read_bytes(),
                                                        b"pw-keystore")
    assert key is not None and len(chain) == 1
    assert (out / "kafka_keystore_creds").read_text() == "pw-keystore"
    assert stat.S_IMODE((out / "kafka_keystore_creds").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.pem").stat().st_mode) == 0o644
    assert "pw-keystore" not in capsys.readouterr().out
