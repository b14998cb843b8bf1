// The web demo's SSE panel in a real browser: Debian's chromium (headless, playwright-core) with
// its own EventSource against real gateways, Redis and PostgreSQL. Run through run.sh;
// HERALD_BIN names the gateway binary.
//
// Gateway A serves the pages, whose panel follows a channel of its own (?sse=) over
// GET /v1/channels/{C}/stream; gateway B (same Redis and PostgreSQL) is where the test publishes
// durably. Gateway A is killed (SIGKILL, by PID) while messages keep being published through B,
// then a new gateway starts on A's port: the page's EventSource must reconnect by itself, with
// Last-Event-ID, and the panel must show every seq exactly once, in order.
//
// Two pages go through the same restart: one whose channel had a message before the page
// opened, and one opened on a channel with no message yet (whose stream learns the channel's
// epoch with its first message: the ids it gives must name it, or the reconnect would be
// answered recovered:false, history_reset and lose what was published meanwhile).
//
// TEST_SSE_LOSE_ID=1 runs a broken page on purpose (what a server ignoring Last-Event-ID would
// look like: after the drop, a new EventSource from since=0): this test must then fail.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ROOT, Stack, waitFor } from "./stack.mjs";

const ARTIFACTS = path.join(ROOT, "tests", "artifacts");
const SLOW = 60000; // ms: generous waits for what does not measure anything (ASan, a loaded machine)
const CHANNEL = `sse-demo-${process.pid}`;
const BEFORE = 5; // published while the page is connected
const WHILE_DOWN = 12; // published while the page's gateway is down
const AFTER = 6; // published after the restart
const loseId = process.env.TEST_SSE_LOSE_ID === "1";

let stack, redis, pg, gwA, gwB, browser, epoch;
const pages = {}; // "seeded" | "empty" -> {page, channel, requests: [{url, at}], answered: [{url, status, lastEventId}]}

const CHANNELS = { seeded: `sse-demo-${process.pid}`, empty: `sse-empty-${process.pid}` };
const snap = (p) => p.page.evaluate(() => window.heraldDemo.snapshot().sse);
const pad = (seq) => String(seq).padStart(20, "0");
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function publish(gw, channel, n) {
  const r = await fetch(`${gw.base}/v1/channels/${channel}/messages`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ n, text: `update ${n}` }), signal: AbortSignal.timeout(20000),
  });
  const body = await r.text();
  assert.equal(r.status, 201, `POST ${channel}: ${r.status} ${body}`);
  const res = JSON.parse(body);
  assert.equal(res.seq, n, "the test's channels are its own: seq n is message n");
  return res;
}

// Message n on both channels.
async function publishBoth(gw, n) {
  const res = await publish(gw, CHANNELS.seeded, n);
  await publish(gw, CHANNELS.empty, n);
  return res;
}

// The seqs a panel shows, top to bottom (the DOM, not the model).
const shown = (p) => p.page.$$eval("#sse-log li.sse-item[data-seq]", (lis) => lis.map((li) => Number(li.dataset.seq)));

async function waitShown(p, count, what) {
  let last;
  await waitFor(async () => (last = await shown(p)).length >= count, { timeout: SLOW, what }).catch((err) => {
    throw new Error(`${err.message}; the panel shows ${JSON.stringify(last)}`);
  });
  await p.page.waitForTimeout(300); // anything extra (a duplicate) would have come with the replay
  return shown(p);
}

async function metric(gw, name) {
  const text = await fetch(`${gw.base}/metrics`, { signal: AbortSignal.timeout(10000) }).then((r) => r.text());
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ")[1]) : null;
}

