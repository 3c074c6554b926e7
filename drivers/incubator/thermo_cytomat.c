/* thermo-cytomat: Thermo Cytomat automated incubators over their RS-232 telegrams (the codec is
 * protocols/cytomat.h), on the stream-driver base (drivers/stream.h), which owns the link, one
 * command in flight and resynchronisation. The driver owns the sequences.
 *
 * The device has no handshake: the connection is up once the overview register ("ch:bs")
 * answers, and the error register ("ch:be") read right after says whether the handler holds an
 * error from before. A movement (ll:in, mv:ts, mv:st) waits for the busy bit to clear, is
 * accepted with "ok XX" or refused with "er XX", and then the busy bit is polled at lab-time
 * spacing until it clears; a set error bit then means the movement failed, the error register
 * says why, and the instrument stays in fault until reset (rs:be and ll:in) or a status that
 * finds the register clear. "er 01" (busy) and "er 02" (unknown) are retried, as PyLabRobot does
 * because the device answers them spuriously. A check's reply begins with the command's own key,
 * so a reply to another command is seen for what it is.
 *
 * The device tells which plates it holds only at the transfer station and on the handler's
 * shovel (overview register bits 7 and 4): "inventory" reports those and no site of the racks.
 * The protocol has no version or serial-number query the sources confirm, so the driver learns
 * no firmware. */
#include "drivers/driver.h"
#include "drivers/stream.h"
#include "core/jschema.h"
#include "core/err.h"
#include "core/log.h"
#include "protocols/cytomat.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CYT_STEPS_MAX 16
#define CYT_REPLY_MS 1500   /* PyLabRobot reads with a 1 s timeout; a little more for a busy line */
#define CYT_QUIET_MS 250    /* a quiet line for this long before the exchange (re)starts */
#define CYT_RETRY_MS 2000   /* between two failed connect sequences */
#define CYT_BUSY_POLL_S 0.5 /* lab seconds between two ch:bs while the device is busy */
#define CYT_RETRY_S 0.1     /* lab seconds before a command answered "er 01"/"er 02" again */
#define CYT_TRIES 10        /* PyLabRobot cytomat.py 145: n_retries = 10 */

typedef enum cyt_kind {
    CYT_WAIT_IDLE,     /* ch:bs until not busy; a set error bit fails the operation */
    CYT_WAIT_IDLE_ANY, /* ch:bs until not busy, whatever the error bit (reset clears it) */
    CYT_ACTION,        /* a telegram answered "ok XX" */
    CYT_WAIT_DONE,     /* ch:bs until not busy; then a set error bit is the movement's error */
    CYT_OVERVIEW,      /* ch:bs into the result */
    CYT_CLIMATE,       /* ch:it/ic/ih into the result: set point and actual value */
    CYT_REGISTER,      /* ch:be / ch:bw into the result */
} cyt_kind_t;

typedef struct cyt_step {
    cyt_kind_t kind;
    cytomat_cmd_t cmd;
    const char *key;     /* CLIMATE: the actual value's key; REGISTER: the register's */
    const char *set_key; /* CLIMATE: the set point's key, or NULL */
} cyt_step_t;

typedef struct cyt_seq {
    cyt_step_t steps[CYT_STEPS_MAX];
    int n, i;
    int tries;          /* of the command in flight, for er 01 / er 02 */
    bool reading_error; /* the error bit was set after a wait: ch:be is in flight */
    bool seen_ov;       /* an overview register was read in this sequence */
    int ov;             /* the last one */
    uint64_t deadline;  /* of a wait */
    json_t *result;
} cyt_seq_t;

typedef enum cyt_act {
    CYT_ACT_STATUS,
    CYT_ACT_LOAD,
    CYT_ACT_UNLOAD,
    CYT_ACT_INITIALIZE,
    CYT_ACT_SET_TEMPERATURE,
    CYT_ACT_SET_CLIMATE,
    CYT_ACT_RESET,
    CYT_ACT_INVENTORY,
} cyt_act_t;

typedef struct cyt {
    lab_stream_t st;
    cytomat_model_t model;
    cytomat_cassettes_t cassettes; /* each cassette's rack: its slots and the slot numbers */
    int climate_n;                 /* 1: temperature, 2: + CO2, 3: + humidity (read only) */
    bool fault; /* the error register holds a code; cleared by reset or a clear register */
    cyt_act_t act;
    cyt_seq_t conn, op;
    cyt_seq_t *cur;
} cyt_t;

