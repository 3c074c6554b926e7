/* The driver framework: config checking, the operation queue with its timeouts, telemetry
 * polling, state and last error. Every callback into the daemon is delivered from the `kick`
 * check handle, never from inside a driver's own I/O callback, so the daemon may call or close
 * the instrument from any callback. A check handle runs right after the I/O of the same loop
 * iteration, so an answer that arrives is delivered, and the next operation's first bytes sent,
 * without another turn of the loop; an idle handle beside it keeps that turn from blocking when
 * the kick was asked for outside I/O (from a timer). */
#include "drivers/driver.h"
#include "core/err.h"
#include "core/jschema.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/text.h"
#include "core/utf8.h"
#include "drivers/transport/wirerec.h"
#include "drivers/supplies.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_MAX 64

lab_drv_error_t *lab_drv_error_set(lab_drv_error_t *e, int code, const char *device_code,
                                   const char *fmt, ...)
{
    /* Both may quote the device's own bytes: made valid UTF-8 here, so every document and answer
     * that carries them can be built (cut on a character, invalid bytes as U+FFFD). */
    char text[2 * sizeof e->text];
    e->code = code;
    e->not_started = false;
    device_code = device_code ? device_code : "";
    lab_utf8_sanitize(e->device_code, sizeof e->device_code, device_code, strlen(device_code));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    lab_text_trim(text);
    lab_utf8_sanitize(e->text, sizeof e->text, text, strlen(text));
    return e;
}

json_t *lab_drv_error_json(const lab_drv_error_t *e)
{
    json_t *o = json_pack("{s:s, s:s}", "code", lab_err_json_name(e->code), "message", e->text);
    if (e->device_code[0])
        json_object_set_new(o, "device_code", json_string(e->device_code));
    return o;
}

const lab_drv_key_t lab_drv_common_keys[] = {
    {"driver", LAB_DRV_KEY_STR, NULL, 0, 0, NULL, LAB_DRV_KEY_REQUIRED,
     "the driver: liconic-stx, biotek-synergy, hamilton-star, modbus-temperature, mqtt-report, "
     "manual-mover"},
    {"capacity", LAB_DRV_KEY_INT, "1", 1, 10000, NULL, 0, "plates the instrument holds at once"},
    {"poll_s", LAB_DRV_KEY_DOUBLE, NULL, 0, 86400, NULL, 0,
     "real seconds between telemetry reads (0: never); the driver's default when absent"},
    {"label", LAB_DRV_KEY_STR, "", 0, 0, NULL, 0, "a name for people (the bench, the room)"},
    {"record", LAB_DRV_KEY_STR, NULL, 0, 0, NULL, 0,
     "file of the wire recording (JSON Lines), or off; default STATE_DIR/wire/ID.wire"},
    {"record_max_bytes", LAB_DRV_KEY_INT, "16777216", 4096, 1e12, NULL, 0,
     "the recording file rotates to PATH.1 once it passes this size"},
    {"record_keep", LAB_DRV_KEY_INT, "4", 0, 100, NULL, 0,
     "rotated recording files kept (PATH.1 .. PATH.N)"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

/* ---- config ---- */

const lab_driver_ops_t *lab_driver_find(const char *name)
{
    for (const lab_driver_ops_t *const *o = lab_drivers; name && *o; o++)
        if (strcmp((*o)->name, name) == 0)
            return *o;
    return NULL;
}

static const lab_drv_key_t *key_in(const lab_drv_key_t *t, const char *name)
{
    for (; t && t->name; t++)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

static const lab_drv_key_t *key_find(const lab_driver_ops_t *ops, const char *name)
{
    const lab_drv_key_t *k = key_in(lab_drv_common_keys, name);
    if (!k)
        k = key_in(lab_drv_supply_keys, name);
    return k ? k : key_in(ops ? ops->keys : NULL, name);
}

static int choice_index(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    int i = 0;
    for (const char *p = choices; *p; i++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == vl && strncmp(p, v, n) == 0)
            return i;
        if (!bar)
            break;
        p = bar + 1;
    }
    return -1;
}

/* NULL, or why the value does not fit the key. */
static const char *value_check(const lab_drv_key_t *k, const char *v, char *buf, size_t cap)
{
    char *end;
    double d;
    switch (k->type) {
    case LAB_DRV_KEY_STR:
        return (k->flags & LAB_DRV_KEY_REQUIRED) && !*v ? "must not be empty" : NULL;
    case LAB_DRV_KEY_ENUM:
        if (choice_index(k->choices, v) >= 0)
            return NULL;
        snprintf(buf, cap, "expected one of %s", k->choices);
        return buf;
    case LAB_DRV_KEY_INT:
    case LAB_DRV_KEY_DOUBLE:
        errno = 0;
        d = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(d))
            return k->type == LAB_DRV_KEY_INT ? "expected a whole number" : "expected a number";
        if (k->type == LAB_DRV_KEY_INT && d != floor(d))
            return "expected a whole number";
        if (d < k->min || d > k->max) {
            snprintf(buf, cap, "%s is out of range [%g, %g]", v, k->min, k->max);
            return buf;
        }
        return NULL;
    }
    return "unknown key type";
}

static const lab_drv_kv_t *conf_get(const lab_drv_conf_t *c, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->kv[i].key, key) == 0)
            return &c->kv[i];
    return NULL;
}

