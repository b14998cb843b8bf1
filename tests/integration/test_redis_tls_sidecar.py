#!/usr/bin/python3
"""TLS to Redis through a sidecar (docs/OPERATIONS.md, "TLS to Redis"). Debian's hiredis 0.14
has no TLS, so Herald refuses rediss://; a local stunnel in client mode speaks TLS to Redis and
Herald connects to its plaintext end on 127.0.0.1.

The test makes a throwaway CA and a server certificate (CN and SAN localhost) with openssl,
runs Debian's redis-server with TLS only (`--port 0 --tls-port P`, a password) and stunnel
(Debian's stunnel4) in the foreground with the configuration the docs show: verifyChain,
CAfile and checkHost. Then:
- through the sidecar: /readyz 200, a WebSocket client gets a message PUBLISHed over TLS, and
  Redis holds the gateway's connections on its TLS port (it has no other);
- the TLS Redis killed and started again on the same port: the gateway reconnects through the
  same stunnel, resubscribes and delivers again;
- refusals: a stunnel whose CA did not sign the server's certificate, a stunnel whose
  checkHost names another host, and the gateway pointed at the TLS port directly: each leaves
  /readyz at 503 and the client without the message (stunnel logs the rejected certificate).
Every process is stopped by PID in the cleanups."""

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from pki import make_pki  # noqa: E402
from harness import (  # noqa: E402
    DEFAULT_TIMEOUT, RedisConn, RedisError, _Proc, free_port, recv_frame, subscribe,
)

HEARTBEAT = ("--heartbeat-ms", "200")
PASSWORD = "tls-sidecar-test"
# how long a refused sidecar is watched: many reconnect attempts (backoff 100 ms to 5 s) and
# heartbeats (200 ms) fit in it
REFUSED_WATCH_S = 4.0


def wait_started(proc, ready, timeout, what):
    """Poll ready() until true; fail at once, with its log, if the process has exited."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited with {proc.proc.returncode}:\n"
                                 f"{proc.log_text(30)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}:\n"
                                 f"{proc.log_text(30)}")
        time.sleep(0.05)


class TlsRedisConn(RedisConn):
    """RedisConn over TLS, verifying the server against `cafile` as host `localhost`."""

    def __init__(self, port, cafile, password=PASSWORD, timeout=10.0):
        ctx = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        except Exception:
            raw.close()
            raise
        self.buf = b""
        if password:
            self.command("AUTH", password)


class TlsRedis(_Proc):
    """Debian's redis-server with TLS only: no plain port (`--port 0`), `--tls-port`."""
    name = "redis-server (TLS)"

    def __init__(self, workdir, pki, port=None):
        super().__init__(workdir)
        self.pki = pki
        self.port = port or free_port()
        self.dir = os.path.join(workdir, f"redis-tls-{self.port}")
        os.makedirs(self.dir, exist_ok=True)

    def start(self, timeout=DEFAULT_TIMEOUT):
        argv = [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port", "0",
            "--tls-port", str(self.port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", self.pki["server.crt"],
            "--tls-key-file", self.pki["server.key"],
            "--tls-ca-cert-file", self.pki["ca.crt"],
            "--tls-auth-clients", "no",
            "--requirepass", PASSWORD,
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", self.dir,
        ]
        self._spawn(argv, f"redis-tls-{self.port}.log")

        def ready():
            try:
                with self.conn(timeout=2.0) as c:
                    return c.command("PING") == "PONG"
            except (OSError, ConnectionError, RedisError):
                return False

        wait_started(self, ready, timeout, "redis-server (TLS) to answer PING over TLS")
        return self

    def conn(self, timeout=10.0):
        return TlsRedisConn(self.port, self.pki["ca.crt"], timeout=timeout)

    def publish(self, channel, payload):
        with self.conn() as c:
            return c.publish(channel, payload)

    def numsub(self, channel):
        with self.conn() as c:
            return int(c.command("PUBSUB", "NUMSUB", channel)[1])

    def client_laddr_ports(self):
        """The local (server-side) port of every client connection Redis holds but this one."""
        with self.conn() as c:
            text = c.command("CLIENT", "LIST").decode()
            me = c.command("CLIENT", "ID")
        ports = []
        for line in text.splitlines():
            fields = dict(x.split("=", 1) for x in line.split() if "=" in x)
            if int(fields["id"]) != me:
                ports.append(int(fields["laddr"].rsplit(":", 1)[1]))
        return ports


STUNNEL_CONF = """\
; the sidecar of docs/OPERATIONS.md, "TLS to Redis"; accept, connect, sni, CAfile and
; checkHost name the test's ports, its CA and localhost
foreground = yes
pid =
[redis]
client = yes
accept = 127.0.0.1:{accept}
connect = 127.0.0.1:{connect}
delay = yes
sni = localhost
verifyChain = yes
CAfile = {cafile}
checkHost = {host}
"""


class Stunnel(_Proc):
    """stunnel (Debian's stunnel4) in client mode, in the foreground (no pid file, no fork),
    logging to its stderr; stopped by the PID of the process the test started."""
    name = "stunnel"

    def __init__(self, workdir, connect_port, cafile, host="localhost"):
        super().__init__(workdir)
        self.port = free_port()
        self.conf = os.path.join(workdir, f"stunnel-{self.port}.conf")
        with open(self.conf, "w") as f:
            f.write(STUNNEL_CONF.format(accept=self.port, connect=connect_port, cafile=cafile,
                                        host=host))
        self.url = f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self, timeout=DEFAULT_TIMEOUT):
        binary = shutil.which("stunnel") or shutil.which("stunnel4")
        if binary is None:
            raise AssertionError("stunnel is not installed (Debian package stunnel4; "
                                 "deploy/install-deps.sh --test installs it)")
        self._spawn([binary, self.conf], f"stunnel-{self.port}.log")

        def accepting():
            # "Configuration successful" comes just before it binds its accept port; a
            # connection made then is forwarded (and, for a refused certificate, closed), which
            # is harmless for what follows
            if "Configuration successful" not in self.log_text():
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return True
            except OSError:
                return False

        wait_started(self, accepting, timeout, "stunnel to accept connections")
        return self


