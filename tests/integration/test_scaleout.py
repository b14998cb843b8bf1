#!/usr/bin/python3
"""Scale-out: three herald processes behind nginx (Debian's package, the project's own
deploy/nginx/herald.conf), one Redis, one PostgreSQL, dozens of WebSocket clients connected
through nginx.

A publisher publishes durably the whole time, in turn through nginx and straight to each
instance. First every client gets every message; then one instance is killed with SIGKILL in
the middle of the stream (its clients reconnect through nginx and resume), started again on the
same port; then a rolling restart (SIGTERM, drain, start again, one instance after the other).
At the end every client holds every seq of the channel exactly once, in order, and the data of
each seq is what the publisher sent. No sticky sessions: a client lands on whichever instance
nginx picks and resumes there. Also: nginx's access log names paths without their query strings
(where ?token= carries a JWT or the API key)."""

import asyncio
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import websockets  # noqa: E402

from durable_clients import Client, Publisher, post  # noqa: E402
from harness import (HeraldTestCase, async_wait_for, close_quietly, main,  # noqa: E402
                     raise_nofile, ws_connect)
from nginx import Nginx, start_nginx  # noqa: E402
from pg import HistoryTestCase  # noqa: E402

CHANNEL = "fleet:status"
CLIENTS = 36
INSTANCES = 3
DRAIN_SECONDS = 5
PUBLISH_INTERVAL = 0.03   # ~30 messages a second, the whole time
WAIT = 40                 # bound of every wait (a sanitizer build is slow)
VERBOSE = bool(os.environ.get("HERALD_TEST_VERBOSE"))


