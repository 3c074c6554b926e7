/* The closed loop end to end: labloopd with real PostgreSQL and mosquitto, labloop-sim's STAR,
 * Liconic and BioTek. A campaign is created; batches come over HTTP and MQTT (MQTT 5 response
 * topics, and reply_to) and are answered with the accepted ids or every problem; candidates are
 * laid out on plates around the controls, dispensed well by well, read, normalised against the
 * controls and returned as one result each, in PostgreSQL and on MQTT, with a done event per
 * batch. A plate under the QC threshold re-runs its candidates once and then fails them; the
 * breaker pauses the campaign; a newer batch makes pending candidates stale; new scores
 * re-prioritise plates; and a kill -9 loses nothing. */
#include "tests/harness/harness.h"
#include "tests/integration/mix_cell.h"

#include <jansson.h>
#include <math.h>
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

/* substrate 0..100 uL and inhibitor 0..50 uL; controls in column 12. */
#define CAMPAIGN(ID, EXTRA)                                                                        \
    "{\"id\":\"" ID "\",\"workflow\":\"mix\",\"objective\":{\"measure\":\"absorbance\","           \
    "\"direction\":\"maximize\"},\"parameters\":[{\"name\":\"substrate\",\"max\":100},"            \
    "{\"name\":\"inhibitor\",\"max\":50}],\"layout\":{\"replicates\":2,"                           \
    "\"positive\":{\"wells\":[\"A12\",\"B12\",\"C12\",\"D12\"],\"volumes\":{\"substrate\":80}},"   \
    "\"negative\":{\"wells\":[\"E12\",\"F12\",\"G12\",\"H12\"]}}" EXTRA "}"

static int setup(void **state)
{
    (void)state;
    char dir[256];
    if (h_pg_start(&pg) || h_mqtt_start(&mq) || h_tempdir("labcamp", dir, sizeof dir))
        return -1;
    int rd = h_free_port();
    mix_cell_sections(sections, sizeof sections, dir, rd);
    char ini[5000];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = " SCALE "\nsim_seed = 5\nsim_noise = 0.002\n%s", sections);
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

/* The test's daemon, stopped by the teardown when a failed assertion left it running (it would
 * hold the simulator's instruments against the next test's daemon). */
static h_daemon_t *live;

static int daemon_teardown(void **state)
{
    (void)state;
    if (live)
        h_daemon_destroy(live);
    live = NULL;
    return 0;
}

/* Prices: what each plate run and candidate cost is checked against them. */
#define COSTS                                                                                      \
    "[costs]\ncurrency = EUR\nplate = 2.5\ntip = 0.1\ninstrument_hour = 6\n"                       \
    "instrument.reader1 = 36\nreagent.substrate = 0.01\n"

static void start_daemon(h_daemon_t *d)
{
    char extra[4800];
    live = d;
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = " SCALE "\n%s%s", sections, COSTS);
    assert_int_equal(h_daemon_start(d, &pg, &mq, extra), 0);
}

static const char *sval(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k)) ?: "";
}

static void setup_campaign(h_daemon_t *d, const char *campaign)
{
    start_daemon(d);
    json_decref(h_api(d, "POST", "/v1/workflows", mix_workflow, 201));
    json_decref(h_api(d, "POST", "/v1/campaigns", campaign, 201));
}

/* Candidates of a campaign in a state. */
static int count_state(h_daemon_t *d, const char *campaign, const char *state)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/campaigns/%s/candidates?state=%s", campaign, state);
    json_t *doc = h_api(d, "GET", path, NULL, 200);
    int n = (int)json_array_size(json_object_get(doc, "candidates"));
    json_decref(doc);
    return n;
}

static void wait_state(h_daemon_t *d, const char *campaign, const char *state, int n, int ms)
{
    int got = -1;
    for (long long end = h_now_ms() + ms; h_now_ms() < end; h_sleep_ms(50))
        if ((got = count_state(d, campaign, state)) == n)
            return;
    char path[160];
    snprintf(path, sizeof path, "/v1/campaigns/%s/candidates", campaign);
    json_t *doc = h_api(d, "GET", path, NULL, 200);
    char *text = json_dumps(doc, JSON_COMPACT);
    fail_msg("campaign %s: %d candidates %s, wanted %d: %s", campaign, got, state, n, text);
}

/* Each row of `labloop candidates` against the API's candidate: its plate (the result's, once
 * completed), and its params as the whole rest of the line when it has no reason. */
static void cli_candidates_match(h_daemon_t *d, const char *campaign, const char *table)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/campaigns/%s/candidates", campaign);
    json_t *doc = h_api(d, "GET", path, NULL, 200);
    int rows = 0;
    for (const char *line = strchr(table, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        char id[64], st[32], batch[64], plate[80], rest[512] = "";
        double score;
        int used = 0;
        if (sscanf(line + 1, "%63s %31s %63s %79s %lf %n", id, st, batch, plate, &score, &used) < 5)
            fail_msg("labloop candidates: a row that does not read: %s", line + 1);
        sscanf(line + 1 + used, "%511[^\n]", rest);
        json_t *k = NULL, *x;
        size_t i;
        json_array_foreach(json_object_get(doc, "candidates"), i,
                           x) if (strcmp(sval(x, "id"), id) == 0) k = x;
        if (!k)
            fail_msg("labloop candidates: %s is not a candidate of %s", id, campaign);
        const char *want =
            json_string_value(json_object_get(json_object_get(k, "result"), "plate"));
        if (!want)
            want = json_string_value(json_object_get(k, "plate"));
        if (!want || strcmp(plate, want) != 0)
            fail_msg("labloop candidates: %s on plate %s, the API says %s", id, plate,
                     want ? want : "none");
        char *params =
            json_dumps(json_object_get(k, "params"), JSON_COMPACT | JSON_REAL_PRECISION(8));
        if (!json_object_get(k, "reason") && strcmp(rest, params) != 0)
            fail_msg("labloop candidates: %s params '%s', wanted '%s'", id, rest, params);
        free(params);
        rows++;
    }
    assert_true(rows > 0);
    json_decref(doc);
}

