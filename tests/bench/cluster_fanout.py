#!/usr/bin/python3
"""cluster_fanout.py: WebSocket deliveries per second through one gateway in sharded pub/sub
mode, on a Redis Cluster of 1 master and then of 3 masters.

For each cluster size (--masters, default "1,3"; no replicas) it starts a cluster
(tests/integration/redis_cluster.py) and one gateway with HERALD_REDIS_PUBSUB=sharded and the
cluster's redis-cluster:// URL, all on free 127.0.0.1 ports, then:
  1. herald-bench (the C client, tests/bench/herald_bench.c, in --idle mode: it only receives)
     connects --clients WebSocket clients, client i subscribed to channel <prefix><i % K> of
     K = --channels; the prefix is picked so that the K names fall as evenly as possible on
     the masters of every cluster size measured (herald-bench names its channels this way, so
     the bench chooses the prefix rather than the names);
  2. once the gateway holds every subscription and Redis shows it on every channel,
     --publishers processes SPUBLISH raw JSON payloads to each channel's slot owner over
     pipelined raw sockets for --warmup + --seconds. A channel belongs to one publisher, so
     its messages stay in order; they carry what herald-bench checks (the channel's index and
     a counter: every delivery is checked for gaps, duplicates and misrouting);
  3. the publishers run as fast as the gateway delivers, no faster: they stop sending while
     more than --window deliveries are outstanding (published x subscribers, minus the
     gateway's herald_frames_out_total, read every 20 ms). An open flood would only fill
     Redis's output buffer for the gateway until Redis cuts it off (client-output-buffer-limit
     pubsub, 32 MB: about a second of two publishers here) and measure the loss;
  4. after the publishers stop, it waits for every delivery to be written and read, stops
     herald-bench and compares what each client received with what was published.
It prints published/s and delivered/s (the gateway's frame counter over the measured
seconds), deliveries per second of gateway CPU (steadier than the rates when other processes
share the cores), the publishes each master took, CPU per process, and the checks. --pubsub classic
measures the same with HERALD_REDIS_PUBSUB=classic instead: the gateway SUBSCRIBEs on one
node (its first seed) and the publishers PUBLISH to the slot owners, so the cluster bus
carries every message to that node.

Exits 1 only when a client missed, repeated or misrouted a message (never on timing), 2 when
the run could not be set up (no binary, the gateway refused the URL, a publisher error).
Every process it starts is stopped by PID, also on Ctrl-C or an exception.

    /usr/bin/python3 tests/bench/cluster_fanout.py [--build-dir build] [--clients 200]
        [--channels 64] [--publishers 2] [--seconds 10] [--masters 1,3] [--pubsub sharded]

Needs redis-server 7 (Debian 12's), the gateway and herald-bench built (build/gateway/herald,
build/tests/bench/herald-bench).
"""

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from drain_resume import cpu_seconds, machine_busy_seconds  # noqa: E402
from harness import (REPO_ROOT, Herald, RedisConn, _Proc, http_get, metric_value,  # noqa: E402
                     raise_nofile)
from redis_cluster import Scope, even_ranges, key_slot, start_cluster  # noqa: E402

POLL = 0.02            # s between two reads of the gateway's frame counter
BATCH = 512            # messages per pipelined batch of one publisher (all its masters)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default=os.path.join(REPO_ROOT, "build"),
                   help="CMake build dir with gateway/herald and tests/bench/herald-bench")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds published, not measured")
    p.add_argument("--payload-bytes", type=int, default=100)
    p.add_argument("--window", type=int, default=50000,
                   help="most deliveries published and not yet written by the gateway")
    p.add_argument("--masters", default="1,3", help="cluster sizes to measure, in order")
    p.add_argument("--pubsub", choices=("sharded", "classic"), default="sharded")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dirs (logs)")
    args = p.parse_args()
    args.masters = [int(m) for m in args.masters.split(",")]
    if args.channels < 1 or args.clients < args.channels or args.publishers < 1:
        p.error("need channels >= 1, clients >= channels and publishers >= 1")
    if args.seconds < 1 or args.warmup < 0 or args.window < 1:
        p.error("need seconds >= 1, warmup >= 0 and window >= 1")
    return args


class SetupError(Exception):
    """The run could not be set up or driven (exit 2): not a delivery failure."""


