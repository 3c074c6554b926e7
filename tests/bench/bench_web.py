"""bench_web: each dashboard page's first render with a day's load stored, beside the same page on
a store holding one run, in the same run of the benchmark.

Two stacks (tests/browser/stack.c): `--seed 0` (one assay run, run by the daemon) and `--seed N`
(that run and N copies of it written through the store's operations before labloopd starts again:
tests/bench/load_day.c; 96 readings each, so N=1,000 is ~100,000 measurements). Before measuring,
each stack's sinks have delivered the outbox (a day's load is not a backlog). Each page is loaded
LOADS times in headless chromium, each time in a new tab; the figure is
performance.now() (from navigation start) when main#page's data-ready first names the page's hash
(what the browser tests wait for: the page's mount() resolved). One JSON line per page: median
and max of both, and the 1 s target.

    bench_web.py [RUNS [LOADS]]        default 1000 runs, 5 loads
Environment: as the browser tests (LAB_BROWSER_STACK, LABLOOPD, LABLOOP_SIM, CHROMIUM).
"""

import json
import os
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "browser"))
from browser import Browser, Stack  # noqa: E402

PAGES = ["#/cell", "#/schedule", "#/runs", "#/runs/{run}", "#/operator", "#/campaigns",
         "#/instruments"]
TARGET_MS = 1000

# Installed before any script of the page: notes when the routed page says it is ready.
OBSERVER = """
sessionStorage.setItem('labloop.token', %s);
window.__labReady = null;
new MutationObserver(() => {
  const m = document.getElementById('page');
  if (window.__labReady === null && m && m.dataset.ready === %s)
    window.__labReady = performance.now();
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-ready']});
"""


def outbox_drained(stack, timeout_s=300):
    """Waits until no sink has rows left to deliver (labloop_outbox_depth 0 everywhere)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        req = urllib.request.Request(stack.url + "/metrics")
        req.add_header("Authorization", "Bearer " + stack.tokens["admin"])
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
        depths = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("labloop_outbox_depth")]
        if depths and max(depths) == 0:
            return
        time.sleep(0.5)
    raise RuntimeError("the sinks did not catch up in %d s" % timeout_s)


def first_render(browser, url, hash_, token, errors, listed):
    """One load of url/hash_ in a new tab: ms from navigation start to the page's ready marker.
    The tab is closed after (its target, not only the DevTools socket): a tab left open keeps its
    event stream, and chromium's six connections per host would soon all be held by them."""
    page = browser.new_page()
    try:
        page.send("Page.addScriptToEvaluateOnNewDocument",
                  source=OBSERVER % (json.dumps(token), json.dumps(hash_)))
        page.send("Page.navigate", url=url + "/" + hash_)
        ms = page.wait("window.__labReady", "%s to be ready" % hash_, timeout_s=120)
        errors += page.console_errors(("/v1/events",))
        if hash_ == "#/runs":  # the load is on the page, not only in the store
            listed.append(page.eval("document.querySelectorAll('table.runs tbody tr[data-id]')"
                                    ".length"))
        return ms
    finally:
        page.close()  # the tab too
        browser.pages.remove(page)


def measure(stack_args, loads):
    stack = Stack.start(timeout_s=600, args=stack_args)
    browser = None
    try:
        outbox_drained(stack)
        browser = Browser.launch()
        token = stack.tokens["technician"]
        run = stack.api("GET", "/v1/runs/" + stack.info["run"], want=200)[1]
        per_run = sum(len(r.get("values", {})) for r in run.get("readings", {}).values())
        out, errors, listed = {"per_run": per_run}, [], []
        for p in PAGES:
            hash_ = p.format(run=stack.info["run"])
            out[p] = [first_render(browser, stack.url, hash_, token, errors, listed)
                      for _ in range(loads)]
        if errors:
            raise RuntimeError("console errors: %s" % errors[:3])
        return out, min(listed)
    finally:
        if browser:
            browser.close()
        stack.stop()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    loads = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    empty, _ = measure(("--seed", "0"), loads)
    loaded, listed = measure(("--seed", str(n)), loads)
    if listed != n + 1:
        raise RuntimeError("the Runs page lists %d runs, not %d" % (listed, n + 1))
    for p in PAGES:
        e, lo = empty[p], loaded[p]
        print(json.dumps({
            "bench": "web_first_render", "page": p, "runs": n + 1, "measurements": (n + 1) * loaded["per_run"],
            "loads": loads, "empty_runs": 1,
            "empty_median_ms": round(statistics.median(e), 1), "empty_max_ms": round(max(e), 1),
            "loaded_median_ms": round(statistics.median(lo), 1),
            "loaded_max_ms": round(max(lo), 1), "target_ms": TARGET_MS,
            "under_target": statistics.median(lo) < TARGET_MS}), flush=True)


if __name__ == "__main__":
    main()
