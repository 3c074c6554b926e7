/* What the scheduler's unit tests share: the scheduler on a manual lab clock (core/clock.h), a
 * SQLite store in a temporary directory, and fake instruments (drivers defined here, fake_*)
 * that answer each action as the test says: success, a device error, a timeout, a refusal, or
 * never. Time moves only when the test says (fx_advance); fx_until runs the loop until a
 * condition holds, without sleeping. Included by tests/unit/test_sched_*.c. */
#ifndef LAB_TEST_SCHED_FAKE_H
#define LAB_TEST_SCHED_FAKE_H

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/instr/instr.h"
#include "daemon/sched/sched.h"
#include "daemon/store/runs.h"
#include "daemon/store/store.h"
#include "daemon/store/workflows.h"
#include "drivers/driver.h"

#include <ftw.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

/* ---- fake instruments ---- */

typedef enum fake_answer {
    FAKE_OK,
    FAKE_DEVICE_ERROR, /* EDEVICE: the command may have run */
    FAKE_NOT_STARTED,  /* EDEVICE before anything reached the device */
    FAKE_TIMEOUT,      /* ETIMEOUT: no answer in time, it may have run */
    FAKE_REFUSED,      /* ESTATE, not started (nothing to do: no tips on) */
    FAKE_NEVER,        /* no answer at all */
} fake_answer_t;

#define FAKE_SCRIPT_MAX 32
#define FAKE_LOG_MAX 256

typedef struct fake_world {
    struct {
        char inst[32], action[32];
        fake_answer_t answer;
    } script[FAKE_SCRIPT_MAX]; /* each used once, in order, by the first call that matches */
    bool used[FAKE_SCRIPT_MAX];
    int nscript;
    char log[FAKE_LOG_MAX][64]; /* "inst:action" per call, in order */
    int nlog;
} fake_world_t;

static fake_world_t fake;

typedef struct fake_priv {
    bool pending;
    char action[32];
    fake_answer_t answer;
} fake_priv_t;

#define FAKE_ANY "{\"type\":\"object\"}"
/* A long default timeout: the framework's own (real time) never ends a call in these tests. */
#define FAKE_ACTION(name)                                                                          \
    {                                                                                              \
        name, FAKE_ANY, 1e6, 0, "a fake's"                                                         \
    }

static const lab_drv_action_t fake_incubator_actions[] = {
    FAKE_ACTION("put_in"),
    FAKE_ACTION("take_out"),
    FAKE_ACTION("hold_at"),
    {NULL, NULL, 0, 0, NULL},
};
static const lab_drv_role_action_t fake_incubator_roles[] = {
    {LAB_DRV_ROLE_LOAD, "put_in"},
    {LAB_DRV_ROLE_UNLOAD, "take_out"},
    {LAB_DRV_ROLE_SET_TEMP, "hold_at"},
    {LAB_DRV_ROLE_NONE, NULL},
};
static const lab_drv_action_t fake_reader_actions[] = {
    FAKE_ACTION("read_absorbance"),
    {NULL, NULL, 0, 0, NULL},
};
static const lab_drv_role_action_t fake_reader_roles[] = {
    {LAB_DRV_ROLE_READ, "read_absorbance"},
    {LAB_DRV_ROLE_NONE, NULL},
};
static const lab_drv_action_t fake_handler_actions[] = {
    FAKE_ACTION("tips_on"), FAKE_ACTION("tips_off"),  FAKE_ACTION("draw"),
    FAKE_ACTION("eject"),   {NULL, NULL, 0, 0, NULL},
};
static const lab_drv_role_action_t fake_handler_roles[] = {
    {LAB_DRV_ROLE_PICK_UP_TIPS, "tips_on"},
    {LAB_DRV_ROLE_DROP_TIPS, "tips_off"},
    {LAB_DRV_ROLE_ASPIRATE, "draw"},
    {LAB_DRV_ROLE_DISPENSE, "eject"},
    {LAB_DRV_ROLE_NONE, NULL},
};

static inline void fake_start(lab_driver_t *d)
{
    lab_drv_set_state(d, LAB_INST_IDLE, NULL);
}

static inline void fake_stop(lab_driver_t *d)
{
    ((fake_priv_t *)lab_drv_priv(d))->pending = false;
}

static inline void fake_close(lab_driver_t *d)
{
    lab_drv_closed(d);
}

static inline void fake_abort(lab_driver_t *d)
{
    ((fake_priv_t *)lab_drv_priv(d))->pending = false;
}

/* The call is noted and its answer looked up; it is given from the loop (fx_pump), never from
 * inside invoke. */
