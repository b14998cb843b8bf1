#include "history.h"
#include "bus.h"
#include "db.h"
#include "herald.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char fetch_sql[] =
    "SELECT c.last_seq, c.epoch, "
    "(SELECT min(seq) FROM herald_messages WHERE channel = $1), m.seq, m.envelope "
    "FROM herald_channels c LEFT JOIN LATERAL ("
    " SELECT seq, envelope FROM herald_messages WHERE channel = $1 AND seq > $2::bigint"
    " ORDER BY seq LIMIT $3::int) m ON true "
    "WHERE c.name = $1 ORDER BY m.seq";

static const char publish_sql[] =
    "SELECT seq, envelope, epoch, duplicate FROM herald_publish($1, $2::json, $3)";

static const char heads_sql[] =
    "SELECT name, last_seq, epoch FROM herald_channels WHERE name = ANY($1::text[])";

static uint64_t u64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoull(PQgetvalue(r, row, col), NULL, 10);
}

struct call {
    struct herald *app;
    void *cb;
    void *arg;
    char channel[208];
};

static struct call *call_new(struct herald *app, void *cb, void *arg, const char *channel)
{
    struct call *c = calloc(1, sizeof *c);
    if (c) {
        *c = (struct call){.app = app, .cb = cb, .arg = arg};
        snprintf(c->channel, sizeof c->channel, "%s", channel ? channel : "");
    }
    return c;
}

static void fetch_done(void *p, const PGresult *r, const char *err)
{
    struct call *c = p;
    history_page_cb cb = (history_page_cb)c->cb;
    if (!r) {
        cb(c->arg, NULL, err);
        free(c);
        return;
    }
    int rows = PQntuples(r);
    struct history_page page = {.exists = rows > 0};
    struct history_row *list = rows ? calloc((size_t)rows, sizeof *list) : NULL;
    if (rows && !list) {
        cb(c->arg, NULL, "out of memory");
        free(c);
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
    cb(c->arg, &page, NULL);
    free(list);
    free(c);
}

int history_fetch(struct herald *app, const char *channel, uint64_t since, long limit,
                  history_page_cb cb, void *arg)
{
    char s[24], l[24];
    snprintf(s, sizeof s, "%llu", (unsigned long long)since);
    snprintf(l, sizeof l, "%ld", limit);
    const char *params[] = {channel, s, l};
    struct call *c = call_new(app, (void *)cb, arg, channel);
    if (!c || db_query(app->db, fetch_sql, 3, params, fetch_done, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

static void publish_done(void *p, const PGresult *r, const char *err)
{
    struct call *c = p;
    history_publish_cb cb = (history_publish_cb)c->cb;
    if (!r || PQntuples(r) != 1) {
        cb(c->arg, 0, NULL, false, r ? "publish returned no row" : err);
        free(c);
        return;
    }
    bool duplicate = PQgetvalue(r, 0, 3)[0] == 't';
    /* step 2, now that step 1 is committed; a retry publishes nothing new */
    if (!duplicate)
        bus_publish(c->app->bus, c->channel, PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1));
    cb(c->arg, u64(r, 0, 0), PQgetvalue(r, 0, 2), duplicate, NULL);
    free(c);
}

int history_publish(struct herald *app, const char *channel, const char *data, const char *key,
                    history_publish_cb cb, void *arg)
{
    const char *params[] = {channel, data, key};
    struct call *c = call_new(app, (void *)cb, arg, channel);
    if (!c || db_query(app->db, publish_sql, 3, params, publish_done, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

static void heads_done(void *p, const PGresult *r, const char *err)
{
    struct call *c = p;
    history_heads_cb cb = (history_heads_cb)c->cb;
    int rows = r ? PQntuples(r) : 0;
    struct history_head *heads = rows ? calloc((size_t)rows, sizeof *heads) : NULL;
    if (r && rows && !heads) {
        r = NULL;
        err = "out of memory";
    }
    for (int i = 0; r && i < rows; i++)
        heads[i] = (struct history_head){PQgetvalue(r, i, 0), u64(r, i, 1), PQgetvalue(r, i, 2)};
    cb(c->arg, r ? heads : NULL, r ? (size_t)rows : 0, r ? NULL : err);
    free(heads);
    free(c);
}

int history_heads(struct herald *app, const char *const *names, size_t n, history_heads_cb cb,
                  void *arg)
{
    /* {"a","b"}: channel names need no escaping inside the quotes */
    size_t size = 3;
    for (size_t i = 0; i < n; i++)
        size += strlen(names[i]) + 3;
    char *list = malloc(size);
    struct call *c = call_new(app, (void *)cb, arg, NULL);
    int rc = -1;
    if (list && c) {
        char *p = list;
        *p++ = '{';
        for (size_t i = 0; i < n; i++)
            p += sprintf(p, "%s\"%s\"", i ? "," : "", names[i]);
        *p++ = '}';
        *p = '\0';
        const char *params[] = {list};
        rc = db_query(app->db, heads_sql, 1, params, heads_done, c);
    }
    if (rc < 0)
        free(c);
    free(list);
    return rc;
}
