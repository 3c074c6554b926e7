/* labloopd: arguments, config, the wiring of the modules, signals (TERM/INT: orderly stop;
 * HUP: reload), uv_run.
 *
 * Start order: store -> PostgreSQL writer -> MQTT bridge -> HTTP API. Stop order is the reverse
 * where it matters for "nothing acknowledged is lost": the API stops accepting, requests waiting
 * for the store finish, the API closes, the sinks drain as far as the servers allow within
 * shutdown_grace, then the store closes after its last group committed. */
#include "daemon/api/api.h"
#include "daemon/bus/mqtt.h"
#include "daemon/instr/instr.h"
#include "daemon/loop/loop.h"
#include "core/cfg.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/jschema.h"
#include "daemon/model/workflow.h"
#include "daemon/store/pg.h"
#include "daemon/store/store.h"
#include "daemon/store/workflows.h"

#include <dirent.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#ifndef LAB_VERSION
#define LAB_VERSION "0"
#endif

typedef enum { D_RUNNING, D_DRAINING_API, D_STOPPING_SINKS, D_CLOSING_STORE, D_DONE } dstate_t;

typedef struct labd {
    uv_loop_t *loop;
    lab_config_t cfg;
    lab_clock_t clock;
    lab_store_t *store;
    lab_pg_t *pg;
    lab_mqtt_t *mqtt;
    lab_instr_t *instr;
    lab_sched_t *sched;
    lab_loop_t *cloop;
    lab_api_t *api;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t stop_timer;
    dstate_t state;
    uint64_t stop_deadline; /* loop ms */
    int sinks_pending;
    int exit_code;
} labd_t;

static void stop_sinks(labd_t *d);

static void store_closed(void *arg)
{
    labd_t *d = arg;
    d->store = NULL;
    d->state = D_DONE;
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_close((uv_handle_t *)&d->stop_timer, NULL);
    log_info("main", "stopped");
}

static void sink_stopped(void *arg)
{
    labd_t *d = arg;
    if (--d->sinks_pending > 0)
        return;
    if (d->cloop) { /* its last writes go before the store closes */
        lab_loop_t *l = d->cloop;
        d->cloop = NULL;
        d->sinks_pending = 1;
        lab_loop_close(l, sink_stopped, d);
        return;
    }
    d->state = D_CLOSING_STORE;
    log_info("main", "sinks stopped; closing the local store");
    lab_store_close(d->store, store_closed, d);
}

static void api_closed(void *arg)
{
    labd_t *d = arg;
    d->api = NULL;
    stop_sinks(d);
}

static void stop_sinks(labd_t *d)
{
    d->state = D_STOPPING_SINKS;
    uint64_t now = uv_now(d->loop);
    uint64_t grace = d->stop_deadline > now ? d->stop_deadline - now : 0;
    d->sinks_pending =
        1; /* held until both are asked, so a synchronous callback cannot finish early */
    if (d->pg) {
        d->sinks_pending++;
        lab_pg_t *pg = d->pg;
        d->pg = NULL;
        lab_pg_stop(pg, grace, sink_stopped, d);
    }
    if (d->mqtt) {
        d->sinks_pending++;
        lab_mqtt_t *m = d->mqtt;
        d->mqtt = NULL;
        lab_mqtt_stop(m, grace, sink_stopped, d);
    }
    sink_stopped(d);
}

static void sched_closed(void *arg)
{
    labd_t *d = arg;
    d->sched = NULL;
}

static void instr_closed(void *arg)
{
    labd_t *d = arg;
    d->instr = NULL;
    if (d->sched)
        lab_sched_close(d->sched, sched_closed, d);
}

/* While draining the API: poll until no request waits for the store or an instrument, or the
 * grace ran out. */
static void stop_tick(uv_timer_t *t)
{
    labd_t *d = t->data;
    if (d->state != D_DRAINING_API || d->instr || d->sched)
        return;
    int busy = lab_api_in_flight(d->api);
    if (busy > 0 && uv_now(d->loop) < d->stop_deadline)
        return;
    if (busy > 0)
        log_warn("main", "grace period over with requests in flight=%d", busy);
    uv_timer_stop(t);
    lab_api_forget_sinks(d->api);
    lab_api_close(d->api, api_closed, d);
}

static void begin_stop(labd_t *d, const char *why)
{
    if (d->state != D_RUNNING) {
        /* A second signal: stop waiting for servers that are not answering. */
        log_warn("main", "%s again: shortening the grace period", why);
        d->stop_deadline = uv_now(d->loop);
        return;
    }
    log_info("main", "%s: stopping (grace=%.1fs)", why, d->cfg.shutdown_grace_s);
    d->stop_deadline = uv_now(d->loop) + (uint64_t)(d->cfg.shutdown_grace_s * 1000);
    d->state = D_DRAINING_API;
    lab_api_stop_accepting(d->api);
    /* Instruments first: operations in progress end (their requests are answered), and their
     * last state rows reach the store before it closes. */
    if (d->cloop)
        lab_loop_stop(d->cloop);
    if (d->sched)
        lab_sched_stop(d->sched);
    if (d->instr)
        lab_instr_close(d->instr, instr_closed, d);
    uv_timer_start(&d->stop_timer, stop_tick, 0, 10);
}

