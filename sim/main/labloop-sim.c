/* labloop-sim: serves labloop's instruments from the daemon's own configuration file, in the
 * foreground, logging on stderr, until TERM or INT. --replay FILE plays a wire recording as the
 * instrument its header names, on that instrument's link; exit status 3 when a host sent a request
 * a recording never saw. */
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "sim/log.h"
#include "sim/replay.h"
#include "sim/sim.h"

static sim_t *g_sim;

static void on_signal(uv_signal_t *h, int signum)
{
    sim_info("main", "signal %d: stopping", signum);
    sim_stop(g_sim);
    uv_close((uv_handle_t *)h, NULL);
    uv_signal_t *other = h->data;
    if (!uv_is_closing((uv_handle_t *)other))
        uv_close((uv_handle_t *)other, NULL);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: labloop-sim -c FILE [--control PATH] [--fault ID:KIND[:SECONDS]]...\n"
               "                  [--replay RECORDING]... [--strict]\n"
               "  KIND: timeout | garbage | error | disconnect\n"
               "  --replay: the instrument named in the recording's header answers as recorded\n"
               "  --strict: stop at the first request a recording never saw (exit status 3)\n");
}

/* Loads a recording and gives it to the instrument of the same id. */
static int replay_attach(sim_cfg_t *cfg, const char *config, const char *path)
{
    char err[1024];
    replay_t *rp = calloc(1, sizeof *rp);
    if (!rp || replay_load(rp, path, err, sizeof err)) {
        fprintf(stderr, "labloop-sim: --replay %s\n", rp ? err : "out of memory");
        free(rp);
        return -1;
    }
    for (int i = 0; i < cfg->n; i++) {
        if (strcmp(cfg->inst[i].id, rp->id) != 0)
            continue;
        if (cfg->inst[i].replay) {
            fprintf(stderr, "labloop-sim: --replay %s: instrument '%s' has a recording already\n",
                    path, rp->id);
            break;
        }
        cfg->inst[i].replay = rp;
        return 0;
    }
    if (!cfg->n || strcmp(cfg->inst[cfg->n - 1].id, rp->id) != 0)
        fprintf(stderr,
                "labloop-sim: --replay %s: the recording is of instrument '%s'; %s has no "
                "[instrument %s]\n",
                path, rp->id, config, rp->id);
    replay_free(rp);
    free(rp);
    return -1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"control", required_argument, NULL, 'k'},
                                         {"fault", required_argument, NULL, 'f'},
                                         {"replay", required_argument, NULL, 'r'},
                                         {"strict", no_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL, *control = NULL;
    char *faults[32];
    const char *replays[SIM_INST_MAX];
    int nfaults = 0, nreplays = 0, strict = 0, o;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            config = optarg;
            break;
        case 'k':
            control = optarg;
            break;
        case 'f':
            if (nfaults == 32) {
                fprintf(stderr, "labloop-sim: too many --fault options\n");
                return 2;
            }
            faults[nfaults++] = optarg;
            break;
        case 'r':
            if (nreplays == SIM_INST_MAX) {
                fprintf(stderr, "labloop-sim: too many --replay options\n");
                return 2;
            }
            replays[nreplays++] = optarg;
            break;
        case 's':
            strict = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!config || optind != argc) {
        usage(stderr);
        return 2;
    }
    static sim_cfg_t cfg;
    char err[1024];
    if (sim_cfg_load(config, &cfg, err, sizeof err)) {
        fprintf(stderr, "labloop-sim: %s\n", err);
        return 1;
    }
    cfg.replay_strict = strict;
    for (int i = 0; i < nreplays; i++)
        if (replay_attach(&cfg, config, replays[i]))
            return 1;
    char ctl[1024];
    if (control) {
        snprintf(ctl, sizeof ctl, "%s", control);
    } else {
        char copy[1024];
        snprintf(copy, sizeof copy, "%s", config);
        snprintf(ctl, sizeof ctl, "%s/labloop-sim.sock", dirname(copy));
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    int rc = 0;
    if (sim_start(&loop, &cfg, ctl, &g_sim)) {
        rc = 1;
        sim_stop(g_sim);
    } else {
        for (int i = 0; i < nfaults; i++) {
            char *id = faults[i], *kind = strchr(id, ':');
            double secs = 0;
            if (kind) {
                *kind++ = 0;
                char *s = strchr(kind, ':');
                if (s) {
                    *s++ = 0;
                    secs = atof(s);
                }
            }
            if (!kind || sim_fault(g_sim, id, kind, secs, 0, err, sizeof err)) {
                fprintf(stderr, "labloop-sim: --fault %s: %s\n", faults[i],
                        kind ? err : "expected ID:KIND[:SECONDS]");
                rc = 1;
                sim_stop(g_sim);
                break;
            }
        }
    }
    uv_signal_t sigterm, sigint;
    if (!rc) {
        uv_signal_init(&loop, &sigterm);
        uv_signal_init(&loop, &sigint);
        sigterm.data = &sigint;
        sigint.data = &sigterm;
        uv_signal_start(&sigterm, on_signal, SIGTERM);
        uv_signal_start(&sigint, on_signal, SIGINT);
        /* The simulator's own handles keep the loop running; when it stops by itself (--strict)
         * the loop ends without waiting for a signal. */
        uv_unref((uv_handle_t *)&sigterm);
        uv_unref((uv_handle_t *)&sigint);
    }
    int signals = !rc;
    uv_run(&loop, UV_RUN_DEFAULT);
    if (signals && !uv_is_closing((uv_handle_t *)&sigterm)) {
        uv_close((uv_handle_t *)&sigterm, NULL);
        uv_close((uv_handle_t *)&sigint, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&loop);
    if (!rc && sim_replay_unseen_total() > 0)
        rc = 3;
    sim_info("main", "stopped");
    return rc;
}
