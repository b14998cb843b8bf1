#!/usr/bin/python3
"""Redis Sentinel (issue 15, point 1): HERALD_REDIS_URL=redis-sentinel://s1,s2,s3/<master>.

A master, a replica and three real sentinels; a gateway on PostgreSQL. Durable messages are
published through the gateway the whole time (PostgreSQL first, then PUBLISH on the master),
raw messages straight to whichever node the sentinels name master, and /readyz is polled. The
master is killed with SIGKILL; the sentinels promote the replica and the gateway follows:

- every sequenced message reaches every client once, in order (what was published while no
  master was reachable comes from PostgreSQL);
- every raw message that Redis delivered to the gateway's subscription (PUBLISH answered 1)
  reaches the client; the ones lost are exactly those PUBLISHed to no subscriber or not at all
  during the failover, and they are counted;
- /readyz says 503 from the kill until a master is back, never 200 in between, then 200.

Then sentinels that lie or misbehave, at the byte level (fake sentinels that name a replica,
answer errors, nils, wrong types, bad addresses, or nothing): the gateway stays alive, uses
none of it, and ends up on the master a real sentinel names."""

import asyncio
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from durable_clients import Client, Publisher  # noqa: E402
from harness import RedisConn, RedisError, async_wait_for, http_get, main, ws_connect  # noqa: E402
from pg import HistoryTestCase  # noqa: E402
from redis_ha import (MASTER_NAME, FakeRedis, resp_array, role, sentinel_url,  # noqa: E402
                      start_sentinel_group)

SEQ = "ha:orders"
RAW = "ha:ticker"
CLIENTS = 4
WAIT = 60
VERBOSE = bool(os.environ.get("HERALD_TEST_VERBOSE"))


class RawPublisher(threading.Thread):
    """PUBLISHes {"r": k} on RAW to the node the sentinels name master now, every 20 ms.
    sent[k] = (time, receivers PUBLISH reported, or None when it failed)."""

    def __init__(self, sentinels):
        super().__init__(daemon=True)
        self.sentinels = sentinels
        self.sent = {}
        self.halt = threading.Event()

    def master(self):
        for s in self.sentinels:
            port = s.master_port()
            if port:
                return port
        return None

    def run(self):
        k = 0
        while not self.halt.is_set():
            port, n = self.master(), None
            if port:
                try:
                    with RedisConn(port, timeout=1.0) as c:
                        n = c.publish(RAW, json.dumps({"r": k}))
                except (OSError, ConnectionError, RedisError):
                    n = None
            self.sent[k] = (time.monotonic(), n)
            k += 1
            self.halt.wait(0.02)


class ReadyzPoller(threading.Thread):
    """GET /readyz every 20 ms: [(time the request was sent, status or None)]."""

    def __init__(self, herald):
        super().__init__(daemon=True)
        self.herald = herald
        self.seen = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            t = time.monotonic()
            try:
                status = self.herald.readyz()
            except OSError:
                status = None
            self.seen.append((t, status))
            self.halt.wait(0.02)


