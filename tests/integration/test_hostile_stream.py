"""Hostile input on GET /v1/channels/{C}/stream, at the byte level: requests pipelined behind
a stream, bytes sent into an open stream, bodies where none belong, heads split and over
their limits, forged Redis payloads that try to break SSE framing, tokens that are missing,
forbidden or expire mid-stream, more streams than an address may hold, a reader that stops
reading. After each case the process is alive and a bystander stream on the same channel
still gets every message, in order."""

import asyncio
import json
import signal
import socket
import time

from harness import main, wait_for
import jwt_util as jwt
from test_http_stream import RawHTTP, StreamCase, get_req, sse_req


class Bystander:
    """An SSE stream on the channel that nothing hostile touches: it must see every message."""

    def __init__(self, case, channel):
        self.case, self.channel = case, channel
        self.c = case.sse(f"/v1/channels/{channel}/stream")
        case.until_event(self.c, "subscribed")

    def expect(self, datas, timeout=10.0):
        got = []
        while len(got) < len(datas):
            ev = self.c.event(timeout)
            if "comment" in ev:
                continue
            got.append(json.loads(ev["data"])["data"])
        self.case.assertEqual(got, datas)


class HostileStreamTest(StreamCase):
    herald_args = ("--max-connections-per-ip", "20", "--stream-heartbeat", "1s")

    def check_intact(self, bystander, tag):
        """Alive, and a message published now reaches the bystander."""
        self.alive()
        self.redis.publish(bystander.channel, json.dumps({"after": tag}))
        bystander.expect([{"after": tag}])

    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.by = Bystander(self, "h")
        await asyncio.to_thread(wait_for, lambda: self.redis.numsub("h") == 1)

    async def test_a_request_pipelined_behind_a_stream_ends_it(self):
        c = self.open(sse_req("/v1/channels/h/stream") + get_req("/v1/channels/h") +
                      get_req("/healthz"))
        # the stream may start; the pipelined requests are never answered on it
        self.assertTrue(c.closed(timeout=8))
        self.assertLessEqual(c.buf.count(b"HTTP/1.1"), 1, c.buf[:300])
        self.assertNotIn(b"\"epoch\":null}", c.buf)  # no position answer in the stream
        self.check_intact(self.by, "pipelined")
        # a long-poll is a plain request: what is pipelined behind it is answered after it
        c = self.open(get_req("/v1/channels/h/stream?timeout=1") + get_req("/v1/channels/h") +
                      get_req("/healthz"))
        statuses = []
        for _ in range(3):
            statuses.append(c.head())
            body = c.body()
            if len(statuses) == 1:
                self.assertEqual(json.loads(body)["messages"], [])
        self.assertEqual(statuses, [200, 200, 200])
        self.check_intact(self.by, "pipelined-poll")

    async def test_bytes_sent_into_an_open_stream_end_it(self):
        # a whole request, or bytes that cannot start one, end the stream (lws answers a
        # malformed line itself); an unfinished line waits in lws's header table, which ends
        # the connection once past its 8 KiB
        for junk in (b"\r\n", b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00",
                     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"x" * 9000,
                     b"GET /v1/channels/h/stream HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n"):
            c = self.sse("/v1/channels/h/stream")
            self.until_event(c, "subscribed")
            c.sock.sendall(junk)
            self.assertTrue(c.closed(timeout=5), junk[:40])
            self.check_intact(self.by, repr(junk[:20]))
        await asyncio.to_thread(self.h.wait_metric, "herald_http_streams", lambda v: v == 1,
                                {"kind": "sse"})

    async def test_bodies_and_methods_where_none_belong(self):
        # (request, statuses, the front door closes the connection)
        cases = [
            ("GET /v1/channels/h/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
             "Content-Length: 5\r\n\r\nhello", (400,), True),
            ("GET /v1/channels/h/stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\nhello\r\n0\r\n\r\n", (400,), True),
            ("POST /v1/channels/h/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", (404,),
             False),
            ("PUT /v1/channels/h/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", (400, 405),
             True),
            ("DELETE /v1/channels/h/stream HTTP/1.1\r\nHost: x\r\n\r\n", (400, 405), True),
            ("GET /v1/channels/h/stream/ HTTP/1.1\r\nHost: x\r\n\r\n", (400,), False),
            ("GET /v1/channels/h%2Fx/stream HTTP/1.1\r\nHost: x\r\n\r\n", (400,), False),
        ]
        for raw, statuses, closes in cases:
            c = self.open(raw)
            self.assertIn(c.head(), statuses, raw)
            if closes:
                self.assertTrue(c.closed(timeout=5), raw)
            self.check_intact(self.by, raw[:20])
        self.assertEqual(self.h.metric("herald_http_streams", {"kind": "sse"}), 1)

    async def test_a_head_split_into_single_bytes_still_streams(self):
        req = sse_req("/v1/channels/h/stream").encode()
        s = socket.create_connection(("127.0.0.1", self.h.port), timeout=10)
        self.addCleanup(s.close)
        for b in req:
            s.sendall(bytes([b]))
            await asyncio.sleep(0.002)
        c = RawHTTP.__new__(RawHTTP)
        c.sock, c.buf, c.status, c.headers = s, b"", None, {}
        self.assertEqual(c.head(), 200)
        self.until_event(c, "subscribed")
        await asyncio.to_thread(wait_for, lambda: self.redis.numsub("h") == 1)
        self.redis.publish("h", '{"split":1}')
        self.assertEqual(json.loads(c.event()["data"])["data"], {"split": 1})
        self.by.expect([{"split": 1}])

    async def test_heads_and_ids_over_their_limits(self):
        big = "a" * 9000
        c = self.open(sse_req("/v1/channels/h/stream", [f"Last-Event-ID: {big}"]))
        try:
            status = c.head()
        except (EOFError, ConnectionResetError):
            status = None  # lws may hang up on a head past its table
        self.assertIn(status, (None, 400, 431))
        for lid in ("e" * 60 + "_1", "abc_" + "9" * 21, "ab\tc_1", "_1", "abc_",
                    "abc_99999999999999999999"):
            c = self.open(sse_req("/v1/channels/h/stream", [f"Last-Event-ID: {lid}"]))
            self.assertEqual(c.head(), 400, lid)
        c = self.open(get_req("/v1/channels/h/stream?" + "&".join(f"k{i}=v" for i in range(900))))
        try:
            self.assertIn(c.head(), (200, 400, 414, 431))
        except (EOFError, ConnectionResetError):
            pass
        self.check_intact(self.by, "limits")

    async def test_forged_payloads_cannot_forge_sse_events(self):
        # valid JSON whose whitespace holds blank lines and CRs: still one event, its data
        # lines joined back into the same JSON; no id, no event name gets in
        forged = '{"a":\n\n"id: 1_1\\nevent: reset",\r\r"b":\r\n\r\n2}'
        self.redis.publish("h", forged)
        ev = self.by.c.event()
        self.assertNotIn("id", ev)
        self.assertNotIn("event", ev)
        self.assertEqual(json.loads(ev["data"])["data"], {"a": "id: 1_1\nevent: reset", "b": 2})
        before = self.h.metric("herald_invalid_payloads_total")
        for bad in ('{"a":1}\n\nid: 9_9\ndata: x', "\x00", '{"op":"message","seq":"x"}'):
            self.redis.publish("h", bad)
        await asyncio.to_thread(self.h.wait_metric, "herald_invalid_payloads_total",
                                lambda v: v >= before + 3)
        self.check_intact(self.by, "forged")

    async def test_abandoned_long_polls_let_go_of_their_place(self):
        conns = [self.open(get_req("/v1/channels/h/stream?timeout=120")) for _ in range(10)]
        await asyncio.to_thread(self.h.wait_metric, "herald_http_streams",
                                lambda v: v == 10, {"kind": "poll"})
        t = time.monotonic()
        for c in conns:
            c.close()
        # noticed within about a second each, not at the 120 s timeout
        await asyncio.to_thread(self.h.wait_metric, "herald_http_streams",
                                lambda v: v == 0, {"kind": "poll"}, 10)
        self.assertLess(time.monotonic() - t, 8)
        self.check_intact(self.by, "abandoned")

    async def test_more_streams_than_an_address_may_hold_are_429(self):
        conns = []
        for _ in range(19):  # the bystander is the 20th
            c = self.open(get_req("/v1/channels/h/stream?timeout=30"))
            conns.append(c)
        await asyncio.to_thread(self.h.wait_metric, "herald_http_streams",
                                lambda v: v == 19, {"kind": "poll"})
        c = self.open(sse_req("/v1/channels/h/stream"))
        self.assertEqual(c.head(), 429)
        self.assertEqual(json.loads(c.body())["error"]["code"], "rate_limited")
        for c in conns:
            c.close()
        self.check_intact(self.by, "limit")


