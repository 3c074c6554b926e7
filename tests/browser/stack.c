/* The servers a browser test needs, started with the test harness: PostgreSQL, mosquitto,
 * labloop-sim (an incubator, a liquid handler, a plate reader and a Modbus heater) and labloopd
 * with a tokens file (a viewer, a technician and an admin) and the assay workflow stored. It prints
 * one JSON line on stdout ({"url", "tokens": {ROLE: TOKEN}, "sim_ctl", "dir", "pg", "mqtt"}), then
 * waits until its standard input closes (or SIGTERM/SIGINT) and stops everything it started.
 * tests/browser/browser.py runs it; `stack --keep` leaves the directories for inspection.
 * `stack --seed N` (the page benchmark) runs one assay run, then stores N copies of it as a day's
 * load (tests/bench/load_day.c) before labloopd starts again; the line then also holds "run",
 * the id of the run it ran. */
#include "tests/bench/load_day.h"
#include "tests/harness/harness.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <unistd.h>

#define TOK_VIEWER "viewer-0c5d1e7a93"
#define TOK_TECH "tech-4b2f86d1e0"
#define TOK_ADMIN "admin-9e13a7c5b8"

/* The assay at a test's pace (time_scale 60): 3 columns dispensed, 2 min incubation, read. */
static const char wf_assay[] =
    "{\"name\":\"assay\",\"description\":\"dispense, incubate 2 min at 37 degC, read within 2 "
    "min\","
    "\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":120,"
    "\"params\":{\"reagent\":\"substrate\",\"volume_ul\":50,\"wells\":\"A1:H3\"}},"
    "{\"name\":\"incubate\",\"op\":\"incubate\",\"on\":\"incubator\",\"duration_s\":120,"
    "\"params\":{\"temperature_c\":37},\"start_within_s\":300},"
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"plate_reader\",\"duration_s\":90,"
    "\"params\":{\"wavelength_nm\":450},\"start_within_s\":120}],"
    "\"on_failure\":{\"action\":\"retry\",\"retries\":1}}";

/* A read whose failure waits for an operator (the Operator page's paused run). */
static const char wf_readonly[] =
    "{\"name\":\"read-only\",\"description\":\"read; a failure pauses the run\",\"steps\":["
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"reader1\",\"duration_s\":90,"
    "\"params\":{\"wavelength_nm\":450,\"wells\":\"A1:B2\"}}],"
    "\"on_failure\":{\"action\":\"pause\"}}";

/* With --mover: a dispense then a read, the plate carried between them by a person. */
static const char wf_moved[] =
    "{\"name\":\"moved\",\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"star1\",\"duration_s\":60,"
    "\"params\":{\"reagent\":\"substrate\",\"volume_ul\":20,\"wells\":\"A1:H1\"}},"
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"reader1\",\"duration_s\":90,"
    "\"params\":{\"wavelength_nm\":450},\"start_within_s\":3600}]}";

static volatile sig_atomic_t stop_asked;

/* One assay run through the API, waited for; then n copies of it stored while labloopd is
 * stopped, and labloopd started again on them. The run's id into run. */
