#!/usr/bin/env bash
# One-shot, in the broker's network namespace (network_mode: service:kafka), through the
# broker's loopback-only PLAINTEXT listener: create the topics, one SCRAM-SHA-512 user per
# component, and the ACLs that let each component do its job and nothing more.
# Idempotent: rerunning it updates passwords and leaves topics as they are.
# No password on a command line (`ps` shows those to every user): each goes through a 0600
# file given to kafka-configs.sh --add-config-file, removed on exit.
set -euo pipefail
BS=127.0.0.1:29092
BIN="${KAFKA_BIN:-/opt/kafka/bin}"
: "${TOPIC_LOGS:?}" "${TOPIC_ALERTS:?}" "${LOGS_PARTITIONS:?}" "${ALERTS_PARTITIONS:?}"
: "${TOPIC_WINDOW_COUNTS:?}" "${WINDOW_COUNTS_PARTITIONS:?}"

"$BIN/kafka-topics.sh" --bootstrap-server "$BS" --create --if-not-exists \
  --topic "$TOPIC_LOGS" --partitions "$LOGS_PARTITIONS" --replication-factor 1
"$BIN/kafka-topics.sh" --bootstrap-server "$BS" --create --if-not-exists \
  --topic "$TOPIC_ALERTS" --partitions "$ALERTS_PARTITIONS" --replication-factor 1
# the detector's own topic between its two queries (window counts per key group)
"$BIN/kafka-topics.sh" --bootstrap-server "$BS" --create --if-not-exists \
  --topic "$TOPIC_WINDOW_COUNTS" --partitions "$WINDOW_COUNTS_PARTITIONS" --replication-factor 1

umask 077
credentials="$(mktemp)"
trap 'rm -f "$credentials"' EXIT
for user in generator detector calibration ops airflow relay; do
  var="KAFKA_$(echo "$user" | tr a-z A-Z)_PASSWORD"
  password="${!var:?$var is not set (python3 docker/gen_env.py)}"
  if [[ "$password" == *CHANGE_ME* ]]; then
    echo "kafka-init: $var holds the CHANGE_ME placeholder: run python3 docker/gen_env.py" >&2
    exit 64
  fi
  # A properties file: the value is taken as is (no [] as on --add-config).
  printf 'SCRAM-SHA-512=iterations=8192,password=%s\n' "$password" > "$credentials"
  "$BIN/kafka-configs.sh" --bootstrap-server "$BS" --alter --entity-type users \
    --entity-name "$user" --add-config-file "$credentials" >/dev/null
  echo "kafka-init: SCRAM-SHA-512 user $user"
done
rm -f "$credentials"

acl() { "$BIN/kafka-acls.sh" --bootstrap-server "$BS" --add --force "$@" >/dev/null; }
acl --allow-principal User:generator --operation Write --operation Describe --topic "$TOPIC_LOGS"
acl --allow-principal User:detector --operation Read --operation Describe --topic "$TOPIC_LOGS"
acl --allow-principal User:detector --operation Write --operation Describe --topic "$TOPIC_ALERTS"
acl --allow-principal User:detector --operation Read --operation Write --operation Describe \
  --topic "$TOPIC_WINDOW_COUNTS"
# exactly once: the detector publishes each micro-batch in a transaction (ids chaussettes-*)
acl --allow-principal User:detector --operation Write --operation Describe \
  --transactional-id chaussettes --resource-pattern-type prefixed
acl --allow-principal User:calibration --operation Read --operation Describe --topic "$TOPIC_LOGS"
acl --allow-principal User:ops --operation Read --operation Describe --topic "$TOPIC_ALERTS"
acl --allow-principal User:ops --operation Describe --topic "$TOPIC_LOGS"
# The Alertmanager relay reads alerts and commits its group's offsets.
acl --allow-principal User:relay --operation Read --operation Describe --topic "$TOPIC_ALERTS"
# Airflow watches alerts and submits calibrations that may read the logs topic.
acl --allow-principal User:airflow --operation Read --operation Describe --topic "$TOPIC_ALERTS"
acl --allow-principal User:airflow --operation Read --operation Describe --topic "$TOPIC_LOGS"
for user in detector calibration ops airflow relay; do
  acl --allow-principal "User:$user" --operation Read --group chaussettes --resource-pattern-type prefixed
done
echo "kafka-init: topics $TOPIC_LOGS x$LOGS_PARTITIONS, $TOPIC_ALERTS x$ALERTS_PARTITIONS," \
  "$TOPIC_WINDOW_COUNTS x$WINDOW_COUNTS_PARTITIONS; ACLs set"
