#!/usr/bin/python3
"""drain_resume.py: the resume rate the survivors see when one instance drains (issue 14).

Starts its own redis-server, PostgreSQL (initdb in a temporary directory) and three gateways
A, B and C on free 127.0.0.1 ports, then:
  1. connects N WebSocket clients (default 10,000) to A, each subscribed to one of
     --channels durable channels, while a publisher stores --rate messages a second through
     B's and C's `POST /v1/messages` for the whole run;
  2. sends SIGTERM to A: A closes its clients with 1001 spread over the first 4/5 of
     HERALD_DRAIN_SECONDS; each client then does what web-demo/herald.js does: waits a random
     0-250 ms (its first backoff step), connects to B or C (picked at random, like a
     balancer) and re-subscribes with `since`/`epoch` of the last message it saw;
  3. measures the closes as the clients see them (per 100 ms and per second), resume
     completions per second on the survivors, the resume latency (dial to `subscribed`), the
     survivors' /metrics every 200 ms (connections gauge and accepted counter), CPU of every
     process during the drain, and when A exits;
  4. checks that every client got every seq of its channel, once, in order, up to the final
     head in PostgreSQL.

Exits 1 on a correctness failure only (a lost or duplicated message, a client that never
resumed, a refused resume, A hung or exiting non-zero), never on timing: a slow machine must
not fail it. Every process it starts is stopped by PID, also on Ctrl-C or an exception.

    /usr/bin/python3 tests/bench/drain_resume.py [--build-dir /tmp/bdrain] [--clients 10000]
        [--channels 100] [--rate 100] [--drain-seconds 10] [--workers 2] [--seed 1]

Needs redis-server, PostgreSQL 13+ and python3-websockets (Debian 12 packages), and an
open-file hard limit above N + 1,000: gateway A holds every client (the children inherit the
limit this script raises).
"""

import argparse
import asyncio
import gc
import http.client
import json
import math
import multiprocessing
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import (REPO_ROOT, Herald, RedisServer, http_get, parse_metrics,  # noqa: E402
                     raise_nofile, ws_connect)
from pg import PostgresServer  # noqa: E402

SURVIVORS = ("B", "C")
BACKOFF_BASE = 0.25   # s: herald.js backoffBase, the ceiling of its first reconnect delay
BACKOFF_CAP = 15.0    # s: herald.js backoffCap
SAMPLE_EVERY = 0.2    # s between two /metrics samples


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", help="CMake build dir holding gateway/herald "
                    "(default: build/ in the repo, else /tmp/bdev)")
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--rate", type=float, default=100.0,
                    help="durable messages per second, all channels together")
    ap.add_argument("--drain-seconds", type=int, default=10, help="HERALD_DRAIN_SECONDS of A")
    ap.add_argument("--workers", type=int, default=2,
                    help="client processes (one asyncio loop each)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds of live traffic between the last connect and SIGTERM")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs)")
    return ap.parse_args()


def find_binary(build_dir):
    dirs = [build_dir] if build_dir else [os.path.join(REPO_ROOT, "build"), "/tmp/bdev"]
    for d in dirs:
        path = os.path.join(d, "gateway", "herald")
        if os.path.exists(path):
            return os.path.abspath(path)
    sys.exit(f"no gateway/herald under {' or '.join(dirs)}: build first or pass --build-dir")


# ---------------------------------------------------------------------------------------------
# The processes under test


