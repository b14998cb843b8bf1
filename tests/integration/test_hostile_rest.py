#!/usr/bin/python3
"""Hostile suite, part 3: REST /v1 queries, keys and bodies, byte by byte (spec issue12.md
section 2).

Findings covered here (ids also in each test's docstring):
  M10 query parsing stops silently at a long or empty argument
  L11 the API key accepted in ?token= (and logged by proxies)
  L2  a bad Idempotency-Key spoils the group commit of every publisher
  L4  a 2048-deep body is accepted but dropped on the live path
  L14 refusals classified by English message text instead of SQLSTATE
  H4  catch-up pages held whole in memory (the byte cap of a page)
  M11 a refused request's body (answered after the body, connection still in step)

Not tested end to end here (reasons):
  L3  idempotency keys are per channel, not per principal, by design: the spec keeps that
      (a co-publisher who may publish on the channel may also pick any key); nothing to
      refuse. Documented in PROTOCOL.md.
  L5  channel rows are never deleted: the spec does not change it (a retention policy for
      herald_channels is a design question, not a refusal); the unit/SQL tests of
      herald_prune are the place.
  L15 no minimum secret length, no aud/iss, no /v1 rate limit: the spec does not add them;
      start-up warnings belong to test_auth.py / unit tests of config.
"""

import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile as H  # noqa: E402
import jwt_util as jwt  # noqa: E402
from hostile import API_KEY, HostileCase, RawHTTP, get_bytes, post_bytes, request_bytes  # noqa
from harness import wait_for  # noqa: E402

FEED = "rq:feed"  # 6 messages, seq 1..6, published in setUpClass


class RestCase(HostileCase):
    herald_args = ("--max-publish-bytes", "64k")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not cls.pg.sql(f"SELECT 1 FROM herald_channels WHERE name = '{FEED}'"):
            cls.pg.sql(f"SELECT herald_publish('{FEED}', json_build_object('i', g)) "
                       "FROM generate_series(1, 6) g")

    def ch(self, suffix=""):
        return "rr:" + self._testMethodName[5:60] + suffix

    def page(self, query, cred=API_KEY, channel=FEED):
        return self.get_page(channel, query, cred)

    def seqs(self, r):
        self.assertEqual(r.status, 200, r)
        return [m["seq"] for m in r.json()["messages"]]

    def assert_400(self, r):
        self.assertEqual((r.status, r.error_code()), (400, "bad_request"), r)


