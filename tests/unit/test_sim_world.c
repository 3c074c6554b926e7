/* labloop-sim's world model without a simulator: the design response's f (zero at 0, one peak of
 * 1 at x = 1, lower on both sides), the design's peak at every reagent's OPT and its value
 * anywhere else as the product of f, the same whatever order the reagents are named in; the
 * absorbance with and without a design (design reagents out of the saturating sum, the others
 * in it, the incubation gain on both); and sim_design_parse's refusals. */
#include "sim/world.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static sim_world_t w; /* large */

static void near(double got, double want)
{
    if (fabs(got - want) > 1e-12)
        fail_msg("got %.15g, expected %.15g", got, want);
}

static void test_f(void **state)
{
    (void)state;
    near(sim_design_f(0), 0);
    near(sim_design_f(-0.5), 0);
    near(sim_design_f(1), 1);
    near(sim_design_f(0.5), 0.5 * exp(0.5));
    near(sim_design_f(2), 2 * exp(-1));
    /* one peak: rising below 1, falling above, below 1 everywhere else */
    double prev = 0;
    for (int i = 1; i <= 400; i++) {
        double x = i / 100.0, y = sim_design_f(x);
        if (x < 1)
            assert_true(y > prev);
        else if (x > 1)
            assert_true(y < prev);
        if (i != 100)
            assert_true(y < 1);
        assert_true(y > 0);
        prev = y;
    }
    /* flat at the peak: the two sides meet with slope 0 */
    double h = 1e-4;
    assert_true(fabs(sim_design_f(1 + h) - sim_design_f(1 - h)) / (2 * h) < 1e-7);
    assert_true(sim_design_f(1 + h) < 1 && sim_design_f(1 - h) < 1);
}

static void set_design(const char *text, double max_au)
{
    char why[160];
    w.design.max_au = max_au;
    if (sim_design_parse(text, &w.design, why, sizeof why))
        fail_msg("%s: %s", text, why);
}

static void test_design(void **state)
{
    (void)state;
    sim_world_init(&w, 1, 0);
    double none[3] = {1, 2, 3};
    near(sim_world_design(&w, none), 0); /* no design */
    set_design("enzyme:42, substrate:118 ,cofactor:17", 2.0);
    assert_int_equal(w.design.n, 3);
    assert_string_equal(w.design.name[1], "substrate");
    near(w.design.opt_ul[2], 17);
    double opt[3] = {42, 118, 17};
    near(sim_world_design(&w, opt), 2.0);
    /* anywhere else is lower: each reagent off its optimum scales the peak by f(v / OPT) */
    for (int r = 0; r < 3; r++)
        for (double x = 0; x <= 3; x += 0.125) {
            double v[3] = {42, 118, 17};
            v[r] = opt[r] * x;
            double y = sim_world_design(&w, v);
            near(y, 2.0 * sim_design_f(x));
            if (x != 1)
                assert_true(y < 2.0);
        }
    double half[3] = {21, 59, 8.5};
    near(sim_world_design(&w, half), 2.0 * pow(0.5 * exp(0.5), 3));
    double missing[3] = {42, 0, 17};
    near(sim_world_design(&w, missing), 0);
    /* the order the reagents are named in does not matter */
    double v[3] = {30, 150, 9}, y = sim_world_design(&w, v);
    set_design("cofactor:17,enzyme:42,substrate:118", 2.0);
    double v2[3] = {9, 30, 150};
    near(sim_world_design(&w, v2), y);
    /* one reagent: max_au * f */
    set_design("enzyme:10", 0.5);
    double one[1] = {5};
    near(sim_world_design(&w, one), 0.5 * sim_design_f(0.5));
}

/* A plate's barcode is a run's plate: 64 characters of four bytes are kept whole and tell two
 * plates apart in their last character; a longer barcode is refused, never cut. */
static void test_longest_barcode(void **state)
{
    (void)state;
    sim_world_init(&w, 7, 0);
    char a[300] = "", b[300];
    for (int i = 0; i < 64; i++)
        strcat(a, "\xF0\x9F\x98\x80");
    snprintf(b, sizeof b, "%s", a);
    b[strlen(b) - 1] = '\x81'; /* the last character differs */
    sim_plate_t *pa = sim_world_plate(&w, a), *pb = sim_world_plate(&w, b);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_ptr_not_equal(pa, pb);
    assert_string_equal(pa->barcode, a);
    assert_ptr_equal(sim_world_plate(&w, a), pa);
    strcat(a, "x");
    assert_null(sim_world_plate(&w, a));
}

