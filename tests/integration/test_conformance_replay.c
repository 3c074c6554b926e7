/* Conformance of labloopd's drivers to recordings built from independent sources
 * (tests/fixtures/wire/, converted by convert.py): labloop-sim --replay plays each instrument,
 * labloopd drives it through its HTTP actions, and every request the driver sends must be one
 * the recording answers. The replay never makes a reply up: a request no source shows goes
 * unanswered, and the test asserts exactly which ones do. A request the driver cannot get past
 * without (the STAR's C0DI, the Liconic's error flag, the CN7500's output 1) is answered by the
 * test itself, on a relay between labloopd and the replay, so that the actions behind it run
 * against the recording.
 *   BioTek: PyLabRobot pylabrobot/legacy/plate_reading/agilent/biotek_tests.py at 598b58ffb,
 *           test_setup, test_get_serial_number, test_get_current_temperature (23.6 degC) and
 *           test_read_absorbance (580 nm, expected_data; the plate cellvis_96_wellplate_350uL_Fb,
 *           whose geometry the reader is configured with here). Nothing unseen.
 *   CN7500: minimalmodbus tests/test_minimalmodbus.py at 785262db5f, "Recorded data from
 *           OmegaCN7500", slave 10. Answered by the test: output 1 (0x1012), which status reads
 *           last. Nothing unseen.
 *   STAR:   PyLabRobot .../hamilton/STAR_tests.py at 598b58ffb, recorded as USB transfers (no CR
 *           LF) and replayed on a pty, where the driver ends each command with CR LF. Answered by
 *           the test: C0DI. Unseen: labloop's dispense and its drop into the waste.
 *   Liconic: PyLabRobot pylabrobot/legacy/storage/liconic/liconic_backend.py and
 *           liconic_backend_tests.py at 598b58ffb. Answered by the test: the error flag (RD
 *           1814). Unseen: the handler's error code (RD DM200) that status reads. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>
#include <cmocka.h>
#include "tests/harness/harness.h"

#define WAIT_MS 20000

static h_sim_t sim;
static h_daemon_t dmn;
static char dir[256]; /* the ptys */

/* ---- the one request no source shows, answered by the test ----
 * Between labloopd and the replay of a byte instrument sits a relay on a pty pair of its own: it
 * passes every request to the replay and every reply back, except the requests that begin with
 * `gap`, which it answers itself (and counts). Everything else labloopd sends must then be in the
 * recording; the replay reports what is not. The relay's answers are the test's, never part of a
 * fixture: the form the source's own code accepts as success (PyLabRobot's check_fw_string_error
 * for C0DI; "0" for the Liconic's error flag, which _wait_ready takes "1" to mean an error). */
typedef struct relay {
    const char *id;
    const char *term; /* what ends a request from labloopd */
    const char *gap;  /* the requests answered here begin with it */
    void (*answer)(const char *req, size_t len, char *out, size_t cap);
    int host, host_slave, dev;
    char buf[65536];
    size_t len;
    atomic_int answered, stop;
    pthread_t th;
} relay_t;

static void star_answer(const char *req, size_t len, char *out, size_t cap)
{
    /* "C0DIid0002...": the command and its id, er00/00, the link's CR LF */
    snprintf(out, cap, "%.10ser00/00\r\n", len >= 10 ? req : "C0DIid0000");
}

static void liconic_answer(const char *req, size_t len, char *out, size_t cap)
{
    (void)req, (void)len;
    snprintf(out, cap, "0\r\n");
}

