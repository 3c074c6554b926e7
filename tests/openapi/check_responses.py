#!/usr/bin/env python3
"""Sends good and bad requests to every route of a running labloopd and validates each answer
against the daemon's own GET /v1/openapi.json (ctest integration.test_openapi_responses starts
the daemon, labloop-sim, PostgreSQL and mosquitto and runs this).

For each answer: the status must be one the operation documents, the Content-Type the one
documented for that status, and the body valid against its schema (JSON Schema 2020-12, Python's
jsonschema; every $ref resolves inside the document, offline). Each good request's body must also
be valid against the operation's request schema. At the end every documented operation must have
been called with a success and (when it can fail) an error. Exit status 1 on any problem.
"""
import argparse
import http.client
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

import jsonschema

warnings.simplefilter("ignore", DeprecationWarning)  # RefResolver: the API Debian 12's 4.10 has

# Documented here, served by routes that other work adds to the route table (removed on merge).
# Operations that answer the same to everyone and cannot fail.
NO_ERROR = {("GET", "/healthz"), ("GET", "/v1/openapi.json")}

PLAIN = {"name": "oaplain", "steps": [
    {"name": "incubate", "op": "incubate", "on": "incubator", "duration_s": 600,
     "params": {"temperature_c": 37}},
    {"name": "read", "op": "read_absorbance", "on": "plate_reader", "duration_s": 90,
     "params": {"wavelength_nm": 450}, "start_within_s": 120}]}
# A plate filled, incubated, then read after a while and within a window: while it incubates,
# its schedule items carry every optional field (site, not_before, must_start_by).
LAG = {"name": "oalag", "steps": [
    {"name": "fill", "op": "dispense", "on": "liquid_handler", "duration_s": 120,
     "params": {"reagent": "substrate", "volume_ul": 50, "wells": "A1:H1"}},
    {"name": "incubate", "op": "incubate", "on": "incubator", "duration_s": 300,
     "params": {"temperature_c": 37}},
    {"name": "read", "op": "read_absorbance", "on": "plate_reader", "duration_s": 90,
     "params": {"wavelength_nm": 450}, "start_after_s": 60, "start_within_s": 600}]}
MIX = {"name": "oamix", "steps": [
    {"name": "dispense", "op": "dispense", "on": "liquid_handler", "duration_s": 600,
     "params": {"design": True}},
    {"name": "incubate", "op": "incubate", "on": "incubator", "duration_s": 120,
     "params": {"temperature_c": 37}, "start_within_s": 900},
    {"name": "read", "op": "read_absorbance", "on": "plate_reader", "duration_s": 90,
     "params": {"wavelength_nm": 450}, "start_within_s": 120}]}
CAMPAIGN = {"id": "oa1", "workflow": "oamix",
            "objective": {"measure": "absorbance", "direction": "maximize"},
            "parameters": [{"name": "substrate", "max": 100}, {"name": "inhibitor", "max": 50}],
            "layout": {"replicates": 2,
                       "positive": {"wells": ["A12", "B12"], "volumes": {"substrate": 80}},
                       "negative": {"wells": ["C12", "D12"]}}}
BATCH = {"batch": "b1", "model": {"name": "m", "version": "1"}, "candidates": [
    {"id": "k1", "params": {"substrate": 60, "inhibitor": 0}, "score": 0.9},
    {"id": "k2", "params": {"substrate": 20, "inhibitor": 10}, "score": 0.5}]}


