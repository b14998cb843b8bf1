#!/usr/bin/python3
"""Slow consumer: a client that stops reading while its channel floods is closed (4008, or the
connection is closed/reset) once its outbound queue passes --client-queue-bytes; the counter
moves; other clients on the same channel receive every message in order; gateway RSS stays
bounded while tens of MB go through."""

import asyncio
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ping, recv_frame, subscribe  # noqa: E402

CHANNEL = "flood"
PAYLOAD_BYTES = 8192
N_MESSAGES = 4000           # ~32 MiB through the gateway
BATCH = 32                  # 256 KiB per batch; fast readers catch up between batches
QUEUE_LIMIT = 1024 * 1024   # the default, passed explicitly
RSS_GROWTH_LIMIT_KIB = 100 * 1024


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop_flag = pid, 0, threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                self.peak = max(self.peak, harness.rss_kib(self.pid))
            except (OSError, RuntimeError):
                return
            time.sleep(0.05)


class TestSlowConsumer(harness.HeraldTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.herald = self.start_herald(self.redis, "--client-queue-bytes", str(QUEUE_LIMIT))
        self.pub = await harness.AsyncRedis.connect(self.redis.port)
        self.addAsyncCleanup(self.pub.close)

    async def fast_reader(self, ws, received, progress):
        while len(received) < N_MESSAGES:
            raw, msg = await recv_frame(ws, timeout=60)
            self.assertEqual(msg.get("op"), "message", raw[:200])
            self.assertEqual(msg.get("channel"), CHANNEL)
            received.append(msg["data"]["i"])
            progress.set()

    async def test_slow_consumer_closed_others_unaffected(self):
        h = self.herald
        # The slow client: tiny receive buffer, subscribes, then never reads.
        slow = self.raw_ws(h, rcvbuf=4096)
        slow.send_json({"op": "subscribe", "channel": CHANNEL})
        reply = slow.recv_json(timeout=20)
        self.assertEqual(reply.get("op"), "subscribed", reply)

        fast = [await self.connect(h) for _ in range(2)]
        for ws in fast:
            await subscribe(ws, CHANNEL)
        self.assertEqual(h.metric("herald_connections"), 3)
        closes0 = h.metric("herald_slow_consumer_closes_total")
        self.assertIsNotNone(closes0, "herald_slow_consumer_closes_total missing")

        received = [[] for _ in fast]
        progress = asyncio.Event()
        readers = [asyncio.create_task(self.fast_reader(ws, received[n], progress))
                   for n, ws in enumerate(fast)]

        rss0 = h.rss_kib()
        sampler = RssSampler(h.pid)
        sampler.start()
        pad = "x" * PAYLOAD_BYTES
        try:
            for start in range(0, N_MESSAGES, BATCH):
                end = min(start + BATCH, N_MESSAGES)
                await self.pub.publish_many(
                    [(CHANNEL, '{"i":%d,"pad":"%s"}' % (i, pad)) for i in range(start, end)]
                )
                # Flow control for the *fast* clients only: wait until both are within one
                # batch of the publisher, so their queues never approach the limit.
                deadline = time.monotonic() + 60
                while min(len(r) for r in received) < start:
                    for t in readers:
                        if t.done() and t.exception():
                            raise t.exception()
                    if time.monotonic() > deadline:
                        self.fail(f"fast clients stalled at {[len(r) for r in received]}"
                                  f" of {start}")
                    progress.clear()
                    try:
                        await asyncio.wait_for(progress.wait(), 1.0)
                    except asyncio.TimeoutError:
                        pass
            await asyncio.wait_for(asyncio.gather(*readers), 60)
        finally:
            sampler.stop_flag.set()
            sampler.join(5)
            for t in readers:
                t.cancel()

        # Fast clients: every message, in order, and still connected.
        for n, r in enumerate(received):
            self.assertEqual(r, list(range(N_MESSAGES)), f"fast client {n} lost/reordered")
        for ws in fast:
            await ping(ws)

        # The slow client was closed and counted.
        h.wait_metric("herald_slow_consumer_closes_total", lambda v: v >= closes0 + 1)
        h.wait_metric("herald_connections", lambda v: v == 2)
        messages, code, how = await asyncio.to_thread(slow.read_until_closed, 30)
        if os.environ.get("HERALD_TEST_VERBOSE"):
            print(f"\nslow client: {len(messages)} messages then {how} {code};"
                  f" RSS {rss0} -> peak {sampler.peak} KiB", file=sys.stderr)
        self.assertNotEqual(how, "timeout", "slow client's connection was never closed")
        if how == "close-frame":
            self.assertEqual(code, 4008, "slow consumer close code")
        # Whatever it did get before the close is a gap-free prefix of the stream.
        idx = [json.loads(p)["data"]["i"] for op, p in messages if op == harness.OP_TEXT]
        self.assertEqual(idx, list(range(len(idx))), "slow client's prefix has gaps")
        self.assertLess(len(idx), N_MESSAGES, "slow client was not cut off")

        growth = sampler.peak - rss0
        self.assertLess(growth, RSS_GROWTH_LIMIT_KIB,
                        f"herald RSS grew by {growth} KiB (from {rss0} KiB)")

        # The gateway still works for new clients.
        ws = await self.connect(h)
        await subscribe(ws, CHANNEL)
        await self.pub.publish(CHANNEL, '{"i":-1}')
        for f in fast + [ws]:
            _, msg = await recv_frame(f)
            self.assertEqual(msg["data"], {"i": -1})

    async def test_small_queue_limit(self):
        """With a small queue limit, a non-reading client is cut off quickly; a reading client
        receiving large messages within the limit is not."""
        # the queue must hold the largest message with room for its envelope
        h2 = self.start_herald(self.redis, "--client-queue-bytes", "65536",
                               "--max-publish-bytes", "32k")
        slow = self.raw_ws(h2, rcvbuf=4096)
        slow.send_json({"op": "subscribe", "channel": "small"})
        self.assertEqual(slow.recv_json(timeout=20).get("op"), "subscribed")
        ok = await self.connect(h2)
        await subscribe(ok, "small")
        closes0 = h2.metric("herald_slow_consumer_closes_total")
        pad = "y" * 4000
        sent = 0
        # Publish in small steps until herald cuts the slow client off (at most ~16 MiB).
        while sent < 4000:
            await self.pub.publish_many(
                [("small", '{"i":%d,"pad":"%s"}' % (sent + k, pad)) for k in range(8)])
            for k in range(8):
                _, msg = await recv_frame(ok)
                self.assertEqual(msg["data"]["i"], sent + k)
            sent += 8
            if h2.metric("herald_slow_consumer_closes_total") >= closes0 + 1:
                break
        self.assertGreaterEqual(h2.metric("herald_slow_consumer_closes_total"), closes0 + 1,
                                f"slow client not closed after {sent} x 4 KB messages")
        _, code, how = await asyncio.to_thread(slow.read_until_closed, 30)
        self.assertNotEqual(how, "timeout")
        if how == "close-frame":
            self.assertEqual(code, 4008)
        await ping(ok)


if __name__ == "__main__":
    harness.main()
