"""chaussettes.thresholds: schema, load errors, accessors, atomic write, hot reload."""

from __future__ import annotations

import copy
import json
import os
import threading

import pytest
from chaussettes import thresholds as th
from chaussettes.settings import load as load_settings


def _doc(**changes):
    doc = th.load_default().doc
    doc = copy.deepcopy(doc)
    doc.update(changes)
    return doc


def test_default_file_is_valid_and_is_where_settings_say():
    t = th.load_default()
    assert t.version == 0
    assert (t.window_length_s, t.window_slide_s, t.watermark_s) == (60, 10, 30)
    assert t.error_status_min == 400
    assert t.min_requests == {"global": 50, "ip": 20, "url": 20}
    assert t.threshold("global") == 0.2 and t.threshold("ip", "10.0.0.1") == 0.5
    assert load_settings(env={}).default_thresholds_path.resolve() == th.DEFAULT_PATH


def test_brief_example_document_loads_with_overrides(tmp_path):
    doc = _doc(version=3, ip={"default": 0.5, "overrides": {"10.0.0.7": 0.9}},
               url={"default": 0.4, "overrides": {"/login": 0.85}},
               calibration={"source": "archive"}, validation={"alert_rate": 0.01})
    path = th.write(doc, tmp_path / "seuils.json")
    t = th.load(path)
    assert t.version == 3
    assert t.threshold("ip", "10.0.0.7") == 0.9
    assert t.threshold("ip", "10.0.0.8") == 0.5
    assert t.threshold("url", "/login") == 0.85
    assert t.threshold("url", "/other") == 0.4
    assert t.threshold("global", "/login") == 0.2  # global ignores the key
    assert t.overrides("url") == {"/login": 0.85}
    assert t.source == str(path)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d.pop("version"), "version"),
        (lambda d: d.update(version=-1), "version"),
        (lambda d: d["global"].update(error_rate=1.5), "global/error_rate"),
        (lambda d: d["ip"].update(default="high"), "ip/default"),
        (lambda d: d["url"]["overrides"].update({"/x": -0.1}), "url/overrides"),
        (lambda d: d["min_requests"].update(ip=0), "min_requests/ip"),
        (lambda d: d["window"].update(slide_s=20, length_s=10), "slide_s"),
        (lambda d: d["window"].update(slide_s=7), "multiple"),
        (lambda d: d.update(created_at="yesterday"), "created_at"),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d.update(error_status_min=700), "error_status_min"),
    ],
)
def test_invalid_documents_are_rejected_with_one_line(mutate, fragment, tmp_path):
    doc = _doc()
    mutate(doc)
    with pytest.raises(th.ThresholdsError) as err:
        th.validate(doc)
    message = str(err.value)
    assert "\n" not in message and fragment in message
    # write() refuses it and leaves nothing behind
    target = tmp_path / "out.json"
    with pytest.raises(th.ThresholdsError):
        th.write(doc, target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content, fragment",
    [(None, "no such file"), (b"", "empty file"), (b"{not json", "not valid JSON"),
     (b"\xff\xfe\x00garbage", "not valid JSON"), (b"[1, 2]", "expected a JSON object"),
     (b'{"version": 1}', "schema")],
)
def test_load_errors_are_one_line(tmp_path, content, fragment):
    path = tmp_path / "seuils.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(th.ThresholdsError) as err:
        th.load(path)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert str(path) in str(err.value)


def test_write_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "sub" / "seuils.json"
    th.write(_doc(version=1), path)
    th.write(_doc(version=2), path)
    assert th.load(path).version == 2
    assert [p.name for p in path.parent.iterdir()] == ["seuils.json"]  # no temp file left
    assert json.loads(path.read_text())["version"] == 2


def test_readers_never_see_a_partial_file(tmp_path):
    path = tmp_path / "seuils.json"
    big = _doc(ip={"default": 0.5, "overrides": {f"10.0.{i // 250}.{i % 250}": 0.9 for i in range(800)}})
    th.write(big, path)
    stop = threading.Event()
    bad = []

    def reader():
        while not stop.is_set():
            try:
                th.load(path)
            except th.ThresholdsError as exc:
                bad.append(str(exc))

    t = threading.Thread(target=reader)
    t.start()
    for v in range(1, 15):
        big["version"] = v
        th.write(big, path)
    stop.set()
    t.join()
    assert bad == []


def test_watcher_hot_reload_keeps_last_good(tmp_path):
    path = tmp_path / "seuils.json"
    watcher = th.ThresholdsWatcher(lambda: path)
    # nothing there yet: the shipped defaults are in force and the reason is exposed
    assert watcher.current().version == 0
    assert "no such file" in watcher.error
    th.write(_doc(version=1), path)
    assert watcher.current().version == 1 and watcher.error is None
    assert watcher.source == str(path)
    # unchanged file: not re-read (same object back)
    first = watcher.current()
    assert watcher.current() is first
    # a corrupt version is rejected, version 1 stays
    tmp = tmp_path / "corrupt"
    tmp.write_text('{"version": 2, "window": ')
    os.replace(tmp, path)
    assert watcher.current().version == 1
    assert "not valid JSON" in watcher.error
    # schema-invalid too
    bad = _doc(version=3)
    bad["global"]["error_rate"] = 7
    tmp.write_text(json.dumps(bad))
    os.replace(tmp, path)
    assert watcher.current().version == 1 and "global/error_rate" in watcher.error
    # deleted: still version 1
    path.unlink()
    assert watcher.current().version == 1 and "no such file" in watcher.error
    # a good one again
    th.write(_doc(version=4), path)
    assert watcher.current().version == 4 and watcher.error is None


def test_watcher_follows_a_moving_pointer(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    th.write(_doc(version=1), a)
    th.write(_doc(version=2), b)
    target = {"path": a}
    watcher = th.ThresholdsWatcher(lambda: target["path"])
    assert watcher.current().version == 1
    target["path"] = b
    assert watcher.current().version == 2

    def broken():
        raise OSError("pointer unreadable")

    watcher._path_fn = broken
    assert watcher.current().version == 2 and "pointer unreadable" in watcher.error


def test_watcher_without_fallback_returns_none_until_good(tmp_path):
    watcher = th.ThresholdsWatcher(tmp_path / "missing.json", fallback=None)
    assert watcher.current() is None and "no such file" in watcher.error
