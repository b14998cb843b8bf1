#define _GNU_SOURCE
#include "supervisor.h"
#include "iplimit.h"
#include "log.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS        64
#define RESTART_BACKOFF_MS 1000 /* a worker that keeps dying is restarted once a second */

#define YOUNG_DEATHS_MAX 5 /* deaths within a second of starting, in a row: give up */

struct worker {
    pid_t pid; /* 0: not running */
    long started_ms;
    long restart_at_ms; /* when a dead worker is started again (0: not waiting) */
    int young_deaths;   /* in a row */
};

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

/* In the child: the signals the supervisor blocked go back to normal, the worker dies with
 * its supervisor, and it serves, counting its connections per address in column `index` of
 * the shared table. Never returns. */
static void run_worker(struct herald_config *cfg, struct iplimit *ips, int index,
                       const sigset_t *old, serve_fn serve)
{
    sigprocmask(SIG_SETMASK, old, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) /* the supervisor died before prctl */
        _exit(1);
    char base[sizeof cfg->instance_id];
    snprintf(base, sizeof base, "%s", cfg->instance_id);
    snprintf(cfg->instance_id, sizeof cfg->instance_id, "%.100s-w%d", base, index);
    cfg->worker = index + 1;
    iplimit_set_slot(ips, index);
    fflush(NULL);
    int code = serve(cfg, ips);
    iplimit_free(ips);
    exit(code); /* exit, not _exit: sanitizer builds check the worker for leaks */
}

static int start_worker(struct herald_config *cfg, struct iplimit *ips, struct worker *w, int index,
                        const sigset_t *old, serve_fn serve)
{
    fflush(NULL); /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        log_error("worker_fork", "cannot start worker %d: %s", index, strerror(errno));
        w->restart_at_ms = now_ms() + RESTART_BACKOFF_MS;
        return -1;
    }
    if (pid == 0)
        run_worker(cfg, ips, index, old, serve);
    w->pid = pid;
    w->restart_at_ms = 0;
    w->started_ms = now_ms();
    log_info("worker_started", "worker %d started (pid %ld)", index, (long)pid);
    return 0;
}

/* Reaps every exited worker, releasing the connections it counted per address (it may have
 * died without closing them); schedules a restart unless the supervisor is stopping.
 * Returns false when a worker keeps dying as soon as it starts (a bad setting, a port in
 * use): restarting it would only spin. */
static bool reap(struct worker *ws, int n, struct iplimit *ips, bool stopping, int *failures)
{
    bool hopeless = false;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < n; i++) {
            if (ws[i].pid != pid)
                continue;
            ws[i].pid = 0;
            iplimit_clear_slot(ips, i);
            bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            if (stopping) {
                if (!clean)
                    (*failures)++;
                log_info("worker_stopped", "worker %d (pid %ld) stopped%s", i, (long)pid,
                         clean ? "" : " with an error");
                break;
            }
            if (WIFSIGNALED(status))
                log_error("worker_died", "worker %d (pid %ld) killed by signal %d; restarting", i,
                          (long)pid, WTERMSIG(status));
            else
                log_error("worker_died", "worker %d (pid %ld) exited with %d; restarting", i,
                          (long)pid, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            /* restart at once, but not in a tight loop when it dies right after starting */
            bool young = now_ms() - ws[i].started_ms < 1000;
            ws[i].young_deaths = young ? ws[i].young_deaths + 1 : 0;
            if (ws[i].young_deaths >= YOUNG_DEATHS_MAX)
                hopeless = true;
            ws[i].restart_at_ms = now_ms() + (young ? RESTART_BACKOFF_MS : 1);
        }
    }
    return !hopeless;
}

static int running(const struct worker *ws, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += ws[i].pid != 0;
    return k;
}

int supervisor_run(struct herald_config *cfg, serve_fn serve)
{
    int n = (int)(cfg->workers < MAX_WORKERS ? cfg->workers : MAX_WORKERS);
    struct worker ws[MAX_WORKERS] = {{0}};
    struct iplimit *ips = iplimit_new(cfg->max_connections, n); /* shared with the workers */
    if (!ips)
        return 1;
    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGCHLD);
    /* signals are taken one at a time with sigtimedwait, so none is lost between checks */
    sigprocmask(SIG_BLOCK, &mask, &old);
    log_info("supervisor", "starting %d workers on %s", n, cfg->listen);
    for (int i = 0; i < n; i++)
        start_worker(cfg, ips, &ws[i], i, &old, serve);

    bool stopping = false;
    int failures = 0;
    while (!stopping || running(ws, n) > 0) {
        struct timespec wait = {0, 100 * 1000000L};
        siginfo_t info;
        int sig = sigtimedwait(&mask, &info, &wait);
        if (sig == SIGTERM || sig == SIGINT) {
            /* the first signal drains every worker; a second one stops them at once, as it
             * does for a single process */
            log_info("supervisor", "signal %d: passing it to %d workers", sig, running(ws, n));
            stopping = true;
            for (int i = 0; i < n; i++)
                if (ws[i].pid)
                    kill(ws[i].pid, sig);
        }
        if (!reap(ws, n, ips, stopping, &failures) && !stopping) {
            log_error("supervisor",
                      "a worker died %d times in a row right after starting; "
                      "stopping",
                      YOUNG_DEATHS_MAX);
            stopping = true;
            failures++;
            for (int i = 0; i < n; i++)
                if (ws[i].pid)
                    kill(ws[i].pid, SIGTERM);
        }
        long now = now_ms();
        for (int i = 0; !stopping && i < n; i++)
            if (!ws[i].pid && ws[i].restart_at_ms && now >= ws[i].restart_at_ms)
                start_worker(cfg, ips, &ws[i], i, &old, serve);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    iplimit_free(ips);
    log_info("stopped", "supervisor stopped (%d worker exit(s) with an error)", failures);
    return failures ? 1 : 0;
}
