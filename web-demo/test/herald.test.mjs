// Unit tests for web-demo/herald.js: a fake WebSocket and fake timers, no network.
// Run: node --test web-demo/test/
import { test } from "node:test";
import assert from "node:assert/strict";
import { Herald } from "../herald.js";

// A WebSocket stand-in: records what the client sends, lets the test open it, deliver server
// frames and close it with a code.
class FakeSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
  }
  send(text) {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(JSON.parse(text));
  }
  close(code) {
    this.closedWith = code;
    this.readyState = 3;
    this.onclose?.({ code, reason: "" }); // a real socket reports its own close too
  }
  // test side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(frame) {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  ops(op) {
    return this.sent.filter((f) => f.op === op);
  }
}

// Timers that run only when the test advances the clock.
function fakeClock() {
  let now = 0;
  let nextId = 1;
  const timers = new Map();
  return {
    now: () => now,
    setTimeout: (fn, ms) => {
      const id = nextId++;
      timers.set(id, { at: now + ms, ms, fn });
      return id;
    },
    clearTimeout: (id) => timers.delete(id),
    pending: () => [...timers.values()],
    advance(ms) {
      const end = now + ms;
      for (;;) {
        let due = null;
        for (const [id, t] of timers) if (t.at <= end && (!due || t.at < due[1].at)) due = [id, t];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = end;
    },
  };
}

class MemoryStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(k) {
    return this.items.has(k) ? this.items.get(k) : null;
  }
  setItem(k, v) {
    this.items.set(k, String(v));
  }
}

const EVENTS = ["state", "message", "recovered", "recovery_failed", "error", "join", "leave", "unsubscribed", "refreshed"];
const tick = () => new Promise((resolve) => setImmediate(resolve));

function setup(options = {}) {
  const clock = fakeClock();
  const sockets = [];
  class Socket extends FakeSocket {
    constructor(url) {
      super(url);
      sockets.push(this);
    }
  }
  const herald = new Herald("ws://gw.test/ws", {
    WebSocket: Socket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    ...options,
  });
  const events = [];
  for (const name of EVENTS) herald.on(name, (a, b) => events.push([name, a, b]));
  const of = (name) => events.filter((e) => e[0] === name).map((e) => e[1]);
  return { herald, clock, sockets, events, of, last: () => sockets[sockets.length - 1] };
}

// Subscribe `channel`, open, and answer the subscribe with `reply` fields.
function subscribedAfterOpen(t, channel, reply = {}) {
  const ws = t.last();
  const sub = ws.ops("subscribe").find((f) => f.channel === channel);
  ws.receive({ op: "subscribed", channel, id: sub.id, seq: 0, recovered: false, ...reply });
  return sub;
}

test("subscribe sends the frame on open and routes messages by channel", () => {
  const t = setup();
  const a = [];
  const b = [];
  t.herald.subscribe("bot:status:1", (data, msg) => a.push([data, msg.seq]));
  t.herald.connect();
  assert.equal(t.sockets.length, 1);
  assert.equal(t.last().url, "ws://gw.test/ws");
  assert.equal(t.last().sent.length, 0, "nothing is sent before open");
  t.last().open();
  t.herald.subscribe("task_updates", (data) => b.push(data));
  const subs = t.last().ops("subscribe");
  assert.deepEqual(subs.map((f) => f.channel), ["bot:status:1", "task_updates"]);
  assert.ok(subs.every((f) => Number.isInteger(f.id) && !("since" in f)), "fresh subscribe: id, no since");
  subscribedAfterOpen(t, "bot:status:1", { seq: 7 });
  subscribedAfterOpen(t, "task_updates");
  t.last().receive({ op: "message", channel: "bot:status:1", seq: 8, ts: 1, data: { up: true } });
  t.last().receive({ op: "message", channel: "task_updates", data: { pct: 50 } });
  t.last().receive({ op: "message", channel: "other", seq: 1, data: "not mine" });
  assert.deepEqual(a, [[{ up: true }, 8]]);
  assert.deepEqual(b, [{ pct: 50 }]);
  assert.deepEqual(t.of("message").map((m) => m.channel), ["bot:status:1", "task_updates"]);
  assert.deepEqual(t.herald.position("bot:status:1"), { seq: 8, epoch: undefined });
});

test("request ids are unique integers; publish resolves by id with {seq}", async () => {
  const t = setup();
  t.herald.subscribe("c1", () => {});
  t.herald.connect();
  const early = t.herald.publish("c1", { n: 0 }); // queued until open
  t.last().open();
  const p1 = t.herald.publish("c1", { n: 1 });
  const p2 = t.herald.publish("c2", { n: 2 });
  const ids = t.last().sent.map((f) => f.id);
  assert.equal(ids.length, 4);
  assert.ok(ids.every(Number.isInteger));
  assert.equal(new Set(ids).size, ids.length, "ids are unique");
  const pubs = t.last().ops("publish");
  assert.deepEqual(pubs.map((f) => [f.channel, f.data.n]), [["c1", 0], ["c1", 1], ["c2", 2]]);
  // Replies out of order: matched by id, not by arrival.
  t.last().receive({ op: "published", channel: "c2", id: pubs[2].id, seq: 30 });
  t.last().receive({ op: "published", channel: "c1", id: pubs[1].id, seq: 11 });
  t.last().receive({ op: "published", channel: "c1", id: pubs[0].id, seq: 10 });
  assert.deepEqual(await Promise.all([early, p1, p2]), [{ seq: 10 }, { seq: 11 }, { seq: 30 }]);
});

test("publish rejects with the server error, on timeout, and when the connection drops", async () => {
  const t = setup({ requestTimeout: 1000 });
  t.herald.connect();
  t.last().open();
  const denied = t.herald.publish("c", 1);
  const [frame] = t.last().ops("publish");
  t.last().receive({ op: "error", id: frame.id, code: "forbidden", message: "no publish right" });
  await assert.rejects(denied, { code: "forbidden", message: "no publish right" });

  const slow = t.herald.publish("c", 2);
  t.clock.advance(1000);
  await assert.rejects(slow, { code: "timeout" });

  const lost = t.herald.publish("c", 3);
  t.last().drop(1006);
  await assert.rejects(lost, { code: "unavailable" });
  assert.equal(t.of("error").length, 0, "errors tied to a request are not emitted as events");
});

test("ping resolves on the pong with the same id; error frames without id are emitted", async () => {
  const t = setup();
  t.herald.connect();
  t.last().open();
  const ping = t.herald.ping();
  const [frame] = t.last().ops("ping");
  t.clock.advance(40);
  t.last().receive({ op: "pong", id: frame.id + 1000 }); // not ours: ignored
  t.last().receive({ op: "pong", id: frame.id });
  assert.deepEqual(await ping, { rtt: 40 });
  t.last().receive({ op: "error", code: "bad_request", message: "bad json" });
  assert.deepEqual(t.of("error"), [{ code: "bad_request", message: "bad json" }]);
});

test("reconnect delays use exponential backoff with full jitter, capped", () => {
  const t = setup({ random: () => 0.999999, backoffBase: 250, backoffCap: 15000 });
  t.herald.connect();
  const delays = [];
  for (let i = 0; i < 9; i++) {
    t.last().drop(1006);
    const [timer] = t.clock.pending();
    delays.push(timer.ms);
    t.clock.advance(timer.ms);
  }
  assert.deepEqual(delays, [249, 499, 999, 1999, 3999, 7999, 14999, 14999, 14999]);
  assert.equal(t.sockets.length, 10, "one new socket per delay");

  const r = setup({ random: () => 0 });
  r.herald.connect();
  r.last().drop(1006);
  assert.equal(r.clock.pending()[0].ms, 0, "full jitter: the lower bound is 0");

  const values = [0.1, 0.9, 0.5, 0.3];
  const j = setup({ random: () => values.shift() });
  j.herald.connect();
  const seen = [];
  for (let i = 0; i < 4; i++) {
    j.last().drop(1006);
    seen.push(j.clock.pending()[0].ms);
    j.clock.advance(20000);
  }
  assert.deepEqual(seen, [25, 450, 500, 600]); // random * 250 * 2^attempt
});

