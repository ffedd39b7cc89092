"""WebSocket echo on /echo with aiohttp's web server.

    python aiohttp_echo.py --port 8080 [--host 127.0.0.1]
    python aiohttp_echo.py --probe      # print version and C accelerators as JSON

Library defaults throughout: max_msg_size is 4 MiB, enough for a 1 MiB
message; WebSocketResponse accepts permessage-deflate only when a client
offers it, and the benchmark's client does not; no heartbeat; no access log
output (run_app's logger is not configured).
"""

import aiohttp
from aiohttp import WSMsgType, web

import _peer


async def echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def probe():
    from aiohttp import http_parser
    from aiohttp._websocket import helpers, reader
    parts = []
    if reader.WebSocketReader.__module__.endswith("reader_c"):
        parts.append("Cython frame reader")
    if helpers.websocket_mask.__name__ == "_websocket_mask_cython":
        parts.append("Cython masking")
    if http_parser.HttpRequestParser.__module__ == "aiohttp._http_parser":
        parts.append("C HTTP parser (llhttp)")
    return {"library": "aiohttp", "version": aiohttp.__version__,
            "accelerator": ", ".join(parts) or None}


def serve_echo(host, port):
    app = web.Application()
    app.router.add_get("/echo", echo)
    web.run_app(app, host=host, port=port, print=None)


if __name__ == "__main__":
    _peer.main(__doc__, probe, serve_echo)
