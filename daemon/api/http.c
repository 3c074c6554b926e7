/* The HTTP server inside the loop: libmicrohttpd with its own epoll set and no thread of its own.
 * Its epoll fd is watched by a uv_poll (readable -> MHD_run), its timeout by a uv_timer re-armed
 * after every MHD_run, and a uv_check runs MHD once more after connections were resumed. Also
 * here: the request contexts (pooled), the first-callback checks (route, token, role, size,
 * content type), body collection with the size limit, and the lifecycle (start, stop accepting,
 * close). */
#include "daemon/api/api_int.h"
#include "core/chain.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/text.h"
#include "core/utf8.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/evp.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* A chunked body that pauses this long before its last chunk is refused (see body_stalled). */
#define LAB_CHUNK_STALL_MS 2000
/* At the connection limit, a connection without a whole request head this long is closed to
 * make room (see head_due). */
#define LAB_SHED_MS 1000
/* Request contexts kept for reuse, and the largest body buffer a pooled context keeps. */
#define LAB_POOL_MAX 256
#define LAB_POOL_BODY_MAX (16 * 1024)
/* MHD's memory per connection (its default is 32 KiB): room for an event stream to send 64 KiB
 * blocks. Pages not touched are not resident, so an ordinary request costs what it did. */
#define LAB_HTTP_CONN_MEMORY (128 * 1024)

static void run_mhd(lab_api_t *api);
static void on_check(uv_check_t *c);
static void on_timer(uv_timer_t *t);
static void finish_close(lab_api_t *api);
static void deadline_arm(lab_api_t *api);

/* ---- answers ---- */

struct MHD_Response *lab_respond(lab_req_t *rq, unsigned status, const char *ctype, char *text,
                                 size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, text, free);
    LAB_ASSERT(r);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (rq->resp)
        MHD_destroy_response(rq->resp);
    rq->resp = r;
    rq->status = status;
    return r;
}

struct MHD_Response *lab_respond_json(lab_req_t *rq, unsigned status, json_t *doc)
{
    /* Ten significant digits: 0.1917, not 0.19170000000000001 (no instrument measures more). */
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(doc);
    if (!text)
        return lab_respond_internal(rq, doc ? "the document could not be written as JSON"
                                            : "the document could not be built");
    return lab_respond(rq, status, "application/json", text, strlen(text));
}

/* Built from nothing that can fail: no outside text, no allocation but the copy. */
static const char internal_body[] =
    "{\"type\":\"urn:labloop:problem:internal\",\"title\":\"Internal error\",\"status\":500,"
    "\"detail\":\"the answer could not be built; the daemon log says why\",\"instance\":\"\","
    "\"errors\":[]}";

struct MHD_Response *lab_respond_internal(lab_req_t *rq, const char *why)
{
    log_error("api", "%s %s: 500 %s", rq->method, rq->url, why);
    return lab_respond(rq, 500, "application/problem+json", lab_strdup(internal_body),
                       sizeof internal_body - 1);
}

void lab_req_hash(lab_req_t *rq, char out[65])
{
    uint8_t d[32];
    unsigned len = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    /* OpenSSL fails here only when it cannot allocate: fatal, as any OOM is (core/mem.h). */
    if (!c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(c, rq->method, strlen(rq->method) + 1) ||
        !EVP_DigestUpdate(c, rq->url, strlen(rq->url) + 1) ||
        (rq->len && !EVP_DigestUpdate(c, rq->body, rq->len)) || !EVP_DigestFinal_ex(c, d, &len))
        abort();
    EVP_MD_CTX_free(c);
    lab_chain_hex(d, out);
}

json_t *lab_req_reason_body(lab_req_t *rq, const char *what)
{
    if (!rq->len)
        return json_object();
    json_t *body = json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, NULL);
    json_t *reason = json_object_get(body, "reason");
    if (json_is_object(body) && json_object_size(body) == (reason ? 1u : 0u) &&
        (!reason || (json_is_string(reason) &&
                     lab_text_chars(json_string_value(reason), json_string_length(reason)) <=
                         LAB_CANCEL_REASON_CHARS)))
        return body;
    json_decref(body);
    lab_problem(rq, LAB_P_INVALID,
                lab_errors_one("", "expected {} or {\"reason\": text of at most 500 characters}"),
                "not a %s", what);
    return NULL;
}

