// Herald's demo dashboard: a bot fleet, task progress and a chat room, all live over one
// WebSocket through herald.js. Served by the gateway itself (HERALD_STATIC_DIR), so it talks to
// ws(s)://<this host>/ws and to the same host's /v1 and /healthz.
//
// How the page gets its state:
//  - first load: for the fleet, tasks and chat, GET /v1/channels/{C}/messages tells the head
//    seq H; the page subscribes with since = H - k, so the last k messages are replayed and live
//    ones follow with no gap;
//  - a bot's status is state (its latest message): loaded with herald.js getState through
//    REST (GET /v1/channels/{C} for the position, then the message at that seq), then streamed
//    strictly from that position; whenever Herald cannot replay what the state misses,
//    herald.js loads it again;
//  - reconnect: herald.js re-subscribes every channel from the last seq it delivered; the page
//    sums the `replayed` counts into "resumed: N missed messages replayed";
//  - reload: the page saves its state and herald.js its positions in sessionStorage on pagehide,
//    so a reload (same tab) resumes the same way;
//  - a failed resume (history expired or reset) reloads that channel's recent messages.
//
// Who is in the chat room: the chat channel is a presence channel (the gateways run with
// HERALD_PRESENCE=chat:*). The demo has no login: each tab sends its name as the presence `sub`
// (and as info.name), so tabs with the same name (?name=Alice) are one person. herald.js keeps
// the member list (queried after each subscribe, then join/leave events, across both gateways).
//
// One more panel follows a channel (task_updates, or ?sse=<channel>) without herald.js: over HTTP
// with the browser's own EventSource (see "one channel over HTTP" below).
//
// window.heraldDemo exposes the client and a snapshot() of counters for tests and curious people;
// window.__sseSeqs the seqs the SSE panel received, in order.

import { Herald } from "./herald.js";

const params = new URLSearchParams(location.search);
const CHANNEL_RE = /^[A-Za-z0-9_.:@=-]{1,60}$/;
const ROOM = CHANNEL_RE.test(params.get("room") || "") ? params.get("room") : "lobby";
const CHAT = `chat:${ROOM}`;
const FLEET = "bot:fleet";
const TASKS = "task_updates";
const KEEP = { fleet: 1, bot: 1, tasks: 60, chat: 50 }; // messages loaded on first sight
const LIVE = new Set(["joining", "active", "recording"]);
const STEPS = ["joining", "active", "recording", "finalizing", "completed"];
const STATE_LABEL = {
  joining: "Joining", active: "In meeting", recording: "Recording",
  finalizing: "Finalizing", completed: "Completed", failed: "Failed",
};
const FINISHED_SHOWN = 5; // finished tasks kept on screen
const CHAT_SHOWN = 200;
const KEY_STATE = "herald-demo:state", KEY_ME = "herald-demo:me";

const $ = (id) => document.getElementById(id);

// ---- who am I (per tab) ----
const ADJ = ["Swift", "Quiet", "Bright", "Lucky", "Clever", "Brave", "Calm", "Merry"];
const ANIMAL = ["Otter", "Falcon", "Lynx", "Heron", "Badger", "Fox", "Panda", "Wren"];
const me = (() => {
  let saved = null;
  try { saved = JSON.parse(sessionStorage.getItem(KEY_ME)); } catch { /* none */ }
  const pick = (a) => a[Math.floor(Math.random() * a.length)];
  const m = saved?.sid ? saved : {
    sid: Math.random().toString(36).slice(2, 10),
    name: `${pick(ADJ)} ${pick(ANIMAL)} ${10 + Math.floor(Math.random() * 90)}`, // also the presence sub
  };
  const asked = (params.get("name") || "").trim().slice(0, 40);
  if (asked) m.name = asked;
  try { sessionStorage.setItem(KEY_ME, JSON.stringify(m)); } catch { /* page only */ }
  return m;
})();

// ---- model ----
const model = {
  roster: [], // [{id, name}] from bot:fleet
  bots: new Map(), // id -> {status, seq, stopping, error}
  tasks: new Map(), // task id -> {u: update, seq, finishedAt}
  chat: [], // [{seq, data}] ordered by seq
  pending: new Map(), // cid -> {text, at, failed}
  // who is in the chat room: status loading | live | stale (reconnecting) | off (presence not
  // enabled on the gateway) | error (cannot load, retrying)
  people: { status: "loading", loaded: false, members: [], count: 0, anonymous: 0, full: false, note: "" },
};

// Counters the tests read (through snapshot()) and the status bar shows.
const stats = {
  state: "connecting",
  instance: null,
  events: 0,
  seqs: {}, // channel -> seqs delivered live or replayed, in arrival order (bounded)
  gaps: [], // {channel, after, got}: a seq that was not last + 1
  resumes: [], // finished resume rounds: {kind, replayed, channels, failed, instance, at}
  notices: [], // texts shown in the notice bar
  reloads: [], // {channel, code}: channels whose resume failed and were reloaded
  stateLoads: [], // {channel, seq, from: "rest" | "saved"}: bot states loaded through getState
  presenceEvents: [], // {op: "join" | "leave", sub, at}: the chat room's events (the last 200)
};
const lastSeq = new Map(); // channel -> last seq applied from the stream
const eventTimes = []; // arrival times (ms) of the last 10 s, for events/s

