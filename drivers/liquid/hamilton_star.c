/* hamilton-star: a Hamilton Microlab STAR (master module C0, up to 16 pipetting channels) on its
 * USB link (port = usb://08af:8000: one firmware message per bulk transfer, no terminator) or on
 * a stream link (serial, tcp: one message per CR LF line) (protocols/star.h), on the stream
 * driver base (drivers/stream.h: one command in flight, the line drained after a timeout or
 * garbage). Owns the deck description (plate, tip rack, reagent troughs and tip waste, in the
 * firmware's 0.1 mm coordinates, from the instrument's keys), the channels' tips and volumes as
 * the driver saw them, and the firmware's side of the exchange: each command carries an id
 * counted as PyLabRobot counts them, and a reply with another id (a late one for a command that
 * timed out) is dropped while the command waits on, as PyLabRobot drops it. On every new
 * connection the tip type is defined (C0TT: the firmware keeps it only until power off or reset,
 * and C0DI and C0TP refer to it by its index) and the channels are initialised (C0DI) before the
 * instrument is idle; a resynchronisation on the same connection sends nothing (C0DI would
 * discard the tips the channels hold). */
#include "drivers/driver.h"
#include "drivers/stream.h"

#include "core/err.h"
#include "core/log.h"
#include "core/text.h"
#include "protocols/proto.h"
#include "protocols/star.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB "star"
#define STAR_CH_MAX 16
#define REAGENTS_MAX 16
#define CONNECT_RETRY_MS 2000
#define QUIET_MS 200
#define STAR_RACK_ROWS 8 /* a tip rack's rows: a column holds one tip per row */

/* The plan of one command: where each acting channel goes and how much it moves. */
typedef struct star_plan {
    unsigned mask;
    long xp[STAR_CH_MAX], yp[STAR_CH_MAX], vol[STAR_CH_MAX]; /* vol in 0.1 uL */
} star_plan_t;

typedef struct star {
    lab_stream_t st; /* the link, one command in flight, resynchronisation */
    lab_driver_t *d;
    star_pending_t pending; /* ids, counted as PyLabRobot counts them */
    bool usb;               /* one message per bulk transfer, no CR LF */

    /* deck, 0.1 mm */
    int channels, rows, cols, plate_x, plate_y, pitch;
    int tip_x, tip_y, tip_pitch, tip_cols, trough_x, trough_y, trough_pitch;
    int waste_x, waste_y, channel_pitch;
    char reagent[REAGENTS_MAX][LAB_TEXT_BYTES(LAB_REAGENT_CHARS)];
    int n_reagents;
    uint64_t reply_ms;

    /* what the driver saw */
    bool tips[STAR_CH_MAX];
    double held_ul[STAR_CH_MAX];
    int next_tip_col; /* 0-based */
    /* With tip_racks (labloop counts the tips): every column was picked from since the rack was
     * last reported full, and the next pick-up is refused rather than taken from column 1. */
    bool rack_used;

    /* the sequence running: the operation's command (and C0DI after C0TT) */
    const char *op_cmd;
    star_plan_t plan;
    int id; /* of the command in flight */
    char cmd[3];
    char next[3]; /* sent when cmd succeeds: C0DI after C0TT */
    uint64_t sent_at;
    unsigned mask;              /* channels acting */
    double vol_ul[STAR_CH_MAX]; /* per channel, 0 where it does not act */
    int tip_col;
    json_t *result;
    bool fault; /* the firmware reported an error to the connect sequence */
    bool down;  /* a connect sequence failed: the base reported offline or fault */
} star_t;

/* ---- keys and actions ---- */

/* Serial defaults: the STAR itself talks USB, so no documented RS-232 framing applies. 115200
 * 8N1 without flow control is what the serial device servers and USB bridges it is reached
 * through are usually set to, and fast enough for a 400-byte aspirate command (a third of a
 * second at 9600); a pty (the simulator) ignores all of it. */
