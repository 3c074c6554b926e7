/* Text fields (core/text.c): each limit in core/text.h is its schema's maxLength, a buffer
 * sized from it holds that many 4-byte characters, text is cut and trimmed on character
 * boundaries only, and malformed UTF-8 (stray bytes, overlong forms, surrogates, code points
 * past U+10FFFF, cut sequences, NUL) is told apart from well-formed text. */
#include "core/embed.h"
#include "core/text.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define E2 "\xC3\xA9"         /* é */
#define E3 "\xE2\x82\xAC"     /* € */
#define E4 "\xF0\x9F\x98\x80" /* 😀 */

/* maxLength at a JSON pointer of an embedded schema. */
static long long schema_max(const char *file, const char *pointer)
{
    char name[64];
    snprintf(name, sizeof name, "json/%s", file);
    const lab_embedded_t *e = lab_embedded_find(name);
    assert_non_null(e);
    json_t *doc = json_loads(e->text, 0, NULL);
    assert_non_null(doc);
    json_t *at = doc;
    char path[256];
    snprintf(path, sizeof path, "%s", pointer);
    for (char *save = NULL, *tok = strtok_r(path, "/", &save); tok && at;
         tok = strtok_r(NULL, "/", &save))
        at = json_object_get(at, tok);
    json_t *max = json_object_get(at, "maxLength");
    if (!json_is_integer(max))
        fail_msg("%s %s has no maxLength", file, pointer);
    long long v = json_integer_value(max);
    json_decref(doc);
    return v;
}

static void test_limits_are_the_schemas(void **state)
{
    (void)state;
    static const struct {
        const char *file, *pointer;
        long long chars;
    } rows[] = {
        {"run.schema.json", "properties/workflow", LAB_RUN_WORKFLOW_CHARS},
        {"run.schema.json", "properties/plate", LAB_RUN_PLATE_CHARS},
        {"run.schema.json", "properties/name", LAB_RUN_NAME_CHARS},
        {"run.schema.json", "properties/note", LAB_RUN_NOTE_CHARS},
        {"workflow.schema.json", "properties/name", LAB_RUN_WORKFLOW_CHARS},
        {"workflow.schema.json", "properties/steps/items/properties/name", LAB_STEP_NAME_CHARS},
        {"workflow.schema.json", "properties/steps/items/properties/op", LAB_STEP_OP_CHARS},
        {"workflow.schema.json", "properties/steps/items/properties/on", LAB_STEP_ON_CHARS},
        {"action.schema.json", "properties/action", LAB_ACTION_CHARS},
        {"campaign.schema.json", "properties/parameters/items/properties/reagent",
         LAB_REAGENT_CHARS},
        {"campaign.schema.json", "properties/parameters/items/properties/choices/items",
         LAB_REAGENT_CHARS},
        {"campaign.schema.json", "properties/objective/properties/measure", LAB_STEP_OP_CHARS},
        {"campaign.schema.json", "properties/objective/properties/step", LAB_STEP_NAME_CHARS},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (schema_max(rows[i].file, rows[i].pointer) != rows[i].chars)
            fail_msg("%s %s: maxLength %lld, core/text.h says %lld", rows[i].file, rows[i].pointer,
                     schema_max(rows[i].file, rows[i].pointer), rows[i].chars);
    /* a campaign's plates, {id}-P0001, are plates: its longest id leaves room for the suffix */
    const lab_embedded_t *e = lab_embedded_find("json/campaign.schema.json");
    char pat[32];
    snprintf(pat, sizeof pat, "{0,%d}$", LAB_CAMPAIGN_ID_CHARS - 1);
    assert_non_null(strstr(e->text, pat));
    assert_int_equal(LAB_CAMPAIGN_ID_CHARS + (int)strlen("-P0001"), LAB_RUN_PLATE_CHARS);
    /* a buffer sized from a limit holds that many of the widest characters */
    char plate[LAB_TEXT_BYTES(LAB_RUN_PLATE_CHARS)], four[LAB_RUN_PLATE_CHARS * 4 + 1] = "";
    for (int i = 0; i < LAB_RUN_PLATE_CHARS; i++)
        strcat(four, E4);
    lab_text_copy(plate, sizeof plate, four);
    assert_string_equal(plate, four);
    assert_int_equal(lab_text_chars(plate, strlen(plate)), LAB_RUN_PLATE_CHARS);
}

static void test_fit_and_copy_on_boundaries(void **state)
{
    (void)state;
    assert_int_equal(lab_text_fit("abc", 5), 3);
    assert_int_equal(lab_text_fit("abc", 2), 2);
    assert_int_equal(lab_text_fit("a" E2, 2), 1); /* é would be cut: left out whole */
    assert_int_equal(lab_text_fit("a" E2, 3), 3);
    assert_int_equal(lab_text_fit(E3 E3, 5), 3);
    assert_int_equal(lab_text_fit(E4, 3), 0);
    assert_int_equal(lab_text_fit(E4 "x", 4), 4);
    assert_int_equal(lab_text_fit("", 0), 0);
    char b[6];
    lab_text_copy(b, sizeof b, E2 E2 E2); /* 6 bytes into 5 */
    assert_string_equal(b, E2 E2);
    lab_text_copy(b, sizeof b, "x" E4 "y"); /* 6 bytes: x and the emoji fit, y does not */
    assert_string_equal(b, "x" E4);
    lab_text_copy(b, sizeof b, "xy" E4);
    assert_string_equal(b, "xy");
    lab_text_copy(b, sizeof b, NULL);
    assert_string_equal(b, "");
    /* what snprintf leaves, for each place a cut can fall */
    for (size_t cap = 1; cap <= 12; cap++) {
        char t[16];
        snprintf(t, cap, "%s", "a" E2 E3 E4 "z");
        lab_text_trim(t);
        assert_true(lab_text_valid(t, strlen(t)));
        assert_true(strlen(t) + 4 > cap - 1); /* no more than the cut character was dropped */
    }
    char t[16] = "ok" E3;
    lab_text_trim(t);
    assert_string_equal(t, "ok" E3); /* whole: left alone */
}

static void test_valid_and_chars(void **state)
{
    (void)state;
    static const char *good[] = {
        "", "plate-1", E2, E3, E4, "\x7F", "\xEF\xBF\xBF", "\xF4\x8F\xBF\xBF", "\xED\x9F\xBF"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!lab_text_valid(good[i], strlen(good[i])))
            fail_msg("refused good text %zu", i);
    static const char *bad[] = {
        "\xFF",
        "\x80",
        "a\xC3",
        "\xC0\x80" /* overlong NUL */,
        "\xC1\xBF",
        "\xE0\x9F\xBF",
        "\xED\xA0\x80" /* surrogate */,
        "\xF0\x8F\xBF\xBF",
        "\xF4\x90\x80\x80" /* past U+10FFFF */,
        "\xF5\x80\x80\x80",
        "\xE2\x82",
        "\xC3\x28",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (lab_text_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted bad text %zu", i);
    assert_false(lab_text_valid("a\0b", 3));
    assert_int_equal(lab_text_chars("a" E2 E3 E4, 10), 4);
    assert_int_equal(lab_text_chars("", 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_are_the_schemas),
        cmocka_unit_test(test_fit_and_copy_on_boundaries),
        cmocka_unit_test(test_valid_and_chars),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
