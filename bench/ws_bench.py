"""Benchmark poex_http's WebSocket echo against websockets, aiohttp and tornado.

Run from the project root:

    python3 bench/ws_bench.py --peer-python VENV/bin/python [--servers poex,aiohttp]
                              [--workloads small,1m,idle] [--idle-connections 2000] [-o OUTDIR]

Workloads, each against a freshly started server pinned to CPU 0 while the
load client runs pinned to CPU 1:

    small  N connections, each sending M small text messages one at a time
           (send, wait for the echo, send the next): messages/s, p50, p99.
    1m     a few connections echoing 1 MiB binary messages one at a time: MiB/s.
    idle   memory per idle WebSocket connection: the server's RSS before and
           after opening many connections, in KiB per connection.

The load client is ws_peers/ws_load.c, built with cc when the script starts;
without a compiler (or with --client python) this script itself runs as the
client (--client-worker), stdlib only, which is fast enough for the slower
servers but not for the fastest. Both use non-blocking sockets on epoll, mask
one frame in advance for all connections, and check every echo byte for byte.
No permessage-deflate is offered, so every server sends plain frames. The
server "raw-echo" (a C epoll TCP echo, ws_peers/raw_echo.c) shows what the
client can drive when the server costs next to nothing; the CPU columns show
whether the server or the client was the limit, and whether anything else on
the machine took CPU time during the run. This script uses the standard
library only.
"""

import argparse
import base64
import collections
import errno
import hashlib
import json
import os
import platform
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (BENCH_DIR, HOST, PROJECT_ROOT, Skip, command_output, cpu_model, cpu_pins,
                     error_text, fmt, free_port, log, name_list, peak_rss_mib, process_tree,
                     raise_nofile_limit, run_script, skipped_json, start_server, status_kib,
                     stop_server, tail, wait_for_port, write_results)

PEERS_DIR = os.path.join(BENCH_DIR, "ws_peers")
PATH = "/echo"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MIB = 1024 * 1024

START_TIMEOUT = 15.0     # seconds for a server to listen
CHECK_TIMEOUT = 5.0      # seconds for each step of the echo check
IDLE_SETTLE = 2.0        # seconds between the last idle handshake and reading RSS
NOFILE_WANTED = 65536    # open files for the client and the servers (idle workload)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# --- Frames (RFC 6455 section 5).

def apply_mask(data, key):
    """XOR *data* with the 4-byte *key*, as one big integer: fast enough for 1 MiB."""
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big")


def frame_header(opcode, length, masked):
    first = bytes([0x80 | opcode])   # FIN: every frame the client sends is whole
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return first + bytes([mask_bit | length])
    if length < 1 << 16:
        return first + bytes([mask_bit | 126]) + length.to_bytes(2, "big")
    return first + bytes([mask_bit | 127]) + length.to_bytes(8, "big")


def client_frame(opcode, payload, key):
    """A masked frame, as a client must send it."""
    return frame_header(opcode, len(payload), True) + key + apply_mask(payload, key)


def server_frame(opcode, payload):
    """An unmasked, unfragmented frame: the exact bytes an echo server sends back."""
    return frame_header(opcode, len(payload), False) + payload


def parse_frame(buf):
    """(fin, opcode, payload, size) of the frame at the start of *buf*; None if incomplete."""
    if len(buf) < 2:
        return None
    length, pos = buf[1] & 0x7F, 2
    if length == 126:
        if len(buf) < 4:
            return None
        length, pos = int.from_bytes(buf[2:4], "big"), 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length, pos = int.from_bytes(buf[2:10], "big"), 10
    key = None
    if buf[1] & 0x80:
        if len(buf) < pos + 4:
            return None
        key, pos = bytes(buf[pos:pos + 4]), pos + 4
    if len(buf) < pos + length:
        return None
    payload = bytes(buf[pos:pos + length])
    if key is not None:
        payload = apply_mask(payload, key)
    return bool(buf[0] & 0x80), buf[0] & 0x0F, payload, pos + length


def handshake_request(port, key):
    # No Sec-WebSocket-Extensions: permessage-deflate is not offered.
    return ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (PATH, HOST, port, key)).encode("ascii")


