"""Kafka topic administration (idempotent)."""

from __future__ import annotations

from collections.abc import Mapping

from chaussettes.settings import Settings


class KafkaUnavailable(RuntimeError):
    """The broker could not be reached in time; the message names the servers."""


def admin_client(settings: Settings):
    from confluent_kafka.admin import AdminClient

    return AdminClient(settings.kafka_client_config())


def ensure_topics(settings: Settings, topics: Mapping[str, int], timeout_s: float | None = None) -> list[str]:
    """Create the topics that do not exist yet with the given partition counts.

    Returns the names it created. Existing topics are left as they are (their
    partition count is not changed).
    """
    from confluent_kafka.admin import NewTopic

    timeout = timeout_s or settings.kafka_timeout_s
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except Exception as exc:  # noqa: BLE001 - KafkaException on timeout, or a bad config
        raise KafkaUnavailable(
            f"Kafka at {settings.bootstrap_servers} did not answer within {timeout:g}s ({exc})"
        ) from None
    wanted = [NewTopic(name, num_partitions=n, replication_factor=1)
              for name, n in topics.items() if name not in existing]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout)
            created.append(name)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise
    return created


def partition_counts(settings: Settings, timeout_s: float | None = None) -> dict[str, int]:
    admin = admin_client(settings)
    meta = admin.list_topics(timeout=timeout_s or settings.kafka_timeout_s)
    return {name: len(t.partitions) for name, t in meta.topics.items()}
