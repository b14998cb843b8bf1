#!/usr/bin/python3
"""WebSocket protocol: ping/pong and id echo, every bad-frame case with its exact error code
(the connection stays usable after each), frame size limit, binary frames, the per-connection
subscription limit, raw payload wrapping (exact bytes), sequenced envelopes forwarded byte for
byte, invalid producer payloads dropped and counted, and HERALD_REDIS_PREFIX."""

import asyncio
import json
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ping, recv_frame, recv_json, request, subscribe, unsubscribe  # noqa: E402

ERR_BAD = "bad_request"


class ProtocolBase(harness.HeraldTestCase):
    herald_args = ()

    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.herald = self.start_herald(self.redis, *self.herald_args)
        self.ws = await self.connect(self.herald)

    def pub(self, channel, payload):
        """PUBLISH through Redis; asserts that herald is subscribed at the Redis level."""
        n = self.redis.publish(channel, payload)
        self.assertGreaterEqual(n, 1, f"no Redis subscriber for {channel!r} (is herald subscribed?)")
        return n

    async def expect_error(self, ws, frame, code, id_=None, binary=False):
        if binary:
            await ws.send(frame)
            reply = await recv_json(ws)
        else:
            reply = await request(ws, frame)
        self.assertIsInstance(reply, dict, f"reply to {frame!r:.120} is not a JSON object")
        self.assertEqual(reply.get("op"), "error", f"reply to {frame!r:.120}: {reply!r}")
        self.assertEqual(reply.get("code"), code, f"reply to {frame!r:.120}: {reply!r}")
        self.assertIsInstance(reply.get("message"), str, f"error without message: {reply!r}")
        self.assertTrue(reply["message"], f"empty error message: {reply!r}")
        if id_ is not None:
            self.assertEqual(reply.get("id"), id_, f"id not echoed in {reply!r}")
        # The connection stays open and usable.
        await ping(ws)
        return reply


class TestPingAndIds(ProtocolBase):
    async def test_ping_pong(self):
        reply = await request(self.ws, {"op": "ping"})
        self.assertEqual(reply, {"op": "pong"})

    async def test_ping_echoes_string_id(self):
        reply = await request(self.ws, {"op": "ping", "id": "req-1"})
        self.assertEqual(reply, {"op": "pong", "id": "req-1"})

    async def test_ping_echoes_integer_id(self):
        reply = await request(self.ws, {"op": "ping", "id": 42})
        self.assertEqual(reply, {"op": "pong", "id": 42})
        self.assertIs(type(reply["id"]), int)

    async def test_subscribe_and_unsubscribe_echo_id(self):
        reply = await request(self.ws, {"op": "subscribe", "channel": "ids", "id": "s1"})
        self.assertEqual(reply.get("op"), "subscribed")
        self.assertEqual(reply.get("id"), "s1")
        reply = await request(self.ws, {"op": "unsubscribe", "channel": "ids", "id": 7})
        self.assertEqual(reply.get("op"), "unsubscribed")
        self.assertEqual(reply.get("id"), 7)

    async def test_id_limits(self):
        # An id is a string or an integer of at most 64 bytes.
        reply = await request(self.ws, {"op": "ping", "id": "i" * 64})
        self.assertEqual(reply, {"op": "pong", "id": "i" * 64})
        reply = await request(self.ws, {"op": "ping", "id": 0})
        self.assertEqual(reply, {"op": "pong", "id": 0})
        for bad in ("j" * 65, 1.5, True, None, {"a": 1}, [1]):
            with self.subTest(id=bad):
                await self.expect_error(self.ws, {"op": "ping", "id": bad}, ERR_BAD)

    async def test_many_pings_in_a_row_each_answered_in_order(self):
        for i in range(50):
            await self.ws.send(json.dumps({"op": "ping", "id": i}))
        for i in range(50):
            self.assertEqual(await recv_json(self.ws), {"op": "pong", "id": i})


