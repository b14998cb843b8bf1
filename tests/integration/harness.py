"""Shared helpers for Herald's integration tests.

Everything here talks to real processes: a real `redis-server` and a real `herald` binary,
each started on a free 127.0.0.1 port in a per-test temporary directory and stopped by PID in
the test's cleanups (also when the test fails). Children also get PR_SET_PDEATHSIG so that a
test runner killed by a timeout does not leave them behind.

Standard library only, plus Debian's python3-websockets (10.x) for the WebSocket client.
Run the tests with /usr/bin/python3.
"""

import asyncio
import ctypes
import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rawws import (  # noqa: E402,F401 - re-exported for the tests
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, HandshakeRefused, RawWS,
)
from resp import AsyncRedis, RedisConn, RedisError  # noqa: E402,F401

# IsolatedAsyncioTestCase runs its loop in debug mode; its "Executing <Task ...> took N s"
# warnings about our short blocking calls (process start-up, /metrics) are only noise.
logging.getLogger("asyncio").setLevel(logging.ERROR)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_TIMEOUT = 20.0  # generous: the test machines are slow and loaded


def herald_bin():
    path = os.environ.get("HERALD_BIN", os.path.join("build", "gateway", "herald"))
    if not os.path.isabs(path):
        path = os.path.join(REPO_ROOT, path)
    return path


# ---------------------------------------------------------------------------------------------
# Small utilities


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(wanted):
    """Raise the soft RLIMIT_NOFILE towards `wanted` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def wait_for(predicate, timeout=DEFAULT_TIMEOUT, interval=0.05, what="condition"):
    """Poll `predicate` until it returns a truthy value; return it, or raise AssertionError."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polled conditions may fail transiently
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


async def async_wait_for(predicate, timeout=DEFAULT_TIMEOUT, interval=0.05, what="condition"):
    """Like wait_for, but sleeps with asyncio so other tasks keep running.
    `predicate` is a plain (blocking but quick) callable."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        await asyncio.sleep(interval)


def rss_kib(pid):
    """Resident set size of a process in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _set_pdeathsig():
    """preexec_fn: the child gets SIGKILL when the test process dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort
        pass


# ---------------------------------------------------------------------------------------------
# HTTP


def http_get(url, timeout=10.0, headers=None):
    """GET `url`; return (status, headers dict with lower-case keys, body bytes).
    Non-2xx statuses are returned, not raised. Connection errors are raised."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        body = err.read() if err.fp else b""
        return err.code, {k.lower(): v for k, v in err.headers.items()}, body


def http_raw(host, port, request_bytes, timeout=10.0):
    """Send a raw HTTP/1.1 request (for paths urllib would normalise); return
    (status, headers dict, body bytes). Reads until the peer closes or Content-Length."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request_bytes)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        length = headers.get("content-length")
        if length is not None:
            while len(body) < int(length):
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        elif headers.get("transfer-encoding", "").lower() != "chunked":
            s.settimeout(2.0)
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    body += chunk
            except OSError:
                pass
        return status, headers, body


# ---------------------------------------------------------------------------------------------
# Prometheus text format

_METRIC_LINE = re.compile(
    r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+-?\d+)?$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Parse Prometheus text into a list of (name, labels dict, float value).
    Raises ValueError on a line that is not valid exposition format."""
    samples = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if not m:
            raise ValueError(f"line {lineno} is not Prometheus text format: {line!r}")
        name, labels_txt, value_txt = m.group(1), m.group(2), m.group(3)
        labels = {}
        if labels_txt:
            inner = labels_txt[1:-1].strip().rstrip(",")
            pos = 0
            for lm in _LABEL.finditer(inner):
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
            rest = inner[pos:].strip(", ")
            if rest:
                raise ValueError(f"line {lineno}: bad labels {labels_txt!r}")
        value = float(value_txt)  # accepts NaN, +Inf
        samples.append((name, labels, value))
    return samples


def metric_value(text, name, labels=None, default=None):
    """Value of metric `name` (with exactly matching `labels` if given, else the unlabelled
    sample or the first one) from Prometheus text. Returns `default` if absent."""
    samples = parse_metrics(text)
    for sname, slabels, value in samples:
        if sname != name:
            continue
        if labels is None:
            if not slabels:
                return value
        elif slabels == labels:
            return value
    if labels is None:
        for sname, _slabels, value in samples:
            if sname == name:
                return value
    return default


# ---------------------------------------------------------------------------------------------
# Processes


class _Proc:
    name = "process"

    def __init__(self, workdir):
        self.workdir = workdir
        self.proc = None
        self.log_path = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self, argv, log_name, env=None):
        self.log_path = os.path.join(self.workdir, log_name)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                preexec_fn=_set_pdeathsig,
            )
        finally:
            log.close()

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill(self):
        """SIGKILL and reap."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.proc.wait()

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def wait_exit(self, timeout):
        """Wait for the process to exit on its own; returns its status or None on timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_text(self, tail_lines=None):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        if tail_lines is not None:
            lines = text.splitlines()
            if len(lines) > tail_lines:
                text = f"... ({len(lines) - tail_lines} earlier lines omitted)\n" + "\n".join(
                    lines[-tail_lines:]
                )
        return text


