/* The instruments of the cell: creation from the config, state and telemetry into the outbox,
 * MQTT reports to their instrument. */
#include "daemon/instr/instr.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/bus/topics.h"
#include "daemon/store/prompts.h"
#include "daemon/store/utilisation.h"
#include "drivers/transport/wirerec.h"
#include "drivers/supplies.h"
#include "protocols/report.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct inst {
    lab_driver_t *drv;
    json_t *telemetry; /* newest value of each name */
    json_t *units;
    int64_t telemetry_ms;
    int64_t state_ms;
    /* the operator's hold: who paused it and why, who resumed it (empty: nobody yet) */
    bool held;
    char *paused_by, *pause_reason, *resumed_by;
    int64_t paused_ms, resumed_ms;
    /* its prompts (fault, a manual move) are open; who last asked it for an action, and which */
    bool fault_open, move_open;
    char *actor, *act;
    /* lab seconds in each state since the daemon started, the current state and since when */
    double secs[LAB_INST_NSTATES];
    lab_inst_state_t cur;
    int64_t cur_ms;
    bool cur_known;
} inst_t;

struct lab_instr {
    uv_loop_t *loop;
    lab_store_t *st;
    lab_mqtt_t *mqtt;
    const lab_clock_t *clock;
    inst_t *v;
    int n;
    int closing; /* instruments still closing */
    void (*close_cb)(void *arg);
    void *close_arg;
    uint64_t rows_failed;
    lab_instr_state_cb state_cb;
    void *state_ctx;
    struct {
        lab_instr_action_cb cb;
        void *ctx;
    } on_action[LAB_INSTR_ACTION_LISTENERS];
    int non_action;
    uv_timer_t seen; /* marks the open state intervals as lasting (utilisation) */
    bool seen_on;
};

void lab_instr_on_state(lab_instr_t *in, lab_instr_state_cb cb, void *ctx)
{
    in->state_cb = cb;
    in->state_ctx = ctx;
}

/* ---- config ---- */

typedef struct check_ctx {
    lab_cfg_errors_t *errs;
    char section[160];
} check_ctx_t;

static void check_err(void *ctx, int line, const char *key, const char *reason)
{
    check_ctx_t *c = ctx;
    lab_cfg_error_add(c->errs, line, c->section, key, "%s", reason);
}

static void conf_of(const lab_config_t *cfg, const lab_cfg_instrument_t *ci, lab_drv_conf_t *dc,
                    lab_drv_kv_t *kv)
{
    for (int j = 0; j < ci->n; j++)
        kv[j] = (lab_drv_kv_t){ci->kv[j].key, ci->kv[j].value, ci->kv[j].line};
    *dc = (lab_drv_conf_t){.id = ci->id,
                           .line = ci->line,
                           .kv = kv,
                           .n = (size_t)ci->n,
                           .time_scale = cfg->time_scale};
}

int lab_instr_check(const lab_config_t *cfg, lab_cfg_errors_t *errs)
{
    int n = 0;
    for (int i = 0; i < cfg->n_instruments; i++) {
        const lab_cfg_instrument_t *ci = &cfg->instruments[i];
        lab_drv_kv_t *kv = lab_calloc((size_t)ci->n + 1, sizeof *kv);
        lab_drv_conf_t dc;
        conf_of(cfg, ci, &dc, kv);
        check_ctx_t c = {errs, ""};
        snprintf(c.section, sizeof c.section, "instrument %s", ci->id);
        n += lab_driver_check(&dc, check_err, &c);
        free(kv);
    }
    return n;
}

int lab_instr_check_record(const lab_config_t *cfg, lab_cfg_errors_t *warns)
{
    /* Where state_dir is still to be made, so is its wire/: the state_dir check judges that. */
    struct stat st;
    char *wire_dir = stat(cfg->state_dir, &st) == 0 && S_ISDIR(st.st_mode)
                         ? lab_asprintf("%s/wire", cfg->state_dir)
                         : NULL;
    int n = 0;
    for (int i = 0; i < cfg->n_instruments; i++) {
        const lab_cfg_instrument_t *ci = &cfg->instruments[i];
        lab_drv_kv_t *kv = lab_calloc((size_t)ci->n + 1, sizeof *kv);
        lab_drv_conf_t dc;
        conf_of(cfg, ci, &dc, kv);
        dc.record_dir = wire_dir;
        bool on;
        int line;
        char *path = lab_driver_record_path(&dc, &on, &line);
        char why[700], section[160];
        if (on && lab_wirerec_check_path(path, false, why, sizeof why) != LAB_OK) {
            snprintf(section, sizeof section, "instrument %s", ci->id);
            lab_cfg_error_add(warns, line, section, "record",
                              "%s; the instrument will run without recording", why);
            n++;
        }
        free(path);
        free(kv);
    }
    free(wire_dir);
    return n;
}

