"""Migration 004 against a real PostgreSQL: the envelope key (one row, 32 random bytes, its own
per database) and herald_sign(), checked against Python's hmac module; the publish functions
and `herald migrate` still behave with it."""

import hashlib
import hmac
import json

from harness import main
from pg import PG_USER, HistoryTestCase


def signed_members(text):
    """The members of a JSON object in their order (duplicates kept)."""
    return json.loads(text, object_pairs_hook=lambda pairs: pairs)


class EnvelopeKeyTest(HistoryTestCase):
    async def asyncSetUp(self):
        self.pg = self.start_postgres()
        r = self.herald_cli("migrate", pg=self.pg)
        self.assertGreaterEqual(json.loads(r.stdout)["applied"], 4)

    def key(self, db="herald"):
        return bytes.fromhex(self.pg.sql("SELECT encode(key, 'hex') FROM herald_keys", db=db))

    async def test_one_random_key_per_database(self):
        self.assertEqual(self.pg.sql("SELECT count(*), min(id), min(octet_length(key)) "
                                     "FROM herald_keys"), "1|1|32")
        key = self.key()
        self.assertNotEqual(key, bytes(32))
        # the pads are the key's, as HMAC wants them
        pads = self.pg.sql("SELECT encode(ipad, 'hex') || ' ' || encode(opad, 'hex') "
                           "FROM herald_keys").split()
        block = key + bytes(32)
        self.assertEqual(bytes.fromhex(pads[0]), bytes(b ^ 0x36 for b in block))
        self.assertEqual(bytes.fromhex(pads[1]), bytes(b ^ 0x5c for b in block))
        # a second database of its own gets another key
        self.pg.sql("CREATE DATABASE herald2", db="postgres")
        other_url = f"postgresql://{PG_USER}@127.0.0.1:{self.pg.port}/herald2"
        self.herald_cli("migrate", "--database-url", other_url)
        other = self.key(db="herald2")
        self.assertEqual(len(other), 32)
        self.assertNotEqual(other, key)
        # exactly one row, and the pads must follow the key
        for bad in ("INSERT INTO herald_keys (id, key, ipad, opad) SELECT 2, key, ipad, opad "
                    "FROM herald_keys",
                    "UPDATE herald_keys SET key = decode(repeat('ab', 32), 'hex')",
                    "UPDATE herald_keys SET key = decode(repeat('ab', 16), 'hex'), "
                    "ipad = herald_hmac_pad(decode(repeat('ab', 16), 'hex'), 54), "
                    "opad = herald_hmac_pad(decode(repeat('ab', 16), 'hex'), 92)"):
            with self.assertRaises(AssertionError, msg=bad):
                self.pg.sql(bad)
        self.assertEqual(self.key(), key)

    async def test_herald_sign_is_hmac_sha256_of_epoch_and_envelope(self):
        key = self.key()
        rows = self.pg.sql(
            "SELECT p.epoch, p.envelope, herald_sign(p.epoch, p.envelope) FROM herald_publish("
            "'room:1', '{\"text\": \"h\u00e9llo \u2603\", \"n\": [1, 2.50, null]}') p")
        epoch, envelope, signed = rows.split("|")
        mac = hmac.new(key, epoch.encode() + b"\n" + envelope.encode(), hashlib.sha256)
        self.assertEqual(signed, envelope[:-1] + ',"sig":"' + mac.hexdigest() + '"}')
        # valid JSON: the envelope's members in their order, then sig, last
        members = signed_members(signed)
        self.assertEqual(members[:-1], signed_members(envelope))
        self.assertEqual(members[-1], ("sig", mac.hexdigest()))
        self.assertEqual([k for k, _ in members], ["op", "channel", "seq", "ts", "data", "sig"])
        # the epoch is part of what is signed
        self.assertNotEqual(self.pg.sql(f"SELECT herald_sign('x{epoch[1:]}', "
                                        f"$e${envelope}$e$)"), signed)
        # any envelope text; and what is not an object is refused
        self.assertEqual(self.pg.sql("SELECT herald_sign('e', '{}')"),
                         '{,"sig":"' + hmac.new(key, b"e\n{}", hashlib.sha256).hexdigest()
                         + '"}')
        for bad in ("'[1]'", "'{\"a\":1} '", "'}'", "''"):
            with self.assertRaises(AssertionError) as cm:
                self.pg.sql(f"SELECT herald_sign('e', {bad})")
            self.assertIn("must be a JSON object", str(cm.exception))
        self.assertEqual(self.pg.sql("SELECT herald_sign(NULL, '{}') IS NULL"), "t")
        self.assertEqual(self.pg.sql(
            "SELECT provolatile::text || proparallel::text FROM pg_proc WHERE proname = 'herald_sign'"), "ss")

    async def test_publish_functions_still_work(self):
        out = self.pg.sql("SELECT b.ord, b.seq, b.duplicate FROM herald_publish_batch("
                          "ARRAY['a', 'b', 'a', 'a'], ARRAY['1', '2', '3', '4']::json[], "
                          "ARRAY[NULL, 'k', 'k', NULL]) b")
        self.assertEqual(out.splitlines(), ["1|1|f", "2|1|f", "3|2|f", "4|3|f"])
        out = self.pg.sql("SELECT seq, duplicate FROM herald_publish('b', '5', 'k')")
        self.assertEqual(out, "1|t")  # the stored first message, key k on channel b
        out = self.pg.sql("SELECT seq, duplicate FROM herald_publish('b', '6')")
        self.assertEqual(out, "2|f")
        self.assertEqual(self.pg.sql("SELECT string_agg(channel || seq, ',' ORDER BY channel, seq)"
                                     " FROM herald_messages"), "a1,a2,a3,b1,b2")
        # a signed envelope of a stored message, as a producer would PUBLISH it
        signed = self.pg.sql("SELECT herald_sign(c.epoch, m.envelope) FROM herald_messages m "
                             "JOIN herald_channels c ON c.name = m.channel "
                             "WHERE m.channel = 'a' AND m.seq = 3")
        self.assertEqual(json.loads(signed)["data"], 4)

    async def test_migrate_is_idempotent(self):
        key = self.key()
        versions = self.pg.sql("SELECT string_agg(version::text, ',' ORDER BY version) "
                               "FROM herald_schema")
        self.assertIn("4", versions.split(","))
        for _ in range(2):
            r = self.herald_cli("migrate", pg=self.pg)
            self.assertEqual(json.loads(r.stdout), {"applied": 0})
        self.assertEqual(self.key(), key)
        self.assertEqual(self.pg.sql("SELECT count(*) FROM herald_keys"), "1")
        self.assertEqual(self.pg.sql("SELECT string_agg(version::text, ',' ORDER BY version) "
                                     "FROM herald_schema"), versions)


if __name__ == "__main__":
    main()
