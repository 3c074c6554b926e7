/* labloopd: arguments, config, the wiring of the modules, signals (TERM/INT: orderly stop;
 * HUP: reload), uv_run.
 *
 * Start order: store -> PostgreSQL writer -> MQTT bridge -> HTTP API. Stop order is the reverse
 * where it matters for "nothing acknowledged is lost": the API stops accepting, requests waiting
 * for the store finish, the API closes, the sinks drain as far as the servers allow within
 * shutdown_grace, then the store closes after its last group committed.
 *
 * Under a service manager ($NOTIFY_SOCKET, core/sdnotify.h): READY=1 once the store is open, the
 * instruments are started and the API listens; RELOADING=1 and READY=1 around a HUP; STOPPING=1
 * when a stop begins; STATUS= lines on the way; WATCHDOG=1 from the loop while it turns. */
#include "daemon/api/api.h"
#include "daemon/api/auth.h"
#include "daemon/bus/mqtt.h"
#include "daemon/store/audit.h"
#include "daemon/instr/instr.h"
#include "daemon/campaign/engine.h"
#include "daemon/fleet/fleet.h"
#include "daemon/fleet/inbox.h"
#include "daemon/fleet/plates.h"
#include "daemon/fleet/submit.h"
#include "daemon/labware/consumables.h"
#include "daemon/labware/labware.h"
#include "core/cfg.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/sdnotify.h"
#include "core/jschema.h"
#include "daemon/model/workflow_rules.h"
#include "daemon/store/pg.h"
#include "daemon/store/store.h"
#include "daemon/store/workflows.h"
#include "drivers/driver.h"

#include <dirent.h>
#include <libpq-fe.h>
#include <sys/stat.h>
#include <unistd.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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
    lab_consumables_t *consumables; /* closed after the scheduler (its steps hold reservations) */
    lab_labware_t *labware;         /* closed after the scheduler, which asks it for sites */
    lab_campaigns_t *campaigns;
    lab_submit_t *submit; /* the one submission path (HTTP and MQTT) */
    lab_inbox_t *inbox;   /* in/runs; NULL without MQTT */
    lab_fleet_t *fleet;   /* [lab] shared_queue = on */
    lab_plates_t plates;  /* the campaigns' plates in the lab's queue (with fleet) */
    lab_api_t *api;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t stop_timer;
    lab_sdnotify_t notify; /* off without $NOTIFY_SOCKET */
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
    /* The store answered every op it had: no submission waits any more. */
    lab_inbox_free(d->inbox);
    d->inbox = NULL;
    lab_submit_free(d->submit);
    d->submit = NULL;
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_close((uv_handle_t *)&d->stop_timer, NULL);
    lab_sdnotify_send(&d->notify, "STATUS=stopped");
    lab_sdnotify_close(&d->notify);
    log_info("main", "stopped");
}

static void sink_stopped(void *arg)
{
    labd_t *d = arg;
    if (--d->sinks_pending > 0)
        return;
    if (d->campaigns) { /* its last writes go before the store closes */
        lab_campaigns_t *l = d->campaigns;
        d->campaigns = NULL;
        d->sinks_pending = 1;
        lab_campaigns_close(l, sink_stopped, d);
        return;
    }
    d->state = D_CLOSING_STORE;
    lab_sdnotify_send(&d->notify, "STATUS=stopping: closing the local store");
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
        lab_inbox_detach(d->inbox);
        d->sinks_pending++;
        lab_mqtt_t *m = d->mqtt;
        d->mqtt = NULL;
        lab_mqtt_stop(m, grace, sink_stopped, d);
    }
    sink_stopped(d);
}

static void consumables_closed(void *arg)
{
    labd_t *d = arg;
    d->consumables = NULL;
}

/* A refill may let a waiting run start. */
static void consumables_changed(void *ctx)
{
    lab_sched_replan(ctx);
}

static void labware_closed(void *arg)
{
    labd_t *d = arg;
    d->labware = NULL;
}

/* A committed change of the plate registry (a site taken or freed by hand) is planned with. */
static void labware_changed(void *ctx)
{
    lab_sched_replan(ctx);
}