// ---- the connection ----
const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
const herald = new Herald(wsUrl, { storage: sessionStorage, storageKey: "herald-demo:pos", persistDelay: 500 });

let snapshot = null; // the state saved by this tab before a reload
try {
  snapshot = JSON.parse(sessionStorage.getItem(KEY_STATE));
  sessionStorage.removeItem(KEY_STATE); // used once: later positions may run ahead of it
} catch { snapshot = null; }
const restoring = snapshot?.v === 1;

// ---- resume accounting ----
// A round: the channels resumed after one (re)connect or reload, and what they replayed.
let round = null;
let everOpen = false;

function startRound(kind, channels) {
  const carried = round ? round.replayed : 0; // an unfinished round (dropped again) carries over
  round = newRound(kind, channels);
  round.replayed = carried;
  if (!round.pending.size) round = null;
}

// `before`/`after`: the channel's last seq when its resume was asked and when it was answered,
// so after - before is what the page really received in the replay.
function newRound(kind, channels) {
  const r = { kind, pending: new Set(), replayed: 0, channels: 0, failed: [], perChannel: {} };
  for (const c of channels) addToRound(r, c);
  return r;
}

function addToRound(r, channel) {
  r.pending.add(channel);
  r.channels++;
  r.perChannel[channel] = { before: lastSeq.get(channel) ?? null, after: null, replayed: null };
}

function settleRound(channel, replayed, failedCode) {
  if (!round || !round.pending.delete(channel)) return;
  round.replayed += replayed;
  Object.assign(round.perChannel[channel], { after: lastSeq.get(channel) ?? null, replayed, failed: failedCode });
  if (failedCode) round.failed.push({ channel, code: failedCode });
  if (round.pending.size) return;
  const r = round;
  round = null;
  const n = r.replayed;
  const what = `resumed: ${n} missed message${n === 1 ? "" : "s"} replayed`;
  let text = (r.kind === "reload" ? "Page restored · " : "Connection restored · ") + what;
  if (r.failed.length) {
    const f = r.failed.length;
    text += ` · ${f} channel${f === 1 ? "" : "s"} reloaded (${[...new Set(r.failed.map((x) => x.code))].join(", ")})`;
  }
  stats.resumes.push({ kind: r.kind, replayed: n, channels: r.channels, failed: r.failed, perChannel: r.perChannel, text, at: Date.now() });
  $("stat-resumes").textContent = stats.resumes.length;
  $("stat-replayed").textContent = stats.resumes.reduce((a, x) => a + x.replayed, 0);
  notify(text, r.failed.length ? "warn" : "ok");
}

herald.on("recovered", ({ channel, replayed }) => settleRound(channel, replayed, null));
herald.on("recovery_failed", ({ channel, code }) => {
  stats.reloads.push({ channel, code });
  settleRound(channel, 0, code);
  if (!isBot(channel)) reloadChannel(channel); // a bot's state is loaded again by herald.js (getState)
});
herald.on("error", (e) => {
  console.warn("herald:", e);
  if (e.code === "presence_full" && e.channel === CHAT) {
    setPeople({ full: true });
    notify(`#${ROOM} is full: you are in the room but not listed`, "warn");
  } else if (e.op === "presence" && e.channel === CHAT) {
    if (e.code === "not_found") setPeople({ status: "off", note: "presence is not enabled on this gateway" });
    else if (e.code === "bad_request") setPeople({ status: "off", note: "this gateway does not offer presence" });
    else setPeople({ status: "error", note: `cannot load who is here (${e.code}), retrying` });
  } else if (e.op === "subscribe" && e.code?.startsWith("history_")) {
    // a strict resume of a bot's state that Herald cannot serve: herald.js loads the state again
    stats.reloads.push({ channel: e.channel, code: e.code });
    settleRound(e.channel, 0, e.code);
  } else if (e.op === "subscribe") {
    notify(`Cannot follow ${e.channel}: ${e.code}`, "warn");
  }
});
for (const op of ["join", "leave"]) {
  herald.on(op, ({ channel, member }) => {
    if (channel !== CHAT) return;
    stats.presenceEvents.push({ op, sub: member.sub, at: Date.now() });
    if (stats.presenceEvents.length > 200) stats.presenceEvents.shift();
  });
}
herald.on("state", (state, info) => {
  stats.state = state;
  const conn = $("conn");
  conn.dataset.state = state;
  const label = { connecting: "Connecting…", open: "Live", reconnecting: "Reconnecting…", closed: "Offline" }[state];
  $("conn-label").textContent = label;
  conn.title = info?.code ? `last close code ${info.code}` : "";
  if (state !== "open" && model.people.status === "live") setPeople({ status: "stale", note: "reconnecting…" });
  if (state !== "open") return;
  if (everOpen) {
    // herald.js has just re-subscribed every channel with its position
    startRound("reconnect", [...followed.keys()].filter((c) => followed.get(c) && Number.isInteger(herald.position(c)?.seq)));
  }
  everOpen = true;
  refreshInstance();
});

