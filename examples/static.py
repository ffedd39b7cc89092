"""Serve a directory, with a small API beside it.

    python examples/static.py --port 8080 --root ./public

``/api/time`` answers JSON; every other path is a file under ROOT (with
ranges, conditional requests, precompressed siblings and listings).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import poex_http  # noqa: E402


def api_time(req, resp):
    resp.content_type = "application/json"
    resp.content = json.dumps({"time": time.time()})
    resp.done()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--root", default=".")
    args = parser.parse_args(argv)
    server = poex_http.spawn(host=args.host, port=args.port, keepalive=True,
                             handlers=[("^/api/time$", api_time),
                                       ("", poex_http.StaticFiles(args.root))])
    print("listening on port %d" % server.port, flush=True)
    poex_http.run()


if __name__ == "__main__":
    main()
