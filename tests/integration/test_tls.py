"""The optional TLS listener: HTTPS and WSS with a certificate made for the test."""

import asyncio
import os
import re
import socket
import ssl
import subprocess
import urllib.request

from harness import main, recv_json, subscribe
from pg import HistoryTestCase


class TlsTest(HistoryTestCase):
    async def test_wss_and_https(self):
        cert, key = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        redis = self.start_redis()
        h = self.start_herald(redis, "--tls-cert", cert, "--tls-key", key, wait=False)
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False

        def https(path):
            with urllib.request.urlopen(f"https://127.0.0.1:{h.port}{path}", context=ctx,
                                        timeout=10) as r:
                return r.status, r.read()

        async def healthy():
            for _ in range(100):
                try:
                    return await asyncio.to_thread(https, "/healthz")
                except OSError:
                    await asyncio.sleep(0.1)
            raise AssertionError("herald did not answer over HTTPS")

        status, _ = await healthy()
        self.assertEqual(status, 200)
        ws = await self.connect(f"wss://127.0.0.1:{h.port}/ws", ssl=ctx)
        await subscribe(ws, "secure")
        await asyncio.to_thread(redis.publish, "secure", '{"ok":true}')
        m = await recv_json(ws)
        self.assertEqual((m["channel"], m["data"]), ("secure", {"ok": True}))
        # plain HTTP on the TLS port gets nothing useful
        with self.assertRaises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{h.port}/healthz", timeout=5).read()
        # no HTTP/2 over TLS either: ALPN settles on http/1.1, and an HTTP/2 preface is not
        # read as HTTP/2 (an HTTP/1.1 refusal or a close, never a SETTINGS frame)
        alpn, answer = await asyncio.to_thread(self.h2_attempt, h.port, cert)
        self.assertEqual(alpn, "http/1.1")
        self.assertTrue(answer == b"" or re.match(rb"HTTP/1\.[01] 4\d\d ", answer), answer)
        status, _ = await asyncio.to_thread(https, "/healthz")
        self.assertEqual(status, 200)

    @staticmethod
    def h2_attempt(port, cert):
        """Offers h2 then http/1.1 by ALPN and sends the HTTP/2 connection preface: returns
        the protocol the server chose and what it answered."""
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as tls:
                chosen = tls.selected_alpn_protocol()
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                            b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                data = b""
                try:
                    while len(data) < 4096:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except (OSError, ssl.SSLError):
                    pass
                return chosen, data


if __name__ == "__main__":
    main()