class RedisServer(_Proc):
    name = "redis-server"

    def __init__(self, workdir, port=None):
        super().__init__(workdir)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = os.path.join(workdir, f"redis-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        self.args = []  # extra redis-server arguments, e.g. ["--replicaof", "127.0.0.1", "6379"]

    def start(self, timeout=DEFAULT_TIMEOUT):
        argv = [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", self.dir,
        ] + self.args
        self._spawn(argv, f"redis-{self.port}.log")

        def ready():
            if not self.alive():
                raise AssertionError(
                    f"redis-server exited with {self.proc.returncode}:\n{self.log_text(50)}"
                )
            try:
                with RedisConn(self.port, timeout=2.0) as c:
                    return c.command("PING") == "PONG"
            except (OSError, ConnectionError, RedisError):
                return False

        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not answer PING:\n{self.log_text(50)}")
            time.sleep(0.05)
        return self

    def conn(self):
        return RedisConn(self.port)

    def publish(self, channel, payload):
        with RedisConn(self.port) as c:
            return c.publish(channel, payload)

    def numsub(self, channel):
        """Number of Redis-level subscribers of `channel` (PUBSUB NUMSUB)."""
        with RedisConn(self.port) as c:
            reply = c.command("PUBSUB", "NUMSUB", channel)
            return int(reply[1])


class Herald(_Proc):
    name = "herald"

    def __init__(self, workdir, redis_url, args=(), env=None, port=None):
        super().__init__(workdir)
        self.port = port or free_port()
        self.redis_url = redis_url
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    def start(self, wait=True, timeout=DEFAULT_TIMEOUT):
        binary = herald_bin()
        if not os.path.exists(binary):
            raise unittest.SkipTest(f"herald binary not found at {binary} (set HERALD_BIN)")
        argv = [binary, "--listen", f"127.0.0.1:{self.port}", "--redis-url", self.redis_url]
        level = os.environ.get("HERALD_TEST_LOG_LEVEL")
        if level and "--log-level" not in self.args:
            argv += ["--log-level", level]
        argv += self.args
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update(self.extra_env)
        # Sanitizer builds: report but don't abort the whole run on leaks at exit.
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.argv = argv
        self._spawn(argv, f"herald-{self.port}.log", env=env)
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=DEFAULT_TIMEOUT):
        def healthy():
            if not self.alive():
                raise AssertionError(
                    f"herald exited with status {self.proc.returncode} during start-up"
                    f" ({' '.join(self.argv)}):\n{self.log_text(80)}"
                )
            try:
                status, _, _ = http_get(self.base + "/healthz", timeout=2.0)
                return status == 200
            except (OSError, urllib.error.URLError):
                return False

        deadline = time.monotonic() + timeout
        while not healthy():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"herald /healthz not 200 after {timeout}s:\n{self.log_text(80)}"
                )
            time.sleep(0.05)

    def get(self, path, timeout=10.0, headers=None):
        return http_get(self.base + path, timeout=timeout, headers=headers)

    def healthz(self):
        return self.get("/healthz")[0]

    def readyz(self):
        return self.get("/readyz")[0]

    def metrics_text(self):
        status, _, body = self.get("/metrics")
        if status != 200:
            raise AssertionError(f"/metrics answered {status}")
        return body.decode()

    def metric(self, name, labels=None, default=None):
        return metric_value(self.metrics_text(), name, labels, default)

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def wait_ready(self, timeout=DEFAULT_TIMEOUT):
        wait_for(lambda: self.readyz() == 200, timeout, what="herald /readyz == 200")

    def wait_metric(self, name, predicate, labels=None, timeout=DEFAULT_TIMEOUT):
        """Poll /metrics until predicate(value) is true; return the value."""
        seen = []

        def check():
            v = self.metric(name, labels)
            seen.append(v)
            return predicate(v) and (True, v)

        try:
            return wait_for(check, timeout, interval=0.1, what=f"metric {name}")[1]
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last value {seen[-1] if seen else None}") from None


# ---------------------------------------------------------------------------------------------
# WebSocket helpers (websockets asyncio client)


async def ws_connect(url, **kwargs):
    """Open a WebSocket with settings suited to tests (no keepalive pings, large max size)."""
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("max_size", None)
    kwargs.setdefault("open_timeout", DEFAULT_TIMEOUT)
    kwargs.setdefault("close_timeout", 5)
    return await websockets.connect(url, **kwargs)


async def recv_frame(ws, timeout=DEFAULT_TIMEOUT):
    """Next frame: (raw text, parsed JSON or None for non-JSON). Raises on timeout/close."""
    raw = await asyncio.wait_for(ws.recv(), timeout)
    try:
        parsed = json.loads(raw)
    except (ValueError, TypeError):
        parsed = None
    return raw, parsed


async def recv_json(ws, timeout=DEFAULT_TIMEOUT):
    return (await recv_frame(ws, timeout))[1]


