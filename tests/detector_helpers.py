"""Running a ``Detector`` in a thread, as the supervisor's process runs it in its main one."""

from __future__ import annotations

import threading


def run_in_thread(detector) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``detector.run`` in a daemon thread; the list receives what it raised."""
    failed: list[BaseException] = []

    def run():
        try:
            detector.run()
        except BaseException as exc:  # noqa: BLE001 - the test asserts on it
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, failed
