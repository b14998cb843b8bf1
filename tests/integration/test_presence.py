#!/usr/bin/python3
"""Presence (issue 16, point 2) across real gateway instances sharing one real Redis.

- members are users (a token's sub, or with auth off the subscribe's sub): the same user on two
  instances is one member, anonymous connections are counted, not listed; every instance, over
  WebSocket and REST, answers the same list;
- join and leave events: one per user becoming present anywhere / absent everywhere, after
  the linger; a user who reconnects within the linger (on another instance) makes neither;
- kill -9 of an instance: its members leave within the TTL (plus a refresh), announced by a
  surviving instance, and the list forgets them;
- the member cap: the user past it stays subscribed, gets presence_full, is counted in the
  metric, and is listed once a place frees up;
- auth: presence only for channels the token may subscribe to; sub from the token; info from
  the token's claim; info over its limit refused; channels without presence say not_found;
- Redis down: the op answers unavailable, REST 503; when Redis is back, each instance writes
  its members again.
"""

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jwt_util as jwt  # noqa: E402
from harness import (HeraldTestCase, close_quietly, main, raise_nofile, recv_json,  # noqa: E402
                     request, subscribe)

TTL_MS = 2000
LINGER_MS = 600
ROOM = "room:1"


def presence_env(**extra):
    env = {"HERALD_PRESENCE": "room:*, lobby", "HERALD_PRESENCE_TTL": f"{TTL_MS}ms",
           "HERALD_PRESENCE_LINGER": f"{LINGER_MS}ms", "HERALD_HEARTBEAT_MS": "200"}
    env.update(extra)
    return env


