/* labloopd: arguments, config, signals (TERM/INT: orderly stop; HUP: reload), uv_run. */
#include "daemon/core/cfg.h"
#include "daemon/core/clock.h"
#include "daemon/core/err.h"
#include "daemon/core/log.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#ifndef LAB_VERSION
#define LAB_VERSION "0"
#endif

static void usage(FILE *out)
{
    fprintf(out, "usage: labloopd -c FILE        run the daemon\n"
                 "       labloopd --check -c FILE  validate a config (exit 0, or 1 with errors)\n"
                 "       labloopd --keys           list every config key\n"
                 "       labloopd --version\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'k'},
        {"keys", no_argument, NULL, 'K'},         {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int check = 0, c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            check = 1;
            break;
        case 'K':
            lab_config_print_keys(stdout);
            return 0;
        case 'V':
            printf("labloopd %s\n", LAB_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!path || optind != argc) {
        usage(stderr);
        return 2;
    }
    lab_config_t cfg;
    lab_cfg_errors_t errs = {0};
    int rc = lab_config_load(path, &cfg, &errs);
    if (rc) {
        lab_cfg_errors_print(&errs, path, stderr);
        lab_cfg_errors_free(&errs);
        lab_config_free(&cfg);
        return 1;
    }
    if (check) {
        printf("%s: ok\n", path);
        lab_config_free(&cfg);
        return 0;
    }
    lab_log_set_level(cfg.log_level);
    log_info("main", "labloopd %s starting site=%s cell=%s", LAB_VERSION, cfg.site, cfg.cell);
    lab_config_free(&cfg);
    return 0;
}
