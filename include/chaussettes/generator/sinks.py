"""Where lines go: Kafka, the console (stdout), a TCP server, a file.

Every sink takes batches: ``send(values, keys)`` with values ``str`` (generator) or
``bytes`` (replay of raw lines) and keys the client IPs (or None), and ``close()`` which
flushes and returns how many lines could not be delivered.
"""

from __future__ import annotations

import gzip
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from chaussettes.settings import Settings


class SinkError(RuntimeError):
    """A sink cannot go on; the message is one line for the user."""


class SinkClosed(Exception):
    """The reader went away (a closed pipe): stop quietly."""


class Sink:
    name = "sink"
    delivery_errors = 0

    def open(self) -> None:
        pass

    def send(self, values: Sequence, keys: Sequence, times_ms: Sequence | None = None) -> None:
        """Deliver lines; ``times_ms``: each line's event time (epoch ms), which a sink with
        record times (Kafka) stamps on its record, so that a reader can cut a backlog by event
        time (spark_kafka's balanced_cut)."""
        raise NotImplementedError

    def poll(self) -> None:
        """Serve callbacks while idle."""

    def close(self, timeout_s: float = 30.0) -> int:
        """Flush; return the number of lines not delivered."""
        return 0

    def describe(self) -> str:
        return self.name


def _joined(values: Sequence) -> bytes:
    if not values:
        return b""
    if isinstance(values[0], str):
        return ("\n".join(values) + "\n").encode("utf-8", "surrogateescape")
    return b"\n".join(values) + b"\n"


# --------------------------------------------------------------------------- Kafka
# Measured against the local broker (see bench/bench_generator.py): large batches and lz4
# cut the broker's work and the per-message cost of the client; only delivery *errors*
# come back as callbacks, so the happy path costs no Python call per message.
PRODUCER_TUNING = {
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "compression.type": "lz4",
    "acks": "all",
    "partitioner": "murmur2_random",  # same key -> same partition as Java clients
    "delivery.report.only.error": True,
}


