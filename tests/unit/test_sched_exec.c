/* The step interpreter (daemon/sched/exec.c) and the recovery policy (recovery.c) on a manual
 * clock and fake instruments: a program with a mark, a wait and a measure; an optional entry
 * that fails; a failure followed by retry, skip and pause; a dispense whose outcome is unknown. */
#include "tests/unit/sched_fake.h"

/* Incubate 600 s at 37 °C, then read: set point, load (mark), wait, unload (mark), read
 * (measure). The wait ends on the lab clock, not before. */
static void test_program_wait_mark_measure(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, "{\"name\":\"warm-read\",\"steps\":["
                   "{\"name\":\"warm\",\"op\":\"incubate\",\"on\":\"inc\",\"duration_s\":600,"
                   "\"params\":{\"temperature_c\":37}},"
                   "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"rdr\",\"duration_s\":60}"
                   "]}");
    fx_submit(f, "r1", "warm-read", "{\"campaign\":\"c1\"}");
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_step_has, "r1 0 loaded_at"));
    /* the mark is stored once the load succeeded: a restart knows the plate is inside */
    json_t *warm = fx_step(f, "r1", 0);
    assert_string_equal(fx_step_state(f, "r1", 0), "running");
    assert_non_null(json_object_get(warm, "loaded_at"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(warm, "site"), "cassette")),
                     1);
    assert_int_equal(fake_calls("inc:hold_at"), 1);
    fx_advance(f, 599);
    fx_settle(f, 20);
    assert_int_equal(fake_calls("inc:take_out"), 0);
    fx_advance(f, 1);
    assert_true(fx_until(f, fx_run_is, "r1 done"));
    assert_string_equal(fake.log[0], "inc:hold_at");
    assert_string_equal(fake.log[1], "inc:put_in");
    assert_string_equal(fake.log[2], "inc:take_out");
    assert_string_equal(fake.log[3], "rdr:read_absorbance");
    assert_true(json_is_true(json_object_get(fx_step(f, "r1", 0), "unloaded")));
    /* the read's values are measurements: a campaign's plate keeps them in its document */
    json_t *values = json_object_get(
        json_object_get(json_object_get(fx_doc(f, "r1"), "readings"), "read"), "values");
    assert_true(json_real_value(json_object_get(values, "B1")) == 0.5);
    fx_free(f);
}

/* Any run, not only a campaign's, keeps its read values: the web app's heat map reads them from
 * the run's document. */
static void test_run_keeps_readings(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, "{\"name\":\"just-read\",\"steps\":["
                   "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"rdr\","
                   "\"duration_s\":60,\"params\":{\"wavelength_nm\":450}}]}");
    fx_submit(f, "r1", "just-read", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_run_is, "r1 done"));
    json_t *read = json_object_get(json_object_get(fx_doc(f, "r1"), "readings"), "read");
    assert_string_equal(json_string_value(json_object_get(read, "measure")), "absorbance");
    json_t *values = json_object_get(read, "values");
    assert_true(json_real_value(json_object_get(values, "B1")) == 0.5);
    fx_free(f);
}

#define DISPENSE_WF(name, policy)                                                                  \
    "{\"name\":\"" name "\",\"on_failure\":" policy ",\"steps\":["                                 \
    "{\"name\":\"fill\",\"op\":\"dispense\",\"on\":\"hnd\",\"duration_s\":120,"                    \
    "\"params\":{\"reagent\":\"water\",\"volume_ul\":10,\"wells\":\"A1:B1\"}}]}"

/* Tips that would not go on (nothing wet happened): the policy retries; the new attempt drops
 * tips first, an optional entry whose failure (no tips on) does not fail the step. */
static void test_retry_with_optional_entry(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, DISPENSE_WF("fill", "{\"action\":\"retry\",\"retries\":2}"));
    fake_script("hnd", "tips_on", FAKE_NOT_STARTED);
    fake_script("hnd", "tips_off", FAKE_REFUSED);
    fx_submit(f, "r1", "fill", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_called, "hnd:tips_on"));
    fx_settle(f, 20);
    fx_recover(f, "hnd"); /* the device answers again */
    assert_true(fx_until(f, fx_run_is, "r1 done"));
    const char *want[] = {"hnd:tips_on", "hnd:tips_off", "hnd:tips_on",
                          "hnd:draw",    "hnd:eject",    "hnd:tips_off"};
    assert_int_equal(fake.nlog, 6);
    for (int i = 0; i < 6; i++)
        assert_string_equal(fake.log[i], want[i]);
    assert_int_equal(json_integer_value(json_object_get(fx_step(f, "r1", 0), "attempts")), 2);
    fx_free(f);
}

#define READS_WF(name, policy)                                                                     \
    "{\"name\":\"" name "\",\"steps\":["                                                           \
    "{\"name\":\"first\",\"op\":\"read_absorbance\",\"on\":\"rdr\",\"duration_s\":60,"             \
    "\"on_failure\":" policy "},"                                                                  \
    "{\"name\":\"second\",\"op\":\"read_absorbance\",\"on\":\"rdr\",\"duration_s\":60}]}"

