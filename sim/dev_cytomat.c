/* Simulated Thermo Cytomat: answers the telegrams of protocols/cytomat.h. Checks ("ch:bs",
 * "ch:be", "ch:bw", "ch:it", "ch:ic", "ch:ih", "ch:io") are answered at any time, busy or not,
 * with their key first. A movement (ll:in, mv:ts, mv:st) is answered "ok XX" with the overview
 * register, keeps the busy bit set for sim_step_seconds lab seconds and then moves the plate in
 * the world: mv:ts transfer station -> slot, mv:st slot -> transfer station. What the device
 * refuses at once it answers "er XX" (errors.py): 01 while busy, 05 for a slot the racks do not
 * have, 31 mv:ts with an empty transfer station, 32 mv:st with an occupied one, 21 with a plate
 * on the shovel, 02 for a telegram it does not know, 03 for one it cannot read, 04 for a set
 * point it cannot take. A movement that fails on the way sets the error register and the error
 * bit: 02 ("MTP not loaded on handler shovel") for mv:st from an empty slot, 03 ("MTP not unloaded
 * from handler shovel", the plate stays on the shovel) for mv:ts into an occupied one. rs:be
 * clears the register. An injected "error" sets the error register to sim_error_code (default
 * 0x0D, the climate controllers' communication) at the next telegram, which is answered as
 * usual; the error stays until rs:be.
 *
 * Climate: temperature and CO2 approach their set points (ll:it, ll:ic) with a 300 lab-second
 * time constant; humidity and O2 have no set point telegram and read fixed values. Plates in the
 * slots accumulate incubation. Replies read "it +37.0 +36.9": set point then actual value. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "protocols/cytomat.h"
#include "sim/device.h"
#include "sim/log.h"

enum { CY_TEMP, CY_CO2, CY_HUM, CY_O2 };
enum { CY_OP_NONE, CY_OP_INIT, CY_OP_TS, CY_OP_ST };

static void pos_transfer(const sim_inst_t *in, char *buf, size_t cap)
{
    snprintf(buf, cap, "transfer:%s", in->cfg->id);
}

static void pos_shovel(const sim_inst_t *in, char *buf, size_t cap)
{
    snprintf(buf, cap, "shovel:%s", in->cfg->id);
}

static void pos_slot(const sim_inst_t *in, int c, int s, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s:%d/%d", in->cfg->id, c, s);
}

static bool occupied(sim_inst_t *in, void (*pos)(const sim_inst_t *, char *, size_t))
{
    char b[96];
    pos(in, b, sizeof b);
    return sim_world_at(&in->sim->world, b) != NULL;
}

void sim_cytomat_tick(sim_inst_t *in)
{
    double now = sim_lab_now(in->sim), dt = now - in->climate_at;
    if (dt <= 0)
        return;
    in->climate_at = now;
    double k = 1 - exp(-dt / 300.0);
    for (int i = CY_TEMP; i <= CY_CO2; i++)
        in->climate_cur[i] += (in->climate_set[i] - in->climate_cur[i]) * k;
    char prefix[80];
    int n = snprintf(prefix, sizeof prefix, "%s:", in->cfg->id);
    sim_world_t *w = &in->sim->world;
    for (int i = 0; i < w->n_plates; i++)
        if (strncmp(w->plates[i].position, prefix, (size_t)n) == 0 &&
            w->plates[i].position[n] >= '0' && w->plates[i].position[n] <= '9')
            sim_world_incubate(&w->plates[i], in->climate_cur[CY_TEMP], dt);
}

static int overview(sim_inst_t *in)
{
    int ov = in->pending_flag ? CYTOMAT_OV_BUSY : CYTOMAT_OV_READY;
    if (in->cy_warning)
        ov |= CYTOMAT_OV_WARNING;
    if (in->cy_error)
        ov |= CYTOMAT_OV_ERROR;
    if (occupied(in, pos_shovel))
        ov |= CYTOMAT_OV_HANDLER_OCCUPIED;
    if (occupied(in, pos_transfer))
        ov |= CYTOMAT_OV_TRANSFER_OCCUPIED;
    return ov;
}

static void send_reply(sim_inst_t *in, const cytomat_reply_t *r)
{
    char buf[96];
    int n = cytomat_encode_reply(r, buf, sizeof buf);
    if (n > 0)
        sim_inst_send(in, buf, (size_t)n);
}

static void reply_byte(sim_inst_t *in, cytomat_reply_kind_t kind, int byte)
{
    cytomat_reply_t r = {.kind = kind, .byte = byte};
    send_reply(in, &r);
}

static void reply_check(sim_inst_t *in, const char *code, const char *value)
{
    cytomat_reply_t r = {.kind = CYTOMAT_REPLY_CHECK};
    memcpy(r.code, code, 2);
    snprintf(r.value, sizeof r.value, "%s", value);
    send_reply(in, &r);
}

/* Moves the plate at from to to; the error register's code when it cannot. */
static int move(sim_inst_t *in, const char *from, const char *to, int empty_code, int full_code)
{
    sim_plate_t *p = sim_world_at(&in->sim->world, from);
    if (!p) {
        sim_warn("cytomat", "%s: no plate at %s", in->cfg->id, from);
        return empty_code;
    }
    if (sim_world_at(&in->sim->world, to)) {
        char sh[96];
        pos_shovel(in, sh, sizeof sh);
        snprintf(p->position, sizeof p->position, "%s", sh);
        sim_warn("cytomat", "%s: %s is occupied; plate %s left on the shovel", in->cfg->id, to,
                 p->barcode);
        return full_code;
    }
    snprintf(p->position, sizeof p->position, "%s", to);
    sim_info("cytomat", "%s: plate %s %s -> %s", in->cfg->id, p->barcode, from, to);
    return 0;
}

