"""A WSGI application under waitress for bench.py; run with a Python that has waitress.

    PEER_PYTHON bench/waitress_server.py --port P --root DOCROOT

``GET /`` answers ``Hello world``, ``GET /static/NAME`` sends the file under
DOCROOT through ``wsgi.file_wrapper``, ``POST /upload`` reads ``wsgi.input`` to
the end and answers with the length (``got 1048576``). waitress has no TLS.
Its defaults, except: backlog 1024, up to 2000 connections, poll() rather than
select() (which fails past file descriptor 1024), and its "task queue depth"
warning silenced.
"""
from _common import server_arguments
import logging
import os

HELLO = b"Hello world\n"
READ_SIZE = 262144
ROOT = "."


def _text(start_response, status, body):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path, method = environ.get("PATH_INFO") or "/", environ["REQUEST_METHOD"]
    if path == "/" and method in ("GET", "HEAD"):
        return _text(start_response, "200 OK", HELLO)
    if path == "/upload" and method == "POST":
        stream, size = environ["wsgi.input"], 0
        while True:
            block = stream.read(READ_SIZE)
            if not block:
                break
            size += len(block)
        return _text(start_response, "200 OK", b"got %d\n" % size)
    if path.startswith("/static/") and method in ("GET", "HEAD"):
        name = path[len("/static/"):]
        if name and "/" not in name and not name.startswith("."):
            try:
                f = open(os.path.join(ROOT, name), "rb")
            except OSError:
                f = None
            if f is not None:
                start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                          ("Content-Length", str(os.fstat(f.fileno()).st_size))])
                return environ["wsgi.file_wrapper"](f, READ_SIZE)
    return _text(start_response, "404 Not Found", b"not found\n")


def main(argv=None):
    global ROOT
    args = server_arguments(__doc__.splitlines()[0], argv, tls=False)
    ROOT = os.path.realpath(args.root)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    import waitress
    waitress.serve(app, host=args.host, port=args.port, backlog=1024, connection_limit=2000,
                   asyncore_use_poll=True, _quiet=True)


if __name__ == "__main__":
    main()
