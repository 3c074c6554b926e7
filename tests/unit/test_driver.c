/* The driver framework (drivers/driver.c) with a driver written for this test ("probe": its
 * operations end when the test says, so every interleaving is reachable): parameters refused
 * with every problem named, one operation at a time in order, timeouts that abort and ignore
 * the late answer, offline failing what runs and what waits, the operator hold, a full queue,
 * close with operations pending, polling into telemetry, and the config check. */
#include "drivers/driver.h"
#include "core/text.h"
#include "core/err.h"
#include "core/log.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* ---- the probe driver ---- */

typedef struct probe {
    int invoked, aborted, stopped;
    char last[32];
} probe_t;

static const lab_drv_action_t probe_actions[] = {
    {"work",
     "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
     "\"n\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":9},\"tag\":{\"type\":\"string\"}},"
     "\"required\":[\"n\"]}",
     30, 0, "ends when the test calls lab_drv_done"},
    {"status", NULL, 5, 0, "telemetry"},
    {"peek", NULL, 5, LAB_DRV_ACT_IMMEDIATE | LAB_DRV_ACT_OFFLINE, "answers at once"},
    {NULL, NULL, 0, 0, NULL},
};

static const lab_drv_key_t probe_keys[] = {
    {"port", LAB_DRV_KEY_STR, NULL, 0, 0, NULL, LAB_DRV_KEY_REQUIRED, "where"},
    {"speed", LAB_DRV_KEY_INT, "5", 1, 10, NULL, 0, "how fast"},
    {"mode", LAB_DRV_KEY_ENUM, "a", 0, 0, "a|b", 0, "which"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

static lab_driver_t *current; /* the probe instance */
static int stops;             /* outlives the instance */

static void probe_start(lab_driver_t *d)
{
    lab_drv_set_state(d, LAB_INST_IDLE, NULL);
}

static void probe_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    probe_t *p = lab_drv_priv(d);
    p->invoked++;
    snprintf(p->last, sizeof p->last, "%s", a->name);
    if (strcmp(a->name, "peek") == 0)
        lab_drv_done(d, NULL, json_pack("{s:i}", "invoked", p->invoked));
    (void)params;
}

static void probe_abort(lab_driver_t *d)
{
    ((probe_t *)lab_drv_priv(d))->aborted++;
}

static void probe_stop(lab_driver_t *d)
{
    ((probe_t *)lab_drv_priv(d))->stopped++;
    stops++;
}

static const lab_driver_ops_t probe_ops = {
    .name = "probe",
    .kind = "test",
    .model = "framework probe",
    .keys = probe_keys,
    .actions = probe_actions,
    .poll_action = "status",
    .poll_default_s = 0,
    .priv_size = sizeof(probe_t),
    .start = probe_start,
    .stop = probe_stop,
    .invoke = probe_invoke,
    .abort = probe_abort,
};

/* ---- harness ---- */

#define MAXDONE 128
static struct {
    int n;
    int code[MAXDONE];
    long tag[MAXDONE];
    bool not_started[MAXDONE];
} done;
static int states[16], nstates, telemetry;
static uv_loop_t loop;
static bool closed;

static void on_done(lab_driver_t *d, const lab_drv_error_t *e, json_t *res, void *arg)
{
    (void)d;
    (void)res;
    done.code[done.n] = e->code;
    done.tag[done.n] = (long)(intptr_t)arg;
    done.not_started[done.n] = e->not_started;
    done.n++;
}

static void on_state(void *ctx, lab_driver_t *d, lab_inst_state_t s, const lab_drv_error_t *e)
{
    (void)ctx;
    (void)d;
    (void)e;
    if (nstates < 16)
        states[nstates++] = (int)s;
}

static void on_tel(void *ctx, lab_driver_t *d, int64_t ts, json_t *v)
{
    (void)ctx;
    (void)d;
    (void)ts;
    if (json_is_number(json_object_get(v, "temperature_c")) && !json_object_get(v, "text"))
        telemetry++;
}

static void run_ms(int ms)
{
    uint64_t end = uv_now(&loop) + (uint64_t)ms;
    while (uv_now(&loop) < end) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
        uv_update_time(&loop);
    }
}

