#!/usr/bin/env python3
"""seq_drive.py: the load of callgrind-sequenced.sh. SUBS WebSocket subscribers on one channel,
then MESSAGES durable publishes through POST /v1/messages in batches of BATCH, one request at a
time (each waits for its 201), paced at RATE messages/s. Checks that every subscriber got every
message once, in seq order, and prints one JSON line.

    seq_drive.py PORT [--subs 10] [--messages 2000] [--batch 100] [--rate 500]
"""

import argparse
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from rawws import RawWS  # noqa: E402

CHANNEL = "seqbench"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--subs", type=int, default=10)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--payload-bytes", type=int, default=100)
    a = ap.parse_args()

    subs = []
    for _ in range(a.subs):
        ws = RawWS(a.port, timeout=60.0)
        ws.send_json({"op": "subscribe", "channel": CHANNEL})
        r = ws.recv_json(timeout=60.0)
        assert r.get("op") == "subscribed", r
        subs.append(ws)

    filler = "x" * max(0, a.payload_bytes - 30)
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=120)
    sent, requests, t0 = 0, 0, time.monotonic()
    while sent < a.messages:
        n = min(a.batch, a.messages - sent)
        body = json.dumps({"messages": [{"channel": CHANNEL, "data": {"n": sent + i, "p": filler}}
                                        for i in range(n)]})
        due = t0 + sent / a.rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        conn.request("POST", "/v1/messages", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = resp.read()
        assert resp.status == 201, (resp.status, answer[:300])
        sent += n
        requests += 1
    publish_s = time.monotonic() - t0

    got, bad = 0, 0
    for ws in subs:
        last = 0
        for _ in range(a.messages):
            m = ws.recv_json(timeout=120.0)
            if m.get("op") != "message" or m.get("seq") != last + 1 or "sig" in m:
                bad += 1
            last = m.get("seq", last)
            got += 1
        ws.close()
    print(json.dumps({"subs": a.subs, "messages": sent, "requests": requests,
                      "deliveries": got, "bad": bad, "publish_s": round(publish_s, 2)}))
    return 0 if bad == 0 and got == a.subs * a.messages else 2


if __name__ == "__main__":
    sys.exit(main())
