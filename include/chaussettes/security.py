"""Security of the platform: certificates, the local TLS proxy, Spark and Airflow secrets.

What is protected and how (the README "Security" section says the same for users):

- **Kafka, locally**: Tansu speaks plaintext only. With security on, the broker listens on
  ``<bind_host>:<kafka_port>`` (loopback by default, not advertised) and advertises the TLS port
  ``<kafka_tls_port>``, where a TLS-terminating proxy (``socat``) requires a client
  certificate signed by the platform's CA (mutual TLS). Every client (generator, detector,
  calibration, operations page, Airflow) gets its own certificate; all of them are made by
  :func:`ensure_pki` into ``<run_dir>/tls`` (gitignored, keys mode 0600).
- **Kafka, in compose**: ``apache/kafka`` with SASL_SSL + SCRAM-SHA-512; the same
  ``CHAUSSETTES_KAFKA_*`` settings select it (see ``docker-compose.yaml``).
- **Spark**: ``spark.authenticate`` with a shared secret and encrypted RPC
  (``spark.network.crypto.enabled``), written to a ``spark-defaults.conf`` (mode 0600) in a
  private ``SPARK_CONF_DIR`` read by the master, the worker and every ``spark-submit``: the
  secret never appears on a command line, in a log line or in a DAG file.
- **Airflow**: the simple auth manager with authentication on (users from settings, passwords
  generated into the run folder); the REST API needs a token.

Secrets (Spark secret, Airflow passwords) come from the environment
(``CHAUSSETTES_SPARK_AUTH_SECRET``...) or are generated once into ``<run_dir>/secrets/``
(mode 0600). Nothing here logs a secret.

CLI: ``python -m chaussettes.security certs|env|compose-certs|spark-conf`` (``--help``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import secrets as _secrets
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chaussettes import atomicfile
from chaussettes.settings import ENV_PREFIX, Settings

#: One client certificate (and, in compose, one SCRAM user) per component.
COMPONENTS = ("generator", "detector", "calibration", "ops", "airflow", "relay")
SERVER_HOSTS = ("127.0.0.1", "localhost")
CA_NAME = "Chaussettes local CA"
CERT_DAYS = 825  # the longest validity that TLS clients still accept for leaf certificates
SCRAM_MECHANISM = "SCRAM-SHA-512"


class SecurityError(RuntimeError):
    """A one-line reason (missing tool, unreadable key...) that CLIs print as is."""


def enabled(settings: Settings) -> bool:
    """True when the local stack runs with security on (``CHAUSSETTES_SECURITY_ENABLED``)."""
    return settings.security_enabled


def tls_dir(settings: Settings) -> Path:
    return settings.run_dir / "tls"


def secrets_dir(settings: Settings) -> Path:
    return settings.run_dir / "secrets"


# ---------------------------------------------------------------- certificates
@dataclass(frozen=True)
class ClientCert:
    name: str
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files of one certificate authority and what it signed."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def client(self, name: str) -> ClientCert:
        return ClientCert(name, self.directory / f"{name}.pem", self.directory / f"{name}.key")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    # P-256: fast to generate and to handshake, accepted by OpenSSL, librdkafka and Java.
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    atomicfile.write_bytes(path, data, mode=0o600)


def _write_public(path: Path, data: bytes) -> None:
    atomicfile.write_bytes(path, data)


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _load(pki: Pki):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read the CA in {pki.directory}: {exc}") from None
    return ca, key


def _valid(path: Path, min_days: int = 30) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - _now() > dt.timedelta(days=min_days)


def _sign(subject_cn: str, key, ca, ca_key, *, server_hosts: Sequence[str] = (),
          client: bool = False, days: int = CERT_DAYS):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Chaussettes"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=True, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if server_hosts:
        names: list[x509.GeneralName] = []
        for host in server_hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _new_ca(pki: Pki, common_name: str, days: int) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Chaussettes"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(pki.ca_key, _key_pem(key))
    _write_public(pki.ca_cert, _cert_pem(cert))


def ensure_pki(directory: Path | str, components: Iterable[str] = COMPONENTS,
               server_hosts: Sequence[str] = SERVER_HOSTS, *, ca_name: str = CA_NAME,
               days: int = CERT_DAYS) -> Pki:
    """Create what is missing (or expires within 30 days) of: a CA, a server certificate for
    ``server_hosts``, one client certificate per component. Idempotent: existing valid files
    are kept, so running it on every ``make up`` is cheap. Private keys are mode 0600."""
    pki = Pki(Path(directory))
    pki.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.directory, 0o700)
    renew_all = not (_valid(pki.ca_cert, 60) and pki.ca_key.exists())
    if renew_all:
        _new_ca(pki, ca_name, days * 2)
    ca, ca_key = _load(pki)
    if renew_all or not _valid(pki.server_cert) or not _server_covers(pki.server_cert, server_hosts):
        key = _new_key()
        cert = _sign(server_hosts[0] if server_hosts else "kafka", key, ca, ca_key,
                     server_hosts=server_hosts, days=days)
        _write_private(pki.server_key, _key_pem(key))
        _write_public(pki.server_cert, _cert_pem(cert))
    for name in components:
        cc = pki.client(name)
        if renew_all or not _valid(cc.cert) or not cc.key.exists():
            key = _new_key()
            cert = _sign(name, key, ca, ca_key, client=True, days=days)
            _write_private(cc.key, _key_pem(key))
            _write_public(cc.cert, _cert_pem(cert))
    return pki


def _server_covers(path: Path, hosts: Sequence[str]) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    have = {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    have |= set(san.get_values_for_type(x509.DNSName))
    return set(hosts) <= have


def write_pkcs12_keystore(pki: Pki, path: Path, password: str) -> Path:
    """The server key + certificate chain as a PKCS#12 keystore (for ``apache/kafka``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    data = pkcs12.serialize_key_and_certificates(
        b"kafka", key, cert, [ca], serialization.BestAvailableEncryption(password.encode()))
    _write_private(path, data)
    return path


