#!/usr/bin/python3
"""Hostile suite, part 5: resource floods (spec issue12.md section 6, and 2 and 4).

Findings covered here (ids also in each test's docstring):
  M1  subscribe churn turns into one PostgreSQL head query per new channel
  M8  repeated subscribes pile up waiters (across many connections)
  M3  a resume bigger than the send queue always ends in 4008
  H3  a maximum-size publish disconnects every plain subscriber
  M7  frames held across a gap are unbounded
  M12 the recent-message cache has no total cap
  M11 bodies of slow or refused requests (the body budget, the body timeout, trickles)
  M9  a permessage-deflate bomb keeps the loop busy
  H2  a full queue completes a publish inside the call (use after free): the publish and
      PostgreSQL queue limits answer through the normal callback

Not tested end to end (reasons):
  H4 resume side: a WebSocket resume fetching up to 10,001 large rows needs about 1 GiB of
      data to show; the REST page cap is tested in test_hostile_rest.py, the resume fetch
      cap belongs to a unit test of sequence.c with a small HERALD_PAGE_BYTES.
  L1  retention's callback running synchronously needs PostgreSQL to reset the connection
      exactly at the prune tick: a timing fault that cannot be forced from outside; the
      debug-build assertion that callbacks never run inside the call (issue point 3) and a
      unit test with a failing db stub cover it.
  M5  the k8s Ingress exposing /metrics is a deploy file, not gateway behaviour: covered by
      the tests/deploy checks of k8s/base/ingress.yaml.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile as H  # noqa: E402
from hostile import (API_KEY, OP_CLOSE, OP_TEXT, HostileCase, RawHTTP, frame_bytes,  # noqa
                     open_ws, post_bytes, request_bytes, ws_next_json)
from harness import herald_bin, wait_for  # noqa: E402


class FloodCase(HostileCase):
    herald_args = ("--max-publish-bytes", "64k")

    def ch(self, suffix=""):
        return "fl:" + self._testMethodName[5:50] + suffix

    def ws(self, token=None, **kw):
        w = open_ws(self.h.port, token=token or H.reader_token(), **kw)
        self.addCleanup(w.close)
        return w


# ---------------------------------------------------------------------------------------------
class TestSubscribeFloods(FloodCase):
    def test_head_lookups_for_new_channels_are_batched(self):
        """M1: two connections subscribe to 120 new channels each, all in one write each:
        every subscribe is answered subscribed (seq 0), and herald_db_queries_total grows by
        far less than one query per channel (head lookups are batched, one in flight)."""
        conns = [self.ws(), self.ws()]
        q0 = self.metric_now("herald_db_queries_total")
        for k, w in enumerate(conns):
            w.sock.sendall(b"".join(frame_bytes(OP_TEXT, json.dumps(
                {"op": "subscribe", "channel": f"fl:m1:{k}:{i}"})) for i in range(120)))
        for w in conns:
            got = [ws_next_json(w, 30) for _ in range(120)]
            self.assertEqual({(m.get("op"), m.get("seq")) for m in got}, {("subscribed", 0)})
        queries = self.metric_now("herald_db_queries_total") - q0
        self.assertLessEqual(queries, 24, f"{queries} PostgreSQL queries for 240 new channels")
        self.unharmed()

    def test_repeated_subscribes_from_many_connections(self):
        """M8: 20 connections each send 30 subscribes to a new channel in one write: each
        gets exactly one subscribed and 29 bad_request (waiters do not pile up); memory
        stays bounded."""
        rss0 = self.h.rss_kib()
        conns = [self.ws() for _ in range(20)]
        # one new channel per connection, so that each burst meets a pending channel (a
        # repeat after `subscribed` is answered subscribed again, by the spec). The channels'
        # head lookups wait on a lock until every burst has been answered: otherwise a
        # subscribe can be answered while its burst is still being read (lws hands a burst
        # over in pieces), and the repeats after it are subscribed again.
        lock = H.PsqlSession(self.pg)
        self.addCleanup(lock.close)
        lock.run("BEGIN; LOCK TABLE herald_channels IN ACCESS EXCLUSIVE MODE")
        try:
            for k, w in enumerate(conns):
                w.sock.sendall(b"".join(frame_bytes(OP_TEXT, json.dumps(
                    {"op": "subscribe", "channel": f"fl:m8:{k}", "id": "x" * 60 + str(i)}))
                    for i in range(30)))
            answers = {id(w): [ws_next_json(w, 30) for _ in range(29)] for w in conns}
        finally:
            lock.abort()
        for w in conns:
            got = answers[id(w)] + [ws_next_json(w, 30)]
            kinds = [(m.get("op"), m.get("code")) for m in got]
            self.assertEqual(kinds.count(("subscribed", None)), 1, kinds)
            self.assertEqual(kinds.count(("error", "bad_request")), 29, kinds)
            self.assertEqual(kinds[-1], ("subscribed", None), kinds)
        self.assertLess(self.h.rss_kib() - rss0, 64 * 1024)
        self.unharmed(errors={"bad_request": 20 * 29})


# ---------------------------------------------------------------------------------------------
class TestPacedResume(FloodCase):
    herald_args = ("--max-publish-bytes", "16k", "--client-queue-bytes", "128k")

    def test_resume_bigger_than_the_queue_is_paced(self):
        """M3: 1,000 stored messages of about 600 bytes (600 kB) and a client queue of 128k:
        a resume from 0 by a client with a 4 KiB receive buffer gets seq 1..1000 once each,
        in order, then subscribed recovered:true replayed:1000; never 4008."""
        ch = self.ch()
        self.pg.sql(f"SELECT herald_publish({H.sql_quote(ch)}, json_build_object('i', g, "
                    f"'pad', repeat('p', 560))) FROM generate_series(1, 1000) g")
        w = open_ws(self.h.port, token=H.reader_token())
        self.addCleanup(w.close)
        w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        w.send_json({"op": "subscribe", "channel": ch, "since": 0})
        seqs = []
        while True:
            m = ws_next_json(w, 30)
            if m.get("op") != "message":
                break
            seqs.append(m["seq"])
            if len(seqs) % 100 == 0:
                time.sleep(0.01)  # a reader that is a little slow
        self.assertEqual(seqs, list(range(1, 1001)))
        self.assertEqual((m.get("op"), m.get("recovered"), m.get("replayed"), m.get("seq")),
                         ("subscribed", True, 1000, 1000), m)
        self.unharmed(heads={ch: 1000}, publishes=0,
                      exact_metrics={"herald_slow_consumer_closes_total": 0})


# ---------------------------------------------------------------------------------------------
class TestMaximumSizePublish(FloodCase):
    herald_args = ()  # the defaults: HERALD_MAX_PUBLISH_BYTES 512k, HERALD_CLIENT_QUEUE_BYTES 1M

    def test_maximum_size_message_reaches_a_plain_client(self):
        """H3: with the default limits, a POST of exactly 512 KiB (the default maximum) is
        stored and delivered to a plain (no deflate) subscriber with an empty queue, which
        stays connected; one byte more is 413 too_large."""
        ch = self.ch()
        w = self.ws()
        w.send_json({"op": "subscribe", "channel": ch})
        self.assertEqual(ws_next_json(w).get("op"), "subscribed")
        body = b'"' + b"a" * (512 * 1024 - 2) + b'"'
        r = self.rest(post_bytes(f"/v1/channels/{ch}/messages", body, cred=API_KEY))
        self.assertEqual((r.status, r.json().get("seq")), (201, 1), r)
        op, payload = w.recv_message(30)
        self.assertEqual(op, OP_TEXT, payload[:100])
        m = json.loads(payload)
        self.assertEqual((m["seq"], len(m["data"])), (1, 512 * 1024 - 2))
        w.send_json({"op": "ping"})
        self.assertEqual(ws_next_json(w), {"op": "pong"})
        # one byte more: 413 on the head, the body read to its end and thrown away
        over = post_bytes(f"/v1/channels/{ch}/messages", b'"' + b"a" * (512 * 1024 - 1) + b'"',
                          cred=API_KEY)
        r = self.rest(over)
        self.assertEqual((r.status, r.error_code()), (413, "too_large"), r)
        self.unharmed(heads={ch: 1}, exact_metrics={"herald_slow_consumer_closes_total": 0})

    def test_a_queue_smaller_than_the_publish_limit_refuses_to_start(self):
        """H3: HERALD_CLIENT_QUEUE_BYTES 1M with HERALD_MAX_PUBLISH_BYTES 1M (less than the
        limit + 1 KiB): start-up refuses with exit status 2."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        p = subprocess.Popen([herald_bin(), "--listen", f"127.0.0.1:{H.harness.free_port()}",
                              "--redis-url", self.redis.url, "--client-queue-bytes", "1M",
                              "--max-publish-bytes", "1M"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            status = p.wait(15)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
        self.assertEqual(status, 2, "started with a queue no larger than the publish limit")
        self.unharmed()