class TestSubscribe(ProtocolBase):
    async def test_subscribed_reply_shape(self):
        reply = await subscribe(self.ws, "shape:1")
        self.assertEqual(reply["op"], "subscribed")
        self.assertEqual(reply["channel"], "shape:1")
        self.assertIs(reply.get("recovered"), False, reply)
        self.assertIs(type(reply.get("seq")), int, reply)
        self.assertEqual(reply["seq"], 0, "a fresh channel with no history has seq 0")

    async def test_publish_after_subscribed_is_always_delivered(self):
        # Repeat with fresh channels: the reply must only come after Redis confirmed SUBSCRIBE.
        for i in range(20):
            ch = f"race:{i}"
            await subscribe(self.ws, ch)
            self.pub(ch, json.dumps({"i": i}))
            raw, msg = await recv_frame(self.ws)
            self.assertEqual(msg, {"op": "message", "channel": ch, "data": {"i": i}}, raw)

    async def test_subscribe_twice_is_idempotent_no_duplicates(self):
        await subscribe(self.ws, "twice")
        r2 = await subscribe(self.ws, "twice")
        self.assertIs(r2.get("recovered"), False, r2)
        for n in (1, 2, 3):
            self.pub("twice", '{"n":%d}' % n)
        got = [(await recv_frame(self.ws))[1] for _ in range(3)]
        # A duplicate delivery would show up before n=3.
        self.assertEqual(got, [{"op": "message", "channel": "twice", "data": {"n": n}}
                               for n in (1, 2, 3)])
        self.assertEqual(self.herald.metric("herald_subscriptions"), 1,
                         "subscribing twice counts as one subscription")
        # One unsubscribe undoes it: no refcount per subscribe call.
        await unsubscribe(self.ws, "twice")
        await subscribe(self.ws, "twice-after")
        self.redis.publish("twice", '{"n":4}')
        self.pub("twice-after", '{"after":1}')
        _, msg = await recv_frame(self.ws)
        self.assertEqual(msg, {"op": "message", "channel": "twice-after", "data": {"after": 1}},
                         "a message was delivered after the single unsubscribe")

    async def test_unsubscribe_stops_delivery(self):
        await subscribe(self.ws, "u:a")
        await subscribe(self.ws, "u:b")
        await unsubscribe(self.ws, "u:a")
        # herald has no other subscriber of u:a, so it may unsubscribe from Redis: publish
        # without requiring a Redis subscriber.
        self.redis.publish("u:a", '{"gone":true}')
        self.pub("u:b", '{"still":true}')
        _, msg = await recv_frame(self.ws)
        self.assertEqual(msg, {"op": "message", "channel": "u:b", "data": {"still": True}})
        reply = await ping(self.ws, id="after")
        self.assertEqual(reply.get("id"), "after")

    async def test_abrupt_disconnect_releases_subscriptions(self):
        raw = self.raw_ws(self.herald)
        for ch in ("abrupt:1", "abrupt:2"):
            raw.send_json({"op": "subscribe", "channel": ch})
            self.assertEqual(raw.recv_json(timeout=20).get("op"), "subscribed")
        self.assertEqual(self.herald.metric("herald_connections"), 2)  # + self.ws
        # RST instead of a close handshake.
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        self.herald.wait_metric("herald_connections", lambda v: v == 1)
        self.herald.wait_metric("herald_subscriptions", lambda v: v == 0)
        harness.wait_for(lambda: self.redis.numsub("abrupt:1") == 0
                         and self.redis.numsub("abrupt:2") == 0,
                         what="herald to UNSUBSCRIBE after the only subscriber vanished")
        await ping(self.ws)

    async def test_unsubscribe_when_not_subscribed(self):
        reply = await request(self.ws, {"op": "unsubscribe", "channel": "never"})
        self.assertEqual(reply, {"op": "unsubscribed", "channel": "never"})

    async def test_channel_name_limits_accepted(self):
        allowed = "AZaz09_-.:@="
        await subscribe(self.ws, allowed)
        await subscribe(self.ws, "x" * 200)
        await subscribe(self.ws, "1")
        self.pub("x" * 200, '"long"')
        _, msg = await recv_frame(self.ws)
        self.assertEqual(msg, {"op": "message", "channel": "x" * 200, "data": "long"})


