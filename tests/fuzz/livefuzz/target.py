"""The system under test and its oracles: a real redis-server, a real PostgreSQL and one herald
(the ASan/UBSan build), started and stopped by PID with the integration tests' helpers.

After each case the oracles ask: is the gateway alive; does /healthz answer 200 on a fresh
connection in time; is its log free of sanitizer reports; are the channels' heads in
PostgreSQL unchanged when the case held no publishing credential; does a canary WebSocket
client, subscribed since the gateway started, still get a message published on the canary
channel."""

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

import harness
import jwt_util
from harness import OP_CLOSE, OP_TEXT, RawWS, http_raw
from pg import PG_USER, PostgresServer
from resp import RedisConn

from .seeds import CANARY, CHANNELS
from .steps import Expander, Session

API_KEY = "live-fuzz-api-key-4b1d9e"
WEEK = 7 * 24 * 3600
# small limits, so that a few bytes reach every limit path
GATEWAY_LIMITS = [
    "--max-publish-bytes", "4k", "--max-frame-bytes", "2k", "--client-queue-bytes", "64k",
    "--rate-limit", "20", "--rate-burst", "10", "--max-subscriptions", "4",
    "--max-connections", "40", "--max-connections-per-ip", "12", "--recent-bytes", "8k",
    "--history-max", "200", "--replay-max", "50", "--max-json-depth", "8",
    "--drain-seconds", "1", "--prune-interval", "5s", "--db-pool", "2",
]
# auth: JWTs and the API key; deflate: the same with HERALD_DEFLATE=1; open: no auth at all
PROFILES = {
    "auth": {"auth": True, "env": {}},
    "deflate": {"auth": True, "env": {"HERALD_DEFLATE": "1"}},
    "open": {"auth": False, "env": {}},
}
STATIC_FILES = {
    "index.html": b"<!doctype html><title>live fuzz</title>\n",
    "hello.txt": b"hello\n",
    "data.json": b'{"static":true}\n',
    "sub/page.html": b"<p>sub</p>\n",
    ".hidden": b"secret\n",
    "big.bin": bytes(range(256)) * 256,
}
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")
DYING_SECONDS = 1.0  # a gateway that aborts takes a moment to be gone
REPORT_SECONDS = 30  # symbolizing a report takes a while on a loaded machine
HEADS_SQL = "SELECT name || ' ' || last_seq FROM herald_channels"


@dataclass
class Failure:
    kind: str  # crash, died, hang, invariant, leak
    signature: str  # equal for two failures that are the same bug
    detail: str  # the sanitizer report, or what the oracle saw


def credentials():
    """The values of the placeholders cases use (seeds.py says who may do what)."""
    return {
        "READ": jwt_util.token(channels=["*"], publish=[], exp_in=WEEK),
        "PUB": jwt_util.token(channels=["*"], publish=["*"], exp_in=WEEK),
        "API": API_KEY,
        "BAD": jwt_util.wrong_secret(channels=["*"], publish=["*"]),
        "EXPIRED": jwt_util.expired(channels=["*"]),
        "LONG": jwt_util.token(sub="u" * 5000, channels=["*"], exp_in=WEEK),  # over 4 KiB
    }


# -- sanitizer reports

_FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ (?:in (\S+)|\s*\(([^)]+)\))")
_ASSERTION = re.compile(r"(\S+:\d+: \S+: Assertion .*)")
_RUNTIME_ERROR = re.compile(r"([\w./-]+):(\d+):\d+: runtime error: (.*)")
_NOISE_FRAMES = ("__interceptor_", "__asan", "__sanitizer", "__ubsan", "__lsan")


def _frame_names(lines, limit=3):
    """The first `limit` frames of the first stack in `lines` that are not the sanitizer's
    own: a function name, or module+offset for a library built without symbols."""
    names = []
    for line in lines:
        m = _FRAME.match(line)
        if not m:
            if names:
                break  # the first stack ended
            continue
        name = m.group(1) or os.path.basename(m.group(2))
        if not name.startswith(_NOISE_FRAMES):
            names.append(name)
        if len(names) == limit:
            break
    return names


def _report_lines(lines, start):
    """The report that starts at lines[start], up to its SUMMARY line (shadow bytes and
    the legend after it are left out)."""
    end = start
    while end < len(lines) and end - start < 80:
        end += 1
        if lines[end - 1].startswith("SUMMARY:"):
            break
    return lines[start:end]


