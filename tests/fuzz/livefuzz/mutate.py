"""Mutators. Structure-aware ones change a seeds.Request (headers, framing, method, target,
version, body); byte-level ones change any text (flips, inserts, deletes, splices,
truncation). Each returns a short note of what it did, kept in the case for the reader."""

from .seeds import CHANNELS, H2_SETTINGS, json_data
from .steps import expanded_len, fill

METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
           "PRI", "get", "G ET", "", "GETT", "POST\x00", fill("G", 300)]
VERSIONS = ["HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "HTTP/11", "http/1.1",
            "", "HTTP/1.1 x", "HTTP/1.1\r\nHTTP/1.1"]
CONTENT_LENGTHS = ["0", "1", "5,5", "+5", "-1", "0x10", "5 5", "", " 7", "99999999",
                   "99999999999999999999", "4294967296", "18446744073709551615", "1e3"]
TRANSFER_ENCODINGS = ["chunked", "Chunked", " chunked", "chunked, identity", "gzip, chunked",
                      "identity", "chunked\x00"]
URI_ESCAPES = ["%00", "%2e%2e/", "%2F", "%ff", "%zz", "%", "%u0041", "/..%2f", "%0d%0a",
               "%20", "//", "/./"]
QUERY_GAMES = ["&since=1&&since=2", "?&since=abc", "&limit=0", "&since=-1",
               "&limit=99999999999999999999", "&since=" + fill("9", 40), "&&&&", "&since",
               "&=1", "&token=", "&since=1%00"]
INTERESTING_BYTES = ["\r\n", "\r\n\r\n", "\n", "\r", "\x00", "\xff", ":", " ", "\t", "%", "0",
                     "-1", "\x80", "{", '"', "\\", "\r\n ", "Content-Length: 3\r\n",
                     "Transfer-Encoding: chunked\r\n"]


def _pick_header(rng, req):
    return rng.choice(req.headers) if req.headers else None


def m_method(rng, req):
    req.method = rng.choice(METHODS)
    return f"method {req.method[:12]!r}"


def m_version(rng, req):
    req.version = rng.choice(VERSIONS)
    return f"version {req.version!r}"


def m_body_on_method(rng, req):
    """A body on any method, GET above all (review C1)."""
    req.method = rng.choice(["GET", "GET", "HEAD", "DELETE", "OPTIONS", req.method])
    req.set_body(json_data(rng) or "x")
    return f"{req.method} with a body"


def m_content_length(rng, req):
    value = rng.choice(CONTENT_LENGTHS + [str(expanded_len(req.body) + d)
                                          for d in (-3, -1, 1, 100)])
    if rng.random() < 0.3:
        req.headers.append(["Content-Length", value])  # a second one
    else:
        req.set_header("Content-Length", value)
    return f"content-length {value!r}"


def chunked(rng, body):
    """`body` in chunks, sometimes with bad sizes, extensions, no last chunk or trailers.
    A body holding placeholders stays one chunk, so that none is cut in two."""
    pieces, at = [], 0
    while at < len(body):
        n = len(body) if "{{" in body else rng.randint(1, len(body) - at)
        pieces.append(body[at:at + n])
        at += n
    out = ""
    for p in pieces:
        n = expanded_len(p)
        size = rng.choice([f"{n:x}"] * 6 + [f"{n + 1:x}", "zz", "-1", "ffffffffffffffff",
                                            f"{n:x};ext=1"])
        out += f"{size}\r\n{p}\r\n"
    return out + rng.choice(["0\r\n\r\n"] * 4 + ["", "0\r\nX-Trailer: 1\r\n\r\n", "0\r\n"])


def m_chunked(rng, req):
    te = rng.choice(TRANSFER_ENCODINGS)
    req.set_header("Transfer-Encoding", te)
    req.body = chunked(rng, req.body or json_data(rng))
    if rng.random() < 0.6:
        req.drop_header("Content-Length")
    return f"transfer-encoding {te!r}"


def m_duplicate_header(rng, req):
    h = _pick_header(rng, req)
    if h is None:
        return "duplicate: no header"
    value = h[1] if rng.random() < 0.5 else rng.choice(["0", "x", h[1] + "1", ""])
    req.headers.insert(rng.randrange(len(req.headers) + 1), [h[0], value])
    return f"duplicate {h[0]}"


def m_drop_header(rng, req):
    h = _pick_header(rng, req)
    if h is None:
        return "drop: no header"
    req.headers.remove(h)
    return f"drop {h[0]}"


def m_reorder_headers(rng, req):
    rng.shuffle(req.headers)
    return "reorder headers"


