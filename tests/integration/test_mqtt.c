/* The MQTT bridge against a real mosquitto (the project's broker config) and a real local store:
 * the topic table, the retained status and its Will, the outbox publisher with its cursor, a
 * broker frozen and killed mid-stream, a publisher killed with SIGKILL, bad rows, and inbound
 * subscriptions surviving a broker restart. The bridge runs on this test's own uv loop (or in a
 * child process for the SIGKILL test); checks use a separate Paho subscriber. */
#include "daemon/bus/mqtt.h"
#include "daemon/bus/topics.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/store/store.h"
#include "tests/harness/harness.h"

#include <MQTTAsync.h>
#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define ROOT "labloop/v1/lab/cell1"
#define DEADLINE_MS 60000

/* ---- fixture: a broker, a store in a temp dir, a loop, and the bridge's config ---- */

typedef struct env {
    h_mqtt_t mq;
    char dir[256];
    uv_loop_t loop;
    uv_timer_t tick; /* keeps UV_RUN_ONCE from sleeping long */
    lab_store_t *st;
    lab_clock_t clock;
    lab_config_t cfg;
    lab_mqtt_t *m;
} env_t;

static void cfg_fill(lab_config_t *c, const char *uri, int inflight)
{
    memset(c, 0, sizeof *c);
    c->site = "lab";
    c->cell = "cell1";
    c->mqtt_enabled = true;
    c->mqtt_uri = (char *)uri;
    c->mqtt_topic_root = "labloop/v1";
    c->mqtt_client_id = "labloop-test-cell1";
    c->mqtt_keepalive_s = 5;
    c->mqtt_inflight = inflight;
    c->mqtt_retry_max_s = 0.5;
}

static void noop_tick(uv_timer_t *t)
{
}

static void loop_open(env_t *e, const char *state_dir)
{
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->tick);
    uv_timer_start(&e->tick, noop_tick, 5, 5);
    lab_clock_init(&e->clock, &e->loop, 1.0);
    assert_int_equal(lab_store_open(&e->st, &e->loop, state_dir), 0);
}

static void env_open(env_t *e, int inflight)
{
    memset(e, 0, sizeof *e);
    assert_int_equal(h_mqtt_start(&e->mq), 0);
    assert_int_equal(h_tempdir("labloop-mqtt-store", e->dir, sizeof e->dir), 0);
    loop_open(e, e->dir);
    cfg_fill(&e->cfg, e->mq.uri, inflight);
}

typedef bool (*pred_fn)(env_t *e, void *arg);

