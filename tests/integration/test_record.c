/* Wire recording through labloopd against labloop-sim: on by default into STATE_DIR/wire, a
 * BioTek reader on a pty records its bytes both ways and its link events (the temperature it
 * reports is the one in the bytes recorded), a CN7500 over Modbus TCP records request/response
 * PDUs with the unit (a set point written is the value read back from the same register, an
 * exception has the high bit, no answer is a timeout event), `labloop record ID off` stops the
 * file, `on` starts a new one with its first event (the old one rotated to .1 then), an
 * instrument without a wire (manual-mover) records nothing and leaves no file, and an instrument
 * whose record path cannot be written says so in its JSON and the log while it and the daemon
 * run on. */
#include "protocols/biotek.h"
#include "tests/harness/harness.h"

#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

static h_sim_t sim;
static h_daemon_t dmn;
static char tmp[256], out[8192];

static int setup(void **state)
{
    (void)state;
    if (h_tempdir("labrec", tmp, sizeof tmp))
        return -1;
    char plain[300];
    snprintf(plain, sizeof plain, "%s/plain", tmp);
    FILE *f = fopen(plain, "w"); /* a file where the bad record path wants a directory */
    if (!f)
        return -1;
    fclose(f);
    int mb = h_free_port();
    char sections[2048];
    snprintf(sections, sizeof sections,
             "[instrument reader1]\ndriver = biotek-synergy\nport = %s/reader1\nsim_plate = P1\n"
             "poll_s = 0\n"
             "[instrument heat1]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
             "map = omega-cn7500\nunit = 1\nsim_tau = 20\npoll_s = 0\n"
             "[instrument inc1]\ndriver = liconic-stx\nport = %s/inc1\nrack_type = "
             "liconic_rack_17mm_22\nsim_plate = P1\n"
             "record = %s/x.wire\n",
             tmp, mb, tmp, plain);
    char ini[2200];
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = 50\nsim_seed = 7\n%s", sections);
    if (h_sim_start(&sim, ini))
        return -1;
    char extra[2200];
    snprintf(extra, sizeof extra,
             "[labloop]\ntime_scale = 50\n%s[instrument mover1]\ndriver = manual-mover\n",
             sections);
    return h_daemon_start(&dmn, NULL, NULL, extra);
}

static int teardown(void **state)
{
    (void)state;
    h_daemon_destroy(&dmn);
    h_sim_stop(&sim);
    h_rmtree(tmp);
    return 0;
}

static json_t *inst(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/instruments/%s", id);
    return h_api(&dmn, "GET", path, NULL, 200);
}

static void wait_state(const char *id, const char *want)
{
    json_t *doc = NULL;
    for (long long end = h_now_ms() + 20000; h_now_ms() < end; h_sleep_ms(25)) {
        json_decref(doc);
        doc = inst(id);
        if (strcmp(json_string_value(json_object_get(doc, "state")), want) == 0) {
            json_decref(doc);
            return;
        }
    }
    fail_msg("%s not %s: %s", id, want, json_dumps(doc, JSON_COMPACT));
}

static json_t *act(const char *id, const char *body)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/instruments/%s/actions", id);
    return h_api(&dmn, "POST", path, body, 200);
}

static void wire_path(const char *id, char *p, size_t n)
{
    snprintf(p, n, "%s/state/wire/%s.wire", dmn.dir, id);
}

/* The file's lines, parsed (an array). */
static json_t *wire_read(const char *path)
{
    json_t *arr = json_array();
    FILE *f = fopen(path, "r");
    if (!f)
        return arr;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *v = json_loads(line, 0, NULL);
        if (!v)
            fail_msg("%s: not a JSON line: %s", path, line);
        json_array_append_new(arr, v);
    }
    free(line);
    fclose(f);
    return arr;
}

static const char *s_of(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* Waits until the file holds a line whose "d" is d (and whose hex starts with prefix). */
static json_t *wire_wait(const char *path, const char *d, const char *prefix, size_t from)
{
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(25)) {
        json_t *arr = wire_read(path);
        for (size_t i = from; i < json_array_size(arr); i++) {
            json_t *e = json_array_get(arr, i);
            if (strcmp(s_of(e, "d"), d) == 0 &&
                (!prefix || strncmp(s_of(e, "hex"), prefix, strlen(prefix)) == 0))
                return arr;
        }
        json_decref(arr);
    }
    fail_msg("%s: no %s event %s", path, d, prefix ? prefix : "");
    return NULL;
}

static int cli(const char *args)
{
    const char *bin = getenv("LABLOOP_CLI");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "LABLOOP_URL='%s' '%s' %s 2>&1", dmn.url,
             bin && *bin ? bin : "labloop", args);
    return h_run(cmd, out, sizeof out);
}

