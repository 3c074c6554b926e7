/* The audit trail end to end, against real PostgreSQL and mosquitto: a run's life and operator
 * decisions are signed entries in the daemon's store, in labloop.audit and at the retained
 * audit/head; a decision with a token that names no person is refused (403 signature-required);
 * PostgreSQL refuses UPDATE, DELETE and TRUNCATE of labloop.audit; an edited, a deleted and two
 * swapped entries are each found and located, in the SQLite store (daemon stopped, file edited)
 * and in PostgreSQL (triggers disabled by the superuser), by GET /v1/audit/verify and by
 * `labloop audit verify`, which recomputes PostgreSQL's chain itself; and a daemon killed with
 * SIGKILL while runs are being submitted leaves a chain that verifies, with an entry for every
 * run it kept. */
#include "tests/harness/harness.h"

#include <jansson.h>
#include <signal.h>
#include <pthread.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define TOK_TECH "tech-token-5c1e9a"
#define TOK_PIPE "pipe-token-77d0b3"
#define WAIT_MS 30000

static h_pg_t pg;
static h_mqtt_t mq;
static h_daemon_t d;
static char dir[256], tokens[300];
static char out[1 << 16];

/* A request with a token; the answer's JSON (null when none). The status must be want. */
static json_t *api_as(const char *token, const char *method, const char *path, const char *body,
                      int want)
{
    char hdr[200];
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s%s", token,
             body ? "\nContent-Type: application/json" : "");
    char *resp = NULL;
    int st = h_http(d.url, method, path, hdr, body, &resp);
    if (st != want)
        fail_msg("%s %s: %d, not %d: %s", method, path, st, want, resp ? resp : "");
    json_t *j = resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    return j ? j : json_null();
}

static int cli(const char *args)
{
    const char *bin = getenv("LABLOOP_CLI");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "LABLOOP_URL='%s' LABLOOP_TOKEN='%s' '%s' %s 2>&1", d.url, TOK_TECH,
             bin && *bin ? bin : "labloop", args);
    return h_run(cmd, out, sizeof out);
}

static void store_workflow(void)
{
    char path[512], *text = NULL;
    snprintf(path, sizeof path, "%s/deploy/examples/elisa.workflow.json", LAB_SOURCE_DIR_T);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t cap = 1 << 16;
    text = calloc(1, cap);
    size_t n = fread(text, 1, cap - 1, f);
    fclose(f);
    assert_true(n > 0);
    json_decref(api_as(TOK_TECH, "POST", "/v1/workflows", text, 201));
    free(text);
}

static char *submit_run(const char *plate)
{
    char body[128];
    snprintf(body, sizeof body, "{\"workflow\":\"elisa\",\"plate\":\"%s\"}", plate);
    json_t *r = api_as(TOK_TECH, "POST", "/v1/runs", body, 201);
    char *id = strdup(json_string_value(json_object_get(r, "id")));
    json_decref(r);
    return id;
}

static json_t *verify(void)
{
    return api_as(TOK_TECH, "GET", "/v1/audit/verify", NULL, 200);
}

static long long head_seq(void)
{
    json_t *v = verify();
    assert_true(json_is_true(json_object_get(v, "ok")));
    long long h = json_integer_value(json_object_get(json_object_get(v, "head"), "seq"));
    json_decref(v);
    return h;
}

static int setup(void **state)
{
    if (h_tempdir("labloop-audit", dir, sizeof dir) || h_pg_start(&pg) || h_mqtt_start(&mq))
        return -1;
    snprintf(tokens, sizeof tokens, "%s/tokens", dir);
    FILE *f = fopen(tokens, "w");
    if (!f)
        return -1;
    fprintf(f, TOK_TECH " technician tom\n" TOK_PIPE " pipeline\n");
    fclose(f);
    char extra[512];
    snprintf(extra, sizeof extra,
             "[auth]\ntokens = %s\n[instrument mover1]\ndriver = manual-mover\n", tokens);
    if (h_daemon_start(&d, &pg, &mq, extra))
        return -1;
    store_workflow();
    return 0;
}