static void test_failure_then_skip(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, READS_WF("reads", "{\"action\":\"skip\"}"));
    fake_script("rdr", "read_absorbance", FAKE_DEVICE_ERROR);
    fx_submit(f, "r1", "reads", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_called, "rdr:read_absorbance"));
    fx_settle(f, 20);
    fx_recover(f, "rdr");
    assert_true(fx_until(f, fx_run_is, "r1 done"));
    assert_string_equal(fx_step_state(f, "r1", 0), "skipped");
    assert_non_null(strstr(json_string_value(json_object_get(fx_step(f, "r1", 0), "error")),
                           "the fake says no"));
    assert_string_equal(fx_step_state(f, "r1", 1), "done");
    assert_int_equal(fake_calls("rdr:read_absorbance"), 2);
    fx_free(f);
}

/* Every action the scheduler sends goes through lab_instr_call: its listeners hear it queued
 * and ended, with the run's plate, the run and "scheduler"; a failure ends with its error. */
static void heard(void *ctx, const lab_instr_act_t *a)
{
    char line[200];
    snprintf(line, sizeof line, "%s %s:%s %s %s %s %s", a->ended ? "ended" : "queued",
             lab_driver_id(a->d), a->action, a->who->plate ? a->who->plate : "-",
             a->who->run ? a->who->run : "-", a->who->by ? a->who->by : "-",
             !a->ended                ? ""
             : a->err->code == LAB_OK ? "ok"
                                      : lab_err_json_name(a->err->code));
    json_array_append_new(ctx, json_string(line));
}

static bool heard_has(json_t *lines, const char *want)
{
    size_t i;
    json_t *v;
    json_array_foreach(lines, i, v) if (strcmp(json_string_value(v), want) == 0) return true;
    return false;
}

static void test_action_listeners(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    json_t *lines = json_array();
    assert_int_equal(lab_instr_on_action(f->in, heard, lines), 0);
    fx_workflow(f, READS_WF("reads", "{\"action\":\"skip\"}"));
    fake_script("rdr", "read_absorbance", FAKE_DEVICE_ERROR);
    fx_submit(f, "r1", "reads", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_called, "rdr:read_absorbance"));
    fx_settle(f, 20);
    fx_recover(f, "rdr");
    assert_true(fx_until(f, fx_run_is, "r1 done"));
    assert_true(heard_has(lines, "queued rdr:read_absorbance r1 r1 scheduler "));
    assert_true(heard_has(lines, "ended rdr:read_absorbance r1 r1 scheduler device_error"));
    assert_true(heard_has(lines, "ended rdr:read_absorbance r1 r1 scheduler ok"));
    /* each queued action ends once */
    size_t queued = 0, ended = 0, i;
    json_t *v;
    json_array_foreach(lines, i, v)
    {
        queued += strncmp(json_string_value(v), "queued ", 7) == 0;
        ended += strncmp(json_string_value(v), "ended ", 6) == 0;
    }
    assert_int_equal(queued, 2); /* the first read failed (skipped), the second one ran */
    assert_int_equal(queued, ended);
    /* one refused at once is not heard; the listener table has room for four */
    lab_drv_error_t err;
    size_t before = json_array_size(lines);
    assert_int_not_equal(lab_instr_call(f->in, lab_instr_find(f->in, "rdr", 3), "no_such", NULL, 0,
                                        NULL, NULL, NULL, &err, NULL),
                         0);
    assert_int_equal(json_array_size(lines), before);
    for (int k = 1; k < LAB_INSTR_ACTION_LISTENERS; k++)
        assert_int_equal(lab_instr_on_action(f->in, heard, lines), 0);
    assert_int_equal(lab_instr_on_action(f->in, heard, lines), LAB_EFULL);
    fx_free(f);
    json_decref(lines);
}

static void on_done(void *arg, int status, const char *doc, const char *msg)
{
    (void)doc;
    (void)msg;
    *(int *)arg = status;
}

static void test_failure_then_pause_and_resume(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, READS_WF("reads", "{\"action\":\"pause\"}"));
    fake_script("rdr", "read_absorbance", FAKE_DEVICE_ERROR);
    fx_submit(f, "r1", "reads", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_run_is, "r1 paused"));
    const char *why = json_string_value(json_object_get(fx_doc(f, "r1"), "paused_reason"));
    assert_non_null(strstr(why, "step first failed"));
    fx_settle(f, 20);
    assert_int_equal(fake_calls("rdr:read_absorbance"), 1); /* nothing runs while paused */
    fx_recover(f, "rdr");
    char msg[200];
    int answered = -1;
    assert_int_equal(
        lab_sched_resume(f->s, "r1", "tester", "retry", NULL, on_done, &answered, msg, sizeof msg),
        0);
    assert_true(fx_until(f, fx_run_is, "r1 done"));
    assert_int_equal(answered, 0);
    assert_int_equal(json_integer_value(json_object_get(fx_step(f, "r1", 0), "attempts")), 2);
    assert_string_equal(fx_step_state(f, "r1", 0), "done");
    fx_free(f);
}

