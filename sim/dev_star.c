/* Simulated Hamilton STAR (master module C0, 8 channels) on a stream link, one message per CR LF
 * line. Commands are checked with star_check_cmd (er01/30..33); C0TT defines a tip type, C0DI
 * initialises, C0TP/C0TR pick up/drop tips, C0AS aspirates, C0DS dispenses. A command to a slave
 * module (P1.., H0, ..) is answered in the slave form, `er30` (unknown command). Each reply echoes
 * the command's id and is sent after sim_step_seconds lab seconds; when several replies are due,
 * the later one is sometimes sent first (chosen by the seeded generator), as the firmware does with
 * overlapping commands.
 *
 * Deck mapping (positions in 0.1 mm, as the firmware's xp/yp): the plate sim_plate has well A1
 * at x = 1000, y = 3000 with a 9 mm pitch, rows going towards smaller y. An aspirate takes the
 * reagent of the trough column round((xp - 1000) / 90), which names the reagent at that index of
 * sim_reagents (modulo their number). A dispense puts dv (0.1 uL) of that reagent into the well
 * under the channel. Only channels with tm = 1 act. An injected "error" answers the next command
 * with er<sim_error_code, default 8>/00; a fault armed for the Nth command (at_command) hits
 * that command's reply, after the command was carried out (an error: instead). A dispense with no
 * plate to go into (the world holding SIM_PLATES_MAX already) answers er30/00. */
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "protocols/star.h"
#include "sim/device.h"
#include "sim/log.h"

#define STAR_CHANNELS 8

static void flush_one(uv_timer_t *t);

static void queue_reply(sim_inst_t *in, const char *buf, int n)
{
    if (n <= 0 || in->nq == STAR_QUEUE_MAX || n >= (int)sizeof in->queue[0])
        return;
    memcpy(in->queue[in->nq], buf, (size_t)n);
    in->queue[in->nq][n] = 0;
    in->nq++;
    if (!uv_is_active((uv_handle_t *)&in->step))
        uv_timer_start(&in->step, flush_one,
                       (uint64_t)(in->cfg->step_s * 1000 / in->sim->cfg.time_scale) + 1, 0);
}

static void flush_one(uv_timer_t *t)
{
    sim_inst_t *in = t->data;
    if (!in->nq)
        return;
    int i = (in->nq > 1 && (sim_rand_next(&in->rng) & 1)) ? in->nq - 1 : 0;
    if (in->sticky != SIM_FAULT_TIMEOUT)
        sim_inst_send(in, in->queue[i], strlen(in->queue[i]));
    memmove(in->queue[i], in->queue[i + 1], (size_t)(in->nq - i - 1) * sizeof in->queue[0]);
    in->nq--;
    if (in->nq)
        uv_timer_start(&in->step, flush_one,
                       (uint64_t)(in->cfg->step_s * 1000 / in->sim->cfg.time_scale) + 1, 0);
}

static void channels(const star_msg_t *m, const char *name, long *v, size_t *n)
{
    if (star_param_list(m, name, v, STAR_CHANNELS, n) != LAB_OK)
        *n = 0;
}

static int column_of(long xp)
{
    return (int)lround((xp - 1000) / 90.0);
}

/* The plate a dispense goes into: with a Liconic taking plates from this deck (sim_from), the
 * deck is a carrier: the first dispense of a tip cycle that would give a well a reagent it already
 * holds starts a new plate on it (the configured sim_plate first, then fresh ones from the
 * stack), so a run's several reagents (fresh tips each) go into one plate and the next run's into
 * the next; the incubator takes them in the order they came (oldest first). Otherwise always
 * the configured sim_plate. */
static sim_plate_t *deck_plate(sim_inst_t *in)
{
    sim_world_t *w = &in->sim->world;
    bool flow = false;
    for (int i = 0; i < in->sim->cfg.n; i++)
        flow |= strcmp(in->sim->cfg.inst[i].from, in->cfg->id) == 0;
    if (!flow)
        return sim_world_plate(w, in->cfg->plate);
    char deck[96];
    snprintf(deck, sizeof deck, "deck:%s", in->cfg->id);
    sim_plate_t *p = in->deck_cur;
    if (p && strcmp(p->position, deck) == 0)
        return p;
    p = in->cfg->plate[0] ? sim_world_plate(w, in->cfg->plate) : NULL;
    if (p && !p->position[0])
        snprintf(p->position, sizeof p->position, "%s", deck);
    else
        p = sim_world_fresh(w, deck);
    if (p)
        p->queued = ++w->n_queued;
    in->deck_cur = p;
    return p;
}

/* Carries out a command; 0, or the master error code to answer (30: no plate for a dispense,
 * the world being full). */
