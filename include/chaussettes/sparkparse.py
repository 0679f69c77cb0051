"""The Spark-native parser of access-log lines: the rules of ``chaussettes.logformat``
written as Spark column expressions (regular expressions, the VARIANT JSON parser,
``try_make_timestamp``) — no Python UDF on the hot path, so it runs in the JVM at the
speed of the rest of the query.

``parse_lines(df, value_col="value") -> (events_df, quarantine_df)``:

- ``events_df``: ``schemas.EVENT_FIELDS`` columns (plus nothing else);
- ``quarantine_df``: ``schemas.QUARANTINE_FIELDS`` — the raw line (its first
  ``schemas.QUARANTINE_RAW_PREFIX`` characters when it is over ``logformat.MAX_LINE_LENGTH``)
  and its length, the reason code (one of ``logformat.REASONS``, the same the Python
  parser gives), the source topic, partition and offset when the input has them, and the
  time it was quarantined.

``parse_column(df, value_col)`` is the single pass underneath: every input row with the
event columns, ``reason`` (null for a good line), ``raw`` and ``raw_length``. The detector and the
calibration use its pieces (``fast_of`` / ``fast_parts``, ``good_of``, ``full_rules_of``)
to cache the one-regex fast path and run the full rules only on the lines it refused.
``tests/test_sparkparse.py`` checks that it agrees with
``logformat.parse`` on every line of ``tests/corpus/tricky_lines.jsonl``.

Speed: a regular expression that captures several groups is evaluated once per line
(``regexp_replace`` to a separator-joined string, then ``split``) rather than once per
group; lines that contain the separator character fall back to one ``regexp_extract``
per group. The fast path's expression (FAST_COMBINED, most lines) is evaluated by a Java
scanner instead where the session has it (``chaussettes.jvm``), over the line's bytes: the
same groups and the same refusals, and the fast path in well under half the time
(bench_parser); the line's encoding, length and blank ends are then checked only for the
lines it leaves.
"""

from __future__ import annotations

from chaussettes import jvm, logformat, schemas

SEP = "\u0001"
MAX_LONG = 2**63 - 1


def _whole(pattern: str) -> str:
    r"""``pattern`` matching the whole line (``rlike`` finds): ``\z``, not ``$``, which in
    Java also matches before a final line terminator (U+2028, U+0085...)."""
    return "^(?:" + pattern + r")\z"


# The patterns are logformat's (one home); see its comment on why no repeated group there
# (nor here) backtracks.
COMBINED_FULL = _whole(logformat.COMBINED_FULL)
# group numbers in COMBINED_FULL
_C_IP, _C_TIME, _C_REQUEST, _C_STATUS, _C_BYTES, _C_REFERRER, _C_UA = 1, 4, 5, 6, 7, 8, 9
COMBINED_HEAD = _whole(logformat.COMBINED_HEAD)
COMBINED_HEAD_AND_REQUEST = _whole(logformat.COMBINED_HEAD_AND_REQUEST)
CLF_TIME = _whole(logformat.COMBINED_TIME)
ISO_TIME = _whole(logformat.ISO_TIME)
REQUEST = _whole(logformat.REQUEST)
METHOD = _whole(logformat.METHOD)
PROTOCOL = _whole(logformat.PROTOCOL)
CSV_START = "^" + logformat.CSV_START
UNESCAPE = logformat.UNESCAPE
DIGITS = r"^[0-9]+\z"
STATUS_DIGITS = r"^[0-9]{3}\z"
INTEGER = r"^-?[0-9]+\z"
DECIMAL_INTEGER_TYPE = r"^DECIMAL\([0-9]+,0\)\z"
# CSV (RFC 4180 as Python's csv reader reads it): a field is quoted ('""' inside) or not
_CSV_QUOTED = r'"[^"]*+(?:""[^"]*+)*+"'
_CSV_FIELD = "(" + _CSV_QUOTED + r'|(?:[^,"\r\n][^,\r\n]*+)?)'
CSV_FULL = "^" + ",".join([_CSV_FIELD] * 9) + r"\z"
CSV_WELL_FORMED = "^" + _CSV_FIELD + "(?:," + _CSV_FIELD + r")*+\z"
CSV_FIELD_CONTENT = "(" + _CSV_QUOTED + r'|[^,"\r\n][^,\r\n]*+)'
CSV_QUOTED_CONTENT = r'^"([\s\S]*)"\z'
_MONTHS = {name: i + 1 for i, name in enumerate(logformat.MONTHS)}


def _F():
    from pyspark.sql import functions as F

    return F


