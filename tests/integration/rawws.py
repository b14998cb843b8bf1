"""A hand-made, blocking WebSocket client over a raw socket: lets a test control the socket
(tiny SO_RCVBUF, never reading, fragmented frames) and see exactly which bytes and close codes
arrive."""

import base64
import hashlib
import json
import os
import socket
import struct
import time

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class HandshakeRefused(Exception):
    def __init__(self, status, head):
        super().__init__(f"handshake refused with HTTP {status}")
        self.status = status
        self.head = head


class RawWS:
    def __init__(self, port, path="/ws", host="127.0.0.1", rcvbuf=None, timeout=10.0,
                 extensions=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n"
            + (f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else "")
            + "\r\n"
        )
        self.rsv1 = False  # of the last frame received: set on a compressed message
        self.sock.sendall(req.encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed during handshake; got {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if status != 101:
            self.sock.close()
            raise HandshakeRefused(status, head)
        self.headers = headers = {
            k.strip().lower(): v.strip()
            for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
        }
        expect = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != expect:
            raise AssertionError(f"bad Sec-WebSocket-Accept in {head!r}")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send_frame(self, opcode, payload, fin=True):
        if isinstance(payload, str):
            payload = payload.encode()
        header = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_text(self, text):
        self.send_frame(OP_TEXT, text)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("connection closed by peer")
            self.buf += chunk

    def recv_frame(self, timeout=None):
        """One frame: (fin, opcode, payload bytes). Raises EOFError on EOF."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        if b1 & 0x80:
            raise AssertionError("server frame is masked")
        self._need(off + n)
        self.rsv1 = bool(b0 & 0x40)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_message(self, timeout=None):
        """A complete data message (text/binary, reassembled) or a control frame:
        returns (opcode, payload). Pings are answered automatically."""
        parts, first_op = [], None
        while True:
            fin, op, payload = self.recv_frame(timeout)
            if op == OP_PING:
                self.send_frame(OP_PONG, payload)
                continue
            if op in (OP_CLOSE, OP_PONG):
                return op, payload
            if op != OP_CONT:
                first_op = op
            parts.append(payload)
            if fin:
                return first_op, b"".join(parts)

    def recv_json(self, timeout=None):
        op, payload = self.recv_message(timeout)
        if op != OP_TEXT:
            raise AssertionError(f"expected a text frame, got opcode {op}: {payload[:200]!r}")
        return json.loads(payload)

    def read_until_closed(self, timeout):
        """Read everything until a close frame, EOF or reset. Returns (messages, close_code,
        how) where how is 'close-frame', 'eof', 'reset' or 'timeout'."""
        messages = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return messages, None, "timeout"
            try:
                op, payload = self.recv_message(timeout=remaining)
            except socket.timeout:
                return messages, None, "timeout"
            except EOFError:
                return messages, None, "eof"
            except (ConnectionResetError, BrokenPipeError):
                return messages, None, "reset"
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return messages, code, "close-frame"
            messages.append((op, payload))
