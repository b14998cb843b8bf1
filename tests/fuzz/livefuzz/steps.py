"""Runs a case: a list of steps on numbered TCP connections to the gateway and on Redis.

A case is plain JSON so that a failing one can be saved, read, replayed and shrunk. Byte
strings are JSON strings holding one byte per character (latin-1), and may contain
placeholders that are expanded only when the step runs (see Expander): credentials, whose
values depend on the run (JWTs carry an expiry), and long runs of one byte, which keep saved
cases small.

Steps (every field but "op" and "conn" is optional where a default is given):
    {"op": "connect", "conn": 0}
    {"op": "send", "conn": 0, "data": "GET / HTTP/1.1\\r\\n...", "splits": [5, 40], "delay_ms": 2}
    {"op": "frame", "conn": 0, "opcode": 1, "payload": "...", "fin": true, "rsv": 0,
     "mask": "0a1b2c3d" or null, "deflate": false, "length": null, "width": null,
     "splits": [...], "delay_ms": 0}
    {"op": "read", "conn": 0, "ms": 100, "until": "\\r\\n\\r\\n"}
    {"op": "shutdown", "conn": 0}    half-close: FIN, the connection stays readable
    {"op": "abort", "conn": 0}       RST (SO_LINGER 0)
    {"op": "close", "conn": 0}
    {"op": "redis", "channel": "fz.a", "payload": "..."}
    {"op": "sleep", "ms": 20}

A peer that refuses, resets or stops reading is part of the game: such errors drop the
connection (later steps on it are skipped), they never stop the case.
"""

import re
import socket
import struct
import time
import zlib

FILL_MAX = 4 << 20  # a mutated fill count cannot ask for gigabytes
READ_MAX = 1 << 20  # bytes one read step keeps reading before it stops
SEND_TIMEOUT = 1.0  # a gateway that stops reading must not stall the fuzzer
CONNECT_TIMEOUT = 2.0
TRANSCRIPT_BYTES = 160  # of each read, kept for the failure report

_PLACEHOLDER = re.compile(r"\{\{([A-Z]+)(?::([0-9a-f]{2}):([0-9]{1,9}))?\}\}")


def fill(byte, count):
    """Placeholder for `count` copies of the byte `byte` (an int or a 1-char string)."""
    if isinstance(byte, str):
        byte = ord(byte)
    return "{{FILL:%02x:%d}}" % (byte, count)


def expanded_len(text):
    """Length of `text` once its fills are expanded (credentials counted as written)."""
    extra = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.group(1) == "FILL" and m.group(2):  # a bare {{FILL}} stays as written
            extra += min(int(m.group(3)), FILL_MAX) - len(m.group(0))
    return len(text) + extra


class Expander:
    """Turns step text into bytes: {{NAME}} becomes the credential NAME, {{FILL:hh:n}} n
    bytes 0xhh. Anything else, including a placeholder that mutation broke, stays as
    written."""

    def __init__(self, credentials):
        self.credentials = dict(credentials)

    def _one(self, m):
        name = m.group(1)
        if name == "FILL" and m.group(2):
            return chr(int(m.group(2), 16)) * min(int(m.group(3)), FILL_MAX)
        if m.group(2) is None and name in self.credentials:
            return self.credentials[name]
        return m.group(0)

    def __call__(self, text):
        return _PLACEHOLDER.sub(self._one, text).encode("latin-1")