static inline void fake_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    (void)params;
    fake_priv_t *p = lab_drv_priv(d);
    p->pending = true;
    snprintf(p->action, sizeof p->action, "%s", a->name);
    p->answer = FAKE_OK;
    for (int i = 0; i < fake.nscript; i++)
        if (!fake.used[i] && strcmp(fake.script[i].inst, lab_driver_id(d)) == 0 &&
            strcmp(fake.script[i].action, a->name) == 0) {
            fake.used[i] = true;
            p->answer = fake.script[i].answer;
            break;
        }
    if (fake.nlog < FAKE_LOG_MAX)
        snprintf(fake.log[fake.nlog++], sizeof fake.log[0], "%s:%s", lab_driver_id(d), a->name);
}

/* Two cassettes of two slots. */
static inline int fake_sites(lab_driver_t *d, int *slots, int max)
{
    (void)d;
    for (int c = 0; c < 2 && c < max; c++)
        slots[c] = 2;
    return max < 2 ? max : 2;
}

#define FAKE_OPS(sym, nm, knd, acts, rls, st)                                                      \
    static const lab_driver_ops_t sym = {                                                          \
        .name = nm,                                                                                \
        .kind = knd,                                                                               \
        .model = "fake",                                                                           \
        .actions = acts,                                                                           \
        .roles = rls,                                                                              \
        .priv_size = sizeof(fake_priv_t),                                                          \
        .start = fake_start,                                                                       \
        .stop = fake_stop,                                                                         \
        .close = fake_close,                                                                       \
        .invoke = fake_invoke,                                                                     \
        .abort = fake_abort,                                                                       \
        .sites = st,                                                                               \
    }

FAKE_OPS(fake_incubator, "fake-incubator", "incubator", fake_incubator_actions,
         fake_incubator_roles, fake_sites);
FAKE_OPS(fake_reader, "fake-reader", "plate_reader", fake_reader_actions, fake_reader_roles, NULL);
FAKE_OPS(fake_handler, "fake-handler", "liquid_handler", fake_handler_actions, fake_handler_roles,
         NULL);

static const lab_driver_ops_t *const fake_drivers[] = {&fake_incubator, &fake_reader, &fake_handler,
                                                       NULL};

/* The next call of action on inst gets answer (later ones succeed). */
static inline void fake_script(const char *inst, const char *action, fake_answer_t answer)
{
    assert_true(fake.nscript < FAKE_SCRIPT_MAX);
    int i = fake.nscript++;
    snprintf(fake.script[i].inst, sizeof fake.script[i].inst, "%s", inst);
    snprintf(fake.script[i].action, sizeof fake.script[i].action, "%s", action);
    fake.script[i].answer = answer;
}

/* How many calls of inst:action the log holds. */
static inline int fake_calls(const char *what)
{
    int n = 0;
    for (int i = 0; i < fake.nlog; i++)
        n += strcmp(fake.log[i], what) == 0;
    return n;
}

/* ---- the fixture ---- */

typedef struct fx {
    char dir[64], state[96];
    uv_loop_t loop;
    lab_clock_t clock;
    lab_config_t cfg;
    lab_cfg_instrument_t inst[3];
    lab_cfg_kv_t kv[3][3];
    lab_store_t *st;
    lab_instr_t *in;
    lab_sched_t *s;
    json_t *docs;   /* run id -> its newest committed document */
    json_t *events; /* "id state" per committed change, in order */
    int inserts, puts;
} fx_t;

static inline void fx_on_run(void *ctx, const char *id, const char *state, const char *doc)
{
    fx_t *f = ctx;
    json_object_set_new(f->docs, id, json_loads(doc, 0, NULL));
    json_array_append_new(f->events, json_sprintf("%s %s", id, state));
}

/* Answers what the fakes were asked (outside invoke, as a device would). */
static inline void fx_answer(fx_t *f)
{
    for (int i = 0; f->in && i < lab_instr_count(f->in); i++) {
        lab_driver_t *d = lab_instr_at(f->in, i);
        fake_priv_t *p = lab_drv_priv(d);
        if (!p->pending || p->answer == FAKE_NEVER || !lab_drv_current(d))
            continue;
        p->pending = false;
        lab_drv_error_t e = {0};
        switch (p->answer) {
        case FAKE_OK:
            if (strcmp(p->action, "read_absorbance") == 0)
                lab_drv_done(d, NULL,
                             json_pack("{s:{s:f,s:f},s:i}", "values", "A1", 0.25, "B1", 0.5,
                                       "wavelength_nm", 450));
            else
                lab_drv_done(d, NULL, NULL);
            continue;
        case FAKE_DEVICE_ERROR:
            lab_drv_error_set(&e, LAB_EDEVICE, "E7", "the fake says no");
            break;
        case FAKE_NOT_STARTED:
            lab_drv_error_set(&e, LAB_EDEVICE, "E1", "refused before it began");
            e.not_started = true;
            break;
        case FAKE_TIMEOUT:
            lab_drv_error_set(&e, LAB_ETIMEDOUT, NULL, "no answer");
            break;
        case FAKE_REFUSED:
            lab_drv_error_set(&e, LAB_ESTATE, NULL, "nothing to do");
            e.not_started = true;
            break;
        default:
            break;
        }
        lab_drv_done(d, &e, NULL);
    }
}

