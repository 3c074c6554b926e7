/* The plate registry end to end: labloopd with real PostgreSQL and mosquitto drives labloop-sim's
 * STAR, Liconic and BioTek. A run's plate (a barcode with a space and a non-ASCII letter) is
 * followed from the STAR's deck into an incubator site, out, and onto the reader, in the API, the
 * local store's list, PostgreSQL (labloop.plates, labloop.plate_moves) and MQTT (plates/{barcode}
 * retained, plates/{barcode}/moves); GET /v1/runs?plate= finds its run. Plates loaded by hand,
 * with and without a barcode, and a plate whose load failed with its outcome unknown keep their
 * sites from the scheduler, which gives the next run another slot. `kill -9` during an
 * incubation leaves the plate in the incubator; during a load, in transit in the store and
 * unknown with a prompt after the restart (the Liconic cannot sense its slots), until a person
 * says where it is. Bad barcodes in paths and bodies are refused with what is wrong. */
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

static h_pg_t pg;
static h_mqtt_t mq;
static h_sim_t sim;
static char sections[4096];

#define SCALE "60"
/* "PL 1ä": a space and a two-byte letter, percent-encoded for a path or query */
#define BARCODE "PL 1\xc3\xa4"
#define BARCODE_URL "PL%201%C3%A4"

static const char wf_assay[] =
    "{\"name\":\"assay\",\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"star1\",\"duration_s\":120,"
    "\"params\":{\"reagent\":\"substrate\",\"volume_ul\":50,\"wells\":\"A1:H3\"}},"
    "{\"name\":\"incubate\",\"op\":\"incubate\",\"on\":\"inc1\",\"duration_s\":120,"
    "\"params\":{\"temperature_c\":37},\"start_within_s\":300},"
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"reader1\",\"duration_s\":90,"
    "\"params\":{\"wavelength_nm\":450},\"start_within_s\":120}],"
    "\"on_failure\":{\"action\":\"retry\",\"retries\":1}}";

/* An incubation alone on inc2 (a Liconic whose transfer station holds plate Q1 at start and is
 * fed by nothing else): a failed load pauses the run. */
static const char wf_hold[] = "{\"name\":\"hold\",\"steps\":["
                              "{\"name\":\"incubate\",\"op\":\"incubate\",\"on\":\"inc2\","
                              "\"duration_s\":60}],\"on_failure\":{\"action\":\"pause\"}}";

static int setup(void **state)
{
    (void)state;
    char dir[256];
    if (h_pg_start(&pg) || h_mqtt_start(&mq) || h_tempdir("lablabware", dir, sizeof dir))
        return -1;
    int rd = h_free_port();
    /* inc1's steps take 30 lab seconds (half a second here): a load is long enough to be caught
     * under way */
    snprintf(sections, sizeof sections,
             "[instrument inc1]\ndriver = liconic-stx\nrack_type = liconic_rack_17mm_22\nport = "
             "%s/inc1\nsim_step_seconds = 30\ncapacity = 8\nsim_from = star1\nsim_to = reader1\n"
             "[instrument inc2]\ndriver = liconic-stx\nrack_type = liconic_rack_17mm_22\nport = "
             "%s/inc2\nsim_plate = Q1\nsim_step_seconds = 2\ncapacity = 8\n"
             "[instrument star1]\ndriver = hamilton-star\nport = %s/star1\n"
             "sim_reagents = substrate,inhibitor\nsim_step_seconds = 2\n"
             "reagents = substrate,inhibitor\n"
             "[instrument reader1]\ndriver = biotek-synergy\nport = tcp://127.0.0.1:%d\n",
             dir, dir, dir, rd);
    char ini[5000];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = " SCALE "\nsim_seed = 3\nsim_noise = 0.001\n%s", sections);
    return h_sim_start(&sim, ini);
}

static int teardown(void **state)
{
    (void)state;
    h_sim_stop(&sim);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
    return 0;
}

static void start_daemon(h_daemon_t *d)
{
    char extra[4800];
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = " SCALE "\n%s", sections);
    assert_int_equal(h_daemon_start(d, &pg, &mq, extra), 0);
}

static void post_workflow(h_daemon_t *d, const char *wf)
{
    char *resp = NULL;
    int st = h_http(d->url, "POST", "/v1/workflows", "Content-Type: application/json", wf, &resp);
    if (st != 201 && st != 200)
        fail_msg("POST /v1/workflows: %d %s", st, resp ? resp : "");
    free(resp);
}

