/**
 * herald.js: the client for the Herald WebSocket gateway (wire contract v1, docs/PROTOCOL.md).
 * An ES module with no dependency and no build step, for browsers and Node >= 20.
 *
 * It reconnects with exponential backoff and full jitter, re-subscribes every channel on a new
 * connection with the `since`/`epoch` it last saw (so the gateway replays what was missed), drops
 * a sequenced message it has already delivered, and matches replies to requests by integer `id`.
 * A connection that has been silent for `heartbeat` ms gets a `ping` op; one that stays silent
 * `heartbeatTimeout` ms longer is taken for dead (a vanished network never closes a socket by
 * itself) and replaced, resuming every channel. Browsers hide WebSocket pings from scripts,
 * so this heartbeat is the page's own; the gateway's pings serve the other clients.
 *
 * With JWT auth the gateway closes a connection with 4001 when its token expires; the client
 * then reconnects with a token from `getToken` and resumes. To keep the connection instead, the
 * client reads the `exp` of the token it connected with (the JWT payload, decoded without any
 * signature check) and, before it runs out, sends a `refresh` op with a token from
 * `refreshToken` (or `getToken`); each `refreshed` reply moves the deadline to the new token's
 * exp. Channels the new token no longer allows are ended by the gateway (`unsubscribed` with
 * code `forbidden`) and reported as an `unsubscribed` event; they are not subscribed again.
 *
 *   import { Herald } from "./herald.js";
 *   const herald = new Herald("wss://example.com/ws", { getToken: () => fetchJwt() });
 *   herald.on("recovery_failed", ({ channel }) => reloadFromApi(channel));
 *   const stop = herald.subscribe("bot:status:42", (data, msg) => render(data, msg.seq));
 *   herald.connect();
 *
 * With `getState` the client loads the application's state first and then streams from its
 * position, strictly: whenever the gateway cannot replay what the state misses, the state is
 * loaded again (docs/PROTOCOL.md, "Load state, then stream"):
 *
 *   herald.subscribe("bot:status:42", (data) => apply(data), {
 *     getState: async () => (await fetch("/api/bots/42")).json(), // {state, seq, epoch}
 *     onState: (state) => replaceAll(state),
 *   });
 *
 * Presence (channels the gateway lists in HERALD_PRESENCE): who is subscribed to a channel.
 * `presence` gives this connection's user (`sub`, used when the gateway has no JWT auth; with
 * auth the token's `sub` counts) and what others see of it (`info`); `onPresence` gets the
 * live member list, loaded after every `subscribed` (so after every reconnect too) and kept
 * up to date by the gateway's join and leave events:
 *
 *   herald.subscribe("chat:lobby", (msg) => show(msg), {
 *     presence: { sub: "alice", info: { name: "Alice" } },
 *     onPresence: (members, { count }) => renderPeople(members, count),
 *     onJoin: (member) => toast(`${member.info?.name} joined`),
 *   });
 *   const { count, members } = await herald.presence("chat:lobby"); // a one-off query
 */

const DEFAULTS = {
  backoffBase: 250, // ms: first reconnect delay ceiling
  backoffCap: 15000, // ms: largest reconnect delay ceiling
  resetAfter: 10000, // ms: a connection open this long resets the backoff
  rateLimitDelay: 5000, // ms: added to the delay after close 4029
  requestTimeout: 10000, // ms: publish/ping reject with `timeout` after this; 0 = never
  heartbeat: 25000, // ms: after this long with nothing heard, a ping op goes out; 0 = never
  heartbeatTimeout: 10000, // ms: nothing heard this much longer: the connection is dead
  storageKey: "herald",
  persistDelay: 1000, // ms: positions are saved at most this often; 0 = after every change
  refreshBefore: 30000, // ms: a token is refreshed at least this long before its exp (lifetime allowing)
};

// Subscribe errors after which retrying the same subscription cannot succeed.
const PERMANENT = new Set(["bad_request", "unauthorized", "forbidden", "not_found", "too_large"]);
// Presence query errors after which asking again cannot succeed (not_found: presence is not
// enabled on the channel).
const PRESENCE_PERMANENT = new Set(["bad_request", "unauthorized", "forbidden", "not_found"]);
const SUB_MAX_BYTES = 127;
// ms: the soonest a token is refreshed again after a refresh (one whose new exp is no later
// than the old one would otherwise be refreshed ever more often as that exp comes near).
const REFRESH_MIN_DELAY = 1000;

const OPEN = 1; // WebSocket.OPEN