def _freed_in(report):
    """For a use after free or a double free: the function that freed the memory, which
    tells apart bugs that crash in the same place."""
    for i, line in enumerate(report):
        if line.startswith("freed by thread"):
            names = _frame_names(report[i + 1:], limit=2)
            return f" (freed in {' < '.join(names)})" if names else ""
    return ""


def sanitizer_failure(text):
    """The first sanitizer report in a herald log, as a Failure (None when there is none)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "ERROR: AddressSanitizer" in line:
            kind = re.search(r"AddressSanitizer: ((?:attempting )?[\w-]+)", line).group(1)
            report = _report_lines(lines, i)
            frames = " < ".join(_frame_names(report[1:]))
            return Failure("crash", f"asan {kind} in {frames}{_freed_in(report)}",
                           "\n".join(report))
        if "ERROR: LeakSanitizer" in line:
            report = _report_lines(lines, i)
            frames = " < ".join(_frame_names(report[1:], limit=4))
            return Failure("leak", f"lsan leak from {frames}", "\n".join(report))
        m = _RUNTIME_ERROR.search(line)
        if m:
            what = re.sub(r"-?\b\d+\b", "N", m.group(3))[:120]
            report = lines[i:i + 20]
            return Failure("crash", f"ubsan {os.path.basename(m.group(1))}:{m.group(2)}: {what}",
                           "\n".join(report))
    return None


def stack_of(pid):
    """The stack of a hung process, by gdb when it is installed (else a note saying so)."""
    gdb = shutil.which("gdb")
    if not gdb:
        return "(install gdb for the stack)"
    try:
        run = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "bt"],
                             capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "(gdb timed out)"
    return "\n".join(line for line in run.stdout.splitlines() if line.startswith("#"))


# -- helpers that talk to the processes


class HeadReader:
    """SQL through one long-lived psql: a query costs a fraction of a millisecond, against
    tens of milliseconds for a new psql each time."""

    SENTINEL = "--live-fuzz-end--"

    def __init__(self, port):
        self.proc = subprocess.Popen(
            ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, "-d", "herald", "-Atq"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=harness._set_pdeathsig)

    def value(self, sql):
        self.proc.stdin.write(f"{sql};\n\\echo {self.SENTINEL}\n")
        self.proc.stdin.flush()
        lines = []
        for line in self.proc.stdout:
            if line.strip() == self.SENTINEL:
                return "\n".join(lines)
            lines.append(line.rstrip("\n"))
        raise RuntimeError("psql exited")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


class CanaryWatcher:
    """A WebSocket client subscribed to the canary channel, and to every channel cases use,
    for the gateway's whole life; a thread reads everything it gets (so it never becomes a
    slow consumer while a case runs) and records the canary numbers, how the connection
    ended, and the first text frame that was not JSON (whatever a case published, the
    gateway sends JSON only)."""

    def __init__(self, port, token, timeout):
        self.ws = RawWS(port, path=f"/ws?token={token}", timeout=timeout)
        for channel in [CANARY] + [c for c in CHANNELS if c != CANARY]:
            self.ws.send_json({"op": "subscribe", "channel": channel})
            while self.ws.recv_json().get("op") != "subscribed":
                pass
        self.not_json = None  # the first frame that was not JSON, and why
        self.seen = set()
        self.ended = None  # how the connection ended, once it has
        self.stopping = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="canary", daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping:
            try:
                op, payload = self.ws.recv_message(timeout=0.5)
            except socket.timeout:
                continue
            except (EOFError, OSError) as err:
                self._end(f"connection lost ({type(err).__name__})")
                return
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self._end(f"closed with {code}")
                return
            if op == OP_TEXT:
                self._record(payload)

    def _record(self, payload):
        try:
            msg = json.loads(payload)
        except RecursionError:
            return  # deeper than Python reads, not wrong
        except ValueError as err:  # a NUL anywhere is refused here too
            if self.not_json is None:
                self.not_json = f"{err}: {payload[:200]!r}"
            return
        try:
            number = msg["data"]["canary"]
        except (TypeError, KeyError):
            return  # another channel's message, or a reply
        with self.cond:
            self.seen.add(number)
            self.cond.notify_all()

    def _end(self, how):
        with self.cond:
            self.ended = how
            self.cond.notify_all()

    def wait_for(self, number, timeout):
        """True once canary `number` came; False on timeout or when the connection ended."""
        with self.cond:
            self.cond.wait_for(lambda: number in self.seen or self.ended, timeout)
            return number in self.seen

    def stop(self):
        self.stopping = True
        self.ws.close()
        self.thread.join(timeout=5)


class Target:
    """Redis, PostgreSQL and a herald in `workdir`. The gateway is (re)started per profile;
    check() runs the oracles. Every process is stopped by PID in close()."""

    def __init__(self, workdir, hang_seconds, canary_seconds):
        self.workdir = workdir
        self.hang_seconds = hang_seconds
        self.canary_seconds = canary_seconds
        self.credentials = credentials()
        self.canary_token = jwt_util.token(channels=CHANNELS, exp_in=WEEK)
        self.expand = Expander(self.credentials)
        self.redis = self.pg = self.heads = self.publisher = self.static_dir = None
        self.herald = self.profile = self.watcher = None
        self.log_offset = 0
        self.baseline = {}  # each channel's head after the last check
        self.canary_number = 0
        self.restarts = 0
        self.exit_failures = []  # Failures seen when a gateway stopped

    # -- processes

    def start(self):
        self.static_dir = self._make_static_dir()
        self.redis = harness.RedisServer(self.workdir).start()
        self.publisher = RedisConn(self.redis.port)
        self.pg = PostgresServer(self.workdir).init().start().create_db()

    def _make_static_dir(self):
        root = os.path.join(self.workdir, "static")
        for name, data in STATIC_FILES.items():
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        return root

    def _gateway_args(self, profile):
        args = ["--database-url", self.pg.url, "--migrate-on-start", "--static-dir",
                self.static_dir] + GATEWAY_LIMITS
        if PROFILES[profile]["auth"]:
            args += ["--jwt-secret", jwt_util.SECRET, "--api-key", API_KEY]
        return args

    def start_gateway(self, profile):
        self.profile = profile
        self.herald = harness.Herald(self.workdir, self.redis.url, self._gateway_args(profile),
                                     env=PROFILES[profile]["env"])
        # a port used before means a log that holds an earlier gateway's lines
        old_log = os.path.join(self.workdir, f"herald-{self.herald.port}.log")
        self.log_offset = os.path.getsize(old_log) if os.path.exists(old_log) else 0
        self.herald.start(timeout=60)
        self.herald.wait_metric("herald_db_up", lambda v: v == 1, timeout=60)
        if self.heads is None:  # the first start created the schema
            self.heads = HeadReader(self.pg.port)
        self.watcher = CanaryWatcher(self.herald.port, self.canary_token, self.hang_seconds)
        self.baseline = self._heads()

    def stop_gateway(self):
        """Stops the gateway (SIGTERM, then SIGKILL). A sanitizer report at exit (leaks) or a
        bad exit status belongs to no single case: it goes to exit_failures."""
        if self.herald is None:
            return
        if self.watcher:
            self.watcher.stop()
        was_alive = self.herald.alive()
        status = self.herald.stop(timeout=5)
        failure = self._new_sanitizer_report()
        if failure is None and was_alive and status != 0:
            failure = Failure("died", f"exit status {status} on SIGTERM",
                              self.herald.log_text(tail_lines=30))
        if failure:
            self.exit_failures.append(failure)
        self.herald = self.watcher = None

    def take_exit_failures(self):
        taken, self.exit_failures = self.exit_failures, []
        return taken

    def restart_gateway(self, hung):
        """A new gateway after a failure. A hung one is killed: how it ends is no news."""
        if hung:
            self.watcher.stop()
            self.herald.kill()
            self.herald = self.watcher = None
        self.stop_gateway()
        self.restarts += 1
        self.start_gateway(self.profile)

    def close(self):
        """Stops everything this target started (a second call does nothing)."""
        try:
            self.stop_gateway()
        finally:
            if self.heads:
                self.heads.close()
            if self.publisher:
                self.publisher.close()
            if self.pg:
                self.pg.stop_fast()
                self.pg.kill()
            if self.redis:
                self.redis.kill()
            self.heads = self.publisher = self.pg = self.redis = None

    # -- running a case

    def session(self):
        return Session(self.herald.port, self.publisher, self.expand)

    def strict(self, case):
        """Whether the heads may not move during `case`: auth is on and the case holds no
        credential that may publish (seeds.PUBLISH_CREDENTIALS)."""
        text = json.dumps(case["steps"])
        return PROFILES[self.profile]["auth"] and "{{PUB}}" not in text and "{{API}}" not in text

    # -- oracles

    def _new_log(self):
        """What the gateway logged since the last call, in whole lines while it runs (a
        marker must not be cut in two between calls)."""
        with open(self.herald.log_path, "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        if self.herald.alive():
            data = data[:data.rfind(b"\n") + 1]
        self.log_offset += len(data)
        return data.decode("utf-8", "replace")

    def _new_sanitizer_report(self):
        text = self._new_log()
        if not any(m in text for m in SANITIZER_MARKERS):
            return None
        # the sanitizers halt the process once the report is written: wait for the whole one
        self.herald.wait_exit(REPORT_SECONDS)
        return sanitizer_failure(text + self._new_log())

    def _process_failure(self, grace=0.0):
        """A Failure if the gateway reported an error or died. `grace`: after another
        oracle failed, seconds to let a dying gateway end, so that its death is the news."""
        if grace:
            self.herald.wait_exit(grace)
        failure = self._new_sanitizer_report()
        if failure is None and not self.herald.alive():
            status = self.herald.proc.returncode
            what = f"signal {-status}" if status < 0 else f"exit status {status}"
            tail = self.herald.log_text(tail_lines=30)
            assertion = _ASSERTION.search(tail)  # an abort() from assert() in a library
            if assertion:
                what += ": " + assertion.group(1)
            failure = Failure("died", f"died with {what}", tail)
        return failure

    def _healthz(self):
        request = b"GET /healthz HTTP/1.1\r\nHost: oracle\r\nConnection: close\r\n\r\n"
        started = time.monotonic()
        try:
            status, _, _ = http_raw("127.0.0.1", self.herald.port, request,
                                    timeout=self.hang_seconds)
        except (OSError, ValueError, IndexError) as err:
            failure = self._process_failure(DYING_SECONDS)
            if failure:
                return failure
            if isinstance(err, socket.timeout):
                return self._hang()
            return Failure("invariant", f"/healthz failed: {type(err).__name__}", str(err))
        if status != 200:
            return Failure("invariant", f"/healthz answered {status}",
                           f"after {time.monotonic() - started:.2f} s")
        return None

    def _hang(self):
        # the stack goes in the detail, not the signature: samples of one busy loop differ
        stack = stack_of(self.herald.pid)
        return Failure("hang", "hang: /healthz did not answer",
                       f"no answer within {self.hang_seconds} s; its stack:\n{stack}")

    def _publish_canary(self):
        """POSTs the next canary message with the API key; returns a Failure or None."""
        self.canary_number += 1
        body = json.dumps({"canary": self.canary_number}).encode()
        request = (b"POST /v1/channels/%s/messages HTTP/1.1\r\nHost: oracle\r\n"
                   b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                   % (CANARY.encode(), API_KEY.encode(), len(body), body))
        try:
            status, _, answer = http_raw("127.0.0.1", self.herald.port, request,
                                         timeout=self.hang_seconds)
        except (OSError, ValueError, IndexError) as err:
            return self._process_failure(DYING_SECONDS) or Failure(
                "invariant", "canary publish failed", f"{type(err).__name__}: {err}")
        if status != 201:
            return Failure("invariant", f"canary publish answered {status}", answer[:300].decode(
                "latin-1"))
        return None

    def _canary_gone(self):
        """A Failure if the canary subscriber lost its connection (a dead gateway's own
        Failure first: it says why)."""
        if not self.watcher.ended:
            return None
        return self._process_failure(DYING_SECONDS) or Failure(
            "invariant", f"canary client {self.watcher.ended}",
            "the canary subscriber lost its connection")

    def _canary(self):
        failure = self._canary_gone() or self._publish_canary()
        if failure or self.watcher.wait_for(self.canary_number, self.canary_seconds):
            return failure
        return self._canary_gone() or self._process_failure(DYING_SECONDS) or Failure(
            "invariant", "canary not delivered",
            f"canary {self.canary_number} was published (201) but did not come within"
            f" {self.canary_seconds} s")

    def _heads(self):
        """Each channel's head (last_seq) in PostgreSQL."""
        rows = self.heads.value(HEADS_SQL).splitlines()
        return {name: int(seq) for name, seq in (row.rsplit(" ", 1) for row in rows)}

    def check(self, strict):
        """Runs the oracles after a case; returns the first Failure, or None."""
        failure = self._process_failure() or self._healthz()
        if failure:
            return failure
        heads = self._heads()
        if strict and heads != self.baseline:
            moved = ", ".join(f"{name} {self.baseline.get(name, 0)} -> {seq}"
                              for name, seq in sorted(heads.items())
                              if seq != self.baseline.get(name, 0))
            self.baseline = heads
            return Failure("invariant", "heads moved without a publishing credential", moved)
        failure = self._canary()
        # the canary's own publish moved its head by one; anything else moved it too
        self.baseline = self._heads()
        if not failure and self.watcher.not_json:
            failure = Failure("invariant", "a text frame that is not JSON", self.watcher.not_json)
            self.watcher.not_json = None
        return failure or self._process_failure()
