/* spectramax: Molecular Devices SpectraMax plate readers (M5, 384 Plus) over RS-232, 9600 8N1
 * as PyLabRobot opens them (the codec is protocols/spectramax.h), on the stream-driver base
 * (drivers/stream.h: the link, one command in flight, resynchronisation, the quiet line). A
 * command is a CR-ended line; its reply is a known number of '>'-ended fields, the first "OK" or
 * "FAIL\t NNN", the second (if any) its data. The connect sequence is "!" and !STATUS.
 *
 * An absorbance read is PyLabRobot's sequence for an endpoint read of a plate at one wavelength
 * (!CLEAR DATA, !XPOS/!YPOS from the plate geometry, !STRIP, !CSPEED, !SHAKE OFF, !WAVELENGTH,
 * !CALIBRATE ONCE, !MODE ENDPOINT, !ORDER COLUMN, !SPEED OFF, then !TAG OFF, !NVRAM CARCOL 100
 * and !READTYPE ABSPLA on an M5, or !READTYPE PLA on a 384 Plus), !READ, !STATUS polled once a
 * lab second until IDLE, and !TRANSFER for the data.
 *
 * A FAIL is a device error with the reader's code. A command error (1xx: a bad argument, busy,
 * no data) is the framework's fault, cleared by the next success. A firmware, hardware, motion or
 * NVRAM error (2xx-5xx), or a code the reader's table does not hold, stays in the reader's error
 * log until !CLEAR ERROR: the driver holds the instrument in fault, across reconnections, until
 * clear_error succeeds (a person looked), and refuses reads, the tray and the set point until
 * then. */
#include "drivers/driver.h"
#include "drivers/stream.h"
#include "core/jschema.h"
#include "core/err.h"
#include "core/log.h"
#include "protocols/spectramax.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SM_STEPS_MAX 20
#define SM_REPLY_MS 2000     /* one short reply at 9600 baud, with room */
#define SM_TRANSFER_MS 15000 /* a 384-well transfer is about 3.5 kB: 4 s at 9600 baud */
#define SM_SLOW_S 20         /* lab seconds for the tray to move */
#define SM_QUIET_MS 250      /* the line quiet this long before a command after stray bytes */
#define SM_RETRY_MS 2000     /* between connection attempts on an open link */
#define SM_POLL_S 1          /* lab seconds between !STATUS polls during a read (PyLabRobot's) */

typedef struct sm_step {
    char cmd[SMAX_CMD_MAX];
    size_t len;
    int fields;
} sm_step_t;

typedef struct sm_seq {
    sm_step_t steps[SM_STEPS_MAX];
    int n, i;
    bool bad; /* a step could not be made: the sequence is never sent */
} sm_seq_t;

typedef struct sm {
    lab_stream_t st;
    smax_rx_t rx;
    int rows, cols;
    bool plus384; /* model = 384plus */
    double a1_x, a1_y, pitch;
    sm_seq_t conn, op; /* the connect sequence may run while an operation waits for the link */
    sm_seq_t *cur;
    int field;    /* fields of the command in flight received so far */
    bool reading; /* !READ was sent: !STATUS is polled until IDLE */
    uint64_t read_until;
    json_t *result;
    int wavelength_nm;
    int r0, c0, r1, c1; /* the wells reported, 1-based, inclusive */
    smax_plate_t plate;
    int fail_code;            /* of the FAIL that ended the operation (EDEVICE) */
    bool clearing;            /* the operation is clear_error */
    bool held;                /* a reader error only clear_error clears */
    lab_drv_error_t held_err; /* ... and what it was */
} sm_t;

