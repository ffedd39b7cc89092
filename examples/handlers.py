"""Change the handler table while the server runs.

    python examples/handlers.py --port 8080

``/add?path=/new`` adds a handler for that path, ``/remove?path=/new`` takes
it away, ``/list`` shows the table.  Connections opened afterwards see the
change; an open keep-alive connection keeps the table it started with.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import poex_http  # noqa: E402


def text(resp, body):
    resp.content_type = "text/plain; charset=utf-8"
    resp.content = body
    resp.done()


def added(req, resp):
    text(resp, "this handler was added at run time for %s\n" % req.path)


def add(req, resp):
    path = req.query_form().get("path", "/new")
    SERVER.handlers_add([("^%s$" % path, added)])
    text(resp, "added %s\n" % path)


def remove(req, resp):
    path = req.query_form().get("path", "/new")
    SERVER.handlers_remove("^%s$" % path)
    text(resp, "removed %s\n" % path)


def show(req, resp):
    text(resp, "".join("%s\n" % regex for regex in SERVER.router.order))


SERVER = None


def main(argv=None):
    global SERVER
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    SERVER = poex_http.spawn(host=args.host, port=args.port, handlers=[
        ("^/add$", add), ("^/remove$", remove), ("^/list$", show)])
    print("listening on port %d" % SERVER.port, flush=True)
    poex_http.run()


if __name__ == "__main__":
    main()
