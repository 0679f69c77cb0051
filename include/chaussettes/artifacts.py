"""The versioned thresholds store.

Layout (a local folder, ``settings.artifacts_dir``)::

    <artifacts_dir>/thresholds/
        v1/seuils.json      immutable once published (its "version" field is 1)
        v1/meta.json        sha256 + size of seuils.json, validation figures, provenance
        v2/...
        CURRENT             the current version number, replaced atomically (rename)
        HISTORY.jsonl       one line per pointer switch (publish, rollback), for audit
        candidates/         candidates kept for inspection (failed validation, dry runs)

Readers (the detector, every micro-batch) call :func:`resolve_thresholds` (or
:func:`current_thresholds_path`, its path): one small read and two ``stat`` calls once the
version in force has been checked. The version ``CURRENT`` names is used only if it checks out
(``meta.json``'s sha256 of ``seuils.json``, schema, version field); else the newest good version
below it is, and the resolution says why in one line (a power cut while publishing, a file
edited by hand). Writers (Airflow tasks) use :class:`ThresholdsStore`: ``publish`` stores a
candidate as the next version — its files and folder fsynced before ``CURRENT`` moves, so that
``CURRENT`` never survives a power cut that its version did not — and switches ``CURRENT``;
``pin`` re-points ``CURRENT`` to an earlier version after checking its checksum and schema; the
last ``keep`` versions are kept (never the current one nor the newest are removed).

The store is addressed by URI (``open_store("file:///srv/artifacts/thresholds")`` or a plain
path); only local folders are implemented, and every file operation goes through the small
:class:`LocalBackend` so that an object-storage backend can be added without touching callers.

CLI::

    python -m chaussettes.artifacts list
    python -m chaussettes.artifacts show 3
    python -m chaussettes.artifacts pin 2
    python -m chaussettes.artifacts publish candidate.json
    python -m chaussettes.artifacts current
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from chaussettes import atomicfile

CURRENT_FILE = "CURRENT"
HISTORY_FILE = "HISTORY.jsonl"
LOCK_FILE = ".lock"
THRESHOLDS_FILE = "seuils.json"
META_FILE = "meta.json"
CANDIDATES_DIR = "candidates"
DEFAULT_KEEP = 10
_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")


class ArtifactError(Exception):
    """A store operation cannot be done; the message is one line and says why."""


# --------------------------------------------------------------------------- readers


def store_root(settings) -> Path:
    """The thresholds store folder of these settings."""
    return Path(settings.artifacts_dir) / "thresholds"


def read_current_version(root: Path) -> int | None:
    """The version number in ``root/CURRENT``, or None when there is none (or it is garbage)."""
    try:
        text = (Path(root) / CURRENT_FILE).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


@dataclass(frozen=True)
class InForce:
    """The thresholds file to use now and, when it is not the one ``CURRENT`` names, why."""

    path: Path
    version: int | None  # the store's version; None for a file pinned by settings or the defaults
    refused: str | None = None  # one line: CURRENT's version was refused, and what is used instead


def resolve_thresholds(settings) -> InForce:
    """The thresholds in force: ``settings.thresholds_path`` when set (a pin); else the version
    ``CURRENT`` names if it checks out; else the newest good version below it (one line in
    ``refused`` says which were refused and why); else the package defaults.

    Versions above ``CURRENT`` are never used: after a rollback they are the ones refused by
    the operator. Cheap once a version has been checked (see :func:`_check_cached`): called
    every micro-batch.
    """
    if getattr(settings, "thresholds_path", None):
        return InForce(Path(settings.thresholds_path), None)
    defaults = Path(settings.default_thresholds_path)
    root = store_root(settings)
    current = read_current_version(root)
    if current is None:
        return InForce(defaults, None)
    store = ThresholdsStore(LocalBackend(root))
    stored = store.versions()
    refused: list[str] = []
    candidates = sorted({v for v in stored if v <= current} | {current}, reverse=True)
    for version in candidates:
        problem = _check_cached(store, version, stored)
        if problem is None:
            if not refused:
                return InForce(store.backend.path(f"v{version}", THRESHOLDS_FILE), version)
            return InForce(store.backend.path(f"v{version}", THRESHOLDS_FILE), version,
                           _refusal(refused, f"version {version}, the newest good one, is used"))
        refused.append(problem)
    if not refused:  # CURRENT is set but no version was ever stored
        return InForce(defaults, None)
    return InForce(defaults, None, _refusal(refused, "no good version below it: the package defaults are used"))


def _refusal(refused: list[str], outcome: str) -> str:
    more = f" (and {len(refused) - 1} older version(s) refused too)" if len(refused) > 1 else ""
    return f"CURRENT refused: {refused[0]}{more}; {outcome}"


# (path, stat stamps of seuils.json and meta.json) -> None (good) or the reason it is refused.
# Versions are immutable: a stamp that did not change needs no second read.
_CHECKED: dict[tuple, str | None] = {}


def _check_cached(store: ThresholdsStore, version: int, stored: list[int]) -> str | None:
    if version not in stored:
        return f"version {version} does not exist"
    folder = store.backend.path(f"v{version}")
    stamp = (str(folder),) + tuple(_stat_stamp(folder / name) for name in (THRESHOLDS_FILE, META_FILE))
    if stamp not in _CHECKED:
        if len(_CHECKED) > 256:
            _CHECKED.clear()
        try:
            store.verify(version)
            _CHECKED[stamp] = None
        except ArtifactError as exc:
            _CHECKED[stamp] = str(exc)
        except OSError as exc:  # unreadable now (not remembered: it may pass next time)
            return f"version {version}: cannot read it: {exc.strerror or exc}"
    return _CHECKED[stamp]


def _stat_stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def current_thresholds_path(settings) -> Path:
    """The thresholds file the detector must use now (:func:`resolve_thresholds`'s path)."""
    return resolve_thresholds(settings).path


# --------------------------------------------------------------------------- helpers


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def validate_thresholds_file(path: Path) -> dict:
    """Parse and schema-check a seuils.json (``chaussettes.thresholds``, the one schema).

    Returns the document; raises ArtifactError with the one-line reason.
    """
    from chaussettes import thresholds as _thresholds

    try:
        return _thresholds.load(path).doc
    except _thresholds.ThresholdsError as exc:
        raise ArtifactError(str(exc)) from None


def validate_thresholds_doc(doc: dict) -> None:
    from chaussettes import thresholds as _thresholds

    try:
        _thresholds.validate(doc)
    except _thresholds.ThresholdsError as exc:
        raise ArtifactError(str(exc)) from None


# --------------------------------------------------------------------------- backend


class LocalBackend:
    """Every file operation of the store, on a local folder (atomic writes by rename)."""

    scheme = "file"

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def uri(self) -> str:
        return self.root.resolve().as_uri()

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def read_bytes(self, *parts: str) -> bytes:
        return self.path(*parts).read_bytes()

    def exists(self, *parts: str) -> bool:
        return self.path(*parts).exists()

    def write_atomic(self, data: bytes, *parts: str) -> None:
        atomicfile.write_bytes(self.path(*parts), data, durable=True)

    def append_line(self, line: str, *parts: str) -> None:
        target = self.path(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # the audit line of a switch that CURRENT already made durable

    def put_dir(self, files: dict[str, bytes], name: str) -> None:
        """Create folder ``name`` holding ``files`` all at once (write aside, then rename), and
        durably: the files, the folder's entries and the rename are fsynced before this returns,
        so that a pointer written afterwards never outlives them in a power cut."""
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            atomicfile.fsync_dir(self.root.parent)
        tmp = self.path(f".tmp-{name}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            for fname, data in files.items():
                # immutable by convention and by mode; fsynced with the folder's entries
                atomicfile.write_bytes(tmp / fname, data, mode=0o444, durable=True)
            os.rename(tmp, self.path(name))  # fails if the target exists: never overwrite
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomicfile.fsync_dir(self.root)  # the rename

    def remove_dir(self, name: str) -> None:
        target = self.path(name)
        trash = self.path(f".del-{name}-{uuid.uuid4().hex[:8]}")
        os.rename(target, trash)  # readers never see a half-deleted version
        for p in trash.iterdir():
            with contextlib.suppress(OSError):
                os.chmod(p, 0o644)
        shutil.rmtree(trash, ignore_errors=True)

    def list_dirs(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.is_dir()]

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock for writers (publish, pin, prune): one at a time per store."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.path(LOCK_FILE), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- the store


@dataclass
class Version:
    """One stored version as listed: number, files, metadata, and whether it checks out."""

    version: int
    path: Path
    meta: dict = field(default_factory=dict)
    current: bool = False
    ok: bool = True
    error: str | None = None

    @property
    def thresholds_path(self) -> Path:
        return self.path / THRESHOLDS_FILE

    def summary(self) -> dict:
        meta = self.meta or {}
        return {
            "version": self.version,
            "current": self.current,
            "ok": self.ok,
            "error": self.error,
            "published_at": meta.get("published_at"),
            "sha256": meta.get("sha256"),
            "validation": meta.get("validation"),
            "calibration": meta.get("calibration"),
            "run": meta.get("run"),
            "path": str(self.thresholds_path),
        }


class ThresholdsStore:
    """Versioned, immutable thresholds files with an atomically switched ``CURRENT``."""

    def __init__(self, backend: LocalBackend, keep: int = DEFAULT_KEEP):
        if keep < 1:
            raise ArtifactError(f"keep must be at least 1, got {keep}")
        self.backend = backend
        self.keep = keep

    @classmethod
    def from_settings(cls, settings, keep: int = DEFAULT_KEEP) -> ThresholdsStore:
        return cls(LocalBackend(store_root(settings)), keep=keep)

    @property
    def root(self) -> Path:
        return self.backend.root

    @property
    def uri(self) -> str:
        return self.backend.uri

    # ---- reading
    def versions(self) -> list[int]:
        found = []
        for name in self.backend.list_dirs():
            m = _VERSION_DIR.match(name)
            if m:
                found.append(int(m.group(1)))
        return sorted(found)

    def current_version(self) -> int | None:
        return read_current_version(self.root)

    def current_path(self) -> Path | None:
        v = self.current_version()
        return self.backend.path(f"v{v}", THRESHOLDS_FILE) if v else None

    def meta(self, version: int) -> dict:
        try:
            return json.loads(self.backend.read_bytes(f"v{version}", META_FILE))
        except FileNotFoundError:
            raise ArtifactError(f"version {version}: no {META_FILE}") from None
        except ValueError as exc:
            raise ArtifactError(f"version {version}: {META_FILE} is not valid JSON ({exc})") from None

    def verify(self, version: int) -> dict:
        """Check a stored version (exists, checksum, schema, version field); returns its document."""
        if version not in self.versions():
            known = ", ".join(map(str, self.versions())) or "none"
            raise ArtifactError(f"version {version} does not exist (stored: {known})")
        meta = self.meta(version)
        try:
            data = self.backend.read_bytes(f"v{version}", THRESHOLDS_FILE)
        except FileNotFoundError:
            raise ArtifactError(f"version {version}: {THRESHOLDS_FILE} is missing") from None
        digest = sha256_bytes(data)
        if digest != meta.get("sha256"):
            raise ArtifactError(
                f"version {version}: checksum mismatch ({THRESHOLDS_FILE} sha256 {digest[:12]}…, "
                f"meta.json says {str(meta.get('sha256'))[:12]}…): the file is corrupt"
            )
        doc = validate_thresholds_file(self.backend.path(f"v{version}", THRESHOLDS_FILE))
        if doc.get("version") != version:
            raise ArtifactError(f"version {version}: its seuils.json says version {doc.get('version')}")
        return doc

    def list(self) -> list[Version]:
        """Every stored version, oldest first, each checked (``ok``/``error``)."""
        current = self.current_version()
        out = []
        for v in self.versions():
            item = Version(version=v, path=self.backend.path(f"v{v}"), current=(v == current))
            try:
                item.meta = self.meta(v)
                self.verify(v)
            except ArtifactError as exc:
                item.ok, item.error = False, str(exc)
            out.append(item)
        return out

    def history(self) -> list[dict]:
        try:
            text = self.backend.read_bytes(HISTORY_FILE).decode()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    # ---- writing
    def publish(
        self,
        candidate: Path | dict,
        *,
        make_current: bool = True,
        run: dict | None = None,
        extra_meta: dict | None = None,
    ) -> Version:
        """Store a candidate as the next version N (validated first); switch CURRENT to it.

        The stored ``seuils.json`` is the candidate with ``"version": N``. Returns the Version.
        """
        if isinstance(candidate, dict):
            doc = dict(candidate)
            source = None
        else:
            source = str(candidate)
            doc = validate_thresholds_file(Path(candidate))
        with self.backend.lock():
            versions = self.versions()
            number = (versions[-1] + 1) if versions else 1
            doc["version"] = number
            data = (json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()
            self._check_doc(doc, number)
            meta = {
                "version": number,
                "published_at": _utcnow(),
                "sha256": sha256_bytes(data),
                "size": len(data),
                "candidate": source,
                "created_at": doc.get("created_at"),
                "validation": doc.get("validation"),
                "calibration": doc.get("calibration"),
                "run": run or {},
            }
            if extra_meta:
                meta.update(extra_meta)
            meta_bytes = (json.dumps(meta, indent=2, default=str) + "\n").encode()
            self.backend.put_dir({THRESHOLDS_FILE: data, META_FILE: meta_bytes}, f"v{number}")
            if make_current:
                self._switch(number, action="publish", run=run)
            self._prune()
        return Version(version=number, path=self.backend.path(f"v{number}"), meta=meta,
                       current=make_current)

    def pin(self, version: int, *, run: dict | None = None, reason: str | None = None) -> Version:
        """Re-point CURRENT to a stored version; refuses a missing or corrupt one."""
        with self.backend.lock():
            self.verify(version)
            previous = self.current_version()
            self._switch(version, action="pin", run=run, reason=reason, previous=previous)
            return Version(version=version, path=self.backend.path(f"v{version}"),
                           meta=self.meta(version), current=True)

    def keep_candidate(self, candidate: Path, label: str) -> Path:
        """Copy a candidate aside (``candidates/<label>.json``) for inspection; returns the copy."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:120] or "candidate"
        target = self.backend.path(CANDIDATES_DIR, f"{safe}.json")
        self.backend.write_atomic(Path(candidate).read_bytes(), CANDIDATES_DIR, f"{safe}.json")
        return target

    # ---- internals
    def _check_doc(self, doc: dict, number: int) -> None:
        # The stored file must pass the same schema check the detector applies.
        try:
            validate_thresholds_doc(doc)
        except ArtifactError as exc:
            raise ArtifactError(f"candidate as version {number}: {exc}") from None

    def _switch(self, version: int, *, action: str, run: dict | None = None,
                reason: str | None = None, previous: int | None = None) -> None:
        previous = self.current_version() if previous is None else previous
        self.backend.write_atomic(f"{version}\n".encode(), CURRENT_FILE)
        entry = {"at": _utcnow(), "action": action, "version": version, "previous": previous}
        if reason:
            entry["reason"] = reason
        if run:
            entry["run"] = run
        self.backend.append_line(json.dumps(entry, default=str), HISTORY_FILE)

    def _prune(self) -> None:
        versions = self.versions()
        if len(versions) <= self.keep:
            return
        current = self.current_version()
        protected = {current, versions[-1]}
        for v in versions[: len(versions) - self.keep]:
            if v not in protected:
                self.backend.remove_dir(f"v{v}")


def open_store(uri_or_path: str | Path, keep: int = DEFAULT_KEEP) -> ThresholdsStore:
    """A store by URI (``file:///...``) or plain path. Other schemes are not implemented yet."""
    text = str(uri_or_path)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and text[1:3] == ":\\"):
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(text)
        return ThresholdsStore(LocalBackend(path), keep=keep)
    raise ArtifactError(f"unsupported artifact store URI scheme {parsed.scheme!r} (only file:// for now)")


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaussettes.artifacts",
                                description="The versioned thresholds store.")
    p.add_argument("--store", help="store folder or file:// URI (default: <artifacts_dir>/thresholds)")
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="versions kept (default %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list versions (JSON lines)")
    sub.add_parser("current", help="print the thresholds file the detector uses now")
    s = sub.add_parser("show", help="print a version's meta.json")
    s.add_argument("version", type=int)
    s = sub.add_parser("pin", help="make a stored version current (rollback)")
    s.add_argument("version", type=int)
    s = sub.add_parser("publish", help="store a candidate seuils.json as the next version")
    s.add_argument("candidate")
    s.add_argument("--no-current", action="store_true", help="store it without switching CURRENT")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from chaussettes import settings as _settings

    try:
        cfg = _settings.load()
        store = open_store(args.store, keep=args.keep) if args.store else \
            ThresholdsStore.from_settings(cfg, keep=args.keep)
        if args.cmd == "list":
            for item in store.list():
                print(json.dumps(item.summary(), default=str))
        elif args.cmd == "current":
            if args.store:
                print(store.current_path() or cfg.default_thresholds_path)
            else:
                in_force = resolve_thresholds(cfg)
                print(in_force.path)
                if in_force.refused:
                    print(f"warning: {in_force.refused}", file=sys.stderr)
        elif args.cmd == "show":
            store.verify(args.version)
            print(json.dumps(store.meta(args.version), indent=2))
        elif args.cmd == "pin":
            v = store.pin(args.version, reason="cli")
            print(f"current thresholds version: {v.version} ({v.thresholds_path})")
        elif args.cmd == "publish":
            v = store.publish(Path(args.candidate), make_current=not args.no_current)
            print(f"published version {v.version} ({v.thresholds_path})")
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if args.cmd in ("pin", "show", "publish") else 1
    except Exception as exc:  # noqa: BLE001 - settings errors and I/O: one line, no traceback
        print(f"error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
