-- Herald history, version 5: idle channels go, and retention stops visiting every channel
-- (SECURITY-REVIEW L5).
--
-- Until now no rule deleted a herald_channels row, and herald_prune looked at every row on
-- every batch, so a publisher allowed a wildcard could grow both without bound. From here:
--
-- * A channel that holds no message any more (its newest message was older than the TTL and
--   is gone) is deleted. Its history is gone anyway; a later publish creates the row again
--   with a new epoch and seq 1, which readers see as history_reset, by design.
-- * The per-channel limit (p_max) is checked only on channels published to since retention
--   last looked at them: the `dirty` flag, set by every publish, cleared by herald_prune_step,
--   and indexed by a partial index that holds the dirty rows and nothing else.
-- * herald_prune_step works in bounded steps and says whether more is waiting; the gateway
--   calls it until it says no. herald_prune keeps its signature for gateways built before.
--
-- The race with a concurrent publish. herald_publish_batch (versions 2 and 3) inserted the
-- channel rows with ON CONFLICT DO NOTHING and locked them in a second statement; a channel
-- row deleted between the two was then neither inserted nor locked, and the publish silently
-- stored nothing for that channel and returned fewer rows. Version 5 inserts and locks in one
-- statement, INSERT ... ON CONFLICT DO UPDATE ... WHERE false: an existing row is locked (FOR
-- NO KEY UPDATE; the WHERE only keeps it from being rewritten) and a missing one inserted,
-- atomically. When the conflicting row is being deleted, the insert waits for the deleter and
-- then inserts afresh, so when the statement ends every channel of the batch has a row that
-- this transaction holds. herald_prune_step, on its side, locks channel rows only with FOR
-- UPDATE SKIP LOCKED (a channel being published to is left for later; retention never waits
-- for a publish, so the two cannot deadlock) and checks emptiness in a later statement, whose
-- snapshot sees every publish that held the lock before it. A channel row is therefore
-- deleted only while no publish holds it, and only when no committed message is left in it.

ALTER TABLE herald_channels ADD COLUMN dirty boolean NOT NULL DEFAULT true;
-- Existing rows start dirty, so the first sweeps look at every channel once (in bounded
-- steps) and delete the empty ones an older version left behind. A publish sets dirty on a
-- row that has it already without changing its value, so the update stays HOT; a channel
-- costs an index entry only on its first publish after retention cleared the flag.
CREATE INDEX herald_channels_dirty ON herald_channels (name) WHERE dirty;

-- Retention's own state: one row, locked by the step that runs (another one skips).
CREATE TABLE herald_prune_state (
    id      integer PRIMARY KEY CHECK (id = 1),
    after   text NOT NULL DEFAULT '',        -- the sweep of dirty channels goes on after this name
    recheck text[] NOT NULL DEFAULT '{}'     -- maybe-idle channels a publish held at the last step
);
INSERT INTO herald_prune_state (id) VALUES (1);