static void print_table(FILE *out, const lab_drv_key_t *k)
{
    static const char *const tn[] = {"string", "integer", "number", "choice"};
    for (; k->name; k++)
        fprintf(out, "  %-22s %-9s default=%s%s  ; %s%s%s\n", k->name, tn[k->type],
                k->def ? k->def : "-", k->flags & LAB_DRV_KEY_REQUIRED ? " required" : "", k->help,
                k->choices ? ": " : "", k->choices ? k->choices : "");
}

void lab_instr_print_keys(FILE *out)
{
    fprintf(out, "[instrument ID]  ; one instrument; keys every driver takes:\n");
    print_table(out, lab_drv_common_keys);
    fprintf(out, "  ; a liquid handler's consumables:\n");
    print_table(out, lab_drv_supply_keys);
    for (const lab_driver_ops_t *const *o = lab_drivers; *o; o++) {
        fprintf(out, "  driver = %s  (%s, kind %s):\n", (*o)->name, (*o)->model, (*o)->kind);
        print_table(out, (*o)->keys);
    }
}

/* ---- outbox rows ---- */

typedef struct row_op {
    lab_store_op_t op;
    lab_instr_t *in;
    const char *kind;
    char *key, *payload;
    int64_t ts_ms;
    const char *state; /* an instrument.state row: the state its interval is in */
} row_op_t;

static int row_apply(lab_store_op_t *op, sqlite3 *db)
{
    row_op_t *r = (row_op_t *)op;
    int64_t seq = lab_outbox_append(db, r->kind, r->key, r->payload, r->ts_ms);
    if (seq > 0 && r->state)
        return lab_util_change(db, r->key, r->state, r->ts_ms);
    return seq > 0 ? 0 : (int)seq;
}

static void row_done(lab_store_op_t *op, int status)
{
    row_op_t *r = (row_op_t *)op;
    if (status != 0) {
        if (r->in)
            r->in->rows_failed++;
        log_error("instr", "instrument=%s kind=%s not recorded: %s", r->key, r->kind,
                  lab_strerror(status));
    }
    free(r->key);
    free(r->payload);
    free(r);
}

/* state: for an instrument.state row, the state (its interval begins with the row). */
static void append_row(lab_instr_t *in, const char *kind, const char *key, json_t *doc,
                       int64_t ts_ms, const char *state)
{
    row_op_t *r = lab_calloc(1, sizeof *r);
    r->op.apply = row_apply;
    r->op.done = row_done;
    r->in = in;
    r->kind = kind;
    r->key = lab_strdup(key);
    r->payload = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(10));
    r->ts_ms = ts_ms;
    r->state = state;
    lab_store_submit(in->st, &r->op);
}

/* ---- host callbacks ---- */

static inst_t *inst_of(lab_instr_t *in, lab_driver_t *d)
{
    for (int i = 0; i < in->n; i++)
        if (in->v[i].drv == d)
            return &in->v[i];
    return NULL;
}

/* ---- prompts ---- */

/* Who answered a prompt of this instrument: the person whose action came last since it opened
 * (a reset, a confirm), or nobody when it went away by itself. */
static void prompt_close(lab_instr_t *in, inst_t *it, const char *id, const char *how_alone,
                         int64_t ts_ms)
{
    json_t *doc = json_pack("{s:b, s:s?, s:s}", "open", 0, "by", it->actor, "how",
                            it->act ? it->act : how_alone);
    lab_prompt_submit(in->st, id, doc, ts_ms);
    json_decref(doc);
}

