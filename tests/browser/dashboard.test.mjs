// Browser tests of the web demo: Debian's chromium (headless, driven by playwright-core) against
// real gateways, Redis, PostgreSQL and the demo publisher. Run through run.sh (which installs
// what is missing); HERALD_BIN names the gateway binary.
//
// One browser for the whole file; the tests share one stack and run in order:
//   gateway A (the pages under test) and gateway B (the publisher, a second chat page).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ROOT, Stack, waitFor } from "./stack.mjs";

const ARTIFACTS = path.join(ROOT, "tests", "artifacts");
const SLOW = 60000; // ms: generous waits, the ASan gateway and a loaded machine are slow

let stack, redis, pg, gwA, gwB, browser, pageA, pageB;

const snap = (page) => page.evaluate(() => window.heraldDemo.snapshot());

async function openDashboard(gw, name, peer) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
  page.on("console", (m) => {
    // refused connections while a gateway is down are expected
    if (m.type() === "error" && !m.text().includes("ERR_CONNECTION_REFUSED")) console.log(`[${name}] console: ${m.text()}`);
  });
  await page.goto(`${gw.base}/?name=${encodeURIComponent(name)}${peer ? `&peer=${peer.port}` : ""}`);
  return page;
}

async function restPublish(gw, channel, data) {
  const r = await fetch(`${gw.base}/v1/channels/${channel}/messages`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(data),
  });
  const body = await r.text();
  assert.equal(r.status, 201, `POST ${channel}: ${r.status} ${body}`);
  return JSON.parse(body).seq;
}

async function head(gw, channel) {
  const r = await fetch(`${gw.base}/v1/channels/${channel}/messages?since=0&limit=1`);
  return (await r.json()).seq;
}

// Every seq a page got on each channel is the previous one + 1: nothing lost, nothing twice.
function assertContiguous(s) {
  assert.deepEqual(s.gaps, [], "the page saw a gap or a duplicate");
  for (const [channel, seqs] of Object.entries(s.seqs)) {
    for (let i = 1; i < seqs.length; i++) {
      assert.equal(seqs[i], seqs[i - 1] + 1, `${channel}: seq ${seqs[i]} after ${seqs[i - 1]}`);
    }
  }
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  stack = new Stack();
  redis = await stack.redis();
  pg = await stack.postgres();
  gwA = await stack.herald({ redis, pg, instance: "gw-a", migrate: true });
  gwB = await stack.herald({ redis, pg, instance: "gw-b" });
  stack.publisher({ urls: [gwB.wsUrl], rate: 20 });
  browser = await stack.browser({ viewport: { width: 1440, height: 900 }, timeout: SLOW });
});

after(async () => {
  const reports = (await stack?.finish(browser)) ?? [];
  assert.deepEqual(reports, [], "sanitizer reports in the gateways' logs");
});

test("the page loads from gateway A and shows live bot and task events", async () => {
  pageA = await openDashboard(gwA, "Alice", gwB);
  await waitFor(async () => (await pageA.textContent("#conn-label")) === "Live", { timeout: SLOW, what: "Live" });
  assert.equal(await pageA.textContent("#instance"), "gw-a");
  assert.equal(await pageA.getAttribute("#peer-link", "href"), `http://127.0.0.1:${gwB.port}/?peer=${gwA.port}`);
  // the fleet roster arrives, then every bot shows a lifecycle state
  await pageA.waitForSelector("#bots li.bot[data-state]:not([data-state=unknown])");
  await waitFor(async () => (await pageA.locator("#bots li.bot").count()) === 6, { what: "6 bot cards" });
  await waitFor(async () => (await pageA.locator('#bots li.bot[data-state="unknown"]').count()) === 0,
    { timeout: SLOW, what: "every bot has a state" });
  await pageA.waitForSelector("#tasks li.task .bar[aria-valuenow]");
  // live: events keep arriving, with no gap
  const first = await snap(pageA);
  await waitFor(async () => (await snap(pageA)).events >= first.events + 20, { timeout: SLOW, what: "20 more events" });
  const s = await snap(pageA);
  assert.ok(s.seqs.task_updates?.length > 0, "task updates received");
  assertContiguous(s);
});

