/* liconic-stx: Liconic STX incubators and stores over their PLC's ASCII protocol (the codec is
 * protocols/liconic.h), on the stream-driver base (drivers/stream.h), which owns the link, one
 * command in flight and resynchronisation. The driver owns the sequences: on every new
 * connection and after every resync a BREAK (the PLC's wake-up), the CR -> CC handshake and the
 * activation (ST 1801, wait ready); "RD 1915 until 1" at lab-time spacing for the mechanical
 * steps, and the error flag 1814 read after every such step (and when one does not end in
 * time): a set flag means the handler stopped, DM200 says why, and the instrument stays in fault
 * until an operation succeeds. E1 ("communication not opened by CR") means the PLC and the driver
 * are out of step: the line is drained and the handshake runs again.
 *
 * The protocol has no version or serial-number query, so the driver learns no firmware. */
#include "drivers/driver.h"
#include "drivers/stream.h"
#include "core/jschema.h"
#include "core/err.h"
#include "core/log.h"
#include "protocols/liconic.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIC_STEPS_MAX 24
#define LIC_REPLY_MS 1500    /* one reply at 9600 baud takes milliseconds; this is generous */
#define LIC_QUIET_MS 250     /* a quiet line for this long before the exchange (re)starts */
#define LIC_RETRY_MS 2000    /* between handshake attempts on an open link */
#define LIC_BREAK_MS 200     /* the wake-up BREAK ("> 100 ms required", PyLabRobot) */
#define LIC_READY_POLL_S 0.5 /* lab seconds between two RD 1915 */

/* poll_ready values: 1 reads the error flag once ready (the step itself may have failed); a wait
 * before our own commands only needs the handler idle, whatever an earlier step left. */
enum { LIC_READY_ONLY = 2 };
static const liconic_cmd_t lic_rd_ready = {LICONIC_OP_READ, LICONIC_FLAG_READY, 0, 0};

/* After a ready wait: reading the error flag, then the handler's code. */
typedef enum lic_check { LIC_CHECK_NONE = 0, LIC_CHECK_FLAG, LIC_CHECK_CODE } lic_check_t;
typedef enum lic_act {
    LIC_ACT_STATUS,
    LIC_ACT_LOAD,
    LIC_ACT_UNLOAD,
    LIC_ACT_SET_TEMPERATURE,
    LIC_ACT_SET_CLIMATE,
    LIC_ACT_RESET,
} lic_act_t;

typedef struct lic_step {
    liconic_step_t s;
    const char *key; /* a read whose value goes into the result under this name */
    int climate;     /* -1: the raw value; else the liconic_climate_t that scales it */
} lic_step_t;

/* A sequence of commands: the handshake's, or the operation's (which may wait for the
 * handshake, so each keeps its own). */
typedef struct lic_seq {
    lic_step_t steps[LIC_STEPS_MAX];
    int n, i;
    lic_check_t check;
    bool ready_late; /* the ready wait ran out; the flag decides between timeout and error */
    uint64_t ready_deadline;
    json_t *result;
} lic_seq_t;

typedef struct lic {
    lab_stream_t st;
    liconic_cassettes_t cassettes; /* each cassette's rack: DM23 and DM25 of its transfers */
    bool fault;    /* the handler reported an error; cleared by a successful operation */
    int climate_n; /* 1: temperature, 2: + humidity, 3: + CO2 */
    lic_act_t act;
    lic_seq_t conn, op;
    lic_seq_t *cur; /* the sequence on the line */
} lic_t;

static const struct {
    const char *name;
    lic_act_t act;
} lic_act_names[] = {
    {"status", LIC_ACT_STATUS},           {"load", LIC_ACT_LOAD},
    {"unload", LIC_ACT_UNLOAD},           {"set_temperature", LIC_ACT_SET_TEMPERATURE},
    {"set_climate", LIC_ACT_SET_CLIMATE}, {"reset", LIC_ACT_RESET},
};

#define LIC_SITE_SCHEMA                                                                            \
    "{\"type\":\"object\",\"required\":[\"cassette\",\"slot\"],\"additionalProperties\":false,"    \
    "\"properties\":{\"cassette\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":99},"            \
    "\"slot\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":999}}}"

