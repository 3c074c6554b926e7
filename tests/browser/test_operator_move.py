"""browser.operator_move: a cell with a manual mover (a person carries plates between
instruments). A run's read begins with the plate's move; the Operator page shows it (from, to,
plate), the technician confirms it after a confirmation that says what it will do, the page says
who confirmed it (the token's name), and the run goes on to done."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import BrowserCase, main  # noqa: E402


class OperatorMove(BrowserCase):
    stack_args = ("--mover",)

    def test_manual_move_confirmed(self):
        _, run = self.stack.api("POST", "/v1/runs", {"workflow": "moved", "plate": "MV1"},
                                role="technician", want=201)
        rid = run["id"]
        self.open("#/operator")
        p = self.page

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
        p.click(card + " button[data-act=confirm-move]")
        p.wait("document.getElementById('confirm').open", "the confirmation")
        text = p.text("#confirm-text")
        self.assertIn("MV1", text)
        self.assertIn("reader1", text)
        p.click("#confirm-yes")
        p.wait_text("#page .op-decided", "confirmed by tom")
        self.stack.wait(lambda: self.stack.api("GET", "/v1/runs/" + rid)[1]["state"] == "done",
                        "the run to go on to done", 120)
        self.assertIsNone(pending())
        if self.has_events:
            p.wait("document.querySelector('#page .op-item[data-kind=move]') === null",
                   "the move gone from the page")
        p.screenshot("pages-operator-moved")
        self.assert_clean()


if __name__ == "__main__":
    main()