class Checker:
    def __init__(self, url, tokens, dump):
        self.url, self.tokens, self.dump = url, tokens, dump
        self.problems, self.seen, self.calls = [], {}, 0
        self.doc = None

    def fail(self, what, msg):
        self.problems.append(f"{what}: {msg}")
        print(f"FAIL {what}: {msg}", flush=True)

    def send(self, method, path, role, body, ctype, headers):
        if isinstance(body, int):  # a Content-Length over the limit: answered from the head
            u = urllib.parse.urlsplit(self.url)
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
            conn.putrequest(method, path)
            conn.putheader("Authorization", "Bearer " + self.tokens[role])
            conn.putheader("Content-Type", ctype)
            conn.putheader("Content-Length", str(body))
            conn.endheaders()
            r = conn.getresponse()
            out = r.status, r.getheader("Content-Type", ""), r.read()
            conn.close()
            return out
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        rq = urllib.request.Request(self.url + path, data=data, method=method)
        if role:
            rq.add_header("Authorization", "Bearer " + self.tokens[role])
        if data is not None:
            rq.add_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            rq.add_header(k, v)
        try:
            r = urllib.request.urlopen(rq, timeout=60)
        except urllib.error.HTTPError as e:
            r = e
        ct = r.headers.get("Content-Type", "")
        if ct.split(";")[0].strip() == "text/event-stream":
            raw = r.readline()  # a stream does not end: its head and first line are enough
        else:
            raw = r.read()
        r.close()
        return r.status if hasattr(r, "status") else r.code, ct, raw

    def validator(self, schema):
        store = {"openapi.json": self.doc}
        for s in self.doc.get("components", {}).get("schemas", {}).values():
            if isinstance(s, dict) and "$id" in s:
                store[s["$id"]] = s
        res = jsonschema.RefResolver("openapi.json", self.doc, store=store)
        return jsonschema.Draft202012Validator(schema, resolver=res)

    def deref(self, node):
        while isinstance(node, dict) and "$ref" in node and node["$ref"].startswith("#/"):
            ref, node = node["$ref"], self.doc
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def call(self, method, tmpl, role=None, want=200, body=None, params=None, query="",
             ctype="application/json", headers=None):
        """One request to the operation (method, tmpl) that must answer want; its answer."""
        path = tmpl
        for k, v in (params or {}).items():
            path = path.replace("{" + k + "}", v)
        what = f"{method} {path}{query} as {role or 'nobody'}"
        status, ct, raw = self.send(method, path + query, role, body, ctype, headers)
        self.calls += 1
        if self.dump:
            print(f"{what} -> {status} {ct} {raw[:600]!r}")
        self.seen.setdefault((method, tmpl), set()).add(status)
        text = raw.decode("utf-8", "replace")
        if status != want:
            self.fail(what, f"answered {status}, wanted {want}: {text[:300]}")
        if self.doc is None:
            return json.loads(text) if ct.split(";")[0].endswith("json") else text
        op = self.doc["paths"].get(tmpl, {}).get(method.lower())
        if op is None:
            self.fail(what, "the document has no such operation")
            return None
        if 200 <= want < 300 and isinstance(body, (dict, list)):
            rb = self.deref(op.get("requestBody", {}))
            sch = rb.get("content", {}).get(ctype, {}).get("schema")
            if sch is None:
                self.fail(what, f"the document takes no {ctype} body")
            else:
                for e in self.validator(sch).iter_errors(body):
                    self.fail(what, f"request body invalid for the document: {e.message}")
        resp = op["responses"].get(str(status))
        if resp is None:
            self.fail(what, f"status {status} is not documented")
            return None
        resp = self.deref(resp)
        content = resp.get("content", {})
        base = ct.split(";")[0].strip()
        if not content:
            if raw:
                self.fail(what, f"the document says no body, got {len(raw)} bytes")
            return None
        if base not in content:
            self.fail(what, f"Content-Type {ct!r}, documented: {sorted(content)}")
            return None
        sch = content[base].get("schema")
        if base.endswith("json"):
            try:
                inst = json.loads(text)
            except ValueError as e:
                self.fail(what, f"the body is not JSON: {e}")
                return None
        else:
            inst = text
        if sch is not None:
            for e in self.validator(sch).iter_errors(inst):
                loc = "/" + "/".join(str(p) for p in e.absolute_path)
                self.fail(what, f"body at {loc}: {e.message[:300]}")
        return inst

    def wait_online(self, ids, seconds=60):
        """Until no instrument of ids is offline (labloop-sim's come up after the daemon)."""
        end = time.monotonic() + seconds
        while True:
            _, _, raw = self.send("GET", "/v1/instruments", "viewer", None, None, None)
            states = {x["id"]: x["state"] for x in json.loads(raw)["instruments"]}
            if all(states.get(x, "offline") != "offline" for x in ids):
                return
            if time.monotonic() > end:
                self.fail("instruments", f"still offline after {seconds} s: {states}")
                return
            time.sleep(0.2)

    def coverage(self):
        for tmpl, item in self.doc["paths"].items():
            for m in item:
                if m not in ("get", "put", "post", "delete", "patch"):
                    continue
                key = (m.upper(), tmpl)
                got = self.seen.get(key, set())
                if not got:
                    self.fail(f"{key[0]} {tmpl}", "never called")
                    continue
                if not any(200 <= s < 300 for s in got):
                    self.fail(f"{key[0]} {tmpl}", f"no success seen (only {sorted(got)})")
                if key not in NO_ERROR and not any(400 <= s < 500 for s in got):
                    self.fail(f"{key[0]} {tmpl}", f"no error seen (only {sorted(got)})")


