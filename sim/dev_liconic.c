/* Simulated Liconic STX: answers E1 to anything before the CR handshake (the controller's
 * documented quirk), CC to CR, and ST/RS/RD/WR DM on a flag and data-memory image. A handling
 * flag (1801, 1900-1912) drops the ready flag 1915 for one step (sim_step_seconds lab seconds)
 * and then moves the plate in the world: 1904 transfer station -> cassette DM0 / slot DM5,
 * 1905 back, 1908 slot -> shovel, 1909 shovel -> slot. Climate actual values approach their set
 * points with a 300 lab-second time constant; plates inside accumulate incubation. An injected
 * "error" sets the error flag 1814 and the handler code in DM200 (sim_error_code, default 7) and
 * answers the next command with E5. The transfer sensor 1813 says whether a plate waits on the
 * transfer station.
 *
 * Busy is the ready relay 1915 = 0, nothing else: an ST on a handling flag while a step runs sets
 * the relay (OK, as the PLC does) and the handler takes it when the step ends. E3 is the
 * controller's hardware error and never means busy. A transfer (1904, 1905, 1908, 1909) checks
 * DM23 (pitch in motor steps) and DM25 (slots) against the rack of the cassette in DM0: anything
 * else would send the handler to the wrong height, so it stops with a handler error instead.
 * sim_wake_e1 plays a controller that answers a bare CR with E1 (and the first N CR handshakes).
 *
 * In a cell without an arm (world.h): with sim_from = STAR_ID a load whose transfer station is
 * empty takes the oldest plate on that STAR's deck (the load fails as above when the deck is
 * empty too); with sim_to = READER_ID an unloaded plate goes on at once from the transfer
 * station into that reader's queue. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "protocols/liconic.h"
#include "sim/device.h"
#include "sim/log.h"

static const int climate_dm[4][2] = {
    {LICONIC_DM_TEMP_SET, LICONIC_DM_TEMP_ACTUAL},
    {LICONIC_DM_HUMIDITY_SET, LICONIC_DM_HUMIDITY_ACTUAL},
    {LICONIC_DM_CO2_SET, LICONIC_DM_CO2_ACTUAL},
    {LICONIC_DM_N2_SET, LICONIC_DM_N2_ACTUAL},
};

static void pos_transfer(const sim_inst_t *in, char *buf, size_t cap)
{
    snprintf(buf, cap, "transfer:%s", in->cfg->id);
}

static void pos_slot(const sim_inst_t *in, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s:%ld/%ld", in->cfg->id, in->dm[LICONIC_DM_CASSETTE],
             in->dm[LICONIC_DM_SLOT]);
}

void sim_liconic_tick(sim_inst_t *in)
{
    double now = sim_lab_now(in->sim), dt = now - in->climate_at;
    if (dt <= 0)
        return;
    in->climate_at = now;
    double k = 1 - exp(-dt / 300.0);
    for (int i = 0; i < 4; i++)
        in->climate_cur[i] += (in->climate_set[i] - in->climate_cur[i]) * k;
    char prefix[80];
    int n = snprintf(prefix, sizeof prefix, "%s:", in->cfg->id);
    sim_world_t *w = &in->sim->world;
    /* slots only ("ID:cassette/slot"): not "deck:ID" or "queue:ID" of a namesake */
    for (int i = 0; i < w->n_plates; i++)
        if (strncmp(w->plates[i].position, prefix, (size_t)n) == 0 &&
            w->plates[i].position[n] >= '0' && w->plates[i].position[n] <= '9')
            sim_world_incubate(&w->plates[i], in->climate_cur[0] / 10.0, dt);
}

static void move(sim_inst_t *in, const char *from, const char *to)
{
    sim_plate_t *p = sim_world_at(&in->sim->world, from);
    if (!p) {
        in->flags[LICONIC_FLAG_ERROR] = 1;
        in->dm[LICONIC_DM_HANDLER_ERROR] = 1; /* handling action could not be performed */
        sim_warn("liconic", "%s: no plate at %s", in->cfg->id, from);
        return;
    }
    if (sim_world_at(&in->sim->world, to)) {
        in->flags[LICONIC_FLAG_ERROR] = 1;
        in->dm[LICONIC_DM_HANDLER_ERROR] = 1;
        sim_warn("liconic", "%s: %s is occupied", in->cfg->id, to);
        return;
    }
    snprintf(p->position, sizeof p->position, "%s", to);
    sim_info("liconic", "%s: plate %s %s -> %s", in->cfg->id, p->barcode, from, to);
}

static void step_start(sim_inst_t *in, int flag);