async function openPanel(name, channel) {
  const page = await browser.newPage();
  const p = { page, channel, requests: [], answered: [] };
  page.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
  page.on("console", (m) => {
    // refused connections while the gateway is down are expected
    if (m.type() === "error" && !m.text().includes("ERR_CONNECTION_REFUSED")) console.log(`[${name}] console: ${m.text()}`);
  });
  // what went on the wire: Chromium shows the Last-Event-ID it sent in a request's raw headers
  // (allHeaders), known once the server answered; a refused attempt has none to show
  page.on("request", (r) => {
    if (r.url().includes(`/v1/channels/${channel}/stream`)) p.requests.push({ url: r.url(), at: Date.now() });
  });
  page.on("response", async (res) => {
    if (!res.url().includes(`/v1/channels/${channel}/stream`)) return;
    const entry = { url: res.url(), status: res.status(), lastEventId: undefined };
    p.answered.push(entry);
    entry.lastEventId = (await res.request().allHeaders().catch(() => ({})))["last-event-id"] ?? null;
  });
  if (loseId) {
    // the broken page: the URL says since=0, and a dropped connection is not resumed by the
    // browser (with Last-Event-ID) but by a new EventSource, as if the server ignored the id
    await page.addInitScript(() => {
      const Native = window.EventSource;
      class Broken extends Native {
        constructor(url, init) {
          super(String(url).replace(/\?.*$/, "?since=0"), init);
          this.addEventListener("error", () => {
            if (this.readyState !== Native.CONNECTING) return;
            this.close(); // the page's own onerror sees CLOSED and makes a new one
            Object.defineProperty(this, "readyState", { value: Native.CLOSED });
          });
        }
      }
      for (const k of ["CONNECTING", "OPEN", "CLOSED"]) Broken[k] = Native[k];
      window.EventSource = Broken;
    });
  }
  await page.goto(`${gwA.base}/?name=${name}&sse=${channel}`);
  await waitFor(async () => (await snap(p)).state === "open", { timeout: SLOW, what: `${name}: the SSE panel open` });
  pages[name] = p;
  return p;
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  stack = new Stack();
  redis = await stack.redis();
  pg = await stack.postgres();
  gwA = await stack.herald({ redis, pg, instance: "gw-a", migrate: true });
  gwB = await stack.herald({ redis, pg, instance: "gw-b" });
  browser = await stack.browser({ viewport: { width: 1440, height: 900 }, timeout: SLOW });
});

after(async () => {
  const reports = (await stack?.finish(browser)) ?? [];
  assert.deepEqual(reports, [], "sanitizer reports in the gateways' logs");
});

test("the SSE panel follows a channel with EventSource and shows each message's seq and data", async () => {
  // message 1 of the seeded channel before its page opens: replayed by the panel (last=)
  epoch = (await publish(gwB, CHANNELS.seeded, 1)).epoch;
  const p = await openPanel("seeded", CHANNELS.seeded);
  await openPanel("empty", CHANNELS.empty);
  assert.equal(await p.page.getAttribute("#sse-conn", "data-state"), "open");
  assert.equal(await p.page.textContent("#sse-label"), "Open");
  assert.equal(await p.page.textContent("#sse-channel"), CHANNELS.seeded);
  assert.equal(p.requests.length, 1);
  await waitFor(() => p.answered[0]?.lastEventId !== undefined, { what: "the first request's headers" });
  assert.equal(p.answered[0].status, 200);
  assert.equal(p.answered[0].lastEventId, null, "the first request has no Last-Event-ID");
  assert.deepEqual(await waitShown(p, 1, "the replayed message"), [1]);

  await publish(gwB, CHANNELS.empty, 1);
  for (let n = 2; n <= BEFORE; n++) await publishBoth(gwB, n);
  assert.deepEqual(await waitShown(p, BEFORE, `${BEFORE} messages in the panel`), range(1, BEFORE));
  assert.deepEqual(await waitShown(pages.empty, BEFORE, `${BEFORE} messages in the other panel`), range(1, BEFORE));
  // each line: the seq and the message's data
  const first = p.page.locator('#sse-log li.sse-item[data-seq="1"]');
  assert.equal(await first.locator(".sse-seq").textContent(), "#1");
  assert.deepEqual(JSON.parse(await first.locator(".sse-data").textContent()), { n: 1, text: "update 1" });
  const s = await snap(p);
  assert.equal(s.lastId, `${epoch}_${pad(BEFORE)}`, "the last event id is <epoch>_<seq, 20 digits>");
  assert.deepEqual(await p.page.evaluate(() => window.__sseSeqs), range(1, BEFORE));
});

const total = BEFORE + WHILE_DOWN + AFTER;

