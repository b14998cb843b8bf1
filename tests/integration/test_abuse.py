#!/usr/bin/python3
"""Abuse: deeply nested JSON (bad_request), oversized frames (too_large), floods of junk text
and binary frames and protocol-violating frames, the per-connection rate limit (rate_limited,
refused messages not processed, 4029 for a client that keeps going), the subscription limit,
and the per-IP connection limit (HTTP 429; other IPs unaffected). After each: the process is
healthy, memory stays bounded and other clients keep receiving."""

import asyncio
import json
import os
import random
import socket
import sys

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ping, recv_json, request, subscribe, wait_close  # noqa: E402

# Limits high enough that a test about something else is never rate limited.
NO_RATE_LIMIT = ("--rate-limit", "1000000", "--rate-burst", "1000000")
RSS_GROWTH_LIMIT_KIB = 96 * 1024  # generous: only catches a leak per frame or per connection


def nested(depth, leaf="1"):
    """A ping frame whose total nesting (the frame object included) is `depth`."""
    inner = "[" * (depth - 1) + leaf + "]" * (depth - 1)
    return '{"op":"ping","x":' + inner + "}" if depth > 1 else '{"op":"ping"}'


class AbuseBase(harness.HeraldTestCase):
    herald_args = NO_RATE_LIMIT

    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.herald = self.start_herald(self.redis, *self.herald_args)

    async def expect_error(self, ws, frame, codes, binary=False):
        if isinstance(codes, str):
            codes = (codes,)
        await ws.send(frame if binary or isinstance(frame, (str, bytes)) else json.dumps(frame))
        reply = await recv_json(ws)
        self.assertIsInstance(reply, dict, f"reply to {frame!r:.80}")
        self.assertEqual(reply.get("op"), "error", f"reply to {frame!r:.80}: {reply!r}")
        self.assertIn(reply.get("code"), codes, f"reply to {frame!r:.80}: {reply!r}")
        await ping(ws)  # the connection stays open and usable
        return reply

    async def listener(self, channel):
        ws = await self.connect(self.herald)
        await subscribe(ws, channel)
        return ws

    async def assert_delivers(self, ws, channel, n=5, tag="x"):
        for i in range(n):
            self.assertGreaterEqual(self.redis.publish(channel, json.dumps({tag: i})), 1)
        for i in range(n):
            msg = await recv_json(ws)
            self.assertEqual(msg, {"op": "message", "channel": channel, "data": {tag: i}})

    async def assert_healthy(self, rss_before=None):
        self.assertTrue(self.herald.alive(), "herald died")
        self.assertEqual(self.herald.healthz(), 200)
        fresh = await self.listener("health:fresh")
        await self.assert_delivers(fresh, "health:fresh", 3, "h")
        await fresh.close()
        if rss_before is not None:
            grown = self.herald.rss_kib() - rss_before
            self.assertLess(grown, RSS_GROWTH_LIMIT_KIB, f"RSS grew by {grown} KiB")


class TestJsonDepth(AbuseBase):
    herald_args = NO_RATE_LIMIT + ("--max-json-depth", "4")

    async def test_deep_nesting_is_bad_request_connection_stays_open(self):
        ws = await self.connect(self.herald)
        before = self.herald.metric("herald_client_errors_total", {"code": "bad_request"})
        self.assertEqual(await request(ws, nested(3)), {"op": "pong"})
        # brackets inside strings are not nesting
        self.assertEqual(await request(ws, '{"op":"ping","x":"[[[[[[[[{{{{{{"}'),
                         {"op": "pong"})
        self.assertEqual(await request(ws, '{"op":"ping","x":"\\"[[[[[[[[[[\\""}'),
                         {"op": "pong"})
        frames = [
            nested(7),
            nested(7, leaf="{}"),
            '{"op":"ping","x":' + '{"a":' * 10 + "1" + "}" * 10 + "}",
            '{"op":"subscribe","channel":"deep","x":[[[[[[[[1]]]]]]]]}',
            "[" * 60000,                               # never closed
            "[" * 30000 + "]" * 30000,                 # valid JSON, 30000 deep
            '{"a":' * 10000 + "1" + "}" * 10000,       # objects, 10000 deep
        ]
        for f in frames:
            with self.subTest(frame=f[:40]):
                await self.expect_error(ws, f, "bad_request")
        self.assertEqual(self.redis.numsub("deep"), 0, "a too-deep subscribe was processed")
        self.herald.wait_metric("herald_client_errors_total",
                                lambda v: v >= before + len(frames),
                                labels={"code": "bad_request"})
        await self.assert_healthy()