async function refreshInstance() {
  try {
    const r = await fetch("/healthz", { cache: "no-store" });
    const body = await r.json();
    stats.instance = String(body.instance ?? "unknown");
  } catch {
    stats.instance = null;
  }
  $("instance").textContent = stats.instance ?? "unreachable";
}

// ---- following channels ----
const followed = new Map(); // channel -> unsubscribe function (null while being set up)

async function history(channel, since, limit) {
  try {
    const r = await fetch(`/v1/channels/${channel}/messages?since=${since}&limit=${limit}`, { cache: "no-store" });
    return r.ok ? await r.json() : null;
  } catch {
    return null;
  }
}

// Subscribe to `channel`, replaying its last `keep` messages first (or, after a reload, everything
// since the position this tab had). `apply(data, seq)` updates the model; `options` go to
// herald.subscribe (presence).
async function follow(channel, keep, apply, options = {}) {
  if (followed.has(channel)) return;
  followed.set(channel, null);
  let from = {};
  const stored = herald.position(channel);
  if (restoring && Number.isInteger(stored?.seq)) {
    lastSeq.set(channel, stored.seq);
    if (round?.kind === "reload") addToRound(round, channel); // counted in the reload notice
  } else {
    const h = await history(channel, 0, 1);
    if (Number.isInteger(h?.seq)) {
      from = { since: Math.max(0, h.seq - keep), epoch: h.epoch };
      lastSeq.set(channel, from.since);
    }
  }
  if (!followed.has(channel)) return; // unfollowed meanwhile
  appliers.set(channel, apply);
  followed.set(channel, herald.subscribe(channel, (data, msg) => receive(channel, data, msg), { ...from, ...options }));
}

const isBot = (channel) => channel.startsWith("bot:status:");

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`GET ${url}: ${r.status}`);
  return r.json();
}

// A bot's state is its latest message, read through Herald's REST API: the channel's position,
// then the message at that seq (a message published in between comes after it, in the stream).
async function loadBotState(channel) {
  const pos = await getJson(`/v1/channels/${channel}`);
  if (!Number.isInteger(pos?.seq)) throw new Error(`no position for ${channel}`);
  if (pos.seq === 0) return { state: null, seq: 0, epoch: pos.epoch ?? null }; // nothing yet
  const page = await getJson(`/v1/channels/${channel}/messages?since=${pos.seq - 1}&limit=1`);
  const m = page.messages?.[0];
  if (!page.recovered || page.epoch !== pos.epoch || m?.seq !== pos.seq) {
    throw new Error(`${channel} changed while loading (${page.code ?? "epoch or seq moved"})`);
  }
  return { state: m.data, seq: pos.seq, epoch: pos.epoch };
}

// A bot's status: loaded first (getState), then streamed strictly from that position. After a
// reload of the page the first state is the one this tab saved, at the position it had.
function followBot(id) {
  const channel = `bot:status:${id}`;
  if (followed.has(channel)) return;
  let saved = null;
  const stored = herald.position(channel);
  if (restoring && Number.isInteger(stored?.seq) && model.bots.has(id)) {
    saved = { state: model.bots.get(id).status, seq: stored.seq, epoch: stored.epoch };
    lastSeq.set(channel, stored.seq);
    if (round?.kind === "reload") addToRound(round, channel); // counted in the reload notice
  }
  appliers.set(channel, (d, seq) => applyBot(id, d, seq));
  followed.set(channel, herald.subscribe(channel, (data, msg) => receive(channel, data, msg), {
    getState: async () => {
      const from = saved ? "saved" : "rest";
      const loaded = saved ?? (await loadBotState(channel));
      saved = null; // used once: a later load is a real one
      stats.stateLoads.push({ channel, seq: loaded.seq, from });
      return loaded;
    },
    onState: (state, pos) => {
      lastSeq.set(channel, pos.seq);
      const b = model.bots.get(id);
      if (!b) return;
      b.status = state && typeof state === "object" ? state : null;
      b.seq = pos.seq;
      if (!LIVE.has(b.status?.state)) b.stopping = false;
      dirty.bots.add(id);
      schedule();
    },
  }));
}

// ---- who is in the chat room ----
function setPeople(change) {
  Object.assign(model.people, change);
  dirty.people = true;
  schedule();
}

const chatPresence = {
  presence: { sub: me.name, info: { name: me.name } },
  onPresence: (members, p) => setPeople({
    status: "live", loaded: true, note: "", members, count: p.count, anonymous: p.anonymous, full: p.full,
  }),
};

function unfollow(channel) {
  const stop = followed.get(channel);
  followed.delete(channel);
  appliers.delete(channel);
  if (stop) stop();
}

const appliers = new Map(); // channel -> apply(data, seq)

