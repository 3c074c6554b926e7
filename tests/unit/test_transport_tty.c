/* The tty and serial transports against real pseudo-terminals: the test plays the device on the
 * master side. Framing on the slave, bytes both ways (more than a pty buffer holds), BREAK, the
 * device going away and a new pty appearing at the same symlink path, libserialport refusing a
 * pty and the fallback to raw termios. `test_transport_tty --bench` instead measures round trips
 * through the transport against a bare blocking loop on the same pty. */
#include "core/err.h"
#include "core/log.h"
#include "drivers/transport/transport.h"
#include "drivers/transport/transport_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

enum { DEADLINE_MS = 10000 };

typedef struct fx {
    uv_loop_t loop;
    uv_timer_t beat; /* keeps UV_RUN_ONCE from sleeping forever */
    char dir[64], link[128];
    int master, slave;
    lab_transport_t *t;
    uint8_t rx[65536];
    size_t rx_len;
    lab_transport_state_t state;
    int n_offline, n_open;
    int last_err;
    char last_reason[256];
    int writes_done, write_status;
    int break_done, break_status;
} fx_t;

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static void on_beat(uv_timer_t *t)
{
}

#define WAIT(fx, cond)                                                                             \
    do {                                                                                           \
        uint64_t deadline_ = now_ms() + DEADLINE_MS;                                               \
        while (!(cond) && now_ms() < deadline_)                                                    \
            uv_run(&(fx)->loop, UV_RUN_ONCE);                                                      \
        assert_true(cond);                                                                         \
    } while (0)

static void on_data(lab_transport_t *t, const uint8_t *d, size_t n, void *user)
{
    fx_t *fx = user;
    assert_true(fx->rx_len + n <= sizeof fx->rx);
    memcpy(fx->rx + fx->rx_len, d, n);
    fx->rx_len += n;
}

static void on_state(lab_transport_t *t, lab_transport_state_t st, int err, const char *reason,
                     void *user)
{
    fx_t *fx = user;
    fx->state = st;
    if (st == LAB_TRANSPORT_OFFLINE) {
        fx->n_offline++;
        fx->last_err = err;
        snprintf(fx->last_reason, sizeof fx->last_reason, "%s", reason ? reason : "");
    }
    if (st == LAB_TRANSPORT_OPEN)
        fx->n_open++;
}

static void on_written(lab_transport_t *t, int status, void *arg)
{
    fx_t *fx = arg;
    fx->writes_done++;
    fx->write_status = status;
}

static void on_break(lab_transport_t *t, int status, void *arg)
{
    fx_t *fx = arg;
    fx->break_done++;
    fx->break_status = status;
}

/* A new pty, linked (atomically) at fx->link like the simulator does. */
static void pty_make(fx_t *fx)
{
    char name[64], tmp[160];
    assert_int_equal(openpty(&fx->master, &fx->slave, name, NULL, NULL), 0);
    fcntl(fx->master, F_SETFL, fcntl(fx->master, F_GETFL) | O_NONBLOCK);
    snprintf(tmp, sizeof tmp, "%s.tmp", fx->link);
    unlink(tmp);
    assert_int_equal(symlink(name, tmp), 0);
    assert_int_equal(rename(tmp, fx->link), 0);
}

/* The device goes away; the link stays, leading nowhere. Not left at the old /dev/pts/N: that
 * number is free again, and a pty another process opens (tests run in parallel) would take it. */
static void pty_drop(fx_t *fx)
{
    if (fx->slave >= 0)
        close(fx->slave);
    if (fx->master >= 0)
        close(fx->master);
    fx->slave = fx->master = -1;
    char tmp[160], gone[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", fx->link);
    snprintf(gone, sizeof gone, "%s.gone", fx->link);
    unlink(tmp);
    if (symlink(gone, tmp) == 0)
        rename(tmp, fx->link);
}

/* Read exactly n bytes from the master while the loop keeps turning (the transport may still be
 * flushing its queue). */
static void master_read(fx_t *fx, uint8_t *buf, size_t n)
{
    size_t got = 0;
    uint64_t deadline = now_ms() + DEADLINE_MS;
    while (got < n && now_ms() < deadline) {
        ssize_t r = read(fx->master, buf + got, n - got);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        struct pollfd p = {.fd = fx->master, .events = POLLIN};
        poll(&p, 1, 1);
    }
    assert_int_equal(got, n);
}

static void master_write(fx_t *fx, const void *data, size_t n)
{
    assert_int_equal(write(fx->master, data, n), (ssize_t)n);
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    fx->master = fx->slave = -1;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/lab-tty-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->link, sizeof fx->link, "%s/port", fx->dir);
    uv_loop_init(&fx->loop);
    uv_timer_init(&fx->loop, &fx->beat);
    uv_timer_start(&fx->beat, on_beat, 5, 5);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    lab_transport_close(fx->t);
    uv_close((uv_handle_t *)&fx->beat, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0); /* every handle was closed */
    pty_drop(fx);
    unlink(fx->link);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static void open_transport(fx_t *fx, lab_transport_settings_t *s)
{
    lab_transport_callbacks_t cb = {.on_data = on_data, .on_state = on_state, .user = fx};
    char msg[200];
    s->path = fx->link;
    s->retry_min_ms = 50;
    s->retry_max_ms = 400;
    assert_int_equal(lab_transport_new(&fx->loop, s, "dev1", &cb, &fx->t, msg, sizeof msg), 0);
    assert_int_equal(lab_transport_open(fx->t), 0);
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN);
}

