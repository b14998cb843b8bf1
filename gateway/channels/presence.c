#include "presence.h"
#include "bus.h"
#include "envelope_sig.h"
#include "frame.h"
#include "glob.h"
#include "herald.h"
#include "log.h"
#include "presence_event.h"
#include "shard.h"
#include "sigkey.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS  100  /* joins are written (and announced) at most this late */
#define RETRY_MS 1000 /* after a failed script, the channel is asserted again this late */
/* Users per script: a script holds Redis while it runs (about 6 us per user), so a renewal of
 * thousands goes as several scripts, each short, that other commands can pass between. */
#define USERS_PER_SCRIPT 256

/* Removes expired entries (at most 1000 a call, to bound the script's time) and notes the
 * users no entry holds any more in `gone`. A field without its NUL (written by someone else)
 * counts as anonymous: removed, announced to nobody. */
#define LUA_SWEEP                                                                                  \
    "local e, i, n = KEYS[1], KEYS[2], KEYS[3]\n"                                                  \
    "local t = redis.call('TIME')\n"                                                               \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                      \
    "local gone = {}\n"                                                                            \
    "local function drop(ent)\n"                                                                   \
    "  redis.call('ZREM', e, ent)\n"                                                               \
    "  redis.call('HDEL', i, ent)\n"                                                               \
    "  local p = string.find(ent, '\\0', 1, true)\n"                                               \
    "  local sub = p and string.sub(ent, p + 1) or ''\n"                                           \
    "  if sub ~= '' and redis.call('HINCRBY', n, sub, -1) <= 0 then\n"                             \
    "    redis.call('HDEL', n, sub)\n"                                                             \
    "    gone[#gone + 1] = sub\n"                                                                  \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "for _, ent in ipairs(redis.call('ZRANGEBYSCORE', e, '-inf', now, 'LIMIT', 0, 1000)) do\n"     \
    "  drop(ent)\n"                                                                                \
    "end\n"

/* ARGV: ttl ms, max members, instance, anonymous count, then (op, sub, info) per user: op
 * '+' asserts the instance's entry (a new user joins unless the channel is full), '-'
 * removes it. Returns {joined subs, subs refused as full, subs gone}. */
static const char SYNC_LUA[] =
    LUA_SWEEP "local ttl, max, inst = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]\n"
              "local joined, full = {}, {}\n"
              "local anon = inst .. '\\0'\n"
              "if ARGV[4] ~= '0' then\n"
              "  redis.call('ZADD', e, now + ttl, anon)\n"
              "  redis.call('HSET', i, anon, ARGV[4])\n"
              "elseif redis.call('ZREM', e, anon) == 1 then\n"
              "  redis.call('HDEL', i, anon)\n"
              "end\n"
              "for k = 5, #ARGV - 2, 3 do\n"
              "  local op, sub, info = ARGV[k], ARGV[k + 1], ARGV[k + 2]\n"
              "  local ent = inst .. '\\0' .. sub\n"
              "  if op == '-' then\n"
              "    if redis.call('ZSCORE', e, ent) then drop(ent) end\n"
              "  elseif redis.call('ZSCORE', e, ent) then\n"
              "    redis.call('ZADD', e, now + ttl, ent)\n"
              "    redis.call('HSET', i, ent, info)\n"
              "  else\n"
              "    local c = tonumber(redis.call('HGET', n, sub) or '0')\n"
              "    if c == 0 and redis.call('HLEN', n) >= max then\n"
              "      full[#full + 1] = sub\n"
              "    else\n"
              "      redis.call('ZADD', e, now + ttl, ent)\n"
              "      redis.call('HSET', i, ent, info)\n"
              "      redis.call('HINCRBY', n, sub, 1)\n"
              "      if c == 0 then joined[#joined + 1] = sub end\n"
              "    end\n"
              "  end\n"
              "end\n"
              "for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ttl) end\n"
              "return {joined, full, gone}\n";