static const lab_drv_action_t lic_actions[] = {
    {"status", NULL, 10, 0,
     "climate actual values and set points, and the handler's error flag (error_flag, "
     "handler_error when set)"},
    {"load", LIC_SITE_SCHEMA, 600, 0, "take the plate on the transfer station into a slot"},
    {"unload", LIC_SITE_SCHEMA, 600, 0, "bring the plate in a slot out to the transfer station"},
    {"set_temperature",
     "{\"type\":\"object\",\"required\":[\"temperature_c\"],\"additionalProperties\":false,"
     "\"properties\":{\"temperature_c\":{\"type\":\"number\",\"minimum\":0,\"maximum\":99}}}",
     10, 0, "write the temperature set point (degC); answers the set point read back"},
    {"set_climate",
     "{\"type\":\"object\",\"minProperties\":1,\"additionalProperties\":false,"
     "\"properties\":{\"temperature_c\":{\"type\":\"number\",\"minimum\":0,\"maximum\":99},"
     "\"humidity_pct\":{\"type\":\"number\",\"minimum\":0,\"maximum\":100},"
     "\"co2_pct\":{\"type\":\"number\",\"minimum\":0,\"maximum\":100}}}",
     10, 0, "write one or more climate set points; answers them read back"},
    {"reset", NULL, 600, 0,
     "clear the error flag (RS 1814) and re-initialise the handler (ST 1900, wait ready)"},
    {NULL, NULL, 0, 0, NULL},
};

