"""POST /v1/messages (many durable publishes in one request) and data kept byte for byte,
against real PostgreSQL, Redis and herald processes: order and seqs per channel, idempotent
retries of a whole batch, a bad message refusing the batch, PostgreSQL down, a POST whose
body never comes, and the WebSocket publish op keeping data as the client wrote it."""

import asyncio
import json
import socket
import urllib.error
import urllib.request

from harness import main, recv_json, request, subscribe
from pg import HistoryTestCase


def post_raw(h, path, body):
    """(status, parsed body, headers) for a POST of the bytes body."""
    req = urllib.request.Request(h.base + path, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def post_batch(h, messages):
    return post_raw(h, "/v1/messages", json.dumps({"messages": messages}).encode())


class BatchPublishTest(HistoryTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.pg = self.start_postgres()
        self.h = self.start_herald_with_history(self.redis, self.pg)
        await asyncio.to_thread(self.h.wait_ready)

    def stored(self):
        return int(self.pg.sql("SELECT count(*) FROM herald_messages"))

    async def test_a_batch_gets_seqs_in_array_order_and_data_as_written(self):
        ws = await self.connect(self.h)
        await subscribe(ws, "ba")
        await subscribe(ws, "bb")
        before = self.h.metric("herald_durable_publishes_total")
        # written by hand: spacing and 0.1 must reach subscribers exactly like this
        body = (b'{"messages":[{"channel":"ba","data":{"x": 0.1}},'
                b' {"channel":"bb","data":[1, 2.50]},'
                b'{"data":"third","channel":"ba"}, {"channel":"ba","data":null}]}')
        st, res, _ = await asyncio.to_thread(post_raw, self.h, "/v1/messages", body)
        self.assertEqual(st, 201, res)
        self.assertEqual([(r["channel"], r["seq"]) for r in res["results"]],
                         [("ba", 1), ("bb", 1), ("ba", 2), ("ba", 3)])
        self.assertTrue(all(len(r["epoch"]) >= 8 for r in res["results"]), res)
        frames = [await asyncio.wait_for(ws.recv(), 10) for _ in range(4)]
        ba = [f for f in frames if '"channel":"ba"' in f]
        bb = [f for f in frames if '"channel":"bb"' in f]
        self.assertEqual([json.loads(f)["seq"] for f in ba], [1, 2, 3])
        self.assertTrue(ba[0].endswith('"data":{"x": 0.1}}'), ba[0])
        self.assertTrue(bb[0].endswith('"data":[1, 2.50]}'), bb[0])
        self.assertEqual(self.h.metric("herald_durable_publishes_total"), before + 4)
        with urllib.request.urlopen(f"{self.h.base}/v1/channels/ba/messages", timeout=20) as r:
            page = r.read().decode()
        self.assertIn('"data":{"x": 0.1}}', page)

    async def test_retrying_a_batch_with_keys_stores_and_publishes_nothing_new(self):
        ws = await self.connect(self.h)
        await subscribe(ws, "pay")
        msgs = [{"channel": "pay", "data": {"n": i}, "idempotency_key": f"k{i}"}
                for i in range(3)]
        first = await asyncio.to_thread(post_batch, self.h, msgs)
        again = await asyncio.to_thread(post_batch, self.h, msgs + [
            {"channel": "pay", "data": {"n": 3}, "idempotency_key": "k3"}])
        self.assertEqual((first[0], again[0]), (201, 201))
        self.assertEqual([r["seq"] for r in first[1]["results"]], [1, 2, 3])
        self.assertEqual([r["seq"] for r in again[1]["results"]], [1, 2, 3, 4])
        self.assertEqual([m["seq"] for m in [await recv_json(ws) for _ in range(4)]],
                         [1, 2, 3, 4])
        with self.assertRaises(asyncio.TimeoutError):
            await recv_json(ws, 1.0)  # the retried three were not published again
        self.assertEqual(self.stored(), 4)

    async def test_one_bad_message_refuses_the_whole_batch(self):
        good = {"channel": "ok", "data": 1}
        cases = {
            "not JSON": b'{"messages":[',
            "no messages": b'{"message":[]}',
            "empty": b'{"messages":[]}',
            "a bare array": b'[{"channel":"ok","data":1}]',
            "another member": json.dumps({"messages": [good], "x": 1}).encode(),
            "too many": json.dumps({"messages": [good] * 1001}).encode(),
            "bad channel": json.dumps({"messages": [good, {"channel": "a b", "data": 1}]}),
            "no data": json.dumps({"messages": [good, {"channel": "ok"}]}),
            "unknown member": json.dumps({"messages": [dict(good, extra=1)]}),
            "not an object": json.dumps({"messages": [good, 5]}),
            "empty key": json.dumps({"messages": [dict(good, idempotency_key="")]}),
            "long key": json.dumps({"messages": [dict(good, idempotency_key="k" * 201)]}),
            "number key": json.dumps({"messages": [dict(good, idempotency_key=7)]}),
            "duplicate member": b'{"messages":[{"channel":"ok","data":1,"data":2}]}',
        }
        errors = self.h.metric("herald_client_errors_total", {"code": "bad_request"})
        for name, body in cases.items():
            with self.subTest(case=name):
                body = body if isinstance(body, bytes) else body.encode()
                st, res, _ = await asyncio.to_thread(post_raw, self.h, "/v1/messages", body)
                self.assertEqual((st, res["error"]["code"]), (400, "bad_request"), res)
        self.assertEqual(self.stored(), 0)
        self.assertEqual(self.h.metric("herald_client_errors_total", {"code": "bad_request"}),
                         errors + len(cases))
        # the gateway is fine afterwards
        st, res, _ = await asyncio.to_thread(post_batch, self.h, [good])
        self.assertEqual((st, res["results"][0]["seq"]), (201, 1))

    async def test_postgres_down_answers_503_and_stores_nothing(self):
        self.pg.stop_fast()
        await asyncio.to_thread(self.h.wait_metric, "herald_db_up", lambda v: v == 0)
        st, res, headers = await asyncio.to_thread(post_batch, self.h,
                                                   [{"channel": "down", "data": 1}])
        self.assertEqual((st, res["error"]["code"]), (503, "history_unavailable"), res)
        self.assertEqual({k.title(): v for k, v in headers.items()}.get("Retry-After"), "1")
        self.pg = self.restart_postgres(self.pg)
        await asyncio.to_thread(self.h.wait_metric, "herald_db_up", lambda v: v == 1)
        self.assertEqual(self.stored(), 0)
        st, res, _ = await asyncio.to_thread(post_batch, self.h,
                                             [{"channel": "down", "data": 2}])
        self.assertEqual((st, res["results"][0]["seq"]), (201, 1))

    async def test_a_post_whose_body_never_comes_is_dropped_cleanly(self):
        """The client promises a body and hangs up: nothing is stored, nothing leaks (the
        sanitizer build checks the gateway's exit), and the gateway serves on."""
        for path in ("/v1/messages", "/v1/channels/gone/messages"):
            s = socket.create_connection(("127.0.0.1", self.h.port), timeout=10)
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                      '{"messages"'.encode())
            await asyncio.sleep(0.2)
            s.close()
        st, res, _ = await asyncio.to_thread(post_batch, self.h, [{"channel": "gone", "data": 1}])
        self.assertEqual((st, res["results"][0]["seq"]), (201, 1))
        self.assertEqual(self.stored(), 1)

    async def test_the_websocket_publish_op_keeps_data_as_written(self):
        ws = await self.connect(self.h)
        await subscribe(ws, "wsdata")
        await ws.send('{"op":"publish","id":1,"channel":"wsdata","data":{"v": 0.1, "n": 1e2}}')
        frames = [await asyncio.wait_for(ws.recv(), 10) for _ in range(2)]
        msg = [f for f in frames if '"op":"message"' in f]
        self.assertEqual(len(msg), 1, frames)
        self.assertTrue(msg[0].endswith('"data":{"v": 0.1, "n": 1e2}}'), msg[0])
        reply = json.loads([f for f in frames if f not in msg][0])
        self.assertEqual((reply["op"], reply["seq"]), ("published", 1))


if __name__ == "__main__":
    main()
