/* labloop, the command line, against a real labloopd (embedded mode): submit, runs, run, the
 * one-line reasons and exit codes on refusal, ports (no daemon needed), every command's --help
 * and unknown options, and a submission sent again after its answer was lost. */
#include "tests/harness/harness.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
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
    /* The runs it submits follow the example workflow, stored as a user would store it. */
    if (h_daemon_start(&daemon_, NULL, NULL, NULL))
        return -1;
    return h_workflow_example(daemon_.url, NULL);
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
    /* Options after the action's parameters, as its usage shows them: the request reaches the
     * daemon (no such instrument), the option is not taken for a parameter. */
    assert_int_equal(cli(daemon_.url, "action nosuch read_absorbance wells=A1 --timeout 5"), 1);
    assert_non_null(strstr(out, "404"));
}

/* Every command: --help and -h print its usage and exit 0 without a daemon; an unknown option
 * is a usage error (2) naming the option, with the usage. */
static void test_help_and_unknown_options(void **state)
{
    static const char *const cmds[] = {
        "submit",   "runs",  "run",        "cancel",  "priority", "schedule",    "pause",  "resume",
        "campaign", "batch", "candidates", "results", "plan",     "instruments", "action", "ports",
    };
    char nowhere[64], args[128], want[64];
    snprintf(nowhere, sizeof nowhere, "http://127.0.0.1:%d", h_free_port());
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        snprintf(want, sizeof want, "usage: labloop %s", cmds[i]);
        for (int h = 0; h < 2; h++) {
            snprintf(args, sizeof args, "%s %s", cmds[i], h ? "-h" : "--help");
            int rc = cli(nowhere, args);
            if (rc != 0 || strncmp(out, want, strlen(want)) != 0)
                fail_msg("labloop %s: exit %d, wanted 0 and its usage:\n%s", args, rc, out);
        }
        snprintf(args, sizeof args, "%s --no-such-option x", cmds[i]);
        int rc = cli(nowhere, args);
        if (rc != 2 || !strstr(out, "unknown option --no-such-option") || !strstr(out, want))
            fail_msg("labloop %s: exit %d, wanted 2 and a usage error:\n%s", args, rc, out);
    }
    /* A run id is never taken from an option, nor a value from a missing one. */
    assert_int_equal(cli(daemon_.url, "run --help"), 0);
    assert_null(strstr(out, "404"));
    assert_int_equal(cli(daemon_.url, "submit elisa --plate"), 2);
    assert_non_null(strstr(out, "--plate needs a value"));
    assert_int_equal(cli(daemon_.url, "plan -x f.json"), 2);
    assert_non_null(strstr(out, "unknown option -x"));
}

/* A workflow that is not stored is refused (422, naming it) unless the run is to wait for it. */
static void test_submit_unknown_workflow(void **state)
{
    assert_int_equal(cli(daemon_.url, "submit elisa-typo --plate P9"), 1);
    assert_non_null(strstr(out, "422"));
    assert_non_null(strstr(out, "elisa-typo"));
    assert_int_equal(cli(daemon_.url, "--json submit elisa-typo --plate P9 --await-workflow"), 0);
    json_t *run = json_loads(out, 0, NULL);
    assert_non_null(run);
    assert_string_equal(json_string_value(json_object_get(run, "state")), "queued");
    assert_string_equal(json_string_value(json_object_get(run, "workflow")), "elisa-typo");
    json_decref(run);
}

/* The runs of the daemon with this plate. */
static int runs_with_plate(const char *plate)
{
    json_t *doc = h_api(&daemon_, "GET", "/v1/runs?limit=500", NULL, 200);
    int n = 0;
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(doc, "runs"), i, r)
    {
        const char *p = json_string_value(json_object_get(r, "plate"));
        n += p && strcmp(p, plate) == 0;
    }
    json_decref(doc);
    return n;
}

/* A loopback relay to the daemon that loses the answer to the first request it carries: the
 * daemon has committed the run, the client sees the connection close with nothing. */
typedef struct relay {
    int lfd, port, target;
    int conns;
    char req[2][4096]; /* the start of each request carried */
    size_t req_n[2];
    pthread_t th;
} relay_t;

