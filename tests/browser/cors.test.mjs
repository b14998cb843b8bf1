// CORS from a real browser: Debian's chromium (headless, playwright-core) opens pages served
// from two other origins (127.0.0.1 on two more ports) and calls a real gateway's /v1 with
// fetch(). The gateway lists one of them in HERALD_CORS_ORIGINS: that page publishes through
// a preflighted POST (JSON body, Idempotency-Key) and reads the channel back; the other page's
// calls fail in the browser, and its POST never reaches the gateway. Run through run.sh.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { Stack, freePort } from "./stack.mjs";


let stack, gw, browser, allowed, other;

// An origin of its own: one blank page.
async function pageServer() {
  const port = await freePort();
  const srv = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>another origin</title><p>app</p>");
  });
  await new Promise((resolve) => srv.listen(port, "127.0.0.1", resolve));
  return { srv, origin: `http://127.0.0.1:${port}` };
}

// What a page on `origin` gets from POST then GET of /v1 (errors as their names).
async function callFrom(origin, channel, key) {
  const page = await browser.newPage();
  try {
    await page.goto(`${origin}/`);
    return await page.evaluate(async ({ base, channel, key }) => {
      const out = {};
      try {
        const r = await fetch(`${base}/v1/channels/${channel}/messages`, {
          method: "POST",
          headers: { "content-type": "application/json", "idempotency-key": key },
          body: JSON.stringify({ from: location.origin }),
        });
        out.post = { status: r.status, body: await r.json() };
      } catch (e) {
        out.post = { error: e.name };
      }
      try {
        const r = await fetch(`${base}/v1/channels/${channel}/messages?since=0`);
        out.get = { status: r.status, body: await r.json() };
      } catch (e) {
        out.get = { error: e.name };
      }
      return out;
    }, { base: gw.base, channel, key });
  } finally {
    await page.close();
  }
}

before(async () => {
  stack = new Stack();
  allowed = await pageServer();
  other = await pageServer();
  const redis = await stack.redis();
  const pg = await stack.postgres();
  gw = await stack.herald({ redis, pg, instance: "cors", migrate: true,
    args: ["--cors-origins", `https://app.example, ${allowed.origin}`] });
  browser = await stack.browser();
});

after(async () => {
  for (const s of [allowed, other]) s?.srv.close();
  const reports = (await stack?.finish(browser, { keepLogsOnly: false })) ?? [];
  assert.deepEqual(reports, [], "sanitizer reports in the gateway's log");
});

test("a page on a listed origin publishes (preflighted) and reads /v1", async () => {
  const r = await callFrom(allowed.origin, "cors:room", "k-allowed");
  assert.equal(r.post.status, 201, JSON.stringify(r));
  assert.equal(r.post.body.seq, 1);
  assert.equal(r.get.status, 200, JSON.stringify(r));
  assert.deepEqual(r.get.body.messages.map((m) => m.data), [{ from: allowed.origin }]);
});

test("a page on another origin can neither read nor publish", async () => {
  const r = await callFrom(other.origin, "cors:room", "k-other");
  assert.deepEqual(r, { post: { error: "TypeError" }, get: { error: "TypeError" } });
  // the refused preflight kept the POST from ever being sent: still one message
  const res = await fetch(`${gw.base}/v1/channels/cors:room/messages?since=0`);
  assert.equal((await res.json()).messages.length, 1);
});