def lag_schedule(c):
    """GET /v1/schedule checked while it shows every optional field of an item (a run of LAG
    incubating), so that their schemas meet real values too."""
    c.wait_online(["inc1", "star1", "reader1"])
    # The shared queue takes a run of a workflow PostgreSQL has: wait until the sinks delivered
    # the workflow just stored (a loaded machine may take a while).
    end = time.monotonic() + 60
    while time.monotonic() < end:
        sinks = (c.call("GET", "/v1/cell", "viewer") or {}).get("sinks", {})
        if all(s.get("depth", 0) == 0 for s in sinks.values() if isinstance(s, dict)):
            break
        time.sleep(0.1)
    c.call("POST", "/v1/runs", "technician", 201, {"workflow": "oalag", "plate": "OA-LAG"})
    optional = ("site", "not_before", "must_start_by")
    end = time.monotonic() + 60
    while True:
        sched = c.call("GET", "/v1/schedule", "viewer")
        items = (sched or {}).get("items", [])
        seen = {k for it in items if it.get("plate") == "OA-LAG" for k in optional if k in it}
        if len(seen) == len(optional) or time.monotonic() > end:
            break
        time.sleep(0.1)
    if len(seen) != len(optional):
        c.fail("GET /v1/schedule", f"run OA-LAG's items never showed "
               f"{sorted(set(optional) - seen)}: {json.dumps(items)}")
    print(f"schedule: {len(items)} items, with {', '.join(sorted(seen))}")