static const lab_drv_key_t star_keys[] = {
    LAB_DRV_SERIAL_KEYS("115200", "8", "none", "1", "none"),
    {"channels", LAB_DRV_KEY_INT, "8", 1, STAR_CH_MAX, NULL, 0, "pipetting channels fitted"},
    {"plate_wells", LAB_DRV_KEY_ENUM, "96", 0, 0, "96|384", 0, "plate format"},
    {"plate_a1_x", LAB_DRV_KEY_INT, "1000", 0, 99999, NULL, 0, "well A1 x, 0.1 mm"},
    {"plate_a1_y", LAB_DRV_KEY_INT, "3000", 0, 9999, NULL, 0, "well A1 y, 0.1 mm"},
    {"well_pitch", LAB_DRV_KEY_INT, NULL, 10, 500, NULL, 0,
     "well pitch, 0.1 mm (default 90 for 96 wells, 45 for 384); rows go towards smaller y"},
    {"tip_a1_x", LAB_DRV_KEY_INT, "4000", 0, 99999, NULL, 0, "tip rack A1 x, 0.1 mm"},
    {"tip_a1_y", LAB_DRV_KEY_INT, "3000", 0, 9999, NULL, 0, "tip rack A1 y, 0.1 mm"},
    {"tip_pitch", LAB_DRV_KEY_INT, "90", 10, 500, NULL, 0, "tip rack pitch, 0.1 mm"},
    {"tip_columns", LAB_DRV_KEY_INT, "12", 1, 24, NULL, 0, "tip rack columns"},
    /* The tip definition sent with C0TT; the defaults are PyLabRobot's 300 uL filter tip
     * (STAR_tests.py test_tip_pickup_01: tt01tf1tl0519tv03600tg2tu0). */
    {"tip_type", LAB_DRV_KEY_INT, "1", 1, 99, NULL, 0,
     "tip type table index the tip is defined at (C0TT tt) and referred to by (C0TP, C0DI)"},
    {"tip_filter", LAB_DRV_KEY_INT, "1", 0, 1, NULL, 0, "the tip has a filter (C0TT tf)"},
    {"tip_length", LAB_DRV_KEY_INT, "519", 1, 1999, NULL, 0,
     "tip length less its fitting depth, 0.1 mm (C0TT tl)"},
    {"tip_volume", LAB_DRV_KEY_INT, "3600", 1, 56000, NULL, 0,
     "maximum tip volume, 0.1 uL (C0TT tv)"},
    {"tip_size", LAB_DRV_KEY_INT, "2", 0, 5, NULL, 0,
     "tip collar type: 1 low, 2 standard, 3 high volume, 4 384 head, 5 XL (C0TT tg)"},
    {"tip_pickup", LAB_DRV_KEY_INT, "0", 0, 1, NULL, 0,
     "pick-up method: 0 out of rack, 1 out of wash liquid (C0TT tu)"},
    {"reagents", LAB_DRV_KEY_STR, "substrate,inhibitor,buffer", 0, 0, NULL, 0,
     "reagent names by trough column, comma separated"},
    {"trough_x", LAB_DRV_KEY_INT, "1000", 0, 99999, NULL, 0, "first trough column x, 0.1 mm"},
    {"trough_y", LAB_DRV_KEY_INT, "1000", 0, 9999, NULL, 0, "trough y of channel 1, 0.1 mm"},
    {"trough_pitch", LAB_DRV_KEY_INT, "90", 10, 2000, NULL, 0, "trough column pitch, 0.1 mm"},
    {"waste_x", LAB_DRV_KEY_INT, "8000", 0, 99999, NULL, 0, "tip waste x, 0.1 mm"},
    {"waste_y", LAB_DRV_KEY_INT, "3000", 0, 9999, NULL, 0, "tip waste y of channel 1, 0.1 mm"},
    {"channel_pitch", LAB_DRV_KEY_INT, "90", 90, 500, NULL, 0,
     "y distance between neighbouring channels, 0.1 mm"},
    {"move_timeout_s", LAB_DRV_KEY_DOUBLE, "60", 0.001, 3600, NULL, 0,
     "lab seconds one command's motion may take"},
    {"timeout_ms", LAB_DRV_KEY_INT, "2000", 10, 60000, NULL, 0,
     "real milliseconds the link may add to a reply"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

#define WELL_PATTERN "\"type\":\"string\",\"pattern\":\"^[A-Pa-p]([1-9]|1[0-9]|2[0-4])$\""
#define CHANNEL "\"channel\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":16}"
/* One volume for every acting channel, or one per channel with a tip (0: the channel sits out). */
#define VOLUME                                                                                     \
    "\"volume_ul\":{\"oneOf\":[{\"type\":\"number\",\"exclusiveMinimum\":0,\"maximum\":1000},"     \
    "{\"type\":\"array\",\"minItems\":1,\"maxItems\":16,"                                          \
    "\"items\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1000}}]}"

static const lab_drv_action_t star_actions[] = {
    {"initialize", NULL, 120, 0, "initialise the pipetting channels (C0DI); clears a fault"},
    {"pick_up_tips",
     "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
     "\"column\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":24},"
     "\"channels\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":16}}}",
     120, 0,
     "pick up tips from a tip rack column (default: the next unused one) on the first "
     "`channels` channels (default: 1)"},
    {"aspirate",
     "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"volume_ul\"],"
     "\"properties\":{" VOLUME ",\"reagent\":{\"type\":\"string\",\"minLength\":1,"
     "\"maxLength\":31},\"well\":{" WELL_PATTERN "}," CHANNEL "},"
     "\"oneOf\":[{\"required\":[\"reagent\"]},{\"required\":[\"well\"]}]}",
     120, 0,
     "aspirate volume_ul on each channel with a tip (or the one channel) from a reagent trough, "
     "or from a well (channel k from the k-th row below it); volume_ul is one number for all, or "
     "an array with one entry per channel with a tip, in channel order, 0 leaving a channel out; "
     "the result has volumes_ul, one entry per channel of the instrument"},
    {"dispense",
     "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"well\",\"volume_ul\"],"
     "\"properties\":{" VOLUME ",\"well\":{" WELL_PATTERN "}," CHANNEL "}}",
     120, 0,
     "dispense volume_ul into the well (channel k into the k-th row below it), every channel "
     "with a tip or the one channel; volume_ul is one number for all, or an array with one entry "
     "per channel with a tip, in channel order, 0 leaving a channel out; the result has "
     "volumes_ul, one entry per channel of the instrument"},
    {"drop_tips", NULL, 120, 0, "discard the tips into the waste"},
    {"tips_left",
     "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"left\"],"
     "\"properties\":{\"left\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":153600}}}",
     5, LAB_DRV_ACT_IMMEDIATE | LAB_DRV_ACT_OFFLINE,
     "the fresh tips the rack holds as counted (whole columns of 8): pick-ups go on from the first "
     "full column"},
    {"status", NULL, 5, LAB_DRV_ACT_IMMEDIATE | LAB_DRV_ACT_OFFLINE,
     "tips and volumes per channel as the driver saw them, and the deck"},
    {NULL, NULL, 0, 0, NULL},
};

/* ---- commands ---- */

/* Values for the parameters an operation does not set, per command, in the firmware's units
 * (0.1 mm heights, 0.1 uL/s speeds), within the widths of the codec's specifications. Heights
 * of a tip movement go from begin (tp, higher) to end (tz, lower), as PyLabRobot sends them:
 * C0TR into the waste tp1970tz1870th2450te2450ti0 (STAR_tests.py test_discard_tips), C0DI
 * tp2450 (its channel traversal height 245 mm) tz1220 te3600 ti0 (STAR_backend.py
 * initialize_pip), C0TP tp2244tz2164th2450td0 (test_tip_pickup_01), C0AS ld00. */
