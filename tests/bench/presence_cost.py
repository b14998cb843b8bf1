#!/usr/bin/python3
"""presence_cost.py: what presence costs Redis with 10,000 members across 3 gateways.

For each layout (--layouts, default "big,spread") and each HERALD_PRESENCE_TTL (--ttls,
default "30s,6s") it starts its own redis-server and 3 gateways (HERALD_PRESENCE=room:*) on
free 127.0.0.1 ports, then:
  1. opens --members WebSocket connections (10,000), connection i on gateway i % 3, each a
     distinct user ("sub":"u<i>", "info":{"name":"u<i>"}, auth off) subscribed to one presence
     channel:
       big     one channel, room:big, with all 10,000 members;
       spread  100 channels, room:s0 .. room:s99, member i on room:s<i % 100>: 100 members
               each, every channel with members on all 3 gateways.
     The members are a minimal raw WebSocket client (asyncio protocols): they read and
     discard what the gateway sends (every join event goes to every subscriber of the
     channel: 10,000 joins on one channel are 50 million event deliveries), so they can keep
     up. HERALD_PING_INTERVAL=0, so that they need not answer pings;
  2. waits until the presence list (the REST route, every channel) reports every member and
     the join events have all been delivered (the gateways' frame counters stand still);
  3. measures for --seconds (30) the Redis commands per second (INFO commandstats deltas:
     the top-level commands the gateways send, EVAL and PUBLISH, and the commands the scripts
     run inside, which Redis counts under their own names), Redis CPU (INFO cpu, sys + user),
     the gateways' CPU (/proc/<pid>/stat) and the Redis time spent in scripts; the scripts
     slower than 1 ms are read from SLOWLOG. Scenarios:
       steady   nobody joins or leaves (every TTL);
       churn    (first TTL only) --churn-rate connections a second close and a new user opens
                a connection on the same gateway and channel: one leave (after the 3 s
                HERALD_PRESENCE_LINGER) and one join each;
       reload   (first TTL only) the same, but the same user comes back at once (a page
                reload): the linger absorbs it, no leave and no join;
  4. times --reads `presence` reads over a WebSocket (not subscribed to the channel) of the
     biggest channel: latency from the send to the reply, and the reply's size.
With --baseline it first measures the 3 gateways with no member for 10 s (their Redis
heartbeats). Prints a table; --json FILE writes every number, with the commandstats deltas
per command. Every process it starts is stopped by PID at the end, also on errors or Ctrl-C.
Exits 2 when the run could not be set up, 1 when members were missing or a gateway logged
errors or closed members, 0 otherwise; never on speed.

    /usr/bin/python3 tests/bench/presence_cost.py [--members 10000] [--seconds 30]
        [--layouts big,spread] [--ttls 30s,6s] [--churn-rate 100] [--json out.json]

Needs redis-server 7 and the gateway (HERALD_BIN, else build/gateway/herald).
"""

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from drain_resume import cpu_seconds, machine_busy_seconds  # noqa: E402
from harness import (Herald, RedisConn, RedisServer, herald_bin, http_get,  # noqa: E402
                     metric_value, ws_connect)

INSTANCES = 3
BATCH = 250            # connections opened at once
# what the presence scripts call (gateway/channels/presence.c): counted as "inside scripts"
SCRIPT_CMDS = {"time", "zrangebyscore", "zrem", "hdel", "hincrby", "zadd", "hset", "zscore",
               "hget", "hlen", "pexpire", "hgetall"}
EXPECTED_LOG = ("no_history", "auth_off")   # the start-up warnings of this setting
OURS = {"info", "slowlog", "config", "ping", "flushall"}   # the bench's own commands


class SetupError(Exception):
    """The run could not be set up (exit 2)."""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=10000)
    p.add_argument("--spread-channels", type=int, default=100)
    p.add_argument("--layouts", default="big,spread")
    p.add_argument("--ttls", default="30s,6s", help="HERALD_PRESENCE_TTL values, first one "
                   "also gets the churn and reload scenarios")
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds per scenario")
    p.add_argument("--churn-rate", type=float, default=100.0, help="connections replaced per s")
    p.add_argument("--scenarios", default="steady,churn,reload")
    p.add_argument("--reads", type=int, default=5)
    p.add_argument("--baseline", action="store_true")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--keep-tmp", action="store_true")
    a = p.parse_args()
    a.layouts = a.layouts.split(",")
    a.ttls = a.ttls.split(",")
    a.scenarios = a.scenarios.split(",")
    if a.members < INSTANCES or a.seconds < 1 or a.churn_rate <= 0:
        p.error("need members >= 3, seconds >= 1, churn-rate > 0")
    return a