static const lab_drv_key_t lic_keys[] = {
    LAB_DRV_SERIAL_KEYS("9600", "8", "even", "1", "rtscts"),
    {"rack_type", LAB_DRV_KEY_ENUM, NULL, 0, 0, LICONIC_RACK_CHOICES, 0,
     "the rack type of every cassette (PyLabRobot's model name, <site height>mm_<slots>): the "
     "slots (DM25) and the pitch in motor steps (DM23) written before every transfer come from "
     "it; this or rack_types is required"},
    {"cassettes", LAB_DRV_KEY_INT, NULL, 1, LICONIC_CASSETTES_MAX, NULL, 0,
     "with rack_type: how many cassettes of that rack (default 1)"},
    {"rack_types", LAB_DRV_KEY_STR, NULL, 0, 0, NULL, 0,
     "each cassette's rack type, from cassette 1 up without gaps: 1:liconic_rack_17mm_22, "
     "2:liconic_rack_44mm_10 (instead of rack_type and cassettes)"},
    {"climate", LAB_DRV_KEY_ENUM, "temperature+humidity+co2", 0, 0,
     "temperature|temperature+humidity|temperature+humidity+co2", 0,
     "the climate the model controls: status reads and set_climate writes only these"},
    {"step_timeout_s", LAB_DRV_KEY_DOUBLE, "300", 1, 86400, NULL, 0,
     "lab seconds a handling step may take before the error flag is read"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

static void lic_send(lab_driver_t *d);

/* ---- helpers ---- */

static void lic_step_add(lic_seq_t *q, liconic_cmd_t cmd, int poll_ready, const char *key,
                         int climate)
{
    if (q->n < LIC_STEPS_MAX)
        q->steps[q->n++] = (lic_step_t){{cmd, poll_ready}, key, climate};
}

static void lic_read(lic_seq_t *q, int dm, const char *key, int climate)
{
    lic_step_add(q, (liconic_cmd_t){LICONIC_OP_READ_DM, dm, 0, 0}, 0, key, climate);
}

static void lic_seq_clear(lic_seq_t *q)
{
    json_decref(q->result);
    q->result = NULL;
    q->n = q->i = 0;
    q->check = LIC_CHECK_NONE;
}

static bool lic_is_handler_error(const lab_drv_error_t *e)
{
    /* Handler codes are five digits ("00007"); controller codes are "E<n>". */
    return e->code == LAB_EDEVICE && strlen(e->device_code) == 5 && e->device_code[0] != 'E';
}

static void lic_handler_error(lab_drv_error_t *e, long code)
{
    char dc[8];
    liconic_handler_error_t h;
    snprintf(dc, sizeof dc, "%05ld", code < 0 ? 0 : code % 100000);
    if (liconic_handler_error_lookup((int)code, &h) == LAB_OK)
        lab_drv_error_set(e, LAB_EDEVICE, dc, "%s: %s", h.group, h.text);
    else
        lab_drv_error_set(e, LAB_EDEVICE, dc, "handler error %s (not in the error table)", dc);
}

/* ---- the end of a sequence ---- */

/* The operation ends first and the fault is reported after: the framework's own fault (an
 * operation that failed) clears itself on the next success, and must not clear the handler's. */
static void lic_op_end(lab_driver_t *d, const lab_drv_error_t *err)
{
    lic_t *p = lab_drv_priv(d);
    json_t *result = p->op.result;
    p->op.result = NULL;
    if (err) {
        json_decref(result);
        lab_drv_error_t e = *err;
        lab_drv_done(d, &e, NULL);
        if (lic_is_handler_error(&e)) {
            p->fault = true;
            lab_drv_set_state(d, LAB_INST_FAULT, &e);
        }
        return;
    }
    bool flag =
        p->act == LIC_ACT_STATUS && json_integer_value(json_object_get(result, "error_flag")) == 1;
    lab_drv_error_t e;
    if (flag)
        lic_handler_error(&e, (long)json_number_value(json_object_get(result, "handler_error")));
    else
        json_object_del(result, "handler_error");
    lab_drv_done(d, NULL, result);
    if (flag) {
        /* Telemetry still counts; the instrument needs a person (or reset) all the same. */
        p->fault = true;
        lab_drv_set_state(d, LAB_INST_FAULT, &e);
    } else if (p->fault) {
        p->fault = false;
        lab_drv_set_state(d, LAB_INST_IDLE, NULL);
    }
}

static void lic_handshake_end(lab_driver_t *d, const lab_drv_error_t *err)
{
    lic_t *p = lab_drv_priv(d);
    lic_seq_clear(&p->conn);
    if (!err) {
        p->fault = false;
        log_info("liconic", "instrument=%s handshake done, handling activated", lab_driver_id(d));
        lab_drv_set_state(d, LAB_INST_IDLE, NULL);
        return;
    }
    if (lic_is_handler_error(err)) {
        /* Connected and activated, but the handler holds an error from before. */
        lab_stream_link_up(&p->st);
        p->fault = true;
        lab_drv_set_state(d, LAB_INST_FAULT, err);
    }
    /* Otherwise the base reports offline and shakes hands again. */
}

static void lic_end_cb(lab_stream_t *s, lab_stream_owner_t owner, const lab_drv_error_t *err)
{
    lab_driver_t *d = lab_stream_driver(s);
    if (owner == LAB_STREAM_CONNECT)
        lic_handshake_end(d, err);
    else
        lic_op_end(d, err);
}

/* ---- the sequence engine ---- */

static void lic_enter_step(lab_driver_t *d)
{
    lic_t *p = lab_drv_priv(d);
    lic_seq_t *q = p->cur;
    q->ready_late = false;
    if (q->steps[q->i].s.poll_ready)
        q->ready_deadline =
            uv_now(lab_drv_loop(d)) + lab_drv_lab_ms(d, lab_drv_double(d, "step_timeout_s"));
}

static void lic_advance(lab_driver_t *d)
{
    lic_t *p = lab_drv_priv(d);
    if (++p->cur->i >= p->cur->n) {
        lab_stream_end(&p->st, NULL);
        return;
    }
    lic_enter_step(d);
    lic_send(d);
}

static void lic_resume(lab_stream_t *s)
{
    lic_send(lab_stream_driver(s));
}

static void lic_send(lab_driver_t *d)
{
    lic_t *p = lab_drv_priv(d);
    lic_seq_t *q = p->cur;
    liconic_cmd_t cmd = q->steps[q->i].s.cmd;
    if (q->check == LIC_CHECK_FLAG)
        cmd = (liconic_cmd_t){LICONIC_OP_READ, LICONIC_FLAG_ERROR, 0, 0};
    else if (q->check == LIC_CHECK_CODE)
        cmd = (liconic_cmd_t){LICONIC_OP_READ_DM, LICONIC_DM_HANDLER_ERROR, 0, 0};
    char buf[64];
    lab_drv_error_t e;
    int n = liconic_encode_cmd(&cmd, buf, sizeof buf);
    if (n <= 0) {
        lab_stream_end_later(&p->st,
                             lab_drv_error_set(&e, LAB_EINTERNAL, NULL,
                                               "cannot encode a command: %s", lab_strerror(n)));
        return;
    }
    lab_stream_send(&p->st, buf, (size_t)n, 0);
}

static void lic_begin(lab_stream_t *s, lab_stream_owner_t owner)
{
    lab_driver_t *d = lab_stream_driver(s);
    lic_t *p = lab_drv_priv(d);
    if (owner == LAB_STREAM_CONNECT) {
        liconic_step_t st[LICONIC_SEQ_MAX];
        int n = liconic_seq_open(st, LICONIC_SEQ_MAX);
        lic_seq_clear(&p->conn);
        for (int i = 0; i < n; i++)
            lic_step_add(&p->conn, st[i].cmd, st[i].poll_ready, NULL, -1);
        p->cur = &p->conn;
    } else {
        p->cur = &p->op;
    }
    p->cur->i = 0;
    p->cur->check = LIC_CHECK_NONE;
    lic_enter_step(d);
    lic_send(d);
}

static liconic_reply_kind_t lic_expected(liconic_op_t op)
{
    switch (op) {
    case LICONIC_OP_OPEN:
        return LICONIC_REPLY_CC;
    case LICONIC_OP_READ:
    case LICONIC_OP_READ_DM:
        return LICONIC_REPLY_VALUE;
    default:
        return LICONIC_REPLY_OK;
    }
}

static const char *lic_kind_name(liconic_reply_kind_t k)
{
    static const char *const names[] = {"CC", "OK", "a value", "an error"};
    return names[k];
}

/* A value read after a ready wait: the error flag, then the handler's code. */
static void lic_on_check(lab_driver_t *d, long value)
{
    lic_t *p = lab_drv_priv(d);
    lic_seq_t *q = p->cur;
    lab_drv_error_t e;
    if (q->check == LIC_CHECK_CODE) {
        lab_stream_end(&p->st, (lic_handler_error(&e, value), &e));
        return;
    }
    if (value != 0) {
        q->check = LIC_CHECK_CODE;
        lic_send(d);
        return;
    }
    if (q->ready_late && q == &p->conn) {
        /* Nothing waits on the connection: a controller still busy after power-on is waited
         * for as long as it takes, its error flag read at every step_timeout_s. */
        log_info("liconic", "instrument=%s not ready after activation yet; waiting",
                 lab_driver_id(d));
        q->check = LIC_CHECK_NONE;
        lic_enter_step(d);
        lab_stream_wait(&p->st, (unsigned)lab_drv_lab_ms(d, LIC_READY_POLL_S), lic_resume);
        return;
    }
    if (q->ready_late) {
        char cmd[32];
        liconic_encode_cmd(&q->steps[q->i - 1 >= 0 ? q->i - 1 : 0].s.cmd, cmd, sizeof cmd);
        cmd[strcspn(cmd, "\r")] = '\0';
        lab_stream_end(&p->st, lab_drv_error_set(&e, LAB_ETIMEDOUT, NULL,
                                                 "not ready (flag 1915) within %g lab s after "
                                                 "'%s'; the error flag is clear",
                                                 lab_drv_double(d, "step_timeout_s"), cmd));
        return;
    }
    q->check = LIC_CHECK_NONE;
    lic_advance(d);
}

static void lic_reply_cb(lab_stream_t *s, const char *line, size_t len)
{
    lab_driver_t *d = lab_stream_driver(s);
    lic_t *p = lab_drv_priv(d);
    lic_seq_t *q = p->cur;
    lab_drv_error_t e;
    const liconic_cmd_t *cmd = &q->steps[q->i].s.cmd;
    bool checking = q->check != LIC_CHECK_NONE;
    liconic_reply_kind_t want = checking ? LICONIC_REPLY_VALUE : lic_expected(cmd->op);
    bool relay = checking ? q->check == LIC_CHECK_FLAG : cmd->op == LICONIC_OP_READ;
    liconic_reply_t r;
    int rc = liconic_parse_reply(line, len, &r);
    if (rc == LAB_EUNKNOWN && r.kind == LICONIC_REPLY_ERROR) {
        char dc[16];
        snprintf(dc, sizeof dc, "E%d", r.error);
        lab_stream_end(s, lab_drv_error_set(&e, LAB_EDEVICE, dc,
                                            "controller error %s (not in the table) after '%s'", dc,
                                            lab_stream_sent(s)));
        return;
    }
    if (rc != LAB_OK) {
        lab_stream_unexpected(s, line, len, lic_kind_name(want));
        return;
    }
    if (r.kind == LICONIC_REPLY_ERROR) {
        char dc[16];
        snprintf(dc, sizeof dc, "E%d", r.error);
        lab_drv_error_set(&e, LAB_EDEVICE, dc, "%s (after '%s')", r.text, lab_stream_sent(s));
        /* E1: "check if communication is opened by CR": the controller and we are out of step;
         * the line is drained and the handshake runs again before anything else. */
        if (r.error == 1)
            lab_stream_end_resync(s, &e);
        else
            lab_stream_end(s, &e);
        return;
    }
    if (r.kind != want) {
        lab_stream_unexpected(s, line, len, lic_kind_name(want));
        return;
    }
    /* Replies carry nothing of their command but their form: a relay reads 0 or 1, so any other
     * value answers something else (a data memory read) and the exchange is out of step. */
    if (relay && r.value != 0 && r.value != 1) {
        lab_stream_unexpected(s, line, len, "0 or 1 (a relay)");
        return;
    }
    if (checking) {
        lic_on_check(d, r.value);
        return;
    }
    const lic_step_t *st = &q->steps[q->i];
    if (st->s.poll_ready) {
        if (r.value == 1 && st->s.poll_ready == LIC_READY_ONLY) {
            lic_advance(d);
            return;
        }
        if (r.value == 1) {
            q->check = LIC_CHECK_FLAG; /* ready: did the step end in an error? */
        } else if (uv_now(lab_drv_loop(d)) >= q->ready_deadline) {
            q->ready_late = true;
            q->check = LIC_CHECK_FLAG;
        } else {
            lab_stream_wait(s, (unsigned)lab_drv_lab_ms(d, LIC_READY_POLL_S), lic_resume);
            return;
        }
        lic_send(d);
        return;
    }
    if (st->key && q->result) {
        double v = st->climate < 0
                       ? (double)r.value
                       : liconic_climate_from_raw((liconic_climate_t)st->climate, r.value);
        json_object_set_new(q->result, st->key,
                            st->climate < 0 ? json_integer(r.value) : json_real(v));
    }
    lic_advance(d);
}

/* Replies are lines ended by CR, LF or CR LF: the base's line framer (no feed). */
static const lab_stream_ops_t lic_stream_ops = {
    .begin = lic_begin,
    .reply = lic_reply_cb,
    .end = lic_end_cb,
};

/* ---- driver ops ---- */

/* The cassettes' racks and capacity, as open reads them, for --check. */
static int lic_check_conf(const lab_drv_conf_t *c, const char **key, char *err, size_t errlen)
{
    liconic_cassettes_t cs;
    const char *n = lab_drv_conf_str(c, "cassettes"), *cap = lab_drv_conf_str(c, "capacity");
    if (liconic_cassettes_parse(lab_drv_conf_str(c, "rack_type"), lab_drv_conf_str(c, "rack_types"),
                                n ? atoi(n) : 0, &cs, err, errlen) != LAB_OK) {
        /* the parser's message begins with the key it is about: the caller names it itself */
        static const char *const keys[] = {"rack_types", "rack_type", "cassettes"};
        *key = "rack_type";
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            size_t len = strlen(keys[i]);
            if (strncmp(err, keys[i], len) == 0 && strncmp(err + len, ": ", 2) == 0) {
                *key = keys[i];
                memmove(err, err + len + 2, strlen(err + len + 2) + 1);
                break;
            }
        }
        return LAB_EINVAL;
    }
    if (cap && atol(cap) > liconic_cassettes_slots(&cs)) {
        *key = "capacity";
        snprintf(err, errlen, "%s is more than the %d slots of its %d cassette%s", cap,
                 liconic_cassettes_slots(&cs), cs.n, cs.n == 1 ? "" : "s");
        return LAB_EINVAL;
    }
    return 0;
}

static int lic_open(lab_driver_t *d, char *err, size_t errlen)
{
    lic_t *p = lab_drv_priv(d);
    p->climate_n = lab_drv_enum(d, "climate") + 1;
    const char *rt = lab_drv_has(d, "rack_type") ? lab_drv_str(d, "rack_type") : NULL;
    const char *rts = lab_drv_has(d, "rack_types") ? lab_drv_str(d, "rack_types") : NULL;
    int n = lab_drv_has(d, "cassettes") ? (int)lab_drv_int(d, "cassettes") : 0;
    if (liconic_cassettes_parse(rt, rts, n, &p->cassettes, err, errlen) != LAB_OK)
        return LAB_EINVAL;
    for (int c = 0; c < p->cassettes.n; c++) {
        const liconic_rack_t *r = p->cassettes.rack[c];
        if (!liconic_rack_verified(r))
            log_warn("liconic",
                     "instrument=%s cassette=%d rack=%s: %d steps for a %d mm pitch do not follow "
                     "Liconic's formula; check the first transfers by hand",
                     lab_driver_id(d), c + 1, r->name, r->steps, r->pitch);
    }
    lab_stream_conf_t conf = {
        .tag = "liconic",
        .reply_ms = LIC_REPLY_MS,
        .quiet_ms = LIC_QUIET_MS,
        .retry_ms = LIC_RETRY_MS,
        .break_ms = LIC_BREAK_MS,
    };
    return lab_stream_init(&p->st, d, &lic_stream_ops, &conf, err, errlen);
}

static void lic_start(lab_driver_t *d)
{
    lic_t *p = lab_drv_priv(d);
    lab_stream_start(&p->st);
}

static void lic_stop(lab_driver_t *d)
{
    lic_t *p = lab_drv_priv(d);
    lab_stream_stop(&p->st);
    lic_seq_clear(&p->conn);
    lic_seq_clear(&p->op);
}

static void lic_close(lab_driver_t *d)
{
    lic_t *p = lab_drv_priv(d);
    lic_seq_clear(&p->conn);
    lic_seq_clear(&p->op);
    if (!p->st.d) { /* open refused the configuration before the stream existed */
        lab_drv_closed(d);
        return;
    }
    lab_stream_close(&p->st);
}

static void lic_refuse(lab_driver_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parameters the schema cannot judge (they depend on the configuration): nothing is sent. */
static void lic_refuse(lab_driver_t *d, const char *fmt, ...)
{
    lic_t *p = lab_drv_priv(d);
    lab_drv_error_t e = {.code = LAB_EINVAL};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.text, sizeof e.text, fmt, ap);
    va_end(ap);
    lab_stream_refuse(&p->st, &e);
}

/* Write and read back each set point given; LAB_EINVAL when one is refused. */
static int lic_climate_steps(lab_driver_t *d, json_t *params)
{
    lic_t *p = lab_drv_priv(d);
    static const struct {
        const char *param, *setpoint_key;
        liconic_climate_t what;
    } rows[] = {
        {"temperature_c", "setpoint_c", LICONIC_CLIMATE_TEMPERATURE},
        {"humidity_pct", "humidity_setpoint_pct", LICONIC_CLIMATE_HUMIDITY},
        {"co2_pct", "co2_setpoint_pct", LICONIC_CLIMATE_CO2},
    };
    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(params, rows[i].param);
        if (!v)
            continue;
        liconic_cmd_t w, r;
        if (i >= p->climate_n) {
            lic_refuse(d, "%s: params/%s: not controlled by this model (climate = %s)",
                       lab_drv_current(d)->name, rows[i].param, lab_drv_str(d, "climate"));
            return LAB_EINVAL;
        }
        if (liconic_climate_set_cmd(rows[i].what, json_number_value(v), &w) != LAB_OK) {
            lic_refuse(d, "%s: params/%s: %g is outside the controller's range",
                       lab_drv_current(d)->name, rows[i].param, json_number_value(v));
            return LAB_EINVAL;
        }
        liconic_climate_read_cmd(rows[i].what, 1, &r);
        lic_step_add(&p->op, w, 0, NULL, -1);
        lic_step_add(&p->op, r, 0, rows[i].setpoint_key, (int)rows[i].what);
    }
    return 0;
}