/* Lines of the daemon's log that hold needle. */
static int log_count(const h_daemon_t *d, const char *needle)
{
    return h_file_count(d->log, needle);
}

static json_t *campaign_get(h_daemon_t *d, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/campaigns/%s", id);
    return h_api(d, "GET", path, NULL, 200);
}

/* The simulator's model for a well (sim/world.c): the signal of substrate then inhibitor,
 * which normalised against positive (80 uL substrate) and negative (nothing) controls is the
 * signal over the positive control's. */
static double expected(double substrate, double inhibitor)
{
    double pos = 1.2 * 80 / (80 + 20.0);
    return (1.2 * substrate / (substrate + 20) + 0.6 * inhibitor / (inhibitor + 20)) / pos;
}

/* ---- a campaign over HTTP: bad documents, a batch, results everywhere ---- */

/* Each result's cost is its wells' share of its plate run's cost; the run's cost is the sum of
 * its parts at the prices of COSTS, each part recomputed here from the quantities beside it;
 * PostgreSQL's run_costs and campaign_costs add up the same. */
static void check_costs(h_daemon_t *d, const char *campaign)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/campaigns/%s/results", campaign);
    json_t *r = h_api(d, "GET", path, NULL, 200);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(r, "results"), i, x)
    {
        json_t *c = json_object_get(x, "cost");
        if (!c)
            fail_msg("result %s has no cost", sval(x, "candidate"));
        assert_string_equal(sval(c, "currency"), "EUR");
        json_t *run = h_run_get(d, sval(x, "run"));
        json_t *rc = json_object_get(run, "cost");
        double total = json_number_value(json_object_get(rc, "total"));
        if (json_number_value(json_object_get(c, "plate_run")) != total)
            fail_msg("result %s: plate run cost %.17g, the run says %.17g: %s",
                     sval(x, "candidate"), json_number_value(json_object_get(c, "plate_run")),
                     total, json_dumps(run, JSON_COMPACT));
        int wells = (int)json_integer_value(json_object_get(c, "wells"));
        int used = (int)json_integer_value(json_object_get(c, "plate_wells"));
        assert_int_equal(wells, 2); /* two replicates */
        assert_true(used > wells);
        /* to a millionth of the currency */
        assert_true(fabs(json_number_value(json_object_get(c, "cost")) - total * wells / used) <=
                    5.000001e-7);
        /* the run's total from its parts */
        double parts = json_number_value(json_object_get(rc, "plate"));
        assert_true(parts == 2.5);
        size_t k;
        json_t *p;
        bool reader = false;
        json_array_foreach(json_object_get(rc, "instruments"), k, p)
        {
            double per = strcmp(sval(p, "instrument"), "reader1") == 0 ? 36 : 6;
            reader |= per == 36;
            assert_true(json_number_value(json_object_get(p, "per_hour")) == per);
            double s = json_number_value(json_object_get(p, "seconds"));
            assert_true(s > 0);
            assert_true(fabs(json_number_value(json_object_get(p, "cost")) - s / 3600 * per) <=
                        5.000001e-7);
            parts += json_number_value(json_object_get(p, "cost"));
        }
        assert_true(reader);
        json_t *tips = json_object_get(rc, "tips");
        assert_true(json_integer_value(json_object_get(tips, "count")) >= 8);
        parts += json_number_value(json_object_get(tips, "cost"));
        bool substrate = false;
        json_array_foreach(json_object_get(rc, "reagents"), k, p)
        {
            double per = strcmp(sval(p, "reagent"), "substrate") == 0 ? 0.01 : 0;
            substrate |= per > 0;
            assert_true(json_number_value(json_object_get(p, "per_ul")) == per);
            assert_true(json_number_value(json_object_get(p, "ul")) > 0);
            parts += json_number_value(json_object_get(p, "cost"));
        }
        assert_true(substrate);
        assert_true(fabs(parts - total) < 1e-9);
        json_decref(run);
    }
    json_decref(r);
    /* PostgreSQL adds up the same */
    assert_true(h_pg_count_waitf(&pg, 1, 20000,
                                 "SELECT count(*) FROM labloop.campaign_costs WHERE campaign = "
                                 "'%s' AND candidates > 0",
                                 campaign) == 1);
    assert_int_equal(h_pg_countf(&pg,
                                 "SELECT count(*) FROM labloop.run_costs WHERE campaign = '%s' "
                                 "AND abs(total - (plate_cost + instrument_cost + tip_cost + "
                                 "reagent_cost)) > 1e-9",
                                 campaign),
                     0);
    assert_int_equal(h_pg_countf(&pg,
                                 "SELECT count(*) FROM labloop.campaign_costs WHERE campaign = "
                                 "'%s' AND abs(per_candidate * candidates - total) < 1e-9 AND "
                                 "tips > 0 AND reagent_ul > 0 AND instrument_minutes > 0",
                                 campaign),
                     1);
}