static lab_driver_t *make(const char *poll_s, double scale)
{
    lab_drv_kv_t kv[3] = {{"driver", "probe", 1}, {"port", "/dev/null", 2}, {"poll_s", "0", 3}};
    if (poll_s)
        kv[2].value = poll_s;
    lab_drv_conf_t c = {.id = "p1", .line = 1, .kv = kv, .n = 3, .time_scale = scale};
    lab_drv_host_t host = {on_state, on_tel, NULL};
    char err[200];
    lab_driver_t *d = NULL;
    assert_int_equal(lab_driver_new_ops(&loop, &probe_ops, &c, &host, &d, err, sizeof err), 0);
    lab_driver_start(d);
    run_ms(5);
    current = d;
    return d;
}

static void closed_cb(void *arg)
{
    (void)arg;
    closed = true;
}

static void finish(lab_driver_t *d)
{
    closed = false;
    lab_driver_close(d, closed_cb, NULL);
    while (!closed)
        uv_run(&loop, UV_RUN_ONCE);
}

static int setup(void **state)
{
    (void)state;
    memset(&done, 0, sizeof done);
    nstates = telemetry = stops = 0;
    return uv_loop_init(&loop);
}

static int teardown(void **state)
{
    (void)state;
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop);
}

static int call(lab_driver_t *d, const char *action, const char *params, long tag,
                lab_drv_error_t *e, json_t **problems)
{
    json_t *p = params ? json_loads(params, 0, NULL) : NULL;
    int rc = lab_driver_call(d, action, p, 0, on_done, (void *)(intptr_t)tag, e, problems);
    json_decref(p);
    return rc;
}

/* ---- tests ---- */

static void test_params_refused(void **state)
{
    (void)state;
    lab_driver_t *d = make(NULL, 1);
    lab_drv_error_t e;
    json_t *problems = NULL;
    assert_int_not_equal(call(d, "work", "{\"n\":12,\"tag\":3,\"x\":1}", 0, &e, &problems), 0);
    assert_int_equal(e.code, LAB_EINVAL);
    assert_true(e.not_started);
    char *t = json_dumps(problems, JSON_COMPACT);
    assert_non_null(strstr(t, "/params/n"));
    assert_non_null(strstr(t, "/params/tag"));
    assert_non_null(strstr(t, "/params/x"));
    free(t);
    json_decref(problems);
    assert_int_not_equal(call(d, "jump", NULL, 0, &e, NULL), 0);
    assert_int_equal(e.code, LAB_ENOACTION);
    assert_non_null(strstr(e.text, "work, status, peek"));
    run_ms(5);
    assert_int_equal(((probe_t *)lab_drv_priv(d))->invoked, 0); /* nothing reached the device */
    assert_int_equal(done.n, 0);
    finish(d);
}

static void test_one_at_a_time_in_order(void **state)
{
    (void)state;
    lab_driver_t *d = make(NULL, 1);
    probe_t *p = lab_drv_priv(d);
    lab_drv_error_t e;
    for (long i = 1; i <= 3; i++)
        assert_int_equal(call(d, "work", "{\"n\":1}", i, &e, NULL), 0);
    assert_int_equal(p->invoked, 0); /* never from inside the call */
    run_ms(5);
    assert_int_equal(p->invoked, 1);
    assert_int_equal(lab_driver_state(d), LAB_INST_BUSY);
    /* An immediate action runs beside the queue. */
    assert_int_equal(call(d, "peek", NULL, 9, &e, NULL), 0);
    run_ms(5);
    assert_int_equal(done.n, 1);
    assert_int_equal(done.tag[0], 9);
    for (int k = 0; k < 3; k++) {
        lab_drv_done(d, NULL, json_pack("{s:i}", "k", k));
        run_ms(5);
    }
    assert_int_equal(done.n, 4);
    for (int k = 1; k <= 3; k++) {
        assert_int_equal(done.code[k], LAB_OK);
        assert_int_equal(done.tag[k], k);
    }
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    finish(d);
}

static void test_timeout_aborts_and_ignores_late_answer(void **state)
{
    (void)state;
    /* 30 lab s at 10000x is 3 ms: the 2 s floor applies. */
    lab_driver_t *d = make(NULL, 10000);
    probe_t *p = lab_drv_priv(d);
    lab_drv_error_t e;
    assert_int_equal(call(d, "work", "{\"n\":1}", 1, &e, NULL), 0);
    assert_int_equal(call(d, "work", "{\"n\":2}", 2, &e, NULL), 0);
    run_ms(1000);
    assert_int_equal(done.n, 0); /* the floor held */
    run_ms(1200);
    assert_int_equal(done.n, 1);
    assert_int_equal(done.code[0], LAB_ETIMEDOUT);
    assert_int_equal(p->aborted, 1);
    assert_int_equal(lab_driver_last_error(d)->code, LAB_ETIMEDOUT);
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT); /* the device did not answer */
    /* The second started; the first's late answer must not end it. */
    assert_int_equal(p->invoked, 2);
    lab_drv_done(d, NULL, NULL); /* this is the second's answer */
    run_ms(5);
    assert_int_equal(done.n, 2);
    assert_int_equal(done.tag[1], 2);
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE); /* it answers again */
    lab_drv_done(d, NULL, NULL);                          /* nothing runs: ignored */
    run_ms(5);
    assert_int_equal(done.n, 2);
    lab_driver_stats_t s;
    lab_driver_stats(d, &s);
    assert_int_equal(s.timeouts, 1);
    finish(d);
}

