/* Conformance of labloop-sim's Omega CN7500 to the Modbus RTU exchanges recorded on a real one
 * (tests/fixtures/cn7500_minimalmodbus.h: pyhys/minimalmodbus, tests/test_omegacn7500.py, commit
 * 696b61c73c5655d0efc12bcb39c22da9e41a74a8). Two simulated controllers on RTU ptys (unit 1 at
 * 24.6 degC and unit 10 at 25.9 degC, the process values recorded) are sent every recorded
 * request, as raw bytes on the pty, and must answer exactly the recorded response bytes. The
 * requests go in an order in which the recorded answers are one consistent history (the
 * recording was made test by test: a value is written before it is read back, the control mode
 * read before it is set). The same requests as Modbus TCP (the recorded PDUs in MBAP frames) to a
 * third controller. Then what the recording does not show: the run bit read as a coil (function
 * 01) is refused with exception 1, and an exchange with another unit on the line is not
 * answered. */
#include "tests/fixtures/cn7500_minimalmodbus.h"
#include "tests/harness/harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <cmocka.h>

static h_sim_t sim;
static char dir[256];
static int tcp_port;

/* Methods in an order that makes the recorded answers one history; every recorded row of a unit
 * belongs to one of them (checked). */
static const char *const order[] = {
    "get_pv",
    "run",
    "stop",
    "is_running",
    "set_setpoint",
    "get_setpoint",
    "get_control_mode",
    "set_control_mode",
    "set_start_pattern_no",
    "get_start_pattern_no",
    "set_all_pattern_variables",
    "set_pattern_step_setpoint",
    "set_pattern_step_time",
    "set_pattern_additional_cycles",
    "get_all_pattern_variables",
};

static int setup(void **state)
{
    (void)state;
    if (h_tempdir("labcn", dir, sizeof dir))
        return -1;
    tcp_port = h_free_port();
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 1\nsim_seed = 5\n"
             "[instrument cn1]\ndriver = modbus-temperature\nmodbus = rtu:%s/cn1\n"
             "map = omega-cn7500\nunit = 1\nsim_ambient = 24.6\n"
             "[instrument cn10]\ndriver = modbus-temperature\nmodbus = rtu:%s/cn10\n"
             "map = omega-cn7500\nunit = 10\nsim_ambient = 25.9\n"
             "[instrument cnt]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
             "map = omega-cn7500\nunit = 1\nsim_ambient = 24.6\n",
             dir, dir, tcp_port);
    return h_sim_start(&sim, ini);
}

static int teardown(void **state)
{
    (void)state;
    h_sim_stop(&sim);
    h_rmtree(dir);
    return 0;
}

static void hex(char *out, size_t cap, const unsigned char *p, size_t n)
{
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && k + 4 < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%02x ", p[i]);
}

/* Sends req on fd and reads until want_len bytes came (or 5 s passed); fails the test unless
 * they are exactly want. */
static void exchange(int fd, const char *what, int line, const void *req, size_t req_len,
                     const void *want, size_t want_len)
{
    assert_int_equal(write(fd, req, req_len), (ssize_t)req_len);
    unsigned char got[300];
    size_t n = 0;
    for (long long end = h_now_ms() + 5000; n < want_len && h_now_ms() < end;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t k = read(fd, got + n, sizeof got - n);
        if (k > 0)
            n += (size_t)k;
    }
    if (n != want_len || memcmp(got, want, want_len) != 0) {
        char g[400], w[400], q[200];
        hex(q, sizeof q, req, req_len);
        hex(g, sizeof g, got, n);
        hex(w, sizeof w, want, want_len);
        fail_msg("%s (test_omegacn7500.py line %d): request %s: answered [%s], recorded [%s]", what,
                 line, q, g, w);
    }
}

static int open_line(const char *id)
{
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, id);
    int fd = open(path, O_RDWR | O_NOCTTY);
    if (fd < 0)
        fail_msg("open %s: %s", path, strerror(errno));
    struct termios tio;
    tcgetattr(fd, &tio);
    cfmakeraw(&tio);
    tcsetattr(fd, TCSANOW, &tio);
    return fd;
}

