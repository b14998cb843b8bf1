#!/usr/bin/python3
"""Drain: on SIGTERM herald stops being ready (/readyz 503), closes every WebSocket client with
1001, spread evenly over most of the window, and exits with status 0 within --drain-seconds
(plus slack), also when a client never answers the close handshake."""

import asyncio
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import subscribe  # noqa: E402

DRAIN_SECONDS = 4
SLACK = 10  # loaded machines; a sanitizer build is slow to exit


class TestDrain(harness.HeraldTestCase):
    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.herald = self.start_herald(self.redis, "--drain-seconds", str(DRAIN_SECONDS),
                                        "--heartbeat-ms", "200")
        self.herald.wait_ready()

    def poll_readyz_after_sigterm(self, t0, results):
        """Poll /readyz until a 503 is seen or the process is gone."""
        while time.monotonic() - t0 < DRAIN_SECONDS + SLACK:
            try:
                status = self.herald.readyz()
            except OSError as exc:  # listener closed / process gone
                results.append((time.monotonic() - t0, repr(exc)))
                if not self.herald.alive():
                    return
                time.sleep(0.02)
                continue
            results.append((time.monotonic() - t0, status))
            if status == 503:
                return
            time.sleep(0.02)

    async def test_sigterm_drains_and_exits(self):
        h = self.herald
        clients = [await self.connect(h) for _ in range(3)]
        for n, ws in enumerate(clients):
            await subscribe(ws, f"drain:{n}")
        # A client that completes the handshake and then never reads nor answers the close.
        stubborn = self.raw_ws(h, rcvbuf=4096)
        stubborn.send_json({"op": "subscribe", "channel": "drain:0"})
        self.assertEqual(stubborn.recv_json(timeout=20).get("op"), "subscribed")
        self.assertEqual(h.metric("herald_connections"), 4)

        t0 = time.monotonic()
        h.signal(signal.SIGTERM)
        readyz = []
        poller = asyncio.create_task(
            asyncio.to_thread(self.poll_readyz_after_sigterm, t0, readyz))

        closes = await asyncio.gather(*(harness.wait_close(ws, DRAIN_SECONDS + SLACK)
                                        for ws in clients))
        for n, (code, reason, frames) in enumerate(closes):
            self.assertEqual(code, 1001, f"client {n}: close code {code} reason {reason!r}")

        status = await asyncio.to_thread(h.wait_exit, DRAIN_SECONDS + SLACK)
        elapsed = time.monotonic() - t0
        await poller
        self.assertIsNotNone(status, f"herald still running {elapsed:.1f}s after SIGTERM "
                             f"(--drain-seconds {DRAIN_SECONDS})")
        self.assertEqual(status, 0, "exit status after drain")

        # /readyz never said 200 once the drain had visibly started, and did say 503 unless
        # the process was already gone.
        statuses = [s for _, s in readyz]
        self.assertTrue(statuses, "no /readyz poll happened")
        if 503 in statuses:
            after = statuses[statuses.index(503):]
            self.assertNotIn(200, after)
        else:
            self.assertFalse(any(s == 200 for s in statuses[3:]),
                             f"/readyz kept answering 200 during drain: {readyz}")
            self.assertNotEqual(statuses[-1], 200, f"/readyz: {readyz}")

        # The stubborn client got a 1001 close frame, or at least its connection ended.
        _, code, how = await asyncio.to_thread(stubborn.read_until_closed, 10)
        self.assertNotEqual(how, "timeout", "stubborn client's connection not closed")
        if how == "close-frame":
            self.assertEqual(code, 1001)

    async def test_readyz_503_during_drain_window(self):
        """With a client that does not answer the close, the drain lasts a while: /readyz must
        answer 503 (not 200) while the process is still up."""
        h = self.herald
        stubborn = self.raw_ws(h, rcvbuf=4096)
        stubborn.send_json({"op": "ping"})
        self.assertEqual(stubborn.recv_json(timeout=20), {"op": "pong"})
        t0 = time.monotonic()
        h.signal(signal.SIGTERM)
        readyz = []
        await asyncio.to_thread(self.poll_readyz_after_sigterm, t0, readyz)
        statuses = [s for _, s in readyz]
        self.assertTrue(503 in statuses or not h.alive(),
                        f"/readyz after SIGTERM: {readyz}")
        if 503 in statuses:
            # "quickly": well before the drain deadline.
            t503 = next(t for t, s in readyz if s == 503)
            self.assertLess(t503, DRAIN_SECONDS, f"/readyz went 503 only after {t503:.1f}s")
        status = await asyncio.to_thread(h.wait_exit, DRAIN_SECONDS + SLACK)
        self.assertEqual(status, 0, "herald did not exit cleanly within the drain window")

    async def test_the_drain_closes_clients_evenly_over_the_window(self):
        """200 clients: each gets 1001 "server draining", spread over the first four fifths of
        the drain window (not all in one moment), and the last before the window ends; the
        ones still waiting keep getting live messages."""
        h = self.herald
        clients = [await self.connect(h) for _ in range(200)]
        for ws in clients:
            await subscribe(ws, "drain:all")
        h.wait_metric("herald_connections", lambda v: v == 200)
        t0 = time.monotonic()
        h.signal(signal.SIGTERM)

        async def closed_at(ws):
            code, reason, frames = await harness.wait_close(ws, DRAIN_SECONDS + SLACK)
            return time.monotonic() - t0, code, reason, frames

        waits = [asyncio.create_task(closed_at(ws)) for ws in clients]
        await asyncio.sleep(DRAIN_SECONDS / 4)
        self.redis.publish("drain:all", '{"during":"drain"}')
        closes = await asyncio.gather(*waits)
        self.assertTrue(all(code == 1001 for _, code, _, _ in closes),
                        {(c, r) for _, c, r, _ in closes})
        self.assertTrue(all(r == "server draining" for _, _, r, _ in closes))
        later = [f for t, _, _, f in closes if t > DRAIN_SECONDS / 4 + 0.5]
        self.assertTrue(later, "every client was closed in the first quarter")
        self.assertTrue(all(any("during" in m for m in f) for f in later),
                        "a client still waiting for its turn missed a live message")
        times = sorted(t for t, _, _, _ in closes)
        spread = DRAIN_SECONDS * 4 / 5
        self.assertGreater(times[-1] - times[0], spread / 2,
                           f"closes between {times[0]:.2f} and {times[-1]:.2f} s: not spread")
        self.assertLess(times[-1], DRAIN_SECONDS + 1, "the last close came after the window")
        # evenly: no tenth of the spread closes more than a quarter of the clients
        for k in range(10):
            lo, hi = spread * k / 10, spread * (k + 1) / 10
            n = sum(1 for t in times if lo <= t < hi)
            self.assertLessEqual(n, 50, f"{n} closes between {lo:.1f} and {hi:.1f} s")
        status = await asyncio.to_thread(h.wait_exit, DRAIN_SECONDS + SLACK)
        self.assertEqual(status, 0)

    async def test_a_lone_client_is_closed_at_once(self):
        """Client i of N is due at i/N of the spread, so the first goes at once: an instance
        with one client is not kept for four fifths of the window (3.2 s here) before its
        close, nor before its exit."""
        h = self.herald
        ws = await self.connect(h)
        await subscribe(ws, "drain:lone")
        h.wait_metric("herald_connections", lambda v: v == 1)
        t0 = time.monotonic()
        h.signal(signal.SIGTERM)
        code, reason, _ = await harness.wait_close(ws, DRAIN_SECONDS + SLACK)
        closed_after = time.monotonic() - t0
        self.assertEqual((code, reason), (1001, "server draining"))
        self.assertLess(closed_after, DRAIN_SECONDS * 4 / 5 / 2,
                        f"the only client was closed {closed_after:.2f} s after SIGTERM")
        status = await asyncio.to_thread(h.wait_exit, DRAIN_SECONDS + SLACK)
        self.assertEqual(status, 0)

    async def test_sigterm_without_clients_exits_promptly(self):
        status = await asyncio.to_thread(self._term_and_wait)
        self.assertEqual(status, 0)

    def _term_and_wait(self):
        self.herald.signal(signal.SIGTERM)
        return self.herald.wait_exit(DRAIN_SECONDS + SLACK)


if __name__ == "__main__":
    harness.main()