class TestBadFrames(ProtocolBase):
    async def test_invalid_json(self):
        for frame in ["{not json", "", "{\"op\":\"ping\"", "nul", "{\"op\":\"ping\"} x"]:
            with self.subTest(frame=frame):
                await self.expect_error(self.ws, frame, ERR_BAD)

    async def test_non_object(self):
        for frame in ["[1,2]", '"ping"', "42", "null", "true", '[{"op":"ping"}]']:
            with self.subTest(frame=frame):
                await self.expect_error(self.ws, frame, ERR_BAD)

    async def test_missing_or_unknown_op(self):
        cases = [
            {"channel": "a"},
            {},
            {"op": "dance"},
            {"op": 5},
            {"op": None},
            {"op": ["ping"]},
            {"op": "PING"},
        ]
        for frame in cases:
            with self.subTest(frame=frame):
                await self.expect_error(self.ws, frame, ERR_BAD)

    async def test_unknown_op_echoes_id(self):
        await self.expect_error(self.ws, {"op": "dance", "id": "d1"}, ERR_BAD, id_="d1")
        await self.expect_error(self.ws, {"op": "dance", "id": 9}, ERR_BAD, id_=9)

    async def test_bad_channel(self):
        cases = [
            {"op": "subscribe"},
            {"op": "subscribe", "channel": None},
            {"op": "subscribe", "channel": 123},
            {"op": "subscribe", "channel": ["a"]},
            {"op": "subscribe", "channel": ""},
            {"op": "subscribe", "channel": "x" * 201},
            {"op": "subscribe", "channel": "has space"},
            {"op": "subscribe", "channel": "slash/no"},
            {"op": "subscribe", "channel": "star*"},
            {"op": "subscribe", "channel": "caf\u00e9"},
            {"op": "subscribe", "channel": "nl\n"},
            {"op": "subscribe", "channel": "nul\u0000x"},
            {"op": "unsubscribe"},
            {"op": "unsubscribe", "channel": ""},
            {"op": "unsubscribe", "channel": "bad chan"},
            {"op": "unsubscribe", "channel": "y" * 201},
        ]
        for frame in cases:
            with self.subTest(frame=frame):
                await self.expect_error(self.ws, frame, ERR_BAD)
        # Nothing else happened: no subscription was created by any of these.
        self.assertEqual(self.herald.metric("herald_subscriptions"), 0)

    async def test_bad_channel_echoes_id(self):
        await self.expect_error(
            self.ws, {"op": "subscribe", "channel": "bad chan", "id": "b1"}, ERR_BAD, id_="b1"
        )

    async def test_binary_frame(self):
        await self.expect_error(self.ws, b'{"op":"ping"}', ERR_BAD, binary=True)
        await self.expect_error(self.ws, b"\x00\x01\x02", ERR_BAD, binary=True)

    async def test_too_large_text_frame(self):
        # 70,000 bytes of otherwise valid JSON: over the 64 KiB limit.
        big = json.dumps({"op": "ping", "pad": "x" * 70000})
        self.assertGreater(len(big), 65536)
        await self.expect_error(self.ws, big, "too_large")
        # A frame just under the limit is fine.
        ok = json.dumps({"op": "ping", "pad": "y" * 60000, "id": "big-ok"})
        self.assertLess(len(ok), 65536)
        reply = await request(self.ws, ok)
        self.assertEqual(reply, {"op": "pong", "id": "big-ok"})

    async def test_error_counters(self):
        before = self.herald.metric("herald_client_errors_total", {"code": "bad_request"}, 0.0)
        for frame in ["{x", "[]", '{"op":"nope"}']:
            await self.expect_error(self.ws, frame, ERR_BAD)
        self.herald.wait_metric(
            "herald_client_errors_total", lambda v: v is not None and v >= before + 3,
            labels={"code": "bad_request"},
        )


