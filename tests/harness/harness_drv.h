/* The fixture of the driver tests: one uv loop the drivers run on, a host that keeps the last
 * telemetry, actions run to their end, states waited for, drivers opened from key/values and
 * closed. A test that plays an instrument itself hands its poll function to h_drv_set_pump; it
 * runs on every turn of the loop.
 *
 *   h_drv_init(20);  d = h_drv_open("star1", kv, n);  h_drv_wait_state(d, LAB_INST_IDLE);
 *   json_decref(h_drv_call_ok(d, "status", NULL));  h_drv_close(d);  h_drv_fini();
 *
 * Failures end the running cmocka test (fail_msg). */
#ifndef LAB_TESTS_HARNESS_DRV_H
#define LAB_TESTS_HARNESS_DRV_H

#include "drivers/driver.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

/* One action's reply, filled in by h_drv_on_done. */
typedef struct h_drv_call {
    bool done;
    lab_drv_error_t err;
    json_t *result; /* owned by the test */
} h_drv_call_t;

/* The keys lab_driver_check complained about, collected by h_drv_on_conf_err. */
typedef struct h_drv_problems {
    int n;
    char keys[8][32];
} h_drv_problems_t;

/* The loop, with drivers opened at time_scale; 0 or a libuv error. */
int h_drv_init(double time_scale);
/* Drains the loop for at most 2 s and closes it if nothing is left on it: 0 (also when h_drv_init
 * never ran), or UV_EBUSY when something still is. */
int h_drv_fini(void);
uv_loop_t *h_drv_loop(void);
const lab_drv_host_t *h_drv_host(void);
/* The host h_drv_open gives the next drivers; NULL for the fixture's own. */
void h_drv_set_host(const lab_drv_host_t *host);
/* fn runs on every turn of h_drv_run_until; NULL for none. */
void h_drv_set_pump(void (*fn)(void));

/* The last telemetry a driver sent (borrowed), or NULL; h_drv_telemetry_clear forgets it. */
json_t *h_drv_telemetry(void);
void h_drv_telemetry_clear(void);

/* Runs the loop until cond(arg) or ms have passed; false on the deadline. */
bool h_drv_run_until(bool (*cond)(void *), void *arg, int ms);
/* One turn of the loop and the pump, then 2 ms of sleep. */
void h_drv_spin(void);
bool h_drv_flag(void *arg);     /* *(bool *)arg */
void h_drv_set_flag(void *arg); /* *(bool *)arg = true, as a close callback */
bool h_drv_loop_dead(void *arg);

/* lab_driver_call's callback for an h_drv_call_t, and the condition that it came. */
void h_drv_on_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg);
bool h_drv_call_done(void *arg);

/* One action to its end: the result (owned by the caller) or NULL with *err filled. */
json_t *h_drv_call(lab_driver_t *d, const char *action, const char *params, lab_drv_error_t *err);
/* The same, failing the test on an error. */
json_t *h_drv_call_ok(lab_driver_t *d, const char *action, const char *params);
/* The same, the reply kept until the next h_drv_do: returns the error code; h_drv_result is the
 * result (borrowed, NULL after an error) and h_drv_error the error. */
int h_drv_do(lab_driver_t *d, const char *action, const char *params);
/* h_drv_do, failing the test on an error. */
void h_drv_do_ok(lab_driver_t *d, const char *action, const char *params);
json_t *h_drv_result(void);
const lab_drv_error_t *h_drv_error(void);
void h_drv_wait_state(lab_driver_t *d, lab_inst_state_t s);
/* The number at key k of o; fails the test when there is none. */
double h_drv_num(json_t *o, const char *k);

void h_drv_on_conf_err(void *ctx, int line, const char *key, const char *reason);
/* lab_driver_check, new and start on the fixture's loop and host; fails the test on an error. */
lab_driver_t *h_drv_open(const char *id, const lab_drv_kv_t *kv, size_t n);
/* Closes d (none when NULL) and runs the loop until it is; fails the test after 10 s. */
void h_drv_close(lab_driver_t *d);

#endif