def m_long_header(rng, req):
    n = rng.choice([300, 4000, 4200, 9000])
    h = _pick_header(rng, req)
    if h is None or rng.random() < 0.3:
        req.headers.append(["X-Long", fill("a", n)])
        return f"X-Long of {n}"
    h[1] = h[1] + fill("a", n)
    return f"{h[0]} + {n} bytes"


def m_many_headers(rng, req):
    n = rng.randint(40, 150)
    for i in range(n):
        req.headers.append([f"X-H{i}", str(i)])
    return f"{n} extra headers"


def m_long_uri(rng, req):
    n = rng.choice([255, 256, 300, 1000, 4100, 8000])
    req.target += ("&" if "?" in req.target else "?") + "x=" + fill("a", n)
    return f"uri + {n}"


def m_uri_escape(rng, req):
    at = rng.randrange(len(req.target) + 1)
    esc = rng.choice(URI_ESCAPES)
    req.target = req.target[:at] + esc + req.target[at:]
    return f"uri escape {esc!r}"


def m_query(rng, req):
    game = rng.choice(QUERY_GAMES)
    req.target += game if "?" in req.target or game.startswith("?") else "?" + game[1:]
    return f"query {game!r}"


def m_target(rng, req):
    channel = rng.choice(CHANNELS)
    req.target = rng.choice(["*", "http://gw/healthz", "/v1/messages", "/v1/channels//messages",
                             f"/v1/channels/{channel}/messages/", "/v1/", "/v1",
                             f"/v1/channels/{channel}", "/ws", "/healthz?x", "", "/metrics#x"])
    return f"target {req.target!r}"


def m_stray_crlf(rng, req):
    crlf = rng.choice(["\r\n", "\n", "\r\n\r\n", "\r"])
    if rng.random() < 0.7:
        req.tail += crlf  # review H1: bytes after a POST body
        return f"stray {crlf!r} after"
    req.method = crlf + req.method
    return f"stray {crlf!r} before"


def m_line_endings(rng, req):
    req.eol = rng.choice(["\n", "\r", "\r\r\n"])
    return f"line ends {req.eol!r}"


def m_folded_header(rng, req):
    h = _pick_header(rng, req)
    if h is None:
        return "fold: no header"
    h[1] += rng.choice(["\r\n folded", "\r\n\tfolded", "\r\n"])
    return f"fold {h[0]}"


def m_header_syntax(rng, req):
    h = _pick_header(rng, req)
    if h is None:
        return "syntax: no header"
    h[0] = rng.choice([h[0] + " ", h[0] + "\t", "", " " + h[0], h[0] + ":", "\xff" + h[0],
                       h[0].upper(), h[0] + "\x00"])
    return f"header name {h[0]!r}"


def m_h2c(rng, req):
    req.set_header("Upgrade", rng.choice(["h2c", "h2c, websocket", "H2C", "h2"]))
    req.set_header("Connection", rng.choice(["Upgrade, HTTP2-Settings", "Upgrade"]))
    if rng.random() < 0.8:
        req.set_header("HTTP2-Settings", rng.choice([H2_SETTINGS, "", "!!", fill("A", 500)]))
    return "h2c upgrade"


def m_other_upgrade(rng, req):
    req.set_header("Upgrade", rng.choice(["websocket", "foo/1", "WebSocket", "", "tls/1.2"]))
    req.set_header("Connection", rng.choice(["Upgrade", "upgrade, keep-alive", "close"]))
    return "upgrade"


def m_connect(rng, req):
    req.method = "CONNECT"
    req.target = rng.choice(["127.0.0.1:80", "gw:443", req.target])
    return "CONNECT"


def m_expect(rng, req):
    req.set_header("Expect", rng.choice(["100-continue", "200-ok", ""]))
    return "expect"


def m_authorization(rng, req):
    value = rng.choice(["Bearer {{READ}}", "Bearer {{BAD}}", "Bearer {{EXPIRED}}",
                        "Bearer {{LONG}}", "Basic YTpi", "Bearer", "Bearer ", "bearer {{READ}}",
                        "Bearer " + fill("a", rng.choice([100, 5000])), "Bearer {{READ}}x"])
    if rng.random() < 0.3:
        req.headers.append(["Authorization", value])
    else:
        req.set_header("Authorization", value)
    return f"authorization {value[:20]!r}"


def m_idempotency_key(rng, req):
    value = rng.choice([fill("k", 201), fill("k", 200), "", "a b", "\xff\xfe", "\t", "k"])
    req.set_header("Idempotency-Key", value)
    return f"idempotency-key {value[:16]!r}"