class RedisTlsSidecarTest(harness.HeraldTestCase):
    def setUp(self):
        super().setUp()
        self.pki = make_pki(self.tmp)
        self.redis = self.start_tls_redis()

    def start_tls_redis(self, port=None):
        r = TlsRedis(self.tmp, self.pki, port)
        self._procs.append(r)
        self.addCleanup(r.kill)
        return r.start()

    def start_stunnel(self, cafile, host="localhost"):
        s = Stunnel(self.tmp, self.redis.port, cafile, host)
        self._procs.append(s)
        self.addCleanup(s.kill)
        return s.start()

    def _print_logs_if_failed(self):
        super()._print_logs_if_failed()
        if self._failed() or os.environ.get("HERALD_TEST_SHOW_LOGS"):
            for p in self._procs:
                if isinstance(p, (Stunnel, TlsRedis)):
                    sys.stderr.write(f"\n----- {p.name} log (port {p.port}, pid {p.pid}) -----\n"
                                     f"{p.log_text(tail_lines=60)}\n----- end -----\n")

    def wait_resubscribed(self, channel):
        harness.wait_for(lambda: self.redis.numsub(channel) >= 1, 30, 0.1,
                         f"herald to subscribe {channel} in the TLS Redis")

    async def expect(self, ws, channel, data):
        raw, msg = await recv_frame(ws, timeout=20)
        self.assertEqual(msg, {"op": "message", "channel": channel, "data": data}, raw)

    def test_plain_port_is_closed(self):
        """The Redis under test speaks TLS only: plain RESP on its port gets no answer, and it
        has no plain port. So whatever reaches it below went through TLS."""
        with self.redis.conn() as c:
            self.assertEqual(c.command("CONFIG", "GET", "port"), [b"port", b"0"])
            self.assertEqual(int(c.command("CONFIG", "GET", "tls-port")[1]), self.redis.port)
        with self.assertRaises((OSError, ConnectionError, RedisError)):
            with RedisConn(self.redis.port, timeout=5.0) as plain:
                plain.command("PING")

    async def test_delivers_through_the_sidecar_and_after_a_restart(self):
        stunnel = self.start_stunnel(self.pki["ca.crt"])
        h = self.start_herald(stunnel.url, *HEARTBEAT)
        await harness.async_wait_for(lambda: h.readyz() == 200, 30, 0.1,
                                     "/readyz 200 through the TLS sidecar")
        ws = await self.connect(h)
        await subscribe(ws, "tls:one")
        self.assertGreaterEqual(self.redis.numsub("tls:one"), 1)
        self.assertEqual(self.redis.publish("tls:one", '{"n":1}'), 1)
        await self.expect(ws, "tls:one", {"n": 1})
        # Redis holds the gateway's connections (the subscriber and the command connection),
        # all on its TLS port: it has no other
        ports = self.redis.client_laddr_ports()
        self.assertGreaterEqual(len(ports), 2, ports)
        self.assertEqual(set(ports), {self.redis.port})
        self.assertIn("Certificate accepted at depth=0: CN=localhost", stunnel.log_text())

        # the TLS Redis killed and started again on the same port; the sidecar stays
        reconnects0 = h.metric("herald_redis_reconnects_total")
        sidecar_pid = stunnel.pid
        self.redis.kill()
        await harness.async_wait_for(lambda: h.readyz() == 503, 20, 0.05,
                                     "/readyz 503 after the TLS Redis died")
        await asyncio.sleep(1.0)
        self.assertEqual(h.readyz(), 503)
        self.redis = self.start_tls_redis(port=self.redis.port)
        await harness.async_wait_for(lambda: h.readyz() == 200, 30, 0.1,
                                     "/readyz 200 after the TLS Redis came back")
        h.wait_metric("herald_redis_reconnects_total", lambda v: v >= reconnects0 + 1)
        self.assertTrue(stunnel.alive())
        self.assertEqual(stunnel.pid, sidecar_pid)
        self.wait_resubscribed("tls:one")
        # published after the recovery: delivered without a new subscribe
        self.assertEqual(self.redis.publish("tls:one", '{"n":2}'), 1)
        await self.expect(ws, "tls:one", {"n": 2})
        self.assertEqual(set(self.redis.client_laddr_ports()), {self.redis.port})

    async def assert_refused(self, url, channel, stunnel=None):
        """Herald on `url` never becomes ready and its client never gets a message published
        on the TLS Redis."""
        h = self.start_herald(url, *HEARTBEAT)
        ws = await self.connect(h)
        # the subscribe is answered only once Redis confirms it: it stays pending
        await ws.send(f'{{"op":"subscribe","channel":"{channel}"}}')
        deadline = time.monotonic() + REFUSED_WATCH_S
        published = 0
        while time.monotonic() < deadline:
            self.assertEqual(h.readyz(), 503, "ready although the TLS connection was refused")
            published += self.redis.publish(channel, '{"leak":true}')
            await asyncio.sleep(0.2)
        self.assertEqual(published, 0, "a PUBLISH on the TLS Redis reached a subscriber")
        self.assertEqual(self.redis.numsub(channel), 0)
        with self.assertRaises(asyncio.TimeoutError):
            raw, _ = await recv_frame(ws, timeout=1.0)
            self.fail(f"the client got a frame: {raw}")
        self.assertTrue(h.alive(), "herald died")
        self.assertEqual(h.metric("herald_redis_up"), 0)
        if stunnel is not None:
            log = stunnel.log_text()
            self.assertIn("Rejected by CERT", log)
            self.assertIn("certificate verify failed", log)

    async def test_refuses_a_server_its_ca_did_not_sign(self):
        stunnel = self.start_stunnel(self.pki["other-ca.crt"])
        await self.assert_refused(stunnel.url, "tls:wrong-ca", stunnel)

    async def test_refuses_a_certificate_for_another_host(self):
        stunnel = self.start_stunnel(self.pki["ca.crt"], host="redis.wrong.example")
        await self.assert_refused(stunnel.url, "tls:wrong-host", stunnel)

    async def test_plaintext_to_the_tls_port_is_refused(self):
        """Without the sidecar the gateway's plaintext gets nowhere: the sidecar is what makes
        the tests above pass."""
        await self.assert_refused(f"redis://:{PASSWORD}@127.0.0.1:{self.redis.port}/0",
                                  "tls:direct")
        self.assertIn("wrong version number", self.redis.log_text())


if __name__ == "__main__":
    harness.main()