class SentinelTest(HistoryTestCase):
    def setUp(self):
        super().setUp()
        self.phase = "setup"
        self.pg = self.start_postgres()

    def start_gateway(self, url):
        h = self.start_herald(url, "--database-url", self.pg.url, "--migrate-on-start",
                              "--heartbeat-ms", "200")
        h.wait_metric("herald_db_up", lambda v: v == 1)
        return h

    def log(self, text):
        if VERBOSE:
            sys.stderr.write(f"\n[{time.strftime('%H:%M:%S')}] {text}")

    async def until(self, predicate, what, timeout=WAIT):
        return await async_wait_for(predicate, timeout, interval=0.02, what=what)

    async def test_master_killed_while_publishing(self):
        master, (replica,), sentinels = start_sentinel_group(self)
        h = self.start_gateway(sentinel_url(sentinels))
        await asyncio.to_thread(h.wait_ready, WAIT)
        self.assertEqual(h.metric("herald_redis_shard_up",
                                  {"shard": "0", "server": f"sentinel/{MASTER_NAME}"}), 1)

        clients = [Client(i, h.ws_url, self, SEQ) for i in range(CLIENTS)]
        for c in clients:
            c.task = asyncio.create_task(c.run())
            self.addAsyncCleanup(c.stop)
        raw_ws = await ws_connect(h.ws_url)
        self.addAsyncCleanup(raw_ws.close)
        await raw_ws.send(json.dumps({"op": "subscribe", "channel": RAW}))
        raw_got = []

        async def read_raw():
            async for frame in raw_ws:
                m = json.loads(frame)
                if m.get("op") == "message":
                    raw_got.append(m["data"]["r"])
        reader = asyncio.create_task(read_raw())
        publisher = Publisher([("herald", h.base)], SEQ, wait=WAIT, interval=0.02)
        self.addCleanup(publisher.halt.set)
        self.assertTrue(await asyncio.to_thread(publisher.publish, 0))
        await self.until(lambda: all(c.subscribed for c in clients), "clients subscribed")
        await self.until(lambda: master.numsub(RAW) == 1, "the raw channel subscribed")
        raw_pub, readyz = RawPublisher(sentinels), ReadyzPoller(h)
        for t in (publisher, raw_pub, readyz):
            t.start()
            self.addCleanup(t.halt.set)
        self.phase = "live"
        await self.until(lambda: publisher.head >= 30 and len(raw_got) >= 30, "traffic flowing")

        # ---- the failover
        self.phase = "failover"
        killed_at = time.monotonic()
        head_at_kill = publisher.head
        master.kill()
        await self.until(lambda: role(replica.port) == "master", "the replica promoted")
        promoted_at = time.monotonic()  # before it, no node would say it is a master
        await self.until(lambda: sentinels[0].master_port() == replica.port,
                         "the sentinels naming the new master")
        switched_at = time.monotonic()
        await self.until(lambda: replica.numsub(RAW) == 1, "the gateway subscribed on the new master")
        resubscribed_at = time.monotonic()
        await self.until(lambda: publisher.head >= head_at_kill + 30, "durable publishes go on")
        after = len(raw_pub.sent)
        await self.until(lambda: len(raw_pub.sent) >= after + 30, "raw publishes go on")
        self.log(f"after the kill: replica promoted at {promoted_at - killed_at:.2f} s, named by "
                 f"the sentinels at {switched_at - killed_at:.2f} s, the gateway subscribed there "
                 f"at {resubscribed_at - killed_at:.2f} s")

        for t in (publisher, raw_pub, readyz):
            t.halt.set()
            await asyncio.to_thread(t.join, WAIT)
        self.assertIsNone(publisher.fatal)
        await asyncio.to_thread(h.wait_ready, WAIT)

        # sequenced: every message to every client, once, in order
        head = max(publisher.seq_of.values())
        await self.until(lambda: min(c.last for c in clients) >= head, f"clients at {head}")
        for c in clients:
            self.assertEqual(c.problems, [], f"client {c.idx}")
            self.assertEqual(c.seqs, list(range(1, head + 1)), f"client {c.idx}")

        # raw: what Redis handed to the gateway's subscription arrived, once; the rest is the
        # failover window's loss, counted
        delivered = {k for k, (_, n) in raw_pub.sent.items() if n}
        await self.until(lambda: delivered <= set(raw_got), "every delivered raw message")
        reader.cancel()
        self.assertEqual(len(raw_got), len(set(raw_got)), "a raw message arrived twice")
        self.assertEqual(set(raw_got) - set(raw_pub.sent), set())
        lost = sorted(set(raw_pub.sent) - set(raw_got))
        for k in lost:
            t, n = raw_pub.sent[k]
            self.assertTrue(killed_at <= t <= resubscribed_at + 0.5,
                            f"raw message {k} lost outside the failover window")
        self.log(f"raw: {len(raw_pub.sent)} sent, {len(raw_got)} delivered, {len(lost)} lost in "
                 f"the failover window; sequenced: {head}, none lost")

        # /readyz told the truth: 200 before the kill, 503 after it, no 200 before a master
        # existed again, 200 at the end
        before = [st for t, st in readyz.seen if t < killed_at]
        self.assertEqual(set(before), {200})
        window = [st for t, st in readyz.seen if killed_at + 0.1 < t < promoted_at - 0.05]
        self.assertNotIn(200, window, "ready while no master existed")
        self.assertIn(503, [st for t, st in readyz.seen if t > killed_at])
        self.assertEqual(readyz.seen[-1][1], 200)
        self.assertEqual(h.metric("herald_redis_shard_up",
                                  {"shard": "0", "server": f"sentinel/{MASTER_NAME}"}), 1)
        self.assertIn(f"sentinels name 127.0.0.1:{replica.port} as master", h.log_text())

    async def test_lying_and_broken_sentinels(self):
        master, (replica,), sentinels = start_sentinel_group(self, sentinels=1)
        # a "master" that answers +OK to everything, ROLE and SUBSCRIBE included
        fake_master = FakeRedis(b"+OK\r\n")
        self.addCleanup(fake_master.close)
        answers = {
            "names the replica": resp_array(b"127.0.0.1", str(replica.port).encode()),
            "error": b"-ERR No such master with that name\r\n",
            "nil": b"*-1\r\n",
            "integers": b"*2\r\n:1\r\n:6379\r\n",
            "bad address": resp_array(b"127.0.0.1;rm -rf", b"6379"),
            "bad port": resp_array(b"127.0.0.1", b"99999"),
            "three elements": resp_array(b"127.0.0.1", b"6379", b"x"),
            "huge bulk": b"$99999999999\r\n",
            "huge array": b"*2000000000\r\n",  # hiredis would allocate 16 GB for it
            "silence": None,
            "names a fake master": resp_array(b"127.0.0.1", str(fake_master.port).encode()),
        }
        # a URL names at most 8 sentinels: the fakes in two groups, each before the real one
        names = list(answers)
        for group in (names[:5], names[5:]):
            with self.subTest(group=group):
                await self.fakes_then_real(group, answers, master, replica, sentinels[0])

    async def fakes_then_real(self, names, answers, master, replica, real):
        fakes = [FakeRedis(answers[n]) for n in names]
        for f in fakes:
            self.addCleanup(f.close)
        url = "redis-sentinel://" + ",".join(
            [f"127.0.0.1:{f.port}" for f in fakes] + [f"127.0.0.1:{real.port}"]
        ) + f"/{MASTER_NAME}"
        h = self.start_herald(url, "--heartbeat-ms", "200")
        await asyncio.to_thread(h.wait_ready, WAIT)
        # it is on the real master, and every fake was asked and refused
        await self.until(lambda: len(heartbeats(master)) >= 1,
                         "the heartbeat subscribed on the master")
        self.assertEqual(heartbeats(replica), [])
        for name, f in zip(names, fakes):
            self.assertGreaterEqual(f.asked, 1, f"the fake that answers {name} was never asked")
        text = h.log_text()
        if "names the replica" in names:
            self.assertIn(f"127.0.0.1:{replica.port} is not a master (role slave)", text)
        if "error" in names:
            self.assertIn("gave no usable address", text)
        if "silence" in names:
            self.assertIn("did not answer in 1000 ms", text)
        if "names a fake master" in names:
            # refused on whichever of its two connections answers first
            self.assertRegex(text, rf"127\.0\.0\.1:{fake_master_port(answers)} (is not a master "
                                   r"\(role unknown\)|refused SUBSCRIBE)")
        self.assertTrue(h.alive())
        status, _, body = http_get(f"{h.base}/readyz")
        self.assertEqual(status, 200, body)
        await asyncio.to_thread(h.stop)


def fake_master_port(answers):
    """The port the "names a fake master" answer names."""
    return int(answers["names a fake master"].split(b"\r\n")[-2])


def heartbeats(server):
    """The gateway heartbeat channels subscribed on a Redis server."""
    with RedisConn(server.port) as c:
        return c.command("PUBSUB", "CHANNELS", "herald#heartbeat#*")


if __name__ == "__main__":
    main()