def m_websocket_headers(rng, req):
    name, value = rng.choice([
        ("Sec-WebSocket-Version", rng.choice(["8", "14", "13, 8", "", "13x"])),
        ("Sec-WebSocket-Key", rng.choice(["", "short", "!!!!", fill("A", 300)])),
        ("Sec-WebSocket-Protocol", rng.choice(["http", "herald, http", "", ",", fill("p", 300)])),
        ("Sec-WebSocket-Extensions", rng.choice([
            "permessage-deflate; client_max_window_bits=99", "permessage-deflate; ;;",
            "permessage-deflate, permessage-deflate", "permessage-deflate; server_max_window_bits",
            fill("e", 600)])),
        ("Origin", fill("o", 600)),
    ])
    req.set_header(name, value)
    return f"{name} {value[:16]!r}"


def m_body_bytes(rng, req):
    """The body changes but Content-Length stays as it was, or is made to match."""
    req.body = rng.choice([json_data(rng), fill("z", rng.choice([10, 4097, 70000])), "", "\r\n"])
    if rng.random() < 0.5:
        req.set_header("Content-Length", str(expanded_len(req.body)))
        return "new body"
    return "new body, old content-length"


STRUCTURE_MUTATORS = [
    (m_method, 3), (m_version, 3), (m_body_on_method, 4), (m_content_length, 4),
    (m_chunked, 3), (m_duplicate_header, 3), (m_drop_header, 3), (m_reorder_headers, 1),
    (m_long_header, 2), (m_many_headers, 1), (m_long_uri, 2), (m_uri_escape, 2), (m_query, 2),
    (m_target, 2), (m_stray_crlf, 4), (m_line_endings, 1), (m_folded_header, 1),
    (m_header_syntax, 2), (m_h2c, 2), (m_other_upgrade, 1), (m_connect, 1), (m_expect, 1),
    (m_authorization, 2), (m_idempotency_key, 1), (m_websocket_headers, 2), (m_body_bytes, 2),
]
_STRUCTURE_POOL = [m for m, w in STRUCTURE_MUTATORS for _ in range(w)]


def mutate_request(rng, req, count):
    """Applies `count` structure-aware mutations to `req` in place; returns their notes."""
    return [rng.choice(_STRUCTURE_POOL)(rng, req) for _ in range(count)]


def _span(rng, text, longest):
    at = rng.randrange(len(text) + 1)
    return at, min(len(text), at + rng.randint(1, longest))


def b_flip(rng, text, pool):
    if not text:
        return text, "flip: empty"
    at = rng.randrange(len(text))
    return text[:at] + chr(ord(text[at]) ^ (1 << rng.randrange(8))) + text[at + 1:], f"flip @{at}"


def b_insert(rng, text, pool):
    at = rng.randrange(len(text) + 1)
    if rng.random() < 0.5:
        piece = rng.choice(INTERESTING_BYTES)
    else:
        piece = "".join(chr(rng.randrange(256)) for _ in range(rng.randint(1, 8)))
    return text[:at] + piece + text[at:], f"insert {piece[:12]!r} @{at}"


def b_delete(rng, text, pool):
    at, end = _span(rng, text, 16)
    return text[:at] + text[end:], f"delete {at}:{end}"


def b_duplicate(rng, text, pool):
    at, end = _span(rng, text, 64)
    return text[:end] + text[at:end] + text[end:], f"duplicate {at}:{end}"


def b_splice(rng, text, pool):
    """A piece of another input in place of a piece of this one."""
    other = rng.choice(pool) or "x"
    src, src_end = _span(rng, other, 128)
    at, end = _span(rng, text, 32)
    return text[:at] + other[src:src_end] + text[end:], f"splice {src_end - src} bytes @{at}"


def b_truncate(rng, text, pool):
    at = rng.randrange(len(text) + 1)
    return text[:at], f"truncate @{at}"


BYTE_MUTATORS = [(b_flip, 3), (b_insert, 4), (b_delete, 3), (b_duplicate, 2), (b_splice, 2),
                 (b_truncate, 1)]
_BYTE_POOL = [m for m, w in BYTE_MUTATORS for _ in range(w)]


def mutate_bytes(rng, text, pool, count):
    """Applies `count` byte-level mutations; `pool` holds other inputs to splice from.
    Returns (text, notes)."""
    notes = []
    for _ in range(count):
        text, note = rng.choice(_BYTE_POOL)(rng, text, pool)
        notes.append(note)
    return text, notes
