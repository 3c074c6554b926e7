#!/usr/bin/python3
"""An external ML pipeline for labloop's closed loop, written the way a data scientist would.

It creates a campaign over HTTP, then loops: fit its own small model on every result so far,
push a scored batch over MQTT (MQTT 5, with a response topic for labloop's answer), wait for the
batch's `done` event, read the results that arrived on `campaigns/{id}/results`, and push the
next batch. Results are deduplicated by (cell, seq), as labloop's delivery is at least once.

The model: a Gaussian-kernel regression (Nadaraya-Watson) of the normalised value over the
parameters scaled to [0, 1], with an exploration bonus for being far from what was tried; the
batch is the best-scoring random points, kept apart from each other. Needs only Debian's
python3-paho-mqtt.

    deploy/examples/pipeline.py --url http://127.0.0.1:8470 --mqtt 127.0.0.1:1883 \
        --root labloop/v1/lab/cell1 --campaign demo-ext --workflow mix --batches 4

Exit status 0 when every batch was accepted and completed; 1 with a reason otherwise.
"""

import argparse
import json
import math
import queue
import random
import sys
import threading
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def log(msg):
    print("pipeline: " + msg, flush=True)


def http(url, method, path, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Model:
    """Kernel regression with an exploration bonus, on the unit cube."""

    def __init__(self, params, bandwidth=0.15, explore=0.6):
        self.params = params
        self.bw = bandwidth
        self.explore = explore
        self.x = []
        self.y = []

    def scale(self, p):
        return [(p[q["name"]] - q.get("min", 0)) / (q["max"] - q.get("min", 0)) for q in self.params]

    def unscale(self, u):
        return {q["name"]: round(q.get("min", 0) + v * (q["max"] - q.get("min", 0)), 1)
                for q, v in zip(self.params, u)}

    def add(self, params, value):
        self.x.append(self.scale(params))
        self.y.append(value)

    def predict(self, u):
        if not self.x:
            return 0.0, 1.0
        w = [math.exp(-sum((a - b) ** 2 for a, b in zip(u, x)) / (2 * self.bw ** 2)) for x in self.x]
        total = sum(w)
        mean = sum(wi * yi for wi, yi in zip(w, self.y)) / total if total > 1e-12 else sum(self.y) / len(self.y)
        nearest = min(math.sqrt(sum((a - b) ** 2 for a, b in zip(u, x))) for x in self.x)
        return mean, nearest

    def propose(self, n, rng, avoid):
        pool = [[rng.random() for _ in self.params] for _ in range(2000)]
        # around the best so far, too: the model's own exploitation
        if self.y:
            best = self.x[max(range(len(self.y)), key=lambda i: self.y[i])]
            pool += [[min(1, max(0, b + rng.gauss(0, 0.08))) for b in best] for _ in range(1000)]
        scored = []
        for u in pool:
            mean, nearest = self.predict(u)
            scored.append((mean + self.explore * nearest, mean, nearest, u))
        scored.sort(key=lambda s: -s[0])
        chosen = []
        for score, mean, nearest, u in scored:
            if all(math.dist(u, c[3]) > 0.08 for c in chosen) and all(math.dist(u, a) > 1e-3 for a in avoid):
                chosen.append((score, mean, nearest, u))
            if len(chosen) == n:
                break
        return chosen


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8470")
    ap.add_argument("--token", default=None)
    ap.add_argument("--mqtt", default="127.0.0.1:1883", help="host:port of the broker")
    ap.add_argument("--root", required=True, help="the cell's topic root, e.g. labloop/v1/lab/cell1")
    ap.add_argument("--campaign", required=True)
    ap.add_argument("--workflow", required=True)
    ap.add_argument("--reagents", default="substrate:100,inhibitor:50",
                    help="NAME:MAX_UL,... the volumes to optimise")
    ap.add_argument("--positive", default="substrate:80", help="NAME:UL,... in the positive controls")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300, help="seconds to wait for a batch")
    a = ap.parse_args()
    rng = random.Random(a.seed)

    params = [{"name": n, "max": float(m)} for n, m in (kv.split(":") for kv in a.reagents.split(","))]
    campaign = {
        "id": a.campaign,
        "workflow": a.workflow,
        "objective": {"measure": "absorbance", "direction": "maximize"},
        "parameters": params,
        "layout": {"replicates": 2,
                   "positive": {"wells": ["A12", "B12", "C12", "D12"],
                                "volumes": {n: float(v) for n, v in (kv.split(":") for kv in a.positive.split(","))}},
                   "negative": {"wells": ["E12", "F12", "G12", "H12"]}},
        "batch_size": a.batch_size,
        "learner": {"kind": "external"},
    }
    st, doc = http(a.url, "POST", "/v1/campaigns", campaign, a.token)
    if st not in (200, 201):
        log("the campaign was refused (%d): %s" % (st, json.dumps(doc)))
        return 1
    log("campaign %s %s" % (a.campaign, "created" if st == 201 else "exists already"))

    events = queue.Queue()
    seen = set()
    host, port = a.mqtt.rsplit(":", 1)
    client = mqtt.Client(client_id="pipeline-%s-%d" % (a.campaign, rng.randrange(1 << 30)),
                         protocol=mqtt.MQTTv5)
    answers = "pipeline/%s/answers" % a.campaign

    def on_connect(c, userdata, flags, rc, props=None):
        c.subscribe([("%s/campaigns/%s/results" % (a.root, a.campaign), 1),
                     ("%s/campaigns/%s/batches/+/done" % (a.root, a.campaign), 1),
                     (answers, 1)])

    def on_message(c, userdata, msg):
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        key = (body.get("cell"), body.get("seq"))
        if msg.topic != answers:
            if key in seen:  # at least once: drop a redelivery
                return
            seen.add(key)
        events.put((msg.topic, body))

    subscribed = threading.Event()
    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = lambda c, userdata, mid, granted, props=None: subscribed.set()
    client.connect(host, int(port))
    client.loop_start()
    if not subscribed.wait(30):
        log("the broker at %s did not take the subscriptions" % a.mqtt)
        return 1

    model = Model(params)
    best = None
    tried = []
    for b in range(1, a.batches + 1):
        chosen = model.propose(a.batch_size, rng, tried)
        batch_id = "ext-%03d" % b
        batch = {"batch": batch_id, "model": {"name": "kernel-regression", "version": str(b)},
                 "candidates": [{"id": "%s-%02d" % (batch_id, i + 1), "params": model.unscale(u),
                                 "score": round(score, 4), "uncertainty": round(nearest, 4)}
                                for i, (score, mean, nearest, u) in enumerate(chosen)]}
        tried += [c[3] for c in chosen]
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = answers
        topic_in = "%s/in/campaigns/%s/batches" % (a.root, a.campaign)
        client.publish(topic_in, json.dumps(batch), qos=1, properties=props)
        done = False
        accepted = False
        results = 0
        waited = 0.0
        while not done:
            try:
                topic, body = events.get(timeout=5)
            except queue.Empty:
                waited += 5
                if waited >= a.timeout:
                    log("batch %s: nothing for %.0f s" % (batch_id, a.timeout))
                    return 1
                if not accepted:  # unanswered: send it again (a second delivery is harmless)
                    client.publish(topic_in, json.dumps(batch), qos=1, properties=props)
                continue
            waited = 0.0
            if topic == answers and body.get("batch") == batch_id:
                if accepted:
                    continue
                if body.get("status") != "accepted":
                    log("batch %s rejected: %s" % (batch_id, json.dumps(body.get("errors"))))
                    return 1
                accepted = True
                log("batch %s accepted: %s" % (batch_id, ", ".join(body.get("accepted", []))))
            elif topic.endswith("/results"):
                model.add(body["params"], body["value"])
                results += 1
                if best is None or body["value"] > best["value"]:
                    best = body
            elif topic.endswith("/done") and body.get("batch") == batch_id:
                done = True
        if not accepted:
            log("batch %s: done without an answer" % batch_id)
            return 1
        log("batch %s done: %d results; best so far %.4f (%s %s)" % (
            batch_id, results, best["value"] if best else float("nan"),
            best["candidate"] if best else "-", json.dumps(best["params"]) if best else ""))
    client.loop_stop()
    client.disconnect()
    if best is None:
        log("no result at all")
        return 1
    print(json.dumps({"campaign": a.campaign, "batches": a.batches, "results": len(model.y),
                      "best": {"candidate": best["candidate"], "value": best["value"], "params": best["params"]}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
