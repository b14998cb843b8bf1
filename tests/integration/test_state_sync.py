#!/usr/bin/python3
"""State sync (issue 16, point 1): a channel's position without its messages.

- GET /v1/channels/{C} answers {"channel","seq","epoch"}: the head and epoch PostgreSQL holds,
  seq 0 and epoch null for a channel nothing was published to; the same auth as the pages
  (401 without credentials, 403 outside the token's channels);
- herald_position(C) gives the same inside the application's own statement, and a statement
  that reads the application's rows with it sees exactly the messages up to that seq, while
  publishes commit meanwhile;
- at the byte level: a body on the GET, a POST to the position route, bad and empty channel
  names, a position route with a trailing slash, a query string, and pipelined requests; after
  each the gateway is alive and nothing is stored.
"""

import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile as H  # noqa: E402
from hostile import API_KEY, HostileCase, RawHTTP, get_bytes, post_bytes, request_bytes  # noqa


class PositionCase(HostileCase):
    def ch(self, suffix=""):
        return "ss:" + self._testMethodName[5:60] + suffix

    def position(self, channel, cred=API_KEY):
        return self.rest(get_bytes(f"/v1/channels/{channel}", cred=cred))

    def sql_position(self, channel):
        row = self.pg.sql(f"SELECT seq, coalesce(epoch, 'NULL') "
                          f"FROM herald_position({H.sql_quote(channel)})")
        seq, epoch = row.split("|")
        return int(seq), None if epoch == "NULL" else epoch

    def publish_sql(self, channel, n):
        self.pg.sql(f"SELECT herald_publish({H.sql_quote(channel)}, json_build_object('i', g)) "
                    f"FROM generate_series(1, {n}) g")

    # -- the answers ----------------------------------------------------------------------

    def test_position_of_a_channel(self):
        ch = self.ch()
        self.publish_sql(ch, 3)
        epoch = self.pg.sql(f"SELECT epoch FROM herald_channels WHERE name = {H.sql_quote(ch)}")
        r = self.position(ch)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"channel": ch, "seq": 3, "epoch": epoch})
        self.assertEqual(r.headers.get("content-type"), "application/json")
        self.assertEqual(self.sql_position(ch), (3, epoch))
        # the position moves with publishes through the gateway too
        self.assertEqual(self.post(ch, '{"n":4}').status, 201)
        self.assertEqual(self.position(ch).json()["seq"], 4)
        self.unharmed(heads={ch: 4}, publishes=1)

    def test_position_of_a_channel_never_published(self):
        ch = self.ch()
        r = self.position(ch)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"channel": ch, "seq": 0, "epoch": None})
        self.assertEqual(self.sql_position(ch), (0, None))
        # reading a position creates nothing
        self.assertEqual(self.pg.sql(
            f"SELECT count(*) FROM herald_channels WHERE name = {H.sql_quote(ch)}"), "0")
        self.unharmed()

    def test_query_string_is_ignored(self):
        ch = self.ch()
        self.publish_sql(ch, 2)
        r = self.rest(get_bytes(f"/v1/channels/{ch}?since=abc&limit=-1", cred=API_KEY))
        self.assertEqual((r.status, r.json()["seq"]), (200, 2), r)
        self.unharmed(heads={ch: 2}, publishes=0)

    def test_auth(self):
        ch = self.ch()
        r = self.position(ch, cred=None)
        self.assertEqual((r.status, r.error_code()), (401, "unauthorized"), r)
        r = self.position(ch, cred=H.reader_token(["elsewhere:*"]))
        self.assertEqual((r.status, r.error_code()), (403, "forbidden"), r)
        r = self.position(ch, cred=H.reader_token([ch]))
        self.assertEqual((r.status, r.json()["seq"]), (200, 0), r)
        self.unharmed(errors={"unauthorized": 1, "forbidden": 1})

    def test_snapshot_with_the_applications_rows(self):
        """A statement reading herald_position with the application's rows sees exactly the
        messages up to that seq, while another session publishes all along."""
        ch = self.ch()
        self.publish_sql(ch, 1)
        stop = threading.Event()

        def publish():
            while not stop.is_set():
                self.publish_sql(ch, 5)
        t = threading.Thread(target=publish, daemon=True)
        t.start()
        try:
            seen = set()
            for _ in range(40):
                row = self.pg.sql(
                    f"SELECT p.seq, (SELECT count(*) FROM herald_messages m "
                    f"WHERE m.channel = {H.sql_quote(ch)}) "
                    f"FROM herald_position({H.sql_quote(ch)}) p")
                seq, rows = map(int, row.split("|"))
                self.assertEqual(seq, rows, "the position and the rows of one snapshot differ")
                seen.add(seq)
        finally:
            stop.set()
            t.join(30)
        self.assertGreater(len(seen), 3, "publishes did not run during the reads")
        head = int(self.pg.sql(f"SELECT last_seq FROM herald_channels "
                               f"WHERE name = {H.sql_quote(ch)}"))
        self.unharmed(heads={ch: head}, publishes=0)

    def test_load_then_stream_while_publishing(self):
        """The recipe end to end: while a producer publishes all along, readers load the
        state (the position, and the messages up to it as the application's state) and then
        subscribe strictly from that position. Each sees every message exactly once: the
        state up to its position, the stream after it, nothing twice, nothing missing."""
        ch = self.ch()
        self.publish_sql(ch, 3)
        stop = threading.Event()

        def publish():
            while not stop.is_set():
                self.publish_sql(ch, 2)
        t = threading.Thread(target=publish, daemon=True)
        t.start()
        readers = []
        try:
            for _ in range(6):
                pos = self.position(ch).json()
                page = self.rest(get_bytes(f"/v1/channels/{ch}/messages?since=0&limit=1000",
                                           cred=API_KEY)).json()
                state = [m["seq"] for m in page["messages"] if m["seq"] <= pos["seq"]]
                self.assertEqual(state, list(range(1, pos["seq"] + 1)))
                ws = H.open_ws(self.h.port, token=H.reader_token([ch]))
                self.addCleanup(ws.close)
                ws.send_json({"op": "subscribe", "channel": ch, "since": pos["seq"],
                              "epoch": pos["epoch"], "strict": True})
                readers.append((ws, state))
                H.wait_for(lambda: self.position(ch).json()["seq"] > pos["seq"] + 2, 20,
                           what="publishes between readers")
            last = pos["seq"]
            H.wait_for(lambda: self.position(ch).json()["seq"] > last + 6, 20,
                       what="publishes after the last reader subscribed")
        finally:
            stop.set()
            t.join(30)
        head = int(self.pg.sql(f"SELECT last_seq FROM herald_channels "
                               f"WHERE name = {H.sql_quote(ch)}"))
        self.assertGreater(head, readers[0][1][-1] + 5, "publishes did not run meanwhile")
        for ws, state in readers:
            streamed = []
            while (state + streamed)[-1] < head:
                m = H.ws_next_json(ws, 20)
                self.assertNotEqual(m.get("op"), "error", m)
                if m.get("op") == "message":
                    streamed.append(m["seq"])
            self.assertEqual(state + streamed, list(range(1, head + 1)))
        self.unharmed(heads={ch: head}, publishes=0)

    # -- subscribe with last ----------------------------------------------------------------

    def test_subscribe_last_n(self):
        """last:3 on a channel of 6 messages: 4, 5, 6, then subscribed (recovered, replayed 3),
        then live; last:50 gets all 6; last with since is refused and changes nothing."""
        ch = self.ch()
        self.publish_sql(ch, 6)
        ws = H.open_ws(self.h.port, token=H.reader_token([ch]))
        self.addCleanup(ws.close)
        ws.send_json({"op": "subscribe", "channel": ch, "last": 3, "id": 1})
        got = [H.ws_next_json(ws, 20) for _ in range(4)]
        self.assertEqual([m.get("seq") for m in got[:3]], [4, 5, 6])
        self.assertEqual([m["data"]["i"] for m in got[:3]], [4, 5, 6])
        self.assertEqual({k: got[3].get(k) for k in ("op", "seq", "recovered", "replayed", "id")},
                         {"op": "subscribed", "seq": 6, "recovered": True, "replayed": 3,
                          "id": 1})
        self.assertEqual(self.post(ch, '{"i":7}').status, 201)
        self.assertEqual(H.ws_next_json(ws, 20).get("seq"), 7)
        ws2 = H.open_ws(self.h.port, token=H.reader_token([ch]))
        self.addCleanup(ws2.close)
        ws2.send_json({"op": "subscribe", "channel": ch, "last": 50})
        got = [H.ws_next_json(ws2, 20) for _ in range(8)]
        self.assertEqual([m.get("seq") for m in got[:7]], list(range(1, 8)))
        self.assertEqual((got[7]["op"], got[7]["replayed"]), ("subscribed", 7))
        ws2.send_json({"op": "subscribe", "channel": ch + "x", "last": 2, "since": 1, "id": 9})
        err = H.ws_next_json(ws2, 20)
        self.assertEqual((err.get("op"), err.get("code"), err.get("id")),
                         ("error", "bad_request", 9), err)
        self.unharmed(heads={ch: 7}, publishes=1, errors={"bad_request": 1})

    # -- strict subscribe -------------------------------------------------------------------

    def test_strict_resume_refused_then_recovered(self):
        """strict with a stale epoch: an error naming the channel's position instead of
        `subscribed`, no message of the channel afterwards, and the channel is left (a
        subscribe from the position then works); strict that can be served is an ordinary
        resume."""
        ch = self.ch()
        self.publish_sql(ch, 4)
        epoch = self.pg.sql(f"SELECT epoch FROM herald_channels WHERE name = {H.sql_quote(ch)}")
        ws = H.open_ws(self.h.port, token=H.reader_token([ch]))
        self.addCleanup(ws.close)
        subs = self.h.metric("herald_subscriptions")
        ws.send_json({"op": "subscribe", "channel": ch, "since": 2, "epoch": "stale",
                      "strict": True, "id": "s1"})
        err = H.ws_next_json(ws, 20)
        self.assertEqual({k: err.get(k) for k in ("op", "code", "channel", "seq", "epoch", "id")},
                         {"op": "error", "code": "history_reset", "channel": ch, "seq": 4,
                          "epoch": epoch, "id": "s1"}, err)
        # the refused subscription is left: the count is back where it was
        H.wait_for(lambda: self.h.metric("herald_subscriptions") == subs, 10,
                   what="the refused subscription left")
        # a message published now does not reach the refused client
        self.assertEqual(self.post(ch, '{"i":5}').status, 201)
        self.assert_no_message(ws, 1.0)
        # the client reloads (position 5) and subscribes strictly from there
        ws.send_json({"op": "subscribe", "channel": ch, "since": 5, "epoch": epoch,
                      "strict": True, "id": "s2"})
        ok = H.ws_next_json(ws, 20)
        self.assertEqual((ok.get("op"), ok.get("seq"), ok.get("recovered"), ok.get("id")),
                         ("subscribed", 5, True, "s2"), ok)
        self.assertEqual(self.post(ch, '{"i":6}').status, 201)
        self.assertEqual(H.ws_next_json(ws, 20).get("seq"), 6)
        self.assertEqual(self.h.metric("herald_subscriptions"), subs + 1)
        self.unharmed(heads={ch: 6}, publishes=2, errors={"history_reset": 1})

    # -- hostile bytes ----------------------------------------------------------------------

    def test_body_on_the_position_get(self):
        ch = self.ch()
        data = request_bytes("GET", f"/v1/channels/{ch}",
                             [("Authorization", f"Bearer {API_KEY}"), ("Content-Length", "14")],
                             b'{"spoof":true}')
        with RawHTTP(self.h.port) as c:
            c.send(data)
            self.assert_refusal(c.read_response(10), 400, "bad_request", conn=c)
        self.unharmed(errors={"bad_request": 1})

    def test_post_to_the_position_route_stores_nothing(self):
        ch = self.ch()
        r = self.rest(post_bytes(f"/v1/channels/{ch}", '{"x":1}', cred=API_KEY))
        self.assertEqual((r.status, r.error_code()), (404, "not_found"), r)
        self.assertIn("GET /v1/channels/{channel}", r.json()["error"]["message"])
        self.unharmed(errors={"not_found": 1})

    def test_bad_channel_names(self):
        for path in ("/v1/channels/", "/v1/channels/a%20b", "/v1/channels/a/b",
                     "/v1/channels/x/", "/v1/channels/" + "a" * 201,
                     "/v1/channels/ok/messages/more"):
            with self.subTest(path=path):
                r = self.rest(get_bytes(path, cred=API_KEY))
                self.assertEqual((r.status, r.error_code()), (400, "bad_request"), r)
        self.unharmed(errors={"bad_request": 6})

    def test_pipelined_positions(self):
        """Two GETs in one write: lws answers them one after the other, each with its own
        position (or refuses the second as pipelined); never a mixed-up answer."""
        a, b = self.ch("a"), self.ch("b")
        self.publish_sql(a, 2)
        self.publish_sql(b, 5)
        with RawHTTP(self.h.port) as c:
            c.send(get_bytes(f"/v1/channels/{a}", cred=API_KEY)
                   + get_bytes(f"/v1/channels/{b}", cred=API_KEY))
            r1 = c.read_response(10)
            self.assertEqual((r1.status, r1.json()["channel"], r1.json()["seq"]), (200, a, 2))
            if r1.headers.get("connection", "").lower() != "close":
                r2 = c.read_response(10)
                self.assertIsNotNone(r2)
                if r2.status == 200:
                    self.assertEqual((r2.json()["channel"], r2.json()["seq"]), (b, 5))
                else:
                    self.assertEqual(r2.status, 400, r2)
        self.unharmed(heads={a: 2, b: 5}, publishes=0)


if __name__ == "__main__":
    H.run_module()