static void test_tty_framing_and_bytes(void **state)
{
    fx_t *fx = *state;
    pty_make(fx);
    lab_transport_settings_t s;
    lab_transport_settings_init(&s);
    s.kind = LAB_TRANSPORT_TTY;
    s.baud = 19200;
    s.data_bits = 7;
    s.parity = LAB_PARITY_EVEN;
    s.stop_bits = 2;
    s.flow = LAB_FLOW_RTSCTS;
    lab_log_set_level(LAB_LOG_DEBUG); /* the byte dumps run too */
    open_transport(fx, &s);
    assert_string_equal(lab_transport_backend(fx->t), "tty");

    struct termios tio;
    assert_int_equal(tcgetattr(fx->slave, &tio), 0);
    assert_int_equal(cfgetospeed(&tio), B19200);
    assert_int_equal(cfgetispeed(&tio), B19200);
    /* A pty's kernel driver forces CS8 and clears PARENB whatever is asked (pty_set_termios);
     * the rest of the framing stays as set. */
    assert_true(tio.c_cflag & CSTOPB);
    assert_true(tio.c_cflag & CRTSCTS);
    assert_false(tio.c_lflag & (ICANON | ECHO | ISIG));
    assert_false(tio.c_oflag & OPOST);

    assert_int_equal(lab_transport_write(fx->t, "ST 1\r", 5, on_written, fx), 0);
    assert_int_equal(fx->writes_done, 0); /* never completes inside the call */
    WAIT(fx, fx->writes_done == 1);
    assert_int_equal(fx->write_status, 0);
    uint8_t buf[64];
    master_read(fx, buf, 5);
    assert_memory_equal(buf, "ST 1\r", 5);

    master_write(fx, "OK\r\n\x00\xff", 6);
    WAIT(fx, fx->rx_len == 6);
    assert_memory_equal(fx->rx, "OK\r\n\x00\xff", 6);

    /* More than the pty buffer holds: the queue waits for the fd to become writable. */
    enum { BIG = 60000 };
    static uint8_t big[BIG], back[BIG];
    for (size_t i = 0; i < BIG; i++)
        big[i] = (uint8_t)(i * 7 + i / 251);
    fx->writes_done = 0;
    assert_int_equal(lab_transport_write(fx->t, big, BIG / 2, on_written, fx), 0);
    assert_int_equal(lab_transport_write(fx->t, big + BIG / 2, BIG / 2, on_written, fx), 0);
    master_read(fx, back, BIG);
    assert_memory_equal(back, big, BIG);
    WAIT(fx, fx->writes_done == 2);
    assert_int_equal(fx->write_status, 0);

    assert_int_equal(lab_transport_send_break(fx->t, 30, on_break, fx), 0);
    assert_int_equal(lab_transport_send_break(fx->t, 30, on_break, fx), LAB_EBUSY);
    WAIT(fx, fx->break_done == 1);
    assert_int_equal(fx->break_status, 0);
    lab_log_set_level(LAB_LOG_INFO);
}

