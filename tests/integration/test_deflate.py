#!/usr/bin/python3
"""permessage-deflate (HERALD_DEFLATE): offered only when enabled; a client that negotiates it
gets each message as one compressed frame (RSV1) that inflates to exactly the bytes an
uncompressed client gets, across messages on one inflate stream (context takeover on the
client side); a client that caps the server's window is answered without the extension; a
client's compressed frames are understood, and bounded by what they inflate to; short replies
go uncompressed."""

import asyncio
import json
import os
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import recv_json, subscribe, wait_close  # noqa: E402
from pg import HistoryTestCase  # noqa: E402
from test_history import post  # noqa: E402

OFFER = "permessage-deflate; client_max_window_bits"


def event(i):
    """A realistic, compressible task event of about 1 KB."""
    return {"task": f"task-{i}", "state": "running", "progress": i,
            "steps": [{"name": f"step {k}", "done": k < i % 10, "note": "waiting for the worker"}
                      for k in range(12)]}


class Inflater:
    """A client's side of permessage-deflate: one raw inflate stream for the connection."""

    def __init__(self):
        self.z = zlib.decompressobj(-15)

    def message(self, payload):
        return self.z.decompress(payload + b"\x00\x00\xff\xff")

    def read(self, ws):
        """The next message of raw client ws, inflated if it came compressed."""
        payload = ws.recv_frame()[2]
        return self.message(payload) if ws.rsv1 else payload


