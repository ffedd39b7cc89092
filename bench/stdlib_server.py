"""Reference server for bench/bench.py, built only from the standard library.

``http.server.ThreadingHTTPServer`` as it is usually run for speed: HTTP/1.1
keep-alive, TCP_NODELAY, a 1024 backlog, daemon threads, no request logging.
With ``--buffered`` the ``wfile`` is buffered too, so a small response
leaves in one ``send`` instead of two (head, then body).

    python3 bench/stdlib_server.py --port 8080 --root DOCROOT [--buffered]

``GET /`` answers ``Hello world\\n`` (text/plain); ``/static/...`` serves
DOCROOT through ``SimpleHTTPRequestHandler``; anything else is 404.
"""

import argparse
import functools
import http.server

HELLO = b"Hello world\n"
STATIC_PREFIX = "/static/"


class BenchHandler(http.server.SimpleHTTPRequestHandler):
    """Hello on ``/``, DOCROOT under ``/static/``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _route(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            return "hello"
        if path.startswith(STATIC_PREFIX):
            self.path = self.path[len(STATIC_PREFIX) - 1:]
            return "static"
        return None

    def do_GET(self):
        self._dispatch(send_body=True)

    def do_HEAD(self):
        self._dispatch(send_body=False)

    def _dispatch(self, send_body):
        route = self._route()
        if route == "hello":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(HELLO)))
            if self.close_connection:  # the client asked; say we close (RFC 9112 9.6)
                self.send_header("Connection", "close")
            self.end_headers()
            if send_body:
                self.wfile.write(HELLO)
        elif route == "static":
            if send_body:
                super().do_GET()
            else:
                super().do_HEAD()
        else:
            self.send_error(404)

    def log_message(self, format, *args):  # noqa: A002 - signature of the base
        pass


class BenchServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer with a deep backlog and daemon threads."""

    request_queue_size = 1024
    daemon_threads = True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True, help="directory served under /static/")
    parser.add_argument("--buffered", action="store_true",
                        help="buffer wfile: head and body flushed together after each request")
    args = parser.parse_args(argv)
    if args.buffered:
        BenchHandler.wbufsize = 64 * 1024
    handler = functools.partial(BenchHandler, directory=args.root)
    with BenchServer((args.host, args.port), handler) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
