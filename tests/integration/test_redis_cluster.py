#!/usr/bin/python3
"""Redis Cluster (issue 15, point 2): HERALD_REDIS_URL=redis-cluster://n1,n2,... with
HERALD_REDIS_PUBSUB=sharded (SSUBSCRIBE and SPUBLISH on each channel's slot owner) and
classic (SUBSCRIBE on one node; PUBLISH reaches every node).

A real cluster of 3 masters and 3 replicas (Debian's redis-server), a gateway on PostgreSQL.
Durable messages are published through the gateway on channels spread over every master's
slots the whole time; one master is killed with SIGKILL and its replica promoted by the
cluster itself:

- sharded: each channel is subscribed on its own master only; after the failover the gateway
  subscribes the moved channels on the promoted replica, and every sequenced message reaches
  every client once, in order (what was published while the slot had no master comes from
  PostgreSQL); /readyz is not 200 while a slot has no live master;
- classic: the gateway's one subscription is on the first seed; that node is killed and the
  gateway moves to the next seed; nothing sequenced is lost either;
- a slot moved by hand (CLUSTER SETSLOT ... NODE) while subscribed: the node that loses it
  drops the subscription unasked; the gateway subscribes the channel on the new owner;
- nodes that lie at the byte level (CLUSTER SLOTS answered with errors, nils, wrong shapes,
  out-of-range slots and ports, a huge bulk, silence, or a map naming a fake master): the
  gateway stays alive, uses none of it, and ends up on the real cluster.

Presence (issue 16) on the cluster, sharded mode, three gateways and no PostgreSQL:

- channels on every master: each channel's three keys presence:{C}:e|i|n live on the master of
  the channel's slot and nowhere else, holding one entry per user per gateway; every gateway
  lists the same members over WebSocket and REST, joins and leaves reach every gateway; no
  MOVED or CROSSSLOT, no presence error;
- the master of one presence channel killed with SIGKILL: once its replica is promoted, every
  gateway renews its members there within the TTL and the list is whole again (whether or not
  the replica had the keys); a user who joins afterwards is listed and announced; the keys
  deleted on the new master come back at the next renewal; presence on the other masters'
  channels is undisturbed;
- presence with a redis-cluster:// URL in classic mode is refused at start (exit 2 and why)."""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from durable_clients import Client, Publisher, post  # noqa: E402
from harness import (HeraldTestCase, RedisConn, RedisError, async_wait_for,  # noqa: E402
                     close_quietly, http_get, main, parse_metrics, recv_json,
                     subscribe, ws_connect)
from pg import HistoryTestCase  # noqa: E402
from redis_cluster import channels_spread, key_slot, start_cluster  # noqa: E402
from redis_ha import FakeRedis, resp_array  # noqa: E402
from test_redis_sentinel import ReadyzPoller  # noqa: E402
from test_presence import Events, http_json  # noqa: E402

WAIT = 60
VERBOSE = bool(os.environ.get("HERALD_TEST_VERBOSE"))


def shard_subscribers(port, channel):
    """PUBSUB SHARDNUMSUB of one channel on one node (0 when the node is gone)."""
    try:
        with RedisConn(port, timeout=1.0) as c:
            return int(c.command("PUBSUB", "SHARDNUMSUB", channel)[1])
    except (OSError, ConnectionError):
        return 0


def shard_up(h, server):
    """herald_redis_shard_up of the node labelled `server`, whatever its shard index; None
    when no sample names it."""
    for name, labels, value in parse_metrics(h.metrics_text()):
        if name == "herald_redis_shard_up" and labels.get("server") == server:
            return value
    return None


def classic_subscribers(port, channel):
    try:
        with RedisConn(port, timeout=1.0) as c:
            return int(c.command("PUBSUB", "NUMSUB", channel)[1])
    except (OSError, ConnectionError):
        return 0


async def slots_moved_to(cluster, h, prefix, dst, tries=8):
    """For up to `tries` channels named from prefix that dst does not serve: waits until h is
    ready, gives the channel's slot to dst and yields (attempt, channel, the gateway's
    herald_redis_redirects_total before the move). The caller stops at the first request
    that was redirected: a periodic map refresh between a move and the request leaves
    nothing to redirect."""
    for attempt, ch in enumerate(channels_spread(prefix, tries)):
        slot = key_slot(ch)
        if cluster.master_of(slot) == dst:
            continue
        # every master up again after the last move
        await asyncio.to_thread(h.wait_ready, WAIT)
        redirects = h.metric("herald_redis_redirects_total")
        move_slot(cluster, slot, dst)
        yield attempt, ch, redirects


