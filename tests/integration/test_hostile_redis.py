#!/usr/bin/python3
"""Hostile suite, part 4: forged Redis payloads (spec issue12.md section 5).

Whoever can PUBLISH on Redis must not be able to make subscribers skip, replace or stall
sequenced messages. Every case PUBLISHes bytes through resp.py straight onto the channel a
subscriber listens to, then publishes real messages through the gateway (REST, API key) and
checks that the subscriber's next messages are exactly the real ones, in order.

Findings covered here (ids also in each test's docstring):
  M4  an envelope-shaped payload blackholes or spoofs a channel
  M7  (partly: forged frames flood; the held-bytes cap is in test_hostile_flood.py)
"""

import hashlib
import hmac
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile as H  # noqa: E402
from hostile import API_KEY, HostileCase, ws_next_json  # noqa: E402

UNVERIFIED = "herald_unverified_envelopes_total"
INVALID = "herald_invalid_payloads_total"


def envelope(ch, seq, data, ts=0, **extra):
    env = {"op": "message", "channel": ch, "seq": seq, "ts": ts, "data": data}
    env.update(extra)
    return json.dumps(env, separators=(",", ":"))


class RedisCase(HostileCase):
    herald_args = ("--max-publish-bytes", "64k")

    def ch(self, suffix=""):
        return "rd:" + self._testMethodName[5:60] + suffix

    def real(self, ch, data):
        r = self.post(ch, json.dumps(data))
        self.assertEqual(r.status, 201, r)
        return r.json()["seq"]

    def known(self, ws, ch):
        """One real message first: the gateway learns the channel's epoch, so that what is
        forged next can be checked (and counted) rather than only fetched from PostgreSQL."""
        self.expect_real_next(ws, ch, 1, "known")

    def expect_real_next(self, ws, ch, n=2, tag="real"):
        """Publishes n real messages through the gateway and asserts they are the next n
        messages ws gets (nothing forged before or between them). Returns their seqs."""
        seqs = [self.real(ch, {tag: i}) for i in range(n)]
        for i, seq in enumerate(seqs):
            m = ws_next_json(ws, 20)
            self.assertEqual((m.get("op"), m.get("channel"), m.get("seq"), m.get("data")),
                             ("message", ch, seq, {tag: i}), "a forged message got through")
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + n)))
        return seqs

    def head(self, ch):
        v = self.pg.sql(f"SELECT last_seq FROM herald_channels WHERE name = {H.sql_quote(ch)}")
        return int(v) if v else 0

    def stored(self, ch, seq):
        """(envelope, epoch) of a stored message."""
        out = self.pg.sql(f"SELECT m.envelope || E'\\x01' || c.epoch FROM herald_messages m JOIN "
                          f"herald_channels c ON c.name = m.channel WHERE m.channel = "
                          f"{H.sql_quote(ch)} AND m.seq = {seq}")
        env, epoch = out.split("\x01")
        return env, epoch

    def key(self):
        return H.signing_key(self.pg)

    def signed(self, ch, seq):
        """The signed Redis payload of a stored message, computed here from the key in
        herald_keys, and checked against herald_sign() (SQL)."""
        env, epoch = self.stored(ch, seq)
        mine = H.sign_envelope(self.key(), epoch, env)
        theirs = self.pg.sql(f"SELECT herald_sign({H.sql_quote(epoch)}, {H.sql_quote(env)})")
        self.assertEqual(mine, theirs, "HMAC-SHA256(key, epoch + '\\n' + envelope) computed "
                         "from herald_keys differs from herald_sign()")
        return mine, env, epoch

    def sql_publish(self, ch, data):
        """Stores a message the way an outside producer does (herald_publish), without
        PUBLISHing it; returns its seq."""
        out = self.pg.sql(f"SELECT seq FROM herald_publish({H.sql_quote(ch)}, "
                          f"{H.sql_quote(json.dumps(data))}::json)")
        return int(out)


