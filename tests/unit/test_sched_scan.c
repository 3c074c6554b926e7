/* Plate checks (daemon/sched/scan.c) on a manual clock and fake instruments, with a fake barcode
 * reader "bc" at the incubator: a step with "scan": true reads the label before its own work; the
 * run's plate goes on (recorded in the step's scan); another barcode pauses the run with both
 * barcodes and retry scans again; no read pauses it with the operator's prompt and skip runs the
 * step without the check (recorded as waived, by whom); a step on an instrument no reader is at
 * waits with the reason; a reader offline holds the step with its reason. */
#include "tests/unit/sched_fake.h"

static const lab_drv_action_t fake_bc_actions[] = {
    FAKE_ACTION("scan"),
    {NULL, NULL, 0, 0, NULL},
};
static const lab_drv_role_action_t fake_bc_roles[] = {
    {LAB_DRV_ROLE_SCAN, "scan"},
    {LAB_DRV_ROLE_NONE, NULL},
};
static const lab_drv_key_t fake_bc_keys[] = {
    {"at", LAB_DRV_KEY_STR, NULL, 0, 0, NULL, LAB_DRV_KEY_REQUIRED, "where it looks"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};
static const lab_driver_ops_t fake_bc = {
    .name = "fake-bc",
    .kind = "barcode_reader",
    .model = "fake",
    .keys = fake_bc_keys,
    .actions = fake_bc_actions,
    .roles = fake_bc_roles,
    .priv_size = sizeof(fake_priv_t),
    .start = fake_start,
    .stop = fake_stop,
    .close = fake_close,
    .invoke = fake_invoke,
    .abort = fake_abort,
};

static const lab_driver_ops_t *const scan_drivers[] = {&fake_incubator, &fake_reader, &fake_handler,
                                                       &fake_bc, NULL};

static lab_cfg_instrument_t insts[4];
static lab_cfg_kv_t bc_kv[3] = {{"driver", "fake-bc", 1}, {"at", "inc", 2}, {"record", "off", 3}};

/* The cell of fx_new with the reader bc at inc. */
static fx_t *scan_fx(void)
{
    fx_t *f = fx_new();
    fx_stop_sched(f);
    memcpy(insts, f->inst, sizeof f->inst);
    insts[3] = (lab_cfg_instrument_t){.id = "bc", .line = 1, .kv = bc_kv, .n = 3};
    f->cfg.instruments = insts;
    f->cfg.n_instruments = 4;
    assert_int_equal(
        lab_instr_start_with(&f->in, &f->loop, &f->cfg, f->st, NULL, &f->clock, scan_drivers), 0);
    assert_int_equal(lab_sched_start(&f->s, &f->loop, &f->cfg, &f->clock, f->st, f->in), 0);
    lab_sched_on_run(f->s, fx_on_run, f);
    return f;
}

static bool bc_asked(fx_t *f, const void *arg)
{
    (void)arg;
    lab_driver_t *d = lab_instr_find(f->in, "bc", 2);
    fake_priv_t *p = lab_drv_priv(d);
    return p->pending && lab_drv_current(d);
}

/* The next n scans are answered by the test (bc_reads), not by the fakes' pump. */
static void bc_scans(int n)
{
    for (int i = 0; i < n; i++)
        fake_script("bc", "scan", FAKE_NEVER);
}

/* The reader is asked and reads label (NULL: no label read). */
static void bc_reads(fx_t *f, const char *label)
{
    assert_true(fx_until(f, bc_asked, NULL));
    lab_driver_t *d = lab_instr_find(f->in, "bc", 2);
    ((fake_priv_t *)lab_drv_priv(d))->pending = false;
    lab_drv_done(d, NULL,
                 label ? json_pack("{s:s}", "barcode", label) : json_pack("{s:n}", "barcode"));
}

static void on_done(void *arg, int status, const char *doc, const char *msg)
{
    (void)doc;
    (void)msg;
    *(int *)arg = status;
}

static void resume(fx_t *f, const char *how)
{
    char msg[200];
    int answered = -1;
    assert_int_equal(
        lab_sched_resume(f->s, "P0042", "tech", how, NULL, on_done, &answered, msg, sizeof msg), 0);
    assert_true(fx_until(f, fx_run_is, "P0042 running")); /* the resume is stored */
}

static const char *paused_reason(fx_t *f)
{
    return json_string_value(json_object_get(fx_doc(f, "P0042"), "paused_reason"));
}

static json_t *scan_of(fx_t *f, int k)
{
    return json_object_get(fx_step(f, "P0042", k), "scan");
}

#define SCAN_WF                                                                                    \
    "{\"name\":\"chk\",\"steps\":["                                                                \
    "{\"name\":\"warm\",\"op\":\"incubate\",\"on\":\"inc\",\"duration_s\":60,\"scan\":true},"      \
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"rdr\",\"duration_s\":60}]}"

static void test_match(void **state)
{
    (void)state;
    fx_t *f = scan_fx();
    bc_scans(1);
    fx_workflow(f, SCAN_WF);
    fx_submit(f, "P0042", "chk", NULL);
    lab_sched_replan(f->s);
    bc_reads(f, "P0042");
    assert_true(fx_until(f, fx_step_has, "P0042 0 loaded_at"));
    fx_advance(f, 60);
    assert_true(fx_until(f, fx_run_is, "P0042 done"));
    /* the check came before the step's own work */
    assert_string_equal(fake.log[0], "bc:scan");
    assert_string_equal(fake.log[1], "inc:put_in");
    json_t *scan = scan_of(f, 0);
    assert_string_equal(json_string_value(json_object_get(scan, "outcome")), "match");
    assert_true(json_is_true(json_object_get(scan, "matched")));
    assert_string_equal(json_string_value(json_object_get(scan, "read")), "P0042");
    assert_string_equal(json_string_value(json_object_get(scan, "reader")), "bc");
    assert_non_null(json_object_get(scan, "at"));
    assert_null(scan_of(f, 1)); /* the read asked for none */
    assert_int_equal(fake_calls("bc:scan"), 1);
    fx_free(f);
}

static void test_mismatch_then_retry(void **state)
{
    (void)state;
    fx_t *f = scan_fx();
    bc_scans(2);
    fx_workflow(f, SCAN_WF);
    fx_submit(f, "P0042", "chk", NULL);
    lab_sched_replan(f->s);
    bc_reads(f, "P0043");
    assert_true(fx_until(f, fx_run_is, "P0042 paused"));
    assert_non_null(strstr(paused_reason(f), "plate check at inc: expected P0042, the reader bc "
                                             "read P0043"));
    assert_int_equal(fake_calls("inc:put_in"), 0); /* the wrong plate never went in */
    assert_string_equal(json_string_value(json_object_get(scan_of(f, 0), "outcome")), "mismatch");
    assert_string_equal(json_string_value(json_object_get(scan_of(f, 0), "read")), "P0043");
    /* the right plate put there: retry scans again and goes on */
    resume(f, "retry");
    bc_reads(f, "P0042");
    assert_true(fx_until(f, fx_step_has, "P0042 0 loaded_at"));
    fx_advance(f, 60);
    assert_true(fx_until(f, fx_run_is, "P0042 done"));
    assert_int_equal(fake_calls("bc:scan"), 2);
    assert_string_equal(json_string_value(json_object_get(scan_of(f, 0), "outcome")), "match");
    fx_free(f);
}

static void test_unreadable_then_skip(void **state)
{
    (void)state;
    fx_t *f = scan_fx();
    bc_scans(1);
    fx_workflow(f, SCAN_WF);
    fx_submit(f, "P0042", "chk", NULL);
    lab_sched_replan(f->s);
    bc_reads(f, NULL);
    assert_true(fx_until(f, fx_run_is, "P0042 paused"));
    assert_string_equal(paused_reason(f),
                        "label unreadable at inc (reader bc): check that the plate is P0042, then "
                        "resume with skip if it is, retry to scan again, or cancel");
    assert_int_equal(fake_calls("inc:put_in"), 0); /* never a silent pass */
    assert_true(json_is_null(json_object_get(scan_of(f, 0), "read")));
    /* the operator checked: skip runs the step without the check, not past it */
    resume(f, "skip");
    assert_true(fx_until(f, fx_step_has, "P0042 0 loaded_at"));
    fx_advance(f, 60);
    assert_true(fx_until(f, fx_run_is, "P0042 done"));
    assert_string_equal(fx_step_state(f, "P0042", 0), "done");
    assert_int_equal(fake_calls("bc:scan"), 1);
    json_t *scan = scan_of(f, 0);
    assert_string_equal(json_string_value(json_object_get(scan, "outcome")), "waived");
    assert_string_equal(json_string_value(json_object_get(scan, "by")), "tech");
    assert_false(json_is_true(json_object_get(scan, "matched")));
    fx_free(f);
}

/* A reader's failure is no pass either; an unreadable label, then a retry that reads it. */
static void test_reader_error_then_retry(void **state)
{
    (void)state;
    fx_t *f = scan_fx();
    fx_workflow(f, SCAN_WF);
    fake_script("bc", "scan", FAKE_TIMEOUT);
    bc_scans(2);
    fx_submit(f, "P0042", "chk", NULL);
    lab_sched_replan(f->s);
    assert_true(fx_until(f, fx_run_is, "P0042 paused"));
    assert_non_null(strstr(paused_reason(f), "plate check at inc: the reader bc failed: timeout"));
    assert_int_equal(fake_calls("inc:put_in"), 0);
    fx_recover(f, "bc");
    resume(f, "retry");
    bc_reads(f, NULL);
    assert_true(fx_until(f, fx_run_is, "P0042 paused"));
    assert_non_null(strstr(paused_reason(f), "label unreadable"));
    resume(f, "retry");
    bc_reads(f, "P0042");
    assert_true(fx_until(f, fx_called, "inc:put_in"));
    fx_free(f);
}

/* No reader is at the reader "rdr": the run waits and says why; offline, the reader holds the
 * step with its own reason, and the check runs once it is back. */
static void test_no_reader_and_offline(void **state)
{
    (void)state;
    fx_t *f = scan_fx();
    bc_scans(1);
    fx_workflow(f, "{\"name\":\"rd\",\"steps\":[{\"name\":\"read\",\"op\":\"read_absorbance\","
                   "\"on\":\"rdr\",\"duration_s\":60,\"scan\":true}]}");
    fx_workflow(f, SCAN_WF);
    fx_submit(f, "R2", "rd", NULL);
    lab_driver_t *bc = lab_instr_find(f->in, "bc", 2);
    lab_drv_error_t e;
    lab_drv_set_state(bc, LAB_INST_OFFLINE, lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "port gone"));
    fx_submit(f, "P0042", "chk", NULL);
    lab_sched_replan(f->s);
    fx_settle(f, 50);
    json_t *r2 = lab_sched_run_live(f->s, "R2"), *p42 = lab_sched_run_live(f->s, "P0042");
    assert_string_equal(json_string_value(json_object_get(r2, "waiting_reason")),
                        "step read checks its plate on 'rdr' and no barcode reader of this cell "
                        "has at = rdr");
    assert_string_equal(json_string_value(json_object_get(p42, "waiting_reason")),
                        "step warm holds: bc is offline: port gone");
    json_decref(r2);
    json_decref(p42);
    assert_int_equal(fake_calls("inc:put_in"), 0);
    assert_int_equal(fake_calls("rdr:read_absorbance"), 0);
    lab_drv_set_state(bc, LAB_INST_IDLE, NULL);
    bc_reads(f, "P0042");
    assert_true(fx_until(f, fx_called, "inc:put_in"));
    fx_free(f);
}