static void test_batch_over_http(void **state)
{
    (void)state;
    static h_daemon_t d;
    start_daemon(&d);
    json_decref(h_api(&d, "POST", "/v1/workflows", mix_workflow, 201));
    h_sub_t *res = h_sub_start(mq.uri, "labloop/v1/lab/+/campaigns/+/results");
    h_sub_t *done = h_sub_start(mq.uri, "labloop/v1/lab/+/campaigns/+/batches/+/done");

    /* a campaign with every kind of problem is refused, each named */
    json_t *bad = h_api(&d, "POST", "/v1/campaigns",
                        "{\"id\":\"bad\",\"workflow\":\"nope\",\"objective\":{\"measure\":"
                        "\"absorbance\",\"direction\":\"maximize\"},\"parameters\":[{\"name\":"
                        "\"substrate\",\"min\":50,\"max\":10},{\"name\":\"substrate\",\"max\":5}],"
                        "\"layout\":{\"positive\":{\"wells\":[\"A13\",\"B12\"],\"volumes\":{"
                        "\"water\":5}},\"negative\":{\"wells\":[\"B12\",\"C12\"]}}}",
                        422);
    char *text = json_dumps(bad, JSON_COMPACT);
    const char *want[] = {"/workflow",
                          "/parameters/0",
                          "/parameters/1",
                          "/layout/positive/wells/0",
                          "/layout/negative/wells/0",
                          "/layout/positive/volumes/water"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(text, want[i]))
            fail_msg("no error at %s: %s", want[i], text);
    free(text);
    json_decref(bad);
    json_decref(h_api(&d, "GET", "/v1/campaigns/bad", NULL, 404));

    json_t *c =
        h_api(&d, "POST", "/v1/campaigns", CAMPAIGN("mix1", ",\"budget\":{\"candidates\":6}"), 201);
    assert_string_equal(sval(c, "state"), "active");
    json_decref(c);
    /* the same document again is the same campaign; another one under its id is a conflict */
    json_decref(h_api(&d, "POST", "/v1/campaigns",
                      CAMPAIGN("mix1", ",\"budget\":{\"candidates\":6}"), 200));
    json_decref(h_api(&d, "POST", "/v1/campaigns", CAMPAIGN("mix1", ""), 409));

    /* a bad batch: every problem at once, nothing accepted */
    json_t *rej = h_api(
        &d, "POST", "/v1/campaigns/mix1/batches",
        "{\"batch\":\"b0\",\"campaign\":\"other\",\"model\":{\"name\":\"m\",\"version\":1},"
        "\"candidates\":[{\"id\":\"c1\",\"params\":{\"substrate\":150,\"inhibitor\":5},"
        "\"score\":1},"
        "{\"id\":\"c1\",\"params\":{\"substrate\":10,\"inhibitor\":5,\"salt\":3},\"score\":1},"
        "{\"id\":\"c3\",\"params\":{\"substrate\":10},\"score\":1},"
        "{\"id\":\"c4\",\"params\":{\"substrate\":10,\"inhibitor\":5},\"score\":1},"
        "{\"id\":\"c5\",\"params\":{\"substrate\":10,\"inhibitor\":5},\"score\":1},"
        "{\"id\":\"c6\",\"params\":{\"substrate\":10,\"inhibitor\":5},\"score\":1},"
        "{\"id\":\"c7\",\"params\":{\"substrate\":10,\"inhibitor\":5},\"score\":1}]}",
        422);
    text = json_dumps(rej, JSON_COMPACT);
    const char *errs[] = {"/campaign",
                          "/candidates/0/params/substrate",
                          "/candidates/1/id",
                          "/candidates/1/params/salt",
                          "/candidates/2/params/inhibitor",
                          "over the campaign's budget"};
    for (size_t i = 0; i < sizeof errs / sizeof *errs; i++)
        if (!strstr(text, errs[i]))
            fail_msg("no error for %s: %s", errs[i], text);
    free(text);
    json_decref(rej);
    assert_int_equal(count_state(&d, "mix1", "candidate"), 0);

    /* a good batch, twice: the second delivery is the same answer and changes nothing */
    const char *batch =
        "{\"batch\":\"b1\",\"model\":{\"name\":\"m\",\"version\":\"1.0\"},\"candidates\":["
        "{\"id\":\"c1\",\"params\":{\"substrate\":60,\"inhibitor\":0},\"score\":0.9},"
        "{\"id\":\"c2\",\"params\":{\"substrate\":20,\"inhibitor\":10},\"score\":0.5,"
        "\"uncertainty\":0.1},"
        "{\"id\":\"c3\",\"params\":{\"substrate\":0,\"inhibitor\":40},\"score\":0.7},"
        "{\"id\":\"c4\",\"params\":{\"substrate\":100,\"inhibitor\":50},\"score\":0.2}]}";
    json_t *ok = h_api(&d, "POST", "/v1/campaigns/mix1/batches", batch, 201);
    assert_string_equal(sval(ok, "status"), "accepted");
    assert_int_equal(json_array_size(json_object_get(ok, "accepted")), 4);
    json_decref(ok);
    json_t *again = h_api(&d, "POST", "/v1/campaigns/mix1/batches", batch, 200);
    assert_true(json_is_true(json_object_get(again, "duplicate")));
    json_decref(again);
    /* the budget (6) leaves room for 2 */
    json_decref(h_api(&d, "POST", "/v1/campaigns/mix1/batches",
                      "{\"batch\":\"b2\",\"model\":{\"name\":\"m\",\"version\":\"1.0\"},"
                      "\"candidates\":[{\"id\":\"x1\",\"params\":{\"substrate\":1,\"inhibitor\":1},"
                      "\"score\":0},{\"id\":\"x2\",\"params\":{\"substrate\":1,\"inhibitor\":1},"
                      "\"score\":0},{\"id\":\"x3\",\"params\":{\"substrate\":1,\"inhibitor\":1},"
                      "\"score\":0}]}",
                      422));

    wait_state(&d, "mix1", "completed", 4, 120000);
    json_t *r = h_api(&d, "GET", "/v1/campaigns/mix1/results", NULL, 200);
    json_t *results = json_object_get(r, "results");
    assert_int_equal(json_array_size(results), 4);
    size_t i;
    json_t *x;
    json_array_foreach(results, i, x)
    {
        json_t *p = json_object_get(x, "params");
        double want_v = expected(json_number_value(json_object_get(p, "substrate")),
                                 json_number_value(json_object_get(p, "inhibitor")));
        double v = json_number_value(json_object_get(x, "value"));
        if (fabs(v - want_v) > 0.03)
            fail_msg("candidate %s: %.4f, the model says %.4f", sval(x, "candidate"), v, want_v);
        assert_int_equal(json_array_size(json_object_get(x, "replicates")), 2);
        assert_int_equal(json_array_size(json_object_get(x, "raw")), 2);
        assert_int_equal(json_array_size(json_object_get(x, "wells")), 2);
        assert_string_equal(sval(x, "batch"), "b1");
        assert_string_equal(sval(json_object_get(x, "model"), "version"), "1.0");
        assert_true(json_number_value(json_object_get(x, "z_prime")) > 0.5);
        assert_true(strlen(sval(x, "run")) == 36);
        assert_non_null(strstr(sval(x, "plate"), "mix1-P"));
    }
    json_decref(r);
    check_costs(&d, "mix1");

    /* PostgreSQL: the results, the candidates' states, the plate's QC, the batch done */
    assert_int_equal(h_pg_count_wait(&pg,
                                     "select count(*) from labloop.results where campaign = 'mix1'",
                                     4, 20000),
                     4);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "select count(*) from labloop.candidates where campaign = "
                                     "'mix1' and state = 'completed'",
                                     4, 20000),
                     4);
    assert_int_equal(
        h_pg_count_wait(&pg,
                        "select count(*) from labloop.plate_qc where campaign = 'mix1' "
                        "and passed and z_prime > 0.5",
                        1, 20000),
        1);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "select count(*) from labloop.batches where campaign = 'mix1' "
                                     "and batch = 'b1' and state = 'done'",
                                     1, 20000),
                     1);
    /* MQTT: one result per candidate, and the batch's done event */
    assert_true(h_sub_wait(res, 4, 20000) >= 4);
    assert_true(h_sub_wait(done, 1, 20000) >= 1);
    h_msg_t *msgs;
    int n = h_sub_messages(done, &msgs);
    assert_int_equal(n, 1);
    assert_non_null(strstr(msgs[0].topic, "/campaigns/mix1/batches/b1/done"));
    assert_non_null(strstr(msgs[0].payload, "\"completed\":4"));
    /* the plate ran the candidates best score first: c1 (0.9) in the first wells */
    json_t *cands = h_api(&d, "GET", "/v1/campaigns/mix1/candidates", NULL, 200);
    json_array_foreach(json_object_get(cands, "candidates"), i,
                       x) if (strcmp(sval(x, "id"), "c1") == 0)
    {
        json_t *w = json_object_get(json_object_get(x, "result"), "wells");
        assert_string_equal(json_string_value(json_array_get(w, 0)), "A1");
    }
    json_decref(cands);
    /* the CLI's view of the same: a row per candidate, and a state filter */
    char cmd[512], out[8192];
    snprintf(cmd, sizeof cmd, "LABLOOP_URL=%s '%s' candidates mix1 --state completed 2>&1", d.url,
             getenv("LABLOOP_CLI"));
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    for (const char *id = "c1"; id; id = strcmp(id, "c1") == 0 ? "c4" : NULL)
        if (!strstr(out, id) || !strstr(out, "completed"))
            fail_msg("labloop candidates: no %s completed in:\n%s", id, out);
    cli_candidates_match(&d, "mix1", out);
    snprintf(cmd, sizeof cmd, "LABLOOP_URL=%s '%s' candidates mix1 --state nonsense 2>&1", d.url,
             getenv("LABLOOP_CLI"));
    assert_int_not_equal(h_run(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "not a candidate state"));
    snprintf(cmd, sizeof cmd, "LABLOOP_URL=%s '%s' results mix1 2>&1", d.url,
             getenv("LABLOOP_CLI"));
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "c3"));
    h_sub_stop(res);
    h_sub_stop(done);
    /* stops cleanly: under ASan a leak (an accepted batch's answer kept one reference too many)
     * makes the exit status 1 */
    assert_int_equal(h_daemon_stop(&d), 0);
    h_daemon_destroy(&d);
}