static void step_done(uv_timer_t *t)
{
    sim_inst_t *in = t->data;
    char ts[96], slot[96];
    sim_cytomat_tick(in);
    pos_transfer(in, ts, sizeof ts);
    pos_slot(in, in->cy_c, in->cy_s, slot, sizeof slot);
    int err = 0;
    switch (in->pending_flag) {
    case CY_OP_TS:
        err = move(in, ts, slot, 0x02, 0x03);
        break;
    case CY_OP_ST:
        err = move(in, slot, ts, 0x02, 0x03);
        break;
    default:
        break;
    }
    if (err)
        in->cy_error = err;
    in->pending_flag = CY_OP_NONE;
}

static void step_start(sim_inst_t *in, int op)
{
    in->pending_flag = op;
    uv_timer_start(&in->step, step_done,
                   (uint64_t)(in->cfg->step_s * 1000 / in->sim->cfg.time_scale) + 1, 0);
}

static void climate_reply(sim_inst_t *in, const char *code, int i)
{
    char v[48];
    sim_cytomat_tick(in);
    snprintf(v, sizeof v, "%+05.1f %+05.1f", in->climate_set[i], in->climate_cur[i]);
    reply_check(in, code, v);
}

/* A set point "NN.N" (open-cytomat's "%04.1f"): 0 .. 99.9, or -1. */
static double set_point(const char *s)
{
    if (strlen(s) != 4 || s[2] != '.')
        return -1;
    for (int i = 0; i < 4; i++)
        if (i != 2 && (s[i] < '0' || s[i] > '9'))
            return -1;
    return atof(s);
}

static void movement(sim_inst_t *in, const cytomat_cmd_t *c)
{
    if (in->pending_flag) {
        reply_byte(in, CYTOMAT_REPLY_ERROR, 0x01);
        return;
    }
    if (strcmp(c->code, "in") == 0) {
        step_start(in, CY_OP_INIT);
        reply_byte(in, CYTOMAT_REPLY_OK, overview(in));
        return;
    }
    int cs, sl;
    if (cytomat_slot_parse((cytomat_model_t)in->cfg->cy_model, c->params, &in->cfg->cy_cassettes,
                           &cs, &sl) != LAB_OK) {
        reply_byte(in, CYTOMAT_REPLY_ERROR, 0x05);
        return;
    }
    bool to_slot = strcmp(c->code, "ts") == 0;
    if (occupied(in, pos_shovel)) {
        reply_byte(in, CYTOMAT_REPLY_ERROR, 0x21);
        return;
    }
    if (to_slot != occupied(in, pos_transfer)) {
        reply_byte(in, CYTOMAT_REPLY_ERROR, to_slot ? 0x31 : 0x32);
        return;
    }
    in->cy_c = cs;
    in->cy_s = sl;
    step_start(in, to_slot ? CY_OP_TS : CY_OP_ST);
    reply_byte(in, CYTOMAT_REPLY_OK, overview(in));
}

