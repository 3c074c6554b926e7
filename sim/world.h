/* The simulated world: plates by barcode and position, what was dispensed into each well (per
 * reagent), and each plate's incubation history. The reader's values are computed from it. */
#ifndef LAB_SIM_WORLD_H
#define LAB_SIM_WORLD_H
#include "core/text.h"

#include <stddef.h>
#include <stdint.h>

#define SIM_REAGENTS_MAX 8
#define SIM_PLATES_MAX 256 /* a full world refuses new plates with a logged error */
#define SIM_ROWS 16
#define SIM_COLS 24
#define SIM_DESIGN_MAX 3 /* reagents of the design response */

typedef struct sim_plate {
    char barcode[LAB_TEXT_BYTES(LAB_RUN_PLATE_CHARS)]; /* a run's plate, whole */
    char position[128]; /* "liconic1:2/5", "transfer:liconic1", "deck" ... */
    double ul[SIM_ROWS][SIM_COLS][SIM_REAGENTS_MAX];
    double incub_deg_s; /* integral of (temperature - 20 degC) over lab seconds, when positive */
    long queued;        /* when it entered a reader's queue (the world's counter), for FIFO */
} sim_plate_t;

/* The design response (sim_design, sim_design_max): reagents whose joint effect has one optimum,
 * known exactly (see the model in world.c). n = 0: none. */
typedef struct sim_design {
    int n;
    char name[SIM_DESIGN_MAX][32];
    double opt_ul[SIM_DESIGN_MAX]; /* each reagent's optimal volume in a well, uL */
    double max_au;                 /* the response at the optimum, absorbance units */
} sim_design_t;

/* Parses "NAME:OPT,NAME:OPT" (1 to SIM_DESIGN_MAX reagents, OPT > 0 uL) into d, keeping
 * d->max_au; 0, or -1 with the reason in why. */
int sim_design_parse(const char *text, sim_design_t *d, char *why, size_t cap);

typedef struct sim_world {
    uint64_t seed;
    double noise; /* standard deviation of the reader noise, absorbance units */
    sim_design_t design;
    int n_reagents;
    char reagents[SIM_REAGENTS_MAX][32];
    sim_plate_t plates[SIM_PLATES_MAX];
    int n_plates;
    int n_fresh; /* plates the flow took from the stack: SIM-0001, ... */
    long n_queued;
} sim_world_t;

/* A cell without a robot arm (a Liconic with sim_from/sim_to): plates flow from the STAR's deck
 * ("deck:STAR") into the incubator on a load whose transfer station is empty, out of it into
 * the reader's queue ("queue:READER") on an unload, and from there into the reader's tray
 * ("tray:READER", the previous tray plate going to "done:READER") on a read. A dispense on an
 * empty deck takes a fresh plate from the stack (SIM-0001, SIM-0002, ...). */
sim_plate_t *sim_world_fresh(sim_world_t *w, const char *position);
/* The reader's plate for a read: the oldest queued one moves into the tray; else the tray's. */
sim_plate_t *sim_world_reader_plate(sim_world_t *w, const char *reader_id);

void sim_world_init(sim_world_t *w, uint64_t seed, double noise);
/* The design response of a well holding ul_by_design_reagent[i] uL of w->design.name[i] (one
 * entry per design reagent): max_au * prod f(v_i / opt_i), f(x) = x e^(1 - x); 0 without a design.
 * The true, noise-free value before the incubation gain, for tests and benchmarks. */
double sim_world_design(const sim_world_t *w, const double *ul_by_design_reagent);
/* f(x) = x e^(1 - x) for x >= 0 (0 below): 0 at 0, its peak 1 at x = 1. */
double sim_design_f(double x);
int sim_world_reagent(sim_world_t *w, const char *name); /* index, created on first use */
/* Created on first use; NULL (and an error logged) when the world already holds SIM_PLATES_MAX. */
sim_plate_t *sim_world_plate(sim_world_t *w, const char *barcode);
sim_plate_t *sim_world_at(sim_world_t *w, const char *position); /* NULL if empty */
void sim_world_dispense(sim_world_t *w, sim_plate_t *p, int row, int col, int reagent, double ul);
void sim_world_incubate(sim_plate_t *p, double celsius, double lab_seconds);
double sim_world_dispensed(const sim_plate_t *p); /* total uL in all wells */
double sim_world_absorbance(const sim_world_t *w, const sim_plate_t *p, int row, int col, int nm);
/* Deterministic generator (splitmix64) used for noise and the instruments' quirks. */
uint64_t sim_rand_next(uint64_t *state);
#endif