class StreamAuthTest(StreamCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.pg = self.start_postgres()
        self.h = self.start_herald_with_history(self.redis, self.pg, "--jwt-secret", jwt.SECRET,
                                                "--jwt-leeway", "0")
        await asyncio.to_thread(self.h.wait_ready)

    async def test_missing_forbidden_and_expiring_tokens(self):
        c = self.open(sse_req("/v1/channels/a/stream"))
        self.assertEqual(c.head(), 401)
        tok = jwt.token(channels=["a"], exp_in=300)
        c = self.open(sse_req(f"/v1/channels/b/stream?token={tok}"))
        self.assertEqual(c.head(), 403)
        c = self.open(get_req(f"/v1/channels/b/stream?timeout=1", [f"Authorization: Bearer {tok}"]))
        self.assertEqual(c.head(), 403)
        bad = jwt.wrong_secret(channels=["a"])
        c = self.open(sse_req(f"/v1/channels/a/stream?token={bad}"))
        self.assertEqual(c.head(), 401)
        # a token that expires while its stream is open ends the stream
        short = jwt.token(channels=["a"], exp_in=2)
        c = self.sse(f"/v1/channels/a/stream?token={short}")
        self.until_event(c, "subscribed")
        t = time.monotonic()
        self.assertTrue(c.closed(timeout=10))
        self.assertLess(time.monotonic() - t, 8)
        self.assertEqual(self.h.metric("herald_auth_failures_total"), 2)  # the two 401s
        self.alive()


class SlowReaderTest(StreamCase):
    herald_args = ("--client-queue-bytes", "64k", "--max-publish-bytes", "16k")

    async def test_a_reader_that_stops_reading_is_closed_and_others_go_on(self):
        by = Bystander(self, "slow")
        # a stream whose reader never reads: its socket buffers fill, then its queue
        s = socket.create_connection(("127.0.0.1", self.h.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.addCleanup(s.close)
        s.sendall(sse_req("/v1/channels/slow/stream").encode())
        await asyncio.to_thread(self.h.wait_metric, "herald_http_streams",
                                lambda v: v == 2, {"kind": "sse"})
        payload = json.dumps({"pad": "x" * 8000})
        sent, seen = 0, 0
        by.c.sock.setblocking(False)
        while self.h.metric("herald_http_stream_slow_closes_total") < 1 and sent < 2000:
            for _ in range(4):  # under the 64 KiB queue between two reads of the bystander
                self.redis.publish("slow", payload)
                sent += 1
            await asyncio.sleep(0.005)
            try:  # the bystander keeps reading: every message reaches it
                while True:
                    chunk = by.c.sock.recv(1 << 20)
                    if not chunk:
                        break
                    seen += chunk.count(b"x" * 8000)
            except BlockingIOError:
                pass
        self.assertGreaterEqual(self.h.metric("herald_http_stream_slow_closes_total"), 1)
        await asyncio.to_thread(self.h.wait_metric, "herald_http_streams",
                                lambda v: v == 1, {"kind": "sse"})
        by.c.sock.setblocking(True)
        self.redis.publish("slow", '{"marker":1}')
        tail = b""
        while b'"marker":1' not in tail:
            tail += by.c.sock.recv(1 << 20)
        seen += tail.count(b"x" * 8000)
        self.assertEqual(seen, sent)  # the bystander lost nothing
        self.alive()


class StreamDrainTest(StreamCase):
    herald_args = ("--drain-seconds", "3")

    async def test_drain_ends_streams_and_answers_long_polls(self):
        c = self.sse("/v1/channels/d/stream")
        self.until_event(c, "subscribed")
        p = self.open(get_req("/v1/channels/d/stream?timeout=60"))
        await asyncio.to_thread(self.h.wait_metric, "herald_http_streams",
                                lambda v: v == 1, {"kind": "poll"})
        t = time.monotonic()
        self.h.signal(signal.SIGTERM)
        self.assertTrue(c.closed(timeout=10))
        self.assertEqual(p.head(10), 200)
        page = json.loads(p.body())
        self.assertEqual(page["messages"], [])
        self.assertLess(time.monotonic() - t, 5)
        self.h.wait_exit(10)


if __name__ == "__main__":
    main()