# ---------------------------------------------------------------------------------------------
class TestHeldFrames(FloodCase):
    herald_args = ("--max-publish-bytes", "16k", "--hold-bytes", "64k")

    def test_frames_past_a_gap_are_held_up_to_the_cap(self):
        """M7: 400 signed envelopes of about 1.1 kB (440 kB) arrive after a gap (seq 1 is
        missing and herald_messages is locked, so the gap cannot be filled): the held bytes
        never pass HERALD_HOLD_BYTES (64k) plus one frame; once the lock goes, the subscriber
        gets 1..400 once each, in order."""
        ch = self.ch()
        w = self.ws()
        w.send_json({"op": "subscribe", "channel": ch})
        self.assertEqual(ws_next_json(w).get("op"), "subscribed")
        lock = H.PsqlSession(self.pg)
        self.addCleanup(lock.close)
        lock.run("BEGIN; LOCK TABLE herald_messages IN ACCESS EXCLUSIVE MODE")
        committed = False
        try:
            lock.query(f"SELECT count(*) FROM (SELECT herald_publish({H.sql_quote(ch)}, "
                       f"json_build_object('i', g, 'pad', repeat('h', 1000))) "
                       f"FROM generate_series(1, 400) g) s")
            signed = lock.query(f"SELECT herald_sign(c.epoch, m.envelope) FROM herald_messages m"
                                f" JOIN herald_channels c ON c.name = m.channel WHERE "
                                f"m.channel = {H.sql_quote(ch)} AND m.seq >= 2 ORDER BY m.seq")
            self.assertEqual(len(signed), 399)
            r0 = self.metric_now("herald_redis_messages_total")
            with H.RedisConn(self.redis.port) as r:
                r.pipeline([("PUBLISH", ch, p) for p in signed])
            peak = 0

            def all_in():
                nonlocal peak
                text = H.metrics_samples(self.h)
                held = H.mval(text, "herald_held_bytes")
                self.assertIsNotNone(held, "herald_held_bytes missing from /metrics")
                peak = max(peak, held)
                return H.mval(text, "herald_redis_messages_total") >= r0 + 399
            wait_for(all_in, 20, what="the 399 envelopes received")
            self.assertLessEqual(peak, 64 * 1024 + 2048, "held bytes past HERALD_HOLD_BYTES")
            lock.run("COMMIT")
            committed = True
        finally:
            if not committed:
                lock.abort()
        seqs = []
        while len(seqs) < 400:
            m = ws_next_json(w, 30)
            self.assertEqual(m.get("op"), "message", m)
            seqs.append(m["seq"])
        self.assertEqual(seqs, list(range(1, 401)))
        self.unharmed(heads={ch: 400}, publishes=0)