export class Herald {
  /**
   * @param {string} url  address of the gateway's `/ws` endpoint (`ws://` or `wss://`).
   * @param {object} [options]
   * @param {string} [options.token]  JWT, sent as `?token=` (URL-encoded).
   * @param {() => string|Promise<string>} [options.getToken]  called before every (re)connect;
   *   its result replaces `token` (refresh an expired token here).
   * @param {() => string|Promise<string>} [options.refreshToken]  gives the token that replaces
   *   the open connection's one before it expires (the `refresh` op: the connection and its
   *   subscriptions stay). Defaults to `getToken`; with neither, nothing is refreshed. Only a
   *   token whose payload has a numeric `exp` is refreshed: once 85% of its remaining lifetime
   *   has passed, or `refreshBefore` ms before exp if that is earlier, but not before half of
   *   it (nor 1 s) has passed. A failure (an error reply, no reply in `requestTimeout`,
   *   refreshToken throwing) is reported as an `error` event with op `refresh` and retried
   *   with the reconnect backoff while the token lasts (not after `bad_request`: the gateway
   *   has no auth); if it runs out, the gateway closes with 4001 and the client reconnects
   *   through `getToken`. A refreshed token is also the one the next connection uses (unless
   *   `getToken` gives another).
   * @param {Function} [options.WebSocket]  WebSocket constructor (default: the global one).
   * @param {Storage} [options.storage]  e.g. `sessionStorage`: positions survive a page reload.
   * @param {string} [options.storageKey]  key in `storage` (default "herald").
   * @param {() => number} [options.random]  [0,1) source for the jitter (default Math.random).
   * @param {Function} [options.setTimeout]  timer functions (default: the global ones).
   * @param {Function} [options.clearTimeout]
   * @param {() => number} [options.now]  clock in ms (default Date.now).
   * Also `backoffBase`, `backoffCap`, `resetAfter`, `rateLimitDelay`, `requestTimeout`,
   * `heartbeat`, `heartbeatTimeout`, `persistDelay`, `refreshBefore` (ms; defaults above).
   */
  constructor(url, options = {}) {
    const o = { ...DEFAULTS, ...options };
    this.url = url;
    /** "connecting" | "open" | "reconnecting" | "closed" */
    this.state = "closed";
    this._o = o;
    this._token = o.token;
    this._WebSocket = o.WebSocket || globalThis.WebSocket;
    this._random = o.random || Math.random;
    this._now = o.now || Date.now;
    const setT = o.setTimeout || globalThis.setTimeout, clearT = o.clearTimeout || globalThis.clearTimeout;
    this._setTimeout = (fn, ms) => setT(fn, ms); // unbound calls: no "Illegal invocation"
    this._clearTimeout = (t) => clearT(t);
    this._listeners = new Map(); // event -> Set of functions
    this._subs = new Map(); // channel -> Set of {fn} (one per subscribe() call)
    this._pos = new Map(); // channel -> {seq, epoch}: the last position seen
    this._sync = new Map(); // channel -> state loading of a getState subscription
    this._member = new Map(); // channel -> {sub?, info?}: this client's presence on the channel
    this._presence = new Map(); // channel -> live member list of a channel with onPresence
    this._joined = new Set(); // channels answered `subscribed` on the current connection
    this._pending = new Map(); // id -> request awaiting its reply
    this._nextId = 1;
    this._ws = null;
    this._openedAt = null; // set while the current socket is open
    this._timer = this._saveTimer = null; // reconnect and persistence timers
    this._hbTimer = null; // heartbeat check while open
    this._heardAt = 0; // when the open socket last brought a frame
    this._pingedAt = null; // when the heartbeat's ping went out (since the last frame)
    this._attempt = 0; // reconnect attempts since the last stable connection
    this._refresh = null; // token refresh of the open connection: {ws, exp, timer, attempt}
    this._stopped = true;
    this._gen = 0; // bumped on every dial and close(): stale async work checks it
    this._load();
    if (o.storage && typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("pagehide", () => this._save());
    }
  }

  /**
   * Open the connection (no-op unless closed). Keeps reconnecting until close().
   * @returns {Herald} this
   */
  connect() {
    if (!this._stopped) return this;
    this._stopped = false;
    this._attempt = 0;
    this._setState("connecting");
    this._dial();
    return this;
  }

  /**
   * Close with 1000 and stop reconnecting. Subscriptions and positions are kept, so a later
   * connect() resumes. Requests without a reply are rejected with `unavailable`.
   */
  close() {
    this._stopped = true;
    this._gen++;
    this._cancelReconnect();
    const ws = this._ws;
    this._ws = null;
    this._openedAt = null;
    this._joined.clear();
    this._stopHeartbeat();
    this._stopRefresh();
    if (ws) try { ws.close(1000); } catch { /* already closing */ }
    this._failPending(() => true, { code: "unavailable", message: "client closed" });
    this._save();
    this._setState("closed", { code: 1000 });
  }

