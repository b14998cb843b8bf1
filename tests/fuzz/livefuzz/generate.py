"""Builds cases: each one a stateful session of steps (steps.py) on one or more connections
plus Redis, drawn from one random.Random so that a seed always gives the same case."""

from . import seeds
from .mutate import mutate_bytes, mutate_request
from .seeds import CHANNELS
from .steps import Expander, deflate_message, expanded_len, fill

PUBLISH_SHARE = 0.25  # of cases that may present a publishing credential
READ_MS = [20, 50, 100, 200]
DELAYS_MS = [0, 0, 1, 2, 5, 10]
HEAD_END = "\r\n\r\n"
PING = '{"op":"ping"}'
PADDED_PING = '{"op":"ping","pad":"%s"}'
CLOSE_PAYLOADS = ["", "\x03\xe8", "\x03\xe8bye", "\x03", "\x03\xed", "\x00\x00", "\x13\x88",
                  "\x0f\xa0", "\x03\xe8\xff\xfe", "\x03\xe8" + "r" * 130]


def odd_frame(rng):
    """A frame a client should not send, or a rarely used one: (its kind, opcode, payload,
    other fields of the frame step)."""
    kinds = {
        "binary": lambda: (2, "".join(chr(rng.randrange(256))
                                      for _ in range(rng.randint(0, 40))), {}),
        "ping": lambda: (9, "p" * rng.randint(0, 125), {}),
        "pong": lambda: (10, "p" * rng.randint(0, 125), {}),
        "close": lambda: (8, rng.choice(CLOSE_PAYLOADS), {}),
        "bad-opcode": lambda: (rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), PING, {}),
        "unmasked": lambda: (1, PING, {"mask": None}),
        "rsv": lambda: (1, PING, {"rsv": rng.randint(1, 7)}),
        "lying-length": lambda: (1, PING, {"length": rng.choice(
            [0, 5, len(PING) + 1, len(PING) + 500, 1 << 31, 1 << 63, (1 << 64) - 1])}),
        "non-minimal": lambda: (1, PING, {"width": rng.choice([16, 64])}),
        "too-large": lambda: (1, PADDED_PING % fill("p", rng.choice([2100, 70000])), {}),
        "bomb": lambda: (1, PADDED_PING % fill("0", rng.choice([5000, 300000])),
                         {"deflate": True}),
        "fragmented-ping": lambda: (9, "x", {"fin": False}),
        "lone-continuation": lambda: (0, PING, {"fin": rng.random() < 0.5}),
        "long-control": lambda: (rng.choice([8, 9, 10]), "c" * rng.choice([126, 200]), {}),
    }
    kind = rng.choice(list(kinds))
    return (kind,) + kinds[kind]()


def interleave(rng, tracks):
    """Merges step lists at random, keeping the order within each."""
    tracks = [list(t) for t in tracks if t]
    out = []
    while tracks:
        t = rng.choice(tracks)
        out.append(t.pop(0))
        if not t:
            tracks.remove(t)
    return out


