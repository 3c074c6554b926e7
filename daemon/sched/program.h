/* Step programs: the driver actions that carry out one workflow step on one instrument. A program
 * is a JSON array of entries, run in order:
 *   {"action": NAME, "params": {...}, "mark"?: TEXT, "measure"?: true, "optional"?: true}
 *   {"wait_s": N}
 * "mark" names a checkpoint written to the store once the action succeeded (an incubation's
 * "loaded" says the plate is inside and since when, so a restart can let it finish);
 * "measure" says the action's result holds measured values (a read); "optional" that its failure
 * does not fail the step (dropping tips that may not be there); "dry" that it moves no liquid
 * (tips on or off, a plate's move), so a step that may not be repeated (program_repeatable) is
 * repeated by a policy after its failure only when nothing but dry entries ran (a failed wet
 * one counts when the driver cannot prove it never started). */
#ifndef LAB_SCHED_PROGRAM_H
#define LAB_SCHED_PROGRAM_H

#include "drivers/driver.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

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
json_t *program_build(const char *op, lab_driver_t *d, const json_t *params, double duration_s,
                      int cassette, int slot, char *err, size_t errlen);

#endif
