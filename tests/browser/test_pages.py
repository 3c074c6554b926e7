"""browser.pages: the Schedule, Operator and Campaigns pages in headless chromium. Each loads
with no console error; the Gantt shows the planned steps of submitted runs (with their lag
windows) and moves as they run; a run paused by a failed read (labloop-sim's control socket
makes the reader answer an error) is resumed with skip from the Operator page, with a reason, and
the page says who decided; the campaign plot gains a point when a result arrives. Live updates
come from /v1/events; where this daemon does not serve it yet, the page is opened again instead
(and the live half is reported as skipped)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import BrowserCase, main  # noqa: E402

# The closed loop's workflow and a small campaign on it (as tests/integration/mix_cell.h).
MIX = {
    "name": "mix",
    "steps": [
        {"name": "dispense", "op": "dispense", "on": "liquid_handler", "duration_s": 600,
         "params": {"design": True}},
        {"name": "incubate", "op": "incubate", "on": "incubator", "duration_s": 120,
         "params": {"temperature_c": 37}, "start_within_s": 900},
        {"name": "read", "op": "read_absorbance", "on": "plate_reader", "duration_s": 90,
         "params": {"wavelength_nm": 450}, "start_within_s": 120},
    ],
    "on_failure": {"action": "retry", "retries": 1},
}
CAMPAIGN = {
    "id": "loop1", "workflow": "mix",
    "objective": {"measure": "absorbance", "direction": "maximize"},
    "parameters": [{"name": "substrate", "max": 100}, {"name": "inhibitor", "max": 50}],
    "layout": {"replicates": 2,
               "positive": {"wells": ["A12", "B12", "C12", "D12"], "volumes": {"substrate": 80}},
               "negative": {"wells": ["E12", "F12", "G12", "H12"]}},
    "batch_size": 4, "budget": {"candidates": 8},
    # one plate in flight: the second batch is proposed from the first's results, so that the
    # results arrive plate by plate
    "learner": {"kind": "builtin", "seed": 3, "initial": 4, "ahead": 1},
}


class Pages(BrowserCase):
    def submit(self, plate, workflow="assay"):
        _, doc = self.stack.api("POST", "/v1/runs", {"workflow": workflow, "plate": plate},
                                role="technician", want=201)
        return doc["id"]

    def run_state(self, rid):
        return self.stack.api("GET", "/v1/runs/" + rid)[1]["state"]

    def live(self, hash_, cond, what, timeout_s=60):
        """Waits until the page at hash_ shows cond (a JS expression): from the event stream
        when the daemon serves one, else by opening the page again until it does."""
        p = self.page
        if self.has_events:
            return p.wait(cond, what, timeout_s)
        other = "#/cell" if hash_ != "#/cell" else "#/runs"

        # an element comes back as {}: true instead
        probe = ("(() => { try { const v = (%s); return v instanceof Node ? true : v || null; } "
                 "catch (e) { return null; } })()" % cond)

        def again():
            p.goto(other)
            p.goto(hash_)
            for _ in range(20):  # its data arrives after the mount
                v = p.eval(probe)
                if v is not None and v is not False:
                    return v
                time.sleep(0.1)
            return None
        return self.stack.wait(again, what, timeout_s, every_s=0.5)

    def pause_reader(self):
        self.stack.api("POST", "/v1/instruments/reader1/pause", want=200)
        self.addCleanup(self.stack.api, "POST", "/v1/instruments/reader1/resume")

    def test_01_pages_load_clean(self):
        for hash_ in ("#/schedule", "#/operator", "#/campaigns"):
            self.open(hash_)
            self.page.wait_selector("#page h1")
            self.page.screenshot("pages-load-" + hash_[2:])
        self.assert_clean()

    def test_02_gantt_plans_and_moves(self):
        # The reader paused: the runs wait, with the reason beside the chart.
        self.pause_reader()
        ids = [self.submit("G%d" % i) for i in range(1, 7)]  # one STAR: a queue of dispenses
        self.open("#/schedule")
        p = self.page
        # a week's view: at the test's time scale (60) a run takes a few lab minutes a second
        p.click("#page .sched-zoom label", text="1 w")
        p.wait("document.querySelector('#page .sched-zoom label.on').textContent === '1 w'")
        self.live("#/schedule", "document.querySelector('#page .sched-waiting')"
                  ".textContent.includes('reader1 paused')", "the runs waiting for reader1")
        p.screenshot("pages-schedule-waiting")
        # Resumed: every step of every run planned on the chart (dashed until it starts).
        self.stack.api("POST", "/v1/instruments/reader1/resume", want=200)
        self.live("#/schedule", "document.querySelectorAll('#page g.step[data-state=planned]')"
                  ".length >= 3", "planned steps on the Gantt")
        self.live("#/schedule", " && ".join(
            "document.querySelector('#page g.step[data-run=\"%s\"]')" % rid for rid in ids),
            "every run's steps on the Gantt")
        # the lag windows ("must start by") as bands, and the now line
        p.wait("document.querySelectorAll('#page .lag-band').length >= 1", "a lag window")
        self.assertEqual(p.count("#page .now-line"), 1)
        for inst in ("inc1", "star1", "reader1", "heater1"):  # a row per instrument
            p.wait_text("#page svg.gantt .row-label", inst)
        # zoom from a week to an hour (the plan readable), and back
        p.click("#page .sched-zoom label", text="1 h")
        p.wait("document.querySelector('#page .sched-zoom label.on').textContent === '1 h'")
        p.screenshot("pages-schedule-planned")
        p.click("#page .sched-zoom label", text="1 w")
        p.wait("document.querySelector('#page .sched-zoom label.on').textContent === '1 w'")
        # it moves as they run: the first run's steps drawn started
        first = ids[0]
        started = ("document.querySelector('#page g.step[data-run=\"%s\"]"
                   ":not([data-state=planned])')" % first)
        self.live("#/schedule", started, "G1's started step on the Gantt", 120)
        p.screenshot("pages-schedule-running")
        # a tap on a step opens its run (at a week's scale the runs' bars overlap: the one on
        # top at the point tapped)
        at = p.eval("(() => { const r = document.querySelector('#page g.step[data-run=\"%s\"] "
                    "rect').getBoundingClientRect(); const x = r.x + r.width / 2, "
                    "y = r.y + r.height / 2; const g = document.elementFromPoint(x, y)"
                    ".closest('g.step'); return [x, y, g.dataset.run]; })()" % first)
        for kind in ("mousePressed", "mouseReleased"):
            p.send("Input.dispatchMouseEvent", type=kind, x=at[0], y=at[1], button="left",
                   clickCount=1)
        p.wait("location.hash === '#/runs/%s'" % at[2], "the run's page")
        p.wait_ready("#/runs/" + at[2])
        self.assert_clean()
        for rid in ids:
            self.stack.wait(lambda: self.run_state(rid) == "done", "run %s done" % rid, 180)
        p.goto("#/schedule")
        self.live("#/schedule", "document.querySelectorAll('#page g.step[data-state=planned]')"
                  ".length === 0 && document.querySelectorAll('#page g.step').length >= 18",
                  "every step drawn as done")
        p.screenshot("pages-schedule-done")
        self.assert_clean()

    def test_03_paused_run_resumed_with_skip(self):
        # Connected first, so that the fault is for the read itself.
        self.stack.wait(lambda: self.stack.api("GET", "/v1/instruments/reader1")[1]["state"]
                        == "idle", "reader1 idle")
        self.pause_reader()
        rid = self.submit("PZ1", "read-only")
        self.stack.sim({"instrument": "reader1", "fault": "error", "seconds": 0})
        self.stack.api("POST", "/v1/instruments/reader1/resume", want=200)
        self.stack.wait(lambda: self.run_state(rid) == "paused", "the run to pause", 60)
        self.open("#/operator")
        p = self.page
        card = '#page .op-item[data-kind=paused]'
        self.live("#/operator", "[...document.querySelectorAll(%r)].some(e => "
                  "e.textContent.includes('PZ1'))" % card, "the paused run on the page")
        p.screenshot("pages-operator-paused")
        p.fill(card + " input.op-reason", "the reader's lamp was replaced")
        p.click(card + " button[data-act=skip]")
        # the confirmation says what it will do
        p.wait("document.getElementById('confirm').open", "the confirmation")
        self.assertIn("Skip step read of plate PZ1", p.text("#confirm-text"))
        self.assertIn("the reader's lamp was replaced", p.text("#confirm-text"))
        p.click("#confirm-yes")
        p.wait_text("#page .op-decided", "resumed (skip) by tom")
        doc = self.stack.wait(lambda: (lambda d: d if d["state"] == "done" else None)(
            self.stack.api("GET", "/v1/runs/" + rid)[1]), "the run to go on to done", 60)
        self.assertEqual(doc["resumed_by"], "tom")
        self.assertEqual(doc["resume_reason"], "the reader's lamp was replaced")
        self.assertEqual(doc["steps"][0]["state"], "skipped")
        self.stack.sim({"instrument": "reader1", "fault": "clear", "seconds": 0})
        self.live("#/operator",
                  "document.querySelector('#page .op-item[data-kind=paused]') === null",
                  "the item gone")
        p.screenshot("pages-operator-decided")
        self.assert_clean()

    def test_04_viewer_sees_no_action(self):
        self.open("#/operator", role="viewer")
        p = self.page
        p.wait_text("#page .op-instruments", "reader1")
        self.assertEqual(p.eval("[...document.querySelectorAll('#page button')]"
                                ".filter(b => b.offsetParent !== null).length"), 0)
        for hash_ in ("#/schedule", "#/campaigns"):
            p.goto(hash_)
            self.assertEqual(p.eval("[...document.querySelectorAll('#page button')]"
                                    ".filter(b => b.offsetParent !== null).length"), 0, hash_)
        self.assert_clean()

    def test_05_campaign_plot_gains_points(self):
        self.stack.api("POST", "/v1/workflows", MIX, want=201)
        self.stack.api("POST", "/v1/campaigns", CAMPAIGN, role="technician", want=201)
        self.open("#/campaigns")
        p = self.page
        p.wait_text("#page .camp-table", "loop1")
        p.click('#page tr[data-campaign="loop1"] a')
        p.wait_ready("#/campaigns/loop1")
        p.wait_text("#page .camp-head", "maximize absorbance")
        p.screenshot("pages-campaign-start")

        plot = "Number(document.querySelector('#page .camp-plot').dataset.points || 0)"
        first = int(self.live("#/campaigns/loop1", "%s >= 1 && %s" % (plot, plot),
                              "the first results on the plot", 300))
        # the next result: a new point
        self.live("#/campaigns/loop1", "%s > %d" % (plot, first), "a new point on the plot", 300)
        self.assertGreater(p.count("#page .camp-plot circle.pt"), first)
        p.wait_text("#page .camp-z", "loop1-P")
        p.screenshot("pages-campaign-points")
        self.assert_clean()


if __name__ == "__main__":
    main()
