/* The HTTP API in process: a uv loop on its own thread with a real local store in a temporary
 * directory and lab_api on free loopback ports (one without auth, one with a tokens file), driven
 * from the test thread with libcurl and raw sockets. After every refusal the daemon must go on
 * serving: each test ends with a request that has to succeed. */
#include "daemon/api/api.h"
#include "core/cfg.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/store/runs.h"
#include "daemon/store/store.h"
#include "tests/harness/harness.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define VALID_RUN "{\"workflow\":\"elisa-v1\",\"plate\":\"P-0001\",\"priority\":\"high\"}"
#define TOK_VIEWER "viewer-token-aaaaaaaa"
#define TOK_TECH "tech-token-bbbbbbbbbb"
#define TOK_ADMIN "admin-token-cccccccc"
#define TOK_NEW "fresh-token-dddddddd"

/* ---- the loop thread ---- */

static atomic_int held; /* the store's group is held by the blocker (below) */

typedef struct call {
    void (*fn)(void *arg);
    void *arg;
    bool done;
} call_t;

static struct {
    char dir[256];
    char tokens[300];
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    call_t *call;
    lab_clock_t clock;
    lab_store_t *store;
    lab_config_t cfg, cfg_auth;
    lab_api_t *api, *api_auth;
    char url[64], url_auth[64];
    int port;
    int closed; /* close callbacks seen */
} g;

static void on_async(uv_async_t *a)
{
    pthread_mutex_lock(&g.mu);
    if (g.call) {
        g.call->fn(g.call->arg);
        g.call->done = true;
        g.call = NULL;
        pthread_cond_broadcast(&g.cv);
    }
    pthread_mutex_unlock(&g.mu);
}

/* Runs fn(arg) on the loop thread and waits for it. */
static void on_loop(void (*fn)(void *), void *arg)
{
    call_t c = {fn, arg, false};
    pthread_mutex_lock(&g.mu);
    g.call = &c;
    uv_async_send(&g.async);
    while (!c.done)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
}

static void *loop_main(void *arg)
{
    uv_run(&g.loop, UV_RUN_DEFAULT);
    return NULL;
}

static void config_fill(lab_config_t *c, const char *http, bool auth)
{
    memset(c, 0, sizeof *c);
    c->site = lab_strdup("test");
    c->cell = lab_strdup("c1");
    c->state_dir = lab_strdup(g.dir);
    c->http = lab_strdup(http);
    c->time_scale = 1;
    c->log_level = LAB_LOG_INFO;
    c->http_max_body = 1024 * 1024;
    c->http_max_conns = 64;
    c->shutdown_grace_s = 5;
    c->auth_enabled = auth;
    c->auth_tokens = auth ? lab_strdup(g.tokens) : NULL;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int start_api(lab_api_t **out, const lab_config_t *cfg)
{
    lab_api_deps_t deps = {&g.loop, cfg,  &g.clock, g.store, NULL, NULL,
                           NULL,    NULL, NULL,     NULL,    NULL, NULL};
    return lab_api_start(out, &deps);
}

static void open_all(void *arg)
{
    int *rc = arg;
    *rc = -1;
    if (lab_store_open(&g.store, &g.loop, g.dir))
        return;
    if (start_api(&g.api, &g.cfg) || start_api(&g.api_auth, &g.cfg_auth))
        return;
    *rc = 0;
}

static int setup(void **state)
{
    curl_global_init(CURL_GLOBAL_ALL);
    if (h_tempdir("labloop-api", g.dir, sizeof g.dir))
        return -1;
    snprintf(g.tokens, sizeof g.tokens, "%s/tokens", g.dir);
    write_file(g.tokens, "# test tokens\n" TOK_VIEWER " viewer vera\n" TOK_TECH
                         " technician tom\n" TOK_ADMIN " admin ada\n");
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    uv_loop_init(&g.loop);
    uv_async_init(&g.loop, &g.async, on_async);
    lab_clock_init(&g.clock, &g.loop, 1.0);
    char http[64];
    g.port = h_free_port();
    snprintf(http, sizeof http, "127.0.0.1:%d", g.port);
    config_fill(&g.cfg, http, false);
    snprintf(g.url, sizeof g.url, "http://127.0.0.1:%d", g.port);
    int port2 = h_free_port();
    snprintf(http, sizeof http, "127.0.0.1:%d", port2);
    config_fill(&g.cfg_auth, http, true);
    snprintf(g.url_auth, sizeof g.url_auth, "http://127.0.0.1:%d", port2);
    pthread_create(&g.thread, NULL, loop_main, NULL);
    /* The store's read connection belongs to the thread that opened it: the loop's. */
    int rc;
    on_loop(open_all, &rc);
    /* The runs it submits name a stored workflow: one not stored is refused. */
    return rc ? rc : h_workflow_example(g.url, "elisa-v1");
}

static void closed_cb(void *arg)
{
    g.closed++;
}

static void store_closed(void *arg)
{
    uv_close((uv_handle_t *)&g.async, NULL);
}

static void close_all(void *arg)
{
    if (g.api)
        lab_api_close(g.api, closed_cb, NULL);
    lab_api_close(g.api_auth, closed_cb, NULL);
    lab_store_close(g.store, store_closed, NULL);
}

static void release_held(void);

static int teardown(void **state)
{
    if (atomic_load(&held))
        release_held();
    /* The call returns before the loop finishes closing; the thread ends when nothing is left. */
    pthread_mutex_lock(&g.mu);
    static call_t c = {close_all, NULL, false};
    g.call = &c;
    uv_async_send(&g.async);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.thread, NULL);
    assert_int_equal(g.closed, g.api ? 2 : 1);
    assert_int_equal(uv_loop_close(&g.loop), 0);
    lab_config_free(&g.cfg);
    lab_config_free(&g.cfg_auth);
    h_rmtree(g.dir);
    curl_global_cleanup();
    return 0;
}