static relay_t relays[2] = {
    {.id = "star1", .term = "\r\n", .gap = "C0DI", .answer = star_answer},
    {.id = "stx1", .term = "\r", .gap = "RD 1814\r", .answer = liconic_answer},
};

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void relay_host(relay_t *r)
{
    ssize_t n = read(r->host, r->buf + r->len, sizeof r->buf - r->len);
    if (n <= 0)
        return;
    r->len += (size_t)n;
    size_t tl = strlen(r->term);
    for (;;) {
        char *end = memmem(r->buf, r->len, r->term, tl);
        if (!end)
            break;
        size_t m = (size_t)(end - r->buf) + tl;
        if (m >= strlen(r->gap) && memcmp(r->buf, r->gap, strlen(r->gap)) == 0) {
            char out[128];
            r->answer(r->buf, m, out, sizeof out);
            write_all(r->host, out, strlen(out));
            atomic_fetch_add(&r->answered, 1);
        } else {
            write_all(r->dev, r->buf, m);
        }
        memmove(r->buf, r->buf + m, r->len - m);
        r->len -= m;
    }
    if (r->len == sizeof r->buf)
        r->len = 0; /* no request is this long: labloopd is not speaking the protocol */
}

static void *relay_run(void *arg)
{
    relay_t *r = arg;
    while (!atomic_load(&r->stop)) {
        struct pollfd p[2] = {{.fd = r->host, .events = POLLIN}, {.fd = r->dev, .events = POLLIN}};
        if (poll(p, 2, 50) <= 0)
            continue;
        if (p[0].revents & POLLIN)
            relay_host(r);
        if (p[1].revents & POLLIN) {
            char b[4096];
            ssize_t n = read(r->dev, b, sizeof b);
            if (n > 0)
                write_all(r->host, b, (size_t)n);
        }
    }
    return NULL;
}

/* The relay's pty for labloopd at dir/ID.host, the replay's pty at dir/ID. */
static int relay_start(relay_t *r)
{
    char dev[300], link[300];
    struct termios t;
    snprintf(dev, sizeof dev, "%s/%s", dir, r->id);
    snprintf(link, sizeof link, "%s/%s.host", dir, r->id);
    if ((r->dev = h_tty_open(dev, WAIT_MS)) < 0 ||
        openpty(&r->host, &r->host_slave, NULL, NULL, NULL) != 0)
        return -1;
    /* the slave stays open here too, so the pty never hangs up between labloopd's opens */
    tcgetattr(r->host_slave, &t);
    cfmakeraw(&t);
    tcsetattr(r->host_slave, TCSANOW, &t);
    if (symlink(ttyname(r->host_slave), link) != 0)
        return -1;
    return pthread_create(&r->th, NULL, relay_run, r) == 0 ? 0 : -1;
}

static void relay_stop(relay_t *r)
{
    if (r->host <= 0)
        return;
    atomic_store(&r->stop, 1);
    pthread_join(r->th, NULL);
    close(r->host);
    close(r->host_slave);
    close(r->dev);
}

/* The CN7500 over Modbus TCP: the relay listens for labloopd, passes each MBAP frame to the
 * replay and back, except the output 1 read (unit 10, 03 10 12 00 01), which it answers itself
 * with a value of the test's own (34.3 %), under the request's transaction id. */
#define MB_OUT1_RAW 343
static const uint8_t mb_out1_req[] = {10, 0x03, 0x10, 0x12, 0x00, 0x01};

typedef struct mb_relay {
    int listen_fd, port, sim_port;
    uint8_t buf[4096];
    size_t len;
    atomic_int answered, stop;
    pthread_t th;
} mb_relay_t;

static mb_relay_t mbr = {.listen_fd = -1};

