"""A tiny Redis client speaking RESP over a plain socket (blocking and asyncio flavours),
enough for the integration tests: PUBLISH, PUBSUB NUMSUB, PING."""

import asyncio
import socket


def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RedisError(Exception):
    pass


class RedisConn:
    """A blocking RESP connection: command(*args) returns the decoded reply."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise RedisError(f"bad RESP line {line!r}")

    def command(self, *args):
        self.sock.sendall(_resp_encode(args))
        reply = self._read()
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def pipeline(self, commands):
        """Send many commands at once, return the list of replies."""
        self.sock.sendall(b"".join(_resp_encode(c) for c in commands))
        return [self._read() for _ in commands]

    def publish(self, channel, payload):
        """PUBLISH; returns the number of Redis subscribers that received it."""
        return self.command("PUBLISH", channel, payload)


class AsyncRedis:
    """A minimal asyncio RESP client for publishing without blocking the test's event loop."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port, host="127.0.0.1"):
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def close(self):
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass

    async def _read(self):
        line = (await self.reader.readuntil(b"\r\n"))[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = await self.reader.readexactly(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return [await self._read() for _ in range(max(n, 0))]
        raise RedisError(f"bad RESP line {line!r}")

    async def command(self, *args):
        self.writer.write(_resp_encode(args))
        await self.writer.drain()
        reply = await self._read()
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def pipeline(self, commands):
        self.writer.write(b"".join(_resp_encode(c) for c in commands))
        await self.writer.drain()
        replies = [await self._read() for _ in commands]
        for r in replies:
            if isinstance(r, RedisError):
                raise r
        return replies

    async def publish(self, channel, payload):
        return await self.command("PUBLISH", channel, payload)

    async def publish_many(self, pairs):
        """Pipeline PUBLISHes of (channel, payload) pairs, in order."""
        return await self.pipeline([("PUBLISH", c, p) for c, p in pairs])