static size_t lines_of(const char *path)
{
    json_t *arr = wire_read(path);
    size_t n = json_array_size(arr);
    json_decref(arr);
    return n;
}

/* The number of lines of id's file once everything recorded so far is in it. */
static size_t settled_lines(const char *id, const char *path)
{
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(20)) {
        json_t *doc = inst(id);
        json_int_t pending =
            json_integer_value(json_object_get(json_object_get(doc, "record"), "pending_bytes"));
        json_decref(doc);
        if (pending == 0)
            return lines_of(path);
    }
    fail_msg("%s: the recording never caught up", id);
    return 0;
}

static void test_tty_recorded(void **state)
{
    (void)state;
    wait_state("reader1", "idle");
    json_t *doc = inst("reader1");
    json_t *rec = json_object_get(doc, "record");
    char path[512];
    wire_path("reader1", path, sizeof path);
    assert_true(json_is_true(json_object_get(rec, "on")));
    assert_string_equal(s_of(rec, "path"), path);
    json_decref(doc);
    json_t *res = act("reader1", "{\"action\":\"status\"}");
    double temp =
        json_number_value(json_object_get(json_object_get(res, "result"), "temperature_c"));
    json_decref(res);
    settled_lines("reader1", path);
    json_t *arr = wire_read(path);
    json_t *h = json_array_get(arr, 0);
    assert_int_equal(json_integer_value(json_object_get(h, "labloop_wire")), 1);
    assert_string_equal(s_of(h, "id"), "reader1");
    assert_string_equal(s_of(h, "driver"), "biotek-synergy");
    assert_string_equal(s_of(h, "transport"), "tty"); /* a pty: libserialport gives way */
    json_t *first = json_array_get(arr, 1);
    assert_string_equal(s_of(first, "d"), "ev");
    assert_string_equal(s_of(first, "ev"), "open");
    /* Every tx/rx is non-empty even-length lower-case hex, and an rx follows a tx. */
    int seen_tx = 0, rx_after_tx = 0;
    double t_prev = 0;
    for (size_t i = 1; i < json_array_size(arr); i++) {
        json_t *e = json_array_get(arr, i);
        const char *d = s_of(e, "d"), *hex = s_of(e, "hex");
        double t = json_number_value(json_object_get(e, "t"));
        assert_true(t >= t_prev); /* in order, on the lab clock */
        t_prev = t;
        assert_true(strlen(s_of(e, "wall")) == 24);
        if (strcmp(d, "tx") && strcmp(d, "rx"))
            continue;
        size_t n = strlen(hex);
        assert_true(n > 0 && n % 2 == 0 && strspn(hex, "0123456789abcdef") == n);
        seen_tx |= strcmp(d, "tx") == 0;
        rx_after_tx |= seen_tx && strcmp(d, "rx") == 0;
    }
    assert_true(rx_after_tx);
    /* The temperature the reader reported is the one in the last reply recorded as received
     * (ACK, digits, ETX). */
    char rx[4096];
    size_t n = 0;
    for (size_t i = 1; i < json_array_size(arr); i++) {
        json_t *e = json_array_get(arr, i);
        const char *hex = s_of(e, "hex");
        for (size_t k = 0; strcmp(s_of(e, "d"), "rx") == 0 && hex[k] && n < sizeof rx; k += 2)
            rx[n++] = (char)strtol((char[]){hex[k], hex[k + 1], 0}, NULL, 16);
    }
    const char *ack = NULL, *etx = NULL;
    for (size_t i = 0; i < n; i++)
        if (rx[i] == 0x06)
            ack = rx + i;
    if (ack)
        etx = memchr(ack, 0x03, (size_t)(rx + n - ack));
    double seen = -1;
    if (!ack || !etx ||
        biotek_parse_temperature(ack + 1, (size_t)(etx - ack - 1), &seen) != LAB_OK ||
        fabs(round(seen * 100) / 100 - temp) > 1e-9)
        fail_msg("temperature %.2f is not the last reply received (%.5f)", temp, seen);
    json_decref(arr);
}

/* The first word of a read's answer PDU (03 02 HH LL). */
static long rsp_word(json_t *e)
{
    const char *hex = s_of(e, "hex");
    if (strncmp(hex, "03", 2) != 0 && strncmp(hex, "04", 2) != 0)
        return -1;
    return strtol((char[]){hex[4], hex[5], hex[6], hex[7], 0}, NULL, 16);
}

/* Each req is answered by a rsp of its function (or its exception) for the same unit; the set
 * point written (06 AAAA VVVV, answered by its echo) is the word a later read of AAAA returns. */
