#!/usr/bin/python3
"""Liveness: a WebSocket ping goes to a client that has sent nothing for HERALD_PING_INTERVAL,
and a client that answers nothing within HERALD_PONG_TIMEOUT is hung up on (counted in
herald_ping_timeouts_total); a quiet client that answers stays connected as long as it likes;
an idle HTTP keep-alive connection is closed after HERALD_HTTP_IDLE_TIMEOUT. Raw sockets, so
that the test decides exactly what the client reads and answers."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from rawws import OP_PING, OP_PONG, OP_TEXT  # noqa: E402

INTERVAL = 1.0  # --ping-interval
TIMEOUT = 1.0  # --pong-timeout
SWEEP = 1.0  # the liveness sweep runs once a second
SLACK = 3.0  # a loaded machine, a sanitizer build


class TestLiveness(harness.HeraldTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.herald = self.start_herald(self.redis, "--ping-interval", "1s", "--pong-timeout", "1s",
                                        "--http-idle-timeout", "2s")
        self.herald.wait_ready()

    def assert_alive(self):
        self.assertEqual(self.herald.healthz(), 200)
        self.assertTrue(self.herald.alive())

    async def test_a_client_that_never_reads_or_answers_is_hung_up_on(self):
        """Handshake, then silence: no read, no pong. Closed within interval + timeout (plus
        the sweep's second); a second client that answers is untouched."""
        dead = self.raw_ws(self.herald)
        live = self.raw_ws(self.herald)
        live.send_json({"op": "subscribe", "channel": "room"})
        self.assertEqual(live.recv_json(timeout=5)["op"], "subscribed")
        self.herald.wait_metric("herald_connections", lambda v: v == 2)
        t0 = time.monotonic()
        # the live client answers every ping (recv_message does) while it waits
        while self.herald.metric("herald_ping_timeouts_total") < 1:
            self.assertLess(time.monotonic() - t0, INTERVAL + TIMEOUT + 2 * SWEEP + SLACK,
                            "the silent client was not hung up on in time")
            try:
                live.recv_message(timeout=0.2)
            except socket.timeout:
                pass
        self.herald.wait_metric("herald_connections", lambda v: v == 1)
        self.assertEqual(self.herald.metric("herald_ping_timeouts_total"), 1)
        # what the silent client had been sent: the ping, then nothing but the end
        dead.sock.settimeout(5)
        fin, op, payload = dead.recv_frame()
        self.assertEqual((fin, op, payload), (True, OP_PING, b"herald"))
        with self.assertRaises((EOFError, ConnectionResetError)):
            dead.recv_frame()
        # the one that answered is still subscribed and gets messages
        self.redis.publish("room", '{"n":1}')
        while True:
            op, payload = live.recv_message(timeout=5)
            if op == OP_TEXT:
                break
        self.assertIn(b'"n":1', payload)
        self.assert_alive()

    async def test_a_quiet_client_that_answers_stays_across_many_intervals(self):
        """A subscribed client that sends nothing but pongs for six intervals: pinged about
        once per interval plus timeout, never dropped, and still delivered to."""
        ws = self.raw_ws(self.herald)
        ws.send_json({"op": "subscribe", "channel": "quiet"})
        self.assertEqual(ws.recv_json(timeout=5)["op"], "subscribed")
        pings, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 6 * INTERVAL:
            try:
                fin, op, payload = ws.recv_frame(timeout=0.2)
            except socket.timeout:
                continue
            self.assertEqual(op, OP_PING)
            pings += 1
            ws.send_frame(OP_PONG, payload)
        self.assertGreaterEqual(pings, 2)
        self.assertLessEqual(pings, 7)
        self.assertEqual(self.herald.metric("herald_ping_timeouts_total"), 0)
        self.assertEqual(self.herald.metric("herald_connections"), 1)
        self.redis.publish("quiet", '{"still":"here"}')
        op, payload = ws.recv_message(timeout=5)
        self.assertEqual(op, OP_TEXT)
        self.assertIn(b'"still":"here"', payload)
        self.assert_alive()

    async def test_a_client_that_talks_is_not_pinged(self):
        """Messages count as signs of life: a client that sends a ping op every half
        interval gets pongs (the op) and never a WebSocket ping."""
        ws = self.raw_ws(self.herald)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4 * INTERVAL:
            ws.send_json({"op": "ping"})
            fin, op, payload = ws.recv_frame(timeout=5)
            self.assertEqual(op, OP_TEXT, "a WebSocket ping came to a client that talks")
            time.sleep(INTERVAL / 2)
        self.assertEqual(self.herald.metric("herald_pings_sent_total"), 0)

    async def test_an_idle_http_keep_alive_connection_is_closed(self):
        """After an answer, a keep-alive connection that sends nothing more is closed after
        --http-idle-timeout (2 s), not left open."""
        s = socket.create_connection(("127.0.0.1", self.herald.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data, t0, eof = b"", None, False
        while True:
            chunk = s.recv(4096)
            if not chunk:
                eof = True
                break
            data += chunk
            if t0 is None and b"\r\n\r\n" in data:
                t0 = time.monotonic()
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
        self.assertTrue(eof)
        waited = time.monotonic() - t0
        self.assertGreaterEqual(waited, 1.5, "closed before the idle timeout")
        self.assertLess(waited, 2 + SLACK, "an idle keep-alive connection stayed open")
        self.assert_alive()


if __name__ == "__main__":
    harness.main()