/* Runs the loop until pred holds; false when the deadline passed first. */
static bool run_until(env_t *e, pred_fn pred, void *arg, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    while (!pred(e, arg)) {
        if (h_now_ms() > deadline)
            return false;
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    return true;
}

static bool flag_set(env_t *e, void *arg)
{
    return *(int *)arg != 0;
}

static void set_flag(void *arg)
{
    *(int *)arg = 1;
}

static void bridge_start(env_t *e)
{
    assert_int_equal(lab_mqtt_start(&e->m, &e->loop, &e->cfg, e->st, &e->clock), 0);
}

static void bridge_stop(env_t *e, uint64_t grace_ms)
{
    int stopped = 0;
    lab_mqtt_stop(e->m, grace_ms, set_flag, &stopped);
    assert_true(run_until(e, flag_set, &stopped, DEADLINE_MS));
    e->m = NULL;
}

static void store_close(env_t *e)
{
    int closed = 0;
    lab_store_close(e->st, set_flag, &closed);
    assert_true(run_until(e, flag_set, &closed, DEADLINE_MS));
    e->st = NULL;
}

static void loop_close(env_t *e)
{
    uv_close((uv_handle_t *)&e->tick, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

static void env_close(env_t *e)
{
    if (e->m)
        bridge_stop(e, 1000);
    if (e->st)
        store_close(e);
    loop_close(e);
    h_rmtree(e->dir);
    h_mqtt_destroy(&e->mq);
}

static lab_sink_stats_t stats(env_t *e)
{
    lab_sink_stats_t s;
    lab_mqtt_stats(e->m, &s);
    return s;
}

/* ---- appending outbox rows through a store op ---- */

typedef struct append {
    lab_store_op_t op;
    int n;
    const char *kind;
    const char *key;     /* NULL: run-<i % 7> */
    const char *payload; /* NULL: a run document */
    int done, status;
} append_t;

static int append_apply(lab_store_op_t *op, sqlite3 *db)
{
    append_t *a = (append_t *)op;
    for (int i = 0; i < a->n; i++) {
        char key[32], doc[128];
        snprintf(key, sizeof key, "run-%d", i % 7);
        const char *k = a->key ? a->key : key;
        snprintf(doc, sizeof doc, "{\"id\":\"%s\",\"state\":\"running\",\"i\":%d}", k, i);
        int64_t seq =
            lab_outbox_append(db, a->kind, k, a->payload ? a->payload : doc, lab_wall_ms());
        if (seq < 0)
            return (int)seq;
    }
    return 0;
}

static void append_done(lab_store_op_t *op, int status)
{
    append_t *a = (append_t *)op;
    a->status = status;
    a->done = 1;
}

static bool append_finished(env_t *e, void *arg)
{
    return ((append_t *)arg)->done != 0;
}

static void append_rows(env_t *e, int n, const char *kind, const char *key, const char *payload)
{
    append_t a = {.n = n, .kind = kind, .key = key, .payload = payload};
    a.op.apply = append_apply;
    a.op.done = append_done;
    lab_store_submit(e->st, &a.op);
    assert_true(run_until(e, append_finished, &a, DEADLINE_MS));
    assert_int_equal(a.status, 0);
}

static int64_t head_seq(env_t *e)
{
    lab_store_stats_t s;
    lab_store_stats(e->st, &s);
    return s.head_seq;
}

/* ---- waiting for the subscriber while the loop runs ---- */

typedef struct sub_wait {
    h_sub_t *sub;
    int n;
} sub_wait_t;

static bool sub_has(env_t *e, void *arg)
{
    sub_wait_t *w = arg;
    return h_sub_wait(w->sub, w->n, 0) >= w->n;
}

static bool cursor_at(env_t *e, void *arg)
{
    return stats(e).cursor >= *(int64_t *)arg;
}

static bool bridge_up(env_t *e, void *arg)
{
    return stats(e).state == LAB_SINK_UP;
}

static bool bridge_not_up(env_t *e, void *arg)
{
    return stats(e).state != LAB_SINK_UP;
}

static bool connects_at(env_t *e, void *arg)
{
    return stats(e).connects >= *(int64_t *)arg;
}

static bool errors_at(env_t *e, void *arg)
{
    return stats(e).errors >= *(int64_t *)arg;
}

/* The seqs seen on topics under prefix, as a bitmap over 1..max; also checks every message's
 * envelope. Returns how many distinct seqs were seen. */
static int seen_seqs(h_sub_t *s, const char *prefix, int64_t max, char *seen)
{
    h_msg_t *v;
    int n = h_sub_messages(s, &v), distinct = 0;
    for (int i = 0; i < n; i++) {
        if (strncmp(v[i].topic, prefix, strlen(prefix)) != 0)
            continue;
        json_error_t err;
        json_t *doc = json_loads(v[i].payload, 0, &err);
        assert_non_null(doc);
        assert_string_equal(json_string_value(json_object_get(doc, "cell")), "cell1");
        int64_t ts;
        assert_int_equal(lab_time_parse(json_string_value(json_object_get(doc, "ts")), &ts), 0);
        json_t *seq = json_object_get(doc, "seq");
        assert_true(json_is_integer(seq));
        int64_t q = json_integer_value(seq);
        assert_true(q >= 1 && q <= max);
        /* runs/{id}/state with the row's key, not retained */
        char topic[128];
        snprintf(topic, sizeof topic, ROOT "/runs/%s/state",
                 json_string_value(json_object_get(doc, "id")));
        assert_string_equal(v[i].topic, topic);
        assert_int_equal(v[i].retained, 0);
        if (!seen[q]) {
            seen[q] = 1;
            distinct++;
        }
        json_decref(doc);
    }
    return distinct;
}

/* The newest status message a subscriber got, parsed. */
static json_t *last_status(h_sub_t *s, int *retained)
{
    h_msg_t *v;
    int n = h_sub_messages(s, &v);
    for (int i = n - 1; i >= 0; i--) {
        if (strcmp(v[i].topic, ROOT "/status") == 0) {
            if (retained)
                *retained = v[i].retained;
            return json_loads(v[i].payload, 0, NULL);
        }
    }
    return NULL;
}

static bool status_is(h_sub_t *s, const char *state)
{
    json_t *doc = last_status(s, NULL);
    bool ok = doc && strcmp(json_string_value(json_object_get(doc, "state")) ?: "", state) == 0;
    json_decref(doc);
    return ok;
}

typedef struct status_wait {
    h_sub_t *sub;
    const char *state;
} status_wait_t;

static bool status_seen(env_t *e, void *arg)
{
    status_wait_t *w = arg;
    return status_is(w->sub, w->state);
}

/* A fresh subscriber's view of the retained status. */
static json_t *retained_status(const char *uri)
{
    h_sub_t *s = h_sub_start(uri, ROOT "/status");
    assert_non_null(s);
    assert_true(h_sub_wait(s, 1, DEADLINE_MS) >= 1);
    int retained = 0;
    json_t *doc = last_status(s, &retained);
    assert_int_equal(retained, 1);
    h_sub_stop(s);
    return doc;
}

/* ---- tests ---- */

static void test_topic_table(void **state)
{
    for (int i = 0; i < LAB_TOPIC_COUNT; i++) {
        assert_int_equal(lab_topics[i].id, i);
        assert_int_equal(lab_topics[i].qos, 1);
    }
    /* every kind the outbox carries has a topic, except those for PostgreSQL only (DESIGN's
     * MQTT table has no topic for them): audit events, workflow versions, and the closed loop's
     * records (pipelines get results and done events), and prompts (the dashboard reads them
     * from the API), and the instruments' state intervals (utilisation: their states are on
     * instruments/{id}/state) */
    static const char *const pg_only[] = {"event", "workflow",  "campaign", "prompt",
                                          "batch", "candidate", "plate",    "instrument.interval"};
    for (const lab_outbox_kind_t *k = lab_outbox_kinds; k->name; k++) {
        bool only = false;
        for (size_t i = 0; i < sizeof pg_only / sizeof *pg_only; i++)
            only |= strcmp(k->name, pg_only[i]) == 0;
        if (only)
            assert_null(lab_topic_for_kind(k->name));
        else
            assert_non_null(lab_topic_for_kind(k->name));
    }
    assert_null(lab_topic_for_kind(NULL));
    assert_true(lab_topic_get(LAB_TOPIC_STATUS)->retained);
    assert_true(lab_topic_for_kind("instrument.state")->retained);
    assert_false(lab_topic_for_kind("run.state")->retained);

    char *root = lab_topic_root("labloop/v1", "lab", "cell1"), *t = NULL;
    assert_string_equal(root, ROOT);
    const char *vars[2] = {"r1", "b7"};
    assert_int_equal(lab_topic_format(lab_topic_for_kind("run.state"), root, vars, 1, &t), 0);
    assert_string_equal(t, ROOT "/runs/r1/state");
    free(t);
    vars[0] = "c1";
    assert_int_equal(lab_topic_format(lab_topic_for_kind("batch.done"), root, vars, 2, &t), 0);
    assert_string_equal(t, ROOT "/campaigns/c1/batches/b7/done");
    free(t);
    const char *bad[] = {"a/b", "+", "x#", "", "tab\there"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        vars[0] = bad[i];
        assert_int_equal(lab_topic_format(lab_topic_for_kind("run.state"), root, vars, 1, &t),
                         LAB_EINVAL);
        assert_null(t);
    }
    vars[0] = "c1";
    vars[1] = NULL;
    assert_int_equal(lab_topic_format(lab_topic_for_kind("batch.done"), root, vars, 2, &t),
                     LAB_EINVAL);
    t = lab_topic_filter(lab_topic_get(LAB_TOPIC_IN_BATCHES), root);
    assert_string_equal(t, ROOT "/in/campaigns/+/batches");
    assert_true(lab_topic_match(t, ROOT "/in/campaigns/c9/batches"));
    assert_false(lab_topic_match(t, ROOT "/in/campaigns/c9/batches/x"));
    assert_false(lab_topic_match(t, ROOT "/in/campaigns/batches"));
    free(t);
    /* where an answer may go: never a wildcard (the broker drops the connection) nor '$' */
    assert_null(lab_topic_reply_check("answers/one"));
    const char *bad_reply[] = {"", "a/+/b", "a/#", "#", "$SYS/x"};
    for (size_t i = 0; i < sizeof bad_reply / sizeof *bad_reply; i++)
        assert_non_null(lab_topic_reply_check(bad_reply[i]));
    assert_non_null(lab_topic_reply_check(NULL));
    assert_true(lab_topic_match("a/#", "a"));
    assert_true(lab_topic_match("a/#", "a/b/c"));
    assert_true(lab_topic_match("#", "a/b"));
    assert_false(lab_topic_match("a/+", "a/b/c"));
    free(root);
}

static void test_status_online_offline(void **state)
{
    env_t e;
    env_open(&e, 64);
    h_sub_t *live = h_sub_start(e.mq.uri, ROOT "/status");
    assert_non_null(live);
    bridge_start(&e);
    status_wait_t w = {live, "online"};
    assert_true(run_until(&e, status_seen, &w, DEADLINE_MS));

    json_t *doc = retained_status(e.mq.uri);
    assert_string_equal(json_string_value(json_object_get(doc, "state")), "online");
    assert_string_equal(json_string_value(json_object_get(doc, "cell")), "cell1");
    assert_string_equal(json_string_value(json_object_get(doc, "site")), "lab");
    assert_non_null(json_string_value(json_object_get(doc, "version")));
    int64_t ts;
    assert_int_equal(lab_time_parse(json_string_value(json_object_get(doc, "ts")), &ts), 0);
    json_decref(doc);
    assert_int_equal(stats(&e).connects, 1);

    bridge_stop(&e, 5000);
    assert_true(h_sub_wait(live, 2, DEADLINE_MS) >= 2);
    assert_true(status_is(live, "offline"));
    doc = retained_status(e.mq.uri);
    assert_string_equal(json_string_value(json_object_get(doc, "state")), "offline");
    assert_string_equal(json_string_value(json_object_get(doc, "cell")), "cell1");
    json_decref(doc);
    h_sub_stop(live);
    env_close(&e);
}

static void test_outbox_thousand(void **state)
{
    env_t e;
    env_open(&e, 64);
    h_sub_t *s = h_sub_start(e.mq.uri, ROOT "/runs/+/state");
    assert_non_null(s);
    bridge_start(&e);
    assert_true(run_until(&e, bridge_up, NULL, DEADLINE_MS));
    for (int i = 0; i < 10; i++)
        append_rows(&e, 100, "run.state", NULL, NULL);
    int64_t head = head_seq(&e);
    assert_int_equal(head, 1000);
    sub_wait_t w = {s, 1000};
    assert_true(run_until(&e, sub_has, &w, DEADLINE_MS));
    assert_true(run_until(&e, cursor_at, &head, DEADLINE_MS));
    char *seen = calloc(1001, 1);
    assert_int_equal(seen_seqs(s, ROOT "/runs/", 1000, seen), 1000);
    free(seen);
    lab_sink_stats_t st = stats(&e);
    assert_int_equal(st.cursor, 1000);
    assert_int_equal(st.delivered, 1000);
    assert_int_equal(st.state, LAB_SINK_UP);
    bridge_stop(&e, 5000);

    /* the saved cursor survives the store */
    store_close(&e);
    assert_int_equal(lab_store_open(&e.st, &e.loop, e.dir), 0);
    assert_int_equal(lab_store_cursor_get(e.st, "mqtt"), 1000);
    assert_int_equal(head_seq(&e), 1000);
    h_sub_stop(s);
    env_close(&e);
}

static void test_broker_frozen_and_killed(void **state)
{
    env_t e;
    env_open(&e, 64);
    h_sub_t *s1 = h_sub_start(e.mq.uri, ROOT "/runs/+/state");
    assert_non_null(s1);
    bridge_start(&e);
    assert_true(run_until(&e, bridge_up, NULL, DEADLINE_MS));
    append_rows(&e, 300, "run.state", NULL, NULL);
    int64_t at = 300;
    sub_wait_t w = {s1, 300};
    assert_true(run_until(&e, sub_has, &w, DEADLINE_MS));
    assert_true(run_until(&e, cursor_at, &at, DEADLINE_MS));

    /* Frozen: it takes the bytes into its socket but never acknowledges, so the window fills
     * with unacknowledged rows; then it dies with them. */
    assert_int_equal(kill(e.mq.pid, SIGSTOP), 0);
    append_rows(&e, 200, "run.state", NULL, NULL);
    for (int i = 0; i < 20; i++)
        uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(stats(&e).cursor, 300);
    kill(e.mq.pid, SIGKILL);
    waitpid(e.mq.pid, NULL, 0);
    e.mq.pid = 0;
    assert_true(run_until(&e, bridge_not_up, NULL, DEADLINE_MS));

    /* Down: rows keep coming, reconnects keep failing. */
    append_rows(&e, 300, "run.state", NULL, NULL);
    int64_t errs = stats(&e).errors + 2;
    assert_true(run_until(&e, errors_at, &errs, DEADLINE_MS));
    assert_int_equal(stats(&e).cursor, 300);
    assert_non_null(stats(&e).last_error);

    assert_int_equal(h_mqtt_restart(&e.mq), 0);
    h_sub_t *s2 = h_sub_start(e.mq.uri, ROOT "/runs/+/state");
    assert_non_null(s2);
    int64_t head = head_seq(&e);
    assert_int_equal(head, 800);
    assert_true(run_until(&e, cursor_at, &head, DEADLINE_MS));
    /* everything past the cursor at the loss arrives at least once */
    char *seen = calloc(801, 1);
    w.sub = s2;
    w.n = 500;
    assert_true(run_until(&e, sub_has, &w, DEADLINE_MS));
    seen_seqs(s2, ROOT "/runs/", 800, seen);
    for (int q = 301; q <= 800; q++)
        if (!seen[q])
            fail_msg("seq %d never arrived after the restart", q);
    free(seen);
    assert_true(stats(&e).connects >= 2);
    h_sub_stop(s1);
    h_sub_stop(s2);
    env_close(&e);
}

/* The child of test_publisher_killed: a bridge on its own store, until killed. */
static int bridge_child(const char *uri, const char *dir)
{
    env_t e;
    memset(&e, 0, sizeof e);
    loop_open(&e, dir);
    cfg_fill(&e.cfg, uri, 16);
    if (lab_mqtt_start(&e.m, &e.loop, &e.cfg, e.st, &e.clock) != 0)
        return 1;
    uv_run(&e.loop, UV_RUN_DEFAULT);
    return 0;
}

static void test_publisher_killed(void **state)
{
    h_mqtt_t mq;
    char dir[256];
    assert_int_equal(h_mqtt_start(&mq), 0);
    assert_int_equal(h_tempdir("labloop-mqtt-child", dir, sizeof dir), 0);
    h_sub_t *s = h_sub_start(mq.uri, ROOT "/status");
    assert_non_null(s);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/proc/self/exe", "test_mqtt", "--bridge-child", mq.uri, dir, (char *)NULL);
        _exit(127);
    }
    long long deadline = h_now_ms() + DEADLINE_MS;
    while (!status_is(s, "online") && h_now_ms() < deadline)
        h_sub_wait(s, h_sub_wait(s, 0, 0) + 1, 200);
    assert_true(status_is(s, "online"));
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    /* the broker sees the socket close without a DISCONNECT and publishes the Will */
    while (!status_is(s, "offline") && h_now_ms() < deadline)
        h_sub_wait(s, h_sub_wait(s, 0, 0) + 1, 200);
    assert_true(status_is(s, "offline"));
    json_t *doc = retained_status(mq.uri);
    assert_string_equal(json_string_value(json_object_get(doc, "state")), "offline");
    assert_string_equal(json_string_value(json_object_get(doc, "cell")), "cell1");
    json_decref(doc);
    h_sub_stop(s);
    h_rmtree(dir);
    h_mqtt_destroy(&mq);
}

static void test_bad_rows(void **state)
{
    env_t e;
    env_open(&e, 8);
    h_sub_t *s = h_sub_start(e.mq.uri, ROOT "/#");
    assert_non_null(s);
    bridge_start(&e);
    assert_true(run_until(&e, bridge_up, NULL, DEADLINE_MS));
    append_rows(&e, 1, "run.state", "r1", "not json {{{");        /* 1: wrapped string */
    append_rows(&e, 1, "run.state", "r1", "[1,2,3]");             /* 2: wrapped array */
    append_rows(&e, 1, "run.state", "r1", "\xff\xfe garbage");    /* 3: wrapped null */
    append_rows(&e, 3, "event", "e1", "{\"who\":\"x\"}");         /* 4-6: no topic */
    append_rows(&e, 1, "no.such.kind", "k", "{}");                /* 7: no topic */
    append_rows(&e, 1, "run.state", "bad/key", "{}");             /* 8: not a topic level */
    append_rows(&e, 1, "batch.done", "c1", "{\"size\":4}");       /* 9: no batch */
    append_rows(&e, 1, "batch.done", "c1", "{\"batch\":\"b7\"}"); /* 10 */
    append_rows(&e, 1, "instrument.state", "reader1", "{\"state\":\"idle\",\"seq\":\"x\"}");
    append_rows(&e, 1, "run.state", "r2", "{\"id\":\"r2\"}"); /* 12 */
    int64_t head = 12;
    assert_int_equal(head_seq(&e), head);
    assert_true(run_until(&e, cursor_at, &head, DEADLINE_MS));
    /* status + 3 wrapped + batch done + instrument + r2 */
    sub_wait_t w = {s, 7};
    assert_true(run_until(&e, sub_has, &w, DEADLINE_MS));

    h_msg_t *v;
    int n = h_sub_messages(s, &v), checked = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(v[i].topic, ROOT "/audit/head") == 0)
            continue; /* the audit entries of these rows (test_audit_trail checks them) */
        json_t *doc = json_loads(v[i].payload, 0, NULL);
        assert_non_null(doc);
        int64_t seq = json_integer_value(json_object_get(doc, "seq"));
        json_t *val = json_object_get(doc, "value");
        switch (seq) {
        case 1:
            assert_string_equal(json_string_value(val), "not json {{{");
            break;
        case 2:
            assert_true(json_is_array(val));
            break;
        case 3:
            assert_true(json_is_null(val));
            break;
        case 10:
            assert_string_equal(v[i].topic, ROOT "/campaigns/c1/batches/b7/done");
            break;
        case 11: /* our seq wins over the row's own */
            assert_string_equal(v[i].topic, ROOT "/instruments/reader1/state");
            assert_string_equal(json_string_value(json_object_get(doc, "state")), "idle");
            assert_int_equal(v[i].retained, 0); /* live delivery; retained on the broker */
            break;
        case 12:
            assert_string_equal(v[i].topic, ROOT "/runs/r2/state");
            break;
        case 0: /* status */
            assert_string_equal(v[i].topic, ROOT "/status");
            break;
        default:
            fail_msg("seq %lld should have been skipped (topic %s)", (long long)seq, v[i].topic);
        }
        checked++;
        json_decref(doc);
    }
    assert_int_equal(checked, 7);
    assert_int_equal(stats(&e).delivered, 12);
    assert_int_equal(stats(&e).state, LAB_SINK_UP);
    h_sub_stop(s);
    env_close(&e);
}