# ---------------------------------------------------------------- the local TLS proxy
def socat_binary() -> str:
    found = shutil.which("socat")
    if not found:
        raise SecurityError("socat is not installed (Debian: apt-get install -y socat); "
                            "it terminates TLS in front of the local broker")
    return found


def tls_proxy_argv(listen_port: int, target_port: int, pki: Pki, *,
                   bind: str = "127.0.0.1", target_host: str = "127.0.0.1",
                   max_connections: int = 128) -> list[str]:
    """socat: accept TLS 1.2+ on ``bind:listen_port``, require a client certificate signed
    by the CA (``verify=1``), forward the bytes to the broker's plaintext port. ``fork``: one
    process per connection, so clients never wait on one another; ``max-children``: at most
    ``max_connections`` of them, further clients wait in the listen queue (no process or
    memory exhaustion from a flood of connections, even unauthenticated ones)."""
    listen = ",".join([
        f"OPENSSL-LISTEN:{listen_port}", f"bind={bind}", "reuseaddr", "fork",
        f"max-children={max_connections}",
        f"cert={pki.server_cert}", f"key={pki.server_key}", f"cafile={pki.ca_cert}",
        "verify=1", "openssl-min-proto-version=TLS1.2",
    ])
    # nodelay: Kafka's request/response pattern suffers from Nagle's delay on small requests.
    return [socat_binary(), "-d", listen, f"TCP:{target_host}:{target_port},nodelay"]


# ---------------------------------------------------------------- client settings
def server_hosts(settings: Settings) -> tuple[str, ...]:
    """Names the local broker's certificate must cover: the bind host, then the defaults."""
    return tuple(dict.fromkeys((settings.bind_host, *SERVER_HOSTS)))


def client_security(settings: Settings, component: str) -> dict[str, str]:
    """The ``kafka_*`` overrides (for ``settings.replace``) of one component with mutual TLS."""
    pki = Pki(tls_dir(settings))
    cc = pki.client(component)
    return {
        "kafka_protocol": "SSL",
        "kafka_ca_location": str(pki.ca_cert),
        "kafka_certificate_location": str(cc.cert),
        "kafka_key_location": str(cc.key),
    }


def secured_settings(settings: Settings, component: str) -> Settings:
    """Settings for ``component`` talking to the local broker through the TLS proxy."""
    if component not in COMPONENTS:
        raise SecurityError(f"unknown component {component!r}: expected one of {', '.join(COMPONENTS)}")
    return settings.replace(bootstrap_servers=f"{settings.bind_host}:{settings.kafka_tls_port}",
                            **client_security(settings, component))