/* Returns {subs gone, the info hash as field, value, ...}. */
static const char READ_LUA[] = LUA_SWEEP "return {gone, redis.call('HGETALL', i)}\n";

/* One user of a channel on this instance. */
struct puser {
    struct puser *next;    /* the channel's bucket chain */
    struct pconn *conns;   /* its connections here, live or not yet */
    uint32_t live;         /* of them, confirmed ones */
    uint64_t linger_until; /* live == 0 and still listed: removed at this time */
    bool stored;           /* a '+' was sent and no '-' since */
    bool dirty;            /* a '+' is due */
    bool full;             /* the cap refused it: not listed; asked again at each refresh */
    uint32_t hash;
    char *info;
    size_t ilen, slen;
    char sub[];
};

/* A connection's place in a channel (anonymous: u == NULL). */
struct pconn {
    struct pconn *next;          /* the connection's list */
    struct pconn *uprev, *unext; /* the user's list */
    struct pchan *ch;
    struct puser *u;
    void *conn;
    bool live;
};

struct pchan {
    struct pchan *next; /* bucket chain */
    struct puser **buckets;
    uint32_t nbuckets, nusers, hash;
    uint32_t anon;       /* live anonymous connections */
    uint32_t anon_sent;  /* what Redis was last told */
    bool dirty;          /* something to write */
    uint32_t busy;       /* scripts in flight */
    uint64_t refresh_at; /* every entry is asserted again then */
    uint64_t linger_at;  /* the earliest linger to end; 0: none */
    uint64_t retry_at;   /* after a failed write, nothing is tried before this */
    size_t len;
    char name[];
};

/* A script in flight. p is NULL once the presence is freed: the reply is then dropped. */
struct pop {
    struct pop *prev, *next;
    struct presence *p;
    presence_list_fn *fn; /* a read's */
    void *arg;
    struct later later; /* a read that could not be sent answers from the loop */
    size_t len;
    char name[];
};

struct presence {
    struct herald *app;
    struct presence_sink sink;
    char **globs;
    size_t nglobs;
    struct pchan **buckets;
    uint32_t nbuckets, nchans;
    struct pop *ops;
    uv_timer_t timer;
    struct log_limit err_log;
};

static uint64_t now_ms(const struct presence *p)
{
    return herald_now_ms(p->app);
}

static uint32_t hash_of(const char *s, size_t n)
{
    return (uint32_t)shard_hash(s, n);
}

/* ---- tables ---- */

static struct pchan *find_chan(const struct presence *p, const char *name, size_t len)
{
    if (!p->nbuckets)
        return NULL;
    uint32_t h = hash_of(name, len);
    for (struct pchan *c = p->buckets[h & (p->nbuckets - 1)]; c; c = c->next)
        if (c->hash == h && c->len == len && memcmp(c->name, name, len) == 0)
            return c;
    return NULL;
}

/* Doubles a chained table of 2^k buckets when it holds as many items; chains are walked by
 * `next`, which is the first member of both item types. */
#define GROW(table, nb, count, type)                                                               \
    do {                                                                                           \
        if ((count) < (nb))                                                                        \
            break;                                                                                 \
        uint32_t n2 = (nb) ? (nb)*2 : 8;                                                           \
        type **b2 = calloc(n2, sizeof *b2);                                                        \
        if (!b2)                                                                                   \
            break; /* longer chains, still correct */                                              \
        for (uint32_t k = 0; k < (nb); k++)                                                        \
            for (type *it = (table)[k], *nx; it; it = nx) {                                        \
                nx = it->next;                                                                     \
                it->next = b2[it->hash & (n2 - 1)];                                                \
                b2[it->hash & (n2 - 1)] = it;                                                      \
            }                                                                                      \
        free(table);                                                                               \
        (table) = b2;                                                                              \
        (nb) = n2;                                                                                 \
    } while (0)