typedef struct inbox {
    int n;
    char last[128];
} inbox_t;

static void on_in(void *ctx, const lab_mqtt_in_t *msg)
{
    inbox_t *in = ctx;
    in->n++;
    snprintf(in->last, sizeof in->last, "%s %s", msg->topic, msg->payload);
}

/* One QoS 1 message from a short-lived client (Paho's async library: see harness_mqtt.c). */
static void publish_once(const char *uri, const char *topic, const char *payload)
{
    MQTTAsync c;
    assert_int_equal(MQTTAsync_create(&c, uri, "h-pub", MQTTCLIENT_PERSISTENCE_NONE, NULL), 0);
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    assert_int_equal(MQTTAsync_connect(c, &co), 0);
    long long deadline = h_now_ms() + 10000;
    while (!MQTTAsync_isConnected(c) && h_now_ms() < deadline)
        h_sleep_ms(5);
    assert_true(MQTTAsync_isConnected(c));
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = (void *)payload;
    msg.payloadlen = (int)strlen(payload);
    msg.qos = 1;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    assert_int_equal(MQTTAsync_sendMessage(c, topic, &msg, &ro), 0);
    assert_int_equal(MQTTAsync_waitForCompletion(c, ro.token, 10000), 0);
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = 1000;
    MQTTAsync_disconnect(c, &d);
    while (MQTTAsync_isConnected(c) && h_now_ms() < deadline)
        h_sleep_ms(5);
    MQTTAsync_destroy(&c);
}