def client_env(settings: Settings, component: str) -> dict[str, str]:
    """``CHAUSSETTES_*`` variables that make a child process connect as ``component`` over
    mutual TLS. Empty when security is off (the child inherits the plaintext settings)."""
    if not enabled(settings):
        return {}
    return _tls_env(secured_settings(settings, component))


def _tls_env(s: Settings) -> dict[str, str]:
    # Mutual TLS needs no SASL field; leaving them out keeps a SASL password of the caller's
    # environment out of what `security env` prints and of what children are given.
    env = {f"{ENV_PREFIX}BOOTSTRAP_SERVERS": s.bootstrap_servers}
    env.update({k: v for k, v in s.as_env().items() if k.startswith(f"{ENV_PREFIX}KAFKA_")
                and not k.endswith(("_PORT", "_TIMEOUT_S", "_MAX_CONNECTIONS"))
                and not k.startswith(f"{ENV_PREFIX}KAFKA_SASL_")})
    return env


# ---------------------------------------------------------------- secrets
def secret(settings: Settings, name: str, nbytes: int = 24) -> str:
    """A named secret: ``settings.<name>`` or ``CHAUSSETTES_<NAME>`` if set, else generated
    once into ``<run_dir>/secrets/<name>`` (mode 0600) and read back on later calls."""
    value = getattr(settings, name, None) or os.environ.get(ENV_PREFIX + name.upper())
    if value:
        return str(value)
    path = secrets_dir(settings) / name
    try:
        stored = path.read_text().strip()
    except OSError:
        stored = ""
    if stored:
        return stored
    value = _secrets.token_urlsafe(nbytes)
    os.makedirs(path.parent, mode=0o700, exist_ok=True)
    _write_private(path, value.encode())
    return value


# ---------------------------------------------------------------- Spark
def spark_auth_conf(secret_value: str) -> dict[str, str]:
    """Authentication (shared secret) and AES-encrypted RPC between driver, master, workers
    and executors. Local disk spills stay unencrypted (``spark.io.encryption`` costs CPU)."""
    return {
        "spark.authenticate": "true",
        "spark.authenticate.secret": secret_value,
        "spark.network.crypto.enabled": "true",
    }


def spark_conf_dir(settings: Settings) -> Path:
    return settings.run_dir / "spark-conf"


def write_spark_conf_dir(settings: Settings, directory: Path | None = None,
                         extra: dict[str, str] | None = None) -> Path:
    """A private ``SPARK_CONF_DIR`` whose ``spark-defaults.conf`` (0600) carries the secret.

    Spark reads it in the master, the worker and every ``spark-submit`` started with
    ``SPARK_CONF_DIR`` set; standalone mode refuses secret *files*
    (``spark.authenticate.secret.file`` is Kubernetes only), and a ``--conf`` on the
    command line would show the secret in ``ps`` and in Airflow's task log."""
    directory = Path(directory or spark_conf_dir(settings))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    conf = {**spark_auth_conf(secret(settings, "spark_auth_secret")), **(extra or {})}
    text = "# Written by chaussettes.security; do not commit (holds the Spark secret).\n"
    text += "".join(f"{k} {v}\n" for k, v in sorted(conf.items()))
    _write_private(directory / "spark-defaults.conf", text.encode())
    return directory


def spark_env(settings: Settings) -> dict[str, str]:
    """Env for Spark daemons and spark-submit when security is on (else empty)."""
    if not enabled(settings):
        return {}
    return {"SPARK_CONF_DIR": str(write_spark_conf_dir(settings))}


# ---------------------------------------------------------------- Airflow
AIRFLOW_USERS = {"admin": "admin", "ops": "viewer"}  # user -> role of the simple auth manager


def airflow_passwords(settings: Settings) -> dict[str, str]:
    return {user: secret(settings, f"airflow_{user}_password", 12) for user in AIRFLOW_USERS}


def write_airflow_passwords(settings: Settings, airflow_home: Path | None = None) -> Path:
    """The simple auth manager keeps a passwords file that exists beforehand: write ours."""
    home = Path(airflow_home or settings.airflow_home)
    path = home / "simple_auth_manager_passwords.json.generated"
    _write_private(path, json.dumps(airflow_passwords(settings)).encode())
    return path


