"""docker-compose.yaml, checked statically (no container engine here).

Debian's docker-compose 1.29 validates and resolves the file (anchors merged, variables
interpolated, with an .env made by docker/gen_env.py); the tests then check the invariants on
what it resolved, among them the separation between components: the user each service runs
as, the volumes it mounts (read-only where it only reads) and the secrets it receives — the
tables below say who gets what; a new service (Alertmanager, a relay...) adds its rows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chaussettes import security
from chaussettes import settings as settings_mod

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yaml"
EXAMPLE = REPO / ".env.example"
ONE_SHOT = {"certs", "kafka-init", "airflow-init", "calibration"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|KEY)$")  # docker/gen_env.py's rule

AIRFLOW = {"airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
           "airflow-triggerer"}
# Trust domains: who runs as whom (services of the chaussettes image; official images keep
# their own non-root user). The detector and the Spark worker share one: its executors write
# the detector's archive and checkpoints.
USERS = {"certs": "0:0", "generator": "50002:0", "detector": "50001:0", "spark-worker": "50001:0",
         "calibration": "50003:0", "relay": "50004:0", "alertmanager": "65534:65534",
         "prometheus": "65534:65534", **{name: "50000:0" for name in AIRFLOW}}
# Named volumes per service, "rw" or "ro"; a service not listed mounts none.
MOUNTS = {
    "certs": {"certs": "rw"},
    "kafka": {"kafka-data": "rw", "certs": "ro"},
    "spark-worker": {"chaussettes-data": "rw", "chaussettes-checkpoints": "rw", "certs": "ro"},
    "postgres": {"postgres-data": "rw"},
    "airflow-init": {"airflow-logs": "rw", "certs": "ro"},
    "airflow-api-server": {"airflow-logs": "rw", "certs": "ro", "chaussettes-run": "ro",
                           "chaussettes-artifacts": "ro"},
    # the housekeeping DAG deletes past-retention partitions of the data volume
    "airflow-scheduler": {"airflow-logs": "rw", "certs": "ro", "chaussettes-run": "rw",
                          "chaussettes-artifacts": "rw", "chaussettes-data": "rw"},
    "airflow-dag-processor": {"airflow-logs": "rw", "certs": "ro"},
    "airflow-triggerer": {"airflow-logs": "rw", "certs": "ro", "chaussettes-run": "ro",
                          "chaussettes-data": "ro"},
    "generator": {"certs": "ro"},
    "detector": {"chaussettes-data": "rw", "chaussettes-checkpoints": "rw", "chaussettes-run": "rw",
                 "chaussettes-artifacts": "ro", "certs": "ro"},
    "calibration": {"chaussettes-data": "ro", "calibration-output": "rw", "certs": "ro"},
    "relay": {"certs": "ro"},
    "alertmanager": {"alertmanager-data": "rw"},
    "prometheus": {"prometheus-data": "rw"},
}
# Each secret of .env and the services whose configuration carries its value.
SECRETS = {
    "SPARK_AUTH_SECRET": {"spark-master", "spark-worker", "detector", "calibration", "airflow-scheduler"},
    "KAFKA_KEYSTORE_PASSWORD": {"certs"},
    "KAFKA_GENERATOR_PASSWORD": {"kafka-init", "generator"},
    "KAFKA_DETECTOR_PASSWORD": {"kafka-init", "detector"},
    "KAFKA_CALIBRATION_PASSWORD": {"kafka-init", "calibration"},
    "KAFKA_OPS_PASSWORD": {"kafka-init", "airflow-api-server"},
    "KAFKA_AIRFLOW_PASSWORD": {"kafka-init", "airflow-init", "airflow-scheduler", "airflow-triggerer"},
    "KAFKA_RELAY_PASSWORD": {"kafka-init", "relay"},
    "POSTGRES_PASSWORD": {"postgres", *AIRFLOW},
    "AIRFLOW_FERNET_KEY": AIRFLOW,
    "AIRFLOW_API_SECRET_KEY": AIRFLOW,
    "AIRFLOW_JWT_SECRET": AIRFLOW,
    "AIRFLOW_ADMIN_PASSWORD": {"airflow-api-server"},
    "AIRFLOW_OPS_PASSWORD": {"airflow-api-server"},
}


def _compose(*args: str, env_file: Path = EXAMPLE, cwd: Path = REPO) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing: apt-get install -y docker-compose (make sysdeps)"
    return subprocess.run([exe, "--env-file", str(env_file), "-f", str(COMPOSE), *args],
                          check=False, capture_output=True, text=True, timeout=60, cwd=cwd)


def _generated_env(path: Path) -> Path:
    gen = subprocess.run([sys.executable, str(REPO / "docker" / "gen_env.py"), "--output", str(path)],
                         check=False, capture_output=True, text=True, timeout=30)
    assert gen.returncode == 0, gen.stderr
    return path


def _read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    return _generated_env(tmp_path_factory.mktemp("compose") / ".env")


@pytest.fixture(scope="module")
def resolved(env_file) -> dict:
    result = _compose("config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def services(resolved) -> dict:
    return resolved["services"]


def _env_example() -> dict[str, str]:
    return _read_env(EXAMPLE)


def test_compose_config_is_valid_with_generated_secrets(env_file):
    result = _compose("config", "-q", env_file=env_file)
    assert result.returncode == 0, result.stderr


def test_the_example_alone_is_refused_until_secrets_are_generated(tmp_path):
    """A .env copied from .env.example has empty secrets: every ${SECRET:?} refuses it (it
    used to hold CHANGE_ME, which the checks accepted)."""
    copied = tmp_path / ".env"
    copied.write_text(EXAMPLE.read_text())
    result = _compose("config", "-q", env_file=copied, cwd=tmp_path)
    assert result.returncode != 0
    assert "gen_env.py" in result.stderr


def test_compose_refuses_to_run_without_generated_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _compose("config", "-q", env_file=empty, cwd=tmp_path)
    assert result.returncode != 0
    assert "gen_env.py" in result.stderr


def test_every_image_is_pinned(services):
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name} has no image name"
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
    froms = re.findall(r"^ARG \w+_IMAGE=(\S+)", (REPO / "docker" / "Dockerfile").read_text(), re.MULTILINE)
    assert len(froms) == 2
    for image in froms:
        assert re.search(r":\d+\.\d+\.\d+", image), image


def test_official_images_match_the_pinned_versions(services):
    from importlib import metadata

    assert services["kafka"]["image"].startswith("apache/kafka:")
    spark_tag = services["spark-master"]["image"].split(":")[1]
    assert spark_tag.startswith(metadata.version("pyspark") + "-")
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert f"apache/airflow:{metadata.version('apache-airflow')}-python3.11" in dockerfile
    assert f"apache/spark:{spark_tag}" in dockerfile


def test_every_long_running_service_has_a_healthcheck_and_restart_policy(services):
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc.get("restart") == "no", name
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc.get("restart") in ("unless-stopped", "always"), name
    assert ONE_SHOT <= set(services)


def test_every_depends_on_has_a_condition_that_fits_the_dependency(services):
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            want = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert spec.get("condition") == want, f"{name} -> {dep}: {spec}"


def test_profiles_and_named_volumes(resolved, services):
    assert services["generator"]["profiles"] == ["generator"]
    assert services["calibration"]["profiles"] == ["batch"]
    unprofiled = {n for n, s in services.items() if not s.get("profiles")}
    assert {"kafka", "spark-master", "spark-worker", "airflow-api-server", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "postgres", "detector"} <= unprofiled
    named = set(resolved["volumes"])
    assert {"kafka-data", "postgres-data", "certs", "chaussettes-data"} <= named
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol["source"] if isinstance(vol, dict) else vol.split(":")[0]
            if not source.startswith(("/", ".")):
                assert source in named, f"{name} uses undeclared volume {source}"


def test_topics_match_the_settings_of_the_local_stack(services):
    s = settings_mod.load(env={})
    init = services["kafka-init"]["environment"]
    assert init["TOPIC_LOGS"] == s.topic_logs and int(init["LOGS_PARTITIONS"]) == s.logs_partitions
    assert init["TOPIC_ALERTS"] == s.topic_alerts and int(init["ALERTS_PARTITIONS"]) == s.alerts_partitions
    # the detector's channel topic, created with its partitions and ACLs before it starts
    from chaussettes.detector.pipeline import DetectorConfig, counts_topic

    assert init["TOPIC_WINDOW_COUNTS"] == counts_topic(s, DetectorConfig())
    assert int(init["WINDOW_COUNTS_PARTITIONS"]) == s.window_counts_partitions
    script = (REPO / "docker" / "kafka" / "kafka-init.sh").read_text()
    assert '--topic "$TOPIC_WINDOW_COUNTS"' in script and "--transactional-id chaussettes" in script
    for name in ("generator", "detector", "calibration", "airflow-scheduler"):
        env = services[name]["environment"]
        assert env["CHAUSSETTES_TOPIC_LOGS"] == s.topic_logs
        assert env["CHAUSSETTES_TOPIC_ALERTS"] == s.topic_alerts


def test_kafka_is_sasl_ssl_with_scram_and_every_client_uses_it(services):
    kafka = services["kafka"]["environment"]
    protocols = dict(item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    advertised = {item.split("://")[0]: item.split("://")[1]
                  for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for listener, address in advertised.items():
        if protocols[listener] == "PLAINTEXT":
            assert address.startswith("127.0.0.1:"), f"plaintext listener {listener} is not loopback"
        else:
            assert protocols[listener] == "SASL_SSL"
    assert kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == security.SCRAM_MECHANISM
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    users = set()
    for name in ("generator", "detector", "calibration", "airflow-api-server", "airflow-scheduler", "relay"):
        env = services[name]["environment"]
        child = settings_mod.load(env=env)  # the same settings model as the local stack
        conf = child.kafka_client_config()
        assert conf["security.protocol"] == "sasl_ssl" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert conf["bootstrap.servers"] == "kafka:19092"
        users.add(child.kafka.sasl_username)
    assert users <= set(security.COMPONENTS)
    script = (REPO / "docker" / "kafka" / "kafka-init.sh").read_text()
    assert f"for user in {' '.join(security.COMPONENTS)}; do" in script
    for component in security.COMPONENTS:
        assert f"KAFKA_{component.upper()}_PASSWORD" in services["kafka-init"]["environment"]


def test_host_ports_are_published_on_loopback_only(services):
    for name, svc in services.items():
        for port in svc.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} on every interface"


def _uid(user: str) -> int:
    return int(str(user).split(":")[0])


def test_each_component_runs_as_the_user_of_its_trust_domain(services):
    users = {name: str(svc.get("user")) for name, svc in services.items() if "user" in svc}
    assert users == USERS
    assert [name for name, user in users.items() if _uid(user) == 0] == ["certs"]  # one-shot
    # No two trust domains share a user: the generator, the pipeline, the calibration, Airflow.
    domains = {_uid(USERS[n]) for n in ("generator", "detector", "calibration", "airflow-scheduler")}
    assert len(domains) == 4
    # The official images keep their own non-root users (kafka, spark, postgres).
    assert {n for n, s in services.items() if "user" not in s} == {"kafka", "kafka-init", "spark-master",
                                                                   "postgres"}
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "ARG PIPELINE_UID=50001" in dockerfile and "ARG CALIBRATION_UID=50003" in dockerfile


def _mounts(svc: dict) -> tuple[dict[str, str], list[str]]:
    """(named volume -> "rw"/"ro", bind mounts as written) of one resolved service."""
    named, binds = {}, []
    for vol in svc.get("volumes", []):
        source, _, rest = vol.partition(":")
        mode = "ro" if rest.endswith(":ro") else "rw"
        if source.startswith(("/", ".")):
            binds.append(vol)
        else:
            assert source not in named, f"{source} mounted twice"
            named[source] = mode
    return named, binds


def test_each_component_mounts_only_the_volumes_it_needs(services):
    got = {name: _mounts(svc)[0] for name, svc in services.items() if _mounts(svc)[0]}
    assert got == MOUNTS
    writers = {vol: sorted(n for n, m in got.items() if m.get(vol) == "rw") for vol in
               ("chaussettes-artifacts", "chaussettes-data", "chaussettes-checkpoints")}
    assert writers == {"chaussettes-artifacts": ["airflow-scheduler"],  # the thresholds store
                       # the scheduler: the housekeeping DAG deletes what is past retention
                       "chaussettes-data": ["airflow-scheduler", "detector", "spark-worker"],
                       "chaussettes-checkpoints": ["detector", "spark-worker"]}
    assert not any(v.startswith(("chaussettes-", "calibration")) for v in got["generator"])
    assert services["generator"]["tmpfs"] == ["/var/lib/chaussettes/run"]  # its heartbeat only
    for name, svc in services.items():  # files from the checkout are configuration: read-only
        assert all(b.endswith(":ro") for b in _mounts(svc)[1]), name


def test_each_secret_reaches_only_the_services_that_use_it(services, env_file):
    values = _read_env(env_file)
    secrets_ = {name: value for name, value in values.items() if SECRET_NAME.search(name)}
    assert set(secrets_) == set(SECRETS), "a secret of .env.example is missing from SECRETS"
    for name, value in secrets_.items():
        assert len(value) >= 20, name
        holders = {svc for svc, config in services.items() if value in json.dumps(config)}
        assert holders == SECRETS[name], name


def test_no_secret_is_written_in_the_compose_file():
    raw = yaml.safe_load(COMPOSE.read_text())

    def walk(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}[{i}]")
        else:
            yield path, node

    for path, value in walk(raw):
        key = path.rsplit(".", 1)[-1]
        if re.search(r"(PASSWORD|SECRET|KEY)", key) and not key.endswith(
                ("KEYSTORE_FILENAME", "KEYSTORE_TYPE", "CREDENTIALS")):
            assert isinstance(value, str) and value.startswith("${"), f"{path} holds a literal value"
    assert "ALL_ADMINS: ${AIRFLOW_DEV_ALL_ADMINS:-False}" in COMPOSE.read_text()


def test_env_example_documents_every_variable_and_holds_no_secret():
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE.read_text()))  # $$ escapes
    example = _env_example()
    assert used <= set(example), f"undocumented: {sorted(used - set(example))}"
    for name, value in example.items():
        if SECRET_NAME.search(name):
            assert value == "", f"{name} has a value in .env.example"
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_gen_env_writes_private_random_secrets_and_keeps_an_existing_file(tmp_path):
    out = tmp_path / ".env"
    gen = [sys.executable, str(REPO / "docker" / "gen_env.py"), "--output", str(out)]
    first = subprocess.run(gen, check=False, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in out.read_text().splitlines()
                  if line and not line.startswith("#"))
    secrets_ = {k: v for k, v in values.items() if SECRET_NAME.search(k)}
    assert len(secrets_) == len(SECRETS) and all(len(v) >= 20 for v in secrets_.values())
    assert len(set(secrets_.values())) == len(secrets_)
    from cryptography.fernet import Fernet

    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # a valid key
    before = out.read_text()
    again = subprocess.run(gen, check=False, capture_output=True, text=True, timeout=30)
    assert again.returncode == 0 and out.read_text() == before and "kept" in again.stdout
    forced = subprocess.run(gen + ["--force"], check=False, capture_output=True, text=True, timeout=30)
    assert forced.returncode == 0 and out.read_text() != before
    # And compose accepts the generated file.
    result = _compose("config", "-q", env_file=out)
    assert result.returncode == 0, result.stderr
    bad = subprocess.run([*gen[:2], "--example", str(tmp_path / "missing")], check=False, capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def _binary_version(*argv: str) -> str:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    return re.search(r"version (\d+\.\d+\.\d+)", out.stdout + out.stderr).group(1)


def _volume_specs(svc: dict) -> list[tuple[str, str, bool]]:
    """(source relative to the repo, target, read-only) of a resolved service's volumes."""
    out = []
    for vol in svc.get("volumes", []):
        if isinstance(vol, dict):
            source, target, ro = vol["source"], vol["target"], bool(vol.get("read_only"))
        else:
            source, target, *mode = vol.split(":")
            ro = mode == ["ro"]
        out.append((source.replace(str(REPO), "."), target, ro))
    return out