# ---------------------------------------------------------------------------------------------
# Channels


def balanced_prefix(base, channels, sizes, tries=20000):
    """base + f"{s}:" with the smallest s for which herald-bench's names <prefix>0 ..
    <prefix>(channels-1) fall on the even slot ranges of every cluster size in `sizes` with
    at most one channel more on one master than on another (else the most even found)."""
    best = None
    for s in range(tries):
        prefix = f"{base}{s}:"
        slots = [key_slot(f"{prefix}{i}") for i in range(channels)]
        worst = 0
        for m in sizes:
            counts = [sum(1 for x in slots if lo <= x <= hi) for lo, hi in even_ranges(m)]
            worst = max(worst, max(counts) - min(counts))
        if best is None or worst < best[0]:
            best = (worst, prefix)
        if worst <= 1:
            break
    return best[1]


# ---------------------------------------------------------------------------------------------
# Publishers (forked processes)


class Replies:
    """The one-line RESP replies (integers or errors) of one socket, taken as needed; bytes
    read past them stay for the next take."""

    def __init__(self, sock):
        self.sock, self.buf = sock, bytearray()

    def take(self, count):
        end = 0
        for _ in range(count):
            while (i := self.buf.find(b"\r\n", end)) < 0:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("Redis closed the connection")
                self.buf += chunk
            end = i + 2
        out = bytes(self.buf[:end])
        del self.buf[:end]
        return out


