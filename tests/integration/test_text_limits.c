/* Text at its limits, end to end. Runs whose plate, name and note are the longest the run schema
 * allows, in 1-, 2-, 3- and 4-byte characters, and whose read step has the longest name, finish
 * with all 96 measurements carrying the exact plate and step in the API, in PostgreSQL and on
 * MQTT. One character more, or bytes that are not UTF-8, are refused with a precise error. Text
 * quoted in an answer (a query's value, an unknown member, an unknown action, a missing `on`) is
 * whole or cut on a character; a cancellation keeps its longest reason; a STAR's reagents and an
 * instrument's id follow their limits in characters. */
#include "tests/harness/harness_drv.h"
#include "tests/integration/mix_cell.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static h_pg_t pg;
static h_mqtt_t mq;
static h_sim_t sim;
static h_daemon_t d;

#define STEP64 "read-0123456789-0123456789-0123456789-0123456789-0123456789-abcd"

/* The assay with a read step named with 64 characters. */
static const char wf_long[] =
    "{\"name\":\"long\",\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":120,"
    "\"params\":{\"reagent\":\"substrate\",\"volume_ul\":50,\"wells\":\"A1:H3\"}},"
    "{\"name\":\"incubate\",\"op\":\"incubate\",\"on\":\"incubator\",\"duration_s\":120,"
    "\"params\":{\"temperature_c\":37},\"start_within_s\":600},"
    "{\"name\":\"" STEP64 "\",\"op\":\"read_absorbance\",\"on\":\"plate_reader\","
    "\"duration_s\":90,\"params\":{\"wavelength_nm\":450},\"start_within_s\":600}],"
    "\"on_failure\":{\"action\":\"retry\",\"retries\":1}}";

static int setup(void **state)
{
    (void)state;
    char dir[256], sections[2048], ini[2600], extra[2600];
    if (h_pg_start(&pg) || h_mqtt_start(&mq) || h_tempdir("labtext", dir, sizeof dir))
        return -1;
    mix_cell_sections(sections, sizeof sections, dir, h_free_port());
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = 60\nsim_seed = 5\nsim_noise = 0.001\n%s",
             sections);
    if (h_sim_start(&sim, ini))
        return -1;
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = 60\n%s", sections);
    if (h_daemon_start(&d, &pg, &mq, extra))
        return -1;
    json_decref(h_api(&d, "POST", "/v1/workflows", wf_long, 201));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_daemon_destroy(&d);
    h_sim_stop(&sim);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
    return 0;
}

/* n copies of c. */
static char *repeat(const char *c, int n)
{
    size_t len = strlen(c);
    char *out = calloc(1, len * (size_t)n + 1);
    for (int i = 0; i < n; i++)
        memcpy(out + len * (size_t)i, c, len);
    return out;
}

static const char *sval(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k)) ?: "";
}