static void reload(labd_t *d)
{
    lab_config_t next;
    lab_cfg_errors_t errs = {0};
    if (lab_config_load(d->cfg.path, &next, &errs) | (lab_instr_check(&next, &errs) > 0)) {
        for (int i = 0; i < errs.n; i++)
            log_error("config", "reload refused: %s:%d: [%s] %s: %s", d->cfg.path, errs.v[i].line,
                      errs.v[i].section, errs.v[i].key, errs.v[i].reason);
        lab_cfg_errors_free(&errs);
        lab_config_free(&next);
        return;
    }
    const char **diff = lab_config_restart_diff(&d->cfg, &next);
    for (const char **k = diff; *k; k++)
        log_warn("config", "reload: %s changed; it takes effect after a restart", *k);
    free(diff);
    if (next.log_level != d->cfg.log_level) {
        log_info("config", "reload: log_level=%s", lab_log_level_name(next.log_level));
        lab_log_set_level(next.log_level);
        d->cfg.log_level = next.log_level;
    }
    d->cfg.shutdown_grace_s = next.shutdown_grace_s;
    if (d->api && lab_api_reload(d->api, &next) == 0)
        log_info("config", "reload: tokens re-read");
    lab_config_free(&next);
    log_info("config", "reloaded %s", d->cfg.path);
}

