/* MQTT report documents: the example of the definition (schemas/mqtt.md,
 * in/instruments/{id}/report:
 * {"ts": ..., "values": {"temperature_c": 23.4}}), every validation error with its path, and
 * round trips through the encoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/text.h"
#include "protocols/report.h"

static report_t rep;

static void test_example(void **state)
{
    const char doc[] = "{\"ts\":\"2026-11-23T00:55:31.250Z\",\"values\":{\"temperature_c\":23.4,"
                       "\"humidity_pct\":61,\"wavelength_nm\":600,\"volume_ul\":12.5,"
                       "\"speed_rpm\":300,\"od600\":0.42}}";
    report_error_t err;
    assert_int_equal(report_parse(doc, strlen(doc), &rep, &err), LAB_OK);
    assert_true(rep.has_ts);
    assert_string_equal(rep.ts, "2026-11-23T00:55:31.250Z");
    assert_int_equal(rep.n, 6);
    const char *names[] = {"temperature_c", "humidity_pct", "wavelength_nm",
                           "volume_ul",     "speed_rpm",    "od600"};
    const char *units[] = {"degC", "%", "nm", "uL", "rpm", ""};
    for (size_t i = 0; i < 6; i++) {
        int found = 0;
        for (size_t k = 0; k < rep.n; k++)
            if (strcmp(rep.values[k].name, names[i]) == 0) {
                assert_string_equal(rep.values[k].unit, units[i]);
                found = 1;
            }
        assert_true(found);
    }
    /* ts is optional. */
    const char bare[] = "{\"values\":{\"temperature_c\":-3}}";
    assert_int_equal(report_parse(bare, strlen(bare), &rep, &err), LAB_OK);
    assert_false(rep.has_ts);
    assert_true(rep.values[0].value == -3.0);
}

static void expect_error(const char *doc, int rc, const char *path, const char *msg_part)
{
    report_error_t err;
    assert_int_equal(report_parse(doc, strlen(doc), &rep, &err), rc);
    assert_string_equal(err.path, path);
    assert_non_null(strstr(err.message, msg_part));
}

static void test_errors(void **state)
{
    expect_error("", LAB_ESYNTAX, "$", "invalid JSON at line");
    expect_error("{\"values\":{\"a_c\":1}", LAB_ESYNTAX, "$", "invalid JSON");
    expect_error("[1]", LAB_ESYNTAX, "$", "must be an object");
    expect_error("{\"values\":{\"a_c\":1},\"extra\":1}", LAB_ESYNTAX, "$.extra", "unknown member");
    expect_error("{\"ts\":5,\"values\":{\"a_c\":1}}", LAB_ESYNTAX, "$.ts", "must be a string");
    expect_error("{\"ts\":\"2026-02-30T00:00:00Z\",\"values\":{\"a_c\":1}}", LAB_ESYNTAX, "$.ts",
                 "RFC 3339");
    expect_error("{\"ts\":\"2026-11-23 00:00:00\",\"values\":{\"a_c\":1}}", LAB_ESYNTAX, "$.ts",
                 "RFC 3339");
    expect_error("{}", LAB_ESYNTAX, "$.values", "missing");
    expect_error("{\"values\":[]}", LAB_ESYNTAX, "$.values", "must be an object");
    expect_error("{\"values\":{}}", LAB_ESYNTAX, "$.values", "at least one");
    expect_error("{\"values\":{\"Temp_c\":1}}", LAB_ESYNTAX, "$.values.Temp_c", "must match");
    expect_error("{\"values\":{\"temp_c\":\"23\"}}", LAB_ESYNTAX, "$.values.temp_c",
                 "must be a number");
    expect_error("{\"values\":{\"temp_c\":true}}", LAB_ESYNTAX, "$.values.temp_c",
                 "must be a number");
    expect_error("{\"values\":{\"temp_c\":null}}", LAB_ESYNTAX, "$.values.temp_c",
                 "must be a number");
    expect_error("{\"values\":{\"temp_c\":1e999}}", LAB_ESYNTAX, "$", "invalid JSON");
    expect_error("{\"values\":{\"a_c\":1,\"a_c\":2}}", LAB_ESYNTAX, "$", "duplicate");
    char longname[200] = "{\"values\":{\"";
    memset(longname + strlen(longname), 'a', 100);
    strcat(longname, "\":1}}");
    report_error_t err;
    assert_int_equal(report_parse(longname, strlen(longname), &rep, &err), LAB_ESYNTAX);
    assert_non_null(strstr(err.path, "..."));
    /* an unknown member's name is quoted in part (40 bytes), cut on a character: "$.a" and 19
     * of its 21 two-byte characters */
    char member[200] = "{\"values\":{\"a_c\":1},\"a";
    for (int i = 0; i < 21; i++)
        strcat(member, "\xC3\xA9");
    strcat(member, "\":1}");
    assert_int_equal(report_parse(member, strlen(member), &rep, &err), LAB_ESYNTAX);
    assert_int_equal(strlen(err.path), 2 + 1 + 19 * 2);
    assert_true(lab_text_valid(err.path, strlen(err.path)));
}