def _groups(line, pattern: str, n: int):
    """Groups 1..n of ``pattern`` matched on ``line`` as an array of strings ("" for an
    unmatched group), with one regex evaluation per row when possible."""
    F = _F()
    joined = F.regexp_replace(line, pattern, SEP.join(f"${i}" for i in range(1, n + 1)))
    fast = F.split(joined, SEP, -1)
    slow = F.array(*[F.regexp_extract(line, pattern, i) for i in range(1, n + 1)])
    return F.when(F.instr(line, SEP) == 0, fast).otherwise(slow)


def _unescape(col):
    return _F().regexp_replace(col, UNESCAPE, "$1")


def _nullable_text(col):
    F = _F()
    return F.when(col.isNull() | (col == "-") | (col == ""), F.lit(None).cast("string")).otherwise(col)


def _digits_long(col):
    """A string of ASCII digits as a long, null when not digits or above 2**63-1."""
    F = _F()
    return F.when(col.rlike(DIGITS), col.try_cast("decimal(38,0)")).otherwise(None) \
        .try_cast("long")


def _status(col):
    """Three digits in 100..599 as an int, else null."""
    F = _F()
    value = F.when(col.rlike(STATUS_DIGITS), col.cast("int"))
    return F.when((value >= 100) & (value <= 599), value)


def _valid_time(year, month, day, hh, mm, ss, micros, offset_s):
    """UTC timestamp, or null for an impossible date/time or a result outside years 1..9999.
    ``offset_s``: the zone's offset east of UTC in seconds (the wall time is built in UTC,
    then shifted: Java zone offsets stop at 18 h, logformat's go to 23:59)."""
    F = _F()
    seconds = (ss.cast("decimal(10,0)") + micros.cast("decimal(10,0)") / F.lit(1_000_000)).cast("decimal(16,6)")
    ok = (hh.cast("int") <= 23) & (mm.cast("int") <= 59) & (ss.cast("int") <= 59) \
        & (year.cast("int") >= 1)
    wall = F.try_make_timestamp(year.cast("int"), month.cast("int"), day.cast("int"),
                                hh.cast("int"), mm.cast("int"), seconds, F.lit("UTC"))
    ts = F.timestamp_micros(F.unix_micros(wall) - offset_s.cast("long") * F.lit(1_000_000))
    y = F.year(ts)
    return F.when(ok & wall.isNotNull() & (y >= 1) & (y <= 9999), ts)


def _zone(sign, oh, om):
    """The offset in seconds when it is valid (hours <= 23, minutes <= 59), else null."""
    F = _F()
    ok = (oh.cast("int") <= 23) & (om.cast("int") <= 59)
    seconds = oh.cast("int") * 3600 + om.cast("int") * 60
    return F.when(ok, F.when(sign == "-", -seconds).otherwise(seconds))


def _with_clf_time(df, text_col: str, out: str):
    """Add ``out``: the UTC timestamp of a Combined time field, null when invalid."""
    F = _F()
    text = F.col(text_col)
    g = f"__{out}_g"
    df = df.withColumn(g, F.when(text.rlike(CLF_TIME), _groups(text, CLF_TIME, 9)))
    months = F.create_map(*[x for k, v in _MONTHS.items() for x in (F.lit(k), F.lit(v))])
    a = F.col(g)
    df = df.withColumn(f"__{out}_m", F.try_element_at(months, a[1])) \
           .withColumn(f"__{out}_z", _zone(a[6], a[7], a[8]))
    month, zone = F.col(f"__{out}_m"), F.col(f"__{out}_z")
    t = _valid_time(a[2], month.cast("string"), a[0], a[3], a[4], a[5], F.lit(0), zone)
    return df.withColumn(out, F.when(a.isNotNull() & month.isNotNull() & zone.isNotNull(), t)) \
             .drop(g, f"__{out}_m", f"__{out}_z")


def _with_iso_time(df, text_col: str, out: str):
    """Add ``out``: logformat.parse_iso_time of a string column (null when it would be None)."""
    F = _F()
    text = F.col(text_col)
    g = f"__{out}_g"
    df = df.withColumn(g, F.when(text.isNotNull() & text.rlike(ISO_TIME), _groups(text, ISO_TIME, 11)))
    a = F.col(g)
    frac = a[6]
    df = df.withColumn(f"__{out}_u", F.when(frac == "", F.lit("0"))
                       .otherwise(F.rpad(F.substring(frac, 1, 6), 6, "0"))) \
           .withColumn(f"__{out}_z", F.when(a[8] != "", _zone(a[8], a[9], a[10])).otherwise(F.lit(0)))
    micros, zone = F.col(f"__{out}_u"), F.col(f"__{out}_z")
    t = _valid_time(a[0], a[1], a[2], a[3], a[4], a[5], micros, zone)
    return df.withColumn(out, F.when(a.isNotNull() & zone.isNotNull(), t)) \
             .drop(g, f"__{out}_u", f"__{out}_z")