function receive(channel, data, msg) {
  const seq = Number.isInteger(msg.seq) ? msg.seq : null;
  if (seq !== null) {
    const last = lastSeq.get(channel);
    if (last !== undefined && seq !== last + 1) stats.gaps.push({ channel, after: last, got: seq });
    lastSeq.set(channel, seq);
    const list = (stats.seqs[channel] ||= []);
    list.push(seq);
    if (list.length > 20000) list.splice(0, 5000);
  }
  stats.events++;
  eventTimes.push(performance.now());
  appliers.get(channel)?.(data, seq);
}

// A resume that could not be done: the stream goes on from the head; reload the recent messages.
async function reloadChannel(channel) {
  const apply = appliers.get(channel);
  const head = herald.position(channel)?.seq;
  if (Number.isInteger(head)) lastSeq.set(channel, head);
  if (!apply || !Number.isInteger(head)) return;
  const keep = channel === CHAT ? KEEP.chat : channel === TASKS ? KEEP.tasks : 1;
  if (channel === CHAT) model.chat = [];
  if (channel === TASKS) model.tasks.clear();
  if (channel.startsWith("bot:status:")) {
    const b = model.bots.get(channel.slice(11));
    if (b) b.seq = 0;
  }
  const page = await history(channel, Math.max(0, head - keep), keep);
  for (const m of page?.messages ?? []) if (m.seq <= head) apply(m.data, m.seq);
  dirty.all = true;
  schedule();
}

// ---- applying events to the model ----
function applyFleet(data) {
  if (!Array.isArray(data?.bots)) return;
  const roster = data.bots.filter((b) => CHANNEL_RE.test(String(b?.id ?? ""))).map((b) => ({ id: String(b.id), name: String(b.name ?? b.id) }));
  const ids = new Set(roster.map((b) => b.id));
  for (const id of model.bots.keys()) {
    if (!ids.has(id)) {
      model.bots.delete(id);
      unfollow(`bot:status:${id}`);
    }
  }
  for (const b of roster) {
    if (!model.bots.has(b.id)) model.bots.set(b.id, { status: null, seq: 0 });
    followBot(b.id);
  }
  model.roster = roster;
  dirty.roster = true;
  schedule();
}

function applyBot(id, data, seq) {
  const b = model.bots.get(id);
  if (!b || !data || typeof data !== "object") return;
  if (seq !== null && seq <= b.seq) return; // older than what is shown
  b.status = data;
  if (seq !== null) b.seq = seq;
  if (!LIVE.has(data.state)) b.stopping = false;
  dirty.bots.add(id);
  schedule();
}

function applyTask(data, seq) {
  if (typeof data?.task !== "string") return;
  const t = model.tasks.get(data.task);
  if (t && seq !== null && seq <= t.seq) return;
  const finished = data.state === "done" || data.state === "failed";
  model.tasks.set(data.task, { u: data, seq: seq ?? 0, finishedAt: finished ? (t?.finishedAt ?? Date.now()) : null });
  // keep the running ones and the last few finished
  const done = [...model.tasks.values()].filter((x) => x.finishedAt).sort((a, b) => b.finishedAt - a.finishedAt || b.seq - a.seq);
  for (const x of done.slice(FINISHED_SHOWN)) model.tasks.delete(x.u.task);
  dirty.tasks = true;
  schedule();
}

function applyChat(data, seq) {
  if (typeof data?.text !== "string") return;
  if (data.cid) model.pending.delete(data.cid);
  if (seq !== null && model.chat.some((m) => m.seq === seq)) return;
  const entry = { seq, data };
  const at = seq === null ? model.chat.length : model.chat.findIndex((m) => m.seq !== null && m.seq > seq);
  model.chat.splice(at < 0 ? model.chat.length : at, 0, entry);
  if (model.chat.length > CHAT_SHOWN) model.chat.splice(0, model.chat.length - CHAT_SHOWN);
  dirty.chat = true;
  schedule();
}

// ---- rendering (batched) ----
const dirty = { all: true, roster: true, bots: new Set(), tasks: true, chat: true, people: true };
let renderTimer = null;
function schedule() {
  if (renderTimer === null) renderTimer = setTimeout(render, 40);
}

