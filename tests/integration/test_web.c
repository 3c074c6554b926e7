/* The web app as labloopd serves it: index.html at / and every file of web/ at /web/NAME, byte for
 * byte as compiled in, with Content-Type, an ETag that If-None-Match turns into 304, no-cache and a
 * self-only Content-Security-Policy; unknown files and other methods refused as problems, nothing
 * outside the table reachable; no token needed for the files. GET /v1/me names each token's role
 * and whether it may submit; GET /v1/cell counts the runs by state and reports the sinks. */
#include "tests/harness/harness.h"
#include "core/embed.h"

#include <curl/curl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define TOK_VIEWER "viewer-5f0c2a91d3"
#define TOK_TECH "tech-81b7e4c0a2"
#define TOK_ADMIN "admin-3d9a6f12b7"

static h_daemon_t d;
static char tokens[300];

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char headers[4096];
} resp_t;

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    resp_t *r = arg;
    r->body = realloc(r->body, r->len + sz * n + 1);
    memcpy(r->body + r->len, p, sz * n);
    r->len += sz * n;
    r->body[r->len] = 0;
    return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    resp_t *r = arg;
    size_t used = strlen(r->headers);
    if (used + sz * n < sizeof r->headers) {
        memcpy(r->headers + used, p, sz * n);
        r->headers[used + sz * n] = 0;
    }
    return sz * n;
}

/* One request; extra: a header line or NULL. The path goes out as written (no ".." folding). */
static resp_t req(const char *method, const char *path, const char *extra)
{
    resp_t r = {0};
    char url[512];
    snprintf(url, sizeof url, "%s%s", d.url, path);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    struct curl_slist *hl = extra ? curl_slist_append(NULL, extra) : NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return r;
}

/* The value of header name (case-insensitive) into out; false when absent. */
static bool header(const resp_t *r, const char *name, char *out, size_t len)
{
    size_t n = strlen(name);
    for (const char *p = r->headers; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            p += n + 1;
            while (*p == ' ')
                p++;
            size_t k = strcspn(p, "\r\n");
            snprintf(out, len, "%.*s", (int)(k < len ? k : len - 1), p);
            return true;
        }
    }
    return false;
}

static void assert_header(const resp_t *r, const char *name, const char *want)
{
    char v[1024];
    if (!header(r, name, v, sizeof v))
        fail_msg("no %s header in:\n%s", name, r->headers);
    if (strcmp(v, want) != 0)
        fail_msg("%s: \"%s\", not \"%s\"", name, v, want);
}

static int setup(void **state)
{
    (void)state;
    char dir[256];
    if (h_tempdir("labweb", dir, sizeof dir))
        return -1;
    snprintf(tokens, sizeof tokens, "%s/tokens", dir);
    FILE *f = fopen(tokens, "w");
    if (!f)
        return -1;
    fputs(TOK_VIEWER " viewer vera\n" TOK_TECH " technician tom\n" TOK_ADMIN " admin ada\n", f);
    fclose(f);
    char extra[512];
    snprintf(extra, sizeof extra, "[auth]\ntokens = %s\n", tokens);
    return h_daemon_start(&d, NULL, NULL, extra);
}

static int teardown(void **state)
{
    (void)state;
    h_daemon_destroy(&d);
    return 0;
}

