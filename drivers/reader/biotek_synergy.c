/* biotek-synergy: BioTek Synergy / Cytation plate readers over their single-character serial
 * protocol (the codec is protocols/biotek.h), 9600 8N2 with RTS/CTS as PyLabRobot opens them.
 * The driver owns the exchange: a command letter, the lone ACK of a command that takes a
 * parameter, the parameter, and the ETX-framed status that answers it (no ACK: nothing for the
 * plate geometry, 37 digits for a read definition). A read is the plate geometry ('y'), the read
 * definition ('D'), the run ('O', "\x06" "0000" ETX) and its body, then the temperature ('h').
 * On connect it asks the version ('e') and serial number ('C'); the instrument is idle once
 * both are answered.
 *
 * The reader does not answer a command it cannot execute: a refused command is a timeout here,
 * not a device error (labloop-sim's injected "error" is exactly that). After a lost reply the
 * driver drops late bytes for a moment; after a lost read it sends abort ('x', unanswered). */
#include "drivers/driver.h"
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
#define BT_QUIET_MS 250 /* after a lost or garbled reply, late bytes are dropped this long */
#define BT_RETRY_MS 2000 /* between connection attempts on an open link */

typedef enum bt_owner { BT_NONE = 0, BT_CONNECT, BT_OP } bt_owner_t;
/* What the step in progress waits for. */
typedef enum bt_phase { BT_WAIT_ACK, BT_WAIT_REPLY, BT_WAIT_BODY } bt_phase_t;

typedef struct bt_step {
    char letter;
    char param[96]; /* sent after the reader's ACK; empty: none */
    size_t param_len;
    bool optional; /* a timeout gives null, not an error (the temperature after a read) */
} bt_step_t;