class CaseBuilder:
    """Appends steps; decides splits, delays, read timeouts and how much to mutate."""

    def __init__(self, rng):
        self.rng = rng
        self.steps = []
        self.notes = []
        self.next_conn = 0
        self.allow_publish = rng.random() < PUBLISH_SHARE
        self.splice_pool = [seeds.http_seed(rng, True).text() for _ in range(3)]
        self.splice_pool += seeds.RAW_SEEDS

    def case(self, seed, scenario):
        return {"seed": seed, "scenario": scenario, "notes": self.notes, "steps": self.steps}

    def track(self, build):
        """The steps `build()` appends, as a list of their own (for interleave)."""
        saved, self.steps = self.steps, []
        try:
            build()
            return self.steps
        finally:
            self.steps = saved

    # -- steps

    def connect(self):
        conn = self.next_conn
        self.next_conn += 1
        self.steps.append({"op": "connect", "conn": conn})
        return conn

    def _add_splits(self, step, length):
        if length > 1 and self.rng.random() < 0.4:
            step["splits"] = sorted(self.rng.randrange(1, length)
                                    for _ in range(self.rng.randint(1, 4)))
            step["delay_ms"] = self.rng.choice(DELAYS_MS)

    def send(self, conn, text):
        step = {"op": "send", "conn": conn, "data": text}
        self._add_splits(step, expanded_len(text))
        self.steps.append(step)

    def trickle(self, conn, text):
        """Sends `text` a few bytes at a time, with a short pause between pieces (at most
        60 of them)."""
        start, step = self.rng.randint(1, 20), self.rng.randint(1, 20)
        splits = list(range(start, expanded_len(text), step))[:60]
        self.steps.append({"op": "send", "conn": conn, "data": text, "splits": splits,
                           "delay_ms": self.rng.choice([1, 2, 5])})

    def read(self, conn, until=HEAD_END):
        step = {"op": "read", "conn": conn, "ms": self.rng.choice(READ_MS)}
        if until:
            step["until"] = until
        self.steps.append(step)

    def frame(self, conn, opcode, payload="", **fields):
        mask = "%08x" % self.rng.getrandbits(32) if self.rng.random() < 0.95 else "00000000"
        step = {"op": "frame", "conn": conn, "opcode": opcode, "payload": payload, "mask": mask}
        step.update(fields)
        self._add_splits(step, expanded_len(payload) + 6)
        self.steps.append(step)

    def redis(self, channel, payload):
        self.steps.append({"op": "redis", "channel": channel, "payload": payload})

    def sleep(self, ms):
        self.steps.append({"op": "sleep", "ms": ms})

    def finish(self, conn):
        """Ends a connection in one of the ways a client may: close, reset, half-close and
        read, or leave it to the end of the case."""
        how = self.rng.choice(["close", "abort", "shutdown", "leave"])
        if how == "shutdown":
            self.steps.append({"op": "shutdown", "conn": conn})
            self.read(conn, until=None)
        elif how != "leave":
            self.steps.append({"op": how, "conn": conn})

    # -- inputs

    def mutated(self, req, clean_share=0.15):
        """The text of `req`: as it is (`clean_share` of the time), else after
        structure-aware mutations, byte-level ones, or both."""
        if self.rng.random() < clean_share:
            return req.text()
        how = self.rng.random()
        notes = mutate_request(self.rng, req, self.rng.randint(1, 3)) if how < 0.85 else []
        text = req.text()
        if how >= 0.5:
            text, more = mutate_bytes(self.rng, text, self.splice_pool, self.rng.randint(1, 3))
            notes += more
        self.notes += notes
        return text

    def maybe_bytes(self, text, share):
        if self.rng.random() >= share:
            return text
        text, notes = mutate_bytes(self.rng, text, self.splice_pool, self.rng.randint(1, 2))
        self.notes += notes
        return text

    def handshake(self, conn, clean_share):
        """Sends a WebSocket handshake and reads the answer; returns whether it offered
        permessage-deflate."""
        text = self.mutated(seeds.ws_handshake(self.rng, self.allow_publish), clean_share)
        self.send(conn, text)
        self.read(conn)
        return "permessage-deflate" in text

    def client_message(self, conn, deflate_offered):
        text = self.maybe_bytes(seeds.client_message(self.rng, self.allow_publish), 0.15)
        compress = self.rng.random() < (0.5 if deflate_offered else 0.05)
        self.frame(conn, 1, text, deflate=compress)

    def subscribe(self, conn, channel):
        self.frame(conn, 1, '{"op":"subscribe","channel":"%s"}' % channel)
        self.read(conn, until="}")

    def odd_frame(self, conn):
        kind, opcode, payload, fields = odd_frame(self.rng)
        self.notes.append(f"frame {kind}")
        self.frame(conn, opcode, payload, **fields)

    def fragmented_message(self, conn, deflate_offered):
        """One client message in 2-4 frames, maybe compressed as a whole (RSV1 on the first
        frame only), maybe with a ping in between."""
        rng = self.rng
        text = seeds.client_message(rng, self.allow_publish)
        compressed = deflate_offered and rng.random() < 0.5
        if compressed:
            text = deflate_message(Expander({})(text)).decode("latin-1")
        cuts = sorted(rng.randrange(len(text) + 1) for _ in range(rng.randint(1, 3)))
        parts = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            self.frame(conn, 0 if i else 1, part, fin=last, rsv=4 if compressed and not i else 0)
            if not last and rng.random() < 0.2:
                self.frame(conn, 9, "mid")
        self.notes.append(f"fragmented in {len(parts)}" + (", compressed" if compressed else ""))


# -- scenarios: each builds the steps of one case


def http_single(b):
    """One request on a connection of its own."""
    c = b.connect()
    b.send(c, b.mutated(seeds.http_seed(b.rng, b.allow_publish)))
    b.read(c)
    if b.rng.random() < 0.3:
        b.read(c, until=None)
    b.finish(c)


def http_pipeline(b):
    """Several requests on one connection: in one write, or one after the other's answer."""
    c = b.connect()
    texts = [b.mutated(seeds.http_seed(b.rng, b.allow_publish), 0.4)
             for _ in range(b.rng.randint(2, 4))]
    if b.rng.random() < 0.5:
        glue = b.rng.choice(["", "", "\r\n", "\n"])
        b.send(c, glue.join(texts))
        b.read(c)
        b.read(c, until=None)
    else:
        for text in texts:
            b.send(c, text)
            b.read(c)
    b.finish(c)