def _with_target(df, target_col: str, prefix: str):
    """Add ``<prefix>url`` and ``<prefix>query``: the target split at its first '?'."""
    F = _F()
    t = F.col(target_col)
    pos = F.instr(t, "?")
    return df.withColumn(f"{prefix}url", F.when(pos > 0, F.substring_index(t, "?", 1)).otherwise(t)) \
             .withColumn(f"{prefix}query", F.when(pos > 0, F.expr(f"substring(`{target_col}`, instr(`{target_col}`, '?') + 1)")))


def _event_struct(time, ip, method, url, query, protocol, status, size, referrer, user_agent):
    F = _F()
    return F.struct(
        time.cast("timestamp").alias("event_time"), ip.cast("string").alias("ip"),
        method.cast("string").alias("method"), url.cast("string").alias("url"),
        query.cast("string").alias("query"), protocol.cast("string").alias("protocol"),
        status.cast("int").alias("status"), size.cast("long").alias("bytes"),
        referrer.cast("string").alias("referrer"), user_agent.cast("string").alias("user_agent"),
    )


def _reason(*pairs):
    """First reason whose condition holds (pairs of (condition, code)), else null."""
    F = _F()
    expr = None
    for cond, code in pairs:
        expr = (F.when if expr is None else expr.when)(cond, F.lit(code))
    return expr.otherwise(F.lit(None).cast("string"))


def _combined(df):
    """Adds c_event (struct) and c_reason for the Combined rows (``__fmt``), from ``line``."""
    F = _F()
    line, c = F.col("__line"), F.col
    is_fmt = F.col("__fmt") == "combined"
    df = df.withColumn("__c_full", is_fmt & line.rlike(COMBINED_FULL))
    df = df.withColumn("__cg", F.when(c("__c_full"), _groups(line, COMBINED_FULL, 9)))
    g = c("__cg")
    df = df.withColumn("__c_req", _unescape(g[_C_REQUEST - 1]))
    req = c("__c_req")
    df = df.withColumn("__c_rq", F.when(req.rlike(REQUEST), _groups(req, REQUEST, 3)))
    rq = c("__c_rq")
    df = df.withColumn("__c_method", rq[0]).withColumn("__c_target", rq[1]) \
           .withColumn("__c_protocol", F.when(rq[2] != "", rq[2])) \
           .withColumn("__c_dash", req == "-")
    dash, method, protocol = c("__c_dash"), c("__c_method"), c("__c_protocol")
    df = _with_clf_time(df.withColumn("__c_tt", g[_C_TIME - 1]), "__c_tt", "__c_time")
    df = _with_target(df, "__c_target", "__c_")
    df = df.withColumn("__c_status", _status(g[_C_STATUS - 1])) \
           .withColumn("__c_bt", g[_C_BYTES - 1])
    bt = c("__c_bt")
    df = df.withColumn("__c_bytes", F.when(bt == "-", F.lit(None).cast("long")).otherwise(_digits_long(bt)))
    request_ok = dash | (rq.isNotNull() & method.rlike(METHOD)
                         & (protocol.isNull() | protocol.rlike(PROTOCOL)))
    reason = _reason(
        (~is_fmt, "unknown_format"),
        (~line.rlike(COMBINED_HEAD_AND_REQUEST), "bad_request_line"),
        (~c("__c_full"), "bad_field"),
        (c("__c_time").isNull(), "bad_timestamp"),
        (~request_ok, "bad_request_line"),
        (c("__c_status").isNull(), "bad_status"),
        ((bt != "-") & c("__c_bytes").isNull(), "bad_field"),
    )
    event = _event_struct(
        c("__c_time"), g[_C_IP - 1], F.when(~dash, method), F.when(~dash, c("__c_url")),
        F.when(~dash, c("__c_query")), F.when(~dash, protocol), c("__c_status"), c("__c_bytes"),
        _nullable_text(_unescape(g[_C_REFERRER - 1])), _nullable_text(_unescape(g[_C_UA - 1])),
    )
    df = df.withColumn("c_reason", reason).withColumn("c_event", F.when(is_fmt, event))
    return df.drop(*[x for x in df.columns if x.startswith("__c")])


