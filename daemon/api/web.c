/* The web app: the files of web/ (compiled in by cmake/embed.cmake as lab_web_files) served at /
 * (index.html) and /web/NAME. These are not API routes: no token (the page must load before it
 * can ask for one; every call it then makes carries the token), no row in the route table and no
 * entry in the OpenAPI document. http.c asks here before it looks at the route table.
 *
 * Caching: every answer says `Cache-Control: no-cache` with an ETag made from the content at
 * build time, so a browser revalidates each file and gets 304 while the daemon is the same build,
 * and a new daemon's app the first time it asks. A strict Content-Security-Policy allows only the
 * daemon's own origin: no inline script, no inline style attribute, no other host. */
#include "daemon/api/api_int.h"
#include "core/embed.h"
#include "core/err.h"

#include <string.h>
#include <strings.h>

#define WEB_PREFIX "/web/"

static const char csp[] = "default-src 'self'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                          "base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

static const struct {
    const char *ext;
    const char *type;
} types[] = {
    {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},   {".svg", "image/svg+xml"},
    {".json", "application/json"},         {".txt", "text/plain; charset=utf-8"},
};

static const char *type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

/* Whether If-None-Match names etag (a list of entity tags, or *; weak ones compare too). */
static bool etag_matches(const char *inm, const char *etag)
{
    if (!inm)
        return false;
    size_t elen = strlen(etag);
    for (const char *p = inm; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (strncmp(p, etag, elen) == 0 && (p[elen] == 0 || p[elen] == ',' || p[elen] == ' '))
            return true;
        while (*p && *p != ',')
            p++;
    }
    return false;
}

static void headers_add(struct MHD_Response *r, const lab_embedded_t *f)
{
    MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, f->etag);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "Content-Security-Policy", csp);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
}

bool lab_web_serve(lab_req_t *rq)
{
    const char *url = rq->url;
    const char *name;
    if (strcmp(url, "/") == 0)
        name = "index.html";
    else if (strncmp(url, WEB_PREFIX, strlen(WEB_PREFIX)) == 0)
        name = url + strlen(WEB_PREFIX);
    else
        return false;
    rq->route = LAB_ROUTE_WEB; /* counted in /metrics as /web/{file} */

    if (strcmp(rq->method, "GET") != 0 && strcmp(rq->method, "HEAD") != 0) {
        struct MHD_Response *r =
            lab_problem(rq, LAB_P_METHOD, NULL, "%s is not allowed on %s", rq->method, url);
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        return true;
    }
    /* An exact name of the table: nothing outside web/ can be named, ".." included. */
    const lab_embedded_t *f = lab_web_find(name);
    if (!f) {
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no file of the web app at %s", url);
        return true;
    }
    struct MHD_Response *r;
    if (etag_matches(lab_req_header(rq, MHD_HTTP_HEADER_IF_NONE_MATCH), f->etag)) {
        r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        LAB_ASSERT(r);
        rq->status = MHD_HTTP_NOT_MODIFIED;
    } else {
        r = MHD_create_response_from_buffer(f->len, (void *)f->text, MHD_RESPMEM_PERSISTENT);
        LAB_ASSERT(r);
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type_of(f->name));
        rq->status = MHD_HTTP_OK;
    }
    headers_add(r, f);
    if (rq->resp)
        MHD_destroy_response(rq->resp);
    rq->resp = r;
    return true;
}
