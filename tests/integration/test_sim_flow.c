/* Plates flowing through a cell without a robot arm in labloop-sim: the project's own drivers
 * (hamilton-star, liconic-stx, biotek-synergy) drive a STAR, a Liconic with sim_from/sim_to and a
 * BioTek over real ptys. Three plates are dispensed on the STAR's deck (each into its own
 * column), loaded into slots 1..3, unloaded in order and read: the control socket's
 * {"plates":true} shows three distinct plates that each went deck -> slot -> reader queue ->
 * tray -> done, and each read shows its own plate's column. A read with an empty queue reads the
 * tray's plate again, a load with the station and the deck empty fails with a handler error,
 * and a second Liconic without the keys still refuses a second load as before. Last, a world
 * of 256 plates refuses one more without going down. */
#include "drivers/driver.h"
#include "tests/harness/harness.h"
#include "tests/harness/harness_drv.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define PLATES 3

static h_sim_t sim;
static char dir[256], p_star[300], p_inc[300], p_inc2[300], p_reader[300];
static lab_driver_t *star, *inc, *inc2, *reader;

/* Every plate of the simulated world ({"plates":true}); owned by the caller. */
static json_t *plates(void)
{
    static char r[65536];
    assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plates\":true}"), 0);
    json_error_t je;
    json_t *doc = json_loads(r, 0, &je);
    if (!doc)
        fail_msg("plates: %s: %s", je.text, r);
    json_t *list = json_incref(json_object_get(doc, "plates"));
    json_decref(doc);
    assert_true(json_is_array(list));
    return list;
}

static json_t *find(json_t *list, const char *key, const char *value)
{
    size_t i;
    json_t *p;
    json_array_foreach(list, i, p) if (strcmp(json_string_value(json_object_get(p, key)), value) ==
                                       0) return p;
    return NULL;
}

/* The barcode of the one plate at position (fails when there is none). */
static void plate_at(const char *position, char *barcode, size_t cap)
{
    json_t *list = plates();
    json_t *p = find(list, "position", position);
    if (!p)
        fail_msg("no plate at %s", position);
    snprintf(barcode, cap, "%s", json_string_value(json_object_get(p, "barcode")));
    json_decref(list);
}

static void position_is(const char *barcode, const char *want)
{
    json_t *list = plates();
    json_t *p = find(list, "barcode", barcode);
    if (!p)
        fail_msg("no plate %s", barcode);
    const char *pos = json_string_value(json_object_get(p, "position"));
    if (strcmp(pos, want) != 0)
        fail_msg("plate %s at %s, expected %s", barcode, pos, want);
    json_decref(list);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(h_tempdir("simflow", dir, sizeof dir), 0);
    snprintf(p_star, sizeof p_star, "%s/star1", dir);
    snprintf(p_inc, sizeof p_inc, "%s/inc1", dir);
    snprintf(p_inc2, sizeof p_inc2, "%s/inc2", dir);
    snprintf(p_reader, sizeof p_reader, "%s/reader1", dir);
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 50\nsim_seed = 5\nsim_noise = 0.001\n"
             "[instrument star1]\ndriver = hamilton-star\nport = %s\nsim_plate = P1\n"
             "sim_reagents = substrate,inhibitor\nsim_step_seconds = 1\n"
             "[instrument inc1]\ndriver = liconic-stx\nrack_type = liconic_rack_17mm_22\nport = "
             "%s\nsim_plate = P1\n"
             "sim_step_seconds = 2\nsim_from = star1\nsim_to = reader1\n"
             "[instrument reader1]\ndriver = biotek-synergy\nport = %s\nsim_plate = R0\n"
             "[instrument inc2]\ndriver = liconic-stx\nrack_type = liconic_rack_17mm_22\nport = "
             "%s\nsim_plate = Q1\n"
             "sim_step_seconds = 2\n",
             p_star, p_inc, p_reader, p_inc2);
    assert_int_equal(h_sim_start(&sim, ini), 0);
    assert_int_equal(h_drv_init(50), 0);
    lab_drv_kv_t kstar[] = {{"driver", "hamilton-star", 2},
                            {"port", p_star, 3},
                            {"reagents", "substrate,inhibitor", 4}};
    lab_drv_kv_t kinc[] = {{"driver", "liconic-stx", 2},
                           {"port", p_inc, 3},
                           {"poll_s", "0", 4},
                           {"capacity", "8", 5},
                           {"rack_type", "liconic_rack_17mm_22", 6}};
    lab_drv_kv_t kinc2[] = {{"driver", "liconic-stx", 2},
                            {"port", p_inc2, 3},
                            {"poll_s", "0", 4},
                            {"capacity", "8", 5},
                            {"rack_type", "liconic_rack_17mm_22", 6}};
    lab_drv_kv_t kreader[] = {{"driver", "biotek-synergy", 2},
                              {"port", p_reader, 3},
                              {"poll_s", "0", 4},
                              {"plate_wells", "96", 5}};
    star = h_drv_open("star1", kstar, sizeof kstar / sizeof kstar[0]);
    inc = h_drv_open("inc1", kinc, sizeof kinc / sizeof kinc[0]);
    inc2 = h_drv_open("inc2", kinc2, sizeof kinc2 / sizeof kinc2[0]);
    reader = h_drv_open("reader1", kreader, sizeof kreader / sizeof kreader[0]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_drv_close(star);
    h_drv_close(inc);
    h_drv_close(inc2);
    h_drv_close(reader);
    h_drv_fini();
    h_sim_stop(&sim);
    h_rmtree(dir);
    return 0;
}

