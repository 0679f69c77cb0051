"""Access-log lines: format and parse Apache Combined, JSON and CSV.

This module is the contract between the generator, the detector (whose Spark-native
parser, ``chaussettes.sparkparse``, must agree with it on ``tests/corpus/tricky_lines.jsonl``)
and the calibration. ``parse(line)`` never raises: it returns an :class:`Event` or an
:class:`Invalid` carrying a stable reason code from :data:`REASONS`.

The rules, in the order they are applied
-----------------------------------------
1. ``bytes`` input that is not UTF-8 -> ``not_utf8``.
2. More than :data:`MAX_LINE_LENGTH` characters (before trimming) -> ``too_long``.
3. Leading/trailing ``" \\t\\r\\n"`` are trimmed; nothing left -> ``empty``.
4. The format is detected from the trimmed line:
   - starts with ``{`` -> JSON;
   - equals :data:`CSV_HEADER` -> ``csv_header``;
   - starts with ``YYYY-MM-DD`` (optionally after a ``"``) -> CSV;
   - matches the Combined head ``TOKEN TOKEN TOKEN [TIME] `` -> Combined;
   - otherwise -> ``unknown_format``.

Apache Combined (also Common Log Format, and nginx's "main" format)::

    IP IDENT USER [dd/Mon/yyyy:HH:MM:SS +zzzz] "REQUEST" STATUS BYTES "REFERER" "USER-AGENT"

- A TOKEN is a run of non-space characters (``[^ ]+``): IPv4, IPv6 (``::1``) and
  host names are all accepted as ``ip``; no address validation.
- Common Log Format (the line ends after BYTES) is accepted: referrer and user_agent null.
  After the user agent, anything separated by a space is ignored (nginx's ``"$http_x_forwarded_for"``).
- Quoted fields are ``"..."`` where a backslash escapes the next character. Only ``\\"`` and
  ``\\\\`` are unescaped; httpd's other escapes (``\\xhh``, ``\\n``, ``\\t`` ...) and nginx's
  ``\\xHH`` stay as text, so a value is always the printable text of the log.
- REQUEST is ``METHOD TARGET PROTOCOL`` or ``METHOD TARGET`` (HTTP/0.9) with single spaces;
  METHOD matches ``[A-Za-z][A-Za-z0-9_-]*``, PROTOCOL matches ``[A-Z][A-Z0-9]*/\\d+(\\.\\d+)?``.
  **A request of exactly ``-``** (what httpd and nginx log for a connection closed before
  any request, typically with status 400 or 408) gives an **Event** whose method, url, query
  and protocol are null: the client did hit the server and got an error status, so it counts
  for the IP and global error rates (the URL statistic ignores null URLs).
  Anything else (TLS handshakes sent to the HTTP port, targets with spaces) -> ``bad_request_line``.
- TARGET is split at the first ``?``: ``url`` is before it, ``query`` after it (``""`` for a
  trailing ``?``, null without ``?``). Absolute-form targets (``http://h/p``) are kept as they are.
- STATUS is exactly three digits in 100..599, else ``bad_status``; BYTES is digits or ``-``
  (null), else ``bad_field``.
- Order of checks: head (``unknown_format``) -> REQUEST quoting (``bad_request_line``) -> the
  rest's shape (``bad_field``) -> time (``bad_timestamp``) -> REQUEST content
  (``bad_request_line``) -> STATUS (``bad_status``) -> BYTES (``bad_field``).

JSON: one object with ``timestamp``, ``ip``, ``method``, ``url``, ``status`` (required, not
null, else ``missing_field``) and optional ``protocol``, ``bytes``, ``referrer``,
``user_agent``; other keys are ignored. Invalid JSON -> ``bad_json``. Then, in column order:
``timestamp`` an ISO-8601 string (see below) else ``bad_timestamp``; ``ip`` a non-empty
string without spaces, ``method`` matching METHOD, ``url`` a non-empty string, ``protocol``
a string or null, else ``bad_field``; ``status`` a JSON integer (not a boolean, not 404.0,
not "404") in 100..599 else ``bad_status``; ``bytes`` a non-negative integer below 2**63 or
null, ``referrer``/``user_agent`` strings or null, else ``bad_field``.

CSV: :data:`CSV_HEADER` column order ``timestamp,ip,method,url,protocol,status,bytes,referrer,user_agent``,
RFC 4180 quoting (``"`` doubled inside quoted fields), an empty field is null. Fewer than 9
fields -> ``missing_field``, more -> ``bad_field``; an empty required field (timestamp, ip,
method, url, status) -> ``missing_field``; then the JSON checks in column order (status must
be three digits, bytes digits).

ISO-8601 timestamps (JSON and CSV): ``YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}][Z|z|+HH:MM|+HHMM]``;
fractions beyond microseconds are truncated; no zone means UTC.

In every format ``referrer`` and ``user_agent`` of ``-`` or ``""`` are null.
``event_time`` is always a timezone-aware UTC datetime.

The shared corpus ``tests/corpus/tricky_lines.jsonl``: one JSON object a line,
``{"line", "event" | null, "reason" | null, "note"}``; ``event`` has exactly the event
columns with ``event_time`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. A row may also carry
``"bytes_b64"``: then the input is those bytes (a line that is not UTF-8 cannot be a JSON
string; ``line`` only shows it), fed as a Kafka value would be.

The patterns below are also the Spark-native parser's (``chaussettes.sparkparse``): valid
Java regexes with the same meaning, none of which backtracks or recurses with the length of
the line (see the comment above them).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from chaussettes.schemas import EVENT_COLUMNS

UTC = _dt.UTC

#: Longest accepted line, in characters (httpd's default LimitRequestLine is 8190 bytes;
#: a full log line also carries referrer and user agent).
MAX_LINE_LENGTH = 16384

#: Stable reason codes of :class:`Invalid` (the quarantine's ``reason`` column).
REASONS: tuple[str, ...] = (
    "empty",  # nothing but whitespace
    "too_long",  # more than MAX_LINE_LENGTH characters
    "not_utf8",  # bytes that do not decode as UTF-8
    "unknown_format",  # not JSON, CSV or Combined
    "csv_header",  # the CSV header line itself
    "bad_json",  # starts with '{' but is not a JSON object
    "missing_field",  # a required field is absent, null or empty (JSON, CSV)
    "bad_timestamp",  # the time does not parse or is out of range
    "bad_request_line",  # Combined: REQUEST is not "METHOD TARGET [PROTOCOL]" nor "-"
    "bad_status",  # not an integer HTTP status in 100..599
    "bad_field",  # any other field of the wrong shape or type
)

FORMATS = ("combined", "json", "csv")

CSV_COLUMNS = ("timestamp", "ip", "method", "url", "protocol", "status", "bytes", "referrer", "user_agent")
CSV_HEADER = ",".join(CSV_COLUMNS)

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name: i + 1 for i, name in enumerate(MONTHS)}

# ---- regular expressions: the one home of the patterns both parsers run
# Each is a pattern's text (the Spark parser anchors it, ``^...\z``, for ``rlike``) and, as
# ``..._RE``, its compiled form for ``fullmatch``. The texts mean the same in Python's
# ``re`` and Java's regex: ``[^ ]``, ``[0-9]``, ``[\s\S]`` and explicit classes only (no
# ``\S``, ``\d`` or ``.``, whose meanings differ).
#
# A group repeated without bound is possessive (``*+``): Java's regex engine recurses once
# per repetition of a backtracking group (``(?:...)*``), so a user agent of a few KB of
# ``\"`` overflowed a Spark task thread's stack and killed the JVM (and again on every
# restart: the checkpoint replays the line). A possessive group is a plain loop in Java;
# Python 3.11's ``re`` reads it the same way. The quoted field is an "unrolled loop" where
# each character has one way to match, so giving back never ends on a closing quote: being
# possessive changes no match. ``tests/test_sparkparse.py`` checks every pattern of the
# Spark plan for this.
QUOTED = r'"([^"\\]*+(?:\\[\s\S][^"\\]*+)*+)"'
_HEAD = r"([^ ]+) ([^ ]+) ([^ ]+) \[([^\]]*)\] "  # IP IDENT USER [TIME] and a space
COMBINED_HEAD = _HEAD + r"([\s\S]*)"
COMBINED_HEAD_AND_REQUEST = _HEAD + QUOTED + r"[\s\S]*"
_REST = r" ([^ ]+) ([^ ]+)(?: " + QUOTED + " " + QUOTED + r"(?: [\s\S]*)?)?"
COMBINED_FULL = _HEAD + QUOTED + _REST
COMBINED_TIME = r"([0-9]{2})/([A-Z][a-z]{2})/([0-9]{4}):([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
REQUEST = r"([^ ]+) ([^ ]+)(?: ([^ ]+))?"
METHOD = r"[A-Za-z][A-Za-z0-9_-]*"
PROTOCOL = r"[A-Z][A-Z0-9]*/[0-9]+(?:\.[0-9]+)?"
ISO_TIME = (r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
            r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?")
CSV_START = r'"?[0-9]{4}-[0-9]{2}-[0-9]{2}'  # a prefix: ``match``, not ``fullmatch``
UNESCAPE = r'\\(["\\])'

COMBINED_HEAD_RE = re.compile(COMBINED_HEAD)
COMBINED_REQUEST_RE = re.compile(QUOTED + r"([\s\S]*)")
COMBINED_REST_RE = re.compile(_REST)
COMBINED_TIME_RE = re.compile(COMBINED_TIME)
# REQUEST + METHOD + PROTOCOL in one pattern (same language)
REQUEST_FULL_RE = re.compile(f"({METHOD}) ([^ ]+)(?: ({PROTOCOL}))?")
COMBINED_FULL_RE = re.compile(COMBINED_FULL)
METHOD_RE = re.compile(METHOD)
ISO_RE = re.compile(ISO_TIME)
CSV_START_RE = re.compile(CSV_START)
STATUS_RE = re.compile(r"[0-9]{3}")
DIGITS_RE = re.compile(r"[0-9]+")
_UNESCAPE_RE = re.compile(UNESCAPE)
TRIM = " \t\r\n"  # stripped from both ends of a line
_MAX_LONG = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Event:
    """One parsed access-log line: exactly ``schemas.EVENT_COLUMNS``."""

    event_time: _dt.datetime  # timezone-aware, UTC
    ip: str
    method: str | None
    url: str | None  # the path (request target before '?')
    query: str | None  # after the first '?', or None
    protocol: str | None
    status: int
    bytes: int | None
    referrer: str | None
    user_agent: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: event_time as ISO-8601 UTC with microseconds and ``Z``."""
        d = asdict(self)
        d["event_time"] = iso_utc(self.event_time)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        t = d["event_time"]
        if isinstance(t, str):
            t = _dt.datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return cls(**{**{k: d.get(k) for k in EVENT_COLUMNS}, "event_time": t.astimezone(UTC)})

    @property
    def target(self) -> str | None:
        """url and query joined back (what followed the method in the request)."""
        if self.url is None:
            return None
        return self.url if self.query is None else f"{self.url}?{self.query}"


