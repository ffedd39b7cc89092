"""What bench.py and ws_bench.py share: server processes, /proc readings, reporting.

Each server is started in its own session on a free loopback port, pinned
with taskset, waited for until it listens, and stopped as a process group.
Standard library only.
"""

import argparse
import collections
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_ROOT = os.path.dirname(BENCH_DIR)
HOST = "127.0.0.1"
STOP_TIMEOUT = 5.0     # seconds between SIGTERM and SIGKILL


class Skip(Exception):
    """A cell that cannot run; the message says why."""


def log(message):
    print(message, file=sys.stderr, flush=True)


def run_script(main):
    """Exit with main()'s status; 130 on Ctrl-C (servers and clients are stopped by then)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)


# --- The machine.

def raise_nofile_limit(wanted):
    """Raise RLIMIT_NOFILE to *wanted* (the hard limit too, which root may); returns the limit.

    Where *wanted* is out of reach, the soft limit is raised to the hard one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    for limits in ((wanted, max(hard, wanted)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            return limits[0]
        except (ValueError, OSError):
            continue
    return soft


def cpu_pins():
    """taskset prefixes for the server (CPU 0) and the load client (CPU 1), or none."""
    if not shutil.which("taskset"):
        log("note: taskset not installed; processes are not pinned")
        return [], []
    if not {0, 1} <= os.sched_getaffinity(0):
        log("note: CPUs 0 and 1 are not both available; processes are not pinned")
        return [], []
    return ["taskset", "-c", "0"], ["taskset", "-c", "1"]


def cpu_model():
    """The CPU's model name and count, e.g. 'Intel(R) Xeon(R) Processor x2'."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return "%s x%d" % (cpu, os.cpu_count() or 0)


def command_output(argv, check=True):
    """First line of what *argv* prints (stdout or stderr); "" if it fails and *check*."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = proc.stdout.strip().splitlines()
    return lines[0] if lines and (proc.returncode == 0 or not check) else ""


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --- Server process life.

def start_server(argv, logfile, nofile=None):
    """Start *argv* in its own session, so its whole process group can be signalled.

    With *nofile*, the server's RLIMIT_NOFILE is raised to it in the child
    itself, whatever limit this process has.
    """
    preexec = (lambda: raise_nofile_limit(nofile)) if nofile else None
    with open(logfile, "wb") as out:
        return subprocess.Popen(argv, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=preexec)


def signal_group(pid, sig):
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def stop_server(proc):
    """SIGTERM the server's process group, SIGKILL whatever is left after a deadline.

    The leader is awaited with WNOWAIT: as a zombie it keeps its pid, which is the
    group id, from being reused before the final SIGKILL reaches stray workers.
    """
    if proc.returncode is None:
        signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        while not os.waitid(os.P_PID, proc.pid, flags) and time.monotonic() < deadline:
            time.sleep(0.02)
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait(timeout=STOP_TIMEOUT)


def tail(path, lines=5):
    """': ' and the last lines of a server log joined on one line, or ''."""
    try:
        with open(path, errors="replace") as f:
            text = " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return ""
    return ": " + text if text else ""


def wait_for_port(proc, port, logfile, timeout):
    """Poll until *port* accepts a connection; Skip if the server exits or *timeout* passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Skip("exited with status %s before listening on port %d%s"
                       % (proc.returncode, port, tail(logfile)))
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise Skip("not listening on port %d after %.0f s%s" % (port, timeout, tail(logfile)))


# --- /proc: a server's process tree.

def process_tree(pid):
    """*pid* and all its descendants, from /proc."""
    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def status_kib(pid, field):
    """Sum of a /proc/PID/status field (VmRSS, VmHWM) over the tree of *pid*, in KiB."""
    total = 0
    for member in process_tree(pid):
        try:
            with open("/proc/%d/status" % member) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def peak_rss_mib(pid):
    """Sum of VmHWM over the process tree of *pid*, in MiB."""
    return status_kib(pid, "VmHWM") / 1024.0


# --- Command line and reporting.

def name_list(choices):
    """argparse type: a comma-separated list of names from *choices*."""
    def parse(text):
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                "unknown %s; choose from %s" % (",".join(unknown) or "(empty)", ",".join(choices)))
        return names
    return parse


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def error_text(errors):
    """'0', or the total and the non-zero kinds in *errors*' order."""
    total = sum(errors.values())
    detail = ", ".join("%s %d" % (k, v) for k, v in errors.items() if v)
    return "%d (%s)" % (total, detail) if total else "0"


def write_results(outdir, text, data):
    """The report as results.md and *data* as results.json in *outdir* (made if need be)."""
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(data, f, indent=2)


def skipped_json(skipped):
    return [dict(zip(("server", "workload", "reason"), s)) for s in skipped]


# --- The servers bench.py starts for the TLS and upload workloads.

def server_arguments(description, argv=None, tls=True):
    """--port, --host, --root (served under /static/) and, with ``tls``, --certfile/--keyfile."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--root", default=".", help="directory served under /static/")
    if tls:
        parser.add_argument("--certfile", help="serve HTTPS with this certificate")
        parser.add_argument("--keyfile", help="private key for --certfile")
    return parser.parse_args(argv)
