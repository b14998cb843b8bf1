#!/usr/bin/python3
"""Redis Cluster for the tests: Debian's redis-server (7.0) in cluster mode, each node on a
free 127.0.0.1 port (its cluster bus on another free port), stopped by PID in the cleanups of
the test that started it.

The cluster is formed with raw commands, the way `redis-cli --cluster create` does it but
without its prompts and timing: every node gets a distinct config epoch, each master its even
share of the 16384 slots (CLUSTER ADDSLOTSRANGE), the first node MEETs the others, and each
replica REPLICATEs its master once it knows it. start_cluster returns only when every node
says cluster_state:ok, every replica's link to its master is up, and every node reports the
same slot map (CLUSTER SLOTS, replicas included); each wait is bounded and fails with the
nodes' logs.

    cluster = start_cluster(test, masters=3, replicas=1)
    url = cluster.url()                 # redis-cluster://127.0.0.1:p1,127.0.0.1:p2,...
    cluster.spublish("room:1", b'{"x":1}')
    old = cluster.master_of(key_slot("room:1"))
    cluster.kill_master(old)
    new = cluster.wait_promoted(old)

Automatic failover needs a majority of the masters alive to vote: kill_master/wait_promoted
need at least 3 masters (a 1+1 or 2+1 cluster never promotes on its own).

Run as a script, it tests itself (forms 1+0, 1+1 and 3+3 clusters, checks key_slot against
CLUSTER KEYSLOT, fails a master over):

    /usr/bin/python3 tests/integration/redis_cluster.py
"""

import binascii
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (  # noqa: E402
    DEFAULT_TIMEOUT, HeraldTestCase, RedisConn, RedisError, RedisServer, free_port,
)

SLOTS = 16384
FORM_TIMEOUT = 30.0   # s: nodes meet, replicas sync and the slot map settles well within this


# ---------------------------------------------------------------------------------------------
# Slots


def key_slot(name):
    """The cluster slot of a key or shard channel, as Redis computes it: CRC16 (XMODEM) mod
    16384 of the whole name, or of the part between the first '{' and the first '}' after it
    when that part is not empty."""
    if isinstance(name, str):
        name = name.encode()
    start = name.find(b"{")
    if start >= 0:
        end = name.find(b"}", start + 1)
        if end > start + 1:
            name = name[start + 1:end]
    # crc_hqx is CRC-16/CCITT (polynomial 0x1021, no reflection); started at 0 it is XMODEM
    return binascii.crc_hqx(name, 0) % SLOTS