class TestJsonDepthDefault(AbuseBase):
    async def test_default_depth_16(self):
        ws = await self.connect(self.herald)
        self.assertEqual(await request(ws, nested(10)), {"op": "pong"})
        await self.expect_error(ws, nested(40), "bad_request")
        await self.expect_error(ws, "[" * 30000 + "]" * 30000, "bad_request")
        await ping(ws)


class TestOversizedFrames(AbuseBase):
    herald_args = NO_RATE_LIMIT + ("--max-frame-bytes", "1k")

    async def test_oversized_frames_too_large(self):
        other = await self.listener("big:other")
        rss0 = self.herald.rss_kib()
        ws = await self.connect(self.herald)
        await ping(ws)
        for size in (1100, 4096, 64 * 1024, 1024 * 1024, 4 * 1024 * 1024):
            with self.subTest(size=size):
                frame = json.dumps({"op": "ping", "pad": "x" * size})
                await self.expect_error(ws, frame, "too_large")
        # binary: too_large or bad_request, never processed
        await self.expect_error(ws, os.urandom(256 * 1024), ("too_large", "bad_request"),
                                binary=True)
        for _ in range(20):
            await ws.send("y" * 5000)
        for _ in range(20):
            self.assertEqual((await recv_json(ws)).get("code"), "too_large")
        await ping(ws)
        await self.assert_delivers(other, "big:other")
        await self.assert_healthy(rss0)


class TestJunkFloods(AbuseBase):
    def junk_text(self, rng, i):
        kinds = [
            lambda: "not json %d" % i,
            lambda: str(i),
            lambda: json.dumps([i, "x"]),
            lambda: json.dumps({"i": i}),
            lambda: json.dumps({"op": "nope%d" % i}),
            lambda: json.dumps({"op": "subscribe", "channel": "bad channel %d" % i}),
            lambda: json.dumps({"op": "subscribe"}),
            lambda: "{" * rng.randint(1, 50),
            lambda: '{"op":"ping","op":"ping"}',
            lambda: "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(1, 300))),
            lambda: "\u00e9\u4e2d\U0001F600" * rng.randint(1, 20),
            lambda: "",
        ]
        return kinds[i % len(kinds)]()

    async def flood_and_check(self, make, count):
        other = await self.listener("flood:other")
        rss0 = self.herald.rss_kib()
        ws = await self.connect(self.herald)
        frames = [make(i) for i in range(count)]

        async def sender():
            for f in frames:
                await ws.send(f)

        send_task = asyncio.create_task(sender())
        # meanwhile the other client keeps receiving
        pub = asyncio.create_task(asyncio.to_thread(
            lambda: [self.redis.publish("flood:other", json.dumps({"x": i})) for i in range(50)]))
        for i in range(50):
            msg = await recv_json(other)
            self.assertEqual(msg, {"op": "message", "channel": "flood:other", "data": {"x": i}})
        await pub
        await send_task
        codes = {}
        for i in range(count):
            reply = await recv_json(ws)
            self.assertEqual(reply.get("op"), "error", f"reply to {frames[i]!r:.80}: {reply!r}")
            codes[reply.get("code")] = codes.get(reply.get("code"), 0) + 1
        self.assertEqual(codes, {"bad_request": count}, codes)
        await ping(ws)
        await self.assert_delivers(other, "flood:other", 3, "after")
        await self.assert_healthy(rss0)

    async def test_junk_text_flood(self):
        rng = random.Random(1)
        await self.flood_and_check(lambda i: self.junk_text(rng, i), 1500)

    async def test_junk_binary_flood(self):
        rng = random.Random(2)
        await self.flood_and_check(
            lambda i: bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 2000))), 1500)

    async def test_many_connections_flooding_at_once(self):
        rss0 = self.herald.rss_kib()
        other = await self.listener("flood:many")
        clients = [await self.connect(self.herald) for _ in range(20)]

        async def abuse(ws, k):
            for i in range(150):
                await ws.send("junk %d %d" % (k, i) if i % 2 else os.urandom(64))
            for _ in range(150):
                self.assertEqual((await recv_json(ws)).get("code"), "bad_request")
            await ping(ws)

        await asyncio.gather(*(abuse(ws, k) for k, ws in enumerate(clients)))
        await self.assert_delivers(other, "flood:many")
        for ws in clients:
            await ws.close()
        self.herald.wait_metric("herald_connections", lambda v: v == 1)
        await self.assert_healthy(rss0)


