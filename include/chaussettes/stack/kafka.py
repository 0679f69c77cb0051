"""The local broker component: Tansu on 127.0.0.1, topics created once it answers."""

from __future__ import annotations

from chaussettes.broker import broker_argv
from chaussettes.settings import Settings
from chaussettes.stack.base import Component
from chaussettes.topics import ensure_topics


def component(settings: Settings) -> Component:
    def create_topics() -> None:
        ensure_topics(settings, {
            settings.topic_logs: settings.logs_partitions,
            settings.topic_alerts: settings.alerts_partitions,
        })

    return Component(
        name="kafka",
        argv=broker_argv(settings.kafka_port),
        ports=[(settings.kafka_port, "CHAUSSETTES_KAFKA_PORT")],
        start_timeout_s=30.0,
        after_start=create_topics,
        urls=[f"kafka://{settings.bootstrap_servers}  (topics {settings.topic_logs} x"
              f"{settings.logs_partitions}, {settings.topic_alerts} x{settings.alerts_partitions})"],
    )