static int tcp_connect(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Whole frames from labloopd: answered here, or passed on. */
static void mb_from_host(mb_relay_t *r, int host, int dev)
{
    while (r->len >= 8) {
        size_t flen = 6 + ((size_t)r->buf[4] << 8 | r->buf[5]);
        if (flen > sizeof r->buf || flen < 8) {
            r->len = 0; /* not Modbus TCP: nothing to relay */
            return;
        }
        if (r->len < flen)
            return;
        if (flen - 6 == sizeof mb_out1_req && memcmp(r->buf + 6, mb_out1_req, flen - 6) == 0) {
            uint8_t a[11] = {r->buf[0],        r->buf[1],         0, 0, 0, 5, 10, 0x03, 2,
                             MB_OUT1_RAW >> 8, MB_OUT1_RAW & 0xff};
            write_all(host, (const char *)a, sizeof a);
            atomic_fetch_add(&r->answered, 1);
        } else {
            write_all(dev, (const char *)r->buf, flen);
        }
        memmove(r->buf, r->buf + flen, r->len - flen);
        r->len -= flen;
    }
}

static void *mb_relay_run(void *arg)
{
    mb_relay_t *r = arg;
    int host = -1, dev = -1;
    while (!atomic_load(&r->stop)) {
        struct pollfd p[2] = {{.fd = host < 0 ? r->listen_fd : host, .events = POLLIN},
                              {.fd = dev, .events = POLLIN}};
        if (poll(p, dev < 0 ? 1 : 2, 50) <= 0)
            continue;
        if (host < 0) { /* labloopd connects (again): a connection to the replay of its own */
            host = accept(r->listen_fd, NULL, NULL);
            dev = host < 0 ? -1 : tcp_connect(r->sim_port);
            r->len = 0;
            if (host >= 0 && dev < 0) {
                close(host);
                host = -1;
            }
            continue;
        }
        ssize_t n = 0;
        if (p[0].revents & (POLLIN | POLLHUP)) {
            n = read(host, r->buf + r->len, sizeof r->buf - r->len);
            if (n > 0) {
                r->len += (size_t)n;
                mb_from_host(r, host, dev);
            }
        }
        if (n >= 0 && (p[1].revents & (POLLIN | POLLHUP))) {
            char b[4096];
            n = read(dev, b, sizeof b);
            if (n > 0)
                write_all(host, b, (size_t)n);
        }
        if (n <= 0 && (p[0].revents | p[1].revents) & (POLLIN | POLLHUP)) {
            close(host);
            close(dev);
            host = dev = -1;
        }
    }
    if (host >= 0)
        close(host);
    if (dev >= 0)
        close(dev);
    return NULL;
}

static int mb_relay_start(mb_relay_t *r, int sim_port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof a;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->sim_port = sim_port;
    r->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (r->listen_fd < 0 || bind(r->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(r->listen_fd, 4) != 0 || getsockname(r->listen_fd, (struct sockaddr *)&a, &al))
        return -1;
    r->port = ntohs(a.sin_port);
    return pthread_create(&r->th, NULL, mb_relay_run, r) == 0 ? 0 : -1;
}

static void mb_relay_stop(mb_relay_t *r)
{
    if (r->listen_fd < 0)
        return;
    atomic_store(&r->stop, 1);
    pthread_join(r->th, NULL);
    close(r->listen_fd);
}

static int setup(void **state)
{
    char sim_sections[4096], sections[4096], fx[4][600];
    static const char *const names[] = {"biotek_synergy", "cn7500_minimalmodbus", "star_liquid",
                                        "liconic_stx"};
    if (h_tempdir("labconf", dir, sizeof dir))
        return -1;
    int mb = h_free_port();
    /* No polling: each request is one the test asks for. The reader is given the geometry of
     * the plate PyLabRobot's test read (its 'y' parameter in the recording); the STAR the deck
     * of STAR_tests.py (tip rack A1 at 117.9/241.8 mm, plate A1 at 298.3/145.7 mm). */
    static const char common[] =
        "[instrument reader1]\ndriver = biotek-synergy\nport = %s/reader1\npoll_s = 0\n"
        "plate_size_x_mm = 127.6\nplate_size_y_mm = 85.75\nplate_height_mm = 13.83\n"
        "plate_a1_x_mm = 14.3\nplate_a1_y_mm = 11.39\nplate_pitch_mm = 9\n"
        "[instrument cn7500]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
        "map = omega-cn7500\nunit = 10\npoll_s = 0\n"
        "[instrument star1]\ndriver = hamilton-star\nport = %s/star1%s\n"
        "tip_a1_x = 1179\ntip_a1_y = 2418\nplate_a1_x = 2983\nplate_a1_y = 1457\n"
        "move_timeout_s = 5\n"
        "[instrument stx1]\ndriver = liconic-stx\nport = %s/stx1%s\npoll_s = 0\n"
        "rack_type = liconic_rack_17mm_22\n";
    if (mb_relay_start(&mbr, mb))
        return -1;
    snprintf(sim_sections, sizeof sim_sections, common, dir, mb, dir, "", dir, "");
    snprintf(sections, sizeof sections, common, dir, mbr.port, dir, ".host", dir, ".host");
    for (int i = 0; i < 4; i++)
        snprintf(fx[i], sizeof fx[i], "%s/tests/fixtures/wire/%s.jsonl", LAB_SOURCE_DIR_T,
                 names[i]);
    const char *args[] = {"--replay", fx[0],      "--replay", fx[1], "--replay",
                          fx[2],      "--replay", fx[3],      NULL};
    if (h_sim_start_args(&sim, sim_sections, args))
        return -1;
    for (int i = 0; i < 2; i++)
        if (relay_start(&relays[i]))
            return -1;
    return h_daemon_start(&dmn, NULL, NULL, sections);
}

static int teardown(void **state)
{
    h_daemon_destroy(&dmn);
    for (int i = 0; i < 2; i++)
        relay_stop(&relays[i]);
    mb_relay_stop(&mbr);
    h_sim_stop(&sim);
    h_rmtree(dir);
    return 0;
}

static json_t *act(const char *id, const char *body, int *status)
{
    char path[128], *resp = NULL;
    snprintf(path, sizeof path, "/v1/instruments/%s/actions", id);
    *status = h_http(dmn.url, "POST", path, "Content-Type: application/json", body, &resp);
    json_t *doc = json_loads(resp ? resp : "null", JSON_DECODE_ANY, NULL);
    if (*status != 200)
        fprintf(stderr, "POST %s %s: %d %s\n", path, body, *status, resp ? resp : "");
    free(resp);
    return doc;
}

static json_t *get_inst(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/instruments/%s", id);
    return h_api(&dmn, "GET", path, NULL, 200);
}

static bool wait_state(const char *id, const char *state, int ms)
{
    for (long long end = h_now_ms() + ms; h_now_ms() < end; h_sleep_ms(50)) {
        json_t *doc = get_inst(id);
        const char *s = json_string_value(json_object_get(doc, "state"));
        bool ok = s && strcmp(s, state) == 0;
        json_decref(doc);
        if (ok)
            return true;
    }
    fprintf(stderr, "%s never %s\n", id, state);
    return false;
}

static double num(json_t *doc, const char *key)
{
    json_t *v = json_object_get(json_object_get(doc, "result"), key);
    return json_is_number(v) ? json_number_value(v) : -1e9;
}

static const char *detail(json_t *doc)
{
    const char *d = json_string_value(json_object_get(doc, "detail"));
    return d ? d : "";
}

/* The replay's reports of requests it never saw from this instrument (0: none). */
static int unseen(const char *id)
{
    char needle[96];
    snprintf(needle, sizeof needle, "%s: first request the recording never saw", id);
    int n = h_sim_log_count(&sim, needle);
    snprintf(needle, sizeof needle, "%s: another request the recording never saw", id);
    return n + h_sim_log_count(&sim, needle);
}

/* Each check is made and reported, so one run shows every action a recording does not cover. */
static int failures;

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "not as recorded: %s\n", what);
        failures++;
    }
}