static char *submit(h_daemon_t *d, const char *body)
{
    json_t *doc = h_api(d, "POST", "/v1/runs", body, 201);
    char *id = strdup(json_string_value(json_object_get(doc, "id")));
    json_decref(doc);
    return id;
}

static const char *sval(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k)) ?: "";
}

static json_t *plate_get(h_daemon_t *d, const char *barcode_url)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/plates/%s", barcode_url);
    return h_api(d, "GET", path, NULL, 200);
}

/* Waits until the plate's stored location is in state at instrument (NULL: any); its document
 * with its moves. */
static json_t *plate_wait(h_daemon_t *d, const char *barcode_url, const char *state,
                          const char *instrument)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/plates/%s", barcode_url);
    json_t *p = NULL;
    for (long long end = h_now_ms() + 20000; h_now_ms() < end; h_sleep_ms(5)) {
        char *resp = NULL;
        int st = h_http(d->url, "GET", path, NULL, NULL, &resp);
        json_decref(p);
        p = st == 200 ? json_loads(resp, 0, NULL) : NULL;
        free(resp);
        json_t *loc = json_object_get(p, "location");
        const char *s = json_string_value(json_object_get(loc, "state"));
        const char *i = json_string_value(json_object_get(loc, "instrument"));
        if (s && strcmp(s, state) == 0 && (!instrument || (i && strcmp(i, instrument) == 0)))
            return p;
    }
    fail_msg("plate %s never %s %s: %s", barcode_url, state, instrument ? instrument : "",
             p ? json_dumps(p, 0) : "none");
    return NULL;
}

static json_t *loc_of(json_t *plate)
{
    return json_object_get(plate, "location");
}

static int site_is(json_t *o, int cassette, int slot)
{
    json_t *s = json_object_get(o, "site");
    return json_integer_value(json_object_get(s, "cassette")) == cassette &&
           json_integer_value(json_object_get(s, "slot")) == slot;
}

/* Waits until the run's step k has its site given (the scheduler took it); the run's doc. */
static json_t *wait_site(h_daemon_t *d, const char *id, int k)
{
    for (long long end = h_now_ms() + 30000; h_now_ms() < end; h_sleep_ms(10)) {
        json_t *doc = h_run_get(d, id);
        json_t *st = json_array_get(json_object_get(doc, "steps"), (size_t)k);
        if (json_object_get(st, "site"))
            return doc;
        json_decref(doc);
    }
    fail_msg("run %s step %d never took a site", id, k);
    return NULL;
}

/* Waits until the registry's list (the store) has the plate in location state; its document. */
static json_t *wait_listed(h_daemon_t *d, const char *barcode, const char *state, int ms)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/plates?location=%s&limit=500", state);
    for (long long end = h_now_ms() + ms; h_now_ms() < end; h_sleep_ms(3)) {
        json_t *list = h_api(d, "GET", path, NULL, 200);
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(list, "plates"), i,
                           p) if (strcmp(sval(p, "barcode"), barcode) == 0)
        {
            json_incref(p);
            json_decref(list);
            return p;
        }
        json_decref(list);
    }
    return NULL;
}

static bool prompt_open(h_daemon_t *d, const char *id)
{
    json_t *doc = h_api(d, "GET", "/v1/prompts", NULL, 200);
    size_t i;
    json_t *p;
    bool found = false;
    json_array_foreach(json_object_get(doc, "prompts"), i, p) found |=
        strcmp(sval(p, "id"), id) == 0;
    json_decref(doc);
    return found;
}

/* A manual action on an instrument; the status it answered. */
static int act(h_daemon_t *d, const char *inst, const char *body)
{
    char path[128], *resp = NULL;
    snprintf(path, sizeof path, "/v1/instruments/%s/actions", inst);
    int st = h_http(d->url, "POST", path, "Content-Type: application/json", body, &resp);
    free(resp);
    return st;
}

/* Waits until the instrument is idle (connected, nothing to do). */
static void wait_idle(h_daemon_t *d, const char *inst)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/instruments/%s", inst);
    for (long long end = h_now_ms() + 20000; h_now_ms() < end; h_sleep_ms(10)) {
        json_t *doc = h_api(d, "GET", path, NULL, 200);
        bool idle = strcmp(sval(doc, "state"), "idle") == 0;
        json_decref(doc);
        if (idle)
            return;
    }
    fail_msg("%s never idle", inst);
}

/* A reset after a handler error, and the instrument idle again. */
static void reset_idle(h_daemon_t *d, const char *inst)
{
    assert_int_equal(act(d, inst, "{\"action\":\"reset\"}"), 200);
    wait_idle(d, inst);
}