static struct pchan *get_chan(struct presence *p, const char *name, size_t len)
{
    struct pchan *c = find_chan(p, name, len);
    if (c)
        return c;
    GROW(p->buckets, p->nbuckets, p->nchans, struct pchan);
    if (!p->nbuckets || !(c = calloc(1, sizeof *c + len + 1)))
        return NULL;
    c->hash = hash_of(name, len);
    c->len = len;
    memcpy(c->name, name, len);
    c->refresh_at = now_ms(p) + (uint64_t)p->app->cfg->presence_ttl_ms / 3;
    c->next = p->buckets[c->hash & (p->nbuckets - 1)];
    p->buckets[c->hash & (p->nbuckets - 1)] = c;
    p->nchans++;
    p->app->metrics.presence_channels++;
    return c;
}

static void free_chan(struct presence *p, struct pchan *c)
{
    struct pchan **pp = &p->buckets[c->hash & (p->nbuckets - 1)];
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    p->nchans--;
    p->app->metrics.presence_channels--;
    free(c->buckets);
    free(c);
}

static struct puser *find_user(const struct pchan *c, const char *sub, size_t slen)
{
    if (!c->nbuckets)
        return NULL;
    uint32_t h = hash_of(sub, slen);
    for (struct puser *u = c->buckets[h & (c->nbuckets - 1)]; u; u = u->next)
        if (u->hash == h && u->slen == slen && memcmp(u->sub, sub, slen) == 0)
            return u;
    return NULL;
}

static struct puser *get_user(struct pchan *c, const char *sub, size_t slen)
{
    struct puser *u = find_user(c, sub, slen);
    if (u)
        return u;
    GROW(c->buckets, c->nbuckets, c->nusers, struct puser);
    if (!c->nbuckets || !(u = calloc(1, sizeof *u + slen + 1)))
        return NULL;
    u->hash = hash_of(sub, slen);
    u->slen = slen;
    memcpy(u->sub, sub, slen);
    u->next = c->buckets[u->hash & (c->nbuckets - 1)];
    c->buckets[u->hash & (c->nbuckets - 1)] = u;
    c->nusers++;
    return u;
}

/* Only a user Redis no longer has (not stored) with no connection here is freed. */
static void free_user(struct pchan *c, struct puser *u)
{
    struct puser **pp = &c->buckets[u->hash & (c->nbuckets - 1)];
    while (*pp != u)
        pp = &(*pp)->next;
    *pp = u->next;
    c->nusers--;
    free(u->info);
    free(u);
}

/* ---- Redis ---- */

