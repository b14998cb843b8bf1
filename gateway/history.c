#include "history.h"
#include "db.h"
#include "herald.h"
#include "pg_array.h"

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

static const char heads_sql[] =
    "SELECT name, last_seq, epoch FROM herald_channels WHERE name = ANY($1::text[])";

static uint64_t u64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoull(PQgetvalue(r, row, col), NULL, 10);
}

/* A query in flight: whom to tell. */
struct call {
    void *cb;
    void *arg;
};

static struct call *call_new(void *cb, void *arg)
{
    struct call *c = malloc(sizeof *c);
    if (c)
        *c = (struct call){.cb = cb, .arg = arg};
    return c;
}

static void fetch_done(void *p, const PGresult *r, const char *err)
{
    struct call *c = p;
    history_page_cb cb = (history_page_cb)c->cb;
    if (err) {
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
    struct call *c = call_new((void *)cb, arg);
    if (!c || db_query(app->db, fetch_sql, 3, params, fetch_done, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

static void heads_done(void *p, const PGresult *r, const char *err)
{
    struct call *c = p;
    history_heads_cb cb = (history_heads_cb)c->cb;
    int rows = err ? 0 : PQntuples(r);
    struct history_head *heads = rows ? calloc((size_t)rows, sizeof *heads) : NULL;
    if (rows && !heads)
        err = "out of memory";
    for (int i = 0; !err && i < rows; i++)
        heads[i] = (struct history_head){PQgetvalue(r, i, 0), u64(r, i, 1), PQgetvalue(r, i, 2)};
    cb(c->arg, err ? NULL : heads, err ? 0 : (size_t)rows, err);
    free(heads);
    free(c);
}

int history_heads(struct herald *app, const char *const *names, size_t n, history_heads_cb cb,
                  void *arg)
{
    size_t size = 3;
    for (size_t i = 0; i < n; i++)
        size += pg_array_room(names[i]);
    char *list = malloc(size);
    struct call *c = call_new((void *)cb, arg);
    int rc = -1;
    if (list && c) {
        char *p = list;
        *p++ = '{';
        for (size_t i = 0; i < n; i++)
            p = pg_array_put(p, names[i], i == 0);
        memcpy(p, "}", 2);
        const char *params[] = {list};
        rc = db_query(app->db, heads_sql, 1, params, heads_done, c);
    }
    if (rc < 0)
        free(c);
    free(list);
    return rc;
}