function render() {
  renderTimer = null;
  if (dirty.all || dirty.roster) renderRoster();
  for (const id of dirty.all ? model.bots.keys() : dirty.bots) renderBot(id);
  if (dirty.all || dirty.tasks) renderTasks();
  if (dirty.all || dirty.chat) renderChat();
  if (dirty.all || dirty.people) renderPeople();
  if (dirty.all || dirty.roster || dirty.bots.size) renderFleetSummary();
  dirty.all = dirty.roster = dirty.tasks = dirty.chat = dirty.people = false;
  dirty.bots.clear();
  $("stat-events").textContent = stats.events.toLocaleString("en");
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

const PEOPLE_ICON = '<svg viewBox="0 0 20 20" aria-hidden="true"><circle cx="7.5" cy="7" r="3"/><path d="M2 17c0-3 2.5-5 5.5-5s5.5 2 5.5 5M13 4.2a3 3 0 0 1 0 5.6M15 12.3c1.9.6 3 2.3 3 4.7"/></svg>';

function renderRoster() {
  const list = $("bots");
  const want = model.roster.map((b) => b.id);
  for (const li of [...list.children]) if (!model.bots.has(li.dataset.bot)) li.remove();
  for (const id of want) {
    let li = list.querySelector(`li[data-bot="${CSS.escape(id)}"]`);
    if (!li) {
      li = el("li", "bot");
      li.dataset.bot = id;
      li.innerHTML = `<div class="bot-top"><span class="avatar" aria-hidden="true"></span>
        <div class="bot-title"><div class="bot-name"><span class="n"></span> <span class="bot-id"></span></div>
        <div class="bot-meeting"></div></div></div>
        <div class="bot-row"><span class="pill"></span><span class="people" title="Participants">${PEOPLE_ICON}<strong class="count">0</strong><span class="sr-only"> participants</span></span></div>
        <div class="steps" aria-hidden="true"><span></span><span></span><span></span><span></span><span></span></div>
        <p class="reason"></p>
        <div class="bot-foot"><span class="since"></span><button type="button" class="button-stop">Stop</button></div>`;
    }
    list.appendChild(li); // keeps the roster order
    renderBot(id);
  }
  $("bots-empty").hidden = want.length > 0;
}

function renderBot(id) {
  const li = $("bots").querySelector(`li[data-bot="${CSS.escape(id)}"]`);
  const b = model.bots.get(id);
  if (!li || !b) return;
  const s = b.status || {};
  const name = model.roster.find((r) => r.id === id)?.name ?? s.name ?? id;
  const state = STATE_LABEL[s.state] ? s.state : "unknown";
  li.dataset.state = state;
  li.querySelector(".avatar").textContent = name.slice(0, 1).toUpperCase();
  li.querySelector(".n").textContent = name;
  li.querySelector(".bot-id").textContent = `#${id}`;
  li.querySelector(".bot-meeting").textContent = s.meeting ? `${s.meeting}${s.platform ? ` · ${s.platform}` : ""}` : "Idle";
  li.querySelector(".bot-meeting").title = li.querySelector(".bot-meeting").textContent;
  li.querySelector(".pill").textContent = STATE_LABEL[s.state] ?? "Waiting";
  li.querySelector(".count").textContent = Number.isFinite(s.participants) ? s.participants : "–";
  const at = STEPS.indexOf(state);
  li.querySelectorAll(".steps span").forEach((seg, i) => {
    seg.className = at < 0 ? "" : i < at ? "done" : i === at ? "now" : "";
  });
  li.querySelector(".reason").textContent = b.error || (s.reason ? String(s.reason) : "");
  const stop = li.querySelector(".button-stop");
  stop.hidden = !LIVE.has(s.state);
  stop.disabled = !!b.stopping;
  stop.textContent = b.stopping ? "Stopping…" : "Stop";
  stop.setAttribute("aria-label", `Stop ${name}`);
  li.querySelector(".since").dataset.since = Number.isFinite(s.since) ? s.since : "";
  tickBot(li);
}

function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}

function tickBot(li) {
  const since = li.querySelector(".since");
  const t = Number(since.dataset.since);
  const state = li.dataset.state;
  since.textContent = !t ? "" : state === "completed" || state === "failed" ? `${ago(Date.now() - t)} ago` : `for ${ago(Date.now() - t)}`;
}

function renderFleetSummary() {
  const counts = {};
  for (const b of model.bots.values()) if (b.status?.state) counts[b.status.state] = (counts[b.status.state] || 0) + 1;
  const inMeeting = [...model.bots.values()].filter((b) => LIVE.has(b.status?.state));
  const people = inMeeting.reduce((a, b) => a + (Number(b.status.participants) || 0), 0);
  $("bots-summary").textContent = model.bots.size
    ? `${model.bots.size} bots · ${counts.recording || 0} recording · ${people} people in meetings`
    : "Waiting for the fleet…";
}