/* Error texts are JSON text: one cut inside a character, by lab_drv_error_set's bound or by a
 * driver's own snprintf, loses that character only. */
static void test_error_text_cut_on_a_character(void **state)
{
    (void)state;
    lab_drv_error_t e;
    char long_text[512] = "";
    for (int i = 0; i < 200; i++)
        strcat(long_text, "\xC3\xA9"); /* 400 bytes: 255 is 127 characters and a half */
    lab_drv_error_set(&e, LAB_EDEVICE, NULL, "%s", long_text);
    assert_int_equal(strlen(e.text), 127 * 2);
    assert_true(lab_text_valid(e.text, strlen(e.text)));
    lab_driver_t *d = make(NULL, 1);
    lab_drv_error_t why = {.code = LAB_EOFFLINE};
    snprintf(why.text, sizeof why.text, "%.3s", "x\xE2\x82\xAC"); /* "x" and 2 bytes of 3 */
    lab_drv_set_state(d, LAB_INST_OFFLINE, &why);
    run_ms(5);
    assert_string_equal(lab_driver_last_error(d)->text, "x");
    finish(d);
}

/* A device's own bytes quoted in an error (a reply, a code) may be anything: the error is still
 * JSON text, each invalid byte shown as U+FFFD, and its JSON document can be built. */
/* Each shipped driver once in the registry: a driver listed twice is printed twice by --keys. */
static void test_registry_names_unique(void **state)
{
    (void)state;
    for (size_t i = 0; lab_drivers[i]; i++) {
        assert_ptr_equal(lab_driver_find(lab_drivers[i]->name), lab_drivers[i]);
        for (size_t j = i + 1; lab_drivers[j]; j++)
            if (strcmp(lab_drivers[i]->name, lab_drivers[j]->name) == 0)
                fail_msg("driver %s listed twice (%zu and %zu)", lab_drivers[i]->name, i, j);
    }
}

static void test_error_text_from_device_bytes(void **state)
{
    (void)state;
    lab_drv_error_t e;
    lab_drv_error_set(&e, LAB_EPROTO, "E\xff", "unexpected reply '%s'", "\x81\xfe\xc3 ok");
    assert_true(lab_text_valid(e.text, strlen(e.text)));
    assert_true(lab_text_valid(e.device_code, strlen(e.device_code)));
    assert_string_equal(e.text, "unexpected reply '\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD ok'");
    json_t *j = lab_drv_error_json(&e);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "device_code")), "E\xEF\xBF\xBD");
    json_decref(j);
}

static void test_offline_fails_running_and_queued(void **state)
{
    (void)state;
    lab_driver_t *d = make(NULL, 1);
    lab_drv_error_t e;
    for (long i = 1; i <= 3; i++)
        assert_int_equal(call(d, "work", "{\"n\":1}", i, &e, NULL), 0);
    run_ms(5);
    lab_drv_error_t why;
    lab_drv_set_state(d, LAB_INST_OFFLINE,
                      lab_drv_error_set(&why, LAB_EOFFLINE, NULL, "the cable is out"));
    run_ms(5);
    assert_int_equal(done.n, 3);
    for (int k = 0; k < 3; k++)
        assert_int_equal(done.code[k], LAB_EOFFLINE);
    /* the running one may have reached the device; the queued ones provably did not */
    assert_false(done.not_started[0]);
    assert_true(done.not_started[1] && done.not_started[2]);
    assert_int_equal(lab_driver_state(d), LAB_INST_OFFLINE);
    /* Refused at once while offline, with the reason; immediate offline actions still answer. */
    assert_int_equal(call(d, "work", "{\"n\":1}", 4, &e, NULL), LAB_EOFFLINE);
    assert_non_null(strstr(e.text, "the cable is out"));
    assert_true(e.not_started);
    assert_int_equal(call(d, "peek", NULL, 5, &e, NULL), 0);
    run_ms(5);
    assert_int_equal(done.n, 4);
    assert_int_equal(done.code[3], LAB_OK);
    /* Back: works again. */
    lab_drv_set_state(d, LAB_INST_IDLE, NULL);
    assert_int_equal(call(d, "work", "{\"n\":1}", 6, &e, NULL), 0);
    run_ms(5);
    lab_drv_done(d, NULL, NULL);
    run_ms(5);
    assert_int_equal(done.n, 5);
    assert_int_equal(done.code[4], LAB_OK);
    bool saw_offline = false;
    for (int i = 0; i < nstates; i++)
        saw_offline |= states[i] == LAB_INST_OFFLINE;
    assert_true(saw_offline);
    finish(d);
}

