"""sparkworker.settle: the objects alive at a worker's first task leave the cyclic
collector's reach, once per process; what tasks make afterwards is still collected."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_settle_freezes_once_and_later_garbage_is_still_collected():
    out = _run("""
        import gc
        import pandas, pyarrow  # what a Spark Python worker holds before a task of ours
        from chaussettes import sparkworker

        before = gc.get_freeze_count()
        sparkworker.settle()
        frozen = gc.get_freeze_count()
        sparkworker.settle()
        again = gc.get_freeze_count()

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle a task leaves behind
        del a, b
        print(before, frozen, again, gc.collect())
    """)
    before, frozen, again, collected = map(int, out.split())
    assert before == 0
    assert frozen > 10_000  # modules, classes and functions of pandas and pyarrow
    assert again == frozen  # the second call of the same process does nothing
    assert collected >= 2  # objects made after settle are collected as before


def test_a_forked_worker_settles_on_its_own():
    # Spark's daemon forks its workers: a child settles what it made since the fork too
    out = _run("""
        import gc, os
        from chaussettes import sparkworker

        sparkworker.settle()
        parent = gc.get_freeze_count()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            kept = [[i] for i in range(5000)]  # the child's own objects
            sparkworker.settle()
            os.write(write, str(gc.get_freeze_count()).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(parent, os.read(read, 64).decode())
    """)
    parent, child = map(int, out.split())
    assert child >= parent + 5000
