/* Every state machine of the daemon, in the order the docs print them. */
#include "daemon/model/fsm.h"
#include "daemon/model/plate.h"
#include "daemon/model/campaign.h"
#include "daemon/model/candidate.h"
#include "daemon/model/run.h"
#include "daemon/model/step.h"

const lab_fsm_t *const lab_fsm_all[] = {&lab_run_fsm, &lab_step_fsm, &lab_cand_fsm, &lab_camp_fsm,
                                        &lab_plate_fsm};
const int lab_fsm_count = (int)(sizeof lab_fsm_all / sizeof lab_fsm_all[0]);
