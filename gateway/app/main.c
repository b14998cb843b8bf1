/* herald: start-up, signals, drain and shutdown of one gateway process. */
#include "bus.h"
#include "cli.h"
#include "migrate.h"
#include "client.h"
#include "protocol.h"
#include "sink.h"
#include "db.h"
#include "frame.h"
#include "presence.h"
#include "publish.h"
#include "rest.h"
#include "stream.h"
#include "retention.h"
#include "sigkey.h"
#include "config.h"
#include "herald.h"
#include "hub.h"
#include "iplimit.h"
#include "keyring.h"
#include "log.h"
#include "server.h"
#include "supervisor.h"

#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DRAIN_CHECK_MS 20

/* What SIGTERM and SIGINT act on. */
struct lifecycle {
    struct herald *app;
    struct server *srv;
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    uint64_t deadline_ms;
    /* the drain closes drain_total clients evenly from drain_start_ms over spread_ms */
    uint64_t drain_start_ms, spread_ms;
    size_t drain_total, drain_closed;
};

static void close_signals(struct lifecycle *lc)
{
    uv_close((uv_handle_t *)&lc->sigterm, NULL);
    uv_close((uv_handle_t *)&lc->sigint, NULL);
    uv_close((uv_handle_t *)&lc->drain_timer, NULL);
}

static void on_check(uv_check_t *h)
{
    client_flush_dirty(h->data);
    stream_flush_dirty(h->data);
}

static void on_prepare(uv_prepare_t *h)
{
    client_flush_dirty(h->data);
    stream_flush_dirty(h->data);
}

/* Output queued by I/O callbacks is flushed right after them (check); output queued by
 * timers or deferred callbacks is flushed before the loop blocks again (prepare). */
static void start_flushing(struct herald *app)
{
    uv_check_init(app->loop, &app->flush_check);
    uv_prepare_init(app->loop, &app->flush_prepare);
    app->flush_check.data = app->flush_prepare.data = app;
    uv_check_start(&app->flush_check, on_check);
    uv_prepare_start(&app->flush_prepare, on_prepare);
}

static void stop_flushing(struct herald *app)
{
    uv_close((uv_handle_t *)&app->flush_check, NULL);
    uv_close((uv_handle_t *)&app->flush_prepare, NULL);
}

/* Tears everything down from inside the loop, as lws wants with a foreign loop: uv_run
 * returns once lws, hiredis and we have closed every handle. */
static void shut_down(struct lifecycle *lc)
{
    if (!lc->srv)
        return;
    client_liveness_stop(lc->app);
    server_stop(lc->srv);
    lc->srv = NULL;
    rest_free(lc->app->rest); /* after the server: closing connections ends their sessions */
    streams_free(lc->app->streams);
    lc->app->rest = NULL;
    retention_free(lc->app->retention);
    lc->app->retention = NULL;
    publisher_free(lc->app->publisher);
    lc->app->publisher = NULL;
    db_free(lc->app->db_read); /* a page failed there goes to the primary, failed next */
    lc->app->db_read = NULL;
    db_free(lc->app->db); /* fails queries in flight: their callbacks still find the hub */
    lc->app->db = NULL;
    hub_stop(lc->app->hub);
    presence_stop(lc->app->presence);
    keyring_stop(lc->app->keyring);
    bus_free(lc->app->bus);
    lc->app->bus = NULL;
    close_signals(lc);
    stop_flushing(lc->app);
    later_close(&lc->app->later); /* last: what db_free failed is delivered first */
}

/* Shuts down once every client has gone or the drain time is up. */
static void on_drain_tick(uv_timer_t *t)
{
    struct lifecycle *lc = t->data;
    struct herald *app = lc->app;
    uint64_t now = herald_now_ms(app);
    uint64_t elapsed = now - lc->drain_start_ms;
    /* client i (from 0) is due at i/total of the spread: the first at once, so that an
     * instance with a handful of clients is not kept for most of the window */
    size_t due =
        elapsed >= lc->spread_ms
            ? lc->drain_total
            : (size_t)((double)lc->drain_total * (double)elapsed / (double)lc->spread_ms) + 1;
    if (due > lc->drain_total)
        due = lc->drain_total;
    if (due > lc->drain_closed) {
        size_t closed = client_drain(app, due - lc->drain_closed);
        if (closed < due - lc->drain_closed) /* the HTTP streams after the WebSockets */
            closed += stream_drain(app, due - lc->drain_closed - closed);
        lc->drain_closed += closed;
    }
    long long left = (long long)app->metrics.connections + (long long)stream_count(app);
    if (left == 0 || now >= lc->deadline_ms) {
        log_info("drained", "%lld connection(s) left; stopping", left);
        shut_down(lc);
    }
}

