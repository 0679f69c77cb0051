"""Option parsing for the ``kafka`` data source: JVM-connector names, checked up front.

Spark hands a Python data source its options with lower-cased names
(``maxOffsetsPerTrigger`` arrives as ``maxoffsetspertrigger``), so every known
option is looked up by its lower-cased name and reported under its documented
(JVM connector) spelling. Anything unknown is an error before the query starts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class KafkaOptionError(ValueError):
    """An option is unknown, missing or malformed (raised before any query starts)."""


class KafkaSourceError(RuntimeError):
    """The broker is unreachable, a topic is missing, or data was lost."""


EARLIEST = -2  # the JVM connector's sentinels in per-partition offset JSON
LATEST = -1

READ_OPTIONS = (
    "kafka.bootstrap.servers", "subscribe", "subscribePattern", "assign",
    "startingOffsets", "endingOffsets", "startingTimestamp", "endingTimestamp",
    "startingOffsetsByTimestamp", "endingOffsetsByTimestamp",
    "maxOffsetsPerTrigger", "minPartitions", "failOnDataLoss", "includeHeaders",
    "groupIdPrefix", "kafkaConsumer.pollTimeoutMs", "fetchOffset.numRetries",
    "fetchOffset.retryIntervalMs", "kafka.timeout.ms", "offsetResetGraceMs",
)
WRITE_OPTIONS = (
    "kafka.bootstrap.servers", "topic", "includeHeaders", "exactlyOnce",
    "transactionalIdPrefix", "kafka.timeout.ms",
    # Spark adds these to a sink's options itself.
    "checkpointLocation", "path", "queryName",
)
# Known JVM-connector options this implementation does not offer (a clear "not supported").
UNSUPPORTED = ("minOffsetsPerTrigger", "maxTriggerDelay", "startingOffsetsByTimestampStrategy",
               "maxRecordsPerPartition")
# kafka.* settings the JVM connector refuses too: the source manages them itself.
REFUSED_CLIENT_KEYS = ("auto.offset.reset", "enable.auto.commit", "key.deserializer",
                       "value.deserializer", "key.serializer", "value.serializer",
                       "interceptor.classes")
# Java-client-only settings with no librdkafka equivalent: dropped (listed in the docstring).
JAVA_ONLY_CLIENT_KEYS = ("ssl.truststore.type", "ssl.keystore.type", "ssl.endpoint.identification.algorithm")

_JAAS = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_JAAS_MECHANISMS = {"ScramLoginModule": None, "PlainLoginModule": "PLAIN"}


def _canon(names: tuple[str, ...]) -> dict[str, str]:
    return {n.lower(): n for n in names}


def normalize(options: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> tuple[dict[str, str], dict[str, str]]:
    """Split ``options`` into (source options by canonical name, librdkafka config).

    Raises KafkaOptionError for an unknown or unsupported option.
    """
    canon = _canon(allowed)
    unsupported = _canon(UNSUPPORTED)
    opts: dict[str, str] = {}
    client: dict[str, str] = {}
    for raw_key, value in options.items():
        key = raw_key.lower()
        value = "" if value is None else str(value)
        if key in canon:
            opts[canon[key]] = value
            if key == "kafka.bootstrap.servers":
                client["bootstrap.servers"] = value
        elif key in unsupported:
            raise KafkaOptionError(f"kafka {what} option '{unsupported[key]}' is not supported by "
                                   "chaussettes.spark_kafka")
        elif key.startswith("kafka."):
            name = key[len("kafka."):]
            if name in REFUSED_CLIENT_KEYS:
                raise KafkaOptionError(f"Kafka option 'kafka.{name}' is not supported: the {what} "
                                       "manages it itself")
            if name in JAVA_ONLY_CLIENT_KEYS:
                continue
            if name == "sasl.jaas.config":
                client.update(_from_jaas(value))
                continue
            client[name] = value
        else:
            known = ", ".join(a for a in allowed if not a.startswith("kafka.") and a not in
                              ("checkpointLocation", "path", "queryName"))
            raise KafkaOptionError(f"unknown kafka {what} option '{raw_key}' (known: {known}, "
                                   "and kafka.* client settings)")
    if not opts.get("kafka.bootstrap.servers", "").strip():
        raise KafkaOptionError("option 'kafka.bootstrap.servers' must be set")
    return opts, client


def _from_jaas(text: str) -> dict[str, str]:
    """The JVM's ``sasl.jaas.config`` login line as librdkafka's sasl.username/password."""
    fields = dict(_JAAS.findall(text))
    if "username" not in fields:
        raise KafkaOptionError("option 'kafka.sasl.jaas.config': no username=\"...\" found")
    conf = {"sasl.username": fields["username"], "sasl.password": fields.get("password", "")}
    for module, mechanism in _JAAS_MECHANISMS.items():
        if module in text and mechanism:
            conf.setdefault("sasl.mechanism", mechanism)
    return conf


def parse_bool(opts: Mapping[str, str], name: str, default: bool) -> bool:
    if name not in opts:
        return default
    value = opts[name].strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise KafkaOptionError(f"option '{name}' must be true or false, not {opts[name]!r}")


def parse_int(opts: Mapping[str, str], name: str, default: int | None, minimum: int = 0) -> int | None:
    if name not in opts:
        return default
    try:
        value = int(opts[name].strip())
    except ValueError:
        raise KafkaOptionError(f"option '{name}' must be an integer, not {opts[name]!r}") from None
    if value < minimum:
        raise KafkaOptionError(f"option '{name}' must be at least {minimum}, not {value}")
    return value


@dataclass(frozen=True)
class OffsetSpec:
    """Where a read starts or ends: ``earliest``, ``latest``, per-partition offsets or timestamps."""

    kind: str  # "earliest" | "latest" | "offsets" | "timestamp" | "timestamps"
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)  # offsets / timestamps
    timestamp: int | None = None  # one timestamp for every partition (ms)

    def describe(self) -> str:
        if self.kind in ("earliest", "latest"):
            return self.kind
        if self.kind == "timestamp":
            return f"timestamp {self.timestamp}"
        return json.dumps({t: {str(p): o for p, o in ps.items()} for t, ps in self.offsets.items()})


def _partition_json(name: str, text: str, *, allow_earliest: bool, allow_latest: bool) -> dict[str, dict[int, int]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KafkaOptionError(f"option '{name}': not valid JSON ({exc.msg} at char {exc.pos}); "
                               'expected e.g. {"topic":{"0":23,"1":-2}}') from None
    if not isinstance(doc, dict) or not doc:
        raise KafkaOptionError(f"option '{name}': expected a JSON object of topics, "
                               'e.g. {"topic":{"0":23,"1":-2}}')
    out: dict[str, dict[int, int]] = {}
    for topic, parts in doc.items():
        if not isinstance(parts, dict) or not parts:
            raise KafkaOptionError(f"option '{name}': topic {topic!r} must map partition numbers "
                                   "to offsets")
        out[topic] = {}
        for part, off in parts.items():
            try:
                pnum = int(part)
            except (TypeError, ValueError):
                raise KafkaOptionError(f"option '{name}': partition {part!r} of topic {topic!r} "
                                       "is not a number") from None
            if isinstance(off, bool) or not isinstance(off, int):
                raise KafkaOptionError(f"option '{name}': offset of {topic}-{part} must be an "
                                       f"integer, not {off!r}")
            if off < -2 or (off == EARLIEST and not allow_earliest) or (off == LATEST and not allow_latest):
                raise KafkaOptionError(f"option '{name}': offset {off} of {topic}-{part} is not "
                                       "allowed here")
            out[topic][pnum] = off
    return out


def starting_spec(opts: Mapping[str, str], default: str, streaming: bool) -> OffsetSpec:
    given = [n for n in ("startingOffsets", "startingTimestamp", "startingOffsetsByTimestamp") if n in opts]
    if len(given) > 1:
        raise KafkaOptionError(f"options {', '.join(given)} are mutually exclusive")
    if "startingTimestamp" in opts:
        return OffsetSpec("timestamp", timestamp=parse_int(opts, "startingTimestamp", None))
    if "startingOffsetsByTimestamp" in opts:
        return OffsetSpec("timestamps", _partition_json("startingOffsetsByTimestamp",
                          opts["startingOffsetsByTimestamp"], allow_earliest=False, allow_latest=False))
    text = opts.get("startingOffsets", default).strip()
    if text.lower() in ("earliest", "latest"):
        if text.lower() == "latest" and not streaming:
            raise KafkaOptionError("option 'startingOffsets': 'latest' is not allowed in a batch query")
        return OffsetSpec(text.lower())
    return OffsetSpec("offsets", _partition_json("startingOffsets", text, allow_earliest=True,
                                                 allow_latest=streaming))


def ending_spec(opts: Mapping[str, str], streaming: bool) -> OffsetSpec:
    given = [n for n in ("endingOffsets", "endingTimestamp", "endingOffsetsByTimestamp") if n in opts]
    if streaming and given:
        raise KafkaOptionError(f"option '{given[0]}' is only for batch queries")
    if len(given) > 1:
        raise KafkaOptionError(f"options {', '.join(given)} are mutually exclusive")
    if "endingTimestamp" in opts:
        return OffsetSpec("timestamp", timestamp=parse_int(opts, "endingTimestamp", None))
    if "endingOffsetsByTimestamp" in opts:
        return OffsetSpec("timestamps", _partition_json("endingOffsetsByTimestamp",
                          opts["endingOffsetsByTimestamp"], allow_earliest=False, allow_latest=False))
    text = opts.get("endingOffsets", "latest").strip()
    if text.lower() == "latest":
        return OffsetSpec("latest")
    if text.lower() == "earliest":
        raise KafkaOptionError("option 'endingOffsets': 'earliest' is not allowed")
    return OffsetSpec("offsets", _partition_json("endingOffsets", text, allow_earliest=False,
                                                 allow_latest=True))


@dataclass(frozen=True)
class Subscription:
    kind: str  # "subscribe" | "subscribePattern" | "assign"
    topics: tuple[str, ...] = ()
    pattern: str | None = None
    assigned: tuple[tuple[str, int], ...] = ()

    def describe(self) -> str:
        if self.kind == "subscribe":
            return ",".join(self.topics)
        if self.kind == "subscribePattern":
            return f"pattern {self.pattern}"
        return ",".join(f"{t}-{p}" for t, p in self.assigned)


def subscription(opts: Mapping[str, str]) -> Subscription:
    given = [n for n in ("subscribe", "subscribePattern", "assign") if n in opts]
    if len(given) != 1:
        raise KafkaOptionError("exactly one of the options 'subscribe', 'subscribePattern', "
                               f"'assign' must be set (got {', '.join(given) or 'none'})")
    name = given[0]
    text = opts[name].strip()
    if name == "subscribe":
        topics = tuple(t.strip() for t in text.split(",") if t.strip())
        if not topics:
            raise KafkaOptionError("option 'subscribe' names no topic")
        return Subscription("subscribe", topics=topics)
    if name == "subscribePattern":
        try:
            re.compile(text)
        except re.error as exc:
            raise KafkaOptionError(f"option 'subscribePattern': bad regular expression ({exc})") from None
        return Subscription("subscribePattern", pattern=text)
    try:
        doc = json.loads(text)
        pairs = tuple((str(t), int(p)) for t, ps in doc.items() for p in ps)
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise KafkaOptionError('option \'assign\': expected JSON like {"topic":[0,1]}') from None
    if not pairs:
        raise KafkaOptionError("option 'assign' names no partition")
    return Subscription("assign", assigned=pairs)


def timeout_s(opts: Mapping[str, str]) -> float:
    """The bound on every wait for the broker: option kafka.timeout.ms, else the settings'."""
    ms = parse_int(opts, "kafka.timeout.ms", None, minimum=1)
    if ms is not None:
        return ms / 1000.0
    from chaussettes import settings as settings_mod

    try:
        return float(settings_mod.load().kafka_timeout_s)
    except Exception:  # noqa: BLE001 - a bad CHAUSSETTES_* variable must not hide the Kafka error
        return 10.0