int lab_driver_check(const lab_drv_conf_t *conf, lab_drv_conf_err_cb cb, void *ctx)
{
    int n = 0;
    char buf[1024]; /* an enum's choices can be long (Liconic's 36 rack types) */
    const lab_drv_kv_t *dv = conf_get(conf, "driver");
    const lab_driver_ops_t *ops = dv ? lab_driver_find(dv->value) : NULL;
    if (!dv) {
        cb(ctx, conf->line, "driver", "required: which driver runs this instrument");
        n++;
    } else if (!ops) {
        size_t len = (size_t)snprintf(buf, sizeof buf, "unknown driver '%s'; known:", dv->value);
        for (const lab_driver_ops_t *const *o = lab_drivers; *o && len < sizeof buf; o++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, " %s", (*o)->name);
        cb(ctx, dv->line, "driver", buf);
        return n + 1; /* the other keys cannot be judged without the driver */
    }
    for (size_t i = 0; i < conf->n; i++) {
        const lab_drv_kv_t *kv = &conf->kv[i];
        if (strncmp(kv->key, "sim_", 4) == 0)
            continue; /* labloop-sim's own */
        const lab_drv_key_t *k = key_find(ops, kv->key);
        if (!k) {
            snprintf(buf, sizeof buf, "unknown key for driver %s", ops ? ops->name : "?");
            cb(ctx, kv->line, kv->key, buf);
            n++;
            continue;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(conf->kv[j].key, kv->key) == 0) {
                snprintf(buf, sizeof buf, "given twice (first on line %d)", conf->kv[j].line);
                cb(ctx, kv->line, kv->key, buf);
                n++;
                break;
            }
        const char *why = value_check(k, kv->value, buf, sizeof buf);
        if (why) {
            cb(ctx, kv->line, kv->key, why);
            n++;
        }
    }
    for (const lab_drv_key_t *k = ops ? ops->keys : NULL; k && k->name; k++)
        if ((k->flags & LAB_DRV_KEY_REQUIRED) && !conf_get(conf, k->name)) {
            snprintf(buf, sizeof buf, "required by driver %s", ops->name);
            cb(ctx, conf->line, k->name, buf);
            n++;
        }
    n += lab_supply_check(conf, ops, cb, ctx);
    const char *key = NULL;
    if (!n && ops && ops->check_conf && ops->check_conf(conf, &key, buf, sizeof buf) != 0) {
        const lab_drv_kv_t *kv = key ? conf_get(conf, key) : NULL;
        cb(ctx, kv ? kv->line : conf->line, key ? key : "driver", buf);
        n++;
    }
    return n;
}

const char *lab_drv_conf_str(const lab_drv_conf_t *conf, const char *key)
{
    const lab_drv_kv_t *kv = conf_get(conf, key);
    return kv ? kv->value : NULL;
}

/* ---- the instrument ---- */

typedef struct op {
    struct op *next;
    const lab_drv_action_t *a;
    json_t *params;
    uint64_t timeout_ms;
    lab_drv_done_cb cb;
    void *arg;
    bool poll;
    lab_drv_error_t err;
    json_t *result;
} op_t;

struct lab_driver {
    uv_loop_t *loop;
    const lab_driver_ops_t *ops;
    char *id;
    double time_scale;
    lab_drv_kv_t *kv;
    size_t nkv;
    lab_drv_host_t host;
    lab_jschema_t **schemas; /* per action, compiled on first use */
    size_t nactions;

    lab_inst_state_t conn; /* what the driver reported: offline, idle or fault */
    lab_drv_error_t conn_err;
    bool auto_fault; /* the fault is the framework's (an operation failed), not the driver's */
    bool paused;
    op_t *cur;
    op_t *head, *tail; /* waiting */
    int queued;
    op_t *done_head, *done_tail; /* finished, callbacks not yet delivered */
    op_t *imm;                   /* the immediate action inside its invoke */

    lab_inst_state_t published;
    lab_drv_error_t last_err;
    char published_err[256];
    bool ever_published;
    json_t *info;
    lab_driver_stats_t stats;
    uint64_t poll_ms;

    uv_check_t kick;
    uv_idle_t kick_idle;
    uv_timer_t op_timer, poll_timer;
    int handles;
    bool closing, driver_closed;
    void (*close_cb)(void *arg);
    void *close_arg;
    lab_wirerec_t *rec;
    char *rec_path;  /* the file `record on` records to; NULL: none known */
    int *site_slots; /* ops->sites: slots per cassette */
    int ncassettes, nsites;
    max_align_t priv[];
};

void *lab_drv_priv(lab_driver_t *d)
{
    return d->priv;
}