/* ---- MQTT: batches in, answers on the response topic or reply_to ---- */

static void test_batch_over_mqtt(void **state)
{
    (void)state;
    static h_daemon_t d;
    setup_campaign(&d, CAMPAIGN("mq1", ""));
    char root[128], cmd[2048], out[1024];
    mix_topic_root(&d, root, sizeof root);
    h_sub_t *ans = h_sub_start(mq.uri, "answers/#");
    /* Each is published until its answer comes: the daemon subscribes once connected to the
     * broker, and a batch delivered twice is harmless. */
    static const char *const pubs[4][2] = {
        {"-V mqttv5 -D publish response-topic answers/one",
         "{\"batch\":\"m1\",\"model\":{\"name\":\"m\",\"version\":2},\"candidates\":[{"
         "\"id\":\"q1\",\"params\":{\"substrate\":30,\"inhibitor\":0},\"score\":1}]}"},
        /* MQTT 3.1.1 has no response topic: reply_to */
        {"", "{\"batch\":\"m2\",\"reply_to\":\"answers/two\",\"model\":{\"name\":\"m\","
             "\"version\":2},\"candidates\":[{\"id\":\"q2\",\"params\":{\"substrate\":-1,"
             "\"inhibitor\":0},\"score\":1}]}"},
        {"-V mqttv5 -D publish response-topic answers/three", "not json"},
        {"-V mqttv5 -D publish response-topic answers/four",
         "{\"batch\":\"m1\",\"model\":{\"name\":\"m\",\"version\":2},\"candidates\":[{"
         "\"id\":\"q1\",\"params\":{},\"score\":1}]}"},
    };
    for (int k = 0; k < 4; k++) {
        snprintf(cmd, sizeof cmd,
                 "mosquitto_pub %s -h 127.0.0.1 -p %d -q 1 -t '%s/in/campaigns/%s/batches' -m '%s'",
                 pubs[k][0], mq.port, root, k == 3 ? "none" : "mq1", pubs[k][1]);
        int before = h_sub_wait(ans, 0, 0);
        bool answered = false;
        for (int tries = 0; tries < 30 && !answered; tries++) {
            assert_int_equal(h_run(cmd, out, sizeof out), 0);
            answered = h_sub_wait(ans, before + 1, 1000) > before;
        }
        assert_true(answered);
    }
    h_msg_t *msgs;
    int n = h_sub_messages(ans, &msgs);
    bool seen[4] = {false};
    for (int i = 0; i < n; i++) {
        if (strcmp(msgs[i].topic, "answers/one") == 0) {
            /* accepted, or (a repeat) the same answer as a duplicate */
            seen[0] |= strstr(msgs[i].payload, "\"status\":\"accepted\"") &&
                       strstr(msgs[i].payload, "\"q1\"");
        } else if (strcmp(msgs[i].topic, "answers/two") == 0) {
            seen[1] |= strstr(msgs[i].payload, "\"status\":\"rejected\"") &&
                       strstr(msgs[i].payload, "/candidates/0/params/substrate");
        } else if (strcmp(msgs[i].topic, "answers/three") == 0) {
            seen[2] |= strstr(msgs[i].payload, "\"status\":\"rejected\"") &&
                       strstr(msgs[i].payload, "not a JSON object");
        } else if (strcmp(msgs[i].topic, "answers/four") == 0) {
            seen[3] |= strstr(msgs[i].payload, "\"status\":\"rejected\"") &&
                       strstr(msgs[i].payload, "no campaign");
        }
    }
    for (int i = 0; i < 4; i++)
        if (!seen[i]) {
            for (int k = 0; k < n; k++)
                print_message("%s %s\n", msgs[k].topic, msgs[k].payload);
            fail_msg("answer %d missing or wrong", i + 1);
        }
    wait_state(&d, "mq1", "completed", 1, 120000);
    h_sub_stop(ans);
    h_daemon_destroy(&d);
}