-- One bounded step of retention:
--   1. deletes at most p_batch messages older than p_ttl_ms (the ts index finds them);
--   2. looks at the next p_batch dirty channels after the sweep's position, in name order,
--      and deletes what passes the newest p_max of each, as long as the p_batch budget of
--      messages lasts;
--   3. locks (SKIP LOCKED) the channels of 2 and those that lost messages in 1, then deletes
--      the ones with no message left (idle) and clears the flag of those trimmed to p_max.
-- Returns the messages and channel rows deleted, and more = true when work is waiting (the
-- budget ran out, or the sweep has not reached the last dirty channel): call again at once.
-- When another step holds the state row, returns (0, 0, false) at once.
-- At most p_batch messages and 3 * p_batch channel rows go per step. Run each step in a
-- transaction of its own (the gateway does: one statement each): the channel locks of step 3
-- are held until COMMIT, and a publish to one of those channels waits that long.
CREATE FUNCTION herald_prune_step(p_ttl_ms bigint, p_max bigint, p_batch integer,
                                  OUT messages integer, OUT channels integer, OUT more boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_cut     bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint - p_ttl_ms;
    v_after   text;
    v_recheck text[];
    v_aged    text[];           -- channels that lost messages to age: maybe empty now
    v_dirty   text[] := '{}';   -- the dirty channels this step looks at
    v_locked  text[];
    v_n       integer;
    r         record;
BEGIN
    IF p_batch IS NULL OR p_batch < 1 THEN
        RAISE EXCEPTION 'herald: the prune batch must be at least 1' USING ERRCODE = '22023';
    END IF;
    messages := 0;
    channels := 0;
    more := false;
    SELECT s.after, s.recheck INTO v_after, v_recheck
        FROM herald_prune_state s WHERE s.id = 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;  -- another step is running
    END IF;

    -- 1. age
    WITH gone AS (
        DELETE FROM herald_messages WHERE ctid IN (
            SELECT ctid FROM herald_messages WHERE ts < v_cut LIMIT p_batch)
        RETURNING channel
    )
    SELECT count(*), coalesce(array_agg(DISTINCT channel), '{}') INTO messages, v_aged FROM gone;

    -- 2. count, on the dirty channels only (the partial index), from where the sweep stopped
    FOR r IN
        SELECT c.name, c.last_seq - p_max AS upto,
               EXISTS (SELECT 1 FROM herald_messages m
                       WHERE m.channel = c.name AND m.seq <= c.last_seq - p_max) AS over
        FROM herald_channels c
        WHERE c.dirty AND c.name > v_after
        ORDER BY c.name LIMIT p_batch
    LOOP
        v_dirty := v_dirty || r.name;
        CONTINUE WHEN NOT r.over OR messages >= p_batch;
        DELETE FROM herald_messages WHERE ctid IN (
            SELECT ctid FROM herald_messages
            WHERE channel = r.name AND seq <= r.upto ORDER BY seq LIMIT p_batch - messages);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        messages := messages + v_n;
    END LOOP;

    -- 3. lock without waiting: a channel a publish holds now is left for a later step
    SELECT coalesce(array_agg(l.name), '{}') INTO v_locked FROM (
        SELECT c.name FROM herald_channels c
        WHERE c.name = ANY (v_dirty || v_aged || v_recheck)
        ORDER BY c.name FOR UPDATE SKIP LOCKED) l;
    -- New statements from here, so new snapshots: every publish that held one of these rows
    -- before us has committed or rolled back, and none can add a message until we COMMIT.
    WITH gone AS (
        DELETE FROM herald_channels c
        WHERE c.name = ANY (v_locked)
          AND NOT EXISTS (SELECT 1 FROM herald_messages m WHERE m.channel = c.name)
        RETURNING 1
    )
    SELECT count(*) INTO channels FROM gone;
    UPDATE herald_channels c SET dirty = false
    WHERE c.name = ANY (v_locked) AND c.dirty
      AND NOT EXISTS (SELECT 1 FROM herald_messages m
                      WHERE m.channel = c.name AND m.seq <= c.last_seq - p_max);
    -- maybe-idle channels skipped because a publish held them: that publish most likely
    -- stores a message, but if it rolls back the row is empty and nothing else would look at
    -- it again, so the next step does
    SELECT coalesce(array_agg(c.name), '{}') INTO v_recheck FROM (
        SELECT c.name FROM herald_channels c
        WHERE c.name = ANY (v_aged || v_recheck) AND c.name <> ALL (v_locked)
        ORDER BY c.name LIMIT p_batch) c;

    more := messages >= p_batch OR cardinality(v_dirty) >= p_batch;
    UPDATE herald_prune_state s
    SET after = CASE WHEN cardinality(v_dirty) >= p_batch THEN v_dirty[cardinality(v_dirty)]
                     ELSE '' END,
        recheck = v_recheck
    WHERE s.id = 1;
END;
$$;

-- Version 1's entry point, for gateways built before version 5 (they loop while the result
-- equals p_batch): the messages deleted, or p_batch when more work is waiting.
CREATE OR REPLACE FUNCTION herald_prune(p_ttl_ms bigint, p_max bigint, p_batch integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM herald_prune_step(p_ttl_ms, p_max, p_batch);
    RETURN CASE WHEN r.more THEN p_batch ELSE r.messages END;
END;
$$;

-- Version 3's herald_publish_batch with two changes: the channel rows are inserted or locked
-- by one statement (see the race above; it replaces the INSERT ... DO NOTHING and the
-- SELECT ... FOR UPDATE), and the UPDATE that counts the new messages sets dirty. Same
-- signature, same results.
CREATE OR REPLACE FUNCTION herald_publish_batch(p_channels text[], p_data json[], p_keys text[])
RETURNS TABLE (ord bigint, seq bigint, envelope text, epoch text, duplicate boolean)
LANGUAGE plpgsql
-- A custom plan sees the arrays' real lengths and looks cheaper than the generic one, so
-- PL/pgSQL would plan the big statement again on every call (about 0.4 ms, more than the
-- work of a small batch). The generic plan suits every size: each join below is driven by
-- the input arrays and probes an index.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_ts bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN
    IF cardinality(p_channels) IS DISTINCT FROM cardinality(p_data)
       OR cardinality(p_channels) IS DISTINCT FROM cardinality(p_keys) THEN
        RAISE EXCEPTION 'herald: channels, data and keys differ in length' USING ERRCODE = '22023';
    END IF;
    -- a plain class and a length test: the bounded repetition {1,200} made PostgreSQL's
    -- regex engine spend about 25 us on a 30-byte name, more than storing the message
    IF EXISTS (SELECT 1 FROM unnest(p_channels) AS t(ch)
               WHERE ch IS NULL OR ch !~ '^[A-Za-z0-9_.:@=-]+$' OR octet_length(ch) > 200) THEN
        RAISE EXCEPTION 'herald: invalid channel name' USING ERRCODE = '22023';
    END IF;
    IF array_position(p_data, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'herald: data is required' USING ERRCODE = '22023';
    END IF;
    -- Every channel row of the batch, inserted or locked, in name order (the rows reach the
    -- insert sorted), so two batches naming the same channels in different orders cannot
    -- deadlock. DO UPDATE ... WHERE false locks an existing row without writing it; a row that
    -- retention deletes meanwhile is inserted again (with a new epoch) instead of being
    -- missed. The locks are held until COMMIT: commit order equals seq order per channel.
    INSERT INTO herald_channels AS c (name)
        SELECT DISTINCT ch FROM unnest(p_channels) AS t(ch) ORDER BY 1
        ON CONFLICT (name) DO UPDATE SET dirty = true WHERE false;
    -- a new statement, so a new snapshot: it sees what the lock holders before us committed
    RETURN QUERY
    WITH input AS (  -- nth > 1: the key was already used earlier in this batch
        SELECT t.ord, t.ch, t.data, t.key,
               CASE WHEN t.key IS NULL THEN 1
                    ELSE row_number() OVER (PARTITION BY t.ch, t.key ORDER BY t.ord) END AS nth
        FROM unnest(p_channels, p_data, p_keys) WITH ORDINALITY AS t(ch, data, key, ord)
    ), repeats AS MATERIALIZED (  -- rows whose key an earlier row of this batch used;
        SELECT i.* FROM input i WHERE i.nth > 1   -- computed once (usually empty), not per join row
    ), stored AS (   -- retries of messages already kept
        SELECT i.ord, m.seq, m.envelope
        FROM input i JOIN herald_messages m ON m.channel = i.ch AND m.idempotency_key = i.key
        WHERE i.key IS NOT NULL
    ), fresh AS (
        SELECT i.* FROM input i
        WHERE i.nth = 1 AND NOT EXISTS (SELECT 1 FROM stored s WHERE s.ord = i.ord)
    ), numbered AS (
        SELECT f.ord, f.ch, f.key, c.epoch,
               c.last_seq + row_number() OVER (PARTITION BY f.ch ORDER BY f.ord) AS seq, f.data
        FROM fresh f JOIN herald_channels c ON c.name = f.ch
    ), built AS (
        SELECT n.ord, n.ch, n.key, n.epoch, n.seq,
               '{"op":"message","channel":' || to_json(n.ch)::text || ',"seq":' || n.seq
               || ',"ts":' || v_ts || ',"data":' || n.data::text || '}' AS envelope
        FROM numbered n
    ), counted AS (  -- dirty: retention looks at this channel again (see above)
        UPDATE herald_channels c SET last_seq = c.last_seq + k.n, dirty = true
        FROM (SELECT ch, count(*) AS n FROM fresh GROUP BY ch) k
        WHERE c.name = k.ch
    ), kept AS (
        INSERT INTO herald_messages (channel, seq, ts, envelope, idempotency_key)
        SELECT b.ch, b.seq, v_ts, b.envelope, b.key FROM built b
    )
    SELECT b.ord, b.seq, b.envelope, b.epoch, false FROM built b
    UNION ALL
    SELECT s.ord, s.seq, s.envelope, c.epoch, true
    FROM stored s JOIN input i ON i.ord = s.ord JOIN herald_channels c ON c.name = i.ch
    UNION ALL
    SELECT r.ord, b.seq, b.envelope, b.epoch, true
    FROM repeats r JOIN built b ON b.ch = r.ch AND b.key = r.key
    ORDER BY 1;
END;
$$;