typedef struct star_default {
    const char *cmd, *name;
    long v;
} star_default_t;

static const star_default_t star_defaults[] = {
    {"TP", "tp", 2244}, {"TP", "tz", 2164}, {"TP", "th", 2450}, {"TP", "td", 0},
    {"TR", "tp", 1970}, {"TR", "tz", 1870}, {"TR", "th", 2450}, {"TR", "te", 2450},
    {"TR", "ti", 0},    {"DI", "tp", 2450}, {"DI", "tz", 1220}, {"DI", "te", 3600},
    {"DI", "ti", 0},    {"AS", "th", 2450}, {"AS", "te", 2450}, {"AS", "lp", 2000},
    {"AS", "zl", 1866}, {"AS", "po", 100},  {"AS", "zu", 32},   {"AS", "zr", 6180},
    {"AS", "zx", 1866}, {"AS", "as", 1000}, {"AS", "ll", 1},    {"AS", "lv", 1},
    {"AS", "ld", 0},    {"AS", "de", 20},   {"AS", "wt", 10},   {"AS", "ms", 1000},
    {"AS", "sd", 500},  {"AS", "se", 500},  {"AS", "sz", 300},  {"DS", "dm", 2},
    {"DS", "zx", 1866}, {"DS", "lp", 2000}, {"DS", "zl", 1866}, {"DS", "po", 100},
    {"DS", "zu", 32},   {"DS", "zr", 6180}, {"DS", "th", 2450}, {"DS", "te", 2450},
    {"DS", "ds", 1200}, {"DS", "ss", 50},   {"DS", "ll", 1},    {"DS", "lv", 1},
    {"DS", "de", 10},   {"DS", "ms", 10},
};

/* Parameters whose value is an instrument key: the tip definition. */
static const struct {
    const char *name, *key;
} star_key_params[] = {
    {"tt", "tip_type"},   {"tf", "tip_filter"}, {"tl", "tip_length"},
    {"tv", "tip_volume"}, {"tg", "tip_size"},   {"tu", "tip_pickup"},
};

static long star_default(const star_t *s, const char *cmd, const char *name)
{
    for (size_t i = 0; i < sizeof star_key_params / sizeof star_key_params[0]; i++)
        if (strcmp(star_key_params[i].name, name) == 0)
            return lab_drv_int(s->d, star_key_params[i].key);
    for (size_t i = 0; i < sizeof star_defaults / sizeof star_defaults[0]; i++)
        if (strcmp(star_defaults[i].cmd, cmd) == 0 && strcmp(star_defaults[i].name, name) == 0)
            return star_defaults[i].v;
    return 0;
}

static int star_digits(long v)
{
    int n = v < 0 ? 2 : 1;
    for (v = v < 0 ? -v : v; v >= 10; v /= 10)
        n++;
    return n;
}

/* The command as PyLabRobot's STAR backend writes it: parameters in the order of its
 * send_command calls, channel lists laid out by star_list_pattern (tm, xp, yp zero outside the
 * pattern), C0DI with the one waste x position initialize_pip gives and every channel's y. */
static int star_build(star_t *s, const char *cmd, int id, const star_plan_t *pl, char *buf,
                      size_t cap)
{
    const star_cmd_spec_t *spec = star_cmd_spec("C0", cmd);
    LAB_ASSERT(spec != NULL);
    size_t chans = (size_t)s->channels;
    bool di = strcmp(cmd, "DI") == 0;
    star_builder_t b;
    star_begin(&b, buf, cap, "C0", cmd, id);
    for (size_t i = 0; i < spec->n; i++) {
        const star_param_spec_t *ps = &spec->params[i];
        if (!ps->list) {
            long v = star_default(s, cmd, ps->name);
            star_int(&b, ps->name, v, ps->upto ? star_digits(v) : ps->width);
            continue;
        }
        long v[STAR_CH_MAX];
        star_fill_t fill = STAR_FILL_FIRST;
        for (size_t ch = 0; ch < chans; ch++) {
            if (strcmp(ps->name, "tm") == 0)
                v[ch] = (pl->mask >> ch) & 1, fill = STAR_FILL_ZERO;
            else if (strcmp(ps->name, "xp") == 0)
                v[ch] = pl->xp[ch], fill = STAR_FILL_ZERO;
            else if (strcmp(ps->name, "yp") == 0)
                v[ch] = pl->yp[ch], fill = STAR_FILL_ZERO;
            else if (strcmp(ps->name, "av") == 0 || strcmp(ps->name, "dv") == 0)
                v[ch] = pl->vol[ch];
            else
                v[ch] = star_default(s, cmd, ps->name);
        }
        if (di && strcmp(ps->name, "xp") == 0)
            star_list(&b, "xp", v, 1, ps->width, chans);
        else if (di)
            star_list(&b, ps->name, v, chans, ps->width, chans);
        else
            star_list_pattern(&b, ps->name, v, pl->mask, chans, ps->width, fill);
    }
    return star_end(&b, !s->usb);
}

/* Sends one command of the running sequence and waits for its reply: the lab time its motion
 * may take plus what the link may add. */
static void star_send(star_t *s, const char *cmd, const star_plan_t *pl)
{
    lab_drv_error_t e;
    int last = s->pending.last_id; /* one command in flight: only the count carries over */
    star_pending_init(&s->pending);
    s->pending.last_id = last;
    int id = star_pending_add(&s->pending, "C0", cmd, NULL);
    if (id < 0) {
        lab_stream_end_later(&s->st, lab_drv_error_set(&e, LAB_EINTERNAL, NULL,
                                                       "no free command id: %s", lab_strerror(id)));
        return;
    }
    s->id = id;
    snprintf(s->cmd, sizeof s->cmd, "%s", cmd);
    s->mask = pl->mask;
    char buf[2048];
    int n = star_build(s, cmd, id, pl, buf, sizeof buf);
    if (n < 0) {
        lab_stream_end_later(&s->st, lab_drv_error_set(&e, LAB_EINVAL, NULL,
                                                       "C0%s: a position or volume does not fit "
                                                       "the firmware's fields (%s)",
                                                       cmd, lab_strerror(n)));
        return;
    }
    s->sent_at = uv_now(lab_drv_loop(s->d));
    lab_stream_send(&s->st, buf, (size_t)n, (unsigned)s->reply_ms);
}

