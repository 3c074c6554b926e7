/* Modbus bus workers against real Modbus TCP servers run by libmodbus in threads of the test:
 * registers and coils round trip, a typed exception, a silent server timing out while another
 * bus keeps working, a server restart picked up by the bus, close with requests queued, bad
 * requests and URIs. `test_transport_modbus --bench` instead measures register polls through
 * the bus worker against a plain synchronous libmodbus loop. */
#include "core/err.h"
#include "core/log.h"
#include "drivers/transport/modbus_bus.h"

#include <errno.h>
#include <modbus/modbus.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

enum { DEADLINE_MS = 15000 };

/* ---- a Modbus TCP server in a thread ---- */

typedef struct mbsrv {
    int port;
    int silent; /* accepts and reads, never answers */
    int stop;   /* atomic: set by the test, read by the thread */
    pthread_t th;
    modbus_t *ctx;
    int listen_fd;
    modbus_mapping_t *map;
    int running;
} mbsrv_t;

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(s, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &len);
    close(s);
    return ntohs(a.sin_port);
}

static void *srv_main(void *arg)
{
    mbsrv_t *sv = arg;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    while (!__atomic_load_n(&sv->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd p = {.fd = sv->listen_fd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int client = modbus_tcp_accept(sv->ctx, &sv->listen_fd);
        if (client < 0)
            continue;
        while (!__atomic_load_n(&sv->stop, __ATOMIC_ACQUIRE)) {
            struct pollfd c = {.fd = client, .events = POLLIN};
            if (poll(&c, 1, 20) <= 0)
                continue;
            int rc = modbus_receive(sv->ctx, query);
            if (rc < 0)
                break; /* the client went away */
            if (rc > 0 && !sv->silent)
                modbus_reply(sv->ctx, query, rc, sv->map);
        }
        close(client);
    }
    return NULL;
}

static void srv_start(mbsrv_t *sv)
{
    __atomic_store_n(&sv->stop, 0, __ATOMIC_RELEASE);
    sv->ctx = modbus_new_tcp("127.0.0.1", sv->port);
    assert_non_null(sv->ctx);
    sv->listen_fd = modbus_tcp_listen(sv->ctx, 4);
    assert_true(sv->listen_fd >= 0);
    if (!sv->map)
        sv->map = modbus_mapping_new(100, 0, 100, 100);
    pthread_create(&sv->th, NULL, srv_main, sv);
    sv->running = 1;
}

static void srv_stop(mbsrv_t *sv)
{
    if (!sv->running)
        return;
    __atomic_store_n(&sv->stop, 1, __ATOMIC_RELEASE);
    pthread_join(sv->th, NULL);
    close(sv->listen_fd);
    modbus_free(sv->ctx);
    sv->running = 0;
}

/* ---- fixture ---- */

typedef struct done {
    int n;
    int status, exception;
    char exception_name[64];
    int count;
    uint16_t words[128];
    uint8_t bits[128];
} done_t;

typedef struct fx {
    uv_loop_t loop;
    uv_timer_t beat;
    mbsrv_t srv, silent;
    lab_modbus_bus_t *bus, *bus2;
    int n_open, n_offline;
    lab_transport_state_t state;
    char reason[256];
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

static void on_done(lab_modbus_bus_t *bus, const lab_modbus_result_t *r, void *arg)
{
    done_t *d = arg;
    d->n++;
    d->status = r->status;
    d->exception = r->exception;
    snprintf(d->exception_name, sizeof d->exception_name, "%s",
             r->exception_name ? r->exception_name : "");
    d->count = r->count;
    if (r->status == LAB_OK && r->words)
        memcpy(d->words, r->words, (size_t)r->count * 2);
    if (r->status == LAB_OK && r->bits)
        memcpy(d->bits, r->bits, (size_t)r->count);
}

static void on_state(lab_modbus_bus_t *bus, lab_transport_state_t st, int err, const char *reason,
                     void *user)
{
    fx_t *fx = user;
    fx->state = st;
    if (st == LAB_TRANSPORT_OPEN)
        fx->n_open++;
    if (st == LAB_TRANSPORT_OFFLINE) {
        fx->n_offline++;
        snprintf(fx->reason, sizeof fx->reason, "%s", reason ? reason : "");
    }
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    uv_loop_init(&fx->loop);
    uv_timer_init(&fx->loop, &fx->beat);
    uv_timer_start(&fx->beat, on_beat, 5, 5);
    fx->srv.port = free_port();
    fx->silent.port = free_port();
    fx->silent.silent = 1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    lab_modbus_bus_close(fx->bus);
    lab_modbus_bus_close(fx->bus2);
    srv_stop(&fx->srv);
    srv_stop(&fx->silent);
    if (fx->srv.map)
        modbus_mapping_free(fx->srv.map);
    if (fx->silent.map)
        modbus_mapping_free(fx->silent.map);
    uv_close((uv_handle_t *)&fx->beat, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
    return 0;
}

static lab_modbus_bus_t *bus_new(fx_t *fx, int port, const char *id)
{
    lab_modbus_settings_t s;
    lab_modbus_settings_init(&s);
    char uri[64], msg[200];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", port);
    s.uri = uri;
    s.retry_min_ms = 50;
    s.retry_max_ms = 400;
    lab_modbus_bus_t *bus;
    assert_int_equal(lab_modbus_bus_new(&fx->loop, &s, id, on_state, fx, &bus, msg, sizeof msg), 0);
    return bus;
}

static void submit(fx_t *fx, lab_modbus_bus_t *bus, lab_modbus_request_t r, done_t *d)
{
    memset(d, 0, sizeof *d);
    assert_int_equal(lab_modbus_bus_submit(bus, &r, on_done, d), 0);
}

/* Submit and wait for the typed result. */
static done_t *call(fx_t *fx, lab_modbus_bus_t *bus, lab_modbus_request_t r)
{
    static done_t d;
    submit(fx, bus, r, &d);
    WAIT(fx, d.n == 1);
    return &d;
}

static void test_registers_and_coils(void **state)
{
    fx_t *fx = *state;
    srv_start(&fx->srv);
    fx->srv.map->tab_input_registers[5] = 0xbeef;
    fx->bus = bus_new(fx, fx->srv.port, "tc1");
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN);

    uint16_t w[3] = {100, 0xffff, 7};
    done_t *d =
        call(fx, fx->bus,
             (lab_modbus_request_t){
                 .op = LAB_MODBUS_WRITE_REGISTERS, .unit = 1, .addr = 10, .count = 3, .words = w});
    assert_int_equal(d->status, LAB_OK);
    d = call(
        fx, fx->bus,
        (lab_modbus_request_t){.op = LAB_MODBUS_READ_HOLDING, .unit = 1, .addr = 10, .count = 3});
    assert_int_equal(d->status, LAB_OK);
    assert_int_equal(d->count, 3);
    assert_memory_equal(d->words, w, sizeof w);

    uint16_t one = 4242;
    d = call(
        fx, fx->bus,
        (lab_modbus_request_t){
            .op = LAB_MODBUS_WRITE_REGISTER, .unit = 1, .addr = 11, .count = 1, .words = &one});
    assert_int_equal(d->status, LAB_OK);
    assert_int_equal(fx->srv.map->tab_registers[11], 4242);

    d = call(fx, fx->bus,
             (lab_modbus_request_t){.op = LAB_MODBUS_READ_INPUT, .unit = 1, .addr = 5, .count = 1});
    assert_int_equal(d->status, LAB_OK);
    assert_int_equal(d->words[0], 0xbeef);

    uint8_t bits[5] = {1, 0, 1, 1, 0};
    d = call(fx, fx->bus,
             (lab_modbus_request_t){
                 .op = LAB_MODBUS_WRITE_COILS, .unit = 1, .addr = 20, .count = 5, .bits = bits});
    assert_int_equal(d->status, LAB_OK);
    uint8_t on = 1;
    d = call(fx, fx->bus,
             (lab_modbus_request_t){
                 .op = LAB_MODBUS_WRITE_COIL, .unit = 1, .addr = 24, .count = 1, .bits = &on});
    assert_int_equal(d->status, LAB_OK);
    d = call(
        fx, fx->bus,
        (lab_modbus_request_t){.op = LAB_MODBUS_READ_COILS, .unit = 1, .addr = 20, .count = 5});
    assert_int_equal(d->status, LAB_OK);
    uint8_t expect[5] = {1, 0, 1, 1, 1};
    assert_memory_equal(d->bits, expect, 5);

    /* Beyond the server's map: the exception comes back typed, and the bus stays up. */
    d = call(
        fx, fx->bus,
        (lab_modbus_request_t){.op = LAB_MODBUS_READ_HOLDING, .unit = 1, .addr = 99, .count = 2});
    assert_int_equal(d->status, LAB_EDEVICE);
    assert_int_equal(d->exception, MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS);
    assert_string_equal(d->exception_name, "ILLEGAL DATA ADDRESS");
    d = call(
        fx, fx->bus,
        (lab_modbus_request_t){.op = LAB_MODBUS_READ_HOLDING, .unit = 1, .addr = 10, .count = 1});
    assert_int_equal(d->status, LAB_OK);
    assert_int_equal(fx->n_offline, 0);
}

static void test_silent_device_times_out_alone(void **state)
{
    fx_t *fx = *state;
    srv_start(&fx->srv);
    srv_start(&fx->silent);
    fx->bus = bus_new(fx, fx->silent.port, "silent");
    fx->bus2 = bus_new(fx, fx->srv.port, "good");
    done_t slow, fast;
    submit(fx, fx->bus,
           (lab_modbus_request_t){
               .op = LAB_MODBUS_READ_HOLDING, .unit = 1, .addr = 0, .count = 1, .timeout_ms = 4000},
           &slow);
    /* The good bus answers many requests while the silent one is still waiting. */
    for (int i = 0; i < 20; i++) {
        submit(
            fx, fx->bus2,
            (lab_modbus_request_t){.op = LAB_MODBUS_READ_HOLDING, .unit = 1, .addr = 0, .count = 4},
            &fast);
        WAIT(fx, fast.n == 1);
        assert_int_equal(fast.status, LAB_OK);
    }
    assert_int_equal(slow.n, 0);
    WAIT(fx, slow.n == 1);
    assert_int_equal(slow.status, LAB_ETIMEDOUT);
    /* and the silent bus is still usable afterwards: the next request times out the same way */
    submit(fx, fx->bus,
           (lab_modbus_request_t){
               .op = LAB_MODBUS_READ_HOLDING, .unit = 1, .addr = 0, .count = 1, .timeout_ms = 100},
           &slow);
    WAIT(fx, slow.n == 1);
    assert_int_equal(slow.status, LAB_ETIMEDOUT);
}

static void test_server_restart(void **state)
{
    fx_t *fx = *state;
    srv_start(&fx->srv);
    fx->bus = bus_new(fx, fx->srv.port, "tc1");
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN);
    done_t *d = call(fx, fx->bus,
                     (lab_modbus_request_t){.op = LAB_MODBUS_READ_HOLDING, .unit = 1, .count = 1});
    assert_int_equal(d->status, LAB_OK);

    srv_stop(&fx->srv);
    d = call(fx, fx->bus,
             (lab_modbus_request_t){.op = LAB_MODBUS_READ_HOLDING, .unit = 1, .count = 1});
    assert_int_equal(d->status, LAB_ECONN);
    WAIT(fx, fx->state == LAB_TRANSPORT_OFFLINE);
    assert_true(strlen(fx->reason) > 0);
    /* while it is down, requests fail at once with a connection error */
    d = call(fx, fx->bus,
             (lab_modbus_request_t){.op = LAB_MODBUS_READ_HOLDING, .unit = 1, .count = 1});
    assert_int_equal(d->status, LAB_ECONN);

    srv_start(&fx->srv);
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN);
    assert_int_equal(fx->n_open, 2);
    d = call(fx, fx->bus,
             (lab_modbus_request_t){.op = LAB_MODBUS_READ_HOLDING, .unit = 1, .count = 1});
    assert_int_equal(d->status, LAB_OK);
}

static void test_close_with_queue(void **state)
{
    fx_t *fx = *state;
    srv_start(&fx->silent);
    fx->bus = bus_new(fx, fx->silent.port, "silent");
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN);
    done_t d[5];
    for (int i = 0; i < 5; i++)
        submit(fx, fx->bus,
               (lab_modbus_request_t){
                   .op = LAB_MODBUS_READ_HOLDING, .unit = 1, .count = 1, .timeout_ms = 10000},
               &d[i]);
    lab_modbus_bus_close(fx->bus); /* cuts the blocked request short */
    fx->bus = NULL;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(d[i].n, 1);
        assert_int_equal(d[i].status, LAB_ESHUTDOWN);
    }
}