/* ---- MQTT: no batch vanishes: each is answered, or logged with why not, and counted ---- */

/* Publishes payload once (QoS 1: mosquitto_pub returns after the broker has it). */
static void pub_batch(const char *root, const char *campaign, const char *opts, const char *payload)
{
    char cmd[2048], out[1024];
    snprintf(cmd, sizeof cmd,
             "mosquitto_pub %s -h 127.0.0.1 -p %d -q 1 -t '%s/in/campaigns/%s/batches' -m '%s'",
             opts, mq.port, root, campaign, payload);
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
}

static long long metric_wait(h_daemon_t *d, const char *series, long long want)
{
    long long v = -1;
    for (long long end = h_now_ms() + 20000; h_now_ms() < end; h_sleep_ms(50))
        if ((v = h_metric(d, series)) == want)
            break;
    return v;
}

static void test_batch_never_silent(void **state)
{
    (void)state;
    static h_daemon_t d;
    /* The daemon's "online" is published once its subscriptions are in place: a batch sent as
     * soon as it is seen is received, the first time. */
    h_sub_t *status = h_sub_start(mq.uri, "labloop/v1/+/+/status");
    setup_campaign(&d, CAMPAIGN("mq2", ""));
    /* Paused: the batches accepted here lay out no plate, and the instruments stay idle for the
     * tests after this one. */
    json_decref(h_api(&d, "POST", "/v1/campaigns/mq2/pause", NULL, 200));
    char root[128], st_topic[160];
    mix_topic_root(&d, root, sizeof root);
    snprintf(st_topic, sizeof st_topic, "%s/status", root);
    bool online = false;
    for (long long end = h_now_ms() + 20000; !online && h_now_ms() < end; h_sleep_ms(5)) {
        h_msg_t *v;
        int n = h_sub_messages(status, &v);
        for (int i = 0; i < n; i++)
            online |= strcmp(v[i].topic, st_topic) == 0 && strstr(v[i].payload, "\"online\"");
    }
    assert_true(online);
    h_sub_t *ans = h_sub_start(mq.uri, "answers2/#");
    pub_batch(root, "mq2", "-V mqttv5 -D publish response-topic answers2/one",
              "{\"batch\":\"n1\",\"model\":{\"name\":\"m\",\"version\":1},\"candidates\":[{"
              "\"id\":\"r1\",\"params\":{\"substrate\":30,\"inhibitor\":0},\"score\":1}]}");
    assert_int_equal(h_sub_wait(ans, 1, 20000), 1);

    /* A response topic with a wildcard: publishing there would make the broker drop the
     * daemon's connection. Not sent, logged, counted; the connection stays. */
    pub_batch(root, "mq2", "-V mqttv5 -D publish response-topic 'answers2/+/x'",
              "{\"batch\":\"n2\",\"model\":{\"name\":\"m\",\"version\":1},\"candidates\":[{"
              "\"id\":\"r2\",\"params\":{\"substrate\":20,\"inhibitor\":0},\"score\":1}]}");
    assert_int_equal(
        metric_wait(&d, "labloop_mqtt_unanswered_total{reason=\"bad_reply_topic\"}", 1), 1);
    assert_int_equal(log_count(&d, "reply topic=answers2/+/x holds a wildcard"), 1);
    /* reply_to naming a broker topic, and a batch with nowhere to answer (MQTT 3.1.1 and no
     * reply_to): both logged with the answer they would have had. */
    pub_batch(root, "mq2", "",
              "{\"batch\":\"n3\",\"reply_to\":\"$SYS/x\",\"model\":{\"name\":\"m\",\"version\":1},"
              "\"candidates\":[{\"id\":\"r3\",\"params\":{\"substrate\":20,\"inhibitor\":0},"
              "\"score\":1}]}");
    pub_batch(root, "mq2", "",
              "{\"batch\":\"n4\",\"model\":{\"name\":\"m\",\"version\":1},\"candidates\":[{"
              "\"id\":\"r4\",\"params\":{\"substrate\":-5,\"inhibitor\":0},\"score\":1}]}");
    assert_int_equal(
        metric_wait(&d, "labloop_mqtt_unanswered_total{reason=\"bad_reply_topic\"}", 2), 2);
    assert_int_equal(metric_wait(&d, "labloop_mqtt_unanswered_total{reason=\"no_reply_topic\"}", 1),
                     1);
    assert_int_equal(log_count(&d, "not answered (no_reply_topic): the answer was "), 1);
    assert_int_equal(log_count(&d, "\"code\":422"), 1);
    assert_int_equal(log_count(&d, "/candidates/0/params/substrate"), 1);
    /* A campaign id no campaign has, however long: answered 404 naming it. */
    pub_batch(root, "x-campaign-that-does-not-exist-and-has-a-name-longer-than-seventy-two-bytes",
              "-V mqttv5 -D publish response-topic answers2/five",
              "{\"batch\":\"n5\",\"model\":{\"name\":\"m\",\"version\":1},\"candidates\":[{"
              "\"id\":\"r5\",\"params\":{\"substrate\":1,\"inhibitor\":0},\"score\":1}]}");
    assert_int_equal(h_sub_wait(ans, 2, 20000), 2);
    h_msg_t *v;
    assert_int_equal(h_sub_messages(ans, &v), 2);
    assert_string_equal(v[1].topic, "answers2/five");
    assert_non_null(strstr(v[1].payload, "seventy-two-bytes"));
    assert_non_null(strstr(v[1].payload, "\"code\":404"));

    assert_int_equal(h_metric(&d, "labloop_mqtt_received_total{topic=\"in.batches\"}"), 5);
    assert_int_equal(h_metric(&d, "labloop_mqtt_answered_total"), 2);
    assert_int_equal(h_metric(&d, "labloop_sink_connects_total{sink=\"mqtt\"}"), 1);
    h_sub_stop(ans);
    h_sub_stop(status);
    h_daemon_destroy(&d);
}