class TestFragments(ProtocolBase):
    """A client message may arrive as several WebSocket frames (RFC 6455 fragmentation)."""

    async def test_fragmented_text_message(self):
        raw = self.raw_ws(self.herald)
        msg = b'{"op":"ping","id":"frag"}'

        def exchange():
            raw.send_frame(harness.OP_TEXT, msg[:5], fin=False)
            raw.send_frame(harness.OP_CONT, msg[5:12], fin=False)
            raw.send_frame(harness.OP_PING, b"hello")  # control frame between fragments
            raw.send_frame(harness.OP_CONT, msg[12:], fin=True)
            op, payload = raw.recv_message(timeout=20)
            while op == harness.OP_PONG:
                op, payload = raw.recv_message(timeout=20)
            return op, payload

        op, payload = await asyncio.to_thread(exchange)
        self.assertEqual(op, harness.OP_TEXT)
        self.assertEqual(json.loads(payload), {"op": "pong", "id": "frag"})

    async def test_fragmented_message_over_limit_is_too_large(self):
        raw = self.raw_ws(self.herald)
        body = json.dumps({"op": "ping", "pad": "z" * 80000}).encode()

        def exchange():
            for i in range(0, len(body), 16000):
                chunk = body[i:i + 16000]
                first, last = i == 0, i + 16000 >= len(body)
                raw.send_frame(harness.OP_TEXT if first else harness.OP_CONT, chunk, fin=last)
            reply = raw.recv_json(timeout=20)
            raw.send_json({"op": "ping", "id": "after"})
            return reply, raw.recv_json(timeout=20)

        reply, after = await asyncio.to_thread(exchange)
        self.assertEqual((reply.get("op"), reply.get("code")), ("error", "too_large"), reply)
        self.assertEqual(after, {"op": "pong", "id": "after"})


class TestSubscriptionLimit(ProtocolBase):
    herald_args = ("--max-subscriptions", "3")

    async def test_limit(self):
        for ch in ("l1", "l2", "l3"):
            await subscribe(self.ws, ch)
        await self.expect_error(self.ws, {"op": "subscribe", "channel": "l4"}, ERR_BAD)
        # Re-subscribing to a channel already held is not a new subscription.
        await subscribe(self.ws, "l1")
        # l4 was not subscribed: nothing published to it arrives; l3 still works.
        self.redis.publish("l4", '{"no":1}')
        self.pub("l3", '{"yes":1}')
        _, msg = await recv_frame(self.ws)
        self.assertEqual(msg, {"op": "message", "channel": "l3", "data": {"yes": 1}})
        # Freeing a slot allows a new channel.
        await unsubscribe(self.ws, "l1")
        await subscribe(self.ws, "l4")
        self.pub("l4", '{"now":1}')
        _, msg = await recv_frame(self.ws)
        self.assertEqual(msg, {"op": "message", "channel": "l4", "data": {"now": 1}})
        # The limit is per connection: another connection can take 3 more.
        ws2 = await self.connect(self.herald)
        for ch in ("m1", "m2", "m3"):
            await subscribe(ws2, ch)


