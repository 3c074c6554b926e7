"""browser.operator_move: a cell with a manual mover (a person carries plates between
instruments). A run's read begins with the plate's move; the Operator page shows it (from, to,
plate), the technician confirms it after a confirmation that says what it will do, the page says
who confirmed it (the token's name), and the run goes on to done. The move is a prompt: with
notifications granted (DevTools Browser.grantPermissions) and the page's alerts switched on, its
opening raises a notification. An instrument paused from the page with a reason says who holds it
and why, there and in the API."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import BrowserCase, main  # noqa: E402


class OperatorMove(BrowserCase):
    stack_args = ("--mover",)

    def test_manual_move_confirmed(self):
        self.open("#/operator")
        p = self.page
        p.send("Browser.grantPermissions", origin=self.stack.url, permissions=["notifications"])
        # Every notification the page raises is kept where the test can read it.
        p.eval("(() => { const N = window.Notification; window.__notes = []; "
               "window.Notification = class extends N { constructor(t, o) { super(t, o); "
               "window.__notes.push(t + ' | ' + ((o && o.body) || '')); } }; })()")
        p.click("#page .op-alerts input")
        p.wait_text("#page .op-alerts", "notifications granted")
        _, run = self.stack.api("POST", "/v1/runs", {"workflow": "moved", "plate": "MV1"},
                                role="technician", want=201)
        rid = run["id"]

        def pending():
            doc = self.stack.api("GET", "/v1/instruments/arm1")[1]
            return (doc.get("info") or {}).get("pending_move")
        self.stack.wait(pending, "the move to be asked for", 120)
        if not self.has_events:
            p.goto("#/cell")
            p.goto("#/operator")
        card = "#page .op-item[data-kind=move]"
        p.wait_text(card, "MV1")
        self.assertIn("star1", p.text(card))
        self.assertIn("reader1", p.text(card))
        p.screenshot("pages-operator-move")
        if self.has_events:  # a prompt opened while the page was open: announced
            p.wait("window.__notes.some(n => n.includes('Move plate MV1'))",
                   "a notification for the move's prompt")
        p.click(card + " button[data-act=confirm-move]")
        p.wait("document.getElementById('confirm').open", "the confirmation")
        text = p.text("#confirm-text")
        self.assertIn("MV1", text)
        self.assertIn("reader1", text)
        p.click("#confirm-yes")
        p.wait_text("#page .op-decided", "confirmed by tom")
        if self.has_events:  # and the daemon's record of it (the prompt's answer) beside it
            p.wait_text("#page .op-decided", "recorded: confirm by tom")
        self.stack.wait(lambda: self.stack.api("GET", "/v1/runs/" + rid)[1]["state"] == "done",
                        "the run to go on to done", 120)
        self.assertIsNone(pending())
        if self.has_events:
            p.wait("document.querySelector('#page .op-item[data-kind=move]') === null",
                   "the move gone from the page")
        p.screenshot("pages-operator-moved")
        prompts = self.stack.api("GET", "/v1/prompts")[1]["prompts"]
        self.assertEqual([q for q in prompts if q["kind"] == "move"], [])
        self.assert_clean()

    def test_pause_with_reason(self):
        self.open("#/operator")
        p = self.page
        row = "#page tr[data-inst=reader1]"
        p.wait_selector(row + " button[data-act=pause]")
        p.fill("#op-hold-reader1", "lamp warming up")
        p.click(row + " button[data-act=pause]")
        p.wait("document.getElementById('confirm').open", "the confirmation")
        self.assertIn("lamp warming up", p.text("#confirm-text"))
        p.click("#confirm-yes")
        p.wait_text(row, "paused by tom: lamp warming up")
        doc = self.stack.api("GET", "/v1/instruments/reader1")[1]
        self.assertEqual(doc["paused_by"], "tom")
        self.assertEqual(doc["pause_reason"], "lamp warming up")
        p.screenshot("pages-operator-held")
        p.click(row + " button[data-act=resume]")
        p.wait("document.getElementById('confirm').open", "the confirmation")
        p.click("#confirm-yes")
        p.wait_selector(row + " button[data-act=pause]")
        doc = self.stack.api("GET", "/v1/instruments/reader1")[1]
        self.assertEqual(doc["resumed_by"], "tom")
        self.assertNotIn("paused_by", doc)
        self.assert_clean()


if __name__ == "__main__":
    main()
