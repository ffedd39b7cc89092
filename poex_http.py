"""poex_http: a single-file, zero-dependency HTTP/1.1 server.

Handlers are plain callables chosen by regular expressions on the request
path; one non-blocking reactor serves every connection.  Use it as a library::

    import poex_http

    def hello(req, resp):
        resp.content_type = "text/plain"
        resp.content = "Hello world\\n"
        resp.done()

    poex_http.spawn(port=8080, handlers=[("^/$", hello)], keepalive=100)
    poex_http.run()

Lineage: the Python heir of the Perl module POEx::HTTP::Server by Philip Gwyn;
it keeps that module's model (spawn options, regex handlers, special handlers,
request and response objects) and fixes what the Perl code got wrong.

The module reads top to bottom; ``grep '^# ===' poex_http.py`` prints the
table of contents.
"""

# === 1. Header ===

__version__ = "0.1.0"

__all__ = [
    "Limits", "HTTPError", "ProtocolError", "BadRequest", "RequestTimeout",
    "LengthRequired", "ContentTooLarge", "URITooLong", "ExpectationFailed",
    "HeaderFieldsTooLarge", "NotImplementedByServer", "VersionNotSupported",
    "RequestParser", "RequestHead", "EndOfMessage", "MultipartParser", "MultipartPart",
    "MultipartPartEnd", "MultipartEnd", "multipart_boundary", "reason_phrase", "status_line",
    "status_has_body", "frame_chunk", "LAST_CHUNK", "CONTINUE_RESPONSE",
    "Headers", "format_http_date", "parse_http_date", "guess_type", "make_etag",
    "etag_matches", "parse_range", "safe_join", "FileTruncated", "StaticFiles",
    "Reactor", "Timer", "default_reactor",
    "Request", "Response", "Connection", "Error", "URI",
    "Router", "SPECIAL_HANDLERS", "resolve_handler", "Server", "spawn", "run", "stop",
    "post", "TrustedProxies",
    "WebSocket", "WebSocketError", "WebSocketParser", "PerMessageDeflate",
    "websocket_accept", "close_code_allowed", "frame_header",
    "threaded", "WSGIHandler", "FileWrapper", "SERVER_OPTIONS", "main",
    "HAS_SENDFILE", "HAS_REUSEPORT", "HAS_AF_UNIX",
]

import errno
import functools
import heapq
import io
import itertools
import os
import re
import selectors
import socket
import sys
import threading
import time
from collections import deque
from stat import S_ISDIR, S_ISLNK, S_ISREG, S_ISSOCK
from threading import get_ident as _get_ident

HAS_SENDFILE = hasattr(os, "sendfile")
HAS_REUSEPORT = hasattr(socket, "SO_REUSEPORT")
HAS_AF_UNIX = hasattr(socket, "AF_UNIX")


class _LazyLogger:
    """The ``poex_http`` logger, imported on first use: ``logging`` is a third of import time."""

    __slots__ = ()

    def __getattr__(self, name):
        import logging  # deferred: import time
        return getattr(logging.getLogger("poex_http"), name)


_log = _LazyLogger()


# === 2. Limits ===

class Limits:
    """Every size and time bound, each with its default: ``Limits(max_body=2**24)``."""

    _DEFAULTS = {
        # Request line (method, target, version); longer gets 414.  8 KiB is
        # what nginx and most clients agree on.
        "max_request_line": 8190,
        # The whole request head (request line and header fields); larger
        # gets 431.
        "max_header_size": 65536,
        # Number of header fields (and of trailer fields); more gets 431.
        "max_header_count": 100,
        # Request body in bytes, whatever its framing; larger gets 413 before
        # the body is read.  1 MiB, as POE::Filter::HTTPD had it.
        "max_body": 1048576,
        # A body larger than this is kept in a temporary file, not in
        # memory (``req.body_file``; ``req.content`` reads it on demand):
        # well below max_body, so that a few uploads cannot fill the memory.
        "spool_body": 262144,
        # One chunk-size line of a chunked body, extensions included.
        "max_chunk_line": 4096,
        # Bytes read ahead from a client while its request is being handled
        # (pipelining); reading pauses past this.
        "max_pipeline": 262144,
        # Bytes asked of the kernel per recv().
        "recv_size": 65536,
        # Bytes a response may queue before send() reports back-pressure,
        # and the level at which the handler is told it may send again.
        "output_high_water": 262144,
        "output_low_water": 65536,
        # SO_SNDBUF for a streaming response: small, so each flush reaches
        # the client promptly (Linux raises it to its own minimum).
        "stream_sndbuf": 576,
        # Seconds to keep reading and discarding after the last response on
        # a connection the server closes, so that unread client bytes do not
        # turn the close into a reset that destroys the response.
        "linger_timeout": 2.0,
        # Seconds a request head may take from its first byte (from accept,
        # for a connection's first request); slower gets 408.  nginx allows
        # 60, Apache's mod_reqtimeout 20-40.
        "head_timeout": 30.0,
        # A request body must keep up this many bytes a second once it has
        # had ``body_rate_grace`` seconds, as with mod_reqtimeout's MinRate;
        # slower gets 408.  0 turns the rule off.
        "body_min_rate": 500,
        "body_rate_grace": 20.0,
        # Seconds to stop accepting after the process runs out of file
        # descriptors, instead of spinning on a listener that stays readable.
        "accept_pause": 0.5,
        # Listen backlog: clients beyond the concurrency limit wait here.
        "backlog": 1024,
        # WebSocket: the largest message, after decompression; a frame that
        # announces more fails the connection with 1009 before its payload
        # is read.
        "ws_max_message": 1048576,
        # Seconds between the server's pings, and for the pong to arrive
        # before the connection is dropped as dead; 0 turns either off.
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        # Seconds without a message either way before the server closes
        # with 1001; 0: never.
        "ws_idle_timeout": 0,
        # Seconds to wait for the client's Close after the server's.
        "ws_close_timeout": 5.0,
        # Output bytes a WebSocket may queue (send() says False past
        # output_high_water); past this the client is dropped.
        "ws_max_queue": 4194304,
    }
    __slots__ = tuple(_DEFAULTS)

    def __init__(self, **overrides):
        unknown = set(overrides) - set(self._DEFAULTS)
        if unknown:
            raise TypeError("unknown limit(s): %s" % ", ".join(sorted(unknown)))
        for name, default in self._DEFAULTS.items():
            setattr(self, name, overrides.get(name, default))

    def __repr__(self):
        return "Limits(%s)" % ", ".join(
            "%s=%r" % (name, getattr(self, name)) for name in self.__slots__)


# === 3. Errors ===

class HTTPError(Exception):
    """An HTTP failure carrying the status it should produce."""

    status = 500
    message = ""
    headers = ()  # a subclass may skip __init__

    def __init__(self, status=None, message="", headers=()):
        if status is not None:
            self.status = status
        self.message = message
        self.headers = headers  # (name, value) pairs for the answer, e.g. WWW-Authenticate
        super().__init__(self.status, message)

    def __str__(self):
        return "%d %s" % (self.status, self.message)


class ProtocolError(HTTPError):
    """The client broke the protocol; the connection closes after the reply."""

    status = 400

    def __init__(self, message=""):
        super().__init__(None, message)


class BadRequest(ProtocolError):
    """400: a malformed request line, header field or body framing."""


class RequestTimeout(ProtocolError):
    """408: the request did not arrive in time."""
    status = 408


class LengthRequired(ProtocolError):
    """411: a body is announced without a length."""
    status = 411


class ContentTooLarge(ProtocolError):
    """413: the body is larger than ``Limits.max_body``."""
    status = 413


class URITooLong(ProtocolError):
    """414: the request line is longer than ``Limits.max_request_line``."""
    status = 414


class ExpectationFailed(ProtocolError):
    """417: an ``Expect`` other than 100-continue."""
    status = 417


class HeaderFieldsTooLarge(ProtocolError):
    """431: the head is larger than ``Limits.max_header_size`` or has too many fields."""
    status = 431


class NotImplementedByServer(ProtocolError):
    """501: a transfer-coding this server does not decode."""
    status = 501


class VersionNotSupported(ProtocolError):
    """505: an HTTP major version other than 1."""
    status = 505


class WebSocketError(Exception):
    """A WebSocket client broke the protocol: the close code that fails the connection."""

    def __init__(self, code, reason):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


# === 4. Protocol core (sans-IO) ===
#
# Bytes go in, events come out; nothing here touches a socket, a clock or the
# file system.  The request head parser is the hottest code of the server
# (benchmark: bench/bench.py, workload "hello"): it locates delimiters with
# one search that resumes where the last one stopped, validates with one
# compiled regular expression per line kind, and caches the decoding of
# header names it has seen.


class _BoundedCache(dict):
    """Results computed from clients' input, emptied when full so that no client can grow it."""
    # Starting afresh costs little: the few keys a server really sees come back at once.

    __slots__ = ("size",)

    def __init__(self, size):
        super().__init__()
        self.size = size

    def put(self, key, value):
        if len(self) >= self.size:
            self.clear()
        self[key] = value
        return value


# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9112 §3: request-line = method SP request-target SP HTTP-version, with
# exactly one SP between parts.  The target must be visible ASCII (RFC 3986
# characters; anything else is rejected rather than guessed at).
_REQUEST_LINE_RE = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
# RFC 9110 §5.5: field values must not hold NUL, CR or LF, and other
# controls are invalid too; HTAB is allowed.  Checked once over a whole head,
# where CR and LF may only appear as line ends (checked separately).
_FORBIDDEN_CONTROL_RE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The usual head in one match: an HTTP/1.x request line, then lines that end
# in CRLF and hold no control but HTAB.  What it refuses is judged slowly.
_USUAL_HEAD_RE = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.([0-9])\r\n"
    rb"(?:[\t\x20-\x7e\x80-\xff]*\r\n)*")
# RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF.  chunk-ext is
# *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ).
_CHUNK_LINE_RE = re.compile(
    rb"0*([0-9A-Fa-f]{1,16})"
    rb"((?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
    rb"(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
    rb"|\"(?:[^\"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x09\x20-\x7e\x80-\xff])*\"))?)*)"
    rb"[ \t]*")
# RFC 9112 §2.2: empty lines before a request line are ignored (any run of
# CR and LF), and a head ends with an empty line; a bare LF may end a line.
# One search for both endings takes half the time of two bytes.find.
_EMPTY_LINES_RE = re.compile(rb"[\r\n]*")
_HEAD_END_RE = re.compile(rb"\n\r?\n")

# RFC 9110 §7.2, RFC 3986 §3.2.2: Host = uri-host [ ":" port ], where the
# host is a reg-name, an IPv4 address or a bracketed IPv6 literal (may be
# empty when the target has no authority).
_HOST_RE = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+(?:%25[0-9A-Za-z._~-]+)?\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")
# Host values seen valid before (a server hears the same few).
_VALID_HOSTS = _BoundedCache(256)
# Header names seen before: raw bytes -> (name as sent, lower-case name).
_FIELD_NAME_CACHE = _BoundedCache(512)
# Methods seen before: raw bytes -> str.
_METHOD_CACHE = _BoundedCache(64)

# Header fields the parser itself must look at.
_FRAMING_FIELDS = frozenset((
    "content-length", "transfer-encoding", "host", "connection", "expect",
    "content-encoding"))


class RequestHead:
    """A parsed request line and header section."""

    __slots__ = ("method", "target", "path", "query", "version", "fields",
                 "http11", "keep_alive", "content_length", "chunked",
                 "expect_continue", "host", "user")

    def __init__(self, method, target, version, fields):
        self.method = method
        self.target = target
        self.version = version
        self.http11 = version == "HTTP/1.1"
        self.fields = fields
        self.keep_alive = self.http11
        self.content_length = None
        self.chunked = False
        self.expect_continue = False
        self.host = None
        self.user = None  # set by the server once it has accepted the credentials
        self.path, _, self.query = target.partition("?")

    @property
    def has_body(self):
        """True when a body follows the head."""
        return self.chunked or bool(self.content_length)

    def header(self, name, default=None):
        """One field's value (repeated fields joined with ", "), ``name`` in any case."""
        name = name.lower()
        values = [value for field, value in self.fields if field.lower() == name]
        return ", ".join(values) if values else default

    def __repr__(self):
        return "<RequestHead %s %s %s>" % (self.method, self.target, self.version)


class EndOfMessage:
    """The end of a request body, with the trailer fields of a chunked body."""

    __slots__ = ("trailers",)

    def __init__(self, trailers=()):
        self.trailers = trailers

    def __repr__(self):
        return "<EndOfMessage trailers=%r>" % (self.trailers,)


_END_OF_MESSAGE = EndOfMessage()


# A TLS handshake starts with 0x16 (RFC 8446 §5.1), which no method does.
_PLAIN_HTTP_ONLY = "This port speaks plain HTTP, not TLS."


def _raise_bad_request_line(line, max_request_line):
    """Raise the right error for a request line the fast regex refused."""
    if line[:1] == b"\x16":
        raise BadRequest(_PLAIN_HTTP_ONLY)
    if _TOKEN_RE.match(line) is None:
        raise BadRequest("Malformed request line.")  # however long: no method starts so
    if len(line) > max_request_line:
        raise URITooLong("Request line too long.")
    parts = line.split(b" ")
    if len(parts) == 3 and parts[2].startswith(b"HTTP/"):
        version = parts[2][5:]
        if re.fullmatch(rb"[0-9]\.[0-9]|[0-9]", version) and version[:1] != b"1":
            raise VersionNotSupported(
                "HTTP version %s not supported." % version.decode("ascii"))
    if len(parts) == 2 and _TOKEN_RE.fullmatch(parts[0]):
        raise BadRequest("HTTP/0.9 requests are not supported.")
    raise BadRequest("Malformed request line.")


def _parse_field_lines(lines, max_count):
    """Field lines (no line ends) -> ([(name, value)], {framing name: [values]})."""
    if len(lines) > max_count:
        raise HeaderFieldsTooLarge("Too many header fields.")
    fields = []
    framing = {}
    cache = _FIELD_NAME_CACHE
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon:
            raise BadRequest("Malformed header line.")
        names = cache.get(name)
        if names is None:
            if not _TOKEN_RE.fullmatch(name):
                if line[:1] in b" \t":
                    # RFC 9112 §5.2: obs-fold is rejected, not unfolded.
                    raise BadRequest("Obsolete line folding is not accepted.")
                if name.rstrip(b" \t") != name:
                    # RFC 9112 §5.1: no whitespace between name and colon.
                    raise BadRequest("Whitespace before the colon of a header field.")
                raise BadRequest("Malformed header field name.")
            decoded = name.decode("ascii")
            names = (decoded, decoded.lower())
            cache.put(name, names)
        value = value.strip(b" \t").decode("latin-1")
        fields.append((names[0], value))
        if names[1] in _FRAMING_FIELDS:
            framing.setdefault(names[1], []).append(value)
    return fields, framing


def _split_lines(block):
    """A head's lines: CRLF ends a line, a bare LF too (RFC 9112 §2.2), a bare CR is an error."""
    crlf = block.count(b"\r\n")
    if block.count(b"\r") != crlf:
        raise BadRequest("Bare CR in the request head.")
    if block.count(b"\n") == crlf:
        lines = block.split(b"\r\n")
    else:
        lines = [line[:-1] if line[-1:] == b"\r" else line
                 for line in block.split(b"\n")]
    lines.pop()  # the empty string after the final terminator
    return lines


class _ReceiveBuffer:
    """Bytes received and not yet parsed; each search resumes where the last stopped, so
    parsing costs time linear in the bytes however they are split (h11's buffer is the model)."""

    __slots__ = ("size", "_data", "_start", "_line_search", "_head_search")

    def __init__(self):
        self.size = 0  # bytes held (an attribute, not a call: the hot path asks often)
        self._data = b""  # b"" whenever everything is consumed
        self._start = 0  # consumed bytes are skipped, and dropped at the next append
        # From _start: no LF lies before _line_search, and no empty line
        # ending a head begins before _head_search.
        self._line_search = self._head_search = 0

    def __len__(self):
        return self.size

    def append(self, data):
        """Add bytes at the end, in amortised O(1) per byte."""
        held = self._data
        if not held:
            self._data = data if data.__class__ is bytes else bytes(data)
            self.size = len(data)
            return
        if held.__class__ is bytes:
            held = self._data = bytearray(memoryview(held)[self._start:])
        elif self._start:
            del held[:self._start]  # O(1): CPython moves the bytearray's start
        self._start = 0
        held += data
        self.size = len(held)

    def extract(self, count, skip=0):
        """Up to ``count`` bytes from the front, or None when empty; ``skip`` more are dropped."""
        data = self._data
        if not data:
            return None
        start = self._start
        end = start + count
        taken = data[start:end]
        if end + skip < len(data):
            self._start = end + skip
            self.size = len(data) - self._start
        else:
            self._data = b""
            self._start = self.size = 0
        self._line_search = self._head_search = 0
        return taken if taken.__class__ is bytes else bytes(taken)

    def peek(self, count):
        """Up to ``count`` bytes from the front, left in place."""
        return bytes(self._data[self._start:self._start + count])

    def line_end(self, limit):
        """Where the first LF is if it is among the first ``limit`` bytes, else -1."""
        start = self._start
        end = self._data.find(b"\n", start + self._line_search, start + limit)
        self._line_search = (end if end >= 0 else min(len(self._data), start + limit)) - start
        return end - start if end >= 0 else -1

    def extract_line(self, limit):
        """The first line with its LF, or None unless it ends within ``limit`` bytes."""
        end = self.line_end(limit)
        return self.extract(end + 1) if end >= 0 else None

    def only_empty_lines(self):
        """True when nothing but CR and LF is buffered."""
        data = self._data
        return not data or (data[self._start] in b"\r\n" and
                            _EMPTY_LINES_RE.match(data, self._start).end() == len(data))

    def extract_head(self, limit):
        """The head through its last line end, or None until its empty line is within ``limit``."""
        data = self._data
        if not data:
            return None
        start = self._start
        if data[start] in b"\r\n":
            self.extract(_EMPTY_LINES_RE.match(data, start).end() - start)
            data = self._data
            start = self._start
        match = _HEAD_END_RE.search(data, start + self._head_search, start + limit)
        if match is not None:
            head_end, after = match.span()
            return self.extract(head_end + 1 - start, after - head_end - 1)
        # The empty line may begin in the last two bytes and end in bytes to come.
        self._head_search = max(0, min(len(data), start + limit) - start - 2)
        return None


class _ContentLengthReader:
    """Body framed by Content-Length (RFC 9112 §6.2)."""

    __slots__ = ("remaining",)

    def __init__(self, length):
        self.remaining = length

    def read(self, received):
        if not self.remaining:
            return _END_OF_MESSAGE
        data = received.extract(self.remaining)
        if data is not None:
            self.remaining -= len(data)
        return data

    incomplete = property(lambda self: self.remaining > 0)


class _ChunkedReader:
    """Body in chunked transfer-coding (RFC 9112 §7.1), trailers included."""

    __slots__ = ("limits", "state", "remaining", "total", "incomplete",
                 "trailer_lines", "trailer_size")

    SIZE, DATA, DATA_END, TRAILERS = range(4)

    def __init__(self, limits):
        self.limits = limits
        self.state = self.SIZE
        self.remaining = self.total = self.trailer_size = 0
        self.incomplete = True
        self.trailer_lines = []

    def read(self, received):
        while True:
            if self.state == self.DATA:
                data = received.extract(self.remaining)
                if data is not None:
                    self.remaining -= len(data)
                    if not self.remaining:
                        self.state = self.DATA_END
                return data
            if self.state == self.DATA_END:
                ending = received.peek(2)
                if ending != b"\r\n":
                    if ending not in (b"", b"\r"):
                        raise BadRequest("Chunk data not followed by CRLF.")
                    return None
                received.extract(2)
                self.state = self.SIZE
            elif self.state == self.SIZE:
                limit = self.limits.max_chunk_line
                line = received.extract_line(limit + 2)
                if line is None:
                    if len(received) > limit + 1:
                        raise BadRequest("Chunk-size line too long.")
                    return None
                # Lines of the chunked framing end with CRLF only: a bare LF
                # is refused as soon as it arrives, however the bytes are split.
                if line[-2:-1] != b"\r":
                    raise BadRequest("Chunk-size line not ended by CRLF.")
                match = _CHUNK_LINE_RE.fullmatch(line, 0, len(line) - 2)
                if match is None:
                    raise BadRequest("Malformed chunk-size line.")
                size = int(match.group(1), 16)
                self.total += size
                if self.total > self.limits.max_body:
                    raise ContentTooLarge(
                        "Content of more than %d octets not accepted." % self.limits.max_body)
                self.remaining = size
                self.state = self.DATA if size else self.TRAILERS
            else:
                return self._read_trailers(received)

    def _read_trailers(self, received):
        # The same bound as a head: the fields with their line ends, the
        # final empty line not counted, may take ``max_header_size`` bytes.
        limit = self.limits.max_header_size
        while True:
            line = received.extract_line(limit + 2 - self.trailer_size)
            if line is None:
                if self.trailer_size + len(received) > limit + 1:
                    raise HeaderFieldsTooLarge("Trailer section too large.")
                return None
            if line[-2:-1] != b"\r":
                raise BadRequest("Trailer line not ended by CRLF.")
            if len(line) == 2:
                break
            self.trailer_lines.append(line)
            self.trailer_size += len(line)
        self.incomplete = False
        if not self.trailer_lines:
            return _END_OF_MESSAGE
        block = b"".join(self.trailer_lines)
        if _FORBIDDEN_CONTROL_RE.search(block) is not None:
            raise BadRequest("Control character in the trailer section.")
        fields, _ = _parse_field_lines(_split_lines(block), self.limits.max_header_count)
        return EndOfMessage(fields)


class RequestParser:
    """Incremental HTTP/1.x request parser: ``feed(bytes)``, then ``next_event()`` until None."""
    # A violation raises the HTTPError to answer, and the parser is then done.

    __slots__ = ("limits", "_received", "_reader")

    def __init__(self, limits=None):
        self.limits = limits or Limits()
        self._received = _ReceiveBuffer()
        self._reader = None

    def feed(self, data):
        """Add received bytes."""
        self._received.append(data)

    @property
    def buffered(self):
        """Bytes received and not yet parsed."""
        return self._received.size

    def take_buffered(self):
        """Bytes not parsed, for a protocol taking the connection over; the parser is emptied."""
        received = self._received
        return received.extract(len(received)) or b""

    @property
    def in_message(self):
        """True when part of a request has arrived and the rest has not."""
        if self._reader is not None:
            return self._reader.incomplete or self._received.size > 0
        return not self._received.only_empty_lines()

    def next_event(self):
        """The next event (a ``RequestHead``, body ``bytes``, an ``EndOfMessage``), or None."""
        reader = self._reader
        if reader is not None:
            event = reader.read(self._received)
            if event.__class__ is EndOfMessage:
                self._reader = None
            return event
        # Hot path (bench/bench.py, workload "hello"): with no body being
        # read, the head is parsed right here rather than one call further.
        received = self._received
        if not received.size:
            return None
        limits = self.limits
        block = received.extract_head(limits.max_header_size + 3)
        if block is None:
            if _TOKEN_RE.match(received.peek(1)) is None and received.size:
                # No request line starts so: answer now, not after ``timeout``.
                _raise_bad_request_line(received.peek(1), limits.max_request_line)
            size = len(received)
            if (size > limits.max_request_line + 1
                    and received.line_end(limits.max_request_line + 2) < 0):
                raise URITooLong("Request line too long.")
            if size > limits.max_header_size + 2:
                raise HeaderFieldsTooLarge("Request header section too large.")
            return None
        match = _USUAL_HEAD_RE.fullmatch(block)
        if match is not None and match.end(3) <= limits.max_request_line:
            # An HTTP/1.x request line and CRLF lines free of controls, in one
            # look instead of five.
            raw_method, raw_target, minor = match.groups()
            lines = block.split(b"\r\n")
            lines.pop()
        else:
            raw_method, raw_target, minor, lines = self._check_head(block)
        if len(block) > limits.max_header_size:
            raise HeaderFieldsTooLarge("Request header section too large.")
        method = _METHOD_CACHE.get(raw_method)
        if method is None:
            method = _METHOD_CACHE.put(raw_method, raw_method.decode("ascii"))
        # RFC 9110 §6.2: a 1.x request with a minor version above 1 is
        # handled as the highest minor version this server knows.
        version = "HTTP/1.0" if minor == b"0" else "HTTP/1.1"
        fields, framing = _parse_field_lines(lines[1:], limits.max_header_count)
        head = RequestHead(method, raw_target.decode("ascii"), version, fields)
        if framing:
            self._apply_framing(head, framing)
        elif head.http11:
            raise BadRequest("Missing Host header.")
        if head.target[0] != "/":
            self._check_target_form(head)
        return head

    def _check_head(self, block):
        """(method, target, minor version, lines) of a head, or the error for the first fault."""
        limits = self.limits
        if block.find(b"\n", 0, limits.max_request_line + 2) < 0:
            # Judged before the rest, as when the line arrives in pieces.
            _raise_bad_request_line(block[:limits.max_request_line + 2], limits.max_request_line)
        if _FORBIDDEN_CONTROL_RE.search(block) is not None:
            raise BadRequest("Control character in the request head.")
        lines = _split_lines(block)
        request_line = lines[0]
        match = _REQUEST_LINE_RE.fullmatch(request_line)
        if match is None or len(request_line) > limits.max_request_line:
            _raise_bad_request_line(request_line, limits.max_request_line)
        raw_method, raw_target, major, minor = match.groups()
        if major != b"1":
            raise VersionNotSupported(
                "HTTP version %s.%s not supported." % (major.decode(), minor.decode()))
        return raw_method, raw_target, minor, lines

    def _apply_framing(self, head, framing):
        """Host, Connection, Expect and the body framing (RFC 9112 §6.3)."""
        hosts = framing.get("host")
        if hosts is not None:
            if len(hosts) > 1:
                raise BadRequest("More than one Host header.")
            if hosts[0] not in _VALID_HOSTS:
                if not _HOST_RE.fullmatch(hosts[0]):
                    raise BadRequest("Invalid Host header.")
                _VALID_HOSTS.put(hosts[0], True)
            head.host = hosts[0]
        elif head.http11:
            raise BadRequest("Missing Host header.")
        connection = framing.get("connection")
        if connection is not None:
            tokens = {token.strip().lower()
                      for value in connection for token in value.split(",")}
            if "close" in tokens:
                head.keep_alive = False
            elif "keep-alive" in tokens:
                head.keep_alive = True
        codings = framing.get("transfer-encoding")
        lengths = framing.get("content-length")
        if codings is not None:
            if lengths is not None:
                raise BadRequest("Both Content-Length and Transfer-Encoding.")
            if not head.http11:
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request.")
            # RFC 9110 §5.6.1: empty list elements do not count.
            names = [coding.strip().lower()
                     for value in codings for coding in value.split(",") if coding.strip()]
            for name in names:
                if name != "chunked":
                    raise NotImplementedByServer(
                        "Transfer-coding %s is not supported." % name[:40])
            if len(names) != 1:
                raise BadRequest("Malformed Transfer-Encoding.")
            head.chunked = True
            self._reader = _ChunkedReader(self.limits)
        elif lengths is not None:
            values = {value.strip() for field in lengths for value in field.split(",")}
            if len(values) != 1:
                raise BadRequest("Conflicting Content-Length values.")
            value = values.pop()
            if not value.isdigit() or not value.isascii():
                raise BadRequest("Content-Length is not a number.")
            digits = value.lstrip("0") or "0"
            if len(digits) > 18:
                raise ContentTooLarge("Content of %s... octets not accepted." % digits[:20])
            length = int(digits)
            if length > self.limits.max_body:
                raise ContentTooLarge("Content of %d octets not accepted." % length)
            head.content_length = length
            if length:
                self._reader = _ContentLengthReader(length)
        elif "content-encoding" in framing and head.http11:
            # As POE::Filter::HTTPD: a coded body announced without a length.
            raise LengthRequired("No content length found.")
        expect = framing.get("expect")
        if expect is not None:
            if [value.strip().lower() for value in expect] != ["100-continue"]:
                raise ExpectationFailed("Unsupported expectation.")
            head.expect_continue = head.http11 and head.has_body

    def _check_target_form(self, head):
        """Absolute-form and asterisk-form targets (RFC 9112 §3.2)."""
        target = head.target
        scheme, sep, rest = target.partition("://")
        if target == "*":
            if head.method != "OPTIONS":
                raise BadRequest("Asterisk-form target is for OPTIONS only.")
        elif sep and scheme.lower() in ("http", "https"):
            end = re.match(r"[^/?#]*", rest).end()
            authority, path_and_query = rest[:end], rest[end:].partition("#")[0]
            if not authority or not _HOST_RE.fullmatch(authority):
                raise BadRequest("Absolute-form target without a valid host.")
            if not path_and_query.startswith("/"):
                path_and_query = "/" + path_and_query
            # RFC 9112 §3.2.2: the target's authority replaces Host.
            head.host = authority
            head.path, _, head.query = path_and_query.partition("?")
        elif head.method == "CONNECT":
            head.path = target
        else:
            raise BadRequest("Malformed request target.")


# Reason phrases of RFC 9110 §15, from the standard library's table.
_REASONS = {
    100: "Continue", 101: "Switching Protocols", 103: "Early Hints",
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
    204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other",
    304: "Not Modified", 305: "Use Proxy", 307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict",
    410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
    416: "Range Not Satisfiable", 417: "Expectation Failed", 418: "I'm a teapot",
    421: "Misdirected Request", 422: "Unprocessable Content", 423: "Locked",
    424: "Failed Dependency", 425: "Too Early", 426: "Upgrade Required",
    428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
    511: "Network Authentication Required",
}
_STATUS_LINES = {}
# RFC 9110 §5.5: what a response field value or reason phrase may not hold
# (every control character but HTAB), so nothing can split a response.
_FORBIDDEN_VALUE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def reason_phrase(code):
    """The standard reason phrase for a status code."""
    return _REASONS.get(code, "Unknown")


def status_line(code, message=None):
    """The status line, CRLF included, as str."""
    line = _STATUS_LINES.get(code) if message is None else None
    if line is None:
        if not 100 <= code <= 999:
            raise ValueError("status code %r is not three digits" % (code,))
        if message is None:
            line = _STATUS_LINES[code] = "HTTP/1.1 %d %s\r\n" % (code, reason_phrase(code))
        elif _FORBIDDEN_VALUE_RE.search(message) is not None:
            raise ValueError("reason phrase holds a control character")
        else:
            line = "HTTP/1.1 %d %s\r\n" % (code, message)
    return line


def status_has_body(code):
    """RFC 9110 §6.4.1: 1xx, 204 and 304 responses never carry content."""
    return code >= 200 and code != 204 and code != 304