test("backoff resets after a connection stayed open, not after a short one", () => {
  const t = setup({ random: () => 0.999999, resetAfter: 10000 });
  t.herald.connect();
  const nextDelay = () => t.clock.pending().find((x) => x.ms < 20000).ms;
  for (let i = 0; i < 3; i++) {
    t.last().drop(1006);
    t.clock.advance(nextDelay());
  }
  t.last().open();
  t.clock.advance(2000); // short-lived connection: keeps growing
  t.last().drop(1006);
  assert.equal(nextDelay(), 1999);
  t.clock.advance(1999);
  t.last().open();
  t.clock.advance(10000); // stable: reset
  t.last().drop(1001);
  assert.equal(nextDelay(), 249);
});

test("close 4029 waits longer; 1001 and 4008 reconnect", () => {
  const t = setup({ random: () => 0, rateLimitDelay: 5000 });
  t.herald.connect();
  t.last().open();
  t.last().drop(4029);
  assert.equal(t.clock.pending()[0].ms, 5000);
  t.clock.advance(4999);
  assert.equal(t.sockets.length, 1, "no reconnect before the rate-limit delay");
  t.clock.advance(1);
  assert.equal(t.sockets.length, 2);
  for (const code of [1001, 4008]) {
    t.last().open();
    t.last().drop(code);
    assert.equal(t.herald.state, "reconnecting");
    t.clock.advance(15000);
  }
  assert.equal(t.sockets.length, 4);
});

test("state events follow the connection", () => {
  const t = setup();
  t.herald.connect();
  t.last().open();
  t.last().drop(1006);
  t.clock.advance(1000);
  t.last().drop(1006); // still reconnecting: no new event
  t.clock.advance(1000);
  t.last().open();
  t.herald.close();
  assert.deepEqual(t.of("state"), ["connecting", "open", "reconnecting", "open", "closed"]);
  const info = t.events.find((e) => e[0] === "state" && e[1] === "reconnecting")[2];
  assert.equal(info.code, 1006);
  assert.equal(typeof info.delay, "number");
});

test("after a reconnect every channel is re-subscribed with since and epoch", () => {
  const t = setup();
  t.herald.subscribe("a", () => {});
  t.herald.subscribe("b", () => {});
  t.herald.subscribe("c", () => {});
  t.herald.connect();
  t.last().open();
  subscribedAfterOpen(t, "a", { seq: 3, epoch: "e1" });
  subscribedAfterOpen(t, "b", { seq: 0, epoch: "e9" }); // empty history: position 0 is known
  // "c" never got its reply: no position
  t.last().receive({ op: "message", channel: "a", seq: 4, ts: 1, data: {} });
  t.last().receive({ op: "message", channel: "a", seq: 5, ts: 1, data: {} });
  t.last().drop(1006);
  t.clock.advance(15000);
  assert.equal(t.sockets.length, 2);
  t.last().open();
  const subs = Object.fromEntries(t.last().ops("subscribe").map((f) => [f.channel, f]));
  assert.equal(subs.a.since, 5);
  assert.equal(subs.a.epoch, "e1");
  assert.equal(subs.b.since, 0);
  assert.equal(subs.b.epoch, "e9");
  assert.ok(!("since" in subs.c) && !("epoch" in subs.c));
});

test("duplicates by seq are dropped across replay and live; raw messages are always delivered", () => {
  const t = setup();
  const got = [];
  t.herald.subscribe("ch", (data, msg) => got.push(msg.seq ?? `raw:${data}`), { since: 3, epoch: "e" });
  t.herald.connect();
  t.last().open();
  const [sub] = t.last().ops("subscribe");
  assert.equal(sub.since, 3, "explicit since is sent on the first connection");
  for (const seq of [2, 3, 4, 5, 4]) t.last().receive({ op: "message", channel: "ch", seq, ts: 0, data: seq });
  t.last().receive({ op: "subscribed", channel: "ch", id: sub.id, seq: 5, epoch: "e", recovered: true, replayed: 2 });
  t.last().receive({ op: "message", channel: "ch", seq: 5, ts: 0, data: 5 }); // live copy of replayed
  t.last().receive({ op: "message", channel: "ch", data: "x" });
  t.last().receive({ op: "message", channel: "ch", data: "x" });
  t.last().receive({ op: "message", channel: "ch", seq: 6, ts: 0, data: 6 });
  assert.deepEqual(got, [4, 5, "raw:x", "raw:x", 6]);
});

test("recovered event after a successful resume", () => {
  const t = setup();
  const got = [];
  t.herald.subscribe("ch", (d) => got.push(d));
  t.herald.connect();
  t.last().open();
  subscribedAfterOpen(t, "ch", { seq: 10, epoch: "e1" });
  t.last().drop(4008);
  t.clock.advance(15000);
  t.last().open();
  const [sub] = t.last().ops("subscribe");
  t.last().receive({ op: "message", channel: "ch", seq: 11, ts: 0, data: "m11" });
  t.last().receive({ op: "subscribed", channel: "ch", id: sub.id, seq: 11, epoch: "e1", recovered: true, replayed: 1 });
  assert.deepEqual(got, ["m11"]);
  assert.deepEqual(t.of("recovered"), [{ channel: "ch", replayed: 1 }]);
  assert.deepEqual(t.of("recovery_failed"), []);
});

test("recovery_failed after a failed resume, then live from the new position", () => {
  const t = setup();
  const got = [];
  t.herald.subscribe("ch", (d) => got.push(d));
  t.herald.subscribe("fresh", () => {});
  t.herald.connect();
  t.last().open();
  subscribedAfterOpen(t, "ch", { seq: 0, epoch: "e1" });
  t.last().receive({ op: "message", channel: "ch", seq: 40, ts: 0, data: "m40" });
  t.last().drop(1001);
  t.clock.advance(15000);
  t.last().open();
  const sub = t.last().ops("subscribe").find((f) => f.channel === "ch");
  assert.equal(sub.since, 40);
  // The database was restored: new epoch, head below our position.
  t.last().receive({ op: "subscribed", channel: "ch", id: sub.id, seq: 2, epoch: "e2", recovered: false, code: "history_reset" });
  // A first subscribe answering recovered:false is not a failed recovery.
  subscribedAfterOpen(t, "fresh", { seq: 9 });
  t.last().receive({ op: "message", channel: "ch", seq: 3, ts: 0, data: "m3" });
  assert.deepEqual(t.of("recovery_failed"), [{ channel: "ch", code: "history_reset" }]);
  assert.deepEqual(got, ["m40", "m3"], "live messages from the new position are accepted");
  assert.deepEqual(t.herald.position("ch"), { seq: 3, epoch: "e2" });
  t.last().drop(1006);
  t.clock.advance(15000);
  t.last().open();
  const again = t.last().ops("subscribe").find((f) => f.channel === "ch");
  assert.deepEqual([again.since, again.epoch], [3, "e2"]);
});

test("an unasked history_reset while live (the server lost history in a failover) asks for a reload", () => {
  const t = setup();
  const got = [];
  t.herald.subscribe("ch", (d) => got.push(d));
  t.herald.connect();
  t.last().open();
  subscribedAfterOpen(t, "ch", { seq: 5, epoch: "e1" });
  t.last().receive({ op: "message", channel: "ch", seq: 6, ts: 0, data: "m6" });
  t.last().receive({ op: "message", channel: "ch", seq: 7, ts: 0, data: "m7" });
  // No request of ours: the server moved the channel to a new epoch at head 6.
  t.last().receive({ op: "subscribed", channel: "ch", seq: 6, epoch: "e2", recovered: false, code: "history_reset" });
  assert.deepEqual(t.of("recovery_failed"), [{ channel: "ch", code: "history_reset" }]);
  assert.deepEqual(t.herald.position("ch"), { seq: 6, epoch: "e2" });
  // seq 7 of the new epoch is a new message, not the old 7: it is delivered
  t.last().receive({ op: "message", channel: "ch", seq: 7, ts: 0, data: "new7" });
  assert.deepEqual(got, ["m6", "m7", "new7"]);
});

