"""browser.operator_fault: an instrument in fault waits for a person. labloop-sim's Liconic gets
an error injected (its error flag set, as a handler crash would); the daemon sees it in fault and
opens a prompt, the Operator page shows it with the driver's reset action, the technician sends
reset after a confirmation that names the instrument, the instrument comes back, the card goes,
and the prompt's answer (who, how) is shown as a decision."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import BrowserCase, main  # noqa: E402


class OperatorFault(BrowserCase):
    def state(self, inst):
        return self.stack.api("GET", "/v1/instruments/" + inst)[1]["state"]

    def prompt_ids(self):
        return [q["id"] for q in self.stack.api("GET", "/v1/prompts")[1]["prompts"]]

    def test_fault_reset_from_the_page(self):
        self.need_events()
        self.stack.wait(lambda: self.state("inc1") == "idle", "inc1 idle", 120)
        self.open("#/operator")
        p = self.page
        p.wait_selector("#page tr[data-inst=inc1]")
        reply = self.stack.sim({"instrument": "inc1", "fault": "error", "seconds": 0})
        self.assertTrue(reply.get("ok", True), reply)
        self.stack.wait(lambda: self.state("inc1") == "fault", "inc1 in fault", 120)
        self.stack.wait(lambda: "instrument:inc1:fault" in self.prompt_ids(),
                        "the fault's prompt", 30)
        card = "#page .op-item[data-kind=fault]"
        p.wait_text(card, "inc1 in fault")
        p.screenshot("pages-operator-fault")
        p.click(card + " button[data-act=reset]")
        p.wait("document.getElementById('confirm').open", "the confirmation")
        text = p.text("#confirm-text")
        self.assertIn("reset", text)
        self.assertIn("inc1", text)
        p.click("#confirm-yes")
        self.stack.wait(lambda: self.state("inc1") == "idle", "inc1 back to idle", 120)
        self.stack.wait(lambda: "instrument:inc1:fault" not in self.prompt_ids(),
                        "the fault's prompt answered", 30)
        p.wait("document.querySelector('#page .op-item[data-kind=fault]') === null",
               "the fault gone from the page")
        p.wait_text("#page .op-decided", "recorded: reset by tom")  # the prompt event
        p.screenshot("pages-operator-reset")
        self.assert_clean()


if __name__ == "__main__":
    main()
