// One reader of a Herald channel through the pinned npm client @durable-streams/client
// (its stream() API), driven by tests/interop/test_durable_streams.py.
//
//   node ds_client.mjs '<spec JSON>'
//
// spec: {url, mode: "catchup" | "long-poll" | "sse", offset?, expect?, graceMs?, timeoutMs}
// - catchup: stream({live: false}) then res.json(): the items and res.offset (with
//   pagesUntilUpToDate, again from res.offset until res.upToDate);
// - long-poll / sse: stream({live: mode}) then res.subscribeJson(): stops `graceMs` after it has
//   `expect` items (so that a duplicate arriving late is still seen), or at `timeoutMs`.
//
// Prints JSON lines on stdout, flushed as they happen, so that the driver can publish while the
// reader runs:
//   {"t":"req","n","url","ms"}                 a request the client sends (through options.fetch)
//   {"t":"res","n","status","headers","ms"}    its response head
//   {"t":"batch","items","offset","cursor","upToDate","ms"}   what subscribeJson delivers
//   {"t":"result","items","offset","cursor","upToDate","error","timedOut","ms"}   last line
// The client retries 5xx and network errors forever: the AbortController at timeoutMs is what
// bounds a run against a broken server (exit status 0 all the same; the driver judges).
import { stream } from "@durable-streams/client";

const spec = JSON.parse(process.argv[2]);
const t0 = Date.now();
const ms = () => Date.now() - t0;
const out = (obj) => process.stdout.write(JSON.stringify({ ...obj, ms: ms() }) + "\n");

const WATCHED = [
  "content-type",
  "stream-next-offset",
  "stream-cursor",
  "stream-up-to-date",
  "stream-closed",
  "cache-control",
  "etag",
];

let n = 0;
async function loggingFetch(input, init) {
  const i = ++n;
  out({ t: "req", n: i, url: String(input) });
  let res;
  try {
    res = await fetch(input, init);
  } catch (err) {
    out({ t: "res", n: i, status: null, error: String(err) });
    throw err;
  }
  const headers = {};
  for (const h of WATCHED) if (res.headers.has(h)) headers[h] = res.headers.get(h);
  out({ t: "res", n: i, status: res.status, headers });
  return res;
}

function describe(err) {
  if (!err) return null;
  return {
    name: err.name ?? err.constructor?.name ?? null,
    ctor: err.constructor?.name ?? null,
    message: String(err.message ?? err),
    status: err.status ?? null,
    code: err.code ?? null,
  };
}

const controller = new AbortController();
let finished = false;
function finish(res, items, error, timedOut) {
  if (finished) return;
  finished = true;
  out({
    t: "result",
    items,
    offset: res ? res.offset : null,
    cursor: res ? res.cursor ?? null : null,
    upToDate: res ? res.upToDate : null,
    error: describe(error),
    timedOut,
  });
  controller.abort();
  // keep-alive sockets and the client's timers would keep the process up
  setTimeout(() => process.exit(0), 50);
}

const items = [];
let res = null;
const timer = setTimeout(() => finish(res, items, null, true), spec.timeoutMs);

try {
  const live = spec.mode === "catchup" ? false : spec.mode;
  const opts = { url: spec.url, live, signal: controller.signal, fetch: loggingFetch };
  if (spec.offset !== undefined) opts.offset = spec.offset;
  res = await stream(opts);
  if (spec.mode === "catchup") {
    const got = await res.json();
    // pagesUntilUpToDate: as an application would, more live:false reads from res.offset
    // until one is up to date (in 0.2.7, live:false reads one response only, up to date or
    // not), each one's result a "page" line
    while (spec.pagesUntilUpToDate && !res.upToDate) {
      out({ t: "page", items: got.length, offset: res.offset, upToDate: res.upToDate });
      res = await stream({ ...opts, offset: res.offset });
      got.push(...(await res.json()));
    }
    clearTimeout(timer);
    finish(res, got, null, false);
  } else {
    let graceTimer = null;
    res.subscribeJson(async (batch) => {
      out({
        t: "batch",
        items: batch.items,
        offset: batch.offset,
        cursor: batch.cursor ?? null,
        upToDate: batch.upToDate,
      });
      items.push(...batch.items);
      if (items.length >= spec.expect && !graceTimer) {
        graceTimer = setTimeout(() => {
          clearTimeout(timer);
          finish(res, items, null, false);
        }, spec.graceMs ?? 0);
      }
    });
    res.closed.then(
      () => {
        // a live subscription does not end on its own: only our abort ends it
        if (!finished) finish(res, items, new Error("subscription ended by itself"), false);
      },
      (err) => {
        clearTimeout(timer);
        finish(res, items, err, false);
      },
    );
  }
} catch (err) {
  clearTimeout(timer);
  finish(res, items, err, false);
}
