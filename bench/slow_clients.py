"""Hello throughput with slow clients connected, against none.

    python3 bench/slow_clients.py [--clients 1000] [--duration 5]

Starts ``examples/hello.py`` pinned to CPU 0, measures ``GET /`` with wrk
(50 connections, CPU 1), then connects the slow clients -- each sends one
byte of a request head a second, as a slowloris attack does -- measures again
while they trickle, and reports how long the server took to be rid of them
(``Limits.head_timeout``: 30 s by default, each answered 408).  Standard
library only, plus wrk.
"""
import argparse
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def wrk(port, duration):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d%ds" % duration,
                          "http://127.0.0.1:%d/" % port], capture_output=True, text=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.clients)), hard))
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable,
                               os.path.join(HERE, "..", "examples", "hello.py"), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[-1])
        alone = wrk(port, args.duration)
        selector = selectors.DefaultSelector()
        slow = []
        for _ in range(args.clients):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            slow.append(sock)
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 2:  # every client has begun its head
            for sock in slow:
                sock.send(head[sent:sent + 1])
            sent += 1
            time.sleep(1)
        result = {}
        measure = threading.Thread(target=lambda: result.update(rps=wrk(port, args.duration)))
        measure.start()
        answered = 0
        while answered < len(slow) and time.monotonic() - started < 120:
            for key, _ in selector.select(timeout=1):
                selector.unregister(key.fileobj)
                answered += 1
            for key in list(selector.get_map().values()):
                try:
                    key.fileobj.send(head[sent % len(head):sent % len(head) + 1])
                except OSError:
                    pass
            sent += 1
        measure.join()
        gone = time.monotonic() - started
        print("hello, 50 connections: %.0f req/s alone, %.0f req/s with %d slow clients (%.0f%%)"
              % (alone, result["rps"], len(slow), 100.0 * result["rps"] / alone))
        print("%d of the %d slow clients answered (408) and closed %.1f s after their first byte"
              % (answered, len(slow), gone))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