/* <prefix>presence:{<name>}:<which> into out (320 bytes is room for any). */
static size_t key_of(const struct presence *p, const char *name, size_t len, char which, char *out,
                     size_t cap)
{
    int n = snprintf(out, cap, "%spresence:{%.*s}:%c", p->app->cfg->redis_prefix, (int)len, name,
                     which);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void note_error(struct presence *p, const char *name, size_t len, const char *what)
{
    p->app->metrics.presence_errors++;
    uint64_t skipped;
    if (log_limit_pass(&p->err_log, now_ms(p), &skipped))
        log_warn("presence", "channel %.*s: %s (%llu more since last log)", (int)len, name, what,
                 (unsigned long long)skipped);
}

static struct pop *new_op(struct presence *p, const char *name, size_t len)
{
    struct pop *op = calloc(1, sizeof *op + len + 1);
    if (!op)
        return NULL;
    op->p = p;
    op->len = len;
    memcpy(op->name, name, len);
    op->next = p->ops;
    if (p->ops)
        p->ops->prev = op;
    p->ops = op;
    return op;
}

static void end_op(struct pop *op)
{
    if (op->p) {
        if (op->prev)
            op->prev->next = op->next;
        else
            op->p->ops = op->next;
        if (op->next)
            op->next->prev = op->prev;
    }
    free(op);
}

/* EVAL script with the channel's three keys and argv[0..argc) after them. */
static int send_script(struct presence *p, const char *name, size_t len, const char *script,
                       int argc, const char **argv, const size_t *lens, resp_reply_fn *fn,
                       struct pop *op)
{
    char keys[3][320];
    size_t klen[3];
    const char which[3] = {'e', 'i', 'n'};
    for (int k = 0; k < 3; k++)
        if (!(klen[k] = key_of(p, name, len, which[k], keys[k], sizeof keys[k])))
            return -1;
    int total = 6 + argc;
    const char **av = malloc((size_t)total * sizeof *av);
    size_t *al = malloc((size_t)total * sizeof *al);
    int rc = -1;
    if (av && al) {
        av[0] = "EVAL", al[0] = 4;
        av[1] = script, al[1] = strlen(script);
        av[2] = "3", al[2] = 1;
        for (int k = 0; k < 3; k++)
            av[3 + k] = keys[k], al[3 + k] = klen[k];
        for (int k = 0; k < argc; k++)
            av[6 + k] = argv[k], al[6 + k] = lens[k];
        rc = bus_command(p->app->bus, name, len, keys[0], klen[0], fn, op, total, av, al);
    }
    free(av);
    free(al);
    return rc;
}

/* Publishes a join or leave on the channel's Redis channel, signed when the process has the
 * key, for every instance (this one too) to hand to its subscribers. */
static void announce(struct presence *p, const char *name, size_t len, enum presence_kind kind,
                     const char *sub, size_t slen, const char *info, size_t ilen)
{
    size_t elen;
    char *ev =
        presence_event_new(kind, name, len, sub, slen, info, ilen, ENVELOPE_SIG_SUFFIX_LEN, &elen);
    if (!ev)
        return;
    const struct envelope_key *key = p->app->sigkey ? sigkey_get(p->app->sigkey) : NULL;
    size_t plen = key ? envelope_sig_sign(key, PRESENCE_SIG_DOMAIN, ev, elen, ev) : elen;
    if (plen && bus_publish(p->app->bus, name, ev, plen) == 0) {
        if (kind == PRESENCE_JOIN)
            p->app->metrics.presence_joins++;
        else
            p->app->metrics.presence_leaves++;
    } else {
        note_error(p, name, len, "a join or leave could not be published");
    }
    free(ev);
}

/* The leaves a sweep found: users whose every entry expired or was removed. */
static void announce_gone(struct presence *p, const char *name, size_t len, const redisReply *gone)
{
    for (size_t k = 0; k < gone->elements; k++)
        if (gone->element[k]->type == REDIS_REPLY_STRING)
            announce(p, name, len, PRESENCE_LEAVE, gone->element[k]->str, gone->element[k]->len,
                     NULL, 0);
}

/* An array of n arrays. */
static bool is_arrays(const redisReply *r, size_t n)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != n)
        return false;
    for (size_t k = 0; k < n; k++)
        if (r->element[k]->type != REDIS_REPLY_ARRAY)
            return false;
    return true;
}

static void set_stored(struct presence *p, struct puser *u, bool stored)
{
    if (u->stored != stored)
        p->app->metrics.presence_members += stored ? 1 : -1;
    u->stored = stored;
}

static void mark_full(struct presence *p, struct pchan *c, const redisReply *sub)
{
    struct puser *u = find_user(c, sub->str, sub->len);
    if (!u)
        return;
    set_stored(p, u, false);
    if (u->full)
        return;
    u->full = true;
    p->app->metrics.presence_full++;
    for (struct pconn *pc = u->conns; pc; pc = pc->unext)
        if (pc->live)
            p->sink.full(pc->conn, c->name, c->len);
}

static void maybe_free_chan(struct presence *p, struct pchan *c)
{
    if (!c->busy && !c->nusers && !c->anon && !c->anon_sent && !c->dirty)
        free_chan(p, c);
}