json_t *lab_req_json(lab_req_t *rq, const lab_jschema_t *schema, const char *what)
{
    json_error_t jerr;
    json_t *doc = json_loadb(rq->len ? rq->body : "", rq->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        char msg[300];
        snprintf(msg, sizeof msg, "line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
        lab_problem(rq, LAB_P_BAD_JSON, lab_errors_one("", msg), "the body is not valid JSON: %s",
                    msg);
        return NULL;
    }
    lab_jerrs_t errs = {0};
    int nerr = schema ? lab_jschema_validate(schema, doc, &errs) : 0;
    if (!schema && !json_is_object(doc)) {
        lab_problem(rq, LAB_P_INVALID, lab_errors_one("", "expected a JSON object"),
                    "the %s is not a JSON object", what);
        json_decref(doc);
        doc = NULL;
    } else if (nerr > 0) {
        lab_problem(rq, LAB_P_INVALID, lab_jerrs_to_json(&errs), "%d problem%s in the %s", nerr,
                    nerr == 1 ? "" : "s", what);
        json_decref(doc);
        doc = NULL;
    }
    lab_jerrs_free(&errs);
    return doc;
}

const char *lab_req_header(lab_req_t *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

typedef struct query_check {
    const char *const *known;
    json_t *errs;
} query_check_t;

static enum MHD_Result query_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    (void)value;
    query_check_t *q = cls;
    for (const char *const *k = q->known; *k; k++)
        if (strcmp(key, *k) == 0)
            return MHD_YES;
    char names[200] = "";
    size_t len = 0;
    for (const char *const *k = q->known; *k && len < sizeof names - 1; k++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s",
                                k == q->known ? ""
                                : k[1]        ? ", "
                                              : " and ",
                                *k);
    char msg[400], name[80];
    snprintf(name, sizeof name, "%.*s", (int)lab_utf8_cut(key, strlen(key), 64), key);
    snprintf(msg, sizeof msg, "query parameter %s: unknown (%s %s)", name, names,
             q->known[0] && q->known[1] ? "are" : "is");
    lab_query_error_add(q->errs, name, msg);
    return MHD_YES;
}

void lab_query_error_add(json_t *errs, const char *name, const char *message)
{
    json_t *one = lab_errors_one(name, message);
    json_array_extend(errs, one);
    json_decref(one);
}

bool lab_query_num(const char *s, long long lo, long long hi, long long *out)
{
    if (!s || !isdigit((unsigned char)s[0]))
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

void lab_query_unknown(lab_req_t *rq, const char *const *known, json_t *errs)
{
    query_check_t q = {known, errs};
    MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, query_one, &q);
}

const char *lab_req_query(lab_req_t *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* ---- request contexts ---- */

static lab_req_t *req_new(lab_api_t *api, struct MHD_Connection *c, const char *url,
                          const char *method)
{
    lab_req_t *rq = api->pool;
    if (rq) {
        api->pool = rq->next;
        api->npool--;
    } else {
        rq = LAB_NEW(lab_req_t);
    }
    char *body = rq->body;
    size_t cap = rq->cap;
    memset(rq, 0, sizeof *rq);
    rq->body = body;
    rq->cap = cap;
    rq->api = api;
    rq->conn = c;
    rq->url = url;
    rq->method = method;
    rq->route = LAB_ROUTE_NONE;
    rq->state = RQ_BODY;
    rq->t0 = uv_hrtime();
    api->active++;
    return rq;
}

static void req_release(lab_api_t *api, lab_req_t *rq)
{
    LAB_ASSERT(rq->state != RQ_STORE);
    if (rq->resp)
        MHD_destroy_response(rq->resp);
    rq->resp = NULL;
    json_decref(rq->act_params);
    rq->act_params = NULL;
    api->active--;
    if (api->npool >= LAB_POOL_MAX || api->closing) {
        free(rq->body);
        free(rq);
        return;
    }
    if (rq->cap > LAB_POOL_BODY_MAX) {
        free(rq->body);
        rq->body = NULL;
        rq->cap = 0;
    }
    rq->next = api->pool;
    api->pool = rq;
    api->npool++;
}

static void pool_free(lab_api_t *api)
{
    while (api->pool) {
        lab_req_t *rq = api->pool;
        api->pool = rq->next;
        free(rq->body);
        free(rq);
    }
    api->npool = 0;
}

/* ---- routing ---- */

/* Does path match pattern? A {name} segment takes one non-empty segment, kept in rq. */
static bool route_match(const char *pattern, const char *path, lab_req_t *rq)
{
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            const char *end = strchr(s, '/');
            size_t n = end ? (size_t)(end - s) : strlen(s);
            if (n == 0)
                return false;
            if (rq) {
                rq->param = s;
                rq->param_len = n;
            }
            p = close + 1;
            s += n;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    return *p == 0 && *s == 0;
}

/* The route for method and path (its index); LAB_ENOACTION with the allowed methods in allow
 * (405), or LAB_ENOTFOUND (404). */
static int route_find(lab_req_t *rq, char *allow, size_t allowlen)
{
    bool path_known = false;
    allow[0] = 0;
    for (int i = 0; i < lab_nroutes; i++) {
        if (!route_match(lab_routes[i].pattern, rq->url, NULL))
            continue;
        if (strcmp(lab_routes[i].method, rq->method) == 0) {
            route_match(lab_routes[i].pattern, rq->url, rq);
            return i;
        }
        if (!strstr(allow, lab_routes[i].method)) {
            size_t used = strlen(allow);
            snprintf(allow + used, allowlen - used, "%s%s", used ? ", " : "", lab_routes[i].method);
        }
        path_known = true;
    }
    return path_known ? LAB_ENOACTION : LAB_ENOTFOUND;
}

/* ---- the first callback: everything decided from the headers ---- */

static void who_set(lab_req_t *rq, const char *name)
{
    snprintf(rq->who, sizeof rq->who, "%s", name);
}

/* 0 when the caller may go on; otherwise rq's answer is set. */
static int check_auth(lab_req_t *rq, const lab_route_t *route)
{
    lab_api_t *api = rq->api;
    who_set(rq, "anonymous");
    rq->role = api->auth ? 0 : LAB_ROLES_ALL;
    rq->named = !api->auth;
    if (!api->auth || route->roles == 0)
        return 0;
    const char *h = lab_req_header(rq, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *tok = NULL;
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        tok = h + 7;
        while (*tok == ' ')
            tok++;
    }
    const lab_token_t *t = tok && *tok ? lab_tokens_find(&api->tokens, tok, strlen(tok)) : NULL;
    if (!t) {
        struct MHD_Response *r =
            lab_problem(rq, LAB_P_UNAUTHORIZED, NULL,
                        h ? "the bearer token is not valid" : "a bearer token is required");
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                h ? "Bearer realm=\"labloop\", error=\"invalid_token\""
                                  : "Bearer realm=\"labloop\"");
        return LAB_EAUTH;
    }
    who_set(rq, t->name);
    rq->role = (unsigned)t->role;
    rq->named = t->named;
    if (!(route->roles & (unsigned)t->role)) {
        lab_problem(rq, LAB_P_FORBIDDEN, NULL, "role %s may not %s %s", lab_role_name(t->role),
                    rq->method, route->pattern);
        return LAB_EFORBIDDEN;
    }
    return 0;
}

/* application/json, with parameters allowed ("application/json; charset=utf-8"). */
static bool is_json_type(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, "application/json", 16) != 0)
        return false;
    ct += 16;
    while (*ct == ' ')
        ct++;
    return *ct == 0 || *ct == ';';
}