def frame_chunk(data):
    """One chunk of a chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _BodyWriter:
    """Frames a body: ``frame(data)``, then ``tail`` (h11's model); this one: close ends it."""

    __slots__ = ()
    missing = 0              # bytes announced and never sent
    excess = 0               # bytes sent beyond the announced length, cut
    body_complete = False    # would ending now end the body as announced?
    tail = b""               # what ends the body

    def __init__(self, length=None):
        pass

    def frame(self, data):
        return data

    def frame_file(self, length):
        """``length`` bytes of a file go out next, unframed."""
        raise ValueError("a file body needs a Content-Length")


class _NoBodyWriter(_BodyWriter):
    """HEAD, 1xx, 204 and 304: whatever the handler sends is dropped."""

    __slots__ = ()
    body_complete = True

    def frame(self, data):
        return b""


class _LengthWriter(_BodyWriter):
    """Content-Length framing (RFC 9112 §6.2): no more bytes than announced."""

    __slots__ = ("missing", "excess")

    def __init__(self, length):
        self.missing = length
        self.excess = 0

    def frame(self, data):
        if len(data) > self.missing:
            self.excess += len(data) - self.missing
            data = data[:self.missing]
        self.missing -= len(data)
        return data

    def frame_file(self, length):
        self.missing -= length

    body_complete = property(lambda self: not self.missing)


class _ChunkedWriter(_BodyWriter):
    """Chunked transfer-coding (RFC 9112 §7.1); only the last chunk completes it."""

    __slots__ = ()
    frame = staticmethod(frame_chunk)
    tail = LAST_CHUNK


# -- WebSocket frames (RFC 6455 §5) and permessage-deflate (RFC 7692)
#
# The same rules as for requests: bytes in, events out.  The parser checks
# every rule of a client frame as soon as the bytes that break it arrive:
# text is validated as UTF-8 while its payload streams in, so a bad message
# fails before its end, and a message over the limit fails at the frame
# header that announces it, without its payload being buffered.

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_WS_CONTINUATION, _WS_TEXT, _WS_BINARY, _WS_CLOSE, _WS_PING, _WS_PONG = 0, 1, 2, 8, 9, 10
# RFC 7692 §7.2.1: a compressed message ends with an empty stored block,
# whose last four bytes the sender removes and the receiver puts back.
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


# RFC 7692 §7.1.2: a window size parameter is 8 to 15, no leading zero.
_WINDOW_BITS_RE = re.compile(r"8|9|1[0-5]")


def websocket_accept(key):
    """The Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    import base64  # deferred: import time
    import hashlib
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def close_code_allowed(code):
    """May a Close frame carry ``code``?  (RFC 6455 §7.4; 1004-1006 and 1015 are for reports.)"""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


# For each key byte, the table that XORs a byte with it (64 KiB, built on
# first use).
_XOR_TABLES = []


def _unmask(data, mask):
    """``data`` XOR the 4-byte ``mask`` repeated (RFC 6455 §5.3)."""
    size = len(data)
    if size < 1024:
        # One big-integer XOR: fastest for short payloads, but its base
        # conversions make it three times slower than tables on long ones.
        if not size:
            return b""
        key = (mask * ((size >> 2) + 1))[:size]
        return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
            size, "little")
    if not _XOR_TABLES:
        _XOR_TABLES.extend(bytes(value ^ key for value in range(256)) for key in range(256))
    out = bytearray(data)
    for offset in range(4):
        out[offset::4] = out[offset::4].translate(_XOR_TABLES[mask[offset]])
    return bytes(out)


def frame_header(first_byte, size):
    """The head of a server frame (never masked): FIN, RSV and opcode in ``first_byte``."""
    if size < 126:
        return bytes((first_byte, size))
    if size < 65536:
        return bytes((first_byte, 126)) + size.to_bytes(2, "big")
    return bytes((first_byte, 127)) + size.to_bytes(8, "big")


def _utf8_decoder():
    import codecs  # deferred: import time
    return codecs.getincrementaldecoder("utf-8")()


class PerMessageDeflate:
    """permessage-deflate as negotiated for one connection (RFC 7692 §7).

    Without context takeover the compressor and decompressor are dropped
    after each message.  With it (what browsers ask for) they stay, sized
    small: both windows are 4 KiB (the client is asked for that when it
    offers client_max_window_bits, as browsers do), so an idle connection
    keeps about 40 KiB of zlib state instead of 300 KiB.
    """

    __slots__ = ("server_no_takeover", "client_no_takeover", "server_bits", "client_bits",
                 "_compressor", "_decompressor")

    # A compressor keeps about 2**(bits + 2) + 2**(MEM_LEVEL + 9) bytes.
    # The server may always compress with a smaller window than agreed:
    # the client decodes it alike.
    WINDOW_BITS = 12
    MEM_LEVEL = 5
    # Messages outside these sizes go out uncompressed: shorter ones would
    # not shrink, and longer ones would hold up the reactor (a 16 MiB
    # message takes most of a second).
    MIN_SIZE = 64
    MAX_SIZE = 262144

    def __init__(self, server_no_takeover=False, client_no_takeover=False, server_bits=15,
                 client_bits=15):
        self.server_no_takeover = server_no_takeover
        self.client_no_takeover = client_no_takeover
        self.server_bits = server_bits
        self.client_bits = client_bits
        self._compressor = self._decompressor = None

    @classmethod
    def negotiate(cls, header):
        """(PerMessageDeflate, response value) for the first acceptable offer, or (None, None)."""
        for offer in header.split(","):
            name, _, params = offer.partition(";")
            if name.strip().lower() != "permessage-deflate":
                continue
            seen = {}
            for param in params.split(";") if params.strip() else ():
                key, equals, value = param.partition("=")
                key = key.strip().lower()
                value = value.strip()
                if value[:1] == '"' and value[-1:] == '"' and len(value) > 1:
                    value = value[1:-1]
                seen.setdefault(key, []).append(value if equals else None)
            accepted = cls._accept(seen)
            if accepted is not None:
                return accepted
        return None, None

    @classmethod
    def _accept(cls, params):
        """Our answer to one offer's parameters, or None to decline it (§7.1)."""
        response = ["permessage-deflate"]
        server_bits = client_bits = 15
        for key, values in params.items():
            if len(values) > 1:
                return None  # a parameter given twice
            value = values[0]
            if key in ("server_no_context_takeover", "client_no_context_takeover"):
                if value is not None:
                    return None
                response.append(key)
            elif key == "server_max_window_bits":
                # zlib cannot compress with a 256-byte window: decline 8.
                if value is None or not _WINDOW_BITS_RE.fullmatch(value) or int(value) < 9:
                    return None
                server_bits = int(value)
                response.append("server_max_window_bits=%d" % server_bits)
            elif key == "client_max_window_bits":
                if value is not None and not _WINDOW_BITS_RE.fullmatch(value):
                    return None
                client_bits = min(int(value or 15), cls.WINDOW_BITS)
                response.append("client_max_window_bits=%d" % client_bits)
            else:
                return None  # unknown parameter
        deflate = cls("server_no_context_takeover" in params,
                      "client_no_context_takeover" in params, server_bits, client_bits)
        return deflate, "; ".join(response)

    def compress(self, payload):
        """The compressed payload of one message, its trailing empty block removed."""
        import zlib  # deferred: import time
        compressor = self._compressor
        if compressor is None:
            compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED,
                                          -min(self.server_bits, self.WINDOW_BITS),
                                          self.MEM_LEVEL)
        data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._compressor = None if self.server_no_takeover else compressor
        return data[:-4] if data.endswith(_DEFLATE_TAIL) else data

    def decompress(self, data, limit, final=False):
        """Inflate part of a message (``final``: its end); at most ``limit`` bytes come out."""
        import zlib  # deferred: import time
        decompressor = self._decompressor
        if decompressor is None:
            # zlib compresses with 512 bytes when asked for 256 (8 bits).
            decompressor = self._decompressor = zlib.decompressobj(-max(self.client_bits, 9))
        try:
            data = decompressor.decompress(data, limit)
        except zlib.error as exc:
            raise WebSocketError(1007, "bad compressed data: %s" % exc) from None
        # After a final block only the empty block the receiver adds at the
        # message's end may follow (RFC 7692 §7.2.2).
        if decompressor.eof and decompressor.unused_data and not (
                final and decompressor.unused_data == _DEFLATE_TAIL):
            raise WebSocketError(1007, "data after the final compressed block")
        return data

    def end_message(self, message):
        """``message`` (bytes) was read whole; the next one may start afresh."""
        decompressor = self._decompressor
        if self.client_no_takeover:
            self._decompressor = None
        elif decompressor is not None and decompressor.eof:
            # RFC 7692 §7.2.3.4: the client ended its stream with BFINAL.
            # Its next message is a new stream, which may still refer to
            # what this one ended with.
            import zlib  # deferred: import time
            bits = max(self.client_bits, 9)
            self._decompressor = zlib.decompressobj(-bits, zdict=message[-(1 << bits):])


class WebSocketParser:
    """A client's frames in, events out (RFC 6455, RFC 7692); never a socket.

    ``next_event()`` gives None when it needs more bytes, else a pair
    (opcode, payload): (1, str) or (2, bytes) for a whole message,
    (9, bytes) for a ping, (10, bytes) for a pong and (8, (code, reason))
    for a close (code 1005 when the frame had none).  A broken rule raises
    WebSocketError with the close code that fails the connection.
    """

    __slots__ = ("max_message", "deflate", "_buffer", "_remaining", "_mask", "_fin",
                 "_opcode", "_compressed", "_data", "_decoder")

    def __init__(self, max_message, deflate=None):
        self.max_message = max_message
        self.deflate = deflate       # a PerMessageDeflate when it was negotiated
        self._buffer = bytearray()
        self._remaining = None       # payload bytes of the data frame still to come
        self._mask = b""
        self._fin = False
        self._opcode = 0             # of the message being assembled, 0 between messages
        self._compressed = False
        self._data = None            # the message so far (inflated): one buffer, however
        self._decoder = None         # many fragments; text is checked as it grows

    def feed(self, data):
        self._buffer += data

    @property
    def buffered(self):
        """Bytes received and not parsed yet."""
        return len(self._buffer)

    def next_event(self):
        buffer = self._buffer
        while True:
            if self._remaining is not None:
                if not self._take_payload():
                    return None
                if self._fin:
                    return self._end_message()
                continue
            available = len(buffer)
            if available < 2:
                return None
            first, second = buffer[0], buffer[1]
            opcode = first & 0x0F
            self._check_frame(first, second, opcode)
            length = second & 0x7F
            start = 6
            if length == 126:
                start = 8
                if available < 4:
                    return None
                length = int.from_bytes(buffer[2:4], "big")
            elif length == 127:
                start = 14
                if available < 10:
                    return None
                length = int.from_bytes(buffer[2:10], "big")
                if length >> 63:
                    raise WebSocketError(1002, "frame length over 2**63")
            if available < start:
                return None  # the mask is yet to come
            if opcode >= 8:
                if available < start + length:
                    return None  # a control frame is taken whole: 125 bytes at most
                payload = _unmask(buffer[start:start + length], buffer[start - 4:start])
                del buffer[:start + length]
                return self._control(opcode, payload)
            # A compressed message is measured inflated, in _add.
            if not (self._compressed if self._opcode else first & 0x40) and (
                    len(self._data) if self._opcode else 0) + length > self.max_message:
                raise WebSocketError(1009, "message over %d bytes" % self.max_message)
            fin = first & 0x80
            if (fin and opcode and not first & 0x40 and available >= start + length):
                # The usual case, kept short: a whole single-frame message.
                payload = _unmask(buffer[start:start + length], buffer[start - 4:start])
                del buffer[:start + length]
                if opcode == _WS_BINARY:
                    return _WS_BINARY, payload
                try:
                    return _WS_TEXT, payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise WebSocketError(1007, "text message is not UTF-8") from None
            if opcode:
                self._opcode = opcode
                self._compressed = bool(first & 0x40)
                self._data = bytearray()
            self._mask = bytes(buffer[start - 4:start])
            self._fin = fin
            self._remaining = length
            del buffer[:start]

    def _check_frame(self, first, second, opcode):
        """The rules a frame's first two bytes can break (RFC 6455 §5.2, §5.5; RFC 7692 §6)."""
        if first & 0x70:
            if first & 0x30 or self.deflate is None or opcode not in (_WS_TEXT, _WS_BINARY):
                raise WebSocketError(1002, "reserved bits set")
        if not second & 0x80:
            raise WebSocketError(1002, "client frame not masked")
        if opcode >= 8:
            if opcode > _WS_PONG:
                raise WebSocketError(1002, "reserved opcode %d" % opcode)
            if not first & 0x80:
                raise WebSocketError(1002, "fragmented control frame")
            if second & 0x7F > 125:
                raise WebSocketError(1002, "control frame over 125 bytes")
        elif opcode > _WS_BINARY:
            raise WebSocketError(1002, "reserved opcode %d" % opcode)
        elif (opcode == _WS_CONTINUATION) == (self._opcode == 0):
            raise WebSocketError(1002, "continuation frame outside a message" if not opcode
                                 else "new message inside a fragmented one")

    def _take_payload(self):
        """Unmask and check what has arrived of a data frame; True when it is whole."""
        buffer = self._buffer
        size = min(self._remaining, len(buffer))
        if size:
            mask = self._mask
            chunk = _unmask(buffer[:size], mask)
            del buffer[:size]
            shift = size & 3
            self._mask = mask[shift:] + mask[:shift]
            self._remaining -= size
            self._add(chunk)
        if self._remaining:
            return False
        self._remaining = None
        return True

    def _add(self, chunk, final=False):
        left = self.max_message - len(self._data)
        if self._compressed:
            chunk = self.deflate.decompress(chunk, left + 1, final)
        if len(chunk) > left:
            raise WebSocketError(1009, "message over %d bytes" % self.max_message)
        self._data += chunk
        if self._opcode == _WS_TEXT:
            self._check_text(chunk)

    def _check_text(self, chunk, final=False):
        if self._decoder is None:
            self._decoder = _utf8_decoder()
        try:
            self._decoder.decode(chunk, final)
        except UnicodeDecodeError:
            raise WebSocketError(1007, "text message is not UTF-8") from None

    def _end_message(self):
        data = self._data
        if self._compressed:
            self._add(_DEFLATE_TAIL, True)
            self.deflate.end_message(data)
        opcode = self._opcode
        if opcode == _WS_TEXT:
            self._check_text(b"", True)
            message = data.decode("utf-8")
        else:
            message = bytes(data)
        self._opcode = 0
        self._compressed = False
        self._data = self._decoder = None
        return opcode, message

    def _control(self, opcode, payload):
        if opcode != _WS_CLOSE:
            return opcode, payload
        if not payload:
            return _WS_CLOSE, (1005, "")
        code = int.from_bytes(payload[:2], "big")
        if len(payload) < 2 or not close_code_allowed(code):
            raise WebSocketError(1002, "bad close code")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise WebSocketError(1007, "close reason is not UTF-8") from None
        return _WS_CLOSE, (code, reason)


# -- multipart/form-data bodies (RFC 7578, RFC 2046 §5.1)
#
# The same rules again: bytes in, events out, so an upload is parsed as it
# is read from wherever the body lies, in pieces of any size, and a part's
# content is never held whole.  A delimiter split across two feeds is found
# because the parser keeps back the last bytes that might begin one.

# RFC 2046 §5.1.1: a boundary is 1 to 70 characters, none of them a control.
_BOUNDARY_RE = re.compile(r'[0-9A-Za-z\'()+_,\-./:=? ]{0,69}[0-9A-Za-z\'()+_,\-./:=?]')
# A Content-Disposition parameter: name=token or name="quoted string".
_DISPOSITION_PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]*)')


def multipart_boundary(content_type):
    """The boundary of a ``multipart/form-data`` Content-Type; BadRequest if it has none."""
    media_type, _, params = (content_type or "").partition(";")
    if media_type.strip().lower() != "multipart/form-data":
        raise BadRequest("Not multipart/form-data.")
    for match in _DISPOSITION_PARAM_RE.finditer(";" + params):
        name, value = match.groups()
        if name.lower() == "boundary":
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            if _BOUNDARY_RE.fullmatch(value) is None:
                raise BadRequest("Bad multipart boundary.")
            return value
    raise BadRequest("Multipart body without a boundary.")


class MultipartPart:
    """The head of one part: its fields, and its form field name and file name (or None)."""

    __slots__ = ("fields", "name", "filename", "content_type")

    def __init__(self, fields):
        self.fields = fields  # [(name, value)] as sent, names in lower case
        self.name = self.filename = None
        self.content_type = "text/plain"  # RFC 7578 §4.4
        for name, value in fields:
            if name == "content-type":
                self.content_type = value
            elif name == "content-disposition":
                kind, _, params = value.partition(";")
                if kind.strip().lower() != "form-data":
                    continue
                for match in _DISPOSITION_PARAM_RE.finditer(";" + params):
                    key, text = match.groups()
                    if text.startswith('"'):
                        # Browsers escape '"' as %22 and send '\' as is
                        # (WHATWG HTML's form encoding), so a backslash
                        # is only an escape before a quote.
                        text = text[1:-1].replace('\\"', '"')
                    key = key.lower()
                    if key == "name":
                        self.name = text
                    elif key == "filename":
                        self.filename = text

    def __repr__(self):
        return "MultipartPart(name=%r, filename=%r)" % (self.name, self.filename)


class MultipartPartEnd:
    """The end of the current part's content."""

    __slots__ = ()

    def __repr__(self):
        return "MultipartPartEnd()"


class MultipartEnd:
    """The closing delimiter: the form is complete (what follows it is ignored)."""

    __slots__ = ()

    def __repr__(self):
        return "MultipartEnd()"


_PART_END = MultipartPartEnd()
_MULTIPART_END = MultipartEnd()

# Parser states.
_MP_PREAMBLE, _MP_AFTER_DELIMITER, _MP_HEAD, _MP_CONTENT, _MP_PART_DONE, _MP_DONE = range(6)


class MultipartParser:
    """Incremental multipart/form-data parser: ``feed(bytes)``, ``next_event()`` until None.

    Events: a ``MultipartPart`` (a part's head), its content as non-empty
    ``bytes`` pieces, a ``MultipartPartEnd``; after the last part a
    ``MultipartEnd``.  ``finish()`` says the body is over, and raises
    BadRequest when the closing delimiter has not come.  A violation raises
    BadRequest, and the parser is then done.
    """

    __slots__ = ("max_parts", "max_header_size", "parts", "_delimiter", "_buffer", "_state")

    def __init__(self, boundary, max_parts=1000, max_header_size=16384):
        if isinstance(boundary, str):
            boundary = boundary.encode("latin-1")
        self.max_parts = max_parts
        self.max_header_size = max_header_size
        self.parts = 0
        # Every delimiter is CRLF "--" boundary (RFC 2046 §5.1.1), the first
        # one too once the body is seen as following a CRLF.
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray(b"\r\n")
        self._state = _MP_PREAMBLE

    def feed(self, data):
        """Add bytes of the body."""
        if self._state != _MP_DONE:
            self._buffer += data

    @property
    def done(self):
        """True once the closing delimiter has been read."""
        return self._state == _MP_DONE

    def finish(self):
        """The body has ended: BadRequest unless the form was complete."""
        if self._state != _MP_DONE:
            raise BadRequest("Multipart body without its closing delimiter.")

    def next_event(self):
        """The next event, or None when more bytes are needed."""
        buffer = self._buffer
        state = self._state
        if state == _MP_CONTENT:
            found = buffer.find(self._delimiter)
            if found < 0:
                # Keep what may be the start of a delimiter.
                keep = len(self._delimiter) - 1
                if len(buffer) <= keep:
                    return None
                data = bytes(buffer[:len(buffer) - keep])
                del buffer[:len(buffer) - keep]
                return data
            if found:
                data = bytes(buffer[:found])
                del buffer[:found]
                return data
            del buffer[:len(self._delimiter)]
            self._state = _MP_AFTER_DELIMITER
            return _PART_END
        if state == _MP_PREAMBLE:
            found = buffer.find(self._delimiter)
            if found < 0:
                del buffer[:max(0, len(buffer) - len(self._delimiter) + 1)]
                return None
            del buffer[:found + len(self._delimiter)]
            self._state = _MP_AFTER_DELIMITER
            return self.next_event()
        if state == _MP_AFTER_DELIMITER:
            # "--" closes; else optional white space (transport padding), CRLF.
            if buffer[:2] == b"--":
                self._state = _MP_DONE
                buffer.clear()
                return _MULTIPART_END
            line_end = buffer.find(b"\r\n", 0, 1024)
            if line_end < 0:
                if len(buffer) >= 1024 or buffer.strip(b" \t") not in (b"", b"\r", b"-"):
                    raise BadRequest("Bad multipart delimiter line.")
                return None
            if buffer[:line_end].strip(b" \t"):
                raise BadRequest("Bad multipart delimiter line.")
            del buffer[:line_end + 2]
            self._state = _MP_HEAD
            state = _MP_HEAD
        if state == _MP_HEAD:
            if buffer[:2] == b"\r\n":
                head_end = 0  # no header fields
            else:
                head_end = buffer.find(b"\r\n\r\n", 0, self.max_header_size + 4)
                if head_end < 0:
                    if len(buffer) > self.max_header_size + 3:
                        raise BadRequest("Multipart header section too large.")
                    return None
                head_end += 2
            self.parts += 1
            if self.parts > self.max_parts:
                raise BadRequest("Too many parts in a multipart body.")
            fields = []
            for line in bytes(buffer[:head_end]).split(b"\r\n")[:-1]:
                name, colon, value = line.partition(b":")
                if not colon or _TOKEN_RE.fullmatch(name) is None:
                    raise BadRequest("Bad multipart header line.")
                # Browsers send file names in UTF-8, unescaped.
                fields.append((name.decode("ascii").lower(),
                               value.strip(b" \t").decode("utf-8", "surrogateescape")))
            del buffer[:head_end + 2]
            self._state = _MP_CONTENT
            return MultipartPart(fields)
        return None


# === 5. HTTP utilities ===

# Response field names already checked (hot path: a handler sets the same
# few names on every response).
_CHECKED_NAMES = _BoundedCache(512)


def _check_field(name, value):
    """A header field safe to put on the wire (no response splitting)."""
    if name.__class__ is not str:
        name = str(name)
    if value.__class__ is not str:
        if isinstance(value, (bytes, bytearray)):
            raise ValueError("header value for %s is bytes, not str" % name)
        value = str(value)
    if name not in _CHECKED_NAMES:
        if not _TOKEN_RE.fullmatch(name.encode("latin-1", "replace")):
            raise ValueError("invalid header name %r" % name)
        _CHECKED_NAMES.put(name, True)
    if _FORBIDDEN_VALUE_RE.search(value) is not None:
        raise ValueError("header value for %s holds a control character" % name)
    if not value.isascii():
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError("header value for %s is not Latin-1 (encode it, e.g. RFC 8187)"
                             % name) from None
    return name, value


class Headers:
    """Case-insensitive, ordered header fields; a name may repeat."""

    __slots__ = ("_fields", "_index")

    def __init__(self, fields=None):
        self._fields = []
        self._index = None
        if fields:
            items = fields.items() if hasattr(fields, "items") else fields
            for name, value in items:
                self.add(name, value)

    @classmethod
    def wrap(cls, fields):
        """Adopt a list of (name, value) pairs that are already checked."""
        headers = cls.__new__(cls)  # a new instance: its fields are this class's own
        headers._fields = fields
        headers._index = None
        return headers

    def _lookup(self):
        """Lower-case name -> values, built on first use (hot path: read often, never changed)."""
        index = self._index
        if index is None:
            index = self._index = {}
            for name, value in self._fields:
                lower = name.lower()
                values = index.get(lower)
                if values is None:
                    index[lower] = [value]
                else:
                    values.append(value)
        return index

    def get(self, name, default=None):
        """The field's value; repeated fields joined with ", "."""
        values = self._lookup().get(name.lower())
        if values is None:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def get_all(self, name):
        """Every value of the field, in order."""
        return list(self._lookup().get(name.lower(), ()))

    def set(self, name, value):
        """Replace every field of that name with one, where the first one was."""
        name, value = _check_field(name, value)
        lower = name.lower()
        fields = self._fields
        if fields and (self._index is None or lower in self._index):
            for index, (key, _) in enumerate(fields):
                if key.lower() == lower:
                    self._fields = fields[:index] + [(name, value)] + [
                        item for item in fields[index + 1:] if item[0].lower() != lower]
                    self._index = None
                    return
        fields.append((name, value))
        if self._index is not None:
            self._index[lower] = [value]

    def add(self, name, value):
        """Add a field, keeping any of the same name."""
        self._fields.append(_check_field(name, value))
        self._index = None

    def remove(self, name):
        """Remove every field of that name; returns how many went."""
        lower = name.lower()
        if self._index is not None and lower not in self._index:
            return 0
        kept = [item for item in self._fields if item[0].lower() != lower]
        removed = len(self._fields) - len(kept)
        self._fields = kept
        self._index = None
        return removed

    def items(self):
        """(name, value) pairs in order."""
        return list(self._fields)

    def keys(self):
        return [name for name, _ in self._fields]

    def copy(self):
        return Headers.wrap(list(self._fields))

    def has_any(self, lower_names):
        """Is any of these lower-case names present?"""
        return not lower_names.isdisjoint(self._lookup())

    def __contains__(self, name):
        return name.lower() in self._lookup()

    def __getitem__(self, name):
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name, value):
        self.set(name, value)

    def __delitem__(self, name):
        if not self.remove(name):
            raise KeyError(name)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._fields)

    def __eq__(self, other):
        if isinstance(other, Headers):
            other = other.items()
        elif isinstance(other, dict):
            other = list(other.items())
        elif not isinstance(other, list):
            return NotImplemented
        return [(k.lower(), v) for k, v in self._fields] == [(k.lower(), v) for k, v in other]

    def __repr__(self):
        return "Headers(%r)" % (self._fields,)


_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_http_date(timestamp):
    """IMF-fixdate of RFC 9110 §5.6.7, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    t = time.gmtime(timestamp)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAY_NAMES[t.tm_wday], t.tm_mday, _MONTH_NAMES[t.tm_mon - 1], t.tm_year,
        t.tm_hour, t.tm_min, t.tm_sec)


_MONTH_NUMBERS = {name.lower(): number for number, name in enumerate(_MONTH_NAMES, 1)}
_HTTP_DATE_RES = (
    # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    re.compile(r"[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT"),
    # obsolete RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
    re.compile(r"[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT"),
)
# obsolete asctime: Sun Nov  6 08:49:37 1994
_ASCTIME_RE = re.compile(r"[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})")


def parse_http_date(text):
    """Seconds since the epoch for any of the three HTTP date forms, or None."""
    import calendar  # deferred: import time
    text = text.strip()
    for number, pattern in enumerate(_HTTP_DATE_RES):
        match = pattern.fullmatch(text)
        if match:
            day, month, year, hour, minute, second = match.groups()
            year = int(year)
            if number == 1:
                # RFC 9110 §5.6.7: a two-digit year more than 50 years in
                # the future is in the past century.
                this_year = time.gmtime().tm_year
                year += this_year - this_year % 100
                if year > this_year + 50:
                    year -= 100
            break
    else:
        match = _ASCTIME_RE.fullmatch(text)
        if not match:
            return None
        month, day, hour, minute, second, year = match.groups()
        year = int(year)
    month_number = _MONTH_NUMBERS.get(month.lower())
    if month_number is None:
        return None
    fields = (year, month_number, int(day), int(hour), int(minute), int(second))
    try:
        timestamp = calendar.timegm(fields + (0, 0, 0))
        # timegm() normalises "32 Nov" into December: refuse what does not
        # come back unchanged.
        if tuple(time.gmtime(timestamp)[:6]) != fields:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    return timestamp


class _PerSecond:
    """A text made once a second (hot path: the Date of every response, the time in log lines)."""

    __slots__ = ("make", "second", "text")

    def __init__(self, make):
        self.make = make
        self.second = None
        self.text = ""

    def get(self):
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.text = self.make(now)
        return self.text


_date_cache = _PerSecond(lambda now: "Date: %s\r\n" % format_http_date(now))


def _html_escape(text):
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#x27;"))


def _quote_path(path):
    """A path safe to echo in any content type: unsafe characters percent-encoded."""
    from urllib.parse import quote  # deferred: import time
    return quote(path, safe="/%:@!$&()*+,;=-._~")


# MIME types for the common web formats, fixed so that a host's registry
# (which may map .js to text/plain, or lack .wasm) cannot change them.
_MIME_TYPES = {
    ".html": "text/html", ".htm": "text/html", ".css": "text/css",
    ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json",
    ".map": "application/json", ".webmanifest": "application/manifest+json",
    ".txt": "text/plain", ".csv": "text/csv",
    ".xml": "application/xml", ".svg": "image/svg+xml", ".png": "image/png",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".webp": "image/webp", ".avif": "image/avif", ".ico": "image/x-icon",
    ".bmp": "image/bmp", ".wasm": "application/wasm", ".pdf": "application/pdf",
    ".zip": "application/zip", ".gz": "application/gzip", ".tar": "application/x-tar",
    ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf", ".otf": "font/otf",
    ".mp4": "video/mp4", ".webm": "video/webm", ".ogv": "video/ogg", ".mov": "video/quicktime",
    ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".wav": "audio/wav",
    ".flac": "audio/flac", ".m4a": "audio/mp4", ".vtt": "text/vtt",
    ".py": "text/x-python", ".sh": "text/x-shellscript",
}
# Text that browsers should show rather than download: sent as text/plain
# (text/markdown or text/yaml make most browsers save the file).
_PLAIN_TEXT_EXTENSIONS = frozenset((
    ".md", ".markdown", ".rst", ".log", ".yaml", ".yml", ".toml", ".ini", ".conf", ".cfg",
    ".cnf", ".properties", ".env", ".diff", ".patch", ".text", ".tsv", ".srt", ".adoc",
    ".asciidoc", ".mk", ".cmake", ".in", ".lock"))
# Names without an extension that hold text (upper case; "README" matches "readme").
_PLAIN_TEXT_NAMES = frozenset((
    "README", "LICENSE", "LICENCE", "COPYING", "AUTHORS", "CONTRIBUTORS", "CHANGELOG",
    "CHANGES", "NEWS", "HISTORY", "NOTICE", "INSTALL", "TODO", "THANKS", "MAKEFILE",
    "GNUMAKEFILE", "DOCKERFILE", "CONTAINERFILE", "VAGRANTFILE", "GEMFILE", "RAKEFILE",
    "PROCFILE", "JENKINSFILE", "CODEOWNERS", "MANIFEST"))
_PLAIN_TEXT = "text/plain; charset=utf-8"
# Types that are text without saying so in their major type.
_TEXT_LIKE_TYPES = frozenset((
    "application/json", "application/xml", "image/svg+xml", "application/manifest+json",
    "application/javascript"))


_guessed_types = _BoundedCache(512)


def guess_type(path):
    """Content-Type for a file name (fixed table, ``mimetypes``); text types get charset=utf-8."""
    name = os.path.basename(path)
    extension = os.path.splitext(name)[1].lower()
    if not extension and name.upper() in _PLAIN_TEXT_NAMES:
        return _PLAIN_TEXT
    content_type = _guessed_types.get(extension)
    if content_type is None:
        content_type = _MIME_TYPES.get(extension)
        if extension in _PLAIN_TEXT_EXTENSIONS:
            content_type = "text/plain"
        elif content_type is None:
            import mimetypes  # deferred: import time
            content_type = mimetypes.guess_type("x" + extension, strict=False)[0] \
                or "application/octet-stream"
        if content_type.startswith("text/") or content_type in _TEXT_LIKE_TYPES:
            content_type += "; charset=utf-8"
        _guessed_types.put(extension, content_type)
    return content_type


def make_etag(stat):
    """A strong validator from a file's identity, size and modification time."""
    return '"%x-%x-%x"' % (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def etag_matches(header, etag, weak=True):
    """RFC 9110 §8.8.3.2: does ``header`` (tags or ``*``) match ``etag``, weakly or strongly?"""
    for tag in map(str.strip, header.split(",")):
        if tag == "*" or tag == etag or weak and tag[:2] == "W/" and tag[2:] == etag:
            return True
    return False


def _is_digits(text):
    """ASCII digits only: str.isdigit() also takes superscripts and other scripts."""
    return text.isascii() and text.isdigit()


def parse_range(header, size, max_ranges=100):
    """RFC 9110 §14.2: merged, sorted (first, last) ranges; [] if none fits (416); None: ignore."""
    unit, _, specs = header.partition("=")
    parts = specs.split(",")
    if unit.strip().lower() != "bytes" or not specs.strip() or len(parts) > max_ranges:
        return None
    ranges = []
    for part in parts:
        if not part.strip():
            continue  # an empty list element (RFC 9110 §5.6.1)
        first, dash, last = part.partition("-")
        first, last = first.strip(), last.strip()
        if not dash or not _is_digits(first + last):
            return None
        # Numbers of any length: 20 digits lie beyond any file, and int() of
        # thousands raises (Python 3.11+); digit strings compare exactly.
        start, end = (int(text.lstrip("0")[:20] or 0) for text in (first, last))
        if not first:
            if end and size:  # the last ``end`` bytes
                ranges.append((max(0, size - end), size - 1))
        elif last and last.zfill(len(first)) < first.zfill(len(last)):
            return None
        elif start < size:
            ranges.append((start, min(end, size - 1) if last else size - 1))
    merged = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _servable_name(name):
    """May a path segment (a decoded file name) be looked up under the root?"""
    # A backslash is an ordinary character of a POSIX file name, but a
    # separator on Windows, where a colon names a stream or a drive.
    if os.name == "nt":
        return name not in (".", "..") and not any(char in name for char in "\0\\:")
    return name not in (".", "..") and "\0" not in name


def _resolve_under(real_root, url_path):
    """(path, lstat or None) for a URL path under a resolved root; None when unsafe."""
    # Hot path of static files: one lstat per component below the root costs
    # a fraction of os.path.realpath, which only a symlink calls for.
    if "%" in url_path:
        from urllib.parse import unquote  # deferred: import time
        url_path = unquote(url_path, errors="surrogateescape")
    segments = [segment for segment in url_path.split("/") if segment]
    if not all(map(_servable_name, segments)):
        return None
    path = real_root
    stat = None
    if not segments:
        try:
            stat = os.stat(real_root)
        except OSError:
            return real_root, None
    for number, segment in enumerate(segments):
        path = path + os.sep + segment
        try:
            stat = os.lstat(path)
        except (OSError, ValueError):
            # Missing: nothing further down exists to be resolved.
            return os.path.join(path, *segments[number + 1:]), None
        if S_ISLNK(stat.st_mode):
            candidate = os.path.join(real_root, *segments)
            resolved = os.path.realpath(candidate)
            if resolved != real_root and not resolved.startswith(
                    real_root.rstrip(os.sep) + os.sep):
                return None
            try:
                return candidate, os.stat(candidate)
            except (OSError, ValueError):
                return candidate, None
    return path, stat


def safe_join(root, url_path):
    """The file system path for a URL path under ``root``, or None if it would leave it."""
    found = _resolve_under(os.path.realpath(root), url_path)
    return found[0] if found else None


class TrustedProxies:
    """Proxies believed in X-Forwarded-For/-Proto: addresses, networks, ``"unix"``."""

    def __init__(self, spec):
        import ipaddress  # deferred: import time
        items = spec.split(",") if isinstance(spec, str) else spec
        items = [str(item).strip() for item in items]
        self.unix = "unix" in items  # Unix peers have no address to match
        self.networks = [ipaddress.ip_network(item, strict=False)
                         for item in items if item not in ("unix", "")]
        self._verdicts = _BoundedCache(1024)

    def trusts(self, ip):
        """Is this peer address (None for a Unix socket peer) trusted?"""
        if ip is None:
            return self.unix
        verdict = self._verdicts.get(ip)
        if verdict is None:
            import ipaddress  # deferred: import time
            try:
                address = ipaddress.ip_address(ip)
                verdict = any(address in network for network in self.networks)
            except ValueError:
                verdict = False
            self._verdicts.put(ip, verdict)
        return verdict

    def __bool__(self):
        return self.unix or bool(self.networks)


# === 6. Reactor ===

def _catch_signals(handlers, wake_fd):
    """Install ``{number: handler}`` (all or none) waking ``wake_fd``; -> (previous, restore)."""
    # A Python handler runs only when the main thread next runs bytecode: a
    # signal landing just before select() blocks, or on another thread, would
    # wait for the next event.  The byte the C-level handler writes ends it.
    import signal  # deferred: import time
    previous = {}

    def restore():
        for number, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be restored
                signal.signal(number, handler)
        signal.set_wakeup_fd(previous_wakeup)
    previous_wakeup = signal.set_wakeup_fd(wake_fd, warn_on_full_buffer=False)
    try:
        for number, handler in handlers.items():
            previous[number] = signal.signal(number, handler)
    except BaseException:  # a number that cannot be caught
        restore()
        raise
    return previous, restore


class Timer:
    """A callback due at a monotonic deadline; ``cancel()`` is lazy."""

    __slots__ = ("deadline", "sequence", "callback", "args", "cancelled", "reactor")

    def __init__(self, reactor, deadline, sequence, callback, args):
        self.reactor = reactor  # None once the timer has fired
        self.deadline = deadline
        self.sequence = sequence
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self):
        """Forget the callback; the heap entry goes when it is reached or swept."""
        if not self.cancelled:
            self.cancelled = True
            self.callback = self.args = None  # what it would keep alive until swept
            if self.reactor is not None:
                self.reactor.timer_cancelled()

    def __lt__(self, other):
        # (deadline, sequence): equal deadlines keep the order they were set.
        if self.deadline == other.deadline:
            return self.sequence < other.sequence
        return self.deadline < other.deadline