/* The plate checked and loaded, the unload fails and the policy retries: the plate is inside,
 * where no reader sees it, and was checked on its way in: no second check. */
static void test_retry_inside_no_rescan(void **state)
{
    (void)state;
    fx_t *f = scan_fx();
    bc_scans(1);
    fx_workflow(f, "{\"name\":\"chk2\",\"on_failure\":{\"action\":\"retry\",\"retries\":2},"
                   "\"steps\":[{\"name\":\"warm\",\"op\":\"incubate\",\"on\":\"inc\","
                   "\"duration_s\":60,\"scan\":true}]}");
    fake_script("inc", "take_out", FAKE_DEVICE_ERROR);
    fx_submit(f, "P0042", "chk2", NULL);
    lab_sched_replan(f->s);
    bc_reads(f, "P0042");
    assert_true(fx_until(f, fx_step_has, "P0042 0 loaded_at"));
    fx_advance(f, 60);
    assert_true(fx_until(f, fx_called, "inc:take_out"));
    fx_settle(f, 20);
    fx_recover(f, "inc");
    assert_true(fx_until(f, fx_run_is, "P0042 done"));
    assert_int_equal(fake_calls("bc:scan"), 1);
    assert_int_equal(fake_calls("inc:put_in"), 1);
    assert_int_equal(fake_calls("inc:take_out"), 2);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_mismatch_then_retry),
        cmocka_unit_test(test_unreadable_then_skip),
        cmocka_unit_test(test_reader_error_then_retry),
        cmocka_unit_test(test_no_reader_and_offline),
        cmocka_unit_test(test_retry_inside_no_rescan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