assert tuple(Event.__dataclass_fields__) == EVENT_COLUMNS


@dataclass(frozen=True, slots=True)
class Invalid:
    """A line that is none of the formats; ``reason`` is one of :data:`REASONS`."""

    reason: str
    detail: str = ""

    def __bool__(self) -> bool:  # `if event := parse(line):`
        return False


_INVALID = {r: Invalid(r) for r in REASONS}


# ----------------------------------------------------------------------------- time helpers
def iso_utc(t: _dt.datetime) -> str:
    """``2025-05-30T18:52:47.123456Z`` (always six fraction digits)."""
    t = t.astimezone(UTC)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}Z"


def clf_time(t: _dt.datetime) -> str:
    """``30/May/2025:18:52:47 +0000`` (Combined, UTC, seconds)."""
    t = t.astimezone(UTC)
    return (f"{t.day:02d}/{MONTHS[t.month - 1]}/{t.year:04d}:"
            f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} +0000")


@lru_cache(maxsize=8192)
def parse_clf_time(text: str) -> _dt.datetime | None:
    m = COMBINED_TIME_RE.fullmatch(text)
    if not m:
        return None
    day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
    month = _MONTH_NUMBER.get(mon)
    if month is None:
        return None
    try:
        tz = _offset(sign, oh, om)
        if tz is None:
            return None
        return _dt.datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


