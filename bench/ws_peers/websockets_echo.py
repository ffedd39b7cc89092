"""WebSocket echo on /echo with the websockets library's asyncio server.

    python websockets_echo.py --port 8080 [--host 127.0.0.1]
    python websockets_echo.py --probe      # print version and C accelerator as JSON

Library defaults except compression=None (the benchmark measures plain
frames). The default max_size, 2**20, already admits a 1 MiB message (the
limit is inclusive), so it is left alone. The default keepalive ping every
20 s stays on, as a deployment would have it.
"""

import asyncio
import http

from websockets.asyncio.server import serve

import _peer


async def echo(websocket):
    # Text arrives as str and binary as bytes; send() keeps the frame type.
    async for message in websocket:
        await websocket.send(message)


def only_echo_path(connection, request):
    if request.path != "/echo":
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
    return None


def probe():
    import websockets.frames
    import websockets.utils
    # frames.py falls back to the pure Python utils.apply_mask when the C
    # extension is missing.
    in_c = websockets.frames.apply_mask is not websockets.utils.apply_mask
    return {"library": "websockets", "version": websockets.__version__,
            "accelerator": "C masking (websockets.speedups)" if in_c else None}


async def serve_echo(host, port):
    async with serve(echo, host, port, compression=None, process_request=only_echo_path) as server:
        await server.serve_forever()


if __name__ == "__main__":
    _peer.main(__doc__, probe, lambda host, port: asyncio.run(serve_echo(host, port)))