# ---------------------------------------------------------------------------------------------
class TestRecentCacheTotal(FloodCase):
    herald_args = ("--max-publish-bytes", "64k", "--recent-total-bytes", "256k")

    def test_recent_cache_is_capped_across_channels(self):
        """M12: one subscriber on 12 channels, 3 messages of 50 kB each (1.8 MB): every
        message is delivered, herald_recent_cache_bytes stays within 256k, and a resume
        still replays a channel in full (from PostgreSQL where the cache let go)."""
        chans = [self.ch(f":{i}") for i in range(12)]
        w = self.ws()
        for c in chans:
            w.send_json({"op": "subscribe", "channel": c})
            self.assertEqual(ws_next_json(w).get("op"), "subscribed")
        pad = "c" * 50000
        peak = 0
        for k in range(3):
            for c in chans:
                r = self.rest(post_bytes(f"/v1/channels/{c}/messages",
                                         json.dumps({"k": k, "pad": pad}), cred=API_KEY))
                self.assertEqual(r.status, 201, r)
            v = self.metric_now("herald_recent_cache_bytes")
            self.assertIsNotNone(v, "herald_recent_cache_bytes missing from /metrics")
            peak = max(peak, v)
        got = [ws_next_json(w, 30) for _ in range(36)]
        self.assertEqual(sorted((m["channel"], m["seq"]) for m in got),
                         sorted((c, s) for c in chans for s in (1, 2, 3)))
        v = self.metric_now("herald_recent_cache_bytes")
        self.assertLessEqual(max(peak, v), 256 * 1024)
        r2 = self.ws()
        r2.send_json({"op": "subscribe", "channel": chans[0], "since": 0})
        msgs = [ws_next_json(r2, 20) for _ in range(4)]
        self.assertEqual([m.get("seq") for m in msgs[:3]], [1, 2, 3])
        self.assertEqual((msgs[3].get("op"), msgs[3].get("recovered")), ("subscribed", True))
        self.unharmed(heads={c: 3 for c in chans})