/* ---- HTTP with libcurl ---- */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char *head;
    size_t hlen;
    json_t *json;
} resp_t;

typedef struct sink {
    char *p;
    size_t len;
} sink_t;

static size_t sink_write(char *p, size_t size, size_t n, void *ud)
{
    sink_t *s = ud;
    s->p = realloc(s->p, s->len + size * n + 1);
    memcpy(s->p + s->len, p, size * n);
    s->len += size * n;
    s->p[s->len] = 0;
    return size * n;
}

typedef struct upload {
    size_t left;
} upload_t;

static size_t upload_read(char *p, size_t size, size_t n, void *ud)
{
    upload_t *u = ud;
    size_t take = size * n < u->left ? size * n : u->left;
    memset(p, ' ', take);
    u->left -= take;
    return take;
}

static void resp_free(resp_t *r)
{
    free(r->body);
    free(r->head);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

/* One request. headers: NULL-terminated "Name: value" list. upload_bytes > 0: a chunked body of
 * that many spaces instead of body. */
static long http(resp_t *r, const char *base, const char *method, const char *path,
                 const char *const *headers, const char *body, size_t body_len, size_t upload_bytes)
{
    memset(r, 0, sizeof *r);
    char url[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    CURL *c = curl_easy_init();
    struct curl_slist *hl = NULL;
    for (int i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    sink_t b = {0}, h = {0};
    upload_t up = {upload_bytes};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (upload_bytes) {
        hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, upload_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
    } else if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    CURLcode rc = curl_easy_perform(c);
    r->status = -1;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    else
        fprintf(stderr, "curl %s %s: %s\n", method, url, curl_easy_strerror(rc));
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    r->body = b.p;
    r->len = b.len;
    r->head = h.p;
    r->hlen = h.len;
    if (r->body)
        r->json = json_loads(r->body, 0, NULL);
    return r->status;
}

static long get(resp_t *r, const char *base, const char *path, const char *token)
{
    char auth[128];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token ? token : "");
    const char *h[] = {token ? auth : NULL, NULL};
    return http(r, base, "GET", path, h, NULL, 0, 0);
}

static long post(resp_t *r, const char *base, const char *body, const char *token,
                 const char *idem_key)
{
    char auth[128], key[340];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token ? token : "");
    snprintf(key, sizeof key, "Idempotency-Key: %s", idem_key ? idem_key : "");
    const char *h[4] = {"Content-Type: application/json"};
    int n = 1;
    if (token)
        h[n++] = auth;
    if (idem_key)
        h[n++] = key;
    return http(r, base, "POST", "/v1/runs", h, body, strlen(body), 0);
}

/* The value of a response header (a static copy), or NULL. */
static const char *header(const resp_t *r, const char *name)
{
    static char val[512];
    size_t nl = strlen(name);
    for (const char *p = r->head; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(val, sizeof val, "%.*s", (int)(eol - v), v);
            return val;
        }
        p = eol + 2;
    }
    return NULL;
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* A problem+json answer with this status: checks the members RFC 9457 asks for. */
static void assert_problem(const resp_t *r, long status)
{
    if (r->status != status)
        fail_msg("status %ld, want %ld: %s", r->status, status, r->body ? r->body : "");
    const char *ct = header(r, "Content-Type");
    assert_non_null(ct);
    assert_string_equal(ct, "application/problem+json");
    assert_non_null(r->json);
    assert_non_null(jstr(r->json, "type"));
    assert_non_null(jstr(r->json, "title"));
    assert_non_null(jstr(r->json, "detail"));
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), status);
    assert_true(json_is_array(json_object_get(r->json, "errors")));
}

/* The daemon still answers, and still takes a submission. */
static void assert_serving(void)
{
    resp_t r;
    assert_int_equal(get(&r, g.url, "/healthz", NULL), 200);
    resp_free(&r);
    assert_int_equal(post(&r, g.url, VALID_RUN, NULL, NULL), 201);
    resp_free(&r);
}

/* ---- loop-thread helpers ---- */

static void read_in_flight(void *arg)
{
    *(int *)arg = lab_api_in_flight(g.api);
}

