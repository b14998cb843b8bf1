#include "history.h"
#include "db.h"
#include "envelope_sig.h"
#include "herald.h"
#include "hex.h"
#include "pg_array.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The window sum keeps rows while their bytes add up to at most $4: a page is bounded in
 * bytes (a first message over the budget still comes, alone). octet_length reads the
 * stored size without decompressing. */
static const char fetch_sql[] =
    "SELECT c.last_seq, c.epoch, "
    "(SELECT min(seq) FROM herald_messages WHERE channel = $1), m.seq, m.envelope "
    "FROM herald_channels c LEFT JOIN LATERAL ("
    " SELECT seq, envelope FROM ("
    "  SELECT seq, envelope, sum(octet_length(envelope)) OVER w AS upto,"
    "   row_number() OVER w AS nth"
    "  FROM herald_messages WHERE channel = $1 AND seq > $2::bigint"
    "  WINDOW w AS (ORDER BY seq) ORDER BY seq LIMIT $3::int) p"
    " WHERE upto <= $4::bigint OR nth = 1) m ON true "
    "WHERE c.name = $1 ORDER BY m.seq";

/* The digest is of the row at the seq the gateway last delivered: a standby promoted after
 * missing commits has another message there, or none (history_new_epoch). */
static const char heads_sql[] =
    "SELECT c.name, c.last_seq, c.epoch, "
    "(SELECT min(seq) FROM herald_messages m WHERE m.channel = c.name), md5(x.envelope) "
    "FROM unnest($1::text[], $2::bigint[]) AS t(name, seq) "
    "JOIN herald_channels c ON c.name = t.name "
    "LEFT JOIN herald_messages x ON x.channel = t.name AND x.seq = t.seq";

static const char new_epoch_sql[] =
    "UPDATE herald_channels "
    "SET epoch = substr(md5(random()::text || clock_timestamp()::text), 1, 16) "
    "WHERE name = $1 AND epoch = $2";

static uint64_t u64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoull(PQgetvalue(r, row, col), NULL, 10);
}

static void fetch_done(void *p, const PGresult *r, const char *err);

static void send_fetch(struct history_request *r, struct db *db)
{
    const char *params[] = {r->channel, r->params[0], r->params[1], r->params[2]};
    db_query(db, &r->q, fetch_sql, 4, params, fetch_done, r);
}

/* Whether the standby's answer cannot be used: it failed, it does not know the channel (new,
 * or not replayed yet), or its head is behind what the caller knows or asks for. */
static bool standby_lags(const struct history_request *req, const PGresult *r, const char *err)
{
    if (err || PQntuples(r) == 0)
        return true;
    uint64_t head = u64(r, 0, 0);
    return head < req->min_head || head < req->since;
}

static void fetch_done(void *p, const PGresult *r, const char *err)
{
    struct history_request *req = p;
    if (req->on_standby) {
        req->on_standby = false;
        if (standby_lags(req, r, err)) {
            req->app->metrics.standby_fallbacks++;
            send_fetch(req, req->app->db);
            return;
        }
        req->app->metrics.standby_reads++;
    }
    if (err) {
        req->page_cb(req->arg, NULL, err);
        return;
    }
    int rows = PQntuples(r);
    struct history_page page = {.exists = rows > 0};
    struct history_row *list = rows ? calloc((size_t)rows, sizeof *list) : NULL;
    if (rows && !list) {
        req->page_cb(req->arg, NULL, "out of memory");
        return;
    }
    if (rows) {
        page.head = u64(r, 0, 0);
        snprintf(page.epoch, sizeof page.epoch, "%s", PQgetvalue(r, 0, 1));
        page.first_kept = u64(r, 0, 2);
    }
    for (int i = 0; i < rows; i++) {
        if (PQgetisnull(r, i, 3))
            continue; /* the LEFT JOIN's empty row: no message after since */
        list[page.n++] =
            (struct history_row){u64(r, i, 3), PQgetvalue(r, i, 4), (size_t)PQgetlength(r, i, 4)};
    }
    page.rows = list;
    page.cut = page.n > 0 && list[page.n - 1].seq < page.head;
    req->page_cb(req->arg, &page, NULL);
    free(list);
}

