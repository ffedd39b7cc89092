"""WebSocket echo on /echo with tornado's WebSocketHandler.

    python tornado_echo.py --port 8080 [--host 127.0.0.1]
    python tornado_echo.py --probe      # print version and C accelerator as JSON

Library defaults throughout: max_message_size is 10 MiB, enough for a 1 MiB
message; no compression (get_compression_options returns None); no pings.
"""

import asyncio

import tornado
import tornado.web
import tornado.websocket

import _peer


class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, message):
        # str for a text message, bytes for a binary one; answer in kind.
        self.write_message(message, binary=isinstance(message, bytes))


def probe():
    import tornado.util
    # util.py falls back to the pure Python mask when the C extension is
    # missing or TORNADO_EXTENSION=0.
    in_c = tornado.util._websocket_mask is not tornado.util._websocket_mask_python
    return {"library": "tornado", "version": tornado.version,
            "accelerator": "C masking (tornado.speedups)" if in_c else None}


async def serve_echo(host, port):
    app = tornado.web.Application([(r"/echo", Echo)])
    app.listen(port, address=host)
    await asyncio.Event().wait()


if __name__ == "__main__":
    _peer.main(__doc__, probe, lambda host, port: asyncio.run(serve_echo(host, port)))