static void test_index(void **state)
{
    (void)state;
    const lab_embedded_t *e = lab_web_find("index.html");
    assert_non_null(e);
    resp_t r = req("GET", "/", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, e->len);
    assert_memory_equal(r.body, e->text, e->len);
    assert_non_null(strstr(r.body, "<script type=\"module\" src=\"/web/app.js\">"));
    assert_header(&r, "Content-Type", "text/html; charset=utf-8");
    assert_header(&r, "Cache-Control", "no-cache");
    assert_header(&r, "ETag", e->etag);
    char csp[512];
    assert_true(header(&r, "Content-Security-Policy", csp, sizeof csp));
    assert_non_null(strstr(csp, "default-src 'self'"));
    assert_non_null(strstr(csp, "script-src 'self'"));
    assert_null(strstr(csp, "unsafe"));
    assert_header(&r, "X-Content-Type-Options", "nosniff");
    free(r.body);
    /* HEAD: the same headers, no body */
    r = req("HEAD", "/", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    assert_header(&r, "ETag", e->etag);
    free(r.body);
}

/* Every file compiled in, at /web/NAME, as compiled in, with its type. */
static void test_every_file(void **state)
{
    (void)state;
    int n = 0;
    for (const lab_embedded_t *e = lab_web_files; e->name; e++, n++) {
        char path[300];
        snprintf(path, sizeof path, "/web/%s", e->name);
        resp_t r = req("GET", path, NULL);
        if (r.status != 200)
            fail_msg("GET %s: %ld", path, r.status);
        assert_int_equal(r.len, e->len);
        assert_memory_equal(r.body, e->text, e->len);
        assert_header(&r, "ETag", e->etag);
        assert_header(&r, "Cache-Control", "no-cache");
        char type[128];
        assert_true(header(&r, "Content-Type", type, sizeof type));
        const char *dot = strrchr(e->name, '.');
        const char *want = strcmp(dot, ".js") == 0     ? "text/javascript; charset=utf-8"
                           : strcmp(dot, ".css") == 0  ? "text/css; charset=utf-8"
                           : strcmp(dot, ".html") == 0 ? "text/html; charset=utf-8"
                                                       : NULL;
        if (want && strcmp(type, want) != 0)
            fail_msg("%s: Content-Type %s, not %s", path, type, want);
        free(r.body);
    }
    assert_true(n >= 6); /* index.html, app.js, app.css, events.js and the pages */
    assert_non_null(lab_web_find("app.js"));
    assert_non_null(lab_web_find("events.js"));
    assert_non_null(lab_web_find("pages/cell.js"));
}

static void test_etag(void **state)
{
    (void)state;
    const lab_embedded_t *e = lab_web_find("app.js");
    char h[256];
    snprintf(h, sizeof h, "If-None-Match: %s", e->etag);
    resp_t r = req("GET", "/web/app.js", h);
    assert_int_equal(r.status, 304);
    assert_int_equal(r.len, 0);
    assert_header(&r, "ETag", e->etag);
    free(r.body);
    snprintf(h, sizeof h, "If-None-Match: \"0000\", W/%s", e->etag); /* a list, weak */
    r = req("GET", "/web/app.js", h);
    assert_int_equal(r.status, 304);
    free(r.body);
    r = req("GET", "/web/app.js", "If-None-Match: \"0123456789abcdef\"");
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, e->len);
    free(r.body);
    /* another file's tag is not this one's */
    snprintf(h, sizeof h, "If-None-Match: %s", lab_web_find("index.html")->etag);
    r = req("GET", "/web/app.js", h);
    assert_int_equal(r.status, 200);
    free(r.body);
}

static void test_refused(void **state)
{
    (void)state;
    static const char *const missing[] = {
        "/web/nope.js",
        "/web/",
        "/web/../CMakeLists.txt",
        "/web//app.js",
        "/web/pages/../app.js",
        "/index.html",
        "/web/APP.JS",
        "/web/app.js/",
    };
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        resp_t r = req("GET", missing[i], NULL);
        if (r.status != 404)
            fail_msg("GET %s: %ld, not 404", missing[i], r.status);
        assert_header(&r, "Content-Type", "application/problem+json");
        free(r.body);
    }
    resp_t r = req("POST", "/", NULL);
    assert_int_equal(r.status, 405);
    assert_header(&r, "Allow", "GET, HEAD");
    free(r.body);
    r = req("DELETE", "/web/app.js", NULL);
    assert_int_equal(r.status, 405);
    free(r.body);
}

/* The web app's files are counted in /metrics under a label of their own, not as unmatched
 * requests (which stay for what no route and no file answers). Runs after the tests above:
 * their requests were counted. */
static void test_metrics_label(void **state)
{
    (void)state;
    resp_t r = req("GET", "/metrics", "Authorization: Bearer " TOK_VIEWER);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "route=\"/web/{file}\",code=\"200\""));
    assert_non_null(strstr(r.body, "route=\"/web/{file}\",code=\"304\""));
    assert_non_null(strstr(r.body, "route=\"/web/{file}\",code=\"404\""));
    assert_non_null(strstr(r.body, "route=\"/web/{file}\",code=\"405\""));
    assert_null(strstr(r.body, "route=\"unmatched\",code=\"200\""));
    free(r.body);
    r = req("GET", "/nothing-here", NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    r = req("GET", "/metrics", "Authorization: Bearer " TOK_VIEWER);
    assert_non_null(strstr(r.body, "route=\"unmatched\",code=\"404\""));
    free(r.body);
}