class Reactor:
    """Event loop on ``selectors``: file readiness, timers and callbacks."""

    def __init__(self):
        self._selector = selectors.DefaultSelector()
        self._ready = deque()
        self._timers = []
        self._cancelled_timers = 0
        self._sequence = itertools.count()
        self._servers = set()
        self._stopping = False
        self._to_flush = []  # transports whose output goes at the end of this turn
        self._flushed = []  # the list _to_flush was, kept for the next turn
        self._at_turn_end = []  # (callback, args) once a turn's answers have gone
        self._turn_ended = []  # the list _at_turn_end was, kept for the next turn
        self.thread_ident = None  # of the thread running the loop
        self._open_waker()
        self.now = time.monotonic()

    def _open_waker(self):
        """The socketpair that interrupts select() from other threads and signals."""
        self._wake_pending = False
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._wake_send.setblocking(False)
        self._selector.register(self._wake_recv, selectors.EVENT_READ, self)

    def on_readable(self):
        """The wake-up socket: empty it, then clear the flag (the reverse can lose a wake-up)."""
        try:
            while self._wake_recv.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._wake_pending = False

    # -- callbacks and timers

    def call_soon(self, callback, *args):
        """Run ``callback(*args)`` on the next turn of the loop."""
        self._ready.append((callback, args))

    def call_soon_threadsafe(self, callback, *args):
        """``call_soon`` from any thread; wakes the loop."""
        self._ready.append((callback, args))
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._wake_send.send(b"\0")
            except OSError:
                pass  # full or closed: the loop is awake or gone anyway

    def flush_at_end_of_turn(self, transport):
        """Call ``transport.flush_now()`` once this turn's reads and callbacks are done.

        The answers of a turn then leave in one burst: a client woken by the
        first is still awake for the rest, where answers sent one by one
        between reads would wake it (an interrupt to another core) for each.
        """
        self._to_flush.append(transport)

    def call_when_turn_ends(self, callback, *args):
        """Run ``callback(*args)`` once this turn's answers have gone, before the loop waits.

        For waking other threads: woken sooner, a thread on the loop's core
        takes the core from the loop only to find the interpreter held, and
        gives it back (two context switches) before the answers can go.
        """
        self._at_turn_end.append((callback, args))

    def _end_turn(self):
        # Two lists taking turns, as for _flush_transports; callbacks added
        # meanwhile run at the end of the next turn, which does not wait.
        callbacks, self._at_turn_end = self._at_turn_end, self._turn_ended
        for callback, args in callbacks:
            self._call(callback, args)
        callbacks.clear()
        self._turn_ended = callbacks

    def _flush_transports(self):
        # Writes made while flushing (the next pipelined request answered,
        # a drain callback) go in the same turn.
        while self._to_flush:
            # Two lists taking turns: nothing allocated per turn.
            transports, self._to_flush = self._to_flush, self._flushed
            for transport in transports:
                try:
                    transport.flush_now()
                except Exception:
                    _log.exception("error flushing %r", transport)
            transports.clear()
            self._flushed = transports

    def call_later(self, delay, callback, *args):
        """Run ``callback(*args)`` after ``delay`` seconds; returns a ``Timer``."""
        return self.call_at(time.monotonic() + delay, callback, *args)

    def call_at(self, deadline, callback, *args):
        """Run ``callback(*args)`` at a ``time.monotonic()`` deadline."""
        timer = Timer(self, deadline, next(self._sequence), callback, args)
        heapq.heappush(self._timers, timer)
        return timer

    def timer_cancelled(self):
        """A timer's cancel(): its heap entry waits to be swept."""
        self._cancelled_timers += 1

    def in_reactor_thread(self):
        """True when called from the thread running the loop (or none runs it)."""
        ident = self.thread_ident
        return ident is None or ident == threading.get_ident()

    # -- file readiness

    def register(self, fileobj, events, handler):
        """Watch ``fileobj``; ``handler.on_readable()`` / ``on_writable()`` are called."""
        self._selector.register(fileobj, events, handler)

    def modify(self, fileobj, events, handler):
        self._selector.modify(fileobj, events, handler)

    def unregister(self, fileobj):
        self._selector.unregister(fileobj)

    # -- signals

    def _catch_stop_signals(self, numbers):
        """SIGINT/SIGTERM (or ``numbers``) shut down gracefully, a second one at once."""
        # The first only queues the shutdown: the loop is never re-entered
        # from a signal handler.
        import signal  # deferred: import time
        caught = []

        def on_signal(number, frame):
            if caught:
                raise SystemExit(128 + number)
            caught.append(number)
            _log.info("signal %d: shutting down (again to exit at once)", number)
            self.call_soon_threadsafe(self.shutdown_servers)
        if numbers is True:
            numbers = (signal.SIGINT, signal.SIGTERM)
        return _catch_signals(dict.fromkeys(numbers, on_signal), self._wake_send.fileno())[1]

    def shutdown_servers(self):
        """Shut down every server on this reactor gracefully."""
        for server in list(self._servers):
            server.shutdown()

    # -- servers keep the loop alive

    servers = property(lambda self: tuple(self._servers))

    def add_server(self, server):
        self._servers.add(server)

    def remove_server(self, server):
        self._servers.discard(server)

    # -- the loop

    def _has_work(self):
        return bool(self._servers or self._ready or self._to_flush or self._at_turn_end
                    or len(self._timers) > self._cancelled_timers)

    def run(self, signals=False):
        """Run until every server has shut down and no timer or callback is left."""
        self.thread_ident = threading.get_ident()
        self._stopping = False
        restore = None
        try:
            if signals and threading.current_thread() is threading.main_thread():
                restore = self._catch_stop_signals(signals)
            while not self._stopping and self._has_work():
                self._run_once()
            self._flush_transports()  # what a turn's last callbacks wrote
            self._end_turn()
            for server in list(self._servers):
                server.flush_access_log()  # stop(): what waited is written, not lost at exit
        finally:
            self.thread_ident = None
            if restore is not None:
                restore()

    def stop(self):
        """Make ``run()`` return after the current turn; callable from any thread."""
        self._stopping = True
        self.call_soon_threadsafe(lambda: None)

    def _run_once(self):
        # Hot path (bench/bench.py): one select() per turn (two when answers
        # wait: see below), handlers found through the selector key's data,
        # nothing allocated per turn.
        timers = self._timers
        if self._ready or self._to_flush or self._at_turn_end:
            timeout = 0
        elif timers:
            timeout = max(0.0, timers[0].deadline - time.monotonic())
        else:
            timeout = None
        try:
            events = self._selector.select(timeout)
        except InterruptedError:
            events = ()
        self.now = now = time.monotonic()
        self._handle(events)
        if self._to_flush:
            # One more look before the answers go: requests that came while
            # this turn read (their clients had the first answers of the last
            # burst) join this burst, rather than wait a whole turn for the
            # next and make the slowest percent twice as slow as the rest.
            try:
                self._handle(self._selector.select(0))
            except InterruptedError:
                pass
        while timers and timers[0].deadline <= now:
            timer = heapq.heappop(timers)
            if timer.cancelled:
                self._cancelled_timers -= 1
                continue
            timer.reactor = None
            self._call(timer.callback, timer.args)
        if self._cancelled_timers > 64 and self._cancelled_timers * 2 > len(timers):
            self._timers = timers = [timer for timer in timers if not timer.cancelled]
            heapq.heapify(timers)
            self._cancelled_timers = 0
        ready = self._ready
        for _ in range(len(ready)):
            callback, args = ready.popleft()
            self._call(callback, args)
        if self._to_flush:
            self._flush_transports()
        if self._at_turn_end:
            self._end_turn()

    @staticmethod
    def _handle(events):
        for key, mask in events:
            handler = key.data
            try:
                if mask & selectors.EVENT_READ:
                    handler.on_readable()
                if mask & selectors.EVENT_WRITE:
                    handler.on_writable()
            except Exception:
                _log.exception("error in I/O callback of %r", handler)

    @staticmethod
    def _call(callback, args):
        try:
            callback(*args)
        except Exception:
            _log.exception("error in callback %r", callback)

    def close(self):
        """Release the selector and the wake-up sockets."""
        self._selector.close()
        self._wake_recv.close()
        self._wake_send.close()

    def after_fork(self):
        """In a forked child: a selector and wake-up pair of its own."""
        # The parent's epoll instance is shared across fork(): the child only
        # drops its copy of the descriptor.
        self.close()
        self._selector = selectors.DefaultSelector()
        self._open_waker()
        self._ready.clear()
        self._to_flush.clear()
        self._at_turn_end.clear()
        self._timers.clear()
        self._cancelled_timers = 0


_default_reactor = None


def default_reactor():
    """The reactor that ``spawn``, ``run`` and ``stop`` use."""
    global _default_reactor
    if _default_reactor is None:
        _default_reactor = Reactor()
    return _default_reactor


# === 7. Output ===

_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE
# What "try again later" looks like on a non-blocking socket; TLS adds its
# want-read and want-write errors once a TLS server exists (see _enable_tls).
_WOULD_BLOCK = (BlockingIOError, InterruptedError)


def _enable_tls():
    """Teach the output and input paths the ssl module's would-block errors."""
    global _WOULD_BLOCK
    import ssl  # deferred: import time
    _WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError)


_SEND_JOIN_LIMIT = 262144
# Writes this large go to the kernel at once; smaller ones (answers, their
# heads) wait for the end of the loop turn and leave with the turn's others.
_WRITE_AT_ONCE = 65536
# os.sendfile errors that mean "not on this file or socket": fall back to
# read/send, provided no byte has gone out yet.
_SENDFILE_UNSUPPORTED = frozenset(
    getattr(errno, name) for name in ("EINVAL", "ENOSYS", "ENOTSOCK", "EOPNOTSUPP", "ENOTSUP",
                                      "EAFNOSUPPORT", "EBADF", "EOVERFLOW")
    if hasattr(errno, name))


class FileTruncated(OSError):
    """A file ended before the bytes its response announced."""


def _pread(fd, size, offset):
    """Read ``size`` bytes at ``offset`` without moving the file position."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows
    return os.read(fd, size)


class _FileRegion:
    """Bytes of an open file to send with ``os.sendfile``, or in ``blocksize`` blocks."""

    __slots__ = ("fd", "offset", "remaining", "blocksize", "use_sendfile", "started",
                 "owns_fd")

    def __init__(self, fd, offset, length, blocksize, use_sendfile, owns_fd=True):
        self.fd = fd
        self.offset = offset
        self.remaining = length
        self.blocksize = max(1, blocksize)
        self.use_sendfile = use_sendfile
        self.started = False
        # Several ranges of one file share its descriptor: the last closes it.
        self.owns_fd = owns_fd

    def send(self, sock):
        """One send of the region; bytes sent.  Raises BlockingIOError when full."""
        count = self.remaining
        if self.use_sendfile:
            try:
                sent = os.sendfile(sock.fileno(), self.fd, self.offset, min(count, 0x7ffff000))
            except _WOULD_BLOCK:
                raise
            except OSError as exc:
                if self.started or exc.errno not in _SENDFILE_UNSUPPORTED:
                    raise
                self.use_sendfile = False
                return self.send(sock)
        else:
            data = _pread(self.fd, min(count, self.blocksize), self.offset)
            if not data:
                raise FileTruncated(errno.EIO, "file shorter than announced")
            sent = sock.send(data)
        if not sent:
            raise FileTruncated(errno.EIO, "file shorter than announced")
        self.started = True
        self.offset += sent
        self.remaining -= sent
        return sent

    def close(self):
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            if self.owns_fd:
                os.close(fd)

    def __len__(self):
        return self.remaining


class _Transport:
    """A non-blocking socket with an output queue; a subclass hears of progress through
    _on_write_blocked, _on_write_progress, _on_drained, _on_sent_at_once, _on_write_error,
    _on_file_progress."""

    __slots__ = ("reactor", "sock", "_events", "_out", "_out_size", "_reading", "closed",
                 "_want_write", "_flush_due")

    def __init__(self, reactor, sock):
        self.reactor = reactor
        self.sock = sock
        self._want_write = False  # write interest with nothing queued: a TLS handshake
        self._flush_due = False  # output waits for the end of the loop turn
        self._events = 0
        self._out = deque()
        self._out_size = 0
        self._reading = True
        self.closed = False

    def _update_events(self):
        """Register exactly the interest the state calls for."""
        if self.closed:
            return
        events = (_EVENT_READ if self._reading else 0) | (
            _EVENT_WRITE if self._out and not self._flush_due or self._want_write else 0)
        if events == self._events:
            return
        if not self._events:
            self.reactor.register(self.sock, events, self)
        elif not events:
            self.reactor.unregister(self.sock)
        else:
            self.reactor.modify(self.sock, events, self)
        self._events = events

    def pause_reading(self):
        if self._reading:
            self._reading = False
            self._update_events()

    def resume_reading(self):
        if not self._reading:
            self._reading = True
            self._update_events()

    def _write(self, data):
        """Send bytes, queueing what the kernel does not take.

        Up to ``_WRITE_AT_ONCE`` bytes wait for the end of the loop turn
        (Reactor.flush_at_end_of_turn), then go with the turn's other answers;
        more go to the kernel at once, as much as it takes.
        """
        if self.closed or not data:
            return
        out = self._out
        blocked = bool(out) and not self._flush_due  # on_writable sends what is queued
        out.append(data)
        self._out_size += len(data)
        if blocked:
            return
        if self._out_size < _WRITE_AT_ONCE:
            if not self._flush_due:
                self._flush_due = True
                self.reactor.flush_at_end_of_turn(self)
            return
        was_due, self._flush_due = self._flush_due, False  # the end of the turn finds nothing
        if self._flush():
            if was_due:
                self._on_sent_at_once()  # what waited for the turn's end went too
        elif not self.closed:
            self._update_events()
            self._on_write_blocked()

    def _on_sent_at_once(self):
        """Bytes that waited for the end of the turn went sooner, with a large write."""

    def flush_now(self):
        """The end of the turn: send what the kernel takes, then as on_writable."""
        if not self._flush_due:
            return
        self._flush_due = False
        if self.closed or not self._out:
            return  # closed, or sent on a writable event (a TLS handshake's interest)
        if self._flush():
            self._on_drained()
        elif not self.closed:
            self._update_events()
            self._on_write_blocked()

    def _write_file(self, region):
        """Queue a file region and start sending it."""
        if self.closed:
            region.close()
            return
        self._out.append(region)
        if len(self._out) == 1 and not self._flush():
            self._update_events()
            if not self.closed:
                self._on_write_blocked()

    def on_writable(self):
        if self._flush():
            self._update_events()
            self._on_drained()
        elif not self.closed:
            self._on_write_progress()

    def _flush(self):
        """Send what the kernel takes; True when the queue is empty."""
        out = self._out
        while out:
            data = out[0]
            if data.__class__ is _FileRegion:
                try:
                    sent = data.send(self.sock)
                except _WOULD_BLOCK:
                    return False
                except OSError as exc:
                    self._on_write_error(exc, "sendfile")
                    return False
                self._on_file_progress(sent)
                if not data.remaining:
                    data.close()
                    out.popleft()
                continue
            if (len(out) > 1 and len(data) < _SEND_JOIN_LIMIT
                    and out[1].__class__ is not _FileRegion):
                # Many small pieces: one send() of them all.
                pieces = []
                size = 0
                while out and size < _SEND_JOIN_LIMIT and out[0].__class__ is not _FileRegion:
                    piece = out.popleft()
                    pieces.append(piece)
                    size += len(piece)
                data = b"".join(pieces)
                out.appendleft(data)
            try:
                sent = self.sock.send(data)
            except _WOULD_BLOCK:
                return False
            except OSError as exc:
                self._on_write_error(exc, "write")
                return False
            self._out_size -= sent
            if sent < len(data):
                out[0] = memoryview(data)[sent:]
                return False
            out.popleft()
        return True

    @property
    def output_pending(self):
        """Bytes queued and not yet taken by the kernel."""
        return self._out_size

    def _close_socket(self):
        if self.closed:
            return
        if self._events:
            self.reactor.unregister(self.sock)
            self._events = 0
        self.closed = True
        for item in self._out:
            if item.__class__ is _FileRegion:
                item.close()
        self._out.clear()
        self._out_size = 0
        try:
            self.sock.close()
        except OSError:
            pass


# Response fields the server writes itself, from what the handler set.
_SERVER_FRAMING_FIELDS = frozenset(("content-length", "transfer-encoding", "connection"))


class _HeadWriter:
    """The one place where a status line and fields become bytes, whatever the answer."""

    __slots__ = ("_defaults", "_default_names", "_date", "_common", "_built")

    def __init__(self, default_fields):
        self._defaults = tuple((name.lower(), "%s: %s\r\n" % (name, value))
                               for name, value in default_fields)
        self._default_names = frozenset(["date"] + [lower for lower, _ in self._defaults])
        self._date = None
        self._common = ""
        self._built = _BoundedCache(256)

    def build(self, code, message, fields, body, complete, close, head_only, http11,
              switching=False):
        """(head bytes, body writer class, length, close) for a response."""
        # Hot path (bench workload "hello"): a server answers the same few
        # heads over and over; each is built once a second at most.
        date = _date_cache.get()
        built = self._built
        if date is not self._date:
            self._date = date
            self._common = date + "".join(line for _, line in self._defaults)
            built.clear()
        key = (code, message, tuple(fields), len(body) if complete or head_only else None,
               close, head_only, http11)
        head = built.get(key)
        if head is None:
            head = self._build(code, message, fields, body, complete, close, head_only,
                               http11, switching)
            if code >= 200 and code != 206:  # ranges rarely repeat
                built.put(key, head)
        return head

    def _build(self, code, message, fields, body, complete, close, head_only, http11,
               switching):
        if code < 200 and not switching:
            # A 1xx is never the final answer: the client would take the
            # next response for this request's.
            raise ValueError("status %d is informational, not a final answer" % code)
        out = [status_line(code, message), ""]
        overridden = ()
        length = None
        options = []  # of the Connection field
        for name, value in fields:
            # Checked here too: ``headers`` may have been replaced by a dict.
            name, value = _check_field(name, value)
            lower = name.lower()
            if lower in _SERVER_FRAMING_FIELDS:
                if lower == "content-length":
                    if _is_digits(value):
                        length = int(value)
                    continue  # framing is the server's business
                if lower == "connection":
                    if "close" in value.lower():
                        close = True
                    if switching:
                        out.append(name + ": " + value + "\r\n")
                    elif "upgrade" in value.lower():
                        # RFC 9110 §7.8: the option goes with an Upgrade field.
                        options.append("Upgrade")
                continue
            if lower in self._default_names:
                overridden += (lower,)
            out.append(name + ": " + value + "\r\n")
        if overridden:
            out[1] = "".join(([] if "date" in overridden else [self._date]) + [
                line for lower, line in self._defaults if lower not in overridden])
        else:
            out[1] = self._common
        if head_only or not status_has_body(code):
            writer = _NoBodyWriter
            if head_only and status_has_body(code):
                if length is None and complete:
                    length = len(body)  # what a GET would have announced
            elif code != 304:
                length = None
        elif length is not None or complete:
            writer = _LengthWriter
            if length is None:
                length = len(body)
        elif http11:
            writer = _ChunkedWriter
        else:
            writer = _BodyWriter  # until the connection closes
            close = True
        if length is not None:
            out.append("Content-Length: %d\r\n" % length)
        elif writer is _ChunkedWriter:
            out.append("Transfer-Encoding: chunked\r\n")
        if close and not switching:
            options.append("close")
        elif not http11 and not switching:
            options.append("keep-alive")
        if options:
            out.append("Connection: %s\r\n" % ", ".join(dict.fromkeys(options)))
        out.append("\r\n")
        return "".join(out).encode("latin-1"), writer, length, close


class _BodyBuffer:
    """A request body as it arrives: in memory, or past ``spool`` bytes in a temporary
    file, or from its first byte in ``file`` (where the handler wants it)."""

    __slots__ = ("spool", "held", "size", "file")

    def __init__(self, spool, file=None):
        self.spool = spool
        # The first piece as it came, then one growing bytearray: a body
        # that arrives in many small pieces costs its size, not an object
        # a piece.
        self.held = b""
        self.size = 0
        self.file = file

    def add(self, data):
        self.size += len(data)
        if self.file is not None:
            self.file.write(data)
        elif self.size > self.spool:
            import tempfile  # deferred: import time
            self.file = tempfile.TemporaryFile()
            self.file.write(self.held)
            self.file.write(data)
            self.held = b""
        elif not self.held:
            self.held = data
        else:
            if self.held.__class__ is bytes:
                self.held = bytearray(self.held)
            self.held += data

    def close(self):
        """Drop the temporary file of a body the connection gave up on."""
        if self.file is not None:
            self.file.close()

    def finish(self):
        """The body: bytes, or the temporary file rewound to its start."""
        if self.file is None:
            return bytes(self.held)
        self.file.seek(0)
        return self.file


# === 8. Connection ===
#
# One _HTTPConnection per client socket.  Its life is a state machine: the
# state says what the connection waits for, and with it which deadline runs
# and what happens when the client leaves (its end of stream arrives).
#
#   state      waits for              deadline (then)          client leaves       next
#   HANDSHAKE  the TLS handshake      timeout (close)          close               NEW
#   NEW        a request's 1st byte   timeout (close)          close               READING
#   IDLE       the next request       keepalivetimeout (close) close               READING
#   READING    the rest of it         timeout (408, close)     close               HANDLING
#   HANDLING   the handler's answer   -                        close, answer lost  SENDING,
#                                                                                  SWITCHED
#   SENDING    the kernel to take     -                        finish, then close  IDLE, READING,
#              the answer's end                                                    CLOSING
#   CLOSING    the client to read     linger_timeout (close)   close               CLOSED
#              it all (RFC 9112 §9.6)
#   SWITCHED   another protocol (101) -                        the protocol hears  CLOSED
#   CLOSED     nothing                -                        -                   -
#
# In every state, a read or write error closes the connection, and so does
# output that the kernel refuses for ``timeout`` seconds.  "close" in the
# table is abort(): on_disconnect, then the socket goes at once.  The one
# graceful way out is close(): flush the output, then linger in CLOSING when
# the client may still be sending (a protocol error, or unread pipelined
# bytes), so that our close does not reset the answer.  A protocol error is
# answered through the same response path as a handler's answer, with
# Connection: close.

_HANDSHAKE, _NEW, _IDLE, _READING, _HANDLING, _SENDING, _CLOSING, _SWITCHED, _CLOSED = range(9)
_STATE_NAMES = ("HANDSHAKE", "NEW", "IDLE", "READING", "HANDLING", "SENDING", "CLOSING",
                "SWITCHED", "CLOSED")

_TCP_CORK = getattr(socket, "TCP_CORK", None)
# Bytes the kernel may hold unsent (Linux, macOS): what paces a streaming
# response on TCP, where a small SO_SNDBUF would stop the kernel's tuning of
# the send buffer for the rest of the connection.  0 puts the default back.
_TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", None)


class _HTTPConnection(_Transport):
    """One client socket: parser, output, deadline, keep-alive and pipelining."""

    __slots__ = ("server", "limits", "parser", "info", "tls", "state", "keepalive_remaining",
                 "routes", "deadline", "_timer", "_request_started", "_body_started",
                 "_head", "_body", "_response", "_writer",
                 "_keep_alive", "_linger", "_in_process_input", "body_sent", "_drain_waiters",
                 "_restore", "_protocol")

    def __init__(self, server, sock, info):
        super().__init__(server.reactor, sock)
        self.server = server
        self.limits = server.limits
        self.parser = RequestParser(server.limits)
        self.info = info
        self.tls = info.tls
        self.state = _HANDSHAKE if info.tls else _NEW
        self.keepalive_remaining = server.keepalive
        # The handler table as it was at accept: changes apply to new
        # connections (as in the Perl module).
        self.routes = server.router.table
        self.deadline = None
        self._timer = None
        self._request_started = self._body_started = 0.0  # reactor times
        self._head = None        # the request being answered
        self._body = None        # its body while it arrives (a _BodyBuffer)
        self._response = None
        self._writer = None      # the framing of the response's body, once its head is out
        self._keep_alive = False  # decided with each response's head
        self._linger = False
        self._in_process_input = False
        self.body_sent = 0
        self._drain_waiters = None
        self._restore = None     # socket options the response changed, to put back
        self._protocol = None

    def start(self):
        self._request_started = time.monotonic()  # the first request's clock runs from accept
        self._deadline_at(self._reading_deadline())
        self._update_events()

    def read_first(self):
        """Just accepted: read now what the client sent, not a turn of the loop later.

        A client speaks first and at once, so its request (or TLS hello) is
        usually here already; a busy server's tail is made of such turns.
        """
        if self._reading and not self.closed and not self.server.shutting_down:
            self.on_readable()

    def __repr__(self):
        return "<_HTTPConnection %s %s>" % (self.info.ID, _STATE_NAMES[self.state])

    # -- TLS

    def _do_handshake(self):
        """One step of a non-blocking TLS handshake (bounded by ``timeout``)."""
        import ssl  # deferred: import time
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want_write = False
        except ssl.SSLWantWriteError:
            self._want_write = True
        except (ssl.SSLError, OSError) as exc:
            # Plain HTTP on a TLS port, a client that hangs up, a bad hello.
            _log.debug("%s: TLS handshake failed: %s", self.info.ID, exc)
            self.abort()
            return
        else:
            self.state = _NEW
            self._want_write = False
        self._update_events()
        if self.state == _NEW and self.sock.pending():
            self.on_readable()

    # -- the deadline: one per connection, one lazily re-armed timer

    def _set_deadline(self, seconds):
        """Time out ``seconds`` from now; 0 or None means never."""
        self._deadline_at(time.monotonic() + seconds if seconds else None)

    def _deadline_at(self, deadline):
        """Time out at this reactor time; None means never."""
        self.deadline = deadline
        if deadline is None:
            return
        timer = self._timer
        if timer is None or timer.deadline > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.reactor.call_at(deadline, self._on_timer)

    def _on_timer(self):
        self._timer = None
        deadline = self.deadline
        if deadline is None or self.closed:
            return
        if time.monotonic() < deadline:
            self._timer = self.reactor.call_at(deadline, self._on_timer)
            return
        self.deadline = None
        if self.state == _READING:
            deadline = self._reading_deadline()
            if deadline is not None and time.monotonic() < deadline:
                self._deadline_at(deadline)  # the body has kept up its rate
            else:
                self._reject(RequestTimeout("Request not received in time."))
        else:
            self.abort()  # quiet: idle, blocked, lingering or handshaking

    # -- input

    def on_readable(self):
        state = self.state
        if state == _HANDSHAKE:
            self._do_handshake()
            return
        try:
            data = self.sock.recv(self.limits.recv_size)
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            if not (self.tls and exc.__class__.__name__ in ("SSLZeroReturnError", "SSLEOFError")):
                self.server.network_error(self, "read", exc)
                self.abort(exc)
                return
            data = b""  # the TLS form of a clean close
        if not data:
            if state == _SENDING or state == _CLOSING and self._out:
                # What is left of the answer still goes out, then the close.
                self._keep_alive = False
                self.pause_reading()
            elif state == _SWITCHED:
                self.pause_reading()
                eof_received = getattr(self._protocol, "eof_received", lambda: False)
                if not self._protocol_call(eof_received):
                    self.close()  # unless the protocol keeps its half open
            else:
                self.abort()
            return
        if self.tls and self.sock.pending():
            # TLS may hold decrypted bytes the kernel no longer signals.
            self.reactor.call_soon(self.on_readable)
        if state <= _READING:
            self.parser.feed(data)
            self._process_input()
        elif state == _SWITCHED:
            self._protocol_call(self._protocol.data_received, data)
        elif state != _CLOSING:  # CLOSING discards what still arrives
            self.parser.feed(data)  # pipelined behind the request being answered
            if self.parser.buffered > self.limits.max_pipeline:
                self.pause_reading()

    def _process_input(self):
        """Parse and dispatch requests until one is with its handler or the bytes run out."""
        if self._in_process_input:
            return  # a response that completed at once: the loop below goes on
        self._in_process_input = True
        parser = self.parser
        try:
            while self.state <= _READING:
                try:
                    event = parser.next_event()
                except HTTPError as exc:
                    self._reject(exc)
                    return
                if event is None:
                    break
                if event.__class__ is RequestHead:
                    self._head = event
                    if not (event.content_length or event.chunked):  # has_body, inline
                        self._dispatch(b"", None)
                        continue
                    try:
                        sink = self.server.admit(self, event)
                    except HTTPError as exc:
                        self._reject(exc, event)  # before the body, and no 100 Continue
                        return
                    except Exception:
                        _log.exception("%s: cannot take the body of %s %s", self.info.ID,
                                       event.method, _log_escape(event.target))
                        self._reject(HTTPError(500, "The request body cannot be taken."), event)
                        return
                    self._body = _BodyBuffer(self.limits.spool_body, sink)
                    self._body_started = time.monotonic()
                    self._begin_reading()
                    self._deadline_at(self._reading_deadline())
                    if event.expect_continue and not parser.buffered:
                        self._write(CONTINUE_RESPONSE)
                elif event.__class__ is EndOfMessage:
                    body, self._body = self._body, None
                    try:
                        content = body.finish()
                    except Exception as exc:  # OSError, or a handler's file that failed
                        self._body_lost(body, exc)
                        return
                    self._dispatch(content, event.trailers)
                else:
                    try:
                        self._body.add(event)
                    except Exception as exc:
                        self._body_lost(self._body, exc)
                        return
        finally:
            self._in_process_input = False
        if self.state <= _READING:
            if self.state != _READING and parser.buffered and parser.in_message:
                self._begin_reading()  # part of a head
            if not self._reading and parser.buffered <= self.limits.max_pipeline:
                self.resume_reading()

    def _begin_reading(self):
        if self.state == _IDLE:
            self._request_started = time.monotonic()  # the next request has begun
            self._deadline_at(self._reading_deadline())
        self.state = _READING

    def _reading_deadline(self):
        """When the request being read times out (``timeout``, ``head_timeout``, body rate)."""
        limits = self.limits
        ends = []
        if self.server.timeout:
            ends.append(self._request_started + self.server.timeout)
        if self._body is None:
            if limits.head_timeout:
                ends.append(self._request_started + limits.head_timeout)
        elif limits.body_min_rate:
            ends.append(self._body_started + limits.body_rate_grace
                        + self._body.size / limits.body_min_rate)
        return min(ends) if ends else None

    def _body_lost(self, body, exc):
        """A body that could not be stored: 507 for a full disk, else 500; never a short body."""
        _log.error("%s: cannot store a request body: %s", self.info.ID, exc)
        body.close()
        self._body = None
        if getattr(exc, "errno", None) in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            self._reject(HTTPError(507, "No space left to store the request body."), self._head)
        else:
            self._reject(HTTPError(500, "The request body could not be stored."), self._head)

    def _dispatch(self, content, trailers):
        self.state = _HANDLING
        self.deadline = None
        self.body_sent = 0
        if self.parser.buffered > self.limits.max_pipeline:
            self.pause_reading()
        self._response = response = self.server.new_response(self, self._head, content, trailers)
        self.server.handle_request(self, response)

    # -- the response on the wire: Response calls these

    def owns(self, response):
        """Is ``response`` the one this open connection is answering?"""
        return response is self._response and self.state == _HANDLING

    def wants_body(self, response):
        """Would more of the body of ``response`` go out?  Not for HEAD, 204, 304, nor past its length."""
        writer = self._writer  # None until its head goes out
        return self.owns(response) and (writer is None or not writer.body_complete)

    def send_head(self, response, body, complete, file=False):
        """Write the head of ``response`` and its first ``body`` bytes (all, if ``complete``)."""
        head = self._head
        server = self.server
        close = (not head.keep_alive or self.keepalive_remaining <= 1
                 or server.shutting_down or not server.keepalivetimeout)
        data, writer, length, close = server.response_heads.build(
            response.code, response.message, response.headers.items(), body, complete,
            close, head.method == "HEAD", head.http11)
        self._writer = writer = writer(length)
        self._keep_alive = not close
        if file and not self.tls and _TCP_CORK is not None:
            self._tune(socket.IPPROTO_TCP, _TCP_CORK, 1, 0)  # nginx's tcp_nopush
        streaming = response.streaming
        if streaming:
            # No waiting in a large send buffer: each flush reaches the client
            # promptly and paces the handler.
            if self.info.remote_port is not None and _TCP_NOTSENT_LOWAT is not None:
                self._tune(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, self.limits.stream_sndbuf, 0)
            else:
                self._tune(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.stream_sndbuf)
        if body:
            body = writer.frame(body)
            self.body_sent += len(body)
            data += body
        self._write(data)
        if streaming and not self._out and not self.closed:
            self._stream_flushed(response)

    def send_body(self, response, data):
        """Write more of the body of ``response``, framed."""
        if data and self.owns(response):
            data = self._writer.frame(data)
            self.body_sent += len(data)
            self._write(data)
            if response.streaming and not self._out and not self.closed:
                self._stream_flushed(response)

    def send_file(self, response, region):
        """Queue ``region`` (a _FileRegion) as part of the body of ``response``."""
        if not self.owns(response):
            region.close()
            return
        self._writer.frame_file(region.remaining)
        self._write_file(region)

    def end_response(self, response, failed=False):
        """The handler is done with ``response``; ``failed``: it gave up midway."""
        if not self.owns(response):
            return
        self.state = _SENDING
        writer = self._writer
        if failed and not writer.body_complete:
            self._keep_alive = False  # the client sees the body cut short
        else:
            if writer.tail:
                self._write(writer.tail)
            if writer.missing:
                _log.warning("%s: response ended %d bytes short of its Content-Length",
                             self.info.ID, writer.missing)
                self._keep_alive = False
        if writer.excess:
            _log.warning("%s: response body %d bytes longer than its Content-Length; cut",
                         self.info.ID, writer.excess)
        if not self._out and not self.closed:
            self._complete_request()

    def switch_protocol(self, response, protocol):
        """Answer 101 with the headers of ``response``; ``protocol`` takes the socket (README)."""
        if not self.owns(response):
            return
        data, _, _, _ = self.server.response_heads.build(
            101, response.message, response.headers.items(), b"", True, False, False, True,
            switching=True)
        pending = self.parser.take_buffered()
        self.parser = None
        self.state = _SWITCHED
        self.deadline = None
        self._response = self._head = self._writer = None
        self._write(data)
        self.server.request_done(self, response)
        if self.closed:
            return
        self._protocol = protocol
        self.resume_reading()  # the protocol may pause it in connection_made
        self._protocol_call(protocol.connection_made, self)
        if pending and not self.closed:
            self._protocol_call(protocol.data_received, pending)
        if self.server.shutting_down and not self.closed:
            self.server_shutting_down()  # it began while this request was answered

    def _protocol_call(self, method, *args):
        """Call the switched protocol: its answer, or None if it raised and lost its connection."""
        try:
            return method(*args)
        except Exception as exc:
            _log.exception("%s: %r raised", self.info.ID, method)
            self.abort(exc)
            return None

    def write(self, data):
        """Send bytes unframed, for a protocol that took the connection over (reactor thread)."""
        if self.state != _SWITCHED and not self.closed:
            raise RuntimeError("write() is for a connection switched to another protocol")
        self._write(data)

    # -- socket options for one response

    def _tune(self, level, option, value, restore=None):
        """Set a socket option until the response ends; ``restore``: what to put back then."""
        try:
            if restore is None:
                restore = self.sock.getsockopt(level, option)
                if option == socket.SO_SNDBUF and sys.platform.startswith("linux"):
                    restore //= 2  # Linux reports the doubled size it keeps
            self.sock.setsockopt(level, option, value)
        except OSError:
            return  # not TCP (a Unix socket)
        if self._restore is None:
            self._restore = []
        self._restore.append((level, option, restore))

    def _restore_options(self):
        restore, self._restore = self._restore, None
        for level, option, value in restore:
            try:
                self.sock.setsockopt(level, option, value)
            except OSError:
                pass

    # -- output events

    def _stream_flushed(self, response):
        """A streaming response's output reached the kernel: tell the handler."""
        self.reactor.call_soon(self._fire_stream_request, response)

    def _fire_stream_request(self, response):
        if self.owns(response) and not response.finished:
            if not self.server.call_special("stream_request", response.request, response):
                response.fail()

    def _on_write_blocked(self):
        self._set_deadline(self.server.timeout)

    def on_writable(self):
        if self.state == _HANDSHAKE:
            self._do_handshake()
        else:
            super().on_writable()

    def _on_drained(self):
        if self._drain_waiters:
            self._wake_drain_waiters()
        state = self.state
        if state == _SENDING:
            self.deadline = None
            self._complete_request()
        elif state == _HANDLING:
            self.deadline = None
            response = self._response
            if response.streaming and not response.finished:
                self._stream_flushed(response)
        elif state == _CLOSING:
            self._linger_or_abort()
        elif state == _READING:
            self._deadline_at(self._reading_deadline())  # a 100 Continue went out
        elif state == _SWITCHED:
            self.deadline = None

    def _on_write_progress(self):
        self._set_deadline(self.server.timeout)
        if self._drain_waiters and self._out_size <= self.limits.output_low_water:
            self._wake_drain_waiters()

    def _on_sent_at_once(self):
        # No drained event comes for these bytes: who waits for a drain hears now.
        if self._drain_waiters:
            self._wake_drain_waiters()

    def wait_drain(self, callback):
        """Call ``callback()`` once queued output is at the low watermark."""
        if self.closed or self._out_size <= self.limits.output_low_water:
            self.reactor.call_soon(callback)
        else:
            if self._drain_waiters is None:
                self._drain_waiters = []
            self._drain_waiters.append(callback)

    def _wake_drain_waiters(self):
        waiters, self._drain_waiters = self._drain_waiters, None
        for callback in waiters or ():
            self.reactor.call_soon(callback)

    def _on_write_error(self, exc, op):
        if isinstance(exc, FileTruncated):
            _log.warning("%s: file shrank while being sent; closing", self.info.ID)
        else:
            self.server.network_error(self, op, exc)
        self.abort(exc)

    def _on_file_progress(self, sent):
        self.body_sent += sent

    # -- between requests

    def _complete_request(self):
        """The response is on the wire: post_request, then keep alive or close."""
        response = self._response
        self._response = self._head = self._writer = None
        if self._restore:
            self._restore_options()
        if self.keepalive_remaining > 0:
            self.keepalive_remaining -= 1
        server = self.server
        if server.access_log is not None or server.router.specials:
            server.request_done(self, response)
            if self.closed:
                return
        if not self._keep_alive or server.shutting_down:
            self.close()
        elif self.parser.buffered and self.parser.in_message:
            self.state = _READING  # pipelined: the next request is here
            self._set_deadline(server.timeout)
            self._process_input()
        elif not server.keepalivetimeout:
            self.close()  # a keep-alive timeout of 0 closes at once
        else:
            self.state = _IDLE
            self._set_deadline(server.keepalivetimeout)
            if not self._reading:
                self.resume_reading()

    def server_shutting_down(self):
        """The server stops: finish what is under way, then close."""
        if self.state <= _IDLE:
            # A request may be on its way (or in the socket, unread): it gets
            # a short while to arrive and is answered with Connection: close,
            # where closing now would reset it.
            self._set_deadline(self.limits.linger_timeout)
        elif self.state == _SWITCHED:
            shutdown = getattr(self._protocol, "server_shutdown", None)
            if shutdown is None:
                self.close()
            else:
                self._protocol_call(shutdown)

    # -- errors and closing

    def _reject(self, exc, head=None):
        """Answer an error, then close: the one place errors become answers.

        ``head`` is the request refused before its body was read; without it,
        a protocol error, answered as in the Perl module to a stand-in request
        with method ERROR and target / (what post_request sees).
        """
        self._linger = True
        if self._body is not None:  # a body cut short: its file goes now, not at close
            self._body.close()
            self._body = None
        if exc.message is _PLAIN_HTTP_ONLY:
            _log.warning("%s: a TLS handshake on a plain HTTP port; answered 400", self.info.ID)
        if head is None:
            head = RequestHead("ERROR", "/", "HTTP/1.1", [])
        head.keep_alive = False  # an unread body, or a broken stream
        try:
            response = self.server.error_response(self, head, exc)
            if self.closed:
                return
            self.state = _HANDLING
            self.body_sent = 0
            self._head = head
            self._response = response
            response.done()
        except Exception:  # what on_error left cannot be sent
            _log.exception("%s: the answer to %s cannot be sent", self.info.ID, exc)
            self.abort()

    def close(self, linger=False):
        """Close gracefully: after the output drains, lingering if need be (or ``linger``)."""
        if self.closed:
            return
        self._linger = self._linger or linger
        self.state = _CLOSING
        if self._out:
            self._set_deadline(self.server.timeout)
            return  # _on_drained comes back
        self._linger_or_abort()

    def _linger_or_abort(self):
        parser = self.parser
        if not (self._linger or parser is not None and parser.buffered):
            self.abort()
            return
        # RFC 9112 §9.6: close in stages so unread input cannot reset the
        # connection before the client has read our last response.
        self._linger = False
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort()
            return
        self._set_deadline(self.limits.linger_timeout)
        self.resume_reading()

    def abort(self, exc=None):
        """Close now: on_disconnect while the addresses are readable, then the socket."""
        if self.closed:
            return
        if self._body is not None:
            self._body.close()  # a body still arriving
            self._body = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.deadline = None
        response, self._response = self._response, None
        if response is not None and self.state in (_HANDLING, _SENDING):
            # Its answer is cut short: logged here, as _complete_request is never reached.
            self.server.request_aborted(self, response, head_sent=self._writer is not None)
        self.state = _CLOSED
        self.info.aborted = True
        self.server.connection_closed(self)
        self._close_socket()
        if self._drain_waiters:
            self._wake_drain_waiters()
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            try:
                protocol.connection_lost(exc)
            except Exception:
                _log.exception("%s: connection_lost of %r raised", self.info.ID, protocol)


