"""The one source of truth for settings.

Every value has a default that runs the local platform on one machine, can be set
from the environment as ``CHAUSSETTES_<FIELD>`` (for example
``CHAUSSETTES_BOOTSTRAP_SERVERS``), and can be overridden from a CLI flag through
``load(**overrides)``. Nothing else in the project hard-codes a host, port or path.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "CHAUSSETTES_"
PACKAGE_DIR = Path(__file__).resolve().parent


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _default_home() -> Path:
    # In a source checkout (editable install) the run folder lives in the repo,
    # gitignored; elsewhere (a wheel, a container) under the user's home.
    repo = PACKAGE_DIR.parents[1]
    if (repo / "pyproject.toml").exists():
        return repo / "var"
    return Path.home() / ".chaussettes"


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client (generator, detector, calibration, UI, Airflow) connects.

    One model for both deployments: PLAINTEXT locally by default, SSL with client
    certificates (mutual TLS) through the local TLS proxy, SASL_SSL + SCRAM in compose.
    """

    protocol: str = "PLAINTEXT"
    ca_location: str = ""
    certificate_location: str = ""
    key_location: str = ""
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)

    PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")

    def validate(self) -> None:
        if self.protocol not in self.PROTOCOLS:
            raise SettingsError(
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={self.protocol!r}: "
                f"expected one of {', '.join(self.PROTOCOLS)}"
            )
        if self.protocol.startswith("SASL") and not (self.sasl_username and self.sasl_mechanism):
            raise SettingsError(
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={self.protocol} needs "
                f"{ENV_PREFIX}KAFKA_SASL_MECHANISM and {ENV_PREFIX}KAFKA_SASL_USERNAME"
            )

    def client_config(self) -> dict[str, str]:
        """librdkafka (confluent-kafka) properties, without bootstrap.servers."""
        conf = {"security.protocol": self.protocol.lower()}
        if self.protocol in ("SSL", "SASL_SSL"):
            for key, value in (
                ("ssl.ca.location", self.ca_location),
                ("ssl.certificate.location", self.certificate_location),
                ("ssl.key.location", self.key_location),
            ):
                if value:
                    conf[key] = value
        if self.protocol.startswith("SASL"):
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password
        return conf