typedef struct bt {
    lab_transport_t *t;
    biotek_rx_t rx;
    uv_timer_t reply_timer, wait_timer, retry_timer;
    int timers_open;
    int rows, cols;
    bool connected; /* version read on this connection */
    bt_owner_t owner;
    bt_step_t steps[BT_STEPS_MAX];
    int n, i;
    bt_phase_t phase;
    bool awaiting;
    uint64_t quiet_until;
    json_t *result;
    biotek_rect_t rect; /* of the read in progress */
    int wavelength_nm;
    lab_drv_error_t later;
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
static void bt_advance(lab_driver_t *d);
static void bt_start_connect(lab_driver_t *d);

/* ---- helpers ---- */

static void bt_printable(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    out[o] = '\0';
}

static void bt_step_add(bt_t *p, char letter, const char *param, size_t len)
{
    if (p->n >= BT_STEPS_MAX || len >= sizeof p->steps[0].param)
        return;
    bt_step_t *s = &p->steps[p->n++];
    s->letter = letter;
    memcpy(s->param, param ? param : "", len);
    s->param[len] = '\0';
    s->param_len = len;
    s->optional = false;
}

static void bt_forget(bt_t *p)
{
    if (p->awaiting)
        p->quiet_until = uv_now(p->reply_timer.loop) + BT_QUIET_MS;
    uv_timer_stop(&p->reply_timer);
    uv_timer_stop(&p->wait_timer);
    p->owner = BT_NONE;
    p->awaiting = false;
    json_decref(p->result);
    p->result = NULL;
}

/* A read the driver stopped waiting for: the reader is told to give up (abort is unanswered). */
static void bt_abort_read(bt_t *p)
{
    if (p->awaiting && p->steps[p->i].letter == 'O' && p->t &&
        lab_transport_state(p->t) == LAB_TRANSPORT_OPEN)
        lab_transport_write(p->t, "x", 1, NULL, NULL);
}

/* "A1" -> row 1, col 1 (1-based). */
static void bt_well_parse(const char *s, int *row, int *col)
{
    *row = toupper((unsigned char)s[0]) - 'A' + 1;
    *col = atoi(s + 1);
}

/* ---- the end of a sequence ---- */

static void bt_retry_cb(uv_timer_t *t)
{
    lab_driver_t *d = t->data;
    bt_t *p = lab_drv_priv(d);
    if (p->t && lab_transport_state(p->t) == LAB_TRANSPORT_OPEN && !p->connected &&
        p->owner == BT_NONE)
        bt_start_connect(d);
}

static void bt_end(lab_driver_t *d, const lab_drv_error_t *err)
{
    bt_t *p = lab_drv_priv(d);
    bt_owner_t owner = p->owner;
    json_t *result = p->result;
    p->result = NULL;
    p->owner = BT_NONE;
    p->awaiting = false;
    uv_timer_stop(&p->reply_timer);
    uv_timer_stop(&p->wait_timer);
    if (err && err->code != LAB_DRV_EOFFLINE && err->code != LAB_DRV_EINTERNAL &&
        err->code != LAB_DRV_EPARAM)
        p->quiet_until = uv_now(lab_drv_loop(d)) + BT_QUIET_MS;
    if (owner == BT_CONNECT) {
        json_decref(result);
        if (!err) {
            p->connected = true;
            lab_drv_set_state(d, LAB_INST_IDLE, NULL);
            return;
        }
        lab_drv_error_t e = *err;
        snprintf(e.text, sizeof e.text, "connecting: %.230s", err->text);
        lab_drv_set_state(d, LAB_INST_OFFLINE, &e);
        uv_timer_start(&p->retry_timer, bt_retry_cb, BT_RETRY_MS, 0);
        return;
    }
    if (owner != BT_OP) {
        json_decref(result);
        return;
    }
    if (err) {
        json_decref(result);
        lab_drv_done(d, err, NULL);
    } else {
        lab_drv_done(d, NULL, result);
    }
}

static void bt_later_cb(uv_timer_t *t)
{
    lab_driver_t *d = t->data;
    bt_t *p = lab_drv_priv(d);
    bt_end(d, &p->later);
}

/* Ends the sequence from the loop: never from inside invoke or a write. */
static void bt_end_later(lab_driver_t *d, const lab_drv_error_t *err)
{
    bt_t *p = lab_drv_priv(d);
    p->later = *err;
    uv_timer_stop(&p->reply_timer);
    uv_timer_start(&p->wait_timer, bt_later_cb, 0, 0);
}

/* ---- the exchange ---- */

static void bt_reply_timeout(uv_timer_t *t)
{
    lab_driver_t *d = t->data;
    bt_t *p = lab_drv_priv(d);
    const bt_step_t *s = &p->steps[p->i];
    static const char *const waits[] = {"ACK", "reply", "result"};
    lab_drv_error_t e;
    bt_abort_read(p);
    p->awaiting = false;
    if (s->optional) {
        /* Late bytes of the lost reply must not be taken for the next one. */
        p->quiet_until = uv_now(t->loop) + BT_QUIET_MS;
        log_info("biotek", "instrument=%s no reply to '%c', result without it", lab_driver_id(d),
                 s->letter);
        if (s->letter == 'h')
            json_object_set_new(p->result, "temperature_c", json_null());
        bt_advance(d);
        return;
    }
    lab_drv_error_set(&e, LAB_DRV_ETIMEOUT, NULL,
                      "no %s to '%c' (%s); the reader does not answer a command it cannot "
                      "execute",
                      waits[p->phase], s->letter,
                      biotek_cmd_info(s->letter) ? biotek_cmd_info(s->letter)->name : "?");
    bt_end(d, &e);
}

static void bt_wait(lab_driver_t *d, bt_phase_t phase, uint64_t ms)
{
    bt_t *p = lab_drv_priv(d);
    p->phase = phase;
    p->awaiting = true;
    uv_timer_start(&p->reply_timer, bt_reply_timeout, ms, 0);
}

static void bt_wait_cb(uv_timer_t *t)
{
    bt_send(t->data);
}

/* How long a reply may take: short for an ACK, a query or the plate geometry (PyLabRobot waits
 * 1 s for those), BT_SLOW_S lab seconds for what moves or configures the reader. */
static uint64_t bt_reply_ms(lab_driver_t *d, char letter, bt_phase_t phase)
{
    if (phase == BT_WAIT_ACK || strchr("eChy", letter))
        return BT_REPLY_MS;
    uint64_t ms = lab_drv_lab_ms(d, BT_SLOW_S);
    return ms < BT_REPLY_MS ? BT_REPLY_MS : ms;
}

static void bt_send(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    uint64_t now = uv_now(lab_drv_loop(d));
    if (now < p->quiet_until) {
        uv_timer_start(&p->wait_timer, bt_wait_cb, p->quiet_until - now, 0);
        return;
    }
    const bt_step_t *s = &p->steps[p->i];
    const biotek_cmd_info_t *info = biotek_cmd_info(s->letter);
    bool param = info && info->param != BIOTEK_PARAM_NONE;
    lab_drv_error_t e;
    biotek_rx_expect(&p->rx, param ? BIOTEK_EXPECT_ACK : BIOTEK_EXPECT_ETX);
    int rc = lab_transport_write(p->t, &s->letter, 1, NULL, NULL);
    if (rc < 0) {
        bt_end_later(d, lab_drv_error_set(&e, LAB_DRV_EOFFLINE, NULL, "cannot send '%c': %s",
                                          s->letter, lab_strerror(rc)));
        return;
    }
    bt_phase_t phase = param ? BT_WAIT_ACK : BT_WAIT_REPLY;
    bt_wait(d, phase, bt_reply_ms(d, s->letter, phase));
}

static void bt_advance(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    if (++p->i >= p->n) {
        bt_end(d, NULL);
        return;
    }
    bt_send(d);
}

static void bt_begin(lab_driver_t *d, bt_owner_t owner)
{
    bt_t *p = lab_drv_priv(d);
    p->owner = owner;
    p->i = 0;
    if (!p->result)
        p->result = json_object();
    bt_send(d);
}

/* The body of a read: the values of the wells asked for, by name. */
static int bt_take_body(lab_driver_t *d, const biotek_frame_t *f, lab_drv_error_t *e)
{
    bt_t *p = lab_drv_priv(d);
    int rc = biotek_parse_body(f->payload, f->len, p->rows, p->cols, &p->plate);
    if (rc != PROTO_OK) {
        lab_drv_error_set(e, LAB_DRV_EPROTO, NULL, "result body: %s at byte %zu",
                          proto_strerror(rc), p->plate.err_at);
        return -1;
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
                lab_drv_error_set(e, LAB_DRV_EPROTO, NULL, "result body: no value for well %s",
                                  name);
                return -1;
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
    const char *name = biotek_cmd_info(letter)->name;
    int kind = biotek_parse_status(f->payload, f->len, &bad);
    bt_printable(f->payload, f->len, shown, sizeof shown);
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
        lab_drv_error_set(e, LAB_DRV_EDEVICE, shown, "'%c' (%s) answered status %s", letter, name,
                          shown);
        return -1;
    default:
        if (bad < f->len)
            lab_drv_error_set(e, LAB_DRV_EPROTO, NULL,
                              "'%c' (%s): unexpected byte 0x%02x at offset %zu of reply '%s'",
                              letter, name, (unsigned char)f->payload[bad], bad, shown);
        else
            lab_drv_error_set(e, LAB_DRV_EPROTO, NULL,
                              "'%c' (%s): a status of %zu digits '%s' (4, or 37 after a read "
                              "definition)",
                              letter, name, f->len, shown);
        return -1;
    }
    lab_drv_error_set(e, LAB_DRV_EPROTO, NULL, "'%c' (%s): unexpected reply '%s'%s", letter, name,
                      shown, f->ack ? "" : " without ACK");
    return -1;
}

/* set_temperature: PyLabRobot refuses a set point the reader would have to cool to reach when
 * it cannot cool; checked against the temperature just read, before 'g' is sent. */
static int bt_check_setpoint(bt_t *p, double celsius, lab_drv_error_t *e)
{
    if (!p->setpoint_pending || p->can_cool || p->setpoint == 0 || p->setpoint >= celsius)
        return 0;
    lab_drv_error_set(e, LAB_DRV_ESTATE, NULL,
                      "set point %.2f degC is below the current %.2f degC and this reader cannot "
                      "cool (incubation = heat); switch incubation off (null) instead",
                      p->setpoint, celsius);
    return -1;
}

/* The step's reply frame; 0 to go on, -1 with e filled. */
static int bt_on_reply(lab_driver_t *d, const biotek_frame_t *f, lab_drv_error_t *e)
{
    bt_t *p = lab_drv_priv(d);
    const bt_step_t *s = &p->steps[p->i];
    char shown[96], part[32], version[32];
    double celsius;
    bt_printable(f->payload, f->len, shown, sizeof shown);
    switch (s->letter) {
    case 'e':
        if (biotek_parse_version(f->payload, f->len, part, sizeof part, version, sizeof version) !=
            PROTO_OK)
            break;
        lab_drv_set_info(d, "part_number", json_string(part));
        lab_drv_set_info(d, "version", json_string(version));
        return 0;
    case 'C':
        if (biotek_parse_serial(f->payload, f->len, part, sizeof part) != PROTO_OK)
            break;
        lab_drv_set_info(d, "serial_number", json_string(part));
        return 0;
    case 'h':
        if (biotek_parse_temperature(f->payload, f->len, &celsius) != PROTO_OK)
            break;
        json_object_set_new(p->result, "temperature_c", json_real(round(celsius * 100) / 100));
        return bt_check_setpoint(p, celsius, e);
    default:
        return bt_status_ok(f, s->letter, e);
    }
    lab_drv_error_set(e, LAB_DRV_EPROTO, NULL, "'%c' (%s): unexpected reply '%s'", s->letter,
                      biotek_cmd_info(s->letter)->name, shown);
    return -1;
}

static int bt_frame_cb(void *ud, const biotek_frame_t *f, int err)
{
    lab_driver_t *d = ud;
    bt_t *p = lab_drv_priv(d);
    lab_drv_error_t e;
    if (!p->awaiting || uv_now(lab_drv_loop(d)) < p->quiet_until) {
        log_debug("biotek", "instrument=%s dropped %s", lab_driver_id(d),
                  err ? proto_strerror(err) : "frame");
        return 0;
    }
    const bt_step_t *s = &p->steps[p->i];
    if (err == PROTO_EGARBAGE && p->phase == BT_WAIT_ACK) {
        /* Noise before the ACK is no answer to anything: the ACK may still come. Giving up here
         * would leave the reader waiting for a parameter and take our next letter for it. */
        log_warn("biotek", "instrument=%s noise before the ACK to '%c' skipped", lab_driver_id(d),
                 s->letter);
        return 0;
    }
    if (err) {
        p->awaiting = false;
        bt_abort_read(p);
        bt_end(d, lab_drv_error_set(&e, LAB_DRV_EPROTO, NULL, "'%c' (%s): %s", s->letter,
                                    biotek_cmd_info(s->letter)->name, proto_strerror(err)));
        return 1;
    }
    switch (p->phase) {
    case BT_WAIT_ACK:
        /* The reader takes the parameter now; its answer is an ETX frame. */
        uv_timer_stop(&p->reply_timer);
        biotek_rx_expect(&p->rx, BIOTEK_EXPECT_ETX);
        if (lab_transport_write(p->t, s->param, s->param_len, NULL, NULL) < 0) {
            bt_end(d, lab_drv_error_set(&e, LAB_DRV_EOFFLINE, NULL,
                                        "cannot send the parameter "
                                        "of '%c'",
                                        s->letter));
            return 1;
        }
        bt_wait(d, BT_WAIT_REPLY, bt_reply_ms(d, s->letter, BT_WAIT_REPLY));
        return 1;
    case BT_WAIT_REPLY:
        uv_timer_stop(&p->reply_timer);
        p->awaiting = false;
        if (bt_on_reply(d, f, &e) < 0) {
            bt_end(d, &e);
            return 1;
        }
        if (s->letter == 'O') {
            /* Running: the body follows when the plate is read, in lab time. */
            uint64_t ms = lab_drv_lab_ms(d, lab_drv_double(d, "read_timeout_s"));
            bt_wait(d, BT_WAIT_BODY, ms < BT_REPLY_MS ? BT_REPLY_MS : ms);
            return 0;
        }
        bt_advance(d);
        return 1;
    case BT_WAIT_BODY:
        uv_timer_stop(&p->reply_timer);
        p->awaiting = false;
        if (bt_take_body(d, f, &e) < 0) {
            bt_end(d, &e);
            return 1;
        }
        bt_advance(d);
        return 1;
    }
    return 0;
}

/* ---- the link ---- */

static void bt_start_connect(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    p->n = 0;
    p->setpoint_pending = false;
    bt_step_add(p, 'e', NULL, 0);
    bt_step_add(p, 'C', NULL, 0);
    bt_begin(d, BT_CONNECT);
}

static void bt_on_data(lab_transport_t *t, const uint8_t *data, size_t len, void *user)
{
    (void)t;
    lab_driver_t *d = user;
    bt_t *p = lab_drv_priv(d);
    size_t off = 0;
    while (off < len && p->t)
        off += biotek_rx_feed(&p->rx, data + off, len - off, bt_frame_cb, d);
}

static void bt_on_state(lab_transport_t *t, lab_transport_state_t state, int err,
                        const char *reason, void *user)
{
    (void)t;
    lab_driver_t *d = user;
    bt_t *p = lab_drv_priv(d);
    lab_drv_error_t e;
    if (state == LAB_TRANSPORT_OPEN) {
        biotek_rx_init(&p->rx);
        p->connected = false;
        p->quiet_until = 0;
        bt_start_connect(d);
    } else if (state == LAB_TRANSPORT_OFFLINE) {
        bt_forget(p);
        uv_timer_stop(&p->retry_timer);
        p->connected = false;
        lab_drv_set_state(d, LAB_INST_OFFLINE,
                          lab_drv_error_set(&e, LAB_DRV_EOFFLINE, NULL, "%s",
                                            reason && *reason ? reason : lab_strerror(err)));
    }
}

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
    /* The timers first: a refused configuration is closed like any instrument. */
    uv_timer_t *timers[] = {&p->reply_timer, &p->wait_timer, &p->retry_timer};
    for (int i = 0; i < 3; i++) {
        uv_timer_init(lab_drv_loop(d), timers[i]);
        timers[i]->data = d;
        p->timers_open++;
    }
    bool big = lab_drv_enum(d, "plate_wells") == 1;
    p->rows = big ? 16 : 8;
    p->cols = big ? 24 : 12;
    p->can_cool = lab_drv_enum(d, "incubation") == 1;
    int rc = bt_geometry(d, err, errlen);
    if (rc)
        return rc;
    biotek_rx_init(&p->rx);
    lab_transport_settings_t s;
    lab_drv_serial_settings(d, &s);
    lab_transport_callbacks_t cb = {bt_on_data, bt_on_state, d};
    return lab_transport_new(lab_drv_loop(d), &s, lab_driver_id(d), &cb, &p->t, err, errlen);
}