/* ---- firmware errors ---- */

static void star_device_error(const star_msg_t *m, lab_drv_error_t *e)
{
    char code[32] = "", text[256] = "";
    size_t tl = 0;
    for (size_t i = 0; i < m->n_errors && tl < sizeof text; i++) {
        const star_err_t *er = &m->errors[i];
        char one[24];
        if (er->code < 0)
            snprintf(one, sizeof one, "%s er%02d", er->module, er->trace);
        else
            snprintf(one, sizeof one, "%s %02d/%02d", er->module, er->code, er->trace);
        if (i == 0) {
            if (er->code < 0)
                snprintf(code, sizeof code, "er%02d", er->trace);
            else
                snprintf(code, sizeof code, "er%02d/%02d", er->code, er->trace);
        } else if (i == 1 && strlen(code) + strlen(one) + 1 < sizeof code) {
            strcat(code, " ");
            strcat(code, one); /* the module that failed, after the master's "slave error" */
        }
        tl += (size_t)snprintf(text + tl, sizeof text - tl, "%s%s (%s): %s%s%s", i ? "; " : "", one,
                               er->module_name ? er->module_name : "unknown module",
                               er->code_text ? er->code_text : "",
                               er->code_text && er->trace_text ? ", " : "",
                               er->trace_text  ? er->trace_text
                               : er->code_text ? ""
                                               : "unknown code");
    }
    lab_drv_error_set(e, LAB_EDEVICE, code, "C0%s: %s", m->cmd, text);
}

/* ---- sequences on the stream base ---- */

/* Every channel goes to the waste and is initialised there. */
static void star_plan_waste(star_t *s, star_plan_t *pl, unsigned mask)
{
    memset(pl, 0, sizeof *pl);
    pl->mask = mask;
    for (int ch = 0; ch < s->channels; ch++) {
        pl->xp[ch] = s->waste_x;
        pl->yp[ch] = s->waste_y - ch * s->channel_pitch;
    }
}

/* C0TT, then (star_reply_cb) C0DI: the tip type C0DI names is defined first. */
static void star_send_tt(star_t *s)
{
    star_plan_t pl;
    memset(&pl, 0, sizeof pl);
    snprintf(s->next, sizeof s->next, "DI");
    star_send(s, "TT", &pl);
}

/* CONNECT on a new connection defines the tip type and initialises the channels. After a
 * resynchronisation on the same connection the drained, quiet line is enough: every reply is
 * checked against its command's id, and C0DI would throw away the tips the channels hold. */
static void star_begin_cb(lab_stream_t *st, lab_stream_owner_t owner)
{
    star_t *s = lab_drv_priv(lab_stream_driver(st));
    s->next[0] = '\0';
    if (owner == LAB_STREAM_CONNECT) {
        if (st->was_linked) {
            lab_stream_end(st, NULL);
            return;
        }
        s->fault = false;
        star_send_tt(s);
        return;
    }
    if (strcmp(s->op_cmd, "TT") == 0) /* initialize: the tip type again, then C0DI */
        star_send_tt(s);
    else
        star_send(s, s->op_cmd, &s->plan);
}

static json_t *star_channels_json(star_t *s, unsigned mask)
{
    json_t *a = json_array();
    for (int ch = 0; ch < s->channels; ch++)
        if (mask & (1u << ch))
            json_array_append_new(a, json_integer(ch + 1));
    return a;
}

/* The operation's command succeeded: what the channels now hold. */
static void star_op_ok(star_t *s)
{
    json_object_set_new(s->result, "channels", star_channels_json(s, s->mask));
    for (int ch = 0; ch < s->channels; ch++) {
        if (!(s->mask & (1u << ch)))
            continue;
        if (strcmp(s->cmd, "TP") == 0)
            s->tips[ch] = true;
        else if (strcmp(s->cmd, "TR") == 0) {
            s->tips[ch] = false;
            s->held_ul[ch] = 0;
        } else if (strcmp(s->cmd, "AS") == 0)
            s->held_ul[ch] += s->vol_ul[ch];
        else if (strcmp(s->cmd, "DS") == 0)
            s->held_ul[ch] = s->held_ul[ch] > s->vol_ul[ch] ? s->held_ul[ch] - s->vol_ul[ch] : 0;
    }
    if (strcmp(s->cmd, "TP") == 0) {
        s->next_tip_col = (s->tip_col + 1) % s->tip_cols;
        s->rack_used |= s->tip_col + 1 >= s->tip_cols && lab_drv_has(s->d, "tip_racks");
    }
    if (strcmp(s->cmd, "DI") == 0) {
        for (int ch = 0; ch < s->channels; ch++)
            s->tips[ch] = false, s->held_ul[ch] = 0;
        lab_drv_set_state(s->d, LAB_INST_IDLE, NULL); /* clears a fault the driver reported */
    }
}