# ---------------------------------------------------------------------------------------------
class TestBodyBudget(FloodCase):
    herald_args = ("--max-publish-bytes", "64k", "--body-buffer-bytes", "128k",
                   "--body-timeout", "3s")

    def conn(self):
        c = RawHTTP(self.h.port, timeout=30)
        self.addCleanup(c.close)
        return c

    def test_a_post_past_the_body_budget_is_503(self):
        """M11: two POSTs declaring 60,000 bytes each hold half their bodies (buffered:
        herald_http_body_bytes at most 128k); a third declaring 60,000 would pass the budget:
        503 unavailable with retry-after: 1 once its body was read and dropped; the two
        finish with 201."""
        ch = self.ch()
        body = json.dumps({"pad": "b" * 59981}).encode()
        self.assertEqual(len(body), 59992)
        heads = [request_bytes("POST", f"/v1/channels/{ch}/messages",
                               [("Authorization", f"Bearer {API_KEY}"),
                                ("Content-Length", str(len(body)))]) for _ in range(3)]
        a, b, c = self.conn(), self.conn(), self.conn()
        for x in (a, b):
            x.send(heads[0] + body[:30000])
        wait_for(lambda: (self.metric_now("herald_http_body_bytes") or 0) >= 60000, 10,
                 what="the two half bodies buffered")
        c.send(heads[2] + body)
        r = c.read_response(20)
        self.assertEqual((r.status, r.error_code()), (503, "unavailable"), r)
        self.assertEqual(r.headers.get("retry-after"), "1", r)
        self.assertLessEqual(self.metric_now("herald_http_body_bytes"), 128 * 1024)
        for x in (a, b):
            x.send(body[30000:])
        for x in (a, b):
            r = x.read_response(20)
            self.assertEqual(r.status, 201, r)
        wait_for(lambda: self.metric_now("herald_http_body_bytes") == 0, 10,
                 what="herald_http_body_bytes back to 0")
        self.unharmed(heads={ch: 2}, errors={"unavailable": 1})

    def test_a_stalled_body_is_closed_after_the_body_timeout(self):
        """M11: a POST that sends 10 of 100 declared bytes and stalls: after
        HERALD_BODY_TIMEOUT (3s) it is closed (408 bad_request if it can still be written),
        not held; nothing stored; its bytes are released."""
        ch = self.ch()
        c = self.conn()
        t0 = time.monotonic()
        c.send(request_bytes("POST", f"/v1/channels/{ch}/messages",
                             [("Authorization", f"Bearer {API_KEY}"),
                              ("Content-Length", "100")], b'{"x":"123'))
        try:
            r = c.read_response(15)
        except socket.timeout:
            self.fail("a stalled POST was still open after 15 s (timeout 3s)")
        elapsed = time.monotonic() - t0
        if r is not None:
            self.assertEqual((r.status, r.error_code()), (408, "bad_request"), r)
            self.assertTrue(c.closed_within(H.CLOSE_WITHIN))
        self.assertGreaterEqual(elapsed, 2.5, "closed before the body timeout")
        self.assertEqual(self.metric_now("herald_http_body_bytes"), 0)
        self.unharmed()

    def test_a_stalled_body_after_its_413_is_closed_at_the_body_timeout(self):
        """M11: a POST declaring 1 MB (over the 64k limit) is answered 413 on its head, and
        its body is then awaited to be thrown away; this one sends 1000 bytes and stalls.
        After HERALD_BODY_TIMEOUT (3s) the connection is closed, with nothing written after
        the 413 (no 408), and counted once, as too_large."""
        ch = self.ch()
        c = self.conn()
        t0 = time.monotonic()
        c.send(request_bytes("POST", f"/v1/channels/{ch}/messages",
                             [("Authorization", f"Bearer {API_KEY}"),
                              ("Content-Length", "1000000")], b"y" * 1000))
        r = c.read_response(10)
        self.assertEqual((r.status, r.error_code()), (413, "too_large"), r)
        self.assertLess(time.monotonic() - t0, 2.5, "the 413 waited for the body")
        self.assertTrue(c.closed_within(15), "a stalled body was still open after 15 s")
        self.assertGreaterEqual(time.monotonic() - t0, 2.5, "closed before the body timeout")
        self.assertEqual(c.extra, b"", "something written after the 413")
        self.unharmed(errors={"too_large": 1})
        self.assertEqual(self.metric_delta("herald_client_errors_total", {"code": "too_large"}), 1)
        self.assertEqual(self.metric_delta("herald_client_errors_total", {"code": "bad_request"}), 0)

    def test_trickling_bodies_on_many_connections(self):
        """M11: 40 connections each declare 4,000 bytes (160 kB in all, budget 128k) and
        trickle their bodies in 4 steps: the buffered total never passes the budget, every
        request is answered 201 or 503 unavailable (some must be 503), and only the 201s
        are stored."""
        ch = self.ch()
        body = json.dumps({"pad": "t" * 3989}).encode()
        self.assertEqual(len(body), 4000)
        conns = [self.conn() for _ in range(40)]
        head = request_bytes("POST", f"/v1/channels/{ch}/messages",
                             [("Authorization", f"Bearer {API_KEY}"),
                              ("Content-Length", "4000")])
        peak = 0
        for step in range(4):
            for x in conns:
                try:
                    x.send((head if step == 0 else b"") + body[step * 1000:(step + 1) * 1000])
                except OSError:
                    pass  # already answered and closed
            peak = max(peak, self.metric_now("herald_http_body_bytes"))
        statuses = []
        for x in conns:
            r = x.read_response(20)
            self.assertIsNotNone(r)
            statuses.append(r.status)
            if r.status == 503:
                self.assertEqual(r.error_code(), "unavailable", r)
        self.assertLessEqual(peak, 128 * 1024)
        self.assertEqual(set(statuses) - {201, 503}, set(), statuses)
        self.assertGreaterEqual(statuses.count(503), 1, "160 kB of bodies fit a 128k budget?")
        self.unharmed(heads={ch: statuses.count(201)})