def move_slot(cluster, slot, dst):
    """Gives slot to the master at port dst by hand (CLUSTER SETSLOT ... NODE), the new owner
    first, as redis-cli --cluster does. A SETSLOT NODE without a migration bumps no epoch, so
    gossip from the old owner could give the slot back for a moment: the new owner then takes
    a newer epoch, as a finished migration would."""
    with RedisConn(dst) as c:
        dst_id = c.command("CLUSTER", "MYID").decode()
    for m in sorted(cluster.masters, key=lambda m: m.port != dst):
        with RedisConn(m.port) as c:
            c.command("CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)
    with RedisConn(dst) as c:
        c.command("CLUSTER", "BUMPEPOCH")


class ClusterTest(HistoryTestCase):
    def setUp(self):
        super().setUp()
        self.phase = "setup"
        self.pg = self.start_postgres()

    def start_gateway(self, url, mode):
        h = self.start_herald(url, "--database-url", self.pg.url, "--migrate-on-start",
                              "--heartbeat-ms", "200", env={"HERALD_REDIS_PUBSUB": mode})
        h.wait_metric("herald_db_up", lambda v: v == 1)
        return h

    def log(self, text):
        if VERBOSE:
            sys.stderr.write(f"\n[{time.strftime('%H:%M:%S')}] {text}")

    async def until(self, predicate, what, timeout=WAIT):
        return await async_wait_for(predicate, timeout, interval=0.02, what=what)

    async def stream(self, h, channels, clients_per_channel=2):
        """A publisher per channel through the gateway and clients on each; returns both once
        messages flow on every channel."""
        pubs = [Publisher([("herald", h.base)], ch, wait=WAIT, interval=0.03) for ch in channels]
        clients = [Client(i, h.ws_url, self, ch)
                   for i, ch in enumerate(ch for ch in channels
                                          for _ in range(clients_per_channel))]
        for c in clients:
            c.task = asyncio.create_task(c.run())
            self.addAsyncCleanup(c.stop)
        for p in pubs:
            self.addCleanup(p.halt.set)
            self.assertTrue(await asyncio.to_thread(p.publish, 0))
        await self.until(lambda: all(c.subscribed for c in clients), "clients subscribed")
        for p in pubs:
            p.start()
        await self.until(lambda: all(p.head >= 20 for p in pubs), "traffic on every channel")
        return pubs, clients

    async def finish(self, pubs, clients):
        """Stops publishing; every client must hold every seq of its channel once, in order."""
        for p in pubs:
            p.halt.set()
            await asyncio.to_thread(p.join, WAIT)
            self.assertIsNone(p.fatal)
        heads = {p.channel: max(p.seq_of.values()) for p in pubs}
        await self.until(lambda: all(c.last >= heads[c.channel] for c in clients),
                         "every client at its channel's head")
        for c in clients:
            self.assertEqual(c.problems, [], f"client {c.idx}")
            self.assertEqual(c.seqs, list(range(1, heads[c.channel] + 1)),
                             f"client {c.idx} on {c.channel}")
        return heads

    async def test_sharded_master_killed_while_publishing(self):
        cluster = start_cluster(self, masters=3, replicas=1)
        channels = channels_spread("orders:", 6)  # two in each master's slots
        owner = {ch: cluster.master_of(key_slot(ch)) for ch in channels}
        self.assertEqual(len(set(owner.values())), 3)
        h = self.start_gateway(cluster.url(), "sharded")
        await asyncio.to_thread(h.wait_ready, WAIT)
        for m in cluster.masters:
            self.assertEqual(shard_up(h, f"127.0.0.1:{m.port}"), 1)

        pubs, clients = await self.stream(h, channels)
        # each channel is subscribed on its own master and nowhere else
        for ch in channels:
            for m in cluster.masters:
                self.assertEqual(shard_subscribers(m.port, ch), 1 if m.port == owner[ch] else 0,
                                 f"{ch} on {m.port}")
                self.assertEqual(classic_subscribers(m.port, ch), 0)
        raw_ws = await ws_connect(h.ws_url)
        self.addAsyncCleanup(raw_ws.close)
        victim = owner[channels[0]]
        moved = [ch for ch in channels if owner[ch] == victim]
        raw = moved[0] + ":raw"
        await raw_ws.send(json.dumps({"op": "subscribe", "channel": raw}))
        self.assertEqual(json.loads(await raw_ws.recv())["op"], "subscribed")
        readyz = ReadyzPoller(h)
        readyz.start()
        self.addCleanup(readyz.halt.set)
        polled_from = time.monotonic()
        await self.until(lambda: len(readyz.seen) >= 10 and time.monotonic() > polled_from + 1,
                         "/readyz polled for a second")

        # ---- the failover
        self.phase = "failover"
        heads_at_kill = [p.head for p in pubs]
        killed_at = time.monotonic()
        cluster.kill_master(victim)
        promoted = await asyncio.to_thread(cluster.wait_promoted, victim, WAIT)
        promoted_at = time.monotonic()
        for ch in moved:
            await self.until(lambda ch=ch: shard_subscribers(promoted, ch) == 1,
                             f"{ch} subscribed on the promoted replica {promoted}")
        resubscribed_at = time.monotonic()
        await self.until(lambda: all(p.head >= h0 + 20 for p, h0 in zip(pubs, heads_at_kill)),
                         "durable publishes go on on every channel")
        self.log(f"after the kill: replica {promoted} promoted at {promoted_at - killed_at:.2f} "
                 f"s, the gateway subscribed there at {resubscribed_at - killed_at:.2f} s")
        readyz.halt.set()
        await asyncio.to_thread(readyz.join, WAIT)
        heads = await self.finish(pubs, clients)
        self.log(f"sequenced heads {heads}: none lost")

        # a raw message on the moved slots reaches the client through the new master
        await self.until(lambda: shard_subscribers(promoted, raw) == 1, "raw channel moved")
        self.assertEqual(cluster.spublish(raw, json.dumps({"r": 1})), 1)
        frame = json.loads(await asyncio.wait_for(raw_ws.recv(), 10))
        self.assertEqual((frame["op"], frame["data"]), ("message", {"r": 1}))

        # /readyz: 200 before, never 200 while the slots had no live master, 200 at the end
        # (a sample's time is when its request was sent: the last ones before the kill may
        # have been answered after it)
        self.assertEqual({st for t, st in readyz.seen if t < killed_at - 0.5}, {200})
        gap = [st for t, st in readyz.seen if killed_at + 0.7 < t < promoted_at - 1.5]
        self.assertNotIn(200, gap, "ready while some slots had no live master")
        self.assertIn(503, [st for t, st in readyz.seen if t > killed_at])
        await asyncio.to_thread(h.wait_ready, WAIT)
        self.assertEqual(shard_up(h, f"127.0.0.1:{promoted}"), 1)
        self.assertIsNone(shard_up(h, f"127.0.0.1:{victim}"))
        self.assertIn(f"master 127.0.0.1:{promoted} joins the slot map", h.log_text())
        self.assertTrue(h.alive())

    async def test_classic_subscribed_node_killed(self):
        cluster = start_cluster(self, masters=3, replicas=1)
        channels = channels_spread("tasks:", 3)
        h = self.start_gateway(cluster.url(), "classic")
        await asyncio.to_thread(h.wait_ready, WAIT)
        first = cluster.nodes[0]  # the first seed: where the one subscription goes
        pubs, clients = await self.stream(h, channels, clients_per_channel=1)
        for ch in channels:
            self.assertEqual(classic_subscribers(first.port, ch), 1)
            self.assertEqual(shard_subscribers(first.port, ch), 0)
        self.phase = "failover"
        heads_at_kill = [p.head for p in pubs]
        cluster.kill_master(first.port)
        await asyncio.to_thread(cluster.wait_promoted, first.port, WAIT)
        await self.until(lambda: all(p.head >= h0 + 20 for p, h0 in zip(pubs, heads_at_kill)),
                         "durable publishes go on")
        await self.finish(pubs, clients)
        second = cluster.nodes[1]
        self.assertEqual(classic_subscribers(second.port, channels[0]), 1)
        # a classic PUBLISH on any node reaches the gateway
        raw_ws = await ws_connect(h.ws_url)
        self.addAsyncCleanup(raw_ws.close)
        await raw_ws.send(json.dumps({"op": "subscribe", "channel": "tasks:raw"}))
        await raw_ws.recv()
        cluster.publish("tasks:raw", json.dumps({"r": 2}))
        frame = json.loads(await asyncio.wait_for(raw_ws.recv(), 10))
        self.assertEqual(frame["data"], {"r": 2})
        self.assertEqual(shard_up(h, f"cluster/127.0.0.1:{first.port}"), 1)

    @staticmethod
    def owns(listener, channel):
        """SSUBSCRIBE channel on listener; False while the node answers MOVED."""
        try:
            listener.command("SSUBSCRIBE", channel)
            return True
        except RedisError:
            return False

    async def one_channel_on_three_masters(self, prefix):
        """3 masters, a sharded gateway, a channel: (cluster, gateway, channel, its slot, the
        slot's master, another master)."""
        cluster = start_cluster(self, masters=3, replicas=0)
        h = self.start_gateway(cluster.url(), "sharded")
        await asyncio.to_thread(h.wait_ready, WAIT)
        ch = channels_spread(prefix, 1)[0]
        slot = key_slot(ch)
        owner = cluster.master_of(slot)
        other = next(m.port for m in cluster.masters if m.port != owner)
        return cluster, h, ch, slot, owner, other

    async def test_slot_moved_while_subscribed(self):
        cluster, h, ch, slot, src, dst = await self.one_channel_on_three_masters("rooms:")
        ws = await ws_connect(h.ws_url)
        self.addAsyncCleanup(ws.close)
        await ws.send(json.dumps({"op": "subscribe", "channel": ch}))
        self.assertEqual(json.loads(await ws.recv())["op"], "subscribed")
        await self.until(lambda: shard_subscribers(src, ch) == 1, "subscribed on the owner")
        move_slot(cluster, slot, dst)
        await self.until(lambda: shard_subscribers(dst, ch) == 1, "subscribed on the new owner")
        self.assertEqual(shard_subscribers(src, ch), 0)
        with RedisConn(dst) as c:
            self.assertEqual(c.command("SPUBLISH", ch, json.dumps({"moved": True})), 1)
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        self.assertEqual(frame["data"], {"moved": True})
        self.assertIn("gave up a channel (slot moved)", h.log_text())

        # the gateway's map is stale for a slot it holds no subscription in (no sunsubscribe
        # tells it): its SPUBLISH gets MOVED and is sent again on the new owner. Should a
        # periodic refresh land between the move and the publish, no MOVED happens: try
        # another slot.
        # (every master is up again before each move: a publish to a master that is down is
        # left to the head check, and would never reach this listener)
        async for attempt, other, redirects in slots_moved_to(cluster, h, "redirect:", dst):
            listener = RedisConn(dst, timeout=10.0)
            self.addCleanup(listener.close)
            await self.until(lambda: self.owns(listener, other), "the new owner takes it")
            status, body = await asyncio.to_thread(post, h.base, other, {"r": attempt},
                                                   f"redirect-{attempt}")
            self.assertEqual(status, 201, body)
            got = await asyncio.to_thread(listener._read)
            self.assertEqual(got[0], b"smessage")
            self.assertEqual(json.loads(got[2])["data"], {"r": attempt})
            if h.metric("herald_redis_redirects_total") == redirects + 1:
                break
        else:
            self.fail("no SPUBLISH was redirected: the map was refreshed before each publish")
        self.assertTrue(h.alive())

        # herald publish SPUBLISHes too: its first node is not the owner, so it follows MOVED
        first = src
        url = f"redis-cluster://127.0.0.1:{first}," + cluster.url().split("://", 1)[1]
        r = self.herald_cli("publish", ch, '{"cli":1}', "--redis-pubsub", "sharded",
                            pg=self.pg, redis=url)
        self.assertEqual(json.loads(r.stdout)["duplicate"], False)
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        self.assertEqual((frame["seq"], frame["data"]), (1, {"cli": 1}))

    async def test_a_redirect_that_cannot_be_followed_is_logged(self):
        # the slot of a channel given to master B in master A's view only: A answers MOVED B
        # and B answers MOVED A, whatever map the gateway holds. Its SPUBLISH follows one
        # redirect, then fails and is logged (the path of a command without a callback), and
        # the gateway stays up. (Nobody subscribes to the channel: an SSUBSCRIBE answered
        # MOVED takes its node down, and a node that is down is sent no SPUBLISH.) Once B
        # takes the slot too, the message, stored in PostgreSQL, is there to resume from.
        cluster, h, ch, slot, a, b = await self.one_channel_on_three_masters("pingpong:")
        with RedisConn(b) as c:
            b_id = c.command("CLUSTER", "MYID").decode()
        with RedisConn(a) as c:
            c.command("CLUSTER", "SETSLOT", str(slot), "NODE", b_id)
        status, body = await asyncio.to_thread(post, h.base, ch, {"pp": 1}, "pp-1")
        self.assertEqual(status, 201, body)
        await self.until(lambda: f"SPUBLISH {ch} failed: MOVED" in h.log_text(),
                         "the failed SPUBLISH logged")
        self.assertGreaterEqual(h.metric("herald_redis_redirects_total"), 2)
        self.assertTrue(h.alive())
        move_slot(cluster, slot, b)
        await asyncio.to_thread(h.wait_ready, WAIT)
        ws = await ws_connect(h.ws_url)
        self.addAsyncCleanup(ws.close)
        await ws.send(json.dumps({"op": "subscribe", "channel": ch, "since": 0}))
        frames = [await recv_json(ws, timeout=WAIT)]
        while frames[-1].get("op") != "subscribed":
            frames.append(await recv_json(ws, timeout=WAIT))
        self.assertEqual([(f["seq"], f["data"]) for f in frames if f.get("op") == "message"],
                         [(1, {"pp": 1})], frames)
        self.assertTrue(h.alive())

    async def test_lying_nodes(self):
        cluster = start_cluster(self, masters=1, replicas=0)
        real = cluster.masters[0]
        fake_master = FakeRedis(b"+OK\r\n")
        self.addCleanup(fake_master.close)

        def entry(start, end, host, port):
            return (b"*3\r\n:%d\r\n:%d\r\n" % (start, end)) + resp_array(host, port)

        def slots(*entries):
            return b"*%d\r\n" % len(entries) + b"".join(entries)

        answers = {
            "error": b"-ERR This instance has cluster support disabled\r\n",
            "nil": b"*-1\r\n",
            "integers": b"*2\r\n:1\r\n:6379\r\n",
            "empty map": b"*0\r\n",
            "slot past 16383": slots(entry(0, 16384, b"127.0.0.1", str(real.port).encode())),
            "end before start": slots(entry(10, 5, b"127.0.0.1", str(real.port).encode())),
            "port as text": slots(b"*3\r\n:0\r\n:16383\r\n" + resp_array(b"127.0.0.1", b"1")),
            "unknown address": slots(entry(0, 16383, b"?", b"")),
            "huge bulk": b"$99999999999\r\n",
            "huge array": b"*2000000000\r\n",  # hiredis would allocate 16 GB for it
            "silence": None,
        }
        # port 99999 is not a port; and a map that names a master that is a fake
        answers["bad port"] = slots(b"*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:99999\r\n")
        answers["names a fake master"] = slots(
            b"*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n" % fake_master.port)
        names = list(answers)
        for group in (names[:6], names[6:]):
            with self.subTest(group=group):
                await self.fakes_then_real(group, answers, real, fake_master)

    async def fakes_then_real(self, names, answers, real, fake_master):
        fakes = [FakeRedis(answers[n]) for n in names]
        for f in fakes:
            self.addCleanup(f.close)
        url = "redis-cluster://" + ",".join(
            [f"127.0.0.1:{f.port}" for f in fakes] + [f"127.0.0.1:{real.port}"])
        h = self.start_herald(url, "--heartbeat-ms", "200", env={"HERALD_REDIS_PUBSUB": "sharded"})
        await asyncio.to_thread(h.wait_ready, WAIT)
        ws = await ws_connect(h.ws_url)
        await ws.send(json.dumps({"op": "subscribe", "channel": "lies:1"}))
        self.assertEqual(json.loads(await ws.recv())["op"], "subscribed")
        await self.until(lambda: shard_subscribers(real.port, "lies:1") == 1, "on the real node")
        with RedisConn(real.port) as c:
            self.assertEqual(c.command("SPUBLISH", "lies:1", json.dumps({"ok": 1})), 1)
        self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), 10))["data"], {"ok": 1})
        await ws.close()
        for name, f in zip(names, fakes):
            self.assertGreaterEqual(f.asked, 1, f"the fake that answers {name} was never asked")
        text = h.log_text()
        self.assertIn("cannot take the slot map from", text)
        if "silence" in names:
            self.assertIn("no answer in time", text)
        if "huge array" in names:
            self.assertIn("a reply with too many elements", text)
        if "names a fake master" in names:
            self.assertGreaterEqual(fake_master.asked, 1)
            self.assertIn(f"127.0.0.1:{fake_master.port} unavailable", text)
        self.assertTrue(h.alive())
        status, _, body = http_get(f"{h.base}/readyz")
        self.assertEqual(status, 200, body)
        await asyncio.to_thread(h.stop)


