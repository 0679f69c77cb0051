"""What a managed component of the local stack is.

Each component module in this package exposes ``component(settings) -> Component | None``
(None when that component is switched off by the settings). The stack manager starts
components in order, each in its own process group, records PID, port and log file in
the run folder, waits until ``healthy()`` answers True, and stops them in reverse order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Component:
    name: str
    # None: a component the stack does not run itself but waits for and reports on
    # (the detector, started and restarted by Airflow's streaming_detector DAG).
    argv: list[str] | None
    env: dict[str, str] = field(default_factory=dict)  # added to the stack's environment
    ports: list[tuple[int, str]] = field(default_factory=list)  # (port, setting that changes it)
    healthy: Callable[[], bool] | None = None  # None: healthy when every port accepts connections
    start_timeout_s: float = 60.0
    cwd: Path | None = None
    prepare: Callable[[], None] | None = None  # runs before start (create folders, certificates)
    after_start: Callable[[], None] | None = None  # runs once healthy (create topics, connections)
    stop: Callable[[], None] | None = None  # how `down` stops a component without argv
    urls: list[str] = field(default_factory=list)  # printed by `up` and `status`
    notes: list[str] = field(default_factory=list)  # extra lines printed by `up`


def metrics_urls(port: int) -> list[str]:
    """The line ``up`` and ``status`` print for a Prometheus endpoint (none when port is 0)."""
    return [f"metrics http://127.0.0.1:{port}/metrics"] if port else []