@lru_cache(maxsize=1024)
def _offset(sign: str, oh: str, om: str) -> _dt.timezone | None:
    h, m = int(oh), int(om)
    if h > 23 or m > 59:
        return None
    delta = _dt.timedelta(hours=h, minutes=m)
    return _dt.timezone(-delta if sign == "-" else delta)


def parse_iso_time(text: str) -> _dt.datetime | None:
    """The ISO-8601 subset of JSON and CSV lines (see the module docstring), or None."""
    m = ISO_RE.fullmatch(text)
    if not m:
        return None
    year, month, day, hh, mm, ss, frac, _z, sign, oh, om = m.groups()
    try:
        if sign:
            tz = _offset(sign, oh, om)
            if tz is None:
                return None
        else:
            tz = UTC
        micro = int((frac + "00000")[:6]) if frac else 0
        return _dt.datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss), micro,
                            tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


# ----------------------------------------------------------------------------- parse
def detect_format(line: str) -> str | None:
    """``combined``, ``json``, ``csv`` or None, from the trimmed line's shape only."""
    if line.startswith("{"):
        return "json"
    if CSV_START_RE.match(line):
        return "csv"
    if COMBINED_HEAD_RE.fullmatch(line):
        return "combined"
    return None


def parse(line: str | bytes) -> Event | Invalid:
    """Parse one access-log line of any of the three formats; never raises."""
    if isinstance(line, (bytes, bytearray, memoryview)):
        try:
            line = bytes(line).decode("utf-8")
        except UnicodeDecodeError:
            return _INVALID["not_utf8"]
    if len(line) > MAX_LINE_LENGTH:
        return _INVALID["too_long"]
    line = line.strip(TRIM)
    if not line:
        return _INVALID["empty"]
    try:
        first = line[0]
        if first == "{":
            return _parse_json(line)
        if line == CSV_HEADER:
            return _INVALID["csv_header"]
        if CSV_START_RE.match(line):
            return _parse_csv(line)
        full = COMBINED_FULL_RE.fullmatch(line)
        if full:
            return _combined_event(*full.groups())
        head = COMBINED_HEAD_RE.fullmatch(line)
        if head:
            return _parse_combined(head)
        return _INVALID["unknown_format"]
    except Exception as exc:  # noqa: BLE001 - a bug here must not stop a stream: report it as a reason
        return Invalid("bad_field", f"{type(exc).__name__}: {exc}")


