/* The JSON Schema subset: each keyword accepted and refused, every problem named at once with its
 * pointer, unsupported keywords refused at compile, and the embedded run schema. */
#include "core/jschema.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static lab_jschema_t *compile(const char *text)
{
    char err[256];
    lab_jschema_t *s = lab_jschema_compile(text, err, sizeof err);
    if (!s)
        fail_msg("compile: %s", err);
    return s;
}

/* Validates doc; returns the errors joined as "path: message|path: message". */
static char *check(const lab_jschema_t *s, const char *doc)
{
    json_error_t jerr;
    json_t *j = json_loads(doc, JSON_DECODE_ANY, &jerr);
    if (!j)
        fail_msg("test document is not JSON: %s", jerr.text);
    lab_jerrs_t errs = {0};
    int n = lab_jschema_validate(s, j, &errs);
    assert_int_equal(n, errs.n);
    char *out = calloc(1, 4096);
    for (int i = 0; i < errs.n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, 4096 - used, "%s%s: %s", i ? "|" : "", errs.v[i].path,
                 errs.v[i].message);
    }
    lab_jerrs_free(&errs);
    json_decref(j);
    return out;
}

#define EXPECT(s, doc, want)                                                                       \
    do {                                                                                           \
        char *got_ = check((s), (doc));                                                            \
        assert_string_equal(got_, (want));                                                         \
        free(got_);                                                                                \
    } while (0)

static void test_types(void **state)
{
    lab_jschema_t *s = compile("{\"type\": \"integer\"}");
    EXPECT(s, "3", "");
    EXPECT(s, "3.0", "");
    EXPECT(s, "3.5", ": expected integer, got number");
    EXPECT(s, "\"x\"", ": expected integer, got string");
    lab_jschema_free(s);
    s = compile("{\"type\": [\"string\", \"null\"]}");
    EXPECT(s, "null", "");
    EXPECT(s, "\"a\"", "");
    EXPECT(s, "true", ": expected string, null, got boolean");
    lab_jschema_free(s);
}

static void test_many_errors_at_once(void **state)
{
    lab_jschema_t *s = compile("{\"type\":\"object\",\"additionalProperties\":false,"
                               "\"required\":[\"workflow\"],"
                               "\"properties\":{\"workflow\":{\"type\":\"string\"},"
                               "\"score\":{\"type\":\"number\"}}}");
    EXPECT(s, "{\"score\":\"high\",\"colour\":1}",
           "/workflow: required field missing|/score: expected number, got string|"
           "/colour: unknown field");
    lab_jschema_free(s);
}

static void test_numbers_strings(void **state)
{
    lab_jschema_t *s = compile("{\"type\":\"object\",\"properties\":{"
                               "\"a\":{\"minimum\":0,\"maximum\":10},"
                               "\"b\":{\"exclusiveMinimum\":0,\"multipleOf\":0.5},"
                               "\"c\":{\"minLength\":2,\"maxLength\":3},"
                               "\"d\":{\"pattern\":\"^[A-H][0-9]+$\"},"
                               "\"e\":{\"format\":\"date-time\"},"
                               "\"f\":{\"format\":\"uuid\"},"
                               "\"g\":{\"enum\":[\"x\",\"y\"]},"
                               "\"h\":{\"const\":42}}}");
    EXPECT(s,
           "{\"a\":5,\"b\":1.5,\"c\":\"\u00e9\u00e9\u00e9\",\"d\":\"H12\","
           "\"e\":\"2026-11-22T10:00:00.5+01:00\",\"f\":\"0b6c3a4e-1f2a-4c3d-9e8f-0a1b2c3d4e5f\","
           "\"g\":\"y\",\"h\":42}",
           "");
    EXPECT(s,
           "{\"a\":-1,\"b\":0.3,\"c\":\"abcd\",\"d\":\"Z1\",\"e\":\"yesterday\",\"f\":\"nope\","
           "\"g\":\"z\",\"h\":41}",
           "/a: must be >= 0|/b: must be a multiple of 0.5|/c: must be at most 3 characters "
           "long|/d: does not match the pattern ^[A-H][0-9]+$|/e: not a date-time (RFC 3339, "
           "e.g. 2026-11-22T10:00:00Z)|/f: not a UUID|/g: must be one of x, y|/h: must be 42");
    EXPECT(s, "{\"a\":11,\"b\":0,\"c\":\"a\"}",
           "/a: must be <= 10|/b: must be > 0|/c: must be at least 2 characters long");
    lab_jschema_free(s);
}

