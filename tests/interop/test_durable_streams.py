"""Interop: the pinned npm client @durable-streams/client (package-lock.json here) reads Herald's
Durable Streams subset, GET /v1/channels/{C}/stream, against real redis-server, PostgreSQL and
herald processes (tests/integration/harness.py and pg.py).

Each case runs tests/interop/ds_client.mjs, which uses the package's stream() API, prints one
JSON line per request, response head and delivered batch, then a result line; this driver
publishes through Herald's REST API (POST /v1/channels/{C}/messages) while it runs, and asserts
on those lines:
- catch-up (live:false) from -1, and the same read cut into pages (the size bound; the client
  0.2.7 reads one response with live:false, so the pages are followed from res.offset, and
  once more by live:"long-poll", where the client follows them itself);
- long-poll: messages before, during a held request and after holds that timed out (204);
- SSE: across responses that Herald ends cleanly (--ds-sse-lifetime) and the client's
  reconnects;
- resume from a saved offset (and from `now`);
- an offset of another epoch: the client's error carries status 410.

The client is installed here with `npm ci` (node_modules/, ignored by git) when the lock file
changed since the last install. Needs node and npm (deploy/install-deps.sh --test)."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from harness import main  # noqa: E402
from pg import HistoryTestCase  # noqa: E402

LONGPOLL_TIMEOUT_S = 2
SSE_LIFETIME_S = 3
HERALD_ARGS = ("--longpoll-timeout", f"{LONGPOLL_TIMEOUT_S}s",
               "--ds-sse-lifetime", f"{SSE_LIFETIME_S}s")
NODE_TIMEOUT_S = 60  # a whole reader run, bounded in ds_client.mjs (AbortController)


def install_client():
    """npm ci into tests/interop/node_modules unless the lock file is the one installed."""
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            raise AssertionError(f"{tool} not found (deploy/install-deps.sh --test installs it)")
    lock = os.path.join(HERE, "package-lock.json")
    stamp = os.path.join(HERE, "node_modules", ".herald-lock")

    def installed():
        try:
            with open(lock, "rb") as a, open(stamp, "rb") as b:
                return a.read() == b.read()
        except OSError:
            return False

    if installed():
        return
    # two runs at once (plain and sanitizer suites) must not install over each other
    with open("/tmp/herald-interop-npm.lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        if not installed():
            sys.stderr.write("interop: npm ci (@durable-streams/client)\n")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=HERE, check=True, timeout=600)
            shutil.copyfile(lock, stamp)


def setUpModule():
    install_client()


def position(epoch, seq):
    return f"{epoch}_{seq:020d}"


class NodeReader:
    """ds_client.mjs running: its JSON lines as they come (a thread reads them)."""

    def __init__(self, spec):
        self.spec = spec
        self.lines = []
        self.t_start = time.monotonic()  # about the reader's ms 0
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(["node", os.path.join(HERE, "ds_client.mjs"),
                                      json.dumps(spec)],
                                     cwd=HERE, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr = b""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self):
        try:
            for raw in self.proc.stdout:
                try:
                    line = json.loads(raw)
                except ValueError:
                    line = {"t": "junk", "raw": raw.decode("utf-8", "replace")}
                with self.cond:
                    self.lines.append(line)
                    self.cond.notify_all()
        except (OSError, ValueError):  # closed by kill()
            pass
        with self.cond:
            self.lines.append({"t": "eof"})
            self.cond.notify_all()

    def _read_err(self):
        try:
            self.stderr = self.proc.stderr.read()
        except (OSError, ValueError):
            pass

    def wait(self, pred, timeout=20.0, what="condition"):
        """Blocks until pred(lines) is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred(self.lines)
                if v:
                    return v
                if any(ln["t"] == "eof" for ln in self.lines):
                    raise AssertionError(f"reader ended before {what}:\n{self.dump()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}:\n{self.dump()}")
                self.cond.wait(left)

    def result(self, timeout=NODE_TIMEOUT_S + 15):
        r = self.wait(lambda ls: next((ln for ln in ls if ln["t"] == "result"), None),
                      timeout, "the result line")
        self.proc.wait(10)
        return r

    def kind(self, t):
        with self.cond:
            return [ln for ln in self.lines if ln["t"] == t]

    def items(self):
        return [it for b in self.kind("batch") for it in b["items"]]

    def exchanges(self):
        """[(request line, response line or None)] in request order."""
        with self.cond:
            res = {ln["n"]: ln for ln in self.lines if ln["t"] == "res"}
            return [(ln, res.get(ln["n"])) for ln in self.lines if ln["t"] == "req"]

    def dump(self):
        with self.cond:
            body = "\n".join(json.dumps(ln) for ln in self.lines)
        return f"{body}\n(stderr: {self.stderr.decode('utf-8', 'replace')[-2000:]})"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def query(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def items_seen(n):
    return lambda ls: sum(len(ln["items"]) for ln in ls if ln["t"] == "batch") >= n


class DurableStreamsInterop(HistoryTestCase):
    extra_args = ()

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.pg = self.start_postgres()
        self.h = self.start_herald_with_history(self.redis, self.pg, *HERALD_ARGS,
                                                *self.extra_args)
        self.h.wait_ready()
        self.epoch = None

    def url(self, channel):
        return f"{self.h.base}/v1/channels/{channel}/stream"

    def publish(self, channel, data):
        req = urllib.request.Request(f"{self.h.base}/v1/channels/{channel}/messages",
                                     data=json.dumps(data).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=20) as r:
            reply = json.loads(r.read())
        self.assertEqual(reply["channel"], channel)
        if self.epoch is None:
            self.epoch = reply["epoch"]
        self.assertEqual(reply["epoch"], self.epoch, "the channel's epoch changed")
        return reply

    def reader(self, **spec):
        spec.setdefault("timeoutMs", NODE_TIMEOUT_S * 1000)
        r = NodeReader(spec)
        self.addCleanup(r.kill)
        self.addCleanup(self._dump_if_failed, r)
        return r

    def _dump_if_failed(self, r):
        if self._failed() or os.environ.get("HERALD_TEST_SHOW_LOGS"):
            sys.stderr.write(f"\n----- ds_client.mjs {json.dumps(r.spec)} -----\n{r.dump()}\n")

    def run_reader(self, **spec):
        return self.reader(**spec).result()

    def assertNoError(self, result):
        self.assertIsNone(result["error"], result)
        self.assertFalse(result["timedOut"], result)

    def raw_get(self, channel, q):
        from harness import http_get
        return http_get(f"{self.url(channel)}?{q}", timeout=20)


class CatchUpTest(DurableStreamsInterop):
    def test_a_catch_up_from_the_beginning_and_d_resume_from_its_offset(self):
        sent = [{"n": i, "text": f"message {i}"} for i in range(1, 6)]
        for d in sent:
            self.publish("cu", d)
        # (a) live:false from -1: exactly what was published, in order; res.offset is
        # Stream-Next-Offset (the raw GET's), the position of the last message
        rd = self.reader(url=self.url("cu"), mode="catchup", offset="-1")
        r = rd.result()
        self.assertNoError(r)
        self.assertEqual(r["items"], sent)
        status, hdr, _ = self.raw_get("cu", "offset=-1")
        self.assertEqual(status, 200)
        self.assertEqual(r["offset"], hdr["stream-next-offset"])
        self.assertEqual(r["offset"], position(self.epoch, 5))
        self.assertTrue(r["upToDate"])
        # the client's requests: one plain GET with offset=-1, no live=
        (req, res), = rd.exchanges()
        self.assertEqual(query(req["url"]), {"offset": "-1"})
        self.assertEqual(res["headers"]["stream-up-to-date"], "true")
        saved = r["offset"]

        # (d) more messages; a reader from the saved offset gets only those
        later = [{"n": i, "text": f"message {i}"} for i in range(6, 9)]
        for d in later:
            self.publish("cu", d)
        rd = self.reader(url=self.url("cu"), mode="catchup", offset=saved)
        r = rd.result()
        self.assertNoError(r)
        self.assertEqual(r["items"], later)
        self.assertEqual(r["offset"], position(self.epoch, 8))
        (req, res), = rd.exchanges()
        self.assertEqual(query(req["url"]), {"offset": saved})
        self.assertEqual(res["status"], 200)
        self.assertIn("application/json", res["headers"]["content-type"])
        # at the tail: an empty array, the same offset, up to date
        r = self.run_reader(url=self.url("cu"), mode="catchup", offset=r["offset"])
        self.assertNoError(r)
        self.assertEqual((r["items"], r["offset"], r["upToDate"]),
                         ([], position(self.epoch, 8), True))
        # `now`: nothing, and the tail's offset
        r = self.run_reader(url=self.url("cu"), mode="catchup", offset="now")
        self.assertNoError(r)
        self.assertEqual((r["items"], r["offset"]), ([], position(self.epoch, 8)))

    def test_d_live_resume_from_a_saved_offset(self):
        for i in range(1, 4):
            self.publish("rl", {"n": i})
        r = self.run_reader(url=self.url("rl"), mode="catchup", offset="-1")
        self.assertNoError(r)
        saved = r["offset"]
        self.publish("rl", {"n": 4})
        for mode in ("long-poll", "sse"):
            with self.subTest(mode=mode):
                rd = self.reader(url=self.url("rl"), mode=mode, offset=saved, expect=1,
                                 graceMs=500)
                r = rd.result()
                self.assertNoError(r)
                self.assertEqual(r["items"], [{"n": 4}])
                self.assertEqual(r["offset"], position(self.epoch, 4))


class PagedCatchUpTest(DurableStreamsInterop):
    # a page is cut at HERALD_CLIENT_QUEUE_BYTES: 60 messages of ~1 KiB make several pages
    extra_args = ("--client-queue-bytes", "16k", "--max-publish-bytes", "8k")

    def test_a_catch_up_over_several_pages(self):
        sent = [{"n": i, "pad": "x" * 1000} for i in range(1, 61)]
        for d in sent:
            self.publish("pg", d)
        status, hdr, body = self.raw_get("pg", "offset=-1")
        self.assertEqual(status, 200)
        self.assertNotIn("stream-up-to-date", hdr, "the first page was not cut")
        first_page = len(json.loads(body))
        self.assertLess(first_page, 60)

        # live:false: the client (0.2.7) reads one response, up to date or not; its
        # res.offset is where the next read starts, and reads from there get the rest
        rd = self.reader(url=self.url("pg"), mode="catchup", offset="-1",
                         pagesUntilUpToDate=True)
        r = rd.result()
        self.assertNoError(r)
        self.assertEqual([it["n"] for it in r["items"]], list(range(1, 61)))
        self.assertEqual(r["items"], sent)
        self.assertEqual(r["offset"], position(self.epoch, 60))
        self.assertTrue(r["upToDate"])
        pages = rd.kind("page")
        self.assertGreater(len(pages), 1)
        self.assertEqual(pages[0]["items"], first_page)
        self.assertEqual(pages[0]["offset"], position(self.epoch, first_page))
        ex = rd.exchanges()
        for req, res in ex:
            self.assertNotIn("live", query(req["url"]))
            self.assertEqual(res["status"], 200)
        # every page but the last without Stream-Up-To-Date, the last with it
        self.assertEqual([("stream-up-to-date" in res["headers"]) for _, res in ex],
                         [False] * (len(ex) - 1) + [True])

        # live:"long-poll": the client itself follows the pages (plain GETs) up to the tail,
        # then long-polls
        rd = self.reader(url=self.url("pg"), mode="long-poll", offset="-1", expect=60,
                         graceMs=500)
        r = rd.result()
        self.assertNoError(r)
        self.assertEqual(r["items"], sent)
        ex = rd.exchanges()
        cut = [i for i, (_, res) in enumerate(ex)
               if res and res["status"] == 200 and "stream-up-to-date" not in res["headers"]]
        self.assertTrue(cut, "no page was cut")
        for i in cut:  # the request after a cut page is a plain catch-up
            self.assertNotIn("live", query(ex[i + 1][0]["url"]))


class LongPollTest(DurableStreamsInterop):
    def test_b_long_poll_before_during_and_after_timeouts(self):
        ch = "lp"
        expected = []

        def pub(n):
            expected.append({"n": n})
            self.publish(ch, {"n": n})

        for n in range(1, 4):  # before the reader
            pub(n)
        total = 3 + 2 + 3 + 3 + 20
        rd = self.reader(url=self.url(ch), mode="long-poll", offset="-1", expect=total,
                         graceMs=(LONGPOLL_TIMEOUT_S + 1) * 1000)
        rd.wait(items_seen(3), what="the first 3 messages")

        def pending_long_polls(ls):
            done = {ln["n"] for ln in ls if ln["t"] == "res"}
            return [ln for ln in ls if ln["t"] == "req" and ln["n"] not in done
                    and query(ln["url"]).get("live") == "long-poll"]

        # during a held long-poll
        rd.wait(pending_long_polls, what="a held long-poll")
        time.sleep(0.5)
        pub(4)
        pub(5)
        rd.wait(items_seen(5), what="messages published during a hold")
        # after a hold timed out (204)
        rd.wait(lambda ls: any(ln["t"] == "res" and ln["status"] == 204 for ln in ls),
                timeout=LONGPOLL_TIMEOUT_S * 3, what="a 204 after the hold")
        for n in range(6, 9):
            pub(n)
            time.sleep(0.3)
        rd.wait(items_seen(8), what="messages published after a 204")
        # about when a hold times out (the 204 and the message race)
        for delay in (LONGPOLL_TIMEOUT_S - 0.05, LONGPOLL_TIMEOUT_S, LONGPOLL_TIMEOUT_S + 0.05):
            req = rd.wait(pending_long_polls, what="a held long-poll")[-1]
            seen = len(rd.items())
            time.sleep(max(0.0, delay - (time.monotonic() - self._req_time(rd, req))))
            pub(len(expected) + 1)
            rd.wait(items_seen(seen + 1), what="a message published at the hold's end")
        # a steady flow
        for _ in range(20):
            pub(len(expected) + 1)
            time.sleep(0.1)
        self.assertEqual(len(expected), total)

        r = rd.result()
        self.assertNoError(r)
        self.assertEqual(r["items"], expected, "each message once, in order")
        self.assertEqual(r["offset"], position(self.epoch, total))
        ex = rd.exchanges()
        first_req, first_res = ex[0]
        self.assertEqual(query(first_req["url"]), {"offset": "-1"})  # catch-up first
        self.assertEqual(first_res["status"], 200)
        # (the last request is the one the reader's end aborted: no status)
        statuses = [res["status"] for _, res in ex if res and res["status"] is not None]
        self.assertIn(204, statuses)
        self.assertTrue(set(statuses) <= {200, 204}, statuses)
        for req, res in ex[1:]:
            q = query(req["url"])
            self.assertEqual(q.get("live"), "long-poll", req)
            self.assertIn("cursor", q, req)
            if res and res["status"] is not None:
                # every live answer reaches the tail: Stream-Up-To-Date, on 204 too
                self.assertIn("stream-up-to-date", res["headers"], res)
                self.assertIn("stream-next-offset", res["headers"], res)
                self.assertIn("stream-cursor", res["headers"], res)
        # a 204 keeps the offset the request had
        for req, res in ex:
            if res and res["status"] == 204:
                self.assertEqual(res["headers"]["stream-next-offset"], query(req["url"])["offset"])

    @staticmethod
    def _req_time(rd, req):
        """The monotonic time of a request line (its ms is on the reader's clock)."""
        return rd.t_start + req["ms"] / 1000.0


class SSETest(DurableStreamsInterop):
    def test_c_sse_across_clean_ends_and_reconnects(self):
        ch = "sse"
        expected = []

        def pub(n):
            expected.append({"n": n})
            self.publish(ch, {"n": n})

        def sse_requests(ls):
            return [ln for ln in ls
                    if ln["t"] == "req" and query(ln["url"]).get("live") == "sse"]

        for n in range(1, 4):
            pub(n)
        total = 3 + 2 + 2 + 3 + 25
        rd = self.reader(url=self.url(ch), mode="sse", offset="-1", expect=total,
                         graceMs=(SSE_LIFETIME_S + 1) * 1000)
        rd.wait(items_seen(3), what="the first 3 messages")
        rd.wait(sse_requests, what="the SSE request")
        pub(4)
        pub(5)
        rd.wait(items_seen(5), what="messages on the first SSE response")
        # the response ends after the lifetime; the client reconnects from its offset
        rd.wait(lambda ls: len(sse_requests(ls)) >= 2, timeout=SSE_LIFETIME_S * 3,
                what="an SSE reconnect")
        pub(6)
        pub(7)
        rd.wait(items_seen(7), what="messages after a reconnect")
        # about when a response ends (the clean end and the message race)
        for delay in (SSE_LIFETIME_S - 0.05, SSE_LIFETIME_S, SSE_LIFETIME_S + 0.05):
            k = len(rd.wait(sse_requests))
            req = sse_requests(rd.lines)[-1]
            seen = len(rd.items())
            time.sleep(max(0.0, delay - (time.monotonic() - rd.t_start - req["ms"] / 1000.0)))
            pub(len(expected) + 1)
            rd.wait(items_seen(seen + 1), what="a message published at a response's end")
            rd.wait(lambda ls, k=k: len(sse_requests(ls)) > k, timeout=SSE_LIFETIME_S * 3,
                    what="the next SSE reconnect")
        # a steady flow over at least one more end
        for _ in range(25):
            pub(len(expected) + 1)
            time.sleep(0.15)
        self.assertEqual(len(expected), total)

        r = rd.result()
        self.assertNoError(r)
        self.assertEqual(r["items"], expected, "each message once, in order")
        self.assertEqual(r["offset"], position(self.epoch, total))
        ex = rd.exchanges()
        self.assertEqual(query(ex[0][0]["url"]), {"offset": "-1"})  # catch-up first
        live = [(req, res) for req, res in ex[1:]]
        self.assertGreaterEqual(len(live), 5, "fewer reconnects than lifetimes")
        offsets_seen = {b["offset"] for b in rd.kind("batch")} | {position(self.epoch, 3)}
        prev = ""
        for req, res in live:
            q = query(req["url"])
            # never fell back to long-poll (3 short responses in a row would)
            self.assertEqual(q.get("live"), "sse", req)
            self.assertIn(q["offset"], offsets_seen, req)
            self.assertGreaterEqual(q["offset"], prev, "a reconnect went backwards")
            prev = q["offset"]
            if res and res["status"] is not None:
                self.assertEqual(res["status"], 200, res)
                self.assertIn("text/event-stream", res["headers"]["content-type"])
        self.assertNotIn(b"falling back", rd.stderr.lower())


class WrongEpochTest(DurableStreamsInterop):
    def test_e_offset_of_another_epoch_is_410(self):
        self.publish("ep", {"n": 1})
        other = ("0" if self.epoch[0] != "0" else "1") + self.epoch[1:]
        for mode in ("catchup", "long-poll", "sse"):
            with self.subTest(mode=mode):
                r = self.run_reader(url=self.url("ep"), mode=mode, offset=position(other, 1),
                                    expect=1, timeoutMs=20000)
                self.assertFalse(r["timedOut"], r)
                self.assertIsNotNone(r["error"], r)
                self.assertEqual(r["error"]["status"], 410, r)
                self.assertEqual(r["items"], [])
        # the epoch of the channel, same seq: fine
        r = self.run_reader(url=self.url("ep"), mode="catchup", offset=position(self.epoch, 0))
        self.assertNoError(r)
        self.assertEqual(r["items"], [{"n": 1}])


if __name__ == "__main__":
    main()
