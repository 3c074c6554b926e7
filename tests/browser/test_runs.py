"""browser.runs: a run submitted through the API appears in the Runs list; the filters (state,
plate, workflow, priority: asked of the store, GET /v1/runs?plate=...) narrow it; its detail shows the steps with
planned and actual times and attempts, and after its read a heat map of the plate's 96 values.
With the event stream, a run submitted while the list is open appears, and the heat map appears
in an open detail when the read ends, without a reload."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import BrowserCase, BrowserError, main  # noqa: E402


class Runs(BrowserCase):
    def submit(self, plate, priority="normal"):
        _, run = self.stack.api("POST", "/v1/runs", {"workflow": "assay", "plate": plate,
                                                     "priority": priority},
                                role="technician", want=201)
        return run["id"]

    def state(self, rid):
        return self.stack.api("GET", "/v1/runs/" + rid, want=200)[1]["state"]

    def wait_done(self, rid):
        self.stack.wait(lambda: self.state(rid) == "done", "run %s done" % rid, timeout_s=180)

    def test_list_filters_detail_heatmap(self):
        a = self.submit("RUNS-A", "high")
        b = self.submit("RUNS-B", "low")
        self.open("#/runs")
        p = self.page
        for rid in (a, b):
            p.wait_selector("table.runs tr[data-id='%s']" % rid)
        # the page's requests, to see that the filters go to the store
        p.eval("(() => { const f = window.fetch; window.__urls = []; window.fetch = (u, o) => "
               "{ window.__urls.push(String(u)); return f(u, o); }; return true; })()")
        p.fill("#filter-plate", "RUNS-A")
        p.wait("window.__urls.some(u => u.includes('/v1/runs?') && u.includes('plate=RUNS-A'))",
               "the plate filter asked of the store")
        only = ("(() => { const r = document.querySelectorAll('table.runs tbody tr[data-id]'); "
                "return r.length === 1 && r[0].dataset.id === '%s'; })()")
        # the list answered for this filter (the one before may show one row too)
        p.wait(only % a, "RUNS-A alone")
        p.fill("#filter-plate", "")
        p.fill("#filter-priority", "low")
        p.wait("window.__urls.some(u => u.includes('/v1/runs?') && u.includes('priority=low'))",
               "the priority filter asked of the store")
        p.wait(only % b, "RUNS-B alone")
        self.assertEqual(p.eval("location.hash"), "#/runs?priority=low")  # a shareable filter
        p.fill("#filter-priority", "")
        p.screenshot("runs")
        # The detail: three steps, a planned time for those still to come.
        p.click("table.runs tr[data-id='%s'] a" % b)
        p.wait_ready("#/runs/" + b)
        p.wait("document.querySelectorAll('table.steps tbody tr').length === 3")
        names = p.eval("[...document.querySelectorAll('table.steps tbody tr')].map(r => r.dataset.step)")
        self.assertEqual(names, ["dispense", "incubate", "read"])
        self.wait_done(a)
        self.wait_done(b)
        p.goto("#/runs")
        p.goto("#/runs/" + b)
        p.wait_selector("figure.heat svg.heatmap")
        self.assertEqual(p.count("figure.heat rect.well[data-value]"), 96)
        self.assertIn("450 nm", p.text("figure.heat figcaption"))
        for step in ("dispense", "incubate", "read"):
            self.assertIn("DONE", p.text("table.steps tr[data-step=%s] .state" % step).upper())
            self.assertNotEqual(p.text("table.steps tr[data-step=%s] td.actual" % step).strip(), "—")
        self.assertEqual(p.text("table.steps tr[data-step=read] td.num"), "1")
        p.screenshot("runs-detail")
        self.assert_clean()

    def confirm_from(self, selector, what):
        """Clicks selector until the confirmation opens: the run page re-renders when the run's
        next event arrives, and a click measured just before that lands where the button was."""
        p = self.page
        for _ in range(3):
            p.click(selector)
            try:
                return p.wait("document.getElementById('confirm').open", what, timeout_s=5)
            except BrowserError:
                pass
        p.click(selector)
        return p.wait("document.getElementById('confirm').open", what)

    def test_cancel_and_priority(self):
        # star1 held, so the run waits for its dispense until it is cancelled.
        self.stack.api("POST", "/v1/instruments/star1/pause", role="technician", want=200)
        try:
            rid = self.submit("RUNS-CANCEL")
            self.open("#/runs/" + rid)
            p = self.page
            p.wait_selector("#run-cancel")
            p.fill("#run-priority", "urgent")
            p.wait("document.getElementById('confirm').open", "the priority confirmation")
            self.assertIn("urgent priority", p.text("#confirm-text"))
            p.click("#confirm-yes")
            self.stack.wait(lambda: self.stack.api("GET", "/v1/runs/" + rid)[1]["priority"] == "urgent",
                            "priority urgent")
            self.confirm_from("#run-cancel", "the cancel confirmation")
            self.assertIn("ends as cancelled", p.text("#confirm-text"))
            p.click("#confirm-no")  # changed their mind: nothing happens
            p.wait("!document.getElementById('confirm').open")
            self.assertNotEqual(self.state(rid), "cancelled")
            self.confirm_from("#run-cancel", "the cancel confirmation")
            p.click("#confirm-yes")
            p.wait_text("#page h1 .state", "cancelled")
            self.assertEqual(self.state(rid), "cancelled")
            self.assertEqual(p.count("#run-cancel"), 0)  # a run that is over takes no action
            self.assert_clean()
        finally:
            self.stack.api("POST", "/v1/instruments/star1/resume", role="technician", want=200)

    def test_live(self):
        self.need_events()
        self.open("#/runs")
        p = self.page
        p.wait("document.getElementById('conn').dataset.state === 'live'", "the stream live")
        rid = self.submit("RUNS-LIVE")
        p.wait_selector("table.runs tr[data-id='%s']" % rid)
        p.click("table.runs tr[data-id='%s'] a" % rid)
        p.wait_ready("#/runs/" + rid)
        p.eval("window.__runsMarker = 1")
        p.wait_selector("figure.heat rect.well[data-value]", timeout_s=180)
        p.wait("document.querySelectorAll('figure.heat rect.well[data-value]').length === 96",
               "96 wells", timeout_s=60)
        p.wait_text("#page h1 .state", "done", timeout_s=60)
        self.assertEqual(p.eval("window.__runsMarker"), 1)
        p.screenshot("runs-detail-live")
        self.assert_clean()


if __name__ == "__main__":
    main()