static int teardown(void **state)
{
    h_daemon_destroy(&d);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
    h_rmtree(dir);
    return 0;
}

static json_t *find_entry(json_t *entries, const char *what, size_t from)
{
    for (size_t i = from; i < json_array_size(entries); i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(entries, i), "what")), what) ==
            0)
            return json_array_get(entries, i);
    return NULL;
}

/* The retained head on MQTT: a new subscriber gets it at once. Waits until it is at seq. */
static void wait_mqtt_head(long long seq)
{
    char filter[128];
    char cell[64];
    h_daemon_cell_name(&d, cell, sizeof cell);
    snprintf(filter, sizeof filter, "labloop/v1/lab/%s/audit/head", cell);
    long long end = h_now_ms() + WAIT_MS, got = -1;
    while (got != seq && h_now_ms() < end) {
        h_sub_t *s = h_sub_start(mq.uri, filter);
        assert_non_null(s);
        if (h_sub_wait(s, 1, 2000) >= 1) {
            h_msg_t *m;
            int n = h_sub_messages(s, &m);
            /* the retained copy; a head published as the subscription began comes live
             * (retained flag 0) as well, and says nothing about what is retained */
            for (int i = 0; i < n; i++) {
                if (!m[i].retained)
                    continue;
                json_t *j = json_loads(m[i].payload, 0, NULL);
                got = json_integer_value(json_object_get(j, "audit_seq"));
                /* The head names its entry's hash, and the entry is the one the daemon has. */
                assert_int_equal(strlen(json_string_value(json_object_get(j, "hash"))), 64);
                json_decref(j);
            }
        }
        h_sub_stop(s);
        if (got != seq)
            h_sleep_ms(200);
    }
    assert_int_equal(got, seq);
}

