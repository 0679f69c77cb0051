"""The detector's own window state, checkpointed per micro-batch beside Spark's checkpoint.

Spark re-runs a micro-batch with exactly the same offsets after a crash (its offset log is
written before the batch runs). The state written at the end of batch N is therefore
the input of batch N+1, and a re-run of batch N starts from the state of batch N-1
(``load_before(N)``): counts are never applied twice, alerts already published are known.

Windows are kept as a pandas DataFrame (kind, key, window_start, window_end in epoch
seconds, requests, errors); windows that ended before the watermark are dropped.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from chaussettes import atomicfile

WINDOW_COLUMNS = ["kind", "key", "window_start", "window_end", "requests", "errors"]
STATE_FILE = re.compile(r"^state-(\d{12})\.pkl$")
KEEP_FILES = 3
RECENT_GLOBAL = 60


def empty_windows() -> pd.DataFrame:
    return pd.DataFrame({
        "kind": pd.Series(dtype="object"), "key": pd.Series(dtype="object"),
        "window_start": pd.Series(dtype="int64"), "window_end": pd.Series(dtype="int64"),
        "requests": pd.Series(dtype="int64"), "errors": pd.Series(dtype="int64"),
    })


@dataclass
class DetectorState:
    batch_id: int = -1
    watermark: float | None = None  # epoch seconds; windows ending at or before it are final
    max_event_time: float | None = None
    windows: pd.DataFrame = field(default_factory=empty_windows)
    published: dict[str, int] = field(default_factory=dict)  # alert_id -> window_end (s)
    recent_global: dict[int, dict] = field(default_factory=dict)  # window_start -> record
    end_offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    events_total: int = 0
    quarantined_total: int = 0
    late_total: int = 0
    evaluations_total: int = 0  # judged window evaluations (a window is evaluated each batch it changes)
    alerts_published_total: int = 0
    window_spec: tuple[int, int] | None = None  # (length_s, slide_s) the windows were cut with

    # ---- updates
    def merge(self, batch_rates: pd.DataFrame) -> pd.DataFrame:
        """Add a batch's partial window counts; returns the full totals of the windows touched."""
        if batch_rates.empty:
            return empty_windows()
        batch = batch_rates[WINDOW_COLUMNS]
        touched = batch[["kind", "key", "window_start", "window_end"]].drop_duplicates()
        merged = (pd.concat([self.windows, batch], ignore_index=True)
                  .groupby(["kind", "key", "window_start", "window_end"], as_index=False, sort=False)
                  [["requests", "errors"]].sum())
        self.windows = merged[WINDOW_COLUMNS].astype({"requests": "int64", "errors": "int64"})
        return self.windows.merge(touched, on=["kind", "key", "window_start", "window_end"])

    def advance_watermark(self, max_event_time: float | None, delay_s: int) -> None:
        if max_event_time is None:
            return
        self.max_event_time = max(self.max_event_time or max_event_time, max_event_time)
        candidate = self.max_event_time - delay_s
        self.watermark = candidate if self.watermark is None else max(self.watermark, candidate)

    def evict(self, window_length_s: int) -> None:
        """Drop final windows, and published ids far enough in the past to never recur."""
        if self.watermark is None:
            return
        self.windows = self.windows[self.windows["window_end"] > self.watermark].reset_index(drop=True)
        horizon = self.watermark - 2 * window_length_s
        self.published = {k: v for k, v in self.published.items() if v > horizon}
        for start in sorted(self.recent_global)[:-RECENT_GLOBAL]:
            del self.recent_global[start]


class StateStore:
    """One pickle per micro-batch under ``<checkpoint>/detector/``, written atomically."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _ids(self) -> list[int]:
        out = []
        for p in self.folder.iterdir():
            m = STATE_FILE.match(p.name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def load_before(self, batch_id: int) -> DetectorState:
        """The state left by the newest batch < batch_id (a fresh state if none)."""
        for bid in reversed(self._ids()):
            if bid < batch_id:
                with open(self.folder / f"state-{bid:012d}.pkl", "rb") as fh:
                    return pickle.load(fh)
        return DetectorState()

    def latest(self) -> DetectorState | None:
        ids = self._ids()
        if not ids:
            return None
        with open(self.folder / f"state-{ids[-1]:012d}.pkl", "rb") as fh:
            return pickle.load(fh)

    def save(self, state: DetectorState) -> None:
        target = self.folder / f"state-{state.batch_id:012d}.pkl"
        atomicfile.write_bytes(target, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL),
                               mode=0o600, durable=True)
        for bid in self._ids():
            # keep a few; never anything newer (a re-run may be overwriting an older id)
            if bid < state.batch_id - KEEP_FILES:
                with contextlib.suppress(FileNotFoundError):
                    (self.folder / f"state-{bid:012d}.pkl").unlink()
