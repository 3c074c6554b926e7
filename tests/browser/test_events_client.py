"""browser.events_client: web/events.js, the app's event stream reader, in chromium against a small
server of this test's own that plays /v1/events: it resumes with Last-Event-ID after the server
drops the stream (no event lost or repeated), sends the token, parses CRLF lines, comments and
data split over several lines, filters by kind and dotted prefix, and hands `reset` to the app.
Needs no labloopd: it checks the client against the contract whatever the server's state."""

import http.server
import json
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import Browser  # noqa: E402

WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "web")


def row(seq, kind, key, data, crlf=False):
    nl = "\r\n" if crlf else "\n"
    return ("id: %d%sevent: %s%sdata: %s%s%s" % (seq, nl, kind, nl, json.dumps(
        {"key": key, "ts": "2026-01-01T00:00:00.000Z", "data": data}), nl, nl)).encode()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen = []  # (Last-Event-ID, Authorization) per stream
        self.done = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        if self.path == "/":
            body = b"<!doctype html><link rel=\"icon\" href=\"data:,\"><title>events</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/web/"):
            name = os.path.normpath(self.path[5:])
            path = os.path.join(WEB, name)
            if name.startswith("..") or not os.path.isfile(path):
                self.send_error(404)
                return
            body = open(path, "rb").read()
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path != "/v1/events":
            self.send_error(404)
            return
        srv.seen.append((self.headers.get("Last-Event-ID"), self.headers.get("Authorization")))
        n = len(srv.seen)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        w = self.wfile
        if n == 1:
            # after 4: rows 5 and 6, then the server goes away (a restart, a dropped link)
            w.write(b": keepalive\n\n")
            w.write(row(5, "run.state", "r1", {"id": "r1", "state": "queued"}))
            w.write(row(6, "instrument.state", "reader1", {"state": "busy"}, crlf=True))
            w.flush()
            return
        # the resumed stream: rows after 6 are gone, so reset first, then what is kept
        w.write(b'event: reset\ndata: {"oldest": 9}\n\n')
        # one event's data over two data: lines, joined by a newline (JSON whitespace)
        w.write(b'id: 9\nevent: measurement\ndata: {"key": "r1",\ndata:  "ts": '
                b'"2026-01-01T00:00:00.000Z", "data": {"well": "A1", "value": 0.5}}\n\n')
        w.write(row(10, "campaign", "c1", {"state": "running"}))
        w.write(row(11, "run.state", "r1", {"id": "r1", "state": "running"}))
        w.flush()
        srv.done.wait(60)  # held open until the test ends


class EventsClient(unittest.TestCase):
    def test_resume_reset_filter(self):
        srv = Server()
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        url = "http://127.0.0.1:%d" % srv.server_address[1]
        browser = Browser.launch()
        try:
            p = browser.new_page()
            p.send("Page.navigate", url=url + "/")
            p.wait("document.readyState === 'complete'")
            p.eval("""(async () => {
                const m = await import('/web/events.js');
                window.got = []; window.resets = []; window.states = [];
                const ev = m.createEvents({url: '/v1/events', token: () => 'tok-123', after: 4,
                    onStatus: (s) => states.push(s), onReset: (o) => resets.push(o)});
                ev.subscribe(['run', 'measurement'], (k, key, data, seq) =>
                    got.push([k, key, data, seq]));
                window.ev = ev;
                ev.start();
                return true;
            })()""")
            try:
                p.wait("window.got && window.got.length >= 3", "three events", timeout_s=30)
            except Exception:
                print("got", p.eval("window.got"), "states", p.eval("window.states"), "seen",
                      srv.seen, file=sys.stderr)
                raise
            got = p.eval("window.got")
            self.assertEqual([(g[0], g[1], g[3]) for g in got],
                             [("run.state", "r1", 5), ("measurement", "r1", 9),
                              ("run.state", "r1", 11)])
            self.assertEqual(got[1][2], {"well": "A1", "value": 0.5})
            self.assertEqual(p.eval("window.resets"), [9])
            self.assertEqual(srv.seen[0], ("4", "Bearer tok-123"))
            self.assertEqual(srv.seen[1], ("6", "Bearer tok-123"))  # no gap, no repeat
            self.assertEqual(len(srv.seen), 2)
            states = p.eval("window.states")
            self.assertEqual(states[:2], ["connecting", "live"])
            self.assertIn("reconnecting", states)
            self.assertEqual(p.eval("String(window.ev.lastId)"), "11")
            p.eval("window.ev.stop(), true")
            self.assertEqual(p.console_errors(), [])
        finally:
            srv.done.set()
            browser.close()
            srv.shutdown()


if __name__ == "__main__":
    unittest.main(verbosity=2)