typedef struct in_wait {
    inbox_t *in;
    int n;
    const char *uri;
    const char *topic;
} in_wait_t;

/* Publishes until the bridge got it: the subscription may still be on its way. */
static bool inbox_got(env_t *e, void *arg)
{
    in_wait_t *w = arg;
    if (w->in->n >= w->n)
        return true;
    publish_once(w->uri, w->topic, "{\"workflow\":\"elisa\"}");
    for (int i = 0; i < 20 && w->in->n < w->n; i++)
        uv_run(&e->loop, UV_RUN_ONCE);
    return w->in->n >= w->n;
}

static void test_inbound_resubscribed(void **state)
{
    env_t e;
    env_open(&e, 8);
    bridge_start(&e);
    inbox_t in = {0};
    char *filter = lab_topic_filter(lab_topic_get(LAB_TOPIC_IN_RUNS), lab_mqtt_root(e.m));
    assert_int_equal(lab_mqtt_subscribe(e.m, filter, 1, on_in, &in), 0);
    assert_int_equal(lab_mqtt_subscribe(e.m, "a/#/b", 3, on_in, &in), LAB_EINVAL);
    assert_true(run_until(&e, bridge_up, NULL, DEADLINE_MS));
    in_wait_t w = {&in, 1, e.mq.uri, ROOT "/in/runs"};
    assert_true(run_until(&e, inbox_got, &w, DEADLINE_MS));
    assert_string_equal(in.last, ROOT "/in/runs {\"workflow\":\"elisa\"}");

    assert_int_equal(h_mqtt_restart(&e.mq), 0);
    int64_t two = 2;
    assert_true(run_until(&e, connects_at, &two, DEADLINE_MS));
    w.n = in.n + 1;
    assert_true(run_until(&e, inbox_got, &w, DEADLINE_MS));
    free(filter);
    env_close(&e);
}