/* An instrument in fault, and a manual move asked for, wait for a person. */
static void prompts_update(lab_instr_t *in, inst_t *it, lab_driver_t *d, lab_inst_state_t state)
{
    const char *id = lab_driver_id(d);
    int64_t now = it->state_ms;
    bool fault = state == LAB_INST_FAULT;
    if (fault != it->fault_open) {
        char *pid = lab_asprintf("instrument:%s:fault", id);
        if (fault) {
            const lab_drv_error_t *le = lab_driver_last_error(d);
            char *title = lab_asprintf("%s in fault", id);
            json_t *doc =
                json_pack("{s:b, s:s, s:s, s:s, s:s, s:o}", "open", 1, "kind", "instrument.fault",
                          "instrument", id, "title", title, "text", le->code ? le->text : "fault",
                          "error", le->code ? lab_drv_error_json(le) : json_null());
            if (!doc) /* the device's words are not UTF-8: the prompt goes without them */
                doc = json_pack("{s:b, s:s, s:s, s:s, s:s, s:n}", "open", 1, "kind",
                                "instrument.fault", "instrument", id, "title", title, "text",
                                "fault", "error");
            lab_prompt_submit(in->st, pid, doc, now);
            json_decref(doc);
            free(title);
        } else {
            prompt_close(in, it, pid, "recovered", now);
        }
        it->fault_open = fault;
        free(pid);
    }
    json_t *move = json_object_get(lab_driver_info(d), "pending_move");
    bool moving = json_is_object(move);
    if (moving != it->move_open) {
        char *pid = lab_asprintf("move:%s", id);
        if (moving) {
            const char *plate = json_string_value(json_object_get(move, "plate"));
            char *title = lab_asprintf("Move plate%s%s", plate ? " " : "", plate ? plate : "");
            char *text = lab_asprintf("from %s to %s",
                                      json_string_value(json_object_get(move, "from")) ?: "?",
                                      json_string_value(json_object_get(move, "to")) ?: "?");
            json_t *doc = json_pack("{s:b, s:s, s:s, s:s, s:s, s:O}", "open", 1, "kind", "move",
                                    "instrument", id, "title", title, "text", text, "move", move);
            lab_prompt_submit(in->st, pid, doc, now);
            json_decref(doc);
            free(title);
            free(text);
        } else {
            prompt_close(in, it, pid, "withdrawn", now);
        }
        it->move_open = moving;
        free(pid);
    }
    if (!fault && !moving) { /* the next prompt's answer is the next action's */
        free(it->actor);
        free(it->act);
        it->actor = it->act = NULL;
    }
}

void lab_instr_note_action(lab_instr_t *in, lab_driver_t *d, const char *by, const char *action)
{
    inst_t *it = inst_of(in, d);
    if (!it || (!it->fault_open && !it->move_open))
        return;
    free(it->actor);
    free(it->act);
    it->actor = lab_strdup(by);
    it->act = lab_strdup(action);
}

/* The seconds of the state that ends go to its total; an instrument's clock never runs
 * backwards in the totals. */
static void state_count(inst_t *it, lab_inst_state_t state, int64_t now_ms)
{
    if (it->cur_known && now_ms > it->cur_ms)
        it->secs[it->cur] += (double)(now_ms - it->cur_ms) / 1000.0;
    if (!it->cur_known || now_ms > it->cur_ms)
        it->cur_ms = now_ms;
    it->cur = state;
    it->cur_known = true;
}

void lab_instr_state_seconds(lab_instr_t *in, lab_driver_t *d, double out[LAB_INST_NSTATES])
{
    inst_t *it = inst_of(in, d);
    for (int k = 0; k < LAB_INST_NSTATES; k++)
        out[k] = it ? it->secs[k] : 0;
    int64_t now = lab_clock_now_ms(in->clock);
    if (it && it->cur_known && now > it->cur_ms)
        out[it->cur] += (double)(now - it->cur_ms) / 1000.0;
}

static void on_state(void *ctx, lab_driver_t *d, lab_inst_state_t state,
                     const lab_drv_error_t *last)
{
    (void)last;
    lab_instr_t *in = ctx;
    inst_t *it = inst_of(in, d);
    if (!it) /* the first report comes from lab_driver_start, before v[i].drv is set */
        return;
    it->state_ms = lab_clock_now_ms(in->clock);
    state_count(it, state, it->state_ms);
    json_t *doc = lab_instr_doc(in, d, false);
    append_row(in, "instrument.state", lab_driver_id(d), doc, it->state_ms,
               lab_inst_state_name(state));
    json_decref(doc);
    prompts_update(in, it, d, state);
    if (in->state_cb)
        in->state_cb(in->state_ctx, d, state);
}