# ---------------------------------------------------------------------------------------------
# Members: a minimal WebSocket client that subscribes once and discards what it gets


def text_frame(payload):
    """A masked text frame (mask key 0: the payload goes as is)."""
    n = len(payload)
    head = b"\x81" + (bytes([0x80 | n]) if n < 126 else b"\xfe" + struct.pack("!H", n))
    return head + b"\0\0\0\0" + payload


class Member(asyncio.Protocol):
    def __init__(self, port, channel, sub):
        self.port, self.channel, self.sub = port, channel, sub
        self.buf = b""
        self.upgraded = False
        self.subscribed = False
        self.full = False
        self.closed = False
        self.bytes = 0
        self.ready = asyncio.get_running_loop().create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket"
                        f"\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n".encode())

    def _settle(self, exc=None):
        if not self.ready.done():
            if exc:
                self.ready.set_exception(exc)
            else:
                self.ready.set_result(self)

    def data_received(self, data):
        self.bytes += len(data)
        if not self.upgraded:
            self.buf += data
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self._settle(SetupError(f"handshake refused: {self.buf[:80]!r}"))
                self.transport.close()
                return
            self.upgraded = True
            data, self.buf = self.buf[i + 4:], b""
            msg = json.dumps({"op": "subscribe", "channel": self.channel, "sub": self.sub,
                              "info": {"name": self.sub}}, separators=(",", ":"))
            self.transport.write(text_frame(msg.encode()))
        if b"presence_full" in data:
            self.full = True
        if not self.subscribed:
            hay = self.buf + data   # the reply may come with many join events after it
            if b'"subscribed"' in hay:
                self.subscribed, self.buf = True, b""
                self._settle()
            elif b'"error"' in hay:
                self._settle(SetupError(f"subscribe refused: {hay[:200]!r}"))
            else:
                self.buf = hay[-64:]

    def connection_lost(self, exc):
        self.closed = True
        self._settle(SetupError(f"connection lost before subscribed ({exc})"))

    def close(self):
        if self.transport:
            self.transport.abort()   # like a tab that goes away


async def open_member(port, channel, sub, timeout=60):
    loop = asyncio.get_running_loop()
    _, m = await loop.create_connection(lambda: Member(port, channel, sub), "127.0.0.1", port)
    try:
        await asyncio.wait_for(m.ready, timeout)
    except asyncio.TimeoutError:
        m.close()
        raise SetupError(f"{sub} on port {port}: no subscribed reply in {timeout} s") from None
    return m


# ---------------------------------------------------------------------------------------------
# Measuring


def info(port, section):
    with RedisConn(port, timeout=10) as c:
        text = c.command("INFO", section)
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def commandstats(port):
    out = {}
    for k, v in info(port, "commandstats").items():
        if not k.startswith("cmdstat_"):
            continue
        f = dict(x.split("=") for x in v.split(","))
        out[k[len("cmdstat_"):]] = (int(f["calls"]), int(f["usec"]))
    return out


def metrics(h):
    status, _, body = http_get(h.base + "/metrics", timeout=10)
    if status != 200:
        raise SetupError(f"/metrics answered {status}")
    return body.decode()


def gw_metric(hs, name):
    return sum(metric_value(metrics(h), name, default=0) for h in hs)


def snapshot(redis, hs):
    cpu = info(redis.port, "cpu")
    return {"t": time.monotonic(), "cmd": commandstats(redis.port),
            "redis_cpu": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            "gw_cpu": [cpu_seconds(h.pid) for h in hs], "bench_cpu": cpu_seconds(os.getpid()),
            "machine": machine_busy_seconds(),
            "frames_out": gw_metric(hs, "herald_frames_out_total"),
            "joins": gw_metric(hs, "herald_presence_joins_total"),
            "leaves": gw_metric(hs, "herald_presence_leaves_total")}


