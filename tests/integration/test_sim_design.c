/* The design response of labloop-sim's world through the project's own drivers: a STAR lays out
 * enzyme, substrate and cofactor with volumes per channel (A1 at the optimum, B1 at half of it,
 * C1 at twice, D1 without cofactor) and a BioTek reads the plate. Each value is the model's
 * (sim_world_design, computed here without a simulator) within the configured noise: the
 * optimum reads 0.040 + A, the highest on the plate, and a well lacking a design reagent reads
 * the background. */
#include "drivers/driver.h"
#include "sim/world.h"
#include "tests/harness/harness.h"
#include "tests/harness/harness_drv.h"

#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define DESIGN "enzyme:42,substrate:118,cofactor:17"
#define NOISE 0.001
/* 5 standard deviations of the noise, and the reader's last digit */
#define TOLERANCE (5 * NOISE + 0.0005)

static h_sim_t sim;
static char dir[256], p_star[300], p_reader[300];
static lab_driver_t *star, *reader;
static sim_world_t model; /* the design alone, for the true values */

static int setup(void **state)
{
    (void)state;
    assert_int_equal(h_tempdir("simdesign", dir, sizeof dir), 0);
    snprintf(p_star, sizeof p_star, "%s/star1", dir);
    snprintf(p_reader, sizeof p_reader, "%s/reader1", dir);
    char ini[2048];
    /* no sim_design_max: the default A, 2.0 AU */
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 50\nsim_seed = 11\nsim_noise = %g\nsim_design = %s\n"
             "[instrument star1]\ndriver = hamilton-star\nport = %s\nsim_plate = D1\n"
             "sim_reagents = enzyme,substrate,cofactor\nsim_step_seconds = 1\n"
             "[instrument reader1]\ndriver = biotek-synergy\nport = %s\nsim_plate = D1\n",
             NOISE, DESIGN, p_star, p_reader);
    assert_int_equal(h_sim_start(&sim, ini), 0);
    sim_world_init(&model, 0, 0);
    model.design.max_au = 2.0;
    char why[160];
    assert_int_equal(sim_design_parse(DESIGN, &model.design, why, sizeof why), 0);
    assert_int_equal(h_drv_init(50), 0);
    lab_drv_kv_t kstar[] = {{"driver", "hamilton-star", 2},
                            {"port", p_star, 3},
                            {"reagents", "enzyme,substrate,cofactor", 4}};
    lab_drv_kv_t kreader[] = {{"driver", "biotek-synergy", 2},
                              {"port", p_reader, 3},
                              {"poll_s", "0", 4},
                              {"plate_wells", "96", 5}};
    star = h_drv_open("star1", kstar, sizeof kstar / sizeof kstar[0]);
    reader = h_drv_open("reader1", kreader, sizeof kreader / sizeof kreader[0]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_drv_close(star);
    h_drv_close(reader);
    h_drv_fini();
    h_sim_stop(&sim);
    h_rmtree(dir);
    return 0;
}

static double well(json_t *values, const char *name)
{
    json_t *v = json_object_get(values, name);
    if (!json_is_number(v))
        fail_msg("no value for %s", name);
    return json_number_value(v);
}

/* The read value of a well against the model's, for ul uL of enzyme, substrate and cofactor. */
static void expect(json_t *values, const char *name, const double ul[3], double want)
{
    double truth = 0.040 + sim_world_design(&model, ul), got = well(values, name);
    if (fabs(truth - want) > 1e-9)
        fail_msg("%s: the model gives %.6f, expected %.6f", name, truth, want);
    if (fabs(got - truth) > TOLERANCE)
        fail_msg("%s: read %.4f, the model %.4f (tolerance %.4f)", name, got, truth, TOLERANCE);
}

static void test_optimum_read_back(void **state)
{
    (void)state;
    h_drv_wait_state(star, LAB_INST_IDLE);
    h_drv_wait_state(reader, LAB_INST_IDLE);
    const char *names[3] = {"enzyme", "substrate", "cofactor"};
    const double opt[3] = {42, 118, 17};
    /* channel k into row k of column 1: A1 at the optimum, B1 at half, C1 at twice, D1 with no
     * cofactor (its channel sits out) */
    double ul[4][3];
    for (int r = 0; r < 3; r++) {
        ul[0][r] = opt[r];
        ul[1][r] = opt[r] / 2;
        ul[2][r] = opt[r] * 2;
        ul[3][r] = r == 2 ? 0 : opt[r];
        char vols[128], params[256];
        snprintf(vols, sizeof vols, "[%g, %g, %g, %g]", ul[0][r], ul[1][r], ul[2][r], ul[3][r]);
        h_drv_do_ok(star, "pick_up_tips", "{\"channels\": 4}");
        snprintf(params, sizeof params, "{\"reagent\": \"%s\", \"volume_ul\": %s}", names[r], vols);
        h_drv_do_ok(star, "aspirate", params);
        snprintf(params, sizeof params, "{\"well\": \"A1\", \"volume_ul\": %s}", vols);
        h_drv_do_ok(star, "dispense", params);
        h_drv_do_ok(star, "drop_tips", NULL);
    }
    /* the world holds what was laid out */
    char r[8192];
    assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"D1\"}"), 0);
    json_t *doc = json_loads(r, 0, NULL);
    assert_non_null(doc);
    json_t *wells = json_object_get(doc, "wells");
    assert_true(json_number_value(json_object_get(json_object_get(wells, "B1"), "substrate")) ==
                59);
    assert_null(json_object_get(json_object_get(wells, "D1"), "cofactor"));
    assert_int_equal(json_object_size(wells), 4);
    json_decref(doc);

    h_drv_do_ok(reader, "read_absorbance", "{\"wavelength_nm\":450}");
    json_t *values = json_object_get(h_drv_result(), "values");
    double f_half = 0.5 * exp(0.5), f_two = 2 * exp(-1);
    expect(values, "A1", ul[0], 0.040 + 2.0);
    expect(values, "B1", ul[1], 0.040 + 2.0 * f_half * f_half * f_half);
    expect(values, "C1", ul[2], 0.040 + 2.0 * f_two * f_two * f_two);
    expect(values, "D1", ul[3], 0.040);
    /* the optimum is the plate's highest; an empty well reads the background */
    const char *k;
    json_t *v;
    json_object_foreach(values, k, v)
    {
        if (strcmp(k, "A1") != 0 && !(json_number_value(v) < well(values, "A1")))
            fail_msg("%s reads %.4f, A1 (the optimum) %.4f", k, json_number_value(v),
                     well(values, "A1"));
    }
    assert_true(fabs(well(values, "H12") - 0.040) <= TOLERANCE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_optimum_read_back),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
