/* labloop-sim as a process, played against from the daemon's side with blocking reads and writes
 * on its ptys, a unix control socket and libmodbus: Liconic handshake quirk and a plate load, a
 * STAR pipetting sequence (ids, out-of-order replies, er## errors), a BioTek read whose values
 * follow the dispenses, a CN7500 whose PV follows SV, every fault kind observed and cleared, and
 * a clean stop on TERM. */
#include <errno.h>
#include <fcntl.h>
#include <modbus.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <cmocka.h>
#include "protocols/biotek.h"
#include "protocols/liconic.h"
#include "protocols/star.h"
#include "tests/harness/star_plr.h"
#include "tests/harness/harness.h"

static char dir[512], inc_path[600], star_path[600], reader_path[600], ctl_path[600];
static int mb_port;
static pid_t pid = -1;

static int wait_path(const char *p, int present)
{
    struct stat st;
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(20))
        if ((lstat(p, &st) == 0) == present)
            return 0;
    return -1;
}

static int open_tty(const char *p)
{
    if (wait_path(p, 1))
        return -1;
    int fd = open(p, O_RDWR | O_NOCTTY);
    if (fd >= 0) {
        struct termios t;
        tcgetattr(fd, &t);
        cfmakeraw(&t);
        tcsetattr(fd, TCSANOW, &t);
    }
    return fd;
}

/* Reads until `end` byte (included); returns the length, or -1 when nothing complete arrives
 * within timeout_ms. */
static int read_until(int fd, char *buf, size_t cap, char end, int timeout_ms)
{
    size_t n = 0;
    long long deadline = h_now_ms() + timeout_ms;
    while (n + 1 < cap) {
        struct pollfd p = {fd, POLLIN, 0};
        long long left = deadline - h_now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        if (read(fd, buf + n, 1) != 1)
            return -1;
        if (buf[n++] == end)
            break;
    }
    buf[n] = 0;
    return (int)n;
}

static void send_str(int fd, const char *s)
{
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

static void ctl(const char *req, char *reply, size_t cap)
{
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    assert_true(strlen(ctl_path) < sizeof a.sun_path);
    memcpy(a.sun_path, ctl_path, strlen(ctl_path) + 1);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    send_str(s, req);
    send_str(s, "\n");
    assert_true(read_until(s, reply, cap, '\n', 10000) > 0);
    close(s);
}

static void ctl_ok(const char *fmt, ...)
{
    char req[512], reply[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(req, sizeof req, fmt, ap);
    va_end(ap);
    ctl(req, reply, sizeof reply);
    if (!strstr(reply, "\"ok\":true"))
        fail_msg("control %s -> %s", req, reply);
}

static int setup(void **state)
{
    assert_int_equal(h_tempdir("labsim", dir, sizeof dir), 0);
    snprintf(inc_path, sizeof inc_path, "%s/inc1", dir);
    snprintf(star_path, sizeof star_path, "%s/star1", dir);
    snprintf(reader_path, sizeof reader_path, "%s/reader1", dir);
    snprintf(ctl_path, sizeof ctl_path, "%s/ctl.sock", dir);
    mb_port = h_free_port();
    char ini[700];
    snprintf(ini, sizeof ini, "%s/labloop.ini", dir);
    FILE *f = fopen(ini, "w");
    assert_non_null(f);
    fprintf(f,
            "[labloop]\ntime_scale = 50\nsim_seed = 7\nsim_noise = 0.001\n"
            "[database]\nurl = ignored by the simulator\n"
            "[instrument inc1]\ndriver = liconic-stx\nrack_type = liconic_rack_17mm_22\n"
            "cassettes = 2\nport = %s\nsim_plate = P1\n"
            "sim_step_seconds = 1\n"
            "[instrument star1]\ndriver = hamilton-star\nport = %s\nsim_plate = P1\n"
            "sim_reagents = substrate,inhibitor\nsim_step_seconds = 1\n"
            "[instrument reader1]\ndriver = biotek-synergy\nport = %s\nsim_plate = P1\n"
            "[instrument heat1]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
            "map = omega-cn7500\nunit = 1\nsim_tau = 20\n",
            inc_path, star_path, reader_path, mb_port);
    fclose(f);
    const char *bin = getenv("LABLOOP_SIM");
    assert_non_null(bin);
    pid = fork();
    if (pid == 0) {
        execl(bin, bin, "-c", ini, "--control", ctl_path, (char *)NULL);
        _exit(127);
    }
    assert_int_equal(wait_path(ctl_path, 1), 0);
    return 0;
}

static int teardown(void **state)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        int st;
        waitpid(pid, &st, 0);
        pid = -1;
    }
    h_rmtree(dir);
    return 0;
}

