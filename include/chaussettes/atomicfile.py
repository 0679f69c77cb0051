"""Files that readers never see half-written: write a temporary file beside the target,
then rename it over the target (atomic on POSIX). Status files, thresholds versions,
pointers, certificates and labels all go through here."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes(path: str | os.PathLike, data: bytes, *, mode: int = 0o644, durable: bool = False) -> Path:
    """Replace ``path`` with ``data`` atomically. ``durable``: fsync the file and its folder
    (for what must survive a power cut: a published thresholds version, its pointer)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(target.parent)
    return target


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of folder ``path`` (files created, renamed or removed in it) survive a
    power cut. Best effort: a file system that cannot fsync a folder is left as it is."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_text(path: str | os.PathLike, text: str, **kwargs: Any) -> Path:
    return write_bytes(path, text.encode("utf-8"), **kwargs)


def write_json(path: str | os.PathLike, doc: Any, *, indent: int | None = 2, **kwargs: Any) -> Path:
    return write_text(path, json.dumps(doc, indent=indent, default=str) + "\n", **kwargs)


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