/* The consumables and the plate registry go after the scheduler, which asks them. */
static void sched_closed(void *arg)
{
    labd_t *d = arg;
    d->sched = NULL;
    if (d->submit)
        lab_submit_forget_sched(d->submit);
    if (d->consumables)
        lab_consumables_close(d->consumables, consumables_closed, d);
    if (d->labware)
        lab_labware_close(d->labware, labware_closed, d);
}

/* The scheduler closes once nothing can call it any more: the instruments are closed and the
 * fleet (whose fence answers reach it) has stopped. */
static void instr_closed(void *arg)
{
    labd_t *d = arg;
    d->instr = NULL;
    if (d->sched && !d->fleet)
        lab_sched_close(d->sched, sched_closed, d);
    else if (!d->sched && d->consumables)
        lab_consumables_close(d->consumables, consumables_closed, d);
    if (!d->sched && d->labware)
        lab_labware_close(d->labware, labware_closed, d);
}

static void fleet_stopped(void *arg)
{
    labd_t *d = arg;
    d->fleet = NULL;
    if (d->sched && !d->instr)
        lab_sched_close(d->sched, sched_closed, d);
}

/* The submission path's hook to the lab's queue (the path does not know the fleet's type). */
static void fleet_submit(void *ctx, json_t *sub, const char *key, const char *via, const char *by,
                         lab_submit_shared_cb cb, void *arg)
{
    lab_fleet_submit(ctx, sub, key, via, by, cb, arg);
}

/* While draining the API: poll until no request waits for the store or an instrument, or the
 * grace ran out. */
static void stop_tick(uv_timer_t *t)
{
    labd_t *d = t->data;
    if (d->state != D_DRAINING_API || d->instr || d->sched || d->fleet || d->consumables ||
        d->labware)
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
        lab_sdnotify_send(&d->notify, "STATUS=stopping: %s again, grace period shortened", why);
        return;
    }
    lab_sdnotify_send(&d->notify, "STOPPING=1\nSTATUS=stopping (%s): draining the API", why);
    log_info("main", "%s: stopping (grace=%.1fs)", why, d->cfg.shutdown_grace_s);
    d->stop_deadline = uv_now(d->loop) + (uint64_t)(d->cfg.shutdown_grace_s * 1000);
    d->state = D_DRAINING_API;
    lab_api_stop_accepting(d->api);
    lab_submit_stop(d->submit);
    /* Claimed runs not begun go back to the lab's queue before the scheduler stops. */
    if (d->fleet)
        lab_fleet_stop(d->fleet, (uint64_t)(d->cfg.shutdown_grace_s * 1000), fleet_stopped, d);
    /* Instruments first: operations in progress end (their requests are answered), and their
     * last state rows reach the store before it closes. */
    if (d->campaigns)
        lab_campaigns_stop(d->campaigns);
    if (d->sched)
        lab_sched_stop(d->sched);
    lab_labware_stop(d->labware);
    if (d->instr)
        lab_instr_close(d->instr, instr_closed, d);
    uv_timer_start(&d->stop_timer, stop_tick, 0, 10);
}

/* A reload is an audit entry, applied or refused, with what changed: a lab can show which
 * configuration was in force when. */