def check_handshake_response(head, key):
    """None if *head* (bytes up to the blank line) accepts the upgrade, else why not."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        return "status line %r" % lines[0]
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    expected = base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode()
    if fields.get("sec-websocket-accept") != expected:
        return "Sec-WebSocket-Accept %r, expected %r" % (fields.get("sec-websocket-accept"),
                                                         expected)
    if "sec-websocket-extensions" in fields:
        return "extension negotiated though none was offered: %r" % (
            fields["sec-websocket-extensions"])
    return None


def new_key():
    return base64.b64encode(os.urandom(16)).decode("ascii")


# --- The Python load client (`ws_bench.py --client-worker SPEC`, pinned to CPU 1),
# for machines without a C compiler; ws_peers/ws_load.c does the same in C.
#
# One process drives all its connections from one epoll loop. Every frame it
# sends is built and masked before the clock starts, and the echo it waits for
# is known byte for byte, so the common case per message is one recv, one
# bytes comparison and one send.

CONNECTING, HANDSHAKING, OPEN, CLOSED = range(4)
RECV_SIZE = 256 * 1024
BIG_ECHO = 64 * 1024     # echoes longer than this are received in place (see receive_big)


class Connection:
    __slots__ = ("sock", "fd", "state", "key", "inbuf", "out", "frame", "echo", "echo_head",
                 "opcode", "payload", "reply", "fragments", "remaining", "sent_at", "big",
                 "big_view", "got")

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()
        self.state = CONNECTING
        self.key = new_key()     # Sec-WebSocket-Key
        self.inbuf = bytearray()
        self.out = None          # memoryview of bytes not yet sent, or None
        self.frame = None        # the frame sent each round trip
        self.echo = None         # the exact bytes that must come back for it
        self.echo_head = b""     # their frame header
        self.opcode = None       # the message itself, to compare an echo that
        self.payload = None      # comes back in fragments
        self.reply = None        # self.echo while a round trip is outstanding, else None
        self.fragments = None    # [opcode, payload, ...] of a fragmented echo
        self.remaining = 0       # round trips still to start
        self.sent_at = 0.0
        self.big = None          # bytearray the size of a big echo, received into in place
        self.big_view = None
        self.got = 0             # bytes of the big echo received so far


class LoadClient:
    """Connections to one server: opened, driven in round trips, checked, closed."""

    def __init__(self, port, raw, timeout):
        self.port = port
        self.raw = raw           # raw-echo: no handshake; frames come back still masked
        self.deadline = time.monotonic() + timeout
        self.epoll = select.epoll()
        self.conns = {}          # fd -> Connection
        self.errors = collections.Counter()
        self.first_error = {}    # error kind -> the first full message of that kind
        self.mask_key = os.urandom(4)
        self.latencies = []
        self.record = None       # self.latencies while measuring, else None
        self.pending = 0         # connections whose round trips are not finished
        self.extra_fds = {}      # fd -> callback, e.g. stdin while waiting for "go"

    # An error ends its connection and is counted by kind.

    def fail(self, conn, kind, detail=None):
        if conn.state == CLOSED:
            return
        if conn.reply is not None or conn.remaining:
            self.pending -= 1
        self.errors[kind] += 1
        if detail:
            self.first_error.setdefault(kind, detail)
        self.drop(conn)

    def drop(self, conn):
        conn.state = CLOSED
        conn.reply = None
        conn.remaining = 0
        self.conns.pop(conn.fd, None)
        try:
            self.epoll.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()

    # Opening connections.

    def open(self, count, concurrency):
        """Open *count* connections, with at most *concurrency* handshakes at a time.

        Bounding the handshakes in flight keeps the server's listen backlog
        from overflowing, which would only add SYN retransmits of a second.
        """
        started = in_flight = opened = 0
        while (started < count or in_flight) and time.monotonic() < self.deadline:
            while started < count and in_flight < concurrency:
                started += 1
                if self.start_connect():
                    in_flight += 1
            for fd, events in self.epoll.poll(0.5):
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                if conn.state == OPEN:   # an already open one: pings, or an early close
                    self.on_readable(conn)
                    continue
                self.on_opening_event(conn)
                if conn.state in (OPEN, CLOSED):
                    in_flight -= 1
                    opened += conn.state == OPEN
        for conn in list(self.conns.values()):
            if conn.state != OPEN:
                self.fail(conn, "timeout opening")
        return opened

    def start_connect(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        # Small frames leave at once, as asyncio and tornado do for their sockets.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex((HOST, self.port))
        if code not in (0, errno.EINPROGRESS):
            self.errors["connect"] += 1
            self.first_error.setdefault("connect", os.strerror(code))
            sock.close()
            return False
        conn = Connection(sock)
        self.conns[conn.fd] = conn
        self.epoll.register(conn.fd, select.EPOLLOUT)
        return True

    def on_opening_event(self, conn):
        if conn.state == CONNECTING:
            code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.fail(conn, "connect", os.strerror(code))
                return
            self.epoll.modify(conn.fd, select.EPOLLIN)
            if self.raw:
                conn.state = OPEN
                return
            try:
                conn.sock.send(handshake_request(self.port, conn.key))   # small: goes whole
            except OSError as exc:
                self.fail(conn, "connect", str(exc))
                return
            conn.state = HANDSHAKING
            return
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.fail(conn, "handshake", "closed before the response head")
            return
        conn.inbuf += data
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            return
        problem = check_handshake_response(bytes(conn.inbuf[:end]), conn.key)
        if problem:
            self.fail(conn, "handshake", problem)
            return
        del conn.inbuf[:end + 4]
        conn.state = OPEN

    # Round trips.

    def prepare(self, opcode, payload):
        """Mask the frame to send and build the echo to expect, once for all connections."""
        frame = client_frame(opcode, payload, self.mask_key)
        echo = frame if self.raw else server_frame(opcode, payload)   # raw-echo: unchanged
        self.message = (frame, echo, echo[:len(echo) - len(payload)], opcode, payload)

    def round_trips(self, count, record):
        """Every open connection sends the prepared message *count* times, one at a time.

        Returns the start and end (time.monotonic) and the CPU seconds spent. With
        *record*, each round trip's latency is kept (seconds).
        """
        frame, echo, echo_head, opcode, payload = self.message
        conns = list(self.conns.values())
        for conn in conns:
            conn.frame, conn.echo, conn.echo_head = frame, echo, echo_head
            conn.opcode, conn.payload = opcode, payload
            conn.remaining = count
            if len(echo) > BIG_ECHO and (conn.big is None or len(conn.big) != len(echo)):
                conn.big = bytearray(len(echo))
                conn.big_view = memoryview(conn.big)
        self.record = self.latencies if record else None
        self.pending = len(conns)
        cpu_before, start = cpu_seconds(), time.monotonic()
        for conn in conns:
            self.send_next(conn)
        self.loop(lambda: self.pending > 0)
        end, cpu = time.monotonic(), cpu_seconds() - cpu_before
        self.record = None
        for conn in list(self.conns.values()):
            if conn.reply is not None or conn.remaining:
                self.fail(conn, "timeout")
        return start, end, cpu

    def send_next(self, conn):
        conn.remaining -= 1
        conn.reply = conn.echo
        conn.sent_at = time.perf_counter()
        self.send(conn, conn.frame)

    def send(self, conn, data):
        if conn.state != OPEN:
            return
        if conn.out is not None:   # a frame is half out; this one queues behind it
            conn.out = memoryview(bytes(conn.out) + data)
            return
        sent = self.send_some(conn, data)
        if sent is None:
            return
        if sent < len(data):
            conn.out = memoryview(data)[sent:]
            self.epoll.modify(conn.fd, select.EPOLLIN | select.EPOLLOUT)

    def on_writable(self, conn):
        sent = self.send_some(conn, conn.out)
        if not sent:
            return
        conn.out = conn.out[sent:] if sent < len(conn.out) else None
        if conn.out is None:
            self.epoll.modify(conn.fd, select.EPOLLIN)

    def send_some(self, conn, data):
        """Bytes of *data* the socket took (0 when it is full); None if the connection failed."""
        try:
            return conn.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self.fail(conn, "closed by server", str(exc))
            return None

    def receive(self, conn, recv, arg):
        """*conn*'s socket method *recv* (recv or recv_into) called with *arg*: what it returns.

        None when nothing came: the socket had nothing yet, or the connection
        failed (an error, or the server's end of stream) and has been dropped.
        """
        try:
            got = recv(arg)
        except BlockingIOError:
            return None
        except OSError as exc:
            self.fail(conn, "closed by server", str(exc))
            return None
        if not got:
            self.fail(conn, "closed by server", "end of stream")
            return None
        return got

    def on_readable(self, conn):
        if conn.big is not None and conn.reply is not None and not conn.inbuf:
            self.receive_big(conn)
            return
        data = self.receive(conn, conn.sock.recv, RECV_SIZE)
        if data is None:
            return
        if not conn.inbuf and data == conn.reply:   # the common case: one whole echo
            self.echoed(conn)
            return
        conn.inbuf += data
        self.consume(conn)

    def receive_big(self, conn):
        """Receive a big echo straight into its buffer: no copy but the kernel's.

        It reads no further than the echo's end, so nothing of a later frame is
        taken; if the bytes turn out not to be the echo's (a ping first, a
        fragmented echo), they move to the input buffer for consume().
        """
        received = self.receive(conn, conn.sock.recv_into, conn.big_view[conn.got:])
        if received is None:
            return
        before, conn.got = conn.got, conn.got + received
        head = conn.echo_head
        if before < len(head):
            seen = min(conn.got, len(head))
            if conn.big_view[:seen] != head[:seen]:
                conn.inbuf += conn.big_view[:conn.got]
                conn.got = 0
                self.consume(conn)
                return
        if conn.got == len(conn.big):
            conn.got = 0
            if conn.big != conn.reply:   # bytearray against bytes: a memcmp, no copy
                self.fail(conn, "wrong echo", "payload differs")
                return
            self.echoed(conn)

    def consume(self, conn):
        """Take whole echoes and control frames off the front of the input buffer."""
        buf = conn.inbuf
        while buf and conn.state == OPEN:
            reply = conn.reply
            if reply is not None:
                head = conn.echo_head
                seen = min(len(buf), len(head))
                if buf[:seen] == head[:seen]:   # the echo as expected, perhaps still arriving
                    if len(buf) < len(reply):
                        return
                    if buf[:len(reply)] != reply:
                        self.fail(conn, "wrong echo", "payload differs")
                        return
                    del buf[:len(reply)]
                    self.echoed(conn)
                    continue
                if self.raw:
                    self.fail(conn, "wrong echo", "raw-echo changed the bytes")
                    return
            # Anything else: a control frame, a fragmented echo, or a wrong one.
            frame = parse_frame(buf)
            if frame is None:
                return
            fin, opcode, payload, size = frame
            del buf[:size]
            self.on_frame(conn, fin, opcode, payload)

    def on_frame(self, conn, fin, opcode, payload):
        if opcode == OP_PING:
            self.send(conn, client_frame(OP_PONG, payload, self.mask_key))
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            self.fail(conn, "closed by server", "close frame, code %s" % code)
        elif conn.reply is None:
            self.fail(conn, "unexpected frame", "opcode %d with nothing outstanding" % opcode)
        elif opcode in (OP_TEXT, OP_BINARY) and conn.fragments is None:
            if not fin:
                conn.fragments = [opcode, payload]
            elif opcode == conn.opcode and payload == conn.payload:
                self.echoed(conn)
            else:
                self.fail(conn, "wrong echo", "opcode %d, %d bytes for opcode %d, %d bytes"
                          % (opcode, len(payload), conn.opcode, len(conn.payload)))
        elif opcode == OP_CONT and conn.fragments is not None:
            conn.fragments.append(payload)
            if fin:
                first_opcode, whole = conn.fragments[0], b"".join(conn.fragments[1:])
                conn.fragments = None
                if first_opcode == conn.opcode and whole == conn.payload:
                    self.echoed(conn)
                else:
                    self.fail(conn, "wrong echo", "fragmented echo differs")
        else:
            self.fail(conn, "wrong echo", "opcode %d out of sequence" % opcode)

    def echoed(self, conn):
        if self.record is not None:
            self.record.append(time.perf_counter() - conn.sent_at)
        conn.reply = None
        if conn.remaining:
            self.send_next(conn)
        else:
            self.pending -= 1

    def loop(self, keep_going):
        conns, poll, extra_fds = self.conns, self.epoll.poll, self.extra_fds
        while keep_going():
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                return
            for fd, events in poll(min(timeout, 1.0)):
                conn = conns.get(fd)
                if conn is None:
                    callback = extra_fds.get(fd)
                    if callback:
                        callback()
                    continue
                if events & select.EPOLLOUT and conn.out is not None:
                    self.on_writable(conn)
                if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and \
                        conn.state == OPEN:
                    self.on_readable(conn)

    def wait_for_line(self, stream):
        """Read one line from *stream*, answering the server's pings meanwhile."""
        lines = []
        fd = stream.fileno()
        self.extra_fds[fd] = lambda: lines.append(stream.readline())
        self.epoll.register(fd, select.EPOLLIN)
        self.loop(lambda: not lines)
        self.epoll.unregister(fd)
        del self.extra_fds[fd]
        return lines[0] if lines else ""

    def close_all(self):
        """Send a close frame on every connection (unless raw), then close its socket."""
        close = client_frame(OP_CLOSE, (1000).to_bytes(2, "big"), self.mask_key)
        for conn in list(self.conns.values()):
            if not self.raw and conn.out is None:
                try:
                    conn.sock.send(close)
                except OSError:
                    pass
            self.drop(conn)


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client_worker(spec):
    """Run one share of a workload; talks to the parent in lines on stdin/stdout.

    Prints `ready {...}` once the connections are open (and warmed up), waits
    for `go`, runs, prints `result {...}`.
    """
    raise_nofile_limit(spec["connections"] + 256)
    client = LoadClient(spec["port"], spec["raw"], spec["timeout"])
    opened = client.open(spec["connections"], spec["concurrency"])
    opcode = OP_TEXT if spec["kind"] == "text" else OP_BINARY
    client.prepare(opcode, make_payload(spec["kind"], spec["size"]))
    if spec["warmup"]:
        client.round_trips(spec["warmup"], record=False)
    print("ready " + json.dumps({"opened": opened, "errors": client.errors,
                                 "first_error": client.first_error}), flush=True)
    if client.wait_for_line(sys.stdin).strip() != "go":
        return 1
    start, end, cpu = client.round_trips(spec["messages"], record=True)
    # At once, so that the parent's reading of the server's CPU time ends here.
    print("done", flush=True)
    client.close_all()
    print("result " + json.dumps({"start": start, "end": end, "cpu": cpu,
                                  "latencies": client.latencies, "errors": client.errors,
                                  "first_error": client.first_error}), flush=True)
    return 0