static void bt_start(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    lab_drv_set_state(d, LAB_INST_OFFLINE, NULL);
    lab_transport_open(p->t);
}

static void bt_stop(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    bt_abort_read(p);
    bt_forget(p);
    uv_timer_stop(&p->retry_timer);
    if (p->t)
        lab_transport_close(p->t);
    p->t = NULL;
    p->connected = false;
}

static void bt_timer_closed(uv_handle_t *h)
{
    lab_driver_t *d = h->data;
    bt_t *p = lab_drv_priv(d);
    if (--p->timers_open == 0)
        lab_drv_closed(d);
}

static void bt_close(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    bt_stop(d);
    if (p->timers_open == 0) {
        lab_drv_closed(d);
        return;
    }
    uv_close((uv_handle_t *)&p->reply_timer, bt_timer_closed);
    uv_close((uv_handle_t *)&p->wait_timer, bt_timer_closed);
    uv_close((uv_handle_t *)&p->retry_timer, bt_timer_closed);
}

static void bt_refuse(lab_driver_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parameters the schema cannot judge (they depend on the configured plate): nothing is sent. */
static void bt_refuse(lab_driver_t *d, const char *fmt, ...)
{
    bt_t *p = lab_drv_priv(d);
    lab_drv_error_t e = {.code = LAB_DRV_EPARAM};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.text, sizeof e.text, fmt, ap);
    va_end(ap);
    p->owner = BT_OP;
    bt_end_later(d, &e);
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
                  proto_strerror(n <= 0 ? n : g));
        return;
    }
    p->rect = r;
    p->wavelength_nm = nm;
    bt_step_add(p, 'y', geo, (size_t)g);
    bt_step_add(p, 'D', def, (size_t)n);
    bt_step_add(p, 'O', NULL, 0);
    bt_step_add(p, 'h', NULL, 0);
    p->steps[p->n - 1].optional = true;
    bt_begin(d, BT_OP);
}

