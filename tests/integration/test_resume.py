"""Resume by seq against real processes: many clients resuming while publishing is in full
flow, a resume storm (PostgreSQL queries counted), out-of-order PUBLISHes repaired from
PostgreSQL, and a PUBLISH that never happens still delivered by the head check."""

import asyncio
import json
import random
import threading
import time

from harness import main, raise_nofile, recv_json, subscribe
from pg import HistoryTestCase
from test_history import post


async def resume_and_collect(connect, channel, since, until, timeout=60):
    """Resumes channel from since and reads until seq `until`; returns the seqs received
    (replayed and live) and the `subscribed` reply."""
    ws = await connect()
    await ws.send(json.dumps({"op": "subscribe", "channel": channel, "since": since}))
    seqs, reply = [], None
    deadline = time.monotonic() + timeout
    while reply is None or (seqs[-1] if seqs else since) < until:
        m = await recv_json(ws, max(0.1, deadline - time.monotonic()))
        if m["op"] == "subscribed":
            reply = m
            continue
        assert m["op"] == "message", m
        seqs.append(m["seq"])
    await ws.close()
    return seqs, reply


class ResumeTest(HistoryTestCase):
    async def asyncSetUp(self):
        raise_nofile(8192)
        self.redis = self.start_redis()
        self.pg = self.start_postgres()
        self.h = self.start_herald_with_history(self.redis, self.pg, "--recent-bytes", "8k")
        await asyncio.to_thread(self.h.wait_ready)

    async def test_resume_while_publishing_gives_each_client_exactly_what_it_missed(self):
        total = 300
        head = [0]
        stop = threading.Event()

        def publisher():
            for i in range(total):
                _, body = post(self.h, "flow", {"i": i})
                head[0] = body["seq"]
                time.sleep(0.005)
            stop.set()

        t = threading.Thread(target=publisher)
        t.start()
        # clients join at random moments with a random position they claim to have seen
        async def one():
            await asyncio.sleep(random.uniform(0, 1.5))
            since = random.randint(0, head[0])
            seqs, reply = await resume_and_collect(lambda: self.connect(self.h), "flow", since,
                                                   total)
            return since, seqs, reply

        results = await asyncio.gather(*[one() for _ in range(60)])
        t.join()
        for since, seqs, reply in results:
            self.assertTrue(reply["recovered"], reply)
            self.assertEqual(seqs, list(range(since + 1, total + 1)), f"since={since}")

    async def test_resume_storm_is_served_with_few_queries(self):
        channels = [f"storm:{i}" for i in range(4)]
        for c in channels:
            for i in range(30):
                await asyncio.to_thread(post, self.h, c, {"i": i})
        before = self.h.metric("herald_db_queries_total")
        clients = 800

        async def one(k):
            c = channels[k % len(channels)]
            since = 20 + k % 10
            seqs, reply = await resume_and_collect(lambda: self.connect(self.h), c, since, 30)
            return since, seqs, reply

        results = await asyncio.gather(*[one(k) for k in range(clients)])
        for since, seqs, reply in results:
            self.assertTrue(reply["recovered"])
            self.assertEqual(seqs, list(range(since + 1, 31)))
        queries = self.h.metric("herald_db_queries_total") - before
        # one head query and one catch-up query per channel, plus a few for late arrivals and
        # the periodic head check: far fewer than one per client
        self.assertLess(queries, 12 * len(channels), f"{queries} queries for {clients} resumes")
        self.assertEqual(self.h.metric("herald_resumes_recovered_total"), clients)

    async def test_out_of_order_publish_is_repaired_from_postgres(self):
        ws = await self.connect(self.h)
        await subscribe(ws, "ooo")
        # three messages committed without their PUBLISH...
        envelopes = [self.pg.sql("SELECT envelope FROM herald_publish('ooo', "
                                 f"'{{\"i\":{i}}}')") for i in range(1, 4)]
        # ...then only the last one is PUBLISHed: 1 and 2 must come first, from PostgreSQL
        await asyncio.to_thread(self.redis.publish, "ooo", envelopes[2])
        got = [await recv_json(ws, 10) for _ in range(3)]
        self.assertEqual([m["seq"] for m in got], [1, 2, 3])
        await asyncio.to_thread(self.redis.publish, "ooo", envelopes[1])  # late duplicate
        with self.assertRaises(asyncio.TimeoutError):
            await recv_json(ws, 1.0)
        self.assertGreaterEqual(self.h.metric("herald_duplicates_dropped_total"), 1)

    async def test_a_publish_that_never_happens_is_delivered_by_the_head_check(self):
        ws = await self.connect(self.h)
        await subscribe(ws, "lost")
        self.pg.sql("SELECT herald_publish('lost', '{\"x\":1}')")  # COMMIT, no PUBLISH
        m = await recv_json(ws, 10)  # head check every 2 s
        self.assertEqual((m["seq"], m["data"]), (1, {"x": 1}))


if __name__ == "__main__":
    main()
