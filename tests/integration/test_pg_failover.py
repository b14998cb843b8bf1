#!/usr/bin/python3
"""PostgreSQL failover under a live stream of durable publishes (issue 15, point 3).

A primary and a streaming standby made with pg_basebackup, synchronous replication (a COMMIT
is acknowledged only once the standby has it), and a gateway whose HERALD_DATABASE_URL lists
both with target_session_attrs=read-write. A publisher POSTs durable messages the whole time
(retrying with the same Idempotency-Key on failure) and a WebSocket client counts what it
gets. Then the primary fails and the standby is promoted:

- frozen (SIGSTOP: a hung host or a cut network, where TCP stays up and nothing answers). libpq
  bounds nothing in a non-blocking connect, so before Herald timed connects and queries itself
  and moved on to the next host, the pool kept going back to the frozen primary and no publish
  ever succeeded again;
- killed (SIGKILL).

Either way publishes succeed again within seconds of the promotion, every acknowledged message
is in the new primary under the seq it was acknowledged with, seqs run 1..head without a hole,
and the client got each exactly once, in order."""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from durable_clients import Client, Publisher  # noqa: E402
from harness import async_wait_for, main, ws_connect  # noqa: E402
from pg import PG_USER, HistoryTestCase  # noqa: E402

CHANNEL = "failover:orders"
CONNECT_TIMEOUT = "1s"  # HERALD_DB_CONNECT_TIMEOUT
QUERY_TIMEOUT = "2s"    # HERALD_DB_QUERY_TIMEOUT
WAIT = 60               # bound of every wait (a sanitizer build is slow)
RESUME_BOUND = 30       # publishes must succeed again this soon after the promotion
VERBOSE = bool(os.environ.get("HERALD_TEST_VERBOSE"))


def start_gateway_on_both(test):
    """A gateway whose HERALD_DATABASE_URL lists test.primary and test.standby and asks for
    the writable one, with short connect and query timeouts."""
    url = (f"postgresql://{PG_USER}@127.0.0.1:{test.primary.port},127.0.0.1:"
           f"{test.standby.port}/herald?target_session_attrs=read-write")
    h = test.start_herald(test.redis, "--database-url", url, "--migrate-on-start",
                          "--db-connect-timeout", CONNECT_TIMEOUT,
                          "--db-query-timeout", QUERY_TIMEOUT)
    h.wait_metric("herald_db_up", lambda v: v == 1)
    return h


class PgFailover(HistoryTestCase):
    def setUp(self):
        super().setUp()
        self.phase = "setup"
        self.redis = self.start_redis()
        # pg.py turns synchronous_commit off for speed; here a COMMIT must wait for the standby
        self.primary = self.start_postgres(settings={"synchronous_commit": "on"})
        self.standby = self.start_standby(self.primary, settings={"synchronous_commit": "on"})
        # synchronous: what was acknowledged is on the standby too
        self.primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        self.primary.sql("SELECT pg_reload_conf()")
        self.wait_sync()
        self.herald = start_gateway_on_both(self)

    def wait_sync(self):
        deadline = time.monotonic() + WAIT
        while self.primary.sql("SELECT count(*) FROM pg_stat_replication "
                               "WHERE sync_state = 'sync'") != "1":
            self.assertLess(time.monotonic(), deadline, "the standby never became synchronous")
            time.sleep(0.1)

    def log(self, text):
        if VERBOSE:
            sys.stderr.write(f"\n[{time.strftime('%H:%M:%S')}] {text}")

    async def until(self, predicate, what, timeout=WAIT):
        return await async_wait_for(predicate, timeout, interval=0.05, what=what)

    async def fail_over(self, how):
        h = self.herald
        client = Client(0, h.ws_url, self, CHANNEL)
        client.task = asyncio.create_task(client.run())
        self.addAsyncCleanup(client.stop)
        publisher = Publisher([("herald", h.base)], CHANNEL, wait=WAIT, interval=0.02)
        self.addCleanup(publisher.halt.set)
        self.assertTrue(await asyncio.to_thread(publisher.publish, 0))
        await self.until(lambda: client.subscribed, "the client subscribed")
        publisher.start()
        self.phase = "live"
        await self.until(lambda: publisher.head >= 30, "30 messages before the failure")

        self.phase = how
        head_before = publisher.head
        if how == "frozen":
            self.primary.freeze()
            self.addCleanup(self.primary.thaw)  # runs before the kill registered earlier
        else:
            self.primary.kill()
        self.standby.sql("SELECT pg_promote(true, 60)")
        promoted_at = time.monotonic()
        await self.until(lambda: publisher.head > head_before + 30,
                         "30 messages acknowledged after the promotion",
                         timeout=RESUME_BOUND + WAIT)
        resumed_after = publisher.first_ack_after(promoted_at) - promoted_at
        self.log(f"{how}: first acknowledged publish {resumed_after:.2f} s after the promotion; "
                 f"{len(publisher.failures)} failed attempts")
        self.assertLess(resumed_after, RESUME_BOUND,
                        f"publishes succeeded again only {resumed_after:.1f} s after promotion")

        publisher.halt.set()
        await asyncio.to_thread(publisher.join, WAIT)
        self.assertIsNone(publisher.fatal)
        if how == "frozen":
            self.primary.kill()
            self.primary.thaw()  # its backends see the postmaster gone and exit

        # the new primary holds every acknowledged message under its acknowledged seq
        rows = self.standby.sql(f"SELECT seq, envelope::json->'data'->>'i' FROM herald_messages "
                                f"WHERE channel = '{CHANNEL}' ORDER BY seq")
        stored = {int(s): int(i) for s, i in (r.split("|") for r in rows.splitlines())}
        head = max(publisher.seq_of.values())
        self.assertEqual(sorted(stored), list(range(1, head + 1)), "seqs with a hole")
        self.assertEqual({k: stored[seq] for k, seq in publisher.seq_of.items()},
                         {k: k for k in publisher.seq_of}, "an acknowledged message is missing")
        await self.until(lambda: client.last >= head, f"the client at seq {head}")
        await client.stop()
        self.assertEqual(client.problems, [])
        self.assertEqual(client.seqs, list(range(1, head + 1)))
        self.assertGreaterEqual(self.herald.metric("herald_db_up"), 1)

    async def test_frozen_primary(self):
        await self.fail_over("frozen")

    async def test_killed_primary(self):
        await self.fail_over("killed")



