"""What this package does once in each of Spark's Python worker processes."""

from __future__ import annotations

import gc
import os

_settled_pid: int | None = None


def settle() -> None:
    """Put the objects alive now (modules, classes, functions: what every later task finds)
    out of the cyclic collector's reach, once per process.

    Spark's reused Python worker runs a full ``gc.collect()`` after every task
    (``pyspark/daemon.py``): over the ~75k objects of pyspark, pandas and pyarrow that is
    ~30 ms a task, ~20% of the Python workers' CPU in the throughput benchmark (py-spy),
    where a micro-batch runs dozens of Python tasks. Frozen, those objects are skipped and
    a collection only walks what tasks made since. Called first thing by the code Spark
    runs in its workers (the Kafka reader, the stateful processor, the counts' publisher);
    objects frozen are never freed, so it collects first and runs before a task's data."""
    global _settled_pid
    if _settled_pid != os.getpid():  # a forked worker settles on its own
        gc.collect()
        gc.freeze()
        _settled_pid = os.getpid()
