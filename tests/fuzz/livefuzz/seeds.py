"""The seed corpus: well-formed inputs the mutators start from. HTTP requests are built as
Request structures (so that mutators can work on headers and bodies), WebSocket messages and
Redis payloads as text. Text holds one byte per character; credentials and long fills are
placeholders (steps.py)."""

import base64
import json
from dataclasses import dataclass, field

from .steps import expanded_len, fill

CANARY = "canary"  # the oracle's channel (target.py); cases may read it, not publish on it
CHANNELS = ["fz.a", "fz.b", "fz:c", CANARY]
BAD_CHANNELS = ["", "a b", "x" * 201, "caf\xe9", "a/b", "..", "%2e"]
# credentials a case may present (target.py makes them): READ may read every channel and
# publish nowhere; PUB and API may publish; the others are refused
READ_ONLY_CREDENTIALS = ["READ", "BAD", "EXPIRED", "LONG"]
PUBLISH_CREDENTIALS = ["PUB", "API"]
STATIC_PATHS = ["/", "/index.html", "/hello.txt", "/sub/page.html", "/sub/", "/.hidden",
                "/big.bin", "/missing", "/../etc/passwd", "/%2e%2e/hello.txt"]
H2_SETTINGS = "AAMAAABkAARAAAAAAAIAAAAA"
H2_PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# HPACK: :method GET, :scheme http, :authority gw (indexed names), then :path as a literal
H2_GET_HEADERS = "\x82\x86\x41\x02gw\x04\x08/healthz"


@dataclass
class Request:
    """One HTTP request. `tail` is sent right after the body (stray bytes, a pipelined
    request); `eol` ends every line of the head."""
    method: str
    target: str
    version: str = "HTTP/1.1"
    headers: list = field(default_factory=list)  # [name, value] pairs, in order
    body: str = ""
    tail: str = ""
    eol: str = "\r\n"

    def text(self):
        head = [f"{self.method} {self.target} {self.version}"]
        head += [f"{name}: {value}" for name, value in self.headers]
        return self.eol.join(head) + self.eol + self.eol + self.body + self.tail

    def set_header(self, name, value):
        """Replaces every header `name` (case-insensitive) by one, or appends it."""
        self.drop_header(name)
        self.headers.append([name, value])

    def drop_header(self, name):
        self.headers = [h for h in self.headers if h[0].lower() != name.lower()]

    def set_body(self, body):
        """The body with a matching Content-Length."""
        self.body = body
        self.set_header("Content-Length", str(expanded_len(body)))


def credential(rng, allow_publish):
    """A placeholder for a credential (None: send none)."""
    pool = READ_ONLY_CREDENTIALS * 3 + [None] + (PUBLISH_CREDENTIALS if allow_publish else [])
    name = rng.choice(pool)
    return None if name is None else "{{%s}}" % name


def with_credential(req, cred, rng):
    """Presents `cred` in an Authorization header or a ?token= argument."""
    if cred is None:
        return req
    if rng.random() < 0.7:
        req.headers.append(["Authorization", f"Bearer {cred}"])
    else:
        req.target += ("&" if "?" in req.target else "?") + f"token={cred}"
    return req


def json_data(rng):
    """Message data: mostly valid JSON, some that is not, some over the limits."""
    return rng.choice([
        '{"n":1}', '[1,2,3]', '"text"', '0.1', 'null', 'true', '{"spoof":true}',
        '{"a":{"b":{"c":[1,{"d":null}]}}}', '"caf\xc3\xa9"', '{"a":1,"a":2}',
        "[" * 20 + "]" * 20, "[" * 3000 + "]" * 3000, '1e400', '18446744073709551616',
        '{"x":"\\u0000"}', '"\xff\xfe"', '', 'not json', '{"unterminated":', ' {"n":2} ',
        '{"n":1\x00}', '[1\x00]',  # jansson alone takes a NUL after a number
        '{"big":"%s"}' % fill("a", rng.choice([1000, 3900, 5000, 20000])),
    ])


def get_messages(rng, allow_publish, channel=None):
    channel = channel or rng.choice(CHANNELS)
    query = rng.choice(["", "?since=0", "?since=3&limit=10", "?limit=1000", "?since=abc",
                        "?&since=1", "?since=1&&since=2", "?limit=0",
                        "?token=%s&since=5" % fill("a", 300)])
    req = Request("GET", f"/v1/channels/{channel}/messages{query}", headers=[["Host", "gw"]])
    return with_credential(req, credential(rng, allow_publish), rng)