static void on_telemetry(void *ctx, lab_driver_t *d, int64_t ts_ms, json_t *values)
{
    lab_instr_t *in = ctx;
    inst_t *it = inst_of(in, d);
    if (!it)
        return;
    if (ts_ms <= 0)
        ts_ms = lab_clock_now_ms(in->clock);
    json_t *units = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(values, k, v)
    {
        json_object_set(it->telemetry, k, v);
        json_object_set_new(it->units, k, json_string(report_unit(k)));
        json_object_set_new(units, k, json_string(report_unit(k)));
    }
    it->telemetry_ms = ts_ms;
    char ts[32];
    lab_time_iso(ts_ms, ts);
    json_t *doc = json_pack("{s:s, s:s, s:O, s:o}", "instrument", lab_driver_id(d), "ts", ts,
                            "values", values, "units", units);
    append_row(in, "instrument.telemetry", lab_driver_id(d), doc, ts_ms, NULL);
    json_decref(doc);
}

/* ---- reports over MQTT ---- */

/* An answer that cannot be built (text quoted from the report that is not JSON text) is a fixed
 * refusal, logged, never a crash. */
static void answer(lab_instr_t *in, const lab_mqtt_in_t *msg, json_t *doc)
{
    const char *response_topic = msg->response_topic;
    if (response_topic) {
        char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        if (!text)
            log_error("instr", "the answer to a report on topic %s could not be built",
                      response_topic);
        lab_mqtt_reply(in->mqtt, response_topic, msg->corr, msg->corr_len,
                       text ? text
                            : "{\"accepted\":false,\"errors\":[{\"path\":\"\",\"message\":"
                              "\"internal error\"}]}");
        free(text);
    }
    json_decref(doc);
}

static void on_report(void *ctx, const lab_mqtt_in_t *msg)
{
    lab_instr_t *in = ctx;
    const char *topic = msg->topic;
    const char *root = lab_mqtt_root(in->mqtt);
    size_t rl = strlen(root);
    char id[128];
    if (strncmp(topic, root, rl) != 0 || topic[rl] != '/' ||
        report_topic_parse(topic + rl + 1, id, sizeof id) != LAB_OK) {
        log_warn("instr", "report on unexpected topic=%s", topic);
        return;
    }
    lab_driver_t *d = lab_instr_find(in, id, strlen(id));
    char err[400];
    if (!d) {
        log_warn("instr", "report for unknown instrument=%s", id);
        answer(in, msg,
               json_pack("{s:b, s:[{s:s, s:s}]}", "accepted", 0, "errors", "path", "", "message",
                         "no such instrument in this cell"));
        return;
    }
    if (lab_driver_feed(d, msg->payload, msg->len, err, sizeof err) != LAB_OK) {
        log_warn("instr", "instrument=%s report refused: %s", id, err);
        /* err is "PATH: message" */
        /* err is "PATH: message", PATH in the codec's "$.values.name" form: answered as a JSON
         * Pointer like every other error of the API. */
        const char *colon = strstr(err, ": ");
        char ptr[200] = "";
        size_t n = 0;
        for (const char *p = err; colon && p < colon && n + 1 < sizeof ptr; p++)
            if (*p != '$')
                ptr[n++] = *p == '.' ? '/' : *p;
        ptr[n] = '\0';
        json_t *e = json_pack("{s:s, s:s}", "path", ptr, "message", colon ? colon + 2 : err);
        answer(in, msg, json_pack("{s:b, s:[o]}", "accepted", 0, "errors", e));
        return;
    }
    answer(in, msg, json_pack("{s:b, s:s}", "accepted", 1, "instrument", id));
}

/* ---- lifecycle ---- */

int lab_instr_start(lab_instr_t **out, uv_loop_t *loop, const lab_config_t *cfg, lab_store_t *st,
                    lab_mqtt_t *mqtt, const lab_clock_t *clock)
{
    return lab_instr_start_with(out, loop, cfg, st, mqtt, clock, NULL);
}

static void on_seen(uv_timer_t *t)
{
    lab_instr_t *in = t->data;
    lab_util_seen(in->st, lab_clock_now_ms(in->clock));
}

