/* What a built step program takes from a liquid handler's tips and troughs (program_needs in
 * daemon/sched/program.c): the tips its pick-ups fit and the µL its aspirates draw, by reagent,
 * for a plain dispense and a campaign plate's design. */
#include "daemon/sched/program.h"
#include "tests/unit/sched_fake.h"

static double ul_of(json_t *v, const char *reagent)
{
    return json_number_value(json_object_get(v, reagent));
}

static void test_dispense_needs(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    lab_driver_t *hnd = lab_instr_find(f->in, "hnd", 3);
    char err[200] = "";
    /* 3 rows: 3 tips; 2 columns of 3 channels x 5 µL */
    json_t *p = json_pack("{s:s,s:f,s:s}", "reagent", "water", "volume_ul", 5.0, "wells", "A1:C2");
    program_t *prog = program_build("dispense", hnd, p, 60, 0, 0, err, sizeof err);
    assert_non_null(prog);
    json_t *v = json_object();
    assert_int_equal(program_needs(prog, v), 3);
    assert_int_equal(json_object_size(v), 1);
    assert_true(ul_of(v, "water") == 30);
    /* the plate's move on another instrument takes nothing from this one */
    program_insert(
        prog, 0,
        (program_entry_t){.kind = PROGRAM_ACTION,
                          .role = LAB_DRV_ROLE_ASPIRATE,
                          .action = "draw",
                          .params = json_pack("{s:s,s:f}", "reagent", "water", "volume_ul", 100.0),
                          .on = 0});
    json_object_clear(v);
    assert_int_equal(program_needs(prog, v), 3);
    assert_true(ul_of(v, "water") == 30);
    /* one named channel draws its volume once */
    program_insert(prog, 2,
                   (program_entry_t){.kind = PROGRAM_ACTION,
                                     .role = LAB_DRV_ROLE_ASPIRATE,
                                     .action = "draw",
                                     .params = json_pack("{s:s,s:f,s:i}", "reagent", "oil",
                                                         "volume_ul", 7.0, "channel", 2),
                                     .on = -1});
    json_object_clear(v);
    assert_int_equal(program_needs(prog, v), 3);
    assert_true(ul_of(v, "oil") == 7);
    program_free(prog);
    json_decref(p);
    json_decref(v);
    fx_free(f);
}

static void test_design_needs(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    lab_driver_t *hnd = lab_instr_find(f->in, "hnd", 3);
    char err[200] = "";
    /* two reagents, fresh tips on 8 channels for each; per-channel volumes summed */
    json_t *p =
        json_pack("{s:{s:i,s:[s,s],s:{s:[f,f],s:[f,f],s:[f,f]}}}", "design", "format", 96,
                  "reagents", "a", "b", "wells", "A1", 10.0, 0.0, "B1", 5.0, 2.0, "A2", 1.5, 0.0);
    program_t *prog = program_build("dispense", hnd, p, 60, 0, 0, err, sizeof err);
    assert_non_null(prog);
    json_t *v = json_object();
    assert_int_equal(program_needs(prog, v), 16);
    assert_true(ul_of(v, "a") == 16.5);
    assert_true(ul_of(v, "b") == 2);
    program_free(prog);
    json_decref(p);
    json_decref(v);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispense_needs),
        cmocka_unit_test(test_design_needs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
