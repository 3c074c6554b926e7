/* Costs: the [costs] section (prices by key, instrument.ID per hour, reagent.NAME per µL, each
 * refused precisely with its line at the limits) and the cost of a run from what its document
 * records, every part recomputable from the quantities and prices beside it. */
#include "core/cfg.h"
#include "core/err.h"
#include "daemon/model/cost.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static int load(const char *text, lab_config_t *cfg, lab_cfg_errors_t *errs)
{
    char path[] = "/tmp/labloop-cost-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "[labloop]\nstate_dir = /tmp\n[instrument rdr]\ndriver = biotek-synergy\n"
            "[instrument hnd]\ndriver = hamilton-star\n%s",
            text);
    fclose(f);
    memset(cfg, 0, sizeof *cfg);
    memset(errs, 0, sizeof *errs);
    int rc = lab_config_load(path, cfg, errs);
    unlink(path);
    return rc;
}

static bool has_error(const lab_cfg_errors_t *e, int line, const char *key, const char *text)
{
    for (int i = 0; i < e->n; i++)
        if (e->v[i].line == line && strcmp(e->v[i].key, key) == 0 && strstr(e->v[i].reason, text))
            return true;
    return false;
}

static void test_config(void **state)
{
    (void)state;
    lab_config_t cfg;
    lab_cfg_errors_t errs;
    assert_int_equal(load("[costs]\ncurrency = CHF\nplate = 1\ntip = 0.5\ninstrument_hour = 3.6\n"
                          "instrument.rdr = 36\nreagent.substrate = 0.01\nreagent.buffer.b = 0\n",
                          &cfg, &errs),
                     0);
    assert_true(cfg.costs_enabled);
    assert_string_equal(cfg.costs_currency, "CHF");
    assert_int_equal(cfg.n_costs_instruments, 1);
    assert_int_equal(cfg.n_costs_reagents, 2);
    assert_string_equal(cfg.costs_reagents[1].name, "buffer.b");
    lab_config_free(&cfg);
    lab_cfg_errors_free(&errs);

    /* lines: 7 is [costs] */
    assert_int_equal(load("[costs]\ninstrument.nope = 5\nreagent. = 1\nreagent.x = -1\n"
                          "reagent.y = abc\nreagent.z = 1\nreagent.z = 2\ntip = -1\n"
                          "reagent.a b = 1\ninstrument.rdr = 1e10\n",
                          &cfg, &errs),
                     LAB_ECONFIG);
    assert_true(has_error(&errs, 8, "instrument.nope", "no [instrument nope] section"));
    assert_true(has_error(&errs, 9, "reagent.", "NAME 1 to 64 characters"));
    assert_true(has_error(&errs, 10, "reagent.x", "from 0 to 1e9"));
    assert_true(has_error(&errs, 11, "reagent.y", "from 0 to 1e9"));
    assert_true(has_error(&errs, 13, "reagent.z", "given twice (first on line 12)"));
    assert_true(has_error(&errs, 14, "tip", ""));
    assert_true(has_error(&errs, 15, "reagent.a b", "only letters"));
    assert_true(has_error(&errs, 16, "instrument.rdr", "from 0 to 1e9"));
    assert_int_equal(errs.n, 8);
    lab_config_free(&cfg);
    lab_cfg_errors_free(&errs);

    /* absent: prices 0, the currency's default */
    assert_int_equal(load("", &cfg, &errs), 0);
    assert_false(cfg.costs_enabled);
    assert_true(cfg.costs_plate == 0 && cfg.costs_tip == 0 && cfg.costs_instrument_hour == 0);
    lab_config_free(&cfg);
    lab_cfg_errors_free(&errs);
}

static void test_run_cost(void **state)
{
    (void)state;
    lab_config_t cfg;
    lab_cfg_errors_t errs;
    assert_int_equal(load("[costs]\nplate = 1\ntip = 0.5\ninstrument_hour = 3.6\n"
                          "instrument.rdr = 36\nreagent.substrate = 0.01\n",
                          &cfg, &errs),
                     0);
    json_t *step1 = json_pack("{s:s, s:s, s:s}", "instrument", "hnd", "started_at",
                              "2026-12-01T10:00:00.000Z", "ended_at", "2026-12-01T10:00:30.000Z");
    lab_consumed_add(step1, 8, NULL, 0);
    lab_consumed_add(step1, 0, "substrate", 60);
    lab_consumed_add(step1, 0, "substrate", 40);
    lab_consumed_add(step1, 0, "water", 500);
    json_t *run = json_pack("{s:[o, {s:s, s:s, s:s}, {s:s, s:s}]}", "steps", step1, "instrument",
                            "rdr", "started_at", "2026-12-01T10:01:00.000Z", "ended_at",
                            "2026-12-01T10:02:00.000Z", "instrument", "rdr", "started_at",
                            "2026-12-01T10:05:00.000Z"); /* a step that never ended costs nothing */
    json_t *c = lab_run_cost(&cfg, run);
    /* plate 1 + hnd 30 s at 3.6/h (0.03) + rdr 60 s at 36/h (0.6) + 8 tips (4) + 100 µL
     * substrate (1) + 500 µL water at no price */
    assert_true(fabs(json_real_value(json_object_get(c, "total")) - 6.63) < 1e-12);
    assert_string_equal(json_string_value(json_object_get(c, "currency")), "EUR");
    json_t *hnd = json_array_get(json_object_get(c, "instruments"), 0);
    assert_string_equal(json_string_value(json_object_get(hnd, "instrument")), "hnd");
    assert_true(json_real_value(json_object_get(hnd, "seconds")) == 30);
    assert_true(json_real_value(json_object_get(hnd, "per_hour")) == 3.6);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(c, "tips"), "count")), 8);
    json_t *sub = json_array_get(json_object_get(c, "reagents"), 0);
    assert_true(json_real_value(json_object_get(sub, "ul")) == 100);
    json_t *water = json_array_get(json_object_get(c, "reagents"), 1);
    assert_true(json_real_value(json_object_get(water, "cost")) == 0);
    json_decref(c);
    json_decref(run);
    lab_config_free(&cfg);
    lab_cfg_errors_free(&errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_run_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
