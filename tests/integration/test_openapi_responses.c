/* Every route of the API answered for real and checked against its OpenAPI document: labloopd
 * with tokens, PostgreSQL, mosquitto and labloop-sim's cell; tests/openapi/check_responses.py
 * (Python's jsonschema, the full 2020-12 dialect) sends good and bad requests to each route and
 * validates each answer's status, content type and body against GET /v1/openapi.json. The run it
 * resumes is paused here first, by a read the simulated reader answers with an error; its prompt
 * is answered by that resume.
 * LAB_OPENAPI_DUMP=1 prints every answer as well. */
#include "tests/harness/harness.h"
#include "tests/integration/mix_cell.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define TOK_VIEWER "openapi-viewer-aaaaaaaa"
#define TOK_TECH "openapi-tech-bbbbbbbbbb"
#define TOK_PIPE "openapi-pipe-cccccccccc"
#define TOK_ADMIN "openapi-admin-dddddddd"

static h_pg_t pg;
static h_mqtt_t mq;
static h_sim_t sim;
static h_daemon_t dmn;
static char dir[256];

static int setup(void **state)
{
    (void)state;
    char sections[4096], ini[5000], tokens[300], extra[5000];
    if (h_pg_start(&pg) || h_mqtt_start(&mq) || h_tempdir("labopenapi", dir, sizeof dir))
        return -1;
    mix_cell_sections(sections, sizeof sections, dir, h_free_port());
    /* the STAR counts its tips and troughs, plenty of both, for the consumables routes */
    static const char star[] = "[instrument star1]\n";
    char *at = strstr(sections, star);
    if (!at)
        return -1;
    at += strlen(star);
    char rest[4096];
    snprintf(rest, sizeof rest, "%s", at);
    snprintf(at, sizeof sections - (size_t)(at - sections),
             "tip_racks = 1\ntroughs = substrate: 10000000, inhibitor: 10000000\n%s", rest);
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = 60\nsim_seed = 3\n%s", sections);
    if (h_sim_start(&sim, ini))
        return -1;
    snprintf(tokens, sizeof tokens, "%s/tokens", dir);
    FILE *f = fopen(tokens, "w");
    if (!f)
        return -1;
    fprintf(f, "%s viewer vera\n%s technician tom\n%s pipeline pia\n%s admin ada\n", TOK_VIEWER,
            TOK_TECH, TOK_PIPE, TOK_ADMIN);
    fclose(f);
    /* a cell of a shared queue, for the lab view's routes */
    snprintf(extra, sizeof extra,
             "[labloop]\ntime_scale = 60\n%s[auth]\ntokens = %s\n[lab]\nshared_queue = on\n",
             sections, tokens);
    return h_daemon_start(&dmn, &pg, &mq, extra);
}

static int teardown(void **state)
{
    (void)state;
    h_daemon_destroy(&dmn);
    h_sim_stop(&sim);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
    h_rmtree(dir);
    return 0;
}

static const char wf_read_pause[] =
    "{\"name\":\"oa-read-pause\",\"steps\":[{\"name\":\"read\",\"op\":\"read_absorbance\","
    "\"on\":\"reader1\",\"duration_s\":90,\"params\":{\"wavelength_nm\":450,\"wells\":\"A1:B2\"}}],"
    "\"on_failure\":{\"action\":\"pause\"}}";

/* h_api with the technician's token (h_api sends none): the answer's JSON, or the test fails. */
static json_t *api(const char *method, const char *path, const char *body, int want)
{
    char *resp = NULL;
    int st =
        h_http(dmn.url, method, path,
               "Authorization: Bearer " TOK_TECH "\nContent-Type: application/json", body, &resp);
    if (st != want)
        fail_msg("%s %s: %d (wanted %d) %s", method, path, st, want, resp ? resp : "");
    json_t *doc = resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    return doc;
}

static bool reader_idle(void)
{
    json_t *st = api("GET", "/v1/instruments/reader1", NULL, 200);
    bool idle = strcmp(json_string_value(json_object_get(st, "state")) ?: "", "idle") == 0;
    json_decref(st);
    return idle;
}