def airflow_env(settings: Settings) -> dict[str, str]:
    """Airflow variables for security on: authentication required, users from settings,
    the Kafka connection over mutual TLS as the ``airflow`` client (else empty)."""
    if not enabled(settings):
        return {}
    kafka = secured_settings(settings, "airflow")
    return {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in AIRFLOW_USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps({"conn_type": "kafka",
                                                  "extra": kafka.kafka_client_config()}),
        **client_env(settings, "airflow"),
        **spark_env(settings),
    }


# ---------------------------------------------------------------- CLI
def _cmd_certs(args: argparse.Namespace, settings: Settings) -> int:
    out = Path(args.out) if args.out else tls_dir(settings)
    hosts = tuple(h for h in args.hosts.split(",") if h) if args.hosts else SERVER_HOSTS
    pki = ensure_pki(out, server_hosts=hosts)
    print(f"CA {pki.ca_cert}; server {pki.server_cert} ({', '.join(hosts)}); "
          f"clients: {', '.join(COMPONENTS)}")
    return 0


def _cmd_compose_certs(args: argparse.Namespace, settings: Settings) -> int:
    """For docker-compose: CA + broker keystore + the credential files apache/kafka reads."""
    out = Path(args.out)
    password = os.environ.get(args.password_env, "")
    if not password:
        raise SecurityError(f"{args.password_env} is empty: set it in .env (make env)")
    hosts = tuple(h for h in args.hosts.split(",") if h)
    pki = ensure_pki(out, components=(), server_hosts=hosts)
    write_pkcs12_keystore(pki, out / "kafka.keystore.p12", password)
    for name in ("kafka_keystore_creds", "kafka_key_creds"):
        _write_private(out / name, password.encode())
    # The CA certificate is public: clients in every container read it.
    os.chmod(pki.ca_cert, 0o644)
    # The broker runs as uid 1000 (appuser): let it read its keystore, and nothing more (the
    # CA key stays root's, 0600, in the volume that clients mount read-only for ca.pem).
    if args.owner is not None:
        for name in ("kafka.keystore.p12", "kafka_keystore_creds", "kafka_key_creds"):
            os.chown(out / name, args.owner, args.owner)
    os.chmod(out, 0o755)
    print(f"broker keystore {out / 'kafka.keystore.p12'} for {', '.join(hosts)}; CA {pki.ca_cert}")
    return 0


def _cmd_env(args: argparse.Namespace, settings: Settings) -> int:
    env = _tls_env(secured_settings(settings, args.component))
    for key, value in sorted(env.items()):
        print(f"export {key}={value}")
    return 0


def _cmd_spark_conf(args: argparse.Namespace, settings: Settings) -> int:
    path = write_spark_conf_dir(settings, Path(args.out) if args.out else None)
    print(f"export SPARK_CONF_DIR={path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from chaussettes import settings as settings_mod

    parser = argparse.ArgumentParser(prog="python -m chaussettes.security",
                                     description="Certificates and secrets of the platform.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("certs", help="create the CA, server and client certificates (idempotent)")
    p.add_argument("--out", help="folder (default: <run_dir>/tls)")
    p.add_argument("--hosts", help="server names, comma-separated (default 127.0.0.1,localhost)")
    p = sub.add_parser("compose-certs", help="CA and broker keystore for docker-compose")
    p.add_argument("--out", required=True)
    p.add_argument("--hosts", default="kafka,localhost,127.0.0.1")
    p.add_argument("--password-env", default="KAFKA_KEYSTORE_PASSWORD",
                   help="variable holding the keystore password (never a flag: flags show in ps)")
    p.add_argument("--owner", type=int, default=None, help="uid that must own the files")
    p = sub.add_parser("env", help="print the export lines that connect COMPONENT over mutual TLS")
    p.add_argument("--component", default="ops", choices=COMPONENTS)
    p = sub.add_parser("spark-conf", help="write the private SPARK_CONF_DIR with the Spark secret")
    p.add_argument("--out")
    args = parser.parse_args(argv)
    try:
        settings = settings_mod.load()
        return {"certs": _cmd_certs, "compose-certs": _cmd_compose_certs, "env": _cmd_env,
                "spark-conf": _cmd_spark_conf}[args.command](args, settings)
    except (SecurityError, settings_mod.SettingsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