static void on_sync(void *arg, redisReply *r)
{
    struct pop *op = arg;
    struct presence *p = op->p;
    struct pchan *c = p ? find_chan(p, op->name, op->len) : NULL; /* busy: not freed */
    end_op(op);
    if (!c)
        return;
    c->busy--;
    if (!is_arrays(r, 3)) {
        note_error(p, c->name, c->len,
                   r && r->type == REDIS_REPLY_ERROR ? r->str : "no answer from Redis");
        /* everything is asserted again, not before a second from now */
        c->refresh_at = c->retry_at = now_ms(p) + RETRY_MS;
        return;
    }
    const redisReply *joined = r->element[0], *full = r->element[1];
    for (size_t k = 0; k < joined->elements; k++) {
        const redisReply *s = joined->element[k];
        if (s->type != REDIS_REPLY_STRING)
            continue;
        struct puser *u = find_user(c, s->str, s->len);
        if (u && u->full) { /* a place freed up: listed (and renewed) from now on */
            u->full = false;
            set_stored(p, u, true);
        }
        announce(p, c->name, c->len, PRESENCE_JOIN, s->str, s->len, u ? u->info : NULL,
                 u ? u->ilen : 0);
    }
    for (size_t k = 0; k < full->elements; k++)
        if (full->element[k]->type == REDIS_REPLY_STRING)
            mark_full(p, c, full->element[k]);
    announce_gone(p, c->name, c->len, r->element[2]);
    maybe_free_chan(p, c);
}

/* Not present here any more: no live connection, and its linger (if any) is over. */
static bool user_gone(const struct puser *u, uint64_t now)
{
    return !u->live && (!u->linger_until || now >= u->linger_until);
}

/* What a sync writes for u: '+' asserts its entry, '-' removes it, NULL nothing. */
static const char *user_op(const struct puser *u, bool refresh, uint64_t now)
{
    if (user_gone(u, now))
        return u->stored ? "-" : NULL;
    return u->dirty || (refresh && (u->stored || u->full)) ? "+" : NULL;
}

/* After a sync went out: the table says what Redis will hold; users nobody holds are freed. */
static void apply_sync(struct presence *p, struct pchan *c, bool refresh, uint64_t now)
{
    c->dirty = false;
    c->anon_sent = c->anon;
    c->linger_at = 0;
    if (refresh)
        c->refresh_at = now + (uint64_t)p->app->cfg->presence_ttl_ms / 3;
    for (uint32_t b = 0; b < c->nbuckets; b++)
        for (struct puser *u = c->buckets[b], *next; u; u = next) {
            next = u->next;
            const char *op = user_op(u, refresh, now);
            u->dirty = false;
            if (user_gone(u, now)) {
                u->linger_until = 0;
                set_stored(p, u, false);
                if (!u->conns)
                    free_user(c, u);
                continue;
            }
            if (op && !u->full)
                set_stored(p, u, true);
            if (u->linger_until && (!c->linger_at || u->linger_until < c->linger_at))
                c->linger_at = u->linger_until;
        }
}

/* Sends one script with the fixed arguments av[0..4) and the triples av[first..argc). */
static int send_chunk(struct presence *p, struct pchan *c, const char **av, size_t *al, int first,
                      int argc)
{
    struct pop *op = new_op(p, c->name, c->len);
    if (!op)
        return -1;
    /* the triples go right after the fixed four: move them down for this script */
    const char **cav = av + first - 4;
    size_t *cal = al + first - 4;
    const char *keep[4];
    size_t keepl[4];
    memcpy(keep, cav, sizeof keep);
    memcpy(keepl, cal, sizeof keepl);
    memcpy(cav, av, 4 * sizeof *av);
    memcpy(cal, al, 4 * sizeof *al);
    int rc = send_script(p, c->name, c->len, SYNC_LUA, argc - first + 4, cav, cal, on_sync, op);
    memcpy(cav, keep, sizeof keep);
    memcpy(cal, keepl, sizeof keepl);
    if (rc != 0)
        end_op(op);
    else
        c->busy++;
    return rc;
}