static const lab_drv_action_t sm_actions[] = {
    {"status", NULL, 10, 0, "the reader's temperature and set point (temperature_c, setpoint_c)"},
    {"read_absorbance",
     "{\"type\":\"object\",\"required\":[\"wavelength_nm\"],\"additionalProperties\":false,"
     "\"properties\":{\"wavelength_nm\":{\"type\":\"integer\",\"minimum\":190,\"maximum\":1000},"
     "\"wells\":{\"type\":\"string\",\"pattern\":"
     "\"^[A-Pa-p](1[0-9]|2[0-4]|[1-9])(:[A-Pa-p](1[0-9]|2[0-4]|[1-9]))?$\"}}}",
     600, 0,
     "read absorbance at one wavelength over the plate; values by well (of the rectangle "
     "\"wells\", default the whole plate), null where the reader gave none (\"saturated\" lists "
     "the wells it read as #SAT)"},
    {"set_temperature",
     "{\"type\":\"object\",\"required\":[\"temperature_c\"],\"additionalProperties\":false,"
     "\"properties\":{\"temperature_c\":{\"type\":[\"number\",\"null\"],\"minimum\":0,"
     "\"maximum\":45}}}",
     60, 0, "incubation set point in degC (0-45; 0 or null switches incubation off)"},
    {"open_tray", NULL, 60, 0, "open the plate tray (drawer)"},
    {"close_tray", NULL, 60, 0, "close the plate tray (drawer)"},
    {"clear_error", NULL, 10, 0,
     "clear the reader's error log (!CLEAR ERROR) and the fault a reader error holds"},
    {NULL, NULL, 0, 0, NULL},
};

