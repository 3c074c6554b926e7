/* labloopd as a process, the way an operator meets it: --version, --check on good and bad
 * configs, embedded mode (no PostgreSQL, no MQTT) across a restart, SIGTERM, SIGHUP reload, and the
 * refusal to listen beyond loopback without [auth]. */
#include "tests/harness/harness.h"

#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

static const char *labloopd(void)
{
    const char *p = getenv("LABLOOPD");
    return p && *p ? p : "labloopd";
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    size_t got;
    while ((got = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0)
            s = realloc(s, cap *= 2);
    }
    s[n] = '\0';
    fclose(f);
    return s;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* The first line of text that holds every one of the NULL-terminated needles, or NULL. */
static const char *line_with(const char *text, ...)
{
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *copy = strndup(line, len);
        va_list ap;
        va_start(ap, text);
        int all = 1;
        for (const char *n = va_arg(ap, const char *); n; n = va_arg(ap, const char *))
            if (!strstr(copy, n))
                all = 0;
        va_end(ap);
        free(copy);
        if (all)
            return line;
        line = end ? end + 1 : NULL;
    }
    return NULL;
}

/* Waits (deadline timeout_ms) until the daemon's log has a line holding both needles. */
static int log_wait(const h_daemon_t *d, const char *a, const char *b, int timeout_ms)
{
    long long end = h_now_ms() + timeout_ms;
    for (;;) {
        char *log = slurp(d->log);
        int found = log && line_with(log, a, b, (char *)NULL) != NULL;
        free(log);
        if (found)
            return 1;
        if (h_now_ms() > end)
            return 0;
        h_sleep_ms(50);
    }
}

/* Replaces the first occurrence of `from` in the file by `to`. */
static void edit_file(const char *path, const char *from, const char *to)
{
    char *text = slurp(path);
    assert_non_null(text);
    char *at = strstr(text, from);
    assert_non_null(at);
    size_t len = strlen(text) - strlen(from) + strlen(to) + 1;
    char *out = malloc(len);
    snprintf(out, len, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    write_file(path, out);
    free(out);
    free(text);
}

static void test_version(void **state)
{
    char cmd[600], out[4096];
    snprintf(cmd, sizeof cmd, "'%s' --version 2>&1", labloopd());
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "labloopd "));
    assert_non_null(strchr(out, '.')); /* a version number, e.g. 0.1.0 */
}

