"""browser.schedule_gestures: the Schedule's Gantt zooms with the mouse wheel around the instant
under the pointer and pans by dragging, as a person would do it (DevTools mouse events). With
"Follow now" off the range shown is fixed, so each gesture's effect is exact: a wheel turn of
deltaY scales the span by exp(deltaY * 0.002) and keeps the time under the pointer where it was;
a drag of dx pixels moves the range by dx / plot width * span, the other way."""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import BrowserCase, main  # noqa: E402

CHART = "#page .sched-chart"


class ScheduleGestures(BrowserCase):
    def shown(self):
        """The range shown: t0, t1 (lab ms), the plot's width (px) and the chart's box."""
        return self.page.eval(
            "(() => { const c = document.querySelector(%r); const r = c.getBoundingClientRect();"
            " return {t0: Number(c.dataset.t0), t1: Number(c.dataset.t1), w: "
            "Number(c.dataset.plotW), follow: c.dataset.follow, left: r.left, top: r.top, "
            "width: r.width, height: r.height}; })()" % CHART)

    def mouse(self, kind, x, y, **extra):
        self.page.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def test_wheel_zoom_and_drag_pan(self):
        self.open("#/schedule")
        p = self.page
        p.click("#page .sched-zoom label", text="1 d")
        p.wait("document.querySelector('#page .sched-zoom label.on').textContent === '1 d'")
        p.wait("document.querySelector(%r).dataset.t0 !== undefined" % CHART, "the chart drawn")
        p.click("#page .sched-now")  # follow now off: the range stays where it is put
        p.wait("document.querySelector(%r).dataset.follow === '0'" % CHART, "follow off")
        a = self.shown()
        span = a["t1"] - a["t0"]
        self.assertAlmostEqual(span, 86400e3, delta=1e3)
        label_w = a["width"] - a["w"]  # the row labels left of the plot
        y = a["top"] + min(40, a["height"] / 2)

        # A wheel turn towards the user (deltaY < 0) zooms in around the pointer.
        px = a["left"] + label_w + a["w"] * 0.75
        under = a["t0"] + (px - a["left"] - label_w) / a["w"] * span
        want = span * math.exp(-300 * 0.002)
        self.mouse("mouseWheel", px, y, deltaX=0, deltaY=-300)
        # the browser may deliver one turn as several wheel events: until all have come
        p.wait("Math.abs(Number(document.querySelector(%r).dataset.t1) - "
               "Number(document.querySelector(%r).dataset.t0) - %d) < %d"
               % (CHART, CHART, want, span * 0.002), "the range to narrow")
        b = self.shown()
        span_b = b["t1"] - b["t0"]
        self.assertAlmostEqual(span_b, want, delta=span * 0.002)
        under_b = b["t0"] + (px - b["left"] - label_w) / b["w"] * span_b
        self.assertAlmostEqual(under_b, under, delta=span * 0.002)
        p.screenshot("schedule-zoomed")

        # A drag to the left by 200 px shows a later range, by 200 px's worth of time.
        x0 = a["left"] + label_w + a["w"] * 0.5
        # The pointer events go to the chart's box directly, one after another: the input
        # pipeline's timing under load (moves coalesced or delivered late) is not what is tested.
        p.eval("(() => { const box = document.querySelector(%r); "
               "const ev = (type, x, buttons) => box.dispatchEvent(new PointerEvent(type, "
               "{pointerId: 7, pointerType: 'mouse', isPrimary: true, clientX: x, clientY: %f, "
               "button: 0, buttons: buttons, bubbles: true})); "
               "ev('pointerdown', %f, 1); "
               "for (let i = 1; i <= 10; i++) ev('pointermove', %f - 20 * i, 1); "
               "ev('pointerup', %f - 200, 0); return true; })()" % (CHART, y, x0, x0, x0))
        moved = 200 / b["w"] * span_b
        p.wait("Number(document.querySelector(%r).dataset.t0) > %d" % (CHART, b["t0"] + 1e3),
               "the range to move later")
        c = self.shown()
        for _ in range(50):  # the last move may still be on its way
            if abs(c["t0"] - b["t0"] - moved) < span_b * 0.002:
                break
            time.sleep(0.1)
            c = self.shown()
        self.assertAlmostEqual(c["t1"] - c["t0"], span_b, delta=2)
        self.assertAlmostEqual(c["t0"] - b["t0"], moved, delta=span_b * 0.002,
                               msg="before %r, after %r" % (b, c))
        self.assertEqual(p.eval("location.hash"), "#/schedule")  # a drag opens no run
        p.screenshot("schedule-panned")
        self.assert_clean()


if __name__ == "__main__":
    main()
