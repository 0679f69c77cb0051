"""chaussettes.supervisor: start/stop, the checkpoint lock, health, restart with backoff.

The process-level tests supervise a small stand-in detector (``STANDIN`` below) that writes
the status-file contract (``schemas.STATUS_KEYS``) after every "micro-batch" and resumes its
batch numbering from its checkpoint folder, as Spark does. The real detector under the
supervisor is exercised by tests/test_dag_streaming_detector.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chaussettes import atomicfile, procs, sparkconf
from chaussettes import settings as settings_mod
from chaussettes import supervisor as sv
from chaussettes.schemas import STATUS_KEYS

STANDIN = r'''
"""A stand-in detector: writes the status contract every INTERVAL s (modes: ok, stall, fail)."""
import argparse, datetime as dt, json, os, signal, sys, time
from pathlib import Path
from chaussettes import settings

p = argparse.ArgumentParser()
p.add_argument("--checkpoint", required=True)
p.add_argument("--interval", type=float, default=0.3)
p.add_argument("--mode", default="ok")
p.add_argument("--child", action="store_true", help="also start a child in the same group")
a = p.parse_args()
s = settings.load()
status_path = s.detector_status_path
ckpt = Path(a.checkpoint); ckpt.mkdir(parents=True, exist_ok=True)
batch_file = ckpt / "last_batch"
batch = int(batch_file.read_text()) if batch_file.exists() else -1
iso = lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
started = iso()
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
if a.child:
    import subprocess
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])

def write(state, batch, lag, error=None):
    doc = {k: None for k in STATUS_KEYS_HERE}
    doc.update(state=state, pid=os.getpid(), started_at=started, updated_at=iso(), batch_id=batch,
               input_rows=10, input_rows_per_s=20.0, processed_rows_per_s=30.0,
               end_offsets={"http-logs": {"0": 10 * (batch + 1)}}, lag={"http-logs": {"0": lag}},
               total_lag=lag, thresholds_version=0, error=error, recent_global_windows=[])
    status_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = status_path.with_suffix(".tmp"); tmp.write_text(json.dumps(doc)); os.replace(tmp, status_path)

while not stop:
    batch += 1
    batch_file.write_text(str(batch))
    if a.mode == "fail" and batch >= 1:
        write("failed", batch, 0, error="boom: the query died")
        sys.exit(1)
    write("running", batch, 500 if a.mode == "stall" else 0)
    if a.mode == "stall":
        while not stop:
            time.sleep(0.1)  # alive, never another batch, input waiting
        break
    time.sleep(a.interval)
write("stopped", batch, 0)
'''.replace("STATUS_KEYS_HERE", repr(STATUS_KEYS))


@pytest.fixture
def conf(tmp_path):
    return settings_mod.load(env={}, home=tmp_path / "home")


@pytest.fixture
def standin(tmp_path):
    path = tmp_path / "standin_detector.py"
    path.write_text(STANDIN)
    return path


def make_sup(conf, standin, *extra, **kw) -> sv.Supervisor:
    ckpt = Path(conf.checkpoint_dir) / "detector"
    argv = [sys.executable, str(standin), "--checkpoint", str(ckpt), *extra]
    kw.setdefault("stall_after_s", 2.0)
    kw.setdefault("startup_grace_s", 10.0)
    kw.setdefault("backoff_base_s", 0.5)
    kw.setdefault("stop_timeout_s", 5.0)
    return sv.Supervisor(conf, argv=argv, query_kafka_lag=False, **kw)


def wait_for(pred, timeout=20.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.fixture
def cleanup():
    sups = []
    yield sups.append
    for s in sups:
        s.stop(timeout_s=2.0)


# --------------------------------------------------------------------------- pure logic

NOW = 1_800_000_000.0


def _status(age, batch=5, lag=0, state="running"):
    return {"state": state, "updated_at": sv._iso(NOW - age), "batch_id": batch, "total_lag": lag,
            "error": "x" if state == "failed" else None}


@pytest.mark.parametrize("status,alive,started_ago,expected", [
    (_status(3), True, 100, sv.HEALTHY),
    (_status(500, lag=0), True, 1000, sv.HEALTHY),  # idle: nothing to read
    (_status(500, lag=40), True, 1000, sv.STALLED),  # input waits, no batch
    (_status(3), False, 100, sv.DEAD),
    (_status(3, state="failed"), True, 100, sv.DEAD),
    (None, True, 30, sv.STARTING),
    (None, True, 400, sv.STALLED),  # never a first batch
    (_status(3), True, 1, sv.STARTING),  # status older than the process: the last run's
    (None, False, None, sv.DEAD),
])
def test_assess(status, alive, started_ago, expected):
    started = NOW - started_ago if started_ago is not None else None
    h = sv.assess(status, alive=alive, started_at=started, now=NOW, stall_after_s=120,
                  startup_grace_s=180)
    assert h.state == expected, h.reason
    assert h.reason


def test_assess_uses_fresh_kafka_lag_over_the_status_figure():
    status = {**_status(500, lag=0), "end_offsets": {"http-logs": {"0": 100, "1": 50}}}
    lag = sv.total_lag(status, {"http-logs": {"0": 130, "1": 50}})
    assert lag == 30
    h = sv.assess(status, alive=True, started_at=NOW - 1000, now=NOW, lag=lag, stall_after_s=120)
    assert h.state == sv.STALLED and "30 records wait" in h.reason


def test_backoff_doubles_and_forgets_old_restarts():
    assert sv.backoff_delay([], NOW) == 0
    assert sv.backoff_delay([NOW - 1], NOW, base_s=10) == pytest.approx(9)
    assert sv.backoff_delay([NOW - 3, NOW - 1], NOW, base_s=10) == pytest.approx(19)
    assert sv.backoff_delay([NOW - i for i in range(1, 12)], NOW, base_s=10, max_s=300) \
        == pytest.approx(299)
    assert sv.backoff_delay([NOW - 5000], NOW, window_s=1800) == 0


# --------------------------------------------------------------------------- processes


def test_start_is_idempotent_and_the_lock_forbids_a_second_detector(conf, standin, tmp_path, cleanup):
    s = make_sup(conf, standin)
    cleanup(s)
    info = s.start()
    assert info["started"] and s.running() and s.lock_held()
    assert s.start()["started"] is False  # already running: nothing started
    # Another supervisor (another run folder) on the same checkpoint must refuse.
    other_conf = conf.replace(run_dir=tmp_path / "other-run")
    other = sv.Supervisor(other_conf, checkpoint=s.checkpoint, argv=s.argv, query_kafka_lag=False)
    with pytest.raises(sv.SupervisorError, match="checkpoint lock"):
        other.start()
    h = wait_for(lambda: (x := s.check()).state == sv.HEALTHY and x)
    assert h.pid == info["pid"] and h.batch_id is not None
    status = json.loads(conf.detector_status_path.read_text())
    assert set(STATUS_KEYS) <= set(status)


def test_killed_detector_is_dead_then_restarted_and_progresses(conf, standin, cleanup):
    s = make_sup(conf, standin)
    cleanup(s)
    first = s.start()
    wait_for(lambda: s.check().state == sv.HEALTHY)
    before = wait_for(lambda: (b := s.check().batch_id) and b >= 3 and b)
    os.killpg(first["pgid"], signal.SIGKILL)
    h = wait_for(lambda: (x := s.check()).state == sv.DEAD and x)
    assert "not running" in h.reason and not s.lock_held()
    again = s.restart(h.reason)
    assert again["pid"] != first["pid"] and again["old_pid"] == first["pid"]
    after = wait_for(lambda: (x := s.check()).state == sv.HEALTHY and (x.batch_id or 0) > before and x)
    assert after.batch_id > before  # resumed from its checkpoint, not from 0
    assert [e["action"] for e in s.events()] == ["start", "stop", "start", "restart"]
    assert s.state()["total_restarts"] == 1


def test_stalled_detector_is_detected_and_restarted(conf, standin, cleanup):
    s = make_sup(conf, standin, "--mode", "stall")
    cleanup(s)
    s.start()
    h = wait_for(lambda: (x := s.check()).state == sv.STALLED and x, timeout=15)
    assert "records wait" in h.reason
    old = s.pid_info()["pid"]
    new = s.restart(h.reason)
    assert new["pid"] != old and not procs.start_ticks(old)


def test_failed_status_is_dead(conf, standin, cleanup):
    s = make_sup(conf, standin, "--mode", "fail")
    cleanup(s)
    s.start()
    h = wait_for(lambda: (x := s.check()).state == sv.DEAD and x)
    assert "boom" in h.reason or "not running" in h.reason


def test_restart_backs_off(conf, standin, cleanup):
    s = make_sup(conf, standin, backoff_base_s=30.0)
    cleanup(s)
    s.start()
    s.restart("first")  # immediate
    with pytest.raises(sv.SupervisorError, match="backoff"):
        s.restart("second", wait=False)
    assert 25 < s.next_restart_in() <= 30


def test_stop_takes_the_whole_process_group(conf, standin, cleanup):
    s = make_sup(conf, standin, "--child")
    cleanup(s)
    info = s.start()
    wait_for(lambda: len(procs.group_members(info["pgid"])) >= 2)
    assert s.stop()
    assert procs.group_members(info["pgid"]) == [] and not s.running()


def test_a_saved_group_that_is_not_the_detectors_any_more_is_never_signalled(conf, standin, cleanup):
    """After a reboot (or once pids wrapped) the saved id can be another program's: stop,
    restart and start must leave it alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             start_new_session=True)
    try:
        s = make_sup(conf, standin)
        cleanup(s)
        s.state_dir.mkdir(parents=True, exist_ok=True)
        ticks = procs.start_ticks(other.pid)
        records = [
            {"start_ticks": ticks, "boot_id": "an-earlier-boot"},  # same pid and time, other boot
            {"start_ticks": ticks - 1, "boot_id": procs.boot_id()},  # this boot, pid reused
        ]
        for record in records:
            atomicfile.write_json(s.pid_path, {"pid": other.pid, "pgid": other.pid, **record})
            assert not s.running()
            assert s.stop() is True and not s.pid_path.exists()
            assert other.poll() is None, f"{record} killed another program's group"
        atomicfile.write_json(s.pid_path, {"pid": other.pid, "pgid": other.pid, **records[1]})
        started = s.restart("the saved pid is someone else's")
        assert other.poll() is None and started["pid"] != other.pid
        assert s.events()[0]["note"].startswith(f"process group {other.pid} is not the detector's")
    finally:
        other.kill()
        other.wait(5)