class TestDefaultLimitsFlood(AbuseBase):
    herald_args = ()

    async def test_junk_flood_with_default_rate_limit(self):
        """Each junk frame gets an error (bad_request) or is rate limited; the client may be
        closed with 4029; the process is unaffected."""
        other = await self.listener("flood:default")
        ws = await self.connect(self.herald)
        sent = 0
        try:
            for i in range(1000):
                await ws.send("junk %d" % i)
                sent += 1
        except websockets.exceptions.ConnectionClosed:
            pass
        replies = []
        try:
            while len(replies) < sent:
                replies.append(await recv_json(ws))
        except websockets.exceptions.ConnectionClosed:
            pass
        self.assertTrue(replies, "no reply at all to the flood")
        for r in replies:
            self.assertEqual(r.get("op"), "error", r)
            self.assertIn(r.get("code"), ("bad_request", "rate_limited"), r)
        # refused frames get rate_limited; a client closed with 4029 may lose the replies
        # still queued at that moment
        self.assertTrue("rate_limited" in {r["code"] for r in replies} or ws.close_code == 4029,
                        "1000 frames at once were never rate limited (default 50/s, burst 100)")
        if ws.close_code is not None:
            self.assertEqual(ws.close_code, 4029)
        await self.assert_delivers(other, "flood:default")
        await self.assert_healthy()


class TestProtocolViolations(AbuseBase):
    async def test_malformed_frames_close_only_that_connection(self):
        other = await self.listener("viol:other")
        rss0 = self.herald.rss_kib()
        cases = {
            # name: (bytes after the handshake, must the server close?)
            "reserved opcode 3": (bytes([0x83, 0x82]) + b"\0\0\0\0xx", True),
            "reserved opcode 0xB": (bytes([0x8B, 0x80]) + b"\0\0\0\0", True),
            "rsv1 without extension": (bytes([0xC1, 0x82]) + b"\0\0\0\0hi", True),
            "continuation first": (bytes([0x80, 0x82]) + b"\0\0\0\0xx", True),
            "control frame > 125": (bytes([0x89, 0x80 | 126, 0, 200]) + b"\0\0\0\0"
                                    + b"p" * 200, True),
            "fragmented control": (bytes([0x09, 0x81]) + b"\0\0\0\0p", True),
            "unmasked": (bytes([0x81, 0x05]) + b"hello", False),
            "huge length": (bytes([0x81, 0xFF]) + (2 ** 62).to_bytes(8, "big") + b"\0\0\0\0"
                            + b"x" * 100, False),
            "random bytes": (random.Random(3).randbytes(4096), False),
        }
        for name, (data, must_close) in cases.items():
            with self.subTest(case=name):
                raw = self.raw_ws(self.herald, timeout=10)
                try:
                    raw.sock.sendall(data)
                except OSError:
                    continue
                _, code, how = raw.read_until_closed(3 if not must_close else 10)
                if must_close:
                    self.assertNotEqual(how, "timeout", "the server kept the connection")
                    if how == "close-frame":
                        self.assertIn(code, (1002, 1003, 1007, 1009), code)
                raw.close()
                self.assertEqual(self.herald.healthz(), 200)
        # plain junk instead of an HTTP request
        for junk in (b"\x16\x03\x01\x02\x00" + os.urandom(500), b"GARBAGE\r\n\r\n",
                     b"GET /ws HTTP/1.1\r\n" + b"X: " + b"a" * 20000 + b"\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", self.herald.port), timeout=5) as s:
                try:
                    s.sendall(junk)
                    s.recv(4096)
                except OSError:
                    pass
        await self.assert_delivers(other, "viol:other")
        await self.assert_healthy(rss0)


