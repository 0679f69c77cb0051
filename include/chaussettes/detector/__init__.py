"""The streaming detector (``jobs/stream_detector.py`` is its entry point).

- ``pipeline``: the query and the per-micro-batch work (``BatchProcessor``), ``run()``;
- ``alerts``: deterministic alert ids, severity, explanations;
- ``state``: the window state checkpointed per batch;
- ``publish``: exactly-once publication on ``alerts`` and reading alerts back;
- ``archive``: restart-safe Parquet / JSON outputs by date and hour;
- ``status``: the status file.
"""

from chaussettes.detector.pipeline import DetectorConfig, run  # noqa: F401
