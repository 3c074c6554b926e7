/* The simulated world. Absorbance model (documented here because tests and users rely on it):
 *
 *   A(well) = 0.040                                      (empty well, plate background)
 *           + ( sum over reagents r not in the design:  Emax_r * v_r / (v_r + K)
 *                                                        (saturating dose-response)
 *             + design(well) )                           (the hidden optimum, if configured)
 *           * g                                          (incubation gain)
 *           + N(0, noise)
 *           clamped to 0..9.9999 (the reader's range)
 *
 *   v_r     microlitres of reagent r dispensed into the well
 *   K       20 uL (half-saturation volume)
 *   Emax_r  1.2 / (1 + r) for the r-th reagent named (the first reagent is the chromogen)
 *   g       1 + 0.5 * (1 - exp(-I / 36000)), I = integral of max(0, T - 20 degC) dt in degC*s
 *           (an hour at 30 degC gives g ~ 1.32)
 *   noise   Gaussian (Box-Muller) from splitmix64 seeded by seed, barcode, well and wavelength:
 *           the same seed and the same dispenses always give the same values.
 *
 * The design response ([labloop] sim_design = NAME:OPT,... with 1 to 3 reagents, sim_design_max
 * = A, default 2.0) gives a closed loop an optimum to find over the design reagents' volumes:
 *
 *   design(well) = A * prod over design reagents r:  f(v_r / OPT_r)
 *   f(x)         = x * e^(1 - x)      (f(0) = 0, rising to its one peak f(1) = 1, then falling
 *                                      smoothly towards 0; f(2) ~ 0.74, f(0.5) ~ 0.82)
 *
 *   OPT_r   the volume of r at the optimum, uL
 *
 * The design reagents do not enter the saturating sum (every other reagent still does, with the
 * Emax of its index among all reagents named). A well lacking any design reagent has design 0.
 * So the optimum is known exactly: every design reagent at its OPT gives 0.040 + A * g (+ noise).
 * Without sim_design the model is the saturating sum alone, as it always was.
 */
#include "sim/world.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sim/log.h"

double sim_design_f(double x)
{
    return x > 0 ? x * exp(1 - x) : 0;
}

double sim_world_design(const sim_world_t *w, const double *ul_by_design_reagent)
{
    const sim_design_t *d = &w->design;
    if (d->n == 0)
        return 0;
    double y = d->max_au;
    for (int i = 0; i < d->n; i++)
        y *= sim_design_f(ul_by_design_reagent[i] / d->opt_ul[i]);
    return y;
}

int sim_design_parse(const char *text, sim_design_t *d, char *why, size_t cap)
{
    char buf[256];
    if (strlen(text) >= sizeof buf) {
        snprintf(why, cap, "longer than %zu characters", sizeof buf - 1);
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", text);
    d->n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(t, ':');
        if (!colon) {
            snprintf(why, cap, "'%s' is not NAME:OPT", t);
            return -1;
        }
        *colon = '\0';
        char *name = t, *opt = colon + 1;
        while (isspace((unsigned char)*name))
            name++;
        size_t len = strlen(name);
        while (len && isspace((unsigned char)name[len - 1]))
            name[--len] = '\0';
        if (!len || len >= sizeof d->name[0]) {
            snprintf(why, cap, "reagent name '%s' is empty or longer than %zu characters", name,
                     sizeof d->name[0] - 1);
            return -1;
        }
        char *end;
        errno = 0;
        double v = strtod(opt, &end);
        while (isspace((unsigned char)*end))
            end++;
        if (errno || end == opt || *end || !isfinite(v) || v <= 0) {
            snprintf(why, cap, "%s: optimal volume '%s' is not a number of uL above 0", name, opt);
            return -1;
        }
        for (int i = 0; i < d->n; i++)
            if (strcmp(d->name[i], name) == 0) {
                snprintf(why, cap, "reagent '%s' is named twice", name);
                return -1;
            }
        if (d->n == SIM_DESIGN_MAX) {
            snprintf(why, cap, "more than %d reagents", SIM_DESIGN_MAX);
            return -1;
        }
        snprintf(d->name[d->n], sizeof d->name[0], "%s", name);
        d->opt_ul[d->n++] = v;
    }
    if (d->n == 0) {
        snprintf(why, cap, "no reagent (NAME:OPT,...)");
        return -1;
    }
    return 0;
}

void sim_world_init(sim_world_t *w, uint64_t seed, double noise)
{
    memset(w, 0, sizeof *w);
    w->seed = seed;
    w->noise = noise;
}

uint64_t sim_rand_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int sim_world_reagent(sim_world_t *w, const char *name)
{
    for (int i = 0; i < w->n_reagents; i++)
        if (strcmp(w->reagents[i], name) == 0)
            return i;
    if (w->n_reagents == SIM_REAGENTS_MAX)
        return -1;
    snprintf(w->reagents[w->n_reagents], sizeof w->reagents[0], "%s", name);
    return w->n_reagents++;
}