# ---------------------------------------------------------------------------------------------
# Presence on the cluster

PRESENCE_TTL_MS = 2000
PRESENCE_LINGER_MS = 300
LIST_WAIT = 15   # s: a list that should be whole at once (fails sooner than WAIT)
USERS = ("alice", "bob", "carol")   # user k on gateway k


def presence_keys(ch, prefix=""):
    return [f"{prefix}presence:{{{ch}}}:{w}" for w in "ein"]


def node_presence_keys(port):
    """Every presence key on one node (whatever its prefix), sorted."""
    with RedisConn(port, timeout=2.0) as c:
        return sorted(k.decode() for k in c.command("KEYS", "*presence:*"))


def presence_entries(port, ch, prefix=""):
    """{entry: expiry ms} of the channel's sorted set on the node at port ({} if none or gone);
    an entry is "<instance>\\0<sub>", "<instance>\\0" for its anonymous connections."""
    try:
        with RedisConn(port, timeout=1.0) as c:
            flat = c.command("ZRANGE", presence_keys(ch, prefix)[0], "0", "-1", "WITHSCORES")
    except (OSError, ConnectionError, RedisError):
        return {}
    return {flat[k].decode(): int(float(flat[k + 1])) for k in range(0, len(flat), 2)}


def redis_time_ms(port):
    with RedisConn(port, timeout=2.0) as c:
        sec, usec = c.command("TIME")
    return int(sec) * 1000 + int(usec) // 1000


