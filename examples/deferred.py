"""A handler that answers later: from a timer, and from a worker thread.

    python examples/deferred.py --port 8080

``/later?delay=0.5`` returns at once and finishes the response from a timer;
``/thread`` finishes it from another thread (the call is handed to the
reactor).  Meanwhile the server keeps answering everyone else.
"""
import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import poex_http  # noqa: E402


def later(req, resp):
    delay = float(req.query_form().get("delay", "0.5"))
    started = time.monotonic()

    def finish():
        resp.content_type = "text/plain"
        resp.content = "answered after %.2f s\n" % (time.monotonic() - started)
        resp.done()
    req.connection.server.reactor.call_later(delay, finish)


def in_thread(req, resp):
    def work():
        total = sum(range(100000))  # blocking work, off the reactor
        resp.content_type = "text/plain"
        resp.content = "sum=%d from %s\n" % (total, threading.current_thread().name)
        resp.done()  # handed to the reactor thread
    threading.Thread(target=work, name="worker").start()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = poex_http.spawn(host=args.host, port=args.port, keepalive=True,
                             handlers=[("^/later", later), ("^/thread", in_thread)])
    print("listening on port %d" % server.port, flush=True)
    poex_http.run()


if __name__ == "__main__":
    main()
