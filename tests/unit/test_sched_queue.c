/* Admission (daemon/sched/queue.c) on a manual clock and fake instruments: runs start in the
 * planner's order (priority, then arrival); the look-ahead window holds the first 256 waiting
 * runs, the others wait in the queue with that reason, and a run that ranks ahead of the window's
 * last takes its place. */
#include "tests/unit/sched_fake.h"

#define READ_WF                                                                                    \
    "{\"name\":\"read\",\"steps\":[{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"rdr\","  \
    "\"duration_s\":60}]}"

static lab_driver_t *reader(fx_t *f)
{
    return lab_instr_find(f->in, "rdr", 3);
}

/* The index in f->events of "ID running", or -1. */
static int started_at(fx_t *f, const char *id)
{
    char want[80];
    snprintf(want, sizeof want, "%s running", id);
    for (size_t i = 0; i < json_array_size(f->events); i++)
        if (strcmp(json_string_value(json_array_get(f->events, i)), want) == 0)
            return (int)i;
    return -1;
}

static void test_admission_order(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, READ_WF);
    lab_driver_pause(reader(f), true); /* nothing starts until all three are in */
    fx_submit(f, "low", "read", "{\"priority\":\"low\"}");
    fx_submit(f, "normal-1", "read", NULL);
    fx_submit(f, "urgent", "read", "{\"priority\":\"urgent\"}");
    fx_submit(f, "normal-2", "read", NULL);
    lab_sched_replan(f->s);
    fx_settle(f, 20);
    assert_int_equal(fake.nlog, 0);
    lab_driver_pause(reader(f), false);
    assert_true(fx_until(f, fx_run_is, "low done"));
    assert_int_equal(fake_calls("rdr:read_absorbance"), 4);
    int u = started_at(f, "urgent"), n1 = started_at(f, "normal-1"), n2 = started_at(f, "normal-2"),
        l = started_at(f, "low");
    assert_true(u >= 0 && u < n1 && n1 < n2 && n2 < l);
    fx_free(f);
}

/* How many waiting runs give the queue's reason, and whether id is one of them. */
static int queued(fx_t *f, const char *id, bool *is)
{
    json_t *tl = lab_sched_timeline(f->s);
    json_t *w = json_object_get(tl, "waiting");
    int n = 0;
    *is = false;
    for (size_t i = 0; i < json_array_size(w); i++) {
        json_t *o = json_array_get(w, i);
        const char *why = json_string_value(json_object_get(o, "reason"));
        if (strncmp(why, "queued: the first 256 waiting runs", 34) == 0) {
            n++;
            *is |= strcmp(json_string_value(json_object_get(o, "run")), id) == 0;
        }
    }
    json_decref(tl);
    return n;
}

static void test_window(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, READ_WF);
    lab_driver_pause(reader(f), true);
    f->cfg.sched_budget_ms = 1; /* 256 runs: the planner's first answer will do */
    char id[16];
    for (int i = 0; i < 260; i++) {
        snprintf(id, sizeof id, "n%03d", i);
        fx_submit(f, id, "read", NULL);
    }
    lab_sched_replan(f->s);
    fx_settle(f, 10);
    bool is;
    assert_int_equal(queued(f, "n259", &is), 4); /* the window holds 256 */
    assert_true(is);
    assert_int_equal(queued(f, "n255", &is), 4);
    assert_false(is);
    /* an urgent run ranks ahead of the window's last, which leaves for the queue */
    fx_submit(f, "urgent", "read", "{\"priority\":\"urgent\"}");
    lab_sched_replan(f->s);
    fx_settle(f, 10);
    assert_int_equal(queued(f, "urgent", &is), 5);
    assert_false(is);
    assert_int_equal(queued(f, "n255", &is), 5);
    assert_true(is);
    lab_sched_stats_t st;
    lab_sched_stats(f->s, &st);
    assert_int_equal(st.runs, 261);
    /* the reader comes back: the urgent run goes first, and the queue drains through the window */
    lab_driver_pause(reader(f), false);
    assert_true(fx_until(f, fx_run_is, "urgent done"));
    const char *first = NULL;
    for (size_t i = 0; i < json_array_size(f->events) && !first; i++) {
        const char *e = json_string_value(json_array_get(f->events, i));
        if (strstr(e, " running"))
            first = e;
    }
    assert_string_equal(first, "urgent running");
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admission_order),
        cmocka_unit_test(test_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