/* ---- Liconic ---- */

static void lic_cmd(int fd, const liconic_cmd_t *c, char *reply, size_t cap)
{
    char buf[64];
    int n = liconic_encode_cmd(c, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(write(fd, buf, (size_t)n), n);
    assert_true(read_until(fd, reply, cap, '\n', 10000) > 0);
}

static long lic_read(int fd, const char *cmd)
{
    char reply[64];
    send_str(fd, cmd);
    assert_true(read_until(fd, reply, sizeof reply, '\n', 10000) > 0);
    liconic_reply_t r;
    assert_int_equal(liconic_parse_reply(reply, strcspn(reply, "\r\n"), &r), LAB_OK);
    assert_int_equal(r.kind, LICONIC_REPLY_VALUE);
    return r.value;
}

static void run_steps(int fd, const liconic_step_t *steps, int n)
{
    char reply[64];
    for (int i = 0; i < n; i++) {
        lic_cmd(fd, &steps[i].cmd, reply, sizeof reply);
        liconic_reply_t r;
        assert_int_equal(liconic_parse_reply(reply, strcspn(reply, "\r\n"), &r), LAB_OK);
        assert_int_not_equal(r.kind, LICONIC_REPLY_ERROR);
        if (!steps[i].poll_ready)
            continue;
        long long end = h_now_ms() + 10000;
        while (r.value != 1 && h_now_ms() < end) {
            h_sleep_ms(10);
            lic_cmd(fd, &steps[i].cmd, reply, sizeof reply);
            assert_int_equal(liconic_parse_reply(reply, strcspn(reply, "\r\n"), &r), LAB_OK);
        }
        assert_int_equal(r.value, 1);
    }
}

static void test_liconic(void **state)
{
    int fd = open_tty(inc_path);
    assert_true(fd >= 0);
    char reply[256];
    send_str(fd, "ST 1801\r");
    assert_true(read_until(fd, reply, sizeof reply, '\n', 10000) > 0);
    assert_string_equal(reply, "E1\r\n"); /* before the handshake */
    liconic_step_t steps[LICONIC_SEQ_MAX];
    int n = liconic_seq_open(steps, LICONIC_SEQ_MAX);
    assert_true(n > 0);
    send_str(fd, "CR\r");
    assert_true(read_until(fd, reply, sizeof reply, '\n', 10000) > 0);
    assert_string_equal(reply, "CC\r\n");
    run_steps(fd, steps + 1, n - 1);
    assert_int_equal(lic_read(fd, "RD 1813\r"), 1); /* plate on the transfer station */
    /* rack_type = liconic_rack_17mm_22: 788 steps, 22 slots (PyLabRobot racks.py, 598b58ffb) */
    liconic_site_t site = {.cassette = 2, .slot = 5, .pitch_steps = 788, .slots = 22};
    n = liconic_seq_load(&site, steps, LICONIC_SEQ_MAX);
    assert_true(n > 0);
    run_steps(fd, steps, n);
    ctl("{\"plate\":\"P1\"}", reply, sizeof reply);
    assert_non_null(strstr(reply, "\"position\":\"inc1:2/5\""));
    assert_int_equal(lic_read(fd, "RD 1813\r"), 0);
    /* Climate: the actual temperature approaches a new set point. */
    liconic_cmd_t set;
    assert_int_equal(liconic_climate_set_cmd(LICONIC_CLIMATE_TEMPERATURE, 37.0, &set), LAB_OK);
    lic_cmd(fd, &set, reply, sizeof reply);
    long t = 0;
    for (long long end = h_now_ms() + 20000; h_now_ms() < end && t < 300; h_sleep_ms(50))
        t = lic_read(fd, "RD DM982\r");
    assert_true(t >= 300);

    /* Busy is the ready relay 1915 = 0, never E3 (the controller's hardware error): a handling
     * flag set while a step runs is accepted and taken after it. */
    send_str(fd, "ST 1901\r");
    assert_true(read_until(fd, reply, sizeof reply, '\n', 10000) > 0);
    assert_string_equal(reply, "OK\r\n");
    send_str(fd, "ST 1902\r");
    assert_true(read_until(fd, reply, sizeof reply, '\n', 10000) > 0);
    assert_string_equal(reply, "OK\r\n");
    assert_int_equal(lic_read(fd, "RD 1915\r"), 0);
    long ready = 0;
    for (long long end = h_now_ms() + 20000; h_now_ms() < end && ready != 1; h_sleep_ms(20))
        ready = lic_read(fd, "RD 1915\r");
    assert_int_equal(ready, 1);

    /* A transfer with another rack's pitch (DM23 in motor steps): the handler stops with its
     * error instead of going to the wrong height; the plate stays in its slot. */
    site.pitch_steps = 23; /* the millimetres once written there */
    n = liconic_seq_unload(&site, steps, LICONIC_SEQ_MAX);
    for (int i = 0; i < n && !steps[i].poll_ready; i++)
        lic_cmd(fd, &steps[i].cmd, reply, sizeof reply);
    ready = 0;
    for (long long end = h_now_ms() + 20000; h_now_ms() < end && ready != 1; h_sleep_ms(20))
        ready = lic_read(fd, "RD 1915\r");
    assert_int_equal(lic_read(fd, "RD 1814\r"), 1);
    assert_int_equal(lic_read(fd, "RD DM200\r"), 202);
    ctl("{\"plate\":\"P1\"}", reply, sizeof reply);
    assert_non_null(strstr(reply, "\"position\":\"inc1:2/5\""));
    send_str(fd, "RS 1814\r");
    assert_true(read_until(fd, reply, sizeof reply, '\n', 10000) > 0);
    site.pitch_steps = 788;

    /* error: E5 to the next command, flag 1814 and DM200 hold the handler code */
    ctl_ok("{\"instrument\":\"inc1\",\"fault\":\"error\"}");
    send_str(fd, "RD 1915\r");
    assert_true(read_until(fd, reply, sizeof reply, '\n', 10000) > 0);
    assert_string_equal(reply, "E5\r\n");
    assert_int_equal(lic_read(fd, "RD 1814\r"), 1);
    assert_int_equal(lic_read(fd, "RD DM200\r"), 7);
    send_str(fd, "RS 1814\r");
    assert_true(read_until(fd, reply, sizeof reply, '\n', 10000) > 0);
    assert_int_equal(lic_read(fd, "RD 1814\r"), 0);

    /* garbage: bytes that are no reply precede the next one */
    ctl_ok("{\"instrument\":\"inc1\",\"fault\":\"garbage\"}");
    send_str(fd, "RD 1915\r");
    int len = read_until(fd, reply, sizeof reply, '\n', 10000);
    assert_true(len > 3);
    assert_true((unsigned char)reply[0] >= 0x80);
    assert_int_equal(lic_read(fd, "RD 1915\r"), 1);

    /* timeout: no answer, then answers again after clear */
    ctl_ok("{\"instrument\":\"inc1\",\"fault\":\"timeout\"}");
    send_str(fd, "RD 1915\r");
    assert_int_equal(read_until(fd, reply, sizeof reply, '\n', 500), -1);
    ctl_ok("{\"instrument\":\"inc1\",\"fault\":\"clear\"}");
    assert_int_equal(lic_read(fd, "RD 1915\r"), 1);

    /* disconnect: the symlink goes away and comes back on clear, with a fresh handshake */
    ctl_ok("{\"instrument\":\"inc1\",\"fault\":\"disconnect\"}");
    assert_int_equal(wait_path(inc_path, 0), 0);
    close(fd);
    ctl_ok("{\"instrument\":\"inc1\",\"fault\":\"clear\"}");
    fd = open_tty(inc_path);
    assert_true(fd >= 0);
    send_str(fd, "CR\r");
    assert_true(read_until(fd, reply, sizeof reply, '\n', 10000) > 0);
    assert_string_equal(reply, "CC\r\n");
    /* and a timed disconnect comes back by itself */
    ctl_ok("{\"instrument\":\"inc1\",\"fault\":\"disconnect\",\"seconds\":5}");
    assert_int_equal(wait_path(inc_path, 0), 0);
    close(fd);
    fd = open_tty(inc_path);
    assert_true(fd >= 0);

    /* the plate incubated at 37 degC; unloading it to the transfer station ends that */
    ctl("{\"plate\":\"P1\"}", reply, sizeof reply);
    assert_null(strstr(reply, "\"incubation_degC_s\":0.0"));
    send_str(fd, "CR\r");
    assert_true(read_until(fd, reply, sizeof reply, '\n', 10000) > 0);
    assert_string_equal(reply, "CC\r\n");
    n = liconic_seq_unload(&site, steps, LICONIC_SEQ_MAX);
    assert_true(n > 0);
    run_steps(fd, steps, n);
    ctl("{\"plate\":\"P1\"}", reply, sizeof reply);
    assert_non_null(strstr(reply, "\"position\":\"transfer:inc1\""));

    ctl("{\"instrument\":\"nosuch\",\"fault\":\"timeout\"}", reply, sizeof reply);
    assert_non_null(strstr(reply, "unknown instrument"));
    ctl("not json", reply, sizeof reply);
    assert_non_null(strstr(reply, "\"ok\":false"));
    close(fd);
}

/* ---- STAR ---- */

typedef struct over {
    const char *name;
    long v;
} over_t;

/* A complete command from the specification: every parameter present, lists for channel 1 only
 * (tm 1), values from `o` or 0. */
static int star_build(const char *cmd, int id, const over_t *o, char *buf, size_t cap)
{
    const star_cmd_spec_t *spec = star_cmd_spec("C0", cmd);
    assert_non_null(spec);
    star_builder_t b;
    star_begin(&b, buf, cap, "C0", cmd, id);
    for (size_t i = 0; i < spec->n; i++) {
        long v = strcmp(spec->params[i].name, "tm") == 0 ? 1 : 0;
        for (const over_t *p = o; p && p->name; p++)
            if (strcmp(p->name, spec->params[i].name) == 0)
                v = p->v;
        if (spec->params[i].list)
            star_list(&b, spec->params[i].name, &v, 1, spec->params[i].width, 8);
        else
            star_int(&b, spec->params[i].name, v, spec->params[i].width);
    }
    return star_end(&b, 1);
}

static void star_reply(int fd, star_msg_t *m)
{
    static char line[1024];
    int n = read_until(fd, line, sizeof line, '\n', 10000);
    assert_true(n > 2);
    assert_int_equal(star_parse(line, (size_t)n - 2, m), LAB_OK);
}

static void star_do(int fd, const char *cmd, int id, const over_t *o)
{
    char buf[1024];
    int n = star_build(cmd, id, o, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(write(fd, buf, (size_t)n), n);
    static star_msg_t m;
    star_reply(fd, &m);
    assert_int_equal(m.id, id);
    assert_string_equal(m.cmd, cmd);
    assert_false(star_msg_failed(&m));
}

static void pipette(int fd, int *id, long src_xp, long xp, long yp, long tenth_ul)
{
    over_t as[] = {{"xp", src_xp}, {"yp", 1000}, {"av", tenth_ul}, {NULL, 0}};
    over_t ds[] = {{"xp", xp}, {"yp", yp}, {"dv", tenth_ul}, {NULL, 0}};
    star_do(fd, "TP", ++*id, NULL);
    star_do(fd, "AS", ++*id, as);
    star_do(fd, "DS", ++*id, ds);
    star_do(fd, "TR", ++*id, NULL);
}

/* labloop-sim takes every command string PyLabRobot sends for the operations labloop implements
 * (tests/harness/star_plr.h, from STAR_tests.py at 598b58ffb) and answers each with its id and a
 * reply check_fw_string_error accepts; a slave module is answered in its own form (er##), the
 * master's unknown command in the master's (er01/30). */
static void test_star_plr(void **state)
{
    (void)state;
    int fd = open_tty(star_path);
    assert_true(fd >= 0);
    const char *cmds[] = {PLR_TT,       PLR_DI,          PLR_TP_01, PLR_TP_56, PLR_TP_PORTRAIT,
                          PLR_TR_56,    PLR_TR_PORTRAIT, PLR_AS_1,  PLR_AS_2,  PLR_AS_56,
                          PLR_TR_WASTE, PLR_DS_1,        PLR_DS_2};
    static star_msg_t cmd, m;
    static char line[1024];
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        send_str(fd, cmds[i]);
        send_str(fd, "\r\n");
        star_reply(fd, &m);
        assert_int_equal(star_parse(cmds[i], strlen(cmds[i]), &cmd), LAB_OK);
        assert_string_equal(m.module, "C0");
        assert_string_equal(m.cmd, cmd.cmd);
        assert_int_equal(m.id, cmd.id);
        if (star_msg_failed(&m))
            fail_msg("%.40s...: er%02d/%02d", cmds[i], m.errors[0].code, m.errors[0].trace);
        assert_true(m.has_er);
    }
    /* slave modules: P1 (test_parse_slave_response_errors' form), H0 */
    const char *slave[][2] = {{"P1OQid1111\r\n", "P1OQid1111er30\r\n"},
                              {"H0QWid0042\r\n", "H0QWid0042er30\r\n"},
                              {"C0QMid1111\r\n", "C0QMid1111er01/30\r\n"}};
    for (size_t i = 0; i < 3; i++) {
        send_str(fd, slave[i][0]);
        assert_true(read_until(fd, line, sizeof line, '\n', 10000) > 0);
        assert_string_equal(line, slave[i][1]);
    }
    close(fd);
}

/* What the host writes and the reader answers, as in PyLabRobot's transcripts (repository
 * PyLabRobot/pylabrobot, commit 598b58ffb, pylabrobot/legacy/plate_reading/agilent/
 * biotek_tests.py, test_read_absorbance lines 81-86): 'y' and its geometry get ACK then a bare
 * ETX, 'D' and its definition ACK then 37 digits and ETX without ACK, 'O' "\x06" "0000" ETX. */
static void read_plate(int fd, biotek_plate_t *p, char *body, size_t cap)
{
    char buf[128];
    send_str(fd, "y");
    assert_int_equal(read_until(fd, buf, sizeof buf, BIOTEK_ACK, 10000), 1);
    /* biotek_backend.py set_plate, line 293: the documented geometry string. */
    send_str(fd, "08120112207434014351135308559127881422\x03");
    assert_int_equal(read_until(fd, buf, sizeof buf, BIOTEK_ETX, 10000), 1);
    send_str(fd, "D");
    assert_int_equal(read_until(fd, buf, sizeof buf, BIOTEK_ACK, 10000), 1);
    biotek_rect_t r = {1, 1, 8, 12};
    int n = biotek_encode_absorbance(&r, 450, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(write(fd, buf, (size_t)n), n);
    assert_true(read_until(fd, buf, sizeof buf, BIOTEK_ETX, 10000) > 0);
    assert_string_equal(buf, "0350000000000000010000000000490300000\x03");
    send_str(fd, "O");
    assert_true(read_until(fd, buf, sizeof buf, BIOTEK_ETX, 10000) > 0);
    assert_string_equal(buf, "\x06"
                             "0000\x03");
    n = read_until(fd, body, cap, BIOTEK_ETX, 10000);
    assert_true(n > 0);
    int rc = biotek_parse_body(body, (size_t)n - 1, 8, 12, p);
    if (rc != LAB_OK)
        fail_msg("body: %s at %zu", lab_strerror(rc), p->err_at);
}

static void test_star_and_reader(void **state)
{
    int fd = open_tty(star_path), rd = open_tty(reader_path);
    assert_true(fd >= 0 && rd >= 0);
    int id = 0;
    star_do(fd, "DI", ++id, NULL);
    /* 50 uL substrate (trough column 0) into A1, 10 uL into B2, 50 uL inhibitor (column 1) and
     * 50 uL substrate into C3. */
    pipette(fd, &id, 1000, 1000, 3000, 500);
    pipette(fd, &id, 1000, 1090, 2910, 100);
    pipette(fd, &id, 1090, 1180, 2820, 500);
    pipette(fd, &id, 1000, 1180, 2820, 500);

    /* an unknown command: er01/30, matched by its id */
    static star_msg_t m;
    send_str(fd, "C0QMid0777\r\n");
    star_reply(fd, &m);
    assert_int_equal(m.id, 777);
    assert_true(star_msg_failed(&m));
    assert_int_equal(m.errors[0].trace, 30);

    /* two pending commands: replies carry their ids, and some pair comes back out of order */
    int swapped = 0;
    for (int i = 0; i < 40 && !swapped; i++) {
        char a[1024], b[1024];
        int ida = 1000 + 2 * i, idb = ida + 1;
        int na = star_build("TP", ida, NULL, a, sizeof a),
            nb = star_build("TR", idb, NULL, b, sizeof b);
        assert_int_equal(write(fd, a, (size_t)na), na);
        assert_int_equal(write(fd, b, (size_t)nb), nb);
        star_reply(fd, &m);
        int first = m.id;
        star_reply(fd, &m);
        assert_true((first == ida && m.id == idb) || (first == idb && m.id == ida));
        swapped = first == idb;
    }
    assert_true(swapped);

    /* an injected device error answers the next command with er## */
    ctl_ok("{\"instrument\":\"star1\",\"fault\":\"error\"}");
    char buf[1024];
    int n = star_build("TP", 5000, NULL, buf, sizeof buf);
    assert_int_equal(write(fd, buf, (size_t)n), n);
    star_reply(fd, &m);
    assert_int_equal(m.id, 5000);
    assert_true(star_msg_failed(&m));
    star_do(fd, "TR", 5001, NULL);

    /* the reader: version, temperature, then a read whose values follow the dispenses */
    send_str(rd, "e");
    assert_true(read_until(rd, buf, sizeof buf, BIOTEK_ETX, 10000) > 0);
    assert_non_null(strstr(buf, "Version 1.04"));
    static biotek_plate_t p1, p2;
    static char body1[BIOTEK_FRAME_MAX + 1], body2[BIOTEK_FRAME_MAX + 1];
    read_plate(rd, &p1, body1, sizeof body1);
    assert_int_equal(p1.n_triples, 96);
    double a1 = p1.value[0][0], b2 = p1.value[1][1], c3 = p1.value[2][2], d4 = p1.value[3][3];
    assert_true(a1 > b2 + 0.2); /* 50 uL vs 10 uL of substrate */
    assert_true(b2 > d4 + 0.1); /* 10 uL vs nothing */
    assert_true(c3 > a1 + 0.1); /* substrate and inhibitor signals add */
    assert_true(d4 < 0.1);
    /* serpentine: row 2 is sent from column 12 down to column 1 */
    char *r2a = strstr(body1, ",02,12,"), *r2b = strstr(body1, ",02,01,");
    assert_non_null(r2a);
    assert_non_null(r2b);
    assert_true(r2a < r2b);
    /* same seed, same dispenses: the same values */
    read_plate(rd, &p2, body2, sizeof body2);
    assert_string_equal(body1, body2);

    /* The set point in thousandths of a degree (biotek_backend.py set_temperature, line 259):
     * ACK, five digits, a bare ETX; the temperature then reads 37 degC in 1e-5 degC. */
    send_str(rd, "g");
    assert_int_equal(read_until(rd, buf, sizeof buf, BIOTEK_ACK, 10000), 1);
    send_str(rd, "37000");
    assert_int_equal(read_until(rd, buf, sizeof buf, BIOTEK_ETX, 10000), 1);
    send_str(rd, "h");
    assert_true(read_until(rd, buf, sizeof buf, BIOTEK_ETX, 10000) > 0);
    assert_string_equal(buf, "\x06"
                             "3700000\x03");
    /* The serial number as test_get_serial_number (biotek_tests.py line 61) has it. */
    send_str(rd, "C");
    assert_true(read_until(rd, buf, sizeof buf, BIOTEK_ETX, 10000) > 0);
    assert_string_equal(buf, "\x06"
                             "00000000        0000\x03");

    /* BioTek error: the next command goes unanswered, then the reader answers again */
    ctl_ok("{\"instrument\":\"reader1\",\"fault\":\"error\"}");
    send_str(rd, "e");
    assert_int_equal(read_until(rd, buf, sizeof buf, BIOTEK_ETX, 500), -1);
    send_str(rd, "e");
    assert_true(read_until(rd, buf, sizeof buf, BIOTEK_ETX, 10000) > 0);
    assert_non_null(strstr(buf, "Version"));
    close(fd);
    close(rd);
}

/* ---- Modbus ---- */

static double pv(modbus_t *ctx)
{
    uint16_t w;
    assert_int_equal(modbus_read_registers(ctx, 0x1000, 1, &w), 1);
    return (int16_t)w / 10.0;
}

static void test_modbus(void **state)
{
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", mb_port);
    assert_non_null(ctx);
    modbus_set_slave(ctx, 1);
    modbus_set_response_timeout(ctx, 2, 0);
    assert_int_equal(modbus_connect(ctx), 0);
    assert_int_equal(modbus_write_register(ctx, 0x1001, 600), 1);
    assert_int_equal(modbus_write_bit(ctx, 0x0814, 1), 1);
    double v = 0;
    for (long long end = h_now_ms() + 20000; h_now_ms() < end && v < 55; h_sleep_ms(50))
        v = pv(ctx);
    assert_true(v >= 55);
    assert_true(v <= 60.05);

    /* error: a Modbus exception for the next request */
    ctl_ok("{\"instrument\":\"heat1\",\"fault\":\"error\"}");
    uint16_t w;
    assert_int_equal(modbus_read_registers(ctx, 0x1000, 1, &w), -1);
    assert_int_equal(errno, EMBXSFAIL);
    pv(ctx);

    /* timeout: no answer until cleared */
    ctl_ok("{\"instrument\":\"heat1\",\"fault\":\"timeout\"}");
    modbus_set_response_timeout(ctx, 0, 300000);
    assert_int_equal(modbus_read_registers(ctx, 0x1000, 1, &w), -1);
    ctl_ok("{\"instrument\":\"heat1\",\"fault\":\"clear\"}");
    modbus_set_response_timeout(ctx, 2, 0);
    modbus_flush(ctx);
    modbus_close(ctx);
    assert_int_equal(modbus_connect(ctx), 0);
    pv(ctx);

    /* garbage: the next answer is not a valid response */
    ctl_ok("{\"instrument\":\"heat1\",\"fault\":\"garbage\"}");
    modbus_set_response_timeout(ctx, 0, 500000);
    assert_int_equal(modbus_read_registers(ctx, 0x1000, 1, &w), -1);
    modbus_close(ctx);
    modbus_set_response_timeout(ctx, 2, 0);
    assert_int_equal(modbus_connect(ctx), 0);
    pv(ctx);

    /* disconnect: the connection is dropped, and a new one works after clear */
    ctl_ok("{\"instrument\":\"heat1\",\"fault\":\"disconnect\"}");
    modbus_set_response_timeout(ctx, 0, 500000);
    int rc = 0;
    for (long long end = h_now_ms() + 10000; h_now_ms() < end && rc != -1; h_sleep_ms(50))
        rc = modbus_read_registers(ctx, 0x1000, 1, &w);
    assert_int_equal(rc, -1);
    modbus_close(ctx);
    ctl_ok("{\"instrument\":\"heat1\",\"fault\":\"clear\"}");
    modbus_set_response_timeout(ctx, 2, 0);
    assert_int_equal(modbus_connect(ctx), 0);

    /* stopped: PV drifts back to ambient (22 degC) */
    assert_int_equal(modbus_write_bit(ctx, 0x0814, 0), 1);
    for (long long end = h_now_ms() + 20000; h_now_ms() < end && v > 27; h_sleep_ms(50))
        v = pv(ctx);
    assert_true(v <= 27);
    modbus_close(ctx);
    modbus_free(ctx);
}

static void test_term(void **state)
{
    kill(pid, SIGTERM);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    pid = -1;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    struct stat sb;
    assert_int_equal(lstat(inc_path, &sb), -1);
    assert_int_equal(lstat(star_path, &sb), -1);
    assert_int_equal(lstat(ctl_path, &sb), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_liconic),  cmocka_unit_test(test_star_and_reader),
        cmocka_unit_test(test_star_plr), cmocka_unit_test(test_modbus),
        cmocka_unit_test(test_term),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
