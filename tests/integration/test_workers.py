#!/usr/bin/python3
"""HERALD_WORKERS: one supervisor, N full instances sharing the port with SO_REUSEPORT.
Connections are spread over the workers, each with its own Redis subscription; every client
gets every message; a worker killed with SIGKILL is restarted and only its clients are cut
off; SIGTERM to the supervisor drains every worker (close 1001) and exits 0; a port that
cannot be bound makes the supervisor give up instead of restarting forever. The per-IP
connection limit counts across the workers, and a killed worker's connections stop counting."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import recv_json, subscribe  # noqa: E402

import websockets  # noqa: E402


def children(pid):
    """PIDs of the direct children of pid (the workers of a supervisor)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(p) for p in f.read().split())
    except FileNotFoundError:
        return []


def instances(h, tries=40):
    """The instance names that answer /healthz on the shared port."""
    seen = set()
    for _ in range(tries):
        _, _, body = h.get("/healthz")
        seen.add(json.loads(body)["instance"])
    return seen


class WorkersTest(harness.HeraldTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.h = self.start_herald(self.redis, "--workers", "2", "--instance-id", "gw",
                                   "--drain-seconds", "5")
        await asyncio.to_thread(self.h.wait_ready)
        await harness.async_wait_for(lambda: len(children(self.h.pid)) == 2, 10, 0.05,
                                     "two workers")
        # both answer on the one port (the kernel spreads connections over their sockets)
        await harness.async_wait_for(lambda: instances(self.h) == {"gw-w0", "gw-w1"}, 20, 0.1,
                                     "both workers answering /healthz")

    async def connect_many(self, n, channel):
        clients = []
        for _ in range(n):
            ws = await self.connect(self.h)
            await subscribe(ws, channel)
            clients.append(ws)
        return clients

    async def test_every_client_of_every_worker_gets_every_message(self):
        clients = await self.connect_many(40, "fleet")
        # each worker holds its own Redis subscription to the channel
        await harness.async_wait_for(lambda: self.redis.numsub("fleet") == 2, 10, 0.05,
                                     "a subscription per worker")
        for i in range(20):
            self.assertEqual(self.redis.publish("fleet", json.dumps({"i": i})), 2)
        for ws in clients:
            got = [(await recv_json(ws))["data"]["i"] for _ in range(20)]
            self.assertEqual(got, list(range(20)))

    async def test_a_killed_worker_is_restarted_and_only_its_clients_are_cut_off(self):
        clients = await self.connect_many(40, "k")
        before = children(self.h.pid)
        victim = before[0]
        os.kill(victim, 9)
        await harness.async_wait_for(
            lambda: len(children(self.h.pid)) == 2 and victim not in children(self.h.pid),
            15, 0.05, "the supervisor to start a new worker")
        await harness.async_wait_for(lambda: instances(self.h) == {"gw-w0", "gw-w1"}, 20, 0.1,
                                     "both workers answering again")
        # the survivors' clients still receive; the victim's saw their connection drop
        self.redis.publish("k", '{"after":1}')
        alive, dropped = 0, 0
        for ws in clients:
            try:
                m = await recv_json(ws, timeout=5)
                self.assertEqual(m["data"], {"after": 1})
                alive += 1
            except (websockets.ConnectionClosed, ConnectionError):
                dropped += 1
        self.assertEqual(alive + dropped, 40)
        self.assertGreater(alive, 0)
        self.assertGreater(dropped, 0)
        # a client of the dead worker reconnects and is served by one of the two
        ws = await self.connect(self.h)
        await subscribe(ws, "k")
        await harness.async_wait_for(lambda: self.redis.numsub("k") >= 1, 10, 0.05, "resubscribed")
        self.assertIn("restarting", self.h.log_text())

    async def test_sigterm_drains_every_worker_and_exits_zero(self):
        clients = await self.connect_many(20, "d")
        workers = children(self.h.pid)
        self.h.signal(15)
        codes = []
        for ws in clients:
            try:
                await asyncio.wait_for(ws.wait_closed(), 10)
            finally:
                codes.append(ws.close_code)
        self.assertEqual(codes, [1001] * len(clients))
        self.assertEqual(await asyncio.to_thread(self.h.wait_exit, 15), 0)
        for pid in workers:  # reaped by the supervisor before it exited
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"worker {pid} still there")


