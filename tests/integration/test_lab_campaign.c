/* A campaign across cells ([lab] shared_queue = on): two labloopd on one PostgreSQL, the campaign
 * created on the cell without a plate reader (B), so every plate runs on the other (A, the mix
 * cell of labloop-sim instruments). The plates' results come back to B, the built-in learner
 * proposes from them, and the campaign completes. `kill -9` of B while A runs one of its plates,
 * and B restarted: that plate's result still arrives, once (labloop.results has one row per
 * candidate). */
#include "tests/integration/mix_cell.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define SCALE "60"
#define LEASE_S 4

/* substrate 0..100 uL and inhibitor 0..50 uL; controls in column 12; the built-in learner */
static const char campaign[] =
    "{\"id\":\"xc1\",\"workflow\":\"mix\",\"objective\":{\"measure\":\"absorbance\","
    "\"direction\":\"maximize\"},\"parameters\":[{\"name\":\"substrate\",\"max\":100},"
    "{\"name\":\"inhibitor\",\"max\":50}],\"layout\":{\"replicates\":2,"
    "\"positive\":{\"wells\":[\"A12\",\"B12\",\"C12\",\"D12\"],\"volumes\":{\"substrate\":80}},"
    "\"negative\":{\"wells\":[\"E12\",\"F12\",\"G12\",\"H12\"]}},"
    "\"batch_size\":4,\"budget\":{\"candidates\":12},"
    "\"learner\":{\"kind\":\"builtin\",\"seed\":3,\"initial\":4}}";

static h_pg_t pg;
static h_sim_t sim;
static h_daemon_t a, b;
static bool a_up, b_up;
static char dir[256], sec_a[4096];

static int setup(void **state)
{
    (void)state;
    if (h_pg_start(&pg) || h_tempdir("labxc", dir, sizeof dir))
        return -1;
    mix_cell_sections(sec_a, sizeof sec_a, dir, h_free_port());
    char ini[5000];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = " SCALE "\nsim_seed = 5\nsim_noise = 0.002\n%s", sec_a);
    return h_sim_start(&sim, ini);
}

static int teardown(void **state)
{
    (void)state;
    h_sim_stop(&sim);
    h_pg_destroy(&pg);
    h_rmtree(dir);
    return 0;
}

static int cells_down(void **state)
{
    (void)state;
    if (a_up)
        h_daemon_destroy(&a);
    if (b_up)
        h_daemon_destroy(&b);
    a_up = b_up = false;
    /* Each test starts with an empty queue: a run a test left queued would be claimed by the next
     * test's cells (and its workflow stored by the claim before the test stores it). */
    char out[64];
    h_pg_query(&pg,
               "UPDATE labloop.queue SET state = 'cancelled', cell = NULL WHERE state IN "
               "('queued', 'claimed')",
               out, sizeof out);
    return 0;
}

static void start_cell(h_daemon_t *d, const char *sections)
{
    *(d == &a ? &a_up : &b_up) = true;
    char extra[5000];
    snprintf(extra, sizeof extra,
             "[labloop]\ntime_scale = " SCALE "\n[lab]\nshared_queue = on\nlease = %d\n"
             "heartbeat = 1\n%s",
             LEASE_S, sections);
    assert_int_equal(h_daemon_start(d, &pg, NULL, extra), 0);
}

/* counts in the test's PostgreSQL, the SQL formatted */
#define count(...) h_pg_countf(&pg, __VA_ARGS__)

static const char *sval(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k)) ?: "";
}

