#include "static_files.h"
#include "herald.h"
#include "http_reply.h"

#include <libwebsockets.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A path is served only when no segment is empty or starts with '.' (no "." or "..", no
 * dotfile, no dot folder) and no byte is odd. */
static int path_safe(const char *uri)
{
    if (uri[0] != '/' || strstr(uri, "//") || strstr(uri, "/."))
        return 0;
    for (const char *p = uri; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == '\\')
            return 0;
    return 1;
}

/* The real path of the static folder, resolved at the first request (and again while it
 * cannot be: the folder may appear later). Repointing a symlinked folder needs a restart. */
static const char *static_root(const char *dir)
{
    static char root[PATH_MAX];
    if (!root[0] && !realpath(dir, root))
        root[0] = '\0';
    return root[0] ? root : NULL;
}

/* "x-content-type-options: nosniff": browsers take the content type as sent, never guess. */
static int add_nosniff(struct lws *wsi, uint8_t **p, uint8_t *end)
{
    return lws_add_http_header_by_name(
        wsi, (const uint8_t *)"x-content-type-options:", (const uint8_t *)"nosniff", 7, p, end);
}

/* The 404 http_respond_error answers, with nosniff. */
static int not_found(struct lws *wsi)
{
    uint8_t head[LWS_PRE + 512], body[LWS_PRE + 128];
    uint8_t *start = head + LWS_PRE, *p = start, *end = head + sizeof head - 1;
    size_t len = http_error_body((char *)body + LWS_PRE, sizeof body - LWS_PRE, ERR_NOT_FOUND,
                                 "no such file");
    if (lws_add_http_common_headers(wsi, HTTP_STATUS_NOT_FOUND, "application/json", len, &p, end) ||
        lws_add_http_header_by_name(
            wsi, (const uint8_t *)"cache-control:", (const uint8_t *)"no-store", 8, &p, end) ||
        add_nosniff(wsi, &p, end) || lws_finalize_write_http_header(wsi, start, &p, end) ||
        lws_write(wsi, body + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) < 0)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Serves the file only when its real path (symlinks followed) is inside the real path of the
 * folder and has no dot segment below it. */
int static_serve(struct herald *app, struct lws *wsi, const char *uri)
{
    const char *root = static_root(app->cfg->static_dir);
    char path[PATH_MAX], real[PATH_MAX];
    struct stat st;
    const char *index = uri[strlen(uri) - 1] == '/' ? "index.html" : "";
    int n = root ? snprintf(path, sizeof path, "%s%s%s", root, uri, index) : -1;
    size_t rlen = root && strcmp(root, "/") != 0 ? strlen(root) : 0; /* "/" holds everything */
    if (!path_safe(uri) || n <= 0 || (size_t)n >= sizeof path || !realpath(path, real) ||
        strncmp(real, root, rlen) != 0 || real[rlen] != '/' || strstr(real + rlen, "/.") ||
        stat(real, &st) != 0 || !S_ISREG(st.st_mode))
        return not_found(wsi);
    /* lws 4.1.6 looks for cache-control in these with strstr: they must end in a NUL */
    uint8_t headers[128], *p = headers;
    if (add_nosniff(wsi, &p, headers + sizeof headers - 1))
        return -1;
    *p = '\0';
    const char *mime = lws_get_mimetype(path, NULL); /* by the name asked for */
    int r = lws_serve_http_file(wsi, real, mime ? mime : "application/octet-stream",
                                (const char *)headers, (int)(p - headers));
    if (r < 0)
        return -1;
    /* > 0: lws finished with it at once; the transaction is over */
    return r > 0 && lws_http_transaction_completed(wsi) ? -1 : 0;
}