test("the page's gateway is killed while messages keep coming; EventSource resumes with Last-Event-ID, nothing lost or twice", async () => {
  const p = pages.seeded;
  const port = gwA.port;
  const pid = gwA.pid;
  await gwA.stop("SIGKILL");
  await waitFor(async () => (await snap(p)).state !== "open", { timeout: SLOW, what: "the panel sees the drop" });
  if (!loseId) {
    assert.equal(await p.page.getAttribute("#sse-conn", "data-state"), "reconnecting");
    assert.equal(await p.page.textContent("#sse-label"), "Reconnecting…");
  }

  // while A is down: durable messages through B; the browser retries (refused) meanwhile
  const down = Date.now();
  for (let n = BEFORE + 1; n <= BEFORE + WHILE_DOWN; n++) {
    await publishBoth(gwB, n);
    await p.page.waitForTimeout(100);
  }
  await waitFor(() => p.requests.length >= 2 || Date.now() - down > 5000, { what: "a retry while down" });

  // a new gateway on A's port (a restart behind the same address), with fresh counters
  gwA = await stack.herald({ redis, pg, port, instance: "gw-a-restarted" });
  assert.notEqual(gwA.pid, pid);
  await waitFor(async () => (await snap(p)).state === "open", { timeout: SLOW, what: "the panel open again" });
  for (let n = BEFORE + WHILE_DOWN + 1; n <= total; n++) await publishBoth(gwB, n);

  const dom = await waitShown(p, total, `all ${total} messages in the panel`);
  const s = await snap(p);
  // every seq exactly once, in order, no gap: in the DOM and in what the page received
  assert.deepEqual(dom, range(1, total), "the panel's seqs");
  assert.deepEqual(s.seqs, range(1, total), "the seqs the page received");
  assert.deepEqual(s.gaps, []);
  assert.deepEqual(s.notes, [], "no recovered:false or reset");
  const texts = await p.page.locator("#sse-log li.sse-item[data-seq] .sse-data").allTextContents();
  assert.deepEqual(texts.map((t) => JSON.parse(t).n), range(1, total), "each line shows its own message");

  // the browser reconnected by itself: still the page's first EventSource, opened again
  assert.equal(s.sources, 1, "the page made no new EventSource");
  assert.ok(s.opens >= 2, `opens: ${s.opens}`);
  assert.equal(s.state, "open");
  assert.equal(s.lastId, `${epoch}_${pad(total)}`);
  assert.equal(await p.page.textContent("#sse-label"), "Open");
  assert.match(await p.page.textContent("#sse-detail"), /resumed after seq \d+/);

  // ... with Last-Event-ID (the id of the last message before the drop) on the same URL: every
  // attempt that reached a gateway after the first request
  assert.ok(p.requests.length >= 2, "the browser retried");
  await waitFor(() => p.answered.length >= 2 && p.answered.every((r) => r.lastEventId !== undefined),
    { what: "the reconnect's headers" });
  for (const r of p.requests) assert.equal(r.url, p.requests[0].url, "the same URL: the position is in Last-Event-ID only");
  for (const r of p.answered.slice(1)) {
    assert.equal(r.lastEventId, `${epoch}_${pad(BEFORE)}`, `Last-Event-ID of ${r.url}`);
    assert.equal(r.status, 200);
  }
  // the restarted gateway (fresh counters) admitted the pages' reconnects and holds them open
  assert.ok((await metric(gwA, "herald_http_streams_total")) >= 2, "the restarted gateway admitted the streams");
  assert.equal(await metric(gwA, 'herald_http_streams{kind="sse"}'), 2, "two SSE streams open on the restarted gateway");

  await p.page.screenshot({ path: path.join(ARTIFACTS, "dashboard-sse.png"), fullPage: true });
});

test("a panel opened before its channel's first message resumes as well", async () => {
  const p = pages.empty;
  assert.ok(p, "the page was opened");
  // the last message arrives either way (it is live): then see what came before it
  await waitFor(async () => (await shown(p)).at(-1) === total, { timeout: SLOW, what: `seq ${total} in the panel` });
  await p.page.waitForTimeout(300);
  const dom = await shown(p);
  const s = await snap(p);
  assert.deepEqual(s.notes, [], "no recovered:false or reset");
  assert.deepEqual(dom, range(1, total), "the panel's seqs");
  assert.deepEqual(s.seqs, range(1, total), "the seqs the page received");
});