static void test_pause_and_full_queue(void **state)
{
    (void)state;
    lab_driver_t *d = make(NULL, 1);
    probe_t *p = lab_drv_priv(d);
    lab_drv_error_t e;
    lab_driver_pause(d, true);
    run_ms(5);
    assert_int_equal(lab_driver_state(d), LAB_INST_PAUSED);
    int accepted = 0;
    while (call(d, "work", "{\"n\":1}", accepted + 1, &e, NULL) == 0)
        accepted++;
    assert_int_equal(e.code, LAB_EBUSY);
    assert_int_equal(accepted, 64);
    run_ms(5);
    assert_int_equal(p->invoked, 0); /* held */
    lab_driver_pause(d, false);
    run_ms(5);
    assert_int_equal(p->invoked, 1);
    /* Closing ends every operation, each callback once. */
    finish(d);
    assert_int_equal(done.n, 64);
    for (int k = 0; k < 64; k++)
        assert_int_equal(done.code[k], LAB_ECANCELLED);
    assert_int_equal(stops, 1);
}

static void test_poll_makes_telemetry(void **state)
{
    (void)state;
    lab_driver_t *d = make("0.02", 1);
    probe_t *p = lab_drv_priv(d);
    for (int i = 0; i < 3; i++) {
        run_ms(40);
        if (strcmp(p->last, "status") == 0 && lab_drv_current(d)) {
            lab_drv_done(d, NULL,
                         json_pack("{s:f, s:s}", "temperature_c", 37.5, "text", "not a number"));
        }
    }
    run_ms(5);
    assert_true(telemetry >= 1);
    /* A poll is not "busy" for the people watching. */
    for (int i = 0; i < nstates; i++)
        assert_int_not_equal(states[i], LAB_INST_BUSY);
    finish(d);
}

static void check_err(void *ctx, int line, const char *key, const char *reason)
{
    char *buf = ctx;
    size_t n = strlen(buf);
    snprintf(buf + n, 2048 - n, "%d %s: %s\n", line, key, reason);
}

/* ---- sites ---- */

static int shelf_slots[4] = {3, 0, 5};
static int shelf_n = 3;

static int shelf_sites(lab_driver_t *d, int *slots, int max)
{
    (void)d;
    for (int c = 0; c < shelf_n && c < max; c++)
        slots[c] = shelf_slots[c];
    return shelf_n;
}

/* Opens the probe with a capacity, with the shelf's sites op or without; 0 or the refusal. */
static int open_shelf(bool sites, const char *capacity, lab_driver_t **d, char *err, size_t len)
{
    static lab_driver_ops_t ops;
    ops = probe_ops;
    ops.sites = sites ? shelf_sites : NULL;
    lab_drv_kv_t kv[3] = {
        {"driver", "probe", 1}, {"port", "/dev/null", 2}, {"capacity", capacity, 3}};
    lab_drv_conf_t c = {.id = "s1", .line = 1, .kv = kv, .n = 3, .time_scale = 1};
    lab_drv_host_t host = {on_state, on_tel, NULL};
    err[0] = 0;
    return lab_driver_new_ops(&loop, &ops, &c, &host, d, err, len);
}

/* A driver describes its sites (cassette by cassette); the framework numbers them and holds the
 * capacity to them. A driver without the op has none: nothing is guessed. */