/* A run paused by its policy after its read failed (the reader held while the fault is armed,
 * so the fault meets the read and not the reader's polling); its id into id. */
static void paused_run(char *id, size_t cap)
{
    json_decref(api("POST", "/v1/workflows", wf_read_pause, 201));
    bool idle = false;
    for (long long end = h_now_ms() + 30000; !(idle = reader_idle()) && h_now_ms() < end;)
        h_sleep_ms(50);
    assert_true(idle);
    json_decref(api("POST", "/v1/instruments/reader1/pause", NULL, 200));
    /* The shared queue takes a run of a workflow PostgreSQL has, once the writer set its schema
     * up: wait until every sink delivered what the store holds (a loaded machine takes a while). */
    bool delivered = false;
    for (long long end = h_now_ms() + 60000; !delivered && h_now_ms() < end;) {
        json_t *cell = api("GET", "/v1/cell", NULL, 200);
        json_t *sinks = json_object_get(cell, "sinks"), *sk;
        const char *name;
        delivered = json_object_size(sinks) > 0;
        json_object_foreach(sinks, name, sk) delivered &=
            !json_is_integer(json_object_get(sk, "depth")) ||
            json_integer_value(json_object_get(sk, "depth")) == 0;
        json_decref(cell);
        if (!delivered)
            h_sleep_ms(50);
    }
    assert_true(delivered);
    json_t *run = api("POST", "/v1/runs", "{\"workflow\":\"oa-read-pause\",\"plate\":\"P1\"}", 201);
    snprintf(id, cap, "%s", json_string_value(json_object_get(run, "id")) ?: "");
    json_decref(run);
    char path[96], state[32] = "";
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    /* The cell is in a shared queue: the run is the lab's (its document says lab_state) until
     * this cell claimed it; the fault is armed once the run waits here for the held reader. */
    bool held = false;
    for (long long end = h_now_ms() + 30000; !held && h_now_ms() < end;) {
        json_t *doc = api("GET", path, NULL, 200);
        held = !json_object_get(doc, "lab_state");
        json_decref(doc);
        if (!held)
            h_sleep_ms(50);
    }
    assert_true(held);
    assert_int_equal(h_sim_fault(&sim, "reader1", "error", 0), 0);
    h_sleep_ms(200);
    json_decref(api("POST", "/v1/instruments/reader1/resume", NULL, 200));
    for (long long end = h_now_ms() + 60000; strcmp(state, "paused") && h_now_ms() < end;) {
        json_t *doc = api("GET", path, NULL, 200);
        snprintf(state, sizeof state, "%s", json_string_value(json_object_get(doc, "state")) ?: "");
        json_decref(doc);
        h_sleep_ms(50);
    }
    assert_string_equal(state, "paused");
    assert_int_equal(h_sim_fault(&sim, "reader1", "clear", 0), 0);
}

static void test_every_route_matches_the_document(void **state)
{
    (void)state;
    const char *py = getenv("LAB_PYTHON3");
    char cmd[2048], out[65536], paused[64];
    paused_run(paused, sizeof paused);
    snprintf(cmd, sizeof cmd,
             "%s %s/tests/openapi/check_responses.py --url %s --viewer %s --technician %s "
             "--pipeline %s --admin %s --paused-run %s%s 2>&1",
             py && *py ? py : "python3", LAB_SOURCE_DIR_T, dmn.url, TOK_VIEWER, TOK_TECH, TOK_PIPE,
             TOK_ADMIN, paused, getenv("LAB_OPENAPI_DUMP") ? " --dump" : "");
    int rc = h_run(cmd, out, sizeof out);
    printf("%s", out);
    assert_int_equal(rc, 0);
    /* The paused run was a prompt (checked listed by the script), answered by its resume: the
     * prompt event says who and how. */
    char q[512];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM labloop.events WHERE kind = 'prompt' AND key = 'run:%s:paused' "
             "AND payload->>'open' = 'false' AND payload->>'by' = 'tom' AND payload->>'how' = "
             "'skip' AND payload->>'kind' = 'run.paused' AND payload->>'plate' = 'P1'",
             paused);
    assert_int_equal(h_pg_count_wait(&pg, q, 1, 20000), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_matches_the_document),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