uv_loop_t *lab_drv_loop(lab_driver_t *d)
{
    return d->loop;
}

const char *lab_driver_id(const lab_driver_t *d)
{
    return d->id;
}

const lab_driver_ops_t *lab_driver_ops(const lab_driver_t *d)
{
    return d->ops;
}

lab_inst_state_t lab_driver_state(const lab_driver_t *d)
{
    return d->published;
}

const lab_drv_error_t *lab_driver_last_error(const lab_driver_t *d)
{
    return &d->last_err;
}

json_t *lab_driver_info(const lab_driver_t *d)
{
    return d->info;
}

double lab_drv_time_scale(lab_driver_t *d)
{
    return d->time_scale;
}

uint64_t lab_drv_lab_ms(lab_driver_t *d, double lab_s)
{
    double ms = lab_s * 1000.0 / d->time_scale;
    return ms < 1 ? 1 : (uint64_t)ms;
}

void lab_driver_stats(const lab_driver_t *d, lab_driver_stats_t *out)
{
    *out = d->stats;
    out->queued = d->queued;
}

static const char *conf_value(lab_driver_t *d, const char *key)
{
    for (size_t i = 0; i < d->nkv; i++)
        if (strcmp(d->kv[i].key, key) == 0)
            return d->kv[i].value;
    const lab_drv_key_t *k = key_find(d->ops, key);
    LAB_ASSERT(k != NULL); /* a driver asking for a key outside its table is a bug */
    return k->def;
}

bool lab_drv_has(lab_driver_t *d, const char *key)
{
    for (size_t i = 0; i < d->nkv; i++)
        if (strcmp(d->kv[i].key, key) == 0)
            return true;
    return false;
}

const char *lab_drv_str(lab_driver_t *d, const char *key)
{
    const char *v = conf_value(d, key);
    return v ? v : "";
}

double lab_drv_double(lab_driver_t *d, const char *key)
{
    const char *v = conf_value(d, key);
    return v ? strtod(v, NULL) : 0;
}

long lab_drv_int(lab_driver_t *d, const char *key)
{
    return (long)lab_drv_double(d, key);
}

int lab_drv_enum(lab_driver_t *d, const char *key)
{
    const lab_drv_key_t *k = key_find(d->ops, key);
    const char *v = conf_value(d, key);
    return k && v && k->choices ? choice_index(k->choices, v) : -1;
}

void lab_drv_serial_settings(lab_driver_t *d, lab_transport_settings_t *s)
{
    lab_transport_settings_init(s);
    s->path = lab_drv_str(d, "port");
    s->baud = (int)lab_drv_int(d, "baud");
    s->data_bits = (int)lab_drv_int(d, "data_bits");
    s->parity = (lab_parity_t)lab_drv_enum(d, "parity");
    s->stop_bits = (int)lab_drv_int(d, "stop_bits");
    s->flow = (lab_flow_t)lab_drv_enum(d, "flow");
}

/* ---- state ---- */

static lab_inst_state_t effective_state(const lab_driver_t *d)
{
    if (d->conn == LAB_INST_OFFLINE || d->conn == LAB_INST_FAULT)
        return d->conn;
    if (d->paused)
        return LAB_INST_PAUSED;
    if (d->cur && !d->cur->poll)
        return LAB_INST_BUSY;
    return LAB_INST_IDLE;
}

static void publish(lab_driver_t *d)
{
    if (d->closing)
        return;
    lab_inst_state_t s = effective_state(d);
    if (d->ever_published && s == d->published && strcmp(d->published_err, d->last_err.text) == 0)
        return;
    /* An instrument starts offline (lab_driver_open), so its first publication is a move too. */
    lab_inst_state_t prev = d->published;
    if (lab_inst_set_state(&d->published, s, d->id) < 0)
        return;
    if (!d->ever_published || s != prev)
        log_info("drv", "instrument=%s state=%s%s%s", d->id, lab_inst_state_name(s),
                 d->last_err.code ? " last_error=" : "", d->last_err.code ? d->last_err.text : "");
    d->ever_published = true;
    snprintf(d->published_err, sizeof d->published_err, "%s", d->last_err.text);
    if (d->host.on_state)
        d->host.on_state(d->host.ctx, d, s, &d->last_err);
}

static void kick_cb(uv_check_t *t);

static void kick_idle_cb(uv_idle_t *h)
{
    (void)h; /* its being active is the point: the loop's next I/O wait does not block */
}

static void schedule(lab_driver_t *d)
{
    if (!d->closing) {
        uv_check_start(&d->kick, kick_cb);
        uv_idle_start(&d->kick_idle, kick_idle_cb);
    }
}

static void op_free(op_t *op)
{
    json_decref(op->params);
    json_decref(op->result);
    free(op);
}