# ---------------------------------------------------------------------------------------------
class TestDeflateBomb(FloodCase):
    herald_args = ("--max-publish-bytes", "64k", "--deflate")

    def test_compression_bomb_is_closed_1009(self):
        """M9: with permessage-deflate agreed, one message that inflates to 64 MiB (about
        64 kB on the wire): close 1009 soon after the inflated size passes the frame limit,
        not after inflating it all; the process is unharmed."""
        w = open_ws(self.h.port, token=H.reader_token(),
                    extra=[("Sec-WebSocket-Extensions",
                            "permessage-deflate; client_max_window_bits")])
        self.addCleanup(w.close)
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = comp.compress(b'{"op":"ping","x":"')
        chunk = b"a" * (1 << 20)
        for _ in range(64):
            data += comp.compress(chunk)
        data += comp.flush(zlib.Z_SYNC_FLUSH)
        self.assertTrue(data.endswith(b"\x00\x00\xff\xff"))
        data = data[:-4]
        t0 = time.monotonic()
        w.sock.sendall(frame_bytes(OP_TEXT, data, rsv=4))
        msgs, code, how = w.read_until_closed(20)
        elapsed = time.monotonic() - t0
        self.assertEqual((how, code), ("close-frame", 1009), msgs[:3])
        self.assertLess(elapsed, 10, "the bomb was inflated far past the limit")
        self.unharmed()


