"""How far the ingest has published whole batches on the channel: the stateful query reads
up to there, so that one of its micro-batches holds whole ingest batches.

The ingest publishes a batch's counts from several tasks, each in its own transaction, then
its clock. Read as they land, one ingest batch reached the stateful query over two or three
of its micro-batches, and each costs ~1-3 s whatever it holds (Python workers, the state
store's commit and fsync): 9 stateful batches for 3 ingest batches of 1M lines, measured.
So after its clock the ingest writes the channel's end offsets to ``published.json`` beside
its clocks (``write``), and the stateful query reads the channel through
``chaussettes_channel`` — the Kafka source whose micro-batches end there (``cap``).

The gate only groups: a key group applies an ingest batch once all of it has been read, in
order, however it was cut (``stateful``). The detector sets one where the channel ends
when it starts, before its first batch (``IngestBatch.hold_gate``); a missing gate (its file
could not be written) reads everything, and a gate that stops moving while the channel grows
is ignored after ``PATIENCE_S``: it costs speed, never an event.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from chaussettes import atomicfile
from chaussettes.spark_kafka.reader import KafkaStreamReader, ReadConfig, from_json, to_json
from chaussettes.spark_kafka.source import SCHEMA, KafkaDataSource

log = logging.getLogger("chaussettes.detector")

GATE_FILE = "published.json"
GATE_OPTION = "gateFile"  # the chaussettes_channel source's option: the gate file's path
PATIENCE_S = 120.0  # how long the channel may grow past a gate that does not move


def write(path: Path, batch: int, ends: dict[int, int]) -> None:
    """The channel's end offsets (partition -> offset) once ingest batch ``batch`` is out."""
    atomicfile.write_json(path, {"batch": batch, "ends": {str(p): int(o) for p, o in sorted(ends.items())}})


def read(path: Path | None) -> dict[int, int] | None:
    """The gate's end offsets, None when there is none (or it cannot be read)."""
    import json

    if path is None:
        return None
    try:
        doc = json.loads(Path(path).read_text())
        return {int(p): int(o) for p, o in doc["ends"].items()}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the channel gate %s: %s", path, exc)
        return None


def cap(begin: dict[tuple[str, int], int], end: dict[tuple[str, int], int],
        gate: dict[int, int]) -> dict[tuple[str, int], int]:
    """``end`` held back at the gate: a partition ends at its gate when the gate lies
    between where the batch begins and where it could end; a gate behind the batch's
    begin (stale) or a partition it does not name holds nothing back."""
    out = {}
    for tp, stop in end.items():
        at = gate.get(tp[1])
        start = begin.get(tp)
        out[tp] = at if at is not None and start is not None and start <= at < stop else stop
    return out


class GatedStreamReader(KafkaStreamReader):
    """The Kafka source's stream reader, each micro-batch held back at the gate (``cap``)."""

    def __init__(self, cfg: ReadConfig, gate_path: str | None):
        super().__init__(cfg)
        self.gate_path = Path(gate_path) if gate_path else None
        self._gate: dict[int, int] | None = None
        self._since = time.monotonic()  # when the gate last moved or held nothing back

    def prepareForTriggerAvailableNow(self) -> None:
        super().prepareForTriggerAvailableNow()
        self.gate_path = None  # it runs once the ingest is done: everything is out

    def latestOffset(self, start: dict, limit) -> dict:
        latest = super().latestOffset(start, limit)
        gate = read(self.gate_path)
        if gate is None:
            return latest
        end = from_json(latest)
        capped = cap(from_json(start), end, gate)
        now = time.monotonic()
        if capped == end or gate != self._gate:  # it holds nothing back, or it moved
            self._gate, self._since = gate, now
        elif now - self._since > PATIENCE_S:
            log.warning("the channel gate %s has not moved for %.0fs: reading past it", self.gate_path,
                        now - self._since)
            return latest
        return latest if capped == end else {**latest, **to_json(capped)}


class ChannelSource(KafkaDataSource):
    """The Kafka source, its micro-batches ending at the gate file named by ``gateFile``."""

    @classmethod
    def name(cls) -> str:
        return "chaussettes_channel"

    def _kafka_options(self) -> dict:
        return {k: v for k, v in self.options.items() if k.lower() != GATE_OPTION.lower()}

    def schema(self):
        ReadConfig.parse(self._kafka_options(), streaming=True)
        return SCHEMA

    def reader(self, schema):
        raise NotImplementedError("chaussettes_channel is read by the detector's stateful query only")

    def streamReader(self, schema):
        gate = next((v for k, v in self.options.items() if k.lower() == GATE_OPTION.lower()), None)
        return GatedStreamReader(ReadConfig.parse(self._kafka_options(), streaming=True), gate)
