/* The driver tests' fixture (see harness_drv.h): the loop, the host, and the helpers that run
 * the loop until a driver has done something. */
#include "tests/harness/harness_drv.h"
#include "tests/harness/harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

static uv_loop_t loop;
static bool ready; /* between h_drv_init and h_drv_fini */
static double time_scale = 1;
static void (*pump)(void);
static json_t *telemetry;
static lab_drv_error_t last_err; /* h_drv_do's */
static json_t *last_result;

static void on_state(void *ctx, lab_driver_t *d, lab_inst_state_t s, const lab_drv_error_t *e)
{
    (void)ctx;
    (void)d;
    (void)s;
    (void)e;
}

static void on_telemetry(void *ctx, lab_driver_t *d, int64_t ts, json_t *values)
{
    (void)ctx;
    (void)d;
    (void)ts;
    json_decref(telemetry);
    telemetry = json_deep_copy(values);
}

static const lab_drv_host_t own_host = {on_state, on_telemetry, NULL};
static const lab_drv_host_t *host = &own_host;

int h_drv_init(double scale)
{
    time_scale = scale;
    pump = NULL;
    host = &own_host;
    int rc = uv_loop_init(&loop);
    ready = rc == 0;
    return rc;
}

int h_drv_fini(void)
{
    if (!ready)
        return 0;
    /* A failed test may leave a driver open: never wait for it forever. */
    for (long long end = h_now_ms() + 2000; uv_loop_alive(&loop) && h_now_ms() < end;)
        uv_run(&loop, UV_RUN_NOWAIT);
    h_drv_telemetry_clear();
    json_decref(last_result);
    last_result = NULL;
    if (uv_loop_alive(&loop))
        return UV_EBUSY;
    ready = false;
    return uv_loop_close(&loop);
}

uv_loop_t *h_drv_loop(void)
{
    return &loop;
}

const lab_drv_host_t *h_drv_host(void)
{
    return host;
}

void h_drv_set_host(const lab_drv_host_t *h)
{
    host = h ? h : &own_host;
}

void h_drv_set_pump(void (*fn)(void))
{
    pump = fn;
}

json_t *h_drv_telemetry(void)
{
    return telemetry;
}

void h_drv_telemetry_clear(void)
{
    json_decref(telemetry);
    telemetry = NULL;
}

bool h_drv_run_until(bool (*cond)(void *), void *arg, int ms)
{
    for (long long end = h_now_ms() + ms; h_now_ms() < end;) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (pump)
            pump();
        if (cond(arg))
            return true;
        h_sleep_ms(2);
    }
    return cond(arg);
}

void h_drv_spin(void)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    if (pump)
        pump();
    h_sleep_ms(2);
}

bool h_drv_flag(void *arg)
{
    return *(bool *)arg;
}

void h_drv_set_flag(void *arg)
{
    *(bool *)arg = true;
}

bool h_drv_loop_dead(void *arg)
{
    (void)arg;
    return !uv_loop_alive(&loop);
}

void h_drv_on_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg)
{
    (void)d;
    h_drv_call_t *c = arg;
    if (!c) /* a call expected to be refused */
        return;
    c->done = true;
    c->err = *err;
    c->result = json_deep_copy(result);
}

bool h_drv_call_done(void *arg)
{
    return ((h_drv_call_t *)arg)->done;
}

json_t *h_drv_call(lab_driver_t *d, const char *action, const char *params, lab_drv_error_t *err)
{
    h_drv_call_t c = {0};
    json_t *p = params ? json_loads(params, 0, NULL) : NULL;
    lab_drv_error_t e = {0};
    int rc = lab_driver_call(d, action, p, 0, h_drv_on_done, &c, &e, NULL);
    json_decref(p);
    if (rc != 0) {
        if (err)
            *err = e;
        return NULL;
    }
    assert_true(h_drv_run_until(h_drv_call_done, &c, 30000));
    if (err)
        *err = c.err;
    if (c.err.code != LAB_OK) {
        json_decref(c.result);
        return NULL;
    }
    return c.result;
}

json_t *h_drv_call_ok(lab_driver_t *d, const char *action, const char *params)
{
    lab_drv_error_t e;
    json_t *r = h_drv_call(d, action, params, &e);
    if (!r)
        fail_msg("%s %s: %s [%s] %s", action, params ? params : "", lab_err_json_name(e.code),
                 e.device_code, e.text);
    return r;
}

int h_drv_do(lab_driver_t *d, const char *action, const char *params)
{
    json_decref(last_result);
    last_result = h_drv_call(d, action, params, &last_err);
    return last_err.code;
}

void h_drv_do_ok(lab_driver_t *d, const char *action, const char *params)
{
    if (h_drv_do(d, action, params) != LAB_OK)
        fail_msg("%s %s: %s %s", action, params ? params : "", lab_err_json_name(last_err.code),
                 last_err.text);
}

json_t *h_drv_result(void)
{
    return last_result;
}

const lab_drv_error_t *h_drv_error(void)
{
    return &last_err;
}

static bool state_is(void *arg)
{
    void **a = arg;
    return lab_driver_state(a[0]) == (lab_inst_state_t)(intptr_t)a[1];
}

void h_drv_wait_state(lab_driver_t *d, lab_inst_state_t s)
{
    void *a[2] = {d, (void *)(intptr_t)s};
    if (!h_drv_run_until(state_is, a, 20000))
        fail_msg("state %s, expected %s (last error: %s)", lab_inst_state_name(lab_driver_state(d)),
                 lab_inst_state_name(s), lab_driver_last_error(d)->text);
}

double h_drv_num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_number(v))
        fail_msg("no number %s", k);
    return json_number_value(v);
}

void h_drv_on_conf_err(void *ctx, int line, const char *key, const char *reason)
{
    (void)line;
    (void)reason;
    h_drv_problems_t *p = ctx;
    if (p->n < 8)
        snprintf(p->keys[p->n++], 32, "%s", key ? key : "");
}

lab_driver_t *h_drv_open(const char *id, const lab_drv_kv_t *kv, size_t n)
{
    lab_drv_conf_t conf = {.id = id, .line = 1, .kv = kv, .n = n, .time_scale = time_scale};
    h_drv_problems_t pr = {0};
    if (lab_driver_check(&conf, h_drv_on_conf_err, &pr))
        fail_msg("config: %s", pr.keys[0]);
    lab_driver_t *d = NULL;
    char err[256];
    if (lab_driver_new(&loop, &conf, host, &d, err, sizeof err))
        fail_msg("%s", err);
    lab_driver_start(d);
    return d;
}

void h_drv_close(lab_driver_t *d)
{
    if (!d)
        return;
    bool closed = false;
    lab_driver_close(d, h_drv_set_flag, &closed);
    assert_true(h_drv_run_until(h_drv_flag, &closed, 10000));
}