def publisher_main(idx, plan, command, channels, payload_bytes, shared, conn):
    """Publish round after round of one message per channel in `plan` ((k, name, port,
    subscribers)) until told to stop, within the delivery window. Sends back the messages per
    channel and per master, the replies that named no subscriber, and the first error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C and kills us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    deliveries, published, allowed, stop = shared
    socks, replies = {}, {}
    for port in sorted({port for _, _, port, _ in plan}):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks[port], replies[port] = s, Replies(s)
    heads = [(k, port, b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
              % (len(command), command, len(name.encode()), name.encode()))
             for k, name, port, _ in plan]
    nxt = {k: k for k, _, _, _ in plan}   # channel k carries n = k, k+K, k+2K, ... (herald-bench)
    pad = b"x" * max(0, payload_bytes - 40)
    rounds = max(1, BATCH // len(plan))
    batch_deliveries = rounds * sum(subs for _, _, _, subs in plan)
    per_master = {port: 0 for port in socks}
    in_flight = {port: 0 for port in socks}   # commands sent whose replies are not read yet
    no_receivers, error = 0, None

    def check(port):
        nonlocal no_receivers
        got = replies[port].take(in_flight[port])
        in_flight[port] = 0
        if b"-" in got:   # integer replies are never negative: an error line
            line = next(x for x in got.split(b"\r\n") if x.startswith(b"-"))
            raise RuntimeError(f"node {port}: {line.decode()}")
        if command == b"SPUBLISH":   # a PUBLISH counts the node's own subscribers only
            no_receivers += got.count(b":0\r\n")

    try:
        while not stop.value:
            # the window: every publisher's deliveries together against the gateway's writes
            while sum(deliveries) + batch_deliveries > allowed.value and not stop.value:
                time.sleep(0.0005)
            if stop.value:
                break
            t = time.monotonic_ns()   # CLOCK_MONOTONIC, herald-bench's clock for latency
            out = {port: [] for port in socks}
            for _ in range(rounds):
                for k, port, head in heads:
                    body = b'{"t":%d,"n":%d,"pad":"%s"}' % (t, nxt[k], pad)
                    out[port].append(head + b"$%d\r\n%s\r\n" % (len(body), body))
                    nxt[k] += channels
            for port, cmds in out.items():
                socks[port].sendall(b"".join(cmds))
            published[idx] += rounds * len(plan)
            deliveries[idx] += batch_deliveries
            # read the previous batch's replies only now: with one batch always in flight,
            # Redis has the next one to work on while we wait
            for port, cmds in out.items():
                check(port)
                in_flight[port] = len(cmds)
                per_master[port] += len(cmds)
        for port in socks:
            check(port)
    except (OSError, RuntimeError) as exc:
        error = f"publisher {idx}: {exc}"
    counts = {k: (nxt[k] - k) // channels for k in nxt}
    conn.send((counts, per_master, no_receivers, error))
    conn.close()


class Publishers:
    """--publishers forked processes; channel k belongs to publisher k % P."""

    def __init__(self, args, owners, subs, command):
        ctx = multiprocessing.get_context("fork")
        self.deliveries = ctx.RawArray("Q", args.publishers)
        self.published = ctx.RawArray("Q", args.publishers)
        self.allowed = ctx.RawValue("Q", 0)
        self.stop_flag = ctx.RawValue("i", 0)
        self.procs = []
        for idx in range(args.publishers):
            plan = [(k, name, port, subs[k]) for k, (name, port) in enumerate(owners)
                    if k % args.publishers == idx]
            if not plan:
                continue
            parent, child = ctx.Pipe()
            p = ctx.Process(target=publisher_main, name=f"cluster-pub-{idx}",
                            args=(idx, plan, command, args.channels, args.payload_bytes,
                                  (self.deliveries, self.published, self.allowed,
                                   self.stop_flag), child))
            p.start()
            child.close()
            self.procs.append((p, parent))

    def total(self):
        return sum(self.published), sum(self.deliveries)

    def finish(self, timeout=30.0):
        """Stop them; return (messages per channel, publishes per master, replies with no
        subscriber, errors)."""
        self.stop_flag.value = 1
        counts, per_master, no_receivers, errors = {}, {}, 0, []
        deadline = time.monotonic() + timeout
        for p, conn in self.procs:
            if conn.poll(max(0.0, deadline - time.monotonic())):
                c, pm, nr, err = conn.recv()
                counts.update(c)
                for port, n in pm.items():
                    per_master[port] = per_master.get(port, 0) + n
                no_receivers += nr
                if err:
                    errors.append(err)
            else:
                errors.append(f"{p.name} sent no result")
        self.kill()
        return counts, per_master, no_receivers, errors

    def kill(self):
        self.stop_flag.value = 1
        for p, _ in self.procs:
            p.join(2)
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join(5)


# ---------------------------------------------------------------------------------------------
# The receiving side


class BenchClients(_Proc):
    """herald-bench --idle: connects, subscribes, reads and checks until SIGINT, then prints
    one JSON report."""
    name = "herald-bench"

    def start(self, binary, url, clients, channels, prefix, hold_s):
        self._spawn([binary, "--url", url, "--idle", "--connections", str(clients),
                     "--channels", str(channels), "--channel-prefix", prefix,
                     "--duration", str(hold_s), "--json"], "herald-bench.log")
        return self

    def report(self):
        for line in reversed(self.log_text().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise SetupError(f"herald-bench printed no report:\n{self.log_text(20)}")


def cpu_now(pids):
    """CPU seconds of each process (None once gone), and of the whole machine ("machine")."""
    out = {name: cpu_seconds(pid) for name, pid in pids.items()}
    out["machine"] = machine_busy_seconds()
    return out


def frames_out(h):
    status, _, body = http_get(h.base + "/metrics", timeout=5.0)
    if status != 200:
        raise SetupError(f"/metrics answered {status}")
    return metric_value(body.decode(), "herald_frames_out_total")


def wait_subscribed(h, bench, cluster, owners, args):
    """Every client subscribed in the gateway, and the gateway's subscription on every
    channel visible in Redis (on the slot owner; for classic, on one node of the cluster)."""
    def ready():
        if h.metric("herald_subscriptions") != args.clients:
            return False
        for name, port in owners:
            if args.pubsub == "sharded":
                with RedisConn(port, timeout=2.0) as c:
                    n = int(c.command("PUBSUB", "SHARDNUMSUB", name)[1])
            else:   # the one subscription is on some node (the first seed that answered)
                n = sum(r.numsub(name) for r in cluster.live_nodes())
            if n != 1:
                return False
        return True

    deadline = time.monotonic() + 60 + args.clients / 50
    while not ready():
        if not bench.alive():
            raise SetupError(f"herald-bench exited early:\n{bench.log_text(20)}")
        if time.monotonic() > deadline:
            raise SetupError(f"{args.clients} clients not subscribed on {args.channels} channels"
                             f" in time; herald-bench:\n{bench.log_text(20)}\ngateway:\n"
                             f"{h.log_text(20)}")
        time.sleep(0.1)


def wait_drained(h, bench, expected, base, timeout=30.0):
    """Until the gateway has written every expected delivery and herald-bench has stopped
    using CPU (it has read them), bounded; returns whether the gateway wrote them all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and frames_out(h) - base < expected:
        time.sleep(0.05)
    written = frames_out(h) - base >= expected
    last, quiet_since = cpu_seconds(bench.pid), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.5:
        time.sleep(0.1)
        now = cpu_seconds(bench.pid)
        if now != last:
            last, quiet_since = now, time.monotonic()
    return written


