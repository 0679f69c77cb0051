#!/usr/bin/env bash
# The official apache/spark image as a standalone master with authentication on: the shared
# secret goes from the environment into a 0600 spark-defaults.conf, never onto the command line.
set -euo pipefail
umask 077
export SPARK_CONF_DIR=/tmp/spark-conf
mkdir -p "$SPARK_CONF_DIR"
{
  echo "spark.authenticate true"
  echo "spark.authenticate.secret ${SPARK_AUTH_SECRET:?SPARK_AUTH_SECRET is not set (make env)}"
  echo "spark.network.crypto.enabled true"
} > "$SPARK_CONF_DIR/spark-defaults.conf"
if [[ "$(cat "$SPARK_CONF_DIR/spark-defaults.conf")" == *CHANGE_ME* ]]; then
  echo "start-master: SPARK_AUTH_SECRET holds the CHANGE_ME placeholder: run python3 docker/gen_env.py" >&2
  exit 64
fi
unset SPARK_AUTH_SECRET
# No REST submission server (Spark 4 opens one on 6066, without authentication: any container
# of the network could run code on the worker).
export SPARK_MASTER_OPTS="${SPARK_MASTER_OPTS:-} -Dspark.master.rest.enabled=false"
exec /opt/spark/bin/spark-class org.apache.spark.deploy.master.Master \
  --host 0.0.0.0 --port 7077 --webui-port 8090
