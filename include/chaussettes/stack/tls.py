"""The TLS proxy in front of the local broker (security on only).

Tansu speaks plaintext only, so with ``CHAUSSETTES_SECURITY_ENABLED=true`` the broker listens
on ``127.0.0.1:<kafka_port>`` and advertises ``127.0.0.1:<kafka_tls_port>``, where ``socat``
terminates TLS and requires a client certificate signed by the platform's CA. The CA, the
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
        security.ensure_pki(pki.directory)

    def create_topics() -> None:
        from chaussettes.topics import ensure_topics

        ensure_topics(security.secured_settings(settings, "ops"), {
            settings.topic_logs: settings.logs_partitions,
            settings.topic_alerts: settings.alerts_partitions,
        })

    return Component(
        name="kafka-tls",
        argv=security.tls_proxy_argv(settings.kafka_tls_port, settings.kafka_port, pki),
        ports=[(settings.kafka_tls_port, "CHAUSSETTES_KAFKA_TLS_PORT")],
        start_timeout_s=15.0,
        prepare=prepare,
        after_start=create_topics,
        urls=[(f"kafka+ssl://127.0.0.1:{settings.kafka_tls_port}  (mutual TLS; certificates in "
               f"{pki.directory})")],
        notes=[(f"plaintext broker port {settings.kafka_port} is loopback-only and not advertised; "
                "connect a shell with: eval $(python -m chaussettes.security env --component ops)")],
    )
