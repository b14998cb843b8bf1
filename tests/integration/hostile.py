"""Shared pieces of the raw-byte hostile suite (test_hostile_*.py).

Everything is bytes on plain sockets: HTTP requests are written by hand (split, pipelined,
trickled), WebSocket frames are built bit by bit, Redis payloads go through resp.py. No HTTP
or WebSocket client library is involved, so a test says exactly which bytes reach the gateway.

One Redis and one PostgreSQL serve a whole test module (started on first use, stopped by PID
in tearDownModule); each test class starts one gateway on them (setUpClass, stopped by PID in
tearDownClass) with the settings the class needs. A gateway that died during a case is
restarted before the next case (the case that killed it fails on its own), so one crash does
not hide the results of the cases after it.

Every case ends with HostileCase.unharmed(...), which checks:
- the process is alive and /healthz answers 200 on a fresh connection;
- no sanitizer report in its log so far (the exit, leaks included, is checked at tearDownClass);
- the canary, a WebSocket subscribed to another channel before the case, gets a message
  PUBLISHed after it;
- PostgreSQL: every channel head (herald_channels.last_seq) and every channel's row count
  (herald_messages) moved exactly by what the case was allowed to publish, and nothing else;
- herald_durable_publishes_total moved by the same amount;
- the metrics the case names moved by at least (or exactly) the amount it names.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import jwt_util as jwt  # noqa: E402
from harness import Herald, RedisServer, metric_value, wait_for  # noqa: E402
from pg import PG_USER, PostgresServer  # noqa: E402
from resp import RedisConn  # noqa: E402,F401
from rawws import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, WS_GUID  # noqa

SECRET = jwt.SECRET
API_KEY = "hostile-api-key-5d1f0c7e9a3b2468ace0"
CLOSE_WITHIN = 1.0  # seconds: a socket the server must close is closed this fast
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
NO_RATE_LIMIT = ("--rate-limit", "1000000", "--rate-burst", "1000000")
HOST = "127.0.0.1"


def reader_token(channels=("*",)):
    """A JWT that may read `channels` and publish nowhere."""
    return jwt.token(sub="reader", channels=list(channels), publish=[], exp_in=3600)


def writer_token(channels=("*",), publish=("*",)):
    return jwt.token(sub="writer", channels=list(channels), publish=list(publish), exp_in=3600)


# ---------------------------------------------------------------------------------------------
# HTTP over a raw socket


class Response:
    def __init__(self, status, version, headers, header_list, body, head):
        self.status = status
        self.version = version
        self.headers = headers          # lower-case name -> last value
        self.header_list = header_list  # [(lower-case name, value)] in order
        self.body = body
        self.head = head

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def error_code(self):
        j = self.json()
        if isinstance(j, dict) and isinstance(j.get("error"), dict):
            return j["error"].get("code")
        return None

    def __repr__(self):
        return f"<HTTP {self.status} {self.headers} {self.body[:300]!r}>"


class RawHTTP:
    """One TCP connection: write any bytes, read HTTP/1.x responses one by one."""

    def __init__(self, port, timeout=10.0, rcvbuf=None, source=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def send_parts(self, parts, gap=0.03):
        """Each part in its own write, `gap` seconds apart (TCP_NODELAY is on)."""
        for i, p in enumerate(parts):
            if i:
                time.sleep(gap)
            self.sock.sendall(p)

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            raise EOFError("closed by the server")
        self.buf += chunk

    def read_response(self, timeout=10.0):
        """The next response, or None if the server closed (or reset) before sending one.
        Raises socket.timeout when nothing complete came within `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            while b"\r\n\r\n" not in self.buf:
                self._fill(max(0.01, deadline - time.monotonic()))
        except (EOFError, ConnectionResetError):
            if not self.buf:
                return None
            raise AssertionError(f"closed in the middle of a response head: {self.buf[:300]!r}")
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise AssertionError(f"not an HTTP/1 status line: {head[:200]!r}")
        status = int(parts[1])
        header_list = []
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                header_list.append((k.strip().lower(), v.strip()))
        headers = dict(header_list)
        self.buf = rest
        if status == 101 or 100 <= status < 200:
            body = b""
        elif "content-length" in headers:
            n = int(headers["content-length"])
            try:
                while len(self.buf) < n:
                    self._fill(max(0.01, deadline - time.monotonic()))
            except (EOFError, ConnectionResetError):
                pass
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked(deadline)
        else:  # until the server closes (an HTTP/1.0 style answer)
            try:
                while True:
                    self._fill(max(0.01, deadline - time.monotonic()))
            except (EOFError, ConnectionResetError, socket.timeout):
                pass
            body, self.buf = self.buf, b""
        return Response(status, parts[0], headers, header_list, body, head)

    def _read_chunked(self, deadline):
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill(max(0.01, deadline - time.monotonic()))
            line, self.buf = self.buf.split(b"\r\n", 1)
            n = int(line.split(b";")[0], 16)
            while len(self.buf) < n + 2:
                self._fill(max(0.01, deadline - time.monotonic()))
            body += self.buf[:n]
            self.buf = self.buf[n + 2:]
            if n == 0:
                return body

    def how_closed(self, seconds=CLOSE_WITHIN):
        """How the server closes the socket within `seconds`: "eof" (a FIN), "reset", or None
        (still open); bytes that come first are kept in self.extra."""
        self.extra = self.buf
        self.buf = b""
        if self.eof:
            return "eof"
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except (ConnectionResetError, BrokenPipeError):
                return "reset"
            if not chunk:
                self.eof = True
                return "eof"
            self.extra += chunk

    def closed_within(self, seconds=CLOSE_WITHIN):
        """True if the server closes the socket (EOF or reset) within `seconds`."""
        return self.how_closed(seconds) is not None

    def ends_cleanly(self, seconds=CLOSE_WITHIN):
        """True if the server closes the socket with a FIN, not a reset, within `seconds`."""
        return self.how_closed(seconds) == "eof"

    def still_open(self, seconds=0.3):
        """True if the server neither closes nor sends anything for `seconds`."""
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        except OSError:
            return False
        if chunk:
            self.buf += chunk
            return True
        return False


def request_bytes(method, path, headers=(), body=b"", version="HTTP/1.1", host=True):
    """An HTTP request as bytes; headers are (name, value) pairs written as given (no
    Content-Length is added: the case decides)."""
    lines = [f"{method} {path} {version}".encode("latin-1")]
    if host:
        lines.append(b"Host: 127.0.0.1")
    for k, v in headers:
        k = k if isinstance(k, bytes) else k.encode("latin-1")
        v = v if isinstance(v, bytes) else str(v).encode("latin-1")
        lines.append(k + b": " + v)
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body if isinstance(body, bytes) else body.encode())


def post_bytes(path, body, headers=(), cred=None):
    body = body if isinstance(body, bytes) else body.encode()
    h = [("Content-Length", str(len(body)))] + list(headers)
    if cred:
        h.append(("Authorization", f"Bearer {cred}"))
    return request_bytes("POST", path, h, body)


def get_bytes(path, headers=(), cred=None):
    h = list(headers)
    if cred:
        h.append(("Authorization", f"Bearer {cred}"))
    return request_bytes("GET", path, h)


# ---------------------------------------------------------------------------------------------
# WebSocket bytes


def ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def frame_bytes(opcode, payload=b"", fin=True, rsv=0, masked=True, length=None, mask=None):
    """One WebSocket frame; `length` overrides the declared payload length, `rsv` is the
    three RSV bits (4 = RSV1)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)
    mbit = 0x80 if masked else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = mask or os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_upgrade_bytes(path="/ws", protocol=None, extra=(), key=None, version="13",
                     body=b"", omit=()):
    h = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    if "key" not in omit:
        h.append(("Sec-WebSocket-Key", key or ws_key()))
    if "version" not in omit:
        h.append(("Sec-WebSocket-Version", version))
    if protocol is not None:
        h.append(("Sec-WebSocket-Protocol", protocol))
    h += list(extra)
    return request_bytes("GET", path, h, body)


def handshake(port, path="/ws", protocol=None, extra=(), body=b"", omit=(), timeout=10.0,
              source=None):
    """Writes an upgrade request; returns (response or None, RawHTTP). On 101 the RawHTTP
    can be turned into a RawWS with as_ws()."""
    c = RawHTTP(port, timeout=timeout, source=source)
    c.send(ws_upgrade_bytes(path, protocol, extra, body=body, omit=omit))
    return c.read_response(timeout), c


def as_ws(c):
    """A RawWS over an already upgraded RawHTTP connection."""
    ws = RawWS.__new__(RawWS)
    ws.sock = c.sock
    ws.buf = c.buf
    ws.rsv1 = False
    return ws


def open_ws(port, token=None, path="/ws", protocol=None, extra=(), timeout=10.0, source=None):
    """A RawWS after a 101 (fails the test otherwise)."""
    if token:
        path += ("&" if "?" in path else "?") + "token=" + token
    resp, c = handshake(port, path, protocol, extra, timeout=timeout, source=source)
    if resp is None or resp.status != 101:
        c.close()
        raise AssertionError(f"handshake on {path[:60]} refused: {resp!r}")
    return as_ws(c)


def ws_next_json(ws, timeout=10.0, skip_messages=False):
    """The next JSON text frame from a RawWS (pings answered); skips `message` frames when
    asked."""
    deadline = time.monotonic() + timeout
    while True:
        op, payload = ws.recv_message(timeout=max(0.05, deadline - time.monotonic()))
        if op == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            raise EOFError(f"closed by the server with {code}")
        if op != OP_TEXT:
            continue
        m = json.loads(payload)
        if skip_messages and isinstance(m, dict) and m.get("op") == "message":
            continue
        return m


def ws_close_code(ws, timeout=5.0):
    """(code or None, how): how is close-frame, eof, reset or timeout."""
    _msgs, code, how = ws.read_until_closed(timeout)
    return code, how


# ---------------------------------------------------------------------------------------------
# Shared infrastructure per module

_INFRA = {}


def infra():
    """The module's Redis and PostgreSQL (started on first use)."""
    if "redis" not in _INFRA:
        tmp = tempfile.mkdtemp(prefix="herald-hostile-")
        _INFRA["tmp"] = tmp
        r = RedisServer(tmp)
        _INFRA["redis"] = r
        r.start()
        pg = PostgresServer(tmp)
        _INFRA["pg"] = pg
        pg.init().start().create_db()
    return _INFRA["redis"], _INFRA["pg"]


def teardown_infra():
    for name in ("pg", "redis"):
        p = _INFRA.pop(name, None)
        if p:
            p.kill()
    tmp = _INFRA.pop("tmp", None)
    if tmp and not os.environ.get("HERALD_TEST_KEEP_TMP"):
        shutil.rmtree(tmp, True)


def psql(pg, sql):
    return pg.sql(sql)


def db_state(pg):
    """({channel: last_seq}, {channel: stored rows})."""
    out = pg.sql("SELECT 'h', name, last_seq FROM herald_channels UNION ALL "
                 "SELECT 'c', channel, count(*) FROM herald_messages GROUP BY channel")
    heads, rows = {}, {}
    for line in out.splitlines():
        kind, name, n = line.split("|")
        (heads if kind == "h" else rows)[name] = int(n)
    return heads, rows


class PsqlSession:
    """A psql process kept open (to hold a lock while the gateway works)."""

    def __init__(self, pg):
        self.p = subprocess.Popen(["psql", "-h", HOST, "-p", str(pg.port), "-U", PG_USER,
                                   "-d", "herald", "-Atq", "-v", "ON_ERROR_STOP=1"],
                                  stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def run(self, sql, marker="ok"):
        """Runs sql then SELECT marker; returns once the marker came back."""
        self.p.stdin.write(sql.rstrip().rstrip(";") + f";\nSELECT '{marker}';\n")
        self.p.stdin.flush()
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise AssertionError("psql session ended (an error in its SQL?)")
            if line.strip() == marker:
                return

    def query(self, sql, marker="end-of-query"):
        """Runs sql and returns the lines it printed (until SELECT marker came back)."""
        self.p.stdin.write(sql.rstrip().rstrip(";") + f";\nSELECT '{marker}';\n")
        self.p.stdin.flush()
        lines = []
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise AssertionError("psql session ended")
            if line.strip() == marker:
                return lines
            lines.append(line.rstrip("\n"))

    def abort(self):
        """ROLLBACK, ignoring a session that already ended."""
        try:
            self.run("ROLLBACK")
        except (AssertionError, OSError):
            pass

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.p.stdout.close()


# ---------------------------------------------------------------------------------------------
# Envelope signatures (spec section 5)


def signing_key(pg):
    """The envelope key from herald_keys, as bytes: a bytea column (psql prints \\x...) is
    decoded; a text column is used as its bytes."""
    text = pg.sql("SELECT key FROM herald_keys LIMIT 1")
    if not text:
        raise AssertionError("herald_keys is empty")
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    return text.encode()


def sign_envelope(key, epoch, envelope):
    """The Redis payload for `envelope` (str): the envelope with ,"sig":"<hex>" as its last
    member, HMAC-SHA256 over epoch + "\\n" + envelope."""
    mac = hmac.new(key, (epoch + "\n" + envelope).encode(), hashlib.sha256).hexdigest()
    assert envelope.endswith("}")
    return envelope[:-1] + ',"sig":"' + mac + '"}'


def sql_quote(s):
    return "'" + s.replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------
# Metrics


def metrics_samples(h):
    status, _, body = h.get("/metrics", timeout=10)
    if status != 200:
        raise AssertionError(f"/metrics answered {status}")
    return body.decode()


def mval(text, name, labels=None):
    return metric_value(text, name, labels, default=None)


# ---------------------------------------------------------------------------------------------
# Test case base


class HostileCase(unittest.TestCase):
    """A test class sharing one gateway (on the module's Redis and PostgreSQL)."""

    herald_args = ()          # extra flags of the class's gateway
    herald_env = {}
    with_db = True
    with_canary = True
    api_key = API_KEY
    jwt_secret = SECRET
    maxDiff = None

    @classmethod
    def gateway_args(cls):
        args = list(NO_RATE_LIMIT)
        if cls.jwt_secret:
            args += ["--jwt-secret", cls.jwt_secret]
        if cls.api_key:
            args += ["--api-key", cls.api_key]
        if cls.with_db:
            args += ["--database-url", cls.pg.url, "--migrate-on-start"]
        return args + list(cls.herald_args)

    @classmethod
    def setUpClass(cls):
        cls.redis, cls.pg = infra()
        cls.tmp = tempfile.mkdtemp(prefix="herald-hostile-gw-")
        cls.heralds = []
        cls.crashes = []
        cls.canary = None
        cls.canary_n = 0
        try:
            cls.h = cls.start_gateway()
        except BaseException:
            cls._stop_all()
            raise

    @classmethod
    def start_gateway(cls, args=None, env=None, wait=True):
        h = Herald(cls.tmp, cls.redis.url, cls.gateway_args() if args is None else args,
                   env=dict(cls.herald_env) if env is None else env)
        cls.heralds.append(h)
        h.start(wait=wait)
        if wait and cls.with_db and args is None:
            h.wait_metric("herald_db_up", lambda v: v == 1)
        if wait:
            h.wait_ready()
        return h

    @classmethod
    def _stop_all(cls):
        reports = []
        for h in cls.heralds:
            status = h.stop()
            text = h.log_text()
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    reports.append(f"herald port {h.port} (exit {status}): {marker}")
            if reports or os.environ.get("HERALD_TEST_SHOW_LOGS"):
                sys.stderr.write(f"\n----- herald log port {h.port} -----\n"
                                 f"{h.log_text(tail_lines=200)}\n-----\n")
        if cls.canary:
            cls.canary.close()
        if not os.environ.get("HERALD_TEST_KEEP_TMP"):
            shutil.rmtree(cls.tmp, True)
        return reports

    @classmethod
    def tearDownClass(cls):
        reports = cls._stop_all()
        if reports:
            raise AssertionError("sanitizer report(s) at exit: " + "; ".join(reports))

    # -- per case ---------------------------------------------------------------------------

    def setUp(self):
        if not self.h.alive():
            # an earlier case killed it: that case failed; start a fresh one for this case
            type(self).crashes.append(self.h.proc.returncode)
            type(self).h = self.start_gateway()
            if type(self).canary:
                type(self).canary.close()
                type(self).canary = None
        self._log_mark = len(self.h.log_text())
        if self.with_canary:
            self._ensure_canary()
        self.before_metrics = metrics_samples(self.h)
        self.before_db = db_state(self.pg) if self.with_db else None
        self._unharmed_called = False

    def tearDown(self):
        if not self._unharmed_called and self.h.alive():
            pass  # the case failed before its own checks; the next setUp copes
        text = self.h.log_text()[self._log_mark:] if self.h.alive() else self.h.log_text()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                sys.stderr.write(f"\n----- herald log -----\n{self.h.log_text(300)}\n")
                self.fail(f"sanitizer report in herald's log during {self.id()}: {marker}")

    def _ensure_canary(self):
        cls = type(self)
        if cls.canary is None:
            tok = jwt.token(sub="canary", channels=["canary"], exp_in=7200)
            ws = open_ws(self.h.port, token=tok if cls.jwt_secret else None)
            ws.send_json({"op": "subscribe", "channel": "canary", "id": "canary"})
            reply = ws_next_json(ws, 20)
            if reply.get("op") != "subscribed":
                raise AssertionError(f"canary: {reply}")
            cls.canary = ws

    def canary_alive(self):
        cls = type(self)
        cls.canary_n += 1
        n = cls.canary_n
        self.redis.publish("canary", json.dumps({"canary": n}))
        deadline = time.monotonic() + 20
        while True:
            m = ws_next_json(cls.canary, max(0.1, deadline - time.monotonic()))
            if m.get("op") == "message" and m.get("channel") == "canary":
                if m.get("data") == {"canary": n}:
                    return
                # an older canary (from a case that failed in between) may come first
                continue
            raise AssertionError(f"canary got {m!r}")

    def metric_now(self, name, labels=None):
        return mval(metrics_samples(self.h), name, labels)

    def metric_before(self, name, labels=None):
        return mval(self.before_metrics, name, labels)

    def metric_delta(self, name, labels=None):
        now = self.metric_now(name, labels)
        before = self.metric_before(name, labels) or 0
        if now is None:
            raise AssertionError(f"metric {name}{labels or ''} missing from /metrics")
        return now - before

    def wait_metric_delta(self, name, predicate, labels=None, timeout=10.0):
        seen = []

        def check():
            d = self.metric_delta(name, labels)
            seen.append(d)
            return predicate(d)
        try:
            wait_for(check, timeout, interval=0.05, what=f"{name}{labels or ''}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last delta {seen[-1] if seen else None}") from None
        return seen[-1]

    def healthz_fresh(self):
        with RawHTTP(self.h.port, timeout=10) as c:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response(10)
        return r.status if r else None

    def unharmed(self, heads=None, errors=None, metrics=None, exact_metrics=None,
                 publishes=None):
        """The checks after every case (see the module docstring).
        heads: {channel: allowed change of last_seq and of its row count} (others: 0);
        errors: {code: at least this many more herald_client_errors_total{code}};
        metrics: {name or (name, labels): at least this much more};
        exact_metrics: {name or (name, labels): exactly this much more};
        publishes: change of herald_durable_publishes_total (default: sum of heads)."""
        self._unharmed_called = True
        self.assertTrue(self.h.alive(),
                        f"herald died (exit {self.h.proc.returncode}):\n{self.h.log_text(60)}")
        self.assertEqual(self.healthz_fresh(), 200, "/healthz on a fresh connection")
        if self.with_canary:
            self.canary_alive()
        heads = dict(heads or {})
        for code, n in (errors or {}).items():
            self.wait_metric_delta("herald_client_errors_total", lambda d, n=n: d >= n,
                                   {"code": code})
        for key, n in (metrics or {}).items():
            name, labels = key if isinstance(key, tuple) else (key, None)
            self.wait_metric_delta(name, lambda d, n=n: d >= n, labels)
        for key, n in (exact_metrics or {}).items():
            name, labels = key if isinstance(key, tuple) else (key, None)
            self.wait_metric_delta(name, lambda d, n=n: d == n, labels)
        if self.with_db:
            expect_pub = sum(heads.values()) if publishes is None else publishes
            self.wait_metric_delta("herald_durable_publishes_total",
                                   lambda d: d >= expect_pub)
            wait_for(lambda: self.metric_now("herald_publish_queued") in (0, None), 20,
                     what="herald_publish_queued == 0")
            b_heads, b_rows = self.before_db
            a_heads, a_rows = db_state(self.pg)
            want_heads = dict(b_heads)
            want_rows = dict(b_rows)
            for ch, d in heads.items():
                want_heads[ch] = want_heads.get(ch, 0) + d
                want_rows[ch] = want_rows.get(ch, 0) + d
            want_heads = {k: v for k, v in want_heads.items() if v or k in a_heads}
            want_rows = {k: v for k, v in want_rows.items() if v}
            self.assertEqual(a_heads, want_heads, "channel heads (herald_channels.last_seq)")
            self.assertEqual(a_rows, want_rows, "stored rows per channel (herald_messages)")
            self.assertEqual(self.metric_delta("herald_durable_publishes_total"), expect_pub,
                             "herald_durable_publishes_total")

    # -- assertions on answers -------------------------------------------------------------

    def assert_refusal(self, resp, status, code=None, closed=True, conn=None, allow=None):
        """resp has `status` and JSON error `code`; when `closed`, it says connection: close
        and the server really closes conn within CLOSE_WITHIN."""
        self.assertIsNotNone(resp, f"no answer at all (expected {status} {code})")
        self.assertEqual(resp.status, status, resp)
        if code is not None:
            self.assertEqual(resp.error_code(), code, resp)
        if allow is not None:
            self.assertEqual(resp.headers.get("allow", "").replace(" ", ""),
                             allow.replace(" ", ""), resp)
        if closed:
            self.assertEqual(resp.headers.get("connection", "").lower(), "close", resp)
            if conn is not None:
                self.assertTrue(conn.closed_within(CLOSE_WITHIN),
                                f"the socket stayed open more than {CLOSE_WITHIN}s after {resp}")

    def assert_closed_without_101(self, resp, conn):
        if resp is not None:
            self.assertNotEqual(resp.status, 101, resp)
            self.assertGreaterEqual(resp.status, 400, resp)
        self.assertTrue(conn.closed_within(CLOSE_WITHIN), "socket left open")

    # -- REST helpers ----------------------------------------------------------------------

    def rest(self, data, timeout=20.0):
        """Writes `data` on a fresh connection and reads one response."""
        with RawHTTP(self.h.port, timeout=timeout) as c:
            c.send(data)
            return c.read_response(timeout)

    def post(self, channel, body, cred=API_KEY, headers=()):
        return self.rest(post_bytes(f"/v1/channels/{channel}/messages", body, headers, cred))

    def get_page(self, channel, query="", cred=API_KEY):
        return self.rest(get_bytes(f"/v1/channels/{channel}/messages{query}", cred=cred))

    def subscriber(self, channel, token=None, **kw):
        """A RawWS subscribed to channel (its `subscribed` reply read)."""
        tok = token or (reader_token() if self.jwt_secret else None)
        ws = open_ws(self.h.port, token=tok, **kw)
        self.addCleanup(ws.close)
        ws.send_json({"op": "subscribe", "channel": channel})
        reply = ws_next_json(ws, 20)
        self.assertEqual((reply.get("op"), reply.get("channel")), ("subscribed", channel), reply)
        return ws

    def assert_no_message(self, ws, seconds=0.5):
        """Nothing arrives on ws for `seconds` (a quiet period: used only to show that
        something did NOT happen, after a positive event that should have come after it)."""
        try:
            op, payload = ws.recv_message(timeout=seconds)
        except socket.timeout:
            return
        self.fail(f"unexpected frame: {op} {payload[:300]!r}")


def run_module():
    """Entry point of a test_hostile_*.py file: runs it, stops the shared servers, exits
    nonzero on failure."""
    prog = None
    try:
        prog = unittest.main(verbosity=2, exit=False)
    finally:
        teardown_infra()
    sys.exit(0 if prog and prog.result.wasSuccessful() else 1)