static const lab_driver_ops_t *extra_find(const lab_driver_ops_t *const *extra,
                                          const lab_drv_conf_t *dc)
{
    const char *name = lab_drv_conf_str(dc, "driver");
    for (; extra && *extra && name; extra++)
        if (strcmp((*extra)->name, name) == 0)
            return *extra;
    return NULL;
}

int lab_instr_start_with(lab_instr_t **out, uv_loop_t *loop, const lab_config_t *cfg,
                         lab_store_t *st, lab_mqtt_t *mqtt, const lab_clock_t *clock,
                         const lab_driver_ops_t *const *extra)
{
    lab_instr_t *in = lab_calloc(1, sizeof *in);
    in->loop = loop;
    in->st = st;
    in->mqtt = mqtt;
    in->clock = clock;
    in->v = lab_calloc((size_t)cfg->n_instruments + 1, sizeof *in->v);
    lab_drv_host_t host = {on_state, on_telemetry, in};
    /* A fault or a move of the daemon that stopped is no longer what it was: the instruments
     * start over and open their prompts again if need be. */
    if (st) {
        int64_t now = lab_clock_now_ms(clock);
        lab_prompts_close_prefix(st, "instrument:", "restart", now);
        lab_prompts_close_prefix(st, "move:", "restart", now);
        /* intervals a kill -9 left open end where they were last known to last */
        lab_util_close_stale(st);
        uv_timer_init(loop, &in->seen);
        in->seen.data = in;
        uv_timer_start(&in->seen, on_seen, LAB_UTIL_SEEN_MS, LAB_UTIL_SEEN_MS);
        uv_unref((uv_handle_t *)&in->seen);
        in->seen_on = true;
    }
    /* Recording is on by default, into STATE_DIR/wire (docs/design.md, Wire recording). */
    char *wire_dir = lab_asprintf("%s/wire", cfg->state_dir);
    for (int i = 0; i < cfg->n_instruments; i++) {
        const lab_cfg_instrument_t *ci = &cfg->instruments[i];
        lab_drv_kv_t *kv = lab_calloc((size_t)ci->n + 1, sizeof *kv);
        lab_drv_conf_t dc;
        conf_of(cfg, ci, &dc, kv);
        dc.record_dir = wire_dir;
        dc.clock = clock;
        char err[300];
        lab_driver_t *d = NULL;
        const lab_driver_ops_t *ops = extra_find(extra, &dc);
        int rc = ops ? lab_driver_new_ops(loop, ops, &dc, &host, &d, err, sizeof err)
                     : lab_driver_new(loop, &dc, &host, &d, err, sizeof err);
        free(kv);
        if (rc != LAB_OK) {
            log_error("instr", "instrument=%s cannot be opened: %s", ci->id, err);
            free(wire_dir);
            *out = in;
            return rc;
        }
        in->v[in->n].drv = d;
        in->v[in->n].telemetry = json_object();
        in->v[in->n].units = json_object();
        in->n++;
    }
    free(wire_dir);
    for (int i = 0; i < in->n; i++)
        lab_driver_start(in->v[i].drv); /* reports its first state at once */
    if (mqtt && in->n) {
        char *filter = lab_topic_filter(lab_topic_get(LAB_TOPIC_IN_REPORT), lab_mqtt_root(mqtt));
        int rc = lab_mqtt_subscribe(mqtt, filter, 1, on_report, in);
        if (rc != LAB_OK)
            log_error("instr", "cannot subscribe to %s: %s", filter, lab_strerror(rc));
        free(filter);
    }
    log_info("instr", "instruments=%d", in->n);
    *out = in;
    return LAB_OK;
}

static void instr_free(lab_instr_t *in)
{
    void (*cb)(void *) = in->close_cb;
    void *arg = in->close_arg;
    for (int i = 0; i < in->n; i++) {
        json_decref(in->v[i].telemetry);
        json_decref(in->v[i].units);
        free(in->v[i].paused_by);
        free(in->v[i].pause_reason);
        free(in->v[i].resumed_by);
        free(in->v[i].actor);
        free(in->v[i].act);
    }
    free(in->v);
    free(in);
    if (cb)
        cb(arg);
}

static void one_closed(void *arg)
{
    lab_instr_t *in = arg;
    if (--in->closing == 0)
        instr_free(in);
}

static void seen_closed(uv_handle_t *h)
{
    one_closed(h->data);
}

