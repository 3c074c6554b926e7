/* labloop, the command line, against a real labloopd (embedded mode): submit, runs, run, the
 * one-line reasons and exit codes on refusal, and ports (no daemon needed). */
#include "tests/harness/harness.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static h_daemon_t daemon_;
static char out[65536];

/* Runs `labloop ARGS` against the daemon; stdout and stderr into out; returns the exit code. */
static int cli(const char *url, const char *args)
{
    const char *bin = getenv("LABLOOP_CLI");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "LABLOOP_URL='%s' '%s' %s 2>&1", url, bin && *bin ? bin : "labloop",
             args);
    return h_run(cmd, out, sizeof out);
}

static int setup(void **state)
{
    return h_daemon_start(&daemon_, NULL, NULL, NULL);
}

static int teardown(void **state)
{
    h_daemon_destroy(&daemon_);
    return 0;
}

static void test_submit_list_show(void **state)
{
    assert_int_equal(cli(daemon_.url, "--json submit elisa --plate P7 --priority high "
                                      "--param dilution=4 --param reagent=abc"),
                     0);
    json_error_t jerr;
    json_t *run = json_loads(out, 0, &jerr);
    assert_non_null(run);
    const char *id = json_string_value(json_object_get(run, "id"));
    assert_non_null(id);
    assert_string_equal(json_string_value(json_object_get(run, "state")), "queued");
    json_t *params = json_object_get(run, "params");
    assert_int_equal(json_integer_value(json_object_get(params, "dilution")), 4);
    assert_string_equal(json_string_value(json_object_get(params, "reagent")), "abc");

    char args[128];
    snprintf(args, sizeof args, "run %s", id);
    assert_int_equal(cli(daemon_.url, args), 0);
    assert_non_null(strstr(out, "STATE"));
    assert_non_null(strstr(out, id));
    assert_non_null(strstr(out, "P7"));

    assert_int_equal(cli(daemon_.url, "runs --state queued"), 0);
    assert_non_null(strstr(out, id));
    json_decref(run);
}

static void test_cancel(void **state)
{
    assert_int_equal(cli(daemon_.url, "--json submit elisa --plate P8"), 0);
    json_t *run = json_loads(out, 0, NULL);
    assert_non_null(run);
    char args[200];
    snprintf(args, sizeof args, "--json cancel %s --reason 'plate dropped'",
             json_string_value(json_object_get(run, "id")));
    assert_int_equal(cli(daemon_.url, args), 0);
    json_t *c = json_loads(out, 0, NULL);
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "state")), "cancelled");
    assert_string_equal(json_string_value(json_object_get(c, "cancel_reason")), "plate dropped");
    json_decref(c);
    /* Over is over: a second cancel is refused with the reason, exit 1. */
    assert_int_equal(cli(daemon_.url, args), 1);
    assert_non_null(strstr(out, "409"));
    assert_non_null(strstr(out, "cancelled"));
    json_decref(run);
    assert_int_equal(cli(daemon_.url, "cancel 00000000-0000-4000-8000-000000000000"), 1);
    assert_non_null(strstr(out, "404"));
}

static void test_refusals(void **state)
{
    /* An invalid document: exit 1 and one line naming every problem. */
    assert_int_equal(cli(daemon_.url, "submit ' bad' --priority asap"), 1);
    assert_non_null(strstr(out, "422"));
    assert_non_null(strstr(out, "/workflow"));
    assert_non_null(strstr(out, "/priority"));
    int lines = 0;
    for (const char *c = out; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, 1);
    /* An unknown run: 404. */
    assert_int_equal(cli(daemon_.url, "run 00000000-0000-4000-8000-000000000000"), 1);
    assert_non_null(strstr(out, "404"));
    /* A usage error and a daemon that is not there. */
    assert_int_equal(cli(daemon_.url, "frobnicate"), 2);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", h_free_port());
    assert_int_equal(cli(url, "runs"), 3);
    assert_non_null(strstr(out, "cannot reach"));
}

static void test_ports(void **state)
{
    assert_int_equal(cli(daemon_.url, "--json ports"), 0);
    json_error_t jerr;
    json_t *ports = json_loads(out, 0, &jerr);
    if (!ports)
        fail_msg("labloop ports --json is not JSON: %s: %s", jerr.text, out);
    assert_true(json_is_array(ports));
    size_t i;
    json_t *p;
    json_array_foreach(ports, i, p)
    {
        assert_non_null(json_string_value(json_object_get(p, "port")));
        assert_non_null(json_string_value(json_object_get(p, "transport")));
    }
    json_decref(ports);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_list_show),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_ports),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