test("history_expired keeps the position: a later copy of an old seq is still dropped", () => {
  const t = setup();
  const got = [];
  t.herald.subscribe("ch", (d) => got.push(d), { since: 50, epoch: "e1" });
  t.herald.connect();
  t.last().open();
  const [sub] = t.last().ops("subscribe");
  // Same epoch, history pruned past 51; this instance reports a lower head than we have seen.
  t.last().receive({ op: "subscribed", channel: "ch", id: sub.id, seq: 0, epoch: "e1", recovered: false, code: "history_expired" });
  t.last().receive({ op: "message", channel: "ch", seq: 49, ts: 0, data: "old" });
  t.last().receive({ op: "message", channel: "ch", seq: 60, ts: 0, data: "new" });
  assert.deepEqual(t.of("recovery_failed"), [{ channel: "ch", code: "history_expired" }]);
  assert.deepEqual(got, ["new"]);
  // An epoch change without a code is a reset too.
  t.herald.subscribe("other", () => {}, { since: 9, epoch: "x1" });
  const other = t.last().ops("subscribe").find((f) => f.channel === "other");
  t.last().receive({ op: "subscribed", channel: "other", id: other.id, seq: 1, epoch: "x2", recovered: false });
  assert.deepEqual(t.herald.position("other"), { seq: 1, epoch: "x2" });
  assert.deepEqual(t.of("recovery_failed")[1], { channel: "other", code: "history_unavailable" });
});

test("history_reset with the same epoch (since ahead of head) restarts from the server's seq", () => {
  const t = setup();
  const got = [];
  t.herald.subscribe("ch", (d) => got.push(d), { since: 100, epoch: "e1" });
  t.herald.subscribe("noepoch", () => {}, { since: 7, epoch: "k" });
  t.herald.connect();
  t.last().open();
  const [sub, sub2] = t.last().ops("subscribe");
  t.last().receive({ op: "subscribed", channel: "ch", id: sub.id, seq: 5, epoch: "e1", recovered: false, code: "history_reset" });
  t.last().receive({ op: "message", channel: "ch", seq: 6, ts: 0, data: "m6" });
  assert.deepEqual(got, ["m6"]);
  // A reply without epoch (older gateway) keeps the epoch we had.
  t.last().receive({ op: "subscribed", channel: "noepoch", id: sub2.id, seq: 3, recovered: false });
  assert.deepEqual(t.herald.position("noepoch"), { seq: 7, epoch: "k" });
});

test("4001 calls getToken before reconnecting with the new, URL-encoded token", async () => {
  const tokens = ["first token", "a+b/c=d&e"];
  let calls = 0;
  const t = setup({ getToken: async () => tokens[calls++] });
  t.herald.connect();
  await tick();
  assert.equal(calls, 1, "getToken runs before the first connect too");
  assert.equal(t.last().url, "ws://gw.test/ws?token=first%20token");
  t.last().open();
  t.last().drop(4001);
  assert.equal(t.sockets.length, 1);
  t.clock.advance(15000);
  await tick();
  assert.equal(calls, 2);
  assert.equal(t.sockets.length, 2);
  assert.equal(t.last().url, `ws://gw.test/ws?token=${encodeURIComponent("a+b/c=d&e")}`);
});

test("a static token is appended; 4001 without getToken stops", () => {
  const t = setup({ token: "abc.def" });
  t.herald.connect();
  assert.equal(t.last().url, "ws://gw.test/ws?token=abc.def");
  t.last().open();
  t.last().drop(4001);
  assert.equal(t.herald.state, "closed");
  assert.equal(t.clock.pending().length, 0, "no reconnect scheduled");
  assert.equal(t.of("error")[0].code, "unauthorized");
});

test("a failing getToken is retried with backoff", async () => {
  let calls = 0;
  const t = setup({
    getToken: async () => {
      if (++calls === 1) throw new Error("auth server down");
      return "tok";
    },
  });
  t.herald.connect();
  await tick();
  assert.equal(t.sockets.length, 0);
  assert.equal(t.herald.state, "reconnecting");
  assert.match(t.of("error")[0].message, /auth server down/);
  t.clock.advance(15000);
  await tick();
  assert.equal(t.sockets.length, 1);
  assert.equal(t.last().url, "ws://gw.test/ws?token=tok");
});

test("close() closes with 1000 and stops reconnecting", async () => {
  const t = setup();
  t.herald.connect();
  t.last().open();
  const pending = t.herald.publish("c", 1);
  const ws = t.last();
  t.herald.close();
  assert.equal(ws.closedWith, 1000);
  assert.equal(t.herald.state, "closed");
  await assert.rejects(pending, { code: "unavailable" });
  t.clock.advance(60000);
  assert.equal(t.sockets.length, 1, "no reconnect after close()");
  assert.equal(t.clock.pending().length, 0);

  // close() during the backoff cancels the scheduled dial.
  t.herald.connect();
  t.last().drop(1006);
  assert.equal(t.herald.state, "reconnecting");
  t.herald.close();
  t.clock.advance(60000);
  assert.equal(t.sockets.length, 2);
});

test("close() while getToken is pending opens nothing", async () => {
  let release;
  const t = setup({ getToken: () => new Promise((resolve) => (release = resolve)) });
  t.herald.connect();
  await tick();
  t.herald.close();
  release("tok");
  await tick();
  assert.equal(t.sockets.length, 0);
});

test("positions are persisted to storage and restored by a new client", async () => {
  const storage = new MemoryStorage();
  const t = setup({ storage, storageKey: "hk", persistDelay: 500 });
  t.herald.subscribe("a", () => {});
  t.herald.subscribe("b", () => {});
  t.herald.connect();
  t.last().open();
  subscribedAfterOpen(t, "a", { seq: 1, epoch: "ea" });
  subscribedAfterOpen(t, "b", { seq: 7 });
  t.last().receive({ op: "message", channel: "a", seq: 2, ts: 0, data: {} });
  assert.equal(storage.getItem("hk"), null, "throttled: not saved yet");
  t.clock.advance(500);
  assert.deepEqual(JSON.parse(storage.getItem("hk")), { a: { seq: 2, epoch: "ea" }, b: { seq: 7 } });
  t.last().receive({ op: "message", channel: "a", seq: 3, ts: 0, data: {} });
  t.herald.close(); // flushes
  assert.deepEqual(JSON.parse(storage.getItem("hk")).a, { seq: 3, epoch: "ea" });

  // A reload: a new client on the same storage resumes on its first connection.
  const r = setup({ storage, storageKey: "hk" });
  const got = [];
  r.herald.subscribe("a", (d, m) => got.push(m.seq));
  r.herald.connect();
  r.last().open();
  const [sub] = r.last().ops("subscribe");
  assert.deepEqual([sub.since, sub.epoch], [3, "ea"]);
  r.last().receive({ op: "message", channel: "a", seq: 3, ts: 0, data: {} });
  r.last().receive({ op: "message", channel: "a", seq: 4, ts: 0, data: {} });
  assert.deepEqual(got, [4]);

  const broken = new MemoryStorage();
  broken.setItem("herald", "{not json");
  assert.doesNotThrow(() => setup({ storage: broken }));
});

test("unsubscribe stops delivery and the channel is not re-subscribed after a reconnect", () => {
  const storage = new MemoryStorage();
  const t = setup({ storage, persistDelay: 0 });
  const a = [];
  const b1 = [];
  const b2 = [];
  t.herald.subscribe("a", (d) => a.push(d));
  const offB1 = t.herald.subscribe("b", (d) => b1.push(d));
  t.herald.subscribe("b", (d) => b2.push(d));
  t.herald.connect();
  t.last().open();
  assert.equal(t.last().ops("subscribe").length, 2, "one subscribe per channel");
  subscribedAfterOpen(t, "a", { seq: 1 });
  subscribedAfterOpen(t, "b", { seq: 1 });
  const offB3 = t.herald.subscribe("b", () => {}, { since: 0 }); // already subscribed: no frame
  assert.equal(t.last().ops("subscribe").length, 2, "no second subscribe while open");
  assert.equal(t.herald.position("b").seq, 1, "since ignored for a subscribed channel");
  offB3();
  offB1(); // one of two callbacks: still subscribed
  t.last().receive({ op: "message", channel: "b", seq: 2, ts: 0, data: "b2" });
  assert.deepEqual([b1, b2], [[], ["b2"]]);
  assert.equal(t.last().ops("unsubscribe").length, 0);

  t.herald.unsubscribe("a");
  const [unsub] = t.last().ops("unsubscribe");
  assert.equal(unsub.channel, "a");
  assert.ok(Number.isInteger(unsub.id));
  t.last().receive({ op: "message", channel: "a", seq: 2, ts: 0, data: "late" });
  t.last().receive({ op: "unsubscribed", channel: "a", id: unsub.id });
  assert.deepEqual(a, []);
  assert.equal(t.herald.position("a"), undefined);
  assert.ok(!("a" in JSON.parse(storage.getItem("herald"))), "forgotten in storage");

  t.last().drop(1006);
  t.clock.advance(15000);
  t.last().open();
  assert.deepEqual(t.last().ops("subscribe").map((f) => f.channel), ["b"]);
});

