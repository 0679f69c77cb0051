"""The default log generator of the local stack (`make up`): moderate traffic into
``settings.topic_logs`` with a few misbehaving clients and a failing endpoint, so the
detector has something to find from the first minute.

Runs ``python -m chaussettes.generator`` (the same CLI as ``jobs/generate_logs.py``);
Kafka address and security come from the stack's ``CHAUSSETTES_*`` environment.
Healthy while its heartbeat (``settings.generator_status_path``) says ``running`` and is fresh.

Knobs: ``CHAUSSETTES_GENERATOR_RATE`` (lines/s, default 200; ``0`` switches the
component off) and ``CHAUSSETTES_GENERATOR_ARGS`` (extra CLI flags, e.g.
``--scenario incidents.yaml``).
"""

from __future__ import annotations

import json
import shlex
import sys

from chaussettes import security
from chaussettes.settings import Settings
from chaussettes.stack.base import Component, metrics_urls

DEFAULT_FLAGS = ["--bad-ips", "2", "--ip-error-rate", "0.7", "--bad-ip-share", "0.01",
                 "--bad-urls", "1", "--url-error-rate", "0.6", "--bad-url-share", "0.01",
                 "--progress-interval", "30"]
STALE_AFTER_S = 10.0


def _rate(settings: Settings) -> float:
    return settings.generator_rate


def argv(settings: Settings) -> list[str]:
    extra = settings.generator_args
    return [sys.executable, "-m", "chaussettes.generator", "--rate", f"{_rate(settings):g}",
            "--topic", settings.topic_logs, "--status-file", str(settings.generator_status_path),
            *(["--metrics-port", str(settings.generator_metrics_port)] if settings.generator_metrics_port else []),
            *DEFAULT_FLAGS, *shlex.split(extra)]


def heartbeat(settings: Settings) -> dict | None:
    """The generator's status document when it is running and fresh, else None."""
    from chaussettes.generator.health import check

    if check(settings.generator_status_path, STALE_AFTER_S) is not None:
        return None
    try:
        return json.loads(settings.generator_status_path.read_text())
    except (OSError, ValueError):
        return None


def component(settings: Settings) -> Component | None:
    rate = _rate(settings)
    if rate <= 0:
        return None

    def prepare() -> None:
        settings.generator_status_path.parent.mkdir(parents=True, exist_ok=True)
        try:  # a stale heartbeat from a previous run must not look healthy
            settings.generator_status_path.unlink()
        except FileNotFoundError:
            pass

    return Component(
        name="generator",
        argv=argv(settings),
        env={"PYTHONUNBUFFERED": "1", **security.client_env(settings, "generator")},
        healthy=lambda: heartbeat(settings) is not None,
        start_timeout_s=max(30.0, 3 * settings.kafka_timeout_s),
        prepare=prepare,
        urls=[f"{rate:g} lines/s into {settings.topic_logs} (2 misbehaving IPs, 1 failing URL)",
              *metrics_urls(settings.generator_metrics_port)],
        notes=[f"heartbeat {settings.generator_status_path}"],
    )