# === 9. Request, response, connection info, error ===

class URI:
    """The request target: ``path``, ``query`` and ``query_form()``."""

    __slots__ = ("target", "path", "query")

    def __init__(self, target, path=None, query=None):
        self.target = target
        if path is None:
            path, _, query = target.partition("?")
        self.path = path
        self.query = query or ""

    def query_form(self):
        """The query string as a dict (the last of repeated names wins)."""
        from urllib.parse import parse_qsl  # deferred: import time
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def __str__(self):
        return self.target

    def __eq__(self, other):
        return str(self) == str(other)

    def __hash__(self):
        return hash(self.target)

    def __repr__(self):
        return "URI(%r)" % self.target


def _address_parts(address):
    """(ip, port) of a socket address; IPv4-mapped IPv6 shown as IPv4."""
    if address.__class__ is not tuple:  # Unix: the path (an abstract name is bytes)
        return (address or None) if address.__class__ is str else None, None
    ip = address[0]
    return (ip[7:] if ip.startswith("::ffff:") and "." in ip else ip), address[1]


class Connection:
    """What is known of one client connection; shared by its requests."""

    __slots__ = ("ID", "remote_ip", "remote_port", "_sock", "_local", "aborted",
                 "fileno", "server", "tls")

    def __init__(self, ID, sock, peer, server=None, tls=False):
        self.tls = tls
        self.ID = ID
        self._sock = sock
        # A Unix peer binds its socket to any name it likes: it has no address.
        self.remote_ip, self.remote_port = _address_parts(peer if type(peer) is tuple else None)
        self._local = None
        self.aborted = False
        self.fileno = sock.fileno()
        self.server = server

    def _local_address(self):
        if self._local is None:
            try:
                self._local = _address_parts(self._sock.getsockname())
            except OSError:
                self._local = (None, None)
        return self._local

    local_ip = property(lambda self: self._local_address()[0])
    local_port = property(lambda self: self._local_address()[1])
    # Perl names for the same values.
    remote_host = peerhost = property(lambda self: self.remote_ip)
    peerport = property(lambda self: self.remote_port)
    local_host = property(lambda self: self.local_ip)

    def __repr__(self):
        return "<Connection %s %s:%s>" % (self.ID, self.remote_ip, self.remote_port)


_NO_TRAILERS = Headers.wrap(())


class Request:
    """An HTTP request, complete with its body."""

    __slots__ = ("method", "path", "protocol", "_content", "body_file", "connection",
                 "trailers", "head", "_headers", "_uri", "_client", "user")

    def __init__(self, head, content, connection, trailers=None):
        self._client = None
        self.head = head  # the RequestHead as parsed
        self.method = head.method
        self.path = head.path
        self.protocol = head.version
        spooled = content.__class__ is not bytes  # a large body, in a temporary file
        self._content = None if spooled else content
        self.body_file = content if spooled else None
        self.connection = connection
        self.trailers = Headers.wrap(list(trailers)) if trailers else _NO_TRAILERS
        self._headers = None
        self._uri = None
        # Who authenticated (the ``auth`` option): the access log's user
        # field reads it from here, "-" while it is None.
        self.user = None

    @property
    def content(self):
        """The body as bytes (read from ``body_file`` when it was spooled)."""
        if self._content is None:
            position = self.body_file.tell()
            self.body_file.seek(0)
            self._content = self.body_file.read()
            self.body_file.seek(position)
        return self._content

    @content.setter
    def content(self, value):
        self._content = value

    def body_stream(self):
        """A binary file object over the body, from its start."""
        if self.body_file is not None:
            self.body_file.seek(0)
            return self.body_file
        return io.BytesIO(self._content)

    def body_length(self):
        """The body's length in bytes."""
        if self.body_file is not None:
            return os.fstat(self.body_file.fileno()).st_size
        return len(self._content)

    @property
    def remote_ip(self):
        """The client's address: the peer's, or the one a trusted proxy reports."""
        return self._forwarded()[0]

    @property
    def scheme(self):
        """``https`` under TLS or when a trusted proxy says so, else ``http``."""
        return self._forwarded()[1]

    @property
    def client(self):
        """``(remote_ip, scheme)`` at once."""
        return self._forwarded()

    def _forwarded(self):
        client = self._client
        if client is None:
            conn = self.connection
            ip, scheme = conn.remote_ip, "https" if conn.tls else "http"
            trusted = getattr(conn.server, "trusted_proxies", None)
            if trusted and trusted.trusts(ip):  # a Unix peer (no ip): by its family alone
                # The right-most address no trusted proxy vouches for.
                hops = (self.header("X-Forwarded-For") or "").split(",")
                for hop in reversed([hop.strip() for hop in hops if hop.strip()]):
                    ip = hop
                    if not trusted.trusts(hop):
                        break
                proto = (self.header("X-Forwarded-Proto") or "").split(",")[-1].strip().lower()
                if proto in ("http", "https"):
                    scheme = proto
            client = self._client = (ip, scheme)
        return client

    @property
    def headers(self):
        """The request's header fields (a ``Headers``)."""
        if self._headers is None:
            self._headers = Headers.wrap(self.head.fields)
        return self._headers

    def header(self, name, default=None):
        """One header's value (repeated fields joined with ", ")."""
        return self.headers.get(name, default)

    @property
    def uri(self):
        if self._uri is None:
            self._uri = URI(self.head.target, self.head.path, self.head.query)
        return self._uri

    query = property(lambda self: self.head.query)
    host = property(lambda self: self.head.host)
    content_type = property(lambda self: self.headers.get("Content-Type"))

    def query_form(self):
        return self.uri.query_form()

    @property
    def content_length(self):
        """The body's length in bytes (None when the request announced none)."""
        return self.body_length() if self.head.chunked else self.head.content_length

    def form(self):
        """Query and url-encoded body fields as a dict (the body wins)."""
        from urllib.parse import parse_qsl  # deferred: import time
        values = self.query_form()
        content_type = (self.content_type or "").split(";")[0].strip().lower()
        if content_type == "application/x-www-form-urlencoded":
            values.update(parse_qsl(self.content.decode("latin-1"), keep_blank_values=True))
        return values

    def __repr__(self):
        return "<Request %s %s %s>" % (self.method, self.head.target, self.protocol)


# O_NONBLOCK: opening a FIFO must not block the loop (it is refused as not
# a regular file).
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
               | getattr(os, "O_NONBLOCK", 0))
# Files up to this size are read and sent with their head in one write.
_SMALL_FILE = 65536
# The least a file is read by at a time over TLS: four TLS records.
_TLS_BLOCK = 65536


_last_modified_texts = _BoundedCache(256)


def _last_modified(mtime):
    """Last-Modified for an mtime; files served often share a few mtimes."""
    seconds = int(mtime)
    text = _last_modified_texts.get(seconds)
    return text if text is not None else _last_modified_texts.put(
        seconds, format_http_date(seconds))


def _not_modified(header, etag, mtime):
    """RFC 9110 §13.2.2: If-None-Match first, else If-Modified-Since."""
    if_none_match = header("If-None-Match")
    if if_none_match is not None:
        return etag_matches(if_none_match, etag, weak=True)
    if_modified_since = header("If-Modified-Since")
    if if_modified_since:
        since = parse_http_date(if_modified_since)
        return since is not None and int(mtime) <= since
    return False


def _byteranges(headers, ranges, size):
    """RFC 9110 §14.6: make it multipart/byteranges -> ([(part head, offset, length)], closing)."""
    # Random, so no file can be made to contain it.
    boundary = os.urandom(12).hex()
    part_type = headers.get("Content-Type") or "application/octet-stream"
    headers.set("Content-Type", "multipart/byteranges; boundary=" + boundary)
    parts = [(("\r\n--%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n"
               % (boundary, part_type, first, last, size)).encode("latin-1"),
              first, last - first + 1) for first, last in ranges]
    return parts, ("\r\n--%s--\r\n" % boundary).encode("ascii")


def _if_range_holds(if_range, etag, mtime):
    """RFC 9110 §13.1.5: a Range applies only if If-Range still matches."""
    if not if_range:
        return True
    if_range = if_range.strip()
    if if_range.startswith('"') or if_range.startswith("W/"):
        return if_range == etag  # strong comparison
    since = parse_http_date(if_range)
    return since is not None and int(mtime) == since


def _error_page(code, text):
    """The HTML page of an HTTP error; everything echoed is escaped."""
    title = "Error %d: %s" % (code, reason_phrase(code))
    return ("<html><head><title>%s</title></head><body><h1>%s</h1><p>%s</p></body></html>"
            % (title, title, _html_escape(text))).encode("utf-8")


_LOCK_MAKING = threading.Lock()


class _Answer:
    """What a response and an error answer share: a status and header fields."""

    __slots__ = ()

    @property
    def status_line(self):
        return "%d %s" % (self.code, self.message or reason_phrase(self.code))

    def header(self, name, *value):
        """``header(name)`` reads a field; ``header(name, value)`` sets it."""
        if value:
            self.headers.set(name, value[0])
            return value[0]
        return self.headers.get(name)

    content_type = property(lambda self: self.headers.get("Content-Type"),
                            lambda self, value: self.headers.set("Content-Type", value))


class Response(_Answer):
    """The response to one request; every method may be called from any thread."""

    __slots__ = ("request", "code", "message", "headers", "_content", "_conn",
                 "_responded", "_headers_sent", "_finished", "_streaming", "_unsent", "_lock")

    def __init__(self, request=None, connection=None, code=200):
        self.request = request
        self.code = code
        self.message = None
        self.headers = Headers()
        self._content = b""
        self._conn = connection
        self._responded = False
        self._headers_sent = False
        self._finished = False
        self._streaming = False
        self._unsent = 0
        self._lock = None

    # -- what the handler sets

    @property
    def content(self):
        """The body to send; a str is sent as UTF-8."""
        return self._content

    @content.setter
    def content(self, value):
        self._content = value if value is not None else b""

    headers_sent = property(lambda self: self._headers_sent)
    finished = property(lambda self: self._finished)

    @property
    def streaming(self):
        """Set before the first ``send``: each send is flushed, then ``stream_request`` fires."""
        return self._streaming

    @streaming.setter
    def streaming(self, value):
        if self._headers_sent and bool(value) != self._streaming:
            raise RuntimeError("streaming must be set before the first send()")
        self._streaming = bool(value)

    def _content_bytes(self):
        content = self._content
        return content.encode("utf-8") if content.__class__ is str else bytes(content)

    def _wire(self):
        """The connection, while it is answering this response; else None."""
        conn = self._conn
        return conn if conn is not None and conn.owns(self) else None

    @property
    def reactor(self):
        """The reactor of the connection this response answers (None without one)."""
        conn = self._conn
        return conn.reactor if conn is not None else None

    @property
    def client_gone(self):
        """True once the connection can no longer carry this response."""
        return self._conn is not None and self._wire() is None

    @property
    def body_wanted(self):
        """False once no more of the body can go out: the client is gone, or the
        answer has none (HEAD, 204, 304), or all its Content-Length has been sent."""
        conn = self._conn
        return conn is None or conn.wants_body(self)

    # -- sending

    def _on_reactor(self, method, *args):
        """Call ``method(*args)`` now on the reactor thread, or hand it over from another."""
        conn = self._conn
        if conn is None or conn.reactor.in_reactor_thread():
            method(*args)
        else:
            conn.reactor.call_soon_threadsafe(self._handed_over, method, args)

    def _handed_over(self, method, args):
        """Run a call a worker thread made; if it fails (a bad header), so does the response."""
        if self._wire() is None:  # this response is over: nothing may reach the wire
            if method == self._send_region:
                os.close(args[0])  # the file descriptor it was to send
            elif method == self._send_from_thread:
                with self._lock:
                    self._unsent -= len(args[0])  # or its thread would wait on
            return
        try:
            method(*args)
        except Exception:
            _log.exception("%s of %r failed", method.__name__, self)
            self._fail_now()

    def respond(self):
        """Send the status line, headers and ``content``; only once."""
        if self._responded:
            raise RuntimeError("respond() called more than once for this request")
        self._responded = True
        self._on_reactor(self._respond_now)

    def _respond_now(self):
        if self._headers_sent:
            self._content = b""
            return
        self._send_head(self._content_bytes(), complete=True)

    def _send_head(self, body, complete, file=False):
        conn = self._wire()
        if conn is not None:
            conn.send_head(self, body, complete, file)  # raises before anything is sent
        self._headers_sent = True

    def send(self, data=b""):
        """Send part of the body; False once ``Limits.output_high_water`` bytes wait or the client left."""
        if self._finished:
            raise RuntimeError("send() after done()")
        if isinstance(data, str):
            data = data.encode("utf-8")
        conn = self._conn
        if conn is None:
            return True
        high_water = conn.limits.output_high_water
        if conn.reactor.in_reactor_thread():
            self._send_now(data)
            return conn.output_pending < high_water and conn.owns(self)
        with self._thread_lock():
            self._unsent += len(data)
        conn.reactor.call_soon_threadsafe(self._handed_over, self._send_from_thread, (data,))
        while conn.owns(self) and conn.output_pending + self._unsent > high_water:
            drained = threading.Event()
            conn.reactor.call_soon_threadsafe(conn.wait_drain, drained.set)
            drained.wait(1.0)
        return conn.owns(self)

    def _thread_lock(self):
        if self._lock is None:
            with _LOCK_MAKING:  # two threads sending at once get the same lock
                if self._lock is None:
                    self._lock = threading.Lock()
        return self._lock

    def _send_from_thread(self, data):
        with self._lock:
            self._unsent -= len(data)
        self._send_now(data)

    def _send_now(self, data):
        if not self._headers_sent:
            self._send_head(self._content_bytes() + data, complete=False)
            self._content = b""
        elif self._conn is not None:
            self._conn.send_body(self, data)

    def on_drain(self, callback):
        """Call ``callback()`` on the reactor once queued output is at ``output_low_water``."""
        conn = self._conn
        if conn is None:
            callback()
        elif conn.reactor.in_reactor_thread():
            conn.wait_drain(callback)
        else:
            conn.reactor.call_soon_threadsafe(conn.wait_drain, callback)

    def done(self):
        """Finish the response (sending it first if that has not happened)."""
        if self._finished:
            _log.warning("done() called more than once for %r", self.request)
            return
        self._finished = self._responded = True
        conn = self._conn
        if conn is not None:
            # Hot path: the thread check of _on_reactor, inline.
            ident = conn.reactor.thread_ident
            if ident is not None and ident != _get_ident():
                conn.reactor.call_soon_threadsafe(self._done_handed_over)
                return
        self._done_now()

    def _done_handed_over(self):
        """``done()`` from a worker thread, on the reactor (as _handed_over, one call less)."""
        try:
            self._done_now()  # which sends nothing unless the connection is still ours
        except Exception:
            _log.exception("done() of %r failed", self)
            self._fail_now()

    def _done_now(self):
        # Hot path (bench workload "hello"): the usual answer is content set
        # and done() called, which comes straight here.
        conn = self._conn
        if conn is not None and not conn.owns(self):
            conn = None
        if not self._headers_sent:
            if conn is None:
                self._headers_sent = True
                return
            content = self._content
            conn.send_head(self, content.encode("utf-8") if content.__class__ is str
                           else bytes(content), True)
            self._headers_sent = True
        if conn is not None:
            conn.end_response(self)

    def fail(self):
        """End as a failed handler: 500 if nothing was sent, else the body ends or is cut short."""
        self._on_reactor(self._fail_now)

    def _fail_now(self):
        conn = self._wire()
        if conn is None:
            return
        self._responded = self._finished = True
        if self._headers_sent:
            conn.end_response(self, failed=True)
            return
        self.code = 500
        self.message = None
        self.headers = Headers({"Content-Type": "text/plain; charset=utf-8"})
        self._content = b"Internal Server Error\n"
        self._done_now()

    def upgrade(self, protocol):
        """Answer 101 with the headers set and hand the connection to ``protocol`` (README)."""
        if self._headers_sent or self._responded:
            raise RuntimeError("upgrade() after the response was sent")
        self._responded = self._finished = True
        self._on_reactor(self._upgrade_now, protocol)

    def _upgrade_now(self, protocol):
        self.code = 101
        conn = self._wire()
        if conn is not None:
            conn.switch_protocol(self, protocol)  # raises (a bad header) before any byte
        self._headers_sent = True

    def sendfile(self, path, content_type=None):
        """Send a file as the whole answer, ranges and conditions included, and finish."""
        if self._headers_sent or self._responded:
            raise RuntimeError("sendfile() after the response was sent")
        self._responded = self._finished = True
        self._on_reactor(self._sendfile_now, path, content_type)

    def _sendfile_now(self, path, content_type):
        if self._conn is not None and self._wire() is None:
            return
        request = self.request
        shown = _quote_path(request.path if request is not None else os.path.basename(path))
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return self._finish_error(404, "No such file or directory %s" % shown)
        except PermissionError:
            return self._finish_error(403, "Denied %s" % shown)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:  # no file can have that name
                return self._finish_error(404, "No such file or directory %s" % shown)
            # repr: the path comes from the client and may hold line breaks.
            _log.error("sendfile: cannot open %r: %s", path, exc.strerror or exc)
            return self._finish_error(500, "Unable to open %s" % shown)
        try:
            stat = os.fstat(fd)
            if not S_ISREG(stat.st_mode):
                os.close(fd)
                return self._finish_error(404, "No such file or directory %s" % shown)
            answer = self._file_answer(stat, path, content_type)
        except BaseException:
            os.close(fd)
            raise
        if answer.__class__ is bytes:  # 304 or 416: the file is not sent
            os.close(fd)
            self._send_whole(answer)
        elif answer[0] == "parts":
            self._send_parts(fd, answer[1], answer[2])
        else:
            self._send_region(fd, *answer)

    def _finish_error(self, code, text):
        self._responded = self._finished = False
        self.error(code, text)

    def _file_answer(self, stat, path, content_type):
        """Set code and headers for a file; returns the body of a 304 or 416, ("parts", parts,
        closing) for several ranges, or the (offset, length, head only) to send."""
        request = self.request
        method = request.method if request is not None else "GET"
        header = request.header if request is not None else (lambda name: None)
        headers = self.headers
        if content_type or "Content-Type" not in headers:
            headers.set("Content-Type", content_type or guess_type(path))
        etag = make_etag(stat)
        headers.set("ETag", etag)
        headers.set("Last-Modified", _last_modified(stat.st_mtime))
        headers.set("X-Content-Type-Options", "nosniff")  # the type sent is the one meant
        size = stat.st_size
        offset, length = 0, size
        if method in ("GET", "HEAD") and self.code == 200:
            if _not_modified(header, etag, stat.st_mtime):
                self.code = 304
                for name in ("Content-Type", "Content-Encoding", "Last-Modified"):
                    headers.remove(name)
                return b""
            headers.set("Accept-Ranges", "bytes")
            range_header = header("Range")
            if range_header and method == "GET" and _if_range_holds(
                    header("If-Range"), etag, stat.st_mtime):
                ranges = parse_range(range_header, size)
                if ranges == []:
                    self.code = 416
                    headers.set("Content-Range", "bytes */%d" % size)
                    headers.set("Content-Type", "text/plain; charset=utf-8")
                    return b"Requested range not satisfiable.\n"
                if ranges is not None and len(ranges) == 1:
                    first, last = ranges[0]
                    self.code = 206
                    offset, length = first, last - first + 1
                    headers.set("Content-Range", "bytes %d-%d/%d" % (first, last, size))
                elif ranges:
                    self.code = 206
                    return ("parts",) + _byteranges(headers, ranges, size)
        return offset, length, method == "HEAD"

    def _send_region(self, fd, offset, length, head_only=False):
        """Send ``length`` bytes of ``fd`` from ``offset`` as the body, close ``fd`` and finish."""
        if head_only or not status_has_body(self.code):
            self.headers.set("Content-Length", str(length))
            os.close(fd)
            return self._send_whole(b"")
        self._send_parts(fd, ((b"", offset, length),), b"")

    def _send_parts(self, fd, parts, closing):
        """Send ``parts`` ((head, offset, length) of ``fd``) and ``closing``; close and finish."""
        total = sum(len(head) + length for head, _, length in parts) + len(closing)
        self.headers.set("Content-Length", str(total))
        conn = self._wire()
        if conn is None or total <= _SMALL_FILE:
            # Head and body in one send: cheaper than sendfile for small files.
            try:
                body = b"".join([head + _pread(fd, length, offset)
                                 for head, offset, length in parts] + [closing]) if conn else b""
            finally:
                os.close(fd)
            return self._send_whole(body)
        server = conn.server
        use_sendfile = HAS_SENDFILE and server.use_sendfile and not conn.tls
        blocksize = server.blocksize
        if conn.tls:
            # TLS cuts what it sends into records of its own: an MTU-sized
            # block (blocksize's purpose) only multiplies reads and sends.
            blocksize = max(blocksize, _TLS_BLOCK)
        last = len(parts) - 1
        handed_over = False  # to the last region, which closes it
        try:
            self._send_head(b"", False, file=True)
            for index, (head, offset, length) in enumerate(parts):
                conn.send_body(self, head)
                handed_over = index == last
                conn.send_file(self, _FileRegion(fd, offset, length, blocksize,
                                                 use_sendfile, owns_fd=handed_over))
            conn.send_body(self, closing)
        except BaseException:
            if not handed_over:
                os.close(fd)
            raise
        conn.end_response(self)

    def send_fd(self, fd, offset, length):
        """Send ``length`` bytes of ``fd`` at ``offset`` as the body, and finish; closes ``fd``."""
        if self._headers_sent or self._responded:
            os.close(fd)
            raise RuntimeError("send_fd() after the response was sent")
        self._responded = self._finished = True
        head_only = self.request is not None and self.request.method == "HEAD"
        self._on_reactor(self._send_region, fd, offset, length, head_only)

    def _send_whole(self, body):
        self._content = body
        self._done_now()

    def error(self, code, text=""):
        """Answer with ``code`` and the error page showing ``text`` (as is, if the handler
        set a Content-Type), and finish."""
        self.code = code
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if self.content_type is None:
            # One format for every error page, the server's own (400) included.
            self.headers.set("Content-Type", "text/html; charset=utf-8")
            text = _error_page(code, text.strip())
        self._content = text
        self.headers.set("X-Content-Type-Options", "nosniff")
        self.respond()
        self.done()

    def __repr__(self):
        return "<Response %s>" % self.status_line