static int in_flight(void)
{
    int n;
    on_loop(read_in_flight, &n);
    return n;
}

static bool wait_in_flight(int want)
{
    long long deadline = h_now_ms() + 10000;
    while (h_now_ms() < deadline) {
        if (in_flight() == want)
            return true;
        h_sleep_ms(5);
    }
    return false;
}

/* A store op that holds the store's group in flight until released: whatever is submitted
 * meanwhile waits for the next group, deterministically. */
typedef struct blocker {
    lab_store_op_t op;
    sem_t go;
    atomic_int done;
} blocker_t;

static int blocker_apply(lab_store_op_t *op, sqlite3 *db)
{
    blocker_t *b = (blocker_t *)op;
    sem_wait(&b->go);
    return 0;
}

static void blocker_done(lab_store_op_t *op, int status)
{
    atomic_store(&((blocker_t *)op)->done, 1);
}

static void blocker_submit(void *arg)
{
    lab_store_submit(g.store, arg);
}

/* One blocker, in static storage: a test that fails while holding it leaves it to teardown to
 * release, and the store's worker never waits on a dead stack frame. */
static blocker_t blocker;

static void block_store(void)
{
    blocker_t *b = &blocker;
    memset(b, 0, sizeof *b);
    atomic_store(&held, 1);
    sem_init(&b->go, 0, 0);
    b->op.apply = blocker_apply;
    b->op.done = blocker_done;
    on_loop(blocker_submit, &b->op);
}

static void release_held(void)
{
    sem_post(&blocker.go);
}

static void unblock_store(void)
{
    blocker_t *b = &blocker;
    atomic_store(&held, 0);
    sem_post(&b->go);
    long long deadline = h_now_ms() + 10000;
    while (!atomic_load(&b->done) && h_now_ms() < deadline)
        h_sleep_ms(2);
    assert_true(atomic_load(&b->done));
    sem_destroy(&b->go);
}

typedef struct bg_post {
    pthread_t t;
    const char *base, *body, *token, *key;
    resp_t r;
} bg_post_t;

static void *bg_post_main(void *arg)
{
    bg_post_t *p = arg;
    post(&p->r, p->base, p->body, p->token, p->key);
    return NULL;
}

static void bg_post_start(bg_post_t *p, const char *body, const char *key)
{
    memset(p, 0, sizeof *p);
    p->base = g.url;
    p->body = body;
    p->key = key;
    pthread_create(&p->t, NULL, bg_post_main, p);
}

/* ---- raw sockets ---- */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void raw_send(int fd, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads one answer (headers and a Content-Length body) into buf. */
static void raw_read_answer(int fd, char *buf, size_t len)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + got, len - 1 - got, 0);
        assert_true(n > 0);
        got += (size_t)n;
        buf[got] = 0;
        const char *end = strstr(buf, "\r\n\r\n");
        const char *cl = strcasestr(buf, "Content-Length:");
        if (end && cl && got >= (size_t)(end + 4 - buf) + strtoul(cl + 15, NULL, 10))
            return;
        assert_true(got < len - 1);
    }
}

/* ---- the tests ---- */

static void test_healthz(void **state)
{
    resp_t r;
    assert_int_equal(get(&r, g.url, "/healthz", NULL), 200);
    assert_string_equal(header(&r, "Content-Type"), "application/json");
    assert_string_equal(jstr(r.json, "status"), "ok");
    resp_free(&r);
    /* No token needed even where tokens are. */
    assert_int_equal(get(&r, g.url_auth, "/healthz", NULL), 200);
    resp_free(&r);
}

/* GET /v1/me without auth: every caller may do everything, so it is an admin with no name. */
static void test_me_without_auth(void **state)
{
    resp_t r;
    assert_int_equal(get(&r, g.url, "/v1/me", NULL), 200);
    assert_string_equal(jstr(r.json, "role"), "admin");
    assert_true(json_is_null(json_object_get(r.json, "name")));
    assert_true(json_is_true(json_object_get(r.json, "can_submit")));
    resp_free(&r);
    assert_int_equal(get(&r, g.url_auth, "/v1/me", NULL), 401);
    resp_free(&r);
}

