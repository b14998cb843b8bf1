/* CORS for /v1 (HERALD_CORS_ORIGINS): a page on another origin may call the REST API. A
 * preflight (OPTIONS with Access-Control-Request-Method) is answered by the front door before
 * any route; an answer to a request whose Origin is listed carries the headers that let the
 * page read it. Tokens travel in Authorization, never in cookies: no credentials mode. */
#ifndef HERALD_CORS_H
#define HERALD_CORS_H

#include <stdbool.h>
#include <stddef.h>

struct herald;
struct lws;

/* Room for cors_lines: the Origin is at most 511 bytes (longer ones are never listed). */
#define CORS_LINES_MAX 768

/* The header lines (each ending in CRLF) an answer to this request carries when CORS is on
 * and its Origin is listed: access-control-allow-origin, vary and the exposed headers; ""
 * otherwise. */
void cors_lines(const struct herald *app, struct lws *wsi, char *out, size_t cap);

/* A CORS preflight of a /v1 route, with CORS on: OPTIONS, an Access-Control-Request-Method
 * header and no body. */
bool cors_is_preflight(const struct herald *app, struct lws *wsi);

/* The whole answer to a preflight from a listed Origin (204 with the methods, headers and
 * max-age, then the connection closes) into out; its length, or 0 when the Origin is not
 * listed (the caller refuses with 403). */
size_t cors_preflight_answer(const struct herald *app, struct lws *wsi, char *out, size_t cap);

#endif
