/* The error table (core/err.h): every code negative and unique, with a text and a name; the
 * names JSON shows are pinned (clients match on them); docs/errors.md's table is the table. */
#include "core/clock.h"
#include "core/err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const struct {
    int code;
    const char *symbol, *text, *json;
} table[] = {
#define ROW(name, code, text, json) {code, #name, text, json},
    LAB_ERRORS(ROW)
#undef ROW
};
enum { N = sizeof table / sizeof table[0] };

static void test_codes_negative_unique_named(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        assert_true(table[i].code < 0);
        /* lab_strerror, lab_errname and the JSON name all find the row by its code */
        assert_string_equal(lab_strerror(table[i].code), table[i].text);
        assert_string_equal(lab_errname(table[i].code), table[i].symbol);
        assert_string_equal(lab_err_json_name(table[i].code), table[i].json);
        assert_true(strlen(table[i].text) > 0);
        assert_true(strncmp(table[i].symbol, "E", 1) == 0);
        /* a JSON name is a lower-case word with underscores */
        assert_true(strlen(table[i].json) > 0);
        for (const char *c = table[i].json; *c; c++)
            assert_true((*c >= 'a' && *c <= 'z') || *c == '_');
        for (int j = 0; j < i; j++) {
            assert_int_not_equal(table[i].code, table[j].code);
            assert_string_not_equal(table[i].symbol, table[j].symbol);
            assert_string_not_equal(table[i].text, table[j].text);
            assert_string_not_equal(table[i].json, table[j].json);
        }
    }
    /* the codes are -1 .. -N with no gap, so a new one is appended, never inserted */
    for (int i = 0; i < N; i++)
        assert_int_equal(table[i].code, -(i + 1));
    assert_string_equal(lab_strerror(LAB_OK), "ok");
    assert_string_equal(lab_err_json_name(LAB_OK), "ok");
    assert_string_equal(lab_strerror(-(N + 1)), "unknown error");
    assert_string_equal(lab_errname(-(N + 1)), "EUNKNOWN");
    assert_string_equal(lab_err_json_name(-(N + 1)), "unknown_error");
    assert_string_equal(lab_err_json_name(1), "unknown_error");
}

/* What the API, MQTT, the store and the CLI show as an instrument error's "code": these names
 * were shipped before the driver codes joined the table and must never change. */
static void test_json_names_pinned(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *json;
    } pinned[] = {
        {LAB_OK, "ok"},
        {LAB_ENOACTION, "unknown_action"},
        {LAB_EINVAL, "bad_params"},
        {LAB_EOFFLINE, "offline"},
        {LAB_ETIMEDOUT, "timeout"},
        {LAB_EDEVICE, "device_error"},
        {LAB_EPROTO, "protocol_error"},
        {LAB_ESTATE, "state"},
        {LAB_EBUSY, "busy"},
        {LAB_ECANCELLED, "cancelled"},
        {LAB_EINTERNAL, "internal"},
        {LAB_ENOMEM, "out_of_memory"},
        {LAB_EIO, "io_error"},
        {LAB_ENOTFOUND, "not_found"},
        {LAB_EEXIST, "exists"},
        {LAB_ECONFIG, "config_error"},
        {LAB_EDB, "database_error"},
        {LAB_ESHUTDOWN, "shutting_down"},
        {LAB_ETOOBIG, "too_large"},
        {LAB_EAUTH, "unauthenticated"},
        {LAB_EFORBIDDEN, "forbidden"},
        {LAB_ECONN, "connection_failed"},
        {LAB_ECONFLICT, "conflict"},
        {LAB_EAGAIN, "incomplete_frame"},
        {LAB_ESYNTAX, "malformed_frame"},
        {LAB_ERANGE, "out_of_range"},
        {LAB_ETOOLONG, "frame_too_long"},
        {LAB_ENOSPACE, "no_space"},
        {LAB_ECHECKSUM, "checksum"},
        {LAB_EUNKNOWN, "unknown_code"},
        {LAB_ENOMATCH, "no_match"},
        {LAB_EFULL, "table_full"},
        {LAB_EGARBAGE, "garbage"},
        {LAB_ENUMERIC, "numerical_failure"},
    };
    enum { NP = sizeof pinned / sizeof pinned[0] };
    assert_int_equal(NP, N + 1); /* a new code gets its pin here */
    for (int i = 0; i < NP; i++)
        assert_string_equal(lab_err_json_name(pinned[i].code), pinned[i].json);
}

/* A refusal is a code that says what went wrong: a bare -1 would read as LAB_ENOMEM. */
static void test_refusals_are_specific(void **state)
{
    (void)state;
    int64_t ms = 0;
    static const char *const bad[] = {"",
                                      "yesterday",
                                      "2026-13-01T00:00:00Z",
                                      "2026-12-05T10:00:00",
                                      "2026-12-05T10:00:00.Z",
                                      "2026-12-05T10:00:00+25:00",
                                      "2026-12-05T10:00:00Zjunk",
                                      "2026-02-30T00:00:00Z",
                                      "2023-02-29T00:00:00Z",
                                      "2100-02-29T00:00:00Z",
                                      "2026-04-31T00:00:00Z",
                                      "0000-01-01T00:00:00Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(lab_time_parse(bad[i], &ms), LAB_EINVAL);
    assert_int_equal(lab_time_parse("2026-12-05T10:00:00.5+01:00", &ms), LAB_OK);
    assert_int_equal(ms, 1796461200500);
    assert_int_equal(lab_time_parse("2024-02-29T00:00:00Z", &ms), LAB_OK);
    assert_int_equal(lab_time_parse("2000-02-29T00:00:00Z", &ms), LAB_OK);
}

/* The table of docs/errors.md as the code prints it. */
static char *doc_table(void)
{
    size_t cap = 256 + (size_t)N * 160, n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    n += (size_t)snprintf(out + n, cap - n,
                          "| code | value | lab_strerror | JSON name |\n"
                          "|---|---|---|---|\n");
    for (int i = 0; i < N; i++)
        n += (size_t)snprintf(out + n, cap - n, "| `LAB_%s` | %d | %s | `%s` |\n", table[i].symbol,
                              table[i].code, table[i].text, table[i].json);
    assert_true(n < cap);
    return out;
}

static void test_doc_table_matches(void **state)
{
    (void)state;
    const char *path = LAB_SOURCE_DIR_T "/docs/errors.md";
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("%s: cannot read", path);
    char *doc = malloc(1 << 16);
    assert_non_null(doc);
    size_t len = fread(doc, 1, (1 << 16) - 1, f);
    fclose(f);
    doc[len] = '\0';
    char *want = doc_table();
    /* the page's table: from its header row to the first line that is not a row */
    const char *start = strstr(doc, "| code | value |");
    size_t have = 0;
    if (start)
        while (start[have] == '|') {
            const char *nl = strchr(start + have, '\n');
            have = nl ? (size_t)(nl - start) + 1 : strlen(start);
            if (!nl)
                break;
        }
    if (!start || have != strlen(want) || memcmp(start, want, have) != 0) {
        fprintf(stderr, "docs/errors.md's table differs from core/err.h; it should read:\n%s",
                want);
        fail();
    }
    free(want);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_negative_unique_named),
        cmocka_unit_test(test_json_names_pinned),
        cmocka_unit_test(test_refusals_are_specific),
        cmocka_unit_test(test_doc_table_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