/* A transfer at a height the rack does not have: the handler's error, the plate stays. */
static int rack_mismatch(sim_inst_t *in)
{
    int f = in->pending_flag;
    if (f != LICONIC_FLAG_PLATE_FROM_TRANSFER && f != LICONIC_FLAG_PLATE_TO_TRANSFER &&
        f != LICONIC_FLAG_PICK_FROM_SLOT && f != LICONIC_FLAG_PLACE_TO_SLOT)
        return 0;
    const liconic_cassettes_t *cs = &in->cfg->cassettes;
    long c = in->dm[LICONIC_DM_CASSETTE];
    const liconic_rack_t *r = c >= 1 && c <= cs->n ? cs->rack[c - 1] : NULL;
    if (!cs->n || (r && in->dm[LICONIC_DM_PITCH_STEPS] == r->steps &&
                   in->dm[LICONIC_DM_SLOTS_PER_CASSETTE] == r->slots))
        return 0;
    in->flags[LICONIC_FLAG_ERROR] = 1;
    /* import 106 / export 202: the lift could not reach the stacker level; 11: slot unreachable */
    in->dm[LICONIC_DM_HANDLER_ERROR] = f == LICONIC_FLAG_PLATE_FROM_TRANSFER ? 106
                                       : f == LICONIC_FLAG_PLATE_TO_TRANSFER ? 202
                                                                             : 11;
    if (r)
        sim_warn("liconic", "%s: cassette %ld: DM23 = %ld, DM25 = %ld; its rack %s needs %d and %d",
                 in->cfg->id, c, in->dm[LICONIC_DM_PITCH_STEPS],
                 in->dm[LICONIC_DM_SLOTS_PER_CASSETTE], r->name, r->steps, r->slots);
    else
        sim_warn("liconic", "%s: DM0 = %ld: no such cassette (there are %d)", in->cfg->id, c,
                 cs->n);
    return 1;
}

static void step_done(uv_timer_t *t)
{
    sim_inst_t *in = t->data;
    char a[96], b[96], shovel[96];
    sim_liconic_tick(in);
    int bad = rack_mismatch(in);
    pos_transfer(in, a, sizeof a);
    pos_slot(in, b, sizeof b);
    snprintf(shovel, sizeof shovel, "shovel:%s", in->cfg->id);
    switch (bad ? 0 : in->pending_flag) {
    case LICONIC_FLAG_PLATE_FROM_TRANSFER:
        if (in->cfg->from[0] && !sim_world_at(&in->sim->world, a)) {
            /* the cell's integration slides the STAR's deck plate onto the station */
            char deck[96];
            snprintf(deck, sizeof deck, "deck:%s", in->cfg->from);
            sim_world_t *w = &in->sim->world;
            sim_plate_t *p = NULL; /* the oldest plate on the carrier */
            for (int i = 0; i < w->n_plates; i++)
                if (strcmp(w->plates[i].position, deck) == 0 &&
                    (!p || w->plates[i].queued < p->queued))
                    p = &w->plates[i];
            if (p) {
                sim_info("liconic", "%s: plate %s %s -> %s", in->cfg->id, p->barcode, deck, a);
                snprintf(p->position, sizeof p->position, "%s", a);
            } else {
                sim_warn("liconic", "%s: load: the transfer station and %s are empty", in->cfg->id,
                         deck);
            }
        }
        move(in, a, b);
        break;
    case LICONIC_FLAG_PLATE_TO_TRANSFER:
        move(in, b, a);
        if (in->cfg->to[0]) { /* and on into the reader's queue */
            sim_plate_t *p = sim_world_at(&in->sim->world, a);
            if (p) {
                snprintf(p->position, sizeof p->position, "queue:%s", in->cfg->to);
                p->queued = ++in->sim->world.n_queued;
                sim_info("liconic", "%s: plate %s -> queue:%s", in->cfg->id, p->barcode,
                         in->cfg->to);
            }
        }
        break;
    case LICONIC_FLAG_PICK_FROM_SLOT:
        move(in, b, shovel);
        break;
    case LICONIC_FLAG_PLACE_TO_SLOT:
        move(in, shovel, b);
        break;
    default:
        break;
    }
    in->flags[in->pending_flag] = 0;
    in->flags[LICONIC_FLAG_READY] = 1;
    in->pending_flag = 0;
    if (in->queued_flag) {
        int f = in->queued_flag;
        in->queued_flag = 0;
        step_start(in, f);
    }
}

static int is_action(int flag)
{
    return flag == LICONIC_FLAG_ACTIVATE_HANDLING ||
           (flag >= LICONIC_FLAG_INIT && flag <= LICONIC_FLAG_SWAP_STATION);
}

static void reply(sim_inst_t *in, liconic_reply_kind_t kind, long value, int error)
{
    liconic_reply_t r = {.kind = kind, .value = value, .error = error};
    char buf[64];
    int n = liconic_encode_reply(&r, buf, sizeof buf);
    if (n > 0)
        sim_inst_send(in, buf, (size_t)n);
}

static long read_dm(sim_inst_t *in, int addr)
{
    sim_liconic_tick(in);
    for (int i = 0; i < 4; i++)
        if (addr == climate_dm[i][1])
            return lround(in->climate_cur[i]);
    return in->dm[addr];
}

static void step_start(sim_inst_t *in, int flag)
{
    in->pending_flag = flag;
    in->flags[LICONIC_FLAG_READY] = 0;
    uv_timer_start(&in->step, step_done,
                   (uint64_t)(in->cfg->step_s * 1000 / in->sim->cfg.time_scale) + 1, 0);
}