/* Every recorded exchange of unit, over RTU on fd or (tcp) as MBAP frames. */
static void replay_unit(int fd, int unit, int tcp)
{
    size_t rows = 0, sent = 0;
    for (size_t i = 0; i < CN7500_RECORDED_N; i++)
        rows += cn7500_recorded[i].unit == unit;
    for (size_t o = 0; o < sizeof order / sizeof order[0]; o++)
        for (size_t i = 0; i < CN7500_RECORDED_N; i++) {
            const cn7500_rec_t *r = &cn7500_recorded[i];
            if (r->unit != unit || strcmp(r->method, order[o]) != 0)
                continue;
            sent++;
            if (!tcp) {
                exchange(fd, r->method, r->line, r->req, r->req_len, r->rsp, r->rsp_len);
                continue;
            }
            /* the PDU between the address byte and the CRC, in an MBAP header */
            unsigned char q[300], a[300];
            size_t qn = r->req_len - 3, an = r->rsp_len - 3;
            unsigned tid = (unsigned)(sent & 0xffff);
            unsigned char hq[7] = {tid >> 8,        tid & 0xff,         0, 0, (qn + 1) >> 8,
                                   (qn + 1) & 0xff, (unsigned char)unit};
            unsigned char ha[7] = {tid >> 8,        tid & 0xff,         0, 0, (an + 1) >> 8,
                                   (an + 1) & 0xff, (unsigned char)unit};
            memcpy(q, hq, 7);
            memcpy(q + 7, r->req + 1, qn);
            memcpy(a, ha, 7);
            memcpy(a + 7, r->rsp + 1, an);
            exchange(fd, r->method, r->line, q, qn + 7, a, an + 7);
        }
    assert_int_equal(sent, rows); /* no recorded row left out */
    assert_true(rows >= 50);
}

static void test_rtu_unit1(void **state)
{
    (void)state;
    int fd = open_line("cn1");
    replay_unit(fd, 1, 0);
    close(fd);
}

static void test_rtu_unit10(void **state)
{
    (void)state;
    int fd = open_line("cn10");
    replay_unit(fd, 10, 0);
    close(fd);
}

static void test_tcp(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)tcp_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    replay_unit(fd, 1, 1);
    close(fd);
}

/* Frames the recording does not hold, made here with the test's CRC. */
static size_t frame(unsigned char *out, const unsigned char *p, size_t n)
{
    memcpy(out, p, n);
    unsigned c = cn7500_crc16(p, n);
    out[n] = (unsigned char)c;
    out[n + 1] = (unsigned char)(c >> 8);
    return n + 2;
}

static void test_rtu_outside_the_recording(void **state)
{
    (void)state;
    int fd = open_line("cn1");
    unsigned char q[16], a[16];
    /* the run bit read as a coil: illegal function */
    size_t qn = frame(q, (const unsigned char[]){0x01, 0x01, 0x08, 0x14, 0x00, 0x01}, 6);
    size_t an = frame(a, (const unsigned char[]){0x01, 0x81, 0x01}, 3);
    exchange(fd, "read coil 0x0814", 0, q, qn, a, an);
    /* unit 10's exchange on unit 1's line, its answer given as a second controller on the bus
     * would give it: unit 1 keeps silent, then answers its own request and nothing else */
    const cn7500_rec_t *other = cn7500_rec_find(10, "get_pv"), *own = cn7500_rec_find(1, "stop");
    assert_int_equal(write(fd, other->req, other->req_len), (ssize_t)other->req_len);
    assert_int_equal(write(fd, other->rsp, other->rsp_len), (ssize_t)other->rsp_len);
    exchange(fd, own->method, own->line, own->req, own->req_len, own->rsp, own->rsp_len);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rtu_unit1),
        cmocka_unit_test(test_rtu_unit10),
        cmocka_unit_test(test_tcp),
        cmocka_unit_test(test_rtu_outside_the_recording),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