def _json(df):
    F = _F()
    line, c = F.col("__line"), F.col
    is_fmt = F.col("__fmt") == "json"
    # Wrapped in [ ]: the variant parser stops after the first value, so trailing text
    # ("{...} x") would pass unnoticed; inside an array it is a syntax error, and a
    # second value ("{...}, 1") shows as a second element.
    df = df.withColumn("__jw", F.when(is_fmt, F.try_parse_json(F.concat(F.lit("["), line, F.lit("]")))))
    w = c("__jw")
    df = df.withColumn("__jv", F.when(F.try_variant_get(w, "$[1]", "variant").isNull(),
                                      F.try_variant_get(w, "$[0]", "variant")))
    v = c("__jv")
    names = ("timestamp", "ip", "method", "url", "protocol", "status", "bytes", "referrer", "user_agent")
    df = df.withColumn("__j_obj", F.coalesce(F.schema_of_variant(v).startswith("OBJECT"), F.lit(False)))
    for name in names:
        df = df.withColumn(f"__jf_{name}", F.when(c("__j_obj"), F.try_variant_get(v, f"$.{name}", "variant")))
    for name in names:
        f = c(f"__jf_{name}")
        df = df.withColumn(f"__jt_{name}", F.when(f.isNull(), F.lit("MISSING")).otherwise(F.schema_of_variant(f)))
    for name in ("timestamp", "ip", "method", "url", "protocol", "referrer", "user_agent"):
        df = df.withColumn(f"__js_{name}", F.when(c(f"__jt_{name}") == "STRING",
                                                  F.try_variant_get(c(f"__jf_{name}"), "$", "string")))

    def is_null(name):
        return c(f"__jt_{name}").isin("MISSING", "VOID")

    def is_string(name):
        return c(f"__jt_{name}") == "STRING"

    def integer(name):
        t = c(f"__jt_{name}")
        is_int = t.isin("BIGINT", "INT", "SMALLINT", "TINYINT") | t.rlike(DECIMAL_INTEGER_TYPE)
        raw = F.get_json_object(line, f"$.{name}")
        return F.when(is_int & raw.rlike(INTEGER), raw.try_cast("decimal(38,0)"))

    df = _with_iso_time(df, "__js_timestamp", "__j_time")
    df = df.withColumn("__j_status_n", integer("status")).withColumn("__j_bytes_n", integer("bytes"))
    sn, bn = c("__j_status_n"), c("__j_bytes_n")
    df = df.withColumn("__j_status", F.when((sn >= 100) & (sn <= 599), sn.cast("int"))) \
           .withColumn("__j_bytes", F.when((bn >= 0) & (bn <= F.lit(MAX_LONG).cast("decimal(38,0)")),
                                           bn.cast("long")))
    ip, method, target = c("__js_ip"), c("__js_method"), c("__js_url")
    required_missing = None
    for name in ("timestamp", "ip", "method", "url", "status"):
        cond = is_null(name)
        required_missing = cond if required_missing is None else (required_missing | cond)
    reason = _reason(
        (~is_fmt, "unknown_format"),
        (~c("__j_obj"), "bad_json"),
        (required_missing, "missing_field"),
        (c("__j_time").isNull(), "bad_timestamp"),
        (~is_string("ip") | (ip == "") | (F.instr(ip, " ") > 0), "bad_field"),
        (~is_string("method") | ~method.rlike(METHOD), "bad_field"),
        (~is_string("url") | (target == ""), "bad_field"),
        (~is_null("protocol") & ~is_string("protocol"), "bad_field"),
        (c("__j_status").isNull(), "bad_status"),
        (~is_null("bytes") & c("__j_bytes").isNull(), "bad_field"),
        (~is_null("referrer") & ~is_string("referrer"), "bad_field"),
        (~is_null("user_agent") & ~is_string("user_agent"), "bad_field"),
    )
    df = _with_target(df, "__js_url", "__j_")
    protocol = c("__js_protocol")
    event = _event_struct(c("__j_time"), ip, method, c("__j_url"), c("__j_query"),
                          F.when(protocol != "", protocol), c("__j_status"), c("__j_bytes"),
                          _nullable_text(c("__js_referrer")), _nullable_text(c("__js_user_agent")))
    df = df.withColumn("j_reason", reason).withColumn("j_event", F.when(is_fmt, event))
    return df.drop(*[x for x in df.columns if x.startswith("__j")])


def _unquote_csv(col):
    F = _F()
    return F.when(col.startswith('"'), F.regexp_replace(F.regexp_extract(col, CSV_QUOTED_CONTENT, 1), '""', '"')) \
        .otherwise(col)