def test_alerting_services_pin_the_versions_checked_here_and_mount_the_shipped_files(services):
    """prom/alertmanager and prom/prometheus at the versions of the Debian binaries that the
    tests run the same files with; config mounted read-only; own non-root users; read-only roots."""
    shipped = "./include/chaussettes/alerting/"
    am, prom = services["alertmanager"], services["prometheus"]
    assert am["image"] == f"prom/alertmanager:v{_binary_version('prometheus-alertmanager', '--version')}"
    assert prom["image"] == f"prom/prometheus:v{_binary_version('prometheus', '--version')}"
    assert (shipped + "alertmanager.yml", "/etc/alertmanager/alertmanager.yml", True) in _volume_specs(am)
    assert {(shipped + "prometheus.yml", "/etc/prometheus/prometheus.yml", True),
            (shipped + "rules.yml", "/etc/prometheus/rules.yml", True)} <= set(_volume_specs(prom))
    for name in ("alertmanager", "prometheus", "relay"):
        svc = services[name]
        assert svc.get("read_only") is True, f"{name}: root filesystem not read-only"
        assert str(svc.get("user", "airflow")).split(":")[0] not in ("0", "root"), name
        for source, target, ro in _volume_specs(svc):
            if source.startswith(".") or source == "certs":
                assert ro, f"{name}: {source} mounted writable at {target}"
    assert "--cluster.listen-address=" in am["command"]


