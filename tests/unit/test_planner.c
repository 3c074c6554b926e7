/* The planner on small problems whose right answer is known: an unmeetable maximum lag
 * (unscheduled, with the reason), capacity above one, an urgent run overtaking, deadlines
 * ordering, started steps kept exactly, a job shop solved to its optimum, bad problems named by
 * path; every plan passes plan_verify. */
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
        "{\"id\":\"reader\",\"kind\":\"plate_reader\"}],"
        "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"d\",\"on\":\"liquid_handler\","
        "\"duration_s\":100},{\"name\":\"r\",\"on\":\"plate_reader\",\"duration_s\":50,"
        "\"start_within_s\":%d}]}],"
        "\"runs\":[{\"id\":\"a\",\"workflow\":\"w\",\"started\":[{\"instrument\":\"star\","
        "\"start_s\":-600}]}]}";
    char json[1000];
    snprintf(json, sizeof json, fmt, 1000);
    solve(json, 0);
    assert_int_equal(res.nunscheduled, 0);
    assert_true(slot("a", 1)->start_s >= 0);
    done();
    snprintf(json, sizeof json, fmt, 100);
    solve(json, 0);
    assert_int_equal(res.nunscheduled, 1);
    assert_non_null(strstr(res.unscheduled[0].reason, "step r's window has passed: it had to "
                                                      "start within 100 s of d's end, 500 s ago"));
    done();
}

/* A re-plan as the daemon makes one: the plan's first steps started (one of them 50 s late);
 * the next plan keeps them where they are and every lag still holds. */
static void test_replan_after_a_late_step(void **state)
{
    (void)state;
    static const char *head =
        "{\"instruments\":[{\"id\":\"star\",\"kind\":\"liquid_handler\"},"
        "{\"id\":\"inc\",\"kind\":\"incubator\",\"capacity\":3},"
        "{\"id\":\"reader\",\"kind\":\"plate_reader\"}],"
        "\"workflows\":[{\"name\":\"w\",\"steps\":[{\"name\":\"d\",\"on\":\"liquid_handler\","
        "\"duration_s\":100},{\"name\":\"i\",\"on\":\"incubator\",\"duration_s\":600,"
        "\"start_within_s\":60},{\"name\":\"r\",\"on\":\"plate_reader\",\"duration_s\":90,"
        "\"start_within_s\":120}]}],\"runs\":[";
    char json[4000];
    int n = snprintf(json, sizeof json, "%s", head);
    for (int i = 0; i < 5; i++)
        n += snprintf(json + n, sizeof json - (size_t)n, "%s{\"id\":\"r%d\",\"workflow\":\"w\"}",
                      i ? "," : "", i);
    snprintf(json + n, sizeof json - (size_t)n, "]}");
    solve(json, 20);
    assert_int_equal(res.nunscheduled, 0);
    /* 150 s later: the first two dispenses have started, the second 50 s late */
    double now = 150, start[5];
    int first = 0, second = -1;
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        start[i] = slot(id, 0)->start_s;
        if (start[i] < start[first])
            first = i;
    }
    for (int i = 0; i < 5; i++)
        if (i != first && (second < 0 || start[i] < start[second]))
            second = i;
    assert_true(start[second] + 50 <= now);
    double fixed_first = start[first] - now, fixed_second = start[second] + 50 - now;
    done();
    n = snprintf(json, sizeof json, "%s", head);
    for (int i = 0; i < 5; i++) {
        char started[160] = "";
        if (i == first || i == second)
            snprintf(started, sizeof started,
                     ",\"started\":[{\"instrument\":\"star\",\"start_s\":%g}]",
                     i == first ? fixed_first : fixed_second);
        n += snprintf(json + n, sizeof json - (size_t)n, "%s{\"id\":\"r%d\",\"workflow\":\"w\"%s}",
                      i ? "," : "", i, started);
    }
    snprintf(json + n, sizeof json - (size_t)n, "]}");
    solve(json, 20); /* plan_verify inside: fixed steps kept, every lag holds */
    assert_int_equal(res.nunscheduled, 0);
    char late[8];
    snprintf(late, sizeof late, "r%d", second);
    assert_true(slot(late, 0)->start_s == fixed_second);
    assert_true(slot(late, 1)->start_s - slot(late, 0)->end_s <= 60 + 1e-9);
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        if (i != first && i != second)
            assert_true(slot(id, 0)->start_s >= 0);
    }
    done();
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
        cmocka_unit_test(test_urgent_overtakes),
        cmocka_unit_test(test_deadline_first),
        cmocka_unit_test(test_started_steps_kept),
        cmocka_unit_test(test_job_shop_optimum),
        cmocka_unit_test(test_bad_problems_named),
        cmocka_unit_test(test_moves_on_a_mover),
        cmocka_unit_test(test_started_run_keeps_its_window),
        cmocka_unit_test(test_time_zero_is_now),
        cmocka_unit_test(test_replan_after_a_late_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