/* First signal: /readyz turns 503, new handshakes are refused, and the clients are closed with
 * 1001 (after what is queued for them) one after the other, evenly over the first four fifths
 * of HERALD_DRAIN_SECONDS, so that the instances they resume on see a steady stream rather than
 * all of them in one second; the last fifth leaves time for the close handshakes. A second
 * signal stops at once. */
static void on_signal(uv_signal_t *s, int signum)
{
    struct lifecycle *lc = s->data;
    struct herald *app = lc->app;
    if (app->draining) {
        log_warn("stop", "signal %d during drain: stopping now", signum);
        shut_down(lc);
        return;
    }
    app->draining = true;
    lc->drain_start_ms = herald_now_ms(app);
    lc->deadline_ms = lc->drain_start_ms + (uint64_t)app->cfg->drain_seconds * 1000;
    lc->spread_ms = (uint64_t)app->cfg->drain_seconds * 1000 * 4 / 5;
    lc->drain_total = (size_t)app->metrics.connections + stream_count(app);
    lc->drain_closed = 0;
    log_info("draining", "signal %d: closing %lld connection(s) within %ld s", signum,
             (long long)app->metrics.connections, app->cfg->drain_seconds);
    if (app->cfg->worker)
        server_stop_listening(lc->srv); /* the kernel sends new connections to the others */
    uv_timer_start(&lc->drain_timer, on_drain_tick, 0, DRAIN_CHECK_MS);
}

static void watch_signals(struct lifecycle *lc, uv_loop_t *loop)
{
    uv_signal_init(loop, &lc->sigterm);
    uv_signal_init(loop, &lc->sigint);
    uv_timer_init(loop, &lc->drain_timer);
    lc->sigterm.data = lc->sigint.data = lc->drain_timer.data = lc;
    uv_signal_start(&lc->sigterm, on_signal, SIGTERM);
    uv_signal_start(&lc->sigint, on_signal, SIGINT);
}

/* Loads the settings and the log level: -1 to go on, else the exit code (0 after --help or
 * --version, 2 for a bad setting). */
static int load_settings(struct herald_config *cfg, int argc, char **argv)
{
    char err[512];
    switch (config_load(cfg, argc, argv, stdout, err, sizeof err)) {
    case CONFIG_EXIT:
        return 0;
    case CONFIG_ERROR:
        fprintf(stderr, "herald: %s\n", err);
        return 2;
    case CONFIG_OK:
        break;
    }
    log_set_level(cfg->log_level);
    return -1;
}

/* `herald [serve]`, `herald migrate`, `herald publish CHANNEL JSON [KEY]`: the command word
 * and its operands come first, then the usual flags. */
static int run_command(int argc, char **argv, int *handled)
{
    *handled = 0;
    if (argc < 2 || argv[1][0] == '-' || strcmp(argv[1], "serve") == 0)
        return 0;
    *handled = 1;
    const char *cmd = argv[1];
    int operands = strcmp(cmd, "publish") == 0 ? 2 : 0;
    if (strcmp(cmd, "publish") == 0 && argc > 4 && argv[4][0] != '-')
        operands = 3;
    if ((strcmp(cmd, "migrate") != 0 && strcmp(cmd, "publish") != 0) || argc < 2 + operands) {
        fprintf(stderr, "usage: herald [serve] [flags] | herald migrate [flags] | "
                        "herald publish CHANNEL JSON [IDEMPOTENCY_KEY] [flags]\n");
        return 2;
    }
    const char *channel = argv[2], *data = argv[3], *key = operands == 3 ? argv[4] : NULL;
    struct herald_config cfg;
    char **rest = argv + 1 + operands; /* flags follow; rest[0] stands for the program */
    rest[0] = argv[0];
    int code = load_settings(&cfg, argc - 1 - operands, rest);
    if (code >= 0)
        return code;
    if (operands == 0)
        return cli_migrate(&cfg);
    return cli_publish(&cfg, channel, data, key);
}

/* Says loudly what an operator left open. */
static void warn_about_security(const struct herald_config *cfg)
{
    bool keys = cfg->jwt_public_key[0] || cfg->jwks_url[0];
    if (!cfg->jwt_secret[0] && !keys)
        log_warn("auth_off",
                 "HERALD_JWT_SECRET is not set: AUTHENTICATION IS OFF, any client "
                 "may subscribe to any channel%s",
                 cfg->api_key[0] ? "" : " and use every /v1 route");
    if (cfg->jwt_secret[0] && strlen(cfg->jwt_secret) < 32)
        log_warn("weak_secret", "HERALD_JWT_SECRET is shorter than 32 bytes: an HS256 secret "
                                "that short can be guessed offline from one token");
    if ((cfg->jwt_secret[0] || keys) && !cfg->allowed_origins[0])
        log_warn("origins_open", "HERALD_ALLOWED_ORIGINS is not set: any web page may open a "
                                 "WebSocket with a user's token");
}