class Error(_Answer):
    """What ``on_error`` receives: a network error (``op`` set) or an HTTP error to send."""

    def __init__(self, op=None, errnum=0, errstr="", code=500, message=None,
                 content=b"", headers=None, request=None, connection=None):
        self.op = op
        self.errnum = errnum
        self.errstr = errstr
        self.code = code
        self.message = message
        self.headers = headers if headers is not None else Headers()
        self.content = content
        self.request = request
        self.connection = connection

    errstring = property(lambda self: self.errstr)

    def is_error(self):
        return self.code >= 400

    def __repr__(self):
        if self.op:
            return "<Error %s [%s] %s>" % (self.op, self.errnum, self.errstr)
        return "<Error %s>" % self.status_line


# === 10. WebSocket ===
#
# A WebSocket route is a subclass of WebSocket in the handler table, and each
# connection to it gets an instance.  The instance answers the opening
# handshake (RFC 6455 §4.2) through the Response, then is the protocol the
# connection switches to (section 8): frames from WebSocketParser become its
# on_* hooks, and its close handshake, pings and limits run here.
#
#   state    what it means                                  next
#   OPEN     messages flow both ways                        CLOSING, CLOSED
#   CLOSING  our Close frame is out; the client's is        CLOSED
#            awaited for ws_close_timeout at most
#   CLOSED   on_close has run; the TCP close is under way   -
#
# The server closes TCP first (RFC 6455 §7.1.1), after the client's Close
# when it started the close handshake, at once when the client broke the
# protocol (with a half-close and a linger, so the Close frame is read).

_WS_OPEN, _WS_CLOSING, _WS_CLOSED = range(3)
# RFC 6455 §4.1: the key is 16 random bytes in base64.
_WEBSOCKET_KEY_RE = re.compile(r"[A-Za-z0-9+/]{21}[AQgw]==")


def _field_tokens(request, name, lower=True):
    """The comma-separated tokens of every ``name`` field of ``request``."""
    tokens = [token.strip() for value in request.headers.get_all(name)
              for token in value.split(",")]
    return [token.lower() for token in tokens] if lower else tokens


def _handshake_refusal(request, response):
    """(status, text) when ``request`` is no valid opening handshake (RFC 6455 §4.2.1)."""
    if request.method != "GET":
        response.headers["Allow"] = "GET"
        return 405, "A WebSocket handshake is a GET request.\n"
    if request.protocol != "HTTP/1.1":
        return 400, "A WebSocket handshake needs HTTP/1.1.\n"
    if ("websocket" not in _field_tokens(request, "Upgrade")
            or request.headers.get_all("Sec-WebSocket-Version") != ["13"]):
        # RFC 6455 §4.4 and RFC 9110 §15.5.22: say what would be understood.
        response.headers["Upgrade"] = "websocket"
        response.headers["Connection"] = "Upgrade"
        response.headers["Sec-WebSocket-Version"] = "13"
        return 426, "This resource speaks WebSocket, version 13.\n"
    if "upgrade" not in _field_tokens(request, "Connection"):
        return 400, "A WebSocket handshake needs Connection: Upgrade.\n"
    if request.head.has_body:
        return 400, "A WebSocket handshake has no body.\n"
    keys = request.headers.get_all("Sec-WebSocket-Key")
    if len(keys) != 1 or not _WEBSOCKET_KEY_RE.fullmatch(keys[0]):
        return 400, "Sec-WebSocket-Key must be 16 bytes in base64.\n"
    return None


class WebSocket:
    """A WebSocket endpoint: subclass it and put the class in the handler table (README).

    Each connection gets an instance.  Its hooks run on the reactor thread;
    ``send()``, ``ping()`` and ``close()`` may be called from any thread.
    """

    subprotocols = ()    # this route's; the first one the client offers is chosen
    compression = True   # permessage-deflate, when the client offers it
    # The pages whose scripts may connect ("https://example.com"), against
    # cross-site use of the visitor's cookies (RFC 6455 §10.2); None: any.
    # A client that sends no Origin is not a browser and is let through.
    origins = None

    request = None       # the upgrade Request
    connection = None    # its Connection info
    subprotocol = None   # the one chosen, or None
    close_code = None    # once closed: the code on_close was given
    close_reason = None
    _sockets = set()     # the open instances of each class (one set per subclass)
    _ws_conn = None
    _ws_state = _WS_CLOSED
    _ws_timer = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._sockets = set()

    # -- hooks for subclasses

    def on_handshake(self, response):
        """Before the 101 (``self.request`` is set): may set headers on ``response``, or
        refuse: return False (403), raise HTTPError, or answer ``response`` itself."""
        return True

    def on_open(self):
        """The connection is open: messages may be sent."""

    def on_message(self, message):
        """A whole message: str for text, bytes for binary."""

    def on_pong(self, data):
        """A pong arrived (to ``ping()``, or to the server's own keep-alive pings)."""

    def on_drain(self):
        """Queued output is back under ``output_low_water`` after ``send()`` returned False."""

    def on_close(self, code, reason):
        """The socket closed: the client's close code, the one the server failed the
        connection with (1002, 1007, 1009, 1011), or 1006 when it dropped without one."""

    # -- what the application calls, from any thread

    @classmethod
    def sockets(cls):
        """The open sockets of this class in this process (not of prefork siblings)."""
        return tuple(cls._sockets)

    @classmethod
    def broadcast(cls, message, exclude=None):
        """``send(message)`` to every open socket of this class but ``exclude``; to how many."""
        text = None
        if isinstance(message, str):
            message, text = message.encode("utf-8"), True  # once for all
        sent = 0
        for member in cls.sockets():
            if member is not exclude and not member.closed:
                member.send(message, text)
                sent += 1
        return sent

    @property
    def closed(self):
        return self._ws_state == _WS_CLOSED

    @property
    def output_pending(self):
        """Bytes queued for this socket and not yet taken by the kernel."""
        conn = self._ws_conn
        return conn.output_pending if conn is not None else 0

    def send(self, message, text=None):
        """Send a message: str as text, bytes as binary (as text with ``text=True``: it
        must be UTF-8).  False when the socket is not open, or when the queue is past
        ``output_high_water``: wait for ``on_drain`` (``wait_drain()`` in a thread)."""
        if isinstance(message, str):
            first, payload = 0x81, message.encode("utf-8")
        elif isinstance(message, (bytes, bytearray, memoryview)):
            first, payload = 0x81 if text else 0x82, bytes(message)
        else:
            raise TypeError("send() takes str or bytes, not %s" % type(message).__name__)
        conn = self._ws_conn
        if conn is None or self._ws_state != _WS_OPEN:
            return False
        ident = conn.reactor.thread_ident
        if ident is not None and ident != _get_ident():
            # Bytes handed to the reactor and not yet queued count too, or
            # a thread could pile up messages while send() said True.
            with self._ws_lock:
                self._ws_handed += len(payload)
                handed = self._ws_handed
            conn.reactor.call_soon_threadsafe(self._ws_send_handed, first, payload)
            return conn.output_pending + handed <= conn.limits.output_high_water
        return self._ws_send_now(first, payload)

    def wait_drain(self, timeout=None):
        """In a thread other than the reactor's: wait until the queue is down to
        ``output_low_water``.  False on timeout, or when the socket is closed."""
        conn = self._ws_conn
        if conn is None or self._ws_state == _WS_CLOSED:
            return False
        if conn.reactor.in_reactor_thread():
            raise RuntimeError("wait_drain() would block the reactor: use on_drain")
        drained = threading.Event()
        # After the sends this thread handed over: they are queued first.
        conn.reactor.call_soon_threadsafe(conn.wait_drain, drained.set)
        return drained.wait(timeout) and self._ws_state != _WS_CLOSED

    def ping(self, data=b""):
        """Send a ping (``data``: 125 bytes at most); ``on_pong`` hears the answer."""
        data = bytes(data)
        if len(data) > 125:
            raise ValueError("a ping carries 125 bytes at most")
        self._ws_on_reactor(self._ws_control, 0x89, data)

    def close(self, code=1000, reason=""):
        """Start the close handshake; ``on_close`` follows when the client answers."""
        if not close_code_allowed(code):
            raise ValueError("close code %r may not be sent" % (code,))
        data = reason.encode("utf-8")
        if len(data) > 123:
            raise ValueError("a close reason is 123 bytes at most")
        self._ws_on_reactor(self._ws_close_now, code, data)

    # -- the opening handshake: the route calls this as its handler

    def upgrade(self, request, response):
        """Answer ``request``: 101 and this socket, or the reason it cannot be one."""
        refusal = _handshake_refusal(request, response)
        if refusal is not None:
            return response.error(*refusal)
        origin = request.header("Origin")
        if self.origins is not None and origin is not None and origin.lower() not in [
                allowed.lower() for allowed in self.origins]:
            return response.error(403, "This origin may not connect.\n")
        offered = _field_tokens(request, "Sec-WebSocket-Protocol", lower=False)
        self.subprotocol = next((name for name in offered if name in self.subprotocols), None)
        self.request = request
        self.connection = request.connection
        try:
            if self.on_handshake(response) is False:
                return response.error(403, "Forbidden.\n")
        except HTTPError as exc:
            return response.error(exc.status, exc.message)
        if response.finished or response.headers_sent:
            return  # on_handshake answered it
        headers = response.headers
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
        headers["Sec-WebSocket-Accept"] = websocket_accept(request.header("Sec-WebSocket-Key"))
        if self.subprotocol is not None:
            headers["Sec-WebSocket-Protocol"] = self.subprotocol
        self._ws_deflate = None
        offers = ", ".join(request.headers.get_all("Sec-WebSocket-Extensions"))
        if offers and self.compression:
            self._ws_deflate, accepted = PerMessageDeflate.negotiate(offers)
            if accepted is not None:
                headers["Sec-WebSocket-Extensions"] = accepted
        response.upgrade(self)

    # -- the protocol the connection switched to (section 8)

    def connection_made(self, conn):
        self._ws_conn = conn
        limits = conn.limits
        self._ws_parser = WebSocketParser(limits.ws_max_message, self._ws_deflate)
        self._ws_state = _WS_OPEN
        self._ws_timer = None
        self._ws_draining = self._ws_paused = False
        self._ws_pong_due = self._ws_close_due = None
        self._ws_lock = threading.Lock()   # for _ws_handed: bytes threads handed over
        self._ws_handed = 0
        now = time.monotonic()
        self._ws_active = now
        self._ws_ping_at = now + limits.ws_ping_interval
        self._sockets.add(self)
        self._ws_wake_at(self._ws_next_check())
        self._ws_call(self.on_open)

    def data_received(self, data):
        parser = self._ws_parser
        parser.feed(data)
        while self._ws_state != _WS_CLOSED:
            try:
                event = parser.next_event()
            except WebSocketError as exc:
                self._ws_fail(exc.code, exc.reason)
                return
            if event is None:
                break
            opcode, payload = event
            if self._ws_state != _WS_OPEN:
                if opcode == _WS_CLOSE:  # the answer to ours
                    self._ws_closed(*payload)
                    self._ws_conn.close()
                    return
                continue  # what the client sent before it saw our Close
            if opcode <= _WS_BINARY:
                self._ws_active = time.monotonic()
                self._ws_call(self.on_message, payload)
            elif opcode == _WS_PING:
                self._ws_write(0x8A, payload)
            elif opcode == _WS_PONG:
                self._ws_pong_due = None
                self._ws_call(self.on_pong, payload)
            else:
                code, reason = payload
                # on_close first, so that it has run when the client reads
                # the echo of its code (RFC 6455 §5.5.1); then close TCP.
                self._ws_closed(code, reason)
                self._ws_write(0x88, b"" if code == 1005 else code.to_bytes(2, "big"))
                self._ws_conn.close()
                return
        conn = self._ws_conn
        if self._ws_state == _WS_OPEN and conn.output_pending > conn.limits.output_high_water:
            # The client sends faster than it reads what it causes: stop
            # reading until our output drains.
            conn.pause_reading()
            self._ws_paused = True
            self._ws_wait_drain()

    def eof_received(self):
        self._ws_closed(1006, "")
        return False

    def connection_lost(self, exc):
        self._ws_closed(1006, "")

    def server_shutdown(self):
        self._ws_close_now(1001, b"server shutting down")

    # -- inside

    def _ws_on_reactor(self, method, *args):
        conn = self._ws_conn
        if conn is None:
            return
        if conn.reactor.in_reactor_thread():
            method(*args)
        else:
            conn.reactor.call_soon_threadsafe(method, *args)

    def _ws_call(self, hook, *args):
        """Run an application hook; one that raises fails the connection (1011)."""
        try:
            hook(*args)
        except Exception:
            _log.exception("%s: %s of %r raised", self.connection.ID, hook.__name__, self)
            self._ws_fail(1011, "the application failed")

    def _ws_write(self, first, payload):
        self._ws_conn.write(frame_header(first, len(payload)) + payload)

    def _ws_send_now(self, first, payload):
        if self._ws_state != _WS_OPEN:
            return False
        conn = self._ws_conn
        if conn.output_pending > conn.limits.ws_max_queue:
            # Not onto a full queue (a message larger than it may still go).
            _log.warning("%s: WebSocket client reads too slowly (%d bytes queued); dropped",
                         self.connection.ID, conn.output_pending)
            conn.abort()
            return False
        deflate = self._ws_deflate
        if deflate is not None and deflate.MIN_SIZE <= len(payload) <= deflate.MAX_SIZE:
            payload = deflate.compress(payload)
            first |= 0x40
        if len(payload) < 16384:
            conn.write(frame_header(first, len(payload)) + payload)
        else:  # not copied
            conn.write(frame_header(first, len(payload)))
            conn.write(payload)
        self._ws_active = time.monotonic()
        if conn.output_pending <= conn.limits.output_high_water:
            return True
        self._ws_wait_drain()
        return False

    def _ws_send_handed(self, first, payload):
        """A thread's send(), on the reactor."""
        with self._ws_lock:
            self._ws_handed -= len(payload)
        self._ws_send_now(first, payload)

    def _ws_wait_drain(self):
        """Output is past the high-water mark: on_drain (and reading) when it drains."""
        if not self._ws_draining:
            self._ws_draining = True
            self._ws_conn.wait_drain(self._ws_drained)

    def _ws_drained(self):
        self._ws_draining = False
        if self._ws_state == _WS_CLOSED:
            return
        if self._ws_paused:
            self._ws_paused = False
            self._ws_conn.resume_reading()
        if self._ws_state == _WS_OPEN:
            self._ws_call(self.on_drain)

    def _ws_control(self, first, data):
        if self._ws_state == _WS_OPEN:
            self._ws_write(first, data)

    def _ws_close_now(self, code, data):
        if self._ws_state != _WS_OPEN:
            return
        self._ws_write(0x88, code.to_bytes(2, "big") + data)
        self._ws_state = _WS_CLOSING
        self._ws_pong_due = None  # the close timeout rules now
        self._ws_close_due = time.monotonic() + self._ws_conn.limits.ws_close_timeout
        self._ws_wake_at(self._ws_close_due)
        if self._ws_paused:  # the client's Close must be read
            self._ws_paused = False
            self._ws_conn.resume_reading()

    def _ws_fail(self, code, reason):
        """The client broke the protocol (or the application failed): Close, then TCP."""
        _log.debug("%s: WebSocket failed with %d: %s", self.connection.ID, code, reason)
        was_open = self._ws_state == _WS_OPEN
        self._ws_closed(code, reason)  # before the client can read the Close
        if was_open:
            self._ws_write(0x88, code.to_bytes(2, "big"))
        self._ws_conn.close(linger=True)

    def _ws_closed(self, code, reason):
        """The socket is closed for the application: on_close, once."""
        if self.close_code is not None:
            return
        self._ws_state = _WS_CLOSED
        self.close_code, self.close_reason = code, reason
        self._ws_parser = self._ws_deflate = None  # what a kept instance need not hold
        if self._ws_timer is not None:
            self._ws_timer.cancel()
            self._ws_timer = None
        self._sockets.discard(self)
        try:
            self.on_close(code, reason)
        except Exception:
            _log.exception("%s: on_close of %r raised", self.connection.ID, self)

    # -- deadlines: close handshake, pong, idle, next ping; one timer

    def _ws_next_check(self):
        limits = self._ws_conn.limits
        due = [when for when in (self._ws_close_due, self._ws_pong_due) if when is not None]
        if self._ws_close_due is None:
            if limits.ws_ping_interval:
                due.append(self._ws_ping_at)
            if limits.ws_idle_timeout:
                due.append(self._ws_active + limits.ws_idle_timeout)
        return min(due) if due else None

    def _ws_wake_at(self, when):
        if when is None:
            return
        timer = self._ws_timer
        if timer is not None:
            if timer.deadline <= when:
                return
            timer.cancel()
        self._ws_timer = self._ws_conn.reactor.call_at(when, self._ws_on_timer)

    def _ws_on_timer(self):
        self._ws_timer = None
        if self._ws_state == _WS_CLOSED:
            return
        conn = self._ws_conn
        limits = conn.limits
        now = time.monotonic()
        if self._ws_close_due is not None and now >= self._ws_close_due:
            _log.debug("%s: no Close from the WebSocket client in time", self.connection.ID)
            conn.abort()
            return
        if self._ws_pong_due is not None and now >= self._ws_pong_due:
            _log.info("%s: WebSocket client sent no pong in %g s; dropped",
                      self.connection.ID, limits.ws_ping_timeout)
            conn.abort()
            return
        if self._ws_state == _WS_OPEN:
            if limits.ws_idle_timeout and now >= self._ws_active + limits.ws_idle_timeout:
                self._ws_close_now(1001, b"idle")
                return
            if limits.ws_ping_interval and now >= self._ws_ping_at:
                self._ws_write(0x89, b"")
                self._ws_ping_at = now + limits.ws_ping_interval
                if limits.ws_ping_timeout and self._ws_pong_due is None:
                    self._ws_pong_due = now + limits.ws_ping_timeout
        self._ws_wake_at(self._ws_next_check())

    def __repr__(self):
        return "<%s %s>" % (type(self).__name__, ("OPEN", "CLOSING", "CLOSED")[self._ws_state])


def _is_websocket_class(spec):
    """A WebSocket subclass, or a functools.partial of one?"""
    spec = getattr(spec, "func", spec) if isinstance(spec, functools.partial) else spec
    return isinstance(spec, type) and issubclass(spec, WebSocket)


class _WebSocketRoute:
    """A WebSocket class in the handler table: each request gets a new instance,
    made with ``args`` (a "module:Class?a=b" spec's query)."""

    __slots__ = ("factory", "args")

    def __init__(self, factory, args=()):
        import inspect  # deferred: import time
        self.factory = factory
        self.args = args
        try:  # fail now, not at the first request
            if isinstance(args, dict):
                inspect.signature(factory).bind(**args)
            else:
                inspect.signature(factory).bind(*args)
        except TypeError as exc:
            raise TypeError("cannot make %r sockets with %r: %s" % (factory, args, exc)) from None
        except ValueError:
            pass  # no signature to check

    def __call__(self, request, response):
        args = self.args
        endpoint = self.factory(**args) if isinstance(args, dict) else self.factory(*args)
        endpoint.upgrade(request, response)

    def __repr__(self):
        return "<WebSocket route %r>" % (self.factory,)


# === 11. Routing ===

SPECIAL_HANDLERS = ("on_connect", "on_disconnect", "pre_request", "post_request",
                    "stream_request", "on_error")


class _BoundSpec:
    """A handler named by a string spec, called with its arguments first."""

    __slots__ = ("spec", "func", "args")

    def __init__(self, spec, func, args):
        self.spec = spec
        self.func = func
        self.args = args

    def __call__(self, *params):
        return self.func(self.args, *params)

    def __repr__(self):
        return "<handler %s>" % self.spec


def _import_object(spec):
    """``"package.module:name"`` -> the object (``application`` when no name is given)."""
    import importlib  # deferred: import time
    module_name, colon, attribute = spec.partition(":")
    if not colon:
        attribute = "application"
    obj = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_handler(spec):
    """A callable for a handler: itself, a WebSocket class's route, or a
    ``"pkg.mod:func?a=b"`` string."""
    if _is_websocket_class(spec):
        return _WebSocketRoute(spec)
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise TypeError("handler must be a callable or 'module:function', not %r" % (spec,))
    from urllib.parse import parse_qsl, unquote_plus  # deferred: import time
    target, _, query = spec.partition("?")
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError("handler spec %r is not 'module:function'" % spec)
    func = _import_object(target)
    if not callable(func):
        raise TypeError("handler spec %r does not name a callable" % spec)
    if not query:
        return _WebSocketRoute(func) if _is_websocket_class(func) else func
    if "=" in query:
        args = dict(parse_qsl(query, keep_blank_values=True))
    else:
        args = [unquote_plus(part) for part in query.split("+")]
    if _is_websocket_class(func):
        return _WebSocketRoute(func, args)
    return _BoundSpec(spec, func, args)


def _handler_pairs(handlers):
    """(regex, spec) pairs from a list of pairs, a dict, a callable or a spec."""
    if handlers is None:
        return []
    if callable(handlers) or isinstance(handlers, str):
        return [("", handlers)]
    if isinstance(handlers, dict):
        return list(handlers.items())
    items = list(handlers)
    if items and not isinstance(items[0], (tuple, list)):
        # A flat list in the Perl style: [regex, handler, regex, handler, ...]
        if len(items) % 2:
            raise ValueError("a flat handler list needs regex/handler pairs")
        items = list(zip(items[::2], items[1::2]))
    return [(regex, spec) for regex, spec in items]


class Router:
    """The ordered table of unanchored regexes tried against the path, and the specials."""

    def __init__(self, handlers=None):
        self.set(handlers)

    def set(self, handlers):
        """Replace every handler, specials included."""
        self.order = []       # regexes in matching order
        self.specs = {}       # regex or special name -> what the user gave
        self.specials = {}    # special name -> callable
        self._handlers = {}   # regex -> callable
        self.add(handlers)

    def _rebuild(self):
        # ((compiled regex, callable), ...): what requests use
        self.table = tuple((re.compile(regex), self._handlers[regex]) for regex in self.order)

    def find(self, path, table=None):
        """The handler for ``path`` (in ``table``, a snapshot, if given), or None."""
        for pattern, handler in self.table if table is None else table:
            if pattern.search(path):
                return handler
        return None

    def find_regex(self, path):
        """The regex that wins for ``path``, or None."""
        return next((regex for regex in self.order if re.search(regex, path)), None)

    def get(self):
        """A dict of regex (or special name) -> handler as given."""
        return dict(self.specs)

    def add(self, handlers):
        """Add handlers; a regex that exists already moves to the end."""
        resolved = []
        for regex, spec in _handler_pairs(handlers):
            if not isinstance(regex, str):
                raise TypeError("handler regex must be a str, not %r" % (regex,))
            handler = resolve_handler(spec)
            if regex not in SPECIAL_HANDLERS:
                re.compile(regex)  # fail here, not on the first request
            resolved.append((regex, spec, handler))
        for regex, spec, handler in resolved:
            self.specs[regex] = spec
            if regex in SPECIAL_HANDLERS:
                self.specials[regex] = handler
                continue
            if regex in self._handlers:
                self.order.remove(regex)
            self.order.append(regex)
            self._handlers[regex] = handler
        self._rebuild()

    def remove(self, regexes):
        """Remove by exact regex: one str, a list of them, or a dict's keys."""
        if isinstance(regexes, str):
            regexes = [regexes]
        for regex in list(regexes):
            self.specs.pop(regex, None)
            if regex in SPECIAL_HANDLERS:
                self.specials.pop(regex, None)
            elif regex in self._handlers:
                del self._handlers[regex]
                self.order.remove(regex)
        self._rebuild()


# === 12. Static files ===

def _quality(header, name, wildcards=("*",)):
    """RFC 9110 §12.4.2: the weight an Accept or Accept-Encoding field gives ``name``
    (0.0 if none); its own entry beats a wildcard."""
    wildcard = 0.0
    for item in header.split(","):
        item_name, _, params = item.partition(";")
        item_name = item_name.strip().lower()
        if item_name != name and item_name not in wildcards:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if item_name == name:
            return quality
        wildcard = quality
    return wildcard


def _accepts_encoding(header, coding):
    """RFC 9110 §12.5.3: does Accept-Encoding allow ``coding``?  Its own name beats ``*``."""
    return _quality(header, coding) > 0


# Precompressed siblings, in order of preference: (coding, file suffix).
_PRECOMPRESSED = (("br", ".br"), ("gzip", ".gz"))


# Request fields that make a file answer depend on more than the file.
_CONDITIONAL_FIELDS = frozenset(("range", "if-range", "if-none-match", "if-modified-since",
                                 "if-match", "if-unmodified-since"))


class _CachedFile:
    """A small file's bytes and response fields, and the identity they belong to."""

    __slots__ = ("identity", "headers", "data")

    def __init__(self, stat, content_type, data):
        # ctime too: a rewrite that puts the old mtime back still moves it.
        self.identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        self.headers = Headers((("Content-Type", content_type), ("ETag", make_etag(stat)),
                                ("Last-Modified", _last_modified(stat.st_mtime)),
                                ("Accept-Ranges", "bytes"), ("Content-Length", str(len(data))),
                                ("X-Content-Type-Options", "nosniff")))
        self.data = data


def _display_path(path):
    from urllib.parse import unquote  # deferred: import time
    return unquote(path, errors="replace")


# -- directory listings

# Entries scanned, or rows rendered, per reactor turn.  A 10,000-entry
# listing is some 100 ms of work; in slices of about a millisecond, other
# requests are answered between them instead of after the whole listing.
_LISTING_SLICE = 100

# ?sort= values (caddy's) -> the sort key of an entry (name, is_dir, size, mtime).
_LISTING_ORDERS = {
    "name": lambda entry: (entry[0].lower(), entry[0]),
    "size": lambda entry: (entry[2], entry[0].lower()),
    "time": lambda entry: (entry[3], entry[0].lower()),
}
_LISTING_COLUMNS = (("name", "Name"), ("size", "Size"), ("time", "Modified (UTC)"))

# Light or dark as the system is; no script, no external resource.
_LISTING_STYLE = (
    ":root{color-scheme:light dark;--bg:#fff;--fg:#222;--link:#0645ad;--row:#f3f3f3}"
    "@media (prefers-color-scheme:dark){:root{--bg:#1c1c1c;--fg:#ddd;--link:#8cb4ff;"
    "--row:#262626}}"
    "body{font:15px/1.5 system-ui,sans-serif;background:var(--bg);color:var(--fg);"
    "max-width:64em;margin:1em auto;padding:0 1em}"
    "a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}"
    "h1{font-size:1.3em;word-break:break-all}table{border-collapse:collapse;width:100%}"
    "th,td{padding:.2em .5em;text-align:left;white-space:nowrap}"
    "td:first-child{white-space:normal;word-break:break-all;width:100%}"
    "th+th,td+td{text-align:right}tr:nth-child(even){background:var(--row)}")


def _human_size(size):
    """A byte count as a person reads it: 512 B, 1.2 KiB, 3.4 MiB."""
    if size < 1024:
        return "%d B" % size
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024.0
        if size < 1023.95 or unit == "PiB":
            return "%.1f %s" % (size, unit)


def _listing_wants_json(accept):
    """Does an Accept field prefer application/json to HTML (a script, not a browser)?"""
    if not accept:
        return False
    json_quality = _quality(accept, "application/json", ("*/*", "application/*"))
    return json_quality > 0 and json_quality > _quality(accept, "text/html", ("*/*", "text/*"))