class Stack:
    """redis-server, PostgreSQL and gateways A, B, C in one temp dir; stop() kills by PID."""

    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="herald-drain-")
        self.redis = self.pg = None
        self.gw = {}

    def start(self):
        self.redis = RedisServer(self.tmp).start()
        self.pg = PostgresServer(self.tmp).init()
        self.pg.start().create_db()
        for name in ("A",) + SURVIVORS:   # A migrates; B and C start on the migrated schema
            self.gw[name] = self._gateway(name, migrate=(name == "A"))
        return self

    def _gateway(self, name, migrate):
        env = {
            "HERALD_INSTANCE_ID": f"drain-{name}",
            "HERALD_DATABASE_URL": self.pg.url,
            "HERALD_DRAIN_SECONDS": str(self.args.drain_seconds),
            # Every client comes from 127.0.0.1, which is not exempt from the per-IP limit
            # (1,000 by default; 0 is not allowed): set it far above N.
            "HERALD_MAX_CONNECTIONS_PER_IP": str(10 * self.args.clients + 1000),
            "HERALD_MAX_CONNECTIONS": str(10 * self.args.clients + 1000),
        }
        if migrate:
            env["HERALD_MIGRATE_ON_START"] = "1"
        h = Herald(self.tmp, self.redis.url, env=env)
        self.gw[name] = h  # registered before start, so stop() finds it if start fails
        h.start()
        h.wait_metric("herald_db_up", lambda v: v == 1)
        return h

    def heads(self):
        rows = self.pg.sql("SELECT name, last_seq FROM herald_channels WHERE name LIKE 'drain:%'")
        return {name: int(seq) for name, seq in (r.split("|") for r in rows.splitlines())}

    def pids(self):
        out = {f"herald {n}": h.pid for n, h in self.gw.items() if h.pid}
        if self.redis and self.redis.pid:
            out["redis"] = self.redis.pid
        return out

    def stop(self):
        for h in self.gw.values():
            h.kill()
        if self.pg and self.pg.proc:
            if self.pg.stop_fast() is None:
                self.pg.kill()
        if self.redis:
            self.redis.kill()
        if self.args.keep_tmp:
            print(f"temp dir kept: {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Publisher and sampler (threads of the main process)


class Publisher(threading.Thread):
    """Durable publishes through B's and C's POST /v1/messages, every 100 ms a batch of
    rate/10 messages over the channels in turn. Not through A, which is the one draining."""

    def __init__(self, ports, channels, rate):
        super().__init__(daemon=True)
        self.ports, self.channels, self.rate = ports, channels, rate
        self.conns = {}
        self.stop_event = threading.Event()
        self.published = self.failed_batches = 0
        self.next_channel = 0

    def post(self, port, names):
        body = json.dumps({"messages": [{"channel": c, "data": {"t": time.time()}}
                                        for c in names]})
        try:
            conn = self.conns.get(port) or http.client.HTTPConnection("127.0.0.1", port,
                                                                      timeout=10)
            self.conns[port] = conn
            conn.request("POST", "/v1/messages", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 201
        except (OSError, http.client.HTTPException):
            self.conns.pop(port, None)
            ok = False
        if ok:
            self.published += len(names)
        else:
            self.failed_batches += 1  # not fatal: the clients check against PostgreSQL's heads
        return ok

    def seed(self):
        """One message on every channel, so that every client starts with a seq and an epoch."""
        names = [f"drain:{k}" for k in range(self.channels)]
        for start in range(0, len(names), 1000):
            if not self.post(self.ports[0], names[start:start + 1000]):
                raise RuntimeError("the seed publish failed")

    def run(self):
        owed, tick, n = 0.0, 0.1, 0
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            owed += self.rate * tick
            count, owed = int(owed), owed - int(owed)
            names = [f"drain:{(self.next_channel + k) % self.channels}" for k in range(count)]
            self.next_channel = (self.next_channel + count) % self.channels
            if names:
                self.post(self.ports[n % len(self.ports)], names)
                n += 1
            next_at += tick
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))

    def stop(self):
        self.stop_event.set()
        self.join(15)


