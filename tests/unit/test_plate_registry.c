/* The plate registry (daemon/labware/labware.c) against an instrument that senses its sites (an
 * INVENTORY role): a fake incubator of two cassettes of two slots whose occupancy the test sets
 * "behind labloop's back" between two starts on the same store. On the second start the registry
 * asks it and reconciles: a plate in a slot the device says is empty becomes unknown with a
 * prompt; a plate whose load was under way when the daemon stopped is where the device senses it;
 * a slot the device says is occupied that the registry thought free holds a plate of unknown
 * identity; a held slot the device says is empty is free again. The facts drivers give (an
 * INVENTORY result {"sites": [{cassette, slot, occupied}]}) are drivers/driver.h's contract. */
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/instr/instr.h"
#include "daemon/labware/labware.h"
#include "daemon/store/prompts.h"
#include "daemon/store/store.h"
#include "drivers/driver.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

/* ---- a fake incubator that senses its slots ---- */

static bool occupied[2][2]; /* what the device senses, [cassette-1][slot-1] */
static bool answer_never;   /* loads stay unanswered (the daemon dies meanwhile) */
static const char *label;   /* what the barcode reader reads; NULL: no read */

typedef struct fake_priv {
    bool pending;
    char action[32];
} fake_priv_t;

#define ANY "{\"type\":\"object\"}"
static const lab_drv_action_t sense_actions[] = {
    {"put_in", ANY, 1e6, 0, "load"},
    {"take_out", ANY, 1e6, 0, "unload"},
    {"sense", NULL, 1e6, 0, "the slots' sensors"},
    {"scan", NULL, 1e6, 0, "the barcode reader at its door"},
    {NULL, NULL, 0, 0, NULL},
};
static const lab_drv_role_action_t sense_roles[] = {
    {LAB_DRV_ROLE_LOAD, "put_in"},     {LAB_DRV_ROLE_UNLOAD, "take_out"},
    {LAB_DRV_ROLE_INVENTORY, "sense"}, {LAB_DRV_ROLE_SCAN, "scan"},
    {LAB_DRV_ROLE_NONE, NULL},
};

static void fake_start(lab_driver_t *d)
{
    lab_drv_set_state(d, LAB_INST_IDLE, NULL);
}

static void fake_stop(lab_driver_t *d)
{
    ((fake_priv_t *)lab_drv_priv(d))->pending = false;
}

static void fake_close(lab_driver_t *d)
{
    lab_drv_closed(d);
}

static void fake_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    (void)params;
    fake_priv_t *p = lab_drv_priv(d);
    p->pending = true;
    snprintf(p->action, sizeof p->action, "%s", a->name);
}

static int fake_sites(lab_driver_t *d, int *slots, int max)
{
    (void)d;
    for (int c = 0; c < 2 && c < max; c++)
        slots[c] = 2;
    return max < 2 ? max : 2;
}

static const lab_driver_ops_t fake_sensing = {
    .name = "fake-sensing",
    .kind = "incubator",
    .model = "fake",
    .actions = sense_actions,
    .roles = sense_roles,
    .priv_size = sizeof(fake_priv_t),
    .start = fake_start,
    .stop = fake_stop,
    .close = fake_close,
    .invoke = fake_invoke,
    .abort = fake_stop,
    .sites = fake_sites,
};
static const lab_driver_ops_t *const drivers[] = {&fake_sensing, NULL};

/* ---- the fixture: store, instruments, registry ---- */

typedef struct fx {
    char dir[64], state[96];
    uv_loop_t loop;
    lab_clock_t clock;
    lab_config_t cfg;
    lab_cfg_instrument_t inst[1];
    lab_cfg_kv_t kv[3];
    lab_store_t *st;
    lab_instr_t *in;
    lab_labware_t *lw;
    bool answered;
} fx_t;

static void answer(fx_t *f)
{
    lab_driver_t *d = lab_instr_at(f->in, 0);
    fake_priv_t *p = lab_drv_priv(d);
    if (!p->pending || !lab_drv_current(d))
        return;
    if (strcmp(p->action, "sense") != 0 && answer_never)
        return;
    p->pending = false;
    json_t *result = NULL;
    if (strcmp(p->action, "sense") == 0) {
        json_t *sites = json_array();
        for (int c = 0; c < 2; c++)
            for (int s = 0; s < 2; s++)
                json_array_append_new(sites, json_pack("{s:i, s:i, s:b}", "cassette", c + 1, "slot",
                                                       s + 1, "occupied", occupied[c][s]));
        result = json_pack("{s:o}", "sites", sites);
    } else if (strcmp(p->action, "scan") == 0) {
        result = json_pack("{s:o}", "barcode", label ? json_string(label) : json_null());
    }
    lab_drv_done(d, NULL, result);
}

