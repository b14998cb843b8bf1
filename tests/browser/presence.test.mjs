// Presence in the web demo, in a real browser: Debian's chromium (headless, playwright-core)
// against two real gateways sharing Redis and PostgreSQL, with presence on `chat:*`
// (stack.mjs: HERALD_PRESENCE, short linger and TTL) and the demo publisher for the bot fleet.
// Run through run.sh; HERALD_BIN names the gateway binary.
//
// Tab A (gateway 1) and tab B (gateway 2) join the same chat room under different names: each
// lists both, and when B closes, A's list drops B. The bot fleet's cards are loaded through
// herald.js getState (REST position + latest message), then streamed strictly.
//
// TEST_HERALD_PRESENCE overrides the gateways' HERALD_PRESENCE (e.g. empty: presence off, and
// this test must fail).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ROOT, Stack, waitFor } from "./stack.mjs";

const ARTIFACTS = path.join(ROOT, "tests", "artifacts");
const SLOW = 60000; // ms: generous waits for what does not measure anything (ASan, a loaded machine)
const LEAVE_WITHIN = 10000; // ms: linger 500 ms + the render timer (1 s in a background tab) + slack
const BOTS = 4;
const ROOM = `presence-${process.pid}`;
const CHAT = `chat:${ROOM}`;
const presenceOverride = process.env.TEST_HERALD_PRESENCE;

let stack, gw1, gw2, browser, pageA, pageB;
const tabs = new Map(); // page -> {frames: [sent WebSocket frames], requests: [URLs]}

const snap = (page) => page.evaluate(() => window.heraldDemo.snapshot());

// The names in a page's "people here" list, in order, and its count.
async function people(page) {
  return {
    names: await page.locator("#people li.person:not(.anonymous) .person-name").allTextContents(),
    count: (await page.textContent("#people-count")).trim(),
  };
}

async function waitPeople(page, names, what) {
  const want = JSON.stringify({ names, count: String(names.length) });
  let last;
  await waitFor(async () => JSON.stringify((last = await people(page))) === want,
    { timeout: SLOW, what: `${what}: ${want}` }).catch((err) => {
    throw new Error(`${err.message}; the page shows ${JSON.stringify(last)}`);
  });
}

async function openTab(gw, name) {
  const page = await browser.newPage();
  const seen = { frames: [], requests: [] };
  tabs.set(page, seen);
  page.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().includes("ERR_CONNECTION_REFUSED")) console.log(`[${name}] console: ${m.text()}`);
  });
  page.on("websocket", (ws) => ws.on("framesent", ({ payload }) => {
    try { seen.frames.push(JSON.parse(String(payload))); } catch { /* not JSON */ }
  }));
  page.on("request", (r) => seen.requests.push(r.url()));
  await page.goto(`${gw.base}/?name=${encodeURIComponent(name)}&room=${encodeURIComponent(ROOM)}`);
  await waitFor(async () => (await snap(page)).state === "open", { timeout: SLOW, what: `${name} connected` });
  return page;
}

async function restPresence(gw) {
  const r = await fetch(`${gw.base}/v1/channels/${CHAT}/presence`);
  const body = await r.text();
  assert.equal(r.status, 200, `GET presence: ${r.status} ${body}`);
  return JSON.parse(body);
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  stack = new Stack();
  const redis = await stack.redis();
  const pg = await stack.postgres();
  const env = presenceOverride === undefined ? {} : { HERALD_PRESENCE: presenceOverride };
  gw1 = await stack.herald({ redis, pg, instance: "gw-1", migrate: true, env });
  gw2 = await stack.herald({ redis, pg, instance: "gw-2", env });
  stack.publisher({ urls: [gw2.wsUrl], rate: 10, bots: BOTS });
  browser = await stack.browser({ viewport: { width: 1440, height: 900 }, timeout: SLOW });
});

after(async () => {
  const reports = (await stack?.finish(browser)) ?? [];
  assert.deepEqual(reports, [], "sanitizer reports in the gateways' logs");
});

