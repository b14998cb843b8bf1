-- Herald history, version 1: per-channel counters and the messages they numbered.
-- Applied by `herald migrate` inside one transaction under an advisory lock.

CREATE TABLE herald_channels (
    name       text PRIMARY KEY,
    last_seq   bigint NOT NULL DEFAULT 0,
    -- one life of the channel's history: a new epoch means the history was lost and restarted
    epoch      text NOT NULL DEFAULT substr(md5(random()::text || clock_timestamp()::text), 1, 16),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE herald_messages (
    channel         text NOT NULL,
    seq             bigint NOT NULL,
    ts              bigint NOT NULL,  -- publish time, Unix milliseconds
    envelope        text NOT NULL,    -- the exact bytes PUBLISHed to Redis and replayed
    idempotency_key text,
    PRIMARY KEY (channel, seq)
);

CREATE UNIQUE INDEX herald_messages_idempotency
    ON herald_messages (channel, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX herald_messages_ts ON herald_messages (ts);

-- Step 1 of a durable publish: assigns the channel's next seq and stores the envelope, in
-- the caller's transaction. The UPDATE holds the channel row's lock until COMMIT, so commit
-- order equals seq order per channel. A retry with the same idempotency key returns the
-- first message (duplicate = true) and stores nothing. Step 2, after COMMIT: PUBLISH the
-- returned envelope to the Redis channel (prefix + channel) unless duplicate.
CREATE FUNCTION herald_publish(p_channel text, p_data json, p_idempotency_key text DEFAULT NULL)
RETURNS TABLE (seq bigint, envelope text, epoch text, duplicate boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_seq   bigint;
    v_epoch text;
    v_ts    bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    v_env   text;
BEGIN
    IF p_channel IS NULL OR p_channel !~ '^[A-Za-z0-9_.:@=-]{1,200}$' THEN
        RAISE EXCEPTION 'herald: invalid channel name' USING ERRCODE = '22023';
    END IF;
    IF p_data IS NULL THEN
        RAISE EXCEPTION 'herald: data is required' USING ERRCODE = '22023';
    END IF;
    INSERT INTO herald_channels AS c (name) VALUES (p_channel) ON CONFLICT (name) DO NOTHING;
    -- lock first, then look for the key: a concurrent retry waits here and then sees the
    -- first attempt's committed row
    PERFORM 1 FROM herald_channels c WHERE c.name = p_channel FOR UPDATE;
    IF p_idempotency_key IS NOT NULL THEN
        RETURN QUERY
            SELECT m.seq, m.envelope, c.epoch, true
            FROM herald_messages m JOIN herald_channels c ON c.name = m.channel
            WHERE m.channel = p_channel AND m.idempotency_key = p_idempotency_key;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    UPDATE herald_channels c SET last_seq = c.last_seq + 1
        WHERE c.name = p_channel RETURNING c.last_seq, c.epoch INTO v_seq, v_epoch;
    v_env := '{"op":"message","channel":' || to_json(p_channel)::text || ',"seq":' || v_seq
             || ',"ts":' || v_ts || ',"data":' || p_data::text || '}';
    INSERT INTO herald_messages (channel, seq, ts, envelope, idempotency_key)
        VALUES (p_channel, v_seq, v_ts, v_env, p_idempotency_key);
    RETURN QUERY SELECT v_seq, v_env, v_epoch, false;
END;
$$;

-- Retention: deletes at most p_batch messages older than p_ttl_ms or beyond the newest
-- p_max of their channel; returns how many went. Both searches use an index (ts, and the
-- primary key probed once per channel), so a batch costs little on a large table.
-- last_seq is never lowered.
CREATE FUNCTION herald_prune(p_ttl_ms bigint, p_max bigint, p_batch integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_cut   bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint - p_ttl_ms;
    v_count integer;
    v_n     integer;
    r       record;
BEGIN
    DELETE FROM herald_messages WHERE ctid IN (
        SELECT ctid FROM herald_messages WHERE ts < v_cut LIMIT p_batch);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    FOR r IN
        SELECT c.name, c.last_seq - p_max AS upto FROM herald_channels c
        WHERE EXISTS (SELECT 1 FROM herald_messages m
                      WHERE m.channel = c.name AND m.seq <= c.last_seq - p_max)
    LOOP
        EXIT WHEN v_count >= p_batch;
        DELETE FROM herald_messages WHERE ctid IN (
            SELECT ctid FROM herald_messages
            WHERE channel = r.name AND seq <= r.upto ORDER BY seq LIMIT p_batch - v_count);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_count := v_count + v_n;
    END LOOP;
    RETURN v_count;
END;
$$;
