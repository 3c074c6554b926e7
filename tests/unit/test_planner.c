/* The planner on small problems whose right answer is known: an unmeetable maximum lag
 * (unscheduled, with the reason), capacity above one, an urgent run overtaking, deadlines
 * ordering, started steps kept exactly, a job shop solved to its optimum, bad problems named by
 * path; moves on a mover (placed, checked by plan_verify, not repeated for started steps,
 * move_s read); runs under way before urgent ones, time 0 as now, a re-plan after a late step,
 * with and without a mover. Every plan passes plan_verify. */
#include "planner/planner.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static plan_problem_t prob;
static plan_result_t res;

static void solve(const char *json, long budget_ms)
{
    json_error_t je;
    json_t *doc = json_loads(json, 0, &je);
    if (!doc)
        fail_msg("test JSON: %s", je.text);
    lab_jerrs_t errs = {0};
    if (plan_from_json(doc, &prob, &errs))
        fail_msg("%s: %s", errs.v[0].path, errs.v[0].message);
    json_decref(doc);
    plan_options_t o = {.budget_ms = budget_ms, .seed = 7};
    assert_int_equal(plan_solve(&prob, &o, &res), 0);
    char why[400];
    if (plan_verify(&prob, &res, why, sizeof why))
        fail_msg("plan breaks a constraint: %s", why);
}

static void done(void)
{
    plan_result_free(&res);
    plan_problem_free(&prob);
}

static const plan_slot_t *find(const char *run, int step, int move)
{
    for (int i = 0; i < res.nslots; i++)
        if (strcmp(prob.runs[res.slots[i].run].id, run) == 0 && res.slots[i].step == step &&
            res.slots[i].move == move)
            return &res.slots[i];
    return NULL;
}

static const plan_slot_t *slot(const char *run, int step)
{
    return find(run, step, 0);
}

static int moves(void)
{
    int n = 0;
    for (int i = 0; i < res.nslots; i++)
        n += res.slots[i].move;
    return n;
}

static void test_unmeetable_lag(void **state)
{
    (void)state;
    solve("{\"instruments\":[{\"id\":\"star\",\"kind\":\"liquid_handler\"},"
          "{\"id\":\"reader\",\"kind\":\"plate_reader\"}],"
          "\"workflows\":[{\"name\":\"long\",\"steps\":[{\"name\":\"scan\",\"on\":\"plate_reader\","
          "\"duration_s\":1000}]},"
          "{\"name\":\"w\",\"steps\":[{\"name\":\"dispense\",\"on\":\"liquid_handler\","
          "\"duration_s\":10},{\"name\":\"read\",\"on\":\"plate_reader\",\"duration_s\":60,"
          "\"start_within_s\":5}]}],"
          "\"runs\":[{\"id\":\"a\",\"workflow\":\"long\",\"started\":[{\"instrument\":\"reader\","
          "\"start_s\":0}]},"
          "{\"id\":\"b\",\"workflow\":\"w\",\"started\":[{\"instrument\":\"star\",\"start_s\":0}]},"
          "{\"id\":\"c\",\"workflow\":\"w\"}]}",
          0);
    /* b's read would have to start by 15 s: the reader is busy until 1000: b waits, says why. */
    assert_int_equal(res.nunscheduled, 1);
    assert_string_equal(prob.runs[res.unscheduled[0].run].id, "b");
    assert_non_null(strstr(res.unscheduled[0].reason, "read"));
    assert_non_null(strstr(res.unscheduled[0].reason, "plate_reader"));
    /* c is placed so that its read follows its dispense within 5 s. */
    const plan_slot_t *d = slot("c", 0), *r = slot("c", 1);
    assert_non_null(d);
    assert_non_null(r);
    assert_true(r->start_s - d->end_s <= 5 + 1e-9);
    assert_true(r->start_s >= 1000);
    done();
}