static sim_plate_t *sim_world_find(sim_world_t *w, const char *barcode)
{
    for (int i = 0; i < w->n_plates; i++)
        if (strcmp(w->plates[i].barcode, barcode) == 0)
            return &w->plates[i];
    return NULL;
}

sim_plate_t *sim_world_plate(sim_world_t *w, const char *barcode)
{
    sim_plate_t *found = sim_world_find(w, barcode);
    if (found)
        return found;
    if (strlen(barcode) >= sizeof found->barcode) {
        sim_error("world", "plate barcode of %zu bytes is longer than a plate's", strlen(barcode));
        return NULL;
    }
    if (w->n_plates == SIM_PLATES_MAX) {
        sim_error("world", "too many plates: the world holds %d, plate %s not created",
                  SIM_PLATES_MAX, barcode);
        return NULL;
    }
    sim_plate_t *p = &w->plates[w->n_plates++];
    memset(p, 0, sizeof *p);
    snprintf(p->barcode, sizeof p->barcode, "%s", barcode);
    return p;
}

sim_plate_t *sim_world_at(sim_world_t *w, const char *position)
{
    for (int i = 0; i < w->n_plates; i++)
        if (strcmp(w->plates[i].position, position) == 0)
            return &w->plates[i];
    return NULL;
}

void sim_world_dispense(sim_world_t *w, sim_plate_t *p, int row, int col, int reagent, double ul)
{
    if (row < 0 || row >= SIM_ROWS || col < 0 || col >= SIM_COLS || reagent < 0 ||
        reagent >= w->n_reagents || ul <= 0)
        return;
    p->ul[row][col][reagent] += ul;
}

void sim_world_incubate(sim_plate_t *p, double celsius, double lab_seconds)
{
    if (celsius > 20 && lab_seconds > 0)
        p->incub_deg_s += (celsius - 20) * lab_seconds;
}

double sim_world_dispensed(const sim_plate_t *p)
{
    double sum = 0;
    for (int r = 0; r < SIM_ROWS; r++)
        for (int c = 0; c < SIM_COLS; c++)
            for (int k = 0; k < SIM_REAGENTS_MAX; k++)
                sum += p->ul[r][c][k];
    return sum;
}

static uint64_t hash_str(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001B3ull;
    return h;
}

double sim_world_absorbance(const sim_world_t *w, const sim_plate_t *p, int row, int col, int nm)
{
    double signal = 0, design_ul[SIM_DESIGN_MAX] = {0};
    for (int r = 0; r < w->n_reagents; r++) {
        double v = p->ul[row][col][r];
        int k = 0;
        while (k < w->design.n && strcmp(w->design.name[k], w->reagents[r]) != 0)
            k++;
        if (k < w->design.n)
            design_ul[k] = v;
        else
            signal += (1.2 / (1 + r)) * v / (v + 20.0);
    }
    signal += sim_world_design(w, design_ul);
    double g = 1 + 0.5 * (1 - exp(-p->incub_deg_s / 36000.0));
    uint64_t s = hash_str(w->seed ^ 0xCBF29CE484222325ull, p->barcode);
    s ^= (uint64_t)(row * SIM_COLS + col) << 20 ^ (uint64_t)nm;
    double u1 = ((sim_rand_next(&s) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (sim_rand_next(&s) >> 11) / 9007199254740992.0;
    double n = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
    double a = 0.040 + signal * g + n * w->noise;
    return a < 0 ? 0 : (a > 9.9999 ? 9.9999 : a);
}

sim_plate_t *sim_world_fresh(sim_world_t *w, const char *position)
{
    char name[32];
    int n = w->n_fresh;
    do /* a configured sim_plate may already carry the next name */
        snprintf(name, sizeof name, "SIM-%04d", ++n);
    while (sim_world_find(w, name));
    sim_plate_t *p = sim_world_plate(w, name);
    if (!p)
        return NULL; /* full: the number stays free for the next try */
    w->n_fresh = n;
    snprintf(p->position, sizeof p->position, "%s", position);
    return p;
}

sim_plate_t *sim_world_reader_plate(sim_world_t *w, const char *reader_id)
{
    char queue[96], tray[96], done[96];
    snprintf(queue, sizeof queue, "queue:%s", reader_id);
    snprintf(tray, sizeof tray, "tray:%s", reader_id);
    snprintf(done, sizeof done, "done:%s", reader_id);
    sim_plate_t *next = NULL;
    for (int i = 0; i < w->n_plates; i++)
        if (strcmp(w->plates[i].position, queue) == 0 &&
            (!next || w->plates[i].queued < next->queued))
            next = &w->plates[i];
    sim_plate_t *cur = sim_world_at(w, tray);
    if (!next)
        return cur;
    if (cur)
        snprintf(cur->position, sizeof cur->position, "%s", done);
    snprintf(next->position, sizeof next->position, "%s", tray);
    return next;
}