def _csv(df):
    F = _F()
    line, c = F.col("__line"), F.col
    is_fmt = F.col("__fmt") == "csv"
    df = df.withColumn("__v_full", is_fmt & line.rlike(CSV_FULL))
    df = df.withColumn("__vg", F.when(c("__v_full"), _groups(line, CSV_FULL, 9)))
    names = ("ts", "ip", "method", "target", "protocol", "status", "bytes", "referrer", "user_agent")
    for i, name in enumerate(names):
        df = df.withColumn(f"__v_{name}", _unquote_csv(c("__vg")[i]))
    df = df.withColumn("__v_count", F.when(is_fmt & ~c("__v_full"),
                                           F.length(F.regexp_replace(line, CSV_FIELD_CONTENT, "")) + 1))
    df = df.withColumn("__v_wf", c("__v_full") | (is_fmt & line.rlike(CSV_WELL_FORMED)))
    df = _with_iso_time(df, "__v_ts", "__v_time")
    df = df.withColumn("__v_st", _status(c("__v_status")))
    bt = c("__v_bytes")
    df = df.withColumn("__v_size", F.when(bt == "", F.lit(None).cast("long")).otherwise(_digits_long(bt)))
    count = c("__v_count")
    reason = _reason(
        (~is_fmt, "unknown_format"),
        (~c("__v_wf"), "bad_field"),
        (~c("__v_full") & (count < 9), "missing_field"),
        (~c("__v_full"), "bad_field"),
        ((c("__v_ts") == "") | (c("__v_ip") == "") | (c("__v_method") == "") | (c("__v_target") == "")
         | (c("__v_status") == ""), "missing_field"),
        (c("__v_time").isNull(), "bad_timestamp"),
        (F.instr(c("__v_ip"), " ") > 0, "bad_field"),
        (~c("__v_method").rlike(METHOD), "bad_field"),
        (c("__v_st").isNull(), "bad_status"),
        ((bt != "") & c("__v_size").isNull(), "bad_field"),
    )
    df = _with_target(df, "__v_target", "__v_")
    protocol = c("__v_protocol")
    event = _event_struct(c("__v_time"), c("__v_ip"), c("__v_method"), c("__v_url"), c("__v_query"),
                          F.when(protocol != "", protocol), c("__v_st"), c("__v_size"),
                          _nullable_text(c("__v_referrer")), _nullable_text(c("__v_user_agent")))
    df = df.withColumn("v_reason", reason).withColumn("v_event", F.when(is_fmt, event))
    return df.drop(*[x for x in df.columns if x.startswith("__v")])


# The fast path: a typical Combined line (no escapes, a plain request, a 3-digit status
# in 100..599, a short byte count) parsed by ONE regular expression. Lines it does not
# take go through the full rules above; both give what logformat.parse gives.
# The lookahead refuses what logformat reads as CSV (CSV_START) inside the same match,
# and the possessive quantifiers (++, *+) never backtrack: a refused line fails fast.
FAST_COMBINED = (
    "^(?!" + logformat.CSV_START + r')([^ ]++) [^ ]++ [^ ]++ '
    r'\[(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\] '
    r'"([A-Za-z][A-Za-z0-9_-]*+) ([^ "\\?]++)(\?[^ "\\]*+)? ([A-Z][A-Z0-9]*+/\d++(?:\.\d++)?)" '
    r'([1-5]\d\d) (\d{1,18}|-)(?: "([^"\\]*+)" "([^"\\]*+)"(?: [\s\S]*)?)?\z'
)
_FAST_GROUPS = 18
_MONTH_NAMES = "".join(logformat.MONTHS)  # month = (position + 2) div 3

# Epoch seconds of the fast path's (already range-checked) date and time with integer
# arithmetic (days from the civil date, H. Hinnant's algorithm): several times cheaper
# than make_timestamp with a zone and decimal seconds, and the same instant.
_FAST_SECONDS = """
  ((__y - __a) * 365 + (__y - __a) div 4 - (__y - __a) div 100 + (__y - __a) div 400
   + (153 * (__mo + 12 * __a - 3) + 2) div 5 + __d - 1 - 719468) * 86400
  + __hh * 3600 + __mi * 60 + __ss - __off"""
_FAST_VALID = """
  __mo > 0 AND __y BETWEEN 1000 AND 9998 AND __hh <= 23 AND __mi <= 59 AND __ss <= 59
  AND __oh <= 23 AND __om <= 59 AND __d >= 1
  AND __d <= CASE WHEN __mo = 2 THEN
                   CASE WHEN (__y % 4 = 0 AND __y % 100 != 0) OR __y % 400 = 0 THEN 29 ELSE 28 END
                  WHEN __mo IN (4, 6, 9, 11) THEN 30 ELSE 31 END"""