/* What a handler gets beside the payload, and what its answer carries back. */
typedef struct props_in {
    int n;
    char corr[64], key[64], topic[128];
    lab_mqtt_t *m;
} props_in_t;

static void on_props(void *ctx, const lab_mqtt_in_t *msg)
{
    props_in_t *p = ctx;
    p->n++;
    snprintf(p->corr, sizeof p->corr, "%.*s", (int)msg->corr_len, (const char *)msg->corr);
    const char *k = lab_mqtt_in_prop(msg, "idempotency-key");
    snprintf(p->key, sizeof p->key, "%s", k ? k : "");
    snprintf(p->topic, sizeof p->topic, "%s", msg->topic);
    lab_mqtt_return_t *r = lab_mqtt_return_new(msg, NULL);
    lab_mqtt_answer(p->m, r, "{\"answer\":1}");
    lab_mqtt_return_free(r);
}

typedef struct req_wait {
    h_req_t *rq;
    props_in_t *in;
    const char *topic, *corr;
} req_wait_t;

/* Publishes until the bridge got it and the answer came back. */
static bool answered(env_t *e, void *arg)
{
    req_wait_t *w = arg;
    if (w->in->n > 0 && h_req_wait(w->rq, 1, 0) >= 1)
        return true;
    if (w->in->n == 0)
        h_req_publish(w->rq, w->topic, "{}", 2, "answers/p", w->corr, "k-7", true);
    for (int i = 0; i < 20; i++)
        uv_run(&e->loop, UV_RUN_ONCE);
    return false;
}