static void reload(labd_t *d)
{
    lab_config_t next;
    lab_cfg_errors_t errs = {0};
    /* MONOTONIC_USEC lets a manager that waits for the reload (Type=notify-reload) match it */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lab_sdnotify_send(&d->notify, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the config",
                      (unsigned long long)ts.tv_sec * 1000000ULL +
                          (unsigned long long)ts.tv_nsec / 1000);
    if (lab_config_load(d->cfg.path, &next, &errs) | (lab_instr_check(&next, &errs) > 0)) {
        json_t *why = json_array();
        for (int i = 0; i < errs.n; i++) {
            log_error("config", "reload refused: %s:%d: [%s] %s: %s", d->cfg.path, errs.v[i].line,
                      errs.v[i].section, errs.v[i].key, errs.v[i].reason);
            json_array_append_new(why, json_pack("{s:i, s:s?, s:s?, s:s?}", "line", errs.v[i].line,
                                                 "section", errs.v[i].section, "key", errs.v[i].key,
                                                 "reason", errs.v[i].reason));
        }
        lab_audit_record(d->store, NULL, "config.reload.refused", NULL, "SIGHUP",
                         json_pack("{s:s, s:o}", "file", d->cfg.path, "errors", why),
                         lab_clock_now_ms(&d->clock));
        /* the running config stays: the daemon is as ready as it was */
        lab_sdnotify_send(&d->notify, "READY=1\nSTATUS=ready; reload refused: %d error%s", errs.n,
                          errs.n == 1 ? "" : "s");
        lab_cfg_errors_free(&errs);
        lab_config_free(&next);
        return;
    }
    json_t *doc = json_pack("{s:s}", "file", d->cfg.path), *later = json_array();
    const char **diff = lab_config_restart_diff(&d->cfg, &next);
    for (const char **k = diff; *k; k++) {
        log_warn("config", "reload: %s changed; it takes effect after a restart", *k);
        json_array_append_new(later, json_string(*k));
    }
    free(diff);
    json_object_set_new(doc, "after_restart", later);
    if (next.log_level != d->cfg.log_level) {
        log_info("config", "reload: log_level=%s", lab_log_level_name(next.log_level));
        json_object_set_new(doc, "log_level",
                            json_pack("{s:s, s:s}", "from", lab_log_level_name(d->cfg.log_level),
                                      "to", lab_log_level_name(next.log_level)));
        lab_log_set_level(next.log_level);
        d->cfg.log_level = next.log_level;
    }
    if (next.shutdown_grace_s != d->cfg.shutdown_grace_s)
        json_object_set_new(
            doc, "shutdown_grace_s",
            json_pack("{s:f, s:f}", "from", d->cfg.shutdown_grace_s, "to", next.shutdown_grace_s));
    d->cfg.shutdown_grace_s = next.shutdown_grace_s;
    bool tokens = d->api && lab_api_reload(d->api, &next) == 0;
    if (tokens)
        log_info("config", "reload: tokens re-read");
    json_object_set_new(doc, "tokens_reread", json_boolean(tokens));
    lab_audit_record(d->store, NULL, "config.reload", NULL, "SIGHUP", doc,
                     lab_clock_now_ms(&d->clock));
    lab_config_free(&next);
    /* no path in a status line: one line each, and -c FILE could hold a newline */
    lab_sdnotify_send(&d->notify, "READY=1\nSTATUS=ready; config reloaded");
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

/* A workflow's `on`: a kind the drivers provide or an instrument of this config (the ones the
 * daemon starts), so a file is judged alike by --check and at start. */
static bool wf_on_known(void *ctx, const char *on)
{
    const lab_config_t *cfg = ctx;
    for (const lab_driver_ops_t *const *o = lab_drivers; *o; o++)
        if (strcmp((*o)->kind, on) == 0)
            return true;
    for (int i = 0; i < cfg->n_instruments; i++)
        if (strcmp(cfg->instruments[i].id, on) == 0)
            return true;
    return false;
}

typedef struct wf_files {
    char **names; /* sorted */
    json_t **docs;
    size_t n;
} wf_files_t;

static void wf_files_free(wf_files_t *f)
{
    for (size_t i = 0; i < f->n; i++) {
        json_decref(f->docs[i]);
        free(f->names[i]);
    }
    free(f->docs);
    free(f->names);
    memset(f, 0, sizeof *f);
}

/* [workflows] dir: every *.json read and checked, every problem named with its file and path.
 * Returns how many files are refused, or LAB_EIO when the directory cannot be read. */
static int workflows_read(const lab_config_t *cfg, wf_files_t *out, lab_cfg_errors_t *errs)
{
    const char *dir = cfg->workflows_dir;
    memset(out, 0, sizeof *out);
    DIR *dh = opendir(dir);
    if (!dh) {
        lab_cfg_error_add(errs, 0, "workflows", "dir", "cannot read %s: %s", dir, strerror(errno));
        return LAB_EIO;
    }
    for (struct dirent *e; (e = readdir(dh));) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".json") == 0 && e->d_name[0] != '.') {
            out->names = lab_realloc(out->names, sizeof *out->names * (out->n + 1));
            out->names[out->n++] = lab_strdup(e->d_name);
        }
    }
    closedir(dh);
    qsort(out->names, out->n, sizeof *out->names, by_name);
    lab_jschema_t *schema = lab_jschema_get("workflow.schema.json");
    out->docs = lab_calloc(out->n + 1, sizeof *out->docs);
    int bad = 0;
    for (size_t i = 0; i < out->n; i++) {
        char *path = lab_asprintf("%s/%s", dir, out->names[i]);
        json_error_t je;
        out->docs[i] = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        lab_jerrs_t jerrs = {0};
        if (!out->docs[i])
            lab_jerrs_add(&jerrs, "", "not JSON: line %d, column %d: %s", je.line, je.column,
                          je.text);
        else if (lab_jschema_validate(schema, out->docs[i], &jerrs) == 0)
            lab_workflow_check(out->docs[i], wf_on_known, (void *)cfg, &jerrs);
        for (int k = 0; k < jerrs.n; k++)
            lab_cfg_error_add(errs, 0, "workflows", "dir", "%s: %s: %s", path,
                              jerrs.v[k].path[0] ? jerrs.v[k].path : "/", jerrs.v[k].message);
        bad += jerrs.n > 0;
        lab_jerrs_free(&jerrs);
        free(path);
    }
    return bad;
}