test("a permanent subscribe error drops the subscription and is reported with its channel", () => {
  const t = setup();
  t.herald.subscribe("secret", () => {});
  t.herald.subscribe("busy", () => {});
  t.herald.connect();
  t.last().open();
  const subs = t.last().ops("subscribe");
  t.last().receive({ op: "error", id: subs[0].id, code: "forbidden", message: "not allowed" });
  t.last().receive({ op: "error", id: subs[1].id, code: "unavailable", message: "try later" });
  assert.deepEqual(t.of("error"), [
    { code: "forbidden", message: "not allowed", op: "subscribe", channel: "secret" },
    { code: "unavailable", message: "try later", op: "subscribe", channel: "busy" },
  ]);
  t.last().drop(1006);
  t.clock.advance(15000);
  t.last().open();
  assert.deepEqual(t.last().ops("subscribe").map((f) => f.channel), ["busy"], "transient error: retried");
});

test("a throwing callback does not stop delivery to the others", () => {
  const t = setup();
  const got = [];
  const originalError = console.error;
  const reported = [];
  console.error = (e) => reported.push(e);
  try {
    t.herald.subscribe("ch", () => {
      throw new Error("app bug");
    });
    t.herald.subscribe("ch", (d) => got.push(d));
    t.herald.connect();
    t.last().open();
    t.last().receive({ op: "message", channel: "ch", data: 1 });
  } finally {
    console.error = originalError;
  }
  assert.deepEqual(got, [1]);
  assert.equal(reported.length, 1);
});

test("heartbeat: a silent connection gets a ping op; any frame keeps it", () => {
  const t = setup();
  t.herald.subscribe("room", () => {});
  t.herald.connect();
  t.last().open();
  subscribedAfterOpen(t, "room");
  t.clock.advance(24999);
  assert.equal(t.last().ops("ping").length, 0, "no ping before 25 s of silence");
  t.clock.advance(1);
  assert.equal(t.last().ops("ping").length, 1);
  assert.ok(!("id" in t.last().ops("ping")[0]), "the heartbeat's ping is not a request");
  t.clock.advance(9000);
  t.last().receive({ op: "pong" });
  t.clock.advance(20000);
  assert.equal(t.sockets.length, 1, "answered: the connection stays");
  assert.equal(t.last().closedWith, null);
  t.last().receive({ op: "message", channel: "room", seq: 1, data: 1 });
  t.clock.advance(24999);
  assert.equal(t.last().ops("ping").length, 1, "a message counts as a sign of life too");
  t.clock.advance(1);
  assert.equal(t.last().ops("ping").length, 2);
  assert.equal(t.herald.state, "open");
});

test("heartbeat: no answer within the timeout drops the socket and resumes on a new one", () => {
  const t = setup();
  t.herald.subscribe("room", () => {});
  t.herald.connect();
  const first = t.last();
  first.open();
  subscribedAfterOpen(t, "room");
  first.receive({ op: "message", channel: "room", seq: 7, data: "x" });
  t.clock.advance(25000);
  assert.equal(first.ops("ping").length, 1);
  t.clock.advance(9999);
  assert.equal(t.herald.state, "open");
  t.clock.advance(1);
  assert.equal(first.closedWith, 4000, "the dead socket is closed");
  assert.equal(t.herald.state, "reconnecting");
  assert.ok(t.of("error").some((e) => e.code === "timeout"));
  t.clock.advance(15000);
  assert.equal(t.sockets.length, 2, "a new connection is dialed");
  t.last().open();
  const sub = t.last().ops("subscribe").find((f) => f.channel === "room");
  assert.equal(sub.since, 7, "the new connection resumes where the dead one stopped");
});

test("heartbeat: 0 turns it off; closing stops it", () => {
  const off = setup({ heartbeat: 0 });
  off.herald.connect();
  off.last().open();
  assert.equal(off.clock.pending().length, 0);
  off.clock.advance(120000);
  assert.equal(off.last().ops("ping").length, 0);
  const on = setup();
  on.herald.connect();
  on.last().open();
  assert.equal(on.clock.pending().length, 1, "one heartbeat timer while open");
  on.herald.close();
  assert.equal(on.clock.pending().length, 0);
});

// ---- getState: load the state, then stream from its position ----

test("getState: the state is loaded first, then the channel subscribed strictly from its position", async () => {
  const t = setup();
  const calls = [];
  const got = [];
  const states = [];
  t.herald.connect();
  t.last().open();
  t.herald.subscribe("bot:status:1", (d, m) => got.push(m.seq), {
    getState: async (channel) => {
      calls.push(channel);
      return { state: { up: true }, seq: 41, epoch: "e1" };
    },
    onState: (state, pos) => states.push([state, pos]),
  });
  assert.equal(t.last().ops("subscribe").length, 0, "no subscribe before the state is loaded");
  await tick();
  assert.deepEqual(calls, ["bot:status:1"]);
  assert.deepEqual(states, [[{ up: true }, { seq: 41, epoch: "e1" }]]);
  const [sub] = t.last().ops("subscribe");
  assert.deepEqual({ ...sub, id: 0 }, { op: "subscribe", channel: "bot:status:1", id: 0, since: 41, epoch: "e1", strict: true });
  t.last().receive({ op: "message", channel: "bot:status:1", seq: 41, data: "old" }); // in the state
  t.last().receive({ op: "message", channel: "bot:status:1", seq: 42, data: "new" });
  subscribedAfterOpen(t, "bot:status:1", { seq: 42, epoch: "e1", recovered: true, replayed: 1 });
  assert.deepEqual(got, [42]);
  // a reconnect resumes strictly from the last seq, without loading again
  t.last().drop(1006);
  t.clock.advance(60000);
  t.last().open();
  const again = t.last().ops("subscribe")[0];
  assert.deepEqual([again.since, again.epoch, again.strict], [42, "e1", true]);
  assert.equal(calls.length, 1);
});

test("getState: a refused strict resume loads the state again and subscribes from the new position", async () => {
  const t = setup();
  let seq = 10;
  const states = [];
  t.herald.connect();
  t.last().open();
  t.herald.subscribe("room:1", () => {}, {
    getState: () => ({ state: `at ${seq}`, seq, epoch: "e1" }),
    onState: (state) => states.push(state),
  });
  await tick();
  const first = t.last().ops("subscribe")[0];
  seq = 30; // the application moved on meanwhile
  t.last().receive({ op: "error", code: "history_expired", channel: "room:1", seq: 30, epoch: "e1", id: first.id, message: "strict" });
  assert.deepEqual(t.of("error").map((e) => [e.code, e.channel]), [["history_expired", "room:1"]]);
  await tick();
  assert.deepEqual(states, ["at 10", "at 30"]);
  const second = t.last().ops("subscribe")[1];
  assert.deepEqual([second.since, second.strict], [30, true]);
  assert.deepEqual(t.herald.position("room:1"), { seq: 30, epoch: "e1" });
});

