/* biotek-synergy: BioTek Synergy / Cytation plate readers over their single-character serial
 * protocol (the codec is protocols/biotek.h), 9600 8N2 with RTS/CTS as PyLabRobot opens them,
 * on the stream-driver base (drivers/stream.h: the link, one command in flight, resynchronisation
 * and the quiet line). The driver owns the exchange: a command letter, the lone ACK of a command
 * that takes a parameter, the parameter, and the ETX-framed status that answers it (no ACK:
 * nothing for the plate geometry, 37 digits for a read definition). A read is the plate geometry
 * ('y'), the read definition ('D'), the run ('O', "\x06" "0000" ETX) and its body, then the
 * temperature ('h'). The connect sequence asks the version ('e') and serial number ('C').
 *
 * The reader does not answer a command it cannot execute: a refused command is a timeout here,
 * not a device error (labloop-sim's injected "error" is exactly that). A read the driver stops
 * waiting for is aborted ('x', unanswered). */
#include "drivers/driver.h"
#include "drivers/stream.h"
#include "core/jschema.h"
#include "core/err.h"
#include "core/log.h"
#include "protocols/biotek.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define BT_STEPS_MAX 4
#define BT_REPLY_MS 1500 /* one short reply at 9600 baud, with room */
#define BT_SLOW_S 20    /* lab seconds for a command that moves or configures (PyLabRobot's 20 s) */
#define BT_QUIET_MS 250 /* the line quiet this long before a command after stray bytes */
#define BT_RETRY_MS 2000 /* between connection attempts on an open link */

/* What the command in flight waits for. */
typedef enum bt_phase { BT_WAIT_ACK, BT_WAIT_REPLY, BT_WAIT_BODY } bt_phase_t;

typedef struct bt_step {
    char letter;
    char param[96]; /* sent after the reader's ACK; empty: none */
    size_t param_len;
    bool optional; /* a timeout gives null, not an error (the temperature after a read) */
} bt_step_t;

typedef struct bt_seq {
    bt_step_t steps[BT_STEPS_MAX];
    int n, i;
} bt_seq_t;

typedef struct bt {
    lab_stream_t st;
    biotek_rx_t rx;
    int rows, cols;
    bt_seq_t conn, op; /* the connect sequence may run while an operation waits for the link */
    bt_seq_t *cur;
    bt_phase_t phase;
    bool lost_optional; /* the step that timed out may be missing from the result */
    json_t *result;     /* of the operation */
    biotek_rect_t rect; /* of the read in progress */
    int wavelength_nm;
    biotek_plate_t plate;
    biotek_geometry_t geometry; /* the configured plate, sent before each read */
    bool can_cool;
    bool setpoint_pending; /* set_temperature: checked against the temperature first */
    double setpoint;       /* degC; 0: incubation off */
} bt_t;

static const lab_drv_action_t bt_actions[] = {
    {"status", NULL, 10, 0, "the reader's incubation temperature (temperature_c)"},
    {"read_absorbance",
     "{\"type\":\"object\",\"required\":[\"wavelength_nm\"],\"additionalProperties\":false,"
     "\"properties\":{\"wavelength_nm\":{\"type\":\"integer\",\"minimum\":230,\"maximum\":999},"
     "\"wells\":{\"type\":\"string\",\"pattern\":"
     "\"^[A-Pa-p](1[0-9]|2[0-4]|[1-9])(:[A-Pa-p](1[0-9]|2[0-4]|[1-9]))?$\"}}}",
     300, 0,
     "read absorbance at one wavelength over a rectangle of wells (\"A1:H12\", default the "
     "whole plate); values by well, null where the reader gave none"},
    {"set_temperature",
     "{\"type\":\"object\",\"required\":[\"temperature_c\"],\"additionalProperties\":false,"
     "\"properties\":{\"temperature_c\":{\"type\":[\"number\",\"null\"],\"minimum\":4,"
     "\"maximum\":45}}}",
     60, 0,
     "incubation set point in degC (4-45; null switches incubation off); a reader that cannot "
     "cool (incubation = heat) refuses one below its current temperature"},
    {NULL, NULL, 0, 0, NULL},
};

