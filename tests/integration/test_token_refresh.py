#!/usr/bin/python3
"""Token refresh in place (issue 17, point 3): `{"op":"refresh","token":T}` on a live
WebSocket, against a real gateway with HS256 auth (leeway 0).

- a refresh before expiry keeps the connection and its subscriptions past the old token's
  exp; it now closes with 4001 at the new exp, also when that is sooner than the old one;
- a refresh that narrows the token's channels ends the subscriptions it no longer allows, each
  with an unsubscribed notice (code forbidden) before the `refreshed` reply: nothing of those
  channels arrives afterwards, presence forgets the user there, the others go on;
- refused refreshes leave the old token in force (it still closes at the old exp): a bad
  signature, an expired token, alg none, another user's token, no token, a token with a NUL, a
  token of 20 kB;
- with auth off, refresh is a bad_request;
- raw bytes: a refresh split over fragments and pipelined behind a subscribe.
"""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jwt_util as jwt  # noqa: E402
from harness import (OP_CONT, OP_TEXT, HeraldTestCase, main, ping, recv_json,  # noqa: E402
                     request, subscribe, wait_close)
from hostile import frame_bytes, open_ws, ws_next_json  # noqa: E402


def token(sub="alice", channels=("room:*", "other:*"), exp_in=600):
    return jwt.sign({"alg": "HS256", "typ": "JWT"},
                    {"sub": sub, "exp": int(time.time()) + exp_in, "channels": list(channels)})