/* ---- a run's plate, tracked ---- */

static void test_run_plate_tracked(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon(&d);
    char root[128], filter[200];
    mix_topic_root(&d, root, sizeof root);
    snprintf(filter, sizeof filter, "%s/plates/#", root);
    h_sub_t *sub = h_sub_start(mq.uri, filter);
    assert_non_null(sub);
    post_workflow(&d, wf_assay);
    char *id = submit(&d, "{\"workflow\":\"assay\",\"plate\":\"" BARCODE "\"}");
    json_decref(h_run_wait(&d, id, "done", 90000));

    json_t *p = plate_get(&d, BARCODE_URL);
    assert_string_equal(sval(p, "barcode"), BARCODE);
    assert_string_equal(sval(loc_of(p), "state"), "at");
    assert_string_equal(sval(loc_of(p), "instrument"), "reader1");
    /* its run, and what went in: the STAR's substrate, 3 columns of 8 wells at 50 µL */
    assert_string_equal(json_string_value(json_array_get(json_object_get(p, "runs"), 0)), id);
    json_t *c = json_array_get(json_object_get(p, "contents"), 0);
    assert_string_equal(sval(c, "reagent"), "substrate");
    assert_string_equal(sval(c, "run"), id);
    assert_int_equal(json_integer_value(json_object_get(c, "wells")), 24);
    assert_true(json_number_value(json_object_get(c, "volume_ul")) > 24 * 50 - 0.001 &&
                json_number_value(json_object_get(c, "volume_ul")) < 24 * 50 + 0.001);
    /* deck -> a slot of inc1 -> inc1's transfer station -> the reader, each done */
    json_t *moves = json_object_get(p, "moves");
    assert_int_equal(json_array_size(moves), 4);
    static const char *const to[] = {"star1", "inc1", "inc1", "reader1"};
    int cassette = 0, slot = 0;
    for (size_t i = 0; i < 4; i++) {
        json_t *m = json_array_get(moves, i);
        assert_string_equal(sval(m, "outcome"), "done");
        assert_string_equal(sval(json_object_get(m, "to"), "instrument"), to[i]);
        assert_int_equal(json_integer_value(json_object_get(m, "seq")), (json_int_t)i + 1);
        assert_string_equal(sval(m, "run"), id);
    }
    json_t *in = json_object_get(json_array_get(moves, 1), "to");
    cassette = (int)json_integer_value(json_object_get(json_object_get(in, "site"), "cassette"));
    slot = (int)json_integer_value(json_object_get(json_object_get(in, "site"), "slot"));
    assert_true(cassette > 0 && slot > 0);
    assert_true(site_is(json_object_get(json_array_get(moves, 2), "from"), cassette, slot));
    /* the run's own document says the same site */
    json_t *run = h_run_get(&d, id);
    assert_true(site_is(json_array_get(json_object_get(run, "steps"), 1), cassette, slot));
    json_decref(run);
    json_decref(p);

    /* the store's list and the run list by plate */
    json_t *list = h_api(&d, "GET", "/v1/plates?location=at&instrument=reader1", NULL, 200);
    assert_int_equal(json_array_size(json_object_get(list, "plates")), 1);
    json_decref(list);
    list = h_api(&d, "GET", "/v1/runs?plate=" BARCODE_URL, NULL, 200);
    assert_int_equal(json_array_size(json_object_get(list, "runs")), 1);
    assert_string_equal(sval(json_array_get(json_object_get(list, "runs"), 0), "id"), id);
    json_decref(list);

    /* PostgreSQL */
    assert_int_equal(h_pg_count_waitf(&pg, 1, 20000,
                                      "select count(*) from labloop.plates where barcode = '%s' "
                                      "and state = 'at' and instrument = 'reader1'",
                                      BARCODE),
                     1);
    assert_int_equal(h_pg_count_waitf(&pg, 4, 20000,
                                      "select count(*) from labloop.plate_moves where barcode = "
                                      "'%s' and outcome = 'done' and run = '%s'",
                                      BARCODE, id),
                     4);

    /* MQTT: the moves, and the plate's newest document retained */
    int n = h_sub_wait(sub, 1000, 3000);
    h_msg_t *msgs;
    n = h_sub_messages(sub, &msgs);
    char t_plate[300], t_moves[300];
    snprintf(t_plate, sizeof t_plate, "%s/plates/%s", root, BARCODE);
    snprintf(t_moves, sizeof t_moves, "%s/plates/%s/moves", root, BARCODE);
    int nmoves = 0;
    json_t *last = NULL;
    for (int i = 0; i < n; i++) {
        if (strcmp(msgs[i].topic, t_moves) == 0)
            nmoves++;
        if (strcmp(msgs[i].topic, t_plate) == 0) {
            json_decref(last);
            last = json_loads(msgs[i].payload, 0, NULL);
        }
    }
    assert_int_equal(nmoves, 4);
    assert_non_null(last);
    assert_string_equal(sval(loc_of(last), "instrument"), "reader1");
    json_decref(last);
    h_sub_stop(sub);
    /* a late subscriber gets the retained document */
    sub = h_sub_start(mq.uri, t_plate);
    assert_true(h_sub_wait(sub, 1, 10000) >= 1);
    n = h_sub_messages(sub, &msgs);
    assert_true(msgs[0].retained);
    h_sub_stop(sub);

    /* the CLI: the table, and one plate */
    char out[8192], cmd[1024];
    snprintf(cmd, sizeof cmd, "LABLOOP_URL=%s '%s' plates 2>&1", d.url, getenv("LABLOOP_CLI"));
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    if (!strstr(out, BARCODE) || !strstr(out, "reader1"))
        fail_msg("labloop plates: %s", out);
    snprintf(cmd, sizeof cmd, "LABLOOP_URL=%s '%s' plates '" BARCODE "' 2>&1", d.url,
             getenv("LABLOOP_CLI"));
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    if (!strstr(out, "reader1") || !strstr(out, "substrate") || !strstr(out, "inc1"))
        fail_msg("labloop plates BARCODE: %s", out);
    free(id);
    h_daemon_destroy(&d);
}