/* How the channel core reaches the WebSocket clients above it (channels/sink.h). */
/* How presence tells a connection its user could not be listed. */
static const struct presence_sink presence_to_clients = {.full = protocol_presence_full};

static const struct hub_sink client_sink = {
    .deliver = client_deliver,
    .has_room = client_has_room,
    .notify_drained = client_notify_drained,
    .answered = protocol_answered,
};

/* One gateway process, counting its connections per address in ips (the caller's): runs
 * until drained or stopped and returns 0; a server that cannot start exits 1 at once. */
static int serve(struct herald_config *cfg, struct iplimit *ips)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct herald app = {.cfg = cfg, .loop = &loop, .started_ms = uv_now(&loop)};
    later_init(&app.later, &loop);
    app.write_buf = malloc(HERALD_WRITE_BATCH);
    app.client_sink = &client_sink;
    app.hub = hub_new(&app);
    if (app.hub) {
        struct bus_events to_hub;
        hub_bus_events(app.hub, &to_hub);
        app.bus = bus_new(&app, &to_hub);
    }
    app.ips = ips;
    app.rest = rest_new(&app);
    app.streams = streams_new(&app);
    app.presence = presence_new(&app, &presence_to_clients);
    char keys_err[300];
    app.keyring = keyring_new(&app, keys_err, sizeof keys_err);
    if (!app.keyring) {
        fprintf(stderr, "herald: %s\n", keys_err);
        fflush(NULL);
        _exit(2); /* a setting that cannot work, as a bad value */
    }
    if (cfg->database_url[0]) {
        app.db = db_new(&app, cfg->database_url, "PostgreSQL");
        if (cfg->database_read_url[0])
            app.db_read = db_new(&app, cfg->database_read_url, "the PostgreSQL standby");
        app.retention = retention_new(&app);
        app.publisher = publisher_new(&app);
        app.sigkey = sigkey_new(&app);
    }
    struct lifecycle lc = {.app = &app};
    bool ok = app.write_buf && app.hub && app.bus && app.ips && app.rest && app.streams &&
              app.presence &&
              ((app.db && app.retention && app.publisher && app.sigkey) || !cfg->database_url[0]) &&
              (app.db_read || !cfg->database_read_url[0]);
    lc.srv = ok ? server_start(&app) : NULL;
    if (lc.srv) {
        bus_start(app.bus);
        if (app.db) {
            db_start(app.db);
            if (app.db_read)
                db_start(app.db_read);
            retention_start(app.retention);
        } else
            log_warn("no_history", "HERALD_DATABASE_URL is not set: no sequence numbers, "
                                   "no resume, no durable publish");
        hub_start(app.hub);
        presence_start(app.presence);
        keyring_start(app.keyring);
        warn_about_security(cfg);
        watch_signals(&lc, &loop);
        start_flushing(&app);
        client_liveness_start(&app);
        log_info("started", "herald %s (%s) listening on %s, Redis %s%s:%d%s", HERALD_VERSION,
                 cfg->instance_id, cfg->listen, cfg->redis[0].master_name[0] ? "sentinel " : "",
                 cfg->redis[0].host, cfg->redis[0].port,
                 cfg->nredis > 1 ? " and more (channels sharded)" : "");
    } else {
        /* Nothing has been served yet. An lws context that failed half-way on a foreign
         * loop (port in use, bad certificate) leaves handles that nobody closes, so the
         * loop would never end: exit at once (the error is logged). */
        fflush(NULL);
        _exit(1);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    /* lws 4.1 on a foreign loop finishes destroying its context only when called again
     * after its handles have closed */
    if (app.lws) {
        lws_context_destroy(app.lws);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    if (app.lws)
        log_warn("shutdown", "lws context not fully destroyed");
    hub_free(app.hub);
    presence_free(app.presence); /* after every connection left it */
    keyring_free(app.keyring);
    sigkey_free(app.sigkey);
    frame_deflate_end();
    free(app.write_buf);
    if (uv_loop_close(&loop) != 0)
        log_warn("shutdown", "event loop closed with handles still open");
    log_info("stopped", "herald stopped");
    return 0;
}

int main(int argc, char **argv)
{
    int handled;
    int code = run_command(argc, argv, &handled);
    if (handled || code)
        return code;
    if (argc > 1 && strcmp(argv[1], "serve") == 0) {
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    struct herald_config cfg;
    char err[512];
    code = load_settings(&cfg, argc, argv);
    if (code >= 0)
        return code;
    if (cfg.database_url[0] && cfg.migrate_on_start) {
        int n = migrate_run(cfg.database_url, err, sizeof err);
        if (n < 0) {
            fprintf(stderr, "herald: migration failed: %s\n", err);
            return 1;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (cfg.workers > 1)
        return supervisor_run(&cfg, serve);
    struct iplimit *ips = iplimit_new(cfg.max_connections, 1);
    code = serve(&cfg, ips);
    iplimit_free(ips);
    return code;
}