"""Retention of channel rows (migration 005) against a real PostgreSQL: idle channels are
deleted after the TTL in bounded steps while active ones stay, the per-channel limit only looks
at channels published to since the last step, and publishes racing a prune in a tight loop
never lose a message."""

import asyncio
import json
import random
import subprocess
import threading
import urllib.request

from harness import async_wait_for, main
from pg import PG_USER, HistoryTestCase

HOUR_MS = 3600 * 1000


class GatewayRetentionTest(HistoryTestCase):
    async def test_the_gateway_deletes_idle_channels_on_its_own(self):
        redis = self.start_redis()
        pg = self.start_postgres()
        h = self.start_herald_with_history(redis, pg, "--history-ttl", "1s",
                                           "--prune-interval", "1s")
        await asyncio.to_thread(h.wait_ready)
        for channel in ("gone:1", "gone:2"):
            req = urllib.request.Request(f"{h.base}/v1/channels/{channel}/messages",
                                         data=b'{"n":1}', method="POST")
            with urllib.request.urlopen(req, timeout=20) as r:
                self.assertEqual(r.status, 201)
        self.assertEqual(pg.sql("SELECT count(*) FROM herald_channels"), "2")
        await async_wait_for(lambda: pg.sql("SELECT count(*) FROM herald_channels") == "0",
                             timeout=15, interval=0.3, what="idle channel rows deleted")
        self.assertEqual(pg.sql("SELECT count(*) FROM herald_messages"), "0")
        await asyncio.to_thread(h.wait_metric, "herald_history_pruned_total", lambda v: v >= 2)