def delta(a, b):
    span = b["t"] - a["t"]
    per_cmd = {}
    for name, (calls, usec) in b["cmd"].items():
        c0, u0 = a["cmd"].get(name, (0, 0))
        if calls - c0 and name not in OURS:
            per_cmd[name] = {"calls_per_s": (calls - c0) / span, "usec_per_s": (usec - u0) / span}
    top = {k: v["calls_per_s"] for k, v in per_cmd.items() if k not in SCRIPT_CMDS}
    inner = {k: v["calls_per_s"] for k, v in per_cmd.items() if k in SCRIPT_CMDS}
    scripts = sum(per_cmd.get(k, {}).get("calls_per_s", 0) for k in ("eval", "evalsha"))
    return {
        "seconds": span, "per_command": per_cmd,
        "top_level_per_s": sum(top.values()), "inside_scripts_per_s": sum(inner.values()),
        "total_per_s": sum(top.values()) + sum(inner.values()),
        "scripts_per_s": scripts, "publish_per_s": per_cmd.get("publish", {}).get("calls_per_s", 0),
        "script_ms_per_s": sum(per_cmd.get(k, {}).get("usec_per_s", 0)
                               for k in ("eval", "evalsha")) / 1000,
        "redis_cpu_pct": 100 * (b["redis_cpu"] - a["redis_cpu"]) / span,
        "gateways_cpu_pct": [100 * (y - x) / span for x, y in zip(a["gw_cpu"], b["gw_cpu"])],
        "bench_cpu_pct": 100 * (b["bench_cpu"] - a["bench_cpu"]) / span,
        "machine_busy_pct": 100 * (b["machine"] - a["machine"]) / span,
        "frames_out_per_s": (b["frames_out"] - a["frames_out"]) / span,
        "joins_per_s": (b["joins"] - a["joins"]) / span,
        "leaves_per_s": (b["leaves"] - a["leaves"]) / span,
    }


def slowlog(port):
    """The scripts slower than 1 ms since the last reset: (count, max ms, median ms)."""
    with RedisConn(port, timeout=10) as c:
        entries = c.command("SLOWLOG", "GET", "1000")
        c.command("SLOWLOG", "RESET")
    us = []
    for e in entries or []:
        cmd = e[3][0] if len(e) > 3 and e[3] else b""
        cmd = cmd.decode() if isinstance(cmd, bytes) else str(cmd)
        if cmd.lower() in ("eval", "evalsha"):
            us.append(int(e[2]))
    return {"count": len(us), "max_ms": max(us) / 1000 if us else 0.0,
            "median_ms": statistics.median(us) / 1000 if us else 0.0}


# ---------------------------------------------------------------------------------------------
# One setup: Redis, 3 gateways, the members