async def request(ws, frame, timeout=DEFAULT_TIMEOUT):
    """Send a frame (dict -> JSON, str/bytes as is) and return the next parsed reply."""
    if isinstance(frame, dict):
        frame = json.dumps(frame)
    await ws.send(frame)
    return await recv_json(ws, timeout)


async def subscribe(ws, channel, timeout=DEFAULT_TIMEOUT, **extra):
    """Subscribe and return the `subscribed` reply (fails on anything else)."""
    reply = await request(ws, dict(op="subscribe", channel=channel, **extra), timeout)
    if not (isinstance(reply, dict) and reply.get("op") == "subscribed"
            and reply.get("channel") == channel):
        raise AssertionError(f"subscribe {channel!r}: unexpected reply {reply!r}")
    return reply


async def unsubscribe(ws, channel, timeout=DEFAULT_TIMEOUT):
    """Unsubscribe; skips message frames that were already in flight. Returns the reply."""
    await ws.send(json.dumps({"op": "unsubscribe", "channel": channel}))
    deadline = time.monotonic() + timeout
    while True:
        reply = await recv_json(ws, max(0.1, deadline - time.monotonic()))
        if isinstance(reply, dict) and reply.get("op") == "message":
            continue
        if not (isinstance(reply, dict) and reply.get("op") == "unsubscribed"
                and reply.get("channel") == channel):
            raise AssertionError(f"unsubscribe {channel!r}: unexpected reply {reply!r}")
        return reply


async def ping(ws, timeout=DEFAULT_TIMEOUT, **extra):
    reply = await request(ws, dict(op="ping", **extra), timeout)
    if not (isinstance(reply, dict) and reply.get("op") == "pong"):
        raise AssertionError(f"ping: unexpected reply {reply!r}")
    return reply


async def close_quietly(ws):
    try:
        await asyncio.wait_for(ws.close(), 5)
    except Exception:  # noqa: BLE001
        pass


async def wait_close(ws, timeout=DEFAULT_TIMEOUT):
    """Read (and discard) frames until the connection closes; return (code, reason, frames)."""
    frames = []
    try:
        async def drain():
            async for msg in ws:
                frames.append(msg)
        await asyncio.wait_for(drain(), timeout)
    except websockets.exceptions.ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason, frames


# ---------------------------------------------------------------------------------------------
# Test case base


class HeraldTestCase(unittest.IsolatedAsyncioTestCase):
    """Each test gets a temp dir; start_redis()/start_herald() register cleanups that stop the
    processes by PID. Herald's log is printed when the test fails (or always with
    HERALD_TEST_SHOW_LOGS=1)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="herald-it-")
        self._procs = []
        if os.environ.get("HERALD_TEST_KEEP_TMP"):
            sys.stderr.write(f"\n[{self.id()}] temp dir kept: {self.tmp}\n")
        else:
            self.addCleanup(shutil.rmtree, self.tmp, True)
        # Registered early so it runs after the processes have been stopped (LIFO).
        self.addCleanup(self._print_logs_if_failed)

    def _failed(self):
        """True if this test (or one of its subtests) has failed so far. (Inside a cleanup,
        unittest's _Outcome.success is reset, so look at the result's lists instead.)"""
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is None:
            return True
        for test, _ in list(result.failures) + list(result.errors):
            if test is self or getattr(test, "test_case", None) is self:
                return True
        return False

    def _print_logs_if_failed(self):
        if not (self._failed() or os.environ.get("HERALD_TEST_SHOW_LOGS")):
            return
        for p in self._procs:
            if isinstance(p, Herald):
                sys.stderr.write(
                    f"\n----- herald log ({self.id()}, port {p.port}, pid {p.pid},"
                    f" exit {p.proc.returncode if p.proc else None}) -----\n"
                    f"{p.log_text(tail_lines=300)}\n----- end of herald log -----\n"
                )

    def start_redis(self, port=None):
        r = RedisServer(self.tmp, port)
        self._procs.append(r)
        self.addCleanup(r.kill)
        return r.start()

    def restart_redis(self, old):
        """Start a new redis-server on the same port as `old` (which must be stopped)."""
        return self.start_redis(port=old.port)

    def start_herald(self, redis, *args, env=None, wait=True, port=None):
        url = redis.url if isinstance(redis, RedisServer) else redis
        h = Herald(self.tmp, url, args, env=env, port=port)
        self._procs.append(h)
        self.addCleanup(self._check_sanitizers, h)  # runs after h.stop (LIFO)
        self.addCleanup(h.stop)
        return h.start(wait=wait)

    def _check_sanitizers(self, h):
        """An ASan/UBSan build reports errors and leaks on stderr: any report fails the test."""
        text = h.log_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in text:
                raise AssertionError(f"sanitizer report in herald's log ({marker!r})")

    async def connect(self, herald_or_url, **kwargs):
        url = herald_or_url.ws_url if isinstance(herald_or_url, Herald) else herald_or_url
        ws = await ws_connect(url, **kwargs)
        self.addAsyncCleanup(close_quietly, ws)
        return ws

    def raw_ws(self, herald, **kwargs):
        r = RawWS(herald.port, **kwargs)
        self.addCleanup(r.close)
        return r


def main():
    unittest.main(verbosity=2)