static void test_check_good(void **state)
{
    char dir[256], path[300], cmd[800], out[4096];
    assert_int_equal(h_tempdir("labcheck", dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/good.ini", dir);
    write_file(path, "; a comment\n"
                     "[labloop]\n"
                     "site = lab\n"
                     "cell = cell-7\n"
                     "state_dir = state\n"
                     "http = 127.0.0.1:8470\n"
                     "log_level = warn\n"
                     "http_max_body = 512k\n"
                     "\n"
                     "[postgres]\n"
                     "conninfo = host=127.0.0.1 port=5432 dbname=lab\n"
                     "batch_rows = 500\n"
                     "\n"
                     "[mqtt]\n"
                     "uri = tcp://127.0.0.1:1883\n");
    snprintf(cmd, sizeof cmd, "'%s' --check -c '%s' 2>&1", labloopd(), path);
    int rc = h_run(cmd, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "--check said:\n%s\n", out);
    assert_int_equal(rc, 0);
    h_rmtree(dir);
}

static void test_check_errors(void **state)
{
    char dir[256], path[300], cmd[800], out[8192];
    assert_int_equal(h_tempdir("labcheck", dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/bad.ini", dir);
    write_file(path, "[labloop]\n"                     /* 1 */
                     "site = lab\n"                    /* 2 */
                     "colour = blue\n"                 /* 3: unknown key */
                     "log_level = loud\n"              /* 4: bad value */
                     "http_max_connections = 999999\n" /* 5: out of range */
                     "\n"                              /* 6 */
                     "[printer]\n"                     /* 7: unknown section */
                     "paper = a4\n"                    /* 8 */
                     "\n"                              /* 9 */
                     "[postgres]\n"                    /* 10: no conninfo */
                     "connect_timeout = 5\n");         /* 11 */
    snprintf(cmd, sizeof cmd, "'%s' --check -c '%s' 2>&1", labloopd(), path);
    int rc = h_run(cmd, out, sizeof out);
    fprintf(stderr, "--check said:\n%s", out);
    assert_int_equal(rc, 1);

    char at[400];
    snprintf(at, sizeof at, "%s:3:", path);
    assert_non_null(line_with(out, at, "colour", "unknown key", (char *)NULL));
    snprintf(at, sizeof at, "%s:4:", path);
    assert_non_null(line_with(out, at, "log_level", "debug", (char *)NULL));
    snprintf(at, sizeof at, "%s:5:", path);
    assert_non_null(line_with(out, at, "http_max_connections", "range", (char *)NULL));
    snprintf(at, sizeof at, "%s:7:", path);
    assert_non_null(line_with(out, at, "printer", "unknown section", (char *)NULL));
    snprintf(at, sizeof at, "%s:10:", path);
    assert_non_null(line_with(out, at, "conninfo", "required", (char *)NULL));
    /* Keys under an unknown section are not reported once more each. */
    assert_null(line_with(out, "paper", (char *)NULL));
    h_rmtree(dir);
}

/* POSTs a submission; returns the new run's id (malloc'd) after checking the 201. */
static char *submit(const h_daemon_t *d, const char *body)
{
    char *resp = NULL;
    int st = h_http(d->url, "POST", "/v1/runs", NULL, body, &resp);
    if (st != 201)
        fprintf(stderr, "POST /v1/runs: %d %s\n", st, resp ? resp : "");
    assert_int_equal(st, 201);
    json_t *doc = json_loads(resp, 0, NULL);
    assert_non_null(doc);
    const char *id = json_string_value(json_object_get(doc, "id"));
    assert_non_null(id);
    assert_string_equal(json_string_value(json_object_get(doc, "state")), "queued");
    char *out = strdup(id);
    json_decref(doc);
    free(resp);
    return out;
}

static void expect_run(const h_daemon_t *d, const char *id, const char *workflow)
{
    char path[128], *resp = NULL;
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    assert_int_equal(h_http(d->url, "GET", path, NULL, NULL, &resp), 200);
    json_t *doc = json_loads(resp, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "id")), id);
    assert_string_equal(json_string_value(json_object_get(doc, "workflow")), workflow);
    json_decref(doc);
    free(resp);
}

static int listed(const h_daemon_t *d, const char *id)
{
    char *resp = NULL;
    assert_int_equal(h_http(d->url, "GET", "/v1/runs", NULL, NULL, &resp), 200);
    json_t *doc = json_loads(resp, 0, NULL);
    assert_non_null(doc);
    json_t *runs = json_object_get(doc, "runs");
    assert_true(json_is_array(runs));
    size_t i;
    json_t *r;
    int found = 0;
    json_array_foreach(runs, i, r) found +=
        strcmp(json_string_value(json_object_get(r, "id")), id) == 0;
    json_decref(doc);
    free(resp);
    return found;
}

static void test_embedded_mode(void **state)
{
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, NULL), 0);
    assert_int_equal(h_workflow_example(d.url, "elisa-demo"), 0);
    char *id =
        submit(&d, "{\"workflow\":\"elisa-demo\",\"plate\":\"P0001\",\"priority\":\"high\"}");
    expect_run(&d, id, "elisa-demo");
    assert_int_equal(listed(&d, id), 1);

    /* An orderly stop exits 0, and the run survives it. */
    assert_int_equal(h_daemon_stop(&d), 0);
    assert_int_equal(h_daemon_restart(&d), 0);
    expect_run(&d, id, "elisa-demo");
    assert_int_equal(listed(&d, id), 1);

    /* An unknown run is a 404, not a crash. */
    char *resp = NULL;
    assert_int_equal(
        h_http(d.url, "GET", "/v1/runs/00000000-0000-4000-8000-000000000000", NULL, NULL, &resp),
        404);
    free(resp);

    assert_int_equal(h_daemon_stop(&d), 0);
    free(id);
    h_daemon_destroy(&d);
}

static void test_sigterm_exits_0(void **state)
{
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, NULL), 0);
    assert_int_equal(h_daemon_stop(&d), 0);
    h_daemon_destroy(&d);
}

