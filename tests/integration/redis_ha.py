"""Highly available Redis for the tests: a master with replicas watched by real sentinels
(Debian's redis-sentinel), each on a free 127.0.0.1 port, stopped by PID in the test's
cleanups."""

import os
import shutil
import socket
import threading
import time

from harness import DEFAULT_TIMEOUT, RedisConn, RedisError, RedisServer, _Proc, free_port

MASTER_NAME = "herald-master"


class RedisSentinel(_Proc):
    name = "redis-sentinel"

    def __init__(self, workdir, master_port, quorum, down_after_ms=1000):
        super().__init__(workdir)
        self.port = free_port()
        self.conf = os.path.join(workdir, f"sentinel-{self.port}.conf")
        # the sentinel rewrites this file with what it learns (replicas, other sentinels)
        with open(self.conf, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
                    f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                    f"sentinel parallel-syncs {MASTER_NAME} 1\n")

    def start(self, timeout=DEFAULT_TIMEOUT):
        binary = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
        self._spawn([binary, self.conf], f"sentinel-{self.port}.log")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with RedisConn(self.port, timeout=2.0) as c:
                    if c.command("PING") == "PONG":
                        return self
            except (OSError, ConnectionError, RedisError):
                pass
            if not self.alive() or time.monotonic() > deadline:
                raise AssertionError(f"redis-sentinel did not start:\n{self.log_text(30)}")
            time.sleep(0.05)

    def master_port(self):
        """The port of the master this sentinel names now, or None."""
        try:
            with RedisConn(self.port, timeout=2.0) as c:
                reply = c.command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
            return int(reply[1]) if reply else None
        except (OSError, ConnectionError, RedisError):
            return None


def role(port):
    """ROLE of the Redis server on port ("master", "slave"), or None when it does not answer."""
    try:
        with RedisConn(port, timeout=1.0) as c:
            return c.command("ROLE")[0].decode()
    except (OSError, ConnectionError, RedisError):
        return None


def start_sentinel_group(test, replicas=1, sentinels=3):
    """A master, `replicas` replicas and `sentinels` sentinels (quorum: a majority), all
    started and registered for cleanup with `test` (a HeraldTestCase). Returns (master,
    [replica...], [sentinel...]) once every sentinel knows every replica."""
    master = test.start_redis()
    reps = []
    for _ in range(replicas):
        r = RedisServer(test.tmp)
        r.args = ["--replicaof", "127.0.0.1", str(master.port)]
        test._procs.append(r)
        test.addCleanup(r.kill)
        reps.append(r.start())
    sents = []
    for _ in range(sentinels):
        s = RedisSentinel(test.tmp, master.port, quorum=sentinels // 2 + 1)
        test._procs.append(s)
        test.addCleanup(s.kill)
        sents.append(s.start())

    def settled():
        for s in sents:
            with RedisConn(s.port, timeout=2.0) as c:
                if len(c.command("SENTINEL", "replicas", MASTER_NAME)) < replicas:
                    return False
                if len(c.command("SENTINEL", "sentinels", MASTER_NAME)) < sentinels - 1:
                    return False
        return all(role(r.port) == "slave" for r in reps)

    deadline = time.monotonic() + 30
    while not settled():
        if time.monotonic() > deadline:
            raise AssertionError("the sentinels never saw every replica and each other")
        time.sleep(0.1)
    return master, reps, sents


def sentinel_url(sents):
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sents)
    return f"redis-sentinel://{hosts}/{MASTER_NAME}"


def resp_array(*items):
    out = b"*%d\r\n" % len(items)
    for it in items:
        out += b"$%d\r\n%s\r\n" % (len(it), it)
    return out


class FakeRedis:
    """A TCP server posing as a Redis server (a sentinel, a cluster node): it answers every
    command on every connection with the same bytes (or never, when answer is None), and
    counts the commands it got."""

    def __init__(self, answer):
        self.answer = answer
        self.asked = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            self.asked += data.count(b"\r\n*") + (1 if data.startswith(b"*") else 0)
            if self.answer is not None:
                try:
                    conn.sendall(self.answer)
                except OSError:
                    return

    def close(self):
        self.closed = True
        self.sock.close()
        for c in self.conns:
            c.close()
