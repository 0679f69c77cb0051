#!/usr/bin/env bash
# Debian packages the platform and its tests drive for real, installed when missing (as root;
# otherwise one line says what to install):
#   runtime (`make up`, and `--runtime` alone): socat (the TLS proxy in front of the local
#     broker), prometheus-alertmanager (the local stack's Alertmanager, with amtool), a JDK
#     (javac builds the parser's Java fast path, chaussettes.jvm);
#   tests (`make test`): those, and chromium (the operations page's browser test),
#     docker-compose (static validation of docker-compose.yaml; no engine is needed),
#     prometheus (promtool, and a real scrape of the metrics endpoints).
set -euo pipefail
need=()
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v javac >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/javac" ] || need+=(openjdk-17-jdk-headless)
if [ "${1:-}" != "--runtime" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