test("getState: an unasked reset leaves the channel, reloads, and ignores what comes meanwhile", async () => {
  const t = setup();
  const got = [];
  let load = { state: "s5", seq: 5, epoch: "e1" };
  t.herald.connect();
  t.last().open();
  t.herald.subscribe("ch", (d) => got.push(d), { getState: () => load });
  await tick();
  subscribedAfterOpen(t, "ch", { seq: 5, epoch: "e1", recovered: true, replayed: 0 });
  load = { state: "s8", seq: 8, epoch: "e2" };
  t.last().receive({ op: "subscribed", channel: "ch", seq: 6, epoch: "e2", recovered: false, code: "history_reset" });
  assert.deepEqual(t.last().ops("unsubscribe").map((f) => f.channel), ["ch"]);
  t.last().receive({ op: "message", channel: "ch", seq: 7, data: "m7 (in the new state)" });
  await tick();
  const resub = t.last().ops("subscribe").at(-1);
  assert.deepEqual([resub.since, resub.epoch, resub.strict], [8, "e2", true]);
  t.last().receive({ op: "message", channel: "ch", seq: 9, data: "m9" });
  assert.deepEqual(got, ["m9"]);
});

test("getState: a failing load is reported and retried with backoff; unsubscribe stops it", async () => {
  const t = setup();
  let fail = true;
  let calls = 0;
  t.herald.connect();
  t.last().open();
  t.herald.subscribe("ch", () => {}, {
    getState: () => {
      calls++;
      if (fail) throw new Error("api down");
      return { state: null, seq: 3, epoch: "e" };
    },
  });
  await tick();
  assert.equal(calls, 1);
  assert.deepEqual(t.of("error").map((e) => [e.code, e.channel]), [["unavailable", "ch"]]);
  assert.equal(t.last().ops("subscribe").length, 0);
  fail = false;
  t.clock.advance(1000);
  await tick();
  assert.equal(calls, 2);
  assert.equal(t.last().ops("subscribe")[0].since, 3);
  // a load that keeps failing stops once the channel is unsubscribed
  const t2 = setup();
  let calls2 = 0;
  t2.herald.connect();
  t2.last().open();
  t2.herald.subscribe("x", () => {}, { getState: () => { calls2++; throw new Error("no"); } });
  await tick();
  t2.herald.unsubscribe("x");
  t2.clock.advance(60000);
  await tick();
  assert.equal(calls2, 1);
  assert.throws(() => t2.herald.subscribe("y", () => {}, { getState: 5 }), TypeError);
});

// ---- presence: who is on a channel ----

const ALICE = { sub: "alice", info: { name: "Alice" } };
const BOB = { sub: "bob", info: { name: "Bob" } };

// Subscribe `channel` with onPresence; returns the lists given to it (each call's [members, p]).
function watched(t, channel, options = {}) {
  const calls = [];
  const joins = [];
  const leaves = [];
  const stop = t.herald.subscribe(channel, () => {}, {
    onPresence: (members, p) => calls.push([members, p]),
    onJoin: (m) => joins.push(m),
    onLeave: (m) => leaves.push(m),
    ...options,
  });
  return { calls, joins, leaves, stop, latest: () => calls.at(-1) };
}

// The presence query sent for `channel` on the current socket (the latest one).
const presenceQuery = (t, channel) => t.last().ops("presence").filter((f) => f.channel === channel).at(-1);

test("presence: sub and info go in every subscribe frame, also after a reconnect; a bad sub throws", () => {
  const t = setup();
  t.herald.subscribe("chat:lobby", () => {}, { presence: { sub: "alice", info: { name: "Alice" } } });
  t.herald.subscribe("chat:anon", () => {}, { presence: { info: "just looking" } });
  t.herald.subscribe("plain", () => {});
  t.herald.connect();
  t.last().open();
  const subs = () => Object.fromEntries(t.last().ops("subscribe").map((f) => [f.channel, f]));
  let s = subs();
  assert.equal(s["chat:lobby"].sub, "alice");
  assert.deepEqual(s["chat:lobby"].info, { name: "Alice" });
  assert.ok(!("sub" in s["chat:anon"]), "no sub given: none sent (with auth the token's sub counts)");
  assert.equal(s["chat:anon"].info, "just looking");
  assert.ok(!("sub" in s.plain) && !("info" in s.plain));
  subscribedAfterOpen(t, "chat:lobby", { seq: 4, epoch: "e" });
  t.last().drop(1006);
  t.clock.advance(15000);
  t.last().open();
  s = subs();
  assert.deepEqual([s["chat:lobby"].sub, s["chat:lobby"].info, s["chat:lobby"].since], ["alice", { name: "Alice" }, 4]);
  assert.throws(() => t.herald.subscribe("x", () => {}, { presence: { sub: "" } }), TypeError);
  assert.throws(() => t.herald.subscribe("x", () => {}, { presence: { sub: "é".repeat(64) } }), TypeError, "128 bytes");
  assert.doesNotThrow(() => t.herald.subscribe("y", () => {}, { presence: { sub: "é".repeat(63) + "a" } }));
  assert.throws(() => t.herald.subscribe("x", () => {}, { presence: "alice" }), TypeError);
  assert.throws(() => t.herald.subscribe("x", () => {}, { onPresence: 1 }), TypeError);
});

test("presence(): the query resolves with count and members; its errors reject", async () => {
  const t = setup();
  t.herald.connect();
  const early = t.herald.presence("chat:lobby"); // queued until open
  t.last().open();
  const q = presenceQuery(t, "chat:lobby");
  assert.deepEqual({ ...q, id: 0 }, { op: "presence", channel: "chat:lobby", id: 0 });
  t.last().receive({ op: "presence", channel: "chat:lobby", count: 3, members: [ALICE, { sub: "bob", info: null }], id: q.id });
  assert.deepEqual(await early, { channel: "chat:lobby", count: 3, members: [ALICE, { sub: "bob", info: null }] });
  for (const code of ["not_found", "forbidden", "unavailable"]) {
    const p = t.herald.presence(`chat:${code}`);
    t.last().receive({ op: "error", code, message: `no: ${code}`, id: presenceQuery(t, `chat:${code}`).id });
    await assert.rejects(p, { code, message: `no: ${code}` });
  }
  assert.equal(t.of("error").length, 0, "errors of a presence() call are its own, not events");
});

test("onPresence: the list is loaded after subscribed, then joins upsert and leaves delete", () => {
  const t = setup();
  t.herald.connect();
  t.last().open();
  const w = watched(t, "chat:lobby", { presence: { sub: "alice", info: { name: "Alice" } } });
  assert.equal(t.last().ops("presence").length, 0, "no query before the subscription is answered");
  subscribedAfterOpen(t, "chat:lobby");
  const q = presenceQuery(t, "chat:lobby");
  assert.ok(q, "queried after subscribed");
  assert.equal(w.calls.length, 0, "nothing shown before the reply");
  t.last().receive({ op: "presence", channel: "chat:lobby", count: 2, members: [ALICE], id: q.id });
  assert.deepEqual(w.latest(), [[ALICE], { channel: "chat:lobby", count: 2, anonymous: 1, full: false }]);
  t.last().receive({ op: "join", channel: "chat:lobby", member: BOB });
  assert.deepEqual(w.latest()[0], [ALICE, BOB]);
  assert.equal(w.latest()[1].count, 3);
  t.last().receive({ op: "join", channel: "chat:lobby", member: { sub: "bob", info: { name: "Bobby" } } }); // upsert
  assert.deepEqual(w.latest()[0], [ALICE, { sub: "bob", info: { name: "Bobby" } }]);
  t.last().receive({ op: "join", channel: "chat:lobby", member: { sub: "bob", info: { name: "Bobby" } } }); // same: no call
  const calls = w.calls.length;
  t.last().receive({ op: "leave", channel: "chat:lobby", member: { sub: "alice" } });
  t.last().receive({ op: "leave", channel: "chat:lobby", member: { sub: "nobody" } }); // unknown: nothing changes
  t.last().receive({ op: "join", channel: "other", member: ALICE }); // not subscribed: ignored
  assert.equal(w.calls.length, calls + 1);
  assert.deepEqual(w.latest(), [[{ sub: "bob", info: { name: "Bobby" } }], { channel: "chat:lobby", count: 2, anonymous: 1, full: false }]);
  assert.deepEqual(t.herald.members("chat:lobby").members, [{ sub: "bob", info: { name: "Bobby" } }]);
  // the raw events, to onJoin/onLeave and as events; a leave carries the info last known
  assert.deepEqual(w.joins.map((m) => m.sub), ["bob", "bob", "bob"]);
  assert.deepEqual(w.leaves, [{ sub: "alice", info: { name: "Alice" } }, { sub: "nobody" }]);
  assert.deepEqual(t.of("join").map((e) => [e.channel, e.member.sub]), [["chat:lobby", "bob"], ["chat:lobby", "bob"], ["chat:lobby", "bob"]]);
  assert.deepEqual(t.of("leave").map((e) => e.member.sub), ["alice", "nobody"]);
  // a second onPresence handler gets the current list at once
  const late = [];
  t.herald.subscribe("chat:lobby", () => {}, { onPresence: (m) => late.push(m.map((x) => x.sub)) });
  assert.deepEqual(late, [["bob"]]);
  assert.equal(t.last().ops("presence").length, 1, "no second query for it");
});