class DeflateOnTest(harness.HeraldTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.h = self.start_herald(self.redis, "--deflate")

    def raw_subscribed(self, channel, **kw):
        ws = self.raw_ws(self.h, **kw)
        ws.send_json({"op": "subscribe", "channel": channel})
        reply = ws.recv_json()
        self.assertEqual(reply["op"], "subscribed")
        self.assertFalse(ws.rsv1, "a short reply is sent uncompressed")
        return ws

    async def test_compressed_twins_inflate_to_the_plain_frames(self):
        zipped = self.raw_subscribed("tasks", extensions=OFFER)
        self.assertTrue(zipped.headers.get("sec-websocket-extensions", "")
                        .startswith("permessage-deflate"), zipped.headers)
        plain = self.raw_subscribed("tasks")
        self.assertNotIn("sec-websocket-extensions", plain.headers)
        inflater, saved = Inflater(), 0
        for i in range(20):
            self.redis.publish("tasks", json.dumps(event(i)))
            _, _, body = plain.recv_frame()
            self.assertFalse(plain.rsv1)
            _, _, packed = zipped.recv_frame()
            self.assertTrue(zipped.rsv1, f"message {i} was not compressed")
            self.assertEqual(inflater.message(packed), body)
            self.assertEqual(json.loads(body)["data"], event(i))
            saved += len(body) - len(packed)
        self.assertGreater(saved, 20 * 500, "the compressed frames should be far smaller")

    async def test_a_capped_server_window_is_declined(self):
        ws = self.raw_subscribed("tasks", extensions="permessage-deflate; server_max_window_bits=10")
        self.assertNotIn("sec-websocket-extensions", ws.headers)
        self.redis.publish("tasks", json.dumps(event(3)))
        _, _, body = ws.recv_frame()
        self.assertFalse(ws.rsv1)
        self.assertEqual(json.loads(body)["data"], event(3))

    async def test_a_websockets_client_talks_compressed_both_ways(self):
        # python-websockets offers permessage-deflate and, once agreed, compresses every
        # frame it sends: the subscribe below reaches Herald compressed
        ws = await self.connect(self.h, compression="deflate")
        self.assertIn("permessage-deflate", ws.response_headers.get("Sec-WebSocket-Extensions"))
        await ws.send(json.dumps({"op": "subscribe", "channel": "room", "id": "s-1"}))
        reply = await recv_json(ws)
        self.assertEqual((reply["op"], reply.get("id")), ("subscribed", "s-1"))
        for i in range(5):
            self.redis.publish("room", json.dumps(event(i)))
        got = [await recv_json(ws) for _ in range(5)]
        self.assertEqual([m["data"] for m in got], [event(i) for i in range(5)])
        self.assertGreater(self.h.metric("herald_frames_out_total"), 5)

    async def test_long_compressed_messages_arrive_whole_and_are_bounded(self):
        # lws inflates 1 KiB per pass; a 20 KB message needs many passes and must be answered
        # at once (without history, publish is refused as unavailable: it was read whole)
        ws = await self.connect(self.h, compression="deflate")
        await ws.send(json.dumps({"op": "publish", "channel": "room", "data": "b" * 20_000}))
        reply = await recv_json(ws, timeout=5)
        self.assertEqual((reply["op"], reply["code"]), ("error", "unavailable"))
        # 300 KB of one letter compresses to a few hundred bytes: the limit applies to what it
        # inflates to, and a compressed message past it closes the connection with 1009 (lws
        # would go on inflating it to its end, 1 KiB a pass, whatever its size)
        bomb = json.dumps({"op": "publish", "channel": "room", "data": "a" * 300_000})
        frames0 = self.h.metric("herald_client_frames_in_total")
        await ws.send(bomb)
        code, _, frames = await wait_close(ws)
        self.assertEqual((code, frames), (1009, []))
        self.assertEqual(self.h.metric("herald_client_frames_in_total"), frames0,
                         "the oversized message must not count as one handled")
        ws2 = await self.connect(self.h, compression="deflate")
        await subscribe(ws2, "room")


class DeflateHistoryTest(HistoryTestCase):
    async def test_a_resume_replays_compressed_frames(self):
        """Replayed messages go out compressed like live ones and inflate to exactly what a
        plain client is replayed: first read from PostgreSQL, then again once the channel's
        recent messages are cached (its subscribers keep them)."""
        redis, pg = self.start_redis(), self.start_postgres()
        h = self.start_herald_with_history(redis, pg, "--deflate")
        for i in range(6):
            self.assertEqual(post(h, "jobs", event(i))[1]["seq"], i + 1)
        for source in ("PostgreSQL", "the recent cache"):
            queries = h.metric("herald_db_queries_total")
            plain = self.raw_ws(h)
            zipped = self.raw_ws(h, extensions=OFFER)
            inflater = Inflater()
            for ws in (plain, zipped):
                ws.send_json({"op": "subscribe", "channel": "jobs", "since": 2})
            for seq in range(3, 7):
                _, _, body = plain.recv_frame()
                _, _, packed = zipped.recv_frame()
                self.assertTrue(zipped.rsv1, f"seq {seq} from {source} was not compressed")
                self.assertEqual(inflater.message(packed), body)
                self.assertEqual(json.loads(body)["seq"], seq)
            for reply in (json.loads(plain.recv_frame()[2]), json.loads(inflater.read(zipped))):
                self.assertEqual((reply["op"], reply["replayed"]), ("subscribed", 4))
            if source == "PostgreSQL":  # the second round is normally served from the cache
                self.assertGreaterEqual(h.metric("herald_db_queries_total") - queries, 1)


class DeflateOffTest(harness.HeraldTestCase):
    async def test_not_offered_by_default(self):
        redis = self.start_redis()
        h = self.start_herald(redis)
        ws = self.raw_ws(h, extensions=OFFER)
        self.assertNotIn("sec-websocket-extensions", ws.headers)
        ws.send_json({"op": "subscribe", "channel": "tasks"})
        self.assertEqual(ws.recv_json()["op"], "subscribed")
        redis.publish("tasks", json.dumps(event(1)))
        _, _, body = ws.recv_frame()
        self.assertFalse(ws.rsv1)
        self.assertEqual(json.loads(body)["data"], event(1))
        ws2 = await self.connect(h, compression="deflate")
        self.assertIsNone(ws2.response_headers.get("Sec-WebSocket-Extensions"))
        await subscribe(ws2, "tasks")


if __name__ == "__main__":
    harness.main()
