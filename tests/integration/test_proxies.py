#!/usr/bin/python3
"""Client addresses behind proxies: X-Forwarded-For names the client only when the peer is in
HERALD_TRUSTED_PROXIES (the right-most address that is not a trusted proxy); the per-IP limit
then counts real clients, and a client cannot escape it by writing its own header. Addresses in
HERALD_IP_LIMIT_EXEMPT (by default the private ranges, where balancers sit) are not limited,
so a pod behind one balancer is not capped at HERALD_MAX_CONNECTIONS_PER_IP."""

import os
import sys

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ping  # noqa: E402

LIMIT = 2


class ProxyBase(harness.HeraldTestCase):
    herald_args = ()

    async def asyncSetUp(self):
        self.redis = self.start_redis()
        self.herald = self.start_herald(self.redis, "--max-connections-per-ip", str(LIMIT),
                                        "--rate-limit", "1000", *self.herald_args)
        self.herald.wait_ready()

    async def via(self, xff=None):
        """A WebSocket from 127.0.0.1, with X-Forwarded-For when given."""
        headers = {"X-Forwarded-For": xff} if xff is not None else None
        ws = await self.connect(self.herald, extra_headers=headers)
        await ping(ws)
        return ws

    async def refused(self, xff=None):
        headers = {"X-Forwarded-For": xff} if xff is not None else None
        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
            ws = await harness.ws_connect(self.herald.ws_url, extra_headers=headers)
            await harness.close_quietly(ws)
        self.assertEqual(cm.exception.status_code, 429)


class TestTrustedProxy(ProxyBase):
    herald_args = ("--trusted-proxies", "127.0.0.1", "--ip-limit-exempt", "")

    async def test_the_limit_counts_the_clients_the_proxy_names(self):
        a = [await self.via("198.51.100.1") for _ in range(LIMIT)]
        await self.refused("198.51.100.1")
        # another client behind the same proxy has its own count
        b = [await self.via("198.51.100.2") for _ in range(LIMIT)]
        await self.refused("198.51.100.2")
        # a client that writes its own header: the proxy appended the real address last
        await self.refused("203.0.113.77, 198.51.100.1")
        # the proxy's own hops are skipped
        await self.refused("198.51.100.2, 127.0.0.1")
        # a header filled with forged hops up to the head limit: still the right-most one
        forged = ", ".join(f"203.0.113.{i % 250}" for i in range(400))
        await self.refused(forged + ", 198.51.100.1")
        # no header: the proxy itself, limited like anyone
        c = [await self.via() for _ in range(LIMIT)]
        await self.refused()
        self.assertEqual(self.herald.metric("herald_connections"), 3 * LIMIT)
        # a slot frees when its client leaves
        await a.pop().close()
        self.herald.wait_metric("herald_connections", lambda v: v == 3 * LIMIT - 1)
        a.append(await self.via("198.51.100.1"))
        for ws in a + b + c:
            await ping(ws)
        self.assertEqual(self.herald.healthz(), 200)


class TestUntrustedPeer(ProxyBase):
    herald_args = ("--trusted-proxies", "10.0.0.0/8", "--ip-limit-exempt", "")

    async def test_a_header_from_an_untrusted_peer_is_ignored(self):
        """127.0.0.1 is no trusted proxy: whatever it writes, it is counted as itself."""
        first = await self.via("198.51.100.1")
        second = await self.via("198.51.100.2")
        await self.refused("198.51.100.3")
        await self.refused()
        for ws in (first, second):
            await ping(ws)


class TestExemptRanges(ProxyBase):
    herald_args = ("--ip-limit-exempt", "127.0.0.0/8")

    async def test_an_exempt_address_is_not_limited(self):
        """A balancer's address (here 127.0.0.1) in HERALD_IP_LIMIT_EXEMPT: its connections
        are not capped at the per-IP limit."""
        clients = [await self.via() for _ in range(3 * LIMIT)]
        self.assertEqual(self.herald.metric("herald_connections"), 3 * LIMIT)
        for ws in clients:
            await ping(ws)


class TestDefaults(ProxyBase):
    async def test_by_default_no_header_is_trusted_and_loopback_is_limited(self):
        """No HERALD_TRUSTED_PROXIES: X-Forwarded-For changes nothing; the default exempt
        list holds only the private ranges, so 127.0.0.1 is limited."""
        first = await self.via("198.51.100.1")
        second = await self.via("198.51.100.2")
        await self.refused("198.51.100.3")
        for ws in (first, second):
            await ping(ws)


if __name__ == "__main__":
    harness.main()
