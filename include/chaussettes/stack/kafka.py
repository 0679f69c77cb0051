"""The local broker component: Tansu on ``bind_host`` (127.0.0.1), topics created once it answers."""

from __future__ import annotations

from chaussettes import security
from chaussettes.broker import broker_argv
from chaussettes.settings import Settings
from chaussettes.stack import s3
from chaussettes.stack.base import Component
from chaussettes.topics import ensure_topics


def component(settings: Settings) -> Component:
    def create_topics() -> None:
        ensure_topics(settings, {
            settings.topic_logs: settings.logs_partitions,
            settings.topic_alerts: settings.alerts_partitions,
        })

    secure = security.enabled(settings)
    durable = s3.durable(settings)
    return Component(
        name="kafka",
        # With security on, clients are sent to the TLS proxy's port (stack/tls.py),
        # which also creates the topics once it answers.
        argv=broker_argv(settings.kafka_port,
                         advertised_port=settings.kafka_tls_port if secure else None,
                         storage=s3.broker_storage() if durable else None,
                         host=settings.bind_host),
        env=s3.broker_env(settings) if durable else {},
        ports=[(settings.kafka_port, "CHAUSSETTES_KAFKA_PORT")],
        start_timeout_s=30.0,
        after_start=None if secure else create_topics,
        urls=[(f"kafka://{settings.bootstrap_servers}  (topics {settings.topic_logs} x"
              f"{settings.logs_partitions}, {settings.topic_alerts} x{settings.alerts_partitions})")],
    )
