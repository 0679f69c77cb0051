"""Keeps the streaming detector running: start, stop, health, restart with backoff.

The detector runs detached (its own session and process group, output to a log file), so
it outlives the Airflow task that started it. Files, under ``<run_dir>/detector/``::

    detector.pid.json   pid, process group, start time (ticks since boot + boot id), argv,
                        checkpoint of the running job: a group is only signalled while it is
                        still that job's (``procs.owns_group``), never another program's
    detector.log        its stdout and stderr (appended across restarts)
    supervisor.json     restart history and backoff state (kept across tasks and processes)
    events.jsonl        one line per start / stop / restart, with the reason

**Never two detectors on one checkpoint**: ``<checkpoint>.lock`` is flock'ed before the
start and the locked descriptor is inherited by the detector (``spark-submit`` execs the
JVM, which keeps it), so the lock is held exactly as long as the job lives, even through
a ``kill -9`` of the supervisor. A second ``start`` on the same checkpoint finds it held.

**Health** (``check()``) reads the detector status file (``settings.detector_status_path``,
contract in ``chaussettes.schemas.STATUS_KEYS``) and answers one of:

- ``healthy``  alive, and a micro-batch completed within ``stall_after_s``, or no new data;
- ``starting`` alive, no micro-batch since this process started, within ``startup_grace_s``;
- ``stalled``  alive, but no micro-batch for ``stall_after_s`` while input waits (lag > 0),
  or no first micro-batch after ``startup_grace_s``;
- ``dead``     not running (no process, lock free), or its status says ``failed``.

**Backoff**: the first restart is immediate; each further restart within
``backoff_window_s`` waits twice as long as the previous (``backoff_base_s`` …
``backoff_max_s``). The state is in ``supervisor.json``.

CLI::

    python -m chaussettes.supervisor start|stop|status|restart|check [--master local[2]]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chaussettes import atomicfile, procs, security, sparkconf

HEALTHY, STARTING, STALLED, DEAD = "healthy", "starting", "stalled", "dead"
STATES = (HEALTHY, STARTING, STALLED, DEAD)

DEFAULT_TRIGGER = "10s"
DEFAULT_CHECKPOINT = "detector"  # the folder under settings.checkpoint_dir
DEFAULT_STALL_AFTER_S = 180.0
DEFAULT_STARTUP_GRACE_S = 180.0
DEFAULT_STOP_TIMEOUT_S = 30.0
BACKOFF_BASE_S = 10.0
BACKOFF_MAX_S = 300.0
BACKOFF_WINDOW_S = 1800.0


class SupervisorError(Exception):
    """The supervisor cannot do what was asked; the message is one line and says why."""


# --------------------------------------------------------------------------- small helpers


def _now() -> float:
    return time.time()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(value: Any) -> float | None:
    """ISO-8601 (``Z``/offset/naive=UTC) or epoch seconds → epoch seconds, None if unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        t = dt.datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def total_lag(status: dict | None, latest_offsets: dict | None = None) -> int | None:
    """Records waiting: from fresh end offsets when given, else the status's own figure."""
    if not status:
        return None
    if latest_offsets:
        done = status.get("end_offsets") or {}
        lag = 0
        for topic, parts in latest_offsets.items():
            for part, end in parts.items():
                seen = (done.get(topic) or {}).get(str(part), (done.get(topic) or {}).get(part))
                lag += max(0, int(end) - int(seen or 0))
        return lag
    value = status.get("total_lag")
    return int(value) if isinstance(value, (int, float)) else None


# --------------------------------------------------------------------------- health (pure)


@dataclass
class Health:
    """One health reading; ``state`` in STATES, ``reason`` one line for logs and the UI."""

    state: str
    reason: str
    alive: bool = False
    pid: int | None = None
    batch_id: int | None = None
    heartbeat_age_s: float | None = None
    lag: int | None = None
    input_rows_per_s: float | None = None
    thresholds_version: int | None = None
    uptime_s: float | None = None
    checked_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.state in (HEALTHY, STARTING)

    def as_dict(self) -> dict:
        return asdict(self)