static void star_reply_cb(lab_stream_t *st, const char *data, size_t len)
{
    star_t *s = lab_drv_priv(lab_stream_driver(st));
    static star_msg_t m; /* large; the loop thread is the only user */
    char want[16];
    snprintf(want, sizeof want, "C0%sid%04d", s->cmd, s->id);
    if (star_parse(data, len, &m) != LAB_OK) {
        lab_stream_unexpected(st, data, len, want);
        return;
    }
    if (m.id != s->id && m.id != STAR_NO_ID) {
        /* A reply to an earlier command (one that timed out), as base.py drops it: not this
         * command's; it keeps waiting for the rest of its time. */
        uint64_t spent = uv_now(lab_drv_loop(s->d)) - s->sent_at;
        log_info(SUB, "instrument=%s reply %s%s id=%d is not for C0%s id=%d; dropped",
                 lab_driver_id(s->d), m.module, m.cmd, m.id, s->cmd, s->id);
        lab_stream_expect(st, spent < s->reply_ms ? (unsigned)(s->reply_ms - spent) : 1);
        return;
    }
    if (strcmp(m.module, "C0") != 0 || strcmp(m.cmd, s->cmd) != 0 || m.id == STAR_NO_ID) {
        lab_stream_unexpected(st, data, len, want);
        return;
    }
    lab_drv_error_t e;
    if (star_msg_failed(&m)) {
        star_device_error(&m, &e);
        if (st->owner == LAB_STREAM_CONNECT) {
            /* It answers, so it is connected; what it reports needs a person (or initialize). */
            lab_stream_link_up(st);
            s->fault = true;
        }
        lab_stream_end(st, &e);
        return;
    }
    if (s->next[0]) {
        char next[3];
        memcpy(next, s->next, sizeof next);
        s->next[0] = '\0';
        star_plan_t pl; /* C0DI after C0TT */
        star_plan_waste(s, &pl, (1u << s->channels) - 1);
        star_send(s, next, &pl);
        return;
    }
    if (st->owner == LAB_STREAM_OP)
        star_op_ok(s);
    lab_stream_end(st, NULL);
}

static void star_end_cb(lab_stream_t *st, lab_stream_owner_t owner, const lab_drv_error_t *err)
{
    star_t *s = lab_drv_priv(lab_stream_driver(st));
    if (owner == LAB_STREAM_CONNECT) {
        if (err && s->fault) {
            lab_drv_set_state(s->d, LAB_INST_FAULT, err);
        } else if (err) {
            s->down = true; /* the base reports it and connects again */
        } else if (strcmp(s->cmd, "DI") == 0 || s->down) {
            if (strcmp(s->cmd, "DI") == 0) {
                for (int ch = 0; ch < s->channels; ch++)
                    s->tips[ch] = false, s->held_ul[ch] = 0;
                log_info(SUB, "instrument=%s channels initialised", lab_driver_id(s->d));
            }
            s->down = false;
            lab_drv_set_state(s->d, LAB_INST_IDLE, NULL);
        }
        return;
    }
    json_t *r = s->result;
    s->result = NULL;
    if (err) {
        json_decref(r);
        lab_drv_done(s->d, err, NULL);
    } else {
        lab_drv_done(s->d, NULL, r);
    }
}

static void star_timeout_cb(lab_stream_t *st, lab_drv_error_t *e)
{
    star_t *s = lab_drv_priv(lab_stream_driver(st));
    snprintf(e->text, sizeof e->text, "no reply to C0%s id=%d within %.1f s", s->cmd, s->id,
             (double)s->reply_ms / 1000.0);
}

/* One message: a bulk transfer on usb, a line (the base's line framer) otherwise; what does not
 * parse as a firmware message is garbage. */
static void star_message(lab_stream_t *st, const char *msg, size_t len)
{
    static star_msg_t m;
    int rc = star_parse(msg, len, &m);
    if (rc != LAB_OK) {
        char why[96];
        snprintf(why, sizeof why, "not a firmware reply (%s at byte %zu)", lab_strerror(rc),
                 m.err_at);
        lab_stream_garbage(st, msg, len, why);
        return;
    }
    lab_stream_reply(st, msg, len);
}

static void star_feed(lab_stream_t *st, const uint8_t *data, size_t len)
{
    star_t *s = lab_drv_priv(lab_stream_driver(st));
    if (s->usb)
        star_message(st, (const char *)data, len);
    else
        lab_stream_lines_feed(st, data, len); /* each line to star_message */
}

static const lab_stream_ops_t star_stream_ops = {
    .feed = star_feed,
    .line = star_message,
    .begin = star_begin_cb,
    .reply = star_reply_cb,
    .end = star_end_cb,
    .timeout = star_timeout_cb,
};

/* ---- actions ---- */

static int star_reagent(star_t *s, const char *name)
{
    for (int i = 0; i < s->n_reagents; i++)
        if (strcmp(s->reagent[i], name) == 0)
            return i;
    return -1;
}

/* "B7" -> row 1, col 6, checked against the plate format. */
static bool star_well(star_t *s, const char *w, int *row, int *col)
{
    *row = toupper((unsigned char)w[0]) - 'A';
    *col = atoi(w + 1) - 1;
    return *row >= 0 && *row < s->rows && *col >= 0 && *col < s->cols;
}

static unsigned star_tipped(star_t *s)
{
    unsigned mask = 0;
    for (int ch = 0; ch < s->channels; ch++)
        if (s->tips[ch])
            mask |= 1u << ch;
    return mask;
}

/* The firmware's volume (0.1 uL) for one entry of volume_ul; false with e set when it cannot be
 * dispensed. at names the entry ("" for a single number). */
static bool star_volume(json_t *jv, const char *at, int ch, long *out, lab_drv_error_t *e)
{
    double ul = json_number_value(jv);
    char who[48] = "";
    if (ch >= 0)
        snprintf(who, sizeof who, " (channel %d)", ch + 1);
    if (!json_is_number(jv) || !(ul >= 0 && ul <= 1000)) {
        lab_drv_error_set(e, LAB_EINVAL, NULL, "params/volume_ul%s%s: not a volume in 0..1000 uL",
                          at, who);
        return false;
    }
    *out = lround(ul * 10);
    if (ul > 0 && *out == 0) {
        lab_drv_error_set(e, LAB_EINVAL, NULL,
                          "params/volume_ul%s%s: %g uL is below the firmware's 0.1 uL step%s", at,
                          who, ul, ch >= 0 ? " (0 leaves the channel out)" : "");
        return false;
    }
    return true;
}

