"""The command line every echo script here shares (standard library only).

    python NAME_echo.py --port 8080 [--host 127.0.0.1]
    python NAME_echo.py --probe      # print version and C accelerators as JSON

The echo scripts run under the peers' Python, not the benchmark's; each
imports this module from its own directory.
"""

import argparse
import json


def arg_parser(doc):
    """A parser for --host, --port and --probe, described by *doc*'s first line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--probe", action="store_true",
                        help="print the library's version and C accelerators as JSON")
    return parser


def print_probe(facts):
    print(json.dumps(facts))


def main(doc, probe, serve):
    """Parse the command line; print probe() as JSON, or serve(host, port)."""
    args = arg_parser(doc).parse_args()
    if args.probe:
        print_probe(probe())
        return
    serve(args.host, args.port)