class _Listing:
    """One directory listing, built a slice per reactor turn and sent whole.

    Scanning, stat()ing and rendering 10,000 entries in one go held every
    other request up for the whole of it; here each turn does one slice, and
    the gzip of the page is made slice by slice too.  The body is sent with
    a Content-Length once complete.
    """

    def __init__(self, static, req, resp, scan, extra_html=""):
        self.static = static
        self.req = req
        self.resp = resp
        self.extra_html = extra_html
        query = req.query_form() if req.query else {}
        self.sort = query.get("sort") if query.get("sort") in _LISTING_ORDERS else "name"
        self.descending = query.get("order") == "desc"
        self.as_json = _listing_wants_json(req.header("Accept"))
        accept_encoding = req.header("Accept-Encoding")
        self.compressor = None
        if accept_encoding and _accepts_encoding(accept_encoding, "gzip"):
            import zlib  # deferred: import time
            self.compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip framing
        reactor = resp.reactor
        # On a worker thread (a threaded StaticFiles), blocking is allowed: one go.
        self.reactor = reactor if reactor is not None and reactor.in_reactor_thread() else None
        self.steps = self._build(scan)

    def start(self):
        if self.reactor is None:
            for _ in self.steps:
                pass
        else:
            self._step()

    def _step(self):
        if self.resp.client_gone:
            self.steps.close()  # the client left: stop, and close the scan
            return
        try:
            next(self.steps)
        except StopIteration:
            return
        except Exception:
            # Past the handler's return, nobody else would answer the client.
            _log.exception("listing %r failed", self.req.path)
            self.resp.fail()
            return
        self.reactor.call_soon(self._step)

    def _build(self, scan):
        """Scan, sort, render: a generator that pauses after each slice."""
        # Sorting 10,000 entries at once takes 5 to 10 ms; ten listings doing
        # it in the same turn held a request up.  Each slice is sorted as it
        # is scanned, and the sorted runs are merged while rendering.
        key = _LISTING_ORDERS[self.sort]
        directory_runs, file_runs = [], []
        found = []
        with scan:
            for count, entry in enumerate(scan, 1):
                listed = self.static.listed_entry(entry)
                if listed is not None:
                    found.append(listed)
                if count % _LISTING_SLICE == 0:
                    self._add_runs(found, directory_runs, file_runs)
                    found = []
                    yield
        self._add_runs(found, directory_runs, file_runs)
        # Directories first, in either order.
        ordered = itertools.chain(
            heapq.merge(*directory_runs, key=key, reverse=self.descending),
            heapq.merge(*file_runs, key=key, reverse=self.descending))
        render = self._json_items if self.as_json else self._html_rows
        head, tail = ("[", "") if self.as_json else self._html_frame()
        parts = [self._encode(head)]
        rendered = 0
        while True:
            entries = list(itertools.islice(ordered, _LISTING_SLICE))
            if not entries:
                break
            parts.append(self._encode(render(entries, rendered)))
            rendered += len(entries)
            yield
        if self.as_json:
            tail = "\n]\n" if rendered else "]\n"
        parts.append(self._encode(tail))
        if self.compressor is not None:
            parts.append(self.compressor.flush())
        self._send(b"".join(parts))

    def _add_runs(self, found, directory_runs, file_runs):
        """Sort a slice's entries into a run of directories and one of files."""
        key = _LISTING_ORDERS[self.sort]
        for runs, is_directory in ((directory_runs, True), (file_runs, False)):
            run = [entry for entry in found if entry[1] is is_directory]
            if run:
                run.sort(key=key, reverse=self.descending)
                runs.append(run)

    def _encode(self, text):
        data = text.encode("utf-8")
        return self.compressor.compress(data) if self.compressor is not None else data

    def _send(self, body):
        resp = self.resp
        headers = resp.headers
        headers.set("Content-Type", "application/json; charset=utf-8" if self.as_json
                    else "text/html; charset=utf-8")
        headers.set("X-Content-Type-Options", "nosniff")
        # The answer depends on both, whatever this client sent (caches must know).
        headers.set("Vary", "Accept, Accept-Encoding")
        if self.compressor is not None:
            headers.set("Content-Encoding", "gzip")
        resp.content = body
        resp.done()

    @staticmethod
    def _entry_texts(name, is_directory):
        """(href, name as shown) of an entry; bytes not UTF-8 are kept in the href."""
        from urllib.parse import quote  # deferred: import time
        href = quote(name, errors="surrogateescape") + ("/" if is_directory else "")
        return href, name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

    def _html_frame(self):
        title = "Index of %s" % _html_escape(_display_path(self.req.path))
        headers = []
        for key, label in _LISTING_COLUMNS:
            # A column's link sorts by it; on the sorted column, the other way round.
            # nofollow: crawlers would fetch every listing once per order.
            order = "desc" if key == self.sort and not self.descending else "asc"
            mark = (" \u2193" if self.descending else " \u2191") if key == self.sort else ""
            headers.append('<th><a rel="nofollow" href="?sort=%s&amp;order=%s">%s</a>%s</th>'
                           % (key, order, label, mark))
        parent = ""
        if self.req.path != (self.static.prefix or "") + "/":
            parent = '<tr><td><a href="../">../</a></td><td></td><td></td></tr>\n'
        head = (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>%s</title>\n<style>%s</style></head>\n<body><h1>%s</h1>\n%s"
            "<table>\n<tr>%s</tr>\n%s" % (title, _LISTING_STYLE, title, self.extra_html,
                                         "".join(headers), parent))
        return head, "</table></body></html>\n"

    def _html_rows(self, entries, start):
        rows = []
        for name, is_directory, size, mtime in entries:
            href, shown = self._entry_texts(name, is_directory)
            size_cell = "<td>-</td>" if is_directory else '<td title="%d bytes">%s</td>' % (
                size, _human_size(size))
            rows.append('<tr><td><a href="%s">%s%s</a></td>%s<td>%s</td></tr>\n' % (
                href, _html_escape(shown), "/" if is_directory else "", size_cell,
                time.strftime("%Y-%m-%d %H:%M", time.gmtime(mtime))))
        return "".join(rows)

    def _json_items(self, entries, start):
        import json  # deferred: import time
        items = []
        for name, is_directory, size, mtime in entries:
            href, shown = self._entry_texts(name, is_directory)
            items.append(json.dumps({
                "name": shown, "size": None if is_directory else size,
                "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime)),
                "is_dir": is_directory, "url": href}, ensure_ascii=False))
        return ("\n" if start == 0 else ",\n") + ",\n".join(items)


# A dotfile in a decoded URL path; a leading /.well-known is public (RFC 8615).
_DOTFILE_RE = re.compile(r"(?!\A/\.well-known(?:/|\Z))/\.")
# An upload in progress under a hidden name (a _PartFile where files cannot
# be made nameless, or for the moment before it replaces a file): never
# served, listed, replaced or deleted, whatever the dotfiles setting, or one
# client could read or swap another's upload before it is put in place.
_PART_FILE_RE = re.compile(r"/\.upload-[0-9a-f]{16}\.part(?:/|\Z)", re.IGNORECASE)


_user_ids = None  # (effective uid, every group id) of the process, on first use


def _may_open(stat, is_directory):
    """May this process read the file (list and enter the directory), by its mode bits?"""
    # The permission bits without a system call an entry: ACLs are not seen
    # (a file they open to the server stays out of the listing).
    global _user_ids
    if _user_ids is None:
        _user_ids = (os.geteuid(), frozenset(os.getgroups()) | {os.getegid()}) \
            if hasattr(os, "geteuid") else (0, frozenset())  # Windows: no such bits
    uid, groups = _user_ids
    if uid == 0:
        return True
    mode = stat.st_mode
    needed = 0o5 if is_directory else 0o4
    if stat.st_uid == uid:
        return (mode >> 6) & needed == needed
    if stat.st_gid in groups:
        return (mode >> 3) & needed == needed
    return mode & needed == needed


def _any_match(head):
    """True when the request has ``If-None-Match: *`` (in a list of its own, too)."""
    value = head.header("If-None-Match")
    return value is not None and "*" in [tag.strip() for tag in value.split(",")]


# /proc, through which a nameless file is given a name (linkat of
# self/fd/N, following it): opened once; -1 where there is none.
_proc_fd = None


def _open_nameless(directory):
    """A new file in ``directory`` that has no name yet (O_TMPFILE), or None where it cannot be."""
    global _proc_fd
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    if _proc_fd is None:
        try:
            proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            proc = -1
        else:
            try:
                os.stat("self/fd", dir_fd=proc)  # an empty /proc (a chroot) has none
            except OSError:
                os.close(proc)
                proc = -1
        _proc_fd = proc
    if _proc_fd < 0:
        return None
    try:
        # 0o666 as the umask allows: the mode of any file the process makes.
        return os.open(directory, flag | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        # A file system or a kernel without it (the latter sees a directory
        # opened for writing); anything else (EACCES, ENOSPC) is the caller's.
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


class _PartFile(io.FileIO):
    """A file being written in its target's directory, given its name when complete.

    On Linux it has no name until then (O_TMPFILE): a server killed during
    an upload leaves nothing behind.  Elsewhere it is a hidden file with a
    name no client can guess, removed on close unless it was put in place.
    """

    def __init__(self, directory):
        self.kept = True  # nothing to remove if the open below fails
        self.directory = directory
        self.path = None  # while it has no name
        fd = _open_nameless(directory)
        if fd is None:
            self.path = self._hidden_name()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_CLOEXEC", 0), 0o666)
        super().__init__(fd, "r+")
        self.kept = False

    def _hidden_name(self):
        import secrets  # deferred: import time
        return os.path.join(self.directory, ".upload-%s.part" % secrets.token_hex(8))

    def link(self, target):
        """Give the file the name ``target`` too; FileExistsError if it is taken."""
        if self.path is None:
            # A dir_fd makes os.link use linkat, which alone follows the link.
            os.link("self/fd/%d" % self.fileno(), target, src_dir_fd=_proc_fd,
                    follow_symlinks=True)
        else:
            os.link(self.path, target)

    def replace(self, target):
        """Rename the file to ``target``, over what is there (a symlink, never its target)."""
        if self.path is None:
            # A name is needed to rename from: a hidden one, for a moment.
            path = self._hidden_name()
            self.link(path)
            self.path = path
        os.replace(self.path, target)
        self.kept = True

    def write(self, data):
        """Write all of ``data``: a nearly full disk takes part of a raw
        write and says so only in its count, and the rest must not be lost."""
        view = memoryview(data)
        while view:
            view = view[super().write(view):]
        return len(data)

    def sync(self):
        """Flush to the disk: a rename must not outlive the data it names."""
        os.fsync(self.fileno())

    def close(self):
        try:
            if not self.closed and not self.kept and self.path is not None:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
        finally:
            super().close()


def _write_failure(exc, path):
    """(status, text) for an OSError met while storing an upload; None for anything else."""
    if not isinstance(exc, OSError):
        return None
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        # The server's own user may not write there: the operator's choice.
        return 403, "Permission denied: %s\n" % _quote_path(path)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return 507, "No space left to store %s\n" % _quote_path(path)  # RFC 4918 §11.5
    return None


class StaticFiles:
    """A handler serving the files under ``root``, and nothing outside it."""

    def __init__(self, root, index="index.html", listing=True, prefix="",
                 cache_size=4 * 2**20, dotfiles="hide", upload=False, replace=True,
                 delete=False, upload_threads=4):
        if dotfiles not in ("hide", "allow"):
            raise ValueError("dotfiles must be 'hide' or 'allow', not %r" % (dotfiles,))
        self.root = os.path.realpath(root)
        self.index = index
        self.listing = listing
        self.dotfiles = dotfiles  # .git, .env: private unless "allow"
        self.prefix = prefix.rstrip("/")
        self._siblings = _BoundedCache(4096)  # file path -> (second, siblings)
        # Small files' bytes and headers, kept while their inode, size and
        # mtime stay the same (checked on every request): a plain GET of a
        # cached file costs no open, read or close.  ``cache_size`` bounds
        # the bytes held; 0 turns the cache off.
        self.cache_size = cache_size
        self._cache = {}  # file path -> _CachedFile
        self._cached_bytes = 0
        # Writing, off unless asked for: ``upload`` takes PUT and POST
        # (multipart/form-data), ``replace=False`` keeps existing files
        # (409, or 412 for If-None-Match: *), ``delete`` takes DELETE.  The
        # size of what may be written is Limits.max_body.
        self.upload = upload
        self.replace = replace
        self.delete = delete
        self._write_methods = frozenset(("PUT", "POST") if upload else ()) | frozenset(
            ("DELETE",) if delete else ())
        self._allow = ", ".join(["GET", "HEAD"] + sorted(self._write_methods))
        self.upload_threads = upload_threads
        self._workers = None  # made on the first write
        self._workers_lock = threading.Lock()

    def __call__(self, req, resp):
        writing = False
        if req.method not in ("GET", "HEAD"):
            if req.method not in self._write_methods:
                resp.headers.set("Allow", self._allow)
                return resp.error(405, "Method %s not allowed.\n" % req.method)
            writing = True
        path = self._local_path(req.path)
        if path is None:
            return resp.error(404, "No such file or directory %s\n" % _quote_path(req.path))
        if writing:
            return self._write_request(req, resp, path)
        found = _resolve_under(self.root, path)
        if found is None:
            return resp.error(403, "Forbidden path %s\n" % _quote_path(req.path))
        fs_path, stat = found
        is_directory = stat is not None and S_ISDIR(stat.st_mode)
        # No file at /file/ (its links would resolve below it), no hidden dotfile ("/." first).
        if not is_directory and req.path.endswith("/") or (
                "/." in path or "%" in path) and self._hidden(path):
            return resp.error(404, "No such file or directory %s" % _quote_path(req.path))
        if not is_directory:
            return self._send_file(req, resp, fs_path, stat)
        if not req.path.endswith("/"):
            # Never //name/, which a browser takes for another host (CVE-2021-28861).
            location = "/" + _quote_path(req.path).lstrip("/") + "/"
            if req.query:
                location += "?" + req.query
            resp.headers.set("Location", location)
            return resp.error(301, "Moved to %s\n" % location)
        if self.index:
            index = os.path.join(fs_path, self.index)
            if os.path.isfile(index) and self._inside(index):
                return self._send_file(req, resp, index)
        if not self.listing:
            return resp.error(403, "Directory listing is off.\n")
        try:
            scan = os.scandir(fs_path)
        except OSError:
            return resp.error(403, "Cannot list %s\n" % _quote_path(req.path))
        _Listing(self, req, resp, scan, self._listing_extra(req, fs_path)).start()

    def _local_path(self, path):
        """The URL path below ``prefix`` ("/" for the prefix itself); None if not under it."""
        if not self.prefix:
            return path
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            return None
        return path[len(self.prefix):] or "/"

    def _listing_extra(self, req, fs_path):
        """HTML shown above a listing's table: the upload form, when uploads are on."""
        if not self.upload:
            return ""
        # A plain form (no script): POST multipart/form-data to this directory.
        return ('<form method="post" enctype="multipart/form-data">'
                '<input type="file" name="file" multiple required> '
                '<button>Upload</button></form>\n')

    def _send_file(self, req, resp, fs_path, stat=None):
        siblings = self._precompressed(fs_path)
        if siblings:
            # The answer depends on Accept-Encoding, whatever this client sent.
            resp.headers.set("Vary", "Accept-Encoding")
            accept = req.header("Accept-Encoding")
            if accept:
                for coding, sibling in siblings:
                    if _accepts_encoding(accept, coding) and self._inside(sibling):
                        resp.headers.set("Content-Encoding", coding)
                        return resp.sendfile(sibling, guess_type(fs_path))
        if (stat is not None and self.cache_size and req.method == "GET"
                and resp.code == 200 and S_ISREG(stat.st_mode)
                and not req.headers.has_any(_CONDITIONAL_FIELDS)):
            cached = self._cached(fs_path, stat)
            if cached is not None:
                headers = resp.headers
                if not headers:  # the usual case, and the fast one (bench "static1k")
                    resp.headers = cached.headers.copy()
                for name, value in cached.headers.items() if headers else ():
                    if name != "Content-Type" or "Content-Type" not in headers:
                        headers.set(name, value)  # the handler's Content-Type wins
                resp.content = cached.data
                return resp.done()
        resp.sendfile(fs_path)

    def _cached(self, fs_path, stat):
        """The cache entry for a small file as ``stat`` describes it, or None."""
        identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        entry = self._cache.get(fs_path)
        if entry is not None:
            if entry.identity == identity:
                return entry
            self._drop(fs_path)
        if stat.st_size > _SMALL_FILE or stat.st_size > self.cache_size:
            return None
        try:
            fd = os.open(fs_path, _OPEN_FLAGS)
        except OSError:
            return None  # sendfile() gives the right error
        try:
            opened = os.fstat(fd)
            data = _pread(fd, opened.st_size, 0)
        finally:
            os.close(fd)
        entry = _CachedFile(opened, guess_type(fs_path), data)
        if entry.identity != identity or len(data) != stat.st_size:
            return None  # changing under our feet: no caching now
        while self._cache and self._cached_bytes + len(data) > self.cache_size:
            self._drop(next(iter(self._cache)))
        self._cache[fs_path] = entry
        self._cached_bytes += len(data)
        return entry

    def _drop(self, fs_path):
        entry = self._cache.pop(fs_path)
        self._cached_bytes -= len(entry.data)

    def _inside(self, fs_path):
        """Does this file system path, symlinks resolved, lie under the root?"""
        resolved = os.path.realpath(fs_path)
        return resolved == self.root or resolved.startswith(self.root.rstrip(os.sep) + os.sep)

    def _precompressed(self, fs_path):
        """The (coding, path) siblings of a file, looked up at most once a second per file."""
        # Two failed stat() calls per request cost more than the rest of a small file's answer.
        now = int(time.monotonic())
        cached = self._siblings.get(fs_path)
        if cached is not None and cached[0] == now:
            return cached[1]
        try:
            original_mtime = os.stat(fs_path).st_mtime_ns
        except OSError:
            original_mtime = 0
        found = []
        for coding, suffix in _PRECOMPRESSED:
            sibling = fs_path + suffix
            try:
                stat = os.stat(sibling)
            except (OSError, ValueError):
                continue
            # One older than its original was made from an earlier version.
            if (S_ISREG(stat.st_mode) and stat.st_mtime_ns >= original_mtime
                    and self._inside(sibling)):
                found.append((coding, sibling))
        found = tuple(found)
        self._siblings.put(fs_path, (now, found))
        return found

    def listed_entry(self, entry):
        """(name, is_dir, size, mtime) of a directory entry a listing shows, or None."""
        try:
            # Only what could be fetched: no hidden dotfile, no link out of the root.
            if entry.name.startswith(".") and (
                    self.dotfiles == "hide" or _PART_FILE_RE.match("/" + entry.name)) or (
                    entry.is_symlink() and not self._inside(entry.path)):
                return None
            stat = entry.stat()
        except OSError:
            return None  # a dangling symlink, or a race with a delete
        is_directory = S_ISDIR(stat.st_mode)
        # What a request would be refused: a FIFO, socket or device, a name
        # not servable, a file the server's user may not read.
        if not (is_directory or S_ISREG(stat.st_mode)) or not _servable_name(entry.name) \
                or not _may_open(stat, is_directory):
            return None
        return entry.name, is_directory, stat.st_size, stat.st_mtime


    # -- uploads: PUT, POST multipart/form-data, DELETE (all off by default)
    #
    # When the head of an upload arrives, receive_body() checks what can be
    # checked before its body (the target, replacing, the form's type: a
    # refusal goes out at once, without 100 Continue) and gives the server
    # a hidden file in the target's directory (or its deepest existing
    # ancestor) to write the body to as it arrives.  So a body is never whole
    # in memory nor in /tmp (often RAM), the rename into place moves no
    # byte, a client that leaves midway leaves nothing behind, and 413 is
    # answered before a byte is read (Limits.max_body).  Once the body is
    # complete, the checks run again (things change meanwhile) and the file
    # system work runs on the handler's own worker threads, so a large file
    # does not stall the reactor.  A reader sees the old file or the new one,
    # never a part.

    def receive_body(self, head):
        """The file for an upload's body, or None; HTTPError refuses it before it is read."""
        if head.method not in self._write_methods or head.method == "DELETE":
            return None
        path = self._local_path(head.path)
        if path is None:
            return None  # 404 once handled
        try:
            if head.method == "PUT":
                fs_path = self._put_target(path, head)
                directory = self._existing_parent(fs_path)
            else:
                directory = self._form_directory(path, head.header("Content-Type"))
            return _PartFile(directory)
        except OSError as exc:
            failure = _write_failure(exc, path)
            if failure is None:
                raise
            raise HTTPError(failure[0], failure[1].rstrip("\n")) from None

    def _write_request(self, req, resp, path):
        if self._workers is None:
            with self._workers_lock:
                if self._workers is None:
                    self._workers = _WorkerPool(self.upload_threads)
        self._workers.submit_for(resp, self._run_write, req, resp, path)

    def _run_write(self, req, resp, path):
        try:
            try:
                if req.method == "PUT":
                    self._put(req, resp, path)
                elif req.method == "POST":
                    self._post_form(req, resp, path)
                else:
                    self._delete(req, resp, path)
            finally:
                self._drop_body(req)
        except HTTPError as exc:
            for name, value in exc.headers:
                resp.headers.set(name, value)
            resp.error(exc.status, exc.message + "\n")
        except Exception as exc:
            failure = _write_failure(exc, path)
            if failure is None:
                _handler_raised_in_thread(resp, "StaticFiles %s" % req.method)
            else:
                resp.error(*failure)

    @staticmethod
    def _drop_body(req):
        """Remove the file an upload's body arrived in, unless it was put in place.

        Before the answer goes: a client that looks next sees no part file.
        """
        body = req.body_file
        if body.__class__ is _PartFile:
            body.close()

    def _hidden(self, path):
        """True for a path no request may reach: a hidden dotfile, an upload in progress."""
        shown = _display_path(path)
        return (self.dotfiles == "hide" and _DOTFILE_RE.search(shown) is not None
                or _PART_FILE_RE.search(shown) is not None)

    @staticmethod
    def _refusal(code, text, path):
        return HTTPError(code, "%s %s" % (text, _quote_path(path)))

    def _put_target(self, path, head):
        """The file system path a PUT writes; HTTPError if it may not."""
        if path.endswith("/"):
            raise self._refusal(409, "Cannot PUT a directory", path)
        found = None if self._hidden(path) else _resolve_under(self.root, path)
        if found is None:
            raise self._refusal(403, "Forbidden path", path)
        fs_path, stat = found
        if stat is not None and S_ISDIR(stat.st_mode):
            raise self._refusal(409, "Cannot PUT onto a directory", path)
        if not self._replaces(head) and os.path.lexists(fs_path):
            raise self._existing(head, path)  # before a byte is written
        return fs_path

    def _replaces(self, head):
        # RFC 9110 §13.1.2: If-None-Match: * makes the PUT create, never replace.
        return self.replace and not _any_match(head)

    @classmethod
    def _existing(cls, head, path):
        # RFC 9110: 412 when a precondition the client sent fails (§13.1.2),
        # 409 when the resource's state forbids the request (§15.5.10).
        if _any_match(head):
            return cls._refusal(412, "Already exists:", path)
        return cls._refusal(409, "Already exists (replacing is off):", path)

    def _existing_parent(self, fs_path):
        """The real path of the deepest directory of ``fs_path`` that exists; HTTPError if outside."""
        directory = os.path.dirname(fs_path)
        while not os.path.isdir(directory):
            if os.path.lexists(directory):
                raise self._refusal(409, "A parent is not a directory:", fs_path[len(self.root):])
            directory = os.path.dirname(directory)
        directory = os.path.realpath(directory)
        if not self._inside(directory):
            raise self._refusal(403, "Forbidden path", fs_path[len(self.root):])
        return directory

    def _put(self, req, resp, path):
        head = req.head
        fs_path = self._put_target(path, head)  # again: things change meanwhile
        try:
            directory = self._make_parents(os.path.dirname(fs_path))
        except NotADirectoryError:
            raise self._refusal(409, "A parent is not a directory:", path) from None
        if directory is None:
            raise self._refusal(403, "Forbidden path", path)
        target = os.path.join(directory, os.path.basename(fs_path))
        body = req.body_file
        if body.__class__ is not _PartFile or body.closed:
            body = self._write_temporary(directory, req.body_stream())  # a small body
        try:
            body.sync()  # the rename must not outlive lost data
            replaced = self._place(body, target, self._replaces(head))
        except FileExistsError:
            raise self._existing(head, path) from None
        except IsADirectoryError:
            raise self._refusal(409, "Cannot PUT onto a directory", path) from None
        finally:
            body.close()
        if replaced:
            resp.code = 204
            return resp.done()
        resp.code = 201
        location = "/" + _quote_path(req.path).lstrip("/")  # never //name: another host
        resp.headers.set("Location", location)
        resp.content_type = "text/plain; charset=utf-8"
        resp.content = "Created %s\n" % location
        resp.done()

    def _make_parents(self, directory):
        """The real path of ``directory``, made below the root if missing; None if outside."""
        relative = os.path.relpath(directory, self.root)
        current = self.root
        for segment in [] if relative == os.curdir else relative.split(os.sep):
            current = os.path.join(current, segment)
            try:
                os.mkdir(current)
            except FileExistsError:
                pass  # made before, or by another upload meanwhile
            # A symlink is followed only where it stays under the root.
            current = os.path.realpath(current)
            if not self._inside(current):
                return None
            if not os.path.isdir(current):
                raise NotADirectoryError(current)
        return current

    @staticmethod
    def _write_temporary(directory, source):
        """Copy ``source`` to a new _PartFile in ``directory``."""
        part = _PartFile(directory)
        try:
            while True:
                block = source.read(1 << 20)
                if not block:
                    return part
                part.write(block)
        except BaseException:
            part.close()
            raise

    @staticmethod
    def _place(part, target, replace):
        """Put a complete _PartFile in place; True if it replaced a file (FileExistsError if not allowed)."""
        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            existing = None
        if existing is not None and S_ISDIR(existing.st_mode):
            raise IsADirectoryError(target)
        if replace and (existing is not None or part.path is not None):
            part.replace(target)  # a hidden name is renamed (some file systems have no links)
            return existing is not None
        # A link never replaces: two uploads racing for one name get one
        # winner (a hidden part file itself goes when it is closed).
        try:
            part.link(target)
            return False
        except FileExistsError:
            if not replace:
                raise
        part.replace(target)  # one came meanwhile
        return True

    def _form_directory(self, path, content_type):
        """The real path of the directory a form is posted to; HTTPError if it may not be."""
        found = None if self._hidden(path) else _resolve_under(self.root, path)
        if found is None:
            raise self._refusal(403, "Forbidden path", path)
        directory, stat = found
        if stat is None:
            raise self._refusal(404, "No such directory", path)
        if not S_ISDIR(stat.st_mode):
            raise self._refusal(409, "Not a directory:", path)
        if (content_type or "").split(";")[0].strip().lower() != "multipart/form-data":
            raise HTTPError(415, "Uploads are multipart/form-data.",
                            headers=[("Accept-Post", "multipart/form-data")])
        try:
            multipart_boundary(content_type)
        except BadRequest as exc:
            raise HTTPError(400, exc.message) from None
        return os.path.realpath(directory)

    def _post_form(self, req, resp, path):
        directory = self._form_directory(path, req.header("Content-Type"))
        stored = []  # (part file, file name)
        try:
            try:
                self._receive_form(req, directory, stored)
            except BadRequest as exc:
                raise HTTPError(400, exc.message) from None
            except PermissionError as exc:
                raise HTTPError(403, str(exc)) from None
            names = [name for _, name in stored]
            if not names:
                raise HTTPError(400, "No file in the form.")
            if not self.replace and len(set(names)) < len(names):
                raise HTTPError(409, "The same file name twice (replacing is off).")
            placed = []
            for part, name in stored:
                try:
                    self._place(part, os.path.join(directory, name), self.replace)
                except (FileExistsError, IsADirectoryError) as exc:
                    raise HTTPError(409, "%s exists%s." % (
                        name, " as a directory" if isinstance(exc, IsADirectoryError)
                        else " (replacing is off)")) from None
                placed.append(name)
        finally:
            self._drop_body(req)
            for part, _ in stored:
                part.close()  # removed unless in place: all or nothing, but for a race
        from urllib.parse import quote  # deferred: import time
        if "text/html" in (req.header("Accept") or ""):
            # A browser's form: back to the listing, which now shows the
            # files (never //name, which a browser takes for another host).
            resp.headers.set("Location", "/" + _quote_path(req.path).lstrip("/"))
            return resp.error(303, "Stored.\n")
        resp.code = 201
        resp.content_type = "text/plain; charset=utf-8"
        resp.content = "".join("Created %s\n" % quote(
            name, errors="surrogateescape") for name in placed)
        resp.done()

    def _receive_form(self, req, directory, stored):
        """Write each file part of the form to a synced _PartFile; (part, name) into ``stored``."""
        parser = MultipartParser(multipart_boundary(req.header("Content-Type")))
        body = req.body_stream()
        out = None
        while True:
            block = body.read(1 << 16)
            if block:
                parser.feed(block)
            while True:
                event = parser.next_event()
                if event is None:
                    break
                if event.__class__ is MultipartPart:
                    if event.filename is None:
                        continue  # a plain field: not a file
                    name = self._upload_name(event.filename)
                    out = _PartFile(directory)
                    stored.append((out, name))
                elif event.__class__ is bytes:
                    if out is not None:
                        out.write(event)
                elif out is not None:  # the end of a part
                    out.sync()
                    out = None
            if not block:
                parser.finish()
                return

    def _upload_name(self, filename):
        """A file part's name reduced to its last path component; BadRequest if unusable."""
        # Old browsers sent the whole client path, with either separator.
        name = filename.replace("\\", "/").rsplit("/", 1)[-1]
        if name in ("", ".", "..") or "\0" in name:
            raise BadRequest("Bad file name %r." % filename)
        if name.startswith(".") and (self.dotfiles == "hide"
                                     or _PART_FILE_RE.match("/" + name)):
            raise PermissionError("Forbidden file name %s." % name)
        return name

    def _delete(self, req, resp, path):
        found = None if self._hidden(path) else _resolve_under(self.root, path)
        if found is None:
            raise self._refusal(403, "Forbidden path", path)
        fs_path, stat = found
        if path.endswith("/") or stat is not None and S_ISDIR(stat.st_mode):
            raise self._refusal(409, "Cannot DELETE a directory", path)
        try:
            os.unlink(fs_path)  # a symlink goes, not what it points to
        except FileNotFoundError:
            raise self._refusal(404, "No such file", path) from None
        resp.code = 204
        resp.done()


# === 13. Worker threads and WSGI ===

# Jobs from a reactor turn still waiting this long after no worker took one
# (they are busy, or blocked in a job) get another worker.
_STALL = 0.001


class _WorkerPool:
    """Threads that run blocking handlers, started as work arrives.

    Jobs wait in one deque and a worker takes them one after another.  Jobs
    submitted from a reactor turn wake one worker once, when the turn's
    answers have gone: one wake-up for the requests of a turn, none while
    the loop still reads and writes, and none while a worker woken before
    has yet to run (it takes these jobs too).  While jobs wait, the reactor
    looks every ``_STALL`` seconds whether any was taken; if none was (the
    workers are blocked in theirs), it wakes another worker.  Waking one for
    every job would cost futex calls and a round of the GIL, in the usual
    case for a thread that finds nothing left to do.  Jobs submitted from
    other threads wake a worker each, at once.
    """

    def __init__(self, size):
        import queue  # deferred: import time
        self.size = max(1, int(size))
        self._jobs = deque()
        self._wakeups = queue.SimpleQueue()  # a token per sleeping worker to wake
        self._threads = []
        self._sleeping = 0  # workers that will take a token
        self._coming = 0  # workers woken or started that have not yet looked for jobs
        self._wake_due = False  # a reactor turn will wake a worker when it ends
        self._taken = 0  # jobs taken so far: the watch on waiting jobs compares it
        self._watch = None  # the reactor timer of that watch, while it runs
        self._lock = threading.Lock()

    def submit(self, func, *args):
        """Run ``func(*args)`` on a worker thread."""
        self._jobs.append((func, args))
        self._wake()

    def submit_for(self, response, func, *args):
        """``submit`` work that answers ``response``: from its reactor's thread, in turn."""
        reactor = response.reactor
        if reactor is not None and reactor.in_reactor_thread():
            self.submit_in_turn(reactor, func, *args)
        else:
            self.submit(func, *args)

    def submit_in_turn(self, reactor, func, *args):
        """``submit`` from ``reactor``'s thread; the workers hear of it when the turn ends."""
        self._jobs.append((func, args))
        # No lock: were two reactors to race here, the wake-up of either
        # comes after both jobs are in the deque, and the worker takes both.
        if not self._wake_due:
            self._wake_due = True
            reactor.call_when_turn_ends(self._end_of_turn, reactor)

    def _end_of_turn(self, reactor):
        self._wake_due = False
        if self._wake(once=True) and self._watch is None:
            self._watch = reactor.call_later(_STALL, self._look_at_waiting_jobs,
                                             reactor, self._taken)

    def _look_at_waiting_jobs(self, reactor, taken_before):
        self._watch = None
        if not self._jobs:
            return
        if self._taken == taken_before and not self._wake(once=True):
            return  # every worker is busy: each takes the next job when it is free
        self._watch = reactor.call_later(_STALL, self._look_at_waiting_jobs,
                                         reactor, self._taken)

    def _wake(self, once=False):
        """Wake a sleeping worker, or start one while there are fewer than ``size``.

        False when every worker is already at work.  ``once``: not while a
        worker woken before has yet to look at the jobs; it takes them all.
        """
        with self._lock:
            if once and self._coming:
                return True
            if self._sleeping:
                self._sleeping -= 1
                self._wakeups.put(None)
            elif len(self._threads) < self.size:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name="poex_http-worker-%d" % (len(self._threads) + 1))
                self._threads.append(thread)
                thread.start()
            else:
                return False
            self._coming += 1
        return True

    def _arrived(self):
        with self._lock:
            self._coming -= 1

    def _work(self):
        # Linux: a worker woken while the loop runs does not take the core
        # from it (wake-up preemption); it runs when the loop waits, which
        # is when it could have the interpreter anyway.  Without this, each
        # wake-up costs two context switches for nothing.
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except (AttributeError, OSError):
            pass
        self._arrived()
        jobs = self._jobs
        while True:
            try:
                func, args = jobs.popleft()
            except IndexError:
                with self._lock:
                    self._sleeping += 1
                if jobs:  # one came after the look above: wake for it, maybe this thread
                    self._wake()
                self._wakeups.get()
                self._arrived()
                continue
            self._taken += 1  # under the GIL; a lost count only delays a wake-up
            try:
                func(*args)
            except BaseException:  # the job reports its own errors
                _log.exception("worker thread job failed")
            # Not kept while waiting for the next job: a request's body (a
            # temporary file, perhaps) would stay open as long.
            func = args = None