static void test_run_life_and_decisions(void **state)
{
    char *id = submit_run("AUD-1");
    char path[160];
    snprintf(path, sizeof path, "/v1/runs/%s/priority", id);
    json_decref(api_as(TOK_TECH, "POST", path, "{\"priority\":\"urgent\"}", 200));
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", id);
    json_decref(api_as(TOK_TECH, "POST", path, "{\"reason\":\"plate dropped\"}", 200));
    /* A pipeline token names no person: it may not take a decision. */
    json_t *p = api_as(TOK_PIPE, "POST", "/v1/campaigns/c1/pause", NULL, 403);
    assert_string_equal(json_string_value(json_object_get(p, "type")),
                        "urn:labloop:problem:signature-required");
    json_decref(p);

    snprintf(path, sizeof path, "/v1/audit?run=%s", id);
    json_t *a = api_as(TOK_TECH, "GET", path, NULL, 200);
    json_t *entries = json_object_get(a, "entries");
    json_t *e = find_entry(entries, "run.state", 0);
    assert_non_null(e); /* the submission, by the person whose token submitted it */
    assert_string_equal(json_string_value(json_object_get(e, "who")), "tom");
    json_t *prio = find_entry(entries, "run.priority", 0);
    assert_non_null(prio);
    assert_string_equal(json_string_value(json_object_get(prio, "who")), "tom");
    json_t *cancel = find_entry(entries, "run.cancel", 0);
    assert_non_null(cancel);
    assert_string_equal(json_string_value(json_object_get(cancel, "why")), "plate dropped");
    json_t *sig = json_object_get(json_object_get(cancel, "doc"), "signature");
    assert_string_equal(json_string_value(json_object_get(sig, "name")), "tom");
    assert_string_equal(json_string_value(json_object_get(sig, "meaning")), "cancelled run");
    assert_non_null(json_string_value(json_object_get(sig, "at")));
    /* The change the decision made follows it, signed with its name. */
    size_t ci;
    for (ci = 0; json_array_get(entries, ci) != cancel; ci++)
        ;
    json_t *after = find_entry(entries, "run.state", ci + 1);
    assert_non_null(after);
    assert_string_equal(json_string_value(json_object_get(after, "who")), "tom");
    assert_string_equal(json_string_value(json_object_get(json_object_get(after, "doc"), "state")),
                        "cancelled");
    long long cancel_seq = json_integer_value(json_object_get(cancel, "seq"));
    json_decref(a);

    long long head = head_seq();
    assert_true(head >= cancel_seq + 1);
    /* PostgreSQL has every entry, as the daemon hashed it. */
    assert_int_equal(h_pg_count_wait(&pg, "SELECT count(*) FROM labloop.audit", head, WAIT_MS),
                     head);
    assert_int_equal(h_pg_countf(&pg,
                                 "SELECT count(*) FROM labloop.audit WHERE seq = %lld AND "
                                 "what = 'run.cancel' AND who = 'tom' AND "
                                 "doc->'signature'->>'meaning' = 'cancelled run'",
                                 cancel_seq),
                     1);
    /* Insert-only. */
    assert_int_not_equal(
        h_pg_query(&pg, "UPDATE labloop.audit SET why = 'x' WHERE seq = 1", NULL, 0), 0);
    assert_int_not_equal(h_pg_query(&pg, "DELETE FROM labloop.audit WHERE seq = 1", NULL, 0), 0);
    assert_int_not_equal(h_pg_query(&pg, "TRUNCATE labloop.audit", NULL, 0), 0);
    assert_int_equal(h_pg_count(&pg, "SELECT count(*) FROM labloop.audit"), head);
    wait_mqtt_head(head);

    /* An operator's hold of an instrument and a manual action that failed are entries too, and
     * so is a configuration reload. */
    json_decref(
        api_as(TOK_TECH, "POST", "/v1/instruments/mover1/pause", "{\"reason\":\"cleaning\"}", 200));
    json_decref(api_as(TOK_TECH, "POST", "/v1/instruments/mover1/resume", NULL, 200));
    char hdr[200], *resp = NULL;
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\nContent-Type: application/json", TOK_TECH);
    int st = h_http(d.url, "POST", "/v1/instruments/mover1/actions", hdr,
                    "{\"action\":\"confirm\"}", &resp);
    free(resp);
    assert_true(st >= 400); /* nothing to confirm */
    kill(d.pid, SIGHUP);
    json_t *r = NULL;
    long long end = h_now_ms() + WAIT_MS;
    while (h_now_ms() < end) {
        json_decref(r);
        r = api_as(TOK_TECH, "GET", "/v1/audit?who=labloop&limit=500", NULL, 200);
        if (find_entry(json_object_get(r, "entries"), "config.reload", 0))
            break;
        h_sleep_ms(50);
    }
    json_t *reload = find_entry(json_object_get(r, "entries"), "config.reload", 0);
    assert_non_null(reload);
    assert_true(json_is_true(json_object_get(json_object_get(reload, "doc"), "tokens_reread")));
    json_decref(r);
    r = api_as(TOK_TECH, "GET", "/v1/audit?subject=mover1", NULL, 200);
    json_t *ents = json_object_get(r, "entries");
    json_t *pause = find_entry(ents, "instrument.pause", 0);
    assert_non_null(pause);
    assert_string_equal(json_string_value(json_object_get(pause, "why")), "cleaning");
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(pause, "doc"), "signature"), "meaning")),
        "paused instrument");
    assert_non_null(find_entry(ents, "instrument.resume", 0));
    json_t *act = find_entry(ents, "instrument.action", 0);
    assert_non_null(act);
    assert_string_equal(json_string_value(json_object_get(act, "who")), "tom");
    assert_true(json_is_false(json_object_get(json_object_get(act, "doc"), "ok")));
    assert_non_null(json_object_get(json_object_get(act, "doc"), "error"));
    json_decref(r);
    head = head_seq();
    assert_int_equal(h_pg_count_wait(&pg, "SELECT count(*) FROM labloop.audit", head, WAIT_MS),
                     head);
    wait_mqtt_head(head);

    /* The command line reads the trail and checks both chains. */
    char args[1024];
    snprintf(args, sizeof args, "audit --run %s", id);
    assert_int_equal(cli(args), 0);
    assert_non_null(strstr(out, "cancelled run: plate dropped"));
    snprintf(args, sizeof args, "audit verify --pg '%s'", pg.conninfo);
    assert_int_equal(cli(args), 0);
    assert_non_null(strstr(out, "daemon: ok"));
    assert_non_null(strstr(out, ": ok,"));

    /* Anyone can recompute the chain from an export with the documented rule, in Python. */
    char cmd[2048];
    const char *bin = getenv("LABLOOP_CLI");
    snprintf(cmd, sizeof cmd,
             "LABLOOP_URL='%s' LABLOOP_TOKEN='%s' '%s' --json audit --limit 500 > '%s/export.json' "
             "&& python3 '%s/tools/audit_verify.py' '%s/export.json'",
             d.url, TOK_TECH, bin && *bin ? bin : "labloop", dir, LAB_SOURCE_DIR_T, dir);
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "ok: "));
    snprintf(cmd, sizeof cmd,
             "sed -i 's/plate dropped/plate droppeD/' '%s/export.json' && "
             "python3 '%s/tools/audit_verify.py' '%s/export.json'",
             dir, LAB_SOURCE_DIR_T, dir);
    assert_int_equal(h_run(cmd, out, sizeof out), 1);
    char want[64];
    snprintf(want, sizeof want, "seq %lld: hash does not match", cancel_seq);
    assert_non_null(strstr(out, want));
    free(id);
}

