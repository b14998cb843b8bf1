#!/usr/bin/python3
"""Fan-out: 300 WebSocket clients over 30 channels (every 5th client also holds a second
channel) receive exactly their channels' messages, in publish order, and nothing else;
unsubscribe stops delivery; the gauges and counters in /metrics move accordingly."""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import recv_frame, subscribe, unsubscribe  # noqa: E402

N_CLIENTS = 300
N_CHANNELS = 30
N_MESSAGES = 50  # per channel
CONNECT_BATCH = 50


def channel(i):
    return f"fan:{i}"


def client_channels(k):
    chans = [channel(k % N_CHANNELS)]
    if k % 5 == 0:
        chans.append(channel((k + 7) % N_CHANNELS))
    return chans


class TestFanout(harness.HeraldTestCase):
    async def asyncSetUp(self):
        harness.raise_nofile(4096)
        self.redis = self.start_redis()
        self.herald = self.start_herald(self.redis)
        self.pub = await harness.AsyncRedis.connect(self.redis.port)
        self.addAsyncCleanup(self.pub.close)

    async def connect_all(self):
        clients = []
        for start in range(0, N_CLIENTS, CONNECT_BATCH):
            batch = await asyncio.gather(
                *(self.connect(self.herald) for _ in range(start, min(start + CONNECT_BATCH,
                                                                        N_CLIENTS)))
            )
            clients.extend(batch)
        return clients

    async def collect(self, ws, chans, end_marker):
        """Read messages until the end marker was seen on every channel in `chans`."""
        got = []
        pending = set(chans)
        while pending:
            raw, msg = await recv_frame(ws, timeout=60)
            self.assertIsInstance(msg, dict, f"non-JSON frame {raw!r}")
            self.assertEqual(msg.get("op"), "message", f"unexpected frame {raw!r}")
            data = msg["data"]
            if data.get("end") == end_marker:
                self.assertIn(msg["channel"], pending, f"duplicate/unexpected end: {raw!r}")
                pending.discard(msg["channel"])
                continue
            got.append(msg)
        return got

    async def test_fanout(self):
        clients = await self.connect_all()
        subs = {k: client_channels(k) for k in range(N_CLIENTS)}
        for k, ws in enumerate(clients):
            for ch in subs[k]:
                reply = await subscribe(ws, ch)
                self.assertIs(reply.get("recovered"), False)

        n_subs = sum(len(c) for c in subs.values())
        subscribers = {channel(i): 0 for i in range(N_CHANNELS)}
        for chans in subs.values():
            for ch in chans:
                subscribers[ch] += 1

        # Gauges.
        self.herald.wait_metric("herald_connections", lambda v: v == N_CLIENTS)
        self.assertEqual(self.herald.metric("herald_subscriptions"), n_subs)
        channels_gauge = self.herald.metric("herald_channels")
        self.assertIsNotNone(channels_gauge, "herald_channels missing")
        self.assertEqual(channels_gauge, N_CHANNELS, "herald_channels: channels with subscribers")
        for ch in subscribers:
            self.assertEqual(self.redis.numsub(ch), 1,
                             f"herald must hold exactly one Redis subscription for {ch}")

        before = harness.parse_metrics(self.herald.metrics_text())
        m0 = {(n, tuple(sorted(lab.items()))): v for n, lab, v in before}

        def mval(snapshot, name):
            return snapshot.get((name, ()))

        # Publish 50 messages per channel, interleaved across channels, then an end marker.
        readers = [asyncio.create_task(self.collect(ws, subs[k], "A"))
                   for k, ws in enumerate(clients)]
        pairs = []
        for m in range(N_MESSAGES):
            for i in range(N_CHANNELS):
                pairs.append((channel(i), json.dumps({"c": i, "m": m, "pad": "p" * (m % 7)})))
        for i in range(N_CHANNELS):
            pairs.append((channel(i), json.dumps({"end": "A"})))
        replies = []
        for start in range(0, len(pairs), 100):
            replies += await self.pub.publish_many(pairs[start:start + 100])
        self.assertTrue(all(r == 1 for r in replies), "each PUBLISH must reach herald once")

        results = await asyncio.wait_for(asyncio.gather(*readers), 120)
        deliveries = 0
        delivered_bytes = 0
        for k, got in enumerate(results):
            expected = []
            for m in range(N_MESSAGES):
                for i in range(N_CHANNELS):
                    if channel(i) in subs[k]:
                        expected.append((channel(i), {"c": i, "m": m, "pad": "p" * (m % 7)}))
            # Per channel order must be the publish order; across channels too (one Redis
            # connection preserves global publish order).
            actual = [(msg["channel"], msg["data"]) for msg in got]
            for ch in subs[k]:
                self.assertEqual([d for c, d in actual if c == ch],
                                 [d for c, d in expected if c == ch],
                                 f"client {k} channel {ch}: wrong messages or order")
            self.assertEqual(len(actual), len(expected), f"client {k}: extra messages")
            deliveries += len(got) + len(subs[k])  # + end markers
            delivered_bytes += sum(len(json.dumps(m, separators=(",", ":"))) for m in got)

        # Counters moved by at least the deliveries made.
        def counters_caught_up():
            snap = {(n, tuple(sorted(lab.items()))): v
                    for n, lab, v in harness.parse_metrics(self.herald.metrics_text())}
            return snap if (mval(snap, "herald_frames_out_total") or 0) - (
                mval(m0, "herald_frames_out_total") or 0) >= deliveries else None

        m1 = harness.wait_for(counters_caught_up, 30, 0.2, "herald_frames_out_total")
        for name in ("herald_frames_out_total", "herald_bytes_out_total",
                     "herald_redis_messages_total"):
            self.assertIsNotNone(mval(m0, name), f"{name} missing from /metrics")
        self.assertGreaterEqual(
            mval(m1, "herald_bytes_out_total") - mval(m0, "herald_bytes_out_total"),
            delivered_bytes)
        self.assertGreaterEqual(
            mval(m1, "herald_redis_messages_total") - mval(m0, "herald_redis_messages_total"),
            len(pairs))
        self.assertEqual(mval(m1, "herald_invalid_payloads_total"),
                         mval(m0, "herald_invalid_payloads_total"))
        self.assertEqual(mval(m1, "herald_slow_consumer_closes_total") or 0, 0)

        # Unsubscribe: clients 0..29 (one per channel) drop their first channel.
        leavers = {k: subs[k][0] for k in range(N_CHANNELS)}
        for k, ch in leavers.items():
            await unsubscribe(clients[k], ch)
            subs[k] = subs[k][1:]
        self.herald.wait_metric("herald_subscriptions",
                                lambda v: v == n_subs - len(leavers))
        # Every channel still has other subscribers, so herald stays subscribed in Redis.
        readers = [asyncio.create_task(self.collect(ws, subs[k], "B"))
                   for k, ws in enumerate(clients)]
        pairs = []
        for m in range(5):
            for i in range(N_CHANNELS):
                pairs.append((channel(i), json.dumps({"c": i, "m": 1000 + m})))
        for i in range(N_CHANNELS):
            pairs.append((channel(i), json.dumps({"end": "B"})))
        await self.pub.publish_many(pairs)
        results = await asyncio.wait_for(asyncio.gather(*readers), 120)
        for k, got in enumerate(results):
            chans = [msg["channel"] for msg in got]
            self.assertEqual(sorted(set(chans)), sorted(subs[k]),
                             f"client {k} got {set(chans)}, subscribed to {subs[k]}")
            self.assertEqual(len(got), 5 * len(subs[k]), f"client {k}")
            if k in leavers:
                self.assertNotIn(leavers[k], chans, f"client {k} got a message after unsubscribe")

        # Everyone leaves: gauges return to where they were with no clients.
        for ws in clients:
            await ws.close()
        self.herald.wait_metric("herald_connections", lambda v: v == 0, timeout=30)
        self.herald.wait_metric("herald_subscriptions", lambda v: v == 0)
        self.herald.wait_metric("herald_channels", lambda v: v == 0)
        # Redis subscriptions are released once a channel has no subscriber.
        harness.wait_for(lambda: all(self.redis.numsub(channel(i)) == 0
                                     for i in range(N_CHANNELS)),
                         what="herald to UNSUBSCRIBE channels without subscribers")


if __name__ == "__main__":
    harness.main()
