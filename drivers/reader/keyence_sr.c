/* keyence-sr: Keyence SR/BL series barcode readers on RS-232 (the codec is protocols/keyence.h),
 * on the stream-driver base (drivers/stream.h), which owns the link, one command in flight and
 * resynchronisation. The reader sees one plate position: the config's at = names the instrument
 * whose plate it reads, for the scheduler's plate checks.
 *
 * Sequences. Connect: RMOTOR; MOTORON is idle, MOTOROFF connected but in fault (the scanner
 * cannot read until a person starts it), ER,RMOTOR,00 idle too (an SR camera reader has no
 * motor; 00 is its "undefined command"). scan: LON, then the reader's answers until one settles
 * the read: OK,LON (an SR in its default mode) waits on; the code data is the barcode; ERROR is
 * "no read" ({"barcode": null}, a result, not an error); NG, ERRnn and ER,LON,ee are device
 * errors. When nothing settles it within read_ms, LOFF ends the reading and the reader then says
 * ERROR (or the data of a read that completed meanwhile): a silent reader is a timeout. status
 * (the poll): RMOTOR, telemetry motor_on 1/0, which also sets and clears the motor fault.
 *
 * The protocol has no version or serial-number query, so the driver learns no firmware. */
#include "drivers/driver.h"
#include "drivers/stream.h"
#include "core/err.h"
#include "core/log.h"
#include "protocols/keyence.h"

#include <stdio.h>
#include <string.h>

#define KEY_REPLY_MS 1000 /* a reply at 9600 baud takes milliseconds */
#define KEY_QUIET_MS 200
#define KEY_RETRY_MS 2000
#define KEY_LOFF_MS 1000 /* after LOFF: its answer and the read error */

typedef enum key_act { KEY_ACT_STATUS, KEY_ACT_SCAN } ksr_act_t;

typedef struct ksr {
    lab_stream_t st;
    ksr_act_t act;
    lab_stream_owner_t owner; /* of the sequence on the line */
    json_t *result;           /* of the operation, once its reply settled it */
    int motor;                /* RMOTOR's last answer: 1 on, 0 off, -1 none (an SR) */
    bool loff_sent;           /* the read window passed and LOFF went out */
    bool motor_off;           /* the fault this driver reported: cleared by MOTORON */
    unsigned read_ms;
} ksr_t;

/* The reader works in real time: its own timers (KEY_REPLY_MS, read_ms + KEY_LOFF_MS) bound an
 * operation, and the lab-second timeouts here are only the framework's backstop, long enough
 * that a fast time_scale never cuts a read short. */
static const lab_drv_action_t key_actions[] = {
    {"status", NULL, 600, 0, "whether the scanning motor runs (motor_on 1/0; an SR has none)"},
    {"scan", NULL, 3600, 0,
     "trigger one read (LON) of the label in front of the reader: {\"barcode\": text}, or "
     "{\"barcode\": null} when the reader answered that it read no code"},
    {NULL, NULL, 0, 0, NULL},
};

