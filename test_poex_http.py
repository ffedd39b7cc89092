"""Tests of poex_http: the parser and helpers without sockets, then live
servers over loopback spoken to with exact bytes and with real clients.

Run: python -m pytest test_poex_http.py
"""
import collections
import logging
import os
import random
import re
import socket
import sys
import textwrap
import threading
import time

import pytest

import poex_http

# --------------------------------------------------------------- helpers

DEADLINE = 10.0  # seconds any single wait may take before the test fails


def wait_until(predicate, timeout=DEADLINE, interval=0.005):
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %.1f s" % timeout)
        time.sleep(interval)


class LiveServer:
    """A server on its own reactor, running on a background thread."""

    def __init__(self, **config):
        config.setdefault("host", "127.0.0.1")
        config.setdefault("port", 0)
        self.reactor = poex_http.Reactor()
        config["reactor"] = self.reactor
        self.server = poex_http.Server(**config)
        self.server.start()
        self.port = self.server.port
        self.thread = threading.Thread(target=self.reactor.run, daemon=True)
        self.thread.start()

    def call(self, func, *args):
        """Run ``func(*args)`` on the reactor thread and return its result."""
        done = threading.Event()
        result = []

        def invoke():
            try:
                result.append(func(*args))
            finally:
                done.set()
        self.reactor.call_soon_threadsafe(invoke)
        assert done.wait(DEADLINE), "reactor did not run the call"
        return result[0] if result else None

    def connect(self, timeout=DEADLINE):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock

    def stop(self):
        if self.thread.is_alive():
            self.server.shutdown()
            # Connections left open by a test are closed by force.
            self.call(lambda: [c._close(abort=True) for c in list(self.server.connections)])
            self.thread.join(DEADLINE)
            assert not self.thread.is_alive(), "reactor did not stop"
        self.reactor.close()


@pytest.fixture
def serve():
    """``serve(handlers=..., **options)`` starts a live server for the test."""
    servers = []

    def start(**config):
        live = LiveServer(**config)
        servers.append(live)
        return live
    yield start
    for live in servers:
        live.stop()


