#!/usr/bin/python3
"""Herald's demo publisher: a simulated fleet of meeting bots and a queue of processing tasks.

It publishes durably (the WebSocket `publish` op: PostgreSQL first, then Redis) so that every
event has a `seq` and a page that reconnects gets what it missed:

  bot:fleet          the fleet roster, once at start: {"bots":[{"id","name"}...]}
  bot:status:{id}    a bot's lifecycle: joining -> active -> recording -> finalizing ->
                     completed, sometimes failed; with the meeting and its participant count
  task_updates       tasks (transcription, summaries, exports) going 0..100 %, finishing,
                     sometimes failing, new ones starting
and it listens to bot:command:{id} for every bot it runs: {"action":"stop"} moves that bot to
finalizing, then completed (the dashboard's Stop button).

Usage: demo-publisher.py [--url ws://127.0.0.1:8080/ws]... [--rate 5] [--bots 6] [--seed N]
  --url    a gateway's WebSocket address; give several to fail over between them
  --rate   messages published per second (env DEMO_RATE); stay below the gateway's
           HERALD_RATE_LIMIT (50 by default), the limit of one connection
Standard library plus python3-websockets. Stops on SIGINT/SIGTERM.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time

import websockets

MEETINGS = [
    ("Weekly platform sync", "Zoom"), ("Customer onboarding: Acme", "Google Meet"),
    ("Design review: checkout", "Microsoft Teams"), ("Sales pipeline standup", "Zoom"),
    ("Quarterly planning", "Google Meet"), ("Incident retro #214", "Microsoft Teams"),
    ("Hiring panel: backend", "Zoom"), ("Board prep", "Google Meet"),
    ("Support escalations", "Microsoft Teams"), ("Product demo: Globex", "Zoom"),
    ("Security review", "Google Meet"), ("1:1 Dana / Lee", "Zoom"),
]
BOT_NAMES = ["Atlas", "Brio", "Cleo", "Dash", "Echo", "Fable", "Gaia", "Halo", "Iris", "Juno",
             "Kite", "Lumen"]
JOIN_FAILURES = ["waiting room timed out", "meeting not found", "host denied entry"]
RECORD_FAILURES = ["connection to the meeting lost", "audio stream stalled"]
TASK_KINDS = [("Transcribe", 6, 14), ("Summarize", 10, 25), ("Export to CRM", 15, 35),
              ("Translate (es)", 5, 12)]
LIVE = ("joining", "active", "recording")


def now_ms():
    return int(time.time() * 1000)


class Bot:
    def __init__(self, bot_id, name, rng):
        self.id, self.name, self.rng = bot_id, name, rng
        self.meeting, self.platform = rng.choice(MEETINGS)
        self.state, self.participants, self.reason = "completed", 0, None
        self.since = now_ms()
        self.ticks = rng.randint(0, 4)  # ticks left in the current state
        self.stop_by = None

    def status(self):
        return {"bot": self.id, "name": self.name, "state": self.state,
                "meeting": self.meeting, "platform": self.platform,
                "participants": self.participants, "since": self.since,
                "reason": self.reason}

    def _enter(self, state, ticks, reason=None):
        self.state, self.ticks, self.reason, self.since = state, ticks, reason, now_ms()

    def stop(self, by):
        """A stop command: only a bot in a meeting can be stopped."""
        if self.state not in LIVE:
            return False
        self._enter("finalizing", self.rng.randint(2, 4), f"stopped by {by}")
        return True

    def step(self):
        """Advance one tick; returns True when the status changed (something to publish)."""
        r = self.rng
        self.ticks -= 1
        if self.state == "recording" and self.ticks > 0:
            # people join and leave while the bot records
            delta = r.choice([-2, -1, -1, 0, 1, 1, 2, 3])
            self.participants = max(2, min(48, self.participants + delta))
            if r.random() < 0.015:
                self._enter("failed", r.randint(4, 8), r.choice(RECORD_FAILURES))
            return True
        if self.ticks > 0:
            return False
        if self.state in ("completed", "failed"):
            self.meeting, self.platform = r.choice(MEETINGS)
            self.participants = 0
            self._enter("joining", r.randint(2, 4))
        elif self.state == "joining":
            if r.random() < 0.1:
                self._enter("failed", r.randint(4, 8), r.choice(JOIN_FAILURES))
            else:
                self.participants = r.randint(2, 9)
                self._enter("active", r.randint(2, 4))
        elif self.state == "active":
            self._enter("recording", r.randint(12, 30))
        elif self.state == "recording":
            self._enter("finalizing", r.randint(2, 4))
        elif self.state == "finalizing":
            self._enter("completed", r.randint(4, 10), self.reason)
        return True


class Tasks:
    def __init__(self, rng, first_id=1):
        self.rng, self.next_id, self.running = rng, first_id, []

    def start(self, meeting=None):
        kind, lo, hi = self.rng.choice(TASK_KINDS)
        meeting = meeting or self.rng.choice(MEETINGS)[0]
        task = {"task": f"t-{self.next_id:04d}", "name": f"{kind}: {meeting}", "progress": 0,
                "state": "running", "step": (lo, hi), "started": now_ms()}
        self.next_id += 1
        self.running.append(task)
        return self._update(task)

    def _update(self, task):
        return {k: v for k, v in task.items() if k != "step"}

    def step(self):
        """Advance one task (or start one); returns the update to publish."""
        r = self.rng
        if len(self.running) < 2 or (len(self.running) < 4 and r.random() < 0.08):
            return self.start()
        task = r.choice(self.running)
        lo, hi = task["step"]
        task["progress"] = min(100, task["progress"] + r.randint(lo, hi))
        if r.random() < 0.01:
            task["state"], task["error"] = "failed", "worker ran out of memory"
        elif task["progress"] >= 100:
            task["state"] = "done"
        if task["state"] != "running":
            self.running.remove(task)
        return self._update(task)


class Publisher:
    def __init__(self, urls, rate, nbots, seed):
        self.urls, self.rate = urls, rate
        self.rng = random.Random(seed)
        names = BOT_NAMES[:nbots] + [f"Bot {i}" for i in range(len(BOT_NAMES), nbots)]
        self.bots = {str(101 + i): Bot(str(101 + i), names[i], self.rng) for i in range(nbots)}
        self.tasks = Tasks(self.rng, first_id=self.rng.randint(100, 900))
        self.queue = []  # (channel, data) waiting to be published, in order
        self.cmd_pos = {}  # bot:command channel -> last seq seen, for resume
        self.next_id = 1
        self.sent = self.acked = self.failed = 0
        self.stopping = asyncio.Event()
        # the roster and every bot's first status go out first
        self.queue.append(("bot:fleet", {"bots": [{"id": b.id, "name": b.name}
                                                 for b in self.bots.values()]}))
        for b in self.bots.values():
            self.queue.append((f"bot:status:{b.id}", b.status()))

    def log(self, msg, **kw):
        print(json.dumps({"ts": now_ms(), "msg": msg, **kw}), flush=True)

    def tick(self):
        """One simulated event: a bot's status change or a task's progress."""
        bots = list(self.bots.values())
        for _ in range(len(bots) + 1):
            if self.rng.random() < 0.55:
                b = self.rng.choice(bots)
                was = b.state
                if b.step():
                    self.queue.append((f"bot:status:{b.id}", b.status()))
                    if was == "finalizing" and b.state == "completed":
                        # a finished recording becomes work for the task queue
                        self.queue.append(("task_updates", self.tasks.start(
                            b.meeting if self.rng.random() < 0.7 else None)))
                    return
            else:
                self.queue.append(("task_updates", self.tasks.step()))
                return

    async def run(self):
        attempt = 0
        while not self.stopping.is_set():
            url = self.urls[attempt % len(self.urls)]
            try:
                async with websockets.connect(url, open_timeout=5, ping_interval=10,
                                              close_timeout=2, max_size=2**20) as ws:
                    self.log("connected", url=url)
                    attempt = 0
                    await self.session(ws)
                self.log("connection closed", url=url)
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
                self.log("disconnected", url=url, error=str(e) or type(e).__name__)
            if self.stopping.is_set():
                break
            attempt += 1
            delay = self.rng.uniform(0, min(5.0, 0.25 * 2 ** min(attempt, 5)))
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def session(self, ws):
        for bot_id in self.bots:
            channel = f"bot:command:{bot_id}"
            frame = {"op": "subscribe", "channel": channel}
            if channel in self.cmd_pos:
                frame["since"] = self.cmd_pos[channel]
            await ws.send(json.dumps(frame))
        reader = asyncio.ensure_future(self.read(ws))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            interval = 1.0 / self.rate
            next_at = time.monotonic()
            while not reader.done() and not stop.done():
                if not self.queue:
                    self.tick()
                channel, data = self.queue[0]
                await ws.send(json.dumps({"op": "publish", "channel": channel, "data": data,
                                          "id": self.next_id}))
                # sent: the gateway answers `published` (or an error) for this id
                self.queue.pop(0)
                self.next_id += 1
                self.sent += 1
                next_at += interval
                await asyncio.wait([reader, stop], timeout=max(0.0, next_at - time.monotonic()))
                if time.monotonic() - next_at > 2:  # fell far behind (slow machine): no burst
                    next_at = time.monotonic()
        finally:
            stop.cancel()
            if not reader.done():
                reader.cancel()
            else:
                reader.exception()  # consumed: the reconnect loop logs the disconnect

    async def read(self, ws):
        async for raw in ws:
            m = json.loads(raw)
            op = m.get("op")
            if op == "published":
                self.acked += 1
                if self.acked % 500 == 0:
                    self.log("progress", sent=self.sent, acked=self.acked, failed=self.failed)
            elif op == "error":
                self.failed += 1
                self.log("publish failed", code=m.get("code"), message=m.get("message"))
            elif op == "subscribed":
                if isinstance(m.get("seq"), int):
                    self.cmd_pos[m["channel"]] = max(self.cmd_pos.get(m["channel"], 0), m["seq"])
            elif op == "message" and m.get("channel", "").startswith("bot:command:"):
                if isinstance(m.get("seq"), int):
                    self.cmd_pos[m["channel"]] = m["seq"]
                self.command(m["channel"].rsplit(":", 1)[1], m.get("data"))

    def command(self, bot_id, data):
        bot = self.bots.get(bot_id)
        if not bot or not isinstance(data, dict):
            return
        if data.get("action") == "stop":
            by = str(data.get("by") or "the dashboard")[:40]
            accepted = bot.stop(by)
            self.log("stop command", bot=bot_id, by=by, accepted=accepted)
            if accepted:  # goes out next, ahead of the simulated events
                self.queue.insert(0, (f"bot:status:{bot_id}", bot.status()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", action="append", help="gateway WebSocket URL (repeatable)")
    ap.add_argument("--rate", type=float, default=float(os.environ.get("DEMO_RATE", "5")),
                    help="messages per second (default 5, env DEMO_RATE)")
    ap.add_argument("--bots", type=int, default=int(os.environ.get("DEMO_BOTS", "6")),
                    help="number of bots (default 6, env DEMO_BOTS)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (repeatable runs)")
    a = ap.parse_args()
    if not 0 < a.rate <= 1000 or not 1 <= a.bots <= 50:
        ap.error("--rate must be in (0, 1000] and --bots in 1..50")
    urls = a.url or [os.environ.get("DEMO_URL", "ws://127.0.0.1:8080/ws")]
    pub = Publisher(urls, a.rate, a.bots, a.seed)
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, pub.stopping.set)
    pub.log("starting", urls=urls, rate=a.rate, bots=a.bots)
    loop.run_until_complete(pub.run())
    pub.log("stopped", sent=pub.sent, acked=pub.acked, failed=pub.failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