test("onPresence: events that race with the query are applied on top of its reply", () => {
  const t = setup();
  t.herald.connect();
  t.last().open();
  const w = watched(t, "room");
  subscribedAfterOpen(t, "room");
  const q = presenceQuery(t, "room");
  // while the query is out: carol joins, alice leaves; the reply was read before either
  t.last().receive({ op: "join", channel: "room", member: { sub: "carol", info: null } });
  t.last().receive({ op: "leave", channel: "room", member: { sub: "alice" } });
  assert.equal(w.calls.length, 0);
  t.last().receive({ op: "presence", channel: "room", count: 2, members: [ALICE, BOB], id: q.id });
  assert.deepEqual(w.latest()[0].map((m) => m.sub), ["bob", "carol"], "alice's leave and carol's join survive the older reply");
  assert.equal(w.latest()[1].count, 2);
  // a reply that already includes the events: the same result
  const t2 = setup();
  t2.herald.connect();
  t2.last().open();
  const w2 = watched(t2, "room");
  subscribedAfterOpen(t2, "room");
  t2.last().receive({ op: "join", channel: "room", member: BOB });
  t2.last().receive({ op: "presence", channel: "room", count: 1, members: [BOB], id: presenceQuery(t2, "room").id });
  assert.deepEqual(w2.latest(), [[BOB], { channel: "room", count: 1, anonymous: 0, full: false }]);
});

test("onPresence: a reconnect loads the list again, dropping who left meanwhile", () => {
  const t = setup();
  t.herald.connect();
  t.last().open();
  const w = watched(t, "chat:lobby", { presence: { sub: "alice" } });
  subscribedAfterOpen(t, "chat:lobby", { seq: 2, epoch: "e" });
  t.last().receive({ op: "presence", channel: "chat:lobby", count: 2, members: [ALICE, BOB], id: presenceQuery(t, "chat:lobby").id });
  assert.deepEqual(w.latest()[0].map((m) => m.sub), ["alice", "bob"]);
  const before = t.last();
  before.drop(1006);
  t.clock.advance(15000);
  assert.notEqual(t.last(), before);
  t.last().open();
  assert.equal(t.last().ops("presence").length, 0, "not before the new subscription is answered");
  const sub = t.last().ops("subscribe")[0];
  t.last().receive({ op: "subscribed", channel: "chat:lobby", id: sub.id, seq: 2, epoch: "e", recovered: true, replayed: 0 });
  const q = presenceQuery(t, "chat:lobby");
  assert.ok(q, "queried again on the new connection");
  // bob left while this client was away (his leave was never seen), dave came
  t.last().receive({ op: "presence", channel: "chat:lobby", count: 2, members: [ALICE, { sub: "dave", info: null }], id: q.id });
  assert.deepEqual(w.latest()[0].map((m) => m.sub), ["alice", "dave"]);
  // a reply to the query of the dead socket (same id space, never answered) changes nothing
  t.last().receive({ op: "presence", channel: "chat:lobby", count: 9, members: [], id: q.id - 100 });
  assert.deepEqual(t.herald.members("chat:lobby").members.map((m) => m.sub), ["alice", "dave"]);
  // a query still out when the socket drops is not an error, and is asked again only once the
  // next subscription is answered
  t.last().drop(1006);
  t.clock.advance(15000);
  t.last().open();
  t.last().receive({ op: "subscribed", channel: "chat:lobby", id: t.last().ops("subscribe")[0].id, seq: 2, epoch: "e", recovered: true, replayed: 0 });
  assert.equal(t.last().ops("presence").length, 1);
  t.last().drop(1006);
  t.clock.advance(60000);
  t.last().open();
  assert.equal(t.last().ops("presence").length, 0, "no retry of the lost query on its own");
  assert.equal(t.of("error").length, 0, "the query lost with the socket is not an error");
});

test("onPresence: a failed query is reported; unavailable is retried with backoff, not_found is not", () => {
  const t = setup();
  t.herald.connect();
  t.last().open();
  const w = watched(t, "chat:lobby");
  watched(t, "news");
  subscribedAfterOpen(t, "chat:lobby");
  subscribedAfterOpen(t, "news");
  t.last().receive({ op: "error", code: "unavailable", message: "redis down", id: presenceQuery(t, "chat:lobby").id });
  t.last().receive({ op: "error", code: "not_found", message: "presence is not enabled", id: presenceQuery(t, "news").id });
  assert.deepEqual(t.of("error"), [
    { code: "unavailable", message: "redis down", op: "presence", channel: "chat:lobby" },
    { code: "not_found", message: "presence is not enabled", op: "presence", channel: "news" },
  ]);
  assert.equal(t.last().ops("presence").length, 2);
  t.clock.advance(1000);
  const retries = t.last().ops("presence");
  assert.deepEqual(retries.map((f) => f.channel), ["chat:lobby", "news", "chat:lobby"], "only the transient one is asked again");
  t.last().receive({ op: "presence", channel: "chat:lobby", count: 1, members: [ALICE], id: retries[2].id });
  assert.deepEqual(w.latest()[0], [ALICE]);
  // a query that gets no answer times out and is asked again
  const s = setup({ requestTimeout: 2000 });
  s.herald.connect();
  s.last().open();
  watched(s, "room");
  subscribedAfterOpen(s, "room");
  s.clock.advance(2000);
  assert.deepEqual(s.of("error").map((e) => [e.code, e.op, e.channel]), [["timeout", "presence", "room"]]);
  s.clock.advance(1000);
  assert.equal(s.last().ops("presence").length, 2);
});

test("presence_full is reported with the channel; the subscription stays and the list says full", () => {
  const t = setup();
  t.herald.connect();
  t.last().open();
  const w = watched(t, "chat:big", { presence: { sub: "zed" } });
  const [sub] = t.last().ops("subscribe");
  t.last().receive({ op: "error", code: "presence_full", channel: "chat:big", message: "the channel's member list is full" });
  t.last().receive({ op: "subscribed", channel: "chat:big", id: sub.id, seq: 0, recovered: false });
  assert.deepEqual(t.of("error"), [{ code: "presence_full", message: "the channel's member list is full", op: "subscribe", channel: "chat:big" }]);
  t.last().receive({ op: "presence", channel: "chat:big", count: 3, members: [ALICE, BOB], id: presenceQuery(t, "chat:big").id });
  assert.deepEqual(w.latest()[1], { channel: "chat:big", count: 3, anonymous: 1, full: true });
  t.last().receive({ op: "message", channel: "chat:big", seq: 1, data: "still subscribed" });
  assert.equal(t.of("message").length, 1);
  // a place frees: the gateway lists this client (its join): no longer full
  t.last().receive({ op: "leave", channel: "chat:big", member: { sub: "bob" } });
  assert.equal(w.latest()[1].full, true);
  t.last().receive({ op: "join", channel: "chat:big", member: { sub: "zed", info: null } });
  assert.deepEqual(w.latest(), [[ALICE, { sub: "zed", info: null }], { channel: "chat:big", count: 3, anonymous: 1, full: false }]);
  // the same error carrying the subscribe's id does not cost the subscription its reply
  const r = setup();
  r.herald.connect();
  r.last().open();
  watched(r, "chat:big", { presence: { sub: "zed" } });
  const [s2] = r.last().ops("subscribe");
  r.last().receive({ op: "error", code: "presence_full", channel: "chat:big", message: "full", id: s2.id });
  r.last().receive({ op: "subscribed", channel: "chat:big", id: s2.id, seq: 5, recovered: false });
  assert.ok(presenceQuery(r, "chat:big"), "subscribed as usual");
  assert.deepEqual(r.herald.position("chat:big"), { seq: 5, epoch: undefined });
  // on a new subscription the flag is cleared until the gateway says it again
  r.last().drop(1006);
  r.clock.advance(15000);
  r.last().open();
  const s3 = r.last().ops("subscribe")[0];
  r.last().receive({ op: "subscribed", channel: "chat:big", id: s3.id, seq: 5, recovered: true, replayed: 0 });
  r.last().receive({ op: "presence", channel: "chat:big", count: 1, members: [{ sub: "zed", info: null }], id: presenceQuery(r, "chat:big").id });
  assert.equal(r.herald.members("chat:big").full, false);
});

