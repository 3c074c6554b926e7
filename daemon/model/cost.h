/* The cost of a run from what its document records and the prices of [costs]: the seconds each
 * instrument spent on its steps (started_at to ended_at), the tips picked up and the µL of each
 * reagent aspirated (each step's "consumed"), and its plate. The result carries every quantity
 * and price beside each cost, so the figure can be recomputed from the record alone. */
#ifndef LAB_MODEL_COST_H
#define LAB_MODEL_COST_H

#include "core/cfg.h"

#include <jansson.h>

/* {"currency", "total", "plate", "instruments": [{instrument, seconds, per_hour, cost}],
 * "tips": {count, each, cost}, "reagents": [{reagent, ul, per_ul, cost}]} for the run document
 * (new reference; never NULL). */
json_t *lab_run_cost(const lab_config_t *cfg, const json_t *run);

/* One step's use (tips, µL by reagent) added to its "consumed" object (created when absent):
 * {"tips": n, "reagents": {name: µL}}. */
void lab_consumed_add(json_t *step, int tips, const char *reagent, double ul);

#endif