static const struct {
    const char *name;
    cyt_act_t act;
} cyt_act_names[] = {
    {"status", CYT_ACT_STATUS},
    {"load", CYT_ACT_LOAD},
    {"unload", CYT_ACT_UNLOAD},
    {"initialize", CYT_ACT_INITIALIZE},
    {"set_temperature", CYT_ACT_SET_TEMPERATURE},
    {"set_climate", CYT_ACT_SET_CLIMATE},
    {"reset", CYT_ACT_RESET},
    {"inventory", CYT_ACT_INVENTORY},
};

#define CYT_SITE_SCHEMA                                                                            \
    "{\"type\":\"object\",\"required\":[\"cassette\",\"slot\"],\"additionalProperties\":false,"    \
    "\"properties\":{\"cassette\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":20},"            \
    "\"slot\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":999}}}"

/* "%04.1f" leaves room for 99.9 (open-cytomat climate_controller.py) */
#define CYT_TEMP_PROP "\"temperature_c\":{\"type\":\"number\",\"minimum\":0,\"maximum\":99.9}"
#define CYT_CO2_PROP "\"co2_pct\":{\"type\":\"number\",\"minimum\":0,\"maximum\":99.9}"

static const lab_drv_action_t cyt_actions[] = {
    {"status", NULL, 10, 0,
     "climate set points and actual values, the overview register's bits, and the error and "
     "warning registers"},
    {"load", CYT_SITE_SCHEMA, 600, 0,
     "take the plate on the transfer station into a slot (mv:ts), and wait until done"},
    {"unload", CYT_SITE_SCHEMA, 600, 0,
     "bring the plate in a slot out to the transfer station (mv:st), and wait until done"},
    {"initialize", NULL, 600, 0, "initialise the handler (ll:in), and wait until done"},
    {"set_temperature",
     "{\"type\":\"object\",\"required\":[\"temperature_c\"],\"additionalProperties\":false,"
     "\"properties\":{" CYT_TEMP_PROP "}}",
     10, 0, "write the temperature set point (degC, ll:it); answers it read back"},
    {"set_climate",
     "{\"type\":\"object\",\"minProperties\":1,\"additionalProperties\":false,"
     "\"properties\":{" CYT_TEMP_PROP "," CYT_CO2_PROP "}}",
     10, 0,
     "write the temperature and CO2 set points given (ll:it, ll:ic); answers them read back"},
    {"reset", NULL, 600, 0,
     "clear the error register (rs:be) and initialise the handler (ll:in), and wait until done"},
    {"inventory", NULL, 10, 0,
     "what the sensors tell: the transfer station and the handler's shovel occupied or not; the "
     "device cannot tell which slots hold a plate, so \"sites\" is empty"},
    {NULL, NULL, 0, 0, NULL},
};

