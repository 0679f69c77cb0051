"""Thresholds in force (``seuils.json``): load, validate, hot-reload, write atomically.

One schema (``seuils.schema.json`` next to this module) is the source of truth; this
module adds the cross-field rules a JSON schema cannot say (the slide divides the window
length; for the evidence rule, seasonal lists as long as the season says and chronic keys
among the overrides). Two rules, by ``schema_version`` (``Thresholds.rule``):

- 1 (or absent), ``"rate"``: ``global.error_rate``, ``ip``/``url`` ``default`` and
  ``overrides`` are the error rates a window must exceed — what every file written before
  schema 2 means, unchanged;
- 2, ``"evidence"``: the same fields are *baselines* (the error rate a key normally fails
  at) and the ``evidence`` section says how much evidence above its baseline a window needs
  (``chaussettes.judge`` has the arithmetic).

The accessors (``default``, ``overrides``, ``threshold``) read the same fields in both:
rates to exceed under schema 1, baselines under schema 2 (``baseline`` also takes the
hour into account).

Everything that reads or writes a thresholds file goes through here:

- ``load(path) -> Thresholds`` raises ``ThresholdsError`` with a one-line reason for a
  missing, unparseable or invalid file;
- ``validate(doc)`` raises the same for a dict;
- ``write(doc, path)`` validates, then replaces ``path`` atomically (temp file in the same
  folder, fsync, rename): a reader never sees half a file;
- ``ThresholdsWatcher(path_fn)`` is the detector's hot reload: ``current()`` re-reads only
  when the file changed and keeps the last good version when the new one is bad; with
  ``path_fn=lambda: artifacts.resolve_thresholds(settings)`` it also says why the version in
  force is not the one ``CURRENT`` names (a corrupt version refused).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from chaussettes import atomicfile

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = PACKAGE_DIR / "seuils.schema.json"
DEFAULT_PATH = PACKAGE_DIR / "default_seuils.json"
KINDS = ("global", "ip", "url")
GLOBAL_KEY = "*"
RESOLVE_AFTER = 3  # incidents.resolve_after when a file does not say
# The per-key tables ({key: value}) of a kind's section, and of the evidence section per
# kind: a detector key group needs only its own keys' entries (detector.channel.thresholds_slice).
KEYED_FIELDS = ("overrides",)
KEYED_EVIDENCE_FIELDS = ("chronic",)
SCHEMA_VERSION = 2  # the newest; files without schema_version are 1
RULES = {1: "rate", 2: "evidence"}
SEASONS = {"flat": 1, "hour_of_day": 24, "hour_of_week": 168}  # baselines per kind
# Hours between the Unix epoch (a Thursday, 00:00 UTC) and the Monday that starts hour_of_week 0,
# modulo a week: hour_of_week = (hours since the epoch + 72) mod 168.
WEEK_OFFSET_H = 72


class ThresholdsError(ValueError):
    """A thresholds file or document cannot be used; the message is one line."""


def _package_text(name: str) -> str:
    """A data file of the package, also when it is imported from a zip (--py-files)."""
    from importlib.resources import files

    return files("chaussettes").joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON schema of seuils.json (draft 2020-12)."""
    return json.loads(_package_text(SCHEMA_PATH.name))


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    cls = jsonschema.Draft202012Validator
    cls.check_schema(schema())
    return cls(schema(), format_checker=cls.FORMAT_CHECKER)


def _where(path) -> str:
    parts = [str(p) for p in path]
    return "/".join(parts) if parts else "(top)"


