#include "keyring.h"
#include "fetch.h"
#include "herald.h"
#include "jwt_keys.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define PEM_MAX_BYTES    (256 * 1024)
#define FETCH_TIMEOUT_MS 5000

/* One fetch of the set, handed to a worker thread and back. The keyring may be stopped
 * meanwhile: `k` is then NULL and the result is dropped. */
struct fetch_job {
    uv_work_t work;
    struct keyring *k;
    char url[2048];
    char ca_file[512];
    struct jwt_keys keys; /* what the worker read */
    int rc;
    char error[256];
};

struct keyring {
    struct herald *app;
    struct jwt_keys file;  /* HERALD_JWT_PUBLIC_KEY's */
    struct jwt_keys set;   /* the last JWK Set that arrived whole */
    struct jwt_keys all;   /* both: what tokens are checked with */
    struct fetch_job *job; /* in flight; NULL: none */
    uv_timer_t timer;
    uint64_t next_fetch_ms; /* the scheduled fetch */
    uint64_t last_fetch_ms; /* when the last one started */
    bool stopped;
};

/* all = file + set (the keys are shared, not copied: only `all`'s array is rebuilt). */
static void rebuild(struct keyring *k)
{
    k->all.n = 0;
    for (size_t i = 0; i < k->file.n; i++)
        k->all.keys[k->all.n++] = k->file.keys[i];
    for (size_t i = 0; i < k->set.n && k->all.n < JWT_KEYS_MAX; i++)
        k->all.keys[k->all.n++] = k->set.keys[i];
    k->app->metrics.jwt_keys = (int64_t)k->all.n;
}

static int read_pem(struct keyring *k, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "HERALD_JWT_PUBLIC_KEY: cannot open %s", path);
        return -1;
    }
    char *buf = malloc(PEM_MAX_BYTES);
    size_t n = buf ? fread(buf, 1, PEM_MAX_BYTES, f) : 0;
    fclose(f);
    char why[160] = "out of memory";
    int rc = buf && n < PEM_MAX_BYTES ? jwt_keys_add_pem(&k->file, buf, n, why, sizeof why) : -1;
    if (rc != 0)
        snprintf(err, errlen, "HERALD_JWT_PUBLIC_KEY %s: %s", path,
                 buf && n >= PEM_MAX_BYTES ? "larger than 256 KiB" : why);
    free(buf);
    return rc;
}

struct keyring *keyring_new(struct herald *app, char *err, size_t errlen)
{
    struct keyring *k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    k->app = app;
    if (app->cfg->jwt_public_key[0] && read_pem(k, app->cfg->jwt_public_key, err, errlen) != 0) {
        free(k);
        return NULL;
    }
    rebuild(k);
    uv_timer_init(app->loop, &k->timer);
    k->timer.data = k;
    return k;
}

static void work_fetch(uv_work_t *w)
{
    struct fetch_job *j = w->data;
    struct fetch_result r;
    if (fetch_get(j->url, j->ca_file[0] ? j->ca_file : NULL, FETCH_TIMEOUT_MS, JWKS_MAX_BYTES,
                  &r) != 0) {
        snprintf(j->error, sizeof j->error, "%s", r.error);
        j->rc = -1;
        return;
    }
    j->rc = jwt_keys_add_jwks(&j->keys, r.body, r.len, j->error, sizeof j->error);
    if (j->rc == 0 && j->keys.n == 0) {
        snprintf(j->error, sizeof j->error, "the set has no RS256 or ES256 signing key");
        j->rc = -1;
    }
    free(r.body);
}

static void arm(struct keyring *k, uint64_t delay_ms);

static void after_fetch(uv_work_t *w, int status)
{
    struct fetch_job *j = w->data;
    struct keyring *k = j->k;
    if (k && status == 0 && j->rc == 0) {
        jwt_keys_move(&k->set, &j->keys);
        rebuild(k);
        k->app->metrics.jwks_fetches++;
        log_info("jwks", "%zu signing keys from %s", k->set.n, j->url);
    } else if (k) {
        k->app->metrics.jwks_fetch_failures++;
        log_warn("jwks", "fetching %s failed: %s; keeping %zu keys, trying again in %d s", j->url,
                 status ? "cancelled" : j->error, k->set.n, JWKS_RETRY_MS / 1000);
    }
    if (k) {
        k->job = NULL;
        if (!k->stopped)
            arm(k,
                j->rc == 0 && status == 0 ? (uint64_t)k->app->cfg->jwks_refresh_ms : JWKS_RETRY_MS);
    }
    jwt_keys_clear(&j->keys);
    free(j);
}

static void start_fetch(struct keyring *k)
{
    if (k->job || k->stopped)
        return;
    struct fetch_job *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->k = k;
    j->work.data = j;
    snprintf(j->url, sizeof j->url, "%s", k->app->cfg->jwks_url);
    snprintf(j->ca_file, sizeof j->ca_file, "%s", k->app->cfg->jwks_ca_file);
    k->last_fetch_ms = herald_now_ms(k->app);
    if (uv_queue_work(k->app->loop, &j->work, work_fetch, after_fetch) != 0) {
        free(j);
        arm(k, JWKS_RETRY_MS);
        return;
    }
    k->job = j;
}

static void on_timer(uv_timer_t *t)
{
    start_fetch(t->data);
}

static void arm(struct keyring *k, uint64_t delay_ms)
{
    k->next_fetch_ms = herald_now_ms(k->app) + delay_ms;
    uv_timer_start(&k->timer, on_timer, delay_ms, 0);
}

void keyring_start(struct keyring *k)
{
    if (k->app->cfg->jwks_url[0])
        start_fetch(k);
}

void keyring_unknown_kid(struct keyring *k)
{
    if (!k->app->cfg->jwks_url[0] || k->job || k->stopped)
        return;
    uint64_t now = herald_now_ms(k->app), soonest = k->last_fetch_ms + JWKS_MIN_INTERVAL_MS;
    if (k->last_fetch_ms && now < soonest) {
        if (k->next_fetch_ms > soonest)
            arm(k, soonest - now); /* not before the interval: a flood of bad kids costs one */
        return;
    }
    start_fetch(k);
}

const struct jwt_keys *keyring_keys(const struct keyring *k)
{
    return k->all.n ? &k->all : NULL;
}

void keyring_stop(struct keyring *k)
{
    k->stopped = true;
    if (k->job) {
        k->job->k = NULL; /* finishes into nothing, or never starts */
        uv_cancel((uv_req_t *)&k->job->work);
    }
    k->job = NULL;
    uv_close((uv_handle_t *)&k->timer, NULL);
}

void keyring_free(struct keyring *k)
{
    if (!k)
        return;
    jwt_keys_clear(&k->file);
    jwt_keys_clear(&k->set);
    free(k);
}
