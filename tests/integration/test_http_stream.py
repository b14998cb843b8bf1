"""GET /v1/channels/{C}/stream against real Redis, PostgreSQL and herald processes: SSE
(ids, Last-Event-ID, raw messages, heartbeats, the reset event, strict refusal), long-poll
(at once, held, timed out), the Durable Streams read subset (offsets, catch-up, long-poll,
SSE), auth, limits, the slow-consumer bound and the drain. Bytes on raw sockets, so that
what is checked is what went on the wire."""

import asyncio
import json
import signal
import socket
import time
import urllib.request

from harness import main, wait_for
from pg import HistoryTestCase
import jwt_util

SECRET = "stream-test-secret-0123456789abcdef"


class RawHTTP:
    """One HTTP/1.1 connection read byte by byte: the head, then the body as it comes."""

    def __init__(self, port, request, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(request if isinstance(request, bytes) else request.encode())
        self.buf = b""
        self.status, self.headers = None, {}

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("closed")
        self.buf += chunk

    def head(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(max(0.05, deadline - time.monotonic()))
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            k, v = line.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        return self.status

    def body(self, timeout=10.0):
        """The rest of a response with content-length (or up to the close)."""
        n = self.headers.get("content-length")
        deadline = time.monotonic() + timeout
        try:
            while n is None or len(self.buf) < int(n):
                self._fill(max(0.05, deadline - time.monotonic()))
        except EOFError:
            if n is not None:
                raise
        out = self.buf[: int(n)] if n is not None else self.buf
        self.buf = self.buf[len(out):]
        return out

    def event(self, timeout=10.0):
        """The next SSE event as a dict (id, event, data, comment), fields as sent."""
        deadline = time.monotonic() + timeout
        while b"\n\n" not in self.buf:
            self._fill(max(0.05, deadline - time.monotonic()))
        raw, self.buf = self.buf.split(b"\n\n", 1)
        ev = {"data": []}
        for line in raw.decode().split("\n"):
            if line.startswith(":"):
                ev["comment"] = line[1:]
                continue
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "data":
                ev["data"].append(v)
            else:
                ev[k] = v
        ev["data"] = "\n".join(ev["data"]) if ev["data"] else None
        return ev

    def closed(self, timeout=5.0):
        """True once the server has closed the connection (whatever came before)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._fill(max(0.05, deadline - time.monotonic()))
        except (EOFError, ConnectionResetError):
            return True
        except socket.timeout:
            return False
        return False

    def close(self):
        self.sock.close()


def get_req(path, headers=()):
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"] + list(headers)
    return "\r\n".join(lines) + "\r\n\r\n"


def sse_req(path, headers=()):
    return get_req(path, ["Accept: text/event-stream"] + list(headers))


def position(epoch, seq):
    return f"{epoch}_{seq:020d}"


class StreamCase(HistoryTestCase):
    herald_args = ()

    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.pg = self.start_postgres()
        self.h = self.start_herald_with_history(self.redis, self.pg, *self.herald_args)
        await asyncio.to_thread(self.h.wait_ready)

    def publish(self, channel, data, h=None):
        """A durable publish through the REST API: {"channel","seq","epoch"}."""
        req = urllib.request.Request(f"{(h or self.h).base}/v1/channels/{channel}/messages",
                                     data=json.dumps(data).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=20) as r:
            return json.loads(r.read())

    def open(self, request, h=None):
        c = RawHTTP((h or self.h).port, request)
        self.addCleanup(c.close)
        return c

    def sse(self, path, headers=(), h=None):
        c = self.open(sse_req(path, headers), h)
        self.assertEqual(c.head(), 200, c.buf)
        self.assertEqual(c.headers["content-type"], "text/event-stream")
        retry = c.event()
        self.assertIn("retry", retry)
        return c

    def until_event(self, c, kind, timeout=10.0):
        """Events up to and including the first of this kind (None: a message)."""
        seen = []
        while True:
            ev = c.event(timeout)
            seen.append(ev)
            if ev.get("event") == kind and "comment" not in ev:
                return seen

    def alive(self, h=None):
        self.assertTrue((h or self.h).alive(), "herald died")
        self.assertEqual((h or self.h).healthz(), 200)


class SSETest(StreamCase):
    herald_args = ("--stream-heartbeat", "1s")

    async def test_replay_then_live_with_ids_and_resume_by_last_event_id(self):
        first = [self.publish("feed", {"n": i}) for i in range(1, 4)]
        epoch = first[0]["epoch"]
        c = self.sse("/v1/channels/feed/stream?since=0")
        evs = self.until_event(c, "subscribed")
        msgs = [e for e in evs if "event" not in e]
        self.assertEqual([e["id"] for e in msgs], [position(epoch, s) for s in (1, 2, 3)])
        self.assertEqual([json.loads(e["data"])["data"]["n"] for e in msgs], [1, 2, 3])
        sub = json.loads(evs[-1]["data"])
        self.assertEqual((sub["seq"], sub["epoch"], sub["recovered"]), (3, epoch, True))
        self.assertEqual(evs[-1]["id"], position(epoch, 3))
        self.publish("feed", {"n": 4})
        live = c.event()
        self.assertEqual(live["id"], position(epoch, 4))
        self.assertEqual(json.loads(live["data"])["seq"], 4)
        c.close()
        # an EventSource reconnects with the same URL and the id it saw last
        self.publish("feed", {"n": 5})
        c2 = self.sse("/v1/channels/feed/stream?since=0",
                      [f"Last-Event-ID: {position(epoch, 3)}"])
        evs = self.until_event(c2, "subscribed")
        self.assertEqual([json.loads(e["data"])["seq"] for e in evs if "event" not in e], [4, 5])
        self.assertEqual(self.h.metric("herald_http_streams", {"kind": "sse"}), 1)

    async def test_a_stream_opened_before_the_first_message_gets_its_epoch(self):
        c = self.sse("/v1/channels/fresh/stream")
        sub = json.loads(self.until_event(c, "subscribed")[-1]["data"])
        self.assertEqual((sub["seq"], sub["epoch"]), (0, None))
        first = self.publish("fresh", {"n": 1})
        ev = c.event()
        self.assertEqual(ev["id"], position(first["epoch"], 1))
        c.close()
        self.publish("fresh", {"n": 2})
        self.publish("fresh", {"n": 3})
        c = self.sse("/v1/channels/fresh/stream", [f"Last-Event-ID: {ev['id']}"])
        evs = self.until_event(c, "subscribed")
        self.assertEqual([json.loads(e["data"])["seq"] for e in evs if "event" not in e], [2, 3])
        self.assertTrue(json.loads(evs[-1]["data"])["recovered"])
        # the same for a long-poll that waited on the fresh channel
        status_page = []

        def poll():
            c = self.open(get_req("/v1/channels/fresh2/stream?since=0&timeout=20"))
            status_page.append((c.head(30), json.loads(c.body(30))))

        task = asyncio.create_task(asyncio.to_thread(poll))
        await asyncio.sleep(0.5)
        first = self.publish("fresh2", {"n": 1})
        await asyncio.wait_for(task, 30)
        status, page = status_page[0]
        self.assertEqual((status, page["seq"], page["epoch"]), (200, 1, first["epoch"]))

    async def test_raw_messages_have_no_id_and_heartbeats_are_comments(self):
        c = self.sse("/v1/channels/room/stream")
        self.until_event(c, "subscribed")
        await asyncio.to_thread(wait_for, lambda: self.redis.numsub("room") == 1)
        self.redis.publish("room", json.dumps({"text": "hi\nthere"}))
        ev = c.event()
        self.assertNotIn("id", ev)
        self.assertEqual(json.loads(ev["data"])["data"], {"text": "hi\nthere"})
        # pretty-printed JSON: one data line per line, joined back by the reader
        self.redis.publish("room", '{\n  "a": 1,\r\n  "b": [2]\n}')
        ev = c.event()
        self.assertEqual(json.loads(ev["data"])["data"], {"a": 1, "b": [2]})
        self.assertEqual(len(ev["data"].split("\n")), 4)
        hb = c.event(timeout=3)
        self.assertIn("comment", hb)

    async def test_strict_resume_from_another_epoch_is_409_and_non_strict_says_why(self):
        self.publish("st", {"n": 1})
        c = self.open(sse_req("/v1/channels/st/stream?since=1&epoch=otherepoch&strict=1"))
        self.assertEqual(c.head(), 409)
        self.assertEqual(json.loads(c.body())["error"]["code"], "history_reset")
        c = self.sse("/v1/channels/st/stream?since=1&epoch=otherepoch")
        sub = json.loads(self.until_event(c, "subscribed")[-1]["data"])
        self.assertEqual((sub["recovered"], sub["code"]), (False, "history_reset"))

    async def test_history_reset_while_live_is_a_reset_event(self):
        self.publish("rs", {"n": 1})
        self.publish("rs", {"n": 2})
        c = self.sse("/v1/channels/rs/stream?since=0")
        old = json.loads(self.until_event(c, "subscribed")[-1]["data"])["epoch"]
        # the history is wiped: the channel starts again under a new epoch
        self.pg.sql("TRUNCATE herald_messages; DELETE FROM herald_channels")
        new = self.publish("rs", {"n": 1})
        self.assertNotEqual(new["epoch"], old)
        evs = self.until_event(c, "reset", timeout=20)
        reset = json.loads(evs[-1]["data"])
        self.assertEqual((reset["epoch"], reset["code"]), (new["epoch"], "history_reset"))
        self.assertEqual(evs[-1]["id"], position(new["epoch"], reset["seq"]))

    async def test_bad_last_event_id_and_bad_query_are_400(self):
        for path, hdr in [("/v1/channels/x/stream", ["Last-Event-ID: 12"]),
                          ("/v1/channels/x/stream", ["Last-Event-ID: e_1x"]),
                          ("/v1/channels/x/stream?since=-1", []),
                          ("/v1/channels/x/stream?since=1&since=2", []),
                          ("/v1/channels/x/stream?last=2&since=1", []),
                          ("/v1/channels/x/stream?live=sse", []),
                          ("/v1/channels/x/stream?offset=zz", []),
                          ("/v1/channels/x/stream?offset=-1&since=1", []),
                          ("/v1/channels/x/stream?timeout=301", [])]:
            c = self.open(sse_req(path, hdr))
            self.assertEqual(c.head(), 400, (path, hdr))
            self.assertEqual(json.loads(c.body())["error"]["code"], "bad_request")
        self.alive()


class LongPollTest(StreamCase):
    def poll(self, path, timeout=40):
        c = self.open(get_req(path))
        status = c.head(timeout)
        body = c.body(timeout)
        return status, json.loads(body) if body else None, c.headers

    async def test_answers_at_once_when_messages_follow_the_position(self):
        for i in range(1, 4):
            self.publish("lp", {"n": i})
        t = time.monotonic()
        status, page, _ = self.poll("/v1/channels/lp/stream?since=1&timeout=20")
        self.assertLess(time.monotonic() - t, 5)
        self.assertEqual(status, 200)
        self.assertEqual([m["seq"] for m in page["messages"]], [2, 3])
        self.assertEqual((page["seq"], page["recovered"], page["more"]), (3, True, False))

    async def test_holds_until_a_message_then_loops_without_gap(self):
        self.publish("loop", {"n": 1})
        got, pos = [], 1

        async def consumer():
            nonlocal pos
            while len(got) < 20:
                status, page, _ = await asyncio.to_thread(
                    self.poll, f"/v1/channels/loop/stream?since={pos}&timeout=10")
                self.assertEqual(status, 200)
                got.extend(m["data"]["n"] for m in page["messages"])
                pos = page["seq"]

        task = asyncio.create_task(consumer())
        for i in range(2, 22):
            await asyncio.to_thread(self.publish, "loop", {"n": i})
            await asyncio.sleep(0.02 * (i % 3))
        await asyncio.wait_for(task, 60)
        self.assertEqual(got, list(range(2, 22)))

    async def test_timeout_is_an_empty_page_with_the_position(self):
        self.publish("quiet", {"n": 1})
        t = time.monotonic()
        status, page, _ = self.poll("/v1/channels/quiet/stream?since=1&timeout=1")
        self.assertGreaterEqual(time.monotonic() - t, 0.9)
        self.assertEqual(status, 200)
        self.assertEqual((page["seq"], page["messages"], page["more"]), (1, [], False))

    async def test_expired_position_is_not_recovered(self):
        self.publish("ex", {"n": 1})
        status, page, _ = self.poll("/v1/channels/ex/stream?since=1&epoch=nope&timeout=1")
        self.assertEqual(status, 200)
        self.assertEqual((page["recovered"], page["code"]), (False, "history_reset"))


class PagedPollTest(StreamCase):
    herald_args = ("--client-queue-bytes", "16k", "--max-publish-bytes", "8k")

    async def test_a_cut_page_ends_at_its_last_message_and_the_next_goes_on(self):
        for i in range(1, 41):
            self.publish("big", {"n": i, "pad": "x" * 1000})
        got, pos, pages = [], 0, 0
        while True:
            c = self.open(get_req(f"/v1/channels/big/stream?since={pos}&timeout=0"))
            self.assertEqual(c.head(), 200)
            page = json.loads(c.body())
            pages += 1
            seqs = [m["seq"] for m in page["messages"]]
            if seqs:
                self.assertEqual(page["seq"], seqs[-1])  # the position is the last one sent
            got += seqs
            pos = page["seq"]
            if not page["more"]:
                break
        self.assertEqual(got, list(range(1, 41)))
        self.assertGreater(pages, 2)


class DeepHistoryTest(StreamCase):
    herald_args = ("--replay-max", "5")

    async def test_pages_read_further_back_than_a_resume_replays(self):
        pubs = [self.publish("deep", {"n": i}) for i in range(1, 13)]
        epoch = pubs[0]["epoch"]
        # a page stops at its size, so HERALD_REPLAY_MAX (5) does not bound it
        c = self.open(get_req("/v1/channels/deep/stream?since=0&timeout=0"))
        self.assertEqual(c.head(), 200)
        page = json.loads(c.body())
        self.assertEqual(([m["seq"] for m in page["messages"]], page["recovered"]),
                         (list(range(1, 13)), True))
        c = self.open(get_req("/v1/channels/deep/stream?offset=-1"))
        self.assertEqual(c.head(), 200)
        self.assertEqual([d["n"] for d in json.loads(c.body())], list(range(1, 13)))
        # a stream replays at most HERALD_REPLAY_MAX, as over WebSocket
        c = self.sse("/v1/channels/deep/stream?since=0")
        sub = json.loads(self.until_event(c, "subscribed")[-1]["data"])
        self.assertEqual((sub["recovered"], sub["code"]), (False, "history_expired"))
        # pruned history: -1 starts at the oldest message kept; since=0 says it is gone. A
        # channel of its own, pruned before this gateway read it: what a gateway delivered
        # stays in its recent cache after PostgreSQL prunes it (and may be served from there)
        pubs = [self.publish("pruned", {"n": i}) for i in range(1, 13)]
        epoch = pubs[0]["epoch"]
        self.pg.sql("DELETE FROM herald_messages WHERE channel = 'pruned' AND seq <= 4")
        c = self.open(get_req("/v1/channels/pruned/stream?offset=-1"))
        self.assertEqual(c.head(), 200)
        self.assertEqual([d["n"] for d in json.loads(c.body())], list(range(5, 13)))
        self.assertEqual(c.headers["stream-next-offset"], position(epoch, 12))
        c = self.open(get_req("/v1/channels/pruned/stream?since=0&timeout=0"))
        self.assertEqual(c.head(), 200)
        page = json.loads(c.body())
        self.assertEqual((page["recovered"], page["code"]), (False, "history_expired"))
        c = self.open(get_req(f"/v1/channels/pruned/stream?offset={position(epoch, 2)}"))
        self.assertEqual(c.head(), 410)


class DurableStreamsTest(StreamCase):
    herald_args = ("--longpoll-timeout", "1s")

    def read(self, query):
        c = self.open(get_req(f"/v1/channels/ds/stream?{query}"))
        status = c.head(20)
        body = c.body(20) if status != 204 else b""
        return status, (json.loads(body) if body else None), c.headers

    async def test_catch_up_long_poll_and_sse(self):
        pubs = [self.publish("ds", {"n": i}) for i in range(1, 4)]
        epoch = pubs[0]["epoch"]
        status, items, hdr = self.read("offset=-1")
        self.assertEqual(status, 200)
        self.assertEqual(items, [{"n": 1}, {"n": 2}, {"n": 3}])
        self.assertEqual(hdr["stream-next-offset"], position(epoch, 3))
        self.assertEqual(hdr["stream-up-to-date"], "true")
        status, items, hdr = self.read("offset=now")
        self.assertEqual((status, items), (200, []))
        self.assertEqual(hdr["stream-next-offset"], position(epoch, 3))
        status, items, hdr = self.read(f"offset={position(epoch, 2)}")
        self.assertEqual(items, [{"n": 3}])
        # long-poll: nothing new within the timeout is 204 with the same offset
        status, items, hdr = self.read(f"offset={position(epoch, 3)}&live=long-poll&cursor=7")
        self.assertEqual(status, 204)
        self.assertEqual(hdr["stream-next-offset"], position(epoch, 3))
        self.assertIn("stream-cursor", hdr)
        # SSE: a data event and a control event per message
        c = self.open(get_req(f"/v1/channels/ds/stream?offset={position(epoch, 1)}&live=sse"))
        self.assertEqual(c.head(), 200)
        self.assertEqual(c.headers["content-type"], "text/event-stream")
        c.event()  # retry
        evs = [c.event() for _ in range(5)]
        self.assertEqual([e.get("event") for e in evs],
                         ["data", "control", "data", "control", "control"])
        self.assertEqual(json.loads(evs[0]["data"]), [{"n": 2}])
        self.assertEqual(json.loads(evs[3]["data"])["streamNextOffset"], position(epoch, 3))
        self.assertTrue(json.loads(evs[4]["data"])["upToDate"])
        self.publish("ds", {"n": 4})
        self.assertEqual(json.loads(c.event()["data"]), [{"n": 4}])
        ctl = json.loads(c.event()["data"])
        self.assertEqual((ctl["streamNextOffset"], ctl["upToDate"]), (position(epoch, 4), True))

    async def test_offset_of_another_epoch_is_410(self):
        self.publish("ds", {"n": 1})
        status, body, _ = self.read(f"offset={position('oldepoch', 1)}")
        self.assertEqual(status, 410)
        self.assertEqual(body["error"]["code"], "history_reset")


class StreamCorsTest(StreamCase):
    herald_args = ("--cors-origins", "http://app.example")

    async def test_a_listed_origin_may_read_streams_and_their_offsets(self):
        pub = self.publish("co", {"n": 1})
        origin = ["Origin: http://app.example"]
        c = self.sse("/v1/channels/co/stream?since=0", origin)
        self.assertEqual(c.headers["access-control-allow-origin"], "http://app.example")
        self.until_event(c, "subscribed")
        c = self.open(get_req(f"/v1/channels/co/stream?offset={position(pub['epoch'], 0)}",
                              origin))
        self.assertEqual(c.head(), 200)
        exposed = {h.strip() for h in c.headers["access-control-expose-headers"].split(",")}
        self.assertLessEqual({"stream-next-offset", "stream-cursor", "stream-up-to-date"},
                             exposed)
        self.assertEqual(json.loads(c.body()), [{"n": 1}])
        # another origin gets the answer without CORS headers: its page cannot read it
        c = self.open(sse_req("/v1/channels/co/stream", ["Origin: http://evil.example"]))
        self.assertEqual(c.head(), 200)
        self.assertNotIn("access-control-allow-origin", c.headers)


if __name__ == "__main__":
    main()