static void modbus_check(json_t *arr, long *wval, long *readback)
{
    const char *wreg = NULL;
    *wval = *readback = -1;
    for (size_t i = 1; i < json_array_size(arr); i++) {
        json_t *e = json_array_get(arr, i);
        if (strcmp(s_of(e, "d"), "req") != 0)
            continue;
        json_t *a = json_array_get(arr, i + 1);
        if (!a)
            break; /* its answer is not written yet */
        assert_string_equal(s_of(a, "d"), "rsp");
        assert_int_equal(json_integer_value(json_object_get(e, "unit")), 1);
        assert_int_equal(json_integer_value(json_object_get(a, "unit")), 1);
        const char *q = s_of(e, "hex"), *r = s_of(a, "hex");
        assert_true(strncmp(q, r, 2) == 0);
        if (strncmp(q, "06", 2) == 0) { /* 06 AAAA VVVV, answered by its echo */
            wreg = q + 2;
            *wval = strtol((char[]){q[6], q[7], q[8], q[9], 0}, NULL, 16);
            assert_string_equal(r, q);
        } else if (strncmp(q, "10", 2) == 0 && strncmp(q + 6, "000102", 6) == 0) {
            /* 10 AAAA 0001 02 VVVV, answered by 10 AAAA 0001 */
            wreg = q + 2;
            *wval = strtol((char[]){q[12], q[13], q[14], q[15], 0}, NULL, 16);
            assert_int_equal(strlen(r), 10);
            assert_true(strncmp(r, q, 10) == 0);
        } else if (wreg && strncmp(q, "03", 2) == 0 && strncmp(q + 2, wreg, 4) == 0) {
            *readback = rsp_word(a);
        }
    }
}

static void test_modbus_recorded(void **state)
{
    (void)state;
    wait_state("heat1", "idle");
    char path[512];
    wire_path("heat1", path, sizeof path);
    json_decref(
        act("heat1", "{\"action\":\"set_temperature\",\"params\":{\"temperature_c\":41.5}}"));
    json_decref(act("heat1", "{\"action\":\"status\"}"));
    long wval = -1, readback = -1;
    json_t *arr = NULL;
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(25)) {
        json_decref(arr);
        arr = wire_read(path);
        modbus_check(arr, &wval, &readback);
        if (wval >= 0 && readback == wval)
            break;
    }
    if (wval < 0 || readback != wval)
        fail_msg("no set point written and read back (%ld, %ld): %s", wval, readback,
                 json_dumps(arr, JSON_COMPACT));
    assert_string_equal(s_of(json_array_get(arr, 0), "transport"), "modbus-tcp");
    json_decref(arr);
}

/* A Modbus exception is a rsp with the function's high bit set; no answer is a timeout event. */
static void test_modbus_faults_recorded(void **state)
{
    (void)state;
    wait_state("heat1", "idle");
    char path[512];
    wire_path("heat1", path, sizeof path);
    size_t from = settled_lines("heat1", path);
    assert_int_equal(h_sim_fault(&sim, "heat1", "error", 0), 0);
    char p[128] = "/v1/instruments/heat1/actions";
    json_decref(h_api(&dmn, "POST", p, "{\"action\":\"status\"}", 502));
    json_t *arr = wire_wait(path, "rsp", NULL, from);
    json_t *exc = NULL, *req = NULL;
    for (size_t i = from; i < json_array_size(arr) && !exc; i++) {
        json_t *e = json_array_get(arr, i);
        if (strcmp(s_of(e, "d"), "rsp") == 0) {
            exc = e;
            req = json_array_get(arr, i - 1);
        }
    }
    const char *q = s_of(req, "hex"), *r = s_of(exc, "hex");
    assert_string_equal(s_of(req, "d"), "req");
    assert_int_equal(strlen(r), 4); /* function | 0x80, the exception code */
    assert_int_equal(strtol((char[]){r[0], r[1], 0}, NULL, 16),
                     strtol((char[]){q[0], q[1], 0}, NULL, 16) | 0x80);
    json_decref(arr);

    from = settled_lines("heat1", path);
    assert_int_equal(h_sim_fault(&sim, "heat1", "timeout", 0), 0);
    json_decref(h_api(&dmn, "POST", p, "{\"action\":\"status\",\"timeout_s\":1}", 504));
    arr = wire_wait(path, "ev", NULL, from);
    json_t *last_req = NULL, *ev = NULL;
    for (size_t i = from; i < json_array_size(arr) && !ev; i++) {
        json_t *e = json_array_get(arr, i);
        if (strcmp(s_of(e, "d"), "req") == 0)
            last_req = e;
        else if (strcmp(s_of(e, "ev"), "timeout") == 0)
            ev = e;
    }
    if (!ev || !last_req)
        fail_msg("no request then timeout: %s", json_dumps(arr, JSON_COMPACT));
    json_decref(arr);
    assert_int_equal(h_sim_fault(&sim, "heat1", "clear", 0), 0);
    json_decref(h_api(&dmn, "POST", p, "{\"action\":\"status\"}", 200));
}