def test_children_left_by_a_dead_detector_are_stopped_before_a_restart(conf, standin, cleanup):
    s = make_sup(conf, standin, "--child")
    cleanup(s)
    first = s.start()
    members = wait_for(lambda: (m := procs.group_members(first["pgid"])) and len(m) >= 2 and m)
    os.kill(first["pid"], signal.SIGKILL)  # the main process only: its child lives on in the group
    wait_for(lambda: procs.start_ticks(first["pid"]) is None)
    assert procs.group_members(first["pgid"]) == [p for p in members if p != first["pid"]]
    s.restart("main process killed")
    assert procs.group_members(first["pgid"]) == []


def test_cli_check_and_bad_input(conf):
    env = {**os.environ, **conf.as_env()}
    r = subprocess.run([sys.executable, "-m", "chaussettes.supervisor", "check"], env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and r.stdout.startswith("dead: ")
    r = subprocess.run([sys.executable, "-m", "chaussettes.supervisor", "frobnicate"], env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_detector_env_bounds_malloc_arenas_unless_the_environment_sets_them(conf, monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    env = sv.Supervisor(conf).detector_env()
    assert env["MALLOC_ARENA_MAX"] == sparkconf.MALLOC_ARENA_MAX and env["SPARK_LOCAL_IP"] == conf.bind_host
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert sv.Supervisor(conf).detector_env()["MALLOC_ARENA_MAX"] == "4"


def test_default_command_is_the_detector_and_leaves_cores_to_the_calibration(conf):
    argv = sv.Supervisor(conf).detector_argv()
    assert argv[0].endswith("spark-submit") and argv[argv.index("--master") + 1] == conf.spark_master
    assert "spark.cores.max=1" in argv
    assert f"spark.driver.extraJavaOptions={sparkconf.JVM_OPTIONS}" in argv  # set at JVM launch
    assert argv[argv.index("--checkpoint") + 1] == str(conf.checkpoint_dir / "detector")
    assert any(a.endswith("jobs/stream_detector.py") for a in argv)
    local = sv.Supervisor(conf, master="local[2]", trigger="5s", extra_args=["--no-archive"]).detector_argv()
    assert "spark.cores.max=1" not in local and local[-3:] == ["--checkpoint", local[-2], "--no-archive"]
    assert local[local.index("--trigger") + 1] == "5s"
