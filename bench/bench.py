"""Benchmark poex_http against the standard library server, nginx, uvicorn and waitress with wrk.

Run from the project root:

    python3 bench/bench.py [--duration S] [--servers poex,stdlib]
                           [--workloads hello,close,c1000] [-o OUTDIR]
                           [--peer-python PYTHON]

For each workload, every server in turn (interleaved, so machine drift hits all
alike) is started afresh on a free port pinned to CPU 0, checked with
http.client, warmed up with wrk for 1 s, then measured by wrk pinned to CPU 1.
Peak RSS (VmHWM, summed over the server's process tree) is read before the
server is stopped. A markdown table and the ratios of poex to each reference
are printed; -o also writes results.json and results.md. The HTTPS workloads
use a self-signed certificate made with openssl at the start of the run; the
uvicorn and waitress servers run under --peer-python. Standard library only.
"""

import argparse
import collections
import http.client
import os
import platform
import re
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (BENCH_DIR, PROJECT_ROOT, Skip, command_output, cpu_model, cpu_pins,
                     error_text, fmt, free_port, log, name_list, peak_rss_mib, run_script,
                     skipped_json, start_server, stop_server, tail, wait_for_port,
                     write_results)
import _common

HELLO = b"Hello world\n"
START_TIMEOUT = 10.0   # seconds for a server to listen
WARMUP_SECONDS = 1
UPLOAD_PATH = "/upload"
UPLOAD_SIZE = 1024 * 1024
UPLOAD_ANSWER = b"got %d\n" % UPLOAD_SIZE
# The Python that runs the uvicorn and waitress servers (--peer-python); by
# default the shared benchmark's virtual environment beside the project, if any.
DEFAULT_PEER_PYTHON = os.path.join(PROJECT_ROOT, os.pardir, "shared", "bench", ".venv", "bin",
                                   "python")


# --- Targets: how to start each server (argv(port, docroot, prefix, workload,
# pem), pem being (certfile, keyfile) for HTTPS or None), its hello path (None:
# has none), its static prefix, a check that returns why it cannot run (None: it
# can), and why it cannot serve HTTPS or answer POST /upload (None: it can).

Target = collections.namedtuple("Target", "argv hello_path static_prefix missing no_tls no_upload")

# nginx cannot count a body. Its `return` answers before the body has been
# read (what is left is discarded afterwards), so /upload goes through the
# mirror module, which reads the whole body (into one 2 MiB buffer) before the
# content phase; the static module then refuses the POST with 405, and
# error_page turns that into a fixed 200 from a named location. Each request
# also costs nginx a subrequest to /upload-sink (return 204).
NGINX_UPLOAD = """\
        location = /upload {{
            client_max_body_size 2m;
            client_body_buffer_size 2m;
            mirror /upload-sink;
            mirror_request_body on;
            root {prefix}/upload-root;
            error_page 405 =200 @upload-answer;
        }}
        location @upload-answer {{ default_type text/plain; return 200 "{answer}"; }}
        location = /upload-sink {{ internal; return 204; }}
"""


def nginx_argv(port, docroot, prefix, workload, pem):
    """Write a one-worker nginx config into *prefix* and return its command."""
    if pem:
        listen = "listen 127.0.0.1:%d ssl backlog=1024;\n" % port
        listen += "        ssl_certificate %s;\n        ssl_certificate_key %s;\n" % pem
        # nginx before 1.23.4 leaves TLS 1.3 out by default; the others offer it.
        listen += "        ssl_protocols TLSv1.2 TLSv1.3;"
    else:
        listen = "listen 127.0.0.1:%d backlog=1024;" % port
    upload = ""
    if workload.upload:   # only then: a build without the mirror module skips just this
        os.makedirs(os.path.join(prefix, "upload-root"))
        with open(os.path.join(prefix, "upload-root", "upload"), "w") as f:
            f.write("not sent\n")   # the static module refuses a POST to it with 405
        upload = NGINX_UPLOAD.format(prefix=prefix,
                                     answer=UPLOAD_ANSWER.decode().replace("\n", "\\n"))
    conf = """\
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;               # full segments with sendfile, as nginx is usually tuned
    tcp_nodelay on;
    keepalive_requests 1000000;  # like the Python servers: never close a keep-alive connection
    client_body_temp_path body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    server {{
        {listen}
        location = / {{ default_type text/plain; return 200 "Hello world\\n"; }}
        location /static/ {{ alias {docroot}/; }}
{upload}    }}
}}
""".format(listen=listen, docroot=docroot, upload=upload)
    with open(os.path.join(prefix, "nginx.conf"), "w") as f:
        f.write(conf)
    return ["nginx", "-p", prefix + "/", "-c", "nginx.conf", "-g", "daemon off;"]


