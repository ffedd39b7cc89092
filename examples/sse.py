"""Server-sent events: a clock that ticks to the browser once a second.

    python examples/sse.py --port 8080

Open http://127.0.0.1:8080/ in a browser.  Each event goes out the moment it
is sent: the response is streaming, so every send() is flushed and the
``stream_request`` special fires when the client has taken it; the timer
paces the ticks.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import poex_http  # noqa: E402

PAGE = """<!DOCTYPE html><html><body><h1>Clock</h1><pre id="log"></pre>
<script>
new EventSource("/events").onmessage = function (e) {
  document.getElementById("log").textContent += e.data + "\\n";
};
</script></body></html>"""


def page(req, resp):
    resp.content_type = "text/html; charset=utf-8"
    resp.content = PAGE
    resp.done()


def events(req, resp):
    count = int(req.query_form().get("count", "0"))  # 0: tick forever
    interval = float(req.query_form().get("interval", "1"))
    resp.content_type = "text/event-stream"
    resp.header("Cache-Control", "no-cache")
    resp.streaming = True
    resp.send()  # the head goes out now

    def tick(number):
        if resp.finished or req.connection.aborted:
            return  # the browser went away
        resp.send("id: %d\ndata: %s\n\n" % (number, time.strftime("%H:%M:%S")))
        if count and number >= count:
            resp.done()
        else:
            SERVER.reactor.call_later(interval, tick, number + 1)
    tick(1)


SERVER = None


def main(argv=None):
    global SERVER
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    SERVER = poex_http.spawn(host=args.host, port=args.port, keepalive=True,
                             handlers=[("^/$", page), ("^/events$", events)])
    print("listening on port %d" % SERVER.port, flush=True)
    poex_http.run()


if __name__ == "__main__":
    main()