static void test_capacity(void **state)
{
    (void)state;
    solve("{\"instruments\":[{\"id\":\"inc\",\"kind\":\"incubator\",\"capacity\":2}],"
          "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"i\",\"on\":\"incubator\","
          "\"duration_s\":100}]}],"
          "\"runs\":[{\"id\":\"a\",\"workflow\":\"w\"},{\"id\":\"b\",\"workflow\":\"w\"},"
          "{\"id\":\"c\",\"workflow\":\"w\"}]}",
          50);
    assert_true(res.makespan_s == 200);
    assert_true(res.lower_bound_s == 150);
    int at0 = 0;
    for (int i = 0; i < res.nslots; i++)
        at0 += res.slots[i].start_s == 0;
    assert_int_equal(at0, 2);
    done();
}

/* Runs that differ in nothing the plan sees (a lab's queue of one assay) leave the order search
 * nothing to try: one plan, in the soft order (oldest first), not a budget spent on swaps. Runs
 * that differ are still searched. */
static void test_like_runs_not_searched(void **state)
{
    (void)state;
    static const char like[] =
        "{\"instruments\":[{\"id\":\"inc\",\"kind\":\"incubator\",\"capacity\":2}],"
        "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"i\",\"on\":\"incubator\","
        "\"duration_s\":100}]}],"
        "\"runs\":[{\"id\":\"a\",\"workflow\":\"w\"},{\"id\":\"b\",\"workflow\":\"w\"},"
        "{\"id\":\"c\",\"workflow\":\"w\"},{\"id\":\"d\",\"workflow\":\"w\"},"
        "{\"id\":\"e\",\"workflow\":\"w\"}]}";
    solve(like, 50);
    assert_int_equal(res.iterations, 1);
    assert_true(res.makespan_s == 300);
    assert_true(slot("a", 0)->start_s == 0 && slot("b", 0)->start_s == 0);
    assert_true(slot("c", 0)->start_s == 100 && slot("e", 0)->start_s == 200);
    done();
    static const char unlike[] =
        "{\"instruments\":[{\"id\":\"inc\",\"kind\":\"incubator\",\"capacity\":2}],"
        "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"i\",\"on\":\"incubator\","
        "\"duration_s\":100}]},{\"name\":\"v\",\"steps\":[{\"name\":\"i\",\"on\":"
        "\"incubator\",\"duration_s\":50}]}],"
        "\"runs\":[{\"id\":\"a\",\"workflow\":\"w\"},{\"id\":\"b\",\"workflow\":\"v\"},"
        "{\"id\":\"c\",\"workflow\":\"w\"}]}";
    solve(unlike, 20);
    assert_true(res.iterations > 1);
    done();
}

static void test_urgent_overtakes(void **state)
{
    (void)state;
    solve("{\"instruments\":[{\"id\":\"star\",\"kind\":\"liquid_handler\"}],"
          "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"d\",\"on\":\"star\","
          "\"duration_s\":100}]}],"
          "\"runs\":[{\"id\":\"n1\",\"workflow\":\"w\"},{\"id\":\"n2\",\"workflow\":\"w\"},"
          "{\"id\":\"u\",\"workflow\":\"w\",\"priority\":\"urgent\",\"release_s\":50}]}",
          50);
    assert_true(slot("u", 0)->start_s == 50);
    assert_true(slot("n1", 0)->start_s > 50);
    assert_true(slot("n2", 0)->start_s > 50);
    done();
}

static void test_deadline_first(void **state)
{
    (void)state;
    solve("{\"instruments\":[{\"id\":\"star\",\"kind\":\"liquid_handler\"}],"
          "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"d\",\"on\":\"star\","
          "\"duration_s\":100}]}],"
          "\"runs\":[{\"id\":\"late\",\"workflow\":\"w\",\"deadline_s\":1000},"
          "{\"id\":\"soon\",\"workflow\":\"w\",\"deadline_s\":100}]}",
          0);
    assert_true(slot("soon", 0)->start_s == 0);
    assert_true(slot("late", 0)->start_s == 100);
    done();
}

