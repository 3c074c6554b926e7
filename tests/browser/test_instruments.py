"""browser.instruments: the Instruments page lists every instrument; one instrument shows its
telemetry with units and a form per manual action generated from the action's JSON Schema; an
action run from the form (after the confirmation) gets the instrument's answer shown; a value the
schema refuses is caught before any request; pause and resume change the state shown."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import BrowserCase, main  # noqa: E402

INSTRUMENTS = ("inc1", "star1", "reader1", "heater1")


class Instruments(BrowserCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()

        def telemetry():
            _, doc = cls.stack.api("GET", "/v1/instruments", want=200)
            byid = {i["id"]: i for i in doc["instruments"]}
            return all(byid[i]["telemetry"]["values"] for i in ("heater1", "reader1"))

        cls.stack.wait(telemetry, "the first telemetry of heater1 and reader1")

    def test_list(self):
        self.open("#/instruments")
        p = self.page
        for i in INSTRUMENTS:
            p.wait_selector("table.instruments tr[data-id=%s] .state" % i)
        self.assertEqual(p.count("table.instruments tbody tr"), len(INSTRUMENTS))
        self.assertIn("degC", p.text("table.instruments tr[data-id=heater1] .tele"))
        p.screenshot("instruments")
        p.click("table.instruments tr[data-id=reader1] a")
        p.wait_ready("#/instruments/reader1")
        self.assert_clean()

    def test_action_form(self):
        self.open("#/instruments/reader1")
        p = self.page
        p.wait_selector("form.action[data-action=read_absorbance]")
        # The form comes from the schema: an integer with its bounds and a string with a pattern.
        self.assertEqual(p.eval("document.getElementById('act-read_absorbance-wavelength_nm').type"),
                         "number")
        self.assertEqual(p.eval("document.getElementById('act-read_absorbance-wavelength_nm').min"),
                         "230")
        self.assertTrue(p.eval("!!document.getElementById('act-read_absorbance-wells')"))
        self.assertIn("temperature_c", p.text("table.telemetry"))
        self.assertIn("degC", p.text("table.telemetry"))
        # Out of the schema's bounds: refused by the form, nothing sent.
        p.fill("#act-read_absorbance-wavelength_nm", "100")
        p.click("form.action[data-action=read_absorbance] button[type=submit]")
        p.wait_text("form.action[data-action=read_absorbance] .answer", "below 230")
        self.assertFalse(p.eval("document.getElementById('confirm').open"))
        # A real read of four wells: confirmed, then the answer with their values.
        p.fill("#act-read_absorbance-wavelength_nm", "450")
        p.fill("#act-read_absorbance-wells", "A1:B2")
        p.click("form.action[data-action=read_absorbance] button[type=submit]")
        p.wait("document.getElementById('confirm').open", "the confirmation")
        self.assertIn("read_absorbance on reader1", p.text("#confirm-text"))
        self.assertIn('"wavelength_nm":450', p.text("#confirm-text"))
        p.click("#confirm-yes")
        p.wait_text("form.action[data-action=read_absorbance] pre.result", "B2", timeout_s=60)
        self.assertIn("A1", p.text("form.action[data-action=read_absorbance] pre.result"))
        p.screenshot("instruments-reader1")
        # Cancelled: nothing happens.
        p.click("form.action[data-action=status] button[type=submit]")
        p.wait("document.getElementById('confirm').open", "the confirmation")
        p.click("#confirm-no")
        p.wait("!document.getElementById('confirm').open")
        self.assertEqual(p.text("form.action[data-action=status] .answer"), "")
        self.assert_clean()

    def test_pause_resume(self):
        self.open("#/instruments/heater1")
        p = self.page
        p.wait_text("#hold", "Pause")
        p.click("#hold")
        p.wait("document.getElementById('confirm').open", "the confirmation")
        self.assertIn("Pause heater1", p.text("#confirm-text"))
        p.click("#confirm-yes")
        p.wait_text("#page h1 .state", "paused")
        _, doc = self.stack.api("GET", "/v1/instruments/heater1", want=200)
        self.assertEqual(doc["state"], "paused")
        p.wait_text("#hold", "Resume")
        p.click("#hold")
        p.wait("document.getElementById('confirm').open", "the confirmation")
        p.click("#confirm-yes")
        p.wait("!document.querySelector('#page h1 .state').textContent.includes('paused')",
               "heater1 no longer paused")
        self.assert_clean()


if __name__ == "__main__":
    main()
