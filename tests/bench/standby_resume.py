#!/usr/bin/python3
"""standby_resume.py: a resume storm with and without HERALD_DATABASE_READ_URL (issue 15).

Starts redis-server, a PostgreSQL primary and an asynchronous pg_basebackup standby on free
127.0.0.1 ports, fills --channels channels with --messages messages each (REST batch publish),
waits for the standby to replay them, then runs the same storm twice, each time on a fresh
gateway with no recent-message cache (--recent-bytes 0: every resume reads the history):
  primary  HERALD_DATABASE_URL only
  standby  HERALD_DATABASE_URL and HERALD_DATABASE_READ_URL=the standby
In a storm --clients WebSocket clients (spread over the channels) subscribe at once with
since=0 and are replayed the whole channel. It reports the storm's wall time, resumes a
second, the queries the gateway sent to the primary (herald_db_queries_total), and the pages
the standby answered and those that fell back to the primary. Exits 1 only if a client misses or repeats a
message (never on timing). Every process it starts is stopped by PID.

    /usr/bin/python3 tests/bench/standby_resume.py [--build-dir build] [--clients 2000]
        [--channels 50] [--messages 200]
"""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import REPO_ROOT, Herald, RedisServer, raise_nofile, ws_connect  # noqa: E402
from pg import PostgresServer, make_standby  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default=os.path.join(REPO_ROOT, "build"))
    p.add_argument("--clients", type=int, default=2000)
    p.add_argument("--channels", type=int, default=50)
    p.add_argument("--messages", type=int, default=200)
    return p.parse_args()


def fill(h, channels, messages):
    """messages per channel, published in batches of 100 through the gateway."""
    for c, start in ((c, start) for c in range(channels) for start in range(0, messages, 100)):
        batch = [{"channel": f"storm:{c}", "data": {"i": i}}
                 for i in range(start, min(start + 100, messages))]
        req = urllib.request.Request(f"{h.base}/v1/messages", method="POST",
                                     data=json.dumps({"messages": batch}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 201, r.status


async def resume_one(url, channel, messages):
    """Subscribes with since=0; returns the seqs replayed before `subscribed`."""
    ws = await ws_connect(url, open_timeout=60)
    try:
        await ws.send(json.dumps({"op": "subscribe", "channel": channel, "since": 0}))
        seqs = []
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if m["op"] == "message":
                seqs.append(m["seq"])
            elif m["op"] == "subscribed":
                return seqs if m.get("recovered") else None
    finally:
        await ws.close()


async def storm(h, args):
    tasks = [resume_one(h.ws_url, f"storm:{i % args.channels}", args.messages)
             for i in range(args.clients)]
    t0 = time.monotonic()
    results = await asyncio.gather(*tasks)
    return time.monotonic() - t0, results


def run(mode, tmp, redis, primary, standby, args, binary):
    env = {"HERALD_DATABASE_URL": primary.url, "HERALD_RECENT_BYTES": "0",
           "HERALD_MAX_CONNECTIONS_PER_IP": str(args.clients + 100),
           "HERALD_REPLAY_MAX": str(args.messages + 1)}
    if mode == "standby":
        env["HERALD_DATABASE_READ_URL"] = standby.url
    os.environ["HERALD_BIN"] = binary
    h = Herald(tmp, redis.url, env=env)
    try:
        h.start()
        h.wait_metric("herald_db_up", lambda v: v == 1)
        if mode == "standby":
            h.wait_metric("herald_db_read_up", lambda v: v == 1)
        # the gateway's own counts: pg_stat_database lags up to 10 s behind idle backends
        before = h.metric("herald_db_queries_total")
        wall, results = asyncio.run(storm(h, args))
        bad = sum(1 for r in results if r != list(range(1, args.messages + 1)))
        return {"mode": mode, "wall": wall, "bad": bad,
                "primary_queries": h.metric("herald_db_queries_total") - before,
                "standby_reads": h.metric("herald_history_standby_reads_total"),
                "fallbacks": h.metric("herald_history_standby_fallbacks_total")}
    finally:
        h.kill()


def main():
    args = parse_args()
    raise_nofile(args.clients + 2000)
    binary = os.path.join(args.build_dir, "gateway", "herald")
    tmp = tempfile.mkdtemp(prefix="herald-standby-storm-")
    procs = []
    try:
        redis = RedisServer(tmp).start()
        procs.append(redis)
        primary = PostgresServer(tmp).init()
        procs.append(primary)
        primary.start().create_db()
        os.environ["HERALD_BIN"] = binary
        loader = Herald(tmp, redis.url, env={"HERALD_DATABASE_URL": primary.url,
                                             "HERALD_MIGRATE_ON_START": "1"})
        procs.append(loader)
        loader.start()
        loader.wait_metric("herald_db_up", lambda v: v == 1)
        fill(loader, args.channels, args.messages)
        loader.kill()
        standby = make_standby(tmp, primary)
        procs.append(standby)
        standby.start()
        rows = args.channels * args.messages
        deadline = time.monotonic() + 120
        while int(standby.sql("SELECT count(*) FROM herald_messages")) < rows:
            assert time.monotonic() < deadline, "the standby never caught up"
            time.sleep(0.2)
        out = [run(mode, tmp, redis, primary, standby, args, binary)
               for mode in ("primary", "standby")]
    finally:
        for p in reversed(procs):
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.clients} clients resuming {args.messages} messages each on "
          f"{args.channels} channels, no recent cache:")
    print("| reads on | storm wall time | resumes/s | queries to the primary | "
          "pages from the standby | fallbacks to the primary |")
    print("|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['mode']} | {r['wall']:.2f} s | {args.clients / r['wall']:,.0f} | "
              f"{r['primary_queries']:.0f} | {r['standby_reads']:.0f} | {r['fallbacks']:.0f} |")
    bad = sum(r["bad"] for r in out)
    if bad:
        print(f"FAILED: {bad} resumes missed or repeated a message")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