/* ---- QC: a plate under the threshold re-runs once, then fails; the breaker pauses ---- */

static void test_qc_failure_and_breaker(void **state)
{
    (void)state;
    static h_daemon_t d;
    /* Z' can never reach 0.9999 with the simulator's noise: every plate fails QC */
    setup_campaign(&d, CAMPAIGN("qc1", ",\"qc\":{\"z_prime_min\":0.9999,\"retries\":1}"));
    json_decref(h_api(&d, "POST", "/v1/campaigns/qc1/batches",
                      "{\"batch\":\"b1\",\"model\":{\"name\":\"m\",\"version\":1},\"candidates\":["
                      "{\"id\":\"k1\",\"params\":{\"substrate\":10,\"inhibitor\":0},\"score\":1},"
                      "{\"id\":\"k2\",\"params\":{\"substrate\":20,\"inhibitor\":0},\"score\":1},"
                      "{\"id\":\"k3\",\"params\":{\"substrate\":30,\"inhibitor\":0},\"score\":1},"
                      "{\"id\":\"k4\",\"params\":{\"substrate\":40,\"inhibitor\":0},\"score\":1},"
                      "{\"id\":\"k5\",\"params\":{\"substrate\":50,\"inhibitor\":0},\"score\":1},"
                      "{\"id\":\"k6\",\"params\":{\"substrate\":60,\"inhibitor\":0},\"score\":1}]}",
                      201));
    wait_state(&d, "qc1", "failed", 6, 180000);
    json_t *cands = h_api(&d, "GET", "/v1/campaigns/qc1/candidates?state=failed", NULL, 200);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(cands, "candidates"), i, x)
    {
        assert_non_null(strstr(sval(x, "reason"), "failed QC"));
        assert_int_equal(json_integer_value(json_object_get(x, "qc_failures")), 2);
        assert_int_equal(json_array_size(json_object_get(x, "plates")), 2);
    }
    json_decref(cands);
    /* more than half of at least 5 failed: paused, with the reason */
    json_t *c = campaign_get(&d, "qc1");
    assert_string_equal(sval(c, "state"), "paused");
    assert_non_null(strstr(sval(c, "reason"), "6 of 6 finished candidates failed"));
    json_decref(c);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "select count(*) from labloop.plate_qc where campaign = 'qc1' "
                                     "and not passed and reason like '%Z''%'",
                                     2, 20000),
                     2);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "select count(*) from labloop.results where campaign = 'qc1'",
                                     0, 1000),
                     0);
    /* a paused campaign takes batches but lays out no plate until resumed */
    json_decref(h_api(&d, "POST", "/v1/campaigns/qc1/batches",
                      "{\"batch\":\"b2\",\"model\":{\"name\":\"m\",\"version\":1},\"candidates\":["
                      "{\"id\":\"k7\",\"params\":{\"substrate\":10,\"inhibitor\":0},\"score\":1}]}",
                      201));
    h_sleep_ms(300);
    assert_int_equal(count_state(&d, "qc1", "candidate"), 1);
    json_t *r = h_api(&d, "POST", "/v1/campaigns/qc1/resume", NULL, 200);
    assert_string_equal(sval(r, "state"), "active");
    json_decref(r);
    assert_int_equal(count_state(&d, "qc1", "candidate"), 0);
    h_daemon_destroy(&d);
}