def validate(doc: Any) -> None:
    """Raise ThresholdsError (one line) unless ``doc`` is a valid seuils.json document."""
    import jsonschema

    if not isinstance(doc, dict):
        raise ThresholdsError(f"expected a JSON object, got {type(doc).__name__}")
    # said here in words: the schema's if/then would print the whole document
    if doc.get("schema_version", 1) == 2 and "evidence" not in doc:
        raise ThresholdsError("evidence: missing: schema_version 2 (the evidence rule) needs it")
    if doc.get("schema_version", 1) == 1 and "evidence" in doc:
        raise ThresholdsError("evidence: only schema_version 2 (the evidence rule) has an evidence section")
    errors = list(_validator().iter_errors(doc))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        message = " ".join(str(best.message).split())
        if len(message) > 200:
            message = message[:197] + "..."
        raise ThresholdsError(f"schema: {_where(best.absolute_path)}: {message}")
    window = doc["window"]
    if window["slide_s"] > window["length_s"]:
        raise ThresholdsError(
            f"window: slide_s={window['slide_s']} is longer than length_s={window['length_s']}"
        )
    if window["length_s"] % window["slide_s"]:
        raise ThresholdsError(
            f"window: length_s={window['length_s']} is not a multiple of slide_s={window['slide_s']}"
        )
    if doc.get("schema_version", 1) == 2:
        _validate_evidence(doc)


def _validate_evidence(doc: dict[str, Any]) -> None:
    """Schema 2's cross-field rules: baselines strictly inside (0, 1) (the rule's variance
    n p (1 - p) must not vanish), seasonal lists as long as the season says, chronic keys
    among the overrides."""
    ev = doc["evidence"]
    rates = [("global/error_rate", doc["global"]["error_rate"])]
    for kind in ("ip", "url"):
        rates.append((f"{kind}/default", doc[kind]["default"]))
        rates += [(f"{kind}/overrides/{key}", v) for key, v in doc[kind]["overrides"].items()]
    for where, value in rates:
        if not 0 < value < 1:
            raise ThresholdsError(f"{where}: a baseline must be strictly between 0 and 1, got {value}")
    size = SEASONS[ev["season"]]
    by_season = ev.get("by_season") or {}
    for kind in KINDS:
        values = by_season.get(kind)
        if size == 1 and values is not None:
            raise ThresholdsError(f"evidence/by_season/{kind}: season is flat: no hourly baselines expected")
        if size > 1 and (values is None or len(values) != size):
            got = "none" if values is None else f"{len(values)} values"
            raise ThresholdsError(f"evidence/by_season/{kind}: season {ev['season']} needs {size} baselines, got {got}")
    for kind, keys in (ev.get("chronic") or {}).items():
        missing = sorted(set(keys) - set(doc[kind]["overrides"]))
        if missing:
            raise ThresholdsError(f"evidence/chronic/{kind}: {missing[0]!r} has no baseline in {kind}/overrides")