class TestRateLimit(AbuseBase):
    herald_args = ("--rate-limit", "1", "--rate-burst", "5")

    async def test_beyond_the_bucket_rate_limited_and_not_processed(self):
        ws = await self.connect(self.herald)
        before = self.herald.metric("herald_client_errors_total", {"code": "rate_limited"},
                                    default=0)
        frames = [{"op": "ping"}] * 5 + [{"op": "subscribe", "channel": f"rl:{i}"}
                                         for i in range(3)]
        # one write: all 8 arrive at once, the bucket holds 5
        await ws.send(json.dumps(frames[0]))
        for f in frames[1:]:
            await ws.send(json.dumps(f))
        replies = [await recv_json(ws) for _ in frames]
        limited = [i for i, r in enumerate(replies) if r.get("code") == "rate_limited"]
        self.assertTrue(limited, f"nothing rate limited: {replies}")
        for i, r in enumerate(replies):
            if i in limited:
                self.assertEqual(r.get("op"), "error", r)
                self.assertIsInstance(r.get("message"), str, r)
            elif i < 5:
                self.assertEqual(r, {"op": "pong"})
            else:
                self.assertEqual(r.get("op"), "subscribed", r)
        for i in range(3):
            subscribed = (5 + i) not in limited
            self.assertEqual(self.redis.numsub(f"rl:{i}"), 1 if subscribed else 0,
                             f"rl:{i}: a refused subscribe was processed" if not subscribed
                             else f"rl:{i}")
        self.herald.wait_metric("herald_client_errors_total",
                                lambda v: v >= before + len(limited),
                                labels={"code": "rate_limited"})
        # after a pause the bucket has refilled: the same connection works again
        await asyncio.sleep(2.5)
        await ping(ws)
        refused = [f"rl:{i - 5}" for i in limited if i >= 5]
        ch = refused[0] if refused else "rl:after"
        await subscribe(ws, ch)
        await self.assert_delivers(ws, ch, 1)

    async def test_client_that_keeps_going_is_closed_4029(self):
        bystander = await self.listener("rl:bystander")
        closes0 = self.herald.metric("herald_rate_limit_closes_total")
        self.assertIsNotNone(closes0, "herald_rate_limit_closes_total missing from /metrics")
        ws = await self.connect(self.herald)
        # 1. the burst (5) is served, the next 3 are refused: still open
        for i in range(8):
            await ws.send(json.dumps({"op": "ping", "id": i}))
        codes = [(await recv_json(ws)).get("code", "pong") for _ in range(8)]
        self.assertIn("pong", codes, "the burst was not served")
        self.assertIn("rate_limited", codes, codes)
        self.assertTrue(set(codes) <= {"pong", "rate_limited"}, codes)
        # 2. it keeps going: more than a burst of refusals in a row closes it with 4029.
        # (Replies still queued at that moment may be discarded with the queue.)
        try:
            for i in range(40):
                await ws.send(json.dumps({"op": "ping", "id": 100 + i}))
        except websockets.exceptions.ConnectionClosed:
            pass
        try:
            code, reason, frames = await wait_close(ws, 20)
        except asyncio.TimeoutError:
            self.fail("a client that keeps going past the rate limit was not closed")
        self.assertEqual(code, 4029, f"close reason {reason!r}")
        later = [json.loads(f).get("code", "pong") for f in frames]
        self.assertTrue(set(later) <= {"pong", "rate_limited"}, later)
        self.herald.wait_metric("herald_rate_limit_closes_total", lambda v: v >= closes0 + 1)
        self.assertGreaterEqual(
            self.herald.metric("herald_client_errors_total", {"code": "rate_limited"},
                               default=0), 1)
        # per connection: the bystander (same IP) is not limited
        await ping(bystander)
        await self.assert_delivers(bystander, "rl:bystander", 3)
        await self.assert_healthy()