/* Moves op to the done list (callbacks delivered by kick). */
static void finish(lab_driver_t *d, op_t *op)
{
    d->stats.ops++;
    if (op->poll)
        d->stats.polls++;
    if (op->err.code != LAB_OK) {
        d->stats.failed++;
        if (op->err.code == LAB_ETIMEDOUT)
            d->stats.timeouts++;
        /* What the operator needs to see: the device's own trouble, not a refused request. */
        if (op->err.code != LAB_EINVAL && op->err.code != LAB_ENOACTION &&
            op->err.code != LAB_EBUSY && op->err.code != LAB_ECANCELLED)
            d->last_err = op->err;
        log_warn("drv", "instrument=%s action=%s error=%s device_code=%s message=\"%s\"", d->id,
                 op->a ? op->a->name : "?", lab_err_json_name(op->err.code),
                 op->err.device_code[0] ? op->err.device_code : "-", op->err.text);
        /* The device misbehaved: the instrument shows fault, with the reason, until an
         * operation (a telemetry poll will do) goes through again. */
        if ((op->err.code == LAB_ETIMEDOUT || op->err.code == LAB_EPROTO ||
             op->err.code == LAB_EDEVICE) &&
            d->conn == LAB_INST_IDLE && !(op->a && (op->a->flags & LAB_DRV_ACT_IMMEDIATE))) {
            d->conn = LAB_INST_FAULT;
            d->conn_err = op->err;
            d->auto_fault = true;
        }
    } else if (d->auto_fault && d->conn == LAB_INST_FAULT &&
               !(op->a && (op->a->flags & LAB_DRV_ACT_IMMEDIATE))) {
        d->conn = LAB_INST_IDLE;
        d->auto_fault = false;
        memset(&d->conn_err, 0, sizeof d->conn_err);
        log_info("drv", "instrument=%s answers again", d->id);
    }
    op->next = NULL;
    if (d->done_tail)
        d->done_tail->next = op;
    else
        d->done_head = op;
    d->done_tail = op;
    schedule(d);
}

static void fail_queued(lab_driver_t *d, int code, const char *why)
{
    while (d->head) {
        op_t *op = d->head;
        d->head = op->next;
        d->queued--;
        lab_drv_error_set(&op->err, code, NULL, "%s", why);
        op->err.not_started = true; /* queued: the driver never saw it */
        finish(d, op);
    }
    d->tail = NULL;
}

static void op_timeout_cb(uv_timer_t *t)
{
    lab_driver_t *d = t->data;
    op_t *op = d->cur;
    if (!op)
        return;
    d->cur = NULL;
    if (d->ops->abort)
        d->ops->abort(d);
    lab_drv_error_set(&op->err, LAB_ETIMEDOUT, NULL,
                      "%s: no complete answer from the instrument within %.1f s", op->a->name,
                      (double)op->timeout_ms / 1000.0);
    finish(d, op);
}

static bool can_run(const lab_driver_t *d)
{
    return !d->closing && !d->cur && !d->paused && d->conn != LAB_INST_OFFLINE;
}

static void refuse_in_fault(const lab_driver_t *d, const lab_drv_action_t *a, lab_drv_error_t *err)
{
    lab_drv_error_set(err, LAB_ESTATE, d->conn_err.device_code,
                      "%s is in fault (%s): %s refused until it answers again", d->id,
                      d->conn_err.text[0] ? d->conn_err.text : "no reason given", a->name);
    err->not_started = true;
}

static void start_next(lab_driver_t *d)
{
    while (can_run(d) && d->head) {
        op_t *op = d->head;
        d->head = op->next;
        if (!d->head)
            d->tail = NULL;
        d->queued--;
        if ((op->a->flags & LAB_DRV_ACT_NOT_IN_FAULT) && d->conn == LAB_INST_FAULT) {
            /* queued before the fault came */
            refuse_in_fault(d, op->a, &op->err);
            finish(d, op);
            continue;
        }
        d->cur = op;
        uv_timer_start(&d->op_timer, op_timeout_cb, op->timeout_ms, 0);
        log_debug("drv", "instrument=%s action=%s start", d->id, op->a->name);
        d->ops->invoke(d, op->a, op->params);
    }
}

static void deliver(lab_driver_t *d, op_t *op)
{
    if (!op->result)
        op->result = json_object();
    if (op->cb)
        op->cb(d, &op->err, op->result, op->arg);
    op_free(op);
}

static void kick_cb(uv_check_t *t)
{
    lab_driver_t *d = t->data;
    uv_check_stop(&d->kick);
    uv_idle_stop(&d->kick_idle);
    start_next(d);
    publish(d);
    /* Deliver: callbacks may queue more operations or close the instrument. */
    while (d->done_head && !d->closing) {
        op_t *op = d->done_head;
        d->done_head = op->next;
        if (!d->done_head)
            d->done_tail = NULL;
        deliver(d, op);
    }
    if (!d->closing) {
        start_next(d);
        publish(d);
    }
}

static void poll_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg)
{
    (void)arg;
    if (err->code != LAB_OK || !d->host.on_telemetry)
        return;
    json_t *vals = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(result, k, v) if (json_is_number(v)) json_object_set(vals, k, v);
    if (json_object_size(vals))
        d->host.on_telemetry(d->host.ctx, d, 0, vals);
    json_decref(vals);
}