/* ---- replaces_pending, new scores, and nothing proposed twice ---- */

static void test_stale_and_scores(void **state)
{
    (void)state;
    static h_daemon_t d;
    setup_campaign(&d, CAMPAIGN("st1", ""));
    /* nothing starts while the liquid handler is paused */
    json_decref(h_api(&d, "POST", "/v1/instruments/star1/pause", NULL, 200));
    json_decref(h_api(&d, "POST", "/v1/campaigns/st1/batches",
                      "{\"batch\":\"old\",\"model\":{\"name\":\"m\",\"version\":1},\"candidates\":["
                      "{\"id\":\"o1\",\"params\":{\"substrate\":10,\"inhibitor\":0},\"score\":1},"
                      "{\"id\":\"o2\",\"params\":{\"substrate\":20,\"inhibitor\":0},\"score\":2}]}",
                      201));
    assert_int_equal(count_state(&d, "st1", "staged"), 2);
    /* new scores re-prioritise the plate */
    json_t *cands = h_api(&d, "GET", "/v1/campaigns/st1/candidates?state=staged", NULL, 200);
    char run[40];
    snprintf(run, sizeof run, "%s",
             sval(json_array_get(json_object_get(cands, "candidates"), 0), "run"));
    json_decref(cands);
    json_decref(h_api(&d, "POST", "/v1/campaigns/st1/scores",
                      "{\"scores\":[{\"id\":\"o1\",\"score\":7},{\"id\":\"o2\",\"score\":9}]}",
                      200));
    json_decref(h_api(&d, "POST", "/v1/campaigns/st1/scores",
                      "{\"scores\":[{\"id\":\"nope\",\"score\":7}]}", 422));
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s", run);
    double score = 0;
    for (long long end = h_now_ms() + 5000; h_now_ms() < end && score != 8; h_sleep_ms(20)) {
        json_t *rd = h_api(&d, "GET", path, NULL, 200);
        score = json_number_value(json_object_get(rd, "score"));
        json_decref(rd);
    }
    assert_true(score == 8); /* the mean of 7 and 9 */

    /* a newer batch replaces them: stale, their plate cancelled, the new one laid out */
    json_t *ok = h_api(&d, "POST", "/v1/campaigns/st1/batches",
                       "{\"batch\":\"new\",\"replaces_pending\":true,\"model\":{\"name\":\"m\","
                       "\"version\":2},\"candidates\":[{\"id\":\"n1\",\"params\":{\"substrate\":"
                       "50,\"inhibitor\":0},\"score\":3}]}",
                       201);
    assert_int_equal(json_array_size(json_object_get(ok, "stale")), 2);
    json_decref(ok);
    assert_int_equal(count_state(&d, "st1", "stale"), 2);
    json_t *rd = h_api(&d, "GET", path, NULL, 200);
    for (long long end = h_now_ms() + 5000;
         h_now_ms() < end && strcmp(sval(rd, "state"), "cancelled") != 0; h_sleep_ms(20)) {
        json_decref(rd);
        rd = h_api(&d, "GET", path, NULL, 200);
    }
    assert_string_equal(sval(rd, "state"), "cancelled");
    json_decref(rd);
    json_decref(h_api(&d, "POST", "/v1/instruments/star1/resume", NULL, 200));
    wait_state(&d, "st1", "completed", 1, 120000);
    /* the old batch is done too (all stale), and its candidates never ran */
    assert_int_equal(h_pg_count_wait(&pg,
                                     "select count(*) from labloop.batches where campaign = 'st1' "
                                     "and state = 'done'",
                                     2, 20000),
                     2);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "select count(*) from labloop.results where campaign = 'st1'",
                                     1, 20000),
                     1);
    h_daemon_destroy(&d);
}

/* ---- kill -9 while a plate runs: the result still comes, once ---- */