static int relay_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

static void *relay_main(void *arg)
{
    relay_t *r = arg;
    for (int k = 0; k < 2; k++) {
        struct pollfd lp = {r->lfd, POLLIN, 0};
        if (poll(&lp, 1, 20000) != 1) /* a client that does not come again */
            break;
        int c = accept(r->lfd, NULL, NULL);
        if (c < 0)
            break;
        r->conns++;
        int s = relay_connect(r->target);
        char buf[8192];
        for (bool open = s >= 0; open;) {
            struct pollfd pf[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
            if (poll(pf, 2, 30000) <= 0)
                break;
            if (pf[0].revents) {
                ssize_t n = read(c, buf, sizeof buf);
                if (n <= 0)
                    break;
                size_t room = sizeof r->req[k] - 1 - r->req_n[k];
                size_t keep = (size_t)n < room ? (size_t)n : room;
                memcpy(r->req[k] + r->req_n[k], buf, keep);
                r->req_n[k] += keep;
                open = write(s, buf, (size_t)n) == n;
            }
            if (open && pf[1].revents) {
                ssize_t n = read(s, buf, sizeof buf);
                if (n <= 0 || k == 0) /* the first answer is lost on its way */
                    break;
                open = write(c, buf, (size_t)n) == n;
            }
        }
        close(c);
        if (s >= 0)
            close(s);
    }
    return NULL;
}

/* The Idempotency-Key header's value in a request's text ("" when none). */
static void key_of(const char *req, char *key, size_t len)
{
    const char *h = strstr(req, "Idempotency-Key: ");
    size_t n = h ? strcspn(h + 17, "\r\n") : 0;
    snprintf(key, len, "%.*s", (int)n, h ? h + 17 : "");
}

/* A submission whose answer is lost is sent again with the same key: one run, and the answer
 * names it. */
static void test_submit_retry_makes_one_run(void **state)
{
    static relay_t r;
    memset(&r, 0, sizeof r);
    r.target = daemon_.port;
    r.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    assert_int_equal(bind(r.lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(r.lfd, 4), 0);
    assert_int_equal(getsockname(r.lfd, (struct sockaddr *)&a, &al), 0);
    r.port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&r.th, NULL, relay_main, &r), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", r.port);
    int rc = cli(url, "--json submit elisa --plate PRETRY");
    pthread_join(r.th, NULL);
    close(r.lfd);
    if (rc != 0)
        fail_msg("labloop submit through a relay that lost the answer: exit %d:\n%s", rc, out);
    assert_int_equal(r.conns, 2);
    char k1[300], k2[300];
    key_of(r.req[0], k1, sizeof k1);
    key_of(r.req[1], k2, sizeof k2);
    assert_true(strlen(k1) > 0);
    assert_string_equal(k1, k2);
    const char *body = strchr(out, '{'); /* after the line that says it submits again */
    assert_non_null(body);
    json_t *run = json_loads(body, 0, NULL);
    assert_non_null(run);
    assert_string_equal(json_string_value(json_object_get(run, "plate")), "PRETRY");
    assert_int_equal(runs_with_plate("PRETRY"), 1);
    json_decref(run);

    /* A key of one's own: the same submission twice is one run, answered twice alike. */
    assert_int_equal(cli(daemon_.url, "--json submit elisa --plate PKEY --idempotency-key k-42"),
                     0);
    json_t *first = json_loads(out, 0, NULL);
    assert_int_equal(cli(daemon_.url, "--json submit elisa --plate PKEY --idempotency-key k-42"),
                     0);
    json_t *again = json_loads(out, 0, NULL);
    assert_non_null(first);
    assert_non_null(again);
    assert_string_equal(json_string_value(json_object_get(first, "id")),
                        json_string_value(json_object_get(again, "id")));
    assert_int_equal(runs_with_plate("PKEY"), 1);
    json_decref(first);
    json_decref(again);
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
        cmocka_unit_test(test_help_and_unknown_options),
        cmocka_unit_test(test_submit_unknown_workflow),
        cmocka_unit_test(test_submit_retry_makes_one_run),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
