/* Planning (daemon/sched/plan.c) on a manual clock and fake instruments: the timeline the
 * scheduler plans keeps every step within its lag window after the step before, and keeps an
 * instrument to its capacity. */
#include "tests/unit/sched_fake.h"

static int64_t at(json_t *item, const char *key)
{
    int64_t ms = 0;
    assert_int_equal(lab_time_parse(json_string_value(json_object_get(item, key)), &ms), 0);
    return ms;
}

/* Three plates: 60 s in the incubator, then a 30 s read that must start within 5 s of it. One
 * reader: the incubations are staggered so that each read still starts in its window. */
static void test_plan_keeps_lag_window(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, "{\"name\":\"lag\",\"steps\":["
                   "{\"name\":\"warm\",\"op\":\"incubate\",\"on\":\"inc\",\"duration_s\":60},"
                   "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"rdr\","
                   "\"duration_s\":30,\"start_within_s\":5}]}");
    lab_driver_pause(lab_instr_find(f->in, "inc", 3), true); /* plan, start nothing */
    fx_submit(f, "a", "lag", NULL);
    fx_submit(f, "b", "lag", NULL);
    fx_submit(f, "c", "lag", NULL);
    lab_driver_pause(lab_instr_find(f->in, "inc", 3), false);
    lab_sched_replan(f->s);
    fx_settle(f, 5);
    json_t *tl = lab_sched_timeline(f->s);
    json_t *items = json_object_get(tl, "items");
    int64_t warm_end[3] = {0}, read_start[3] = {0}, read_end[3] = {0};
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        int r = json_string_value(json_object_get(it, "run"))[0] - 'a';
        assert_true(r >= 0 && r < 3);
        if (strcmp(json_string_value(json_object_get(it, "step")), "warm") == 0) {
            warm_end[r] = at(it, "end");
        } else {
            read_start[r] = at(it, "start");
            read_end[r] = at(it, "end");
        }
    }
    for (int r = 0; r < 3; r++) {
        assert_true(warm_end[r] > 0 && read_start[r] > 0);
        assert_true(read_start[r] >= warm_end[r]);
        assert_true(read_start[r] - warm_end[r] <= 5000);
        for (int q = 0; q < r; q++) /* one reader: no two reads at once */
            assert_true(read_end[q] <= read_start[r] || read_end[r] <= read_start[q]);
    }
    assert_int_equal(json_integer_value(json_object_get(tl, "lag_violations")), 0);
    json_decref(tl);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_keeps_lag_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
