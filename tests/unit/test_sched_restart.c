/* Restart (daemon/sched/restart.c) on a manual clock and fake instruments: an incubation whose
 * plate is inside goes on from its load after a restart (no second load, the clock runs from
 * loaded_at); a read that was in flight is interrupted and its policy applied. */
#include "tests/unit/sched_fake.h"

static void test_restart_mid_incubation(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, "{\"name\":\"warm\",\"steps\":["
                   "{\"name\":\"warm\",\"op\":\"incubate\",\"on\":\"inc\",\"duration_s\":600}]}");
    fx_submit(f, "r1", "warm", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_step_has, "r1 0 loaded_at"));
    fx_advance(f, 200);
    fx_settle(f, 10);
    fx_stop_sched(f); /* the daemon stops with the plate inside */
    memset(&fake, 0, sizeof fake);
    json_object_clear(f->docs);
    fx_advance(f, 100); /* down for 100 lab s: the incubation's time runs on */
    fx_start_sched(f);
    fx_settle(f, 20);
    assert_int_equal(fake_calls("inc:take_out"), 0);
    fx_advance(f, 299); /* 599 s since the load */
    fx_settle(f, 20);
    assert_int_equal(fake_calls("inc:take_out"), 0);
    fx_advance(f, 1);
    assert_true(fx_until(f, fx_run_is, "r1 done"));
    assert_int_equal(fake_calls("inc:put_in"), 0); /* no second load */
    assert_int_equal(fake_calls("inc:take_out"), 1);
    json_t *st = fx_step(f, "r1", 0);
    assert_int_equal(json_integer_value(json_object_get(st, "interruptions")), 1);
    assert_int_equal(json_integer_value(json_object_get(st, "attempts")), 1);
    assert_true(json_is_true(json_object_get(st, "unloaded")));
    fx_free(f);
}

/* A read in flight at the stop: interrupted, and its policy (retry) runs it again. */
static void test_restart_interrupts_a_read(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, "{\"name\":\"read\",\"on_failure\":{\"action\":\"retry\"},\"steps\":["
                   "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"rdr\","
                   "\"duration_s\":60}]}");
    fake_script("rdr", "read_absorbance", FAKE_NEVER);
    fx_submit(f, "r1", "read", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_run_is, "r1 running"));
    fx_stop_sched(f);
    memset(&fake, 0, sizeof fake);
    json_object_clear(f->docs);
    fx_start_sched(f);
    assert_true(fx_until(f, fx_run_is, "r1 done"));
    json_t *st = fx_step(f, "r1", 0);
    assert_int_equal(json_integer_value(json_object_get(st, "interruptions")), 1);
    assert_int_equal(json_integer_value(json_object_get(st, "attempts")), 2);
    assert_int_equal(fake_calls("rdr:read_absorbance"), 1);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restart_mid_incubation),
        cmocka_unit_test(test_restart_interrupts_a_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