# ---------------------------------------------------------------------------------------------
class TestQueryStrings(RestCase):
    def test_since_and_limit_after_a_long_token_argument(self):
        """M10: ?token=<JWT over 300 bytes>&since=2&limit=2: since and limit are honoured
        (seq 3, 4; more:true), not silently dropped."""
        tok = jwt.token(sub="long-query", channels=["rq:*"] + [f"pad:{i}" for i in range(30)],
                        exp_in=600)
        self.assertGreater(len(tok), 300)
        r = self.page(f"?token={tok}&since=2&limit=2", cred=None)
        self.assertEqual(self.seqs(r), [3, 4], r)
        self.assertIs(r.json()["more"], True)
        self.unharmed()

    def test_since_after_a_long_unknown_argument(self):
        """M10: ?x=<300 bytes>&since=4: 5, 6."""
        r = self.page("?x=" + "a" * 300 + "&since=4")
        self.assertEqual(self.seqs(r), [5, 6])
        self.unharmed()

    def test_empty_segment_then_a_bad_since_is_400(self):
        """M10: ?&since=abc is 400 bad_request, not 200."""
        self.assert_400(self.page("?&since=abc"))
        self.unharmed(errors={"bad_request": 1})

    def test_since_twice_around_an_empty_segment_is_400(self):
        """M10: ?since=1&&since=2: given twice, 400."""
        self.assert_400(self.page("?since=1&&since=2"))
        self.unharmed(errors={"bad_request": 1})

    def test_empty_segments_are_ignored(self):
        """M10: ?&&since=3&&limit=1& is since=3, limit=1."""
        r = self.page("?&&since=3&&limit=1&")
        self.assertEqual(self.seqs(r), [4])
        self.unharmed()

    def test_limit_twice_is_400(self):
        """Duplicate keys: ?limit=1&limit=1 is 400."""
        self.assert_400(self.page("?limit=1&limit=1"))
        self.unharmed()

    def test_empty_values_are_400(self):
        """?since= and ?limit= (no digits): 400."""
        for q in ("?since=", "?limit=", "?since", "?since=&limit=1"):
            with self.subTest(q=q):
                self.assert_400(self.page(q))
        self.unharmed(errors={"bad_request": 4})

    def test_bad_escapes_are_400(self):
        """?since=%zz, ?since=%, ?since=%3: bad escapes are refused, never ignored: 400
        bad_request, or lws's own 403 (it refuses bad escapes before any route runs; the
        spec does not name this case)."""
        for q in ("?since=%zz", "?since=%", "?since=%3", "?li%zzmit=1&since=%"):
            with self.subTest(q=q):
                r = self.page(q)
                self.assertIn(r.status, (400, 403), r)
                if r.status == 400:
                    self.assertEqual(r.error_code(), "bad_request", r)
        self.unharmed()

    def test_huge_values_are_400(self):
        """limit=1001, limit and since with 23 digits (beyond 64 bits): 400."""
        for q in ("?limit=1001", "?limit=99999999999999999999999",
                  "?since=99999999999999999999999", "?since=18446744073709551616"):
            with self.subTest(q=q):
                self.assert_400(self.page(q))
        self.unharmed()

    def test_signed_and_spaced_values_are_400(self):
        """-1, +1, 1e3, 0x1, a space (%20 and +): not plain digits, 400."""
        for q in ("?since=-1", "?since=%2B1", "?limit=1e3", "?since=0x1", "?since=%201",
                  "?since=1+", "?limit=-5"):
            with self.subTest(q=q):
                self.assert_400(self.page(q))
        self.unharmed()

    def test_unknown_keys_are_ignored(self):
        """?foo=bar&since=5&limit=1&zzz: 6."""
        r = self.page("?foo=bar&since=5&limit=1&zzz")
        self.assertEqual(self.seqs(r), [6])
        self.unharmed()

    def test_api_key_in_the_query_is_401(self):
        """L11: the API key in ?token= is 401 unauthorized (GET and POST); POST stores
        nothing. The same key as a bearer header works."""
        r = self.page(f"?token={API_KEY}&since=0", cred=None)
        self.assertEqual((r.status, r.error_code()), (401, "unauthorized"), r)
        ch = self.ch()
        r = self.rest(post_bytes(f"/v1/channels/{ch}/messages?token={API_KEY}", b'{"k":1}'))
        self.assertEqual((r.status, r.error_code()), (401, "unauthorized"), r)
        self.assertEqual(self.seqs(self.page("?since=5")), [6])
        self.unharmed(errors={"unauthorized": 2})

    def test_jwt_in_the_query_still_works(self):
        """L11 (control): a JWT in ?token= is still accepted."""
        r = self.page(f"?since=5&token={H.reader_token(['rq:*'])}", cred=None)
        self.assertEqual(self.seqs(r), [6])
        self.unharmed()

    def test_bad_channel_paths(self):
        """Bad channel names in the path: 400 bad_request; unknown routes 404; nothing
        stored by a POST to either. (lws merges "//": /v1/channels//messages arrives as
        /v1/channels/messages, the position route of a channel named "messages", which takes
        no POST: 404.)"""
        cases = [("/v1/channels/a%20b/messages", 400), ("/v1/channels//messages", 404),
                 ("/v1/channels/" + "c" * 201 + "/messages", 400),
                 ("/v1/channels/a/b/messages", 400), ("/v1/channelz/a/messages", 404),
                 ("/v1/channels/a/messagesX", 400)]
        for path, status in cases:
            with self.subTest(path=path):
                r = self.rest(post_bytes(path, b'{"x":1}', cred=API_KEY))
                self.assertEqual(r.status, status, r)
                self.assertEqual(r.error_code(), "bad_request" if status == 400 else "not_found")
        self.unharmed()


