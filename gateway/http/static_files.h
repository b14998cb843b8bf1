/* The web demo's files from HERALD_STATIC_DIR: served by lws once Herald has checked that
 * the path is a regular file whose real path is inside the folder's, with no dot segment
 * (lws's own file mount answers nothing at all for a missing file). Every answer, 404
 * included, says X-Content-Type-Options: nosniff. */
#ifndef HERALD_STATIC_FILES_H
#define HERALD_STATIC_FILES_H

struct lws;
struct herald;

/* Answers GET uri from the static folder, or 404. Returns what the callback returns. */
int static_serve(struct herald *app, struct lws *wsi, const char *uri);

#endif
