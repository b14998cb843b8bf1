#!/usr/bin/python3
"""Authentication and authorization: HS256 JWTs (?token= or Authorization: Bearer) on the
WebSocket (every bad token: accepted, then closed 4001; expiry while connected closes 4001),
allowed origins (1008), channel patterns for subscribe and publish (`forbidden`, connection
stays open), and /v1 REST with the API key or a JWT (401, 403, 400, 413). Every refusal is
followed by a check that the process, or the same connection, still works."""

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import jwt_util as jwt  # noqa: E402
from harness import ping, recv_json, request, subscribe, wait_close  # noqa: E402
from pg import HistoryTestCase, PostgresServer  # noqa: E402

SECRET = jwt.SECRET
API_KEY = "it-api-key-7f3c9a1e5b2d4c6a8e0f"
CH = ["bot:status:*", "task_updates"]
CLOSE_WAIT = 8  # seconds: the server closes "at once"; generous for slow machines


def with_token(url, tok):
    return f"{url}?token={tok}"


class AuthBase(harness.HeraldTestCase):
    herald_args = ("--jwt-secret", SECRET)

    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.herald = self.start_herald(self.redis, *self.herald_args)

    async def expect_close(self, code, url=None, token=None, **kw):
        """The handshake succeeds, then the server closes with `code` at once."""
        url = url or self.herald.ws_url
        if token is not None:
            url = with_token(url, token)
        try:
            ws = await self.connect(url, **kw)
        except websockets.exceptions.InvalidStatusCode as exc:
            self.fail(f"handshake refused with HTTP {exc.status_code}; expected 101 then "
                      f"close {code}")
        got, reason = await self.closed(ws, CLOSE_WAIT, code)
        return reason

    async def closed(self, ws, timeout, code):
        """Waits for the server to close ws; asserts the close code; returns (code, reason)."""
        try:
            got, reason, _frames = await wait_close(ws, timeout)
        except asyncio.TimeoutError:
            self.fail(f"still open after {timeout} s; expected close {code}")
        self.assertEqual(got, code, f"close code (reason {reason!r})")
        return got, reason

    async def expect_ok(self, url=None, token=None, channel="bot:status:1", **kw):
        """A connection that is kept open: answers ping, may subscribe, gets a PUBLISH."""
        url = url or self.herald.ws_url
        if token is not None:
            url = with_token(url, token)
        ws = await self.connect(url, **kw)
        await ping(ws)
        await subscribe(ws, channel)
        self.assertGreaterEqual(self.redis.publish(channel, '{"ok":1}'), 1)
        msg = await recv_json(ws)
        self.assertEqual(msg, {"op": "message", "channel": channel, "data": {"ok": 1}})
        return ws

    async def assert_healthy(self):
        self.assertEqual(self.herald.healthz(), 200)
        tok = jwt.token(channels=CH) if "--jwt-secret" in self.herald_args else None
        ws = await self.expect_ok(token=tok, channel="bot:status:health")
        await ws.close()

    async def refuse_all(self, names):
        """Each named bad token, in the query and in the header, is accepted then closed
        with 4001; herald_auth_failures_total counts them."""
        bad = dict(jwt.bad_tokens())
        before = self.herald.metric("herald_auth_failures_total")
        self.assertIsNotNone(before, "herald_auth_failures_total missing from /metrics")
        n = 0
        for name in names:
            with self.subTest(token=name, via="query"):
                await self.expect_close(4001, token=bad[name])
                n += 1
            with self.subTest(token=name, via="header"):
                await self.expect_close(
                    4001, extra_headers={"Authorization": f"Bearer {bad[name]}"})
                n += 1
        self.herald.wait_metric("herald_auth_failures_total", lambda v: v >= before + n)
        await self.assert_healthy()