/* Every file of [workflows] dir stored as a version; none when one is refused. */
static int load_workflows(labd_t *d)
{
    const char *dir = d->cfg.workflows_dir;
    wf_files_t files;
    lab_cfg_errors_t errs = {0};
    int bad = workflows_read(&d->cfg, &files, &errs);
    for (int i = 0; i < errs.n; i++)
        log_error("workflows", "%s", errs.v[i].reason);
    lab_cfg_errors_free(&errs);
    if (bad) {
        if (bad > 0)
            log_error("workflows", "%d of %zu files in %s refused; not starting", bad, files.n,
                      dir);
        wf_files_free(&files);
        return bad < 0 ? bad : LAB_ECONFIG;
    }
    for (size_t i = 0; i < files.n; i++) {
        lab_wf_put_t *put = lab_wf_put_new();
        put->name = lab_strdup(json_string_value(json_object_get(files.docs[i], "name")));
        put->version = (int)json_integer_value(json_object_get(files.docs[i], "version"));
        put->canon = lab_workflow_canonical(files.docs[i]);
        put->ts_ms = lab_clock_now_ms(&d->clock);
        put->arg = lab_asprintf("%s/%s", dir, files.names[i]);
        put->op.done = wf_loaded;
        lab_store_submit(d->store, &put->op);
    }
    wf_files_free(&files);
    return 0;
}

/* state_dir, or its nearest existing parent when it is to be made, must be a directory this
 * user can write: the local store lives there. */
