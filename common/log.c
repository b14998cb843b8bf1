#include "log.h"
#include "json_text.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static enum log_level current_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    current_level = level;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = LOG_DEBUG; i <= LOG_ERROR; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = LOG_WARN;
        return 0;
    }
    return -1;
}

/* The line is built in one buffer and written with one fwrite so that lines from several
 * worker processes sharing stderr do not interleave. */
void log_emit(enum log_level level, const char *event, const char *fmt, ...)
{
    if (level < current_level)
        return;

    char msg[1024], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", (long)(tv.tv_usec / 1000));

    char esc[2 * sizeof msg], line[sizeof esc + 256];
    json_escape(msg, strlen(msg), esc, sizeof esc);
    int len = snprintf(line, sizeof line,
                       "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"%s\",\"msg\":\"%s\"}\n", ts,
                       level_names[level], event, esc);
    if (len > 0 && len < (int)sizeof line)
        fwrite(line, 1, (size_t)len, stderr);
}

bool log_limit_pass(struct log_limit *l, uint64_t now_ms, uint64_t *skipped)
{
    if (l->last_ms && now_ms - l->last_ms < 1000) {
        l->skipped++;
        return false;
    }
    *skipped = l->skipped;
    l->last_ms = now_ms;
    l->skipped = 0;
    return true;
}
