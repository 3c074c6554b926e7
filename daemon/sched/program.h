/* Step programs: the driver actions that carry out one workflow step on one instrument, an array
 * of typed entries run in order. An entry is an action (the driver's action name, found through
 * the role the driver gives it, and the params that go to the driver) or a wait in lab seconds.
 * Flags on an action: "mark" names a checkpoint written to the store once it succeeded (an
 * incubation's "loaded" says the plate is inside and since when, so a restart can let it finish);
 * MEASURE says its result holds measured values (a read); OPTIONAL that its failure does not fail
 * the step (dropping tips that may not be there); DRY that it moves no liquid (tips on or off, a
 * plate's move), so a step that may not be repeated (program_repeatable) is repeated by a policy
 * after its failure only when nothing but dry entries ran (a failed wet one counts when the driver
 * cannot prove it never started). */
#ifndef LAB_SCHED_PROGRAM_H
#define LAB_SCHED_PROGRAM_H

#include "drivers/driver.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum program_kind { PROGRAM_ACTION, PROGRAM_WAIT } program_kind_t;

typedef enum program_mark {
    PROGRAM_MARK_NONE,
    PROGRAM_MARK_LOADED,   /* the plate went into its site */
    PROGRAM_MARK_UNLOADED, /* and came out */
} program_mark_t;

enum { PROGRAM_MEASURE = 1, PROGRAM_OPTIONAL = 2, PROGRAM_DRY = 4 };

typedef struct program_entry {
    program_kind_t kind;
    lab_drv_role_t role; /* what the action does for the step; LAB_DRV_ROLE_NONE: the op's own */
    const char *action;  /* the driver's name for it (static or the driver's table) */
    json_t *params;      /* what goes to the driver, owned; an empty object when none */
    program_mark_t mark;
    unsigned flags;
    int on;        /* instrument index of another instrument it runs on (a mover); -1: none */
    double wait_s; /* PROGRAM_WAIT: lab seconds */
} program_entry_t;

typedef struct program {
    program_entry_t *v;
    size_t n, cap;
} program_t;

/* The driver's action for a role, or NULL when it has none. */
const char *program_action(lab_driver_t *d, lab_drv_role_t role);
/* Whether the driver's action of that name has the role. */
bool program_action_is(lab_driver_t *d, const char *action, lab_drv_role_t role);
/* Whether the driver has an action of that name. */
bool program_has_action(lab_driver_t *d, const char *name);
/* Whether the step needs a place inside the instrument (one of the sites its driver describes,
 * lab_driver_sites, which it loads and unloads). */
bool program_needs_site(const char *op, lab_driver_t *d);
/* Whether running the step twice is harmless. A dispense is not: after an unknown outcome
 * (timeout, restart) it is repeated only when an operator says so. */
bool program_repeatable(const char *op);

/* The program for op with the step's params on d. site (cassette, slot) for steps that need
 * one. NULL with err when the instrument cannot do op or the params make no sense for it. */
program_t *program_build(const char *op, lab_driver_t *d, const json_t *params, double duration_s,
                         int cassette, int slot, char *err, size_t errlen);
program_t *program_new(void); /* empty */
void program_free(program_t *p);
/* e (its params taken over) before entry at. */
void program_insert(program_t *p, size_t at, program_entry_t e);
/* The index of the first wait, or p->n when there is none. */
size_t program_first_wait(const program_t *p);
/* What the program takes from the instrument's consumables: the tips its pick-ups fit (their
 * channels), returned, and the µL its aspirates draw from each reagent's trough added into
 * volumes_ul ({"reagent": µL}; a single volume counts once per tip fitted). */
int program_needs(const program_t *p, json_t *volumes_ul);
/* An entry in words: what it did (done) or was to do ("aspirated 50 µL from substrate"). */
void program_entry_text(const program_entry_t *e, bool done, char *buf, size_t cap);

#endif