class RawClient:
    """A socket speaking exact bytes, reading responses one at a time."""

    def __init__(self, port, timeout=DEADLINE):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed; have %r" % self.buffer[:200])
        self.buffer += data

    def _take(self, size):
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _line(self):
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def response(self, method="GET"):
        """(status, headers dict with lower-case names, body) of the next response.

        The body is framed as the response says: none for HEAD/1xx/204/304,
        Content-Length, chunked, or until the connection closes.
        """
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            headers[name] = headers[name] + ", " + value.strip() if name in headers else value.strip()
        self.raw_head = head
        if method == "HEAD" or status < 200 or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if not size:
                    while self._line():
                        pass  # trailers
                    return status, headers, body
                body += self._take(size)
                assert self._take(2) == b"\r\n"
        if "content-length" in headers:
            return status, headers, self._take(int(headers["content-length"]))
        return status, headers, self.read_all()

    def read_all(self):
        """Everything until the server closes."""
        data = self.buffer + read_until_closed(self.sock)
        self.buffer = b""
        return data

    def closed_by_server(self):
        """True when the server has closed (EOF with nothing more to read)."""
        try:
            return not self.buffer and self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_until_closed(sock):
    """Everything the server sends until it closes."""
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def exchange(port, raw, timeout=DEADLINE):
    """Send raw bytes on a fresh connection; return all bytes until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_until_closed(sock)


def hello(req, resp):
    resp.content_type = "text/plain"
    resp.content = "Hello world\n"
    resp.done()


def echo(req, resp):
    resp.content_type = "application/octet-stream"
    resp.content = req.content
    resp.done()


# ====================================================================
# 1. RequestParser
# ====================================================================

HEAD_ATTRS = ("method", "target", "path", "query", "version", "fields", "keep_alive",
              "content_length", "chunked", "expect_continue", "host")

Parsed = collections.namedtuple("Parsed", "messages status")


def _collect(pieces, limits):
    """Feed ``pieces`` one after the other, pulling every event after each.

    Returns Parsed(messages, status): one dict per request (head attributes,
    the concatenated body, trailers or None, done), and the status of the
    HTTPError raised, or None.
    """
    parser = poex_http.RequestParser(limits)
    messages = []
    status = None
    try:
        for piece in pieces:
            parser.feed(piece)
            while True:
                event = parser.next_event()
                if event is None:
                    break
                if isinstance(event, poex_http.RequestHead):
                    assert not messages or messages[-1]["done"], \
                        "a head arrived before the previous message ended"
                    message = {name: getattr(event, name) for name in HEAD_ATTRS}
                    message["fields"] = list(event.fields)
                    message["body"] = b""
                    message["trailers"] = None
                    # A request without a body is one RequestHead event and
                    # nothing more (what the connection relies on).
                    message["done"] = not event.has_body
                    messages.append(message)
                elif isinstance(event, poex_http.EndOfMessage):
                    assert messages and not messages[-1]["done"], "stray EndOfMessage"
                    messages[-1]["trailers"] = list(event.trailers)
                    messages[-1]["done"] = True
                else:
                    assert type(event) is bytes and event, "body events are non-empty bytes"
                    assert messages and not messages[-1]["done"], "stray body data"
                    messages[-1]["body"] += event
    except poex_http.HTTPError as exc:
        status = exc.status
    return Parsed(messages, status)


def _random_pieces(data, rng):
    if len(data) < 2:
        return [data]
    count = rng.randint(1, min(len(data) - 1, 12))
    cuts = sorted(rng.sample(range(1, len(data)), count))
    pieces = []
    start = 0
    for cut in cuts + [len(data)]:
        pieces.append(data[start:cut])
        if rng.random() < 0.2:
            pieces.append(b"")  # an empty feed must change nothing
        start = cut
    return pieces


def parse(data, limits=None, seeds=(1, 2, 3, 4)):
    """Parse ``data`` whole, byte by byte and in random splits; all must agree."""
    whole = _collect([data], limits)
    bytewise = _collect([data[i:i + 1] for i in range(len(data))], limits)
    assert bytewise == whole, "byte-by-byte feeding differs from whole"
    for seed in seeds:
        pieces = _random_pieces(data, random.Random(seed))
        split = _collect(pieces, limits)
        assert split == whole, "split %r differs from whole" % ([len(p) for p in pieces],)
    return whole


def ok(data, limits=None):
    """Parse ``data``; it must be accepted; returns the messages."""
    result = parse(data, limits)
    assert result.status is None, "rejected with %s" % result.status
    return result.messages


def status_of(data, limits=None):
    return parse(data, limits).status


def one(data, limits=None):
    messages = ok(data, limits)
    assert len(messages) == 1
    assert messages[0]["done"]
    return messages[0]


# -- accepted requests

def test_simple_get():
    m = one(b"GET /index.html?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert m == {
        "method": "GET", "target": "/index.html?x=1&y=2", "path": "/index.html",
        "query": "x=1&y=2", "version": "HTTP/1.1", "fields": [("Host", "example.com")],
        "keep_alive": True, "content_length": None, "chunked": False,
        "expect_continue": False, "host": "example.com", "body": b"", "trailers": None,
        "done": True}


def test_simple_get_event_sequence():
    parser = poex_http.RequestParser()
    assert parser.next_event() is None
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = parser.next_event()
    assert isinstance(head, poex_http.RequestHead)
    assert head.has_body is False
    assert head.http11 is True
    assert parser.next_event() is None
    assert parser.buffered == 0
    assert parser.in_message is False


def test_http10_without_host():
    m = one(b"GET /a HTTP/1.0\r\n\r\n")
    assert (m["version"], m["keep_alive"], m["host"], m["fields"]) == ("HTTP/1.0", False, None, [])


def test_http10_with_host():
    m = one(b"GET /a HTTP/1.0\r\nHost: h:8080\r\n\r\n")
    assert (m["version"], m["host"]) == ("HTTP/1.0", "h:8080")


def test_header_names_case_insensitive_and_repeats_kept_in_order():
    m = one(b"GET / HTTP/1.1\r\nhOsT: a\r\nX-A: 1\r\nx-b:2\r\nX-a:   3  \r\n"
            b"Empty:\r\nTabbed:\tv\tw\t\r\nLatin: caf\xe9\r\n\r\n")
    assert m["host"] == "a"
    assert m["fields"] == [("hOsT", "a"), ("X-A", "1"), ("x-b", "2"), ("X-a", "3"),
                           ("Empty", ""), ("Tabbed", "v\tw"), ("Latin", "caf\u00e9")]


def test_framing_fields_recognised_in_any_case():
    m = one(b"POST / HTTP/1.1\r\nHOST: a\r\ncontent-LENGTH: 3\r\nCONNECTION: CLOSE\r\n\r\nabc")
    assert (m["host"], m["content_length"], m["keep_alive"], m["body"]) == ("a", 3, False, b"abc")


def test_leading_empty_lines_ignored():
    m = one(b"\r\n\r\n\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (m["method"], m["path"]) == ("GET", "/x")


def test_only_empty_lines_is_no_request():
    parser = poex_http.RequestParser()
    parser.feed(b"\r\n\r\n\n")
    assert parser.next_event() is None
    assert parser.in_message is False
    assert parse(b"\r\n\r\n\n") == Parsed([], None)


def test_bare_lf_line_endings_accepted():
    m = one(b"POST /lf HTTP/1.1\nHost: a\nContent-Length: 2\nX-Y: z\n\nhi")
    assert m["fields"] == [("Host", "a"), ("Content-Length", "2"), ("X-Y", "z")]
    assert (m["path"], m["body"]) == ("/lf", b"hi")


def test_mixed_crlf_and_lf_line_endings_accepted():
    m = one(b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\n")
    assert m["fields"] == [("Host", "a"), ("X", "1")]


def test_post_with_content_length():
    m = one(b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world")
    assert (m["method"], m["content_length"], m["chunked"], m["body"], m["trailers"]) == \
        ("POST", 11, False, b"hello world", [])


def test_content_length_zero_has_no_body():
    m = one(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert (m["content_length"], m["body"], m["trailers"]) == (0, b"", None)


def test_content_length_body_events():
    parser = poex_http.RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    head = parser.next_event()
    assert head.content_length == 5 and head.has_body
    assert parser.next_event() == b"ab"
    assert parser.next_event() is None
    parser.feed(b"cdeGET")
    assert parser.next_event() == b"cde"
    assert isinstance(parser.next_event(), poex_http.EndOfMessage)
    assert parser.buffered == 3
    assert parser.next_event() is None


def test_identical_content_lengths_are_fine():
    assert one(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nabcde")["body"] == b"abcde"
    m = one(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde")
    assert (m["content_length"], m["body"]) == (5, b"abcde")


CHUNKED = (b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;name=value\r\nhello\r\n"
           b"6 ; q=\"quoted;\\\" \\\\ = str\" ; flag\r\n world\r\n"
           b"A\r\n0123456789\r\n"
           b"0;last=\"\"\r\n"
           b"X-Checksum: abc\r\nx-more:  1 \r\n\r\n")


def test_chunked_with_extensions_and_trailers():
    m = one(CHUNKED)
    assert (m["chunked"], m["content_length"], m["expect_continue"]) == (True, None, False)
    assert m["body"] == b"hello world0123456789"
    assert m["trailers"] == [("X-Checksum", "abc"), ("x-more", "1")]


def test_chunked_without_trailers():
    m = one(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n")
    assert (m["body"], m["trailers"]) == (b"abc", [])


def test_chunked_uppercase_hex_and_leading_zeros():
    m = one(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"00B\r\nabcdefghijk\r\n000\r\n\r\n")
    assert m["body"] == b"abcdefghijk"


def test_chunked_split_across_every_boundary():
    expected = _collect([CHUNKED], None)
    assert expected.status is None and expected.messages[0]["done"]
    for cut in range(1, len(CHUNKED)):
        got = _collect([CHUNKED[:cut], CHUNKED[cut:]], None)
        assert got == expected, "split at %d" % cut


def test_chunked_body_events_and_end_of_message():
    parser = poex_http.RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    head = parser.next_event()
    assert head.chunked and head.has_body
    assert parser.in_message is True  # the body has not arrived yet
    assert parser.next_event() is None
    parser.feed(b"3\r\nabc\r\n0\r\nT: 1\r\n\r\n")
    assert parser.next_event() == b"abc"
    end = parser.next_event()
    assert isinstance(end, poex_http.EndOfMessage)
    assert list(end.trailers) == [("T", "1")]
    assert parser.in_message is False
    assert parser.next_event() is None


PIPELINE = (b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
            b"\r\n"  # a stray CRLF between requests, as old clients send
            b"GET /4 HTTP/1.0\r\n\r\n")


def test_pipelined_requests_in_one_buffer():
    messages = ok(PIPELINE)
    assert [(m["method"], m["path"], m["body"], m["done"]) for m in messages] == [
        ("GET", "/1", b"", True), ("POST", "/2", b"abc", True),
        ("POST", "/3", b"xy", True), ("GET", "/4", b"", True)]


def test_pipelined_events_pulled_one_by_one():
    parser = poex_http.RequestParser()
    parser.feed(PIPELINE)
    events = []
    while True:
        event = parser.next_event()
        if event is None:
            break
        events.append(event)
    kinds = [event.path if isinstance(event, poex_http.RequestHead)
             else "END" if isinstance(event, poex_http.EndOfMessage) else event
             for event in events]
    assert kinds == ["/1", "/2", b"abc", "END", "/3", b"xy", "END", "/4"]
    assert parser.buffered == 0


def test_next_head_returned_after_end_of_message():
    parser = poex_http.RequestParser()
    first = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
    second = b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    parser.feed(first + second)
    assert parser.next_event().path == "/a"
    assert parser.buffered == 2 + len(second)
    assert parser.next_event() == b"ok"
    assert parser.buffered == len(second)
    assert isinstance(parser.next_event(), poex_http.EndOfMessage)
    assert parser.in_message is True  # the next request is already buffered
    head = parser.next_event()
    assert (head.method, head.path) == ("GET", "/b")
    assert parser.buffered == 0
    assert parser.in_message is False


def test_in_message_and_buffered():
    parser = poex_http.RequestParser()
    assert (parser.in_message, parser.buffered) == (False, 0)
    parser.feed(b"\r\n")
    assert (parser.in_message, parser.buffered) == (False, 2)
    parser.feed(b"GET / HT")
    assert (parser.in_message, parser.buffered) == (True, 10)
    assert parser.next_event() is None
    assert parser.in_message is True
    parser.feed(b"TP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
    assert isinstance(parser.next_event(), poex_http.RequestHead)
    assert (parser.in_message, parser.buffered) == (True, 2)
    assert parser.next_event() == b"ab"
    assert (parser.in_message, parser.buffered) == (True, 0)
    parser.feed(b"cd")
    assert parser.next_event() == b"cd"
    assert isinstance(parser.next_event(), poex_http.EndOfMessage)
    assert (parser.in_message, parser.buffered) == (False, 0)
    parser.feed(b"G")
    assert (parser.in_message, parser.buffered) == (True, 1)


def test_absolute_form_target():
    m = one(b"GET http://example.com/a?b=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    assert (m["target"], m["path"], m["query"], m["host"]) == \
        ("http://example.com/a?b=1", "/a", "b=1", "example.com")


def test_absolute_form_target_without_path():
    m = one(b"GET HTTPS://example.com:8443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (m["path"], m["query"], m["host"]) == ("/", "", "example.com:8443")
    m = one(b"GET http://example.com?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (m["path"], m["query"], m["host"]) == ("/", "b=1", "example.com")


def test_absolute_form_query_holding_a_slash():
    # RFC 3986 §3.2: the authority ends at the first "/", "?" or "#".
    m = one(b"GET http://example.com?next=/a/b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (m["host"], m["path"], m["query"]) == ("example.com", "/", "next=/a/b")


def test_absolute_form_rejections():
    assert status_of(b"GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n") == 400
    assert status_of(b"GET ftp://example.com/a HTTP/1.1\r\nHost: x\r\n\r\n") == 400
    assert status_of(b"GET abc HTTP/1.1\r\nHost: x\r\n\r\n") == 400


def test_asterisk_form_for_options_only():
    m = one(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (m["method"], m["target"], m["path"], m["query"]) == ("OPTIONS", "*", "*", "")
    assert status_of(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n") == 400
    assert status_of(b"DELETE * HTTP/1.1\r\nHost: a\r\n\r\n") == 400


def test_authority_form_for_connect():
    m = one(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert (m["method"], m["path"]) == ("CONNECT", "example.com:443")


def test_expect_continue_only_with_a_body():
    assert one(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
               )["expect_continue"] is True
    assert one(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")["expect_continue"] is True
    assert one(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"
               )["expect_continue"] is False
    assert one(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n")["expect_continue"] is False
    # RFC 9110 §10.1.1: ignored in an HTTP/1.0 request.
    assert one(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
               )["expect_continue"] is False


@pytest.mark.parametrize("version, connection, expected", [
    (b"HTTP/1.1", None, True),
    (b"HTTP/1.1", b"close", False),
    (b"HTTP/1.1", b"Close", False),
    (b"HTTP/1.1", b"keep-alive", True),
    (b"HTTP/1.1", b"Upgrade, close", False),
    (b"HTTP/1.0", None, False),
    (b"HTTP/1.0", b"keep-alive", True),
    (b"HTTP/1.0", b"Keep-Alive", True),
    (b"HTTP/1.0", b"keep-alive, close", False),
    (b"HTTP/1.0", b"close", False),
])
def test_keep_alive(version, connection, expected):
    data = b"GET / " + version + b"\r\nHost: a\r\n"
    if connection is not None:
        data += b"Connection: " + connection + b"\r\n"
    assert one(data + b"\r\n")["keep_alive"] is expected


def test_http_1_2_treated_as_1_1():
    m = one(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n")
    assert (m["version"], m["keep_alive"]) == ("HTTP/1.1", True)
    assert status_of(b"GET / HTTP/1.2\r\n\r\n") == 400  # and needs a Host like 1.1


# -- rejections

def _head(*lines, version=b"HTTP/1.1", method=b"GET", target=b"/"):
    return (method + b" " + target + b" " + version + b"\r\n"
            + b"".join(line + b"\r\n" for line in lines) + b"\r\n")


@pytest.mark.parametrize("line", [
    b"GET  / HTTP/1.1",
    b"GET / HTTP/1.1 ",
    b" GET / HTTP/1.1",
    b"GET /\tHTTP/1.1",
    b"GET / http/1.1",
    b"GET / HTTP/1.10",
    b"GET / HTTP/1",
    b"GET / HTTP/1.1 extra",
    b"G@T / HTTP/1.1",
    b"GET /caf\xc3\xa9 HTTP/1.1",
    b"BOGUSREQUEST",
    b"/ HTTP/1.1",
])
def test_malformed_request_line_400(line):
    assert status_of(line + b"\r\nHost: a\r\n\r\n") == 400


def test_request_line_without_version_400():
    assert status_of(b"GET /\r\n\r\n") == 400
    assert status_of(b"GET /index.html\r\nHost: a\r\n\r\n") == 400


def test_missing_host_on_http11_400():
    assert status_of(b"GET / HTTP/1.1\r\n\r\n") == 400
    assert status_of(_head(b"Connection: close")) == 400
    assert status_of(_head(b"X-Other: 1")) == 400


def test_two_host_headers_400():
    assert status_of(_head(b"Host: a", b"Host: a")) == 400
    assert status_of(_head(b"Host: a", b"Host: b", version=b"HTTP/1.0")) == 400


def test_invalid_host_value_400():
    # RFC 9112 §3.2: 400 for a Host field with an invalid value.
    assert status_of(_head(b"Host: exa mple.com")) == 400
    assert status_of(_head(b"Host: a/b")) == 400


def test_content_length_with_transfer_encoding_400():
    assert status_of(_head(b"Host: a", b"Content-Length: 3", b"Transfer-Encoding: chunked",
                           method=b"POST") + b"0\r\n\r\n") == 400
    assert status_of(_head(b"Host: a", b"Transfer-Encoding: chunked", b"Content-Length: 3",
                           method=b"POST") + b"abc") == 400


@pytest.mark.parametrize("fields", [
    [b"Content-Length: 5", b"Content-Length: 6"],
    [b"Content-Length: 5, 6"],
    [b"Content-Length: 5,,5"],
])
def test_conflicting_content_length_400(fields):
    assert status_of(_head(b"Host: a", *fields, method=b"POST") + b"abcdef") == 400


@pytest.mark.parametrize("value", [b"abc", b"-1", b"+5", b"0x10", b"5 5", b"", b"1e3", b"\xb2"])
def test_non_numeric_content_length_400(value):
    assert status_of(_head(b"Host: a", b"Content-Length: " + value, method=b"POST")) == 400


def test_absurdly_long_content_length_is_an_http_error():
    # Past CPython's int() digit limit: must still be a protocol error.
    status = status_of(_head(b"Host: a", b"Content-Length: " + b"9" * 5000, method=b"POST"))
    assert status in (400, 413)


CHUNKED_HEAD = _head(b"Host: a", b"Transfer-Encoding: chunked", method=b"POST")


@pytest.mark.parametrize("body", [
    b"xyz\r\nabc\r\n0\r\n\r\n",              # not hex
    b"-1\r\n",                               # sign
    b"\r\n",                                 # empty size
    b"0x5\r\nhello\r\n0\r\n\r\n",            # prefix
    b"1" + b"0" * 16 + b"\r\n",              # 17 digits: too long
    b"5;\r\nhello\r\n0\r\n\r\n",             # empty extension
    b"5;a=\"unterminated\r\nhello\r\n0\r\n\r\n",
    b"5 hello\r\nhello\r\n0\r\n\r\n",        # junk after size
    b"5\nhello\r\n0\r\n\r\n",                # bare LF after size
])
def test_bad_chunk_size_400(body):
    assert status_of(CHUNKED_HEAD + body) == 400


def test_overlong_chunk_size_line_400():
    limits = poex_http.Limits(max_chunk_line=32)
    assert status_of(CHUNKED_HEAD + b"5;" + b"a" * 64 + b"\r\nhello\r\n0\r\n\r\n", limits) == 400
    # Unfinished but already too long.
    assert status_of(CHUNKED_HEAD + b"5;" + b"a" * 64, limits) == 400


def test_chunk_size_line_at_the_limit_accepted_however_split():
    limits = poex_http.Limits(max_chunk_line=32)
    line = b"5;" + b"a" * 30
    assert len(line) == 32
    m = one(CHUNKED_HEAD + line + b"\r\nhello\r\n0\r\n\r\n", limits)
    assert m["body"] == b"hello"


@pytest.mark.parametrize("body", [
    b"5\r\nhelloXX\r\n0\r\n\r\n",
    b"5\r\nhello\n0\r\n\r\n",
    b"5\r\nhello0\r\n\r\n",
    b"5\r\nhello\rX",
])
def test_chunk_data_not_followed_by_crlf_400(body):
    assert status_of(CHUNKED_HEAD + body) == 400


def test_bare_cr_in_head_400():
    assert status_of(b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n") == 400
    assert status_of(b"GET / HTTP/1.1\rHost: a\r\n\r\n") == 400
    assert status_of(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n") == 400


def test_obs_fold_400():
    assert status_of(_head(b"Host: a", b"X-Long: one", b" two")) == 400
    assert status_of(_head(b"Host: a", b"X-Long: one", b"\ttwo: three")) == 400


def test_whitespace_before_colon_400():
    assert status_of(_head(b"Host : a")) == 400
    assert status_of(_head(b"Host: a", b"Content-Length\t: 0")) == 400


@pytest.mark.parametrize("line", [
    b"Bad Name: x", b"X@Y: 1", b": empty-name", b"no-colon-here", b"X\x00Y: 1",
])
def test_malformed_field_line_400(line):
    assert status_of(_head(b"Host: a", line)) == 400


@pytest.mark.parametrize("value", [b"a\x00b", b"\x00", b"a\x01b", b"a\x1fb", b"a\x7fb", b"a\x0bb"])
def test_control_character_in_value_400(value):
    assert status_of(_head(b"Host: a", b"X: " + value)) == 400


def test_control_character_in_target_400():
    assert status_of(b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n") == 400


def test_control_character_in_trailer_400():
    assert status_of(CHUNKED_HEAD + b"0\r\nX-T: a\x00b\r\n\r\n") == 400


def test_malformed_trailer_400():
    assert status_of(CHUNKED_HEAD + b"0\r\nBad Name: 1\r\n\r\n") == 400
    assert status_of(CHUNKED_HEAD + b"0\r\nX: 1\r\n folded\r\n\r\n") == 400
    assert status_of(CHUNKED_HEAD + b"0\r\n\n") == 400


def test_transfer_encoding_in_http10_400():
    assert status_of(_head(b"Transfer-Encoding: chunked", version=b"HTTP/1.0", method=b"POST")
                     + b"0\r\n\r\n") == 400


@pytest.mark.parametrize("fields", [
    [b"Transfer-Encoding: chunked, chunked"],
    [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
])
def test_double_chunked_400(fields):
    assert status_of(_head(b"Host: a", *fields, method=b"POST") + b"0\r\n\r\n") == 400


@pytest.mark.parametrize("coding", [b"gzip", b"gzip, chunked", b"deflate", b"identity"])
def test_unknown_transfer_coding_501(coding):
    assert status_of(_head(b"Host: a", b"Transfer-Encoding: " + coding, method=b"POST")
                     + b"0\r\n\r\n") == 501


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/0.9", b"HTTP/2"])
def test_unsupported_version_505(version):
    assert status_of(b"GET / " + version + b"\r\nHost: a\r\n\r\n") == 505


def test_content_length_above_max_body_413():
    limits = poex_http.Limits(max_body=10)
    assert status_of(_head(b"Host: a", b"Content-Length: 11", method=b"POST"), limits) == 413
    # 413 at the head: the body never has to arrive.
    parser = poex_http.RequestParser(limits)
    parser.feed(_head(b"Host: a", b"Content-Length: 99999999999", method=b"POST"))
    with pytest.raises(poex_http.ContentTooLarge) as info:
        parser.next_event()
    assert info.value.status == 413
    m = one(_head(b"Host: a", b"Content-Length: 10", method=b"POST") + b"0123456789", limits)
    assert m["body"] == b"0123456789"


def test_chunked_total_above_max_body_413():
    limits = poex_http.Limits(max_body=10)
    assert status_of(CHUNKED_HEAD + b"b\r\n", limits) == 413
    assert status_of(CHUNKED_HEAD + b"6\r\nabcdef\r\n5\r\n", limits) == 413
    assert one(CHUNKED_HEAD + b"6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n", limits)["body"] == \
        b"abcdefghij"
    assert status_of(CHUNKED_HEAD + b"ffffffffffffffff\r\n", limits) == 413


def test_chunked_413_raised_at_size_line_before_data():
    parser = poex_http.RequestParser(poex_http.Limits(max_body=10))
    parser.feed(CHUNKED_HEAD)
    assert parser.next_event().chunked is True
    parser.feed(b"b\r\n")  # only the size line; no data at all
    with pytest.raises(poex_http.HTTPError) as info:
        parser.next_event()
    assert info.value.status == 413


def _line(length):
    """A GET request line of exactly ``length`` bytes (terminator excluded)."""
    line = b"GET /" + b"a" * (length - 14) + b" HTTP/1.1"
    assert len(line) == length
    return line


def test_request_line_too_long_414():
    limits = poex_http.Limits(max_request_line=32)
    assert status_of(_line(32) + b"\r\nHost: a\r\n\r\n", limits) is None
    assert status_of(_line(33) + b"\r\nHost: a\r\n\r\n", limits) == 414
    assert status_of(_line(33) + b"\nHost: a\n\n", limits) == 414
    assert status_of(_line(200) + b"\r\nHost: a\r\n\r\n", limits) == 414


def test_unfinished_request_line_too_long_414():
    limits = poex_http.Limits(max_request_line=32)
    assert status_of(b"GET /" + b"a" * 100, limits) == 414
    parser = poex_http.RequestParser(limits)
    parser.feed(b"GET /" + b"a" * 40)
    with pytest.raises(poex_http.URITooLong) as info:
        parser.next_event()
    assert info.value.status == 414
    # Not yet too long: more bytes are awaited.
    parser = poex_http.RequestParser(limits)
    parser.feed(_line(32)[:-1])
    assert parser.next_event() is None


def test_request_line_limit_boundaries_agree_however_fed():
    limits = poex_http.Limits(max_request_line=40)
    for length in range(36, 45):
        expected = None if length <= 40 else 414
        for ending in (b"\r\n", b"\n"):
            data = _line(length) + ending + b"Host: a" + ending + ending
            assert status_of(data, limits) == expected, (length, ending)


def test_head_too_large_431():
    limits = poex_http.Limits(max_header_size=64)
    assert status_of(_head(b"Host: a", b"X: " + b"v" * 80), limits) == 431
    # Unfinished but already too large.
    assert status_of(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 200, limits) == 431


def test_head_size_boundary_agrees_however_fed():
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX: vvvvvvvvvv\r\n"   # 41 bytes
    size = len(head)
    for limit in range(size - 3, size + 4):
        limits = poex_http.Limits(max_header_size=limit)
        for data in (head + b"\r\n", head.replace(b"\r\n", b"\n") + b"\n"):
            expected = None if len(data) - (2 if data.endswith(b"\r\n\r\n") else 1) <= limit else 431
            assert status_of(data, limits) == expected, (limit, data)


def test_too_many_fields_431():
    limits = poex_http.Limits(max_header_count=3)
    assert one(_head(b"Host: a", b"X: 1", b"Y: 2"), limits)["fields"] == \
        [("Host", "a"), ("X", "1"), ("Y", "2")]
    assert status_of(_head(b"Host: a", b"X: 1", b"Y: 2", b"Z: 3"), limits) == 431


def test_trailer_section_too_large_431():
    limits = poex_http.Limits(max_header_size=64)
    assert status_of(CHUNKED_HEAD + b"0\r\nX-T: " + b"t" * 200 + b"\r\n\r\n", limits) == 431
    # Unfinished but already too large.
    assert status_of(CHUNKED_HEAD + b"0\r\nX-T: " + b"t" * 200, limits) == 431


def test_too_many_trailer_fields_431():
    limits = poex_http.Limits(max_header_count=3)
    ok_body = b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    assert one(CHUNKED_HEAD + ok_body, limits)["trailers"] == [("A", "1"), ("B", "2"), ("C", "3")]
    assert status_of(CHUNKED_HEAD + b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", limits) == 431


def test_trailer_size_boundary_same_rule_as_head():
    # The trailer section counts like the head: the field lines with their
    # CRLFs, not the final empty line; at the limit is fine, one more is 431.
    # (The limit also applies to the head, which is 54 bytes here.)
    assert len(CHUNKED_HEAD) - 2 == 54
    head = CHUNKED_HEAD + b"0\r\n"
    limits = poex_http.Limits(max_header_size=60)
    for size in range(55, 66):
        trailer = b"X-T: " + b"t" * (size - 7) + b"\r\n"
        assert len(trailer) == size
        expected = None if size <= 60 else 431
        assert status_of(head + trailer + b"\r\n", limits) == expected, size


def test_content_encoding_without_length_411():
    assert status_of(_head(b"Host: a", b"Content-Encoding: fragged")) == 411
    # With a length, or on HTTP/1.0, it is fine.
    assert one(_head(b"Host: a", b"Content-Encoding: gzip", b"Content-Length: 2",
                     method=b"POST") + b"xx")["body"] == b"xx"
    assert one(_head(b"Content-Encoding: gzip", version=b"HTTP/1.0"))["version"] == "HTTP/1.0"


@pytest.mark.parametrize("value", [b"something-else", b"100-continue, foo", b"200-ok"])
def test_unknown_expectation_417(value):
    assert status_of(_head(b"Host: a", b"Expect: " + value, b"Content-Length: 1",
                           method=b"POST") + b"x") == 417


def test_error_classes_carry_status():
    assert [cls.status for cls in (
        poex_http.BadRequest, poex_http.RequestTimeout, poex_http.LengthRequired,
        poex_http.ContentTooLarge, poex_http.URITooLong, poex_http.ExpectationFailed,
        poex_http.HeaderFieldsTooLarge, poex_http.NotImplementedByServer,
        poex_http.VersionNotSupported)] == [400, 408, 411, 413, 414, 417, 431, 501, 505]
    error = poex_http.HTTPError(418, "teapot")
    assert (error.status, error.message, str(error)) == (418, "teapot", "418 teapot")
    assert poex_http.HTTPError().status == 500
    assert issubclass(poex_http.BadRequest, poex_http.HTTPError)


def test_error_raised_is_an_http_error_subclass():
    parser = poex_http.RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(poex_http.BadRequest) as info:
        parser.next_event()
    assert isinstance(info.value, poex_http.HTTPError)
    assert info.value.status == 400


def test_fuzzed_input_only_raises_http_errors():
    # Whatever the bytes, the parser answers with events or an HTTPError.
    rng = random.Random(9110)
    alphabet = b"GET /HTP1.0\r\n:;Host-Lngtcdk a\t\x00\x80\"=0123456789abcdef,"
    for _ in range(300):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        for prefix in (b"", b"GET / HTTP/1.1\r\n", CHUNKED_HEAD):
            parse(prefix + data, seeds=(rng.random(),))


# ====================================================================
# 2. Response helpers
# ====================================================================

def test_status_line():
    assert poex_http.status_line(200) == "HTTP/1.1 200 OK\r\n"
    assert poex_http.status_line(404) == "HTTP/1.1 404 Not Found\r\n"
    assert poex_http.status_line(100) == "HTTP/1.1 100 Continue\r\n"
    assert poex_http.status_line(200) == "HTTP/1.1 200 OK\r\n"  # cached: same again
    assert poex_http.status_line(404, "Gone Fishing") == "HTTP/1.1 404 Gone Fishing\r\n"


def test_status_line_refuses_crlf_in_message():
    # RFC 9112 §4: reason-phrase = *( HTAB / SP / VCHAR / obs-text ); a CR or
    # LF in a custom message would split the response.
    for message in ("OK\r\nX-Evil: 1", "OK\nX", "OK\rX", "O\x00K"):
        with pytest.raises(ValueError):
            poex_http.status_line(200, message)


def test_reason_phrase():
    assert poex_http.reason_phrase(200) == "OK"
    assert poex_http.reason_phrase(201) == "Created"
    assert poex_http.reason_phrase(304) == "Not Modified"
    assert poex_http.reason_phrase(400) == "Bad Request"
    assert poex_http.reason_phrase(411) == "Length Required"
    assert poex_http.reason_phrase(431) == "Request Header Fields Too Large"
    assert poex_http.reason_phrase(500) == "Internal Server Error"
    assert poex_http.reason_phrase(501) == "Not Implemented"
    assert poex_http.reason_phrase(505) == "HTTP Version Not Supported"
    assert isinstance(poex_http.reason_phrase(599), str)
    assert "\r" not in poex_http.status_line(599)[:-2]


def test_reason_phrases_are_rfc9110():
    # The section comment promises RFC 9110 §15 phrases, identical on every
    # supported Python (3.8 ... 3.13).
    assert poex_http.reason_phrase(413) == "Content Too Large"
    assert poex_http.reason_phrase(414) == "URI Too Long"
    assert poex_http.reason_phrase(416) == "Range Not Satisfiable"
    assert poex_http.reason_phrase(422) == "Unprocessable Content"


@pytest.mark.parametrize("code, expected", [
    (100, False), (101, False), (103, False), (199, False), (200, True), (201, True),
    (204, False), (206, True), (301, True), (304, False), (404, True), (500, True)])
def test_status_has_body(code, expected):
    assert poex_http.status_has_body(code) is expected


def test_frame_chunk_and_last_chunk():
    assert poex_http.frame_chunk(b"hello") == b"5\r\nhello\r\n"
    assert poex_http.frame_chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert poex_http.frame_chunk(b"y" * 4096) == b"1000\r\n" + b"y" * 4096 + b"\r\n"
    assert poex_http.LAST_CHUNK == b"0\r\n\r\n"


def test_framed_chunks_parse_back():
    body = poex_http.frame_chunk(b"abc") + poex_http.frame_chunk(b"d" * 300) + poex_http.LAST_CHUNK
    assert one(CHUNKED_HEAD + body)["body"] == b"abc" + b"d" * 300


# ====================================================================
# 3. Headers
# ====================================================================

def test_headers_case_insensitive_access():
    h = poex_http.Headers([("Content-Type", "text/plain"), ("X-A", "1")])
    assert h.get("content-type") == "text/plain"
    assert h.get("CONTENT-TYPE") == "text/plain"
    assert h["x-a"] == "1"
    assert "content-TYPE" in h
    assert "X-B" not in h
    assert h.get("X-B") is None
    assert h.get("X-B", "dflt") == "dflt"
    assert len(h) == 2


def test_headers_add_and_get_all_keep_order():
    h = poex_http.Headers()
    h.add("Set-Cookie", "a=1")
    h.add("X", "x")
    h.add("set-cookie", "b=2")
    assert h.get_all("SET-COOKIE") == ["a=1", "b=2"]
    assert h.get("Set-Cookie") == "a=1, b=2"
    assert h.get_all("Nope") == []
    assert h.items() == [("Set-Cookie", "a=1"), ("X", "x"), ("set-cookie", "b=2")]
    assert h.keys() == ["Set-Cookie", "X", "set-cookie"]
    assert list(h) == ["Set-Cookie", "X", "set-cookie"]
    assert len(h) == 3


def test_headers_set_replaces_repeats_at_first_position():
    h = poex_http.Headers([("A", "1"), ("B", "2"), ("a", "3"), ("C", "4"), ("A", "5")])
    h.set("a", "9")
    assert h.items() == [("a", "9"), ("B", "2"), ("C", "4")]
    h.set("D", "new")
    assert h.items() == [("a", "9"), ("B", "2"), ("C", "4"), ("D", "new")]
    h["b"] = "22"
    assert h.items() == [("a", "9"), ("b", "22"), ("C", "4"), ("D", "new")]


def test_headers_remove_and_delitem():
    h = poex_http.Headers([("A", "1"), ("B", "2"), ("a", "3")])
    assert h.remove("A") == 2
    assert h.items() == [("B", "2")]
    assert h.remove("A") == 0
    del h["b"]
    assert h.items() == []
    assert len(h) == 0
    with pytest.raises(KeyError):
        del h["b"]
    with pytest.raises(KeyError):
        h["missing"]


def test_headers_empty_value_is_present():
    h = poex_http.Headers([("X-Empty", "")])
    assert h["x-empty"] == ""
    assert "X-EMPTY" in h


def test_headers_from_dict_and_values_as_str():
    h = poex_http.Headers({"Server": "s", "Content-Length": 5})
    assert h.items() == [("Server", "s"), ("Content-Length", "5")]


def test_headers_copy_is_independent():
    h = poex_http.Headers([("A", "1")])
    c = h.copy()
    c.add("B", "2")
    h.set("A", "changed")
    assert h.items() == [("A", "changed")]
    assert c.items() == [("A", "1"), ("B", "2")]


def test_headers_equality():
    a = poex_http.Headers([("Content-Type", "text/html"), ("X", "1")])
    assert a == poex_http.Headers([("content-type", "text/html"), ("x", "1")])
    assert a == {"CONTENT-TYPE": "text/html", "X": "1"}
    assert a != poex_http.Headers([("Content-Type", "text/plain"), ("X", "1")])
    assert a != poex_http.Headers([("Content-Type", "text/html")])
    assert poex_http.Headers([("X", "a")]) != poex_http.Headers([("X", "A")])


def test_headers_compare_unequal_to_other_types():
    h = poex_http.Headers([("A", "1")])
    assert (h == None) is False  # noqa: E711
    assert (h == 5) is False
    assert h != "A: 1"


@pytest.mark.parametrize("value", [
    "a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b", "\r\n", "\n"])
def test_headers_refuse_response_splitting(value):
    h = poex_http.Headers()
    with pytest.raises(ValueError):
        h.add("X", value)
    with pytest.raises(ValueError):
        h.set("X", value)
    with pytest.raises(ValueError):
        h["X"] = value
    with pytest.raises(ValueError):
        poex_http.Headers({"X": value})
    assert h.items() == []


@pytest.mark.parametrize("name", ["Bad Name", "", "X:Y", "X\r\nY", "X\nY", "\u00dcml", "X(Y)",
                                  "snow\u2603", " X"])
def test_headers_refuse_bad_names(name):
    h = poex_http.Headers()
    with pytest.raises(ValueError):
        h.add(name, "v")
    with pytest.raises(ValueError):
        h.set(name, "v")
    assert len(h) == 0


def test_headers_accept_tab_and_obs_text_values():
    h = poex_http.Headers()
    h.add("X", "a\tb")
    h.add("Y", "caf\u00e9")
    assert h.items() == [("X", "a\tb"), ("Y", "caf\u00e9")]


# ====================================================================
# 4. HTTP dates
# ====================================================================

@pytest.mark.parametrize("timestamp, text", [
    (784111777, "Sun, 06 Nov 1994 08:49:37 GMT"),
    (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
    (951782400, "Tue, 29 Feb 2000 00:00:00 GMT"),
    (2 ** 31, "Tue, 19 Jan 2038 03:14:08 GMT"),
    (784111777.999, "Sun, 06 Nov 1994 08:49:37 GMT"),
])
def test_format_http_date(timestamp, text):
    assert poex_http.format_http_date(timestamp) == text


@pytest.mark.parametrize("text", [
    "Sun, 06 Nov 1994 08:49:37 GMT",        # IMF-fixdate
    "Sunday, 06-Nov-94 08:49:37 GMT",       # RFC 850
    "Sun Nov  6 08:49:37 1994",             # asctime
    "  Sun, 06 Nov 1994 08:49:37 GMT  ",
])
def test_parse_http_date_three_forms(text):
    assert poex_http.parse_http_date(text) == 784111777


def test_parse_http_date_asctime_two_digit_day():
    assert poex_http.parse_http_date("Wed Nov 16 08:49:37 1994") == 784111777 + 10 * 86400


@pytest.mark.parametrize("text", [
    "", "garbage", "yesterday", "Sun, 06 Nov 1994", "Sun, 06 Nov 1994 08:49:37",
    "Sun, 06 Xyz 1994 08:49:37 GMT", "Sun, 6 Nov 1994 08:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37 UTC", "1994-11-06T08:49:37Z", "784111777",
    "Sunday, 06-Nov-1994 08:49:37 GMT",
])
def test_parse_http_date_garbage(text):
    assert poex_http.parse_http_date(text) is None


@pytest.mark.parametrize("text", [
    "Sun, 32 Nov 1994 08:49:37 GMT",
    "Sun, 31 Feb 1994 08:49:37 GMT",
    "Sun, 06 Nov 1994 25:49:37 GMT",
    "Sun, 06 Nov 1994 08:61:37 GMT",
    "Sun, 00 Nov 1994 08:49:37 GMT",
])
def test_parse_http_date_impossible_dates(text):
    # Not a valid HTTP-date: e.g. an If-Modified-Since holding it is ignored
    # (RFC 9110 §13.1.3), not read as some other day.
    assert poex_http.parse_http_date(text) is None


@pytest.mark.parametrize("timestamp", [0, 784111777, 951782400, 1700000000, 2 ** 31, 4102444799])
def test_http_date_round_trip(timestamp):
    assert poex_http.parse_http_date(poex_http.format_http_date(timestamp)) == timestamp


# ====================================================================
# 5. Limits
# ====================================================================

def test_limits_defaults():
    limits = poex_http.Limits()
    assert limits.max_body == 1048576
    assert limits.max_request_line == 8190
    assert limits.max_header_size == 65536
    assert limits.max_header_count == 100
    assert limits.max_chunk_line == 4096


def test_limits_overrides_keep_the_rest():
    limits = poex_http.Limits(max_body=10, max_header_count=3)
    assert (limits.max_body, limits.max_header_count) == (10, 3)
    assert limits.max_request_line == 8190
    assert "max_body=10" in repr(limits)
    assert poex_http.Limits().max_body == 1048576  # defaults untouched


def test_limits_unknown_name():
    with pytest.raises(TypeError) as info:
        poex_http.Limits(max_bodie=5)
    assert "max_bodie" in str(info.value)


def test_limits_has_no_free_attributes():
    with pytest.raises(AttributeError):
        poex_http.Limits().max_bodie = 5


def test_parser_default_limits():
    assert poex_http.RequestParser().limits.max_body == 1048576


# ====================================================================
# 6. Reactor (no servers)
# ====================================================================

@pytest.fixture
def reactor():
    r = poex_http.Reactor()
    yield r
    r.close()


def run_to_completion(reactor, timeout=DEADLINE):
    """Run the loop on a thread; fail if run() does not return in time."""
    thread = threading.Thread(target=reactor.run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        reactor.stop()
        thread.join(timeout)
        pytest.fail("Reactor.run() did not return")


def test_run_returns_when_nothing_is_left(reactor):
    started = time.monotonic()
    reactor.run()
    assert time.monotonic() - started < 1.0


def test_call_soon_order_and_args(reactor):
    out = []
    reactor.call_soon(out.append, 1)
    reactor.call_soon(lambda a, b: out.append(a + b), 2, 3)
    reactor.call_soon(out.append, "x")
    run_to_completion(reactor)
    assert out == [1, 5, "x"]


def test_call_soon_from_a_callback_runs_on_a_later_turn(reactor):
    out = []

    def first():
        out.append("first")
        reactor.call_soon(out.append, "nested")
    reactor.call_soon(first)
    reactor.call_soon(out.append, "second")
    run_to_completion(reactor)
    assert out == ["first", "second", "nested"]


def test_timers_equal_deadlines_keep_insertion_order(reactor):
    out = []
    deadline = time.monotonic() - 1.0
    for i in range(20):
        reactor.call_at(deadline, out.append, i)
    run_to_completion(reactor)
    assert out == list(range(20))


def test_timers_run_in_deadline_order_and_cancel(reactor):
    out = []
    now = time.monotonic()
    reactor.call_at(now - 1, out.append, "b")
    reactor.call_at(now - 2, out.append, "a")
    cancelled = reactor.call_at(now - 1.5, out.append, "cancelled")
    reactor.call_later(0.02, out.append, "d")
    reactor.call_later(0.01, out.append, "c")
    reactor.call_later(0.01, out.append, "c2")
    cancelled.cancel()
    cancelled.cancel()  # twice is harmless
    assert cancelled.cancelled is True
    run_to_completion(reactor)
    assert out == ["a", "b", "c", "c2", "d"]


def test_call_later_returns_timer_with_deadline(reactor):
    before = time.monotonic()
    timer = reactor.call_later(30, lambda: None)
    after = time.monotonic()
    assert isinstance(timer, poex_http.Timer)
    assert before + 30 <= timer.deadline <= after + 30
    timer.cancel()


def test_run_returns_when_only_cancelled_timers_remain(reactor):
    out = []
    reactor.call_later(60, out.append, "never").cancel()
    run_to_completion(reactor)
    assert out == []


def test_many_cancelled_timers_swept_and_rest_still_fire(reactor):
    out = []
    deadline = time.monotonic() - 1
    timers = [reactor.call_at(deadline + i * 1e-6, out.append, i) for i in range(200)]
    for timer in timers[:150]:
        timer.cancel()
    reactor.call_later(60, out.append, "far").cancel()
    run_to_completion(reactor)
    assert out == list(range(150, 200))


def test_cancelling_a_timer_that_already_fired_is_harmless(reactor):
    out = []
    fired = reactor.call_at(time.monotonic() - 1, out.append, "first")
    run_to_completion(reactor)
    assert out == ["first"]
    fired.cancel()  # too late: must not disturb the timers that follow
    reactor.call_at(time.monotonic() - 1, out.append, "second")
    reactor.call_later(0.01, out.append, "third")
    run_to_completion(reactor)
    assert out == ["first", "second", "third"]


def test_call_soon_threadsafe_wakes_a_blocked_loop(reactor):
    running = threading.Event()
    woken = threading.Event()
    seen = {}
    long_timer = reactor.call_later(60, lambda: None)  # select() would sleep 60 s

    def on_loop():
        seen["in_thread"] = reactor.in_reactor_thread()
        running.set()
    reactor.call_soon(on_loop)
    thread = threading.Thread(target=reactor.run, daemon=True)
    thread.start()
    try:
        assert running.wait(DEADLINE), "loop did not start"
        assert reactor.in_reactor_thread() is False
        started = time.monotonic()

        def from_other_thread(value):
            seen["value"] = value
            seen["in_thread_2"] = reactor.in_reactor_thread()
            woken.set()
        poster = threading.Thread(target=reactor.call_soon_threadsafe,
                                  args=(from_other_thread, 42))
        poster.start()
        poster.join(DEADLINE)
        assert woken.wait(DEADLINE), "call_soon_threadsafe did not wake the loop"
        assert time.monotonic() - started < DEADLINE
        assert seen == {"in_thread": True, "value": 42, "in_thread_2": True}
        assert thread.is_alive()  # the long timer still keeps it running
    finally:
        long_timer.cancel()
        reactor.stop()
        thread.join(DEADLINE)
    assert not thread.is_alive()


def test_stop_from_another_thread(reactor):
    running = threading.Event()
    out = []
    reactor.call_later(60, out.append, "never")
    reactor.call_soon(running.set)
    thread = threading.Thread(target=reactor.run, daemon=True)
    thread.start()
    assert running.wait(DEADLINE)
    reactor.stop()
    thread.join(DEADLINE)
    assert not thread.is_alive(), "stop() did not end run()"
    assert out == []
    assert reactor.in_reactor_thread() is True  # nobody runs it now


def test_stop_from_a_callback_and_run_again(reactor):
    out = []
    timer = reactor.call_later(60, out.append, "never")
    reactor.call_soon(out.append, "a")
    reactor.call_soon(reactor.stop)
    run_to_completion(reactor)
    assert out == ["a"]
    # run() may be called again and carries on with what is left.
    timer.cancel()
    reactor.call_soon(out.append, "b")
    run_to_completion(reactor)
    assert out == ["a", "b"]


def test_exception_in_callback_is_logged_not_raised(reactor, caplog):
    caplog.set_level(logging.ERROR, logger="poex_http")
    out = []

    def boom():
        raise ValueError("kaboom-soon")

    def timer_boom():
        raise RuntimeError("kaboom-timer")
    reactor.call_soon(boom)
    reactor.call_soon(out.append, "after")
    reactor.call_at(time.monotonic() - 1, timer_boom)
    reactor.call_at(time.monotonic() - 1, out.append, "after-timer")
    run_to_completion(reactor)
    assert sorted(out) == ["after", "after-timer"]
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    kinds = sorted(type(record.exc_info[1]).__name__ for record in errors if record.exc_info)
    assert kinds == ["RuntimeError", "ValueError"]
    text = caplog.text
    assert "kaboom-soon" in text and "kaboom-timer" in text


# ====================================================================
# 7. Router: the t/10_init.t handler rules
# ====================================================================

def h_honk(req, resp):
    return "honk"


def h_onk(req, resp):
    return "onk"


def h_bonk(req, resp):
    return "bonk"


def h_any(req, resp):
    return "any"


def h_special(*args):
    return "special"


def test_router_scalar_handler():
    router = poex_http.Router(h_any)
    assert router.order == [""]
    assert router.find_regex("/") == ""
    assert router.find("/") is h_any
    assert router.find("/anything/at/all") is h_any
    assert router.get() == {"": h_any}


def test_router_dict_finds_nothing_for_root():
    router = poex_http.Router({"bonk": h_bonk, "honk": h_honk})
    assert router.order == ["bonk", "honk"]  # ordered, unlike a Perl hash
    assert router.find_regex("/") is None
    assert router.find("/") is None


def test_router_list_keeps_order_first_match_wins():
    for handlers in ([("honk", h_honk), ("onk", h_onk), ("bonk", h_bonk)],
                     ["honk", h_honk, "onk", h_onk, "bonk", h_bonk]):  # Perl-style flat list
        router = poex_http.Router(handlers)
        assert router.order == ["honk", "onk", "bonk"]
        assert router.find_regex("/path/to/honk") == "honk"
        assert router.find("/path/to/honk") is h_honk
        assert router.find_regex("/path/to/bonk") == "onk"   # unanchored: "onk" is in "bonk"
        assert router.find("/path/to/bonk") is h_onk
        assert router.find_regex("/") is None


def test_router_specials_kept_out_of_order():
    router = poex_http.Router([
        ("honk", h_honk), ("on_error", h_special), ("onk", h_onk),
        ("pre_request", h_special), ("bonk", h_bonk), ("post_request", h_special)])
    assert router.order == ["honk", "onk", "bonk"]
    assert sorted(router.specials) == ["on_error", "post_request", "pre_request"]
    assert router.specials["on_error"] is h_special
    assert router.find_regex("/on_error") is None
    assert router.find("/pre_request") is None
    assert router.get() == {"honk": h_honk, "on_error": h_special, "onk": h_onk,
                            "pre_request": h_special, "bonk": h_bonk,
                            "post_request": h_special}


def _init_router():
    return poex_http.Router([("honk", h_honk), ("onk", h_onk), ("bonk", h_bonk),
                             ("on_error", h_special)])


def test_router_add_scalar_list_dict_appends():
    router = _init_router()
    router.add(h_any)
    assert router.order == ["honk", "onk", "bonk", ""]
    router.add([("zonk", h_any)])
    assert router.order == ["honk", "onk", "bonk", "", "zonk"]
    router.add({"thunk": h_any})
    assert router.order == ["honk", "onk", "bonk", "", "zonk", "thunk"]
    assert router.find_regex("/nothing") == ""
    assert router.find_regex("/thunk") == ""  # "" comes first now
    assert router.specials == {"on_error": h_special}


def test_router_readded_regex_moves_to_end():
    router = _init_router()
    router.add([("honk", h_any)])
    assert router.order == ["onk", "bonk", "honk"]
    assert router.find_regex("/honk") == "onk"  # "honk" now comes after "onk"
    assert router.get()["honk"] is h_any
    # Several at once: appended after the old ones, in the new list's order.
    router.add([("bonk", h_bonk), ("new", h_any), ("onk", h_onk)])
    assert router.order == ["honk", "bonk", "new", "onk"]
    assert router.find_regex("/path/to/bonk") == "bonk"
    router.remove("bonk")
    assert router.find("/honk") is h_any  # the re-added handler replaced the old one


def test_router_remove_sequence():
    router = _init_router()
    router.add(h_any)
    router.add([("zonk", h_any)])
    router.add({"thunk": h_any})
    assert router.order == ["honk", "onk", "bonk", "", "zonk", "thunk"]
    router.remove("honk")
    assert router.order == ["onk", "bonk", "", "zonk", "thunk"]
    router.remove(["zonk", "bonk"])
    assert router.order == ["onk", "", "thunk"]
    router.remove({"": 1, "onk": 1})
    assert router.order == ["thunk"]
    assert router.find_regex("/thunk") == "thunk"
    assert router.find("/thunk") is h_any
    assert router.find("/honk") is None
    assert sorted(router.get()) == ["on_error", "thunk"]
    router.remove("on_error")
    assert router.specials == {}
    assert router.get() == {"thunk": h_any}
    router.remove("never-there")  # unknown names are ignored
    assert router.order == ["thunk"]


def test_router_set_replaces_everything():
    router = _init_router()
    router.set([("^/x", h_any)])
    assert router.order == ["^/x"]
    assert router.specials == {}
    assert router.get() == {"^/x": h_any}
    assert router.find("/x/y") is h_any
    assert router.find("/honk") is None


def test_router_matches_path_with_regex():
    router = poex_http.Router([(r"^/static/.*\.css$", h_bonk), (r"^/$", h_honk), ("", h_any)])
    assert router.find("/static/a/b.css") is h_bonk
    assert router.find("/static/a/b.cssx") is h_any
    assert router.find("/") is h_honk
    assert router.find("/other") is h_any


def test_router_invalid_regex_raises_at_add_time():
    with pytest.raises(re.error):
        poex_http.Router([("(unclosed", h_any)])
    router = _init_router()
    with pytest.raises(re.error):
        router.add([("fine", h_any), ("[bad", h_any)])
    assert router.order == ["honk", "onk", "bonk"]  # nothing half-added
    assert "fine" not in router.get()


def test_router_non_str_regex_and_bad_handler():
    with pytest.raises(TypeError):
        poex_http.Router([(42, h_any)])
    with pytest.raises(TypeError):
        poex_http.Router([("x", 42)])
    with pytest.raises(ValueError):
        poex_http.Router(["odd", h_any, "list"])


SPEC_MODULE = "poex_draft_spec_module"


@pytest.fixture
def spec_module(tmp_path, monkeypatch):
    (tmp_path / (SPEC_MODULE + ".py")).write_text(textwrap.dedent("""
        calls = []

        def func(args, *params):
            calls.append((args,) + params)
            return "called"

        def plain(req, resp):
            calls.append(("plain", req, resp))
            return "plain"

        class Group:
            @staticmethod
            def inner(args, req, resp):
                calls.append(("inner", args, req, resp))

        value = 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, SPEC_MODULE, raising=False)
    yield SPEC_MODULE
    sys.modules.pop(SPEC_MODULE, None)


