// Real processes for the browser tests: redis-server, PostgreSQL, herald gateways and the demo
// publisher, each on a free 127.0.0.1 port in a temporary folder, started through
// `setpriv --pdeathsig KILL` (they die with this process even if it is killed) and stopped by
// PID. No mocks.
import { chromium } from "playwright-core";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

export function heraldBin() {
  const bin = process.env.HERALD_BIN || path.join(ROOT, "build", "gateway", "herald");
  return path.isAbsolute(bin) ? bin : path.join(ROOT, bin);
}

export async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => srv.once("error", reject).listen(0, "127.0.0.1", resolve));
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** Polls `fn` until it returns a truthy value (returned), or throws after `timeout` ms. */
export async function waitFor(fn, { timeout = 20000, interval = 100, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

function pgBin(name) {
  const base = "/usr/lib/postgresql";
  const versions = fs.existsSync(base) ? fs.readdirSync(base).sort((a, b) => Number(a) - Number(b)) : [];
  for (const v of versions.reverse()) {
    const p = path.join(base, v, "bin", name);
    if (fs.existsSync(p)) return p;
  }
  throw new Error(`PostgreSQL's ${name} not found: apt-get install postgresql`);
}

async function tcpOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => { s.destroy(); resolve(true); });
    s.once("error", () => resolve(false));
  });
}

class Proc {
  constructor(name, argv, { env, logPath, user, cwd }) {
    this.name = name;
    this.logPath = logPath;
    const fd = fs.openSync(logPath, "a");
    const pre = ["setpriv", "--pdeathsig", "KILL"];
    if (user) pre.push(`--reuid=${user}`, `--regid=${user}`, "--init-groups");
    this.child = spawn(pre[0], [...pre.slice(1), "--", ...argv], { env, cwd, stdio: ["ignore", fd, fd] });
    fs.closeSync(fd);
    this.pid = this.child.pid;
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
    this.exitCode = undefined;
    this.exited.then((r) => { this.exitCode = r; });
  }

  alive() { return this.exitCode === undefined; }

  log() { try { return fs.readFileSync(this.logPath, "utf8"); } catch { return ""; } }

  /** Sends `signal`; after `grace` ms sends SIGKILL. Resolves when the process is gone. */
  async stop(signal = "SIGTERM", grace = 10000) {
    if (!this.alive()) return this.exitCode;
    try { process.kill(this.pid, signal); } catch { /* gone */ }
    const t = setTimeout(() => { try { process.kill(this.pid, "SIGKILL"); } catch { /* gone */ } }, grace);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }
}

// Gateway settings every test stack gets (see herald()): presence on the demo's chat rooms, with
// a short linger and TTL (durations: a bare number would be seconds).
export const PRESENCE_ENV = {
  HERALD_PRESENCE: "chat:*",
  HERALD_PRESENCE_LINGER: "500ms",
  HERALD_PRESENCE_TTL: "3000ms",
};