  /**
   * Receive the messages of `channel`. On a new connection the channel is re-subscribed with
   * the last seq/epoch seen, so messages published meanwhile are replayed, each exactly once.
   * @param {string} channel
   * @param {(data: any, msg: {channel: string, seq?: number, ts?: number, data: any}) => void} onMessage
   * @param {object} [from]  where to start; only used when the channel is not subscribed yet:
   * @param {number} [from.since]  resume from this position (instead of the stored one)
   * @param {any} [from.epoch]
   * @param {(channel: string) => Promise<{state: any, seq: number, epoch: any}>} [from.getState]
   *   loads the application's state and the channel's position it is at (read together, e.g.
   *   with herald_position in the same SQL statement); the channel is then subscribed strictly
   *   from that position, and the state is loaded again whenever the gateway cannot replay
   *   what it misses (a refused strict resume, a history reset). A failed load is retried
   *   with backoff and reported as an `error` event with the channel.
   * @param {(state: any, pos: {seq: number, epoch: any}) => void} [from.onState]  gets each
   *   loaded state, before the messages that follow it.
   * @param {{sub?: string, info?: any}} [from.presence]  this client's user on a presence
   *   channel, sent in every subscribe frame: `sub` (1 to 127 bytes of UTF-8) names the user
   *   when the gateway has no JWT auth (several connections of one user are one member);
   *   `info` (any JSON value, small) is shown with the member. Only used when the channel is
   *   not subscribed yet.
   * @param {(members: Array<{sub: string, info: any}>, p: {channel: string, count: number,
   *   anonymous: number, full: boolean}) => void} [from.onPresence]  gets the channel's member
   *   list (sorted by sub) whenever it changes: loaded with a `presence` query after every
   *   `subscribed` (also after a reconnect), then updated by join and leave events. `count` is
   *   the members plus the anonymous connections of the last query; `full`: the gateway
   *   does not list this client (`presence_full`), until its sub shows up on the list. A failed query is reported as an `error`
   *   event with op `presence` and the channel (and retried unless it cannot succeed).
   * @param {(member: {sub: string, info: any}) => void} [from.onJoin]  a user arrived (the
   *   gateway's `join`: not present on any instance before).
   * @param {(member: {sub: string, info?: any}) => void} [from.onLeave]  a user's last
   *   connection is gone (`info` as last known).
   * @returns {() => void} removes this callback; the last one removed unsubscribes the channel.
   */
  subscribe(channel, onMessage, { since, epoch, getState, onState, presence, onPresence, onJoin, onLeave } = {}) {
    if (typeof onMessage !== "function") throw new TypeError("onMessage must be a function");
    if (getState !== undefined && typeof getState !== "function") {
      throw new TypeError("getState must be a function");
    }
    for (const [name, fn] of Object.entries({ onPresence, onJoin, onLeave })) {
      if (fn !== undefined && typeof fn !== "function") throw new TypeError(`${name} must be a function`);
    }
    const member = presence === undefined ? undefined : checkMember(presence);
    let handlers = this._subs.get(channel);
    const fresh = !handlers;
    if (fresh) this._subs.set(channel, (handlers = new Set()));
    if (fresh && Number.isInteger(since)) {
      this._pos.set(channel, { seq: since, epoch });
      this._dirty();
    }
    if (fresh && member) this._member.set(channel, member);
    const handler = { fn: onMessage, onPresence, onJoin, onLeave };
    handlers.add(handler);
    if (onPresence) this._watchPresence(channel, handler);
    if (fresh && getState) {
      this._sync.set(channel, { getState, onState, loading: false, attempt: 0, timer: null });
      this._loadState(channel);
    } else if (fresh && this._isOpen()) this._sendSubscribe(channel);
    return () => {
      if (this._subs.get(channel) === handlers && handlers.delete(handler) && !handlers.size) {
        this.unsubscribe(channel);
      }
    };
  }

  /**
   * Stop receiving `channel` (every callback) and forget its position: it is not
   * re-subscribed after a reconnect.
   * @param {string} channel
   */
  unsubscribe(channel) {
    if (!this._forget(channel)) return;
    if (!this._isOpen()) return;
    const id = this._nextId++;
    this._pending.set(id, { op: "unsubscribe", channel, sent: true });
    this._send({ op: "unsubscribe", channel, id });
  }

  /**
   * Publish `data` to `channel` through the gateway's durable path. Sent when the connection is
   * open (queued until then).
   * @param {string} channel
   * @param {any} data  any JSON value
   * @returns {Promise<{seq: number}>} rejects with `{code, message}`: the server's error,
   *   `timeout`, or `unavailable` when the connection closed before the reply (the message may
   *   or may not have been published).
   */
  publish(channel, data) {
    return this._request({ op: "publish", channel, data }, (reply) => ({ seq: reply.seq }));
  }

  /**
   * Who is on a presence channel now (one query; for a list kept up to date use `onPresence`).
   * Allowed whether or not the channel is subscribed.
   * @param {string} channel
   * @returns {Promise<{channel: string, count: number, members: Array<{sub: string, info: any}>}>}
   *   `members` sorted by sub, `count` = members + anonymous connections. Rejects with
   *   `{code, message}`: `not_found` (presence not enabled on the channel), `forbidden`,
   *   `unavailable` (Redis down, or the connection closed), `timeout`.
   */
  presence(channel) {
    return this._request({ op: "presence", channel }, (reply) => ({
      channel: reply.channel,
      count: reply.count,
      members: Array.isArray(reply.members) ? reply.members : [],
    }));
  }

  /**
   * The live member list of a channel subscribed with `onPresence`, as last given to it.
   * @returns {{count: number, anonymous: number, full: boolean, loaded: boolean,
   *   members: Array<{sub: string, info: any}>} | undefined}
   */
  members(channel) {
    const ps = this._presence.get(channel);
    return ps && { ...this._presenceView(channel, ps), loaded: ps.loaded, members: this._memberList(ps) };
  }

  /**
   * Round trip to the gateway.
   * @returns {Promise<{rtt: number}>} round-trip time in ms; rejects like publish().
   */
  ping() {
    const start = this._now();
    return this._request({ op: "ping" }, () => ({ rtt: this._now() - start }));
  }