def test_string_spec_with_named_arguments(spec_module):
    spec = spec_module + ":func?a=b"
    router = poex_http.Router([("^/x", spec)])
    handler = router.find("/x/1")
    assert handler("REQ", "RESP") == "called"
    module = sys.modules[spec_module]
    assert module.calls == [({"a": "b"}, "REQ", "RESP")]
    assert router.get() == {"^/x": spec}


def test_string_spec_with_encoded_and_empty_arguments(spec_module):
    router = poex_http.Router([("", spec_module + ":func?honk=bonk&msg=a%20b+c&empty=")])
    router.find("/")("R", "S")
    assert sys.modules[spec_module].calls == [
        ({"honk": "bonk", "msg": "a b c", "empty": ""}, "R", "S")]


def test_string_spec_with_list_arguments(spec_module):
    router = poex_http.Router([("", spec_module + ":func?x+y")])
    router.find("/")("R", "S")
    assert sys.modules[spec_module].calls == [(["x", "y"], "R", "S")]


def test_string_spec_without_arguments_is_the_function(spec_module):
    router = poex_http.Router([("", spec_module + ":plain")])
    module = sys.modules[spec_module]
    assert router.find("/") is module.plain
    assert router.find("/")("R", "S") == "plain"
    assert module.calls == [("plain", "R", "S")]


