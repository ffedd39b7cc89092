"""Special handlers: log the life of every connection and request.

    python examples/specials.py --port 8080

Each line printed tells one event: a connection opens, a request arrives, it
has been answered, the connection closes, or an error happened.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import poex_http  # noqa: E402


def say(*words):
    print(*words, flush=True)


def on_connect(conn):
    say("connect", conn.ID, conn.remote_ip)


def pre_request(req):
    say("request", req.connection.ID, req.method, req.path)


def post_request(req, resp):
    say("answered", req.connection.ID, req.method, resp.code)


def on_disconnect(conn):
    say("disconnect", conn.ID)


def on_error(err):
    if err.op:  # a network error: never sent to the client
        say("error", err.op, err.errnum, err.errstr)
    else:  # an HTTP error: the page may be rewritten before it goes out
        say("error", err.status_line)
        err.content_type = "text/plain; charset=utf-8"
        err.content = "Sorry: %s\n" % err.status_line


def hello(req, resp):
    resp.content_type = "text/plain"
    resp.content = "Hello %s\n" % req.connection.ID
    resp.done()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = poex_http.spawn(host=args.host, port=args.port, keepalive=True, handlers=[
        ("on_connect", on_connect), ("pre_request", pre_request),
        ("post_request", post_request), ("on_disconnect", on_disconnect),
        ("on_error", on_error), ("", hello)])
    say("listening on port %d" % server.port)
    poex_http.run()


if __name__ == "__main__":
    main()