  /**
   * Listen to an event: `state` (state, {code, reason, delay}?), `message` (msg),
   * `recovered` ({channel, replayed}), `recovery_failed` ({channel, code}),
   * `join` ({channel, member}), `leave` ({channel, member}) on presence channels,
   * `unsubscribed` ({channel, code, message}: the gateway ended the channel, e.g. `forbidden`
   * after a token refresh; it is forgotten like after unsubscribe(), and an `error` event with
   * the channel follows), `refreshed` ({exp}: the connection's token was replaced; Unix s),
   * `error` ({code, message, op?, channel?}; `presence_full` with the channel when the gateway
   * keeps this client subscribed but does not list it; op `refresh` for a failed refresh).
   * @returns {() => void} removes the listener.
   */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  /** Remove a listener added with on(). */
  off(event, fn) { this._listeners.get(event)?.delete(fn); }

  /**
   * The last position seen on `channel`, as sent in the next resume.
   * @returns {{seq?: number, epoch?: any} | undefined}
   */
  position(channel) {
    const p = this._pos.get(channel);
    return p && { ...p };
  }

  // ---- connection ----

  _isOpen() { return this._openedAt !== null; }

  _address() {
    if (this._token == null || this._token === "") return this.url;
    const sep = this.url.includes("?") ? "&" : "?";
    return `${this.url}${sep}token=${encodeURIComponent(this._token)}`;
  }

  // Fetch a token if asked to, then open a socket (unless close() came in between).
  _dial() {
    this._timer = null;
    const gen = ++this._gen;
    if (!this._o.getToken) return this._open();
    const fresh = (fn) => (arg) => gen === this._gen && fn(arg); // close() came in between?
    Promise.resolve()
      .then(() => this._o.getToken())
      .then(
        fresh((token) => {
          this._token = token;
          this._open();
        }),
        fresh((err) => {
          this._emit("error", { code: "unauthorized", message: `getToken failed: ${err?.message ?? err}` });
          this._retry(0);
        }),
      );
  }

  _open() {
    let ws;
    try { ws = new this._WebSocket(this._address()); } catch (err) {
      return this._halt({ code: "bad_request", message: `cannot open WebSocket: ${err?.message ?? err}` });
    }
    this._ws = ws;
    ws.onopen = () => ws === this._ws && this._onOpen();
    ws.onmessage = (ev) => ws === this._ws && this._onFrame(ev.data);
    ws.onclose = (ev) => ws === this._ws && this._onClose(ev.code, ev.reason);
    ws.onerror = () => {}; // a close event follows
  }

  _onOpen() {
    this._openedAt = this._heardAt = this._now();
    this._pingedAt = null;
    this._armHeartbeat(this._o.heartbeat);
    this._startRefresh(jwtExp(this._token)); // the token this socket was opened with
    for (const channel of this._subs.keys()) this._sendSubscribe(channel);
    for (const req of this._pending.values()) if (!req.sent) this._transmit(req);
    this._setState("open");
  }

  _onClose(code, reason) {
    this._ws = null;
    this._joined.clear();
    this._stopHeartbeat();
    this._stopRefresh();
    if (this._isOpen() && this._now() - this._openedAt >= this._o.resetAfter) this._attempt = 0;
    this._openedAt = null;
    this._failPending((req) => req.sent, { code: "unavailable", message: `connection closed (${code})` });
    if (code === 1008) return this._halt({ code: "forbidden", message: "connection refused by policy (1008)" });
    if (code === 4001 && !this._o.getToken) {
      return this._halt({ code: "unauthorized", message: "token missing, invalid or expired (4001)" });
    }
    this._retry(code === 4029 ? this._o.rateLimitDelay : 0, code, reason);
  }

  // ---- heartbeat ----

  _armHeartbeat(ms) {
    this._stopHeartbeat();
    if (this._o.heartbeat > 0) this._hbTimer = this._setTimeout(() => this._checkHeartbeat(), ms);
  }

  _stopHeartbeat() {
    if (this._hbTimer !== null) this._clearTimeout(this._hbTimer);
    this._hbTimer = null;
  }

  // Runs at the next deadline: silent for `heartbeat` -> a ping; no answer (no frame at all)
  // within `heartbeatTimeout` after it -> the socket is dead: dropped (its late close event is
  // ignored) and replaced. A frame that came meanwhile only moves the deadline.
  _checkHeartbeat() {
    this._hbTimer = null;
    const { heartbeat, heartbeatTimeout } = this._o;
    const now = this._now();
    if (this._pingedAt !== null) {
      const waited = now - this._pingedAt;
      if (waited < heartbeatTimeout) return this._armHeartbeat(heartbeatTimeout - waited);
      const ws = this._ws;
      this._ws = null;
      try { ws.close(4000, "heartbeat timeout"); } catch { /* already closing */ }
      this._emit("error", { code: "timeout", message: `no answer to a ping within ${waited} ms: reconnecting` });
      return this._onClose(1006, "heartbeat timeout");
    }
    const silent = now - this._heardAt;
    if (silent < heartbeat) return this._armHeartbeat(heartbeat - silent);
    this._pingedAt = now;
    this._send({ op: "ping" });
    this._armHeartbeat(heartbeatTimeout);
  }