def _unescape(text: str) -> str:
    return _UNESCAPE_RE.sub(r"\1", text) if "\\" in text else text


def _nullable_text(value: str | None) -> str | None:
    if value is None or value == "-" or value == "":
        return None
    return value


def _split_target(target: str) -> tuple[str, str | None]:
    url, sep, query = target.partition("?")
    return url, (query if sep else None)


def _parse_combined(head: re.Match) -> Event | Invalid:
    """The staged path, for lines the one-regex fast path refused: finds the reason."""
    ip, ident, user, time_text, rest = head.groups()
    req = COMBINED_REQUEST_RE.fullmatch(rest)
    if not req:
        return _INVALID["bad_request_line"]
    request, rest = req.groups()
    tail = COMBINED_REST_RE.fullmatch(rest)
    if not tail:
        return _INVALID["bad_field"]
    return _combined_event(ip, ident, user, time_text, request, *tail.groups())


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _combined_event(ip, _ident, _user, time_text, request, status_text, bytes_text, referrer,
                    user_agent) -> Event | Invalid:
    event_time = parse_clf_time(time_text)
    if event_time is None:
        return _INVALID["bad_timestamp"]
    if "\\" in request:
        request = _unescape(request)
    if request == "-":
        method = url = query = protocol = None
    else:
        rm = REQUEST_FULL_RE.fullmatch(request)
        if not rm:
            return _INVALID["bad_request_line"]
        method, target, protocol = rm.groups()
        url, sep, query = target.partition("?")
        if not sep:
            query = None
    if len(status_text) != 3 or not _is_digits(status_text) or not 100 <= int(status_text) <= 599:
        return _INVALID["bad_status"]
    if bytes_text == "-":
        size = None
    elif _is_digits(bytes_text) and int(bytes_text) <= _MAX_LONG:
        size = int(bytes_text)
    else:
        return _INVALID["bad_field"]
    if referrer is not None:
        referrer = _nullable_text(_unescape(referrer))
        user_agent = _nullable_text(_unescape(user_agent))
    return Event(event_time, ip, method, url, query, protocol, int(status_text), size, referrer, user_agent)


