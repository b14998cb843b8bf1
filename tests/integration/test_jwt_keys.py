#!/usr/bin/python3
"""Asymmetric JWTs (issue 17, point 2) against real gateways: RS256 and ES256 tokens signed
with keys the openssl command line makes for each test, checked with a PEM file
(HERALD_JWT_PUBLIC_KEY) or with a JWK Set served by a local HTTP server (HERALD_JWKS_URL).

- PEM: RS256 and ES256 accepted on the WebSocket, REST and a refresh; HS256 (the classic
  confusion: the public key's PEM text as the HMAC secret), alg none, a token signed by
  another key, an expired one, an RSA key of 1024 bits (refused at start) all refused;
- iss and aud: HERALD_JWT_ISSUER / HERALD_JWT_AUDIENCE, a wrong or missing one refused;
- JWKS: kid selection (a kid of another key refused), key rotation (a token with a new kid is
  refused once, the set is fetched again, then accepted; the removed key stops working), a
  flood of unknown kids costs one fetch, a set server that is down at start (the gateway comes
  up and takes tokens once the set arrives), a malformed set keeps the keys there were;
- JWKS over https: with HERALD_JWKS_CA_FILE naming the CA that signed the server's
  certificate the set arrives; with another CA the handshake fails and tokens are refused.
"""

import asyncio
import http.server
import json
import os
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jwt_util as jwt  # noqa: E402
from harness import HeraldTestCase, free_port, main, ping, request, subscribe, wait_close  # noqa: E402
from pki import make_pki  # noqa: E402

CLOSE_WAIT = 8


def claims(**extra):
    c = {"sub": "alice", "exp": int(time.time()) + 600, "channels": ["room:*"]}
    c.update(extra)
    return c


