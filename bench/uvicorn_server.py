"""A raw ASGI application under uvicorn (httptools, uvloop) for bench.py; run with a
Python that has uvicorn, httptools and uvloop installed.

    PEER_PYTHON bench/uvicorn_server.py --port P --root DOCROOT [--certfile PEM --keyfile PEM]

``GET /`` answers ``Hello world``, ``GET /static/NAME`` reads the file under
DOCROOT and sends it as one body message, ``POST /upload`` reads the whole body
and answers with its length (``got 1048576``). No framework, no access log.
"""
from _common import server_arguments
import os

HELLO = b"Hello world\n"
ROOT = "."


def _start(status, content_type, length):
    return {"type": "http.response.start", "status": status,
            "headers": [(b"content-type", content_type),
                        (b"content-length", str(length).encode("ascii"))]}


async def _answer(send, status, body, content_type=b"text/plain"):
    await send(_start(status, content_type, len(body)))
    await send({"type": "http.response.body", "body": body})


def _static(path):
    name = path[len("/static/"):]
    if not name or "/" in name or name.startswith("."):
        return None
    try:
        with open(os.path.join(ROOT, name), "rb") as f:
            return f.read()
    except OSError:
        return None


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path == "/" and method in ("GET", "HEAD"):
        await _answer(send, 200, HELLO)
    elif path == "/upload" and method == "POST":
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await _answer(send, 200, b"got %d\n" % size)
    elif path.startswith("/static/") and method in ("GET", "HEAD"):
        data = _static(path)
        if data is None:
            await _answer(send, 404, b"not found\n")
        else:
            await _answer(send, 200, data, b"application/octet-stream")
    else:
        await _answer(send, 404, b"not found\n")


def main(argv=None):
    global ROOT
    args = server_arguments(__doc__.splitlines()[0], argv)
    ROOT = os.path.realpath(args.root)
    import uvicorn
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                lifespan="off", access_log=False, log_level="warning", backlog=1024,
                ssl_certfile=args.certfile, ssl_keyfile=args.keyfile)


if __name__ == "__main__":
    main()