def assess(
    status: dict | None,
    *,
    alive: bool,
    started_at: float | None,
    now: float,
    lag: int | None = None,
    stall_after_s: float = DEFAULT_STALL_AFTER_S,
    startup_grace_s: float = DEFAULT_STARTUP_GRACE_S,
    pid: int | None = None,
) -> Health:
    """Classify the detector from its status file and whether its process is alive (pure)."""
    h = Health(state=DEAD, reason="", alive=alive, pid=pid, checked_at=_iso(now))
    updated = parse_time(status.get("updated_at")) if status else None
    # A status written before this process started is the previous run's: ignore its heartbeat.
    fresh = status is not None and updated is not None and (
        started_at is None or updated >= started_at - 1.0)
    if status:
        h.batch_id = status.get("batch_id") if fresh else None
        h.heartbeat_age_s = round(now - updated, 1) if updated is not None else None
        h.input_rows_per_s = status.get("input_rows_per_s")
        h.thresholds_version = status.get("thresholds_version")
    h.lag = lag if lag is not None else (total_lag(status) if fresh else None)
    h.uptime_s = round(now - started_at, 1) if started_at else None

    if not alive:
        h.state, h.reason = DEAD, "the detector process is not running"
        return h
    if fresh and status.get("state") == "failed":
        h.state = DEAD
        h.reason = f"the detector reports it failed: {status.get('error') or 'no error given'}"
        return h
    if not fresh:
        since = now - started_at if started_at else None
        if since is not None and since <= startup_grace_s:
            h.state, h.reason = STARTING, f"started {since:.0f}s ago, no micro-batch yet"
        else:
            h.state = STALLED
            h.reason = (f"no micro-batch since it started {since:.0f}s ago "
                        f"(grace {startup_grace_s:.0f}s)" if since is not None
                        else "alive but no status file")
        return h
    age = now - updated
    if age <= stall_after_s:
        h.state, h.reason = HEALTHY, (f"micro-batch {h.batch_id} {age:.0f}s ago, lag "
                                      f"{h.lag if h.lag is not None else 'unknown'}")
        return h
    if h.lag is not None and h.lag > 0:
        h.state = STALLED
        h.reason = (f"no micro-batch for {age:.0f}s (limit {stall_after_s:.0f}s) while "
                    f"{h.lag} records wait")
        return h
    h.state, h.reason = HEALTHY, f"idle: no new input for {age:.0f}s, lag {h.lag}"
    return h


def backoff_delay(restarts_at: list[float], now: float, *, base_s: float = BACKOFF_BASE_S,
                  max_s: float = BACKOFF_MAX_S, window_s: float = BACKOFF_WINDOW_S) -> float:
    """Seconds to wait before the next restart, given the recent restart times (pure).

    No recent restart: 0. Then base, 2×base, 4×base … (capped), counted from the last one.
    """
    recent = sorted(t for t in restarts_at if now - t <= window_s)
    if not recent:
        return 0.0
    wanted = min(max_s, base_s * 2 ** (len(recent) - 1))
    return max(0.0, recent[-1] + wanted - now)


# --------------------------------------------------------------------------- the supervisor