static void check_state_dir(const char *dir, lab_cfg_errors_t *errs)
{
    char *p = lab_strdup(dir);
    struct stat st;
    while (stat(p, &st) != 0 && errno == ENOENT) {
        char *slash = strrchr(p, '/');
        if (!slash || slash == p) {
            snprintf(p, strlen(p) + 1, "/");
            continue;
        }
        *slash = '\0';
    }
    if (stat(p, &st) != 0)
        lab_cfg_error_add(errs, 0, "labloop", "state_dir", "%s: %s", p, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        lab_cfg_error_add(errs, 0, "labloop", "state_dir", "%s is not a directory", p);
    else if (access(p, W_OK | X_OK) != 0)
        lab_cfg_error_add(errs, 0, "labloop", "state_dir", "%s%s is not writable by this user: %s",
                          strcmp(p, dir) == 0 ? "" : "its parent ", p, strerror(errno));
    free(p);
}

/* Everything a start refuses before it opens anything, so `--check` refuses the same configs:
 * the keys (lab_config_load, which holds the http address and [auth] rule), each instrument's
 * keys, the state directory, the PostgreSQL conninfo, the tokens file and every workflow file.
 * Servers that are down are not checked: the daemon starts without them and retries. */
static int check_start(const char *path, lab_config_t *cfg, lab_cfg_errors_t *errs)
{
    if (lab_config_load(path, cfg, errs) | (lab_instr_check(cfg, errs) > 0))
        return LAB_ECONFIG;
    check_state_dir(cfg->state_dir, errs);
    if (cfg->pg_enabled) {
        char *perr = NULL;
        PQconninfoOption *opts = PQconninfoParse(cfg->pg_conninfo, &perr);
        if (!opts)
            lab_cfg_error_add(errs, 0, "postgres", "conninfo", "%.*s",
                              perr ? (int)strcspn(perr, "\n") : 7, perr ? perr : "invalid");
        PQconninfoFree(opts);
        PQfreemem(perr);
    }
    if (cfg->auth_enabled) {
        lab_tokens_t t;
        char err[512];
        if (lab_tokens_load(cfg->auth_tokens, &t, err, sizeof err))
            lab_cfg_error_add(errs, 0, "auth", "tokens", "%s", err);
        else
            lab_tokens_free(&t);
    }
    if (cfg->workflows_enabled) {
        wf_files_t files;
        workflows_read(cfg, &files, errs);
        wf_files_free(&files);
    }
    return errs->n ? LAB_ECONFIG : 0;
}

static int run(labd_t *d)
{
    int rc;
    d->loop = uv_default_loop();
    lab_clock_init(&d->clock, d->loop, d->cfg.time_scale);
    lab_sdnotify_send(&d->notify, "STATUS=starting: opening the local store in %s",
                      d->cfg.state_dir);
    if ((rc = lab_store_open(&d->store, d->loop, d->cfg.state_dir)) != 0) {
        log_error("main", "cannot open the local store in %s: %s", d->cfg.state_dir,
                  lab_strerror(rc));
        return 1;
    }
    lab_store_keep(d->store, d->cfg.events_keep);
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
    if ((rc = lab_consumables_start(&d->consumables, d->loop, &d->cfg, &d->clock, d->store,
                                    d->instr)) != 0) {
        log_error("main", "cannot start the consumables: %s", lab_strerror(rc));
        return 1;
    }
    if ((rc = lab_labware_start(&d->labware, d->loop, &d->cfg, &d->clock, d->store, d->instr)) !=
        0) {
        log_error("main", "cannot start the plate registry: %s", lab_strerror(rc));
        return 1;
    }
    if ((rc = lab_sched_start(&d->sched, d->loop, &d->cfg, &d->clock, d->store, d->instr)) != 0) {
        log_error("main", "cannot start the scheduler: %s", lab_strerror(rc));
        return 1;
    }
    lab_sched_set_consumables(d->sched, d->consumables);
    lab_consumables_on_change(d->consumables, consumables_changed, d->sched);
    lab_sched_set_labware(d->sched, d->labware);
    lab_labware_on_change(d->labware, labware_changed, d->sched);
    if (d->cfg.lab_shared_queue && (rc = lab_fleet_start(&d->fleet, d->loop, &d->cfg, &d->clock,
                                                         d->store, d->instr, d->sched)) != 0) {
        log_error("main", "cannot join the lab's shared queue: %s", lab_strerror(rc));
        return 1;
    }
    /* with the shared queue, a campaign's plates are runs in it: any capable cell runs them */
    lab_campaigns_queue_t plate_queue = {0};
    if (d->fleet) {
        d->plates.f = d->fleet;
        lab_plates_queue(&d->plates, &plate_queue);
    }
    if ((rc = lab_campaigns_start(&d->campaigns, d->loop, &d->clock, d->store, d->sched, d->mqtt,
                                  d->fleet ? &plate_queue : NULL)) != 0) {
        log_error("main", "cannot start the closed loop: %s", lab_strerror(rc));
        return 1;
    }
    if (d->fleet)
        lab_plates_follow(&d->plates, d->campaigns);
    /* One submission path for HTTP and MQTT; with [lab] shared_queue on, runs not for this cell
     * alone go to the lab's queue through the fleet. */
    bool shared = d->cfg.lab_shared_queue;
    if ((rc = lab_submit_new(&d->submit, d->store, d->sched, &d->clock, d->cfg.cell, shared)) !=
        0) {
        log_error("main", "cannot start the submission path: %s", lab_strerror(rc));
        return 1;
    }
    if (d->fleet)
        lab_submit_set_shared(d->submit, fleet_submit, d->fleet);
    if (d->mqtt && (rc = lab_inbox_start(&d->inbox, d->mqtt, d->submit, d->cfg.mqtt_topic_root,
                                         d->cfg.site, shared)) != 0) {
        log_error("main", "cannot serve in/runs: %s", lab_strerror(rc));
        return 1;
    }
    lab_api_deps_t deps = {d->loop,  &d->cfg,  &d->clock,    d->store, d->pg,          d->mqtt,
                           d->instr, d->sched, d->campaigns, d->fleet, d->consumables, d->labware};
    if ((rc = lab_api_start(&d->api, &deps)) != 0) {
        log_error("main", "cannot start the HTTP API on %s: %s", d->cfg.http, lab_strerror(rc));
        return 1;
    }
    lab_api_use_submit(d->api, d->submit);
    uv_signal_t *sigs[] = {&d->sig_term, &d->sig_int, &d->sig_hup};
    int nums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(d->loop, sigs[i]);
        sigs[i]->data = d;
        uv_signal_start(sigs[i], on_signal, nums[i]);
    }
    uv_timer_init(d->loop, &d->stop_timer);
    d->stop_timer.data = d;
    log_info("main",
             "ready http=%s postgres=%s mqtt=%s shared_queue=%s instruments=%d state_dir=%s",
             d->cfg.http, d->cfg.pg_enabled ? "on" : "off (embedded)",
             d->cfg.mqtt_enabled ? "on" : "off", d->cfg.lab_shared_queue ? "on" : "off",
             lab_instr_count(d->instr), d->cfg.state_dir);
    lab_sdnotify_send(&d->notify, "READY=1\nSTATUS=ready: http=%s instruments=%d", d->cfg.http,
                      lab_instr_count(d->instr));
    if ((rc = lab_sdnotify_watchdog_start(&d->notify, d->loop)) != 0)
        log_warn("main", "cannot start the watchdog pings: %s", lab_strerror(rc));
    else if (d->notify.watchdog_ms)
        log_info("main", "watchdog: a ping every %llu ms",
                 (unsigned long long)d->notify.watchdog_ms);
    uv_run(d->loop, UV_RUN_DEFAULT);
    return d->state == D_DONE ? 0 : 1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: labloopd -c FILE          run the daemon\n"
                 "       labloopd --check -c FILE  validate a config (exit 0, or 1 with errors;\n"
                 "                                 warnings do not fail it)\n"
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
    if (check_start(path, &d.cfg, &errs)) {
        lab_cfg_errors_print(&errs, path, stderr);
        lab_cfg_errors_free(&errs);
        lab_config_free(&d.cfg);
        return 1;
    }
    if (check) {
        /* Warnings: what a start logs and runs on without (an instrument's recording file). */
        lab_cfg_errors_t warns = {0};
        int nw = lab_instr_check_record(&d.cfg, &warns);
        for (int i = 0; i < warns.n; i++) {
            char *reason = warns.v[i].reason;
            warns.v[i].reason = lab_asprintf("warning: %s", reason);
            free(reason);
        }
        lab_cfg_errors_print(&warns, path, stderr);
        lab_cfg_errors_free(&warns);
        if (nw)
            printf("%s: ok, %d warning%s\n", path, nw, nw == 1 ? "" : "s");
        else
            printf("%s: ok\n", path);
        lab_config_free(&d.cfg);
        return 0;
    }
    lab_log_set_level(d.cfg.log_level);
    char nerr[256];
    if (lab_sdnotify_open(&d.notify, nerr, sizeof nerr) != 0) {
        /* a manager that set these expects READY and pings: starting without them ends in a
         * timeout kill that says less than this */
        log_error("main", "cannot speak to the service manager: %s", nerr);
        lab_config_free(&d.cfg);
        return 1;
    }
    log_info("main", "labloopd %s starting site=%s cell=%s", LAB_VERSION, d.cfg.site, d.cfg.cell);
    int rc = run(&d);
    if (rc != 0 && d.state == D_RUNNING) {
        lab_sdnotify_send(&d.notify, "STATUS=start failed (the log says why)");
        lab_sdnotify_close(&d.notify);
        /* A start failure: release what was started, in reverse. */
        if (d.api)
            lab_api_close(d.api, NULL, NULL);
        if (d.campaigns)
            lab_campaigns_close(d.campaigns, NULL, NULL);
        if (d.fleet)
            lab_fleet_stop(d.fleet, 0, fleet_stopped, &d);
        if (d.sched)
            lab_sched_stop(d.sched);
        lab_labware_stop(d.labware);
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