static const lab_drv_key_t bt_keys[] = {
    LAB_DRV_SERIAL_KEYS("9600", "8", "none", "2", "rtscts"),
    {"plate_wells", LAB_DRV_KEY_ENUM, "96", 0, 0, "96|384", 0,
     "the plate format read: 96 (8 x 12) or 384 (16 x 24)"},
    /* The plate geometry sent before each read ('y'): ANSI/SLAS 1-2004 and 2-2004 by default. */
    {"plate_size_x_mm", LAB_DRV_KEY_DOUBLE, "127.76", 1, 999, NULL, 0,
     "plate length (along a row), mm"},
    {"plate_size_y_mm", LAB_DRV_KEY_DOUBLE, "85.48", 1, 999, NULL, 0,
     "plate width (along a column), mm"},
    {"plate_height_mm", LAB_DRV_KEY_DOUBLE, "14.35", 1, 99.99, NULL, 0,
     "plate height with its lid if it has one, mm"},
    {"plate_a1_x_mm", LAB_DRV_KEY_DOUBLE, "0", 0, 999, NULL, 0,
     "centre of A1 from the plate's left edge, mm; 0: the ANSI/SLAS value (14.38 or 12.13)"},
    {"plate_a1_y_mm", LAB_DRV_KEY_DOUBLE, "0", 0, 999, NULL, 0,
     "centre of A1 from the plate's back edge, mm; 0: the ANSI/SLAS value (11.24 or 8.99)"},
    {"plate_pitch_mm", LAB_DRV_KEY_DOUBLE, "0", 0, 99, NULL, 0,
     "distance between well centres, mm; 0: the ANSI/SLAS value (9 or 4.5)"},
    {"incubation", LAB_DRV_KEY_ENUM, "heat", 0, 0, "heat|heat_cool", 0,
     "heat: set points below the current temperature are refused (Synergy H1); heat_cool: "
     "the reader can also cool"},
    {"read_timeout_s", LAB_DRV_KEY_DOUBLE, "180", 1, 3600, NULL, 0,
     "lab seconds a read may take between the run command and its result"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

static void bt_send(lab_driver_t *d);

/* ---- helpers ---- */

static void bt_step_add(bt_seq_t *q, char letter, const char *param, size_t len)
{
    if (q->n >= BT_STEPS_MAX || len >= sizeof q->steps[0].param)
        return;
    bt_step_t *s = &q->steps[q->n++];
    s->letter = letter;
    memcpy(s->param, param ? param : "", len);
    s->param[len] = '\0';
    s->param_len = len;
    s->optional = false;
}

static const bt_step_t *bt_step(bt_t *p)
{
    return &p->cur->steps[p->cur->i];
}

static const char *bt_name(char letter)
{
    const biotek_cmd_info_t *info = biotek_cmd_info(letter);
    return info ? info->name : "?";
}

/* A read the driver stops waiting for: the reader is told to give up (abort is unanswered). */
static void bt_abort_read(bt_t *p)
{
    if (p->st.owner == LAB_STREAM_OP && p->st.in_flight && p->cur == &p->op &&
        bt_step(p)->letter == 'O')
        lab_stream_write(&p->st, "x", 1);
}

/* "A1" -> row 1, col 1 (1-based). */
static void bt_well_parse(const char *s, int *row, int *col)
{
    *row = toupper((unsigned char)s[0]) - 'A' + 1;
    *col = atoi(s + 1);
}

/* How long a reply may take: short for an ACK, a query or the plate geometry (PyLabRobot waits
 * 1 s for those), BT_SLOW_S lab seconds for what moves or configures the reader. */
static unsigned bt_reply_ms(lab_driver_t *d, char letter, bt_phase_t phase)
{
    if (phase == BT_WAIT_ACK || strchr("eChy", letter))
        return BT_REPLY_MS;
    uint64_t ms = lab_drv_lab_ms(d, BT_SLOW_S);
    return ms < BT_REPLY_MS ? BT_REPLY_MS : (unsigned)ms;
}

/* ---- the exchange ---- */

static void bt_send(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    const bt_step_t *s = bt_step(p);
    const biotek_cmd_info_t *info = biotek_cmd_info(s->letter);
    bool param = info && info->param != BIOTEK_PARAM_NONE;
    p->phase = param ? BT_WAIT_ACK : BT_WAIT_REPLY;
    /* The wire alone cannot tell a lone ACK from a frame's first byte: say which one comes. */
    biotek_rx_expect(&p->rx, param ? BIOTEK_EXPECT_ACK : BIOTEK_EXPECT_ETX);
    lab_stream_send(&p->st, &s->letter, 1, bt_reply_ms(d, s->letter, p->phase));
}

static void bt_advance(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    if (++p->cur->i >= p->cur->n) {
        lab_stream_end(&p->st, NULL);
        return;
    }
    bt_send(d);
}

/* The body of a read: the values of the wells asked for, by name. */
static int bt_take_body(lab_driver_t *d, const biotek_frame_t *f, lab_drv_error_t *e)
{
    bt_t *p = lab_drv_priv(d);
    int rc = biotek_parse_body(f->payload, f->len, p->rows, p->cols, &p->plate);
    if (rc != LAB_OK) {
        lab_drv_error_set(e, LAB_EPROTO, NULL, "result body: %s at byte %zu", lab_strerror(rc),
                          p->plate.err_at);
        return e->code;
    }
    json_t *values = json_object();
    for (int r = p->rect.row0; r <= p->rect.row1; r++)
        for (int c = p->rect.col0; c <= p->rect.col1; c++) {
            char name[8];
            snprintf(name, sizeof name, "%c%d", 'A' + r - 1, c);
            switch (p->plate.state[r - 1][c - 1]) {
            case BIOTEK_WELL_VALUE:
                json_object_set_new(values, name, json_real(p->plate.value[r - 1][c - 1]));
                break;
            case BIOTEK_WELL_NOVALUE:
                json_object_set_new(values, name, json_null());
                break;
            default:
                json_decref(values);
                lab_drv_error_set(e, LAB_EPROTO, NULL, "result body: no value for well %s", name);
                return e->code;
            }
        }
    json_object_set_new(p->result, "values", values);
    json_object_set_new(p->result, "wavelength_nm", json_integer(p->wavelength_nm));
    json_object_set_new(p->result, "plate_wells", json_integer(p->rows * p->cols));
    return 0;
}

/* The status after a parameter, or the "0000" of a run: nothing or "0000" is done, a 4-digit
 * code is the reader's refusal (kept as its code), the 37 digits only answer a read definition
 * (their fields are not documented; PyLabRobot does not look at them either). */
static int bt_status_ok(const biotek_frame_t *f, char letter, lab_drv_error_t *e)
{
    char shown[96];
    size_t bad = 0;
    const char *name = bt_name(letter);
    int kind = biotek_parse_status(f->payload, f->len, &bad);
    lab_stream_printable(f->payload, f->len, shown, sizeof shown);
    switch (kind) {
    case BIOTEK_STATUS_EMPTY:
    case BIOTEK_STATUS_OK:
        /* A run answers "\x06" "0000" and nothing else: its body follows. */
        if (letter != 'O' || (kind == BIOTEK_STATUS_OK && f->ack))
            return 0;
        break;
    case BIOTEK_STATUS_READ:
        if (letter == 'D')
            return 0;
        break;
    case BIOTEK_STATUS_CODE:
        lab_drv_error_set(e, LAB_EDEVICE, shown, "'%c' (%s) answered status %s", letter, name,
                          shown);
        return e->code;
    default:
        if (bad < f->len)
            lab_drv_error_set(e, LAB_EPROTO, NULL,
                              "'%c' (%s): unexpected byte 0x%02x at offset %zu of reply '%s'",
                              letter, name, (unsigned char)f->payload[bad], bad, shown);
        else
            lab_drv_error_set(e, LAB_EPROTO, NULL,
                              "'%c' (%s): a status of %zu digits '%s' (4, or 37 after a read "
                              "definition)",
                              letter, name, f->len, shown);
        return e->code;
    }
    lab_drv_error_set(e, LAB_EPROTO, NULL, "'%c' (%s): unexpected reply '%s'%s", letter, name,
                      shown, f->ack ? "" : " without ACK");
    return e->code;
}

/* set_temperature: PyLabRobot refuses a set point the reader would have to cool to reach when
 * it cannot cool; checked against the temperature just read, before 'g' is sent. */
static int bt_check_setpoint(bt_t *p, double celsius, lab_drv_error_t *e)
{
    if (!p->setpoint_pending || p->can_cool || p->setpoint == 0 || p->setpoint >= celsius)
        return 0;
    lab_drv_error_set(e, LAB_ESTATE, NULL,
                      "set point %.2f degC is below the current %.2f degC and this reader cannot "
                      "cool (incubation = heat); switch incubation off (null) instead",
                      p->setpoint, celsius);
    return e->code;
}

/* The step's reply frame; 0 to go on, or e filled and its code returned (so do the helpers
 * above). */
static int bt_on_reply(lab_driver_t *d, const biotek_frame_t *f, lab_drv_error_t *e)
{
    bt_t *p = lab_drv_priv(d);
    const bt_step_t *s = bt_step(p);
    char shown[96], part[32], version[32];
    double celsius;
    lab_stream_printable(f->payload, f->len, shown, sizeof shown);
    switch (s->letter) {
    case 'e':
        if (biotek_parse_version(f->payload, f->len, part, sizeof part, version, sizeof version) !=
            LAB_OK)
            break;
        lab_drv_set_info(d, "part_number", json_string(part));
        lab_drv_set_info(d, "version", json_string(version));
        return 0;
    case 'C':
        if (biotek_parse_serial(f->payload, f->len, part, sizeof part) != LAB_OK)
            break;
        lab_drv_set_info(d, "serial_number", json_string(part));
        return 0;
    case 'h':
        if (biotek_parse_temperature(f->payload, f->len, &celsius) != LAB_OK)
            break;
        json_object_set_new(p->result, "temperature_c", json_real(round(celsius * 100) / 100));
        return bt_check_setpoint(p, celsius, e);
    default:
        return bt_status_ok(f, s->letter, e);
    }
    lab_drv_error_set(e, LAB_EPROTO, NULL, "'%c' (%s): unexpected reply '%s'", s->letter,
                      bt_name(s->letter), shown);
    return e->code;
}

/* A step's error: a refusal leaves the exchange in step; anything else resynchronises, and a
 * run that may have started is aborted. */
static void bt_fail(bt_t *p, const lab_drv_error_t *e)
{
    if (e->code == LAB_EDEVICE || e->code == LAB_ESTATE) {
        lab_stream_end(&p->st, e);
        return;
    }
    if (bt_step(p)->letter == 'O')
        lab_stream_write(&p->st, "x", 1);
    lab_stream_end_resync(&p->st, e);
}

/* A reply to the step in flight: the ACK of its letter, its status, or the body of a read. */
static void bt_reply_cb(lab_stream_t *st, const char *data, size_t len)
{
    lab_driver_t *d = lab_stream_driver(st);
    bt_t *p = lab_drv_priv(d);
    const bt_step_t *s = bt_step(p);
    lab_drv_error_t e;
    int ack = len > 0 && data[0] == BIOTEK_ACK;
    biotek_frame_t f = {ack, data + ack, len - (size_t)ack};
    switch (p->phase) {
    case BT_WAIT_ACK:
        /* The reader takes the parameter now; its answer is an ETX frame. */
        biotek_rx_expect(&p->rx, BIOTEK_EXPECT_ETX);
        if (lab_stream_write(st, s->param, s->param_len) < 0) {
            lab_stream_end(st, lab_drv_error_set(&e, LAB_EOFFLINE, NULL,
                                                 "cannot send the parameter of '%c'", s->letter));
            return;
        }
        p->phase = BT_WAIT_REPLY;
        lab_stream_expect(st, bt_reply_ms(d, s->letter, BT_WAIT_REPLY));
        return;
    case BT_WAIT_REPLY:
        if (bt_on_reply(d, &f, &e) < 0) {
            bt_fail(p, &e);
            return;
        }
        if (s->letter == 'O') {
            /* Running: the body follows when the plate is read, in lab time. */
            uint64_t ms = lab_drv_lab_ms(d, lab_drv_double(d, "read_timeout_s"));
            p->phase = BT_WAIT_BODY;
            lab_stream_expect(st, ms < BT_REPLY_MS ? BT_REPLY_MS : (unsigned)ms);
            return;
        }
        bt_advance(d);
        return;
    case BT_WAIT_BODY:
        if (bt_take_body(d, &f, &e) < 0) {
            lab_stream_end_resync(st, &e);
            return;
        }
        bt_advance(d);
        return;
    }
}

/* A reply timeout: the driver's words for it; a step the result can do without is let go. */
static void bt_timeout_cb(lab_stream_t *st, lab_drv_error_t *e)
{
    bt_t *p = lab_drv_priv(lab_stream_driver(st));
    const bt_step_t *s = bt_step(p);
    static const char *const waits[] = {"ACK", "reply", "result"};
    if (s->letter == 'O')
        lab_stream_write(st, "x", 1);
    p->lost_optional = p->cur == &p->op && s->optional;
    lab_drv_error_set(e, LAB_ETIMEDOUT, NULL,
                      "no %s to '%c' (%s); the reader does not answer a command it cannot "
                      "execute",
                      waits[p->phase], s->letter, bt_name(s->letter));
}

static void bt_begin_cb(lab_stream_t *st, lab_stream_owner_t owner)
{
    bt_t *p = lab_drv_priv(lab_stream_driver(st));
    if (owner == LAB_STREAM_CONNECT) {
        p->conn.n = 0;
        bt_step_add(&p->conn, 'e', NULL, 0);
        bt_step_add(&p->conn, 'C', NULL, 0);
        p->cur = &p->conn;
    } else {
        p->cur = &p->op;
    }
    p->cur->i = 0;
    p->lost_optional = false;
    bt_send(lab_stream_driver(st));
}

static void bt_end_cb(lab_stream_t *st, lab_stream_owner_t owner, const lab_drv_error_t *err)
{
    lab_driver_t *d = lab_stream_driver(st);
    bt_t *p = lab_drv_priv(d);
    if (owner == LAB_STREAM_CONNECT) {
        if (!err)
            lab_drv_set_state(d, LAB_INST_IDLE, NULL);
        return; /* otherwise the base reports offline and connects again */
    }
    json_t *result = p->result;
    p->result = NULL;
    if (err && err->code == LAB_ETIMEDOUT && p->lost_optional) {
        /* Only the temperature after a read is optional: the values stand without it, as
         * PyLabRobot's nan. The base resynchronises all the same. */
        log_info("biotek", "instrument=%s %s; result without it", lab_driver_id(d), err->text);
        json_object_set_new(result, "temperature_c", json_null());
        err = NULL;
    }
    p->lost_optional = false;
    if (err) {
        json_decref(result);
        lab_drv_done(d, err, NULL);
    } else {
        lab_drv_done(d, NULL, result);
    }
}

/* ---- the framer: ACK, or a frame up to ETX, as the step in flight expects ---- */

static int bt_frame_cb(void *ud, const biotek_frame_t *f, int err)
{
    lab_stream_t *st = ud;
    bt_t *p = lab_drv_priv(lab_stream_driver(st));
    if (err == LAB_EGARBAGE) {
        /* Noise before an ACK is no answer to anything: the ACK may still come. Giving up here
         * would leave the reader waiting for a parameter and take our next letter for it. */
        log_warn("biotek", "instrument=%s noise before an ACK skipped",
                 lab_driver_id(lab_stream_driver(st)));
        return 0;
    }
    if (err) {
        lab_stream_garbage(st, "", 0, lab_strerror(err));
        return 1;
    }
    if (p->rx.expect == BIOTEK_EXPECT_ACK)
        lab_stream_reply(st, "\x06", 1);
    else
        lab_stream_reply(st, f->payload - f->ack, f->len + (size_t)f->ack);
    /* Stop after each frame: the reply may change what the next byte is expected to be. */
    return 1;
}

static void bt_feed_cb(lab_stream_t *st, const uint8_t *data, size_t len)
{
    bt_t *p = lab_drv_priv(lab_stream_driver(st));
    size_t off = 0;
    while (off < len)
        off += biotek_rx_feed(&p->rx, data + off, len - off, bt_frame_cb, st);
}

static void bt_reset_cb(lab_stream_t *st)
{
    bt_t *p = lab_drv_priv(lab_stream_driver(st));
    biotek_rx_expect(&p->rx, p->rx.expect);
}

static const lab_stream_ops_t bt_stream_ops = {
    .feed = bt_feed_cb,
    .reset = bt_reset_cb,
    .begin = bt_begin_cb,
    .reply = bt_reply_cb,
    .end = bt_end_cb,
    .timeout = bt_timeout_cb,
};

/* ---- driver ops ---- */

/* mm to the reader's 0.01 mm. */
static int bt_hundredths(double mm)
{
    return (int)lround(mm * 100);
}

/* The plate geometry from the keys; a well outside the plate refuses the instrument. */
static int bt_geometry(lab_driver_t *d, char *err, size_t errlen)
{
    bt_t *p = lab_drv_priv(d);
    bool big = p->rows == 16;
    double a1x = lab_drv_double(d, "plate_a1_x_mm"), a1y = lab_drv_double(d, "plate_a1_y_mm");
    double pitch = lab_drv_double(d, "plate_pitch_mm");
    double sx = lab_drv_double(d, "plate_size_x_mm"), sy = lab_drv_double(d, "plate_size_y_mm");
    if (a1x == 0)
        a1x = big ? 12.13 : 14.38;
    if (a1y == 0)
        a1y = big ? 8.99 : 11.24;
    if (pitch == 0)
        pitch = big ? 4.5 : 9;
    double lastx = a1x + pitch * (p->cols - 1), lasty = a1y + pitch * (p->rows - 1);
    if (lastx >= sx || lasty >= sy) {
        snprintf(err, errlen,
                 "plate geometry: well %c%d at x %.2f, y %.2f mm lies outside the %.2f x %.2f mm "
                 "plate",
                 'A' + p->rows - 1, p->cols, lastx, lasty, sx, sy);
        return LAB_EINVAL;
    }
    p->geometry = (biotek_geometry_t){
        .rows = p->rows,
        .cols = p->cols,
        .a1_y = bt_hundredths(a1y),
        .last_y = bt_hundredths(lasty),
        .a1_x = bt_hundredths(a1x),
        .last_x = bt_hundredths(lastx),
        .size_y = bt_hundredths(sy),
        .size_x = bt_hundredths(sx),
        .size_z = bt_hundredths(lab_drv_double(d, "plate_height_mm")),
    };
    char wire[64];
    if (biotek_encode_geometry(&p->geometry, wire, sizeof wire) <= 0) {
        snprintf(err, errlen, "plate geometry: a length does not fit the reader's fields");
        return LAB_EINVAL;
    }
    return 0;
}

static int bt_open(lab_driver_t *d, char *err, size_t errlen)
{
    bt_t *p = lab_drv_priv(d);
    lab_stream_conf_t conf = {
        .tag = "biotek",
        .reply_ms = BT_REPLY_MS,
        .quiet_ms = BT_QUIET_MS,
        .retry_ms = BT_RETRY_MS,
    };
    bool big = lab_drv_enum(d, "plate_wells") == 1;
    p->rows = big ? 16 : 8;
    p->cols = big ? 24 : 12;
    p->can_cool = lab_drv_enum(d, "incubation") == 1;
    p->cur = &p->conn;
    biotek_rx_init(&p->rx);
    /* The stream first: a refused configuration is closed like any instrument. */
    int rc = lab_stream_init(&p->st, d, &bt_stream_ops, &conf, err, errlen);
    return rc ? rc : bt_geometry(d, err, errlen);
}

static void bt_start(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    lab_stream_start(&p->st);
}

static void bt_stop(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    bt_abort_read(p);
    lab_stream_stop(&p->st);
    json_decref(p->result);
    p->result = NULL;
}

static void bt_close(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    bt_abort_read(p);
    json_decref(p->result);
    p->result = NULL;
    lab_stream_close(&p->st);
}

static void bt_refuse(lab_driver_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parameters the schema cannot judge (they depend on the configured plate): nothing is sent. */
static void bt_refuse(lab_driver_t *d, const char *fmt, ...)
{
    bt_t *p = lab_drv_priv(d);
    lab_drv_error_t e = {.code = LAB_EINVAL};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.text, sizeof e.text, fmt, ap);
    va_end(ap);
    lab_stream_refuse(&p->st, &e);
}

/* The wells against the configured plate, before anything is queued. */
static void bt_check(lab_driver_t *d, const lab_drv_action_t *a, json_t *params,
                     struct lab_jerrs *errs)
{
    bt_t *p = lab_drv_priv(d);
    const char *wells = json_string_value(json_object_get(params, "wells"));
    if (strcmp(a->name, "read_absorbance") != 0 || !wells)
        return;
    int r0 = 0, c0 = 0, r1 = 0, c1 = 0;
    const char *colon = strchr(wells, ':');
    bt_well_parse(wells, &r0, &c0);
    if (colon)
        bt_well_parse(colon + 1, &r1, &c1);
    else
        r1 = r0, c1 = c0;
    if (r0 > p->rows || r1 > p->rows || c0 > p->cols || c1 > p->cols)
        lab_jerrs_add(errs, "/wells", "%s is outside the %d-well plate (A1:%c%d)", wells,
                      p->rows * p->cols, 'A' + p->rows - 1, p->cols);
}

/* The read of a rectangle: plate geometry, definition, run, then the temperature (as PyLabRobot
 * does; a temperature that does not come leaves the values and gives null). */
static void bt_plan_read(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    bt_t *p = lab_drv_priv(d);
    const char *wells = json_string_value(json_object_get(params, "wells"));
    biotek_rect_t r = {1, 1, p->rows, p->cols};
    if (wells) {
        const char *colon = strchr(wells, ':');
        bt_well_parse(wells, &r.row0, &r.col0);
        if (colon)
            bt_well_parse(colon + 1, &r.row1, &r.col1);
        else
            r.row1 = r.row0, r.col1 = r.col0;
        /* "H12:A1" names the same rectangle as "A1:H12". */
        int t;
        if (r.row0 > r.row1)
            t = r.row0, r.row0 = r.row1, r.row1 = t;
        if (r.col0 > r.col1)
            t = r.col0, r.col0 = r.col1, r.col1 = t;
        if (r.row1 > p->rows || r.col1 > p->cols) {
            bt_refuse(d, "%s: params/wells: %s is outside the %d-well plate (A1:%c%d)", a->name,
                      wells, p->rows * p->cols, 'A' + p->rows - 1, p->cols);
            return;
        }
    }
    int nm = (int)json_integer_value(json_object_get(params, "wavelength_nm"));
    char def[96], geo[64];
    int n = biotek_encode_absorbance(&r, nm, def, sizeof def);
    int g = biotek_encode_geometry(&p->geometry, geo, sizeof geo);
    if (n <= 0 || g <= 0) {
        bt_refuse(d, "%s: %s: %s", a->name, n <= 0 ? "read definition" : "plate geometry",
                  lab_strerror(n <= 0 ? n : g));
        return;
    }
    p->rect = r;
    p->wavelength_nm = nm;
    bt_step_add(&p->op, 'y', geo, (size_t)g);
    bt_step_add(&p->op, 'D', def, (size_t)n);
    bt_step_add(&p->op, 'O', NULL, 0);
    bt_step_add(&p->op, 'h', NULL, 0);
    p->op.steps[p->op.n - 1].optional = true;
    lab_stream_run(&p->st);
}

static void bt_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    bt_t *p = lab_drv_priv(d);
    p->op.n = 0;
    p->setpoint_pending = false;
    json_decref(p->result);
    p->result = json_object();
    if (strcmp(a->name, "read_absorbance") == 0) {
        bt_plan_read(d, a, params);
        return;
    }
    bt_step_add(&p->op, 'h', NULL, 0); /* every result carries the reader's temperature */
    if (strcmp(a->name, "set_temperature") == 0) {
        json_t *t = json_object_get(params, "temperature_c");
        char sp[8];
        p->setpoint = json_is_number(t) ? json_number_value(t) : 0;
        int n = biotek_encode_setpoint(p->setpoint, sp, sizeof sp);
        if (n <= 0) {
            bt_refuse(d, "%s: params/temperature_c: %s", a->name, lab_strerror(n));
            return;
        }
        p->setpoint_pending = true;
        bt_step_add(&p->op, 'g', sp, (size_t)n);
        json_object_set_new(p->result, "setpoint_c",
                            p->setpoint ? json_real(p->setpoint) : json_null());
    }
    lab_stream_run(&p->st);
}

static void bt_abort(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    bt_abort_read(p);
    lab_stream_abort(&p->st);
    json_decref(p->result);
    p->result = NULL;
}

/* What its actions do in a workflow step (the scheduler asks by role, never by name). */
static const lab_drv_role_action_t bt_roles[] = {
    {LAB_DRV_ROLE_READ, "read_absorbance"},
    {LAB_DRV_ROLE_SET_TEMP, "set_temperature"},
    {LAB_DRV_ROLE_NONE, NULL},
};

const lab_driver_ops_t lab_driver_biotek_synergy = {
    .name = "biotek-synergy",
    .kind = "plate_reader",
    .model = "BioTek Synergy / Cytation",
    .keys = bt_keys,
    .actions = bt_actions,
    .roles = bt_roles,
    .poll_action = "status",
    .poll_default_s = 10,
    .priv_size = sizeof(bt_t),
    .open = bt_open,
    .start = bt_start,
    .stop = bt_stop,
    .close = bt_close,
    .invoke = bt_invoke,
    .check = bt_check,
    .abort = bt_abort,
};
