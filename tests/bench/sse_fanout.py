#!/usr/bin/python3
"""sse_fanout.py: fan-out to N Server-Sent Events subscribers beside N WebSocket subscribers,
one gateway process, same channel, same messages, A/B in the same run.

For each subscriber count (--subs, default "1000,5000") and each repeat (--repeats, default 2;
the order of the sides alternates between repeats) it measures, per side:
  ws    N WebSocket clients ({"op":"subscribe","channel":C} over ws://127.0.0.1:P/ws);
  sse   N SSE clients (GET /v1/channels/C/stream, Accept: text/event-stream);
  both  (with --together) N of each at once: how the one core is shared between them.
Every side gets a fresh gateway (one process, one core: HERALD_WORKERS unset, pinned with
taskset to --herald-cpus) on the same redis-server, so that its RSS per connection is its own:
  1. the receiver (sse_fanout_recv.c, built here with `cc -O2`: one epoll process that counts
     a marker each payload carries once, no JSON parsing) opens the N clients and waits until
     every one has the gateway's `subscribed` answer; the gateway's RSS before and after is the
     idle RSS per connection;
  2. the publisher (this process, pipelined PUBLISH on a raw socket) sends raw (non-durable)
     JSON payloads of --payload-bytes to the channel for --warmup + --seconds: as fast as the
     gateway delivers them (--rate 0, the default: at most --window messages per subscriber
     published and not yet received by the clients), or at a fixed --rate messages/s;
  3. it reports the deliveries counted by the clients per second of the measured window,
     the gateway's CPU (% of one core, /proc) and deliveries per gateway CPU-second (steadier
     than rates when other work shares the machine), the receiver's and the machine's CPU,
     then waits (bounded) for the rest to arrive and reads the gateway's RSS after the load
     and its slow-consumer counters.
Runs on 127.0.0.1 only; every process it starts (redis-server, the gateways, the receiver) is
stopped by PID at the end, also on Ctrl-C or an error. It never fails on speed: exit 0 with a
report, 2 when the run could not be set up. --smoke (20 subscribers, 1 s, no pinning) asserts
only that messages arrived on both transports (exit 1 otherwise).

    /usr/bin/python3 tests/bench/sse_fanout.py [--herald-bin build/gateway/herald]
        [--subs 1000,5000] [--seconds 10] [--warmup 2] [--repeats 2] [--rate 0]
        [--payload-bytes 100] [--together] [--json out.json] [--smoke]

Needs redis-server, cc, taskset (util-linux) and the gateway (HERALD_BIN or --herald-bin).
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CHANNEL = "fan"
# the receiver's shared counters (sse_fanout_recv.c)
C_WS_READY, C_SSE_READY, C_WS_MSG, C_SSE_MSG, C_WS_CLOSED, C_SSE_CLOSED, C_ERR = range(7)
C_SSE_EVENTS, C_WS_BYTES, C_SSE_BYTES, C_READS, C_SSE_COMMENTS = range(7, 12)
TICK = 0.001          # s between two window checks of the publisher


class SetupError(Exception):
    """The run could not be set up (exit 2)."""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--herald-bin", default=os.environ.get("HERALD_BIN",
                                                          os.path.join(ROOT, "build", "gateway",
                                                                       "herald")))
    p.add_argument("--subs", default="1000,5000", help="subscriber counts per side, in order")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per side")
    p.add_argument("--warmup", type=float, default=2.0, help="published, not measured")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--rate", type=float, default=0.0,
                   help="messages/s published; 0: as fast as the gateway delivers them")
    p.add_argument("--window", type=int, default=50,
                   help="with --rate 0: messages per subscriber published, not yet received")
    p.add_argument("--batch", type=int, default=10, help="PUBLISHes per pipelined write")
    p.add_argument("--payload-bytes", type=int, default=100)
    p.add_argument("--sides", default="ws,sse", help="sides per repeat (ws, sse, both)")
    p.add_argument("--together", action="store_true", help="also run the side `both`")
    p.add_argument("--herald-cpus", default="0", help="taskset list of the gateway ('' none)")
    p.add_argument("--client-cpus", default="1",
                   help="taskset list of redis-server and the receiver ('' none)")
    p.add_argument("--json", help="write every number to this file")
    p.add_argument("--smoke", action="store_true",
                   help="20 subscribers, 1 s, no pinning; assert only that messages arrived")
    p.add_argument("--keep-tmp", action="store_true")
    a = p.parse_args()
    if a.smoke:
        a.subs, a.seconds, a.warmup, a.repeats = "20", 1.0, 0.5, 1
        a.herald_cpus = a.client_cpus = ""
    a.subs = [int(x) for x in a.subs.split(",") if x]
    a.sides = [s for s in a.sides.split(",") if s]
    if a.together and "both" not in a.sides:
        a.sides.append("both")
    if (os.cpu_count() or 1) < 2:
        a.herald_cpus = a.client_cpus = ""
    if not a.subs or min(a.subs) < 1 or a.seconds <= 0 or a.repeats < 1 or a.batch < 1:
        p.error("need subs >= 1, seconds > 0, repeats >= 1, batch >= 1")
    if any(s not in ("ws", "sse", "both") for s in a.sides):
        p.error("sides are ws, sse and both")
    return a


# ---------------------------------------------------------------------------------------------
# Processes


class Procs:
    """Every process this script starts, stopped by PID (TERM, then KILL after 5 s)."""

    def __init__(self):
        self.live = []

    def start(self, argv, log, cpus="", env=None):
        if cpus:
            argv = ["taskset", "-c", cpus] + argv
        f = open(log, "ab")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL)
        f.close()
        self.live.append(p)
        return p

    def stop(self, p):
        if p is None or p not in self.live:
            return
        self.live.remove(p)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def stop_all(self):
        for p in list(reversed(self.live)):
            self.stop(p)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_seconds():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def http_get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except Exception:   # noqa: BLE001 - not up yet, refused, 503: all "not yet"
        return None, ""


def metric(body, name):
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_until(pred, timeout, what, proc=None):
    deadline = time.monotonic() + timeout
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise SetupError(f"{what}: the process exited ({proc.returncode})")
        if time.monotonic() > deadline:
            raise SetupError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def build_receiver(tmp):
    out = os.path.join(tmp, "sse_fanout_recv")
    src = os.path.join(HERE, "sse_fanout_recv.c")
    r = subprocess.run(["cc", "-O2", "-o", out, src], capture_output=True, text=True,
                       timeout=120)
    if r.returncode:
        raise SetupError(f"cc {src}: {r.stderr}")
    return out


class Counters:
    """The receiver's shared counters (a 128-byte file it maps)."""

    def __init__(self, path):
        self.path = path
        with open(path, "wb") as f:
            f.write(b"\0" * 128)
        self.f = open(path, "rb")

    def read(self):
        self.f.seek(0)
        b = self.f.read(128)
        return [int.from_bytes(b[i:i + 8], "little") for i in range(0, 128, 8)]

    def close(self):
        self.f.close()