class RefreshTest(HeraldTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.h = self.start_herald(self.redis, "--jwt-secret", jwt.SECRET, "--jwt-leeway", "0",
                                   env={"HERALD_PRESENCE": "room:*",
                                        "HERALD_PRESENCE_LINGER": "0"})

    async def open(self, tok):
        return await self.connect(f"{self.h.ws_url}?token={tok}")

    async def own_join(self, ws, channel, sub="alice"):
        """Reads up to the connection's own join on channel, which comes through Redis at a
        time of its own: later requests' replies then come in order behind it."""
        while True:
            m = await recv_json(ws)
            if (m.get("op"), m.get("channel"), m.get("member", {}).get("sub")) == \
                    ("join", channel, sub):
                return

    async def next_non_message(self, ws):
        while True:
            m = await recv_json(ws)
            if m.get("op") not in ("message", "join", "leave"):
                return m

    async def test_refresh_keeps_the_connection_past_the_old_exp(self):
        ws = await self.open(token(exp_in=2))
        await subscribe(ws, "room:1")
        r = await request(ws, {"op": "refresh", "token": token(exp_in=5), "id": 1})
        while r.get("op") == "join":
            r = await recv_json(ws)
        self.assertEqual((r["op"], r["id"]), ("refreshed", 1), r)
        self.assertAlmostEqual(r["exp"], time.time() + 5, delta=2)
        await asyncio.sleep(2.5)  # the first token is over
        self.redis.publish("room:1", json.dumps({"n": 1}))
        m = await recv_json(ws)
        while m.get("op") == "join":
            m = await recv_json(ws)
        self.assertEqual((m["op"], m["data"]), ("message", {"n": 1}), m)
        await ping(ws)
        # and it ends with the new one
        code, _, _ = await wait_close(ws, 10)
        self.assertEqual(code, 4001)
        self.assertGreaterEqual(time.time(), r["exp"] - 1)

    async def test_a_shorter_token_closes_sooner(self):
        ws = await self.open(token(exp_in=600))
        await subscribe(ws, "room:1")
        r = await request(ws, {"op": "refresh", "token": token(exp_in=2), "id": 1})
        while r.get("op") == "join":
            r = await recv_json(ws)
        self.assertEqual(r["op"], "refreshed", r)
        code, _, _ = await wait_close(ws, 10)
        self.assertEqual(code, 4001)
        self.assertLessEqual(time.time(), r["exp"] + 2)

    async def test_a_narrower_token_ends_what_it_no_longer_allows(self):
        ws = await self.open(token(channels=("room:*", "other:*")))
        await subscribe(ws, "room:1")
        await self.own_join(ws, "room:1")
        await subscribe(ws, "other:1")
        await subscribe(ws, "other:2", since=0)
        probe = await self.open(token(sub="probe", channels=("room:*",)))
        r = await request(ws, {"op": "refresh", "token": token(channels=("room:*", "other:2")),
                               "id": "r"})
        while r.get("op") == "join":
            r = await recv_json(ws)
        self.assertEqual(r, {"op": "unsubscribed", "channel": "other:1", "code": "forbidden",
                             "message": "the refreshed token does not allow this channel"})
        r = await self.next_non_message(ws)
        self.assertEqual((r["op"], r["id"]), ("refreshed", "r"), r)
        # other:1 is over, other:2 and room:1 go on
        for ch in ("other:1", "other:2", "room:1"):
            self.redis.publish(ch, json.dumps({"ch": ch}))
        got = [(await recv_json(ws))["data"]["ch"] for _ in range(2)]
        self.assertEqual(sorted(got), ["other:2", "room:1"])
        self.assertEqual(self.redis.numsub("other:1"), 0)
        # subscribing there again is refused like any forbidden channel
        r = await request(ws, {"op": "subscribe", "channel": "other:1", "id": 2})
        self.assertEqual((r["op"], r["code"]), ("error", "forbidden"), r)
        self.assertEqual(self.h.metric("herald_subscriptions"), 2)
        # presence: narrowing room:* away makes alice leave there
        r = await request(ws, {"op": "refresh", "token": token(channels=("other:2",)), "id": 3})
        self.assertEqual((r["op"], r["channel"]), ("unsubscribed", "room:1"), r)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = await request(probe, {"op": "presence", "channel": "room:1"})
            if r.get("op") == "presence" and r["members"] == []:
                break
            await asyncio.sleep(0.1)
        self.assertEqual(r["members"], [], r)

    async def test_refused_refreshes_leave_the_old_token(self):
        ws = await self.open(token(exp_in=3))
        await subscribe(ws, "room:1")
        cases = [
            ({"op": "refresh", "token": jwt.wrong_secret(sub="alice", channels=["room:*"])},
             "unauthorized"),
            ({"op": "refresh", "token": token(exp_in=-10)}, "unauthorized"),
            ({"op": "refresh", "token": jwt.alg_none(sub="alice", channels=["room:*"])},
             "unauthorized"),
            ({"op": "refresh", "token": token(sub="mallory")}, "forbidden"),
            ({"op": "refresh"}, "bad_request"),
            ({"op": "refresh", "token": ""}, "bad_request"),
            ({"op": "refresh", "token": "x" * 20000}, "unauthorized"),
        ]
        for i, (frame, code) in enumerate(cases):
            frame["id"] = i
            r = await request(ws, frame)
            while r.get("op") == "join":
                r = await recv_json(ws)
            self.assertEqual((r["op"], r["code"], r["id"]), ("error", code, i), (frame, r))
        # a NUL anywhere in a frame is refused by the JSON parser: no id to echo
        r = await request(ws, '{"op":"refresh","token":"a\\u0000b","id":99}')
        self.assertEqual((r["op"], r["code"], r.get("id")), ("error", "bad_request", None), r)
        self.assertGreaterEqual(self.h.metric("herald_auth_failures_total"), 5)
        # the old token still rules: closed at its exp
        started = time.time()
        code, _, _ = await wait_close(ws, 10)
        self.assertEqual(code, 4001)
        self.assertLess(time.time() - started, 5)

    async def test_raw_fragments_and_pipelining(self):
        ws = open_ws(self.h.port, token=token())
        self.addCleanup(ws.close)
        op = json.dumps({"op": "refresh", "token": token(exp_in=900), "id": 9}).encode()
        sub = json.dumps({"op": "subscribe", "channel": "room:2", "id": 8}).encode()
        ws.sock.sendall(frame_bytes(OP_TEXT, sub) + frame_bytes(OP_TEXT, op[:7], fin=False) +
                        frame_bytes(OP_CONT, op[7:], fin=True))
        seen = []
        while len(seen) < 2:
            m = ws_next_json(ws)
            if m.get("op") != "join":
                seen.append((m["op"], m.get("id")))
        self.assertEqual(sorted(seen, key=str), sorted([("subscribed", 8), ("refreshed", 9)],
                                                       key=str))
        ws.send_json({"op": "ping", "id": 10})
        while (m := ws_next_json(ws)).get("op") == "join":
            pass
        self.assertEqual(m, {"op": "pong", "id": 10})


class RefreshWithoutAuth(HeraldTestCase):
    async def test_auth_off(self):
        h = self.start_herald(self.start_redis())
        ws = await self.connect(h.ws_url)
        r = await request(ws, {"op": "refresh", "token": token(), "id": 1})
        self.assertEqual((r["op"], r["code"], r["id"]), ("error", "bad_request", 1), r)
        await ping(ws)


if __name__ == "__main__":
    main()