static void test_started_steps_kept(void **state)
{
    (void)state;
    solve("{\"instruments\":[{\"id\":\"star\",\"kind\":\"liquid_handler\"},"
          "{\"id\":\"inc\",\"kind\":\"incubator\"}],"
          "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"d\",\"on\":\"liquid_handler\","
          "\"duration_s\":100},{\"name\":\"i\",\"on\":\"incubator\",\"duration_s\":300,"
          "\"start_after_s\":10}]}],"
          "\"runs\":[{\"id\":\"new\",\"workflow\":\"w\"},"
          "{\"id\":\"old\",\"workflow\":\"w\",\"started\":[{\"instrument\":\"star\","
          "\"start_s\":37}]}]}",
          50);
    assert_true(slot("old", 0)->start_s == 37);
    assert_true(slot("old", 1)->start_s >= 147);
    /* new fits around the started step: not before 137 on the star, or ending by 37 */
    const plan_slot_t *n = slot("new", 0);
    assert_true(n->end_s <= 37 || n->start_s >= 137);
    done();
}

/* Two instruments and a mover: the plate's move sits between the steps, on the mover, from the
 * first step's instrument to the second's; one mover serialises two runs' moves. */
static void test_moves_on_a_mover(void **state)
{
    (void)state;
    static const char *fmt =
        "{\"instruments\":[{\"id\":\"star\",\"kind\":\"liquid_handler\"},"
        "{\"id\":\"star2\",\"kind\":\"liquid_handler\"},"
        "{\"id\":\"reader\",\"kind\":\"plate_reader\",\"capacity\":2}%s],"
        "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"d\",\"on\":\"liquid_handler\","
        "\"duration_s\":100},{\"name\":\"r\",\"on\":\"plate_reader\",\"duration_s\":50,"
        "\"start_within_s\":%d}]}],"
        "\"runs\":[{\"id\":\"a\",\"workflow\":\"w\"},{\"id\":\"b\",\"workflow\":\"w\"}]}";
    char json[1400];
    snprintf(json, sizeof json, fmt, ",{\"id\":\"arm\",\"kind\":\"mover\",\"move_s\":30}", 200);
    solve(json, 20);
    assert_int_equal(res.nunscheduled, 0);
    assert_int_equal(moves(), 2);
    const plan_slot_t *ma = find("a", 1, 1), *mb = find("b", 1, 1);
    assert_non_null(ma);
    assert_non_null(mb);
    assert_string_equal(prob.instruments[ma->instrument].id, "arm");
    assert_int_equal(ma->from, slot("a", 0)->instrument);
    assert_true(ma->start_s >= slot("a", 0)->end_s - 1e-9);
    assert_true(ma->end_s <= slot("a", 1)->start_s + 1e-9);
    assert_true(ma->end_s - ma->start_s == 30);
    /* both dispenses run at once on the two STARs; the one arm moves one plate at a time */
    assert_true(ma->end_s <= mb->start_s + 1e-9 || mb->end_s <= ma->start_s + 1e-9);
    done();

    /* a move longer than the window: neither run can be planned, and they say why */
    snprintf(json, sizeof json, fmt, ",{\"id\":\"arm\",\"kind\":\"mover\",\"move_s\":30}", 20);
    solve(json, 0);
    assert_int_equal(res.nunscheduled, 2);
    for (int i = 0; i < 2; i++)
        assert_non_null(strstr(res.unscheduled[i].reason,
                               "step r cannot start within 20 s of d's end: the move from "
                               "liquid_handler onto plate_reader takes 30 s"));
    done();

    /* no mover: no moves, and the same window is easy */
    snprintf(json, sizeof json, fmt, "", 20);
    solve(json, 0);
    assert_int_equal(res.nunscheduled, 0);
    assert_int_equal(moves(), 0);
    done();
}

/* plan_verify knows what a move must be: a plan without one, or with it from the wrong
 * instrument, outside its window or beside another move on a full mover, is refused. */
