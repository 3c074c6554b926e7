/* Simulated Keyence barcode reader (keyence-sr): RMOTOR, LON and LOFF with CR, answered as
 * PyLabRobot's Keyence backend and its tests show and as the SR manual describes (sources in
 * protocols/keyence.h). sim_mode = bl (the default, PyLabRobot's BL-600HA/BL-1300): no command
 * answer, MOTORON to RMOTOR; sim_mode = sr: "OK,LON" / "OK,LOFF" before the result and
 * ER,RMOTOR,00 (a camera reader has no motor). LON reads the label in front of the reader at
 * once; a reader with no readable label in front keeps reading and says nothing until LOFF ends
 * the reading, then answers ERROR (the read error).
 *
 * The label in front: what the control socket put there ({"instrument": ID, "label": TEXT} another
 * barcode, null an unreadable label, false back to the world), else the plate the world has at
 * the reader's at = instrument: on its transfer station, in its tray or on its deck, or for an
 * incubator fed from a STAR's deck (sim_from) the plate a load would take from there. An injected
 * "error" answers the next LON with ERR99 and the next RMOTOR with MOTOROFF. */
#include <stdio.h>
#include <string.h>
#include "protocols/keyence.h"
#include "sim/device.h"
#include "sim/log.h"

static void send_reply(sim_inst_t *in, const keyence_reply_t *r)
{
    char buf[KEYENCE_DATA_MAX + 8];
    int n = keyence_encode_reply(r, buf, sizeof buf);
    if (n > 0)
        sim_inst_send(in, buf, (size_t)n);
}

static void send_kind(sim_inst_t *in, keyence_reply_kind_t kind, keyence_cmd_t cmd, int code)
{
    keyence_reply_t r = {.kind = kind, .cmd = cmd, .code = code};
    send_reply(in, &r);
}

static const sim_inst_cfg_t *cfg_of(const sim_t *s, const char *id)
{
    for (int i = 0; i < s->cfg.n; i++)
        if (strcmp(s->cfg.inst[i].id, id) == 0)
            return &s->cfg.inst[i];
    return NULL;
}

/* The plate the world has where the reader looks, NULL when none. */
static sim_plate_t *plate_in_front(sim_inst_t *in)
{
    sim_world_t *w = &in->sim->world;
    static const char *const places[] = {"transfer", "tray", "deck"};
    char pos[128];
    if (!in->cfg->at[0])
        return NULL;
    for (size_t i = 0; i < sizeof places / sizeof places[0]; i++) {
        snprintf(pos, sizeof pos, "%s:%s", places[i], in->cfg->at);
        sim_plate_t *p = sim_world_at(w, pos);
        if (p)
            return p;
    }
    const sim_inst_cfg_t *at = cfg_of(in->sim, in->cfg->at);
    if (!at || at->driver != SIM_LICONIC || !at->from[0])
        return NULL;
    snprintf(pos, sizeof pos, "deck:%s", at->from);
    sim_plate_t *p = NULL; /* the oldest on the deck, as the incubator's load takes it */
    for (int i = 0; i < w->n_plates; i++)
        if (strcmp(w->plates[i].position, pos) == 0 && (!p || w->plates[i].queued < p->queued))
            p = &w->plates[i];
    return p;
}

/* The label's text, or NULL when there is none the reader can read. */
static const char *label_now(sim_inst_t *in)
{
    if (in->label_set == SIM_LABEL_TEXT)
        return in->label;
    if (in->label_set == SIM_LABEL_UNREADABLE)
        return NULL;
    sim_plate_t *p = plate_in_front(in);
    return p ? p->barcode : NULL;
}