class JwksServer:
    """A local HTTP server of one JWK Set (replaceable), counting its requests; HTTPS with
    tls=(cert, key)."""

    def __init__(self, port=None, tls=None):
        self.body = b'{"keys":[]}'
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests += 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *a):
                pass

        self.port = port or free_port()
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()
        scheme, host = ("https", "localhost") if tls else ("http", "127.0.0.1")
        self.url = f"{scheme}://{host}:{self.port}/.well-known/jwks.json"

    def serve(self, keys):
        self.body = json.dumps({"keys": keys}).encode()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class KeysCase(HeraldTestCase):
    def key(self, name, kind):
        return jwt.new_key(os.path.join(self.tmp, name + ".pem"), kind)

    async def accepted(self, h, token, channel="room:1"):
        ws = await self.connect(f"{h.ws_url}?token={token}")
        await subscribe(ws, channel)
        return ws

    async def refused(self, h, token):
        ws = await self.connect(f"{h.ws_url}?token={token}")
        code, _, _ = await wait_close(ws, CLOSE_WAIT)
        self.assertEqual(code, 4001, token[:60])

    async def accepted_eventually(self, h, token, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            ws = await self.connect(f"{h.ws_url}?token={token}")
            try:
                await subscribe(ws, "room:1", timeout=3)
                return ws
            except Exception:  # noqa: BLE001 - closed with 4001: not yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    def rest_status(self, h, token, channel="room:lobby"):
        req = urllib.request.Request(f"{h.base}/v1/channels/{channel}/presence",
                                     headers={"Authorization": "Bearer " + token})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code


class PemKeys(KeysCase):
    async def test_rs256_and_es256_from_a_pem_file(self):
        rsa, ec, other = self.key("rsa", "rsa"), self.key("ec", "ec"), self.key("other", "ec")
        pem = os.path.join(self.tmp, "keys.pem")
        with open(pem, "w") as f:
            f.write(jwt.public_pem(rsa) + jwt.public_pem(ec))
        h = self.start_herald(self.start_redis(), "--jwt-public-key", pem,
                              env={"HERALD_PRESENCE": "room:lobby"})  # for REST below
        rs = jwt.sign_with_key(rsa, {"alg": "RS256", "typ": "JWT"}, claims())
        es = jwt.sign_with_key(ec, {"alg": "ES256"}, claims(sub="bob"))
        ws = await self.accepted(h, rs)
        await self.accepted(h, es)
        self.assertEqual(self.rest_status(h, rs), 200)
        self.assertEqual(self.rest_status(h, es), 200)
        # a refresh takes an asymmetric token too
        r = await request(ws, {"op": "refresh", "token": jwt.sign_with_key(
            rsa, {"alg": "RS256"}, claims(exp=int(time.time()) + 900)), "id": 1})
        self.assertEqual((r["op"], r["id"]), ("refreshed", 1), r)
        # refused: HS256 keyed with the public key's PEM text, alg none, another key's
        # signature, an ES256 signature sold as RS256, an expired token
        pem_text = jwt.public_pem(rsa)
        for bad in (jwt.sign({"alg": "HS256", "typ": "JWT"}, claims(), secret=pem_text),
                    jwt.alg_none(sub="alice", channels=["room:*"]),
                    jwt.sign_with_key(other, {"alg": "ES256"}, claims()),
                    jwt.sign_with_key(ec, {"alg": "RS256"}, claims()),
                    jwt.sign_with_key(rsa, {"alg": "RS256"}, claims(exp=int(time.time()) - 60))):
            await self.refused(h, bad)
            self.assertEqual(self.rest_status(h, bad), 401)
        await ping(ws)
        self.assertGreaterEqual(h.metric("herald_auth_failures_total"), 10)

    async def test_issuer_and_audience(self):
        rsa = self.key("rsa", "rsa")
        pem = os.path.join(self.tmp, "k.pem")
        with open(pem, "w") as f:
            f.write(jwt.public_pem(rsa))
        h = self.start_herald(self.start_redis(), "--jwt-public-key", pem,
                              env={"HERALD_JWT_ISSUER": "https://idp.example",
                                   "HERALD_JWT_AUDIENCE": "herald"})
        good = claims(iss="https://idp.example", aud=["x", "herald"])
        await self.accepted(h, jwt.sign_with_key(rsa, {"alg": "RS256"}, good))
        await self.accepted(h, jwt.sign_with_key(rsa, {"alg": "RS256"}, dict(good, aud="herald")))
        for bad in (dict(good, aud="other"), dict(good, iss="https://evil.example"),
                    {k: v for k, v in good.items() if k != "aud"},
                    {k: v for k, v in good.items() if k != "iss"}):
            await self.refused(h, jwt.sign_with_key(rsa, {"alg": "RS256"}, bad))

    def test_unusable_key_files_stop_the_start(self):
        weak = self.key("weak", "rsa1024")
        cases = {"missing": os.path.join(self.tmp, "nope.pem"),
                 "weak": os.path.join(self.tmp, "weak.pub"),
                 "garbage": os.path.join(self.tmp, "garbage.pem")}
        with open(cases["weak"], "w") as f:
            f.write(jwt.public_pem(weak))
        with open(cases["garbage"], "w") as f:
            f.write("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
        redis = self.start_redis()
        for name, path in cases.items():
            h = self.start_herald(redis, "--jwt-public-key", path, wait=False)
            self.assertEqual(h.wait_exit(10), 2, name)
            self.assertIn("HERALD_JWT_PUBLIC_KEY", h.log_text(), name)


class JwksKeys(KeysCase):
    async def asyncSetUp(self):
        self.jwks = JwksServer()
        self.addCleanup(self.jwks.stop)

    def gateway(self, **env):
        h = self.start_herald(self.start_redis(), "--jwks-url", self.jwks.url, env=env)
        h.wait_ready()
        return h

    async def test_kid_selection_and_rotation(self):
        k1, k2, ec = self.key("k1", "rsa"), self.key("k2", "rsa"), self.key("ec", "ec")
        self.jwks.serve([jwt.jwk(k1, "k1"), jwt.jwk(ec, "e1"),
                         {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}])
        h = self.gateway()
        t1 = jwt.sign_with_key(k1, {"alg": "RS256", "kid": "k1"}, claims())
        await self.accepted_eventually(h, t1)
        self.assertEqual(h.metric("herald_jwt_keys"), 2)  # the encryption key is skipped
        self.assertEqual(h.metric("herald_jwks_fetch_failures_total"), 0)
        await self.accepted(h, jwt.sign_with_key(ec, {"alg": "ES256", "kid": "e1"}, claims()))
        # a kid naming a key of the other type, and no kid with one key per type: fine / not
        await self.refused(h, jwt.sign_with_key(k1, {"alg": "RS256", "kid": "e1"}, claims()))
        await self.accepted(h, jwt.sign_with_key(k1, {"alg": "RS256"}, claims()))
        # rotation: the issuer now signs with k2 and has dropped k1
        self.jwks.serve([jwt.jwk(k2, "k2"), jwt.jwk(ec, "e1")])
        fetched = self.jwks.requests
        t2 = jwt.sign_with_key(k2, {"alg": "RS256", "kid": "k2"}, claims())
        await self.refused(h, t2)  # unknown kid: refused now, the set is asked for again
        # a flood of unknown kids meanwhile costs no more fetches than the first
        for i in range(10):
            await self.refused(h, jwt.sign_with_key(k2, {"alg": "RS256", "kid": f"x{i}"},
                                                    claims()))
        await self.accepted_eventually(h, t2, timeout=15)
        self.assertLessEqual(self.jwks.requests - fetched, 2)
        await self.refused(h, t1)  # k1 is gone with the old set

    async def test_set_server_down_at_start_then_up(self):
        port = self.jwks.port
        self.jwks.stop()
        k1 = self.key("k1", "ec")
        h = self.start_herald(self.start_redis(), "--jwks-url", self.jwks.url)
        h.wait_ready()  # the gateway serves without its keys
        tok = jwt.sign_with_key(k1, {"alg": "ES256", "kid": "k1"}, claims())
        await self.refused(h, tok)
        self.jwks = JwksServer(port)
        self.jwks.serve([jwt.jwk(k1, "k1")])
        await self.accepted_eventually(h, tok, timeout=20)  # retried every 5 s
        self.assertIn("jwks", h.log_text())
        self.assertGreaterEqual(h.metric("herald_jwks_fetch_failures_total"), 1)
        self.assertGreaterEqual(h.metric("herald_jwks_fetches_total"), 1)

    async def test_a_malformed_set_keeps_the_keys_there_were(self):
        k1 = self.key("k1", "rsa")
        self.jwks.serve([jwt.jwk(k1, "k1")])
        h = self.gateway(HERALD_JWKS_REFRESH="10s")
        tok = jwt.sign_with_key(k1, {"alg": "RS256", "kid": "k1"}, claims())
        await self.accepted_eventually(h, tok)
        before = self.jwks.requests
        self.jwks.body = b'{"keys":[{"kty":"RSA","kid":"k9","n":"!!","e":"AQAB"}]}'
        deadline = time.monotonic() + 20
        while self.jwks.requests == before and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        self.assertGreater(self.jwks.requests, before, "the set was not fetched again")
        await asyncio.sleep(0.5)
        await self.accepted(h, tok)
        self.assertIn("fetching", h.log_text())
        self.assertGreaterEqual(h.metric("herald_jwks_fetch_failures_total"), 1)
        self.assertEqual(h.metric("herald_jwt_keys"), 1)


class JwksTrickle(KeysCase):
    def test_a_trickling_set_server_is_given_up_on(self):
        """A server that sends its body a byte at a time never ties up the fetch for long:
        the whole response must come within twice the 5 s step timeout."""
        import socket
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        self.addCleanup(srv.close)
        stop = threading.Event()
        self.addCleanup(stop.set)

        def serve():
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not stop.is_set():
                    try:
                        conn.sendall(b" ")
                    except OSError:
                        break
                    time.sleep(0.5)
                conn.close()
        threading.Thread(target=serve, daemon=True).start()
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/jwks"
        h = self.start_herald(self.start_redis(), "--jwks-url", url)
        h.wait_ready()
        h.wait_metric("herald_jwks_fetch_failures_total", lambda v: v >= 1, timeout=20)
        self.assertIn("the response took over 10000 ms", h.log_text())
        self.assertEqual(h.healthz(), 200)


class JwksOverTls(KeysCase):
    async def test_https_with_its_ca_and_not_without(self):
        pki = make_pki(self.tmp)
        k1 = self.key("k1", "ec")
        srv = JwksServer(tls=(pki["server.crt"], pki["server.key"]))
        self.addCleanup(srv.stop)
        srv.serve([jwt.jwk(k1, "k1")])
        tok = jwt.sign_with_key(k1, {"alg": "ES256", "kid": "k1"}, claims())
        redis = self.start_redis()
        good = self.start_herald(redis, "--jwks-url", srv.url,
                                 env={"HERALD_JWKS_CA_FILE": pki["ca.crt"]})
        wrong = self.start_herald(redis, "--jwks-url", srv.url,
                                  env={"HERALD_JWKS_CA_FILE": pki["other-ca.crt"]})
        await self.accepted_eventually(good, tok)
        # the other CA did not sign the server's certificate: the fetch fails (waited for:
        # before it has, a token is refused for want of any key), no keys, tokens refused
        await asyncio.to_thread(wrong.wait_metric, "herald_jwks_fetch_failures_total",
                                lambda v: v >= 1, timeout=20)
        self.assertIn("TLS handshake with localhost failed", wrong.log_text())
        await self.refused(wrong, tok)


if __name__ == "__main__":
    main()