static void test_switch_off_on(void **state)
{
    (void)state;
    wait_state("reader1", "idle");
    char path[512], p1[520];
    wire_path("reader1", path, sizeof path);
    snprintf(p1, sizeof p1, "%s.1", path);
    json_decref(act("reader1", "{\"action\":\"status\"}"));
    json_decref(wire_wait(path, "rx", NULL, 1));
    assert_int_equal(cli("record reader1 off"), 0);
    assert_non_null(strstr(out, "record off"));
    /* Everything recorded before the switch reaches the file, then nothing more. */
    json_t *doc = NULL;
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(20)) {
        json_decref(doc);
        doc = inst("reader1");
        json_t *rec = json_object_get(doc, "record");
        assert_false(json_is_true(json_object_get(rec, "on")));
        if (json_integer_value(json_object_get(rec, "pending_bytes")) == 0)
            break;
    }
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(doc, "record"), "pending_bytes")), 0);
    json_decref(doc);
    size_t before = lines_of(path);
    for (int i = 0; i < 3; i++)
        json_decref(act("reader1", "{\"action\":\"status\"}"));
    h_sleep_ms(300); /* longer than the writer's batching: anything recorded would be there */
    assert_int_equal(lines_of(path), before);

    assert_int_equal(cli("record reader1 on"), 0);
    assert_non_null(strstr(out, "record on"));
    assert_non_null(strstr(out, path));
    /* The new file is made by its first event: until then the old one stays where it is. */
    h_sleep_ms(300);
    assert_int_equal(lines_of(path), before);
    json_decref(act("reader1", "{\"action\":\"status\"}"));
    settled_lines("reader1", path);
    assert_int_equal(lines_of(p1), before); /* the first file, kept whole */
    json_t *arr = wire_wait(path, "tx", NULL, 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "labloop_wire")),
                     1);
    assert_true(json_array_size(arr) < before);
    json_decref(arr);

    assert_int_equal(cli("record reader1 sideways"), 2);
    assert_int_equal(cli("record nosuch on"), 1);
    json_decref(h_api(&dmn, "POST", "/v1/instruments/reader1/record", "{\"on\":1}", 422));
    json_decref(h_api(&dmn, "POST", "/v1/instruments/reader1/record", "[true]", 422));
    json_decref(h_api(&dmn, "POST", "/v1/instruments/reader1/record",
                      "{\"on\":true,\"path\":\"/tmp/x\"}", 422));
}

/* A manual mover puts nothing on a wire: its recording is on, and no file is made for it. */
static void test_no_wire_no_file(void **state)
{
    (void)state;
    wait_state("mover1", "idle");
    /* A confirm with no move pending is refused: the driver ran, and had nothing to send. */
    json_decref(
        h_api(&dmn, "POST", "/v1/instruments/mover1/actions", "{\"action\":\"confirm\"}", 409));
    char path[512];
    wire_path("mover1", path, sizeof path);
    json_t *doc = inst("mover1");
    json_t *rec = json_object_get(doc, "record");
    assert_true(json_is_true(json_object_get(rec, "on")));
    assert_string_equal(s_of(rec, "path"), path);
    json_decref(doc);
    settled_lines("mover1", path);
    h_sleep_ms(300); /* longer than the writer's batching: a file would be there */
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0);
    wire_path("reader1", path, sizeof path);
    assert_int_equal(stat(path, &st), 0); /* beside one that has a wire */
}

static void test_unwritable_path(void **state)
{
    (void)state;
    wait_state("inc1", "idle"); /* the instrument runs without its recording */
    json_t *doc = inst("inc1");
    json_t *rec = json_object_get(doc, "record");
    assert_false(json_is_true(json_object_get(rec, "on")));
    assert_non_null(strstr(s_of(rec, "error"), "plain/x.wire: Not a directory"));
    json_decref(doc);
    assert_true(h_file_count(dmn.log, "instrument=inc1 record: cannot record to") >= 1);
    /* Turning it on again is refused with the same reason; the daemon answers on. */
    json_t *p = h_api(&dmn, "POST", "/v1/instruments/inc1/record", "{\"on\":true}", 503);
    char *text = json_dumps(p, JSON_COMPACT);
    assert_non_null(strstr(text, "Not a directory"));
    free(text);
    json_decref(p);
    json_decref(h_api(&dmn, "GET", "/healthz", NULL, 200));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tty_recorded),           cmocka_unit_test(test_modbus_recorded),
        cmocka_unit_test(test_modbus_faults_recorded), cmocka_unit_test(test_switch_off_on),
        cmocka_unit_test(test_unwritable_path),        cmocka_unit_test(test_no_wire_no_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