# ---------------------------------------------------------------------------------------------
# Publisher


class Publisher:
    """Raw PUBLISHes of one channel on one pipelined socket; replies are read as they come
    (each is the number of subscribers it reached: the gateway's one subscription)."""

    def __init__(self, port, payload_bytes):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(CHANNEL), CHANNEL.encode())
        self.pad = b"x" * max(0, payload_bytes - 30)
        self.n = 0
        self.replies = self.no_receivers = 0
        self.rbuf = b""

    def send(self, count):
        out = []
        for _ in range(count):
            body = b'{"bn":%d,"pad":"%s"}' % (self.n, self.pad)
            out.append(self.head + b"$%d\r\n%s\r\n" % (len(body), body))
            self.n += 1
        data = b"".join(out)
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)
        self.drain_replies()

    def drain_replies(self):
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise SetupError("redis closed the publisher's connection")
                self.rbuf += chunk
        except BlockingIOError:
            pass
        lines = self.rbuf.split(b"\r\n")
        self.rbuf = lines.pop()
        for line in lines:
            self.replies += 1
            if line.startswith(b"-"):
                raise SetupError(f"PUBLISH: {line.decode()}")
            if line == b":0":
                self.no_receivers += 1

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# One side


def start_herald(args, procs, tmp, rport, conns):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(HERALD_MAX_CONNECTIONS_PER_IP=str(conns + 100),
               HERALD_MAX_CONNECTIONS=str(conns + 1000))
    argv = [args.herald_bin, "--listen", f"127.0.0.1:{port}",
            "--redis-url", f"redis://127.0.0.1:{rport}/0", "--log-level", "warn"]
    p = procs.start(argv, os.path.join(tmp, "herald.log"), args.herald_cpus, env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_get(base + "/healthz")[0] == 200, 15, "herald /healthz", p)
    wait_until(lambda: http_get(base + "/readyz")[0] == 200, 15, "herald /readyz", p)
    return p, port, base


