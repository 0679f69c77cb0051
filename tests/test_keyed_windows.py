"""detector.keyed_windows: the windows a batch changed, summed from bucket tables, are
exactly the brute-force sums of every window that holds a touched (key, bucket)."""

from __future__ import annotations

import random

import pyarrow as pa
from chaussettes.detector import keyed_windows as kw


def table(rows):
    return pa.table({"key": [r[0] for r in rows], "n": pa.array([r[1] for r in rows], pa.int64()),
                     "e": pa.array([r[2] for r in rows], pa.int64())})


def brute(buckets, touched, length, slide, open_after):
    counts = {(k, b): (n, e) for b, rows in buckets.items() for k, n, e in rows}
    out = set()
    for key, t in touched:
        for start in range(t - length + slide, t + 1, slide):
            if open_after is not None and start + length <= open_after:
                continue
            n = sum(counts.get((key, b), (0, 0))[0] for b in range(start, start + length, slide))
            e = sum(counts.get((key, b), (0, 0))[1] for b in range(start, start + length, slide))
            if n:
                out.add((key, start, start + length, n, e))
    return out


def test_touched_windows_match_brute_force():
    rnd = random.Random(7)
    for length, slide in ((60, 10), (30, 30), (20, 5)):
        for trial in range(20):
            keys = [f"k{i}" for i in range(rnd.randint(1, 8))]
            buckets = {}
            for b in range(-10 * slide, 300, slide):  # bucket starts are multiples of the slide
                rows = [(k, n, rnd.randint(0, n)) for k in keys if rnd.random() < 0.4 for n in [rnd.randint(1, 9)]]
                if rows:
                    buckets[b] = rows
            touched = sorted({(k, b) for b, rows in buckets.items() for k, _, _ in rows if rnd.random() < 0.3})
            open_after = rnd.choice([None, 50, 120])
            got = kw.touched_windows(kw.held({b: table(r) for b, r in buckets.items()}),
                                     pa.table({"key": [k for k, _ in touched], "bucket": pa.array(
                                         [b for _, b in touched], pa.int64())}), length, slide, open_after)
            assert list(got.columns) == kw.WINDOW_COLUMNS
            assert set(map(tuple, got.itertuples(index=False))) == brute(buckets, touched, length, slide,
                                                                          open_after), (length, slide, trial)
            assert len(got) == len(set(zip(got["key"], got["window_start"])))


def test_merge_splits_by_bucket_and_sums_per_key():
    old = kw.held({10: table([("a", 2, 1), ("b", 1, 0)]), 20: table([("a", 5, 5)])})
    add = pa.table({"key": ["b", "c", "z"], "bucket": pa.array([10, 10, 30], pa.int64()),
                    "n": pa.array([3, 1, 4], pa.int64()), "e": pa.array([3, 1, 0], pa.int64())})
    got = {b: t.to_pylist() for b, t in kw.merge(old, add).items()}
    assert got == {10: [{"key": "a", "n": 2, "e": 1}, {"key": "b", "n": 4, "e": 3}, {"key": "c", "n": 1, "e": 1}],
                   20: [{"key": "a", "n": 5, "e": 5}], 30: [{"key": "z", "n": 4, "e": 0}]}
    assert kw.from_ipc(kw.to_ipc(kw.held({}))).num_rows == 0


def test_eviction_and_empty_input():
    assert kw.evictable([0, 10, 20, 30], 60, 80) == [0, 10, 20]
    assert kw.evictable([0, 10], 60, None) == []
    empty = pa.table({"key": pa.array([], pa.string()), "bucket": pa.array([], pa.int64())})
    assert kw.touched_windows(kw.held({}), empty, 60, 10, None).empty
