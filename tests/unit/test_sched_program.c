/* Drivers describe the actions a step needs (lab_driver_ops_t.roles): every shipped driver's
 * roles name actions of its own table, and the step programs (daemon/sched/program.c) are built
 * from roles alone: a cell of fake instruments whose actions have other names runs them. */
#include "daemon/sched/program.h"
#include "tests/unit/sched_fake.h"

static bool has_action(const lab_driver_ops_t *o, const char *name)
{
    for (const lab_drv_action_t *a = o->actions; a && a->name; a++)
        if (strcmp(a->name, name) == 0)
            return true;
    return false;
}

static void test_roles_name_actions(void **state)
{
    (void)state;
    int roles = 0;
    for (const lab_driver_ops_t *const *o = lab_drivers; *o; o++)
        for (const lab_drv_role_action_t *r = (*o)->roles; r && r->role; r++) {
            assert_non_null(r->action);
            if (!has_action(*o, r->action))
                fail_msg("driver %s: role %d names no action '%s'", (*o)->name, (int)r->role,
                         r->action);
            roles++;
        }
    assert_true(roles >= 10);
}

/* An incubation on the fake incubator (actions put_in/take_out/hold_at) and a dispense on the
 * fake handler (tips_on/tips_off/draw/eject): typed entries with the driver's own names. */
static void test_programs_from_roles(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    lab_driver_t *inc = lab_instr_find(f->in, "inc", 3), *hnd = lab_instr_find(f->in, "hnd", 3);
    char err[200] = "";
    assert_true(program_needs_site("incubate", inc));
    json_t *p = json_pack("{s:f}", "temperature_c", 37.0);
    program_t *prog = program_build("incubate", inc, p, 600, 2, 1, err, sizeof err);
    assert_non_null(prog);
    assert_int_equal(prog->n, 4);
    assert_string_equal(prog->v[0].action, "hold_at");
    assert_string_equal(prog->v[1].action, "put_in");
    assert_int_equal(prog->v[1].mark, PROGRAM_MARK_LOADED);
    assert_int_equal(json_integer_value(json_object_get(prog->v[1].params, "cassette")), 2);
    assert_int_equal(prog->v[2].kind, PROGRAM_WAIT);
    assert_true(prog->v[2].wait_s == 600);
    assert_int_equal(program_first_wait(prog), 2);
    assert_string_equal(prog->v[3].action, "take_out");
    assert_int_equal(prog->v[3].mark, PROGRAM_MARK_UNLOADED);
    program_free(prog);
    json_decref(p);
    p = json_pack("{s:s,s:f,s:s}", "reagent", "water", "volume_ul", 5.0, "wells", "A1:C2");
    prog = program_build("dispense", hnd, p, 60, 0, 0, err, sizeof err);
    assert_non_null(prog);
    assert_int_equal(prog->n, 6); /* tips, 2 x (draw, eject), tips off */
    assert_string_equal(prog->v[0].action, "tips_on");
    assert_true(prog->v[0].flags & PROGRAM_DRY);
    assert_int_equal(json_integer_value(json_object_get(prog->v[0].params, "channels")), 3);
    assert_string_equal(prog->v[1].action, "draw");
    assert_false(prog->v[1].flags & PROGRAM_DRY);
    assert_string_equal(prog->v[4].action, "eject");
    assert_string_equal(json_string_value(json_object_get(prog->v[4].params, "well")), "A2");
    char text[100];
    program_entry_text(&prog->v[4], true, text, sizeof text);
    assert_string_equal(text, "dispensed 5 µL into A2");
    assert_string_equal(prog->v[5].action, "tips_off");
    program_free(prog);
    json_decref(p);
    /* a reader cannot incubate by load, and has no action 'shake' */
    assert_false(program_needs_site("incubate", lab_instr_find(f->in, "rdr", 3)));
    assert_null(program_build("shake", hnd, NULL, 10, 0, 0, err, sizeof err));
    assert_non_null(strstr(err, "has no action 'shake'"));
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roles_name_actions),
        cmocka_unit_test(test_programs_from_roles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
