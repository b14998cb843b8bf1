#!/usr/bin/python3
"""Channels spread over three redis-server processes (HERALD_REDIS_URL lists them): each
channel is subscribed on, and published to, the server the documented hash names (the Python
reference below is the one docs/OPERATIONS.md gives producers); REST, WebSocket and CLI
publishes all reach the right server; one server dying stops only its channels, /readyz and
the per-server gauge say so, and its channels resubscribe and catch up when it returns. With
HERALD_READY_ANY_SHARD, /readyz stays 200 while any one server delivers."""

import asyncio
import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ping, recv_json, subscribe  # noqa: E402
from pg import HistoryTestCase  # noqa: E402
from resp import AsyncRedis  # noqa: E402

MASK = (1 << 64) - 1


def shard_of(name, n):
    """FNV-1a 64 of the channel name, then jump consistent hash over n servers."""
    if n <= 1:
        return 0
    key = 14695981039346656037
    for byte in name.encode():
        key = ((key ^ byte) * 1099511628211) & MASK
    b, j = -1, 0
    while j < n:
        b = j
        key = (key * 2862933555777941757 + 1) & MASK
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def post(h, channel, data):
    req = urllib.request.Request(f"{h.base}/v1/channels/{channel}/messages",
                                 data=json.dumps(data).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.loads(r.read())


class ShardingTest(HistoryTestCase):
    async def asyncSetUp(self):
        self.redis = [self.start_redis() for _ in range(3)]
        self.url_list = ", ".join(r.url for r in self.redis)
        self.pg = self.start_postgres()
        self.h = self.start_herald_with_history(self.url_list, self.pg, "--heartbeat-ms", "200")
        await asyncio.to_thread(self.h.wait_ready)
        # channels named so that every server gets some
        self.channels = [f"property:{i}:conversations" for i in range(30)]
        self.home = {c: self.redis[shard_of(c, 3)] for c in self.channels}
        self.assertEqual({shard_of(c, 3) for c in self.channels}, {0, 1, 2})

    def shard_labels(self, i):
        return {"shard": str(i), "server": f"127.0.0.1:{self.redis[i].port}"}

    async def test_each_channel_lives_on_its_hashed_server(self):
        ws = await self.connect(self.h)
        for c in self.channels:
            await subscribe(ws, c)
        for c in self.channels:
            self.assertEqual([r.numsub(c) for r in self.redis],
                             [1 if r is self.home[c] else 0 for r in self.redis], c)
        # a producer that follows the hash reaches the subscribers...
        for i, c in enumerate(self.channels):
            self.assertEqual(self.home[c].publish(c, json.dumps({"i": i})), 1)
        got = [await recv_json(ws) for _ in self.channels]
        self.assertEqual([(m["channel"], m["data"]["i"]) for m in got],
                         [(c, i) for i, c in enumerate(self.channels)])
        # ...one that publishes to another server reaches nobody
        c = self.channels[0]
        wrong = next(r for r in self.redis if r is not self.home[c])
        self.assertEqual(wrong.publish(c, '{"lost":true}'), 0)
        await ping(ws, id="after-wrong-server")  # nothing arrived before the pong
        self.assertEqual(self.h.metric("herald_redis_shard_up", self.shard_labels(2)), 1)

    async def test_rest_websocket_and_cli_publish_to_the_channel_server(self):
        listeners = {}
        for c in self.channels[:6]:
            r = await AsyncRedis.connect(self.home[c].port)
            await r.command("SUBSCRIBE", c)
            listeners[c] = r
        ws = await self.connect(self.h)
        for c in self.channels[:6]:
            await subscribe(ws, c)
        for c in self.channels[:2]:  # REST
            await asyncio.to_thread(post, self.h, c, {"via": "rest"})
        for c in self.channels[2:4]:  # WebSocket publish
            await ws.send(json.dumps({"op": "publish", "channel": c, "data": {"via": "ws"}}))
        for c in self.channels[4:6]:  # the CLI, given the same list
            await asyncio.to_thread(self.herald_cli, "publish", c, '{"via":"cli"}', pg=self.pg,
                                    redis=self.url_list)
        for i, c in enumerate(self.channels[:6]):
            kind, _, payload = await asyncio.wait_for(listeners[c]._read(), 20)
            envelope = json.loads(payload)
            self.assertEqual((kind, envelope["channel"], envelope["seq"]), (b"message", c, 1))
            self.assertEqual(envelope["data"]["via"], ["rest", "ws", "cli"][i // 2])
            await listeners[c].close()
        seen = set()
        while len(seen) < 6:
            m = await recv_json(ws)
            if m["op"] == "message":
                self.assertEqual(m["seq"], 1)
                seen.add(m["channel"])
        self.assertEqual(seen, set(self.channels[:6]))

    async def test_one_server_down_stops_only_its_channels(self):
        ws = await self.connect(self.h)
        for c in self.channels:
            await subscribe(ws, c)
        victim = self.redis[1]
        down = [c for c in self.channels if self.home[c] is victim]
        up = [c for c in self.channels if self.home[c] is not victim]
        victim.kill()
        await harness.async_wait_for(lambda: self.h.readyz() == 503, 20, 0.05,
                                     "/readyz 503 with one Redis server down")
        self.h.wait_metric("herald_redis_shard_up", lambda v: v == 0, self.shard_labels(1))
        self.assertEqual(self.h.metric("herald_redis_shard_up", self.shard_labels(0)), 1)
        self.assertEqual(self.h.metric("herald_redis_shard_up", self.shard_labels(2)), 1)
        # the other servers' channels carry on, durable or not
        for c in up:
            self.assertEqual(self.home[c].publish(c, '{"raw":1}'), 1)
        for c in up:
            await asyncio.to_thread(post, self.h, c, {"durable": 1})
        # the dead server's channels: committed in PostgreSQL, their PUBLISH is lost
        for c in down:
            self.assertEqual((await asyncio.to_thread(post, self.h, c, {"while": "down"}))["seq"],
                             1)
        got = [await recv_json(ws) for _ in range(2 * len(up))]
        self.assertEqual(sorted(m["channel"] for m in got), sorted(up * 2))
        self.assertTrue(all(m["channel"] in up for m in got))

        self.redis[1] = self.restart_redis(victim)
        await harness.async_wait_for(lambda: self.h.readyz() == 200, 30, 0.1,
                                     "/readyz 200 after the server came back")
        # resubscribed on the server that came back, and caught up from PostgreSQL
        harness.wait_for(lambda: all(self.redis[1].numsub(c) == 1 for c in down), 20, 0.1,
                         "resubscribed on the restarted server")
        caught = {}
        while len(caught) < len(down):
            m = await recv_json(ws, timeout=20)
            caught[m["channel"]] = (m["seq"], m["data"])
        self.assertEqual(caught, {c: (1, {"while": "down"}) for c in down})
        for c in down:
            self.assertEqual(self.redis[1].publish(c, '{"after":1}'), 1)
        got = [await recv_json(ws) for _ in down]
        self.assertEqual(sorted(m["channel"] for m in got), sorted(down))


class ReadyAnyShardTest(harness.HeraldTestCase):
    async def test_ready_while_any_server_delivers(self):
        redis = [self.start_redis() for _ in range(2)]
        h = self.start_herald(", ".join(r.url for r in redis), "--heartbeat-ms", "200",
                              "--ready-any-shard")
        await asyncio.to_thread(h.wait_ready)
        labels = {"shard": "1", "server": f"127.0.0.1:{redis[1].port}"}
        redis[1].kill()
        await asyncio.to_thread(h.wait_metric, "herald_redis_shard_up", lambda v: v == 0, labels)
        self.assertEqual(h.metric("herald_redis_up"), 0)  # the gauge still says "not all"
        self.assertEqual(h.readyz(), 200)
        redis[0].kill()
        await harness.async_wait_for(lambda: h.readyz() == 503, 20, 0.05,
                                     "/readyz 503 with every Redis server down")
        redis[1] = self.restart_redis(redis[1])
        await harness.async_wait_for(lambda: h.readyz() == 200, 30, 0.1,
                                     "/readyz 200 with one server back")


if __name__ == "__main__":
    harness.main()
