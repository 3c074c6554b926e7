/* /metrics with real sinks: a throw-away PostgreSQL cluster and a mosquitto broker, the writer
 * and the bridge started beside the store and the API on a loop thread. The sinks' state, depth,
 * lag and counters follow what they do: up and caught up after submissions, mqtt down with rows
 * waiting while its broker is stopped, caught up again after it returns, "disabled" once the API
 * was told to forget them. */
#include "daemon/api/api.h"
#include "daemon/bus/mqtt.h"
#include "core/cfg.h"
#include "core/clock.h"
#include "core/log.h"
#include "daemon/store/pg.h"
#include "daemon/store/store.h"
#include "tests/harness/harness.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define DEADLINE_MS 30000
#define RUN_BODY "{\"workflow\":\"elisa-v1\",\"plate\":\"P-0002\"}"

typedef struct call {
    void (*fn)(void *arg);
    void *arg;
    bool done;
} call_t;

static struct {
    h_pg_t pg;
    h_mqtt_t mq;
    char dir[256];
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    call_t *call;
    lab_clock_t clock;
    lab_config_t cfg;
    char http[64], url[64];
    lab_store_t *store;
    lab_pg_t *pg_sink;
    lab_mqtt_t *mqtt_sink;
    lab_api_t *api;
    int pending; /* close callbacks still to come */
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

static void open_all(void *arg)
{
    int *rc = arg;
    *rc = -1;
    if (lab_store_open(&g.store, &g.loop, g.dir))
        return;
    if (lab_pg_start(&g.pg_sink, &g.loop, &g.cfg, g.store))
        return;
    if (lab_mqtt_start(&g.mqtt_sink, &g.loop, &g.cfg, g.store, &g.clock))
        return;
    lab_api_deps_t deps = {&g.loop, &g.cfg, &g.clock, g.store, g.pg_sink, g.mqtt_sink,
                           NULL,    NULL,   NULL,     NULL,    NULL,      NULL};
    if (lab_api_start(&g.api, &deps))
        return;
    *rc = 0;
}

static int setup(void **state)
{
    curl_global_init(CURL_GLOBAL_ALL);
    if (h_pg_start(&g.pg) || h_mqtt_start(&g.mq) ||
        h_tempdir("labloop-apisinks", g.dir, sizeof g.dir))
        return -1;
    int port = h_free_port();
    snprintf(g.http, sizeof g.http, "127.0.0.1:%d", port);
    snprintf(g.url, sizeof g.url, "http://127.0.0.1:%d", port);
    lab_config_t *c = &g.cfg;
    c->site = "lab";
    c->cell = "cell1";
    c->state_dir = g.dir;
    c->http = g.http;
    c->time_scale = 1;
    c->http_max_body = 1024 * 1024;
    c->http_max_conns = 16;
    c->pg_enabled = true;
    c->pg_conninfo = g.pg.conninfo;
    c->pg_connect_timeout_s = 5;
    c->pg_batch_rows = 500;
    c->pg_retry_max_s = 0.5;
    c->mqtt_enabled = true;
    c->mqtt_uri = g.mq.uri;
    c->mqtt_topic_root = "labloop/v1";
    c->mqtt_client_id = "labloop-apisinks";
    c->mqtt_keepalive_s = 5;
    c->mqtt_inflight = 64;
    c->mqtt_retry_max_s = 0.5;
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    uv_loop_init(&g.loop);
    uv_async_init(&g.loop, &g.async, on_async);
    lab_clock_init(&g.clock, &g.loop, 1.0);
    pthread_create(&g.thread, NULL, loop_main, NULL);
    int rc;
    on_loop(open_all, &rc);
    return rc ? rc : h_workflow_example(g.url, "elisa-v1");
}

static void store_closed(void *arg)
{
    uv_close((uv_handle_t *)&g.async, NULL);
}

static void part_closed(void *arg)
{
    if (--g.pending == 0)
        lab_store_close(g.store, store_closed, NULL);
}

/* The daemon's order: the API, then the sinks, then the store. */
static void api_closed(void *arg)
{
    g.pending = 3;
    lab_pg_stop(g.pg_sink, 2000, part_closed, NULL);
    lab_mqtt_stop(g.mqtt_sink, 2000, part_closed, NULL);
    part_closed(NULL);
}

static void close_all(void *arg)
{
    lab_api_close(g.api, api_closed, NULL);
}

static int teardown(void **state)
{
    static call_t c = {close_all, NULL, false};
    pthread_mutex_lock(&g.mu);
    g.call = &c;
    uv_async_send(&g.async);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.thread, NULL);
    assert_int_equal(uv_loop_close(&g.loop), 0);
    h_rmtree(g.dir);
    h_mqtt_destroy(&g.mq);
    h_pg_destroy(&g.pg);
    curl_global_cleanup();
    return 0;
}

/* ---- HTTP ---- */

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

