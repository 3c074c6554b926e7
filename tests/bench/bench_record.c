/* Benchmark: what wire recording costs labloopd, beside `debug` logging (the other way to see the
 * wire) and neither, in the same run. Three labloopd processes run side by side, each with its
 * own BioTek reader on a pty and CN7500 over Modbus TCP served by one labloop-sim:
 *
 *   none    record = off, log_level = warn
 *   debug   record = off, log_level = debug (the daemon's stderr to its log file, as in service)
 *   record  recording on (the default: STATE_DIR/wire/ID.wire), log_level = warn
 *
 * Each round sends the same status actions through the HTTP API to each daemon in turn (reader
 * and controller alternately); a round's figure is the daemon's CPU time per action (every
 * thread: /proc/PID/task/N/schedstat, nanoseconds), and each mode's figure the median of its
 * rounds (on a shared machine a round now and then pays for someone else's load). The HTTP
 * handling is the same in the three; the difference is what seeing the wire costs.
 *
 * A second figure takes HTTP out: round trips through a tty transport in this process (32 bytes
 * out, 32 back through a pty, the test playing the device), the process's CPU time per round
 * trip with the same three settings (debug lines to a file), medians of interleaved rounds.
 *
 *   bench_record [ACTIONS_PER_ROUND [ROUNDS]]    defaults 100 and 31 */
#include "tests/bench/bench_util.h"

#include "core/log.h"
#include "drivers/transport/transport.h"
#include "drivers/transport/wirerec.h"

#include <dirent.h>
#include <fcntl.h>
#include <pty.h>
#include <unistd.h>
#include <sys/stat.h>
#include <time.h>

#ifndef LABLOOP_SIM_PATH
#define LABLOOP_SIM_PATH "labloop-sim"
#endif

enum { MODES = 3 };
static const char *const mode_names[MODES] = {"none", "debug", "record"};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU nanoseconds of every thread of pid (the writer threads included). */
static double cpu_ns(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        bench_fail("cannot read the daemon's threads");
    double sum = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char p[384];
        snprintf(p, sizeof p, "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        FILE *f = fopen(p, "r");
        unsigned long long ns = 0;
        if (f) {
            if (fscanf(f, "%llu", &ns) != 1)
                ns = 0;
            fclose(f);
        }
        sum += (double)ns;
    }
    closedir(d);
    return sum;
}

static void wait_idle(h_daemon_t *d, const char *id)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/instruments/%s", id);
    for (double end = now_s() + 30; now_s() < end; h_sleep_ms(20)) {
        char *resp = NULL;
        int st = h_http(d->url, "GET", path, NULL, NULL, &resp);
        bool idle = st == 200 && resp && strstr(resp, "\"state\":\"idle\"");
        free(resp);
        if (idle)
            return;
    }
    bench_fail("an instrument did not come up");
}