/* What depends on the configuration, before anything is queued. */
static void lic_check(lab_driver_t *d, const lab_drv_action_t *a, json_t *params,
                      struct lab_jerrs *errs)
{
    lic_t *p = lab_drv_priv(d);
    json_t *cassette = json_object_get(params, "cassette"), *slot = json_object_get(params, "slot");
    if ((strcmp(a->name, "load") == 0 || strcmp(a->name, "unload") == 0) && cassette && slot) {
        json_int_t c = json_integer_value(cassette), sl = json_integer_value(slot);
        if (c > p->cassettes.n)
            lab_jerrs_add(errs, "/cassette", "%lld is beyond the %d cassette%s configured",
                          (long long)c, p->cassettes.n, p->cassettes.n == 1 ? "" : "s");
        else if (c >= 1 && sl > p->cassettes.rack[c - 1]->slots)
            lab_jerrs_add(errs, "/slot", "%lld is beyond the %d slots of cassette %lld (%s)",
                          (long long)sl, p->cassettes.rack[c - 1]->slots, (long long)c,
                          p->cassettes.rack[c - 1]->name);
    }
    static const char *const climate[] = {"temperature_c", "humidity_pct", "co2_pct"};
    if (strcmp(a->name, "set_climate") == 0)
        for (int i = p->climate_n; i < 3; i++)
            if (json_object_get(params, climate[i]))
                lab_jerrs_add(errs, i == 1 ? "/humidity_pct" : "/co2_pct",
                              "not controlled by this model (climate = %s)",
                              lab_drv_str(d, "climate"));
}

