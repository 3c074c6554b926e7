/* The wire recording reader: every kind of line of format version 1, and a precise error with
 * its line number for each way a line can be wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "protocols/proto.h"
#include "protocols/wire_read.h"

static int parse(const char *line, wire_item_t *it, char *err, size_t cap)
{
    return wire_parse_line(line, strlen(line), 7, it, err, cap);
}

static void test_header(void **state)
{
    wire_item_t it;
    char err[256];
    assert_int_equal(parse("{\"labloop_wire\":1,\"id\":\"reader1\",\"driver\":\"biotek-synergy\","
                           "\"transport\":\"serial\",\"settings\":\"9600 8N2 rtscts\","
                           "\"started\":\"2026-12-05T00:13:00.123Z\",\"future\":[1,2]}",
                           &it, err, sizeof err),
                     0);
    assert_int_equal(it.kind, WIRE_HEADER);
    assert_int_equal(it.version, 1);
    assert_string_equal(it.id, "reader1");
    assert_string_equal(it.driver, "biotek-synergy");
    assert_string_equal(it.settings, "9600 8N2 rtscts");
    assert_string_equal(it.started, "2026-12-05T00:13:00.123Z");
    wire_item_clear(&it);
}

static void test_events(void **state)
{
    wire_item_t it;
    char err[256];
    assert_int_equal(parse("{\"t\":1234.567,\"wall\":\"2026-12-05T00:13:01.456Z\",\"d\":\"tx\","
                           "\"hex\":\"440d\",\"extra\":{\"a\":1}}",
                           &it, err, sizeof err),
                     0);
    assert_int_equal(it.kind, WIRE_TX);
    assert_true(it.t > 1234.566 && it.t < 1234.568);
    assert_string_equal(it.wall, "2026-12-05T00:13:01.456Z");
    assert_int_equal(it.len, 2);
    assert_memory_equal(it.data, "\x44\x0d", 2);
    wire_item_clear(&it);

    assert_int_equal(parse("{\"t\":1,\"wall\":\"w\",\"d\":\"rsp\",\"unit\":10,\"hex\":\"830b\"}",
                           &it, err, sizeof err),
                     0);
    assert_int_equal(it.kind, WIRE_RSP);
    assert_int_equal(it.unit, 10);
    assert_memory_equal(it.data, "\x83\x0b", 2);
    wire_item_clear(&it);

    assert_int_equal(parse("{\"t\":2,\"wall\":\"w\",\"d\":\"ev\",\"ev\":\"note\",\"text\":\"from "
                           "biotek_tests.py\"}",
                           &it, err, sizeof err),
                     0);
    assert_int_equal(it.kind, WIRE_EV);
    assert_int_equal(it.ev, WIRE_EV_NOTE);
    assert_string_equal(it.text, "from biotek_tests.py");
    wire_item_clear(&it);

    assert_int_equal(
        parse("{\"t\":3,\"wall\":\"w\",\"d\":\"ev\",\"ev\":\"timeout\"}", &it, err, sizeof err), 0);
    assert_int_equal(it.ev, WIRE_EV_TIMEOUT);
    assert_null(it.text);
    wire_item_clear(&it);
}

/* Each bad line gives its error code and a message that names the line and the fault. */
static void test_errors(void **state)
{
    static const struct {
        const char *line;
        int code;
        const char *says;
    } bad[] = {
        {"{\"t\":1,\"wall\":\"w\",\"d\":\"tx\",\"hex\":\"44", LAB_ESYNTAX, "not JSON"},
        {"[1,2]", LAB_ESYNTAX, "not a JSON object"},
        {"{\"t\":1,\"wall\":\"w\"}", LAB_ESYNTAX, "neither \"d\""},
        {"{\"t\":1,\"wall\":\"w\",\"d\":\"xx\",\"hex\":\"44\"}", LAB_EUNKNOWN, "\"d\" is \"xx\""},
        {"{\"t\":1,\"wall\":\"w\",\"d\":\"tx\",\"hex\":\"440\"}", LAB_ESYNTAX, "odd number"},
        {"{\"t\":1,\"wall\":\"w\",\"d\":\"tx\",\"hex\":\"4D\"}", LAB_ESYNTAX, "character 2 is 'D'"},
        {"{\"t\":1,\"wall\":\"w\",\"d\":\"tx\",\"hex\":\"\"}", LAB_ESYNTAX, "\"hex\" is empty"},
        {"{\"t\":1,\"wall\":\"w\",\"d\":\"rx\"}", LAB_ESYNTAX, "\"hex\" missing"},
        {"{\"wall\":\"w\",\"d\":\"tx\",\"hex\":\"44\"}", LAB_ESYNTAX, "\"t\" missing"},
        {"{\"t\":-1,\"wall\":\"w\",\"d\":\"tx\",\"hex\":\"44\"}", LAB_ESYNTAX, "\"t\" is not"},
        {"{\"t\":1,\"d\":\"tx\",\"hex\":\"44\"}", LAB_ESYNTAX, "\"wall\" missing"},
        {"{\"t\":1,\"wall\":\"w\",\"d\":\"req\",\"hex\":\"03\"}", LAB_ERANGE, "\"unit\" missing"},
        {"{\"t\":1,\"wall\":\"w\",\"d\":\"req\",\"unit\":256,\"hex\":\"03\"}", LAB_ERANGE,
         "\"unit\" is not an integer 0..255"},
        {"{\"t\":1,\"wall\":\"w\",\"d\":\"ev\",\"ev\":\"close\"}", LAB_EUNKNOWN,
         "\"ev\" is \"close\""},
        {"{\"t\":1,\"wall\":\"w\",\"d\":\"ev\",\"ev\":\"note\",\"text\":5}", LAB_ESYNTAX,
         "\"text\" is not a string"},
        {"{\"labloop_wire\":2,\"id\":\"x\"}", LAB_EUNKNOWN, "format version 2"},
        {"{\"labloop_wire\":1}", LAB_ESYNTAX, "\"id\" missing"},
        {"{\"t\":1,\"t\":2,\"wall\":\"w\",\"d\":\"tx\",\"hex\":\"44\"}", LAB_ESYNTAX, "duplicate"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        wire_item_t it;
        char err[256] = "";
        int rc = parse(bad[i].line, &it, err, sizeof err);
        if (rc != bad[i].code || strncmp(err, "line 7: ", 8) != 0 || !strstr(err, bad[i].says))
            fail_msg("%s: rc %d, error \"%s\"; want %d and \"%s\"", bad[i].line, rc, err,
                     bad[i].code, bad[i].says);
        assert_null(it.data);
        assert_null(it.text);
    }
}

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/wire_read_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* Reads a file whole; returns the last rc, the items read into *n, the error into err. */
static int read_all(const char *text, int *n, char *err, size_t cap)
{
    char *path = write_tmp(text);
    wire_reader_t r;
    wire_item_t it;
    int rc;
    *n = 0;
    assert_int_equal(wire_reader_open(&r, path, err, cap), 0);
    while ((rc = wire_reader_next(&r, &it, err, cap)) == 1) {
        (*n)++;
        wire_item_clear(&it);
    }
    wire_reader_close(&r);
    if (rc)
        memmove(err, err + strlen(path), strlen(err + strlen(path)) + 1); /* drop the path */
    unlink(path);
    return rc;
}

#define HDR "{\"labloop_wire\":1,\"id\":\"s\"}\n"
#define TX "{\"t\":0.5,\"wall\":\"w\",\"d\":\"tx\",\"hex\":\"4330\"}\n"

static void test_reader(void **state)
{
    char err[512];
    int n;
    /* rotation: a second header after a rename starts a new part of the same recording */
    assert_int_equal(read_all(HDR TX TX HDR TX, &n, err, sizeof err), 0);
    assert_int_equal(n, 5);

    assert_int_equal(read_all(TX HDR, &n, err, sizeof err), LAB_ESYNTAX);
    assert_string_equal(err, ":1: the first line is not a header ({\"labloop_wire\":1,...})");

    assert_int_equal(read_all(HDR TX "{\"t\":1,\"wall\":\"w\",\"d\":\"tx\",\"hex\":\"zz\"}\n" TX,
                              &n, err, sizeof err),
                     LAB_ESYNTAX);
    assert_int_equal(n, 2);
    assert_string_equal(err, ":3: \"hex\" character 1 is 'z', not a lower-case hex digit");

    assert_int_equal(
        read_all(HDR "{\"t\":1,\"wall\":\"w\",\"d\":\"tx\",\"hex\":\"43\"}", &n, err, sizeof err),
        LAB_EAGAIN);
    assert_string_equal(err, ":2: not terminated by a newline (a recording cut short?)");

    assert_int_equal(read_all(HDR "\n", &n, err, sizeof err), LAB_ESYNTAX);
    assert_true(strncmp(err, ":2: not JSON", 12) == 0);

    assert_int_equal(read_all("", &n, err, sizeof err), LAB_ESYNTAX);
    assert_string_equal(err, ": empty, no header line");
}

/* A file that cannot be opened is LAB_EIO with the path and why: not -1, which is another code. */
static void test_open_missing(void **state)
{
    (void)state;
    wire_reader_t r;
    char err[256] = "";
    const char *path = "/nonexistent/labloop/none.wire";
    assert_int_equal(wire_reader_open(&r, path, err, sizeof err), LAB_EIO);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),       cmocka_unit_test(test_events),
        cmocka_unit_test(test_errors),       cmocka_unit_test(test_reader),
        cmocka_unit_test(test_open_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
