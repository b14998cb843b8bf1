"""Faults around the history: PostgreSQL stopped and started (live goes on, catch-up
degrades, then recovers), Redis stopped while publishes commit (the gap is repaired) and one
gateway cut off from PostgreSQL while others publish (its members miss nothing)."""

import asyncio
import json

from harness import free_port, main, recv_json, subscribe
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

    async def test_head_lookup_failed_members_get_what_was_announced_meanwhile(self):
        """A gateway whose PostgreSQL link is down answers a subscribe without a position;
        messages other producers commit meanwhile reach Redis but cannot be verified. Once
        the link is back the head is learnt and those messages are delivered from PostgreSQL:
        nothing published after the subscribe is lost."""
        redis = self.start_redis()
        pg = self.start_postgres()
        link = TcpLink(pg.port)
        await link.start()
        try:
            h = await asyncio.to_thread(  # the link is served by this loop meanwhile
                self.start_herald_with_history, redis, pg, "--database-url",
                pg.url.replace(str(pg.port), str(link.port)))
            await asyncio.to_thread(h.wait_ready)
            await link.cut()
            await asyncio.to_thread(h.wait_metric, "herald_db_up", lambda v: v == 0)
            ws = await self.connect(h)
            reply = await subscribe(ws, "cut")
            self.assertNotIn("epoch", reply)  # no head: no position to give
            for i in (1, 2):  # another producer, straight to PostgreSQL and Redis
                await asyncio.to_thread(self.herald_cli, "publish", "cut", json.dumps({"i": i}),
                                        pg=pg, redis=redis)
            await asyncio.sleep(0.5)  # announced while the head is unknown
            await link.start()
            got = [await recv_json(ws, 20) for _ in range(2)]
            self.assertEqual([(m["seq"], m["data"]) for m in got], [(1, {"i": 1}), (2, {"i": 2})])
            await asyncio.to_thread(self.herald_cli, "publish", "cut", '{"i":3}', pg=pg,
                                    redis=redis)
            self.assertEqual((await recv_json(ws, 10))["seq"], 3)
        finally:
            await link.cut()


    async def test_a_gateway_still_connecting_to_postgres_waits_for_it(self):
        """A gateway just started, its first PostgreSQL connections held 1.5 s on the way (a
        restart behind a load balancer, clients reconnecting at once): a resume and a publish
        that come meanwhile wait for the connections instead of failing with
        history_unavailable. Once every host has failed, queries fail at once again."""
        redis = self.start_redis()
        pg = self.start_postgres()
        first = await asyncio.to_thread(self.start_herald_with_history, redis, pg)
        await asyncio.to_thread(post, first, "boot", {"i": 1})
        link = TcpLink(pg.port, delay=1.5)
        await link.start()
        try:
            h = await asyncio.to_thread(  # the link is served by this loop meanwhile
                self.start_herald, redis, "--database-url",
                pg.url.replace(str(pg.port), str(link.port)))
            self.assertEqual(h.metric("herald_db_up"), 0)  # still connecting
            ws = await self.connect(h)
            await ws.send(json.dumps({"op": "subscribe", "channel": "boot", "since": 0}))
            await ws.send(json.dumps({"op": "publish", "channel": "boot", "data": 2, "id": 5}))
            # the replay, the answer, the publish's reply and its delivery: seqs 1 and 2
            # each once and in order, whichever of the two requests the pool served first
            got = []
            while len(got) < 4:
                got.append(await recv_json(ws, 10))
            ops = {m["op"]: m for m in got}
            self.assertEqual([m["seq"] for m in got if m["op"] == "message"], [1, 2], got)
            self.assertTrue(ops["subscribed"]["recovered"], got)
            self.assertEqual((ops["published"]["seq"], ops["published"]["id"]), (2, 5), got)
            self.assertEqual(h.metric("herald_db_up"), 1)
        finally:
            await link.cut()
        # a gateway whose every host fails: no longer starting, queries fail at once
        dead = await asyncio.to_thread(
            self.start_herald, redis, "--database-url",
            pg.url.replace(str(pg.port), str(free_port())))
        await asyncio.sleep(1.0)
        ws = await self.connect(dead)
        reply = await subscribe(ws, "boot", since=0)
        self.assertEqual((reply["recovered"], reply["code"]), (False, "history_unavailable"))


class TcpLink:
    """A TCP forwarder to 127.0.0.1:port that can be cut (listener and connections closed)
    and restored on the same port: one gateway loses PostgreSQL while others keep it. With
    delay, each connection waits that many seconds before it reaches the target."""

    def __init__(self, target, delay=0.0):
        self.target = target
        self.delay = delay
        self.port = free_port()
        self.server = None
        self.writers = set()

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                 reuse_address=True)

    async def cut(self):
        if self.server:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def _serve(self, reader, writer):
        await asyncio.sleep(self.delay)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, up_w))

        async def pump(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.transport.abort()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))


if __name__ == "__main__":
    main()