def _prepare(df, value_col: str, only=None):
    """raw, __utf8, __long_length (the length in characters of a line over the limit, else
    null), __line (trimmed; null when over the limit). ``only``: a condition; the columns
    are null where it is false (lines the Java scanner took need none of them)."""
    F = _F()
    dtype = dict(df.dtypes)[value_col]
    value = F.col(value_col)

    def where(col):
        return col if only is None else F.when(only, col)

    if dtype == "binary":
        df = df.select("*", where(value.cast("string")).alias("__text"))
        df = df.select("*", where(F.is_valid_utf8(F.col("__text"))).alias("__utf8"))
        raw = F.when(F.col("__utf8"), F.col("__text")).otherwise(F.make_valid_utf8(F.col("__text")))
        out = df.select(*[c for c in df.columns if c not in ("__text", "__utf8")], raw.alias("raw"), "__utf8")
    else:
        out = df.select("*", where(value).cast("string").alias("raw"), where(F.lit(True)).alias("__utf8"))
    raw = F.col("raw")
    # Both checks are the costly part of preparing a line when written plainly (profiled):
    # length() counts characters and btrim() walks the trim set per character. A line's
    # byte count bounds its character count, and a line with no blank at either end (the
    # usual case) is its own trimmed self: byte-level tests answer first.
    length = F.when(F.octet_length(raw) > logformat.MAX_LINE_LENGTH, F.length(raw))
    long = F.coalesce(length > logformat.MAX_LINE_LENGTH, F.lit(False))
    blank_end = None
    for ch in logformat.TRIM:
        test = raw.startswith(ch) | raw.endswith(ch)
        blank_end = test if blank_end is None else (blank_end | test)
    line = F.when(blank_end, F.btrim(raw, F.lit(logformat.TRIM))).otherwise(raw)
    # A line over the limit is refused for its length alone: only a prefix of it goes on
    # (to the quarantine), so that a flood of huge lines neither fills the disk nor costs
    # a copy of each one at every step of the full rules.
    return out.select(*[c for c in out.columns if c != "raw"],
                      F.when(long, F.substring(raw, 1, schemas.QUARANTINE_RAW_PREFIX)).otherwise(raw).alias("raw"),
                      F.when(long, length).alias("__long_length"), F.when(~long, line).alias("__line"))


def _fast(df, value_col: str, keep, native: bool | None = None, refuse=None):
    """Rows the fast path parses: the event columns and ``__fast_ok`` (False: use the
    full rules), and ``_prepare``'s columns for the rows it leaves (``refuse``: see
    ``fast_of``). ``native``: FAST_COMBINED's groups from the Java scanner over the line's
    bytes (``chaussettes.jvm``; None: when this session has it), else from one regex
    evaluation per prepared line: a line that does not match comes back from
    ``regexp_replace`` unchanged, so its split has one element instead of 18."""
    F = _F()
    if native is None:
        native = jvm.available(df.sparkSession, jvm.FAST_COMBINED)
    # the input line under a name of its own (it may bear an event column's)
    df = df.select(*[c for c in df.columns if c != value_col], F.col(value_col).alias("__value"))
    if native:
        # the scanner checks what the prepared columns say of a line it takes: they are
        # computed only for the lines the fast path leaves
        value = F.col("__value")
        scanned = F.call_function(jvm.FAST_COMBINED, value if dict(df.dtypes)["__value"] == "binary"
                                  else value.cast("binary"))
        out = _refused(_from_groups(df.select("*", scanned.alias("__g"))), refuse)
        out = _prepare(out, "__value", only=~F.col("__fast_ok"))
    else:
        out = _prepare(df, "__value")
        line = F.col("__line")
        # contains() compares bytes; instr() would count characters along the line
        candidate = F.col("__utf8") & F.col("__long_length").isNull() & ~line.startswith("{") & ~line.contains(SEP)
        joined = F.split(F.regexp_replace(line, FAST_COMBINED, SEP.join(f"${i}" for i in range(1, 19))), SEP, -1)
        out = out.select("*", F.when(candidate, joined).alias("__g0"))
        groups = F.when(F.size("__g0") == _FAST_GROUPS, F.col("__g0"))
        out = _refused(_from_groups(out.select(*[c for c in out.columns if c != "__g0"], groups.alias("__g"))),
                       refuse)
    return out.select(*[F.col("__value").alias(c) if c == value_col else c for c in keep],
                      "raw", "__line", "__utf8", "__long_length", "__fast_ok", *schemas.EVENT_COLUMNS)