static void begin(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    char allow[64];
    const char *cl = lab_req_header(rq, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = lab_req_header(rq, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    long long clen = -1;
    if (cl) {
        char *end;
        errno = 0;
        clen = strtoll(cl, &end, 10);
        if (errno || end == cl || clen < 0)
            clen = -1;
    }
    rq->has_body = clen > 0 || te != NULL;
    rq->clen = clen;

    if (lab_web_serve(rq)) /* the web app's files are not API routes: no token, no body */
        return;
    int r = route_find(rq, allow, sizeof allow);
    if (r == LAB_ENOTFOUND) {
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no resource at %s", rq->url);
        return;
    }
    if (r == LAB_ENOACTION) {
        struct MHD_Response *resp =
            lab_problem(rq, LAB_P_METHOD, NULL, "%s is not allowed on %s", rq->method, rq->url);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        return;
    }
    rq->route = r;
    const lab_route_t *route = &lab_routes[r];
    if (check_auth(rq, route))
        return;
    if (clen > api->max_body) {
        lab_problem(rq, LAB_P_TOO_LARGE, NULL, "Content-Length %lld is over the limit of %ld bytes",
                    clen, api->max_body);
        return;
    }
    if (route->body && rq->has_body) { /* no body at all: the handler decides what that means */
        const char *ct = lab_req_header(rq, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!is_json_type(ct)) {
            lab_problem(rq, LAB_P_MEDIA_TYPE, NULL, "the body must be application/json, not %s",
                        ct ? ct : "(none)");
            return;
        }
        if (clen > 0 && (size_t)clen > rq->cap) {
            free(rq->body);
            rq->cap = (size_t)clen;
            rq->body = lab_malloc(rq->cap);
        }
    }
}

/* An answer in the middle of a body. MHD takes a response only before the body or after all of
 * it, so this one is written on the socket here; the socket's send buffer is empty (nothing was
 * answered yet on this request), so a few hundred bytes go out whole or the connection is
 * already broken. What is left of the body is then dropped unread (RQ_DISCARD). */
static void answer_raw(lab_req_t *rq, lab_problem_t p, const char *reason, const char *detail)
{
    char *body = lab_problem_text(p, rq->url, NULL, detail);
    if (!body)
        body = lab_strdup(internal_body);
    size_t blen = strlen(body);
    int status = lab_problem_status(p);
    char *msg = lab_asprintf("HTTP/1.1 %d %s\r\n"
                             "Content-Type: application/problem+json\r\n"
                             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                             status, reason, blen, body);
    free(body);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci)
        (void)!send(ci->connect_fd, msg, strlen(msg), MSG_NOSIGNAL);
    free(msg);
    rq->status = (unsigned)status;
    rq->answered_raw = true;
    rq->state = RQ_DISCARD;
}

/* A chunked body passed the limit: 413, and the rest is read and dropped until the client,
 * having seen the answer, stops; then the connection is closed. */
static void refuse_chunked(lab_req_t *rq)
{
    char detail[128];
    snprintf(detail, sizeof detail, "the body passed the limit of %ld bytes", rq->api->max_body);
    answer_raw(rq, LAB_P_TOO_LARGE, "Content Too Large", detail);
    log_debug("api", "%s %s: chunked body over %ld bytes refused", rq->method, rq->url,
              rq->api->max_body);
}

/* A chunked body stopped before its last chunk. MHD parses the chunk sizes without showing them
 * to the application, so a chunk announced larger than anything the client sends (e.g.
 * FFFFFFFFFFFFFFFF) looks exactly like a pause: no answer would come before the idle timeout.
 * A request body here is a JSON document sent at once; a pause of LAB_CHUNK_STALL_MS is
 * answered 400 and the connection closed on both sides. */
static void body_stalled(lab_req_t *rq)
{
    answer_raw(rq, LAB_P_BAD_REQUEST, "Bad Request",
               "the chunked body stopped before its last chunk (a chunk larger than what was "
               "sent?)");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci)
        shutdown(ci->connect_fd, SHUT_RDWR); /* MHD sees the hang-up and closes */
    log_debug("api", "%s %s: chunked body stalled, refused", rq->method, rq->url);
}