def test_the_relay_holds_only_its_own_secret_and_reaches_alertmanager(services):
    relay = services["relay"]
    env = relay["environment"]
    secrets_ = {k for k in env if SECRET_NAME.search(k)}
    assert secrets_ == {"CHAUSSETTES_KAFKA_SASL_PASSWORD"}, secrets_
    raw = yaml.safe_load(COMPOSE.read_text())["services"]["relay"]["environment"]
    assert raw["CHAUSSETTES_KAFKA_SASL_PASSWORD"].startswith("${KAFKA_RELAY_PASSWORD:?")
    child = settings_mod.load(env=env)
    assert child.alertmanager_url == "http://alertmanager:9093" and child.kafka.sasl_username == "relay"
    assert relay["command"][:3] == ["python", "-m", "chaussettes.notify"]
    assert relay["depends_on"]["alertmanager"]["condition"] == "service_healthy"
    assert "relay" in security.COMPONENTS
    script = (REPO / "docker" / "kafka" / "kafka-init.sh").read_text()
    assert 'acl --allow-principal User:relay --operation Read --operation Describe --topic "$TOPIC_ALERTS"' in script
    for name in ("airflow-scheduler", "airflow-api-server"):  # the notifier and the ops page
        assert settings_mod.load(env=services[name]["environment"]).alertmanager_url == "http://alertmanager:9093"