static void test_bad_requests(void **state)
{
    fx_t *fx = *state;
    static const char *const bad_uris[] = {"tcp://127.0.0.1", "tcp://:502", "modbus://x",
                                           "rtu:", "tcp://h:70000"};
    for (size_t i = 0; i < sizeof bad_uris / sizeof bad_uris[0]; i++) {
        lab_modbus_settings_t s;
        lab_modbus_settings_init(&s);
        s.uri = bad_uris[i];
        char msg[200] = "";
        lab_modbus_bus_t *bus = (void *)1;
        assert_int_equal(lab_modbus_bus_new(&fx->loop, &s, "x", NULL, NULL, &bus, msg, sizeof msg),
                         LAB_EINVAL);
        assert_null(bus);
        assert_true(strlen(msg) > 0);
    }
    /* nobody listens: the bus stays offline and requests fail with a connection error */
    fx->bus = bus_new(fx, free_port(), "nobody");
    WAIT(fx, fx->state == LAB_TRANSPORT_OFFLINE);
    assert_non_null(strstr(fx->reason, "refused"));
    done_t *d = call(fx, fx->bus, (lab_modbus_request_t){.op = LAB_MODBUS_READ_COILS, .count = 1});
    assert_int_equal(d->status, LAB_ECONN);

    static const lab_modbus_request_t bad[] = {
        {.op = LAB_MODBUS_OP_COUNT, .count = 1},
        {.op = LAB_MODBUS_READ_HOLDING, .count = 0},
        {.op = LAB_MODBUS_READ_HOLDING, .count = 126},
        {.op = LAB_MODBUS_READ_HOLDING, .addr = 65535, .count = 2},
        {.op = LAB_MODBUS_READ_HOLDING, .unit = 256, .count = 1},
        {.op = LAB_MODBUS_WRITE_REGISTERS, .count = 2}, /* no values */
        {.op = LAB_MODBUS_WRITE_COIL, .count = 2, .bits = (const uint8_t *)"\1\1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(lab_modbus_bus_submit(fx->bus, &bad[i], on_done, NULL), LAB_EINVAL);
    assert_string_equal(lab_modbus_exception_name(2), "ILLEGAL DATA ADDRESS");
    assert_string_equal(lab_modbus_exception_name(42), "UNKNOWN EXCEPTION");
}

/* With every fd below FD_SETSIZE taken, libmodbus's select() could not wait on the bus socket:
 * the bus refuses it with a clear reason, and connects once low fds are free again. */
static void test_fd_above_fd_setsize_refused(void **state)
{
    fx_t *fx = *state;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < FD_SETSIZE + 64) {
        rl.rlim_cur = rl.rlim_max < FD_SETSIZE + 64 ? rl.rlim_max : FD_SETSIZE + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < FD_SETSIZE + 16)
        skip(); /* cannot open enough fds here to reach FD_SETSIZE */
    srv_start(&fx->srv);
    static int fds[FD_SETSIZE];
    int n = 0;
    for (;;) {
        int fd = dup(0);
        assert_true(fd >= 0);
        if (fd >= FD_SETSIZE) {
            close(fd);
            break;
        }
        fds[n++] = fd;
    }
    fx->bus = bus_new(fx, fx->srv.port, "high");
    WAIT(fx, fx->state == LAB_TRANSPORT_OFFLINE);
    assert_non_null(strstr(fx->reason, "FD_SETSIZE"));
    done_t *d =
        call(fx, fx->bus, (lab_modbus_request_t){.op = LAB_MODBUS_READ_HOLDING, .count = 1});
    assert_int_equal(d->status, LAB_ECONN);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN);
    d = call(fx, fx->bus, (lab_modbus_request_t){.op = LAB_MODBUS_READ_HOLDING, .count = 1});
    assert_int_equal(d->status, LAB_OK);
}