static void test_arrays_refs_pointers(void **state)
{
    lab_jschema_t *s =
        compile("{\"$defs\":{\"well\":{\"type\":\"string\",\"pattern\":\"^[A-P]"
                "[0-9]{1,2}$\"}},\"type\":\"object\",\"properties\":{"
                "\"wells\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/well\"},"
                "\"minItems\":1,\"maxItems\":3,\"uniqueItems\":true}},"
                "\"additionalProperties\":{\"type\":\"integer\"}}");
    EXPECT(s, "{\"wells\":[\"A1\",\"B2\"],\"a/b\":1}", "");
    EXPECT(s, "{\"wells\":[\"A1\",\"A1\",\"Z9\",\"B1\"],\"a/b~c\":\"x\"}",
           "/wells: must have at most 3 items|/wells/1: repeats item 0 (items must be unique)|"
           "/wells/2: does not match the pattern ^[A-P][0-9]{1,2}$|/a~1b~0c: expected integer, "
           "got string");
    EXPECT(s, "{\"wells\":[]}", "/wells: must have at least 1 items");
    lab_jschema_free(s);
}

static void test_combinators(void **state)
{
    lab_jschema_t *s = compile("{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}");
    EXPECT(s, "1", "");
    EXPECT(s, "2.5", "");
    EXPECT(s, "3", ": matches 2 of the allowed forms; exactly one must match");
    lab_jschema_free(s);
    s = compile("{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}");
    EXPECT(s, "null", "");
    EXPECT(s, "1", ": matches none of the 2 allowed forms");
    lab_jschema_free(s);
    /* one form of the value's type: its own problems, naming the entry at fault */
    s = compile("{\"oneOf\":[{\"type\":\"number\",\"minimum\":0},{\"type\":\"array\","
                "\"items\":{\"type\":\"number\",\"maximum\":10}}]}");
    EXPECT(s, "[1,11]", "/1: must be <= 10");
    EXPECT(s, "-1", ": must be >= 0");
    EXPECT(s, "\"x\"", ": matches none of the 2 allowed forms");
    lab_jschema_free(s);
}

static void test_compile_refuses(void **state)
{
    char err[256];
    const char *bad[] = {
        "{\"type\":\"object\",\"dependentRequired\":{}}", /* unsupported keyword */
        "{\"type\":\"integr\"}",                          /* unknown type */
        "{\"$ref\":\"#/$defs/missing\"}",                 /* dangling reference */
        "{\"pattern\":\"(\"}",                            /* bad regex */
        "{\"format\":\"email\"}",                         /* unsupported format */
        "{\"minLength\":-1}",                             /* bad value */
        "[1,2]",                                          /* not a schema */
        "{\"type\":",                                     /* not JSON */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        lab_jschema_t *s = lab_jschema_compile(bad[i], err, sizeof err);
        if (s)
            fail_msg("compiled: %s", bad[i]);
        assert_true(strlen(err) > 0);
    }
    assert_non_null(
        strstr((lab_jschema_compile(bad[0], err, sizeof err), err), "dependentRequired"));
}

static void test_ref_cycle_bounded(void **state)
{
    lab_jschema_t *s = compile("{\"$defs\":{\"n\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/"
                               "$defs/n\"}}},\"$ref\":\"#/$defs/n\"}");
    /* 100 nested arrays: deeper than the validator goes */
    char doc[256];
    memset(doc, '[', 100);
    memset(doc + 100, ']', 100);
    doc[200] = '\0';
    char *got = check(s, doc);
    assert_non_null(strstr(got, "nested too deeply"));
    free(got);
    EXPECT(s, "[[[]]]", "");
    lab_jschema_free(s);
}