def get_stream(rng, allow_publish, channel=None):
    """The live tail: SSE, long-poll or a Durable Streams read, held briefly at most."""
    channel = channel or rng.choice(CHANNELS)
    query = rng.choice(["?timeout=0", "?since=0&timeout=1", "?last=2&timeout=0",
                        "?since=1&epoch=0123456789abcdef&strict=1", "?offset=-1",
                        "?offset=now&live=long-poll&cursor=1", "?offset=-1&live=sse",
                        "?offset=x_1", "?since=1&last=1", "?timeout=301",
                        "?offset=%s_00000000000000000001" % fill("e", 40)])
    req = Request("GET", f"/v1/channels/{channel}/stream{query}", headers=[["Host", "gw"]])
    if rng.random() < 0.6:
        req.headers.append(["Accept", "text/event-stream"])
    if rng.random() < 0.3:
        req.headers.append(["Last-Event-ID", rng.choice(
            ["0123456789abcdef_00000000000000000001", "0_0", "x", fill("9", 100)])])
    return with_credential(req, credential(rng, allow_publish), rng)


def post_message(rng, allow_publish, channel=None):
    channel = channel or rng.choice(CHANNELS)
    req = Request("POST", f"/v1/channels/{channel}/messages",
                  headers=[["Host", "gw"], ["Content-Type", "application/json"]])
    if rng.random() < 0.3:
        req.headers.append(["Idempotency-Key", rng.choice(["k1", "order-42", "x" * 60])])
    with_credential(req, credential(rng, allow_publish), rng)
    req.set_body(json_data(rng))
    return req


def post_batch(rng, allow_publish):
    messages = []
    for _ in range(rng.randint(1, 4)):
        m = {"channel": rng.choice(CHANNELS), "data": json.loads(rng.choice(['1', '{"k":2}']))}
        if rng.random() < 0.3:
            m["idempotency_key"] = f"b{rng.randint(0, 9)}"
        messages.append(m)
    req = Request("POST", "/v1/messages",
                  headers=[["Host", "gw"], ["Content-Type", "application/json"]])
    with_credential(req, credential(rng, allow_publish), rng)
    req.set_body(json.dumps({"messages": messages}, separators=(",", ":")))
    return req


def probe(rng, allow_publish):
    return Request("GET", rng.choice(["/healthz", "/readyz", "/metrics"]),
                   headers=[["Host", "gw"], ["Accept", "*/*"]])


def static_file(rng, allow_publish):
    return Request("GET", rng.choice(STATIC_PATHS),
                   headers=[["Host", "gw"], ["User-Agent", "live-fuzz"]])


def keep_alive(rng, allow_publish):
    """HTTP/1.0 and keep-alive variants of a probe or a static file."""
    req = rng.choice([probe, static_file])(rng, allow_publish)
    req.version = rng.choice(["HTTP/1.0", "HTTP/1.1"])
    req.headers.append(["Connection", rng.choice(["keep-alive", "close", "Keep-Alive, TE"])])
    return req


def h2c_upgrade(rng, allow_publish):
    return Request("GET", rng.choice(["/healthz", "/", "/v1/channels/fz.a/messages"]),
                   headers=[["Host", "gw"], ["Connection", "Upgrade, HTTP2-Settings"],
                            ["Upgrade", "h2c"], ["HTTP2-Settings", H2_SETTINGS]])


def connect_method(rng, allow_publish):
    return Request("CONNECT", rng.choice(["127.0.0.1:80", "gw:443", "/ws"]),
                   headers=[["Host", "gw"]])


def ws_key(rng):
    return base64.b64encode(bytes(rng.getrandbits(8) for _ in range(16))).decode()


def ws_handshake(rng, allow_publish):
    """A WebSocket handshake on /ws, with and without subprotocol, extensions, origin and
    token."""
    req = Request("GET", "/ws", headers=[
        ["Host", "gw"], ["Upgrade", "websocket"], ["Connection", "Upgrade"],
        ["Sec-WebSocket-Key", ws_key(rng)], ["Sec-WebSocket-Version", "13"]])
    if rng.random() < 0.3:
        req.headers.append(["Sec-WebSocket-Protocol",
                            rng.choice(["herald", "http", "herald, http", "chat"])])
    if rng.random() < 0.5:
        req.headers.append(["Sec-WebSocket-Extensions", rng.choice([
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits=8; bogus",
            "x-webkit-deflate-frame"])])
    if rng.random() < 0.3:
        req.headers.append(["Origin", rng.choice(["https://a.example",
                                                  "https://" + fill("a", 600), "null"])])
    return with_credential(req, credential(rng, allow_publish), rng)


# (builder, weight): what a request-driven case starts from
HTTP_SEEDS = [
    (get_messages, 6), (get_stream, 4), (post_message, 6), (post_batch, 3), (probe, 3), (static_file, 3),
    (keep_alive, 2), (h2c_upgrade, 2), (connect_method, 1), (ws_handshake, 3),
]

RAW_SEEDS = [
    H2_PREFACE + "\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    "\r\n\r\n",
    "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + "\x00" * 32,  # a TLS ClientHello start
    "GET /healthz\r\n",  # HTTP/0.9
    "\x00" * 64,
    fill("A", 9000) + "\r\n\r\n",
]


