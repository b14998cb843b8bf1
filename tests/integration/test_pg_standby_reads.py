#!/usr/bin/python3
"""Catch-up reads from a standby (issue 15, point 4): HERALD_DATABASE_READ_URL.

A primary and an asynchronous pg_basebackup standby. The gateway runs with no recent-message
cache (--recent-bytes 0), so every resume and every REST page is a history query:
- caught up: resumes and REST pages are answered by the standby (its transaction count
  grows, herald_history_standby_reads_total counts them), with the right messages;
- replay paused on the standby while more is published: a resume or page that needs what
  the standby has not replayed is answered by the primary (fallbacks counted), never with
  less than was published; a channel the standby does not know yet too;
- the standby gone: the primary answers everything."""

import asyncio
import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from durable_clients import post  # noqa: E402
from harness import async_wait_for, main, ws_connect  # noqa: E402
from pg import HistoryTestCase  # noqa: E402

CH = "standby:orders"
WAIT = 60


class StandbyReads(HistoryTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.primary = self.start_postgres()
        self.standby = self.start_standby(self.primary)
        self.h = self.start_herald_with_history(
            self.redis, self.primary, "--database-read-url", self.standby.url,
            "--recent-bytes", "0")
        self.h.wait_metric("herald_db_read_up", lambda v: v == 1)
        self.published = {}  # seq -> data["i"]
        # a live subscriber: the gateway follows the channel and knows its head
        self.live = await ws_connect(self.h.ws_url)
        self.addAsyncCleanup(self.live.close)
        await self.live.send(json.dumps({"op": "subscribe", "channel": CH}))
        self.assertEqual(json.loads(await self.live.recv())["op"], "subscribed")

    async def publish(self, n, channel=CH):
        for _ in range(n):
            i = self.sent = getattr(self, "sent", 0) + 1
            status, body = await asyncio.to_thread(post, self.h.base, channel, {"i": i}, f"k{i}")
            self.assertEqual(status, 201, body)
            if channel == CH:
                self.published[body["seq"]] = i

    async def until(self, predicate, what):
        await async_wait_for(predicate, WAIT, interval=0.05, what=what)

    def standby_head(self, channel=CH):
        out = self.standby.sql(f"SELECT last_seq FROM herald_channels WHERE name = '{channel}'")
        return int(out or 0)

    def standby_xacts(self):
        return int(self.standby.sql("SELECT xact_commit FROM pg_stat_database "
                                    "WHERE datname = 'herald'"))

    def counts(self):
        return (self.h.metric("herald_history_standby_reads_total"),
                self.h.metric("herald_history_standby_fallbacks_total"))

    async def resume(self, since, channel=CH):
        """Subscribes with since; returns the seqs replayed (each checked against what was
        published) and the subscribed reply."""
        ws = await ws_connect(self.h.ws_url)
        try:
            await ws.send(json.dumps({"op": "subscribe", "channel": channel, "since": since}))
            seqs = []
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if m["op"] == "subscribed":
                    return seqs, m
                self.assertEqual(m["op"], "message")
                if channel == CH:
                    self.assertEqual(m["data"]["i"], self.published[m["seq"]])
                seqs.append(m["seq"])
        finally:
            await ws.close()

    def page(self, since, channel=CH):
        url = f"{self.h.base}/v1/channels/{channel}/messages?since={since}"
        with urllib.request.urlopen(url, timeout=WAIT) as r:
            return json.loads(r.read())

    async def test_reads_follow_the_standby_only_when_it_has_caught_up(self):
        # ---- caught up: the standby answers
        await self.publish(40)
        await self.until(lambda: self.standby_head() == 40, "the standby at seq 40")
        xacts, (reads, fallbacks) = self.standby_xacts(), self.counts()
        seqs, sub = await self.resume(0)
        self.assertEqual(seqs, list(range(1, 41)))
        self.assertEqual((sub["seq"], sub["recovered"]), (40, True))
        page = await asyncio.to_thread(self.page, 10)
        self.assertEqual([m["seq"] for m in page["messages"]], list(range(11, 41)))
        r2, f2 = self.counts()
        self.assertGreaterEqual(r2 - reads, 2, "the standby answered neither read")
        self.assertEqual(f2, fallbacks)
        self.assertGreater(self.standby_xacts(), xacts, "no query reached the standby")

        # ---- replay paused: what the standby lacks comes from the primary
        self.standby.sql("SELECT pg_wal_replay_pause()")
        await self.publish(20)
        await self.publish(5, channel="standby:new")  # a channel the standby has never seen
        await self.until(lambda: self.h.metric("herald_db_up") == 1, "primary up")
        self.assertEqual(self.standby_head(), 40)
        reads, fallbacks = self.counts()
        seqs, sub = await self.resume(40)
        self.assertEqual(seqs, list(range(41, 61)), "the resume missed what the standby lacks")
        self.assertEqual((sub["seq"], sub["recovered"]), (60, True))
        page = await asyncio.to_thread(self.page, 50)
        self.assertEqual([m["seq"] for m in page["messages"]], list(range(51, 61)))
        self.assertEqual(page["seq"], 60)
        other = await asyncio.to_thread(self.page, 0, "standby:new")
        self.assertEqual([m["seq"] for m in other["messages"]], [1, 2, 3, 4, 5])
        r2, f2 = self.counts()
        self.assertGreaterEqual(f2 - fallbacks, 3, "a lagging standby answered")
        self.assertEqual(r2, reads)

        # ---- replay resumed: the standby serves again
        self.standby.sql("SELECT pg_wal_replay_resume()")
        await self.until(lambda: self.standby_head() == 60, "the standby caught up")
        reads, fallbacks = self.counts()
        seqs, _ = await self.resume(55)
        self.assertEqual(seqs, list(range(56, 61)))
        self.assertEqual(self.counts(), (reads + 1, fallbacks))

        # ---- the standby gone: the primary answers, nothing is refused
        self.standby.kill()
        await self.until(lambda: self.h.metric("herald_db_read_up") == 0, "the standby seen down")
        seqs, sub = await self.resume(0)
        self.assertEqual(seqs, list(range(1, 61)))
        self.assertTrue(sub["recovered"])
        self.assertEqual((await asyncio.to_thread(self.page, 58))["seq"], 60)
        self.assertEqual(self.counts()[0], reads + 1)


if __name__ == "__main__":
    main()