function renderTasks() {
  const list = $("tasks");
  const all = [...model.tasks.values()];
  const running = all.filter((t) => !t.finishedAt).sort((a, b) => (a.u.started ?? 0) - (b.u.started ?? 0) || a.u.task.localeCompare(b.u.task));
  const finished = all.filter((t) => t.finishedAt).sort((a, b) => b.finishedAt - a.finishedAt || b.seq - a.seq);
  const order = [...running, ...finished];
  const keep = new Set(order.map((t) => t.u.task));
  for (const li of [...list.children]) if (!keep.has(li.dataset.task)) li.remove();
  order.forEach((t, i) => {
    let li = list.querySelector(`li[data-task="${CSS.escape(t.u.task)}"]`);
    if (!li) {
      li = el("li", "task");
      li.dataset.task = t.u.task;
      li.innerHTML = `<div class="task-name"><span class="tn"></span><span class="task-id"></span></div>
        <div class="task-pct"></div>
        <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100"><div class="bar-fill"></div></div>`;
    }
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
    const state = t.u.state === "done" || t.u.state === "failed" ? t.u.state : "running";
    const p = state === "done" ? 100 : Math.max(0, Math.min(100, Number(t.u.progress) || 0));
    li.dataset.state = state;
    li.querySelector(".tn").textContent = String(t.u.name ?? t.u.task);
    li.querySelector(".task-id").textContent = t.u.task;
    li.querySelector(".task-pct").textContent = state === "done" ? "Done" : state === "failed" ? `Failed${t.u.error ? `: ${t.u.error}` : ""}` : `${p}%`;
    const bar = li.querySelector(".bar");
    bar.setAttribute("aria-valuenow", String(p));
    bar.setAttribute("aria-label", `${t.u.name ?? t.u.task}: ${state === "running" ? `${p}%` : state}`);
    li.querySelector(".bar-fill").style.width = `${p}%`;
  });
  $("tasks-summary").textContent = model.tasks.size ? `${running.length} running · ${finished.length} recently finished` : "No tasks yet";
}

function timeOf(ms) {
  return Number.isFinite(ms) ? new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
}

function chatItem(data, cls) {
  const li = el("li", `msg${cls ? ` ${cls}` : ""}`);
  const meta = el("div", "msg-meta");
  meta.append(el("strong", null, String(data.from ?? "someone").slice(0, 40)), ` · ${timeOf(data.at)}`);
  li.append(meta, el("div", "msg-text", data.text));
  return li;
}

// The chat stays scrolled to the newest message unless the reader scrolled up.
let chatPinned = true;
$("chat-log").addEventListener("scroll", () => {
  const log = $("chat-log");
  chatPinned = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
}, { passive: true });
new ResizeObserver(() => {
  if (chatPinned) $("chat-log").scrollTop = $("chat-log").scrollHeight;
}).observe($("chat-log"));

function renderChat() {
  const log = $("chat-log");
  const atBottom = chatPinned;
  const items = model.chat.map((m) => {
    const li = chatItem(m.data, m.data.sid === me.sid ? "mine" : "");
    if (m.seq !== null) li.dataset.seq = m.seq;
    return li;
  });
  for (const [cid, p] of model.pending) {
    const li = chatItem({ from: me.name, at: p.at, text: p.text }, `mine ${p.failed ? "failed" : "pending"}`);
    li.dataset.cid = cid;
    li.querySelector(".msg-meta").append(p.failed ? ` · not sent (${p.failed})` : " · sending…");
    items.push(li);
  }
  if (!items.length) items.push(el("li", "chat-empty", "No messages yet. Open this page in another tab (or on the other gateway) and say hello."));
  log.replaceChildren(...items);
  if (atBottom || dirty.scroll) {
    log.scrollTop = log.scrollHeight;
    chatPinned = true;
  }
  dirty.scroll = false;
}

const personName = (m) => String(typeof m.info?.name === "string" && m.info.name ? m.info.name : m.sub).slice(0, 40);

// The "people here" list: one chip per member (kept by sub, so only arrivals animate), this tab's
// user first.
function renderPeople() {
  const p = model.people;
  const box = $("people-here");
  box.dataset.status = p.status;
  const off = p.status === "off" || (p.status === "error" && !p.loaded);
  $("people-count").textContent = off ? "–" : p.loaded ? String(p.count) : "…";
  $("people-count").title = p.loaded ? `${p.count} here${p.anonymous ? `, ${p.anonymous} not listed` : ""}` : "";
  const notes = [];
  if (p.note) notes.push(p.note);
  if (p.full) notes.push("the room is full: you are not listed");
  $("people-note").textContent = notes.join(" · ");
  const list = $("people");
  if (off) return list.replaceChildren();
  const members = [...p.members].sort((a, b) => (b.sub === me.name) - (a.sub === me.name));
  const keep = new Set(members.map((m) => m.sub));
  for (const li of [...list.children]) if (!keep.has(li.dataset.sub)) li.remove();
  members.forEach((m, i) => {
    let li = [...list.children].find((x) => x.dataset.sub === m.sub);
    if (!li) {
      li = el("li", "person");
      li.dataset.sub = m.sub;
      li.append(el("span", "person-dot"), el("span", "person-name"));
    }
    const name = personName(m);
    li.classList.toggle("me", m.sub === me.name);
    li.querySelector(".person-dot").textContent = name.slice(0, 1).toUpperCase();
    li.querySelector(".person-name").textContent = name;
    li.title = m.sub === name ? name : `${name} (${m.sub})`;
    if (m.sub === me.name && !li.querySelector(".person-you")) li.append(el("span", "person-you", "you"));
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
  });
  const extra = p.loaded ? p.count - members.length : 0;
  let anon = list.querySelector("li.anonymous");
  if (extra > 0) {
    if (!anon) {
      anon = el("li", "person anonymous");
      anon.dataset.sub = "";
      anon.append(el("span", "person-dot", "?"), el("span", "person-name"));
    }
    anon.querySelector(".person-name").textContent = `+${extra} not listed`;
    list.appendChild(anon);
  } else anon?.remove();
}