/* Whether the client closed its side. microhttpd's edge-triggered epoll misses a close that came
 * with the last bytes it read (it saw a short read and waits for another edge that never comes),
 * so a body cut short would hold its connection until the timeout. Asked only while a body is
 * known to be incomplete: a client that half-closes after a whole request still gets its answer. */
static bool peer_closed(lab_req_t *rq)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    char c;
    return ci && recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* ---- connections and their deadlines ----
 * MHD's own timeout is one of inactivity: a client that sends a header line now and then keeps
 * its connection forever. So the API keeps its own deadlines, per connection, in two lists in
 * deadline order (each list has one duration, so appending keeps it sorted): HEAD, the request
 * head must be complete http_idle_timeout after the connection opened or its last answer went
 * out; STALL, a chunked body must not pause longer than LAB_CHUNK_STALL_MS. One timer runs for
 * the earliest. A connection past its deadline is shut down under MHD, which then sees the
 * hang-up and closes it as usual. */

static lab_conn_t *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void conn_unwait(lab_conn_t *k)
{
    if (k->list < 0)
        return;
    lab_api_t *api = k->api;
    lab_conn_t **head = &api->wait_head[k->list], **tail = &api->wait_tail[k->list];
    if (k->prev)
        k->prev->next = k->next;
    else
        *head = k->next;
    if (k->next)
        k->next->prev = k->prev;
    else
        *tail = k->prev;
    k->prev = k->next = NULL;
    k->list = -1;
    k->rq = NULL;
}

