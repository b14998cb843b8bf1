#!/usr/bin/python3
"""Presence at the byte level (issue 16, point 2): one gateway with PostgreSQL (so join and
leave events are signed) and JWT auth, on raw sockets.

- the presence op split over WebSocket fragments, pipelined with other ops in one write, with
  bad channels, huge ids and a forbidden channel; a subscribe with a bad sub or info;
- GET /v1/channels/{C}/presence with a body, POST to it, a trailing slash, pipelined GETs;
- forged Redis payloads on a presence channel: an unsigned join, one signed with the wrong key,
  one whose signature is right but is a replay from another channel, a malformed one: none
  reaches a subscriber, each is counted;
- forged Redis keys: entries without an instance, a sub that is not UTF-8, a count that is
  not a number, info that is not JSON: the list stays valid JSON and leaves them out.
After each case the gateway is alive, the canary still gets its message, and nothing was
stored in PostgreSQL.
"""

import hashlib
import hmac
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile as H  # noqa: E402
from hostile import (API_KEY, OP_CONT, OP_TEXT, HostileCase, RawHTTP, frame_bytes,  # noqa: E402
                     get_bytes, open_ws, post_bytes, reader_token, request_bytes, ws_next_json)

class PresenceBytes(HostileCase):
    herald_env = {"HERALD_PRESENCE": "room:*", "HERALD_PRESENCE_TTL": "3s",
                  "HERALD_PRESENCE_LINGER": "200ms", "HERALD_INSTANCE_ID": "hp1"}

    @property
    def room(self):
        """Each case its own channel: members of earlier cases linger on theirs."""
        return "room:" + self._testMethodName[5:40]

    def member(self, sub, channel=None, channels=("room:*",)):
        """A raw WebSocket of user `sub`, subscribed to channel, with its own join read."""
        ws = open_ws(self.h.port, token=H.jwt.token(sub=sub, channels=list(channels),
                                                      exp_in=600))
        self.addCleanup(ws.close)
        ws.send_json({"op": "subscribe", "channel": channel or self.room})
        self.assertEqual(ws_next_json(ws)["op"], "subscribed")
        return ws

    def next_presence_frame(self, ws, timeout=10.0):
        while True:
            m = ws_next_json(ws, timeout, skip_messages=True)
            if m.get("op") in ("join", "leave"):
                continue
            return m

    def wait_joined(self, ws, sub, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            m = ws_next_json(ws, max(0.05, deadline - time.monotonic()))
            if m.get("op") == "join" and m["member"]["sub"] == sub:
                return m

    def list_now(self, channel=None):
        r = self.rest(get_bytes(f"/v1/channels/{channel or self.room}/presence", cred=API_KEY))
        self.assertEqual(r.status, 200, r)
        return r.json()

    # -- WebSocket ----------------------------------------------------------------------------

    def test_presence_op_split_over_fragments_and_pipelined(self):
        ws = self.member("alice")
        self.wait_joined(ws, "alice")
        op = json.dumps({"op": "presence", "channel": self.room, "id": 1}).encode()
        # one message in three fragments, the middle one a single byte
        ws.sock.sendall(frame_bytes(OP_TEXT, op[:5], fin=False) +
                        frame_bytes(OP_CONT, op[5:6], fin=False) +
                        frame_bytes(OP_CONT, op[6:], fin=True))
        r = self.next_presence_frame(ws)
        self.assertEqual((r["op"], r["id"], r["count"]), ("presence", 1, 1), r)
        self.assertEqual(r["members"], [{"sub": "alice", "info": None}])
        # three ops in one write, answered in order
        batch = b"".join(frame_bytes(OP_TEXT, json.dumps(m).encode()) for m in (
            {"op": "presence", "channel": self.room, "id": 2},
            {"op": "ping", "id": 3},
            {"op": "presence", "channel": self.room, "id": 4}))
        ws.sock.sendall(batch)
        ids = [self.next_presence_frame(ws).get("id") for _ in range(3)]
        # the ping is answered at once, each presence when Redis answers: presence 2 before 4
        self.assertEqual(sorted(ids, key=str), sorted([2, 3, 4], key=str))
        self.assertLess(ids.index(2), ids.index(4))
        self.unharmed()

    def test_bad_presence_ops_and_subscribes(self):
        ws = self.member("bob")
        cases = [
            ({"op": "presence", "id": 1}, "bad_request"),
            ({"op": "presence", "channel": "a b", "id": 2}, "bad_request"),
            ({"op": "presence", "channel": "x" * 201, "id": 3}, "bad_request"),
            ({"op": "presence", "channel": "secret:1", "id": 4}, "forbidden"),
            ({"op": "presence", "channel": self.room, "id": "y" * 65}, "bad_request"),
            ({"op": "subscribe", "channel": "room:x", "sub": 5, "id": 6}, "bad_request"),
            ({"op": "subscribe", "channel": "room:x", "sub": "", "id": 7}, "bad_request"),
            ({"op": "subscribe", "channel": "room:x", "sub": "mallory", "id": 8}, "forbidden"),
            ({"op": "subscribe", "channel": "room:x", "info": "z" * 400, "id": 9},
             "bad_request"),
        ]
        for frame, code in cases:
            ws.send_json(frame)
            r = self.next_presence_frame(ws)
            self.assertEqual((r["op"], r["code"]), ("error", code), (frame, r))
        # info with a raw NUL after a number: jansson alone takes it, and its join event
        # would then fail every instance's check (and the member list skip it)
        ws.sock.sendall(frame_bytes(OP_TEXT, b'{"op":"subscribe","channel":"room:x",'
                                             b'"info":{"n":1\x00},"id":10}'))
        r = self.next_presence_frame(ws)
        self.assertEqual((r["op"], r["code"]), ("error", "bad_request"), r)  # no id: not JSON
        # none of the refused subscribes made a member anywhere
        self.assertEqual(self.list_now("room:x"), {"channel": "room:x", "count": 0,
                                                   "members": []})
        self.unharmed(errors={"bad_request": 7, "forbidden": 2})

    # -- REST -----------------------------------------------------------------------------

    def test_rest_route_at_the_byte_level(self):
        path = f"/v1/channels/{self.room}/presence"
        r = self.rest(request_bytes("GET", path, [("Authorization", "Bearer " + API_KEY),
                                                  ("Content-Length", "5")], b"hello"))
        self.assert_refusal(r, 400, "bad_request", closed=True)
        r = self.rest(post_bytes(path, b'{"a":1}', cred=API_KEY))
        self.assertEqual((r.status, r.error_code()), (404, "not_found"), r)
        r = self.rest(get_bytes(path + "/", cred=API_KEY))
        self.assertIn(r.status, (400, 404), r)
        r = self.rest(get_bytes(f"/v1/channels/{self.room}/presence?x=1", cred=reader_token(
            ["nothing:*"])))
        self.assertEqual((r.status, r.error_code()), (403, "forbidden"), r)
        # three pipelined GETs in one write: three answers, in order
        with RawHTTP(self.h.port) as c:
            c.send(get_bytes(path, cred=API_KEY) + get_bytes("/healthz") +
                   get_bytes(path, cred=API_KEY))
            got = [c.read_response(10) for _ in range(3)]
        self.assertEqual([g.status for g in got], [200, 200, 200])
        self.assertEqual(got[0].json()["channel"], self.room)
        self.assertTrue(got[1].json()["ok"])
        self.assertEqual(got[2].json(), got[0].json())
        self.unharmed()

    # -- forged Redis -----------------------------------------------------------------------

    def test_forged_events_reach_nobody(self):
        ws = self.member("carol")
        self.wait_joined(ws, "carol")
        key = H.signing_key(self.pg)
        room = self.room
        eve = '{"op":"join","channel":"%s","member":{"sub":"eve"}}' % room
        other = '{"op":"join","channel":"room:other","member":{"sub":"eve"}}'
        forged = [
            eve,  # unsigned
            H.sign_envelope(b"\x00" * 32, "presence", eve),  # another key
            H.sign_envelope(key, "presence", other),  # signed, for another channel
            H.sign_envelope(key, "some-epoch", eve),  # signed as a message of an epoch
            H.sign_envelope(key, "presence", '{"op":"join","channel":"%s","member":{}}' % room),
            '{"op":"leave",' + "x" * 100,
        ]
        for payload in forged:
            self.redis.publish(self.room, payload)
        # a genuine event after them is the first thing carol gets
        self.member("dave")
        m = ws_next_json(ws)
        self.assertEqual(m, {"op": "join", "channel": self.room, "member": {"sub": "dave"}})
        self.assertEqual([x["sub"] for x in self.list_now()["members"]], ["carol", "dave"])
        self.unharmed(exact_metrics={"herald_invalid_payloads_total": len(forged)})

    def test_forged_keys_leave_the_list_valid(self):
        ws = self.member("frank")
        self.wait_joined(ws, "frank")
        r = self.redis.conn()
        far = str(int(time.time() * 1000) + 600000)
        e, i, n = (f"presence:{{{self.room}}}:{k}".encode() for k in "ein")
        for field, value in ((b"no-instance", b"{}"), (b"x\x00\xff\xfe", b"{}"),
                             (b"x\x00", b"lots"), (b"x\x00g", b"{not json"),
                             (b"\x00", b"7")):
            r.command("ZADD", e, far, field)
            r.command("HSET", i, field, value)
        got = self.list_now()
        # g is listed with info null; everything else left out; frank untouched
        self.assertEqual(got["members"], [{"sub": "frank", "info": None},
                                          {"sub": "g", "info": None}])
        self.assertEqual(got["count"], 2)
        # the op says the same, and the next refresh of frank's entry still works
        ws.send_json({"op": "presence", "channel": self.room, "id": 1})
        self.assertEqual(self.next_presence_frame(ws)["members"], got["members"])
        for field in (b"no-instance", b"x\x00\xff\xfe", b"x\x00", b"x\x00g", b"\x00"):
            r.command("ZREM", e, field)
            r.command("HDEL", i, field)
        self.assertEqual([x["sub"] for x in self.list_now()["members"]], ["frank"])
        del n
        self.unharmed(metrics={"herald_presence_errors_total": 1})


if __name__ == "__main__":
    H.run_module()