class Run:
    def __init__(self, args, layout, ttl):
        self.args, self.layout, self.ttl = args, layout, ttl
        n = args.members
        if layout == "big":
            self.channels = ["room:big"]
        elif layout == "spread":
            self.channels = [f"room:s{k}" for k in range(args.spread_channels)]
        else:
            raise SetupError(f"unknown layout {layout!r}")
        self.plan = [(i % INSTANCES, self.channels[i % len(self.channels)], f"u{i}")
                     for i in range(n)]
        self.tmp = tempfile.mkdtemp(prefix=f"herald-presence-cost-{layout}-")
        self.redis, self.hs, self.members = None, [], {}
        self.next_user = n

    def start(self):
        self.redis = RedisServer(self.tmp)
        self.redis.start()
        with RedisConn(self.redis.port) as c:
            c.command("CONFIG", "SET", "slowlog-log-slower-than", "1000")
            c.command("CONFIG", "SET", "slowlog-max-len", "1024")
        env = {"HERALD_PRESENCE": "room:*", "HERALD_PRESENCE_TTL": self.ttl,
               "HERALD_PRESENCE_MAX_MEMBERS": str(2 * self.args.members),
               "HERALD_MAX_CONNECTIONS_PER_IP": str(2 * self.args.members + 100),
               "HERALD_PING_INTERVAL": "0", "HERALD_LOG_LEVEL": "warn",
               "HERALD_DRAIN_SECONDS": "1"}
        for k in range(INSTANCES):
            h = Herald(self.tmp, self.redis.url, env=dict(env, HERALD_INSTANCE_ID=f"gw{k}"))
            self.hs.append(h)
            try:
                h.start()
                h.wait_ready(timeout=30)
            except (AssertionError, Exception) as exc:  # noqa: BLE001 - SkipTest too
                raise SetupError(f"gateway {k} did not start: {exc}") from None

    def stop(self):
        for h in self.hs:
            h.stop(timeout=10)
        if self.redis:
            self.redis.kill()

    def logs(self):
        """The warnings and errors the gateways logged (they run at warn)."""
        out = []
        for k, h in enumerate(self.hs):
            for line in h.log_text().splitlines():
                if line.strip() and not any(f'"event":"{e}"' in line for e in EXPECTED_LOG):
                    out.append(f"gw{k}: {line}")
        return out

    async def connect_all(self):
        t0 = time.monotonic()
        todo = list(enumerate(self.plan))
        for s in range(0, len(todo), BATCH):
            batch = todo[s:s + BATCH]
            got = await asyncio.gather(*(open_member(self.hs[g].port, ch, sub, 300)
                                         for _, (g, ch, sub) in batch))
            for (i, (g, ch, sub)), m in zip(batch, got):
                self.members[i] = m
            if (s + BATCH) % 2000 == 0:
                print(f"   {s + BATCH} subscribed after {time.monotonic() - t0:.1f} s",
                      flush=True)
        return time.monotonic() - t0

    def rest_counts(self):
        total = 0
        for ch in self.channels:
            status, _, body = http_get(f"{self.hs[0].base}/v1/channels/{ch}/presence", timeout=30)
            if status != 200:
                raise SetupError(f"GET presence of {ch}: {status} {body[:200]!r}")
            total += len(json.loads(body)["members"])
        return total

    async def wait_listed(self, want, timeout):
        """Until the lists hold `want` members and the join events stopped flowing."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        listed = -1
        while time.monotonic() < deadline:
            listed = await asyncio.to_thread(self.rest_counts)
            if listed == want:
                break
            await asyncio.sleep(0.5)
        t_listed = time.monotonic() - t0
        last, still = None, 0
        while time.monotonic() < deadline and still < 3:
            now = gw_metric(self.hs, "herald_frames_out_total"), \
                sum(m.bytes for m in self.members.values())
            still = still + 1 if now == last else 0
            last = now
            await asyncio.sleep(0.5)
        return listed, t_listed, time.monotonic() - t0

    async def measure(self, seconds):
        slowlog(self.redis.port)   # reset
        a = await asyncio.to_thread(snapshot, self.redis, self.hs)
        await asyncio.sleep(seconds)
        b = await asyncio.to_thread(snapshot, self.redis, self.hs)
        d = delta(a, b)
        d["slow_scripts"] = await asyncio.to_thread(slowlog, self.redis.port)
        return d

    async def churn(self, seconds, rate, same_user):
        """Replace `rate` connections a second for `seconds`; returns what it did."""
        stats = {"replaced": 0, "failed": 0}
        tasks = set()

        async def replace(i):
            g, ch, sub = self.plan[i]
            old = self.members.pop(i, None)
            if old:
                old.close()
            if not same_user:
                sub = f"u{self.next_user}"
                self.next_user += 1
                self.plan[i] = (g, ch, sub)
            try:
                self.members[i] = await open_member(self.hs[g].port, ch, sub)
                stats["replaced"] += 1
            except (OSError, SetupError, asyncio.TimeoutError):
                stats["failed"] += 1

        t0 = time.monotonic()
        k = 0
        busy = set()
        while (now := time.monotonic()) < t0 + seconds:
            target = int((now - t0) * rate)
            while k < target:
                i = random.randrange(len(self.plan))
                if i in busy:
                    continue
                busy.add(i)
                t = asyncio.create_task(replace(i))
                t.add_done_callback(lambda _t, i=i: busy.discard(i))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                k += 1
            await asyncio.sleep(0.005)
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        stats["rate"] = stats["replaced"] / seconds
        return stats

    async def reads(self, count):
        """`presence` reads of the first channel over a WebSocket that is not subscribed."""
        ws = await ws_connect(self.hs[0].ws_url)
        out = []
        try:
            for k in range(count):
                t0 = time.perf_counter()
                await ws.send(json.dumps({"op": "presence", "channel": self.channels[0],
                                          "id": k}))
                raw = await asyncio.wait_for(ws.recv(), 30)
                dt = time.perf_counter() - t0
                r = json.loads(raw)
                if r.get("op") != "presence":
                    raise SetupError(f"presence read: {raw[:200]!r}")
                out.append({"ms": 1000 * dt, "bytes": len(raw), "members": len(r["members"]),
                            "count": r["count"]})
                await asyncio.sleep(0.2)
        finally:
            await ws.close()
        return out


async def run_setup(args, layout, ttl, first_ttl, results):
    run = Run(args, layout, ttl)
    tag = f"{layout} TTL {ttl}"
    try:
        await asyncio.to_thread(run.start)
        if args.baseline and not results.get("baseline"):
            print("== baseline: 3 gateways, no member, 10 s", flush=True)
            results["baseline"] = await run.measure(10)
        print(f"== {tag}: connecting {args.members} members ...", flush=True)
        t_conn = await run.connect_all()
        listed, t_listed, t_quiet = await run.wait_listed(args.members, 300)
        print(f"   connected in {t_conn:.1f} s, all listed {t_listed:.1f} s later, join events "
              f"delivered after {t_quiet:.1f} s; listed {listed}", flush=True)
        setup = {"connect_s": t_conn, "listed_after_s": t_listed, "quiet_after_s": t_quiet,
                 "listed": listed, "full": sum(m.full for m in run.members.values()),
                 "frames_out": gw_metric(run.hs, "herald_frames_out_total"),
                 "rss_kib": [h.rss_kib() for h in run.hs]}
        res = {"layout": layout, "ttl": ttl, "channels": len(run.channels), "setup": setup,
               "scenarios": {}}
        results["runs"].append(res)
        if listed != args.members:
            res["problem"] = f"{listed} of {args.members} members listed"
            print(f"   PROBLEM: {res['problem']}", flush=True)
        if "steady" in args.scenarios:
            print(f"   steady {args.seconds:.0f} s ...", flush=True)
            res["scenarios"]["steady"] = await run.measure(args.seconds)
        if args.reads:
            res["reads"] = await run.reads(args.reads)
        for name, same in (("churn", False), ("reload", True)):
            if not first_ttl or name not in args.scenarios:
                continue
            print(f"   {name} {args.churn_rate:.0f}/s for {args.seconds:.0f} s ...", flush=True)
            task = asyncio.create_task(run.churn(args.seconds + 1, args.churn_rate, same))
            await asyncio.sleep(0.5)
            m = await run.measure(args.seconds)
            m["churn"] = await task
            res["scenarios"][name] = m
            await run.wait_listed(args.members, 60)   # lingers over, events delivered
        res["listed_at_end"] = await asyncio.to_thread(run.rest_counts)
        res["slow_consumer_closes"] = gw_metric(run.hs, "herald_slow_consumer_closes_total")
        res["presence_errors"] = gw_metric(run.hs, "herald_presence_errors_total")
        res["presence_full"] = gw_metric(run.hs, "herald_presence_full_total")
        res["members_closed"] = sum(m.closed for m in run.members.values())
        res["gateway_log"] = run.logs()[:50]
        res["gateways_alive"] = all(h.alive() for h in run.hs)
    finally:
        for m in run.members.values():
            m.close()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(run.stop)
        if args.keep_tmp:
            print(f"   temp dir kept: {run.tmp}")
        else:
            shutil.rmtree(run.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Report


def report(args, results):
    print(f"\n{args.members:,} members over {INSTANCES} gateways, {args.seconds:.0f} s per "
          f"scenario, churn {args.churn_rate:.0f} connections/s, {os.cpu_count()} cores")
    print("| layout | TTL | scenario | EVAL/s | PUBLISH/s | top-level cmds/s | cmds in scripts/s |"
          " total cmds/s | Redis ms in scripts per s | Redis CPU | gateways CPU (sum) |"
          " slowest script | frames out/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    if results.get("baseline"):
        rows.append(("(none)", "-", "baseline", results["baseline"]))
    for r in results["runs"]:
        for name, m in r["scenarios"].items():
            rows.append((f"{r['layout']} ({r['channels']} ch)", r["ttl"], name, m))
    for layout, ttl, name, m in rows:
        slow = m.get("slow_scripts", {})
        print(f"| {layout} | {ttl} | {name} | {m['scripts_per_s']:,.1f} | "
              f"{m['publish_per_s']:,.1f} | {m['top_level_per_s']:,.1f} | "
              f"{m['inside_scripts_per_s']:,.0f} | {m['total_per_s']:,.0f} | "
              f"{m['script_ms_per_s']:.1f} | {m['redis_cpu_pct']:.1f}% | "
              f"{sum(m['gateways_cpu_pct']):.1f}% | "
              f"{slow.get('max_ms', 0):.1f} ms ({slow.get('count', 0)} > 1 ms) | "
              f"{m['frames_out_per_s']:,.0f} |")
    bad = 0
    for r in results["runs"]:
        s = r["setup"]
        print(f"{r['layout']} TTL {r['ttl']}: connected in {s['connect_s']:.1f} s, listed "
              f"{s['listed']:,} (after {s['listed_after_s']:.1f} s), join events delivered "
              f"after {s['quiet_after_s']:.1f} s ({s['frames_out']:,.0f} frames out); gateway "
              f"RSS {', '.join(f'{k / 1024:.0f}' for k in s['rss_kib'])} MiB")
        for name in ("churn", "reload"):
            m = r["scenarios"].get(name)
            if m:
                c = m["churn"]
                print(f"   {name}: {c['replaced']} replaced ({c['rate']:.1f}/s), {c['failed']} "
                      f"failed; joins {m['joins_per_s']:.1f}/s, leaves {m['leaves_per_s']:.1f}/s")
        if r.get("reads"):
            ms = [x["ms"] for x in r["reads"]]
            print(f"   presence read of {r['reads'][0]['members']:,} members: "
                  f"{r['reads'][0]['bytes']:,} bytes, {min(ms):.1f} / "
                  f"{statistics.median(ms):.1f} / {max(ms):.1f} ms (min/median/max of "
                  f"{len(ms)})")
        print(f"   at the end: listed {r['listed_at_end']:,}, presence errors "
              f"{r['presence_errors']:.0f}, full {r['presence_full']:.0f}, slow-consumer closes "
              f"{r['slow_consumer_closes']:.0f}, members closed by the gateway "
              f"{r['members_closed']}, gateways alive {r['gateways_alive']}, "
              f"{len(r['gateway_log'])} log lines")
        for line in r["gateway_log"][:10]:
            print(f"     {line}")
        bad += (r["setup"]["listed"] != args.members or not r["gateways_alive"]
                or r["presence_errors"] or r["slow_consumer_closes"] or r["members_closed"]
                or bool(r["gateway_log"]))
    return bad


async def main_async(args, results):
    for layout in args.layouts:
        for k, ttl in enumerate(args.ttls):
            await run_setup(args, layout, ttl, k == 0, results)


def main():
    args = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(20000, hard) if hard != resource.RLIM_INFINITY else 20000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < args.members + 500:
        print(f"RLIMIT_NOFILE hard limit {hard} is too low for {args.members} members",
              file=sys.stderr)
        return 2
    if not os.access(herald_bin(), os.X_OK):
        print(f"no gateway at {herald_bin()} (set HERALD_BIN)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    results = {"members": args.members, "instances": INSTANCES, "seconds": args.seconds,
               "churn_rate": args.churn_rate, "cores": os.cpu_count(), "runs": []}
    try:
        asyncio.run(main_async(args, results))
    except (SetupError, AssertionError, OSError) as exc:
        print(f"RUN FAILED: {exc!r}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted: everything stopped", file=sys.stderr)
        code = 130
    else:
        code = 1 if report(args, results) else 0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(main())
