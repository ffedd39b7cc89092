"""Hello world: the smallest useful poex_http server.

    python examples/hello.py --port 8080 [--root DIR]

answers ``GET /`` with ``Hello world`` and, given ``--root``, serves the
files under DIR at ``/static/``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import poex_http  # noqa: E402

HELLO = b"Hello world\n"


def hello(req, resp):
    resp.content_type = "text/plain"
    resp.content = HELLO
    resp.done()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default=None, help="address to bind (default: all)")
    parser.add_argument("--root", help="directory to serve under /static/")
    args = parser.parse_args(argv)
    handlers = [("^/$", hello)]
    if args.root:
        handlers.append(("^/static/", poex_http.StaticFiles(args.root, prefix="/static")))
    server = poex_http.spawn(host=args.host, port=args.port, handlers=handlers, keepalive=1000)
    print("listening on port %d" % server.port, flush=True)
    poex_http.run()


if __name__ == "__main__":
    main()
