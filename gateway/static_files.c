#include "static_files.h"
#include "herald.h"
#include "http_api.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* A path is served only when no segment is empty, "." or ".." and no byte is odd. */
static int path_safe(const char *uri)
{
    if (uri[0] != '/' || strstr(uri, "//") || strstr(uri, "/./") || strstr(uri, "/../"))
        return 0;
    size_t n = strlen(uri);
    if ((n >= 2 && strcmp(uri + n - 2, "/.") == 0) || (n >= 3 && strcmp(uri + n - 3, "/..") == 0))
        return 0;
    for (const char *p = uri; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == '\\')
            return 0;
    return 1;
}

int static_serve(struct herald *app, struct lws *wsi, const char *uri)
{
    char path[1024];
    struct stat st;
    const char *index = uri[strlen(uri) - 1] == '/' ? "index.html" : "";
    int n = snprintf(path, sizeof path, "%s%s%s", app->cfg->static_dir, uri, index);
    if (!path_safe(uri) || n <= 0 || (size_t)n >= sizeof path || stat(path, &st) != 0 ||
        !S_ISREG(st.st_mode)) {
        if (http_respond_error(wsi, 404, ERR_NOT_FOUND, "no such file") < 0)
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    const char *mime = lws_get_mimetype(path, NULL);
    int r = lws_serve_http_file(wsi, path, mime ? mime : "application/octet-stream", NULL, 0);
    if (r < 0)
        return -1;
    /* > 0: lws finished with it at once; the transaction is over */
    return r > 0 && lws_http_transaction_completed(wsi) ? -1 : 0;
}