/* ---- sites held by hand ---- */

static void test_manual_loads_keep_their_sites(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon(&d);
    post_workflow(&d, wf_hold);
    wait_idle(&d, "inc2");
    /* Q1 into cassette 1 slot 1 by hand, nobody saying which plate it is */
    assert_int_equal(
        act(&d, "inc2", "{\"action\":\"load\",\"params\":{\"cassette\":1,\"slot\":1}}"), 200);
    /* the list shows the slot held for a plate nobody named, and so does the CLI's table */
    json_t *list = h_api(&d, "GET", "/v1/plates?instrument=inc2", NULL, 200);
    json_t *held = json_array_get(json_object_get(list, "held_sites"), 0);
    assert_int_equal(json_array_size(json_object_get(list, "held_sites")), 1);
    assert_true(site_is(held, 1, 1));
    assert_string_equal(sval(held, "instrument"), "inc2");
    json_decref(list);
    char cmd[512], out[2048];
    snprintf(cmd, sizeof cmd, "LABLOOP_URL=%s '%s' plates 2>&1", d.url, getenv("LABLOOP_CLI"));
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    if (!strstr(out, "(no barcode)") || !strstr(out, "inc2 1/1"))
        fail_msg("labloop plates: %s", out);
    /* the next run's incubation does not get that slot; its load then fails (the transfer
     * station is empty) with its outcome unknown, so its plate's slot is in doubt */
    char *a = submit(&d, "{\"workflow\":\"hold\",\"plate\":\"HOLD-A\"}");
    json_t *run = wait_site(&d, a, 0);
    assert_true(site_is(json_array_get(json_object_get(run, "steps"), 0), 1, 2));
    json_decref(run);
    json_decref(h_run_wait(&d, a, "paused", 30000));
    json_t *p = plate_wait(&d, "HOLD-A", "unknown", "inc2");
    assert_string_equal(sval(loc_of(p), "state"), "unknown");
    assert_true(site_is(loc_of(p), 1, 2));
    json_decref(p);
    assert_true(prompt_open(&d, "plate:HOLD-A:unknown"));
    reset_idle(&d, "inc2");

    /* Q1 out by hand (slot 1 is free again), then into slot 3 under its barcode */
    assert_int_equal(
        act(&d, "inc2", "{\"action\":\"unload\",\"params\":{\"cassette\":1,\"slot\":1}}"), 200);
    /* by the CLI, which names the plate */
    snprintf(cmd, sizeof cmd,
             "LABLOOP_URL=%s '%s' action inc2 load cassette=1 slot=3 --plate Q1 2>&1", d.url,
             getenv("LABLOOP_CLI"));
    if (h_run(cmd, out, sizeof out) != 0)
        fail_msg("labloop action: %s", out);
    p = plate_wait(&d, "Q1", "at", "inc2");
    assert_true(site_is(loc_of(p), 1, 3));
    json_t *m0 = json_array_get(json_object_get(p, "moves"), 0);
    assert_string_equal(sval(m0, "action"), "load");
    assert_string_equal(sval(m0, "outcome"), "done");
    assert_true(site_is(json_object_get(m0, "to"), 1, 3));
    json_decref(p);
    /* slot 2 is in doubt and slot 3 holds Q1: the next run gets slot 1 */
    char *b = submit(&d, "{\"workflow\":\"hold\",\"plate\":\"HOLD-B\"}");
    run = wait_site(&d, b, 0);
    assert_true(site_is(json_array_get(json_object_get(run, "steps"), 0), 1, 1));
    json_decref(run);

    /* a person settles HOLD-A: it never went in; its prompt is answered */
    json_decref(h_api(&d, "POST", "/v1/plates/HOLD-A/location",
                      "{\"outside\":true,\"reason\":\"found on the bench\"}", 200));
    p = plate_get(&d, "HOLD-A");
    assert_string_equal(sval(loc_of(p), "state"), "outside");
    json_t *moves = json_object_get(p, "moves");
    json_t *m = json_array_get(moves, json_array_size(moves) - 1);
    assert_string_equal(sval(m, "action"), "located");
    assert_string_equal(sval(m, "reason"), "found on the bench");
    json_decref(p);
    assert_false(prompt_open(&d, "plate:HOLD-A:unknown"));
    /* another plate's site is not given to it */
    json_t *e = h_api(&d, "POST", "/v1/plates/HOLD-A/location",
                      "{\"instrument\":\"inc2\",\"site\":{\"cassette\":1,\"slot\":3},"
                      "\"reason\":\"x\"}",
                      409);
    json_decref(e);
    free(a);
    free(b);
    h_daemon_destroy(&d);
}

