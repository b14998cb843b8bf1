#!/usr/bin/python3
"""Redis going away degrades, never crashes: Redis is SIGKILLed and restarted on the same port;
/readyz goes 503 then 200; channels are resubscribed automatically; clients that stayed
connected receive messages published after the recovery without subscribing again;
herald_redis_reconnects_total and herald_redis_up follow. Also: herald started before Redis."""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ping, recv_frame, subscribe  # noqa: E402

HEARTBEAT = ("--heartbeat-ms", "200")


class TestRedisRestart(harness.HeraldTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.herald = self.start_herald(self.redis, *HEARTBEAT)
        self.herald.wait_ready()

    def wait_resubscribed(self, redis, channels):
        """Wait until herald holds a Redis subscription for every channel again."""
        harness.wait_for(lambda: all(redis.numsub(c) >= 1 for c in channels), 30, 0.1,
                         f"herald to resubscribe {channels} in Redis")

    async def expect_messages(self, ws, channel, datas):
        for d in datas:
            raw, msg = await recv_frame(ws, timeout=20)
            self.assertEqual(msg, {"op": "message", "channel": channel, "data": d}, raw)

    async def kill_and_restart(self, clients_check):
        h = self.herald
        reconnects0 = h.metric("herald_redis_reconnects_total")
        self.assertIsNotNone(reconnects0, "herald_redis_reconnects_total missing")
        self.assertEqual(h.metric("herald_redis_up"), 1)

        self.redis.kill()  # SIGKILL: no FIN from a clean shutdown is guaranteed to matter
        harness.wait_for(lambda: h.readyz() == 503, 20, 0.05, "/readyz 503 after Redis died")
        self.assertEqual(h.healthz(), 200, "/healthz must stay 200 while Redis is down")
        h.wait_metric("herald_redis_up", lambda v: v == 0)
        # Herald may notice the dead socket before any heartbeat is missed; either way the
        # heartbeat age keeps growing while Redis is away (3 intervals of 200 ms and more).
        self.assertIsNotNone(h.metric("herald_redis_heartbeat_age_seconds"),
                             "herald_redis_heartbeat_age_seconds missing")
        h.wait_metric("herald_redis_heartbeat_age_seconds", lambda v: v >= 0.6)
        self.assertTrue(h.alive(), "herald died when Redis went away")
        # Clients stay connected and the WebSocket keeps working while Redis is down.
        await clients_check()

        # Keep Redis down for a while (several reconnect attempts fail), then restart.
        await asyncio.sleep(1.0)
        self.assertEqual(h.readyz(), 503)
        self.redis = self.restart_redis(self.redis)
        await harness.async_wait_for(lambda: h.readyz() == 200, 30, 0.1,
                                     "/readyz 200 after Redis came back")
        h.wait_metric("herald_redis_up", lambda v: v == 1)
        h.wait_metric("herald_redis_reconnects_total", lambda v: v >= reconnects0 + 1)

    async def test_kill_and_restart_resubscribes(self):
        a = await self.connect(self.herald)
        b = await self.connect(self.herald)
        await subscribe(a, "r:one")
        await subscribe(a, "r:two")
        await subscribe(b, "r:two")
        self.redis.publish("r:one", '{"before":1}')
        self.redis.publish("r:two", '{"before":2}')
        await self.expect_messages(a, "r:one", [{"before": 1}])
        await self.expect_messages(a, "r:two", [{"before": 2}])
        await self.expect_messages(b, "r:two", [{"before": 2}])

        # Many channels on one connection: all must be resubscribed.
        many = await self.connect(self.herald)
        many_channels = [f"r:many:{n}" for n in range(100)]
        for ch in many_channels:
            await subscribe(many, ch)

        async def clients_alive():
            await ping(a, id="down-a")
            await ping(b, id="down-b")
            await ping(many, id="down-many")

        for cycle in range(2):
            await self.kill_and_restart(clients_alive)
            self.wait_resubscribed(self.redis, ["r:one", "r:two"])
            # Published after the recovery: delivered without a new subscribe.
            for i in range(5):
                self.assertEqual(self.redis.publish("r:one", json.dumps({"c": cycle, "i": i})), 1)
                self.assertEqual(self.redis.publish("r:two", json.dumps({"c": cycle, "j": i})), 1)
            got_a = [(await recv_frame(a))[1] for _ in range(10)]
            got_b = [(await recv_frame(b))[1] for _ in range(5)]
            self.assertEqual([m["data"] for m in got_a if m["channel"] == "r:one"],
                             [{"c": cycle, "i": i} for i in range(5)])
            self.assertEqual([m["data"] for m in got_a if m["channel"] == "r:two"],
                             [{"c": cycle, "j": i} for i in range(5)])
            self.assertEqual([m["data"] for m in got_b],
                             [{"c": cycle, "j": i} for i in range(5)])
            self.assertEqual({m["channel"] for m in got_b}, {"r:two"})
            self.wait_resubscribed(self.redis, many_channels)
            for ch in many_channels:
                self.assertEqual(self.redis.publish(ch, json.dumps({"c": cycle})), 1)
            got = [(await recv_frame(many))[1] for _ in many_channels]
            self.assertEqual([m["channel"] for m in got], many_channels)
            self.assertTrue(all(m["data"] == {"c": cycle} for m in got))

        # A brand-new subscription after the restarts works too.
        c = await self.connect(self.herald)
        await subscribe(c, "r:three")
        self.assertEqual(self.redis.publish("r:three", '{"new":true}'), 1)
        await self.expect_messages(c, "r:three", [{"new": True}])
        self.assertEqual(self.herald.metric("herald_connections"), 4)

    async def test_unsubscribe_while_redis_down_is_not_resubscribed(self):
        a = await self.connect(self.herald)
        await subscribe(a, "keep")
        await subscribe(a, "drop")

        async def unsubscribe_drop():
            await harness.unsubscribe(a, "drop")

        await self.kill_and_restart(unsubscribe_drop)
        self.wait_resubscribed(self.redis, ["keep"])
        self.assertEqual(self.redis.numsub("drop"), 0,
                         "a channel nobody holds any more must not be resubscribed")
        self.redis.publish("drop", '{"x":1}')
        self.redis.publish("keep", '{"y":1}')
        await self.expect_messages(a, "keep", [{"y": 1}])


class TestHeartbeatRate(harness.HeraldTestCase):
    async def test_one_heartbeat_per_interval(self):
        """The heartbeat goes every HERALD_HEARTBEAT_MS, not on every (finer) reconnect tick:
        over 3 s at 500 ms, six PUBLISHes or so, never the thirty of a 100 ms tick."""
        redis = self.start_redis()
        h = self.start_herald(redis, "--heartbeat-ms", "500")
        h.wait_ready()

        def publishes():
            info = redis.conn().command("INFO", "commandstats").decode()
            for line in info.split("\r\n"):
                if line.startswith("cmdstat_publish:"):
                    return int(line.split("calls=")[1].split(",")[0])
            return 0
        before = publishes()
        await asyncio.sleep(3.0)
        sent = publishes() - before
        self.assertGreaterEqual(sent, 4)
        self.assertLessEqual(sent, 8)


class TestRedisAbsentAtStart(harness.HeraldTestCase):
    async def test_starts_without_redis_then_becomes_ready(self):
        port = harness.free_port()
        url = f"redis://127.0.0.1:{port}/0"
        h = self.start_herald(url, *HEARTBEAT)
        self.assertEqual(h.healthz(), 200)
        await asyncio.sleep(1.0)
        self.assertEqual(h.readyz(), 503, "not ready while Redis is unreachable")
        self.assertTrue(h.alive())
        redis = self.start_redis(port=port)
        await harness.async_wait_for(lambda: h.readyz() == 200, 30, 0.1,
                                     "/readyz 200 once Redis is up")
        ws = await self.connect(h)
        await subscribe(ws, "late")
        self.assertEqual(redis.publish("late", '{"ok":1}'), 1)
        raw, msg = await recv_frame(ws)
        self.assertEqual(msg, {"op": "message", "channel": "late", "data": {"ok": 1}}, raw)


if __name__ == "__main__":
    harness.main()
