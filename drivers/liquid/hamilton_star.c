/* hamilton-star: the Hamilton Microlab STAR through its firmware command language (the codec is
 * protocols/star.h): `C0xx` commands with an id, fixed-width parameters and per-channel lists,
 * replies matched by id (a reply to a forgotten command is dropped, never taken for another's),
 * `erXX/YY` errors kept with the firmware's own code and texts.
 *
 * Wells and reagents become deck coordinates (0.1 mm, as the firmware's xp/yp) from the config:
 * the plate's A1 and well pitch, the tip rack's A1, the waste, and the reagent troughs, one
 * column per name in `reagents`. One channel acts per command (the `channel` parameter, 1 by
 * default); the driver knows which channels hold a tip and refuses to aspirate without one.
 *
 * The STAR talks USB bulk transfers; labloop reaches it through a serial/TCP bridge (and
 * labloop-sim), one message per CR LF line. The serial defaults (9600 8N1, no flow control) are
 * the bridges' factory settings. */
#include "drivers/driver.h"
#include "core/err.h"
#include "core/jschema.h"
#include "core/log.h"
#include "protocols/proto.h"
#include "protocols/star.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STAR_CH_MAX 16
#define STAR_REAGENTS_MAX 16
#define STAR_QUIET_MS 250 /* a garbled line: what follows it for this long is dropped */

typedef struct star {
    lab_transport_t *t;
    proto_lines_t lines;
    star_pending_t pending;
    uv_timer_t later_timer;
    bool timer_open;
    int channels;
    int rows, cols;
    long plate_x, plate_y, pitch, tips_x, tips_y, waste_x, waste_y, trough_x, trough_y,
        trough_pitch;
    char reagents[STAR_REAGENTS_MAX][32];
    int nreagents;
    bool tip[STAR_CH_MAX];
    int next_tip_col;
    int cur_id; /* the command in flight, or 0 */
    json_t *result;
    lab_drv_error_t later;
    uint64_t quiet_until;
} star_t;

#define CHANNEL_SCHEMA "\"channel\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":16}"
#define WELL_SCHEMA "\"well\":{\"type\":\"string\",\"pattern\":\"^[A-Pa-p](1[0-9]|2[0-4]|[1-9])$\"}"
#define VOLUME_SCHEMA "\"volume_ul\":{\"type\":\"number\",\"minimum\":0.1,\"maximum\":1000}"

static const lab_drv_action_t star_actions[] = {
    {"initialize", NULL, 120, 0, "initialise the pipetting channels (C0DI)"},
    {"pick_up_tips",
     "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{" CHANNEL_SCHEMA
     ",\"column\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":12}}}",
     60, 0, "pick up a tip from the rack's next column (or the column given) (C0TP)"},
    {"aspirate",
     "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"volume_ul\"],"
     "\"properties\":{" CHANNEL_SCHEMA "," VOLUME_SCHEMA "," WELL_SCHEMA
     ",\"reagent\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":31}}}",
     60, 0, "aspirate from a reagent trough (reagent) or a plate well (well) (C0AS)"},
    {"dispense",
     "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"well\",\"volume_ul\"],"
     "\"properties\":{" CHANNEL_SCHEMA "," VOLUME_SCHEMA "," WELL_SCHEMA "}}",
     60, 0, "dispense into a plate well (C0DS)"},
    {"drop_tips",
     "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{" CHANNEL_SCHEMA "}}", 60,
     0, "drop the channel's tip into the waste (C0TR)"},
    {"status", NULL, 10, LAB_DRV_ACT_IMMEDIATE | LAB_DRV_ACT_OFFLINE,
     "the tips the driver knows are on the channels"},
    {NULL, NULL, 0, 0, NULL},
};