class IdleChannelsTest(HistoryTestCase):
    async def asyncSetUp(self):
        self.pg = self.start_postgres()
        self.herald_cli("migrate", pg=self.pg)

    def publish(self, channel, *data):
        out = self.pg.sql("SELECT b.seq || ' ' || b.epoch FROM herald_publish_batch("
                          f"array_fill('{channel}'::text, ARRAY[{len(data)}]), "
                          f"ARRAY[{','.join(repr(json.dumps(d)) for d in data)}]::json[], "
                          f"array_fill(NULL::text, ARRAY[{len(data)}])) b ORDER BY b.ord")
        return [(int(s), e) for s, e in (line.split() for line in out.splitlines())]

    def step(self, ttl_ms, max_n, batch):
        out = self.pg.sql(f"SELECT messages, channels, more FROM herald_prune_step({ttl_ms}, "
                          f"{max_n}, {batch})")
        m, c, more = out.split("|")
        return int(m), int(c), more == "t"

    def age(self, where, ms=2 * HOUR_MS):
        """Makes the messages matching `where` ms older."""
        self.pg.sql(f"UPDATE herald_messages SET ts = ts - {ms} WHERE {where}")

    def psql(self, *commands):
        """Runs each command in its own transaction of one session; their outputs."""
        argv = ["psql", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", PG_USER, "-d",
                "herald", "-Atq", "-v", "ON_ERROR_STOP=1"]
        for c in commands:
            argv += ["-c", c]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
        return r.stdout.split("\n")

    async def test_idle_channels_go_after_the_ttl_and_active_ones_stay(self):
        first = self.publish("idle:a", 1, 2)
        self.publish("idle:b", 3)
        self.publish("active", 4, 5)
        self.age("true")
        self.publish("active", 6)
        self.assertEqual(self.step(HOUR_MS, 1000, 100), (5, 2, False))
        self.assertEqual(self.pg.sql("SELECT string_agg(name || ':' || last_seq, ',') "
                                     "FROM herald_channels"), "active:3")
        self.assertEqual(self.pg.sql("SELECT string_agg(channel || seq, ',') "
                                     "FROM herald_messages"), "active3")
        # nothing else to do; the active channel stays while it holds a message
        self.assertEqual(self.step(HOUR_MS, 1000, 100), (0, 0, False))
        self.assertEqual(self.pg.sql("SELECT count(*) FROM herald_channels"), "1")
        # a later publish starts the idle channel again: seq 1, a new epoch
        again = self.publish("idle:a", 7)
        self.assertEqual(again[0][0], 1)
        self.assertNotEqual(again[0][1], first[0][1])
        # the version-1 entry point does the same work (for gateways built before)
        self.age("channel = 'idle:a'")
        self.assertEqual(self.pg.sql(f"SELECT herald_prune({HOUR_MS}, 1000, 100)"), "1")
        self.assertEqual(self.pg.sql("SELECT string_agg(name, ',') FROM herald_channels"),
                         "active")

    async def test_idle_channels_go_in_bounded_steps(self):
        n, batch = 250, 100
        self.pg.sql("SELECT count(*) FROM herald_publish_batch("
                    f"ARRAY(SELECT 'idle:' || i FROM generate_series(1, {n}) i), "
                    f"array_fill('1'::json, ARRAY[{n}]), array_fill(NULL::text, ARRAY[{n}]))")
        self.publish("active", 1)
        self.age("channel <> 'active'")
        steps, messages, channels, more = 0, 0, 0, True
        while more:
            m, c, more = self.step(HOUR_MS, 1000, batch)
            self.assertLessEqual(m, batch)
            self.assertLessEqual(c, 3 * batch)
            steps, messages, channels = steps + 1, messages + m, channels + c
            self.assertLess(steps, 20)
        self.assertEqual((messages, channels), (n, n))
        self.assertGreaterEqual(steps, 3)
        self.assertEqual(self.pg.sql("SELECT string_agg(name, ',') FROM herald_channels"),
                         "active")

    async def test_the_limit_looks_at_dirty_channels_only(self):
        self.publish("big", *range(10))
        self.assertEqual(self.pg.sql("SELECT dirty FROM herald_channels"), "t")
        self.assertEqual(self.step(HOUR_MS, 3, 100), (7, 0, False))
        self.assertEqual(self.pg.sql("SELECT string_agg(seq::text, ',' ORDER BY seq) "
                                     "FROM herald_messages"), "8,9,10")
        self.assertEqual(self.pg.sql("SELECT dirty FROM herald_channels"), "f")
        # 20000 channels nobody published to since the last step (each holds a message)
        self.pg.sql("INSERT INTO herald_channels (name, last_seq, dirty) "
                    "SELECT 'quiet:' || i, 1, false FROM generate_series(1, 20000) i; "
                    "INSERT INTO herald_messages (channel, seq, ts, envelope) "
                    "SELECT 'quiet:' || i, 1, (extract(epoch FROM now()) * 1000)::bigint, '{}' "
                    "FROM generate_series(1, 20000) i; "
                    "ANALYZE herald_channels")
        self.publish("big", 10, 11)  # dirty again
        # rows of herald_channels read so far (the statistics of this session are flushed at
        # the end of the transaction after pg_stat_force_next_flush())
        rows_read = ("SELECT 'read ' || (seq_tup_read + coalesce(idx_tup_fetch, 0)) "
                     "FROM pg_stat_user_tables WHERE relname = 'herald_channels'")
        flush = "SELECT pg_stat_force_next_flush()"
        out = self.psql(flush, rows_read,
                        "SELECT 'scan ' || count(*) FROM herald_channels WHERE dirty "
                        "OR last_seq > 0", flush, rows_read,
                        f"SELECT 'step ' || herald_prune_step({100 * 24 * HOUR_MS}, 3, 100)",
                        flush, rows_read)
        reads = [int(line.split()[1]) for line in out if line.startswith("read ")]
        self.assertIn("scan 20001", out)
        self.assertIn("step (2,0,f)", out)
        # the measure works: a query over the table reads every row...
        self.assertGreaterEqual(reads[1] - reads[0], 20001)
        # ...and a step reads a handful (the dirty channel, the rows it locks and updates)
        self.assertLess(reads[2] - reads[1], 50, reads)
        self.assertEqual(self.pg.sql("SELECT string_agg(seq::text, ',' ORDER BY seq) "
                                     "FROM herald_messages WHERE channel = 'big'"), "10,11,12")

    async def test_publishes_racing_a_tight_prune_lose_nothing(self):
        channels = [f"race:{i}" for i in range(5)]
        workers, calls = 4, 250
        # every message stored, with the epoch its channel had then (an audit trigger)
        self.pg.sql("""
            CREATE TABLE race_audit (channel text, epoch text, seq bigint, envelope text);
            CREATE TABLE race_stop (x int);
            CREATE TABLE race_stats (steps int, channels int);
            CREATE FUNCTION race_audit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO race_audit SELECT NEW.channel, c.epoch, NEW.seq, NEW.envelope
                    FROM herald_channels c WHERE c.name = NEW.channel;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'message stored without its channel row';
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER race_audit AFTER INSERT ON herald_messages
                FOR EACH ROW EXECUTE FUNCTION race_audit();""")
        sent = {}  # (worker, call) -> [(channel, data)]
        scripts = []
        for w in range(workers):
            rnd = random.Random(w)
            lines = []
            for i in range(calls):
                n = rnd.randint(1, 3)
                batch = [(rnd.choice(channels), {"w": w, "i": i, "j": j}) for j in range(n)]
                sent[(w, i)] = batch
                chs = ",".join(f"'{c}'" for c, _ in batch)
                data = ",".join(f"'{json.dumps(d)}'" for _, d in batch)
                lines.append(
                    f"SELECT '{w}:{i}|' || count(*) || '|' || coalesce(string_agg("
                    f"b.ord || ':' || b.seq || ':' || b.epoch, ',' ORDER BY b.ord), '') "
                    f"FROM herald_publish_batch(ARRAY[{chs}], ARRAY[{data}]::json[], "
                    f"array_fill(NULL::text, ARRAY[{n}])) b;")
            scripts.append("\n".join(lines) + "\n")
        # retention in a tight loop, one step per transaction: a TTL of 0 (every channel
        # empties and goes as soon as its messages are a millisecond old) and a limit of 1
        # by turns
        prune_sql = """DO $$
            DECLARE r record; n int := 0; ch int := 0;
            BEGIN
                LOOP
                    SELECT * INTO r FROM herald_prune_step(
                        CASE WHEN n % 2 = 0 THEN 0 ELSE 86400000 END,
                        CASE WHEN n % 2 = 0 THEN 1000000 ELSE 1 END, 1000);
                    n := n + 1;
                    ch := ch + r.channels;
                    COMMIT;
                    EXIT WHEN EXISTS (SELECT 1 FROM race_stop);
                END LOOP;
                INSERT INTO race_stats VALUES (n, ch);
            END $$;"""
        base = ["psql", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", PG_USER, "-d",
                "herald", "-Atq", "-v", "ON_ERROR_STOP=1"]
        pruner = subprocess.Popen(base + ["-c", prune_sql], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.addCleanup(pruner.kill)
        results = [None] * workers

        def run(w):
            results[w] = subprocess.run(base + ["-f", "-"], input=scripts[w],
                                        capture_output=True, text=True, timeout=110)

        threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.pg.sql("INSERT INTO race_stop VALUES (1)")
        _, perr = pruner.communicate(timeout=60)
        self.assertEqual(pruner.returncode, 0, perr)
        for w, r in enumerate(results):
            self.assertEqual(r.returncode, 0, f"worker {w}: {r.stderr}")  # no PK conflict

        # every publish returned one row per message; per channel and epoch, seqs 1..n
        returned = {}  # (channel, epoch, seq) -> data
        for w, r in enumerate(results):
            lines = r.stdout.split()
            self.assertEqual(len(lines), calls)
            for line in lines:
                tag, count, rows = line.split("|")
                batch = sent[tuple(int(x) for x in tag.split(":"))]
                self.assertEqual(int(count), len(batch), line)  # nothing lost
                for k, row in enumerate(rows.split(",")):
                    ord_, seq, epoch = row.split(":")
                    self.assertEqual(int(ord_), k + 1)
                    channel, data = batch[k]
                    key = (channel, epoch, int(seq))
                    self.assertNotIn(key, returned)  # no seq given twice
                    returned[key] = data
        lives = {}
        for channel, epoch, seq in returned:
            lives.setdefault((channel, epoch), []).append(seq)
        for life, seqs in lives.items():
            self.assertEqual(sorted(seqs), list(range(1, len(seqs) + 1)), life)
        # what was stored (committed) is exactly what was returned, envelope for envelope
        stored = {}
        for line in self.pg.sql("SELECT channel || '|' || epoch || '|' || seq || '|' || "
                                "envelope FROM race_audit").splitlines():
            channel, epoch, seq, envelope = line.split("|", 3)
            key = (channel, epoch, int(seq))
            self.assertNotIn(key, stored)
            env = json.loads(envelope)
            self.assertEqual((env["channel"], env["seq"]), (channel, int(seq)))
            stored[key] = env["data"]
        self.assertEqual(stored, returned)
        # the rows left agree with the last life of their channel
        for line in self.pg.sql("SELECT name || '|' || epoch || '|' || last_seq "
                                "FROM herald_channels").splitlines():
            name, epoch, last = line.split("|")
            self.assertEqual(int(last), len(lives[(name, epoch)]))
        # and the race did happen: channels were deleted and started again under publishes
        steps, deleted = (int(x) for x in self.pg.sql("SELECT steps, channels FROM race_stats")
                          .split("|"))
        self.assertGreater(deleted, 10, f"{steps} prune steps deleted {deleted} channels")
        self.assertGreater(len(lives), 2 * len(channels))


if __name__ == "__main__":
    main()
