#!/usr/bin/python3
"""CORS for /v1 at the byte level (the browser side is tests/browser/cors.test.mjs): a
preflight from a listed Origin gets 204 with the methods, headers and max-age; one from
another Origin 403 without an allow-origin header; an answer to a listed Origin carries
allow-origin, vary and the exposed headers (Retry-After, Durable Streams' Stream-*). OPTIONS that is no preflight, or comes with a
body, stays a refused method, and without HERALD_CORS_ORIGINS nothing changes."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

APP = "https://app.example"
PATH = "/v1/channels/cors:room/messages"


def request(method, path, headers=(), body=b""):
    lines = [f"{method} {path} HTTP/1.1", "Host: gw.test"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


PREFLIGHT = [("Origin", APP), ("Access-Control-Request-Method", "POST"),
             ("Access-Control-Request-Headers", "content-type, idempotency-key")]


class CorsBase(harness.HeraldTestCase):
    herald_args = ()

    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.herald = self.start_herald(self.redis, *self.herald_args)
        self.herald.wait_ready()

    def raw(self, *args, **kwargs):
        return harness.http_raw("127.0.0.1", self.herald.port, request(*args, **kwargs))

    def assert_unharmed(self):
        self.assertEqual(self.herald.healthz(), 200)
        self.assertTrue(self.herald.alive())


class TestCors(CorsBase):
    herald_args = ("--cors-origins", f"{APP}, http://127.0.0.1:9")

    async def test_a_preflight_from_a_listed_origin_is_answered(self):
        status, h, body = self.raw("OPTIONS", PATH, PREFLIGHT)
        self.assertEqual(status, 204)
        self.assertEqual(h["access-control-allow-origin"], APP)
        self.assertEqual(h["vary"], "origin")
        self.assertEqual(h["access-control-allow-methods"], "GET, POST")
        self.assertEqual(h["access-control-allow-headers"],
                         "authorization, content-type, idempotency-key")
        self.assertEqual(h["access-control-max-age"], "600")
        self.assertNotIn("access-control-allow-credentials", h)
        self.assertEqual(body, b"")
        # the Origin is compared without regard to case, and the batch route is /v1 too
        status, h, _ = self.raw("OPTIONS", "/v1/messages",
                                [("Origin", APP.upper())] + PREFLIGHT[1:])
        self.assertEqual(status, 204)
        self.assert_unharmed()

    async def test_a_preflight_from_another_origin_is_refused(self):
        for origin in ("https://evil.example", APP + ".evil", "null"):
            with self.subTest(origin=origin):
                status, h, body = self.raw("OPTIONS", PATH, [("Origin", origin)] + PREFLIGHT[1:])
                self.assertEqual(status, 403)
                self.assertNotIn("access-control-allow-origin", h)
                self.assertIn(b'"forbidden"', body)
        self.assert_unharmed()

    async def test_options_that_is_no_preflight_stays_refused(self):
        cases = {
            "no request method": [("Origin", APP)],
            "a body": PREFLIGHT + [("Content-Length", "5")],
            "chunked": PREFLIGHT + [("Transfer-Encoding", "chunked")],
        }
        for name, headers in cases.items():
            with self.subTest(case=name):
                body = b"hello" if name == "a body" else b""
                status, h, _ = self.raw("OPTIONS", PATH, headers, body)
                self.assertIn(status, (400, 405), (name, status))
                self.assertNotIn("access-control-allow-origin", h)
        # outside /v1: no preflight either
        status, h, _ = self.raw("OPTIONS", "/healthz", PREFLIGHT)
        self.assertEqual(status, 405)
        self.assertNotIn("access-control-allow-origin", h)
        self.assert_unharmed()

    def read_all(self, sock):
        data = b""
        sock.settimeout(10)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    async def test_hostile_preflights(self):
        """At the byte level: a preflight split over writes is answered once; one pipelined
        with a GET behind it is answered alone and the connection closes (the GET never
        runs); an Origin longer than any that could be listed is refused."""
        port = self.herald.port
        raw = request("OPTIONS", PATH, PREFLIGHT)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for i in range(0, len(raw), 7):
                s.sendall(raw[i:i + 7])
                time.sleep(0.002)
            data = self.read_all(s)
        self.assertEqual(data.count(b"HTTP/1.1 "), 1, data)
        self.assertTrue(data.startswith(b"HTTP/1.1 204"), data[:200])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(raw + request("GET", PATH + "?since=0", [("Origin", APP)]))
            data = self.read_all(s)
        self.assertEqual(data.count(b"HTTP/1.1 "), 1, data)
        self.assertTrue(data.startswith(b"HTTP/1.1 204"), data[:200])
        long_origin = "https://" + "a" * 600 + ".example"
        status, h, _ = self.raw("OPTIONS", PATH, [("Origin", long_origin)] + PREFLIGHT[1:])
        self.assertEqual(status, 403)
        self.assertNotIn("access-control-allow-origin", h)
        self.assertEqual(self.herald.metric("herald_client_errors_total",
                                            {"code": "forbidden"}), 1)
        self.assert_unharmed()

    async def test_answers_carry_the_headers_for_a_listed_origin_only(self):
        # no database: the catch-up answers 503 with Retry-After, which a page may read
        status, h, _ = self.raw("GET", PATH + "?since=0", [("Origin", APP)])
        self.assertEqual(status, 503)
        self.assertEqual(h["access-control-allow-origin"], APP)
        self.assertEqual(h["vary"], "origin")
        self.assertEqual(h["access-control-expose-headers"],
                         "retry-after, stream-next-offset, stream-cursor, stream-up-to-date")
        self.assertEqual(h["retry-after"], "1")
        for headers in ([("Origin", "https://evil.example")], []):
            status, h, _ = self.raw("GET", PATH + "?since=0", headers)
            self.assertEqual(status, 503)
            self.assertNotIn("access-control-allow-origin", h)
        self.assert_unharmed()


class TestCorsOff(CorsBase):
    async def test_without_origins_a_preflight_is_a_refused_method(self):
        status, h, _ = self.raw("OPTIONS", PATH, PREFLIGHT)
        self.assertEqual(status, 405)
        self.assertNotIn("access-control-allow-origin", h)
        status, h, _ = self.raw("GET", PATH + "?since=0", [("Origin", APP)])
        self.assertNotIn("access-control-allow-origin", h)
        self.assert_unharmed()


if __name__ == "__main__":
    harness.main()