def _handler_raised_in_thread(response, where):
    """After a handler raised on a worker thread: 500, or end what was started."""
    _log.exception("%s raised", where)
    response.fail()


class threaded:
    """Wrap a handler so that it runs on a pool of ``threads`` worker threads."""

    def __init__(self, handler, threads=8):
        self.handler = resolve_handler(handler)
        self.pool = _WorkerPool(threads)

    def __call__(self, req, resp):
        self.pool.submit_for(resp, self._run, req, resp)

    def _run(self, req, resp):
        try:
            self.handler(req, resp)
        except Exception:
            _handler_raised_in_thread(resp, "threaded handler %r" % (self.handler,))


class _ErrorStream:
    """``wsgi.errors``: what the application writes goes to the log, a line a record.

    One for all of a handler's requests (PEP 3333 allows it), so safe to
    write from several threads at once.
    """

    def __init__(self):
        import logging  # deferred (import time), as for _log
        self._logger = logging.getLogger("poex_http.wsgi")
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text):
        with self._lock:
            pending = self._pending + text
            lines = pending.split("\n")
            self._pending = lines.pop()
        for line in lines:
            self._logger.error("%s", line)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        with self._lock:
            pending, self._pending = self._pending, ""
        if pending:
            self._logger.error("%s", pending)


class FileWrapper:
    """``wsgi.file_wrapper``: a file the server may send with ``os.sendfile``."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while data := read(self.blksize):
            yield data


def _wsgi_bytes(data):
    """PEP 3333: body pieces are bytes; a str is the application's mistake."""
    if data.__class__ is bytes or isinstance(data, (bytes, bytearray, memoryview)):
        return data
    raise TypeError("a WSGI body must be bytes, not %s" % type(data).__name__)


def _environ_path(path):
    """PEP 3333: PATH_INFO is the percent-decoded path as latin-1 str."""
    if "%" not in path:
        return path
    from urllib.parse import unquote_to_bytes  # deferred: import time
    return unquote_to_bytes(path).decode("latin-1")


# Request header names -> their environ keys ("" for a name left out).
# The names come from clients: bounded.
_ENVIRON_KEYS = _BoundedCache(512)


def _environ_key(name):
    key = name.upper()
    if "_" in key:
        # Header names with underscores would be indistinguishable from
        # dashes in the environ: left out, as nginx does.
        key = ""
    else:
        key = key.replace("-", "_")
        if key == "CONTENT_LENGTH":
            key = ""  # the body's length is set apart
        elif key != "CONTENT_TYPE":
            key = "HTTP_" + key
    return _ENVIRON_KEYS.put(name, key)


# Fields applications have given start_response() that passed _check_field
# (hot path: the same few on every response); bounded, as values vary.
_CHECKED_FIELDS = _BoundedCache(512)


def _wsgi_fields(headers):
    """start_response()'s headers, checked, as a list of (name, value) str pairs."""
    checked = _CHECKED_FIELDS
    fields = []
    for field in headers:
        if field.__class__ is not tuple or field not in checked:
            field = _check_field(*field)
            checked.put(field, True)
        fields.append(field)
    return fields


# WSGI status lines seen before -> (code, reason); applications use a few.
_WSGI_STATUSES = _BoundedCache(256)


def _wsgi_status(status):
    """(code, reason) of a WSGI status line such as ``"200 OK"``."""
    known = _WSGI_STATUSES.get(status) if status.__class__ is str else None
    if known is not None:
        return known
    code, _, reason = str(status).partition(" ")
    if not (len(code) == 3 and code.isdigit()):
        raise ValueError("WSGI status %r is not '### Reason'" % (status,))
    known = (int(code), reason)
    if status.__class__ is str:
        _WSGI_STATUSES.put(status, known)
    return known


# A Host value -> (SERVER_NAME, SERVER_PORT) as its text gives them.
_SERVER_ADDRESSES = _BoundedCache(256)


def _server_address(host):
    if host.rfind(":") > host.rfind("]"):  # a port, not a colon of an IPv6 literal
        name, _, port = host.rpartition(":")
    else:
        name, port = host, ""
    return _SERVER_ADDRESSES.put(host, (name, port))


# Parts of a body asked of an application on the loop (threads=0) before
# the loop's other work runs again.
_PUMP_BATCH = 64


def _close_iterable(iterable):
    """PEP 3333: an application's iterable is closed once the response has ended."""
    if hasattr(iterable, "close"):
        try:
            iterable.close()
        except Exception:
            _log.exception("close() of the WSGI iterable raised")


class _WSGICall:
    """One request's start_response and write, and what they were given."""

    __slots__ = ("response", "status", "fields", "sent")

    def __init__(self, response):
        self.response = response
        self.status = None  # (code, reason) once start_response is called
        self.fields = None
        self.sent = False  # the status and headers are with the response

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        self.status = _wsgi_status(status)
        self.fields = _wsgi_fields(headers)
        return self.write

    def begin(self):
        """Hand the status and headers to the response, at the first body bytes."""
        if not self.sent:
            if self.status is None:
                raise AssertionError("the application wrote before start_response()")
            self.sent = True
            response = self.response
            response.code, response.message = self.status
            response.headers = Headers.wrap(self.fields)

    def write(self, data):
        self.begin()
        if data:
            self.response.send(_wsgi_bytes(data))

    def declared_length(self):
        """The Content-Length given to start_response, as an int (None: none, or not digits)."""
        for name, value in self.fields:
            if len(name) == 14 and name.lower() == "content-length":
                return int(value) if _is_digits(value) else None
        return None


class WSGIHandler:
    """A handler hosting a WSGI (PEP 3333) application on worker threads.

    ``threads=0`` runs it on the loop's own thread instead: no hand-over,
    for an application that never waits (no network, no database, no
    sleep).  One that does stops every connection for as long.
    """

    def __init__(self, app, threads=8, script_name=""):
        if isinstance(app, str):
            app = _import_object(app)
        threads = int(threads)
        if threads < 0:
            raise ValueError("threads must be 0 (the loop's thread) or more, not %d" % threads)
        self.app = app
        self.script_name = script_name.rstrip("/")
        self.pool = _WorkerPool(threads) if threads else None
        # What every request's environ holds (hot path: copied, not built).
        self._constant_environ = {
            "SERVER_SOFTWARE": "poex_http/%s" % __version__,
            "wsgi.version": (1, 0),
            "wsgi.input_terminated": True,
            "wsgi.errors": _ErrorStream(),
            "wsgi.multithread": self.pool is not None,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
        }
        # Connection -> _connection_environ(); bounded, and dropped with the
        # handler (hot path: a keep-alive connection's requests share it).
        self._by_connection = _BoundedCache(1024)

    def __call__(self, req, resp):
        pool = self.pool
        if pool is None:
            self._run(self.environ(req), req, resp)
        else:
            pool.submit_for(resp, self._run, self.environ(req), req, resp)

    def environ(self, req):
        """The WSGI environ for a request."""
        head = req.head
        conn = req.connection
        path = head.path
        if "%" in path:
            path = _environ_path(path)
        script_name = self.script_name
        if script_name:
            if path == script_name or path.startswith(script_name + "/"):
                path = path[len(script_name):]
            else:
                script_name = ""  # mounted elsewhere than it says: the whole path
        host = head.host or ""
        server_name, server_port = _SERVER_ADDRESSES.get(host) or _server_address(host)
        environ = (self._by_connection.get(conn) or self._connection_environ(req)).copy()
        environ["REQUEST_METHOD"] = head.method
        environ["SCRIPT_NAME"] = script_name
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = head.query
        environ["SERVER_NAME"] = server_name or conn.local_ip or "localhost"
        environ["SERVER_PORT"] = server_port or str(
            conn.local_port or (443 if environ["wsgi.url_scheme"] == "https" else 80))
        environ["SERVER_PROTOCOL"] = head.version
        environ["wsgi.input"] = req.body_stream()
        if head.content_length is not None or head.chunked:
            environ["CONTENT_LENGTH"] = str(req.body_length())
        if req.user is not None:  # CGI's names; PEP 3333 strings hold bytes as Latin-1
            environ["AUTH_TYPE"] = "Basic"
            environ["REMOTE_USER"] = req.user.encode("utf-8").decode("latin-1")
        keys = _ENVIRON_KEYS
        for name, value in head.fields:
            key = keys.get(name)
            if key is None:
                key = _environ_key(name)
            if not key:
                continue
            if key in environ and key != "CONTENT_TYPE":
                value = environ[key] + "," + value
            environ[key] = value
        return environ

    def _connection_environ(self, req):
        """What the environ of every request on the connection of ``req`` holds.

        Kept for the connection unless its peer is a trusted proxy, whose
        requests each tell their own client.
        """
        conn = req.connection
        remote_ip, scheme = req.client
        environ = self._constant_environ.copy()
        # CGI lets REMOTE_HOST be the address when no name is looked up.
        environ["REMOTE_ADDR"] = environ["REMOTE_HOST"] = remote_ip or ""
        environ["REMOTE_PORT"] = str(conn.remote_port or "")
        environ["wsgi.url_scheme"] = scheme
        environ["wsgi.multiprocess"] = bool(conn.server.prefork)
        trusted = conn.server.trusted_proxies
        if not (trusted and trusted.trusts(conn.remote_ip)):
            self._by_connection.put(conn, environ)
        return environ

    def _run(self, environ, req, resp):
        call = _WSGICall(resp)
        result = None
        try:
            result = self.app(environ, call.start_response)
            if (result.__class__ is list or result.__class__ is tuple) \
                    and len(result) <= 1 and not call.sent:
                # The common case: the whole body at once, one hand-over.
                call.begin()
                resp.content = _wsgi_bytes(result[0]) if result else b""
                resp.done()
                return
            if isinstance(result, FileWrapper) and not call.sent \
                    and self._send_file(result, call, resp):
                return
            if self.pool is None:
                chunks = iter(result)
                result, iterable = None, result  # closed by _pump, when it ends
                self._pump(chunks, iterable, call, resp)
                return
            for data in result:
                if data:
                    call.begin()
                    if not resp.send(_wsgi_bytes(data)):
                        return  # the client is gone: stop the application's iterable
                    if not resp.body_wanted:
                        break  # HEAD, or the Content-Length sent: the rest would be dropped
            call.begin()
            resp.done()
        except Exception:
            _handler_raised_in_thread(resp, "WSGI application %r" % (self.app,))
        finally:
            if result is not None:
                _close_iterable(result)

    def _pump(self, chunks, iterable, call, resp):
        """On the loop (threads=0): send until the client is behind, go on once it caught up."""
        try:
            for count, data in enumerate(chunks, 1):
                if data:
                    call.begin()
                    sent = resp.send(_wsgi_bytes(data))
                    if not resp.body_wanted:
                        break  # gone, HEAD, or the Content-Length sent: stop asking
                    if not sent:
                        resp.on_drain(lambda: self._resume(chunks, iterable, call, resp))
                        return
                if count % _PUMP_BATCH == 0:
                    # Small parts the client takes as fast: the loop's other
                    # connections get their turn before the next batch.
                    resp.reactor.call_soon(self._resume, chunks, iterable, call, resp)
                    return
            call.begin()
            resp.done()
        except Exception:
            _handler_raised_in_thread(resp, "WSGI application %r" % (self.app,))
        _close_iterable(iterable)

    def _resume(self, chunks, iterable, call, resp):
        if resp.client_gone:
            _close_iterable(iterable)  # the client is gone: stop the application's iterable
        else:
            self._pump(chunks, iterable, call, resp)

    @staticmethod
    def _send_file(wrapper, call, resp):
        """Send a wsgi.file_wrapper of a regular file with sendfile; False if not one."""
        try:
            fd = wrapper.filelike.fileno()
            offset = wrapper.filelike.tell()
        except (AttributeError, OSError, ValueError):
            return False
        if call.status is None:
            return False  # iterated, to fail as an application that did not start
        declared = call.declared_length()
        if declared is not None and declared <= _SMALL_FILE and call.status[0] == 200:
            # A small file, as the application says: read here, on the
            # worker, and its head and body go in one write (as send_fd does
            # for small files).  No fstat: a file shorter than it says gives
            # what it holds, and one that cannot be read at an offset (a
            # pipe) is iterated.
            try:
                data = _pread(fd, declared, offset)
            except OSError:
                return False
            call.begin()
            resp.content = data
            resp.done()
            return True
        try:
            stat = os.fstat(fd)
        except OSError:
            return False
        if not S_ISREG(stat.st_mode):
            return False
        call.begin()
        length = max(0, stat.st_size - offset)
        if declared is not None:
            length = min(length, declared)
        if length <= _SMALL_FILE and resp.code == 200:
            resp.content = _pread(fd, length, offset)
            resp.done()
        else:
            resp.send_fd(os.dup(fd), offset, length)
        return True


# === 14. Server ===

_servers_by_alias = {}


def _systemd_socket():
    """The first socket of systemd socket activation (sd_listen_fds(3)), or None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):  # not for children
        os.environ.pop(name, None)
    return 3 if count > 0 else None


def _keepalive_count(value):
    """Perl semantics: false is off; True or 1 is 100; N is N requests."""
    if value is True or value == 1:
        return 100
    return int(value) if value else 0


class _Option:
    """One server option: keyword, default, help, and its command-line flag (or flags)."""

    __slots__ = ("name", "default", "doc", "flag", "cli")

    def __init__(self, name, default, doc, flag=None, **cli):
        self.name = name
        self.default = default
        self.doc = doc
        self.flag = flag
        self.cli = cli

    @property
    def flags(self):
        """The command line's spellings of the option (none when it has no flag)."""
        if not self.flag:
            return ()
        return self.flag if isinstance(self.flag, tuple) else (self.flag,)


_ACCESS_LOG_FORMATS = ("common", "combined")

# Every spawn() keyword, with the default of POEx::HTTP::Server where it had
# the option.  The command line is built from the entries that have a flag.
SERVER_OPTIONS = (
    _Option("handlers", None, "list of (regex, handler) pairs, a dict, or one handler"),
    _Option("handler", None, "one handler for every path"),
    _Option("host", None, "address to listen on (default: all interfaces, IPv6 too "
            "where the host has it)", ("-b", "--bind"), metavar="ADDR",
            help="address to listen on [default: all interfaces, IPv6 too where the "
                 "host has it]"),
    _Option("port", None, "TCP port (default 80)", ("-p", "--port"), type=int,
            help="TCP port [default: %d]" % 8000),
    _Option("inet", None, "the Perl form of the address: {'LocalPort': 8080, "
            "'LocalAddr': '127.0.0.1', 'Reuse': 1}"),
    _Option("alias", "HTTPd", "name for post(); prefix of connection IDs"),
    _Option("keepalive", 0, "most requests per connection (0: keep-alive off)",
            "--keepalive", type=int, metavar="N"),
    _Option("keepalivetimeout", 5, "seconds to wait for the next request on a kept connection",
            "--keepalivetimeout", type=float, metavar="S"),
    _Option("timeout", 300, "seconds from accept until a full request has arrived, and "
            "while a write is blocked (0: never)", "--timeout", type=float, metavar="S"),
    _Option("concurrency", -1, "most open connections (-1: no limit)",
            "--concurrency", type=int, metavar="N"),
    _Option("blocksize", 7500, "bytes per block when a file is sent without os.sendfile",
            "--blocksize", type=int, metavar="N"),
    _Option("sendfile", True, "send files with os.sendfile where the platform has it",
            "--no-sendfile", action="store_false",
            help="send files in --blocksize blocks, without os.sendfile"),
    _Option("headers", None, "headers for every response that lacks them "
            "(default: {'Server': 'poex_http/VERSION'})"),
    _Option("access_log", None, "one Common Log Format line per request through the "
            "poex_http.access logger: True (logger only), '-' (stderr) or a file to append to",
            "--access-log", metavar="FILE|-",
            help="append the access log to FILE, or - for stderr [default: -]"),
    _Option("access_log_format", "common", "'common' (Common Log Format) or 'combined' "
            "(and the Referer and User-Agent, as nginx's 'combined')",
            "--access-log-format", choices=_ACCESS_LOG_FORMATS,
            help="common: Common Log Format; combined: and the Referer and User-Agent, "
                 "as nginx's 'combined' [default: common]"),
    _Option("methods", None, "more request methods for handlers than RFC 9110's, PATCH and "
            "WebDAV's (others get 501)", "--method", action="append", metavar="NAME"),
    _Option("trusted_proxies", None, "proxies whose X-Forwarded-For and X-Forwarded-Proto "
            "are believed: addresses or networks, 'unix' for Unix socket peers",
            "--trusted-proxies", metavar="ADDR[,NET...]"),
    _Option("retry", 60, "seconds before a failed bind is tried again, when an on_error "
            "handler is set (0: raise at once)"),
    _Option("shutdown_timeout", 30, "seconds a graceful stop waits for requests in flight "
            "before it drops them (0: no limit)", "--shutdown-timeout", type=float, metavar="S"),
    _Option("limits", None, "a Limits object with every size and time bound"),
    _Option("reactor", None, "the Reactor to run on (default: the module's)"),
    _Option("options", None, "reactor options (kept for compatibility)"),
    _Option("prefork", 0, "worker processes sharing the listening socket (0: serve "
            "in this process)", "--workers", type=int, metavar="N"),
    _Option("recycle", 0, "connections a worker serves before it is replaced (0: never)",
            "--recycle", type=int, metavar="N"),
    _Option("reuse_port", False, "with prefork, each worker binds its own socket with "
            "SO_REUSEPORT and the kernel spreads connections", "--reuse-port",
            action="store_true"),
    _Option("unix", None, "path of a Unix domain socket to listen on (a stale socket "
            "file is replaced)", "--unix", metavar="PATH"),
    _Option("unix_mode", None, "permissions of the Unix socket file, e.g. 0o660",
            "--unix-mode", type=lambda text: int(text, 8), metavar="MODE"),
    _Option("sock", None, "an already bound, listening socket"),
    _Option("fd", None, "file descriptor of an already bound, listening socket "
            "(systemd's LISTEN_FDS is used when present)", "--fd", type=int, metavar="FD"),
    _Option("ssl_context", None, "an ssl.SSLContext for HTTPS"),
    _Option("auth", None, "HTTP Basic authentication (RFC 7617) for every route: "
            "{user: password}, a list of 'user:password', or a callable "
            "check(user, password) -> bool (None: off)"),
    _Option("auth_realm", "poex_http", "the realm a 401 names (browsers show it)",
            "--auth-realm", metavar="TEXT"),
)
_OPTION_DEFAULTS = {option.name: option.default for option in SERVER_OPTIONS}
# Known methods (RFC 9110 §9.3, PATCH: RFC 5789, WebDAV: RFC 4918); others get 501 (§9.1).
_KNOWN_METHODS = frozenset("GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH "
                           "PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK".split())


# Seconds of recent log lines -> their local time as Common Log Format writes it.
_CLF_TIMES = _BoundedCache(16)


def _clf_time(when):
    second = int(when)
    text = _CLF_TIMES.get(second)
    if text is None:
        text = _CLF_TIMES.put(second, time.strftime("%d/%b/%Y:%H:%M:%S %z",
                                                    time.localtime(second)))
    return text


# What a request puts in a log line (its target, and an address a proxy
# reports; the method is a token) is escaped as nginx does: '"', '\',
# controls and bytes past ASCII as \xHH; spaces too, for the address field.
_LOG_UNSAFE_RE = re.compile(r"[^!#-\[\]-~]")
# Access log lines are written together: at most this many seconds after
# the first of them, or at once when this many wait (a record a loop turn
# cost a busy server a tenth of its time).
_ACCESS_LOG_DELAY = 0.1
_ACCESS_LOG_BATCH = 256


def _log_escape(text):
    """``text`` fit for a log field (a request's text holds Latin-1 characters only)."""
    if _LOG_UNSAFE_RE.search(text) is None:
        return text  # the usual case, at half the cost of sub()
    return _LOG_UNSAFE_RE.sub(lambda match: "\\x%02X" % ord(match.group()), text)


def _access_lines(entries):
    """Access log lines (Common Log Format, or combined) from what _log_access kept."""
    # One loop for a batch, and f-strings: a third less than a call and a
    # %-format a line.
    times = {}
    lines = []
    for ip, peer_ip, user, method, target, version, status, sent, when, combined in entries:
        if ip is None:
            ip = "-"  # a Unix peer
        elif ip is not peer_ip:
            ip = _log_escape(ip)  # from a proxy's header: the client wrote it
        user = "-" if user is None else _log_escape(user)
        second = int(when)
        clf_time = times.get(second)
        if clf_time is None:
            clf_time = times[second] = _clf_time(second)
        if method == "ERROR":
            request_line = "-"
        else:
            if _LOG_UNSAFE_RE.search(target) is not None:
                target = _log_escape(target)
            request_line = f"{method} {target} {version}"
        line = f'{ip} - {user} [{clf_time}] "{request_line}" {status} {sent or "-"}'
        if combined is not None:
            referer, agent = combined
            line += f' "{_log_escape(referer or "-")}" "{_log_escape(agent or "-")}"'
        lines.append(line)
    return "\n".join(lines)


_ACCESS_HANDLER = "poex_http.access"  # the name of the handler the option installs