static void test_hup_reload(void **state)
{
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, NULL), 0);

    edit_file(d.conf, "log_level = debug\n", "log_level = info\n");
    assert_int_equal(kill(d.pid, SIGHUP), 0);
    assert_true(log_wait(&d, "reload", "log_level=info", 20000));

    edit_file(d.conf, "[labloop]\n", "[labloop]\nhttp_max_connections = 100\n");
    assert_int_equal(kill(d.pid, SIGHUP), 0);
    assert_true(log_wait(&d, "http_max_connections", "restart", 20000));

    /* A reload that finds a broken file keeps the running config and says why. */
    edit_file(d.conf, "log_level = info\n", "log_level = loud\n");
    assert_int_equal(kill(d.pid, SIGHUP), 0);
    assert_true(log_wait(&d, "refused", "log_level", 20000));

    char *resp = NULL;
    assert_int_equal(h_http(d.url, "GET", "/healthz", NULL, NULL, &resp), 200);
    free(resp);
    assert_int_equal(h_daemon_stop(&d), 0);
    h_daemon_destroy(&d);
}

static void test_public_http_needs_auth(void **state)
{
    char dir[256], path[300], cmd[900], out[8192];
    assert_int_equal(h_tempdir("labauth", dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/labloop.ini", dir);
    char text[600];
    snprintf(text, sizeof text,
             "[labloop]\nsite = lab\ncell = cell1\nstate_dir = %s/state\nhttp = 0.0.0.0:%d\n", dir,
             h_free_port());
    write_file(path, text);
    /* timeout: a daemon that wrongly starts would otherwise run until the test's own limit. */
    snprintf(cmd, sizeof cmd, "timeout -s KILL 20 '%s' -c '%s' 2>&1", labloopd(), path);
    int rc = h_run(cmd, out, sizeof out);
    fprintf(stderr, "labloopd said:\n%s", out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "auth"));
    assert_non_null(strstr(out, "0.0.0.0"));
    h_rmtree(dir);
}

/* [lab]: a shared queue lives in PostgreSQL, so it needs [postgres]; a heartbeat longer than
 * half the lease would let one late heartbeat lose a healthy cell. Both are refused by --check
 * at the key's line; a good [lab] passes. */
static void test_check_lab(void **state)
{
    char dir[256], path[300], cmd[800], out[8192];
    assert_int_equal(h_tempdir("labcheck", dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/lab.ini", dir);
    write_file(path, "[labloop]\n"         /* 1 */
                     "site = lab\n"        /* 2 */
                     "[lab]\n"             /* 3 */
                     "shared_queue = on\n" /* 4: no [postgres] */
                     "lease = 10\n"        /* 5 */
                     "heartbeat = 6\n");   /* 6: more than lease / 2 */
    snprintf(cmd, sizeof cmd, "'%s' --check -c '%s' 2>&1", labloopd(), path);
    int rc = h_run(cmd, out, sizeof out);
    fprintf(stderr, "--check said:\n%s", out);
    assert_int_equal(rc, 1);
    char at[400];
    snprintf(at, sizeof at, "%s:4:", path);
    assert_non_null(line_with(out, at, "shared_queue", "[postgres]", (char *)NULL));
    snprintf(at, sizeof at, "%s:6:", path);
    assert_non_null(line_with(out, at, "heartbeat", "half the lease", (char *)NULL));
    write_file(path, "[labloop]\nsite = lab\n[lab]\nshared_queue = maybe\n");
    assert_int_equal(h_run(cmd, out, sizeof out), 1);
    assert_non_null(line_with(out, "shared_queue", "on or off", (char *)NULL));
    write_file(path, "[labloop]\nsite = lab\n[postgres]\nconninfo = host=127.0.0.1\n"
                     "[lab]\nshared_queue = on\nlease = 10\nheartbeat = 5\n");
    rc = h_run(cmd, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "--check said:\n%s\n", out);
    assert_int_equal(rc, 0);
    h_rmtree(dir);
}

/* labloopd with this config, checked (--check) or started: the exit status, its words in out. */
static int daemon_says(const char *path, bool check, char *out, size_t len)
{
    char cmd[900];
    /* timeout: a daemon that wrongly starts would otherwise run until the test's own limit. */
    snprintf(cmd, sizeof cmd, "timeout -s KILL 20 '%s' %s -c '%s' 2>&1", labloopd(),
             check ? "--check" : "", path);
    return h_run(cmd, out, len);
}

/* What a start refuses, --check refuses, with the same reason: the API beyond loopback without
 * [auth], a tokens file that is not there, a workflow file that is wrong, a state_dir that
 * cannot be made, a conninfo libpq cannot read. And a good [workflows] dir (the example
 * workflow) passes both. */
static void test_check_refuses_what_start_refuses(void **state)
{
    char dir[256], path[300], wfdir[300], text[1200], out[8192], out2[8192];
    assert_int_equal(h_tempdir("labcheck", dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/labloop.ini", dir);
    snprintf(wfdir, sizeof wfdir, "%s/workflows", dir);
    assert_int_equal(mkdir(wfdir, 0755), 0);
    char cp[900];
    snprintf(cp, sizeof cp, "cp '%s/deploy/examples/elisa.workflow.json' '%s/'", LAB_SOURCE_DIR_T,
             wfdir);
    assert_int_equal(h_run(cp, NULL, 0), 0);
    char file[400];
    snprintf(file, sizeof file, "%s/plain-file", dir);
    write_file(file, "not a directory\n");
    int port = h_free_port();
    const struct {
        const char *extra; /* after [labloop] site, cell */
        const char *why[2];
    } cases[] = {
        {"http = 0.0.0.0:%d\nstate_dir = %s/state\n", {"0.0.0.0", "no [auth] section"}},
        {"http = 127.0.0.1:%d\nstate_dir = %s/state\n[auth]\ntokens = nowhere.txt\n",
         {"[auth] tokens", "nowhere.txt"}},
        {"http = 127.0.0.1:%d\nstate_dir = %s/plain-file/state\n", {"state_dir", "plain-file"}},
        {"http = 127.0.0.1:%d\nstate_dir = %s/state\n[postgres]\nconninfo = host='unclosed\n",
         {"conninfo", "unterminated"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char keys[600];
        snprintf(keys, sizeof keys, cases[i].extra, port, dir);
        snprintf(text, sizeof text, "[labloop]\nsite = lab\ncell = cell1\n%s", keys);
        write_file(path, text);
        int rc = daemon_says(path, true, out, sizeof out);
        fprintf(stderr, "--check of\n%s said:\n%s", text, out);
        assert_int_equal(rc, 1);
        assert_non_null(line_with(out, path, cases[i].why[0], cases[i].why[1], (char *)NULL));
        rc = daemon_says(path, false, out2, sizeof out2);
        fprintf(stderr, "labloopd said:\n%s", out2);
        assert_int_equal(rc, 1);
        assert_string_equal(out, out2);
    }
    /* The example workflow is a good one; one that names no instrument of any kind is not. */
    snprintf(text, sizeof text,
             "[labloop]\nsite = lab\ncell = cell1\nhttp = 127.0.0.1:%d\nstate_dir = %s/state\n"
             "[workflows]\ndir = workflows\n",
             port, dir);
    write_file(path, text);
    assert_int_equal(daemon_says(path, true, out, sizeof out), 0);
    snprintf(file, sizeof file, "%s/spaceship.json", wfdir);
    write_file(file, "{\"name\":\"x\",\"steps\":[{\"name\":\"a\",\"op\":\"o\",\"on\":"
                     "\"spaceship\",\"duration_s\":1}]}");
    assert_int_equal(daemon_says(path, true, out, sizeof out), 1);
    fprintf(stderr, "--check said:\n%s", out);
    assert_non_null(line_with(out, "spaceship.json", "/steps/0/on", (char *)NULL));
    assert_null(strstr(out, "elisa.workflow.json"));
    assert_int_equal(daemon_says(path, false, out2, sizeof out2), 1);
    assert_non_null(line_with(out2, "spaceship.json", "/steps/0/on", (char *)NULL));
    h_rmtree(dir);
}

/* A recording file that cannot be written is a warning of --check, not an error: the daemon
 * starts and runs that instrument without recording. Each warning names the line that chose the
 * file (the record key, or the section for the default STATE_DIR/wire/ID.wire); a recording that
 * is off, or whose last directory a start would make, is no warning, and --check makes nothing. */
static void test_check_warns_record_path(void **state)
{
    char dir[256], path[300], text[2000], out[8192], file[400];
    assert_int_equal(h_tempdir("labcheck", dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/labloop.ini", dir);
    snprintf(file, sizeof file, "%s/state", dir);
    assert_int_equal(mkdir(file, 0755), 0);
    snprintf(file, sizeof file, "%s/state/wire", dir); /* a file where the directory goes */
    write_file(file, "not a directory\n");
    snprintf(file, sizeof file, "%s/plain", dir);
    write_file(file, "not a directory\n");
    snprintf(text, sizeof text,
             "[labloop]\n"                  /* 1 */
             "site = lab\n"                 /* 2 */
             "cell = cell1\n"               /* 3 */
             "state_dir = %s/state\n"       /* 4 */
             "[instrument m1]\n"            /* 5 */
             "driver = manual-mover\n"      /* 6 */
             "record = %s/plain/m1.wire\n"  /* 7: under a file */
             "[instrument m2]\n"            /* 8 */
             "driver = manual-mover\n"      /* 9 */
             "record = off\n"               /* 10: off, nothing to judge */
             "[instrument m3]\n"            /* 11: STATE_DIR/wire is a file */
             "driver = manual-mover\n"      /* 12 */
             "[instrument m4]\n"            /* 13 */
             "driver = manual-mover\n"      /* 14 */
             "record = %s/wire2/m4.wire\n", /* 15: wire2 would be made */
             dir, dir, dir);
    write_file(path, text);
    assert_int_equal(daemon_says(path, true, out, sizeof out), 0);
    fprintf(stderr, "--check said:\n%s", out);
    char at[900];
    snprintf(at, sizeof at,
             "%s:7: [instrument m1] record: warning: cannot record to %s/plain/m1.wire", path, dir);
    assert_non_null(line_with(out, at, "Not a directory", "without recording", (char *)NULL));
    snprintf(at, sizeof at,
             "%s:11: [instrument m3] record: warning: cannot record to %s/state/wire/m3.wire", path,
             dir);
    assert_non_null(line_with(out, at, "Not a directory", (char *)NULL));
    assert_null(line_with(out, "m2", (char *)NULL));
    assert_null(line_with(out, "m4", (char *)NULL));
    snprintf(at, sizeof at, "%s: ok, 2 warnings", path);
    assert_non_null(line_with(out, at, (char *)NULL));
    struct stat st;
    snprintf(file, sizeof file, "%s/wire2", dir);
    assert_int_not_equal(stat(file, &st), 0);

    /* Without them: a plain ok. */
    edit_file(path, "/plain/m1.wire", "/m1.wire");
    edit_file(path, "[instrument m3]\ndriver = manual-mover\n", "");
    assert_int_equal(daemon_says(path, true, out, sizeof out), 0);
    assert_null(line_with(out, "warning", (char *)NULL));
    snprintf(at, sizeof at, "%s: ok", path);
    assert_non_null(line_with(out, at, (char *)NULL));
    h_rmtree(dir);
}

/* The port key's help names every form a port takes: a device path, tcp:// and usb:// for a
 * driver with serial settings (a baud key); tcp:// for one reached over the network only. */
static void test_keys_port_forms(void **state)
{
    char cmd[600], out[65536];
    snprintf(cmd, sizeof cmd, "'%s' --keys 2>&1", labloopd());
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    int ports = 0;
    for (const char *line = strstr(out, "\n  port "); line; line = strstr(line + 1, "\n  port ")) {
        char *copy = strndup(line + 1, strcspn(line + 1, "\n"));
        const char *next = strstr(line + 1, "\n  driver = ");
        const char *baud = strstr(line + 1, "\n  baud ");
        bool serial = baud && (!next || baud < next);
        if (serial && (!strstr(copy, "device path") || !strstr(copy, "tcp://HOST:PORT") ||
                       !strstr(copy, "usb://VVVV:PPPP[?serial=S]")))
            fail_msg("the port key's help misses a form: %s", copy);
        if (!serial && !strstr(copy, "tcp://HOST"))
            fail_msg("a network instrument's port help misses tcp://: %s", copy);
        free(copy);
        ports++;
    }
    assert_true(ports >= 3); /* Liconic, BioTek, STAR */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_check_good),
        cmocka_unit_test(test_check_errors),
        cmocka_unit_test(test_check_lab),
        cmocka_unit_test(test_embedded_mode),
        cmocka_unit_test(test_sigterm_exits_0),
        cmocka_unit_test(test_hup_reload),
        cmocka_unit_test(test_public_http_needs_auth),
        cmocka_unit_test(test_check_refuses_what_start_refuses),
        cmocka_unit_test(test_check_warns_record_path),
        cmocka_unit_test(test_keys_port_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