static void conn_wait(lab_conn_t *k, int list, lab_req_t *rq)
{
    lab_api_t *api = k->api;
    conn_unwait(k);
    k->list = list;
    k->rq = rq;
    k->deadline = uv_now(api->loop) + (list == CONN_HEAD ? api->idle_ms : LAB_CHUNK_STALL_MS);
    k->prev = api->wait_tail[list];
    if (k->prev)
        k->prev->next = k;
    else
        api->wait_head[list] = k;
    api->wait_tail[list] = k;
    deadline_arm(api);
}

static void conn_shut(lab_conn_t *k)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(k->c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci)
        shutdown(ci->connect_fd, SHUT_RDWR);
}

/* When k's wait for a request head ends. At the connection limit the server takes no new
 * connection until one closes, and the ones waiting in the kernel's backlog may be the clients
 * that would send a request at once: so then a connection that sent no whole head for
 * LAB_SHED_MS (an idle keep-alive, a slow or silent client) gives its place up. */
static uint64_t head_due(const lab_api_t *api, const lab_conn_t *k)
{
    if (api->nconns >= api->max_conns)
        return k->deadline - api->idle_ms + LAB_SHED_MS;
    return k->deadline;
}

static void on_deadline(uv_timer_t *t)
{
    lab_api_t *api = t->data;
    uint64_t now = uv_now(api->loop);
    lab_conn_t *k;
    while ((k = api->wait_head[CONN_HEAD]) && head_due(api, k) <= now) {
        conn_unwait(k);
        api->idle_closed++;
        log_debug("api", "connection closed: no whole request head within %u ms%s",
                  (unsigned)(now - (k->deadline - api->idle_ms)),
                  api->nconns >= api->max_conns ? " at the connection limit" : "");
        conn_shut(k);
    }
    while ((k = api->wait_head[CONN_STALL]) && k->deadline <= now) {
        lab_req_t *rq = k->rq;
        conn_unwait(k);
        body_stalled(rq);
    }
    deadline_arm(api);
}

static void deadline_arm(lab_api_t *api)
{
    uint64_t next = UINT64_MAX;
    if (api->wait_head[CONN_HEAD])
        next = head_due(api, api->wait_head[CONN_HEAD]);
    if (api->wait_head[CONN_STALL] && api->wait_head[CONN_STALL]->deadline < next)
        next = api->wait_head[CONN_STALL]->deadline;
    if (next == UINT64_MAX) {
        uv_timer_stop(&api->deadlines);
        return;
    }
    uint64_t now = uv_now(api->loop);
    uv_timer_start(&api->deadlines, on_deadline, next > now ? next - now : 0, 0);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    lab_api_t *api = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        lab_conn_t *k = LAB_NEW(lab_conn_t);
        k->api = api;
        k->c = c;
        k->list = -1;
        *socket_context = k;
        api->nconns++;
        conn_wait(k, CONN_HEAD, NULL);
        return;
    }
    lab_conn_t *k = *socket_context;
    if (!k)
        return;
    conn_unwait(k);
    if (!api->closing)
        deadline_arm(api);
    free(k);
    *socket_context = NULL;
    api->nconns--;
}