def _open_access_log(setting):
    """The access logger for the ``access_log`` option, or None when off."""
    if not setting:
        return None
    import logging  # deferred (import time), as for _log
    logger = logging.getLogger("poex_http.access")
    logger.setLevel(logging.INFO)
    if setting is True:
        return logger
    if setting == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(setting, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    for old in list(logger.handlers):
        if old.name == _ACCESS_HANDLER:
            logger.removeHandler(old)
            old.close()
    handler.name = _ACCESS_HANDLER
    logger.addHandler(handler)
    logger.propagate = False
    return logger


# RFC 7617 §2: a user-id and a password hold no control characters.
_CONTROL_CHARACTER_RE = re.compile(r"[\x00-\x1f\x7f]")


_NEEDS_PASSWORD = "This needs a user name and password."


def _basic_credentials(authorization):
    """(user, password) from an ``Authorization`` value of the Basic scheme
    (RFC 7617), decoded as UTF-8; None when absent, of another scheme or malformed."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":  # RFC 9110 §11.1: schemes are case-insensitive
        return None
    import base64  # deferred: import time
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except ValueError:  # bad base64 (binascii.Error), non-ASCII, or not UTF-8
        return None
    user, colon, password = text.partition(":")  # a user-id holds no colon, a password may
    if not colon or _CONTROL_CHARACTER_RE.search(text):
        return None
    return user, password


def _password_check(setting):
    """The ``auth`` option as check(user, password) -> bool, or None when off."""
    if setting is None:
        return None
    if callable(setting):
        return setting
    import hashlib  # deferred: import time
    import hmac
    if isinstance(setting, str):
        setting = [setting]  # one "user:password"
    pairs = setting.items() if isinstance(setting, dict) else [
        entry.split(":", 1) if isinstance(entry, str) else entry for entry in setting]
    # SHA-256 digests are compared, not the passwords: compare_digest takes
    # the same time for any two strings of one length, and digests have one.
    digests = {}
    for number, pair in enumerate(pairs, 1):
        if len(pair) != 2 or ":" in pair[0]:
            # Not quoted: the entry may be a password.
            raise ValueError("auth: entry %d is not user:password (a user name holds "
                             "no colon)" % number)
        user, password = pair
        if isinstance(password, str):
            password = password.encode("utf-8")
        digests[user] = hashlib.sha256(password).digest()
    if not digests:
        raise ValueError("auth: no user given")
    unmatchable = os.urandom(32)  # an unknown user costs the same comparison

    def check(user, password):
        given = hashlib.sha256(password.encode("utf-8")).digest()
        return hmac.compare_digest(given, digests.get(user, unmatchable))
    return check


def _basic_challenge(realm):
    """RFC 7617 §2: the ``WWW-Authenticate`` value; the realm is a quoted-string."""
    quoted = realm.replace("\\", "\\\\").replace('"', '\\"')
    # Checked now as a response header is, so a bad realm fails at start,
    # not in every 401.
    return _check_field("WWW-Authenticate", 'Basic realm="%s", charset="UTF-8"' % quoted)[1]


class Server:
    """An HTTP server: listening socket, connections, handlers (``SERVER_OPTIONS``)."""

    def __init__(self, **config):
        unknown = set(config) - set(_OPTION_DEFAULTS)
        if unknown:
            raise TypeError("unknown option(s): %s" % ", ".join(sorted(unknown)))
        options = dict(_OPTION_DEFAULTS, **config)
        for name in ("alias", "keepalivetimeout", "timeout", "retry", "shutdown_timeout",
                     "unix", "unix_mode", "sock", "fd", "ssl_context"):
            setattr(self, name, options[name])
        if self.ssl_context is not None:
            _enable_tls()
        self.reactor = options["reactor"] or default_reactor()
        self.limits = options["limits"] or Limits()
        self.blocksize = int(options["blocksize"])
        self.use_sendfile = bool(options["sendfile"])
        self.concurrency = int(options["concurrency"])
        self.keepalive = _keepalive_count(options["keepalive"])
        self.options = options["options"] or {}
        self.host, self.port, self.reuse_address = self._address(options)
        if self.sock is None and self.fd is None and not self.unix and config.get("port") is None \
                and not options["inet"]:
            self.fd = _systemd_socket()
        self.reuse_port = bool(options["reuse_port"])
        self.prefork = int(options["prefork"] or 0)
        self.recycle = int(options["recycle"] or 0)
        self._is_worker = False
        self._retry_timer = self._shutdown_timer = None
        headers = options["headers"]
        if headers is None:
            headers = {"Server": "poex_http/%s" % __version__}
        self.headers = Headers(headers)
        self.response_heads = _HeadWriter(self.headers.items())
        if options["handlers"] is not None and options["handler"] is not None:
            raise TypeError("give handlers or handler, not both")
        handlers = options["handlers"] if options["handlers"] is not None else options["handler"]
        if handlers is None:
            raise TypeError("Missing required handler or handlers param")
        self.router = Router(handlers)
        self.access_log = _open_access_log(options["access_log"])
        if options["access_log_format"] not in _ACCESS_LOG_FORMATS:
            raise ValueError("access_log_format must be one of %s, not %r"
                             % (", ".join(_ACCESS_LOG_FORMATS), options["access_log_format"]))
        self._combined_log = options["access_log_format"] == "combined"
        self._access_entries = []  # of lines not yet written
        self._access_timer = None
        self.methods = _KNOWN_METHODS.union(options["methods"] or ())
        self.password_check = _password_check(options["auth"])
        self.auth_challenge = _basic_challenge(options["auth_realm"])
        trusted = options["trusted_proxies"]
        self.trusted_proxies = TrustedProxies(trusted) if trusted else None
        self.shutting_down = False
        self.connections = set()
        self._listener = None
        self._accepting = False
        self._accept_pauses = 0  # of the current descriptor shortage
        self._connection_ids = itertools.count(1)
        self._accepted = 0
        self._started = False

    @staticmethod
    def _address(options):
        """(host, port, reuse) from host/port and the Perl ``inet`` hash."""
        inet = dict(options["inet"] or {})
        port = options["port"]
        for key in ("BindPort", "LocalPort"):
            if port is None and inet.get(key) is not None:
                port = inet[key]
        host = options["host"]
        for key in ("BindAddress", "BindAddr", "LocalAddr"):
            if host is None and inet.get(key):
                host = inet[key]
        port = int(80 if port is None else port)
        if not 0 <= port <= 65535:
            raise ValueError("port %d is not between 0 and 65535" % port)
        return host, port, bool(inet.get("Reuse", 1))

    # -- life cycle

    def start(self):
        """Bind, listen and accept (or retry the bind: ``retry``); returns the server."""
        if self._started:
            return self
        self._started = True
        if self.alias:
            _servers_by_alias[self.alias] = self
        self.reactor.add_server(self)
        try:
            self._listen()
        except OSError as exc:
            # A prefork parent must bind before it forks: no retry there.
            if not (self.retry and "on_error" in self.router.specials) or self.prefork:
                self.reactor.remove_server(self)
                if _servers_by_alias.get(self.alias) is self:
                    del _servers_by_alias[self.alias]
                raise
            self._bind_failed(exc)
        return self

    def _listen(self):
        self._listener = self._open_listener()
        address = self._listener.getsockname()
        if isinstance(address, tuple):
            self.port = address[1]
        if self.prefork and not self._is_worker:
            return  # the supervisor forks the workers that accept (see run())
        if self.reactor.in_reactor_thread():
            self._resume_accepting()
        else:
            self.reactor.call_soon_threadsafe(self._resume_accepting)

    def _bind_failed(self, exc):
        _log.error("cannot listen on %s: %s; trying again in %s s",
                   self._where(), exc.strerror or exc, self.retry)
        self.network_error(None, "bind", exc)
        self._retry_timer = self.reactor.call_later(self.retry, self._retry_bind)

    def _retry_bind(self):
        self._retry_timer = None
        if self.shutting_down:
            return
        try:
            self._listen()
        except OSError as exc:
            self._bind_failed(exc)

    def _where(self):
        return self.unix or "%s:%s" % (self.host or "*", self.port)

    def _open_listener(self):
        """The listening socket: given, inherited, Unix, or TCP."""
        if self.sock is not None:
            return self.sock
        if self.fd is not None:
            return socket.socket(fileno=self.fd)
        if self.unix:
            return self._open_unix_listener()
        if self.reuse_port and not HAS_REUSEPORT:
            raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available here")
        # A prefork parent with SO_REUSEPORT only holds the port: a listening
        # socket of its own would get connections nobody accepts.
        return self._open_tcp_listener(listen=not (self.reuse_port and self.prefork
                                                   and not self._is_worker))

    def _open_tcp_listener(self, listen=True):
        host = self.host
        dual_stack = False
        if host in (None, "", "*"):
            dual_stack = socket.has_dualstack_ipv6()
            host = "::" if dual_stack else "0.0.0.0"
        infos = socket.getaddrinfo(host, self.port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   0, socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if self.reuse_address and os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # "::" from no address serves IPv4 too; an explicit IPv6
                # address means IPv6 only.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
            sock.bind(address)
            if listen:
                sock.listen(self.limits.backlog)
        except OSError:
            sock.close()
            raise
        return sock

    def _open_unix_listener(self):
        """A Unix domain socket at ``unix``; a stale socket file is replaced."""
        path = self.unix
        try:
            if S_ISSOCK(os.stat(path).st_mode):
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    probe.connect(path)
                except OSError:
                    os.unlink(path)  # nobody listens there: stale
                else:
                    raise OSError(errno.EADDRINUSE, "%s: a server listens there" % path)
                finally:
                    probe.close()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            if self.unix_mode is not None:
                os.chmod(path, self.unix_mode)
            sock.listen(self.limits.backlog)
        except OSError:
            sock.close()
            raise
        return sock

    @property
    def address(self):
        """The bound socket address."""
        return self._listener.getsockname() if self._listener else None

    # -- prefork: what the supervisor calls

    @property
    def needs_supervisor(self):
        """A prefork server whose workers are yet to be forked."""
        return bool(self.prefork) and not self._is_worker and self._listener is not None

    def become_worker(self):
        """In a forked worker: accept (on a socket of its own with SO_REUSEPORT)."""
        self._is_worker = True
        if self.reuse_port:
            self._listener.close()
            self._listener = self._open_tcp_listener()
        self._resume_accepting()

    def stop_listening(self):
        """In the supervisor, at the end: close the listening socket."""
        self.shutting_down = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def shutdown(self):
        """Stop accepting; finish requests in flight; close idle connections."""
        if not self.reactor.in_reactor_thread():
            self.reactor.call_soon_threadsafe(self.shutdown)
            return
        if self.shutting_down:
            return
        self.shutting_down = True
        if self._listener is not None and not self.needs_supervisor:
            # Connections the kernel has completed (the concurrency limit may
            # hold them back) are answered, not reset by the listener's close.
            self._listener.setblocking(False)
            self._accept(self.limits.backlog)
        self._pause_accepting()
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        if self._listener is not None:
            unix_path = self.unix if self._listener.family == getattr(socket, "AF_UNIX", None) \
                and self.sock is None and self.fd is None and not self._is_worker else None
            self._listener.close()
            self._listener = None
            if unix_path:
                try:
                    os.unlink(unix_path)
                except OSError:
                    pass
        if _servers_by_alias.get(self.alias) is self:
            del _servers_by_alias[self.alias]
        for conn in list(self.connections):
            conn.server_shutting_down()
        if self.connections:
            _log.info("stopping: waiting for %d connection(s)%s", len(self.connections),
                      " for at most %g s" % self.shutdown_timeout if self.shutdown_timeout else "")
            if self.shutdown_timeout:
                self._shutdown_timer = self.reactor.call_later(self.shutdown_timeout,
                                                               self._shutdown_expired)
        self._maybe_finished()

    def _shutdown_expired(self):
        if self.connections:
            _log.warning("stopping: dropping %d connection(s) after %g s",
                         len(self.connections), self.shutdown_timeout)
            for conn in list(self.connections):
                conn.abort()

    def _maybe_finished(self):
        if self.shutting_down and not self.connections and self in self.reactor.servers:
            if self._shutdown_timer is not None:
                self._shutdown_timer.cancel()
            self.reactor.remove_server(self)
            self.flush_access_log()
            _log.info("stopped: %s", self._where())

    # -- accepting

    def _resume_accepting(self):
        if self._accepting or self._listener is None or self.shutting_down \
                or 0 <= self.concurrency <= len(self.connections):
            return
        self._accepting = True
        self._listener.setblocking(False)
        self.reactor.register(self._listener, _EVENT_READ, self)

    def _pause_accepting(self):
        if self._accepting:
            self._accepting = False
            self.reactor.unregister(self._listener)

    def on_readable(self):
        self._accept(64)

    def _accept(self, most):
        started = []
        try:
            self._accept_some(most, started)
        finally:
            # (Not when this worker is about to finish: its last connections
            # are answered as it shuts down, with Connection: close.)
            if not self._served_its_share():
                for conn in started:
                    if conn is not None:
                        conn.read_first()

    def _served_its_share(self):
        return self.recycle and self._is_worker and self._accepted >= self.recycle

    def _accept_some(self, most, started):
        listener = self._listener
        for _ in range(most):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._accept_failed(exc)
                return
            started.append(self._start_connection(sock, peer))
            if not (self._accepting or self.shutting_down):
                break
        if self._accept_pauses:  # accept() no longer lacks descriptors
            _log.warning("accept: resumed after %d pause(s)", self._accept_pauses)
            self._accept_pauses = 0

    def _accept_failed(self, exc):
        if not self._accept_pauses:  # a descriptor shortage is reported once
            self.network_error(None, "accept", exc)
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            # Out of descriptors: the listener stays readable, so stop
            # watching it for a moment instead of spinning.  Logged as it
            # starts and as accepting works again, not at every pause.
            if not self._accept_pauses:
                _log.error("accept: %s; pausing %.1f s at a time",
                           exc.strerror, self.limits.accept_pause)
            self._accept_pauses += 1
            self._pause_accepting()
            self.reactor.call_later(self.limits.accept_pause, self._resume_accepting)

    def _start_connection(self, sock, peer):
        self._accepted += 1
        if self._served_its_share():
            # This worker has served its share: finish, and let the
            # supervisor start a fresh one.
            self.reactor.call_soon(self.shutdown)
        sock.setblocking(False)
        if sock.family != getattr(socket, "AF_UNIX", None):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_side=True,
                                                    do_handshake_on_connect=False)
            except OSError as exc:
                _log.debug("TLS wrap failed: %s", exc)
                sock.close()
                return
        info = Connection("%s-%d" % (self.alias, next(self._connection_ids)), sock, peer, self,
                          tls=self.ssl_context is not None)
        conn = _HTTPConnection(self, sock, info)
        self.connections.add(conn)
        if 0 <= self.concurrency <= len(self.connections):
            self._pause_accepting()
        self.call_special("on_connect", info)
        if not conn.closed:
            conn.start()
        return conn

    # -- what connections call

    def connection_closed(self, conn):
        """``conn`` closes: on_disconnect (its addresses still readable); its slot is free."""
        self.connections.discard(conn)
        self.call_special("on_disconnect", conn.info)
        if not self.shutting_down and not self._accepting:
            self._resume_accepting()
        self._maybe_finished()

    def handle_request(self, conn, response):
        """501 for an unknown method, 401 without credentials (``auth``), else
        pre_request, then the handler (failed if it raises)."""
        request = response.request
        if request.method not in self.methods:
            return response.error(501, "Method %s not implemented.\n" % request.method)
        # Before pre_request and routing: no application code, and no 404
        # that tells which paths exist, for a client without credentials.
        if self.password_check is not None and not self._authenticate(request, response):
            return
        if self.router.specials:
            self.call_special("pre_request", request)
            if conn.closed:
                return
        handler = self.router.find(request.path, conn.routes)
        if handler is None:
            return response.error(404, "No handler for path %s.\n" % _quote_path(request.path))
        try:
            handler(request, response)
        except Exception:
            _log.exception("handler for %s %s raised", request.method, request.head.target)
            response.fail()

    def admit(self, conn, head):
        """Where the body of a request whose head has arrived goes, before it is read.

        None: into memory, spooled to a temporary file past
        ``Limits.spool_body``; or the file that the handler's
        ``receive_body(head)`` returns.  Raises HTTPError to answer at once,
        without 100 Continue and without reading the body: 401 without valid
        credentials, 501 for an unknown method, or what the handler refuses.
        """
        if head.method not in self.methods:
            raise HTTPError(501, "Method %s not implemented." % head.method)
        if self.password_check is not None:
            head.user = self._credentials(head, conn.info)
        if self.password_check is not None and head.user is None:
            raise HTTPError(401, _NEEDS_PASSWORD,
                            headers=[("WWW-Authenticate", self.auth_challenge)])
        receive_body = getattr(self.router.find(head.path, conn.routes), "receive_body", None)
        return None if receive_body is None else receive_body(head)

    def _credentials(self, head, info):
        """The user name of valid credentials in ``head``, else None (HTTPError 500 if the check raised)."""
        credentials = _basic_credentials(head.header("Authorization"))
        if credentials is not None:
            try:
                accepted = self.password_check(*credentials)
            except Exception:
                _log.exception("auth check raised for %s %s", head.method, head.target)
                raise HTTPError(500, "The credentials could not be checked.") from None
            if accepted:
                return credentials[0]
        # Debug, not warning: a scanner's every guess would be a log line.
        _log.debug("%s: %s %s: no valid credentials", info.ID, head.method,
                   _log_escape(head.target))
        return None

    def _authenticate(self, request, response):
        """Set ``request.user`` from valid credentials, or answer 401 (500 if the check raised)."""
        head = request.head
        try:
            # A request with a body was checked before its body was read: once is enough.
            request.user = head.user or self._credentials(head, request.connection)
        except HTTPError:
            response.fail()
            return False
        if request.user is not None:
            return True
        response.headers.set("WWW-Authenticate", self.auth_challenge)
        response.error(401, _NEEDS_PASSWORD)
        return False

    def request_done(self, conn, response):
        """A response is on the wire: the access log and post_request."""
        if self.access_log is not None:
            self._log_access(conn, response)
        if "post_request" in self.router.specials:
            response.content = b""
            self.call_special("post_request", response.request, response)

    def request_aborted(self, conn, response, head_sent):
        """The connection closed before ``response`` was all on the wire: the access log.

        As nginx: the status the response has when its head went out, else 499
        (the client closed the request), and the bytes that did go out.
        """
        if self.access_log is not None:
            self._log_access(conn, response, None if head_sent else 499)

    def _log_access(self, conn, response, status=None):
        # Hot path (the command line logs by default): what a line needs is
        # kept, and the lines are made together when they are written.
        request = response.request
        combined = (request.header("Referer"), request.header("User-Agent")) \
            if self._combined_log else None
        entries = self._access_entries
        head = request.head  # its fields are let go: a batch holds no request's heap
        entries.append((request.remote_ip, conn.info.remote_ip, request.user, head.method,
                        head.target, head.version, status or response.code, conn.body_sent,
                        time.time(), combined))
        if len(entries) == 1:
            self._access_timer = self.reactor.call_later(_ACCESS_LOG_DELAY,
                                                         self.flush_access_log)
        elif len(entries) >= _ACCESS_LOG_BATCH:
            self.flush_access_log()

    def flush_access_log(self):
        """Write the access log lines waiting, as one record (one a request costs microseconds)."""
        if self._access_timer is not None:
            self._access_timer.cancel()
            self._access_timer = None
        entries, self._access_entries = self._access_entries, []
        if entries:
            self.access_log.info("%s", _access_lines(entries))

    def new_response(self, conn, head, content, trailers):
        """The Response, with its Request, for a request that has arrived whole."""
        return Response(Request(head, content, conn.info, trailers), conn)

    def error_response(self, conn, head, exc):
        """The Response to a protocol error, as ``on_error`` has left it."""
        headers = Headers({"Content-Type": "text/html; charset=utf-8"})
        for name, value in exc.headers:
            headers.set(name, value)
        error = Error(code=exc.status, content=_error_page(exc.status, exc.message),
                      headers=headers, connection=conn.info)
        self.call_special("on_error", error)
        response = Response(Request(head, b"", conn.info), conn, error.code)
        response.message = error.message
        response.headers = error.headers
        content = error.content
        response.content = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        return response

    def network_error(self, conn, op, exc):
        """``on_error`` for a failed ``op`` (read, write, accept...)."""
        if "on_error" in self.router.specials:
            error = Error(op=op, errnum=exc.errno or 0, errstr=exc.strerror or str(exc),
                          connection=conn.info if conn is not None else None)
            error.content = "%s error [%s] %s" % (op, error.errnum, error.errstr)
            self.call_special("on_error", error)

    def call_special(self, name, *args):
        """Call a special handler if it is set; False when it raised."""
        special = self.router.specials.get(name)
        if special is not None:
            try:
                special(*args)
            except Exception:
                _log.exception("special handler %s raised", name)
                return False
        return True

    # -- handlers at run time

    def handlers_get(self):
        """A dict of regex (or special name) -> handler."""
        return self.router.get()

    def handlers_set(self, handlers):
        """Replace every handler."""
        self.router.set(handlers)

    def handlers_add(self, handlers):
        """Add handlers; a regex that exists moves to the end."""
        self.router.add(handlers)

    def handlers_remove(self, regexes):
        """Remove handlers by regex: a str, a list, or a dict's keys."""
        self.router.remove(regexes)

    def __repr__(self):
        return "<Server %s on %s:%s>" % (self.alias, self.host, self.port)


class _Supervisor:
    """Prefork workers' parent: starts, replaces and stops them (SIGTERM/SIGINT; twice: kill)."""

    # A worker that fails sooner than this after its start would fail again
    # at once: wait this long before starting its replacement.
    RESTART_DELAY = 1.0

    def __init__(self, reactor, servers):
        self.reactor = reactor
        self.servers = servers
        self.size = max(server.prefork for server in servers)
        self.workers = {}  # pid -> start time
        self.stopping = False
        self._restart_at = 0.0
        self._wake_recv = self._wake_send = self._selector = None
        self._child_handler = None

    def run(self, ready=None):
        """Supervise until stopped; ``ready()`` is called once the stop signals are caught."""
        import signal  # deferred: import time
        # Signals and ended children both write a byte to this socket, so the
        # wait below never sleeps through one (a Python handler runs only
        # when bytecode runs, which a blocking waitpid() would postpone).
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._wake_send.setblocking(False)
        self._selector = selector = selectors.DefaultSelector()
        selector.register(self._wake_recv, selectors.EVENT_READ)
        restore = None
        try:
            previous, restore = _catch_signals(
                {signal.SIGINT: self._on_signal, signal.SIGTERM: self._on_signal,
                 signal.SIGCHLD: self._on_child}, self._wake_send.fileno())
            # Workers get back what the application had for SIGCHLD.
            self._child_handler = previous[signal.SIGCHLD]
            if ready is not None:
                ready()
            while True:
                self._reap()
                now = time.monotonic()
                if not self.stopping and now >= self._restart_at:
                    self._start_workers()
                if self.stopping and not self.workers:
                    break
                timeout = None if self.stopping or now >= self._restart_at \
                    else self._restart_at - now
                selector.select(timeout)
                try:
                    while self._wake_recv.recv(4096):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
        finally:
            if self.workers and not self.stopping:
                self._signal_workers(signal.SIGTERM)  # left by an error: not orphaned
            if restore is not None:
                restore()
            selector.close()
            self._wake_recv.close()
            self._wake_send.close()
            for server in self.servers:
                server.stop_listening()
                self.reactor.remove_server(server)

    def _reap(self):
        """Collect every ended worker; a quick death delays its replacement."""
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            started = self.workers.pop(pid, None)
            if started is None or self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status) if hasattr(
                os, "waitstatus_to_exitcode") else status
            if code == 0:  # recycled after its connections: replaced at once
                _log.info("worker %d recycled; starting another", pid)
                continue
            _log.warning("worker %d ended (status %s); starting another", pid, code)
            if time.monotonic() - started < self.RESTART_DELAY:
                self._restart_at = time.monotonic() + self.RESTART_DELAY

    @staticmethod
    def _on_child(number, frame):
        pass  # installed so that SIGCHLD reaches the wake-up socket

    def _on_signal(self, number, frame):
        import signal  # deferred: import time
        if self.stopping:
            self._signal_workers(signal.SIGKILL)
            raise SystemExit(128 + number)
        self.stopping = True
        _log.info("signal %d: stopping %d workers (again to kill them)", number, len(self.workers))
        self._signal_workers(signal.SIGTERM)

    def _signal_workers(self, number):
        for pid in list(self.workers):
            try:
                os.kill(pid, number)
            except ProcessLookupError:
                pass

    def _start_workers(self):
        import signal  # deferred: import time
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        while len(self.workers) < self.size and not self.stopping:
            # Held back while forking: the parent records the worker before
            # a stop signal can look for it, and the child sets its own
            # handlers before any signal can reach the parent's in it.
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
            try:
                # A stop signal that arrived just before the block may have
                # been handled since the loop's test: no worker it would miss.
                if self.stopping:
                    break
                pid = os.fork()
                if pid == 0:
                    self._be_worker()  # never returns
                self.workers[pid] = time.monotonic()
                if self.stopping:
                    # Another thread took the signal, and its handler ran
                    # between the fork and the line above.
                    os.kill(pid, signal.SIGTERM)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)

    def _be_worker(self):
        code = 1
        try:
            import signal  # deferred: import time
            # Ctrl-C reaches the whole process group: the parent alone
            # decides, and tells the workers with SIGTERM.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGCHLD, self._child_handler or signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            self._selector.close()
            self._wake_recv.close()
            self._wake_send.close()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            self.reactor.after_fork()
            for server in self.servers:
                server.become_worker()
            self.reactor.run(signals=(signal.SIGTERM,))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            _log.exception("worker %d failed", os.getpid())
        finally:
            os._exit(code)  # a forked child leaves without the parent's cleanup


def _serve(reactor, signals=True, ready=None):
    # What exists when serving begins (the application, its modules, the
    # servers) lives as long as they serve: out of the collector's way, a
    # full collection scans what requests made, and pauses every connection
    # for microseconds rather than milliseconds (the slowest percent of
    # requests waited for it).  Forked workers keep those pages shared.
    import gc  # deferred: import time
    gc.collect()
    gc.freeze()
    try:
        # ready() runs once the stop signals are caught: a Ctrl-C right after
        # the "Serving" line it prints must stop gracefully, not kill.
        preforked = [server for server in reactor.servers if server.needs_supervisor]
        if preforked:
            _Supervisor(reactor, preforked).run(ready)
        else:
            if ready is not None:
                reactor.call_soon(ready)  # the first turn, after run() caught the signals
            reactor.run(signals=signals)
    finally:
        gc.unfreeze()


def spawn(**config):
    """Create a ``Server`` with these options and start it."""
    return Server(**config).start()


def run(signals=True):
    """Run the default reactor (or supervise the prefork workers) until every server has ended."""
    _serve(default_reactor(), signals)


def stop():
    """Make ``run()`` return; callable from any thread."""
    default_reactor().stop()


def post(alias, event, *args):
    """Call ``shutdown`` or a ``handlers_*`` method of a server by alias, from any thread."""
    server = _servers_by_alias.get(alias)
    if server is None:
        raise LookupError("no server with alias %r" % alias)
    if event not in ("shutdown", "handlers_set", "handlers_add", "handlers_remove"):
        raise ValueError("unknown event %r" % event)
    server.reactor.call_soon_threadsafe(getattr(server, event), *args)


# === 15. Command line ===

# Where the command line's defaults differ from spawn()'s: it is for a person
# at a terminal, who wants keep-alive and a port that needs no privileges.
# keepalive: as nginx's keepalive_requests; a lower cap makes every Nth request
# wait for a new connection (and, under TLS, a handshake): the tail.
_CLI_DEFAULTS = {"port": 8000, "keepalive": 1000}

# The groups of --help, in order, with the server options each holds (the
# flags of the command line's own go in by name, in _argument_parser).
_CLI_GROUPS = (
    ("where it listens", ("port", "host", "unix", "unix_mode", "fd", "reuse_port",
                          "trusted_proxies")),
    ("what it serves", ("auth_realm",)),
    ("limits", ("keepalive", "keepalivetimeout", "timeout", "concurrency",
                "shutdown_timeout", "blocksize", "sendfile")),
    ("logging", ("access_log", "access_log_format")),
    ("applications", ("prefork", "recycle", "methods")),
)

_CLI_EXAMPLES = """\
examples:
  python -m poex_http                               this directory on port 8000
  python -m poex_http 8080 -b 127.0.0.1             only this machine, port 8080
  python -m poex_http -p 8080 -d /srv/files         -d/--directory: http.server's --root
  python -m poex_http --access-log access.log --access-log-format combined
  python -m poex_http --version

Stop with Ctrl-C or SIGTERM: requests in flight finish first; a second signal
exits at once."""


def _size(text):
    """A byte count as a person writes it: 500000, 64K, 100M, 2G (powers of 1024, as nginx)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError("not a size: %r (e.g. 500000, 64K, 100M, 2G)" % text)
    return int(match.group(1)) << 10 * " kmgt".index(match.group(2).lower() or " ")


def _argument_parser():
    import argparse  # deferred: import time
    parser = argparse.ArgumentParser(
        prog="python -m poex_http",
        description="Serve a directory over HTTP/1.1 (poex_http %s)." % __version__,
        epilog=_CLI_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="poex_http %s" % __version__)
    groups = {title: parser.add_argument_group(title) for title, _ in _CLI_GROUPS}
    listens, serves, logs, applications = (
        groups["where it listens"], groups["what it serves"], groups["logging"],
        groups["applications"])
    # The port's default is applied after parsing (_parse_arguments), so that
    # a positional port can be told apart from --port.
    listens.add_argument("port_arg", nargs="?", type=int, metavar="PORT",
                         help="TCP port, as --port")
    serves.add_argument("-d", "--root", "--directory", default=".", metavar="DIR",
                        help="directory to serve (-d/--directory as in http.server) "
                             "[default: .]")
    serves.add_argument("--no-listing", dest="listing", action="store_false",
                        help="answer 403 for a directory without index.html "
                             "instead of listing it")
    serves.add_argument("--dotfiles", choices=("hide", "allow"), default="hide",
                        help="'allow' serves and lists names starting with '.' (.git, .env); "
                             "hidden (404) otherwise, /.well-known/ aside [default: hide]")
    serves.add_argument("--upload", action="store_true",
                        help="accept uploads into the root: PUT /path/name stores the body "
                             "(curl -T FILE URL), POST multipart/form-data to a directory "
                             "stores each file (curl -F file=@FILE URL/)")

    def size(text):
        try:
            return _size(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    serves.add_argument("--max-upload", type=size, default=None, metavar="SIZE",
                        help="with --upload, the largest request body, e.g. 500M or 2G "
                             "(larger gets 413 before a byte is stored) [default: 100M]")
    serves.add_argument("--no-replace", dest="replace", action="store_false",
                        help="with --upload, never replace an existing file (409 Conflict; "
                             "412 when the client sent If-None-Match: *)")
    serves.add_argument("--delete", action="store_true",
                        help="accept DELETE of a file under the root (not implied by "
                             "--upload)")
    serves.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="add a header to every response (repeatable)")
    serves.add_argument("--auth", action="append", metavar="USER:PASSWORD",
                        help="ask every client for this user name and password (HTTP Basic; "
                             "repeatable, one per user); sent in clear without --certfile")
    logs.add_argument("--quiet", action="store_true",
                      help="no access log, and no word of stopping on stderr "
                           "(warnings still)")
    applications.add_argument("--wsgi", metavar="MODULE:APP",
                              help="serve this WSGI application instead of a directory "
                                   "(e.g. myproject.wsgi:application)")
    applications.add_argument("--threads", type=int, default=8, metavar="N",
                              help="worker threads for --wsgi (per worker process); 0 runs "
                                   "the application on the loop's thread, for one that never "
                                   "waits on I/O [default: 8]")
    group_of = {name: groups[title] for title, names in _CLI_GROUPS for name in names}
    for option in SERVER_OPTIONS:
        if option.flag:
            default = None if option.name == "port" else _CLI_DEFAULTS.get(
                option.name, option.default)
            cli = dict(option.cli)
            help_text = cli.pop("help", None)
            if help_text is None:
                help_text = option.doc
                if default is not None and cli.get("action") not in ("store_true",
                                                                     "store_false"):
                    help_text += " [default: %s]" % default
            group_of[option.name].add_argument(*option.flags, dest=option.name,
                                               default=default, help=help_text, **cli)
    listens.add_argument("--certfile", metavar="PEM",
                         help="serve HTTPS with this certificate chain (and key, "
                              "unless --keyfile is given)")
    listens.add_argument("--keyfile", metavar="PEM", help="private key for --certfile")
    return parser


def _parse_arguments(argv):
    """The parsed command line, with the port settled (argparse's exit 2 on a conflict)."""
    parser = _argument_parser()
    args = parser.parse_args(argv)
    if args.port_arg is not None and args.port is not None and args.port_arg != args.port:
        parser.error("PORT %d and --port %d disagree: give one of them"
                     % (args.port_arg, args.port))
    for port in (args.port_arg, args.port, _CLI_DEFAULTS["port"]):
        if port is not None:
            args.port = port
            break
    return args


def _lan_addresses(families):
    """This machine's addresses other machines may reach (no loopback, no link-local).

    Found with the standard library alone: a UDP socket connected towards a
    documentation address (RFC 5737, RFC 3849) takes the address of the
    interface with the default route, without sending anything; the host
    name's addresses add the others it resolves to.
    """
    import ipaddress  # deferred: import time
    probes = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}
    found = []
    for family in families:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((probes[family], 9))
                found.append(probe.getsockname()[0])
        except OSError:
            pass  # no route: no network
        try:
            found.extend(info[4][0] for info in socket.getaddrinfo(
                socket.gethostname(), None, family, socket.SOCK_STREAM))
        except OSError:
            pass
    addresses = []
    for text in found:
        address = ipaddress.ip_address(text.partition("%")[0])
        if not (address.is_loopback or address.is_link_local or address.is_unspecified) \
                and text not in addresses:
            addresses.append(text)
    return addresses


def _listen_urls(server):
    """The URLs a person can open: the address listened on, or for all interfaces the
    loopback one first and then this machine's network addresses."""
    address = server.address
    if not isinstance(address, tuple):
        return ["http+unix://%s" % address]
    host, port = address[:2]
    scheme = "https" if server.ssl_context else "http"

    def url(ip):
        return "%s://%s:%d/" % (scheme, "[%s]" % ip if ":" in ip else ip, port)
    if host == "0.0.0.0":
        families = (socket.AF_INET,)
    elif host == "::":
        # Without an address it listens on both (dual stack); "::" given is IPv6 only.
        families = (socket.AF_INET, socket.AF_INET6) if server.host in (None, "", "*") \
            else (socket.AF_INET6,)
    else:
        return [url(host)]
    loopback = "127.0.0.1" if socket.AF_INET in families else "::1"
    return [url(loopback)] + [url(ip) for ip in _lan_addresses(families)]


def _reachable_in_clear(server):
    """Does ``server`` listen without TLS on an address other hosts may reach?"""
    address = server.address
    if server.ssl_context is not None or not isinstance(address, tuple):
        return False  # TLS, or a Unix socket
    import ipaddress  # deferred: import time
    ip = ipaddress.ip_address(address[0].partition("%")[0])
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return not ip.is_loopback


def _fail(message):
    print("poex_http: %s" % message, file=sys.stderr)
    return 1


def _cli_handler(args):
    """The handler the command line serves: a WSGI application or a directory."""
    if args.wsgi:
        sys.path.insert(0, os.getcwd())
        try:
            app = _import_object(args.wsgi)
        except Exception as exc:  # the application's own import may fail any way
            raise ValueError("cannot load --wsgi %s: %s: %s"
                             % (args.wsgi, type(exc).__name__, exc)) from None
        return WSGIHandler(app, threads=args.threads), args.wsgi
    root = os.path.abspath(args.root)
    if not os.path.exists(root):
        raise ValueError("root directory %s does not exist" % root)
    if not os.path.isdir(root):
        raise ValueError("root %s is not a directory" % root)
    try:
        with os.scandir(root) as entries:  # refused now, not at the first request
            next(entries, None)
    except OSError as exc:
        raise ValueError("cannot read root directory %s: %s"
                         % (root, exc.strerror or exc)) from None
    return StaticFiles(root, listing=args.listing, dotfiles=args.dotfiles, upload=args.upload,
                       replace=args.replace, delete=args.delete), root


# What --upload accepts without --max-upload: a firmware image or a video, not a disk.
_CLI_MAX_UPLOAD = 100 * 2**20


def _cli_upload_limits(args):
    """The Limits for --upload and --max-upload (None: the defaults)."""
    if not args.upload:
        for flag, given in (("--max-upload", args.max_upload is not None),
                            ("--no-replace", not args.replace)):
            if given:
                raise ValueError("%s needs --upload" % flag)
    if args.wsgi and (args.upload or args.delete):
        raise ValueError("--upload and --delete serve a directory, not --wsgi")
    if not args.upload:
        return None
    return Limits(max_body=_CLI_MAX_UPLOAD if args.max_upload is None else args.max_upload)


def _cli_ssl_context(args):
    if not args.certfile:
        if args.keyfile:
            raise ValueError("--keyfile needs --certfile")
        return None
    import ssl  # deferred: import time
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError("cannot load --certfile %s: %s" % (
            args.certfile, getattr(exc, "strerror", None) or exc)) from None
    return context


def main(argv=None):
    """The command line, ``python -m poex_http [PORT] [--root DIR] ...``; returns the exit code."""
    args = _parse_arguments(argv)
    import logging  # deferred (import time), as for _log
    logging.basicConfig(level=logging.WARNING, format="poex_http: %(message)s")
    if not args.quiet:
        logging.getLogger("poex_http").setLevel(logging.INFO)  # stopping, stopped...
    config = {option.name: getattr(args, option.name) for option in SERVER_OPTIONS if option.flag}
    config["access_log"] = None if args.quiet else (args.access_log or "-")
    headers = Headers({"Server": "poex_http/%s" % __version__})
    try:
        for line in args.header:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError("--header needs 'Name: value', not %r" % line)
            headers.set(name.strip(), value.strip())
        if args.auth:
            if not all(":" in entry for entry in args.auth):
                raise ValueError("--auth needs USER:PASSWORD (a value has no colon)")
            config["auth"] = args.auth
        try:
            _basic_challenge(args.auth_realm)  # here, not as "cannot listen"
        except ValueError as exc:
            raise ValueError("--auth-realm: %s" % exc) from None
        config["ssl_context"] = _cli_ssl_context(args)
        config["limits"] = _cli_upload_limits(args)
        handler, what = _cli_handler(args)
        if config["access_log"] not in (None, "-"):
            try:
                _open_access_log(config["access_log"])  # fails here, not in the server
            except OSError as exc:
                raise ValueError("cannot open --access-log %s: %s"
                                 % (config["access_log"], exc.strerror or exc)) from None
    except ValueError as exc:
        return _fail(exc)
    config["headers"] = headers.items()
    try:
        server = Server(handlers=[("", handler)], retry=0, **config).start()
    except (OSError, ValueError, OverflowError) as exc:
        errnum = getattr(exc, "errno", None)
        reason = os.strerror(errnum) if isinstance(errnum, int) and errnum > 0 else str(exc)
        if isinstance(exc, socket.gaierror):
            reason = exc.strerror
        return _fail("cannot listen on %s: %s" % (config["unix"] or "%s:%s" % (
            config["host"] or "*", config["port"]), reason))
    urls = _listen_urls(server)
    if args.auth and _reachable_in_clear(server):
        _log.warning(
            "--auth without --certfile on %s: passwords cross the network in clear", urls[0])

    def announce():
        print("Serving %s on %s" % (what, urls[0]), flush=True)
        for url in urls[1:]:
            print("Also on %s" % url, flush=True)
    _serve(server.reactor, ready=announce)
    print("Stopped serving %s" % what, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
