/* Benchmark: what wire recording costs labloopd, beside `debug` logging (the other way to see the
 * wire) and neither, in the same run and the same process. One labloopd with a BioTek reader on
 * a pty and a CN7500 over Modbus TCP (labloop-sim), switched between rounds:
 *
 *   none    recording off (POST .../record), log_level = warn
 *   debug   recording off, log_level = debug (SIGHUP; its stderr goes to its log file)
 *   record  recording on (the default), log_level = warn
 *
 * Each round sends status actions through the HTTP API, reader and controller alternately; a
 * round's figure is the daemon's CPU time per action (every thread: /proc/PID/task/N/schedstat,
 * nanoseconds), each mode's the median of its rounds, the modes taking turns to go first (on a
 * shared machine a round now and then pays for someone else's load). The HTTP handling is the
 * same in the three; the difference is what seeing the wire costs.
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
#include <signal.h>
#include <fcntl.h>
#include <pty.h>
#include <unistd.h>
#include <sys/stat.h>
#include <time.h>

#ifndef LABLOOP_SIM_PATH
#define LABLOOP_SIM_PATH "labloop-sim"
#endif

enum { MODES = 3 };

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
        qsort(per[m], (size_t)rounds, sizeof per[m][0], bench_cmp_double);
        ns[m] = per[m][rounds / 2];
    }
    printf("{\"bench\":\"record_transport_path\",\"round_trips\":%d,\"none_ns\":%.0f,"
           "\"debug_ns\":%.0f,\"record_ns\":%.0f,\"record_extra_ns\":%.0f,"
           "\"debug_extra_ns\":%.0f,\"record_le_debug\":%s}\n",
           per_round * rounds, ns[0], ns[1], ns[2], ns[2] - ns[0], ns[1] - ns[0],
           ns[2] <= ns[1] ? "true" : "false");
    fflush(stdout);
}

/* Rewrites the daemon's log_level and makes it reload (SIGHUP). */
static void set_level(h_daemon_t *d, const char *from, const char *to)
{
    FILE *f = fopen(d->conf, "r");
    char text[8192];
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f)
        fclose(f);
    text[n] = '\0';
    char *at = strstr(text, from);
    if (!at || strlen(from) != strlen(to))
        bench_fail("unexpected daemon config");
    memcpy(at, to, strlen(to));
    f = fopen(d->conf, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        bench_fail("cannot rewrite the config");
    kill(d->pid, SIGHUP);
    h_sleep_ms(150); /* the loop takes the signal at once; what it logs may lag a little */
}

static void set_record(h_daemon_t *d, const char *id, bool on)
{
    char path[256], *resp = NULL;
    snprintf(path, sizeof path, "/v1/instruments/%s/record", id);
    int st = h_http(d->url, "POST", path, "Content-Type: application/json",
                    on ? "{\"on\":true}" : "{\"on\":false}", &resp);
    free(resp);
    if (st != 200)
        bench_fail("the recording switch was refused");
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
    lab_log_set_level(LAB_LOG_WARN);
    transport_path(dir, per_round * 10, rounds);

    char sections[1024], ini[1200];
    snprintf(sections, sizeof sections,
             "[instrument reader1]\ndriver = biotek-synergy\nport = %s/reader1\nsim_plate = P1\n"
             "[instrument heat1]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
             "map = omega-cn7500\nunit = 1\npoll_s = 0\n",
             dir, h_free_port());
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = 1\nsim_seed = 3\n%s", sections);
    h_sim_t sim;
    if (h_sim_start(&sim, ini))
        bench_fail("labloop-sim did not start");
    h_daemon_t d;
    bench_daemon_start_quiet(&d, NULL, NULL, sections);
    const char *id[2] = {"reader1", "heat1"};
    for (int k = 0; k < 2; k++) {
        wait_idle(&d, id[k]);
        for (int i = 0; i < 10; i++) /* warm up: connections, schemas, first files */
            action(&d, id[k]);
    }

    static double per[MODES][1000];
    double wall[MODES] = {0};
    int mode = 2; /* recording on (the default), warn */
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < MODES; k++) {
            int m = (k + r) % MODES; /* each mode goes first in turn */
            if ((m == 2) != (mode == 2))
                for (int j = 0; j < 2; j++)
                    set_record(&d, id[j], m == 2);
            if ((m == 1) != (mode == 1))
                set_level(&d, m == 1 ? "log_level = warn " : "log_level = debug",
                          m == 1 ? "log_level = debug" : "log_level = warn ");
            mode = m;
            double c0 = cpu_ns(d.pid), t0 = now_s();
            for (int i = 0; i < per_round; i++)
                action(&d, id[i % 2]);
            wall[m] += now_s() - t0;
            per[m][r] = (cpu_ns(d.pid) - c0) / per_round / 1e3;
        }
    int n = per_round * rounds;
    double us[MODES];
    for (int m = 0; m < MODES; m++) {
        qsort(per[m], (size_t)rounds, sizeof per[m][0], bench_cmp_double);
        us[m] = per[m][rounds / 2];
    }
    printf("{\"bench\":\"record_cost\",\"actions\":%d,\"none_cpu_us\":%.1f,\"debug_cpu_us\":%.1f,"
           "\"record_cpu_us\":%.1f,\"record_over_none_pct\":%.1f,\"debug_over_none_pct\":%.1f,"
           "\"record_le_debug\":%s,\"none_per_s\":%.0f,\"debug_per_s\":%.0f,"
           "\"record_per_s\":%.0f}\n",
           n, us[0], us[1], us[2], 100 * (us[2] - us[0]) / us[0], 100 * (us[1] - us[0]) / us[0],
           us[2] <= us[1] ? "true" : "false", n / wall[0], n / wall[1], n / wall[2]);
    h_daemon_destroy(&d);
    h_sim_stop(&sim);
    h_rmtree(dir);
    return 0;
}
