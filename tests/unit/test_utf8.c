/* core/utf8: validity as jansson sees it, cuts that never split a character, and the sanitizer
 * whose output jansson always takes. */
#include "core/utf8.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define E_ACUTE "\xC3\xA9"      /* é, 2 bytes */
#define EURO "\xE2\x82\xAC"     /* €, 3 bytes */
#define CLEF "\xF0\x9D\x84\x9E" /* U+1D11E, 4 bytes */
#define REPL "\xEF\xBF\xBD"     /* U+FFFD */

static bool valid(const char *s)
{
    return lab_utf8_valid(s, strlen(s));
}

static void test_valid(void **state)
{
    assert_true(valid(""));
    assert_true(valid("plain ascii"));
    assert_true(valid(E_ACUTE EURO CLEF));
    assert_true(lab_utf8_valid("a\0b", 3)); /* U+0000 is a character */
    assert_true(valid("\xEF\xBF\xBF"));     /* U+FFFF */
    assert_true(valid("\xF4\x8F\xBF\xBF")); /* U+10FFFF */
    assert_false(valid("\xFF"));
    assert_false(valid("\x80"));             /* a continuation byte alone */
    assert_false(valid("\xC0\x80"));         /* overlong NUL */
    assert_false(valid("\xE0\x80\xAF"));     /* overlong '/' */
    assert_false(valid("\xED\xA0\x80"));     /* a surrogate */
    assert_false(valid("\xF4\x90\x80\x80")); /* above U+10FFFF */
    assert_false(valid("\xC3"));             /* cut short */
    assert_false(valid("a" EURO "\xE2\x82"));
}

static void test_cut(void **state)
{
    char s[1201] = "";
    for (int i = 0; i < 600; i++)
        strcat(s, E_ACUTE);
    assert_int_equal(lab_utf8_cut(s, 1200, 1023), 1022);
    assert_int_equal(lab_utf8_cut(s, 1200, 1024), 1024);
    assert_int_equal(lab_utf8_cut(s, 1200, 5000), 1200);
    assert_int_equal(lab_utf8_cut(s, 1200, 0), 0);
    const char *m = "a" EURO CLEF "b"; /* 1 + 3 + 4 + 1 */
    assert_int_equal(lab_utf8_cut(m, 9, 1), 1);
    assert_int_equal(lab_utf8_cut(m, 9, 3), 1);
    assert_int_equal(lab_utf8_cut(m, 9, 4), 4);
    assert_int_equal(lab_utf8_cut(m, 9, 7), 4);
    assert_int_equal(lab_utf8_cut(m, 9, 8), 8);
    /* Invalid bytes are characters of their own. */
    assert_int_equal(lab_utf8_cut("\xFF\xFF\xFF", 3, 2), 2);
    assert_int_equal(lab_utf8_cut("\xE2\x82x", 3, 2), 2);
}

static void test_sanitize(void **state)
{
    char out[64];
    assert_int_equal(lab_utf8_sanitize(out, sizeof out, "/\xFF", 2), 4);
    assert_string_equal(out, "/" REPL);
    assert_int_equal(lab_utf8_sanitize(out, sizeof out, "a\0b", 3), 5);
    assert_string_equal(out, "a" REPL "b");
    lab_utf8_sanitize(out, sizeof out, E_ACUTE "\xED\xA0\x80" E_ACUTE, 7);
    assert_string_equal(out, E_ACUTE REPL REPL REPL E_ACUTE);
    /* The copy stops before a character that would not fit. */
    assert_int_equal(lab_utf8_sanitize(out, 4, E_ACUTE E_ACUTE, 4), 2);
    assert_string_equal(out, E_ACUTE);
    assert_int_equal(lab_utf8_sanitize(out, 3, "x\xFF", 2), 1);
    assert_string_equal(out, "x");
    assert_int_equal(lab_utf8_sanitize(out, 1, "abc", 3), 0);
    assert_string_equal(out, "");
}

/* Random bytes, weighted toward the edges of the encoding: lab_utf8_valid agrees with jansson,
 * the sanitized copy is always a string jansson takes, and every cut is valid when the input is. */
static void test_against_jansson(void **state)
{
    static const unsigned char pick[] = {0x00, 0x2F, 0x41, 0x7F, 0x80, 0x8F, 0x90,
                                         0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
                                         0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
    srand(11);
    for (int run = 0; run < 200000; run++) {
        unsigned char b[12];
        size_t len = (size_t)(rand() % (int)sizeof b);
        for (size_t i = 0; i < len; i++)
            b[i] = rand() % 3 ? pick[rand() % (int)sizeof pick] : (unsigned char)rand();
        const char *s = (const char *)b;
        json_t *j = json_stringn(s, len);
        assert_int_equal(lab_utf8_valid(s, len), j != NULL);
        json_decref(j);
        char out[40];
        size_t n = lab_utf8_sanitize(out, sizeof out, s, len);
        assert_int_equal(n, strlen(out));
        j = json_string(out);
        assert_non_null(j);
        json_decref(j);
        size_t max = (size_t)(rand() % 13);
        size_t cut = lab_utf8_cut(s, len, max);
        assert_true(cut <= max && cut <= len);
        if (lab_utf8_valid(s, len))
            assert_true(lab_utf8_valid(s, cut));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_cut),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_against_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