def drive(args, h, bench, pubs, subs, pids):
    """Let the publishers go for --warmup + --seconds, opening the window as the gateway
    writes; then drain, stop herald-bench and count. Rates and CPU cover the measured
    seconds only."""
    base = frames_out(h)
    t_measure = time.monotonic() + args.warmup
    t_end = t_measure + args.seconds
    pubs.allowed.value = args.window
    mark = None   # (time, frames written, messages published, CPU) when the measure starts
    while (now := time.monotonic()) < t_end:
        written = frames_out(h) - base
        pubs.allowed.value = int(written) + args.window
        if mark is None and now >= t_measure:
            mark = (now, written, pubs.total()[0], cpu_now(pids))
        time.sleep(POLL)
    t1, written1, published1, cpu1 = (time.monotonic(), frames_out(h) - base, pubs.total()[0],
                                      cpu_now(pids))
    counts, per_master, no_receivers, errors = pubs.finish()
    if errors:
        raise SetupError("; ".join(errors))
    expected = sum(counts[k] * subs[k] for k in counts)
    all_written = wait_drained(h, bench, expected, base)
    bench.signal(signal.SIGINT)
    if bench.wait_exit(30) is None:
        raise SetupError("herald-bench did not exit on SIGINT")
    rep = bench.report()
    span = t1 - mark[0]
    return {
        "published_per_s": (published1 - mark[2]) / span,
        "delivered_per_s": (written1 - mark[1]) / span,
        "cpu": {n: 100 * (cpu1[n] - mark[3][n]) / span for n in cpu1
                if cpu1[n] is not None and mark[3][n] is not None},
        "published": sum(counts.values()), "expected": expected, "per_master": per_master,
        "no_receivers": no_receivers, "all_written": all_written,
        "received": rep["received"], "lost": expected - rep["received"], "gaps": rep["gaps"],
        "dups": rep["duplicates"], "misrouted": rep["misrouted"],
        "unparsable": rep["unparsable"], "closes": rep["closes"],
        "subscribed": rep["subscribed"],
    }


# ---------------------------------------------------------------------------------------------
# One run