static int seed_load(h_daemon_t *d, int n, char run[64])
{
    char *queued = NULL, *done = NULL, path[128], state_dir[300];
    json_t *doc = NULL;
    int rc = -1;
    int st = h_http(d->url, "POST", "/v1/runs",
                    "Content-Type: application/json\nAuthorization: Bearer " TOK_TECH,
                    "{\"workflow\":\"assay\",\"plate\":\"LOAD-T\"}", &queued);
    doc = st == 201 ? json_loads(queued, 0, NULL) : NULL;
    if (!json_is_string(json_object_get(doc, "id"))) {
        fprintf(stderr, "stack: POST /v1/runs: %d %s\n", st, queued ? queued : "");
        goto fail;
    }
    snprintf(run, 64, "%s", json_string_value(json_object_get(doc, "id")));
    snprintf(path, sizeof path, "/v1/runs/%s", run);
    for (int i = 0; i < 1800; i++) { /* 180 s: the assay takes ~6 s at time_scale 60 */
        free(done);
        done = NULL;
        json_decref(doc);
        st = h_http(d->url, "GET", path, "Authorization: Bearer " TOK_TECH, NULL, &done);
        doc = st == 200 ? json_loads(done, 0, NULL) : NULL;
        const char *s = json_string_value(json_object_get(doc, "state"));
        if (s && strcmp(s, "done") == 0)
            break;
        if (s && (strcmp(s, "failed") == 0 || strcmp(s, "cancelled") == 0))
            break;
        usleep(100 * 1000);
    }
    const char *s = json_string_value(json_object_get(doc, "state"));
    if (!s || strcmp(s, "done") != 0) {
        fprintf(stderr, "stack: the template run did not finish: %s\n", done ? done : "");
        goto fail;
    }
    snprintf(state_dir, sizeof state_dir, "%s/state", d->dir);
    if (h_daemon_stop(d) != 0)
        goto fail;
    int lrc = load_day(state_dir, queued, done, n);
    if (lrc < 0) {
        fprintf(stderr, "stack: load_day: error %d\n", lrc);
        goto fail;
    }
    rc = h_daemon_restart(d);
fail:
    json_decref(doc);
    free(queued);
    free(done);
    return rc;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_asked = 1;
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int post_workflow(const char *url, const char *wf)
{
    char *resp = NULL;
    int st = h_http(url, "POST", "/v1/workflows",
                    "Content-Type: application/json\nAuthorization: Bearer " TOK_ADMIN, wf, &resp);
    if (st != 201 && st != 200)
        fprintf(stderr, "stack: POST /v1/workflows: %d %s\n", st, resp ? resp : "");
    free(resp);
    return st == 201 || st == 200 ? 0 : -1;
}

/* stack [--keep] [--mover]: --mover adds a manual mover (arm1), so that every plate's move
 * between instruments waits for a person, and the workflow "moved". */
int main(int argc, char **argv)
{
    bool keep = false, mover = false;
    int seed = -1; /* --seed 0: the template run alone */
    char run[64] = "";
    for (int i = 1; i < argc; i++) {
        keep |= strcmp(argv[i], "--keep") == 0;
        mover |= strcmp(argv[i], "--mover") == 0;
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > 100000) {
                fprintf(stderr, "stack: --seed wants a count from 0 to 100000\n");
                return 2;
            }
            seed = (int)v;
        }
    }
    if (keep)
        setenv("H_KEEP", "1", 1);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    static h_pg_t pg;
    static h_mqtt_t mq;
    static h_sim_t sim;
    static h_daemon_t d;
    char dir[256] = "", sections[4096], ini[5000], extra[5000], tokens[300];
    int rc = 1;
    if (h_pg_start(&pg) || h_mqtt_start(&mq) || h_tempdir("labbrowser", dir, sizeof dir))
        goto fail;
    int rd = h_free_port(), mb = h_free_port();
    snprintf(sections, sizeof sections,
             "[instrument inc1]\ndriver = liconic-stx\nrack_type = liconic_rack_17mm_22\n"
             "port = %s/inc1\nsim_plate = P1\nsim_step_seconds = 2\ncapacity = 8\n"
             "sim_from = star1\nsim_to = reader1\n"
             "[instrument star1]\ndriver = hamilton-star\nport = %s/star1\nsim_plate = P1\n"
             "sim_reagents = substrate,inhibitor\nsim_step_seconds = 5\n"
             "reagents = substrate,inhibitor\n"
             "[instrument reader1]\ndriver = biotek-synergy\nport = tcp://127.0.0.1:%d\n"
             "sim_plate = P1\n"
             "[instrument heater1]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
             "map = omega-cn7500\nunit = 1\nsim_ambient = 22\nsim_tau = 60\n",
             dir, dir, rd, mb);
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = 60\nsim_seed = 3\nsim_noise = 0.001\n%s",
             sections);
    if (h_sim_start(&sim, ini))
        goto fail;
    snprintf(tokens, sizeof tokens, "%s/tokens", dir);
    if (write_text(tokens, TOK_VIEWER " viewer vera\n" TOK_TECH " technician tom\n" TOK_ADMIN
                                      " admin ada\n")) {
        perror(tokens);
        goto fail;
    }
    /* the mover is the daemon's alone: a person, not a simulated device */
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = 60\n%s%s[auth]\ntokens = %s\n", sections,
             mover ? "[instrument arm1]\ndriver = manual-mover\n" : "", tokens);
    if (h_daemon_start(&d, &pg, &mq, extra))
        goto fail;
    if (post_workflow(d.url, wf_assay) || post_workflow(d.url, wf_readonly) ||
        (mover && post_workflow(d.url, wf_moved)))
        goto fail;
    if (seed >= 0 && seed_load(&d, seed, run))
        goto fail;

    json_t *info =
        json_pack("{s:s, s:{s:s, s:s, s:s}, s:s, s:s, s:s, s:s, s:s}", "url", d.url, "tokens",
                  "viewer", TOK_VIEWER, "technician", TOK_TECH, "admin", TOK_ADMIN, "sim_ctl",
                  sim.ctl, "dir", d.dir, "log", d.log, "pg", pg.conninfo, "mqtt", mq.uri);
    if (run[0])
        json_object_set_new(info, "run", json_string(run));
    char *line = json_dumps(info, JSON_COMPACT);
    json_decref(info);
    printf("%s\n", line);
    fflush(stdout);
    free(line);

    /* Until stdin closes (the test ended, or died) or a signal; the daemon ending by itself is
     * an error the test sees as a refused connection, and is reported here. */
    char buf[256];
    while (!stop_asked) {
        int status;
        if (h_daemon_exited(&d, &status) == 1) {
            fprintf(stderr, "stack: labloopd ended by itself (status %d); see %s\n", status, d.log);
            goto fail;
        }
        struct pollfd pfd = {.fd = 0, .events = POLLIN};
        if (poll(&pfd, 1, 1000) > 0 && read(0, buf, sizeof buf) <= 0)
            break;
    }
    rc = 0;
fail:
    if (d.pid > 0 && h_daemon_stop(&d) != 0)
        rc = 1;
    if (!keep && d.dir[0])
        h_daemon_destroy(&d);
    if (sim.pid > 0)
        h_sim_stop(&sim);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
    if (!keep && dir[0])
        h_rmtree(dir);
    return rc;
}
