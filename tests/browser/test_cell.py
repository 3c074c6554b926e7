"""browser.cell: the Cell page shows every instrument with its state as a word, telemetry with
units and its queue, the runs counted by state and both sinks; with the event stream it changes an
instrument's state and the counts live while a run goes through the cell, without a reload."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import BrowserCase, main  # noqa: E402

INSTRUMENTS = ("inc1", "star1", "reader1", "heater1")


class Cell(BrowserCase):
    def test_overview(self):
        def ready():
            _, doc = self.stack.api("GET", "/v1/instruments", want=200)
            return all(i["state"] != "offline" for i in doc["instruments"]) and all(
                i["telemetry"]["values"] for i in doc["instruments"] if i["id"] == "heater1")

        self.stack.wait(ready, "every instrument online and heater1's first telemetry")
        self.open("#/cell")
        p = self.page
        p.wait_text(".card.inst[data-id=heater1] .tele", "degC")
        for i in INSTRUMENTS:
            p.wait_selector(".card.inst[data-id=%s] .state" % i)
            self.assertTrue(p.text(".card.inst[data-id=%s] .state" % i).strip())
            self.assertIn("Queue", p.text(".card.inst[data-id=%s]" % i))
        self.assertEqual(p.count(".card.inst"), len(INSTRUMENTS))
        for s in ("running", "queued", "done", "failed"):
            p.wait_selector(".count[data-state=%s] .n" % s)
        for sink in ("postgres", "mqtt"):
            p.wait_text(".sink[data-sink=%s] .state" % sink, "up")
            self.assertIn("Lag", p.text(".sink[data-sink=%s]" % sink))
        p.screenshot("cell")
        self.assert_clean()

    def test_live(self):
        self.need_events()
        self.open("#/cell")
        p = self.page
        p.wait("document.getElementById('conn').dataset.state === 'live'", "the stream live")
        p.wait_selector(".card.inst[data-id=star1][data-state=idle]")
        before = int(p.text(".count[data-state=done] .n"))
        _, run = self.stack.api("POST", "/v1/runs", {"workflow": "assay", "plate": "CELL1"},
                                role="technician", want=201)
        # The dispense makes star1 busy, then idle again; the page follows without a reload.
        p.eval("window.__cellMarker = 1")
        p.wait_selector(".card.inst[data-id=star1][data-state=busy]", timeout_s=60)
        p.screenshot("cell-busy")
        self.stack.wait(lambda: self.stack.api("GET", "/v1/runs/" + run["id"])[1]["state"] == "done",
                        "the run done", timeout_s=120)
        p.wait("Number(document.querySelector('.count[data-state=done] .n').textContent) === %d"
               % (before + 1), "the done count to grow", timeout_s=30)
        self.assertEqual(p.eval("window.__cellMarker"), 1)  # the same document: no reload
        self.assert_clean()


if __name__ == "__main__":
    main()