_REQUIRED = ("timestamp", "ip", "method", "url", "status")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_json(line: str) -> Event | Invalid:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return _INVALID["bad_json"]
    if not isinstance(obj, dict):
        return _INVALID["bad_json"]
    for name in _REQUIRED:
        if obj.get(name) is None:
            return _INVALID["missing_field"]
    ts = obj["timestamp"]
    event_time = parse_iso_time(ts) if isinstance(ts, str) else None
    if event_time is None:
        return _INVALID["bad_timestamp"]
    ip, method, target, protocol = obj["ip"], obj["method"], obj["url"], obj.get("protocol")
    if not isinstance(ip, str) or not ip or " " in ip:
        return _INVALID["bad_field"]
    if not isinstance(method, str) or not METHOD_RE.fullmatch(method):
        return _INVALID["bad_field"]
    if not isinstance(target, str) or not target:
        return _INVALID["bad_field"]
    if protocol is not None and not isinstance(protocol, str):
        return _INVALID["bad_field"]
    status = obj["status"]
    if not _is_int(status) or not 100 <= status <= 599:
        return _INVALID["bad_status"]
    size = obj.get("bytes")
    if size is not None and (not _is_int(size) or not 0 <= size <= _MAX_LONG):
        return _INVALID["bad_field"]
    referrer, user_agent = obj.get("referrer"), obj.get("user_agent")
    for value in (referrer, user_agent):
        if value is not None and not isinstance(value, str):
            return _INVALID["bad_field"]
    url, query = _split_target(target)
    return Event(event_time, ip, method, url, query, protocol or None, status, size,
                 _nullable_text(referrer), _nullable_text(user_agent))


def _parse_csv(line: str) -> Event | Invalid:
    try:
        fields = next(csv.reader([line], strict=True))
    except (csv.Error, StopIteration):
        return _INVALID["bad_field"]
    if len(fields) < len(CSV_COLUMNS):
        return _INVALID["missing_field"]
    if len(fields) > len(CSV_COLUMNS):
        return _INVALID["bad_field"]
    ts, ip, method, target, protocol, status_text, bytes_text, referrer, user_agent = fields
    if not (ts and ip and method and target and status_text):
        return _INVALID["missing_field"]
    event_time = parse_iso_time(ts)
    if event_time is None:
        return _INVALID["bad_timestamp"]
    if " " in ip:
        return _INVALID["bad_field"]
    if not METHOD_RE.fullmatch(method):
        return _INVALID["bad_field"]
    if not STATUS_RE.fullmatch(status_text) or not 100 <= int(status_text) <= 599:
        return _INVALID["bad_status"]
    if not bytes_text:
        size = None
    elif DIGITS_RE.fullmatch(bytes_text) and int(bytes_text) <= _MAX_LONG:
        size = int(bytes_text)
    else:
        return _INVALID["bad_field"]
    url, query = _split_target(target)
    return Event(event_time, ip, method, url, query, protocol or None, int(status_text), size,
                 _nullable_text(referrer), _nullable_text(user_agent))