static const lab_drv_key_t cyt_keys[] = {
    /* PyLabRobot cytomat.py 84-93: 9600 baud, 8 bits, no parity, 1 stop bit, no flow control */
    LAB_DRV_SERIAL_KEYS("9600", "8", "none", "1", "none"),
    {"model", LAB_DRV_KEY_ENUM, NULL, 0, 0, CYTOMAT_MODEL_CHOICES, LAB_DRV_KEY_REQUIRED,
     "the Cytomat model: the telegram terminator (CR for the C2C_425, CR LF for the others) and "
     "the slot address (cassette and slot from 0 for the C2C_425, the slot counted through "
     "every cassette for the others) follow from it"},
    {"rack_type", LAB_DRV_KEY_ENUM, NULL, 0, 0, CYTOMAT_RACK_CHOICES, 0,
     "the rack type of every cassette (PyLabRobot's name, <site height>mm_<slots>), as configured "
     "in the device with its own software; this or rack_types is required"},
    {"cassettes", LAB_DRV_KEY_INT, NULL, 1, CYTOMAT_CASSETTES_MAX, NULL, 0,
     "with rack_type: how many cassettes of that rack (default 1)"},
    {"rack_types", LAB_DRV_KEY_STR, NULL, 0, 0, NULL, 0,
     "each cassette's rack type, from cassette 1 up without gaps: 1:cytomat_rack_17mm_28, "
     "2:cytomat_rack_50mm_10 (instead of rack_type and cassettes)"},
    {"climate", LAB_DRV_KEY_ENUM, "temperature+co2", 0, 0,
     "temperature|temperature+co2|temperature+co2+humidity", 0,
     "what the model measures: status reads these (humidity has no set point telegram)"},
    {"step_timeout_s", LAB_DRV_KEY_DOUBLE, "300", 1, 86400, NULL, 0,
     "lab seconds a movement may keep the device busy"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

static void cyt_send(lab_driver_t *d);

/* ---- helpers ---- */

static void cyt_add(cyt_seq_t *q, cyt_kind_t kind, const char *type, const char *code,
                    const char *params, const char *key, const char *set_key)
{
    if (q->n >= CYT_STEPS_MAX)
        return;
    cyt_step_t *s = &q->steps[q->n++];
    *s = (cyt_step_t){.kind = kind, .key = key, .set_key = set_key};
    cytomat_cmd(&s->cmd, type, code, params);
}

static void cyt_seq_clear(cyt_seq_t *q)
{
    json_decref(q->result);
    q->result = NULL;
    q->n = q->i = q->tries = 0;
    q->reading_error = q->seen_ov = false;
    q->ov = 0;
}

static bool cyt_is_register_error(const lab_drv_error_t *e)
{
    return e->code == LAB_EDEVICE && strncmp(e->device_code, "be", 2) == 0;
}

static lab_drv_error_t *cyt_register_error(lab_drv_error_t *e, int code)
{
    char dc[8];
    snprintf(dc, sizeof dc, "be%02X", code & 0xFF);
    const char *t = cytomat_error_register_text(code);
    if (t)
        return lab_drv_error_set(e, LAB_EDEVICE, dc, "error register %02X: %s", code & 0xFF, t);
    return lab_drv_error_set(e, LAB_EDEVICE, dc, "error register %02X (not in the error table)",
                             code & 0xFF);
}

/* ---- the end of a sequence ---- */

/* The overview's bits, for status and inventory. */
static void cyt_ov_result(json_t *r, int ov)
{
    json_object_set_new(r, "busy", json_integer(!!(ov & CYTOMAT_OV_BUSY)));
    json_object_set_new(r, "transfer_station_occupied",
                        json_integer(!!(ov & CYTOMAT_OV_TRANSFER_OCCUPIED)));
    json_object_set_new(r, "handler_occupied", json_integer(!!(ov & CYTOMAT_OV_HANDLER_OCCUPIED)));
    json_object_set_new(r, "door_open", json_integer(!!(ov & CYTOMAT_OV_DOOR_OPEN)));
    json_object_set_new(r, "gate_open", json_integer(!!(ov & CYTOMAT_OV_GATE_OPEN)));
}

/* The operation ends first and the fault is reported after: the framework's own fault (an
 * operation that failed) clears itself on the next success, and must not clear the register's. */
static void cyt_op_end(lab_driver_t *d, const lab_drv_error_t *err)
{
    cyt_t *p = lab_drv_priv(d);
    json_t *result = p->op.result;
    p->op.result = NULL;
    if (err) {
        json_decref(result);
        lab_drv_error_t e = *err;
        lab_drv_done(d, &e, NULL);
        if (cyt_is_register_error(&e)) {
            p->fault = true;
            lab_drv_set_state(d, LAB_INST_FAULT, &e);
        }
        return;
    }
    bool seen = p->op.seen_ov, error_bit = seen && (p->op.ov & CYTOMAT_OV_ERROR);
    if (p->act == CYT_ACT_INVENTORY) {
        json_t *ts = json_pack("{s:b}", "occupied", !!(p->op.ov & CYTOMAT_OV_TRANSFER_OCCUPIED));
        json_t *h = json_pack("{s:b}", "occupied", !!(p->op.ov & CYTOMAT_OV_HANDLER_OCCUPIED));
        json_object_set_new(result, "sites", json_array());
        json_object_set_new(result, "transfer_station", ts);
        json_object_set_new(result, "handler", h);
    }
    lab_drv_error_t e;
    int reg = (int)json_integer_value(json_object_get(result, "error_register"));
    bool hold = p->act == CYT_ACT_STATUS && error_bit && reg != 0;
    if (hold)
        cyt_register_error(&e, reg);
    lab_drv_done(d, NULL, result);
    if (hold) {
        /* Telemetry still counts; the instrument needs a person (or reset) all the same. */
        p->fault = true;
        lab_drv_set_state(d, LAB_INST_FAULT, &e);
    } else if (p->fault && seen && !error_bit) {
        p->fault = false;
        lab_drv_set_state(d, LAB_INST_IDLE, NULL);
    }
}

static void cyt_connect_end(lab_driver_t *d, const lab_drv_error_t *err)
{
    cyt_t *p = lab_drv_priv(d);
    int reg = (int)json_integer_value(json_object_get(p->conn.result, "error_register"));
    bool error_bit = p->conn.ov & CYTOMAT_OV_ERROR;
    cyt_seq_clear(&p->conn);
    if (err)
        return; /* the base reports offline and tries again */
    if (error_bit && reg != 0) {
        /* Connected, but the handler holds an error from before. */
        lab_drv_error_t e;
        p->fault = true;
        lab_drv_set_state(d, LAB_INST_FAULT, cyt_register_error(&e, reg));
        return;
    }
    p->fault = false;
    log_info("cytomat", "instrument=%s connected", lab_driver_id(d));
    lab_drv_set_state(d, LAB_INST_IDLE, NULL);
}

static void cyt_end_cb(lab_stream_t *s, lab_stream_owner_t owner, const lab_drv_error_t *err)
{
    lab_driver_t *d = lab_stream_driver(s);
    if (owner == LAB_STREAM_CONNECT)
        cyt_connect_end(d, err);
    else
        cyt_op_end(d, err);
}

/* ---- the sequence engine ---- */

static bool cyt_is_wait(cyt_kind_t k)
{
    return k == CYT_WAIT_IDLE || k == CYT_WAIT_IDLE_ANY || k == CYT_WAIT_DONE;
}

static void cyt_enter_step(lab_driver_t *d)
{
    cyt_t *p = lab_drv_priv(d);
    cyt_seq_t *q = p->cur;
    q->tries = 0;
    q->reading_error = false;
    if (q->i < q->n && cyt_is_wait(q->steps[q->i].kind))
        q->deadline =
            uv_now(lab_drv_loop(d)) + lab_drv_lab_ms(d, lab_drv_double(d, "step_timeout_s"));
}

static void cyt_advance(lab_driver_t *d)
{
    cyt_t *p = lab_drv_priv(d);
    if (++p->cur->i >= p->cur->n) {
        lab_stream_end(&p->st, NULL);
        return;
    }
    cyt_enter_step(d);
    cyt_send(d);
}

static void cyt_resume(lab_stream_t *s)
{
    cyt_send(lab_stream_driver(s));
}

static void cyt_send(lab_driver_t *d)
{
    cyt_t *p = lab_drv_priv(d);
    cyt_seq_t *q = p->cur;
    cytomat_cmd_t cmd = q->steps[q->i].cmd;
    if (q->reading_error)
        cytomat_cmd(&cmd, "ch", "be", NULL);
    char buf[64];
    lab_drv_error_t e;
    int n = cytomat_encode_cmd(&cmd, cytomat_model_crlf(p->model), buf, sizeof buf);
    if (n <= 0) {
        lab_stream_end_later(&p->st,
                             lab_drv_error_set(&e, LAB_EINTERNAL, NULL,
                                               "cannot encode a command: %s", lab_strerror(n)));
        return;
    }
    lab_stream_send(&p->st, buf, (size_t)n, 0);
}

static void cyt_begin(lab_stream_t *s, lab_stream_owner_t owner)
{
    lab_driver_t *d = lab_stream_driver(s);
    cyt_t *p = lab_drv_priv(d);
    if (owner == LAB_STREAM_CONNECT) {
        cyt_seq_clear(&p->conn);
        p->conn.result = json_object();
        cyt_add(&p->conn, CYT_OVERVIEW, "ch", "bs", NULL, NULL, NULL);
        cyt_add(&p->conn, CYT_REGISTER, "ch", "be", NULL, "error_register", NULL);
        p->cur = &p->conn;
    } else {
        p->cur = &p->op;
    }
    p->cur->i = 0;
    cyt_enter_step(d);
    cyt_send(d);
}

/* An "er XX": retried when the device may have answered it spuriously, else the end. */
static void cyt_on_refused(lab_driver_t *d, int code)
{
    cyt_t *p = lab_drv_priv(d);
    cyt_seq_t *q = p->cur;
    if ((code == 0x01 || code == 0x02) && ++q->tries < CYT_TRIES) {
        lab_stream_wait(&p->st, (unsigned)lab_drv_lab_ms(d, CYT_RETRY_S), cyt_resume);
        return;
    }
    char dc[8];
    snprintf(dc, sizeof dc, "er%02X", code);
    const char *t = cytomat_command_error_text(code);
    lab_drv_error_t e;
    lab_drv_error_set(&e, LAB_EDEVICE, dc, "'%s' refused: er %02X: %s", lab_stream_sent(&p->st),
                      code, t ? t : "not in the error table");
    /* A telegram structure error may be half a telegram on the line: start clean. */
    if (code == 0x03)
        lab_stream_end_resync(&p->st, &e);
    else
        lab_stream_end(&p->st, &e);
}

/* A ch:bs answer while waiting. */
static void cyt_on_wait(lab_driver_t *d, const cyt_step_t *st, int ov)
{
    cyt_t *p = lab_drv_priv(d);
    cyt_seq_t *q = p->cur;
    lab_drv_error_t e;
    if (ov & CYTOMAT_OV_BUSY) {
        if (uv_now(lab_drv_loop(d)) >= q->deadline) {
            lab_stream_end(
                &p->st, lab_drv_error_set(&e, LAB_ETIMEDOUT, NULL, "still busy %g lab s after %s",
                                          lab_drv_double(d, "step_timeout_s"),
                                          st->kind == CYT_WAIT_DONE ? "the movement began"
                                                                    : "the operation began"));
            return;
        }
        lab_stream_wait(&p->st, (unsigned)lab_drv_lab_ms(d, CYT_BUSY_POLL_S), cyt_resume);
        return;
    }
    if ((ov & CYTOMAT_OV_ERROR) && st->kind != CYT_WAIT_IDLE_ANY) {
        q->reading_error = true; /* why: the error register */
        q->tries = 0;
        cyt_send(d);
        return;
    }
    cyt_advance(d);
}

static void cyt_reply_cb(lab_stream_t *s, const char *line, size_t len)
{
    lab_driver_t *d = lab_stream_driver(s);
    cyt_t *p = lab_drv_priv(d);
    cyt_seq_t *q = p->cur;
    const cyt_step_t *st = &q->steps[q->i];
    lab_drv_error_t e;
    bool action = st->kind == CYT_ACTION && !q->reading_error;
    const char *key = q->reading_error ? "be" : st->cmd.code;
    char want[32];
    if (action)
        snprintf(want, sizeof want, "ok XX or er XX");
    else
        snprintf(want, sizeof want, "%s ... or er XX", key);
    cytomat_reply_t r;
    if (cytomat_parse_reply(line, len, &r) != LAB_OK) {
        lab_stream_unexpected(s, line, len, want);
        return;
    }
    if (r.kind == CYTOMAT_REPLY_ERROR) {
        cyt_on_refused(d, r.byte);
        return;
    }
    if (action != (r.kind == CYTOMAT_REPLY_OK) || (!action && strcmp(r.code, key) != 0)) {
        lab_stream_unexpected(s, line, len, want);
        return;
    }
    int v = 0;
    if (q->reading_error || st->kind == CYT_REGISTER || (cyt_is_wait(st->kind)) ||
        st->kind == CYT_OVERVIEW) {
        if (cytomat_parse_hex_byte(r.value, &v) != LAB_OK) {
            lab_stream_unexpected(s, line, len, "a register of two hex digits");
            return;
        }
    }
    if (q->reading_error) {
        lab_stream_end(s, cyt_register_error(&e, v));
        return;
    }
    switch (st->kind) {
    case CYT_ACTION:
        cyt_advance(d);
        return;
    case CYT_WAIT_IDLE:
    case CYT_WAIT_IDLE_ANY:
    case CYT_WAIT_DONE:
        q->seen_ov = true;
        q->ov = v;
        cyt_on_wait(d, st, v);
        return;
    case CYT_OVERVIEW:
        q->seen_ov = true;
        q->ov = v;
        if (q->result)
            cyt_ov_result(q->result, v);
        break;
    case CYT_REGISTER:
        if (q->result)
            json_object_set_new(q->result, st->key, json_integer(v));
        break;
    case CYT_CLIMATE: {
        double set, actual;
        if (cytomat_parse_climate(r.value, &set, &actual) != LAB_OK) {
            lab_stream_unexpected(s, line, len, "a set point and an actual value");
            return;
        }
        if (q->result && st->key)
            json_object_set_new(q->result, st->key, json_real(actual));
        if (q->result && st->set_key)
            json_object_set_new(q->result, st->set_key, json_real(set));
        break;
    }
    }
    cyt_advance(d);
}

/* Replies are lines ended by CR: the base's line framer (no feed). */
static const lab_stream_ops_t cyt_stream_ops = {
    .begin = cyt_begin,
    .reply = cyt_reply_cb,
    .end = cyt_end_cb,
};

/* ---- driver ops ---- */

/* The cassettes of a section, as open reads them; LAB_EINVAL with the key and why. */
static int cyt_cassettes(const char *rack_type, const char *rack_types, int n, int model,
                         cytomat_cassettes_t *cs, const char **key, char *err, size_t errlen)
{
    if (cytomat_cassettes_parse(rack_type, rack_types, n, cs, err, errlen) != LAB_OK) {
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
    int total = cytomat_cassettes_slots(cs);
    if (model != CYTOMAT_C2C_425 && total > 999) {
        *key = rack_types ? "rack_types" : "cassettes";
        snprintf(err, errlen,
                 "%d slots in %d cassettes: more than the 999 a slot number of three digits can "
                 "address",
                 total, cs->n);
        return LAB_EINVAL;
    }
    return 0;
}

/* What the key table cannot say, for --check as open reads it. */
static int cyt_check_conf(const lab_drv_conf_t *c, const char **key, char *err, size_t errlen)
{
    cytomat_cassettes_t cs;
    const char *n = lab_drv_conf_str(c, "cassettes");
    if (cyt_cassettes(lab_drv_conf_str(c, "rack_type"), lab_drv_conf_str(c, "rack_types"),
                      n ? atoi(n) : 0, cytomat_model_find(lab_drv_conf_str(c, "model")), &cs, key,
                      err, errlen))
        return LAB_EINVAL;
    const char *cap = lab_drv_conf_str(c, "capacity");
    int total = cytomat_cassettes_slots(&cs);
    if (cap && atol(cap) > total) {
        *key = "capacity";
        snprintf(err, errlen, "%s is more than the %d slots of its %d cassette%s", cap, total, cs.n,
                 cs.n == 1 ? "" : "s");
        return LAB_EINVAL;
    }
    return 0;
}

static int cyt_open(lab_driver_t *d, char *err, size_t errlen)
{
    cyt_t *p = lab_drv_priv(d);
    p->model = (cytomat_model_t)cytomat_model_find(lab_drv_str(d, "model"));
    p->climate_n = lab_drv_enum(d, "climate") + 1;
    if ((int)p->model < 0) {
        snprintf(err, errlen, "model: unknown");
        return LAB_EINVAL;
    }
    const char *key = NULL;
    char why[400];
    if (cyt_cassettes(lab_drv_has(d, "rack_type") ? lab_drv_str(d, "rack_type") : NULL,
                      lab_drv_has(d, "rack_types") ? lab_drv_str(d, "rack_types") : NULL,
                      lab_drv_has(d, "cassettes") ? (int)lab_drv_int(d, "cassettes") : 0, p->model,
                      &p->cassettes, &key, why, sizeof why)) {
        snprintf(err, errlen, "%s: %s", key, why);
        return LAB_EINVAL;
    }
    lab_stream_conf_t conf = {
        .tag = "cytomat",
        .reply_ms = CYT_REPLY_MS,
        .quiet_ms = CYT_QUIET_MS,
        .retry_ms = CYT_RETRY_MS,
    };
    return lab_stream_init(&p->st, d, &cyt_stream_ops, &conf, err, errlen);
}

static void cyt_start(lab_driver_t *d)
{
    cyt_t *p = lab_drv_priv(d);
    lab_stream_start(&p->st);
}

static void cyt_stop(lab_driver_t *d)
{
    cyt_t *p = lab_drv_priv(d);
    lab_stream_stop(&p->st);
    cyt_seq_clear(&p->conn);
    cyt_seq_clear(&p->op);
}

static void cyt_close(lab_driver_t *d)
{
    cyt_t *p = lab_drv_priv(d);
    cyt_seq_clear(&p->conn);
    cyt_seq_clear(&p->op);
    if (!p->st.d) { /* open refused the configuration before the stream existed */
        lab_drv_closed(d);
        return;
    }
    lab_stream_close(&p->st);
}

static void cyt_refuse(lab_driver_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parameters the schema cannot judge: nothing is sent. */
static void cyt_refuse(lab_driver_t *d, const char *fmt, ...)
{
    cyt_t *p = lab_drv_priv(d);
    lab_drv_error_t e = {.code = LAB_EINVAL, .not_started = true};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.text, sizeof e.text, fmt, ap);
    va_end(ap);
    lab_stream_refuse(&p->st, &e);
}

/* What depends on the configuration, before anything is queued. */
static void cyt_check(lab_driver_t *d, const lab_drv_action_t *a, json_t *params,
                      struct lab_jerrs *errs)
{
    cyt_t *p = lab_drv_priv(d);
    json_t *cassette = json_object_get(params, "cassette"), *slot = json_object_get(params, "slot");
    if ((strcmp(a->name, "load") == 0 || strcmp(a->name, "unload") == 0) && cassette && slot) {
        json_int_t c = json_integer_value(cassette), sl = json_integer_value(slot);
        const cytomat_cassettes_t *cs = &p->cassettes;
        if (c > cs->n)
            lab_jerrs_add(errs, "/cassette", "%lld is beyond the %d cassette%s configured",
                          (long long)c, cs->n, cs->n == 1 ? "" : "s");
        else if (c >= 1 && sl > cs->slots[c - 1])
            lab_jerrs_add(errs, "/slot", "%lld is beyond the %d slots of cassette %lld (%s)",
                          (long long)sl, cs->slots[c - 1], (long long)c, cs->rack[c - 1]->name);
    }
    if (strcmp(a->name, "set_climate") == 0 && p->climate_n < 2 &&
        json_object_get(params, "co2_pct"))
        lab_jerrs_add(errs, "/co2_pct", "not controlled by this model (climate = %s)",
                      lab_drv_str(d, "climate"));
}

/* Write and read back each set point given; LAB_EINVAL when one is refused. */
static int cyt_climate_steps(lab_driver_t *d, json_t *params)
{
    cyt_t *p = lab_drv_priv(d);
    static const struct {
        const char *param, *code, *key, *set_key;
        cytomat_climate_t what;
    } rows[] = {
        {"temperature_c", "it", "temperature_c", "setpoint_c", CYTOMAT_CLIMATE_TEMPERATURE},
        {"co2_pct", "ic", "co2_pct", "co2_setpoint_pct", CYTOMAT_CLIMATE_CO2},
    };
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(params, rows[i].param);
        if (!v)
            continue;
        cytomat_cmd_t w;
        if (i >= p->climate_n) {
            cyt_refuse(d, "%s: params/%s: not controlled by this model (climate = %s)",
                       lab_drv_current(d)->name, rows[i].param, lab_drv_str(d, "climate"));
            return LAB_EINVAL;
        }
        if (cytomat_climate_set_cmd(rows[i].what, json_number_value(v), &w) != LAB_OK) {
            cyt_refuse(d, "%s: params/%s: %g is outside the device's range",
                       lab_drv_current(d)->name, rows[i].param, json_number_value(v));
            return LAB_EINVAL;
        }
        cyt_add(&p->op, CYT_ACTION, w.type, w.code, w.params, NULL, NULL);
        cyt_add(&p->op, CYT_CLIMATE, "ch", rows[i].code, NULL, NULL, rows[i].set_key);
    }
    return 0;
}

static void cyt_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    cyt_t *p = lab_drv_priv(d);
    for (size_t i = 0; i < sizeof cyt_act_names / sizeof cyt_act_names[0]; i++)
        if (strcmp(cyt_act_names[i].name, a->name) == 0)
            p->act = cyt_act_names[i].act;
    cyt_seq_clear(&p->op);
    p->op.result = json_object();
    json_int_t cassette = json_integer_value(json_object_get(params, "cassette"));
    json_int_t slot = json_integer_value(json_object_get(params, "slot"));
    switch (p->act) {
    case CYT_ACT_STATUS:
        cyt_add(&p->op, CYT_OVERVIEW, "ch", "bs", NULL, NULL, NULL);
        cyt_add(&p->op, CYT_CLIMATE, "ch", "it", NULL, "temperature_c", "setpoint_c");
        if (p->climate_n >= 2)
            cyt_add(&p->op, CYT_CLIMATE, "ch", "ic", NULL, "co2_pct", "co2_setpoint_pct");
        if (p->climate_n >= 3)
            cyt_add(&p->op, CYT_CLIMATE, "ch", "ih", NULL, "humidity_pct", NULL);
        cyt_add(&p->op, CYT_REGISTER, "ch", "be", NULL, "error_register", NULL);
        cyt_add(&p->op, CYT_REGISTER, "ch", "bw", NULL, "warning_register", NULL);
        break;
    case CYT_ACT_LOAD:
    case CYT_ACT_UNLOAD: {
        char where[16];
        int n = cytomat_slot_param(p->model, (int)cassette, (int)slot, &p->cassettes, where,
                                   sizeof where);
        /* cyt_check refused a site the cassettes do not have; the framework ran it first */
        if (n < 0) {
            cyt_refuse(d, "%s: cassette %lld slot %lld is not a site of this instrument", a->name,
                       (long long)cassette, (long long)slot);
            return;
        }
        cyt_add(&p->op, CYT_WAIT_IDLE, "ch", "bs", NULL, NULL, NULL);
        cyt_add(&p->op, CYT_ACTION, "mv", p->act == CYT_ACT_LOAD ? "ts" : "st", where, NULL, NULL);
        cyt_add(&p->op, CYT_WAIT_DONE, "ch", "bs", NULL, NULL, NULL);
        json_object_set_new(p->op.result, "cassette", json_integer(cassette));
        json_object_set_new(p->op.result, "slot", json_integer(slot));
        break;
    }
    case CYT_ACT_INITIALIZE:
        cyt_add(&p->op, CYT_WAIT_IDLE, "ch", "bs", NULL, NULL, NULL);
        cyt_add(&p->op, CYT_ACTION, "ll", "in", NULL, NULL, NULL);
        cyt_add(&p->op, CYT_WAIT_DONE, "ch", "bs", NULL, NULL, NULL);
        break;
    case CYT_ACT_SET_TEMPERATURE:
    case CYT_ACT_SET_CLIMATE:
        if (cyt_climate_steps(d, params) < 0)
            return;
        break;
    case CYT_ACT_RESET:
        cyt_add(&p->op, CYT_WAIT_IDLE_ANY, "ch", "bs", NULL, NULL, NULL);
        cyt_add(&p->op, CYT_ACTION, "rs", "be", NULL, NULL, NULL);
        cyt_add(&p->op, CYT_ACTION, "ll", "in", NULL, NULL, NULL);
        cyt_add(&p->op, CYT_WAIT_DONE, "ch", "bs", NULL, NULL, NULL);
        cyt_add(&p->op, CYT_REGISTER, "ch", "be", NULL, "error_register", NULL);
        break;
    case CYT_ACT_INVENTORY:
        cyt_add(&p->op, CYT_OVERVIEW, "ch", "bs", NULL, NULL, NULL);
        break;
    }
    lab_stream_run(&p->st);
}

/* Every cassette's slots, from its rack. */
static int cyt_sites(lab_driver_t *d, int *slots, int max)
{
    cyt_t *p = lab_drv_priv(d);
    int n = p->cassettes.n < max ? p->cassettes.n : max;
    for (int c = 0; c < n; c++)
        slots[c] = p->cassettes.slots[c];
    return n;
}

static void cyt_abort(lab_driver_t *d)
{
    cyt_t *p = lab_drv_priv(d);
    lab_stream_abort(&p->st);
    cyt_seq_clear(&p->op);
}

/* What its actions do in a workflow step (the scheduler asks by role, never by name). */
static const lab_drv_role_action_t cyt_roles[] = {
    {LAB_DRV_ROLE_LOAD, "load"},
    {LAB_DRV_ROLE_UNLOAD, "unload"},
    {LAB_DRV_ROLE_SET_TEMP, "set_temperature"},
    {LAB_DRV_ROLE_INVENTORY, "inventory"},
    {LAB_DRV_ROLE_NONE, NULL},
};

const lab_driver_ops_t lab_driver_thermo_cytomat = {
    .name = "thermo-cytomat",
    .kind = "incubator",
    .model = "Thermo Cytomat",
    .keys = cyt_keys,
    .actions = cyt_actions,
    .roles = cyt_roles,
    .poll_action = "status",
    .poll_default_s = 5,
    .priv_size = sizeof(cyt_t),
    .open = cyt_open,
    .start = cyt_start,
    .stop = cyt_stop,
    .close = cyt_close,
    .invoke = cyt_invoke,
    .check = cyt_check,
    .abort = cyt_abort,
    .sites = cyt_sites,
    .check_conf = cyt_check_conf,
};