@dataclass(frozen=True)
class Settings:
    # --- Kafka
    bootstrap_servers: str = ""  # empty: the local broker, <bind_host>:<kafka_port>
    kafka_port: int = 9092  # the local broker's (plaintext) listener
    kafka_tls_port: int = 9093  # the local TLS proxy, when security is on
    topic_logs: str = "http-logs"
    topic_alerts: str = "alerts"
    logs_partitions: int = 4
    alerts_partitions: int = 1
    kafka_timeout_s: float = 10.0  # how long a client waits for an unreachable broker
    kafka: KafkaSecurity = field(default_factory=KafkaSecurity)
    # --- Spark
    spark_master: str = ""  # empty: the local standalone master, spark://<bind_host>:<spark_master_port>
    spark_master_port: int = 7077
    spark_master_webui_port: int = 8090  # 8080 is Airflow's
    spark_worker_webui_port: int = 8091
    spark_worker_cores: int = 2
    spark_worker_memory: str = "2g"
    spark_shuffle_partitions: int = 4
    # --- Airflow
    airflow_port: int = 8080
    # --- folders (all under home unless set)
    home: Path = field(default_factory=_default_home)
    run_dir: Path | None = None
    data_dir: Path | None = None
    archive_dir: Path | None = None
    quarantine_dir: Path | None = None
    checkpoint_dir: Path | None = None
    artifacts_dir: Path | None = None
    airflow_home: Path | None = None
    thresholds_path: Path | None = None  # pins a file; else the artifact store's current
    # --- detection
    error_status_min: int = 400  # an error is status >= this
    detector_shards: int = 16  # key groups per kind in the detector's state (detector.channel)
    topic_window_counts: str = ""  # the detector's channel topic; empty: "<topic_alerts>-window-counts"
    window_counts_partitions: int = 4
    # --- retention: days of date=/hour= partitions the housekeeping DAG keeps (at least 1; the
    # archive also keeps what the calibration's lookback needs, whatever this says)
    archive_retention_days: int = 14
    errors_retention_days: int = 30
    quarantine_retention_days: int = 30
    # --- security and durability (chaussettes.security, stack/tls.py, stack/s3.py)
    security_enabled: bool = False  # mutual-TLS proxy in front of the broker, Spark secret, Airflow login
    durable_storage: bool = False  # the local broker on s3:// (a local SeaweedFS) instead of memory
    s3_port: int = 8333  # SeaweedFS S3 endpoint; its master/volume/filer/admin use the next 4 ports
    # --- hardening: where the local stack listens, the TLS proxy's cap, the supervised command
    bind_host: str = "127.0.0.1"  # every listener `make up` starts binds here; local clients connect here
    kafka_tls_max_connections: int = 128  # the TLS proxy's concurrent connections (one process each)
    detector_command: str = ""  # the supervised detector's command line instead of spark-submit
    # jobs/stream_detector.py (stand-ins in tests); from the environment only, never from a DAG run
    # --- the stack's default generator (`make up`)
    generator_rate: float = 200.0  # lines/s; 0 leaves the generator out of the stack
    generator_args: str = ""  # extra generator flags, e.g. "--scenario incidents.yaml"
    # --- alerting and metrics (chaussettes.notify, chaussettes.metrics, stack/alertmanager.py)
    alertmanager_port: int = 9095  # its usual 9093 is the local TLS proxy's, 9094 its cluster port
    alertmanager_url: str = ""  # empty: the local Alertmanager, http://127.0.0.1:<alertmanager_port>
    alertmanager_config: Path | None = None  # empty: the shipped chaussettes/alerting/alertmanager.yml
    alert_webhook_url: str = ""  # the default receiver's webhook; empty: the shipped file's
    alert_site: str = "local"  # the `site` label on every alert sent to Alertmanager
    ops_page_url: str = ""  # linked from alerts; empty: the Airflow plugin page on airflow_port
    alertmanager_ui_url: str = ""  # Alertmanager as a browser reaches it; empty: alertmanager_url
    metrics_address: str = "127.0.0.1"  # where the /metrics endpoints listen (0.0.0.0 in containers)
    detector_metrics_port: int = 9108  # Prometheus /metrics of each long-running part; 0: none
    generator_metrics_port: int = 9109
    relay_metrics_port: int = 9110
    relay_refresh_s: float = 60.0  # the relay re-posts every open incident this often...
    relay_horizon_s: float = 300.0  # ...with endsAt = now + this: Alertmanager resolves it unless refreshed
    relay_open_max_s: float = 86400.0  # an incident with no event for this long is no longer refreshed

    def __post_init__(self) -> None:
        # Derived folders: each defaults to a fixed place under home.
        derived = {
            "run_dir": self.home / "run",
            "data_dir": self.home / "data",
            "archive_dir": self.home / "data" / "archive",
            "quarantine_dir": self.home / "data" / "quarantine",
            "checkpoint_dir": self.home / "checkpoints",
            "artifacts_dir": self.home / "artifacts",
            "airflow_home": self.home / "airflow",
        }
        for name, default in derived.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if not self.bootstrap_servers.strip():
            object.__setattr__(self, "bootstrap_servers", f"{self.bind_host}:{self.kafka_port}")
        if not self.spark_master.strip():
            object.__setattr__(self, "spark_master", f"spark://{self.bind_host}:{self.spark_master_port}")
        if not self.alertmanager_url.strip():
            object.__setattr__(self, "alertmanager_url", f"http://{self.bind_host}:{self.alertmanager_port}")
        object.__setattr__(self, "alertmanager_url", self.alertmanager_url.rstrip("/"))
        if not self.alertmanager_ui_url.strip():
            object.__setattr__(self, "alertmanager_ui_url", self.alertmanager_url)
        if not self.ops_page_url.strip():
            object.__setattr__(self, "ops_page_url", f"http://{self.bind_host}:{self.airflow_port}/plugin/chaussettes")
        if self.alertmanager_config is None:
            object.__setattr__(self, "alertmanager_config", PACKAGE_DIR / "alerting" / "alertmanager.yml")
        if not 0 < self.relay_refresh_s < self.relay_horizon_s:
            raise SettingsError(f"{_env_name('relay_refresh_s')} must be above 0 and below "
                                f"{_env_name('relay_horizon_s')} (an open incident must be refreshed "
                                f"before Alertmanager resolves it)")
        self.kafka.validate()
        for name in ("logs_partitions", "alerts_partitions", "spark_worker_cores", "detector_shards",
                     "window_counts_partitions", "kafka_tls_max_connections"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{_env_name(name)} must be at least 1")

    # ---- derived values
    @property
    def generator_status_path(self) -> Path:
        return self.run_dir / "generator-status.json"

    @property
    def detector_status_path(self) -> Path:
        return self.run_dir / "detector-status.json"

    @property
    def default_thresholds_path(self) -> Path:
        """The documented defaults shipped with the package (used before any calibration)."""
        return PACKAGE_DIR / "default_seuils.json"

    def kafka_client_config(self, **extra: Any) -> dict[str, Any]:
        """Complete confluent-kafka configuration for this deployment."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(self.kafka.client_config())
        conf.update(extra)
        return conf

    def spark_kafka_options(self) -> dict[str, str]:
        """Options for ``spark.read/readStream.format("kafka")`` (JVM-connector names), with
        ``kafka.timeout.ms`` (``chaussettes.spark_kafka``'s bound on every wait for the broker)
        from these settings: a job run with other settings than its environment's keeps them."""
        opts = {"kafka.bootstrap.servers": self.bootstrap_servers,
                "kafka.timeout.ms": str(int(self.kafka_timeout_s * 1000))}
        opts.update({f"kafka.{k}": v for k, v in self.kafka.client_config().items()})
        return opts

    def replace(self, **changes: Any) -> Settings:
        return load(_base=self, **changes)

    def as_env(self) -> dict[str, str]:
        """The CHAUSSETTES_* variables that recreate these settings in a child process."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "kafka":
                for kf in fields(KafkaSecurity):
                    env[f"{ENV_PREFIX}KAFKA_{kf.name.upper()}"] = str(getattr(value, kf.name))
                continue
            if value is None:
                continue
            env[_env_name(f.name)] = str(value)
        return env


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _convert(name: str, raw: Any, typ: Any) -> Any:
    if raw is None or not isinstance(raw, str):
        return raw
    text = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
        if text.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if "Path" in text:
            return Path(raw).expanduser() if raw else None
    except ValueError:
        raise SettingsError(f"{_env_name(name)}={raw!r} is not a valid {text.split(' ')[0]}") from None
    return raw


def load(env: Mapping[str, str] | None = None, _base: Settings | None = None, **overrides: Any) -> Settings:
    """Settings from defaults < environment < overrides (None overrides are ignored).

    Kafka security fields are set as ``CHAUSSETTES_KAFKA_<FIELD>`` or as overrides
    named ``kafka_<field>`` (for example ``kafka_protocol="SSL"``).
    """
    env = os.environ if env is None else env
    overrides = {k: v for k, v in overrides.items() if v is not None}
    values: dict[str, Any] = {}
    security: dict[str, Any] = {}
    base_security = _base.kafka if _base else KafkaSecurity()

    for kf in fields(KafkaSecurity):
        key = f"kafka_{kf.name}"
        if key in overrides:
            security[kf.name] = overrides.pop(key)
        elif _base is None and _env_name(key) in env:
            security[kf.name] = env[_env_name(key)]
    if "kafka_security_protocol" in overrides:
        security["protocol"] = overrides.pop("kafka_security_protocol")
    elif _base is None and _env_name("kafka_security_protocol") in env:
        security["protocol"] = env[_env_name("kafka_security_protocol")]
    if "protocol" in security:
        security["protocol"] = str(security["protocol"]).upper()

    known = {f.name: f for f in fields(Settings) if f.name != "kafka"}
    unknown = set(overrides) - set(known)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    for name, f in known.items():
        if name in overrides:
            values[name] = _convert(name, overrides[name], f.type)
        elif _base is not None:
            values[name] = getattr(_base, name)
        elif _env_name(name) in env:
            values[name] = _convert(name, env[_env_name(name)], f.type)
    if _base is not None and "home" in overrides:
        # A new home moves every folder that was derived from the old one.
        for name in ("run_dir", "data_dir", "archive_dir", "quarantine_dir",
                     "checkpoint_dir", "artifacts_dir", "airflow_home"):
            if name not in overrides and getattr(_base, name) == _derived(_base, name):
                values[name] = None
    if isinstance(values.get("home"), str):
        values["home"] = Path(values["home"]).expanduser()
    if values.get("home") is None:
        values.pop("home", None)
    values["kafka"] = dataclasses.replace(base_security, **security)
    return Settings(**values)


def _derived(s: Settings, name: str) -> Path:
    return Settings(home=s.home).__getattribute__(name)