static void action(h_daemon_t *d, const char *id)
{
    char path[256], *resp = NULL;
    snprintf(path, sizeof path, "/v1/instruments/%s/actions", id);
    int st = h_http(d->url, "POST", path, "Content-Type: application/json",
                    "{\"action\":\"status\"}", &resp);
    if (st != 200) {
        fprintf(stderr, "bench: %s status: %d %s\n", id, st, resp ? resp : "");
        exit(1);
    }
    free(resp);
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- the transport path, in process ---- */

static size_t got;
static lab_transport_state_t tstate;

static void t_data(lab_transport_t *t, const uint8_t *d, size_t n, void *u)
{
    (void)t, (void)d, (void)u;
    got += n;
}

static void t_state(lab_transport_t *t, lab_transport_state_t s, int e, const char *r, void *u)
{
    (void)t, (void)e, (void)r, (void)u;
    tstate = s;
}

static double proc_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void transport_path(const char *dir, int per_round, int rounds)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int master, slave;
    char name[128];
    if (openpty(&master, &slave, name, NULL, NULL) != 0)
        bench_fail("openpty");
    lab_wirerec_opts_t o = {.id = "bench-tty", .driver = "bench", .keep = 1};
    lab_wirerec_t *rec = lab_wirerec_new(&o);
    char wire[300], logf[300];
    snprintf(wire, sizeof wire, "%s/bench-tty.wire", dir);
    snprintf(logf, sizeof logf, "%s/debug.log", dir);
    lab_transport_settings_t s;
    lab_transport_settings_init(&s);
    s.kind = LAB_TRANSPORT_TTY;
    s.path = name;
    lab_transport_callbacks_t cb = {t_data, t_state, NULL};
    lab_transport_t *t;
    char err[300];
    if (lab_transport_new(&loop, &s, "bench-tty", &cb, &t, err, sizeof err) ||
        lab_transport_open(t))
        bench_fail(err);
    while (tstate != LAB_TRANSPORT_OPEN)
        uv_run(&loop, UV_RUN_ONCE);
    int saved_err = dup(2), logfd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    static double per[MODES][1000];
    uint8_t out[32], back[64];
    memset(out, 0x5a, sizeof out);
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < MODES; k++) {
            int m = (k + r) % MODES;
            if (m == 1) {
                dup2(logfd, 2);
                lab_log_set_level(LAB_LOG_DEBUG);
            } else if (m == 2 && lab_wirerec_start(rec, wire, err, sizeof err) != 0) {
                bench_fail(err);
            }
            double c0 = proc_cpu_s();
            for (int i = 0; i < per_round; i++) {
                size_t want = got + sizeof out;
                if (lab_transport_write(t, out, sizeof out, NULL, NULL) != 0)
                    bench_fail("transport write");
                size_t n = 0;
                while (n < sizeof out) {
                    ssize_t k2 = read(master, back, sizeof back);
                    if (k2 <= 0)
                        bench_fail("pty read");
                    n += (size_t)k2;
                }
                if (write(master, out, sizeof out) != (ssize_t)sizeof out)
                    bench_fail("pty write");
                while (got < want)
                    uv_run(&loop, UV_RUN_ONCE);
            }
            if (m == 2)
                lab_wirerec_flush(rec); /* the writer's work counts too */
            per[m][r] = (proc_cpu_s() - c0) / per_round * 1e9;
            if (m == 1) {
                lab_log_set_level(LAB_LOG_WARN);
                dup2(saved_err, 2);
            } else if (m == 2) {
                lab_wirerec_stop(rec);
            }
        }
    close(logfd);
    close(saved_err);
    lab_transport_close(t);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    close(master);
    close(slave);
    lab_wirerec_close(rec);
    double ns[MODES];
    for (int m = 0; m < MODES; m++) {
        qsort(per[m], (size_t)rounds, sizeof per[m][0], cmp_double);
        ns[m] = per[m][rounds / 2];
    }
    printf("{\"bench\":\"record_transport_path\",\"round_trips\":%d,\"none_ns\":%.0f,"
           "\"debug_ns\":%.0f,\"record_ns\":%.0f,\"record_extra_ns\":%.0f,"
           "\"debug_extra_ns\":%.0f,\"record_le_debug\":%s}\n",
           per_round * rounds, ns[0], ns[1], ns[2], ns[2] - ns[0], ns[1] - ns[0],
           ns[2] <= ns[1] ? "true" : "false");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int per_round = argc > 1 ? atoi(argv[1]) : 100;
    int rounds = argc > 2 ? atoi(argv[2]) : 31;
    if (per_round < 2 || rounds < 1 || rounds > 1000)
        bench_fail("usage: bench_record [ACTIONS_PER_ROUND [ROUNDS]]");
    setenv("LABLOOP_SIM", LABLOOP_SIM_PATH, 0);
    setenv("LABLOOPD", LABLOOPD_PATH, 0);

    char dir[256];
    if (h_tempdir("labbench-rec", dir, sizeof dir))
        bench_fail("no temporary directory");
    int mb[MODES];
    char sim_ini[4096] = "[labloop]\ntime_scale = 1\nsim_seed = 3\n", daemon_sec[MODES][1024];
    for (int m = 0; m < MODES; m++) {
        mb[m] = h_free_port();
        char sec[800];
        snprintf(sec, sizeof sec,
                 "[instrument reader_%s]\ndriver = biotek-synergy\nport = %s/reader_%s\n"
                 "sim_plate = P1\n"
                 "[instrument heat_%s]\ndriver = modbus-temperature\n"
                 "modbus = tcp://127.0.0.1:%d\nmap = omega-cn7500\nunit = 1\npoll_s = 0\n",
                 mode_names[m], dir, mode_names[m], mode_names[m], mb[m]);
        strncat(sim_ini, sec, sizeof sim_ini - strlen(sim_ini) - 1);
        /* the daemon's copy: the same sections, with the mode's record key */
        const char *rec = m == 2 ? "" : "record = off\n";
        snprintf(daemon_sec[m], sizeof daemon_sec[m],
                 "[instrument reader_%s]\ndriver = biotek-synergy\nport = %s/reader_%s\n%s"
                 "[instrument heat_%s]\ndriver = modbus-temperature\n"
                 "modbus = tcp://127.0.0.1:%d\nmap = omega-cn7500\nunit = 1\npoll_s = 0\n%s",
                 mode_names[m], dir, mode_names[m], rec, mode_names[m], mb[m], rec);
    }
    lab_log_set_level(LAB_LOG_WARN);
    transport_path(dir, per_round * 10, rounds);

    h_sim_t sim;
    if (h_sim_start(&sim, sim_ini))
        bench_fail("labloop-sim did not start");

    h_daemon_t d[MODES];
    for (int m = 0; m < MODES; m++) {
        if (m == 1) { /* the harness's config logs at debug already */
            if (h_daemon_start(&d[m], NULL, NULL, daemon_sec[m]))
                bench_fail("labloopd did not start");
        } else {
            bench_daemon_start_quiet(&d[m], NULL, NULL, daemon_sec[m]);
        }
    }
    char id[MODES][2][32];
    for (int m = 0; m < MODES; m++) {
        snprintf(id[m][0], sizeof id[m][0], "reader_%s", mode_names[m]);
        snprintf(id[m][1], sizeof id[m][1], "heat_%s", mode_names[m]);
        for (int k = 0; k < 2; k++) {
            wait_idle(&d[m], id[m][k]);
            for (int i = 0; i < 10; i++) /* warm up: connections, schemas, first files */
                action(&d[m], id[m][k]);
        }
    }

    static double per[MODES][1000];
    double wall[MODES] = {0};
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < MODES; k++) {
            int m = (k + r) % MODES; /* each mode goes first in turn */
            double c0 = cpu_ns(d[m].pid), t0 = now_s();
            for (int i = 0; i < per_round; i++)
                action(&d[m], id[m][i % 2]);
            wall[m] += now_s() - t0;
            per[m][r] = (cpu_ns(d[m].pid) - c0) / per_round / 1e3;
        }
    int n = per_round * rounds;
    double us[MODES];
    for (int m = 0; m < MODES; m++) {
        qsort(per[m], (size_t)rounds, sizeof per[m][0], cmp_double);
        us[m] = per[m][rounds / 2];
    }
    char wire[MODES][600];
    long long rec_bytes = 0;
    for (int k = 0; k < 2; k++) {
        snprintf(wire[k], sizeof wire[k], "%s/state/wire/%s.wire", d[2].dir, id[2][k]);
        rec_bytes += file_size(wire[k]);
    }
    long long log_bytes = file_size(d[1].log);
    printf("{\"bench\":\"record_cost\",\"actions\":%d,\"none_cpu_us\":%.1f,\"debug_cpu_us\":%.1f,"
           "\"record_cpu_us\":%.1f,\"record_over_none_pct\":%.1f,\"debug_over_none_pct\":%.1f,"
           "\"record_le_debug\":%s,\"none_per_s\":%.0f,\"debug_per_s\":%.0f,"
           "\"record_per_s\":%.0f,\"record_file_bytes\":%lld,\"debug_log_bytes\":%lld}\n",
           n, us[0], us[1], us[2], 100 * (us[2] - us[0]) / us[0], 100 * (us[1] - us[0]) / us[0],
           us[2] <= us[1] ? "true" : "false", n / wall[0], n / wall[1], n / wall[2], rec_bytes,
           log_bytes);
    for (int m = 0; m < MODES; m++)
        h_daemon_destroy(&d[m]);
    h_sim_stop(&sim);
    h_rmtree(dir);
    return 0;
}
