"""Durable publish and catch-up against real PostgreSQL, Redis and herald processes:
contiguous seqs under concurrent publishers, idempotent retries, the CLI, REST paging,
epoch change after a wipe, expired history and retention."""

import asyncio
import json
import subprocess
import threading
import urllib.error
import urllib.request

from harness import main, recv_json, subscribe
from pg import PG_USER, HistoryTestCase


def post(h, channel, data, key=None):
    req = urllib.request.Request(f"{h.base}/v1/channels/{channel}/messages",
                                 data=json.dumps(data).encode(), method="POST")
    if key:
        req.add_header("Idempotency-Key", key)
    with urllib.request.urlopen(req, timeout=20) as r:
        return r.status, json.loads(r.read())


def get(h, channel, query=""):
    try:
        with urllib.request.urlopen(f"{h.base}/v1/channels/{channel}/messages{query}",
                                    timeout=20) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


async def collect(ws, channel, count, timeout=30):
    """The next `count` messages of channel (other frames are not expected)."""
    out = []
    while len(out) < count:
        m = await recv_json(ws, timeout)
        assert m["op"] == "message" and m["channel"] == channel, m
        out.append(m)
    return out


class HistoryTest(HistoryTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.pg = self.start_postgres()
        self.h = self.start_herald_with_history(self.redis, self.pg)
        await asyncio.to_thread(self.h.wait_ready)

    async def test_concurrent_publishers_get_contiguous_seqs_delivered_in_order(self):
        ws = await self.connect(self.h)
        sub = await subscribe(ws, "orders")
        self.assertEqual(sub["seq"], 0)
        threads, per, seqs = 8, 40, []
        lock = threading.Lock()

        def publisher(t):
            for i in range(per):
                status, body = post(self.h, "orders", {"t": t, "i": i})
                assert status == 201, body
                with lock:
                    seqs.append(body["seq"])

        workers = [threading.Thread(target=publisher, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        received = await collect(ws, "orders", threads * per)
        for w in workers:
            w.join()
        total = threads * per
        self.assertEqual(sorted(seqs), list(range(1, total + 1)))
        # live delivery: every seq once, in order, despite PUBLISHes racing each other
        self.assertEqual([m["seq"] for m in received], list(range(1, total + 1)))
        self.assertEqual(self.pg.sql("SELECT last_seq FROM herald_channels WHERE name='orders'"),
                         str(total))
        self.assertEqual(self.pg.sql("SELECT count(DISTINCT seq) FROM herald_messages"),
                         str(total))

    async def test_idempotent_retry_returns_the_first_seq_and_publishes_once(self):
        ws = await self.connect(self.h)
        await subscribe(ws, "pay")
        s1, b1 = await asyncio.to_thread(post, self.h, "pay", {"amount": 5}, "k-1")
        s2, b2 = await asyncio.to_thread(post, self.h, "pay", {"amount": 5}, "k-1")
        s3, b3 = await asyncio.to_thread(post, self.h, "pay", {"amount": 6}, "k-2")
        self.assertEqual((s1, s2, s3), (201, 201, 201))
        self.assertEqual(b1["seq"], b2["seq"])
        self.assertEqual(b3["seq"], b1["seq"] + 1)
        got = await collect(ws, "pay", 2)
        self.assertEqual([m["seq"] for m in got], [1, 2])
        with self.assertRaises(asyncio.TimeoutError):
            await recv_json(ws, 1.0)  # the retry published nothing
        self.assertEqual(self.pg.sql("SELECT count(*) FROM herald_messages"), "2")

    async def test_cli_publishes_durably_and_migrate_is_idempotent(self):
        r = self.herald_cli("migrate", pg=self.pg)
        self.assertEqual(json.loads(r.stdout), {"applied": 0})
        ws = await self.connect(self.h)
        await subscribe(ws, "bot:status:7")
        r = self.herald_cli("publish", "bot:status:7", '{"state":"active"}', pg=self.pg,
                            redis=self.redis)
        out = json.loads(r.stdout)
        self.assertEqual(out["seq"], 1)
        m = (await collect(ws, "bot:status:7", 1))[0]
        self.assertEqual((m["seq"], m["data"]), (1, {"state": "active"}))
        bad = self.herald_cli("publish", "bot:status:7", "{not json", pg=self.pg,
                              redis=self.redis, check=False)
        self.assertNotEqual(bad.returncode, 0)

    async def test_rest_paging(self):
        for i in range(25):
            await asyncio.to_thread(post, self.h, "log", {"i": i})
        pages, since = [], 0
        while True:
            status, body, _ = await asyncio.to_thread(get, self.h, "log",
                                                      f"?since={since}&limit=10")
            self.assertEqual(status, 200)
            self.assertTrue(body["recovered"])
            self.assertEqual(body["seq"], 25)
            pages.append([m["seq"] for m in body["messages"]])
            if not body["more"]:
                break
            since = body["messages"][-1]["seq"]
        self.assertEqual(pages, [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))])
        self.assertEqual(body["messages"][0]["data"], {"i": 20})
        for q in ("?since=-1", "?since=1x", "?limit=0", "?limit=1001", "?since=1&since=2"):
            status, body, _ = await asyncio.to_thread(get, self.h, "log", q)
            self.assertEqual(status, 400, q)
            self.assertEqual(body["error"]["code"], "bad_request")
        status, body, _ = await asyncio.to_thread(get, self.h, "log", "?since=99")
        self.assertEqual((status, body["recovered"], body["code"]), (200, False, "history_reset"))

    async def test_epoch_changes_after_the_history_is_wiped(self):
        for i in range(3):
            await asyncio.to_thread(post, self.h, "room", {"i": i})
        _, before, _ = await asyncio.to_thread(get, self.h, "room")
        self.pg.sql("TRUNCATE herald_messages; DELETE FROM herald_channels")
        await asyncio.to_thread(post, self.h, "room", {"i": "new"})
        _, after, _ = await asyncio.to_thread(get, self.h, "room")
        self.assertNotEqual(before["epoch"], after["epoch"])
        self.assertEqual(after["seq"], 1)
        ws = await self.connect(self.h)
        reply = await subscribe(ws, "room", since=3, epoch=before["epoch"])
        self.assertEqual((reply["recovered"], reply["code"]), (False, "history_reset"))
        self.assertEqual(reply["epoch"], after["epoch"])

    async def test_expired_history_is_refused_and_the_rest_replays(self):
        for i in range(6):
            await asyncio.to_thread(post, self.h, "feed", {"i": i})
        # keep only the newest two (seq 5 and 6), as HERALD_HISTORY_MAX=2 would
        self.assertEqual(self.pg.sql("SELECT herald_prune(86400000, 2, 100)"), "4")
        ws = await self.connect(self.h)
        reply = await subscribe(ws, "feed", since=1)
        self.assertEqual((reply["recovered"], reply["code"]), (False, "history_expired"))
        ws2 = await self.connect(self.h)
        await ws2.send(json.dumps({"op": "subscribe", "channel": "feed", "since": 4}))
        got = [await recv_json(ws2) for _ in range(3)]
        self.assertEqual([m.get("seq") for m in got[:2]], [5, 6])
        self.assertEqual((got[2]["op"], got[2]["recovered"], got[2]["replayed"]),
                         ("subscribed", True, 2))
        status, body, _ = await asyncio.to_thread(get, self.h, "feed", "?since=2")
        self.assertEqual((body["recovered"], body["code"]), (False, "history_expired"))
        self.assertEqual(self.pg.sql("SELECT last_seq FROM herald_channels WHERE name='feed'"),
                         "6")  # last_seq is never lowered


class GroupCommitTest(HistoryTestCase):
    """Publishes that arrive while a batch commits wait and leave together, as one statement;
    a message PostgreSQL refuses fails alone."""

    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.pg = self.start_postgres()
        # one connection, so one batch in flight at a time
        self.h = self.start_herald_with_history(self.redis, self.pg, "--db-pool", "1")
        await asyncio.to_thread(self.h.wait_ready)
        self.assertEqual(post(self.h, "g", {"first": True})[1]["seq"], 1)  # creates the row

    def hold_lock(self, channel):
        """A psql session holding the channel row's lock: publishes to it block in
        PostgreSQL until the returned function ends the transaction."""
        p = subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", PG_USER,
                              "-d", "herald", "-Atq"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        self.addCleanup(p.stdout.close)
        self.addCleanup(p.kill)
        p.stdin.write(f"BEGIN;\nSELECT 'locked' FROM herald_channels WHERE name = '{channel}'"
                      " FOR UPDATE;\n")
        p.stdin.flush()
        self.assertEqual(p.stdout.readline().strip(), "locked")

        def release():
            p.stdin.write("COMMIT;\n")
            p.stdin.close()
            p.wait(30)
        return release

    def post_all(self, bodies):
        """POSTs each body to channel g from its own thread; returns (threads, results)."""
        results = [None] * len(bodies)

        def one(i):
            try:
                results[i] = post(self.h, "g", bodies[i])
            except urllib.error.HTTPError as e:
                results[i] = (e.code, json.loads(e.read()))
            except (urllib.error.URLError, ConnectionError) as e:  # cut by a shutdown
                results[i] = (None, str(e))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        return threads, results

    def counters(self):
        return (self.h.metric("herald_publish_batches_total"),
                self.h.metric("herald_durable_publishes_total"))

    async def publish_behind_a_lock(self, queued):
        """Publishes {"n":0} while the channel row is locked, so that it waits in
        PostgreSQL; then the bodies in `queued`, which must wait in the gateway's queue;
        then releases the lock. Returns the counters before, and the two lists of
        (status, body) answers."""
        before = self.counters()
        release = self.hold_lock("g")
        first, r1 = self.post_all([{"n": 0}])
        await asyncio.to_thread(self.h.wait_metric, "herald_publish_batches_total",
                                lambda v: v == before[0] + 1)
        rest, r2 = self.post_all(queued)
        await asyncio.to_thread(self.h.wait_metric, "herald_publish_queued",
                                lambda v: v == len(queued))
        release()
        for t in first + rest:
            t.join(30)
        return before, r1, r2

    async def test_publishes_waiting_for_a_commit_leave_in_one_batch(self):
        ws = await self.connect(self.h)
        await subscribe(ws, "g")
        (batches0, stored0), r1, r2 = await self.publish_behind_a_lock(
            [{"n": i} for i in range(1, 10)])
        results = r1 + r2
        self.assertEqual([s for s, _ in results], [201] * 10, results)
        self.assertEqual(r1[0][1]["seq"], 2)
        self.assertEqual(sorted(b["seq"] for _, b in r2), list(range(3, 12)))
        self.assertEqual(self.counters(), (batches0 + 2, stored0 + 10))  # 1, then 9 together
        self.assertEqual([m["seq"] for m in await collect(ws, "g", 10)], list(range(2, 12)))
        self.assertEqual(self.pg.sql("SELECT last_seq FROM herald_channels WHERE name='g'"), "11")

    async def test_after_a_large_batch_the_next_waits_briefly_then_goes(self):
        """A batch of 16 or more makes the next one gather for a millisecond (so that the
        answered publishers' next messages share its commit); a lone publish after it must
        still go, in a batch of its own."""
        (batches0, stored0), r1, r2 = await self.publish_behind_a_lock(
            [{"n": i} for i in range(1, 21)])
        self.assertEqual([s for s, _ in r1 + r2], [201] * 21)
        self.assertEqual(self.counters(), (batches0 + 2, stored0 + 21))  # 1, then 20
        status, body = await asyncio.to_thread(post, self.h, "g", {"after": True})
        self.assertEqual((status, body["seq"]), (201, 23))
        self.assertEqual(self.counters(), (batches0 + 3, stored0 + 22))

    async def test_a_refused_message_fails_alone_and_the_rest_of_its_batch_is_stored(self):
        self.pg.sql("""CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
                       BEGIN IF NEW.envelope LIKE '%"poison"%' THEN
                       RAISE EXCEPTION 'poisoned message'; END IF; RETURN NEW; END $$;
                       CREATE TRIGGER poison BEFORE INSERT ON herald_messages
                       FOR EACH ROW EXECUTE FUNCTION poison();""")
        ws = await self.connect(self.h)
        await subscribe(ws, "g")
        (batches0, stored0), r1, r2 = await self.publish_behind_a_lock(
            [{"n": 1}, {"n": 2}, {"poison": 1}, {"n": 3}])
        self.assertEqual(r1[0], (201, {"channel": "g", "seq": 2, "epoch": r1[0][1]["epoch"]}))
        self.assertEqual(r2[2][0], 503, r2)  # the poisoned one, and only it
        self.assertEqual([r2[i][0] for i in (0, 1, 3)], [201] * 3, r2)
        self.assertEqual(sorted(r2[i][1]["seq"] for i in (0, 1, 3)), [3, 4, 5])
        # the batch of four was refused, then each went alone: 1 + 1 + 4 statements
        self.assertEqual(self.counters(), (batches0 + 6, stored0 + 4))
        self.assertEqual([m["seq"] for m in await collect(ws, "g", 4)], [2, 3, 4, 5])
        self.assertEqual(self.pg.sql("SELECT string_agg(seq::text, ',' ORDER BY seq) "
                                     "FROM herald_messages WHERE channel='g'"), "1,2,3,4,5")


class GroupCommitShutdownTest(GroupCommitTest):
    async def test_stopping_with_publishes_queued_and_in_flight(self):
        """SIGTERM while a batch waits in PostgreSQL and more wait behind it: every request
        is answered or cut, herald exits 0, and the sanitizer builds see no use after free
        (the batch in flight ends after the publisher was shut down)."""
        release = self.hold_lock("g")
        first, r1 = self.post_all([{"n": 0}])
        await asyncio.to_thread(self.h.wait_metric, "herald_publish_batches_total",
                                lambda v: v >= 2)
        rest, r2 = self.post_all([{"n": i} for i in range(1, 4)])
        await asyncio.to_thread(self.h.wait_metric, "herald_publish_queued", lambda v: v == 3)
        self.h.signal(15)
        self.assertEqual(await asyncio.to_thread(self.h.wait_exit, 30), 0)
        release()
        for t in first + rest:
            t.join(30)
        for status, _ in r1 + r2:  # 503, or the connection was closed under the request
            self.assertNotEqual(status, 201)

    test_publishes_waiting_for_a_commit_leave_in_one_batch = None
    test_a_refused_message_fails_alone_and_the_rest_of_its_batch_is_stored = None


class RetentionTest(HistoryTestCase):
    async def test_the_gateway_prunes_by_max_on_its_own(self):
        redis = self.start_redis()
        pg = self.start_postgres()
        h = self.start_herald_with_history(redis, pg, "--history-max", "3",
                                           "--prune-interval", "1s")
        await asyncio.to_thread(h.wait_ready)
        for i in range(10):
            await asyncio.to_thread(post, h, "t", {"i": i})
        await asyncio.to_thread(h.wait_metric, "herald_history_pruned_total", lambda v: v >= 7)
        self.assertEqual(pg.sql("SELECT string_agg(seq::text, ',' ORDER BY seq) "
                                "FROM herald_messages"), "8,9,10")


if __name__ == "__main__":
    main()
