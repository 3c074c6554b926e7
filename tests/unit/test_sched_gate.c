/* The scheduler's hooks for the lab's shared queue (daemon/sched/sched.c): a run whose first
 * step is due waits on the gate (the fence) with its reason until the gate answers, a refused
 * run is released without a step begun, a gate that could not answer is asked again, and the
 * claim window (lab_sched_room) counts the runs held that have not begun. */
#include "tests/unit/sched_fake.h"

#define READ_WF                                                                                    \
    "{\"name\":\"read\",\"steps\":[{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"rdr\","  \
    "\"duration_s\":60}]}"

/* The gate: runs whose id starts with 'c' (claimed) are fenced, the others pass. */
typedef struct gate_log {
    char asked[16][16];
    int n;
} gate_log_t;

static int gate(void *ctx, const char *id)
{
    gate_log_t *g = ctx;
    if (g->n < 16)
        snprintf(g->asked[g->n++], sizeof g->asked[0], "%s", id);
    return id[0] == 'c' ? 1 : 0;
}

static int asked(const gate_log_t *g, const char *id)
{
    int n = 0;
    for (int i = 0; i < g->n; i++)
        n += strcmp(g->asked[i], id) == 0;
    return n;
}

static bool waits_on_gate(fx_t *f, const void *id)
{
    const char *why = json_string_value(json_object_get(fx_doc(f, id), "waiting_reason"));
    return why && strcmp(why, LAB_SCHED_GATE_WHY) == 0;
}

static bool was_asked(fx_t *f, const void *arg)
{
    (void)f;
    const gate_log_t *g = ((const void *const *)arg)[0];
    return asked(g, ((const char *const *)arg)[1]) >= *(const int *)((const void *const *)arg)[2];
}

static void test_gate_holds_until_open(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    gate_log_t g = {0};
    lab_sched_set_gate(f->s, gate, &g);
    fx_workflow(f, READ_WF);
    fx_submit(f, "local", "read", NULL);
    fx_submit(f, "c1", "read", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_run_is, "local done"));
    assert_true(fx_until(f, waits_on_gate, "c1"));
    assert_string_equal(fx_state(f, "c1"), "planned");
    assert_int_equal(fake_calls("rdr:read_absorbance"), 1); /* the local run's only */
    assert_int_equal(asked(&g, "c1"), 1);
    fx_advance(f, 600);
    fx_settle(f, 20);
    assert_int_equal(fake_calls("rdr:read_absorbance"), 1);
    assert_int_equal(asked(&g, "c1"), 1); /* asked once, not on every tick */
    lab_sched_gate_open(f->s, "c1", 0);
    assert_true(fx_until(f, fx_run_is, "c1 done"));
    assert_int_equal(fake_calls("rdr:read_absorbance"), 2);
    assert_null(json_object_get(fx_doc(f, "c1"), "waiting_reason"));
    fx_free(f);
}

static void test_gate_refused_releases(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    gate_log_t g = {0};
    lab_sched_set_gate(f->s, gate, &g);
    fx_workflow(f, READ_WF);
    fx_submit(f, "c2", "read", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, waits_on_gate, "c2"));
    lab_sched_gate_open(f->s, "c2", LAB_ESTATE);
    assert_true(fx_until(f, fx_run_is, "c2 released"));
    assert_non_null(json_object_get(fx_doc(f, "c2"), "released_reason"));
    fx_advance(f, 600);
    fx_settle(f, 20);
    assert_int_equal(fake_calls("rdr:read_absorbance"), 0);
    lab_sched_stats_t st;
    lab_sched_stats(f->s, &st);
    assert_int_equal(st.runs, 0);
    assert_int_equal(st.released, 1);
    /* a late answer for a run that is gone changes nothing */
    lab_sched_gate_open(f->s, "c2", 0);
    fx_settle(f, 5);
    assert_int_equal(fake_calls("rdr:read_absorbance"), 0);
    fx_free(f);
}

static void test_gate_no_answer_asks_again(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    gate_log_t g = {0};
    lab_sched_set_gate(f->s, gate, &g);
    fx_workflow(f, READ_WF);
    fx_submit(f, "c3", "read", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, waits_on_gate, "c3"));
    lab_sched_gate_open(f->s, "c3", LAB_ECONN);
    fx_settle(f, 20);
    assert_int_equal(asked(&g, "c3"), 1); /* not at once */
    lab_sched_replan(f->s);               /* the fleet can answer again */
    int two = 2;
    const void *arg[3] = {&g, "c3", &two};
    assert_true(fx_until(f, was_asked, arg));
    assert_int_equal(fake_calls("rdr:read_absorbance"), 0);
    lab_sched_gate_open(f->s, "c3", 0);
    assert_true(fx_until(f, fx_run_is, "c3 done"));
    fx_free(f);
}

static void test_room_and_release(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, READ_WF);
    assert_int_equal(lab_sched_room(f->s), LAB_SCHED_CLAIM_WINDOW);
    lab_driver_pause(lab_instr_find(f->in, "rdr", 3), true);
    fx_submit(f, "a", "read", NULL);
    fx_submit(f, "b", "read", NULL);
    fx_submit(f, "c", "read", NULL);
    lab_sched_replan(f->s);
    fx_settle(f, 10);
    assert_int_equal(lab_sched_room(f->s), LAB_SCHED_CLAIM_WINDOW - 3);
    assert_int_equal(lab_sched_release(f->s, "b", "this cell stops"), 0);
    assert_true(fx_until(f, fx_run_is, "b released"));
    assert_string_equal(json_string_value(json_object_get(fx_doc(f, "b"), "released_reason")),
                        "this cell stops");
    assert_int_equal(lab_sched_room(f->s), LAB_SCHED_CLAIM_WINDOW - 2);
    assert_int_equal(lab_sched_release(f->s, "b", "again"), LAB_ENOTFOUND);
    assert_int_equal(lab_sched_release(f->s, "nobody", "x"), LAB_ENOTFOUND);
    fake_script("rdr", "read_absorbance", FAKE_NEVER); /* a stays on the reader */
    lab_driver_pause(lab_instr_find(f->in, "rdr", 3), false);
    assert_true(fx_until(f, fx_run_is, "a running"));
    /* begun: the plate is here, the run stays */
    assert_int_equal(lab_sched_release(f->s, "a", "x"), LAB_ESTATE);
    assert_string_equal(fx_state(f, "b"), "released");
    assert_int_equal(fake_calls("rdr:read_absorbance"), 1);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gate_holds_until_open),
        cmocka_unit_test(test_gate_refused_releases),
        cmocka_unit_test(test_gate_no_answer_asks_again),
        cmocka_unit_test(test_room_and_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