static enum MHD_Result queue(lab_req_t *rq)
{
    struct MHD_Response *r = rq->resp;
    rq->resp = NULL;
    rq->state = RQ_READY;
    enum MHD_Result ok = MHD_queue_response(rq->conn, rq->status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    lab_api_t *api = cls;
    lab_req_t *rq = *con_cls;
    if (!rq) {
        rq = req_new(api, c, url, method);
        *con_cls = rq;
        lab_conn_t *k = conn_of(c);
        if (k)
            conn_unwait(k); /* the head is complete */
        begin(rq);
        if (!rq->resp) {
            if (k && rq->has_body && rq->clen < 0)
                conn_wait(k, CONN_STALL, rq);
            return MHD_YES;
        }
        /* Answered from the headers. With a body coming, answer now: MHD then closes the
         * connection without reading the body. Without one, wait for the final call so the
         * connection stays open. */
        rq->state = RQ_READY;
        return rq->has_body ? queue(rq) : MHD_YES;
    }
    switch (rq->state) {
    case RQ_BODY:
        if (*upload_size) {
            size_t n = *upload_size;
            *upload_size = 0;
            lab_conn_t *k = conn_of(c);
            if (rq->len + n > (size_t)api->max_body) {
                if (k)
                    conn_unwait(k);
                refuse_chunked(rq);
                return MHD_YES;
            }
            if (k && k->list == CONN_STALL)
                conn_wait(k, CONN_STALL, rq); /* it came: the pause starts again */
            if (rq->route >= 0 && lab_routes[rq->route].body) {
                if (rq->len + n > rq->cap) {
                    rq->cap = rq->len + n > 2 * rq->cap ? rq->len + n : 2 * rq->cap;
                    rq->body = lab_realloc(rq->body, rq->cap);
                }
                memcpy(rq->body + rq->len, upload, n);
            }
            rq->len += n;
            if (rq->clen > 0 && rq->len < (size_t)rq->clen && peer_closed(rq))
                return MHD_NO; /* truncated: closed, and released in on_completed */
            return MHD_YES;
        }
        lab_conn_t *k = conn_of(c);
        if (k)
            conn_unwait(k); /* the whole body came */
        lab_routes[rq->route].fn(rq);
        if (rq->state == RQ_STORE)
            return MHD_YES;
        if (!rq->resp)
            lab_respond_internal(rq, "the handler set no answer");
        return queue(rq);
    case RQ_DISCARD:
        if (*upload_size) {
            *upload_size = 0;
            return peer_closed(rq) ? MHD_NO : MHD_YES;
        }
        return MHD_NO; /* the whole body came after all: the 413 was sent, close */
    case RQ_READY:
        *upload_size = 0;
        if (!rq->resp)
            return MHD_YES;
        return queue(rq);
    case RQ_STORE:
        return MHD_YES;
    }
    return MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    lab_api_t *api = cls;
    lab_req_t *rq = *con_cls;
    if (!rq)
        return;
    *con_cls = NULL;
    lab_conn_t *k = conn_of(c);
    if (k) /* the next request's head, if the connection stays, has its time from now */
        conn_wait(k, CONN_HEAD, NULL);
    double ms = (double)(uv_hrtime() - rq->t0) / 1e6;
    if (rq->status && (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK || rq->answered_raw)) {
        lab_metrics_count(api, rq->route, rq->status);
        log_debug("api", "%s %s status=%u ms=%.2f", rq->method, rq->url, rq->status, ms);
    } else {
        api->aborted++;
        log_debug("api", "%s %s status=none ms=%.2f ended=%d (the client went away)", rq->method,
                  rq->url, ms, (int)toe);
    }
    req_release(api, rq);
}

/* ---- suspension for the store ---- */

void lab_req_suspend(lab_req_t *rq)
{
    rq->state = RQ_STORE;
    rq->api->in_flight++;
    MHD_suspend_connection(rq->conn);
}

/* The store answered: the answer is ready; MHD asks for it once the connection runs again. A
 * client that left meanwhile is noticed then, by MHD, and its context released as usual. */
void lab_req_resume(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    LAB_ASSERT(rq->state == RQ_STORE); /* one completion per suspension */
    if (!rq->resp)
        lab_respond_internal(rq, "the completion set no answer");
    rq->state = RQ_READY;
    api->in_flight--;
    MHD_resume_connection(rq->conn);
    lab_api_kick(api);
}

void lab_api_kick(lab_api_t *api)
{
    if (!api->mhd)
        return;
    /* Not MHD_run from here: this may be inside MHD's own callback. The check runs right after
     * this loop iteration's I/O; the zero timer makes sure that I/O wait does not block when
     * the resume came from a timer (an instrument's answer) rather than from I/O. */
    uv_check_start(&api->check, on_check);
    uv_timer_start(&api->timer, on_timer, 0, 0);
}

/* ---- MHD in the loop ---- */

static void on_timer(uv_timer_t *t)
{
    run_mhd(t->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    run_mhd(p->data);
}

static void on_check(uv_check_t *c)
{
    lab_api_t *api = c->data;
    uv_check_stop(c);
    if (api->closing && api->in_flight == 0)
        finish_close(api);
    else
        run_mhd(api);
}

static void run_mhd(lab_api_t *api)
{
    if (!api->mhd)
        return;
    int before = api->nconns;
    MHD_run(api->mhd);
    /* At the connection limit MHD takes its listening socket out of its epoll set, and puts it
     * back only at the start of a later MHD_run. When this run closed connections, nothing else
     * may ever call MHD_run again: the listening socket is not in the set the uv_poll watches,
     * and with no connection left MHD_get_timeout has no timeout to give. The door would stay
     * shut with the loop alive; so a run that closed connections is followed by another. */
    if (api->nconns < before) {
        uv_timer_start(&api->timer, on_timer, 0, 0);
        return;
    }
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(api->mhd, &ms) == MHD_YES)
        uv_timer_start(&api->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&api->timer);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    log_debug("api", "microhttpd: %s", msg);
}

/* ---- lifecycle ---- */

static int tokens_read(lab_api_t *api, const char *path, bool at_start)
{
    char err[512];
    lab_tokens_t t;
    if (lab_tokens_load(path, &t, err, sizeof err)) {
        if (at_start)
            log_error("api", "tokens file refused: %s", err);
        else
            log_error("api", "tokens file refused, the previous tokens stay: %s", err);
        return LAB_ECONFIG;
    }
    lab_tokens_free(&api->tokens);
    api->tokens = t;
    log_info("api", "tokens file %s: %d tokens", path, t.n);
    return 0;
}

static void api_free(lab_api_t *api)
{
    void (*cb)(void *) = api->close_cb;
    void *arg = api->close_arg;
    pool_free(api);
    lab_tokens_free(&api->tokens);
    free(api->tokens_path);
    free(api->hits);
    lab_act_idem_free(api);
    lab_events_free(api);
    if (api->own_submit)
        lab_submit_free(api->submit);
    free(api);
    if (cb)
        cb(arg);
}

static void on_handle_closed(uv_handle_t *h)
{
    lab_api_t *api = h->data;
    if (--api->handles_open == 0)
        api_free(api);
}

int lab_api_start(lab_api_t **out, const lab_api_deps_t *deps)
{
    const lab_config_t *cfg = deps->cfg;
    struct sockaddr_storage addr;
    socklen_t alen;
    *out = NULL;
    if (lab_config_http_addr(cfg->http, &addr, &alen)) {
        log_error("api", "http=%s: not a host:port address that resolves", cfg->http);
        return LAB_ECONFIG;
    }
    if (!cfg->auth_enabled && !lab_config_addr_loopback((struct sockaddr *)&addr)) {
        log_error("api",
                  "http=%s is not a loopback address and there is no [auth] section: refusing to "
                  "serve without tokens beyond this machine",
                  cfg->http);
        return LAB_ECONFIG;
    }
    lab_api_t *api = LAB_NEW(lab_api_t);
    api->loop = deps->loop;
    api->clock = deps->clock;
    api->store = deps->store;
    api->pg = deps->pg;
    api->mqtt = deps->mqtt;
    api->instr = deps->instr;
    api->sched = deps->sched;
    api->campaigns = deps->campaigns;
    api->labware = deps->labware;
    if (lab_submit_new(&api->submit, deps->store, deps->sched, deps->clock, cfg->cell, false) !=
        LAB_OK)
        goto fail;
    api->own_submit = true;
    api->fleet = deps->fleet;
    api->consumables = deps->consumables;
    api->max_body = cfg->http_max_body;
    api->auth = cfg->auth_enabled;
    api->hits = lab_calloc((size_t)lab_nroutes + 2, sizeof *api->hits);
    api->run_schema = lab_jschema_get("run.schema.json");
    if (!api->run_schema) {
        log_error("api", "the run schema (run.schema.json) is not available");
        goto fail;
    }
    api->workflow_schema = lab_jschema_get("workflow.schema.json");
    if (!api->workflow_schema) {
        log_error("api", "the workflow schema (workflow.schema.json) is not available");
        goto fail;
    }
    api->campaign_schema = lab_jschema_get("campaign.schema.json");
    api->batch_schema = lab_jschema_get("batch.schema.json");
    if (!api->campaign_schema || !api->batch_schema) {
        log_error("api", "the campaign or batch schema is not available");
        goto fail;
    }
    api->action_schema = lab_jschema_get("action.schema.json");
    if (!api->action_schema) {
        log_error("api", "the action schema (action.schema.json) is not available");
        goto fail;
    }
    if (api->auth) {
        api->tokens_path = lab_strdup(cfg->auth_tokens);
        if (tokens_read(api, api->tokens_path, true))
            goto fail;
    }
    /* One time for a connection that sends nothing useful: no whole head that long after it
     * opened or its last answer (deadlines above), or that long without a byte (MHD). */
    int idle_s = cfg->http_idle_timeout_s > 0 ? cfg->http_idle_timeout_s : LAB_HTTP_IDLE_DEFAULT_S;
    api->idle_ms = (unsigned)idle_s * 1000u;
    api->max_conns = cfg->http_max_conns;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* The logger first, so MHD reports nothing through its own. */
    api->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, api, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, api,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)cfg->http_max_conns, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)idle_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, api, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        api, MHD_OPTION_LISTEN_BACKLOG_SIZE, 511u, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)LAB_HTTP_CONN_MEMORY, MHD_OPTION_END);
    if (!api->mhd) {
        log_error("api", "cannot listen on %s: %s", cfg->http, strerror(errno));
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(api->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di) {
        log_error("api", "microhttpd has no epoll fd");
        MHD_stop_daemon(api->mhd);
        goto fail;
    }
    int rc = uv_poll_init(api->loop, &api->poll, di->epoll_fd);
    if (rc) {
        log_error("api", "uv_poll_init: %s", uv_strerror(rc));
        MHD_stop_daemon(api->mhd);
        goto fail;
    }
    uv_timer_init(api->loop, &api->timer);
    uv_timer_init(api->loop, &api->deadlines);
    uv_check_init(api->loop, &api->check);
    api->poll.data = api->timer.data = api->check.data = api->deadlines.data = api;
    lab_events_start(api, cfg);
    api->handles_open = 6;
    uv_poll_start(&api->poll, UV_READABLE, on_poll);
    api->started_ms = uv_now(api->loop);
    api->accepting = true;
    log_info("api", "listening on %s auth=%s max_body=%ld max_connections=%d idle_timeout=%ds",
             cfg->http, api->auth ? "tokens" : "off (loopback only)", api->max_body,
             cfg->http_max_conns, idle_s);
    run_mhd(api);
    *out = api;
    return 0;
fail:
    lab_tokens_free(&api->tokens);
    free(api->tokens_path);
    free(api->hits);
    if (api->own_submit)
        lab_submit_free(api->submit);
    free(api);
    return LAB_ECONFIG;
}