static void test_tty_offline_and_back(void **state)
{
    fx_t *fx = *state;
    pty_make(fx);
    lab_transport_settings_t s;
    lab_transport_settings_init(&s);
    s.kind = LAB_TRANSPORT_TTY;
    open_transport(fx, &s);

    /* A write whose completion is still pending when the device goes away fails with it. */
    assert_int_equal(lab_transport_write(fx->t, "lost", 4, on_written, fx), 0);
    pty_drop(fx); /* the device goes away; the stale link stays */
    WAIT(fx, fx->state == LAB_TRANSPORT_OFFLINE);
    assert_int_equal(fx->writes_done, 1);
    assert_int_equal(fx->write_status, LAB_ECONN);
    assert_int_equal(fx->last_err, LAB_EIO);
    assert_true(strlen(fx->last_reason) > 0);
    assert_int_equal(lab_transport_write(fx->t, "x", 1, on_written, fx), LAB_ECONN);
    assert_int_equal(lab_transport_send_break(fx->t, 10, on_break, fx), LAB_ECONN);

    /* It keeps retrying against the dead link without getting anywhere. */
    int offline = fx->n_offline;
    WAIT(fx, fx->n_offline >= offline + 2);
    assert_int_equal(fx->n_open, 1);

    pty_make(fx); /* a new device at the same path */
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN);
    assert_int_equal(fx->n_open, 2);
    master_write(fx, "back", 4);
    WAIT(fx, fx->rx_len == 4);
    assert_memory_equal(fx->rx, "back", 4);
    assert_int_equal(lab_transport_write(fx->t, "ok", 2, on_written, fx), 0);
    uint8_t buf[2];
    master_read(fx, buf, 2);
    assert_memory_equal(buf, "ok", 2);
}

static void test_serial_falls_back_to_tty(void **state)
{
    fx_t *fx = *state;
    pty_make(fx);
    lab_transport_settings_t s;
    lab_transport_settings_init(&s);
    s.kind = LAB_TRANSPORT_SERIAL;
    s.baud = 9600;
    s.parity = LAB_PARITY_ODD;
    open_transport(fx, &s);
    assert_string_equal(lab_transport_backend(fx->t), "tty");
    struct termios tio;
    assert_int_equal(tcgetattr(fx->slave, &tio), 0);
    assert_int_equal(cfgetospeed(&tio), B9600);
    assert_false(tio.c_lflag & (ICANON | ECHO));
    master_write(fx, "hello", 5);
    WAIT(fx, fx->rx_len == 5);
    assert_int_equal(lab_transport_write(fx->t, "world", 5, on_written, fx), 0);
    uint8_t buf[5];
    master_read(fx, buf, 5);
    assert_memory_equal(buf, "world", 5);
}

static void test_missing_device_then_appears(void **state)
{
    fx_t *fx = *state;
    lab_transport_callbacks_t cb = {.on_data = on_data, .on_state = on_state, .user = fx};
    lab_transport_settings_t s;
    lab_transport_settings_init(&s);
    s.path = fx->link;
    s.retry_min_ms = 50;
    s.retry_max_ms = 200;
    assert_int_equal(lab_transport_new(&fx->loop, &s, "dev1", &cb, &fx->t, NULL, 0), 0);
    assert_int_equal(lab_transport_write(fx->t, "x", 1, NULL, NULL), LAB_ESTATE);
    assert_int_equal(lab_transport_open(fx->t), 0);
    assert_int_equal(lab_transport_open(fx->t), LAB_ESTATE);
    WAIT(fx, fx->state == LAB_TRANSPORT_OFFLINE);
    assert_int_equal(fx->last_err, LAB_ECONN);
    assert_non_null(strstr(fx->last_reason, fx->link));
    pty_make(fx);
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN);
}

static void test_close_completes_pending(void **state)
{
    fx_t *fx = *state;
    pty_make(fx);
    lab_transport_settings_t s;
    lab_transport_settings_init(&s);
    open_transport(fx, &s);
    assert_int_equal(lab_transport_write(fx->t, "abc", 3, on_written, fx), 0);
    assert_int_equal(lab_transport_send_break(fx->t, 1000, on_break, fx), 0);
    lab_transport_close(fx->t);
    assert_int_equal(fx->writes_done, 1);
    assert_int_equal(fx->write_status, LAB_ESHUTDOWN);
    assert_int_equal(fx->break_done, 1);
    assert_int_equal(fx->break_status, LAB_ESHUTDOWN);
    fx->t = NULL;
}

