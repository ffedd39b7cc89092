"""A chat room over WebSocket: what one browser tab types, every tab sees.

    python examples/chat.py --port 8080 [--host 0.0.0.0] [--certfile PEM [--keyfile PEM]]

Open http://127.0.0.1:8080/ in two browser tabs (or on two machines, with
``--host 0.0.0.0``), pick a name in each and type.  ``GET /`` is one page
with a few lines of plain JavaScript; it opens a WebSocket to ``/chat`` on
the same host (``wss://`` when the page came over HTTPS, as with
``--certfile``).  ``/chat`` is a ``poex_http.WebSocket`` subclass in the
handler table: each message it receives goes to every open socket with
``broadcast()``, and joins and leaves are announced the same way.

On the wire, a message is JSON: the page sends ``{"name": ..., "text":
...}`` (plain text is taken too, as from a command-line client), and the
room sends ``{"name": ..., "text": ...}`` for what someone said and
``{"text": ...}`` for its own notices.  Text goes out as it came in: the
page shows it with ``textContent``, never as HTML, so there is nothing to
escape on the server.  A message is at most MAX_TEXT characters; a frame
larger than ``Limits.ws_max_message`` (16 KiB here) closes the socket with
1009.  A handshake from a page of another site (its ``Origin`` names
another host) is refused with 403.
"""
import argparse
import json
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import poex_http  # noqa: E402

MAX_TEXT = 1000   # characters in a message
MAX_NAME = 32     # characters in a name

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Chat</title>
<style>
body { font-family: sans-serif; max-width: 40em; margin: 1em auto; }
#log { list-style: none; padding: 0; height: 20em; overflow-y: auto; border: 1px solid #ccc; }
#log li { padding: 0.1em 0.4em; white-space: pre-wrap; }
#log li.notice { color: #777; font-style: italic; }
#text { width: 25em; }
</style></head>
<body>
<h1>Chat</h1>
<ul id="log"></ul>
<form id="form">
  <input id="name" size="10" maxlength="%(max_name)d" aria-label="name">
  <input id="text" maxlength="%(max_text)d" autocomplete="off" placeholder="say something">
  <button>Send</button> <span id="state">connecting...</span>
</form>
<script>
(function () {  // a function, so that no name here is a window property (window.name)
  var log = document.getElementById("log"), text = document.getElementById("text"),
      nick = document.getElementById("name"), state = document.getElementById("state");
  nick.value = "guest-" + Math.floor(Math.random() * 1000);
  var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
            "/chat?name=" + encodeURIComponent(nick.value);
  var socket = new WebSocket(url);
  socket.onopen = function () { state.textContent = "connected"; };
  socket.onclose = function () { state.textContent = "disconnected (reload to join again)"; };
  socket.onmessage = function (event) {
    var message = JSON.parse(event.data), item = document.createElement("li");
    if (message.name === undefined) {
      item.className = "notice";
      item.textContent = message.text;
    } else {
      item.textContent = message.name + ": " + message.text;
    }
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
  };
  document.getElementById("form").onsubmit = function (event) {
    event.preventDefault();
    if (text.value && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({name: nick.value, text: text.value}));
      text.value = "";
    }
  };
})();
</script>
</body></html>
""" % {"max_name": MAX_NAME, "max_text": MAX_TEXT}


def page(req, resp):
    resp.content_type = "text/html; charset=utf-8"
    resp.content = PAGE
    resp.done()


def _hostname(authority):
    """The host of a ``host[:port]`` authority, lower-cased, without its port."""
    return urllib.parse.urlsplit("//" + authority).hostname or ""


def _clean_name(name, default):
    name = " ".join(str(name).split())[:MAX_NAME]  # no line breaks, no runs of spaces
    return name or default


class Chat(poex_http.WebSocket):
    """One participant: the room is every open socket of this class (``Chat.sockets()``)."""

    guests = 0

    def on_handshake(self, response):
        # A browser sends the Origin of the page that opens the socket, and
        # sends this site's cookies with it whatever that page is: refuse
        # pages of other sites.  Ports are left out of the comparison, since
        # a proxy may change them (nginx's $host has none).
        origin = self.request.header("Origin")
        if origin is None:
            return True  # not a browser (a command-line client, a test)
        host = self.request.header("Host", "")
        return _hostname(urllib.parse.urlsplit(origin).netloc) == _hostname(host)

    def on_open(self):
        Chat.guests += 1
        wanted = self.request.query_form().get("name", "")
        self.name = _clean_name(wanted, "guest-%d" % Chat.guests)
        self.notice("%s joined (%d here)" % (self.name, len(Chat.sockets())))

    def on_message(self, message):
        if isinstance(message, bytes):
            self.close(1003, "text messages only")
            return
        try:
            data = json.loads(message)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("text"), str):
            text = data["text"]
            if "name" in data:
                self.rename(_clean_name(data["name"], self.name))
        else:
            text = message  # plain text
        if len(text) > MAX_TEXT:
            self.send(json.dumps({"text": "Not sent: a message is at most %d characters."
                                  % MAX_TEXT}))
            return
        if text.strip():
            Chat.broadcast(json.dumps({"name": self.name, "text": text}))

    def on_close(self, code, reason):
        if hasattr(self, "name"):  # it had joined
            self.notice("%s left" % self.name)

    def rename(self, name):
        if name != self.name:
            old, self.name = self.name, name
            self.notice("%s is now %s" % (old, name))

    @staticmethod
    def notice(text):
        Chat.broadcast(json.dumps({"text": text}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1; 0.0.0.0 for every one)")
    parser.add_argument("--certfile", help="serve HTTPS and wss:// with this certificate "
                                           "(and key, unless --keyfile is given)")
    parser.add_argument("--keyfile", help="private key for --certfile")
    args = parser.parse_args(argv)
    context = None
    if args.certfile:
        import ssl
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
    server = poex_http.spawn(host=args.host, port=args.port, keepalive=True,
                             ssl_context=context,
                             limits=poex_http.Limits(ws_max_message=16384),
                             handlers=[("^/$", page), ("^/chat$", Chat)])
    print("listening on port %d" % server.port, flush=True)
    poex_http.run()


if __name__ == "__main__":
    main()
