#!/usr/bin/python3
"""HTTP side and connection limits: --max-connections (the next handshake gets HTTP 503, counted,
a slot frees when a client leaves), /healthz, /readyz, /metrics in Prometheus text format with
every documented metric, static files from --static-dir, unknown paths 404, no path traversal,
no dotfiles, no symlinks out of the folder, nosniff on every static answer."""

import asyncio
import json
import os
import re
import sys

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ping, subscribe  # noqa: E402

METRICS = {
    "herald_connections": "gauge",
    "herald_subscriptions": "gauge",
    "herald_channels": "gauge",
    "herald_redis_messages_total": "counter",
    "herald_frames_out_total": "counter",
    "herald_bytes_out_total": "counter",
    "herald_invalid_payloads_total": "counter",
    "herald_slow_consumer_closes_total": "counter",
    "herald_redis_reconnects_total": "counter",
    "herald_redis_heartbeat_age_seconds": "gauge",
    "herald_redis_up": "gauge",
    "herald_client_errors_total": "counter",
    "herald_rejected_connections_total": "counter",
}


class TestMaxConnections(harness.HeraldTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.herald = self.start_herald(self.redis, "--max-connections", "5")

    async def expect_refused(self):
        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
            ws = await harness.ws_connect(self.herald.ws_url)
            await harness.close_quietly(ws)
        self.assertEqual(cm.exception.status_code, 503)

    async def test_sixth_connection_refused(self):
        h = self.herald
        rejected0 = h.metric("herald_rejected_connections_total")
        self.assertIsNotNone(rejected0, "herald_rejected_connections_total missing")
        clients = [await self.connect(h) for _ in range(5)]
        for n, ws in enumerate(clients):
            await ping(ws, id=n)
        await self.expect_refused()
        # Probes and scrapes are plain HTTP: still answered at the connection limit.
        self.assertEqual(h.healthz(), 200)
        self.assertEqual(h.readyz(), 200)
        self.assertEqual(h.metric("herald_connections"), 5)
        # Also seen raw: the refusal is an HTTP 503 response, not a dropped socket.
        with self.assertRaises(harness.HandshakeRefused) as cm:
            self.raw_ws(h)
        self.assertEqual(cm.exception.status, 503)
        # Existing clients are unaffected.
        for ws in clients:
            await subscribe(ws, "cap")
        self.assertEqual(self.redis.publish("cap", '{"v":1}'), 1)
        for ws in clients:
            _, msg = await harness.recv_frame(ws)
            self.assertEqual(msg["data"], {"v": 1})

        # One client leaves; a new one gets in.
        await clients.pop().close()
        h.wait_metric("herald_connections", lambda v: v == 4)
        self.assertGreaterEqual(h.metric("herald_rejected_connections_total"), rejected0 + 2)
        newcomer = await self.connect(h)
        await ping(newcomer)
        h.wait_metric("herald_connections", lambda v: v == 5)
        await self.expect_refused()
        h.wait_metric("herald_rejected_connections_total", lambda v: v >= rejected0 + 3)


class TestHttp(harness.HeraldTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.static = os.path.join(self.tmp, "static")
        os.makedirs(os.path.join(self.static, "sub"))
        self.index = b"<!doctype html><title>herald test</title><p>index page</p>\n"
        self.js = b"// herald test script\nconsole.log('x');\n"
        with open(os.path.join(self.static, "index.html"), "wb") as f:
            f.write(self.index)
        with open(os.path.join(self.static, "x.js"), "wb") as f:
            f.write(self.js)
        with open(os.path.join(self.static, "sub", "style.css"), "wb") as f:
            f.write(b"body { color: red; }\n")
        with open(os.path.join(self.tmp, "secret.txt"), "wb") as f:
            f.write(b"TOP-SECRET-CONTENT\n")
        # what must never be served: dotfiles, dot folders, and symlinks leading out of the
        # folder (to a file, through a folder) or to a dotfile; a symlink to a file inside is fine
        os.makedirs(os.path.join(self.static, ".git"))
        os.makedirs(os.path.join(self.tmp, "outside"))
        for name in (".env", ".git/config", "sub/.hidden.css", "outside/secret.txt"):
            base = self.static if not name.startswith("outside") else self.tmp
            with open(os.path.join(base, name), "wb") as f:
                f.write(b"TOP-SECRET-CONTENT\n")
        os.symlink(os.path.join(self.tmp, "secret.txt"), os.path.join(self.static, "leak.txt"))
        os.symlink("../../secret.txt", os.path.join(self.static, "sub", "leak.css"))
        os.symlink(os.path.join(self.tmp, "outside"), os.path.join(self.static, "outside"))
        os.symlink(".env", os.path.join(self.static, "env.txt"))
        os.symlink("x.js", os.path.join(self.static, "alias.js"))
        self.herald = self.start_herald(self.redis, "--static-dir", self.static)
        self.herald.wait_ready()

    async def test_healthz_readyz(self):
        self.assertEqual(self.herald.healthz(), 200)
        self.assertEqual(self.herald.readyz(), 200)
        # the default instance name is host-pid: it tells who answered behind a balancer
        _, _, body = self.herald.get("/healthz")
        health = json.loads(body)
        self.assertIs(health["ok"], True)
        self.assertTrue(health["instance"].endswith("-%d" % self.herald.proc.pid), health)

    async def test_healthz_names_a_given_instance(self):
        h = self.start_herald(self.redis, "--instance-id", 'gw "2"\\')
        _, _, body = h.get("/healthz")
        self.assertEqual(json.loads(body)["instance"], 'gw "2"\\')

    async def test_metrics_format_and_names(self):
        status, headers, body = self.herald.get("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers.get("content-type", "").startswith("text/plain"),
                        headers.get("content-type"))
        text = body.decode("utf-8")
        samples = harness.parse_metrics(text)  # raises on a malformed line
        names = {n for n, _, _ in samples}
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        for name, kind in METRICS.items():
            self.assertIn(name, names, f"{name} missing from /metrics")
            self.assertEqual(types.get(name), kind, f"# TYPE of {name}")
        for n, labels, v in samples:
            if n in METRICS and METRICS[n] == "counter":
                self.assertGreaterEqual(v, 0, n)
        codes = {lab.get("code") for n, lab, _ in samples if n == "herald_client_errors_total"}
        self.assertIn("bad_request", codes)
        self.assertIn("too_large", codes)
        self.assertEqual(self.herald.metric("herald_redis_up"), 1)
        self.assertEqual(self.herald.metric("herald_connections"), 0)
        age = self.herald.metric("herald_redis_heartbeat_age_seconds")
        self.assertGreaterEqual(age, 0)

    async def test_client_error_counter_moves(self):
        before = self.herald.metric("herald_client_errors_total", {"code": "bad_request"})
        ws = await self.connect(self.herald)
        await ws.send("not json")
        reply = await harness.recv_json(ws)
        self.assertEqual(reply.get("code"), "bad_request")
        self.herald.wait_metric("herald_client_errors_total", lambda v: v == before + 1,
                                labels={"code": "bad_request"})
        self.assertEqual(self.herald.metric("herald_connections"), 1)

    async def test_log_lines_are_json(self):
        ws = await self.connect(self.herald)
        await subscribe(ws, "logs")
        await ws.send("not json")
        await harness.recv_json(ws)
        await ws.close()
        status = await asyncio.to_thread(self.herald.stop, 20)
        self.assertEqual(status, 0)
        lines = [ln for ln in self.herald.log_text().splitlines() if ln.strip()]
        self.assertTrue(lines, "herald logged nothing to stderr")
        for ln in lines:
            try:
                obj = json.loads(ln)
            except ValueError:
                self.fail(f"stderr line is not JSON: {ln!r}")
            self.assertIsInstance(obj, dict, ln)

    def raw_get(self, path):
        """GET path as sent (urllib would normalise it), on a connection of its own."""
        req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        return harness.http_raw("127.0.0.1", self.herald.port, req, timeout=5)

    async def test_static_files(self):
        status, headers, body = self.herald.get("/")
        self.assertEqual(status, 200)
        self.assertEqual(body, self.index)
        self.assertIn("text/html", headers.get("content-type", ""))
        self.assertEqual(headers.get("x-content-type-options"), "nosniff")
        status, headers, body = self.herald.get("/x.js")
        self.assertEqual(status, 200)
        self.assertEqual(body, self.js)
        self.assertIn("javascript", headers.get("content-type", ""))
        self.assertEqual(headers.get("x-content-type-options"), "nosniff")
        status, headers, body = self.herald.get("/index.html")
        self.assertEqual((status, body), (200, self.index))
        self.assertEqual(headers.get("x-content-type-options"), "nosniff")
        status, headers, body = self.herald.get("/sub/style.css")
        self.assertEqual((status, body), (200, b"body { color: red; }\n"))
        self.assertIn("text/css", headers.get("content-type", ""))
        self.assertEqual(headers.get("x-content-type-options"), "nosniff")

    async def test_no_dotfiles(self):
        for path in ("/.env", "/.git/config", "/.git/", "/sub/.hidden.css", "/.env?x=1"):
            with self.subTest(path=path):
                status, headers, body = self.raw_get(path)
                self.assertEqual(status, 404, body)
                self.assertEqual(json.loads(body)["error"]["code"], "not_found")
                self.assertEqual(headers.get("x-content-type-options"), "nosniff")

    async def test_symlinks_stay_inside_the_folder(self):
        # a symlink is followed only to a file inside the folder that is no dotfile
        for path in ("/leak.txt", "/sub/leak.css", "/outside/secret.txt", "/env.txt"):
            with self.subTest(path=path):
                status, headers, body = self.raw_get(path)
                self.assertNotIn(b"TOP-SECRET", body)
                self.assertEqual(status, 404, body)
                self.assertEqual(json.loads(body)["error"]["code"], "not_found")
                self.assertEqual(headers.get("x-content-type-options"), "nosniff")
        status, headers, body = self.raw_get("/alias.js")
        self.assertEqual((status, body), (200, self.js))
        self.assertIn("javascript", headers.get("content-type", ""))
        self.assertEqual(headers.get("x-content-type-options"), "nosniff")

    async def test_unknown_paths_404(self):
        for path in ("/nope", "/nope.js", "/sub/missing.css", "/v2/whatever"):
            with self.subTest(path=path):
                try:
                    status, headers, _ = self.herald.get(path, timeout=5)
                except OSError as exc:
                    self.fail(f"GET {path}: no HTTP response ({exc!r}); expected 404")
                self.assertEqual(status, 404)
                self.assertEqual(headers.get("x-content-type-options"), "nosniff")

    async def test_no_path_traversal(self):
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt",
                     "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt"):
            with self.subTest(path=path):
                req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"Connection: close\r\n\r\n").encode()
                try:
                    status, _, body = harness.http_raw("127.0.0.1", self.herald.port, req,
                                                       timeout=3)
                except (OSError, IndexError, ValueError):
                    continue  # connection dropped: nothing leaked
                self.assertNotIn(b"TOP-SECRET", body, f"{path} -> {status}")
                self.assertNotEqual(status, 200, f"{path} -> 200")
        self.assertEqual(self.herald.healthz(), 200)