static void test_restart_loses_nothing(void **state)
{
    (void)state;
    static h_daemon_t d;
    setup_campaign(&d, CAMPAIGN("rs1", ""));
    json_decref(h_api(&d, "POST", "/v1/campaigns/rs1/batches",
                      "{\"batch\":\"b1\",\"model\":{\"name\":\"m\",\"version\":1},\"candidates\":["
                      "{\"id\":\"r1\",\"params\":{\"substrate\":40,\"inhibitor\":0},\"score\":1}]}",
                      201));
    wait_state(&d, "rs1", "running", 1, 60000);
    h_sleep_ms(1500); /* inside the incubation */
    h_daemon_kill9(&d);
    assert_int_equal(h_daemon_restart(&d), 0);
    wait_state(&d, "rs1", "completed", 1, 180000);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "select count(*) from labloop.results where campaign = 'rs1'",
                                     1, 20000),
                     1);
    /* the same batch again after the restart is still a duplicate */
    json_t *again =
        h_api(&d, "POST", "/v1/campaigns/rs1/batches",
              "{\"batch\":\"b1\",\"model\":{\"name\":\"m\",\"version\":1},\"candidates\":["
              "{\"id\":\"r1\",\"params\":{\"substrate\":40,\"inhibitor\":0},\"score\":1}]}",
              200);
    assert_true(json_is_true(json_object_get(again, "duplicate")));
    json_decref(again);
    h_daemon_destroy(&d);
}

/* ---- the built-in learner: Sobol first, then model fits, each batch proposed by itself ---- */

static void test_builtin_learner(void **state)
{
    (void)state;
    static h_daemon_t d;
    h_sub_t *done = h_sub_start(mq.uri, "labloop/v1/lab/+/campaigns/gp1/batches/+/done");
    start_daemon(&d);
    json_decref(h_api(&d, "POST", "/v1/workflows", mix_workflow, 201));
    /* the first batch waits on a paused liquid handler; then a restart: the learner's next
     * batch takes the next number (gp-0002), it does not start again from gp-0001 */
    json_decref(h_api(&d, "POST", "/v1/instruments/star1/pause", NULL, 200));
    json_decref(h_api(&d, "POST", "/v1/campaigns",
                      CAMPAIGN("gp1", ",\"batch_size\":4,\"budget\":{\"candidates\":12},"
                                      "\"learner\":{\"kind\":\"builtin\",\"seed\":3,"
                                      "\"initial\":4}"),
                      201));
    wait_state(&d, "gp1", "staged", 4, 60000);
    h_daemon_kill9(&d);
    assert_int_equal(h_daemon_restart(&d), 0);
    json_decref(h_api(&d, "POST", "/v1/instruments/star1/resume", NULL, 200));
    wait_state(&d, "gp1", "completed", 8, 120000);
    json_t *cd = campaign_get(&d, "gp1");
    char *text = json_dumps(json_object_get(cd, "batches"), JSON_COMPACT);
    assert_non_null(strstr(text, "\"gp-0002\""));
    free(text);
    json_decref(cd);
    assert_int_equal(log_count(&d, "rejected"), 0); /* no batch of the learner's was refused */
    json_t *c = NULL;
    for (long long end = h_now_ms() + 300000; h_now_ms() < end; h_sleep_ms(200)) {
        json_decref(c);
        c = campaign_get(&d, "gp1");
        if (strcmp(sval(c, "state"), "done") == 0)
            break;
    }
    assert_string_equal(sval(c, "state"), "done");
    assert_non_null(strstr(sval(c, "reason"), "budget of 12 candidates"));
    assert_non_null(json_object_get(c, "best"));
    json_decref(c);
    json_t *cands = h_api(&d, "GET", "/v1/campaigns/gp1/candidates", NULL, 200);
    json_t *all = json_object_get(cands, "candidates");
    assert_int_equal(json_array_size(all), 12);
    int sobol = 0, gp = 0;
    size_t i, j;
    json_t *x, *y;
    json_array_foreach(all, i, x)
    {
        assert_string_equal(sval(x, "state"), "completed");
        assert_string_equal(sval(json_object_get(x, "model"), "name"), "labloop-gp");
        json_t *fit = json_object_get(x, "fit");
        assert_non_null(fit);
        /* which fit proposed it, and how */
        assert_string_equal(sval(fit, "version"), sval(json_object_get(x, "model"), "version"));
        if (strcmp(sval(fit, "design"), "sobol") == 0)
            sobol++;
        else if (strcmp(sval(fit, "design"), "gp") == 0 && json_object_get(fit, "lengthscales"))
            gp++;
        /* nothing proposed twice */
        json_array_foreach(all, j, y) if (j > i)
            assert_false(json_equal(json_object_get(x, "params"), json_object_get(y, "params")));
    }
    assert_true(sobol >= 4);
    assert_true(gp >= 4);
    json_decref(cands);
    assert_true(h_sub_wait(done, 3, 20000) >= 3);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "select count(*) from labloop.results where campaign = 'gp1' "
                                     "and model_name = 'labloop-gp'",
                                     12, 20000),
                     12);
    h_sub_stop(done);
    h_daemon_destroy(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_batch_over_http, daemon_teardown),
        cmocka_unit_test_teardown(test_batch_over_mqtt, daemon_teardown),
        cmocka_unit_test_teardown(test_batch_never_silent, daemon_teardown),
        cmocka_unit_test_teardown(test_qc_failure_and_breaker, daemon_teardown),
        cmocka_unit_test_teardown(test_stale_and_scores, daemon_teardown),
        cmocka_unit_test_teardown(test_restart_loses_nothing, daemon_teardown),
        cmocka_unit_test_teardown(test_builtin_learner, daemon_teardown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
