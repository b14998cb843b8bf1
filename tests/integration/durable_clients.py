#!/usr/bin/python3
"""A durable publisher and resuming WebSocket clients, for the tests that cut instances off
under a live stream (test_scaleout.py, tests/deploy/test_container.py): the publisher POSTs
{"i": k} with an Idempotency-Key and retries on another target; each client subscribes with
since/epoch, reconnects with backoff and records everything a correct server never sends."""

import asyncio
import json
import random
import threading
import time
import urllib.error
import urllib.request

import websockets
import websockets.exceptions

from harness import close_quietly, ws_connect


def post(base, channel, data, key, timeout=5.0):
    """POST a durable message; returns (status, parsed body or error text)."""
    req = urllib.request.Request(f"{base}/v1/channels/{channel}/messages",
                                 data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Idempotency-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:200]


class Publisher(threading.Thread):
    """Publishes {"i": k} for k = 0, 1, 2, ... with Idempotency-Key "m-k". Message k goes to
    targets[k % len(targets)]; a failed attempt is retried with the same key on the next target
    (a POST whose answer was lost may have been stored: the key makes the retry harmless)."""

    def __init__(self, targets, channel, wait=30.0, interval=0.03):
        super().__init__(daemon=True)
        self.targets = targets          # [(name, base url)]
        self.channel = channel
        self.wait = wait                # bound of one message's retries, in seconds
        self.interval = interval        # pause between two messages
        self.seq_of = {}                # k -> seq
        self.by_target = {name: 0 for name, _ in targets}
        self.failures = []              # (target, status or error)
        self.fatal = None
        self.head = 0                   # highest seq acknowledged so far
        self.acked_at = []              # time.monotonic() of each acknowledgement
        self.halt = threading.Event()

    def publish(self, k):
        key = f"m-{k}"
        deadline = time.monotonic() + self.wait
        attempt = 0
        while True:
            name, base = self.targets[(k + attempt) % len(self.targets)]
            try:
                status, body = post(base, self.channel, {"i": k}, key)
            except (OSError, urllib.error.URLError, ValueError) as exc:
                status, body = None, repr(exc)
            if status in (200, 201) and isinstance(body, dict):
                self.seq_of[k] = body["seq"]
                self.head = max(self.head, body["seq"])
                self.acked_at.append(time.monotonic())
                self.by_target[name] += 1
                return True
            self.failures.append((name, status, body))
            attempt += 1
            if time.monotonic() > deadline:
                self.fatal = f"message {k} not published within {self.wait}s: {self.failures[-3:]}"
                return False
            time.sleep(0.05)

    def first_ack_after(self, t):
        """When the first message acknowledged after time.monotonic() t was, or None."""
        return next((a for a in self.acked_at if a >= t), None)

    def run(self):
        k = len(self.seq_of)
        while not self.halt.is_set():
            if not self.publish(k):
                return
            k += 1
            self.halt.wait(self.interval)


class Client:
    """A WebSocket client that behaves like a real one: connects through nginx, subscribes with
    since = the last seq it holds (and the epoch once known); on close or error it reconnects
    with exponential backoff (50 ms to 1 s, jittered) and resumes. `test.phase` names the
    phase each disconnect and failed attempt is filed under."""

    def __init__(self, idx, url, test, channel):
        self.idx, self.url, self.test, self.channel = idx, url, test, channel
        self.seqs = []                  # every seq received, in arrival order
        self.data = {}                  # seq -> data["i"]
        self.epoch = None
        self.ws = None
        self.subscribed = False         # joined on its current connection
        self.joins = 0                  # successful subscribes (first one included)
        self.disconnects = []           # (phase, close code or error) after a join
        self.failed_attempts = []       # (phase, error) connecting or before the join
        self.problems = []              # anything a correct server never sends
        self.stopping = False
        self.task = None

    @property
    def last(self):
        return self.seqs[-1] if self.seqs else 0

    async def _sleep_backoff(self, backoff):
        await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
        return min(backoff * 2, 1.0)

    async def run(self):
        backoff = 0.05
        while not self.stopping:
            try:
                self.ws = await ws_connect(self.url, open_timeout=10, close_timeout=3)
            except Exception as exc:  # noqa: BLE001 - refused, 502/503, timeout: retry
                self.failed_attempts.append((self.test.phase, _describe(exc)))
                backoff = await self._sleep_backoff(backoff)
                continue
            joined, outcome = False, None
            try:
                sub = {"op": "subscribe", "channel": self.channel, "since": self.last}
                if self.epoch:
                    sub["epoch"] = self.epoch
                await self.ws.send(json.dumps(sub))
                async for raw in self.ws:
                    self._on_frame(json.loads(raw))
                    if self.subscribed and not joined:
                        joined, backoff = True, 0.05
                outcome = self.ws.close_code
            except websockets.exceptions.ConnectionClosed:
                outcome = self.ws.close_code
            except Exception as exc:  # noqa: BLE001
                outcome = _describe(exc)
            finally:
                self.subscribed = False
            if self.stopping:
                return
            if joined:
                self.disconnects.append((self.test.phase, outcome))
            else:
                self.failed_attempts.append((self.test.phase, outcome))
            await close_quietly(self.ws)
            backoff = await self._sleep_backoff(backoff)

    def _on_frame(self, m):
        op = m.get("op")
        if op == "message":
            seq = m.get("seq")
            if m.get("channel") != self.channel or not isinstance(seq, int):
                self.problems.append(("bad message", m))
                return
            if seq != self.last + 1:
                self.problems.append(("out of sequence", self.last, seq))
            self.seqs.append(seq)
            self.data[seq] = m.get("data", {}).get("i")
        elif op == "subscribed":
            if m.get("recovered") is not True:
                self.problems.append(("resume not recovered", m))
            if self.epoch and m.get("epoch") != self.epoch:
                self.problems.append(("epoch changed", self.epoch, m.get("epoch")))
            self.epoch = m.get("epoch") or self.epoch
            if m.get("seq") != self.last:
                self.problems.append(("subscribed seq is not the last one received", m,
                                      self.last))
            self.subscribed = True
            self.joins += 1
        else:
            self.problems.append(("unexpected frame", m))

    async def stop(self):
        self.stopping = True
        if self.ws is not None:
            await close_quietly(self.ws)
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 10)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self.task.cancel()


def _describe(exc):
    if isinstance(exc, websockets.exceptions.InvalidStatusCode):
        return f"HTTP {exc.status_code}"
    return type(exc).__name__