test("a chat message typed in one page appears in the other (two gateways)", async () => {
  pageB = await openDashboard(gwB, "Bob", gwA);
  await waitFor(async () => (await snap(pageB)).state === "open", { timeout: SLOW, what: "page B open" });
  await waitFor(async () => (await pageB.textContent("#instance")) === "gw-b", { what: "page B on gw-b" });
  const hello = `Hello from Alice ${Date.now()}`;
  await pageA.fill("#chat-input", hello);
  await pageA.press("#chat-input", "Enter");
  const inB = pageB.locator("#chat-log li.msg", { hasText: hello });
  await inB.waitFor();
  assert.equal(await inB.locator(".msg-meta strong").textContent(), "Alice");
  // the sender sees its own copy once it came back through Herald (no longer "sending…")
  await pageA.locator("#chat-log li.msg.mine[data-seq]", { hasText: hello }).waitFor();
  assert.equal(await pageA.locator("#chat-log li.msg.pending").count(), 0);

  const reply = `Hi Alice, Bob here ${Date.now()}`;
  await pageB.fill("#chat-input", reply);
  await pageB.click("#chat-form button[type=submit]");
  await pageA.locator("#chat-log li.msg:not(.mine)", { hasText: reply }).waitFor();
  // both pages show the same conversation in the same order
  const texts = async (p) => (await snap(p)).chat.map((m) => m.text);
  await waitFor(async () => JSON.stringify(await texts(pageA)) === JSON.stringify(await texts(pageB)),
    { what: "same chat on both pages" });
  assert.deepEqual((await texts(pageA)).slice(-2), [hello, reply]);
});

test("the Stop button sends a command over WebSocket and the publisher stops that bot", async () => {
  // a bot in a meeting (recording lasts long enough to be stopped)
  let id = null;
  for (let attempt = 0; attempt < 3 && !id; attempt++) {
    const card = pageA.locator('#bots li.bot[data-state="recording"]').first();
    await card.waitFor({ timeout: SLOW });
    const candidate = await card.getAttribute("data-bot");
    await card.locator(".button-stop").click().catch(() => {});
    // accepted: the publisher answers with finalizing "stopped by Alice" (the bot may also
    // have moved on by itself in between; then try another one)
    const stopped = await waitFor(async () => {
      const reason = await pageA.locator(`#bots li.bot[data-bot="${candidate}"] .reason`).textContent();
      return reason.includes("stopped by Alice") ? true : null;
    }, { timeout: 15000, what: `bot ${candidate} stopped` }).catch(() => false);
    if (stopped) id = candidate;
  }
  assert.ok(id, "no bot was stopped by the Stop button");
  const state = await pageA.getAttribute(`#bots li.bot[data-bot="${id}"]`, "data-state");
  assert.ok(["finalizing", "completed"].includes(state), `state after stop: ${state}`);
  // the other page (another gateway) sees the same
  await pageB.locator(`#bots li.bot[data-bot="${id}"] .reason`, { hasText: "stopped by Alice" }).waitFor();
});

test("a screenshot of the dashboard is written as a test artifact", async () => {
  await pageA.waitForTimeout(500); // let the progress bars' transition settle for the picture
  const file = path.join(ARTIFACTS, "dashboard.png");
  await pageA.screenshot({ path: file, fullPage: true });
  assert.ok(fs.statSync(file).size > 20000, "screenshot written");
  const mobile = await browser.newPage();
  await mobile.setViewportSize({ width: 390, height: 844 });
  await mobile.goto(`${gwA.base}/?name=Mobile`);
  await mobile.waitForSelector("#bots li.bot[data-state=recording], #bots li.bot[data-state=active]");
  await mobile.screenshot({ path: path.join(ARTIFACTS, "dashboard-mobile.png"), fullPage: true });
  // nothing wider than the phone's screen
  const overflow = await mobile.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `horizontal overflow of ${overflow}px on a phone`);
  await mobile.close();
});

