"""Faults around the history: PostgreSQL stopped and started (live goes on, catch-up
degrades, then recovers) and Redis stopped while publishes commit (the gap is repaired)."""

import asyncio
import json

from harness import main, recv_json, subscribe
from pg import HistoryTestCase
from test_history import get, post


class HistoryFaultTest(HistoryTestCase):
    async def test_postgres_outage_degrades_and_recovers(self):
        redis = self.start_redis()
        pg = self.start_postgres()
        h = self.start_herald_with_history(redis, pg)
        await asyncio.to_thread(h.wait_ready)
        await asyncio.to_thread(post, h, "ops", {"i": 1})
        live = await self.connect(h)
        await subscribe(live, "ops")

        pg.stop_fast()
        await asyncio.to_thread(h.wait_metric, "herald_db_up", lambda v: v == 0)
        # live delivery goes on (a producer publishing straight to Redis)
        await asyncio.to_thread(redis.publish, "ops", '{"raw":true}')
        m = await recv_json(live, 10)
        self.assertEqual(m["data"], {"raw": True})
        # catch-up and publish degrade with clear answers
        status, body, headers = await asyncio.to_thread(get, h, "ops", "?since=0")
        self.assertEqual((status, body["error"]["code"]), (503, "history_unavailable"))
        self.assertIn("Retry-After", {k.title(): v for k, v in headers.items()})
        ws = await self.connect(h)
        reply = await subscribe(ws, "ops", since=0)
        self.assertEqual((reply["recovered"], reply["code"]), (False, "history_unavailable"))
        await ws.send(json.dumps({"op": "publish", "channel": "ops", "data": 2, "id": 9}))
        err = await recv_json(ws)
        self.assertEqual((err["op"], err["code"], err["id"]), ("error", "unavailable", 9))
        status, _, _ = await asyncio.to_thread(h.get, "/readyz")
        self.assertEqual(status, 200)  # a PostgreSQL outage does not make the instance unready

        self.restart_postgres(pg)
        await asyncio.to_thread(h.wait_metric, "herald_db_up", lambda v: v == 1)
        status, body, _ = await asyncio.to_thread(get, h, "ops", "?since=0")
        self.assertEqual((status, [m["seq"] for m in body["messages"]]), (200, [1]))
        ws2 = await self.connect(h)
        await ws2.send(json.dumps({"op": "subscribe", "channel": "ops", "since": 0}))
        replayed = await recv_json(ws2)
        self.assertEqual(replayed["seq"], 1)
        self.assertTrue((await recv_json(ws2))["recovered"])

    async def test_redis_outage_while_publishes_commit_is_repaired(self):
        redis = self.start_redis()
        pg = self.start_postgres()
        h = self.start_herald_with_history(redis, pg, "--heartbeat-ms", "200")
        await asyncio.to_thread(h.wait_ready)
        ws = await self.connect(h)
        await subscribe(ws, "jobs")
        await asyncio.to_thread(post, h, "jobs", {"i": 1})
        self.assertEqual((await recv_json(ws))["seq"], 1)

        redis.kill()
        await asyncio.to_thread(h.wait_metric, "herald_redis_up", lambda v: v == 0)
        for i in range(2, 7):  # committed; their PUBLISH cannot happen
            status, body = await asyncio.to_thread(post, h, "jobs", {"i": i})
            self.assertEqual((status, body["seq"]), (201, i))
        self.restart_redis(redis)
        got = [await recv_json(ws, 20) for _ in range(5)]
        self.assertEqual([m["seq"] for m in got], [2, 3, 4, 5, 6])
        await asyncio.to_thread(post, h, "jobs", {"i": 7})
        self.assertEqual((await recv_json(ws, 10))["seq"], 7)


if __name__ == "__main__":
    main()