static void test_submit_get_list(void **state)
{
    resp_t r;
    assert_int_equal(post(&r, g.url, VALID_RUN, NULL, NULL), 201);
    const char *id = jstr(r.json, "id");
    assert_non_null(id);
    assert_string_equal(jstr(r.json, "state"), "queued");
    assert_string_equal(jstr(r.json, "workflow"), "elisa-v1");
    assert_string_equal(jstr(r.json, "origin"), "api");
    assert_string_equal(jstr(r.json, "submitted_by"), "anonymous");
    char loc[128];
    snprintf(loc, sizeof loc, "/v1/runs/%s", id);
    assert_string_equal(header(&r, "Location"), loc);

    resp_t g1;
    assert_int_equal(get(&g1, g.url, loc, NULL), 200);
    assert_string_equal(jstr(g1.json, "id"), id);
    assert_string_equal(jstr(g1.json, "state"), "queued");
    resp_free(&g1);
    /* Upper case names the same run. */
    char upper[128];
    snprintf(upper, sizeof upper, "%s", loc);
    for (char *p = upper + 9; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'f' ? *p - 32 : *p);
    assert_int_equal(get(&g1, g.url, upper, NULL), 200);
    resp_free(&g1);
    resp_free(&r);

    assert_int_equal(get(&r, g.url, "/v1/runs/00000000-0000-4000-8000-000000000000", NULL), 404);
    assert_problem(&r, 404);
    resp_free(&r);
    assert_int_equal(get(&r, g.url, "/v1/runs/not-a-uuid", NULL), 404);
    assert_problem(&r, 404);
    resp_free(&r);

    /* Paging through every run, two at a time, sees each once, in submission order. */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(post(&r, g.url, VALID_RUN, NULL, NULL), 201);
        resp_free(&r);
    }
    assert_int_equal(get(&r, g.url, "/v1/runs?limit=500", NULL), 200);
    size_t total = json_array_size(json_object_get(r.json, "runs"));
    assert_true(total >= 6);
    assert_true(json_is_null(json_object_get(r.json, "next")));
    resp_free(&r);
    size_t seen = 0;
    char path[128] = "/v1/runs?state=queued&limit=2";
    for (int pages = 0; pages < 100; pages++) {
        assert_int_equal(get(&r, g.url, path, NULL), 200);
        json_t *runs = json_object_get(r.json, "runs");
        assert_true(json_array_size(runs) <= 2);
        seen += json_array_size(runs);
        size_t i;
        json_t *run;
        json_array_foreach(runs, i, run) assert_string_equal(jstr(run, "state"), "queued");
        const char *next = jstr(r.json, "next");
        if (!next) {
            assert_true(json_is_null(json_object_get(r.json, "next")));
            resp_free(&r);
            break;
        }
        assert_int_equal(json_array_size(runs), 2);
        snprintf(path, sizeof path, "/v1/runs?state=queued&limit=2&after=%s", next);
        resp_free(&r);
    }
    assert_int_equal(seen, total);

    assert_int_equal(get(&r, g.url, "/v1/runs?state=done", NULL), 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "runs")), 0);
    resp_free(&r);
    /* Unknown state, a limit out of range and an unknown parameter: one 400 naming all three. */
    assert_int_equal(get(&r, g.url, "/v1/runs?state=bogus&limit=501&colour=red", NULL), 400);
    assert_problem(&r, 400);
    json_t *errs = json_object_get(r.json, "errors");
    assert_int_equal(json_array_size(errs), 3);
    assert_non_null(strstr(r.body, "bogus"));
    assert_non_null(strstr(r.body, "limit"));
    assert_non_null(strstr(r.body, "colour"));
    resp_free(&r);
    assert_int_equal(get(&r, g.url, "/v1/runs?limit=0", NULL), 400);
    resp_free(&r);
    assert_int_equal(get(&r, g.url, "/v1/runs?after=abc", NULL), 400);
    resp_free(&r);
    assert_serving();
}

/* The store filters by plate, workflow and priority; pages go on with the filters, in either
 * order; bad values are named, one error each. */
static void test_list_filters(void **state)
{
    (void)state;
    resp_t r;
    static const char *const runs[] = {
        "{\"workflow\":\"elisa-v1\",\"plate\":\"FLT-1\",\"priority\":\"low\"}",
        "{\"workflow\":\"elisa-v1\",\"plate\":\"FLT-2\"}",
        "{\"workflow\":\"elisa-v1\",\"plate\":\"FLT-1\",\"priority\":\"low\"}",
        "{\"workflow\":\"elisa-v1\",\"plate\":\"FLT-1\",\"priority\":\"urgent\"}",
        "{\"workflow\":\"elisa-v1\",\"plate\":\"FLT-1\",\"priority\":\"low\"}",
    };
    char ids[5][40];
    for (int i = 0; i < 5; i++) {
        assert_int_equal(post(&r, g.url, runs[i], NULL, NULL), 201);
        snprintf(ids[i], sizeof ids[i], "%s", jstr(r.json, "id"));
        resp_free(&r);
    }
    /* FLT-1 and low: runs 0, 2, 4; a page of two, then the rest, both orders. */
    static const int oldest[] = {0, 2, 4}, newest[] = {4, 2, 0};
    for (int o = 0; o < 2; o++) {
        const int *want = o ? newest : oldest;
        char path[200];
        snprintf(path, sizeof path, "/v1/runs?plate=FLT-1&priority=low&limit=2%s",
                 o ? "&order=newest" : "");
        assert_int_equal(get(&r, g.url, path, NULL), 200);
        json_t *list = json_object_get(r.json, "runs");
        assert_int_equal(json_array_size(list), 2);
        for (int k = 0; k < 2; k++)
            assert_string_equal(jstr(json_array_get(list, (size_t)k), "id"), ids[want[k]]);
        snprintf(path, sizeof path, "/v1/runs?plate=FLT-1&priority=low&limit=2&after=%s%s",
                 jstr(r.json, "next"), o ? "&order=newest" : "");
        resp_free(&r);
        assert_int_equal(get(&r, g.url, path, NULL), 200);
        list = json_object_get(r.json, "runs");
        assert_int_equal(json_array_size(list), 1);
        assert_string_equal(jstr(json_array_get(list, 0), "id"), ids[want[2]]);
        assert_true(json_is_null(json_object_get(r.json, "next")));
        resp_free(&r);
    }
    /* A run without a priority is normal; the workflow filter. */
    assert_int_equal(get(&r, g.url, "/v1/runs?plate=FLT-2&priority=normal&workflow=elisa-v1", NULL),
                     200);
    assert_int_equal(json_array_size(json_object_get(r.json, "runs")), 1);
    resp_free(&r);
    assert_int_equal(get(&r, g.url, "/v1/runs?workflow=other&plate=FLT-1", NULL), 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "runs")), 0);
    resp_free(&r);
    assert_int_equal(get(&r, g.url, "/v1/runs?priority=soon&workflow=-x&order=up&plate=", NULL),
                     400);
    assert_problem(&r, 400);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 4);
    assert_non_null(strstr(r.body, "soon"));
    assert_non_null(strstr(r.body, "-x"));
    assert_non_null(strstr(r.body, "up"));
    assert_non_null(strstr(r.body, "query parameter plate"));
    resp_free(&r);
    assert_serving();
}