class TestEnvConfig(harness.HeraldTestCase):
    """Every flag is also a HERALD_* environment variable; flags win."""

    def make_dir(self, name, text):
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write(text)
        return d

    async def test_env_vars_and_flags_win(self):
        redis = self.start_redis()
        env_dir = self.make_dir("from-env", "env-index")
        flag_dir = self.make_dir("from-flag", "flag-index")
        h = self.start_herald(redis, env={"HERALD_STATIC_DIR": env_dir,
                                          "HERALD_MAX_SUBSCRIPTIONS": "1"})
        status, _, body = h.get("/", timeout=5)
        self.assertEqual((status, body), (200, b"env-index"))
        ws = await self.connect(h)
        await subscribe(ws, "one")
        reply = await harness.request(ws, {"op": "subscribe", "channel": "two"})
        self.assertEqual((reply.get("op"), reply.get("code")), ("error", "bad_request"),
                         "HERALD_MAX_SUBSCRIPTIONS=1 from the environment was ignored")
        h2 = self.start_herald(redis, "--static-dir", flag_dir,
                               env={"HERALD_STATIC_DIR": env_dir})
        status, _, body = h2.get("/", timeout=5)
        self.assertEqual((status, body), (200, b"flag-index"), "the flag must win over env")


class TestNoStaticDir(harness.HeraldTestCase):
    async def test_unknown_path_404_without_static_dir(self):
        redis = self.start_redis()
        h = self.start_herald(redis)
        for path in ("/nope", "/x.js", "/index.html"):
            with self.subTest(path=path):
                self.assertEqual(h.get(path, timeout=5)[0], 404)
        self.assertEqual(h.healthz(), 200)


if __name__ == "__main__":
    harness.main()