def run_one(args, masters, prefix, binaries):
    herald_bin, bench_bin = binaries
    tmp = tempfile.mkdtemp(prefix=f"herald-cluster-fanout-{masters}-")
    scope = Scope(tmp)
    try:
        cluster = start_cluster(scope, masters=masters, replicas=0)
        names = [f"{prefix}{k}" for k in range(args.channels)]
        owners = [(name, cluster.master_of(key_slot(name), refresh=False)) for name in names]
        subs = [len(range(k, args.clients, args.channels)) for k in range(args.channels)]
        env = {"HERALD_LOG_LEVEL": "warn",
               "HERALD_MAX_CONNECTIONS_PER_IP": str(args.clients + 100)}
        env["HERALD_REDIS_PUBSUB"] = args.pubsub
        url, command = cluster.url(), b"SPUBLISH" if args.pubsub == "sharded" else b"PUBLISH"
        os.environ["HERALD_BIN"] = herald_bin
        h = Herald(tmp, url, env=env)
        scope.addCleanup(h.kill)
        try:
            h.start()
            h.wait_ready(timeout=30)
        except AssertionError as exc:
            raise SetupError(f"the gateway did not start on {url}: {exc}") from None

        bench = BenchClients(tmp)
        scope.addCleanup(bench.kill)
        bench.start(bench_bin, h.ws_url, args.clients, args.channels, prefix,
                    args.warmup + args.seconds + 600)
        wait_subscribed(h, bench, cluster, owners, args)

        pubs = Publishers(args, owners, subs, command)
        scope.addCleanup(pubs.kill)
        pids = {"gateway": h.pid, "herald-bench": bench.pid, "main": os.getpid()}
        pids.update({f"redis {r.port}": r.pid for r in cluster.nodes})
        pids.update({p.name: p.pid for p, _ in pubs.procs})
        out = drive(args, h, bench, pubs, subs, pids)
        out.update(masters=masters,
                   per_master=[out["per_master"].get(m.port, 0) for m in cluster.masters],
                   channels_per_master=[sum(1 for _, port in owners if port == m.port)
                                        for m in cluster.masters])
        return out
    finally:
        scope.close()
        if args.keep_tmp:
            print(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Report


def report(args, prefix, runs):
    verb = "SPUBLISH" if args.pubsub == "sharded" else "PUBLISH"
    print(f"\n{args.clients} clients on {args.channels} channels ({prefix}0..), "
          f"{args.payload_bytes}-byte raw payloads, {args.publishers} publishers, "
          f"{args.pubsub} pub/sub, {args.seconds:.0f} s measured after {args.warmup:.0f} s, "
          f"window {args.window} deliveries, {os.cpu_count()} cores:")
    print(f"| masters | published/s | delivered/s | deliveries per gateway CPU second | "
          f"{verb}s per master (its channels) | CPU, % of one core: gateway / redis (all "
          "nodes) / herald-bench / publishers | machine busy (other processes) |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        masters = ", ".join(f"{n:,} ({c})" for n, c in zip(r["per_master"],
                                                           r["channels_per_master"]))
        cpu = dict(r["cpu"])
        machine = cpu.pop("machine", 0.0)
        redis = sum(v for n, v in cpu.items() if n.startswith("redis"))
        pubs = sum(v for n, v in cpu.items() if n.startswith("cluster-pub") or n == "main")
        # the gateway's own cost, steadier than rates when other processes share the cores
        per_cpu_s = 100 * r["delivered_per_s"] / cpu["gateway"] if cpu.get("gateway") else 0
        print(f"| {r['masters']} | {r['published_per_s']:,.0f} | {r['delivered_per_s']:,.0f} | "
              f"{per_cpu_s:,.0f} | {masters} | {cpu.get('gateway', 0):.0f} / {redis:.0f} / "
              f"{cpu.get('herald-bench', 0):.0f} / {pubs:.0f} | "
              f"{machine:.0f}% of {100 * os.cpu_count()}% ({machine - sum(cpu.values()):.0f}) |")
    bad = 0
    for r in runs:
        print(f"{r['masters']} master(s): {r['published']:,} published, {r['expected']:,} "
              f"deliveries expected, {r['received']:,} received by {r['subscribed']} clients; "
              f"lost {r['lost']}, duplicated {r['dups']}, misrouted {r['misrouted']}, "
              f"unparsable {r['unparsable']}, gaps {r['gaps']}, closes {r['closes']}"
              + (f", {r['no_receivers']} publishes reached no subscriber"
                 if r["no_receivers"] else "")
              + ("" if r["all_written"] else "; the gateway never wrote them all"))
        bad += r["lost"] != 0 or r["dups"] or r["misrouted"] or r["unparsable"]
    return bad


def find_binaries(build_dir):
    out = []
    for rel in (("gateway", "herald"), ("tests", "bench", "herald-bench")):
        path = os.path.abspath(os.path.join(build_dir, *rel))
        if not os.access(path, os.X_OK):
            raise SetupError(f"not built: {path} (build first or pass --build-dir)")
        out.append(path)
    return out


def main():
    args = parse_args()
    raise_nofile(args.clients + 1000)
    # SIGTERM unwinds like Ctrl-C, so every process is stopped by PID on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        binaries = find_binaries(args.build_dir)
        prefix = balanced_prefix("fan:", args.channels, args.masters)
        runs = []
        for masters in args.masters:
            print(f"== {masters} master(s) ...", flush=True)
            runs.append(run_one(args, masters, prefix, binaries))
    except (SetupError, AssertionError, OSError) as exc:   # harness waits raise AssertionError
        print(f"RUN FAILED: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: everything stopped", file=sys.stderr)
        return 130
    bad = report(args, prefix, runs)
    if bad:
        print("FAILED: a client missed, repeated or misrouted a message")
        return 1
    print("OK: every client got every message of its channel once, in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
