-- Herald history, version 4: the envelope key (SECURITY-REVIEW M4).
--
-- Redis is not trusted with sequence numbers. Whoever can PUBLISH on Redis could forge a
-- sequenced envelope {"op":"message","channel":C,"seq":N,"ts":T,"data":D} and blackhole or
-- replace a channel's stream, so every sequenced envelope that travels over Redis carries an
-- HMAC-SHA256 made with a key only PostgreSQL (and the gateways, which read it from here)
-- knows, as its last member:
--
--   envelope (stored in herald_messages.envelope, what clients get):
--       {"op":"message","channel":"room:1","seq":1,"ts":1700000000000,"data":{"text":"hi"}}
--   signed Redis payload = the envelope without its final '}' || ',"sig":"' || hex || '"}'
--       {"op":"message",...,"data":{"text":"hi"},"sig":"<64 lowercase hex digits>"}
--   hex = lowercase hex of HMAC-SHA256(key, epoch || E'\n' || envelope), over the UTF-8 bytes
--
-- epoch is the channel's epoch (herald_channels.epoch), so a signed envelope of one life of a
-- channel cannot be replayed into the next. Gateways deliver only envelopes whose sig verifies
-- (common/envelope_sig.h computes the same MAC in C). Producers that publish through SQL sign
-- with herald_sign():
--
--   SELECT herald_sign(epoch, envelope) FROM herald_publish('room:1', '{"text":"hi"}');
--   -- then PUBLISH room:1 <that text>
--
-- The key is as secret as the database: Herald runs everything as one role (docs/OPERATIONS.md,
-- "The history database"), so whoever may call herald_publish may read herald_keys and sign.
-- herald_sign runs with its caller's rights, so a producer's role needs SELECT on herald_keys
-- to sign: give it only to roles that may publish anyway, and keep the table (and backups and
-- dumps of it) away from anyone who must not forge messages. Changing the key: UPDATE key,
-- ipad and opad together (herald_hmac_pad below; the CHECK refuses stale pads), then restart
-- the gateways so that they load the new key.

-- key padded to the 64-byte SHA-256 block and XORed with p_byte (0x36: ipad, 0x5c: opad), as
-- HMAC (RFC 2104) does for keys of at most 64 bytes. Called at migration time and by the CHECK
-- below, never per message.
CREATE FUNCTION herald_hmac_pad(p_key bytea, p_byte integer) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT decode(string_agg(lpad(to_hex(get_byte(k.b, i) # p_byte), 2, '0'), '' ORDER BY i),
                  'hex')
    FROM (SELECT p_key || decode(repeat('00', 64 - octet_length(p_key)), 'hex') AS b) k,
         generate_series(0, 63) AS i
$$;

CREATE TABLE herald_keys (
    id         integer PRIMARY KEY CHECK (id = 1),  -- exactly one key
    key        bytea NOT NULL CHECK (octet_length(key) = 32),
    ipad       bytea NOT NULL,  -- key ^ 0x36 (64 bytes), so that a signature costs two
    opad       bytea NOT NULL,  -- sha256() calls and no loop
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ipad = herald_hmac_pad(key, 54) AND opad = herald_hmac_pad(key, 92))
);

-- 32 bytes from two version-4 UUIDs: gen_random_uuid() (core since PostgreSQL 13, no pgcrypto)
-- draws from pg_strong_random(), and each UUID carries 122 random bits (the other 6 are its
-- version and variant), so the key holds 244 random bits. Every database gets its own.
INSERT INTO herald_keys (id, key, ipad, opad)
SELECT 1, k.key, herald_hmac_pad(k.key, 54), herald_hmac_pad(k.key, 92)
FROM (SELECT decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')
             AS key) k;

-- The signed Redis payload of p_envelope (a JSON object, as herald_publish returns it) for a
-- channel whose epoch is p_epoch: HMAC-SHA256 = sha256(opad || sha256(ipad || message)) with
-- the pads read from herald_keys. STABLE (it reads a table), PARALLEL SAFE (it writes nothing).
-- PL/pgSQL rather than SQL: a SQL function with a FROM clause is not inlined and would plan its
-- query on every call; PL/pgSQL keeps the plan for the session.
CREATE FUNCTION herald_sign(p_epoch text, p_envelope text) RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    v_mac bytea;
BEGIN
    IF length(p_envelope) < 2 OR right(p_envelope, 1) <> '}' THEN
        RAISE EXCEPTION 'herald: the envelope must be a JSON object' USING ERRCODE = '22023';
    END IF;
    SELECT sha256(k.opad || sha256(k.ipad || convert_to(p_epoch || E'\n' || p_envelope, 'UTF8')))
        INTO v_mac FROM herald_keys k WHERE k.id = 1;
    IF v_mac IS NULL THEN
        RAISE EXCEPTION 'herald: no envelope key (herald_keys is empty)' USING ERRCODE = '55000';
    END IF;
    RETURN left(p_envelope, -1) || ',"sig":"' || encode(v_mac, 'hex') || '"}';
END;
$$;