/* Volumes per channel from volume_ul: one number for every channel in *mask, or an array with one
 * entry per channel in *mask (those holding tips), in channel order. A channel whose entry is 0
 * leaves *mask: it does not act in the command. */
static bool star_volumes(star_t *s, json_t *jv, bool named, unsigned *mask, long vol[],
                         lab_drv_error_t *e)
{
    if (!json_is_array(jv)) {
        long v;
        if (!star_volume(jv, "", -1, &v, e))
            return false;
        for (int ch = 0; ch < s->channels; ch++)
            vol[ch] = (*mask & (1u << ch)) ? v : 0;
        return true;
    }
    if (named) {
        lab_drv_error_set(e, LAB_EINVAL, NULL,
                          "params/volume_ul: an array is one entry per channel with a tip; with "
                          "channel, give one number");
        return false;
    }
    size_t n = json_array_size(jv), k = 0;
    int have = 0;
    for (int ch = 0; ch < s->channels; ch++)
        have += (*mask >> ch) & 1;
    unsigned acting = 0;
    for (int ch = 0; ch < s->channels; ch++) {
        if (!(*mask & (1u << ch)))
            continue;
        if (k == n) {
            lab_drv_error_set(e, LAB_EINVAL, NULL,
                              "params/volume_ul: %zu entries for the %d channels with a tip: "
                              "channel %d has none (give 0 to leave a channel out)",
                              n, have, ch + 1);
            return false;
        }
        char at[24];
        snprintf(at, sizeof at, "/%zu", k);
        if (!star_volume(json_array_get(jv, k++), at, ch, &vol[ch], e))
            return false;
        if (vol[ch])
            acting |= 1u << ch;
    }
    if (k < n) {
        lab_drv_error_set(e, LAB_EINVAL, NULL,
                          "params/volume_ul/%zu: one entry too many: %zu entries for the %d "
                          "channels with a tip",
                          k, n, have);
        return false;
    }
    if (!acting) {
        lab_drv_error_set(e, LAB_EINVAL, NULL,
                          "params/volume_ul: every entry is 0: no channel would move liquid");
        return false;
    }
    *mask = acting;
    return true;
}

/* Builds the plan of a liquid move; false with e set when the params cannot be done. */
static bool star_plan_liquid(star_t *s, json_t *params, star_plan_t *pl, lab_drv_error_t *e)
{
    memset(pl, 0, sizeof *pl);
    json_t *jch = json_object_get(params, "channel");
    unsigned mask; /* the channels the command may use: the named one, or those with a tip */
    if (jch) {
        int ch = (int)json_integer_value(jch) - 1;
        if (ch >= s->channels) {
            lab_drv_error_set(e, LAB_EINVAL, NULL, "channel %d: the instrument has %d", ch + 1,
                              s->channels);
            return false;
        }
        mask = 1u << ch;
    } else {
        mask = star_tipped(s);
        if (!mask) {
            lab_drv_error_set(e, LAB_ESTATE, NULL,
                              "no channel holds a tip: pick_up_tips first, or name the channel");
            return false;
        }
    }
    const char *reagent = json_string_value(json_object_get(params, "reagent"));
    const char *well = json_string_value(json_object_get(params, "well"));
    int row = 0, col = 0, first = -1;
    if (reagent) {
        int r = star_reagent(s, reagent);
        if (r < 0) {
            lab_drv_error_set(e, LAB_EINVAL, NULL, "reagent '%s' is not on the deck (%s)", reagent,
                              lab_drv_str(s->d, "reagents"));
            return false;
        }
        col = r;
    } else if (!star_well(s, well, &row, &col)) {
        lab_drv_error_set(e, LAB_EINVAL, NULL, "well %s is not on a %d-well plate", well,
                          s->rows * s->cols);
        return false;
    }
    for (int ch = 0; ch < s->channels && first < 0; ch++)
        if (mask & (1u << ch))
            first = ch;
    pl->mask = mask;
    if (!star_volumes(s, json_object_get(params, "volume_ul"), jch != NULL, &pl->mask, pl->vol, e))
        return false;
    /* Channels sitting out (volume 0) still get the place they would go to: the y drives cannot
     * pass each other, so each keeps its row between its neighbours'. */
    for (int ch = 0; ch < s->channels; ch++) {
        if (!(mask & (1u << ch)))
            continue;
        bool acts = pl->mask & (1u << ch);
        if (reagent) {
            pl->xp[ch] = s->trough_x + col * s->trough_pitch;
            pl->yp[ch] = s->trough_y - ch * s->channel_pitch;
            continue;
        }
        int r = row + (ch - first) * (s->channel_pitch / s->pitch);
        if (r >= s->rows && acts) {
            lab_drv_error_set(e, LAB_EINVAL, NULL,
                              "channel %d would reach row %d below %s, off the plate: name one "
                              "channel or a well higher up",
                              ch + 1, r + 1, well);
            return false;
        }
        if (r >= s->rows)
            continue; /* past the last acting channel: not in the command's lists */
        pl->xp[ch] = s->plate_x + col * s->pitch;
        pl->yp[ch] = s->plate_y - r * s->pitch;
    }
    json_t *vols = json_array();
    double first_ul = -1;
    for (int ch = 0; ch < s->channels; ch++) {
        s->vol_ul[ch] = (pl->mask & (1u << ch)) ? pl->vol[ch] / 10.0 : 0;
        if (first_ul < 0 && (pl->mask & (1u << ch)))
            first_ul = s->vol_ul[ch];
        json_array_append_new(vols, json_real(s->vol_ul[ch]));
    }
    json_object_set_new(s->result, "volume_ul", json_real(first_ul));
    json_object_set_new(s->result, "volumes_ul", vols);
    if (reagent)
        json_object_set_new(s->result, "reagent", json_string(reagent));
    else
        json_object_set_new(s->result, "well", json_string(well));
    return true;
}

