/* Every state machine of labloop (daemon/model/machines.c), in the order the docs print them:
 * for the docs generator (tools/state_tables.c) and the tests. */
#ifndef LAB_MODEL_MACHINES_H
#define LAB_MODEL_MACHINES_H

#include "core/fsm.h"

extern const lab_fsm_t *const lab_fsm_all[];
extern const int lab_fsm_count;

#endif
