"""chaussettes.logformat: the shared corpus, httpd-exact formatting, round trips, robustness."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from chaussettes import logformat as lf
from chaussettes.schemas import EVENT_COLUMNS
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

CORPUS = Path(__file__).resolve().parent / "corpus" / "tricky_lines.jsonl"
ROWS = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
UTC = dt.UTC


def _input(row):
    return base64.b64decode(row["bytes_b64"]) if "bytes_b64" in row else row["line"]


# ----------------------------------------------------------------------------- the corpus
def test_corpus_shape():
    assert len(ROWS) >= 40
    for row in ROWS:
        assert set(row) <= {"line", "event", "reason", "note", "bytes_b64"}
        assert isinstance(row["line"], str) and row["note"]
        assert (row["event"] is None) != (row["reason"] is None)
        if row["event"] is not None:
            assert tuple(row["event"]) == EVENT_COLUMNS
    # every reason code and every format is exercised, valid and invalid
    assert {r["reason"] for r in ROWS if r["reason"]} == set(lf.REASONS)
    formats = {lf.detect_format(r["line"].strip(" \t\r\n")) for r in ROWS if r["event"]}
    assert {"combined", "json", "csv"} <= formats


@pytest.mark.parametrize("row", ROWS, ids=[f"{i:02d}-{r['note'][:40]}" for i, r in enumerate(ROWS)])
def test_corpus_line(row):
    got = lf.parse(_input(row))
    if row["reason"] is not None:
        assert isinstance(got, lf.Invalid), got
        assert got.reason == row["reason"]
        assert not got
    else:
        assert isinstance(got, lf.Event), got
        assert got.to_dict() == row["event"]
        assert got.event_time.tzinfo is not None and got.event_time.utcoffset() == dt.timedelta(0)
        assert lf.Event.from_dict(row["event"]) == got


def test_corpus_lines_as_bytes_give_the_same_result():
    for row in ROWS:
        if "bytes_b64" in row:
            continue
        assert lf.parse(row["line"].encode("utf-8")) == lf.parse(row["line"])


def test_dash_request_line_is_an_event_without_request():
    ev = lf.parse('10.0.0.8 - - [30/May/2025:18:52:47 +0000] "-" 408 - "-" "-"')
    assert ev and ev.status == 408 and (ev.method, ev.url, ev.query, ev.protocol) == (None,) * 4
    assert lf.format_combined(ev) == '10.0.0.8 - - [30/May/2025:18:52:47 +0000] "-" 408 - "-" "-"'


# ----------------------------------------------------------------------------- formatting
EXAMPLE = lf.Event(dt.datetime(2000, 10, 10, 20, 55, 36, tzinfo=UTC), "127.0.0.1", "GET", "/apache_pb.gif",
                   None, "HTTP/1.0", 200, 2326, "http://www.example.com/start.html",
                   "Mozilla/4.08 [en] (Win98; I ;Nav)")


def test_format_combined_is_httpds_line():
    assert lf.format_combined(EXAMPLE) == (
        '127.0.0.1 - - [10/Oct/2000:20:55:36 +0000] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
        '"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"')


def test_format_combined_escapes_like_ap_escape_logitem():
    ev = lf.Event(EXAMPLE.event_time, "::1", "GET", '/a"b\\c', "q=é", "HTTP/1.1", 404, None, None,
                  'say "hi"\\\t\n\x01\x7fé')
    line = lf.format_combined(ev)
    assert line == ('::1 - - [10/Oct/2000:20:55:36 +0000] "GET /a\\"b\\\\c?q=\\xc3\\xa9 HTTP/1.1" 404 - '
                    '"-" "say \\"hi\\"\\\\\\t\\n\\x01\\x7f\\xc3\\xa9"')
    back = lf.parse(line)
    # \" and \\ come back; \xhh and \t stay as the printable text of the log
    assert back.url == '/a"b\\c' and back.query == "q=\\xc3\\xa9"
    assert back.user_agent == 'say "hi"\\\\t\\n\\x01\\x7f\\xc3\\xa9'


def test_format_json_and_csv():
    assert json.loads(lf.format_json(EXAMPLE)) == {
        "timestamp": "2000-10-10T20:55:36.000000Z", "ip": "127.0.0.1", "method": "GET",
        "url": "/apache_pb.gif", "protocol": "HTTP/1.0", "status": 200, "bytes": 2326,
        "referrer": "http://www.example.com/start.html", "user_agent": "Mozilla/4.08 [en] (Win98; I ;Nav)"}
    assert lf.format_csv(EXAMPLE) == ('2000-10-10T20:55:36.000000Z,127.0.0.1,GET,/apache_pb.gif,HTTP/1.0,200,2326,'
                                      'http://www.example.com/start.html,Mozilla/4.08 [en] (Win98; I ;Nav)')
    assert lf.CSV_HEADER == "timestamp,ip,method,url,protocol,status,bytes,referrer,user_agent"
    assert lf.parse(lf.CSV_HEADER).reason == "csv_header"


def test_max_line_length_boundary():
    head = '10.1.1.1 - - [30/May/2025:18:52:47 +0000] "GET /'
    tail = ' HTTP/1.1" 200 10 "-" "-"'
    fill = lf.MAX_LINE_LENGTH - len(head) - len(tail)
    assert lf.parse(head + "a" * fill + tail)
    assert lf.parse(head + "a" * (fill + 1) + tail).reason == "too_long"


# ----------------------------------------------------------------------------- properties
_token = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters='?"\\'),
                 min_size=1, max_size=20)
_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40).filter(
    lambda s: s != "-" and s.strip(" ") == s)
_events = st.builds(
    lf.Event,
    event_time=st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2100, 1, 1),
                            timezones=st.just(UTC)),
    ip=st.from_regex(r"[0-9a-f:.]{2,39}", fullmatch=True),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "M-SEARCH", "get"]),
    url=_token.map(lambda s: "/" + s),
    query=st.none() | _token,
    protocol=st.sampled_from(["HTTP/1.1", "HTTP/2.0", "HTTP/1.0"]),
    status=st.integers(100, 599),
    bytes=st.none() | st.integers(1, 2**63 - 1),
    referrer=st.none() | _text,
    user_agent=st.none() | _text,
)


@hsettings(max_examples=150, deadline=None)
@given(_events)
def test_every_format_round_trips(ev):
    assert lf.parse(lf.format_json(ev)) == ev
    assert lf.parse(lf.format_csv(ev)) == ev
    combined = lf.parse(lf.format_combined(ev))
    assert combined == lf.Event(ev.event_time.replace(microsecond=0), *[getattr(ev, c) for c in EVENT_COLUMNS[1:]])


@hsettings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.sampled_from([r["line"] for r in ROWS]).flatmap(
                     lambda line: st.integers(0, len(line)).map(lambda k: line[:k]))))
def test_parse_never_raises(line):
    got = lf.parse(line)
    assert isinstance(got, (lf.Event, lf.Invalid))
    if isinstance(got, lf.Invalid):
        assert got.reason in lf.REASONS and not got.detail  # detail is only set by a parser bug