/* Correlation Data and user properties reach the handler, and the answer echoes the Correlation
 * Data; a shared subscription ($share/GROUP/...) gets its messages under their own topic. */
static void test_inbound_properties(void **state)
{
    env_t e;
    env_open(&e, 8);
    bridge_start(&e);
    props_in_t in = {.m = e.m}, shared = {.m = e.m};
    char *filter = lab_topic_filter(lab_topic_get(LAB_TOPIC_IN_RUNS), lab_mqtt_root(e.m));
    assert_int_equal(lab_mqtt_subscribe(e.m, filter, 1, on_props, &in), 0);
    assert_int_equal(lab_mqtt_subscribe(e.m, "$share/labloop/site/in/runs", 1, on_props, &shared),
                     0);
    assert_true(run_until(&e, bridge_up, NULL, DEADLINE_MS));
    h_req_t *rq = h_req_start(e.mq.uri, "answers/#");
    assert_non_null(rq);
    req_wait_t w = {rq, &in, ROOT "/in/runs", "corr-1"};
    assert_true(run_until(&e, answered, &w, DEADLINE_MS));
    assert_string_equal(in.corr, "corr-1");
    assert_string_equal(in.key, "k-7");
    json_t *a = h_req_answer(rq, "corr-1", DEADLINE_MS);
    assert_non_null(a);
    json_decref(a);
    h_req_stop(rq);
    rq = h_req_start(e.mq.uri, "answers/#");
    req_wait_t w2 = {rq, &shared, "site/in/runs", "corr-2"};
    assert_true(run_until(&e, answered, &w2, DEADLINE_MS));
    assert_string_equal(shared.topic, "site/in/runs");
    assert_string_equal(shared.corr, "corr-2");
    a = h_req_answer(rq, "corr-2", DEADLINE_MS);
    assert_non_null(a);
    json_decref(a);
    h_req_stop(rq);
    free(filter);
    env_close(&e);
}

