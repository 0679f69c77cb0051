#!/usr/bin/env bash
# One-shot: migrate Airflow's database and (re)create the connections the DAGs use.
# The Kafka password reaches the connection through a 0600 file, never a command line.
set -euo pipefail
umask 077
airflow db migrate
conns="$(mktemp --suffix=.json)"
trap 'rm -f "$conns"' EXIT
python - "$conns" <<'PY'
import json, os, sys
kafka = {
    "bootstrap.servers": os.environ["CHAUSSETTES_BOOTSTRAP_SERVERS"],
    "security.protocol": os.environ["CHAUSSETTES_KAFKA_PROTOCOL"],
    "ssl.ca.location": os.environ["CHAUSSETTES_KAFKA_CA_LOCATION"],
    "sasl.mechanism": os.environ["CHAUSSETTES_KAFKA_SASL_MECHANISM"],
    "sasl.username": os.environ["CHAUSSETTES_KAFKA_SASL_USERNAME"],
    "sasl.password": os.environ["CHAUSSETTES_KAFKA_SASL_PASSWORD"],
}
master = os.environ["CHAUSSETTES_SPARK_MASTER"]  # spark://host:port
host, _, port = master.removeprefix("spark://").partition(":")
conns = {
    "kafka_default": {"conn_type": "kafka", "extra": json.dumps(kafka)},
    "spark_default": {"conn_type": "spark", "host": f"spark://{host}", "port": int(port or 7077),
                      "extra": json.dumps({"deploy-mode": "client"})},
}
with open(sys.argv[1], "w") as f:
    json.dump(conns, f)
PY
airflow connections import --overwrite "$conns"
echo "airflow-init: database migrated, connections kafka_default and spark_default set"