/* A dispense that was sent and never answered: the step times out, its outcome is unknown, and
 * a dispense may not be repeated, so the run pauses although the policy says retry. */
static void test_dispense_unknown_outcome_pauses(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, DISPENSE_WF("fill", "{\"action\":\"retry\",\"retries\":3}"));
    fake_script("hnd", "eject", FAKE_NEVER);
    fx_submit(f, "r1", "fill", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_called, "hnd:eject"));
    assert_true(fx_until(f, fx_run_is, "r1 running"));
    fx_settle(f, 20);
    fx_advance(f, 2 * 120 + 300); /* the step's deadline: factor x duration + 300 s */
    assert_true(fx_until(f, fx_run_is, "r1 paused"));
    const char *why = json_string_value(json_object_get(fx_doc(f, "r1"), "paused_reason"));
    assert_non_null(strstr(why, "may or may not have happened"));
    assert_non_null(strstr(why, "aspirated 10 µL from water"));
    assert_int_equal(fake_calls("hnd:eject"), 1);
    fx_free(f);
}

/* The same with a timeout the instrument reports: no second dispense either. */
static void test_dispense_timeout_pauses(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, DISPENSE_WF("fill", "{\"action\":\"retry\",\"retries\":3}"));
    fake_script("hnd", "draw", FAKE_TIMEOUT);
    fx_submit(f, "r1", "fill", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_run_is, "r1 paused"));
    assert_non_null(strstr(json_string_value(json_object_get(fx_doc(f, "r1"), "paused_reason")),
                           "may or may not have happened"));
    assert_int_equal(fake_calls("hnd:draw"), 1);
    fx_free(f);
}

/* Retries used up: the run fails with the step's error. */
static void test_retries_used_up_fail(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, READS_WF("reads", "{\"action\":\"retry\",\"retries\":1}"));
    fake_script("rdr", "read_absorbance", FAKE_DEVICE_ERROR);
    fake_script("rdr", "read_absorbance", FAKE_DEVICE_ERROR);
    fx_submit(f, "r1", "reads", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_called, "rdr:read_absorbance"));
    for (int i = 0; i < 2 && !fx_run_is(f, "r1 failed"); i++) {
        fx_settle(f, 20);
        fx_recover(f, "rdr");
        fx_until(f, fx_run_is, "r1 failed");
    }
    assert_true(fx_until(f, fx_run_is, "r1 failed"));
    assert_int_equal(fake_calls("rdr:read_absorbance"), 2);
    json_t *failure = json_object_get(fx_doc(f, "r1"), "failure");
    assert_string_equal(json_string_value(json_object_get(failure, "step")), "first");
    assert_non_null(
        strstr(json_string_value(json_object_get(failure, "error")), "the fake says no"));
    fx_free(f);
}

/* Two steps reach their deadline in the same tick: both runs fail and leave the scheduler while
 * the tick walks the runs (each gets its turn, none is skipped or seen twice). */
static void test_two_timeouts_in_one_tick(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    fx_workflow(f, "{\"name\":\"warm\",\"on_failure\":{\"action\":\"fail\"},\"steps\":["
                   "{\"name\":\"warm\",\"op\":\"incubate\",\"on\":\"inc\",\"duration_s\":100}]}");
    fake_script("inc", "put_in", FAKE_NEVER);
    fx_submit(f, "r1", "warm", NULL);
    fx_submit(f, "r2", "warm", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_run_is, "r1 running"));
    assert_true(fx_until(f, fx_run_is, "r2 running"));
    assert_int_equal(fake_calls("inc:put_in"), 1); /* the second waits in the driver's queue */
    fx_advance(f, 2 * 100 + 300);
    assert_true(fx_until(f, fx_run_is, "r1 failed"));
    assert_true(fx_until(f, fx_run_is, "r2 failed"));
    lab_sched_stats_t st;
    lab_sched_stats(f->s, &st);
    assert_int_equal(st.runs, 0);
    assert_int_equal(st.steps_failed, 2);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_program_wait_mark_measure),
        cmocka_unit_test(test_run_keeps_readings),
        cmocka_unit_test(test_retry_with_optional_entry),
        cmocka_unit_test(test_failure_then_skip),
        cmocka_unit_test(test_action_listeners),
        cmocka_unit_test(test_failure_then_pause_and_resume),
        cmocka_unit_test(test_dispense_unknown_outcome_pauses),
        cmocka_unit_test(test_dispense_timeout_pauses),
        cmocka_unit_test(test_retries_used_up_fail),
        cmocka_unit_test(test_two_timeouts_in_one_tick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