def make_payload(kind, size):
    if kind == "text":   # printable ASCII, so any UTF-8 check passes
        return (b"poex websocket echo benchmark " * (size // 30 + 1))[:size]
    return os.urandom(size)


# --- Servers.

# script: in ws_peers/; peer: runs under --peer-python and is compared with poex;
# raw: not WebSocket at all (the C TCP echo that measures the client's ceiling).
Server = collections.namedtuple("Server", "script peer raw")

SERVERS = {
    "poex": Server("poex_echo.py", False, False),
    "websockets": Server("websockets_echo.py", True, False),
    "aiohttp": Server("aiohttp_echo.py", True, False),
    "tornado": Server("tornado_echo.py", True, False),
    "raw-echo": Server("raw_echo.c", False, True),
}
PEERS = [name for name, server in SERVERS.items() if server.peer]


Workload = collections.namedtuple("Workload", "kind unit")
WORKLOADS = {
    "small": Workload("text", "msg/s"),
    "1m": Workload("binary", "MiB/s"),
    "idle": Workload("text", None),
}


def server_argv(name, port, args, build_dir):
    server = SERVERS[name]
    if server.raw:
        return [os.path.join(build_dir, "raw_echo"), str(port)]
    python = args.peer_python if server.peer else args.poex_python
    argv = [python, os.path.join(PEERS_DIR, server.script), "--host", HOST, "--port", str(port)]
    if name == "poex":
        argv += ["--poex-dir", args.poex_dir]
    return argv


def build_c(source, build_dir):
    """Compile ws_peers/SOURCE.c into *build_dir*; returns the program, or raises Skip."""
    if not shutil.which("cc"):
        raise Skip("no C compiler (cc) to build ws_peers/%s.c" % source)
    program = os.path.join(build_dir, source)
    proc = subprocess.run(["cc", "-O2", "-o", program, os.path.join(PEERS_DIR, source + ".c")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    if proc.returncode:
        raise Skip("cc failed on %s.c: %s" % (source, proc.stdout.strip()[-300:]))
    return program


def cc_version():
    return command_output(["cc", "--version"], check=False)


def probe_server(name, args, build_dir):
    """Version facts for *name*, or raise Skip saying why it cannot run."""
    server = SERVERS[name]
    if server.raw:
        build_c("raw_echo", build_dir)
        return {"library": "raw_echo.c", "version": cc_version(),
                "accelerator": "all C"}
    argv = server_argv(name, 0, args, build_dir)[:2] + ["--probe"]
    if name == "poex":
        argv += ["--poex-dir", args.poex_dir]
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise Skip("cannot run %s: %s" % (argv[0], exc))
    if proc.returncode:
        lines = proc.stderr.strip().splitlines() or ["exit status %d" % proc.returncode]
        raise Skip("%s (with %s)" % (lines[-1], argv[0]))
    facts = json.loads(proc.stdout)
    facts["python"] = command_output([argv[0], "--version"], check=False)
    return facts


def choose_client(wanted, build_dir):
    """(worker program or "python", description) for --client."""
    if wanted in ("auto", "c"):
        try:
            program = build_c("ws_load", build_dir)
            return program, "C (ws_peers/ws_load.c, %s)" % cc_version()
        except Skip as exc:
            if wanted == "c":
                raise
            log("note: %s; the Python client runs instead, which may be slower than the "
                "fastest servers" % exc)
    return "python", "Python %s (ws_bench.py --client-worker)" % platform.python_version()


# --- /proc: CPU time of a server's process tree and of the machine.

def cpu_time(pid):
    """User plus system CPU seconds of the tree of *pid* so far."""
    ticks = 0
    for member in process_tree(pid):
        try:
            with open("/proc/%d/stat" % member) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])   # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_time():
    """CPU seconds all CPUs spent in processes since boot (user, nice, system), plus steal.

    Interrupt and softirq time is left out: loopback TCP does much of its work
    in softirqs, which no process is charged for, so with it "other CPU" would
    be high on an idle machine. Without it, "other CPU" is other processes' time
    and what the hypervisor took.
    """
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def busy_before_run(seconds=1.0):
    """Share of all CPUs busy over *seconds* before the benchmark starts anything."""
    before = machine_busy_time()
    time.sleep(seconds)
    return (machine_busy_time() - before) / seconds / (os.cpu_count() or 1)


# --- Checking one echo in each direction before measuring.

class BlockingClient:
    """A plain blocking WebSocket client for the correctness check."""

    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=CHECK_TIMEOUT)
        self.buf = bytearray()
        self.key = os.urandom(4)
        ws_key = new_key()
        self.sock.sendall(handshake_request(port, ws_key))
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        end = self.buf.find(b"\r\n\r\n")
        problem = check_handshake_response(bytes(self.buf[:end]), ws_key)
        if problem:
            raise Skip("handshake: " + problem)
        del self.buf[:end + 4]

    def fill(self):
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise Skip("server closed the connection during the check")
        self.buf += data

    def send(self, opcode, payload):
        self.sock.sendall(client_frame(opcode, payload, self.key))

    def receive(self):
        """The next whole message as (opcode, payload), reassembling fragments."""
        parts = []
        while True:
            frame = parse_frame(self.buf)
            if frame is None:
                self.fill()
                continue
            fin, opcode, payload, size = frame
            del self.buf[:size]
            if opcode == OP_PING:
                self.send(OP_PONG, payload)
                continue
            if opcode >= OP_CLOSE:
                return opcode, payload
            parts.append((opcode, payload))
            if fin:
                return parts[0][0], b"".join(p for _, p in parts)

    def close(self):
        self.sock.close()


def check_echo(port):
    """Raise Skip unless text comes back as text and binary as binary, byte for byte.

    Returns a note when the server does not answer a close frame.
    """
    text = "echo check: h\u00e9llo \u2713".encode("utf-8")
    binary = bytes(range(256)) * 300   # 76,800 bytes: a 64-bit length field
    try:
        client = BlockingClient(port)
        try:
            for opcode, payload in ((OP_TEXT, text), (OP_BINARY, binary), (OP_TEXT, b"")):
                client.send(opcode, payload)
                got = client.receive()
                if got != (opcode, payload):
                    raise Skip("echo of opcode %d (%d bytes) came back as opcode %d (%d bytes)%s"
                               % (opcode, len(payload), got[0], len(got[1]),
                                  ", different bytes" if got[0] == opcode and
                                  len(got[1]) == len(payload) else ""))
            client.send(OP_CLOSE, (1000).to_bytes(2, "big"))
            try:
                opcode, _ = client.receive()
            except (Skip, OSError):
                opcode = None
            if opcode != OP_CLOSE:
                return "did not answer a close frame with one"
        finally:
            client.close()
    except socket.timeout:
        raise Skip("echo check timed out after %.0f s" % CHECK_TIMEOUT)
    except OSError as exc:
        raise Skip("echo check failed: %r" % exc)
    return None


# --- Running one cell: one server, one workload.

def client_argv(client, spec):
    """The command of one client worker: the C client (ws_load) or this script's own."""
    if client == "python":
        return [sys.executable, os.path.abspath(__file__), "--client-worker", json.dumps(spec)]
    return [client] + [str(spec[k]) for k in (
        "port", "raw", "kind", "size", "connections", "messages", "warmup", "concurrency",
        "timeout")]


class Worker:
    """A client worker process pinned to the client CPU.

    Both clients speak the same lines on stdout: `ready {...}` once connected and
    warmed up, `done` the moment the measured round trips end, `result {...}`.
    """

    def __init__(self, pin, argv):
        self.proc = subprocess.Popen(pin + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     universal_newlines=True, bufsize=1)

    def read(self, tag, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        word, _, rest = line.partition(" ")
        if word.strip() != tag:
            raise Skip("client worker: expected %r, got %r" % (tag, line.strip()[:200] or
                                                             "nothing (exit or timeout)"))
        return json.loads(rest) if rest else None

    def go(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stdin.close()


def split(total, parts):
    return [total // parts + (i < total % parts) for i in range(parts)]


def workload_specs(workload, port, raw, args):
    """The per-worker specs for *workload*, its connections split over --client-procs."""
    if workload == "small":
        conns, messages, size, warmup = args.connections, args.messages, args.message_size, 20
    elif workload == "1m":
        conns, messages, size, warmup = args.big_connections, args.big_messages, MIB, 1
    else:   # idle: after the RSS reading, one round trip per connection shows it still works
        conns, messages, size, warmup = args.idle_connections, 1, args.message_size, 0
    base = {"port": port, "raw": int(raw), "timeout": args.timeout,
            "kind": WORKLOADS[workload].kind,
            "size": size, "messages": messages, "warmup": warmup,
            "concurrency": args.handshake_concurrency}
    procs = min(args.client_procs, conns)
    return [dict(base, connections=share) for share in split(conns, procs)]


def percentile(sorted_values, pct):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(pct / 100.0 * len(sorted_values))) - 1))
    return sorted_values[index]


def run_cell(name, workload, args, pins, workdir, build_dir, client):
    server = SERVERS[name]
    port = free_port()
    logfile = os.path.join(workdir, "%s-%s.log" % (name, workload))
    proc = start_server(pins[0] + server_argv(name, port, args, build_dir), logfile,
                        args.nofile)
    workers = []
    result = {"server": name, "workload": workload, "note": None}
    try:
        wait_for_port(proc, port, logfile, START_TIMEOUT)
        if not server.raw:
            result["note"] = check_echo(port)
        time.sleep(0.2)
        rss_before = status_kib(proc.pid, "VmRSS")
        specs = workload_specs(workload, port, server.raw, args)
        workers = [Worker(pins[1], client_argv(client, spec)) for spec in specs]
        readies = [worker.read("ready", args.timeout + 30) for worker in workers]
        opened = sum(ready["opened"] for ready in readies)
        if workload == "idle":
            time.sleep(IDLE_SETTLE)
            rss_idle = status_kib(proc.pid, "VmRSS")
            result.update(opened=opened, rss_before_kib=rss_before, rss_idle_kib=rss_idle,
                          idle_kib_per_conn=(rss_idle - rss_before) / opened if opened else None)
        # The window: from "go" until every worker says "done". Whatever else kept
        # the CPUs busy in it (other processes, interrupts) shows as "other CPU".
        server_before, machine_before = cpu_time(proc.pid), machine_busy_time()
        workers_before = sum(cpu_time(worker.proc.pid) for worker in workers)
        wall_before = time.monotonic()
        for worker in workers:
            worker.go()
        for worker in workers:
            worker.read("done", args.timeout + 30)
        wall = time.monotonic() - wall_before
        server_cpu = cpu_time(proc.pid) - server_before
        workers_cpu = sum(cpu_time(worker.proc.pid) for worker in workers) - workers_before
        other_cpu = machine_busy_time() - machine_before - server_cpu - workers_cpu
        outcomes = [worker.read("result", 60) for worker in workers]
        if proc.poll() is not None:
            raise Skip("server died during the run%s" % tail(logfile))
        result["peak_rss_mib"] = peak_rss_mib(proc.pid)
    finally:
        for worker in workers:
            worker.stop()
        stop_server(proc)
    errors, first_error = collections.Counter(), {}
    for line in readies + outcomes:
        errors.update(line["errors"])
        for kind, detail in line["first_error"].items():
            first_error.setdefault(kind, detail)
    result.update(errors=dict(sorted(errors.items())), first_error=first_error)
    latencies = sorted(l for outcome in outcomes for l in outcome["latencies"])
    elapsed = max(o["end"] for o in outcomes) - min(o["start"] for o in outcomes)
    if workload == "idle":
        # The one round trip per connection only shows that they all still work.
        result.update(rate=None, p50_ms=None, p99_ms=None, server_cpu=None, client_cpu=None,
                      other_cpu=None, checked=len(latencies))
        return result
    # Messages per second; in 1m each message is 1 MiB, so this is MiB/s too.
    result.update(rate=len(latencies) / elapsed if elapsed else None, messages=len(latencies),
                  seconds=elapsed, p50_ms=ms(percentile(latencies, 50)),
                  p99_ms=ms(percentile(latencies, 99)),
                  server_cpu=server_cpu / wall if wall else None,
                  other_cpu=max(0.0, other_cpu) / wall if wall else None,
                  client_cpu=sum(o["cpu"] for o in outcomes) / elapsed if elapsed else None)
    return result


def ms(seconds):
    return None if seconds is None else seconds * 1000.0


# --- Reporting.

def percent(fraction):
    return "-" if fraction is None else "%.0f%%" % (100 * fraction)


def rate_text(result):
    unit = WORKLOADS[result["workload"]].unit
    if result["rate"] is None or unit is None:
        return "-"
    return ("%.0f " if unit == "msg/s" else "%.1f ") % result["rate"] + unit


def progress_text(result):
    if result["workload"] == "idle":
        return "%s KiB per connection" % fmt(result["idle_kib_per_conn"], ".1f")
    return "%s, p99 %s ms, server CPU %s, client CPU %s, other CPU %s" % (
        rate_text(result), fmt(result["p99_ms"], ".2f"), percent(result["server_cpu"]),
        percent(result["client_cpu"]), percent(result["other_cpu"]))


def ratio_lines(results):
    """poex over each other server, per workload; raw-echo is the client's ceiling, not a peer."""
    def by_server(workload, key):
        return {r["server"]: r[key] for r in results if r["workload"] == workload}

    lines = []
    for workload, key, label in (("small", "rate", "msg/s"), ("1m", "rate", "MiB/s"),
                                 ("idle", "idle_kib_per_conn", "KiB per idle connection, "
                                                               "lower is better")):
        values = by_server(workload, key)
        if values.get("poex") is None:
            continue
        parts = ["poex/%s %.2fx" % (peer, values["poex"] / values[peer])
                 for peer in PEERS if values.get(peer)]
        if parts:
            lines.append("- %s (%s): %s" % (workload, label, ", ".join(parts)))
    for workload in ("small", "1m"):
        rates = by_server(workload, "rate")
        ceiling = rates.pop("raw-echo", None)
        rates = {k: v for k, v in rates.items() if v}
        if ceiling and rates:
            fastest = max(rates, key=rates.get)
            lines.append("- %s: the fastest server (%s) ran at %.0f%% of the client's ceiling "
                         "(raw-echo)" % (workload, fastest, 100.0 * rates[fastest] / ceiling))
    return lines


def report(results, skipped, facts, meta):
    lines = ["WebSocket echo; %s; %s; %s; machine %.0f%% busy in the second before the run"
             % (meta["pinning"], meta["cpu"], meta["kernel"], 100 * meta["busy_before"]), ""]
    lines.append("Servers:")
    for name, fact in facts.items():
        lines.append("- %s: %s %s, %s; C accelerator: %s" % (
            name, fact.get("library"), fact.get("version"), fact.get("python", "-"),
            fact.get("accelerator") or "none (pure Python)"))
    lines += ["", "Workloads: small = %d connections x %d round trips of %d-byte text; "
              "1m = %d connections x %d round trips of 1 MiB binary; idle = %d connections "
              "(RSS after minus RSS before, after one echo check). Client: %s."
              % (meta["connections"], meta["messages"], meta["message_size"],
                 meta["big_connections"], meta["big_messages"], meta["idle_connections"],
                 meta["client"]), ""]
    lines += ["| server | workload | msgs/s or MiB/s | p50 ms | p99 ms | errors | server CPU "
              "| client CPU | other CPU | peak RSS MiB | idle KiB/conn |",
              "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f | %s |" % (
            r["server"], r["workload"], rate_text(r), fmt(r["p50_ms"], ".2f"),
            fmt(r["p99_ms"], ".2f"), error_text(r["errors"]), percent(r["server_cpu"]),
            percent(r["client_cpu"]), percent(r["other_cpu"]), r["peak_rss_mib"],
            fmt(r.get("idle_kib_per_conn"), ".1f")))
    ratios = ratio_lines(results)
    if ratios:
        lines += ["", "Ratios:"] + ratios
    notes = ["- %s %s: %s" % (r["server"], r["workload"], r["note"]) for r in results
             if r["note"]]
    notes += ["- %s %s: first '%s' error: %s" % (r["server"], r["workload"], kind, detail)
              for r in results for kind, detail in sorted(r["first_error"].items())]
    notes += ["- %s idle: %d of %d connections opened" % (r["server"], r["opened"],
                                                          meta["idle_connections"])
              for r in results if r["workload"] == "idle" and r["opened"] !=
              meta["idle_connections"]]
    if notes:
        lines += ["", "Notes:"] + notes
    if skipped:
        lines += ["", "Skipped:"] + ["- %s %s: %s" % s for s in skipped]
    return "\n".join(lines) + "\n"


def machine_meta(args, pins):
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpu": cpu_model(), "kernel": "Linux " + platform.release(),
            "pinning": "servers on CPU 0, client on CPU 1" if pins[0] else "not pinned",
            "connections": args.connections, "messages": args.messages,
            "message_size": args.message_size, "big_connections": args.big_connections,
            "big_messages": args.big_messages, "idle_connections": args.idle_connections,
            "commit": command_output(["git", "-C", args.poex_dir, "rev-parse", "--short",
                                      "HEAD"], check=False)}


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark poex_http's WebSocket echo against websockets, aiohttp and "
                    "tornado.",
        epilog="A peer that its Python cannot import is skipped with the reason. "
               "Example: python3 bench/ws_bench.py --peer-python VENV/bin/python")
    parser.add_argument("--servers", type=name_list(list(SERVERS)), default=list(SERVERS),
                        help="comma-separated (default: %s)" % ",".join(SERVERS))
    parser.add_argument("--workloads", type=name_list(list(WORKLOADS)), default=list(WORKLOADS),
                        help="comma-separated (default: %s)" % ",".join(WORKLOADS))
    parser.add_argument("--client", choices=("auto", "c", "python"), default="auto",
                        help="load client: c (ws_peers/ws_load.c, built with cc), python "
                             "(this script, stdlib only), or auto: c when cc works (default)")
    # Counts, each at least 1.
    for option, default, what in (
            ("--connections", 50, "small: connections"),
            ("--messages", 1000, "small: round trips per connection"),
            ("--message-size", 32, "small: bytes per text message"),
            ("--big-connections", 4, "1m: connections"),
            ("--big-messages", 200, "1m: 1 MiB round trips per connection"),
            ("--idle-connections", 10000, "idle: connections held open"),
            ("--handshake-concurrency", 100, "handshakes in flight while connections open"),
            ("--client-procs", 1, "client processes, all on the client CPU"),
            ("--timeout", 120, "seconds a workload may take before what is left counts as "
                               "timed out")):
        parser.add_argument(option, type=positive, default=default,
                            help="%s (default: %d)" % (what, default))
    parser.add_argument("--peer-python", default=sys.executable,
                        help="Python with websockets, aiohttp and tornado installed "
                             "(default: this one)")
    parser.add_argument("--poex-python", default=sys.executable,
                        help="Python that runs the poex_http server (default: this one)")
    parser.add_argument("--poex-dir", default=PROJECT_ROOT,
                        help="directory holding the poex_http.py to measure "
                             "(default: the project root)")
    parser.add_argument("-o", "--outdir", help="also write results.md and results.json here")
    parser.add_argument("--client-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.poex_dir = os.path.abspath(args.poex_dir)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.client_worker:
        return client_worker(json.loads(args.client_worker))
    args.nofile = raise_nofile_limit(max(NOFILE_WANTED, args.idle_connections + 1024))
    if args.nofile < args.idle_connections + 256 and "idle" in args.workloads:
        log("warning: open files limited to %d; idle cannot open %d connections"
            % (args.nofile, args.idle_connections))
    # Servers are measured as deployed, with bytecode compiled (a module compiled
    # from source at start carries the compiler's memory in its peak RSS).
    import compileall
    compileall.compile_file(os.path.join(args.poex_dir, "poex_http.py"), quiet=1)
    pins = cpu_pins()
    meta = machine_meta(args, pins)
    meta["busy_before"] = busy_before_run()
    if meta["busy_before"] > 0.1:
        log("warning: the machine was %.0f%% busy before the run (of %d CPUs); other work "
            "will disturb the numbers" % (100 * meta["busy_before"], os.cpu_count() or 0))
    results, skipped, facts = [], [], {}
    workdir = tempfile.mkdtemp(prefix="poex-wsbench-")
    try:
        try:
            client, meta["client"] = choose_client(args.client, workdir)
        except Skip as exc:
            log("error: %s" % exc)
            return 2
        meta["client"] += ", %d process(es)" % args.client_procs
        servers = []
        for name in args.servers:
            try:
                facts[name] = probe_server(name, args, workdir)
                servers.append(name)
            except Skip as exc:
                log("%s: skipped: %s" % (name, exc))
                skipped.append((name, "all", str(exc)))
        for fact in facts.values():
            log("%s %s: C accelerator: %s" % (fact.get("library"), fact.get("version"),
                                              fact.get("accelerator")))
        for workload in args.workloads:
            for name in servers:
                label = "[%s] %s" % (workload, name)
                if workload == "idle" and SERVERS[name].raw:
                    continue   # a TCP echo has no WebSocket state to weigh
                try:
                    result = run_cell(name, workload, args, pins, workdir, workdir, client)
                except Skip as exc:
                    log("%s: skipped: %s" % (label, exc))
                    skipped.append((name, workload, str(exc)))
                    continue
                results.append(result)
                log("%s: %s, errors %s" % (label, progress_text(result),
                                           error_text(result["errors"])))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, skipped, facts, meta)
    print("\n" + text, end="")
    if args.outdir:
        write_results(args.outdir, text, {"meta": meta, "servers": facts, "results": results,
                                          "skipped": skipped_json(skipped),
                                          "ratios": ratio_lines(results)})
    return 0


if __name__ == "__main__":
    run_script(main)