def run_side(args, procs, tmp, rport, recv_bin, n, side):
    n_ws = n if side in ("ws", "both") else 0
    n_sse = n if side in ("sse", "both") else 0
    total = n_ws + n_sse
    h, port, base = start_herald(args, procs, tmp, rport, total)
    time.sleep(0.5)
    rss0 = status_kib(h.pid, "VmRSS")
    ctr = Counters(os.path.join(tmp, f"counters-{side}-{n}"))
    recv = procs.start([recv_bin, "--port", str(port), "--channel", CHANNEL, "--ws", str(n_ws),
                        "--sse", str(n_sse), "--counters", ctr.path, "--sources", "4"],
                       os.path.join(tmp, "recv.log"), args.client_cpus)
    pub = None
    try:
        def ready():
            c = ctr.read()
            if c[C_ERR] or c[C_WS_CLOSED] or c[C_SSE_CLOSED]:
                raise SetupError(f"{side} {n}: {c[C_ERR]} clients failed, "
                                 f"{c[C_WS_CLOSED] + c[C_SSE_CLOSED]} closed while connecting")
            return c[C_WS_READY] == n_ws and c[C_SSE_READY] == n_sse
        wait_until(ready, 60 + total / 100, f"{side}: {total} clients subscribed", recv)
        time.sleep(1.0)
        rss_idle = status_kib(h.pid, "VmRSS")
        pub = Publisher(rport, args.payload_bytes)
        pids = {"gateway": h.pid, "receiver": recv.pid, "publisher": os.getpid()}
        res = drive(args, pub, ctr, n_ws, n_sse, pids)
        # what is still on its way: bounded wait for every published message to arrive
        want_ws, want_sse = pub.n * n_ws, pub.n * n_sse
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            c = ctr.read()
            if c[C_WS_MSG] >= want_ws and c[C_SSE_MSG] >= want_sse:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        pub.drain_replies()
        c = ctr.read()
        _, body = http_get(base + "/metrics")
        res.update(
            side=side, subs=n, ws_clients=n_ws, sse_clients=n_sse, published=pub.n,
            no_receivers=pub.no_receivers,
            lost_ws=want_ws - c[C_WS_MSG], lost_sse=want_sse - c[C_SSE_MSG],
            closed_ws=c[C_WS_CLOSED], closed_sse=c[C_SSE_CLOSED],
            sse_events=c[C_SSE_EVENTS], sse_comments=c[C_SSE_COMMENTS],
            ws_bytes=c[C_WS_BYTES], sse_bytes=c[C_SSE_BYTES], reads=c[C_READS],
            rss_before_kib=rss0, rss_idle_kib=rss_idle,
            rss_after_kib=status_kib(h.pid, "VmRSS"), rss_peak_kib=status_kib(h.pid, "VmHWM"),
            rss_idle_per_conn_kib=(rss_idle - rss0) / total,
            rss_after_per_conn_kib=(status_kib(h.pid, "VmRSS") - rss0) / total,
            frames_out=metric(body, "herald_frames_out_total"),
            writes=metric(body, "herald_writes_total"),
            stream_messages=metric(body, "herald_http_stream_messages_total"),
            stream_slow_closes=metric(body, "herald_http_stream_slow_closes_total"),
            ws_slow_closes=metric(body, "herald_slow_consumer_closes_total"))
        return res
    finally:
        if pub:
            pub.close()
        procs.stop(recv)
        procs.stop(h)
        ctr.close()