// ---- user actions ----
$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  const cid = `${me.sid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
  model.pending.set(cid, { text, at: Date.now(), failed: null });
  dirty.chat = dirty.scroll = true;
  schedule();
  herald.publish(CHAT, { from: me.name, sid: me.sid, cid, text, at: Date.now() }).catch((err) => {
    const p = model.pending.get(cid);
    if (p) p.failed = err?.code ?? "error";
    dirty.chat = true;
    schedule();
  });
});

$("bots").addEventListener("click", (e) => {
  const button = e.target.closest(".button-stop");
  if (!button) return;
  const id = button.closest("li").dataset.bot;
  const b = model.bots.get(id);
  if (!b || b.stopping) return;
  b.stopping = true;
  b.error = null;
  dirty.bots.add(id);
  schedule();
  herald.publish(`bot:command:${id}`, { action: "stop", by: me.name, at: Date.now() }).catch((err) => {
    b.stopping = false;
    b.error = `Stop not sent: ${err?.code ?? "error"}`;
    dirty.bots.add(id);
    schedule();
  });
});

let noticeTimer = null;
function notify(text, kind = "ok") {
  stats.notices.push(text);
  $("notice-text").textContent = text;
  $("notice").dataset.kind = kind;
  $("notice").hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { $("notice").hidden = true; }, 30000);
}
$("notice-close").addEventListener("click", () => { $("notice").hidden = true; });

// ---- the peer link: ?peer=8081 (a port on this host) or a full http(s) URL ----
{
  const peer = params.get("peer") || "";
  let href = null;
  if (/^\d{1,5}$/.test(peer)) href = `${location.protocol}//${location.hostname}:${peer}/?peer=${location.port || (location.protocol === "https:" ? 443 : 80)}`;
  else if (/^https?:\/\//.test(peer)) href = peer;
  if (href) {
    $("peer-link").href = href;
    $("peer-link").hidden = false;
  }
}

// ---- one channel over HTTP: Server-Sent Events with the browser's own EventSource ----
// GET /v1/channels/{C}/stream (EventSource asks for text/event-stream): the channel's last few
// messages are replayed (last=), then live ones follow. Each durable message is an event with
// id <epoch>_<seq>; when the connection drops, EventSource reconnects by itself (after the
// server's retry: 1000) with the same URL and the last id it saw as Last-Event-ID, which the
// gateway takes over last=/since=: exactly the missed messages are replayed, none twice. The
// page makes a new EventSource only when the browser gives up (an HTTP error answer, e.g. 503
// from a draining gateway): from since=<seq>&epoch=<epoch> of the last id. ?sse=<channel>
// follows another channel.
const SSE_CHANNEL = CHANNEL_RE.test(params.get("sse") || "") ? params.get("sse") : TASKS;
const SSE_LAST = 8; // replayed on first load
const SSE_SHOWN = 100;
const sse = {
  channel: SSE_CHANNEL,
  state: "connecting",
  sources: 0, // EventSource objects the page made (1 unless the browser gave up)
  opens: 0, // connections opened, the browser's own reconnects included
  seqs: [], // seqs received, in arrival order (bounded); also window.__sseSeqs
  gaps: [], // {after, got}: a seq that was not the previous one + 1
  notes: [], // the subscribed event's recovered:false and reset events: {event, code, seq}
  lastSeq: null,
  lastId: null, // the last event id (what EventSource sends as Last-Event-ID)
};
let sseSource = null;

function sseUrl(fromId) {
  const base = `/v1/channels/${SSE_CHANNEL}/stream`;
  const m = /^([A-Za-z0-9-]+)_0*(\d+)$/.exec(fromId || "");
  return m ? `${base}?since=${m[2]}&epoch=${m[1]}` : `${base}?last=${SSE_LAST}`;
}

function sseState(state, detail) {
  sse.state = state;
  $("sse-conn").dataset.state = state;
  $("sse-label").textContent = { connecting: "Connecting…", open: "Open", reconnecting: "Reconnecting…", closed: "Closed" }[state];
  $("sse-detail").textContent = detail ?? "";
}

function sseLine(seq, text, cls) {
  const log = $("sse-log");
  const pinned = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
  const li = el("li", `sse-item${cls ? ` ${cls}` : ""}`);
  if (seq !== null) li.dataset.seq = seq;
  li.append(el("span", "sse-seq", seq === null ? "–" : `#${seq}`), el("span", "sse-data", text));
  li.querySelector(".sse-data").title = text;
  log.append(li);
  while (log.children.length > SSE_SHOWN) log.firstElementChild.remove();
  $("sse-empty").hidden = true;
  if (pinned) log.scrollTop = log.scrollHeight;
}

