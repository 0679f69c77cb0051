#!/usr/bin/env bash
# Entry point of every container of the chaussettes image. Secrets arrive as environment
# variables (from the generated .env); turn them into 0600 files where the tools read them,
# then drop them from the environment so that no child process (and no task log) sees them.
set -euo pipefail

# A placeholder is not a secret: refuse to start with one (an .env copied by hand from an old
# .env.example). Names only in the message, never values.
placeholders="$(env | awk -F= 'index(substr($0, length($1) + 2), "CHANGE_ME") { print $1 }' | sort | tr '\n' ' ')"
if [[ -n "$placeholders" ]]; then
  echo "entrypoint: ${placeholders}still hold CHANGE_ME: run python3 docker/gen_env.py (see .env.example)" >&2
  exit 64
fi

umask 077  # the secret files below

if [[ -n "${SPARK_AUTH_SECRET:-}" ]]; then
  # Standalone Spark refuses secret files; spark-defaults.conf is read by spark-submit,
  # the master and the worker alike, and keeps the secret off every command line.
  mkdir -p -m 0700 "${SPARK_CONF_DIR:?}"
  {
    echo "spark.authenticate true"
    echo "spark.authenticate.secret ${SPARK_AUTH_SECRET}"
    echo "spark.network.crypto.enabled true"
  } > "${SPARK_CONF_DIR}/spark-defaults.conf"
  unset SPARK_AUTH_SECRET
fi

if [[ -n "${AIRFLOW_ADMIN_PASSWORD:-}" ]]; then
  # Airflow's simple auth manager keeps a passwords file that exists beforehand.
  mkdir -p "${AIRFLOW_HOME:-/opt/airflow}"
  python - <<'PY'
import json, os
users = {"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}
if os.environ.get("AIRFLOW_OPS_PASSWORD"):
    users["ops"] = os.environ["AIRFLOW_OPS_PASSWORD"]
path = os.path.join(os.environ.get("AIRFLOW_HOME", "/opt/airflow"),
                    "simple_auth_manager_passwords.json.generated")
with open(path, "w") as f:
    json.dump(users, f)
PY
  unset AIRFLOW_ADMIN_PASSWORD AIRFLOW_OPS_PASSWORD
fi

# What the service writes is read by others (the detector reads the thresholds the scheduler
# publishes; Airflow reads the detector's status): files readable, never writable, by others.
umask 022

# Airflow commands go through the official image's entry point (it waits for the database);
# anything else (spark-submit, spark-class, bash, python) runs as given, since that entry
# point would prefix an unknown command with `airflow`.
if [[ "${1:-}" == airflow ]]; then
  exec /entrypoint "$@"
fi
exec "$@"