static void lic_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    lic_t *p = lab_drv_priv(d);
    for (size_t i = 0; i < sizeof lic_act_names / sizeof lic_act_names[0]; i++)
        if (strcmp(lic_act_names[i].name, a->name) == 0)
            p->act = lic_act_names[i].act;
    lic_seq_clear(&p->op);
    p->op.result = json_object();
    liconic_step_t s[LICONIC_SEQ_MAX];
    int n = 0;
    json_int_t cassette = json_integer_value(json_object_get(params, "cassette"));
    json_int_t slot = json_integer_value(json_object_get(params, "slot"));
    switch (p->act) {
    case LIC_ACT_STATUS:
        lic_read(&p->op, LICONIC_DM_TEMP_ACTUAL, "temperature_c", LICONIC_CLIMATE_TEMPERATURE);
        lic_read(&p->op, LICONIC_DM_TEMP_SET, "setpoint_c", LICONIC_CLIMATE_TEMPERATURE);
        if (p->climate_n >= 2) {
            lic_read(&p->op, LICONIC_DM_HUMIDITY_ACTUAL, "humidity_pct", LICONIC_CLIMATE_HUMIDITY);
            lic_read(&p->op, LICONIC_DM_HUMIDITY_SET, "humidity_setpoint_pct",
                     LICONIC_CLIMATE_HUMIDITY);
        }
        if (p->climate_n >= 3) {
            lic_read(&p->op, LICONIC_DM_CO2_ACTUAL, "co2_pct", LICONIC_CLIMATE_CO2);
            lic_read(&p->op, LICONIC_DM_CO2_SET, "co2_setpoint_pct", LICONIC_CLIMATE_CO2);
        }
        lic_step_add(&p->op, (liconic_cmd_t){LICONIC_OP_READ, LICONIC_FLAG_ERROR, 0, 0}, 0,
                     "error_flag", -1);
        lic_read(&p->op, LICONIC_DM_HANDLER_ERROR, "handler_error", -1);
        break;
    case LIC_ACT_LOAD:
    case LIC_ACT_UNLOAD: {
        /* lic_check refused a site the cassettes do not have; the framework ran it first */
        if (cassette < 1 || cassette > p->cassettes.n ||
            slot > p->cassettes.rack[cassette - 1]->slots) {
            lic_refuse(d, "%s: cassette %lld slot %lld is not a site of this instrument", a->name,
                       (long long)cassette, (long long)slot);
            return;
        }
        const liconic_rack_t *r = p->cassettes.rack[cassette - 1];
        liconic_site_t site = {(int)cassette, (int)slot, r->steps, r->slots};
        n = p->act == LIC_ACT_LOAD ? liconic_seq_load(&site, s, LICONIC_SEQ_MAX)
                                   : liconic_seq_unload(&site, s, LICONIC_SEQ_MAX);
        if (n < 0) {
            lic_refuse(d, "%s: cassette %lld slot %lld: %s", a->name, (long long)cassette,
                       (long long)slot, lab_strerror(n));
            return;
        }
        /* The handler must be idle before the site words change, and the operation ends when
         * the access is terminated (ST 1903 is a handling step of its own). */
        lic_step_add(&p->op, lic_rd_ready, LIC_READY_ONLY, NULL, -1);
        for (int i = 0; i < n; i++)
            lic_step_add(&p->op, s[i].cmd, s[i].poll_ready, NULL, -1);
        lic_step_add(&p->op, lic_rd_ready, 1, NULL, -1);
        n = 0;
        json_object_set_new(p->op.result, "cassette", json_integer(cassette));
        json_object_set_new(p->op.result, "slot", json_integer(slot));
        break;
    }
    case LIC_ACT_SET_TEMPERATURE:
    case LIC_ACT_SET_CLIMATE:
        if (lic_climate_steps(d, params) < 0)
            return;
        break;
    case LIC_ACT_RESET:
        lic_step_add(&p->op, lic_rd_ready, LIC_READY_ONLY, NULL, -1);
        lic_step_add(&p->op, (liconic_cmd_t){LICONIC_OP_RESET, LICONIC_FLAG_ERROR, 0, 0}, 0, NULL,
                     -1);
        lic_step_add(&p->op, (liconic_cmd_t){LICONIC_OP_SET, LICONIC_FLAG_INIT, 0, 0}, 0, NULL, -1);
        lic_step_add(&p->op, lic_rd_ready, 1, NULL, -1);
        json_object_set_new(p->op.result, "error_flag", json_integer(0));
        break;
    }
    for (int i = 0; i < n; i++)
        lic_step_add(&p->op, s[i].cmd, s[i].poll_ready, NULL, -1);
    lab_stream_run(&p->st);
}