class TestWebSocketTokens(AuthBase):
    async def test_no_token(self):
        before = self.herald.metric("herald_auth_failures_total")
        self.assertIsNotNone(before, "herald_auth_failures_total missing from /metrics")
        await self.expect_close(4001)
        await self.expect_close(4001, url=self.herald.ws_url + "?token=")
        await self.expect_close(4001, extra_headers={"Authorization": "Bearer"})
        await self.expect_close(4001, extra_headers={"Authorization": "Bearer "})
        await self.expect_close(4001, extra_headers={"Authorization": "Basic dXNlcjpwYXNz"})
        # a valid JWT under another scheme is no bearer token
        await self.expect_close(4001, extra_headers={
            "Authorization": "Basic " + jwt.token(channels=CH)})
        self.herald.wait_metric("herald_auth_failures_total", lambda v: v >= before + 1)
        await self.assert_healthy()

    async def test_malformed_token(self):
        await self.refuse_all(["garbage", "two-parts", "empty-parts", "payload-not-object",
                               "payload-not-json"])

    async def test_bad_signature(self):
        await self.refuse_all(["wrong-secret", "tampered-signature", "truncated-signature"])

    async def test_tampered_payload(self):
        await self.refuse_all(["tampered-payload"])

    async def test_alg_none(self):
        await self.refuse_all(["alg-none", "alg-none-with-signature"])

    async def test_hs512(self):
        await self.refuse_all(["hs512", "hs512-labelled-hs256"])

    async def test_expired(self):
        await self.refuse_all(["expired"])
        # beyond the default leeway (5 s) too
        await self.expect_close(4001, token=jwt.expired(ago=30, channels=CH))

    async def test_missing_or_bad_exp(self):
        await self.refuse_all(["missing-exp", "string-exp"])

    async def test_bad_claims(self):
        await self.refuse_all(["missing-sub", "non-array-channels", "non-array-publish",
                               "non-string-channel-item"])

    async def test_token_in_query_and_in_header(self):
        tok = jwt.token(channels=CH)
        await self.expect_ok(token=tok, channel="bot:status:q")
        await self.expect_ok(extra_headers={"Authorization": f"Bearer {tok}"},
                             channel="bot:status:h")
        # a bad header is not rescued by nothing in the query, and vice versa
        await self.expect_close(4001, extra_headers={
            "Authorization": f"Bearer {jwt.wrong_secret(channels=CH)}"})
        await self.expect_close(4001, token=jwt.alg_none(channels=CH))
        await self.assert_healthy()

    async def test_forbidden_subscribe_keeps_the_connection(self):
        ws = await self.connect(with_token(self.herald.ws_url, jwt.token(channels=CH)))
        for n, ch in enumerate(["secret", "bot:statusX", "bot:status", "task_updates2",
                                "xbot:status:1", "task_update"]):
            with self.subTest(channel=ch):
                reply = await request(ws, {"op": "subscribe", "channel": ch, "id": n})
                self.assertEqual((reply.get("op"), reply.get("code")), ("error", "forbidden"),
                                 reply)
                self.assertEqual(reply.get("id"), n, reply)
                self.assertIsInstance(reply.get("message"), str, reply)
                await ping(ws)
        # also with since (resume): refused before any history is looked at
        reply = await request(ws, {"op": "subscribe", "channel": "secret", "since": 0})
        self.assertEqual((reply.get("op"), reply.get("code")), ("error", "forbidden"), reply)
        self.assertEqual(self.redis.numsub("secret"), 0, "a forbidden channel was subscribed")
        before = self.herald.metric("herald_client_errors_total", {"code": "forbidden"})
        self.assertGreaterEqual(before or 0, 7, "herald_client_errors_total{code=forbidden}")
        # the same connection subscribes to what it may read and gets it, nothing else
        await subscribe(ws, "bot:status:7")
        await subscribe(ws, "task_updates")
        self.redis.publish("secret", '{"leak":true}')
        self.redis.publish("bot:status:7", '{"n":1}')
        self.redis.publish("task_updates", '{"n":2}')
        self.assertEqual(await recv_json(ws),
                         {"op": "message", "channel": "bot:status:7", "data": {"n": 1}})
        self.assertEqual(await recv_json(ws),
                         {"op": "message", "channel": "task_updates", "data": {"n": 2}})
        await ping(ws)

    async def test_glob_patterns(self):
        tok = jwt.token(channels=["room:?", "a*z", "exact"])
        ws = await self.connect(with_token(self.herald.ws_url, tok))
        for ch in ("room:1", "room:x", "az", "a:b:c:z", "abz", "exact"):
            with self.subTest(allowed=ch):
                await subscribe(ws, ch)
        for ch in ("room:", "room:12", "a", "abzx", "exact2", "xexact", "Room:1"):
            with self.subTest(forbidden=ch):
                reply = await request(ws, {"op": "subscribe", "channel": ch})
                self.assertEqual((reply.get("op"), reply.get("code")), ("error", "forbidden"),
                                 reply)
        await ping(ws)

    async def test_no_channels_claim_reads_nothing(self):
        ws = await self.connect(with_token(self.herald.ws_url, jwt.token()))
        await ping(ws)
        reply = await request(ws, {"op": "subscribe", "channel": "bot:status:1"})
        self.assertEqual((reply.get("op"), reply.get("code")), ("error", "forbidden"), reply)
        await ping(ws)


