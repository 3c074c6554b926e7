"""browser.shell: the app's shell in headless chromium: the token is asked once and kept for the
tab's session, a wrong one is refused with a message, /v1/me gives the role shown, the navigation
routes every page, a viewer gets no buttons and a 403 when it forges a request, and the event
stream's indicator says live."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import BrowserCase, main  # noqa: E402


class Shell(BrowserCase):
    def test_sign_in(self):
        p = self.page
        p.open(self.stack.url, "#/cell", None, wait_ready=False)
        p.wait("document.getElementById('login').open", "the sign-in modal")
        p.screenshot("shell-sign-in")
        p.fill("#login-token", "not-a-token-at-all")
        p.click("#login-ok")
        p.wait_text("#login-error", "not accepted")
        self.assertIsNone(p.eval("sessionStorage.getItem('labloop.token')"))
        p.fill("#login-token", self.stack.tokens["technician"])
        p.click("#login-ok")
        p.wait_ready()
        self.assertFalse(p.eval("document.getElementById('login').open"))
        self.assertIn("technician", p.text("#who"))
        self.assertIn("tom", p.text("#who"))
        self.assertEqual(p.eval("sessionStorage.getItem('labloop.token')"),
                         self.stack.tokens["technician"])
        # Kept for the session: a reload does not ask again.
        p.send("Page.reload")
        p.wait("document.readyState === 'complete'")
        p.wait_ready()
        self.assertFalse(p.eval("document.getElementById('login').open"))
        # Sign out asks again.
        p.click("#signout")
        p.wait("document.getElementById('login').open", "the sign-in modal after sign out")
        self.assertIsNone(p.eval("sessionStorage.getItem('labloop.token')"))

    def test_navigation(self):
        self.open("#/cell")
        p = self.page
        nav = p.eval("[...document.querySelectorAll('#nav a')].map(a => a.textContent)")
        self.assertEqual(nav, ["Cell", "Schedule", "Runs", "Operator", "Campaigns", "Instruments"])
        # Large touch targets: every link and button at least 44 px high.
        self.assertGreaterEqual(p.eval(
            "Math.min(...[...document.querySelectorAll('#nav a')].map(a => a.offsetHeight))"), 44)
        for name in ("runs", "instruments", "cell"):
            p.click("#nav a[data-page=%s]" % name)
            p.wait_ready("#/" + name)
            self.assertEqual(p.eval("document.getElementById('page').dataset.page"), name)
            self.assertEqual(p.eval("document.querySelector('#nav a.active').dataset.page"), name)
        self.assert_clean()

    def test_live_indicator(self):
        self.need_events()
        self.open("#/cell")
        self.page.wait("document.getElementById('conn').dataset.state === 'live'", "live")
        self.assertEqual(self.page.text("#conn"), "live")
        self.assert_clean()

    def test_viewer(self):
        self.open("#/instruments", role="viewer")
        p = self.page
        self.assertIn("viewer", p.text("#who"))
        self.assertTrue(p.eval("document.body.classList.contains('viewer')"))
        p.wait_text("#page", "reader1")
        for hash_ in ("#/instruments", "#/instruments/reader1", "#/runs", "#/cell"):
            p.goto(hash_)
            p.wait("document.querySelector('#page').textContent.length > 0")
            visible = p.eval("[...document.querySelectorAll('#page button')]"
                             ".filter(b => b.offsetParent !== null).map(b => b.textContent)")
            self.assertEqual(visible, [], hash_)
        p.screenshot("shell-viewer")
        self.assert_clean()
        # A forged request from the page's console: the daemon refuses it.
        st = p.fetch_status("POST", "/v1/instruments/reader1/pause")
        self.assertEqual(st, 403)
        st = p.fetch_status("POST", "/v1/runs", {"workflow": "assay", "plate": "PX"})
        self.assertEqual(st, 403)



if __name__ == "__main__":
    main()