/* The value of a well in the last read. */
static double well(const char *name)
{
    json_t *v = json_object_get(json_object_get(h_drv_result(), "values"), name);
    if (!json_is_number(v))
        fail_msg("no value for %s", name);
    return json_number_value(v);
}

/* The last read shows plate k's dispense: column k + 1 above every other column. */
static void read_shows_column(int k)
{
    double low_in = 10, high_out = 0;
    for (int r = 0; r < 8; r++)
        for (int c = 1; c <= 12; c++) {
            char name[8];
            snprintf(name, sizeof name, "%c%d", 'A' + r, c);
            double v = well(name);
            if (c == k + 1)
                low_in = v < low_in ? v : low_in;
            else
                high_out = v > high_out ? v : high_out;
        }
    if (!(low_in > high_out + 0.2))
        fail_msg("read %d: column %d lowest %.4f, other columns highest %.4f", k, k + 1, low_in,
                 high_out);
}

static void test_three_plates_flow(void **state)
{
    (void)state;
    h_drv_wait_state(star, LAB_INST_IDLE);
    h_drv_wait_state(inc, LAB_INST_IDLE);
    h_drv_wait_state(reader, LAB_INST_IDLE);
    h_drv_do_ok(inc, "set_temperature", "{\"temperature_c\":37}");
    char barcode[PLATES][64], params[128], slot[64];
    for (int k = 0; k < PLATES; k++) {
        /* 20 uL substrate with 8 channels into column k + 1 of the plate on the deck */
        h_drv_do_ok(star, "pick_up_tips", "{\"channels\": 8}");
        h_drv_do_ok(star, "aspirate", "{\"volume_ul\": 20, \"reagent\": \"substrate\"}");
        snprintf(params, sizeof params, "{\"well\": \"A%d\", \"volume_ul\": 20}", k + 1);
        h_drv_do_ok(star, "dispense", params);
        h_drv_do_ok(star, "drop_tips", NULL);
        plate_at("deck:star1", barcode[k], sizeof barcode[k]);
        for (int j = 0; j < k; j++)
            assert_string_not_equal(barcode[j], barcode[k]);
        snprintf(params, sizeof params, "{\"cassette\":1,\"slot\":%d}", k + 1);
        h_drv_do_ok(inc, "load", params);
        snprintf(slot, sizeof slot, "inc1:1/%d", k + 1);
        position_is(barcode[k], slot);
    }
    /* the configured sim_plate first, then fresh plates from the stack */
    assert_string_equal(barcode[0], "P1");
    assert_string_equal(barcode[1], "SIM-0001");
    assert_string_equal(barcode[2], "SIM-0002");
    for (int k = 0; k < PLATES; k++) {
        snprintf(params, sizeof params, "{\"cassette\":1,\"slot\":%d}", k + 1);
        h_drv_do_ok(inc, "unload", params);
        position_is(barcode[k], "queue:reader1");
    }
    for (int k = 0; k < PLATES; k++) {
        h_drv_do_ok(reader, "read_absorbance", "{\"wavelength_nm\":450}");
        position_is(barcode[k], "tray:reader1");
        if (k)
            position_is(barcode[k - 1], "done:reader1");
        read_shows_column(k);
    }
    /* an empty queue: the tray's plate is read again, the same values */
    double a3 = well("A3"), b5 = well("B5");
    h_drv_do_ok(reader, "read_absorbance", "{\"wavelength_nm\":450}");
    position_is(barcode[PLATES - 1], "tray:reader1");
    assert_true(well("A3") == a3 && well("B5") == b5);

    /* three plates went through the reader (and inc2's Q1 is the only other one in the world);
     * each was incubated and holds its 8 x 20 uL */
    json_t *list = plates();
    assert_int_equal(json_array_size(list), PLATES + 1);
    assert_non_null(find(list, "barcode", "Q1"));
    for (int k = 0; k < PLATES; k++) {
        json_t *p = find(list, "barcode", barcode[k]);
        assert_non_null(p);
        double ul = json_number_value(json_object_get(p, "dispensed_ul"));
        double inc_s = json_number_value(json_object_get(p, "incubation_degC_s"));
        if (!(ul > 159.9 && ul < 160.1) || !(inc_s > 0))
            fail_msg("plate %s: %.2f uL, %.2f degC s", barcode[k], ul, inc_s);
    }
    json_decref(list);

    /* the transfer station and the deck empty: a load is a handler error, as without the keys */
    assert_int_equal(h_drv_do(inc, "load", "{\"cassette\":1,\"slot\":4}"), LAB_EDEVICE);
    h_drv_do_ok(inc, "reset", NULL);
    h_drv_wait_state(inc, LAB_INST_IDLE);
}