/* Writes what the channel owes Redis: every present user's entry on a refresh, else the
 * new ones, the anonymous count, and the removal of users whose linger is over; in scripts of
 * at most USERS_PER_SCRIPT users. */
static void sync_chan(struct presence *p, struct pchan *c, uint64_t now)
{
    bool refresh = now >= c->refresh_at;
    size_t max = 3 * (size_t)c->nusers + 4;
    const char **av = malloc(max * sizeof *av);
    size_t *al = malloc(max * sizeof *al);
    char ttl[24], cap[24], anon[24];
    if (!av || !al) {
        free(av);
        free(al);
        return; /* tried again on the next tick */
    }
    al[0] = (size_t)snprintf(ttl, sizeof ttl, "%ld", p->app->cfg->presence_ttl_ms);
    al[1] = (size_t)snprintf(cap, sizeof cap, "%ld", p->app->cfg->presence_max_members);
    al[2] = strlen(p->app->cfg->instance_id);
    al[3] = (size_t)snprintf(anon, sizeof anon, "%u", c->anon);
    av[0] = ttl, av[1] = cap, av[2] = p->app->cfg->instance_id, av[3] = anon;
    int argc = 4;
    for (uint32_t b = 0; b < c->nbuckets; b++)
        for (struct puser *u = c->buckets[b]; u; u = u->next) {
            const char *op = user_op(u, refresh, now);
            if (!op)
                continue;
            av[argc] = op, al[argc++] = 1;
            av[argc] = u->sub, al[argc++] = u->slen;
            av[argc] = u->info ? u->info : "", al[argc++] = u->ilen;
        }
    int sent = 0, failed = 0;
    if (argc > 4 || refresh || c->anon != c->anon_sent) {
        for (int first = 4; first == 4 || first < argc; first += 3 * USERS_PER_SCRIPT) {
            int end = first + 3 * USERS_PER_SCRIPT < argc ? first + 3 * USERS_PER_SCRIPT : argc;
            if (send_chunk(p, c, av, al, first, end) == 0)
                sent++;
            else
                failed++;
        }
    }
    free(av);
    free(al);
    if (failed) {
        note_error(p, c->name, c->len, "Redis is down: presence not written");
        c->refresh_at = c->retry_at = now + RETRY_MS; /* everything is asserted again then */
    }
    if (sent || !failed) {
        apply_sync(p, c, refresh && !failed, now); /* with nothing sent: frees who is gone */
        maybe_free_chan(p, c);
    }
}

static void on_tick(uv_timer_t *t)
{
    struct presence *p = t->data;
    uint64_t now = now_ms(p);
    for (uint32_t b = 0; b < p->nbuckets; b++)
        for (struct pchan *c = p->buckets[b], *next; c; c = next) {
            next = c->next; /* sync_chan may free c */
            if (!c->busy && now >= c->retry_at &&
                (c->dirty || now >= c->refresh_at || (c->linger_at && now >= c->linger_at)))
                sync_chan(p, c, now);
        }
}

/* ---- reads ---- */

static void on_read(void *arg, redisReply *r)
{
    struct pop *op = arg;
    struct presence *p = op->p;
    bool ok = is_arrays(r, 2) && r->element[1]->elements % 2 == 0;
    char *text = NULL;
    size_t len = 0;
    if (ok) {
        const redisReply *h = r->element[1];
        size_t n = h->elements / 2, m = 0, skipped = 0;
        struct presence_entry *e = calloc(n ? n : 1, sizeof *e);
        for (size_t k = 0; e && k < n; k++) {
            const redisReply *f = h->element[2 * k], *v = h->element[2 * k + 1];
            if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING)
                e[m++] = (struct presence_entry){f->str, v->str, f->len, v->len};
        }
        text = e ? presence_list_text(e, m, &len, &skipped) : NULL;
        free(e);
        if (p && skipped)
            note_error(p, op->name, op->len, "malformed presence entries left out");
        if (p)
            announce_gone(p, op->name, op->len, r->element[0]);
    }
    presence_list_fn *fn = op->fn;
    void *fnarg = op->arg;
    if (p)
        later_assert_outside(&p->app->later);
    end_op(op);
    fn(fnarg, text, len);
    free(text);
}

