-- Herald history, version 6: a channel's position for the application's own transaction.
--
-- herald_position(channel) is what GET /v1/channels/{channel} answers: the channel's last seq
-- (0 when nothing was ever published) and its epoch (NULL then). Read in the same statement
-- (or REPEATABLE READ transaction) as the application's state, it gives the position that
-- state is at: herald_publish takes the channel row's lock until COMMIT, so a snapshot holds
-- every message up to that seq and none after it. Subscribing with since = seq and that
-- epoch then delivers exactly the messages the state does not hold yet.
CREATE FUNCTION herald_position(p_channel text)
RETURNS TABLE (seq bigint, epoch text)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(max(c.last_seq), 0), max(c.epoch)
    FROM herald_channels c WHERE c.name = p_channel
$$;