/* set_temperature, stop and run are answered as recorded; status reads PV (25.0), SV (325.8) and
 * the run bit (1, function 02) as recorded, and output 1 (0x1012), which minimalmodbus's
 * recording never reads, from the relay (34.3 %, the test's own value). */
static void test_cn7500(void **state)
{
    int st;
    failures = 0;
    assert_true(wait_state("cn7500", "idle", WAIT_MS));
    json_t *a =
        act("cn7500", "{\"action\":\"set_temperature\",\"params\":{\"temperature_c\":20}}", &st);
    check(st == 200 && num(a, "setpoint_c") == 20.0, "set_temperature 20 answered");
    json_decref(a);
    a = act("cn7500", "{\"action\":\"stop\"}", &st);
    check(st == 200 && num(a, "running") == 0, "stop answered");
    json_decref(a);
    a = act("cn7500", "{\"action\":\"run\"}", &st);
    check(st == 200 && num(a, "running") == 1, "run answered");
    json_decref(a);
    check(atomic_load(&mbr.answered) == 0, "set_temperature, stop, run: nothing from the test");

    a = act("cn7500", "{\"action\":\"status\"}", &st);
    check(st == 200, "status answered");
    check(num(a, "temperature_c") == 25.0, "status temperature_c 25.0 (recorded)");
    check(num(a, "setpoint_c") == 325.8, "status setpoint_c 325.8 (recorded)");
    check(num(a, "running") == 1, "status running 1 (recorded)");
    check(num(a, "output1_pct") == MB_OUT1_RAW / 10.0, "status output1_pct (the test's)");
    json_decref(a);
    check(atomic_load(&mbr.answered) == 1, "status: output 1 read once, from the test");
    check(unseen("cn7500") == 0, "every other request recorded");
    assert_int_equal(failures, 0);
}

