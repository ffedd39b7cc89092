"""Prefork: several worker processes share one listening socket.

    python examples/prefork.py --port 8080 --workers 4

Each answer names the worker that served it.  A worker that dies is
replaced; SIGTERM or Ctrl-C stops them all gracefully.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import poex_http  # noqa: E402


def whoami(req, resp):
    resp.content_type = "text/plain"
    resp.content = "pid %d\n" % os.getpid()
    resp.done()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=-1,
                        help="open connections per worker")
    parser.add_argument("--recycle", type=int, default=0,
                        help="connections a worker serves before it is replaced")
    args = parser.parse_args(argv)
    server = poex_http.spawn(host=args.host, port=args.port, handler=whoami, keepalive=True,
                             prefork=args.workers, concurrency=args.concurrency,
                             recycle=args.recycle)
    print("listening on port %d (parent %d)" % (server.port, os.getpid()), flush=True)
    poex_http.run()


if __name__ == "__main__":
    main()