/* ---- Modbus RTU: two ptys joined by a thread stand in for a serial line ---- */

typedef struct line {
    int m[2], s[2];
    char name[2][64];
    int stop; /* atomic: set by the test, read by the thread */
    pthread_t th, srv;
    modbus_t *ctx; /* the RTU device on the far end */
    modbus_mapping_t *map;
} line_t;

static void *line_main(void *arg)
{
    line_t *l = arg;
    uint8_t buf[512];
    while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd p[2] = {{.fd = l->m[0], .events = POLLIN}, {.fd = l->m[1], .events = POLLIN}};
        if (poll(p, 2, 20) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            ssize_t n = read(l->m[i], buf, sizeof buf);
            if (n > 0 && write(l->m[1 - i], buf, (size_t)n) != n)
                return NULL;
        }
    }
    return NULL;
}

static void *rtu_srv_main(void *arg)
{
    line_t *l = arg;
    uint8_t query[MODBUS_RTU_MAX_ADU_LENGTH];
    while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd p = {.fd = modbus_get_socket(l->ctx), .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int rc = modbus_receive(l->ctx, query);
        if (rc > 0)
            modbus_reply(l->ctx, query, rc, l->map);
    }
    return NULL;
}

static void test_rtu_over_a_line(void **state)
{
    fx_t *fx = *state;
    static line_t l;
    memset(&l, 0, sizeof l);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(openpty(&l.m[i], &l.s[i], l.name[i], NULL, NULL), 0);
        struct termios tio;
        tcgetattr(l.s[i], &tio);
        cfmakeraw(&tio);
        tcsetattr(l.s[i], TCSANOW, &tio);
    }
    pthread_create(&l.th, NULL, line_main, &l);
    l.ctx = modbus_new_rtu(l.name[1], 115200, 'E', 8, 1);
    assert_non_null(l.ctx);
    modbus_set_slave(l.ctx, 7);
    assert_int_equal(modbus_connect(l.ctx), 0);
    l.map = modbus_mapping_new(10, 10, 10, 0);
    l.map->tab_registers[3] = 1234;
    l.map->tab_input_bits[2] = 1;
    pthread_create(&l.srv, NULL, rtu_srv_main, &l);

    lab_modbus_settings_t s;
    lab_modbus_settings_init(&s);
    char uri[80];
    snprintf(uri, sizeof uri, "rtu:%s", l.name[0]);
    s.uri = uri;
    s.baud = 115200;
    s.parity = LAB_PARITY_EVEN;
    assert_int_equal(lab_modbus_bus_new(&fx->loop, &s, "rtu1", on_state, fx, &fx->bus, NULL, 0), 0);
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN);
    done_t *d = call(
        fx, fx->bus,
        (lab_modbus_request_t){.op = LAB_MODBUS_READ_HOLDING, .unit = 7, .addr = 3, .count = 1});
    assert_int_equal(d->status, LAB_OK);
    assert_int_equal(d->words[0], 1234);
    uint16_t v = 99;
    d = call(fx, fx->bus,
             (lab_modbus_request_t){
                 .op = LAB_MODBUS_WRITE_REGISTER, .unit = 7, .addr = 4, .count = 1, .words = &v});
    assert_int_equal(d->status, LAB_OK);
    assert_int_equal(l.map->tab_registers[4], 99);
    /* discrete inputs (function 02), apart from the coils */
    d = call(
        fx, fx->bus,
        (lab_modbus_request_t){.op = LAB_MODBUS_READ_DISCRETE, .unit = 7, .addr = 2, .count = 2});
    assert_int_equal(d->status, LAB_OK);
    assert_int_equal(d->bits[0], 1);
    assert_int_equal(d->bits[1], 0);
    /* nobody answers for unit 9 on this line */
    d = call(fx, fx->bus,
             (lab_modbus_request_t){
                 .op = LAB_MODBUS_READ_HOLDING, .unit = 9, .count = 1, .timeout_ms = 200});
    assert_int_equal(d->status, LAB_ETIMEDOUT);

    lab_modbus_bus_close(fx->bus);
    fx->bus = NULL;
    __atomic_store_n(&l.stop, 1, __ATOMIC_RELEASE);
    pthread_join(l.srv, NULL);
    pthread_join(l.th, NULL);
    modbus_close(l.ctx);
    modbus_free(l.ctx);
    modbus_mapping_free(l.map);
    for (int i = 0; i < 2; i++) {
        close(l.m[i]);
        close(l.s[i]);
    }
}