class TestExpiry(AuthBase):
    herald_args = ("--jwt-secret", SECRET, "--jwt-leeway", "0")

    async def test_expiry_while_connected_closes_4001(self):
        exp = int(time.time()) + 2
        tok = jwt.sign({"alg": "HS256", "typ": "JWT"},
                       {"sub": "short", "exp": exp, "channels": CH})
        ws = await self.connect(with_token(self.herald.ws_url, tok))
        await subscribe(ws, "bot:status:exp")
        await ping(ws)
        other = await self.connect(with_token(self.herald.ws_url, jwt.token(channels=CH)))
        await subscribe(other, "bot:status:exp")
        await self.closed(ws, 20, 4001)
        self.assertGreaterEqual(time.time(), exp - 1, "closed before the token expired")
        # the long-lived client is untouched and still receives
        self.redis.publish("bot:status:exp", '{"after":1}')
        self.assertEqual((await recv_json(other))["data"], {"after": 1})
        await ping(other)
        self.herald.wait_metric("herald_connections", lambda v: v == 1)
        await self.assert_healthy()


class TestLeeway(AuthBase):
    herald_args = ("--jwt-secret", SECRET, "--jwt-leeway", "30")

    async def test_leeway_accepts_slightly_expired(self):
        ws = await self.expect_ok(token=jwt.expired(ago=10, channels=CH))
        await ping(ws)
        await self.expect_close(4001, token=jwt.expired(ago=120, channels=CH))
        await self.assert_healthy()


class TestOrigins(AuthBase):
    herald_args = ("--allowed-origins", "https://a.example,https://b.example")

    async def test_wrong_origin_1008_allowed_and_absent_origin_ok(self):
        for origin in ("https://evil.example", "https://a.example.evil.example",
                       "http://a.example", "https://a.example:8443", "null",
                       "https://A.example.evil"):
            with self.subTest(origin=origin):
                await self.expect_close(1008, origin=origin)
        for origin in ("https://a.example", "https://b.example"):
            with self.subTest(origin=origin):
                ws = await self.expect_ok(origin=origin, channel="o:" + origin[8:])
                await ws.close()
        # no Origin header: not a browser, allowed
        ws = await self.expect_ok(channel="o:none")
        await ping(ws)
        await self.assert_healthy()


class TestOriginWildcard(AuthBase):
    herald_args = ("--allowed-origins", "*")

    async def test_star_allows_any_origin(self):
        for origin in ("https://evil.example", "http://localhost:3000", "null"):
            with self.subTest(origin=origin):
                ws = await self.expect_ok(origin=origin, channel="star")
                await ws.close()


class TestOriginWithJwt(AuthBase):
    herald_args = ("--jwt-secret", SECRET, "--allowed-origins", "https://a.example")

    async def test_origin_and_token_both_required(self):
        good = jwt.token(channels=CH)
        await self.expect_close(1008, token=good, origin="https://evil.example")
        await self.expect_close(4001, origin="https://a.example")
        await self.expect_close(4001, token=jwt.expired(channels=CH), origin="https://a.example")
        ws = await self.expect_ok(token=good, origin="https://a.example")
        await ping(ws)
        await self.assert_healthy()


# ---------------------------------------------------------------------------------------------
# REST (/v1) and WebSocket publish: need PostgreSQL. One server for the whole file.