static void test_absorbance(void **state)
{
    (void)state;
    sim_world_init(&w, 7, 0);
    sim_plate_t *p = sim_world_plate(&w, "P");
    int sub = sim_world_reagent(&w, "substrate"), buf = sim_world_reagent(&w, "buffer");
    sim_world_dispense(&w, p, 0, 0, sub, 20);
    sim_world_dispense(&w, p, 0, 1, buf, 20);
    /* without a design: the saturating sum, Emax 1.2 / (1 + index), K 20 uL */
    near(sim_world_absorbance(&w, p, 0, 0, 450), 0.040 + 1.2 * 0.5);
    near(sim_world_absorbance(&w, p, 0, 1, 450), 0.040 + 0.6 * 0.5);
    near(sim_world_absorbance(&w, p, 2, 2, 450), 0.040);

    /* substrate in the design: it leaves the sum (buffer, the second reagent, stays in it) */
    set_design("enzyme:42,substrate:118,cofactor:17", 2.0);
    int enz = sim_world_reagent(&w, "enzyme"), cof = sim_world_reagent(&w, "cofactor");
    near(sim_world_absorbance(&w, p, 0, 0, 450), 0.040); /* enzyme and cofactor missing */
    sim_world_dispense(&w, p, 1, 0, enz, 42);
    sim_world_dispense(&w, p, 1, 0, sub, 118);
    sim_world_dispense(&w, p, 1, 0, cof, 17);
    sim_world_dispense(&w, p, 1, 0, buf, 20);
    near(sim_world_absorbance(&w, p, 1, 0, 450), 0.040 + 2.0 + 0.6 * 0.5);
    sim_world_dispense(&w, p, 1, 1, enz, 21);
    sim_world_dispense(&w, p, 1, 1, sub, 59);
    sim_world_dispense(&w, p, 1, 1, cof, 8.5);
    double half[3] = {21, 59, 8.5};
    near(sim_world_absorbance(&w, p, 1, 1, 450), 0.040 + sim_world_design(&w, half));
    /* the incubation gain multiplies the design response as it does the sum */
    sim_world_incubate(p, 30, 3600);
    double g = 1 + 0.5 * (1 - exp(-10 * 3600 / 36000.0));
    near(sim_world_absorbance(&w, p, 1, 0, 450), 0.040 + (2.0 + 0.3) * g);

    /* noise: the same seed gives the same value, which stays near the model */
    w.noise = 0.01;
    double a = sim_world_absorbance(&w, p, 1, 0, 450);
    near(sim_world_absorbance(&w, p, 1, 0, 450), a);
    assert_true(fabs(a - (0.040 + 2.3 * g)) < 0.06);
    assert_true(a != 0.040 + 2.3 * g);
}

static void test_parse_refusals(void **state)
{
    (void)state;
    const char *bad[][2] = {
        {"enzyme:42,enzyme:10", "named twice"},
        {"enzyme:0", "above 0"},
        {"enzyme:-3", "above 0"},
        {"enzyme:lots", "above 0"},
        {"enzyme:", "above 0"},
        {"a:1,b:2,c:3,d:4", "more than 3"},
        {"enzyme", "NAME:OPT"},
        {":5", "empty"},
        {"", "no reagent"},
        {"abcdefghijabcdefghijabcdefghijabc:1", "longer than 31"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sim_design_t d = {0};
        char why[160] = "";
        if (sim_design_parse(bad[i][0], &d, why, sizeof why) == 0)
            fail_msg("'%s' accepted", bad[i][0]);
        if (!strstr(why, bad[i][1]))
            fail_msg("'%s': \"%s\", expected \"%s\"", bad[i][0], why, bad[i][1]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f),
        cmocka_unit_test(test_design),
        cmocka_unit_test(test_longest_barcode),
        cmocka_unit_test(test_absorbance),
        cmocka_unit_test(test_parse_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