# ---------------------------------------------------------------------------------------------
class TestIdempotencyKeys(RestCase):
    def post_key(self, ch, key, body=b'{"k":1}'):
        data = (f"POST /v1/channels/{ch}/messages HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n"
                ).encode() + b"Idempotency-Key: " + key + b"\r\n\r\n" + body
        return self.rest(data)

    def test_bad_key_lengths_are_400(self):
        """L2: an empty Idempotency-Key and one of 201 bytes: 400, nothing stored, no
        publish statement run."""
        ch = self.ch()
        for key in (b"", b"k" * 201):
            with self.subTest(length=len(key)):
                self.assert_400(self.post_key(ch, key))
        self.unharmed(errors={"bad_request": 2},
                      exact_metrics={"herald_publish_batches_total": 0})

    def test_bad_key_bytes_are_400(self):
        """L2: a space, a tab, DEL, bytes >= 0x80 (\\xff\\xfe, UTF-8 e-acute): each 400,
        before the key can reach a group commit (herald_publish_batches_total unchanged)."""
        ch = self.ch()
        keys = (b"a b", b"a\tb", b"a\x7fb", b"\xff\xfe", b"caf\xc3\xa9")
        for key in keys:
            with self.subTest(key=key):
                self.assert_400(self.post_key(ch, key))
        self.unharmed(errors={"bad_request": len(keys)},
                      exact_metrics={"herald_publish_batches_total": 0})

    def test_the_whole_allowed_range_is_accepted(self):
        """L2 (control): 200 bytes of 0x21-0x7E is a key: 201, and a retry answers the same
        seq without storing again."""
        ch = self.ch()
        key = bytes(0x21 + i % 94 for i in range(200))
        r1 = self.post_key(ch, key)
        r2 = self.post_key(ch, key)
        self.assertEqual((r1.status, r2.status), (201, 201), (r1, r2))
        self.assertEqual(r1.json()["seq"], r2.json()["seq"])
        self.unharmed(heads={ch: 1}, publishes=2)  # the counter counts the retry

    def test_bad_batch_member_keys_are_400(self):
        """L2: idempotency_key members with a space, a tab, a non-ASCII letter or 201 bytes:
        the whole batch is 400 and nothing is stored."""
        ch = self.ch()
        for key in ("a b", "a\tb", "caf\u00e9", "k" * 201, "\u0000"):
            with self.subTest(key=key[:10]):
                body = json.dumps({"messages": [{"channel": ch, "data": 1},
                                                {"channel": ch, "data": 2,
                                                 "idempotency_key": key}]})
                self.assert_400(self.rest(post_bytes("/v1/messages", body, cred=API_KEY)))
        self.unharmed(exact_metrics={"herald_publish_batches_total": 0})