def test_prometheus_scrapes_every_metrics_port_of_the_settings(services):
    s = settings_mod.load(env={})
    config = yaml.safe_load((REPO / "include" / "chaussettes" / "alerting" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["chaussettes-detector"] == [f"detector:{s.detector_metrics_port}"]
    assert targets["chaussettes-generator"] == [f"generator:{s.generator_metrics_port}"]
    assert targets["chaussettes-relay"] == [f"relay:{s.relay_metrics_port}"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    for name in ("detector", "generator", "relay"):
        assert services[name]["environment"]["CHAUSSETTES_METRICS_ADDRESS"] == "0.0.0.0", name
    script = (REPO / "docker" / "run-generator.sh").read_text()
    assert '--metrics-port "${CHAUSSETTES_GENERATOR_METRICS_PORT:-9109}"' in script
    assert s.generator_metrics_port == 9109


def test_generator_container_reads_rate_and_scenario_from_the_environment(services):
    gen = services["generator"]
    assert {"GENERATOR_RATE", "GENERATOR_SCENARIO"} <= set(gen["environment"])
    assert "generator-status.json" in " ".join(gen["healthcheck"]["test"])
    script = (REPO / "docker" / "run-generator.sh").read_text()
    assert '--rate "${GENERATOR_RATE' in script and '--scenario "${GENERATOR_SCENARIO}"' in script
    assert "generator-status.json" in script


def test_spark_secret_never_reaches_a_command_line(services):
    for name, svc in services.items():
        command = " ".join(svc.get("command") or []) + " " + " ".join(svc.get("entrypoint") or [])
        assert "spark.authenticate.secret" not in command, name
    for script in ("entrypoint.sh", "spark/start-master.sh"):
        text = (REPO / "docker" / script).read_text()
        assert "umask 077" in text and "unset SPARK_AUTH_SECRET" in text


@pytest.mark.slow
def test_airflow_init_creates_the_connections_the_dags_use(services, tmp_path):
    """docker/airflow-init.sh with the environment compose gives it, on a real Airflow
    (SQLite instead of Postgres): the Kafka connection is SASL_SSL + SCRAM as the airflow
    user, encrypted at rest, and the Spark connection yields the standalone master."""
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAUSSETTES_", "AIRFLOW"))}
    env.update({k: str(v) for k, v in services["airflow-init"]["environment"].items()})
    env.update({
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "CHAUSSETTES_KAFKA_SASL_PASSWORD": "pw-" + "from-env-file",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    init = subprocess.run(["bash", str(REPO / "docker" / "airflow-init.sh")], env=env, check=False,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert init.returncode == 0, init.stdout[-2000:] + init.stderr[-2000:]
    assert "pw-from-env-file" not in init.stdout + init.stderr
    probe = (
        "import json\n"
        "from airflow.models import Connection\n"
        "from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook\n"
        "from airflow.utils.session import create_session\n"
        "with create_session() as s:\n"
        "    c = s.query(Connection).filter_by(conn_id='kafka_default').one()\n"
        "    print(json.dumps({'encrypted': c.is_extra_encrypted, 'kafka': c.extra_dejson,\n"
        "        'master': SparkSubmitHook(conn_id='spark_default')._resolve_connection()['master']}))\n"
    )
    # Outside a task, Airflow 3 hooks read connections from the database only in a "server"
    # context (a task gets them through the API server, which reads the same database).
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "_AIRFLOW_PROCESS_CONTEXT": "server"},
                         check=False, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["master"] == "spark://spark-master:7077"
    assert got["encrypted"] is True
    assert got["kafka"] == {
        "bootstrap.servers": "kafka:19092", "security.protocol": "SASL_SSL",
        "ssl.ca.location": "/certs/ca.pem", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "airflow", "sasl.password": "pw-from-env-file",
    }


def test_shell_scripts_parse():
    for script in sorted((REPO / "docker").rglob("*.sh")):
        result = subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_entrypoint_turns_secrets_into_private_files_and_drops_them_from_the_env(tmp_path):
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "SPARK_CONF_DIR": str(tmp_path / "spark-conf"), "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "SPARK_AUTH_SECRET": "spark-" + "secret-value", "AIRFLOW_ADMIN_PASSWORD": "admin-" + "pw",
        "AIRFLOW_OPS_PASSWORD": "ops-" + "pw",
    }
    result = subprocess.run(["bash", str(REPO / "docker" / "entrypoint.sh"), "env"], env=env,
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    child_env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert not {"SPARK_AUTH_SECRET", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_OPS_PASSWORD"} & set(child_env)
    conf = tmp_path / "spark-conf" / "spark-defaults.conf"
    assert "spark.authenticate.secret spark-secret-value\n" in conf.read_text()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    pw = tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated"
    assert json.loads(pw.read_text()) == {"admin": "admin-pw", "ops": "ops-pw"}
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600


def test_entrypoint_refuses_a_placeholder_and_leaves_a_readable_umask(tmp_path):
    base = {"PATH": os.environ.get("PATH", ""), "SPARK_CONF_DIR": str(tmp_path / "spark-conf")}
    placeholder = subprocess.run(
        ["bash", str(REPO / "docker" / "entrypoint.sh"), "true"], check=False, capture_output=True,
        text=True, timeout=60,
        env={**base, "SPARK_AUTH_SECRET": "CHANGE_ME",
             "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:CHANGE_ME@postgres/airflow"})
    assert placeholder.returncode == 64
    assert placeholder.stderr.strip() == ("entrypoint: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN SPARK_AUTH_SECRET "
                                          "still hold CHANGE_ME: run python3 docker/gen_env.py (see .env.example)")
    assert not (tmp_path / "spark-conf").exists()
    # What a service writes for others (thresholds, status) stays readable to them.
    ok = subprocess.run(["bash", str(REPO / "docker" / "entrypoint.sh"), "bash", "-c", "umask"],
                        env={**base, "SPARK_AUTH_SECRET": "s3cret-" + "value"}, check=False,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == "0022", ok.stderr
    assert stat.S_IMODE((tmp_path / "spark-conf" / "spark-defaults.conf").stat().st_mode) == 0o600


KAFKA_TOOL = """#!/usr/bin/env bash
# Stand-in for a Kafka CLI: records its command line and what an --add-config-file held.
printf '%s\\n' "$0 $*" >> "$RECORD/argv"
while [[ $# -gt 0 ]]; do
  if [[ "$1" == --add-config-file ]]; then
    stat -c '%a' "$2" >> "$RECORD/modes"; cat "$2" >> "$RECORD/files"
  fi
  shift
done
"""


def test_kafka_init_keeps_scram_passwords_off_command_lines(services, tmp_path):
    """docker/kafka/kafka-init.sh with the environment compose gives it, in front of stand-ins of
    the Kafka CLIs (no broker here): every password travels in a 0600 file, none in an argv."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    for tool in ("kafka-topics.sh", "kafka-configs.sh", "kafka-acls.sh"):
        (bin_dir / tool).write_text(KAFKA_TOOL)
        (bin_dir / tool).chmod(0o755)
    init_env = {k: str(v) for k, v in services["kafka-init"]["environment"].items()}
    env = {"PATH": os.environ.get("PATH", ""), "KAFKA_BIN": str(bin_dir), "RECORD": str(record),
           "TMPDIR": str(tmp_path), **init_env}
    run = subprocess.run(["bash", str(REPO / "docker" / "kafka" / "kafka-init.sh")], env=env,
                         check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    passwords = {v for k, v in init_env.items() if k.endswith("_PASSWORD")}
    assert len(passwords) == len(security.COMPONENTS)
    argv = (record / "argv").read_text()
    assert "kafka-configs.sh" in argv and not [p for p in passwords if p in argv + run.stdout + run.stderr]
    assert (record / "modes").read_text().split() == ["600"] * len(security.COMPONENTS)
    lines = (record / "files").read_text().splitlines()
    assert sorted(lines) == sorted(f"SCRAM-SHA-512=iterations=8192,password={p}" for p in passwords)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "record"]  # the file is removed
    refused = subprocess.run(["bash", str(REPO / "docker" / "kafka" / "kafka-init.sh")],
                             env={**env, "KAFKA_OPS_PASSWORD": "CHANGE_ME"}, check=False,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 64 and "KAFKA_OPS_PASSWORD holds the CHANGE_ME placeholder" in refused.stderr