  // Schedule the next dial: full jitter over an exponentially growing, capped ceiling.
  _retry(extra, code, reason) {
    const ceiling = Math.min(this._o.backoffCap, this._o.backoffBase * 2 ** Math.min(this._attempt, 30));
    const delay = extra + Math.floor(this._random() * ceiling);
    this._attempt++;
    this._setState("reconnecting", { code, reason, delay });
    this._timer = this._setTimeout(() => this._dial(), delay);
  }

  _cancelReconnect() {
    if (this._timer !== null) this._clearTimeout(this._timer);
    this._timer = null;
  }

  // Stop for good (until connect()): retrying cannot help.
  _halt(error) {
    this._stopped = true;
    this._gen++;
    this._cancelReconnect();
    this._stopHeartbeat();
    this._stopRefresh();
    this._failPending(() => true, error);
    this._emit("error", error);
    this._setState("closed");
  }

  _setState(state, info) {
    if (state === this.state) return;
    this.state = state;
    this._emit("state", state, info);
  }

  // ---- requests ----

  _send(frame) { this._ws.send(JSON.stringify(frame)); }

  _transmit(req) {
    req.sent = true;
    this._send(req.frame);
  }

  _sendSubscribe(channel) {
    const sync = this._sync.get(channel);
    if (sync?.loading) return; // subscribed once the state is loaded
    const id = this._nextId++;
    const p = this._pos.get(channel);
    const resumed = Number.isInteger(p?.seq);
    const frame = { op: "subscribe", channel, id };
    const member = this._member.get(channel);
    if (member?.sub !== undefined) frame.sub = member.sub;
    if (member && "info" in member) frame.info = member.info;
    const ps = this._presence.get(channel);
    if (ps) ps.full = false; // told again by this subscription if it still is
    if (resumed) {
      frame.since = p.seq;
      if (p.epoch != null) frame.epoch = p.epoch;
      if (sync) frame.strict = true; // a state that cannot be caught up is loaded again
    }
    this._pending.set(id, { op: "subscribe", channel, resumed, sent: true });
    this._send(frame);
  }

  // A request whose reply settles a promise (publish, ping, presence); queued until the
  // socket is open.
  _request(frame, toValue) {
    return new Promise((resolve, reject) => this._ask(frame, toValue, resolve, reject));
  }

  // The same with plain callbacks, called as the reply is read (no microtask in between).
  _ask(frame, toValue, resolve, reject) {
    const id = this._nextId++;
    const req = { op: frame.op, channel: frame.channel, frame: { ...frame, id }, toValue, resolve, reject, sent: false, timer: null };
    const ms = this._o.requestTimeout;
    const timeout = { code: "timeout", message: `no reply to ${frame.op} in ${ms} ms` };
    if (ms > 0) req.timer = this._setTimeout(() => this._settle(id, null, timeout), ms);
    this._pending.set(id, req);
    if (this._isOpen()) this._transmit(req);
    return id;
  }

  _settle(id, reply, error) {
    const req = this._pending.get(id);
    if (!req) return;
    this._pending.delete(id);
    if (req.timer != null) this._clearTimeout(req.timer);
    if (req.resolve) error ? req.reject(error) : req.resolve(req.toValue(reply));
  }

  _failPending(which, error) {
    for (const [id, req] of [...this._pending]) if (which(req)) this._settle(id, null, error);
  }

  // ---- server frames ----

  _onFrame(raw) {
    this._heardAt = this._now();
    this._pingedAt = null;
    let m;
    try { m = JSON.parse(typeof raw === "string" ? raw : String(raw)); } catch { return; }
    if (!m || typeof m !== "object") return;
    const req = m.id != null ? this._pending.get(m.id) : undefined;
    switch (m.op) {
      case "message":
        return this._onMessage(m);
      case "subscribed":
        if (req) this._pending.delete(m.id);
        return this._onSubscribed(m, req);
      case "unsubscribed":
        if (req) return this._pending.delete(m.id);
        // without an id: the gateway ended the channel (e.g. a refreshed token forbids it)
        return m.id == null && this._onEnded(m);
      case "published":
      case "pong":
      case "presence":
      case "refreshed":
        return req && this._settle(m.id, m);
      case "join":
      case "leave":
        return this._onPresenceEvent(m);
      case "error":
        return this._onError(m, req);
    }
  }

  _onMessage(m) {
    const handlers = this._subs.get(m.channel);
    if (!handlers) return; // not (or no longer) subscribed
    if (this._sync.get(m.channel)?.loading) return; // replayed after the state it follows
    if (Number.isInteger(m.seq)) {
      const p = this._pos.get(m.channel);
      if (Number.isInteger(p?.seq) && m.seq <= p.seq) return; // already delivered
      this._pos.set(m.channel, { seq: m.seq, epoch: p?.epoch });
      this._dirty();
    }
    for (const h of [...handlers]) this._call(h.fn, m.data, m);
    this._emit("message", m);
  }

