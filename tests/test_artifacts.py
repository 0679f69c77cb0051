"""chaussettes.artifacts: the versioned thresholds store (publish, pin, keep K, corruption)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading

import pytest
from chaussettes import artifacts
from chaussettes import settings as settings_mod
from chaussettes import thresholds as th


@pytest.fixture
def conf(tmp_path):
    return settings_mod.load(env={}, home=tmp_path / "home")


@pytest.fixture
def store(conf):
    return artifacts.ThresholdsStore.from_settings(conf, keep=3)


def _candidate(tmp_path, name="candidate.json", rate=0.3, alert_rate=0.01):
    doc = copy.deepcopy(th.load_default().doc)
    doc["global"]["error_rate"] = rate
    doc["calibration"] = {"source": "files", "rows": 1000}
    doc["validation"] = {"alert_rate": alert_rate, "target": 0.01, "tolerance": 0.005}
    return th.write(doc, tmp_path / name)


def test_current_path_falls_back_to_defaults_then_follows_current(conf, store, tmp_path):
    assert artifacts.current_thresholds_path(conf) == conf.default_thresholds_path
    v = store.publish(_candidate(tmp_path))
    assert v.version == 1
    path = artifacts.current_thresholds_path(conf)
    assert path == store.root / "v1" / "seuils.json"
    loaded = th.load(path)
    assert loaded.version == 1 and loaded.threshold("global") == 0.3


def test_pinned_thresholds_path_wins(conf, store, tmp_path):
    store.publish(_candidate(tmp_path))
    pinned = conf.replace(thresholds_path=tmp_path / "mine.json")
    assert artifacts.current_thresholds_path(pinned) == tmp_path / "mine.json"


def test_current_pointing_at_a_missing_version_falls_back_to_defaults(conf, store):
    store.root.mkdir(parents=True)
    (store.root / "CURRENT").write_text("7\n")
    assert artifacts.current_thresholds_path(conf) == conf.default_thresholds_path
    (store.root / "CURRENT").write_text("garbage")
    assert artifacts.current_thresholds_path(conf) == conf.default_thresholds_path


def test_publish_numbers_versions_writes_meta_and_history(store, tmp_path):
    v1 = store.publish(_candidate(tmp_path, rate=0.3), run={"run_id": "r1"})
    v2 = store.publish(_candidate(tmp_path, rate=0.4), run={"run_id": "r2"})
    assert (v1.version, v2.version) == (1, 2)
    assert store.current_version() == 2
    meta = store.meta(2)
    data = (store.root / "v2" / "seuils.json").read_bytes()
    assert meta["sha256"] == artifacts.sha256_bytes(data)
    assert meta["validation"]["alert_rate"] == 0.01
    assert meta["run"] == {"run_id": "r2"}
    assert json.loads(data)["version"] == 2
    assert [h["version"] for h in store.history()] == [1, 2]
    # Published files are read-only: immutable by mode too.
    assert not os.access(store.root / "v1" / "seuils.json", os.W_OK) or os.geteuid() == 0


def test_a_version_is_fsynced_before_current_moves(store, tmp_path, monkeypatch):
    # A power cut cannot be staged here; what makes the files survive one can be observed: the
    # inodes fsynced before the rename that switches CURRENT (inodes follow renames).
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        return real_fsync(fd)

    def replace(src, dst, *a, **kw):
        events.append(("replace", os.path.basename(dst)))
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.publish(_candidate(tmp_path))
    switch = events.index(("replace", "CURRENT"))
    synced_before = {ino for kind, ino in events[:switch] if kind == "fsync"}
    for path in (store.root / "v1" / "seuils.json", store.root / "v1" / "meta.json",
                 store.root / "v1", store.root):
        assert path.stat().st_ino in synced_before, f"{path} not fsynced before CURRENT moved"


def _break(path, data=b""):
    """What a power cut leaves of a file that was never fsynced: nothing (or something else)."""
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_a_corrupt_current_version_is_refused_and_the_newest_good_one_used(conf, store, tmp_path):
    for rate in (0.3, 0.4, 0.5):
        store.publish(_candidate(tmp_path, rate=rate))
    good = artifacts.resolve_thresholds(conf)  # checked once, then cached by the files' stamps
    assert (good.version, good.refused) == (3, None)

    _break(store.root / "v3" / "seuils.json")
    in_force = artifacts.resolve_thresholds(conf)
    assert in_force.version == 2 and in_force.path == store.root / "v2" / "seuils.json"
    assert in_force.refused.startswith("CURRENT refused: version 3: checksum mismatch")
    assert in_force.refused.endswith("version 2, the newest good one, is used")
    assert artifacts.current_thresholds_path(conf) == store.root / "v2" / "seuils.json"
    assert store.current_version() == 3  # nothing is rewritten: the operator decides

    _break(store.root / "v2" / "meta.json")
    in_force = artifacts.resolve_thresholds(conf)
    assert in_force.version == 1 and "(and 1 older version(s) refused too)" in in_force.refused

    _break(store.root / "v1" / "seuils.json", b'{"version": 1')
    in_force = artifacts.resolve_thresholds(conf)
    assert in_force.path == conf.default_thresholds_path and in_force.version is None
    assert in_force.refused.endswith("no good version below it: the package defaults are used")


def test_versions_above_current_are_never_used(conf, store, tmp_path):
    for rate in (0.3, 0.4, 0.5):
        store.publish(_candidate(tmp_path, rate=rate))
    store.pin(2, reason="v3 too noisy")
    _break(store.root / "v2" / "seuils.json")
    assert artifacts.resolve_thresholds(conf).version == 1


def test_the_watcher_says_which_version_is_in_force_and_why(conf, store, tmp_path):
    store.publish(_candidate(tmp_path, rate=0.3))
    store.publish(_candidate(tmp_path, rate=0.4))
    _break(store.root / "v2" / "seuils.json")
    watcher = th.ThresholdsWatcher(lambda: artifacts.resolve_thresholds(conf))
    assert watcher.current().version == 1  # at start-up: not the defaults, the newest good one
    assert watcher.refused.startswith("CURRENT refused: version 2: checksum mismatch")
    assert watcher.error == watcher.refused and watcher.rejected is None
    store.pin(1, reason="v2 is corrupt")
    assert watcher.current().version == 1 and watcher.error is None


def test_publish_without_switching_current(store, tmp_path):
    store.publish(_candidate(tmp_path))
    v = store.publish(_candidate(tmp_path, rate=0.25), make_current=False)
    assert v.version == 2 and store.current_version() == 1


def test_pin_rolls_back_and_refuses_unknown_versions(store, tmp_path):
    store.publish(_candidate(tmp_path, rate=0.3))
    store.publish(_candidate(tmp_path, rate=0.4))
    store.pin(1, reason="bad v2")
    assert store.current_version() == 1
    assert store.history()[-1] == {**store.history()[-1], "action": "pin", "version": 1,
                                   "previous": 2, "reason": "bad v2"}
    with pytest.raises(artifacts.ArtifactError, match="version 9 does not exist"):
        store.pin(9)
    assert store.current_version() == 1


def test_pin_refuses_a_corrupt_version_and_leaves_current(store, tmp_path):
    store.publish(_candidate(tmp_path, rate=0.3))
    store.publish(_candidate(tmp_path, rate=0.4))
    f = store.root / "v1" / "seuils.json"
    os.chmod(f, 0o644)
    f.write_text(f.read_text().replace("0.3", "0.9"))  # valid JSON, wrong checksum
    with pytest.raises(artifacts.ArtifactError, match="checksum mismatch"):
        store.pin(1)
    assert store.current_version() == 2
    listed = {v.version: v for v in store.list()}
    assert not listed[1].ok and "checksum" in listed[1].error
    assert listed[2].ok and listed[2].current


def test_pin_refuses_a_schema_invalid_version_even_with_matching_checksum(store, tmp_path):
    store.publish(_candidate(tmp_path))
    store.publish(_candidate(tmp_path))
    f = store.root / "v1" / "seuils.json"
    os.chmod(f, 0o644)
    f.write_text('{"version": 1}')
    meta_path = store.root / "v1" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = artifacts.sha256_bytes(f.read_bytes())
    os.chmod(meta_path, 0o644)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(artifacts.ArtifactError, match="schema"):
        store.pin(1)
    assert store.current_version() == 2


def test_publish_refuses_an_invalid_candidate_and_stores_nothing(store, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 0, "window": {}}')
    with pytest.raises(artifacts.ArtifactError, match="schema"):
        store.publish(bad)
    assert store.versions() == [] and store.current_version() is None


def test_keeps_last_k_but_never_the_current_one(store, tmp_path):
    for i in range(4):
        store.publish(_candidate(tmp_path, rate=0.2 + i / 100))
    assert store.versions() == [2, 3, 4]
    store.pin(2)
    store.publish(_candidate(tmp_path), make_current=False)  # v5 stored; 2 is current, so it stays
    assert store.versions() == [2, 3, 4, 5] and store.current_version() == 2
    store.publish(_candidate(tmp_path))  # v6 current: 2 is no longer protected
    assert store.versions() == [4, 5, 6] and store.current_version() == 6


def test_concurrent_publishers_get_distinct_versions(store, tmp_path):
    cand = _candidate(tmp_path)
    big = artifacts.ThresholdsStore(store.backend, keep=50)
    results, errors = [], []

    def publish():
        try:
            results.append(big.publish(cand, make_current=True).version)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert big.current_version() in results


def test_keep_candidate_copies_it_for_inspection(store, tmp_path):
    kept = store.keep_candidate(_candidate(tmp_path), "manual__2026-11-23T00:00:00")
    assert kept.parent == store.root / "candidates" and th.load(kept).version == 0


def test_open_store_by_uri(tmp_path):
    s = artifacts.open_store((tmp_path / "x").as_uri())
    assert s.root == tmp_path / "x"
    with pytest.raises(artifacts.ArtifactError, match="unsupported"):
        artifacts.open_store("s3://bucket/thresholds")


def test_cli_publish_list_pin_and_bad_input(conf, tmp_path):
    env = {**os.environ, **conf.as_env()}
    cand = _candidate(tmp_path)
    run = lambda *a: subprocess.run([sys.executable, "-m", "chaussettes.artifacts", *a],
                                    env=env, capture_output=True, text=True, timeout=60, check=False)
    r = run("publish", str(cand))
    assert r.returncode == 0 and "published version 1" in r.stdout
    run("publish", str(cand))
    r = run("list")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["version"], x["current"]) for x in rows] == [(1, False), (2, True)]
    r = run("pin", "1")
    assert r.returncode == 0 and "current thresholds version: 1" in r.stdout
    r = run("current")
    assert r.stdout.strip().endswith("v1/seuils.json") and r.stderr == ""
    run("pin", "2")
    _break(artifacts.store_root(conf) / "v2" / "seuils.json")
    r = run("current")
    assert r.returncode == 0 and r.stdout.strip().endswith("v1/seuils.json")
    assert r.stderr.startswith("warning: CURRENT refused: version 2: checksum mismatch")
    r = run("pin", "5")
    assert r.returncode == 2 and r.stderr.startswith("error: version 5 does not exist")
    assert "Traceback" not in r.stderr