test("the bot fleet shows each bot's state, loaded with getState (REST) and then streamed strictly", async () => {
  pageA = await openTab(gw1, "Ann");
  await waitFor(async () => (await pageA.locator("#bots li.bot").count()) === BOTS, { timeout: SLOW, what: `${BOTS} bot cards` });
  await waitFor(async () => (await pageA.locator('#bots li.bot[data-state="unknown"]').count()) === 0,
    { timeout: SLOW, what: "every bot shows a state" });
  const s = await snap(pageA);
  const { frames, requests } = tabs.get(pageA);
  const ids = await pageA.locator("#bots li.bot").evaluateAll((lis) => lis.map((li) => li.dataset.bot));
  for (const id of ids) {
    const channel = `bot:status:${id}`;
    // the state came from getState, through the REST position, at a position with a message
    const loads = s.stateLoads.filter((l) => l.channel === channel);
    assert.equal(loads.length, 1, `${channel}: one state load (${JSON.stringify(s.stateLoads)})`);
    assert.equal(loads[0].from, "rest");
    assert.ok(loads[0].seq > 0, `${channel}: loaded at seq ${loads[0].seq}`);
    assert.ok(requests.some((u) => new URL(u).pathname === `/v1/channels/${channel}`), `${channel}: position read`);
    assert.ok(requests.some((u) => u.includes(`/v1/channels/${channel}/messages?since=${loads[0].seq - 1}&limit=1`)),
      `${channel}: the message at the position read`);
    // then subscribed strictly from exactly that position
    const subs = frames.filter((f) => f.op === "subscribe" && f.channel === channel);
    assert.equal(subs.length, 1, `${channel}: one subscribe`);
    assert.equal(subs[0].since, loads[0].seq);
    assert.equal(subs[0].strict, true);
    assert.ok(typeof subs[0].epoch === "string" && subs[0].epoch.length > 0, `${channel}: epoch sent`);
    assert.ok(s.lastSeq[channel] >= loads[0].seq);
    assert.ok(["joining", "active", "recording", "finalizing", "completed", "failed"].includes(s.bots[id]),
      `bot ${id} state ${s.bots[id]}`);
  }
  assert.deepEqual(s.gaps, [], "no gap after the loaded states");
});

test("two tabs on two gateways in one room: each lists both, as the second one arrives", async () => {
  // alone first: A lists itself (the query after its subscribe)
  await waitPeople(pageA, ["Ann"], "tab A alone");
  const sub = tabs.get(pageA).frames.find((f) => f.op === "subscribe" && f.channel === CHAT);
  assert.equal(sub.sub, "Ann", "the tab's name is its presence sub");
  assert.deepEqual(sub.info, { name: "Ann" });
  // B arrives on the other gateway: its list has both at once, A's gets B through a join
  const queriesA = tabs.get(pageA).frames.filter((f) => f.op === "presence").length;
  pageB = await openTab(gw2, "Ben");
  assert.equal(await pageB.textContent("#instance"), "gw-2");
  assert.equal(await pageA.textContent("#instance"), "gw-1");
  await waitPeople(pageB, ["Ben", "Ann"], "tab B (this tab first)");
  await waitPeople(pageA, ["Ann", "Ben"], "tab A after B arrived");
  assert.equal(tabs.get(pageA).frames.filter((f) => f.op === "presence").length, queriesA,
    "A learnt of B from the join event, without asking again");
  assert.equal(await pageA.locator("#people li.person.me .person-name").textContent(), "Ann");
  assert.equal(await pageB.locator("#people li.person.me .person-name").textContent(), "Ben");
  // the pages show what the gateways hold, from either one
  for (const gw of [gw1, gw2]) {
    const p = await restPresence(gw);
    assert.equal(p.count, 2);
    assert.deepEqual(p.members, [{ sub: "Ann", info: { name: "Ann" } }, { sub: "Ben", info: { name: "Ben" } }]);
  }
  const s = await snap(pageA);
  assert.deepEqual(s.presenceEvents.filter((e) => e.sub === "Ben").map((e) => e.op), ["join"], "A got B's join");
  assert.equal(s.people.status, "live");
  assert.deepEqual(s.people.members.map((m) => m.name), ["Ann", "Ben"]);
  await pageA.bringToFront();
  await pageA.waitForTimeout(400); // the chips' slide-in
  const file = path.join(ARTIFACTS, "presence.png");
  await pageA.screenshot({ path: file, fullPage: true });
  assert.ok(fs.statSync(file).size > 20000, "screenshot written");
});

test("when tab B closes, tab A's list drops B within a few seconds", async () => {
  assert.ok(pageB, "tab B is open (the test before)");
  const start = Date.now();
  await pageB.close();
  await waitFor(async () => JSON.stringify(await people(pageA)) === JSON.stringify({ names: ["Ann"], count: "1" }),
    { timeout: LEAVE_WITHIN, interval: 50, what: "B gone from A's list" });
  const took = Date.now() - start;
  console.log(`B left A's list ${took} ms after its tab closed`);
  assert.deepEqual((await restPresence(gw2)).members.map((m) => m.sub), ["Ann"]);
  // A still sees its own room live, and the bots as before
  assert.equal(await pageA.textContent("#conn-label"), "Live");
  const s = await snap(pageA);
  assert.equal(s.people.status, "live");
  assert.deepEqual(s.presenceEvents.filter((e) => e.sub === "Ben").map((e) => e.op), ["join", "leave"], "A got B's leave, once");
  await pageA.screenshot({ path: path.join(ARTIFACTS, "presence-after-leave.png"), fullPage: true });
});
