"""Browser tests' harness: the servers (tests/browser/stack.c, which starts PostgreSQL, mosquitto,
labloop-sim and labloopd with the C test harness) and headless Debian chromium driven over the
DevTools protocol with python3-websocket (Debian's; nothing from the network at install time).

    stack = Stack.start()                  # stack.url, stack.tokens["viewer"], stack.api(...)
    browser = Browser.launch()
    page = browser.new_page()
    page.open(stack.url, "#/cell", stack.tokens["technician"])   # token in sessionStorage
    page.wait_text("#page", "reader1")
    page.click("button", text="Pause")
    page.screenshot("cell")                # build/screenshots/cell.png
    assert page.console_errors() == []     # console.error, uncaught exceptions, failed loads
    browser.close(); stack.stop()

Environment: LAB_BROWSER_STACK (the stack program), LAB_SCREENSHOTS (the screenshots
directory), CHROMIUM (default: chromium on PATH). Every wait polls a condition with a deadline;
nothing asserts on elapsed time.
"""

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import websocket  # python3-websocket

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WAIT_S = 30


class BrowserError(Exception):
    pass


# ---- the servers ----


class Stack:
    """labloopd + labloop-sim + PostgreSQL + mosquitto, from tests/browser/stack.c."""

    def __init__(self, proc, info):
        self.proc = proc
        self.info = info
        self.url = info["url"]
        self.tokens = info["tokens"]
        self.sim_ctl = info["sim_ctl"]
        self.log = info["log"]

    @classmethod
    def start(cls, timeout_s=120, args=()):
        exe = os.environ.get("LAB_BROWSER_STACK")
        if not exe:
            raise BrowserError("LAB_BROWSER_STACK is not set (run through ctest)")
        proc = subprocess.Popen([exe, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            proc.kill()
            raise BrowserError("the stack did not start in %d s" % timeout_s)
        if not line:
            proc.wait()
            raise BrowserError("the stack failed to start (status %s)" % proc.returncode)
        return cls(proc, json.loads(line))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.stdout.close()
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def api(self, method, path, body=None, role="admin", want=None):
        """One API request with a role's token: (status, JSON or text or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.tokens[role])
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
        doc = raw.decode() if raw else None
        if doc and "json" in ctype:
            doc = json.loads(doc)
        if want is not None and status != want:
            raise BrowserError("%s %s: %d, not %d: %s" % (method, path, status, want, doc))
        return status, doc

    def has_route(self, path):
        """Whether the daemon serves path (anything but 404), e.g. /v1/events before it exists."""
        req = urllib.request.Request(self.url + path, method="HEAD")
        req.add_header("Authorization", "Bearer " + self.tokens["admin"])
        try:
            with urllib.request.urlopen(req, timeout=10):
                return True
        except urllib.error.HTTPError as e:
            return e.code != 404
        except OSError:  # a stream that stays open, or a timeout: it is there
            return True

    def sim(self, request):
        """One labloop-sim control request (a dict); its JSON reply."""
        import socket

        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self.sim_ctl)
        s.sendall((json.dumps(request) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        s.close()
        return json.loads(buf or b"{}")

    def wait(self, cond, what, timeout_s=DEFAULT_WAIT_S, every_s=0.2):
        """Polls cond() until it returns a true value (returned); fails with what."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = cond()
            if last:
                return last
            time.sleep(every_s)
        raise BrowserError("timed out waiting for %s (last: %r)" % (what, last))


# ---- the browser ----


class Browser:
    """Headless chromium with its own profile, on a DevTools port it picks on loopback."""

    def __init__(self, proc, port, profile):
        self.proc = proc
        self.port = port
        self.profile = profile
        self.pages = []

    @classmethod
    def launch(cls, timeout_s=60):
        exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            raise BrowserError("chromium is not installed (deploy/install-deps installs it)")
        profile = tempfile.mkdtemp(prefix="labchromium")
        args = [
            exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--metrics-recording-only", "--mute-audio",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            "--user-data-dir=" + profile, "--window-size=1280,900", "about:blank",
        ]
        with open(os.path.join(profile, "chromium.log"), "w") as log:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=log)
        portfile = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrowserError("chromium exited with %s: see %s/chromium.log" %
                                   (proc.returncode, profile))
            try:
                with open(portfile) as f:
                    port = int(f.readline())
                return cls(proc, port, profile)
            except (OSError, ValueError):
                time.sleep(0.1)
        proc.kill()
        raise BrowserError("chromium gave no DevTools port in %d s" % timeout_s)

    def new_page(self):
        req = urllib.request.Request("http://127.0.0.1:%d/json/new?about:blank" % self.port,
                                     method="PUT")
        with urllib.request.urlopen(req, timeout=30) as r:
            target = json.load(r)
        page = Page(target["webSocketDebuggerUrl"], target["id"], self.port)
        self.pages.append(page)
        return page

    def close(self):
        for p in self.pages:
            p.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab over its own DevTools websocket: commands, and the errors it collects."""

    def __init__(self, ws_url, target_id, port=None):
        self.target_id = target_id
        self.port = port  # the browser's DevTools port, to close the tab itself
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.lock = threading.Lock()
        self.waiting = {}  # id -> Queue for its answer
        self.errors = []  # "console: ...", "exception: ...", "log: ..."
        self.failed = []  # (status or error text, method, url)
        self.requests = {}  # requestId -> (method, url)
        self.closed = False
        self.init_script = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(domain + ".enable")

    # -- the protocol --

    def _read(self):
        while not self.closed:
            try:
                msg = json.loads(self.ws.recv())
            except Exception:
                break
            if "id" in msg:
                q = self.waiting.pop(msg["id"], None)
                if q:
                    q.put(msg)
            else:
                self._event(msg.get("method"), msg.get("params", {}))
        for q in list(self.waiting.values()):
            q.put({"error": {"message": "the DevTools connection closed"}})

    def _event(self, method, p):
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.errors.append("console: " + text)
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            exc = d.get("exception", {}).get("description") or d.get("text", "")
            self.errors.append("exception: %s (%s:%s)" % (exc, d.get("url", ""), d.get("lineNumber")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append("log: %s %s" % (e.get("text", ""), e.get("url", "")))
        elif method == "Network.requestWillBeSent":
            r = p.get("request", {})
            self.requests[p.get("requestId")] = (r.get("method"), r.get("url"))
        elif method == "Network.responseReceived":
            st = p.get("response", {}).get("status", 0)
            if st >= 400:
                m, u = self.requests.get(p.get("requestId"), ("?", p["response"].get("url")))
                self.failed.append((st, m, u))
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            m, u = self.requests.get(p.get("requestId"), ("?", "?"))
            self.failed.append((p.get("errorText"), m, u))

    def send(self, method, timeout_s=60, **params):
        with self.lock:
            self.next_id += 1
            mid = self.next_id
            q = queue.Queue()
            self.waiting[mid] = q
            self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        try:
            msg = q.get(timeout=timeout_s)
        except queue.Empty:
            self.waiting.pop(mid, None)
            raise BrowserError("%s: no answer in %d s" % (method, timeout_s))
        if "error" in msg:
            raise BrowserError("%s: %s" % (method, msg["error"].get("message")))
        return msg.get("result", {})

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.ws.close()
        except Exception:
            pass
        # The tab goes too: an open tab keeps its event stream, and chromium allows six
        # connections per host.
        if self.port:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/json/close/%s" %
                                            (self.port, self.target_id), timeout=30):
                    pass
            except (OSError, urllib.error.URLError):
                pass

    # -- what tests use --

    def open(self, base_url, hash_="#/cell", token=None, wait_ready=True):
        """Loads the app at base_url + "/" + hash_ with token already in sessionStorage (None:
        none, so the sign-in modal shows), and waits for the page to be mounted."""
        if self.init_script:
            self.send("Page.removeScriptToEvaluateOnNewDocument", identifier=self.init_script)
            self.init_script = None
        if token is not None:
            src = "sessionStorage.setItem('labloop.token', %s);" % json.dumps(token)
            self.init_script = self.send("Page.addScriptToEvaluateOnNewDocument",
                                         source=src)["identifier"]
        self.send("Page.navigate", url=base_url + "/" + hash_)
        self.wait("document.readyState === 'complete'", "the document to load")
        if wait_ready:
            self.wait_ready()

    def goto(self, hash_):
        """Another page of the app, without a reload."""
        self.eval("location.hash = %s" % json.dumps(hash_))
        self.wait_ready(hash_)

    def wait_ready(self, hash_=None):
        """Waits until the routed page is mounted: main#page's data-ready is the hash it was
        mounted for (#/runs/ID), set once its mount() resolved."""
        cond = "document.querySelector('#page[data-ready]')"
        if hash_:
            cond = "document.getElementById('page').dataset.ready === %s" % json.dumps(hash_)
        self.wait(cond, "the page %s to be ready" % (hash_ or ""))

    def eval(self, expr, timeout_s=60):
        """Evaluates expr in the page (promises awaited); its value (JSON-able)."""
        r = self.send("Runtime.evaluate", timeout_s=timeout_s, expression=expr,
                      returnByValue=True, awaitPromise=True, userGesture=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError("eval %s: %s" % (expr[:80], d.get("exception", {}).get(
                "description") or d.get("text")))
        return r.get("result", {}).get("value")

    def wait(self, expr, what=None, timeout_s=DEFAULT_WAIT_S):
        """Polls the JS expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.eval("(() => { try { return (%s) || null; } catch (e) { return null; } })()"
                                 % expr)
            except BrowserError:
                last = None  # a navigation in progress
            if last is not None and last is not False and last != 0 and last != "":
                return last  # truthy in JS terms: an element comes back as {}
            time.sleep(0.1)
        self.screenshot("timeout-" + time.strftime("%H%M%S"))
        raise BrowserError("timed out waiting for %s (errors so far: %s; failed requests: %s)"
                           % (what or expr, self.errors, self.failed))

    def wait_selector(self, selector, timeout_s=DEFAULT_WAIT_S):
        return self.wait("document.querySelector(%s) !== null" % json.dumps(selector),
                         "selector " + selector, timeout_s)

    def wait_text(self, selector, text, timeout_s=DEFAULT_WAIT_S):
        """Waits until an element matching selector contains text."""
        return self.wait("[...document.querySelectorAll(%s)].some(e => e.textContent.includes(%s))"
                         % (json.dumps(selector), json.dumps(text)),
                         "%r in %s" % (text, selector), timeout_s)

    def text(self, selector):
        """textContent of the first match ('' when none)."""
        return self.eval("(document.querySelector(%s) || {}).textContent || ''" %
                         json.dumps(selector))

    def count(self, selector):
        return self.eval("document.querySelectorAll(%s).length" % json.dumps(selector))

    def click(self, selector, text=None, timeout_s=DEFAULT_WAIT_S):
        """Clicks the first visible element matching selector (and containing text)."""
        find = ("[...document.querySelectorAll(%s)].find(e => e.offsetParent !== null && "
                "(%s === null || e.textContent.includes(%s)))"
                % (json.dumps(selector), json.dumps(text), json.dumps(text)))
        self.wait(find + " !== undefined", "%s %r to click" % (selector, text), timeout_s)
        # A real mouse click at the element's centre, so the modal, pointer handling and focus
        # behave as for a person.
        box = self.eval("(() => { const e = %s; e.scrollIntoView({block: 'center'}); "
                        "const r = e.getBoundingClientRect(); "
                        "return [r.x + r.width / 2, r.y + r.height / 2]; })()" % find)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def fill(self, selector, value):
        """Sets an input's or select's value as typing would (input and change events)."""
        ok = self.eval("(() => { const e = document.querySelector(%s); if (!e) return false; "
                       "e.focus(); e.value = %s; e.dispatchEvent(new Event('input', {bubbles: true}));"
                       " e.dispatchEvent(new Event('change', {bubbles: true})); return true; })()"
                       % (json.dumps(selector), json.dumps(value)))
        if not ok:
            raise BrowserError("no element %s to fill" % selector)

    def screenshot(self, name):
        """build/screenshots/NAME.png (LAB_SCREENSHOTS); its path."""
        out = os.environ.get("LAB_SCREENSHOTS") or os.path.join(os.getcwd(), "screenshots")
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, name + ".png")
        try:  # the whole page, not only what the window shows
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": max(size["width"], 1),
                    "height": min(max(size["height"], 1), 4000), "scale": 1}
            data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                             clip=clip)
        except BrowserError as e:
            print("screenshot %s: %s" % (name, e), file=sys.stderr)
            return None
        import base64

        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))
        return path

    def console_errors(self, allow=()):
        """Errors seen so far, less those that contain one of allow's strings."""
        return [e for e in self.errors if not any(a in e for a in allow)]

    def failed_requests(self, allow=()):
        return [f for f in self.failed if not any(a in str(f[2]) for a in allow)]

    def clear_errors(self):
        self.errors.clear()
        self.failed.clear()

    def fetch_status(self, method, path, body=None):
        """The page's own fetch() with its token (as a forged request from the console would):
        the HTTP status."""
        return self.eval(
            "fetch(%s, {method: %s, headers: {'Authorization': 'Bearer ' + "
            "sessionStorage.getItem('labloop.token'), 'Content-Type': 'application/json'}, "
            "body: %s}).then(r => r.status)"
            % (json.dumps(path), json.dumps(method), "null" if body is None else json.dumps(json.dumps(body))))


# ---- a test case with one stack and one browser for the whole module ----


class BrowserCase(unittest.TestCase):
    """Subclasses get self.stack, self.browser and a fresh self.page per test; screenshots on
    failure. The stack and the browser are started once per class."""

    stack = None
    browser = None
    stack_args = ()  # e.g. ("--mover",): see tests/browser/stack.c

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack.start(args=cls.stack_args)
        try:
            cls.browser = Browser.launch()
        except Exception:
            cls.stack.stop()
            raise
        # Until /v1/events is served, its 404 is expected and the live checks are skipped.
        cls.has_events = cls.stack.has_route("/v1/events")
        cls.allow = () if cls.has_events else ("/v1/events",)

    @classmethod
    def tearDownClass(cls):
        if cls.browser:
            cls.browser.close()
        if cls.stack:
            rc = cls.stack.stop()
            if rc:
                raise BrowserError("the stack ended with status %s: see %s" % (rc, cls.stack.log))

    def setUp(self):
        self.page = self.browser.new_page()

    def tearDown(self):
        outcome = getattr(self, "_outcome", None)
        failed = False
        if outcome is not None and getattr(outcome, "result", None) is not None:
            res = outcome.result
            failed = any(t is self for t, _ in res.failures + res.errors)
        if failed:
            self.page.screenshot("failed-" + self.id().split(".")[-1])
        self.page.close()

    def open(self, hash_, role="technician"):
        self.page.open(self.stack.url, hash_, self.stack.tokens[role] if role else None)

    def assert_clean(self):
        """No console error and no failed request so far (bar the allowed ones)."""
        self.assertEqual(self.page.console_errors(self.allow), [])
        self.assertEqual(self.page.failed_requests(self.allow), [])

    def need_events(self):
        if not self.has_events:
            self.skipTest("this daemon does not serve /v1/events yet")


def main():
    """unittest's main, with a skip counted as a pass (ctest sees the summary line)."""
    unittest.main(verbosity=2)