  _onSubscribed(m, req) {
    const channel = m.channel;
    if (!this._subs.has(channel)) return;
    const p = this._pos.get(channel);
    const head = Number.isInteger(m.seq) ? m.seq : undefined;
    // A new life of the channel's history (new epoch): its seqs start again, take the server's.
    // Otherwise seqs are never reused: never move the position backwards.
    const newEpoch = m.epoch != null && p?.epoch != null && m.epoch !== p.epoch;
    const reset = !m.recovered && (m.code === "history_reset" || newEpoch);
    const seq = reset || !Number.isInteger(p?.seq) ? head : Math.max(p.seq, head ?? 0);
    this._pos.set(channel, { seq, epoch: m.epoch ?? (reset ? undefined : p?.epoch) });
    this._dirty();
    // present from here on: (re)load who else is (events may have been missed meanwhile)
    if (req || !this._joined.has(channel)) {
      this._joined.add(channel);
      this._queryPresence(channel);
    }
    if (m.recovered) this._emit("recovered", { channel, replayed: m.replayed ?? 0 });
    else if (req?.resumed) this._emit("recovery_failed", { channel, code: m.code || "history_unavailable" });
    // Unasked: the server found the channel's history lost in part (a database failover) and
    // moved it to a new epoch while we were live; what we hold may be gone: reload.
    else if (!req && reset) {
      this._emit("recovery_failed", { channel, code: m.code || "history_reset" });
      // leave the channel, load the state again and subscribe from its position
      if (this._sync.has(channel)) {
        if (this._isOpen()) {
          const id = this._nextId++;
          this._pending.set(id, { op: "unsubscribe", channel, sent: true });
          this._send({ op: "unsubscribe", channel, id });
        }
        this._loadState(channel);
      }
    }
  }

  _onError(m, req) {
    const error = { code: m.code, message: m.message };
    if (m.code === "presence_full") {
      // still subscribed (its `subscribed` may follow), only not listed
      const channel = m.channel ?? req?.channel;
      const ps = this._presence.get(channel);
      if (ps && !ps.full) {
        ps.full = true;
        this._notifyPresence(channel, ps);
      }
      return this._emit("error", { ...error, op: "subscribe", channel });
    }
    if (req?.resolve) return this._settle(m.id, null, error);
    if (!req) return this._emit("error", m.channel ? { ...error, channel: m.channel } : error);
    this._pending.delete(m.id);
    if (req.op === "subscribe" && PERMANENT.has(m.code)) this._forget(req.channel);
    this._emit("error", { ...error, op: req.op, channel: req.channel });
    // a refused strict resume: the server left the channel; load the state and start over
    if (req.op === "subscribe" && m.code?.startsWith("history_") && this._sync.has(req.channel)) {
      this._loadState(req.channel);
    }
  }

  // The gateway ended a channel on its own (`unsubscribed` with a code, no id): it is over for
  // this client, like after unsubscribe(): not resumed after a reconnect.
  _onEnded(m) {
    const channel = m.channel;
    if (!this._forget(channel)) return;
    const code = m.code || "unsubscribed";
    const message = m.message || "channel ended by the gateway";
    this._emit("unsubscribed", { channel, code, message });
    this._emit("error", { code, message, channel });
  }

  // Drop a channel and all that is kept for it (position, state loading, presence).
  // false if it was not subscribed.
  _forget(channel) {
    if (!this._subs.delete(channel)) return false;
    this._pos.delete(channel);
    this._dropSync(channel);
    this._dropPresence(channel);
    this._dirty();
    return true;
  }

  // ---- token refresh ----

  // On open (with the exp of the socket's token) and after each `refreshed` (with the new
  // exp): schedule the next refresh of the connection's token, if it has an exp (Unix s) and
  // there is a function to get a new one.
  _startRefresh(exp) {
    this._stopRefresh();
    if (!(this._o.refreshToken || this._o.getToken) || !Number.isFinite(exp)) return;
    const r = { ws: this._ws, exp, timer: null, attempt: 0 };
    this._refresh = r;
    const left = exp * 1000 - this._now();
    const delay = Math.max(left / 2, Math.min(left * 0.85, left - this._o.refreshBefore));
    this._refreshIn(r, Math.max(REFRESH_MIN_DELAY, delay));
  }

  _stopRefresh() {
    if (this._refresh?.timer != null) this._clearTimeout(this._refresh.timer);
    this._refresh = null;
  }

  // Runs the refresh after `ms`, unless the token has expired by then (the gateway closes with
  // 4001 and the reconnect gets a new token).
  _refreshIn(r, ms) {
    ms = Math.max(0, Math.floor(ms));
    if (this._now() + ms >= r.exp * 1000) return;
    r.timer = this._setTimeout(() => {
      r.timer = null;
      this._runRefresh(r);
    }, ms);
  }

  _runRefresh(r) {
    const current = () => this._refresh === r && this._ws === r.ws && this._isOpen();
    const name = this._o.refreshToken ? "refreshToken" : "getToken";
    const fail = (error) => {
      if (!current()) return; // the connection went: the next one starts over
      this._emit("error", { ...error, op: "refresh" });
      if (error.code === "bad_request") return; // no auth on the gateway, or no token: stop
      const ceiling = Math.min(this._o.backoffCap, this._o.backoffBase * 2 ** Math.min(r.attempt++, 30));
      this._refreshIn(r, this._random() * ceiling);
    };
    Promise.resolve()
      .then(() => (this._o.refreshToken || this._o.getToken)())
      .then((token) => {
        if (!current()) return;
        if (typeof token !== "string" || token === "") throw new TypeError(`${name} gave no token`);
        this._ask({ op: "refresh", token }, (reply) => reply, (reply) => {
          if (!current()) return;
          this._token = token; // the connection's token now, and the next connection's
          const exp = Number.isFinite(reply.exp) ? reply.exp : jwtExp(token);
          this._emit("refreshed", { exp });
          this._startRefresh(exp);
        }, fail);
      })
      .catch((err) => fail({ code: "unauthorized", message: `${name} failed: ${err?.message ?? err}` }));
  }

