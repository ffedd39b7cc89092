"""Benchmark poex_http against the standard library server and nginx with wrk.

Run from the project root:

    python3 bench/bench.py [--duration S] [--servers poex,stdlib]
                           [--workloads hello,close,c1000] [-o OUTDIR]

For each workload, every server in turn (interleaved, so machine drift hits all
alike) is started afresh on a free port pinned to CPU 0, checked with
http.client, warmed up with wrk for 1 s, then measured by wrk pinned to CPU 1.
Peak RSS (VmHWM, summed over the server's process tree) is read before the
server is stopped. A markdown table and poex/stdlib and poex/nginx ratios are
printed; -o also writes results.json and results.md. Standard library only.
"""

import argparse
import collections
import http.client
import os
import platform
import re
import resource
import shutil
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


# --- Targets: how to start each server, its hello path (None: has none), its
# static prefix, and a check that returns why it cannot run (None: it can).

Target = collections.namedtuple("Target", "argv hello_path static_prefix missing")


def nginx_argv(port, docroot, prefix):
    """Write a one-worker nginx config into *prefix* and return its command."""
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
        listen 127.0.0.1:{port} backlog=1024;
        location = / {{ default_type text/plain; return 200 "Hello world\\n"; }}
        location /static/ {{ alias {docroot}/; }}
    }}
}}
""".format(port=port, docroot=docroot)
    with open(os.path.join(prefix, "nginx.conf"), "w") as f:
        f.write(conf)
    return ["nginx", "-p", prefix + "/", "-c", "nginx.conf", "-g", "daemon off;"]


def python_argv(*head):
    """Command builder for a Python server taking --port and --root."""
    return lambda port, docroot, prefix: (
        [sys.executable] + list(head) + ["--port", str(port), "--root", docroot])


def needs_file(relpath):
    path = os.path.join(PROJECT_ROOT, relpath)
    return lambda: None if os.path.exists(path) else relpath + " not found"


def needs_program(name):
    return lambda: None if shutil.which(name) else name + " not on PATH"


TARGETS = {
    "poex": Target(python_argv("examples/hello.py"), "/", "/static/",
                   needs_file("examples/hello.py")),
    "poex-cli": Target(python_argv("-m", "poex_http"), None, "/", needs_file("poex_http.py")),
    # As shipped (TCP_NODELAY on, as ../shared/bench runs it): head and body
    # leave in two writes.
    "stdlib": Target(python_argv(os.path.join(BENCH_DIR, "stdlib_server.py")), "/", "/static/",
                     lambda: None),
    # Tuned further: a buffered wfile sends head and body in one write.
    "stdlib-buffered": Target(python_argv(os.path.join(BENCH_DIR, "stdlib_server.py"),
                                          "--buffered"), "/", "/static/", lambda: None),
    "nginx": Target(nginx_argv, "/", "/static/", needs_program("nginx")),
}

# --- Workloads: file None means the hello route.

Workload = collections.namedtuple("Workload", "file connections close")

WORKLOADS = {
    "hello": Workload(None, 50, False),
    "close": Workload(None, 50, True),
    "c1000": Workload(None, 1000, False),
    "static1k": Workload("1k.bin", 50, False),
    "static1m": Workload("1m.bin", 50, False),
}
STATIC_FILES = {"1k.bin": 1024, "1m.bin": 1024 * 1024}


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


# --- Checking and measuring.

def check_response(port, path, expected, close):
    """GET *path* once with http.client; raise Skip unless status, body and length match.

    Returns a note when a keep-alive request is answered with a close, since wrk's
    numbers then include a reconnect per request.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Connection": "close"} if close else {})
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise Skip("GET %s failed: %r" % (path, exc))
    finally:
        conn.close()
    length = resp.getheader("Content-Length")
    if resp.status != 200:
        raise Skip("GET %s -> %d %s (expected 200)" % (path, resp.status, resp.reason))
    if body != expected:
        raise Skip("GET %s -> %d body bytes, not the expected %d" % (path, len(body), len(expected)))
    if length != str(len(expected)):
        raise Skip("GET %s -> Content-Length %r, expected %d" % (path, length, len(expected)))
    if resp.will_close and not close:
        return "closes keep-alive connections after each response"
    return None