def cpu_seconds(pid):
    """utime + stime of a process, from /proc (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def tree_cpu_seconds(pid):
    """cpu_seconds of a process and its children (PostgreSQL's postmaster and backends)."""
    total = cpu_seconds(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return total
    for k in kids:
        total = (total or 0.0) + (cpu_seconds(k) or 0.0)
    return total


def machine_busy_seconds():
    """CPU seconds all cores spent outside idle and iowait since boot (/proc/stat): compared
    with our own processes it shows how much else ran on the machine."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """Every 200 ms: each gateway's herald_connections, herald_connections_total and
    herald_resumes_*_total, and the CPU time of every process of the run."""

    NAMES = ("herald_connections", "herald_connections_total", "herald_resumes_recovered_total",
             "herald_resumes_failed_total")

    def __init__(self, gateways, pids, pg_pid):
        super().__init__(daemon=True)
        self.gateways, self.pids, self.pg_pid = gateways, pids, pg_pid
        self.samples = []   # (t, {gateway: {metric: value}}, {process: cpu seconds})
        self.stop_event = threading.Event()

    def metrics(self, h):
        if not h.alive():
            return None
        try:
            status, _, body = http_get(h.base + "/metrics", timeout=1.0)
        except OSError:
            return None
        if status != 200:
            return None
        return {n: v for n, labels, v in parse_metrics(body.decode()) if n in self.NAMES}

    def run(self):
        while not self.stop_event.is_set():
            t = time.monotonic()
            m = {name: self.metrics(h) for name, h in self.gateways.items()}
            cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
            cpu["postgres"] = tree_cpu_seconds(self.pg_pid)
            cpu["machine"] = machine_busy_seconds()
            self.samples.append((t, m, cpu))
            self.stop_event.wait(max(0.0, t + SAMPLE_EVERY - time.monotonic()))

    def stop(self):
        self.stop_event.set()
        self.join(5)


# ---------------------------------------------------------------------------------------------
# The clients (in --workers child processes, one asyncio loop each)


class Client:
    """One simulated browser: its channel, its position (seq, epoch) and what it saw."""

    def __init__(self, i, channel, survivor, url):
        self.i, self.channel, self.survivor, self.url = i, channel, survivor, url
        self.seq = self.epoch = None
        self.lost = self.dups = self.received = 0
        self.closes = []           # (time, code, reason) of every close it saw
        self.resumes = []          # one dict per resume (normally one)
        self.dial_failures = 0
        self.ws = None
        self.resumed = False

    def on_message(self, m):
        seq = m.get("seq")
        if not isinstance(seq, int):
            return
        self.received += 1
        if seq <= self.seq:
            self.dups += 1         # herald.js would drop it silently; the server must not send it
        else:
            self.lost += seq - self.seq - 1
            self.seq = seq

    def result(self):
        return {"i": self.i, "survivor": self.survivor, "seq": self.seq, "lost": self.lost,
                "dups": self.dups, "received": self.received, "closes": self.closes,
                "resumes": self.resumes, "dial_failures": self.dial_failures,
                "channel": self.channel}


async def subscribe(c, ws, resume):
    """Send subscribe (with since/epoch when resuming, as herald.js does); read until
    `subscribed`, counting messages that come before it (the replay). Returns (reply, time
    of the first frame)."""
    frame = {"op": "subscribe", "channel": c.channel, "id": len(c.resumes) + 1}
    if resume:
        frame["since"] = c.seq
        if c.epoch is not None:
            frame["epoch"] = c.epoch
    await ws.send(json.dumps(frame))
    first = None
    while True:
        m = json.loads(await ws.recv())
        first = first or time.monotonic()
        if m.get("op") == "message" and c.seq is not None:
            c.on_message(m)
        elif m.get("op") == "subscribed":
            return m, first
        elif m.get("op") == "error":
            raise RuntimeError(f"client {c.i}: {m}")


async def first_connect(c, url, gate):
    """Connect to A and subscribe without `since`; a few retries (a loaded machine)."""
    for attempt in range(5):
        ws = None
        try:
            async with gate:  # bounds the handshakes in flight (A's listen backlog)
                ws = await ws_connect(url, compression=None, open_timeout=60)
                reply, _ = await asyncio.wait_for(subscribe(c, ws, resume=False), 60)
            c.ws, c.seq, c.epoch = ws, reply["seq"], reply.get("epoch")
            return True
        except Exception:  # noqa: BLE001 - refused, reset, timed out: try again
            abort(ws)
            await asyncio.sleep(0.5 * (attempt + 1))
    return False


def abort(ws):
    """Drop a connection at once (no close handshake)."""
    if ws is not None and ws.transport is not None:
        ws.transport.abort()


async def reconnect(c):
    """herald.js after a close: a delay drawn from [0, ceiling) with the ceiling doubling per
    failed attempt (250 ms first), dial the survivor, resume. Returns the new socket."""
    t_close = c.closes[-1][0]
    attempt = 0
    while True:
        await asyncio.sleep(random.random() * min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt))
        attempt += 1
        t_dial, ws = time.monotonic(), None
        try:
            ws = await ws_connect(c.url, compression=None, open_timeout=60)
            t_open = time.monotonic()
            reply, t_first = await asyncio.wait_for(subscribe(c, ws, resume=True), 60)
        except Exception:  # noqa: BLE001 - refused (503), reset, timed out: back off
            c.dial_failures += 1
            abort(ws)
            continue
        record_resume(c, reply, t_close, t_dial, t_open, t_first)
        return ws


def record_resume(c, reply, t_close, t_dial, t_open, t_first):
    r = {"t_close": t_close, "t_dial": t_dial, "t_open": t_open, "t_first": t_first,
         "t_subscribed": time.monotonic(), "recovered": reply.get("recovered"),
         "replayed": reply.get("replayed", 0), "code": reply.get("code"),
         "head": reply.get("seq")}
    if reply.get("recovered") is not True:
        # herald.js reloads and goes on from the server's head: the messages between are lost
        head = reply.get("seq") or 0
        c.lost += max(0, head - c.seq)
        c.seq = max(c.seq, head)
    elif reply.get("seq") != c.seq:
        r["head_mismatch"] = True
    if reply.get("epoch") is not None:
        c.epoch = reply["epoch"]
    c.resumes.append(r)
    c.resumed = True


async def client_life(c, a_url, gate, connected, stopping):
    if not await first_connect(c, a_url, gate):
        return
    connected.append(c)
    while True:
        try:
            async for raw in c.ws:
                c.on_message(json.loads(raw))
        except Exception:  # noqa: BLE001 - ConnectionClosedError and friends: a close
            pass
        if stopping.is_set():
            return
        c.closes.append((time.monotonic(), c.ws.close_code, c.ws.close_reason))
        c.resumed = False
        c.ws = await reconnect(c)


async def watch_lag(lags, stopping):
    """How late the loop wakes from 50 ms sleeps: when it lags, every client time it takes
    (closes, dials, replies) is late by as much, so the report shows it."""
    while not stopping.is_set():
        t = time.monotonic()
        await asyncio.sleep(0.05)
        lags.append((t, time.monotonic() - t - 0.05))


async def worker_main(conn, specs, a_url, seed):
    # Thousands of live connections make every full pass of the cyclic collector take 100-400
    # ms, during which no client reads, and in a test run these passes freed nothing. The run
    # is bounded, so the collector is off: it would only add client-side latency.
    gc.disable()
    random.seed(seed)
    gate = asyncio.Semaphore(100)
    stopping = asyncio.Event()
    clients = [Client(*s) for s in specs]
    connected = []
    t0 = time.monotonic()
    tasks = [asyncio.create_task(client_life(c, a_url, gate, connected, stopping))
             for c in clients]
    while len(connected) < len(clients) and not all(t.done() for t in tasks):
        await asyncio.sleep(0.1)
    conn.send(("connected", len(connected), len(clients) - len(connected), time.monotonic() - t0))
    lags = []
    lag_task = asyncio.create_task(watch_lag(lags, stopping))

    # Until the parent says "final" (with the heads): tell it once every client has resumed.
    final = asyncio.create_task(asyncio.to_thread(conn.recv))
    told = False
    while not final.done():
        if not told and connected and all(c.resumed for c in connected):
            conn.send(("resumed", len(connected)))
            told = True
        await asyncio.sleep(0.1)
    _, heads, wait_s = final.result()

    # Give the last messages time to arrive: every client should reach its channel's head.
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(c.seq < heads.get(c.channel, 0) for c in connected):
        await asyncio.sleep(0.1)
    stopping.set()
    for c in connected:
        abort(c.ws)
    results = [c.result() for c in clients]
    for r, c in zip(results, clients):
        r["head"] = heads.get(c.channel)
        r["connected"] = c in connected
    conn.send(("results", results, lags))
    lag_task.cancel()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def worker_entry(conn, specs, a_url, seed):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and kills us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler (inherited by fork)
    asyncio.run(worker_main(conn, specs, a_url, seed))
    conn.close()


# ---------------------------------------------------------------------------------------------
# Running it


class Interrupted(Exception):
    pass


def on_sigterm(signum, frame):
    raise Interrupted(f"signal {signum}")


def client_specs(args, stack):
    """(index, channel, survivor name, survivor URL) for every client, dealt to the workers."""
    rng = random.Random(args.seed)
    specs = []
    for i in range(args.clients):
        s = rng.choice(SURVIVORS)
        specs.append((i, f"drain:{i % args.channels}", s, stack.gw[s].ws_url))
    return [specs[w::args.workers] for w in range(args.workers)]


def start_workers(args, stack):
    ctx = multiprocessing.get_context("fork")   # forked before any thread or loop exists
    workers = []
    for w, specs in enumerate(client_specs(args, stack)):
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=worker_entry, name=f"drain-client-{w}",
                        args=(child_end, specs, stack.gw["A"].ws_url, args.seed + w))
        p.start()
        child_end.close()
        workers.append((p, parent_end))
    return workers


def wait_all(workers, kind, timeout):
    """The next message of `kind` from every worker; missing ones are None after `timeout`."""
    got = [None] * len(workers)
    deadline = time.monotonic() + timeout
    while any(g is None for g in got) and time.monotonic() < deadline:
        for k, (p, conn) in enumerate(workers):
            if got[k] is None and conn.poll(0.05):
                msg = conn.recv()
                if msg[0] == kind:
                    got[k] = msg
            if got[k] is None and not p.is_alive():
                raise RuntimeError(f"client worker {p.name} died (exit {p.exitcode})")
    return got


def stop_workers(workers, graceful):
    for p, conn in workers:
        if graceful:
            p.join(3)   # after sending its results a worker exits on its own
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
        p.join(5)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join(5)


def wait_exit_in_thread(h, out):
    """Record when and how gateway `h` exits, without blocking the main thread."""
    def wait():
        out["status"] = h.proc.wait()
        out["t"] = time.monotonic()
    t = threading.Thread(target=wait, daemon=True)
    t.start()
    return t


def run(args, stack, workers_out):
    stack.start()
    survivors = [stack.gw[s].port for s in SURVIVORS]
    pub = Publisher(survivors, args.channels, args.rate)
    pub.seed()
    workers = start_workers(args, stack)
    workers_out.extend(workers)
    pub.start()
    print(f"connecting {args.clients} clients to A ({args.workers} worker processes) ...",
          flush=True)
    connected = wait_all(workers, "connected", 120 + args.clients / 20)
    if any(m is None for m in connected):
        raise RuntimeError("the clients did not finish connecting")
    n_ok = sum(m[1] for m in connected)
    print(f"{n_ok} connected ({sum(m[2] for m in connected)} failed) in "
          f"{max(m[3] for m in connected):.1f} s; {args.settle:.0f} s of live traffic, then "
          f"SIGTERM to A (drain {args.drain_seconds} s)", flush=True)

    pids = stack.pids()
    pids.update({p.name: p.pid for p, _ in workers})
    pids["main (publisher)"] = os.getpid()
    sampler = Sampler(stack.gw, pids, stack.pg.pid)
    sampler.start()
    time.sleep(args.settle)

    a_exit = {}
    t_term = time.monotonic()
    stack.gw["A"].signal(signal.SIGTERM)
    waiter = wait_exit_in_thread(stack.gw["A"], a_exit)
    resumed = wait_all(workers, "resumed", args.drain_seconds + 60)
    t_resumed = time.monotonic()
    waiter.join(max(0.0, t_term + args.drain_seconds + 30 - time.monotonic()))
    time.sleep(2)   # two more seconds of live traffic on the survivors
    pub.stop()
    sampler.stop()
    heads = stack.heads()
    for _, conn in workers:
        conn.send(("final", heads, 20.0))
    got = [m for m in wait_all(workers, "results", 60) if m]
    results = [r for m in got for r in m[1]]
    lags = [x for m in got for x in m[2]]
    return {"t_term": t_term, "t_resumed": t_resumed, "a_exit": a_exit, "results": results,
            "lags": lags, "heads": heads, "samples": sampler.samples, "publisher": pub,
            "n_connected": n_ok, "all_resumed": all(m is not None for m in resumed)}


# ---------------------------------------------------------------------------------------------
# Analysis and report


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]   # nearest rank


def buckets(times, width):
    """{bucket index: count} of times (seconds after SIGTERM) in buckets of `width` s."""
    out = {}
    for t in times:
        k = int(t // width)
        out[k] = out.get(k, 0) + 1
    return out


def rate_stats(times):
    """Peak per second (1 s buckets), peak per 100 ms (scaled to /s) and mean per second
    between the first and the last event."""
    if not times:
        return {"n": 0, "first": 0, "last": 0, "peak_1s": 0, "peak_100ms": 0, "mean": 0}
    span = max(times) - min(times)
    return {"n": len(times), "first": min(times), "last": max(times),
            "peak_1s": max(buckets(times, 1.0).values()),
            "peak_100ms": 10 * max(buckets(times, 0.1).values()),
            "mean": len(times) / span if span > 0 else float("inf")}


def metric_rates(samples, t_term, gateway, name):
    """(t after SIGTERM, per-second rate) of counter `name` of `gateway` between samples."""
    out, prev = [], None
    for t, m, _ in samples:
        v = (m.get(gateway) or {}).get(name)
        if v is not None and prev is not None and t > prev[0]:
            out.append((t - t_term, (v - prev[1]) / (t - prev[0])))
        prev = (t, v) if v is not None else prev
    return out


def server_resume_rates(run_out):
    """Resumes/s the survivors counted together, per 200 ms sample, while they were resuming."""
    per = [dict(metric_rates(run_out["samples"], run_out["t_term"], s,
                             "herald_resumes_recovered_total")) for s in SURVIVORS]
    times = sorted(set(per[0]) & set(per[1]))
    rates = [per[0][t] + per[1][t] for t in times if t > 0]
    while rates and rates[-1] == 0:
        rates.pop()
    while rates and rates[0] == 0:
        rates.pop(0)
    return rates


def gauge_drops(samples, t_term, gateway):
    """(t after SIGTERM, per-second fall) of `gateway`'s herald_connections between samples:
    the closes as the draining gateway counts them (a close handshake completed)."""
    out, prev = [], None
    for t, m, _ in samples:
        v = (m.get(gateway) or {}).get("herald_connections")
        if v is not None and prev is not None and t > t_term:
            out.append((t - t_term, (prev[1] - v) / (t - prev[0])))
        prev = (t, v) if v is not None else prev
    return out


def gauge_at(samples, t_term, gateway, name, at):
    """Value of `name` of `gateway` in the last sample taken at or before `at` s after SIGTERM."""
    value = None
    for t, m, _ in samples:
        if t - t_term > at:
            break
        value = (m.get(gateway) or {}).get(name)   # None once the gateway is gone
    return value


def cpu_during(samples, t0, t1):
    """CPU seconds per process between t0 and t1 (the samples nearest inside the interval)."""
    inside = [s for s in samples if t0 - SAMPLE_EVERY <= s[0] <= t1 + SAMPLE_EVERY]
    if len(inside) < 2:
        return {}, 0.0
    first, last = inside[0], inside[-1]
    out = {}
    for name, c0 in first[2].items():
        # a process that exited meanwhile: its last sample while alive
        c1 = next((s[2][name] for s in reversed(inside) if s[2].get(name) is not None), None)
        if c0 is not None and c1 is not None:
            out[name] = c1 - c0
    return out, last[0] - first[0]


def correctness(run_out):
    res = run_out["results"]
    resumed = [r for r in res if r["resumes"]]
    behind = [r for r in res if r["connected"] and r["head"] is not None and r["seq"] < r["head"]]
    return {
        "clients": len(res),
        "never_connected": sum(1 for r in res if not r["connected"]),
        "resumed": len(resumed),
        "never_resumed": sum(1 for r in res if r["connected"] and not r["resumes"]),
        "refused": sum(1 for r in resumed for x in r["resumes"] if x["recovered"] is not True),
        "lost": sum(r["lost"] for r in res) + sum(r["head"] - r["seq"] for r in behind),
        "behind_at_end": len(behind),
        "dups": sum(r["dups"] for r in res),
        "received": sum(r["received"] for r in res),
        "replayed": sum(x["replayed"] or 0 for r in resumed for x in r["resumes"]),
        "head_mismatch": sum(1 for r in resumed for x in r["resumes"] if x.get("head_mismatch")),
        "extra_resumes": sum(len(r["resumes"]) - 1 for r in resumed),
        "dial_failures": sum(r["dial_failures"] for r in res),
        "close_codes": count_codes(res),
    }


def count_codes(res):
    codes = {}
    for r in res:
        for _, code, reason in r["closes"][:1]:
            key = f"{code} {reason!r}" if reason else str(code)
            codes[key] = codes.get(key, 0) + 1
    return codes


def timing(run_out, args):
    t_term = run_out["t_term"]
    res = run_out["results"]
    first = [r["resumes"][0] for r in res if r["resumes"]]
    closes = [r["closes"][0][0] - t_term for r in res if r["closes"]]
    per_survivor = {s: [x["t_subscribed"] - t_term for r in res if r["survivor"] == s
                        for x in r["resumes"][:1]] for s in SURVIVORS}
    a = run_out["a_exit"]
    return {
        "closes": rate_stats(closes),
        "resumes": rate_stats([x["t_subscribed"] - t_term for x in first]),
        "per_survivor": {s: rate_stats(t) for s, t in per_survivor.items()},
        "handshake_ms": [1000 * (x["t_open"] - x["t_dial"]) for x in first],
        "resume_ms": [1000 * (x["t_subscribed"] - x["t_dial"]) for x in first],
        "first_frame_ms": [1000 * (x["t_first"] - x["t_dial"]) for x in first],
        "outage_ms": [1000 * (x["t_subscribed"] - x["t_close"]) for x in first],
        "a_exit_s": a["t"] - t_term if "t" in a else None,
        "a_status": a.get("status"),
        "expected_rate": args.clients / (0.8 * args.drain_seconds),
        "close_times": closes,
        "survivor_times": per_survivor,
    }


def print_table(run_out, tm, args):
    """One line per second after SIGTERM: closes seen, resumes done per survivor, and the
    survivors' connections gauge and accept rate from /metrics."""
    samples, t_term = run_out["samples"], run_out["t_term"]
    closes = buckets(tm["close_times"], 1.0)
    per = {s: buckets(t, 1.0) for s, t in tm["survivor_times"].items()}
    accept = {s: metric_rates(samples, t_term, s, "herald_connections_total") for s in SURVIVORS}
    last = int(max([0.0] + tm["close_times"] + sum(tm["survivor_times"].values(), []))) + 1
    print("\n  s | closes | resumed B | resumed C | conns A | conns B | conns C | accepts/s B+C"
          " (peak of 200 ms samples)")
    for k in range(last + 1):
        peak = sum(max([r for t, r in accept[s] if k <= t < k + 1] or [0]) for s in SURVIVORS)
        g = {n: gauge_at(samples, t_term, n, "herald_connections", k + 1) for n in stack_names()}
        print(f"{k:3d} | {closes.get(k, 0):6d} | {per['B'].get(k, 0):9d} | {per['C'].get(k, 0):9d}"
              f" | {fmt(g['A']):>7} | {fmt(g['B']):>7} | {fmt(g['C']):>7} | {peak:8.0f}")


def stack_names():
    return ("A",) + SURVIVORS


def fmt(v):
    return "-" if v is None else f"{v:.0f}"


def report(args, run_out):
    c, tm = correctness(run_out), timing(run_out, args)
    cl, rs = tm["closes"], tm["resumes"]
    w = args.drain_seconds
    print(f"\n== drain of A: {args.clients} clients on {args.channels} channels, "
          f"HERALD_DRAIN_SECONDS={w}, {args.rate:.0f} msg/s, {os.cpu_count()} cores ==")
    print(f"closes seen by the clients: {cl['n']}, from {cl['first']:.2f} s to {cl['last']:.2f} s"
          f" after SIGTERM (spread window {0.8 * w:.1f} s)")
    print(f"  per second: peak {cl['peak_1s']}, peak of 100 ms buckets {cl['peak_100ms']}/s, "
          f"mean {cl['mean']:.0f}/s; expected N/(0.8 x window) = {tm['expected_rate']:.0f}/s")
    drops = gauge_drops(run_out["samples"], run_out["t_term"], "A")
    during = [r for t, r in drops if t <= 0.8 * w + SAMPLE_EVERY]
    if during:
        print(f"  seen by A (its herald_connections gauge, 200 ms samples): peak "
              f"{max(during):.0f}/s, mean {sum(during) / len(during):.0f}/s over the first "
              f"{0.8 * w:.0f} s")
    ax = tm["a_exit_s"]
    print("gateway A exited " + (f"{ax:.2f} s after SIGTERM with status {tm['a_status']}"
                                 f" ({'within' if ax <= w else 'AFTER'} the {w} s window)"
                                 if ax is not None else "NOT (killed at the end)"))
    print(f"resumes completed on the survivors: {rs['n']} (B {tm['per_survivor']['B']['n']}, "
          f"C {tm['per_survivor']['C']['n']}), from {rs['first']:.2f} s to {rs['last']:.2f} s; "
          f"peak {rs['peak_1s']}/s (100 ms: {rs['peak_100ms']}/s), mean {rs['mean']:.0f}/s")
    served = server_resume_rates(run_out)
    if served:
        print(f"  seen by B+C (herald_resumes_recovered_total, 200 ms samples): peak "
              f"{max(served):.0f}/s, mean {sum(served) / len(served):.0f}/s while non-zero")
    for s in SURVIVORS:
        st = tm["per_survivor"][s]
        acc = max([r for _, r in metric_rates(run_out["samples"], run_out["t_term"], s,
                                              "herald_connections_total")] or [0])
        print(f"  {s}: peak {st['peak_1s']}/s, mean {st['mean']:.0f}/s; /metrics accept rate "
              f"peak {acc:.0f}/s (200 ms samples)")
    for label, key in (("dial -> handshake done", "handshake_ms"),
                       ("dial -> first frame after resume", "first_frame_ms"),
                       ("dial -> subscribed (resume latency)", "resume_ms"),
                       ("close -> subscribed (incl. 0-250 ms jitter)", "outage_ms")):
        v = tm[key]
        print(f"  {label}: p50 {pct(v, 50):.1f} ms, p99 {pct(v, 99):.1f} ms, "
              f"max {max(v or [float('nan')]):.1f} ms")
    t_end = run_out["t_term"] + max(cl["last"], rs["last"])
    cpu, span = cpu_during(run_out["samples"], run_out["t_term"], t_end)
    if span:
        machine = cpu.pop("machine", 0.0)
        print(f"CPU during the drain ({span:.1f} s, % of one core): " +
              ", ".join(f"{n} {100 * v / span:.0f}%" for n, v in cpu.items()) +
              f"; whole machine {100 * machine / span:.0f}% of {100 * os.cpu_count()}%, of which"
              f" other processes {100 * (machine - sum(cpu.values())) / span:.0f}%")
    lags = [lag * 1000 for t, lag in run_out["lags"] if run_out["t_term"] <= t <= t_end]
    print(f"client loop lag during the drain (late wake-ups of 50 ms sleeps): p50 "
          f"{pct(lags, 50):.0f} ms, p99 {pct(lags, 99):.0f} ms, max {max(lags or [0]):.0f} ms "
          "(client-side times are late by as much)")
    print_table(run_out, tm, args)
    pub = run_out["publisher"]
    print(f"\ncorrectness: {c['resumed']}/{c['clients']} clients resumed "
          f"({c['never_connected']} never connected, {c['never_resumed']} never resumed, "
          f"{c['refused']} resumes refused, {c['extra_resumes']} extra resumes, "
          f"{c['dial_failures']} failed dials)")
    print(f"  first close codes: {c['close_codes']}")
    print(f"  messages: {pub.published} published ({pub.failed_batches} batches failed), "
          f"{c['received']} received, {c['replayed']} replayed in resumes; "
          f"lost {c['lost']} ({c['behind_at_end']} clients behind the head at the end), "
          f"duplicated {c['dups']}, resume head mismatches {c['head_mismatch']}")
    return failures(c, tm, args, run_out)


def failures(c, tm, args, run_out):
    out = []
    if c["never_connected"] or c["clients"] != args.clients:
        out.append(f"{args.clients - c['clients'] + c['never_connected']} clients never connected")
    for key in ("never_resumed", "refused", "lost", "dups", "head_mismatch"):
        if c[key]:
            out.append(f"{key}: {c[key]}")
    if tm["a_status"] is None:
        out.append(f"A did not exit within {args.drain_seconds + 30} s of SIGTERM")
    elif tm["a_status"] != 0:
        out.append(f"A exited with status {tm['a_status']}")
    return out


def main():
    args = parse_args()
    os.environ["HERALD_BIN"] = find_binary(args.build_dir)
    # Each gateway and each client process needs about one descriptor per connection.
    raise_nofile(max(20000, args.clients + 2000))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < args.clients + 1000:
        sys.exit(f"open-file limit {soft} is too low for {args.clients} clients on one gateway")
    signal.signal(signal.SIGTERM, on_sigterm)
    # also when started from a shell that ignores SIGINT for background jobs
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stack, workers, finished = Stack(args), [], False
    try:
        run_out = run(args, stack, workers)
        finished = True
        bad = report(args, run_out)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({exc!r}): stopping everything", file=sys.stderr)
        return 130
    finally:
        stop_workers(workers, graceful=finished)
        stack.stop()
    if bad:
        print("\nFAIL: " + "; ".join(bad))
        return 1
    print("\nOK: every client got every message of its channel once, in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