int lab_api_add_connection(lab_api_t *api, int fd)
{
    struct sockaddr_in from = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (!api->mhd || !api->accepting) {
        close(fd);
        return LAB_ESHUTDOWN;
    }
    if (MHD_add_connection(api->mhd, fd, (struct sockaddr *)&from, sizeof from) != MHD_YES)
        return LAB_EIO; /* MHD closes fd in any case */
    run_mhd(api);
    return 0;
}

int lab_api_reload(lab_api_t *api, const lab_config_t *cfg)
{
    if (!api->auth || !cfg->auth_enabled || !cfg->auth_tokens)
        return 0;
    if (strcmp(api->tokens_path, cfg->auth_tokens) != 0) {
        free(api->tokens_path);
        api->tokens_path = lab_strdup(cfg->auth_tokens);
    }
    return tokens_read(api, api->tokens_path, false);
}

void lab_api_use_submit(lab_api_t *api, lab_submit_t *submit)
{
    if (api->own_submit)
        lab_submit_free(api->submit);
    api->submit = submit;
    api->own_submit = false;
}

void lab_api_forget_sinks(lab_api_t *api)
{
    api->pg = NULL;
    api->mqtt = NULL;
}

void lab_api_stop_accepting(lab_api_t *api)
{
    if (!api->accepting || !api->mhd)
        return;
    api->accepting = false;
    MHD_socket fd = MHD_quiesce_daemon(api->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    log_info("api", "no longer accepting connections; in flight=%d", api->in_flight);
}

int lab_api_in_flight(const lab_api_t *api)
{
    return api->in_flight;
}

/* Every store op has completed, so no connection is suspended (MHD refuses to stop otherwise). */
static void finish_close(lab_api_t *api)
{
    if (!api->mhd)
        return;
    uv_poll_stop(&api->poll);
    uv_timer_stop(&api->timer);
    uv_check_stop(&api->check);
    MHD_stop_daemon(api->mhd);
    api->mhd = NULL;
    uv_timer_stop(&api->deadlines);
    uv_close((uv_handle_t *)&api->poll, on_handle_closed);
    uv_close((uv_handle_t *)&api->timer, on_handle_closed);
    uv_close((uv_handle_t *)&api->deadlines, on_handle_closed);
    uv_close((uv_handle_t *)&api->check, on_handle_closed);
    uv_close((uv_handle_t *)&api->events_timer, on_handle_closed);
    uv_close((uv_handle_t *)&api->events_wake, on_handle_closed);
}

void lab_api_close(lab_api_t *api, void (*cb)(void *arg), void *arg)
{
    LAB_ASSERT(!api->closing);
    lab_api_stop_accepting(api);
    lab_events_stop(api);
    api->closing = true;
    api->close_cb = cb;
    api->close_arg = arg;
    if (api->in_flight > 0) {
        log_info("api", "closing after %d requests finish with the store", api->in_flight);
        return;
    }
    finish_close(api);
}