static const lab_drv_action_t *action_find(const lab_driver_t *d, const char *name, size_t *idx)
{
    for (size_t i = 0; name && d->ops->actions[i].name; i++)
        if (strcmp(d->ops->actions[i].name, name) == 0) {
            if (idx)
                *idx = i;
            return &d->ops->actions[i];
        }
    return NULL;
}

static void poll_cb(uv_timer_t *t)
{
    lab_driver_t *d = t->data;
    if (!can_run(d) || d->head)
        return; /* never in the way of real work; the next tick tries again */
    const lab_drv_action_t *a = action_find(d, d->ops->poll_action, NULL);
    if (!a)
        return;
    op_t *op = lab_calloc(1, sizeof *op);
    op->a = a;
    op->params = json_object();
    op->timeout_ms = lab_drv_lab_ms(d, a->timeout_s > 0 ? a->timeout_s : 10);
    if (op->timeout_ms < 2000)
        op->timeout_ms = 2000;
    op->cb = poll_done;
    op->poll = true;
    d->head = d->tail = op;
    d->queued++;
    start_next(d);
}

int lab_driver_new(uv_loop_t *loop, const lab_drv_conf_t *conf, const lab_drv_host_t *host,
                   lab_driver_t **out, char *err, size_t errlen)
{
    *out = NULL;
    const lab_drv_kv_t *dv = conf_get(conf, "driver");
    const lab_driver_ops_t *ops = dv ? lab_driver_find(dv->value) : NULL;
    if (!ops) {
        snprintf(err, errlen, "instrument %s: no such driver", conf->id);
        return LAB_EINVAL;
    }
    return lab_driver_new_ops(loop, ops, conf, host, out, err, errlen);
}

char *lab_driver_record_path(const lab_drv_conf_t *conf, bool *on, int *line)
{
    const lab_drv_kv_t *kv = conf_get(conf, "record");
    const char *v = kv ? kv->value : NULL;
    bool off = v && (!*v || strcmp(v, "off") == 0);
    char *path = NULL;
    if (v && !off)
        path = lab_strdup(v);
    else if (conf->record_dir) /* also for record = off: `record on` records there */
        path = lab_asprintf("%s/%s.wire", conf->record_dir, conf->id);
    if (on)
        *on = path && !off;
    if (line)
        *line = kv ? kv->line : conf->line;
    return path;
}

/* The recorder exists before the driver's open, so the transports it creates find it. A file
 * that cannot be written is logged and leaves the recording off: the instrument runs anyway. */
static void record_setup(lab_driver_t *d, const lab_drv_conf_t *conf)
{
    lab_wirerec_opts_t o = {
        .id = d->id,
        .driver = d->ops->name,
        .max_bytes = (uint64_t)lab_drv_int(d, "record_max_bytes"),
        .keep = (unsigned)lab_drv_int(d, "record_keep"),
        .clock = conf->clock,
    };
    d->rec = lab_wirerec_new(&o);
    bool on;
    d->rec_path = lab_driver_record_path(conf, &on, NULL);
    if (!on)
        return;
    char why[400];
    if (lab_wirerec_start(d->rec, d->rec_path, why, sizeof why) != LAB_OK)
        log_error("driver", "instrument=%s record: %s; the instrument runs without recording",
                  d->id, why);
}

int lab_driver_record(lab_driver_t *d, bool on, char *err, size_t errlen)
{
    if (!on) {
        lab_wirerec_stop(d->rec);
        return LAB_OK;
    }
    if (!d->rec_path) {
        snprintf(err, errlen,
                 "instrument %s has no recording file: its section says record = off and the "
                 "daemon has no state_dir to record into",
                 d->id);
        return LAB_ESTATE;
    }
    if (lab_wirerec_on(d->rec))
        return LAB_OK;
    return lab_wirerec_start(d->rec, d->rec_path, err, errlen);
}

json_t *lab_driver_record_json(lab_driver_t *d)
{
    lab_wirerec_status_t st;
    lab_wirerec_status(d->rec, &st);
    const char *path = st.path[0] ? st.path : d->rec_path;
    json_t *o = json_pack("{s:b, s:s?, s:I, s:I, s:I}", "on", st.on, "path", path, "events",
                          (json_int_t)st.events, "dropped", (json_int_t)st.dropped, "pending_bytes",
                          (json_int_t)st.pending);
    if (st.error[0])
        json_object_set_new(o, "error", json_string(st.error));
    return o;
}

enum { SITES_MAX_CASSETTES = 256 };