test("gateway A is killed while messages keep coming; the page resumes every message in order", async () => {
  const before = await snap(pageA);
  assert.equal(before.resumes.length, 0);
  const pid = gwA.pid;
  await gwA.stop("SIGKILL");
  await waitFor(async () => (await snap(pageA)).state === "reconnecting", { what: "page A reconnecting" });
  const atDrop = await snap(pageA);
  assert.equal(await pageA.getAttribute("#conn", "data-state"), "reconnecting");

  // while A is down: chat messages through B, and the publisher keeps publishing through B
  const missed = [];
  for (let i = 1; i <= 25; i++) {
    const text = `missed message ${i} of 25`;
    await restPublish(gwB, "chat:lobby", { from: "Ops", sid: "test", cid: `missed-${i}`, text, at: Date.now() });
    missed.push(text);
  }
  const taskHeadAtDrop = atDrop.lastSeq.task_updates;
  await waitFor(async () => (await head(gwB, "task_updates")) >= taskHeadAtDrop + 20,
    { timeout: SLOW, what: "20 task updates published while A is down" });

  // a new gateway on A's port (what a restart behind the same address looks like)
  gwA = await stack.herald({ redis, pg, port: gwA.port, instance: "gw-a-restarted" });
  assert.notEqual(gwA.pid, pid);
  await waitFor(async () => (await snap(pageA)).resumes.length === 1, { timeout: SLOW, what: "the resume to finish" });
  const s = await snap(pageA);
  const r = s.resumes[0];
  assert.equal(r.kind, "reconnect");
  assert.deepEqual(r.failed, []);
  // the count in the notice is what the page really received in the replays
  let received = 0;
  for (const [channel, c] of Object.entries(r.perChannel)) {
    assert.equal(c.before, atDrop.lastSeq[channel], `${channel}: resumed from where it stopped`);
    assert.equal(c.after - c.before, c.replayed, `${channel}: replayed count`);
    received += c.after - c.before;
  }
  assert.equal(received, r.replayed);
  assert.ok(r.replayed >= 25 + 20, `replayed ${r.replayed}: at least the 25 chat messages and 20 task updates`);
  assert.ok(r.perChannel["chat:lobby"].replayed >= 25);
  const notice = await pageA.textContent("#notice-text");
  assert.match(notice, new RegExp(`resumed: ${r.replayed} missed messages replayed`));
  assert.equal(await pageA.isVisible("#notice"), true);

  // every message, counted, in order: no gap and no duplicate on any channel, and the chat
  // shows the 25 missed messages once each, in publish order, right after what it had
  assertContiguous(s);
  const chat = s.chat.map((m) => m.text);
  const firstMissed = chat.indexOf(missed[0]);
  assert.ok(firstMissed >= 0, "missed chat messages shown");
  assert.deepEqual(chat.slice(firstMissed, firstMissed + 25), missed);
  assert.equal(chat.filter((t) => t.startsWith("missed message ")).length, 25);
  // the page renders on a timer after its model changes (40 ms, throttled to 1 s in a
  // background tab): wait for the list, then check its order
  const domMissed = async () => (await pageA.locator("#chat-log li.msg .msg-text").allTextContents())
    .filter((t) => t.startsWith("missed message "));
  await waitFor(async () => (await domMissed()).length >= 25, { what: "the missed messages rendered" });
  assert.deepEqual(await domMissed(), missed);

  // the page shows the instance it reconnected to, stays live and catches up with the head
  await waitFor(async () => (await pageA.textContent("#instance")) === "gw-a-restarted", { what: "new instance shown" });
  assert.equal(await pageA.textContent("#conn-label"), "Live");
  const h = await head(gwB, "task_updates");
  await waitFor(async () => (await snap(pageA)).lastSeq.task_updates >= h, { timeout: SLOW, what: "page caught up" });
  assertContiguous(await snap(pageA));
  await pageA.screenshot({ path: path.join(ARTIFACTS, "dashboard-resumed.png"), fullPage: true });
});

test("a reload of the page resumes from the positions kept in sessionStorage", async () => {
  const chatBefore = (await snap(pageB)).chat.map((m) => m.text);
  await pageB.reload();
  await waitFor(async () => (await snap(pageB)).resumes.length === 1, { timeout: SLOW, what: "the reload resume" });
  const s = await snap(pageB);
  const r = s.resumes[0];
  assert.equal(r.kind, "reload");
  assert.ok(r.channels >= 9, `resumed ${r.channels} channels (fleet, 6 bots, tasks, chat)`);
  let received = 0;
  for (const c of Object.values(r.perChannel)) received += c.after - c.before;
  assert.equal(received, r.replayed);
  assert.match(await pageB.textContent("#notice-text"), /^Page restored · resumed: \d+ missed messages? replayed/);
  // the conversation is still there (restored, not reloaded from the server)
  assert.deepEqual(s.chat.map((m) => m.text).slice(0, chatBefore.length), chatBefore);
  await waitFor(async () => (await snap(pageB)).events > s.events, { what: "live again after the reload" });
  assertContiguous(await snap(pageB));
});