def drive(args, pub, ctr, n_ws, n_sse, pids):
    """Publish for warmup + seconds; rates and CPU over the measured seconds only."""
    subs = n_ws + n_sse
    window = args.window * subs
    start = time.monotonic()
    t_measure, t_end = start + args.warmup, start + args.warmup + args.seconds
    mark = None
    capped = 0   # --rate: ticks the safety cap held the publisher back

    def snap():
        c = ctr.read()
        cpu = {k: cpu_seconds(p) for k, p in pids.items()}
        cpu["redis"] = cpu_seconds(args.redis_pid)
        cpu["machine"] = machine_busy_seconds()
        return time.monotonic(), c[C_WS_MSG], c[C_SSE_MSG], pub.n, cpu

    while (now := time.monotonic()) < t_end:
        if mark is None and now >= t_measure:
            mark = snap()
        c = ctr.read()
        outstanding = pub.n * subs - c[C_WS_MSG] - c[C_SSE_MSG]
        if args.rate > 0:
            due = int(args.rate * (now - start)) - pub.n
            if due > 0 and outstanding < 20 * window:
                pub.send(min(due, 10 * args.batch))
                continue
            capped += due > 0
        elif outstanding + args.batch * subs <= window:
            pub.send(args.batch)
            continue
        pub.drain_replies()
        time.sleep(TICK)
    end = snap()
    span = end[0] - mark[0]
    cpu = {k: 100 * (end[4][k] - mark[4][k]) / span for k in end[4]
           if end[4][k] is not None and mark[4][k] is not None}
    ws = (end[1] - mark[1]) / span
    sse = (end[2] - mark[2]) / span
    return {"span_s": span, "published_per_s": (end[3] - mark[3]) / span,
            "delivered_ws_per_s": ws, "delivered_sse_per_s": sse,
            "delivered_per_s": ws + sse, "cpu_pct": cpu,
            "per_gateway_cpu_s": (ws + sse) / (cpu["gateway"] / 100) if cpu.get("gateway")
            else None, "rate_capped_ticks": capped}


# ---------------------------------------------------------------------------------------------
# Report