static void run_failed_read(struct later *item)
{
    on_read(LATER_OWNER(item, struct pop, later), NULL);
}

int presence_query(struct presence *p, const char *name, size_t len, presence_list_fn *fn,
                   void *arg)
{
    struct pop *op = new_op(p, name, len);
    if (!op)
        return -1;
    op->fn = fn;
    op->arg = arg;
    later_enter(&p->app->later);
    if (send_script(p, name, len, READ_LUA, 0, NULL, NULL, on_read, op) != 0)
        later_post(&p->app->later, &op->later, run_failed_read);
    later_leave(&p->app->later);
    return 0;
}

/* ---- connections ---- */

static struct pconn *find_pconn(struct pconn *list, const char *name, size_t len)
{
    for (; list; list = list->next)
        if (list->ch->len == len && memcmp(list->ch->name, name, len) == 0)
            return list;
    return NULL;
}

int presence_join(struct presence *p, struct pconn **list, void *conn, const char *name, size_t len,
                  const char *sub, size_t slen, const char *info, size_t ilen)
{
    if (find_pconn(*list, name, len))
        return 0; /* a repeated subscribe keeps its first place */
    struct pchan *c = get_chan(p, name, len);
    struct pconn *pc = c ? calloc(1, sizeof *pc) : NULL;
    struct puser *u = pc && sub && slen ? get_user(c, sub, slen) : NULL;
    if (!pc || (sub && slen && !u)) {
        free(pc);
        if (c)
            maybe_free_chan(p, c);
        return -1;
    }
    if (u && !u->info && ilen && (u->info = malloc(ilen))) {
        memcpy(u->info, info, ilen);
        u->ilen = ilen;
    }
    pc->ch = c;
    pc->u = u;
    pc->conn = conn;
    if (u) {
        pc->unext = u->conns;
        if (u->conns)
            u->conns->uprev = pc;
        u->conns = pc;
    }
    pc->next = *list;
    *list = pc;
    return 0;
}

void presence_confirm(struct presence *p, struct pconn **list, const char *name, size_t len)
{
    struct pconn *pc = find_pconn(*list, name, len);
    if (!pc || pc->live)
        return;
    pc->live = true;
    struct pchan *c = pc->ch;
    struct puser *u = pc->u;
    if (!u) {
        c->anon++;
        c->dirty = true;
        return;
    }
    if (u->live++ == 0) {
        if (u->linger_until)
            u->linger_until = 0; /* back within the linger: nothing to write or announce */
        else
            u->dirty = c->dirty = true;
    }
    if (u->full)
        p->sink.full(pc->conn, c->name, c->len);
}

static void drop_pconn(struct presence *p, struct pconn *pc)
{
    struct pchan *c = pc->ch;
    struct puser *u = pc->u;
    if (!u && pc->live) {
        c->anon--;
        c->dirty = true;
    }
    if (u) {
        if (pc->uprev)
            pc->uprev->unext = pc->unext;
        else
            u->conns = pc->unext;
        if (pc->unext)
            pc->unext->uprev = pc->uprev;
        if (pc->live && --u->live == 0) {
            uint64_t now = now_ms(p);
            u->linger_until = now + (uint64_t)p->app->cfg->presence_linger_ms;
            if (!c->linger_at || u->linger_until < c->linger_at)
                c->linger_at = u->linger_until;
        } else if (!u->live && !u->conns && !u->stored && !u->dirty && !u->linger_until) {
            free_user(c, u); /* never written: nothing to take back */
        }
    }
    free(pc);
    maybe_free_chan(p, c);
}

