#!/usr/bin/env bash
# The generator as a managed container: its rate, format and scenario come from the
# environment (GENERATOR_RATE, GENERATOR_FORMAT, GENERATOR_SCENARIO, GENERATOR_SEED); the
# heartbeat file feeds the container's healthcheck; Prometheus metrics on
# CHAUSSETTES_GENERATOR_METRICS_PORT. Kafka settings: CHAUSSETTES_*.
set -euo pipefail
args=(--sink kafka --format "${GENERATOR_FORMAT:-combined}" --rate "${GENERATOR_RATE:-200}"
      --status-file "${CHAUSSETTES_HOME:-/var/lib/chaussettes}/run/generator-status.json"
      --metrics-port "${CHAUSSETTES_GENERATOR_METRICS_PORT:-9109}")
[[ -n "${GENERATOR_SCENARIO:-}" ]] && args+=(--scenario "${GENERATOR_SCENARIO}")
[[ -n "${GENERATOR_SEED:-}" ]] && args+=(--seed "${GENERATOR_SEED}")
mkdir -p "${CHAUSSETTES_HOME:-/var/lib/chaussettes}/run"
exec python /opt/chaussettes/jobs/generate_logs.py "${args[@]}"