static void test_campaign_plates_run_on_another_cell(void **state)
{
    (void)state;
    char ca[64], cb[64];
    start_cell(&a, sec_a);
    start_cell(&b, ""); /* no instruments: nothing of a plate can run here */
    h_daemon_cell_name(&a, ca, sizeof ca);
    h_daemon_cell_name(&b, cb, sizeof cb);
    json_decref(h_api(&a, "POST", "/v1/workflows", mix_workflow, 201));
    json_decref(h_api(&b, "POST", "/v1/workflows", mix_workflow, 201));
    assert_int_equal(
        h_pg_count_wait(&pg, "SELECT count(*) FROM labloop.cells WHERE state = 'up'", 2, 30000), 2);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "SELECT count(DISTINCT cell) FROM labloop.workflows WHERE "
                                     "name = 'mix'",
                                     2, 30000),
                     2);

    /* the first plate is in the lab's queue and A holds it (its incubator paused, the plan
     * waits); B, its campaign's cell, is killed, A runs the plate while B is down, and B comes
     * back after the plate ended */
    json_decref(h_api(&a, "POST", "/v1/instruments/inc1/pause", NULL, 200));
    json_decref(h_api(&b, "POST", "/v1/campaigns", campaign, 201));
    assert_int_equal(h_pg_count_wait(&pg,
                                     "SELECT least(count(*), 1) FROM labloop.queue WHERE "
                                     "workflow = 'mix' AND state = 'claimed'",
                                     1, 60000),
                     1);
    h_daemon_kill9(&b);
    assert_int_equal(count("SELECT count(*) FROM labloop.queue WHERE workflow = 'mix' AND state "
                           "= 'finished'"),
                     0);
    json_decref(h_api(&a, "POST", "/v1/instruments/inc1/resume", NULL, 200));
    assert_int_equal(h_pg_count_wait(&pg,
                                     "SELECT least(count(*), 1) FROM labloop.queue WHERE "
                                     "workflow = 'mix' AND state = 'finished'",
                                     1, 120000),
                     1);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "SELECT count(*) FROM labloop.results WHERE campaign = 'xc1'",
                                     0, 5000),
                     0);
    assert_int_equal(h_daemon_restart(&b), 0);

    /* the campaign completes on B from results of plates A ran */
    json_t *c = NULL;
    for (long long end = h_now_ms() + 400000; h_now_ms() < end; h_sleep_ms(250)) {
        json_decref(c);
        c = h_api(&b, "GET", "/v1/campaigns/xc1", NULL, 200);
        if (strcmp(sval(c, "state"), "done") == 0)
            break;
    }
    char *text = json_dumps(c, JSON_COMPACT);
    if (strcmp(sval(c, "state"), "done") != 0)
        fail_msg("campaign not done: %s", text);
    free(text);
    assert_non_null(strstr(sval(c, "reason"), "budget of 12 candidates"));
    assert_non_null(json_object_get(c, "best"));
    json_decref(c);
    json_t *cands = h_api(&b, "GET", "/v1/campaigns/xc1/candidates", NULL, 200);
    json_t *all = json_object_get(cands, "candidates");
    assert_int_equal(json_array_size(all), 12);
    size_t i;
    json_t *x;
    json_array_foreach(all, i, x) assert_string_equal(sval(x, "state"), "completed");
    json_decref(cands);

    /* every plate ran once, on A; B ran nothing */
    long long plates = count("SELECT count(*) FROM labloop.queue WHERE workflow = 'mix'");
    assert_true(plates >= 3);
    assert_int_equal(count("SELECT count(*) FROM labloop.queue WHERE workflow = 'mix' AND "
                           "state = 'finished' AND cell = '%s' AND claims = 1",
                           ca),
                     plates);
    assert_int_equal(count("SELECT count(*) FROM labloop.runs WHERE cell = '%s'", cb), 0);
    /* one result per candidate, though the first plate's end reached B only after its restart */
    assert_int_equal(h_pg_count_wait(&pg,
                                     "SELECT count(*) FROM labloop.results WHERE campaign = "
                                     "'xc1'",
                                     12, 30000),
                     12);
    assert_int_equal(count("SELECT count(DISTINCT candidate) FROM labloop.results WHERE "
                           "campaign = 'xc1' AND cell = '%s'",
                           cb),
                     12);
    h_sleep_ms(1500); /* a second end, if any were counted, would be in PostgreSQL by now */
    assert_int_equal(count("SELECT count(*) FROM labloop.results WHERE campaign = 'xc1'"), 12);
}

/* Paused, a campaign takes its plates no cell holds out of the lab's queue; resumed, it lays
 * their candidates on a new plate. B alone: no cell can run a plate, every one stays queued. */