/* ---- kill -9 ---- */

static void test_kill9_during_incubation(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon(&d);
    post_workflow(&d, wf_assay);
    char *id = submit(&d, "{\"workflow\":\"assay\",\"plate\":\"K9-INC\"}");
    json_t *p = wait_listed(&d, "K9-INC", "at", 60000);
    for (long long end = h_now_ms() + 60000;
         p && strcmp(sval(loc_of(p), "instrument"), "inc1") != 0 && h_now_ms() < end;) {
        json_decref(p);
        p = wait_listed(&d, "K9-INC", "at", 60000);
    }
    assert_non_null(p);
    assert_string_equal(sval(loc_of(p), "instrument"), "inc1");
    json_decref(p);
    h_daemon_kill9(&d);
    assert_int_equal(h_daemon_restart(&d), 0);
    /* still in its slot after the restart, and the run goes on from there */
    p = plate_get(&d, "K9-INC");
    assert_string_equal(sval(loc_of(p), "instrument"), "inc1");
    assert_true(json_object_get(loc_of(p), "site") != NULL);
    json_decref(p);
    json_decref(h_run_wait(&d, id, "done", 90000));
    p = plate_get(&d, "K9-INC");
    assert_string_equal(sval(loc_of(p), "instrument"), "reader1");
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(p, "moves"), i, m)
        assert_string_equal(sval(m, "outcome"), "done");
    json_decref(p);
    free(id);
    h_daemon_destroy(&d);
}