class TestPayloads(ProtocolBase):
    async def test_raw_payload_wrapped_exact_bytes(self):
        ch = "raw:1"
        await subscribe(self.ws, ch)
        payloads = [
            '{"b":1, "a":[1,2,{"x":"y"}]}',
            '{"z":0,"a":"\\u00e9 and \u00e9 \U0001F600","n":1.50,"e":1e3}',
            "42",
            '"just a string"',
            "[1, 2 ,3]",
            "null",
            "true",
            '{"nested":{"deep":{"deeper":[{},[],""]}}}',
        ]
        for p in payloads:
            self.pub(ch, p.encode("utf-8"))
        for p in payloads:
            raw, _ = await recv_frame(self.ws)
            expected = '{"op":"message","channel":"%s","data":%s}' % (ch, p)
            self.assertEqual(raw, expected)

    async def test_large_payloads_delivered_intact(self):
        # Server -> client messages are not bound by the 64 KiB client frame limit.
        ch = "raw:big"
        await subscribe(self.ws, ch)
        ws2 = await self.connect(self.herald)
        await subscribe(ws2, ch)
        sizes = [125, 126, 65535, 65536, 70000, 300000, 1000]
        payloads = [json.dumps({"n": n, "s": "q" * n}) for n in sizes]
        for p in payloads:
            self.pub(ch, p)
        for ws in (self.ws, ws2):
            for p in payloads:
                raw, _ = await recv_frame(ws)
                self.assertEqual(raw, '{"op":"message","channel":"%s","data":%s}' % (ch, p))

    async def test_envelope_forwarded_byte_for_byte(self):
        ch = "env:1"
        await subscribe(self.ws, ch)
        envs = [
            '{"op":"message","channel":"env:1","seq":1,"ts":1764000000000,"data":{"k":"v"}}',
            '{"op":"message","channel":"env:1","seq":2,"ts":1764000000001,'
            '"data":{"list":[1,2,3], "s":"\u00e9"}}',
            # Other key order and spacing: still forwarded unchanged.
            '{"channel":"env:1", "seq":3, "op":"message", "data":null, "ts":1764000000002}',
        ]
        for e in envs:
            self.pub(ch, e.encode("utf-8"))
        for e in envs:
            raw, _ = await recv_frame(self.ws)
            self.assertEqual(raw, e)

    async def test_non_json_payload_dropped_and_counted(self):
        ch = "bad:json"
        await subscribe(self.ws, ch)
        before = self.herald.metric("herald_invalid_payloads_total")
        self.assertIsNotNone(before, "herald_invalid_payloads_total missing from /metrics")
        bad = [b"not json", b"{\"a\":", b"{\"a\":1} trailing", b"", b"\xff\xfe", b"{'a':1}"]
        for p in bad:
            self.pub(ch, p)
        self.pub(ch, '{"ok":1}')
        raw, msg = await recv_frame(self.ws)
        self.assertEqual(msg, {"op": "message", "channel": ch, "data": {"ok": 1}},
                         f"an invalid payload was delivered: {raw!r}")
        self.herald.wait_metric(
            "herald_invalid_payloads_total", lambda v: v == before + len(bad)
        )
        # Later valid messages still flow.
        self.pub(ch, '{"ok":2}')
        _, msg = await recv_frame(self.ws)
        self.assertEqual(msg, {"op": "message", "channel": ch, "data": {"ok": 2}})

    async def test_bad_envelope_dropped_and_counted(self):
        ch = "bad:env"
        await subscribe(self.ws, ch)
        before = self.herald.metric("herald_invalid_payloads_total")
        self.assertIsNotNone(before, "herald_invalid_payloads_total missing from /metrics")
        bad = [
            '{"op":"message","channel":"other","seq":1,"ts":1,"data":{}}',
            '{"op":"message","channel":"bad:env","seq":0,"ts":1,"data":{}}',
            '{"op":"message","channel":"bad:env","seq":-3,"ts":1,"data":{}}',
            '{"op":"message","channel":"bad:env","seq":"4","ts":1,"data":{}}',
            '{"op":"message","channel":"bad:env","seq":1.5,"ts":1,"data":{}}',
        ]
        for p in bad:
            self.pub(ch, p)
        good = '{"op":"message","channel":"bad:env","seq":1,"ts":2,"data":{"good":true}}'
        self.pub(ch, good)
        raw, _ = await recv_frame(self.ws)
        self.assertEqual(raw, good, "a bad envelope was delivered")
        self.herald.wait_metric(
            "herald_invalid_payloads_total", lambda v: v == before + len(bad)
        )
        self.pub(ch, '{"raw":"after"}')
        _, msg = await recv_frame(self.ws)
        self.assertEqual(msg, {"op": "message", "channel": ch, "data": {"raw": "after"}})


class TestRedisPrefix(ProtocolBase):
    herald_args = ("--redis-prefix", "app:")

    async def test_prefix(self):
        await subscribe(self.ws, "orders")
        self.assertEqual(self.redis.numsub("app:orders"), 1,
                         "herald should SUBSCRIBE to the prefixed Redis channel")
        # Plain channel: not delivered.
        self.redis.publish("orders", '{"plain":true}')
        self.pub("app:orders", '{"prefixed":true}')
        raw, msg = await recv_frame(self.ws)
        self.assertEqual(msg, {"op": "message", "channel": "orders", "data": {"prefixed": True}},
                         f"got {raw!r}")
        # An envelope names the Herald channel (without prefix) and is forwarded unchanged.
        env = '{"op":"message","channel":"orders","seq":1,"ts":5,"data":{"e":1}}'
        self.pub("app:orders", env)
        raw, _ = await recv_frame(self.ws)
        self.assertEqual(raw, env)
        # After the messages above, nothing from the plain channel may show up.
        reply = await request(self.ws, {"op": "ping", "id": "end"})
        self.assertEqual(reply, {"op": "pong", "id": "end"})


if __name__ == "__main__":
    harness.main()
