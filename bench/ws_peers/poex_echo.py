"""WebSocket echo on /echo with poex_http.WebSocket.

    python poex_echo.py --port 8080 [--host 127.0.0.1] [--poex-dir DIR]
    python poex_echo.py --probe          # print version as JSON

poex_http is imported from --poex-dir (default: the project root, the parent
of bench/), not from wherever sys.path would find one, so the benchmark
measures the working tree. Defaults throughout; permessage-deflate is only
negotiated when a client offers it, and the benchmark's client does not.
"""

import os
import sys

import _peer

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def import_poex(poex_dir):
    sys.path.insert(0, os.path.abspath(poex_dir))
    import poex_http
    return poex_http


def main():
    parser = _peer.arg_parser(__doc__)
    parser.add_argument("--poex-dir", default=PROJECT_ROOT)
    args = parser.parse_args()
    poex_http = import_poex(args.poex_dir)
    if not hasattr(poex_http, "WebSocket"):
        sys.exit("poex_http %s in %s has no WebSocket class"
                 % (poex_http.__version__, os.path.dirname(poex_http.__file__)))
    if args.probe:
        _peer.print_probe({"library": "poex_http", "version": poex_http.__version__,
                           "accelerator": None, "path": poex_http.__file__})
        return

    class Echo(poex_http.WebSocket):
        def on_message(self, message):
            # str for a text message, bytes for a binary one; send() answers in kind.
            self.send(message)

    poex_http.spawn(host=args.host, port=args.port, handlers=[("^/echo$", Echo)])
    poex_http.run()


if __name__ == "__main__":
    main()