static long request(const char *method, const char *path, const char *body, char **out)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", g.url, path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    sink_t b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    long status = -1;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (out)
        *out = b.p;
    else
        free(b.p);
    return status;
}

/* The value of one sample ("name{labels}") in a /metrics answer, or -1 when absent. */
static double sample(const char *text, const char *name)
{
    char key[256];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

typedef struct want {
    const char *name;
    double lo, hi;
} want_t;

/* Polls /metrics until every wanted sample is within its range; false at the deadline (with the
 * last answer printed). */
static bool metrics_until(const want_t *w, int n)
{
    long long deadline = h_now_ms() + DEADLINE_MS;
    char *text = NULL;
    for (;;) {
        free(text);
        text = NULL;
        assert_int_equal(request("GET", "/metrics", NULL, &text), 200);
        int ok = 0;
        for (int i = 0; i < n; i++) {
            double v = sample(text, w[i].name);
            ok += v >= w[i].lo && v <= w[i].hi;
        }
        if (ok == n) {
            free(text);
            return true;
        }
        if (h_now_ms() > deadline) {
            fprintf(stderr, "metrics never matched:\n%s\n", text);
            free(text);
            return false;
        }
        h_sleep_ms(50);
    }
}

static void submit(int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(request("POST", "/v1/runs", RUN_BODY, NULL), 201);
}

/* ---- tests ---- */

static void test_sinks_up_and_caught_up(void **state)
{
    submit(3);
    const want_t w[] = {
        {"labloop_outbox_head_seq", 3, 1e9},
        {"labloop_sink_state{sink=\"postgres\",state=\"up\"}", 1, 1},
        {"labloop_sink_state{sink=\"postgres\",state=\"disabled\"}", 0, 0},
        {"labloop_sink_state{sink=\"mqtt\",state=\"up\"}", 1, 1},
        {"labloop_outbox_depth{sink=\"postgres\"}", 0, 0},
        {"labloop_outbox_depth{sink=\"mqtt\"}", 0, 0},
        {"labloop_sink_lag_seconds{sink=\"postgres\"}", 0, 0},
        {"labloop_sink_lag_seconds{sink=\"mqtt\"}", 0, 0},
        {"labloop_sink_cursor{sink=\"postgres\"}", 3, 1e9},
        {"labloop_sink_cursor{sink=\"mqtt\"}", 3, 1e9},
        {"labloop_sink_delivered_total{sink=\"postgres\"}", 3, 1e9},
        {"labloop_sink_delivered_total{sink=\"mqtt\"}", 3, 1e9},
        {"labloop_sink_errors_total{sink=\"mqtt\"}", 0, 1e9},
        {"labloop_store_ops_total", 3, 1e9},
    };
    assert_true(metrics_until(w, sizeof w / sizeof w[0]));
}

static void test_mqtt_down_then_back(void **state)
{
    assert_int_equal(h_mqtt_stop(&g.mq), 0);
    submit(2);
    /* Rows wait for mqtt, and grow older; postgres goes on. */
    const want_t down[] = {
        {"labloop_sink_state{sink=\"mqtt\",state=\"up\"}", 0, 0},
        {"labloop_outbox_depth{sink=\"mqtt\"}", 2, 1e9},
        {"labloop_sink_lag_seconds{sink=\"mqtt\"}", 0.001, 1e9},
        {"labloop_outbox_depth{sink=\"postgres\"}", 0, 0},
        {"labloop_sink_state{sink=\"postgres\",state=\"up\"}", 1, 1},
    };
    assert_true(metrics_until(down, sizeof down / sizeof down[0]));
    assert_int_equal(h_mqtt_restart(&g.mq), 0);
    const want_t back[] = {
        {"labloop_sink_state{sink=\"mqtt\",state=\"up\"}", 1, 1},
        {"labloop_outbox_depth{sink=\"mqtt\"}", 0, 0},
        {"labloop_sink_lag_seconds{sink=\"mqtt\"}", 0, 0},
    };
    assert_true(metrics_until(back, sizeof back / sizeof back[0]));
}

static void forget(void *arg)
{
    lab_api_forget_sinks(g.api);
}

static void test_forget_sinks(void **state)
{
    on_loop(forget, NULL);
    char *text = NULL;
    assert_int_equal(request("GET", "/metrics", NULL, &text), 200);
    assert_int_equal(sample(text, "labloop_sink_state{sink=\"postgres\",state=\"disabled\"}"), 1);
    assert_int_equal(sample(text, "labloop_sink_state{sink=\"mqtt\",state=\"disabled\"}"), 1);
    assert_true(sample(text, "labloop_outbox_depth{sink=\"mqtt\"}") < 0);
    free(text);
    /* Submissions still work: the store does not need the sinks. */
    submit(1);
}

int main(void)
{
    lab_log_set_level(getenv("LAB_TEST_DEBUG") ? LAB_LOG_DEBUG : LAB_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sinks_up_and_caught_up),
        cmocka_unit_test(test_mqtt_down_then_back),
        cmocka_unit_test(test_forget_sinks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