def tls_options(pem):
    return ["--certfile", pem[0], "--keyfile", pem[1]] if pem else []


def python_argv(*head):
    """Command builder for a Python server taking --port and --root (and --certfile, --keyfile)."""
    return lambda port, docroot, prefix, workload, pem: (
        [sys.executable] + list(head) + ["--port", str(port), "--root", docroot]
        + tls_options(pem))


def poex_argv(port, docroot, prefix, workload, pem):
    """examples/hello.py, or bench/poex_server.py where HTTPS or /upload is wanted."""
    if workload.tls or workload.upload:
        script = os.path.join(BENCH_DIR, "poex_server.py")
    else:
        script = "examples/hello.py"
    return python_argv(script)(port, docroot, prefix, workload, pem)


PEER = {"python": DEFAULT_PEER_PYTHON if os.path.exists(DEFAULT_PEER_PYTHON) else sys.executable}


def peer_argv(script):
    """Command builder for a peer server in bench/, run by --peer-python."""
    path = os.path.join(BENCH_DIR, script)
    return lambda port, docroot, prefix, workload, pem: (
        [PEER["python"], path, "--host", "127.0.0.1", "--port", str(port), "--root", docroot]
        + tls_options(pem))


def needs_modules(*modules):
    """Why --peer-python cannot import *modules*, or None."""
    def missing():
        try:
            proc = subprocess.run([PEER["python"], "-c", "import " + ", ".join(modules)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            return "--peer-python %s does not run: %s" % (PEER["python"], exc)
        if proc.returncode:
            last = (proc.stdout.strip().splitlines() or ["exit status %d" % proc.returncode])[-1]
            return "--peer-python %s cannot import %s: %s" % (
                PEER["python"], ", ".join(modules), last)
        return None
    return missing


def needs_file(relpath):
    path = os.path.join(PROJECT_ROOT, relpath)
    return lambda: None if os.path.exists(path) else relpath + " not found"


def needs_program(name):
    return lambda: None if shutil.which(name) else name + " not on PATH"


STDLIB_NO_TLS = "bench/stdlib_server.py has no TLS option"
STDLIB_NO_UPLOAD = "bench/stdlib_server.py has no /upload"

TARGETS = {
    # examples/hello.py; bench/poex_server.py (the same handlers, HTTPS and
    # /upload besides) for the TLS and upload workloads.
    "poex": Target(poex_argv, "/", "/static/", needs_file("examples/hello.py"), None, None),
    "poex-cli": Target(python_argv("-m", "poex_http"), None, "/", needs_file("poex_http.py"),
                       None, "its --upload stores files; it does not answer with a length"),
    # As shipped (TCP_NODELAY on, as ../shared/bench runs it): head and body
    # leave in two writes.
    "stdlib": Target(python_argv(os.path.join(BENCH_DIR, "stdlib_server.py")), "/", "/static/",
                     lambda: None, STDLIB_NO_TLS, STDLIB_NO_UPLOAD),
    # Tuned further: a buffered wfile sends head and body in one write.
    "stdlib-buffered": Target(python_argv(os.path.join(BENCH_DIR, "stdlib_server.py"),
                                          "--buffered"), "/", "/static/", lambda: None,
                              STDLIB_NO_TLS, STDLIB_NO_UPLOAD),
    "nginx": Target(nginx_argv, "/", "/static/", needs_program("nginx"), None, None),
    # Peers under --peer-python: raw ASGI on uvicorn with httptools and uvloop,
    # and a WSGI application on waitress (which has no TLS).
    "uvicorn-uvloop": Target(peer_argv("uvicorn_server.py"), "/", "/static/",
                             needs_modules("uvicorn", "httptools", "uvloop"), None, None),
    "waitress": Target(peer_argv("waitress_server.py"), "/", "/static/",
                       needs_modules("waitress"), "waitress has no TLS", None),
}
REFERENCES = ("stdlib", "stdlib-buffered", "nginx", "uvicorn-uvloop", "waitress")

# --- Workloads: file None means the hello route (or /upload, with upload);
# tls: over HTTPS; upload: POST UPLOAD_SIZE bytes to /upload.

Workload = collections.namedtuple("Workload", "file connections close tls upload",
                                  defaults=(False, False))

WORKLOADS = {
    "hello": Workload(None, 50, False),
    "close": Workload(None, 50, True),
    "c1000": Workload(None, 1000, False),
    "static1k": Workload("1k.bin", 50, False),
    "static1m": Workload("1m.bin", 50, False),
    "tls-hello": Workload(None, 50, False, tls=True),
    "tls-1m": Workload("1m.bin", 50, False, tls=True),
    "upload-1m": Workload(None, 50, False, upload=True),
}
STATIC_FILES = {"1k.bin": 1024, "1m.bin": 1024 * 1024}
# Workloads whose MiB/s is reported: wrk's Transfer/sec for the files, the
# request bodies sent for upload-1m.
MIB_WORKLOADS = ("static1m", "tls-1m", "upload-1m")

WRK_UPLOAD_SCRIPT = """\
-- POST a body of %d bytes on every request (wrk adds Content-Length).
wrk.method = "POST"
wrk.body = string.rep("x", %d)
wrk.headers["Content-Type"] = "application/octet-stream"
""" % (UPLOAD_SIZE, UPLOAD_SIZE)


# --- Environment helpers.

def raise_nofile_limit(minimum=4096):
    """Raise RLIMIT_NOFILE (inherited by servers and wrk) so 1000 connections fit.

    The soft limit goes up to the hard one, or to *minimum* where that is higher.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard == resource.RLIM_INFINITY or hard >= minimum else minimum
    limit = _common.raise_nofile_limit(wanted)
    if limit != resource.RLIM_INFINITY and limit < minimum:
        log("warning: open files limited to %d; c1000 may fail" % limit)


def make_docroot(path):
    os.makedirs(path)
    for name, size in STATIC_FILES.items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(os.urandom(size))


def make_certificate(workdir):
    """A self-signed certificate for localhost: (certfile, keyfile), or Skip with the reason."""
    if not shutil.which("openssl"):
        raise Skip("openssl not on PATH: no certificate for the TLS workloads")
    cert, key = os.path.join(workdir, "c.pem"), os.path.join(workdir, "k.pem")
    proc = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                           "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=60)
    if proc.returncode:
        raise Skip("openssl req failed (%d): %s" % (proc.returncode, proc.stdout.strip()[-300:]))
    os.chmod(key, 0o644)   # nginx reads it as root, but keep the work dir readable anyway
    return cert, key


def client_context():
    """TLS for the checks: no verification (the certificate is self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# --- Checking and measuring.

def check_response(port, path, expected, close, tls=False, body=None):
    """GET *path* (POST *body*, if given) once with http.client; raise Skip unless
    status, body and length match.

    Returns (note, TLS version and cipher or None); the note when a keep-alive
    request is answered with a close, since wrk's numbers then include a
    reconnect per request.
    """
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=client_context())
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    method = "GET" if body is None else "POST"
    headers = {"Connection": "close"} if close else {}
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    cipher = None
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        content = resp.read()
        if tls:
            cipher = "%s %s" % (conn.sock.version(), conn.sock.cipher()[0])
    except (OSError, http.client.HTTPException) as exc:
        raise Skip("%s %s failed: %r" % (method, path, exc))
    finally:
        conn.close()
    length = resp.getheader("Content-Length")
    if resp.status != 200:
        raise Skip("%s %s -> %d %s (expected 200)" % (method, path, resp.status, resp.reason))
    if content != expected:
        raise Skip("%s %s -> %d body bytes %r, not the expected %d" % (
            method, path, len(content), content[:40], len(expected)))
    if length != str(len(expected)):
        raise Skip("%s %s -> Content-Length %r, expected %d" % (method, path, length, len(expected)))
    if resp.will_close and not close:
        return "closes keep-alive connections after each response", cipher
    return None, cipher


def check_reads_body(port, path, size, tls=False, wait=0.5):
    """Raise Skip if the server answers a POST of *size* bytes before it has all of them.

    Half the body is sent, then nothing for *wait* seconds: an answer then
    means the server did not wait for the body (as nginx's `return` does not).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if tls:
            sock = client_context().wrap_socket(sock)
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
                     b"Content-Type: application/octet-stream\r\n\r\n" % (path.encode(), size))
        sock.sendall(b"x" * (size // 2))
        sock.settimeout(wait)
        try:
            early = sock.recv(100)
        except socket.timeout:
            return
        except OSError as exc:
            raise Skip("POST %s with half its body: %r" % (path, exc))
        raise Skip("answers POST %s before reading the whole body: %r" % (path, early[:40]))
    finally:
        sock.close()


def run_wrk(pin, url, connections, seconds, close, latency=True, script=None):
    argv = pin + ["wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds, "--timeout", "5s"]
    argv += ["--latency"] if latency else []
    argv += ["-H", "Connection: close"] if close else []
    argv += ["-s", script] if script else []
    proc = subprocess.run(argv + [url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise Skip("wrk failed (%d): %s" % (proc.returncode, proc.stdout.strip()[-300:]))
    return proc.stdout


TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}   # -> ms
SIZE_UNITS = {"B": 1.0 / 1024 ** 2, "KB": 1.0 / 1024, "MB": 1.0, "GB": 1024.0, "TB": 1024.0 ** 2}


def parse_wrk(output):
    """Requests/sec, MiB/s, p50/p99 (ms) and error counts from wrk --latency output."""
    def find(pattern):
        match = re.search(pattern, output, re.MULTILINE)
        return match.groups() if match else None

    rps = find(r"^Requests/sec:\s+([\d.]+)")
    transfer = find(r"^Transfer/sec:\s+([\d.]+)([KMGT]?B)")
    if not rps or not transfer:
        raise Skip("cannot parse wrk output: %s" % output.strip()[-300:])
    result = {"rps": float(rps[0]),
              "mib_s": float(transfer[0]) * SIZE_UNITS[transfer[1]]}
    for pct in ("50", "99"):
        value = find(r"^\s+%s(?:\.0+)?%%\s+([\d.]+)([a-z]+)" % pct)
        result["p%s_ms" % pct] = float(value[0]) * TIME_UNITS[value[1]] if value else None
    sock = find(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    errors = dict(zip(("connect", "read", "write", "timeout"), map(int, sock or (0,) * 4)))
    non2xx = find(r"Non-2xx or 3xx responses: (\d+)")
    errors["non2xx"] = int(non2xx[0]) if non2xx else 0
    result["errors"] = errors
    total = find(r"^\s+(\d+) requests in")
    result["requests"] = int(total[0]) if total else None
    return result


def run_cell(name, workload_name, docroot, workdir, duration, pins, pem=None):
    """Start one server, check it, warm up, measure; always stop it.

    *pem* is (certfile, keyfile) for the TLS workloads.
    """
    target, workload = TARGETS[name], WORKLOADS[workload_name]
    if workload.tls and target.no_tls:
        raise Skip(target.no_tls)
    if workload.upload and target.no_upload:
        raise Skip(target.no_upload)
    if workload.tls and not pem:
        raise Skip("no certificate")
    script, body = None, None
    if workload.upload:
        path, expected, body = UPLOAD_PATH, UPLOAD_ANSWER, b"x" * UPLOAD_SIZE
        script = os.path.join(workdir, "upload.lua")
    elif workload.file is None:
        path, expected = target.hello_path, HELLO
    else:
        path = target.static_prefix + workload.file
        with open(os.path.join(docroot, workload.file), "rb") as f:
            expected = f.read()
    port = free_port()
    prefix = os.path.join(workdir, "%s-%s" % (name, workload_name))
    os.makedirs(prefix)
    logfile = os.path.join(prefix, "server.log")
    argv = target.argv(port, docroot, prefix, workload, pem if workload.tls else None)
    proc = start_server(pins[0] + argv, logfile)
    try:
        wait_for_port(proc, port, logfile, START_TIMEOUT)
        note, cipher = check_response(port, path, expected, workload.close, workload.tls, body)
        if workload.upload:
            check_reads_body(port, path, UPLOAD_SIZE, workload.tls)
        url = "%s://127.0.0.1:%d%s" % ("https" if workload.tls else "http", port, path)
        run_wrk(pins[1], url, workload.connections, WARMUP_SECONDS, workload.close, latency=False,
                script=script)
        result = parse_wrk(run_wrk(pins[1], url, workload.connections, duration, workload.close,
                                   script=script))
        if proc.poll() is not None:
            raise Skip("server died during the run%s" % tail(logfile))
        if not result["requests"]:
            raise Skip("no request completed in %d s (errors %s)%s" % (
                duration, error_text(result["errors"]), tail(logfile)))
        result["rss_mib"] = peak_rss_mib(proc.pid)
    finally:
        stop_server(proc)
    if workload.upload:   # wrk's Transfer/sec counts only what it received
        result["mib_s_received"] = result["mib_s"]
        result["mib_s"] = result["rps"] * UPLOAD_SIZE / 1024.0 ** 2
    result.update(server=name, workload=workload_name, connections=workload.connections,
                  note=note, tls=cipher)
    return result


# --- Reporting.

def ratio_lines(results, workloads):
    lines = []
    for workload in workloads:
        rps = {r["server"]: r["rps"] for r in results if r["workload"] == workload}
        parts = ["%s/%s %.2fx" % (mine, other, rps[mine] / rps[other])
                 for mine in ("poex", "poex-cli") if mine in rps
                 for other in REFERENCES if rps.get(other)]
        lines.append("- %s: %s" % (workload, ", ".join(parts) if parts
                                   else "no poex/reference pair ran"))
    return lines


def report(results, skipped, workloads, meta):
    rows = ["| server | workload | req/s | MiB/s | p50 ms | p99 ms | errors | peak RSS MiB |",
            "|---|---|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        mib_s = r["mib_s"] if r["workload"] in MIB_WORKLOADS else None
        rows.append("| %s | %s | %.0f | %s | %s | %s | %s | %.1f |" % (
            r["server"], r["workload"], r["rps"], fmt(mib_s, ".1f"), fmt(r["p50_ms"], ".2f"),
            fmt(r["p99_ms"], ".2f"), error_text(r["errors"]), r["rss_mib"]))
    lines = ["wrk -t1, %ds per cell; %s; %s; %s" % (
        meta["duration"], meta["pinning"], meta["cpu"], meta["python"]), ""] + rows
    lines += ["", "Ratios of req/s:"] + ratio_lines(results, workloads)
    notes = ["- %s %s: %s" % (r["server"], r["workload"], r["note"]) for r in results if r["note"]]
    ciphers = sorted({"%s %s" % (r["server"], r["tls"]) for r in results if r.get("tls")})
    if ciphers:
        notes.append("- TLS negotiated by the check (Python's ssl client): " + "; ".join(ciphers))
    if any(r["workload"] == "upload-1m" for r in results):
        notes.append("- upload-1m: MiB/s is request bodies sent; nginx answers a fixed text "
                     "after reading the body, the others count it")
    if notes:
        lines += ["", "Notes:"] + notes
    if skipped:
        lines += ["", "Skipped:"] + ["- %s %s: %s" % s for s in skipped]
    return "\n".join(lines) + "\n"


def machine_info(args):
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "duration": args.duration,
            "cpu": cpu_model(),
            "python": "Python " + platform.python_version(), "kernel": platform.release(),
            "wrk": command_output(["wrk", "--version"], check=False),  # exits 1
            "nginx": command_output(["nginx", "-v"]) if shutil.which("nginx") else None,
            "openssl": command_output(["openssl", "version"]) if shutil.which("openssl") else None,
            "peer_python": PEER["python"],
            "commit": command_output(["git", "-C", PROJECT_ROOT, "rev-parse", "--short", "HEAD"])}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark poex_http against http.server, nginx, uvicorn and waitress "
                    "with wrk.",
        epilog="Servers not available (no examples/hello.py, no nginx, no uvicorn under "
               "--peer-python, ...) are skipped with a message, and so are the workloads a "
               "server cannot play (TLS, upload). Run from the project root: "
               "python3 bench/bench.py --duration 3")
    parser.add_argument("--duration", type=int, default=10, metavar="S",
                        help="seconds wrk measures each cell (default: 10)")
    parser.add_argument("--servers", type=name_list(list(TARGETS)), default=list(TARGETS),
                        help="comma-separated servers (default: %s)" % ",".join(TARGETS))
    parser.add_argument("--workloads", type=name_list(list(WORKLOADS)),
                        default=list(WORKLOADS),
                        help="comma-separated workloads (default: %s)" % ",".join(WORKLOADS))
    parser.add_argument("--peer-python", default=PEER["python"], metavar="PYTHON",
                        help="the Python with uvicorn, httptools, uvloop and waitress installed "
                             "that runs those servers (default: ../shared/bench/.venv/bin/python "
                             "beside the project if it exists, else this Python: %(default)s)")
    parser.add_argument("-o", "--outdir", help="also write results.json and results.md here")
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error("--duration must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    PEER["python"] = args.peer_python
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    raise_nofile_limit()
    # Servers are measured as deployed, with their bytecode compiled: a
    # process that compiles a large module from source at start (as with
    # PYTHONDONTWRITEBYTECODE and no __pycache__) carries the compiler's
    # memory in its peak RSS.
    import compileall
    compileall.compile_file(os.path.join(PROJECT_ROOT, "poex_http.py"), quiet=1, force=True)
    pins = cpu_pins()
    meta = machine_info(args)
    meta["pinning"] = "server on CPU 0, wrk on CPU 1" if pins[0] else "not pinned"
    results, skipped, unavailable = [], [], {}
    for name in args.servers:
        reason = TARGETS[name].missing()
        if reason:
            unavailable[name] = reason
    workdir = tempfile.mkdtemp(prefix="poex-bench-")
    os.chmod(workdir, 0o755)   # nginx workers may run as nobody when started by root
    try:
        docroot = os.path.join(workdir, "docroot")
        make_docroot(docroot)
        pem, no_pem = None, None
        if any(WORKLOADS[w].tls for w in args.workloads):
            try:
                pem = make_certificate(workdir)
            except Skip as exc:
                no_pem = str(exc)
        with open(os.path.join(workdir, "upload.lua"), "w") as f:
            f.write(WRK_UPLOAD_SCRIPT)
        for workload in args.workloads:
            for name in args.servers:
                if (TARGETS[name].hello_path is None and WORKLOADS[workload].file is None
                        and not WORKLOADS[workload].upload):
                    continue   # e.g. poex-cli only serves files
                label = "[%s] %s" % (workload, name)
                try:
                    if name in unavailable:
                        raise Skip(unavailable[name])
                    if WORKLOADS[workload].tls and no_pem:
                        raise Skip(no_pem)
                    result = run_cell(name, workload, docroot, workdir, args.duration, pins, pem)
                except Skip as exc:
                    log("%s: skipped: %s" % (label, exc))
                    skipped.append((name, workload, str(exc)))
                    continue
                results.append(result)
                log("%s: %.0f req/s, p99 %s ms, errors %s" % (
                    label, result["rps"], fmt(result["p99_ms"], ".2f"),
                    error_text(result["errors"])))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, skipped, args.workloads, meta)
    print("\n" + text, end="")
    if args.outdir:
        write_results(args.outdir, text, {"meta": meta, "results": results,
                                          "skipped": skipped_json(skipped),
                                          "ratios": ratio_lines(results, args.workloads)})
    return 0


if __name__ == "__main__":
    run_script(main)