class KafkaSink(Sink):
    name = "kafka"

    def __init__(self, settings: Settings, topic: str, compression: str | None = None,
                 partitions: int | None = None, extra: dict | None = None):
        self.settings = settings
        self.topic = topic
        self.partitions = partitions or settings.logs_partitions
        self.tuning = dict(PRODUCER_TUNING)
        if compression:
            self.tuning["compression.type"] = compression
        self.tuning.update(extra or {})
        self.producer = None
        self.sent = 0
        self.delivery_errors = 0
        self.last_error: str | None = None
        self.undelivered = 0
        # no delivery confirmed for this long while lines wait -> the run fails
        self.stall_s = max(10.0, 3 * settings.kafka_timeout_s)
        self._confirmed = 0
        self._errors_seen = 0
        self._progress_at = time.monotonic()

    def describe(self) -> str:
        return f"kafka {self.settings.bootstrap_servers} topic {self.topic}"

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self.delivery_errors += 1
            self.last_error = str(err)

    def _on_error(self, err) -> None:
        self.last_error = str(err)

    def open(self) -> None:
        from confluent_kafka import KafkaException, Producer

        timeout = self.settings.kafka_timeout_s
        conf = self.settings.kafka_client_config(**self.tuning, **{
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            # librdkafka logs every failed connection attempt on stderr; the sink reports
            # problems itself, in one line
            "log_level": 0,
            # a broker that goes away turns into delivery errors, not an endless wait
            "message.timeout.ms": int(self.stall_s * 1000),
        })
        try:
            self.producer = Producer(conf)
            meta = self.producer.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise SinkError(f"Kafka at {self.settings.bootstrap_servers} did not answer within "
                            f"{timeout:g}s ({_short(exc)})") from None
        if self.topic not in meta.topics or meta.topics[self.topic].error is not None:
            from chaussettes.topics import KafkaUnavailable, ensure_topics

            try:
                ensure_topics(self.settings, {self.topic: self.partitions})
            except KafkaUnavailable as exc:
                raise SinkError(str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - any admin failure is reported in one line
                raise SinkError(f"cannot create topic {self.topic}: {_short(exc)}") from None

    def send(self, values: Sequence, keys: Sequence, times_ms: Sequence | None = None) -> None:
        producer = self.producer
        produce = producer.produce
        poll = producer.poll
        topic = self.topic
        n = len(values)
        step = 2000
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            if times_ms is None:
                for v, k in zip(values[lo:hi], keys[lo:hi]):
                    try:
                        produce(topic, v, k)
                    except BufferError:
                        self._wait_for_room(v, k)
            else:
                for v, k, t in zip(values[lo:hi], keys[lo:hi], times_ms[lo:hi]):
                    try:
                        produce(topic, v, k, timestamp=t)
                    except BufferError:
                        self._wait_for_room(v, k, timestamp=t)
            poll(0)
        self.sent += n
        self._check_progress()

    def _check_progress(self) -> None:
        """Fail when the broker confirms nothing for ``stall_s`` while lines are pending."""
        pending = len(self.producer)
        confirmed = self.sent - self.delivery_errors - pending
        now = time.monotonic()
        idle = pending == 0 and self.delivery_errors == self._errors_seen
        self._errors_seen = self.delivery_errors
        if confirmed > self._confirmed or idle:
            self._confirmed = confirmed
            self._progress_at = now
        elif now - self._progress_at > self.stall_s:
            raise SinkError(f"Kafka at {self.settings.bootstrap_servers} confirmed no line for "
                            f"{now - self._progress_at:.0f}s ({self.last_error or 'no answer'})")

    def _wait_for_room(self, value, key, **kwargs) -> None:
        """The local queue is full: serve deliveries until there is room (bounded)."""
        deadline = time.monotonic() + self.stall_s + 5
        while True:
            self.producer.poll(0.05)
            try:
                self.producer.produce(self.topic, value, key, **kwargs)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise SinkError(f"Kafka at {self.settings.bootstrap_servers} accepts no messages "
                                    f"({self.last_error or 'queue full'})") from None

    def poll(self) -> None:
        if self.producer is not None:
            self.producer.poll(0)
            self._check_progress()

    def close(self, timeout_s: float = 30.0) -> int:
        if self.producer is None:
            return 0
        remaining = self.producer.flush(timeout_s)
        self.undelivered = remaining
        self.producer = None
        return remaining


def _short(exc: BaseException) -> str:
    text = str(exc)
    if "KafkaError{" in text and "str=" in text:
        text = text.split('str="', 1)[-1].split('"', 1)[0]
    return text.splitlines()[0] if text else exc.__class__.__name__


# --------------------------------------------------------------------------- console / file
class ConsoleSink(Sink):
    name = "console"

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stdout.buffer

    def send(self, values: Sequence, keys: Sequence, times_ms: Sequence | None = None) -> None:
        try:
            self.stream.write(_joined(values))
        except BrokenPipeError:
            raise SinkClosed() from None

    def poll(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise SinkClosed() from None

    def close(self, timeout_s: float = 30.0) -> int:
        try:
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass
        return 0


class FileSink(Sink):
    name = "file"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fh = None

    def describe(self) -> str:
        return f"file {self.path}"

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.suffix == ".gz":
                self.fh = gzip.open(self.path, "wb", compresslevel=3)  # noqa: SIM115 - open until close()
            else:
                self.fh = open(self.path, "wb", buffering=1 << 20)  # noqa: SIM115 - open until close()
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def send(self, values: Sequence, keys: Sequence, times_ms: Sequence | None = None) -> None:
        try:
            self.fh.write(_joined(values))
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self, timeout_s: float = 30.0) -> int:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        return 0


# --------------------------------------------------------------------------- TCP server
class TcpSink(Sink):
    """A line server, like ``nc -lk PORT``: every connected client gets every line.

    Lines are only generated while at least one client is connected (Spark's socket
    source connects as a client); ``send`` waits for one.
    """

    name = "tcp"

    def __init__(self, host: str, port: int, should_stop=lambda: False, log=None):
        self.host = host
        self.port = port
        self.should_stop = should_stop
        self.log = log or (lambda msg: None)
        self.server: socket.socket | None = None
        self.clients: list[socket.socket] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.dropped = 0

    def describe(self) -> str:
        return f"tcp {self.host}:{self.port}"

    def open(self) -> None:
        try:
            srv = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((self.host, self.port))
            srv.listen(8)
        except OSError as exc:
            raise SinkError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.server = srv
        self.port = srv.getsockname()[1]
        threading.Thread(target=self._accept, name="tcp-accept", daemon=True).start()
        self.log(f"tcp sink: listening on {self.host}:{self.port}, waiting for a client "
                 f"(e.g. Spark's socket source)")

    def _accept(self) -> None:
        while self.server is not None:
            try:
                conn, addr = self.server.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.clients.append(conn)
                self.connected.set()
            self.log(f"tcp sink: client {addr[0]}:{addr[1]} connected")

    def wait_for_client(self) -> bool:
        while not self.connected.wait(0.2):
            if self.should_stop():
                return False
        return True

    def send(self, values: Sequence, keys: Sequence, times_ms: Sequence | None = None) -> None:
        data = _joined(values)
        while True:
            if not self.wait_for_client():
                raise SinkClosed()
            with self.lock:
                clients = list(self.clients)
            delivered = False
            for conn in clients:
                try:
                    conn.sendall(data)
                    delivered = True
                except OSError:
                    self._drop(conn)
            if delivered:
                return

    def _drop(self, conn) -> None:
        with self.lock:
            if conn in self.clients:
                self.clients.remove(conn)
                self.dropped += 1
            if not self.clients:
                self.connected.clear()
        try:
            conn.close()
        except OSError:
            pass
        self.log("tcp sink: a client disconnected")

    def close(self, timeout_s: float = 30.0) -> int:
        srv, self.server = self.server, None
        if srv is not None:
            srv.close()
        with self.lock:
            for conn in self.clients:
                try:
                    conn.shutdown(socket.SHUT_WR)
                    conn.close()
                except OSError:
                    pass
            self.clients.clear()
        return 0