static void on_lon(sim_inst_t *in, bool sr)
{
    if (in->error_next) {
        in->error_next = 0;
        send_kind(in, KEYENCE_REPLY_ERR, KEYENCE_CMD_N, 99);
        return;
    }
    if (sr)
        send_kind(in, KEYENCE_REPLY_OK, KEYENCE_CMD_LON, -1);
    const char *label = label_now(in);
    keyence_reply_t r = {.kind = KEYENCE_REPLY_DATA, .cmd = KEYENCE_CMD_N, .code = -1};
    size_t n = label ? strlen(label) : 0;
    if (n == 0 || n > KEYENCE_DATA_MAX) {
        in->reading = 1; /* it reads on until LOFF */
        return;
    }
    memcpy(r.data, label, n);
    r.len = n;
    keyence_reply_t back;
    if (keyence_parse_reply(r.data, r.len, &back) != LAB_OK || back.kind != KEYENCE_REPLY_DATA) {
        in->reading = 1; /* a label this code cannot carry (not 7-bit ASCII) reads as none */
        return;
    }
    sim_info("keyence", "%s: read %s", in->cfg->id, label);
    send_reply(in, &r);
}

static int on_line(void *ud, const char *line, size_t len, int err)
{
    sim_inst_t *in = ud;
    bool sr = in->cfg->keyence_sr;
    keyence_cmd_t c;
    if (err)
        return 0;
    sim_inst_command(in);
    if (in->disconnected || in->sticky == SIM_FAULT_TIMEOUT)
        return 1;
    if (keyence_parse_cmd(line, len, &c) != LAB_OK) {
        keyence_reply_t r = {.kind = KEYENCE_REPLY_ER, .cmd = KEYENCE_CMD_N, .code = 0};
        snprintf(r.cmd_text, sizeof r.cmd_text, "%.*s", (int)(len < 15 ? len : 15), line);
        if (r.cmd_text[0] && keyence_encode_reply(&r, (char[32]){0}, 32) > 0)
            send_reply(in, &r);
        else
            send_kind(in, KEYENCE_REPLY_ERR, KEYENCE_CMD_N, 0);
        return 0;
    }
    switch (c) {
    case KEYENCE_CMD_RMOTOR:
        if (sr) {
            send_kind(in, KEYENCE_REPLY_ER, KEYENCE_CMD_RMOTOR, 0);
        } else if (in->error_next) {
            in->error_next = 0;
            send_kind(in, KEYENCE_REPLY_MOTOROFF, KEYENCE_CMD_N, -1);
        } else {
            send_kind(in, KEYENCE_REPLY_MOTORON, KEYENCE_CMD_N, -1);
        }
        break;
    case KEYENCE_CMD_LON:
        in->reading = 0;
        on_lon(in, sr);
        break;
    case KEYENCE_CMD_LOFF:
        if (sr)
            send_kind(in, KEYENCE_REPLY_OK, KEYENCE_CMD_LOFF, -1);
        if (in->reading) {
            sim_info("keyence", "%s: no label read", in->cfg->id);
            send_kind(in, KEYENCE_REPLY_NOREAD, KEYENCE_CMD_N, -1);
        }
        in->reading = 0;
        break;
    default:
        break;
    }
    return 0;
}

void sim_keyence_init(sim_inst_t *in)
{
    proto_lines_init(&in->lines);
    in->reading = 0;
    in->label_set = SIM_LABEL_WORLD;
}

void sim_keyence_feed(sim_inst_t *in, const uint8_t *data, size_t n)
{
    proto_lines_feed(&in->lines, data, n, on_line, in);
}

int sim_keyence_label(sim_inst_t *in, const json_t *label, char *err, size_t cap)
{
    if (json_is_false(label)) {
        in->label_set = SIM_LABEL_WORLD;
        sim_info("keyence", "%s: the world's plate in front", in->cfg->id);
        return 0;
    }
    if (json_is_null(label)) {
        in->label_set = SIM_LABEL_UNREADABLE;
        sim_info("keyence", "%s: an unreadable label in front", in->cfg->id);
        return 0;
    }
    const char *t = json_string_value(label);
    keyence_reply_t back;
    if (!t || keyence_parse_reply(t, strlen(t), &back) != LAB_OK ||
        back.kind != KEYENCE_REPLY_DATA) {
        snprintf(err, cap,
                 "label: a text of 1 to %d printable ASCII characters that is not a reply word, "
                 "null (unreadable) or false (the world's plate)",
                 KEYENCE_DATA_MAX);
        return -1;
    }
    snprintf(in->label, sizeof in->label, "%s", t);
    in->label_set = SIM_LABEL_TEXT;
    sim_info("keyence", "%s: label %s in front", in->cfg->id, t);
    return 0;
}