void lab_instr_close(lab_instr_t *in, void (*cb)(void *arg), void *arg)
{
    in->close_cb = cb;
    in->close_arg = arg;
    in->closing = 1;
    if (in->seen_on) { /* a clean stop: every state lasted until now */
        lab_util_close_all(in->st, lab_clock_now_ms(in->clock));
        in->closing++;
        uv_close((uv_handle_t *)&in->seen, seen_closed);
    }
    for (int i = 0; i < in->n; i++)
        if (in->v[i].drv) {
            in->closing++;
            lab_driver_t *d = in->v[i].drv;
            lab_driver_close(d, one_closed, in);
        }
    one_closed(in);
}

int lab_instr_count(const lab_instr_t *in)
{
    return in ? in->n : 0;
}

lab_driver_t *lab_instr_at(lab_instr_t *in, int i)
{
    return in && i >= 0 && i < in->n ? in->v[i].drv : NULL;
}

lab_driver_t *lab_instr_find(lab_instr_t *in, const char *id, size_t len)
{
    for (int i = 0; in && i < in->n; i++) {
        const char *name = lab_driver_id(in->v[i].drv);
        if (strlen(name) == len && memcmp(name, id, len) == 0)
            return in->v[i].drv;
    }
    return NULL;
}

int lab_instr_hold(lab_instr_t *in, lab_driver_t *d, bool paused, const char *by,
                   const char *reason)
{
    inst_t *it = inst_of(in, d);
    if (!it)
        return LAB_ENOTFOUND;
    int64_t now = lab_clock_now_ms(in->clock);
    it->held = paused;
    if (paused) {
        free(it->paused_by);
        free(it->pause_reason);
        it->paused_by = lab_strdup(by);
        it->pause_reason = reason ? lab_strdup(reason) : NULL;
        it->paused_ms = now;
    } else {
        free(it->resumed_by);
        it->resumed_by = lab_strdup(by);
        it->resumed_ms = now;
    }
    lab_inst_state_t before = lab_driver_state(d);
    lab_driver_pause(d, paused);
    /* An instrument in fault or offline stays so when held or let go: its state row does not
     * change, so the hold gets a row of its own (the dashboard shows who holds it). */
    if (lab_driver_state(d) == before) {
        it->state_ms = now;
        json_t *doc = lab_instr_doc(in, d, false);
        append_row(in, "instrument.state", lab_driver_id(d), doc, now,
                   lab_inst_state_name(lab_driver_state(d)));
        json_decref(doc);
    }
    return 0;
}

json_t *lab_instr_doc(lab_instr_t *in, lab_driver_t *d, bool detail)
{
    const lab_driver_ops_t *ops = lab_driver_ops(d);
    inst_t *it = inst_of(in, d);
    const lab_drv_error_t *le = lab_driver_last_error(d);
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "id", lab_driver_id(d), "kind",
                            ops->kind, "driver", ops->name, "model", ops->model, "state",
                            lab_inst_state_name(lab_driver_state(d)), "capacity",
                            (json_int_t)lab_driver_capacity(d));
    const char *label = lab_drv_str(d, "label");
    if (*label)
        json_object_set_new(doc, "label", json_string(label));
    json_object_set_new(doc, "last_error", le->code ? lab_drv_error_json(le) : json_null());
    json_object_set(doc, "info", lab_driver_info(d));
    char ts[32];
    if (it && it->state_ms) {
        lab_time_iso(it->state_ms, ts);
        json_object_set_new(doc, "updated_at", json_string(ts));
    }
    if (it && it->held) {
        lab_time_iso(it->paused_ms, ts);
        json_object_set_new(doc, "paused_by", json_string(it->paused_by));
        json_object_set_new(doc, "paused_at", json_string(ts));
        if (it->pause_reason)
            json_object_set_new(doc, "pause_reason", json_string(it->pause_reason));
    }
    if (it && !it->held && it->resumed_ms) {
        lab_time_iso(it->resumed_ms, ts);
        json_object_set_new(doc, "resumed_by", json_string(it->resumed_by));
        json_object_set_new(doc, "resumed_at", json_string(ts));
    }
    if (it) {
        json_t *tel = json_pack("{s:O, s:O}", "values", it->telemetry, "units", it->units);
        if (it->telemetry_ms) {
            lab_time_iso(it->telemetry_ms, ts);
            json_object_set_new(tel, "ts", json_string(ts));
        }
        json_object_set_new(doc, "telemetry", tel);
    }
    if (detail) {
        lab_driver_stats_t s;
        lab_driver_stats(d, &s);
        json_object_set_new(doc, "stats",
                            json_pack("{s:I, s:I, s:I, s:I, s:i}", "operations", (json_int_t)s.ops,
                                      "failed", (json_int_t)s.failed, "timeouts",
                                      (json_int_t)s.timeouts, "polls", (json_int_t)s.polls,
                                      "queued", s.queued));
        json_t *acts = json_array();
        for (const lab_drv_action_t *a = ops->actions; a->name; a++) {
            json_t *schema = a->params_schema ? json_loads(a->params_schema, 0, NULL) : NULL;
            json_array_append_new(acts, json_pack("{s:s, s:s, s:o, s:f}", "name", a->name, "help",
                                                  a->help ? a->help : "", "params",
                                                  schema ? schema : json_object(), "timeout_s",
                                                  a->timeout_s));
        }
        json_object_set_new(doc, "actions", acts);
    }
    return doc;
}