/* The seq of the first run's submission (AUD-1): the tampering starts there. */
static long long base_seq;

/* Edited: base; deleted: base + 2; swapped: base + 4 and base + 5. */
static void expect_located(const char *text)
{
    long long b = base_seq;
    char want[4][160];
    snprintf(want[0], sizeof want[0], "seq %lld: hash does not match", b);
    snprintf(want[1], sizeof want[1], "seq %lld: entry %lld is missing", b + 2, b + 2);
    snprintf(want[2], sizeof want[2], "seq %lld: row is at seq %lld but its entry says seq %lld",
             b + 4, b + 4, b + 5);
    snprintf(want[3], sizeof want[3], "seq %lld: row is at seq %lld but its entry says seq %lld",
             b + 5, b + 5, b + 4);
    for (size_t i = 0; i < 4; i++)
        if (!strstr(text, want[i]))
            fail_msg("\"%s\" not found in:\n%s", want[i], text);
}

/* The same three changes to the table `t` (triggers already out of the way). */
static void tamper_sql(char *sql, size_t cap, const char *t)
{
    long long b = base_seq;
    snprintf(sql, cap,
             "UPDATE %s SET entry = replace(entry, '\"plate\":\"AUD-1\"', '\"plate\":\"AUD-X\"') "
             "WHERE seq = %lld; DELETE FROM %s WHERE seq = %lld; "
             "UPDATE %s SET seq = seq + 100000 WHERE seq IN (%lld, %lld); "
             "UPDATE %s SET seq = %lld WHERE seq = %lld; UPDATE %s SET seq = %lld WHERE seq = %lld",
             t, b, t, b + 2, t, b + 4, b + 5, t, b + 5, b + 4 + 100000, t, b + 4, b + 5 + 100000);
}

static void test_tamper_pg(void **state)
{
    json_t *a = api_as(TOK_TECH, "GET", "/v1/audit?limit=500", NULL, 200);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(a, "entries"), i, e)
    {
        const char *plate = json_string_value(json_object_get(json_object_get(e, "doc"), "plate"));
        if (plate && strcmp(plate, "AUD-1") == 0) {
            base_seq = json_integer_value(json_object_get(e, "seq"));
            break;
        }
    }
    json_decref(a);
    assert_true(base_seq > 0);
    /* More runs make sure that base + 5 exists and is not the head. */
    free(submit_run("AUD-2"));
    free(submit_run("AUD-3"));
    long long head = head_seq();
    assert_true(head >= base_seq + 6);
    assert_int_equal(h_pg_count_wait(&pg, "SELECT count(*) FROM labloop.audit", head, WAIT_MS),
                     head);
    char sql[2048];
    tamper_sql(sql, sizeof sql, "labloop.audit");
    assert_int_equal(h_pg_query(&pg, "ALTER TABLE labloop.audit DISABLE TRIGGER USER", NULL, 0), 0);
    assert_int_equal(h_pg_query(&pg, sql, NULL, 0), 0);
    assert_int_equal(h_pg_query(&pg, "ALTER TABLE labloop.audit ENABLE TRIGGER USER", NULL, 0), 0);
    char args[1024];
    snprintf(args, sizeof args, "audit verify --pg '%s'", pg.conninfo);
    assert_int_equal(cli(args), 1);
    printf("%s", out);
    assert_non_null(strstr(out, "daemon: ok")); /* the store was not touched */
    expect_located(out);
}