static void test_pause_takes_plates_out_of_the_queue(void **state)
{
    (void)state;
    start_cell(&b, "");
    json_decref(h_api(&b, "POST", "/v1/workflows", mix_workflow, 201));
    assert_int_equal(
        h_pg_count_wait(&pg, "SELECT least(count(*), 1) FROM labloop.workflows WHERE name = 'mix'",
                        1, 30000),
        1);
    char doc[2000];
    snprintf(doc, sizeof doc, "%s", campaign);
    memcpy(strstr(doc, "xc1"), "xp1", 3);
    json_decref(h_api(&b, "POST", "/v1/campaigns", doc, 201));
    const char *mine = "SELECT count(*) FROM labloop.queue WHERE doc->'params'->>'campaign' = "
                       "'xp1'";
    char sql[300];
    snprintf(sql, sizeof sql, "%s AND state = 'queued'", mine);
    assert_int_equal(h_pg_count_wait(&pg, sql, 1, 30000), 1);
    json_decref(h_api(&b, "POST", "/v1/campaigns/xp1/pause", NULL, 200));
    snprintf(sql, sizeof sql, "%s AND state = 'cancelled'", mine);
    assert_int_equal(h_pg_count_wait(&pg, sql, 1, 30000), 1);
    json_t *cands = NULL;
    for (long long end = h_now_ms() + 30000; h_now_ms() < end; h_sleep_ms(100)) {
        json_decref(cands);
        cands = h_api(&b, "GET", "/v1/campaigns/xp1/candidates?state=candidate", NULL, 200);
        if (json_array_size(json_object_get(cands, "candidates")) == 4)
            break;
    }
    assert_int_equal(json_array_size(json_object_get(cands, "candidates")), 4);
    json_decref(cands);
    json_decref(h_api(&b, "POST", "/v1/campaigns/xp1/resume", NULL, 200));
    /* the first batch on a new plate, queued (the learner may queue its next batch beside) */
    snprintf(sql, sizeof sql,
             "%s AND state = 'queued' AND doc->>'plate' = 'xp1-P0002' AND (SELECT count(*) FROM "
             "jsonb_each(doc->'params'->'design'->'wells')) = 16",
             mine);
    assert_int_equal(h_pg_count_wait(&pg, sql, 1, 30000), 1);
    json_t *staged = h_api(&b, "GET", "/v1/campaigns/xp1/candidates?state=staged", NULL, 200);
    size_t i;
    json_t *x;
    int first = 0;
    json_array_foreach(json_object_get(staged, "candidates"), i, x)
    {
        if (strcmp(sval(x, "batch"), "gp-0001") != 0)
            continue;
        first++;
        assert_string_equal(sval(x, "plate"), "xp1-P0002");
    }
    assert_int_equal(first, 4);
    json_decref(staged);
}

/* The campaign's own cell able to run its plates claims them from the lab's queue like any
 * cell: each plate's end reaches the campaign twice (its scheduler, and labloop_run_done) and
 * counts once. */
static void test_own_cell_counts_once(void **state)
{
    (void)state;
    char ca[64];
    start_cell(&a, sec_a);
    h_daemon_cell_name(&a, ca, sizeof ca);
    json_decref(h_api(&a, "POST", "/v1/workflows", mix_workflow, 201));
    char doc[2000];
    snprintf(doc, sizeof doc, "%s", campaign);
    memcpy(strstr(doc, "xc1"), "xo1", 3);
    memcpy(strstr(doc, "\"candidates\":12"), "\"candidates\": 8", 15);
    json_decref(h_api(&a, "POST", "/v1/campaigns", doc, 201));
    json_t *c = NULL;
    for (long long end = h_now_ms() + 300000; h_now_ms() < end; h_sleep_ms(250)) {
        json_decref(c);
        c = h_api(&a, "GET", "/v1/campaigns/xo1", NULL, 200);
        if (strcmp(sval(c, "state"), "done") == 0)
            break;
    }
    assert_string_equal(sval(c, "state"), "done");
    json_decref(c);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "SELECT count(*) FROM labloop.results WHERE campaign = "
                                     "'xo1'",
                                     8, 30000),
                     8);
    assert_int_equal(count("SELECT count(DISTINCT candidate) FROM labloop.results WHERE "
                           "campaign = 'xo1'"),
                     8);
    assert_int_equal(count("SELECT count(*) FROM labloop.queue WHERE doc->'params'->>'campaign' "
                           "= 'xo1' AND (state <> 'finished' OR cell <> '%s')",
                           ca),
                     0);
    json_t *cands = h_api(&a, "GET", "/v1/campaigns/xo1/candidates?state=completed", NULL, 200);
    assert_int_equal(json_array_size(json_object_get(cands, "candidates")), 8);
    json_decref(cands);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_campaign_plates_run_on_another_cell, cells_down),
        cmocka_unit_test_teardown(test_pause_takes_plates_out_of_the_queue, cells_down),
        cmocka_unit_test_teardown(test_own_cell_counts_once, cells_down),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