static void test_biotek(void **state)
{
    int st;
    failures = 0;
    assert_true(wait_state("reader1", "idle", WAIT_MS));
    json_t *info = get_inst("reader1");
    json_t *inst = json_object_get(info, "info");
    /* test_setup's version reply, test_get_serial_number's */
    check(json_is_string(json_object_get(inst, "version")) &&
              strcmp(json_string_value(json_object_get(inst, "version")), "1.04") == 0,
          "version 1.04");
    check(json_is_string(json_object_get(inst, "serial_number")) &&
              strcmp(json_string_value(json_object_get(inst, "serial_number")), "00000000") == 0,
          "serial number 00000000");
    json_decref(info);
    json_t *a = act("reader1", "{\"action\":\"status\"}", &st);
    check(st == 200, "status answered");
    check(num(a, "temperature_c") == 23.6, "status temperature_c 23.6");
    json_decref(a);
    a = act("reader1", "{\"action\":\"read_absorbance\",\"params\":{\"wavelength_nm\":580}}", &st);
    check(st == 200, "read_absorbance answered");
    json_t *values = json_object_get(json_object_get(a, "result"), "values");
    check(json_object_size(values) == 96, "96 values");
    /* biotek_tests.py test_read_absorbance's expected_data */
    check(json_real_value(json_object_get(values, "A1")) == 0.1917, "A1 0.1917");
    check(json_real_value(json_object_get(values, "B1")) == 0.0802, "B1 0.0802");
    check(json_real_value(json_object_get(values, "H12")) == 0.1316, "H12 0.1316");
    check(num(a, "temperature_c") == 23.6, "read_absorbance temperature_c 23.6");
    json_decref(a);
    check(unseen("reader1") == 0, "every request recorded");
    assert_int_equal(failures, 0);
}

/* The STAR on a pty against its USB recording (the link's CR LF tolerated), C0DI answered by
 * the relay: tips picked up on two channels and 107.2 uL aspirated from A1 exactly as
 * test_tip_pickup_01 and test_multi_channel_aspiration send them. The dispense is labloop's
 * (dm2, ds1200, no transport air or blow-out), not the jet dispense with blow-out that
 * test_multi_channel_dispense records (dm1, ds1800, ta050, ba0300): unseen from "dm" on. The
 * tips go to the waste, where STAR_tests.py's only recorded drop puts them back in the rack:
 * unseen too. Those two requests and nothing else. */