def test_string_spec_dotted_attribute(spec_module):
    router = poex_http.Router([("", spec_module + ":Group.inner?k=v")])
    router.find("/")("R", "S")
    assert sys.modules[spec_module].calls == [("inner", {"k": "v"}, "R", "S")]


def test_string_spec_for_special_and_scalar(spec_module):
    router = poex_http.Router([("^/", h_any), ("on_error", spec_module + ":func?who=err")])
    router.specials["on_error"]("ERR")
    assert sys.modules[spec_module].calls == [({"who": "err"}, "ERR")]
    assert router.get()["on_error"] == spec_module + ":func?who=err"
    scalar = poex_http.Router(spec_module + ":plain")
    assert scalar.order == [""]
    assert scalar.find("/") is sys.modules[spec_module].plain


@pytest.mark.parametrize("spec, error", [
    ("no_colon_here", ValueError),
    (":func", ValueError),
    (SPEC_MODULE + ":", ValueError),
    ("", ValueError),
    ("poex_draft_no_such_module_xyz:func", ImportError),
    (SPEC_MODULE + ":missing", AttributeError),
    (SPEC_MODULE + ":Group.missing", AttributeError),
    (SPEC_MODULE + ":value", TypeError),
])
def test_bad_string_specs(spec_module, spec, error):
    router = _init_router()
    with pytest.raises(error):
        router.add([("new", h_any), ("^/bad", spec)])
    assert router.order == ["honk", "onk", "bonk"]  # nothing half-added
    with pytest.raises(error):
        poex_http.Router([("^/bad", spec)])


# --------------------------------------------------------------- smoke

def test_hello_over_loopback(serve):
    live = serve(handlers=[("^/$", hello)], keepalive=100)
    with RawClient(live.port) as client:
        for _ in range(3):
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = client.response()
            assert (status, body) == (200, b"Hello world\n")
            assert headers["content-length"] == "12"
            assert headers["content-type"] == "text/plain"
            assert headers["server"] == "poex_http/%s" % poex_http.__version__
            assert "date" in headers