static void test_tamper_store(void **state)
{
    char db[400];
    snprintf(db, sizeof db, "%s/state/labloop.db", d.dir);
    assert_int_equal(h_daemon_stop(&d), 0);
    sqlite3 *s = NULL;
    assert_int_equal(sqlite3_open(db, &s), SQLITE_OK);
    char sql[2048];
    tamper_sql(sql, sizeof sql, "audit");
    char *err = NULL;
    if (sqlite3_exec(s, "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;", NULL, NULL,
                     &err) != SQLITE_OK ||
        sqlite3_exec(s, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s", err);
    sqlite3_close(s);
    assert_int_equal(h_daemon_restart(&d), 0);
    json_t *v = verify();
    assert_true(json_is_false(json_object_get(v, "ok")));
    json_decref(v);
    assert_int_equal(cli("audit verify"), 1);
    printf("%s", out);
    expect_located(out);
}

/* ---- SIGKILL while runs are being submitted ---- */

static volatile int load_stop;
static volatile int load_ok;

static void *load_main(void *arg)
{
    while (!load_stop) {
        char hdr[200];
        snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\nContent-Type: application/json",
                 TOK_TECH);
        char *resp = NULL;
        if (h_http(d.url, "POST", "/v1/runs", hdr, "{\"workflow\":\"elisa\",\"plate\":\"K\"}",
                   &resp) == 201)
            load_ok++;
        free(resp);
    }
    return NULL;
}

static void test_kill9_under_load(void **state)
{
    /* A fresh chain: the tampered one has served. */
    h_daemon_destroy(&d);
    char extra[512];
    snprintf(extra, sizeof extra, "[auth]\ntokens = %s\n", tokens);
    assert_int_equal(h_daemon_start(&d, &pg, &mq, extra), 0);
    store_workflow();
    load_stop = 0;
    load_ok = 0;
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, load_main, NULL);
    long long end = h_now_ms() + WAIT_MS;
    while (load_ok < 40 && h_now_ms() < end)
        h_sleep_ms(5);
    h_daemon_kill9(&d);
    load_stop = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_true(load_ok >= 40);
    /* Every run the store kept has its entry, and the chain verifies. */
    char db[400];
    snprintf(db, sizeof db, "%s/state/labloop.db", d.dir);
    sqlite3 *s = NULL;
    assert_int_equal(sqlite3_open(db, &s), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(s,
                                        "SELECT (SELECT count(*) FROM runs), (SELECT count(*) "
                                        "FROM runs WHERE id NOT IN (SELECT subject FROM audit "
                                        "WHERE what = 'run.state'))",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    long long runs = sqlite3_column_int64(q, 0), missing = sqlite3_column_int64(q, 1);
    sqlite3_finalize(q);
    sqlite3_close(s);
    assert_true(runs >= load_ok);
    assert_int_equal(missing, 0);
    assert_int_equal(h_daemon_restart(&d), 0);
    json_t *v = verify();
    assert_true(json_is_true(json_object_get(v, "ok")));
    assert_true(json_integer_value(json_object_get(v, "entries")) >= runs + 1);
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_life_and_decisions),
        cmocka_unit_test(test_tamper_pg),
        cmocka_unit_test(test_tamper_store),
        cmocka_unit_test(test_kill9_under_load),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
