"""Host names are looked up off the event loop. With a resolver that takes 2 s for
*.slow.test (an LD_PRELOAD shim, slowdns.c), the gateway keeps answering while it looks up
its Redis server or its PostgreSQL server, at start and at every reconnect, and then
connects to the address."""

import asyncio
import os
import time
import urllib.error
import urllib.request

import harness
from harness import main, ping, recv_json, subscribe
from pg import HistoryTestCase

SLOW_MS = 2000


def slow_env():
    lib = os.environ.get("SLOWDNS_LIB")
    if not lib or not os.path.exists(lib):
        raise AssertionError("SLOWDNS_LIB (the built slowdns shim) is not set: run under ctest")
    asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    # the shim comes first in the library list; the sanitizer runtime must accept that
    return {"LD_PRELOAD": lib, "SLOWDNS_MS": str(SLOW_MS),
            "ASAN_OPTIONS": asan + ":verify_asan_link_order=0"}


def healthz_seconds(h):
    """Seconds /healthz took to answer, or None when nothing listens yet."""
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(h.base + "/healthz", timeout=10) as r:
            r.read()
    except (urllib.error.URLError, ConnectionError):
        return None
    return time.monotonic() - t0


class SlowDnsTest(HistoryTestCase):
    def probe_until_ready(self, h, started):
        """Polls /healthz until /readyz is 200: (seconds to the first answer, slowest answer)."""
        first, worst = None, 0.0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            took = healthz_seconds(h)
            if took is not None:
                first = first if first is not None else time.monotonic() - started
                worst = max(worst, took)
                if h.readyz() == 200:
                    return first, worst
            time.sleep(0.05)
        raise AssertionError("herald never became ready through the slow lookup")

    async def pings_while(self, ws, seconds):
        """Pings every 100 ms for `seconds`; returns the slowest round trip."""
        worst, end = 0.0, time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            await ping(ws, timeout=10)
            worst = max(worst, time.monotonic() - t0)
            await asyncio.sleep(0.1)
        return worst

    async def test_a_slow_redis_lookup_does_not_stall_the_loop(self):
        redis = self.start_redis()
        started = time.monotonic()
        h = self.start_herald(f"redis://redis.slow.test:{redis.port}/0", "--heartbeat-ms", "200",
                              env=slow_env(), wait=False)
        first, worst = await asyncio.to_thread(self.probe_until_ready, h, started)
        # a loop blocked in getaddrinfo would answer nothing for 2 s
        self.assertLess(first, SLOW_MS / 1000 * 0.75, "the first /healthz waited for DNS")
        self.assertLess(worst, 0.5, "a /healthz waited for DNS")
        ws = await self.connect(h)
        await subscribe(ws, "dns")
        self.assertEqual(redis.publish("dns", '{"via":"resolved address"}'), 1)
        self.assertEqual((await recv_json(ws))["data"], {"via": "resolved address"})

        # every reconnect looks the name up again, still off the loop
        redis.kill()
        await harness.async_wait_for(lambda: h.readyz() == 503, 20, 0.05, "/readyz 503")
        self.assertLess(await self.pings_while(ws, 2.5), 0.5, "a ping waited for DNS")
        redis = self.restart_redis(redis)
        await harness.async_wait_for(lambda: h.readyz() == 200, 30, 0.1, "/readyz 200 again")
        self.assertLess(await self.pings_while(ws, 0.5), 0.5)

    async def test_a_slow_postgres_lookup_does_not_stall_the_loop(self):
        redis = self.start_redis()
        pg = self.start_postgres()
        self.herald_cli("migrate", pg=pg)  # a blocking command-line step: not under test
        url = pg.url.replace("127.0.0.1", "db.slow.test")
        h = self.start_herald(redis, "--database-url", url, env=slow_env())
        ws = await self.connect(h)
        # the pool's first connections wait 2 s for the lookup; the loop does not
        self.assertEqual(h.metric("herald_db_up"), 0)
        self.assertLess(await self.pings_while(ws, 1.0), 0.5, "a ping waited for DNS")
        await asyncio.to_thread(h.wait_metric, "herald_db_up", lambda v: v == 1)
        await subscribe(ws, "dbdns")
        await ws.send('{"op":"publish","id":1,"channel":"dbdns","data":{"n":1}}')
        got = {m["op"]: m for m in [await recv_json(ws), await recv_json(ws)]}
        self.assertEqual((got["published"]["seq"], got["message"]["data"]), (1, {"n": 1}))
        # reconnects look the name up again, off the loop
        pg.stop_fast()
        await asyncio.to_thread(h.wait_metric, "herald_db_up", lambda v: v == 0)
        self.assertLess(await self.pings_while(ws, 2.5), 0.5, "a ping waited for DNS")
        self.restart_postgres(pg)
        await asyncio.to_thread(h.wait_metric, "herald_db_up", lambda v: v == 1)


if __name__ == "__main__":
    main()