static void test_run_schema(void **state)
{
    lab_jschema_t *s = lab_jschema_get("run.schema.json");
    assert_non_null(s);
    assert_ptr_equal(s, lab_jschema_get("run.schema.json"));
    EXPECT(s,
           "{\"workflow\":\"elisa-v2\",\"workflow_version\":3,\"plate\":\"P0001\","
           "\"priority\":\"urgent\",\"score\":0.93,\"deadline\":\"2026-11-23T18:00:00Z\","
           "\"name\":\"batch 7\",\"note\":\"\",\"params\":{\"dilution\":4}}",
           "");
    EXPECT(s,
           "{\"workflow\":\"-bad\",\"workflow_version\":0,\"plate\":\"\",\"priority\":\"asap\","
           "\"score\":\"1\",\"deadline\":\"tomorrow\",\"params\":[],\"extra\":true}",
           "/workflow: does not match the pattern ^[A-Za-z0-9][A-Za-z0-9_.:-]*$|"
           "/workflow_version: must be >= 1|/plate: must be at least 1 characters long|"
           "/priority: must be one of urgent, high, normal, low|/score: expected number, got "
           "string|/deadline: not a date-time (RFC 3339, e.g. 2026-11-22T10:00:00Z)|/params: "
           "expected object, got array|/extra: unknown field");
    EXPECT(s, "[]", ": expected object, got array");
    EXPECT(s, "{}", "/workflow: required field missing");
    assert_null(lab_jschema_get("no-such.schema.json"));
}

/* maxLength counts characters (code points): a 64-character plate passes in 1-, 2-, 3- and
 * 4-byte characters alike, a 65th is refused, and text that is not UTF-8 is refused. */
static void test_lengths_in_characters(void **state)
{
    (void)state;
    lab_jschema_t *s = lab_jschema_get("run.schema.json");
    static const char *const chars[] = {"P", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
    for (size_t c = 0; c < 4; c++) {
        for (int n = 64; n <= 65; n++) {
            char doc[400] = "{\"workflow\":\"w\",\"plate\":\"";
            for (int i = 0; i < n; i++)
                strcat(doc, chars[c]);
            strcat(doc, "\"}");
            EXPECT(s, doc, n == 64 ? "" : "/plate: must be at most 64 characters long");
        }
    }
    /* jansson refuses such bytes when it parses; a document built otherwise meets the schema */
    assert_null(json_loads("{\"workflow\":\"w\",\"plate\":\"\xff\"}", 0, NULL));
    static const char *const bad[] = {"\xff", "P\xC3", "\xC0\x80", "\xED\xA0\x80", "a\0b"};
    static const size_t len[] = {1, 2, 2, 3, 3};
    for (size_t i = 0; i < 5; i++) {
        json_t *doc = json_pack("{s:s}", "workflow", "w");
        json_object_set_new(doc, "plate", json_stringn_nocheck(bad[i], len[i]));
        lab_jerrs_t errs = {0};
        assert_int_equal(lab_jschema_validate(s, doc, &errs), 1);
        assert_string_equal(errs.v[0].path, "/plate");
        assert_string_equal(errs.v[0].message, "is not valid UTF-8 text");
        lab_jerrs_free(&errs);
        json_decref(doc);
    }
    /* a step's name: 64 characters (ASCII by its pattern), its op and on 64 of any */
    s = lab_jschema_get("workflow.schema.json");
    char name[70], op[300] = "", wf[800];
    memset(name, 'n', 65);
    name[65] = '\0';
    for (int i = 0; i < 64; i++)
        strcat(op, "\xF0\x9F\x98\x80");
    snprintf(wf, sizeof wf,
             "{\"name\":\"w\",\"steps\":[{\"name\":\"%.64s\",\"op\":\"%s\",\"on\":\"%s\","
             "\"duration_s\":1}]}",
             name, op, op);
    EXPECT(s, wf, "");
    snprintf(wf, sizeof wf,
             "{\"name\":\"w\",\"steps\":[{\"name\":\"%s\",\"op\":\"%s\xC3\xA9\",\"on\":\"x\","
             "\"duration_s\":1}]}",
             name, op);
    EXPECT(s, wf,
           "/steps/0/name: must be at most 64 characters long|/steps/0/op: must be at most 64 "
           "characters long");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_many_errors_at_once),
        cmocka_unit_test(test_numbers_strings),
        cmocka_unit_test(test_arrays_refs_pointers),
        cmocka_unit_test(test_combinators),
        cmocka_unit_test(test_compile_refuses),
        cmocka_unit_test(test_ref_cycle_bounded),
        cmocka_unit_test(test_run_schema),
        cmocka_unit_test(test_lengths_in_characters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