static int on_line(void *ud, const char *line, size_t len, int err)
{
    sim_inst_t *in = ud;
    cytomat_cmd_t c;
    if (err || cytomat_parse_cmd(line, len, &c) != LAB_OK) {
        reply_byte(in, CYTOMAT_REPLY_ERROR, 0x03);
        return 0;
    }
    if (in->error_next) {
        in->error_next = 0;
        in->cy_error = in->cfg->error_code >= 0 ? in->cfg->error_code & 0xFF : 0x0D;
    }
    char v[8];
    if (strcmp(c.type, "ch") == 0 && !c.params[0]) {
        if (strcmp(c.code, "bs") == 0 || strcmp(c.code, "be") == 0 || strcmp(c.code, "bw") == 0) {
            int b = c.code[1] == 's'   ? overview(in)
                    : c.code[1] == 'e' ? in->cy_error
                                       : in->cy_warning;
            snprintf(v, sizeof v, "%02X", b);
            reply_check(in, c.code, v);
            return 0;
        }
        static const char *const climate[] = {"it", "ic", "ih", "io"};
        for (int i = 0; i < 4; i++)
            if (strcmp(c.code, climate[i]) == 0) {
                climate_reply(in, c.code, i);
                return 0;
            }
    }
    if (strcmp(c.type, "ll") == 0 && (strcmp(c.code, "it") == 0 || strcmp(c.code, "ic") == 0)) {
        double sp = set_point(c.params);
        if (sp < 0) {
            reply_byte(in, CYTOMAT_REPLY_ERROR, 0x04);
            return 0;
        }
        sim_cytomat_tick(in);
        in->climate_set[c.code[1] == 't' ? CY_TEMP : CY_CO2] = sp;
        reply_byte(in, CYTOMAT_REPLY_OK, overview(in));
        return 0;
    }
    if (strcmp(c.type, "rs") == 0 && strcmp(c.code, "be") == 0 && !c.params[0]) {
        in->cy_error = 0;
        reply_byte(in, CYTOMAT_REPLY_OK, overview(in));
        return 0;
    }
    if ((strcmp(c.type, "ll") == 0 && strcmp(c.code, "in") == 0 && !c.params[0]) ||
        (strcmp(c.type, "mv") == 0 && (strcmp(c.code, "ts") == 0 || strcmp(c.code, "st") == 0))) {
        movement(in, &c);
        return 0;
    }
    reply_byte(in, CYTOMAT_REPLY_ERROR, 0x02);
    return 0;
}

void sim_cytomat_feed(sim_inst_t *in, const uint8_t *data, size_t n)
{
    proto_lines_feed(&in->lines, data, n, on_line, in);
}

void sim_cytomat_init(sim_inst_t *in)
{
    proto_lines_init(&in->lines);
    /* Ambient start: 22.0 degC and 0.0 %CO2 set and actual; 95 %RH and 20.9 %O2 read fixed. */
    static const double ambient[4] = {22.0, 0.0, 95.0, 20.9};
    for (int i = 0; i < 4; i++)
        in->climate_set[i] = in->climate_cur[i] = ambient[i];
    in->climate_at = sim_lab_now(in->sim);
    char pos[96];
    pos_transfer(in, pos, sizeof pos);
    sim_plate_t *p = sim_world_plate(&in->sim->world, in->cfg->plate);
    if (p && !p->position[0])
        snprintf(p->position, sizeof p->position, "%s", pos);
}