static void test_verify_checks_moves(void **state)
{
    (void)state;
    solve("{\"instruments\":[{\"id\":\"star\",\"kind\":\"liquid_handler\"},"
          "{\"id\":\"star2\",\"kind\":\"liquid_handler\"},"
          "{\"id\":\"reader\",\"kind\":\"plate_reader\",\"capacity\":2},"
          "{\"id\":\"arm\",\"kind\":\"mover\",\"move_s\":30}],"
          "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"d\",\"on\":\"liquid_handler\","
          "\"duration_s\":100},{\"name\":\"r\",\"on\":\"plate_reader\",\"duration_s\":50,"
          "\"start_within_s\":200}]}],"
          "\"runs\":[{\"id\":\"a\",\"workflow\":\"w\"},{\"id\":\"b\",\"workflow\":\"w\"}]}",
          0);
    assert_int_equal(moves(), 2);
    plan_slot_t keep[8];
    assert_true(res.nslots <= 8);
    memcpy(keep, res.slots, sizeof *keep * (size_t)res.nslots);
    int nkeep = res.nslots;
    plan_slot_t *ma = (plan_slot_t *)find("a", 1, 1), *mb = (plan_slot_t *)find("b", 1, 1);
    char why[400];
    /* the move left out */
    int at = (int)(ma - res.slots);
    memmove(res.slots + at, res.slots + at + 1, sizeof *res.slots * (size_t)(res.nslots - at - 1));
    res.nslots--;
    assert_int_equal(plan_verify(&prob, &res, why, sizeof why), -1);
    assert_non_null(strstr(why, "run a step r: no move from star"));
    res.nslots = nkeep;
    memcpy(res.slots, keep, sizeof *keep * (size_t)nkeep);
    /* from the wrong instrument */
    ma->from = slot("a", 1)->instrument;
    assert_int_equal(plan_verify(&prob, &res, why, sizeof why), -1);
    assert_non_null(strstr(why, "the move comes from"));
    memcpy(res.slots, keep, sizeof *keep * (size_t)nkeep);
    /* before the dispense is over */
    ma->start_s -= 50;
    ma->end_s -= 50;
    assert_int_equal(plan_verify(&prob, &res, why, sizeof why), -1);
    assert_non_null(strstr(why, "is outside"));
    memcpy(res.slots, keep, sizeof *keep * (size_t)nkeep);
    /* both plates on the one arm at once (each inside its own window) */
    double d = ma->start_s - mb->start_s;
    mb->start_s += d;
    mb->end_s += d;
    assert_int_equal(plan_verify(&prob, &res, why, sizeof why), -1);
    assert_non_null(strstr(why, "instrument arm holds 2"));
    memcpy(res.slots, keep, sizeof *keep * (size_t)nkeep);
    assert_int_equal(plan_verify(&prob, &res, why, sizeof why), 0);
    done();
}

/* A move that served a started step is in the past: not planned again. The next move is, from
 * where the started step left the plate; and when the one arm is taken while a run under way
 * must move within its window, that run waits and says it is the mover. */