/* Every cassette's slots, from its rack. */
static int lic_sites(lab_driver_t *d, int *slots, int max)
{
    lic_t *p = lab_drv_priv(d);
    int n = p->cassettes.n < max ? p->cassettes.n : max;
    for (int c = 0; c < n; c++)
        slots[c] = p->cassettes.rack[c]->slots;
    return n;
}

static void lic_abort(lab_driver_t *d)
{
    lic_t *p = lab_drv_priv(d);
    lab_stream_abort(&p->st);
    lic_seq_clear(&p->op);
}

/* What its actions do in a workflow step (the scheduler asks by role, never by name). */
static const lab_drv_role_action_t lic_roles[] = {
    {LAB_DRV_ROLE_LOAD, "load"},
    {LAB_DRV_ROLE_UNLOAD, "unload"},
    {LAB_DRV_ROLE_SET_TEMP, "set_temperature"},
    {LAB_DRV_ROLE_NONE, NULL},
};

const lab_driver_ops_t lab_driver_liconic_stx = {
    .name = "liconic-stx",
    .kind = "incubator",
    .model = "Liconic STX",
    .keys = lic_keys,
    .actions = lic_actions,
    .roles = lic_roles,
    .poll_action = "status",
    .poll_default_s = 5,
    .priv_size = sizeof(lic_t),
    .open = lic_open,
    .start = lic_start,
    .stop = lic_stop,
    .close = lic_close,
    .invoke = lic_invoke,
    .check = lic_check,
    .abort = lic_abort,
    .sites = lic_sites,
    .check_conf = lic_check_conf,
};