static void test_sites(void **state)
{
    (void)state;
    char err[200];
    lab_driver_t *d = NULL;
    int c = 0, sl = 0;
    assert_int_equal(open_shelf(false, "4", &d, err, sizeof err), 0);
    assert_int_equal(lab_driver_capacity(d), 4);
    assert_int_equal(lab_driver_sites(d), 0);
    assert_false(lab_driver_site_at(d, 0, &c, &sl));
    assert_int_equal(lab_driver_site_index(d, 1, 1), -1);
    finish(d);

    assert_int_equal(open_shelf(true, "8", &d, err, sizeof err), 0);
    assert_int_equal(lab_driver_sites(d), 8);
    static const int want[8][2] = {{1, 1}, {1, 2}, {1, 3}, {3, 1}, {3, 2}, {3, 3}, {3, 4}, {3, 5}};
    for (int x = 0; x < 8; x++) {
        assert_true(lab_driver_site_at(d, x, &c, &sl));
        assert_int_equal(c, want[x][0]);
        assert_int_equal(sl, want[x][1]);
        assert_int_equal(lab_driver_site_index(d, c, sl), x);
    }
    assert_false(lab_driver_site_at(d, 8, &c, &sl));
    assert_false(lab_driver_site_at(d, -1, &c, &sl));
    assert_int_equal(lab_driver_site_index(d, 2, 1), -1); /* a cassette without slots */
    assert_int_equal(lab_driver_site_index(d, 1, 4), -1);
    assert_int_equal(lab_driver_site_index(d, 4, 1), -1);
    assert_int_equal(lab_driver_site_index(d, 0, 1), -1);
    assert_int_equal(lab_driver_site_index(d, 1, 0), -1);
    finish(d);

    /* more plates at once than places for them */
    assert_int_equal(open_shelf(true, "9", &d, err, sizeof err), LAB_ECONFIG);
    assert_null(d);
    assert_string_equal(err, "capacity = 9 is more than the 8 slots of its 3 cassettes");
    /* a driver that answers nonsense is refused, not believed */
    shelf_n = -1;
    assert_int_not_equal(open_shelf(true, "1", &d, err, sizeof err), 0);
    assert_null(d);
    shelf_n = 3;
    shelf_slots[1] = -2;
    assert_int_not_equal(open_shelf(true, "1", &d, err, sizeof err), 0);
    assert_non_null(strstr(err, "-2 slots for cassette 2"));
    shelf_slots[1] = 0;
}

static void test_config_check(void **state)
{
    (void)state;
    char buf[2048] = "";
    lab_drv_kv_t kv[] = {{"driver", "manual-mover", 2}, {"capacity", "0", 3}, {"poll_s", "x", 4},
                         {"sim_whatever", "1", 5},      {"nonsense", "1", 6}, {"capacity", "2", 7}};
    lab_drv_conf_t c = {.id = "m1", .line = 1, .kv = kv, .n = 6, .time_scale = 1};
    assert_int_equal(lab_driver_check(&c, check_err, buf), 4);
    assert_non_null(strstr(buf, "3 capacity: 0 is out of range [1, 10000]"));
    assert_non_null(strstr(buf, "4 poll_s: expected a number"));
    assert_non_null(strstr(buf, "6 nonsense: unknown key for driver manual-mover"));
    assert_non_null(strstr(buf, "7 capacity: given twice (first on line 3)"));
    assert_null(strstr(buf, "sim_whatever"));
    buf[0] = '\0';
    lab_drv_conf_t none = {.id = "m2", .line = 9, .kv = NULL, .n = 0, .time_scale = 1};
    assert_int_equal(lab_driver_check(&none, check_err, buf), 1);
    assert_non_null(strstr(buf, "9 driver: required"));
}

/* A driver's open that cannot use a value refuses the instrument with LAB_EINVAL and says why;
 * never a bare -1, which would read as LAB_ENOMEM ("out of memory"). */
static void test_open_refusal_is_einval(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {
        {"driver", "liconic-stx", 2}, {"port", "/dev/null", 3}, {"rack_types", "no_such_rack", 4}};
    lab_drv_conf_t c = {.id = "inc1", .line = 1, .kv = kv, .n = 3, .time_scale = 1};
    lab_drv_host_t host = {on_state, on_tel, NULL};
    char err[200] = "";
    lab_driver_t *d = NULL;
    int rc = lab_driver_new(&loop, &c, &host, &d, err, sizeof err);
    assert_int_equal(rc, LAB_EINVAL);
    assert_null(d);
    assert_non_null(strstr(err, "no_such_rack"));
    run_ms(5); /* the refused instrument's handles close */
}

int main(void)
{
    lab_log_set_level(LAB_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_params_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_at_a_time_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_aborts_and_ignores_late_answer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_offline_fails_running_and_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_and_full_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_text_cut_on_a_character, setup, teardown),
        cmocka_unit_test(test_error_text_from_device_bytes),
        cmocka_unit_test(test_registry_names_unique),
        cmocka_unit_test_setup_teardown(test_poll_makes_telemetry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sites, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_refusal_is_einval, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