export class Stack {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-browser-"));
    fs.chmodSync(this.dir, 0o755);
    this.procs = [];
    // the children get a clean environment for Herald: only what each one is given
    this.baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_")));
  }

  _start(name, argv, opts = {}) {
    const p = new Proc(name, argv, { env: this.baseEnv, logPath: path.join(this.dir, `${name}.log`), ...opts });
    this.procs.push(p);
    return p;
  }

  async redis() {
    const port = await freePort();
    const p = this._start(`redis-${port}`, ["redis-server", "--port", String(port), "--bind", "127.0.0.1",
      "--save", "", "--appendonly", "no", "--dir", this.dir]);
    await waitFor(() => tcpOpen(port), { what: "redis-server" });
    p.url = `redis://127.0.0.1:${port}/0`;
    return p;
  }

  async postgres() {
    const port = await freePort();
    const root = process.getuid() === 0;
    const user = root ? "postgres" : undefined;
    const pgdir = path.join(this.dir, "pg");
    fs.mkdirSync(pgdir);
    if (root) {
      const uid = Number(spawnSync("id", ["-u", "postgres"]).stdout);
      const gid = Number(spawnSync("id", ["-g", "postgres"]).stdout);
      fs.chownSync(pgdir, uid, gid);
    }
    const as = root ? ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] : [];
    const init = spawnSync(as[0] ?? pgBin("initdb"), [...as.slice(1), ...(root ? [pgBin("initdb")] : []),
      "-D", path.join(pgdir, "data"), "-U", "herald", "-A", "trust", "-E", "UTF8"], { encoding: "utf8" });
    if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
    const p = this._start(`postgres-${port}`, [pgBin("postgres"), "-D", path.join(pgdir, "data"), "-p", String(port),
      "-k", pgdir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"],
    { user, cwd: pgdir });
    await waitFor(() => spawnSync(pgBin("pg_isready"), ["-q", "-h", "127.0.0.1", "-p", String(port)]).status === 0,
      { timeout: 30000, what: "PostgreSQL" });
    const c = spawnSync(pgBin("createdb"), ["-h", "127.0.0.1", "-p", String(port), "-U", "herald", "herald"], { encoding: "utf8" });
    if (c.status !== 0) throw new Error(`createdb failed: ${c.stderr}`);
    p.url = `postgresql://herald@127.0.0.1:${port}/herald`;
    return p;
  }

  /** A gateway serving web-demo/ with history; waits until /readyz answers 200 and its
   * PostgreSQL pool is connected (/readyz does not wait for PostgreSQL). Presence is on for the
   * demo's chat rooms (as deploy/run-local.sh runs it), with a short linger and TTL so that
   * leaves come quickly; `env` adds or overrides settings (a value of null removes one). */
  async herald({ redis, pg, port, instance, migrate = false, args = [], env = {} }) {
    port = port ?? (await freePort());
    const argv = [heraldBin(), "--listen", `127.0.0.1:${port}`, "--redis-url", redis.url,
      "--database-url", pg.url, "--static-dir", path.join(ROOT, "web-demo"), "--instance-id", instance,
      "--drain-seconds", "2", ...args];
    if (migrate) argv.push("--migrate-on-start");
    const settings = { ...PRESENCE_ENV, ...env };
    const genv = { ...this.baseEnv };
    for (const [k, v] of Object.entries(settings)) if (v != null) genv[k] = String(v);
    const p = this._start(`herald-${instance}`, argv, { env: genv });
    p.port = port;
    p.base = `http://127.0.0.1:${port}`;
    p.wsUrl = `ws://127.0.0.1:${port}/ws`;
    await waitFor(async () => {
      if (!p.alive()) throw new Error(`herald ${instance} exited: ${p.log().slice(-2000)}`);
      const r = await fetch(`${p.base}/readyz`).catch(() => null);
      if (r?.status !== 200) return false;
      const m = await fetch(`${p.base}/metrics`).then((x) => x.text()).catch(() => "");
      return /^herald_db_up 1$/m.test(m);
    }, { timeout: 60000, what: `herald ${instance} ready` });
    return p;
  }

  publisher({ urls, rate = 20, bots = 6, seed = 7 }) {
    const argv = ["/usr/bin/python3", path.join(ROOT, "deploy", "demo-publisher.py"), "--rate", String(rate),
      "--bots", String(bots), "--seed", String(seed)];
    for (const u of urls) argv.push("--url", u);
    return this._start("publisher", argv, {});
  }

  /** Sanitizer reports in any gateway's log (an ASan/UBSan build writes them to stderr). */
  sanitizerReports() {
    const found = [];
    for (const p of this.procs.filter((x) => x.name.startsWith("herald-"))) {
      for (const marker of ["ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"]) {
        if (p.log().includes(marker)) found.push(`${p.name}: ${marker}`);
      }
    }
    return found;
  }

  /** Stops everything, newest first. */
  async stopAll() {
    for (const p of [...this.procs].reverse()) await p.stop("SIGTERM", 10000);
  }

  /** Debian's headless Chromium with a fresh profile in the stack's folder. */
  async browser({ viewport, timeout = 60000 } = {}) {
    const userDataDir = fs.mkdtempSync(path.join(this.dir, "chromium-"));
    const browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
      ...(viewport ? { viewport } : {}),
    });
    browser.setDefaultTimeout(timeout);
    return browser;
  }

  /** After the tests: closes the browser, stops everything, keeps only the logs (for a look
   * after a failure) and returns the sanitizer reports of the gateways' logs. */
  async finish(browser, { keepLogsOnly = true } = {}) {
    await browser?.close().catch(() => {});
    await this.stopAll();
    const reports = this.sanitizerReports();
    if (keepLogsOnly) {
      for (const d of fs.readdirSync(this.dir)) {
        if (!d.endsWith(".log")) fs.rmSync(path.join(this.dir, d), { recursive: true, force: true });
      }
      console.log(`logs: ${this.dir}`);
    }
    return reports;
  }
}