static void test_bad_settings(void **state)
{
    fx_t *fx = *state;
    static const struct {
        const char *path;
        lab_transport_kind_t kind;
        int baud, data_bits, stop_bits;
        const char *needle;
    } cases[] = {
        {"/dev/ttyUSB0", LAB_TRANSPORT_AUTO, 12345, 8, 1, "baud"},
        {"/dev/ttyUSB0", LAB_TRANSPORT_TTY, 9600, 9, 1, "data_bits"},
        {"/dev/ttyUSB0", LAB_TRANSPORT_SERIAL, 9600, 8, 3, "stop_bits"},
        {"tcp://host", LAB_TRANSPORT_AUTO, 9600, 8, 1, "tcp://host:port"},
        {"tcp://host:99999", LAB_TRANSPORT_TCP, 9600, 8, 1, "tcp://host:port"},
        {"tcp://:80", LAB_TRANSPORT_TCP, 9600, 8, 1, "tcp://host:port"},
        {"/dev/ttyS0", LAB_TRANSPORT_TCP, 9600, 8, 1, "does not match"},
        {"", LAB_TRANSPORT_AUTO, 9600, 8, 1, "no port"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lab_transport_settings_t s;
        lab_transport_settings_init(&s);
        s.path = cases[i].path;
        s.kind = cases[i].kind;
        s.baud = cases[i].baud;
        s.data_bits = cases[i].data_bits;
        s.stop_bits = cases[i].stop_bits;
        char msg[200] = "";
        lab_transport_t *t = (void *)1;
        assert_int_equal(lab_transport_new(&fx->loop, &s, "x", NULL, &t, msg, sizeof msg),
                         LAB_EINVAL);
        assert_null(t);
        assert_non_null(strstr(msg, cases[i].needle));
    }
    assert_int_equal(lab_parity_parse("even"), LAB_PARITY_EVEN);
    assert_int_equal(lab_flow_parse("rtscts"), LAB_FLOW_RTSCTS);
    assert_int_equal(lab_transport_kind_parse("tcp"), LAB_TRANSPORT_TCP);
    assert_int_equal(lab_parity_parse("mark"), -1);
}

/* A pty keeps only part of the framing (see above), so the termios the tty backend asks for is
 * also checked as computed, for each framing the shipped instruments use. */
static void test_termios_table(void **state)
{
    static const struct {
        int baud, bits;
        lab_parity_t parity;
        int stop;
        lab_flow_t flow;
        speed_t speed;
        tcflag_t cflag_set, cflag_clear, iflag_set, iflag_clear;
    } cases[] = {
        /* Liconic STX: 9600 8E1 RTS/CTS */
        {9600, 8, LAB_PARITY_EVEN, 1, LAB_FLOW_RTSCTS, B9600, CS8 | PARENB | CRTSCTS,
         PARODD | CSTOPB, 0, IXON | IXOFF},
        /* BioTek: 9600 8N2 */
        {9600, 8, LAB_PARITY_NONE, 2, LAB_FLOW_NONE, B9600, CS8 | CSTOPB, PARENB | CRTSCTS, 0,
         IXON | IXOFF},
        {19200, 7, LAB_PARITY_ODD, 1, LAB_FLOW_XONXOFF, B19200, CS7 | PARENB | PARODD,
         CSTOPB | CRTSCTS, IXON | IXOFF, 0},
        {115200, 5, LAB_PARITY_NONE, 1, LAB_FLOW_NONE, B115200, CS5, PARENB | CSTOPB, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lab_transport_settings_t s;
        lab_transport_settings_init(&s);
        s.baud = cases[i].baud;
        s.data_bits = cases[i].bits;
        s.parity = cases[i].parity;
        s.stop_bits = cases[i].stop;
        s.flow = cases[i].flow;
        struct termios tio;
        memset(&tio, 0xff, sizeof tio); /* whatever the port held before */
        lab_tty_make_termios(&s, &tio);
        assert_int_equal(cfgetospeed(&tio), cases[i].speed);
        assert_int_equal(cfgetispeed(&tio), cases[i].speed);
        assert_int_equal(tio.c_cflag & CSIZE, cases[i].cflag_set & CSIZE);
        assert_int_equal(tio.c_cflag & (cases[i].cflag_set & ~CSIZE), cases[i].cflag_set & ~CSIZE);
        assert_int_equal(tio.c_cflag & cases[i].cflag_clear, 0);
        assert_int_equal(tio.c_iflag & cases[i].iflag_set, cases[i].iflag_set);
        assert_int_equal(tio.c_iflag & cases[i].iflag_clear, 0);
        assert_true(tio.c_cflag & CREAD);
        assert_true(tio.c_cflag & CLOCAL);
        assert_false(tio.c_lflag & (ICANON | ECHO | ISIG | IEXTEN));
        assert_false(tio.c_oflag & OPOST);
        assert_false(tio.c_iflag & (ICRNL | INLCR | ISTRIP));
        assert_int_equal(tio.c_cc[VMIN], 1);
        assert_int_equal(tio.c_cc[VTIME], 0);
    }
}

/* ---- --bench: round trips of an 8-byte request and an 8-byte answer ---- */

typedef struct echo_dev {
    int master;
    int stop; /* atomic: set by the test, read by the thread */
} echo_dev_t;

/* The device: answers every 8 bytes with 8 bytes, blocking. */
static void *echo_main(void *arg)
{
    echo_dev_t *d = arg;
    uint8_t buf[8];
    size_t got = 0;
    while (!__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd p = {.fd = d->master, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t r = read(d->master, buf + got, sizeof buf - got);
        if (r <= 0)
            continue;
        got += (size_t)r;
        if (got == sizeof buf) {
            buf[0] ^= 0x20;
            if (write(d->master, buf, sizeof buf) != (ssize_t)sizeof buf)
                break;
            got = 0;
        }
    }
    return NULL;
}

typedef struct bench {
    fx_t *fx;
    int left;
    size_t pending;
} bench_t;

static void bench_data(lab_transport_t *t, const uint8_t *d, size_t n, void *user)
{
    bench_t *b = user;
    b->pending += n;
    if (b->pending < 8)
        return;
    b->pending = 0;
    if (--b->left > 0)
        lab_transport_write(t, "REQUEST1", 8, NULL, NULL);
}

static void bench_state(lab_transport_t *t, lab_transport_state_t st, int err, const char *r,
                        void *user)
{
    bench_t *b = user;
    b->fx->state = st;
}

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Bare blocking I/O and the transport take turns on the same pty in interleaved chunks, so that
 * drift on a shared machine hits both alike. Process CPU includes the device thread, the same
 * on both sides. */
static int run_bench(int n)
{
    fx_t *f;
    setup((void **)&f);
    pty_make(f);
    fcntl(f->master, F_SETFL, fcntl(f->master, F_GETFL) & ~O_NONBLOCK);
    echo_dev_t dev = {.master = f->master};
    pthread_t th;
    pthread_create(&th, NULL, echo_main, &dev);

    bench_t b = {.fx = f};
    lab_transport_callbacks_t cb = {.on_data = bench_data, .on_state = bench_state, .user = &b};
    lab_transport_settings_t s;
    lab_transport_settings_init(&s);
    s.kind = LAB_TRANSPORT_TTY;
    s.path = f->link;
    lab_transport_new(&f->loop, &s, "bench", &cb, &f->t, NULL, 0);
    lab_transport_open(f->t);
    while (f->state != LAB_TRANSPORT_OPEN)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->beat);
    int fd = open(f->link, O_RDWR | O_NOCTTY); /* same line, already raw */

    enum { ROUNDS = 10 };
    int chunk = n / ROUNDS;
    uint64_t bare_ns = 0, bare_cpu = 0, via_ns = 0, via_cpu = 0;
    uint8_t buf[8];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = uv_hrtime(), c0 = cpu_ns();
        for (int i = 0; i < chunk; i++) {
            if (write(fd, "REQUEST1", 8) != 8)
                return 1;
            size_t got = 0;
            while (got < 8) {
                ssize_t k = read(fd, buf + got, 8 - got);
                if (k <= 0)
                    return 1;
                got += (size_t)k;
            }
        }
        bare_ns += uv_hrtime() - t0;
        bare_cpu += cpu_ns() - c0;

        b.left = chunk;
        t0 = uv_hrtime();
        c0 = cpu_ns();
        lab_transport_write(f->t, "REQUEST1", 8, NULL, NULL);
        while (b.left > 0)
            uv_run(&f->loop, UV_RUN_ONCE);
        via_ns += uv_hrtime() - t0;
        via_cpu += cpu_ns() - c0;
    }
    int total = chunk * ROUNDS;
    double bare = total / (bare_ns / 1e9), via = total / (via_ns / 1e9);
    printf("pty round trips/s (8 B each way, n=%d): bare blocking %.0f, tty transport %.0f "
           "(overhead %.1f%%); process CPU per round trip %.1f us vs %.1f us\n",
           total, bare, via, (bare / via - 1) * 100, bare_cpu / 1e3 / total, via_cpu / 1e3 / total);
    close(fd);
    __atomic_store_n(&dev.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    teardown((void **)&f);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        lab_log_set_level(LAB_LOG_WARN);
        return run_bench(argc > 2 ? atoi(argv[2]) : 20000);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tty_framing_and_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tty_offline_and_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serial_falls_back_to_tty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_device_then_appears, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_completes_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_settings, setup, teardown),
        cmocka_unit_test(test_termios_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