static void test_too_many(void **state)
{
    static char doc[REPORT_MAX_VALUES * 24 + 64];
    size_t n = (size_t)snprintf(doc, sizeof doc, "{\"values\":{");
    for (int i = 0; i <= REPORT_MAX_VALUES; i++)
        n += (size_t)snprintf(doc + n, sizeof doc - n, "%s\"v%d_c\":%d", i ? "," : "", i, i);
    snprintf(doc + n, sizeof doc - n, "}}");
    expect_error(doc, LAB_ETOOLONG, "$.values", "more than");
}

static void test_roundtrip(void **state)
{
    report_t in = {.has_ts = 1, .ts = "2026-11-23T01:02:03+01:00", .n = 2};
    strcpy(in.values[0].name, "temperature_c");
    in.values[0].value = 23.4;
    strcpy(in.values[1].name, "absorbance");
    in.values[1].value = 0.1917;
    char buf[256];
    int n = report_encode(&in, buf, sizeof buf);
    assert_true(n > 0);
    report_error_t err;
    assert_int_equal(report_parse(buf, (size_t)n, &rep, &err), LAB_OK);
    assert_int_equal(rep.n, 2);
    assert_string_equal(rep.ts, in.ts);
    assert_true(rep.values[0].value == 23.4);
    assert_true(rep.values[1].value == 0.1917);
    assert_int_equal(report_encode(&in, buf, 10), LAB_ENOSPACE);
    strcpy(in.values[1].name, "Bad");
    assert_true(report_encode(&in, buf, sizeof buf) < 0);
}

static void test_topic(void **state)
{
    char buf[64], id[32];
    assert_int_equal(report_topic("incubator-1", buf, sizeof buf),
                     (int)strlen("in/instruments/incubator-1/report"));
    assert_string_equal(buf, "in/instruments/incubator-1/report");
    assert_int_equal(report_topic_parse(buf, id, sizeof id), LAB_OK);
    assert_string_equal(id, "incubator-1");
    assert_int_equal(report_topic("a/b", buf, sizeof buf), LAB_ERANGE);
    assert_int_equal(report_topic("", buf, sizeof buf), LAB_ERANGE);
    assert_int_equal(report_topic_parse("in/instruments//report", id, sizeof id), LAB_ESYNTAX);
    assert_int_equal(report_topic_parse("in/instruments/a/b/report", id, sizeof id), LAB_ESYNTAX);
    assert_int_equal(report_topic_parse("in/instruments/x/state", id, sizeof id), LAB_ESYNTAX);
    assert_int_equal(report_topic_parse(buf, id, 4), LAB_ENOSPACE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example),  cmocka_unit_test(test_errors),
        cmocka_unit_test(test_too_many), cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_topic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