# ---------------------------------------------------------------------------------------------
class TestFullQueues(FloodCase):
    herald_args = ("--max-publish-bytes", "64k", "--db-pool", "1", "--publish-queue-max", "2",
                   "--db-queue-max", "3")

    def test_a_full_publish_queue_answers_unavailable_through_the_callback(self):
        """H2: while a publish batch waits on a locked channel row, 10 WebSocket publishes in
        one write: those past HERALD_PUBLISH_QUEUE_MAX get `unavailable` (their ids echoed),
        the rest `published`; a second client sends 5 publishes and hangs up at once (the
        use-after-free path when a callback ran inside the call). After the lock goes,
        exactly the published ones are stored; ASan sees nothing."""
        ch = self.ch()
        r = self.post(ch, '{"first":1}')
        self.assertEqual(r.status, 201, r)
        lock = H.PsqlSession(self.pg)
        self.addCleanup(lock.close)
        lock.run(f"BEGIN; SELECT 1 FROM herald_channels WHERE name = {H.sql_quote(ch)} "
                 f"FOR UPDATE")
        released = False
        try:
            tok = H.writer_token()
            w = self.ws(token=tok)
            w.sock.sendall(b"".join(frame_bytes(OP_TEXT, json.dumps(
                {"op": "publish", "channel": ch, "data": {"n": i}, "id": i}))
                for i in range(10)))
            # the refusals come at once; the published replies wait for the lock
            w2 = open_ws(self.h.port, token=tok)
            w2.sock.sendall(b"".join(frame_bytes(OP_TEXT, json.dumps(
                {"op": "publish", "channel": ch, "data": {"m": i}})) for i in range(5)))
            w2.sock.close()
            wait_for(lambda: (self.metric_now("herald_client_errors_total",
                                              {"code": "unavailable"}) or 0)
                     - (self.metric_before("herald_client_errors_total",
                                           {"code": "unavailable"}) or 0) >= 1, 10,
                     what="an unavailable reply")
            lock.run("COMMIT")
            released = True
        finally:
            if not released:
                lock.abort()
        replies = {}
        while len(replies) < 10:
            m = ws_next_json(w, 30)
            if m.get("op") == "message":
                continue
            replies[m.get("id")] = m
        ok = [i for i, m in replies.items() if m.get("op") == "published"]
        refused = [i for i, m in replies.items() if m.get("code") == "unavailable"]
        self.assertEqual(sorted(ok + refused), list(range(10)), replies)
        self.assertGreaterEqual(len(refused), 1, replies)
        self.assertLessEqual(len(ok), 3, "more queued than HERALD_PUBLISH_QUEUE_MAX allows")
        wait_for(lambda: self.metric_now("herald_publish_queued") == 0, 10)
        head = int(self.pg.sql(f"SELECT last_seq FROM herald_channels WHERE name = "
                               f"{H.sql_quote(ch)}"))
        self.assertGreaterEqual(head, 1 + len(ok))
        self.unharmed(heads={ch: head}, publishes=self.metric_delta(
            "herald_durable_publishes_total"))

    def test_a_full_database_queue_answers_503(self):
        """H2: herald_messages locked, db pool 1, HERALD_DB_QUEUE_MAX 3: eight catch-up GETs
        at once; those past the queue are answered 503 history_unavailable (retry-after: 1)
        at once, the others 200 after the lock; herald_db_queued never passes 3."""
        ch = self.ch()
        lock = H.PsqlSession(self.pg)
        self.addCleanup(lock.close)
        lock.run("BEGIN; LOCK TABLE herald_messages IN ACCESS EXCLUSIVE MODE")
        released = False
        conns = []
        try:
            for _ in range(8):
                c = RawHTTP(self.h.port, timeout=30)
                self.addCleanup(c.close)
                c.send(H.get_bytes(f"/v1/channels/{ch}/messages?since=0", cred=API_KEY))
                conns.append(c)
            wait_for(lambda: (self.metric_now("herald_client_errors_total",
                                              {"code": "history_unavailable"}) or 0)
                     > (self.metric_before("herald_client_errors_total",
                                           {"code": "history_unavailable"}) or 0), 10,
                     what="a refusal while the queue is full")
            queued = self.metric_now("herald_db_queued")
            self.assertIsNotNone(queued, "herald_db_queued missing from /metrics")
            self.assertLessEqual(queued, 3)
            lock.run("COMMIT")
            released = True
        finally:
            if not released:
                lock.abort()
        statuses = []
        for c in conns:
            r = c.read_response(30)
            statuses.append(r.status)
            if r.status == 503:
                self.assertEqual(r.error_code(), "history_unavailable", r)
                self.assertEqual(r.headers.get("retry-after"), "1", r)
        self.assertEqual(set(statuses) - {200, 503}, set(), statuses)
        self.assertGreaterEqual(statuses.count(503), 1, statuses)
        self.unharmed()


if __name__ == "__main__":
    H.run_module()