def http(h, method, path, body=None, headers=None, raw_body=None):
    """(status, parsed JSON body or None, headers) for a request to herald h."""
    data = raw_body if raw_body is not None else (
        json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(h.base + path, data=data, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, payload, hdrs = r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        status, payload, hdrs = e.code, e.read(), dict(e.headers)
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = None
    return status, parsed, hdrs


def bearer(cred):
    return {"Authorization": f"Bearer {cred}"}


_PG = {}


def shared_postgres():
    """One PostgreSQL for every REST test of this file (started on first use, stopped in
    tearDownModule); each test uses its own channel names."""
    if "server" not in _PG:
        tmp = tempfile.mkdtemp(prefix="herald-it-pg-")
        pg = PostgresServer(tmp)
        try:
            pg.init().start().create_db()
        except Exception:
            pg.kill()
            shutil.rmtree(tmp, True)
            raise
        _PG.update(server=pg, tmp=tmp)
    return _PG["server"]


def tearDownModule():
    if "server" in _PG:
        _PG["server"].kill()
        shutil.rmtree(_PG["tmp"], True)


class RestBase(HistoryTestCase):
    herald_args = ("--jwt-secret", SECRET, "--api-key", API_KEY, "--max-publish-bytes", "4k")

    @classmethod
    def setUpClass(cls):
        cls.pg = shared_postgres()

    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.h = self.start_herald_with_history(self.redis, self.pg, *self.herald_args)
        await asyncio.to_thread(self.h.wait_ready)

    def call(self, method, path, body=None, cred=None, headers=None, raw_body=None):
        hdrs = dict(headers or {})
        if cred is not None:
            hdrs.update(bearer(cred))
        return http(self.h, method, path, body, hdrs, raw_body)

    def assert_error(self, res, status, code):
        st, body, _ = res
        self.assertEqual(st, status, body)
        self.assertIsInstance(body, dict, f"{status} without a JSON body")
        self.assertEqual(body.get("error", {}).get("code"), code, body)
        self.assertIsInstance(body["error"].get("message"), str, body)


class TestRest(RestBase):
    async def test_without_or_with_bad_credentials_401(self):
        path = "/v1/channels/rest:a/messages"
        before = self.h.metric("herald_auth_failures_total")
        self.assertIsNotNone(before, "herald_auth_failures_total missing from /metrics")
        self.assert_error(self.call("GET", path), 401, "unauthorized")
        self.assert_error(self.call("POST", path, {"x": 1}), 401, "unauthorized")
        bads = [("wrong-key", API_KEY + "x"), ("key-prefix", API_KEY[:-1]),
                ("key-case", API_KEY.upper()), ("empty", "")]
        bads += [(n, t) for n, t in jwt.bad_tokens()
                 if n in ("garbage", "wrong-secret", "tampered-payload", "alg-none", "hs512",
                          "expired", "missing-exp", "missing-sub")]
        for name, cred in bads:
            with self.subTest(cred=name):
                self.assert_error(self.call("GET", path, cred=cred), 401, "unauthorized")
                self.assert_error(self.call("POST", path, {"x": 1}, cred=cred), 401,
                                  "unauthorized")
        with self.subTest(cred="basic"):
            self.assert_error(self.call("GET", path,
                                        headers={"Authorization": "Basic " + API_KEY}),
                              401, "unauthorized")
        with self.subTest(cred="bad token in query"):
            self.assert_error(self.call("GET", path + "?token=" + jwt.alg_none(channels=["*"])),
                              401, "unauthorized")
        self.h.wait_metric("herald_auth_failures_total", lambda v: v >= before + 1)
        # probes and scrapes need nothing
        for p in ("/healthz", "/readyz", "/metrics"):
            self.assertEqual(self.call("GET", p)[0], 200, p)
        # nothing was published by the refused POSTs, and the right key still works
        st, body, _ = self.call("GET", path, cred=API_KEY)
        self.assertEqual(st, 200, body)
        self.assertEqual((body["seq"], body["messages"]), (0, []))

    async def test_api_key_grants_every_route(self):
        ws = await self.connect(with_token(self.h.ws_url, jwt.token(channels=["svc:*"])))
        await subscribe(ws, "svc:one")
        st, body, _ = self.call("POST", "/v1/channels/svc:one/messages", {"v": 1}, cred=API_KEY)
        self.assertEqual(st, 201, body)
        self.assertEqual(body["seq"], 1)
        st, body, _ = self.call("POST", "/v1/channels/other:x/messages", {"v": 2}, cred=API_KEY,
                                headers={"Idempotency-Key": "k1"})
        self.assertEqual(st, 201, body)
        st, body, _ = self.call("GET", "/v1/channels/other:x/messages?since=0&limit=10",
                                cred=API_KEY)
        self.assertEqual(st, 200, body)
        self.assertEqual([m["data"] for m in body["messages"]], [{"v": 2}])
        msg = await recv_json(ws)
        self.assertEqual((msg["channel"], msg["seq"], msg["data"]), ("svc:one", 1, {"v": 1}))

    async def test_batch_publish_checks_every_channel(self):
        """POST /v1/messages: 401 without credentials; one channel outside the token's
        publish patterns refuses the whole batch (403, nothing stored)."""
        batch = {"messages": [{"channel": "bfeed:a", "data": 1},
                              {"channel": "bfeed:b", "data": 2}]}
        self.assert_error(self.call("POST", "/v1/messages", batch), 401, "unauthorized")
        self.assert_error(self.call("POST", "/v1/messages", batch, cred=jwt.wrong_secret()),
                          401, "unauthorized")
        tok = jwt.token(channels=["bfeed:*"], publish=["bfeed:a"])
        st, body, _ = self.call("POST", "/v1/messages", batch, cred=tok)
        self.assert_error((st, body, _), 403, "forbidden")
        self.assertIn("messages[1]", body["error"]["message"])
        st, body, _ = self.call("GET", "/v1/channels/bfeed:a/messages", cred=tok)
        self.assertEqual((st, body["seq"]), (200, 0), body)
        batch["messages"][1]["channel"] = "bfeed:a"
        st, body, _ = self.call("POST", "/v1/messages", batch, cred=tok)
        self.assertEqual((st, [r["seq"] for r in body["results"]]), (201, [1, 2]), body)
        st, body, _ = self.call("POST", "/v1/messages", {"messages": [
            {"channel": "bother:x", "data": 3}]}, cred=API_KEY)
        self.assertEqual((st, body["results"][0]["seq"]), (201, 1), body)
        # the whole body counts against HERALD_MAX_PUBLISH_BYTES (4k here)
        big = {"messages": [{"channel": "bfeed:a", "data": "x" * 1000} for _ in range(5)]}
        self.assert_error(self.call("POST", "/v1/messages", big, cred=tok), 413, "too_large")

    async def test_jwt_scopes_on_rest(self):
        tok = jwt.token(channels=["feed:*"], publish=["feed:own"])
        st, body, _ = self.call("POST", "/v1/channels/feed:own/messages", {"i": 1}, cred=tok)
        self.assertEqual(st, 201, body)
        st, body, _ = self.call("GET", "/v1/channels/feed:own/messages", cred=tok)
        self.assertEqual(st, 200, body)
        self.assertEqual([m["data"] for m in body["messages"]], [{"i": 1}])
        st, body, _ = self.call("GET", "/v1/channels/feed:other/messages?since=0&limit=5",
                                cred=tok)
        self.assertEqual((st, body["messages"]), (200, []))
        # the token in the query works on /v1 as well
        st, body, _ = self.call("GET", f"/v1/channels/feed:own/messages?since=0&token={tok}")
        self.assertEqual(st, 200, body)
        self.assertEqual(len(body["messages"]), 1)
        # outside the claims: 403
        self.assert_error(self.call("GET", "/v1/channels/private:x/messages", cred=tok),
                          403, "forbidden")
        self.assert_error(self.call("GET", f"/v1/channels/private:x/messages?token={tok}"),
                          403, "forbidden")
        self.assert_error(self.call("POST", "/v1/channels/feed:other/messages", {"i": 2},
                                    cred=tok), 403, "forbidden")
        self.assert_error(self.call("POST", "/v1/channels/private:x/messages", {"i": 3},
                                    cred=tok), 403, "forbidden")
        # malformed queries: 400 as before
        for q in ("?since=-1", "?limit=0", "?since=1x", "?limit=1001"):
            with self.subTest(query=q):
                self.assert_error(self.call("GET", "/v1/channels/feed:own/messages" + q,
                                            cred=tok), 400, "bad_request")
        # too large a body: 413
        st, body, _ = self.call("POST", "/v1/channels/feed:own/messages",
                                raw_body=json.dumps({"pad": "x" * 8000}).encode(), cred=tok)
        self.assertEqual(st, 413, body)
        # nothing refused was stored; the allowed channel still works
        for ch in ("feed:other", "private:x"):
            st, body, _ = self.call("GET", f"/v1/channels/{ch}/messages", cred=API_KEY)
            self.assertEqual((st, body["seq"], body["messages"]), (200, 0, []), ch)
        st, body, _ = self.call("POST", "/v1/channels/feed:own/messages", {"i": 4}, cred=tok)
        self.assertEqual((st, body["seq"]), (201, 2), body)

    async def test_websocket_publish_authorization(self):
        tok = jwt.token(channels=["chat:*"], publish=["chat:mine"])
        ws = await self.connect(with_token(self.h.ws_url, tok))
        await subscribe(ws, "chat:mine")
        for n, ch in enumerate(["chat:other", "news", "chat:mine2"]):
            with self.subTest(channel=ch):
                reply = await request(ws, {"op": "publish", "channel": ch, "data": {"n": n},
                                           "id": n})
                self.assertEqual((reply.get("op"), reply.get("code")), ("error", "forbidden"),
                                 reply)
                self.assertEqual(reply.get("id"), n, reply)
                await ping(ws)
        reply = await request(ws, {"op": "publish", "channel": "chat:mine", "data": {"ok": 1},
                                   "id": "p"})
        # the live copy may come before or after the reply
        frames = [reply, await recv_json(ws)]
        pub = [f for f in frames if f.get("op") == "published"]
        msg = [f for f in frames if f.get("op") == "message"]
        self.assertEqual(len(pub), 1, frames)
        self.assertEqual((pub[0]["channel"], pub[0]["seq"], pub[0].get("id")),
                         ("chat:mine", 1, "p"))
        self.assertEqual(len(msg), 1, frames)
        self.assertEqual((msg[0]["seq"], msg[0]["data"]), (1, {"ok": 1}))
        for ch in ("chat:other", "news", "chat:mine2"):
            st, body, _ = self.call("GET", f"/v1/channels/{ch}/messages", cred=API_KEY)
            self.assertEqual((st, body["messages"]), (200, []), ch)
        await ping(ws)


class TestIdempotencyKeySpaces(RestBase):
    async def test_a_key_belongs_to_its_caller(self):
        """L3: an Idempotency-Key is kept per caller: a co-publisher who uses another's key
        first stores its own message and cannot make the other's publish a duplicate of
        it; the same caller's retry is a duplicate; the API key has a space of its own."""
        ch = "keys:shared"
        alice = jwt.token(sub="alice", publish=["keys:*"], channels=["keys:*"])
        mallory = jwt.token(sub="mallory", publish=["keys:*"], channels=["keys:*"])
        key = {"Idempotency-Key": "order-42"}
        st, squat, _ = self.call("POST", f"/v1/channels/{ch}/messages", {"by": "mallory"},
                                 cred=mallory, headers=key)
        self.assertEqual(st, 201, squat)
        st, first, _ = self.call("POST", f"/v1/channels/{ch}/messages", {"by": "alice"},
                                 cred=alice, headers=key)
        self.assertEqual(st, 201, first)
        self.assertEqual(first["seq"], squat["seq"] + 1, "alice's message must be stored")
        st, retry, _ = self.call("POST", f"/v1/channels/{ch}/messages", {"by": "alice"},
                                 cred=alice, headers=key)
        self.assertEqual((st, retry["seq"]), (201, first["seq"]), "a retry is a duplicate")
        st, service, _ = self.call("POST", f"/v1/channels/{ch}/messages", {"by": "service"},
                                   cred=API_KEY, headers=key)
        self.assertEqual((st, service["seq"]), (201, first["seq"] + 1), service)
        st, page, _ = self.call("GET", f"/v1/channels/{ch}/messages?since=0", cred=API_KEY)
        self.assertEqual([m["data"]["by"] for m in page["messages"]],
                         ["mallory", "alice", "service"])


class TestWeakSecret(AuthBase):
    herald_args = ("--jwt-secret", "short")

    async def test_a_short_secret_is_warned_about(self):
        """L15: an HS256 secret under 32 bytes is said loudly at start."""
        self.assertIn('"event":"weak_secret"', self.herald.log_text())


class TestApiKeyOnly(RestBase):
    herald_args = ("--api-key", API_KEY)

    async def test_v1_needs_the_key_websocket_is_open(self):
        path = "/v1/channels/keyonly/messages"
        self.assert_error(self.call("GET", path), 401, "unauthorized")
        self.assert_error(self.call("POST", path, {"a": 1}), 401, "unauthorized")
        self.assert_error(self.call("GET", path, cred="wrong"), 401, "unauthorized")
        # with no secret configured, a JWT is no credential
        self.assert_error(self.call("GET", path, cred=jwt.token(channels=["*"])), 401,
                          "unauthorized")
        ws = await self.connect(self.h)  # no token needed on the WebSocket
        await subscribe(ws, "keyonly")
        st, body, _ = self.call("POST", path, {"a": 1}, cred=API_KEY)
        self.assertEqual((st, body["seq"]), (201, 1), body)
        msg = await recv_json(ws)
        self.assertEqual((msg["channel"], msg["seq"], msg["data"]), ("keyonly", 1, {"a": 1}))
        st, body, _ = self.call("GET", path, cred=API_KEY)
        self.assertEqual((st, len(body["messages"])), (200, 1), body)
        self.assertEqual(self.h.healthz(), 200)


if __name__ == "__main__":
    harness.main()