# ---------------------------------------------------------------------------------------------
class TestForgedEnvelopes(RedisCase):
    def test_huge_seq_without_a_sig_does_not_silence_the_channel(self):
        """M4: PUBLISH an envelope with seq 2^63-1 and no sig: never delivered, the channel's
        position does not move (real messages seq 2 and 3 still arrive), counted as
        unverified."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.expect_real_next(ws, ch, 1, "before")
        self.assertGreaterEqual(self.redis.publish(ch, envelope(ch, 2 ** 63 - 1, {"evil": 1})), 1)
        self.expect_real_next(ws, ch, 2)
        # a held forgery would be let through after its hold (100 ms) and a gap query: give
        # it that time (this wait only makes the bug visible; a correct gateway passes
        # without it), then real messages must still come
        time.sleep(0.5)
        self.expect_real_next(ws, ch, 1, "after")
        self.unharmed(heads={ch: 4}, metrics={UNVERIFIED: 1})

    def test_head_plus_one_with_fake_data_is_not_delivered(self):
        """M4: seq = head + 1 with fake data and no sig: not delivered; the real message that
        gets that seq is delivered with its real data."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.known(ws, ch)
        self.redis.publish(ch, envelope(ch, 2, {"fake": True}, ts=int(time.time() * 1000)))
        self.expect_real_next(ws, ch, 2)
        self.unharmed(heads={ch: 3}, metrics={UNVERIFIED: 1})

    def test_envelope_for_another_channel(self):
        """M4: an envelope naming another channel, PUBLISHed on this one: dropped, counted
        (invalid or unverified), nothing delivered."""
        ch = self.ch()
        ws = self.subscriber(ch)
        inv0 = (self.metric_before(INVALID) or 0) + (self.metric_before(UNVERIFIED) or 0)
        self.redis.publish(ch, envelope("rd:other", 1, {"wrong": 1}))
        self.expect_real_next(ws, ch, 2)
        H.wait_for(lambda: (self.metric_now(INVALID) or 0) + (self.metric_now(UNVERIFIED) or 0)
                   >= inv0 + 1, 10, what="the drop counted")
        self.unharmed(heads={ch: 2})

    def test_wrong_sig_is_not_delivered(self):
        """M4: a well-formed sig (64 lower hex digits) that does not match: not delivered,
        unverified."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.known(ws, ch)
        forged = envelope(ch, 2, {"evil": 1})[:-1] + ',"sig":"' + "ab" * 32 + '"}'
        self.redis.publish(ch, forged)
        self.expect_real_next(ws, ch, 2)
        self.unharmed(heads={ch: 3}, metrics={UNVERIFIED: 1})

    def test_sig_with_a_guessed_key_is_not_delivered(self):
        """M4: a sig computed with another key (and the right epoch) on a forged envelope for
        seq head+1: not delivered."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.expect_real_next(ws, ch, 1, "first")
        _, epoch = self.stored(ch, 1)
        self.redis.publish(ch, H.sign_envelope(b"guessed-key", epoch,
                                               envelope(ch, 2, {"evil": 1})))
        self.expect_real_next(ws, ch, 2)
        self.unharmed(heads={ch: 3}, metrics={UNVERIFIED: 1})

    def test_malformed_sigs_of_a_real_message_are_not_accepted(self):
        """M4: the right MAC of a stored message, but in upper case, cut to 63 digits, as a
        number, not the last member, or given twice: never delivered that way (the message
        itself is delivered once, from PostgreSQL)."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.known(ws, ch)
        seq = self.sql_publish(ch, {"stored": 1})
        good, env, epoch = self.signed(ch, seq)
        mac = good[-66:-2]
        body = env[:-1]
        variants = [
            body + ',"sig":"' + mac.upper() + '"}',
            body + ',"sig":"' + mac[:63] + '"}',
            body + ',"sig":' + str(int(mac[:15], 16)) + "}",
            '{"sig":"' + mac + '",' + env[1:],
            body + ',"sig":"' + mac + '","sig":"' + mac + '"}',
        ]
        for v in variants:
            self.redis.publish(ch, v)
        # the stored message still comes exactly once (PostgreSQL is asked), byte for byte
        op, payload = ws.recv_message(20)
        self.assertEqual(payload.decode(), env)
        self.expect_real_next(ws, ch, 2)
        self.unharmed(heads={ch: 4}, publishes=3, metrics={UNVERIFIED: len(variants)})

    def test_sig_from_another_epoch_is_not_delivered(self):
        """M4: a sig made with the real key but another epoch (a replay from an older life
        of the channel) on a forged seq head+1: not delivered."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.expect_real_next(ws, ch, 1, "first")
        self.redis.publish(ch, H.sign_envelope(self.key(), "0000000000000000",
                                               envelope(ch, 2, {"old": 1})))
        self.expect_real_next(ws, ch, 2)
        self.unharmed(heads={ch: 3}, metrics={UNVERIFIED: 1})

    def test_string_seq_is_invalid(self):
        """An envelope whose seq is a string: dropped as invalid, not delivered."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.redis.publish(ch, '{"op":"message","channel":"%s","seq":"1","ts":0,"data":1}' % ch)
        self.expect_real_next(ws, ch, 1)
        self.unharmed(heads={ch: 1}, metrics={INVALID: 1})


# ---------------------------------------------------------------------------------------------
class TestSignedEnvelopes(RedisCase):
    def test_valid_sig_computed_from_the_key_in_postgres(self):
        """Spec 5: a message stored by herald_publish (SQL) and PUBLISHed with the sig this
        test computes from `SELECT key FROM herald_keys` (HMAC-SHA256 over epoch + "\\n" +
        envelope): delivered at once, exactly the stored bytes (no sig), counted nowhere as
        bad."""
        ch = self.ch()
        ws = self.subscriber(ch)
        seq = self.sql_publish(ch, {"signed": 1})
        payload, env, _ = self.signed(ch, seq)
        self.assertGreaterEqual(self.redis.publish(ch, payload), 1)
        op, got = ws.recv_message(10)
        self.assertEqual(got.decode(), env)
        self.assertNotIn(b'"sig"', got)
        self.expect_real_next(ws, ch, 1)
        self.unharmed(heads={ch: 2}, publishes=1,
                      exact_metrics={UNVERIFIED: 0, INVALID: 0})

    def test_signed_replay_of_an_old_message_is_dropped(self):
        """M4: a correctly signed envelope PUBLISHed again (a replay): a duplicate, dropped,
        not delivered twice."""
        ch = self.ch()
        ws = self.subscriber(ch)
        seq = self.real(ch, {"once": 1})
        m = ws_next_json(ws, 20)
        self.assertEqual(m["seq"], seq)
        payload, _, _ = self.signed(ch, seq)
        self.redis.publish(ch, payload)
        self.expect_real_next(ws, ch, 2)
        self.unharmed(heads={ch: 3}, metrics={"herald_duplicates_dropped_total": 1})

    def test_bare_envelope_of_an_old_producer_is_delivered_once(self):
        """Spec 5: an outside producer that stores with herald_publish and PUBLISHes the bare
        envelope (no sig): the message still arrives (PostgreSQL is asked), exactly once, and
        the bare payload is counted as unverified."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.known(ws, ch)
        seq = self.sql_publish(ch, {"bare": 1})
        env, _ = self.stored(ch, seq)
        self.redis.publish(ch, env)
        op, got = ws.recv_message(20)
        self.assertEqual(got.decode(), env)
        self.expect_real_next(ws, ch, 2)
        self.unharmed(heads={ch: 4}, publishes=3, metrics={UNVERIFIED: 1})