def http_trickle(b):
    """A request a few bytes at a time, then more bytes while it is served (review M6)."""
    rng = b.rng
    c = b.connect()
    seed = rng.choice([seeds.get_messages, seeds.post_message, seeds.post_batch])
    b.trickle(c, b.mutated(seed(rng, b.allow_publish), 0.5))
    for _ in range(rng.randint(0, 6)):
        b.send(c, rng.choice(["\r\n", "x", "\n", "GET /healthz HTTP/1.1\r\n\r\n"]))
        b.sleep(rng.choice([1, 5, 20]))
    b.read(c)
    b.finish(c)


def ws_session(b):
    """A handshake, then client messages and odd frames, with reads and Redis publishes."""
    rng = b.rng
    c = b.connect()
    offered = b.handshake(c, clean_share=0.75)
    channel = rng.choice(CHANNELS)
    for _ in range(rng.randint(1, 8)):
        action = rng.random()
        if action < 0.45:
            b.client_message(c, offered)
        elif action < 0.7:
            b.odd_frame(c)
        elif action < 0.8:
            b.fragmented_message(c, offered)
        elif action < 0.9:
            b.subscribe(c, channel)
            b.redis(channel, b.maybe_bytes(seeds.redis_payload(rng, channel), 0.2))
        else:
            b.read(c, until=None)
    b.read(c, until=None)
    b.finish(c)


def mixed(b):
    """A subscriber, an HTTP client and Redis on one channel, their steps interleaved."""
    rng = b.rng
    channel = rng.choice(CHANNELS)

    def subscriber():
        c = b.connect()
        offered = b.handshake(c, clean_share=0.9)
        b.subscribe(c, channel)
        for _ in range(rng.randint(0, 3)):
            b.client_message(c, offered)
        b.read(c, until=None)
        b.finish(c)

    def http_client():
        c = b.connect()
        seed = rng.choice([seeds.post_message, seeds.get_messages])
        b.send(c, b.mutated(seed(rng, b.allow_publish, channel), 0.3))
        b.read(c)
        b.finish(c)

    def publisher():
        for _ in range(rng.randint(1, 3)):
            b.redis(channel, seeds.redis_payload(rng, channel))

    tracks = [b.track(subscriber), b.track(http_client), b.track(publisher)]
    if rng.random() < 0.3:
        tracks.append(b.track(http_client))
    b.steps += interleave(rng, tracks)


def redis_fanout(b):
    """Subscribers, then mutated Redis payloads on their channel."""
    rng = b.rng
    channel = rng.choice(CHANNELS)
    conns = []
    for _ in range(rng.randint(1, 2)):
        c = b.connect()
        b.handshake(c, clean_share=1.0)
        b.subscribe(c, channel)
        conns.append(c)
    for _ in range(rng.randint(1, 4)):
        b.redis(channel, b.maybe_bytes(seeds.redis_payload(rng, channel), 0.3))
    for c in conns:
        b.read(c, until=None)
        b.finish(c)


def raw_bytes(b):
    """Bytes that are not HTTP/1.1: an HTTP/2 preface, TLS, junk; or nothing at all."""
    c = b.connect()
    if b.rng.random() < 0.8:
        b.send(c, b.maybe_bytes(b.rng.choice(seeds.RAW_SEEDS), 0.5))
        b.read(c)
    b.finish(c)


def h2_session(b):
    """HTTP/2 after an h2c upgrade (review L9), or with prior knowledge: the preface, then
    frames of every kind."""
    c = b.connect()
    if b.rng.random() < 0.7:
        b.send(c, b.mutated(seeds.h2c_upgrade(b.rng, b.allow_publish), 0.7))
        b.read(c)
    b.send(c, b.maybe_bytes(seeds.H2_PREFACE + seeds.h2_frames(b.rng), 0.3))
    b.read(c, until=None)
    b.finish(c)


def connection_burst(b):
    """More WebSocket handshakes than the per-address limit allows, then all dropped."""
    conns = [b.connect() for _ in range(b.rng.randint(4, 14))]
    for c in conns:
        b.handshake(c, clean_share=1.0)
    for c in conns:
        b.finish(c)


SCENARIOS = [(http_single, 25), (http_pipeline, 15), (http_trickle, 6), (ws_session, 25),
             (mixed, 14), (redis_fanout, 7), (raw_bytes, 4), (h2_session, 5),
             (connection_burst, 2)]
_SCENARIO_POOL = [s for s, w in SCENARIOS for _ in range(w)]


def make_case(rng, seed):
    """One case (a JSON-ready dict) from `rng`; `seed` is recorded in it."""
    b = CaseBuilder(rng)
    scenario = rng.choice(_SCENARIO_POOL)
    scenario(b)
    return b.case(seed, scenario.__name__)