def run_wrk(pin, url, connections, seconds, close, latency=True):
    argv = pin + ["wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds, "--timeout", "5s"]
    argv += ["--latency"] if latency else []
    argv += ["-H", "Connection: close"] if close else []
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


def run_cell(name, workload_name, docroot, workdir, duration, pins):
    """Start one server, check it, warm up, measure; always stop it."""
    target, workload = TARGETS[name], WORKLOADS[workload_name]
    if workload.file is None:
        path, expected = target.hello_path, HELLO
    else:
        path = target.static_prefix + workload.file
        with open(os.path.join(docroot, workload.file), "rb") as f:
            expected = f.read()
    port = free_port()
    prefix = os.path.join(workdir, "%s-%s" % (name, workload_name))
    os.makedirs(prefix)
    logfile = os.path.join(prefix, "server.log")
    proc = start_server(pins[0] + target.argv(port, docroot, prefix), logfile)
    try:
        wait_for_port(proc, port, logfile, START_TIMEOUT)
        note = check_response(port, path, expected, workload.close)
        url = "http://127.0.0.1:%d%s" % (port, path)
        run_wrk(pins[1], url, workload.connections, WARMUP_SECONDS, workload.close, latency=False)
        result = parse_wrk(run_wrk(pins[1], url, workload.connections, duration, workload.close))
        if proc.poll() is not None:
            raise Skip("server died during the run%s" % tail(logfile))
        result["rss_mib"] = peak_rss_mib(proc.pid)
    finally:
        stop_server(proc)
    result.update(server=name, workload=workload_name, connections=workload.connections,
                  note=note)
    return result


# --- Reporting.

def ratio_lines(results, workloads):
    lines = []
    for workload in workloads:
        rps = {r["server"]: r["rps"] for r in results if r["workload"] == workload}
        parts = ["%s/%s %.2fx" % (mine, other, rps[mine] / rps[other])
                 for mine in ("poex", "poex-cli") if mine in rps
                 for other in ("stdlib", "stdlib-buffered", "nginx") if rps.get(other)]
        lines.append("- %s: %s" % (workload, ", ".join(parts) if parts
                                   else "no poex/reference pair ran"))
    return lines


def report(results, skipped, workloads, meta):
    rows = ["| server | workload | req/s | MiB/s | p50 ms | p99 ms | errors | peak RSS MiB |",
            "|---|---|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        mib_s = r["mib_s"] if r["workload"] == "static1m" else None
        rows.append("| %s | %s | %.0f | %s | %s | %s | %s | %.1f |" % (
            r["server"], r["workload"], r["rps"], fmt(mib_s, ".1f"), fmt(r["p50_ms"], ".2f"),
            fmt(r["p99_ms"], ".2f"), error_text(r["errors"]), r["rss_mib"]))
    lines = ["wrk -t1, %ds per cell; %s; %s; %s" % (
        meta["duration"], meta["pinning"], meta["cpu"], meta["python"]), ""] + rows
    lines += ["", "Ratios of req/s:"] + ratio_lines(results, workloads)
    notes = ["- %s %s: %s" % (r["server"], r["workload"], r["note"]) for r in results if r["note"]]
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
            "commit": command_output(["git", "-C", PROJECT_ROOT, "rev-parse", "--short", "HEAD"])}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark poex_http against http.server and nginx with wrk.",
        epilog="Servers not available (no examples/hello.py, no nginx, ...) are skipped with "
               "a message. Run from the project root: python3 bench/bench.py --duration 3")
    parser.add_argument("--duration", type=int, default=10, metavar="S",
                        help="seconds wrk measures each cell (default: 10)")
    parser.add_argument("--servers", type=name_list(list(TARGETS)), default=list(TARGETS),
                        help="comma-separated servers (default: %s)" % ",".join(TARGETS))
    parser.add_argument("--workloads", type=name_list(list(WORKLOADS)),
                        default=list(WORKLOADS),
                        help="comma-separated workloads (default: %s)" % ",".join(WORKLOADS))
    parser.add_argument("-o", "--outdir", help="also write results.json and results.md here")
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error("--duration must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
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
        for workload in args.workloads:
            for name in args.servers:
                if TARGETS[name].hello_path is None and WORKLOADS[workload].file is None:
                    continue   # e.g. poex-cli only serves files
                label = "[%s] %s" % (workload, name)
                try:
                    if name in unavailable:
                        raise Skip(unavailable[name])
                    result = run_cell(name, workload, docroot, workdir, args.duration, pins)
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