def detector_cores(settings) -> int:
    """Cores of the standalone Spark worker the detector may take (the rest: calibration)."""
    return max(1, int(settings.spark_worker_cores) // 2)


def calibration_cores(settings) -> int:
    return max(1, int(settings.spark_worker_cores) - detector_cores(settings))


@dataclass
class Supervisor:
    """Start/stop/check/restart the detector of one settings + checkpoint."""

    settings: Any
    checkpoint: Path | None = None
    argv: list[str] | None = None  # None: the standard spark-submit line (detector_argv)
    master: str | None = None  # None: settings.spark_master
    trigger: str = DEFAULT_TRIGGER
    source: str = "kafka"
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None  # added to os.environ + settings.as_env()
    stall_after_s: float = DEFAULT_STALL_AFTER_S
    startup_grace_s: float = DEFAULT_STARTUP_GRACE_S
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_max_s: float = BACKOFF_MAX_S
    backoff_window_s: float = BACKOFF_WINDOW_S
    query_kafka_lag: bool = True

    def __post_init__(self) -> None:
        if self.checkpoint is None:
            self.checkpoint = Path(self.settings.checkpoint_dir) / DEFAULT_CHECKPOINT
        self.checkpoint = Path(self.checkpoint)

    # ---- paths
    @property
    def state_dir(self) -> Path:
        return Path(self.settings.run_dir) / "detector"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "detector.pid.json"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "detector.log"

    @property
    def state_path(self) -> Path:
        return self.state_dir / "supervisor.json"

    @property
    def events_path(self) -> Path:
        return self.state_dir / "events.jsonl"

    @property
    def hold_path(self) -> Path:
        return self.state_dir / "held"

    @property
    def lock_path(self) -> Path:
        return self.checkpoint.with_name(self.checkpoint.name + ".lock")

    @property
    def status_path(self) -> Path:
        return Path(self.settings.detector_status_path)

    # ---- the command line
    def detector_argv(self) -> list[str]:
        if self.argv:
            return list(self.argv)
        command = getattr(self.settings, "detector_command", "")
        if command:  # CHAUSSETTES_DETECTOR_COMMAND: the environment's choice, never a run's
            return shlex.split(command)
        repo = Path(__file__).resolve().parents[2]
        spark_submit = Path(sys.executable).with_name("spark-submit")
        master = self.master or self.settings.spark_master
        conf = sparkconf.submit_conf()
        if master.startswith("spark://"):
            # A standalone app takes every free core by default: leave the calibration its share.
            conf += ["--conf", f"spark.cores.max={detector_cores(self.settings)}"]
        return [
            str(spark_submit) if spark_submit.exists() else "spark-submit",
            "--master", master,
            "--name", "chaussettes-stream-detector",
            *conf,
            str(repo / "jobs" / "stream_detector.py"),
            "--source", self.source,
            "--trigger", self.trigger,
            "--checkpoint", str(self.checkpoint),
            *self.extra_args,
        ]

    def detector_env(self) -> dict[str, str]:
        env = {**os.environ, **self.settings.as_env()}
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Spark must find this venv's tools whatever PATH Airflow was started with.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(sparkconf.process_env(self.settings))  # its driver: bind host only, malloc arenas
        # Security on: the detector's own client certificate and the Spark secret.
        env.update(security.client_env(self.settings, "detector"))
        env.update(security.spark_env(self.settings))
        env.update(self.env or {})
        return env

    # ---- process state
    def pid_info(self) -> dict | None:
        return atomicfile.read_json(self.pid_path)

    def lock_held(self) -> bool:
        """True when some process holds the checkpoint lock (a detector runs on it)."""
        if not self.lock_path.exists():
            return False
        with open(self.lock_path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False

    def _main_alive(self, info: dict | None) -> bool:
        if not info or not isinstance(info.get("pid"), int):
            return False
        pid = info["pid"]
        procs.reap(pid)
        ticks = procs.start_ticks(pid)
        same_boot = info.get("boot_id") in (None, procs.boot_id())
        return ticks is not None and same_boot and ticks == info.get("start_ticks", ticks)

    @staticmethod
    def _ours(info: dict) -> bool:
        """The pid file's process group is still the detector started from it, not a program
        that got its id since (after a reboot, or once pids wrapped around)."""
        pgid = int(info.get("pgid") or info["pid"])
        return procs.owns_group(pgid, info.get("start_ticks"), info.get("boot_id"))

    def running(self) -> bool:
        """A detector is running on this checkpoint (its main process lives, or the lock is held)."""
        return self._main_alive(self.pid_info()) or self.lock_held()

    # ---- start / stop
    def start(self, reason: str = "start") -> dict:
        """Start the detector unless one already runs on this checkpoint; returns the pid info.

        Raises SupervisorError when another process holds the checkpoint lock.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        info = self.pid_info()
        if self._main_alive(info):
            return {**info, "started": False}
        if self.hold_path.exists():
            raise SupervisorError(f"the detector is held ({self.hold_path.read_text().strip()}): not starting")
        self._kill_leftovers(info)
        lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SupervisorError(
                    f"another detector holds the checkpoint lock {self.lock_path}: not starting a second"
                ) from None
            argv = self.detector_argv()
            with open(self.log_path, "ab") as log:
                log.write(f"\n=== {_iso(_now())} {reason}: {' '.join(argv)}\n".encode())
                log.flush()
                try:
                    proc = subprocess.Popen(
                        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        env=self.detector_env(), start_new_session=True, pass_fds=(lock_fd,),
                        cwd=str(self.state_dir),
                    )
                except OSError as exc:
                    raise SupervisorError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        finally:
            os.close(lock_fd)  # the child keeps its inherited copy (and so the lock)
        started = _now()
        info = {
            "pid": proc.pid, "pgid": proc.pid, "start_ticks": procs.start_ticks(proc.pid),
            "boot_id": procs.boot_id(),
            "started_at": started, "started_at_iso": _iso(started), "argv": argv,
            "checkpoint": str(self.checkpoint), "log": str(self.log_path), "reason": reason,
        }
        atomicfile.write_json(self.pid_path, info)
        self._event("start", reason=reason, pid=proc.pid)
        return {**info, "started": True}

    def hold(self, reason: str) -> None:
        """Forbid starts until release(): `make down` holds it so that a supervisor task still
        running cannot start the detector again behind it."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.hold_path.write_text(reason + "\n")

    def release(self) -> None:
        self.hold_path.unlink(missing_ok=True)

    def ensure_running(self) -> dict:
        """Start it if it is not running (the supervisor DAG's first task)."""
        return self.start(reason="ensure_running")

    def stop(self, reason: str = "stop", timeout_s: float | None = None) -> bool:
        """Stop the detector's whole process group (TERM, then KILL). True when none is left."""
        info = self.pid_info()
        if not info:
            return True
        pgid = int(info.get("pgid") or info["pid"])
        if not self._ours(info):
            # Nothing of ours is left under that id: signalling it could kill another program.
            procs.reap(pgid)
            foreign = procs.alive(pgid) or bool(procs.group_members(pgid))
            note = {"note": f"process group {pgid} is not the detector's any more: not signalled"}
            self._event("stop", reason=reason, pid=info.get("pid"), clean=True, **(note if foreign else {}))
            self.pid_path.unlink(missing_ok=True)
            return True
        ok = procs.stop_group(pgid, self.stop_timeout_s if timeout_s is None else timeout_s)
        self._event("stop", reason=reason, pid=info.get("pid"), clean=ok)
        with contextlib.suppress(FileNotFoundError):
            if ok:
                self.pid_path.unlink()
        return ok

    def _kill_leftovers(self, info: dict | None) -> None:
        # The main process is gone but children of the old group may live on (a Python driver
        # whose JVM was killed): they would still write to the checkpoint.
        if info and info.get("pgid") and self._ours(info) and procs.group_members(int(info["pgid"])):
            procs.stop_group(int(info["pgid"]), 5.0)

    # ---- health
    def latest_offsets(self) -> dict | None:
        """End offsets of the input topic now (for a lag that keeps growing while stalled)."""
        if not self.query_kafka_lag or self.source != "kafka":
            return None
        try:
            from confluent_kafka import Consumer, TopicPartition
        except ImportError:
            return None
        timeout = max(0.5, min(float(self.settings.kafka_timeout_s), 3.0))
        try:
            consumer = Consumer(self.settings.kafka_client_config(**{
                "group.id": "chaussettes-supervisor", "enable.auto.commit": False,
                "socket.timeout.ms": int(timeout * 1000)}))
        except Exception:  # noqa: BLE001 - a health check must answer even without Kafka
            return None
        try:
            topic = self.settings.topic_logs
            meta = consumer.list_topics(topic, timeout=timeout)
            parts = meta.topics.get(topic)
            if parts is None or parts.error is not None:
                return None
            out = {}
            for p in parts.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                out[str(p)] = high
            return {topic: out}
        except Exception:  # noqa: BLE001
            return None
        finally:
            consumer.close()

    def status(self) -> dict | None:
        return atomicfile.read_json(self.status_path)

    def check(self) -> Health:
        """A health reading now (see the module docstring for the states)."""
        info = self.pid_info()
        alive = self.running()
        status = self.status()
        lag = None
        updated = parse_time(status.get("updated_at")) if status else None
        # Fresh lag from Kafka only matters when no batch came for a while (stalled or idle?).
        if alive and status and (updated is None or _now() - updated > self.stall_after_s):
            lag = total_lag(status, self.latest_offsets())
        return assess(
            status, alive=alive, started_at=(info or {}).get("started_at"), now=_now(), lag=lag,
            stall_after_s=self.stall_after_s, startup_grace_s=self.startup_grace_s,
            pid=(info or {}).get("pid"),
        )

    # ---- restart with backoff
    def state(self) -> dict:
        return atomicfile.read_json(self.state_path) or {"restarts": []}

    def next_restart_in(self) -> float:
        """Seconds the backoff asks to wait before the next restart (0: now)."""
        times = [r["at"] for r in self.state().get("restarts", [])]
        return backoff_delay(times, _now(), base_s=self.backoff_base_s, max_s=self.backoff_max_s,
                             window_s=self.backoff_window_s)

    def restart(self, reason: str, *, wait: bool = True) -> dict:
        """Stop what is left and start again, after the backoff delay (sleeps when ``wait``).

        Raises SupervisorError when the backoff forbids it and ``wait`` is False.
        """
        delay = self.next_restart_in()
        if delay > 0:
            if not wait:
                raise SupervisorError(f"backoff: next restart allowed in {delay:.0f}s")
            time.sleep(delay)
        info = self.pid_info()
        old_pid = (info or {}).get("pid")
        self.stop(reason=f"restart: {reason}")
        if info:
            self._kill_leftovers(info)
        state = self.state()
        now = _now()
        recent = [r for r in state.get("restarts", []) if now - r["at"] <= self.backoff_window_s]
        entry = {"at": now, "at_iso": _iso(now), "reason": reason, "old_pid": old_pid,
                 "waited_s": round(delay, 1)}
        state["restarts"] = (recent + [entry])[-50:]
        state["total_restarts"] = int(state.get("total_restarts", 0)) + 1
        state["last_restart"] = entry
        atomicfile.write_json(self.state_path, state)
        started = self.start(reason=f"restart: {reason}")
        self._event("restart", reason=reason, old_pid=old_pid, pid=started["pid"],
                    waited_s=round(delay, 1))
        return {**started, "waited_s": round(delay, 1), "old_pid": old_pid}

    def _event(self, action: str, **fields: Any) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.events_path, "a") as fh:
            fh.write(json.dumps({"at": _iso(_now()), "action": action, **fields}, default=str) + "\n")

    def events(self) -> list[dict]:
        try:
            lines = self.events_path.read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaussettes.supervisor",
                                description="Start, stop and check the streaming detector.")
    p.add_argument("action", choices=("start", "stop", "status", "check", "restart"))
    p.add_argument("--master", help="Spark master (default: CHAUSSETTES_SPARK_MASTER)")
    p.add_argument("--trigger", default=DEFAULT_TRIGGER)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--stall-after", type=float, default=DEFAULT_STALL_AFTER_S)
    args = p.parse_args(argv)
    from chaussettes import settings as _settings

    try:
        sup = Supervisor(_settings.load(), checkpoint=args.checkpoint, master=args.master,
                         trigger=args.trigger, stall_after_s=args.stall_after)
        if args.action == "start":
            info = sup.start()
            word = "started" if info["started"] else "already running"
            print(f"detector {word}: pid {info['pid']}, log {sup.log_path}")
        elif args.action == "stop":
            print("detector stopped" if sup.stop() else "detector did not stop cleanly")
        elif args.action == "restart":
            info = sup.restart("cli")
            print(f"detector restarted: pid {info['pid']} (was {info['old_pid']})")
        else:
            h = sup.check()
            if args.action == "status":
                print(json.dumps({**h.as_dict(), "pid_info": sup.pid_info(), **sup.state()}, indent=2))
            else:
                print(f"{h.state}: {h.reason}")
                return 0 if h.ok else 1
    except (SupervisorError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