def even_ranges(masters):
    """[(start, end)] of `masters` even shares of the slots, in slot order: what start_cluster
    gives each master."""
    return [(k * SLOTS // masters, (k + 1) * SLOTS // masters - 1) for k in range(masters)]


def channels_spread(prefix, n, max_tries=5_000_000):
    """n channel names f"{prefix}{i}", chosen so that their slots are spread evenly: the name
    k hashes to the middle slot of the k-th of n equal parts of the slot space. Any split of
    the slots into at most n even ranges (start_cluster's, with up to n masters) therefore
    has at least one of them in every range. The i are the smallest that hit each slot, so
    the names are the same from run to run. Raises ValueError when the prefix pins the slot
    (a hash tag) or n is out of range."""
    if not 0 < n <= SLOTS:
        raise ValueError(f"n must be 1..{SLOTS}")
    wanted = {((2 * k + 1) * SLOTS) // (2 * n): k for k in range(n)}
    found = [None] * n
    missing = n
    for i in range(max_tries):
        name = f"{prefix}{i}"
        k = wanted.pop(key_slot(name), None)
        if k is not None:
            found[k] = name
            missing -= 1
            if not missing:
                return found
    raise ValueError(f"no names {prefix!r}+i hit {missing} of the {n} slots wanted "
                     "(a hash tag in the prefix pins every name to one slot)")


# ---------------------------------------------------------------------------------------------
# Talking to nodes


def _query(port, *args, timeout=2.0):
    """One command on the node at port; raises OSError/ConnectionError/RedisError."""
    with RedisConn(port, timeout=timeout) as c:
        return c.command(*args)


def _info_fields(text):
    """`key:value` lines of CLUSTER INFO / INFO as a dict of str."""
    if isinstance(text, bytes):
        text = text.decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def parse_slots(reply):
    """CLUSTER SLOTS as a sorted list of (start, end, master port, sorted [replica ports])."""
    out = []
    for entry in reply:
        start, end, master = entry[0], entry[1], entry[2]
        out.append((int(start), int(end), int(master[1]), sorted(int(r[1]) for r in entry[3:])))
    return sorted(out)


class Cluster:
    """A running cluster. `masters` are the RedisServer masters in slot order, `replicas`
    maps a master's port to its replicas (RedisServer); both follow wait_promoted. `nodes`
    holds every node started, killed ones included."""

    def __init__(self, nodes, masters, replicas, bus_ports):
        self.nodes = nodes
        self.masters = masters
        self.replicas = replicas
        self.bus_ports = bus_ports   # node port -> its cluster bus port
        self._map = None             # last slot map read (parse_slots), for routing
        self._killed = {}            # port of a killed master -> the slot ranges it served

    # -- what it looks like

    def node(self, port):
        for r in self.nodes:
            if r.port == port:
                return r
        raise KeyError(f"no node on port {port}")

    def live_nodes(self):
        return [r for r in self.nodes if r.alive()]

    def url(self):
        """redis-cluster:// URL naming every node started (seeds; a dead one is what a real
        deployment's list holds after a failover)."""
        return "redis-cluster://" + ",".join(f"127.0.0.1:{r.port}" for r in self.nodes)

    def slots(self):
        """Parsed CLUSTER SLOTS of the first live node that answers: a sorted list of
        (start, end, master port, [replica ports])."""
        last = None
        for r in self.live_nodes():
            try:
                self._map = parse_slots(_query(r.port, "CLUSTER", "SLOTS"))
                return self._map
            except (OSError, ConnectionError, RedisError) as exc:
                last = exc
        raise AssertionError(f"no live cluster node answered CLUSTER SLOTS (last: {last!r})")

    def master_of(self, slot, refresh=True):
        """Port of the master serving `slot`."""
        for start, end, master, _ in (self.slots() if refresh or not self._map else self._map):
            if start <= slot <= end:
                return master
        raise AssertionError(f"slot {slot} is not served")

    def logs(self, tail_lines=30):
        return "\n".join(f"----- node {r.port} (pid {r.pid}, {'alive' if r.alive() else 'dead'})"
                         f" -----\n{r.log_text(tail_lines)}" for r in self.nodes)

    # -- failover

    def kill_master(self, port):
        """SIGKILL the master on `port` (by PID)."""
        if port not in (m.port for m in self.masters):
            raise AssertionError(f"{port} is not a master of this cluster")
        self._killed[port] = [(s, e) for s, e, m, _ in self.slots() if m == port]
        self.node(port).kill()

    def wait_promoted(self, old_port, timeout=30.0):
        """After kill_master(old_port): wait until one of its replicas serves all of its slots
        in the CLUSTER SLOTS of every live node, and every live node says cluster_state:ok;
        return its port. masters and replicas are updated (the other replicas follow the new
        master)."""
        ranges = self._killed.get(old_port)
        if not ranges:
            raise AssertionError(f"{old_port} was not killed by kill_master while it served slots")
        candidates = {r.port for r in self.replicas.get(old_port, [])}
        if not candidates:
            raise AssertionError(f"master {old_port} has no replica to promote")
        state = {}

        def promoted():
            owners = set()   # the master each live node names for each of the ranges
            for r in self.live_nodes():
                if _info_fields(_query(r.port, "CLUSTER", "INFO")).get("cluster_state") != "ok":
                    state["why"] = f"node {r.port} not ok"
                    return None
                served = {(s, e): m for s, e, m, _ in parse_slots(_query(r.port, "CLUSTER",
                                                                          "SLOTS"))}
                owners |= {served.get(rng) for rng in ranges}   # None: not served
            state["why"] = f"owners of {ranges}: {owners}"
            if len(owners) == 1 and owners <= candidates:
                return owners.pop()
            return None

        new_port = _wait(promoted, timeout, f"a replica of {old_port} to take over", self, state)
        new = self.node(new_port)
        self.masters[self.masters.index(self.node(old_port))] = new
        self.replicas[new_port] = [r for r in self.replicas.pop(old_port) if r is not new]
        self.slots()
        return new_port

    # -- publishing

    def spublish(self, channel, payload, attempts=5):
        """SPUBLISH on the master serving the channel's slot (MOVED followed); returns the
        number of shard subscribers that got it."""
        slot = key_slot(channel)
        port = self.master_of(slot, refresh=False)
        last = None
        for _ in range(attempts):
            try:
                with RedisConn(port, timeout=5.0) as c:
                    return c.command("SPUBLISH", channel, payload)
            except RedisError as exc:
                last = exc
                text = str(exc)
                if not text.startswith("MOVED "):
                    raise
                port = int(text.rsplit(":", 1)[1])   # "MOVED <slot> <host>:<port>"
            except (OSError, ConnectionError) as exc:   # a dead owner: read the map again
                last = exc
                port = self.master_of(slot)
        raise AssertionError(f"SPUBLISH {channel!r}: no answer after {attempts} tries: {last!r}")

    def publish(self, channel, payload):
        """Classic PUBLISH on a live node (the cluster bus spreads it to every node)."""
        return _query(self.live_nodes()[0].port, "PUBLISH", channel, payload, timeout=5.0)


def _wait(predicate, timeout, what, cluster, state=None):
    """Poll predicate (errors count as not yet) until truthy; else AssertionError with the
    last error or state and the nodes' logs."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ConnectionError, RedisError) as exc:
            last = exc
        if time.monotonic() > deadline:
            detail = (state or {}).get("why") or repr(last)
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {detail}\n"
                                 f"{cluster.logs()}")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Forming a cluster


def start_cluster(test, masters=3, replicas=1, node_timeout_ms=1000, timeout=FORM_TIMEOUT):
    """Start and form a cluster of `masters` masters with `replicas` replicas each. `test`
    is a HeraldTestCase or anything with .tmp (a directory), ._procs (a list) and
    .addCleanup(fn): every node is killed by PID in those cleanups, also when forming fails.
    Returns a Cluster once it is ok and settled (see the module docstring)."""
    if masters < 1 or replicas < 0:
        raise ValueError("need masters >= 1 and replicas >= 0")
    nodes, bus_ports = [], {}
    for _ in range(masters * (1 + replicas)):
        r = RedisServer(test.tmp)
        # The bus port would be port + 10000, past 65535 for most ephemeral ports: pick one.
        bus_ports[r.port] = free_port()
        r.args = ["--cluster-enabled", "yes",
                  "--cluster-config-file", os.path.join(r.dir, "nodes.conf"),
                  "--cluster-node-timeout", str(node_timeout_ms),
                  "--cluster-port", str(bus_ports[r.port]),
                  # a replica may always stand for election, however long its link was down
                  "--cluster-replica-validity-factor", "0",
                  # replicas sync at once (7.0 waits 5 s for more replicas to share a transfer)
                  "--repl-diskless-sync-delay", "0",
                  # CLUSTER SLOTS leaves out a replica whose replication offset is still 0,
                  # and on an idle master only its pings (every 10 s by default) move it
                  "--repl-ping-replica-period", "1"]
        test._procs.append(r)
        test.addCleanup(r.kill)
        nodes.append(r.start())
    master_nodes = nodes[:masters]
    replica_map = {m.port: nodes[masters + k * replicas: masters + (k + 1) * replicas]
                   for k, m in enumerate(master_nodes)}
    cluster = Cluster(nodes, master_nodes, replica_map, bus_ports)
    ids = {r.port: _query(r.port, "CLUSTER", "MYID").decode() for r in nodes}

    # Distinct config epochs before the nodes meet (as redis-cli does), so no epoch collision
    # has to be resolved; then each master's slots, then one node meets all the others.
    for epoch, r in enumerate(nodes, 1):
        _query(r.port, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
    for m, (start, end) in zip(master_nodes, even_ranges(masters)):
        _query(m.port, "CLUSTER", "ADDSLOTSRANGE", start, end)
    for r in nodes[1:]:
        _query(nodes[0].port, "CLUSTER", "MEET", "127.0.0.1", r.port, bus_ports[r.port])

    state = {}

    def all_met():
        for r in nodes:
            lines = _query(r.port, "CLUSTER", "NODES").decode().splitlines()
            known = {}
            for line in lines:
                f = line.split()
                known[f[0]] = f
                if "handshake" in f[2] or "noaddr" in f[2] or f[7] != "connected":
                    state["why"] = f"node {r.port} sees {f[1]} as {f[2]} {f[7]}"
                    return False
            if set(known) != set(ids.values()):
                state["why"] = f"node {r.port} knows {len(known)} of {len(nodes)} nodes"
                return False
        return True

    _wait(all_met, timeout, "every node to know every other", cluster, state)
    for m in master_nodes:
        for r in replica_map[m.port]:
            _query(r.port, "CLUSTER", "REPLICATE", ids[m.port])

    expected = [(s, e, m.port, sorted(r.port for r in replica_map[m.port]))
                for m, (s, e) in zip(master_nodes, even_ranges(masters))]

    def settled():
        for r in nodes:
            info = _info_fields(_query(r.port, "CLUSTER", "INFO"))
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                state["why"] = f"node {r.port}: {info.get('cluster_state')}, " \
                               f"{info.get('cluster_slots_ok')} slots ok"
                return False
            got = parse_slots(_query(r.port, "CLUSTER", "SLOTS"))
            if got != expected:
                state["why"] = f"node {r.port} has slot map {got}, want {expected}"
                return False
        for reps in replica_map.values():
            for r in reps:
                rep = _info_fields(_query(r.port, "INFO", "replication"))
                if rep.get("role") != "slave" or rep.get("master_link_status") != "up":
                    state["why"] = f"replica {r.port}: {rep.get('role')}, " \
                                   f"link {rep.get('master_link_status')}"
                    return False
        return True

    _wait(settled, timeout, "cluster_state:ok, replicas in sync and one slot map", cluster, state)
    cluster.slots()
    return cluster


class Scope:
    """What start_cluster needs from a test, for scripts that have none (the benches): a temp
    dir, the process list and cleanups, run last-in first-out by close()."""

    def __init__(self, tmp):
        self.tmp = tmp
        self._procs = []
        self._cleanups = []

    def addCleanup(self, fn, *args, **kwargs):  # noqa: N802 - unittest's name
        self._cleanups.append((fn, args, kwargs))

    def close(self):
        errors = []
        while self._cleanups:
            fn, args, kwargs = self._cleanups.pop()
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - run every cleanup, report after
                errors.append(exc)
        if errors:
            raise errors[0]


# ---------------------------------------------------------------------------------------------
# Self-test


class ClusterHarnessSelfTest(HeraldTestCase):
    """The harness itself, against real clusters (no herald involved)."""

    # (name, what Redis hashes), from the cluster spec's hash-tag rules
    TAG_CASES = [("{user1000}.following", "user1000"), ("{user1000}.followers", "user1000"),
                 ("foo{}{bar}", "foo{}{bar}"), ("foo{{bar}}zap", "{bar"),
                 ("foo{bar}{zap}", "bar"), ("a{b}{c}", "b"), ("{}", "{}"), ("}{", "}{"),
                 ("{a", "{a"), ("a}b{", "a}b{"), ("", "")]

    def test_key_slot_offline(self):
        self.assertEqual(key_slot("123456789"), 0x31C3)   # CRC16/XMODEM check value
        for name, hashed in self.TAG_CASES:
            self.assertEqual(key_slot(name), key_slot(hashed.encode()), name)
        self.assertEqual(key_slot(b"\xff\x00{\xfe}"), key_slot(b"\xfe"))

    def test_channels_spread_covers_every_even_split(self):
        for n in (1, 2, 3, 5, 8, 64):
            names = channels_spread("t:", n)
            self.assertEqual(len(set(names)), n)
            self.assertTrue(all(name.startswith("t:") for name in names))
            slots = [key_slot(name) for name in names]
            self.assertEqual(slots, sorted(slots))
            self.assertEqual(names, channels_spread("t:", n))   # deterministic
            for m in range(1, n + 1):
                for s, e in even_ranges(m):
                    self.assertTrue(any(s <= x <= e for x in slots), (n, m, s, e))
        with self.assertRaises(ValueError):
            channels_spread("{pinned}:", 2, max_tries=10_000)

    def test_small_clusters(self):
        """1+0 and 1+1: formed, one range, SPUBLISH and PUBLISH answered."""
        for replicas in (0, 1):
            c = start_cluster(self, masters=1, replicas=replicas)
            master = c.masters[0].port
            self.assertEqual(c.slots(), [(0, SLOTS - 1, master,
                                          [r.port for r in c.replicas[master]])])
            self.assertEqual(c.spublish("x:1", b"{}"), 0)
            self.assertEqual(c.publish("x:1", b"{}"), 0)

    def test_three_masters_failover(self):
        t0 = time.monotonic()
        c = start_cluster(self, masters=3, replicas=1)
        formed = time.monotonic() - t0
        ports = [r.port for r in c.nodes]
        self.assertEqual(c.url(), "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports))
        self.assertEqual([(s, e) for s, e, _, _ in c.slots()], even_ranges(3))
        self.assertEqual([m for _, _, m, _ in c.slots()], [m.port for m in c.masters])
        for _, _, m, reps in c.slots():
            self.assertEqual(reps, [r.port for r in c.replicas[m]])

        # key_slot against the server, hash tags included
        names = [n for n, _ in self.TAG_CASES] + ["bench:0", "herald:hb", "room:{42}:chat",
                                                  "ünïcode", "x" * 300]
        with RedisConn(c.nodes[0].port) as conn:
            for name in names:
                self.assertEqual(key_slot(name), conn.command("CLUSTER", "KEYSLOT", name), name)

        chans = channels_spread("spread:", 6)
        self.assertEqual({c.master_of(key_slot(ch)) for ch in chans}, {m.port for m in c.masters})

        # SPUBLISH reaches an SSUBSCRIBEr on the slot's master
        channel = chans[0]
        old = c.master_of(key_slot(channel))
        self.assertEqual(self._spublish_seen(c, channel, b'{"before":1}'), b'{"before":1}')

        c.kill_master(old)
        t1 = time.monotonic()
        new = c.wait_promoted(old)
        promoted = time.monotonic() - t1
        self.assertIn(new, [r.port for r in c.nodes if r.port != old])
        self.assertEqual(c.master_of(key_slot(channel)), new)
        self.assertNotIn(old, [m.port for m in c.masters])
        self.assertIn(new, [m.port for m in c.masters])
        self.assertEqual(c.replicas[new], [])
        self.assertEqual(self._spublish_seen(c, channel, b'{"after":1}'), b'{"after":1}')
        for ch in chans:   # every slot is served again, through MOVED if need be
            self.assertEqual(c.spublish(ch, b"{}"), 0)
        self.assertEqual(c.publish(channel, b"{}"), 0)
        sys.stderr.write(f"\n  3+3 formed in {formed:.1f} s, {old} -> {new} promoted in "
                         f"{promoted:.1f} s\n")

    def _spublish_seen(self, c, channel, payload):
        """SSUBSCRIBE on the owner, spublish, return the payload the subscriber got."""
        with RedisConn(c.master_of(key_slot(channel)), timeout=DEFAULT_TIMEOUT) as sub:
            self.assertEqual(sub.command("SSUBSCRIBE", channel),
                             [b"ssubscribe", channel.encode(), 1])
            self.assertEqual(c.spublish(channel, payload), 1)
            kind, ch, data = sub._read()
            self.assertEqual((kind, ch), (b"smessage", channel.encode()))
            return data


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