static void test_started_steps_moves(void **state)
{
    (void)state;
    solve("{\"instruments\":[{\"id\":\"star\",\"kind\":\"liquid_handler\"},"
          "{\"id\":\"inc\",\"kind\":\"incubator\",\"capacity\":3},"
          "{\"id\":\"reader\",\"kind\":\"plate_reader\"},"
          "{\"id\":\"arm\",\"kind\":\"mover\",\"move_s\":20}],"
          "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"d\",\"on\":\"liquid_handler\","
          "\"duration_s\":100},{\"name\":\"i\",\"on\":\"incubator\",\"duration_s\":600,"
          "\"start_within_s\":60},{\"name\":\"r\",\"on\":\"plate_reader\",\"duration_s\":90,"
          "\"start_within_s\":120}]}],"
          "\"runs\":[{\"id\":\"a\",\"workflow\":\"w\",\"started\":[{\"instrument\":\"star\","
          "\"start_s\":-700},{\"instrument\":\"inc\",\"start_s\":-580}]}]}",
          0);
    assert_int_equal(res.nunscheduled, 0);
    assert_null(find("a", 1, 1));
    const plan_slot_t *mv = find("a", 2, 1);
    assert_non_null(mv);
    assert_string_equal(prob.instruments[mv->from].id, "inc");
    assert_string_equal(prob.instruments[mv->instrument].id, "arm");
    assert_true(mv->start_s == 20); /* the incubation ends at 20 */
    assert_true(slot("a", 2)->start_s >= 40);
    assert_int_equal(moves(), 1);
    done();

    /* two plates dispensed at once on two STARs, both to be read within 40 s; the arm takes
     * 30 s a move: one run's read must wait past its window */
    solve("{\"instruments\":[{\"id\":\"star\",\"kind\":\"liquid_handler\"},"
          "{\"id\":\"star2\",\"kind\":\"liquid_handler\"},"
          "{\"id\":\"reader\",\"kind\":\"plate_reader\",\"capacity\":2},"
          "{\"id\":\"arm\",\"kind\":\"mover\",\"move_s\":30}],"
          "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"d\",\"on\":\"liquid_handler\","
          "\"duration_s\":100},{\"name\":\"r\",\"on\":\"plate_reader\",\"duration_s\":50,"
          "\"start_within_s\":40}]}],"
          "\"runs\":[{\"id\":\"a\",\"workflow\":\"w\",\"started\":[{\"instrument\":\"star\","
          "\"start_s\":-10}]},{\"id\":\"b\",\"workflow\":\"w\",\"started\":[{\"instrument\":"
          "\"star2\",\"start_s\":-10}]}]}",
          0);
    assert_int_equal(res.nunscheduled, 1);
    assert_int_equal(moves(), 1);
    assert_non_null(strstr(res.unscheduled[0].reason,
                           "step r cannot start within 40 s of d's end: the move onto "
                           "plate_reader waits for arm"));
    done();
}

