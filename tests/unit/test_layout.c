/* A campaign plate's geometry, layout and quality control (daemon/campaign/layout.c): well names on
 * 96 and 384 plates, the free wells around the controls in column order, and Z' and normalisation
 * checked against values worked out by hand. */
#include "daemon/campaign/layout.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static void test_wells(void **state)
{
    (void)state;
    int r, c;
    assert_true(lab_well_parse("A1", 96, &r, &c));
    assert_int_equal(r, 0);
    assert_int_equal(c, 1);
    assert_true(lab_well_parse("h12", 96, &r, &c));
    assert_int_equal(r, 7);
    assert_int_equal(c, 12);
    assert_false(lab_well_parse("I1", 96, &r, &c));
    assert_false(lab_well_parse("A13", 96, &r, &c));
    assert_false(lab_well_parse("A0", 96, &r, &c));
    assert_false(lab_well_parse("A01", 96, &r, &c));
    assert_false(lab_well_parse("A1x", 96, &r, &c));
    assert_false(lab_well_parse("", 96, &r, &c));
    assert_true(lab_well_parse("P24", 384, &r, &c));
    assert_int_equal(r, 15);
    assert_int_equal(c, 24);
    char name[LAB_WELL_NAME];
    lab_well_name(15, 24, name);
    assert_string_equal(name, "P24");
}

static void test_free_wells(void **state)
{
    (void)state;
    json_t *pos = json_pack("[s,s]", "A1", "H12"), *neg = json_pack("[s,s]", "B1", "a2");
    char wells[384][LAB_WELL_NAME];
    int n = lab_layout_free_wells(96, pos, neg, wells, 384);
    assert_int_equal(n, 92);
    assert_string_equal(wells[0], "C1"); /* column order, controls skipped */
    assert_string_equal(wells[5], "H1");
    assert_string_equal(wells[6], "B2");
    assert_string_equal(wells[91], "G12");
    /* cap bounds the writing, not the count */
    assert_int_equal(lab_layout_free_wells(384, pos, neg, wells, 3), 380);
    json_decref(pos);
    json_decref(neg);
}

static void test_qc(void **state)
{
    (void)state;
    /* pos 1.0, 1.2 (mean 1.1, sd 0.141421); neg 0.1, 0.1, 0.1 (sd 0) */
    double pos[] = {1.0, 1.2}, neg[] = {0.1, 0.1, 0.1};
    lab_qc_t q;
    char why[200];
    assert_true(lab_qc_compute(pos, 2, neg, 3, &q, why, sizeof why));
    assert_true(fabs(q.mu_pos - 1.1) < 1e-12);
    assert_true(fabs(q.sd_pos - sqrt(0.02)) < 1e-12);
    assert_true(fabs(q.mu_neg - 0.1) < 1e-12);
    assert_true(fabs(q.z_prime - (1 - 3 * sqrt(0.02) / 1.0)) < 1e-12);
    assert_true(fabs(lab_qc_normalise(&q, 0.1)) < 1e-12);
    assert_true(fabs(lab_qc_normalise(&q, 1.1) - 1) < 1e-12);
    assert_true(fabs(lab_qc_normalise(&q, 0.6) - 0.5) < 1e-12);
    /* an inverted assay (positive below negative) normalises the same way */
    assert_true(lab_qc_compute(neg, 3, pos, 2, &q, why, sizeof why));
    assert_true(fabs(lab_qc_normalise(&q, 0.1) - 1) < 1e-12);
    /* too few controls, or no range: refused with the reason */
    assert_false(lab_qc_compute(pos, 1, neg, 3, &q, why, sizeof why));
    assert_non_null(strstr(why, "at least 2"));
    assert_false(lab_qc_compute(neg, 3, neg, 3, &q, why, sizeof why));
    assert_non_null(strstr(why, "same mean"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wells),
        cmocka_unit_test(test_free_wells),
        cmocka_unit_test(test_qc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