static void star_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    star_t *s = lab_drv_priv(d);
    if (strcmp(a->name, "status") == 0) { /* immediate: what the driver saw */
        json_t *tips = json_array(), *held = json_array();
        for (int ch = 0; ch < s->channels; ch++) {
            json_array_append_new(tips, json_boolean(s->tips[ch]));
            json_array_append_new(held, json_real(s->held_ul[ch]));
        }
        json_t *reag = json_array();
        for (int i = 0; i < s->n_reagents; i++)
            json_array_append_new(reag, json_string(s->reagent[i]));
        lab_drv_done(d, NULL,
                     json_pack("{s:b,s:o,s:o,s:i,s:i,s:o}", "initialized",
                               lab_stream_linked(&s->st), "tips", tips, "held_ul", held,
                               "plate_wells", s->rows * s->cols, "next_tip_column",
                               s->next_tip_col + 1, "reagents", reag));
        return;
    }
    if (strcmp(a->name, "tips_left") == 0) { /* immediate: the count's word on the rack */
        long cols = (long)json_integer_value(json_object_get(params, "left")) / STAR_RACK_ROWS;
        cols = cols < s->tip_cols ? cols : s->tip_cols;
        s->next_tip_col = (int)(s->tip_cols - cols) % s->tip_cols;
        s->rack_used = cols == 0;
        lab_drv_done(d, NULL,
                     json_pack("{s:i,s:b}", "next_tip_column", s->next_tip_col + 1, "rack_used",
                               s->rack_used));
        return;
    }
    json_decref(s->result);
    s->result = json_object();
    star_plan_t pl;
    memset(&pl, 0, sizeof pl);
    lab_drv_error_t e = {0};
    const char *cmd = NULL;
    if (strcmp(a->name, "initialize") == 0) {
        cmd = "TT"; /* the tip type again (a STAR reset since the connection forgot it), C0DI */
    } else if (strcmp(a->name, "drop_tips") == 0) {
        cmd = "TR";
        unsigned mask = star_tipped(s);
        /* Tips the driver did not see go on (a reply lost to a timeout) are dropped as well. */
        star_plan_waste(s, &pl, mask ? mask : (1u << s->channels) - 1);
    } else if (strcmp(a->name, "pick_up_tips") == 0) {
        cmd = "TP";
        json_t *jc = json_object_get(params, "column"), *jn = json_object_get(params, "channels");
        s->tip_col = jc ? (int)json_integer_value(jc) - 1 : s->next_tip_col;
        int n = jn ? (int)json_integer_value(jn) : 1; /* one tip unless asked: tips cost */
        memset(&pl, 0, sizeof pl);
        if (s->tip_col >= s->tip_cols || n > s->channels)
            lab_drv_error_set(&e, LAB_EINVAL, NULL,
                              "column %d / %d channels: the rack has %d columns, the instrument "
                              "%d channels",
                              s->tip_col + 1, n, s->tip_cols, s->channels);
        else if (star_tipped(s))
            lab_drv_error_set(&e, LAB_ESTATE, NULL, "tips are fitted already: drop_tips first");
        pl.mask = (1u << n) - 1;
        for (int ch = 0; ch < n; ch++) {
            pl.xp[ch] = s->tip_x + s->tip_col * s->tip_pitch;
            pl.yp[ch] = s->tip_y - ch * s->tip_pitch;
        }
        json_object_set_new(s->result, "column", json_integer(s->tip_col + 1));
        /* the rest of the column is never picked from: the pick-up spends all of it */
        json_object_set_new(s->result, "tips_used",
                            json_integer(n > STAR_RACK_ROWS ? n : STAR_RACK_ROWS));
        if (!jc && s->rack_used && e.code == LAB_OK)
            lab_drv_error_set(&e, LAB_ESTATE, NULL,
                              "the tip rack is used up: each of its %d columns was picked from; "
                              "report fresh tips (labloop refill %s --tips)",
                              s->tip_cols, lab_driver_id(d));
    } else {
        cmd = strcmp(a->name, "aspirate") == 0 ? "AS" : "DS";
        star_plan_liquid(s, params, &pl, &e);
    }
    if (e.code != LAB_OK) { /* refused: the firmware never sees it */
        lab_stream_refuse(&s->st, &e);
        return;
    }
    s->op_cmd = cmd;
    s->plan = pl;
    lab_stream_run(&s->st);
}

static void star_abort(lab_driver_t *d)
{
    star_t *s = lab_drv_priv(d);
    /* Forgotten; the base drains the line if its command was in flight, and a reply that still
     * comes carries an id no later command has. */
    lab_stream_abort(&s->st);
    json_decref(s->result);
    s->result = NULL;
}

/* ---- lifecycle ---- */