@dataclass(frozen=True)
class Thresholds:
    """A validated thresholds document with typed accessors (``.doc`` is the dict)."""

    doc: dict[str, Any] = field(repr=False)
    source: str | None = None  # the file it came from, if any

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], source: str | None = None) -> Thresholds:
        doc = json.loads(json.dumps(doc))  # a private deep copy: callers cannot mutate us
        validate(doc)
        return cls(doc=doc, source=source)

    @property
    def version(self) -> int:
        return int(self.doc["version"])

    @property
    def schema_version(self) -> int:
        return int(self.doc.get("schema_version", 1))

    @property
    def rule(self) -> str:
        """``"rate"`` (schema 1) or ``"evidence"`` (schema 2): how ``chaussettes.judge`` reads the file."""
        return RULES[self.schema_version]

    @property
    def window_length_s(self) -> int:
        return int(self.doc["window"]["length_s"])

    @property
    def window_slide_s(self) -> int:
        return int(self.doc["window"]["slide_s"])

    @property
    def watermark_s(self) -> int:
        return int(self.doc["window"]["watermark_s"])

    @property
    def error_status_min(self) -> int:
        return int(self.doc["error_status_min"])

    @property
    def resolve_after(self) -> int:
        """Consecutive judged windows without a breach that resolve an incident."""
        return int(self.doc.get("incidents", {}).get("resolve_after", RESOLVE_AFTER))

    @property
    def min_requests(self) -> dict[str, int]:
        return {kind: int(self.doc["min_requests"][kind]) for kind in KINDS}

    def default(self, kind: str) -> float:
        """The kind's threshold for keys without an override."""
        if kind == "global":
            return float(self.doc["global"]["error_rate"])
        if kind in ("ip", "url"):
            return float(self.doc[kind]["default"])
        raise ThresholdsError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")

    def overrides(self, kind: str) -> dict[str, float]:
        """Per-key thresholds of a kind (empty for global)."""
        if kind == "global":
            return {}
        if kind in ("ip", "url"):
            return {k: float(v) for k, v in self.doc[kind]["overrides"].items()}
        raise ThresholdsError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")

    def threshold(self, kind: str, key: str | None = None) -> float:
        """The threshold for one key: its override, else the kind's default (global ignores key).
        Under the evidence rule, the key's flat baseline (what it normally fails at)."""
        if kind == "global":
            return self.default("global")
        override = self.doc.get(kind, {}).get("overrides", {}).get(key) if key is not None else None
        return float(override) if override is not None else self.default(kind)

    # ---------------------------------------------------------------- the evidence rule (schema 2)
    def _evidence(self) -> dict[str, Any]:
        if self.schema_version != 2:
            raise ThresholdsError(f"version {self.version} uses the rate rule: it has no evidence section")
        return self.doc["evidence"]

    @property
    def z(self) -> float:
        """The evidence a window must exceed to breach."""
        return float(self._evidence()["z"])

    @property
    def min_errors(self) -> dict[str, int]:
        return {kind: int(self._evidence()["min_errors"][kind]) for kind in KINDS}

    @property
    def season(self) -> str:
        return str(self._evidence()["season"])

    def by_season(self, kind: str) -> list[float]:
        """The kind's baselines by hour (``[default]`` when the season is flat)."""
        values = (self._evidence().get("by_season") or {}).get(kind)
        return [float(v) for v in values] if values else [self.default(kind)]

    def dispersion(self, kind: str) -> float:
        return float(self._evidence()["dispersion"][kind])

    def chronic(self, kind: str) -> dict[str, tuple[float, float]]:
        """Chronic keys of a kind: key -> (errors per window, dispersion)."""
        keys = (self._evidence().get("chronic") or {}).get(kind) or {}
        return {k: (float(v["errors_per_window"]), float(v["dispersion"])) for k, v in keys.items()}

    def baseline(self, kind: str, key: str | None = None, window_start: float | None = None) -> float:
        """The error rate a window of this key is judged against under the evidence rule: the
        key's own baseline, else its kind's for the hour of ``window_start`` (epoch seconds;
        needed unless the season is flat)."""
        if kind != "global" and key is not None and key in self.doc[kind]["overrides"]:
            return float(self.doc[kind]["overrides"][key])
        if self.season == "flat":
            return self.default(kind)
        if window_start is None:
            raise ThresholdsError(f"the {self.season} baselines need the window start")
        return self.by_season(kind)[season_index(self.season, int(window_start))]


def season_index(season: str, window_start_s):
    """The index of a window's baseline in ``by_season``: 0 when flat, the UTC hour of its
    start (0-23) for hour_of_day, the hour of the week from Monday 00:00 UTC (0-167) for
    hour_of_week. ``window_start_s``: epoch seconds, an int or an int numpy array (floor
    division: right before 1970 too)."""
    if season == "flat":
        return window_start_s * 0
    hours = window_start_s // 3600
    if season == "hour_of_day":
        return hours % 24
    if season == "hour_of_week":
        return (hours + WEEK_OFFSET_H) % 168
    raise ThresholdsError(f"unknown season {season!r}: expected one of {', '.join(SEASONS)}")


def parse(text: str | bytes, source: str = "<text>") -> Thresholds:
    """Thresholds from JSON text; ThresholdsError (one line) when it is not valid."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ThresholdsError(f"{source}: not valid JSON: {' '.join(str(exc).split())}") from None
    try:
        return Thresholds.from_doc(doc, source=source)
    except ThresholdsError as exc:
        raise ThresholdsError(f"{source}: {exc}") from None


def load(path: str | os.PathLike[str]) -> Thresholds:
    """Load and validate a seuils.json; ThresholdsError (one line) when missing or invalid."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ThresholdsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ThresholdsError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise ThresholdsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise ThresholdsError(f"{path}: empty file")
    return parse(data, source=str(path))


