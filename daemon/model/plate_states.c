/* Campaign plate states and their transitions. */
#include "daemon/model/plate_states.h"

static const char *const state_names[LAB_PLATE_NSTATES] = {
    [LAB_PLATE_STAGED] = "staged",
    [LAB_PLATE_RUNNING] = "running",
    [LAB_PLATE_RELAID] = "relaid",
    [LAB_PLATE_OVER] = "over",
};

static const lab_fsm_edge_t edges[] = {
    {LAB_PLATE_STAGED, LAB_PLATE_RUNNING, "its run started (seen live or after a restart)"},
    {LAB_PLATE_STAGED, LAB_PLATE_RELAID,
     "its candidates are laid out again (a newer batch, or the campaign's end) before it started"},
    {LAB_PLATE_STAGED, LAB_PLATE_OVER,
     "its run ended (before it was seen running, or while the "
     "daemon was down)"},
    {LAB_PLATE_RUNNING, LAB_PLATE_OVER, "its run ended (done, failed or cancelled)"},
    {LAB_PLATE_RELAID, LAB_PLATE_OVER,
     "its run ended (cancelled by the campaign engine, or ran out)"},
};

const lab_fsm_t lab_plate_fsm = {
    .name = "plate",
    .nstates = LAB_PLATE_NSTATES,
    .states = state_names,
    .edges = edges,
    .nedges = (int)(sizeof edges / sizeof edges[0]),
    .final = 1u << LAB_PLATE_OVER,
};

const char *lab_plate_state_name(lab_plate_state_t s)
{
    return lab_fsm_state_name(&lab_plate_fsm, (int)s);
}

bool lab_plate_state_live(lab_plate_state_t s)
{
    return s == LAB_PLATE_STAGED || s == LAB_PLATE_RUNNING;
}

int lab_plate_set_state(lab_plate_state_t *state, lab_plate_state_t to, const char *id)
{
    int cur = (int)*state;
    int rc = lab_fsm_move(&lab_plate_fsm, &cur, (int)to, id);
    *state = (lab_plate_state_t)cur;
    return rc;
}
