/* labloop-sim: serves labloop's instruments from the daemon's own configuration file, in the
 * foreground, logging on stderr, until TERM or INT. */
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "sim/log.h"
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
               "  KIND: timeout | garbage | error | disconnect\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"control", required_argument, NULL, 'k'},
                                         {"fault", required_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL, *control = NULL;
    char *faults[32];
    int nfaults = 0, o;
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
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    sim_info("main", "stopped");
    return rc;
}