def _refused(df, refuse):
    """``__fast_ok`` false where ``refuse`` holds (None: nowhere)."""
    F = _F()
    if refuse is None:
        return df
    return df.withColumn("__fast_ok", F.col("__fast_ok") & ~F.coalesce(refuse, F.lit(False)))


def _from_groups(df):
    """``df`` with ``__fast_ok`` and the event columns from ``__g``, FAST_COMBINED's 18
    groups (or null)."""
    F = _F()
    carried = [c for c in df.columns if c != "__g"]
    g = F.col("__g")
    ints = {"__d": g[1], "__y": g[3], "__hh": g[4], "__mi": g[5], "__ss": g[6], "__oh": g[8], "__om": g[9]}
    out = df.select(
        *carried, "__g", *[v.cast("int").alias(k) for k, v in ints.items()],
        F.expr(f"(instr('{_MONTH_NAMES}', __g[2]) + 2) div 3").alias("__mo"),
        F.when(g[7] == "-", F.lit(-1)).otherwise(F.lit(1)).alias("__sign"),
    )
    out = out.select(*carried, "__g", *ints, "__mo", F.expr("CASE WHEN __mo <= 2 THEN 1 ELSE 0 END").alias("__a"),
                     (F.col("__sign") * (F.col("__oh") * 3600 + F.col("__om") * 60)).alias("__off"))
    ok = F.coalesce(F.expr(_FAST_VALID), F.lit(False))
    q = g[12]
    bytes_text = g[15]
    return out.select(
        *carried, ok.alias("__fast_ok"),
        F.when(ok, F.timestamp_seconds(F.expr(_FAST_SECONDS).cast("long"))).alias("event_time"),
        g[0].alias("ip"), g[10].alias("method"), g[11].alias("url"),
        F.when(q != "", F.expr("substring(__g[12], 2)")).alias("query"), g[13].alias("protocol"),
        g[14].cast("int").alias("status"),
        F.when(bytes_text != "-", bytes_text.cast("long")).alias("bytes"),
        _nullable_text(g[16]).alias("referrer"), _nullable_text(g[17]).alias("user_agent"),
    )


def _full(out, keep):
    """The full rules for rows the fast path did not take."""
    F = _F()
    line = F.col("__line")
    long = F.col("__long_length").isNotNull()
    fmt = (F.when(~F.col("__utf8") | long | line.isNull() | (line == ""), F.lit("none"))
           .when(line.startswith("{"), F.lit("json"))
           .when(line == logformat.CSV_HEADER, F.lit("header"))
           .when(line.rlike(CSV_START), F.lit("csv"))
           .when(line.rlike(COMBINED_HEAD), F.lit("combined"))
           .otherwise(F.lit("unknown")))
    out = out.withColumn("__fmt", fmt)
    # Each format's expressions only run on its own rows (CASE WHEN is lazy per row).
    out = _combined(out)
    out = _json(out)
    out = _csv(out)
    fmt = F.col("__fmt")
    reason = (F.when(~F.col("__utf8"), F.lit("not_utf8"))
              .when(long, F.lit("too_long"))
              .when(line.isNull() | (line == ""), F.lit("empty"))
              .when(fmt == "json", F.col("j_reason"))
              .when(fmt == "header", F.lit("csv_header"))
              .when(fmt == "csv", F.col("v_reason"))
              .when(fmt == "combined", F.col("c_reason"))
              .otherwise(F.lit("unknown_format")))
    event = (F.when(fmt == "json", F.col("j_event"))
             .when(fmt == "csv", F.col("v_event"))
             .when(fmt == "combined", F.col("c_event")))
    out = out.withColumn("reason", reason).withColumn("__event", F.when(reason.isNull(), event))
    return out.select(
        *[F.col(c) for c in keep],
        *[F.col(f"__event.{c}").alias(c) for c in schemas.EVENT_COLUMNS],
        F.col("reason"), F.col("raw"),
        F.when(F.col("reason").isNotNull(), F.coalesce(F.col("__long_length"), F.length("raw"))).alias("raw_length"),
    )


