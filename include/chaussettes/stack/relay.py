"""The Alertmanager relay in the local stack: ``python -m chaussettes.notify`` (see
``chaussettes.notify``), reading ``alerts`` as the consumer group ``chaussettes-relay`` and
posting to the stack's Alertmanager. Healthy while its metrics endpoint answers and its last
POST to Alertmanager succeeded (or it has had nothing to post yet).
"""

from __future__ import annotations

import sys
import urllib.request

from chaussettes import security
from chaussettes.settings import Settings
from chaussettes.stack.base import Component, metrics_urls


def metrics_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.relay_metrics_port}/metrics"


def _healthy(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(metrics_url(settings), timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("chaussettes_relay_alertmanager_up "):
            return float(line.split()[1]) == 1.0
    return True  # nothing posted yet


def component(settings: Settings) -> Component:
    port = settings.relay_metrics_port
    return Component(
        name="relay",
        argv=[sys.executable, "-m", "chaussettes.notify", "--alertmanager", settings.alertmanager_url,
              "--metrics-port", str(port)],
        env={"PYTHONUNBUFFERED": "1", **security.client_env(settings, "relay")},
        ports=[(port, "CHAUSSETTES_RELAY_METRICS_PORT")] if port else [],
        healthy=(lambda: _healthy(settings)) if port else (lambda: True),
        start_timeout_s=max(30.0, 3 * settings.kafka_timeout_s),
        urls=[f"{settings.topic_alerts} -> {settings.alertmanager_url}",
              *metrics_urls(settings.relay_metrics_port)],
    )