/* ---- --bench ---- */

typedef struct bench {
    lab_modbus_bus_t *bus;
    int left, to_submit, failed;
} bench_t;

static void bench_done(lab_modbus_bus_t *bus, const lab_modbus_result_t *r, void *arg)
{
    bench_t *b = arg;
    if (r->status != LAB_OK)
        b->failed++;
    b->left--;
    if (b->to_submit > 0) {
        b->to_submit--;
        lab_modbus_request_t q = {.op = LAB_MODBUS_READ_HOLDING, .unit = 1, .addr = 0, .count = 10};
        lab_modbus_bus_submit(bus, &q, bench_done, b);
    }
}

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Interleaved chunks, so that the machine's drift (other jobs, frequency) hits both sides alike.
 * Two identical servers: one for the plain client, one for the bus. Process CPU per request
 * includes the server thread, the same on both sides, so the difference is the stack's. */
static int run_bench(int n, int depth)
{
    fx_t *fx;
    setup((void **)&fx);
    srv_start(&fx->srv);
    fx->silent.silent = 0;
    srv_start(&fx->silent);

    modbus_t *ctx = modbus_new_tcp("127.0.0.1", fx->silent.port);
    if (modbus_connect(ctx) < 0)
        return 1;
    fx->bus = bus_new(fx, fx->srv.port, "bench");
    while (fx->state != LAB_TRANSPORT_OPEN)
        uv_run(&fx->loop, UV_RUN_ONCE);
    uv_timer_stop(&fx->beat);

    enum { ROUNDS = 10 };
    int chunk = n / ROUNDS, failed = 0;
    uint64_t bare_ns = 0, bare_cpu = 0, via_ns = 0, via_cpu = 0;
    uint16_t regs[10];
    lab_modbus_request_t q = {.op = LAB_MODBUS_READ_HOLDING, .unit = 1, .addr = 0, .count = 10};
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = uv_hrtime(), c0 = cpu_ns();
        for (int i = 0; i < chunk; i++)
            if (modbus_read_registers(ctx, 0, 10, regs) != 10)
                return 1;
        bare_ns += uv_hrtime() - t0;
        bare_cpu += cpu_ns() - c0;

        bench_t b = {.bus = fx->bus, .left = chunk, .to_submit = chunk - depth};
        t0 = uv_hrtime();
        c0 = cpu_ns();
        for (int i = 0; i < depth; i++) /* a driver polling several registers keeps a few queued */
            lab_modbus_bus_submit(fx->bus, &q, bench_done, &b);
        while (b.left > 0)
            uv_run(&fx->loop, UV_RUN_ONCE);
        via_ns += uv_hrtime() - t0;
        via_cpu += cpu_ns() - c0;
        failed += b.failed;
    }
    int total = chunk * ROUNDS;
    double bare = total / (bare_ns / 1e9), via = total / (via_ns / 1e9);
    printf("Modbus TCP polls/s (read 10 holding registers, n=%d, queued %d): plain libmodbus %.0f, "
           "bus worker %.0f (overhead %.1f%%); process CPU per poll %.1f us vs %.1f us; "
           "failures %d\n",
           total, depth, bare, via, (bare / via - 1) * 100, bare_cpu / 1e3 / total,
           via_cpu / 1e3 / total, failed);
    modbus_close(ctx);
    modbus_free(ctx);
    teardown((void **)&fx);
    return failed != 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        lab_log_set_level(LAB_LOG_WARN);
        return run_bench(argc > 2 ? atoi(argv[2]) : 20000, argc > 3 ? atoi(argv[3]) : 1);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registers_and_coils, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_device_times_out_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fd_above_fd_setsize_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rtu_over_a_line, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