  // ---- state loading (getState) ----

  // Loads the state of a getState channel, then (when open) subscribes strictly from its
  // position. The channel is not subscribed at the gateway meanwhile, and anything of it that
  // still comes is ignored: the resume after the load replays what the state does not hold.
  // A failed load is retried with backoff; one load at a time.
  _loadState(channel) {
    const sync = this._sync.get(channel);
    if (!sync || sync.loading) return;
    sync.loading = true;
    this._runLoad(channel, sync);
  }

  _runLoad(channel, sync) {
    const current = () => this._sync.get(channel) === sync; // not unsubscribed meanwhile
    Promise.resolve()
      .then(() => sync.getState(channel))
      .then((loaded) => {
        if (!current()) return;
        if (!loaded || !Number.isInteger(loaded.seq) || loaded.seq < 0) {
          throw new TypeError("getState must resolve to {state, seq, epoch} with an integer seq");
        }
        sync.loading = false;
        sync.attempt = 0;
        this._pos.set(channel, { seq: loaded.seq, epoch: loaded.epoch ?? undefined });
        this._dirty();
        if (sync.onState) this._call(sync.onState, loaded.state, { seq: loaded.seq, epoch: loaded.epoch });
        if (this._isOpen()) this._sendSubscribe(channel);
      })
      .catch((err) => {
        if (!current()) return;
        const ceiling = Math.min(this._o.backoffCap, this._o.backoffBase * 2 ** Math.min(sync.attempt++, 30));
        this._emit("error", { code: "unavailable", message: `getState failed: ${err?.message ?? err}`, channel });
        sync.timer = this._setTimeout(() => {
          sync.timer = null;
          if (current()) this._runLoad(channel, sync);
        }, Math.floor(this._random() * ceiling));
      });
  }

  _dropSync(channel) {
    const sync = this._sync.get(channel);
    if (sync?.timer != null) this._clearTimeout(sync.timer);
    this._sync.delete(channel);
  }

  // ---- presence ----

  // A handler with onPresence: the channel's list is kept from now on (loaded at once when the
  // channel is already subscribed); a list already loaded is handed to the new handler.
  _watchPresence(channel, handler) {
    let ps = this._presence.get(channel);
    if (!ps) {
      ps = { members: new Map(), anonymous: 0, loaded: false, full: false, disabled: false,
        query: null, buffer: null, attempt: 0, timer: null };
      this._presence.set(channel, ps);
      if (this._joined.has(channel)) this._queryPresence(channel);
    } else if (ps.loaded) {
      this._call(handler.onPresence, this._memberList(ps), this._presenceView(channel, ps));
    }
  }

  // Loads the member list of a watched channel (one query at a time; a newer one replaces an
  // older one). Events that arrive while it is out are applied to the list at once and again
  // on top of the reply, which may or may not include them (join: upsert, leave: delete).
  _queryPresence(channel) {
    const ps = this._presence.get(channel);
    if (!ps || ps.disabled || !this._isOpen()) return;
    if (ps.timer !== null) this._clearTimeout(ps.timer);
    ps.timer = null;
    const q = {};
    ps.query = q;
    ps.buffer = [];
    const current = () => this._presence.get(channel) === ps && ps.query === q;
    this._ask({ op: "presence", channel }, (reply) => reply, (reply) => {
      if (!current()) return;
      const buffered = ps.buffer;
      ps.query = ps.buffer = null;
      ps.attempt = 0;
      ps.members = new Map();
      const list = Array.isArray(reply.members) ? reply.members : [];
      for (const mb of list) if (validMember(mb)) ps.members.set(mb.sub, { sub: mb.sub, info: mb.info ?? null });
      ps.anonymous = Number.isInteger(reply.count) ? Math.max(0, reply.count - list.length) : 0;
      for (const ev of buffered) applyEvent(ps, ev);
      if (this._listed(channel, ps)) ps.full = false;
      ps.loaded = true;
      this._notifyPresence(channel, ps);
    }, (err) => {
      if (!current()) return;
      ps.query = ps.buffer = null;
      if (!this._isOpen()) return; // the connection went: asked again after the next `subscribed`
      this._emit("error", { code: err.code, message: err.message, op: "presence", channel });
      if (PRESENCE_PERMANENT.has(err.code)) {
        ps.disabled = true;
        return;
      }
      const ceiling = Math.min(this._o.backoffCap, this._o.backoffBase * 2 ** Math.min(ps.attempt++, 30));
      ps.timer = this._setTimeout(() => {
        ps.timer = null;
        if (this._presence.get(channel) === ps && this._joined.has(channel)) this._queryPresence(channel);
      }, Math.floor(this._random() * ceiling));
    });
  }