function sseOpen(fromId) {
  const es = new EventSource(sseUrl(fromId));
  sseSource = es;
  sse.sources++;
  es.onopen = () => {
    sse.opens++;
    sseState("open", sse.opens > 1 ? `resumed after seq ${sse.lastSeq ?? 0} · ${sse.opens - 1} reconnect${sse.opens === 2 ? "" : "s"}` : "live");
  };
  es.onmessage = (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    const seq = Number.isInteger(msg?.seq) ? msg.seq : null; // raw messages have none
    if (seq !== null) {
      if (sse.lastSeq !== null && seq !== sse.lastSeq + 1) sse.gaps.push({ after: sse.lastSeq, got: seq });
      sse.lastSeq = seq;
      sse.seqs.push(seq);
      if (sse.seqs.length > 20000) sse.seqs.splice(0, 5000);
    }
    if (e.lastEventId) sse.lastId = e.lastEventId;
    let text = JSON.stringify(msg?.data);
    if (text === undefined) text = String(msg?.data);
    sseLine(seq, text.length > 300 ? `${text.slice(0, 300)}…` : text);
  };
  const control = (name) => (e) => {
    let d;
    try { d = JSON.parse(e.data); } catch { return; }
    if (e.lastEventId) sse.lastId = e.lastEventId;
    const missed = name === "reset" || d.recovered === false;
    if (missed) {
      sse.notes.push({ event: name, code: d.code ?? null, seq: d.seq });
      sseLine(null, name === "reset" ? `history reset (${d.code ?? "new epoch"}): following from seq ${d.seq}`
        : `missed messages could not be replayed (${d.code ?? "not recovered"}): following from seq ${d.seq}`, "note");
    }
    if (Number.isInteger(d.seq) && (sse.lastSeq === null || missed)) sse.lastSeq = d.seq;
  };
  es.addEventListener("subscribed", control("subscribed"));
  es.addEventListener("reset", control("reset"));
  es.onerror = () => {
    if (es.readyState === EventSource.CONNECTING) {
      sseState("reconnecting", `the browser retries with Last-Event-ID after seq ${sse.lastSeq ?? 0}`);
      return;
    }
    // CLOSED: the gateway answered with an error and the browser gave up; a new EventSource
    // resumes from the last id (in the query: a new EventSource sends no Last-Event-ID)
    es.close();
    if (sseSource !== es) return;
    sseState("closed", "retrying in 3 s");
    setTimeout(() => { if (sseSource === es) sseOpen(sse.lastId); }, 3000);
  };
}

// ---- saving this tab's state for a reload ----
addEventListener("pagehide", () => {
  const state = {
    v: 1,
    roster: model.roster,
    bots: [...model.bots].map(([id, b]) => [id, { status: b.status, seq: b.seq }]),
    tasks: [...model.tasks.values()],
    chat: model.chat.slice(-KEEP.chat),
    lastSeq: [...lastSeq],
  };
  try { sessionStorage.setItem(KEY_STATE, JSON.stringify(state)); } catch { /* quota: no restore */ }
});

// ---- clocks: "for 1m 04s" and events/s ----
setInterval(() => {
  for (const li of $("bots").children) tickBot(li);
  const now = performance.now();
  while (eventTimes.length && eventTimes[0] < now - 10000) eventTimes.shift();
  $("rate").textContent = (eventTimes.length / 10).toFixed(1);
}, 1000);

// ---- start ----
$("me").textContent = me.name;
$("room").textContent = ROOM;
$("chat-input").placeholder = `Message #${ROOM}`;

if (restoring) {
  model.roster = Array.isArray(snapshot.roster) ? snapshot.roster : [];
  for (const [id, b] of snapshot.bots ?? []) model.bots.set(id, { status: b.status, seq: b.seq || 0 });
  for (const t of snapshot.tasks ?? []) if (typeof t?.u?.task === "string") model.tasks.set(t.u.task, t);
  model.chat = Array.isArray(snapshot.chat) ? snapshot.chat : [];
  round = newRound("reload", []);
}

herald.connect();
follow(FLEET, KEEP.fleet, applyFleet);
follow(TASKS, KEEP.tasks, applyTask);
follow(CHAT, KEEP.chat, applyChat, chatPresence);
if (restoring) {
  for (const r of model.roster) followBot(r.id);
  if (!round.pending.size) round = null;
}
refreshInstance();
schedule();
$("sse-channel").textContent = SSE_CHANNEL;
if (SSE_CHANNEL !== TASKS) $("sse-h").textContent = "A channel over HTTP (SSE)";
if (typeof EventSource === "function") sseOpen(null);
else sseState("closed", "this browser has no EventSource");
window.__sseSeqs = sse.seqs;

window.heraldDemo = {
  herald,
  me,
  snapshot: () => JSON.parse(JSON.stringify({
    ...stats,
    lastSeq: Object.fromEntries(lastSeq),
    bots: Object.fromEntries([...model.bots].map(([id, b]) => [id, b.status?.state ?? null])),
    tasks: model.tasks.size,
    chat: model.chat.map((m) => ({ seq: m.seq, text: m.data.text, from: m.data.from })),
    people: { ...model.people, members: model.people.members.map((m) => ({ sub: m.sub, name: personName(m) })) },
    sse,
  })),
};