/* Asks the driver for its sites once; its capacity must fit in them. */
static int sites_setup(lab_driver_t *d, char *err, size_t errlen)
{
    if (!d->ops->sites)
        return 0;
    d->site_slots = lab_calloc(SITES_MAX_CASSETTES, sizeof *d->site_slots);
    int n = d->ops->sites(d, d->site_slots, SITES_MAX_CASSETTES);
    if (n < 0 || n > SITES_MAX_CASSETTES) {
        snprintf(err, errlen, "the driver gave %d cassettes", n);
        return LAB_EINVAL;
    }
    d->ncassettes = n;
    for (int c = 0; c < n; c++) {
        if (d->site_slots[c] < 0 || d->site_slots[c] > 100000) {
            snprintf(err, errlen, "the driver gave %d slots for cassette %d", d->site_slots[c],
                     c + 1);
            return LAB_EINVAL;
        }
        d->nsites += d->site_slots[c];
    }
    if (lab_driver_capacity(d) > d->nsites) {
        snprintf(err, errlen, "capacity = %d is more than the %d slots of its %d cassette%s",
                 lab_driver_capacity(d), d->nsites, n, n == 1 ? "" : "s");
        return LAB_ECONFIG;
    }
    return 0;
}

int lab_driver_capacity(const lab_driver_t *d)
{
    return (int)lab_drv_int((lab_driver_t *)d, "capacity");
}

int lab_driver_sites(const lab_driver_t *d)
{
    return d->nsites;
}

bool lab_driver_site_at(const lab_driver_t *d, int x, int *cassette, int *slot)
{
    if (x < 0)
        return false;
    for (int c = 0; c < d->ncassettes; c++) {
        if (x < d->site_slots[c]) {
            *cassette = c + 1;
            *slot = x + 1;
            return true;
        }
        x -= d->site_slots[c];
    }
    return false;
}

int lab_driver_site_index(const lab_driver_t *d, int cassette, int slot)
{
    if (cassette < 1 || cassette > d->ncassettes || slot < 1 || slot > d->site_slots[cassette - 1])
        return -1;
    int x = slot - 1;
    for (int c = 0; c < cassette - 1; c++)
        x += d->site_slots[c];
    return x;
}

int lab_driver_new_ops(uv_loop_t *loop, const lab_driver_ops_t *ops, const lab_drv_conf_t *conf,
                       const lab_drv_host_t *host, lab_driver_t **out, char *err, size_t errlen)
{
    *out = NULL;
    lab_driver_t *d = lab_calloc(1, sizeof *d + ops->priv_size);
    d->loop = loop;
    d->ops = ops;
    d->id = lab_strdup(conf->id);
    d->time_scale = conf->time_scale > 0 ? conf->time_scale : 1;
    d->kv = lab_calloc(conf->n ? conf->n : 1, sizeof *d->kv);
    for (size_t i = 0; i < conf->n; i++)
        d->kv[i] = (lab_drv_kv_t){lab_strdup(conf->kv[i].key), lab_strdup(conf->kv[i].value),
                                  conf->kv[i].line};
    d->nkv = conf->n;
    if (host)
        d->host = *host;
    while (ops->actions[d->nactions].name)
        d->nactions++;
    d->schemas = lab_calloc(d->nactions + 1, sizeof *d->schemas);
    d->info = json_pack("{s:s, s:s}", "driver", ops->name, "model", ops->model);
    d->conn = LAB_INST_OFFLINE;
    d->published = LAB_INST_OFFLINE;
    double poll_s = lab_drv_has(d, "poll_s") ? lab_drv_double(d, "poll_s") : ops->poll_default_s;
    d->poll_ms = poll_s > 0 && ops->poll_action ? (uint64_t)(poll_s * 1000) : 0;
    if (d->poll_ms && d->poll_ms < 10)
        d->poll_ms = 10;
    uv_timer_t *timers[] = {&d->op_timer, &d->poll_timer};
    for (int i = 0; i < 2; i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = d;
        d->handles++;
    }
    uv_check_init(loop, &d->kick);
    uv_idle_init(loop, &d->kick_idle);
    d->kick.data = d->kick_idle.data = d;
    d->handles += 2;
    record_setup(d, conf);
    *out = d;
    int rc = ops->open ? ops->open(d, err, errlen) : 0;
    if (rc == 0)
        rc = sites_setup(d, err, errlen);
    if (rc != 0) {
        lab_driver_close(d, NULL, NULL);
        *out = NULL;
        return rc < 0 ? rc : LAB_EINVAL;
    }
    return LAB_OK;
}

void lab_driver_start(lab_driver_t *d)
{
    publish(d);
    if (d->ops->start)
        d->ops->start(d);
    if (d->poll_ms)
        uv_timer_start(&d->poll_timer, poll_cb, d->poll_ms, d->poll_ms);
}

static void free_driver(lab_driver_t *d)
{
    void (*cb)(void *) = d->close_cb;
    void *arg = d->close_arg;
    for (size_t i = 0; i < d->nactions; i++)
        lab_jschema_free(d->schemas[i]);
    free(d->schemas);
    for (size_t i = 0; i < d->nkv; i++) {
        free((char *)d->kv[i].key);
        free((char *)d->kv[i].value);
    }
    free(d->kv);
    json_decref(d->info);
    lab_wirerec_close(d->rec); /* writes what is buffered and joins the writer */
    free(d->rec_path);
    free(d->site_slots);
    free(d->id);
    free(d);
    if (cb)
        cb(arg);
}

