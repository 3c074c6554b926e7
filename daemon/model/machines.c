/* Every state machine, in the order the docs print them: the daemon's in daemon/model/, the
 * instrument's in drivers/ (the drivers set it and may not depend on the daemon). */
#include "daemon/model/machines.h"
#include "daemon/model/plate_states.h"
#include "daemon/model/campaign_states.h"
#include "daemon/model/candidate_states.h"
#include "daemon/model/run_states.h"
#include "daemon/model/step_states.h"
#include "drivers/driver.h"

const lab_fsm_t *const lab_fsm_all[] = {&lab_run_fsm,  &lab_step_fsm,  &lab_cand_fsm,
                                        &lab_camp_fsm, &lab_plate_fsm, &lab_inst_fsm};
const int lab_fsm_count = (int)(sizeof lab_fsm_all / sizeof lab_fsm_all[0]);
