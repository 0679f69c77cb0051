"""Triggers of the deferrable sensors (run by the triggerer, imported by class path).

A waiting check holds no worker slot: the sensor defers to one of these, which polls in
the triggerer's event loop (blocking reads go to a thread) and fires one event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from chaussettes.orchestration import common


class DetectorHealthTrigger(BaseTrigger):
    """Watches the streaming detector's health through ``chaussettes.supervisor``.

    ``check="until_healthy"``: fires ``outcome=healthy`` once a micro-batch newer than
    ``after_batch_id`` is seen (any, when None); ``outcome=dead`` when the process is gone for
    ``confirmations`` readings; ``outcome=timeout`` after ``timeout_s``.

    ``check="watch"``: fires ``outcome=dead|stalled`` when the detector is so for
    ``confirmations`` consecutive readings; ``outcome=healthy`` after ``watch_s`` of good health.
    Each event carries ``health`` (the last reading) and ``readings`` (how many were taken).
    """

    def __init__(self, *, check: str, supervisor: dict[str, Any], poll_s: float = 5.0,
                 watch_s: float = 600.0, timeout_s: float = 300.0, after_batch_id: int | None = None,
                 confirmations: int = 2, **kwargs):
        super().__init__(**kwargs)
        if check not in ("until_healthy", "watch"):
            raise ValueError(f"check must be until_healthy or watch, not {check!r}")
        self.check = check
        self.supervisor = dict(supervisor)
        self.poll_s = float(poll_s)
        self.watch_s = float(watch_s)
        self.timeout_s = float(timeout_s)
        self.after_batch_id = after_batch_id
        self.confirmations = max(1, int(confirmations))

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "chaussettes.orchestration.triggers.DetectorHealthTrigger",
            {"check": self.check, "supervisor": self.supervisor, "poll_s": self.poll_s,
             "watch_s": self.watch_s, "timeout_s": self.timeout_s,
             "after_batch_id": self.after_batch_id, "confirmations": self.confirmations},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        sup = common.build_supervisor(self.supervisor)
        began = time.monotonic()
        readings = bad = 0
        last_state = None
        while True:
            health = await asyncio.to_thread(sup.check)
            readings += 1
            if health.state != last_state:
                self.log.info("detector %s: %s", health.state, health.reason)
                last_state = health.state
            elapsed = time.monotonic() - began
            event = {"check": self.check, "health": health.as_dict(), "readings": readings,
                     "elapsed_s": round(elapsed, 1)}
            if self.check == "until_healthy":
                progressed = health.batch_id is not None and (
                    self.after_batch_id is None or health.batch_id > self.after_batch_id)
                if health.state == "healthy" and progressed:
                    yield TriggerEvent({**event, "outcome": "healthy"})
                    return
                bad = bad + 1 if health.state == "dead" else 0
                if bad >= self.confirmations:
                    yield TriggerEvent({**event, "outcome": "dead"})
                    return
                if elapsed >= self.timeout_s:
                    yield TriggerEvent({**event, "outcome": "timeout"})
                    return
            else:
                bad = bad + 1 if health.state in ("dead", "stalled") else 0
                if bad >= self.confirmations:
                    yield TriggerEvent({**event, "outcome": health.state})
                    return
                if elapsed >= self.watch_s:
                    yield TriggerEvent({**event, "outcome": "healthy"})
                    return
            await asyncio.sleep(self.poll_s)


class HistoryTrigger(BaseTrigger):
    """Fires ``status=ok`` when at least ``min_rows`` rows of history exist, ``missing`` at timeout."""

    def __init__(self, *, source: str, input: str, start: str, end: str, min_rows: int,
                 settings: dict[str, Any] | None = None, poll_s: float = 30.0,
                 timeout_s: float = 600.0, **kwargs):
        super().__init__(**kwargs)
        self.source, self.input, self.start, self.end = source, input, start, end
        self.min_rows = int(min_rows)
        self.settings = dict(settings or {})
        self.poll_s = float(poll_s)
        self.timeout_s = float(timeout_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "chaussettes.orchestration.triggers.HistoryTrigger",
            {"source": self.source, "input": self.input, "start": self.start, "end": self.end,
             "min_rows": self.min_rows, "settings": self.settings, "poll_s": self.poll_s,
             "timeout_s": self.timeout_s},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from chaussettes.orchestration import history

        conf = common.load_settings(self.settings)
        start, end = dt.datetime.fromisoformat(self.start), dt.datetime.fromisoformat(self.end)
        began = time.monotonic()
        while True:
            summary = await asyncio.to_thread(history.summarize, conf, self.source, self.input,
                                              start, end)
            if summary.rows >= self.min_rows:
                yield TriggerEvent({"status": "ok", "summary": summary.as_dict()})
                return
            if time.monotonic() - began >= self.timeout_s:
                yield TriggerEvent({"status": "missing", "summary": summary.as_dict()})
                return
            self.log.info("waiting for history: %s, need %d", summary.describe(), self.min_rows)
            await asyncio.sleep(self.poll_s)
