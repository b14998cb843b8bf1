/* JSON logging: one object per line on stderr, {"ts","level","event","msg"}. */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* The level is set once at start-up, before the loop runs; it is process-wide because every
 * module logs (herald.h lists the other process-wide state). */
void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn" or "error"; returns 0 or -1. */
int log_level_parse(const char *s, enum log_level *out);

void log_emit(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(event, ...) log_emit(LOG_DEBUG, event, __VA_ARGS__)
#define log_info(event, ...)  log_emit(LOG_INFO, event, __VA_ARGS__)
#define log_warn(event, ...)  log_emit(LOG_WARN, event, __VA_ARGS__)
#define log_error(event, ...) log_emit(LOG_ERROR, event, __VA_ARGS__)

/* At most one line a second for an event that input can repeat at will (forged payloads, a
 * query failing for every channel). */
struct log_limit {
    uint64_t last_ms;
    uint64_t skipped;
};
/* Whether to log now (now_ms from a monotonic clock); when it is, *skipped gets how many
 * lines were held back since the last one. */
bool log_limit_pass(struct log_limit *l, uint64_t now_ms, uint64_t *skipped);

#endif