void history_fetch(struct herald *app, struct history_request *r, const char *channel,
                   uint64_t since, uint64_t min_head, long limit, size_t max_bytes,
                   history_page_cb cb, void *arg)
{
    *r = (struct history_request){
        .page_cb = cb, .arg = arg, .app = app, .since = since, .min_head = min_head};
    snprintf(r->channel, sizeof r->channel, "%s", channel);
    snprintf(r->params[0], sizeof r->params[0], "%llu", (unsigned long long)since);
    snprintf(r->params[1], sizeof r->params[1], "%ld", limit);
    snprintf(r->params[2], sizeof r->params[2], "%zu", max_bytes);
    r->on_standby = app->db_read && db_up(app->db_read);
    send_fetch(r, r->on_standby ? app->db_read : app->db);
}

static void heads_done(void *p, const PGresult *r, const char *err)
{
    struct history_request *req = p;
    int rows = err ? 0 : PQntuples(r);
    struct history_head *heads = rows ? calloc((size_t)rows, sizeof *heads) : NULL;
    if (rows && !heads)
        err = "out of memory";
    for (int i = 0; !err && i < rows; i++)
        heads[i] =
            (struct history_head){.name = PQgetvalue(r, i, 0),
                                  .head = u64(r, i, 1),
                                  .epoch = PQgetvalue(r, i, 2),
                                  .first_kept = u64(r, i, 3),
                                  .digest = PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4)};
    req->heads_cb(req->arg, err ? NULL : heads, err ? 0 : (size_t)rows, err);
    free(heads);
}

void history_heads(struct herald *app, struct history_request *r, const char *const *names,
                   const uint64_t *seqs, size_t n, history_heads_cb cb, void *arg)
{
    *r = (struct history_request){.heads_cb = cb, .arg = arg};
    size_t size = 3;
    for (size_t i = 0; i < n; i++)
        size += pg_array_room(names[i]);
    char *list = malloc(size);
    char *nums = malloc(3 + n * 21); /* up to 20 digits and a comma each */
    if (!list || !nums) {
        free(list);
        free(nums);
        db_fail(app->db, &r->q, "out of memory", heads_done, r);
        return;
    }
    char *p = list, *q = nums;
    *p++ = '{';
    *q++ = '{';
    for (size_t i = 0; i < n; i++) {
        p = pg_array_put(p, names[i], i == 0);
        q += sprintf(q, "%s%llu", i ? "," : "", (unsigned long long)(seqs ? seqs[i] : 0));
    }
    memcpy(p, "}", 2);
    memcpy(q, "}", 2);
    const char *params[] = {list, nums};
    db_query(app->db, &r->q, heads_sql, 2, params, heads_done, r);
    free(list);
    free(nums);
}

static void new_epoch_done(void *p, const PGresult *r, const char *err)
{
    (void)r;
    struct history_request *req = p;
    req->done_cb(req->arg, err);
}

void history_new_epoch(struct herald *app, struct history_request *r, const char *channel,
                       const char *epoch, history_done_cb cb, void *arg)
{
    *r = (struct history_request){.done_cb = cb, .arg = arg};
    const char *params[] = {channel, epoch};
    db_query(app->db, &r->q, new_epoch_sql, 2, params, new_epoch_done, r);
}

static const char key_sql[] = "SELECT encode(key, 'hex') FROM herald_keys WHERE id = 1";

static void key_done(void *p, const PGresult *r, const char *err)
{
    struct history_key_request *req = p;
    unsigned char key[ENVELOPE_KEY_LEN];
    const char *hex = !err && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : NULL;
    if (!err && (!hex || strlen(hex) != 2 * sizeof key))
        err = "herald_keys holds no key of 32 bytes";
    for (size_t i = 0; !err && i < sizeof key; i++) {
        int hi = hex_digit((unsigned char)hex[2 * i]),
            lo = hex_digit((unsigned char)hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            err = "herald_keys holds no key of 32 bytes";
        else
            key[i] = (unsigned char)(hi * 16 + lo);
    }
    req->cb(req->arg, err ? NULL : key, err ? 0 : sizeof key, err);
}

void history_read_key(struct herald *app, struct history_key_request *r, history_key_cb cb,
                      void *arg)
{
    r->cb = cb;
    r->arg = arg;
    db_query(app->db, &r->q, key_sql, 0, NULL, key_done, r);
}