static void on_signal(uv_signal_t *s, int signum)
{
    labd_t *d = s->data;
    if (signum == SIGHUP) {
        if (d->state == D_RUNNING)
            reload(d);
        return;
    }
    begin_stop(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void wf_loaded(lab_store_op_t *op, int status)
{
    lab_wf_put_t *put = (lab_wf_put_t *)op;
    const char *file = put->arg;
    if (status == LAB_ECONFLICT)
        log_error("workflows",
                  "%s: version %d of %s is stored with other steps; the stored one "
                  "stays (a stored version never changes)",
                  file, put->version, put->name);
    else if (status != 0)
        log_error("workflows", "%s: not stored: %s", file, lab_strerror(status));
    else if (put->created)
        log_info("workflows", "workflow=%s version=%d stored from %s", put->name,
                 put->stored_version, file);
    free((char *)file);
    lab_wf_put_free(put);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* [workflows] dir: every *.json checked (every problem named with its file and path) before any
 * is stored; one bad file stops the start. */
static int load_workflows(labd_t *d)
{
    const char *dir = d->cfg.workflows_dir;
    DIR *dh = opendir(dir);
    if (!dh) {
        log_error("workflows", "cannot read %s: %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(dh));) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".json") == 0 && e->d_name[0] != '.') {
            names = lab_realloc(names, sizeof *names * (n + 1));
            names[n++] = lab_strdup(e->d_name);
        }
    }
    closedir(dh);
    qsort(names, n, sizeof *names, by_name);
    lab_jschema_t *schema = lab_jschema_get("workflow.schema.json");
    json_t **docs = lab_calloc(n + 1, sizeof *docs);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        char *path = lab_asprintf("%s/%s", dir, names[i]);
        json_error_t je;
        docs[i] = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        lab_jerrs_t errs = {0};
        if (!docs[i])
            lab_jerrs_add(&errs, "", "not JSON: line %d, column %d: %s", je.line, je.column,
                          je.text);
        else if (lab_jschema_validate(schema, docs[i], &errs) == 0)
            lab_workflow_check(docs[i], lab_api_workflow_on_known, d->instr, &errs);
        for (int k = 0; k < errs.n; k++)
            log_error("workflows", "%s: %s: %s", path, errs.v[k].path[0] ? errs.v[k].path : "/",
                      errs.v[k].message);
        bad += errs.n > 0;
        lab_jerrs_free(&errs);
        free(path);
    }
    for (size_t i = 0; i < n; i++) {
        if (!bad) {
            lab_wf_put_t *put = lab_wf_put_new();
            put->name = lab_strdup(json_string_value(json_object_get(docs[i], "name")));
            put->version = (int)json_integer_value(json_object_get(docs[i], "version"));
            put->canon = lab_workflow_canonical(docs[i]);
            put->ts_ms = lab_clock_now_ms(&d->clock);
            put->arg = lab_asprintf("%s/%s", dir, names[i]);
            put->op.done = wf_loaded;
            lab_store_submit(d->store, &put->op);
        }
        json_decref(docs[i]);
        free(names[i]);
    }
    free(docs);
    free(names);
    if (bad)
        log_error("workflows", "%d of %zu files in %s refused; not starting", bad, n, dir);
    return bad ? -1 : 0;
}

static int run(labd_t *d)
{
    int rc;
    d->loop = uv_default_loop();
    lab_clock_init(&d->clock, d->loop, d->cfg.time_scale);
    if ((rc = lab_store_open(&d->store, d->loop, d->cfg.state_dir)) != 0) {
        log_error("main", "cannot open the local store in %s: %s", d->cfg.state_dir,
                  lab_strerror(rc));
        return 1;
    }
    lab_clock_resume(&d->clock, lab_store_newest_ts(d->store));
    if (d->cfg.pg_enabled && (rc = lab_pg_start(&d->pg, d->loop, &d->cfg, d->store)) != 0) {
        log_error("main", "cannot start the PostgreSQL writer: %s", lab_strerror(rc));
        return 1;
    }
    if (d->cfg.mqtt_enabled &&
        (rc = lab_mqtt_start(&d->mqtt, d->loop, &d->cfg, d->store, &d->clock)) != 0) {
        log_error("main", "cannot start the MQTT bridge: %s", lab_strerror(rc));
        return 1;
    }
    if ((rc = lab_instr_start(&d->instr, d->loop, &d->cfg, d->store, d->mqtt, &d->clock)) != 0) {
        log_error("main", "cannot start the instruments: %s", lab_strerror(rc));
        return 1;
    }
    if (d->cfg.workflows_enabled && load_workflows(d) != 0)
        return 1;
    if ((rc = lab_sched_start(&d->sched, d->loop, &d->cfg, &d->clock, d->store, d->instr)) != 0) {
        log_error("main", "cannot start the scheduler: %s", lab_strerror(rc));
        return 1;
    }
    if ((rc = lab_loop_start(&d->cloop, d->loop, &d->clock, d->store, d->sched, d->mqtt)) != 0) {
        log_error("main", "cannot start the closed loop: %s", lab_strerror(rc));
        return 1;
    }
    lab_api_deps_t deps = {d->loop, &d->cfg,  &d->clock, d->store, d->pg,
                           d->mqtt, d->instr, d->sched,  d->cloop};
    if ((rc = lab_api_start(&d->api, &deps)) != 0) {
        log_error("main", "cannot start the HTTP API on %s: %s", d->cfg.http, lab_strerror(rc));
        return 1;
    }
    uv_signal_t *sigs[] = {&d->sig_term, &d->sig_int, &d->sig_hup};
    int nums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(d->loop, sigs[i]);
        sigs[i]->data = d;
        uv_signal_start(sigs[i], on_signal, nums[i]);
    }
    uv_timer_init(d->loop, &d->stop_timer);
    d->stop_timer.data = d;
    log_info("main", "ready http=%s postgres=%s mqtt=%s instruments=%d state_dir=%s", d->cfg.http,
             d->cfg.pg_enabled ? "on" : "off (embedded)", d->cfg.mqtt_enabled ? "on" : "off",
             lab_instr_count(d->instr), d->cfg.state_dir);
    uv_run(d->loop, UV_RUN_DEFAULT);
    return d->state == D_DONE ? 0 : 1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: labloopd -c FILE          run the daemon\n"
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
            lab_instr_print_keys(stdout);
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
    static labd_t d;
    lab_cfg_errors_t errs = {0};
    if (lab_config_load(path, &d.cfg, &errs) | (lab_instr_check(&d.cfg, &errs) > 0)) {
        lab_cfg_errors_print(&errs, path, stderr);
        lab_cfg_errors_free(&errs);
        lab_config_free(&d.cfg);
        return 1;
    }
    if (check) {
        printf("%s: ok\n", path);
        lab_config_free(&d.cfg);
        return 0;
    }
    lab_log_set_level(d.cfg.log_level);
    log_info("main", "labloopd %s starting site=%s cell=%s", LAB_VERSION, d.cfg.site, d.cfg.cell);
    int rc = run(&d);
    if (rc != 0 && d.state == D_RUNNING) {
        /* A start failure: release what was started, in reverse. */
        if (d.api)
            lab_api_close(d.api, NULL, NULL);
        if (d.cloop)
            lab_loop_close(d.cloop, NULL, NULL);
        if (d.sched)
            lab_sched_stop(d.sched);
        if (d.instr)
            lab_instr_close(d.instr, instr_closed, &d); /* which closes the scheduler */
        if (d.mqtt)
            lab_mqtt_stop(d.mqtt, 0, NULL, NULL);
        if (d.pg)
            lab_pg_stop(d.pg, 0, NULL, NULL);
        if (d.store)
            lab_store_close(d.store, NULL, NULL);
        uv_run(d.loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(uv_default_loop());
    lab_config_free(&d.cfg);
    return rc;
}