# ---------------------------------------------------------------------------------------------
class TestRawPayloads(RedisCase):
    def test_non_json_payload_is_dropped(self):
        """Not JSON: dropped, counted invalid, nothing delivered."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.redis.publish(ch, b"{not json at all")
        self.expect_real_next(ws, ch, 1)
        self.unharmed(heads={ch: 1}, metrics={INVALID: 1})

    def test_invalid_utf8_payload_is_dropped(self):
        """Invalid UTF-8 inside a JSON string: dropped, counted invalid."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.redis.publish(ch, b'{"a":"\xff\xfe"}')
        self.expect_real_next(ws, ch, 1)
        self.unharmed(heads={ch: 1}, metrics={INVALID: 1})

    def test_payload_with_a_nul_byte_is_dropped(self):
        """A raw NUL after a number (jansson alone ends the number there and reads on):
        dropped, counted invalid, never delivered with its NUL."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.redis.publish(ch, b'{"n":1\x00}')
        self.redis.publish(ch, b'[1\x00]')
        self.expect_real_next(ws, ch, 1)
        self.unharmed(heads={ch: 1}, exact_metrics={INVALID: 2})

    def test_raw_payload_over_the_publish_limit_is_dropped(self):
        """Spec 5: a raw payload larger than HERALD_MAX_PUBLISH_BYTES (64k here), by far or
        by less than the 1 KiB an envelope may add around its data: dropped, counted
        invalid, not delivered. One of exactly 64k is delivered."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.redis.publish(ch, json.dumps({"big": "x" * 70000}))
        self.redis.publish(ch, json.dumps({"big": "x" * (65536 + 500 - 11)}))
        exact = json.dumps({"big": "x" * (65536 - 11)})
        self.assertEqual(len(exact), 65536)
        self.redis.publish(ch, exact)
        m = ws_next_json(ws, 10)
        self.assertEqual((m.get("seq"), len(m["data"]["big"])), (None, 65536 - 11))
        self.expect_real_next(ws, ch, 1)
        self.unharmed(heads={ch: 1}, exact_metrics={INVALID: 2})

    def test_raw_payload_within_limits_is_delivered_raw(self):
        """Control: a raw JSON object (no op/seq) is delivered as a raw message, no seq."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.redis.publish(ch, '{"op":"note","seq_like":1}')
        m = ws_next_json(ws, 10)
        self.assertEqual(m, {"op": "message", "channel": ch,
                             "data": {"op": "note", "seq_like": 1}})
        self.unharmed()

    def test_deeply_nested_raw_payload(self):
        """A 5000-deep raw payload: no crash; dropped or delivered raw, and real messages
        keep their order."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.redis.publish(ch, "[" * 5000 + "]" * 5000)
        seq = self.real(ch, {"after": 1})
        while True:
            m = ws_next_json(ws, 20)
            if m.get("seq") == seq:
                break
            self.assertNotIn("seq", m, m)  # only the raw one may come first
        self.unharmed(heads={ch: 1})

    def test_forged_flood_is_dropped_with_bounded_queries(self):
        """M4/M7: 300 unsigned envelopes with seqs far ahead: none delivered, the real ones
        still come in order, and PostgreSQL is asked at most once per 100 ms for the
        channel (plus the 2 s head checks)."""
        ch = self.ch()
        ws = self.subscriber(ch)
        self.known(ws, ch)
        q0 = self.metric_now("herald_db_queries_total")
        t0 = time.monotonic()
        with H.RedisConn(self.redis.port) as r:
            r.pipeline([("PUBLISH", ch, envelope(ch, 10 + i, {"f": i})) for i in range(300)])
        seqs = self.expect_real_next(ws, ch, 2)
        elapsed = time.monotonic() - t0
        queries = self.metric_now("herald_db_queries_total") - q0
        # 2 publishes (1-2 batches), 1 per 100 ms for the forged channel, head checks
        self.assertLessEqual(queries, 4 + elapsed / 0.1 + elapsed / 2 + 2,
                             f"{queries} queries in {elapsed:.1f}s")
        self.assertEqual(seqs, [2, 3])
        self.unharmed(heads={ch: 3}, metrics={UNVERIFIED: 300})

    def test_forgeries_on_a_channel_without_an_epoch_are_fetched_at_a_bounded_rate(self):
        """M4/M7: a channel with no message yet has no epoch to check a signature with, so
        the first envelope is fetched from PostgreSQL at once. 100 forged ones spread over
        a second must not each cost a query: at most one at once per 100 ms plus the held
        hint's one per 100 ms (and head checks). None is delivered, none counted
        unverified (nothing to verify with), and the first real messages come in order."""
        ch = self.ch()
        ws = self.subscriber(ch)
        q0 = self.metric_now("herald_db_queries_total")
        t0 = time.monotonic()
        with H.RedisConn(self.redis.port) as r:
            for i in range(100):
                r.pipeline([("PUBLISH", ch, envelope(ch, 1 + i, {"f": i}))])
                time.sleep(0.01)
        elapsed = time.monotonic() - t0
        queries = self.metric_now("herald_db_queries_total") - q0
        self.assertLessEqual(queries, 2 * elapsed / 0.1 + elapsed / 2 + 4,
                             f"{queries} queries in {elapsed:.1f}s")
        self.assertEqual(self.expect_real_next(ws, ch, 2), [1, 2])
        self.unharmed(heads={ch: 2}, exact_metrics={UNVERIFIED: 0})


if __name__ == "__main__":
    H.run_module()