static int on_line(void *ud, const char *line, size_t len, int err)
{
    sim_inst_t *in = ud;
    liconic_cmd_t c;
    if (err) {
        reply(in, LICONIC_REPLY_ERROR, 0, 1);
        return 0;
    }
    int rc = liconic_parse_cmd(line, len, &c);
    if (rc == LAB_OK && c.op == LICONIC_OP_OPEN && in->wake_e1_left > 0) {
        in->wake_e1_left--;
        reply(in, LICONIC_REPLY_ERROR, 0, 1);
        return 0;
    }
    if (!in->opened) {
        if (rc == LAB_OK && c.op == LICONIC_OP_OPEN) {
            in->opened = 1;
            reply(in, LICONIC_REPLY_CC, 0, 0);
        } else {
            reply(in, LICONIC_REPLY_ERROR, 0, 1);
        }
        return 0;
    }
    if (rc != LAB_OK || c.addr < 0 || c.addr >= LICONIC_ADDR_MAX) {
        reply(in, LICONIC_REPLY_ERROR, 0, 2);
        return 0;
    }
    if (in->error_next) {
        in->error_next = 0;
        in->flags[LICONIC_FLAG_ERROR] = 1;
        in->dm[LICONIC_DM_HANDLER_ERROR] = in->cfg->error_code >= 0 ? in->cfg->error_code : 7;
        reply(in, LICONIC_REPLY_ERROR, 0, 5);
        return 0;
    }
    char pos[96];
    switch (c.op) {
    case LICONIC_OP_OPEN:
        reply(in, LICONIC_REPLY_CC, 0, 0);
        break;
    case LICONIC_OP_SET:
        in->flags[c.addr] = 1;
        if (is_action(c.addr) && in->pending_flag) {
            sim_warn("liconic", "%s: ST %d while busy (1915 = 0): taken after the current step",
                     in->cfg->id, c.addr);
            in->queued_flag = c.addr;
        } else if (is_action(c.addr)) {
            step_start(in, c.addr);
        }
        reply(in, LICONIC_REPLY_OK, 0, 0);
        break;
    case LICONIC_OP_RESET:
        in->flags[c.addr] = 0;
        if (c.addr == LICONIC_FLAG_ERROR)
            in->dm[LICONIC_DM_HANDLER_ERROR] = 0;
        reply(in, LICONIC_REPLY_OK, 0, 0);
        break;
    case LICONIC_OP_READ:
        if (c.addr == LICONIC_FLAG_TRANSFER_SENSOR) {
            pos_transfer(in, pos, sizeof pos);
            reply(in, LICONIC_REPLY_VALUE, sim_world_at(&in->sim->world, pos) != NULL, 0);
        } else {
            reply(in, LICONIC_REPLY_VALUE, in->flags[c.addr], 0);
        }
        break;
    case LICONIC_OP_READ_DM:
        reply(in, LICONIC_REPLY_VALUE, read_dm(in, c.addr), 0);
        break;
    case LICONIC_OP_WRITE_DM:
        sim_liconic_tick(in);
        in->dm[c.addr] = c.value;
        for (int i = 0; i < 4; i++)
            if (c.addr == climate_dm[i][0])
                in->climate_set[i] = c.value;
        reply(in, LICONIC_REPLY_OK, 0, 0);
        break;
    }
    return 0;
}

void sim_liconic_feed(sim_inst_t *in, const uint8_t *data, size_t n)
{
    if (!in->cfg->wake_e1) {
        proto_lines_feed(&in->lines, data, n, on_line, in);
        return;
    }
    /* A CR on an empty line is the bare wake-up some controllers answer with E1. */
    for (size_t i = 0; i < n; i++) {
        if (data[i] == '\r' && in->lines.len == 0)
            reply(in, LICONIC_REPLY_ERROR, 0, 1);
        proto_lines_feed(&in->lines, data + i, 1, on_line, in);
    }
}

void sim_liconic_init(sim_inst_t *in)
{
    proto_lines_init(&in->lines);
    in->flags = calloc(LICONIC_ADDR_MAX, 1);
    in->dm = calloc(LICONIC_ADDR_MAX, sizeof *in->dm);
    in->flags[LICONIC_FLAG_READY] = 1;
    in->dm[LICONIC_DM_SLOTS_PER_CASSETTE] =
        in->cfg->cassettes.n ? in->cfg->cassettes.rack[0]->slots : 0;
    in->wake_e1_left = in->cfg->wake_e1;
    /* Ambient start: 22.0 degC, 40 %RH, 0.04 %CO2, 78 %N2 (raw units of each DM word). */
    static const double ambient[4] = {220, 400, 4, 7800};
    for (int i = 0; i < 4; i++) {
        in->climate_set[i] = in->climate_cur[i] = ambient[i];
        in->dm[climate_dm[i][0]] = lround(ambient[i]);
    }
    in->climate_at = sim_lab_now(in->sim);
    char pos[96];
    pos_transfer(in, pos, sizeof pos);
    sim_plate_t *p = in->cfg->from[0] ? NULL : sim_world_plate(&in->sim->world, in->cfg->plate);
    if (p && !p->position[0])
        snprintf(p->position, sizeof p->position, "%s", pos);
}