def run(c, paused):
    doc = c.call("GET", "/v1/openapi.json")
    if not c.dump:
        c.doc = doc
        if doc.get("openapi", "").split(".")[:2] != ["3", "1"]:
            c.fail("document", f"openapi {doc.get('openapi')!r}, not 3.1")
        c.call("GET", "/v1/openapi.json")  # validated against itself now
        for name, sch in doc["components"]["schemas"].items():
            try:  # each is a JSON Schema 2020-12 (the meta-schema ships with jsonschema)
                jsonschema.Draft202012Validator.check_schema(sch)
            except jsonschema.exceptions.SchemaError as e:
                c.fail(f"components.schemas.{name}", f"not a valid schema: {e.message}")
    c.call("GET", "/healthz")
    c.call("GET", "/metrics", "viewer")
    c.call("GET", "/metrics", None, 401)
    c.call("GET", "/metrics", None, 401, headers={"Authorization": "Bearer not-a-token"})

    w = "/v1/workflows"
    c.call("POST", w, "technician", 201, PLAIN)
    c.call("POST", w, "technician", 200, PLAIN)  # stored already
    c.call("POST", w, "admin", 201, MIX)
    c.call("POST", w, "technician", 201, LAG)
    lag_schedule(c)
    c.call("POST", w, "viewer", 403, PLAIN)
    c.call("POST", w, "technician", 422, {"name": "x"})
    c.call("POST", w, "technician", 400, '{"name":')
    c.call("POST", w, "technician", 415, PLAIN, ctype="text/plain")
    c.call("POST", w, "technician", 413, 64 << 20)
    c.call("GET", w, "viewer")
    c.call("GET", w, None, 401)
    wn = "/v1/workflows/{name}"
    c.call("GET", wn, "viewer", params={"name": "oaplain"})
    c.call("GET", wn, "viewer", params={"name": "oaplain"}, query="?version=1")
    c.call("GET", wn, "viewer", 400, params={"name": "oaplain"}, query="?version=x")
    c.call("GET", wn, "viewer", 404, params={"name": "nope"})

    r = "/v1/runs"
    run_doc = c.call("POST", r, "technician", 201, {"workflow": "oaplain", "priority": "high"},
                     headers={"Idempotency-Key": "oa-run-1"})
    c.call("POST", r, "technician", 201, {"workflow": "oaplain", "priority": "high"},
           headers={"Idempotency-Key": "oa-run-1"})  # the first answer again
    c.call("POST", r, "technician", 422, {"workflow": "oaplain", "priority": "low"},
           headers={"Idempotency-Key": "oa-run-1"})
    c.call("POST", r, "technician", 422, {"workflow": 5})
    c.call("POST", r, "technician", 422, {"workflow": "no-such-workflow"})
    c.call("POST", r, "viewer", 403, {"workflow": "oaplain"})
    rid = (run_doc or {}).get("id", "00000000-0000-4000-8000-000000000000")
    c.call("GET", r, "viewer")
    c.call("GET", r, "viewer", query="?state=queued&limit=5")
    c.call("GET", r, "viewer", query="?workflow=oaplain&priority=high&order=newest&limit=1")
    c.call("GET", r, "viewer", query="?plate=OA-LAG")
    for bad in ("priority=soon", "workflow=-x", "order=up", "plate=", "plate=" + "P" * 65):
        c.call("GET", r, "viewer", 400, query="?" + bad)
    c.call("GET", r, "viewer", 400, query="?state=bogus&colour=red")
    ri = "/v1/runs/{id}"
    c.call("GET", ri, "viewer", params={"id": rid})
    c.call("GET", ri, "viewer", 404, params={"id": "not-a-run"})
    c.call("GET", ri, "viewer", 404, params={"id": "00000000-0000-4000-8000-000000000000"})
    c.call("POST", ri + "/priority", "technician", params={"id": rid}, body={"priority": "urgent"})
    c.call("POST", ri + "/priority", "technician", 422, params={"id": rid}, body={"colour": 1})
    c.call("POST", ri + "/priority", "viewer", 403, params={"id": rid}, body={"priority": "urgent"})
    c.call("POST", ri + "/resume", "technician", 409, params={"id": rid}, body={})
    c.call("POST", ri + "/resume", "technician", 422, params={"id": rid}, body={"step": "undo"})
    c.call("POST", ri + "/resume", "technician", 404, params={"id": "not-a-run"}, body={})
    pr = c.call("GET", "/v1/prompts", "viewer")
    c.call("GET", "/v1/prompts", None, 401)
    if f"run:{paused}:paused" not in [p.get("id") for p in (pr or {}).get("prompts", [])]:
        c.fail("GET /v1/prompts", f"the paused run {paused} is not a prompt: {pr}")
    c.call("POST", ri + "/resume", "technician", params={"id": paused}, body={"step": "skip"})

    # The audit trail: the decisions above are entries, the chain verifies.
    au = c.call("GET", "/v1/audit", "viewer", query=f"?run={paused}&limit=500")
    if "run.resume.skip" not in [e.get("what") for e in (au or {}).get("entries", [])]:
        c.fail("GET /v1/audit", f"the resumption of {paused} is not an entry: {au}")
    c.call("GET", "/v1/audit", "viewer", 400, query="?limit=0&colour=1")
    c.call("GET", "/v1/audit", None, 401)
    v = c.call("GET", "/v1/audit/verify", "viewer")
    if not (v or {}).get("ok"):
        c.fail("GET /v1/audit/verify", f"the chain does not verify: {v}")
    c.call("GET", "/v1/audit/verify", None, 401)

    i = "/v1/instruments"
    c.wait_online(["inc1", "star1", "reader1"])
    c.call("POST", r, "technician", 201, {"workflow": "oaplain", "plate": "OA-2"})
    c.call("GET", "/v1/schedule", None, 401)
    c.call("GET", i, "viewer")
    c.call("GET", i, None, 401)
    ii = i + "/{id}"
    inst = c.call("GET", ii, "viewer", params={"id": "reader1"})
    c.call("GET", ii, "viewer", 404, params={"id": "nope"})
    for what in ("pause", "resume"):
        c.call("POST", ii + "/" + what, "technician", params={"id": "inc1"})
        c.call("POST", ii + "/" + what, "technician", 404, params={"id": "nope"})
        c.call("POST", ii + "/" + what, "viewer", 403, params={"id": "inc1"})
    c.call("POST", ii + "/record", "technician", params={"id": "reader1"}, body={"on": False})
    c.call("POST", ii + "/record", "technician", 422, params={"id": "reader1"}, body={"on": 1})
    c.call("POST", ii + "/record", "technician", 404, params={"id": "nope"}, body={"on": False})
    c.call("GET", ii + "/utilisation", "viewer", params={"id": "reader1"})
    c.call("GET", ii + "/utilisation", "viewer", params={"id": "reader1"}, query="?by=campaign")
    c.call("GET", ii + "/utilisation", "viewer", 400, params={"id": "reader1"}, query="?by=week")
    c.call("GET", ii + "/utilisation", "viewer", 404, params={"id": "nope"})
    c.call("GET", ii + "/utilisation", None, 401, params={"id": "reader1"})
    cs = ii + "/consumables"
    c.call("GET", cs, "viewer", params={"id": "star1"})
    c.call("GET", cs, None, 401, params={"id": "star1"})
    c.call("GET", cs, "viewer", 404, params={"id": "reader1"})
    cr = cs + "/refill"
    c.call("POST", cr, "technician", params={"id": "star1"}, body={"trough": "substrate"})
    c.call("POST", cr, "technician", params={"id": "star1"},
           body={"tips": {"racks": 1}, "reason": "fresh rack"})
    c.call("POST", cr, "technician", 400, params={"id": "star1"},
           body={"trough": "nope", "volume_ul": 5})
    c.call("POST", cr, "technician", 400, params={"id": "star1"},
           body={"trough": "substrate", "volume_ul": -1})
    c.call("POST", cr, "technician", 404, params={"id": "reader1"}, body={"tips": "all"})
    c.call("POST", cr, "viewer", 403, params={"id": "star1"}, body={"tips": "all"})
    action = None
    for a in (inst or {}).get("actions", []) if isinstance(inst, dict) else []:
        if not a.get("params_schema", {}).get("required"):
            action = a.get("name") or a.get("action")
            break
    if action is None:
        c.fail("GET /v1/instruments/reader1", f"no action without required params: {inst}")
    else:
        c.call("POST", ii + "/actions", "technician", params={"id": "reader1"},
               body={"action": action})
    c.call("POST", ii + "/actions", "technician", 422, params={"id": "reader1"},
           body={"action": "no_such_action"})
    c.call("POST", ii + "/actions", "technician", 422, params={"id": "reader1"},
           body={"verb": "x"})
    c.call("POST", ii + "/actions", "technician", 404, params={"id": "nope"},
           body={"action": "status"})

    # the plate registry: a read by hand names its plate
    c.call("POST", ii + "/actions", "technician", params={"id": "reader1"},
           body={"action": "read_absorbance", "params": {"wavelength_nm": 450}, "plate": "OA P1"})
    c.call("POST", ii + "/actions", "technician", 422, params={"id": "reader1"},
           body={"action": "read_absorbance", "params": {"wavelength_nm": 450}, "plate": "P" * 65})
    p, pb = "/v1/plates", "/v1/plates/{barcode}"
    c.call("GET", p, "viewer")
    c.call("GET", p, "viewer", query="?location=at&instrument=reader1&limit=5")
    c.call("GET", p, "viewer", 400, query="?location=nowhere")
    c.call("GET", p, None, 401)
    c.call("GET", pb, "viewer", params={"barcode": "OA%20P1"})
    c.call("GET", pb, "viewer", 404, params={"barcode": "OA-NONE"})
    c.call("GET", pb, "viewer", 400, params={"barcode": "%FF"})
    c.call("POST", pb + "/location", "technician", params={"barcode": "OA%20P1"},
           body={"outside": True, "reason": "taken to the freezer"})
    c.call("POST", pb + "/location", "technician", 422, params={"barcode": "OA%20P1"},
           body={"outside": True})
    c.call("POST", pb + "/location", "technician", 404, params={"barcode": "OA-NONE"},
           body={"outside": True, "reason": "x"})
    c.call("POST", pb + "/location", "viewer", 403, params={"barcode": "OA%20P1"},
           body={"outside": True, "reason": "x"})

    c.call("POST", ri + "/cancel", "technician", params={"id": rid}, body={"reason": "openapi"})
    c.call("POST", ri + "/cancel", "technician", 409, params={"id": rid}, body={})
    c.call("POST", ri + "/cancel", "technician", 422, params={"id": rid}, body={"reason": 5})

    k = "/v1/campaigns"
    c.call("POST", k, "pipeline", 201, CAMPAIGN)
    c.call("POST", k, "pipeline", 422, {"id": "oa2"})
    c.call("POST", k, "viewer", 403, CAMPAIGN)
    c.call("GET", k, "viewer")
    c.call("GET", k, None, 401)
    ki = k + "/{id}"
    oa = {"id": "oa1"}
    c.call("GET", ki, "viewer", params=oa)
    c.call("GET", ki, "viewer", 404, params={"id": "nope"})
    c.call("POST", ki + "/batches", "pipeline", 201, BATCH, params=oa)
    c.call("POST", ki + "/batches", "pipeline", 200, BATCH, params=oa)  # delivered again
    c.call("POST", ki + "/batches", "pipeline", 422, {"batch": "b2"}, params=oa)
    c.call("POST", ki + "/batches", "pipeline", 404, BATCH, params={"id": "nope"})
    c.call("POST", ki + "/scores", "pipeline", 200, {"scores": [{"id": "k2", "score": 3}]},
           params=oa)
    c.call("POST", ki + "/scores", "pipeline", 422, {"scores": [{"id": "zz", "score": 3}]},
           params=oa)
    for what in ("pause", "resume"):
        c.call("POST", ki + "/" + what, "pipeline", params=oa)
        c.call("POST", ki + "/" + what, "pipeline", 404, params={"id": "nope"})
        c.call("POST", ki + "/" + what, "viewer", 403, params=oa)
    c.call("GET", ki + "/candidates", "viewer", params=oa)
    c.call("GET", ki + "/candidates", "viewer", query="?state=candidate", params=oa)
    c.call("GET", ki + "/candidates", "viewer", 400, query="?state=bogus", params=oa)
    c.call("GET", ki + "/candidates", "viewer", 404, params={"id": "nope"})
    c.call("GET", ki + "/results", "viewer", params=oa)
    c.call("GET", ki + "/results", "viewer", 404, params={"id": "nope"})

    c.call("GET", "/v1/me", "viewer")
    c.call("GET", "/v1/me", None, 401)
    c.call("GET", "/v1/cell", "viewer")
    c.call("GET", "/v1/cell", None, 401)
    # the lab view, from PostgreSQL (the daemon is a cell of a shared queue)
    c.call("GET", "/v1/lab", "viewer")
    c.call("GET", "/v1/lab", None, 401)
    c.call("GET", "/v1/lab/runs", "viewer")
    c.call("GET", "/v1/lab/runs", "viewer", query="?state=queued&limit=5")
    c.call("GET", "/v1/lab/runs", "viewer", 400, query="?limit=0")
    c.call("GET", "/v1/lab/runs", None, 401)
    c.call("GET", "/v1/events", "viewer", query="?kinds=run,instrument&after=0")
    c.call("GET", "/v1/events", None, 401)
    c.call("GET", "/v1/events", "viewer", 400, query="?after=x")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    for role in ("viewer", "technician", "pipeline", "admin"):
        ap.add_argument("--" + role, required=True)
    ap.add_argument("--paused-run", required=True, help="a run paused by a failed step")
    ap.add_argument("--dump", action="store_true", help="print answers; validate nothing")
    a = ap.parse_args()
    c = Checker(a.url, {r: getattr(a, r) for r in ("viewer", "technician", "pipeline", "admin")},
                a.dump)
    run(c, a.paused_run)
    if not c.dump:
        c.coverage()
    for key in sorted(c.seen):
        print(f"{key[0]:5} {key[1]:40} {' '.join(str(s) for s in sorted(c.seen[key]))}")
    print(f"{c.calls} requests, {len(c.problems)} problems")
    return 1 if c.problems else 0


if __name__ == "__main__":
    sys.exit(main())