def per_worker(h, metric, workers):
    """{instance: value of metric} of every worker: /metrics is answered by whichever worker
    accepts the connection, so ask until each one has."""
    seen = {}
    for _ in range(200):
        text = h.metrics_text()
        info = next(labels for name, labels, _ in harness.parse_metrics(text)
                    if name == "herald_info")
        seen[info["instance"]] = harness.metric_value(text, metric)
        if len(seen) == workers:
            return seen
    raise AssertionError(f"only {sorted(seen)} answered /metrics")


def worker_of(h, client, pids):
    """The worker (one of pids) holding the server side of a RawWS client's connection."""
    port = client.sock.getsockname()[1]
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    inode = next(r[9] for r in rows if r[3] == "01"  # established
                 and int(r[1].split(":")[1], 16) == h.port and int(r[2].split(":")[1], 16) == port)
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                pass
    raise AssertionError(f"no worker holds the connection from port {port}")


class WorkersPerIpLimitTest(harness.HeraldTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.h = self.start_herald(self.redis, "--workers", "3", "--instance-id", "gw",
                                   "--max-connections-per-ip", "5")
        await harness.async_wait_for(lambda: len(children(self.h.pid)) == 3, 10, 0.05,
                                     "three workers")
        await harness.async_wait_for(lambda: len(instances(self.h)) == 3, 20, 0.1,
                                     "every worker answering /healthz")

    async def wait_connections(self, n):
        """A worker counts a connection only after its 101 has gone out, so another worker may
        still let one more in meanwhile: wait until all n are counted."""
        await harness.async_wait_for(
            lambda: sum(per_worker(self.h, "herald_connections", 3).values()) == n, 10, 0.1,
            f"{n} connections open")

    def assert_refused(self):
        with self.assertRaises(harness.HandshakeRefused) as cm:
            harness.RawWS(self.h.port).close()
        self.assertEqual(cm.exception.status, 429)

    async def test_the_limit_counts_every_worker_and_a_killed_ones_connections_leave(self):
        h = self.h
        clients = [self.raw_ws(h) for _ in range(5)]
        await self.wait_connections(5)
        # the sixth is refused whichever worker it lands on: go on until each one has refused
        before = per_worker(h, "herald_rejected_connections_total", 3)
        for _ in range(10):
            for _ in range(10):
                self.assert_refused()
            after = per_worker(h, "herald_rejected_connections_total", 3)
            if all(after[w] > before[w] for w in before):
                break
        else:
            self.fail(f"some worker never refused a handshake: {before} -> {after}")
        # closing one frees a place, on whichever worker
        clients.pop().close()
        await self.wait_connections(4)
        clients.append(self.raw_ws(h))
        await self.wait_connections(5)
        self.assert_refused()
        # a worker killed with connections open: once it is restarted they no longer count
        workers = children(h.pid)
        victim = worker_of(h, clients[0], workers)
        lost = sum(worker_of(h, c, workers) == victim for c in clients)
        os.kill(victim, 9)
        await harness.async_wait_for(
            lambda: len(children(h.pid)) == 3 and victim not in children(h.pid), 15, 0.05,
            "the supervisor to start a new worker")
        for _ in range(lost):
            self.raw_ws(h)
        await self.wait_connections(5)
        self.assert_refused()
        self.assertIn("restarting", h.log_text())


class WorkersCannotBindTest(harness.HeraldTestCase):
    async def test_a_port_in_use_makes_the_supervisor_give_up(self):
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        self.addCleanup(blocker.close)
        port = blocker.getsockname()[1]
        redis = self.start_redis()
        t0 = time.monotonic()
        argv = [harness.herald_bin(), "--listen", f"127.0.0.1:{port}", "--redis-url", redis.url,
                "--workers", "2"]
        r = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True,
                                    timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr[-2000:])
        self.assertLess(time.monotonic() - t0, 30)
        self.assertIn("listen_failed", r.stderr)
        self.assertIn("right after starting", r.stderr)
        # a lone process on a used port fails at once too (lws 4.1 would retry silently)
        r = await asyncio.to_thread(subprocess.run, argv[:-2], capture_output=True, text=True,
                                    timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr[-2000:])
        self.assertIn("listen_failed", r.stderr)


if __name__ == "__main__":
    harness.main()