/* A window wider than Paho's default buffer (100) goes out whole: no publish is refused. */
static void test_wide_window_burst(void **state)
{
    enum { ROWS = 3000 };
    env_t e;
    env_open(&e, 1000);
    h_sub_t *s = h_sub_start(e.mq.uri, ROOT "/runs/+/state");
    assert_non_null(s);
    bridge_start(&e);
    assert_true(run_until(&e, bridge_up, NULL, DEADLINE_MS));
    append_rows(&e, ROWS, "run.state", NULL, NULL);
    int64_t head = ROWS;
    sub_wait_t w = {s, ROWS};
    assert_true(run_until(&e, sub_has, &w, DEADLINE_MS));
    assert_true(run_until(&e, cursor_at, &head, DEADLINE_MS));
    char *seen = calloc(ROWS + 1, 1);
    assert_int_equal(seen_seqs(s, ROOT "/runs/", ROWS, seen), ROWS);
    free(seen);
    assert_int_equal(stats(&e).errors, 0);
    h_sub_stop(s);
    env_close(&e);
}

/* Paho refuses a publish when its buffer of messages not yet written is full
 * (MQTTASYNC_MAX_BUFFERED_MESSAGES, rc -12). Here large replies fill the socket to a frozen broker
 * and then that buffer, so the window is empty when the first row is refused: no acknowledgement
 * will come to wake the publisher. Every row must still arrive once the broker thaws. */