def report(args, runs):
    mode = (f"fixed {args.rate:g} msg/s" if args.rate > 0
            else f"as fast as delivered (window {args.window} msgs/subscriber)")
    print(f"\n{args.payload_bytes}-byte raw payloads on one channel, {mode}, "
          f"{args.seconds:g} s measured after {args.warmup:g} s, one gateway process "
          f"(cpus '{args.herald_cpus}'), receiver + redis on cpus '{args.client_cpus}', "
          f"{os.cpu_count()} cores:\n")
    print("| subs | side | repeat | published msg/s | delivered/s (WS + SSE) | gateway CPU % | "
          "deliveries per gateway CPU-s | receiver CPU % | machine busy % of "
          f"{100 * (os.cpu_count() or 1)} | RSS idle KiB/conn | RSS after load KiB/conn | "
          "lost WS/SSE | closes WS/SSE |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        cpu = r["cpu_pct"]
        split = (f"{r['delivered_ws_per_s']:,.0f} + {r['delivered_sse_per_s']:,.0f}"
                 if r["side"] == "both" else f"{r['delivered_per_s']:,.0f}")
        per = f"{r['per_gateway_cpu_s']:,.0f}" if r["per_gateway_cpu_s"] else "-"
        print(f"| {r['subs']:,} | {r['side']} | {r['repeat']} | {r['published_per_s']:,.0f} | "
              f"{split} | {cpu.get('gateway', 0):.0f} | {per} | {cpu.get('receiver', 0):.0f} | "
              f"{cpu.get('machine', 0):.0f} | {r['rss_idle_per_conn_kib']:.2f} | "
              f"{r['rss_after_per_conn_kib']:.2f} | {r['lost_ws']}/{r['lost_sse']} | "
              f"{r['closed_ws']}/{r['closed_sse']} |")
    print()
    for n in args.subs:
        for side in args.sides:
            rs = [r for r in runs if r["subs"] == n and r["side"] == side]
            if not rs:
                continue
            d = [r["delivered_per_s"] for r in rs]
            e = [r["per_gateway_cpu_s"] or 0 for r in rs]
            print(f"{n:>6,} {side:>4}: delivered/s {min(d):,.0f} .. {max(d):,.0f}; "
                  f"per gateway CPU-s {min(e):,.0f} .. {max(e):,.0f} ({len(rs)} runs)")
    for r in runs:
        notes = []
        if r["no_receivers"]:
            notes.append(f"{r['no_receivers']} PUBLISHes reached no subscriber")
        if r["stream_slow_closes"]:
            notes.append(f"{r['stream_slow_closes']:.0f} SSE slow-consumer closes")
        if r["ws_slow_closes"]:
            notes.append(f"{r['ws_slow_closes']:.0f} WS slow-consumer closes")
        if r["rate_capped_ticks"]:
            notes.append("the fixed rate was held back by the safety cap (gateway behind)")
        if notes:
            print(f"note {r['subs']} {r['side']} #{r['repeat']}: " + "; ".join(notes))


def main():
    args = parse_args()
    if not os.access(args.herald_bin, os.X_OK):
        print(f"RUN FAILED: not executable: {args.herald_bin}", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * max(args.subs) + 1000
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="herald-sse-fanout-")
    runs = []
    try:
        recv_bin = build_receiver(tmp)
        rport = free_port()
        redis = procs.start(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            os.path.join(tmp, "redis.log"), args.client_cpus)
        args.redis_pid = redis.pid

        def redis_up():
            try:
                with socket.create_connection(("127.0.0.1", rport), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        wait_until(redis_up, 10, "redis-server", redis)
        for n in args.subs:
            for rep in range(1, args.repeats + 1):
                order = args.sides if rep % 2 else list(reversed(args.sides))
                for side in order:
                    print(f"== {n} subscribers, {side}, repeat {rep} ...", flush=True)
                    r = run_side(args, procs, tmp, rport, recv_bin, n, side)
                    r["repeat"] = rep
                    runs.append(r)
                    print(f"   delivered {r['delivered_per_s']:,.0f}/s, gateway CPU "
                          f"{r['cpu_pct'].get('gateway', 0):.0f}%, RSS idle "
                          f"{r['rss_idle_per_conn_kib']:.2f} KiB/conn", flush=True)
    except (SetupError, OSError, subprocess.SubprocessError) as exc:
        print(f"RUN FAILED: {exc}", file=sys.stderr)
        for name in ("herald.log", "recv.log"):
            path = os.path.join(tmp, name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    print(f"--- {name} (tail)\n" + "".join(f.readlines()[-20:]), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: everything stopped", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep_tmp:
            print(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, runs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "runs": runs}, f, indent=1)
    if args.smoke:
        bad = [r for r in runs if (r["ws_clients"] and r["delivered_ws_per_s"] <= 0)
               or (r["sse_clients"] and r["delivered_sse_per_s"] <= 0)]
        if bad or not runs:
            print("sse_fanout smoke: FAILED: no message arrived on a side")
            return 1
        print("sse_fanout smoke: OK (messages arrived on both transports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