class ScaleOutTest(HistoryTestCase):
    async def asyncSetUp(self):
        raise_nofile(4096)
        self.phase = "setup"
        self.redis = self.start_redis()
        self.pg = self.start_postgres()
        self.instances = [self.start_instance(n) for n in range(INSTANCES)]
        for h in self.instances:
            await asyncio.to_thread(h.wait_ready, WAIT)
        self.nginx = start_nginx(self, [f"127.0.0.1:{h.port}" for h in self.instances])
        self.clients = []
        self.addAsyncCleanup(self.stop_clients)

    def start_instance(self, n, port=None):
        h = self.start_herald_with_history(
            self.redis, self.pg, "--instance-id", f"herald-{n}",
            "--drain-seconds", str(DRAIN_SECONDS), port=port)
        h.n = n
        return h

    async def restart_instance(self, n):
        old = self.instances[n]
        h = await asyncio.to_thread(self.start_instance, n, old.port)
        await asyncio.to_thread(h.wait_ready, WAIT)
        self.instances[n] = h
        return h

    async def stop_clients(self):
        await asyncio.gather(*(c.stop() for c in self.clients))

    def _print_logs_if_failed(self):
        super()._print_logs_if_failed()
        if self._failed() or os.environ.get("HERALD_TEST_SHOW_LOGS"):
            for p in self._procs:
                if isinstance(p, Nginx):
                    sys.stderr.write(f"\n----- nginx log (port {p.port}) -----\n"
                                     f"{p.log_text(tail_lines=150)}\n----- end -----\n")

    # ---- helpers

    async def until(self, predicate, what, timeout=WAIT):
        return await async_wait_for(predicate, timeout, interval=0.05, what=what)

    def gauges(self):
        return [h.metric("herald_connections") for h in self.instances]

    async def settled(self, what):
        """Waits until every client is joined and the instances hold exactly one connection
        per client; returns the connection gauge of each instance."""
        await self.until(lambda: all(c.subscribed for c in self.clients),
                         f"every client joined ({what})")
        gauges = []

        def check():
            gauges[:] = self.gauges()
            return sum(gauges) == CLIENTS

        try:
            await self.until(lambda: check(), f"one connection per client ({what})")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; gauges {gauges}") from None
        return gauges

    async def caught_up(self, what):
        """Waits until every client holds everything acknowledged to the publisher now."""
        self.assertIsNone(self.publisher.fatal)
        head = self.publisher.head
        await self.until(lambda: min(c.last for c in self.clients) >= head,
                         f"every client at seq {head} ({what})")
        return head

    async def back_in_service(self, i):
        """Waits until nginx sends requests to instance i again. It has no connection yet, so
        least_conn picks it as soon as nginx no longer counts it as failed (fail_timeout)."""
        name = f"herald-{i}"

        def answered_by_it():
            status, _, body = self.nginx.get("/healthz", timeout=5)
            return status == 200 and json.loads(body)["instance"] == name

        await self.until(answered_by_it, f"nginx sending requests to the restarted {name}")

    def disconnects(self, phase):
        return [(c.idx, why) for c in self.clients for p, why in c.disconnects if p == phase]

    def log(self, text):
        if VERBOSE:
            sys.stderr.write(f"\n[{time.strftime('%H:%M:%S')}] {text}")

    # ---- the test

    async def test_every_client_gets_every_seq_once_through_kill_and_rolling_restart(self):
        n = self.nginx

        # nginx reaches every instance (least_conn with no open connection: in turn)
        seen = set()
        for _ in range(3 * INSTANCES):
            status, _, body = await asyncio.to_thread(n.get, "/healthz")
            self.assertEqual(status, 200)
            seen.add(json.loads(body)["instance"])
        self.assertEqual(seen, {f"herald-{i}" for i in range(INSTANCES)})
        # /metrics is for the scraper, straight from each instance, not for the public side
        self.assertEqual((await asyncio.to_thread(n.get, "/metrics"))[0], 403)

        # the channel has a history (and so an epoch) before the clients come
        self.publisher = Publisher(
            [("nginx", n.base)] + [(f"herald-{h.n}", h.base) for h in self.instances], CHANNEL,
            wait=WAIT, interval=PUBLISH_INTERVAL)
        self.assertTrue(await asyncio.to_thread(self.publisher.publish, 0))

        # dozens of clients through nginx, spread by it over the three instances
        for i in range(CLIENTS):
            c = Client(i, n.ws_url, self, CHANNEL)
            c.task = asyncio.create_task(c.run())
            self.clients.append(c)
        gauges = await self.settled("start")
        self.log(f"connections per instance: {gauges}")
        for i, g in enumerate(gauges):
            self.assertGreater(g, 0, f"nginx sent no client to herald-{i}: {gauges}")
        self.assertTrue(all(c.last == 1 and c.epoch for c in self.clients))

        self.publisher.start()
        self.addCleanup(self.publisher.halt.set)
        self.phase = "live"
        await self.until(lambda: self.publisher.head >= 30, "30 messages published")
        await self.caught_up("live")

        # ---- SIGKILL one instance in mid-stream
        gauges = await self.settled("before kill")
        victim = max(range(INSTANCES), key=lambda i: gauges[i])
        on_victim = gauges[victim]
        self.log(f"killing herald-{victim} with {on_victim} clients; gauges {gauges}")
        self.phase = "kill"
        head_at_kill = self.publisher.head
        await asyncio.to_thread(self.instances[victim].kill)
        await self.until(lambda: len(self.disconnects("kill")) >= on_victim,
                         f"the {on_victim} clients of the killed instance cut off")
        await self.until(lambda: self.publisher.head >= head_at_kill + 30,
                         "30 messages published after the kill")
        await self.caught_up("after the kill")
        cut = self.disconnects("kill")
        self.assertEqual(len(cut), on_victim, f"clients cut off by the kill: {cut}")
        self.assertEqual(len({i for i, _ in cut}), on_victim)
        for i, _ in cut:
            self.assertGreaterEqual(self.clients[i].joins, 2,
                                    f"client {i} did not join again after the kill")
        self.log(f"kill: {on_victim} clients reconnected; close codes "
                 f"{sorted({str(w) for _, w in cut})}")

        # the killed instance comes back on its port (nginx's upstream list is static), and
        # nginx puts it back into service by itself
        await self.restart_instance(victim)
        await self.back_in_service(victim)
        await self.settled("after the restart of the killed instance")

        # ---- rolling restart: SIGTERM, drain, start again, one after the other (each time
        # the instance with the most clients among those not restarted yet)
        todo = set(range(INSTANCES))
        while todo:
            gauges = await self.settled("before the next restart")
            i = max(sorted(todo), key=lambda j: gauges[j])
            todo.discard(i)
            phase = f"roll-{i}"
            self.phase = phase
            head_before = self.publisher.head
            h = self.instances[i]
            self.log(f"SIGTERM herald-{i} with {gauges[i]} clients; gauges {gauges}")
            h.signal(signal.SIGTERM)
            status = await asyncio.to_thread(h.wait_exit, DRAIN_SECONDS + 15)
            self.assertEqual(status, 0, f"herald-{i} exit status after drain")
            await self.until(lambda: len(self.disconnects(phase)) >= gauges[i],
                             f"herald-{i}'s {gauges[i]} clients closed")
            await self.restart_instance(i)
            await self.back_in_service(i)
            await self.until(lambda: self.publisher.head >= head_before + 10,
                             "publishing goes on")
            await self.caught_up(f"after restarting herald-{i}")
            closed = self.disconnects(phase)
            self.assertEqual(len(closed), gauges[i], f"{phase}: {closed}")
            # a draining instance says goodbye with 1001 (through nginx, unchanged)
            self.assertEqual({why for _, why in closed} - {1001}, set(), f"{phase}: {closed}")
            self.assertGreater(len(closed), 0, f"{phase}: herald-{i} had no client to move")
        await self.settled("after the rolling restart")

        # ---- the end: stop publishing; what PostgreSQL holds is what every client must hold
        self.phase = "end"
        self.publisher.halt.set()
        await asyncio.to_thread(self.publisher.join, WAIT)
        self.assertFalse(self.publisher.is_alive())
        self.assertIsNone(self.publisher.fatal)
        status, _, body = await asyncio.to_thread(
            n.get, f"/v1/channels/{CHANNEL}/messages?since={self.publisher.head}")
        self.assertEqual(status, 200, body)
        page = json.loads(body)
        head = page["seq"]
        self.assertEqual(page["messages"], [])
        self.assertFalse(page["more"])
        # each published message got exactly one seq, retries included
        published = self.publisher.seq_of
        self.assertEqual(head, len(published))
        self.assertEqual(sorted(published.values()), list(range(1, head + 1)))
        self.assertEqual(self.pg.sql(
            f"SELECT count(*) FROM herald_messages WHERE channel = '{CHANNEL}'"), str(head))
        # publishing went through nginx and straight to every instance
        for target, count in self.publisher.by_target.items():
            self.assertGreater(count, 0, f"nothing published through {target}")

        await self.until(lambda: min(c.last for c in self.clients) >= head,
                         f"every client at the final head {head}")
        await self.stop_clients()
        expected = list(range(1, head + 1))
        k_of = {seq: k for k, seq in published.items()}
        # nginx hid every dead or draining instance from the clients: each reconnect's first
        # handshake went through (a refused one would be in failed_attempts)
        refused = [(c.idx, p, w) for c in self.clients for p, w in c.failed_attempts]
        self.assertEqual(refused, [])
        for c in self.clients:
            self.assertEqual(c.problems, [], f"client {c.idx}")
            self.assertEqual(c.seqs, expected, f"client {c.idx}: seqs not exactly 1..{head}")
            self.assertEqual(c.data, k_of, f"client {c.idx}: data differs from what was sent")

        # no instance took the live stream racing its head checks for lost history
        for h in self.instances:
            self.assertEqual(h.metric("herald_history_divergences_total"), 0, f"herald-{h.n}")

        reconnects = sum(c.joins - 1 for c in self.clients)
        self.log(f"{head} messages, {CLIENTS} clients, {reconnects} reconnects, "
                 f"{len(self.publisher.failures)} publish retries, publishes per target "
                 f"{self.publisher.by_target}, refused attempts "
                 f"{[(p, w) for c in self.clients for p, w in c.failed_attempts]}\n")

    async def test_a_draining_instance_refuses_handshakes_and_nginx_sends_them_elsewhere(self):
        n = self.nginx
        h0 = self.instances[0]
        # a client straight on herald-0 that never answers the close keeps it draining for
        # DRAIN_SECONDS
        stubborn = self.raw_ws(h0, rcvbuf=4096)
        stubborn.send_json({"op": "subscribe", "channel": CHANNEL})
        self.assertEqual(stubborn.recv_json(timeout=WAIT).get("op"), "subscribed")
        t0 = time.monotonic()
        h0.signal(signal.SIGTERM)
        await self.until(lambda: h0.readyz() == 503, "herald-0 draining")
        rejected_before = h0.metric("herald_rejected_connections_total")
        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as refused:
            await ws_connect(h0.ws_url)
        self.assertEqual(refused.exception.status_code, 503)

        # handshakes through nginx: in turn over the three, so herald-0 gets asked, refuses
        # with 503, and nginx tries the next instance (proxy_next_upstream http_503)
        clients = []
        for i in range(2 * INSTANCES):
            ws = await self.connect(n.ws_url)
            await ws.send(json.dumps({"op": "subscribe", "channel": CHANNEL}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            self.assertEqual(reply.get("op"), "subscribed", reply)
            clients.append(ws)
        self.assertLess(time.monotonic() - t0, DRAIN_SECONDS, "herald-0 stopped draining early")
        self.assertGreater(h0.metric("herald_rejected_connections_total"), rejected_before,
                           "nginx never asked the draining instance")
        self.assertEqual(h0.metric("herald_connections"), 1)  # the stubborn one only
        others = self.instances[1:]
        self.assertEqual(sum(h.metric("herald_connections") for h in others), len(clients))
        # /v1 goes on being served during the drain, whichever instance nginx picks
        for k in range(INSTANCES):
            status, body = await asyncio.to_thread(post, n.base, CHANNEL, {"k": k}, f"d-{k}")
            self.assertEqual(status, 201, body)
        # the clients that came through nginx get what was published
        for ws in clients:
            got = [json.loads(await asyncio.wait_for(ws.recv(), WAIT)) for _ in range(INSTANCES)]
            self.assertEqual([m["data"]["k"] for m in got], list(range(INSTANCES)))
        # nginx logs a WebSocket request when it ends: one shows the 503 and the retry
        for ws in clients:
            await close_quietly(ws)
        await self.until(lambda: "upstream_status=503, 101" in n.log_text(),
                         "nginx's access log line of a handshake retried after a 503")
        self.assertEqual(await asyncio.to_thread(h0.wait_exit, DRAIN_SECONDS + 15), 0)

    async def test_a_postgresql_outage_does_not_take_the_instances_out_of_service(self):
        n = self.nginx
        self.assertIsNotNone(await asyncio.to_thread(self.pg.stop_fast))
        # every instance answers /v1 with 503 now (the history is shared: retrying elsewhere
        # cannot help), and nginx passes the 503 on...
        answers = []

        def unavailable_six_times():
            status, _, _ = n.get(f"/v1/channels/{CHANNEL}/messages", timeout=5)
            answers.append(status)
            return answers[-2 * INSTANCES:] == [503] * (2 * INSTANCES)

        try:
            await self.until(unavailable_six_times, "/v1 answering 503 through nginx")
        except AssertionError as exc:  # 502: nginx counted the 503s as instance failures
            raise AssertionError(f"{exc}; answers {answers[-12:]}") from None
        # ...without counting it as an instance failure: all three still get requests and
        # WebSocket clients (live delivery does not need PostgreSQL)
        seen = set()
        for _ in range(3 * INSTANCES):
            status, _, body = await asyncio.to_thread(n.get, "/healthz")
            self.assertEqual(status, 200, f"after {answers}")
            seen.add(json.loads(body)["instance"])
        self.assertEqual(seen, {f"herald-{i}" for i in range(INSTANCES)})
        for _ in range(INSTANCES):
            ws = await self.connect(n.ws_url)
            await ws.send(json.dumps({"op": "subscribe", "channel": CHANNEL}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            self.assertEqual(reply.get("op"), "subscribed", reply)
        self.assertNotIn("no live upstreams", n.log_text())


class AccessLogTest(HeraldTestCase):
    async def test_query_strings_stay_out_of_the_access_log(self):
        h = self.start_herald(self.start_redis())
        n = start_nginx(self, [f"127.0.0.1:{h.port}"])
        secret = "token-not-for-logs-7f3a"
        self.assertEqual(n.get(f"/healthz?token={secret}")[0], 200)
        ws = await self.connect(f"{n.ws_url}?token={secret}&x=1")
        await ws.close()
        # nginx logs a request when it ends; a WebSocket when it closes
        await async_wait_for(lambda: "/healthz" in n.log_text() and "/ws" in n.log_text(),
                             WAIT, what="nginx's access log lines")
        log = n.log_text()
        self.assertNotIn(secret, log)
        self.assertIn('"GET /healthz HTTP/1.1" 200', log)
        self.assertIn('"GET /ws HTTP/1.1" 101', log)


if __name__ == "__main__":
    main()