static void test_star(void **state)
{
    int st;
    failures = 0;
    assert_true(wait_state("star1", "idle", WAIT_MS));
    check(atomic_load(&relays[0].answered) == 1, "C0DI answered by the test, once");
    check(unseen("star1") == 0, "connect: C0TT as recorded");
    json_decref(act("star1", "{\"action\":\"pick_up_tips\",\"params\":{\"channels\":2}}", &st));
    check(st == 200, "pick_up_tips answered");
    json_t *a = act(
        "star1", "{\"action\":\"aspirate\",\"params\":{\"volume_ul\":107.2,\"well\":\"A1\"}}", &st);
    check(st == 200 && num(a, "volume_ul") == 107.2, "aspirate answered");
    json_decref(a);
    check(unseen("star1") == 0, "pick_up_tips, aspirate: every request recorded");

    a = act("star1", "{\"action\":\"dispense\",\"params\":{\"volume_ul\":107.2,\"well\":\"A1\"}}",
            &st);
    check(st == 504, "dispense: no answer");
    json_decref(a);
    check(h_sim_log_count(&sim, "star1: first request the recording never saw (492 bytes): "
                                "\"C0DSid") == 1 &&
              h_sim_log_count(&sim, "it differs at byte offset 12 from the nearest recorded "
                                    "request (line 14, 490 bytes): \"C0DSid0001dm1 1 1&") == 1,
          "dispense: C0DS unseen from its dispense mode (dm) on");
    json_decref(act("star1", "{\"action\":\"drop_tips\"}", &st));
    check(st != 200, "drop_tips: no answer");
    check(h_sim_log_count(&sim, "star1: another request the recording never saw (84 bytes): "
                                "\"C0TRid") == 1,
          "drop_tips: C0TR into the waste unseen");
    check(unseen("star1") == 2, "nothing else unseen");
    assert_int_equal(failures, 0);
}

/* The Liconic against its recording, the error flag (RD 1814) answered by the relay: the
 * handshake, a plate loaded into slot 1 of cassette 1 and unloaded from it with
 * take_in_plate's and fetch_plate_to_loading_tray's commands (DM0 1, DM23 788, DM25 22, DM5 1,
 * ST 1904/1905, RD 1915, ST 1903), every one a recorded request. status reads the climate as
 * recorded (37.0 degC and its set point 37.5, 90 %RH, 5 % CO2), then the error flag, then always
 * the handler's error code (RD DM200), whose reply no source shows: unseen, and status times out.
 */
static void test_liconic(void **state)
{
    int st;
    failures = 0;
    assert_true(wait_state("stx1", "idle", WAIT_MS));
    check(unseen("stx1") == 0, "connect: BREAK, CR, ST 1801, RD 1915 as recorded");
    check(atomic_load(&relays[1].answered) == 1, "connect: the error flag read once");
    json_decref(act("stx1", "{\"action\":\"load\",\"params\":{\"cassette\":1,\"slot\":1}}", &st));
    check(st == 200, "load answered");
    json_decref(act("stx1", "{\"action\":\"unload\",\"params\":{\"cassette\":1,\"slot\":1}}", &st));
    check(st == 200, "unload answered");
    check(unseen("stx1") == 0, "load, unload: every request recorded");
    /* after ST 1904/1905 and after ST 1903 (labloop waits for the handler after terminating
     * the access too; its RD 1915 is a recorded request, repeated) */
    check(atomic_load(&relays[1].answered) == 5,
          "load, unload: the error flag read after each handling step");

    json_t *a = act("stx1", "{\"action\":\"status\"}", &st);
    check(st == 504 && strstr(detail(a), "RD DM200") != NULL, "status: no answer to RD DM200");
    json_decref(a);
    check(unseen("stx1") == 1 &&
              h_sim_log_count(&sim, "stx1: first request the recording never saw (9 bytes): "
                                    "\"RD DM200\\r\"") == 1,
          "status: RD DM200 the one request unseen");
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cn7500),
        cmocka_unit_test(test_biotek),
        cmocka_unit_test(test_star),
        cmocka_unit_test(test_liconic),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
