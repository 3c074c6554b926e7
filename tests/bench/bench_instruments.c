/* Benchmark: what the instrument stack costs over the wire it drives, each figure beside a bare
 * baseline on the same simulated instruments in the same run (labloop-sim as a process).
 *
 *  1. pty round trips: a BioTek temperature query ('h', answered by an ACK ... ETX frame) as
 *     fast as the reader answers, through lab_driver_call -> biotek-synergy -> the tty
 *     transport -> the pty, against a blocking write/read loop on the same pty;
 *  2. Modbus TCP polls across 20 simulated temperature controllers: the modbus-temperature
 *     driver's status (PV, SV, run coil) on every controller, each instrument keeping one
 *     operation in flight, against a plain synchronous libmodbus loop making the same reads.
 *
 *   bench_instruments [ROUND_TRIPS [POLLS_PER_CONTROLLER]]    defaults 3000 and 300 */
#include "tests/bench/bench_util.h"

#include "core/log.h"
#include "drivers/driver.h"

#include <fcntl.h>
#include <modbus.h>
#include <poll.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#ifndef LABLOOP_SIM_PATH
#define LABLOOP_SIM_PATH "labloop-sim"
#endif

enum { CONTROLLERS = 20 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- a driver on a private loop ---- */

static uv_loop_t loop;
static int remaining, completed, failed;

static lab_driver_t *driver(const char *id, lab_drv_kv_t *kv, size_t n)
{
    lab_drv_conf_t c = {.id = id, .line = 1, .kv = kv, .n = n, .time_scale = 1};
    char err[256];
    lab_driver_t *d = NULL;
    if (lab_driver_new(&loop, &c, NULL, &d, err, sizeof err) != 0)
        bench_fail(err);
    lab_driver_start(d);
    return d;
}

static void wait_idle(lab_driver_t **d, int n)
{
    double end = now_s() + 20;
    for (;;) {
        int idle = 0;
        for (int i = 0; i < n; i++)
            idle += lab_driver_state(d[i]) == LAB_INST_IDLE;
        if (idle == n)
            return;
        if (now_s() > end)
            bench_fail("the instruments did not come up");
        uv_run(&loop, UV_RUN_ONCE);
    }
}

static void again(lab_driver_t *d, const lab_drv_error_t *e, json_t *res, void *arg);

static void issue(lab_driver_t *d)
{
    lab_drv_error_t e;
    if (lab_driver_call(d, "status", NULL, 0, again, NULL, &e, NULL) != 0)
        bench_fail(e.text);
}

static void again(lab_driver_t *d, const lab_drv_error_t *e, json_t *res, void *arg)
{
    (void)res;
    (void)arg;
    if (e->code != LAB_OK) {
        failed++;
        fprintf(stderr, "bench: %s: %s\n", lab_driver_id(d), e->text);
    }
    completed++;
    if (remaining > 0) {
        remaining--;
        issue(d);
    }
}

static void close_all(lab_driver_t **d, int n)
{
    for (int i = 0; i < n; i++)
        lab_driver_close(d[i], NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* ---- 1. pty round trips ---- */

static int open_raw(const char *path)
{
    int fd = open(path, O_RDWR | O_NOCTTY);
    if (fd < 0)
        bench_fail("cannot open the reader's pty");
    struct termios t;
    tcgetattr(fd, &t);
    cfmakeraw(&t);
    tcsetattr(fd, TCSANOW, &t);
    return fd;
}

static void bare_round_trip(int fd)
{
    if (write(fd, "h", 1) != 1)
        bench_fail("write");
    /* As a careful hand-written client would: whatever is there, until the frame's ETX. */
    char buf[256];
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t r = poll(&p, 1, 5000) == 1 ? read(fd, buf, sizeof buf) : -1;
        if (r <= 0)
            bench_fail("the reader stopped answering");
        if (memchr(buf, 0x03, (size_t)r))
            return;
    }
}

static void bench_pty(const char *path, int n)
{
    /* Baseline first, on a pty nobody else holds. */
    int fd = open_raw(path);
    for (int i = 0; i < 50; i++)
        bare_round_trip(fd);
    double c0 = cpu_s(), t0 = now_s();
    for (int i = 0; i < n; i++)
        bare_round_trip(fd);
    double bare_s = now_s() - t0, bare_cpu = cpu_s() - c0;
    close(fd);

    lab_drv_kv_t kv[] = {{"driver", "biotek-synergy", 1}, {"port", path, 2}, {"poll_s", "0", 3}};
    lab_driver_t *d = driver("reader1", kv, 3);
    wait_idle(&d, 1);
    completed = failed = 0;
    remaining = n - 1;
    c0 = cpu_s();
    t0 = now_s();
    issue(d);
    while (completed < n)
        uv_run(&loop, UV_RUN_ONCE);
    double stack_s = now_s() - t0, stack_cpu = cpu_s() - c0;
    close_all(&d, 1);
    double bare = n / bare_s, stack = n / stack_s;
    printf("{\"bench\":\"pty_round_trips\",\"round_trips\":%d,\"bare_per_s\":%.0f,"
           "\"stack_per_s\":%.0f,\"overhead_pct\":%.1f,\"bare_cpu_us\":%.1f,"
           "\"stack_cpu_us\":%.1f,\"failed\":%d,\"target_overhead_pct\":10}\n",
           n, bare, stack, (bare / stack - 1) * 100, bare_cpu / n * 1e6, stack_cpu / n * 1e6,
           failed);
    fflush(stdout);
}

/* ---- 2. Modbus polls ---- */

static void bench_modbus(const int *ports, int per)
{
    /* Baseline: one thread, one libmodbus context per controller, the same reads in turn. */
    modbus_t *ctx[CONTROLLERS];
    for (int i = 0; i < CONTROLLERS; i++) {
        ctx[i] = modbus_new_tcp("127.0.0.1", ports[i]);
        if (!ctx[i] || modbus_connect(ctx[i]) != 0)
            bench_fail("baseline: cannot connect");
        modbus_set_slave(ctx[i], 1);
    }
    uint16_t w[2];
    uint8_t b[1];
    int bad = 0;
    double c0 = cpu_s(), t0 = now_s();
    for (int k = 0; k < per; k++)
        for (int i = 0; i < CONTROLLERS; i++) {
            /* PV, SV, run coil: the three requests the driver's status makes */
            bad += modbus_read_registers(ctx[i], 0x1000, 1, w) != 1;
            bad += modbus_read_registers(ctx[i], 0x1001, 1, w + 1) != 1;
            bad += modbus_read_bits(ctx[i], 0x0814, 1, b) != 1;
        }
    double bare_s = now_s() - t0, bare_cpu = cpu_s() - c0;
    for (int i = 0; i < CONTROLLERS; i++) {
        modbus_close(ctx[i]);
        modbus_free(ctx[i]);
    }

    lab_driver_t *d[CONTROLLERS];
    char uri[CONTROLLERS][64], id[CONTROLLERS][16];
    for (int i = 0; i < CONTROLLERS; i++) {
        snprintf(uri[i], sizeof uri[i], "tcp://127.0.0.1:%d", ports[i]);
        snprintf(id[i], sizeof id[i], "heat%d", i + 1);
        lab_drv_kv_t kv[] = {{"driver", "modbus-temperature", 1},
                             {"modbus", uri[i], 2},
                             {"map", "omega-cn7500", 3},
                             {"poll_s", "0", 4}};
        d[i] = driver(id[i], kv, 4);
    }
    wait_idle(d, CONTROLLERS);
    int n = per * CONTROLLERS;
    completed = failed = 0;
    remaining = n - CONTROLLERS;
    c0 = cpu_s();
    t0 = now_s();
    for (int i = 0; i < CONTROLLERS; i++)
        issue(d[i]);
    while (completed < n)
        uv_run(&loop, UV_RUN_ONCE);
    double stack_s = now_s() - t0, stack_cpu = cpu_s() - c0;
    close_all(d, CONTROLLERS);
    double bare = n / bare_s, stack = n / stack_s;
    printf("{\"bench\":\"modbus_polls\",\"controllers\":%d,\"polls\":%d,\"bare_sync_per_s\":%.0f,"
           "\"stack_per_s\":%.0f,\"overhead_pct\":%.1f,\"bare_cpu_us\":%.1f,"
           "\"stack_cpu_us\":%.1f,\"failed\":%d,\"baseline_failed\":%d,"
           "\"target_overhead_pct\":10}\n",
           CONTROLLERS, n, bare, stack, (bare / stack - 1) * 100, bare_cpu / n * 1e6,
           stack_cpu / n * 1e6, failed, bad);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int trips = argc > 1 ? atoi(argv[1]) : 3000;
    int per = argc > 2 ? atoi(argv[2]) : 300;
    lab_log_set_level(LAB_LOG_ERROR);
    setenv("LABLOOP_SIM", LABLOOP_SIM_PATH, 0);
    uv_loop_init(&loop);
    char dir[256];
    if (h_tempdir("labbench", dir, sizeof dir))
        bench_fail("tempdir");
    int ports[CONTROLLERS];
    char ini[8192], reader[400];
    snprintf(reader, sizeof reader, "%s/reader1", dir);
    int n = snprintf(ini, sizeof ini,
                     "[labloop]\ntime_scale = 1\n[instrument reader1]\ndriver = biotek-synergy\n"
                     "port = %s\nsim_plate = P1\n",
                     reader);
    for (int i = 0; i < CONTROLLERS; i++) {
        ports[i] = h_free_port();
        n += snprintf(ini + n, sizeof ini - (size_t)n,
                      "[instrument heat%d]\ndriver = modbus-temperature\n"
                      "modbus = tcp://127.0.0.1:%d\nmap = omega-cn7500\nunit = 1\n",
                      i + 1, ports[i]);
    }
    h_sim_t sim;
    if (h_sim_start(&sim, ini))
        bench_fail("labloop-sim did not start");
    bench_pty(reader, trips);
    bench_modbus(ports, per);
    h_sim_stop(&sim);
    h_rmtree(dir);
    uv_loop_close(&loop);
    return 0;
}