static void pump(fx_t *f, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        answer(f);
        uv_run(&f->loop, UV_RUN_NOWAIT);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void start(fx_t *f)
{
    assert_int_equal(lab_store_open(&f->st, &f->loop, f->state), 0);
    assert_int_equal(
        lab_instr_start_with(&f->in, &f->loop, &f->cfg, f->st, NULL, &f->clock, drivers), 0);
    assert_int_equal(lab_labware_start(&f->lw, &f->loop, &f->cfg, &f->clock, f->st, f->in), 0);
    pump(f, 50);
}

static void flag(void *arg)
{
    *(int *)arg = 1;
}

/* The daemon's stop order: the registry stops learning, the instruments close, the registry
 * closes, the store last. */
static void stop(fx_t *f)
{
    int done = 0;
    lab_labware_stop(f->lw);
    lab_instr_close(f->in, flag, &done);
    while (!done)
        uv_run(&f->loop, UV_RUN_ONCE);
    done = 0;
    lab_labware_close(f->lw, flag, &done);
    while (!done)
        uv_run(&f->loop, UV_RUN_ONCE);
    done = 0;
    lab_store_close(f->st, flag, &done);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(done, 1);
}

static fx_t *fx_new(void)
{
    fx_t *f = LAB_NEW(fx_t);
    lab_log_set_level(LAB_LOG_ERROR);
    snprintf(f->dir, sizeof f->dir, "/tmp/labloop-plates-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->state, sizeof f->state, "%s/state", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    lab_clock_init_manual(&f->clock, &f->loop, 1796126400000);
    f->cfg.state_dir = f->state;
    f->cfg.time_scale = 1;
    f->cfg.instruments = f->inst;
    f->cfg.n_instruments = 1;
    f->kv[0] = (lab_cfg_kv_t){"driver", "fake-sensing", 1};
    f->kv[1] = (lab_cfg_kv_t){"capacity", "4", 2};
    f->kv[2] = (lab_cfg_kv_t){"record", "off", 3};
    f->inst[0] = (lab_cfg_instrument_t){.id = "inc", .line = 1, .kv = f->kv, .n = 3};
    memset(occupied, 0, sizeof occupied);
    answer_never = false;
    return f;
}

static int rm_one(const char *path, const struct stat *sb, int flag_, struct FTW *ftw)
{
    (void)sb;
    (void)flag_;
    (void)ftw;
    return remove(path);
}

static void fx_free(fx_t *f)
{
    assert_int_equal(uv_loop_close(&f->loop), 0);
    nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
}

static void loaded(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg)
{
    (void)d;
    (void)result;
    (void)err;
    *(bool *)arg = true;
}

/* A load of plate (NULL: nobody named it) into cassette/slot through lab_instr_call. */
static void load(fx_t *f, const char *plate, int cassette, int slot, bool *done)
{
    lab_instr_who_t who = {plate, NULL, "tom"};
    lab_drv_error_t err;
    json_t *params = json_pack("{s:i, s:i}", "cassette", cassette, "slot", slot);
    assert_int_equal(lab_instr_call(f->in, lab_instr_at(f->in, 0), "put_in", params, 0, &who,
                                    loaded, done, &err, NULL),
                     0);
    json_decref(params);
    pump(f, 20);
}

static const char *state_of(fx_t *f, const char *plate, json_t **loc)
{
    static char buf[32];
    json_t *doc = lab_labware_plate(f->lw, plate);
    assert_non_null(doc);
    snprintf(buf, sizeof buf, "%s",
             json_string_value(json_object_get(json_object_get(doc, "location"), "state")));
    if (loc)
        *loc = json_incref(json_object_get(doc, "location"));
    json_decref(doc);
    return buf;
}

static bool prompt_open(fx_t *f, const char *id)
{
    json_t *open = NULL;
    assert_int_equal(lab_prompts_open(f->st, &open), 0);
    size_t i;
    json_t *p;
    bool found = false;
    json_array_foreach(open, i, p) found |=
        strcmp(json_string_value(json_object_get(p, "id")) ?: "", id) == 0;
    json_decref(open);
    return found;
}

static void test_reconciled_with_what_the_incubator_senses(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    start(f);
    bool d1 = false, d2 = false;
    load(f, "P1", 1, 1, &d1);
    assert_true(d1);
    occupied[0][0] = true;
    assert_string_equal(state_of(f, "P1", NULL), "at");
    assert_true(lab_labware_site_busy(f->lw, "inc", 1, 1));
    /* P2's load is under way when the daemon dies */
    answer_never = true;
    load(f, "P2", 1, 2, &d2);
    assert_false(d2);
    assert_string_equal(state_of(f, "P2", NULL), "in_transit");
    assert_true(lab_labware_site_busy(f->lw, "inc", 1, 2));
    stop(f);

    /* meanwhile: P1 taken out by hand, P2's load went through, a stranger put into 2/1 */
    occupied[0][0] = false;
    occupied[0][1] = true;
    occupied[1][0] = true;
    answer_never = false;
    start(f);
    json_t *loc;
    assert_string_equal(state_of(f, "P1", &loc), "unknown");
    assert_non_null(strstr(json_string_value(json_object_get(loc, "why")), "senses no plate"));
    json_decref(loc);
    assert_true(lab_labware_site_busy(f->lw, "inc", 1, 1)); /* in doubt until a person says */
    assert_true(prompt_open(f, "plate:P1:unknown"));
    assert_string_equal(state_of(f, "P2", &loc), "at");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(loc, "site"), "slot")), 2);
    json_decref(loc);
    assert_true(lab_labware_site_busy(f->lw, "inc", 2, 1)); /* a plate nobody named */
    assert_false(lab_labware_site_busy(f->lw, "inc", 2, 2));

    /* a person says P1 is outside: its slot is free, its prompt answered */
    char msg[200];
    assert_int_equal(lab_labware_locate(f->lw, "P1", NULL, 0, 0, 0, NULL, "in the fridge", "tom",
                                        NULL, NULL, msg, sizeof msg),
                     0);
    pump(f, 20);
    assert_false(lab_labware_site_busy(f->lw, "inc", 1, 1));
    assert_false(prompt_open(f, "plate:P1:unknown"));
    /* another plate's slot cannot be claimed for it */
    assert_int_equal(lab_labware_locate(f->lw, "P1", "inc", 1, 2, 0, NULL, "x", "tom", NULL, NULL,
                                        msg, sizeof msg),
                     LAB_ECONFLICT);
    assert_int_equal(lab_labware_locate(f->lw, "P1", "inc", 3, 1, 0, NULL, "x", "tom", NULL, NULL,
                                        msg, sizeof msg),
                     LAB_ENOTFOUND);
    stop(f);

    /* the stranger left, and 2/1 is free again on the next start */
    occupied[1][0] = false;
    start(f);
    assert_false(lab_labware_site_busy(f->lw, "inc", 2, 1));
    assert_true(lab_labware_site_busy(f->lw, "inc", 1, 2));
    stop(f);
    fx_free(f);
}