def load_default() -> Thresholds:
    """The documented defaults shipped with the package (version 0)."""
    if DEFAULT_PATH.is_file():
        return load(DEFAULT_PATH)
    return parse(_package_text(DEFAULT_PATH.name), source=f"chaussettes/{DEFAULT_PATH.name}")


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def write(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Validate ``doc`` and write it to ``path`` atomically; returns the path.

    Raises ThresholdsError (and writes nothing) when the document is invalid.
    """
    if isinstance(doc, Thresholds):
        doc = doc.doc
    validate(dict(doc))
    return atomicfile.write_text(path, dumps(doc), durable=True)


class ThresholdsWatcher:
    """Hot reload for a long-running job.

    ``path_fn`` returns the file in force, or a resolution with ``.path`` and ``.refused``
    (``lambda: artifacts.resolve_thresholds(settings)``, whose ``refused`` says in one line
    which version of the store was refused and what is used instead); it is called on every
    ``current()``, which re-reads the file only when the path or the file changed (inode,
    size, mtime). A missing, unparseable or invalid file is rejected: the last good version
    stays in force and ``.rejected`` holds the one-line reason (None after a good load).
    ``.refused`` is the resolution's reason (None when the store's current version is in
    force); ``.error`` is both in one line, None when all is well (the detector's status shows
    it). Until a first good load, ``fallback`` (the shipped defaults unless None) is in force.
    """

    def __init__(
        self,
        path_fn: Callable[[], str | os.PathLike[str]] | str | os.PathLike[str],
        fallback: str | os.PathLike[str] | None = DEFAULT_PATH,
    ) -> None:
        if not callable(path_fn):
            fixed = Path(path_fn)
            path_fn = lambda: fixed
        self._path_fn = path_fn
        self._fallback = Path(fallback) if fallback is not None else None
        self._seen: tuple | None = None  # (path, ino, size, mtime_ns) of the last attempt
        self._good: Thresholds | None = None
        self.rejected: str | None = None
        self.refused: str | None = None
        self.loads = 0  # successful (re)loads, for status and tests
        self.rejections = 0

    @property
    def error(self) -> str | None:
        """What is wrong with the thresholds in force, in one line; None when nothing is."""
        return "; ".join(p for p in (self.rejected, self.refused) if p) or None

    @property
    def source(self) -> str | None:
        """The file of the version in force."""
        return self._good.source if self._good else None

    def _stamp(self, path: Path) -> tuple:
        try:
            st = path.stat()
        except OSError:
            return (str(path), None, None, None)
        return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self) -> Thresholds | None:
        """The thresholds in force (None only if nothing, not even the fallback, ever loaded)."""
        try:
            resolved = self._path_fn()
            path = Path(getattr(resolved, "path", resolved))
        except Exception as exc:  # noqa: BLE001 - a broken pointer must not stop the caller
            self._reject(f"cannot resolve the thresholds path: {' '.join(str(exc).split())}")
            return self._good_or_fallback()
        refused = getattr(resolved, "refused", None)
        if refused and refused != self.refused:
            log.error("thresholds: %s", refused)
        self.refused = refused
        stamp = self._stamp(path)
        if stamp == self._seen:
            return self._good_or_fallback()
        self._seen = stamp
        try:
            loaded = load(path)
        except ThresholdsError as exc:
            self._reject(str(exc))
            return self._good_or_fallback()
        if self._good is None or loaded.doc != self._good.doc or loaded.source != self._good.source:
            if self._good is not None:
                log.info("thresholds: now version %s from %s", loaded.version, loaded.source)
            self.loads += 1
        self._good = loaded
        self.rejected = None
        return loaded

    def _reject(self, reason: str) -> None:
        self.rejections += 1
        self.rejected = reason
        kept = f"version {self._good.version} stays in force" if self._good else "using the defaults"
        log.warning("thresholds rejected (%s): %s", kept, reason)

    def _good_or_fallback(self) -> Thresholds | None:
        if self._good is None and self._fallback is not None:
            try:
                self._good = load_default() if self._fallback == DEFAULT_PATH else load(self._fallback)
                self.loads += 1
            except ThresholdsError as exc:  # the shipped file is broken: say so, keep None
                log.error("default thresholds unusable: %s", exc)
        return self._good