static int star_open(lab_driver_t *d, char *err, size_t errlen)
{
    star_t *s = lab_drv_priv(d);
    s->d = d;
    s->id = STAR_NO_ID;
    star_pending_init(&s->pending);
    s->channels = (int)lab_drv_int(d, "channels");
    bool w384 = lab_drv_enum(d, "plate_wells") == 1;
    s->rows = w384 ? 16 : 8;
    s->cols = w384 ? 24 : 12;
    s->pitch = lab_drv_has(d, "well_pitch") ? (int)lab_drv_int(d, "well_pitch") : w384 ? 45 : 90;
    s->plate_x = (int)lab_drv_int(d, "plate_a1_x");
    s->plate_y = (int)lab_drv_int(d, "plate_a1_y");
    s->tip_x = (int)lab_drv_int(d, "tip_a1_x");
    s->tip_y = (int)lab_drv_int(d, "tip_a1_y");
    s->tip_pitch = (int)lab_drv_int(d, "tip_pitch");
    s->tip_cols = (int)lab_drv_int(d, "tip_columns");
    s->trough_x = (int)lab_drv_int(d, "trough_x");
    s->trough_y = (int)lab_drv_int(d, "trough_y");
    s->trough_pitch = (int)lab_drv_int(d, "trough_pitch");
    s->waste_x = (int)lab_drv_int(d, "waste_x");
    s->waste_y = (int)lab_drv_int(d, "waste_y");
    s->channel_pitch = (int)lab_drv_int(d, "channel_pitch");
    s->reply_ms = (uint64_t)lab_drv_int(d, "timeout_ms");
    if (s->channel_pitch % s->pitch) {
        snprintf(err, errlen, "channel_pitch %d is not a multiple of the well pitch %d",
                 s->channel_pitch, s->pitch);
        return LAB_EINVAL;
    }
    if (s->plate_y - (s->channels - 1) * s->channel_pitch < 0 ||
        s->waste_y - (s->channels - 1) * s->channel_pitch < 0 ||
        s->plate_y - (s->rows - 1) * s->pitch < 0) {
        snprintf(err, errlen, "plate_a1_y/waste_y leave no room for %d channels below them",
                 s->channels);
        return LAB_EINVAL;
    }
    char names[512];
    snprintf(names, sizeof names, "%s", lab_drv_str(d, "reagents"));
    char *save = NULL;
    for (char *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*t))
            t++;
        size_t n = strlen(t);
        while (n && isspace((unsigned char)t[n - 1]))
            t[--n] = '\0';
        if (!n || !lab_text_valid(t, n) || lab_text_chars(t, n) > LAB_REAGENT_CHARS ||
            s->n_reagents == REAGENTS_MAX || star_reagent(s, t) >= 0) {
            snprintf(err, errlen, "reagents: '%s' is empty, too long, repeated or one too many", t);
            return LAB_EINVAL;
        }
        snprintf(s->reagent[s->n_reagents++], sizeof s->reagent[0], "%s", t);
    }
    lab_drv_set_info(d, "channels", json_integer(s->channels));

    s->reply_ms = lab_drv_lab_ms(d, lab_drv_double(d, "move_timeout_s")) + s->reply_ms;
    lab_stream_conf_t conf = {
        .tag = SUB,
        .reply_ms = (unsigned)s->reply_ms,
        .quiet_ms = QUIET_MS,
        .retry_ms = CONNECT_RETRY_MS,
    };
    int rc = lab_stream_init(&s->st, d, &star_stream_ops, &conf, err, errlen);
    if (rc == 0 && s->st.t)
        s->usb = strcmp(lab_transport_backend(s->st.t), "usb") == 0;
    return rc;
}

static void star_start(lab_driver_t *d)
{
    star_t *s = lab_drv_priv(d);
    lab_stream_start(&s->st);
}

static void star_stop(lab_driver_t *d)
{
    star_t *s = lab_drv_priv(d);
    if (s->st.d) /* open got as far as the stream */
        lab_stream_stop(&s->st);
    json_decref(s->result);
    s->result = NULL;
}

static void star_close(lab_driver_t *d)
{
    star_t *s = lab_drv_priv(d);
    json_decref(s->result);
    s->result = NULL;
    if (!s->st.d) { /* open refused the configuration before the stream existed */
        lab_drv_closed(d);
        return;
    }
    lab_stream_close(&s->st);
}

/* With tip_racks (labloop counts the tips) the driver's one tip rack position holds one rack of
 * tip_columns columns of 8: the count and the driver's columns must describe the same rack. */
static int star_check_conf(const lab_drv_conf_t *conf, const char **key, char *err, size_t errlen)
{
    const char *racks = lab_drv_conf_str(conf, "tip_racks");
    if (!racks)
        return 0;
    const char *per = lab_drv_conf_str(conf, "tips_per_rack");
    const char *cols = lab_drv_conf_str(conf, "tip_columns");
    long ncols = cols ? strtol(cols, NULL, 10) : 12, nper = per ? strtol(per, NULL, 10) : 96;
    if (strtol(racks, NULL, 10) > 1) {
        *key = "tip_racks";
        snprintf(err, errlen, "the STAR driver knows one tip rack position (tip_a1_x, tip_a1_y)");
        return LAB_EINVAL;
    }
    if (nper != ncols * STAR_RACK_ROWS) {
        *key = per ? "tips_per_rack" : "tip_racks";
        snprintf(err, errlen,
                 "tips_per_rack = %ld, but the rack has %ld columns of %d (tip_columns): %ld tips",
                 nper, ncols, STAR_RACK_ROWS, ncols * STAR_RACK_ROWS);
        return LAB_EINVAL;
    }
    return 0;
}

/* What its actions do in a workflow step (the scheduler asks by role, never by name). */
static const lab_drv_role_action_t star_roles[] = {
    {LAB_DRV_ROLE_PICK_UP_TIPS, "pick_up_tips"}, {LAB_DRV_ROLE_DROP_TIPS, "drop_tips"},
    {LAB_DRV_ROLE_ASPIRATE, "aspirate"},         {LAB_DRV_ROLE_DISPENSE, "dispense"},
    {LAB_DRV_ROLE_TIPS_LEFT, "tips_left"},       {LAB_DRV_ROLE_NONE, NULL},
};

const lab_driver_ops_t lab_driver_hamilton_star = {
    .name = "hamilton-star",
    .kind = "liquid_handler",
    .model = "Hamilton Microlab STAR",
    .keys = star_keys,
    .actions = star_actions,
    .roles = star_roles,
    .poll_action = NULL, /* the firmware reports nothing numeric in these commands */
    .priv_size = sizeof(star_t),
    .open = star_open,
    .start = star_start,
    .stop = star_stop,
    .close = star_close,
    .invoke = star_invoke,
    .abort = star_abort,
    .check_conf = star_check_conf,
};
