"""Tests of poex_http: the parser and helpers without sockets, then live
servers over loopback spoken to with exact bytes and with real clients.

Run: python -m pytest test_poex_http.py
"""
import contextlib
import os
import random
import socket
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