class ClusterPresenceTest(HeraldTestCase):
    def gateways(self, cluster, n=3, **env):
        """n gateways on the cluster, sharded, presence on room:* (gateway k is instance gwk)."""
        hs = []
        for k in range(n):
            e = {"HERALD_REDIS_PUBSUB": "sharded", "HERALD_PRESENCE": "room:*",
                 "HERALD_PRESENCE_TTL": f"{PRESENCE_TTL_MS}ms",
                 "HERALD_PRESENCE_LINGER": f"{PRESENCE_LINGER_MS}ms",
                 "HERALD_INSTANCE_ID": f"gw{k}"}
            e.update(env)
            hs.append(self.start_herald(cluster.url(), "--heartbeat-ms", "200", env=e))
        for h in hs:
            h.wait_ready(WAIT)
        return hs

    def log(self, text):
        if VERBOSE:
            sys.stderr.write(f"\n[{time.strftime('%H:%M:%S')}] {text}")

    async def member(self, h, ch, sub=None):
        ws = await self.connect(h)
        await subscribe(ws, ch, **({"sub": sub} if sub else {}))
        return ws

    async def presence(self, ws, ch):
        """The presence reply (join, leave and message frames before it are skipped)."""
        await ws.send(json.dumps({"op": "presence", "channel": ch, "id": "p"}))
        while True:
            m = await recv_json(ws, timeout=10)
            if m.get("op") not in ("join", "leave", "message"):
                return m

    async def wait_lists(self, hs, probes, ch, subs, count, timeout):
        """Until every gateway answers members `subs` (and `count`) for ch, over WebSocket (its
        probe, not subscribed) and REST alike; returns the WebSocket reply."""
        want = {"channel": ch, "count": count, "members": None}
        last = {}

        async def whole():
            for k, (h, probe) in enumerate(zip(hs, probes)):
                r = await self.presence(probe, ch)
                last[f"gw{k} ws"] = r
                if (r.get("op"), [m["sub"] for m in r.get("members", [])], r.get("count")) != \
                        ("presence", subs, count):
                    return False
                want["members"] = r["members"]
                status, body = await asyncio.to_thread(
                    http_json, f"{h.base}/v1/channels/{ch}/presence")
                last[f"gw{k} rest"] = (status, body)
                if (status, body) != (200, want):
                    return False
            return True

        deadline = time.monotonic() + timeout
        while not await whole():
            if time.monotonic() > deadline:
                raise AssertionError(f"{ch}: not {subs} (count {count}) on every gateway within "
                                     f"{timeout:.1f} s; last answers {last}")
            await asyncio.sleep(0.05)
        return last["gw0 ws"]

    def assert_clean_logs(self, hs):
        for k, h in enumerate(hs):
            self.assertEqual(h.metric("herald_presence_errors_total"), 0, f"gw{k}")
            text = h.log_text()
            for word in ("MOVED", "CROSSSLOT", "presence"):
                self.assertNotIn(word, text, f"gw{k}'s log")

    async def test_presence_on_every_master(self):
        await self.presence_everywhere("")

    async def test_presence_on_every_master_prefixed(self):
        # with HERALD_REDIS_PREFIX the channels' own Redis names (app:room:N, where the
        # events go) hash elsewhere than their keys (app:presence:{room:N}:x): the keys
        # still follow their hash tag, the events their channel
        await self.presence_everywhere("app:")

    async def presence_everywhere(self, prefix):
        cluster = start_cluster(self, masters=3, replicas=0)
        channels = channels_spread("room:", 3)
        owner = {ch: cluster.master_of(key_slot(ch)) for ch in channels}
        self.assertEqual(set(owner.values()), {m.port for m in cluster.masters})
        with RedisConn(cluster.masters[0].port) as c:   # the hash tag: one slot, the channel's
            for ch in channels:
                for key in presence_keys(ch, prefix):
                    self.assertEqual(c.command("CLUSTER", "KEYSLOT", key), key_slot(ch), key)
        if prefix:
            for ch in channels:
                self.assertNotEqual(cluster.master_of(key_slot(prefix + ch)), owner[ch], ch)
        hs = self.gateways(cluster, HERALD_REDIS_PREFIX=prefix)
        probes = [await self.connect(h) for h in hs]
        watchers, members = {}, {}
        for i, ch in enumerate(channels):
            # user k on gateway k, subscribed in that order; an anonymous one on gateway i
            members[ch] = [await self.member(hs[k], ch, sub) for k, sub in enumerate(USERS)]
            await self.member(hs[i], ch)
            watchers[ch] = [Events(ws) for ws in members[ch][:2]]
            for ev in watchers[ch]:
                self.addAsyncCleanup(ev.stop)
        for ch in channels:
            r = await self.wait_lists(hs, probes, ch, list(USERS), 4, LIST_WAIT)
            self.assertEqual(r["members"], [{"sub": s, "info": None} for s in USERS])
            # joins reach the other gateways: alice's (gw0) hears bob (gw1) and carol (gw2),
            # bob (gw1) hears carol (gw2)
            for ev, subs in zip(watchers[ch], (("bob", "carol"), ("carol",))):
                for sub in subs:
                    await ev.wait_for("join", sub, channel=ch)
        await asyncio.sleep(0.3)
        for ch in channels:
            # one join per user (bob may or may not have been subscribed when alice's came)
            self.assertEqual(sorted(watchers[ch][0].ops(ch)),
                             [("join", "alice"), ("join", "bob"), ("join", "carol")])
            self.assertIn(sorted(watchers[ch][1].ops(ch)),
                          ([("join", "bob"), ("join", "carol")],
                           [("join", "alice"), ("join", "bob"), ("join", "carol")]))

        # the keys: on the owner of the channel's slot, nowhere else; one entry per user per
        # gateway, and the anonymous count of the gateway that has one
        for m in cluster.masters:
            mine = sorted(k for ch in channels if owner[ch] == m.port
                          for k in presence_keys(ch, prefix))
            self.assertEqual(node_presence_keys(m.port), mine, f"master {m.port}")
        for i, ch in enumerate(channels):
            with RedisConn(owner[ch]) as c:
                self.assertEqual(c.command("EXISTS", *presence_keys(ch, prefix)), 3, ch)
                self.assertEqual(sorted(c.command("HKEYS", presence_keys(ch, prefix)[2])),
                                 [s.encode() for s in USERS])
            self.assertEqual(sorted(presence_entries(owner[ch], ch, prefix)),
                             sorted([f"gw{k}\0{s}" for k, s in enumerate(USERS)] + [f"gw{i}\0"]))
            for m in cluster.masters:
                if m.port != owner[ch]:
                    with RedisConn(m.port) as c, self.assertRaisesRegex(RedisError, "^MOVED "):
                        c.command("EXISTS", presence_keys(ch, prefix)[0])

        # past the TTL (renewals every TTL/3): still whole, no leave, no error, no redirect
        await asyncio.sleep(PRESENCE_TTL_MS / 1000 + 0.5)
        for ch in channels:
            await self.wait_lists(hs, probes, ch, list(USERS), 4, 0)
            for ev in watchers[ch]:
                self.assertNotIn("leave", [op for op, _ in ev.ops(ch)])
        self.assert_clean_logs(hs)
        for h in hs:
            self.assertEqual(h.metric("herald_redis_redirects_total"), 0)

        # bob leaves every channel (his only connection closes): announced after the linger,
        # listed nowhere, his gateway's entry gone from the right master
        for ch in channels:
            await close_quietly(members[ch][1])
        for ch in channels:
            await watchers[ch][0].wait_for("leave", "bob", channel=ch)
            await self.wait_lists(hs, probes, ch, ["alice", "carol"], 3, LIST_WAIT)
            self.assertNotIn("gw1\0bob", presence_entries(owner[ch], ch, prefix))
        self.assert_clean_logs(hs)
        self.assertTrue(all(h.alive() for h in hs))

    async def test_presence_follows_a_moved_slot(self):
        # a slot moved by hand while the gateway's map still names its old owner: a presence
        # read of a channel in it is answered MOVED, followed to the new owner (and counted),
        # and answered at once, not 503; a member then joins there. Should a periodic refresh
        # land between the move and the read, nothing is redirected: try another channel.
        cluster = start_cluster(self, masters=3, replicas=0)
        (h,) = self.gateways(cluster, n=1)
        dst = cluster.masters[0].port
        async for _, ch, redirects in slots_moved_to(cluster, h, "room:mv", dst):

            def served():
                try:
                    with RedisConn(dst) as c:
                        c.command("EXISTS", presence_keys(ch)[0])
                    return True
                except RedisError:
                    return False
            await async_wait_for(served, WAIT, interval=0.02, what="the new owner takes the slot")
            status, body = await asyncio.to_thread(
                http_json, f"{h.base}/v1/channels/{ch}/presence")
            self.assertEqual((status, body), (200, {"channel": ch, "count": 0, "members": []}))
            if h.metric("herald_redis_redirects_total") > redirects:
                break
        else:
            self.fail("no presence read was redirected: the map was refreshed before each")
        ws = await self.member(h, ch, "dave")
        await self.wait_lists([h], [ws], ch, ["dave"], 1, LIST_WAIT)
        self.assertEqual(presence_entries(dst, ch).keys(), {"gw0\0dave"})
        self.assertEqual(h.metric("herald_presence_errors_total"), 0)
        self.assertTrue(h.alive())

    async def test_presence_master_killed_short_ttl(self):
        # the TTL (2 s) is mostly shorter than the failover (about 2.5 s): the promoted
        # replica's copies of the keys have expired, and the gateways write every member anew
        await self.presence_failover(PRESENCE_TTL_MS, replica_keeps_keys=False)

    async def test_presence_master_killed_long_ttl(self):
        # the TTL (6 s) outlasts the failover: the promoted replica still holds every entry,
        # unexpired, and nobody sees a leave or a join for members that never left
        await self.presence_failover(6000, replica_keeps_keys=True)

    async def presence_failover(self, ttl_ms, replica_keeps_keys):
        cluster = start_cluster(self, masters=3, replicas=1)
        channels = channels_spread("room:", 3)
        owner = {ch: cluster.master_of(key_slot(ch)) for ch in channels}
        room, other = channels[0], channels[1]   # other: on a master that stays up
        victim = owner[room]
        self.assertNotEqual(owner[other], victim)
        hs = self.gateways(cluster, HERALD_PRESENCE_TTL=f"{ttl_ms}ms")
        probes = [await self.connect(h) for h in hs]
        conns = [await self.member(hs[k], room, sub) for k, sub in enumerate(USERS)]
        await self.member(hs[1], room)   # anonymous
        ev = Events(conns[0])   # alice, on gw0
        self.addAsyncCleanup(ev.stop)
        others = [await self.member(hs[2], other, "erin"), await self.member(hs[0], other, "fay")]
        other_ev = Events(others[1])
        self.addAsyncCleanup(other_ev.stop)
        await self.wait_lists(hs, probes, room, list(USERS), 4, LIST_WAIT)
        await self.wait_lists(hs, probes, other, ["erin", "fay"], 2, LIST_WAIT)
        await ev.wait_for("join", "carol", channel=room)
        self.assert_clean_logs(hs)
        entries = sorted([f"gw{k}\0{s}" for k, s in enumerate(USERS)] + ["gw1\0"])
        self.assertEqual(sorted(presence_entries(victim, room)), entries)

        # ---- the failover
        before = len(ev.ops(room))
        killed_at = time.monotonic()
        cluster.kill_master(victim)
        promoted = await asyncio.to_thread(cluster.wait_promoted, victim, WAIT)
        promoted_at = time.monotonic()
        promoted_redis_ms = redis_time_ms(promoted)
        had = presence_entries(promoted, room)
        unexpired = sorted(e for e, v in had.items() if v > promoted_redis_ms)
        self.log(f"replica {promoted} promoted {promoted_at - killed_at:.2f} s after the kill; "
                 f"it had {len(had)} entries, {len(unexpired)} unexpired")
        if replica_keeps_keys:
            self.assertEqual(unexpired, entries, "the replica did not keep the entries")
        # whole again within the TTL plus a few seconds: every gateway renewed each of its
        # entries on the new master (expiry past promotion + TTL: written after promotion)
        within = ttl_ms / 1000 + 3

        def renewed():
            got = presence_entries(promoted, room)
            return sorted(got) == entries and \
                all(v > promoted_redis_ms + ttl_ms for v in got.values())
        await async_wait_for(renewed, within, interval=0.05,
                             what=f"every gateway's entries renewed on {promoted}")
        await self.wait_lists(hs, probes, room, list(USERS), 4,
                              max(0.5, promoted_at + within - time.monotonic()))
        whole_at = time.monotonic()
        flap = ev.ops(room)[before:]
        self.log(f"presence whole again {whole_at - promoted_at:.2f} s after the promotion; "
                 f"alice saw {flap} meanwhile; errors "
                 f"{[h.metric('herald_presence_errors_total') for h in hs]}")
        if replica_keeps_keys:
            self.assertEqual(flap, [], "events for members that never left")

        # a user who joins now is listed and announced, on every gateway
        seen = len(ev.ops(room))
        dave = await self.member(hs[1], room, "dave")
        await ev.wait_for("join", "dave", channel=room)
        await self.wait_lists(hs, probes, room, list(USERS) + ["dave"], 5, LIST_WAIT)
        bob_ev = Events(conns[1])
        self.addAsyncCleanup(bob_ev.stop)
        # the new master loses the keys (as a replica that had not got them would): the next
        # renewal of each gateway, within TTL/3, writes them again
        with RedisConn(promoted) as c:
            self.assertEqual(c.command("DEL", *presence_keys(room)), 3)
        await self.wait_lists(hs, probes, room, list(USERS) + ["dave"], 5, ttl_ms / 1000 / 3 + 2)
        self.assertEqual(sorted(presence_entries(promoted, room)),
                         sorted(entries + ["gw1\0dave"]))
        # nobody left since dave's join (the renewals may announce joins again: "add or replace")
        self.assertEqual([op for op, _ in ev.ops(room)[seen:]].count("leave"), 0, ev.ops(room))
        # the other master's channel never noticed: no leave, the same list, and its keys
        # never moved
        self.assertEqual(other_ev.ops(other).count(("leave", "erin")), 0, other_ev.ops(other))
        await self.wait_lists(hs, probes, other, ["erin", "fay"], 2, 1)
        self.assertEqual(sorted(presence_entries(owner[other], other)), ["gw0\0fay", "gw2\0erin"])
        await close_quietly(dave)
        await ev.wait_for("leave", "dave", channel=room)
        await bob_ev.wait_for("leave", "dave", channel=room)
        self.assertTrue(all(h.alive() for h in hs))

    async def test_presence_classic_refused(self):
        cluster = start_cluster(self, masters=1, replicas=0)
        want = ("herald: HERALD_PRESENCE with a redis-cluster:// URL needs "
                "HERALD_REDIS_PUBSUB=sharded")
        for mode in ("classic", None):   # classic: also the default
            with self.subTest(mode=mode):
                env = {"HERALD_PRESENCE": "room:*"}
                if mode:
                    env["HERALD_REDIS_PUBSUB"] = mode
                h = self.start_herald(cluster.url(), env=env, wait=False)
                self.assertEqual(h.wait_exit(10), 2, h.log_text())
                self.assertIn(want, h.log_text())
        # the same URL: classic without presence, and presence in sharded mode, both serve
        for env in ({"HERALD_REDIS_PUBSUB": "classic"},
                    {"HERALD_REDIS_PUBSUB": "sharded", "HERALD_PRESENCE": "room:*"}):
            h = self.start_herald(cluster.url(), env=env)
            await asyncio.to_thread(h.wait_ready, WAIT)
            self.assertTrue(h.alive())
            self.assertNotIn("HERALD_PRESENCE", h.log_text())
            await asyncio.to_thread(h.stop)

if __name__ == "__main__":
    main()
