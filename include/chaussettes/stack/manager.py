"""Start, check and stop the local stack.

Each component runs in its own process group; its PID, ports and log file are
recorded in ``<run_dir>/stack.json``. ``up`` never starts a component twice, checks
every port before starting anything, and on a failure stops what it started and
shows the end of the failing component's log. ``down`` stops by process group and
verifies that no process and no port is left.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chaussettes import atomicfile, procs
from chaussettes.settings import Settings
from chaussettes.stack import components as all_components
from chaussettes.stack.base import Component


class StackError(RuntimeError):
    """A failure to report in one line (the CLI prints it and exits non-zero)."""


@dataclass
class Running:
    name: str
    pid: int
    ports: list[int]
    log: str
    started_at: float
    start_ticks: int | None = None  # the leader's start time and the boot: after a reboot the
    boot_id: str | None = None  # pid may be another program's (procs.owns_group)

    @property
    def ours(self) -> bool:
        """Its process group is still the one `up` started (records without a start time,
        written before it was kept, are trusted as before)."""
        return self.start_ticks is None or procs.owns_group(self.pid, self.start_ticks, self.boot_id)

    @property
    def alive(self) -> bool:
        if self.pid == 0:  # not ours to run: see Component.argv
            return True
        return self.ours and (bool(procs.group_members(self.pid)) or procs.alive(self.pid))


def _state_path(settings: Settings) -> Path:
    return settings.run_dir / "stack.json"


def load_state(settings: Settings) -> dict[str, Running]:
    try:
        raw = json.loads(_state_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return {name: Running(**entry) for name, entry in raw.items()}


def _save_state(settings: Settings, state: dict[str, Running]) -> None:
    atomicfile.write_json(_state_path(settings), {n: r.__dict__ for n, r in state.items()})


def _healthy(comp: Component, host: str) -> bool:
    if comp.healthy is not None:
        return comp.healthy()
    return all(procs.port_open(port, host) for port, _ in comp.ports)


def up(settings: Settings, only: set[str] | None = None,
       echo: Callable[[str], None] = print,
       wanted: list[Component] | None = None) -> dict[str, Running]:
    t0 = time.monotonic()
    state = load_state(settings)
    wanted = all_components(settings, only) if wanted is None else wanted
    to_start: list[Component] = []
    for comp in wanted:
        running = state.get(comp.name)
        if running and running.alive and (comp.argv is not None or _healthy(comp, settings.bind_host)):
            echo(f"{comp.name}: already running" + (f" (pid {running.pid})" if running.pid else ""))
        else:
            to_start.append(comp)
    if not to_start:
        echo("the stack is already up")
        return state

    for comp in to_start:
        for port, setting in comp.ports:
            if procs.first_busy([port], settings.bind_host) is not None:
                raise StackError(
                    f"port {port} for {comp.name} is already in use; set {setting} to another port"
                )

    logs = settings.run_dir / "logs"
    started: list[str] = []
    failed: str | None = None
    try:
        for comp in to_start:
            failed = comp.name
            t = time.monotonic()
            if comp.prepare:
                comp.prepare()
            log = logs / f"{comp.name}.log"
            env = {**os.environ, **settings.as_env(), **comp.env}
            proc = procs.start(comp.argv, log, env=env, cwd=comp.cwd) if comp.argv else None
            state[comp.name] = Running(comp.name, proc.pid if proc else 0,
                                       [p for p, _ in comp.ports], str(log), time.time(),
                                       procs.start_ticks(proc.pid) if proc else None,
                                       procs.boot_id() if proc else None)
            started.append(comp.name)
            _save_state(settings, state)

            def ready(proc=proc, comp=comp) -> bool:
                if proc is not None and proc.poll() is not None:
                    raise StackError(f"{comp.name} exited with code {proc.returncode}")
                return _healthy(comp, settings.bind_host)

            if not procs.wait_until(ready, comp.start_timeout_s, 0.5):
                raise StackError(f"{comp.name} did not become healthy within {comp.start_timeout_s:g}s")
            if comp.after_start:
                comp.after_start()
            echo(f"{comp.name}: up in {time.monotonic() - t:.1f}s" + (f" (pid {proc.pid})" if proc else ""))
    except BaseException as exc:
        by_name = {c.name: c for c in to_start}
        for name in reversed(started):
            _stop(by_name[name], state[name])
            state.pop(name, None)
        _save_state(settings, state)
        if failed and isinstance(exc, Exception):
            log = logs / f"{failed}.log"
            tail = f" Last lines of {failed}'s log:\n{procs.tail(log, 15)}" if log.exists() else ""
            raise StackError(f"{failed}: {exc}; stopped what was started.{tail}") from None
        raise

    echo(f"stack up in {time.monotonic() - t0:.1f}s")
    for comp in wanted:
        for url in comp.urls:
            echo(f"  {comp.name:13} {url}")
        for note in comp.notes:
            echo(f"  {'':13} {note}")
    echo(f"  logs and pids: {settings.run_dir}")
    return state


def _stop(comp: Component | None, running: Running) -> bool:
    """Stop one component; True when nothing of it is left."""
    if running.pid == 0:
        if comp is not None and comp.stop is not None:
            comp.stop()
        return True
    if not running.ours:  # its group is gone and the id is another program's now
        return True
    return procs.stop_group(running.pid)


def status(settings: Settings) -> list[tuple[str, str, str]]:
    """(component, health, detail) for every known component."""
    state = load_state(settings)
    rows = []
    for comp in all_components(settings):
        running = state.get(comp.name)
        if running is None:
            rows.append((comp.name, "stopped", ""))
        elif not running.alive:
            rows.append((comp.name, "dead", f"pid {running.pid} gone; log {running.log}"))
        else:
            try:
                health = "healthy" if _healthy(comp, settings.bind_host) else "unhealthy"
            except Exception as exc:  # noqa: BLE001 — a health probe must never break status
                health = f"unhealthy ({exc})"
            urls = "; ".join(comp.urls)
            pid = f"pid {running.pid}  " if running.pid else ""
            rows.append((comp.name, health, f"{pid}{urls}"))
    return rows


def down(settings: Settings, echo: Callable[[str], None] = print) -> None:
    state = load_state(settings)
    if not state:
        return
    leftovers = []
    known = {c.name: c for c in all_components(settings)}
    order = list(known) + [n for n in state if n not in known]
    names = sorted(state, key=order.index, reverse=True)
    ours = [r for r in state.values() if r.ours]  # a port of another program's is not ours to close
    for name in names:
        running = state[name]
        if not _stop(known.get(name), running):
            leftovers.append(f"{name} (pgid {running.pid})")
        else:
            echo(f"{name}: stopped")
    still_open = [p for r in ours for p in r.ports
                  if procs.wait_until(lambda p=p: not procs.port_open(p, settings.bind_host), 10) is False]
    if leftovers or still_open:
        raise StackError(f"could not stop {', '.join(leftovers) or 'every process'}; "
                         f"ports still open: {still_open or 'none'}")
    _state_path(settings).unlink(missing_ok=True)