  _onPresenceEvent(m) {
    const handlers = this._subs.get(m.channel);
    if (!handlers || !validMember(m.member)) return;
    const join = m.op === "join";
    const ps = this._presence.get(m.channel);
    let member = join ? { sub: m.member.sub, info: m.member.info ?? null } : { sub: m.member.sub };
    if (ps) {
      if (!join && ps.members.has(member.sub)) member = { ...ps.members.get(member.sub) };
      ps.buffer?.push({ join, member });
      let changed = applyEvent(ps, { join, member });
      if (join && ps.full && this._listed(m.channel, ps)) changed = !(ps.full = false); // a place freed
      if (changed && ps.loaded) this._notifyPresence(m.channel, ps);
    }
    for (const h of [...handlers]) {
      const fn = join ? h.onJoin : h.onLeave;
      if (fn) this._call(fn, { ...member });
    }
    this._emit(m.op, { channel: m.channel, member: { ...member } });
  }

  // This client's user is on the list (known only when it gave a sub).
  _listed(channel, ps) {
    const sub = this._member.get(channel)?.sub;
    return sub !== undefined && ps.members.has(sub);
  }

  _memberList(ps) {
    return [...ps.members.values()].sort((a, b) => (a.sub < b.sub ? -1 : a.sub > b.sub ? 1 : 0)).map((x) => ({ ...x }));
  }

  _presenceView(channel, ps) {
    return { channel, count: ps.members.size + ps.anonymous, anonymous: ps.anonymous, full: ps.full };
  }

  _notifyPresence(channel, ps) {
    const handlers = this._subs.get(channel);
    if (!handlers) return;
    for (const h of [...handlers]) {
      if (h.onPresence) this._call(h.onPresence, this._memberList(ps), this._presenceView(channel, ps));
    }
  }

  _dropPresence(channel) {
    const ps = this._presence.get(channel);
    if (ps?.timer != null) this._clearTimeout(ps.timer);
    this._presence.delete(channel);
    this._member.delete(channel);
    this._joined.delete(channel);
  }

  // ---- events ----

  _emit(event, ...args) {
    for (const fn of [...(this._listeners.get(event) ?? [])]) this._call(fn, ...args);
  }

  // An application callback that throws must not break the client.
  _call(fn, ...args) {
    try { fn(...args); } catch (err) { (globalThis.reportError ?? console.error)(err); }
  }

  // ---- persistence ----

  _load() {
    const storage = this._o.storage;
    if (!storage) return;
    try {
      const saved = JSON.parse(storage.getItem(this._o.storageKey) || "{}");
      for (const [channel, p] of Object.entries(saved)) {
        if (Number.isInteger(p?.seq)) this._pos.set(channel, { seq: p.seq, epoch: p.epoch });
      }
    } catch { /* unreadable: start without positions */ }
  }

  _dirty() {
    if (!this._o.storage) return;
    if (!(this._o.persistDelay > 0)) return this._save();
    if (this._saveTimer === null) this._saveTimer = this._setTimeout(() => this._save(), this._o.persistDelay);
  }

  _save() {
    if (this._saveTimer !== null) this._clearTimeout(this._saveTimer);
    this._saveTimer = null;
    const storage = this._o.storage;
    if (!storage) return;
    const out = {};
    for (const [channel, { seq, epoch }] of this._pos) {
      if (Number.isInteger(seq)) out[channel] = epoch == null ? { seq } : { seq, epoch };
    }
    try { storage.setItem(this._o.storageKey, JSON.stringify(out)); } catch { /* quota: page only */ }
  }
}

// The `presence` option of subscribe(): {sub?, info?}, checked before anything is sent.
function checkMember(p) {
  if (!p || typeof p !== "object") throw new TypeError("presence must be an object {sub, info}");
  const out = {};
  if (p.sub !== undefined) {
    const bytes = typeof p.sub === "string" ? new TextEncoder().encode(p.sub).length : 0;
    if (bytes < 1 || bytes > SUB_MAX_BYTES) throw new TypeError(`presence.sub must be a string of 1-${SUB_MAX_BYTES} bytes`);
    out.sub = p.sub;
  }
  if (p.info !== undefined) out.info = p.info;
  return out;
}

// The `exp` claim (Unix seconds) of a JWT, read without checking the signature; undefined for
// anything else (not three dot-separated parts, a payload that is not base64url JSON, no
// numeric exp).
function jwtExp(token) {
  if (typeof token !== "string") return undefined;
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
    const payload = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    return Number.isFinite(payload?.exp) ? payload.exp : undefined;
  } catch {
    return undefined;
  }
}

function validMember(m) {
  return !!m && typeof m === "object" && typeof m.sub === "string" && m.sub !== "";
}

// A join (upsert by sub) or leave (delete by sub) applied to a member list; true if it changed.
function applyEvent(ps, { join, member }) {
  if (!join) return ps.members.delete(member.sub);
  const was = ps.members.get(member.sub);
  if (was && JSON.stringify(was.info) === JSON.stringify(member.info)) return false;
  ps.members.set(member.sub, { sub: member.sub, info: member.info ?? null });
  return true;
}

export default Herald;