test("unsubscribe forgets the list: no more calls, events ignored, not queried after a reconnect", () => {
  const t = setup();
  t.herald.connect();
  t.last().open();
  const w = watched(t, "room", { presence: { sub: "alice" } });
  subscribedAfterOpen(t, "room");
  const q = presenceQuery(t, "room");
  w.stop();
  t.last().receive({ op: "presence", channel: "room", count: 1, members: [ALICE], id: q.id });
  t.last().receive({ op: "join", channel: "room", member: BOB });
  assert.equal(w.calls.length, 0);
  assert.deepEqual(w.joins, []);
  assert.equal(t.herald.members("room"), undefined);
  // subscribed again without presence: the old identity is not sent
  t.herald.subscribe("room", () => {});
  const again = t.last().ops("subscribe").at(-1);
  assert.ok(!("sub" in again));
  subscribedAfterOpen(t, "room");
  assert.equal(t.last().ops("presence").length, 1, "no list asked for: nobody watches it");
});

// ---- token refresh ----

// An unsigned-looking JWT with these claims (herald.js reads exp without checking signatures).
const b64url = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const jwt = (claims) => `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}.sig`;

// Advance the clock by `ms` in steps, letting promises (refreshToken) settle after each and
// then calling `onStep` (to answer what went out).
async function advanceAsync(t, ms, step, onStep = () => {}) {
  for (let done = 0; done < ms; done += step) {
    t.clock.advance(Math.min(step, ms - done));
    await tick();
    onStep();
  }
}

test("refresh: sent with the new token before exp; refreshed reschedules from the new exp", async () => {
  const fresh = [jwt({ sub: "u", exp: 200 }), jwt({ sub: "u", exp: 1000 }), jwt({ sub: "u", exp: 2000 })];
  let calls = 0;
  const t = setup({ token: jwt({ sub: "u", exp: 100 }), refreshToken: async () => fresh[calls++], heartbeat: 0 });
  t.herald.subscribe("a", () => {});
  t.herald.connect();
  t.last().open();
  subscribedAfterOpen(t, "a");
  // The clock starts at 0: 100 s left. 30 s (refreshBefore) before exp is earlier than 85%.
  t.clock.advance(69999);
  await tick();
  assert.equal(calls, 0, "not yet");
  t.clock.advance(1);
  await tick();
  const [r1] = t.last().ops("refresh");
  assert.deepEqual(r1, { op: "refresh", token: fresh[0], id: r1.id });
  assert.ok(Number.isInteger(r1.id));
  t.last().receive({ op: "refreshed", exp: 200, id: r1.id });
  assert.deepEqual(t.of("refreshed"), [{ exp: 200 }]);
  // 130 s left at 70 s: next at 170 s, from the new exp.
  t.clock.advance(99999);
  await tick();
  assert.equal(t.last().ops("refresh").length, 1);
  t.clock.advance(1);
  await tick();
  const r2 = t.last().ops("refresh")[1];
  assert.equal(r2.token, fresh[1]);
  t.last().receive({ op: "refreshed", exp: 1000, id: r2.id });
  // 830 s left at 170 s: 85% of it (705.5 s) comes before 30 s ahead of exp.
  t.clock.advance(705499);
  await tick();
  assert.equal(t.last().ops("refresh").length, 2);
  t.clock.advance(1);
  await tick();
  const r3 = t.last().ops("refresh")[2];
  assert.equal(r3.token, fresh[2]);
  t.last().receive({ op: "refreshed", exp: 2000, id: r3.id });
  assert.equal(t.clock.pending().length, 1, "the next refresh");
  assert.equal(t.sockets.length, 1, "the same connection throughout");
  assert.equal(t.last().ops("subscribe").length, 1, "subscriptions kept, not re-sent");
  assert.equal(t.herald.state, "open");
  assert.equal(t.of("error").length, 0);
  t.herald.close();
  assert.equal(t.clock.pending().length, 0, "close() stops refreshing");
});

test("refresh: refreshToken throwing, an error reply and no reply are reported and retried until one succeeds", async () => {
  let calls = 0;
  const t = setup({
    token: jwt({ exp: 100 }),
    refreshToken: async () => {
      if (++calls === 1) throw new Error("auth server down");
      return jwt({ exp: 100 + calls });
    },
    requestTimeout: 1000,
    heartbeat: 0,
  });
  t.herald.connect();
  t.last().open();
  t.clock.advance(70000);
  await tick();
  assert.equal(calls, 1);
  assert.equal(t.last().ops("refresh").length, 0, "nothing to send");
  // random() = 0.5: retries after 125, 250, 500 ms (backoffBase 250, doubling)
  t.clock.advance(125);
  await tick();
  const r2 = t.last().ops("refresh")[0];
  assert.equal(r2.token, jwt({ exp: 102 }));
  t.last().receive({ op: "error", code: "unauthorized", message: "token expired", id: r2.id });
  t.clock.advance(249);
  await tick();
  assert.equal(t.last().ops("refresh").length, 1, "backoff: not yet");
  t.clock.advance(1);
  await tick();
  const r3 = t.last().ops("refresh")[1];
  assert.equal(r3.token, jwt({ exp: 103 }));
  t.clock.advance(1000); // no reply: timeout
  t.clock.advance(500);
  await tick();
  const r4 = t.last().ops("refresh")[2];
  assert.equal(r4.token, jwt({ exp: 104 }));
  t.last().receive({ op: "refreshed", exp: 104, id: r4.id });
  t.last().receive({ op: "refreshed", exp: 103, id: r3.id }); // late reply to a timed-out one: ignored
  assert.deepEqual(t.of("refreshed"), [{ exp: 104 }]);
  const errors = t.of("error");
  assert.deepEqual(errors.map((e) => [e.code, e.op]), [["unauthorized", "refresh"], ["unauthorized", "refresh"], ["timeout", "refresh"]]);
  assert.match(errors[0].message, /auth server down/);
  assert.equal(errors[1].message, "token expired");
  assert.equal(t.sockets.length, 1);
});

test("refresh: retries stop when the token runs out; then 4001 reconnects through getToken", async () => {
  const tokens = [jwt({ exp: 10 }), jwt({ exp: 1000 })];
  let dials = 0;
  let refreshes = 0;
  const t = setup({
    getToken: async () => tokens[dials++],
    refreshToken: async () => `r${++refreshes}`,
    heartbeat: 0,
  });
  t.herald.connect();
  await tick();
  t.last().open();
  const sentAt = [];
  await advanceAsync(t, 20000, 25, () => {
    for (const f of t.last().ops("refresh").slice(sentAt.length)) {
      sentAt.push(t.clock.now());
      t.last().receive({ op: "error", code: "unauthorized", message: "token invalid", id: f.id });
    }
  });
  // 10 s left: half of it (refreshBefore would be in the past), then 125, 250, 500, 1000 and
  // 2000 ms after each failure; the next, 4000 ms later, would come after exp.
  assert.deepEqual(sentAt, [5000, 5125, 5375, 5875, 6875, 8875]);
  assert.equal(t.of("error").length, 6);
  assert.equal(t.clock.pending().length, 0, "nothing more scheduled");
  assert.equal(t.sockets.length, 1);
  t.last().drop(4001); // the gateway, at exp + leeway
  t.clock.advance(15000);
  await tick();
  assert.equal(dials, 2);
  assert.equal(t.sockets.length, 2);
  assert.equal(t.last().url, `ws://gw.test/ws?token=${tokens[1]}`);
});