def http_seed(rng, allow_publish):
    builders = [b for b, w in HTTP_SEEDS for _ in range(w)]
    return rng.choice(builders)(rng, allow_publish)


def client_message(rng, allow_publish):
    """A WebSocket client message (JSON text, mostly well formed)."""
    channel = rng.choice(CHANNELS) if rng.random() < 0.9 else rng.choice(BAD_CHANNELS)
    ident = rng.choice([None, 1, "req-7", "x" * 64, "x" * 65, 1.5, -1])
    kind = rng.choice(["subscribe"] * 4 + ["resume", "unsubscribe", "ping", "unknown", "junk"]
                      + ["publish"] * 2)
    msg = {"op": kind, "channel": channel}
    if kind == "resume":
        msg["op"] = "subscribe"
        msg["since"] = rng.choice([0, 1, 5, 1 << 53, (1 << 63) - 1, -1, "1"])
        if rng.random() < 0.5:
            msg["epoch"] = rng.choice(["", "0123456789abcdef", "x" * 100])
    elif kind == "publish":
        text = json.dumps(msg)[:-1] + ',"data":' + (json_data(rng) or "0") + "}"
        return text
    elif kind == "ping":
        msg = {"op": "ping"}
    elif kind == "junk":
        return rng.choice(["", "{", "[]", "null", '{"op":1}', '{"op":"ping","op":"ping"}',
                           "\xff\xfe", '{"op":"subscribe","channel":"fz.a"' + "}" * 3])
    if ident is not None:
        msg["id"] = ident
    return json.dumps(msg)


def redis_payload(rng, channel):
    """A Redis payload for `channel`: raw JSON, shaped like an envelope, not JSON, huge."""
    seq = rng.choice([1, 2, 7, 1 << 40, (1 << 63) - 1, 0, -1, "1", 1.5])
    envelope = {"op": "message", "channel": channel, "seq": seq, "ts": 0, "data": {"x": 1}}
    if rng.random() < 0.2:
        envelope["channel"] = rng.choice(CHANNELS)
    if rng.random() < 0.2:
        del envelope[rng.choice(list(envelope))]
    return rng.choice([
        '{"event":"raw"}', '[1,2]', '"s"', '42',
        json.dumps(envelope),
        "not json", "\xff\xfe\xfd", "", "[" * 5000,
        '{"n":1\x00}', '[7\x00]',
        '{"big":"%s"}' % fill("b", rng.choice([3000, 5000, 60000, 100000])),
        '{"op":"message","channel":"%s","seq":1}' % channel,
    ])


def _u32(n):
    return "".join(chr(n >> shift & 255) for shift in (24, 16, 8, 0))


def h2_frame(kind, flags, stream, payload, length=None):
    """An HTTP/2 frame; `length` may lie about the payload's."""
    n = len(payload) if length is None else length
    return _u32(n)[1:] + chr(kind) + chr(flags) + _u32(stream) + payload


def h2_frames(rng):
    """HTTP/2 frames after the preface: SETTINGS, then some of every kind, valid or not."""
    stream = rng.choice([1, 1, 1, 2, 3, 0x7FFFFFFF])
    choices = [
        lambda: h2_frame(1, 5, stream, H2_GET_HEADERS),  # HEADERS, END_STREAM|END_HEADERS
        lambda: h2_frame(1, 1, stream, H2_GET_HEADERS[:4]) + h2_frame(9, 4, stream,
                                                                      H2_GET_HEADERS[4:]),
        lambda: h2_frame(0, 1, stream, "data"),  # DATA
        lambda: h2_frame(4, 0, 0, "\x00\x04" + _u32(rng.choice([0, 65535, 1 << 31]))),
        lambda: h2_frame(4, 0, 0, "\x00\x05" + _u32(rng.choice([1, 16384, 1 << 24]))),
        lambda: h2_frame(4, 1, 0, ""),  # SETTINGS ack
        lambda: h2_frame(8, 0, rng.choice([0, stream]), _u32(rng.choice([0, 1, 0x7FFFFFFF]))),
        lambda: h2_frame(6, 0, 0, "pingping"),
        lambda: h2_frame(3, 0, stream, _u32(8)),  # RST_STREAM
        lambda: h2_frame(7, 0, 0, _u32(0) + _u32(0)),  # GOAWAY
        lambda: h2_frame(2, 0, stream, _u32(stream) + "\x10"),  # PRIORITY on itself
        lambda: h2_frame(0xFF, 0xFF, stream, "x" * 10),
        lambda: h2_frame(1, 4, stream, H2_GET_HEADERS, length=rng.choice([0, 1 << 20])),
        lambda: h2_frame(1, 4, stream, "\xff" * 20),  # a broken header block
    ]
    frames = [h2_frame(4, 0, 0, "")]
    frames += [rng.choice(choices)() for _ in range(rng.randint(1, 6))]
    return "".join(frames)