static const lab_drv_key_t sm_keys[] = {
    /* 9600 (backend.py 254-259); 8N1 without flow control are PyLabRobot's Serial defaults
     * (pylabrobot/io/serial.py 46-51), which that backend does not change. */
    LAB_DRV_SERIAL_KEYS("9600", "8", "none", "1", "none"),
    {"model", LAB_DRV_KEY_ENUM, "m5", 0, 0, "m5|384plus", 0,
     "m5: SpectraMax M5 (!READTYPE ABSPLA, !TAG, !NVRAM); 384plus: SpectraMax 384 Plus "
     "(!READTYPE PLA)"},
    {"plate_wells", LAB_DRV_KEY_ENUM, "96", 0, 0, "96|384", 0,
     "the plate format read: 96 (8 x 12) or 384 (16 x 24)"},
    /* !XPOS and !YPOS: ANSI/SLAS 1-2004 and 2-2004 by default. */
    {"plate_a1_x_mm", LAB_DRV_KEY_DOUBLE, "0", 0, 999, NULL, 0,
     "centre of A1 from the plate's left edge, mm; 0: the ANSI/SLAS value (14.38 or 12.13)"},
    {"plate_a1_y_mm", LAB_DRV_KEY_DOUBLE, "0", 0, 999, NULL, 0,
     "centre of A1 from the plate's back edge, mm; 0: the ANSI/SLAS value (11.24 or 8.99)"},
    {"plate_pitch_mm", LAB_DRV_KEY_DOUBLE, "0", 0, 99, NULL, 0,
     "distance between well centres, mm; 0: the ANSI/SLAS value (9 or 4.5)"},
    {"read_timeout_s", LAB_DRV_KEY_DOUBLE, "300", 1, 3600, NULL, 0,
     "lab seconds a read may take between !READ and the reader's IDLE"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

/* ---- helpers ---- */

static void sm_step_add(sm_seq_t *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sm_step_add(sm_seq_t *q, const char *fmt, ...)
{
    char text[SMAX_CMD_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    sm_step_t *s = &q->steps[q->n < SM_STEPS_MAX ? q->n : 0];
    int n = q->n < SM_STEPS_MAX ? smax_encode_cmd(s->cmd, sizeof s->cmd, "%s", text) : LAB_ENOSPACE;
    if (n <= 0) {
        /* Half a sequence must never reach the reader (a read without its wavelength). */
        log_error("spectramax", "command '%s' not made: %s", text, lab_strerror(n));
        q->bad = true;
        return;
    }
    s->len = (size_t)n;
    s->fields = smax_reply_fields(s->cmd, s->len);
    q->n++;
}

static const sm_step_t *sm_step(sm_t *p)
{
    return &p->cur->steps[p->cur->i];
}

/* The command's first word: "!STATUS". */
static bool sm_is(const sm_step_t *s, const char *word)
{
    size_t n = strlen(word);
    return s->len > n && memcmp(s->cmd, word, n) == 0 && (s->cmd[n] == ' ' || s->cmd[n] == '\r');
}

static unsigned sm_reply_ms(lab_driver_t *d, const sm_step_t *s)
{
    if (sm_is(s, "!TRANSFER"))
        return SM_TRANSFER_MS;
    if (sm_is(s, "!OPEN") || sm_is(s, "!CLOSE")) {
        uint64_t ms = lab_drv_lab_ms(d, SM_SLOW_S);
        return ms < SM_REPLY_MS ? SM_REPLY_MS : (unsigned)ms;
    }
    return SM_REPLY_MS;
}

/* "A1" -> row 1, col 1 (1-based). */
static void sm_well_parse(const char *s, int *row, int *col)
{
    *row = toupper((unsigned char)s[0]) - 'A' + 1;
    *col = atoi(s + 1);
}

/* The command as sent, for messages: without its CR. */
static const char *sm_shown(const sm_step_t *s, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.*s", (int)(s->len ? s->len - 1 : 0), s->cmd);
    return buf;
}

/* ---- the exchange ---- */

static void sm_send(lab_driver_t *d)
{
    sm_t *p = lab_drv_priv(d);
    const sm_step_t *s = sm_step(p);
    p->field = 0;
    lab_stream_send(&p->st, s->cmd, s->len, sm_reply_ms(d, s));
}

static void sm_advance(lab_driver_t *d)
{
    sm_t *p = lab_drv_priv(d);
    if (++p->cur->i >= p->cur->n) {
        lab_stream_end(&p->st, NULL);
        return;
    }
    sm_send(d);
}

static void sm_poll_again(lab_stream_t *st)
{
    sm_send(lab_stream_driver(st));
}

/* The data of a read: the values of the wells asked for, by name. */
static int sm_take_data(lab_driver_t *d, const char *data, size_t len, lab_drv_error_t *e)
{
    sm_t *p = lab_drv_priv(d);
    int rc = smax_parse_data(data, len, p->rows, p->cols, &p->plate);
    if (rc != LAB_OK) {
        lab_drv_error_set(e, LAB_EPROTO, NULL, "!TRANSFER data: %s at byte %zu of %zu",
                          lab_strerror(rc), p->plate.err_at, len);
        return e->code;
    }
    if (p->plate.wavelength_nm != p->wavelength_nm) {
        lab_drv_error_set(e, LAB_EPROTO, NULL, "!TRANSFER data: wavelength %d nm, %d nm was read",
                          p->plate.wavelength_nm, p->wavelength_nm);
        return e->code;
    }
    json_t *values = json_object(), *sat = json_array();
    for (int r = p->r0; r <= p->r1; r++)
        for (int c = p->c0; c <= p->c1; c++) {
            char name[8];
            snprintf(name, sizeof name, "%c%d", 'A' + r - 1, c);
            uint8_t state = p->plate.state[r - 1][c - 1];
            json_object_set_new(values, name,
                                state == SMAX_WELL_VALUE ? json_real(p->plate.value[r - 1][c - 1])
                                                         : json_null());
            if (state == SMAX_WELL_SAT)
                json_array_append_new(sat, json_string(name));
        }
    json_object_set_new(p->result, "values", values);
    if (json_array_size(sat))
        json_object_set_new(p->result, "saturated", sat);
    else
        json_decref(sat);
    json_object_set_new(p->result, "wavelength_nm", json_integer(p->wavelength_nm));
    json_object_set_new(p->result, "plate_wells", json_integer(p->rows * p->cols));
    json_object_set_new(p->result, "temperature_c", json_real(p->plate.temperature));
    return 0;
}

/* The step's last field (data: its data field, or NULL for a one-field reply); 0 to go on, 1
 * when the step is sent again later, or e filled and its code returned. */
static int sm_on_done(lab_driver_t *d, const char *data, size_t len, lab_drv_error_t *e)
{
    sm_t *p = lab_drv_priv(d);
    const sm_step_t *s = sm_step(p);
    char shown[SMAX_CMD_MAX], text[96];
    if (sm_is(s, "!STATUS")) {
        char state[32];
        if (smax_parse_status(data, len, state, sizeof state) != LAB_OK)
            goto bad;
        if (p->cur == &p->conn)
            return 0;
        if (p->reading && strcmp(state, "IDLE") != 0) {
            if (uv_now(lab_drv_loop(d)) >= p->read_until) {
                lab_drv_error_set(e, LAB_ETIMEDOUT, NULL,
                                  "the reader is still %s %.0f lab s after !READ", state,
                                  lab_drv_double(d, "read_timeout_s"));
                return e->code;
            }
            lab_stream_wait(&p->st, (unsigned)lab_drv_lab_ms(d, SM_POLL_S), sm_poll_again);
            return 1;
        }
        return 0;
    }
    if (sm_is(s, "!READ")) {
        p->reading = true;
        p->read_until =
            uv_now(lab_drv_loop(d)) + lab_drv_lab_ms(d, lab_drv_double(d, "read_timeout_s"));
        return 0;
    }
    if (s->len == strlen("!TEMP\r") && sm_is(s, "!TEMP")) { /* the query, not a set point */
        double sp, cur;
        if (smax_parse_temp(data, len, &sp, &cur) != LAB_OK)
            goto bad;
        json_object_set_new(p->result, "temperature_c", json_real(cur));
        json_object_set_new(p->result, "setpoint_c", sp > 0 ? json_real(sp) : json_null());
        return 0;
    }
    if (sm_is(s, "!TRANSFER"))
        return sm_take_data(d, data, len, e);
    return 0; /* a setting: "OK" is all; the data field of a !SPEED or !READTYPE is not used */
bad:
    lab_stream_printable(data, len, text, sizeof text);
    lab_drv_error_set(e, LAB_EPROTO, NULL, "'%s': unexpected data '%s'",
                      sm_shown(s, shown, sizeof shown), text);
    return e->code;
}

/* One field of the reply to the command in flight. */
static void sm_reply_cb(lab_stream_t *st, const char *data, size_t len)
{
    lab_driver_t *d = lab_stream_driver(st);
    sm_t *p = lab_drv_priv(d);
    const sm_step_t *s = sm_step(p);
    lab_drv_error_t e;
    char shown[SMAX_CMD_MAX], text[96];
    int code = 0;
    int kind = smax_field_kind(data, len, &code);
    sm_shown(s, shown, sizeof shown);
    if (kind < 0) {
        lab_stream_printable(data, len, text, sizeof text);
        lab_stream_end_resync(st, lab_drv_error_set(&e, LAB_EPROTO, NULL,
                                                    "'%s': a FAIL without an error code: '%s'",
                                                    shown, text));
        return;
    }
    if (kind == SMAX_FAIL) {
        const char *cls = NULL, *what = smax_error_text(code, &cls);
        char dc[16];
        snprintf(dc, sizeof dc, "%d", code);
        lab_drv_error_set(&e, LAB_EDEVICE, dc, "'%s' failed: error %d (%s%s%s)", shown, code,
                          what ? cls : "not in the reader's error table", what ? " error: " : "",
                          what ? what : "");
        p->reading = false;
        p->fail_code = code;
        lab_stream_end(st, &e);
        return;
    }
    if (p->field == 0 && kind != SMAX_OK) {
        lab_stream_unexpected(st, data, len, "OK or FAIL");
        return;
    }
    if (++p->field < s->fields) {
        lab_stream_expect(st, sm_reply_ms(d, s));
        return;
    }
    int rc = sm_on_done(d, s->fields > 1 ? data : NULL, s->fields > 1 ? len : 0, &e);
    if (rc < 0) {
        if (e.code == LAB_ETIMEDOUT)
            lab_stream_end(st, &e);
        else
            lab_stream_end_resync(st, &e);
        return;
    }
    if (rc == 0)
        sm_advance(d);
}

static void sm_timeout_cb(lab_stream_t *st, lab_drv_error_t *e)
{
    sm_t *p = lab_drv_priv(lab_stream_driver(st));
    char shown[SMAX_CMD_MAX];
    const sm_step_t *s = sm_step(p);
    lab_drv_error_set(e, LAB_ETIMEDOUT, NULL, "no %s '>' field of the reply to '%s' (of %d)",
                      p->field == 0 ? "first" : "second", sm_shown(s, shown, sizeof shown),
                      s->fields);
}

static void sm_begin_cb(lab_stream_t *st, lab_stream_owner_t owner)
{
    sm_t *p = lab_drv_priv(lab_stream_driver(st));
    if (owner == LAB_STREAM_CONNECT) {
        p->conn.n = 0;
        sm_step_add(&p->conn, "!");
        sm_step_add(&p->conn, "!STATUS");
        p->cur = &p->conn;
    } else {
        p->cur = &p->op;
    }
    p->cur->i = 0;
    p->reading = false;
    sm_send(lab_stream_driver(st));
}

/* Whether a reader error stays until !CLEAR ERROR: everything but a command error the table
 * knows (1xx); a code it does not hold means nothing known, so a person looks. */
static bool sm_error_holds(int code)
{
    return !(code >= 100 && code < 200 && smax_error_text(code, NULL));
}

static void sm_end_cb(lab_stream_t *st, lab_stream_owner_t owner, const lab_drv_error_t *err)
{
    lab_driver_t *d = lab_stream_driver(st);
    sm_t *p = lab_drv_priv(d);
    p->reading = false;
    if (owner == LAB_STREAM_CONNECT) {
        if (!err)
            lab_drv_set_state(d, p->held ? LAB_INST_FAULT : LAB_INST_IDLE,
                              p->held ? &p->held_err : NULL);
        return; /* otherwise the base reports offline and connects again */
    }
    json_t *result = p->result;
    p->result = NULL;
    /* The held fault is reported before the operation ends: the framework's own fault (an
     * operation that failed, while idle) clears itself on the next success, and must not be the
     * one that stands for a reader error. */
    if (err) {
        json_decref(result);
        lab_drv_error_t e = *err;
        if (e.code == LAB_EDEVICE && sm_error_holds(p->fail_code)) {
            p->held = true;
            p->held_err = e;
            lab_drv_set_state(d, LAB_INST_FAULT, &e);
        }
        lab_drv_done(d, &e, NULL);
        return;
    }
    lab_drv_done(d, NULL, result);
    if (p->clearing && p->held) {
        p->held = false;
        lab_drv_set_state(d, LAB_INST_IDLE, NULL);
    } else if (p->held && lab_driver_state(d) == LAB_INST_IDLE) {
        /* A fault of the framework's was over it and ended with this success: it holds. */
        lab_drv_set_state(d, LAB_INST_FAULT, &p->held_err);
    }
}

/* ---- the framer: '>'-ended fields ---- */

static int sm_field_cb(void *ud, const char *field, size_t len, int err)
{
    lab_stream_t *st = ud;
    if (err) {
        lab_stream_garbage(st, "", 0, lab_strerror(err));
        return 1;
    }
    lab_stream_reply(st, field, len);
    return 1; /* one field at a time: the reply may end the exchange */
}

static void sm_feed_cb(lab_stream_t *st, const uint8_t *data, size_t len)
{
    sm_t *p = lab_drv_priv(lab_stream_driver(st));
    size_t off = 0;
    while (off < len)
        off += smax_rx_feed(&p->rx, data + off, len - off, sm_field_cb, st);
}

static void sm_reset_cb(lab_stream_t *st)
{
    sm_t *p = lab_drv_priv(lab_stream_driver(st));
    smax_rx_init(&p->rx);
}

static const lab_stream_ops_t sm_stream_ops = {
    .feed = sm_feed_cb,
    .reset = sm_reset_cb,
    .begin = sm_begin_cb,
    .reply = sm_reply_cb,
    .end = sm_end_cb,
    .timeout = sm_timeout_cb,
};

/* ---- driver ops ---- */

static int sm_open(lab_driver_t *d, char *err, size_t errlen)
{
    sm_t *p = lab_drv_priv(d);
    lab_stream_conf_t conf = {
        .tag = "spectramax",
        .reply_ms = SM_REPLY_MS,
        .quiet_ms = SM_QUIET_MS,
        .retry_ms = SM_RETRY_MS,
    };
    bool big = lab_drv_enum(d, "plate_wells") == 1;
    p->rows = big ? 16 : 8;
    p->cols = big ? 24 : 12;
    p->plus384 = lab_drv_enum(d, "model") == 1;
    p->a1_x = lab_drv_double(d, "plate_a1_x_mm");
    p->a1_y = lab_drv_double(d, "plate_a1_y_mm");
    p->pitch = lab_drv_double(d, "plate_pitch_mm");
    if (p->a1_x == 0)
        p->a1_x = big ? 12.13 : 14.38;
    if (p->a1_y == 0)
        p->a1_y = big ? 8.99 : 11.24;
    if (p->pitch == 0)
        p->pitch = big ? 4.5 : 9;
    p->cur = &p->conn;
    smax_rx_init(&p->rx);
    return lab_stream_init(&p->st, d, &sm_stream_ops, &conf, err, errlen);
}

static void sm_start(lab_driver_t *d)
{
    sm_t *p = lab_drv_priv(d);
    lab_stream_start(&p->st);
}

static void sm_stop(lab_driver_t *d)
{
    sm_t *p = lab_drv_priv(d);
    lab_stream_stop(&p->st);
    json_decref(p->result);
    p->result = NULL;
}

static void sm_close(lab_driver_t *d)
{
    sm_t *p = lab_drv_priv(d);
    json_decref(p->result);
    p->result = NULL;
    lab_stream_close(&p->st);
}

/* The wells against the configured plate, before anything is queued. */
static void sm_check(lab_driver_t *d, const lab_drv_action_t *a, json_t *params,
                     struct lab_jerrs *errs)
{
    sm_t *p = lab_drv_priv(d);
    const char *wells = json_string_value(json_object_get(params, "wells"));
    if (strcmp(a->name, "read_absorbance") != 0 || !wells)
        return;
    int r0 = 0, c0 = 0, r1 = 0, c1 = 0;
    const char *colon = strchr(wells, ':');
    sm_well_parse(wells, &r0, &c0);
    if (colon)
        sm_well_parse(colon + 1, &r1, &c1);
    else
        r1 = r0, c1 = c0;
    if (r0 > p->rows || r1 > p->rows || c0 > p->cols || c1 > p->cols)
        lab_jerrs_add(errs, "/wells", "%s is outside the %d-well plate (A1:%c%d)", wells,
                      p->rows * p->cols, 'A' + p->rows - 1, p->cols);
}

/* PyLabRobot's read_absorbance for one wavelength, endpoint, the whole plate (backend.py
 * 694-745 with its defaults: calibrate ONCE, carriage speed 8, no shake, speed read off, column
 * order; the 384 Plus's own !READTYPE and neither !TAG nor !NVRAM). */
static bool sm_plan_read(lab_driver_t *d, json_t *params)
{
    sm_t *p = lab_drv_priv(d);
    const char *wells = json_string_value(json_object_get(params, "wells"));
    p->r0 = 1, p->c0 = 1, p->r1 = p->rows, p->c1 = p->cols;
    if (wells) {
        const char *colon = strchr(wells, ':');
        sm_well_parse(wells, &p->r0, &p->c0);
        if (colon)
            sm_well_parse(colon + 1, &p->r1, &p->c1);
        else
            p->r1 = p->r0, p->c1 = p->c0;
        int t;
        if (p->r0 > p->r1)
            t = p->r0, p->r0 = p->r1, p->r1 = t;
        if (p->c0 > p->c1)
            t = p->c0, p->c0 = p->c1, p->c1 = t;
        if (p->r1 > p->rows || p->c1 > p->cols) {
            lab_drv_error_t e = {.code = LAB_EINVAL};
            snprintf(e.text, sizeof e.text,
                     "read_absorbance: params/wells: %s is outside the %d-well plate (A1:%c%d)",
                     wells, p->rows * p->cols, 'A' + p->rows - 1, p->cols);
            lab_stream_refuse(&p->st, &e);
            return false;
        }
    }
    p->wavelength_nm = (int)json_integer_value(json_object_get(params, "wavelength_nm"));
    sm_seq_t *q = &p->op;
    sm_step_add(q, "!CLEAR DATA");
    sm_step_add(q, "!XPOS %.3f %.3f %d", p->a1_x, p->pitch, p->cols);
    sm_step_add(q, "!YPOS %.3f %.3f %d", p->a1_y, p->pitch, p->rows);
    sm_step_add(q, "!STRIP 1 %d", p->cols);
    sm_step_add(q, "!CSPEED 8");
    sm_step_add(q, "!SHAKE OFF");
    sm_step_add(q, "!WAVELENGTH %d", p->wavelength_nm);
    sm_step_add(q, "!CALIBRATE ONCE");
    sm_step_add(q, "!MODE ENDPOINT");
    sm_step_add(q, "!ORDER COLUMN");
    sm_step_add(q, "!SPEED OFF");
    if (p->plus384) {
        sm_step_add(q, "!READTYPE PLA");
        q->steps[q->n - 1].fields = 1; /* spectramax_384_plus_backend.py line 28 */
    } else {
        sm_step_add(q, "!TAG OFF");
        sm_step_add(q, "!NVRAM CARCOL 100");
        sm_step_add(q, "!READTYPE ABSPLA");
    }
    sm_step_add(q, "!READ");
    sm_step_add(q, "!STATUS");
    sm_step_add(q, "!TRANSFER");
    return true;
}

static void sm_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    sm_t *p = lab_drv_priv(d);
    p->op.n = 0;
    p->op.bad = false;
    p->fail_code = 0;
    p->clearing = strcmp(a->name, "clear_error") == 0;
    json_decref(p->result);
    p->result = json_object();
    if (p->held && !p->clearing && strcmp(a->name, "status") != 0) {
        lab_drv_error_t e = {.code = LAB_ESTATE};
        snprintf(e.text, sizeof e.text,
                 "%s: not sent, the reader holds an error (clear_error): %.180s", a->name,
                 p->held_err.text);
        snprintf(e.device_code, sizeof e.device_code, "%s", p->held_err.device_code);
        lab_stream_refuse(&p->st, &e);
        return;
    }
    if (strcmp(a->name, "read_absorbance") == 0) {
        if (!sm_plan_read(d, params))
            return;
    } else if (strcmp(a->name, "open_tray") == 0) {
        sm_step_add(&p->op, "!OPEN");
    } else if (strcmp(a->name, "close_tray") == 0) {
        sm_step_add(&p->op, "!CLOSE");
    } else if (p->clearing) {
        sm_step_add(&p->op, "!CLEAR ERROR"); /* backend.py clear_error_log, line 345 */
    } else if (strcmp(a->name, "set_temperature") == 0) {
        json_t *t = json_object_get(params, "temperature_c");
        if (json_is_number(t)) {
            /* backend.py 361 sends the float as Python prints it: "37.0", "36.55". */
            char num[32];
            snprintf(num, sizeof num, "%.15g", json_number_value(t));
            sm_step_add(&p->op, "!TEMP %s%s", num, strpbrk(num, ".e") ? "" : ".0");
        } else {
            /* deactivate: pylabrobot/molecular_devices/spectramax/base.py line 725 */
            sm_step_add(&p->op, "!TEMP 0");
        }
        sm_step_add(&p->op, "!TEMP");
    } else {
        sm_step_add(&p->op, "!STATUS");
        sm_step_add(&p->op, "!TEMP");
    }
    if (p->op.bad) {
        lab_drv_error_t e = {.code = LAB_EINTERNAL};
        snprintf(e.text, sizeof e.text, "%s: a command could not be made; nothing sent", a->name);
        lab_stream_refuse(&p->st, &e);
        return;
    }
    lab_stream_run(&p->st);
}

static void sm_abort(lab_driver_t *d)
{
    sm_t *p = lab_drv_priv(d);
    lab_stream_abort(&p->st);
    json_decref(p->result);
    p->result = NULL;
}

/* What its actions do in a workflow step (the scheduler asks by role, never by name). */
static const lab_drv_role_action_t sm_roles[] = {
    {LAB_DRV_ROLE_READ, "read_absorbance"},
    {LAB_DRV_ROLE_SET_TEMP, "set_temperature"},
    {LAB_DRV_ROLE_NONE, NULL},
};

const lab_driver_ops_t lab_driver_spectramax = {
    .name = "spectramax",
    .kind = "plate_reader",
    .model = "Molecular Devices SpectraMax (M5, 384 Plus)",
    .keys = sm_keys,
    .actions = sm_actions,
    .roles = sm_roles,
    .poll_action = "status",
    .poll_default_s = 10,
    .priv_size = sizeof(sm_t),
    .open = sm_open,
    .start = sm_start,
    .stop = sm_stop,
    .close = sm_close,
    .invoke = sm_invoke,
    .check = sm_check,
    .abort = sm_abort,
};