/* Without sim_from/sim_to the Liconic keeps its single plate: a second load finds no plate. */
static void test_without_keys_unchanged(void **state)
{
    (void)state;
    h_drv_wait_state(inc2, LAB_INST_IDLE);
    position_is("Q1", "transfer:inc2");
    h_drv_do_ok(inc2, "load", "{\"cassette\":1,\"slot\":1}");
    position_is("Q1", "inc2:1/1");
    assert_int_equal(h_drv_do(inc2, "load", "{\"cassette\":1,\"slot\":2}"), LAB_EDEVICE);
    h_drv_do_ok(inc2, "reset", NULL);
    h_drv_wait_state(inc2, LAB_INST_IDLE);
    h_drv_do_ok(inc2, "unload", "{\"cassette\":1,\"slot\":1}");
    position_is("Q1", "transfer:inc2");
}

/* A full world is an error the simulator survives: no new plate through the control socket, and
 * a dispense that needs a fresh plate is refused by the STAR (er30, a device error). */
static void test_full_world(void **state)
{
    (void)state;
    char r[512];
    json_t *list = plates();
    int n = (int)json_array_size(list);
    json_decref(list);
    for (int i = n; i < 256; i++)
        assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"F%d\"}", i), 0);
    assert_int_not_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"ONE-TOO-MANY\"}"), 0);
    assert_non_null(strstr(r, "too many plates"));
    h_drv_wait_state(star, LAB_INST_IDLE);
    h_drv_do_ok(star, "pick_up_tips", "{\"channels\": 8}");
    h_drv_do_ok(star, "aspirate", "{\"volume_ul\": 20, \"reagent\": \"substrate\"}");
    assert_int_equal(h_drv_do(star, "dispense", "{\"well\": \"A1\", \"volume_ul\": 20}"),
                     LAB_EDEVICE);
    list = plates();
    assert_int_equal(json_array_size(list), 256);
    json_decref(list);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_plates_flow),
        cmocka_unit_test(test_without_keys_unchanged),
        cmocka_unit_test(test_full_world),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