static void test_buffer_full_retried(void **state)
{
    enum { ROWS = 50, REPLIES = 2000, BIG = 64 * 1024 };
    env_t e;
    env_open(&e, 8);
    h_sub_t *s = h_sub_start(e.mq.uri, ROOT "/runs/+/state");
    assert_non_null(s);
    bridge_start(&e);
    assert_true(run_until(&e, bridge_up, NULL, DEADLINE_MS));

    assert_int_equal(kill(e.mq.pid, SIGSTOP), 0);
    char *big = malloc(BIG + 1);
    memset(big, 'x', BIG);
    big[BIG] = '\0';
    /* Until Paho cannot take one even after a pause: its socket is full, nothing drains. */
    int sent = 0;
    bool stuck = false;
    while (!stuck && sent < REPLIES) {
        int took = 0;
        while (sent < REPLIES && lab_mqtt_reply(e.m, "test/replies", NULL, 0, big) == 0)
            took++, sent++;
        stuck = took == 0;
        h_sleep_ms(50);
    }
    free(big);
    assert_true(stuck);
    int64_t errs = stats(&e).errors + 1;
    append_rows(&e, ROWS, "run.state", NULL, NULL);
    assert_true(run_until(&e, errors_at, &errs, DEADLINE_MS));
    assert_non_null(strstr(stats(&e).last_error, "paho error -12; will be retried"));
    assert_int_equal(stats(&e).cursor, 0);
    assert_int_equal(kill(e.mq.pid, SIGCONT), 0);

    int64_t head = head_seq(&e);
    assert_int_equal(head, ROWS);
    sub_wait_t w = {s, ROWS};
    assert_true(run_until(&e, sub_has, &w, 20000));
    assert_true(run_until(&e, cursor_at, &head, 20000));
    char *seen = calloc(ROWS + 1, 1);
    assert_int_equal(seen_seqs(s, ROOT "/runs/", ROWS, seen), ROWS);
    free(seen);
    assert_int_equal(stats(&e).connects, 1); /* no reconnect was needed */
    h_sub_stop(s);
    env_close(&e);
}

static void test_stop_while_down(void **state)
{
    env_t e;
    env_open(&e, 8);
    h_mqtt_stop(&e.mq);
    bridge_start(&e);
    int64_t errs = 2;
    assert_true(run_until(&e, errors_at, &errs, DEADLINE_MS));
    assert_int_equal(stats(&e).connects, 0);
    assert_int_equal(stats(&e).state == LAB_SINK_UP, 0);
    append_rows(&e, 5, "run.state", NULL, NULL);
    bridge_stop(&e, 200); /* unreachable: stops without waiting the grace out twice */
    store_close(&e);
    assert_int_equal(lab_store_open(&e.st, &e.loop, e.dir), 0);
    assert_int_equal(lab_store_cursor_get(e.st, "mqtt"), 0);
    env_close(&e);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--bridge-child") == 0)
        return bridge_child(argv[2], argv[3]);
    signal(SIGPIPE, SIG_IGN);
    if (getenv("TEST_FILTER")) /* e.g. TEST_FILTER=test_bad_rows */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_table),
        cmocka_unit_test(test_status_online_offline),
        cmocka_unit_test(test_outbox_thousand),
        cmocka_unit_test(test_broker_frozen_and_killed),
        cmocka_unit_test(test_publisher_killed),
        cmocka_unit_test(test_bad_rows),
        cmocka_unit_test(test_inbound_resubscribed),
        cmocka_unit_test(test_inbound_properties),
        cmocka_unit_test(test_stop_while_down),
        cmocka_unit_test(test_buffer_full_retried),
        cmocka_unit_test(test_wide_window_burst),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