/* move_s: 60 s on a mover unless given; > 0; only on a mover. */
static void test_move_s_read(void **state)
{
    (void)state;
    json_t *doc = json_loads("{\"instruments\":[{\"id\":\"arm\",\"kind\":\"mover\"},"
                             "{\"id\":\"arm2\",\"kind\":\"mover\",\"move_s\":12.5},"
                             "{\"id\":\"star\",\"kind\":\"liquid_handler\"}],"
                             "\"workflows\":[],\"runs\":[]}",
                             0, NULL);
    lab_jerrs_t errs = {0};
    plan_problem_t p;
    assert_int_equal(plan_from_json(doc, &p, &errs), 0);
    json_decref(doc);
    assert_true(p.instruments[0].move_s == 60);
    assert_true(p.instruments[1].move_s == 12.5);
    assert_true(p.instruments[2].move_s == 0);
    plan_problem_free(&p);
    doc = json_loads("{\"instruments\":[{\"id\":\"arm\",\"kind\":\"mover\",\"move_s\":-5},"
                     "{\"id\":\"arm2\",\"kind\":\"mover\",\"move_s\":0},"
                     "{\"id\":\"arm3\",\"kind\":\"mover\",\"move_s\":\"fast\"},"
                     "{\"id\":\"star\",\"kind\":\"liquid_handler\",\"move_s\":5}],"
                     "\"workflows\":[],\"runs\":[]}",
                     0, NULL);
    assert_int_equal(plan_from_json(doc, &p, &errs), 4);
    json_decref(doc);
    static const char *const want[] = {"/instruments/0/move_s", "/instruments/1/move_s",
                                       "/instruments/2/move_s", "/instruments/3/move_s"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(errs.v[i].path, want[i]);
    assert_non_null(strstr(errs.v[3].message, "only an instrument of kind mover"));
    lab_jerrs_free(&errs);
}

/* A run under way keeps its read inside its window even when an urgent run, released now,
 * wants the reader for a long time: the urgent one goes after. */
static void test_started_run_keeps_its_window(void **state)
{
    (void)state;
    solve("{\"instruments\":[{\"id\":\"inc\",\"kind\":\"incubator\",\"capacity\":4},"
          "{\"id\":\"reader\",\"kind\":\"plate_reader\"}],"
          "\"workflows\":[{\"name\":\"assay\",\"steps\":[{\"name\":\"incubate\","
          "\"on\":\"incubator\",\"duration_s\":300},{\"name\":\"read\",\"on\":\"plate_reader\","
          "\"duration_s\":60,\"start_within_s\":120}]},"
          "{\"name\":\"scan\",\"steps\":[{\"name\":\"scan\",\"on\":\"plate_reader\","
          "\"duration_s\":1000}]}],"
          "\"runs\":[{\"id\":\"urgent\",\"workflow\":\"scan\",\"priority\":\"urgent\"},"
          "{\"id\":\"under-way\",\"workflow\":\"assay\",\"started\":[{\"instrument\":\"inc\","
          "\"start_s\":-100}]}]}",
          20);
    assert_int_equal(res.nunscheduled, 0);
    const plan_slot_t *read = slot("under-way", 1), *scan = slot("urgent", 0);
    assert_true(read->start_s - 200 <= 120 + 1e-9);
    assert_true(scan->start_s >= read->end_s - 1e-9);
    done();
}

/* Time 0 is now: a step whose predecessor ended in the past starts at 0 at the earliest, and one
 * whose window has already closed cannot be planned. */
static void test_time_zero_is_now(void **state)
{
    (void)state;
    static const char *fmt =
        "{\"instruments\":[{\"id\":\"star\",\"kind\":\"liquid_handler\"},"
        "{\"id\":\"reader\",\"kind\":\"plate_reader\"}%s],"
        "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"d\",\"on\":\"liquid_handler\","
        "\"duration_s\":100},{\"name\":\"r\",\"on\":\"plate_reader\",\"duration_s\":50,"
        "\"start_within_s\":%d}]}],"
        "\"runs\":[{\"id\":\"a\",\"workflow\":\"w\",\"started\":[{\"instrument\":\"star\","
        "\"start_s\":-600}]}]}";
    char json[1000];
    snprintf(json, sizeof json, fmt, "", 1000);
    solve(json, 0);
    assert_int_equal(res.nunscheduled, 0);
    assert_true(slot("a", 1)->start_s >= 0);
    done();
    /* with a mover the plate goes over now, not when the dispense ended */
    snprintf(json, sizeof json, fmt, ",{\"id\":\"arm\",\"kind\":\"mover\",\"move_s\":30}", 1000);
    solve(json, 0);
    assert_int_equal(res.nunscheduled, 0);
    assert_true(find("a", 1, 1)->start_s == 0);
    assert_true(slot("a", 1)->start_s >= 30);
    done();
    snprintf(json, sizeof json, fmt, "", 100);
    solve(json, 0);
    assert_int_equal(res.nunscheduled, 1);
    assert_non_null(strstr(res.unscheduled[0].reason, "step r's window has passed: it had to "
                                                      "start within 100 s of d's end, 500 s ago"));
    done();
}

/* A re-plan as the daemon makes one: every step whose planned start has come has started
 * (at its planned time, on its planned instrument), except one dispense that started 50 s
 * late, after which its run's later steps have not; the next plan keeps the started steps
 * exactly, does not move their plates again, and every lag (and move) still holds. */
static void replan_case(const char *mover)
{
    char head[1200];
    snprintf(head, sizeof head,
             "{\"instruments\":[{\"id\":\"star\",\"kind\":\"liquid_handler\"},"
             "{\"id\":\"inc\",\"kind\":\"incubator\",\"capacity\":3},"
             "{\"id\":\"reader\",\"kind\":\"plate_reader\"}%s],"
             "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"d\",\"on\":\"liquid_handler\","
             "\"duration_s\":100},{\"name\":\"i\",\"on\":\"incubator\",\"duration_s\":600,"
             "\"start_within_s\":60},{\"name\":\"r\",\"on\":\"plate_reader\",\"duration_s\":90,"
             "\"start_within_s\":120}]}],\"runs\":[",
             mover);
    enum { RUNS = 5, STEPS = 3 };
    char json[6000];
    int n = snprintf(json, sizeof json, "%s", head);
    for (int i = 0; i < RUNS; i++)
        n += snprintf(json + n, sizeof json - (size_t)n, "%s{\"id\":\"r%d\",\"workflow\":\"w\"}",
                      i ? "," : "", i);
    snprintf(json + n, sizeof json - (size_t)n, "]}");
    solve(json, 20);
    assert_int_equal(res.nunscheduled, 0);
    /* the second dispense to start is the late one; now is just after its late start */
    double start[RUNS][STEPS];
    int inst[RUNS][STEPS], late = -1, first = 0;
    for (int i = 0; i < RUNS; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        for (int k = 0; k < STEPS; k++) {
            start[i][k] = slot(id, k)->start_s;
            inst[i][k] = slot(id, k)->instrument;
        }
        if (start[i][0] < start[first][0])
            first = i;
    }
    for (int i = 0; i < RUNS; i++)
        if (i != first && (late < 0 || start[i][0] < start[late][0]))
            late = i;
    double now = start[late][0] + 60;
    int nfixed[RUNS];
    char ids[8][PLAN_NAME_MAX]; /* the instruments' ids, by index: the same in both problems */
    for (int i = 0; i < prob.ninstruments && i < 8; i++)
        snprintf(ids[i], sizeof ids[i], "%s", prob.instruments[i].id);
    done();
    n = snprintf(json, sizeof json, "%s", head);
    for (int i = 0; i < RUNS; i++) {
        char started[600] = "";
        int m = 0;
        nfixed[i] = 0;
        if (i == late)
            start[i][0] += 50;
        for (int k = 0; k < STEPS && start[i][k] <= now && (i != late || k == 0); k++) {
            m += snprintf(started + m, sizeof started - (size_t)m,
                          "%s{\"instrument\":\"%s\",\"start_s\":%.17g}", k ? "," : ",\"started\":[",
                          ids[inst[i][k]], start[i][k] - now);
            nfixed[i]++;
        }
        if (m)
            snprintf(started + m, sizeof started - (size_t)m, "]");
        n += snprintf(json + n, sizeof json - (size_t)n, "%s{\"id\":\"r%d\",\"workflow\":\"w\"%s}",
                      i ? "," : "", i, started);
    }
    snprintf(json + n, sizeof json - (size_t)n, "]}");
    assert_true(nfixed[first] >= 1 && nfixed[late] == 1);
    solve(json, 20); /* plan_verify inside: fixed steps kept, every lag holds, moves right */
    assert_int_equal(res.nunscheduled, 0);
    int want_moves = 0;
    for (int i = 0; i < RUNS; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        for (int k = 0; k < STEPS; k++) {
            const plan_slot_t *sl = slot(id, k);
            if (k < nfixed[i]) { /* started: where it was, and its move is in the past */
                assert_true(sl->start_s == start[i][k] - now);
                assert_int_equal(sl->instrument, inst[i][k]);
                assert_null(find(id, k, 1));
            } else {
                assert_true(sl->start_s >= 0);
                want_moves += mover[0] && k > 0;
            }
        }
    }
    assert_int_equal(moves(), want_moves);
    char id[8];
    snprintf(id, sizeof id, "r%d", late);
    assert_true(slot(id, 1)->start_s - slot(id, 0)->end_s <= 60 + 1e-9);
    if (mover[0]) { /* the late plate goes over from the STAR once its dispense is over */
        const plan_slot_t *mv = find(id, 1, 1);
        assert_non_null(mv);
        assert_int_equal(mv->from, inst[late][0]);
        assert_true(mv->start_s >= slot(id, 0)->end_s - 1e-9);
    }
    done();
}

static void test_replan_after_a_late_step(void **state)
{
    (void)state;
    replan_case("");
    replan_case(",{\"id\":\"arm\",\"kind\":\"mover\",\"move_s\":20}");
}

static void test_job_shop_optimum(void **state)
{
    (void)state;
    /* 3 jobs x 3 machines; optimum 11 (every machine has 11 units of work... not all: m1 11). */
    solve("{\"instruments\":[{\"id\":\"m0\"},{\"id\":\"m1\"},{\"id\":\"m2\"}],"
          "\"workflows\":[{\"name\":\"j0\",\"steps\":[{\"on\":\"m0\",\"duration_s\":3},"
          "{\"on\":\"m1\",\"duration_s\":3},{\"on\":\"m2\",\"duration_s\":3}]},"
          "{\"name\":\"j1\",\"steps\":[{\"on\":\"m1\",\"duration_s\":4},"
          "{\"on\":\"m0\",\"duration_s\":2},{\"on\":\"m2\",\"duration_s\":2}]},"
          "{\"name\":\"j2\",\"steps\":[{\"on\":\"m2\",\"duration_s\":2},"
          "{\"on\":\"m0\",\"duration_s\":3},{\"on\":\"m1\",\"duration_s\":4}]}],"
          "\"runs\":[{\"id\":\"a\",\"workflow\":\"j0\"},{\"id\":\"b\",\"workflow\":\"j1\"},"
          "{\"id\":\"c\",\"workflow\":\"j2\"}]}",
          200);
    /* machine m1 carries 11 and its first operation cannot start before 0; no plan is shorter */
    assert_true(res.lower_bound_s == 11);
    assert_true(res.makespan_s >= 11);
    assert_true(res.makespan_s <= 13);
    done();
}

static void test_bad_problems_named(void **state)
{
    (void)state;
    json_t *doc = json_loads(
        "{\"instruments\":[{\"id\":\"a\"},{\"id\":\"a\",\"capacity\":0}],"
        "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"on\":\"nothing\",\"duration_s\":-1},"
        "{\"on\":\"a\",\"duration_s\":1,\"start_after_s\":10,\"start_within_s\":5}]}],"
        "\"runs\":[{\"id\":\"r\",\"workflow\":\"x\"},{\"workflow\":\"w\",\"priority\":\"asap\"}]}",
        0, NULL);
    lab_jerrs_t errs = {0};
    plan_problem_t p;
    assert_true(plan_from_json(doc, &p, &errs) > 0);
    json_decref(doc);
    char all[2048] = "";
    for (int i = 0; i < errs.n; i++) {
        strncat(all, errs.v[i].path, sizeof all - strlen(all) - 1);
        strncat(all, " ", sizeof all - strlen(all) - 1);
    }
    static const char *const want[] = {"/instruments/1/id",
                                       "/instruments/1/capacity",
                                       "/workflows/0/steps/0/on",
                                       "/workflows/0/steps/0/duration_s",
                                       "/workflows/0/steps/1/start_within_s",
                                       "/runs/0/workflow",
                                       "/runs/1/id",
                                       "/runs/1/priority"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(all, want[i]))
            fail_msg("%s not named in %s", want[i], all);
    lab_jerrs_free(&errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unmeetable_lag),
        cmocka_unit_test(test_capacity),
        cmocka_unit_test(test_like_runs_not_searched),
        cmocka_unit_test(test_urgent_overtakes),
        cmocka_unit_test(test_deadline_first),
        cmocka_unit_test(test_started_steps_kept),
        cmocka_unit_test(test_job_shop_optimum),
        cmocka_unit_test(test_bad_problems_named),
        cmocka_unit_test(test_moves_on_a_mover),
        cmocka_unit_test(test_verify_checks_moves),
        cmocka_unit_test(test_started_steps_moves),
        cmocka_unit_test(test_move_s_read),
        cmocka_unit_test(test_started_run_keeps_its_window),
        cmocka_unit_test(test_time_zero_is_now),
        cmocka_unit_test(test_replan_after_a_late_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