static void test_longest_plates_end_to_end(void **state)
{
    (void)state;
    enum { N = 4 };
    /* 64 characters of 1, 2, 3 and 4 bytes: 64, 128, 192 and 256 bytes */
    static const char *const ch[N] = {"P", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
    char *plate[N], *id[N], *name[N], *note[N];
    h_sub_t *meas = h_sub_start(mq.uri, "labloop/v1/lab/+/measurements/#");
    for (int i = 0; i < N; i++) {
        plate[i] = repeat(ch[i], 64);
        name[i] = repeat(ch[i], 200);
        note[i] = repeat(ch[i], 2000);
        json_t *body = json_pack("{s:s,s:s,s:s,s:s}", "workflow", "long", "plate", plate[i], "name",
                                 name[i], "note", note[i]);
        char *text = json_dumps(body, JSON_COMPACT);
        json_t *doc = h_api(&d, "POST", "/v1/runs", text, 201);
        id[i] = strdup(sval(doc, "id"));
        assert_string_equal(sval(doc, "plate"), plate[i]);
        assert_string_equal(sval(doc, "name"), name[i]);
        assert_string_equal(sval(doc, "note"), note[i]);
        json_decref(doc);
        free(text);
        json_decref(body);
    }
    for (int i = 0; i < N; i++) {
        json_t *doc = h_run_wait(&d, id[i], "done", 180000);
        assert_string_equal(sval(doc, "plate"), plate[i]);
        assert_string_equal(sval(doc, "note"), note[i]);
        json_decref(doc);
    }
    /* the API: the timeline's items of each run carry its plate whole */
    json_t *tl = h_api(&d, "GET", "/v1/schedule", NULL, 200);
    for (int i = 0; i < N; i++) {
        int steps = 0;
        size_t k;
        json_t *it;
        json_array_foreach(json_object_get(tl, "items"), k, it)
        {
            if (strcmp(sval(it, "run"), id[i]) != 0)
                continue;
            assert_string_equal(sval(it, "plate"), plate[i]);
            steps++;
        }
        assert_int_equal(steps, 3);
    }
    json_decref(tl);
    /* PostgreSQL: 96 values per run with the exact plate and step, and the run's plate */
    for (int i = 0; i < N; i++) {
        char q[1024];
        snprintf(q, sizeof q,
                 "select count(*) from labloop.measurements where run = '%s' and plate = '%s' "
                 "and char_length(plate) = 64 and octet_length(plate) = %zu and step = '" STEP64
                 "' and value is not null",
                 id[i], plate[i], strlen(plate[i]));
        assert_int_equal(h_pg_count_wait(&pg, q, 96, 30000), 96);
        snprintf(q, sizeof q, "select count(*) from labloop.measurements where run = '%s'", id[i]);
        assert_int_equal(h_pg_count(&pg, q), 96);
        snprintf(q, sizeof q,
                 "select count(*) from labloop.runs where id = '%s' and plate = '%s' and "
                 "state = 'done'",
                 id[i], plate[i]);
        assert_int_equal(h_pg_count_wait(&pg, q, 1, 30000), 1);
        char *qn = malloc(9000);
        snprintf(qn, 9000,
                 "select count(*) from labloop.runs where id = '%s' and doc->>'name' = '%s' and "
                 "char_length(doc->>'note') = 2000 and md5(doc->>'note') = md5('%s')",
                 id[i], name[i], note[i]);
        assert_int_equal(h_pg_count(&pg, qn), 1);
        free(qn);
    }
    /* MQTT: 96 measurements of each run, every one with the plate and step whole */
    assert_true(h_sub_wait(meas, 96 * N, 30000) >= 96 * N);
    h_msg_t *msgs;
    int n = h_sub_messages(meas, &msgs), mine[N] = {0};
    for (int m = 0; m < n; m++) {
        json_t *p = json_loads(msgs[m].payload, 0, NULL);
        if (!json_object_get(p, "well")) {
            json_decref(p);
            continue;
        }
        for (int i = 0; i < N; i++)
            if (strcmp(sval(p, "run"), id[i]) == 0) {
                assert_string_equal(sval(p, "plate"), plate[i]);
                assert_string_equal(sval(p, "step"), STEP64);
                mine[i]++;
            }
        json_decref(p);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(mine[i], 96);
        free(plate[i]);
        free(name[i]);
        free(note[i]);
        free(id[i]);
    }
    h_sub_stop(meas);
}

/* One character over, or bytes that are not UTF-8: refused, saying which field and why. */
static void test_over_the_limit_refused(void **state)
{
    (void)state;
    static const char *const ch[] = {"P", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
    for (int i = 0; i < 4; i++) {
        char *plate = repeat(ch[i], 65);
        json_t *body = json_pack("{s:s,s:s}", "workflow", "long", "plate", plate);
        char *text = json_dumps(body, JSON_COMPACT);
        json_t *pb = h_api(&d, "POST", "/v1/runs", text, 422);
        json_t *e = json_array_get(json_object_get(pb, "errors"), 0);
        assert_int_equal(json_array_size(json_object_get(pb, "errors")), 1);
        assert_string_equal(sval(e, "path"), "/plate");
        assert_string_equal(sval(e, "message"), "must be at most 64 characters long");
        json_decref(pb);
        free(text);
        json_decref(body);
        free(plate);
    }
    /* a query's value and an unknown key are quoted in part, cut on a character */
    static const char *const queries[] = {"/v1/runs?state=a", "/v1/runs?limit=a", "/v1/runs?a"};
    for (int i = 0; i < 3; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s", queries[i]);
        for (int k = 0; k < 40; k++)
            strcat(path, "%C3%A9");
        if (i == 2)
            strcat(path, "=1");
        json_t *pb = h_api(&d, "GET", path, NULL, 400);
        const char *msg = sval(json_array_get(json_object_get(pb, "errors"), 0), "message");
        assert_non_null(strstr(msg, i == 2 ? "query parameter a\xC3\xA9" : "\"a\xC3\xA9"));
        json_decref(pb);
    }
    /* a plate cut inside its last character, and a stray byte: not JSON text */
    static const char *const bad[] = {"{\"workflow\":\"long\",\"plate\":\"P\xC3\"}",
                                      "{\"workflow\":\"long\",\"plate\":\"P\xFF\"}"};
    for (int i = 0; i < 2; i++) {
        json_t *pb = h_api(&d, "POST", "/v1/runs", bad[i], 400);
        assert_non_null(strstr(sval(pb, "detail"), "unable to decode byte"));
        json_decref(pb);
    }
}

/* A step on the longest `on` (64 four-byte characters) that no instrument has: the workflow is
 * refused with the name whole in the message. */
static void test_longest_on_named_whole(void **state)
{
    (void)state;
    char *on = repeat("\xF0\x9F\x98\x80", 64);
    json_t *wf = json_pack("{s:s,s:[{s:s,s:s,s:s,s:i}]}", "name", "far", "steps", "name", "go",
                           "op", "incubate", "on", on, "duration_s", 60);
    char *text = json_dumps(wf, JSON_COMPACT);
    json_t *pb = h_api(&d, "POST", "/v1/workflows", text, 422);
    char want[400];
    snprintf(want, sizeof want, "no instrument of this cell is '%s' (a kind or an id)", on);
    json_t *e = json_array_get(json_object_get(pb, "errors"), 0);
    assert_string_equal(sval(e, "path"), "/steps/0/on");
    assert_string_equal(sval(e, "message"), want);
    json_decref(pb);
    free(text);
    json_decref(wf);
    free(on);
}

/* A cancellation's reason: 500 characters of four bytes are kept whole, in the API and in
 * PostgreSQL; 501 are refused. */
static void test_cancel_reason_at_limit(void **state)
{
    (void)state;
    json_t *doc = h_api(&d, "POST", "/v1/runs", "{\"workflow\":\"long\",\"plate\":\"C1\"}", 201);
    char *id = strdup(sval(doc, "id"));
    json_decref(doc);
    char path[128], *reason = repeat("\xF0\x9F\x98\x80", 501);
    /* an unknown member of a priority change is named, cut on a character */
    snprintf(path, sizeof path, "/v1/runs/%s/priority", id);
    char member[200] = "{\"priority\":\"high\",\"a";
    for (int i = 0; i < 40; i++)
        strcat(member, "\xC3\xA9");
    strcat(member, "\":1}");
    json_t *pb = h_api(&d, "POST", path, member, 422);
    json_t *e = json_array_get(json_object_get(pb, "errors"), 0);
    assert_string_equal(sval(e, "message"), "unknown member");
    assert_int_equal(strlen(sval(e, "path")), 1 + 1 + 29 * 2); /* "/a" and 29 of the 40 */
    json_decref(pb);
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", id);
    json_t *body = json_pack("{s:s}", "reason", reason);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(h_api(&d, "POST", path, text, 422));
    free(text);
    json_decref(body);
    reason[500 * 4] = '\0';
    body = json_pack("{s:s}", "reason", reason);
    text = json_dumps(body, JSON_COMPACT);
    json_decref(h_api(&d, "POST", path, text, 200));
    doc = h_run_wait(&d, id, "cancelled", 60000);
    assert_string_equal(sval(doc, "cancel_reason"), reason);
    json_decref(doc);
    char *q = malloc(4096);
    snprintf(q, 4096,
             "select count(*) from labloop.runs where id = '%s' and state = 'cancelled' and "
             "doc->>'cancel_reason' = '%s'",
             id, reason);
    assert_int_equal(h_pg_count_wait(&pg, q, 1, 30000), 1);
    free(q);
    free(text);
    json_decref(body);
    free(reason);
    free(id);
}

/* A STAR's reagents follow the campaign's rule: 31 characters of any width are kept whole, 32
 * are refused when the driver opens. */
static void test_star_reagent_at_limit(void **state)
{
    (void)state;
    assert_int_equal(h_drv_init(20), 0);
    char port[300], list[300];
    snprintf(port, sizeof port, "%s/none", d.dir);
    char *r31 = repeat("\xC3\xA9", 31), *r32 = repeat("\xE2\x82\xAC", 32);
    for (int i = 0; i < 2; i++) {
        snprintf(list, sizeof list, "substrate, %s", i == 0 ? r31 : r32);
        lab_drv_kv_t kv[] = {
            {"driver", "hamilton-star", 2}, {"port", port, 3}, {"reagents", list, 4}};
        lab_drv_conf_t conf = {.id = "star9", .line = 1, .kv = kv, .n = 3, .time_scale = 20};
        lab_driver_t *drv = NULL;
        char err[300] = "";
        int rc = lab_driver_new(h_drv_loop(), &conf, h_drv_host(), &drv, err, sizeof err);
        if (i == 0) {
            assert_int_equal(rc, 0);
            lab_driver_start(drv);
            json_t *st = h_drv_call_ok(drv, "status", NULL);
            json_t *names = json_object_get(st, "reagents");
            assert_int_equal(json_array_size(names), 2);
            assert_string_equal(json_string_value(json_array_get(names, 1)), r31);
            json_decref(st);
            h_drv_close(drv);
        } else {
            assert_int_not_equal(rc, 0);
            assert_non_null(strstr(err, "too long"));
        }
    }
    free(r31);
    free(r32);
    assert_int_equal(h_drv_fini(), 0);
}

/* An instrument asked for an action of 64 four-byte characters it does not have: the refusal
 * quotes it cut on a character, as JSON text, and the daemon goes on. */
static void test_unknown_longest_action(void **state)
{
    (void)state;
    char *action = repeat("\xF0\x9F\x98\x80", 64);
    json_t *body = json_pack("{s:s}", "action", action);
    char *text = json_dumps(body, JSON_COMPACT), *resp = NULL;
    int st = h_http(d.url, "POST", "/v1/instruments/star1/actions",
                    "Content-Type: application/json", text, &resp);
    json_t *pb = json_loads(resp ? resp : "", 0, NULL);
    if (st != 422 || !pb)
        fail_msg("%d %s", st, resp ? resp : "");
    const char *detail = sval(pb, "detail");
    assert_non_null(strstr(detail, "has no action '\xF0\x9F\x98\x80"));
    json_decref(h_api(&d, "GET", "/healthz", NULL, 200));
    json_decref(pb);
    free(resp);
    free(text);
    json_decref(body);
    free(action);
}

/* An instrument id of 64 characters is a config's; 65 are refused by `labloopd --check`, not
 * cut. */
static void test_instrument_id_at_limit(void **state)
{
    (void)state;
    char id[70], path[400], cmd[1024], out[4096];
    memset(id, 'i', 65);
    id[65] = '\0';
    snprintf(path, sizeof path, "%s/check.ini", d.dir);
    for (int n = 64; n <= 65; n++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f,
                "[labloop]\nstate_dir = %s/chk\nhttp = 127.0.0.1:0\n[instrument %.*s]\n"
                "driver = manual-mover\n",
                d.dir, n, id);
        fclose(f);
        snprintf(cmd, sizeof cmd, "'%s' --check -c '%s' 2>&1", getenv("LABLOOPD"), path);
        int rc = h_run(cmd, out, sizeof out);
        if (n == 64 && rc != 0)
            fail_msg("64 characters refused: %s", out);
        if (n == 65 && (rc == 0 || !strstr(out, "an instrument id has at most 64 characters")))
            fail_msg("65 characters: %d %s", rc, out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_longest_plates_end_to_end),
        cmocka_unit_test(test_over_the_limit_refused),
        cmocka_unit_test(test_longest_on_named_whole),
        cmocka_unit_test(test_cancel_reason_at_limit),
        cmocka_unit_test(test_star_reagent_at_limit),
        cmocka_unit_test(test_unknown_longest_action),
        cmocka_unit_test(test_instrument_id_at_limit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