static void handle_closed(uv_handle_t *h)
{
    lab_driver_t *d = h->data;
    if (--d->handles == 0 && d->driver_closed)
        free_driver(d);
}

void lab_drv_closed(lab_driver_t *d)
{
    d->driver_closed = true;
    if (d->handles == 0)
        free_driver(d);
}

void lab_driver_close(lab_driver_t *d, void (*cb)(void *arg), void *arg)
{
    if (d->closing)
        return;
    d->close_cb = cb;
    d->close_arg = arg;
    if (d->ops->stop)
        d->ops->stop(d);
    d->closing = true;
    /* Every operation ends, callbacks included, before the memory goes. */
    op_t *all = d->cur;
    d->cur = NULL;
    if (all) {
        lab_drv_error_set(&all->err, LAB_ECANCELLED, NULL, "the instrument was closed");
        all->next = d->done_head;
        d->done_head = all;
    }
    for (op_t *op = d->head; op; op = op->next) {
        lab_drv_error_set(&op->err, LAB_ECANCELLED, NULL, "the instrument was closed");
        op->err.not_started = true;
    }
    if (d->tail) {
        d->tail->next = d->done_head;
        d->done_head = d->head;
    }
    d->head = d->tail = NULL;
    while (d->done_head) {
        op_t *op = d->done_head;
        d->done_head = op->next;
        deliver(d, op);
    }
    uv_close((uv_handle_t *)&d->kick, handle_closed);
    uv_close((uv_handle_t *)&d->kick_idle, handle_closed);
    uv_close((uv_handle_t *)&d->op_timer, handle_closed);
    uv_close((uv_handle_t *)&d->poll_timer, handle_closed);
    if (d->ops->close)
        d->ops->close(d);
    else
        lab_drv_closed(d);
}

void lab_driver_pause(lab_driver_t *d, bool paused)
{
    d->paused = paused;
    publish(d); /* at once: the caller's answer shows the new state */
    schedule(d);
}

static int call_queue(lab_driver_t *d, const char *action, json_t *params, double timeout_s,
                      lab_drv_done_cb cb, void *arg, lab_drv_error_t *err, json_t **problems)
{
    size_t idx = 0;
    const lab_drv_action_t *a = action_find(d, action, &idx);
    if (!a) {
        char known[512];
        size_t n = 0;
        known[0] = '\0';
        for (size_t i = 0; i < d->nactions && n < sizeof known; i++)
            n += (size_t)snprintf(known + n, sizeof known - n, "%s%s", i ? ", " : "",
                                  d->ops->actions[i].name);
        lab_drv_error_set(err, LAB_ENOACTION, NULL, "%s (%s) has no action '%s'; it has: %s", d->id,
                          d->ops->name, action ? action : "", known);
        return err->code;
    }
    json_t *empty = NULL;
    if (!params)
        params = empty = json_object();
    if (!json_is_object(params)) {
        json_decref(empty);
        lab_drv_error_set(err, LAB_EINVAL, NULL, "params must be an object");
        if (problems)
            json_array_append_new(
                *problems ? *problems : (*problems = json_array()),
                json_pack("{s:s,s:s}", "path", "/params", "message", "must be an object"));
        return err->code;
    }
    if (!d->schemas[idx]) {
        char why[200];
        d->schemas[idx] = lab_jschema_compile(
            a->params_schema ? a->params_schema
                             : "{\"type\":\"object\",\"additionalProperties\":false}",
            why, sizeof why);
        if (!d->schemas[idx]) {
            json_decref(empty);
            lab_drv_error_set(err, LAB_EINTERNAL, NULL, "action %s: schema: %s", a->name, why);
            return err->code;
        }
    }
    lab_jerrs_t je = {0};
    if (lab_jschema_validate(d->schemas[idx], params, &je) == 0 && d->ops->check)
        d->ops->check(d, a, params, &je);
    if (je.n > 0) {
        if (problems) {
            if (!*problems)
                *problems = json_array();
            for (int i = 0; i < je.n; i++)
                json_array_append_new(*problems,
                                      json_pack("{s:s+,s:s}", "path", "/params", je.v[i].path,
                                                "message", je.v[i].message));
        }
        lab_drv_error_set(err, LAB_EINVAL, NULL, "%s: params%s: %s%s", a->name, je.v[0].path,
                          je.v[0].message, je.n > 1 ? " (and more, see errors)" : "");
        lab_jerrs_free(&je);
        json_decref(empty);
        return err->code;
    }
    lab_jerrs_free(&je);
    if (d->closing) {
        json_decref(empty);
        lab_drv_error_set(err, LAB_ECANCELLED, NULL, "%s is closing", d->id);
        return err->code;
    }
    if (d->conn == LAB_INST_OFFLINE && !(a->flags & LAB_DRV_ACT_OFFLINE)) {
        json_decref(empty);
        lab_drv_error_set(err, LAB_EOFFLINE, d->conn_err.device_code, "%s is offline%s%s", d->id,
                          d->conn_err.text[0] ? ": " : "", d->conn_err.text);
        return err->code;
    }
    if ((a->flags & LAB_DRV_ACT_NOT_IN_FAULT) && d->conn == LAB_INST_FAULT) {
        json_decref(empty);
        refuse_in_fault(d, a, err);
        return err->code;
    }
    op_t *op = lab_calloc(1, sizeof *op);
    op->a = a;
    op->params = empty ? empty : json_incref(params);
    double t = timeout_s > 0 ? timeout_s : (a->timeout_s > 0 ? a->timeout_s : 10);
    op->timeout_ms = lab_drv_lab_ms(d, t);
    if (op->timeout_ms < 2000) /* the serial line itself needs this much, whatever the scale */
        op->timeout_ms = 2000;
    op->cb = cb;
    op->arg = arg;
    if (a->flags & LAB_DRV_ACT_IMMEDIATE) {
        d->imm = op;
        d->ops->invoke(d, a, op->params);
        if (d->imm) { /* it did not answer inside invoke */
            d->imm = NULL;
            lab_drv_error_set(&op->err, LAB_EINTERNAL, NULL, "%s gave no answer", a->name);
        }
        finish(d, op);
        return LAB_OK;
    }
    if (d->queued >= QUEUE_MAX) {
        op_free(op);
        lab_drv_error_set(err, LAB_EBUSY, NULL, "%s has %d operations waiting", d->id, QUEUE_MAX);
        return err->code;
    }
    op->next = NULL;
    if (d->tail)
        d->tail->next = op;
    else
        d->head = op;
    d->tail = op;
    d->queued++;
    schedule(d);
    return LAB_OK;
}