static void test_kill9_during_load(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon(&d);
    post_workflow(&d, wf_assay);
    char *id = submit(&d, "{\"workflow\":\"assay\",\"plate\":\"K9-LOAD\"}");
    /* the load's intent is in the store (the list reads it) while the Liconic works */
    json_t *p = wait_listed(&d, "K9-LOAD", "in_transit", 60000);
    assert_non_null(p);
    assert_string_equal(sval(loc_of(p), "instrument"), "inc1");
    assert_string_equal(sval(json_object_get(loc_of(p), "from"), "instrument"), "star1");
    json_decref(p);
    h_daemon_kill9(&d);
    assert_int_equal(h_daemon_restart(&d), 0);
    /* nobody can tell whether it went in: unknown, its slot kept, a person asked */
    p = plate_wait(&d, "K9-LOAD", "unknown", "inc1");
    json_t *loc = loc_of(p);
    assert_string_equal(sval(loc, "instrument"), "inc1");
    assert_non_null(json_object_get(loc, "site"));
    assert_non_null(strstr(sval(loc, "why"), "stopped while load"));
    assert_string_equal(sval(json_object_get(loc, "last_known"), "instrument"), "star1");
    json_t *moves = json_object_get(p, "moves");
    assert_string_equal(sval(json_array_get(moves, json_array_size(moves) - 1), "outcome"),
                        "unknown");
    json_decref(p);
    assert_true(prompt_open(&d, "plate:K9-LOAD:unknown"));
    /* the run goes on (its load again finds the slot taken: the first one went in) and ends;
     * the plate stays unknown until a person says where it is */
    bool over = false;
    for (long long end = h_now_ms() + 90000; !over && h_now_ms() < end; h_sleep_ms(20)) {
        json_t *run = h_run_get(&d, id);
        const char *st = sval(run, "state");
        over = strcmp(st, "done") == 0 || strcmp(st, "failed") == 0;
        json_decref(run);
    }
    assert_true(over);
    p = plate_get(&d, "K9-LOAD");
    assert_string_equal(sval(loc_of(p), "state"), "unknown");
    json_decref(p);
    json_decref(h_api(&d, "POST", "/v1/plates/K9-LOAD/location",
                      "{\"instrument\":\"reader1\",\"reason\":\"seen on the reader\"}", 200));
    p = plate_get(&d, "K9-LOAD");
    assert_string_equal(sval(loc_of(p), "state"), "at");
    assert_string_equal(sval(loc_of(p), "instrument"), "reader1");
    json_decref(p);
    assert_false(prompt_open(&d, "plate:K9-LOAD:unknown"));
    free(id);
    h_daemon_destroy(&d);
}

/* ---- bad barcodes ---- */

static void expect_problem(h_daemon_t *d, const char *method, const char *path, const char *body,
                           int want, const char *needle)
{
    json_t *e = h_api(d, method, path, body, want);
    char *text = json_dumps(e, 0);
    if (!strstr(text, needle))
        fail_msg("%s %s: %s has no \"%s\"", method, path, text, needle);
    free(text);
    json_decref(e);
}

static void test_bad_barcodes(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon(&d);
    char path[600];
    /* 65 characters, each two bytes: too long though 130 bytes would fit 64 four-byte ones */
    char longest[512] = "", *q = longest;
    for (int i = 0; i < 65; i++)
        q += sprintf(q, "%%C3%%A4");
    snprintf(path, sizeof path, "/v1/plates/%s", longest);
    expect_problem(&d, "GET", path, NULL, 400, "longer than 64 characters");
    expect_problem(&d, "GET", "/v1/plates/%FF%FE", NULL, 400, "not well-formed UTF-8");
    expect_problem(&d, "GET", "/v1/plates/A%01B", NULL, 400, "control character");
    expect_problem(&d, "POST", "/v1/plates/%C3%28/location", "{\"outside\":true,\"reason\":\"x\"}",
                   400, "not well-formed UTF-8");
    /* 64 characters is a barcode: not found, not refused */
    snprintf(path, sizeof path, "/v1/plates/%.*s", 6 * 64, longest);
    expect_problem(&d, "GET", path, NULL, 404, "no plate");
    expect_problem(&d, "GET", "/v1/plates?location=lost", NULL, 400, "query parameter location");
    expect_problem(&d, "GET", "/v1/plates?colour=red", NULL, 400, "unknown");
    /* in an action's body: the schema's length, and what cannot be on a label */
    char body[512];
    snprintf(body, sizeof body, "{\"action\":\"status\",\"plate\":\"%065d\"}", 0);
    expect_problem(&d, "POST", "/v1/instruments/inc2/actions", body, 422, "/plate");
    expect_problem(&d, "POST", "/v1/instruments/inc2/actions",
                   "{\"action\":\"status\",\"plate\":\"A\\u0007B\"}", 422, "control character");
    expect_problem(&d, "POST", "/v1/instruments/inc2/actions",
                   "{\"action\":\"status\",\"plate\":\"\"}", 422, "/plate");
    /* a location body that says nothing sure */
    expect_problem(&d, "POST", "/v1/plates/NOPE/location", "{\"outside\":true}", 422, "reason");
    expect_problem(&d, "POST", "/v1/plates/NOPE/location",
                   "{\"outside\":true,\"instrument\":\"inc2\",\"reason\":\"x\"}", 422,
                   "either instrument");
    h_daemon_destroy(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_plate_tracked),
        cmocka_unit_test(test_manual_loads_keep_their_sites),
        cmocka_unit_test(test_kill9_during_incubation),
        cmocka_unit_test(test_kill9_during_load),
        cmocka_unit_test(test_bad_barcodes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