static void bt_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    bt_t *p = lab_drv_priv(d);
    p->n = 0;
    p->setpoint_pending = false;
    json_decref(p->result);
    p->result = json_object();
    if (strcmp(a->name, "read_absorbance") == 0) {
        bt_plan_read(d, a, params);
        return;
    }
    bt_step_add(p, 'h', NULL, 0); /* every result carries the reader's temperature */
    if (strcmp(a->name, "set_temperature") == 0) {
        json_t *t = json_object_get(params, "temperature_c");
        char sp[8];
        p->setpoint = json_is_number(t) ? json_number_value(t) : 0;
        int n = biotek_encode_setpoint(p->setpoint, sp, sizeof sp);
        if (n <= 0) {
            bt_refuse(d, "%s: params/temperature_c: %s", a->name, proto_strerror(n));
            return;
        }
        p->setpoint_pending = true;
        bt_step_add(p, 'g', sp, (size_t)n);
        json_object_set_new(p->result, "setpoint_c",
                            p->setpoint ? json_real(p->setpoint) : json_null());
    }
    bt_begin(d, BT_OP);
}

static void bt_abort(lab_driver_t *d)
{
    bt_t *p = lab_drv_priv(d);
    bt_abort_read(p);
    bt_forget(p);
}

const lab_driver_ops_t lab_driver_biotek_synergy = {
    .name = "biotek-synergy",
    .kind = "plate_reader",
    .model = "BioTek Synergy / Cytation",
    .keys = bt_keys,
    .actions = bt_actions,
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