int lab_driver_call(lab_driver_t *d, const char *action, json_t *params, double timeout_s,
                    lab_drv_done_cb cb, void *arg, lab_drv_error_t *err, json_t **problems)
{
    int rc = call_queue(d, action, params, timeout_s, cb, arg, err, problems);
    if (rc != LAB_OK)
        err->not_started = true; /* refused: nothing was queued */
    return rc;
}

int lab_driver_feed(lab_driver_t *d, const char *doc, size_t len, char *err, size_t errlen)
{
    if (!d->ops->feed) {
        snprintf(err, errlen, "%s (%s) takes no reports", d->id, d->ops->name);
        return LAB_ENOACTION;
    }
    int rc = d->ops->feed(d, doc, len, err, errlen);
    return rc < 0 ? rc : LAB_OK;
}

/* ---- driver side ---- */

void lab_drv_set_state(lab_driver_t *d, lab_inst_state_t s, const lab_drv_error_t *err)
{
    if (d->closing)
        return;
    LAB_CHECK(s == LAB_INST_OFFLINE || s == LAB_INST_IDLE || s == LAB_INST_FAULT, return );
    d->conn = s;
    if (err && err->code != LAB_OK) {
        d->conn_err = *err;
        lab_text_trim(d->conn_err.text); /* a driver may have composed it with a cut */
        d->last_err = d->conn_err;
    } else {
        memset(&d->conn_err, 0, sizeof d->conn_err);
    }
    if (s == LAB_INST_OFFLINE) {
        if (d->cur) {
            op_t *op = d->cur;
            d->cur = NULL;
            uv_timer_stop(&d->op_timer);
            if (d->ops->abort)
                d->ops->abort(d);
            lab_drv_error_set(&op->err, LAB_EOFFLINE, d->conn_err.device_code,
                              "%s went offline during %s%s%s", d->id, op->a->name,
                              d->conn_err.text[0] ? ": " : "", d->conn_err.text);
            finish(d, op);
        }
        fail_queued(d, LAB_EOFFLINE, "the instrument went offline before it could start");
    }
    schedule(d);
}

void lab_drv_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result)
{
    bool imm = d->imm != NULL;
    op_t *op = imm ? d->imm : d->cur;
    if (!op || d->closing) {
        json_decref(result); /* an aborted operation's late end */
        return;
    }
    if (err && err->code != LAB_OK) {
        op->err = *err;
        lab_text_trim(op->err.text); /* a driver may have composed it with a cut */
        json_decref(result);
    } else {
        op->err.code = LAB_OK;
        op->result = result ? result : json_object();
    }
    if (imm) {
        d->imm = NULL; /* lab_driver_call finishes it */
        return;
    }
    d->cur = NULL;
    uv_timer_stop(&d->op_timer);
    finish(d, op);
}

const lab_drv_action_t *lab_drv_current(lab_driver_t *d)
{
    return d->imm ? d->imm->a : d->cur ? d->cur->a : NULL;
}

void lab_drv_telemetry(lab_driver_t *d, int64_t ts_ms, json_t *values)
{
    if (!d->closing && d->host.on_telemetry && json_object_size(values))
        d->host.on_telemetry(d->host.ctx, d, ts_ms, values);
    json_decref(values);
}

void lab_drv_set_info(lab_driver_t *d, const char *key, json_t *value)
{
    json_object_set_new(d->info, key, value);
}