static const lab_drv_key_t star_keys[] = {
    LAB_DRV_SERIAL_KEYS("9600", "8", "none", "1", "none"),
    {"channels", LAB_DRV_KEY_INT, "8", 1, STAR_CH_MAX, NULL, 0, "pipetting channels"},
    {"plate_wells", LAB_DRV_KEY_ENUM, "96", 0, 0, "96|384", 0, "the plate on the deck"},
    {"plate_a1_x", LAB_DRV_KEY_INT, "1000", 0, 99999, NULL, 0, "well A1, x in 0.1 mm"},
    {"plate_a1_y", LAB_DRV_KEY_INT, "3000", 0, 9999, NULL, 0, "well A1, y in 0.1 mm"},
    {"well_pitch", LAB_DRV_KEY_INT, "90", 10, 500, NULL, 0,
     "well to well, 0.1 mm (90 for 96 wells, 45 for 384); rows go towards smaller y"},
    {"tips_a1_x", LAB_DRV_KEY_INT, "1179", 0, 99999, NULL, 0, "tip rack A1, x in 0.1 mm"},
    {"tips_a1_y", LAB_DRV_KEY_INT, "2418", 0, 9999, NULL, 0, "tip rack A1, y in 0.1 mm"},
    {"waste_x", LAB_DRV_KEY_INT, "13400", 0, 99999, NULL, 0, "tip waste, x in 0.1 mm"},
    {"waste_y", LAB_DRV_KEY_INT, "2058", 0, 9999, NULL, 0, "tip waste, y in 0.1 mm"},
    {"reagents", LAB_DRV_KEY_STR, "", 0, 0, NULL, 0,
     "reagent troughs by name, comma separated, one trough column each from trough_x"},
    {"trough_x", LAB_DRV_KEY_INT, "1000", 0, 99999, NULL, 0, "first trough, x in 0.1 mm"},
    {"trough_y", LAB_DRV_KEY_INT, "1500", 0, 9999, NULL, 0, "troughs, y in 0.1 mm"},
    {"trough_pitch", LAB_DRV_KEY_INT, "90", 10, 5000, NULL, 0, "trough to trough, 0.1 mm"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

/* ---- helpers ---- */

static int well_parse(const char *s, int *row, int *col)
{
    if (!s || !isalpha((unsigned char)s[0]))
        return -1;
    *row = toupper((unsigned char)s[0]) - 'A';
    *col = atoi(s + 1) - 1;
    return 0;
}

static int reagent_index(const star_t *p, const char *name)
{
    for (int i = 0; i < p->nreagents; i++)
        if (strcmp(p->reagents[i], name) == 0)
            return i;
    return -1;
}

static int channel_of(json_t *params)
{
    json_t *c = json_object_get(params, "channel");
    return c ? (int)json_integer_value(c) - 1 : 0;
}

/* A per-channel list of n = ch + 1 values: v at ch, other before it. */
static void list_at(star_builder_t *b, const star_t *p, const char *name, int ch, long v,
                    long other, int width)
{
    long vals[STAR_CH_MAX];
    for (int i = 0; i <= ch; i++)
        vals[i] = i == ch ? v : other;
    star_list(b, name, vals, (size_t)ch + 1, width, (size_t)p->channels);
}

/* The same value on every channel up to ch. */
static void list_all(star_builder_t *b, const star_t *p, const char *name, int ch, long v,
                     int width)
{
    list_at(b, p, name, ch, v, v, width);
}

static void star_end_op(lab_driver_t *d, const lab_drv_error_t *err)
{
    star_t *p = lab_drv_priv(d);
    json_t *res = p->result;
    p->result = NULL;
    p->cur_id = 0;
    if (err) {
        json_decref(res);
        lab_drv_done(d, err, NULL);
    } else {
        lab_drv_done(d, NULL, res);
    }
}

static void star_later_cb(uv_timer_t *t)
{
    lab_driver_t *d = t->data;
    star_t *p = lab_drv_priv(d);
    star_end_op(d, &p->later);
}

/* Ends the operation from the loop, never from inside invoke. */
static void star_end_later(lab_driver_t *d, const lab_drv_error_t *err)
{
    star_t *p = lab_drv_priv(d);
    p->later = *err;
    uv_timer_start(&p->later_timer, star_later_cb, 0, 0);
}

/* ---- replies ---- */

static void star_error_of(const star_msg_t *m, lab_drv_error_t *e)
{
    const star_err_t *x = &m->errors[0];
    bool master = strcmp(x->module, "C0") == 0;
    char code[32];
    if (x->code >= 0)
        snprintf(code, sizeof code, "%s%ser%02d/%02d", master ? "" : x->module, master ? "" : ":",
                 x->code, x->trace);
    else
        snprintf(code, sizeof code, "%s:er%02d", x->module, x->trace);
    lab_drv_error_set(e, LAB_DRV_EDEVICE, code, "%s%s: %s: %s%s%s%s", m->module, m->cmd,
                      x->module_name ? x->module_name : x->module,
                      x->code_text ? x->code_text : "error", x->trace_text ? " (" : "",
                      x->trace_text ? x->trace_text : "", x->trace_text ? ")" : "");
}

static int star_on_line(void *ud, const char *line, size_t len, int err)
{
    lab_driver_t *d = ud;
    star_t *p = lab_drv_priv(d);
    static star_msg_t m;
    lab_drv_error_t e;
    if (uv_now(lab_drv_loop(d)) < p->quiet_until)
        return 0;
    if (err || star_parse(line, len, &m) != PROTO_OK) {
        char shown[80];
        size_t o = 0;
        for (size_t i = 0; i < len && o + 5 < sizeof shown; i++) {
            unsigned char c = (unsigned char)line[i];
            o += (size_t)(c >= 0x20 && c < 0x7f
                              ? snprintf(shown + o, sizeof shown - o, "%c", c)
                              : snprintf(shown + o, sizeof shown - o, "\\x%02x", c));
        }
        log_warn("drv", "instrument=%s unparsable line \"%s\"", lab_driver_id(d), shown);
        if (p->cur_id) {
            /* The reply this operation waits for may be what was garbled: it will not come. */
            star_pending_init(&p->pending);
            p->quiet_until = uv_now(lab_drv_loop(d)) + STAR_QUIET_MS;
            star_end_op(d, lab_drv_error_set(&e, LAB_DRV_EPROTO, NULL,
                                             "the STAR answered something that is not a "
                                             "firmware message: \"%s\"",
                                             shown));
        }
        return 0;
    }
    void *tag = NULL;
    if (star_pending_take(&p->pending, &m, &tag) != PROTO_OK || m.id != p->cur_id) {
        log_debug("drv", "instrument=%s reply %s%s id %d answers nothing in flight",
                  lab_driver_id(d), m.module, m.cmd, m.id);
        return 0;
    }
    if (star_msg_failed(&m)) {
        star_error_of(&m, &e);
        star_end_op(d, &e);
        return 0;
    }
    /* Effects the driver tracks, once the firmware said they happened. */
    json_t *ch = json_object_get(p->result, "channel");
    int c = ch ? (int)json_integer_value(ch) - 1 : -1;
    if (c >= 0 && c < STAR_CH_MAX) {
        if (strcmp(m.cmd, "TP") == 0)
            p->tip[c] = true;
        else if (strcmp(m.cmd, "TR") == 0)
            p->tip[c] = false;
    }
    star_end_op(d, NULL);
    return 0;
}

static void star_on_data(lab_transport_t *t, const uint8_t *data, size_t len, void *user)
{
    (void)t;
    lab_driver_t *d = user;
    star_t *p = lab_drv_priv(d);
    proto_lines_feed(&p->lines, data, len, star_on_line, d);
}

static void star_on_state(lab_transport_t *t, lab_transport_state_t state, int err,
                          const char *reason, void *user)
{
    (void)t;
    lab_driver_t *d = user;
    star_t *p = lab_drv_priv(d);
    lab_drv_error_t e;
    if (state == LAB_TRANSPORT_OPEN) {
        proto_lines_init(&p->lines);
        star_pending_init(&p->pending);
        p->quiet_until = 0;
        lab_drv_set_state(d, LAB_INST_IDLE, NULL);
    } else if (state == LAB_TRANSPORT_OFFLINE) {
        /* What the channels hold is unknown until someone looks. */
        memset(p->tip, 0, sizeof p->tip);
        lab_drv_set_state(d, LAB_INST_OFFLINE,
                          lab_drv_error_set(&e, LAB_DRV_EOFFLINE, NULL, "%s",
                                            reason && *reason ? reason : lab_strerror(err)));
    }
}

/* ---- commands ---- */

static void star_send(lab_driver_t *d, star_builder_t *b)
{
    star_t *p = lab_drv_priv(d);
    lab_drv_error_t e;
    int n = star_end(b, 1);
    if (n < 0) {
        star_end_later(d, lab_drv_error_set(&e, LAB_DRV_EINTERNAL, NULL,
                                            "command does not fit the firmware's format: %s",
                                            proto_strerror(n)));
        return;
    }
    int rc = lab_transport_write(p->t, b->o.buf, (size_t)n, NULL, NULL);
    if (rc < 0)
        star_end_later(
            d, lab_drv_error_set(&e, LAB_DRV_EOFFLINE, NULL, "cannot send: %s", lab_strerror(rc)));
}

/* Starts a command: a new id in the pending table. */
static int star_begin_cmd(lab_driver_t *d, star_builder_t *b, char *buf, size_t cap,
                          const char *cmd)
{
    star_t *p = lab_drv_priv(d);
    int id = star_pending_add(&p->pending, "C0", cmd, NULL);
    if (id < 0) { /* every id taken by replies that never came: start over */
        star_pending_init(&p->pending);
        id = star_pending_add(&p->pending, "C0", cmd, NULL);
    }
    p->cur_id = id;
    star_begin(b, buf, cap, "C0", cmd, id);
    return id;
}

static void star_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    star_t *p = lab_drv_priv(d);
    static char buf[2048];
    star_builder_t b;
    lab_drv_error_t e;
    int ch = channel_of(params);
    if (strcmp(a->name, "status") == 0) { /* immediate: beside an operation in flight */
        json_t *tips = json_array();
        for (int i = 0; i < p->channels; i++)
            json_array_append_new(tips, json_boolean(p->tip[i]));
        lab_drv_done(d, NULL, json_pack("{s:o, s:i}", "tips", tips, "channels", p->channels));
        return;
    }
    json_decref(p->result);
    p->result = json_pack("{s:i}", "channel", ch + 1);
    if (strcmp(a->name, "initialize") == 0) {
        json_decref(p->result);
        p->result = json_object();
        int last = p->channels - 1;
        star_begin_cmd(d, &b, buf, sizeof buf, "DI");
        long xs[STAR_CH_MAX], ys[STAR_CH_MAX], tm[STAR_CH_MAX];
        for (int i = 0; i <= last; i++)
            xs[i] = 8000, ys[i] = 4050 - 90 * i, tm[i] = 1;
        star_list(&b, "xp", xs, (size_t)p->channels, 5, (size_t)p->channels);
        star_list(&b, "yp", ys, (size_t)p->channels, 4, (size_t)p->channels);
        star_int(&b, "tp", 2450, 4);
        star_int(&b, "tz", 2450, 4);
        star_int(&b, "te", 3600, 4);
        star_list(&b, "tm", tm, (size_t)p->channels, 1, (size_t)p->channels);
        star_int(&b, "tt", 16, 2);
        star_int(&b, "ti", 1, 1);
        memset(p->tip, 0, sizeof p->tip); /* initialising drops what the channels held */
        star_send(d, &b);
        return;
    }
    if (strcmp(a->name, "pick_up_tips") == 0) {
        if (p->tip[ch]) {
            star_end_later(d, lab_drv_error_set(&e, LAB_DRV_ESTATE, NULL,
                                                "channel %d already holds a tip", ch + 1));
            return;
        }
        json_t *colv = json_object_get(params, "column");
        int col = colv ? (int)json_integer_value(colv) : p->next_tip_col;
        p->next_tip_col = col % 12 + 1;
        json_object_set_new(p->result, "column", json_integer(col));
        star_begin_cmd(d, &b, buf, sizeof buf, "TP");
        list_at(&b, p, "xp", ch, p->tips_x + (col - 1) * p->pitch, 0, 5);
        list_at(&b, p, "yp", ch, p->tips_y - ch * p->pitch, 0, 4);
        list_at(&b, p, "tm", ch, 1, 0, 1);
        star_int(&b, "tt", 1, 2);
        star_int(&b, "tp", 2244, 4);
        star_int(&b, "tz", 2164, 4);
        star_int(&b, "th", 2450, 4);
        star_int(&b, "td", 0, 1);
        star_send(d, &b);
        return;
    }
    if (strcmp(a->name, "drop_tips") == 0) {
        if (!p->tip[ch]) {
            star_end_later(
                d, lab_drv_error_set(&e, LAB_DRV_ESTATE, NULL, "channel %d holds no tip", ch + 1));
            return;
        }
        star_begin_cmd(d, &b, buf, sizeof buf, "TR");
        list_at(&b, p, "xp", ch, p->waste_x, 0, 5);
        list_at(&b, p, "yp", ch, p->waste_y - ch * p->pitch, 0, 4);
        list_at(&b, p, "tm", ch, 1, 0, 1);
        star_int(&b, "tp", 2244, 4);
        star_int(&b, "tz", 2164, 4);
        star_int(&b, "th", 2450, 4);
        star_int(&b, "te", 2450, 4);
        star_int(&b, "ti", 1, 1);
        star_send(d, &b);
        return;
    }
    /* aspirate / dispense */
    if (!p->tip[ch]) {
        star_end_later(d, lab_drv_error_set(&e, LAB_DRV_ESTATE, NULL,
                                            "channel %d holds no tip: pick_up_tips first", ch + 1));
        return;
    }
    double ul = json_number_value(json_object_get(params, "volume_ul"));
    long vol = lround(ul * 10);
    const char *well = json_string_value(json_object_get(params, "well"));
    const char *reagent = json_string_value(json_object_get(params, "reagent"));
    long x, y;
    if (reagent) {
        int r = reagent_index(p, reagent);
        x = p->trough_x + r * p->trough_pitch;
        y = p->trough_y;
        json_object_set_new(p->result, "reagent", json_string(reagent));
    } else {
        int row = 0, col = 0;
        well_parse(well, &row, &col);
        x = p->plate_x + col * p->pitch;
        y = p->plate_y - row * p->pitch;
        char w[16];
        snprintf(w, sizeof w, "%c%d", 'A' + row, col + 1);
        json_object_set_new(p->result, "well", json_string(w));
    }
    json_object_set_new(p->result, "volume_ul", json_real((double)vol / 10.0));
    bool as = strcmp(a->name, "aspirate") == 0;
    star_begin_cmd(d, &b, buf, sizeof buf, as ? "AS" : "DS");
    /* Liquid-class values as the firmware's own examples give them (PyLabRobot's STAR tests):
     * heights in 0.1 mm, speeds in 0.1 uL/s. */
    if (as) {
        list_all(&b, p, "at", ch, 0, 1);
        list_at(&b, p, "tm", ch, 1, 0, 1);
        list_at(&b, p, "xp", ch, x, 0, 5);
        list_at(&b, p, "yp", ch, y, 0, 4);
        star_int(&b, "th", 2450, 4);
        star_int(&b, "te", 2450, 4);
        static const struct {
            const char *name;
            long v;
            int width;
        } rest[] = {{"lp", 2000, 4}, {"ch", 0, 3},    {"zl", 1866, 4}, {"po", 100, 4},
                    {"zu", 32, 4},   {"zr", 6180, 5}, {"zx", 1866, 4}, {"ip", 0, 4},
                    {"it", 0, 1},    {"fp", 0, 4}};
        for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
            list_all(&b, p, rest[i].name, ch, rest[i].v, rest[i].width);
        list_at(&b, p, "av", ch, vol, 0, 5);
        static const struct {
            const char *name;
            long v;
            int width;
        } rest2[] = {{"as", 1000, 4}, {"ta", 0, 3}, {"ba", 0, 4}, {"oa", 0, 3}, {"lm", 0, 1},
                     {"ll", 1, 1},    {"lv", 1, 1}, {"zo", 0, 3}, {"ld", 0, 2}, {"de", 20, 4},
                     {"wt", 10, 2},   {"mv", 0, 5}, {"mc", 0, 2}, {"mp", 0, 3}, {"ms", 1000, 4},
                     {"mh", 0, 4},    {"gi", 0, 3}};
        for (size_t i = 0; i < sizeof rest2 / sizeof rest2[0]; i++)
            list_all(&b, p, rest2[i].name, ch, rest2[i].v, rest2[i].width);
        star_int(&b, "gj", 0, 1);
        star_int(&b, "gk", 0, 1);
        static const struct {
            const char *name;
            long v;
            int width;
        } rest3[] = {{"lk", 0, 1},   {"ik", 0, 4},   {"sd", 500, 4},
                     {"se", 500, 4}, {"sz", 300, 4}, {"io", 0, 4}};
        for (size_t i = 0; i < sizeof rest3 / sizeof rest3[0]; i++)
            list_all(&b, p, rest3[i].name, ch, rest3[i].v, rest3[i].width);
    } else {
        list_all(&b, p, "dm", ch, 1, 1);
        list_at(&b, p, "tm", ch, 1, 0, 1);
        list_at(&b, p, "xp", ch, x, 0, 5);
        list_at(&b, p, "yp", ch, y, 0, 4);
        static const struct {
            const char *name;
            long v;
            int width;
        } rest[] = {{"zx", 1866, 4}, {"lp", 2000, 4}, {"zl", 1866, 4}, {"po", 100, 4}, {"ip", 0, 4},
                    {"it", 0, 1},    {"fp", 0, 4},    {"zu", 32, 4},   {"zr", 6180, 5}};
        for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
            list_all(&b, p, rest[i].name, ch, rest[i].v, rest[i].width);
        star_int(&b, "th", 2450, 4);
        star_int(&b, "te", 2450, 4);
        list_at(&b, p, "dv", ch, vol, 0, 5);
        static const struct {
            const char *name;
            long v;
            int width;
        } rest2[] = {{"ds", 1800, 4}, {"ss", 50, 4},  {"rv", 0, 3},
                     {"ta", 50, 3},   {"ba", 300, 4}, {"lm", 0, 1}};
        for (size_t i = 0; i < sizeof rest2 / sizeof rest2[0]; i++)
            list_all(&b, p, rest2[i].name, ch, rest2[i].v, rest2[i].width);
        star_int(&b, "dj", 0, 2);
        static const struct {
            const char *name;
            long v;
            int width;
        } rest3[] = {{"zo", 0, 3},  {"ll", 1, 1}, {"lv", 1, 1}, {"de", 10, 4},
                     {"wt", 0, 2},  {"mv", 0, 5}, {"mc", 0, 2}, {"mp", 0, 3},
                     {"ms", 10, 4}, {"mh", 0, 4}, {"gi", 0, 3}};
        for (size_t i = 0; i < sizeof rest3 / sizeof rest3[0]; i++)
            list_all(&b, p, rest3[i].name, ch, rest3[i].v, rest3[i].width);
        star_int(&b, "gj", 0, 1);
        star_int(&b, "gk", 0, 1);
    }
    star_send(d, &b);
}

/* What depends on the deck: channel, well and reagent, before anything is queued. */
static void star_check(lab_driver_t *d, const lab_drv_action_t *a, json_t *params,
                       struct lab_jerrs *errs)
{
    star_t *p = lab_drv_priv(d);
    json_t *ch = json_object_get(params, "channel");
    if (ch && json_integer_value(ch) > p->channels)
        lab_jerrs_add(errs, "/channel", "this STAR has %d channels", p->channels);
    const char *well = json_string_value(json_object_get(params, "well"));
    int row, col;
    if (well && well_parse(well, &row, &col) == 0 && (row >= p->rows || col >= p->cols))
        lab_jerrs_add(errs, "/well", "%s is outside the %d-well plate (A1:%c%d)", well,
                      p->rows * p->cols, 'A' + p->rows - 1, p->cols);
    const char *reagent = json_string_value(json_object_get(params, "reagent"));
    if (reagent && reagent_index(p, reagent) < 0)
        lab_jerrs_add(errs, "/reagent", "no trough holds '%s' (reagents = %s)", reagent,
                      lab_drv_str(d, "reagents"));
    if (strcmp(a->name, "aspirate") == 0 && !well == !reagent)
        lab_jerrs_add(errs, "", "aspirate takes either reagent or well");
}

static void star_abort(lab_driver_t *d)
{
    star_t *p = lab_drv_priv(d);
    /* Its reply, should it come, matches nothing any more. */
    star_pending_init(&p->pending);
    p->cur_id = 0;
    uv_timer_stop(&p->later_timer);
    json_decref(p->result);
    p->result = NULL;
}

/* ---- lifecycle ---- */

static int star_open(lab_driver_t *d, char *err, size_t errlen)
{
    star_t *p = lab_drv_priv(d);
    uv_timer_init(lab_drv_loop(d), &p->later_timer);
    p->later_timer.data = d;
    p->timer_open = true;
    p->channels = (int)lab_drv_int(d, "channels");
    bool big = lab_drv_enum(d, "plate_wells") == 1;
    p->rows = big ? 16 : 8;
    p->cols = big ? 24 : 12;
    p->plate_x = lab_drv_int(d, "plate_a1_x");
    p->plate_y = lab_drv_int(d, "plate_a1_y");
    p->pitch = lab_drv_int(d, "well_pitch");
    p->tips_x = lab_drv_int(d, "tips_a1_x");
    p->tips_y = lab_drv_int(d, "tips_a1_y");
    p->waste_x = lab_drv_int(d, "waste_x");
    p->waste_y = lab_drv_int(d, "waste_y");
    p->trough_x = lab_drv_int(d, "trough_x");
    p->trough_y = lab_drv_int(d, "trough_y");
    p->trough_pitch = lab_drv_int(d, "trough_pitch");
    p->next_tip_col = 1;
    char names[512];
    snprintf(names, sizeof names, "%s", lab_drv_str(d, "reagents"));
    char *save = NULL;
    for (char *t = strtok_r(names, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (p->nreagents == STAR_REAGENTS_MAX || strlen(t) >= sizeof p->reagents[0]) {
            snprintf(err, errlen, "reagents: at most %d names of at most %zu characters",
                     STAR_REAGENTS_MAX, sizeof p->reagents[0] - 1);
            return LAB_EINVAL;
        }
        snprintf(p->reagents[p->nreagents++], sizeof p->reagents[0], "%s", t);
    }
    proto_lines_init(&p->lines);
    star_pending_init(&p->pending);
    lab_drv_set_info(d, "channels", json_integer(p->channels));
    lab_transport_settings_t s;
    lab_drv_serial_settings(d, &s);
    lab_transport_callbacks_t cb = {star_on_data, star_on_state, d};
    return lab_transport_new(lab_drv_loop(d), &s, lab_driver_id(d), &cb, &p->t, err, errlen);
}

static void star_start(lab_driver_t *d)
{
    star_t *p = lab_drv_priv(d);
    lab_transport_open(p->t);
}

static void star_stop(lab_driver_t *d)
{
    star_t *p = lab_drv_priv(d);
    star_abort(d);
    if (p->t)
        lab_transport_close(p->t);
    p->t = NULL;
}

static void star_timer_closed(uv_handle_t *h)
{
    lab_drv_closed(h->data);
}

static void star_close(lab_driver_t *d)
{
    star_t *p = lab_drv_priv(d);
    star_stop(d);
    if (!p->timer_open) {
        lab_drv_closed(d);
        return;
    }
    p->timer_open = false;
    uv_close((uv_handle_t *)&p->later_timer, star_timer_closed);
}

const lab_driver_ops_t lab_driver_hamilton_star = {
    .name = "hamilton-star",
    .kind = "liquid_handler",
    .model = "Hamilton Microlab STAR",
    .keys = star_keys,
    .actions = star_actions,
    .priv_size = sizeof(star_t),
    .open = star_open,
    .start = star_start,
    .stop = star_stop,
    .close = star_close,
    .invoke = star_invoke,
    .abort = star_abort,
    .check = star_check,
};