static const lab_drv_key_t key_keys[] = {
    /* BL-600HA / BL-1300 factory defaults (PyLabRobot keyence_backend.py lines 42-52) */
    LAB_DRV_SERIAL_KEYS("9600", "7", "even", "1", "none"),
    {"at", LAB_DRV_KEY_STR, NULL, 0, 0, NULL, LAB_DRV_KEY_REQUIRED,
     "the instrument whose plate position the reader sees (its id): a workflow step with "
     "\"scan\": true on that instrument reads the plate's label here first"},
    {"read_ms", LAB_DRV_KEY_INT, "1000", 100, 60000, NULL, 0,
     "real milliseconds a read may take before LOFF ends it (the reader then answers ERROR)"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

/* ---- sequences ---- */

static void key_send(lab_stream_t *s, keyence_cmd_t c, unsigned reply_ms)
{
    char buf[16];
    int n = keyence_encode_cmd(c, buf, sizeof buf);
    lab_stream_send(s, buf, (size_t)n, reply_ms);
}

/* The read window passed with no answer that settles the read: LOFF stops the reading. */
static void key_loff(lab_stream_t *s)
{
    ksr_t *p = lab_drv_priv(lab_stream_driver(s));
    char buf[16];
    int n = keyence_encode_cmd(KEYENCE_CMD_LOFF, buf, sizeof buf);
    p->loff_sent = true;
    lab_drv_error_t e;
    if (lab_stream_write(s, buf, (size_t)n) != 0)
        lab_stream_end(s, lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "cannot write LOFF"));
}

static void key_begin(lab_stream_t *s, lab_stream_owner_t owner)
{
    ksr_t *p = lab_drv_priv(lab_stream_driver(s));
    p->loff_sent = false;
    p->owner = owner;
    p->motor = -1;
    json_decref(p->result);
    p->result = NULL;
    if (owner == LAB_STREAM_OP && p->act == KEY_ACT_SCAN) {
        /* the reply timer covers the read window, LOFF and its answers */
        key_send(s, KEYENCE_CMD_LON, p->read_ms + KEY_LOFF_MS);
        lab_stream_wait(s, p->read_ms, key_loff);
        return;
    }
    key_send(s, KEYENCE_CMD_RMOTOR, 0);
}

/* The motor's state from RMOTOR: a stopped motor is the reader's fault until it runs again. */
static void key_motor(lab_driver_t *d, bool on)
{
    ksr_t *p = lab_drv_priv(d);
    if (on && p->motor_off) {
        p->motor_off = false;
        lab_drv_set_state(d, LAB_INST_IDLE, NULL);
    } else if (!on && !p->motor_off) {
        lab_drv_error_t e;
        p->motor_off = true;
        lab_drv_set_state(d, LAB_INST_FAULT,
                          lab_drv_error_set(&e, LAB_EDEVICE, "MOTOROFF",
                                            "the scanning motor is off: the reader cannot read"));
    }
}

static void key_device_error(lab_stream_t *s, const keyence_reply_t *r)
{
    lab_drv_error_t e;
    char dc[32];
    switch (r->kind) {
    case KEYENCE_REPLY_NG:
        lab_drv_error_set(&e, LAB_EDEVICE, "NG",
                          "the reader answered NG to '%s': it cannot read now (reader off)",
                          lab_stream_sent(s));
        break;
    case KEYENCE_REPLY_ERR:
        snprintf(dc, sizeof dc, "ERR%02d", r->code);
        lab_drv_error_set(&e, LAB_EDEVICE, dc, "the reader answered %s to '%s'", dc,
                          lab_stream_sent(s));
        break;
    default: /* ER */
        snprintf(dc, sizeof dc, "ER,%.15s,%02d", r->cmd_text, r->code);
        lab_drv_error_set(&e, LAB_EDEVICE, dc, "the reader refused %s: error code %02d",
                          r->cmd_text, r->code);
    }
    lab_stream_end(s, &e);
}

static void key_reply_status(lab_stream_t *s, const keyence_reply_t *r, const char *line,
                             size_t len)
{
    ksr_t *p = lab_drv_priv(lab_stream_driver(s));
    if (r->kind == KEYENCE_REPLY_MOTORON || r->kind == KEYENCE_REPLY_MOTOROFF) {
        p->motor = r->kind == KEYENCE_REPLY_MOTORON;
        p->result = json_pack("{s:i}", "motor_on", p->motor);
        lab_stream_end(s, NULL);
        return;
    }
    if (r->kind == KEYENCE_REPLY_ER && r->cmd == KEYENCE_CMD_RMOTOR && r->code == 0) {
        p->result = json_object(); /* a camera reader: no motor to ask about */
        lab_stream_end(s, NULL);
        return;
    }
    lab_stream_unexpected(s, line, len, "MOTORON or MOTOROFF");
}

static void key_reply(lab_stream_t *s, const char *line, size_t len)
{
    lab_driver_t *d = lab_stream_driver(s);
    ksr_t *p = lab_drv_priv(d);
    keyence_reply_t r;
    lab_drv_error_t e;
    int rc = keyence_parse_reply(line, len, &r);
    if (rc == LAB_ETOOLONG) {
        lab_stream_end_resync(s, lab_drv_error_set(&e, LAB_EPROTO, NULL,
                                                   "code data of %zu bytes after '%s': longer "
                                                   "than a label this driver takes (%d)",
                                                   len, lab_stream_sent(s), KEYENCE_DATA_MAX));
        return;
    }
    if (rc != LAB_OK) {
        lab_stream_unexpected(s, line, len, "a reply of the Keyence command set");
        return;
    }
    if (p->owner != LAB_STREAM_OP || p->act == KEY_ACT_STATUS) {
        key_reply_status(s, &r, line, len);
        return;
    }
    switch (r.kind) {
    case KEYENCE_REPLY_OK:
        if (r.cmd == KEYENCE_CMD_LON || (r.cmd == KEYENCE_CMD_LOFF && p->loff_sent)) {
            lab_stream_expect(s, p->loff_sent ? KEY_LOFF_MS : p->read_ms + KEY_LOFF_MS);
            return;
        }
        break;
    case KEYENCE_REPLY_DATA:
        p->result = json_pack("{s:s#}", "barcode", r.data, r.len);
        lab_stream_end(s, NULL);
        return;
    case KEYENCE_REPLY_NOREAD:
        p->result = json_pack("{s:n}", "barcode");
        lab_stream_end(s, NULL);
        return;
    case KEYENCE_REPLY_NG:
    case KEYENCE_REPLY_ERR:
    case KEYENCE_REPLY_ER:
        key_device_error(s, &r);
        return;
    default:
        break;
    }
    lab_stream_unexpected(s, line, len, "code data, ERROR or OK,LON");
}

static void key_end(lab_stream_t *s, lab_stream_owner_t owner, const lab_drv_error_t *err)
{
    lab_driver_t *d = lab_stream_driver(s);
    ksr_t *p = lab_drv_priv(d);
    json_t *result = p->result;
    p->result = NULL;
    if (owner == LAB_STREAM_OP) {
        /* the operation ends first and the motor's fault is reported after: the framework's
         * own fault (an operation that failed) clears itself on a success, the motor's not */
        if (err) {
            json_decref(result);
            lab_drv_done(d, err, NULL);
            return;
        }
        lab_drv_done(d, NULL, result);
        if (p->motor >= 0)
            key_motor(d, p->motor == 1);
        return;
    }
    json_decref(result);
    if (err)
        return; /* the base reports offline and connects again */
    log_info("keyence", "instrument=%s connected, motor %s", lab_driver_id(d),
             p->motor < 0 ? "none (camera reader)"
             : p->motor   ? "on"
                          : "off");
    p->motor_off = p->motor == 0;
    if (p->motor_off) {
        lab_drv_error_t e;
        lab_drv_set_state(d, LAB_INST_FAULT,
                          lab_drv_error_set(&e, LAB_EDEVICE, "MOTOROFF",
                                            "the scanning motor is off: the reader cannot read"));
    } else {
        lab_drv_set_state(d, LAB_INST_IDLE, NULL);
    }
}

static void key_timeout(lab_stream_t *s, lab_drv_error_t *e)
{
    ksr_t *p = lab_drv_priv(lab_stream_driver(s));
    if (p->loff_sent)
        lab_drv_error_set(e, LAB_ETIMEDOUT, NULL,
                          "no answer to LON within %u ms, nor to LOFF after it", p->read_ms);
}

/* Replies are CR-terminated lines: the base's line framer. */
static const lab_stream_ops_t key_stream_ops = {
    .begin = key_begin,
    .reply = key_reply,
    .end = key_end,
    .timeout = key_timeout,
};

/* ---- driver ops ---- */

static int key_open(lab_driver_t *d, char *err, size_t errlen)
{
    ksr_t *p = lab_drv_priv(d);
    p->read_ms = (unsigned)lab_drv_int(d, "read_ms");
    lab_stream_conf_t conf = {
        .tag = "keyence",
        .reply_ms = KEY_REPLY_MS,
        .quiet_ms = KEY_QUIET_MS,
        .retry_ms = KEY_RETRY_MS,
    };
    return lab_stream_init(&p->st, d, &key_stream_ops, &conf, err, errlen);
}

static void key_start(lab_driver_t *d)
{
    ksr_t *p = lab_drv_priv(d);
    lab_stream_start(&p->st);
}

static void key_stop(lab_driver_t *d)
{
    ksr_t *p = lab_drv_priv(d);
    lab_stream_stop(&p->st);
    json_decref(p->result);
    p->result = NULL;
    p->motor_off = false;
}

static void key_close(lab_driver_t *d)
{
    ksr_t *p = lab_drv_priv(d);
    json_decref(p->result);
    p->result = NULL;
    lab_stream_close(&p->st);
}

static void key_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    (void)params;
    ksr_t *p = lab_drv_priv(d);
    p->act = strcmp(a->name, "scan") == 0 ? KEY_ACT_SCAN : KEY_ACT_STATUS;
    lab_stream_run(&p->st);
}

static void key_abort(lab_driver_t *d)
{
    ksr_t *p = lab_drv_priv(d);
    lab_stream_abort(&p->st);
    json_decref(p->result);
    p->result = NULL;
}

static const lab_drv_role_action_t key_roles[] = {
    {LAB_DRV_ROLE_SCAN, "scan"},
    {LAB_DRV_ROLE_NONE, NULL},
};

const lab_driver_ops_t lab_driver_keyence_sr = {
    .name = "keyence-sr",
    .kind = "barcode_reader",
    .model = "Keyence SR/BL series barcode reader",
    .keys = key_keys,
    .actions = key_actions,
    .roles = key_roles,
    .poll_action = "status",
    .poll_default_s = 30,
    .priv_size = sizeof(ksr_t),
    .open = key_open,
    .start = key_start,
    .stop = key_stop,
    .close = key_close,
    .invoke = key_invoke,
    .abort = key_abort,
};