/* A load nobody named holds its slot; a load that was refused before it began gives it back. */
static void test_unnamed_load_holds_its_slot(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    occupied[0][0] = false;
    start(f);
    bool d = false;
    load(f, NULL, 1, 1, &d);
    assert_true(d);
    assert_true(lab_labware_site_busy(f->lw, "inc", 1, 1));
    assert_false(lab_labware_site_busy(f->lw, "inc", 1, 2));
    stop(f);
    /* the slot stays held across a restart (the device, asked, says it is occupied) */
    occupied[0][0] = true;
    start(f);
    assert_true(lab_labware_site_busy(f->lw, "inc", 1, 1));
    stop(f);
    fx_free(f);
}

/* What a scan saw is kept on the run's plate, and whether it was that plate's label. */
static void test_scan_recorded(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    start(f);
    static const struct {
        const char *plate, *label;
        bool matched;
    } cases[] = {{"S1", "S1", true}, {"S2", "S1", false}, {"S3", NULL, false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        label = cases[i].label;
        bool done = false;
        lab_instr_who_t who = {cases[i].plate, "11111111-1111-4111-8111-111111111111", "scheduler"};
        lab_drv_error_t err;
        assert_int_equal(lab_instr_call(f->in, lab_instr_at(f->in, 0), "scan", NULL, 0, &who,
                                        loaded, &done, &err, NULL),
                         0);
        pump(f, 20);
        assert_true(done);
        json_t *doc = lab_labware_plate(f->lw, cases[i].plate);
        json_t *sc = json_object_get(doc, "scanned");
        assert_non_null(sc);
        assert_int_equal(json_is_true(json_object_get(sc, "matched")), cases[i].matched);
        if (cases[i].label)
            assert_string_equal(json_string_value(json_object_get(sc, "barcode_read")),
                                cases[i].label);
        else
            assert_true(json_is_null(json_object_get(sc, "barcode_read")));
        assert_string_equal(json_string_value(json_object_get(sc, "instrument")), "inc");
        assert_string_equal(json_string_value(json_array_get(json_object_get(doc, "runs"), 0)),
                            who.run);
        json_decref(doc);
    }
    label = NULL;
    stop(f);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reconciled_with_what_the_incubator_senses),
        cmocka_unit_test(test_unnamed_load_holds_its_slot),
        cmocka_unit_test(test_scan_recorded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
