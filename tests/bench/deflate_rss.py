#!/usr/bin/python3
"""Gateway RSS per connection with permessage-deflate as browsers use it: every client sends
its subscribe compressed, so lws builds its inflate state (kept for the connection's life
under context takeover). Compares with the same clients without compression.

    tests/bench/deflate_rss.py [HERALD_BIN] [--conns N]

Starts its own redis-server and herald (HERALD_DEFLATE on) on free ports, stops them by PID.
"""
import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


async def hold(url, n, compression):
    """n clients subscribed on 10 channels; returns them open."""
    clients = []
    for i in range(n):
        ws = await websockets.connect(url, compression=compression, ping_interval=None)
        await ws.send(json.dumps({"op": "subscribe", "channel": f"room-{i % 10}"}))
        reply = json.loads(await ws.recv())
        assert reply["op"] == "subscribed", reply
        agreed = ws.response_headers.get("Sec-WebSocket-Extensions") or ""
        assert ("permessage-deflate" in agreed) == (compression is not None), agreed
        clients.append(ws)
    return clients


async def measure(url, pid, n, compression):
    before = rss_kib(pid)
    clients = await hold(url, n, compression)
    await asyncio.sleep(1)
    after = rss_kib(pid)
    for ws in clients:
        await ws.close()
    await asyncio.sleep(1)
    return (after - before) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("herald", nargs="?", default=os.path.join(ROOT, "build/gateway/herald"))
    ap.add_argument("--conns", type=int, default=1000)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rport, hport = free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--save", "",
                                       "--appendonly", "no"], stdout=subprocess.DEVNULL))
        time.sleep(0.3)
        url = f"ws://127.0.0.1:{hport}/ws"
        rows = []
        # a fresh gateway for each: memory freed by one batch would flatter the next
        for label, comp in (("no compression", None), ("permessage-deflate", "deflate")):
            h = subprocess.Popen([a.herald, "--listen", f"127.0.0.1:{hport}", "--redis-url",
                                  f"redis://127.0.0.1:{rport}/0", "--deflate",
                                  "--max-connections-per-ip", str(a.conns + 10)],
                                 stderr=subprocess.DEVNULL)
            procs.append(h)
            time.sleep(0.5)
            rows.append((label, asyncio.run(measure(url, h.pid, a.conns, comp))))
            h.terminate()
            h.wait(30)
        print(f"| clients ({a.conns}, each sent one compressed subscribe when agreed) "
              "| gateway RSS KiB per connection |\n|---|---|")
        for label, kib in rows:
            print(f"| {label} | {kib:.2f} |")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