static void test_metrics(void **state)
{
    resp_t r;
    assert_int_equal(get(&r, g.url, "/healthz", NULL), 200);
    resp_free(&r);
    assert_int_equal(get(&r, g.url, "/metrics", NULL), 200);
    assert_string_equal(header(&r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    const char *want[] = {
        "# TYPE labloop_outbox_head_seq gauge\nlabloop_outbox_head_seq ",
        "labloop_sink_state{sink=\"postgres\",state=\"disabled\"} 1\n",
        "labloop_sink_state{sink=\"mqtt\",state=\"disabled\"} 1\n",
        "labloop_sink_state{sink=\"mqtt\",state=\"up\"} 0\n",
        "labloop_store_groups_total ",
        "labloop_store_ops_total ",
        "labloop_http_requests_total{method=\"GET\",route=\"/healthz\",code=\"200\"} ",
        "labloop_http_requests_in_flight 1\n",
        "labloop_uptime_seconds ",
        "# TYPE labloop_http_requests_total counter\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(r.body, want[i]))
            fail_msg("metrics lack \"%s\":\n%s", want[i], r.body);
    /* Every line is a comment or "name{labels} value". */
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char *sp = strrchr(line, ' ');
        assert_non_null(sp);
        char *end;
        strtod(sp + 1, &end);
        assert_true(*end == 0);
    }
    resp_free(&r);
}

static void test_idempotency(void **state)
{
    resp_t a, b;
    assert_int_equal(post(&a, g.url, VALID_RUN, NULL, "key-1"), 201);
    assert_null(header(&a, "Idempotent-Replayed"));
    assert_int_equal(post(&b, g.url, VALID_RUN, NULL, "key-1"), 201);
    assert_string_equal(header(&b, "Idempotent-Replayed"), "true");
    assert_string_equal(jstr(a.json, "id"), jstr(b.json, "id"));
    assert_string_equal(a.body, b.body);
    char loc[128];
    snprintf(loc, sizeof loc, "/v1/runs/%s", jstr(a.json, "id"));
    assert_string_equal(header(&b, "Location"), loc);
    resp_free(&b);

    /* Same key, another body. */
    assert_int_equal(post(&b, g.url, "{\"workflow\":\"other\"}", NULL, "key-1"), 422);
    assert_problem(&b, 422);
    assert_non_null(strstr(jstr(b.json, "type"), "idempotency"));
    resp_free(&b);
    /* Another owner's key space: the tokens instance, as tom, with the same key. */
    assert_int_equal(post(&b, g.url_auth, VALID_RUN, TOK_TECH, "key-1"), 201);
    assert_null(header(&b, "Idempotent-Replayed"));
    assert_string_not_equal(jstr(a.json, "id"), jstr(b.json, "id"));
    resp_free(&b);
    resp_free(&a);
    /* A key that is too long. */
    char longkey[300];
    memset(longkey, 'k', 256);
    longkey[256] = 0;
    assert_int_equal(post(&b, g.url, VALID_RUN, NULL, longkey), 400);
    resp_free(&b);
    assert_serving();
}

/* The first request with a key is committing (the store's group is held) when the second comes. */
static void test_idempotency_in_progress(void **state)
{
    block_store();
    bg_post_t first;
    bg_post_start(&first, VALID_RUN, "key-race");
    assert_true(wait_in_flight(1));
    resp_t r;
    assert_int_equal(post(&r, g.url, VALID_RUN, NULL, "key-race"), 409);
    assert_problem(&r, 409);
    resp_free(&r);
    /* Nothing acknowledged before the commit. */
    assert_int_equal(in_flight(), 1);
    unblock_store();
    pthread_join(first.t, NULL);
    assert_int_equal(first.r.status, 201);
    assert_int_equal(post(&r, g.url, VALID_RUN, NULL, "key-race"), 201);
    assert_string_equal(header(&r, "Idempotent-Replayed"), "true");
    assert_string_equal(jstr(r.json, "id"), jstr(first.r.json, "id"));
    resp_free(&r);
    resp_free(&first.r);
}

static void test_malformed_json(void **state)
{
    resp_t r;
    assert_int_equal(post(&r, g.url, "{\"workflow\": \"a\",\n  \"plate\": }", NULL, NULL), 400);
    assert_problem(&r, 400);
    json_t *e = json_array_get(json_object_get(r.json, "errors"), 0);
    assert_non_null(e);
    assert_string_equal(jstr(e, "path"), "");
    assert_non_null(strstr(jstr(e, "message"), "line 2, column"));
    assert_non_null(strstr(jstr(r.json, "detail"), "line 2, column"));
    resp_free(&r);
    /* Duplicate keys are malformed too. */
    assert_int_equal(post(&r, g.url, "{\"workflow\":\"a\",\"workflow\":\"b\"}", NULL, NULL), 400);
    assert_problem(&r, 400);
    resp_free(&r);
    assert_int_equal(post(&r, g.url, "", NULL, NULL), 400);
    assert_problem(&r, 400);
    resp_free(&r);
    assert_serving();
}

static void test_schema_violations(void **state)
{
    resp_t r;
    assert_int_equal(post(&r, g.url, "{\"plate\": 42, \"colour\": \"red\"}", NULL, NULL), 422);
    assert_problem(&r, 422);
    json_t *errs = json_object_get(r.json, "errors");
    bool plate = false, colour = false, workflow = false;
    size_t i;
    json_t *e;
    json_array_foreach(errs, i, e)
    {
        const char *p = jstr(e, "path"), *m = jstr(e, "message");
        assert_non_null(p);
        assert_non_null(m);
        plate |= strcmp(p, "/plate") == 0;
        colour |= strcmp(p, "/colour") == 0 || strstr(m, "colour") != NULL;
        workflow |= strcmp(p, "/workflow") == 0 || strstr(m, "workflow") != NULL;
    }
    if (!plate || !colour || !workflow)
        fail_msg("not every problem named: %s", r.body);
    resp_free(&r);
    assert_serving();
}

static void test_content_type(void **state)
{
    resp_t r;
    const char *h[] = {"Content-Type: text/plain", NULL};
    assert_int_equal(http(&r, g.url, "POST", "/v1/runs", h, VALID_RUN, strlen(VALID_RUN), 0), 415);
    assert_problem(&r, 415);
    resp_free(&r);
    const char *h2[] = {"Content-Type: application/json; charset=utf-8", NULL};
    assert_int_equal(http(&r, g.url, "POST", "/v1/runs", h2, VALID_RUN, strlen(VALID_RUN), 0), 201);
    resp_free(&r);
    assert_serving();
}

static void test_too_large(void **state)
{
    resp_t r;
    size_t n = 10 * 1024 * 1024;
    char *big = malloc(n + 1);
    memset(big, ' ', n);
    big[n] = 0;
    const char *h[] = {"Content-Type: application/json", "Expect: 100-continue", NULL};
    assert_int_equal(http(&r, g.url, "POST", "/v1/runs", h, big, n, 0), 413);
    assert_problem(&r, 413);
    resp_free(&r);
    free(big);
    /* Chunked, with no length to check first: refused when the count passes the limit. */
    const char *hc[] = {"Content-Type: application/json", NULL};
    assert_int_equal(http(&r, g.url, "POST", "/v1/runs", hc, NULL, 0, 4 * 1024 * 1024), 413);
    assert_problem(&r, 413);
    resp_free(&r);
    /* A chunked body under the limit goes through. */
    assert_int_equal(http(&r, g.url, "POST", "/v1/runs", hc, NULL, 0, 1000), 400);
    resp_free(&r);
    assert_serving();
}

static void test_truncated_request(void **state)
{
    int fd = raw_connect(g.port);
    assert_true(fd >= 0);
    raw_send(fd, "POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 1000\r\n\r\n{\"workflo");
    close(fd);
    /* Headers alone, then gone. */
    fd = raw_connect(g.port);
    assert_true(fd >= 0);
    raw_send(fd, "GET /v1/ru");
    close(fd);
    assert_serving();
    /* The aborted request is counted once MHD has seen the close. */
    long long deadline = h_now_ms() + 10000;
    bool counted = false;
    while (!counted && h_now_ms() < deadline) {
        resp_t r;
        assert_int_equal(get(&r, g.url, "/metrics", NULL), 200);
        const char *p = strstr(r.body, "\nlabloop_http_requests_aborted_total ");
        counted = p && atoi(p + strlen("\nlabloop_http_requests_aborted_total ")) >= 1;
        resp_free(&r);
        if (!counted)
            h_sleep_ms(20);
    }
    assert_true(counted);
}

/* The client goes away while its run is committing: the run is kept (it was submitted whole),
 * the completion neither touches freed memory nor leaks, and the daemon goes on. */
static void test_client_gone_while_committing(void **state)
{
    block_store();
    int fd = raw_connect(g.port);
    assert_true(fd >= 0);
    char req[512];
    snprintf(req, sizeof req,
             "POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Idempotency-Key: gone-1\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(VALID_RUN), VALID_RUN);
    raw_send(fd, req);
    assert_true(wait_in_flight(1));
    close(fd);
    unblock_store();
    assert_true(wait_in_flight(0));
    assert_serving();
    /* Committed: the same request with the same key is a replay. */
    resp_t r;
    assert_int_equal(post(&r, g.url, VALID_RUN, NULL, "gone-1"), 201);
    assert_string_equal(header(&r, "Idempotent-Replayed"), "true");
    resp_free(&r);
}

static void test_auth(void **state)
{
    resp_t r;
    assert_int_equal(get(&r, g.url_auth, "/v1/runs", NULL), 401);
    assert_problem(&r, 401);
    assert_non_null(header(&r, "WWW-Authenticate"));
    assert_true(strncmp(header(&r, "WWW-Authenticate"), "Bearer", 6) == 0);
    resp_free(&r);
    assert_int_equal(get(&r, g.url_auth, "/v1/runs", "wrong-token-zzzzzz"), 401);
    assert_problem(&r, 401);
    assert_non_null(strstr(header(&r, "WWW-Authenticate"), "invalid_token"));
    resp_free(&r);
    const char *basic[] = {"Authorization: Basic dXNlcjpwYXNz", NULL};
    assert_int_equal(http(&r, g.url_auth, "GET", "/v1/runs", basic, NULL, 0, 0), 401);
    resp_free(&r);

    assert_int_equal(get(&r, g.url_auth, "/v1/runs", TOK_VIEWER), 200);
    resp_free(&r);
    assert_int_equal(get(&r, g.url_auth, "/metrics", TOK_VIEWER), 200);
    resp_free(&r);
    assert_int_equal(post(&r, g.url_auth, VALID_RUN, TOK_VIEWER, NULL), 403);
    assert_problem(&r, 403);
    resp_free(&r);
    assert_int_equal(post(&r, g.url_auth, VALID_RUN, TOK_TECH, NULL), 201);
    assert_string_equal(jstr(r.json, "submitted_by"), "tom");
    resp_free(&r);
    assert_int_equal(post(&r, g.url_auth, VALID_RUN, TOK_ADMIN, NULL), 201);
    assert_string_equal(jstr(r.json, "submitted_by"), "ada");
    resp_free(&r);
    /* 401 for a request with a body: answered before the body, the daemon goes on. */
    assert_int_equal(post(&r, g.url_auth, VALID_RUN, NULL, NULL), 401);
    resp_free(&r);
    assert_int_equal(get(&r, g.url_auth, "/healthz", NULL), 200);
    resp_free(&r);
}

static void reload_auth(void *arg)
{
    *(int *)arg = lab_api_reload(g.api_auth, &g.cfg_auth);
}

static void test_auth_reload(void **state)
{
    resp_t r;
    int rc;
    /* A bad line: refused, the old tokens stay. */
    write_file(g.tokens, TOK_VIEWER " viewer vera\n" TOK_NEW " sorcerer\n");
    on_loop(reload_auth, &rc);
    assert_int_equal(rc, LAB_ECONFIG);
    assert_int_equal(post(&r, g.url_auth, VALID_RUN, TOK_TECH, NULL), 201);
    resp_free(&r);
    /* A good file: the new set, and only it. */
    write_file(g.tokens, TOK_NEW " technician nina\n");
    on_loop(reload_auth, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(post(&r, g.url_auth, VALID_RUN, TOK_NEW, NULL), 201);
    assert_string_equal(jstr(r.json, "submitted_by"), "nina");
    resp_free(&r);
    assert_int_equal(get(&r, g.url_auth, "/v1/runs", TOK_TECH), 401);
    resp_free(&r);
}

typedef struct start_try {
    lab_config_t cfg;
    int rc;
    lab_api_t *api;
} start_try_t;

static void try_start(void *arg)
{
    start_try_t *t = arg;
    t->rc = start_api(&t->api, &t->cfg);
}

static void close_try(void *arg)
{
    lab_api_close(((start_try_t *)arg)->api, NULL, NULL);
}

static void test_start_refusals(void **state)
{
    char http[64];
    start_try_t t;
    /* No [auth] and an address beyond loopback. */
    snprintf(http, sizeof http, "0.0.0.0:%d", h_free_port());
    config_fill(&t.cfg, http, false);
    on_loop(try_start, &t);
    assert_int_equal(t.rc, LAB_ECONFIG);
    lab_config_free(&t.cfg);
    /* A bad tokens file. */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/bad-tokens", g.dir);
    write_file(bad, "ok-token-111 viewer\nno-role-token\n");
    snprintf(http, sizeof http, "127.0.0.1:%d", h_free_port());
    config_fill(&t.cfg, http, true);
    free(t.cfg.auth_tokens);
    t.cfg.auth_tokens = lab_strdup(bad);
    on_loop(try_start, &t);
    assert_int_equal(t.rc, LAB_ECONFIG);
    lab_config_free(&t.cfg);
    /* The port is taken. */
    snprintf(http, sizeof http, "127.0.0.1:%d", g.port);
    config_fill(&t.cfg, http, false);
    on_loop(try_start, &t);
    assert_int_equal(t.rc, LAB_ECONFIG);
    lab_config_free(&t.cfg);
}

static void test_ipv6_loopback(void **state)
{
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&a, sizeof a) == 0;
    if (probe >= 0)
        close(probe);
    if (!have_v6)
        skip();
    char http[64], url[64];
    int port = h_free_port();
    snprintf(http, sizeof http, "[::1]:%d", port);
    snprintf(url, sizeof url, "http://[::1]:%d", port);
    start_try_t t;
    config_fill(&t.cfg, http, false);
    on_loop(try_start, &t);
    assert_int_equal(t.rc, 0);
    resp_t r;
    assert_int_equal(get(&r, url, "/healthz", NULL), 200);
    resp_free(&r);
    on_loop(close_try, &t);
    lab_config_free(&t.cfg);
}

static void test_not_found_and_method(void **state)
{
    resp_t r;
    assert_int_equal(get(&r, g.url, "/v2/nothing", NULL), 404);
    assert_problem(&r, 404);
    resp_free(&r);
    assert_int_equal(get(&r, g.url, "/v1/runs/", NULL), 404);
    resp_free(&r);
    assert_int_equal(http(&r, g.url, "DELETE", "/v1/runs", NULL, NULL, 0, 0), 405);
    assert_problem(&r, 405);
    const char *allow = header(&r, "Allow");
    assert_non_null(allow);
    assert_non_null(strstr(allow, "GET"));
    assert_non_null(strstr(allow, "POST"));
    resp_free(&r);
    assert_int_equal(http(&r, g.url, "POST", "/healthz", NULL, "{}", 2, 0), 405);
    assert_problem(&r, 405);
    assert_string_equal(header(&r, "Allow"), "GET");
    resp_free(&r);
    /* Unknown routes need no token to be told so. */
    assert_int_equal(get(&r, g.url_auth, "/nowhere", NULL), 404);
    resp_free(&r);
    assert_serving();
}

/* Last: stop accepting while a submission waits for the store; it is still answered (after the
 * commit), new connections are refused, and close frees everything. */
static void stop_accepting(void *arg)
{
    lab_api_stop_accepting(g.api);
}

static void test_stop_accepting(void **state)
{
    block_store();
    bg_post_t p;
    bg_post_start(&p, VALID_RUN, NULL);
    assert_true(wait_in_flight(1));
    /* A connection from before: it stays open, and takes no new run. One answer on it first, so
     * the server has accepted it (not merely the kernel) before the listening socket goes. */
    int kept = raw_connect(g.port);
    assert_true(kept >= 0);
    char answer[2048];
    raw_send(kept, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    raw_read_answer(kept, answer, sizeof answer);
    assert_true(strncmp(answer, "HTTP/1.1 200", 12) == 0);
    on_loop(stop_accepting, NULL);
    int fd = raw_connect(g.port);
    assert_true(fd < 0);
    assert_int_equal(errno, ECONNREFUSED);
    char req[512];
    snprintf(req, sizeof req,
             "POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(VALID_RUN), VALID_RUN);
    raw_send(kept, req);
    size_t got = 0;
    ssize_t n;
    while (got < sizeof answer - 1 &&
           (n = recv(kept, answer + got, sizeof answer - 1 - got, 0)) > 0)
        got += (size_t)n; /* until the server closes: the answer says Connection: close */
    answer[got] = 0;
    close(kept);
    assert_true(strncmp(answer, "HTTP/1.1 503", 12) == 0);
    assert_non_null(strcasestr(answer, "Content-Type: application/problem+json"));
    assert_int_equal(in_flight(), 1);
    unblock_store();
    pthread_join(p.t, NULL);
    assert_int_equal(p.r.status, 201);
    resp_free(&p.r);
    assert_int_equal(in_flight(), 0);
}

int main(void)
{
    lab_log_set_level(getenv("LAB_TEST_DEBUG") ? LAB_LOG_DEBUG : LAB_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz),
        cmocka_unit_test(test_me_without_auth),
        cmocka_unit_test(test_submit_get_list),
        cmocka_unit_test(test_list_filters),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_idempotency),
        cmocka_unit_test(test_idempotency_in_progress),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_schema_violations),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_truncated_request),
        cmocka_unit_test(test_client_gone_while_committing),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_auth_reload),
        cmocka_unit_test(test_start_refusals),
        cmocka_unit_test(test_ipv6_loopback),
        cmocka_unit_test(test_not_found_and_method),
        cmocka_unit_test(test_stop_accepting),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