test("refresh: not attempted for a token without a readable exp, nor without a function for a new one", async () => {
  const payload = (text) => `${b64url({ alg: "HS256" })}.${Buffer.from(text).toString("base64url")}.sig`;
  const unreadable = [
    "abc.def", // not a JWT
    `${jwt({ exp: 100 })}.x`, // four parts
    "x.!!!.y", // not base64url
    payload("{not json"),
    payload("17"),
    jwt({ sub: "u" }), // no exp
    jwt({ sub: "u", exp: "100" }),
  ];
  const cases = [
    ...unreadable.map((token) => ({ token, refreshToken: async () => jwt({ exp: 200 }) })),
    { token: jwt({ exp: 100 }) }, // a static token: nothing to refresh it with
  ];
  for (const options of cases) {
    const t = setup({ ...options, heartbeat: 0 });
    t.herald.connect();
    t.last().open();
    assert.equal(t.clock.pending().length, 0, `nothing scheduled for ${options.token}`);
    t.clock.advance(1e9);
    await tick();
    assert.equal(t.last().ops("refresh").length, 0);
  }
  // the control: a readable exp is refreshed
  const t = setup({ token: jwt({ exp: 100 }), refreshToken: async () => jwt({ exp: 200 }), heartbeat: 0 });
  t.herald.connect();
  t.last().open();
  t.clock.advance(70000);
  await tick();
  assert.equal(t.last().ops("refresh").length, 1);
});

test("refresh: getToken is used without refreshToken; bad_request stops refreshing on that connection", async () => {
  const tokens = [jwt({ exp: 100 }), jwt({ exp: 200 }), jwt({ exp: 5000 })];
  let calls = 0;
  const t = setup({ getToken: async () => tokens[calls++], heartbeat: 0 });
  t.herald.connect();
  await tick();
  t.last().open();
  t.clock.advance(70000);
  await tick();
  const [r1] = t.last().ops("refresh");
  assert.equal(r1.token, tokens[1]);
  t.last().receive({ op: "error", code: "bad_request", message: "auth is off", id: r1.id });
  assert.deepEqual(t.of("error"), [{ code: "bad_request", message: "auth is off", op: "refresh" }]);
  assert.equal(t.clock.pending().length, 0, "no retry");
  t.clock.advance(1e6);
  await tick();
  assert.equal(t.last().ops("refresh").length, 1);
  // a new connection starts over (from the exp of the token getToken gives it)
  t.last().drop(1006);
  t.clock.advance(15000);
  await tick();
  t.last().open();
  assert.equal(t.last().url, `ws://gw.test/ws?token=${tokens[2]}`);
  assert.equal(t.clock.pending().length, 1, "refresh scheduled");
});

test("an unsubscribed with a code from the gateway ends the channel: reported, forgotten, not resubscribed", async () => {
  const storage = new MemoryStorage();
  const t = setup({
    storage,
    persistDelay: 0,
    token: jwt({ exp: 100, channels: ["a", "b"] }),
    refreshToken: async () => jwt({ exp: 200, channels: ["a"] }),
    heartbeat: 0,
  });
  const got = [];
  const members = [];
  t.herald.subscribe("a", (d) => got.push(["a", d]));
  t.herald.subscribe("b", (d) => got.push(["b", d]), { onPresence: (list) => members.push(list) });
  t.herald.connect();
  t.last().open();
  subscribedAfterOpen(t, "a", { seq: 3 });
  subscribedAfterOpen(t, "b", { seq: 5 });
  const [query] = t.last().ops("presence");
  t.last().receive({ op: "presence", channel: "b", id: query.id, count: 0, members: [] });
  t.clock.advance(70000);
  await tick();
  const [r] = t.last().ops("refresh");
  const message = "channel not allowed by the new token";
  t.last().receive({ op: "unsubscribed", channel: "b", code: "forbidden", message });
  t.last().receive({ op: "refreshed", exp: 200, id: r.id });
  assert.deepEqual(t.of("unsubscribed"), [{ channel: "b", code: "forbidden", message }]);
  assert.deepEqual(t.of("error"), [{ code: "forbidden", message, channel: "b" }]);
  assert.equal(t.herald.position("b"), undefined);
  assert.equal(t.herald.members("b"), undefined);
  assert.deepEqual(Object.keys(JSON.parse(storage.getItem("herald"))), ["a"], "forgotten in storage");
  t.last().receive({ op: "message", channel: "b", seq: 6, ts: 0, data: "late" });
  t.last().receive({ op: "join", channel: "b", member: { sub: "x" } });
  t.last().receive({ op: "message", channel: "a", seq: 4, ts: 0, data: "still here" });
  assert.deepEqual(got, [["a", "still here"]]);
  assert.equal(members.length, 1, "no presence update after the end");
  assert.equal(t.last().ops("unsubscribe").length, 0, "the gateway already left it");

  t.last().drop(1006);
  t.clock.advance(15000);
  t.last().open();
  const subs = t.last().ops("subscribe");
  assert.deepEqual(subs.map((f) => [f.channel, f.since]), [["a", 4]], "b is not resubscribed");

  // the reply to the client's own unsubscribe (with its id) is no such event
  subscribedAfterOpen(t, "a", { seq: 4, recovered: true });
  t.herald.unsubscribe("a");
  const [unsub] = t.last().ops("unsubscribe");
  t.last().receive({ op: "unsubscribed", channel: "a", id: unsub.id });
  assert.equal(t.of("unsubscribed").length, 1);
});

test("the next connection uses the newest token: a refreshed one, not a refused one", async () => {
  const t1 = jwt({ sub: "u", exp: 100 });
  const t2 = jwt({ sub: "u", exp: 200 });
  const t3 = jwt({ sub: "v", exp: 300 });
  const fresh = [t2, t3];
  const t = setup({ token: t1, refreshToken: async () => fresh.shift(), heartbeat: 0 });
  t.herald.connect();
  assert.equal(t.last().url, `ws://gw.test/ws?token=${t1}`);
  t.last().open();
  t.clock.advance(70000);
  await tick();
  const [r1] = t.last().ops("refresh");
  t.last().receive({ op: "refreshed", exp: 200, id: r1.id });
  t.last().drop(1006);
  assert.equal(t.clock.pending().length, 1, "only the reconnect: the refresh went with the connection");
  t.clock.advance(125); // random 0.5 of backoffBase 250
  assert.equal(t.sockets.length, 2);
  assert.equal(t.last().url, `ws://gw.test/ws?token=${t2}`);
  t.last().open(); // at 70.125 s: scheduled from t2's exp, 30 s before it
  t.clock.advance(99874);
  await tick();
  assert.equal(t.last().ops("refresh").length, 0);
  t.clock.advance(1);
  await tick();
  const [r2] = t.last().ops("refresh");
  assert.equal(r2.token, t3);
  t.last().receive({ op: "error", code: "forbidden", message: "another sub", id: r2.id });
  assert.deepEqual(t.of("error").map((e) => [e.code, e.op]), [["forbidden", "refresh"]]);
  t.last().drop(1006);
  t.clock.advance(15000);
  assert.equal(t.sockets.length, 3);
  assert.equal(t.last().url, `ws://gw.test/ws?token=${t2}`, "the refused token is not used");
});

test("refresh: a connection lost while refreshToken runs sends nothing and retries nothing", async () => {
  let release;
  const t = setup({
    token: jwt({ exp: 100 }),
    refreshToken: () => new Promise((resolve) => (release = resolve)),
    heartbeat: 0,
  });
  t.herald.connect();
  t.last().open();
  t.clock.advance(70000);
  await tick();
  const first = t.last();
  first.drop(1006);
  release(jwt({ exp: 200 }));
  await tick();
  assert.equal(first.ops("refresh").length, 0);
  t.clock.advance(125);
  t.last().open(); // the same token again: its refresh is scheduled anew, only once
  assert.equal(t.clock.pending().length, 1);
  assert.equal(t.of("error").length, 0);
});