def deflate_message(payload):
    """permessage-deflate (RFC 7692): one message compressed on its own, the trailing
    00 00 ff ff of the sync flush removed."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = z.compress(payload) + z.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data


def _length_field(n, masked, width):
    """The 7-bit length and its extension. `width` 16 or 64 forces a longer (non-minimal)
    encoding; n may exceed what the frame carries (a lying length)."""
    mask_bit = 0x80 if masked else 0
    if width is None:
        width = 0 if n < 126 else 16 if n < 65536 else 64
    if width == 0:
        return bytes([mask_bit | (n & 0x7F)])
    if width == 16:
        return bytes([mask_bit | 126]) + struct.pack("!H", n & 0xFFFF)
    return bytes([mask_bit | 127]) + struct.pack("!Q", n & 0xFFFFFFFFFFFFFFFF)


def build_frame(step, expand):
    """The bytes of a client frame step (see the module docstring)."""
    payload = expand(step.get("payload", ""))
    rsv = step.get("rsv", 0)
    if step.get("deflate"):
        payload = deflate_message(payload)
        rsv |= 4  # RSV1: compressed
    b0 = (0x80 if step.get("fin", True) else 0) | (rsv & 7) << 4 | (step["opcode"] & 0x0F)
    declared = step.get("length")
    mask = bytes.fromhex(step["mask"]) if step.get("mask") else None
    head = bytes([b0]) + _length_field(len(payload) if declared is None else declared,
                                       mask is not None, step.get("width"))
    if mask is None:
        return head + payload
    return head + mask + _masked(payload, mask)


def _masked(payload, mask):
    """payload XOR the repeated mask, as one big-integer operation (payloads reach MiBs)."""
    key = (mask * (len(payload) // 4 + 1))[:len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
    return value.to_bytes(len(payload), "big")


def split_points(data_len, splits):
    """The pieces' boundaries: the given offsets inside (0, data_len), sorted, deduplicated."""
    return sorted({s for s in splits if 0 < s < data_len})


class Session:
    """Runs the steps of one case against the gateway on 127.0.0.1:`port`. `redis` is a
    resp.RedisConn; `transcript` collects what each step saw, for the failure report."""

    def __init__(self, port, redis, expand):
        self.port = port
        self.redis = redis
        self.expand = expand
        self.conns = {}
        self.transcript = []

    def run(self, steps):
        try:
            for index, step in enumerate(steps):
                handler = getattr(self, "_" + step["op"], None)
                if handler is None:
                    raise ValueError(f"step {index}: unknown op {step['op']!r}")
                handler(step)
        finally:
            self.close_all()

    def close_all(self):
        for sock in self.conns.values():
            sock.close()
        self.conns.clear()

    def _note(self, step, what):
        self.transcript.append(f"{step['op']} {step.get('conn', '')}: {what}".rstrip())

    def _drop(self, step, err):
        sock = self.conns.pop(step["conn"], None)
        if sock:
            sock.close()
        self._note(step, f"dropped ({type(err).__name__}: {err})")

    def _connect(self, step):
        old = self.conns.pop(step["conn"], None)
        if old:
            old.close()
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=CONNECT_TIMEOUT)
        except OSError as err:
            self._note(step, f"refused ({err})")
            return
        # each write leaves as its own segment, so that split points reach the server
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(SEND_TIMEOUT)
        self.conns[step["conn"]] = sock

    def _write(self, step, data):
        sock = self.conns.get(step["conn"])
        if sock is None:
            return
        bounds = [0] + split_points(len(data), step.get("splits", [])) + [len(data)]
        delay = step.get("delay_ms", 0) / 1000.0
        try:
            for i in range(len(bounds) - 1):
                if i and delay:
                    time.sleep(delay)
                sock.sendall(data[bounds[i]:bounds[i + 1]])
        except OSError as err:
            self._drop(step, err)

    def _send(self, step):
        self._write(step, self.expand(step["data"]))

    def _frame(self, step):
        self._write(step, build_frame(step, self.expand))

    def _read(self, step):
        sock = self.conns.get(step["conn"])
        if sock is None:
            return
        until = step.get("until", "").encode("latin-1")
        deadline = time.monotonic() + step.get("ms", 100) / 1000.0
        got = b""
        try:
            while len(got) < READ_MAX and not (until and until in got):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    self._note(step, f"eof after {got[:TRANSCRIPT_BYTES]!r}")
                    return
                got += chunk
        except socket.timeout:
            pass
        except OSError as err:
            self._drop(step, err)
            return
        finally:
            if step["conn"] in self.conns:
                sock.settimeout(SEND_TIMEOUT)
        self._note(step, repr(got[:TRANSCRIPT_BYTES]))

    def _shutdown(self, step):
        sock = self.conns.get(step["conn"])
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as err:
            self._drop(step, err)

    def _abort(self, step):
        sock = self.conns.pop(step["conn"], None)
        if sock is None:
            return
        # linger on with a zero timeout: close() sends RST instead of FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def _close(self, step):
        sock = self.conns.pop(step["conn"], None)
        if sock:
            sock.close()

    def _redis(self, step):
        receivers = self.redis.publish(step["channel"], self.expand(step["payload"]))
        self._note(step, f"{step['channel']} -> {receivers} subscribers")

    def _sleep(self, step):
        time.sleep(step.get("ms", 10) / 1000.0)