def http_json(url, headers=None):
    """(status, parsed body)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Events:
    """Collects the join/leave frames one connection gets, in order, from a reader task."""

    def __init__(self, ws):
        self.ws = ws
        self.seen = []  # (monotonic time, frame)
        self.other = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            while True:
                m = await recv_json(self.ws, timeout=3600)
                if isinstance(m, dict) and m.get("op") in ("join", "leave"):
                    self.seen.append((time.monotonic(), m))
                else:
                    self.other.append(m)
        except Exception:  # noqa: BLE001 - closed
            pass

    def ops(self, channel=ROOM):
        return [(m["op"], m["member"]["sub"]) for _, m in self.seen if m["channel"] == channel]

    async def wait_for(self, op, sub, timeout=10.0, channel=ROOM):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, m in self.seen:
                if (m["op"], m["member"]["sub"], m["channel"]) == (op, sub, channel):
                    return t, m
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {op} of {sub} within {timeout}s; saw {self.ops(channel)}")

    async def stop(self):
        self.task.cancel()


class PresenceTest(HeraldTestCase):
    def trio(self, **env):
        redis = self.start_redis()
        hs = [self.start_herald(redis, env=presence_env(HERALD_INSTANCE_ID=f"gw{i}", **env))
              for i in range(3)]
        for h in hs:
            h.wait_ready()
        return redis, hs

    async def member(self, h, sub=None, info=None, channel=ROOM, token=None):
        url = h.ws_url + (f"?token={token}" if token else "")
        ws = await self.connect(url)
        extra = {}
        if sub is not None:
            extra["sub"] = sub
        if info is not None:
            extra["info"] = info
        await subscribe(ws, channel, **extra)
        return ws

    async def presence(self, ws, channel=ROOM):
        """The presence reply (join/leave frames that come first are skipped)."""
        await ws.send(json.dumps({"op": "presence", "channel": channel, "id": "p"}))
        while True:
            m = await recv_json(ws)
            if m.get("op") in ("join", "leave", "message"):
                continue
            return m

    def rest_presence(self, h, channel=ROOM, headers=None):
        return http_json(f"{h.base}/v1/channels/{channel}/presence", headers)

    async def wait_list(self, ws, want_subs, count=None, timeout=10.0):
        seen = []

        async def check():
            r = await self.presence(ws)
            seen.append(r)
            subs = [m["sub"] for m in r.get("members", [])]
            return subs == want_subs and (count is None or r["count"] == count)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await check():
                return seen[-1]
            await asyncio.sleep(0.1)
        raise AssertionError(f"presence never became {want_subs} (count {count}): {seen[-1]}")

    # -- the list ------------------------------------------------------------------------

    async def test_members_across_three_instances(self):
        _, (h1, h2, h3) = self.trio()
        w = await self.member(h1, "watcher")
        ev = Events(w)
        await self.member(h1, "alice", {"name": "Alice", "x": 0.1})
        await self.member(h2, "alice", {"name": "Alice"})  # a second tab, elsewhere
        await self.member(h3, "bob")
        await self.member(h2)  # anonymous: counted, not listed
        await self.member(h2)
        probe = await self.connect(h3)
        r = await self.wait_list(probe, ["alice", "bob", "watcher"], count=5)
        self.assertEqual(r["channel"], ROOM)
        self.assertEqual(r["id"], "p")
        by_sub = {m["sub"]: m["info"] for m in r["members"]}
        self.assertIn(by_sub["alice"], ({"name": "Alice", "x": 0.1}, {"name": "Alice"}))
        self.assertIsNone(by_sub["bob"])
        # every instance, and REST, says the same
        for h in (h1, h2):
            ws = await self.connect(h)
            self.assertEqual(await self.presence(ws), r)
        status, body = self.rest_presence(h2)
        self.assertEqual(status, 200, body)
        self.assertEqual(body, {"channel": ROOM, "count": 5, "members": r["members"]})
        # one join per user, however many connections and instances carry it
        await ev.wait_for("join", "bob")
        await asyncio.sleep(0.5)
        self.assertEqual(sorted(ev.ops()),
                         [("join", "alice"), ("join", "bob"), ("join", "watcher")])
        joins = sum(h.metric("herald_presence_joins_total") for h in (h1, h2, h3))
        self.assertEqual(joins, 3)
        self.assertEqual(h2.metric("herald_presence_members"), 1)  # alice; anonymous are not
        self.assertEqual(h2.metric("herald_presence_channels"), 1)
        await ev.stop()

    async def test_leave_after_the_linger_and_a_flap_makes_nothing(self):
        _, (h1, h2, h3) = self.trio()
        w = await self.member(h1, "watcher")
        ev = Events(w)
        a = await self.member(h2, "alice")
        await ev.wait_for("join", "alice")
        # a flap: the only tab closes and comes back on another instance within the linger
        await close_quietly(a)
        a = await self.member(h3, "alice")
        await asyncio.sleep(LINGER_MS / 1000 * 2 + 0.5)
        self.assertEqual([o for o in ev.ops() if o[1] == "alice"], [("join", "alice")])
        probe = await self.connect(h1)
        await self.wait_list(probe, ["alice", "watcher"])
        # now for good: the leave comes after the linger, not before
        gone_at = time.monotonic()
        await close_quietly(a)
        t, m = await ev.wait_for("leave", "alice")
        self.assertEqual(m, {"op": "leave", "channel": ROOM, "member": {"sub": "alice"}})
        self.assertGreaterEqual(t - gone_at, LINGER_MS / 1000 * 0.9)
        await self.wait_list(probe, ["watcher"], count=1)
        # unsubscribing is leaving too
        b = await self.member(h2, "bob")
        await ev.wait_for("join", "bob")
        await b.send(json.dumps({"op": "unsubscribe", "channel": ROOM}))
        await ev.wait_for("leave", "bob")
        self.assertEqual([o for o in ev.ops() if o[1] != "watcher"],
                         [("join", "alice"), ("leave", "alice"), ("join", "bob"),
                          ("leave", "bob")])
        await ev.stop()

    async def test_kill_9_members_leave_within_the_ttl(self):
        _, (h1, h2, h3) = self.trio()
        w = await self.member(h1, "watcher")
        ev = Events(w)
        await self.member(h2, "bob")
        await self.member(h2)  # anonymous on the instance that dies
        await self.member(h3, "carol")
        probe = await self.connect(h3)
        await self.wait_list(probe, ["bob", "carol", "watcher"], count=4)
        killed_at = time.monotonic()
        h2.kill()
        t, _ = await ev.wait_for("leave", "bob", timeout=TTL_MS / 1000 * 3)
        # the entries expire TTL after their last refresh (at most TTL/3 before the kill),
        # and the next sweep of a living instance (every TTL/3) finds them
        self.assertLessEqual(t - killed_at, TTL_MS / 1000 + 2 * TTL_MS / 3000 + 1.0)
        await self.wait_list(probe, ["carol", "watcher"], count=2)
        self.assertNotIn(("leave", "carol"), ev.ops())
        # exactly one instance announced it
        await asyncio.sleep(0.3)
        self.assertEqual(ev.ops().count(("leave", "bob")), 1)
        await ev.stop()

    async def test_the_member_cap(self):
        redis, (h1, h2, h3) = self.trio(HERALD_PRESENCE_MAX_MEMBERS="2")
        w = await self.member(h1, "alice")
        ev = Events(w)
        # each instance writes its joins on its own tick: without this wait, alice's could come
        # after bob's, reach carol before her error, or take the place carol is refused
        await ev.wait_for("join", "alice")
        b = await self.member(h2, "bob")
        await ev.wait_for("join", "bob")
        carol = await self.connect(h3)
        await subscribe(carol, ROOM, sub="carol")
        err = await recv_json(carol)
        self.assertEqual((err["op"], err["code"], err["channel"]),
                         ("error", "presence_full", ROOM), err)
        # still subscribed: messages reach carol
        redis.publish(ROOM, json.dumps({"hello": 1}))
        m = await recv_json(carol)
        self.assertEqual((m["op"], m["data"]), ("message", {"hello": 1}), m)
        r = await self.presence(carol)
        self.assertEqual(([x["sub"] for x in r["members"]], r["count"]), (["alice", "bob"], 2))
        self.assertEqual(h3.metric("herald_presence_full_total"), 1)
        self.assertEqual(
            h3.metric("herald_client_errors_total", {"code": "presence_full"}), 1)
        # a second tab of carol is told too, and counted once
        carol2 = await self.connect(h3)
        await subscribe(carol2, ROOM, sub="carol")
        self.assertEqual((await recv_json(carol2))["code"], "presence_full")
        self.assertEqual(h3.metric("herald_presence_full_total"), 1)
        # a place frees up: carol is listed at the next refresh, and joins
        await close_quietly(b)
        await ev.wait_for("leave", "bob")
        await ev.wait_for("join", "carol", timeout=TTL_MS / 1000 + 2)
        await self.wait_list(carol, ["alice", "carol"], count=2)
        # and renewed like anyone else: still listed a TTL later
        await asyncio.sleep(TTL_MS / 1000 + 0.7)
        r = await self.presence(carol)
        self.assertEqual([x["sub"] for x in r["members"]], ["alice", "carol"])
        self.assertNotIn(("leave", "carol"), ev.ops())
        await ev.stop()

    @staticmethod
    def evals(redis):
        info = redis.conn().command("INFO", "commandstats").decode()
        for line in info.split("\r\n"):
            if line.startswith("cmdstat_eval:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    async def test_more_members_than_one_script_carries(self):
        """600 users on one instance: their joins and renewals go as several scripts (at most
        256 users each), and every one of them stays listed across renewals."""
        raise_nofile(2000)
        redis, (h1, h2, _h3) = self.trio()
        subs = [f"u{i:03d}" for i in range(600)]
        conns = await asyncio.gather(*(self.member(h1, sub) for sub in subs))
        probe = await self.connect(h2)
        r = await self.wait_list(probe, subs, count=600, timeout=20)
        self.assertEqual(len(r["members"]), 600)
        # past the TTL: renewed every TTL/3, each time in three scripts (256 + 256 + 88)
        evals = self.evals(redis)
        await asyncio.sleep(3.0)
        self.assertGreaterEqual(self.evals(redis) - evals, 9)  # 4 or 5 renewals; 1 script: 5
        r = await self.presence(probe)
        self.assertEqual(([m["sub"] for m in r["members"]], r["count"]), (subs, 600))
        self.assertEqual(h1.metric("herald_presence_members"), 600)
        self.assertEqual(h1.metric("herald_presence_errors_total"), 0)
        # at once: each close waits for its own unread joins to drain
        await asyncio.gather(*(close_quietly(ws) for ws in conns[:300]))
        await self.wait_list(probe, subs[300:], count=300, timeout=10)
        await asyncio.gather(*(close_quietly(ws) for ws in conns[300:]))  # not one by one

    # -- who may see it ------------------------------------------------------------------

    async def test_auth(self):
        redis = self.start_redis()
        h = self.start_herald(redis, "--jwt-secret", jwt.SECRET, "--api-key", "k" * 40,
                              env=presence_env())
        h.wait_ready()
        tok = jwt.token(sub="alice", channels=["room:*", "other:*"], exp_in=600,
                        info={"name": "Alice"})
        ws = await self.connect(h.ws_url + "?token=" + tok)
        # sub comes from the token: another one is refused, the same one is fine
        r = await request(ws, {"op": "subscribe", "channel": ROOM, "sub": "mallory", "id": 1})
        self.assertEqual((r["op"], r["code"], r["id"]), ("error", "forbidden", 1), r)
        # without an info claim, the subscribe's info shows, up to its limit
        plain = await self.connect(h.ws_url + "?token=" + jwt.token(sub="bob", channels=["room:*"]))
        r = await request(plain, {"op": "subscribe", "channel": ROOM, "info": "x" * 300, "id": 2})
        self.assertEqual((r["op"], r["code"], r["id"]), ("error", "bad_request", 2), r)
        await subscribe(ws, ROOM, sub="alice", info={"ignored": True})
        r = await self.wait_list(ws, ["alice"], count=1)
        self.assertEqual(r["members"], [{"sub": "alice", "info": {"name": "Alice"}}])
        # outside the token's channels, or a channel without presence
        r = await request(ws, {"op": "presence", "channel": "secret:1", "id": 3})
        self.assertEqual((r["op"], r["code"], r["id"]), ("error", "forbidden", 3), r)
        r = await request(ws, {"op": "presence", "channel": "other:1", "id": 4})
        self.assertEqual((r["op"], r["code"]), ("error", "not_found"), r)
        # REST: the same rules; the API key sees everything
        self.assertEqual(self.rest_presence(h)[0], 401)
        bearer = {"Authorization": "Bearer " + jwt.token(sub="x", channels=["other:*"])}
        status, body = self.rest_presence(h, headers=bearer)
        self.assertEqual((status, body["error"]["code"]), (403, "forbidden"), body)
        status, body = self.rest_presence(h, "other:1", {"Authorization": "Bearer " + "k" * 40})
        self.assertEqual((status, body["error"]["code"]), (404, "not_found"), body)
        status, body = self.rest_presence(h, headers={"Authorization": "Bearer " + "k" * 40})
        self.assertEqual((status, body["count"]), (200, 1), body)
        # only the error counters moved for the refusals; the member list is untouched
        self.assertEqual(h.metric("herald_presence_joins_total"), 1)

    async def test_redis_down_and_back(self):
        redis, (h1, h2, _) = self.trio()
        w = await self.member(h1, "watcher")
        await self.member(h2, "bob")
        carol = await self.member(h2, "carol")
        await self.wait_list(w, ["bob", "carol", "watcher"])
        redis.stop()
        await asyncio.sleep(0.3)
        # carol leaves while Redis is down: her removal is retried once a second, not flooded
        errors_before = h2.metric("herald_presence_errors_total")
        await close_quietly(carol)
        await asyncio.sleep(LINGER_MS / 1000 + 2.0)
        self.assertLessEqual(h2.metric("herald_presence_errors_total") - errors_before, 4)
        r = await self.presence(w)
        self.assertEqual((r["op"], r["code"], r["id"]), ("error", "unavailable", "p"), r)
        status, body = self.rest_presence(h1)
        self.assertEqual((status, body["error"]["code"]), (503, "unavailable"), body)
        # an empty Redis comes back: every instance writes its members again
        self.restart_redis(redis)
        for h in (h1, h2):
            h.wait_ready()
        r = await self.wait_list(w, ["bob", "watcher"], timeout=TTL_MS / 1000 + 5)
        self.assertEqual(r["count"], 2)  # carol's removal was lost with Redis: not listed
        # the op and the REST call, each counted once
        self.assertEqual(h1.metric("herald_client_errors_total", {"code": "unavailable"}), 2)


if __name__ == "__main__":
    main()