# ----------------------------------------------------------------------------- format
# httpd's ap_escape_logitem works on bytes: printable ASCII stays, '"' and '\' get a
# backslash, \b \n \r \t \v their C escapes, every other byte (controls, DEL, UTF-8) \xhh.
_ESCAPES = {}
for _b in range(256):
    if 0x20 <= _b <= 0x7E and _b not in (0x22, 0x5C):
        _ESCAPES[_b] = chr(_b)
    elif _b in (0x22, 0x5C):
        _ESCAPES[_b] = "\\" + chr(_b)
    else:
        _ESCAPES[_b] = {0x08: "\\b", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x0B: "\\v"}.get(_b, f"\\x{_b:02x}")
_SAFE_RE = re.compile(r'[ !#-\[\]-~]*')  # printable ASCII without '"' and '\'


def escape_logitem(text: str) -> str:
    """Escape one quoted Combined field exactly as httpd's ``ap_escape_logitem``."""
    if _SAFE_RE.fullmatch(text):
        return text
    return "".join(_ESCAPES[b] for b in text.encode("utf-8", "surrogateescape"))


def request_line(event: Event) -> str:
    """``METHOD TARGET PROTOCOL`` as the client sent it, or ``-`` when there was none."""
    if event.method is None:
        return "-"
    target = event.target or ""
    return f"{event.method} {target} {event.protocol}" if event.protocol else f"{event.method} {target}"


def format_combined(event: Event) -> str:
    """The line httpd writes with ``LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{Referer}i\\"
    \\"%{User-Agent}i\\"" combined`` (time in UTC, ``+0000``)."""
    size = "-" if not event.bytes else str(event.bytes)  # %b writes '-' for zero bytes
    referrer = "-" if event.referrer is None else escape_logitem(event.referrer)
    user_agent = "-" if event.user_agent is None else escape_logitem(event.user_agent)
    return (f'{event.ip} - - [{clf_time(event.event_time)}] "{escape_logitem(request_line(event))}" '
            f'{event.status} {size} "{referrer}" "{user_agent}"')


def json_dict(event: Event) -> dict[str, Any]:
    """The JSON object of ``format_json``: CSV column order, optional fields only when not null."""
    d: dict[str, Any] = {"timestamp": iso_utc(event.event_time), "ip": event.ip,
                         "method": event.method, "url": event.target}
    if event.protocol is not None:
        d["protocol"] = event.protocol
    d["status"] = event.status
    for name in ("bytes", "referrer", "user_agent"):
        value = getattr(event, name)
        if value is not None:
            d[name] = value
    return d


def format_json(event: Event) -> str:
    """One JSON object a line (the users' existing schema plus optional fields)."""
    return json.dumps(json_dict(event), ensure_ascii=False)


class _LineWriter:
    def __init__(self):
        self.line = ""

    def write(self, text: str) -> None:
        self.line = text


_csv_sink = _LineWriter()
# "\r\n" as terminator so that the writer quotes fields holding CR or LF; it is cut off below.
_csv_writer = csv.writer(_csv_sink, lineterminator="\r\n")


def format_csv(event: Event) -> str:
    """One CSV row in :data:`CSV_HEADER` order, RFC 4180 quoting, null as an empty field."""
    _csv_writer.writerow([
        iso_utc(event.event_time), event.ip, event.method, event.target, event.protocol,
        event.status, event.bytes, event.referrer, event.user_agent,
    ])
    return _csv_sink.line[:-2]


def csv_field(value: Any) -> str:
    """One field as ``format_csv`` writes it inside a row (None and "" are empty)."""
    if value is None or value == "":
        return ""
    _csv_writer.writerow([value])
    return _csv_sink.line[:-2]


FORMATTERS = {"combined": format_combined, "json": format_json, "csv": format_csv}


def format_event(event: Event, fmt: str) -> str:
    return FORMATTERS[fmt](event)
