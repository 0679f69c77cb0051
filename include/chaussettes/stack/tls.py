"""The TLS proxy in front of the local broker (security on only).

Tansu speaks plaintext only, so with ``CHAUSSETTES_SECURITY_ENABLED=true`` the broker listens
on ``<bind_host>:<kafka_port>`` and advertises ``<bind_host>:<kafka_tls_port>``, where ``socat``
terminates TLS and requires a client certificate signed by the platform's CA; it serves at
most ``kafka_tls_max_connections`` connections at once (one process each). The CA, the
server certificate and one client certificate per component are (re)made by ``prepare`` into
``<run_dir>/tls``. Once the proxy answers, the topics are created through it (as the ``ops``
client), which also proves that the whole path works.
"""

from __future__ import annotations

from chaussettes import security
from chaussettes.settings import Settings
from chaussettes.stack.base import Component


def component(settings: Settings) -> Component | None:
    if not security.enabled(settings):
        return None
    pki = security.Pki(security.tls_dir(settings))

    def prepare() -> None:
        security.ensure_pki(pki.directory, server_hosts=security.server_hosts(settings))

    def create_topics() -> None:
        from chaussettes.topics import ensure_topics

        ensure_topics(security.secured_settings(settings, "ops"), {
            settings.topic_logs: settings.logs_partitions,
            settings.topic_alerts: settings.alerts_partitions,
        })

    return Component(
        name="kafka-tls",
        argv=security.tls_proxy_argv(settings.kafka_tls_port, settings.kafka_port, pki,
                                     bind=settings.bind_host, target_host=settings.bind_host,
                                     max_connections=settings.kafka_tls_max_connections),
        ports=[(settings.kafka_tls_port, "CHAUSSETTES_KAFKA_TLS_PORT")],
        start_timeout_s=15.0,
        prepare=prepare,
        after_start=create_topics,
        urls=[(f"kafka+ssl://{settings.bind_host}:{settings.kafka_tls_port}  (mutual TLS; certificates in "
               f"{pki.directory})")],
        notes=[(f"plaintext broker port {settings.kafka_port} is on {settings.bind_host} only and not advertised; "
                "connect a shell with: eval $(python -m chaussettes.security env --component ops)")],
    )