/* ---- actions ---- */

int lab_instr_on_action(lab_instr_t *in, lab_instr_action_cb cb, void *ctx)
{
    if (in->non_action >= LAB_INSTR_ACTION_LISTENERS)
        return LAB_EFULL;
    in->on_action[in->non_action].cb = cb;
    in->on_action[in->non_action].ctx = ctx;
    in->non_action++;
    return LAB_OK;
}

bool lab_instr_action_is(const lab_driver_t *d, const char *action, lab_drv_role_t role)
{
    for (const lab_drv_role_action_t *r = lab_driver_ops(d)->roles; action && r && r->role; r++)
        if (r->role == role && strcmp(r->action, action) == 0)
            return true;
    return false;
}

/* One action in flight: what its listeners are told when it ends, and the caller's callback. */
typedef struct icall {
    lab_instr_t *in;
    char *action, *plate, *run, *by;
    json_t *params;
    lab_drv_done_cb cb;
    void *arg;
} icall_t;

static void icall_free(icall_t *c)
{
    free(c->action);
    free(c->plate);
    free(c->run);
    free(c->by);
    json_decref(c->params);
    free(c);
}

static void tell(lab_instr_t *in, const lab_instr_act_t *act)
{
    for (int i = 0; i < in->non_action; i++)
        in->on_action[i].cb(in->on_action[i].ctx, act);
}

static void icall_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg)
{
    icall_t *c = arg;
    lab_instr_who_t who = {c->plate, c->run, c->by};
    bool ok = !err || err->code == LAB_OK;
    lab_drv_error_t none = {0};
    lab_instr_act_t act = {.d = d,
                           .action = c->action,
                           .params = c->params,
                           .ended = true,
                           .err = err ? err : &none,
                           .result = ok ? result : NULL,
                           .who = &who};
    tell(c->in, &act);
    if (c->cb)
        c->cb(d, err, result, c->arg);
    icall_free(c);
}

static char *dup_or_null(const char *s)
{
    return s ? lab_strdup(s) : NULL;
}

int lab_instr_call(lab_instr_t *in, lab_driver_t *d, const char *action, json_t *params,
                   double timeout_s, const lab_instr_who_t *who, lab_drv_done_cb cb, void *arg,
                   lab_drv_error_t *err, json_t **problems)
{
    icall_t *c = LAB_NEW(icall_t);
    c->in = in;
    c->action = dup_or_null(action);
    c->plate = dup_or_null(who ? who->plate : NULL);
    c->run = dup_or_null(who ? who->run : NULL);
    c->by = dup_or_null(who ? who->by : NULL);
    /* a copy: the caller's params may change or go before the action ends */
    c->params = params ? json_deep_copy(params) : json_object();
    c->cb = cb;
    c->arg = arg;
    int rc = lab_driver_call(d, action, c->params, timeout_s, icall_done, c, err, problems);
    if (rc != LAB_OK) {
        icall_free(c);
        return rc;
    }
    lab_instr_who_t w = {c->plate, c->run, c->by};
    lab_instr_act_t act = {.d = d, .action = c->action, .params = c->params, .who = &w};
    tell(in, &act);
    return LAB_OK;
}