static inline void fx_pump(fx_t *f)
{
    uv_run(&f->loop, UV_RUN_NOWAIT);
    fx_answer(f);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* Runs the loop until cond(f, arg) holds; fails after 2 s of wall time (a bug, not a slow
 * machine: every step here takes microseconds). */
typedef bool (*fx_cond_t)(fx_t *f, const void *arg);
static inline bool fx_until(fx_t *f, fx_cond_t cond, const void *arg)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        fx_pump(f);
        if (cond(f, arg))
            return true;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > 2000)
            return false;
        sched_yield();
    }
}

/* Runs the loop for n rounds: what is due now happens, nothing waits on the clock. */
static inline void fx_settle(fx_t *f, int n)
{
    for (int i = 0; i < n; i++)
        fx_pump(f);
}

static inline void fx_advance(fx_t *f, double lab_s)
{
    lab_clock_advance(&f->clock, lab_s);
}

static inline void fx_add_inst(fx_t *f, const char *id, const char *driver, const char *capacity)
{
    int i = f->cfg.n_instruments++;
    f->kv[i][0] = (lab_cfg_kv_t){"driver", (char *)driver, 1};
    f->kv[i][1] = (lab_cfg_kv_t){"capacity", (char *)capacity, 2};
    f->kv[i][2] = (lab_cfg_kv_t){"record", "off", 3};
    f->inst[i] = (lab_cfg_instrument_t){.id = (char *)id, .line = 1, .kv = f->kv[i], .n = 3};
}

static inline void fx_start_sched(fx_t *f)
{
    assert_int_equal(
        lab_instr_start_with(&f->in, &f->loop, &f->cfg, f->st, NULL, &f->clock, fake_drivers), 0);
    assert_int_equal(lab_sched_start(&f->s, &f->loop, &f->cfg, &f->clock, f->st, f->in), 0);
    lab_sched_on_run(f->s, fx_on_run, f);
}

