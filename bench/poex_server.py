"""poex_http for bench.py's TLS and upload workloads, through the public API only.

    python3 bench/poex_server.py --port P --root DOCROOT [--certfile PEM --keyfile PEM]

``GET /`` answers ``Hello world``, ``/static/...`` serves the files under
DOCROOT and ``POST /upload`` reads the whole body and answers with its length
(``got 1048576``). Bodies up to 2 MiB are accepted; past ``Limits.spool_body``
(256 KiB by default) poex_http keeps a body in a temporary file, as shipped.
"""
from _common import server_arguments
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import poex_http  # noqa: E402

HELLO = b"Hello world\n"
READ_SIZE = 262144


def hello(req, resp):
    resp.content_type = "text/plain"
    resp.content = HELLO
    resp.done()


def upload(req, resp):
    if req.method != "POST":
        resp.code = 405
        resp.headers["Allow"] = "POST"
        resp.content = b"POST only\n"
        resp.done()
        return
    size = 0
    body = req.body_stream()   # the body from its start, in memory or spooled
    while True:
        block = body.read(READ_SIZE)
        if not block:
            break
        size += len(block)
    resp.content_type = "text/plain"
    resp.content = b"got %d\n" % size
    resp.done()


def main(argv=None):
    args = server_arguments(__doc__.splitlines()[0], argv)
    handlers = [("^/$", hello), ("^/upload$", upload)]
    if args.root:
        handlers.append(("^/static/", poex_http.StaticFiles(args.root, prefix="/static")))
    context = None
    if args.certfile:
        import ssl
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
    server = poex_http.spawn(host=args.host, port=args.port, handlers=handlers, keepalive=1000,
                             ssl_context=context, limits=poex_http.Limits(max_body=2 * 1024 * 1024))
    print("listening on port %d" % server.port, flush=True)
    poex_http.run()


if __name__ == "__main__":
    main()