static int act(sim_inst_t *in, const star_msg_t *m)
{
    long tm[STAR_CHANNELS], xp[STAR_CHANNELS], yp[STAR_CHANNELS], vol[STAR_CHANNELS];
    size_t ntm, nx, ny, nv;
    channels(m, "tm", tm, &ntm);
    channels(m, "xp", xp, &nx);
    channels(m, "yp", yp, &ny);
    sim_world_t *w = &in->sim->world;
    int as = strcmp(m->cmd, "AS") == 0, ds = strcmp(m->cmd, "DS") == 0;
    channels(m, as ? "av" : "dv", vol, &nv);
    if (strcmp(m->cmd, "TP") == 0)
        in->tip_cycle = true; /* the next dispense may be into a new plate */
    for (size_t ch = 0; ch < ntm && ch < STAR_CHANNELS; ch++) {
        if (!tm[ch])
            continue;
        if (strcmp(m->cmd, "TP") == 0)
            in->tips[ch] = 1;
        else if (strcmp(m->cmd, "TR") == 0)
            in->tips[ch] = 0;
        else if (as && ch < nx && ch < nv) {
            char names[256], *save = NULL;
            snprintf(names, sizeof names, "%s", in->cfg->reagents);
            int count = 0;
            for (char *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save))
                count++;
            int col = column_of(xp[ch]), want = ((col % count) + count) % count;
            snprintf(names, sizeof names, "%s", in->cfg->reagents);
            save = NULL;
            char *t = strtok_r(names, ",", &save);
            for (int k = 0; k < want && t; k++)
                t = strtok_r(NULL, ",", &save);
            in->source_reagent[ch] = sim_world_reagent(w, t ? t : "unknown");
            in->held_ul[ch] += vol[ch] / 10.0;
        } else if (ds && ch < nx && ch < ny && ch < nv) {
            int col = column_of(xp[ch]), row = (int)lround((3000 - yp[ch]) / 90.0);
            double ul = vol[ch] / 10.0;
            if (in->tip_cycle) {
                /* a fresh tip cycle that would give a well the same reagent again is the
                 * next plate's; another reagent for the same wells is the same plate's */
                sim_plate_t *cur = in->deck_cur;
                int r = in->source_reagent[ch];
                if (cur && r >= 0 && row >= 0 && row < SIM_ROWS && col >= 0 && col < SIM_COLS &&
                    cur->ul[row][col][r] > 0)
                    in->deck_cur = NULL;
                in->tip_cycle = false;
            }
            sim_plate_t *p = deck_plate(in);
            if (!p) {
                sim_error("star", "%s: dispense refused: no plate on the deck (too many plates)",
                          in->cfg->id);
                return 30;
            }
            sim_world_dispense(w, p, row, col, in->source_reagent[ch], ul);
            in->held_ul[ch] = in->held_ul[ch] > ul ? in->held_ul[ch] - ul : 0;
            sim_info("star", "%s: dispense %.1f uL %s into %s %c%d", in->cfg->id, ul,
                     in->source_reagent[ch] >= 0 ? w->reagents[in->source_reagent[ch]] : "?",
                     p->barcode, 'A' + row, col + 1);
        }
    }
    return 0;
}

static int on_line(void *ud, const char *line, size_t len, int err)
{
    sim_inst_t *in = ud;
    static star_msg_t m;
    if (err || star_parse(line, len, &m) != LAB_OK) {
        sim_warn("star", "%s: unparsable message dropped", in->cfg->id);
        return 0;
    }
    sim_inst_command(in);
    char which[3] = {0}, buf[512];
    int check = star_check_cmd(&m, STAR_CHANNELS, which);
    star_builder_t b;
    star_begin(&b, buf, sizeof buf, m.module, m.cmd, m.id);
    if (strcmp(m.module, "C0") != 0) {
        /* A slave module answers in its own form, er## (its trace information; 30: unknown
         * command): none of its commands is simulated. */
        if (in->error_next)
            in->error_next = 0;
        star_slave_error(&b, 30);
    } else if (in->error_next) {
        in->error_next = 0;
        star_error(&b, in->cfg->error_code >= 0 ? in->cfg->error_code % 100 : 8, 0);
    } else if (check) {
        star_error(&b, 1, check);
    } else {
        star_error(&b, act(in, &m), 0);
    }
    queue_reply(in, buf, star_end(&b, 1));
    return 0;
}

void sim_star_feed(sim_inst_t *in, const uint8_t *data, size_t n)
{
    proto_lines_feed(&in->lines, data, n, on_line, in);
}

void sim_star_init(sim_inst_t *in)
{
    proto_lines_init(&in->lines);
    for (int i = 0; i < 16; i++)
        in->source_reagent[i] = -1;
}