class TestSubscriptionFlood(AbuseBase):
    herald_args = NO_RATE_LIMIT + ("--max-subscriptions", "20")

    async def test_subscription_flood_capped(self):
        ws = await self.connect(self.herald)
        for i in range(200):
            await ws.send(json.dumps({"op": "subscribe", "channel": f"sf:{i}"}))
        replies = [await recv_json(ws) for _ in range(200)]
        ok = [r for r in replies if r.get("op") == "subscribed"]
        bad = [r for r in replies if r.get("code") == "bad_request"]
        self.assertEqual((len(ok), len(bad)), (20, 180), replies[:25])
        self.assertEqual(self.redis.numsub("sf:150"), 0)
        await ping(ws)
        await self.assert_delivers(ws, "sf:0", 2)
        self.assertEqual(self.herald.metric("herald_subscriptions"), 20)
        await self.assert_healthy()


def can_bind(addr):
    try:
        with socket.socket() as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


def raw_handshake_status(port, source=None):
    """Status of a bare WebSocket handshake from `source` (an address to bind); the socket is
    returned open on 101 (caller closes), closed otherwise."""
    s = socket.socket()
    s.settimeout(10)
    if source:
        s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    if status != 101:
        s.close()
        return status, None
    return status, s


class TestPerIpLimit(AbuseBase):
    herald_args = NO_RATE_LIMIT + ("--max-connections-per-ip", "4")

    async def expect_429(self, **kw):
        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
            ws = await harness.ws_connect(self.herald.ws_url, **kw)
            await harness.close_quietly(ws)
        self.assertEqual(cm.exception.status_code, 429)

    async def test_connection_flood_from_one_ip(self):
        h = self.herald
        rejected0 = h.metric("herald_rejected_connections_total")
        clients = [await self.connect(h) for _ in range(4)]
        for ws in clients:
            await subscribe(ws, "ip:all")
        await self.expect_429()
        # a flood of handshakes beyond the limit: each one refused with 429
        statuses = await asyncio.gather(*(
            asyncio.to_thread(raw_handshake_status, h.port) for _ in range(40)))
        self.assertEqual({s for s, _ in statuses}, {429}, statuses)
        h.wait_metric("herald_rejected_connections_total", lambda v: v >= rejected0 + 41)
        # probes are plain HTTP, not WebSockets: still answered from that IP
        self.assertEqual(h.healthz(), 200)
        self.assertEqual(h.metric("herald_connections"), 4)
        # the connected clients are unaffected
        self.assertEqual(self.redis.publish("ip:all", '{"v":1}'), 1)
        for ws in clients:
            self.assertEqual((await recv_json(ws))["data"], {"v": 1})
        # other IPs are not limited by this one
        others = []
        if can_bind("127.0.0.2"):
            for src in ("127.0.0.2",) * 4 + ("127.0.0.3",):
                ws = await self.connect(h, local_addr=(src, 0))
                await ping(ws)
                others.append(ws)
            await self.expect_429(local_addr=("127.0.0.2", 0))
        # a slot frees when a client leaves
        await clients.pop().close()
        h.wait_metric("herald_connections", lambda v: v == 3 + len(others))
        newcomer = await self.connect(h)
        await ping(newcomer)
        await self.expect_429()
        await self.assert_delivers(clients[0], "ip:all", 2)


class TestConnectionChurn(AbuseBase):
    herald_args = NO_RATE_LIMIT + ("--max-connections-per-ip", "50")

    async def test_open_close_churn_keeps_memory_bounded(self):
        h = self.herald
        other = await self.listener("churn:other")
        rss0 = h.rss_kib()
        for round_ in range(6):
            batch = await asyncio.gather(*(harness.ws_connect(h.ws_url) for _ in range(40)))
            for ws in batch[::2]:
                await ws.send("junk")
            await asyncio.gather(*(harness.close_quietly(ws) for ws in batch))
            # and some that vanish without a close frame
            for _ in range(20):
                st, s = await asyncio.to_thread(raw_handshake_status, h.port)
                self.assertEqual(st, 101)
                s.close()
        h.wait_metric("herald_connections", lambda v: v == 1)
        await self.assert_delivers(other, "churn:other")
        await self.assert_healthy(rss0)


if __name__ == "__main__":
    harness.main()