# ---------------------------------------------------------------------------------------------
class TestBodies(RestCase):
    def test_data_deeper_than_the_limit_is_400(self):
        """L4: data nested 17 deep (HERALD_MAX_JSON_DEPTH 16) and 2048 deep: 400, nothing
        stored, nothing dropped on the live path (herald_invalid_payloads_total unchanged);
        16 deep is stored and delivered live."""
        ch = self.ch()
        ws = self.subscriber(ch)
        for depth in (17, 2048):
            with self.subTest(depth=depth):
                self.assert_400(self.post(ch, "[" * depth + "]" * depth))
        r = self.post(ch, "[" * 16 + "]" * 16)
        self.assertEqual((r.status, r.json()["seq"]), (201, 1), r)
        m = H.ws_next_json(ws, 20)
        self.assertEqual((m["seq"], m["data"]), (1, json.loads("[" * 16 + "]" * 16)))
        self.unharmed(heads={ch: 1}, exact_metrics={"herald_invalid_payloads_total": 0})

    def test_a_nul_byte_in_the_json_is_400(self):
        """A raw NUL after a number, in a single body and in a batch member: JSON has no raw
        NUL, but jansson alone ends the number there and reads on, and the NUL would reach
        every subscriber. 400, nothing stored, nothing delivered."""
        ch = self.ch()
        ws = self.subscriber(ch)
        # refused as they arrive, not by PostgreSQL (which refuses them too, later)
        for body in (b'{"n":1\x00}', b'[1\x00]'):
            r = self.post(ch, body)
            self.assert_400(r)
            self.assertIn("must be JSON", r.json()["error"]["message"])
        body = b'{"messages":[{"channel":"%s","data":{"n":1\x00}}]}' % ch.encode()
        r = self.rest(post_bytes("/v1/messages", body, cred=API_KEY))
        self.assert_400(r)
        self.assertNotIn("results", r.json())
        r = self.post(ch, b'{"n":1}')
        self.assertEqual((r.status, r.json()["seq"]), (201, 1), r)
        m = H.ws_next_json(ws, 20)
        self.assertEqual((m["seq"], m["data"]), (1, {"n": 1}))
        self.unharmed(heads={ch: 1})

    def test_batch_data_deeper_than_the_limit_is_400(self):
        """L4: a batch member whose data is 2048 deep: the batch is 400, nothing stored."""
        ch = self.ch()
        body = ('{"messages":[{"channel":"%s","data":1},{"channel":"%s","data":%s}]}'
                % (ch, ch, "[" * 2048 + "]" * 2048))
        self.assert_400(self.rest(post_bytes("/v1/messages", body, cred=API_KEY)))
        self.unharmed()

    def test_refusal_before_the_body_is_answered_after_it_and_in_step(self):
        """M11: a POST outside the token's publish patterns, with a 20-byte body, followed by
        a pipelined GET /healthz in the same write: 403 forbidden (after the body was read
        and thrown away), then 200 for the GET: the body was never taken for a request."""
        ch = self.ch()
        tok = H.writer_token(publish=["elsewhere:*"])
        body = b'{"GET /healthz":"x"}'
        r, c = None, RawHTTP(self.h.port)
        self.addCleanup(c.close)
        c.send(post_bytes(f"/v1/channels/{ch}/messages", body, cred=tok)
               + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(10)
        self.assertEqual((r.status, r.error_code()), (403, "forbidden"), r)
        if r.headers.get("connection", "").lower() != "close":
            r2 = c.read_response(10)
            self.assertIsNotNone(r2)
            self.assertEqual((r2.status, r2.json().get("ok")), (200, True), r2)
        self.unharmed(errors={"forbidden": 1})

    def test_unknown_v1_route_with_a_body_then_a_pipelined_request(self):
        """M11: POST /v1/nothing with a body that looks like a request: 404 not_found, and
        the pipelined GET after it is answered 200 (the body was skipped, not parsed)."""
        body = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        c = RawHTTP(self.h.port)
        self.addCleanup(c.close)
        c.send(post_bytes("/v1/nothing", body, cred=API_KEY)
               + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(10)
        self.assertEqual((r.status, r.error_code()), (404, "not_found"), r)
        if r.headers.get("connection", "").lower() != "close":
            r2 = c.read_response(10)
            self.assertIsNotNone(r2)
            self.assertEqual((r2.status, r2.json().get("ok")), (200, True),
                             f"the body was parsed as a request: {r2}")
        self.unharmed(errors={"not_found": 1})

    def test_refusals_follow_the_sqlstate_not_the_text(self):
        """L14: a trigger raising SQLSTATE 22023 with a message without "invalid": 400
        bad_request; one raising 53000 whose message says "invalid": 503. Nothing stored."""
        ch = self.ch()
        self.pg.sql("""CREATE OR REPLACE FUNCTION hostile_refuse() RETURNS trigger
            LANGUAGE plpgsql AS $$ BEGIN
              IF NEW.envelope LIKE '%"poison22"%' THEN
                RAISE EXCEPTION 'Daten abgelehnt' USING ERRCODE = '22023'; END IF;
              IF NEW.envelope LIKE '%"poison53"%' THEN
                RAISE EXCEPTION 'invalid resources' USING ERRCODE = '53000'; END IF;
              RETURN NEW; END $$;
            CREATE TRIGGER hostile_refuse BEFORE INSERT ON herald_messages
              FOR EACH ROW EXECUTE FUNCTION hostile_refuse();""")
        self.addCleanup(self.pg.sql, "DROP TRIGGER IF EXISTS hostile_refuse ON herald_messages")
        r = self.post(ch, '{"poison22":1}')
        self.assertEqual((r.status, r.error_code()), (400, "bad_request"), r)
        r = self.post(ch, '{"poison53":1}')
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.headers.get("retry-after"), "1", r)
        self.pg.sql("DROP TRIGGER hostile_refuse ON herald_messages")
        self.unharmed()

    def test_pages_are_capped_in_bytes(self):
        """H4: 20 messages of about 60 kB (1.2 MB) and ?limit=1000: the first page holds at
        most HERALD_PAGE_BYTES (1M) of messages and says more:true; paging on returns every
        message once."""
        ch = self.ch()
        self.pg.sql(f"SELECT herald_publish({H.sql_quote(ch)}, json_build_object('i', g, "
                    f"'pad', repeat('x', 60000))) FROM generate_series(1, 20) g")
        r = self.get_page(ch, "?since=0&limit=1000")
        self.assertEqual(r.status, 200, r)
        body = r.json()
        # the body is the page's messages (stored bytes) plus a wrapper of ~120 bytes
        self.assertLessEqual(len(r.body), (1 << 20) + 512, "a page over HERALD_PAGE_BYTES")
        self.assertGreaterEqual(len(body["messages"]), 1)
        self.assertIs(body["more"], True)
        seen = [m["seq"] for m in body["messages"]]
        while body["more"]:
            r = self.get_page(ch, f"?since={seen[-1]}&limit=1000")
            body = r.json()
            self.assertGreaterEqual(len(body["messages"]), 1)
            seen += [m["seq"] for m in body["messages"]]
        self.assertEqual(seen, list(range(1, 21)))
        # stored via SQL by this case, not by the gateway
        self.unharmed(heads={ch: 20}, publishes=0)


if __name__ == "__main__":
    H.run_module()