static void me_is(const char *tok, const char *role, const char *name, bool can)
{
    char h[128];
    snprintf(h, sizeof h, "Authorization: Bearer %s", tok);
    resp_t r = req("GET", "/v1/me", h);
    assert_int_equal(r.status, 200);
    json_t *doc = json_loads(r.body, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "role")), role);
    assert_string_equal(json_string_value(json_object_get(doc, "name")), name);
    assert_int_equal(json_is_true(json_object_get(doc, "can_submit")), can);
    json_decref(doc);
    free(r.body);
}

static void test_me(void **state)
{
    (void)state;
    me_is(TOK_VIEWER, "viewer", "vera", false);
    me_is(TOK_TECH, "technician", "tom", true);
    me_is(TOK_ADMIN, "admin", "ada", true);
    resp_t r = req("GET", "/v1/me", NULL);
    assert_int_equal(r.status, 401);
    free(r.body);
    r = req("GET", "/v1/me", "Authorization: Bearer not-a-token-here");
    assert_int_equal(r.status, 401);
    free(r.body);
}

static void test_cell(void **state)
{
    (void)state;
    resp_t r = req("GET", "/v1/cell", NULL);
    assert_int_equal(r.status, 401);
    free(r.body);
    r = req("GET", "/v1/cell", "Authorization: Bearer " TOK_VIEWER);
    assert_int_equal(r.status, 200);
    json_t *doc = json_loads(r.body, 0, NULL);
    free(r.body);
    assert_non_null(doc);
    json_t *runs = json_object_get(doc, "runs");
    static const char *const states[] = {"queued", "planned", "running",   "paused",  "interrupted",
                                         "done",   "failed",  "cancelled", "released"};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        assert_true(json_is_integer(json_object_get(runs, states[i])));
    assert_int_equal(json_object_size(runs), 9);
    /* this daemon has neither sink configured */
    json_t *sinks = json_object_get(doc, "sinks");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(sinks, "postgres"), "state")),
        "disabled");
    assert_string_equal(json_string_value(json_object_get(json_object_get(sinks, "mqtt"), "state")),
                        "disabled");
    assert_true(json_is_object(json_object_get(doc, "queues")));
    assert_true(json_is_integer(json_object_get(doc, "outbox_head")));
    json_decref(doc);

    /* Two runs submitted: counted, in whichever state the scheduler has them. */
    static const char wf[] = "{\"name\":\"w1\",\"steps\":[{\"name\":\"read\",\"op\":"
                             "\"read_absorbance\",\"on\":\"plate_reader\",\"duration_s\":60}]}";
    char *body = NULL;
    int st = h_http(d.url, "POST", "/v1/workflows",
                    "Content-Type: application/json\nAuthorization: Bearer " TOK_ADMIN, wf, &body);
    free(body);
    assert_true(st == 201 || st == 200);
    for (int i = 0; i < 2; i++) {
        st = h_http(d.url, "POST", "/v1/runs",
                    "Content-Type: application/json\nAuthorization: Bearer " TOK_TECH,
                    "{\"workflow\":\"w1\",\"plate\":\"P9\"}", &body);
        if (st != 201)
            fail_msg("POST /v1/runs: %d %s", st, body ? body : "");
        free(body);
    }
    r = req("GET", "/v1/cell", "Authorization: Bearer " TOK_VIEWER);
    doc = json_loads(r.body, 0, NULL);
    free(r.body);
    json_int_t total = 0;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(doc, "runs"), k, v) total += json_integer_value(v);
    assert_int_equal(total, 2);
    json_decref(doc);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index),
        cmocka_unit_test(test_every_file),
        cmocka_unit_test(test_etag),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_me),
        cmocka_unit_test(test_cell),
        cmocka_unit_test(test_metrics_label),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