def parse_column(df, value_col: str = "value"):
    """Every row of ``df`` plus the event columns, ``reason`` (null when the line parsed),
    ``raw`` (the line as text; a prefix of a line over the limit) and ``raw_length`` (the
    line's length in characters, on refused rows). ``value_col`` may be a string or a
    binary column.

    The plan has two branches over the same input (fast path, full rules for the rest)
    joined by a union: give it a cached DataFrame so that the input is read once, or use
    ``fast_parts`` and cache its ``fast`` (the detector and the calibration do)."""
    keep = [c for c in df.columns if c not in schemas.EVENT_COLUMNS and c not in ("raw", "raw_length", "reason")]
    fast = _fast(df, value_col, keep)
    return _fast_events(fast, keep).unionByName(full_rules_of(fast, keep))


def fast_parts(df, value_col: str = "value"):
    """The pieces of ``parse_column`` for a caller that caches the fast path first:
    ``(fast, good, keep)`` — ``fast`` (NOT cached: the caller persists it) has every input
    row with ``__fast_ok``; ``good`` is its fast-parsed rows in ``parse_column``'s layout;
    ``keep`` the input columns carried along (all but ``value_col``). ``full_rules_of(fast,
    keep)`` parses the other rows (``parse_column``'s layout too); ``good ∪ full_rules_of`` =
    ``parse_column`` except that ``raw`` is null on the rows of ``good`` (only refused lines
    need it)."""
    fast = fast_of(df, value_col)
    good, keep = good_of(fast)
    return fast, good, keep


def fast_of(df, value_col: str = "value", refuse=None, native: bool | None = None):
    """``fast_parts``' ``fast`` alone: projections only, so it also applies to a streaming
    DataFrame (the detector builds it once for the query, not once per micro-batch).
    ``refuse``: a condition on the parsed row under which the fast path leaves a line to
    the full rules anyway, its text kept (the detector's lines stamped in the future).
    ``native``: see ``_fast``."""
    F = _F()
    # the input line itself is not carried (``raw`` has its text): the cache stays small
    keep = [c for c in df.columns if c not in schemas.EVENT_COLUMNS and c not in ("raw", "raw_length", "reason", value_col)]
    fast = _fast(df, value_col, keep, native, refuse)
    # the line's text is only needed by the rows the fast path refused (full rules,
    # quarantine): nulled for the others, the cached batch is much smaller
    ok = F.col("__fast_ok")
    return fast.select(*[F.when(~ok, F.col(c)).alias(c) if c in ("raw", "__line") else F.col(c)
                         for c in fast.columns])


_FAST_INTERNAL = ("raw", "__line", "__utf8", "__long_length", "__fast_ok")


def good_of(fast):
    """``(good, keep)`` of a ``fast_of`` DataFrame (see ``fast_parts``)."""
    keep = [c for c in fast.columns if c not in _FAST_INTERNAL and c not in schemas.EVENT_COLUMNS]
    return _fast_events(fast, keep), keep


def _fast_events(fast, keep):
    """The rows the fast path parsed, in ``parse_column``'s layout."""
    F = _F()
    typed = [F.col(c) for c in keep] + [
        F.col(n).cast(t).alias(n) for n, t in schemas.EVENT_FIELDS] + [
        F.lit(None).cast("string").alias("reason"), F.col("raw"), F.lit(None).cast("int").alias("raw_length")]
    return fast.where(F.col("__fast_ok")).select(*typed)


def full_rules_of(fast, keep):
    """The full rules applied to the rows of ``fast_parts``' ``fast`` the fast path refused."""
    F = _F()
    return _full(fast.where(~F.col("__fast_ok")).select(*[F.col(c) for c in keep], "raw", "__line", "__utf8",
                                                         "__long_length"), keep)


def events_of(parsed_df):
    """The good rows of ``parse_column``'s output, as ``schemas.EVENT_FIELDS``."""
    F = _F()
    return parsed_df.where(F.col("reason").isNull()).select(*schemas.EVENT_COLUMNS)


def quarantine_of(parsed_df, quarantined_at=None):
    """The refused rows of ``parse_column``'s output, as ``schemas.QUARANTINE_FIELDS``."""
    F = _F()
    cols = set(parsed_df.columns)

    def opt(name, typ):
        return (F.col(name) if name in cols else F.lit(None)).cast(typ).alias(name)

    at = quarantined_at if quarantined_at is not None else F.current_timestamp()
    return parsed_df.where(F.col("reason").isNotNull()).select(
        F.col("raw"), F.col("raw_length").cast("int"), F.col("reason"), opt("topic", "string"), opt("partition", "int"),
        opt("offset", "long"), at.cast("timestamp").alias("quarantined_at"),
    )


def parse_lines(df, value_col: str = "value"):
    """``(events_df, quarantine_df)`` of a DataFrame of lines (batch or streaming)."""
    parsed = parse_column(df, value_col)
    return events_of(parsed), quarantine_of(parsed)
