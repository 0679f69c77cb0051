"""Managed processes: each in its own process group, with a log file and a PID file.

Stopping goes by process group so that children (Spark's JVM under spark-class,
Airflow standalone's scheduler, triggerer, api-server...) go too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def start(argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """Start argv detached in a new session (its own process group), output to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0): reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return _not_zombie(pid)


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (None when the process is
    gone): [0] state, [1] parent, [2] process group, [11] / [12] user / system CPU ticks,
    [19] start time in ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None when gone or a zombie): with
    the boot id, what tells a process apart from a later one that got the same pid."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def boot_id() -> str:
    """This boot's random id (a pid or a start time from another boot means nothing now)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def owns_group(pgid: int, leader_start_ticks: int | None, boot: str | None) -> bool:
    """True when process group ``pgid`` is still the one whose leader started at
    ``leader_start_ticks`` during boot ``boot``: signalling it reaches what we started.

    After a reboot (another boot id) the id may be any program's. In the same boot a live
    leader must have the recorded start time (else its pid was reused); a dead leader's group
    id cannot be handed out again while members of the group live, so they are ours. With no
    boot recorded (an older record) only a live leader with the recorded start time counts."""
    if leader_start_ticks is None or (boot is not None and boot != boot_id()):
        return False
    ticks = start_ticks(pgid)
    if ticks is not None:
        return ticks == leader_start_ticks
    return boot is not None and bool(group_members(pgid))


def _not_zombie(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _all_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, ``stat_fields``) of every process."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))) is not None:
            yield int(entry.name), fields


def group_members(pgid: int) -> list[int]:
    """PIDs whose process group is pgid (from /proc), zombies excluded."""
    return [pid for pid, fields in _all_stats() if fields[0] != "Z" and int(fields[2]) == pgid]


def descendants(root: int) -> set[int]:
    """PIDs of the live descendants of ``root`` (not root itself), from /proc."""
    children: dict[int, list[int]] = {}
    for pid, fields in _all_stats():
        children.setdefault(int(fields[1]), []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def command_line(pid: int) -> str:
    """The process's command line as ``ps`` shows it to any user ('' when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _socket_address(hex_addr: str) -> tuple[str, int]:
    """'0100007F:1F90' (/proc/net/tcp, host byte order per 32-bit word) -> ('127.0.0.1', 8080);
    an IPv4-mapped IPv6 address (a JVM's dual-stack socket) as its IPv4 address."""
    addr, port = hex_addr.split(":")
    raw = b"".join(int(addr[i:i + 8], 16).to_bytes(4, "little") for i in range(0, len(addr), 8))
    if raw[:12] == b"\0" * 10 + b"\xff\xff":  # IPv4-mapped (a JVM's dual-stack socket)
        raw = raw[12:]
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw), int(port, 16)


def listening_sockets(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state that one of ``pids`` holds,
    IPv4 and IPv6 (an address of 0.0.0.0 or :: listens on every interface)."""
    listening: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A":  # TCP_LISTEN
                listening[cols[9]] = _socket_address(cols[1])
    found = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and (inode := target[8:-1]) in listening:
                found.add((pid, *listening[inode]))
    return sorted(found)


def tree_stats(root: int) -> dict[int, list[str]]:
    """``stat_fields`` of ``root`` and of its live descendants, from one walk of /proc."""
    stats = dict(_all_stats())
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            out[pid] = stats[pid]
        todo += children.get(pid, [])
    return out


def cpu_seconds(fields: list[str]) -> float:
    """CPU seconds (user + system) of a process, from its ``stat_fields``."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and its live descendants."""
    return sum(cpu_seconds(fields) for fields in tree_stats(root).values())


def stop_group(pgid: int, timeout_s: float = 15.0) -> bool:
    """SIGTERM the group, then SIGKILL what is left after timeout_s. True when none is left."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            reap(pgid)
            return True
        except PermissionError:
            return False
        if wait_until(lambda: not group_members(pgid), wait, 0.1):
            reap(pgid)
            return True
    return not group_members(pgid)


def reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is a finished child of ours (no zombie left)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def first_busy(ports: Iterable[int], host: str = "127.0.0.1") -> int | None:
    for port in ports:
        if port_open(port, host):
            return port
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return port
    return None


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