/* A cell of an incubator "inc" (4 sites), a reader "rdr" and a liquid handler "hnd". */
static inline fx_t *fx_new(void)
{
    fx_t *f = LAB_NEW(fx_t);
    memset(&fake, 0, sizeof fake);
    lab_log_set_level(LAB_LOG_ERROR);
    snprintf(f->dir, sizeof f->dir, "/tmp/labloop-sched-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->state, sizeof f->state, "%s/state", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    lab_clock_init_manual(&f->clock, &f->loop, 1796126400000); /* 2026-12-01T12:00:00Z */
    f->cfg.state_dir = f->state;
    f->cfg.time_scale = 1;
    f->cfg.sched_budget_ms = 20;
    f->cfg.sched_handling_s = 0;
    f->cfg.sched_timeout_factor = 2;
    f->cfg.instruments = f->inst;
    fx_add_inst(f, "inc", "fake-incubator", "4");
    fx_add_inst(f, "rdr", "fake-reader", "1");
    fx_add_inst(f, "hnd", "fake-handler", "1");
    f->docs = json_object();
    f->events = json_array();
    assert_int_equal(lab_store_open(&f->st, &f->loop, f->state), 0);
    fx_start_sched(f);
    return f;
}

static inline void fx_flag(void *arg)
{
    *(int *)arg = 1;
}

/* The daemon's stop order: the scheduler stops, the instruments close, then the scheduler. */
static inline void fx_stop_sched(fx_t *f)
{
    int in_closed = 0, s_closed = 0;
    lab_sched_stop(f->s);
    lab_instr_close(f->in, fx_flag, &in_closed);
    while (!in_closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    lab_sched_close(f->s, fx_flag, &s_closed);
    while (!s_closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    f->s = NULL;
    f->in = NULL;
}

static inline int fx_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void fx_free(fx_t *f)
{
    int closed = 0;
    if (f->s)
        fx_stop_sched(f);
    lab_store_close(f->st, fx_flag, &closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    nftw(f->dir, fx_rm, 16, FTW_DEPTH | FTW_PHYS);
    json_decref(f->docs);
    json_decref(f->events);
    free(f);
}

static inline bool fx_counter_is(fx_t *f, const void *arg)
{
    (void)f;
    return *(const int *)arg == 0;
}

static inline void fx_put_done(lab_store_op_t *op, int status)
{
    lab_wf_put_t *put = (lab_wf_put_t *)op;
    assert_int_equal(status, 0);
    (*(int *)put->arg)--;
    lab_wf_put_free(put);
}

/* Stores a workflow (JSON text with its name and steps). */
static inline void fx_workflow(fx_t *f, const char *text)
{
    json_t *wf = json_loads(text, 0, NULL);
    assert_non_null(wf);
    lab_wf_put_t *put = lab_wf_put_new();
    put->name = lab_strdup(json_string_value(json_object_get(wf, "name")));
    put->canon = json_dumps(wf, JSON_COMPACT | JSON_SORT_KEYS);
    put->ts_ms = lab_clock_now_ms(&f->clock);
    put->arg = &f->puts;
    put->op.done = fx_put_done;
    f->puts++;
    lab_store_submit(f->st, &put->op);
    json_decref(wf);
    assert_true(fx_until(f, fx_counter_is, &f->puts));
}

static inline void fx_insert_done(lab_store_op_t *op, int status)
{
    lab_run_insert_t *ins = (lab_run_insert_t *)op;
    assert_int_equal(status, 0);
    (*(int *)ins->arg)--;
    lab_run_insert_free(ins);
}

/* A run of workflow wf as the API hands it over: stored, then submitted. extra (may be NULL)
 * adds members (priority, campaign). */
static inline void fx_submit(fx_t *f, const char *id, const char *wf, const char *extra)
{
    char at[32];
    lab_time_iso(lab_clock_now_ms(&f->clock), at);
    json_t *doc = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "id", id, "workflow", wf, "plate", id,
                            "state", "queued", "priority", "normal", "created_at", at);
    if (extra) {
        json_t *x = json_loads(extra, 0, NULL);
        assert_non_null(x);
        json_object_update(doc, x);
        json_decref(x);
    }
    lab_run_insert_t *ins = lab_run_insert_new();
    ins->id = lab_strdup(id);
    ins->state = lab_strdup("queued");
    ins->doc = json_dumps(doc, JSON_COMPACT);
    ins->ts_ms = lab_clock_now_ms(&f->clock);
    ins->arg = &f->inserts;
    ins->op.done = fx_insert_done;
    f->inserts++;
    lab_store_submit(f->st, &ins->op);
    assert_true(fx_until(f, fx_counter_is, &f->inserts));
    lab_sched_submitted_doc(f->s, doc);
}

/* The newest committed document of a run (borrowed), or NULL. */
static inline json_t *fx_doc(fx_t *f, const char *id)
{
    return json_object_get(f->docs, id);
}

static inline const char *fx_state(fx_t *f, const char *id)
{
    return json_string_value(json_object_get(fx_doc(f, id), "state"));
}

static inline json_t *fx_step(fx_t *f, const char *id, int k)
{
    return json_array_get(json_object_get(fx_doc(f, id), "steps"), (size_t)k);
}

static inline const char *fx_step_state(fx_t *f, const char *id, int k)
{
    return json_string_value(json_object_get(fx_step(f, id, k), "state"));
}

/* fx_until conditions: arg is "ID STATE" */
static inline bool fx_run_is(fx_t *f, const void *arg)
{
    char id[64], state[32];
    if (sscanf(arg, "%63s %31s", id, state) != 2)
        return false;
    const char *s = fx_state(f, id);
    return s && strcmp(s, state) == 0;
}

/* arg is "ID K KEY": step K of run ID has KEY in its newest document */
static inline bool fx_step_has(fx_t *f, const void *arg)
{
    char id[64], key[32];
    int k;
    if (sscanf(arg, "%63s %d %31s", id, &k, key) != 3)
        return false;
    return json_object_get(fx_step(f, id, k), key) != NULL;
}

/* arg is "inst:action": that call was made at least once */
static inline bool fx_called(fx_t *f, const void *arg)
{
    (void)f;
    return fake_calls(arg) > 0;
}

/* The device comes back after an error put it in fault. */
static inline void fx_recover(fx_t *f, const char *inst)
{
    lab_driver_t *d = lab_instr_find(f->in, inst, strlen(inst));
    assert_non_null(d);
    lab_drv_set_state(d, LAB_INST_IDLE, NULL);
}

#endif