void presence_leave(struct presence *p, struct pconn **list, const char *name, size_t len)
{
    for (struct pconn **pp = list; *pp; pp = &(*pp)->next)
        if ((*pp)->ch->len == len && memcmp((*pp)->ch->name, name, len) == 0) {
            struct pconn *pc = *pp;
            *pp = pc->next;
            drop_pconn(p, pc);
            return;
        }
}

void presence_gone(struct presence *p, struct pconn **list)
{
    while (*list) {
        struct pconn *pc = *list;
        *list = pc->next;
        drop_pconn(p, pc);
    }
}

/* ---- events from Redis ---- */

struct frame *presence_event_frame(struct presence *p, const char *name, size_t len,
                                   const char *payload, size_t plen, const char **why)
{
    const struct envelope_key *key = p->app->sigkey ? sigkey_get(p->app->sigkey) : NULL;
    size_t elen = plen;
    if (p->app->cfg->database_url[0]) {
        /* with PostgreSQL, only what an instance signed counts (envelope_sig.h) */
        if (!key || !envelope_sig_verify(key, PRESENCE_SIG_DOMAIN, payload, plen)) {
            *why = key ? "a presence event with a bad or no signature"
                       : "a presence event "
                         "before the key is known";
            return NULL;
        }
        elen = plen - ENVELOPE_SIG_SUFFIX_LEN + 1;
    }
    struct frame *f = frame_new(elen);
    if (!f) {
        *why = "out of memory";
        return NULL;
    }
    char *out = (char *)frame_payload(f);
    if (elen != plen)
        envelope_sig_strip(payload, plen, out);
    else
        memcpy(out, payload, plen);
    if (!presence_event_valid(name, len, out, elen)) {
        frame_unref(f);
        *why = "a malformed presence event";
        return NULL;
    }
    return f;
}

/* ---- the module ---- */

bool presence_enabled(const struct presence *p, const char *name, size_t len)
{
    for (size_t k = 0; k < p->nglobs; k++)
        if (glob_match(p->globs[k], name, len))
            return true;
    return false;
}

struct presence *presence_new(struct herald *app, const struct presence_sink *sink)
{
    struct presence *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->app = app;
    p->sink = *sink;
    const char *s = app->cfg->presence;
    while (*s) {
        size_t n = strcspn(s, ",");
        size_t a = 0, b = n;
        while (a < b && (s[a] == ' ' || s[a] == '\t'))
            a++;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
            b--;
        if (b > a) {
            char **g = realloc(p->globs, (p->nglobs + 1) * sizeof *g);
            char *pat = g ? strndup(s + a, b - a) : NULL;
            if (g)
                p->globs = g;
            if (!pat) {
                presence_free(p); /* the timer is not initialised yet */
                return NULL;
            }
            p->globs[p->nglobs++] = pat;
        }
        s += n + (s[n] == ',');
    }
    uv_timer_init(app->loop, &p->timer);
    p->timer.data = p;
    return p;
}

void presence_start(struct presence *p)
{
    if (p->nglobs)
        uv_timer_start(&p->timer, on_tick, TICK_MS, TICK_MS);
}

void presence_stop(struct presence *p)
{
    for (struct pop *op = p->ops; op; op = op->next)
        op->p = NULL; /* their replies come when the bus closes, into nothing */
    p->ops = NULL;
    uv_close((uv_handle_t *)&p->timer, NULL);
}

void presence_free(struct presence *p)
{
    if (!p)
        return;
    for (uint32_t b = 0; b < p->nbuckets; b++)
        for (struct pchan *c = p->buckets[b], *next; c; c = next) {
            next = c->next;
            for (uint32_t k = 0; k < c->nbuckets; k++)
                for (struct puser *u = c->buckets[k], *un; u; u = un) {
                    un = u->next;
                    free(u->info);
                    free(u);
                }
            free(c->buckets);
            free(c);
        }
    free(p->buckets);
    for (size_t k = 0; k < p->nglobs; k++)
        free(p->globs[k]);
    free(p->globs);
    free(p);
}