class AsyncReplicationLoss(HistoryTestCase):
    """Asynchronous replication: the standby misses the last commits (its WAL receiver
    is stopped while they are made), then the primary dies and the standby is promoted. The messages the
    client got last are gone, and their seqs are issued again to new messages. The gateway's
    head check finds that PostgreSQL no longer has what it delivered, gives the channel a new
    epoch, and the client is told to reload (an unasked subscribed with history_reset); from
    there it gets every new message once, in order. Without this the client would drop the
    new messages with the reused seqs as duplicates, silently."""

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.primary = self.start_postgres()
        self.standby = self.start_standby(self.primary)
        self.herald = start_gateway_on_both(self)

    async def test_lost_commits_give_the_channel_a_new_epoch_and_clients_reload(self):
        h = self.herald
        ws = await ws_connect(h.ws_url)
        self.addAsyncCleanup(ws.close)
        frames = []

        async def read():
            async for raw in ws:
                frames.append(json.loads(raw))
        reader = asyncio.create_task(read())
        self.addCleanup(reader.cancel)
        await ws.send(json.dumps({"op": "subscribe", "channel": CHANNEL}))
        # live from the answer on: a publish before it would not reach the client (a slow
        # ASan gateway once answered after the first publish)
        await async_wait_for(lambda: any(f.get("op") == "subscribed" for f in frames), WAIT,
                             what="the subscribe answered")
        publisher = Publisher([("herald", h.base)], CHANNEL, wait=WAIT, interval=0.02)
        for k in range(20):
            self.assertTrue(await asyncio.to_thread(publisher.publish, k))
        head = lambda pg: int(pg.sql(  # noqa: E731
            f"SELECT coalesce(max(last_seq), 0) FROM herald_channels WHERE name = '{CHANNEL}'"))
        await async_wait_for(lambda: head(self.standby) == 20, WAIT, what="the standby at 20")
        epoch = self.primary.sql(f"SELECT epoch FROM herald_channels WHERE name = '{CHANNEL}'")

        # the standby misses the next six commits; the client gets them. Its WAL receiver is
        # stopped, not frozen: a frozen one leaves the WAL in its socket, and reads and
        # replays it once thawed, before the promotion
        self.standby.sql("ALTER SYSTEM SET primary_conninfo = ''")
        self.standby.sql("SELECT pg_reload_conf()")
        await async_wait_for(
            lambda: self.standby.sql("SELECT count(*) FROM pg_stat_wal_receiver") == "0", WAIT,
            what="the standby's WAL receiver stopped")
        for k in range(20, 26):
            self.assertTrue(await asyncio.to_thread(publisher.publish, k))
        seqs = lambda: [f["seq"] for f in frames if f.get("op") == "message"]  # noqa: E731
        await async_wait_for(lambda: seqs()[-1:] == [26], WAIT, what="the client at 26")

        # failover to the standby that lacks 21..26
        self.primary.kill()
        self.standby.sql("SELECT pg_promote(true, 60)")
        self.assertEqual(head(self.standby), 20)
        for k in range(26, 40):
            self.assertTrue(await asyncio.to_thread(publisher.publish, k))
        resets = lambda: [f for f in frames if f.get("op") == "subscribed" and  # noqa: E731
                          f.get("code") == "history_reset"]
        await async_wait_for(lambda: resets(), WAIT, what="the client told to reload")
        reset = resets()[0]
        new_epoch = self.standby.sql(f"SELECT epoch FROM herald_channels WHERE name = '{CHANNEL}'")
        self.assertNotEqual(new_epoch, epoch)
        self.assertEqual((reset["epoch"], reset["recovered"]), (new_epoch, False))
        self.assertGreaterEqual(h.metric("herald_history_divergences_total"), 1)

        # after the reset: every message published after the failover and not covered by
        # the reset's head arrives once, in order
        final = max(publisher.seq_of.values())
        await async_wait_for(lambda: seqs()[-1:] == [final] or reset["seq"] >= final, WAIT,
                             what=f"the client at {final}")
        at = frames.index(reset)
        after = [f["seq"] for f in frames[at + 1:] if f.get("op") == "message"]
        self.assertEqual(after, list(range(reset["seq"] + 1, final + 1)))
        before = seqs()[:len(seqs()) - len(after)]
        self.assertEqual(before, list(range(1, 27)), "before the reset: what the old primary had")

        # a client resuming from the lost history is told to reload as well
        ws2 = await ws_connect(h.ws_url)
        self.addAsyncCleanup(ws2.close)
        await ws2.send(json.dumps({"op": "subscribe", "channel": CHANNEL, "since": 26,
                                   "epoch": epoch}))
        answer = json.loads(await asyncio.wait_for(ws2.recv(), WAIT))
        self.assertEqual((answer["op"], answer["recovered"], answer["code"], answer["epoch"]),
                         ("subscribed", False, "history_reset", new_epoch))


if __name__ == "__main__":
    main()
